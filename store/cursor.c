/* cursor.c - the one walk over an LMDB database (store_impl.h: store_walk): open a
 * cursor, position it at the first record (or the first at or after a key prefix), hand
 * each record to a callback in key order until the prefix ends, the callback stops or
 * fails or a key has the wrong size, and map a cursor failure to a REAP_E_* code in one
 * place. Every list, export and verification of the store walks its records through
 * here; the lists they collect grow through store_list_room. */
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"
#include "store_impl.h"

int store_walk(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t plen,
               size_t klen, const char *what, store_walk_fn fn, void *ud)
{
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    int rc = REAP_OK, mrc = mdb_cursor_open(txn, dbi, &cur);
    if (mrc)
        return store_mdb_err(s, mrc, what);
    mrc = mdb_cursor_get(cur, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST);
    for (; !mrc; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen)))
            break;
        if (klen && k.mv_size != klen)
            rc = reap_err_set(REAP_E_FORMAT, "%s: %s: key of %zu bytes (want %zu)",
                              s ? s->dir : "store", what, k.mv_size, klen);
        else
            rc = fn(ud, &k, &v);
        if (rc)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == STORE_WALK_STOP)
        return REAP_OK;
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = store_mdb_err(s, mrc, what);
    return rc;
}

int store_list_room(const reap_store *s, void *list, int *cap, int n, size_t size,
                    const char *what)
{
    void *v, *nv;
    if (n < *cap)
        return REAP_OK;
    int nc = *cap ? 2 * *cap : 16;
    memcpy(&v, list, sizeof v);
    if (!(nv = realloc(v, (size_t)nc * size)))
        return reap_err_set(REAP_E_NOMEM, "%s: %s", s ? s->dir : "store", what);
    memcpy(list, &nv, sizeof nv);
    *cap = nc;
    return REAP_OK;
}

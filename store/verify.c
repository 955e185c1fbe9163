/* verify.c - reap_store_verify (store.h): walk every record of every database in one read
 * transaction and decode it the way the store reads it (format version, message, key
 * agreement, digest). */
#include <stdio.h>

#include "records.h"
#include "reap_err.h"
#include "store_impl.h"

/* The databases reap_store_verify walks, in order, and their key sizes. */
static const char *const verify_dbs[] = {"models", "filehash", "calibs", "stats", "runs"};
static const size_t verify_klens[] = {STORE_ID_LEN, STORE_FILEHASH_KEY_LEN, STORE_ID_LEN,
                                      STORE_STATS_KEY_LEN, STORE_RUN_ID_LEN};

/* Check one record of database `db` (index into verify_dbs; store_walk checked the key's
 * size). */
static int verify_record(reap_store *s, int db, const MDB_val *k, const MDB_val *v)
{
    char what[4300];
    const uint8_t *key = k->mv_data;
    snprintf(what, sizeof what, "%s: %s record", s->dir, verify_dbs[db]);
    switch (db) {
    case 0:
        return rec_model_decode(v->mv_data, v->mv_size, key, what, NULL);
    case 1:
        return rec_filehash_decode(v->mv_data, v->mv_size, what, NULL, NULL);
    case 2:
        return rec_calib_decode(v->mv_data, v->mv_size, key, what, NULL);
    case 3:
        return rec_stats_decode(v->mv_data, v->mv_size, key, what, NULL, NULL, NULL, NULL,
                                NULL);
    default:
        return rec_run_decode(v->mv_data, v->mv_size, key, what, NULL);
    }
}

/* One database of reap_store_verify's walk. */
typedef struct verify_walk {
    reap_store *s;
    int db;
    uint64_t n;
} verify_walk;

static int verify_visit(void *ud, const MDB_val *k, const MDB_val *v)
{
    verify_walk *w = ud;
    w->n++;
    return verify_record(w->s, w->db, k, v);
}

int reap_store_verify(reap_store *s, uint64_t *n_checked)
{
    MDB_txn *txn;
    MDB_dbi dbis[5] = {s->db_models, s->db_filehash, s->db_calibs, s->db_stats, s->db_runs};
    verify_walk w = {s, 0, 0};
    int rc = store_txn_begin(s, 0, &txn);
    if (rc)
        return rc;
    for (w.db = 0; w.db < 5 && !rc; w.db++)
        rc = store_walk(s, txn, dbis[w.db], NULL, 0, verify_klens[w.db], verify_dbs[w.db],
                        verify_visit, &w);
    store_txn_abort(s, txn);
    if (n_checked)
        *n_checked = w.n;
    return rc;
}

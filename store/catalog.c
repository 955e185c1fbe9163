/* catalog.c - model and calibration records (catalog.h): put-if-absent and get. */
#include "catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "records.h"
#include "reap_err.h"
#include "store_impl.h"

typedef struct put_ctx {
    MDB_dbi dbi;
    const uint8_t *key;   /* 32 B */
    const uint8_t *val;
    size_t len;
} put_ctx;

static int put_if_absent(reap_store *s, MDB_txn *txn, void *ud)
{
    const put_ctx *p = ud;
    MDB_val k = {32, (void *)p->key}, v = {p->len, (void *)p->val};
    int mrc = mdb_put(txn, p->dbi, &k, &v, MDB_NOOVERWRITE);
    return mrc == MDB_KEYEXIST ? REAP_OK : store_mdb_err(s, mrc, "put");
}

int reap_store_model_put(reap_store *s, const reap_model_info *m)
{
    uint8_t *buf = NULL;
    size_t len;
    int rc;
    if (m->n_layers < 1 || m->n_experts < 1 || m->n_moe_layers < 1)
        return reap_err_set(REAP_E_INVALID, "%s: model record without layers or experts",
                            s->dir);
    if ((rc = rec_model_encode(m, &buf, &len)))
        return rc;
    put_ctx p = {s->db_models, m->id.b, buf, len};
    rc = store_write(s, put_if_absent, &p);
    free(buf);
    return rc;
}

int reap_store_calib_put(reap_store *s, const reap_calib_info *c)
{
    uint8_t *buf = NULL;
    size_t len;
    int rc;
    if (c->n_rows < 1 || c->seq_len < 1)
        return reap_err_set(REAP_E_INVALID, "%s: calibration record without rows", s->dir);
    if ((rc = rec_calib_encode(c, &buf, &len)))
        return rc;
    put_ctx p = {s->db_calibs, c->id.b, buf, len};
    rc = store_write(s, put_if_absent, &p);
    free(buf);
    return rc;
}

/* Read and decode record `id` of `models` (model != NULL) or `calibs` (calib != NULL). */
static int record_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                      reap_model_info *model, reap_calib_info *calib)
{
    MDB_txn *txn;
    MDB_val v;
    char hex[65], what[4400];
    int rc;
    reap_id_hex(id, hex);
    snprintf(what, sizeof what, "%s: %s %s", s->dir, model ? "model" : "calibration", hex);
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = store_get(s, txn, model ? s->db_models : s->db_calibs, id->b, 32, &v);
    if (rc == REAP_E_NOTFOUND)
        rc = reap_err_set(REAP_E_NOTFOUND, "%s: no %s %s in the store", s->dir,
                          model ? "model" : "calibration set", hex);
    if (!rc)
        rc = model ? rec_model_decode(v.mv_data, v.mv_size, id->b, what, model)
                   : rec_calib_decode(v.mv_data, v.mv_size, id->b, what, calib);
    store_read_end(s, snap, txn);
    return rc;
}

int reap_store_model_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_model_info *out)
{
    memset(out, 0, sizeof *out);
    return record_get(s, snap, id, out, NULL);
}

int reap_store_calib_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_calib_info *out)
{
    memset(out, 0, sizeof *out);
    return record_get(s, snap, id, NULL, out);
}

/* The model ids of a walk over `models`. */
typedef struct id_list {
    reap_store *s;
    reap_id *v;
    int n, cap;
} id_list;

static int id_push(void *ud, const MDB_val *k, const MDB_val *v)
{
    id_list *l = ud;
    (void)v;
    int rc = store_list_room(l->s, &l->v, &l->cap, l->n, sizeof *l->v, "model list");
    if (rc)
        return rc;
    memcpy(l->v[l->n++].b, k->mv_data, 32);
    return REAP_OK;
}

int reap_store_model_list(reap_store *s, reap_store_snap *snap, reap_id **ids, int *n)
{
    MDB_txn *txn;
    id_list l = {s, NULL, 0, 0};
    int rc;
    *ids = NULL;
    *n = 0;
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = store_walk(s, txn, s->db_models, NULL, 0, STORE_ID_LEN, "models", id_push, &l);
    store_read_end(s, snap, txn);
    if (rc) {
        free(l.v);
        return rc;
    }
    *ids = l.v;
    *n = l.n;
    return REAP_OK;
}

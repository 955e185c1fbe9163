/* stats_store.c - per-layer statistics records: write-once put, verified get, the
 * layers and calibration sets present for a model, and the merged view (stats_store.h). */
#include "stats_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "records.h"
#include "reap_err.h"
#include "store_impl.h"

static int modality_identical(const reap_modality_stats *a, const reap_modality_stats *b,
                              size_t E)
{
    return a->tokens == b->tokens && !memcmp(a->count, b->count, E * sizeof *a->count) &&
           !memcmp(a->sum_gate_norm, b->sum_gate_norm, E * sizeof *a->sum_gate_norm) &&
           !memcmp(a->sum_norm, b->sum_norm, E * sizeof *a->sum_norm) &&
           !memcmp(a->sum_gate, b->sum_gate, E * sizeof *a->sum_gate) &&
           !memcmp(a->max_act, b->max_act, E * sizeof *a->max_act);
}

int reap_stats_identical(const reap_layer_stats *a, const reap_layer_stats *b)
{
    size_t E = (size_t)a->n_experts;
    if (a->layer != b->layer || a->n_experts != b->n_experts || a->top_k != b->top_k)
        return 0;
    /* the modality sets count only where one side has image tokens (stats.h) */
    const int n_sets = reap_layer_stats_has_image(a) || reap_layer_stats_has_image(b)
                           ? REAP_N_MODALITIES : 0;
    for (int m = -1; m < n_sets; m++) {
        reap_modality_stats va, vb;
        if (m < 0) {
            va = (reap_modality_stats){a->tokens, a->count, a->sum_gate_norm, a->sum_norm,
                                       a->sum_gate, a->max_act};
            vb = (reap_modality_stats){b->tokens, b->count, b->sum_gate_norm, b->sum_norm,
                                       b->sum_gate, b->max_act};
        } else {
            reap_layer_stats_modality(a, (reap_modality)m, &va);
            reap_layer_stats_modality(b, (reap_modality)m, &vb);
        }
        if (!modality_identical(&va, &vb, E))
            return 0;
    }
    return 1;
}

static void stats_what(const reap_store *s, const reap_id *m, const reap_id *c, int layer,
                       char *out, size_t n)
{
    char mh[65], ch[65];
    reap_id_hex(m, mh);
    reap_id_hex(c, ch);
    snprintf(out, n, "%s: stats %.16s/%.16s layer %d", s->dir, mh, ch, layer);
}

static int stats_put_rule_txn(reap_store *s, MDB_txn *txn, const reap_id *model,
                              const reap_id *calib, const reap_layer_stats *st,
                              const char *backend, uint32_t positions_rule, int *outcome)
{
    uint8_t key[STORE_STATS_KEY_LEN], *buf = NULL;
    size_t len;
    MDB_val v;
    reap_layer_stats old = {0};
    char what[4400];
    int rc;
    store_stats_key(key, model, calib, (uint32_t)st->layer);
    rc = store_get(s, txn, s->db_stats, key, sizeof key, &v);
    if (rc == REAP_OK) {
        stats_what(s, model, calib, st->layer, what, sizeof what);
        if ((rc = rec_stats_decode(v.mv_data, v.mv_size, key, what, &old, NULL, NULL, NULL,
                                   NULL)))
            goto fail;
        if (outcome)
            *outcome = reap_stats_identical(&old, st) ? REAP_STATS_SAME : REAP_STATS_DIFFERENT;
        goto fail;
    }
    if (rc != REAP_E_NOTFOUND)
        goto fail;
    if ((rc = rec_stats_encode(model, calib, st, backend, positions_rule, &buf, &len)))
        goto fail;
    rc = store_put(s, txn, s->db_stats, key, sizeof key, buf, len, 0);
    if (!rc && outcome)
        *outcome = REAP_STATS_WRITTEN;
fail:
    free(buf);
    reap_layer_stats_free(&old);
    return rc;
}

int store_stats_put_txn(reap_store *s, MDB_txn *txn, const reap_id *model,
                        const reap_id *calib, const reap_layer_stats *st,
                        const char *backend, int *outcome)
{
    return stats_put_rule_txn(s, txn, model, calib, st, backend, REAP_STORE_POSITIONS_RULE,
                              outcome);
}

typedef struct put_ctx {
    const reap_id *model, *calib;
    const reap_layer_stats *st;
    const char *backend;
    uint32_t positions_rule;
    int outcome;
} put_ctx;

static int put_fn(reap_store *s, MDB_txn *txn, void *ud)
{
    put_ctx *p = ud;
    return stats_put_rule_txn(s, txn, p->model, p->calib, p->st, p->backend,
                              p->positions_rule, &p->outcome);
}

int reap_store_stats_put_rule(reap_store *s, const reap_id *model, const reap_id *calib,
                              const reap_layer_stats *st, const char *backend,
                              uint32_t positions_rule, reap_stats_outcome *outcome)
{
    put_ctx p = {model, calib, st, backend, positions_rule, REAP_STATS_WRITTEN};
    int rc = store_write(s, put_fn, &p);
    if (!rc && outcome)
        *outcome = (reap_stats_outcome)p.outcome;
    return rc;
}

int reap_store_stats_put(reap_store *s, const reap_id *model, const reap_id *calib,
                         const reap_layer_stats *st, const char *backend,
                         reap_stats_outcome *outcome)
{
    return reap_store_stats_put_rule(s, model, calib, st, backend, REAP_STORE_POSITIONS_RULE,
                                     outcome);
}

/* out may be NULL (verify only); positions_rule may be NULL. */
static int stats_get_txn(reap_store *s, MDB_txn *txn, const reap_id *model,
                         const reap_id *calib, int layer, reap_layer_stats *out,
                         uint32_t *positions_rule)
{
    uint8_t key[STORE_STATS_KEY_LEN];
    MDB_val v;
    char what[4400];
    int rc;
    store_stats_key(key, model, calib, (uint32_t)layer);
    if ((rc = store_get(s, txn, s->db_stats, key, sizeof key, &v)))
        return rc;
    stats_what(s, model, calib, layer, what, sizeof what);
    return rec_stats_decode(v.mv_data, v.mv_size, key, what, out, NULL, NULL, NULL,
                            positions_rule);
}

int reap_store_stats_get(reap_store *s, reap_store_snap *snap, const reap_id *model,
                         const reap_id *calib, int layer, reap_layer_stats *out)
{
    MDB_txn *txn;
    int rc;
    memset(out, 0, sizeof *out);
    if (layer < 0)
        return reap_err_set(REAP_E_INVALID, "%s: layer %d", s->dir, layer);
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = stats_get_txn(s, txn, model, calib, layer, out, NULL);
    store_read_end(s, snap, txn);
    return rc;
}

/* Calls fn(ud, calib, layer) for every stats key of `model` (calib == NULL: every
 * calibration set; else only that one), in key order. */
typedef int (*key_fn)(void *ud, const reap_id *calib, int layer);

typedef struct key_walk {
    reap_store *s;
    key_fn fn;
    void *ud;
} key_walk;

static int key_visit(void *ud, const MDB_val *k, const MDB_val *v)
{
    const key_walk *w = ud;
    const uint8_t *key = k->mv_data;
    reap_id c;
    (void)v;
    memcpy(c.b, key + 32, 32);
    return w->fn(w->ud, &c, (int)store_rd_be32(key + 64));
}

static int walk_keys(reap_store *s, MDB_txn *txn, const reap_id *model, const reap_id *calib,
                     key_fn fn, void *ud)
{
    uint8_t prefix[64];
    key_walk w = {s, fn, ud};
    memcpy(prefix, model->b, 32);
    if (calib)
        memcpy(prefix + 32, calib->b, 32);
    return store_walk(s, txn, s->db_stats, prefix, calib ? 64 : 32, STORE_STATS_KEY_LEN,
                      "stats", key_visit, &w);
}

typedef struct int_list {
    int *v;
    int n, cap;
} int_list;

static int layer_push(void *ud, const reap_id *calib, int layer)
{
    int_list *l = ud;
    int rc = store_list_room(NULL, &l->v, &l->cap, l->n, sizeof *l->v, "layer list");
    (void)calib;
    if (rc)
        return rc;
    l->v[l->n++] = layer;
    return REAP_OK;
}

int reap_store_stats_layers(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const reap_id *calib, int **layers, int *n)
{
    MDB_txn *txn;
    int_list l = {0};
    int rc;
    *layers = NULL;
    *n = 0;
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = walk_keys(s, txn, model, calib, layer_push, &l);
    store_read_end(s, snap, txn);
    if (rc) {
        free(l.v);
        return rc;
    }
    *layers = l.v;
    *n = l.n;
    return REAP_OK;
}

/* Per calibration set of a model: its id and whether every MoE layer is present. */
typedef struct calib_scan {
    const reap_model_info *model;
    reap_id *ids;
    int *complete;
    int n, cap;
    int next_moe;        /* index into model->moe_layers matched so far for ids[n-1] */
} calib_scan;

static int calib_push(void *ud, const reap_id *calib, int layer)
{
    calib_scan *cs = ud;
    if (cs->n == 0 || memcmp(cs->ids[cs->n - 1].b, calib->b, 32)) {
        int cap = cs->cap, rc;
        if ((rc = store_list_room(NULL, &cs->ids, &cap, cs->n, sizeof *cs->ids,
                                  "calibration list")) ||
            (rc = store_list_room(NULL, &cs->complete, &cs->cap, cs->n,
                                  sizeof *cs->complete, "calibration list")))
            return rc;
        cs->ids[cs->n] = *calib;
        cs->complete[cs->n] = 0;
        cs->n++;
        cs->next_moe = 0;
    }
    /* Layers arrive ascending; count the MoE layers matched in order. */
    const reap_model_info *m = cs->model;
    if (cs->next_moe < m->n_moe_layers && m->moe_layers[cs->next_moe] == layer)
        cs->next_moe++;
    cs->complete[cs->n - 1] = cs->next_moe == m->n_moe_layers;
    return REAP_OK;
}

static int scan_calibs(reap_store *s, MDB_txn *txn, const reap_model_info *m,
                       calib_scan *cs)
{
    memset(cs, 0, sizeof *cs);
    cs->model = m;
    int rc = walk_keys(s, txn, &m->id, NULL, calib_push, cs);
    if (rc) {
        free(cs->ids);
        free(cs->complete);
        memset(cs, 0, sizeof *cs);
    }
    return rc;
}

static int model_get_txn(reap_store *s, MDB_txn *txn, const reap_id *model,
                         reap_model_info *out)
{
    reap_store_snap tmp = {s, txn};
    return reap_store_model_get(s, &tmp, model, out);
}

int reap_store_stats_complete(reap_store *s, reap_store_snap *snap, const reap_id *model,
                              const reap_id *calib, int *complete)
{
    MDB_txn *txn;
    reap_model_info m = {0};
    int_list l = {0};
    int rc, j = 0;
    *complete = 0;
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    if ((rc = model_get_txn(s, txn, model, &m)) ||
        (rc = walk_keys(s, txn, model, calib, layer_push, &l)))
        goto fail;
    for (int i = 0; i < l.n && j < m.n_moe_layers; i++)
        if (l.v[i] == m.moe_layers[j])
            j++;
    *complete = j == m.n_moe_layers;
fail:
    free(l.v);
    reap_model_info_free(&m);
    store_read_end(s, snap, txn);
    return rc;
}

int reap_store_stats_calibs(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            int complete_only, reap_id **calibs, int *n)
{
    MDB_txn *txn;
    reap_model_info m = {0};
    calib_scan cs = {0};
    int rc, k = 0;
    *calibs = NULL;
    *n = 0;
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    if ((rc = model_get_txn(s, txn, model, &m)) || (rc = scan_calibs(s, txn, &m, &cs)))
        goto fail;
    for (int i = 0; i < cs.n; i++)
        if (!complete_only || cs.complete[i])
            cs.ids[k++] = cs.ids[i];
    *calibs = cs.ids;
    *n = k;
    cs.ids = NULL;
fail:
    free(cs.ids);
    free(cs.complete);
    reap_model_info_free(&m);
    store_read_end(s, snap, txn);
    return rc;
}

/* The rule of reap_store_pair_stale inside txn; m is the model's record. */
static int pair_stale_txn(reap_store *s, MDB_txn *txn, const reap_model_info *m,
                          const reap_id *calib, int *stale)
{
    reap_store_snap tmp = {s, txn};
    reap_calib_info c = {0};
    int_list l = {0};
    uint32_t rule;
    int rc;
    *stale = 0;
    if (!m->model_type || strcmp(m->model_type, "qwen3_vl_moe"))
        return REAP_OK;   /* Qwen3-MoE positions never changed */
    rc = reap_store_calib_get(s, &tmp, calib, &c);
    if (rc == REAP_OK && !c.pack)
        goto out;         /* rows without gaps: positions never changed */
    if (rc && rc != REAP_E_NOTFOUND)
        goto out;
    /* Packed, or no calibration record (packing unknown: counted as packed). */
    if ((rc = walk_keys(s, txn, &m->id, calib, layer_push, &l)))
        goto out;
    for (int i = 0; i < l.n && !*stale; i++) {
        if ((rc = stats_get_txn(s, txn, &m->id, calib, l.v[i], NULL, &rule)))
            goto out;
        *stale = rule == 0;
    }
out:
    free(l.v);
    reap_calib_info_free(&c);
    return rc;
}

int reap_store_pair_stale(reap_store *s, reap_store_snap *snap, const reap_id *model,
                          const reap_id *calib, int *stale)
{
    MDB_txn *txn;
    reap_model_info m = {0};
    int rc;
    *stale = 0;
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    if (!(rc = model_get_txn(s, txn, model, &m)))
        rc = pair_stale_txn(s, txn, &m, calib, stale);
    reap_model_info_free(&m);
    store_read_end(s, snap, txn);
    return rc;
}

/* stats_get_txn for a record the completeness scan saw: absence is damage. */
static int merged_get(reap_store *s, MDB_txn *txn, const reap_id *model,
                      const reap_id *calib, int layer, reap_layer_stats *out)
{
    int rc = stats_get_txn(s, txn, model, calib, layer, out, NULL);
    if (rc == REAP_E_NOTFOUND) {
        char what[4400];
        stats_what(s, model, calib, layer, what, sizeof what);
        rc = reap_err_set(REAP_E_FORMAT, "%s: record missing", what);
    }
    return rc;
}

/* "calibration set <id> has N of M MoE layers (missing: 2, 3, 4)" for an incomplete set
 * (the list is cut after 16 layers). */
static int describe_incomplete(reap_store *s, MDB_txn *txn, const reap_model_info *m,
                               const reap_id *calib, char *buf, size_t len)
{
    int_list l = {0};
    char ch[65];
    size_t k;
    int rc, have = 0, shown = 0, missing = 0;
    reap_id_hex(calib, ch);
    if ((rc = walk_keys(s, txn, &m->id, calib, layer_push, &l)))
        return rc;
    for (int j = 0; j < m->n_moe_layers; j++) {
        int found = 0;
        for (int i = 0; i < l.n && !found; i++)
            found = l.v[i] == m->moe_layers[j];
        have += found;
    }
    k = (size_t)snprintf(buf, len, "calibration set %s has %d of %d MoE layers (missing:", ch,
                         have, m->n_moe_layers);
    for (int j = 0; j < m->n_moe_layers && k < len; j++) {
        int found = 0;
        for (int i = 0; i < l.n && !found; i++)
            found = l.v[i] == m->moe_layers[j];
        if (found)
            continue;
        missing++;
        if (shown < 16) {
            k += (size_t)snprintf(buf + k, len - k, "%s %d", shown ? "," : "", m->moe_layers[j]);
            shown++;
        }
    }
    if (k < len)
        snprintf(buf + k, len - k, "%s)", missing > shown ? ", ..." : "");
    free(l.v);
    return REAP_OK;
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

int reap_store_stats_merged(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const reap_id *calibs, int n_calibs, reap_layer_stats **out,
                            int *n_out, reap_id **used, int *n_used)
{
    MDB_txn *txn = NULL;
    reap_model_info m = {0};
    calib_scan cs = {0};
    reap_id *sel = NULL;
    reap_layer_stats *res = NULL, one = {0};
    int n_sel = 0, n_res = 0, rc;
    char mh[65], ch[65];
    *out = NULL;
    *n_out = 0;
    if (used)
        *used = NULL;
    if (n_used)
        *n_used = 0;
    reap_id_hex(model, mh);
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    if ((rc = model_get_txn(s, txn, model, &m)) || (rc = scan_calibs(s, txn, &m, &cs)))
        goto fail;
    sel = malloc((size_t)(n_calibs > 0 ? n_calibs : cs.n > 0 ? cs.n : 1) * sizeof *sel);
    if (!sel) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: calibration selection", s->dir);
        goto fail;
    }
    if (n_calibs > 0) {
        memcpy(sel, calibs, (size_t)n_calibs * sizeof *sel);
        n_sel = n_calibs;
        qsort(sel, (size_t)n_sel, sizeof *sel, id_cmp);
        for (int i = 0; i < n_sel; i++) {
            int found = 0;
            reap_id_hex(&sel[i], ch);
            if (i && !memcmp(sel[i].b, sel[i - 1].b, 32)) {
                rc = reap_err_set(REAP_E_INVALID, "calibration id %s given twice", ch);
                goto fail;
            }
            for (int j = 0; j < cs.n && !found; j++)
                if (!memcmp(cs.ids[j].b, sel[i].b, 32))
                    found = cs.complete[j] ? 2 : 1;
            if (!found) {
                rc = reap_err_set(REAP_E_NOTFOUND,
                                  "%s: model %s has no complete statistics for calibration "
                                  "set %s (no layer scored)", s->dir, mh, ch);
                goto fail;
            }
            if (found == 1) {   /* some layers only: a run stopped or still going */
                char what[1024];
                if ((rc = describe_incomplete(s, txn, &m, &sel[i], what, sizeof what)))
                    goto fail;
                rc = reap_err_set(REAP_E_PRECONDITION,
                                  "%s: model %s has no complete statistics: %s; score it "
                                  "again to complete it", s->dir, mh, what);
                goto fail;
            }
        }
    } else {
        for (int j = 0; j < cs.n; j++)
            if (cs.complete[j])
                sel[n_sel++] = cs.ids[j];
        if (!n_sel && cs.n) {   /* only incomplete sets: name the first */
            char what[1024];
            if ((rc = describe_incomplete(s, txn, &m, &cs.ids[0], what, sizeof what)))
                goto fail;
            rc = reap_err_set(REAP_E_PRECONDITION,
                              "%s: model %s has no complete calibration set (%d incomplete; "
                              "%s); score it again to complete it", s->dir, mh, cs.n, what);
            goto fail;
        }
        if (!n_sel) {
            rc = reap_err_set(REAP_E_NOTFOUND,
                              "%s: model %s has no complete calibration set (score it first)",
                              s->dir, mh);
            goto fail;
        }
    }
    for (int i = 0; i < n_sel; i++) {
        int stale;
        if ((rc = pair_stale_txn(s, txn, &m, &sel[i], &stale)))
            goto fail;
        if (stale) {
            reap_id_hex(&sel[i], ch);
            rc = reap_err_set(REAP_E_PRECONDITION,
                              "%s: model %s calibration set %s: stale statistics (packed "
                              "Qwen3-VL-MoE rows scored before the rotary-positions fix, "
                              "positions_rule 0); they are not used: score the model on "
                              "this calibration file again into a new store", s->dir, mh, ch);
            goto fail;
        }
    }
    res = calloc((size_t)m.n_moe_layers, sizeof *res);
    if (!res) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: merged statistics", s->dir);
        goto fail;
    }
    for (int i = 0; i < m.n_moe_layers; i++) {
        if ((rc = merged_get(s, txn, model, &sel[0], m.moe_layers[i], &res[i])))
            goto fail;
        n_res++;
        for (int j = 1; j < n_sel; j++) {
            if ((rc = merged_get(s, txn, model, &sel[j], m.moe_layers[i], &one)) ||
                (rc = reap_layer_stats_merge(&res[i], &one)))
                goto fail;
            reap_layer_stats_free(&one);
        }
    }
    *out = res;
    *n_out = n_res;
    res = NULL;
    if (used) {
        *used = sel;
        sel = NULL;
    }
    if (n_used)
        *n_used = n_sel;
fail:
    reap_layer_stats_free(&one);
    for (int i = 0; res && i < n_res; i++)
        reap_layer_stats_free(&res[i]);
    free(res);
    free(sel);
    free(cs.ids);
    free(cs.complete);
    reap_model_info_free(&m);
    store_read_end(s, snap, txn);
    return rc;
}

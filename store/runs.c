/* runs.c - run records (runs.h): begin, per-layer commit (statistics and run record in
 * one write transaction), finish, get, list. */
#include "runs.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "records.h"
#include "hex.h"
#include "reap_err.h"
#include "store_impl.h"

const char *reap_run_state_name(int state)
{
    switch (state) {
    case REAP_RUN_RUNNING:
        return "running";
    case REAP_RUN_DONE:
        return "done";
    case REAP_RUN_FAILED:
        return "failed";
    case REAP_RUN_CANCELLED:
        return "cancelled";
    default:
        return "unknown";
    }
}

void reap_run_id_hex(const uint8_t id[16], char out[33])
{
    reap_hex(id, 16, out);
}

int reap_run_id_parse(const char *hex, uint8_t id[16])
{
    reap_id tmp;
    char buf[65];
    if (!hex || strlen(hex) != 32)
        return reap_err_set(REAP_E_INVALID, "'%s' is not a run id (32 hex digits)",
                            hex ? hex : "(null)");
    /* Reuse the 64-digit parser on a zero-padded copy. */
    memcpy(buf, hex, 32);
    memset(buf + 32, '0', 32);
    buf[64] = 0;
    if (reap_id_parse(buf, &tmp))
        return reap_err_set(REAP_E_INVALID, "'%s' is not a run id (32 hex digits)", hex);
    memcpy(id, tmp.b, 16);
    return REAP_OK;
}

static int dup_or_null(const char *src, char **dst)
{
    *dst = NULL;
    if (!src)
        return REAP_OK;
    *dst = strdup(src);
    return *dst ? REAP_OK : reap_err_set(REAP_E_NOMEM, "store: run record");
}

typedef struct run_write {
    const reap_run_info *run;
    const reap_id *model, *calib;
    const reap_layer_stats *st;   /* NULL: run record only */
    int outcome;
} run_write;

static int run_write_fn(reap_store *s, MDB_txn *txn, void *ud)
{
    run_write *w = ud;
    uint8_t *buf = NULL;
    size_t len;
    int rc = REAP_OK;
    w->outcome = REAP_STATS_WRITTEN;
    if (w->st && (rc = store_stats_put_txn(s, txn, w->model, w->calib, w->st,
                                           w->run->backend, &w->outcome)))
        return rc;
    if ((rc = rec_run_encode(w->run, &buf, &len)))
        return rc;
    rc = store_put(s, txn, s->db_runs, w->run->run_id, 16, buf, len, 0);
    free(buf);
    return rc;
}

static int run_save(reap_store *s, reap_run_info *run)
{
    run_write w = {run, &run->model, &run->calib, NULL, 0};
    run->updated_unix_ns = store_now_ns();
    return store_write(s, run_write_fn, &w);
}

void reap_run_id_new(uint8_t id[16])
{
    randombytes_buf(id, 16);
}

int reap_store_run_begin(reap_store *s, const uint8_t *run_id, const reap_id *model,
                         const reap_id *calib, int n_layers, int start_layer,
                         const char *backend, const char *device, const char *request,
                         reap_run_info *out)
{
    reap_run_info r = {0};
    char host[256] = "";
    int rc;
    memset(out, 0, sizeof *out);
    if (n_layers < 1 || start_layer < 0 || start_layer >= n_layers)
        return reap_err_set(REAP_E_INVALID, "run: start layer %d of %d", start_layer,
                            n_layers);
    r.started_unix_ns = store_now_ns();
    if (run_id)
        memcpy(r.run_id, run_id, 16);
    else
        reap_run_id_new(r.run_id);
    r.model = *model;
    r.calib = *calib;
    r.state = REAP_RUN_RUNNING;
    r.n_layers = n_layers;
    r.start_layer = start_layer;
    r.layers_done = start_layer;
    r.pid = (int)getpid();
    gethostname(host, sizeof host - 1);
    r.layer_seconds = calloc((size_t)n_layers, sizeof *r.layer_seconds);
    if (!r.layer_seconds || (rc = dup_or_null(backend, &r.backend)) ||
        (rc = dup_or_null(device, &r.device)) || (rc = dup_or_null(host, &r.host)) ||
        (rc = dup_or_null(request, &r.request))) {
        rc = reap_err_set(REAP_E_NOMEM, "store: run record");
        goto fail;
    }
    if ((rc = run_save(s, &r)))
        goto fail;
    *out = r;
    return REAP_OK;
fail:
    reap_run_info_free(&r);
    return rc;
}

int reap_store_run_commit_layer(reap_store *s, reap_run_info *run, int layer,
                                double seconds, const reap_layer_stats *st,
                                reap_stats_outcome *outcome)
{
    int rc;
    if (layer < 0 || layer >= run->n_layers || (st && st->layer != layer))
        return reap_err_set(REAP_E_INVALID, "run: commit of layer %d (statistics of layer "
                                            "%d) in a run of %d layers",
                            layer, st ? st->layer : -1, run->n_layers);
    /* The record grows by one timing per layer; keep the caller's copy in step. */
    if (run->n_layer_seconds >= run->n_layers)
        return reap_err_set(REAP_E_INVALID, "run: more layer commits than layers");
    if (!run->layer_seconds &&
        !(run->layer_seconds = calloc((size_t)run->n_layers, sizeof *run->layer_seconds)))
        return reap_err_set(REAP_E_NOMEM, "store: run record");
    int old_done = run->layers_done, old_n = run->n_layer_seconds;
    run->layer_seconds[run->n_layer_seconds++] = seconds;
    if (layer + 1 > run->layers_done)
        run->layers_done = layer + 1;
    run->updated_unix_ns = store_now_ns();
    run_write w = {run, &run->model, &run->calib, st, 0};
    if ((rc = store_write(s, run_write_fn, &w))) {
        run->layers_done = old_done;
        run->n_layer_seconds = old_n;
        return rc;
    }
    if (outcome)
        *outcome = (reap_stats_outcome)w.outcome;
    return REAP_OK;
}

int reap_store_run_finish(reap_store *s, reap_run_info *run, int state, const char *error)
{
    if (state != REAP_RUN_DONE && state != REAP_RUN_FAILED && state != REAP_RUN_CANCELLED)
        return reap_err_set(REAP_E_INVALID, "run: final state %d", state);
    free(run->error);
    run->error = NULL;
    if (error && dup_or_null(error, &run->error))
        return REAP_E_NOMEM;
    run->state = state;
    run->finished_unix_ns = store_now_ns();
    return run_save(s, run);
}

int reap_store_run_mark_interrupted(reap_store *s, const reap_id *model, const reap_id *calib,
                                    int *n_marked)
{
    reap_run_info *runs = NULL;
    char host[256] = "", msg[400];
    int n = 0, marked = 0, rc;
    if (n_marked)
        *n_marked = 0;
    gethostname(host, sizeof host - 1);
    if ((rc = reap_store_run_list(s, NULL, &runs, &n)))
        return rc;
    for (int i = 0; i < n && !rc; i++) {
        reap_run_info *r = &runs[i];
        if (r->state != REAP_RUN_RUNNING || memcmp(r->model.b, model->b, 32) ||
            memcmp(r->calib.b, calib->b, 32) ||
            (r->pid == (int)getpid() && r->host && !strcmp(r->host, host)))
            continue;
        snprintf(msg, sizeof msg, "interrupted: process %d on %.255s is gone", r->pid,
                 r->host && *r->host ? r->host : "?");
        r->interrupted = 1;
        if (!(rc = reap_store_run_finish(s, r, REAP_RUN_FAILED, msg)))
            marked++;
    }
    for (int i = 0; i < n; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    if (n_marked)
        *n_marked = marked;
    return rc;
}

int reap_store_run_get(reap_store *s, reap_store_snap *snap, const uint8_t run_id[16],
                       reap_run_info *out)
{
    MDB_txn *txn;
    MDB_val v;
    char hex[33], what[4400];
    int rc;
    memset(out, 0, sizeof *out);
    reap_run_id_hex(run_id, hex);
    snprintf(what, sizeof what, "%s: run %s", s->dir, hex);
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = store_get(s, txn, s->db_runs, run_id, 16, &v);
    if (rc == REAP_E_NOTFOUND)
        rc = reap_err_set(REAP_E_NOTFOUND, "%s: no run %s", s->dir, hex);
    if (!rc)
        rc = rec_run_decode(v.mv_data, v.mv_size, run_id, what, out);
    store_read_end(s, snap, txn);
    return rc;
}

static int run_oldest_first(const void *a, const void *b)
{
    const reap_run_info *x = a, *y = b;
    if (x->started_unix_ns != y->started_unix_ns)
        return x->started_unix_ns < y->started_unix_ns ? -1 : 1;
    return memcmp(x->run_id, y->run_id, 16);
}

/* The runs of a walk over `runs`, decoded. */
typedef struct run_list {
    reap_store *s;
    reap_run_info *v;
    int n, cap;
    char what[4400];
} run_list;

static int run_push(void *ud, const MDB_val *k, const MDB_val *v)
{
    run_list *l = ud;
    int rc;
    if ((rc = store_list_room(l->s, &l->v, &l->cap, l->n, sizeof *l->v, "run list")) ||
        (rc = rec_run_decode(v->mv_data, v->mv_size, k->mv_data, l->what, &l->v[l->n])))
        return rc;
    l->n++;
    return REAP_OK;
}

int reap_store_run_list(reap_store *s, reap_store_snap *snap, reap_run_info **runs, int *n)
{
    MDB_txn *txn;
    run_list l = {.s = s};
    int rc;
    *runs = NULL;
    *n = 0;
    snprintf(l.what, sizeof l.what, "%s: run record", s->dir);
    if ((rc = store_read_begin(s, snap, &txn)))
        return rc;
    rc = store_walk(s, txn, s->db_runs, NULL, 0, STORE_RUN_ID_LEN, "runs", run_push, &l);
    store_read_end(s, snap, txn);
    if (rc) {
        for (int i = 0; i < l.n; i++)
            reap_run_info_free(&l.v[i]);
        free(l.v);
        return rc;
    }
    if (l.n > 1)
        qsort(l.v, (size_t)l.n, sizeof *l.v, run_oldest_first);
    *runs = l.v;
    *n = l.n;
    return REAP_OK;
}

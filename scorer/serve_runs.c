/* serve_runs.c - the run queries of `reap-scorer serve` (scorer_serve_impl.h): run records and
 * the run manager's jobs as reap.v1.Run messages, run ids from prefixes, and the
 * GetRun, CancelRun and ListRuns handlers. A run is what the store records of it (its
 * layers, its end) and, while this server holds it, what the run manager knows (queued,
 * identifying, the layer in progress); a Run merges the two.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "rpc_status.h"
#include "scorer_serve_impl.h"
#include "svc.h"

rpc_code scorer_code(int status)
{
    switch (status) {
    case REAP_RM_E_BUSY:
        return RPC_RESOURCE_EXHAUSTED;
    case REAP_RM_E_EXISTS:
        return RPC_ALREADY_EXISTS;
    case REAP_RM_E_STOPPING:
        return RPC_UNAVAILABLE;
    default:
        return rpc_code_from_reap(status);
    }
}

/* ---- run states and Run messages ---------------------------------------------------- */

int scorer_run_state(const scorer_svc *S, const reap_run_info *r)
{
    switch (r->state) {
    case REAP_RUN_RUNNING:
        /* Not ours (we hold our runs in memory): another process on this host that is
         * gone (or an earlier incarnation with our pid: containers), or elsewhere. */
        if (r->host && !strcmp(r->host, S->host) &&
            (r->pid == (int)getpid() || (kill(r->pid, 0) && errno == ESRCH)))
            return REAP_RM_INTERRUPTED;
        return REAP_RM_RUNNING;
    case REAP_RUN_DONE:
        return REAP_RM_DONE;
    case REAP_RUN_FAILED:
        return r->interrupted ? REAP_RM_INTERRUPTED : REAP_RM_FAILED;
    case REAP_RUN_CANCELLED:
        return r->interrupted ? REAP_RM_INTERRUPTED : REAP_RM_CANCELLED;
    default:
        return 0;
    }
}

/* Fill a Run from the store record r (may be NULL) and the in-memory job m (may be
 * NULL); at least one is given. Strings and arrays come from pool. */
static void run_msg(const scorer_svc *S, reap_store_snap *snap, const reap_run_info *r,
                    const reap_rm_info *m, svc_pool *pool, Reap__V1__Run *o)
{
    reap__v1__run__init(o);
    if (r) {
        reap_calib_info ci = {0};
        o->run_id = svc_hex(pool, r->run_id, 16);
        o->model_id = svc_hex(pool, r->model.b, 32);
        o->calib_id = svc_hex(pool, r->calib.b, 32);
        o->state = (Reap__V1__RunState)scorer_run_state(S, r);
        o->n_layers = (uint32_t)r->n_layers;
        o->layers_done = (uint32_t)r->layers_done;
        o->start_layer = (uint32_t)r->start_layer;
        o->backend = svc_strdup(pool, r->backend);
        o->device = svc_strdup(pool, r->device);
        o->started_unix_ns = r->started_unix_ns;
        o->updated_unix_ns = r->updated_unix_ns;
        o->finished_unix_ns = r->finished_unix_ns;
        o->error = svc_strdup(pool, r->error);
        if (r->n_layer_seconds > 0) {
            double *v = svc_alloc(pool, (size_t)r->n_layer_seconds * sizeof *v);
            if (v) {
                memcpy(v, r->layer_seconds, (size_t)r->n_layer_seconds * sizeof *v);
                o->layer_seconds = v;
                o->n_layer_seconds = (size_t)r->n_layer_seconds;
            }
        }
        if (reap_store_calib_get(S->d.store, snap, &r->calib, &ci) == REAP_OK)
            o->tokens = ci.n_tokens;
        reap_calib_info_free(&ci);
    }
    if (m) {
        if (!r) {
            o->run_id = m->has_run_id ? svc_hex(pool, m->run_id, 16) : svc_strdup(pool, "");
            if (m->has_ids) {
                o->model_id = svc_hex(pool, m->model_id.b, 32);
                o->calib_id = svc_hex(pool, m->calib_id.b, 32);
            }
            o->backend = svc_strdup(pool, m->backend);
            o->started_unix_ns = m->started_unix_ns ? m->started_unix_ns
                                                    : m->submitted_unix_ns;
            o->error = svc_strdup(pool, m->error);
        }
        o->state = (Reap__V1__RunState)m->state;
        o->n_layers = (uint32_t)m->n_layers;
        o->layers_done = (uint32_t)m->layers_done;
        o->start_layer = (uint32_t)m->start_layer;
        o->updated_unix_ns = m->updated_unix_ns;
        if (m->finished_unix_ns)
            o->finished_unix_ns = m->finished_unix_ns;
        if (m->state >= REAP_RM_DONE && m->error[0])
            o->error = svc_strdup(pool, m->error);
        if (m->n_tokens)
            o->tokens = (uint64_t)m->n_tokens;
        o->model_path = svc_strdup(pool, m->model_path);
        o->calib_path = svc_strdup(pool, m->calib_path);
        o->queue_position = (uint32_t)m->queue_position;
        /* No worker took it (started_unix_ns is set when one does) and it has ended. */
        o->never_started = m->state >= REAP_RM_DONE && !m->started_unix_ns;
    }
}

/* Count a run id matching the first k digits of want (once per id: a run is in the store
 * and in the manager). */
static void match_run(const uint8_t id[16], const char *want, int k, uint8_t out[16],
                      int *found)
{
    char hex[33];
    reap_run_id_hex(id, hex);
    if (strncmp(hex, want, (size_t)k) || (*found && !memcmp(out, id, 16)))
        return;
    if ((*found)++ == 0)
        memcpy(out, id, 16);
}

/* Resolve a run id (32 hex digits, or a unique prefix of >= 8) among the store's runs
 * and the manager's jobs (queued runs have no store record yet). Returns RPC_OK with
 * out set, or INVALID_ARGUMENT / NOT_FOUND / INTERNAL with a message in err. */
static rpc_code resolve_run(scorer_svc *S, reap_store_snap *snap, const char *text,
                            uint8_t out[16], char *err, size_t errlen)
{
    char want[33];
    int k = svc_hex_prefix(text, 32, want), found = 0;
    if (!text || !*text) {
        snprintf(err, errlen, "run_id: required");
        return RPC_INVALID_ARGUMENT;
    }
    if (k < 0) {
        snprintf(err, errlen, "run_id: '%.80s' is not a run id (32 hex digits or a unique "
                 "prefix of at least 8)", text);
        return RPC_INVALID_ARGUMENT;
    }
    if (k == 32)
        return reap_run_id_parse(want, out) ? RPC_INVALID_ARGUMENT : RPC_OK;
    reap_run_info *runs = NULL;
    reap_rm_info *mem = NULL;
    int n = 0, n_mem = 0;
    if (reap_store_run_list(S->d.store, snap, &runs, &n) || reap_rm_list(S->rm, &mem, &n_mem)) {
        snprintf(err, errlen, "run_id: %s", reap_err_msg());
        for (int i = 0; i < n; i++)
            reap_run_info_free(&runs[i]);
        free(runs);
        return RPC_INTERNAL;
    }
    for (int i = 0; i < n; i++) {
        match_run(runs[i].run_id, want, k, out, &found);
        reap_run_info_free(&runs[i]);
    }
    free(runs);
    for (int i = 0; i < n_mem; i++) {
        if (mem[i].has_run_id)
            match_run(mem[i].run_id, want, k, out, &found);
        reap_rm_info_free(&mem[i]);
    }
    free(mem);
    if (found > 1) {
        snprintf(err, errlen, "run_id: prefix %s matches %d runs; give more digits", want,
                 found);
        return RPC_INVALID_ARGUMENT;
    }
    if (!found) {
        snprintf(err, errlen, "run_id: no run %s", want);
        return RPC_NOT_FOUND;
    }
    return RPC_OK;
}

int scorer_call_run(rpc_call *call, scorer_svc *S, const char *run_id, uint8_t id[16])
{
    char err[512];
    rpc_code code = resolve_run(S, NULL, run_id, id, err, sizeof err);
    return code ? rpc_call_error(call, code, "%s", err) : 0;
}

/* Reply with the Run of `id` (store record and/or in-memory job). */
static int reply_run(rpc_call *call, scorer_svc *S, const uint8_t id[16],
                     const reap_rm_info *mem)
{
    reap_store_snap *snap = NULL;
    reap_run_info r = {0};
    svc_pool pool = {0};
    Reap__V1__Run o;
    char rh[33];
    int rc, have_r;
    if ((rc = reap_store_snap_begin(S->d.store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    rc = reap_store_run_get(S->d.store, snap, id, &r);
    have_r = rc == REAP_OK;
    if (rc && rc != REAP_E_NOTFOUND) {
        rc = rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
        goto done;
    }
    if (!have_r && !mem) {
        reap_run_id_hex(id, rh);
        rc = rpc_call_error(call, RPC_NOT_FOUND, "run_id: no run %s", rh);
        goto done;
    }
    run_msg(S, snap, have_r ? &r : NULL, mem, &pool, &o);
    rc = svc_respond(call, &pool, &o.base);
done:
    reap_store_snap_end(snap);
    reap_run_info_free(&r);
    svc_pool_free(&pool);
    return rc;
}

int scorer_serve_get_run(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__GetRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    reap_rm_info mem = {0};
    int rc = scorer_call_run(call, S, q->run_id, id);
    if (rc)
        return rc;
    int have = reap_rm_get(S->rm, id, &mem) == REAP_OK;
    rc = reply_run(call, S, id, have ? &mem : NULL);
    reap_rm_info_free(&mem);
    return rc;
}

int scorer_serve_cancel(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__CancelRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    char rh[33];
    reap_rm_info mem = {0};
    int rc = scorer_call_run(call, S, q->run_id, id);
    if (rc)
        return rc;
    rc = reap_rm_cancel(S->rm, id, &mem);
    if (rc == REAP_E_NOTFOUND) {
        /* Not ours: an ended run is returned as it is; a live one elsewhere is refused. */
        reap_run_info r = {0};
        if ((rc = reap_store_run_get(S->d.store, NULL, id, &r)))
            return rpc_call_error(call, scorer_code(rc), "run_id: %s",
                                  reap_err_msg());
        int st = scorer_run_state(S, &r);
        reap_run_info_free(&r);
        reap_run_id_hex(id, rh);
        if (st == REAP_RM_RUNNING)
            return rpc_call_error(call, RPC_FAILED_PRECONDITION, "run_id: run %s is not "
                                  "running in this server; stop the process scoring it", rh);
        return reply_run(call, S, id, NULL);
    }
    if (rc)
        return rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
    reap_run_id_hex(id, rh);
    svc_log(SCORER_PROG, "CancelRun %s from %s", rh, rpc_call_peer(call));
    rc = reply_run(call, S, id, &mem);
    reap_rm_info_free(&mem);
    return rc;
}

/* A run of ListRuns: a store record and/or the manager's job. */
typedef struct list_ent {
    const reap_run_info *r;
    const reap_rm_info *m;
} list_ent;

/* When the run was made: its submission when the manager knows it (a queued run has no
 * store record yet), else the start its record holds. */
static int64_t list_ent_made(const list_ent *e)
{
    return e->m ? e->m->submitted_unix_ns : e->r->started_unix_ns;
}

static const uint8_t *list_ent_id(const list_ent *e)
{
    return e->r ? e->r->run_id : e->m->run_id;
}

static int list_ent_newest_first(const void *a, const void *b)
{
    int64_t ta = list_ent_made(a), tb = list_ent_made(b);
    if (ta != tb)
        return ta > tb ? -1 : 1;
    return memcmp(list_ent_id(b), list_ent_id(a), 16);
}

int scorer_serve_list_runs(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__ListRunsRequest *q = (const void *)req;
    scorer_svc *S = ud;
    reap_store_snap *snap = NULL;
    reap_run_info *runs = NULL;
    reap_rm_info *mem = NULL;
    list_ent *ent = NULL;
    int n_runs = 0, n_mem = 0, n_ent = 0, rc;
    svc_pool pool = {0};
    Reap__V1__ListRunsResponse resp = REAP__V1__LIST_RUNS_RESPONSE__INIT;
    reap_id model;
    char err[512];
    uint32_t limit = q->limit ? q->limit : 100;

    if ((int)q->state < 0 || (int)q->state > REAP_RM_INTERRUPTED)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "state: unknown run state %d",
                              (int)q->state);
    if ((rc = reap_store_snap_begin(S->d.store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    if (*q->model_id) {
        rpc_code code = svc_resolve_model(S->d.store, snap, "model_id", q->model_id, &model,
                                          err, sizeof err);
        if (code) {
            rc = rpc_call_error(call, code, "%s", err);
            goto done;
        }
    }
    if ((rc = reap_store_run_list(S->d.store, snap, &runs, &n_runs)) ||
        (rc = reap_rm_list(S->rm, &mem, &n_mem))) {
        rc = rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
        goto done;
    }
    /* The store's runs (with the manager's job when it holds the run) and the jobs the
     * store has no record of (queued, identifying, ended before they started; not those
     * of a pair already scored), newest first. */
    if (!(ent = svc_alloc(&pool, ((size_t)n_runs + (size_t)n_mem) * sizeof *ent)) ||
        !(resp.runs = svc_alloc(&pool, ((size_t)n_runs + (size_t)n_mem) * sizeof *resp.runs)))
        goto respond;
    for (int i = 0; i < n_runs; i++) {
        ent[n_ent] = (list_ent){&runs[i], NULL};
        for (int k = 0; k < n_mem; k++)
            if (mem[k].has_run_id && !memcmp(mem[k].run_id, runs[i].run_id, 16))
                ent[n_ent].m = &mem[k];
        n_ent++;
    }
    for (int k = 0; k < n_mem; k++) {
        int in_store = 0;
        for (int i = 0; i < n_runs && !in_store; i++)
            in_store = !memcmp(mem[k].run_id, runs[i].run_id, 16);
        if (mem[k].has_run_id && !in_store && !mem[k].already_scored)
            ent[n_ent++] = (list_ent){NULL, &mem[k]};
    }
    qsort(ent, (size_t)n_ent, sizeof *ent, list_ent_newest_first);
    for (int i = 0; i < n_ent && resp.n_runs < limit; i++) {
        const reap_rm_info *m = ent[i].m;
        if (*q->model_id && (ent[i].r ? memcmp(&ent[i].r->model, &model, sizeof model)
                                      : !m->has_ids || memcmp(&m->model_id, &model,
                                                              sizeof model)))
            continue;
        Reap__V1__Run *o = svc_alloc(&pool, sizeof *o);
        if (!o)
            goto respond;
        run_msg(S, snap, ent[i].r, m, &pool, o);
        if (q->state && (int)o->state != (int)q->state)
            continue;
        resp.runs[resp.n_runs++] = o;
    }
respond:   /* after a failed allocation too: svc_respond answers RESOURCE_EXHAUSTED */
    rc = svc_respond(call, &pool, &resp.base);
done:
    reap_store_snap_end(snap);
    for (int i = 0; i < n_runs; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    for (int i = 0; i < n_mem; i++)
        reap_rm_info_free(&mem[i]);
    free(mem);
    svc_pool_free(&pool);
    return rc;
}

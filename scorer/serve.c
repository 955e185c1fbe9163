/* serve.c - `reap-scorer serve`: the reap.v1.Scorer gRPC service (proto/reap.proto) over
 * a score store, plus grpc.health.v1.
 *
 * Transport only: each handler checks and converts the request (paths confined to the
 * configured roots with rpc_path_confine, identities resolved from prefixes), calls the
 * run manager (run_manager.h: Score, WatchRun, CancelRun) or reads the store through one
 * snapshot (GetRun, ListRuns, ListModels, GetStats), and converts the answer. A Score or
 * WatchRun call is a watcher of its run: the run goes on when the call ends (client gone,
 * deadline), and a cancelled call only detaches its watcher. Runs stop early on CancelRun
 * or on shutdown (SIGTERM: health NOT_SERVING, the layer in progress is committed, the
 * run is recorded as interrupted; scoring the same pair again resumes it, and so does
 * the next start of the service: serve_resume.h).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cli.h"
#include "catalog.h"
#include "cli.h"
#include "config.h"
#include "health.pb-c.h"
#include "layer_gate.h"
#include "manifest.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "rpc_path.h"
#include "rpc_server.h"
#include "run_manager.h"
#include "runs.h"
#include "scorer_cmds.h"
#include "serve_resume.h"
#include "serve_util.h"
#include "stats_store.h"

#define PROG "reap-scorer serve"

typedef struct scorer_svc {
    rpc_server *srv;
    reap_store *store;
    reap_rm *rm;
    rpc_roots model_roots, calib_roots;
    reap_roots model_fs, calib_fs;   /* the same directories, for the model code's reads */
    const reap_backend_i *backend;   /* default for requests that name none */
    long seq_len, max_samples, batch;
    char host[256];
} scorer_svc;

/* ---- run states and Run messages ---------------------------------------------------- */

/* The RunState of a store record of a run this server does not hold in memory. */
static int state_of_record(const scorer_svc *S, const reap_run_info *r)
{
    int interrupted = r->error && !strncmp(r->error, "interrupted", 11);
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
        return interrupted ? REAP_RM_INTERRUPTED : REAP_RM_FAILED;
    case REAP_RUN_CANCELLED:
        return interrupted ? REAP_RM_INTERRUPTED : REAP_RM_CANCELLED;
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
        o->state = (Reap__V1__RunState)state_of_record(S, r);
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
        if (reap_store_calib_get(S->store, snap, &r->calib, &ci) == REAP_OK)
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
 * and the manager's jobs (queued runs have no store record yet). */
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
    if (reap_store_run_list(S->store, snap, &runs, &n) || reap_rm_list(S->rm, &mem, &n_mem)) {
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

/* ---- Score / WatchRun: watchers ------------------------------------------------------- */

static rpc_code final_code(const reap_rm_info *in)
{
    if (in->state == REAP_RM_DONE)
        return RPC_OK;
    if (in->stop == REAP_RM_STOP_SHUTDOWN)
        return RPC_UNAVAILABLE;
    if (in->stop == REAP_RM_STOP_CANCEL)
        return RPC_CANCELLED;
    return svc_code(in->status, in->error);
}

/* A run event to the watching call (job lock held; never blocks). */
static int watch_send(void *wud, int kind, const reap_rm_info *in)
{
    rpc_call *call = wud;
    Reap__V1__ScoreEvent ev = REAP__V1__SCORE_EVENT__INIT;
    Reap__V1__RunAccepted acc = REAP__V1__RUN_ACCEPTED__INIT;
    Reap__V1__Tokenized tok = REAP__V1__TOKENIZED__INIT;
    Reap__V1__LayerDone ld = REAP__V1__LAYER_DONE__INIT;
    Reap__V1__RunFinished fin = REAP__V1__RUN_FINISHED__INIT;
    Reap__V1__RunError er = REAP__V1__RUN_ERROR__INIT;
    Reap__V1__RunQueued qu = REAP__V1__RUN_QUEUED__INIT;
    char rh[33] = "", mh[65] = "", ch[65] = "";
    if (in->has_run_id)
        reap_run_id_hex(in->run_id, rh);
    if (in->has_ids) {
        reap_id_hex(&in->model_id, mh);
        reap_id_hex(&in->calib_id, ch);
    }
    switch (kind) {
    case REAP_RM_EV_QUEUED:
        qu.run_id = rh;
        qu.position = (uint32_t)in->queue_position;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_QUEUED;
        ev.queued = &qu;
        break;
    case REAP_RM_EV_ACCEPTED:
        acc.run_id = rh;
        acc.model_id = mh;
        acc.calib_id = ch;
        acc.n_layers = (uint32_t)in->n_layers;
        acc.start_layer = (uint32_t)in->start_layer;
        acc.layers_done = (uint32_t)in->layers_done;
        acc.already_scored = in->already_scored;
        acc.state = (Reap__V1__RunState)in->state;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_ACCEPTED;
        ev.accepted = &acc;
        break;
    case REAP_RM_EV_TOKENIZED:
        tok.samples = (uint64_t)in->n_samples;
        tok.rows = (uint32_t)in->n_rows;
        tok.tokens = (uint64_t)in->n_tokens;
        tok.seq_len = (uint32_t)in->seq_len;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_TOKENIZED;
        ev.tokenized = &tok;
        break;
    case REAP_RM_EV_LAYER:
        ld.layer = (uint32_t)in->last_layer;
        ld.layers_done = (uint32_t)in->layers_done;
        ld.n_layers = (uint32_t)in->n_layers;
        ld.seconds = in->last_layer_seconds;
        ld.tokens_per_s = in->tokens_per_s;
        ld.eta_s = in->eta_s;
        ld.moe = in->last_is_moe;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_LAYER_DONE;
        ev.layer_done = &ld;
        break;
    case REAP_RM_EV_FINISHED:
        fin.run_id = rh;
        fin.seconds = in->compute_seconds;
        fin.tokens = (uint64_t)in->n_tokens;
        fin.n_layers = (uint32_t)in->n_layers;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_FINISHED;
        ev.finished = &fin;
        break;
    case REAP_RM_EV_ERROR:
        er.code = (int32_t)final_code(in);
        er.message = (char *)in->error;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_ERROR;
        ev.error = &er;
        break;
    default:
        return 0;
    }
    int rc = rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
    if (kind == REAP_RM_EV_FINISHED)
        rpc_stream_finish(call, RPC_OK, NULL);
    else if (kind == REAP_RM_EV_ERROR)
        rpc_stream_finish(call, final_code(in), "%s", in->error);
    return rc != REAP_OK;
}

static void watch_release(void *wud)
{
    rpc_call_unref(wud);
}

/* The watching call was cancelled (client gone, deadline, server cancelling): detach. */
static void watch_cancelled(rpc_call *call, void *ud)
{
    scorer_svc *S = ud;
    reap_rm_unwatch(S->rm, call);
}

/* ---- handlers ------------------------------------------------------------------------ */

static int h_score(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__ScoreRequest *q = (const void *)req;
    scorer_svc *S = ud;
    char err[1024], cpath[4200];
    char *model = NULL, *calib = NULL, *tok = NULL;
    reap_config cfg = {0};
    rpc_code code;
    int rc;
    struct stat sb;

    if (!*q->model_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "model_path: required");
    if (!*q->calib_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "calib_path: required");
    if (q->seq_len > (1u << 20))
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "seq_len: %u is over 1048576",
                              q->seq_len);
    if (q->batch_size > 65536)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "batch_size: %u is over 65536",
                              q->batch_size);
    if (q->seed && !q->shuffle)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "seed: only applies with shuffle");
    const reap_backend_i *be = S->backend;
    if (*q->backend) {
        if (strcmp(q->backend, "cpu") && strcmp(q->backend, "cuda") &&
            strcmp(q->backend, "auto"))
            return rpc_call_error(call, RPC_INVALID_ARGUMENT, "backend: '%.40s' is not cpu, "
                                  "cuda or auto", q->backend);
        if (!(be = scorer_pick_backend(q->backend)) ||
            (!strcmp(q->backend, "cuda") && reap_cuda_available() <= 0))
            return rpc_call_error(call, RPC_FAILED_PRECONDITION, "backend: cuda is not "
                                  "available on this server (%s)", reap_backend_cuda()
                                  ? "no CUDA device" : "built without CUDA");
    }
    if ((code = rpc_path_confine(&S->model_roots, "model_path", q->model_path,
                                 RPC_PATH_EXISTING | RPC_PATH_DIR, &model, err, sizeof err)) ||
        (code = rpc_path_confine(&S->calib_roots, "calib_path", q->calib_path,
                                 RPC_PATH_EXISTING | RPC_PATH_FILE, &calib, err, sizeof err)) ||
        (*q->tokenizer_path &&
         (code = rpc_path_confine(&S->model_roots, "tokenizer_path", q->tokenizer_path,
                                  RPC_PATH_EXISTING, &tok, err, sizeof err)))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    /* Cheap checks now, so that a wrong path is an error of this call rather than of a
     * queued run: the configuration (the shards are validated by the run). */
    snprintf(cpath, sizeof cpath, "%s/config.json", model);
    if (stat(cpath, &sb)) {
        rc = rpc_call_error(call, RPC_NOT_FOUND, "model_path: %s: no such file (not a "
                            "checkpoint directory)", cpath);
        goto done;
    }
    if ((rc = reap_config_load_confined(cpath, &S->model_fs, &cfg))) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "model_path: %s",
                            reap_err_msg());
        goto done;
    }
    if (reap_config_n_moe_layers(&cfg) == 0) {
        rc = rpc_call_error(call, RPC_FAILED_PRECONDITION, "model_path: %s: the model has "
                            "no MoE layer to score", cpath);
        goto done;
    }
    snprintf(cpath, sizeof cpath, "%s/tokenizer.json", model);
    reap_rm_request rq = {
        .model_dir = model,
        .calib_path = calib,
        .tokenizer_path = tok ? tok : stat(cpath, &sb) == 0 ? model : NULL,
        .shuffle = q->shuffle,
        .seed = q->seed,
        .seq_len = q->seq_len ? (int)q->seq_len : (int)S->seq_len,
        .pack = !q->no_pack,
        /* Given (non-zero or max_samples_set): as sent, 0 = every sample; else the
         * server's --max-samples (proto3 has no presence: old clients' 0 = default). */
        .max_samples = q->max_samples || q->max_samples_set ? (int64_t)q->max_samples
                                                             : S->max_samples,
        .batch_rows = q->batch_size ? (int)q->batch_size : (int)S->batch,
        .backend = be,
        .force = q->force,
    };
    rpc_call_ref(call);   /* the watcher's reference */
    if ((rc = reap_rm_submit(S->rm, &rq, watch_send, watch_release, call, NULL))) {
        rpc_call_unref(call);
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
        goto done;
    }
    rpc_call_on_cancel(call, watch_cancelled, S);
    svc_log(PROG, "Score %s %s from %s: queued", model, calib, rpc_call_peer(call));
    rc = 0;
done:
    reap_config_free(&cfg);
    free(model);
    free(calib);
    free(tok);
    return rc;
}

/* WatchRun of a run this server does not hold: what the store says, then the end. */
static int watch_from_store(rpc_call *call, scorer_svc *S, const uint8_t run_id[16])
{
    reap_run_info r = {0};
    Reap__V1__ScoreEvent ev = REAP__V1__SCORE_EVENT__INIT;
    Reap__V1__RunAccepted acc = REAP__V1__RUN_ACCEPTED__INIT;
    Reap__V1__RunFinished fin = REAP__V1__RUN_FINISHED__INIT;
    Reap__V1__RunError er = REAP__V1__RUN_ERROR__INIT;
    char rh[33], mh[65], ch[65], msg[1200];
    int rc = reap_store_run_get(S->store, NULL, run_id, &r);
    if (rc)
        return rpc_call_error(call, svc_code(rc, reap_err_msg()), "run_id: %s",
                              reap_err_msg());
    int st = state_of_record(S, &r);
    reap_run_id_hex(r.run_id, rh);
    reap_id_hex(&r.model, mh);
    reap_id_hex(&r.calib, ch);
    acc.run_id = rh;
    acc.model_id = mh;
    acc.calib_id = ch;
    acc.n_layers = (uint32_t)r.n_layers;
    acc.start_layer = (uint32_t)r.start_layer;
    acc.layers_done = (uint32_t)r.layers_done;
    acc.state = (Reap__V1__RunState)st;
    ev.event_case = REAP__V1__SCORE_EVENT__EVENT_ACCEPTED;
    ev.accepted = &acc;
    rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
    if (st == REAP_RM_DONE) {
        double sec = 0;
        for (int i = 0; i < r.n_layer_seconds; i++)
            sec += r.layer_seconds[i];
        fin.run_id = rh;
        fin.seconds = sec;
        fin.n_layers = (uint32_t)r.n_layers;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_FINISHED;
        ev.finished = &fin;
        rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
        rpc_stream_finish(call, RPC_OK, NULL);
    } else {
        rpc_code code = st == REAP_RM_CANCELLED ? RPC_CANCELLED
                        : st == REAP_RM_RUNNING ? RPC_FAILED_PRECONDITION
                                                : RPC_ABORTED;
        if (st == REAP_RM_RUNNING)
            snprintf(msg, sizeof msg, "run %s is being scored by process %d on %s, not by "
                     "this server: it cannot be watched here", rh, r.pid,
                     r.host ? r.host : "another host");
        else
            snprintf(msg, sizeof msg, "run %s %s: %s", rh,
                     st == REAP_RM_INTERRUPTED ? "was interrupted"
                     : st == REAP_RM_CANCELLED ? "was cancelled" : "failed",
                     r.error ? r.error : "");
        er.code = (int32_t)code;
        er.message = msg;
        ev.event_case = REAP__V1__SCORE_EVENT__EVENT_ERROR;
        ev.error = &er;
        rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
        rpc_stream_finish(call, code, "%s", msg);
    }
    reap_run_info_free(&r);
    return 0;
}

static int h_watch(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__WatchRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    char err[512];
    rpc_code code;
    if ((code = resolve_run(S, NULL, q->run_id, id, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    rpc_call_ref(call);
    int rc = reap_rm_watch(S->rm, id, watch_send, watch_release, call);
    if (rc == REAP_E_NOTFOUND) {
        rpc_call_unref(call);
        return watch_from_store(call, S, id);
    }
    if (rc) {
        rpc_call_unref(call);
        return rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
    }
    rpc_call_on_cancel(call, watch_cancelled, S);
    return 0;
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
    if ((rc = reap_store_snap_begin(S->store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    rc = reap_store_run_get(S->store, snap, id, &r);
    have_r = rc == REAP_OK;
    if (rc && rc != REAP_E_NOTFOUND) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
        goto done;
    }
    if (!have_r && !mem) {
        reap_run_id_hex(id, rh);
        rc = rpc_call_error(call, RPC_NOT_FOUND, "run_id: no run %s", rh);
        goto done;
    }
    run_msg(S, snap, have_r ? &r : NULL, mem, &pool, &o);
    rc = pool.failed ? rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory")
                     : rpc_call_respond(call, &o.base);
done:
    reap_store_snap_end(snap);
    reap_run_info_free(&r);
    svc_pool_free(&pool);
    return rc;
}

static int h_get_run(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__GetRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    char err[512];
    rpc_code code;
    reap_rm_info mem = {0};
    if ((code = resolve_run(S, NULL, q->run_id, id, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    int have = reap_rm_get(S->rm, id, &mem) == REAP_OK;
    int rc = reply_run(call, S, id, have ? &mem : NULL);
    reap_rm_info_free(&mem);
    return rc;
}

static int h_cancel(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__CancelRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    char err[512], rh[33];
    rpc_code code;
    reap_rm_info mem = {0};
    if ((code = resolve_run(S, NULL, q->run_id, id, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    int rc = reap_rm_cancel(S->rm, id, &mem);
    if (rc == REAP_E_NOTFOUND) {
        /* Not ours: an ended run is returned as it is; a live one elsewhere is refused. */
        reap_run_info r = {0};
        if ((rc = reap_store_run_get(S->store, NULL, id, &r)))
            return rpc_call_error(call, svc_code(rc, reap_err_msg()), "run_id: %s",
                                  reap_err_msg());
        int st = state_of_record(S, &r);
        reap_run_info_free(&r);
        reap_run_id_hex(id, rh);
        if (st == REAP_RM_RUNNING)
            return rpc_call_error(call, RPC_FAILED_PRECONDITION, "run_id: run %s is not "
                                  "running in this server; stop the process scoring it", rh);
        return reply_run(call, S, id, NULL);
    }
    if (rc)
        return rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
    reap_run_id_hex(id, rh);
    svc_log(PROG, "CancelRun %s from %s", rh, rpc_call_peer(call));
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

static int h_list_runs(rpc_call *call, const ProtobufCMessage *req, void *ud)
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
    if ((rc = reap_store_snap_begin(S->store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    if (*q->model_id) {
        rpc_code code = svc_resolve_model(S->store, snap, "model_id", q->model_id, &model,
                                          err, sizeof err);
        if (code) {
            rc = rpc_call_error(call, code, "%s", err);
            goto done;
        }
    }
    if ((rc = reap_store_run_list(S->store, snap, &runs, &n_runs)) ||
        (rc = reap_rm_list(S->rm, &mem, &n_mem))) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
        goto done;
    }
    /* The store's runs (with the manager's job when it holds the run) and the jobs the
     * store has no record of (queued, identifying, ended before they started; not those
     * of a pair already scored), newest first. */
    if (!(ent = svc_alloc(&pool, ((size_t)n_runs + (size_t)n_mem) * sizeof *ent)) ||
        !(resp.runs = svc_alloc(&pool, ((size_t)n_runs + (size_t)n_mem) * sizeof *resp.runs)))
        goto oom;
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
            goto oom;
        run_msg(S, snap, ent[i].r, m, &pool, o);
        if (q->state && (int)o->state != (int)q->state)
            continue;
        resp.runs[resp.n_runs++] = o;
    }
    if (pool.failed)
        goto oom;
    rc = rpc_call_respond(call, &resp.base);
    goto done;
oom:
    rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
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

static int h_list_models(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    scorer_svc *S = ud;
    reap_store_snap *snap = NULL;
    reap_id *ids = NULL;
    int n = 0, rc;
    svc_pool pool = {0};
    Reap__V1__ListModelsResponse resp = REAP__V1__LIST_MODELS_RESPONSE__INIT;
    (void)req;
    if ((rc = reap_store_snap_begin(S->store, &snap)) ||
        (rc = reap_store_model_list(S->store, snap, &ids, &n)))
        goto fail;
    if (n && !(resp.models = svc_alloc(&pool, (size_t)n * sizeof *resp.models)))
        goto oom;
    for (int i = 0; i < n; i++) {
        reap_model_info mi = {0};
        reap_id *calibs = NULL;
        int n_calibs = 0;
        Reap__V1__Model *o = svc_alloc(&pool, sizeof *o);
        if (!o)
            goto oom;
        reap__v1__model__init(o);
        if ((rc = reap_store_model_get(S->store, snap, &ids[i], &mi)) ||
            (rc = reap_store_stats_calibs(S->store, snap, &ids[i], 0, &calibs, &n_calibs))) {
            reap_model_info_free(&mi);
            goto fail;
        }
        o->model_id = svc_hex(&pool, mi.id.b, 32);
        o->model_type = svc_strdup(&pool, mi.model_type);
        o->n_layers = (uint32_t)mi.n_layers;
        o->hidden = (uint32_t)mi.hidden;
        o->n_experts = (uint32_t)mi.n_experts;
        o->top_k = (uint32_t)mi.top_k;
        o->first_seen_path = svc_strdup(&pool, mi.first_seen_path);
        if ((o->moe_layers = svc_alloc(&pool, (size_t)mi.n_moe_layers * sizeof(uint32_t)))) {
            for (int l = 0; l < mi.n_moe_layers; l++)
                o->moe_layers[l] = (uint32_t)mi.moe_layers[l];
            o->n_moe_layers = (size_t)mi.n_moe_layers;
        }
        for (int f = 0; f < mi.n_files; f++)
            o->total_bytes += mi.files[f].size;
        if (n_calibs && (o->calibs = svc_alloc(&pool, (size_t)n_calibs * sizeof *o->calibs)))
            for (int c = 0; c < n_calibs; c++) {
                Reap__V1__CalibSet *cs = svc_alloc(&pool, sizeof *cs);
                reap_calib_info ci = {0};
                int *layers = NULL, n_layers = 0;
                if (!cs)
                    break;
                reap__v1__calib_set__init(cs);
                cs->calib_id = svc_hex(&pool, calibs[c].b, 32);
                if (reap_store_calib_get(S->store, snap, &calibs[c], &ci) == REAP_OK) {
                    cs->source = svc_strdup(&pool, ci.source);
                    cs->samples = ci.n_samples;
                    cs->rows = (uint32_t)ci.n_rows;
                    cs->seq_len = (uint32_t)ci.seq_len;
                    cs->packed = ci.pack;
                    cs->tokens = ci.n_tokens;
                }
                reap_calib_info_free(&ci);
                if (reap_store_stats_layers(S->store, snap, &ids[i], &calibs[c], &layers,
                                            &n_layers) == REAP_OK)
                    cs->layers_scored = (uint32_t)n_layers;
                free(layers);
                o->calibs[o->n_calibs++] = cs;
            }
        free(calibs);
        reap_model_info_free(&mi);
        resp.models[resp.n_models++] = o;
    }
    if (pool.failed)
        goto oom;
    rc = rpc_call_respond(call, &resp.base);
    goto done;
oom:
    rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
fail:
    rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "store: %s", reap_err_msg());
done:
    reap_store_snap_end(snap);
    free(ids);
    svc_pool_free(&pool);
    return rc;
}

static int h_get_stats(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__GetStatsRequest *q = (const void *)req;
    scorer_svc *S = ud;
    reap_store_snap *snap = NULL;
    reap_id model, *calibs = NULL, *used = NULL;
    reap_layer_stats *st = NULL;
    int n_st = 0, n_used = 0, rc;
    svc_pool pool = {0};
    Reap__V1__GetStatsResponse resp = REAP__V1__GET_STATS_RESPONSE__INIT;
    char err[1024], digest[65];
    rpc_code code;

    if ((rc = reap_store_snap_begin(S->store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    if ((code = svc_resolve_model(S->store, snap, "model_id", q->model_id, &model, err,
                                  sizeof err)) ||
        (code = svc_resolve_calibs(S->store, snap, &model, "calib_ids", q->calib_ids,
                                   q->n_calib_ids, &calibs, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if ((rc = reap_store_stats_merged(S->store, snap, &model, calibs, (int)q->n_calib_ids, &st,
                                      &n_st, &used, &n_used))) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
        goto done;
    }
    for (size_t i = 0; i < q->n_layers; i++) {
        int found = 0;
        for (int l = 0; l < n_st; l++)
            found |= st[l].layer == (int)q->layers[i];
        if (!found) {
            rc = rpc_call_error(call, RPC_INVALID_ARGUMENT, "layers[%zu]: layer %u is not a "
                                "MoE layer of the model", i, q->layers[i]);
            goto done;
        }
    }
    if ((rc = reap_stats_digest(st, n_st, digest))) {
        rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "%s", reap_err_msg());
        goto done;
    }
    resp.model_id = svc_hex(&pool, model.b, 32);
    resp.stats_digest = digest;
    resp.tokens = n_st ? (uint64_t)st[0].tokens : 0;
    resp.calib_ids = svc_alloc(&pool, (size_t)n_used * sizeof *resp.calib_ids);
    for (int i = 0; i < n_used && resp.calib_ids; i++)
        resp.calib_ids[resp.n_calib_ids++] = svc_hex(&pool, used[i].b, 32);
    resp.layers = svc_alloc(&pool, (size_t)n_st * sizeof *resp.layers);
    for (int l = 0; l < n_st && resp.layers; l++) {
        const reap_layer_stats *s = &st[l];
        int want = q->n_layers == 0;
        for (size_t i = 0; i < q->n_layers; i++)
            want |= s->layer == (int)q->layers[i];
        if (!want)
            continue;
        size_t E = (size_t)s->n_experts;
        Reap__V1__LayerStats *o = svc_alloc(&pool, sizeof *o);
        if (!o)
            break;
        reap__v1__layer_stats__init(o);
        o->layer = (uint32_t)s->layer;
        o->n_experts = (uint32_t)E;
        o->top_k = (uint32_t)s->top_k;
        o->tokens = (uint64_t)s->tokens;
        o->count = svc_alloc(&pool, E * sizeof *o->count);
        o->sum_gate_norm = svc_alloc(&pool, E * sizeof(double));
        o->sum_norm = svc_alloc(&pool, E * sizeof(double));
        o->sum_gate = svc_alloc(&pool, E * sizeof(double));
        o->max_act = svc_alloc(&pool, E * sizeof(double));
        o->reap = svc_alloc(&pool, E * sizeof(double));
        if (pool.failed)
            break;
        for (size_t e = 0; e < E; e++) {
            o->count[e] = (uint64_t)s->count[e];
            o->sum_gate_norm[e] = s->sum_gate_norm[e];
            o->sum_norm[e] = s->sum_norm[e];
            o->sum_gate[e] = s->sum_gate[e];
            o->max_act[e] = (double)s->max_act[e];
            o->reap[e] = reap_layer_stats_score(s, (int)e, REAP_CRIT_REAP);
        }
        o->n_count = o->n_sum_gate_norm = o->n_sum_norm = o->n_sum_gate = o->n_max_act =
            o->n_reap = E;
        resp.layers[resp.n_layers++] = o;
    }
    rc = pool.failed ? rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory")
                     : rpc_call_respond(call, &resp.base);
done:
    reap_store_snap_end(snap);
    for (int i = 0; i < n_st; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    free(calibs);
    free(used);
    svc_pool_free(&pool);
    return rc;
}

/* ---- the server ---------------------------------------------------------------------- */

static void on_shutdown(void *ud)
{
    scorer_svc *S = ud;
    int running = 0, queued = 0;
    reap_rm_counts(S->rm, &running, &queued);
    reap_rm_stop(S->rm);
    /* Logged once the runs have been told (tests wait for this line). */
    svc_log(PROG, "shutting down: %d run(s) stop after their current layer, %d queued "
            "dropped", running, queued);
}

/* Point the listen options at service-specific variables (both services may share one
 * environment / .env file). */
static void rename_listen_env(cli_opt *opts, int n, const char *listen_env,
                              const char *health_env, const char *def)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(opts[i].flag, "listen")) {
            opts[i].env = listen_env;
            opts[i].def = def;
        } else if (!strcmp(opts[i].flag, "health-listen")) {
            opts[i].env = health_env;
        }
    }
}

int scorer_cmd_serve(int argc, char **argv)
{
    scorer_svc S;
    rpc_server_opts so;
    const char *store_dir = NULL, *env_file = NULL, *backend = NULL, *precision = NULL;
    const char *gate_path = NULL;
    scorer_layer_gate gate;
    cli_list model_roots = {0}, calib_roots = {0};
    long threads = 0, ckpt_every = 0, max_runs = 0, max_queued = 0, resume = 1;
    scorer_backend_cli bcli;
    reap_backend_opts bopts = {0};
    cli_opt opts[RPC_SERVER_CLI_N + SCORER_BACKEND_CLI_N + 20];
    char err[1024];
    int n, help = 0, rc, ex = 1;
    reap_store_opts sto = {.create = 1};

    memset(&S, 0, sizeof S);
    scorer_layer_gate_init(&gate, NULL);
    memset(&so, 0, sizeof so);
    n = rpc_server_cli_options(&so, opts, RPC_SERVER_CLI_N);
    rename_listen_env(opts, n, "REAP_SCORER_LISTEN", "REAP_SCORER_HEALTH_LISTEN",
                      "127.0.0.1:50051");
    const cli_opt mine[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory (created if "
         "absent)", &store_dir, 1},
        {"model-root", "REAP_MODEL_PATH", CLI_LIST, NULL, "directory under which clients' "
         "model paths must lie", &model_roots, 1},
        {"calib-root", "REAP_CALIBRATION_PATH", CLI_LIST, NULL, "directory under which "
         "calibration files must lie", &calib_roots, 1},
        {"backend", "REAP_BACKEND", CLI_STR, "auto", "default backend: cpu, cuda or auto "
         "(CUDA when a device is present)", &backend, 0},
        {"precision", "REAP_PRECISION", CLI_STR, "fp32", "CUDA math: fp32 or bf16",
         &precision, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads per run (0: all cores)",
         &threads, 0},
        {"seq-len", "REAP_SEQ_LEN", CLI_INT, "2048", "default positions per row",
         &S.seq_len, 0},
        {"max-samples", "REAP_MAX_SAMPLES", CLI_INT, "300", "samples used by requests "
         "that do not give max_samples (0: all)", &S.max_samples, 0},
        {"batch-size", "REAP_BATCH_SIZE", CLI_INT, "0", "default rows per micro-batch (0: "
         "the backend chooses: 8 on CPU, the memory plan on CUDA)", &S.batch, 0},
        {"checkpoint-every", "REAP_CHECKPOINT_EVERY", CLI_INT, "4", "hidden-state "
         "checkpoint every N layers (0: none)", &ckpt_every, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "hidden-state "
         "checkpoints skip the free-space check (file systems that misreport free space)",
         &sto.no_space_check, 0},
        {"max-runs", "REAP_MAX_RUNS", CLI_INT, "1", "scoring runs at once", &max_runs, 0},
        {"max-queued-runs", "REAP_MAX_QUEUED_RUNS", CLI_INT, "4", "runs waiting for a "
         "worker before RESOURCE_EXHAUSTED (0: none)", &max_queued, 0},
        {"resume", "REAP_RESUME", CLI_INT, "1", "on start, submit again the runs a "
         "shutdown or crash of this host's scorer interrupted (0: leave them)", &resume, 0},
        {"layer-gate", NULL, CLI_STR, "", "for tests: a FIFO; before each "
         "layer a run reads one byte from it (closing the writer opens it for good)",
         &gate_path, 0},
        {"env-file", "REAP_ENV_FILE", CLI_ENVFILE, ".env", "read KEY=VALUE settings from "
         "this file (missing default: ignored)", &env_file, 0},
    };
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        opts[n++] = mine[i];
    n += scorer_backend_cli_options(&bcli, opts + n, SCORER_BACKEND_CLI_N);
    const char *usage = "usage: reap-scorer serve --store DIR --model-root DIR "
                        "--calib-root DIR [options]\n\nServe reap.v1.Scorer and "
                        "grpc.health.v1 (flag > environment > .env file > default)";
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        cli_free(opts, n);
        return 2;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n);
        cli_free(opts, n);
        return 0;
    }
    if (S.seq_len < 1 || S.seq_len > (1 << 20) || S.max_samples < 0 || S.batch < 0 ||
        threads < 0 || ckpt_every < 0 || max_runs < 1 || max_queued < 0 ||
        (resume != 0 && resume != 1)) {
        fprintf(stderr, "%s: --seq-len (1..1048576) and --max-runs must be positive; "
                "--batch-size, --max-samples, --threads, --checkpoint-every, "
                "--max-queued-runs >= 0; --resume 0 or 1\n", PROG);
        goto usage_fail;
    }
    if (!(S.backend = scorer_pick_backend(backend))) {
        fprintf(stderr, "%s: --backend '%s' is %s\n", PROG, backend,
                strcmp(backend, "cuda") ? "unknown (cpu, cuda or auto)"
                                        : "not available in this build");
        goto usage_fail;
    }
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16")) {
        fprintf(stderr, "%s: --precision must be fp32 or bf16\n", PROG);
        goto usage_fail;
    }
    if (scorer_backend_cli_apply(&bcli, &bopts, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        goto usage_fail;
    }
    bopts.threads = (int)threads;
    bopts.batch_rows = (int)S.batch;
    bopts.precision = strcmp(precision, "bf16") ? REAP_PRECISION_FP32 : REAP_PRECISION_BF16;
    if (svc_roots(&S.model_roots, "--model-root", &model_roots, err, sizeof err) ||
        svc_roots(&S.calib_roots, "--calib-root", &calib_roots, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        goto usage_fail;
    }
    gethostname(S.host, sizeof S.host - 1);
    if ((rc = reap_store_open(store_dir, &sto, &S.store))) {
        fprintf(stderr, "%s: --store: %s\n", PROG, reap_err_msg());
        goto fail;
    }
    /* Requests of runs not started yet, kept across a restart (--resume). */
    char pending[4200];
    snprintf(pending, sizeof pending, "%s/pending", reap_store_dir(S.store));
    if (resume && mkdir(pending, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s: %s\n", PROG, pending, strerror(errno));
        goto fail;
    }
    S.model_fs = (reap_roots){(const char *const *)S.model_roots.dirs, S.model_roots.n};
    S.calib_fs = (reap_roots){(const char *const *)S.calib_roots.dirs, S.calib_roots.n};
    scorer_layer_gate_init(&gate, gate_path);
    reap_rm_opts ro = {
        .store = S.store,
        .model_roots = &S.model_fs,
        .calib_roots = &S.calib_fs,
        .layer_gate = gate_path && *gate_path ? scorer_layer_gate_wait : NULL,
        .layer_gate_ud = &gate,
        .pending_dir = resume ? pending : NULL,
        .max_running = (int)max_runs,
        .max_queued = max_queued ? (int)max_queued : -1,
        .checkpoint_every = (int)ckpt_every,
        .hash_threads = (int)threads,
        .backend_opts = bopts,
    };
    if ((rc = reap_rm_create(&ro, &S.rm))) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        goto fail;
    }
    so.on_shutdown = on_shutdown;
    so.on_shutdown_ud = &S;
    if ((rc = rpc_server_create(&so, &S.srv))) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        goto fail;
    }
#define M(name, kind, rq, rs, fn)                                                         \
    {"/reap.v1.Scorer/" name, kind, &reap__v1__##rq##__descriptor,                        \
     &reap__v1__##rs##__descriptor, fn, &S, 0}
    const rpc_method methods[] = {
        M("Score", RPC_SERVER_STREAM, score_request, score_event, h_score),
        M("WatchRun", RPC_SERVER_STREAM, watch_run_request, score_event, h_watch),
        M("GetRun", RPC_UNARY, get_run_request, run, h_get_run),
        M("ListRuns", RPC_UNARY, list_runs_request, list_runs_response, h_list_runs),
        M("CancelRun", RPC_UNARY, cancel_run_request, run, h_cancel),
        M("ListModels", RPC_UNARY, list_models_request, list_models_response, h_list_models),
        M("GetStats", RPC_UNARY, get_stats_request, get_stats_response, h_get_stats),
    };
#undef M
    svc_log_auth(PROG, S.srv);   /* before the "port" line that clients and tests wait for */
    if ((rc = svc_start(S.srv, "reap.v1.Scorer", methods, sizeof methods / sizeof methods[0])))
        goto fail_msg;
    svc_log(PROG, "serving reap.v1.Scorer on port %d (store %s, backend %s, %ld run(s) at "
            "once, %ld queued)%s", rpc_server_port(S.srv), store_dir, S.backend->name,
            max_runs, max_queued, so.tls_cert ? ", TLS" : "");
    if (resume)
        scorer_resume_interrupted(S.store, S.rm, pending, &S.model_roots, &S.calib_roots,
                                  S.backend, PROG);
    if ((rc = rpc_server_run(S.srv))) {
        /* Calls still referenced: wait for the runs, but leave the server allocated. */
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        reap_rm_free(S.rm);
        S.rm = NULL;
        S.srv = NULL;
        goto fail;
    }
    /* Every call has ended; let the running jobs commit their layer and end. */
    reap_rm_free(S.rm);
    S.rm = NULL;
    rpc_server_free(S.srv);
    S.srv = NULL;
    svc_log(PROG, "shut down cleanly");
    ex = 0;
    goto out;
fail_msg:
    fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
fail:
    ex = 1;
    goto out;
usage_fail:
    ex = 2;
out:
    reap_rm_free(S.rm);
    scorer_layer_gate_free(&gate);
    rpc_server_free(S.srv);
    reap_store_close(S.store);
    rpc_roots_free(&S.model_roots);
    rpc_roots_free(&S.calib_roots);
    cli_free(opts, n);
    return ex;
}

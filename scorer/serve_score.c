/* serve_score.c - Score and WatchRun of `reap-scorer serve` (scorer_serve_impl.h): a call is a
 * watcher of its run in the run manager (run_manager.h), which delivers the run's events
 * (queued, accepted, tokenized, each layer, finished or error) as ScoreEvents. The run
 * goes on when the call ends (client gone, deadline): a cancelled call only detaches its
 * watcher. WatchRun of a run this server does not hold answers from the store record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "scorer_cmds.h"
#include "scorer_serve_impl.h"
#include "svc.h"


static rpc_code final_code(const reap_rm_info *in)
{
    if (in->state == REAP_RM_DONE)
        return RPC_OK;
    if (in->stop == REAP_RM_STOP_SHUTDOWN)
        return RPC_UNAVAILABLE;
    if (in->stop == REAP_RM_STOP_CANCEL)
        return RPC_CANCELLED;
    return scorer_code(in->status);
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
        tok.images = (uint32_t)in->n_images;
        tok.image_tokens = (uint64_t)in->n_image_tokens;
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

int scorer_serve_score(rpc_call *call, const ProtobufCMessage *req, void *ud)
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
        rc = rpc_call_error(call, scorer_code(rc), "model_path: %s",
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
        rc = rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
        goto done;
    }
    rpc_call_on_cancel(call, watch_cancelled, S);
    svc_log(SCORER_PROG, "Score %s %s from %s: queued", model, calib, rpc_call_peer(call));
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
    int rc = reap_store_run_get(S->d.store, NULL, run_id, &r);
    if (rc)
        return rpc_call_error(call, scorer_code(rc), "run_id: %s",
                              reap_err_msg());
    int st = scorer_run_state(S, &r);
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

int scorer_serve_watch(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__WatchRunRequest *q = (const void *)req;
    scorer_svc *S = ud;
    uint8_t id[16];
    int rc = scorer_call_run(call, S, q->run_id, id);
    if (rc)
        return rc;
    rpc_call_ref(call);
    rc = reap_rm_watch(S->rm, id, watch_send, watch_release, call);
    if (rc == REAP_E_NOTFOUND) {
        rpc_call_unref(call);
        return watch_from_store(call, S, id);
    }
    if (rc) {
        rpc_call_unref(call);
        return rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
    }
    rpc_call_on_cancel(call, watch_cancelled, S);
    return 0;
}

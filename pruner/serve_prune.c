/* serve_prune.c - Prune of `reap-pruner serve` (pruner_serve_impl.h): the request checked
 * (paths confined to the roots, one prune per output path, --max-prunes at once), the
 * model identified (file digests cached in the store) and its statistics read, then one
 * reap_prune streaming its progress as PruneEvents. Statistics always come from the
 * store for the model's own identity, so the service never prunes by another
 * checkpoint's statistics. A prune stops when the client goes away or the server shuts
 * down: its temporary output is removed, nothing is written.
 */
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog.h"
#include "identity.h"
#include "known_inputs.h"
#include "prune.h"
#include "pruner_serve_impl.h"
#include "reap_err.h"
#include "rpc_status.h"
#include "svc.h"

typedef struct prune_job {
    pruner_svc *S;
    rpc_call *call;
    double t0;
    uint64_t last_done;
    double last_sent;
} prune_job;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Rewrite progress -> PruneProgress (coalesced: latest wins). Non-zero stops the prune
 * when the client has gone or the server is shutting down. */
static int prune_progress(void *ud, uint64_t done, uint64_t total)
{
    prune_job *j = ud;
    if (rpc_call_cancelled(j->call) || rpc_server_draining(j->S->d.srv))
        return 1;
    double now = mono_s();
    if (done < total && now - j->last_sent < 0.1)
        return 0;
    Reap__V1__PruneEvent ev = REAP__V1__PRUNE_EVENT__INIT;
    Reap__V1__PruneProgress pp = REAP__V1__PRUNE_PROGRESS__INIT;
    double el = now - j->t0;
    pp.bytes_done = done;
    pp.bytes_total = total;
    pp.eta_s = done > 0 && total > done ? el / (double)done * (double)(total - done) : 0;
    ev.event_case = REAP__V1__PRUNE_EVENT__EVENT_PROGRESS;
    ev.progress = &pp;
    j->last_sent = now;
    return rpc_stream_send(j->call, &ev.base, RPC_SEND_PROGRESS) == REAP_E_CANCELLED;
}

/* Reserve an output path (one prune per path) within the concurrency limit. */
static rpc_code reserve_output(pruner_svc *S, const char *path, char *err, size_t errlen)
{
    rpc_code code = RPC_OK;
    pthread_mutex_lock(&S->mu);
    for (int i = 0; i < S->n_active && !code; i++)
        if (!strcmp(S->active[i], path)) {
            snprintf(err, errlen, "output_path: %s is being written by another prune", path);
            code = RPC_ALREADY_EXISTS;
        }
    if (!code && S->n_active >= S->max_prunes) {
        snprintf(err, errlen, "%d prune(s) running (limit %ld); try again later",
                 S->n_active, S->max_prunes);
        code = RPC_RESOURCE_EXHAUSTED;
    }
    if (!code) {
        char **v = realloc(S->active, (size_t)(S->n_active + 1) * sizeof *v);
        char *p = strdup(path);
        if (v)
            S->active = v;
        if (!v || !p) {
            free(p);
            snprintf(err, errlen, "out of memory");
            code = RPC_RESOURCE_EXHAUSTED;
        } else {
            S->active[S->n_active++] = p;
        }
    }
    pthread_mutex_unlock(&S->mu);
    return code;
}

static void release_output(pruner_svc *S, const char *path)
{
    pthread_mutex_lock(&S->mu);
    for (int i = 0; i < S->n_active; i++)
        if (!strcmp(S->active[i], path)) {
            free(S->active[i]);
            S->active[i] = S->active[--S->n_active];
            break;
        }
    pthread_mutex_unlock(&S->mu);
}

/* End a Prune stream with an error event and the same status. */
static int prune_fail(rpc_call *call, rpc_code code, const char *msg)
{
    Reap__V1__PruneEvent ev = REAP__V1__PRUNE_EVENT__INIT;
    Reap__V1__RunError er = REAP__V1__RUN_ERROR__INIT;
    er.code = (int32_t)code;
    er.message = (char *)msg;
    ev.event_case = REAP__V1__PRUNE_EVENT__EVENT_ERROR;
    ev.error = &er;
    rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
    rpc_stream_finish(call, code, "%s", msg);
    return 0;
}

void pruner_log_leftover(void *ud, const char *path, uint64_t bytes, reap_leftover_action a)
{
    char line[PATH_MAX + 256];
    (void)ud;
    svc_log(PRUNER_PROG, "%s", reap_leftover_describe(path, bytes, a, line, sizeof line));
}

int pruner_serve_prune(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__PruneRequest *q = (const void *)req;
    pruner_svc *S = ud;
    char err[1024], mh[65], job[17];
    char *model = NULL, *out = NULL, **calib_hex = NULL;
    reap_keep_opts ko;
    reap_model_info mi = {0};
    reap_known_file *known = NULL;
    reap_layer_stats *st = NULL;
    reap_id *used = NULL;
    int n_st = 0, n_used = 0, n_prune = 0, rc = 0, reserved = 0;
    reap_prune_result res;
    rpc_code code;
    struct stat sb;
    uint8_t jb[8];
    memset(&res, 0, sizeof res);

    if (!*q->model_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "model_path: required");
    if (!*q->output_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "output_path: required");
    if ((code = pruner_parse_params(S, q->params, &ko, err, sizeof err)) ||
        (code = rpc_path_confine(&S->model_roots, "model_path", q->model_path,
                                 RPC_PATH_EXISTING | RPC_PATH_DIR, &model, err, sizeof err)) ||
        (code = rpc_path_confine(&S->output_roots, "output_path", q->output_path,
                                 RPC_PATH_NEW | RPC_PATH_DIR, &out, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if (stat(out, &sb) == 0 && !q->overwrite) {
        rc = rpc_call_error(call, RPC_ALREADY_EXISTS, "output_path: %s exists (set "
                            "overwrite to replace it: an earlier reap output or an empty "
                            "directory)", out);
        goto done;
    }
    /* overwrite replaces only a reap output or an empty directory (reap_prune checks
     * again before it moves anything): refused here before anything is accepted */
    if (q->overwrite && (rc = reap_outdir_check_replaceable(out, out))) {
        rc = rpc_call_error(call, rpc_code_from_reap(rc), "output_path: %s",
                            reap_err_msg());
        goto done;
    }
    if ((code = reserve_output(S, out, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    reserved = 1;
    /* The model's identity (file digests cached in the store) and its statistics. */
    if ((rc = reap_model_identify_confined(S->d.store, model, &S->model_fs, (int)S->threads, &mi,
                                           NULL))) {
        rc = rpc_call_error(call, rpc_code_from_reap(rc), "model_path: %s",
                            reap_err_msg());
        goto done;
    }
    reap_id_hex(&mi.id, mh);
    if ((code = pruner_load_stats(S, &mi.id, q->params->calib_ids, q->params->n_calib_ids,
                                  &st, &n_st, &used, &n_used, err, sizeof err))) {
        rc = rpc_call_error(call, code, "model_path: model %.16s: %s", mh, err);
        goto done;
    }
    if ((code = pruner_check_n_prune(&ko, st, n_st, &n_prune, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if (!(calib_hex = calloc((size_t)n_used + 1, sizeof *calib_hex))) {
        rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_used; i++)
        if ((calib_hex[i] = malloc(65)))
            reap_id_hex(&used[i], calib_hex[i]);
        else {
            rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
            goto done;
        }

    /* accepted: what will be written. */
    Reap__V1__PruneEvent ev = REAP__V1__PRUNE_EVENT__INIT;
    Reap__V1__PruneAccepted acc = REAP__V1__PRUNE_ACCEPTED__INIT;
    randombytes_buf(jb, sizeof jb);
    for (int i = 0; i < 8; i++)
        snprintf(job + 2 * i, 3, "%02x", jb[i]);
    int E = n_st ? st[0].n_experts : 0;
    acc.job_id = job;
    acc.model_id = mh;
    acc.output_path = out;
    acc.n_experts = (uint32_t)E;
    acc.n_keep = (uint32_t)(E - n_prune > 0 ? E - n_prune : 0);
    acc.files_total = (uint32_t)mi.n_files;
    for (int f = 0; f < mi.n_files; f++)
        acc.bytes_total += mi.files[f].size;
    ev.event_case = REAP__V1__PRUNE_EVENT__EVENT_ACCEPTED;
    ev.accepted = &acc;
    rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
    svc_log(PRUNER_PROG, "Prune %s -> %s (job %s) from %s", model, out, job,
            rpc_call_peer(call));

    prune_job pj = {.S = S, .call = call, .t0 = mono_s()};
    reap_prune_opts po = {
        .model_dir = model,
        .model_roots = &S->model_fs,
        .out_dir = out,
        .stats = st,
        .n_stats = n_st,
        .keep = ko,
        .model_id = mh,
        .calib_ids = (const char *const *)calib_hex,
        .n_calib = n_used,
        .key = S->have_key ? &S->key : NULL,
        .force = q->overwrite,
        .verify = 1,
        .progress = prune_progress,
        .ud = &pj,
        .leftover = pruner_log_leftover,
    };
    po.probe.backend_opts.threads = (int)S->threads;
    po.no_space_check = S->no_space_check;
    /* The manifest's input digests are the identity's (just checked against the files'
     * device, inode, size, mtime and ctime): the input is not read a second time. */
    if ((known = reap_known_inputs(&mi))) {
        po.input_files = known;
        po.n_input_files = mi.n_files;
    }
    if ((rc = reap_prune(&po, &res))) {
        code = rc == REAP_E_CANCELLED && rpc_server_draining(S->d.srv) ? RPC_UNAVAILABLE
                                                                        : rpc_code_from_reap(rc);
        snprintf(err, sizeof err, "%s%s", rc == REAP_E_CANCELLED ? "prune stopped, nothing "
                 "written: " : "", reap_err_msg());
        svc_log(PRUNER_PROG, "Prune job %s: %s", job, err);
        /* The slot is free before the client hears the end: its next Prune must not
         * find this one still counted. */
        release_output(S, out);
        reserved = 0;
        rc = prune_fail(call, code, err);
        goto done;
    }
    release_output(S, out);   /* as above: free before the final event */
    reserved = 0;
    Reap__V1__PruneFinished fin = REAP__V1__PRUNE_FINISHED__INIT;
    fin.output_path = out;
    fin.manifest_digest = res.manifest_digest;
    fin.is_signed = S->have_key;
    fin.bytes_written = res.rewrite.bytes_out;
    fin.seconds = mono_s() - pj.t0;
    ev.event_case = REAP__V1__PRUNE_EVENT__EVENT_FINISHED;
    ev.finished = &fin;
    rpc_stream_send(call, &ev.base, RPC_SEND_RELIABLE);
    rpc_stream_finish(call, RPC_OK, NULL);
    svc_log(PRUNER_PROG, "Prune job %s: done, %d -> %d experts, %.2f s", job, res.ks.n_experts,
            res.ks.n_keep, fin.seconds);
    rc = 0;
done:
    if (reserved)
        release_output(S, out);
    reap_prune_result_free(&res);
    if (calib_hex)
        for (int i = 0; i < n_used; i++)
            free(calib_hex[i]);
    free(calib_hex);
    pruner_free_stats(st, n_st);
    free(used);
    free(known);
    reap_model_info_free(&mi);
    free(model);
    free(out);
    return rc;
}

/* serve.c - `reap-pruner serve`: the reap.v1.Pruner gRPC service (proto/reap.proto) over
 * the score store, plus grpc.health.v1.
 *
 * Transport only: each handler checks and converts the request (model paths confined to
 * --model-root, outputs to --output-root, identities resolved from prefixes), reads the
 * statistics from the store (one read snapshot) and calls one pruner function:
 *   ComputeKeepSet  reap_keepset_compute                    (writes nothing)
 *   Prune           reap_prune, streaming rewrite progress  (cancelled when the client
 *                   goes away or the server shuts down: the temporary output is removed)
 *                   Statistics always come from the store for the model's own identity,
 *                   so the service never prunes by another checkpoint's statistics.
 *   Verify          reap_manifest_verify_dir (+ the manifest's own fields)
 * At start-up the leftovers of killed prunes in each output root are swept (outdir.h).
 * The signing key comes from --key (or REAP_SIGNING_KEY, e.g. a mounted secret file); its
 * public half (or --pubkey) is the default key of Verify.
 */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog.h"
#include "cli.h"
#include "health.pb-c.h"
#include "identity.h"
#include "keepset.h"
#include "manifest.h"
#include "minisign.h"
#include "outdir.h"
#include "prune.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "rpc_path.h"
#include "rpc_server.h"
#include "serve_cmd.h"
#include "serve_util.h"
#include "stats_store.h"
#include "store.h"

#define PROG "reap-pruner serve"

typedef struct pruner_svc {
    rpc_server *srv;
    reap_store *store;
    rpc_roots model_roots, output_roots, verify_roots;
    reap_roots model_fs, verify_fs;  /* the same directories, for the library's reads */
    reap_sign_key key;
    int have_key;
    reap_pub_key pub;
    int have_pub;
    const char *ratio_default;       /* text, may be NULL */
    reap_criterion criterion_default;
    long threads, max_prunes;
    int no_space_check;              /* --no-space-check */
    pthread_mutex_t mu;              /* guards active[] */
    char **active;                   /* output paths being written */
    int n_active;
} pruner_svc;

/* ---- requests ---------------------------------------------------------------------- */

/* PruneParams -> keep options. ratio / n_prune count as given when non-zero or when
 * their *_set flag is (so an explicit 0 prunes nothing); neither given: the server's
 * default ratio. Malformed (both given, ratio outside [0, 1) or NaN, no default):
 * INVALID_ARGUMENT. n_prune against the model's experts is checked once the statistics
 * are known (check_n_prune). */
static rpc_code parse_params(const pruner_svc *S, const Reap__V1__PruneParams *p,
                             reap_keep_opts *ko, char *err, size_t errlen)
{
    static const reap_criterion crit[] = {
        REAP_CRIT_REAP, REAP_CRIT_REAP, REAP_CRIT_FREQUENCY, REAP_CRIT_EAN_SUM,
        REAP_CRIT_EAN_MEAN, REAP_CRIT_WEIGHTED_EAN_SUM, REAP_CRIT_WEIGHTED_FREQUENCY,
        REAP_CRIT_MAX_ACTIVATIONS};
    memset(ko, 0, sizeof *ko);
    if (!p) {
        snprintf(err, errlen, "params: required (ratio or n_prune)");
        return RPC_INVALID_ARGUMENT;
    }
    if ((int)p->criterion < 0 || (size_t)p->criterion >= sizeof crit / sizeof crit[0]) {
        snprintf(err, errlen, "params.criterion: unknown value %d", (int)p->criterion);
        return RPC_INVALID_ARGUMENT;
    }
    ko->criterion = p->criterion ? crit[p->criterion] : S->criterion_default;
    ko->protect_super_experts = p->protect_super_experts;
    int have_ratio = p->ratio_set || p->ratio != 0, have_n = p->n_prune_set || p->n_prune != 0;
    if (have_ratio && have_n) {
        snprintf(err, errlen, "params: give ratio or n_prune, not both (ratio %g, n_prune %u)",
                 p->ratio, p->n_prune);
        return RPC_INVALID_ARGUMENT;
    }
    if (have_n) {
        ko->n_prune = p->n_prune;   /* the value sent: refusals name it as it came */
        ko->ratio = -1;
        return RPC_OK;
    }
    ko->n_prune = -1;
    if (!have_ratio) {
        if (!S->ratio_default) {
            snprintf(err, errlen, "params: give ratio (in [0, 1)) or n_prune (this server "
                     "has no default ratio, --ratio / REAP_PRUNE_RATIO)");
            return RPC_INVALID_ARGUMENT;
        }
        ko->ratio = strtod(S->ratio_default, NULL);
        return RPC_OK;
    }
    ko->ratio = p->ratio;
    if (reap_keep_opts_check(ko)) {
        snprintf(err, errlen, "params.%s", reap_err_msg());
        return RPC_INVALID_ARGUMENT;
    }
    return RPC_OK;
}

/* Experts removed per layer of this model (keepset.h: reap_keep_n_prune, the one rule):
 * a well-formed request the model does not allow (the client may not know E: n_prune
 * not below E, fewer than top_k left) is FAILED_PRECONDITION. Returns RPC_OK with
 * *n_prune set, or that code with err set. */
static rpc_code check_n_prune(const reap_keep_opts *ko, const reap_layer_stats *st, int n_st,
                              int *n_prune, char *err, size_t errlen)
{
    int rc;
    *n_prune = 0;
    if (!n_st)
        return RPC_OK;   /* no statistics: reported by the keep set */
    if ((rc = reap_keep_n_prune(ko, st[0].n_experts, st[0].top_k, n_prune))) {
        snprintf(err, errlen, "params: %s", reap_err_msg());
        return rc == REAP_E_INVALID ? RPC_INVALID_ARGUMENT : RPC_FAILED_PRECONDITION;
    }
    return RPC_OK;
}

/* The merged statistics of a model over the chosen calibration sets (all complete ones
 * when none is given), read from one snapshot. *used gets the ids merged. */
static rpc_code load_stats(pruner_svc *S, const reap_id *model, char *const *calib_texts,
                           size_t n_calib, reap_layer_stats **st, int *n_st, reap_id **used,
                           int *n_used, char *err, size_t errlen)
{
    reap_store_snap *snap = NULL;
    reap_id *calibs = NULL;
    rpc_code code;
    int rc;
    if ((rc = reap_store_snap_begin(S->store, &snap))) {
        snprintf(err, errlen, "store: %s", reap_err_msg());
        return RPC_INTERNAL;
    }
    code = svc_resolve_calibs(S->store, snap, model, "params.calib_ids", calib_texts, n_calib,
                              &calibs, err, errlen);
    if (!code && (rc = reap_store_stats_merged(S->store, snap, model, calibs, (int)n_calib, st,
                                               n_st, used, n_used))) {
        code = svc_code(rc, reap_err_msg());
        snprintf(err, errlen, "%s", reap_err_msg());
    }
    reap_store_snap_end(snap);
    free(calibs);
    return code;
}

static void free_stats(reap_layer_stats *st, int n)
{
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
}

static Reap__V1__Criterion criterion_enum(reap_criterion c)
{
    switch (c) {
    case REAP_CRIT_FREQUENCY: return REAP__V1__CRITERION__CRITERION_FREQUENCY;
    case REAP_CRIT_EAN_SUM: return REAP__V1__CRITERION__CRITERION_EAN_SUM;
    case REAP_CRIT_EAN_MEAN: return REAP__V1__CRITERION__CRITERION_EAN_MEAN;
    case REAP_CRIT_WEIGHTED_EAN_SUM: return REAP__V1__CRITERION__CRITERION_WEIGHTED_EAN_SUM;
    case REAP_CRIT_WEIGHTED_FREQUENCY:
        return REAP__V1__CRITERION__CRITERION_WEIGHTED_FREQUENCY;
    case REAP_CRIT_MAX_ACTIVATIONS: return REAP__V1__CRITERION__CRITERION_MAX_ACTIVATIONS;
    default: return REAP__V1__CRITERION__CRITERION_REAP;
    }
}

/* ---- ComputeKeepSet ------------------------------------------------------------------ */

static int h_keepset(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__KeepSetRequest *q = (const void *)req;
    pruner_svc *S = ud;
    reap_keep_opts ko;
    reap_keepset ks = {0};
    reap_layer_stats *st = NULL;
    reap_id model, *used = NULL;
    int n_st = 0, n_used = 0, n_prune = 0, rc;
    char err[1024], digest[65];
    svc_pool pool = {0};
    rpc_code code;
    Reap__V1__KeepSetResponse resp = REAP__V1__KEEP_SET_RESPONSE__INIT;

    if ((code = parse_params(S, q->params, &ko, err, sizeof err)) ||
        (code = svc_resolve_model(S->store, NULL, "model_id", q->model_id, &model, err,
                                  sizeof err)) ||
        (code = load_stats(S, &model, q->params->calib_ids, q->params->n_calib_ids, &st, &n_st,
                           &used, &n_used, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    if ((code = check_n_prune(&ko, st, n_st, &n_prune, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if ((rc = reap_keepset_compute(NULL, st, n_st, &ko, &ks)) ||
        (rc = reap_stats_digest(st, n_st, digest))) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
        goto done;
    }
    resp.model_id = svc_hex(&pool, model.b, 32);
    resp.calib_ids = svc_alloc(&pool, (size_t)n_used * sizeof *resp.calib_ids);
    for (int i = 0; i < n_used && resp.calib_ids; i++)
        resp.calib_ids[resp.n_calib_ids++] = svc_hex(&pool, used[i].b, 32);
    resp.criterion = criterion_enum(ks.criterion);
    resp.ratio = ks.ratio >= 0 ? ks.ratio : 0;
    resp.n_experts = (uint32_t)ks.n_experts;
    resp.n_keep = (uint32_t)ks.n_keep;
    resp.stats_digest = digest;
    resp.layers = svc_alloc(&pool, (size_t)ks.n_layers * sizeof *resp.layers);
    for (int l = 0; l < ks.n_layers && resp.layers; l++) {
        const reap_keep_layer *kl = &ks.layers[l];
        Reap__V1__LayerKeepSet *o = svc_alloc(&pool, sizeof *o);
        size_t E = (size_t)ks.n_experts;
        if (!o)
            break;
        reap__v1__layer_keep_set__init(o);
        o->layer = (uint32_t)kl->layer;
        o->keep = svc_alloc(&pool, E * sizeof *o->keep);
        o->pruned = svc_alloc(&pool, E * sizeof *o->pruned);
        o->scores = svc_alloc(&pool, E * sizeof *o->scores);
        if (pool.failed)
            break;
        for (size_t e = 0, k = 0; e < E; e++) {
            if (k < (size_t)ks.n_keep && kl->keep[k] == (int)e) {
                o->keep[o->n_keep++] = (uint32_t)e;
                k++;
            } else {
                o->pruned[o->n_pruned++] = (uint32_t)e;
            }
            o->scores[e] = kl->scores[e];
        }
        o->n_scores = E;
        resp.layers[resp.n_layers++] = o;
    }
    rc = pool.failed ? rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory")
                     : rpc_call_respond(call, &resp.base);
done:
    reap_keepset_free(&ks);
    free_stats(st, n_st);
    free(used);
    svc_pool_free(&pool);
    return rc;
}

/* ---- Prune --------------------------------------------------------------------------- */

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
    if (rpc_call_cancelled(j->call) || rpc_server_draining(j->S->srv))
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

/* Leftovers of killed prunes (outdir.h), in the log. */
static void log_leftover(void *ud, const char *path, uint64_t bytes, reap_leftover_action a)
{
    char line[PATH_MAX + 256];
    (void)ud;
    svc_log(PROG, "%s", reap_leftover_describe(path, bytes, a, line, sizeof line));
}

static int h_prune(rpc_call *call, const ProtobufCMessage *req, void *ud)
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
    if ((code = parse_params(S, q->params, &ko, err, sizeof err)) ||
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
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "output_path: %s",
                            reap_err_msg());
        goto done;
    }
    if ((code = reserve_output(S, out, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    reserved = 1;
    /* The model's identity (file digests cached in the store) and its statistics. */
    if ((rc = reap_model_identify_confined(S->store, model, &S->model_fs, (int)S->threads, &mi,
                                           NULL))) {
        rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "model_path: %s",
                            reap_err_msg());
        goto done;
    }
    reap_id_hex(&mi.id, mh);
    if ((code = load_stats(S, &mi.id, q->params->calib_ids, q->params->n_calib_ids, &st, &n_st,
                           &used, &n_used, err, sizeof err))) {
        rc = rpc_call_error(call, code, "model_path: model %.16s: %s", mh, err);
        goto done;
    }
    if ((code = check_n_prune(&ko, st, n_st, &n_prune, err, sizeof err))) {
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
    svc_log(PROG, "Prune %s -> %s (job %s) from %s", model, out, job, rpc_call_peer(call));

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
        .leftover = log_leftover,
    };
    po.probe.backend_opts.threads = (int)S->threads;
    po.no_space_check = S->no_space_check;
    /* The manifest's input digests are the identity's (just checked against the files'
     * device, inode, size, mtime and ctime): the input is not read a second time. */
    if ((known = svc_known_inputs(&mi))) {
        po.input_files = known;
        po.n_input_files = mi.n_files;
    }
    if ((rc = reap_prune(&po, &res))) {
        code = rc == REAP_E_CANCELLED && rpc_server_draining(S->srv) ? RPC_UNAVAILABLE
                                                                      : svc_code(rc, reap_err_msg());
        snprintf(err, sizeof err, "%s%s", rc == REAP_E_CANCELLED ? "prune stopped, nothing "
                 "written: " : "", reap_err_msg());
        svc_log(PROG, "Prune job %s: %s", job, err);
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
    svc_log(PROG, "Prune job %s: done, %d -> %d experts, %.2f s", job, res.ks.n_experts,
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
    free_stats(st, n_st);
    free(used);
    free(known);
    reap_model_info_free(&mi);
    free(model);
    free(out);
    return rc;
}

/* ---- Verify -------------------------------------------------------------------------- */

/* A public key sent by a client: the base64 line (or a whole .pub file's text), never a
 * path (the server does not open files a client names outside its roots). */
static rpc_code parse_pubkey(const char *text, reap_pub_key *pk, char *err, size_t errlen)
{
    const char *line = text, *p;
    uint8_t bin[64];
    size_t len, n = 0;
    for (p = text; *p; p++)   /* the last non-empty line */
        if (*p == '\n' && p[1] && p[1] != '\n')
            line = p + 1;
    len = strcspn(line, "\r\n");
    if (sodium_init() < 0 ||
        sodium_base642bin(bin, sizeof bin, line, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) || n != 42 || memcmp(bin, "Ed", 2)) {
        snprintf(err, errlen, "public_key: not a minisign public key (the base64 line "
                 "starting with RW)");
        return RPC_INVALID_ARGUMENT;
    }
    memcpy(pk->keynum, bin + 2, 8);
    memcpy(pk->pk, bin + 10, 32);
    return RPC_OK;
}

typedef struct verify_ctx {
    svc_pool *pool;
    Reap__V1__VerifyProblem **v;
    size_t n, cap;
} verify_ctx;

static void on_problem(void *ud, const char *line)
{
    verify_ctx *c = ud;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Reap__V1__VerifyProblem **v = svc_alloc(c->pool, cap * sizeof *v);
        if (!v)
            return;
        if (c->n)
            memcpy(v, c->v, c->n * sizeof *v);
        c->v = v;
        c->cap = cap;
    }
    Reap__V1__VerifyProblem *pr = svc_alloc(c->pool, sizeof *pr);
    if (!pr)
        return;
    reap__v1__verify_problem__init(pr);
    /* "file: message" when the line starts with a file name. */
    const char *colon = strstr(line, ": ");
    if (colon && !memchr(line, ' ', (size_t)(colon - line))) {
        pr->file = svc_printf(c->pool, "%.*s", (int)(colon - line), line);
        pr->message = svc_strdup(c->pool, colon + 2);
    } else {
        pr->file = svc_strdup(c->pool, "");
        pr->message = svc_strdup(c->pool, line);
    }
    c->v[c->n++] = pr;
}

/* Manifest fields for the response (best effort: the verification says whether the
 * manifest can be trusted). */
static void manifest_fields(const char *dir, const reap_roots *roots, svc_pool *pool,
                            Reap__V1__VerifyResponse *r)
{
    char path[4200];
    json_error_t je;
    FILE *f = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    if (reap_fopen_read(path, roots, &f))
        return;
    json_t *doc = json_loadf(f, 0, &je);
    fclose(f);
    if (!doc)
        return;
    json_t *in = json_object_get(doc, "inputs"), *par = json_object_get(doc, "parameters");
    json_t *files = json_object_get(doc, "files"), *cal = json_object_get(in, "calibration_ids");
    const char *mid = json_string_value(json_object_get(in, "model_id"));
    const char *crit = json_string_value(json_object_get(par, "criterion"));
    reap_criterion c;
    r->files_checked = (uint32_t)json_array_size(files);
    r->model_id = svc_strdup(pool, mid);
    if (crit && reap_criterion_from_name(crit, &c) == REAP_OK)
        r->criterion = criterion_enum(c);
    r->ratio = json_number_value(json_object_get(par, "ratio"));
    r->n_keep = (uint32_t)json_integer_value(json_object_get(par, "n_keep"));
    if (json_array_size(cal) &&
        (r->calib_ids = svc_alloc(pool, json_array_size(cal) * sizeof *r->calib_ids)))
        for (size_t i = 0; i < json_array_size(cal); i++)
            r->calib_ids[r->n_calib_ids++] =
                svc_strdup(pool, json_string_value(json_array_get(cal, i)));
    json_decref(doc);
}

/* Signature and sizes only (skip_rehash). */
static int verify_light(const char *dir, const reap_roots *roots, const reap_pub_key *pk,
                        verify_ctx *vc)
{
    char path[4200], sig[4200];
    json_error_t je;
    int bad = 0;
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    snprintf(sig, sizeof sig, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    if (reap_minisign_verify_file_confined(pk, path, sig, roots, NULL, 0)) {
        on_problem(vc, reap_err_msg());
        bad++;
    }
    FILE *f = NULL;
    json_t *doc = NULL;
    if (reap_fopen_read(path, roots, &f) == REAP_OK) {
        doc = json_loadf(f, 0, &je);
        fclose(f);
    }
    json_t *files = json_object_get(doc, "files");
    if (!json_is_array(files)) {
        on_problem(vc, REAP_MANIFEST_NAME ": no files list");
        json_decref(doc);
        return bad + 1;
    }
    for (size_t i = 0; i < json_array_size(files); i++) {
        json_t *f = json_array_get(files, i);
        const char *name = json_string_value(json_object_get(f, "path"));
        struct stat sb;
        char fp[4200], line[4400];
        if (!name)
            continue;
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        if (stat(fp, &sb)) {
            snprintf(line, sizeof line, "%s: missing", name);
            on_problem(vc, line);
            bad++;
        } else if ((json_int_t)sb.st_size != json_integer_value(json_object_get(f, "size"))) {
            snprintf(line, sizeof line, "%s: size changed", name);
            on_problem(vc, line);
            bad++;
        }
    }
    json_decref(doc);
    return bad;
}

static int h_verify(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__VerifyRequest *q = (const void *)req;
    pruner_svc *S = ud;
    char err[1024], path[4200], *dir = NULL;
    reap_pub_key pk;
    rpc_code code;
    svc_pool pool = {0};
    verify_ctx vc = {.pool = &pool};
    Reap__V1__VerifyResponse resp = REAP__V1__VERIFY_RESPONSE__INIT;
    uint8_t digest[32];
    struct stat sb;
    int rc;

    if (!*q->output_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "output_path: required");
    if (*q->public_key) {
        if ((code = parse_pubkey(q->public_key, &pk, err, sizeof err)))
            return rpc_call_error(call, code, "%s", err);
    } else if (S->have_pub) {
        pk = S->pub;
    } else {
        return rpc_call_error(call, RPC_FAILED_PRECONDITION, "public_key: none given and the "
                              "server has no key (--key or --pubkey)");
    }
    if ((code = rpc_path_confine(&S->verify_roots, "output_path", q->output_path,
                                 RPC_PATH_EXISTING | RPC_PATH_DIR, &dir, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    if (stat(path, &sb)) {
        rc = rpc_call_error(call, RPC_NOT_FOUND, "output_path: %s has no %s", dir,
                            REAP_MANIFEST_NAME);
        goto done;
    }
    int n_problems = 0;
    if (q->skip_rehash) {
        n_problems = verify_light(dir, &S->verify_fs, &pk, &vc);
        rc = n_problems ? REAP_E_INVALID : REAP_OK;
    } else {
        rc = reap_manifest_verify_dir_confined(dir, &S->verify_fs, &pk, on_problem, &vc,
                                               &n_problems);
        if (rc && rc != REAP_E_INVALID) {
            rc = rpc_call_error(call, svc_code(rc, reap_err_msg()), "%s", reap_err_msg());
            goto done;
        }
        if (rc && vc.n == 0)
            on_problem(&vc, reap_err_msg());
    }
    char sig[4200];
    snprintf(sig, sizeof sig, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    resp.ok = rc == REAP_OK;
    resp.signature_ok = reap_minisign_verify_file_confined(&pk, path, sig, &S->verify_fs, NULL,
                                                           0) == REAP_OK;
    resp.problems = vc.v;
    resp.n_problems = vc.n;
    if (reap_hash_file_confined(path, &S->verify_fs, digest, NULL, NULL) == REAP_OK)
        resp.manifest_digest = svc_hex(&pool, digest, 32);
    manifest_fields(dir, &S->verify_fs, &pool, &resp);
    rc = pool.failed ? rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory")
                     : rpc_call_respond(call, &resp.base);
done:
    svc_pool_free(&pool);
    free(dir);
    return rc;
}

/* ---- the server ---------------------------------------------------------------------- */

static void on_shutdown(void *ud)
{
    pruner_svc *S = ud;
    (void)S;
    svc_log(PROG, "shutting down: running prunes stop and remove their temporary output");
}

int pruner_cmd_serve(int argc, char **argv)
{
    pruner_svc S;
    rpc_server_opts so;
    const char *store_dir = NULL, *env_file = NULL, *key_path = NULL, *pub_path = NULL,
               *criterion = NULL;
    cli_list model_roots = {0}, output_roots = {0};
    cli_opt opts[RPC_SERVER_CLI_N + 13];
    char err[1024];
    int n, help = 0, rc, ex = 1;
    reap_store_opts sto = {.create = 1};

    memset(&S, 0, sizeof S);
    memset(&so, 0, sizeof so);
    pthread_mutex_init(&S.mu, NULL);
    n = rpc_server_cli_options(&so, opts, RPC_SERVER_CLI_N);
    for (int i = 0; i < n; i++) {
        if (!strcmp(opts[i].flag, "listen")) {
            opts[i].env = "REAP_PRUNER_LISTEN";
            opts[i].def = "127.0.0.1:50052";
        } else if (!strcmp(opts[i].flag, "health-listen")) {
            opts[i].env = "REAP_PRUNER_HEALTH_LISTEN";
        }
    }
    const cli_opt mine[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory", &store_dir, 1},
        {"model-root", "REAP_MODEL_PATH", CLI_LIST, NULL, "directory under which clients' "
         "model paths must lie", &model_roots, 1},
        {"output-root", "REAP_OUTPUT_PATH", CLI_LIST, NULL, "directory under which pruned "
         "checkpoints are written", &output_roots, 1},
        {"key", "REAP_SIGNING_KEY", CLI_STR, NULL, "minisign secret key file that signs "
         "manifests (e.g. a mounted secret; unsigned without)", &key_path, 0},
        {"pubkey", "REAP_PUBKEY", CLI_STR, NULL, "default public key of Verify (default: "
         "the public half of --key)", &pub_path, 0},
        {"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "default fraction of experts removed "
         "when a request gives neither ratio nor n_prune", &S.ratio_default, 0},
        {"criterion", "REAP_CRITERION", CLI_STR, "reap", "default criterion", &criterion, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "hashing and verification threads (0: all "
         "cores)", &S.threads, 0},
        {"max-prunes", "REAP_MAX_PRUNES", CLI_INT, "1", "prunes at once (more: "
         "RESOURCE_EXHAUSTED)", &S.max_prunes, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "skip the "
         "free-space check before writing the output (file systems that misreport free "
         "space)", &S.no_space_check, 0},
        {"env-file", "REAP_ENV_FILE", CLI_ENVFILE, ".env", "read KEY=VALUE settings from "
         "this file (missing default: ignored)", &env_file, 0},
    };
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        opts[n++] = mine[i];
    const char *usage = "usage: reap-pruner serve --store DIR --model-root DIR "
                        "--output-root DIR [--key FILE] [options]\n\nServe reap.v1.Pruner "
                        "and grpc.health.v1 (flag > environment > .env file > default)";
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        ex = 2;
        goto out;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n);
        ex = 0;
        goto out;
    }
    if (S.threads < 0 || S.max_prunes < 1) {
        fprintf(stderr, "%s: --threads must be >= 0 and --max-prunes >= 1\n", PROG);
        ex = 2;
        goto out;
    }
    if (reap_criterion_from_name(criterion, &S.criterion_default)) {
        fprintf(stderr, "%s: --criterion: %s\n", PROG, reap_err_msg());
        ex = 2;
        goto out;
    }
    if (S.ratio_default) {
        char *end;
        double r = strtod(S.ratio_default, &end);
        if (*end || !(r > 0 && r < 1)) {
            fprintf(stderr, "%s: --ratio '%s' is not in (0, 1)\n", PROG, S.ratio_default);
            ex = 2;
            goto out;
        }
    }
    cli_list both = {0};
    char *both_v[64];
    both.v = both_v;
    for (int i = 0; i < output_roots.n && both.n < 64; i++)
        both.v[both.n++] = output_roots.v[i];
    for (int i = 0; i < model_roots.n && both.n < 64; i++)
        both.v[both.n++] = model_roots.v[i];
    if (svc_roots(&S.model_roots, "--model-root", &model_roots, err, sizeof err) ||
        svc_roots(&S.output_roots, "--output-root", &output_roots, err, sizeof err) ||
        svc_roots(&S.verify_roots, "--output-root/--model-root", &both, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        ex = 2;
        goto out;
    }
    S.model_fs = (reap_roots){(const char *const *)S.model_roots.dirs, S.model_roots.n};
    S.verify_fs = (reap_roots){(const char *const *)S.verify_roots.dirs, S.verify_roots.n};
    if (key_path) {
        if (reap_minisign_load_secret(key_path, &S.key)) {
            fprintf(stderr, "%s: --key: %s\n", PROG, reap_err_msg());
            goto out;
        }
        S.have_key = 1;
        reap_minisign_public_of(&S.key, &S.pub);
        S.have_pub = 1;
    }
    if (pub_path) {
        if (reap_minisign_load_public(pub_path, &S.pub)) {
            fprintf(stderr, "%s: --pubkey: %s\n", PROG, reap_err_msg());
            goto out;
        }
        S.have_pub = 1;
    }
    /* Leftovers of prunes killed before this start (this server's, or another's sharing
     * the volume: those whose lock is held are left alone). */
    for (int i = 0; i < S.output_roots.n; i++)
        if (reap_outdir_sweep(S.output_roots.dirs[i], NULL, log_leftover, NULL, NULL))
            svc_log(PROG, "--output-root: %s", reap_err_msg());
    if ((rc = reap_store_open(store_dir, &sto, &S.store))) {
        fprintf(stderr, "%s: --store: %s\n", PROG, reap_err_msg());
        goto out;
    }
    so.on_shutdown = on_shutdown;
    so.on_shutdown_ud = &S;
    if ((rc = rpc_server_create(&so, &S.srv))) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        goto out;
    }
#define M(name, kind, rq, rs, fn)                                                         \
    {"/reap.v1.Pruner/" name, kind, &reap__v1__##rq##__descriptor,                        \
     &reap__v1__##rs##__descriptor, fn, &S, 0}
    const rpc_method methods[] = {
        M("ComputeKeepSet", RPC_UNARY, keep_set_request, keep_set_response, h_keepset),
        M("Prune", RPC_SERVER_STREAM, prune_request, prune_event, h_prune),
        M("Verify", RPC_UNARY, verify_request, verify_response, h_verify),
    };
#undef M
    svc_log_auth(PROG, S.srv);   /* before the "port" line that clients and tests wait for */
    if ((rc = svc_start(S.srv, "reap.v1.Pruner", methods, sizeof methods / sizeof methods[0])))
        goto fail_msg;
    svc_log(PROG, "serving reap.v1.Pruner on port %d (store %s, manifests %s)%s",
            rpc_server_port(S.srv), store_dir, S.have_key ? "signed" : "unsigned",
            so.tls_cert ? ", TLS" : "");
    if ((rc = rpc_server_run(S.srv))) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        S.srv = NULL;   /* calls still referenced: leave it allocated */
        goto out;
    }
    svc_log(PROG, "shut down cleanly");
    ex = 0;
    goto out;
fail_msg:
    fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
out:
    rpc_server_free(S.srv);
    reap_store_close(S.store);
    rpc_roots_free(&S.model_roots);
    rpc_roots_free(&S.output_roots);
    rpc_roots_free(&S.verify_roots);
    if (S.have_key)
        reap_sign_key_wipe(&S.key);
    for (int i = 0; i < S.n_active; i++)
        free(S.active[i]);
    free(S.active);
    pthread_mutex_destroy(&S.mu);
    cli_free(opts, n);
    return ex;
}

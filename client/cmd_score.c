/* cmd_score.c - `reapctl score` (start or resume a scoring run on the scorer service and
 * follow it) and `reapctl watch RUN_ID` (re-attach to a run).
 *
 * Display: on a terminal one progress bar per run (layer i/L, tokens/s, ETA); otherwise
 * one plain line per event; --json: one JSON object per event (proto field names).
 * The first event of a run is `queued` (its id and place in the queue; one line "run ID
 * queued (position N): ..."), then `accepted` once a worker has identified the model and
 * the calibration set (older servers send no `queued`).
 * Ctrl-C: the run is cancelled - at once while it is queued, else at its next layer
 * boundary (the layer in progress is committed; scoring the same model and calibration
 * again resumes) - and followed to its end; a second Ctrl-C leaves at once. --detach
 * leaves once the run has its id (queued; accepted with older servers): it goes on,
 * `reapctl watch RUN_ID`. Leaving never stops a run by itself: the server keeps
 * scoring when its client goes away.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap.pb-c.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

static volatile sig_atomic_t g_int;      /* Ctrl-C during the first stream: cancels it */
static volatile sig_atomic_t g_int2;     /* Ctrl-C while following a cancelled run */

typedef struct follow {
    reapctl_out_mode mode;
    int detach;
    char run_id[33];
    char label[48];
    int n_layers, layers_done, ended;
    int queued;                          /* the last news: waiting in the queue */
    double tokens_per_s, eta_s;
    int final_ok;
} follow;

static void bar_update(follow *f, int done)
{
    char eta[32], text[160];
    reapctl_fmt_duration(f->eta_s, eta, sizeof eta);
    snprintf(text, sizeof text, "layer %d/%d  %.0f tok/s  ETA %s", f->layers_done, f->n_layers,
             f->tokens_per_s, done ? "0s" : eta);
    reapctl_bar(f->label, f->n_layers ? (double)f->layers_done / f->n_layers : 0, text, done);
}

static int on_event(const ProtobufCMessage *msg, void *ud)
{
    const Reap__V1__ScoreEvent *ev = (const void *)msg;
    follow *f = ud;
    if (f->mode == REAPCTL_OUT_JSON)
        reapctl_print_json(msg);
    switch (ev->event_case) {
    case REAP__V1__SCORE_EVENT__EVENT_QUEUED: {
        const Reap__V1__RunQueued *qd = ev->queued;
        snprintf(f->run_id, sizeof f->run_id, "%s", qd->run_id);
        snprintf(f->label, sizeof f->label, "run %.8s", qd->run_id);
        f->queued = qd->position > 0;
        if (f->mode == REAPCTL_OUT_JSON)
            break;
        if (qd->position)
            printf("run %s queued (position %u): reapctl watch %s / reapctl cancel %s\n",
                   qd->run_id, qd->position, qd->run_id, qd->run_id);
        else
            printf("run %s starting (identifying the model and calibration data): "
                   "reapctl watch %s / reapctl cancel %s\n", qd->run_id, qd->run_id,
                   qd->run_id);
        fflush(stdout);
        if (f->detach) {
            printf("run %s goes on in the server: reapctl watch %s\n", qd->run_id,
                   qd->run_id);
            return 1;
        }
        break;
    }
    case REAP__V1__SCORE_EVENT__EVENT_ACCEPTED: {
        const Reap__V1__RunAccepted *a = ev->accepted;
        f->queued = 0;
        snprintf(f->run_id, sizeof f->run_id, "%s", a->run_id);
        snprintf(f->label, sizeof f->label, "run %.8s", *a->run_id ? a->run_id : "-");
        f->n_layers = (int)a->n_layers;
        f->layers_done = (int)a->layers_done;
        if (f->mode == REAPCTL_OUT_JSON)
            break;
        if (a->already_scored)
            printf("model %.16s calibration %.16s is already scored: nothing to do "
                   "(force scores it again)\n", a->model_id, a->calib_id);
        else
            printf("run %s  model %.16s  calib %.16s  %u layers\n", a->run_id,
                   a->model_id, a->calib_id, a->n_layers);
        if (a->start_layer && !a->already_scored)
            printf("  resumed from a checkpoint at layer %u (%u layers already committed)\n",
                   a->start_layer, a->layers_done);
        fflush(stdout);
        if (f->detach) {
            printf("run %s goes on in the server: reapctl watch %s\n", a->run_id, a->run_id);
            return 1;
        }
        break;
    }
    case REAP__V1__SCORE_EVENT__EVENT_TOKENIZED:
        if (f->mode != REAPCTL_OUT_JSON) {
            printf("  %llu samples -> %u rows x %u, %llu tokens",
                   (unsigned long long)ev->tokenized->samples, ev->tokenized->rows,
                   ev->tokenized->seq_len, (unsigned long long)ev->tokenized->tokens);
            if (ev->tokenized->images)   /* image items (0 from older servers) */
                printf(" (%u image%s, %llu image tokens)", ev->tokenized->images,
                       ev->tokenized->images == 1 ? "" : "s",
                       (unsigned long long)ev->tokenized->image_tokens);
            printf("\n");
            fflush(stdout);
        }
        break;
    case REAP__V1__SCORE_EVENT__EVENT_LAYER_DONE: {
        const Reap__V1__LayerDone *l = ev->layer_done;
        f->layers_done = (int)l->layers_done;
        f->n_layers = (int)l->n_layers;
        f->tokens_per_s = l->tokens_per_s;
        f->eta_s = l->eta_s;
        if (f->mode == REAPCTL_OUT_BAR) {
            bar_update(f, 0);
        } else if (f->mode == REAPCTL_OUT_LINES) {
            char eta[32];
            reapctl_fmt_duration(l->eta_s, eta, sizeof eta);
            printf("layer %u/%u done  %-5s %.2f s  %.0f tokens/s  ETA %s\n", l->layers_done,
                   l->n_layers, l->moe ? "MoE" : "dense", l->seconds, l->tokens_per_s, eta);
            fflush(stdout);
        }
        break;
    }
    case REAP__V1__SCORE_EVENT__EVENT_FINISHED:
        f->ended = 1;
        f->final_ok = 1;
        if (f->mode == REAPCTL_OUT_BAR && f->layers_done < f->n_layers)
            f->layers_done = f->n_layers;
        if (f->mode == REAPCTL_OUT_BAR)
            bar_update(f, 1);
        if (f->mode != REAPCTL_OUT_JSON) {
            printf("finished: %u layers, %llu tokens, %.2f s of compute\n",
                   ev->finished->n_layers, (unsigned long long)ev->finished->tokens,
                   ev->finished->seconds);
            fflush(stdout);
        }
        break;
    case REAP__V1__SCORE_EVENT__EVENT_ERROR:
        f->ended = 1;
        if (f->mode == REAPCTL_OUT_BAR)
            printf("\n");
        if (f->mode != REAPCTL_OUT_JSON) {
            printf("error: %s\n", ev->error->message);
            fflush(stdout);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Follow a run with WatchRun until it ends (cancel: a Ctrl-C after the first). */
static rpc_code watch(rpc_client *cl, const char *run_id, follow *f, rpc_client_status *st)
{
    Reap__V1__WatchRunRequest q = REAP__V1__WATCH_RUN_REQUEST__INIT;
    q.run_id = (char *)run_id;
    return rpc_client_stream(cl, "/reap.v1.Scorer/WatchRun", &q.base,
                             &reap__v1__score_event__descriptor, 0, on_event, f, st);
}

/* After a first Ctrl-C: CancelRun, then follow the run to its end. */
static int cancel_and_follow(const char *cmd, rpc_client *cl, follow *f, long timeout_ms)
{
    Reap__V1__CancelRunRequest q = REAP__V1__CANCEL_RUN_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_client_status st;
    if (!f->run_id[0]) {
        fprintf(stderr, "reapctl %s: interrupted before the server named the run; it may "
                "still start (reapctl runs)\n", cmd);
        return REAPCTL_EXIT_SERVER + RPC_CANCELLED;
    }
    if (f->mode == REAPCTL_OUT_BAR)
        printf("\n");
    if (f->queued)
        fprintf(stderr, "reapctl %s: cancelling run %s before it starts (it is queued)\n",
                cmd, f->run_id);
    else
        fprintf(stderr, "reapctl %s: cancelling run %s at its next layer boundary (Ctrl-C "
                "again to leave it running)\n", cmd, f->run_id);
    q.run_id = f->run_id;
    if (rpc_client_unary(cl, "/reap.v1.Scorer/CancelRun", &q.base, &reap__v1__run__descriptor,
                         timeout_ms, &resp, &st) != RPC_OK)
        return reapctl_call_failed(cmd, &st);
    protobuf_c_message_free_unpacked(resp, NULL);
    f->detach = 0;
    watch(cl, f->run_id, f, &st);
    return reapctl_call_failed(cmd, &st);
}

static int run_follow(const char *cmd, int argc, char **argv, int is_watch)
{
    const char *model = NULL, *calib = NULL, *backend = NULL, *run_id = NULL,
               *tokenizer = NULL, *seed_s = NULL, *max_samples_s = NULL;
    long seq_len = 0, max_samples = 0, batch = 0, seed = 0;
    int no_pack = 0, force = 0, detach = 0, json = 0, n_pos = 0, n = 0, ex;
    int shuffle = 0;
    const char *pos[1];
    reapctl_conn c;
    cli_opt opts[24];
    char err[512], usage[160];
    rpc_client *cl = NULL;
    rpc_client_status st;
    memset(&st, 0, sizeof st);

    if (!is_watch) {
        opts[n++] = (cli_opt){"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint "
                              "directory on the server (under its --model-root)", &model, 1};
        opts[n++] = (cli_opt){"calib", "REAP_CALIBRATION_PATH", CLI_STR, NULL, "calibration "
                              "file on the server (under its --calib-root)", &calib, 1};
        opts[n++] = (cli_opt){"tokenizer", "REAP_TOKENIZER_PATH", CLI_STR, NULL,
                              "tokenizer.json or its directory on the server (under its "
                              "--model-root; default: the model directory's own)",
                              &tokenizer, 0};
        opts[n++] = (cli_opt){"shuffle", NULL, CLI_FLAG, NULL, "shuffle the items (with "
                              "--seed) before taking --max-samples", &shuffle, 0};
        opts[n++] = (cli_opt){"seed", NULL, CLI_STR, NULL, "shuffle seed, an integer >= 0 "
                              "(with --shuffle; default 0)", &seed_s, 0};
        opts[n++] = (cli_opt){"seq-len", NULL, CLI_INT, "0", "positions per row (0: the "
                              "server's default)", &seq_len, 0};
        opts[n++] = (cli_opt){"no-pack", NULL, CLI_FLAG, NULL, "one row per sample",
                              &no_pack, 0};
        opts[n++] = (cli_opt){"max-samples", "REAP_MAX_SAMPLES", CLI_STR, NULL, "use the "
                              "first N samples (0: every sample; not given: the server's "
                              "default)", &max_samples_s, 0};
        opts[n++] = (cli_opt){"batch-size", "REAP_BATCH_SIZE", CLI_INT, "0", "rows per "
                              "attention micro-batch (0: the server's default)", &batch, 0};
        opts[n++] = (cli_opt){"backend", NULL, CLI_STR, NULL, "cpu, cuda or auto (default: "
                              "the server's)", &backend, 0};
        opts[n++] = (cli_opt){"force", NULL, CLI_FLAG, NULL, "score again even when the "
                              "statistics are stored", &force, 0};
        opts[n++] = (cli_opt){"detach", NULL, CLI_FLAG, NULL, "leave once the run is "
                              "accepted (it goes on)", &detach, 0};
    }
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "one JSON object per event", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER, opts, &n);
    snprintf(usage, sizeof usage, is_watch ? "usage: reapctl watch RUN_ID [options]"
                                           : "usage: reapctl score --model DIR --calib FILE "
                                             "[options]");
    if ((ex = reapctl_parse(cmd, usage, opts, n, argc, argv, pos, is_watch, &n_pos)) >= 0)
        return ex;
    if (n_pos)
        run_id = pos[0];
    if (is_watch && !run_id) {
        fprintf(stderr, "reapctl watch: give the run id (reapctl runs lists them)\n");
        return REAPCTL_EXIT_USAGE;
    }
    if (max_samples_s) {
        char *end;
        errno = 0;
        max_samples = strtol(max_samples_s, &end, 10);
        if (*end || end == max_samples_s || errno || max_samples > 0xffffffffL)
            max_samples = -1;
    }
    if (seq_len < 0 || max_samples < 0 || batch < 0) {
        fprintf(stderr, "reapctl %s: --seq-len, --max-samples, --batch-size must be >= 0\n",
                cmd);
        return REAPCTL_EXIT_USAGE;
    }
    if (cli_shuffle_seed(seed_s, shuffle, &seed, err, sizeof err)) {
        fprintf(stderr, "reapctl %s: %s\n", cmd, err);
        return REAPCTL_EXIT_USAGE;
    }
    if ((ex = reapctl_connect(cmd, &c, REAPCTL_SCORER, &g_int, &cl)))
        return ex;
    reapctl_on_interrupt(&g_int);
    follow f = {.mode = reapctl_out_mode_pick(json), .detach = detach};
    snprintf(f.label, sizeof f.label, "run");
    rpc_code code;
    if (is_watch) {
        snprintf(f.run_id, sizeof f.run_id, "%.32s", run_id);
        code = watch(cl, run_id, &f, &st);
    } else {
        Reap__V1__ScoreRequest q = REAP__V1__SCORE_REQUEST__INIT;
        q.model_path = (char *)model;
        q.calib_path = (char *)calib;
        q.seq_len = (uint32_t)seq_len;
        q.no_pack = no_pack;
        q.max_samples = (uint32_t)max_samples;
        q.max_samples_set = max_samples_s != NULL;   /* an explicit 0: every sample */
        q.batch_size = (uint32_t)batch;
        q.backend = (char *)(backend ? backend : "");
        q.force = force;
        q.tokenizer_path = (char *)(tokenizer ? tokenizer : "");
        q.shuffle = shuffle;
        q.seed = (uint64_t)seed;
        code = rpc_client_stream(cl, "/reap.v1.Scorer/Score", &q.base,
                                 &reap__v1__score_event__descriptor, 0, on_event, &f, &st);
    }
    (void)code;
    if (st.code == RPC_CANCELLED && g_int > 0 && !f.ended) {
        /* Ctrl-C: cancel the run, follow it on a new channel whose calls a second
         * Ctrl-C cancels. */
        rpc_client_close(cl);
        cl = NULL;
        reapctl_on_interrupt(&g_int2);
        if ((ex = reapctl_connect(cmd, &c, REAPCTL_SCORER, &g_int2, &cl)))
            return ex;
        ex = cancel_and_follow(cmd, cl, &f, c.timeout_ms);
    } else if (st.code == RPC_CANCELLED && detach && f.run_id[0]) {
        ex = 0;
    } else {
        ex = reapctl_call_failed(cmd, &st);
    }
    rpc_client_close(cl);
    return ex;
}

int cmd_score(int argc, char **argv)
{
    return run_follow("score", argc, argv, 0);
}

int cmd_watch(int argc, char **argv)
{
    return run_follow("watch", argc, argv, 1);
}

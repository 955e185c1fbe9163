/* cmd_prune.c - `reapctl prune`: ask the pruner service to write a pruned checkpoint from
 * the stored statistics (Prune, streaming progress), then optionally check it (--verify:
 * Verify with the server's key). A progress bar on a terminal, plain lines otherwise,
 * JSON events with --json. Ctrl-C cancels the prune (nothing is written). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "criterion_proto.h"
#include "keepset.h"
#include "reap.pb-c.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

static volatile sig_atomic_t g_int;

typedef struct prune_view {
    reapctl_out_mode mode;
    char job[20];
    int ended, ok;
    double last_pct;
} prune_view;

static int on_event(const ProtobufCMessage *msg, void *ud)
{
    const Reap__V1__PruneEvent *ev = (const void *)msg;
    prune_view *v = ud;
    char eta[32], text[160];
    if (v->mode == REAPCTL_OUT_JSON) {
        reapctl_print_json(msg);
        return 0;
    }
    switch (ev->event_case) {
    case REAP__V1__PRUNE_EVENT__EVENT_ACCEPTED: {
        const Reap__V1__PruneAccepted *a = ev->accepted;
        snprintf(v->job, sizeof v->job, "%s", a->job_id);
        printf("prune %s: model %.16s, %u -> %u experts per layer, %.3f GB in, writing %s\n",
               a->job_id, a->model_id, a->n_experts, a->n_keep, a->bytes_total / 1e9,
               a->output_path);
        fflush(stdout);
        break;
    }
    case REAP__V1__PRUNE_EVENT__EVENT_PROGRESS: {
        const Reap__V1__PruneProgress *p = ev->progress;
        double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total : 1;
        reapctl_fmt_duration(p->eta_s, eta, sizeof eta);
        snprintf(text, sizeof text, "%.2f / %.2f GB  ETA %s", p->bytes_done / 1e9,
                 p->bytes_total / 1e9, eta);
        if (v->mode == REAPCTL_OUT_BAR) {
            reapctl_bar("rewrite", frac, text, 0);
        } else if (frac * 100 >= v->last_pct + 10 || frac >= 1) {
            printf("rewrite %3.0f%%  %s\n", frac * 100, text);
            v->last_pct = frac * 100;
            fflush(stdout);
        }
        break;
    }
    case REAP__V1__PRUNE_EVENT__EVENT_FINISHED: {
        const Reap__V1__PruneFinished *f = ev->finished;
        v->ended = v->ok = 1;
        if (v->mode == REAPCTL_OUT_BAR)
            printf("\n");
        printf("pruned checkpoint %s: %.3f GB written in %.2f s\n"
               "manifest blake2b-256 %s (%s)\n", f->output_path, f->bytes_written / 1e9,
               f->seconds, f->manifest_digest, f->is_signed ? "signed" : "not signed: the "
               "server has no --key");
        fflush(stdout);
        break;
    }
    case REAP__V1__PRUNE_EVENT__EVENT_ERROR:
        v->ended = 1;
        if (v->mode == REAPCTL_OUT_BAR)
            printf("\n");
        printf("error: %s\n", ev->error->message);
        fflush(stdout);
        break;
    default:
        break;
    }
    return 0;
}

/* Verify RPC and report; used by prune --verify and verify --pruner. Returns the exit
 * status (3 when the check fails). */
int reapctl_remote_verify(const char *cmd, rpc_client *cl, const char *dir,
                          const char *pubkey_b64, int skip_rehash, int json, long timeout_ms)
{
    Reap__V1__VerifyRequest q = REAP__V1__VERIFY_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_client_status st;
    q.output_path = (char *)dir;
    q.public_key = (char *)(pubkey_b64 ? pubkey_b64 : "");
    q.skip_rehash = skip_rehash;
    if (rpc_client_unary(cl, "/reap.v1.Pruner/Verify", &q.base,
                         &reap__v1__verify_response__descriptor, timeout_ms, &resp,
                         &st) != RPC_OK)
        return reapctl_call_failed(cmd, &st);
    const Reap__V1__VerifyResponse *r = (const void *)resp;
    int ok = r->ok;
    if (json) {
        reapctl_print_json(resp);
    } else {
        for (size_t i = 0; i < r->n_problems; i++)
            printf("FAIL %s%s%s\n", r->problems[i]->file, *r->problems[i]->file ? ": " : "",
                   r->problems[i]->message);
        if (ok)
            printf("OK %s: %u files match reap-manifest.json (blake2b-256 %.16s) and the "
                   "signature verifies%s\n", dir, r->files_checked, r->manifest_digest,
                   skip_rehash ? " (sizes only)" : "");
        else
            printf("FAIL %s: %zu problem(s); signature %s\n", dir, r->n_problems,
                   r->signature_ok ? "ok" : "bad");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return ok ? 0 : REAPCTL_EXIT_CHECK;
}

int cmd_prune(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *ratio = NULL, *n_prune = NULL, *criterion = NULL,
               *calib_ids = NULL;
    int protect = 0, force = 0, overwrite = 0, verify = 0, json = 0, n = 0, ex;
    reapctl_conn c;
    cli_opt opts[28];
    opts[n++] = (cli_opt){"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory "
                          "on the server (under its --model-root)", &model, 1};
    opts[n++] = (cli_opt){"out", "REAP_OUTPUT_PATH", CLI_STR, NULL, "output directory on the "
                          "server (under its --output-root; must not exist)", &out, 1};
    opts[n++] = (cli_opt){"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "fraction of experts "
                          "removed per layer, in [0, 1)", &ratio, 0};
    opts[n++] = (cli_opt){"n-prune", NULL, CLI_STR, NULL, "experts removed per layer "
                          "(instead of --ratio)", &n_prune, 0};
    opts[n++] = (cli_opt){"criterion", "REAP_CRITERION", CLI_STR, NULL, "reap (default), "
                          "frequency, ean_sum, ean_mean, weighted_ean_sum, "
                          "weighted_frequency, max_activations", &criterion, 0};
    opts[n++] = (cli_opt){"calib-ids", NULL, CLI_STR, NULL, "calibration sets to use, comma "
                          "separated (default: every complete set)", &calib_ids, 0};
    opts[n++] = (cli_opt){"protect-super-experts", NULL, CLI_FLAG, NULL, "never drop super "
                          "experts", &protect, 0};
    opts[n++] = (cli_opt){"force", NULL, CLI_FLAG, NULL, "replace an existing output: only "
                          "an earlier reap output or an empty directory", &force, 0};
    opts[n++] = (cli_opt){"overwrite", NULL, CLI_FLAG, NULL, "the same as --force",
                          &overwrite, 0};
    opts[n++] = (cli_opt){"verify", NULL, CLI_FLAG, NULL, "then check the output against its "
                          "signed manifest (Verify, the server's key)", &verify, 0};
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "one JSON object per event", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_PRUNER, opts, &n);
    const char *usage = "usage: reapctl prune --model DIR --out DIR (--ratio R | --n-prune N) "
                        "[options]";
    if ((ex = reapctl_parse("prune", usage, opts, n, argc, argv, NULL, 0, NULL)) >= 0)
        return ex;
    Reap__V1__PruneRequest q = REAP__V1__PRUNE_REQUEST__INIT;
    Reap__V1__PruneParams p = REAP__V1__PRUNE_PARAMS__INIT;
    if (criterion) {
        reap_criterion c;
        if (reap_criterion_from_name(criterion, &c)) {
            fprintf(stderr, "reapctl prune: --criterion '%s' is unknown\n", criterion);
            return REAPCTL_EXIT_USAGE;
        }
        p.criterion = reap_criterion_to_proto(c);
    }
    if (!ratio == !n_prune) {
        fprintf(stderr, "reapctl prune: give exactly one of --ratio and --n-prune\n");
        return REAPCTL_EXIT_USAGE;
    }
    /* The one given is sent as set: --ratio 0 / --n-prune 0 prune nothing (not the
     * server's default ratio). Range checks are the server's. */
    char *end = NULL;
    if (ratio) {
        p.ratio = strtod(ratio, &end);
        p.ratio_set = 1;
    } else {
        p.n_prune = (uint32_t)strtoul(n_prune, &end, 10);
        p.n_prune_set = 1;
    }
    if (!end || *end || end == (ratio ? ratio : n_prune) || (n_prune && *n_prune == '-')) {
        fprintf(stderr, "reapctl prune: --%s '%s' is not a %s\n", ratio ? "ratio" : "n-prune",
                ratio ? ratio : n_prune, ratio ? "number" : "count (an integer >= 0)");
        return REAPCTL_EXIT_USAGE;
    }
    char **ids = NULL;
    size_t n_ids = 0;
    if (reapctl_split(calib_ids, &ids, &n_ids)) {
        fprintf(stderr, "reapctl prune: out of memory\n");
        return REAPCTL_EXIT_FAIL;
    }
    p.calib_ids = ids;
    p.n_calib_ids = n_ids;
    p.protect_super_experts = protect;
    q.model_path = (char *)model;
    q.output_path = (char *)out;
    q.params = &p;
    q.overwrite = force || overwrite;
    rpc_client *cl = NULL;
    rpc_client_status st;
    if ((ex = reapctl_connect("prune", &c, REAPCTL_PRUNER, &g_int, &cl))) {
        reapctl_strv_free(ids);
        return ex;
    }
    reapctl_on_interrupt(&g_int);
    prune_view v = {.mode = reapctl_out_mode_pick(json), .last_pct = -10};
    rpc_client_stream(cl, "/reap.v1.Pruner/Prune", &q.base, &reap__v1__prune_event__descriptor,
                      0, on_event, &v, &st);
    ex = reapctl_call_failed("prune", &st);
    if (!ex && verify) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", out);
        ex = reapctl_remote_verify("prune", cl, dir, NULL, 0, json, c.timeout_ms > 0
                                   ? c.timeout_ms * 20 : 0);
    }
    rpc_client_close(cl);
    reapctl_strv_free(ids);
    return ex;
}

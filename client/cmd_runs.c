/* cmd_runs.c - `reapctl runs` (list scoring runs; a queued run shows its place in the
 * queue), `reapctl cancel RUN_ID` (stop a run at its next layer boundary, a queued run at
 * once; --wait follows it to its end) and `reapctl models` (models and calibration sets
 * in the store), all against the scorer service. Tables by default, --json for the
 * messages as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reap.pb-c.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

static const char *state_name(Reap__V1__RunState s)
{
    static const char *names[] = {"-", "queued", "running", "done", "failed", "cancelled",
                                  "interrupted"};
    return (int)s >= 0 && (int)s <= 6 ? names[s] : "?";
}

static void fmt_time(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    if (!ns || !gmtime_r(&t, &tm) || !strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(out, n, "-");
}

static void print_run_row(const Reap__V1__Run *r)
{
    char t[32], state[24];
    fmt_time(r->started_unix_ns, t, sizeof t);
    if (r->state == REAP__V1__RUN_STATE__RUN_STATE_QUEUED && r->queue_position)
        snprintf(state, sizeof state, "queued #%u", r->queue_position);
    else
        snprintf(state, sizeof state, "%s", state_name(r->state));
    /* Servers before RunQueued list a queued run without an id. */
    printf("%-32s  %-11s %4u/%-4u %-16.16s %-16.16s %-19s %-5s %s\n",
           *r->run_id ? r->run_id : "(no id yet)", state, r->layers_done,
           r->n_layers, *r->model_id ? r->model_id : "-", *r->calib_id ? r->calib_id : "-", t,
           *r->backend ? r->backend : "-", r->error);
}

int cmd_runs(int argc, char **argv)
{
    const char *model = NULL, *state = NULL;
    long limit = 0;
    int json = 0, n = 0, n_pos = 0, ex;
    reapctl_conn c;
    cli_opt opts[16];
    opts[n++] = (cli_opt){"model-id", NULL, CLI_STR, NULL, "only this model's runs (id or "
                          "prefix)", &model, 0};
    opts[n++] = (cli_opt){"state", NULL, CLI_STR, NULL, "queued, running, done, failed, "
                          "cancelled or interrupted", &state, 0};
    opts[n++] = (cli_opt){"limit", NULL, CLI_INT, "0", "at most N runs, newest first (0: the "
                          "server's default, 100)", &limit, 0};
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "print the response as JSON", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER, opts, &n);
    if ((ex = reapctl_parse("runs", "usage: reapctl runs [options]", opts, n, argc, argv,
                            NULL, 0, &n_pos)) >= 0)
        return ex;
    Reap__V1__ListRunsRequest q = REAP__V1__LIST_RUNS_REQUEST__INIT;
    q.model_id = (char *)(model ? model : "");
    q.limit = limit > 0 ? (uint32_t)limit : 0;
    if (state) {
        static const char *names[] = {"", "queued", "running", "done", "failed", "cancelled",
                                      "interrupted"};
        int k;
        for (k = 1; k <= 6 && strcmp(names[k], state); k++)
            ;
        if (k > 6) {
            fprintf(stderr, "reapctl runs: --state '%s' is not one of queued, running, done, "
                    "failed, cancelled, interrupted\n", state);
            return REAPCTL_EXIT_USAGE;
        }
        q.state = (Reap__V1__RunState)k;
    }
    rpc_client *cl;
    rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    if ((ex = reapctl_connect("runs", &c, REAPCTL_SCORER, NULL, &cl)))
        return ex;
    if (rpc_client_unary(cl, "/reap.v1.Scorer/ListRuns", &q.base,
                         &reap__v1__list_runs_response__descriptor, c.timeout_ms, &resp,
                         &st) != RPC_OK) {
        rpc_client_close(cl);
        return reapctl_call_failed("runs", &st);
    }
    const Reap__V1__ListRunsResponse *r = (const void *)resp;
    if (json) {
        reapctl_print_json(resp);
    } else {
        printf("%-32s  %-11s %9s %-16s %-16s %-19s %-5s %s\n", "RUN", "STATE", "LAYERS",
               "MODEL", "CALIB", "STARTED (UTC)", "BE", "ERROR");
        for (size_t i = 0; i < r->n_runs; i++)
            print_run_row(r->runs[i]);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_client_close(cl);
    return 0;
}

int cmd_cancel(int argc, char **argv)
{
    const char *run_id = NULL;
    int json = 0, wait = 0, n = 0, ex, n_pos = 0;
    const char *pos[1];
    reapctl_conn c;
    cli_opt opts[16];
    opts[n++] = (cli_opt){"wait", NULL, CLI_FLAG, NULL, "follow the run until it has "
                          "stopped", &wait, 0};
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "print the run as JSON", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER, opts, &n);
    if ((ex = reapctl_parse("cancel", "usage: reapctl cancel RUN_ID [--wait]", opts, n, argc,
                            argv, pos, 1, &n_pos)) >= 0)
        return ex;
    if (n_pos)
        run_id = pos[0];
    if (!run_id) {
        fprintf(stderr, "reapctl cancel: give the run id (reapctl runs lists them)\n");
        return REAPCTL_EXIT_USAGE;
    }
    Reap__V1__CancelRunRequest q = REAP__V1__CANCEL_RUN_REQUEST__INIT;
    q.run_id = (char *)run_id;
    rpc_client *cl;
    rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    if ((ex = reapctl_connect("cancel", &c, REAPCTL_SCORER, NULL, &cl)))
        return ex;
    if (rpc_client_unary(cl, "/reap.v1.Scorer/CancelRun", &q.base, &reap__v1__run__descriptor,
                         c.timeout_ms, &resp, &st) != RPC_OK) {
        rpc_client_close(cl);
        return reapctl_call_failed("cancel", &st);
    }
    const Reap__V1__Run *r = (const void *)resp;
    char id[33];
    snprintf(id, sizeof id, "%s", r->run_id);
    if (json)
        reapctl_print_json(resp);
    else if (r->state == REAP__V1__RUN_STATE__RUN_STATE_CANCELLED && r->never_started)
        printf("run %s: cancelled before it started (it was queued)\n", r->run_id);
    else if (r->state == REAP__V1__RUN_STATE__RUN_STATE_RUNNING ||
             r->state == REAP__V1__RUN_STATE__RUN_STATE_QUEUED)
        printf("run %s: cancel requested; it stops after the layer in progress (%u of %u "
               "layers committed so far)\n", r->run_id, r->layers_done, r->n_layers);
    else
        printf("run %s has ended (%s): nothing to cancel\n", r->run_id,
               state_name(r->state));
    protobuf_c_message_free_unpacked(resp, NULL);
    ex = 0;
    if (wait) {
        /* Follow it to the end: a final status CANCELLED is what we asked for. */
        char *args[] = {argv[0], "watch", id, json ? "--json" : NULL, NULL};
        rpc_client_close(cl);
        ex = cmd_watch(json ? 4 : 3, args);
        return ex == REAPCTL_EXIT_SERVER + RPC_CANCELLED ? 0 : ex;
    }
    rpc_client_close(cl);
    return ex;
}

int cmd_models(int argc, char **argv)
{
    int json = 0, n = 0, n_pos = 0, ex;
    reapctl_conn c;
    cli_opt opts[16];
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "print the response as JSON", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER, opts, &n);
    if ((ex = reapctl_parse("models", "usage: reapctl models [options]", opts, n, argc, argv,
                            NULL, 0, &n_pos)) >= 0)
        return ex;
    Reap__V1__ListModelsRequest q = REAP__V1__LIST_MODELS_REQUEST__INIT;
    rpc_client *cl;
    rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    if ((ex = reapctl_connect("models", &c, REAPCTL_SCORER, NULL, &cl)))
        return ex;
    if (rpc_client_unary(cl, "/reap.v1.Scorer/ListModels", &q.base,
                         &reap__v1__list_models_response__descriptor, c.timeout_ms, &resp,
                         &st) != RPC_OK) {
        rpc_client_close(cl);
        return reapctl_call_failed("models", &st);
    }
    const Reap__V1__ListModelsResponse *r = (const void *)resp;
    if (json) {
        reapctl_print_json(resp);
    } else {
        for (size_t i = 0; i < r->n_models; i++) {
            const Reap__V1__Model *m = r->models[i];
            printf("model %s  %s, %u layers (%zu MoE), %u experts top-%u, %.3f GB\n"
                   "  first seen at %s\n", m->model_id, m->model_type, m->n_layers,
                   m->n_moe_layers, m->n_experts, m->top_k, m->total_bytes / 1e9,
                   m->first_seen_path);
            for (size_t k = 0; k < m->n_calibs; k++) {
                const Reap__V1__CalibSet *cs = m->calibs[k];
                printf("  calib %s  %s %u/%zu layers, %llu tokens, %u rows x %u, %s\n",
                       cs->calib_id, cs->layers_scored >= m->n_moe_layers ? "complete"
                                                                          : "partial ",
                       cs->layers_scored, m->n_moe_layers, (unsigned long long)cs->tokens,
                       cs->rows, cs->seq_len, cs->source);
            }
        }
        if (!r->n_models)
            printf("no models in the store yet (reapctl score)\n");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_client_close(cl);
    return 0;
}

/* serve.c - `reap-scorer serve`: the reap.v1.Scorer gRPC service (proto/reap.proto) over
 * a score store, plus grpc.health.v1. This file is its main: the options, the run
 * manager's set-up and the service's description for the daemon main (daemon.h: options,
 * .env, signals, listeners, health, port lines, shutdown).
 *
 * Transport only: each handler checks and converts the request (paths confined to the
 * configured roots with rpc_path_confine, identities resolved from prefixes), calls the
 * run manager (run_manager.h: Score, WatchRun, CancelRun; serve_score.c, serve_runs.c)
 * or reads the store through one snapshot (GetRun, ListRuns, ListModels, GetStats;
 * serve_runs.c, serve_store.c), and converts the answer. Runs stop early on CancelRun or
 * on shutdown (SIGTERM: health NOT_SERVING, the layer in progress is committed, the run
 * is recorded as interrupted; scoring the same pair again resumes it, and so does the
 * next start of the service: serve_resume.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend_cli.h"
#include "cli.h"
#include "layer_gate.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "scorer_cmds.h"
#include "scorer_serve_impl.h"
#include "serve.h"
#include "serve_resume.h"
#include "svc.h"

#define PROG SCORER_PROG

/* The service and its options as parsed (the daemon's hooks read them). */
typedef struct scorer_main {
    scorer_svc S;
    const char *backend, *precision, *gate_path;
    scorer_layer_gate gate;
    cli_list model_roots, calib_roots;
    long threads, ckpt_every, max_runs, max_queued, resume;
    int no_space_check;
    scorer_backend_cli bcli;       /* the backend's choices as parsed (backend_cli.h) */
    reap_backend_opts bopts;       /* ... and checked */
    char pending[4200];
} scorer_main;

/* Options: values, backend, roots (exit status 2 when one is malformed). */
static int check(void *ud)
{
    scorer_main *M = ud;
    scorer_svc *S = &M->S;
    char err[1024];
    if (S->seq_len < 1 || S->seq_len > (1 << 20) || S->max_samples < 0 || S->batch < 0 ||
        M->threads < 0 || M->ckpt_every < 0 || M->max_runs < 1 || M->max_queued < 0 ||
        (M->resume != 0 && M->resume != 1)) {
        fprintf(stderr, "%s: --seq-len (1..1048576) and --max-runs must be positive; "
                "--batch-size, --max-samples, --threads, --checkpoint-every, "
                "--max-queued-runs >= 0; --resume 0 or 1\n", PROG);
        return 2;
    }
    if (!(S->backend = scorer_pick_backend(M->backend))) {
        fprintf(stderr, "%s: --backend '%s' is %s\n", PROG, M->backend,
                strcmp(M->backend, "cuda") ? "unknown (cpu, cuda or auto)"
                                           : "not available in this build");
        return 2;
    }
    if (strcmp(M->precision, "fp32") && strcmp(M->precision, "bf16")) {
        fprintf(stderr, "%s: --precision must be fp32 or bf16\n", PROG);
        return 2;
    }
    if (scorer_backend_cli_apply(&M->bcli, &M->bopts, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        return 2;
    }
    S->d.store_opts.no_space_check = M->no_space_check;
    M->bopts.threads = (int)M->threads;
    M->bopts.batch_rows = (int)S->batch;
    M->bopts.precision = strcmp(M->precision, "bf16") ? REAP_PRECISION_FP32
                                                      : REAP_PRECISION_BF16;
    if (svc_roots(&S->model_roots, "--model-root", &M->model_roots, err, sizeof err) ||
        svc_roots(&S->calib_roots, "--calib-root", &M->calib_roots, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        return 2;
    }
    gethostname(S->host, sizeof S->host - 1);
    return 0;
}

/* The store is open: the pending requests' directory and the run manager. */
static int setup(void *ud)
{
    scorer_main *M = ud;
    scorer_svc *S = &M->S;
    /* Requests of runs not started yet, kept across a restart (--resume). */
    snprintf(M->pending, sizeof M->pending, "%s/pending", reap_store_dir(S->d.store));
    if (M->resume && mkdir(M->pending, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s: %s\n", PROG, M->pending, strerror(errno));
        return 1;
    }
    S->model_fs = (reap_roots){(const char *const *)S->model_roots.dirs, S->model_roots.n};
    S->calib_fs = (reap_roots){(const char *const *)S->calib_roots.dirs, S->calib_roots.n};
    scorer_layer_gate_init(&M->gate, M->gate_path);
    reap_rm_opts ro = {
        .store = S->d.store,
        .model_roots = &S->model_fs,
        .calib_roots = &S->calib_fs,
        .layer_gate = M->gate_path && *M->gate_path ? scorer_layer_gate_wait : NULL,
        .layer_gate_ud = &M->gate,
        .pending_dir = M->resume ? M->pending : NULL,
        .max_running = (int)M->max_runs,
        .max_queued = M->max_queued ? (int)M->max_queued : -1,
        .checkpoint_every = (int)M->ckpt_every,
        .hash_threads = (int)M->threads,
        .backend_opts = M->bopts,
    };
    if (reap_rm_create(&ro, &S->rm)) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        return 1;
    }
    return 0;
}

static void describe(void *ud, char *buf, size_t len)
{
    scorer_main *M = ud;
    snprintf(buf, len, "backend %s, %ld run(s) at once, %ld queued", M->S.backend->name,
             M->max_runs, M->max_queued);
}

/* Serving: submit again the runs a shutdown or crash interrupted (--resume). */
static void started(void *ud)
{
    scorer_main *M = ud;
    scorer_svc *S = &M->S;
    if (M->resume)
        scorer_resume_interrupted(S->d.store, S->rm, M->pending, &S->model_roots,
                                  &S->calib_roots, S->backend, PROG);
}

static void on_shutdown(void *ud)
{
    scorer_main *M = ud;
    int running = 0, queued = 0;
    reap_rm_counts(M->S.rm, &running, &queued);
    reap_rm_stop(M->S.rm);
    /* Logged once the runs have been told (tests wait for this line). */
    svc_log(PROG, "shutting down: %d run(s) stop after their current layer, %d queued "
            "dropped", running, queued);
}

/* Every call has ended: let the running jobs commit their layer and end. */
static void stop(void *ud)
{
    scorer_main *M = ud;
    reap_rm_free(M->S.rm);
    M->S.rm = NULL;
}

static const svc_daemon_info scorer_daemon = {
    .prog = PROG, .service = "reap.v1.Scorer", .env_prefix = "REAP_SCORER",
    .synopsis = "reap-scorer serve --store DIR --model-root DIR --calib-root DIR [options]",
    .listen_default = "127.0.0.1:50051",
    .store_help = "score store directory (created if absent)",
};

static const svc_daemon_hooks scorer_hooks = {.check = check, .setup = setup,
                                              .describe = describe, .started = started,
                                              .on_shutdown = on_shutdown, .stop = stop};

int scorer_cmd_serve(int argc, char **argv)
{
    scorer_main M;
    scorer_svc *S = &M.S;
    int ex;

    memset(&M, 0, sizeof M);
    M.resume = 1;
    scorer_layer_gate_init(&M.gate, NULL);
    cli_opt mine[32] = {
        {"model-root", "REAP_MODEL_PATH", CLI_LIST, NULL, "directory under which clients' "
         "model paths must lie", &M.model_roots, 1},
        {"calib-root", "REAP_CALIBRATION_PATH", CLI_LIST, NULL, "directory under which "
         "calibration files must lie", &M.calib_roots, 1},
        {"backend", "REAP_BACKEND", CLI_STR, "auto", "default backend: cpu, cuda or auto "
         "(CUDA when a device is present)", &M.backend, 0},
        {"precision", "REAP_PRECISION", CLI_STR, "fp32", "CUDA math: fp32 or bf16",
         &M.precision, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads per run (0: all cores)",
         &M.threads, 0},
        {"seq-len", "REAP_SEQ_LEN", CLI_INT, "2048", "default positions per row",
         &S->seq_len, 0},
        {"max-samples", "REAP_MAX_SAMPLES", CLI_INT, "300", "samples used by requests "
         "that do not give max_samples (0: all)", &S->max_samples, 0},
        {"batch-size", "REAP_BATCH_SIZE", CLI_INT, "0", "default rows per micro-batch (0: "
         "the backend chooses: 8 on CPU, the memory plan on CUDA)", &S->batch, 0},
        {"checkpoint-every", "REAP_CHECKPOINT_EVERY", CLI_INT, "4", "hidden-state "
         "checkpoint every N layers (0: none)", &M.ckpt_every, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "hidden-state "
         "checkpoints skip the free-space check (file systems that misreport free space)",
         &M.no_space_check, 0},
        {"max-runs", "REAP_MAX_RUNS", CLI_INT, "1", "scoring runs at once", &M.max_runs, 0},
        {"max-queued-runs", "REAP_MAX_QUEUED_RUNS", CLI_INT, "4", "runs waiting for a "
         "worker before RESOURCE_EXHAUSTED (0: none)", &M.max_queued, 0},
        {"resume", "REAP_RESUME", CLI_INT, "1", "on start, submit again the runs a "
         "shutdown or crash of this host's scorer interrupted (0: leave them)", &M.resume, 0},
        {"layer-gate", NULL, CLI_STR, "", "for tests: a FIFO; before each "
         "layer a run reads one byte from it (closing the writer opens it for good)",
         &M.gate_path, 0},
    };
    int n_mine = 0;
    while (n_mine < 32 && mine[n_mine].flag)
        n_mine++;
    n_mine += scorer_backend_cli_options(&M.bcli, mine + n_mine, 32 - n_mine);
#define METHOD(name, kind, rq, rs, fn)                                                    \
    {"/reap.v1.Scorer/" name, kind, &reap__v1__##rq##__descriptor,                        \
     &reap__v1__##rs##__descriptor, fn, S, 0}
    const rpc_method methods[] = {
        METHOD("Score", RPC_SERVER_STREAM, score_request, score_event, scorer_serve_score),
        METHOD("WatchRun", RPC_SERVER_STREAM, watch_run_request, score_event,
               scorer_serve_watch),
        METHOD("GetRun", RPC_UNARY, get_run_request, run, scorer_serve_get_run),
        METHOD("ListRuns", RPC_UNARY, list_runs_request, list_runs_response,
               scorer_serve_list_runs),
        METHOD("CancelRun", RPC_UNARY, cancel_run_request, run, scorer_serve_cancel),
        METHOD("ListModels", RPC_UNARY, list_models_request, list_models_response,
               scorer_serve_list_models),
        METHOD("GetStats", RPC_UNARY, get_stats_request, get_stats_response,
               scorer_serve_get_stats),
    };
#undef METHOD
    S->d = (svc_daemon){.info = &scorer_daemon, .hooks = &scorer_hooks, .ud = &M,
                        .opts = mine, .n_opts = n_mine,
                        .methods = methods, .n_methods = sizeof methods / sizeof methods[0]};
    ex = svc_daemon_run(&S->d, argc, argv);
    reap_rm_free(S->rm);
    scorer_layer_gate_free(&M.gate);
    rpc_roots_free(&S->model_roots);
    rpc_roots_free(&S->calib_roots);
    return ex;
}

/* serve.c - `reap-pruner serve`: the reap.v1.Pruner gRPC service (proto/reap.proto) over
 * the score store, plus grpc.health.v1. This file is its main: the options, the keys,
 * the sweep of leftovers and the service's description for the daemon main (daemon.h:
 * options, .env, signals, listeners, health, port lines, shutdown).
 *
 * Transport only: each handler checks and converts the request (model paths confined to
 * --model-root, outputs to --output-root, identities resolved from prefixes), reads the
 * statistics from the store (one read snapshot) and calls one pruner function:
 *   ComputeKeepSet  reap_keepset_compute                    (serve_keepset.c; writes
 *                                                            nothing)
 *   Prune           reap_prune, streaming rewrite progress  (serve_prune.c; cancelled
 *                   when the client goes away or the server shuts down: the temporary
 *                   output is removed)
 *   Verify          reap_manifest_verify_dir (+ the manifest's own fields; serve_verify.c)
 * At start-up the leftovers of killed prunes in each output root are swept (outdir.h).
 * The signing key comes from --key (or REAP_SIGNING_KEY, e.g. a mounted secret file); its
 * public half (or --pubkey) is the default key of Verify.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pruner_serve_impl.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "serve_cmd.h"
#include "svc.h"

#define PROG PRUNER_PROG

/* The service and its options as parsed (the daemon's hooks read them). */
typedef struct pruner_main {
    pruner_svc S;
    const char *key_path, *pub_path, *criterion;
    cli_list model_roots, output_roots;
} pruner_main;

/* Options (exit status 2 when one is malformed), the keys (1 when one cannot be read),
 * the leftovers of prunes killed before this start. */
static int check(void *ud)
{
    pruner_main *M = ud;
    pruner_svc *S = &M->S;
    char err[1024];
    if (S->threads < 0 || S->max_prunes < 1) {
        fprintf(stderr, "%s: --threads must be >= 0 and --max-prunes >= 1\n", PROG);
        return 2;
    }
    if (reap_criterion_from_name(M->criterion, &S->criterion_default)) {
        fprintf(stderr, "%s: --criterion: %s\n", PROG, reap_err_msg());
        return 2;
    }
    reap_keep_opts parsed;   /* the range of a ratio is keepset.c's rule */
    if (S->ratio_default && reap_keep_opts_parse(S->ratio_default, NULL, NULL, 0, &parsed)) {
        fprintf(stderr, "%s: %s\n", PROG, reap_err_msg());
        return 2;
    }
    cli_list both = {0};
    char *both_v[64];
    both.v = both_v;
    for (int i = 0; i < M->output_roots.n && both.n < 64; i++)
        both.v[both.n++] = M->output_roots.v[i];
    for (int i = 0; i < M->model_roots.n && both.n < 64; i++)
        both.v[both.n++] = M->model_roots.v[i];
    if (svc_roots(&S->model_roots, "--model-root", &M->model_roots, err, sizeof err) ||
        svc_roots(&S->output_roots, "--output-root", &M->output_roots, err, sizeof err) ||
        svc_roots(&S->verify_roots, "--output-root/--model-root", &both, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", PROG, err);
        return 2;
    }
    S->model_fs = (reap_roots){(const char *const *)S->model_roots.dirs, S->model_roots.n};
    S->verify_fs = (reap_roots){(const char *const *)S->verify_roots.dirs, S->verify_roots.n};
    if (M->key_path) {
        if (reap_minisign_load_secret(M->key_path, &S->key)) {
            fprintf(stderr, "%s: --key: %s\n", PROG, reap_err_msg());
            return 1;
        }
        S->have_key = 1;
        reap_minisign_public_of(&S->key, &S->pub);
        S->have_pub = 1;
    }
    if (M->pub_path) {
        if (reap_minisign_load_public(M->pub_path, &S->pub)) {
            fprintf(stderr, "%s: --pubkey: %s\n", PROG, reap_err_msg());
            return 1;
        }
        S->have_pub = 1;
    }
    /* Leftovers of prunes killed before this start (this server's, or another's sharing
     * the volume: those whose lock is held are left alone). */
    for (int i = 0; i < S->output_roots.n; i++)
        if (reap_outdir_sweep(S->output_roots.dirs[i], NULL, pruner_log_leftover, NULL, NULL))
            svc_log(PROG, "--output-root: %s", reap_err_msg());
    return 0;
}

static void describe(void *ud, char *buf, size_t len)
{
    pruner_main *M = ud;
    snprintf(buf, len, "manifests %s", M->S.have_key ? "signed" : "unsigned");
}

static void on_shutdown(void *ud)
{
    (void)ud;
    svc_log(PROG, "shutting down: running prunes stop and remove their temporary output");
}

static const svc_daemon_info pruner_daemon = {
    .prog = PROG, .service = "reap.v1.Pruner", .env_prefix = "REAP_PRUNER",
    .synopsis = "reap-pruner serve --store DIR --model-root DIR --output-root DIR "
                "[--key FILE] [options]",
    .listen_default = "127.0.0.1:50052", .store_help = "score store directory",
};

static const svc_daemon_hooks pruner_hooks = {.check = check, .describe = describe,
                                              .on_shutdown = on_shutdown};

int pruner_cmd_serve(int argc, char **argv)
{
    pruner_main M;
    pruner_svc *S = &M.S;
    int ex;

    memset(&M, 0, sizeof M);
    pthread_mutex_init(&S->mu, NULL);
    const cli_opt mine[] = {
        {"model-root", "REAP_MODEL_PATH", CLI_LIST, NULL, "directory under which clients' "
         "model paths must lie", &M.model_roots, 1},
        {"output-root", "REAP_OUTPUT_PATH", CLI_LIST, NULL, "directory under which pruned "
         "checkpoints are written", &M.output_roots, 1},
        {"key", "REAP_SIGNING_KEY", CLI_STR, NULL, "minisign secret key file that signs "
         "manifests (e.g. a mounted secret; unsigned without)", &M.key_path, 0},
        {"pubkey", "REAP_PUBKEY", CLI_STR, NULL, "default public key of Verify (default: "
         "the public half of --key)", &M.pub_path, 0},
        {"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "default fraction of experts removed "
         "when a request gives neither ratio nor n_prune", &S->ratio_default, 0},
        {"criterion", "REAP_CRITERION", CLI_STR, "reap", "default criterion", &M.criterion,
         0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "hashing and verification threads (0: all "
         "cores)", &S->threads, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "skip the "
         "free-space check before writing the output (file systems that misreport free "
         "space)", &S->no_space_check, 0},
        {"max-prunes", "REAP_MAX_PRUNES", CLI_INT, "1", "prunes at once (more: "
         "RESOURCE_EXHAUSTED)", &S->max_prunes, 0},
    };
#define METHOD(name, kind, rq, rs, fn)                                                    \
    {"/reap.v1.Pruner/" name, kind, &reap__v1__##rq##__descriptor,                        \
     &reap__v1__##rs##__descriptor, fn, S, 0}
    const rpc_method methods[] = {
        METHOD("ComputeKeepSet", RPC_UNARY, keep_set_request, keep_set_response,
               pruner_serve_keepset),
        METHOD("Prune", RPC_SERVER_STREAM, prune_request, prune_event, pruner_serve_prune),
        METHOD("Verify", RPC_UNARY, verify_request, verify_response, pruner_serve_verify),
    };
#undef METHOD
    S->d = (svc_daemon){.info = &pruner_daemon, .hooks = &pruner_hooks, .ud = &M,
                        .opts = mine, .n_opts = (int)(sizeof mine / sizeof mine[0]),
                        .methods = methods, .n_methods = sizeof methods / sizeof methods[0]};
    ex = svc_daemon_run(&S->d, argc, argv);
    rpc_roots_free(&S->model_roots);
    rpc_roots_free(&S->output_roots);
    rpc_roots_free(&S->verify_roots);
    if (S->have_key)
        reap_sign_key_wipe(&S->key);
    for (int i = 0; i < S->n_active; i++)
        free(S->active[i]);
    free(S->active);
    pthread_mutex_destroy(&S->mu);
    return ex;
}

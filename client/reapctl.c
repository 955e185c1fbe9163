/* reapctl.c - the reap command-line client: dispatches to its subcommands.
 * To add a command: implement `int cmd_NAME(int argc, char **argv)` in its own file
 * client/cmd_NAME.c, declare it below and add one row to the table. */
#include <stdio.h>
#include <string.h>

#include "reapctl_cmds.h"
#include "reapctl_common.h"

int cmd_version(int argc, char **argv);
int cmd_keepset(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_health(int argc, char **argv);

const reapctl_cmd reapctl_commands[] = {
    {"version", cmd_version, "print the version"},
    {"keepset", cmd_keepset, "print the experts each MoE layer keeps (writes nothing)"},
    {"verify", cmd_verify, "check a pruned checkpoint against its signed manifest"},
    {"keygen", cmd_keygen, "make a minisign key pair for signing manifests"},
    {"tokenize", cmd_tokenize, "text (JSON Lines on stdin) to token ids with a tokenizer.json"},
    {"score", cmd_score, "score a checkpoint on the scorer service, following its progress"},
    {"watch", cmd_watch, "re-attach to a scoring run and follow it to its end"},
    {"runs", cmd_runs, "list scoring runs (queued, running, ended)"},
    {"cancel", cmd_cancel, "stop a scoring run at its next layer boundary"},
    {"models", cmd_models, "models and calibration sets in the score store"},
    {"stats", cmd_stats, "a model's per-layer statistics: table, --json, --svg heatmap"},
    {"prune", cmd_prune, "write a pruned, signed checkpoint on the pruner service"},
    {"health", cmd_health, "grpc.health.v1 status of the services"},
    {NULL, NULL, NULL},
};

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("reapctl %s\n", REAP_VERSION);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: reapctl [--scorer ADDR] [--pruner ADDR] [--token T] [--tls-ca FILE] "
               "COMMAND [options]\n       (COMMAND --help for its options)\n\n"
               "commands:\n");
    for (const reapctl_cmd *c = reapctl_commands; c->name; c++)
        fprintf(f, "  %-12s %s\n", c->name, c->help);
    fprintf(f, "\nglobal options (also accepted after the command; environment in brackets):\n"
               "  --scorer ADDR      scorer service, default 127.0.0.1:50051 [REAP_SCORER_ADDR]\n"
               "  --pruner ADDR      pruner service, default 127.0.0.1:50052 [REAP_PRUNER_ADDR]\n"
               "  --token T          bearer token [REAP_TOKEN]; --token-file F [REAP_TOKEN_FILE]\n"
               "  --tls-ca FILE      use TLS, verify the server with this CA [REAP_TLS_CA];\n"
               "                     --tls-cert/--tls-key for mTLS, --tls-server-name, --timeout-ms\n"
               "\nexit status: 0 ok; 1 local failure; 2 usage error; 3 a check failed (verify found\n"
               "problems, a service is not SERVING); 10 + gRPC code when the server ends a call\n"
               "with an error (e.g. 15 NOT_FOUND, 17 PERMISSION_DENIED, 24 UNAVAILABLE).\n");
}

int main(int argc, char **argv)
{
    char err[256];
    int k;
    /* Global options before the command become the environment of its options. */
    if (reapctl_globals(argc, argv, &k, err, sizeof err)) {
        fprintf(stderr, "reapctl: %s\n", err);
        return 2;
    }
    argc -= k - 1;
    argv += k - 1;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const reapctl_cmd *c = reapctl_commands; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->run(argc, argv);
    fprintf(stderr, "reapctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

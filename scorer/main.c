/* main.c - reap-scorer: dispatches to its subcommands. */
#include <stdio.h>
#include <string.h>

#include "fault.h"
#include "scorer_cmds.h"
#include "serve.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: reap-scorer COMMAND [options]\n\n"
               "commands:\n"
               "  run       score a checkpoint on calibration data in this process and\n"
               "            write per-layer REAP statistics; --store DIR commits each\n"
               "            layer to a score store and resumes after a crash\n"
               "  stats     merged statistics of a model from a store\n"
               "  list      models, calibration sets and runs in a store\n"
               "  export    write store records to a file (backup, shard merging)\n"
               "  import    read an export file into a store (verified, idempotent)\n"
               "  check     verify every record of a store\n"
               "  plan      CUDA device-memory plan for a model and calibration size\n"
               "  serve     the reap.v1.Scorer gRPC service over a store (serve --help)\n"
               "  version   print the version\n");
}

int main(int argc, char **argv)
{
    reap_fault_handlers_install("reap-scorer"); /* a damaged store: a message, not "Bus error" */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"run", scorer_cmd_run},       {"stats", scorer_cmd_stats},
                {"list", scorer_cmd_list},     {"export", scorer_cmd_export},
                {"import", scorer_cmd_import}, {"check", scorer_cmd_check},
                {"plan", scorer_cmd_plan},     {"serve", scorer_cmd_serve}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc, argv);
    if (!strcmp(argv[1], "version")) {
        printf("reap-scorer %s\n", REAP_VERSION);
        return 0;
    }
    fprintf(stderr, "reap-scorer: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

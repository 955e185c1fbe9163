/* main.c - reap-scorer: dispatches to its subcommands. */
#include <stdio.h>
#include <string.h>

#include "scorer_cmds.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: reap-scorer COMMAND [options]\n\n"
               "commands:\n"
               "  run       score a checkpoint on calibration data in this process and\n"
               "            write per-layer REAP statistics (see run --help)\n"
               "  version   print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "run"))
        return scorer_cmd_run(argc, argv);
    if (!strcmp(argv[1], "version")) {
        printf("reap-scorer %s\n", REAP_VERSION);
        return 0;
    }
    fprintf(stderr, "reap-scorer: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

/* reapctl.c - the reap command-line client: dispatches to its subcommands.
 * To add a command: implement `int cmd_NAME(int argc, char **argv)` in its own file
 * client/cmd_NAME.c, declare it below and add one row to the table. */
#include <stdio.h>
#include <string.h>

#include "reapctl_cmds.h"

int cmd_version(int argc, char **argv);
int cmd_keepset(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

const reapctl_cmd reapctl_commands[] = {
    {"version", cmd_version, "print the version"},
    {"keepset", cmd_keepset, "print the experts each MoE layer keeps (writes nothing)"},
    {"verify", cmd_verify, "check a pruned checkpoint against its signed manifest"},
    {"keygen", cmd_keygen, "make a minisign key pair for signing manifests"},
    {"tokenize", cmd_tokenize, "text (JSON Lines on stdin) to token ids with a tokenizer.json"},
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
    fprintf(f, "usage: reapctl COMMAND [options]   (COMMAND --help for its options)\n\n"
               "commands:\n");
    for (const reapctl_cmd *c = reapctl_commands; c->name; c++)
        fprintf(f, "  %-12s %s\n", c->name, c->help);
}

int main(int argc, char **argv)
{
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

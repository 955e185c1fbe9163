/* reapctl_cmds.h - the subcommands of reapctl. Each takes the whole argv (argv[1] is the
 * subcommand name) and returns the process exit status (0 ok, 1 failure, 2 usage). */
#ifndef REAP_REAPCTL_CMDS_H
#define REAP_REAPCTL_CMDS_H

typedef struct reapctl_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;   /* one line */
} reapctl_cmd;

/* Defined in reapctl.c: the table of commands, terminated by a {NULL} entry. */
extern const reapctl_cmd reapctl_commands[];

#endif

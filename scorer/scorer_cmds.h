/* scorer_cmds.h - the subcommands of the reap-scorer executable. Each takes the whole
 * argv (argv[1] is the subcommand name) and returns the process exit status. */
#ifndef REAP_SCORER_CMDS_H
#define REAP_SCORER_CMDS_H

int scorer_cmd_run(int argc, char **argv);

#endif

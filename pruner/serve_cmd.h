/* serve_cmd.h - `reap-pruner serve` (serve.c): the reap.v1.Pruner gRPC service. Takes the
 * whole argv (argv[1] is "serve"); returns the exit status (0 after a clean shutdown,
 * 1 on errors, 2 on usage errors). Runs until SIGTERM / SIGINT. */
#ifndef REAP_PRUNER_SERVE_CMD_H
#define REAP_PRUNER_SERVE_CMD_H

int pruner_cmd_serve(int argc, char **argv);

#endif

/* serve.h - `reap-scorer serve` (serve.c): the reap.v1.Scorer gRPC service. Takes the
 * whole argv (argv[1] is "serve"); returns the exit status (0 after a clean shutdown,
 * 1 on errors, 2 on usage errors). Runs until SIGTERM / SIGINT. */
#ifndef REAP_SCORER_SERVE_H
#define REAP_SCORER_SERVE_H

int scorer_cmd_serve(int argc, char **argv);

#endif

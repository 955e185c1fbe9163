/* daemon.h - the one main of the reap services (`reap-scorer serve`, `reap-pruner
 * serve`): a service describes itself in an svc_daemon (its name, its listen address
 * and environment variables, its own options, its hooks and its method table) and
 * svc_daemon_run does the rest, in this order:
 *
 *   options     the rpc server's (rpc_server_cli_options: listen, health, TLS, token,
 *               ...; `listen` and `health-listen` read the service's own variables so
 *               that both services may share one environment or .env file), then
 *               --store, the service's options, --env-file; parsed once (flag >
 *               environment > .env file > default); --help prints the usage
 *   check       the service validates its options (and prepares what needs no store)
 *   store       the score store opened (created if absent)
 *   setup       the service prepares what needs the store
 *   server      created with the service's on_shutdown hook; methods registered,
 *               signals installed, listeners started, health SERVING, the "port N" and
 *               "health-port N" lines on stdout (svc_start; tests and clients wait for
 *               them), the "serving <service> on port N (store DIR, ...)" log line
 *   started     the service's work that needs the server running (the scorer resumes
 *               interrupted runs)
 *   run         until SIGTERM / SIGINT: calls drain, on_shutdown is called
 *   stop        the service ends its own work (the scorer's runs commit and end), the
 *               server is freed, "shut down cleanly"
 *
 * Exit status (the return value): 0 after a clean shutdown and for --help, 2 for a usage
 * error (a malformed option; check returning 2), 1 for any other failure. Every message
 * is "<prog>: <text>" on stderr; log lines are svc_log's.
 *
 * Thread rules: call from main() before other threads start (cli_parse may setenv). The
 * hooks are called on the calling thread, except on_shutdown (the server's queue thread,
 * rpc_server.h).
 */
#ifndef REAP_SVC_DAEMON_H
#define REAP_SVC_DAEMON_H

#include <stddef.h>

#include "cli.h"
#include "rpc_server.h"
#include "store.h"

/* What a service is: fixed text, a static const in the service's main. */
typedef struct svc_daemon_info {
    const char *prog;              /* message prefix, e.g. "reap-scorer serve" */
    const char *service;           /* gRPC service name, e.g. "reap.v1.Scorer": health,
                                      --help and the "serving" line */
    const char *synopsis;          /* --help's usage line after "usage: " */
    const char *env_prefix;        /* --listen reads <prefix>_LISTEN, --health-listen
                                      <prefix>_HEALTH_LISTEN, e.g. "REAP_SCORER" */
    const char *listen_default;    /* e.g. "127.0.0.1:50051" */
    const char *store_help;        /* help of --store */
} svc_daemon_info;

/* The service's hooks, each called with svc_daemon.ud; any may be NULL. */
typedef struct svc_daemon_hooks {
    /* After parsing: validate the options. Returns 0 to go on, or the exit status (2
     * usage, 1 failure) after printing "<prog>: <why>". */
    int (*check)(void *ud);
    /* After the store is open (svc_daemon.store). Returns 0, or 1 after printing why. */
    int (*setup)(void *ud);
    /* The service's part of the "serving" line, after "store DIR, " (e.g. "manifests
     * signed"). */
    void (*describe)(void *ud, char *buf, size_t len);
    /* Once the server is serving (the "serving" line written). */
    void (*started)(void *ud);
    /* A shutdown began (SIGTERM / SIGINT): on the server's queue thread, as
     * rpc_server_opts.on_shutdown. */
    void (*on_shutdown)(void *ud);
    /* End the service's own work before the server and the store are freed: after the
     * server has stopped, or on a failure once the store is open. Called at most once. */
    void (*stop)(void *ud);
} svc_daemon_hooks;

typedef struct svc_daemon {
    /* ---- given by the service ---- */
    const svc_daemon_info *info;
    const svc_daemon_hooks *hooks;
    void *ud;                      /* passed to every hook */
    const cli_opt *opts;           /* the service's options (after --store) */
    int n_opts;
    const rpc_method *methods;     /* registered at start; their ud is the service's */
    size_t n_methods;
    reap_store_opts store_opts;    /* how the store is opened (read when it is opened,
                                      after check; `create` is always set) */

    /* ---- filled by svc_daemon_run, for the hooks and the handlers ---- */
    const char *store_dir;         /* --store */
    reap_store *store;             /* open from setup until svc_daemon_run returns */
    rpc_server *srv;               /* created before the methods can be called */
    rpc_server_opts so;            /* the server's options as parsed (so.tls_cert, ...) */
    char listen_env[64], health_listen_env[64];
} svc_daemon;

/* Run the service described by d (the fields it gives set, the others zero) with the
 * whole argv (argv[1] is the subcommand, "serve"). Returns the exit status above. */
int svc_daemon_run(svc_daemon *d, int argc, char **argv);

#endif

/* daemon.c - the one main of the reap services (daemon.h): options, store, server,
 * start, run, shutdown, cleanup; the services supply their options, hooks and methods. */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"
#include "svc.h"

/* Point the listen options at the service's own variables (both services may share one
 * environment / .env file). */
static void rename_listen_env(cli_opt *opts, int n, svc_daemon *d)
{
    snprintf(d->listen_env, sizeof d->listen_env, "%s_LISTEN", d->info->env_prefix);
    snprintf(d->health_listen_env, sizeof d->health_listen_env, "%s_HEALTH_LISTEN",
             d->info->env_prefix);
    for (int i = 0; i < n; i++) {
        if (!strcmp(opts[i].flag, "listen")) {
            opts[i].env = d->listen_env;
            opts[i].def = d->info->listen_default;
        } else if (!strcmp(opts[i].flag, "health-listen")) {
            opts[i].env = d->health_listen_env;
        }
    }
}

/* Start serving: methods, signals, listeners, health, the port lines, the log lines. */
static int daemon_start(svc_daemon *d)
{
    const svc_daemon_info *in = d->info;
    char detail[512] = "";
    int rc;
    svc_log_auth(in->prog, d->srv);   /* before the "port" line clients and tests wait for */
    if ((rc = svc_start(d->srv, in->service, d->methods, d->n_methods))) {
        fprintf(stderr, "%s: %s\n", in->prog, reap_err_msg());
        return rc;
    }
    if (d->hooks->describe)
        d->hooks->describe(d->ud, detail, sizeof detail);
    svc_log(in->prog, "serving %s on port %d (store %s%s%s)%s", in->service,
            rpc_server_port(d->srv), d->store_dir, *detail ? ", " : "", detail,
            d->so.tls_cert ? ", TLS" : "");
    if (d->hooks->started)
        d->hooks->started(d->ud);
    return REAP_OK;
}

int svc_daemon_run(svc_daemon *d, int argc, char **argv)
{
    const svc_daemon_info *in = d->info;
    const svc_daemon_hooks *h = d->hooks;
    const char *env_file = NULL;
    char err[1024], usage[1024];
    int n, help = 0, ex = 1, stopped = 0;
    reap_store_opts sto;
    cli_opt *opts = calloc((size_t)RPC_SERVER_CLI_N + (size_t)d->n_opts + 2, sizeof *opts);

    if (!opts) {
        fprintf(stderr, "%s: out of memory\n", in->prog);
        return 1;
    }
    d->store_dir = NULL;
    d->store = NULL;
    d->srv = NULL;
    memset(&d->so, 0, sizeof d->so);
    n = rpc_server_cli_options(&d->so, opts, RPC_SERVER_CLI_N);
    rename_listen_env(opts, n, d);
    opts[n++] = (cli_opt){"store", "REAP_STORE_PATH", CLI_STR, NULL, in->store_help,
                          &d->store_dir, 1};
    for (int i = 0; i < d->n_opts; i++)
        opts[n++] = d->opts[i];
    opts[n++] = (cli_opt){"env-file", "REAP_ENV_FILE", CLI_ENVFILE, ".env", "read KEY=VALUE "
                          "settings from this file (missing default: ignored)", &env_file, 0};
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", in->prog, err);
        ex = 2;
        goto out;
    }
    if (help) {
        snprintf(usage, sizeof usage, "usage: %s\n\nServe %s and grpc.health.v1 (flag > "
                 "environment > .env file > default)", in->synopsis, in->service);
        cli_usage(stdout, usage, opts, n);
        ex = 0;
        goto out;
    }
    if (h->check && (ex = h->check(d->ud)))
        goto out;
    ex = 1;
    sto = d->store_opts;
    sto.create = 1;
    if (reap_store_open(d->store_dir, &sto, &d->store)) {
        fprintf(stderr, "%s: --store: %s\n", in->prog, reap_err_msg());
        goto out;
    }
    if (h->setup && h->setup(d->ud))
        goto out;
    d->so.on_shutdown = h->on_shutdown;
    d->so.on_shutdown_ud = d->ud;
    if (rpc_server_create(&d->so, &d->srv)) {
        fprintf(stderr, "%s: %s\n", in->prog, reap_err_msg());
        goto out;
    }
    if (daemon_start(d))
        goto out;
    int rc = rpc_server_run(d->srv);
    if (rc)
        fprintf(stderr, "%s: %s\n", in->prog, reap_err_msg());
    /* Every call has ended (or, on a failure, some are still referenced); let the
     * service's own work end before the server and the store go. */
    if (h->stop)
        h->stop(d->ud);
    stopped = 1;
    if (rc) {
        d->srv = NULL;   /* calls still referenced: leave the server allocated */
        goto out;
    }
    rpc_server_free(d->srv);
    d->srv = NULL;
    svc_log(in->prog, "shut down cleanly");
    ex = 0;
out:
    if (!stopped && h->stop && d->store)
        h->stop(d->ud);
    rpc_server_free(d->srv);
    d->srv = NULL;
    reap_store_close(d->store);
    d->store = NULL;
    cli_free(opts, n);
    free(opts);
    return ex;
}

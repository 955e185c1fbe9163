/* test_daemon.c - the one daemon main (service/daemon.h) with a fake service: the exit
 * status of each way it ends (--help 0, a malformed option 2, check's own status, a
 * store that cannot be opened 1, a failed setup 1, a listener that cannot bind 1, a
 * clean SIGTERM 0), which hooks run in which order for each (stop exactly once whenever
 * the store was opened, never before), the "port N" line on stdout once serving, and
 * the listen variables named by the service's prefix in --help. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "reap_err.h"
#include "test_store_util.h"
#include "test_util.h"

typedef struct fake {
    svc_daemon d;
    int check_rc, setup_rc;
    char trace[256];   /* hooks in call order */
    int port_at_start; /* rpc_server_port when started */
} fake;

static void note(fake *f, const char *what)
{
    size_t n = strlen(f->trace);
    snprintf(f->trace + n, sizeof f->trace - n, "%s%s", n ? "," : "", what);
}

static int h_check(void *ud)
{
    fake *f = ud;
    note(f, "check");
    return f->check_rc;
}

static int h_setup(void *ud)
{
    fake *f = ud;
    note(f, f->d.store ? "setup" : "setup-without-store");
    return f->setup_rc;
}

static void h_describe(void *ud, char *buf, size_t len)
{
    note(ud, "describe");
    snprintf(buf, len, "fake detail");
}

static void h_started(void *ud)
{
    fake *f = ud;
    note(f, "started");
    f->port_at_start = rpc_server_port(f->d.srv);
    raise(SIGTERM);   /* the daemon installed the handler: a graceful shutdown */
}

static void h_on_shutdown(void *ud)
{
    note(ud, "on_shutdown");
}

static void h_stop(void *ud)
{
    note(ud, "stop");
}

static const svc_daemon_info info = {
    .prog = "test-d serve", .service = "reap.test.Fake", .env_prefix = "REAP_TESTD",
    .synopsis = "test-d serve --store DIR", .listen_default = "127.0.0.1:0",
    .store_help = "store directory",
};

static const svc_daemon_hooks hooks = {.check = h_check, .setup = h_setup,
                                       .describe = h_describe, .started = h_started,
                                       .on_shutdown = h_on_shutdown, .stop = h_stop};

/* Run the fake daemon with args (after "test-d serve"), stdout into out_path. */
static int run(fake *f, const char *out_path, const char *const *args)
{
    char *argv[16] = {"test-d", "serve"};
    int argc = 2;
    for (; args[argc - 2] && argc < 15; argc++)
        argv[argc] = (char *)args[argc - 2];
    argv[argc] = NULL;
    f->trace[0] = 0;
    f->port_at_start = -1;
    f->d = (svc_daemon){.info = &info, .hooks = &hooks, .ud = f};
    fflush(stdout);
    int saved = dup(1), fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    int ex = svc_daemon_run(&f->d, argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return ex;
}

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *fp = fopen(path, "r");
    size_t n = fp ? fread(buf, 1, len - 1, fp) : 0;
    buf[n] = 0;
    if (fp)
        fclose(fp);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp/test_daemon";
    char out[4200], store[4200], notdir[4200], bad_store[4200], text[8192];
    fake f;
    memset(&f, 0, sizeof f);
    rm_rf(dir);
    mkdir(dir, 0755);
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(store, sizeof store, "%s/store", dir);
    snprintf(notdir, sizeof notdir, "%s/file", dir);
    snprintf(bad_store, sizeof bad_store, "%s/file/store", dir);
    FILE *fp = fopen(notdir, "w");
    if (fp)
        fclose(fp);

    /* --help: the usage with the service's listen variables, nothing else runs. */
    CHECK(run(&f, out, (const char *[]){"--help", NULL}) == 0);
    slurp(out, text, sizeof text);
    CHECK_MSG(strstr(text, "usage: test-d serve --store DIR") &&
              strstr(text, "Serve reap.test.Fake and grpc.health.v1") &&
              strstr(text, "REAP_TESTD_LISTEN") && strstr(text, "REAP_TESTD_HEALTH_LISTEN") &&
              strstr(text, "--env-file"), "help: %s", text);
    CHECK(!strcmp(f.trace, ""));

    /* A malformed option: 2, no hook. */
    CHECK(run(&f, out, (const char *[]){"--store", store, "--bogus", NULL}) == 2);
    CHECK(!strcmp(f.trace, ""));
    /* --store is required: 2. */
    CHECK(run(&f, out, (const char *[]){NULL}) == 2);
    CHECK(!strcmp(f.trace, ""));

    /* check's status is the exit status; nothing after it runs. */
    f.check_rc = 2;
    CHECK(run(&f, out, (const char *[]){"--store", store, NULL}) == 2);
    CHECK_MSG(!strcmp(f.trace, "check"), "%s", f.trace);
    f.check_rc = 0;

    /* A store that cannot be created: 1, no setup, no stop. */
    CHECK(run(&f, out, (const char *[]){"--store", bad_store, NULL}) == 1);
    CHECK_MSG(!strcmp(f.trace, "check"), "%s", f.trace);

    /* A failed setup: 1, stop once (the store was open), no server. */
    f.setup_rc = 1;
    CHECK(run(&f, out, (const char *[]){"--store", store, NULL}) == 1);
    CHECK_MSG(!strcmp(f.trace, "check,setup,stop"), "%s", f.trace);
    f.setup_rc = 0;

    /* A listener that cannot bind (a file for a unix socket's directory): 1, stop once,
     * never started. */
    snprintf(text, sizeof text, "unix:%s/sock", notdir);
    CHECK(run(&f, out, (const char *[]){"--store", store, "--listen", text, NULL}) == 1);
    CHECK_MSG(!strcmp(f.trace, "check,setup,stop"), "%s", f.trace);

    /* Serving, then SIGTERM: the hooks in order, the port line, exit 0. */
    CHECK(run(&f, out, (const char *[]){"--store", store, NULL}) == 0);
    CHECK_MSG(!strcmp(f.trace, "check,setup,describe,started,on_shutdown,stop"), "%s",
              f.trace);
    slurp(out, text, sizeof text);
    char want[64];
    snprintf(want, sizeof want, "port %d\n", f.port_at_start);
    CHECK_MSG(f.port_at_start > 0 && !strcmp(text, want), "stdout '%s', port %d", text,
              f.port_at_start);
    signal(SIGTERM, SIG_DFL);
    TEST_MAIN_END();
}

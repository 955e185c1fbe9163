/* rpc_testd.c - a test server (and client) for the rpc/ framework.
 *
 *   rpc-testd serve [server options]      serve reap.test.v1.Demo + grpc.health.v1;
 *                                         prints "port N" (and "health-port N") on stdout
 *   rpc-testd client --target ADDR [--token T] [--tls-ca F ...] CMD ARGS
 *                                         call the server with rpc/rpc_client.c:
 *       echo TEXT | count N [INTERVAL_MS] | slow MS | health [SERVICE] | stop-after N
 *                                         prints the results and "status CODE message";
 *                                         exit 0 when the status is OK, else 1
 *
 * With `serve --gate FIFO`, an Echo of the text "wait-gate" holds its handler thread
 * until it has read one byte from the FIFO (EOF: the gate is open for good): a test pins
 * every worker this way, without relying on how long anything takes.
 *
 * Demo methods (tests/rpc_test.proto): Echo (unary, pool), Count (server streaming,
 * on the handler thread or a dedicated thread holding a call reference), Slow (unary
 * that polls for cancellation), Stats (counters). On shutdown, Count streams stop at
 * the next event and end UNAVAILABLE, as a scoring run stops at a layer boundary.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "health.pb-c.h"
#include "reap_err.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "rpc_test.pb-c.h"

static rpc_server *g_srv;
static const char *g_gate_path;
static int g_gate_fd = -1, g_gate_open;
static pthread_mutex_t g_gate_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_stopping;
static atomic_ullong g_slow_cancelled, g_count_cancelled;
static atomic_llong g_count_active, g_stream_bytes_max, g_slow_active;

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* ---- handlers ---------------------------------------------------------------------- */

/* Wait for one byte of the --gate FIFO. Unlike the layer gate, several handlers wait at
 * once: the FIFO is opened once (under the mutex), then each reads on its own. */
static void gate_wait(void)
{
    char c;
    int fd;
    pthread_mutex_lock(&g_gate_mu);
    if (!g_gate_open && g_gate_fd < 0 && g_gate_path)
        g_gate_fd = open(g_gate_path, O_RDONLY | O_CLOEXEC);
    fd = g_gate_open ? -1 : g_gate_fd;
    pthread_mutex_unlock(&g_gate_mu);
    if (fd < 0)
        return;
    if (read(fd, &c, 1) != 1) {
        pthread_mutex_lock(&g_gate_mu);
        g_gate_open = 1;
        pthread_mutex_unlock(&g_gate_mu);
    }
}

static int echo_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__Test__V1__EchoRequest *q = (const void *)req;
    Reap__Test__V1__EchoReply r = REAP__TEST__V1__ECHO_REPLY__INIT;
    (void)ud;
    if (q->text && !strcmp(q->text, "wait-gate"))
        gate_wait();
    if (q->fail_code > 0)
        return rpc_call_error(call, (rpc_code)q->fail_code, "%s", q->fail_message);
    if (q->reap_error < 0)
        return reap_err_set(q->reap_error, "echo: %s", q->fail_message);
    r.text = q->text;
    r.blob_size = q->blob.len;
    r.peer = (char *)rpc_call_peer(call);
    return rpc_call_respond(call, &r.base);
}

static int slow_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__Test__V1__SlowRequest *q = (const void *)req;
    Reap__Test__V1__SlowReply r = REAP__TEST__V1__SLOW_REPLY__INIT;
    double t0 = now_ms();
    (void)ud;
    atomic_fetch_add(&g_slow_active, 1);
    while (now_ms() - t0 < q->ms) {
        if (rpc_call_cancelled(call)) {
            atomic_fetch_add(&g_slow_cancelled, 1);
            r.cancelled = 1;
            break;
        }
        sleep_ms(5);
    }
    r.waited_ms = (uint32_t)(now_ms() - t0);
    atomic_fetch_sub(&g_slow_active, 1);
    return rpc_call_respond(call, &r.base);
}

static int stats_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    Reap__Test__V1__StatsReply r = REAP__TEST__V1__STATS_REPLY__INIT;
    rpc_server_stats st;
    (void)req;
    (void)ud;
    rpc_server_get_stats(g_srv, &st);
    r.calls_total = st.calls_total;
    r.calls_rejected = st.calls_rejected;
    r.calls_unauthenticated = st.calls_unauthenticated;
    r.calls_unimplemented = st.calls_unimplemented;
    r.calls_live = st.calls_live;
    r.queued = st.queued;
    r.stream_bytes = st.stream_bytes;
    r.slow_cancelled = atomic_load(&g_slow_cancelled);
    r.count_cancelled = atomic_load(&g_count_cancelled);
    r.rss_kb = rss_kb();
    r.count_active = atomic_load(&g_count_active);
    r.stream_bytes_max = atomic_load(&g_stream_bytes_max);
    r.slow_active = atomic_load(&g_slow_active);
    return rpc_call_respond(call, &r.base);
}

typedef struct count_job {
    rpc_call *call;
    const Reap__Test__V1__CountRequest *q;
} count_job;

/* The body of a Count stream; ends the call itself. */
static void count_run(rpc_call *call, const Reap__Test__V1__CountRequest *q)
{
    uint8_t *payload = calloc(q->payload_bytes ? q->payload_bytes : 1, 1);
    uint32_t i;
    atomic_fetch_add(&g_count_active, 1);
    if (!payload) {
        rpc_stream_finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (i = 0; i < q->n; i++) {
        Reap__Test__V1__CountEvent ev = REAP__TEST__V1__COUNT_EVENT__INIT;
        rpc_server_stats st;
        if (rpc_call_cancelled(call)) {
            atomic_fetch_add(&g_count_cancelled, 1);
            goto out;
        }
        if (atomic_load(&g_stopping)) {
            rpc_stream_finish(call, RPC_UNAVAILABLE, "server shutting down; stopped after %u",
                              i);
            goto out;
        }
        if (q->fail_after && i == q->fail_after) {
            rpc_stream_finish(call, (rpc_code)q->fail_code, "failed after %u events", i);
            goto out;
        }
        memset(payload, (int)(i & 0xff), q->payload_bytes);
        ev.i = i;
        ev.payload.data = payload;
        ev.payload.len = q->payload_bytes;
        ev.last = i + 1 == q->n;
        int rc = rpc_stream_send(call, &ev.base,
                                 q->progress && !ev.last ? RPC_SEND_PROGRESS
                                                         : RPC_SEND_RELIABLE);
        if (rc == REAP_E_CANCELLED) {
            atomic_fetch_add(&g_count_cancelled, 1);
            goto out;
        }
        if (rc) {
            rpc_stream_finish(call, RPC_INTERNAL, "send: %s", reap_err_msg());
            goto out;
        }
        rpc_server_get_stats(g_srv, &st);
        long long prev = atomic_load(&g_stream_bytes_max);
        while (st.stream_bytes > prev &&
               !atomic_compare_exchange_weak(&g_stream_bytes_max, &prev, st.stream_bytes))
            ;
        if (q->interval_ms)
            sleep_ms(q->interval_ms);
    }
    rpc_stream_finish(call, RPC_OK, NULL);
out:
    free(payload);
    atomic_fetch_sub(&g_count_active, 1);
}

static void *count_thread(void *arg)
{
    count_job *j = arg;
    count_run(j->call, j->q);
    rpc_call_unref(j->call);
    free(j);
    return NULL;
}

static int count_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__Test__V1__CountRequest *q = (const void *)req;
    (void)ud;
    if (q->payload_bytes > (8u << 20))
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "payload_bytes: at most 8 MiB");
    if (!q->detached) {
        count_run(call, q);
        return 0;
    }
    count_job *j = malloc(sizeof *j);
    pthread_t th;
    pthread_attr_t at;
    if (!j)
        return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
    j->call = call;
    j->q = q;
    rpc_call_ref(call);   /* the thread's reference: the request stays valid too */
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, count_thread, j)) {
        pthread_attr_destroy(&at);
        free(j);
        rpc_call_unref(call);
        return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "cannot start a thread");
    }
    pthread_attr_destroy(&at);
    return 0;
}

static void on_shutdown(void *ud)
{
    (void)ud;
    atomic_store(&g_stopping, 1);
}

static int serve(int argc, char **argv)
{
    rpc_server_opts so;
    const char *env_file = NULL;
    cli_opt opts[RPC_SERVER_CLI_N + 2];
    char err[512];
    int help, n, rc;

    memset(&so, 0, sizeof so);
    n = rpc_server_cli_options(&so, opts, RPC_SERVER_CLI_N);
    opts[n++] = (cli_opt){"gate", NULL, CLI_STR, NULL, "FIFO: Echo \"wait-gate\" waits for "
                          "one byte of it", &g_gate_path, 0};
    opts[n++] = (cli_opt){"env-file", "REAP_ENV_FILE", CLI_ENVFILE, NULL,
                          "read KEY=VALUE settings from this file", &env_file, 0};
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "rpc-testd: %s\n", err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: rpc-testd serve [options]", opts, n);
        return 0;
    }
    so.on_shutdown = on_shutdown;
    if ((rc = rpc_server_create(&so, &g_srv))) {
        fprintf(stderr, "rpc-testd: %s\n", reap_err_msg());
        return 1;
    }
    static const rpc_method methods[] = {
        {"/reap.test.v1.Demo/Echo", RPC_UNARY, &reap__test__v1__echo_request__descriptor,
         &reap__test__v1__echo_reply__descriptor, echo_handler, NULL, 0},
        {"/reap.test.v1.Demo/Count", RPC_SERVER_STREAM,
         &reap__test__v1__count_request__descriptor, &reap__test__v1__count_event__descriptor,
         count_handler, NULL, 0},
        {"/reap.test.v1.Demo/Slow", RPC_UNARY, &reap__test__v1__slow_request__descriptor,
         &reap__test__v1__slow_reply__descriptor, slow_handler, NULL, 0},
        {"/reap.test.v1.Demo/Stats", RPC_UNARY, &reap__test__v1__stats_request__descriptor,
         &reap__test__v1__stats_reply__descriptor, stats_handler, NULL, 0},
    };
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        if ((rc = rpc_server_add_method(g_srv, &methods[i])))
            goto fail;
    if ((rc = rpc_server_install_signals(g_srv)) || (rc = rpc_server_start(g_srv)))
        goto fail;
    rpc_health_set(g_srv, "", RPC_HEALTH_SERVING);
    rpc_health_set(g_srv, "reap.test.v1.Demo", RPC_HEALTH_SERVING);
    printf("port %d\n", rpc_server_port(g_srv));
    if (rpc_server_health_port(g_srv))
        printf("health-port %d\n", rpc_server_health_port(g_srv));
    fflush(stdout);
    if ((rc = rpc_server_run(g_srv))) {
        fprintf(stderr, "rpc-testd: %s\n", reap_err_msg());
        return 1;
    }
    /* Detached Count threads released their calls; let them return. */
    while (atomic_load(&g_count_active) > 0)
        sleep_ms(5);
    rpc_server_free(g_srv);
    fprintf(stderr, "rpc-testd: shut down cleanly\n");
    return 0;
fail:
    fprintf(stderr, "rpc-testd: %s\n", reap_err_msg());
    rpc_server_free(g_srv);
    return 1;
}

/* ---- client ------------------------------------------------------------------------ */

typedef struct count_ctx {
    int seen, stop_after;
} count_ctx;

static int on_count(const ProtobufCMessage *m, void *ud)
{
    const Reap__Test__V1__CountEvent *ev = (const void *)m;
    count_ctx *c = ud;
    printf("event %u%s\n", ev->i, ev->last ? " last" : "");
    c->seen++;
    return c->stop_after && c->seen >= c->stop_after;
}

static int client(int argc, char **argv)
{
    rpc_client_opts co;
    rpc_client *cl = NULL;
    rpc_client_status st;
    const char *target = NULL, *token = NULL, *ca = NULL, *cert = NULL, *key = NULL,
               *name = NULL;
    long timeout_ms = 10000;
    int a = 2;
    rpc_code code;

    memset(&co, 0, sizeof co);
    while (a + 1 < argc && !strncmp(argv[a], "--", 2)) {
        const char *f = argv[a] + 2, *v = argv[a + 1];
        if (!strcmp(f, "target")) target = v;
        else if (!strcmp(f, "token")) token = v;
        else if (!strcmp(f, "tls-ca")) ca = v;
        else if (!strcmp(f, "tls-cert")) cert = v;
        else if (!strcmp(f, "tls-key")) key = v;
        else if (!strcmp(f, "tls-server-name")) name = v;
        else if (!strcmp(f, "timeout-ms")) timeout_ms = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "rpc-testd client: unknown option --%s\n", f);
            return 2;
        }
        a += 2;
    }
    if (a >= argc) {
        fprintf(stderr, "rpc-testd client: missing command\n");
        return 2;
    }
    co.target = target;
    co.token = token;
    co.tls_ca = ca;
    co.tls_cert = cert;
    co.tls_key = key;
    co.tls_server_name = name;
    if (rpc_client_open(&co, &cl)) {
        fprintf(stderr, "rpc-testd client: %s\n", reap_err_msg());
        return 2;
    }
    const char *cmd = argv[a];
    const char *arg = a + 1 < argc ? argv[a + 1] : "";
    if (!strcmp(cmd, "echo")) {
        Reap__Test__V1__EchoRequest q = REAP__TEST__V1__ECHO_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        q.text = (char *)arg;
        code = rpc_client_unary(cl, "/reap.test.v1.Demo/Echo", &q.base,
                                &reap__test__v1__echo_reply__descriptor, timeout_ms, &resp, &st);
        if (code == RPC_OK)
            printf("echo %s\n", ((Reap__Test__V1__EchoReply *)resp)->text);
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
    } else if (!strcmp(cmd, "count") || !strcmp(cmd, "stop-after")) {
        Reap__Test__V1__CountRequest q = REAP__TEST__V1__COUNT_REQUEST__INIT;
        count_ctx cc = {0, 0};
        if (!strcmp(cmd, "count")) {
            q.n = (uint32_t)strtoul(arg, NULL, 10);
            q.interval_ms = a + 2 < argc ? (uint32_t)strtoul(argv[a + 2], NULL, 10) : 0;
        } else {
            q.n = 1000;
            q.interval_ms = 10;
            cc.stop_after = (int)strtol(arg, NULL, 10);
        }
        q.detached = 1;
        code = rpc_client_stream(cl, "/reap.test.v1.Demo/Count", &q.base,
                                 &reap__test__v1__count_event__descriptor, timeout_ms, on_count,
                                 &cc, &st);
        printf("events %d\n", cc.seen);
    } else if (!strcmp(cmd, "slow")) {
        Reap__Test__V1__SlowRequest q = REAP__TEST__V1__SLOW_REQUEST__INIT;
        q.ms = (uint32_t)strtoul(arg, NULL, 10);
        code = rpc_client_unary(cl, "/reap.test.v1.Demo/Slow", &q.base,
                                &reap__test__v1__slow_reply__descriptor, timeout_ms, NULL, &st);
    } else if (!strcmp(cmd, "health")) {
        Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        q.service = (char *)arg;
        code = rpc_client_unary(cl, "/grpc.health.v1.Health/Check", &q.base,
                                &grpc__health__v1__health_check_response__descriptor,
                                timeout_ms, &resp, &st);
        if (code == RPC_OK)
            printf("health %d\n", (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status);
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
    } else {
        fprintf(stderr, "rpc-testd client: unknown command '%s'\n", cmd);
        rpc_client_close(cl);
        return 2;
    }
    printf("status %s %s\n", rpc_code_name(st.code), st.message);
    rpc_client_close(cl);
    return code == RPC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return serve(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "client"))
        return client(argc, argv);
    fprintf(stderr, "usage: rpc-testd serve [options] | rpc-testd client --target ADDR ...\n");
    return 2;
}

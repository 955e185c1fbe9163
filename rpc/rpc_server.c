/* rpc_server.c - the server: listeners, the completion-queue loop, call dispatch
 * (auth, request decoding, catch-all UNIMPLEMENTED), graceful shutdown, signals and
 * the server's command-line options (rpc_server.h).
 *
 * The queue thread arms RPC_REQUESTS_PER_METHOD requests per registered method and a
 * catch-all per listener; when a call arrives it re-arms, starts the call's
 * RECV_CLOSE_ON_SERVER batch (the cancellation signal) and dispatches. It polls the
 * queue with a short deadline so that a shutdown request from a signal handler is seen
 * within RPC_POLL_MS.
 *
 * One file: the server's lifecycle (listeners, the queue loop, dispatch, graceful
 * shutdown and the signals that ask for it, its options) works on one rpc_server struct
 * and its states; a call's own life is rpc_call.c, health rpc_health.c, the handler
 * threads rpc_pool.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "cli.h"
#include "fsopen.h"
#include "reap_err.h"
#include "rpc_impl.h"

#define RPC_REQUESTS_PER_METHOD 4
#define RPC_POLL_MS 100
#define HEALTH_PREFIX "/grpc.health.v1.Health/"

_Static_assert(RPC_UNAUTHENTICATED == (int)GRPC_STATUS_UNAUTHENTICATED, "rpc_code values");
_Static_assert(RPC_RESOURCE_EXHAUSTED == (int)GRPC_STATUS_RESOURCE_EXHAUSTED, "rpc_code");
_Static_assert(RPC_UNIMPLEMENTED == (int)GRPC_STATUS_UNIMPLEMENTED, "rpc_code values");
_Static_assert(RPC_DATA_LOSS == (int)GRPC_STATUS_DATA_LOSS, "rpc_code values");

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Read a whole (small) file into a NUL-terminated string. */
static int read_text(const char *path, const char *what, char **out)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc;
    *out = NULL;
    if ((rc = reap_fopen_read(path, NULL, &f)))   /* a regular file: a FIFO never blocks */
        return reap_err_prefix(rc, "%s", what);
    for (;;) {
        if (n + 4096 + 1 > cap) {
            if (cap > (16u << 20)) {
                fclose(f);
                free(buf);
                return reap_err_set(REAP_E_INVALID, "%s '%s': larger than 16 MiB", what,
                                    path);
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                fclose(f);
                free(buf);
                return reap_err_set(REAP_E_NOMEM, "%s '%s': out of memory", what, path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return reap_err_set(REAP_E_IO, "%s '%s': read error", what, path);
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* What a PEM file given for TLS must hold: the marker looked for, and its name. */
typedef struct pem_kind {
    const char *marker, *name;
} pem_kind;
static const pem_kind PEM_CERT[1] = {{"-----BEGIN CERTIFICATE-----", "certificate"}};
static const pem_kind PEM_KEY[1] = {{"PRIVATE KEY-----", "private key"}};

/* read_text, then require the PEM marker of `kind`: REAP_E_INVALID "<what> '<path>': no
 * PEM <name>" without it (*out is kept for the caller to free either way). */
static int read_pem(const char *path, const char *what, const pem_kind *kind, char **out)
{
    int rc = read_text(path, what, out);
    if (rc)
        return rc;
    if (!strstr(*out, kind->marker))
        return reap_err_set(REAP_E_INVALID, "%s '%s': no PEM %s", what, path, kind->name);
    return REAP_OK;
}

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

int rpc_server_create(const rpc_server_opts *opts, rpc_server **out)
{
    rpc_server *s = calloc(1, sizeof *s);
    int rc;
    *out = NULL;
    if (!s)
        return reap_err_set(REAP_E_NOMEM, "rpc server: out of memory");
    if (opts)
        s->o = *opts;
    if (s->o.workers <= 0)
        s->o.workers = 4;
    if (s->o.max_queue <= 0)
        s->o.max_queue = 256;
    if (s->o.max_message_mb <= 0)
        s->o.max_message_mb = 64;
    if (s->o.max_message_mb > 1024)
        s->o.max_message_mb = 1024;
    if (s->o.stream_buffer_mb <= 0)
        s->o.stream_buffer_mb = 16;
    if (s->o.grace_ms == 0)
        s->o.grace_ms = 10000;
    else if (s->o.grace_ms < 0)
        s->o.grace_ms = 0;
    if (s->o.drain_timeout_ms <= 0)
        s->o.drain_timeout_ms = 60000;
    pthread_mutex_init(&s->health_mu, NULL);
    grpc_init();
    s->grpc_inited = 1;

    s->listen = strdup(s->o.listen && *s->o.listen ? s->o.listen : "127.0.0.1:50051");
    s->health_listen = dup_or_null(s->o.health_listen);
    if (!s->listen || (s->o.health_listen && *s->o.health_listen && !s->health_listen)) {
        rc = reap_err_set(REAP_E_NOMEM, "rpc server: out of memory");
        goto fail;
    }
    if ((s->o.tls_key && *s->o.tls_key) && !(s->o.tls_cert && *s->o.tls_cert)) {
        rc = reap_err_set(REAP_E_INVALID, "--tls-key given without --tls-cert");
        goto fail;
    }
    if ((s->o.tls_client_ca && *s->o.tls_client_ca) && !(s->o.tls_cert && *s->o.tls_cert)) {
        rc = reap_err_set(REAP_E_INVALID, "--tls-client-ca needs --tls-cert and --tls-key");
        goto fail;
    }
    if (s->o.tls_cert && *s->o.tls_cert) {
        if (!(s->o.tls_key && *s->o.tls_key)) {
            rc = reap_err_set(REAP_E_INVALID, "--tls-cert given without --tls-key");
            goto fail;
        }
        if ((rc = read_pem(s->o.tls_cert, "TLS certificate", PEM_CERT, &s->tls_cert_pem)) ||
            (rc = read_pem(s->o.tls_key, "TLS key", PEM_KEY, &s->tls_key_pem)))
            goto fail;
        if (s->o.tls_client_ca && *s->o.tls_client_ca &&
            (rc = read_pem(s->o.tls_client_ca, "TLS client CA", PEM_CERT, &s->tls_ca_pem)))
            goto fail;
    }
    if (s->o.token && *s->o.token) {
        s->token = strdup(s->o.token);
    } else if (s->o.token_file && *s->o.token_file) {
        if ((rc = read_text(s->o.token_file, "token file", &s->token)))
            goto fail;
        s->token[strcspn(s->token, "\r\n")] = '\0';
        if (!*s->token) {
            rc = reap_err_set(REAP_E_INVALID, "token file '%s' is empty", s->o.token_file);
            goto fail;
        }
    }
    /* The strings of the copied options now point to caller memory: keep only ours. */
    s->o.listen = s->listen;
    s->o.health_listen = s->health_listen;
    s->o.token = s->token;

    s->cq = grpc_completion_queue_create_for_next(NULL);
    if (!s->cq) {
        rc = reap_err_set(REAP_E_INTERNAL, "grpc: cannot create a completion queue");
        goto fail;
    }
    rpc_method check, watch;
    rpc_health_methods(s, &check, &watch);
    if ((rc = rpc_health_set(s, "", RPC_HEALTH_NOT_SERVING)) ||
        (rc = rpc_server_add_method(s, &check)) || (rc = rpc_server_add_method(s, &watch)))
        goto fail;
    *out = s;
    return 0;
fail:
    rpc_server_free(s);
    return rc;
}

int rpc_server_add_method(rpc_server *s, const rpc_method *m)
{
    const char *p = m ? m->path : NULL;
    if (s->started)
        return reap_err_set(REAP_E_INVALID, "rpc: method added after start");
    if (!p || p[0] != '/' || !strchr(p + 1, '/') || !m->handler || !m->req || !m->resp)
        return reap_err_set(REAP_E_INVALID, "rpc: bad method '%s'", p ? p : "(null)");
    for (int i = 0; i < s->n_methods; i++)
        if (!strcmp(s->methods[i].m.path, p))
            return reap_err_set(REAP_E_INVALID, "rpc: method '%s' added twice", p);
    if (s->n_methods == s->cap_methods) {
        int cap = s->cap_methods ? s->cap_methods * 2 : 16;
        rpc_method_ent *nm = realloc(s->methods, (size_t)cap * sizeof *nm);
        if (!nm)
            return reap_err_set(REAP_E_NOMEM, "rpc: out of memory");
        s->methods = nm;
        s->cap_methods = cap;
    }
    rpc_method_ent *e = &s->methods[s->n_methods++];
    memset(e, 0, sizeof *e);
    e->m = *m;
    if (strncmp(p, HEALTH_PREFIX, strlen(HEALTH_PREFIX))) {
        /* Service name = the text between the two slashes. */
        char svc[256];
        size_t len = (size_t)(strchr(p + 1, '/') - (p + 1));
        if (len >= sizeof svc)
            len = sizeof svc - 1;
        memcpy(svc, p + 1, len);
        svc[len] = '\0';
        pthread_mutex_lock(&s->health_mu);
        int known = 0;
        for (int i = 0; i < s->n_health; i++)
            known |= !strcmp(s->health[i].service, svc);
        pthread_mutex_unlock(&s->health_mu);
        if (!known)
            return rpc_health_set(s, svc, RPC_HEALTH_NOT_SERVING);
    }
    return 0;
}

/* ---- requests ---------------------------------------------------------------------- */

static int is_health(const char *path)
{
    return !strncmp(path, HEALTH_PREFIX, strlen(HEALTH_PREFIX));
}

static void arm(rpc_listener *l, int mi)
{
    rpc_server *s = l->srv;
    rpc_req *r = calloc(1, sizeof *r);
    grpc_call_error e;
    if (!r) {
        fprintf(stderr, "rpc: out of memory arming a request\n");
        return;
    }
    r->tag.kind = TAG_REQUEST;
    r->tag.ptr = r;
    r->l = l;
    r->mi = mi;
    grpc_metadata_array_init(&r->md);
    if (mi >= 0) {
        e = grpc_server_request_registered_call(l->gs, s->methods[mi].reg[l->idx], &r->call,
                                                &r->deadline, &r->md, &r->payload, s->cq,
                                                s->cq, &r->tag);
    } else {
        grpc_call_details_init(&r->details);
        e = grpc_server_request_call(l->gs, &r->call, &r->details, &r->md, s->cq, s->cq,
                                     &r->tag);
    }
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "rpc: cannot arm a request (%d)\n", (int)e);
        grpc_metadata_array_destroy(&r->md);
        if (mi < 0)
            grpc_call_details_destroy(&r->details);
        free(r);
        return;
    }
    s->pending_requests++;
}

static void req_free(rpc_req *r)
{
    grpc_metadata_array_destroy(&r->md);
    if (r->mi < 0)
        grpc_call_details_destroy(&r->details);
    if (r->payload)
        grpc_byte_buffer_destroy(r->payload);
    free(r);
}

/* Constant-time check of `authorization: Bearer <token>`. */
static int token_ok(const rpc_server *s, const grpc_metadata_array *md)
{
    if (!s->token)
        return 1;
    size_t tl = strlen(s->token);
    int ok = 0;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (grpc_slice_str_cmp(m->key, "authorization"))
            continue;
        const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
        size_t vl = GRPC_SLICE_LENGTH(m->value);
        if (vl != 7 + tl || strncasecmp(v, "Bearer ", 7))
            continue;
        unsigned char diff = 0;
        for (size_t k = 0; k < tl; k++)
            diff |= (unsigned char)(v[7 + k] ^ s->token[k]);
        ok |= diff == 0;
    }
    return ok;
}

static void on_request(rpc_server *s, rpc_req *r, int ok)
{
    rpc_listener *l = r->l;
    rpc_call *c;
    char path[512];

    s->pending_requests--;
    if (!ok) {   /* shutting down: the request was never matched */
        req_free(r);
        return;
    }
    if (!atomic_load(&s->draining))
        arm(l, r->mi);

    if (r->mi >= 0) {
        snprintf(path, sizeof path, "%s", s->methods[r->mi].m.path);
    } else {
        size_t n = GRPC_SLICE_LENGTH(r->details.method);
        if (n >= sizeof path)
            n = sizeof path - 1;
        memcpy(path, GRPC_SLICE_START_PTR(r->details.method), n);
        path[n] = '\0';
    }
    c = rpc_call_new(s, r->mi >= 0 ? &s->methods[r->mi] : NULL, r->call, path);
    if (!c) {
        grpc_call_cancel_with_status(r->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        grpc_call_unref(r->call);
        req_free(r);
        return;
    }
    atomic_fetch_add(&s->calls_total, 1);
    if (rpc_call_start_close(c)) {
        rpc_call_unref_internal(c);
        req_free(r);
        return;
    }
    if (!is_health(path) && !token_ok(s, &r->md)) {
        atomic_fetch_add(&s->calls_unauth, 1);
        rpc_call_finish(c, RPC_UNAUTHENTICATED, "missing or invalid bearer token");
        goto release;
    }
    if (r->mi < 0) {
        atomic_fetch_add(&s->calls_unimpl, 1);
        char msg[600];
        snprintf(msg, sizeof msg, "unknown method %s", path);
        rpc_call_finish(c, RPC_UNIMPLEMENTED, msg);
        goto release;
    }

    const rpc_method *m = &s->methods[r->mi].m;
    if (!r->payload) {
        rpc_call_finish(c, RPC_INVALID_ARGUMENT, "missing request message");
        goto release;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, r->payload)) {
        rpc_call_finish(c, RPC_INVALID_ARGUMENT, "request message cannot be decompressed");
        goto release;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    c->req = protobuf_c_message_unpack(m->req, NULL, GRPC_SLICE_LENGTH(sl),
                                       GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    if (!c->req) {
        char msg[512];
        snprintf(msg, sizeof msg, "malformed request: not a valid %s message",
                 m->req->name);
        rpc_call_finish(c, RPC_INVALID_ARGUMENT, msg);
        goto release;
    }
    req_free(r);
    if (m->flags & RPC_METHOD_INLINE) {
        rpc_call_run_handler(c);   /* consumes the dispatch reference */
        return;
    }
    if (rpc_pool_push(&s->pool, c)) {
        atomic_fetch_add(&s->calls_rejected, 1);
        rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED,
                        atomic_load(&s->draining) ? "server shutting down"
                                                  : "server busy: the job queue is full");
        rpc_call_unref_internal(c);
    }
    return;
release:
    req_free(r);
    rpc_call_unref_internal(c);
}

/* ---- start ------------------------------------------------------------------------- */

static int open_listener(rpc_server *s, int idx, const char *addr, int health_only)
{
    rpc_listener *l = &s->lst[idx];
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = health_only ? 64 * 1024 : (int)(s->o.max_message_mb << 20);
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = -1;
    grpc_channel_args ca = {3, args};

    l->srv = s;
    l->idx = idx;
    l->health_only = health_only;
    l->tag_shutdown.kind = TAG_SHUTDOWN;
    l->tag_shutdown.ptr = l;
    l->gs = grpc_server_create(&ca, NULL);
    if (!l->gs)
        return reap_err_set(REAP_E_INTERNAL, "grpc: cannot create a server");
    grpc_server_register_completion_queue(l->gs, s->cq, NULL);
    for (int i = 0; i < s->n_methods; i++) {
        if (health_only && !is_health(s->methods[i].m.path))
            continue;
        s->methods[i].reg[idx] = grpc_server_register_method(
            l->gs, s->methods[i].m.path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->methods[i].reg[idx])
            return reap_err_set(REAP_E_INTERNAL, "grpc: cannot register %s",
                                s->methods[i].m.path);
    }
    grpc_server_credentials *cr;
    if (!health_only && s->tls_cert_pem) {
        grpc_ssl_pem_key_cert_pair pair = {s->tls_key_pem, s->tls_cert_pem};
        cr = grpc_ssl_server_credentials_create_ex(
            s->tls_ca_pem, &pair, 1,
            s->tls_ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
    } else {
        cr = grpc_insecure_server_credentials_create();
    }
    if (!cr)
        return reap_err_set(REAP_E_INVALID, "grpc: invalid TLS credentials");
    l->port = grpc_server_add_http2_port(l->gs, addr, cr);
    grpc_server_credentials_release(cr);
    if (l->port <= 0)
        return reap_err_set(REAP_E_IO, "cannot listen on %s (address in use or invalid)",
                            addr);
    return 0;
}

int rpc_server_start(rpc_server *s)
{
    int rc;
    if (s->started)
        return reap_err_set(REAP_E_INVALID, "rpc: server started twice");
    if ((rc = open_listener(s, 0, s->listen, 0)))
        goto fail;
    s->n_lst = 1;
    if (s->health_listen) {
        if ((rc = open_listener(s, 1, s->health_listen, 1)))
            goto fail;
        s->n_lst = 2;
    }
    s->pool.on_change = rpc_health_pool_changed;
    s->pool.on_change_ud = s;
    if (rpc_pool_init(&s->pool, (int)s->o.workers, (int)s->o.max_queue)) {
        rc = reap_err_set(REAP_E_NOMEM, "rpc: cannot start %ld worker threads",
                          s->o.workers);
        goto fail;
    }
    for (int i = 0; i < s->n_lst; i++)
        grpc_server_start(s->lst[i].gs);
    s->started = 1;
    for (int i = 0; i < s->n_lst; i++) {
        for (int mi = 0; mi < s->n_methods; mi++)
            if (s->methods[mi].reg[i])
                for (int k = 0; k < RPC_REQUESTS_PER_METHOD; k++)
                    arm(&s->lst[i], mi);
        arm(&s->lst[i], -1);
        arm(&s->lst[i], -1);
    }
    return 0;
fail:
    /* Never started: the grpc servers can be destroyed after a trivial shutdown. */
    for (int i = 0; i < 2; i++) {
        if (!s->lst[i].gs)
            continue;
        grpc_server_shutdown_and_notify(s->lst[i].gs, s->cq, &s->lst[i].tag_shutdown);
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_seconds(5, GPR_TIMESPAN));
        grpc_event ev;
        do
            ev = grpc_completion_queue_next(s->cq, until, NULL);
        while (ev.type == GRPC_OP_COMPLETE && ev.tag != &s->lst[i].tag_shutdown);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;   /* not shut down: leak it rather than destroy it live */
        grpc_server_destroy(s->lst[i].gs);
        s->lst[i].gs = NULL;
    }
    s->n_lst = 0;
    return rc;
}

int rpc_server_port(const rpc_server *s) { return s->n_lst > 0 ? s->lst[0].port : 0; }
int rpc_server_health_port(const rpc_server *s) { return s->n_lst > 1 ? s->lst[1].port : 0; }
int rpc_server_auth_required(const rpc_server *s) { return s->token != NULL; }

/* ---- run / shutdown ---------------------------------------------------------------- */

void rpc_server_request_shutdown(rpc_server *s) { s->stop_req = 1; }

int rpc_server_draining(const rpc_server *s)
{
    return atomic_load(&((rpc_server *)s)->draining);
}

static void begin_shutdown(rpc_server *s)
{
    atomic_store(&s->draining, 1);
    rpc_health_shutdown(s);
    if (s->o.on_shutdown)
        s->o.on_shutdown(s->o.on_shutdown_ud);
    for (int i = 0; i < s->n_lst; i++)
        grpc_server_shutdown_and_notify(s->lst[i].gs, s->cq, &s->lst[i].tag_shutdown);
}

static void handle_event(rpc_server *s, grpc_event ev)
{
    rpc_tag *t = ev.tag;
    switch (t->kind) {
    case TAG_REQUEST: on_request(s, t->ptr, ev.success); break;
    case TAG_CLOSE: rpc_call_on_close(t->ptr, ev.success); break;
    case TAG_SEND: rpc_call_on_send(t->ptr, ev.success); break;
    case TAG_SHUTDOWN: ((rpc_listener *)t->ptr)->shutdown_done = 1; break;
    }
}

/* Shut the completion queue down, take events until it says so, and destroy it. */
static void cq_close(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(cq);
}

int rpc_server_run(rpc_server *s)
{
    double t_drain = 0, t_cancel = 0;
    int cancelled_all = 0;
    if (!s->started)
        return reap_err_set(REAP_E_INVALID, "rpc: server not started");
    if (s->run_done)
        return 0;
    for (;;) {
        if (s->stop_req && !atomic_load(&s->draining)) {
            begin_shutdown(s);
            t_drain = now_ms();
        }
        if (atomic_load(&s->draining)) {
            int all_down = 1;
            for (int i = 0; i < s->n_lst; i++)
                all_down &= s->lst[i].shutdown_done;
            if (all_down && atomic_load(&s->calls_live) == 0 && s->pending_requests == 0)
                break;
            if (!cancelled_all && now_ms() - t_drain >= (double)s->o.grace_ms) {
                for (int i = 0; i < s->n_lst; i++)
                    grpc_server_cancel_all_calls(s->lst[i].gs);
                cancelled_all = 1;
                t_cancel = now_ms();
            }
            if (cancelled_all && now_ms() - t_cancel > (double)s->o.drain_timeout_ms) {
                fprintf(stderr, "rpc: %lld calls still referenced %ld ms after cancelling; "
                                "giving up the drain\n",
                        (long long)atomic_load(&s->calls_live), s->o.drain_timeout_ms);
                return reap_err_set(REAP_E_INTERNAL, "shutdown: calls still referenced");
            }
        }
        grpc_event ev = grpc_completion_queue_next(
            s->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(RPC_POLL_MS, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            handle_event(s, ev);
        else if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    rpc_pool_stop(&s->pool);
    for (int i = 0; i < s->n_lst; i++) {
        grpc_server_destroy(s->lst[i].gs);
        s->lst[i].gs = NULL;
    }
    cq_close(s->cq);
    s->cq = NULL;
    s->run_done = 1;
    return 0;
}

void rpc_server_free(rpc_server *s)
{
    if (!s)
        return;
    if (s->started && !s->run_done) {
        s->o.grace_ms = 0;
        s->stop_req = 1;
        if (rpc_server_run(s))
            return;   /* references still held: leak rather than free live memory */
    }
    if (s->cq)
        cq_close(s->cq);
    rpc_pool_stop(&s->pool);   /* no-op when stopped or never started; its workers call
                                  into health, which is freed next */
    rpc_health_free(s);
    free(s->methods);
    free(s->listen);
    free(s->health_listen);
    free(s->token);
    free(s->tls_cert_pem);
    if (s->tls_key_pem) {
        memset(s->tls_key_pem, 0, strlen(s->tls_key_pem));
        free(s->tls_key_pem);
    }
    free(s->tls_ca_pem);
    pthread_mutex_destroy(&s->health_mu);
    if (s->grpc_inited)
        grpc_shutdown();
    free(s);
}

void rpc_server_get_stats(rpc_server *s, rpc_server_stats *out)
{
    out->calls_total = atomic_load(&s->calls_total);
    out->calls_rejected = atomic_load(&s->calls_rejected);
    out->calls_unauthenticated = atomic_load(&s->calls_unauth);
    out->calls_unimplemented = atomic_load(&s->calls_unimpl);
    out->calls_live = atomic_load(&s->calls_live);
    out->queued = s->started && !s->run_done ? rpc_pool_queued(&s->pool) : 0;
    out->stream_bytes = atomic_load(&s->queued_bytes);
}

/* ---- signals ----------------------------------------------------------------------- */

static rpc_server *volatile g_signal_server;

static void on_signal(int sig)
{
    (void)sig;
    rpc_server *s = g_signal_server;
    if (s)
        s->stop_req = 1;
}

int rpc_server_install_signals(rpc_server *s)
{
    struct sigaction sa;
    g_signal_server = s;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
        return reap_err_set(REAP_E_IO, "sigaction: %s", strerror(errno));
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL))
        return reap_err_set(REAP_E_IO, "sigaction: %s", strerror(errno));
    return 0;
}

/* ---- options ----------------------------------------------------------------------- */

int rpc_server_cli_options(rpc_server_opts *o, cli_opt *opts, int cap)
{
    const cli_opt table[RPC_SERVER_CLI_N] = {
        {"listen", "REAP_LISTEN", CLI_STR, "127.0.0.1:50051",
         "address to serve on, HOST:PORT (port 0 picks a free one)", &o->listen, 0},
        {"health-listen", "REAP_HEALTH_LISTEN", CLI_STR, NULL,
         "extra plaintext listener serving only grpc.health.v1 (probes)", &o->health_listen,
         0},
        {"tls-cert", "REAP_TLS_CERT", CLI_STR, NULL, "PEM server certificate (enables TLS)",
         &o->tls_cert, 0},
        {"tls-key", "REAP_TLS_KEY", CLI_STR, NULL, "PEM private key of --tls-cert",
         &o->tls_key, 0},
        {"tls-client-ca", "REAP_TLS_CLIENT_CA", CLI_STR, NULL,
         "PEM CA: require client certificates signed by it (mTLS)", &o->tls_client_ca, 0},
        {"token", "REAP_TOKEN", CLI_STR, NULL,
         "require 'authorization: Bearer TOKEN' on every call but health (neither this "
         "nor --token-file: no authentication, logged at start; empty: refused)",
         &o->token, CLI_NONEMPTY},
        {"token-file", "REAP_TOKEN_FILE", CLI_STR, NULL, "read the bearer token from a file",
         &o->token_file, CLI_NONEMPTY},
        {"workers", "REAP_WORKERS", CLI_INT, "4", "request handler threads", &o->workers, 0},
        {"health-stall-ms", "REAP_HEALTH_STALL_MS", CLI_INT, "5000",
         "health NOT_SERVING while every handler thread is busy and a call has waited this "
         "long (0: any waiting call; -1: never)", &o->health_stall_ms, 0},
        {"max-queue", "REAP_MAX_QUEUE", CLI_INT, "256",
         "requests waiting for a handler before RESOURCE_EXHAUSTED", &o->max_queue, 0},
        {"max-message-mb", "REAP_MAX_MESSAGE_MB", CLI_INT, "64",
         "largest request message accepted (MiB)", &o->max_message_mb, 0},
        {"stream-buffer-mb", "REAP_STREAM_BUFFER_MB", CLI_INT, "16",
         "unsent stream data per call before the call is dropped (MiB)",
         &o->stream_buffer_mb, 0},
        {"grace-ms", "REAP_GRACE_MS", CLI_INT, "10000",
         "on SIGTERM: time calls get to finish before they are cancelled (ms)",
         &o->grace_ms, 0},
    };
    int n = cap < RPC_SERVER_CLI_N ? cap : RPC_SERVER_CLI_N;
    for (int i = 0; i < n; i++)
        opts[i] = table[i];
    return n;
}

/* rpc_call.c - call contexts: reference counting, the outgoing message queue with one
 * write in flight, finishing, cancellation, and running handlers (rpc_server.h).
 *
 * Every send goes through kick_locked(): under the call's mutex, if no batch is in
 * flight it starts one carrying the initial metadata (first time), the head of the
 * queue, and the status when the call is finishing and that message is the last. The
 * queue thread calls rpc_call_on_send when a batch completes, which kicks again. Worker
 * threads therefore never wait for the network.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>

#include "reap_err.h"
#include "rpc_impl.h"

#define RPC_MSG_MAX 1024

rpc_call *rpc_call_new(rpc_server *s, const rpc_method_ent *me, grpc_call *gc,
                       const char *method)
{
    rpc_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->mu, NULL)) {
        free(c);
        return NULL;
    }
    c->srv = s;
    c->me = me;
    c->gc = gc;
    c->method = strdup(method ? method : "");
    c->peer = grpc_call_get_peer(gc);
    c->refs = 1;   /* the dispatch reference */
    c->tag_close.kind = TAG_CLOSE;
    c->tag_close.ptr = c;
    c->tag_send.kind = TAG_SEND;
    c->tag_send.ptr = c;
    atomic_fetch_add(&s->calls_live, 1);
    return c;
}

static void msg_free(rpc_msg *m)
{
    if (!m)
        return;
    if (m->bb)
        grpc_byte_buffer_destroy(m->bb);
    free(m);
}

static void drop_queue_locked(rpc_call *c)
{
    rpc_msg *m = c->head;
    while (m) {
        rpc_msg *n = m->next;
        atomic_fetch_sub(&c->srv->queued_bytes, (long long)m->len);
        msg_free(m);
        m = n;
    }
    c->head = c->tail = NULL;
    c->queued_bytes = 0;
}

static void call_destroy(rpc_call *c)
{
    rpc_server *s = c->srv;
    drop_queue_locked(c);
    msg_free(c->in_flight);
    if (c->final_slice_set)
        grpc_slice_unref(c->final_slice);
    if (c->req)
        protobuf_c_message_free_unpacked(c->req, NULL);
    grpc_call_unref(c->gc);
    gpr_free(c->peer);
    free(c->method);
    free(c->final_msg);
    free(c->err_msg);
    pthread_mutex_destroy(&c->mu);
    free(c);
    atomic_fetch_sub(&s->calls_live, 1);
}

void rpc_call_unref_internal(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        call_destroy(c);
}

/* Start the next batch if none is in flight. Called with c->mu held. */
static void kick_locked(rpc_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    rpc_msg *m = NULL;
    int with_status = 0;

    if (c->send_in_flight || c->status_sent || c->status_in_flight || c->dead ||
        (c->closed && c->close_cancelled))
        return;
    if (c->head) {
        m = c->head;
        c->head = m->next;
        if (!c->head)
            c->tail = NULL;
        m->next = NULL;
        c->queued_bytes -= m->len;
        atomic_fetch_sub(&c->srv->queued_bytes, (long long)m->len);
    }
    if (c->finish_requested && !c->head)
        with_status = 1;
    if (!m && !with_status)
        return;

    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
    }
    if (m) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = m->bb;
        n++;
    }
    if (with_status) {
        c->final_slice = grpc_slice_from_copied_string(c->final_msg ? c->final_msg : "");
        c->final_slice_set = 1;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)c->final_code;
        ops[n].data.send_status_from_server.status_details = &c->final_slice;
        ops[n].data.send_status_from_server.trailing_metadata_count = 0;
        n++;
    }
    c->refs++;
    c->send_in_flight = 1;
    c->in_flight = m;
    c->status_in_flight = with_status;
    grpc_call_error e = grpc_call_start_batch(c->gc, ops, n, &c->tag_send, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "rpc: %s: grpc_call_start_batch failed (%d)\n", c->method, (int)e);
        c->refs--;
        c->send_in_flight = 0;
        c->status_in_flight = 0;
        c->in_flight = NULL;
        msg_free(m);
        c->dead = 1;
        drop_queue_locked(c);
        return;
    }
    c->md_sent = 1;
}

void rpc_call_on_send(rpc_call *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    c->send_in_flight = 0;
    msg_free(c->in_flight);
    c->in_flight = NULL;
    if (c->status_in_flight) {
        c->status_in_flight = 0;
        c->status_sent = 1;
    }
    if (!ok) {
        c->dead = 1;
        drop_queue_locked(c);
    } else {
        kick_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    rpc_call_unref_internal(c);
}

int rpc_call_start_close(rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    if (grpc_call_start_batch(c->gc, &op, 1, &c->tag_close, NULL) != GRPC_CALL_OK) {
        pthread_mutex_lock(&c->mu);
        c->refs--;
        c->dead = 1;
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    return 0;
}

void rpc_call_on_close(rpc_call *c, int ok)
{
    void (*fn)(rpc_call *, void *) = NULL;
    void *ud = NULL;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    if (!ok)
        c->close_cancelled = 1;
    if (c->close_cancelled) {
        drop_queue_locked(c);
        fn = c->on_cancel;
        ud = c->on_cancel_ud;
        c->on_cancel = NULL;
    }
    /* Keep the callback's call alive while it runs. */
    if (fn)
        c->refs++;
    pthread_mutex_unlock(&c->mu);
    if (fn) {
        fn(c, ud);
        rpc_call_unref_internal(c);
    }
    rpc_call_unref_internal(c);
}

/* Record the final status; the first finish wins. Called with c->mu held. */
static void finish_locked(rpc_call *c, rpc_code code, const char *msg)
{
    if (c->finish_requested)
        return;
    c->finish_requested = 1;
    c->final_code = code;
    c->final_msg = strdup(msg ? msg : "");
    /* Server-side failures (not the client's) are worth a line on stderr. */
    if (!c->dead && !(c->closed && c->close_cancelled) &&
        (code == RPC_INTERNAL || code == RPC_UNKNOWN || code == RPC_DATA_LOSS))
        fprintf(stderr, "rpc: %s from %s: %s: %s\n", c->method, c->peer ? c->peer : "?",
                rpc_code_name(code), msg ? msg : "");
    kick_locked(c);
}

void rpc_call_finish(rpc_call *c, rpc_code code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    finish_locked(c, code, msg);
    pthread_mutex_unlock(&c->mu);
}

static int pack_msg(const ProtobufCMessage *msg, rpc_msg **out)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    rpc_msg *m = calloc(1, sizeof *m);
    if (!m)
        return REAP_E_NOMEM;
    grpc_slice sl = grpc_slice_malloc(len);
    size_t packed = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(sl));
    if (packed != len) {
        grpc_slice_unref(sl);
        free(m);
        return reap_err_set(REAP_E_INTERNAL, "protobuf pack size mismatch");
    }
    m->bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    m->len = len;
    *out = m;
    return 0;
}

static void enqueue_locked(rpc_call *c, rpc_msg *m)
{
    if (m->progress && c->tail && c->tail->progress) {
        /* Latest wins: replace the unsent progress message at the tail. */
        rpc_msg *old = c->tail;
        m->next = NULL;
        if (c->head == old) {
            c->head = c->tail = m;
        } else {
            rpc_msg *p = c->head;
            while (p->next != old)
                p = p->next;
            p->next = m;
            c->tail = m;
        }
        c->queued_bytes -= old->len;
        atomic_fetch_sub(&c->srv->queued_bytes, (long long)old->len);
        msg_free(old);
    } else {
        if (c->tail)
            c->tail->next = m;
        else
            c->head = m;
        c->tail = m;
    }
    c->queued_bytes += m->len;
    atomic_fetch_add(&c->srv->queued_bytes, (long long)m->len);
}

int rpc_call_respond(rpc_call *c, const ProtobufCMessage *msg)
{
    rpc_msg *m;
    int rc;
    if (!c->me || c->me->m.kind != RPC_UNARY)
        return reap_err_set(REAP_E_INVALID, "%s: rpc_call_respond on a streaming call",
                            c->method);
    if (!msg || msg->descriptor != c->me->m.resp)
        return reap_err_set(REAP_E_INVALID, "%s: response of the wrong type", c->method);
    if ((rc = pack_msg(msg, &m)))
        return rc;
    pthread_mutex_lock(&c->mu);
    if (c->responded) {
        pthread_mutex_unlock(&c->mu);
        msg_free(m);
        return reap_err_set(REAP_E_INVALID, "%s: responded twice", c->method);
    }
    c->responded = 1;
    enqueue_locked(c, m);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int rpc_call_error(rpc_call *c, rpc_code code, const char *fmt, ...)
{
    char buf[RPC_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    if (!c->err_msg) {
        c->err_code = code;
        c->err_msg = strdup(buf);
        if (!c->err_msg)
            c->err_code = RPC_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_unlock(&c->mu);
    return RPC_E_STATUS;
}

int rpc_call_cancelled(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int r = (c->closed && c->close_cancelled) || c->dead || c->status_sent ||
            c->status_in_flight;
    pthread_mutex_unlock(&c->mu);
    return r;
}

void rpc_call_on_cancel(rpc_call *c, void (*fn)(rpc_call *, void *), void *ud)
{
    pthread_mutex_lock(&c->mu);
    int now = (c->closed && c->close_cancelled) || c->dead;
    if (!now) {
        c->on_cancel = fn;
        c->on_cancel_ud = ud;
    }
    pthread_mutex_unlock(&c->mu);
    if (now && fn)
        fn(c, ud);
}

void rpc_call_ref(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    c->user_refs++;
    pthread_mutex_unlock(&c->mu);
}

void rpc_call_unref(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->user_refs--;
    if (c->user_refs == 0 && !c->handler_running && c->me &&
        c->me->m.kind == RPC_SERVER_STREAM && !c->dead &&
        !(c->closed && c->close_cancelled))
        finish_locked(c, RPC_INTERNAL, "the server abandoned the call");
    pthread_mutex_unlock(&c->mu);
    rpc_call_unref_internal(c);
}

const char *rpc_call_method(const rpc_call *c) { return c->method; }
const char *rpc_call_peer(const rpc_call *c) { return c->peer ? c->peer : ""; }
void rpc_call_set_user(rpc_call *c, void *user) { c->user = user; }
void *rpc_call_user(const rpc_call *c) { return c->user; }

int rpc_stream_send(rpc_call *c, const ProtobufCMessage *msg, rpc_send_kind kind)
{
    rpc_msg *m;
    int rc;
    if (!c->me || c->me->m.kind != RPC_SERVER_STREAM)
        return reap_err_set(REAP_E_INVALID, "%s: rpc_stream_send on a unary call", c->method);
    if (!msg || msg->descriptor != c->me->m.resp)
        return reap_err_set(REAP_E_INVALID, "%s: stream message of the wrong type",
                            c->method);
    if (rpc_call_cancelled(c))
        return REAP_E_CANCELLED;
    if ((rc = pack_msg(msg, &m)))
        return rc;
    m->progress = kind == RPC_SEND_PROGRESS;
    pthread_mutex_lock(&c->mu);
    if (c->finish_requested || c->dead || (c->closed && c->close_cancelled)) {
        pthread_mutex_unlock(&c->mu);
        msg_free(m);
        return REAP_E_CANCELLED;
    }
    enqueue_locked(c, m);
    size_t cap = (size_t)c->srv->o.stream_buffer_mb << 20;
    if (c->queued_bytes > cap) {
        /* The client does not read: give up on it rather than buffer without bound. */
        c->dead = 1;
        drop_queue_locked(c);
        grpc_call_cancel_with_status(c->gc, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "stream buffer exceeded: the client reads too slowly",
                                     NULL);
        pthread_mutex_unlock(&c->mu);
        return REAP_E_CANCELLED;
    }
    kick_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int rpc_stream_finish(rpc_call *c, rpc_code code, const char *fmt, ...)
{
    char buf[RPC_MSG_MAX];
    buf[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&c->mu);
    int gone = c->dead || (c->closed && c->close_cancelled);
    finish_locked(c, code, buf);
    pthread_mutex_unlock(&c->mu);
    return gone ? REAP_E_CANCELLED : 0;
}

void rpc_call_run_handler(rpc_call *c)
{
    const rpc_method *m = &c->me->m;
    char msg[RPC_MSG_MAX];
    int rc;

    pthread_mutex_lock(&c->mu);
    c->handler_running = 1;
    pthread_mutex_unlock(&c->mu);

    reap_err_clear();
    rc = m->handler(c, c->req, m->ud);
    msg[0] = '\0';
    if (rc < 0 && rc != RPC_E_STATUS)
        snprintf(msg, sizeof msg, "%s", *reap_err_msg() ? reap_err_msg() : reap_strerror(rc));

    pthread_mutex_lock(&c->mu);
    c->handler_running = 0;
    if (m->kind == RPC_UNARY && rc != 0)
        drop_queue_locked(c);   /* an error status goes out without a message */
    if (m->kind == RPC_UNARY && rc == 0 && !c->responded) {
        /* No response given: an empty message of the response type (valid protobuf). */
        rpc_msg *em = calloc(1, sizeof *em);
        if (em) {
            grpc_slice sl = grpc_empty_slice();
            em->bb = grpc_raw_byte_buffer_create(&sl, 1);
            c->responded = 1;
            enqueue_locked(c, em);
        }
    }
    if (rc == RPC_E_STATUS)
        finish_locked(c, c->err_msg ? c->err_code : RPC_UNKNOWN,
                      c->err_msg ? c->err_msg : "error");
    else if (rc < 0)
        finish_locked(c, rpc_code_from_reap(rc), msg);
    else if (rc > 0)
        finish_locked(c, RPC_INTERNAL, "handler returned an invalid status");
    else if (m->kind == RPC_UNARY)
        finish_locked(c, RPC_OK, "");
    else if (!c->finish_requested && c->user_refs == 0 && !c->dead &&
             !(c->closed && c->close_cancelled))
        finish_locked(c, RPC_INTERNAL, "the handler returned without finishing the call");
    pthread_mutex_unlock(&c->mu);
    rpc_call_unref_internal(c);
}

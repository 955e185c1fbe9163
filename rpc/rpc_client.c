/* rpc_client.c - blocking unary and server-streaming calls over the gRPC C core
 * (rpc_client.h).
 *
 * A call: a pluck completion queue of its own; one batch sends the metadata (with the
 * bearer token), the request and the half-close and receives the initial metadata; a
 * second batch, started at once, waits for the status; unary calls receive their one
 * message in the first batch, streams issue one RECV_MESSAGE batch at a time. Every
 * wait polls the cancel flag every RPC_CLIENT_POLL_MS, and every started batch is
 * waited for before the call and its queue are released.
 */
#include "rpc_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "fsopen.h"
#include "reap_err.h"

#define RPC_CLIENT_POLL_MS 100

struct rpc_client {
    grpc_channel *ch;
    char *auth;   /* "Bearer <token>" or NULL */
    volatile sig_atomic_t *cancel;
};

static int read_pem(const char *path, const char *what, char **out)
{
    FILE *f = NULL;
    long n;
    int rc;
    *out = NULL;
    if ((rc = reap_fopen_read(path, NULL, &f)))   /* a regular file: a FIFO never blocks */
        return reap_err_prefix(rc, "%s", what);
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > (16L << 20) ||
        fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return reap_err_set(REAP_E_IO, "%s '%s': cannot read", what, path);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", what);
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return reap_err_set(REAP_E_IO, "%s '%s': read error", what, path);
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    return 0;
}

int rpc_client_open(const rpc_client_opts *o, rpc_client **out)
{
    rpc_client *c = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *cr = NULL;
    int rc;

    *out = NULL;
    if (!o || !o->target || !*o->target)
        return reap_err_set(REAP_E_INVALID, "no server address given");
    if ((o->tls_cert && *o->tls_cert) != (o->tls_key && *o->tls_key))
        return reap_err_set(REAP_E_INVALID, "a client certificate needs its key and back");
    if ((o->tls_cert && *o->tls_cert) && !(o->tls_ca && *o->tls_ca))
        return reap_err_set(REAP_E_INVALID, "a client certificate needs --tls-ca");
    if (!(c = calloc(1, sizeof *c)))
        return reap_err_set(REAP_E_NOMEM, "out of memory");
    grpc_init();
    c->cancel = o->cancel;
    if (o->token && *o->token) {
        size_t n = strlen(o->token) + 8;
        if (!(c->auth = malloc(n))) {
            rc = reap_err_set(REAP_E_NOMEM, "out of memory");
            goto fail;
        }
        snprintf(c->auth, n, "Bearer %s", o->token);
    }
    if (o->tls_ca && *o->tls_ca) {
        if ((rc = read_pem(o->tls_ca, "TLS CA", &ca)))
            goto fail;
        grpc_ssl_pem_key_cert_pair pair;
        if (o->tls_cert && *o->tls_cert) {
            if ((rc = read_pem(o->tls_cert, "TLS client certificate", &cert)) ||
                (rc = read_pem(o->tls_key, "TLS client key", &key)))
                goto fail;
            pair.private_key = key;
            pair.cert_chain = cert;
        }
        cr = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    } else {
        cr = grpc_insecure_credentials_create();
    }
    if (!cr) {
        rc = reap_err_set(REAP_E_INVALID, "cannot create channel credentials");
        goto fail;
    }
    {
        grpc_arg args[2];
        size_t na = 0;
        memset(args, 0, sizeof args);
        long mb = o->max_message_mb > 0 ? o->max_message_mb : 256;
        if (mb > 1024)
            mb = 1024;
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[na].value.integer = (int)(mb << 20);
        na++;
        if (o->tls_server_name && *o->tls_server_name) {
            args[na].type = GRPC_ARG_STRING;
            args[na].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            args[na].value.string = (char *)o->tls_server_name;
            na++;
        }
        grpc_channel_args ca_args = {na, args};
        c->ch = grpc_channel_create(o->target, cr, &ca_args);
    }
    grpc_channel_credentials_release(cr);
    if (!c->ch) {
        rc = reap_err_set(REAP_E_INVALID, "cannot create a channel to %s", o->target);
        goto fail;
    }
    free(ca);
    free(cert);
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
    *out = c;
    return 0;
fail:
    free(ca);
    free(cert);
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
    free(c->auth);
    free(c);
    grpc_shutdown();
    return rc;
}

void rpc_client_close(rpc_client *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    free(c->auth);
    free(c);
    grpc_shutdown();
}

typedef struct call_state {
    rpc_client *c;
    grpc_completion_queue *cq;
    grpc_call *call;
    int cancelled;   /* we cancelled it (flag or callback) */
} call_state;

/* Wait for `tag`, polling the cancel flag. Returns the event's success flag. */
static int wait_tag(call_state *cs, void *tag)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_pluck(
            cs->cq, tag,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(RPC_CLIENT_POLL_MS, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            return ev.success;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return 0;
        if (!cs->cancelled && cs->c->cancel && *cs->c->cancel) {
            cs->cancelled = 1;
            grpc_call_cancel(cs->call, NULL);
        }
    }
}

static void set_status(rpc_client_status *st, rpc_code code, const char *fmt, const char *a)
{
    if (!st)
        return;
    st->code = code;
    snprintf(st->message, sizeof st->message, fmt, a ? a : "");
}

static ProtobufCMessage *unpack_bb(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader rd;
    ProtobufCMessage *m;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return NULL;
    grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    return m;
}

static rpc_code do_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *desc, long timeout_ms, int stream,
                        rpc_client_msg_fn fn, void *ud, ProtobufCMessage **resp,
                        rpc_client_status *st)
{
    call_state cs = {c, NULL, NULL, 0};
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    grpc_metadata auth;
    grpc_op ops[6];
    size_t n = 0;
    int tag_send, tag_status, tag_msg, status_started = 0, send_started = 0;
    int stopped = 0, bad_msg = 0;
    rpc_code code;

    if (resp)
        *resp = NULL;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    cs.cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                      gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                       : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    cs.call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cs.cq, mslice,
                                       NULL, deadline, NULL);
    grpc_slice_unref(mslice);
    if (!cs.call) {
        set_status(st, RPC_INTERNAL, "cannot create a call to %s", method);
        code = RPC_INTERNAL;
        goto out;
    }

    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice sl = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(sl));
    send_bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);

    memset(ops, 0, sizeof ops);
    memset(&auth, 0, sizeof auth);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->auth) {
        auth.key = grpc_slice_from_static_string("authorization");
        auth.value = grpc_slice_from_copied_string(c->auth);
        ops[n].data.send_initial_metadata.count = 1;
        ops[n].data.send_initial_metadata.metadata = &auth;
    }
    n++;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = send_bb;
    n++;
    ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n++;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    n++;
    if (!stream) {
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n].data.recv_message.recv_message = &recv_bb;
        n++;
    }
    if (grpc_call_start_batch(cs.call, ops, n, &tag_send, NULL) != GRPC_CALL_OK) {
        set_status(st, RPC_INTERNAL, "cannot start a call to %s", method);
        code = RPC_INTERNAL;
        goto out;
    }
    send_started = 1;

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(cs.call, ops, 1, &tag_status, NULL) == GRPC_CALL_OK)
        status_started = 1;

    wait_tag(&cs, &tag_send);
    send_started = 0;
    if (!stream) {
        if (recv_bb && resp) {
            *resp = unpack_bb(desc, recv_bb);
            bad_msg = !*resp;
        }
    } else {
        for (;;) {
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_RECV_MESSAGE;
            ops[0].data.recv_message.recv_message = &recv_bb;
            recv_bb = NULL;
            if (grpc_call_start_batch(cs.call, ops, 1, &tag_msg, NULL) != GRPC_CALL_OK)
                break;
            int ok = wait_tag(&cs, &tag_msg);
            if (!ok || !recv_bb)
                break;
            ProtobufCMessage *m = unpack_bb(desc, recv_bb);
            grpc_byte_buffer_destroy(recv_bb);
            recv_bb = NULL;
            if (!m) {
                bad_msg = 1;
                cs.cancelled = 1;
                grpc_call_cancel(cs.call, NULL);
                break;
            }
            int r = fn ? fn(m, ud) : 0;
            protobuf_c_message_free_unpacked(m, NULL);
            if (r) {
                stopped = 1;
                cs.cancelled = 1;
                grpc_call_cancel(cs.call, NULL);
                break;
            }
        }
    }
    if (status_started)
        wait_tag(&cs, &tag_status);
    status_started = 0;

    if (stopped) {
        set_status(st, RPC_CANCELLED, "stopped by the client%s", "");
        code = RPC_CANCELLED;
    } else if (bad_msg) {
        set_status(st, RPC_INTERNAL, "malformed %s message from the server", desc->name);
        code = RPC_INTERNAL;
    } else {
        code = (rpc_code)status;
        if (st) {
            size_t dl = GRPC_SLICE_LENGTH(details);
            if (dl >= sizeof st->message)
                dl = sizeof st->message - 1;
            st->code = code;
            memcpy(st->message, GRPC_SLICE_START_PTR(details), dl);
            st->message[dl] = '\0';
            if (cs.cancelled && code == RPC_CANCELLED && !dl)
                snprintf(st->message, sizeof st->message, "cancelled");
        }
        if (code == RPC_OK && !stream && resp && !*resp) {
            set_status(st, RPC_INTERNAL, "no response message from %s", method);
            code = RPC_INTERNAL;
        }
    }
out:
    if (send_started)
        wait_tag(&cs, &tag_send);
    if (code != RPC_OK && resp && *resp) {
        protobuf_c_message_free_unpacked(*resp, NULL);
        *resp = NULL;
    }
    if (recv_bb)
        grpc_byte_buffer_destroy(recv_bb);
    if (send_bb)
        grpc_byte_buffer_destroy(send_bb);
    if (c->auth)
        grpc_slice_unref(auth.value);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    if (cs.call)
        grpc_call_unref(cs.call);
    grpc_completion_queue_shutdown(cs.cq);
    while (grpc_completion_queue_pluck(cs.cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cs.cq);
    return code;
}

rpc_code rpc_client_unary(rpc_client *c, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc, long timeout_ms,
                          ProtobufCMessage **resp, rpc_client_status *st)
{
    ProtobufCMessage *dummy = NULL;
    rpc_code code = do_call(c, method, req, resp_desc, timeout_ms, 0, NULL, NULL,
                            resp ? resp : &dummy, st);
    if (dummy)
        protobuf_c_message_free_unpacked(dummy, NULL);
    return code;
}

rpc_code rpc_client_stream(rpc_client *c, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *msg_desc, long timeout_ms,
                           rpc_client_msg_fn fn, void *ud, rpc_client_status *st)
{
    return do_call(c, method, req, msg_desc, timeout_ms, 1, fn, ud, NULL, st);
}

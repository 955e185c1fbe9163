/* rpc_client.h - a small blocking gRPC client for reapctl and tests: one channel
 * (plaintext, TLS, or mTLS), bearer-token metadata, unary calls and server-streaming
 * read loops with deadlines and cancellation. All gRPC calls stay in rpc/.
 *
 * Each call uses its own pluck completion queue, so one rpc_client may be used by
 * several threads at once (one call per thread at a time). Calls poll a caller-provided
 * cancel flag (e.g. set by a SIGINT handler) every 100 ms and cancel the RPC when it is
 * set. Nothing here exits.
 */
#ifndef REAP_RPC_CLIENT_H
#define REAP_RPC_CLIENT_H

#include <signal.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc_status.h"

typedef struct rpc_client rpc_client;

typedef struct rpc_client_opts {
    const char *target;          /* "HOST:PORT" (or any gRPC target URI) */
    const char *token;           /* bearer token sent with every call, or NULL */
    const char *tls_ca;          /* PEM CA file: use TLS and verify the server with it */
    const char *tls_cert;        /* PEM client certificate (mTLS), needs tls_key */
    const char *tls_key;
    const char *tls_server_name; /* expected name in the server certificate (override) */
    long max_message_mb;         /* largest message received (default 256) */
    volatile sig_atomic_t *cancel;   /* when non-NULL and set: cancel the call */
} rpc_client_opts;

/* The outcome of a call as the client saw it. */
typedef struct rpc_client_status {
    rpc_code code;
    char message[1024];
} rpc_client_status;

/* Create a channel (connects lazily). REAP_OK; REAP_E_INVALID (no target, key without
 * certificate), REAP_E_NOTFOUND / REAP_E_IO (unreadable PEM files), REAP_E_NOMEM. */
int rpc_client_open(const rpc_client_opts *o, rpc_client **out);

/* Close the channel. NULL is a no-op. No call may be in progress. */
void rpc_client_close(rpc_client *c);

/* Unary call of `method` ("/reap.v1.Scorer/GetRun") with `req`. timeout_ms <= 0: no
 * deadline. On RPC_OK *resp is the unpacked response (free it with
 * protobuf_c_message_free_unpacked(*resp, NULL)); otherwise *resp is NULL.
 * Returns the status code (RPC_OK, a server status, or a local one:
 * RPC_DEADLINE_EXCEEDED, RPC_UNAVAILABLE when the server cannot be reached,
 * RPC_CANCELLED after the cancel flag, RPC_INTERNAL for an unparsable response);
 * st (may be NULL) receives the code and message. */
rpc_code rpc_client_unary(rpc_client *c, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc, long timeout_ms,
                          ProtobufCMessage **resp, rpc_client_status *st);

/* Called for each stream message (unpacked; freed after the callback returns). Return
 * 0 to go on, non-zero to stop (the call is cancelled; rpc_client_stream then returns
 * RPC_CANCELLED with message "stopped by the client"). */
typedef int (*rpc_client_msg_fn)(const ProtobufCMessage *msg, void *ud);

/* Server-streaming call: sends `req`, then calls fn for every message until the stream
 * ends. Returns the final status as rpc_client_unary does. */
rpc_code rpc_client_stream(rpc_client *c, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *msg_desc, long timeout_ms,
                           rpc_client_msg_fn fn, void *ud, rpc_client_status *st);

#endif

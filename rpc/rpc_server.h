/* rpc_server.h - a small gRPC server framework over the gRPC C core (all gRPC calls of
 * the reap services live in rpc/; handlers see protobuf-c messages and C types only).
 *
 * Model
 * - One completion-queue thread (the caller of rpc_server_run) accepts calls, checks
 *   the bearer token, unpacks the request with protobuf-c and hands the call to a
 *   handler. Handlers run on a pool of worker threads fed by a bounded job queue: when
 *   the queue is full the call is answered RESOURCE_EXHAUSTED at once. Methods flagged
 *   RPC_METHOD_INLINE (trivial, non-blocking ones such as health) run on the queue
 *   thread itself.
 * - Unary: the handler fills the response with rpc_call_respond() and returns 0, or
 *   returns an error (see rpc_handler_fn). One batch sends metadata, message, status.
 * - Server streaming: the handler (or any thread it passes the call to, holding a
 *   reference from rpc_call_ref) sends with rpc_stream_send() and ends the call with
 *   rpc_stream_finish(). Exactly one message write is in flight per call (that is the
 *   back-pressure): the others wait in the call's queue, where a PROGRESS message
 *   replaces a PROGRESS message still waiting at the tail (latest wins) and RELIABLE
 *   messages are never dropped. If the queue of unsent messages exceeds
 *   rpc_server_opts.stream_buffer_bytes (a client that does not read), the call is
 *   cancelled with RESOURCE_EXHAUSTED. Workers never block on gRPC.
 * - Cancellation (client cancel, deadline, lost connection, server shutdown after the
 *   grace period) is seen by polling rpc_call_cancelled() between units of work, or via
 *   a callback (rpc_call_on_cancel).
 * - Unknown methods get UNIMPLEMENTED; missing or malformed request messages
 *   INVALID_ARGUMENT; oversized messages RESOURCE_EXHAUSTED (gRPC's own check against
 *   max_message_bytes).
 * - Auth: with a token configured, every call except grpc.health.v1.Health needs the
 *   metadata `authorization: Bearer <token>` (compared in constant time), else
 *   UNAUTHENTICATED. TLS with a server certificate; with a client CA, clients must
 *   present a certificate signed by it (mTLS). An optional second, plaintext listener
 *   serves only grpc.health.v1.Health (for Kubernetes gRPC probes when the API port
 *   uses TLS).
 * - Health: grpc.health.v1.Health Check and Watch over a table of service statuses
 *   (rpc_health_set); Watch streams receive every change.
 * - Graceful shutdown: rpc_server_request_shutdown() (async-signal-safe; see
 *   rpc_server_install_signals) makes rpc_server_run: mark every health status
 *   NOT_SERVING and push it to watchers (then end those streams), call the on_shutdown
 *   hook (e.g. ask scoring runs to stop at their next layer boundary), stop accepting
 *   calls, let calls in progress finish for grace_ms, then cancel the remaining ones,
 *   wait up to drain_timeout_ms for every call reference to be released, tear down and
 *   return 0.
 *
 * Thread rules (summary): rpc_server_create/add_method/start/free on one thread;
 * rpc_server_run on one thread (it becomes the queue thread); rpc_server_request_shutdown,
 * rpc_health_set and every rpc_call_* / rpc_stream_* function are thread-safe. No
 * function here exits or aborts the process.
 */
#ifndef REAP_RPC_SERVER_H
#define REAP_RPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc_status.h"

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

/* ---- configuration ---------------------------------------------------------------- */

/* Field types match cli.h destinations (const char *, long) so that an option table can
 * point into this struct (rpc_server_cli_options). Zero / NULL means the default. */
typedef struct rpc_server_opts {
    const char *listen;          /* "HOST:PORT"; default "127.0.0.1:50051"; port 0 picks */
    const char *health_listen;   /* optional plaintext health-only listener "HOST:PORT" */
    const char *tls_cert;        /* PEM server certificate chain file (enables TLS) */
    const char *tls_key;         /* PEM private key file (required with tls_cert) */
    const char *tls_client_ca;   /* PEM CA file: require and verify client certs (mTLS) */
    const char *token;           /* bearer token; NULL/"" and no token_file: no auth
                                    (the CLI options refuse an empty value: see
                                    rpc_server_cli_options) */
    const char *token_file;      /* file whose first line is the token */
    long workers;                /* handler threads (default 4) */
    long max_queue;              /* jobs waiting for a worker (default 256) */
    long max_message_mb;         /* largest request accepted, MiB (default 64) */
    long stream_buffer_mb;       /* unsent stream messages per call, MiB (default 16) */
    long grace_ms;               /* shutdown: time calls get to finish (default 10000;
                                    negative: none) */
    long drain_timeout_ms;       /* shutdown: wait for call references after cancelling
                                    (default 60000) */
    long health_stall_ms;        /* health says NOT_SERVING for the named services (not
                                    for "", the process as a whole) while every handler
                                    thread is busy and the oldest
                                    waiting call has waited this long; SERVING again once
                                    a worker takes it. Used as given (the CLI default is
                                    5000): 0 = as soon as a call waits with every worker
                                    busy; negative: never */
    void (*on_shutdown)(void *ud);   /* called once on the queue thread when a shutdown
                                        starts, before the grace period; may be NULL */
    void *on_shutdown_ud;
} rpc_server_opts;

/* ---- methods ----------------------------------------------------------------------- */

typedef enum rpc_kind { RPC_UNARY = 0, RPC_SERVER_STREAM = 1 } rpc_kind;

/* Handler return value contract (unary and streaming):
 *   0                 success. Unary: the response given to rpc_call_respond is sent
 *                     (an empty message if none was given). Streaming: the handler has
 *                     called rpc_stream_finish, or holds a reference (rpc_call_ref) and
 *                     will finish later from another thread; otherwise the framework
 *                     ends the call with INTERNAL.
 *   RPC_E_STATUS      the handler called rpc_call_error(): that code and message are
 *                     sent.
 *   REAP_E_* (< 0)    mapped with rpc_code_from_reap; the message is the calling
 *                     thread's reap_err_msg().
 * The request message belongs to the framework (valid until the call is released; a
 * streaming handler that keeps a reference may keep using it). */
typedef int (*rpc_handler_fn)(rpc_call *call, const ProtobufCMessage *req, void *ud);

/* Returned by rpc_call_error so that a handler can `return rpc_call_error(...)`. */
#define RPC_E_STATUS (-1000)

enum {
    RPC_METHOD_INLINE = 1,   /* run on the queue thread (must not block) */
    RPC_METHOD_NO_AUTH = 2   /* reachable without the bearer token */
};

typedef struct rpc_method {
    const char *path;                          /* "/reap.v1.Scorer/GetRun" */
    rpc_kind kind;
    const ProtobufCMessageDescriptor *req;     /* request type */
    const ProtobufCMessageDescriptor *resp;    /* response / stream message type */
    rpc_handler_fn handler;
    void *ud;                                  /* passed to the handler */
    unsigned flags;                            /* RPC_METHOD_* */
} rpc_method;

/* ---- server lifecycle -------------------------------------------------------------- */

/* Create a server (nothing is bound yet). Reads the TLS files and the token file.
 * Returns REAP_OK; REAP_E_INVALID (inconsistent options: key without certificate,
 * empty token file, ...), REAP_E_IO / REAP_E_NOTFOUND (unreadable files), REAP_E_NOMEM;
 * message in reap_err_msg(). */
int rpc_server_create(const rpc_server_opts *opts, rpc_server **out);

/* Register a method (before rpc_server_start). `m` is copied; its strings and
 * descriptors must outlive the server. Registers the service name ("reap.v1.Scorer")
 * in the health table as NOT_SERVING until rpc_health_set says otherwise.
 * REAP_OK, REAP_E_INVALID (bad path, duplicate, after start), REAP_E_NOMEM. */
int rpc_server_add_method(rpc_server *s, const rpc_method *m);

/* Bind the listeners and start accepting (calls queue until rpc_server_run).
 * REAP_OK; REAP_E_IO when an address cannot be bound (in use, bad host), REAP_E_NOMEM. */
int rpc_server_start(rpc_server *s);

/* 1 when calls need the bearer token (a token or token file was configured), else 0. */
int rpc_server_auth_required(const rpc_server *s);

/* Bound ports (after start): the API listener and the health listener (0 if none). */
int rpc_server_port(const rpc_server *s);
int rpc_server_health_port(const rpc_server *s);

/* Run the queue thread until a shutdown is requested, then shut down gracefully (see
 * above). Returns REAP_OK, or REAP_E_INTERNAL when call references were still held
 * after drain_timeout_ms (the server is then left allocated: do not free it, exit). */
int rpc_server_run(rpc_server *s);

/* Ask rpc_server_run to shut down. Async-signal-safe; any thread. */
void rpc_server_request_shutdown(rpc_server *s);

/* 1 once a shutdown has started (workers may stop early), else 0. Any thread. */
int rpc_server_draining(const rpc_server *s);

/* Install SIGTERM and SIGINT handlers that call rpc_server_request_shutdown(s), and
 * ignore SIGPIPE. One server per process. REAP_OK or REAP_E_IO. */
int rpc_server_install_signals(rpc_server *s);

/* Free a server that was never started, or whose rpc_server_run returned REAP_OK.
 * NULL is a no-op. */
void rpc_server_free(rpc_server *s);

typedef struct rpc_server_stats {
    uint64_t calls_total;        /* calls accepted */
    uint64_t calls_rejected;     /* answered RESOURCE_EXHAUSTED because the queue was full */
    uint64_t calls_unauthenticated;
    uint64_t calls_unimplemented;
    int64_t calls_live;          /* call contexts alive now */
    int64_t queued;              /* jobs waiting for a worker */
    int64_t stream_bytes;        /* unsent stream message bytes, all calls */
} rpc_server_stats;

/* A snapshot of the counters. Any thread. */
void rpc_server_get_stats(rpc_server *s, rpc_server_stats *out);

/* ---- health ------------------------------------------------------------------------ */

typedef enum rpc_health_status {
    RPC_HEALTH_UNKNOWN = 0,
    RPC_HEALTH_SERVING = 1,
    RPC_HEALTH_NOT_SERVING = 2
} rpc_health_status;

/* Set the status of `service` ("" is the whole server) and push it to its watchers.
 * Unknown services are added. After a shutdown started, SERVING is ignored.
 * REAP_OK or REAP_E_NOMEM. Any thread. */
int rpc_health_set(rpc_server *s, const char *service, rpc_health_status st);

/* ---- calls (handlers and workers) -------------------------------------------------- */

/* Record the response of a unary call: packs `msg` (of the method's response type) at
 * once, so the caller may free it on return. REAP_OK, REAP_E_INVALID (wrong type, not a
 * unary call, already responded), REAP_E_NOMEM. */
int rpc_call_respond(rpc_call *call, const ProtobufCMessage *msg);

/* Record an error status for the call and return RPC_E_STATUS. A message longer than
 * 1 KiB is truncated. Thread-safe. For a streaming call prefer rpc_stream_finish. */
int rpc_call_error(rpc_call *call, rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 if the call has ended for the client (cancelled, deadline passed, connection lost,
 * server cancelling, or the final status already sent), else 0. Cheap; poll it between
 * units of work. */
int rpc_call_cancelled(rpc_call *call);

/* Register fn(call, ud), called once on the queue thread when the call is cancelled
 * (not when it ends normally); called at once (on this thread) if it already is. Must not
 * block; may call rpc_* functions on this call, including rpc_call_unref. One callback
 * per call (a second registration replaces the first). */
void rpc_call_on_cancel(rpc_call *call, void (*fn)(rpc_call *call, void *ud), void *ud);

/* Take / release a reference, to use the call after the handler returned (e.g. on a
 * run's thread). The last release of a streaming call that was never finished ends it
 * with INTERNAL "abandoned". */
void rpc_call_ref(rpc_call *call);
void rpc_call_unref(rpc_call *call);

/* The method path ("/reap.v1.Scorer/Score") and the peer ("ipv4:127.0.0.1:5555").
 * Valid while a reference is held. */
const char *rpc_call_method(const rpc_call *call);
const char *rpc_call_peer(const rpc_call *call);

/* Opaque per-call user data (e.g. the run a watcher is attached to). Not synchronised:
 * set it before the call is shared with other threads. */
void rpc_call_set_user(rpc_call *call, void *user);
void *rpc_call_user(const rpc_call *call);

/* ---- server streaming -------------------------------------------------------------- */

typedef enum rpc_send_kind {
    RPC_SEND_RELIABLE = 0,   /* never dropped, sent in order */
    RPC_SEND_PROGRESS = 1    /* replaced by a later PROGRESS message while unsent */
} rpc_send_kind;

/* Queue `msg` (of the method's response type; packed at once, the caller keeps
 * ownership) and start a write if none is in flight. Never blocks on the network.
 * Returns REAP_OK (queued or sent); REAP_E_CANCELLED when the call has ended for the
 * client or was finished (the message is dropped; stop sending, release the call);
 * REAP_E_INVALID (wrong type, not a streaming call); REAP_E_NOMEM. */
int rpc_stream_send(rpc_call *call, const ProtobufCMessage *msg, rpc_send_kind kind);

/* End a streaming call: the status goes out after every queued message. `code` RPC_OK
 * for success; fmt may be NULL. Only the first finish counts. REAP_OK, or
 * REAP_E_CANCELLED when the call had already ended for the client. */
int rpc_stream_finish(rpc_call *call, rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- command-line options ---------------------------------------------------------- */

struct cli_opt;

/* Append the server options (listen, health-listen, tls-cert, tls-key, tls-client-ca,
 * token, token-file, workers, max-queue, max-message-mb, stream-buffer-mb, grace-ms,
 * health-stall-ms (REAP_HEALTH_STALL_MS),
 * with environment variables REAP_LISTEN, REAP_HEALTH_LISTEN, REAP_TLS_CERT,
 * REAP_TLS_KEY, REAP_TLS_CLIENT_CA, REAP_TOKEN, REAP_TOKEN_FILE, REAP_WORKERS,
 * REAP_MAX_QUEUE, REAP_MAX_MESSAGE_MB, REAP_STREAM_BUFFER_MB, REAP_GRACE_MS) to a cli
 * table whose destinations are the fields of *o. Writes at most `cap` entries; returns
 * the number written (RPC_SERVER_CLI_N when cap allows). */
#define RPC_SERVER_CLI_N 13
int rpc_server_cli_options(rpc_server_opts *o, struct cli_opt *opts, int cap);

#endif

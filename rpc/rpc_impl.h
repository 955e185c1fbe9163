/* rpc_impl.h - internals of the rpc server shared by rpc_server.c, rpc_call.c,
 * rpc_health.c and rpc_pool.c. Not a public header.
 *
 * Tags: every outstanding gRPC operation carries a pointer to an rpc_tag embedded in
 * the object it belongs to (a pending request, a call, a listener); the queue thread
 * dispatches on tag->kind.
 *
 * Call reference counting (rpc_call.refs, under rpc_call.mu): one reference for the
 * RECV_CLOSE_ON_SERVER batch, one per send batch in flight, one for the dispatch /
 * handler, one per rpc_call_ref. The context (and its grpc_call) is destroyed when the
 * count reaches zero; rpc_server.calls_live counts contexts alive.
 */
#ifndef REAP_RPC_IMPL_H
#define REAP_RPC_IMPL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include <grpc/grpc.h>

#include "rpc_server.h"

typedef enum tag_kind { TAG_REQUEST, TAG_CLOSE, TAG_SEND, TAG_SHUTDOWN } tag_kind;

typedef struct rpc_tag {
    tag_kind kind;
    void *ptr;
} rpc_tag;

/* One queued outgoing message. */
typedef struct rpc_msg {
    struct rpc_msg *next;
    grpc_byte_buffer *bb;
    size_t len;
    int progress;   /* RPC_SEND_PROGRESS: may be replaced while unsent */
} rpc_msg;

typedef struct rpc_listener rpc_listener;

/* A registered method and its per-listener registration handles. */
typedef struct rpc_method_ent {
    rpc_method m;
    void *reg[2];   /* grpc_server_register_method handle per listener, or NULL */
} rpc_method_ent;

struct rpc_call {
    rpc_server *srv;
    const rpc_method_ent *me;     /* NULL for the catch-all (unimplemented) */
    grpc_call *gc;
    char *method;                 /* path */
    char *peer;                   /* gpr-allocated */
    ProtobufCMessage *req;
    void *user;

    pthread_mutex_t mu;
    int refs;
    int user_refs;                /* rpc_call_ref holders */
    int handler_running;
    rpc_tag tag_close;
    rpc_tag tag_send;
    int close_cancelled;          /* RECV_CLOSE_ON_SERVER result */
    int closed;                   /* RECV_CLOSE_ON_SERVER completed */
    int dead;                     /* a send failed or the call was cancelled by us */
    int md_sent;
    int send_in_flight;
    int status_in_flight;
    int status_sent;
    int finish_requested;
    int responded;                /* unary: rpc_call_respond done */
    rpc_code final_code;
    char *final_msg;
    grpc_slice final_slice;
    int final_slice_set;
    rpc_code err_code;            /* set by rpc_call_error */
    char *err_msg;
    rpc_msg *head, *tail;
    rpc_msg *in_flight;
    size_t queued_bytes;
    void (*on_cancel)(rpc_call *, void *);
    void *on_cancel_ud;
};

/* A pending grpc_server_request_(registered_)call. */
typedef struct rpc_req {
    rpc_tag tag;
    rpc_listener *l;
    int mi;                       /* method index, -1 for the catch-all */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} rpc_req;

struct rpc_listener {
    rpc_server *srv;
    grpc_server *gs;
    int idx;                      /* 0 API, 1 health */
    int port;
    int health_only;
    rpc_tag tag_shutdown;
    int shutdown_done;
};

typedef struct health_ent {
    char *service;
    int status;                   /* rpc_health_status, or -1: unknown (watched only) */
    rpc_call **watchers;
    int n_watchers, cap_watchers;
} health_ent;

typedef struct rpc_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_call **q;
    int64_t *enq_ns;              /* [cap] when each queued job was pushed (monotonic) */
    int cap, head, count;
    int busy;                     /* workers running a handler */
    int stop;
    pthread_t *th;
    int n_threads;
    /* Called (no pool lock held) after a push, or after a worker takes or finishes a
     * job, so that health can follow the pool (rpc_server.c); may be NULL. */
    void (*on_change)(void *ud);
    void *on_change_ud;
} rpc_pool;

struct rpc_server {
    rpc_server_opts o;            /* copy; strings below are owned copies */
    char *listen, *health_listen;
    char *token;                  /* resolved bearer token or NULL */
    char *tls_cert_pem, *tls_key_pem, *tls_ca_pem;
    grpc_completion_queue *cq;
    rpc_listener lst[2];
    int n_lst;
    rpc_method_ent *methods;
    int n_methods, cap_methods;
    int started, run_done;
    int grpc_inited;

    rpc_pool pool;

    pthread_mutex_t health_mu;
    health_ent *health;
    int n_health, cap_health;

    volatile sig_atomic_t stop_req;
    atomic_int draining;
    int pending_requests;         /* queue thread only */

    atomic_int pool_stalled;      /* last stall state told to Watch streams */

    atomic_llong calls_live;
    atomic_ullong calls_total, calls_rejected, calls_unauth, calls_unimpl;
    atomic_llong queued_bytes;
};

/* rpc_call.c */
rpc_call *rpc_call_new(rpc_server *s, const rpc_method_ent *me, grpc_call *gc,
                       const char *method);
void rpc_call_unref_internal(rpc_call *c);
/* Start the RECV_CLOSE_ON_SERVER batch. 0 or -1. */
int rpc_call_start_close(rpc_call *c);
/* Ask the call to end with code/msg after the queued messages (first finish wins). */
void rpc_call_finish(rpc_call *c, rpc_code code, const char *msg);
/* Run the handler on the current thread and complete the call per the contract. */
void rpc_call_run_handler(rpc_call *c);
/* Queue-thread completions. */
void rpc_call_on_close(rpc_call *c, int ok);
void rpc_call_on_send(rpc_call *c, int ok);

/* rpc_health.c: the pool's part in health (pool.on_change) */
void rpc_health_pool_changed(void *server);

/* rpc_pool.c */
int rpc_pool_init(rpc_pool *p, int n_threads, int cap);
/* Hand a call (with its dispatch reference) to a worker. 0, or -1 when full/stopped. */
int rpc_pool_push(rpc_pool *p, rpc_call *c);
long rpc_pool_queued(rpc_pool *p);
/* 1 when the pool cannot take work: every worker is running a handler and the oldest
 * queued job has waited at least stall_ns (0: any job waiting). stall_ns < 0: never. */
int rpc_pool_stalled(rpc_pool *p, int64_t stall_ns);
int64_t rpc_now_ns(void);   /* CLOCK_MONOTONIC */
void rpc_pool_stop(rpc_pool *p);   /* joins the threads; queued jobs run first */

/* rpc_health.c (called by rpc_server.c only; rpc_health.c calls nothing of
 * rpc_server.c, so the two files do not depend on each other in a cycle) */
/* Fill the descriptors of grpc.health.v1.Health Check and Watch for `s` (the server
 * registers them with rpc_server_add_method). */
void rpc_health_methods(rpc_server *s, rpc_method *check, rpc_method *watch);
void rpc_health_shutdown(rpc_server *s);   /* NOT_SERVING everywhere; end Watch streams */
void rpc_health_free(rpc_server *s);

#endif

/* rpc_health.c - grpc.health.v1.Health: Check and Watch over a table of service
 * statuses (rpc_server.h: rpc_health_set).
 *
 * Both methods run inline on the queue thread and need no token. A Watch call stays in
 * its service's watcher list (holding a call reference) until the client cancels it
 * (rpc_call_on_cancel removes it) or the server shuts down (the NOT_SERVING message is
 * sent, then the stream ends UNAVAILABLE). Lock order: health_mu, then a call's mutex.
 */
#include <stdlib.h>
#include <string.h>

#include "health.pb-c.h"
#include "reap_err.h"
#include "rpc_impl.h"

/* A client may watch services that do not exist; cap the table they can grow. */
#define HEALTH_MAX_ENTRIES 256

/* Find `service`; with create, add it (status -1: unknown). Called with health_mu. */
static health_ent *find_locked(rpc_server *s, const char *service, int create)
{
    for (int i = 0; i < s->n_health; i++)
        if (!strcmp(s->health[i].service, service))
            return &s->health[i];
    if (!create || s->n_health >= HEALTH_MAX_ENTRIES)
        return NULL;
    if (s->n_health == s->cap_health) {
        int cap = s->cap_health ? s->cap_health * 2 : 8;
        health_ent *h = realloc(s->health, (size_t)cap * sizeof *h);
        if (!h)
            return NULL;
        s->health = h;
        s->cap_health = cap;
    }
    health_ent *e = &s->health[s->n_health];
    memset(e, 0, sizeof *e);
    e->service = strdup(service);
    if (!e->service)
        return NULL;
    e->status = -1;
    s->n_health++;
    return e;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus wire_status(int st)
{
    switch (st) {
    case RPC_HEALTH_SERVING:
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    case RPC_HEALTH_NOT_SERVING:
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    case RPC_HEALTH_UNKNOWN:
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN;
    default:
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    }
}

/* The status a client is told: a named service set SERVING is NOT_SERVING while the
 * handler pool cannot take work (rpc_pool_stalled with --health-stall-ms). The server as
 * a whole ("") keeps its own status: the process is alive (liveness), while the named
 * services say whether it can take work now (readiness). */
static int effective(const char *service, int st, int stalled)
{
    return st == RPC_HEALTH_SERVING && stalled && *service ? RPC_HEALTH_NOT_SERVING : st;
}

static int pool_stalled(rpc_server *s)
{
    return rpc_pool_stalled(&s->pool, s->o.health_stall_ms < 0 ? -1
                                                               : s->o.health_stall_ms * 1000000LL);
}

static int send_status(rpc_call *c, int st)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = wire_status(st);
    return rpc_stream_send(c, &r.base, RPC_SEND_PROGRESS);
}

static int check_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Grpc__Health__V1__HealthCheckRequest *q = (const void *)req;
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rpc_server *s = ud;
    const char *svc = q->service ? q->service : "";
    int st, stalled = pool_stalled(s);

    pthread_mutex_lock(&s->health_mu);
    health_ent *e = find_locked(s, svc, 0);
    st = e ? e->status : -1;
    pthread_mutex_unlock(&s->health_mu);
    if (st < 0)
        return rpc_call_error(call, RPC_NOT_FOUND, "unknown service '%s'", svc);
    r.status = wire_status(effective(svc, st, stalled));
    return rpc_call_respond(call, &r.base);
}

/* Cancellation of a Watch: leave the watcher list, release its reference. */
static void watch_cancelled(rpc_call *call, void *ud)
{
    rpc_server *s = ud;
    int found = 0;
    pthread_mutex_lock(&s->health_mu);
    for (int i = 0; i < s->n_health && !found; i++) {
        health_ent *e = &s->health[i];
        for (int j = 0; j < e->n_watchers; j++)
            if (e->watchers[j] == call) {
                e->watchers[j] = e->watchers[--e->n_watchers];
                found = 1;
                break;
            }
    }
    pthread_mutex_unlock(&s->health_mu);
    if (found)
        rpc_call_unref(call);
}

static int watch_handler(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Grpc__Health__V1__HealthCheckRequest *q = (const void *)req;
    rpc_server *s = ud;
    const char *svc = q->service ? q->service : "";
    int stalled = pool_stalled(s);

    pthread_mutex_lock(&s->health_mu);
    if (atomic_load(&s->draining)) {
        pthread_mutex_unlock(&s->health_mu);
        send_status(call, RPC_HEALTH_NOT_SERVING);
        rpc_stream_finish(call, RPC_UNAVAILABLE, "server shutting down");
        return 0;
    }
    health_ent *e = find_locked(s, svc, 1);
    if (!e) {
        pthread_mutex_unlock(&s->health_mu);
        return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "too many watched services");
    }
    if (e->n_watchers == e->cap_watchers) {
        int cap = e->cap_watchers ? e->cap_watchers * 2 : 4;
        rpc_call **w = realloc(e->watchers, (size_t)cap * sizeof *w);
        if (!w) {
            pthread_mutex_unlock(&s->health_mu);
            return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        }
        e->watchers = w;
        e->cap_watchers = cap;
    }
    rpc_call_ref(call);
    e->watchers[e->n_watchers++] = call;
    send_status(call, effective(e->service, e->status, stalled));
    pthread_mutex_unlock(&s->health_mu);
    rpc_call_on_cancel(call, watch_cancelled, s);
    return 0;
}

void rpc_health_methods(rpc_server *s, rpc_method *check, rpc_method *watch)
{
    *check = (rpc_method){
        .path = "/grpc.health.v1.Health/Check",
        .kind = RPC_UNARY,
        .req = &grpc__health__v1__health_check_request__descriptor,
        .resp = &grpc__health__v1__health_check_response__descriptor,
        .handler = check_handler,
        .ud = s,
        .flags = RPC_METHOD_INLINE | RPC_METHOD_NO_AUTH,
    };
    *watch = *check;
    watch->path = "/grpc.health.v1.Health/Watch";
    watch->kind = RPC_SERVER_STREAM;
    watch->handler = watch_handler;
}

int rpc_health_set(rpc_server *s, const char *service, rpc_health_status st)
{
    if (!service)
        service = "";
    pthread_mutex_lock(&s->health_mu);
    if (atomic_load(&s->draining) && st == RPC_HEALTH_SERVING) {
        pthread_mutex_unlock(&s->health_mu);
        return 0;
    }
    health_ent *e = find_locked(s, service, 1);
    if (!e) {
        pthread_mutex_unlock(&s->health_mu);
        return reap_err_set(REAP_E_NOMEM, "health: cannot add service '%s'", service);
    }
    if (e->status != (int)st) {
        int stalled = atomic_load(&s->pool_stalled);
        e->status = (int)st;
        for (int j = 0; j < e->n_watchers; j++)
            send_status(e->watchers[j], effective(e->service, e->status, stalled));
    }
    pthread_mutex_unlock(&s->health_mu);
    return 0;
}

/* The pool took, finished or queued a job: when that changes whether it can take work,
 * tell the Watch streams of every service set SERVING. (With a threshold above 0 the
 * moment a wait grows past it is no event: Check sees it at once, Watch at the pool's
 * next change.) */
void rpc_health_pool_changed(void *server)
{
    rpc_server *s = server;
    pthread_mutex_lock(&s->health_mu);   /* lock order: health_mu, then the pool's */
    int stalled = pool_stalled(s);
    if (atomic_exchange(&s->pool_stalled, stalled) != stalled && !atomic_load(&s->draining))
        for (int i = 0; i < s->n_health; i++) {
            health_ent *e = &s->health[i];
            if (e->status != RPC_HEALTH_SERVING || !*e->service)
                continue;
            for (int j = 0; j < e->n_watchers; j++)
                send_status(e->watchers[j], effective(e->service, e->status, stalled));
        }
    pthread_mutex_unlock(&s->health_mu);
}

void rpc_health_shutdown(rpc_server *s)
{
    rpc_call **all = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&s->health_mu);
    for (int i = 0; i < s->n_health; i++) {
        health_ent *e = &s->health[i];
        if (e->status >= 0)
            e->status = RPC_HEALTH_NOT_SERVING;
        for (int j = 0; j < e->n_watchers; j++) {
            send_status(e->watchers[j], e->status);
            rpc_stream_finish(e->watchers[j], RPC_UNAVAILABLE, "server shutting down");
            if (n == cap) {
                int nc = cap ? cap * 2 : 16;
                rpc_call **a = realloc(all, (size_t)nc * sizeof *a);
                if (!a)
                    continue;   /* keep it listed; released in rpc_health_free */
                all = a;
                cap = nc;
            }
            all[n++] = e->watchers[j];
            e->watchers[j] = e->watchers[--e->n_watchers];
            j--;
        }
    }
    pthread_mutex_unlock(&s->health_mu);
    for (int i = 0; i < n; i++)
        rpc_call_unref(all[i]);
    free(all);
}

void rpc_health_free(rpc_server *s)
{
    for (int i = 0; i < s->n_health; i++) {
        for (int j = 0; j < s->health[i].n_watchers; j++)
            rpc_call_unref(s->health[i].watchers[j]);
        free(s->health[i].watchers);
        free(s->health[i].service);
    }
    free(s->health);
    s->health = NULL;
    s->n_health = s->cap_health = 0;
}

/* rpc_pool.c - the handler worker threads and their bounded job queue.
 *
 * A job is a call whose handler has not run yet (it carries the dispatch reference).
 * rpc_pool_push refuses when `cap` jobs are waiting; the queue thread then answers the
 * call RESOURCE_EXHAUSTED. Stopping lets the queued jobs run, then joins the threads.
 * The pool counts its busy workers and stamps each job when it is queued, so that
 * health can tell when it can no longer take work (rpc_pool_stalled): every worker busy
 * and a call waiting.
 */
#include <stdlib.h>
#include <time.h>

#include "rpc_impl.h"

static void *worker_main(void *arg)
{
    rpc_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->count && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->count) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        rpc_call *c = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        if (p->on_change)
            p->on_change(p->on_change_ud);
        rpc_call_run_handler(c);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        pthread_mutex_unlock(&p->mu);
        if (p->on_change)
            p->on_change(p->on_change_ud);
    }
}

int64_t rpc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rpc_pool_stalled(rpc_pool *p, int64_t stall_ns)
{
    int r = 0;
    if (stall_ns < 0 || !p->q)
        return 0;
    pthread_mutex_lock(&p->mu);
    if (p->n_threads > 0 && p->busy >= p->n_threads && p->count > 0)
        r = rpc_now_ns() - p->enq_ns[p->head] >= stall_ns;
    pthread_mutex_unlock(&p->mu);
    return r;
}

int rpc_pool_init(rpc_pool *p, int n_threads, int cap)
{
    p->q = calloc((size_t)cap, sizeof *p->q);
    p->enq_ns = calloc((size_t)cap, sizeof *p->enq_ns);
    p->th = calloc((size_t)n_threads, sizeof *p->th);
    p->cap = cap;
    p->head = p->count = p->stop = p->busy = 0;
    p->n_threads = 0;
    if (!p->q || !p->th || !p->enq_ns)
        goto fail;
    if (pthread_mutex_init(&p->mu, NULL))
        goto fail;
    if (pthread_cond_init(&p->cv, NULL)) {
        pthread_mutex_destroy(&p->mu);
        goto fail;
    }
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&p->th[i], NULL, worker_main, p)) {
            rpc_pool_stop(p);
            return -1;
        }
        p->n_threads++;
    }
    return 0;
fail:
    free(p->q);
    free(p->enq_ns);
    free(p->th);
    p->q = NULL;
    p->enq_ns = NULL;
    p->th = NULL;
    return -1;
}

int rpc_pool_push(rpc_pool *p, rpc_call *c)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    if (!p->stop && p->count < p->cap) {
        p->enq_ns[(p->head + p->count) % p->cap] = rpc_now_ns();
        p->q[(p->head + p->count) % p->cap] = c;
        p->count++;
        pthread_cond_signal(&p->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (!rc && p->on_change)
        p->on_change(p->on_change_ud);
    return rc;
}

long rpc_pool_queued(rpc_pool *p)
{
    pthread_mutex_lock(&p->mu);
    long n = p->count;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void rpc_pool_stop(rpc_pool *p)
{
    if (!p->q)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->q);
    free(p->enq_ns);
    free(p->th);
    p->q = NULL;
    p->enq_ns = NULL;
    p->th = NULL;
    p->n_threads = 0;
}

/* rpc_pool.c - the handler worker threads and their bounded job queue.
 *
 * A job is a call whose handler has not run yet (it carries the dispatch reference).
 * rpc_pool_push refuses when `cap` jobs are waiting; the queue thread then answers the
 * call RESOURCE_EXHAUSTED. Stopping lets the queued jobs run, then joins the threads.
 */
#include <stdlib.h>

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
        pthread_mutex_unlock(&p->mu);
        rpc_call_run_handler(c);
    }
}

int rpc_pool_init(rpc_pool *p, int n_threads, int cap)
{
    p->q = calloc((size_t)cap, sizeof *p->q);
    p->th = calloc((size_t)n_threads, sizeof *p->th);
    p->cap = cap;
    p->head = p->count = p->stop = 0;
    p->n_threads = 0;
    if (!p->q || !p->th)
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
    free(p->th);
    p->q = NULL;
    p->th = NULL;
    return -1;
}

int rpc_pool_push(rpc_pool *p, rpc_call *c)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    if (!p->stop && p->count < p->cap) {
        p->q[(p->head + p->count) % p->cap] = c;
        p->count++;
        pthread_cond_signal(&p->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
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
    free(p->th);
    p->q = NULL;
    p->th = NULL;
    p->n_threads = 0;
}

/* parallel.c - static-partition parallel-for on pthreads (see parallel.h). */
#include "parallel.h"

#include <pthread.h>
#include <unistd.h>

#define REAP_MAX_THREADS 256

typedef struct {
    reap_range_fn fn;
    void *ud;
    int64_t begin, end;
    int tid;
} range_job;

static void *range_job_run(void *arg)
{
    range_job *j = arg;
    j->fn(j->ud, j->begin, j->end, j->tid);
    return NULL;
}

void reap_parallel_for(int n_threads, int64_t n, reap_range_fn fn, void *ud)
{
    if (n <= 0)
        return;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > REAP_MAX_THREADS)
        n_threads = REAP_MAX_THREADS;
    if (n_threads > n)
        n_threads = (int)n;
    if (n_threads == 1) {
        fn(ud, 0, n, 0);
        return;
    }
    range_job jobs[REAP_MAX_THREADS];
    pthread_t th[REAP_MAX_THREADS];
    int started[REAP_MAX_THREADS] = {0};
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (range_job){fn, ud, n * i / n_threads, n * (i + 1) / n_threads, i};
    }
    for (int i = 1; i < n_threads; i++)
        started[i] = pthread_create(&th[i], NULL, range_job_run, &jobs[i]) == 0;
    range_job_run(&jobs[0]);
    for (int i = 1; i < n_threads; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            range_job_run(&jobs[i]);
    }
}

int reap_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

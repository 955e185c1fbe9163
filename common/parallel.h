/* parallel.h - a minimal parallel-for over pthreads with a static partition.
 *
 * reap_parallel_for(n_threads, n, fn, ud) calls fn(ud, begin, end, tid) on contiguous
 * chunks [begin, end) that partition [0, n): chunk i of n_threads covers
 * [n*i/n_threads, n*(i+1)/n_threads). The partition depends only on n and n_threads, and
 * each item is processed by exactly one call, so results are deterministic whenever fn
 * writes item-private outputs. Blocks until every chunk is done. The calling thread
 * runs chunk 0. If a thread cannot be created, its chunk runs on the caller.
 *
 * Thread rules: fn must be safe to run concurrently on disjoint chunks.
 */
#ifndef REAP_PARALLEL_H
#define REAP_PARALLEL_H

#include <stdint.h>

typedef void (*reap_range_fn)(void *ud, int64_t begin, int64_t end, int tid);

void reap_parallel_for(int n_threads, int64_t n, reap_range_fn fn, void *ud);

/* Number of online CPUs (at least 1). */
int reap_cpu_count(void);

#endif

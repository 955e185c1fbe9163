/* bench_hash.c - model_id hashing throughput (store/identity.h).
 *
 * Writes a fake checkpoint (config.json + N shards of random bytes) under --dir, then
 * measures, with the files in the page cache:
 *   1. BLAKE2b-256 (libsodium crypto_generichash) of a 4 MiB in-memory buffer: the
 *      compute ceiling of one core;
 *   2. reap_file_digest of one shard: read(2) in 4 MiB blocks + BLAKE2b, one core;
 *   3. reap_model_identify without a store at 1, 2, 4, ..., T threads (files hashed in
 *      parallel, one file per thread): wall GB/s and GB/s per CPU-second;
 *   4. reap_model_identify with a store, twice, after setting the files' mtime an hour
 *      back: the first call hashes and fills the cache, the second hashes nothing.
 * Cold reads are bounded by the disk, not measured here.
 *
 * usage: bench_hash --dir DIR [--shards N] [--shard-mb M] [--threads T]
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "identity.h"
#include "parallel.h"
#include "reap_err.h"
#include "store.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (every thread): a per-core rate that a shared,
 * loaded machine does not distort. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int write_file(const char *path, size_t bytes)
{
    struct stat sb;
    if (!stat(path, &sb) && (size_t)sb.st_size == bytes)
        return 0; /* reuse */
    FILE *f = fopen(path, "wb");
    size_t chunk = (size_t)4 << 20;
    unsigned char *buf = malloc(chunk);
    if (!f || !buf)
        return -1;
    for (size_t done = 0; done < bytes; done += chunk) {
        size_t n = bytes - done < chunk ? bytes - done : chunk;
        randombytes_buf(buf, n);
        if (fwrite(buf, 1, n, f) != n)
            return -1;
    }
    free(buf);
    return fclose(f);
}

/* Date the files an hour back, then let 3 s pass: the touch sets their ctime to now,
 * and files whose ctime is under 2 s old are not cached. */
static void age(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "touch -d '1 hour ago' '%s'/*", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "touch failed\n");
    sleep(3);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int shards = 4, shard_mb = 256, threads = reap_cpu_count();
    char p[4096];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--shards") && i + 1 < argc)
            shards = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shard-mb") && i + 1 < argc)
            shard_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_hash --dir DIR [--shards N] [--shard-mb M] "
                            "[--threads T]\n");
            return 2;
        }
    }
    if (!dir || shards < 1 || shard_mb < 1 || threads < 1 || sodium_init() < 0) {
        fprintf(stderr, "bench_hash: --dir is required (and positive sizes)\n");
        return 2;
    }
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/model", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/model/config.json", dir);
    FILE *cf = fopen(p, "w");
    if (!cf)
        return 1;
    fputs("{\"model_type\": \"qwen3_moe\"}\n", cf);
    fclose(cf);
    size_t shard_bytes = (size_t)shard_mb << 20;
    for (int i = 0; i < shards; i++) {
        snprintf(p, sizeof p, "%s/model/model-%05d-of-%05d.safetensors", dir, i + 1, shards);
        if (write_file(p, shard_bytes)) {
            fprintf(stderr, "bench_hash: cannot write %s\n", p);
            return 1;
        }
    }
    double total_gb = (double)shard_bytes * shards / 1e9;
    printf("fake checkpoint: %d shards x %d MiB = %.2f GB, %d CPUs\n", shards, shard_mb,
           total_gb, reap_cpu_count());

    /* 1. In-memory BLAKE2b, one core. */
    size_t mem = (size_t)4 << 20;
    unsigned char *buf = malloc(mem), out[32];
    randombytes_buf(buf, mem);
    double best = 1e30, best_cpu = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now(), c0 = cpu_now();
        for (int k = 0; k < 64; k++)
            crypto_generichash(out, 32, buf, mem, NULL, 0);
        double t = now() - t0, c = cpu_now() - c0;
        best = t < best ? t : best;
        best_cpu = c < best_cpu ? c : best_cpu;
    }
    printf("BLAKE2b-256 in memory, 1 thread:      %6.3f GB/s wall, %6.3f GB/s per CPU-second\n",
           64.0 * mem / 1e9 / best, 64.0 * mem / 1e9 / best_cpu);
    free(buf);

    /* Warm the page cache, then 2. one file through reap_file_digest. */
    reap_model_info mi = {0};
    reap_hash_stats hs;
    snprintf(p, sizeof p, "%s/model", dir);
    if (reap_model_identify(NULL, p, threads, &mi, &hs)) {
        fprintf(stderr, "bench_hash: %s\n", reap_err_msg());
        return 1;
    }
    reap_model_info_free(&mi);
    snprintf(p, sizeof p, "%s/model/model-%05d-of-%05d.safetensors", dir, 1, shards);
    best = best_cpu = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now(), c0 = cpu_now();
        if (reap_file_digest(p, out))
            return 1;
        double t = now() - t0, c = cpu_now() - c0;
        best = t < best ? t : best;
        best_cpu = c < best_cpu ? c : best_cpu;
    }
    printf("reap_file_digest, 1 file:             %6.3f GB/s wall, %6.3f GB/s per CPU-second\n",
           shard_bytes / 1e9 / best, shard_bytes / 1e9 / best_cpu);

    /* 3. Parallel identify without a store. */
    snprintf(p, sizeof p, "%s/model", dir);
    for (int t = 1; t <= threads; t = t * 2 > threads && t < threads ? threads : t * 2) {
        best = best_cpu = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double c0 = cpu_now();
            if (reap_model_identify(NULL, p, t, &mi, &hs)) {
                fprintf(stderr, "bench_hash: %s\n", reap_err_msg());
                return 1;
            }
            double c = cpu_now() - c0;
            reap_model_info_free(&mi);
            best = hs.seconds < best ? hs.seconds : best;
            best_cpu = c < best_cpu ? c : best_cpu;
        }
        printf("reap_model_identify, %d thread(s):    %6.3f GB/s wall, %6.3f GB/s per "
               "CPU-second\n", t, total_gb / best, total_gb / best_cpu);
    }

    /* 4. With the store's cache. */
    char st_dir[4096];
    reap_store *s = NULL;
    reap_store_opts so = {.create = 1};
    snprintf(st_dir, sizeof st_dir, "%s/store", dir);
    age(p);
    if (reap_store_open(st_dir, &so, &s)) {
        fprintf(stderr, "bench_hash: %s\n", reap_err_msg());
        return 1;
    }
    for (int pass = 0; pass < 2; pass++) {
        if (reap_model_identify(s, p, threads, &mi, &hs)) {
            fprintf(stderr, "bench_hash: %s\n", reap_err_msg());
            return 1;
        }
        reap_model_info_free(&mi);
        printf("with the store, pass %d: %d of %d files cached, %.2f GB hashed, %.4f s\n",
               pass + 1, hs.n_cached, hs.n_files, hs.bytes_hashed / 1e9, hs.seconds);
    }
    reap_store_close(s);
    return 0;
}

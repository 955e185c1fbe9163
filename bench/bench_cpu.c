/* bench_cpu.c - CPU engine throughput against the same machine's OpenBLAS sgemm.
 *
 * Generates a mid-size checkpoint (default: 4 layers, H 1024, 64 experts top-8, I 512,
 * 16/4 heads of 64, bf16) and 32 rows x 512 tokens of calibration data, scores it with
 * the CPU backend, and prints tokens/s, the achieved GFLOP/s on the useful FLOPs
 * (projections, causal attention over valid keys, router, routed experts only), the
 * sgemm GFLOP/s measured in the same process on expert-shaped matrices, their ratio and
 * the peak RSS; also the engine's own token-wise GEMM (cpu_gemm, row-independent) on the
 * same shape and threads, against that sgemm. Timings are wall clock; compare ratios,
 * not absolute numbers.
 *
 * usage: bench_cpu [--dir SCRATCH] [--layers N] [--rows N] [--seq-len N] [--threads N]
 */
#include <cblas.h>
#undef I
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "cpu_gemm.h"
#include "engine.h"
#include "genmodel.h"
#include "parallel.h"
#include "reap_err.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* sgemm GFLOP/s for C[M,N] = A[M,K] B[N,K]^T, best of `reps`. */
static double sgemm_gflops(int M, int N, int K, int reps)
{
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)N * K * 4),
          *c = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++)
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < (size_t)N * K; i++)
        b[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f,
                    c, N);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * M * N * K / best / 1e9;
}

/* The same for cpu_gemm on a pre-packed B (packed once, as load_layer does). */
static double cpu_gemm_gflops(int M, int N, int K, int reps, int threads)
{
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)N * K * 4),
          *bp = malloc((size_t)cpu_gemm_packed_len(N, K) * 4), *c = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++)
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < (size_t)N * K; i++)
        b[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    cpu_gemm_pack(bp, b, N, K);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cpu_gemm(threads, c, a, bp, M, N, K);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    free(a); free(b); free(bp); free(c);
    return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char **argv)
{
    const char *dir = "bench-cpu.tmp";
    int layers = 4, rows_n = 32, seq = 512, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rows")) rows_n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq-len")) seq = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (threads <= 0)
        threads = reap_cpu_count();
    mkdir(dir, 0755);
    char model[1024], calib[1024], cfgp[1100];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(calib, sizeof calib, "%s/calib.jsonl", dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", model);

    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = layers; spec.hidden = 1024; spec.n_heads = 16; spec.n_kv_heads = 4;
    spec.head_dim = 64; spec.n_experts = 64; spec.top_k = 8; spec.moe_inter = 512;
    spec.inter = 2048; spec.vocab = 4096; spec.n_shards = 2; spec.seed = 42;
    double t0 = now();
    if (reap_gen_model(&spec, model) ||
        reap_gen_calib(calib, rows_n, seq - 1, seq - 1, spec.vocab, 7)) {
        fprintf(stderr, "bench_cpu: %s\n", reap_err_msg());
        return 1;
    }
    fprintf(stderr, "generated model in %.1f s\n", now() - t0);

    reap_config cfg;
    reap_ckpt *ck;
    reap_samples s;
    reap_rows rows;
    if (reap_config_load(cfgp, &cfg) || reap_ckpt_open(model, &ck) ||
        reap_samples_read_jsonl(calib, 0, cfg.vocab, &s) ||
        reap_rows_build(&s, seq, 0, &rows)) {
        fprintf(stderr, "bench_cpu: %s\n", reap_err_msg());
        return 1;
    }
    /* sgemm reference on the engine's dominant shape: one expert's gate_up GEMM. */
    openblas_set_num_threads(threads);
    int ne = (int)(rows.n_valid * spec.top_k / spec.n_experts);
    double sgemm = sgemm_gflops(ne, 2 * spec.moe_inter, spec.hidden, 5);
    double kern = cpu_gemm_gflops(ne, 2 * spec.moe_inter, spec.hidden, 5, threads);

    reap_engine_opts eo = {.backend = &reap_backend_cpu,
                           .backend_opts = {.threads = threads, .batch_rows = 8}};
    reap_layer_stats *st;
    int n;
    t0 = now();
    if (reap_engine_score(ck, &cfg, &rows, &eo, &st, &n)) {
        fprintf(stderr, "bench_cpu: %s\n", reap_err_msg());
        return 1;
    }
    double dt = now() - t0;

    /* Useful FLOPs. Every sample fills its row exactly (no packing), so each row has
     * seq-1 valid positions; causal attention visits (i+1) keys for query i. */
    const double H = cfg.hidden, hd = cfg.head_dim, nH = cfg.n_heads, nKV = cfg.n_kv_heads;
    const double Nv = (double)rows.n_valid, T = (double)rows.n_rows * seq;
    const double Lv = seq - 1;
    double proj = 2.0 * T * H * (nH * hd + 2 * nKV * hd) + 2.0 * T * nH * hd * H;
    double attn = rows.n_rows * nH * 4.0 * hd * (Lv * (Lv + 1) / 2);
    double router = 2.0 * Nv * H * cfg.n_experts;
    double experts = 2.0 * Nv * cfg.n_experts_used * 3.0 * H * cfg.moe_inter;
    double flops = cfg.n_layers * (proj + attn + router + experts);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double gf = flops / dt / 1e9;
    printf("bench_cpu: %d layers, H %d, E %d top-%d, I %d, %d rows x %d, %d threads\n",
           cfg.n_layers, cfg.hidden, cfg.n_experts, cfg.n_experts_used, cfg.moe_inter,
           rows.n_rows, seq, threads);
    printf("  scoring time        %8.2f s\n", dt);
    printf("  tokens/s            %8.0f\n", Nv / dt);
    printf("  useful GFLOP/s      %8.1f   (%.1f GFLOP; experts %.0f%%)\n", gf, flops / 1e9,
           100.0 * cfg.n_layers * experts / flops);
    printf("  sgemm GFLOP/s       %8.1f   (M %d, N %d, K %d)\n", sgemm, ne,
           2 * spec.moe_inter, spec.hidden);
    printf("  ratio               %8.2f\n", gf / sgemm);
    printf("  cpu_gemm GFLOP/s    %8.1f   (same shape and threads, %s; %.2f of sgemm)\n",
           kern, cpu_gemm_kernel_name(), kern / sgemm);
    printf("  peak RSS            %8.1f MiB\n", ru.ru_maxrss / 1024.0);
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    reap_rows_free(&rows);
    reap_samples_free(&s);
    reap_ckpt_close(ck);
    reap_config_free(&cfg);
    return 0;
}

/* bench_cuda.c - throughput of the CUDA backend on Qwen3-MoE-sized layers.
 *
 * Builds synthetic layers in host memory (no checkpoint on disk: random bf16 weights in
 * the fused Qwen3-VL-MoE layout, or split with --split), drives the backend directly
 * (init, embed, then load_layer + forward_layer per layer) and reports per layer: upload
 * time, forward time, tokens/s, useful GFLOP/s (attention projections, causal attention,
 * router and the ROUTED expert FLOPs only), next to this GPU's cuBLAS bf16 and fp32 GEMM
 * rate measured in the same run, and the device memory the backend used.
 *
 * Models (--model): "large" = Qwen3-VL-235B-A22B widths (H 4096, 64/4 heads of 128,
 * E 128 top-8, I 1536), "small" = Qwen3-30B-A3B widths (H 2048, 32/4 heads of 128,
 * E 128 top-8, I 768). Usage:
 *   bench_cuda [--model large|small|both] [--precision bf16|fp32|both] [--layers N]
 *              [--rows R] [--seq S] [--split] [--job-rows R] [--job-layers L]
 *              [--no-fp32-gemm] [the backend's options of scorer/backend_cli.h:
 *              --parallel-layers N, --vram-gb G, --vram-buffer F, --cuda-attn auto|gemm,
 *              --cuda-experts loop|grouped, --cuda-profile, or their REAP_* variables]
 * --parallel-layers N: layers uploaded ahead through prefetch_layer (default 1; 0: none,
 * each load_layer copies synchronously). Per layer it reports the wait in load_layer, the
 * forward time and the wall time per layer (load + forward: with prefetch the upload of
 * layer L+1 overlaps the forward of L). The projection for the full job (--job-rows x
 * seq positions, --job-layers layers; default 300 x 2048 x 94) scales the forward time
 * per token and adds the uploads that compute does not hide.
 * Output: a human-readable table on stdout and one "RESULT ..." line per configuration.
 * Without a CUDA device it prints SKIPPED and exits 77.
 * Environment: REAP_CUDA_ATTN=gemm, REAP_CUDA_EXPERTS=grouped, REAP_CUDA_PROFILE=1 and
 * the other variables of scorer/backend_cli.h, read here through that option table.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "backend_cli.h"
#include "cli.h"
#include "reap_err.h"
#include "weights.h"

typedef struct bench_model {
    const char *name;
    int H, nH, nKV, hd, E, K, I, V;
} bench_model;

static const bench_model MODELS[] = {
    {"large", 4096, 64, 4, 128, 128, 8, 1536, 32768},
    {"small", 2048, 32, 4, 128, 128, 8, 768, 32768},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n bf16 values uniform in [-a, a]: a random 32 MiB block, tiled (experts land on
 * different offsets of the block, so they differ). */
static uint16_t *random_bf16(size_t n, float a)
{
    const size_t blk = (size_t)16 << 20;
    uint16_t *v = malloc(n * sizeof *v);
    if (!v) return NULL;
    const size_t m = n < blk ? n : blk;
    for (size_t i = 0; i < m; i++) {
        float u = (float)((rng_next() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        v[i] = reap_f32_to_bf16(u * a);
    }
    for (size_t i = m; i < n; i += m)
        memcpy(v + i, v, (n - i < m ? n - i : m) * sizeof *v);
    return v;
}

static st_tensor view(const char *name, const void *data, int ndim, int64_t d0, int64_t d1,
                      int64_t d2)
{
    st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = ST_BF16;
    t.ndim = ndim;
    t.shape[0] = d0;
    t.shape[1] = d1;
    t.shape[2] = d2;
    t.numel = d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    t.nbytes = (uint64_t)t.numel * 2;
    t.data = data;
    return t;
}

/* cuBLAS GEMM rate (TFLOP/s) for C[m,n] = A[m,k] B[k,n] in bf16 (fp32 accumulate) or
 * plain fp32, median of 10 timed runs after 3 warm-ups. */
static double gemm_rate(int m, int n, int k, int bf16)
{
    void *A = NULL, *B = NULL, *C = NULL;
    cublasHandle_t h = NULL;
    cudaEvent_t e0, e1;
    double best = -1;
    const size_t es = bf16 ? 2 : 4;
    if (cudaMalloc(&A, (size_t)m * k * es) || cudaMalloc(&B, (size_t)k * n * es) ||
        cudaMalloc(&C, (size_t)m * n * 4) || cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
        goto done;
    cudaMemset(A, 0x3c, (size_t)m * k * es); /* small finite values */
    cudaMemset(B, 0x3c, (size_t)k * n * es);
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    float ms[13];
    for (int i = 0; i < 13; i++) {
        cudaEventRecord(e0, 0);
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, A, t, k, B, t, k, &beta, C,
                     CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms[i], e0, e1);
    }
    /* median of the last 10 */
    for (int i = 3; i < 13; i++)
        for (int j = i + 1; j < 13; j++)
            if (ms[j] < ms[i]) {
                float x = ms[i];
                ms[i] = ms[j];
                ms[j] = x;
            }
    best = 2.0 * m * n * k / (ms[8] * 1e-3) / 1e12;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
done:
    if (h) cublasDestroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    return best;
}

typedef struct layer_host {
    uint16_t *norm;                 /* [max(H, hd)] ones */
    uint16_t *q, *k, *v, *o, *router;
    uint16_t *experts;              /* fused gate_up then down, or one split pool */
    st_tensor t_in, t_post, t_q, t_k, t_v, t_o, t_qn, t_kn, t_router, t_gu, t_down;
    st_tensor *t_gate, *t_up, *t_dn;
    const st_tensor **p_gate, **p_up, **p_dn;
} layer_host;

typedef struct bench_opts {
    int n_layers, n_rows, S, split, prefetch, job_rows, job_layers;
    reap_backend_opts backend;  /* memory plan, kernels, profiling (backend_cli.h) */
} bench_opts;

static int run_config(const bench_model *m, int precision, const bench_opts *bo,
                      double gemm_bf16)
{
    const int n_layers = bo->n_layers, n_rows = bo->n_rows, S = bo->S, split = bo->split;
    const reap_backend_i *be = reap_backend_cuda();
    const int H = m->H, nH = m->nH, nKV = m->nKV, hd = m->hd, E = m->E, K = m->K, I = m->I;
    const int64_t T = (int64_t)n_rows * S;
    reap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    cfg.n_layers = n_layers;
    cfg.hidden = H;
    cfg.n_heads = nH;
    cfg.n_kv_heads = nKV;
    cfg.head_dim = hd;
    cfg.vocab = m->V;
    cfg.n_experts = E;
    cfg.n_experts_used = K;
    cfg.moe_inter = I;
    cfg.norm_topk_prob = 1;
    cfg.decoder_sparse_step = 1;
    cfg.rms_eps = 1e-6;
    cfg.rope_theta = 5e6;

    reap_rows rows = {.n_rows = n_rows, .seq_len = S};
    rows.tokens = malloc((size_t)T * sizeof *rows.tokens);
    rows.mask = malloc((size_t)T);
    for (int64_t t = 0; t < T; t++) {
        rows.tokens[t] = (int32_t)(rng_next() % (uint64_t)m->V);
        rows.mask[t] = 1;
    }
    rows.n_valid = T;

    /* host weights */
    layer_host L;
    memset(&L, 0, sizeof L);
    const int64_t qd = (int64_t)nH * hd, kvd = (int64_t)nKV * hd;
    L.norm = malloc((size_t)H * 2);
    for (int i = 0; i < H; i++) L.norm[i] = reap_f32_to_bf16(1.0f);
    L.q = random_bf16((size_t)(qd * H), sqrtf(3.0f / H));
    L.k = random_bf16((size_t)(kvd * H), sqrtf(3.0f / H));
    L.v = random_bf16((size_t)(kvd * H), sqrtf(3.0f / H));
    L.o = random_bf16((size_t)(H * qd), sqrtf(3.0f / (float)qd));
    L.router = random_bf16((size_t)E * H, 2.0f * sqrtf(3.0f / H));
    uint16_t *embed = random_bf16((size_t)m->V * H, 1.7f);
    const size_t ex_gu = (size_t)2 * I * H, ex_d = (size_t)H * I;
    L.experts = random_bf16((size_t)E * (ex_gu + ex_d), sqrtf(3.0f / H));
    if (!L.norm || !L.q || !L.k || !L.v || !L.o || !L.router || !embed || !L.experts ||
        !rows.tokens || !rows.mask) {
        fprintf(stderr, "bench: host allocation failed\n");
        return 1;
    }
    L.t_in = view("input_layernorm", L.norm, 1, H, 0, 0);
    L.t_post = view("post_attention_layernorm", L.norm, 1, H, 0, 0);
    L.t_qn = view("q_norm", L.norm, 1, hd, 0, 0);
    L.t_kn = view("k_norm", L.norm, 1, hd, 0, 0);
    L.t_q = view("q_proj", L.q, 2, qd, H, 0);
    L.t_k = view("k_proj", L.k, 2, kvd, H, 0);
    L.t_v = view("v_proj", L.v, 2, kvd, H, 0);
    L.t_o = view("o_proj", L.o, 2, H, qd, 0);
    L.t_router = view("router", L.router, 2, E, H, 0);
    st_tensor t_embed = view("embed_tokens", embed, 2, m->V, H, 0);
    reap_layer_weights w;
    memset(&w, 0, sizeof w);
    w.is_moe = 1;
    w.input_norm = &L.t_in;
    w.post_norm = &L.t_post;
    w.q_proj = &L.t_q;
    w.k_proj = &L.t_k;
    w.v_proj = &L.t_v;
    w.o_proj = &L.t_o;
    w.q_norm = &L.t_qn;
    w.k_norm = &L.t_kn;
    w.router = &L.t_router;
    if (split) {
        L.t_gate = calloc((size_t)E, sizeof(st_tensor));
        L.t_up = calloc((size_t)E, sizeof(st_tensor));
        L.t_dn = calloc((size_t)E, sizeof(st_tensor));
        L.p_gate = calloc((size_t)E, sizeof(void *));
        L.p_up = calloc((size_t)E, sizeof(void *));
        L.p_dn = calloc((size_t)E, sizeof(void *));
        for (int e = 0; e < E; e++) {
            const uint16_t *base = L.experts + (size_t)e * (ex_gu + ex_d);
            L.t_gate[e] = view("gate_proj", base, 2, I, H, 0);
            L.t_up[e] = view("up_proj", base + ex_gu / 2, 2, I, H, 0);
            L.t_dn[e] = view("down_proj", base + ex_gu, 2, H, I, 0);
            L.p_gate[e] = &L.t_gate[e];
            L.p_up[e] = &L.t_up[e];
            L.p_dn[e] = &L.t_dn[e];
        }
        w.layout = REAP_EXPERTS_SPLIT;
        w.gate = L.p_gate;
        w.up = L.p_up;
        w.down = L.p_dn;
    } else {
        L.t_gu = view("gate_up_proj", L.experts, 3, E, H, 2 * I);
        L.t_down = view("down_proj", L.experts + (size_t)E * ex_gu, 3, E, I, H);
        w.layout = REAP_EXPERTS_FUSED;
        w.gate_up = &L.t_gu;
        w.down_fused = &L.t_down;
    }

    size_t free0 = 0, total = 0, free1 = 0, free_min;
    cudaMemGetInfo(&free0, &total);
    free_min = free0;
    reap_backend_opts opts = bo->backend;
    opts.device = 0;
    opts.precision = precision;
    void *ctx = NULL;
    double t0 = now();
    int rc = be->init(&cfg, &rows, &opts, &ctx);
    if (rc) {
        fprintf(stderr, "bench: init: %s\n", reap_err_msg());
        return 1;
    }
    const double t_init = now() - t0;
    t0 = now();
    if ((rc = be->embed(ctx, &t_embed))) {
        fprintf(stderr, "bench: embed: %s\n", reap_err_msg());
        be->free(ctx); /* stops the backend's upload thread before exit */
        return 1;
    }
    const double t_embed_s = now() - t0;
    cudaMemGetInfo(&free1, &total);
    if (free1 < free_min) free_min = free1;

    /* useful FLOPs per layer */
    const double f_proj = 2.0 * T * H * (double)(qd + 2 * kvd) + 2.0 * T * qd * H;
    const double f_attn = 4.0 * hd * nH * (double)n_rows * ((double)S * (S + 1) / 2);
    const double f_router = 2.0 * T * H * E;
    const double f_experts = 6.0 * T * K * (double)H * I;
    const double f_layer = f_proj + f_attn + f_router + f_experts;

    printf("model %s (%s experts), %s, %d rows x %d = %lld tokens, %d layers\n", m->name,
           split ? "split" : "fused", precision == REAP_PRECISION_BF16 ? "bf16" : "fp32",
           n_rows, S, (long long)T, n_layers);
    printf("  init %.3f s, embed %.3f s\n", t_init, t_embed_s);
    printf("  %-6s %10s %10s %10s %12s %12s\n", "layer", "load s", "fwd s", "layer s",
           "tokens/s", "GFLOP/s");
    double sum_fwd = 0, sum_load = 0;
    for (int layer = 0; layer < n_layers; layer++) {
        reap_layer_stats st;
        w.layer = layer;
        reap_layer_stats_init(&st, layer, E, K);
        t0 = now();
        if ((rc = be->load_layer(ctx, &w))) {
            fprintf(stderr, "bench: load_layer: %s\n", reap_err_msg());
            be->free(ctx);
            return 1;
        }
        /* the next layers' uploads start now and overlap this forward (the same host
         * weights under another layer index: a different layer for the backend) */
        for (int j = layer + 1; be->prefetch_layer && j <= layer + bo->prefetch && j < n_layers;
             j++) {
            reap_layer_weights nw = w;
            nw.layer = j;
            if ((rc = be->prefetch_layer(ctx, &nw))) {
                fprintf(stderr, "bench: prefetch_layer: %s\n", reap_err_msg());
                be->free(ctx);
                return 1;
            }
        }
        double t_load = now() - t0;
        t0 = now();
        if ((rc = be->forward_layer(ctx, &st))) {
            fprintf(stderr, "bench: forward_layer: %s\n", reap_err_msg());
            reap_layer_stats_free(&st);
            be->free(ctx);
            return 1;
        }
        double t_fwd = now() - t0;
        cudaMemGetInfo(&free1, &total);
        if (free1 < free_min) free_min = free1;
        int64_t routed = 0, used = 0;
        for (int e = 0; e < E; e++) {
            routed += st.count[e];
            used += st.count[e] > 0;
        }
        printf("  %-6d %10.3f %10.4f %10.4f %12.0f %12.0f   (routed pairs %lld, experts hit "
               "%lld)\n", layer, t_load, t_fwd, t_load + t_fwd, T / t_fwd, f_layer / t_fwd / 1e9,
               (long long)routed, (long long)used);
        if (layer > 0 || n_layers == 1) {
            sum_fwd += t_fwd;
            sum_load += t_load;
        }
        reap_layer_stats_free(&st);
    }
    const int n_avg = n_layers > 1 ? n_layers - 1 : 1;
    const double fwd = sum_fwd / n_avg, load = sum_load / n_avg;
    const double used_gib = (double)(free0 - free_min) / (1 << 30);
    const double wbytes = 2.0 * ((double)E * (ex_gu + ex_d) + (double)(2 * qd + 2 * kvd) * H +
                                 (double)E * H);
    /* full job: the forward scales with tokens. Without prefetch a layer costs its
     * forward plus its upload (the load time). With prefetch the next upload runs during
     * the forward; here a layer takes load wait + forward, which bounds the upload time,
     * so a job layer takes max(job forward, that bound). */
    const double job_tokens = (double)bo->job_rows * S;
    const double job_fwd = fwd * job_tokens / (double)T;
    const double job_layer = bo->prefetch > 0 ? fmax(job_fwd, load + fwd) : job_fwd + load;
    const double job_s = job_layer * bo->job_layers;
    printf("  mean over layers 1..: load wait %.3f s, forward %.4f s, layer %.4f s, "
           "%.0f tokens/s, %.1f TFLOP/s useful (experts %.0f%% of FLOPs)%s\n",
           load, fwd, load + fwd, T / fwd, f_layer / fwd / 1e12, 100.0 * f_experts / f_layer,
           bo->prefetch > 0 ? ", uploads prefetched" : "");
    if (bo->prefetch <= 0)
        printf("  upload: %.1f GB/s of bf16 weights (host RAM -> device, converted)\n",
               wbytes / load / 1e9);
    if (gemm_bf16 > 0 && precision == REAP_PRECISION_BF16)
        printf("  %.0f%% of the measured cuBLAS bf16 GEMM rate (%.0f TFLOP/s)\n",
               100.0 * f_layer / fwd / 1e12 / gemm_bf16, gemm_bf16);
    printf("  projected job (%d layers x %d rows x %d): %.1f s per layer, %.1f min\n",
           bo->job_layers, bo->job_rows, S, job_layer, job_s / 60.0);
    printf("  device memory used by the backend: %.2f GiB of %.1f GiB\n", used_gib,
           (double)total / (1 << 30));
    printf("RESULT model=%s layout=%s precision=%s tokens=%lld load_s=%.3f fwd_s=%.4f "
           "layer_s=%.4f tokens_per_s=%.0f useful_tflops=%.2f pct_gemm=%.1f job_min=%.2f "
           "prefetch=%d mem_gib=%.2f\n",
           m->name, split ? "split" : "fused", precision == REAP_PRECISION_BF16 ? "bf16" : "fp32",
           (long long)T, load, fwd, load + fwd, T / fwd, f_layer / fwd / 1e12,
           gemm_bf16 > 0 ? 100.0 * f_layer / fwd / 1e12 / gemm_bf16 : 0.0, job_s / 60.0,
           bo->prefetch, used_gib);
    be->free(ctx);
    free(L.norm); free(L.q); free(L.k); free(L.v); free(L.o); free(L.router); free(L.experts);
    free(L.t_gate); free(L.t_up); free(L.t_dn); free(L.p_gate); free(L.p_up); free(L.p_dn);
    free(embed);
    free(rows.tokens);
    free(rows.mask);
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *prec = NULL;
    long n_layers = 0, n_rows = 0, seq = 0, job_rows = 0, job_layers = 0;
    int split = 0, no_fp32_gemm = 0, help = 0;
    scorer_backend_cli bcli;
    bench_opts bo = {0};
    const cli_opt mine[] = {
        {"model", NULL, CLI_STR, "both", "large, small or both", &model, 0},
        {"precision", NULL, CLI_STR, "both", "bf16, fp32 or both", &prec, 0},
        {"layers", NULL, CLI_INT, "3", "layers per run", &n_layers, 0},
        {"rows", NULL, CLI_INT, "32", "calibration rows", &n_rows, 0},
        {"seq", NULL, CLI_INT, "2048", "positions per row", &seq, 0},
        {"split", NULL, CLI_FLAG, NULL, "per-expert tensors instead of fused", &split, 0},
        {"job-rows", NULL, CLI_INT, "300", "rows of the projected full job", &job_rows, 0},
        {"job-layers", NULL, CLI_INT, "94", "layers of the projected full job", &job_layers,
         0},
        {"no-fp32-gemm", NULL, CLI_FLAG, NULL, "skip the fp32 cuBLAS reference rate",
         &no_fp32_gemm, 0},
    };
    cli_opt opts[sizeof mine / sizeof mine[0] + SCORER_BACKEND_CLI_N];
    int n_opts = (int)(sizeof mine / sizeof mine[0]);
    char err[512];
    memcpy(opts, mine, sizeof mine);
    n_opts += scorer_backend_cli_options(&bcli, opts + n_opts, SCORER_BACKEND_CLI_N);
    if (cli_parse(opts, n_opts, argc, argv, 1, &help, err, sizeof err) ||
        (!help && scorer_backend_cli_apply(&bcli, &bo.backend, err, sizeof err))) {
        fprintf(stderr, "bench: %s\n", err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: bench_cuda [options]", opts, n_opts);
        return 0;
    }
    const int fp32_gemm = !no_fp32_gemm;
    bo.n_layers = (int)n_layers;
    bo.n_rows = (int)n_rows;
    bo.S = (int)seq;
    bo.split = split;
    bo.prefetch = bo.backend.prefetch_layers > 0 ? bo.backend.prefetch_layers : 0;
    bo.job_rows = (int)job_rows;
    bo.job_layers = (int)job_layers;
    if (bo.n_layers < 1 || bo.n_rows < 1 || bo.S < 1 || bo.job_rows < 1 || bo.job_layers < 1) {
        fprintf(stderr, "bench: --layers, --rows, --seq, --job-rows, --job-layers must be >= 1\n");
        return 2;
    }
    if (!reap_backend_cuda() || reap_cuda_available() < 1) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    printf("device: %s, %d SMs, %.1f GiB\n", p.name, p.multiProcessorCount,
           (double)p.totalGlobalMem / (1 << 30));
    /* reference GEMM rates: an expert-shaped GEMM and a large square one */
    const double bf_exp = gemm_rate(3072, 16384, 4096, 1), bf_sq = gemm_rate(8192, 8192, 8192, 1);
    const double f32_exp = fp32_gemm ? gemm_rate(3072, 16384, 4096, 0) : 0;
    const double f32_sq = fp32_gemm ? gemm_rate(8192, 8192, 8192, 0) : 0;
    const double bf_best = bf_exp > bf_sq ? bf_exp : bf_sq;
    printf("cuBLAS reference: bf16 %.0f TFLOP/s (3072x16384x4096), %.0f TFLOP/s (8192^3); "
           "fp32 %.1f TFLOP/s (3072x16384x4096), %.1f TFLOP/s (8192^3)\n",
           bf_exp, bf_sq, f32_exp, f32_sq);
    printf("RESULT gemm bf16_tflops=%.1f bf16_square_tflops=%.1f bf16_best_tflops=%.1f "
           "fp32_tflops=%.2f fp32_square_tflops=%.2f\n", bf_exp, bf_sq, bf_best, f32_exp,
           f32_sq);
    int rc = 0;
    for (size_t mi = 0; mi < sizeof MODELS / sizeof MODELS[0]; mi++) {
        if (strcmp(model, "both") && strcmp(model, MODELS[mi].name)) continue;
        for (int pr = REAP_PRECISION_BF16; pr >= REAP_PRECISION_FP32; pr--) {
            if (!strcmp(prec, "bf16") && pr != REAP_PRECISION_BF16) continue;
            if (!strcmp(prec, "fp32") && pr != REAP_PRECISION_FP32) continue;
            rc |= run_config(&MODELS[mi], pr, &bo, bf_best);
        }
    }
    return rc;
}

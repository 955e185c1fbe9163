/* backend_cuda.cu - the CUDA backend: the forward pass of backend.h on one GPU.
 *
 * One file on purpose: it mirrors backend_cpu.c block by block, so the two are read side
 * by side; the kernels are kernels.cuh / flash_attn.cuh, the uploads upload.cu, the
 * memory plan cuda_plan.c.
 *
 * Hidden states [T, H] fp32, tokens and mask stay resident on the device. Weights arrive
 * per layer through upload.cu (pinned staging, a copy stream, 1 + P weight sets so layer
 * L + 1 is copied in while layer L computes). The memory plan (cuda_plan.c) fixes the
 * micro-batch: a layer runs over chunks of consecutive calibration rows (attention never
 * crosses a row, so a whole layer runs chunk by chunk):
 *
 *   attention_block: rmsnorm -> fused q|k|v GEMM -> q/k head norms + RoPE (at each
 *                    slot's position, positions.h, uploaded once at init) ->
 *                    bf16: k_flash_attn (tiled, online softmax, causal tiles only);
 *                    fp32 (and opts->attn REAP_CUDA_ATTN_GEMM, the reference): per (row, head)
 *                    batch scores GEMM -> causal masked softmax -> values GEMM ->
 *                    o GEMM accumulated into the residual (beta = 1)
 *   moe_block:       rmsnorm -> router GEMM (always fp32) -> softmax/top-k ->
 *                    count per expert -> stable scatter (expert, token, slot) ->
 *                    gather routed rows -> per expert gate_up GEMM -> SwiGLU ->
 *                    down GEMM -> per-pair norm/max -> combine into the residual
 *                    (opts->experts REAP_CUDA_EXPERTS_GROUPED: the per-expert
 *                    GEMMs as one cublasGemmGroupedBatchedEx call each)
 *   mlp_block:       rmsnorm -> gate_up GEMM -> SwiGLU -> down GEMM into the residual
 *
 * Precision: REAP_PRECISION_FP32 runs every GEMM in plain fp32 (CUBLAS_DEFAULT_MATH, no
 * TF32); REAP_PRECISION_BF16 stores weights and GEMM inputs in bf16 with fp32
 * accumulation and fp32 outputs. Norms, softmax, RoPE and statistics are fp32/fp64 in
 * both modes; the router GEMM is fp32 in both.
 *
 * Statistics: the router writes (expert id, gate) for every (token, slot) of the layer
 * into layer-wide arrays, the expert pass writes (||f||, max f) beside them, and after
 * the last chunk one block per expert reduces them in token order (fp64 sums, integer
 * counts), so the statistics do not depend on the chunk size.
 * Routes observer (opts->on_routes): after the last chunk the layer-wide ids and weights
 * are copied to the host, the valid positions' rows kept, and the observer called; without
 * an observer nothing is copied.
 * Determinism: no floating-point atomics; run to run the results are bit-identical for
 * a given device, cuBLAS version and micro-batch. The micro-batch depends on the memory
 * budget (opts->vram_gb pins it; batch_rows forces it).
 *
 * Dimension legend: see cuda_impl.h.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "kernels.cuh"
#include "flash_attn.cuh" /* after kernels.cuh: uses its RF_* bits */

typedef __nv_bfloat16 bf16;

/* Mark the end of profiling phase i - 1 / start of phase i (no-op unless profiling). */
#define PROF(c, i)                                                                      \
    do {                                                                                \
        if ((c)->prof) cudaEventRecord((c)->ev[i], (c)->st);                            \
    } while (0)
static const char *const PROF_NAMES[6] = {"norm+qkv+rope", "attention", "o_proj",
                                          "route+permute", "experts", "stats+combine"};

#define DALLOC(ptr, bytes, what)                                                        \
    do {                                                                                \
        if ((rc = dalloc(c, (void **)&(ptr), (bytes), (what)))) return rc;              \
    } while (0)

/* ---- GEMM wrapper ----------------------------------------------------------------------- */

/* Y[n, out] (ldy) = beta * Y + X[n, in] (ldx) * W^T, all row-major. W is [out, in]
 * (nn.Linear, w_t = 0) or [in, out] (w_t = 1). */
static int linear(cuda_ctx *c, const char *what, int n, int in, int out, const void *X,
                  cudaDataType_t xt, int ldx, const void *W, cudaDataType_t wt, int w_t,
                  void *Y, cudaDataType_t yt, int ldy, float beta)
{
    if (n == 0 || out == 0) return REAP_OK;
    const float alpha = 1.0f;
    CB(cublasGemmEx(c->blas, w_t ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha,
                    W, wt, w_t ? out : in, X, xt, ldx, &beta, Y, yt, ldy, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT),
       what);
    return REAP_OK;
}

/* ---- init / free ----------------------------------------------------------------------- */

static void cuda_free(void *ctx)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c) return;
    upload_free(c);
    void *dev[] = {c->d_flag, c->d_hidden, c->d_tok, c->d_mask, c->d_modality, c->d_pos, c->d_plane,
                   c->d_scat_slots, c->d_scat, c->d_cos, c->d_sin,
                   c->d_ids, c->d_g, c->d_nrm, c->d_mx, c->x32, c->arena, c->d_cnt,
                   c->d_off, c->d_scnt, c->d_sgn, c->d_sn, c->d_sg, c->d_smx, c->d_gptr};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->xc && c->xc != c->x32) cudaFree(c->xc);
    if (c->h_cnt) cudaFreeHost(c->h_cnt);
    if (c->h_off) cudaFreeHost(c->h_off);
    if (c->h_gptr) cudaFreeHost(c->h_gptr);
    free(c->h_gint);
    free(c->h_gscal);
    free(c->h_gop);
    free(c->h_scnt);
    free(c->h_sgn);
    free(c->h_sn);
    free(c->h_sg);
    free(c->h_smx);
    free(c->h_ids);
    free(c->h_g);
    free(c->h_valid);
    for (int i = 0; i < 7; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    if (c->blas) cublasDestroy(c->blas);
    if (c->st) cudaStreamDestroy(c->st);
    free(c);
}

/* Plan from the budget (cuda_plan.c), then allocate the resident state, the chunk
 * workspace and (upload_init) the weight sets and staging slots. */
static int plan_and_allocate(cuda_ctx *c, const reap_config *cfg, const reap_rows *rows,
                             const reap_backend_opts *opts)
{
    int rc;
    size_t fr = 0, tot = 0;
    CU(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    reap_cuda_plan_req req;
    memset(&req, 0, sizeof req);
    req.n_rows = c->n_rows;
    req.seq_len = c->S;
    req.precision = c->precision;
    req.batch_rows = opts ? opts->batch_rows : 0;
    req.prefetch_layers = c->settings.prefetch_layers;
    req.attn_gemm = c->settings.attn_gemm;
    req.budget_bytes = reap_cuda_plan_budget(&c->settings, (int64_t)fr);
    req.images = rows->n_spans > 0;
    if ((rc = reap_cuda_plan_make(cfg, &req, &c->plan)))
        return reap_err_prefix(rc, "cuda backend (%zu of %zu bytes free on device %d)", fr,
                               tot, c->device);
    const reap_cuda_plan *p = &c->plan;
    c->chunk_rows = p->chunk_rows;
    c->attn_nb = p->attn_pairs;
    c->flash = p->attn_flash;

    const size_t T = (size_t)c->T, TK = T * c->K, H = c->H, esz = c->esz;
    const size_t Tc = (size_t)p->chunk_tokens;
    DALLOC(c->d_flag, sizeof(int), "flag");
    DALLOC(c->d_hidden, T * H * 4, "hidden states");
    DALLOC(c->d_tok, T * 4, "tokens");
    DALLOC(c->d_mask, T, "mask");
    DALLOC(c->d_pos, 3 * T * 4, "positions");
    DALLOC(c->d_plane, (size_t)(c->hd / 2), "mRoPE planes");
    DALLOC(c->d_cos, (size_t)c->n_pos * (c->hd / 2) * 4, "rope cos");
    DALLOC(c->d_sin, (size_t)c->n_pos * (c->hd / 2) * 4, "rope sin");
    if (c->E > 0) {
        DALLOC(c->d_ids, TK * 4, "routing ids");
        DALLOC(c->d_g, TK * 8, "routing weights");
        DALLOC(c->d_nrm, TK * 8, "pair norms");
        DALLOC(c->d_mx, TK * 4, "pair max");
        DALLOC(c->d_cnt, (size_t)c->E * 4, "counts");
        DALLOC(c->d_off, (size_t)c->E * 4, "offsets");
        DALLOC(c->d_scnt, (size_t)c->E * 8, "stat counts");
        DALLOC(c->d_sgn, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_sn, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_sg, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_smx, (size_t)c->E * 4, "stat max");
        DALLOC(c->d_gptr, (size_t)6 * c->E * sizeof(void *), "grouped GEMM pointers");
        CU(cudaMallocHost((void **)&c->h_cnt, (size_t)c->E * sizeof(int)), "cudaMallocHost");
        CU(cudaMallocHost((void **)&c->h_off, (size_t)c->E * sizeof(int)), "cudaMallocHost");
        CU(cudaMallocHost((void **)&c->h_gptr, (size_t)6 * c->E * sizeof(void *)),
           "cudaMallocHost");
        c->h_gint = (int *)malloc((size_t)9 * c->E * sizeof(int));
        c->h_gscal = (float *)malloc((size_t)2 * c->E * sizeof(float));
        c->h_gop = (cublasOperation_t *)malloc((size_t)2 * c->E * sizeof(cublasOperation_t));
        c->h_scnt = (long long *)malloc((size_t)c->E * sizeof(long long));
        c->h_sgn = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_sn = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_sg = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_smx = (float *)malloc((size_t)c->E * sizeof(float));
        if (!c->h_scnt || !c->h_sgn || !c->h_sn || !c->h_sg || !c->h_smx || !c->h_gint ||
            !c->h_gscal || !c->h_gop)
            return reap_err_set(REAP_E_NOMEM, "cuda backend: host statistics buffers");
    }
    DALLOC(c->x32, Tc * H * 4, "normed activations");
    if (c->precision == REAP_PRECISION_BF16)
        DALLOC(c->xc, Tc * H * esz, "normed activations (bf16)");
    else
        c->xc = c->x32;
    DALLOC(c->arena, (size_t)p->arena.bytes, "chunk workspace");
    const reap_cuda_arena *a = &p->arena;
    char *b = c->arena;
    c->qkv32 = (float *)(b + a->qkv32);
    c->qkvc = b + a->qkvc;
    c->attn = b + a->attn;
    c->s32 = c->flash ? NULL : (float *)(b + a->s32);
    c->pc = c->flash ? NULL : (void *)(b + a->pc);
    c->ptrs = c->flash ? NULL : (void **)(b + a->ptrs);
    c->logits = (float *)(b + a->logits);
    c->perm = (int32_t *)(b + a->perm);
    c->inv = (int32_t *)(b + a->inv);
    c->hh = b + a->hh;
    c->xg = b + a->xg;
    c->gu = (float *)(b + a->gu);
    c->y = (float *)(b + a->y);
    return upload_init(c);
}

/* Raise the dynamic shared-memory limit of the attention kernel for this head dim. */
static int flash_setup(cuda_ctx *c)
{
    const int bytes = fa_smem_bytes(c->hd);
    cudaError_t e = cudaSuccess;
    switch (c->hd) {
    case 16: e = cudaFuncSetAttribute(k_flash_attn<16>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes); break;
    case 32: e = cudaFuncSetAttribute(k_flash_attn<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes); break;
    case 64: e = cudaFuncSetAttribute(k_flash_attn<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes); break;
    case 128: e = cudaFuncSetAttribute(k_flash_attn<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes); break;
    default: return reap_err_set(REAP_E_INTERNAL, "flash attention: head_dim %d", c->hd);
    }
    CU(e, "cudaFuncSetAttribute(flash attention)");
    return REAP_OK;
}

static int modality_upload(cuda_ctx *c, const reap_rows *rows);

static int cuda_init(const reap_config *cfg, const reap_rows *rows,
                     const reap_backend_opts *opts, void **out)
{
    int rc, ndev = 0;
    *out = NULL;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev < 1) {
        cudaGetLastError();
        return reap_err_set(REAP_E_DEVICE, "cuda backend: no CUDA device (%s)",
                            e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    const int dev = opts ? opts->device : 0;
    if (dev < 0 || dev >= ndev)
        return reap_err_set(REAP_E_INVALID, "cuda backend: device %d out of range (%d devices)",
                            dev, ndev);
    if (cfg->head_dim < 2 || cfg->head_dim % 2 || cfg->n_heads < 1 || cfg->n_kv_heads < 1 ||
        cfg->n_heads % cfg->n_kv_heads || cfg->hidden < 1)
        return reap_err_set(REAP_E_INVALID, "cuda backend: bad attention shape (heads %d/%d, "
                            "head_dim %d)", cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    if (cfg->n_experts > MAX_EXPERTS || cfg->n_experts_used > MAX_TOPK ||
        (cfg->n_experts > 0 && (cfg->n_experts_used < 1 || cfg->n_experts_used > cfg->n_experts)))
        return reap_err_set(REAP_E_UNSUPPORTED, "cuda backend: %d experts, top-%d (at most %d "
                            "experts and top-%d)", cfg->n_experts, cfg->n_experts_used,
                            MAX_EXPERTS, MAX_TOPK);
    if (rows->n_rows < 1 || rows->seq_len < 1)
        return reap_err_set(REAP_E_INVALID, "cuda backend: no calibration positions");

    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return reap_err_set(REAP_E_NOMEM, "cuda backend: context");
    snprintf(c->where, sizeof c->where, "cuda init");
    if ((rc = reap_cuda_settings_resolve(opts, &c->settings))) {
        free(c);
        return rc;
    }
    c->device = dev;
    c->precision = opts && opts->precision == REAP_PRECISION_BF16 ? REAP_PRECISION_BF16
                                                                   : REAP_PRECISION_FP32;
    c->esz = c->precision == REAP_PRECISION_BF16 ? 2 : 4;
    c->ctype = c->precision == REAP_PRECISION_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    c->H = cfg->hidden;
    c->nH = cfg->n_heads;
    c->nKV = cfg->n_kv_heads;
    c->hd = cfg->head_dim;
    c->QKV = (c->nH + 2 * c->nKV) * c->hd;
    c->E = cfg->n_experts > 0 ? cfg->n_experts : 0;
    c->K = c->E > 0 ? cfg->n_experts_used : 0;
    c->I = cfg->moe_inter;
    c->Id = cfg->inter;
    c->V = cfg->vocab;
    c->norm_topk = cfg->norm_topk_prob;
    c->eps = (float)cfg->rms_eps;
    c->n_rows = rows->n_rows;
    c->S = rows->seq_len;
    c->n_pos = reap_positions_limit(c->S);
    c->T = (int64_t)rows->n_rows * rows->seq_len;
    c->n_valid = rows->n_valid;
    c->layer = -1;
    if (opts && opts->experts != REAP_CUDA_EXPERTS_LOOP &&
        opts->experts != REAP_CUDA_EXPERTS_GROUPED) {
        rc = reap_err_set(REAP_E_INVALID, "cuda backend: expert GEMMs %d: expected loop (%d) "
                          "or grouped (%d)", opts->experts, REAP_CUDA_EXPERTS_LOOP,
                          REAP_CUDA_EXPERTS_GROUPED);
        goto fail;
    }
    c->grouped = opts && opts->experts == REAP_CUDA_EXPERTS_GROUPED;
    if (opts && opts->on_routes && c->E > 0) {
        /* the routes observer: [T, K] host copies, compacted to the valid positions */
        c->on_routes = opts->on_routes;
        c->routes_ud = opts->routes_ud;
        c->h_ids = (int32_t *)malloc((size_t)c->T * c->K * sizeof(int32_t));
        c->h_g = (double *)malloc((size_t)c->T * c->K * sizeof(double));
        c->h_valid = (int64_t *)malloc((size_t)(c->T + 1) * sizeof(int64_t));
        if (!c->h_ids || !c->h_g || !c->h_valid) {
            rc = reap_err_set(REAP_E_NOMEM, "cuda backend: host routes of %lld positions",
                              (long long)c->T);
            goto fail;
        }
        int64_t nv = 0;
        for (int64_t t = 0; t < c->T; t++)
            if (rows->mask[t]) c->h_valid[nv++] = t;
        c->h_n_valid = nv;
    }
    for (int l = 0; l < cfg->n_layers; l++)
        if (!reap_config_layer_is_moe(cfg, l)) c->has_dense = 1;
    if (c->has_dense && c->Id < 1) {
        rc = reap_err_set(REAP_E_INVALID, "cuda backend: dense layers but intermediate_size %d",
                          c->Id);
        goto fail;
    }
    for (int64_t t = 0; t < c->T; t++)
        if (rows->tokens[t] < 0 || rows->tokens[t] >= c->V) {
            rc = reap_err_set(REAP_E_INVALID, "token id %d at position %lld out of range "
                              "(vocab_size %d)", rows->tokens[t], (long long)t, c->V);
            goto fail;
        }

    if ((e = cudaSetDevice(dev)) != cudaSuccess) { rc = cu_fail(c, e, "cudaSetDevice"); goto fail; }
    /* a blocking stream: ordered with the legacy default stream's copies */
    if ((e = cudaStreamCreate(&c->st)) != cudaSuccess) {
        rc = cu_fail(c, e, "cudaStreamCreate");
        goto fail;
    }
    {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->st);
        /* plain fp32: never TF32 */
        if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) { /* c->blas is destroyed in cuda_free */
            rc = blas_fail(c, s, "cublasCreate");
            goto fail;
        }
    }
    if ((rc = plan_and_allocate(c, cfg, rows, opts))) goto fail;
    if (c->flash && (rc = flash_setup(c))) goto fail;
    if (opts && opts->profile) {
        for (int i = 0; i < 7; i++)
            if ((e = cudaEventCreate(&c->ev[i])) != cudaSuccess) {
                rc = cu_fail(c, e, "cudaEventCreate");
                goto fail;
            }
        c->prof = 1;
        fprintf(stderr, "cuda plan: %d rows x %d, micro-batch %d rows, prefetch %d, "
                "attention %s, experts %s, peak %.2f GB of budget %.2f GB\n", c->n_rows, c->S,
                c->chunk_rows, c->plan.prefetch_layers, c->flash ? "flash" : "gemm",
                c->grouped ? "grouped" : "per-expert", c->plan.peak_bytes / 1e9,
                c->plan.budget_bytes / 1e9);
    }

    /* tokens, mask, mRoPE ids and planes, RoPE tables (fp64 angles, as the CPU reference) */
    {
        const int half = c->hd / 2, np = c->n_pos;
        float *tab = (float *)malloc((size_t)np * half * 2 * sizeof(float));
        int32_t *pos3 = (int32_t *)malloc((size_t)c->T * 3 * sizeof(int32_t));
        int32_t *pos = (int32_t *)malloc((size_t)c->T * 3 * sizeof(int32_t));
        uint8_t *plane = (uint8_t *)malloc((size_t)half + 1);
        if (!tab || !pos3 || !pos || !plane) {
            free(tab);
            free(pos3);
            free(pos);
            free(plane);
            rc = reap_err_set(REAP_E_NOMEM, "cuda backend: RoPE table and positions");
            goto fail;
        }
        if ((rc = reap_positions_fill_mrope(cfg, rows, opts ? opts->spatial_merge : 0, pos3))) {
            free(tab);
            free(pos3);
            free(pos);
            free(plane);
            goto fail;
        }
        for (int64_t t = 0; t < c->T; t++)   /* planes [3][T] -> [T][3] */
            for (int p = 0; p < 3; p++)
                pos[t * 3 + p] = pos3[p * c->T + t];
        free(pos3);
        for (int i = 0; i < half; i++)
            plane[i] = (uint8_t)reap_mrope_plane(cfg, i);
        for (int i = 0; i < half; i++) {
            double inv_freq = pow(cfg->rope_theta, -(2.0 * i) / c->hd);
            for (int p = 0; p < np; p++) {
                double a = p * inv_freq;
                tab[(size_t)p * half + i] = (float)cos(a);
                tab[(size_t)np * half + (size_t)p * half + i] = (float)sin(a);
            }
        }
        e = cudaMemcpyAsync(c->d_cos, tab, (size_t)np * half * 4, cudaMemcpyHostToDevice,
                            c->st);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(c->d_sin, tab + (size_t)np * half, (size_t)np * half * 4,
                                cudaMemcpyHostToDevice, c->st);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(c->d_pos, pos, (size_t)c->T * 3 * 4, cudaMemcpyHostToDevice,
                                c->st);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(c->d_plane, plane, (size_t)half, cudaMemcpyHostToDevice, c->st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->st);
        free(tab);
        free(pos);
        free(plane);
        if (e != cudaSuccess) { rc = cu_fail(c, e, "cudaMemcpy(rope, positions)"); goto fail; }
    }
    if ((e = cudaMemcpyAsync(c->d_tok, rows->tokens, (size_t)c->T * 4, cudaMemcpyHostToDevice,
                             c->st)) ||
        (e = cudaMemcpyAsync(c->d_mask, rows->mask, (size_t)c->T, cudaMemcpyHostToDevice,
                             c->st)) ||
        (e = cudaMemsetAsync(c->d_flag, 0, sizeof(int), c->st)) ||
        (e = cudaMemsetAsync(c->d_hidden, 0, (size_t)c->T * c->H * 4, c->st)) ||
        (e = cudaStreamSynchronize(c->st))) {
        rc = cu_fail(c, e, "cudaMemcpy(rows)");
        goto fail;
    }
    if ((rc = modality_upload(c, rows))) goto fail;
    *out = c;
    return REAP_OK;
fail:
    cuda_free(c);
    return rc;
}

/* ---- forward ------------------------------------------------------------------------------ */

static int rmsnorm(cuda_ctx *c, const float *x, int64_t Tc, const float *w, float *out32,
                   int want_c, int bit)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    if (bf)
        k_rmsnorm<bf16><<<(unsigned)Tc, 256, 0, c->st>>>(x, c->H, w, c->eps, out32,
                                                         want_c ? (bf16 *)c->xc : NULL,
                                                         c->d_flag, bit);
    else
        k_rmsnorm<float><<<(unsigned)Tc, 256, 0, c->st>>>(
            x, c->H, w, c->eps, out32 ? out32 : (want_c ? (float *)c->xc : NULL), NULL,
            c->d_flag, bit);
    KCHECK("rmsnorm");
    return REAP_OK;
}

/* The reference attention: per batch of (row, head) pairs, the full score matrices
 * [nb, S, S] by GEMM, a causal masked softmax, then P V by GEMM. */
static int attention_gemm(cuda_ctx *c, int nr, const uint8_t *mask)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    const int S = c->S, qd = c->nH * c->hd;
    const float scale = (float)(1.0 / sqrt((double)c->hd)), one = 1.0f, zero = 0.0f;
    const int pairs = nr * c->nH;
    const void **A1 = (const void **)c->ptrs, **B1 = A1 + c->attn_nb;
    void **C1 = c->ptrs + 2 * c->attn_nb;
    const void **A2 = (const void **)(c->ptrs + 3 * c->attn_nb), **B2 = A2 + c->attn_nb;
    void **C2 = c->ptrs + 5 * c->attn_nb;
    for (int b0 = 0; b0 < pairs; b0 += c->attn_nb) {
        const int nb = pairs - b0 < c->attn_nb ? pairs - b0 : c->attn_nb;
        k_attn_ptrs<<<(nb + 127) / 128, 128, 0, c->st>>>(
            (const char *)c->qkvc, (char *)c->attn, (char *)c->s32, (char *)c->pc, b0, nb,
            c->nH, c->nKV, c->hd, S, c->esz, A1, B1, C1, A2, B2, C2);
        KCHECK("attention pointers");
        /* S[i][j] = scale * q_i . k_j  (column-major C [j, i]) */
        CB(cublasGemmBatchedEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, S, S, c->hd, &scale, A1,
                               c->ctype, c->QKV, B1, c->ctype, c->QKV, &zero, C1, CUDA_R_32F,
                               S, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmBatchedEx(attention scores)");
        dim3 grid((unsigned)S, (unsigned)nb);
        if (bf)
            k_attn_softmax<bf16><<<grid, 128, 0, c->st>>>(c->s32, (bf16 *)c->pc, S, mask, b0,
                                                          c->nH, c->d_flag);
        else
            k_attn_softmax<float><<<grid, 128, 0, c->st>>>(c->s32, (float *)c->pc, S, mask,
                                                           b0, c->nH, c->d_flag);
        KCHECK("attention softmax");
        /* O_i = sum_j P[i][j] v_j  (column-major C [hd, i]) */
        CB(cublasGemmBatchedEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, c->hd, S, S, &one, A2,
                               c->ctype, c->QKV, B2, c->ctype, S, &zero, C2, c->ctype, qd, nb,
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmBatchedEx(attention values)");
    }
    return REAP_OK;
}

/* The fast path (bf16): k_flash_attn over every (row, head) pair of the chunk. */
static int attention_flash(cuda_ctx *c, int nr, const uint8_t *mask)
{
    const int pairs = nr * c->nH, nqt = (c->S + FA_BM - 1) / FA_BM;
    const float scale_log2 = (float)(1.4426950408889634 / sqrt((double)c->hd));
    const int smem = fa_smem_bytes(c->hd);
    const bf16 *q = (const bf16 *)c->qkvc;
    bf16 *o = (bf16 *)c->attn;
    for (int p0 = 0; p0 < pairs; p0 += 65535) {
        const int np = pairs - p0 < 65535 ? pairs - p0 : 65535;
        dim3 grid((unsigned)nqt, (unsigned)np);
        switch (c->hd) {
        case 16: k_flash_attn<16><<<grid, 128, smem, c->st>>>(q, o, mask, c->S, c->nH, c->nKV, p0, scale_log2, c->d_flag); break;
        case 32: k_flash_attn<32><<<grid, 128, smem, c->st>>>(q, o, mask, c->S, c->nH, c->nKV, p0, scale_log2, c->d_flag); break;
        case 64: k_flash_attn<64><<<grid, 128, smem, c->st>>>(q, o, mask, c->S, c->nH, c->nKV, p0, scale_log2, c->d_flag); break;
        case 128: k_flash_attn<128><<<grid, 128, smem, c->st>>>(q, o, mask, c->S, c->nH, c->nKV, p0, scale_log2, c->d_flag); break;
        default: return reap_err_set(REAP_E_INTERNAL, "%s: flash attention for head_dim %d",
                                     c->where, c->hd);
        }
        KCHECK("flash attention");
    }
    return REAP_OK;
}

/* Attention for the chunk of `nr` rows starting at hidden row x [Tc, H], mask [Tc],
 * mRoPE ids pos [Tc, 3] (device). */
static int attention_block(cuda_ctx *c, float *x, int nr, const uint8_t *mask,
                           const int32_t *pos)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    const int64_t Tc = (int64_t)nr * c->S;
    const int qd = c->nH * c->hd;
    const wset *w = c->cur;
    int rc;
    PROF(c, 0);
    if ((rc = rmsnorm(c, x, Tc, w->in_norm, NULL, 1, RF_INPUT))) return rc;
    if ((rc = linear(c, "cublasGemmEx(qkv_proj)", (int)Tc, c->H, c->QKV, c->xc, c->ctype, c->H,
                     w->qkv, c->ctype, 0, c->qkv32, CUDA_R_32F, c->QKV, 0.0f)))
        return rc;
    {
        const size_t items = (size_t)Tc * (c->nH + 2 * c->nKV);
        const unsigned blocks = (unsigned)((items * 32 + 255) / 256);
        if (bf)
            k_qk_norm_rope<bf16><<<blocks, 256, 0, c->st>>>(
                c->qkv32, (bf16 *)c->qkvc, Tc, c->nH, c->nKV, c->hd, pos, c->d_plane, w->qn,
                w->kn, c->eps, c->d_cos, c->d_sin);
        else
            k_qk_norm_rope<float><<<blocks, 256, 0, c->st>>>(
                c->qkv32, (float *)c->qkvc, Tc, c->nH, c->nKV, c->hd, pos, c->d_plane, w->qn,
                w->kn, c->eps, c->d_cos, c->d_sin);
        KCHECK("qk norm + rope");
    }
    PROF(c, 1);
    if ((rc = c->flash ? attention_flash(c, nr, mask) : attention_gemm(c, nr, mask))) return rc;
    PROF(c, 2);
    /* x += attn Wo^T */
    return linear(c, "cublasGemmEx(o_proj)", (int)Tc, qd, c->H, c->attn, c->ctype, qd, w->o,
                  c->ctype, 0, x, CUDA_R_32F, c->H, 1.0f);
}

/* The routed expert GEMMs, one cuBLAS call per expert and projection (the reference
 * path): gu[p] = xg[p] Wgu_e^T, then (after SwiGLU) y[p] = hh[p] Wd_e^T. */
static int experts_gate_up(cuda_ctx *c)
{
    const int H = c->H, I = c->I;
    const size_t esz = (size_t)c->esz, ex_gu = (size_t)2 * I * H * esz;
    int rc;
    for (int e = 0; e < c->E; e++) {
        const int ne = c->h_cnt[e], o = c->h_off[e];
        if (!ne) continue;
        if ((rc = linear(c, "cublasGemmEx(expert gate_up)", ne, H, 2 * I,
                         (const char *)c->xg + (size_t)o * H * esz, c->ctype, H,
                         (const char *)c->cur->gu + e * ex_gu, c->ctype, 0,
                         c->gu + (size_t)o * 2 * I, CUDA_R_32F, 2 * I, 0.0f)))
            return rc;
    }
    return REAP_OK;
}

static int experts_down(cuda_ctx *c)
{
    const int H = c->H, I = c->I;
    const size_t esz = (size_t)c->esz, ex_d = (size_t)H * I * esz;
    int rc;
    for (int e = 0; e < c->E; e++) {
        const int ne = c->h_cnt[e], o = c->h_off[e];
        if (!ne) continue;
        if ((rc = linear(c, "cublasGemmEx(expert down)", ne, I, H,
                         (const char *)c->hh + (size_t)o * I * esz, c->ctype, I,
                         (const char *)c->cur->d + e * ex_d, c->ctype, 0,
                         c->y + (size_t)o * H, CUDA_R_32F, H, 0.0f)))
            return rc;
    }
    return REAP_OK;
}

/* The same GEMMs as one grouped call (REAP_CUDA_EXPERTS_GROUPED): one group per routed
 * expert. down = 0: gate_up; 1: down. */
static int experts_grouped(cuda_ctx *c, int down)
{
    const int H = c->H, I = c->I, E = c->E;
    const size_t esz = (size_t)c->esz;
    int g = 0;
    int *m = c->h_gint, *n = m + E, *k = n + E, *lda = k + E, *ldb = lda + E, *ldc = ldb + E,
        *gs = ldc + E;
    float *alpha = c->h_gscal, *beta = alpha + E;
    cublasOperation_t *ta = c->h_gop, *tb = ta + E;
    void **A = c->h_gptr, **B = A + E, **C = B + E;
    for (int e = 0; e < E; e++) {
        const int ne = c->h_cnt[e], o = c->h_off[e];
        if (!ne) continue;
        ta[g] = CUBLAS_OP_T;
        tb[g] = CUBLAS_OP_N;
        n[g] = ne;
        gs[g] = 1;
        alpha[g] = 1.0f;
        beta[g] = 0.0f;
        if (!down) {
            m[g] = 2 * I;
            k[g] = H;
            A[g] = (char *)c->cur->gu + (size_t)e * 2 * I * H * esz;
            B[g] = (char *)c->xg + (size_t)o * H * esz;
            C[g] = c->gu + (size_t)o * 2 * I;
            lda[g] = H;
            ldb[g] = H;
            ldc[g] = 2 * I;
        } else {
            m[g] = H;
            k[g] = I;
            A[g] = (char *)c->cur->d + (size_t)e * H * I * esz;
            B[g] = (char *)c->hh + (size_t)o * I * esz;
            C[g] = c->y + (size_t)o * H;
            lda[g] = I;
            ldb[g] = I;
            ldc[g] = H;
        }
        g++;
    }
    if (!g) return REAP_OK;
    /* compact the pointer arrays to [A(g), B(g), C(g)] and send them */
    void **dA = c->d_gptr, **dB = dA + g, **dC = dB + g;
    void **hp = c->h_gptr + 3 * E; /* second half as the send buffer */
    memcpy(hp, A, (size_t)g * sizeof(void *));
    memcpy(hp + g, B, (size_t)g * sizeof(void *));
    memcpy(hp + 2 * g, C, (size_t)g * sizeof(void *));
    CU(cudaMemcpyAsync(c->d_gptr, hp, (size_t)3 * g * sizeof(void *), cudaMemcpyHostToDevice,
                       c->st),
       "cudaMemcpy(grouped GEMM pointers)");
    CB(cublasGemmGroupedBatchedEx(c->blas, ta, tb, m, n, k, alpha, (const void *const *)dA,
                                  c->ctype, lda, (const void *const *)dB, c->ctype, ldb, beta,
                                  dC, CUDA_R_32F, ldc, g, gs, CUBLAS_COMPUTE_32F),
       down ? "cublasGemmGroupedBatchedEx(expert down)"
            : "cublasGemmGroupedBatchedEx(expert gate_up)");
    /* the pinned send buffer is reused by the next call: wait for the copy */
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize(grouped GEMM)");
    return REAP_OK;
}

/* MoE block for the chunk x [Tc, H] whose first position is t0. */
static int moe_block(cuda_ctx *c, float *x, int nr, int64_t t0, const uint8_t *mask)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    const int64_t Tc = (int64_t)nr * c->S;
    const int E = c->E, K = c->K, H = c->H, I = c->I;
    const int n = (int)(Tc * K);
    int32_t *ids = c->d_ids + t0 * K;
    double *g = c->d_g + t0 * K;
    int rc;
    PROF(c, 3);
    if ((rc = rmsnorm(c, x, Tc, c->cur->post_norm, c->x32, 1, RF_ATTN))) return rc;
    if ((rc = linear(c, "cublasGemmEx(router)", (int)Tc, H, E, c->x32, CUDA_R_32F, H,
                     c->cur->router, CUDA_R_32F, 0, c->logits, CUDA_R_32F, E, 0.0f)))
        return rc;
    k_router<<<grid_for((size_t)Tc * 32, 256), 256, 0, c->st>>>(c->logits, mask, Tc, E, K,
                                                                c->norm_topk, ids, g, c->d_flag);
    KCHECK("router top-k");
    k_count<<<E, 1024, 0, c->st>>>(ids, n, c->d_cnt);
    KCHECK("expert counts");
    CU(cudaMemcpyAsync(c->h_cnt, c->d_cnt, (size_t)E * sizeof(int), cudaMemcpyDeviceToHost,
                       c->st),
       "cudaMemcpy(counts)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize(counts)");
    int P = 0;
    for (int e = 0; e < E; e++) {
        c->h_off[e] = P;
        P += c->h_cnt[e];
    }
    if (P == 0) {
        PROF(c, 4);
        PROF(c, 5);
        return REAP_OK;
    }
    CU(cudaMemcpyAsync(c->d_off, c->h_off, (size_t)E * sizeof(int), cudaMemcpyHostToDevice,
                       c->st),
       "cudaMemcpy(offsets)");
    k_scatter<<<E, 1024, 0, c->st>>>(ids, n, c->d_off, c->perm, c->inv);
    KCHECK("expert scatter");
    if (bf)
        k_gather_rows<bf16><<<P, 256, 0, c->st>>>((const bf16 *)c->xc, c->perm, K, H,
                                                  (bf16 *)c->xg);
    else
        k_gather_rows<float><<<P, 256, 0, c->st>>>((const float *)c->xc, c->perm, K, H,
                                                   (float *)c->xg);
    KCHECK("gather routed rows");
    PROF(c, 4);
    if ((rc = c->grouped ? experts_grouped(c, 0) : experts_gate_up(c))) return rc;
    if (bf)
        k_swiglu<bf16><<<grid_for((size_t)P * I, 256), 256, 0, c->st>>>(c->gu, P, I,
                                                                        (bf16 *)c->hh,
                                                                        c->d_flag, RF_EXPERT);
    else
        k_swiglu<float><<<grid_for((size_t)P * I, 256), 256, 0, c->st>>>(c->gu, P, I,
                                                                         (float *)c->hh,
                                                                         c->d_flag, RF_EXPERT);
    KCHECK("swiglu");
    /* y overwrites xg and gu, both dead from here on */
    if ((rc = c->grouped ? experts_grouped(c, 1) : experts_down(c))) return rc;
    PROF(c, 5);
    k_pair_stats<<<P, 256, 0, c->st>>>(c->y, c->perm, H, t0 * K, c->d_nrm, c->d_mx, c->d_flag);
    KCHECK("pair statistics");
    k_combine<<<(unsigned)Tc, 256, 0, c->st>>>(c->y, ids, g, c->inv, K, H, x, c->d_flag);
    KCHECK("combine");
    return REAP_OK;
}

static int mlp_block(cuda_ctx *c, float *x, int nr)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    const int64_t Tc = (int64_t)nr * c->S;
    const int H = c->H, Id = c->Id;
    int rc;
    PROF(c, 3);
    PROF(c, 4);
    if ((rc = rmsnorm(c, x, Tc, c->cur->post_norm, NULL, 1, RF_ATTN)) ||
        (rc = linear(c, "cublasGemmEx(mlp gate_up)", (int)Tc, H, 2 * Id, c->xc, c->ctype, H,
                     c->cur->mgu, c->ctype, 0, c->gu, CUDA_R_32F, 2 * Id, 0.0f)))
        return rc;
    if (bf)
        k_swiglu<bf16><<<grid_for((size_t)Tc * Id, 256), 256, 0, c->st>>>(
            c->gu, Tc, Id, (bf16 *)c->hh, c->d_flag, RF_MLP);
    else
        k_swiglu<float><<<grid_for((size_t)Tc * Id, 256), 256, 0, c->st>>>(
            c->gu, Tc, Id, (float *)c->hh, c->d_flag, RF_MLP);
    KCHECK("swiglu");
    if ((rc = linear(c, "cublasGemmEx(mlp down)", (int)Tc, Id, H, c->hh, c->ctype, Id,
                     c->cur->md, c->ctype, 0, x, CUDA_R_32F, H, 1.0f)))
        return rc;
    PROF(c, 5);
    k_check_finite<<<grid_for((size_t)Tc * H, 256), 256, 0, c->st>>>(x, (size_t)Tc * H,
                                                                     c->d_flag, RF_OUTPUT);
    KCHECK("check output");
    return REAP_OK;
}

/* The modality of each slot (image: inside one of the rows' image spans) to the device,
 * and the valid positions per modality; nothing for text-only rows. */
static int modality_upload(cuda_ctx *c, const reap_rows *rows)
{
    c->n_valid_mod[REAP_MOD_TEXT] = c->n_valid;
    c->n_valid_mod[REAP_MOD_IMAGE] = 0;
    if (rows->n_spans == 0 || c->E == 0) return REAP_OK;
    uint8_t *slot = (uint8_t *)calloc((size_t)c->T, 1);
    if (!slot) return reap_err_set(REAP_E_NOMEM, "cuda backend: modality of %lld positions",
                                   (long long)c->T);
    if (reap_rows_image_slots(rows, slot)) {   /* 1 = REAP_MOD_IMAGE, 0 = text */
        free(slot);
        return reap_err_prefix(REAP_E_INVALID, "cuda backend");
    }
    int64_t n_img = 0;
    for (int64_t t = 0; t < c->T; t++)
        n_img += rows->mask[t] && slot[t];
    c->n_valid_mod[REAP_MOD_IMAGE] = n_img;
    c->n_valid_mod[REAP_MOD_TEXT] = c->n_valid - n_img;
    cudaError_t e = cudaMalloc((void **)&c->d_modality, (size_t)c->T);
    if (e == cudaSuccess)
        e = cudaMemcpy(c->d_modality, slot, (size_t)c->T, cudaMemcpyHostToDevice);
    free(slot);
    if (e != cudaSuccess) return cu_fail(c, e, "cudaMemcpy(modality)");
    return REAP_OK;
}

/* One statistics pass over the layer's pairs (want < 0: all; else the pairs of modality
 * want), added to dst's arrays. */
static int expert_statistics_pass(cuda_ctx *c, int want, reap_modality_stats *dst)
{
    const int E = c->E;
    k_expert_stats<<<E, 256, 0, c->st>>>(c->d_ids, c->d_g, c->d_nrm, c->d_mx, c->T * c->K,
                                         c->d_scnt, c->d_sgn, c->d_sn, c->d_sg, c->d_smx,
                                         want < 0 ? NULL : c->d_modality, c->K, want);
    KCHECK("expert statistics");
    CU(cudaMemcpyAsync(c->h_scnt, c->d_scnt, (size_t)E * 8, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(statistics)");
    CU(cudaMemcpyAsync(c->h_sgn, c->d_sgn, (size_t)E * 8, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(statistics)");
    CU(cudaMemcpyAsync(c->h_sn, c->d_sn, (size_t)E * 8, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(statistics)");
    CU(cudaMemcpyAsync(c->h_sg, c->d_sg, (size_t)E * 8, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(statistics)");
    CU(cudaMemcpyAsync(c->h_smx, c->d_smx, (size_t)E * 4, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(statistics)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize(statistics)");
    for (int e = 0; e < E; e++) {
        dst->count[e] += c->h_scnt[e];
        dst->sum_gate_norm[e] += c->h_sgn[e];
        dst->sum_norm[e] += c->h_sn[e];
        dst->sum_gate[e] += c->h_sg[e];
        if (c->h_scnt[e] > 0 && c->h_smx[e] > dst->max_act[e]) dst->max_act[e] = c->h_smx[e];
    }
    return REAP_OK;
}

/* The layer's statistics: the totals, and per modality when the rows have image spans
 * (text-only rows: one pass, the text set is the totals by the rule of stats.h). */
static int expert_statistics(cuda_ctx *c, reap_layer_stats *s)
{
    reap_modality_stats tot = {s->tokens, s->count, s->sum_gate_norm, s->sum_norm,
                               s->sum_gate, s->max_act};
    int rc = expert_statistics_pass(c, -1, &tot);
    if (rc) return rc;
    s->tokens += c->n_valid;
    if (c->d_modality) {
        for (int m = 0; m < REAP_N_MODALITIES; m++)
            if ((rc = expert_statistics_pass(c, m, &s->mod[m]))) return rc;
        s->mod[REAP_MOD_TEXT].tokens += c->n_valid_mod[REAP_MOD_TEXT];
        s->mod[REAP_MOD_IMAGE].tokens += c->n_valid_mod[REAP_MOD_IMAGE];
    }
    return REAP_OK;
}

/* The layer's routes to the observer: ids and weights of every position to the host,
 * the valid positions' rows moved to the front (row n comes from row valid[n] >= n, so
 * ascending order never overwrites a row still to be read). */
static int report_routes(cuda_ctx *c)
{
    const size_t TK = (size_t)c->T * c->K;
    const int K = c->K;
    CU(cudaMemcpyAsync(c->h_ids, c->d_ids, TK * sizeof(int32_t), cudaMemcpyDeviceToHost,
                       c->st),
       "cudaMemcpy(routes)");
    CU(cudaMemcpyAsync(c->h_g, c->d_g, TK * sizeof(double), cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(routing weights)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize(routes)");
    for (int64_t n = 0; n < c->h_n_valid; n++) {
        const int64_t t = c->h_valid[n];
        memmove(c->h_ids + n * K, c->h_ids + t * K, (size_t)K * sizeof(int32_t));
        memmove(c->h_g + n * K, c->h_g + t * K, (size_t)K * sizeof(double));
    }
    reap_routes r;
    r.layer = c->layer;
    r.n_valid = c->h_n_valid;
    r.valid = c->h_valid;
    r.K = K;
    r.ids = c->h_ids;
    r.weights = c->h_g;
    return c->on_routes(c->routes_ud, &r);
}

static int cuda_forward_layer(void *ctx, reap_layer_stats *stats)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc;
    if (c->layer < 0 || !c->cur)
        return reap_err_set(REAP_E_INTERNAL, "cuda backend: forward without a loaded layer");
    snprintf(c->where, sizeof c->where, "layer %d", c->layer);
    if (c->is_moe != (stats != NULL))
        return reap_err_set(REAP_E_INTERNAL, "layer %d: statistics %s for a %s layer",
                            c->layer, stats ? "given" : "missing",
                            c->is_moe ? "MoE" : "dense");
    if (stats && (stats->n_experts != c->E || stats->top_k != c->K))
        return reap_err_set(REAP_E_INVALID, "layer %d: statistics for %d experts top-%d, "
                            "model has %d top-%d", c->layer, stats->n_experts, stats->top_k,
                            c->E, c->K);
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    for (int r0 = 0; r0 < c->n_rows; r0 += c->chunk_rows) {
        const int nr = c->n_rows - r0 < c->chunk_rows ? c->n_rows - r0 : c->chunk_rows;
        const int64_t t0 = (int64_t)r0 * c->S;
        float *x = c->d_hidden + (size_t)t0 * c->H;
        const uint8_t *mask = c->d_mask + t0;
        if ((rc = attention_block(c, x, nr, mask, c->d_pos + 3 * t0))) return rc;
        rc = c->is_moe ? moe_block(c, x, nr, t0, mask) : mlp_block(c, x, nr);
        PROF(c, 6);
        if (rc || (rc = check_flag(c))) return rc;
        for (int i = 0; c->prof && i < 6; i++) {
            float ms = 0.0f;
            CU(cudaEventElapsedTime(&ms, c->ev[i], c->ev[i + 1]), "cudaEventElapsedTime");
            c->prof_ms[i] += ms;
        }
    }
    if (c->prof) {
        fprintf(stderr, "cuda profile layer %d (%d chunks of %d rows):", c->layer,
                (c->n_rows + c->chunk_rows - 1) / c->chunk_rows, c->chunk_rows);
        for (int i = 0; i < 6; i++) {
            fprintf(stderr, " %s %.2f ms%s", PROF_NAMES[i], c->prof_ms[i], i < 5 ? "," : "\n");
            c->prof_ms[i] = 0.0;
        }
    }
    if (c->is_moe && c->on_routes && (rc = report_routes(c))) return rc;
    if (c->is_moe) return expert_statistics(c, stats);
    return REAP_OK;
}

static int cuda_get_hidden(void *ctx, float *dst)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    snprintf(c->where, sizeof c->where, "get_hidden");
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    CU(cudaMemcpyAsync(dst, c->d_hidden, (size_t)c->T * c->H * 4, cudaMemcpyDeviceToHost,
                       c->st),
       "cudaMemcpy(hidden)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    return REAP_OK;
}

static int cuda_set_hidden(void *ctx, const float *src)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    snprintf(c->where, sizeof c->where, "set_hidden");
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    CU(cudaMemcpyAsync(c->d_hidden, src, (size_t)c->T * c->H * 4, cudaMemcpyHostToDevice,
                       c->st),
       "cudaMemcpy(hidden)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    return REAP_OK;
}

/* Rows staged per scatter_rows step (device buffers allocated at the first call; counted
 * in the plan's image_bytes). */
#define SCATTER_ROWS REAP_CUDA_SCATTER_ROWS

static int cuda_scatter_rows(void *ctx, const int64_t *slots, int64_t n, const float *src,
                             int add)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc;
    snprintf(c->where, sizeof c->where, "scatter_rows");
    for (int64_t i = 0; i < n; i++)
        if (slots[i] < 0 || slots[i] >= c->T)
            return reap_err_set(REAP_E_INVALID, "cuda backend: scatter row %lld to position "
                                "%lld of %lld", (long long)i, (long long)slots[i],
                                (long long)c->T);
    if (n <= 0)
        return REAP_OK;
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    if (!c->d_scat) {
        DALLOC(c->d_scat_slots, SCATTER_ROWS * sizeof(int64_t), "scatter slots");
        DALLOC(c->d_scat, (size_t)SCATTER_ROWS * c->H * 4, "scatter rows");
    }
    for (int64_t i0 = 0; i0 < n; i0 += SCATTER_ROWS) {
        const int64_t m = n - i0 < SCATTER_ROWS ? n - i0 : SCATTER_ROWS;
        CU(cudaMemcpyAsync(c->d_scat_slots, slots + i0, (size_t)m * sizeof(int64_t),
                           cudaMemcpyHostToDevice, c->st),
           "cudaMemcpy(scatter slots)");
        CU(cudaMemcpyAsync(c->d_scat, src + (size_t)i0 * c->H, (size_t)m * c->H * 4,
                           cudaMemcpyHostToDevice, c->st),
           "cudaMemcpy(scatter rows)");
        k_scatter_rows<<<(unsigned)m, 256, 0, c->st>>>(c->d_hidden, c->d_scat_slots, c->d_scat,
                                                       m, c->H, add);
        KCHECK("scatter rows");
        /* the host arrays may be freed on return, and the staging is reused */
        CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    }
    return REAP_OK;
}

static const reap_backend_i cuda_backend = {
    "cuda",
    cuda_init,
    cuda_embed,
    cuda_load_layer,
    cuda_forward_layer,
    cuda_get_hidden,
    cuda_set_hidden,
    cuda_scatter_rows,
    cuda_free,
    cuda_prefetch_layer,
};

extern "C" const reap_backend_i *reap_backend_cuda(void) { return &cuda_backend; }

extern "C" int reap_cuda_available(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int reap_cuda_mem_info(int device, int64_t *free_bytes, int64_t *total_bytes)
{
    size_t fr = 0, tot = 0;
    int n = 0;
    *free_bytes = *total_bytes = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && (device < 0 || device >= n)) e = cudaErrorInvalidDevice;
    if (e == cudaSuccess) e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMemGetInfo(&fr, &tot);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return reap_err_set(REAP_E_DEVICE, "CUDA device %d: %s", device, cudaGetErrorString(e));
    }
    *free_bytes = (int64_t)fr;
    *total_bytes = (int64_t)tot;
    return REAP_OK;
}

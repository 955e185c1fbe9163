/* backend_cuda.cu - the CUDA backend: the forward pass of backend.h on one GPU.
 *
 * Hidden states [T, H] fp32, tokens and mask stay resident on the device; one layer's
 * weights are uploaded per load_layer (raw checkpoint bytes staged through a 64 MiB
 * device buffer and converted on the device to the compute type). A layer runs over
 * chunks of consecutive calibration rows (attention never crosses a row, so a whole
 * layer runs chunk by chunk):
 *
 *   attention_block: rmsnorm -> fused q|k|v GEMM -> q/k head norms + RoPE ->
 *                    per (row, head) batch: scores GEMM -> causal masked softmax ->
 *                    values GEMM -> o GEMM accumulated into the residual (beta = 1)
 *   moe_block:       rmsnorm -> router GEMM (always fp32) -> softmax/top-k ->
 *                    count per expert -> stable scatter (expert, token, slot) ->
 *                    gather routed rows -> per expert gate_up GEMM -> SwiGLU ->
 *                    down GEMM -> per-pair norm/max -> combine into the residual
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
 * Determinism: no floating-point atomics; run to run the results are bit-identical for
 * a given device, cuBLAS version and chunk size. The default chunk size depends only on
 * the configuration (not on free memory) unless memory forces a smaller one.
 *
 * Dimension legend: T all positions (n_rows * S), S seq_len, Tc positions of a chunk,
 * H hidden, nH / nKV heads, hd head dim, QKV = (nH + 2 nKV) hd, E experts, K experts per
 * token, I expert width, Id dense MLP width, P routed pairs of a chunk, nb (row, head)
 * pairs per attention batch.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "reap_err.h"
}

#include "kernels.cuh"

typedef __nv_bfloat16 bf16;

#define STAGE_BYTES ((size_t)64 << 20)       /* weight upload staging buffer */
#define DEFAULT_CHUNK_TOKENS 16384           /* positions per chunk (default) */
#define ATTN_BATCH_BYTES ((size_t)1 << 30)   /* score matrices per attention batch */
#define MEM_MARGIN ((size_t)512 << 20)       /* left free for cuBLAS and the driver */
#define MAX_EXPERTS 1024
#define MAX_TOPK 32

/* Mark the end of profiling phase i - 1 / start of phase i (no-op unless profiling). */
#define PROF(c, i)                                                                      \
    do {                                                                                \
        if ((c)->prof) cudaEventRecord((c)->ev[i], (c)->st);                            \
    } while (0)
static const char *const PROF_NAMES[6] = {"norm+qkv+rope", "attention", "o_proj",
                                          "route+permute", "experts", "stats+combine"};

typedef struct cuda_ctx {
    char where[48];             /* "layer 3", "init", "embed": prefix of messages */
    int device, precision;
    int esz;                    /* bytes per compute element (4 or 2) */
    cudaDataType_t ctype;       /* CUDA_R_32F or CUDA_R_16BF */
    /* configuration */
    int H, nH, nKV, hd, QKV, E, K, I, Id, V, norm_topk, has_dense;
    float eps;
    int n_rows, S;
    int64_t T, n_valid;
    int chunk_rows;             /* rows per chunk */
    int attn_nb;                /* (row, head) pairs per attention batch */
    cudaStream_t st;
    cublasHandle_t blas;
    int *d_flag;                /* non-finite flag word (RF_* bits) */
    /* resident state */
    float *d_hidden;            /* [T, H] */
    int32_t *d_tok;             /* [T] */
    uint8_t *d_mask;            /* [T] */
    float *d_cos, *d_sin;       /* [S, hd/2] */
    int32_t *d_ids;             /* [T, K] expert of each (token, slot); -1 masked */
    double *d_g;                /* [T, K] routing weight */
    double *d_nrm;              /* [T, K] ||f|| of each routed pair */
    float *d_mx;                /* [T, K] max f of each routed pair */
    /* one layer's weights (compute type unless noted) */
    int layer, is_moe, fused;   /* fused: expert weights in the FUSED orientation */
    float *w_in_norm, *w_post_norm; /* [H] fp32 */
    float *w_qn, *w_kn;         /* [hd] fp32 */
    void *w_qkv;                /* [QKV, H] q rows, then k, then v */
    void *w_o;                  /* [H, nH*hd] */
    float *w_router;            /* [E, H] fp32 */
    void *w_gu;                 /* [E, 2I, H] (SPLIT: gate rows, up rows) or
                                   [E, H, 2I] (FUSED, as stored) */
    void *w_d;                  /* [E, H, I] (SPLIT) or [E, I, H] (FUSED) */
    void *w_mgu;                /* [2Id, H] dense gate rows then up rows */
    void *w_md;                 /* [H, Id] */
    void *stage;                /* [STAGE_BYTES] raw checkpoint bytes */
    /* chunk workspace: x32/xc always; the attention and MoE buffers alias (arena) */
    float *x32;                 /* [Tc, H] normed input, fp32 */
    void *xc;                   /* [Tc, H] normed input, TC (== x32 in fp32 mode) */
    char *arena;
    size_t arena_bytes;
    /* attention view of the arena */
    float *qkv32;               /* [Tc, QKV] */
    void *qkvc;                 /* [Tc, QKV] TC (== qkv32 in fp32 mode) */
    void *attn;                 /* [Tc, nH*hd] TC */
    float *s32;                 /* [nb, S, S] scores */
    void *pc;                   /* [nb, S, S] TC probabilities (== s32 in fp32 mode) */
    void **ptrs;                /* [6, nb] batched-GEMM pointer arrays */
    /* MoE / MLP view of the arena */
    float *logits;              /* [Tc, E] */
    int32_t *perm, *inv;        /* [Tc*K] */
    void *xg;                   /* [P, H] TC gathered routed rows */
    float *gu;                  /* [P, 2I] or [Tc, 2Id] */
    void *hh;                   /* [P, I] or [Tc, Id] TC */
    float *y;                   /* [P, H] expert outputs */
    /* statistics */
    int *d_cnt, *d_off;         /* [E] */
    int *h_cnt, *h_off;         /* [E] pinned */
    long long *d_scnt;          /* [E] */
    double *d_sgn, *d_sn, *d_sg;/* [E] */
    float *d_smx;               /* [E] */
    long long *h_scnt;          /* [E] */
    /* REAP_CUDA_PROFILE set: per-phase GPU times (events around the phases of a chunk),
     * summed over a layer's chunks and printed to stderr after each layer */
    int prof;
    cudaEvent_t ev[7];
    double prof_ms[6];
    double *h_sgn, *h_sn, *h_sg;
    float *h_smx;
} cuda_ctx;

/* ---- error helpers ------------------------------------------------------------------- */

static int cu_fail(cuda_ctx *c, cudaError_t e, const char *what)
{
    if (e == cudaErrorMemoryAllocation)
        return reap_err_set(REAP_E_NOMEM, "%s: %s: %s", c->where, what, cudaGetErrorString(e));
    return reap_err_set(REAP_E_DEVICE, "%s: %s: %s (%s)", c->where, what, cudaGetErrorName(e),
                        cudaGetErrorString(e));
}

#define CU(call, what)                                                                  \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) return cu_fail(c, e_, (what));                           \
    } while (0)
/* after a kernel launch */
#define KCHECK(what) CU(cudaGetLastError(), what)

static int blas_fail(cuda_ctx *c, cublasStatus_t s, const char *what)
{
    return reap_err_set(REAP_E_DEVICE, "%s: %s: %s", c->where, what, cublasGetStatusName(s));
}

#define CB(call, what)                                                                  \
    do {                                                                                \
        cublasStatus_t s_ = (call);                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS) return blas_fail(c, s_, (what));               \
    } while (0)

static unsigned grid_for(size_t n, unsigned block)
{
    size_t g = (n + block - 1) / block;
    if (g > 65535u * 16u) g = 65535u * 16u;
    return g ? (unsigned)g : 1u;
}

/* Read and clear the flag word; REAP_E_NUMERIC naming the first stage flagged. */
static int check_flag(cuda_ctx *c)
{
    int f = 0;
    CU(cudaMemcpyAsync(&f, c->d_flag, sizeof f, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(flag)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    if (!f) return REAP_OK;
    CU(cudaMemsetAsync(c->d_flag, 0, sizeof(int), c->st), "cudaMemset(flag)");
    static const struct { int bit; const char *stage; } names[] = {
        {RF_WEIGHT, "weights"}, {RF_EMBED, "embedding"}, {RF_INPUT, "layer input"},
        {RF_ATTN, "attention"}, {RF_ROUTER, "router logits"},
        {RF_EXPERT, "expert activations"}, {RF_MLP, "MLP activations"},
        {RF_OUTPUT, "MoE/MLP output"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (f & names[i].bit)
            return reap_err_set(REAP_E_NUMERIC, "%s: NaN or Inf in %s", c->where,
                                names[i].stage);
    return reap_err_set(REAP_E_NUMERIC, "%s: NaN or Inf (flag %#x)", c->where, f);
}

/* ---- GEMM wrappers ---------------------------------------------------------------------- */

/* Y[n, out] (ldy) = beta * Y + X[n, in] (ldx) * W^T, all row-major. W is [out, in]
 * (nn.Linear, w_t = 0) or [in, out] (the fused checkpoint orientation, w_t = 1). */
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

/* ---- memory plan ------------------------------------------------------------------------ */

static size_t align_up(size_t n) { return (n + 255) & ~(size_t)255; }

/* Arena bytes for a chunk of `nr` rows and `nb` attention pairs; assigns the views when
 * base != NULL. The attention view and the MoE/MLP view overlap. */
static size_t arena_layout(cuda_ctx *c, int nr, int nb, char *base)
{
    const size_t Tc = (size_t)nr * c->S, esz = (size_t)c->esz, S2 = (size_t)c->S * c->S;
    const int bf = c->precision == REAP_PRECISION_BF16;
    size_t o = 0, a_end, m_end;
#define TAKE(ptr, type, bytes)                                                          \
    do {                                                                                \
        if (base) ptr = (type)(base + o);                                               \
        o += align_up(bytes);                                                           \
    } while (0)
    /* attention */
    TAKE(c->qkv32, float *, Tc * c->QKV * 4);
    if (bf) TAKE(c->qkvc, void *, Tc * c->QKV * esz);
    else if (base) c->qkvc = c->qkv32;
    TAKE(c->attn, void *, Tc * c->nH * c->hd * esz);
    TAKE(c->s32, float *, (size_t)nb * S2 * 4);
    if (bf) TAKE(c->pc, void *, (size_t)nb * S2 * esz);
    else if (base) c->pc = c->s32;
    TAKE(c->ptrs, void **, (size_t)6 * nb * sizeof(void *));
    a_end = o;
    /* MoE / MLP */
    o = 0;
    const size_t P = Tc * c->K;
    size_t gu = P * 2 * c->I * 4, hh = P * c->I * esz;
    if (c->has_dense) {
        if (Tc * 2 * c->Id * 4 > gu) gu = Tc * 2 * c->Id * 4;
        if (Tc * c->Id * esz > hh) hh = Tc * c->Id * esz;
    }
    TAKE(c->logits, float *, Tc * c->E * 4);
    TAKE(c->perm, int32_t *, P * 4);
    TAKE(c->inv, int32_t *, P * 4);
    TAKE(c->xg, void *, P * c->H * esz);
    TAKE(c->gu, float *, gu);
    TAKE(c->hh, void *, hh);
    TAKE(c->y, float *, P * c->H * 4);
    m_end = o;
#undef TAKE
    return a_end > m_end ? a_end : m_end;
}

static size_t chunk_fixed_bytes(const cuda_ctx *c, int nr)
{
    const size_t Tc = (size_t)nr * c->S;
    return align_up(Tc * c->H * 4) +
           (c->precision == REAP_PRECISION_BF16 ? align_up(Tc * c->H * c->esz) : 0);
}

static int attn_pairs(const cuda_ctx *c, int nr)
{
    const size_t per = (size_t)c->S * c->S * (4 + (c->precision == REAP_PRECISION_BF16 ? 2 : 0));
    size_t nb = ATTN_BATCH_BYTES / per;
    if (nb < 1) nb = 1;
    if (nb > (size_t)nr * c->nH) nb = (size_t)nr * c->nH;
    if (nb > 65535) nb = 65535;
    return (int)nb;
}

static size_t weight_bytes(const cuda_ctx *c)
{
    const size_t H = c->H, esz = c->esz;
    size_t b = align_up((size_t)c->QKV * H * esz) + align_up(H * c->nH * c->hd * esz) +
               4 * align_up(H * 4) + align_up((size_t)c->E * H * 4) +
               align_up((size_t)c->E * 2 * c->I * H * esz) +
               align_up((size_t)c->E * H * c->I * esz);
    if (c->has_dense) b += align_up(2 * (size_t)c->Id * H * esz) + align_up(H * c->Id * esz);
    return b;
}

static size_t resident_bytes(const cuda_ctx *c)
{
    const size_t T = (size_t)c->T, TK = T * c->K;
    return align_up(T * c->H * 4) + align_up(T * 4) + align_up(T) +
           2 * align_up((size_t)c->S * (c->hd / 2) * 4) + align_up(TK * 4) +
           3 * align_up(TK * 8) + align_up(TK * 4) + STAGE_BYTES + 16 * align_up(MAX_EXPERTS * 8);
}

/* ---- init / free ----------------------------------------------------------------------- */

static void cuda_free(void *ctx)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c) return;
    void *dev[] = {c->d_flag, c->d_hidden, c->d_tok, c->d_mask, c->d_cos, c->d_sin,
                   c->d_ids, c->d_g, c->d_nrm, c->d_mx, c->w_in_norm, c->w_post_norm,
                   c->w_qn, c->w_kn, c->w_qkv, c->w_o, c->w_router, c->w_gu, c->w_d,
                   c->w_mgu, c->w_md, c->stage, c->x32, c->arena, c->d_cnt, c->d_off,
                   c->d_scnt, c->d_sgn, c->d_sn, c->d_sg, c->d_smx};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->xc && c->xc != c->x32) cudaFree(c->xc);
    if (c->h_cnt) cudaFreeHost(c->h_cnt);
    if (c->h_off) cudaFreeHost(c->h_off);
    free(c->h_scnt);
    free(c->h_sgn);
    free(c->h_sn);
    free(c->h_sg);
    free(c->h_smx);
    for (int i = 0; i < 7; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    if (c->blas) cublasDestroy(c->blas);
    if (c->st) cudaStreamDestroy(c->st);
    free(c);
}

/* cudaMalloc with an out-of-memory message that gives the sizes. */
static int dalloc(cuda_ctx *c, void **p, size_t bytes, const char *what)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e == cudaSuccess) return REAP_OK;
    *p = NULL;
    cudaGetLastError(); /* clear the (non-sticky) error */
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (e == cudaErrorMemoryAllocation)
        return reap_err_set(REAP_E_NOMEM, "%s: cudaMalloc(%s): %zu bytes needed, %zu of %zu "
                            "free on device %d", c->where, what, bytes, fr, tot, c->device);
    return cu_fail(c, e, what);
}

#define DALLOC(ptr, bytes, what)                                                        \
    do {                                                                                \
        if ((rc = dalloc(c, (void **)&(ptr), (bytes), (what)))) return rc;              \
    } while (0)

static int plan_and_allocate(cuda_ctx *c, const reap_backend_opts *opts)
{
    int rc;
    size_t fr = 0, tot = 0;
    CU(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    const size_t fixed = resident_bytes(c) + weight_bytes(c);
    int nr;
    if (opts && opts->batch_rows > 0)
        nr = opts->batch_rows < c->n_rows ? opts->batch_rows : c->n_rows;
    else {
        nr = DEFAULT_CHUNK_TOKENS / c->S;
        if (nr < 1) nr = 1;
        if (nr > c->n_rows) nr = c->n_rows;
        /* smaller chunks only when memory forces it */
        while (nr > 1 && fixed + chunk_fixed_bytes(c, nr) +
                                 arena_layout(c, nr, attn_pairs(c, nr), NULL) + MEM_MARGIN > fr)
            nr = (nr + 1) / 2;
    }
    const int nb = attn_pairs(c, nr);
    const size_t ws = chunk_fixed_bytes(c, nr) + arena_layout(c, nr, nb, NULL);
    if (fixed + ws + MEM_MARGIN > fr)
        return reap_err_set(REAP_E_NOMEM,
                            "cuda backend: %zu bytes of device memory needed (hidden states "
                            "and statistics %zu, one layer's weights %zu, workspace for %d "
                            "rows %zu, margin %zu) but only %zu of %zu are free on device %d",
                            fixed + ws + MEM_MARGIN, resident_bytes(c), weight_bytes(c), nr,
                            ws, MEM_MARGIN, fr, tot, c->device);
    c->chunk_rows = nr;
    c->attn_nb = nb;

    const size_t T = (size_t)c->T, TK = T * c->K, H = c->H, esz = c->esz;
    const size_t Tc = (size_t)nr * c->S;
    DALLOC(c->d_flag, sizeof(int), "flag");
    DALLOC(c->d_hidden, T * H * 4, "hidden states");
    DALLOC(c->d_tok, T * 4, "tokens");
    DALLOC(c->d_mask, T, "mask");
    DALLOC(c->d_cos, (size_t)c->S * (c->hd / 2) * 4, "rope cos");
    DALLOC(c->d_sin, (size_t)c->S * (c->hd / 2) * 4, "rope sin");
    if (c->E > 0) {
        DALLOC(c->d_ids, TK * 4, "routing ids");
        DALLOC(c->d_g, TK * 8, "routing weights");
        DALLOC(c->d_nrm, TK * 8, "pair norms");
        DALLOC(c->d_mx, TK * 4, "pair max");
        DALLOC(c->w_router, (size_t)c->E * H * 4, "router weights");
        DALLOC(c->w_gu, (size_t)c->E * 2 * c->I * H * esz, "expert gate_up weights");
        DALLOC(c->w_d, (size_t)c->E * H * c->I * esz, "expert down weights");
        DALLOC(c->d_cnt, (size_t)c->E * 4, "counts");
        DALLOC(c->d_off, (size_t)c->E * 4, "offsets");
        DALLOC(c->d_scnt, (size_t)c->E * 8, "stat counts");
        DALLOC(c->d_sgn, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_sn, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_sg, (size_t)c->E * 8, "stat sums");
        DALLOC(c->d_smx, (size_t)c->E * 4, "stat max");
        CU(cudaMallocHost((void **)&c->h_cnt, (size_t)c->E * sizeof(int)), "cudaMallocHost");
        CU(cudaMallocHost((void **)&c->h_off, (size_t)c->E * sizeof(int)), "cudaMallocHost");
        c->h_scnt = (long long *)malloc((size_t)c->E * sizeof(long long));
        c->h_sgn = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_sn = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_sg = (double *)malloc((size_t)c->E * sizeof(double));
        c->h_smx = (float *)malloc((size_t)c->E * sizeof(float));
        if (!c->h_scnt || !c->h_sgn || !c->h_sn || !c->h_sg || !c->h_smx)
            return reap_err_set(REAP_E_NOMEM, "cuda backend: host statistics buffers");
    }
    DALLOC(c->w_in_norm, H * 4, "input_layernorm");
    DALLOC(c->w_post_norm, H * 4, "post_attention_layernorm");
    DALLOC(c->w_qn, (size_t)c->hd * 4, "q_norm");
    DALLOC(c->w_kn, (size_t)c->hd * 4, "k_norm");
    DALLOC(c->w_qkv, (size_t)c->QKV * H * esz, "q/k/v weights");
    DALLOC(c->w_o, H * c->nH * c->hd * esz, "o_proj weights");
    if (c->has_dense) {
        DALLOC(c->w_mgu, 2 * (size_t)c->Id * H * esz, "mlp gate/up weights");
        DALLOC(c->w_md, H * c->Id * esz, "mlp down weights");
    }
    DALLOC(c->stage, STAGE_BYTES, "staging buffer");
    DALLOC(c->x32, Tc * H * 4, "normed activations");
    if (c->precision == REAP_PRECISION_BF16)
        DALLOC(c->xc, Tc * H * esz, "normed activations (bf16)");
    else
        c->xc = c->x32;
    c->arena_bytes = arena_layout(c, nr, nb, NULL);
    DALLOC(c->arena, c->arena_bytes, "chunk workspace");
    arena_layout(c, nr, nb, c->arena);
    return REAP_OK;
}

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
    c->E = cfg->n_experts;
    c->K = cfg->n_experts > 0 ? cfg->n_experts_used : 0;
    c->I = cfg->moe_inter;
    c->Id = cfg->inter;
    c->V = cfg->vocab;
    c->norm_topk = cfg->norm_topk_prob;
    c->eps = (float)cfg->rms_eps;
    c->n_rows = rows->n_rows;
    c->S = rows->seq_len;
    c->T = (int64_t)rows->n_rows * rows->seq_len;
    c->n_valid = rows->n_valid;
    c->layer = -1;
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
    if ((rc = plan_and_allocate(c, opts))) goto fail;
    if (getenv("REAP_CUDA_PROFILE")) {
        for (int i = 0; i < 7; i++)
            if ((e = cudaEventCreate(&c->ev[i])) != cudaSuccess) {
                rc = cu_fail(c, e, "cudaEventCreate");
                goto fail;
            }
        c->prof = 1;
    }

    /* tokens, mask, RoPE tables (fp64 angles, as the CPU reference) */
    {
        const int half = c->hd / 2;
        float *tab = (float *)malloc((size_t)c->S * half * 2 * sizeof(float));
        if (!tab) {
            rc = reap_err_set(REAP_E_NOMEM, "cuda backend: RoPE table");
            goto fail;
        }
        for (int i = 0; i < half; i++) {
            double inv_freq = pow(cfg->rope_theta, -(2.0 * i) / c->hd);
            for (int p = 0; p < c->S; p++) {
                double a = p * inv_freq;
                tab[(size_t)p * half + i] = (float)cos(a);
                tab[(size_t)c->S * half + (size_t)p * half + i] = (float)sin(a);
            }
        }
        e = cudaMemcpyAsync(c->d_cos, tab, (size_t)c->S * half * 4, cudaMemcpyHostToDevice,
                            c->st);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(c->d_sin, tab + (size_t)c->S * half, (size_t)c->S * half * 4,
                                cudaMemcpyHostToDevice, c->st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->st);
        free(tab);
        if (e != cudaSuccess) { rc = cu_fail(c, e, "cudaMemcpy(rope)"); goto fail; }
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
    *out = c;
    return REAP_OK;
fail:
    cuda_free(c);
    return rc;
}

/* ---- uploads ---------------------------------------------------------------------------- */

static int src_dtype(const st_tensor *t, int *dt, size_t *esz)
{
    switch (t->dtype) {
    case ST_F32: *dt = SRC_F32; *esz = 4; return REAP_OK;
    case ST_BF16: *dt = SRC_BF16; *esz = 2; return REAP_OK;
    case ST_F16: *dt = SRC_F16; *esz = 2; return REAP_OK;
    default:
        return reap_err_set(REAP_E_UNSUPPORTED, "tensor %s: dtype %s (BF16, F16 or F32 only)",
                            t->name, st_dtype_name(t->dtype));
    }
}

/* dst[0..n) = elements [first, first + n) of t, converted on the device to fp32
 * (to_f32 = 1) or to the compute type. Raw bytes go through the staging buffer. */
static int upload(cuda_ctx *c, const st_tensor *t, int64_t first, int64_t n, void *dst,
                  int to_f32)
{
    int dt, rc;
    size_t sz;
    if (!t) return reap_err_set(REAP_E_INTERNAL, "%s: missing weight view", c->where);
    if ((rc = src_dtype(t, &dt, &sz))) return reap_err_prefix(rc, "%s", c->where);
    if (first < 0 || n < 0 || first + n > t->numel)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor %s has %lld elements, %lld needed",
                            c->where, t->name, (long long)t->numel, (long long)(first + n));
    const char *src = (const char *)t->data + (size_t)first * sz;
    const int64_t step = (int64_t)(STAGE_BYTES / sz);
    const int tc_f32 = to_f32 || c->precision == REAP_PRECISION_FP32;
    for (int64_t off = 0; off < n; off += step) {
        const int64_t m = n - off < step ? n - off : step;
        CU(cudaMemcpyAsync(c->stage, src + (size_t)off * sz, (size_t)m * sz,
                           cudaMemcpyHostToDevice, c->st),
           "cudaMemcpy(weights)");
        if (tc_f32)
            k_convert<float><<<grid_for((size_t)m, 256), 256, 0, c->st>>>(
                c->stage, dt, (float *)dst + off, (size_t)m, c->d_flag);
        else
            k_convert<bf16><<<grid_for((size_t)m, 256), 256, 0, c->st>>>(
                c->stage, dt, (bf16 *)dst + off, (size_t)m, c->d_flag);
        KCHECK("convert weights");
    }
    return REAP_OK;
}

static int need_numel(cuda_ctx *c, const st_tensor *t, int64_t n)
{
    if (!t) return reap_err_set(REAP_E_INTERNAL, "%s: missing weight view", c->where);
    if (t->numel != n)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor %s has %lld elements, expected %lld",
                            c->where, t->name, (long long)t->numel, (long long)n);
    return REAP_OK;
}

/* Error path only: after the device flagged a non-finite weight, find it on the host so
 * the message names the tensor and element (as the CPU backend's does). */
static int find_nonfinite(const st_tensor *t, int64_t first, int64_t n)
{
    float buf[4096];
    if (!t) return REAP_OK;
    for (int64_t off = 0; off < n; off += 4096) {
        const int64_t m = n - off < 4096 ? n - off : 4096;
        int rc = reap_tensor_to_f32(t, first + off, m, buf);
        if (rc) return rc;
    }
    return REAP_OK;
}

static int find_nonfinite_layer(const cuda_ctx *c, const reap_layer_weights *w)
{
    const st_tensor *ts[] = {w->input_norm, w->post_norm, w->q_proj, w->k_proj, w->v_proj,
                             w->o_proj, w->q_norm, w->k_norm, w->router, w->gate_up,
                             w->down_fused, w->mlp_gate, w->mlp_up, w->mlp_down};
    int rc;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        if (ts[i] && (rc = find_nonfinite(ts[i], 0, ts[i]->numel))) return rc;
    if (w->is_moe && w->layout == REAP_EXPERTS_SPLIT && w->gate && w->up && w->down)
        for (int e = 0; e < c->E; e++)
            if ((w->gate[e] && (rc = find_nonfinite(w->gate[e], 0, w->gate[e]->numel))) ||
                (w->up[e] && (rc = find_nonfinite(w->up[e], 0, w->up[e]->numel))) ||
                (w->down[e] && (rc = find_nonfinite(w->down[e], 0, w->down[e]->numel))))
                return rc;
    return REAP_OK;
}

static int cuda_embed(void *ctx, const st_tensor *embed)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int dt, rc;
    size_t sz;
    snprintf(c->where, sizeof c->where, "embed");
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    if ((rc = src_dtype(embed, &dt, &sz))) return rc;
    if (embed->ndim != 2 || embed->shape[1] != c->H || embed->shape[0] < c->V)
        return reap_err_set(REAP_E_FORMAT, "embed: tensor %s is not [%d, %d]", embed->name,
                            c->V, c->H);
    const size_t row_bytes = (size_t)c->H * sz;
    int rows_per = (int)(STAGE_BYTES / row_bytes);
    if (rows_per < 1)
        return reap_err_set(REAP_E_UNSUPPORTED, "embed: hidden size %d too large", c->H);
    for (int v0 = 0; v0 < c->V; v0 += rows_per) {
        const int v1 = c->V - v0 < rows_per ? c->V : v0 + rows_per;
        CU(cudaMemcpyAsync(c->stage, (const char *)embed->data + (size_t)v0 * row_bytes,
                           (size_t)(v1 - v0) * row_bytes, cudaMemcpyHostToDevice, c->st),
           "cudaMemcpy(embedding)");
        k_embed_gather<<<grid_for((size_t)c->T * 32, 256), 256, 0, c->st>>>(
            c->d_tok, c->T, v0, v1, c->stage, dt, c->H, c->d_hidden, c->d_flag);
        KCHECK("embedding gather");
    }
    if ((rc = check_flag(c)) == REAP_E_NUMERIC) {
        /* name the tensor and element: scan the rows of the tokens used, on the host */
        int32_t *tok = (int32_t *)malloc((size_t)c->T * sizeof *tok);
        if (!tok) return rc;
        int rc2 = REAP_OK;
        if (cudaMemcpyAsync(tok, c->d_tok, (size_t)c->T * 4, cudaMemcpyDeviceToHost, c->st) ==
                cudaSuccess &&
            cudaStreamSynchronize(c->st) == cudaSuccess)
            for (int64_t t = 0; t < c->T && !rc2; t++)
                rc2 = find_nonfinite(embed, (int64_t)tok[t] * c->H, c->H);
        free(tok);
        if (rc2) return reap_err_prefix(rc2, "embed");
    }
    return rc;
}

static int cuda_load_layer(void *ctx, const reap_layer_weights *w)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc;
    const int64_t H = c->H, hd = c->hd, qd = (int64_t)c->nH * hd, kvd = (int64_t)c->nKV * hd;
    const int64_t E = c->E, I = c->I, Id = c->Id;
    snprintf(c->where, sizeof c->where, "layer %d", w->layer);
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    c->layer = -1;
    if ((rc = need_numel(c, w->input_norm, H)) || (rc = need_numel(c, w->post_norm, H)) ||
        (rc = need_numel(c, w->q_norm, hd)) || (rc = need_numel(c, w->k_norm, hd)) ||
        (rc = need_numel(c, w->q_proj, qd * H)) || (rc = need_numel(c, w->k_proj, kvd * H)) ||
        (rc = need_numel(c, w->v_proj, kvd * H)) || (rc = need_numel(c, w->o_proj, H * qd)))
        return rc;
    char *qkv = (char *)c->w_qkv;
    if ((rc = upload(c, w->input_norm, 0, H, c->w_in_norm, 1)) ||
        (rc = upload(c, w->post_norm, 0, H, c->w_post_norm, 1)) ||
        (rc = upload(c, w->q_norm, 0, hd, c->w_qn, 1)) ||
        (rc = upload(c, w->k_norm, 0, hd, c->w_kn, 1)) ||
        (rc = upload(c, w->q_proj, 0, qd * H, qkv, 0)) ||
        (rc = upload(c, w->k_proj, 0, kvd * H, qkv + (size_t)qd * H * c->esz, 0)) ||
        (rc = upload(c, w->v_proj, 0, kvd * H, qkv + (size_t)(qd + kvd) * H * c->esz, 0)) ||
        (rc = upload(c, w->o_proj, 0, H * qd, c->w_o, 0)))
        return rc;
    if (w->is_moe) {
        if (E < 1)
            return reap_err_set(REAP_E_INVALID, "%s: MoE layer but no experts", c->where);
        if ((rc = need_numel(c, w->router, E * H)) ||
            (rc = upload(c, w->router, 0, E * H, c->w_router, 1)))
            return rc;
        char *gu = (char *)c->w_gu, *dn = (char *)c->w_d;
        const size_t ex_gu = (size_t)2 * I * H * c->esz, ex_d = (size_t)H * I * c->esz;
        if (w->layout == REAP_EXPERTS_FUSED) {
            if ((rc = need_numel(c, w->gate_up, E * H * 2 * I)) ||
                (rc = need_numel(c, w->down_fused, E * I * H)) ||
                (rc = upload(c, w->gate_up, 0, E * H * 2 * I, gu, 0)) ||
                (rc = upload(c, w->down_fused, 0, E * I * H, dn, 0)))
                return rc;
            c->fused = 1;
        } else if (w->layout == REAP_EXPERTS_SPLIT) {
            if (!w->gate || !w->up || !w->down)
                return reap_err_set(REAP_E_INTERNAL, "%s: missing expert views", c->where);
            for (int64_t e = 0; e < E; e++) {
                if ((rc = need_numel(c, w->gate[e], I * H)) ||
                    (rc = need_numel(c, w->up[e], I * H)) ||
                    (rc = need_numel(c, w->down[e], H * I)) ||
                    (rc = upload(c, w->gate[e], 0, I * H, gu + e * ex_gu, 0)) ||
                    (rc = upload(c, w->up[e], 0, I * H, gu + e * ex_gu + ex_gu / 2, 0)) ||
                    (rc = upload(c, w->down[e], 0, H * I, dn + e * ex_d, 0)))
                    return rc;
            }
            c->fused = 0;
        } else {
            return reap_err_set(REAP_E_INTERNAL, "%s: unknown expert layout %d", c->where,
                                (int)w->layout);
        }
    } else {
        if (!c->has_dense)
            return reap_err_set(REAP_E_INTERNAL, "%s: dense layer not planned", c->where);
        if ((rc = need_numel(c, w->mlp_gate, Id * H)) || (rc = need_numel(c, w->mlp_up, Id * H)) ||
            (rc = need_numel(c, w->mlp_down, H * Id)) ||
            (rc = upload(c, w->mlp_gate, 0, Id * H, c->w_mgu, 0)) ||
            (rc = upload(c, w->mlp_up, 0, Id * H, (char *)c->w_mgu + (size_t)Id * H * c->esz, 0)) ||
            (rc = upload(c, w->mlp_down, 0, H * Id, c->w_md, 0)))
            return rc;
    }
    if ((rc = check_flag(c))) {
        int rc2 = rc == REAP_E_NUMERIC ? find_nonfinite_layer(c, w) : REAP_OK;
        return rc2 ? reap_err_prefix(rc2, "layer %d", w->layer) : rc;
    }
    c->layer = w->layer;
    c->is_moe = w->is_moe;
    return REAP_OK;
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

/* Attention for the chunk of `nr` rows starting at hidden row x [Tc, H], mask [Tc]. */
static int attention_block(cuda_ctx *c, float *x, int nr, const uint8_t *mask)
{
    const int bf = c->precision == REAP_PRECISION_BF16;
    const int64_t Tc = (int64_t)nr * c->S;
    const int S = c->S, qd = c->nH * c->hd;
    int rc;
    PROF(c, 0);
    if ((rc = rmsnorm(c, x, Tc, c->w_in_norm, NULL, 1, RF_INPUT))) return rc;
    if ((rc = linear(c, "cublasGemmEx(qkv_proj)", (int)Tc, c->H, c->QKV, c->xc, c->ctype, c->H,
                     c->w_qkv, c->ctype, 0, c->qkv32, CUDA_R_32F, c->QKV, 0.0f)))
        return rc;
    {
        const size_t items = (size_t)Tc * (c->nH + 2 * c->nKV);
        const unsigned blocks = (unsigned)((items * 32 + 255) / 256);
        if (bf)
            k_qk_norm_rope<bf16><<<blocks, 256, 0, c->st>>>(
                c->qkv32, (bf16 *)c->qkvc, Tc, c->nH, c->nKV, c->hd, S, c->w_qn, c->w_kn,
                c->eps, c->d_cos, c->d_sin);
        else
            k_qk_norm_rope<float><<<blocks, 256, 0, c->st>>>(
                c->qkv32, (float *)c->qkvc, Tc, c->nH, c->nKV, c->hd, S, c->w_qn, c->w_kn,
                c->eps, c->d_cos, c->d_sin);
        KCHECK("qk norm + rope");
    }
    PROF(c, 1);
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
    PROF(c, 2);
    /* x += attn Wo^T */
    return linear(c, "cublasGemmEx(o_proj)", (int)Tc, qd, c->H, c->attn, c->ctype, qd, c->w_o,
                  c->ctype, 0, x, CUDA_R_32F, c->H, 1.0f);
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
    if ((rc = rmsnorm(c, x, Tc, c->w_post_norm, c->x32, 1, RF_ATTN))) return rc;
    if ((rc = linear(c, "cublasGemmEx(router)", (int)Tc, H, E, c->x32, CUDA_R_32F, H,
                     c->w_router, CUDA_R_32F, 0, c->logits, CUDA_R_32F, E, 0.0f)))
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
    const size_t esz = (size_t)c->esz;
    const size_t ex_gu = (size_t)2 * I * H * esz, ex_d = (size_t)H * I * esz;
    PROF(c, 4);
    for (int e = 0; e < E; e++) {
        const int ne = c->h_cnt[e], o = c->h_off[e];
        if (!ne) continue;
        if ((rc = linear(c, "cublasGemmEx(expert gate_up)", ne, H, 2 * I,
                         (const char *)c->xg + (size_t)o * H * esz, c->ctype, H,
                         (const char *)c->w_gu + e * ex_gu, c->ctype, c->fused,
                         c->gu + (size_t)o * 2 * I, CUDA_R_32F, 2 * I, 0.0f)))
            return rc;
    }
    if (bf)
        k_swiglu<bf16><<<grid_for((size_t)P * I, 256), 256, 0, c->st>>>(c->gu, P, I,
                                                                        (bf16 *)c->hh,
                                                                        c->d_flag, RF_EXPERT);
    else
        k_swiglu<float><<<grid_for((size_t)P * I, 256), 256, 0, c->st>>>(c->gu, P, I,
                                                                         (float *)c->hh,
                                                                         c->d_flag, RF_EXPERT);
    KCHECK("swiglu");
    for (int e = 0; e < E; e++) {
        const int ne = c->h_cnt[e], o = c->h_off[e];
        if (!ne) continue;
        if ((rc = linear(c, "cublasGemmEx(expert down)", ne, I, H,
                         (const char *)c->hh + (size_t)o * I * esz, c->ctype, I,
                         (const char *)c->w_d + e * ex_d, c->ctype, c->fused,
                         c->y + (size_t)o * H, CUDA_R_32F, H, 0.0f)))
            return rc;
    }
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
    if ((rc = rmsnorm(c, x, Tc, c->w_post_norm, NULL, 1, RF_ATTN)) ||
        (rc = linear(c, "cublasGemmEx(mlp gate_up)", (int)Tc, H, 2 * Id, c->xc, c->ctype, H,
                     c->w_mgu, c->ctype, 0, c->gu, CUDA_R_32F, 2 * Id, 0.0f)))
        return rc;
    if (bf)
        k_swiglu<bf16><<<grid_for((size_t)Tc * Id, 256), 256, 0, c->st>>>(
            c->gu, Tc, Id, (bf16 *)c->hh, c->d_flag, RF_MLP);
    else
        k_swiglu<float><<<grid_for((size_t)Tc * Id, 256), 256, 0, c->st>>>(
            c->gu, Tc, Id, (float *)c->hh, c->d_flag, RF_MLP);
    KCHECK("swiglu");
    if ((rc = linear(c, "cublasGemmEx(mlp down)", (int)Tc, Id, H, c->hh, c->ctype, Id, c->w_md,
                     c->ctype, 0, x, CUDA_R_32F, H, 1.0f)))
        return rc;
    PROF(c, 5);
    k_check_finite<<<grid_for((size_t)Tc * H, 256), 256, 0, c->st>>>(x, (size_t)Tc * H,
                                                                     c->d_flag, RF_OUTPUT);
    KCHECK("check output");
    return REAP_OK;
}

static int expert_statistics(cuda_ctx *c, reap_layer_stats *s)
{
    const int E = c->E;
    k_expert_stats<<<E, 256, 0, c->st>>>(c->d_ids, c->d_g, c->d_nrm, c->d_mx, c->T * c->K,
                                         c->d_scnt, c->d_sgn, c->d_sn, c->d_sg, c->d_smx);
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
        s->count[e] += c->h_scnt[e];
        s->sum_gate_norm[e] += c->h_sgn[e];
        s->sum_norm[e] += c->h_sn[e];
        s->sum_gate[e] += c->h_sg[e];
        if (c->h_scnt[e] > 0 && c->h_smx[e] > s->max_act[e]) s->max_act[e] = c->h_smx[e];
    }
    s->tokens += c->n_valid;
    return REAP_OK;
}

static int cuda_forward_layer(void *ctx, reap_layer_stats *stats)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc;
    if (c->layer < 0)
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
        if ((rc = attention_block(c, x, nr, mask))) return rc;
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

static const reap_backend_i cuda_backend = {
    "cuda",
    cuda_init,
    cuda_embed,
    cuda_load_layer,
    cuda_forward_layer,
    cuda_get_hidden,
    cuda_set_hidden,
    cuda_free,
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

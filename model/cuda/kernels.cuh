/* kernels.cuh - the device kernels of the CUDA backend (included by backend_cuda.cu and
 * upload.cu).
 *
 * Kernels have internal linkage (static): several translation units include this file.
 * Every kernel here is deterministic: no floating-point atomics, reductions in a fixed
 * tree order (warp xor-butterflies, then the warp partials in warp order), and the
 * token permutation by expert is a stable counting sort. Non-finite activations set a
 * bit in a device-side flag word that the host reads once per stage group.
 *
 * Dimension legend (chunk = consecutive calibration rows processed together):
 *   T   tokens of the chunk (rows * S)     S   seq_len
 *   H   hidden                             hd  head dim, nH query heads, nKV kv heads
 *   QKV (nH + 2 nKV) * hd, the fused q|k|v projection width
 *   E   experts, K experts per token       I   expert width (moe_intermediate_size)
 *   P   routed (token, slot) pairs of the chunk (valid tokens only), sorted by
 *       (expert, token, slot)
 * TC is the compute type of GEMM inputs: float (fp32 mode) or __nv_bfloat16 (bf16 mode).
 */
#ifndef REAP_CUDA_KERNELS_CUH
#define REAP_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>
#include <stdint.h>

/* Bits of the non-finite flag word: which stage produced a NaN/Inf. */
enum {
    RF_INPUT = 1,    /* layer input hidden state */
    RF_WEIGHT = 2,   /* a weight tensor */
    RF_EMBED = 4,    /* embedding rows */
    RF_ATTN = 8,     /* attention scores or the hidden state after attention */
    RF_ROUTER = 16,  /* router logits */
    RF_EXPERT = 32,  /* expert activations / outputs */
    RF_MLP = 64,     /* dense MLP activations */
    RF_OUTPUT = 128  /* layer output hidden state */
};

/* Source dtypes of weight conversion (weights arrive as raw bytes of the checkpoint). */
enum { SRC_F32 = 0, SRC_BF16 = 1, SRC_F16 = 2 };

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float load_src(const void *src, int dtype, size_t i)
{
    if (dtype == SRC_BF16) return __bfloat162float(((const __nv_bfloat16 *)src)[i]);
    if (dtype == SRC_F16) return __half2float(((const __half *)src)[i]);
    return ((const float *)src)[i];
}

struct OpSum {
    template <typename V> __device__ V operator()(V a, V b) const { return a + b; }
};
struct OpMax {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

/* Reduce v over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order;
 * every thread gets the result. `sh` holds 33 values of V. */
template <typename V, typename Op>
__device__ V block_reduce(V v, Op op, V identity, V *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        V w = lane < nwarps ? sh[lane] : identity;
        for (int o = 16; o > 0; o >>= 1) w = op(w, __shfl_xor_sync(FULL_MASK, w, o));
        if (lane == 0) sh[32] = w;
    }
    __syncthreads();
    return sh[32];
}

/* ---- weights and embedding ------------------------------------------------------ */

/* dst[i] = (TC) src[i], i < n; flags NaN/Inf (RF_WEIGHT). */
template <typename TC>
static __global__ void k_convert(const void *src, int dtype, TC *dst, size_t n, int *flag)
{
    int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = load_src(src, dtype, i);
        bad |= !isfinite(v);
        dst[i] = from_f32<TC>(v);
    }
    if (bad) atomicOr(flag, RF_WEIGHT);
}

/* Transposing conversion of n_mat matrices: dst[m][c][r] = (TC) src[m][r][c], src
 * [n_mat, rows, cols] raw `dtype`, dst [n_mat, cols, rows]. Used at upload to turn the
 * fused checkpoint orientation ([E, H, 2I], [E, I, H]) into nn.Linear's ([E, 2I, H],
 * [E, H, I]), so every expert GEMM takes the same (faster) transposed-A path.
 * Block (32, 8) per 32 x 32 tile, grid (ceil(cols/32), ceil(rows/32), n_mat). */
template <typename TC>
static __global__ void k_convert_t(const void *src, int dtype, int rows, int cols, TC *dst, int *flag)
{
    __shared__ float tile[32][33];
    const size_t m = blockIdx.z, base = m * (size_t)rows * cols;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    int bad = 0;
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        float v = 0.0f;
        if (r < rows && c < cols) {
            v = load_src(src, dtype, base + (size_t)r * cols + c);
            bad |= !isfinite(v);
        }
        tile[i][threadIdx.x] = v;
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) dst[base + (size_t)c * rows + r] = from_f32<TC>(tile[threadIdx.x][i]);
    }
    if (bad) atomicOr(flag, RF_WEIGHT);
}

/* AWQ int4 dequantisation (GEMM packing, weights.h) of input rows [k0, k0 + kc) of a
 * linear with N outputs and group g (kc a multiple of g). `slot` holds, back to back, the
 * rows' qweight [kc, N/8] (int32 words), their qzeros [kc/g, N/8] and scales [kc/g, N]
 * (f16). Column n of a word is nibble ((n & 7) >> 1) | ((n & 1) << 2) (AutoAWQ order).
 * dst[n * ld + kk] = (q[kk][n] - z[kk/g][n]) * s[kk/g][n] for n < N, kk < kc: the
 * nn.Linear orientation [N, K] with ld = K and dst pointing at column k0. Grid-stride
 * over kc * N with kk fastest, so the writes of a warp are contiguous. Flags non-finite
 * scales (RF_WEIGHT). */
template <typename TC>
static __global__ void k_awq_dequant(const void *slot, int64_t kc, int N, int g, TC *dst,
                                     int64_t ld, int *flag)
{
    const int Nw = N / 8;
    const uint32_t *qw = (const uint32_t *)slot;                 /* [kc, N/8] */
    const uint32_t *qz = qw + (size_t)kc * Nw;                   /* [kc/g, N/8] */
    const __half *sc = (const __half *)(qz + (size_t)(kc / g) * Nw); /* [kc/g, N] */
    int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)kc * N;
         i += (size_t)gridDim.x * blockDim.x) {
        const int64_t kk = (int64_t)(i % (size_t)kc), gk = kk / g;
        const int n = (int)(i / (size_t)kc), c = n >> 3;
        const int sh = 4 * (((n & 7) >> 1) | ((n & 1) << 2));
        const int q = (int)((qw[(size_t)kk * Nw + c] >> sh) & 15u);
        const int z = (int)((qz[(size_t)gk * Nw + c] >> sh) & 15u);
        const float s = __half2float(sc[(size_t)gk * N + n]);
        bad |= !isfinite(s);
        dst[(size_t)n * ld + kk] = from_f32<TC>((float)(q - z) * s);
    }
    if (bad) atomicOr(flag, RF_WEIGHT);
}

/* For each token t with v0 <= tok[t] < v1: hidden[t] = rows[tok[t] - v0] (fp32).
 * rows: [v1 - v0, H] of `dtype`; hidden: [T, H]. One warp per token. */
static __global__ void k_embed_gather(const int32_t *tok, int64_t T, int v0, int v1,
                               const void *rows, int dtype, int H, float *hidden,
                               int *flag)
{
    const int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    int bad = 0;
    for (int64_t t = warp; t < T; t += nwarps) {
        int id = tok[t];
        if (id < v0 || id >= v1) continue;
        size_t src = (size_t)(id - v0) * H;
        float *dst = hidden + (size_t)t * H;
        for (int h = lane; h < H; h += 32) {
            float v = load_src(rows, dtype, src + h);
            bad |= !isfinite(v);
            dst[h] = v;
        }
    }
    if (bad) atomicOr(flag, RF_EMBED);
}

/* ---- normalisation and rotary embedding ------------------------------------------ */

/* One block per row: y = w * (x / sqrt(mean(x^2) + eps)), sum of squares in fp64.
 * x: [T, H] fp32; out32 (optional): [T, H] fp32; outc (optional): [T, H] TC.
 * Non-finite x sets `bit`. */
template <typename TC>
static __global__ void k_rmsnorm(const float *x, int H, const float *w, float eps, float *out32,
                          TC *outc, int *flag, int bit)
{
    __shared__ double sh[33];
    const float *xr = x + (size_t)blockIdx.x * H;
    double ss = 0.0;
    int bad = 0;
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float v = xr[h];
        bad |= !isfinite(v);
        ss += (double)v * v;
    }
    ss = block_reduce(ss, OpSum(), 0.0, sh);
    if (bad) atomicOr(flag, bit);
    const float inv = (float)(1.0 / sqrt(ss / H + (double)eps));
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float y = __fmul_rn(w[h], __fmul_rn(xr[h], inv));
        if (out32) out32[(size_t)blockIdx.x * H + h] = y;
        if (outc) outc[(size_t)blockIdx.x * H + h] = from_f32<TC>(y);
    }
}

/* Per-head RMSNorm of q and k over hd (weights qn, kn [hd]) followed by NeoX rotate-half
 * interleaved mRoPE, in place on qkv [T, QKV] fp32; also writes the TC copy qkvc
 * (may alias qkv when TC is float; the v part is only copied). One warp per (token, head),
 * heads 0..nH-1 are q, nH..nH+nKV-1 k, then nKV v heads.
 * pos: [T, 3] the chunk's slice of the (t, h, w) ids (positions.h), each < the table rows.
 * plane: [hd/2] which of the three ids frequency slot i uses (reap_mrope_plane).
 * cos_t, sin_t: [table rows, hd/2] (angle id * theta^(-2i/hd), computed on the host in
 * fp64); slot i reads row pos[t][plane[i]], so equal ids give 1-D RoPE exactly. */
template <typename TC>
static __global__ void k_qk_norm_rope(float *qkv, TC *qkvc, int64_t T, int nH, int nKV, int hd,
                               const int32_t *pos_t, const uint8_t *plane, const float *qn,
                               const float *kn, float eps, const float *cos_t,
                               const float *sin_t)
{
    const int lane = threadIdx.x & 31;
    const int heads = nH + 2 * nKV;
    const int64_t item = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    if (item >= T * heads) return;
    const int64_t t = item / heads;
    const int hh = (int)(item % heads);
    const size_t QKV = (size_t)heads * hd;
    float *x = qkv + (size_t)t * QKV + (size_t)hh * hd;
    TC *xc = qkvc + (size_t)t * QKV + (size_t)hh * hd;
    if (hh >= nH + nKV) { /* v head: copy only */
        if ((void *)xc != (void *)x)
            for (int i = lane; i < hd; i += 32) xc[i] = from_f32<TC>(x[i]);
        return;
    }
    const float *wn = hh < nH ? qn : kn;
    double ss = 0.0;
    for (int i = lane; i < hd; i += 32) ss += (double)x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(FULL_MASK, ss, o);
    const float inv = (float)(1.0 / sqrt(ss / hd + (double)eps));
    const int half = hd / 2;
    const int32_t *ids = pos_t + (size_t)t * 3;
    for (int i = lane; i < half; i += 32) {
        const size_t row = (size_t)ids[plane[i]] * half + i;
        const float cs = cos_t[row], sn = sin_t[row];
        float a = __fmul_rn(wn[i], __fmul_rn(x[i], inv));
        float b = __fmul_rn(wn[i + half], __fmul_rn(x[i + half], inv));
        float ra = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn));
        float rb = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
        x[i] = ra;
        x[i + half] = rb;
        xc[i] = from_f32<TC>(ra);
        xc[i + half] = from_f32<TC>(rb);
    }
}

/* hidden[slots[i]] = src[i] (add 0) or += src[i] (add 1), rows of H fp32; one block per
 * row i < n. */
static __global__ void k_scatter_rows(float *hidden, const int64_t *slots, const float *src,
                                      int64_t n, int H, int add)
{
    const int64_t i = blockIdx.x;
    if (i >= n) return;
    float *dst = hidden + (size_t)slots[i] * H;
    const float *s = src + (size_t)i * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x)
        dst[h] = add ? __fadd_rn(dst[h], s[h]) : s[h];
}

/* ---- attention ------------------------------------------------------------------- */

/* Pointer arrays of one batch of (row, head) pairs, pairs b0 .. b0+nb-1 of the chunk
 * (pair g = row * nH + head). For the score GEMM: A1 = K, B1 = Q, C1 = S; for the value
 * GEMM: A2 = V, B2 = P, C2 = O. esz: bytes per TC element. */
static __global__ void k_attn_ptrs(const char *qkvc, char *attn, char *S32, char *Pc, int b0, int nb,
                            int nH, int nKV, int hd, int S, int esz, const void **A1,
                            const void **B1, void **C1, const void **A2, const void **B2,
                            void **C2)
{
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nb) return;
    const int g = b0 + b;
    const int r = g / nH, h = g % nH, kvh = h / (nH / nKV);
    const size_t QKV = (size_t)(nH + 2 * nKV) * hd;
    const char *base = qkvc + (size_t)r * S * QKV * esz;
    A1[b] = base + ((size_t)nH * hd + (size_t)kvh * hd) * esz;
    B1[b] = base + (size_t)h * hd * esz;
    C1[b] = S32 + (size_t)b * S * S * sizeof(float);
    A2[b] = base + ((size_t)(nH + nKV) * hd + (size_t)kvh * hd) * esz;
    B2[b] = Pc + (size_t)b * S * S * esz;
    C2[b] = attn + ((size_t)r * S * nH * hd + (size_t)h * hd) * esz;
}

/* Causal, key-masked softmax of one batch of score matrices S32 [nb, S(query), S(key)]
 * (already scaled), into P [nb, S, S] of TC (may alias S32 when TC is float). Query i of
 * pair b sees keys j <= i with mask[row(b), j] == 1; other entries of P are 0; a masked
 * query or one with no visible key gets an all-zero row (as the CPU reference). */
template <typename TC>
static __global__ void k_attn_softmax(const float *S32, TC *P, int S, const uint8_t *mask, int b0,
                               int nH, int *flag)
{
    __shared__ float shf[33];
    const int i = blockIdx.x, b = blockIdx.y;
    const int r = (b0 + b) / nH;
    const uint8_t *mk = mask + (size_t)r * S;
    const float *s = S32 + ((size_t)b * S + i) * S;
    TC *p = P + ((size_t)b * S + i) * S;
    const int last = mk[i] ? i : -1; /* last visible key index */
    float mx = -CUDART_INF_F;
    int bad = 0;
    for (int j = threadIdx.x; j <= last; j += blockDim.x)
        if (mk[j]) {
            float v = s[j];
            bad |= !isfinite(v);
            mx = fmaxf(mx, v);
        }
    mx = block_reduce(mx, OpMax(), -CUDART_INF_F, shf);
    if (bad) atomicOr(flag, RF_ATTN);
    float sum = 0.0f;
    if (mx != -CUDART_INF_F)
        for (int j = threadIdx.x; j <= last; j += blockDim.x)
            if (mk[j]) sum += expf(s[j] - mx);
    sum = block_reduce(sum, OpSum(), 0.0f, shf);
    for (int j = threadIdx.x; j < S; j += blockDim.x) {
        float v = 0.0f;
        if (j <= last && mk[j] && sum > 0.0f) v = expf(s[j] - mx) / sum;
        p[j] = from_f32<TC>(v);
    }
}

/* ---- router and token permutation ------------------------------------------------ */

/* One warp per token: p = softmax(logits) over all E (in fp64, as the CPU reference),
 * top-K by logit (ties to the lower expert index), weights g = p or p / sum_k p_k
 * (norm_topk). Masked tokens (and tokens with a non-finite logit, which set RF_ROUTER)
 * get ids -1 and weight 0. logits [T, E]; ids, g [T, K]. Requires E <= 1024, K <= 32. */
static __global__ void k_router(const float *logits, const uint8_t *mask, int64_t T, int E, int K,
                         int norm_topk, int32_t *ids, double *g, int *flag)
{
    const int lane = threadIdx.x & 31;
    const int64_t t = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    if (t >= T) return;
    const float *l = logits + t * E;
    float mx = -CUDART_INF_F;
    int bad = 0;
    if (mask[t])
        for (int j = lane; j < E; j += 32) {
            float v = l[j];
            bad |= !isfinite(v);
            mx = fmaxf(mx, v);
        }
    if (!mask[t] || __any_sync(FULL_MASK, bad)) {
        if (bad && lane == 0) atomicOr(flag, RF_ROUTER);
        if (lane < K) {
            ids[t * K + lane] = -1;
            g[t * K + lane] = 0.0;
        }
        return;
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    double z = 0.0;
    for (int j = lane; j < E; j += 32) z += exp((double)l[j] - mx);
    for (int o = 16; o > 0; o >>= 1) z += __shfl_xor_sync(FULL_MASK, z, o);
    uint32_t taken = 0; /* bit q: expert lane + 32 q already selected */
    double my_p = 0.0, psum = 0.0;
    int my_id = -1;
    for (int k = 0; k < K; k++) {
        float best = -CUDART_INF_F;
        int bi = 0x7fffffff;
        for (int j = lane, q = 0; j < E; j += 32, q++) {
            if (taken >> q & 1u) continue;
            float v = l[j];
            if (bi == 0x7fffffff || v > best) {
                best = v;
                bi = j;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(FULL_MASK, best, o);
            int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            if (oi != 0x7fffffff &&
                (bi == 0x7fffffff || ov > best || (ov == best && oi < bi))) {
                best = ov;
                bi = oi;
            }
        }
        if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
        double p = exp((double)best - mx) / z;
        psum += p;
        if (lane == k) {
            my_p = p;
            my_id = bi;
        }
    }
    if (lane < K) {
        ids[t * K + lane] = my_id;
        g[t * K + lane] = norm_topk ? my_p / psum : my_p;
    }
}

/* cnt[e] = #{i < n : ids[i] == e}; one block per expert. */
static __global__ void k_count(const int32_t *ids, int n, int *cnt)
{
    __shared__ int sh[33];
    const int e = blockIdx.x;
    int c = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) c += ids[i] == e;
    c = block_reduce(c, OpSum(), 0, sh);
    if (threadIdx.x == 0) cnt[e] = c;
}

/* Stable scatter by expert: the pairs i (= token * K + slot) with ids[i] == e go to
 * perm[off[e] ..] in increasing i; inv[i] = their position. One block per expert. */
static __global__ void k_scatter(const int32_t *ids, int n, const int *off, int32_t *perm,
                          int32_t *inv)
{
    __shared__ int wsum[32];
    const int e = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    int running = off[e];
    for (int base = 0; base < n; base += blockDim.x) {
        const int i = base + threadIdx.x;
        const int f = i < n && ids[i] == e;
        const uint32_t bal = __ballot_sync(FULL_MASK, f);
        if (lane == 0) wsum[warp] = __popc(bal);
        __syncthreads();
        int before = 0, total = 0;
        for (int q = 0; q < nwarps; q++) {
            before += q < warp ? wsum[q] : 0;
            total += wsum[q];
        }
        if (f) {
            int pos = running + before + __popc(bal & ((1u << lane) - 1u));
            perm[pos] = i;
            inv[i] = pos;
        }
        running += total;
        __syncthreads();
    }
}

/* dst[p] = src[perm[p] / K] for the P sorted pairs; src [T, H], dst [P, H]. Block per p. */
template <typename TC>
static __global__ void k_gather_rows(const TC *src, const int32_t *perm, int K, int H, TC *dst)
{
    const int p = blockIdx.x;
    const TC *s = src + (size_t)(perm[p] / K) * H;
    TC *d = dst + (size_t)p * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x) d[h] = s[h];
}

/* ---- feed-forward ----------------------------------------------------------------- */

/* h[r, i] = silu(gu[r, i]) * gu[r, I + i]; gu [n, 2I] fp32, h [n, I] TC. */
template <typename TC>
static __global__ void k_swiglu(const float *gu, int64_t n, int I, TC *h, int *flag, int bit)
{
    int bad = 0;
    const size_t total = (size_t)n * I;
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total;
         x += (size_t)gridDim.x * blockDim.x) {
        const size_t r = x / I, i = x % I;
        const float g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i];
        bad |= !isfinite(g) | !isfinite(u);
        h[x] = from_f32<TC>(g / (1.0f + expf(-g)) * u);
    }
    if (bad) atomicOr(flag, bit);
}

/* Per sorted pair p: ||Y[p]||_2 (fp64) and max_h Y[p][h], stored at the pair's global
 * index pair_base + perm[p]. Y [P, H] fp32; nrm, mx [T_all * K]. Block per p. */
static __global__ void k_pair_stats(const float *Y, const int32_t *perm, int H, int64_t pair_base,
                             double *nrm, float *mx, int *flag)
{
    __shared__ double shd[33];
    __shared__ float shf[33];
    const int p = blockIdx.x;
    const float *y = Y + (size_t)p * H;
    double ss = 0.0;
    float m = -CUDART_INF_F;
    int bad = 0;
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float v = y[h];
        bad |= !isfinite(v);
        ss += (double)v * v;
        m = fmaxf(m, v);
    }
    ss = block_reduce(ss, OpSum(), 0.0, shd);
    m = block_reduce(m, OpMax(), -CUDART_INF_F, shf);
    if (bad) atomicOr(flag, RF_EXPERT);
    if (threadIdx.x == 0) {
        nrm[pair_base + perm[p]] = sqrt(ss);
        mx[pair_base + perm[p]] = m;
    }
}

/* x[t] += sum_k (float) g[t,k] * Y[inv[t*K+k]] for valid tokens, the K terms added in
 * ascending expert order into an fp32 accumulator (the CPU reference's order).
 * x [T, H], Y [P, H], ids/g/inv [T, K]. Block per token. */
static __global__ void k_combine(const float *Y, const int32_t *ids, const double *g,
                          const int32_t *inv, int K, int H, float *x, int *flag)
{
    __shared__ int order[32];
    const int64_t t = blockIdx.x;
    if (ids[t * K] < 0) return;
    if (threadIdx.x == 0) { /* insertion sort of the K slots by expert id */
        for (int k = 0; k < K; k++) {
            int q = k;
            while (q > 0 && ids[t * K + order[q - 1]] > ids[t * K + k]) {
                order[q] = order[q - 1];
                q--;
            }
            order[q] = k;
        }
    }
    __syncthreads();
    float *xr = x + (size_t)t * H;
    int bad = 0;
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float acc = 0.0f;
        for (int q = 0; q < K; q++) {
            const int k = order[q];
            acc = __fadd_rn(acc, __fmul_rn((float)g[t * K + k],
                                           Y[(size_t)inv[t * K + k] * H + h]));
        }
        float v = __fadd_rn(xr[h], acc);
        bad |= !isfinite(v);
        xr[h] = v;
    }
    if (bad) atomicOr(flag, RF_OUTPUT);
}

/* Per-expert statistics over all n = T_all * K pairs of the layer, in pair order: one
 * block per expert. Outputs [E]: count, sum g*||f||, sum ||f||, sum g, max f. With
 * modality != NULL ([T_all], reap_modality of each position), only the pairs whose
 * position i / K has modality `want`. */
static __global__ void k_expert_stats(const int32_t *ids, const double *g, const double *nrm,
                               const float *mx, int64_t n, long long *cnt, double *sgn,
                               double *sn, double *sg, float *mxo, const uint8_t *modality,
                               int K, int want)
{
    __shared__ double shd[33];
    __shared__ long long shl[33];
    __shared__ float shf[33];
    const int e = blockIdx.x;
    long long c = 0;
    double a = 0.0, b = 0.0, d = 0.0;
    float m = -CUDART_INF_F;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        if (ids[i] != e) continue;
        if (modality && modality[i / K] != want) continue;
        c++;
        a += g[i] * nrm[i];
        b += nrm[i];
        d += g[i];
        m = fmaxf(m, mx[i]);
    }
    c = block_reduce(c, OpSum(), 0LL, shl);
    a = block_reduce(a, OpSum(), 0.0, shd);
    b = block_reduce(b, OpSum(), 0.0, shd);
    d = block_reduce(d, OpSum(), 0.0, shd);
    m = block_reduce(m, OpMax(), -CUDART_INF_F, shf);
    if (threadIdx.x == 0) {
        cnt[e] = c;
        sgn[e] = a;
        sn[e] = b;
        sg[e] = d;
        mxo[e] = m;
    }
}

/* Sets `bit` if any of x[0..n) is NaN/Inf. */
static __global__ void k_check_finite(const float *x, size_t n, int *flag, int bit)
{
    int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        bad |= !isfinite(x[i]);
    if (bad) atomicOr(flag, bit);
}

#endif

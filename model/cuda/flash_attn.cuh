/* flash_attn.cuh - causal, key-masked attention in one kernel (bf16 mode), without
 * materialising the score matrices: a flash-attention style tiled loop with an online
 * softmax on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation; sm_80+).
 * Included by backend_cuda.cu only.
 *
 * The reference it must agree with is the score-matrix path of backend_cuda.cu
 * (attention_block_gemm: scores GEMM -> k_attn_softmax -> values GEMM), which is kept
 * and selected with reap_backend_opts.attn = REAP_CUDA_ATTN_GEMM, in fp32 mode, and for
 * head dims not listed here.
 *
 * Semantics (backend.h): query i of a row sees keys j <= i with mask[j] == 1; scale
 * hd^-0.5; softmax in fp32; a query with mask 0 or no visible key gets a zero output.
 * The probabilities are rounded to bf16 for the P.V product (as the GEMM path does) and
 * normalised by the fp32 sum at the end.
 *
 * Work split: block = 4 warps = 64 queries of one (row, head) pair, each warp 16 query
 * rows; keys in tiles of 64 through shared memory (cp.async, double-buffered; K and V
 * rows padded to HD + 8 elements so ldmatrix is free of bank conflicts); only the key
 * tiles at or below the diagonal are visited (causal). grid.x = query tiles, heaviest
 * (last) first; grid.y = (row, head) pairs, pair0 + blockIdx.y.
 *
 * mma.m16n8k16 fragments (g = lane / 4, t = lane % 4): A regs (row g | g+8, cols 2t,2t+1
 * | +8); B regs (k 2t,2t+1 | +8, col g); C (row g: cols 2t, 2t+1; row g+8: same).
 *
 * Layout: qkv [Tc, QKV] TC (q heads, then k heads, then v heads; QKV = (nH + 2 nKV) HD),
 * out [Tc, nH * HD], mask [Tc] for the chunk.
 */
#ifndef REAP_CUDA_FLASH_ATTN_CUH
#define REAP_CUDA_FLASH_ATTN_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "kernels.cuh" /* RF_ATTN */

#define FA_BM 64 /* queries per block */
#define FA_BN 64 /* keys per tile */

__device__ __forceinline__ void fa_cp_async16(void *smem, const void *gmem, int bytes)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(bytes));
}
__device__ __forceinline__ void fa_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void fa_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void fa_ldmatrix_x4(uint32_t r[4], const void *smem)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void fa_ldmatrix_x4_trans(uint32_t r[4], const void *smem)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

/* d += a * b for one m16n8k16 tile. */
__device__ __forceinline__ void fa_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t fa_pack(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* Shared memory bytes of k_flash_attn<HD>. */
__host__ __device__ constexpr int fa_smem_bytes(int hd)
{
    return 2 * 2 * FA_BN * (hd + 8) * 2 + 2 * FA_BN;
}

template <int HD>
__global__ void __launch_bounds__(128)
k_flash_attn(const __nv_bfloat16 *qkv, __nv_bfloat16 *out, const uint8_t *mask, int S, int nH,
             int nKV, int pair0, float scale_log2, int *flag)
{
    constexpr int LDS = HD + 8;      /* shared row stride, elements */
    constexpr int KS = HD / 16;      /* k-steps of Q.K^T */
    constexpr int NT = FA_BN / 8;    /* score n-tiles per warp */
    constexpr int DT = HD / 8;       /* output n-tiles per warp */
    constexpr int CH = HD / 8;       /* 16-byte chunks per K/V row */
    extern __shared__ __align__(16) unsigned char fa_smem[];
    __nv_bfloat16 *sK = (__nv_bfloat16 *)fa_smem;          /* [2][FA_BN][LDS] */
    __nv_bfloat16 *sV = sK + 2 * FA_BN * LDS;              /* [2][FA_BN][LDS] */
    uint8_t *sM = (uint8_t *)(sV + 2 * FA_BN * LDS);       /* [2][FA_BN] key mask */

    const int QKV = (nH + 2 * nKV) * HD, qd = nH * HD;
    const int nqt = (S + FA_BM - 1) / FA_BM;
    const int qt = nqt - 1 - (int)blockIdx.x;
    const int pair = pair0 + (int)blockIdx.y, r = pair / nH, h = pair % nH;
    const int kvh = h / (nH / nKV);
    const size_t row0 = (size_t)r * S;
    const __nv_bfloat16 *Qg = qkv + row0 * QKV + (size_t)h * HD;
    const __nv_bfloat16 *Kg = qkv + row0 * QKV + (size_t)(nH + kvh) * HD;
    const __nv_bfloat16 *Vg = qkv + row0 * QKV + (size_t)(nH + nKV + kvh) * HD;
    const uint8_t *mk = mask + row0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int qa = qt * FA_BM + warp * 16 + g, qb = qa + 8; /* this thread's query rows */

    /* Q fragments, held in registers for the whole loop (rows past S are zero) */
    uint32_t qf[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        const int d = kk * 16 + 2 * t;
        qf[kk][0] = qa < S ? *(const uint32_t *)(Qg + (size_t)qa * QKV + d) : 0u;
        qf[kk][1] = qb < S ? *(const uint32_t *)(Qg + (size_t)qb * QKV + d) : 0u;
        qf[kk][2] = qa < S ? *(const uint32_t *)(Qg + (size_t)qa * QKV + d + 8) : 0u;
        qf[kk][3] = qb < S ? *(const uint32_t *)(Qg + (size_t)qb * QKV + d + 8) : 0u;
    }

    const int kend = (qt + 1) * FA_BM < S ? (qt + 1) * FA_BM : S; /* keys < kend */
    const int nkt = (kend + FA_BN - 1) / FA_BN;

    /* K/V tile j into buffer b; keys past S are zero-filled and masked */
    auto load_tile = [&](int j, int b) {
        for (int c = threadIdx.x; c < FA_BN * CH; c += blockDim.x) {
            const int row = c / CH, col = (c % CH) * 8, key = j * FA_BN + row;
            const int ok = key < S;
            const size_t off = ok ? (size_t)key * QKV + col : 0;
            fa_cp_async16(sK + (b * FA_BN + row) * LDS + col, Kg + off, ok ? 16 : 0);
            fa_cp_async16(sV + (b * FA_BN + row) * LDS + col, Vg + off, ok ? 16 : 0);
        }
        for (int c = threadIdx.x; c < FA_BN; c += blockDim.x) {
            const int key = j * FA_BN + c;
            sM[b * FA_BN + c] = key < S ? mk[key] : 0;
        }
    };

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
    int bad = 0;

    load_tile(0, 0);
    fa_cp_commit();
    for (int j = 0; j < nkt; j++) {
        const int b = j & 1;
        if (j + 1 < nkt) {
            load_tile(j + 1, b ^ 1);
            fa_cp_commit();
            fa_cp_wait<1>();
        } else {
            fa_cp_wait<0>();
        }
        __syncthreads();
        const __nv_bfloat16 *K = sK + b * FA_BN * LDS, *V = sV + b * FA_BN * LDS;
        const uint8_t *M = sM + b * FA_BN;

        /* scores s = Q K^T for 16 queries x 64 keys */
        float s[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bk[4];
                const int key = np * 16 + ((lane >> 4) & 1) * 8 + (lane & 7);
                const int d = kk * 16 + ((lane >> 3) & 1) * 8;
                fa_ldmatrix_x4(bk, K + key * LDS + d);
                fa_mma(s[2 * np], qf[kk], bk[0], bk[1]);
                fa_mma(s[2 * np + 1], qf[kk], bk[2], bk[3]);
            }
        }
        /* causal + key mask, scale (log2 domain), row maxima */
        const int kb = j * FA_BN;
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int kl = nt * 8 + 2 * t + (e & 1), key = kb + kl;
                const int q = e < 2 ? qa : qb;
                const int ok = key <= q && M[kl];
                const float v = s[nt][e];
                bad |= ok && !isfinite(v);
                s[nt][e] = ok ? v * scale_log2 : -INFINITY;
            }
            mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
            mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float mu_a = mn_a == -INFINITY ? 0.0f : mn_a;  /* no visible key yet */
        const float mu_b = mn_b == -INFINITY ? 0.0f : mn_b;
        const float al_a = exp2f(m_a - mu_a), al_b = exp2f(m_b - mu_b);
        m_a = mn_a;
        m_b = mn_b;
        float ps_a = 0.0f, ps_b = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            s[nt][0] = exp2f(s[nt][0] - mu_a);
            s[nt][1] = exp2f(s[nt][1] - mu_a);
            s[nt][2] = exp2f(s[nt][2] - mu_b);
            s[nt][3] = exp2f(s[nt][3] - mu_b);
            ps_a += s[nt][0] + s[nt][1];
            ps_b += s[nt][2] + s[nt][3];
        }
        l_a = l_a * al_a + ps_a;
        l_b = l_b * al_b + ps_b;
#pragma unroll
        for (int i = 0; i < DT; i++) {
            o[i][0] *= al_a;
            o[i][1] *= al_a;
            o[i][2] *= al_b;
            o[i][3] *= al_b;
        }
        /* o += P V (P in bf16, from the score registers) */
#pragma unroll
        for (int kk = 0; kk < FA_BN / 16; kk++) {
            uint32_t pa[4];
            pa[0] = fa_pack(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = fa_pack(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = fa_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = fa_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DT / 2; dp++) {
                uint32_t bv[4];
                const int key = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
                const int d = dp * 16 + ((lane >> 4) & 1) * 8;
                fa_ldmatrix_x4_trans(bv, V + key * LDS + d);
                fa_mma(o[2 * dp], pa, bv[0], bv[1]);
                fa_mma(o[2 * dp + 1], pa, bv[2], bv[3]);
            }
        }
        __syncthreads(); /* buffer b is refilled in iteration j + 1 */
    }

    /* normalise (sums over the 4 threads of a row), zero masked / keyless queries */
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = qa < S && mk[qa] && l_a > 0.0f ? 1.0f / l_a : 0.0f;
    const float inv_b = qb < S && mk[qb] && l_b > 0.0f ? 1.0f / l_b : 0.0f;
    __nv_bfloat16 *Oa = out + (row0 + qa) * qd + (size_t)h * HD + 2 * t;
    __nv_bfloat16 *Ob = out + (row0 + qb) * qd + (size_t)h * HD + 2 * t;
#pragma unroll
    for (int i = 0; i < DT; i++) {
        if (qa < S) *(uint32_t *)(Oa + i * 8) = fa_pack(o[i][0] * inv_a, o[i][1] * inv_a);
        if (qb < S) *(uint32_t *)(Ob + i * 8) = fa_pack(o[i][2] * inv_b, o[i][3] * inv_b);
    }
    if (bad) atomicOr(flag, RF_ATTN);
}

#endif

/* cpu_gemm.c - row-independent fp32 GEMM (see cpu_gemm.h for the exactness contract).
 *
 * Dimension legend: M rows of A and C (tokens), N columns of C (rows of B, outputs),
 * K the reduction (inputs); MR x NR the register tile, MC rows of A per cache block,
 * KC reduction steps per cache block.
 *
 * How it is fast and still exact. The work is cut into tiles of MC rows x a group of
 * NR-column panels. Within a tile the reduction runs in blocks of at most KC steps,
 * in ascending order; for each block the tile's rows of A are packed K-major in
 * micro-panels of MR rows (apack[k][i]), and a micro-kernel keeps an MR x NR block of C
 * in registers for the block's steps: one broadcast of A[i][k], one FMA per (i, j), k
 * ascending. Between reduction blocks the partial sums sit in C itself (first block:
 * start from 0.0f; later blocks: continue from the stored value). Storing and reloading
 * an fp32 value is exact, so each element still sees exactly
 * c = fmaf(A[m][k], B[n][k], c) for k = 0..K-1: tiles, blocks, kernels and threads only
 * decide where and when those steps run, never which steps or in what order.
 * Columns past N in the last panel are zero in the packed B; their lanes are computed
 * and never stored.
 */
#include "cpu_gemm.h"

#include <math.h>
#include <string.h>

#include "parallel.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GEMM_X86 1
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

#define MR 6
#define NR CPU_GEMM_NR
#define MC 96   /* rows per tile, a multiple of MR */
#define KC 1024 /* most reduction steps per block; apack (MC x KC floats, 384 KiB) is on
                 * the stack. Measured on Zen 3: KC 1024-1536 beats 256-768 (fewer
                 * reloads of partial sums from C), MC 96 beats 48 and 72. */

/* One micro-tile: C[0:mr, 0:nv] (row stride ldc) over kc reduction steps, from apack
 * (kc x MR, K-major) and a panel slice bp (kc x NR). load_c: continue from C's values
 * (a later reduction block), else start from 0.0f. */
typedef void (*gemm_kern_fn)(int mr, int64_t kc, const float *ap, const float *bp, float *c,
                             int64_t ldc, int nv, int load_c);

/* ---- the readable reference ---------------------------------------------------------- */

void cpu_gemm_ref(float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float c = 0.0f;
            for (int64_t k = 0; k < K; k++)
                c = fmaf(A[m * K + k], B[n * K + k], c);
            C[m * N + n] = c;
        }
}

/* ---- packing ------------------------------------------------------------------------- */

int64_t cpu_gemm_packed_len(int64_t N, int64_t K)
{
    return (N + NR - 1) / NR * NR * K;
}

void cpu_gemm_pack_rows(float *Bp, int64_t N, int64_t K, int64_t row0, const float *src,
                        int64_t n)
{
    for (int64_t r = 0; r < n; r++) {
        int64_t row = row0 + r;
        float *dst = Bp + row / NR * NR * K + row % NR;
        const float *s = src + r * K;
        for (int64_t k = 0; k < K; k++)
            dst[k * NR] = s[k];
    }
    if (row0 + n == N && N % NR) { /* zero the padding columns of the last panel */
        float *last = Bp + (N / NR) * NR * K;
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = N % NR; j < NR; j++)
                last[k * NR + j] = 0.0f;
    }
}

void cpu_gemm_pack(float *Bp, const float *B, int64_t N, int64_t K)
{
    cpu_gemm_pack_rows(Bp, N, K, 0, B, N);
}

/* apack[i0 / MR][k][i % MR] = A[m0 + i][k0 + k] for the tile's rows; rows past m1 of the
 * last micro-panel are left unset (kernels read only the first mr rows). */
static void pack_a(float *apack, const float *A, int64_t K, int64_t m0, int64_t m1,
                   int64_t k0, int64_t kc)
{
    for (int64_t i0 = m0; i0 < m1; i0 += MR) {
        float *ap = apack + (i0 - m0) * kc;
        int mr = m1 - i0 < MR ? (int)(m1 - i0) : MR;
        for (int i = 0; i < mr; i++) {
            const float *a = A + (i0 + i) * K + k0;
            for (int64_t k = 0; k < kc; k++)
                ap[k * MR + i] = a[k];
        }
    }
}

/* ---- portable kernel -------------------------------------------------------------------- */

static void kern_portable(int mr, int64_t kc, const float *ap, const float *bp, float *c,
                          int64_t ldc, int nv, int load_c)
{
    float acc[MR][NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = load_c && j < nv ? c[i * ldc + j] : 0.0f;
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < mr; i++) {
            const float a = ap[k * MR + i];
            for (int j = 0; j < NR; j++)
                acc[i][j] = fmaf(a, bp[k * NR + j], acc[i][j]);
        }
    for (int i = 0; i < mr; i++)
        memcpy(c + i * ldc, acc[i], (size_t)nv * sizeof(float));
}

/* ---- AVX2 + FMA kernel ------------------------------------------------------------------ */

#if GEMM_X86
#define AVX2 __attribute__((target("avx2,fma")))
#define NV (NR / 8) /* ymm vectors per row of the register tile */

/* The MR x NR kernel for a compile-time mr (the loops unroll completely, so the mr x NV
 * accumulators, 12 at mr 6, live in registers): per step NV panel loads, then for each
 * row one broadcast of A[i][k] and NV FMAs. _mm256_fmadd_ps rounds once, as fmaf does.
 * Columns past nv are masked on load and store. */
static inline __attribute__((always_inline)) AVX2 void
kern_avx2_mr(const int mr, int64_t kc, const float *ap, const float *bp, float *c,
             int64_t ldc, int nv, int load_c)
{
    __m256 acc[MR][NV];
    __m256i mask[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8 * v),
                                     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            if (i < mr)
                acc[i][v] = !load_c    ? _mm256_setzero_ps()
                            : nv == NR ? _mm256_loadu_ps(c + i * ldc + 8 * v)
                                       : _mm256_maskload_ps(c + i * ldc + 8 * v, mask[v]);
    for (int64_t k = 0; k < kc; k++) {
        __m256 b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            b[v] = _mm256_loadu_ps(bp + 8 * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
            if (i < mr) {
                const __m256 a = _mm256_broadcast_ss(ap + i);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
            }
        ap += MR;
        bp += NR;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            if (i < mr) {
                if (nv == NR)
                    _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
                else
                    _mm256_maskstore_ps(c + i * ldc + 8 * v, mask[v], acc[i][v]);
            }
}

static AVX2 void kern_avx2(int mr, int64_t kc, const float *ap, const float *bp, float *c,
                           int64_t ldc, int nv, int load_c)
{
    switch (mr) {
    case 6: kern_avx2_mr(6, kc, ap, bp, c, ldc, nv, load_c); break;
    case 5: kern_avx2_mr(5, kc, ap, bp, c, ldc, nv, load_c); break;
    case 4: kern_avx2_mr(4, kc, ap, bp, c, ldc, nv, load_c); break;
    case 3: kern_avx2_mr(3, kc, ap, bp, c, ldc, nv, load_c); break;
    case 2: kern_avx2_mr(2, kc, ap, bp, c, ldc, nv, load_c); break;
    default: kern_avx2_mr(1, kc, ap, bp, c, ldc, nv, load_c); break;
    }
}

static int have_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int have_avx2_fma(void) { return 0; }
#endif

static gemm_kern_fn kernel_for(cpu_gemm_kernel k)
{
#if GEMM_X86
    if (k != CPU_GEMM_PORTABLE && have_avx2_fma())
        return kern_avx2;
#else
    (void)k;
#endif
    return kern_portable;
}

const char *cpu_gemm_kernel_name(void)
{
    return kernel_for(CPU_GEMM_AUTO) == kern_portable ? "portable" : "avx2-fma";
}

/* ---- driver ------------------------------------------------------------------------------ */

typedef struct {
    gemm_kern_fn kern;
    float *C;
    const float *A, *Bp;
    int64_t M, N, K;
    int64_t n_panels, group;   /* panels per work item */
    int64_t n_groups;
} gemm_job;

/* Work items [begin, end): item t is rows [MC * (t / n_groups), +MC) x panel group
 * t % n_groups. */
static void gemm_items(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    const gemm_job *j = ud;
    _Alignas(64) float apack[MC * KC];
    const int64_t K = j->K, N = j->N;
    const int64_t n_kb = (K + KC - 1) / KC, kcb = (K + n_kb - 1) / n_kb;
    for (int64_t t = begin; t < end; t++) {
        const int64_t m0 = t / j->n_groups * MC, m1 = m0 + MC < j->M ? m0 + MC : j->M;
        const int64_t p0 = t % j->n_groups * j->group,
                      p1 = p0 + j->group < j->n_panels ? p0 + j->group : j->n_panels;
        for (int64_t k0 = 0; k0 < K; k0 += kcb) {
            const int64_t kc = K - k0 < kcb ? K - k0 : kcb;
            pack_a(apack, j->A, K, m0, m1, k0, kc);
            for (int64_t p = p0; p < p1; p++) {
                const float *bp = j->Bp + p * NR * K + k0 * NR;
                const int nv = N - p * NR < NR ? (int)(N - p * NR) : NR;
                for (int64_t i0 = m0; i0 < m1; i0 += MR) {
                    const int mr = m1 - i0 < MR ? (int)(m1 - i0) : MR;
                    j->kern(mr, kc, apack + (i0 - m0) * kc, bp, j->C + i0 * N + p * NR, N,
                            nv, k0 > 0);
                }
            }
        }
    }
}

void cpu_gemm_with(cpu_gemm_kernel kernel, int threads, float *C, const float *A,
                   const float *Bp, int64_t M, int64_t N, int64_t K)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        memset(C, 0, (size_t)(M * N) * sizeof *C);
        return;
    }
    gemm_job j = {kernel_for(kernel), C, A, Bp, M, N, K, (N + NR - 1) / NR, 0, 1};
    /* Enough items to balance the threads, preferring whole rows of panels (A is packed
     * once per item and reduction block); a group keeps at least 4 panels. */
    const int64_t n_mt = (M + MC - 1) / MC;
    if (threads > 1 && n_mt < 4 * (int64_t)threads) {
        int64_t g = (4 * (int64_t)threads + n_mt - 1) / n_mt, gmax = j.n_panels / 4;
        j.n_groups = g < gmax ? g : gmax > 1 ? gmax : 1;
    }
    j.group = (j.n_panels + j.n_groups - 1) / j.n_groups;
    j.n_groups = (j.n_panels + j.group - 1) / j.group;
    reap_parallel_for(threads, n_mt * j.n_groups, gemm_items, &j);
}

void cpu_gemm(int threads, float *C, const float *A, const float *Bp, int64_t M, int64_t N,
              int64_t K)
{
    cpu_gemm_with(CPU_GEMM_AUTO, threads, C, A, Bp, M, N, K);
}

/* cpu_gemm.h - a row-independent fp32 GEMM for the token-wise products of the CPU backend.
 *
 *   C[M, N] = A[M, K] * B[N, K]^T      (B in nn.Linear [out, in] orientation)
 *
 * Exactness contract. Every output element is computed as
 *
 *     c = 0.0f;  for (k = 0; k < K; k++) c = fmaf(A[m][k], B[n][k], c);
 *
 * one correctly rounded fused multiply-add per step, k ascending, nothing else. Row m of C
 * therefore depends only on row m of A and on B: not on M, on the row's position, on
 * which other rows share the call, on the blocking or on the thread count. (BLAS sgemm
 * gives no such guarantee: OpenBLAS's result for a row changes with the rows beside it.)
 * cpu_gemm_ref is that loop written out; the fast path must equal it bit for bit.
 *
 * B is packed once per layer (cpu_gemm_pack) into K-major panels of CPU_GEMM_NR columns:
 * Bp[p][k][j] = B[p * NR + j][k], zero where p * NR + j >= N. The fast path is an
 * AVX2+FMA kernel chosen at run time (__builtin_cpu_supports); elsewhere a portable C
 * kernel with fmaf runs the same per-element sequence (slow, identical bits).
 *
 * Thread rules: pure functions of their arguments; safe to call concurrently on disjoint
 * outputs. Nothing allocates: scratch (384 KiB per thread) lives on the stack.
 */
#ifndef REAP_CPU_GEMM_H
#define REAP_CPU_GEMM_H

#include <stdint.h>

#define CPU_GEMM_NR 16 /* columns per packed panel */

typedef enum cpu_gemm_kernel {
    CPU_GEMM_AUTO = 0,   /* AVX2+FMA when the CPU has it, else portable */
    CPU_GEMM_PORTABLE,   /* C with fmaf */
    CPU_GEMM_AVX2        /* x86-64 AVX2+FMA; falls back to portable if unavailable */
} cpu_gemm_kernel;

/* Floats in a packed B of N rows by K: ceil(N / NR) * NR * K. */
int64_t cpu_gemm_packed_len(int64_t N, int64_t K);

/* Pack rows [row0, row0 + n) of a B of N rows by K into Bp (cpu_gemm_packed_len(N, K)
 * floats); src holds those rows, [n, K] row-major. Rows may be packed in any order and
 * in several calls (e.g. gate then up); the zero padding of the last panel is written
 * by the call that packs row N - 1. */
void cpu_gemm_pack_rows(float *Bp, int64_t N, int64_t K, int64_t row0, const float *src,
                        int64_t n);

/* Pack a whole B [N, K]: cpu_gemm_pack_rows(Bp, N, K, 0, B, N). */
void cpu_gemm_pack(float *Bp, const float *B, int64_t N, int64_t K);

/* C[M, N] = A[M, K] * B^T with B packed by cpu_gemm_pack; C and A row-major and dense.
 * Work is split over `threads` threads (the split cannot change any result). */
void cpu_gemm(int threads, float *C, const float *A, const float *Bp, int64_t M, int64_t N,
              int64_t K);

/* cpu_gemm with the kernel chosen by the caller (tests, benchmarks). */
void cpu_gemm_with(cpu_gemm_kernel kernel, int threads, float *C, const float *A,
                   const float *Bp, int64_t M, int64_t N, int64_t K);

/* The kernel CPU_GEMM_AUTO runs on this machine: "avx2-fma" or "portable". */
const char *cpu_gemm_kernel_name(void);

/* The readable reference: the exactness contract's loop on an unpacked B [N, K]. */
void cpu_gemm_ref(float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K);

#endif

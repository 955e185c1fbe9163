/* cpu_ops.h - the math of one decoder layer on the CPU, as plain functions.
 *
 * Dimension legend: T positions, S sequence length (positions per row), H hidden,
 * nH query heads, nKV key/value heads, hd head dim, E experts, K experts per token,
 * I expert width, N any row count.
 *
 * All activations are fp32; reductions that feed statistics or normalisation accumulate
 * in double in a fixed order, so every function is deterministic. None allocates.
 * Thread rules: pure functions of their arguments; safe to call concurrently on
 * disjoint outputs.
 */
#ifndef REAP_CPU_OPS_H
#define REAP_CPU_OPS_H

#include <stdint.h>

/* y[n] = w * x[n] / sqrt(mean(x[n]^2) + eps) for n rows of width d. y may equal x. */
void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, int d, double eps);

/* C[M, N] = A[M, Kd] * B[N, Kd]^T  (B in nn.Linear [out, in] orientation), beta 0.
 * Deterministic whatever the thread count: M is cut into blocks of `block` rows counted
 * from row 0 of this call, and each block is one single-threaded sgemm call, run on one
 * of `threads` threads. A block's result depends only on that block's rows and B, never
 * on how many threads ran; but a row's result depends on the other rows of its block
 * and its place in it (OpenBLAS rounds differently with the split), so blocks must be
 * units whose composition is fixed by the data: the backend uses one sequence (S rows)
 * for the attention projections. Token-wise GEMMs use cpu_gemm (cpu_gemm.h), where a
 * row depends only on itself. Requires cpu_blas_set_threads(1). */
void cpu_matmul_bt(int threads, int64_t block, float *C, const float *A, const float *B,
                   int64_t M, int64_t N, int64_t Kd);

/* RoPE tables for positions 0..S-1: cos/sin [S, hd/2], inv_freq_i = theta^(-2i/hd). */
void cpu_rope_table(float *cos_t, float *sin_t, int S, int hd, double theta);

/* NeoX rotate-half RoPE in place on one head vector v[hd] with mRoPE ids: frequency
 * slot i (element i pairs with i + hd/2) takes table row ids[plane[i]] (ids: the slot's
 * t, h, w ids; plane: [hd/2] values 0..2, reap_mrope_plane). With equal ids this is
 * 1-D RoPE at that row, bit for bit. */
void cpu_rope_apply(float *v, const float *cos_t, const float *sin_t, const int32_t ids[3],
                    const uint8_t *plane, int hd);

/* Causal attention of one (row, query head): q [S, ldq] (head slice at q), k and v
 * [S, ldk] (KV head slice), mask [S]; out [S, ldo] (head slice). Query i attends to keys
 * j <= i with mask[j] == 1; a masked query (mask[i] == 0) gets zeros (a valid query
 * always sees itself). scores[S * S] is scratch. Two single-threaded sgemm calls of
 * fixed shape (Q K^T and P V), so the result does not depend on threading. */
void cpu_attention_head(float *out, int ldo, const float *q, int ldq, const float *k,
                        const float *v, int ldk, const uint8_t *mask, int S, int hd,
                        float scale, float *scores);

/* Router for one token: softmax over logits[E] (double), top-K by logit (ties -> lower
 * index), weights = probabilities, divided by their sum when renorm. Writes idx[K] in
 * descending logit order and w[K]. */
void cpu_router_topk(const float *logits, int E, int K, int renorm, int32_t *idx,
                     double *w);

/* a[n, I] = silu(gu[n, 0:I]) * gu[n, I:2I] (gu rows of width 2I; inter = I). */
void cpu_swiglu(float *a, const float *gu, int64_t n, int inter);

/* L2 norm (double accumulation) and signed max of x[d]. */
void cpu_norm_max(const float *x, int d, double *norm, float *max);

/* Set the number of OpenBLAS threads. */
void cpu_blas_set_threads(int n);

/* Index of the first non-finite element of x[n], or -1. */
int64_t cpu_first_nonfinite(const float *x, int64_t n);

#endif

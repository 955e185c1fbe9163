/* gen_awq.h - AWQ int4 quantisation and GEMM packing for the test-checkpoint generator
 * (internal to model/gen; the format is described in weights.h and docs/awq.md).
 *
 * A quantised linear with out_features N, in_features K and group g is made from random
 * weights W = std * x, x a fast approximately normal variable: each 32-bit half of a
 * 64-bit draw gives (sum of its four bytes - 510) / sqrt(21845) (Irwin-Hall, mean 0,
 * variance 1). Group gk (input rows gk*g .. gk*g+g-1) has its own stream, seeded with
 * stream_seed ^ (0x9E3779B97F4A7C15 * (gk + 1)) where stream_seed = seed ^
 * fnv1a64("<module>.weight"), and is drawn in the checkpoint's [K, N] order (input row,
 * then output column). Per output column n and group (AutoAWQ's zero-point quantiser):
 *   s = max((max W - min W) / 15, 1e-5), rounded to 4 significant bits (so that every
 *       dequantised value (q - z) * s has at most 8 significant bits: exact in BF16, F16
 *       and F32, which makes the "dequantised twin" checkpoint exact), stored as F16
 *   z = clamp(-round(min W / s), 0, 15) (round half to even)
 *   q = clamp(floor(W * (1/s) + z + 1/2), 0, 15)
 * Packing: nibble i of 32-bit word [r][c] holds column 8c + reap_awq_order[i], least
 * significant nibble first.
 *
 * Thread rules: pure functions on caller-owned buffers; gen_awq_quantise spreads the
 * groups of one linear over the machine's cores (results do not depend on how).
 */
#ifndef REAP_GEN_AWQ_H
#define REAP_GEN_AWQ_H

#include <stdint.h>

typedef struct gen_awq_linear {
    int64_t N, K, g;
    uint8_t *q;       /* [K, N] 0..15 */
    uint8_t *z;       /* [K/g, N] 0..15 */
    uint16_t *s;      /* [K/g, N] F16 bits */
} gen_awq_linear;

/* Quantise the linear whose stream is seeded with `stream_seed`. want_q = 0 skips q
 * (left NULL). Returns REAP_OK or REAP_E_NOMEM / REAP_E_INVALID (N % 8 or K % g). Free
 * with gen_awq_free. */
int gen_awq_quantise(uint64_t stream_seed, double std, int64_t N, int64_t K, int64_t g,
                     int want_q, gen_awq_linear *out);
void gen_awq_free(gen_awq_linear *l);

/* Pack rows x N values v [rows, N] (0..15) into rows x N/8 little-endian int32 words at
 * dst (rows * N / 2 bytes). */
void gen_awq_pack(const uint8_t *v, int64_t rows, int64_t N, unsigned char *dst);

/* Dequantised value of W[n][k] = (q[k][n] - z[k/g][n]) * s[k/g][n], fp32 (exact). */
float gen_awq_value(const gen_awq_linear *l, int64_t n, int64_t k);

#endif

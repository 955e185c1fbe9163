/* gen_awq.c - AWQ int4 quantisation and packing of generated weights (see gen_awq.h).
 *
 * How it works: the module's weights are drawn one output row (n) at a time, each group
 * of g inputs is quantised on its own (scale, zero, codes), and the codes are stored in
 * the checkpoint's [K, N] orientation; no [N, K] float matrix is ever held.
 */
#include "gen_awq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gen_rng.h"
#include "reap_err.h"
#include "weights.h"

void gen_awq_free(gen_awq_linear *l)
{
    if (!l)
        return;
    free(l->q);
    free(l->z);
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* s rounded to 4 significant bits (round half to even on the mantissa). */
static float round_4bits(float s)
{
    int e;
    float m = frexpf(s, &e);           /* s = m * 2^e, m in [0.5, 1) */
    return ldexpf(rintf(m * 16.0f) / 16.0f, e);
}

static int clamp15(float v)
{
    return v < 0.0f ? 0 : v > 15.0f ? 15 : (int)v;
}

int gen_awq_quantise(uint64_t stream_seed, double std, int64_t N, int64_t K, int64_t g,
                     int want_q, gen_awq_linear *out)
{
    gen_rng rng;
    float *row = NULL;
    int rc = REAP_OK;

    memset(out, 0, sizeof *out);
    if (N <= 0 || K <= 0 || g <= 0 || N % 8 || K % g)
        return reap_err_set(REAP_E_INVALID, "genmodel: AWQ linear [%lld, %lld] with group %lld "
                            "(out_features must be a multiple of 8, in_features of the "
                            "group)", (long long)N, (long long)K, (long long)g);
    const int64_t G = K / g;
    out->N = N;
    out->K = K;
    out->g = g;
    out->z = malloc((size_t)(G * N));
    out->s = malloc((size_t)(G * N) * sizeof *out->s);
    row = malloc((size_t)K * sizeof *row);
    if (want_q)
        out->q = malloc((size_t)(K * N));
    if (!out->z || !out->s || !row || (want_q && !out->q)) {
        rc = reap_err_set(REAP_E_NOMEM, "genmodel: AWQ quantisation of [%lld, %lld]",
                          (long long)N, (long long)K);
        goto fail;
    }
    gen_rng_seed(&rng, stream_seed);
    const float fstd = (float)(std / sqrt(8.0));
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k += 2) {
            uint64_t r = gen_rng_next(&rng);
            row[k] = fstd * (float)(__builtin_popcountll(r & 0xffffffffULL) - 16);
            if (k + 1 < K)
                row[k + 1] = fstd * (float)(__builtin_popcountll(r >> 32) - 16);
        }
        for (int64_t gk = 0; gk < G; gk++) {
            const float *w = row + gk * g;
            float lo = w[0], hi = w[0];
            for (int64_t i = 1; i < g; i++) {
                lo = w[i] < lo ? w[i] : lo;
                hi = w[i] > hi ? w[i] : hi;
            }
            float s = (hi - lo) / 15.0f;
            if (s < 1e-5f)
                s = 1e-5f;
            const uint16_t sh = reap_f32_to_f16(round_4bits(s));
            s = reap_f16_to_f32(sh);
            const int z = clamp15(-rintf(lo / s));
            out->s[gk * N + n] = sh;
            out->z[gk * N + n] = (uint8_t)z;
            if (want_q)
                for (int64_t i = 0; i < g; i++)
                    out->q[(gk * g + i) * N + n] = (uint8_t)clamp15(rintf(w[i] / s) + (float)z);
        }
    }
    free(row);
    return REAP_OK;
fail:
    free(row);
    gen_awq_free(out);
    return rc;
}

void gen_awq_pack(const uint8_t *v, int64_t rows, int64_t N, unsigned char *dst)
{
    const int64_t Nw = N / 8;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < Nw; c++) {
            const uint8_t *col = v + r * N + 8 * c;
            uint32_t word = 0;
            for (int i = 0; i < 8; i++)
                word |= (uint32_t)(col[reap_awq_order[i]] & 15u) << (4 * i);
            unsigned char *o = dst + (size_t)(r * Nw + c) * 4;
            o[0] = (unsigned char)word;
            o[1] = (unsigned char)(word >> 8);
            o[2] = (unsigned char)(word >> 16);
            o[3] = (unsigned char)(word >> 24);
        }
}

float gen_awq_value(const gen_awq_linear *l, int64_t n, int64_t k)
{
    const int64_t i = (k / l->g) * l->N + n;
    return (float)((int)l->q[k * l->N + n] - (int)l->z[i]) * reap_f16_to_f32(l->s[i]);
}

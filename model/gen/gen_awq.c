/* gen_awq.c - AWQ int4 quantisation and packing of generated weights (see gen_awq.h).
 *
 * How it works: the module's weights are drawn in the checkpoint's [K, N] orientation,
 * one quantisation group of g input rows at a time ([g, N] floats, from the group's own
 * stream, so groups are independent and spread over the cores); the group's minimum and
 * maximum per output column give its scales and zeros, then its codes; no [K, N] float
 * matrix is ever held, and every pass reads memory in order.
 */
#include "gen_awq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gen_rng.h"
#include "parallel.h"
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

/* Work of one thread: groups [begin, end) of the linear, with its own [g, N] buffers. */
typedef struct quant_job {
    uint64_t stream_seed;
    float scale;        /* std / sqrt(21845) */
    gen_awq_linear *out;
    float *buf;         /* [threads][g * N + 4 N] */
} quant_job;

static void quant_groups(void *ud, int64_t begin, int64_t end, int tid)
{
    const quant_job *j = ud;
    gen_awq_linear *out = j->out;
    const int64_t N = out->N, g = out->g;
    float *buf = j->buf + (size_t)tid * (size_t)(g * N + 4 * N);
    float *lo = buf + g * N, *hi = lo + N, *inv = hi + N, *zf = inv + N;
    for (int64_t gk = begin; gk < end; gk++) {
        /* the group's g input rows, [g, N], from the group's own stream */
        gen_rng rng;
        gen_rng_seed(&rng, j->stream_seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(gk + 1)));
        for (int64_t i = 0; i < g * N; i += 2) {
            uint64_t r = gen_rng_next(&rng);
            for (int h = 0; h < 2 && i + h < g * N; h++, r >>= 32) {
                const int sum = (int)(r & 255) + (int)((r >> 8) & 255) +
                                (int)((r >> 16) & 255) + (int)((r >> 24) & 255);
                buf[i + h] = j->scale * (float)(sum - 510);
            }
        }
        for (int64_t n = 0; n < N; n++)
            lo[n] = hi[n] = buf[n];
        for (int64_t i = 1; i < g; i++)
            for (int64_t n = 0; n < N; n++) {
                const float w = buf[i * N + n];
                lo[n] = w < lo[n] ? w : lo[n];
                hi[n] = w > hi[n] ? w : hi[n];
            }
        for (int64_t n = 0; n < N; n++) {
            float sc = (hi[n] - lo[n]) / 15.0f;
            if (sc < 1e-5f)
                sc = 1e-5f;
            const uint16_t sh = reap_f32_to_f16(round_4bits(sc));
            sc = reap_f16_to_f32(sh);
            const int z = clamp15(-rintf(lo[n] / sc));
            out->s[gk * N + n] = sh;
            out->z[gk * N + n] = (uint8_t)z;
            inv[n] = 1.0f / sc;
            zf[n] = (float)z + 0.5f;
        }
        if (!out->q)
            continue;
        for (int64_t i = 0; i < g; i++) {
            uint8_t *q = out->q + (gk * g + i) * N;
            const float *w = buf + i * N;
            for (int64_t n = 0; n < N; n++) {
                const float v = w[n] * inv[n] + zf[n];  /* round half up, then clamp */
                q[n] = (uint8_t)(v <= 0.0f ? 0 : v >= 15.0f ? 15 : (int)v);
            }
        }
    }
}

int gen_awq_quantise(uint64_t stream_seed, double std, int64_t N, int64_t K, int64_t g,
                     int want_q, gen_awq_linear *out)
{
    memset(out, 0, sizeof *out);
    if (N <= 0 || K <= 0 || g <= 0 || N % 8 || K % g)
        return reap_err_set(REAP_E_INVALID, "genmodel: AWQ linear [%lld, %lld] with group %lld "
                            "(out_features must be a multiple of 8, in_features of the "
                            "group)", (long long)N, (long long)K, (long long)g);
    const int64_t G = K / g;
    int threads = reap_cpu_count();
    if (threads > G)
        threads = (int)G;
    out->N = N;
    out->K = K;
    out->g = g;
    out->z = malloc((size_t)(G * N));
    out->s = malloc((size_t)(G * N) * sizeof *out->s);
    if (want_q)
        out->q = malloc((size_t)(K * N));
    /* Irwin-Hall: the sum of four random bytes has mean 510 and variance 4 (256^2-1)/12 */
    quant_job j = {stream_seed, (float)(std / sqrt(4.0 * (256.0 * 256.0 - 1.0) / 12.0)), out,
                   malloc((size_t)threads * (size_t)(g * N + 4 * N) * sizeof(float))};
    if (!out->z || !out->s || !j.buf || (want_q && !out->q)) {
        free(j.buf);
        gen_awq_free(out);
        return reap_err_set(REAP_E_NOMEM, "genmodel: AWQ quantisation of [%lld, %lld]",
                            (long long)N, (long long)K);
    }
    reap_parallel_for(threads, G, quant_groups, &j);
    free(j.buf);
    return REAP_OK;
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

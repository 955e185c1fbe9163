/* weights_convert.c - element conversions of checkpoint tensors (bf16/f16/f32 to fp32 and
 * back), AWQ int4 dequantisation, and the layout-hiding expert accessor of weights.h.
 * Pure C with no library dependency beyond reap_err, so that a build of the CUDA backend
 * alone (the GPU benchmark, bench/gpu/run.sh) links without the JSON and BLAS libraries.
 *
 * AWQ dequantisation walks one quantisation group of input rows at a time and, in it,
 * one column of packed words (8 outputs) at a time: the column's words are gathered
 * once, then for each of its 8 outputs n a 16-entry table (q - z) * s of the group's
 * zero and scale maps the codes to the output row dst[n][k0 .. k0+g), written
 * contiguously. The table entries are the exact products, so the order of evaluation
 * cannot change a bit.
 */
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

/* ---- scalar conversions ------------------------------------------------------------ */

float reap_bf16_to_f32(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float reap_f16_to_f32(uint16_t v)
{
    uint32_t sign = (uint32_t)(v & 0x8000) << 16;
    uint32_t exp = (v >> 10) & 0x1f;
    uint32_t man = v & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) {                 /* Inf / NaN */
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {             /* normal */
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {             /* zero */
        u = sign;
    } else {                           /* subnormal: renormalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t reap_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);          /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                   /* round to nearest even */
    return (uint16_t)(u >> 16);
}

uint16_t reap_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);             /* NaN */
    if (absu >= 0x477ff000u)                            /* rounds to >= 65520: Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) {                           /* below 2^-14: subnormal or 0 */
        if (absu < 0x33000000u)                          /* below half of 2^-24 */
            return (uint16_t)sign;
        uint32_t man = (absu & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(absu >> 23);             /* 14 + (113 - exp) - 1 */
        uint32_t half = 1u << (shift - 1);
        uint32_t rest = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rest > half || (rest == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu - 0x38000000u;                    /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

/* ---- tensor conversion -------------------------------------------------------------- */

int reap_tensor_to_f32(const st_tensor *t, int64_t first, int64_t n, float *dst)
{
    if (first < 0 || n < 0 || first + n > t->numel)
        return reap_err_set(REAP_E_INTERNAL, "tensor '%s': range [%lld, %lld) outside %lld",
                            t->name, (long long)first, (long long)(first + n),
                            (long long)t->numel);
    switch (t->dtype) {
    case ST_BF16: {
        const uint16_t *s = (const uint16_t *)t->data + first;
        for (int64_t i = 0; i < n; i++)
            dst[i] = reap_bf16_to_f32(s[i]);
        break;
    }
    case ST_F16: {
        const uint16_t *s = (const uint16_t *)t->data + first;
        for (int64_t i = 0; i < n; i++)
            dst[i] = reap_f16_to_f32(s[i]);
        break;
    }
    case ST_F32:
        memcpy(dst, (const float *)t->data + first, (size_t)n * sizeof(float));
        break;
    default:
        return reap_err_set(REAP_E_UNSUPPORTED, "tensor '%s': dtype %s is not supported "
                            "(BF16, F16 or F32)", t->name, st_dtype_name(t->dtype));
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return reap_err_set(REAP_E_NUMERIC, "tensor '%s': non-finite value %g at "
                                "element %lld", t->name, (double)dst[i],
                                (long long)(first + i));
    return REAP_OK;
}

/* Convert `n` elements with stride `stride` starting at element `first`. */
static int tensor_strided_to_f32(const st_tensor *t, int64_t first, int64_t stride,
                                 int64_t n, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        int rc = reap_tensor_to_f32(t, first + i * stride, 1, &dst[i]);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

/* ---- AWQ int4 ------------------------------------------------------------------------ */

const int reap_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

static uint32_t load_u32(const st_tensor *t, int64_t i)
{
    uint32_t u;
    memcpy(&u, (const char *)t->data + (size_t)i * 4, 4);
    return u;
}

int reap_awq_rows_to_f32(const reap_awq_linear *a, int64_t k0, int64_t k1, float *dst,
                         int64_t ld)
{
    if (!a || !a->qweight || !a->qzeros || !a->scales)
        return reap_err_set(REAP_E_INTERNAL, "AWQ dequantisation without qweight/qzeros/scales");
    const int64_t K = a->in, N = a->out, g = a->group, Nw = N / 8;
    if (g <= 0 || N % 8 || K % g || a->qweight->numel != K * Nw ||
        a->qzeros->numel != (K / g) * Nw || a->scales->numel != (K / g) * N ||
        a->qweight->dtype != ST_I32 || a->qzeros->dtype != ST_I32 || a->scales->dtype != ST_F16)
        return reap_err_set(REAP_E_INTERNAL, "tensor '%s': AWQ views inconsistent with "
                            "[K %lld, N %lld, g %lld]", a->qweight->name, (long long)K,
                            (long long)N, (long long)g);
    if (k0 < 0 || k1 > K || k0 > k1 || k0 % g || (k1 % g && k1 != K) || ld < k1 - k0)
        return reap_err_set(REAP_E_INTERNAL, "tensor '%s': AWQ rows [%lld, %lld) of %lld "
                            "(group %lld)", a->qweight->name, (long long)k0, (long long)k1,
                            (long long)K, (long long)g);
    const uint16_t *sc = (const uint16_t *)a->scales->data;
    uint32_t col[256];                 /* a word column of up to 256 rows of a group */
    for (int64_t gk = k0 / g; gk * g < k1; gk++) {
        const int64_t kb = gk * g, ke = kb + g < k1 ? kb + g : k1;
        for (int64_t c = 0; c < Nw; c++) {
            const uint32_t zw = load_u32(a->qzeros, gk * Nw + c);
            for (int64_t r0 = kb; r0 < ke; r0 += 256) {
                const int64_t nk = ke - r0 < 256 ? ke - r0 : 256;
                for (int64_t i = 0; i < nk; i++)
                    col[i] = load_u32(a->qweight, (r0 + i) * Nw + c);
                for (int j = 0; j < 8; j++) {
                    const int64_t n = 8 * c + j;
                    const int sh = 4 * REAP_AWQ_NIBBLE(j);
                    const int z = (int)((zw >> sh) & 15u);
                    const float s = reap_f16_to_f32(sc[gk * N + n]);
                    if (!isfinite(s))
                        return reap_err_set(REAP_E_NUMERIC, "tensor '%s': non-finite scale %g "
                                            "at element %lld", a->scales->name, (double)s,
                                            (long long)(gk * N + n));
                    float lut[16];             /* (q - z) * s for every code q */
                    for (int q = 0; q < 16; q++)
                        lut[q] = (float)(q - z) * s;
                    float *out = dst + n * ld + (r0 - k0);
                    for (int64_t i = 0; i < nk; i++)
                        out[i] = lut[(col[i] >> sh) & 15u];
                }
            }
        }
    }
    return REAP_OK;
}

int reap_awq_to_f32(const reap_awq_linear *a, float *dst)
{
    if (!a || !a->qweight)
        return reap_err_set(REAP_E_INTERNAL, "AWQ dequantisation without qweight");
    return reap_awq_rows_to_f32(a, 0, a->in, dst, a->in);
}

int reap_linear_to_f32(const st_tensor *plain, const reap_awq_linear *awq, float *dst)
{
    if (awq && awq->qweight)
        return reap_awq_to_f32(awq, dst);
    if (plain)
        return reap_tensor_to_f32(plain, 0, plain->numel, dst);
    return reap_err_set(REAP_E_INTERNAL, "linear without a weight view");
}

/* reap_linear_to_f32 of a linear that must have n elements. */
static int linear_checked(const st_tensor *plain, const reap_awq_linear *awq, int64_t n,
                          float *dst)
{
    const int64_t have = awq && awq->qweight ? awq->in * awq->out : plain ? plain->numel : -1;
    if (have != n)
        return reap_err_set(REAP_E_INTERNAL, "expert linear %s: %lld elements, expected %lld",
                            awq && awq->qweight ? awq->qweight->name
                                                : plain ? plain->name : "(none)",
                            (long long)have, (long long)n);
    return reap_linear_to_f32(plain, awq, dst);
}

int reap_expert_to_f32(const reap_layer_weights *w, const reap_config *cfg, int e,
                       float *gate, float *up, float *down)
{
    const int64_t H = cfg->hidden, I = cfg->moe_inter;
    int rc = REAP_OK;
    if (!w->is_moe || e < 0 || e >= cfg->n_experts)
        return reap_err_set(REAP_E_INTERNAL, "layer %d: no expert %d", w->layer, e);
    if (w->layout == REAP_EXPERTS_SPLIT) {
        const reap_awq_linear *ga = w->gate_awq ? &w->gate_awq[e] : NULL,
                              *ua = w->up_awq ? &w->up_awq[e] : NULL,
                              *da = w->down_awq ? &w->down_awq[e] : NULL;
        if (gate && (rc = linear_checked(w->gate[e], ga, I * H, gate)))
            return rc;
        if (up && (rc = linear_checked(w->up[e], ua, I * H, up)))
            return rc;
        if (down && (rc = linear_checked(w->down[e], da, H * I, down)))
            return rc;
        return REAP_OK;
    }
    /* FUSED: gate_up [E, H, 2I] -> gate[j][h] = gu[e][h][j], up[j][h] = gu[e][h][I+j];
     * down_fused [E, I, H] -> down[h][j] = d[e][j][h]. */
    const int64_t gu0 = (int64_t)e * H * 2 * I, d0 = (int64_t)e * I * H;
    for (int64_t j = 0; j < I; j++) {
        if (gate && (rc = tensor_strided_to_f32(w->gate_up, gu0 + j, 2 * I, H, gate + j * H)))
            return rc;
        if (up && (rc = tensor_strided_to_f32(w->gate_up, gu0 + I + j, 2 * I, H, up + j * H)))
            return rc;
    }
    if (down) {
        for (int64_t h = 0; h < H; h++)
            if ((rc = tensor_strided_to_f32(w->down_fused, d0 + h, H, I, down + h * I)))
                return rc;
    }
    return REAP_OK;
}

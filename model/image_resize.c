/* image_resize.c - the target size (smart_resize) and Pillow-exact bicubic resampling.
 *
 * Resampling is separable: a horizontal pass (each output column a weighted sum of a run
 * of input columns), its result rounded and clipped to 8 bits, then a vertical pass over
 * that. Per output index i of a dimension resized from `in` to `out` samples:
 *   scale = in / out; fs = max(scale, 1) (downscaling widens the filter: antialiasing);
 *   support = 2 * fs (the bicubic kernel, a = -0.5, is 2 wide);
 *   center = (i + 0.5) * scale;
 *   the run: first = trunc(center - support + 0.5) clamped to >= 0,
 *            end   = trunc(center + support + 0.5) clamped to <= in;
 *   weight of input j: kernel((j - center + 0.5) / fs), all divided by their sum, then
 *   to fixed point with 22 fraction bits (rounded half away from zero).
 * A sample is (2^21 + sum of pixel * weight) >> 22, clipped to 0..255. Every step is
 * the double arithmetic, in this order, that Pillow's resampler uses, so the bytes are
 * the same (the build has no fast-math and C11 mode keeps a*b+c from fusing).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "reap_err.h"

#define FIX_BITS 22           /* 32 - 8 bits of a sample - 2 bits of headroom */

int reap_smart_resize(int h, int w, int factor, int64_t min_pixels, int64_t max_pixels,
                      int *out_h, int *out_w)
{
    int64_t hb, wb;
    double beta;

    if (!out_h || !out_w)
        return reap_err_set(REAP_E_INVALID, "smart_resize: NULL argument");
    *out_h = *out_w = 0;
    if (h < 1 || w < 1 || factor < 1 || min_pixels < 0 || max_pixels < 1)
        return reap_err_set(REAP_E_INVALID, "smart_resize: invalid arguments (h %d, w %d, "
                            "factor %d, min_pixels %lld, max_pixels %lld)", h, w, factor,
                            (long long)min_pixels, (long long)max_pixels);
    if ((double)(h > w ? h : w) / (double)(h < w ? h : w) > REAP_IMAGE_MAX_ASPECT)
        return reap_err_set(REAP_E_UNSUPPORTED, "image of %d x %d pixels (width x height): "
                            "aspect ratio %.1f is more than %d", w, h,
                            (double)(h > w ? h : w) / (double)(h < w ? h : w),
                            REAP_IMAGE_MAX_ASPECT);
    /* round() of Python 3: halves to even, which nearbyint does in the default mode. */
    hb = (int64_t)nearbyint((double)h / factor) * factor;
    wb = (int64_t)nearbyint((double)w / factor) * factor;
    if (hb * wb > max_pixels) {
        beta = sqrt((double)((int64_t)h * w) / (double)max_pixels);
        hb = (int64_t)floor((double)h / beta / factor) * factor;
        wb = (int64_t)floor((double)w / beta / factor) * factor;
        if (hb < factor)
            hb = factor;
        if (wb < factor)
            wb = factor;
    } else if (hb * wb < min_pixels) {
        beta = sqrt((double)min_pixels / (double)((int64_t)h * w));
        hb = (int64_t)ceil((double)h * beta / factor) * factor;
        wb = (int64_t)ceil((double)w * beta / factor) * factor;
    }
    if (hb < 1 || wb < 1)
        return reap_err_set(REAP_E_INVALID, "image of %d x %d pixels resizes to nothing "
                            "(min_pixels %lld)", w, h, (long long)min_pixels);
    if (hb > INT_MAX || wb > INT_MAX || hb * wb > REAP_IMAGE_MAX_PIXELS)
        return reap_err_set(REAP_E_UNSUPPORTED, "image of %d x %d pixels would be resized to "
                            "%lld x %lld, more than %lld pixels", w, h, (long long)wb,
                            (long long)hb, (long long)REAP_IMAGE_MAX_PIXELS);
    *out_h = (int)hb;
    *out_w = (int)wb;
    return REAP_OK;
}

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The weights of one dimension: for output i, n[i] weights from input first[i] in
 * w[i * stride ...] (fixed point). */
typedef struct taps {
    int *first, *n;
    int32_t *w;
    int stride;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->n);
    free(t->w);
    memset(t, 0, sizeof *t);
}

static int taps_make(int in, int out, taps *t)
{
    double scale = (double)in / out, fs = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * fs, inv = 1.0 / fs;
    double *k = NULL;
    int64_t stride = (int64_t)ceil(support) * 2 + 1;

    memset(t, 0, sizeof *t);
    /* A kernel wider than the input is never needed: at most `in` taps are non-empty. */
    if (stride > (int64_t)in + 2)
        stride = (int64_t)in + 2;
    if (stride * out > ((int64_t)1 << 31))
        return reap_err_set(REAP_E_INVALID, "resize %d -> %d: too many filter taps", in, out);
    t->stride = (int)stride;
    t->first = malloc(sizeof *t->first * (size_t)out);
    t->n = malloc(sizeof *t->n * (size_t)out);
    t->w = calloc((size_t)(stride * out), sizeof *t->w);
    k = malloc(sizeof *k * (size_t)stride);
    if (!t->first || !t->n || !t->w || !k) {
        free(k);
        taps_free(t);
        return reap_err_set(REAP_E_NOMEM, "resize %d -> %d: no memory", in, out);
    }
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale, sum = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5), cnt;
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        cnt = hi - lo;
        if (cnt > t->stride)          /* cannot happen: the run lies inside [0, in) */
            cnt = t->stride;
        for (int j = 0; j < cnt; j++) {
            k[j] = bicubic((j + lo - center + 0.5) * inv);
            sum += k[j];
        }
        for (int j = 0; j < cnt; j++) {
            double v = sum != 0.0 ? k[j] / sum : k[j];
            double f = v * (1 << FIX_BITS);
            t->w[(size_t)i * t->stride + j] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        t->first[i] = lo;
        t->n[i] = cnt < 0 ? 0 : cnt;
    }
    free(k);
    return REAP_OK;
}

static uint8_t clip8(int32_t acc)
{
    int32_t v = acc >> FIX_BITS;      /* arithmetic shift: floor */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

int reap_image_resize_bicubic(const reap_image *in, int out_w, int out_h, reap_image *out)
{
    taps th = {0}, tv = {0};
    uint8_t *tmp = NULL;
    const uint8_t *src;
    int rc, y0 = 0, y1, src_w;

    if (!out)
        return reap_err_set(REAP_E_INVALID, "resize: NULL argument");
    memset(out, 0, sizeof *out);
    if (!in || !in->rgb || in->width < 1 || in->height < 1 || out_w < 1 || out_h < 1 ||
        (int64_t)out_w * out_h > REAP_IMAGE_MAX_PIXELS)
        return reap_err_set(REAP_E_INVALID, "resize: invalid sizes (%d x %d -> %d x %d)",
                            in ? in->width : 0, in ? in->height : 0, out_w, out_h);
    out->rgb = malloc((size_t)out_w * out_h * 3);
    if (!out->rgb)
        return reap_err_set(REAP_E_NOMEM, "resize: no memory for %d x %d pixels", out_w,
                            out_h);
    out->width = out_w;
    out->height = out_h;
    if (out_w == in->width && out_h == in->height) {
        memcpy(out->rgb, in->rgb, (size_t)out_w * out_h * 3);
        return REAP_OK;
    }
    src = in->rgb;
    src_w = in->width;
    y1 = in->height;
    if (out_h != in->height) {
        if ((rc = taps_make(in->height, out_h, &tv)))
            goto fail;
        /* Only the input rows the vertical pass reads need the horizontal pass. */
        y0 = tv.first[0];
        y1 = tv.first[out_h - 1] + tv.n[out_h - 1];
    }
    if (out_w != in->width) {
        if ((rc = taps_make(in->width, out_w, &th)))
            goto fail;
        tmp = malloc((size_t)out_w * (size_t)(y1 - y0) * 3 + 1);
        if (!tmp) {
            rc = reap_err_set(REAP_E_NOMEM, "resize: no memory");
            goto fail;
        }
        for (int y = y0; y < y1; y++) {
            const uint8_t *s = in->rgb + (size_t)y * in->width * 3;
            uint8_t *d = (out_h != in->height ? tmp + (size_t)(y - y0) * out_w * 3
                                              : out->rgb + (size_t)y * out_w * 3);
            for (int x = 0; x < out_w; x++) {
                const int32_t *w = th.w + (size_t)x * th.stride;
                const uint8_t *p = s + (size_t)th.first[x] * 3;
                int32_t a0 = 1 << (FIX_BITS - 1), a1 = a0, a2 = a0;
                for (int j = 0; j < th.n[x]; j++) {
                    a0 += p[3 * j] * w[j];
                    a1 += p[3 * j + 1] * w[j];
                    a2 += p[3 * j + 2] * w[j];
                }
                d[3 * x] = clip8(a0);
                d[3 * x + 1] = clip8(a1);
                d[3 * x + 2] = clip8(a2);
            }
        }
        src = tmp;
        src_w = out_w;
    } else {
        y0 = 0;     /* the vertical pass reads the input itself */
    }
    if (out_h != in->height) {
        for (int y = 0; y < out_h; y++) {
            const int32_t *w = tv.w + (size_t)y * tv.stride;
            const uint8_t *s = src + (size_t)(tv.first[y] - y0) * src_w * 3;
            uint8_t *d = out->rgb + (size_t)y * out_w * 3;
            for (int x = 0; x < 3 * out_w; x++) {
                int32_t a = 1 << (FIX_BITS - 1);
                for (int j = 0; j < tv.n[y]; j++)
                    a += s[(size_t)j * src_w * 3 + x] * w[j];
                d[x] = clip8(a);
            }
        }
    }
    free(tmp);
    taps_free(&th);
    taps_free(&tv);
    return REAP_OK;
fail:
    free(tmp);
    taps_free(&th);
    taps_free(&tv);
    reap_image_free(out);
    return rc;
}

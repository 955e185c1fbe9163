/* image_prep.c - preprocessor_config.json and the processor's pixel_values of an image.
 *
 * Shapes: C = 3 channels, T = temporal_patch_size frames, P = patch_size, M = merge_size;
 * grid (1, gh, gw); a row of pixel_values holds C * T * P * P values of one patch.
 *
 * The arithmetic follows Qwen2VLImageProcessor (slow): rescale multiplies the 8-bit value
 * by the rescale factor in double and stores float; normalise computes (x - mean) / std
 * in float with mean and std as float. A value depends only on the 8-bit sample and the
 * channel, so each channel's 256 values are computed once into a table.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "reap_err.h"

void reap_vision_prep_default(reap_vision_prep *out)
{
    static const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    static const double std[3] = {0.26862954, 0.26130258, 0.27577711};
    memset(out, 0, sizeof *out);
    out->patch_size = 14;
    out->temporal_patch_size = 2;
    out->merge_size = 2;
    out->min_pixels = 56 * 56;
    out->max_pixels = 28 * 28 * 1280;
    out->rescale_factor = 1.0 / 255.0;
    memcpy(out->image_mean, mean, sizeof mean);
    memcpy(out->image_std, std, sizeof std);
    out->do_resize = out->do_rescale = out->do_normalize = 1;
}

/* An integer field, if present (null counts as absent). */
static int get_int(json_t *o, const char *key, const char *name, int64_t lo, int64_t hi,
                   int64_t *v)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return REAP_OK;
    if (!json_is_integer(j))
        return reap_err_set(REAP_E_FORMAT, "%s: \"%s\" must be an integer", name, key);
    if (json_integer_value(j) < lo || json_integer_value(j) > hi)
        return reap_err_set(REAP_E_INVALID, "%s: \"%s\" %lld is out of range [%lld, %lld]",
                            name, key, (long long)json_integer_value(j), (long long)lo,
                            (long long)hi);
    *v = json_integer_value(j);
    return REAP_OK;
}

static int get_bool(json_t *o, const char *key, const char *name, int *v)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return REAP_OK;
    if (!json_is_boolean(j))
        return reap_err_set(REAP_E_FORMAT, "%s: \"%s\" must be true or false", name, key);
    *v = json_is_true(j);
    return REAP_OK;
}

/* A number or a list of 3 numbers (one per channel). */
static int get_triple(json_t *o, const char *key, const char *name, int positive,
                      double v[3])
{
    json_t *j = json_object_get(o, key);
    double t[3];
    if (!j || json_is_null(j))
        return REAP_OK;
    if (json_is_number(j)) {
        t[0] = t[1] = t[2] = json_number_value(j);
    } else if (json_is_array(j) && json_array_size(j) == 3) {
        for (int c = 0; c < 3; c++) {
            if (!json_is_number(json_array_get(j, c)))
                return reap_err_set(REAP_E_FORMAT, "%s: \"%s\"[%d] must be a number", name,
                                    key, c);
            t[c] = json_number_value(json_array_get(j, c));
        }
    } else {
        return reap_err_set(REAP_E_FORMAT, "%s: \"%s\" must be a number or a list of 3 "
                            "numbers", name, key);
    }
    for (int c = 0; c < 3; c++)
        if (!isfinite(t[c]) || (positive && !(t[c] > 0)))
            return reap_err_set(REAP_E_INVALID, "%s: \"%s\"[%d] = %g is not %s", name, key,
                                c, t[c], positive ? "a positive number" : "finite");
    memcpy(v, t, sizeof t);
    return REAP_OK;
}

int reap_vision_prep_parse(const char *json, size_t n, const char *name,
                           reap_vision_prep *out)
{
    reap_vision_prep p;
    json_error_t jerr;
    json_t *root = NULL, *size, *rf;
    int64_t patch, tps, merge, lo = -1, hi = -1;
    int rc;

    if (!json || !out)
        return reap_err_set(REAP_E_INVALID, "reap_vision_prep_parse: NULL argument");
    if (!name)
        name = "preprocessor_config.json";
    reap_vision_prep_default(&p);
    root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return reap_err_set(REAP_E_FORMAT, "%s:%d:%d: invalid JSON: %s", name, jerr.line,
                            jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: top level must be an object", name);
        goto done;
    }
    patch = p.patch_size;
    tps = p.temporal_patch_size;
    merge = p.merge_size;
    if ((rc = get_int(root, "patch_size", name, 1, 1024, &patch)) ||
        (rc = get_int(root, "temporal_patch_size", name, 1, 64, &tps)) ||
        (rc = get_int(root, "merge_size", name, 1, 64, &merge)))
        goto done;
    size = json_object_get(root, "size");
    if (size && !json_is_null(size)) {
        if (!json_is_object(size)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: \"size\" must be an object", name);
            goto done;
        }
        if (!json_object_get(size, "shortest_edge") || !json_object_get(size, "longest_edge")) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: \"size\" must hold \"shortest_edge\" and "
                              "\"longest_edge\"", name);
            goto done;
        }
        if ((rc = get_int(size, "shortest_edge", name, 0, REAP_IMAGE_MAX_PIXELS, &lo)) ||
            (rc = get_int(size, "longest_edge", name, 1, INT64_MAX, &hi)))
            goto done;
    }
    if ((rc = get_int(root, "min_pixels", name, 0, REAP_IMAGE_MAX_PIXELS, &lo)) ||
        (rc = get_int(root, "max_pixels", name, 1, INT64_MAX, &hi)))
        goto done;
    if (lo >= 0)
        p.min_pixels = lo;
    if (hi >= 0)
        p.max_pixels = hi;
    if (p.min_pixels > p.max_pixels) {
        rc = reap_err_set(REAP_E_INVALID, "%s: min_pixels %lld is more than max_pixels %lld",
                          name, (long long)p.min_pixels, (long long)p.max_pixels);
        goto done;
    }
    rf = json_object_get(root, "rescale_factor");
    if (rf && !json_is_null(rf)) {
        if (!json_is_number(rf) || !isfinite(json_number_value(rf)) ||
            !(json_number_value(rf) > 0)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: \"rescale_factor\" must be a positive "
                              "number", name);
            goto done;
        }
        p.rescale_factor = json_number_value(rf);
    }
    if ((rc = get_triple(root, "image_mean", name, 0, p.image_mean)) ||
        (rc = get_triple(root, "image_std", name, 1, p.image_std)) ||
        (rc = get_bool(root, "do_resize", name, &p.do_resize)) ||
        (rc = get_bool(root, "do_rescale", name, &p.do_rescale)) ||
        (rc = get_bool(root, "do_normalize", name, &p.do_normalize)))
        goto done;
    p.patch_size = (int)patch;
    p.temporal_patch_size = (int)tps;
    p.merge_size = (int)merge;
    *out = p;
    rc = REAP_OK;
done:
    json_decref(root);
    return rc;
}

int reap_vision_prep_load(const char *path, const reap_roots *roots, reap_vision_prep *out)
{
    uint8_t *buf;
    size_t n;
    int rc;

    if (!path || !out)
        return reap_err_set(REAP_E_INVALID, "reap_vision_prep_load: NULL argument");
    if ((rc = reap_image_read_file(path, roots, &buf, &n)))
        return rc;
    rc = reap_vision_prep_parse((const char *)buf, n, path, out);
    free(buf);
    return rc;
}

int reap_image_grid(const reap_vision_prep *p, int h, int w, int grid[3])
{
    int factor, rh = h, rw = w, rc;

    if (!p || !grid || p->patch_size < 1 || p->merge_size < 1 ||
        p->patch_size > 1024 || p->merge_size > 64)
        return reap_err_set(REAP_E_INVALID, "reap_image_grid: invalid arguments");
    factor = p->patch_size * p->merge_size;
    if (p->do_resize) {
        if ((rc = reap_smart_resize(h, w, factor, p->min_pixels, p->max_pixels, &rh, &rw)))
            return rc;
    } else if (h < 1 || w < 1 || h % factor || w % factor) {
        return reap_err_set(REAP_E_INVALID, "image of %d x %d pixels: without do_resize "
                            "both sides must be multiples of %d", w, h, factor);
    }
    grid[0] = 1;
    grid[1] = rh / p->patch_size;
    grid[2] = rw / p->patch_size;
    return REAP_OK;
}

int reap_image_preprocess(const reap_image *img, const reap_vision_prep *p,
                          float **patches, int grid[3], reap_image *resized)
{
    reap_image tmp = {0, 0, NULL};
    const reap_image *src = img;
    float lut[3][256];
    float *v = NULL;
    int rc, P, T, M, gh, gw;
    size_t row_len, rows, r = 0;

    if (resized)
        memset(resized, 0, sizeof *resized);
    if (!patches || !grid || !img || !img->rgb || !p)
        return reap_err_set(REAP_E_INVALID, "reap_image_preprocess: NULL argument");
    *patches = NULL;
    if (p->temporal_patch_size < 1 || p->temporal_patch_size > 64)
        return reap_err_set(REAP_E_INVALID, "temporal_patch_size %d is out of range",
                            p->temporal_patch_size);
    if ((rc = reap_image_grid(p, img->height, img->width, grid)))
        return rc;
    P = p->patch_size;
    T = p->temporal_patch_size;
    M = p->merge_size;
    gh = grid[1];
    gw = grid[2];
    if (gh * P != img->height || gw * P != img->width) {
        if ((rc = reap_image_resize_bicubic(img, gw * P, gh * P, &tmp)))
            return rc;
        src = &tmp;
    }
    for (int c = 0; c < 3; c++) {
        float mean = (float)p->image_mean[c], std = (float)p->image_std[c];
        for (int u = 0; u < 256; u++) {
            float x = p->do_rescale ? (float)((double)u * p->rescale_factor) : (float)u;
            lut[c][u] = p->do_normalize ? (x - mean) / std : x;
        }
    }
    row_len = (size_t)3 * T * P * P;
    rows = (size_t)gh * gw;
    v = malloc(sizeof *v * row_len * rows);
    if (!v) {
        rc = reap_err_set(REAP_E_NOMEM, "no memory for %zu patches", rows);
        goto fail;
    }
    /* Row order: merge block (bh, bw), then (mh, mw) within it; within a row: channel,
     * frame, pixel row, pixel column. All T frames are the same still image. */
    for (int bh = 0; bh < gh / M; bh++)
        for (int bw = 0; bw < gw / M; bw++)
            for (int mh = 0; mh < M; mh++)
                for (int mw = 0; mw < M; mw++, r++) {
                    float *d = v + r * row_len;
                    int y0 = (bh * M + mh) * P, x0 = (bw * M + mw) * P;
                    for (int c = 0; c < 3; c++)
                        for (int t = 0; t < T; t++)
                            for (int py = 0; py < P; py++) {
                                const uint8_t *s =
                                    src->rgb + ((size_t)(y0 + py) * src->width + x0) * 3 + c;
                                for (int px = 0; px < P; px++)
                                    *d++ = lut[c][s[3 * px]];
                            }
                }
    *patches = v;
    if (resized) {
        if (src == &tmp) {
            *resized = tmp;
            tmp.rgb = NULL;
        } else if ((rc = reap_image_resize_bicubic(img, img->width, img->height, resized))) {
            goto fail;
        }
    }
    reap_image_free(&tmp);
    return REAP_OK;
fail:
    free(v);
    *patches = NULL;
    reap_image_free(&tmp);
    return rc;
}

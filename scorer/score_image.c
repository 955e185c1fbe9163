/* score_image.c - image probe and patches of a scoring job (score_image.h). */
#include "score_image.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "reap_err.h"

struct reap_score_probe {
    char *model_dir;
    const reap_roots *roots;
    const reap_vision_config *vc;
    int64_t min_pixels, max_pixels;
    int loaded;
    reap_vision_prep prep;
};

int reap_score_probe_new(const char *model_dir, const reap_roots *roots,
                         const reap_vision_config *vc, int64_t min_pixels, int64_t max_pixels,
                         reap_score_probe **out)
{
    reap_score_probe *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p || !(p->model_dir = strdup(model_dir))) {
        free(p);
        return reap_err_set(REAP_E_NOMEM, "image probe");
    }
    p->roots = roots;
    p->vc = vc;
    p->min_pixels = min_pixels;
    p->max_pixels = max_pixels;
    *out = p;
    return REAP_OK;
}

void reap_score_probe_free(reap_score_probe *p)
{
    if (!p)
        return;
    free(p->model_dir);
    free(p);
}

/* The preprocessing parameters, loaded at first use, overrides applied. */
static int probe_prep(reap_score_probe *p)
{
    char path[4096];
    int rc;
    if (p->loaded)
        return REAP_OK;
    snprintf(path, sizeof path, "%s/preprocessor_config.json", p->model_dir);
    if ((rc = reap_vision_prep_load(path, p->roots, &p->prep)))
        return rc;
    if (p->prep.patch_size != p->vc->patch || p->prep.merge_size != p->vc->merge ||
        p->prep.temporal_patch_size != p->vc->temporal_patch)
        return reap_err_set(REAP_E_INVALID, "%s: patch_size %d, merge_size %d, "
                            "temporal_patch_size %d differ from config.json's vision_config "
                            "(%d, %d, %d)", path, p->prep.patch_size, p->prep.merge_size,
                            p->prep.temporal_patch_size, p->vc->patch, p->vc->merge,
                            p->vc->temporal_patch);
    if (p->min_pixels > 0)
        p->prep.min_pixels = p->min_pixels;
    if (p->max_pixels > 0)
        p->prep.max_pixels = p->max_pixels;
    if (p->prep.min_pixels > p->prep.max_pixels)
        return reap_err_set(REAP_E_INVALID, "min_pixels %lld > max_pixels %lld (%s and "
                            "--min-pixels/--max-pixels)", (long long)p->prep.min_pixels,
                            (long long)p->prep.max_pixels, path);
    p->loaded = 1;
    return REAP_OK;
}

int reap_score_probe_grid(reap_score_probe *p, const char *path, const uint8_t *data,
                          size_t n, int grid[3])
{
    int w, h, rc;
    if ((rc = probe_prep(p)) || (rc = reap_image_probe_mem(data, n, path, &w, &h)))
        return rc;
    return reap_image_grid(&p->prep, h, w, grid);
}

int reap_score_image_patches(reap_score_probe *p, const char *path, const reap_roots *roots,
                             const uint8_t digest[32], int64_t line, int item,
                             const int grid[3], float **patches)
{
    uint8_t *buf = NULL, d[32];
    size_t n = 0;
    reap_image img = {0};
    int g[3], rc;
    *patches = NULL;
    if ((rc = probe_prep(p)) || (rc = reap_image_read_file(path, roots, &buf, &n)))
        goto fail;
    crypto_generichash(d, sizeof d, buf, n, NULL, 0);
    if (memcmp(d, digest, sizeof d)) {
        rc = reap_err_set(REAP_E_INVALID, "%s (calibration line %lld, image %d): the file "
                          "changed after the calibration file was read (its BLAKE2b digest "
                          "differs)", path, (long long)line, item);
        goto fail;
    }
    if ((rc = reap_image_decode_mem(buf, n, path, &img)) ||
        (rc = reap_image_preprocess(&img, &p->prep, patches, g, NULL)))
        goto fail;
    if (g[0] != grid[0] || g[1] != grid[1] || g[2] != grid[2])
        rc = reap_err_set(REAP_E_INVALID, "%s (calibration line %lld, image %d): "
                          "preprocessed to a %d x %d x %d patch grid, probed as %d x %d x %d",
                          path, (long long)line, item, g[0], g[1], g[2], grid[0], grid[1],
                          grid[2]);
fail:
    if (rc) {
        free(*patches);
        *patches = NULL;
    }
    reap_image_free(&img);
    free(buf);
    return rc;
}

/* score_vision.c - image probe and vision features of a scoring job (score_vision.h).
 *
 * Legend: Np patches of a batch, D values per patch, Nt image tokens of all images,
 * H the language model's hidden size (= the tower's out_hidden_size), Nd deepstack sets. */
#include "score_vision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reap_err.h"
#include "vision.h"

int reap_score_probe_image(void *ud, const char *path, const uint8_t *data, size_t n,
                           reap_calib_grid *out)
{
    int grid[3], rc = reap_score_probe_grid(ud, path, data, n, grid);
    if (rc)
        return rc;
    out->grid_t = grid[0];
    out->grid_h = grid[1];
    out->grid_w = grid[2];
    return REAP_OK;
}

void reap_score_features_free(reap_score_features *f)
{
    if (!f)
        return;
    free(f->merged);
    free(f->deep);
    memset(f, 0, sizeof *f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int reap_score_vision_run(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                          reap_score_probe *probe, const reap_roots *image_roots,
                          int threads, int64_t batch_patches,
                          reap_score_vision_cb on_batch, void *ud,
                          reap_score_features *out)
{
    const reap_vision_config *vc = &cfg->vision;
    reap_vision *v = NULL;
    float *patches = NULL, *deep_b = NULL, *one = NULL;  /* [Np, D], [Nd, Nt_b, H] */
    int32_t *grids = NULL;                               /* [n_images, 3] */
    int64_t Nt = 0, H = cfg->hidden, D = reap_vision_patch_dim(vc), cap = 0;
    int Nd = vc->n_deepstack, rc = REAP_OK;
    memset(out, 0, sizeof *out);
    if (batch_patches <= 0)
        batch_patches = REAP_SCORE_VISION_BATCH_PATCHES;

    for (int i = 0; i < rows->n_images; i++)
        Nt += rows->images[i].n_tokens;
    if (!(grids = malloc((size_t)(rows->n_images > 0 ? rows->n_images : 1) * 3 *
                         sizeof *grids)) ||
        !(out->merged = malloc((size_t)(Nt > 0 ? Nt : 1) * H * sizeof(float))) ||
        (Nd && !(out->deep = malloc((size_t)Nd * Nt * H * sizeof(float))))) {
        rc = reap_err_set(REAP_E_NOMEM, "image features of %lld tokens", (long long)Nt);
        goto fail;
    }
    for (int i = 0; i < rows->n_images; i++) {
        grids[3 * i] = rows->images[i].grid_t;
        grids[3 * i + 1] = rows->images[i].grid_h;
        grids[3 * i + 2] = rows->images[i].grid_w;
    }
    if ((rc = reap_vision_load(ck, cfg, &v)))
        goto fail;

    int64_t tok0 = 0;       /* first feature row of the batch */
    for (int first = 0; first < rows->n_images;) {
        double t0 = now_s();
        /* The batch: images while the patches stay within the limit (at least one). */
        int n = 0;
        int64_t np = 0, nt = 0;
        while (first + n < rows->n_images) {
            const reap_calib_image *im = &rows->images[first + n];
            int64_t p = (int64_t)im->grid_t * im->grid_h * im->grid_w;
            if (n > 0 && np + p > batch_patches)
                break;
            np += p;
            nt += im->n_tokens;
            n++;
        }
        if (np > cap) {
            free(patches);
            if (!(patches = malloc((size_t)np * D * sizeof *patches))) {
                rc = reap_err_set(REAP_E_NOMEM, "patches of %lld images", (long long)n);
                goto fail;
            }
            cap = np;
        }
        int64_t at = 0;
        for (int i = first; i < first + n; i++) {
            const reap_calib_image *im = &rows->images[i];
            int64_t p = (int64_t)im->grid_t * im->grid_h * im->grid_w;
            int g[3] = {im->grid_t, im->grid_h, im->grid_w};
            if ((rc = reap_score_image_patches(probe, im->path, image_roots, im->digest,
                                               im->line, im->item, g, &one)))
                goto fail;
            memcpy(patches + at * D, one, (size_t)(p * D) * sizeof *one);
            free(one);
            one = NULL;
            at += p;
        }
        free(deep_b);
        deep_b = NULL;
        if (Nd && !(deep_b = malloc((size_t)Nd * nt * H * sizeof *deep_b))) {
            rc = reap_err_set(REAP_E_NOMEM, "deepstack features of %lld tokens",
                              (long long)nt);
            goto fail;
        }
        if ((rc = reap_vision_forward(v, patches, grids + 3 * first, n, threads,
                                      out->merged + tok0 * H, deep_b)))
            goto fail;
        for (int k = 0; k < Nd; k++)
            memcpy(out->deep + ((int64_t)k * Nt + tok0) * H, deep_b + (int64_t)k * nt * H,
                   (size_t)(nt * H) * sizeof(float));
        tok0 += nt;
        reap_score_vision_batch b = {.first = first, .n = n, .total = rows->n_images,
                                     .grids = grids + 3 * first, .patches = patches,
                                     .n_patches = np, .patch_dim = D,
                                     .seconds = now_s() - t0};
        first += n;
        if (on_batch && on_batch(ud, &b)) {
            rc = reap_err_set(REAP_E_CANCELLED, "stopped on request in the vision tower "
                              "(%d of %d images done; nothing was committed)", first,
                              rows->n_images);
            goto fail;
        }
    }
    out->f.spatial_merge = vc->merge;
    out->f.n_image_tokens = Nt;
    out->f.merged = out->merged;
    out->f.n_deepstack = Nd;
    for (int k = 0; k < Nd; k++)
        out->deep_sets[k] = out->deep + (int64_t)k * Nt * H;
    out->f.deepstack = out->deep_sets;
fail:
    if (rc)
        reap_score_features_free(out);
    reap_vision_free(v);
    free(one);
    free(patches);
    free(deep_b);
    free(grids);
    return rc;
}

int reap_score_vision_mem_plan(const reap_config *cfg, int64_t batch_patches, int threads,
                               int64_t image_tokens, reap_score_vision_mem *out)
{
    memset(out, 0, sizeof *out);
    if (image_tokens < 0)
        return reap_err_set(REAP_E_INVALID, "vision memory plan: %lld image tokens",
                            (long long)image_tokens);
    const reap_vision_config *vc = &cfg->vision;
    const int64_t np = batch_patches > 0 ? batch_patches : REAP_SCORE_VISION_BATCH_PATCHES;
    int rc = reap_vision_mem_plan(vc, np, np, threads, &out->tower);
    if (rc)
        return rc;
    const int64_t D = reap_vision_patch_dim(vc), H = cfg->hidden, Nd = vc->n_deepstack;
    const int64_t m2 = (int64_t)vc->merge * vc->merge;
    out->batch_patches = np;
    out->batch_bytes = 4 * (2 * np * D + Nd * (np / m2) * H);
    out->feature_bytes = image_tokens * H * (1 + Nd) * 4;
    out->slot_bytes = image_tokens * 8;
    out->total_bytes = out->tower.weight_bytes + out->tower.act_bytes + out->batch_bytes +
                       out->feature_bytes + out->slot_bytes;
    return REAP_OK;
}

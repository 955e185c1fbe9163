/* engine.c - the layer loop: embed once, then load and run each decoder layer on the
 * backend, collecting the statistics of every MoE layer (see engine.h). With images the
 * vision features go into the hidden states through the backend's scatter_rows: the
 * merged features over the image slots' embeddings, deepstack set L added after layer L. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config_check.h"
#include "reap_err.h"
#include "weights.h"

/* Layers prefetched ahead (reap_backend_opts.prefetch_layers): 0 means 1; < 0: none. */
static int prefetch_depth(const reap_backend_i *be, const reap_backend_opts *o)
{
    int p = o->prefetch_layers;
    if (!be->prefetch_layer || p < 0)
        return 0;
    return p == 0 ? 1 : p;
}

/* Queue layers next..last for upload (views are looked up, handed over, released). */
static int prefetch_until(const reap_backend_i *be, void *ctx, const reap_ckpt *ck,
                          const reap_config *cfg, int *next, int last)
{
    for (; *next <= last && *next < cfg->n_layers; (*next)++) {
        reap_layer_weights nw;
        int rc = reap_layer_weights_get(ck, cfg, *next, &nw);
        if (rc)
            return rc;
        rc = be->prefetch_layer(ctx, &nw);
        reap_layer_weights_free(&nw);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

/* The slot of every image feature row (engine.h, reap_image_features): slots[r] for
 * feature row r, images in index order. Checks the features against the rows. */
static int image_slots(const reap_rows *rows, const reap_image_features *im, int n_layers,
                       int64_t **out)
{
    int64_t *first = NULL, *slots = NULL, n = 0;
    int rc = REAP_OK;
    *out = NULL;
    if (im->n_deepstack < 0 || im->n_deepstack > n_layers || !im->merged ||
        (im->n_deepstack > 0 && !im->deepstack))
        return reap_err_set(REAP_E_INVALID, "engine: image features: %d deepstack sets for "
                            "%d layers%s", im->n_deepstack, n_layers,
                            im->merged ? "" : ", no merged features");
    for (int k = 0; k < im->n_deepstack; k++)
        if (!im->deepstack[k])
            return reap_err_set(REAP_E_INVALID, "engine: deepstack feature set %d is NULL", k);
    first = malloc((size_t)(rows->n_images > 0 ? rows->n_images : 1) * sizeof *first);
    if (!first)
        return reap_err_set(REAP_E_NOMEM, "engine: image table");
    for (int32_t i = 0; i < rows->n_images; i++) {
        first[i] = n;
        n += rows->images[i].n_tokens;
    }
    if (n != im->n_image_tokens || rows->n_spans != rows->n_images) {
        rc = reap_err_set(REAP_E_INVALID, "engine: %lld image feature rows for %d images of "
                          "%lld tokens in %lld spans (one span per image)",
                          (long long)im->n_image_tokens, rows->n_images, (long long)n,
                          (long long)rows->n_spans);
        goto done;
    }
    slots = malloc((size_t)(n > 0 ? n : 1) * sizeof *slots);
    if (!slots) {
        rc = reap_err_set(REAP_E_NOMEM, "engine: image slots");
        goto done;
    }
    for (int64_t r = 0; r < n; r++)
        slots[r] = -1;
    for (int64_t k = 0; k < rows->n_spans; k++) {
        const reap_image_span *sp = &rows->spans[k];
        if (reap_rows_span_check(rows, k)) {
            rc = reap_err_prefix(REAP_E_INVALID, "engine");
            goto done;
        }
        if (slots[first[sp->image]] != -1) {
            rc = reap_err_set(REAP_E_INVALID, "engine: image span %lld (row %d, start %d) "
                              "repeats image %d", (long long)k, sp->row, sp->start, sp->image);
            goto done;
        }
        for (int64_t j = 0; j < rows->images[sp->image].n_tokens; j++)
            slots[first[sp->image] + j] = (int64_t)sp->row * rows->seq_len + sp->start + j;
    }
    *out = slots;
    slots = NULL;
done:
    free(first);
    free(slots);
    return rc;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int reap_engine_score(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_engine_opts *opts, reap_layer_stats **out_stats,
                      int *out_n)
{
    const reap_backend_i *be = opts && opts->backend ? opts->backend : &reap_backend_cpu;
    reap_backend_opts bopts = {0};
    void *ctx = NULL;
    reap_layer_stats *stats = NULL;
    int n_moe = reap_config_n_moe_layers(cfg), n_done = 0;
    int start = opts ? opts->start_layer : 0;
    int rc;
    const st_tensor *embed;
    float *hidden = NULL;
    int64_t *img_slots = NULL;  /* [n_image_tokens] slot of each image feature row */
    const reap_image_features *img = opts ? opts->image : NULL;
    const int64_t T = (int64_t)rows->n_rows * rows->seq_len;

    *out_stats = NULL;
    *out_n = 0;
    if (opts)
        bopts = opts->backend_opts;
    /* Every layer's tensors against the config before any table or buffer is sized. */
    if ((rc = reap_config_check_ckpt(cfg, ck)))
        return rc;
    stats = calloc((size_t)(n_moe > 0 ? n_moe : 1), sizeof *stats);
    if (!stats)
        return reap_err_set(REAP_E_NOMEM, "engine: statistics table");
    if (start < 0 || start >= cfg->n_layers || (start > 0 && !opts->start_hidden)) {
        rc = reap_err_set(REAP_E_INVALID, "engine: cannot start at layer %d of %d%s", start,
                          cfg->n_layers, start > 0 ? " without hidden states" : "");
        goto fail;
    }
    if (opts && opts->checkpoint_every > 0 && opts->on_checkpoint) {
        hidden = malloc((size_t)T * cfg->hidden * sizeof *hidden);
        if (!hidden) {
            rc = reap_err_set(REAP_E_NOMEM, "engine: checkpoint buffer of %lld x %d",
                              (long long)T, cfg->hidden);
            goto fail;
        }
    }
    if (rows->n_spans > 0 && !img) {
        rc = reap_err_set(REAP_E_INVALID, "engine: %lld image spans but no image features",
                          (long long)rows->n_spans);
        goto fail;
    }
    if (img) {
        if ((rc = image_slots(rows, img, cfg->n_layers, &img_slots)))
            goto fail;
        bopts.spatial_merge = img->spatial_merge;
    }
    if ((rc = be->init(cfg, rows, &bopts, &ctx)))
        goto fail;
    if (start > 0) {
        if ((rc = be->set_hidden(ctx, opts->start_hidden)))
            goto fail;
    } else {
        if ((rc = reap_embed_weights_get(ck, cfg, &embed)) || (rc = be->embed(ctx, embed)))
            goto fail;
        if (img && img->n_image_tokens > 0 &&
            (rc = be->scatter_rows(ctx, img_slots, img->n_image_tokens, img->merged, 0)))
            goto fail;
    }
    const int depth = prefetch_depth(be, &bopts);
    int next_prefetch = start + 1;
    for (int layer = start; layer < cfg->n_layers; layer++) {
        double t0 = now_seconds();
        reap_layer_weights w;
        reap_layer_stats *st = NULL;
        if ((rc = reap_layer_weights_get(ck, cfg, layer, &w)))
            goto fail;
        if (w.is_moe) {
            st = &stats[n_done];
            if ((rc = reap_layer_stats_init(st, layer, cfg->n_experts, cfg->n_experts_used))) {
                reap_layer_weights_free(&w);
                goto fail;
            }
            n_done++;
        }
        rc = be->load_layer(ctx, &w);
        if (!rc && depth > 0)
            rc = prefetch_until(be, ctx, ck, cfg, &next_prefetch, layer + depth);
        if (!rc)
            rc = be->forward_layer(ctx, st);
        reap_layer_weights_free(&w);
        if (!rc && img && layer < img->n_deepstack && img->n_image_tokens > 0)
            rc = be->scatter_rows(ctx, img_slots, img->n_image_tokens, img->deepstack[layer],
                                  1);
        if (rc)
            goto fail;
        const int stop = opts && opts->on_layer &&
                         opts->on_layer(opts->ud, layer, st, now_seconds() - t0);
        /* A checkpoint that is due is written even when the run stops here, so that a
         * restart resumes at the next layer. */
        if (hidden && (layer + 1) % opts->checkpoint_every == 0 && layer < cfg->n_layers - 1) {
            if ((rc = be->get_hidden(ctx, hidden)) ||
                (rc = opts->on_checkpoint(opts->ud, layer, hidden, T, cfg->hidden)))
                goto fail;
        }
        if (stop) {
            rc = reap_err_set(REAP_E_CANCELLED, "stopped after layer %d", layer);
            goto fail;
        }
    }
    free(hidden);
    free(img_slots);
    be->free(ctx);
    *out_stats = stats;
    *out_n = n_done;
    return REAP_OK;
fail:
    free(hidden);
    free(img_slots);
    if (ctx)
        be->free(ctx);
    for (int i = 0; i < n_done; i++)
        reap_layer_stats_free(&stats[i]);
    free(stats);
    return rc;
}

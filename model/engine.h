/* engine.h - layer-wise scoring: runs a checkpoint over calibration rows on a backend and
 * returns the REAP statistics of every MoE layer.
 *
 * Memory: the backend's hidden states plus one layer's weights.
 * Thread rules: one call runs on the calling thread (plus the backend's workers).
 */
#ifndef REAP_ENGINE_H
#define REAP_ENGINE_H

#include "backend.h"
#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "stats.h"

/* Called after each layer (dense layers too, stats NULL). Return non-zero to stop the
 * run after this layer (the engine writes the layer's checkpoint if one is due, then
 * returns REAP_E_CANCELLED). */
typedef int (*reap_layer_cb)(void *ud, int layer, const reap_layer_stats *stats,
                             double seconds);

/* Called with the hidden states [T, H] fp32 leaving layer `layer` (T = n_rows * seq_len,
 * row-major, valid only during the call). Return non-zero to fail the run with that
 * status (the message is the callback's). */
typedef int (*reap_hidden_cb)(void *ud, int layer, const float *hidden, int64_t T, int H);

/* The vision tower's output for the rows' images (Qwen3-VL), given to the engine as
 * arrays. n_image_tokens = the sum of rows->images[i].n_tokens; feature row r belongs to
 * image i and its token j where r = (n_tokens of images 0..i-1) + j (images in index
 * order), and goes to slot rows->spans[k].start + j of row rows->spans[k].row for the
 * span k of image i (every image has exactly one span).
 *   merged:    [n_image_tokens, H] REPLACES the token embeddings at those slots;
 *   deepstack: n_deepstack sets of [n_image_tokens, H]; set k is ADDED to the hidden
 *              states at those slots after decoder layer k's output (k < n_deepstack),
 *              before on_layer and any checkpoint of layer k.
 * The arrays are read during reap_engine_score only. */
typedef struct reap_image_features {
    int spatial_merge;              /* the tower's spatial_merge_size (mRoPE ids) */
    int64_t n_image_tokens;         /* rows of each array */
    const float *merged;            /* [n_image_tokens, H] */
    int n_deepstack;
    const float *const *deepstack;  /* [n_deepstack] arrays of [n_image_tokens, H] */
} reap_image_features;

typedef struct reap_engine_opts {
    const reap_backend_i *backend;  /* NULL: CPU */
    reap_backend_opts backend_opts;
    reap_layer_cb on_layer;         /* optional; called after every layer */
    void *ud;
    /* Resume: run layers start_layer..n_layers-1 from start_hidden ([T, H], the hidden
     * states entering start_layer) instead of embedding. 0 / NULL: from the start. */
    int start_layer;
    const float *start_hidden;
    /* Checkpoints: when checkpoint_every > 0, after on_layer of each layer L with
     * (L + 1) % checkpoint_every == 0 and L < n_layers - 1, on_checkpoint receives the
     * hidden states leaving L (also when on_layer asked to stop after L). */
    int checkpoint_every;
    reap_hidden_cb on_checkpoint;
    /* Images: required when rows->n_spans > 0 (REAP_E_INVALID without), ignored (NULL
     * allowed) otherwise. Resuming at start_layer > 0 skips the replacement (start_hidden
     * already has it) and adds the deepstack sets of layers >= start_layer only. */
    const reap_image_features *image;
} reap_engine_opts;

/* Score the MoE layers from opts->start_layer on. On success *out_stats is an array of
 * *out_n statistics in layer order (free each with reap_layer_stats_free, then the array
 * with free()).
 * Returns REAP_OK or the first error (message names the layer and tensor); REAP_E_INVALID
 * also for image spans without opts->image, image features that do not match the rows
 * (n_image_tokens, an image without exactly one span, n_deepstack < 0 or > n_layers,
 * NULL arrays), or spans reap_positions_fill_mrope refuses. */
int reap_engine_score(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_engine_opts *opts, reap_layer_stats **out_stats,
                      int *out_n);

#endif

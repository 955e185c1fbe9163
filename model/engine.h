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
} reap_engine_opts;

/* Score the MoE layers from opts->start_layer on. On success *out_stats is an array of
 * *out_n statistics in layer order (free each with reap_layer_stats_free, then the array
 * with free()).
 * Returns REAP_OK or the first error (message names the layer and tensor). */
int reap_engine_score(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_engine_opts *opts, reap_layer_stats **out_stats,
                      int *out_n);

#endif

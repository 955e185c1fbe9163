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
 * run after this layer (the engine returns REAP_E_CANCELLED). */
typedef int (*reap_layer_cb)(void *ud, int layer, const reap_layer_stats *stats,
                             double seconds);

typedef struct reap_engine_opts {
    const reap_backend_i *backend;  /* NULL: CPU */
    reap_backend_opts backend_opts;
    reap_layer_cb on_layer;         /* optional */
    void *ud;
} reap_engine_opts;

/* Score all MoE layers. On success *out_stats is an array of *out_n statistics in layer
 * order (free each with reap_layer_stats_free, then the array with free()).
 * Returns REAP_OK or the first error (message names the layer and tensor). */
int reap_engine_score(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_engine_opts *opts, reap_layer_stats **out_stats,
                      int *out_n);

#endif

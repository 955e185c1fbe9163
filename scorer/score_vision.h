/* score_vision.h - the image side of a scoring job (Qwen3-VL image calibration):
 *   - the calibration loader's image probe (calib.h reap_image_probe_fn) over model/image.h:
 *     the header's size, then smart_resize with the model's preprocessor_config.json
 *     limits (or the caller's --min-pixels / --max-pixels), done by score_image.h;
 *   - the vision tower's features for the images of the packed rows: every image file is
 *     read again (confined like the calibration file), its BLAKE2b-256 digest checked
 *     against the one taken when the calibration was read, decoded, preprocessed to
 *     patches and run through reap_vision_forward, in batches of at most
 *     REAP_SCORE_VISION_BATCH_PATCHES patches (an image above that alone). Only one
 *     batch's patches and activations are held at a time; the merged features and the
 *     deepstack sets of all images are kept for the engine (n_tokens * H * (1 + Nd)
 *     floats).
 *
 * Thread rules: no shared state; the probe's state is used from the loading thread only.
 */
#ifndef REAP_SCORE_VISION_H
#define REAP_SCORE_VISION_H

#include <stdint.h>

#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "engine.h"
#include "fsopen.h"
#include "score_image.h"
#include "vision.h"

/* Patches per reap_vision_forward call by default (an image with more runs alone). */
#define REAP_SCORE_VISION_BATCH_PATCHES 16384

/* calib.h's reap_image_probe_fn over score_image.h; ud is a reap_score_probe. */
int reap_score_probe_image(void *ud, const char *path, const uint8_t *data, size_t n,
                           reap_calib_grid *out);

/* One batch of images through the tower (progress, and the test dump of run_cmd.c). */
typedef struct reap_score_vision_batch {
    int first, n;                /* images first .. first+n-1 of rows->images */
    int total;                   /* rows->n_images */
    const int32_t *grids;        /* [n, 3] (t, gh, gw) */
    const float *patches;        /* [n_patches, patch_dim], valid during the call */
    int64_t n_patches, patch_dim;
    double seconds;              /* wall time of this batch (read, decode, tower) */
} reap_score_vision_batch;

/* Return non-zero to stop (the run ends with REAP_E_CANCELLED). */
typedef int (*reap_score_vision_cb)(void *ud, const reap_score_vision_batch *b);

/* The features of all images, ready for reap_engine_opts.image (f points into the
 * struct itself: do not copy or move it while f is in use). */
typedef struct reap_score_features {
    reap_image_features f;       /* points into the arrays below */
    float *merged;               /* [Nt, H] owned */
    float *deep;                 /* [Nd, Nt, H] owned */
    const float *deep_sets[REAP_VISION_MAX_DEEPSTACK];
} reap_score_features;

/* Run the tower over rows->images. `image_roots`: the roots the calibration file was
 * confined to (NULL: unconfined). threads >= 1. batch_patches: patches per tower call
 * (<= 0: REAP_SCORE_VISION_BATCH_PATCHES; the results do not depend on it). on_batch may
 * be NULL.
 * Returns REAP_OK; REAP_E_INVALID (an image whose bytes no longer have the digest taken
 * when the calibration was read, or whose grid differs: named with its path, line and
 * item); the errors of reap_image_read_file / reap_image_decode_mem /
 * reap_image_preprocess / reap_vision_load / reap_vision_forward; REAP_E_CANCELLED
 * (on_batch asked to stop); REAP_E_NOMEM. On failure *out is empty. */
int reap_score_vision_run(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                          reap_score_probe *probe, const reap_roots *image_roots,
                          int threads, int64_t batch_patches,
                          reap_score_vision_cb on_batch, void *ud,
                          reap_score_features *out);

/* Host bytes of the image side of a scoring job (what `reap-scorer plan` prints), for
 * image_tokens image tokens (>= 0) and tower calls of batch_patches patches (<= 0:
 * REAP_SCORE_VISION_BATCH_PATCHES), each image at most one call's patches:
 *   tower          reap_vision_mem_plan(vc, Np, Np, threads): the fp32 weights and the
 *                  activations of one call whose largest frame is the whole call (an
 *                  upper bound), Np = batch_patches
 *   batch_bytes    the call's buffers here: 4 x (Np x D patches + Np x D for the image
 *                  being read + Nd x Np / m^2 x H deepstack outputs)
 *   feature_bytes  the kept features: image_tokens x H x (1 + Nd) x 4
 *   slot_bytes     the engine's slot index of each image token: image_tokens x 8
 *   total_bytes    the sum (the per-image grids, 12 bytes each, are left out)
 * Returns REAP_OK or REAP_E_INVALID (no tower in cfg, threads < 1, image_tokens < 0).
 * Pure. */
typedef struct reap_score_vision_mem {
    int64_t batch_patches;
    reap_vision_mem tower;
    int64_t batch_bytes, feature_bytes, slot_bytes, total_bytes;
} reap_score_vision_mem;

int reap_score_vision_mem_plan(const reap_config *cfg, int64_t batch_patches, int threads,
                               int64_t image_tokens, reap_score_vision_mem *out);

void reap_score_features_free(reap_score_features *f);

#endif

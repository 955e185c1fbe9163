/* score_image.h - the image files of a scoring job over model/image.h: the probe's grid
 * (header size, then smart_resize with the model's preprocessor_config.json limits or
 * the caller's overrides) and the patches of an image read again for the vision tower.
 * score_vision.h adapts it to the calibration loader (calib.h's image probe) and runs the
 * vision tower; this file knows images, that one the job.
 * Thread rules: a probe is used from one thread at a time. */
#ifndef REAP_SCORE_IMAGE_H
#define REAP_SCORE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "fsopen.h"

typedef struct reap_score_probe reap_score_probe;

/* A probe for the model in model_dir (its preprocessor_config.json is read at the first
 * image, confined to `roots` when not NULL: a text-only run needs no such file).
 * min_pixels / max_pixels > 0 override the file's values. `vc` must outlive the probe.
 * Returns REAP_OK or REAP_E_NOMEM. */
int reap_score_probe_new(const char *model_dir, const reap_roots *roots,
                         const reap_vision_config *vc, int64_t min_pixels, int64_t max_pixels,
                         reap_score_probe **out);
void reap_score_probe_free(reap_score_probe *p);

/* The patch grid (t, gh, gw) of the image whose file `path` holds the n bytes at data.
 * Returns REAP_OK; the errors of reap_vision_prep_load (the file named), REAP_E_INVALID
 * when preprocessor_config.json's patch_size, merge_size or temporal_patch_size differ
 * from the tower's, or min_pixels > max_pixels after the overrides; the errors of
 * reap_image_probe_mem and reap_image_grid (the image named). */
int reap_score_probe_grid(reap_score_probe *p, const char *path, const uint8_t *data,
                          size_t n, int grid[3]);

/* Read image `path` again (confined to `roots` when not NULL), check that its BLAKE2b-256
 * digest is `digest` (the one taken when the calibration file was read), decode and
 * preprocess it into *patches (malloc'd [t*gh*gw, D]) and check its grid is `grid`.
 * line / item name the calibration item in messages. Returns REAP_OK; REAP_E_INVALID (a
 * changed file, another grid); the errors of reap_image_read_file, reap_image_decode_mem,
 * reap_image_preprocess. On failure *patches is NULL. */
int reap_score_image_patches(reap_score_probe *p, const char *path, const reap_roots *roots,
                             const uint8_t digest[32], int64_t line, int item,
                             const int grid[3], float **patches);

#endif

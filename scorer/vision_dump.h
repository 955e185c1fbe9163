/* vision_dump.h - `reap-scorer run --dump-vision DIR`, for tests: what the vision step of
 * a run computed, in the files tests/oracle/vision_oracle.py and reap_oracle.py read:
 *   patches.f32  [Np, D] the preprocessed patches of every image, in image order
 *   out.f32      [Nt, H] merged features;  deep.f32  [Nd, Nt, H] deepstack sets
 *                (float32, this machine's byte order: little-endian on the supported
 *                platforms)
 *   meta.json    {"grids": [[t, gh, gw], ...], "n_patches", "n_tokens", "n_deepstack",
 *                 "merge", "spans": [{"row", "start", "image"}, ...]}
 *   rows.json    {"seq_len": S, "tokens": [[...], ...], "mask": [[0|1, ...], ...]}
 * Thread rules: one dump per run, used from the job's thread. */
#ifndef REAP_VISION_DUMP_H
#define REAP_VISION_DUMP_H

#include "calib.h"
#include "engine.h"
#include "score_vision.h"

typedef struct scorer_vision_dump scorer_vision_dump;

/* Create DIR (an existing one is reused) and open patches.f32. Returns REAP_OK,
 * REAP_E_IO (named), REAP_E_NOMEM. */
int scorer_vision_dump_open(const char *dir, scorer_vision_dump **out);
/* Append a batch's patches and grids. Returns REAP_OK or REAP_E_IO. */
int scorer_vision_dump_batch(scorer_vision_dump *d, const reap_score_vision_batch *b);
/* Write out.f32, deep.f32, meta.json and rows.json. Returns REAP_OK, REAP_E_IO,
 * REAP_E_NOMEM. */
int scorer_vision_dump_features(scorer_vision_dump *d, const reap_rows *rows,
                                const reap_image_features *f, int hidden);
/* Close and free (NULL is fine). */
void scorer_vision_dump_close(scorer_vision_dump *d);

#endif

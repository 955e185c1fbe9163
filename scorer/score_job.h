/* score_job.h - one scoring run of (checkpoint, calibration file), with or without the
 * score store: the piece `reap-scorer run` and the scorer service share.
 *
 * Steps: load config.json and open the checkpoint (every shard header validated);
 * model_id (files hashed in parallel, digests cached in the store); read and pack the
 * calibration rows (the tokenizer is loaded only when the file has text or messages
 * items, and then its digest is part of calib_id); calib_id; then
 *   - without a store: score every layer, return the statistics;
 *   - with a store: record the model and calibration set; if every MoE layer of the pair
 *     has its statistics already, do nothing (unless force); otherwise resume from the
 *     newest hidden-state checkpoint at or below the first missing layer (or layer 0),
 *     commit each layer in one write transaction (statistics + run record), write a
 *     hidden-state checkpoint every checkpoint_every layers (one that cannot be written,
 *     e.g. for lack of disk space, is reported on stderr and skipped: the run goes on),
 *     and on success mark the run
 *     done and remove the pair's checkpoints.
 * Image items (a model with a vision tower, score_vision.h): the loader probes each image
 * with the model's preprocessor_config.json limits (or min_pixels / max_pixels); before
 * the first layer every image of the rows is read again (confined by calib_roots), its
 * digest checked, preprocessed and run through the vision tower (EV_VISION per batch,
 * after the store's completeness check and before the run record is written);
 * the merged features and deepstack sets go to the engine. A resumed run recomputes
 * them (they are not checkpointed). Layers recomputed after a resume (or with
 *     force) are compared with their stored records, which are never replaced; a
 *     difference is reported (result.n_differ and an event), not fatal.
 *
 * Events go to on_event on the calling thread; returning non-zero from it asks the run
 * to stop (see reap_score_event_cb), and the run ends with REAP_E_CANCELLED (run state
 * "cancelled"; it resumes when scored again).
 *
 * Thread rules: runs on the calling thread (plus the backend's and the hasher's
 * workers). A second job of a (model, calibration) pair that is being scored on the same
 * store fails at once (REAP_E_CONFLICT, reap_store_pair_lock).
 */
#ifndef REAP_SCORE_JOB_H
#define REAP_SCORE_JOB_H

#include <stdint.h>

#include "backend.h"
#include "identity.h"
#include "score_vision.h"
#include "stats.h"
#include "stats_store.h"
#include "store.h"

typedef enum reap_score_event_kind {
    REAP_SCORE_EV_IDS = 1,      /* model_id, calib_id known; rows built */
    REAP_SCORE_EV_COMPLETE,     /* the pair was complete already: nothing to do */
    REAP_SCORE_EV_START,        /* scoring starts at start_layer (run_id set with a store) */
    REAP_SCORE_EV_LAYER,        /* a layer is done (committed with a store) */
    REAP_SCORE_EV_DIFFER,       /* a recomputed layer differs from its stored record */
    REAP_SCORE_EV_WAITING,      /* the calibration data is a FIFO or pipe that has no data
                                   yet (sent about every 100 ms while it waits): return
                                   non-zero to give up */
    REAP_SCORE_EV_VISION,       /* a batch of images went through the vision tower
                                   (vision: which, their patches; images_done / n_images) */
    REAP_SCORE_EV_FEATURES      /* every image is done, before the first layer: rows and
                                   image (the engine's input) are set */
} reap_score_event_kind;

typedef struct reap_score_event {
    int kind;
    const reap_id *model_id, *calib_id;
    const uint8_t *run_id;          /* with a store, from EV_START on; else NULL */
    int n_layers;                   /* decoder layers */
    int layer;                      /* EV_LAYER, EV_DIFFER */
    int is_moe;                     /* EV_LAYER */
    double seconds;                 /* EV_LAYER: the layer's wall time */
    int start_layer;                /* EV_START: > 0 when resumed from a checkpoint */
    int64_t n_samples, n_rows, seq_len, n_tokens;   /* EV_IDS */
    const reap_config *cfg;         /* EV_IDS on */
    const reap_hash_stats *hash;    /* EV_IDS */
    int images_done;                /* EV_VISION */
    int n_images;                   /* EV_IDS, EV_VISION: images in the rows */
    int64_t n_image_tokens;         /* EV_IDS: their image-token slots */
    const reap_score_vision_batch *vision;  /* EV_VISION, valid during the call */
    const reap_rows *rows;          /* EV_FEATURES, valid during the call */
    const reap_image_features *image;       /* EV_FEATURES, valid during the call */
} reap_score_event;

/* Return non-zero to stop the run: from EV_WAITING, EV_IDS, EV_VISION or EV_FEATURES,
 * before scoring begins
 * (nothing is committed, no run record is written); from a later event, at the next layer boundary
 * (the layer in progress is committed). The job then returns REAP_E_CANCELLED. */
typedef int (*reap_score_event_cb)(void *ud, const reap_score_event *ev);

typedef struct reap_score_job_opts {
    const char *model_dir;
    const char *calib_path;         /* calibration file (model/calib.h: input_ids, text or
                                       messages items; JSON Lines or a JSON array) */
    const char *tokenizer_path;     /* tokenizer.json or its directory, for text and
                                       messages items (NULL: input_ids items only) */
    const reap_roots *model_roots;  /* a service's roots: every file of the checkpoint and
                                       the tokenizer must lie under one of them once its
                                       links are resolved, else REAP_E_DENIED naming the
                                       file (fsopen.h); NULL: unconfined */
    const reap_roots *calib_roots;  /* the same for the calibration file; NULL:
                                       unconfined, and the calibration file may be a FIFO
                                       or pipe (read while on_event lets it wait) */
    int shuffle;                    /* 1: shuffle the items with `seed` before selecting */
    uint64_t seed;
    int seq_len;
    int pack;                       /* 1: pack samples into rows */
    int64_t max_samples;            /* 0: all */
    int64_t min_pixels, max_pixels; /* image items: > 0 overrides the model's
                                       preprocessor_config.json (smart_resize limits) */
    int64_t vision_batch_patches;   /* patches per vision tower call (0: the default of
                                       score_vision.h); bounds the tower's activations */
    const reap_backend_i *backend;  /* NULL: CPU */
    reap_backend_opts backend_opts;
    reap_store *store;              /* NULL: no store */
    int force;                      /* score a complete pair again (verify its records) */
    int checkpoint_every;           /* hidden-state checkpoint every N layers (0: none) */
    int hash_threads;               /* 0: all cores */
    const uint8_t *run_id;          /* [16] the run record's id (reap_run_id_new), made
                                       in advance by the caller; NULL: a new one */
    const char *request;            /* recorded with the run (store/runs.h), may be NULL */
    reap_score_event_cb on_event;   /* optional */
    void *ud;
} reap_score_job_opts;

typedef struct reap_score_result {
    reap_id model_id, calib_id;
    int has_run;                    /* a run record was written (store, not complete) */
    uint8_t run_id[16];
    int already_complete;           /* the pair was complete: nothing scored */
    int start_layer;                /* where scoring started (0 or resumed) */
    int n_differ;                   /* recomputed layers that differ from the store */
    int64_t n_tokens;               /* valid calibration tokens */
    reap_hash_stats hash;
    /* This calibration set's statistics for every MoE layer, in layer order (from the
     * store when there is one). Owned: reap_score_result_free. */
    reap_layer_stats *stats;
    int n_stats;
} reap_score_result;

/* Run the job. *res is initialised here; free it with reap_score_result_free whatever
 * the return. Returns REAP_OK or the first error (message names the file, tensor, layer
 * or store record); REAP_E_CANCELLED when on_event asked to stop. */
int reap_score_job_run(const reap_score_job_opts *o, reap_score_result *res);

void reap_score_result_free(reap_score_result *res);

#endif

/* stats_store.h - the `stats` database: one immutable record of REAP statistics per
 * (model_id, calib_id, MoE layer), and the merged view over calibration sets.
 *
 * Records are written by runs (runs.h: one write transaction per layer) and by import
 * (export.h). A record is never overwritten: writing a record that exists compares the
 * two and keeps the stored one.
 *
 * A calibration set is complete for a model when every MoE layer of the model record
 * (catalog.h) has its statistics. Merging adds counts and sums and takes maxima over
 * the calibration ids in ascending byte order of the ids (the merge order is fixed, so
 * a merged view is reproducible bit for bit); the first set's record is the starting
 * value (merging one set returns its record unchanged).
 *
 * Thread rules: as store.h. Statistics returned here are owned by the caller:
 * reap_layer_stats_free each, then free() the array.
 */
#ifndef REAP_STORE_STATS_H
#define REAP_STORE_STATS_H

#include <stdint.h>

#include "stats.h"
#include "store.h"

/* The rotary-position rule this build's engine uses, written into every new statistics
 * record (LayerStatsRecord.positions_rule, proto/reap_store.proto): 1 = the per-family
 * rule of model/positions.h. Records of older builds read as 0. */
#define REAP_STORE_POSITIONS_RULE 1u

/* Outcome of writing a record that may exist already. */
typedef enum reap_stats_outcome {
    REAP_STATS_WRITTEN = 0,   /* new record */
    REAP_STATS_SAME = 1,      /* present, identical statistics: nothing written */
    REAP_STATS_DIFFERENT = 2  /* present, different statistics: the stored one is kept */
} reap_stats_outcome;

/* Write one layer's record in its own transaction (tests, tools; scoring runs use
 * reap_store_run_commit_layer). backend may be NULL. *outcome may be NULL.
 * REAP_OK, REAP_E_INVALID (read-only store, bad statistics), REAP_E_IO, REAP_E_NOMEM. */
int reap_store_stats_put(reap_store *s, const reap_id *model, const reap_id *calib,
                         const reap_layer_stats *st, const char *backend,
                         reap_stats_outcome *outcome);

/* reap_store_stats_put with an explicit positions_rule instead of
 * REAP_STORE_POSITIONS_RULE: for tests that need a record as an older build wrote it
 * (positions_rule 0). Scoring never calls it. Same returns. */
int reap_store_stats_put_rule(reap_store *s, const reap_id *model, const reap_id *calib,
                              const reap_layer_stats *st, const char *backend,
                              uint32_t positions_rule, reap_stats_outcome *outcome);

/* Read one record; its digest is verified. *out is initialised here.
 * REAP_OK, REAP_E_NOTFOUND (no message set: a normal answer), REAP_E_FORMAT (damaged:
 * digest, lengths or key mismatch), REAP_E_UNSUPPORTED (newer format), REAP_E_INVALID
 * (layer < 0), REAP_E_NOMEM. */
int reap_store_stats_get(reap_store *s, reap_store_snap *snap, const reap_id *model,
                         const reap_id *calib, int layer, reap_layer_stats *out);

/* Layers of (model, calib) that have a record, ascending. *layers is malloc'd (free());
 * *n may be 0 (*layers NULL). REAP_OK, REAP_E_FORMAT (a key of the wrong size),
 * REAP_E_IO, REAP_E_NOMEM. */
int reap_store_stats_layers(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const reap_id *calib, int **layers, int *n);

/* Is (model, calib) complete? *complete = 1 when every MoE layer of the model record
 * has a record. REAP_E_NOTFOUND when the model has no record. */
int reap_store_stats_complete(reap_store *s, reap_store_snap *snap, const reap_id *model,
                              const reap_id *calib, int *complete);

/* Are the statistics of (model, calib) stale? *stale = 1 when the model record's
 * model_type is qwen3_vl_moe, the calibration record says packed (or is missing:
 * packing unknown), and at least one layer record of the pair has positions_rule 0
 * (scored before per-family rotary positions: docs/store.md). Such statistics are wrong
 * and cannot be repaired in place; reap_store_stats_merged refuses them and a scoring
 * run refuses to resume or skip them. A pair without records is not stale.
 * REAP_OK; REAP_E_NOTFOUND (the model has no record); REAP_E_FORMAT /
 * REAP_E_UNSUPPORTED (a damaged / newer record); REAP_E_NOMEM. */
int reap_store_pair_stale(reap_store *s, reap_store_snap *snap, const reap_id *model,
                          const reap_id *calib, int *stale);

/* Calibration ids with at least one record for `model`, ascending. complete_only: only
 * the complete ones. *calibs is malloc'd (free()); *n may be 0. REAP_OK,
 * REAP_E_NOTFOUND (the model has no record), REAP_E_FORMAT / REAP_E_UNSUPPORTED (a
 * damaged / newer record), REAP_E_IO, REAP_E_NOMEM. */
int reap_store_stats_calibs(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            int complete_only, reap_id **calibs, int *n);

/* The merged statistics of `model` over calibration ids calibs[0..n_calibs) (any order,
 * no duplicates; merged in ascending id order), or over every complete calibration set
 * when n_calibs == 0. One entry per MoE layer, in layer order. *used (may be NULL)
 * receives the ids merged, ascending (malloc'd; free()), *n_used their number.
 * Returns REAP_OK; REAP_E_NOTFOUND (unknown model, no statistics at all, a chosen id
 * without any record); REAP_E_PRECONDITION (statistics that exist but do not cover every
 * MoE layer: a chosen id whose set is incomplete, or no id given and every set of the
 * model incomplete; the message names the calibration id and its missing layers, e.g.
 * a run cancelled after 2 of 6 layers; or a chosen or complete set whose statistics are
 * stale, reap_store_pair_stale: the message names the model and calibration ids); REAP_E_INVALID (duplicate id); REAP_E_FORMAT / REAP_E_UNSUPPORTED (a damaged / newer record);
 * REAP_E_NOMEM. Reads everything from one snapshot (snap, or its own). */
int reap_store_stats_merged(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const reap_id *calibs, int n_calibs, reap_layer_stats **out,
                            int *n_out, reap_id **used, int *n_used);

/* Statistics equality, bit for bit (layer, E, K, tokens and every array, the modality
 * sets included where either side has image tokens; max_act compared as bits). 1 when
 * identical, else 0. */
int reap_stats_identical(const reap_layer_stats *a, const reap_layer_stats *b);

#endif

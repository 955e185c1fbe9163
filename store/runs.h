/* runs.h - the `runs` database: one record per scoring run (an attempt to score one
 * (model, calibration) pair), updated in the same write transaction as each layer's
 * statistics, so a snapshot never sees a layer counted as done without its record.
 *
 * run_id: 16 random bytes (reap_run_id_new), so that the first 8 hex digits a person
 * types name one run even among runs started in the same second. The caller may make
 * the id in advance (the scorer service makes it when a run is submitted, so that a
 * queued run can be watched and cancelled). Runs list in the order they started
 * (started_unix_ns). States: running -> done | failed | cancelled. A run left
 * "running" by a process that died stays so; a later run of the same pair resumes the
 * work (the scorer's job, see scorer/score_job.h) with a new run_id.
 *
 * reap_run_info and the states are defined in record_info.h.
 *
 * Thread rules: as store.h. A reap_run_info is the caller's copy of the record: the
 * functions below update it and write it; one thread uses one run at a time.
 */
#ifndef REAP_STORE_RUNS_H
#define REAP_STORE_RUNS_H

#include <stdint.h>

#include "record_info.h"
#include "stats.h"
#include "stats_store.h"
#include "store.h"

/* "running", "done", "failed", "cancelled" ("unknown" otherwise). */
const char *reap_run_state_name(int state);

/* Lower-case hex of a run id (32 characters and a NUL). */
void reap_run_id_hex(const uint8_t id[16], char out[33]);
/* Parse 32 hex digits. REAP_OK or REAP_E_INVALID. */
int reap_run_id_parse(const char *hex, uint8_t id[16]);

/* A new run id: 16 random bytes (libsodium's randombytes_buf; sodium_init must have
 * succeeded, as for the store). Thread-safe. */
void reap_run_id_new(uint8_t id[16]);

/* Create a run record in state running. run_id: the record's id (made earlier with
 * reap_run_id_new; the caller makes sure it names no other record), or NULL for a new
 * one. backend/device/request may be NULL. layers_done starts at start_layer. *out is
 * initialised here (free with reap_run_info_free). REAP_OK, REAP_E_INVALID (read-only),
 * REAP_E_IO, REAP_E_NOMEM. */
int reap_store_run_begin(reap_store *s, const uint8_t *run_id, const reap_id *model,
                         const reap_id *calib, int n_layers, int start_layer,
                         const char *backend, const char *device, const char *request,
                         reap_run_info *out);

/* Commit decoder layer `layer` of the run in one write transaction: the statistics
 * record of (run->model, run->calib, st->layer) when st is not NULL (a MoE layer), and
 * the run record with layers_done = layer + 1 and the layer's seconds appended.
 * An existing statistics record is never replaced: *outcome (may be NULL) says whether
 * the record was written, was already there and equal, or was there and differs.
 * REAP_OK, REAP_E_INVALID (layer out of order, st->layer != layer), REAP_E_IO,
 * REAP_E_NOMEM, REAP_E_FORMAT (the existing record is damaged). */
int reap_store_run_commit_layer(reap_store *s, reap_run_info *run, int layer,
                                double seconds, const reap_layer_stats *st,
                                reap_stats_outcome *outcome);

/* Set the final state (done, failed, cancelled) and error text (may be NULL) and write
 * the record (with run->interrupted as the caller set it). REAP_OK, REAP_E_INVALID,
 * REAP_E_IO, REAP_E_NOMEM. */
int reap_store_run_finish(reap_store *s, reap_run_info *run, int state, const char *error);

/* Runs of (model, calib) left "running" by a process that is gone (killed, crashed)
 * become "failed", interrupted, with error "interrupted: process <pid> on <host> is
 * gone". The caller
 * holds the pair's scoring lock (reap_store_pair_lock, hidden_ckpt.h): then no live
 * process scores the pair on this store, whatever PID namespace or host name it had (the
 * lock is a flock, shared by every container on the node), so every "running" record of
 * the pair is dead, except one of this very process (same pid and host), left alone.
 * *n_marked (may be NULL) receives their number.
 * REAP_OK, REAP_E_INVALID (read-only), REAP_E_IO, REAP_E_NOMEM, REAP_E_FORMAT. */
int reap_store_run_mark_interrupted(reap_store *s, const reap_id *model, const reap_id *calib,
                                    int *n_marked);

/* Read one run. REAP_OK, REAP_E_NOTFOUND (message names the id), REAP_E_FORMAT,
 * REAP_E_UNSUPPORTED, REAP_E_NOMEM. */
int reap_store_run_get(reap_store *s, reap_store_snap *snap, const uint8_t run_id[16],
                       reap_run_info *out);

/* Every run, oldest first (by started_unix_ns, then id). *runs is malloc'd:
 * reap_run_info_free each, then free(). *n may be 0 (*runs NULL).
 * REAP_OK, REAP_E_FORMAT (a damaged record or key), REAP_E_UNSUPPORTED (a record of a
 * newer format), REAP_E_IO, REAP_E_NOMEM. */
int reap_store_run_list(reap_store *s, reap_store_snap *snap, reap_run_info **runs,
                        int *n);

#endif

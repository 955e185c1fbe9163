/* hidden_ckpt.h - hidden-state checkpoints of scoring runs, as files beside the store, so
 * a killed run resumes at the layer after its newest checkpoint instead of layer 0.
 *
 * Files: STORE/checkpoints/<model_id hex>-<calib_id hex>/layer-LLLLL.bin, the hidden
 * states [T, H] fp32 leaving decoder layer L:
 *
 *   offset  size  field
 *   0       8     magic "REAPHID1"
 *   8       4     u32 LE format version (1)
 *   12      4     u32 LE layer
 *   16      8     u64 LE T (tokens = rows x seq_len)
 *   24      4     u32 LE H
 *   28      4     reserved (0)
 *   32      32    model_id
 *   64      32    calib_id
 *   96      T*H*4 hidden states, fp32 little-endian, row-major
 *   end     32    BLAKE2b-256 of everything before it
 *
 * Writes are atomic (valkey rdb.c): a temporary file in the same folder, fsync, rename,
 * fsync of the folder; then older checkpoints of the pair are removed (one checkpoint
 * per pair is kept). A checkpoint that is short, has another shape or pair, or fails its
 * digest is passed over by reap_hidden_ckpt_load, which reports it (path and reason) to
 * its caller (a killed writer leaves at most a temporary file, which is removed).
 *
 * Thread rules: one scoring run of a (model, calib) pair at a time writes its folder
 * (reap_store_pair_lock enforces it); runs of other pairs use other folders.
 */
#ifndef REAP_STORE_HIDDEN_CKPT_H
#define REAP_STORE_HIDDEN_CKPT_H

#include <stdint.h>

#include "store.h"

/* Write the checkpoint of `layer` (hidden [T, H]) and remove older ones of the pair.
 * Refused before writing when the folder's file system has less free space than the file
 * needs (reap_check_free_space), unless the store was opened with no_space_check.
 * REAP_OK, REAP_E_IO (disk full, permissions: the message names the file),
 * REAP_E_INVALID (bad sizes), REAP_E_NOMEM. */
int reap_hidden_ckpt_write(reap_store *s, const reap_id *model, const reap_id *calib,
                           int layer, const float *hidden, int64_t T, int H);

/* Called for each checkpoint file of the pair that load passes over as unusable: `path`
 * and `why` ("cut short", "does not match its digest (damaged)", "another shape", ...),
 * both valid during the call. */
typedef void (*reap_hidden_ckpt_reject_cb)(void *ud, const char *path, const char *why);

/* Load the newest valid checkpoint of the pair with layer <= max_layer and shape
 * [T, H], trying newer ones first. Each checkpoint passed over as unusable (short,
 * another pair, layer or shape, failing its digest, unreadable) is reported to
 * on_reject (may be NULL) with its path and what is wrong, so that the caller can say so
 * instead of silently starting further back. On success *layer is its layer and *hidden
 * a malloc'd [T, H] array (free()).
 * REAP_E_NOTFOUND (none usable; no message needed), REAP_E_NOMEM, REAP_E_IO. */
int reap_hidden_ckpt_load(reap_store *s, const reap_id *model, const reap_id *calib,
                          int max_layer, int64_t T, int H, reap_hidden_ckpt_reject_cb on_reject,
                          void *ud, int *layer, float **hidden);

/* Take the pair's scoring lock: an exclusive flock(2) on STORE/checkpoints/<pair>.lock,
 * holding the pid of the holder. One scoring run of a pair at a time, across threads and
 * processes of this host; released by reap_store_pair_unlock or when the process dies
 * (kill -9 leaves no stale lock). Never waits. *fd receives the lock (>= 0).
 * REAP_OK; REAP_E_CONFLICT when another run holds it (the message names its pid);
 * REAP_E_IO. */
int reap_store_pair_lock(reap_store *s, const reap_id *model, const reap_id *calib, int *fd);

/* Release a lock from reap_store_pair_lock (fd < 0: no-op). The lock file stays (removing
 * it would let two runs lock different files). */
void reap_store_pair_unlock(int fd);

/* Remove every checkpoint of the pair and its folder. REAP_OK or REAP_E_IO. */
int reap_hidden_ckpt_clear(reap_store *s, const reap_id *model, const reap_id *calib);

#endif

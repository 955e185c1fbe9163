/* checkpoint.h - a Hugging Face checkpoint directory: its shards, opened and validated.
 *
 * reap_ckpt_open() reads `model.safetensors.index.json` when present (weight_map ->
 * shard file names; metadata.total_size is checked against the shards) and opens every
 * shard it names; otherwise it opens the single `model.safetensors`. Every shard header
 * is validated (see safetensors.h) at open, before any tensor is used. A tensor named
 * in the index must exist in the named shard; a tensor present in two shards is an error.
 *
 * Thread rules: immutable after open; safe for concurrent readers.
 */
#ifndef REAP_CHECKPOINT_H
#define REAP_CHECKPOINT_H

#include <stddef.h>

#include "safetensors.h"

typedef struct reap_ckpt reap_ckpt;

/* Open the checkpoint in directory `dir`. Returns REAP_OK, REAP_E_NOTFOUND (no index
 * and no model.safetensors, or a shard named by the index is missing), REAP_E_FORMAT
 * (index JSON malformed, a shard invalid, index/shard disagreement), REAP_E_IO. */
int reap_ckpt_open(const char *dir, reap_ckpt **out);

/* reap_ckpt_open for a service: the index and every shard must also lie under `roots`
 * once their links are resolved (fsopen.h: a Hugging Face cache snapshot's links into
 * its blobs/ are fine when the blobs are under a root), else REAP_E_DENIED naming the
 * file; a file that is not a regular file (a FIFO, ...) is REAP_E_INVALID, without
 * waiting. `roots` (NULL: unconfined) is borrowed: it must outlive the checkpoint, whose
 * users confine their own reads of the directory with it (reap_ckpt_roots). */
int reap_ckpt_open_confined(const char *dir, const reap_roots *roots, reap_ckpt **out);

/* The roots the checkpoint was opened with (NULL: unconfined). */
const reap_roots *reap_ckpt_roots(const reap_ckpt *c);

void reap_ckpt_close(reap_ckpt *c);

const char *reap_ckpt_dir(const reap_ckpt *c);
size_t reap_ckpt_n_files(const reap_ckpt *c);
const st_file *reap_ckpt_file(const reap_ckpt *c, size_t i); /* in sorted name order */

/* Tensor by name, NULL if absent. */
const st_tensor *reap_ckpt_find(const reap_ckpt *c, const char *name);

/* Tensor by name; REAP_E_NOTFOUND with a message naming the tensor and the directory
 * when absent. */
int reap_ckpt_get(const reap_ckpt *c, const char *name, const st_tensor **out);

#endif

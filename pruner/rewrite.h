/* rewrite.h - the streaming checkpoint rewrite: shards without the pruned experts,
 * a new index, config.json with the new expert count, every non-weight file copied.
 *
 * Dimension legend: E experts, E' kept experts, H hidden, I expert width.
 *
 * Tensor by tensor (P = the family's decoder prefix, "model." or
 * "model.language_model."), for every MoE layer L of the keep set:
 *   P layers.L.mlp.experts.<e>.<rest>   per-expert tensors (any suffix: .weight, AWQ
 *                                       qweight/qzeros/scales, ...): kept experts are
 *                                       renamed to their new index 0..E'-1 (ascending
 *                                       original order), pruned ones are not written
 *   P layers.L.mlp.experts.<name>       fused tensors ([E, H, 2I], [E, I, H], biases):
 *                                       dim 0 must be E; the kept slabs are
 *                                       concatenated along axis 0
 *   P layers.L.mlp.gate.<name>          router weight [E, H] and any router bias /
 *                                       e_score_correction_bias [E]: rows sliced
 * every other tensor is copied byte for byte under its own name. Output shard k holds
 * what input shard k held minus the pruned tensors, laid out as st_writer lays out
 * files (descending dtype size, then name; contiguous offsets; 8-byte aligned header;
 * __metadata__ {"format":"pt"}). Shard names are kept unless a shard would be empty:
 * then every non-empty shard is renumbered model-%05d-of-%05d. The index (written when
 * the input has one) keeps its other metadata keys, gets the new total_size (sum of
 * tensor bytes) and a weight_map of every output tensor, sorted by name.
 *
 * Bytes never pass through this process's memory: ranges are copied with
 * copy_file_range (see st_writer_copy_fd), so resident memory stays at a few MB
 * whatever the model size (tensor names and the plan).
 *
 * config.json is patched textually: only the digits of the expert-count keys
 * (num_experts, num_local_experts, n_routed_experts) of the object that holds the
 * language-model fields (top level, or text_config for qwen3_vl_moe) change; key order,
 * formatting and every other byte are kept, and the result is re-parsed and compared
 * with the original to prove it. AWQ checkpoints (docs/awq.md): the quantization_config
 * is kept as it is, except that its modules_to_not_convert array (top level, or in
 * text_config) is rewritten when entries name expert indices
 * (reap_awq_not_convert_rewrite); per-expert qweight/qzeros/scales are renamed or dropped
 * as whole groups by the per-expert rule above.
 *
 * Non-weight files: every regular file of the input directory (symlinks followed) is
 * copied except config.json, the index, *.safetensors, other weight formats that would
 * be stale (pytorch_model*.bin, *.pt, *.pth, *.gguf, *.ckpt, *.h5, *.msgpack) and reap
 * outputs of an earlier prune (reap_metadata.json, reap-manifest.json[.minisig]);
 * subdirectories and other kinds of file (FIFOs, sockets, devices) are not copied.
 * Skipped names are reported in the result.
 *
 * Confinement: a checkpoint opened with roots (reap_ckpt_open_confined, a service) has
 * every file read here - shards, index, config.json and each copied file - opened under
 * those roots (fsopen.h): a file whose links lead outside them ends the rewrite with
 * REAP_E_DENIED naming it (it is not copied, not silently skipped).
 *
 * Thread rules: one call per output directory; the checkpoint is only read.
 */
#ifndef REAP_REWRITE_H
#define REAP_REWRITE_H

#include <stdint.h>

#include "fsutil.h" /* reap_fsync_dir, reap_write_all */
#include "checkpoint.h"
#include "config.h"
#include "keepset.h"

/* Progress: bytes of tensor data written so far of the total. Return non-zero to stop
 * (the rewrite returns REAP_E_CANCELLED). */
typedef int (*reap_rewrite_progress_fn)(void *ud, uint64_t done, uint64_t total);

/* Called with an output shard's file name (relative to out_dir) once the shard is
 * complete (fsynced and renamed into place, never written again by the rewrite), and the
 * path of the input shard it was made from. The rewrite drops the input shard's pages
 * from the page cache after the call unless it returns non-zero: the callee then takes
 * them over (it reads the file next, e.g. to hash it, and drops them itself). */
typedef int (*reap_rewrite_file_fn)(void *ud, const char *name, const char *in_path);

typedef struct reap_rewrite_result {
    uint64_t bytes_in;        /* tensor data bytes of the input */
    uint64_t bytes_out;       /* tensor data bytes written (= index total_size) */
    int n_tensors_in, n_tensors_out;
    int n_renamed;            /* per-expert tensors written under a new index */
    int n_sliced;             /* fused / router tensors sliced on axis 0 */
    int n_dropped;            /* tensors not written */
    int n_shards;             /* shard files written */
    int n_files_copied;       /* non-weight files */
    char skipped[1024];       /* names not copied, comma separated ("" if none) */
} reap_rewrite_result;

/* reap_rewrite_checkpoint flags. */
#define REAP_REWRITE_NO_SPACE_CHECK 1u /* skip the free-space check before writing */

/* Rewrite checkpoint `ck` (directory reap_ckpt_dir(ck), configuration `cfg`) pruned to
 * `ks` into the existing directory `out_dir` (normally a fresh temporary directory; files
 * of the same names are replaced). Every file written is fsynced, and so is out_dir.
 * Before the first byte, the planned size (+1% + 64 MiB) is checked against the free
 * space of out_dir's file system (reap_check_free_space) unless `flags` has
 * REAP_REWRITE_NO_SPACE_CHECK (0: check).
 * `progress` and `shard_done` may be NULL (both get `ud`). `res` may be NULL.
 * Returns REAP_OK, REAP_E_FORMAT (a fused or router tensor whose dim 0 is not E, an
 * expert index >= E, config.json without an expert-count key), REAP_E_INVALID (keep
 * set inconsistent with cfg; an input file that is not a regular file), REAP_E_NOTFOUND
 * (no config.json), REAP_E_DENIED (confinement, above), REAP_E_IO, REAP_E_NOMEM,
 * REAP_E_CANCELLED, REAP_E_INTERNAL (as reap_config_patch_experts). */
int reap_rewrite_checkpoint(const reap_ckpt *ck, const reap_config *cfg,
                            const reap_keepset *ks, const char *out_dir,
                            reap_rewrite_progress_fn progress,
                            reap_rewrite_file_fn shard_done, void *ud, unsigned flags,
                            reap_rewrite_result *res);

/* Write `src` config.json to `dst` with the expert count set to n_experts as described
 * above (fsynced). Returns REAP_OK, REAP_E_IO, REAP_E_FORMAT (no expert-count key in the
 * language-model object, or a value that is not an integer), REAP_E_NOTFOUND (no src),
 * REAP_E_INVALID (src is not a regular file), REAP_E_NOMEM, REAP_E_INTERNAL (the patched
 * text failed the re-parse proof). */
int reap_config_patch_experts(const char *src, const char *dst, reap_family family,
                              int n_experts);

/* config.json of the pruned checkpoint: reap_config_patch_experts with ks->n_keep, and,
 * when cfg is an AWQ configuration whose modules_to_not_convert names expert indices,
 * that array replaced by reap_awq_not_convert_rewrite's result (written as one line; the
 * re-parse proof covers it). Returns as reap_config_patch_experts, plus REAP_E_INTERNAL
 * from the rewrite. */
int reap_config_patch_pruned(const char *src, const char *dst, const reap_config *cfg,
                             const reap_keepset *ks);

/* AWQ modules_to_not_convert after a prune. `in`: the n_in entries of the input
 * configuration `cfg`; pruned by `ks`. Entries that name expert indices are renumbered,
 * dropped (the expert is gone) or, when a substring entry covers several experts
 * differently, replaced by the exact module names of the kept experts it covered; all
 * other entries are kept (rewrite_awq.c has the rules). The result is checked: every
 * kept expert linear is matched by some entry after the prune iff it was before.
 * On success *out is a new array of *n_out strings (free with reap_strv_free) and
 * *changed is 1 when it differs from `in`. Returns REAP_OK, REAP_E_NOMEM,
 * REAP_E_INTERNAL (the check failed). Thread rules: pure. */
int reap_awq_not_convert_rewrite(const reap_config *cfg, const reap_keepset *ks,
                                 char *const *in, int n_in, char ***out, int *n_out,
                                 int *changed);

/* Free an array of n strings (NULL allowed). */
void reap_strv_free(char **v, int n);

/* Copy a regular file (copy_file_range, falling back to read/write), fsync the copy.
 * Returns REAP_OK, REAP_E_NOTFOUND (no src), REAP_E_INVALID (src is not a regular file),
 * REAP_E_IO. */
int reap_copy_file(const char *src, const char *dst);

/* reap_copy_file for a service: `src` must be a regular file (REAP_E_INVALID otherwise:
 * a FIFO is refused without waiting) under `roots` once its links are resolved
 * (fsopen.h; NULL: unconfined), else REAP_E_DENIED naming it and where it leads.
 * Otherwise as reap_copy_file. */
int reap_copy_file_confined(const char *src, const reap_roots *roots, const char *dst);


#endif

/* rewrite_impl.h - internals shared by the files of the checkpoint rewrite: rewrite.c
 * (shards and index), rewrite_config.c (config.json), rewrite_files.c (paths, plain
 * writes, the other files). Not a public header; rewrite.h is the contract.
 *
 * Thread rules: as rewrite.h (no shared state).
 */
#ifndef REAP_REWRITE_IMPL_H
#define REAP_REWRITE_IMPL_H

#include <stddef.h>

#include "rewrite.h"

/* The last component of path (after the last '/'; path itself when there is none). */
const char *rw_base_name(const char *path);

/* dir + "/" + name, malloc'd (free()), or NULL when out of memory. */
char *rw_path_join(const char *dir, const char *name);

/* Write `len` bytes to path (create/truncate, fsync), for the files the rewrite generates
 * inside the prune's staging directory. REAP_OK or REAP_E_IO naming the path. */
int rw_write_file(const char *path, const void *buf, size_t len);

/* config.json `src` (read under roots; NULL: unconfined) written to dst with the expert
 * count set to n_experts and, when cfg and ks are given and cfg is AWQ, the
 * modules_to_not_convert array rewritten (rewrite.h: reap_config_patch_pruned).
 * Returns as reap_config_patch_pruned, plus REAP_E_DENIED (outside the roots). */
int rw_config_patch(const char *src, const reap_roots *roots, const char *dst,
                    reap_family family, int n_experts, const reap_config *cfg,
                    const reap_keepset *ks);

/* Copy every regular file of in_dir (links followed, each opened under roots) to out_dir
 * except the names the rewrite writes itself or that would be stale (rewrite.h lists
 * them); other names not copied are noted in res->skipped, and res->n_files_copied
 * counts the copies. REAP_OK, REAP_E_IO, REAP_E_NOMEM, REAP_E_DENIED, REAP_E_INVALID
 * (a name that is not a regular file once opened). */
int rw_copy_other_files(const char *in_dir, const reap_roots *roots, const char *out_dir,
                        reap_rewrite_result *res);

#endif

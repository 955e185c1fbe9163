/* prune.h - one prune, end to end: keep sets, the streaming rewrite into a temporary
 * directory next to the target, reap_metadata.json, optional verification, the signed
 * manifest, then an atomic rename into place.
 *
 *   <parent>/.<name>.reap-tmp-<pid>-<X>   built here (every file fsynced, then the
 *                                         directory), under a lock (outdir.h)
 *   <parent>/<name>                       renamed into place when complete (parent fsynced)
 * First the leftovers of earlier prunes of <name> whose writers died are removed
 * (reap_outdir_sweep; each reported through opts->leftover). An existing <name> is an
 * error unless force, and with force it must be an earlier reap output or an empty
 * directory (reap_outdir_check_replaceable); it is moved aside, the new output renamed
 * in, and the old one removed. Output inside the input directory (or the input inside
 * the output) is refused, after resolving symlinks. On any failure the temporary
 * directory is removed and an existing output is left untouched.
 *
 * reap_metadata.json, in the seed's shape: reap_version, methodology, num_layers,
 * num_experts_original, experts_kept, prune_ratio, experts_to_keep {"layer": [original
 * ids]}, mean_scores [[E scores] per MoE layer], plus criterion, n_prune, model_id,
 * calibration_ids, protect_super_experts, super_experts {"layer": [ids]}.
 * reap-verify.json (with verification): the structural and functional results.
 *
 * Thread rules: one prune per output path at a time; inputs are only read.
 */
#ifndef REAP_PRUNE_H
#define REAP_PRUNE_H

#include "calib.h"
#include "engine_hidden.h"
#include "keepset.h"
#include "manifest.h"
#include "minisign.h"
#include "outdir.h"
#include "rewrite.h"
#include "stats.h"
#include "verify.h"

typedef struct reap_prune_opts {
    const char *model_dir;             /* input checkpoint directory */
    const reap_roots *model_roots;     /* a service's roots: every input file read or
                                          copied must lie under one of them once its links
                                          are resolved, else REAP_E_DENIED naming it
                                          (fsopen.h, rewrite.h); NULL: unconfined */
    const char *out_dir;               /* target directory (parent must exist) */
    const reap_layer_stats *stats;     /* [n_stats] statistics, from any source */
    int n_stats;
    reap_keep_opts keep;
    const char *model_id;              /* may be NULL (until the store provides it) */
    const char *const *calib_ids;      /* [n_calib], may be NULL */
    int n_calib;
    const reap_sign_key *key;          /* NULL: manifest written but not signed */
    int force;                         /* replace an existing output directory */
    int verify;                        /* structural verification */
    const reap_rows *verify_rows;      /* also functional verification over these rows
                                          (NULL: structural only) */
    reap_probe_opts probe;             /* backend for functional verification */
    reap_rewrite_progress_fn progress; /* may be NULL */
    void *ud;
    const reap_known_file *input_files; /* [n_input_files] input digests already known
                                           (the model identity's, see manifest.h): not
                                           read again for the manifest; may be NULL */
    int n_input_files;
    const char *stats_model_id;        /* the model_id the statistics name when it is not
                                          model_id (statistics of another checkpoint,
                                          used deliberately): recorded in the signed
                                          manifest; NULL otherwise */
    reap_leftover_fn leftover;         /* hears of each leftover of a dead writer of this
                                          output (removed, restored, in use); may be NULL */
    void *leftover_ud;
    int no_space_check;                /* 1: skip the rewrite's free-space check (file
                                          systems that misreport free space) */
} reap_prune_opts;

typedef struct reap_prune_result {
    reap_keepset ks;
    reap_rewrite_result rewrite;
    reap_verify_result verify;         /* when opts->verify */
    char manifest_digest[65];
    double seconds_rewrite, seconds_manifest, seconds_verify;
    int n_files_prehashed;             /* output shards hashed during the rewrite */
    uint64_t bytes_prehashed;          /* and their bytes */
} reap_prune_result;

/* Run one prune. On success (and on failure after the keep set was computed) free res
 * with reap_prune_result_free. Returns REAP_OK, the keep-set refusals (keepset.h),
 * REAP_E_NOTFOUND (the model directory cannot be resolved), REAP_E_INVALID (output
 * exists without force, output inside input or input inside output, a bad output path),
 * REAP_E_PRECONDITION (force, but the output is neither a reap output nor empty), the
 * rewrite's and verification's errors, REAP_E_IO, REAP_E_NOMEM. */
int reap_prune(const reap_prune_opts *opts, reap_prune_result *res);

void reap_prune_result_free(reap_prune_result *res);

/* The output check reap_prune makes first, for a caller with slow work to do before it
 * (hashing the input): out_dir may be written when absent, or with force when it is an
 * earlier reap output or an empty directory. Returns REAP_OK, REAP_E_INVALID (exists
 * without force, a bad path), REAP_E_PRECONDITION (see reap_outdir_check_replaceable),
 * REAP_E_IO (the parent does not resolve). */
int reap_prune_output_check(const char *out_dir, int force);

/* Write reap_metadata.json for `ks` into dir (fsynced). Returns REAP_OK, REAP_E_IO. */
int reap_metadata_write(const char *dir, const reap_config *cfg, const reap_keepset *ks,
                        const char *model_id, const char *const *calib_ids, int n_calib);

#endif

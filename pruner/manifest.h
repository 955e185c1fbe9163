/* manifest.h - reap-manifest.json: what a pruned checkpoint is made of and from, signed
 * in minisign's format (reap-manifest.json.minisig), and its verification.
 *
 * The manifest (JSON, format "reap-manifest/1"):
 *   files       every file of the output directory except the manifest and its
 *               signature: {path, size, blake2b_256, sha256} (hex), sorted by path
 *   inputs      model_id (or null), files: config.json, the index and every shard of
 *               the input {path, size, blake2b_256}, calibration_ids, stats_digest
 *               (BLAKE2b-256 of the statistics records used, see reap_stats_digest),
 *               and stats_model_id only when the statistics are another checkpoint's
 *               (used deliberately: the model_id they name, which is not model_id)
 *   parameters  criterion, ratio (null when n_prune was given), n_prune, n_experts,
 *               n_keep, top_k, protect_super_experts, super_threshold, keep_sets
 *               {layer: [original ids]}
 *   software    {name, version, backend}, created (UTC, ISO 8601)
 * The signature's trusted comment is
 *   "reap-manifest model_id=<id|none> manifest_blake2b256=<hex> timestamp=<unix>"
 * followed by " stats_model_id=<id>" when the manifest has that field.
 * so `minisign -Vm reap-manifest.json -P KEY` proves manifest and comment together.
 *
 * Thread rules: no shared state.
 */
#ifndef REAP_MANIFEST_H
#define REAP_MANIFEST_H

#include <stdint.h>

#include "filehash.h"
#include "hex.h"
#include "keepset.h"
#include "minisign.h"
#include "stats.h"

#define REAP_MANIFEST_NAME "reap-manifest.json"
#define REAP_MANIFEST_SIG_NAME "reap-manifest.json.minisig"

/* An input file whose digest is already known. */
typedef struct reap_known_file {
    const char *path;                  /* relative to the input directory */
    uint64_t size;
    uint8_t blake2b_256[32];
} reap_known_file;

typedef struct reap_manifest_inputs {
    const char *model_id;              /* may be NULL */
    const char *const *calib_ids;      /* [n_calib], may be NULL */
    int n_calib;
    const char *stats_digest;          /* hex, may be NULL */
    const char *backend;               /* engine backend used for --verify, may be NULL */
    const reap_known_file *files;      /* [n_files] input files whose BLAKE2b-256 is
                                          already known (the digests model_id was made
                                          of, from the store's cache); may be NULL */
    int n_files;
    const char *stats_model_id;        /* the statistics' model_id when they are another
                                          checkpoint's; NULL otherwise (not written) */
    const reap_roots *roots;           /* input files hashed here must lie under these
                                          (fsopen.h); NULL: unconfined */
} reap_manifest_inputs;

/* Write out_dir/reap-manifest.json describing every file now in out_dir and, when key
 * is not NULL, sign it into out_dir/reap-manifest.json.minisig. `in_dir` is the input
 * checkpoint directory (config.json, model.safetensors.index.json and the *.safetensors
 * files there are listed as inputs). Digests already computed are reused, the rest are
 * computed here on all cores: an output file `hashed` (may be NULL) digested with its
 * SHA-256 and that has not changed since (device, inode, size, mtime, ctime), an input
 * file in in->files of the same name and size, or that `hashed` digested and that has
 * not changed since. digest_hex (may be NULL, 65 bytes) receives the BLAKE2b-256 of the
 * manifest file.
 * Returns REAP_OK, REAP_E_IO, REAP_E_NOMEM, REAP_E_INTERNAL. */
int reap_manifest_write(const char *out_dir, const char *in_dir, const reap_keepset *ks,
                        const reap_manifest_inputs *in, reap_hasher *hashed,
                        const reap_sign_key *key, char *digest_hex);

/* One call per problem found by reap_manifest_verify_dir: `subject` is what the problem
 * is about: a file's name (as the manifest lists it, or as found in the directory; it
 * may contain any character but '/'), or "signature" (the .minisig file, its trusted
 * comment) or "manifest" (the manifest document itself); `text` says what is wrong
 * ("missing", "content changed (SHA-256)", ...). A line for people is "subject: text".
 * Both strings are valid only during the call. */
typedef void (*reap_verify_report_fn)(void *ud, const char *subject, const char *text);

/* Check directory `dir` against its manifest: the signature (with pk; skipped when pk is
 * NULL) and its trusted comment's manifest digest, then every listed file re-hashed
 * (size, BLAKE2b-256, SHA-256), missing files, and files present but not listed.
 * Every problem is reported (report may be NULL); *n_problems (may be NULL) counts them.
 * Returns REAP_OK when everything matches, REAP_E_INVALID when anything failed
 * (including a malformed manifest; the message names the first problem),
 * REAP_E_NOTFOUND (no manifest), REAP_E_IO, REAP_E_NOMEM. */
int reap_manifest_verify_dir(const char *dir, const reap_pub_key *pk,
                             reap_verify_report_fn report, void *ud, int *n_problems);

/* reap_manifest_verify_dir for a service: every file it reads (the manifest, its
 * signature, each listed file) must be a regular file under `roots` once its links are
 * resolved (fsopen.h; NULL: unconfined). A listed file that is not (a FIFO, a link out
 * of the roots) is a problem naming it; a manifest that is not is REAP_E_INVALID
 * (not a regular file) or REAP_E_DENIED. Nothing waits on a FIFO. Otherwise as
 * reap_manifest_verify_dir. */
int reap_manifest_verify_dir_confined(const char *dir, const reap_roots *roots,
                                      const reap_pub_key *pk, reap_verify_report_fn report,
                                      void *ud, int *n_problems);

#endif

/* identity.h - model_id and calib_id: content identities (BLAKE2b-256, libsodium).
 *
 * model_id = BLAKE2b-256 of
 *     "reap-model-id/1" | for each file, sorted by relative path (bytewise):
 *         u32 BE path length | path | u64 BE size | BLAKE2b-256 of the file
 * over config.json, model.safetensors.index.json (when present) and every *.safetensors
 * file in the directory (top level; symbolic links are followed, as in a Hugging Face
 * cache snapshot). One of these names that is not a regular file (a FIFO, a directory)
 * is refused, REAP_E_INVALID naming it: it is never opened. Renaming the directory keeps
 * the id; any change of a weight byte changes it.
 *
 * File digests are computed in parallel (one file per thread, largest first, each read
 * through a read-only mapping) and cached in the store's `filehash` database keyed by
 * (device, inode, size, mtime in ns); a cached digest is used only while the file's
 * ctime (s and ns) is also the one recorded with it (an in-place edit with the mtime
 * restored changes the ctime; a record without a ctime is never used), so an unchanged
 * checkpoint is hashed once. A file whose stat changes while it is hashed is an error;
 * a file whose mtime or ctime is less than 2 s before hashing is hashed but not cached
 * (its timestamps may not yet tell it from a later change). As with the safetensors
 * reader's mappings, a file truncated by another process while it is being read faults
 * (SIGBUS): model directories must not change under a running scorer.
 *
 * calib_id = BLAKE2b-256 of
 *     "reap-calib-id/1" | u32 BE seq_len | u8 packing (1 packed, 0 not) | u32 BE n_rows |
 *     tokens (n_rows x seq_len int32 LE) | mask (n_rows x seq_len bytes) |
 *     u8 has_tokenizer | tokenizer digest (32 B, when has_tokenizer)
 * i.e. the exact rows that are scored: the same samples packed differently, cut to
 * another length or tokenised by another tokenizer are different calibration data.
 *
 * Thread rules: the functions may be called from any thread; each call uses up to
 * `threads` worker threads of its own.
 */
#ifndef REAP_STORE_IDENTITY_H
#define REAP_STORE_IDENTITY_H

#include <stdint.h>

#include "calib.h"
#include "fsopen.h"
#include "catalog.h"
#include "store.h"

/* BLAKE2b-256 of one file's bytes. REAP_OK, REAP_E_NOTFOUND, REAP_E_IO (message names
 * the file). */
int reap_file_digest(const char *path, uint8_t out[32]);

typedef struct reap_hash_stats {
    int n_files;              /* files in the identity */
    int n_cached;             /* digests taken from the store's cache */
    uint64_t bytes_total;     /* bytes of all files */
    uint64_t bytes_hashed;    /* bytes read and hashed by this call */
    double seconds;           /* wall time of the hashing phase */
} reap_hash_stats;

/* Identify the checkpoint in `dir`: list its files (as above), hash them with up to
 * `threads` threads (0: all cores) using and filling the cache of store `s` (may be
 * NULL: no cache; a read-only store: cache read, not filled), and compute model_id.
 * On success out->id, out->files, out->n_files and out->first_seen_path (dir, resolved) are set
 * (the rest zero; free with reap_model_info_free); *hs (may be NULL) receives counters.
 * Returns REAP_OK, REAP_E_NOTFOUND (no directory, no config.json, no *.safetensors),
 * REAP_E_IO (read error, file changed while hashing), REAP_E_NOMEM, or a store error. */
int reap_model_identify(reap_store *s, const char *dir, int threads, reap_model_info *out,
                        reap_hash_stats *hs);

/* reap_model_identify for a service: every file of the identity must also lie under
 * `roots` once its links are resolved (fsopen.h; NULL: unconfined), else REAP_E_DENIED
 * naming the file - cached digests included. Otherwise as reap_model_identify. */
int reap_model_identify_confined(reap_store *s, const char *dir, const reap_roots *roots,
                                 int threads, reap_model_info *out, reap_hash_stats *hs);

/* model_id of a file list (sorted here by path; files[] is reordered). */
void reap_model_id_from_files(reap_model_file *files, int n_files, reap_id *out);

/* calib_id of rows built with packing `pack`; tokenizer_digest NULL: token ids given
 * directly. BLAKE2b-256 of the length, packing, row count, tokens, mask and tokenizer
 * digest; rows with images add each image's grid, token count and file digest (not its
 * path) and every image span, so text-only rows keep the ids they always had. */
void reap_calib_id_compute(const reap_rows *rows, int pack, const uint8_t *tokenizer_digest,
                           reap_id *out);

#endif

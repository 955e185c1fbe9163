/* filehash.h - file digests for manifests: BLAKE2b-256 (libsodium) and SHA-256 (OpenSSL's
 * libcrypto, which uses the CPU's SHA extensions where it has them: about 7x libsodium's
 * portable SHA-256 on a current x86 core; the tests compare the two on random inputs).
 *
 * Three ways to hash:
 *   reap_hash_file     one file, one read pass, both digests
 *   reap_hash_files    many files on up to 8 threads (one file per thread at a time)
 *   reap_hasher        a background hasher: the rewrite hands it each output shard as
 *                      soon as the shard is complete (and the input shard it read), so
 *                      the files are digested (from the page cache, while they are still
 *                      there) during the writing of the next shard instead of being read
 *                      back from disk at the end
 *
 * Every read drops the pages it hashed from the page cache (POSIX_FADV_DONTNEED), so
 * hashing a 120 GB checkpoint leaves memory as it was.
 *
 * Thread rules: reap_sha256, reap_hash_file and reap_hash_files may be called from any
 * thread. One thread uses a reap_hasher (add, wait, find, free); its workers are its own.
 */
#ifndef REAP_FILEHASH_H
#define REAP_FILEHASH_H

#include <stddef.h>
#include <stdint.h>

#include "fsopen.h"

/* SHA-256 of len bytes (libcrypto). REAP_OK, or REAP_E_INTERNAL when libcrypto fails. */
int reap_sha256(const void *buf, size_t len, uint8_t out[32]);

/* BLAKE2b-256 and SHA-256 (either may be NULL) and size of a file, in one read pass.
 * Returns REAP_OK, REAP_E_IO (message names the file), REAP_E_NOMEM, REAP_E_INTERNAL. */
int reap_hash_file(const char *path, uint8_t blake2b_256[32], uint8_t sha256[32],
                   uint64_t *size);

/* reap_hash_file for a service: `path` must be a regular file (a FIFO is REAP_E_INVALID,
 * without waiting) under `roots` once its links are resolved (fsopen.h; NULL:
 * unconfined), else REAP_E_DENIED. */
int reap_hash_file_confined(const char *path, const reap_roots *roots,
                            uint8_t blake2b_256[32], uint8_t sha256[32], uint64_t *size);

/* One file to hash: dir/name. The caller sets dir, name and with_sha (and done for a job
 * whose digests it already has); the rest is filled: the digests, size, and the file's
 * identity when it was hashed (device, inode, size, mtime and ctime, which must not
 * change during the read or the job fails with REAP_E_IO; the ctime, which no user tool
 * can set back, tells an in-place edit whose mtime was restored). */
typedef struct reap_file_hash {
    const char *dir, *name;
    const reap_roots *roots;    /* the file must lie under these (fsopen.h); NULL:
                                   unconfined */
    int with_sha;
    int done;                   /* 1: digests already there, reap_hash_files skips it */
    uint8_t b2[32], sh[32];
    uint64_t size;
    uint64_t dev, ino;
    int64_t mtime_ns, ctime_ns;
    int rc;                     /* REAP_OK or the job's error */
    char msg[512];              /* its message */
} reap_file_hash;

/* Hash dir/name of every job not done (a job's failure is its rc and msg; the others go
 * on). */
void reap_hash_files(reap_file_hash *jobs, size_t n);

typedef struct reap_hasher reap_hasher;

/* Start a background hasher with `threads` workers (clamped to 1..8).
 * REAP_OK, REAP_E_NOMEM, REAP_E_INTERNAL (no thread). */
int reap_hasher_start(int threads, reap_hasher **out);

/* Queue dir/name (both copied): a complete file that nothing will write again; its
 * BLAKE2b-256, and its SHA-256 when with_sha. REAP_OK or REAP_E_NOMEM (the file is then
 * simply not pre-hashed). */
int reap_hasher_add(reap_hasher *h, const char *dir, const char *name, int with_sha);

/* Wait until every queued file is hashed. */
void reap_hasher_wait(reap_hasher *h);

/* After reap_hasher_wait: the digests of dir/name when it was hashed without error and
 * its device, inode, size, mtime and ctime are still those it had then; NULL otherwise
 * (the caller hashes it again). Valid until reap_hasher_free. */
const reap_file_hash *reap_hasher_find(reap_hasher *h, const char *dir, const char *name);

/* Files hashed so far and their bytes (for reports; 0 and 0 when h is NULL). */
void reap_hasher_counts(reap_hasher *h, int *n_files, uint64_t *bytes);

/* Stop: files not yet started are dropped, the ones being hashed finished; then free
 * everything (NULL is a no-op). */
void reap_hasher_free(reap_hasher *h);

#endif

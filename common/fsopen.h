/* fsopen.h - opening a file for reading on behalf of a user or a request.
 *
 * Every reader of a file that a user or a request names (checkpoint shards and index,
 * config.json, tokenizer.json, calibration data, files the pruner copies, manifests,
 * signatures, keys, import files, .env and token files) opens it here, so that two rules
 * have one owner:
 *
 *   Type: only a regular file is read. The file is opened with O_NONBLOCK, so that a
 *     FIFO (whose open(2) would wait for a writer forever), a device or a socket never
 *     blocks, and checked with fstat(2) on the descriptor actually opened; a regular
 *     file then has O_NONBLOCK cleared. Anything else is refused, REAP_E_INVALID, with a
 *     message naming the file and its type ("a FIFO", "a directory", ...).
 *     REAP_OPEN_STREAM also admits a FIFO or a pipe (calibration data given as
 *     `--calib /dev/stdin` or `<(zcat calib.jsonl.gz)`); such a descriptor keeps
 *     O_NONBLOCK and is read with reap_read_stream, which can be stopped while it waits.
 *
 *   Confinement: with roots (a service), the file actually opened must lie at or under
 *     one of them once every symbolic link is resolved, else REAP_E_DENIED naming the
 *     file and where it leads. The check is made on the open descriptor (the resolved
 *     path's device and inode must be the descriptor's), so a file swapped for a link
 *     between the check and the read cannot escape. Links that resolve inside a root
 *     (a Hugging Face cache snapshot's links into ../../blobs/) are followed as usual.
 *     roots == NULL: unconfined (command-line use). A file outside the roots is refused
 *     as such before anything else is said of it (its type included).
 *
 * Thread rules: nothing is kept between calls; every function is thread-safe. A
 * reap_roots is read, never written, and must outlive the calls that are given it.
 */
#ifndef REAP_FSOPEN_H
#define REAP_FSOPEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Directories a service confines its reads to. */
typedef struct reap_roots {
    const char *const *dirs;   /* [n] absolute, resolved (realpath) directories, without a
                                  trailing '/' except "/" itself */
    int n;                     /* 0: every file is refused */
} reap_roots;

/* What reap_open_read accepts. */
enum {
    REAP_OPEN_REGULAR = 0,     /* a regular file only */
    REAP_OPEN_STREAM = 1       /* a regular file, a FIFO or a pipe */
};

/* Open `path` read-only (O_CLOEXEC) under the two rules above.
 * kind: REAP_OPEN_REGULAR or REAP_OPEN_STREAM. On success *fd_out is the descriptor
 * (caller closes); blocking, except a FIFO or pipe under REAP_OPEN_STREAM, which stays
 * O_NONBLOCK (read it with reap_read_stream).
 * Returns REAP_OK; REAP_E_NOTFOUND (no such file), REAP_E_INVALID (not a regular file
 * - FIFO, directory, socket, device - or NULL arguments), REAP_E_DENIED (outside every
 * root), REAP_E_IO (other open/fstat failures, errno in the message). On failure
 * *fd_out is -1. */
int reap_open_read(const char *path, const reap_roots *roots, int kind, int *fd_out);

/* reap_open_read(path, roots, REAP_OPEN_REGULAR) as a stdio stream ("rb") in *out
 * (caller fcloses). Same returns (REAP_E_NOMEM when the stream cannot be made); *out is
 * NULL on failure. */
int reap_fopen_read(const char *path, const reap_roots *roots, FILE **out);

/* Check that the open descriptor `fd`, opened from `path`, is a file at or under one of
 * `roots` (NULL: REAP_OK at once). Returns REAP_OK, REAP_E_DENIED (outside every root,
 * or the path no longer leads to the open file), REAP_E_IO (the path cannot be
 * resolved), REAP_E_NOMEM. */
int reap_roots_check_fd(const reap_roots *roots, int fd, const char *path);

/* 1 if the absolute, normalised path `p` is `root` or lies under it, else 0. */
int reap_path_under(const char *p, const char *root);

/* "a regular file", "a FIFO", "a directory", "a socket", "a character device",
 * "a block device", "a symbolic link" or "an unknown kind of file" for st_mode `mode`. */
const char *reap_file_type_name(unsigned mode);

/* Called while reap_read_stream waits for data (about every 100 ms, and when a signal
 * interrupts the wait); non-zero stops the read. */
typedef int (*reap_stop_fn)(void *ud);

/* Read everything from `fd` (to end of file) into a malloc'd buffer *buf of *len bytes,
 * with a terminating '\0' not counted in *len (caller frees). A descriptor with
 * O_NONBLOCK set (a FIFO or pipe from reap_open_read) is waited on with poll(2); while
 * it has no data, should_stop(ud) (may be NULL) is asked whether to give up, so that a
 * stream whose writer never comes does not hold its reader forever. `path` names the
 * file in messages. Returns REAP_OK, REAP_E_CANCELLED (should_stop said so),
 * REAP_E_IO, REAP_E_NOMEM; on failure *buf is NULL. */
int reap_read_stream(int fd, const char *path, reap_stop_fn should_stop, void *ud,
                     char **buf, size_t *len);

/* Given each chunk reap_read_chunks reads: the `n` (> 0) bytes at `data`, which start at
 * byte `off` of what has been read. Returns REAP_OK to go on; anything else stops the
 * read and is returned by reap_read_chunks (the callback sets the message). */
typedef int (*reap_chunk_fn)(void *ud, const void *data, size_t n, uint64_t off);

/* Read the blocking descriptor `fd` from where it stands to end of file, `cap` bytes at
 * most at a time into the caller's `buf` (cap > 0), and hand each chunk to
 * fn(ud, ...) in order. read(2) interrupted by a signal (EINTR) is retried. `path` names
 * the file in messages. The whole-file hashes (manifest digests, the minisign prehash)
 * read this way, with a buffer they own.
 * Returns REAP_OK with *total (may be NULL) the bytes read; REAP_E_IO ("<path>: read:
 * <errno text>") when a read fails; or the first non-REAP_OK value fn returned. On failure
 * *total holds the bytes of the chunks fn accepted. */
int reap_read_chunks(int fd, const char *path, void *buf, size_t cap, reap_chunk_fn fn,
                     void *ud, uint64_t *total);

#endif

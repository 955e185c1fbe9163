/* fsutil.h - small durable-write helpers shared by every module that writes files:
 * a write loop that survives short writes and EINTR (and its read counterpart), directory fsyncs, the one owner of
 * the atomic file write (temp file in the same directory -> write -> fsync -> rename
 * over the target -> fsync the directory), and the one copy_file_range loop with its
 * pread/write fallback.
 *
 * All return REAP_OK or REAP_E_IO (REAP_E_NOMEM for an allocation) with a message
 * naming `path` / `dir`. Thread-safe; nothing is kept between calls.
 */
#ifndef REAP_FSUTIL_H
#define REAP_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Write all `len` bytes of buf to fd; `path` names the file in error messages.
 * REAP_OK or REAP_E_IO. */
int reap_write_all(int fd, const void *buf, size_t len, const char *path);

/* Read exactly `len` bytes from fd into buf (the counterpart of reap_write_all; reading
 * to end of file in chunks is reap_read_chunks in fsopen.h), retrying on EINTR; `path`
 * names the file in error messages. REAP_OK, or REAP_E_IO when a read fails or the file
 * ends first ("<path>: read: short"); buf may then hold part of the bytes. */
int reap_read_full(int fd, void *buf, size_t len, const char *path);

/* fsync the directory `dir` (makes entries created or renamed in it durable).
 * REAP_OK or REAP_E_IO. */
int reap_fsync_dir(const char *dir);

/* fsync the directory that holds `path` ("." for a bare file name). REAP_OK, REAP_E_IO,
 * REAP_E_NOMEM. */
int reap_fsync_parent_dir(const char *path);

/* Fail early, before writing, when the file system that holds `dir` has fewer than
 * `need` bytes available to this user (statvfs f_bavail). `what` names the output in
 * the message, which gives both sizes. REAP_OK when statvfs itself fails. Callers leave
 * the check out when their options say so (file systems that misreport free space: the
 * commands' --no-space-check / REAP_NO_SPACE_CHECK=1 set reap_store_opts.no_space_check
 * and reap_prune_opts.no_space_check); it reads no environment.
 * Returns REAP_OK or REAP_E_IO. */
int reap_check_free_space(const char *dir, uint64_t need, const char *what);

/* ---- atomic file writes ------------------------------------------------------------- */

/* Temp name "<path>.tmp.<pid>" instead of "<path>.tmp" (writers that may run in several
 * processes at once on the same target). */
#define REAP_ATOMIC_PID_TMP 1u
/* Also open a stdio stream on the temp file (af->fp, "wb"); write through it only. */
#define REAP_ATOMIC_STDIO 2u

/* An open atomic write. The target `path` is untouched until reap_atomic_commit; readers
 * see the old file or the whole new one, never a part. */
typedef struct reap_atomic {
    char *path; /* target */
    char *tmp;  /* temp file in the same directory */
    int fd;     /* temp file, write only; -1 when closed */
    FILE *fp;   /* stdio stream on fd with REAP_ATOMIC_STDIO, else NULL */
} reap_atomic;

/* Start an atomic write of `path`: remove a stale temp file of the same name, create the
 * temp file exclusively with permission bits `mode` (less the umask, as open(2)), and
 * fill *af. `flags`: REAP_ATOMIC_PID_TMP, REAP_ATOMIC_STDIO. Returns REAP_OK, REAP_E_NOMEM,
 * or REAP_E_IO naming the temp file; on failure *af holds nothing to release. */
int reap_atomic_open(const char *path, mode_t mode, unsigned flags, reap_atomic *af);

/* Finish: flush the stream (if any), fsync, close, rename the temp file over the target
 * and fsync the directory. Always releases *af; on any failure the temp file is removed
 * and the old target (if any) is left as it was. Returns REAP_OK, REAP_E_IO naming the
 * file, or REAP_E_NOMEM. */
int reap_atomic_commit(reap_atomic *af);

/* Give up: close and remove the temp file, release *af. The target is untouched. Safe on
 * a zeroed struct with fd -1 and on one already released. */
void reap_atomic_abort(reap_atomic *af);

/* Write `len` bytes of buf to `path` atomically (reap_atomic_open with temp name
 * "<path>.tmp", one write, reap_atomic_commit). The file gets permission bits `mode` less
 * the umask. Returns as reap_atomic_commit; on failure nothing is left behind and the old
 * target is intact. */
int reap_write_atomic(const char *path, const void *buf, size_t len, mode_t mode);

/* ---- file copies --------------------------------------------------------------------- */

#define REAP_COPY_CHUNK (64u << 20)    /* bytes per copy_file_range call */
#define REAP_COPY_BOUNCE (8u << 20)    /* pread/write fallback buffer */
/* Skip copy_file_range and use pread/write. Tests set it to exercise the fallback;
 * reap_copy_range sets it itself when the kernel refuses the pair of files (EXDEV,
 * EINVAL, ENOSYS, EOPNOTSUPP, EBADF, EPERM), so later calls with the same flags skip
 * the refused call. */
#define REAP_COPY_FALLBACK 1u

/* Copy `len` bytes of `in` starting at offset `off` (in's file offset is not used or
 * moved) to `out` at out's current file offset. `flags` (in/out, may be NULL for 0):
 * REAP_COPY_FALLBACK. `src` / `dst` name the files in messages. After the fallback path
 * the source pages are dropped from the page cache. Returns REAP_OK, REAP_E_NOMEM, or
 * REAP_E_IO (read/write error, or the source ends before off + len). */
int reap_copy_range(int in, uint64_t off, uint64_t len, int out, unsigned *flags,
                    const char *src, const char *dst);

#endif

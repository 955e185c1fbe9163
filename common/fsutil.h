/* fsutil.h - small durable-write helpers shared by every module that writes files:
 * a write loop that survives short writes and EINTR, and directory fsyncs (the last
 * step of temp file -> fsync -> rename -> fsync the directory).
 *
 * All return REAP_OK or REAP_E_IO (REAP_E_NOMEM for an allocation) with a message
 * naming `path` / `dir`. Thread-safe; nothing is kept between calls.
 */
#ifndef REAP_FSUTIL_H
#define REAP_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Write all `len` bytes of buf to fd; `path` names the file in error messages. */
int reap_write_all(int fd, const void *buf, size_t len, const char *path);

/* fsync the directory `dir` (makes entries created or renamed in it durable). */
int reap_fsync_dir(const char *dir);

/* fsync the directory that holds `path` ("." for a bare file name). */
int reap_fsync_parent_dir(const char *path);

/* Fail early, before writing, when the file system that holds `dir` has fewer than
 * `need` bytes available to this user (statvfs f_bavail). `what` names the output in
 * the message, which gives both sizes. The check is skipped (REAP_OK) when the
 * environment sets REAP_NO_SPACE_CHECK=1 (file systems that misreport free space) or
 * when statvfs itself fails. Returns REAP_OK or REAP_E_IO. */
int reap_check_free_space(const char *dir, uint64_t need, const char *what);

#endif

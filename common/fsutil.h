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

/* Write all `len` bytes of buf to fd; `path` names the file in error messages. */
int reap_write_all(int fd, const void *buf, size_t len, const char *path);

/* fsync the directory `dir` (makes entries created or renamed in it durable). */
int reap_fsync_dir(const char *dir);

/* fsync the directory that holds `path` ("." for a bare file name). */
int reap_fsync_parent_dir(const char *path);

#endif

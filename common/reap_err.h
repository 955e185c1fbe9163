/* reap_err.h - status codes and the per-thread error message.
 *
 * Library functions return int: 0 (REAP_OK) on success, a negative REAP_E_* code
 * on failure. The function that detects a failure also records a human-readable
 * message naming the file / tensor / line involved with reap_err_set(); callers read
 * it with reap_err_msg() and may prefix context with reap_err_prefix().
 *
 * Thread rules: the message buffer is thread-local; a message describes the last
 * failure on the calling thread only. Nothing here allocates or exits.
 */
#ifndef REAP_ERR_H
#define REAP_ERR_H

#include <stdarg.h>

enum reap_status {
    REAP_OK = 0,
    REAP_E_IO = -1,         /* open/read/mmap/write failed (errno in message) */
    REAP_E_FORMAT = -2,     /* malformed file: bad header, JSON, offsets, shapes */
    REAP_E_INVALID = -3,    /* invalid argument or inconsistent configuration */
    REAP_E_NOTFOUND = -4,   /* missing file or tensor */
    REAP_E_UNSUPPORTED = -5,/* valid input this build does not handle */
    REAP_E_NOMEM = -6,      /* allocation failed */
    REAP_E_NUMERIC = -7,    /* NaN or Inf in a weight or activation */
    REAP_E_DEVICE = -8,     /* accelerator error (CUDA) */
    REAP_E_CANCELLED = -9,  /* stopped on request */
    REAP_E_INTERNAL = -10,  /* a bug: invariant violated */
    REAP_E_CONFLICT = -11,  /* held or different: the (model, calibration) pair is being
                               scored by another run, an imported record differs */
    REAP_E_PRECONDITION = -12,/* valid request the current state does not allow: no
                               statistics for a MoE layer, fewer experts left than top-k */
    REAP_E_DENIED = -13       /* a file outside every root a service may read
                               (fsopen.h: a symbolic link that leads out of them) */
};

/* Short name of a status code ("format error", ...). Never NULL. */
const char *reap_strerror(int status);

/* Record a message for the calling thread and return `status` (so callers can write
 * `return reap_err_set(REAP_E_FORMAT, "%s: bad header", path);`). */
int reap_err_set(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend "<context>: " to the current message; returns `status` unchanged. */
int reap_err_prefix(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last message ("" if none). Valid until the next reap_err_* call
 * on this thread. */
const char *reap_err_msg(void);

/* Forget the calling thread's message. */
void reap_err_clear(void);

#endif

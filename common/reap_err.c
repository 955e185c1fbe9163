/* reap_err.c - thread-local error messages (see reap_err.h). */
#include "reap_err.h"

#include <stdio.h>
#include <string.h>

#define REAP_ERR_MSG_MAX 1024

static _Thread_local char err_msg[REAP_ERR_MSG_MAX];

const char *reap_strerror(int status)
{
    switch (status) {
    case REAP_OK: return "ok";
    case REAP_E_IO: return "I/O error";
    case REAP_E_FORMAT: return "format error";
    case REAP_E_INVALID: return "invalid argument";
    case REAP_E_NOTFOUND: return "not found";
    case REAP_E_UNSUPPORTED: return "unsupported";
    case REAP_E_NOMEM: return "out of memory";
    case REAP_E_NUMERIC: return "non-finite value";
    case REAP_E_DEVICE: return "device error";
    case REAP_E_CANCELLED: return "cancelled";
    case REAP_E_INTERNAL: return "internal error";
    case REAP_E_CONFLICT: return "conflict";
    case REAP_E_PRECONDITION: return "failed precondition";
    case REAP_E_DENIED: return "permission denied";
    default: return "unknown error";
    }
}

int reap_err_set(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return status;
}

int reap_err_prefix(int status, const char *fmt, ...)
{
    char prefix[256];
    char old[REAP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    /* A prefix is short context ("layer 3"); the old message keeps what fits after it. */
    snprintf(err_msg, sizeof err_msg, "%.255s: %.760s", prefix, old);
    return status;
}

const char *reap_err_msg(void) { return err_msg; }

void reap_err_clear(void) { err_msg[0] = '\0'; }

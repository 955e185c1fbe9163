/* rpc_status.c - gRPC status code names and the REAP_E_* mapping (see rpc_status.h). */
#include "rpc_status.h"

#include <stddef.h>
#include <strings.h>

#include "reap_err.h"

static const char *const code_names[RPC_CODE_MAX + 1] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rpc_code_name(int code)
{
    if (code < 0 || code > RPC_CODE_MAX)
        return "UNKNOWN_CODE";
    return code_names[code];
}

int rpc_code_parse(const char *name, rpc_code *out)
{
    if (!name)
        return -1;
    for (int i = 0; i <= RPC_CODE_MAX; i++)
        if (!strcasecmp(name, code_names[i])) {
            *out = (rpc_code)i;
            return 0;
        }
    return -1;
}

rpc_code rpc_code_from_reap(int reap_status)
{
    switch (reap_status) {
    case REAP_OK: return RPC_OK;
    case REAP_E_INVALID: return RPC_INVALID_ARGUMENT;
    case REAP_E_NOTFOUND: return RPC_NOT_FOUND;
    case REAP_E_FORMAT: return RPC_FAILED_PRECONDITION;
    case REAP_E_UNSUPPORTED: return RPC_FAILED_PRECONDITION;
    case REAP_E_NUMERIC: return RPC_FAILED_PRECONDITION;
    case REAP_E_NOMEM: return RPC_RESOURCE_EXHAUSTED;
    case REAP_E_CANCELLED: return RPC_CANCELLED;
    case REAP_E_IO: return RPC_INTERNAL;
    case REAP_E_DEVICE: return RPC_INTERNAL;
    case REAP_E_INTERNAL: return RPC_INTERNAL;
    case REAP_E_CONFLICT: return RPC_ALREADY_EXISTS;
    case REAP_E_PRECONDITION: return RPC_FAILED_PRECONDITION;
    case REAP_E_DENIED: return RPC_PERMISSION_DENIED;
    default: return RPC_UNKNOWN;
    }
}

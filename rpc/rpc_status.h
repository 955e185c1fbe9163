/* rpc_status.h - gRPC status codes for the reap services, and the mapping from the
 * project's REAP_E_* codes (reap_err.h) to them.
 *
 * rpc_code has the numeric values of gRPC's grpc_status_code (checked at compile time in
 * rpc_server.c), so handlers and clients use it without including any gRPC header.
 * Nothing here allocates, blocks or touches gRPC; every function is thread-safe.
 */
#ifndef REAP_RPC_STATUS_H
#define REAP_RPC_STATUS_H

typedef enum rpc_code {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16
} rpc_code;

#define RPC_CODE_MAX 16

/* The canonical upper-case name ("INVALID_ARGUMENT"); "UNKNOWN_CODE" outside 0..16. */
const char *rpc_code_name(int code);

/* Parse a canonical name (case-insensitive) into *out. Returns 0, or -1 if unknown. */
int rpc_code_parse(const char *name, rpc_code *out);

/* The gRPC code a handler failure with status `reap_status` (a REAP_E_* value, or
 * REAP_OK) is reported as:
 *   REAP_OK -> OK, REAP_E_INVALID -> INVALID_ARGUMENT, REAP_E_NOTFOUND -> NOT_FOUND,
 *   REAP_E_FORMAT, REAP_E_UNSUPPORTED, REAP_E_NUMERIC -> FAILED_PRECONDITION (the
 *   request is well formed but the files it names cannot be used),
 *   REAP_E_NOMEM -> RESOURCE_EXHAUSTED, REAP_E_CANCELLED -> CANCELLED,
 *   REAP_E_IO, REAP_E_DEVICE, REAP_E_INTERNAL -> INTERNAL, REAP_E_CONFLICT ->
 *   ALREADY_EXISTS, REAP_E_PRECONDITION -> FAILED_PRECONDITION, REAP_E_DENIED (a file
 *   outside the roots) -> PERMISSION_DENIED; any other value -> UNKNOWN.
 * Codes a REAP_E_* value cannot express (UNAUTHENTICATED, ...) are set explicitly by
 * handlers (rpc_call_error). */
rpc_code rpc_code_from_reap(int reap_status);

#endif

/* svc.h - helpers shared by the two services (reap-scorer serve, reap-pruner serve;
 * library reap_service): identity prefixes resolved against the store, root directories
 * from options, a small allocation pool for building nested protobuf-c responses, the
 * service log lines, and the start of a server (methods, signals, listeners, health,
 * the "port" lines). The daemon main that uses them is daemon.h.
 *
 * Thread rules: every function is thread-safe; a pool is used by one thread.
 */
#ifndef REAP_SVC_H
#define REAP_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "cli.h"
#include "rpc_path.h"
#include "rpc_server.h"
#include "rpc_status.h"
#include "store.h"

/* Parse an identity given as hex (either case): `digits` the full length (64 for
 * model/calib ids, 32 for run ids). Returns the number of hex digits (>= 8, <= digits)
 * and writes the lower-case text to out (digits + 1 bytes), or -1 when `text` is
 * empty, too short, too long or not hex. */
int svc_hex_prefix(const char *text, int digits, char *out);

/* Resolve a model id or unique prefix against the store's models (snap may be NULL).
 * Returns RPC_OK with *out; RPC_INVALID_ARGUMENT (malformed, ambiguous),
 * RPC_NOT_FOUND, RPC_INTERNAL (store error); message in err naming `field`. */
rpc_code svc_resolve_model(reap_store *s, reap_store_snap *snap, const char *field,
                           const char *text, reap_id *out, char *err, size_t errlen);

/* Resolve calibration ids or prefixes among the sets with statistics for `model`.
 * *out malloc'd [n] (free()); n == 0 gives *out NULL. Codes as svc_resolve_model;
 * a duplicate is RPC_INVALID_ARGUMENT. */
rpc_code svc_resolve_calibs(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const char *field, char *const *texts, size_t n, reap_id **out,
                            char *err, size_t errlen);

/* Resolve the directories of a cli list into roots (rpc_roots_init). Returns 0, or -1
 * with a message in err. */
int svc_roots(rpc_roots *r, const char *what, const cli_list *dirs, char *err,
              size_t errlen);

/* A list of allocations freed together (response building). */
typedef struct svc_pool {
    void **p;
    size_t n, cap;
    int failed;    /* an allocation failed: the response is incomplete */
} svc_pool;

void *svc_alloc(svc_pool *pool, size_t size);          /* zeroed; NULL on failure */
char *svc_strdup(svc_pool *pool, const char *s);       /* "" for NULL; NULL on failure */
char *svc_printf(svc_pool *pool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *svc_hex(svc_pool *pool, const uint8_t *bin, size_t n);
void svc_pool_free(svc_pool *pool);

/* Answer a unary call with msg, built from pool: RESOURCE_EXHAUSTED ("out of memory")
 * instead when an allocation of the pool failed (the response would be incomplete).
 * Returns what rpc_call_respond / rpc_call_error return. */
int svc_respond(rpc_call *call, const svc_pool *pool, const ProtobufCMessage *msg);

/* Register `n` methods, install the signal handlers, start listening, mark health ""
 * and `service` SERVING, and announce the bound ports on stdout ("port N", then
 * "health-port N" when a health-only port is configured; tests read these lines).
 * Returns REAP_OK or the failing rpc_server_* status (message in reap_err_msg()). */
int svc_start(rpc_server *srv, const char *service, const rpc_method *methods, size_t n);

/* One log line on stderr: "<prog>: <UTC time> <text>". */
void svc_log(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Log whether calls need the bearer token: "authentication: bearer token (health
 * exempt)" or "authentication: none (no --token or --token-file)". */
void svc_log_auth(const char *prog, const rpc_server *srv);

#endif

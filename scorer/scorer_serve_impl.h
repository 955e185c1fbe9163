/* scorer_serve_impl.h - private to `reap-scorer serve` (serve*.c): the service's state, shared
 * by the main (serve.c: options, the daemon description) and the handlers
 * (serve_score.c: Score and WatchRun; serve_runs.c: run records, GetRun, CancelRun,
 * ListRuns; serve_store.c: ListModels, GetStats).
 *
 * Thread rules: a scorer_svc is written by the main before the server starts and only
 * read after; the handlers run on the server's pool threads.
 */
#ifndef REAP_SCORER_SERVE_IMPL_H
#define REAP_SCORER_SERVE_IMPL_H

#include <stdint.h>

#include "backend.h"
#include "daemon.h"
#include "fsopen.h"
#include "rpc_path.h"
#include "rpc_server.h"
#include "run_manager.h"
#include "runs.h"

#define SCORER_PROG "reap-scorer serve"

typedef struct scorer_svc {
    svc_daemon d;                    /* d.store, d.srv: the daemon's (daemon.h) */
    reap_rm *rm;
    rpc_roots model_roots, calib_roots;
    reap_roots model_fs, calib_fs;   /* the same directories, for the model code's reads */
    const reap_backend_i *backend;   /* default for requests that name none */
    long seq_len, max_samples, batch;
    char host[256];
} scorer_svc;

/* The gRPC code of a failed call of the run manager or the library: the run manager's
 * own statuses (run_manager.h: BUSY -> RESOURCE_EXHAUSTED, EXISTS -> ALREADY_EXISTS,
 * STOPPING -> UNAVAILABLE), else rpc_code_from_reap. */
rpc_code scorer_code(int status);

/* The RunState (reap_rm_state) of a store record of a run this server does not hold in
 * memory: a "running" record of a process on this host that is gone is INTERRUPTED. */
int scorer_run_state(const scorer_svc *S, const reap_run_info *r);

/* The run a call's request names (`run_id`: 32 hex digits or a unique prefix of >= 8),
 * among the store's runs and the manager's jobs (queued runs have no store record yet).
 * Returns 0 with id set; otherwise the call has been answered with the error
 * (INVALID_ARGUMENT, NOT_FOUND, INTERNAL) and the return is rpc_call_error's, non-zero,
 * for the handler to return. */
int scorer_call_run(rpc_call *call, scorer_svc *S, const char *run_id, uint8_t id[16]);

/* The handlers (rpc_handler_fn, ud the scorer_svc). */
int scorer_serve_score(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_watch(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_get_run(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_cancel(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_list_runs(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_list_models(rpc_call *call, const ProtobufCMessage *req, void *ud);
int scorer_serve_get_stats(rpc_call *call, const ProtobufCMessage *req, void *ud);

#endif

/* pruner_serve_impl.h - private to `reap-pruner serve` (serve*.c): the service's state, shared
 * by the main (serve.c: options, keys, the daemon description) and the handlers
 * (serve_keepset.c: request parameters, statistics, ComputeKeepSet; serve_prune.c:
 * Prune; serve_verify.c: Verify).
 *
 * Thread rules: a pruner_svc is written by the main before the server starts and only
 * read after, except active[] (under mu); the handlers run on the server's pool threads.
 */
#ifndef REAP_PRUNER_SERVE_IMPL_H
#define REAP_PRUNER_SERVE_IMPL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "fsopen.h"
#include "keepset.h"
#include "minisign.h"
#include "outdir.h"
#include "reap.pb-c.h"
#include "rpc_path.h"
#include "rpc_server.h"
#include "stats_store.h"

#define PRUNER_PROG "reap-pruner serve"

typedef struct pruner_svc {
    svc_daemon d;                    /* d.store, d.srv: the daemon's (daemon.h) */
    rpc_roots model_roots, output_roots, verify_roots;
    reap_roots model_fs, verify_fs;  /* the same directories, for the library's reads */
    reap_sign_key key;
    int have_key;
    reap_pub_key pub;
    int have_pub;
    const char *ratio_default;       /* text, may be NULL */
    reap_criterion criterion_default;
    long threads, max_prunes;
    int no_space_check;              /* --no-space-check */
    pthread_mutex_t mu;              /* guards active[] */
    char **active;                   /* output paths being written */
    int n_active;
} pruner_svc;

/* PruneParams -> keep options. ratio / n_prune count as given when non-zero or when
 * their *_set flag is (so an explicit 0 prunes nothing); neither given: the server's
 * default ratio. Malformed (both given, ratio outside [0, 1) or NaN, no default, an
 * unknown criterion): INVALID_ARGUMENT with err set. n_prune against the model's
 * experts is checked once the statistics are known (pruner_check_n_prune). */
rpc_code pruner_parse_params(const pruner_svc *S, const Reap__V1__PruneParams *p,
                             reap_keep_opts *ko, char *err, size_t errlen);

/* Experts removed per layer of this model (keepset.h: reap_keep_n_prune, the one rule):
 * a well-formed request the model does not allow (the client may not know E: n_prune
 * not below E, fewer than top_k left) is FAILED_PRECONDITION. Returns RPC_OK with
 * *n_prune set, or that code with err set. */
rpc_code pruner_check_n_prune(const reap_keep_opts *ko, const reap_layer_stats *st, int n_st,
                              int *n_prune, char *err, size_t errlen);

/* The merged statistics of a model over the chosen calibration sets (all complete ones
 * when none is given), read from one snapshot. *used gets the ids merged. Returns RPC_OK,
 * or the code with err set. Free *st with pruner_free_stats, *used with free(). */
rpc_code pruner_load_stats(pruner_svc *S, const reap_id *model, char *const *calib_texts,
                           size_t n_calib, reap_layer_stats **st, int *n_st, reap_id **used,
                           int *n_used, char *err, size_t errlen);
void pruner_free_stats(reap_layer_stats *st, int n);

/* Leftovers of killed prunes (outdir.h: reap_leftover_fn), in the log. */
void pruner_log_leftover(void *ud, const char *path, uint64_t bytes, reap_leftover_action a);

/* The handlers (rpc_handler_fn, ud the pruner_svc). */
int pruner_serve_keepset(rpc_call *call, const ProtobufCMessage *req, void *ud);
int pruner_serve_prune(rpc_call *call, const ProtobufCMessage *req, void *ud);
int pruner_serve_verify(rpc_call *call, const ProtobufCMessage *req, void *ud);

#endif

/* engine_hidden.h - run a checkpoint over token rows and keep what verification needs:
 * the final hidden states and, per MoE layer, which experts every valid token was
 * routed to. Used by the pruner's functional --verify (original vs pruned model).
 *
 * Dimension legend: T = n_rows * seq_len positions, Nv valid positions (mask 1),
 * H hidden, E experts, K experts per token.
 *
 * Routes: the backend reports each MoE layer's routes itself, through its observer
 * (reap_backend_opts.on_routes, backend.h), so the recorded routes are exactly the ones
 * the backend used, on every backend, at no extra compute. The final RMSNorm is applied on
 * the host copy of the last layer's output (cpu_rmsnorm; the backend interface covers the
 * decoder layers only).
 *
 * Thread rules: one call runs on the calling thread (plus the backend's workers).
 */
#ifndef REAP_ENGINE_HIDDEN_H
#define REAP_ENGINE_HIDDEN_H

#include <stdint.h>

#include "backend.h"
#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "engine.h"

typedef struct reap_probe_opts {
    const reap_backend_i *backend;  /* NULL: CPU */
    reap_backend_opts backend_opts;
    int want_routes;                /* 1: record routes at every MoE layer (this sets
                                       backend_opts.on_routes; one given there is
                                       replaced) */
    reap_hidden_cb on_layer;        /* optional: hidden states [T, H] leaving every layer
                                       (the last one too), before the final norm */
    void *ud;
} reap_probe_opts;

typedef struct reap_probe {
    int64_t T;
    int H;
    float *hidden;        /* [T, H] leaving the last layer, after the final RMSNorm
                             (model.norm) when the checkpoint has it */
    int final_norm;       /* 1: the final norm was applied */
    int64_t n_valid;      /* Nv */
    int64_t *valid;       /* [Nv] positions with mask 1, ascending */
    int n_moe;            /* MoE layers (want_routes) */
    int K;
    int *moe_layer;       /* [n_moe] decoder layer index */
    int32_t *routes;      /* [n_moe, Nv, K] expert ids, ascending within a token */
} reap_probe;

/* Run the whole model over `rows`. On success fill *out (free with reap_probe_free).
 * Returns REAP_OK or the first error (REAP_E_NOMEM, REAP_E_NUMERIC, backend and
 * checkpoint errors; the message names the layer and tensor). */
int reap_engine_probe(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_probe_opts *opts, reap_probe *out);

void reap_probe_free(reap_probe *p);

#endif

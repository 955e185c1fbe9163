/* keepset.h - which experts of each MoE layer survive a prune.
 *
 * Dimension legend: E experts per MoE layer, E' = E - n_prune experts kept, K experts
 * per token, L MoE layers.
 *
 * From per-layer REAP statistics (any source: a stats JSON file, the store) and a
 * criterion, every layer drops the same number n_prune of experts: floor(E * ratio), or
 * an absolute count. The experts with the lowest scores go; among equal scores the
 * higher expert index goes first (ties keep the lower index). An expert never routed
 * scores 0 under every criterion. Kept ids are listed in ascending original order,
 * which is also their new numbering 0..E'-1.
 *
 * Super-expert protection (optional, as in the reference implementation): experts whose
 * max activation exceeds max(99.5th percentile of max_act over all layers x routed
 * experts (linear interpolation), global max / 10) are never pruned, but only in layers
 * whose index is below floor(0.75 * n_layers) (the first 75% of the model's decoder
 * layers; n_layers from the config, else 1 + the largest layer id in the statistics).
 *
 * Refusals (REAP_E_PRECONDITION, reported over RPC as FAILED_PRECONDITION; message
 * prefixed "precondition: "): no statistics, statistics of one layer given twice, a MoE
 * layer of the config without statistics, statistics of a layer that is not a MoE layer
 * of the config, statistics whose E or K disagree with the config or between layers,
 * n_prune not below E, a prune that leaves fewer than K experts, more protected experts
 * in a layer than E'. The criterion ean_ca is refused earlier, by name
 * (reap_criterion_from_name: REAP_E_UNSUPPORTED; these statistics do not record the sum
 * of expert outputs).
 *
 * Thread rules: pure functions; a keep set is immutable after compute.
 */
#ifndef REAP_KEEPSET_H
#define REAP_KEEPSET_H

#include <stdint.h>

#include "config.h"
#include "stats.h"

/* Criteria by name: reap (default), frequency, ean_sum, ean_mean, weighted_ean_sum,
 * weighted_frequency, max_activations. "ean_ca" is recognised and refused
 * (REAP_E_UNSUPPORTED: it needs per-expert output sums the statistics lack).
 * Returns REAP_OK, REAP_E_INVALID (unknown name), REAP_E_UNSUPPORTED. */
int reap_criterion_from_name(const char *name, reap_criterion *out);
const char *reap_criterion_name(reap_criterion c);

typedef struct reap_keep_opts {
    reap_criterion criterion;
    double ratio;             /* fraction of experts removed, 0 <= ratio < 1; used when
                                 n_prune < 0 */
    int64_t n_prune;          /* experts removed per layer; < 0: from ratio
                                 (reap_keep_n_prune) */
    int protect_super_experts;
    int balance_modalities;   /* 1: score each expert by the mean over the layer's present
                                 modalities of its per-modality REAP score
                                 (reap_layer_stats_balanced_score); criterion reap only */
} reap_keep_opts;

typedef struct reap_keep_layer {
    int layer;                /* decoder layer index */
    int *keep;                /* [E'] kept original ids, ascending (= new order) */
    double *scores;           /* [E] criterion score of every original expert */
    uint8_t *is_super;        /* [E] 1: protected super expert */
    int n_super;
} reap_keep_layer;

typedef struct reap_keepset {
    reap_criterion criterion;
    double ratio;             /* as requested (-1 when n_prune was given) */
    int n_experts;            /* E */
    int n_prune;              /* E - E' */
    int n_keep;               /* E' */
    int top_k;                /* K */
    int protect_super_experts;
    int balance_modalities;   /* as requested */
    double super_threshold;   /* 0 when protection is off */
    int n_layers;             /* MoE layers, ascending layer index */
    reap_keep_layer *layers;  /* [n_layers] */
} reap_keepset;

/* Compute the keep set of every MoE layer. `cfg` (may be NULL) is the model the keep set
 * is for: every MoE layer of it must have statistics, E and K must agree, and
 * statistics of layers that are not MoE layers there are refused. `stats` [n] in any
 * order; only read. On success fill *out (free with reap_keepset_free); on failure *out
 * is zeroed.
 * Returns REAP_OK; REAP_E_PRECONDITION (the refusals above; the message names the layer);
 * REAP_E_INVALID (a ratio outside [0, 1) as reap_keep_opts_check, or a non-finite
 * criterion score, naming the layer and expert); REAP_E_NOMEM. */
int reap_keepset_compute(const reap_config *cfg, const reap_layer_stats *stats, int n,
                         const reap_keep_opts *opts, reap_keepset *out);

void reap_keepset_free(reap_keepset *ks);

/* The one rule for how many experts a prune removes; every caller (keep sets, the
 * pruner service's events, tables) uses these two functions.
 *
 * reap_keep_opts_check: the options alone, before the model is known: with n_prune < 0
 * the ratio must lie in [0, 1) (NaN refused); balance_modalities only with criterion
 * reap. Returns REAP_OK or REAP_E_INVALID ("ratio R is outside [0, 1) ...", R as given;
 * "balance_modalities needs criterion reap (got C)").
 *
 * reap_keep_n_prune: experts removed per layer from a layer of E experts routed K per
 * token: opts->n_prune when >= 0, else floor(E * ratio + 1e-9) (the 1e-9 keeps ratios
 * such as 0.29 whose product lands just below an integer in binary floating point from
 * losing an expert: E = 100, ratio 0.29 -> 29). *out receives it on REAP_OK.
 * Returns REAP_OK; REAP_E_INVALID (as reap_keep_opts_check); REAP_E_PRECONDITION
 * (message prefixed "precondition: ") when n_prune >= E ("n_prune N is not below the E
 * experts per layer", N as given) or the prune leaves fewer than K experts. */
int reap_keep_opts_check(const reap_keep_opts *opts);
int reap_keep_n_prune(const reap_keep_opts *opts, int n_experts, int top_k, int *out);

/* The keep-set entry of decoder layer `layer`, NULL if it is not a pruned MoE layer. */
const reap_keep_layer *reap_keepset_find(const reap_keepset *ks, int layer);

/* New index of original expert e in `kl` (binary search), -1 if it was pruned. */
int reap_keep_new_index(const reap_keepset *ks, const reap_keep_layer *kl, int e);

/* The keep set as JSON, the one shape every output uses (reapctl keepset, the manifest's
 * keep_sets, reap_metadata.json's experts_to_keep): an object {"<layer>": [kept original
 * ids ascending], ...} with the MoE layers in ascending order, keys the decimal layer
 * index. A new reference (json_decref), or NULL when out of memory. */
struct json_t *reap_keepset_json(const reap_keepset *ks);

/* Options from text (command-line flags, environment, RPC fields): exactly one of
 * ratio ("0.4") and n_prune ("51") must be given (the other NULL or ""); criterion NULL
 * or "" means reap. Returns REAP_OK, REAP_E_INVALID (the message names the field),
 * REAP_E_UNSUPPORTED (ean_ca). */
int reap_keep_opts_parse(const char *ratio, const char *n_prune, const char *criterion,
                         int protect_super_experts, reap_keep_opts *out);

#endif

/* stats.h - per-layer REAP statistics (design section 3) and the scores derived from them.
 *
 * For one MoE layer with E experts, over valid calibration tokens t routed to expert j
 * (j among the top-k of the router logits):
 *   count[j]          number of routed tokens
 *   sum_gate_norm[j]  sum g_j(t) * ||f_j(x_t)||_2      (REAP numerator)
 *   sum_norm[j]       sum ||f_j(x_t)||_2
 *   sum_gate[j]       sum g_j(t)
 *   max_act[j]        signed max over routed tokens and hidden dims of f_j(x_t);
 *                     -INFINITY while count[j] == 0
 * g_j(t) is the routing weight the model uses (softmax over all logits, renormalised
 * over the top-k when norm_topk_prob); f_j is the expert output before gating.
 * Statistics from disjoint token sets merge exactly (sums add, max takes max).
 */
#ifndef REAP_STATS_H
#define REAP_STATS_H

#include <stdint.h>

typedef struct reap_layer_stats {
    int layer;
    int n_experts;          /* E */
    int top_k;              /* K */
    int64_t tokens;         /* valid tokens seen by this layer */
    int64_t *count;         /* [E] */
    double *sum_gate_norm;  /* [E] */
    double *sum_norm;       /* [E] */
    double *sum_gate;       /* [E] */
    float *max_act;         /* [E] */
} reap_layer_stats;

typedef enum reap_criterion {
    REAP_CRIT_REAP,              /* sum_gate_norm / count */
    REAP_CRIT_FREQUENCY,         /* count */
    REAP_CRIT_EAN_SUM,           /* sum_norm */
    REAP_CRIT_EAN_MEAN,          /* sum_norm / count */
    REAP_CRIT_WEIGHTED_EAN_SUM,  /* sum_gate_norm */
    REAP_CRIT_WEIGHTED_FREQUENCY,/* sum_gate */
    REAP_CRIT_MAX_ACTIVATIONS    /* max_act */
} reap_criterion;

/* Allocate zeroed statistics (max_act = -INFINITY). REAP_OK or REAP_E_NOMEM. */
int reap_layer_stats_init(reap_layer_stats *s, int layer, int n_experts, int top_k);
void reap_layer_stats_free(reap_layer_stats *s);
/* Reset to the empty state without reallocating. */
void reap_layer_stats_zero(reap_layer_stats *s);
/* dst += src (same layer and E, else REAP_E_INVALID). */
int reap_layer_stats_merge(reap_layer_stats *dst, const reap_layer_stats *src);
/* Score of expert e; 0 for an expert never routed. */
double reap_layer_stats_score(const reap_layer_stats *s, int e, reap_criterion c);

/* BLAKE2b-256 over a canonical little-endian encoding of the statistics, layers in
 * ascending order ("reap-stats/1" tag; per layer: layer, E, K (u32), tokens (u64); per
 * expert: count (u64), sum_gate_norm, sum_norm, sum_gate (f64 bits), max_act (f32
 * bits)). The same records give the same digest whatever their source or order.
 * hex: 65 bytes. Returns REAP_OK or REAP_E_NOMEM. */
int reap_stats_digest(const reap_layer_stats *stats, int n, char hex[65]);

#endif

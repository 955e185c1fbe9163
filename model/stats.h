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
 *
 * By modality (Qwen3-VL image calibration): besides the totals, a layer keeps the same
 * five statistics for its text tokens and for its image tokens (a slot is an image token
 * when it lies in one of the rows' image spans, calib.h; vision_start/vision_end are
 * text). Both sets are stored explicitly, because the max of the text tokens cannot be
 * recovered from the totals and the image set. The rule that keeps text-only data
 * unchanged: the modality sets carry information only when the layer saw image tokens
 * (mod[REAP_MOD_IMAGE].tokens > 0, reap_layer_stats_has_image); otherwise the text set
 * IS the totals and the image set is empty, whatever the mod arrays hold. Readers use
 * reap_layer_stats_modality, which applies the rule; writers (store records, JSON, the
 * digest) write the modality sets only for layers with image tokens, so text-only
 * records, files and digests are the same as before modalities existed.
 */
#ifndef REAP_STATS_H
#define REAP_STATS_H

#include <stdint.h>

typedef enum reap_modality {
    REAP_MOD_TEXT = 0,
    REAP_MOD_IMAGE = 1,
    REAP_N_MODALITIES = 2
} reap_modality;

/* The statistics of one modality's tokens in a layer (the same fields as the totals). */
typedef struct reap_modality_stats {
    int64_t tokens;         /* valid tokens of this modality seen by the layer */
    int64_t *count;         /* [E] */
    double *sum_gate_norm;  /* [E] */
    double *sum_norm;       /* [E] */
    double *sum_gate;       /* [E] */
    float *max_act;         /* [E]; -INFINITY while count[e] == 0 */
} reap_modality_stats;

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
    /* Per modality, owned, allocated by reap_layer_stats_init; meaningful only when
     * reap_layer_stats_has_image (see the rule above). The totals are the sums (max) of
     * the two sets. */
    reap_modality_stats mod[REAP_N_MODALITIES];
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
/* dst += src (same layer and E, else REAP_E_INVALID). Exact per modality too: when either
 * side has image tokens, dst's text set is first made explicit (copied from its totals
 * if dst had none), then sums add and max takes max, per set. */
int reap_layer_stats_merge(reap_layer_stats *dst, const reap_layer_stats *src);
/* 1 when the layer saw image tokens (mod[REAP_MOD_IMAGE].tokens > 0), else 0. */
int reap_layer_stats_has_image(const reap_layer_stats *s);
/* A read-only view of modality m's statistics in *out (pointers into s, valid while s
 * is): for a layer without image tokens, TEXT is the totals and IMAGE is s's (zero)
 * image set with tokens 0. */
void reap_layer_stats_modality(const reap_layer_stats *s, reap_modality m,
                               reap_modality_stats *out);
/* The modality-balanced REAP score of expert e: the mean, over the modalities present in
 * the layer (the layer saw tokens of that modality: view tokens > 0), of the expert's
 * REAP score in that modality (sum_gate_norm / count there; 0 when the expert got no
 * token of it). For a layer without image tokens it equals the REAP score of the
 * totals, bit for bit. 0 for a layer with no tokens at all. */
double reap_layer_stats_balanced_score(const reap_layer_stats *s, int e);
/* Score of expert e in a modality view (same criteria as reap_layer_stats_score); 0 for
 * an expert with no tokens of that modality. */
double reap_modality_stats_score(const reap_modality_stats *v, int e, reap_criterion c);
/* Score of expert e; 0 for an expert never routed. */
double reap_layer_stats_score(const reap_layer_stats *s, int e, reap_criterion c);

/* BLAKE2b-256 over a canonical little-endian encoding of the statistics, layers in
 * ascending order ("reap-stats/1" tag; per layer: layer, E, K (u32), tokens (u64); per
 * expert: count (u64), sum_gate_norm, sum_norm, sum_gate (f64 bits), max_act (f32
 * bits); then, only for a layer with image tokens, "modalities" and for text then image:
 * tokens (u64) and the same per-expert fields; a text-only layer hashes as before
 * modalities existed). The same records give the same digest whatever their source or
 * order. hex: 65 bytes. Returns REAP_OK or REAP_E_NOMEM. */
int reap_stats_digest(const reap_layer_stats *stats, int n, char hex[65]);

#endif

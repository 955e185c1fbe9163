/* stats.c - REAP statistics of one MoE layer: allocation, merging, derived scores. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

int reap_layer_stats_init(reap_layer_stats *s, int layer, int n_experts, int top_k)
{
    memset(s, 0, sizeof *s);
    if (n_experts <= 0)
        return reap_err_set(REAP_E_INVALID, "layer %d: %d experts", layer, n_experts);
    s->layer = layer;
    s->n_experts = n_experts;
    s->top_k = top_k;
    s->count = calloc((size_t)n_experts, sizeof *s->count);
    s->sum_gate_norm = calloc((size_t)n_experts, sizeof *s->sum_gate_norm);
    s->sum_norm = calloc((size_t)n_experts, sizeof *s->sum_norm);
    s->sum_gate = calloc((size_t)n_experts, sizeof *s->sum_gate);
    s->max_act = calloc((size_t)n_experts, sizeof *s->max_act);
    if (!s->count || !s->sum_gate_norm || !s->sum_norm || !s->sum_gate || !s->max_act) {
        reap_layer_stats_free(s);
        return reap_err_set(REAP_E_NOMEM, "layer %d: statistics allocation", layer);
    }
    reap_layer_stats_zero(s);
    return REAP_OK;
}

void reap_layer_stats_free(reap_layer_stats *s)
{
    if (!s)
        return;
    free(s->count);
    free(s->sum_gate_norm);
    free(s->sum_norm);
    free(s->sum_gate);
    free(s->max_act);
    memset(s, 0, sizeof *s);
}

void reap_layer_stats_zero(reap_layer_stats *s)
{
    size_t E = (size_t)s->n_experts;
    s->tokens = 0;
    memset(s->count, 0, E * sizeof *s->count);
    memset(s->sum_gate_norm, 0, E * sizeof *s->sum_gate_norm);
    memset(s->sum_norm, 0, E * sizeof *s->sum_norm);
    memset(s->sum_gate, 0, E * sizeof *s->sum_gate);
    for (size_t e = 0; e < E; e++)
        s->max_act[e] = -INFINITY;
}

int reap_layer_stats_merge(reap_layer_stats *dst, const reap_layer_stats *src)
{
    if (dst->layer != src->layer || dst->n_experts != src->n_experts ||
        dst->top_k != src->top_k)
        return reap_err_set(REAP_E_INVALID,
                            "cannot merge statistics of layer %d (E=%d, K=%d) into "
                            "layer %d (E=%d, K=%d)",
                            src->layer, src->n_experts, src->top_k, dst->layer,
                            dst->n_experts, dst->top_k);
    dst->tokens += src->tokens;
    for (int e = 0; e < dst->n_experts; e++) {
        dst->count[e] += src->count[e];
        dst->sum_gate_norm[e] += src->sum_gate_norm[e];
        dst->sum_norm[e] += src->sum_norm[e];
        dst->sum_gate[e] += src->sum_gate[e];
        if (src->max_act[e] > dst->max_act[e])
            dst->max_act[e] = src->max_act[e];
    }
    return REAP_OK;
}

double reap_layer_stats_score(const reap_layer_stats *s, int e, reap_criterion c)
{
    if (s->count[e] == 0)
        return 0.0;
    switch (c) {
    case REAP_CRIT_REAP: return s->sum_gate_norm[e] / (double)s->count[e];
    case REAP_CRIT_FREQUENCY: return (double)s->count[e];
    case REAP_CRIT_EAN_SUM: return s->sum_norm[e];
    case REAP_CRIT_EAN_MEAN: return s->sum_norm[e] / (double)s->count[e];
    case REAP_CRIT_WEIGHTED_EAN_SUM: return s->sum_gate_norm[e];
    case REAP_CRIT_WEIGHTED_FREQUENCY: return s->sum_gate[e];
    case REAP_CRIT_MAX_ACTIVATIONS: return (double)s->max_act[e];
    }
    return 0.0;
}

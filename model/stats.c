/* stats.c - REAP statistics of one MoE layer: allocation, merging, derived scores, and
 * the per-modality sets (text / image) with the rule that a layer without image tokens
 * has its totals as its text set (stats.h). */
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
    int ok = s->count && s->sum_gate_norm && s->sum_norm && s->sum_gate && s->max_act;
    for (int m = 0; m < REAP_N_MODALITIES; m++) {
        reap_modality_stats *v = &s->mod[m];
        v->count = calloc((size_t)n_experts, sizeof *v->count);
        v->sum_gate_norm = calloc((size_t)n_experts, sizeof *v->sum_gate_norm);
        v->sum_norm = calloc((size_t)n_experts, sizeof *v->sum_norm);
        v->sum_gate = calloc((size_t)n_experts, sizeof *v->sum_gate);
        v->max_act = calloc((size_t)n_experts, sizeof *v->max_act);
        ok = ok && v->count && v->sum_gate_norm && v->sum_norm && v->sum_gate && v->max_act;
    }
    if (!ok) {
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
    for (int m = 0; m < REAP_N_MODALITIES; m++) {
        free(s->mod[m].count);
        free(s->mod[m].sum_gate_norm);
        free(s->mod[m].sum_norm);
        free(s->mod[m].sum_gate);
        free(s->mod[m].max_act);
    }
    memset(s, 0, sizeof *s);
}

static void modality_zero(reap_modality_stats *v, size_t E)
{
    v->tokens = 0;
    memset(v->count, 0, E * sizeof *v->count);
    memset(v->sum_gate_norm, 0, E * sizeof *v->sum_gate_norm);
    memset(v->sum_norm, 0, E * sizeof *v->sum_norm);
    memset(v->sum_gate, 0, E * sizeof *v->sum_gate);
    for (size_t e = 0; e < E; e++)
        v->max_act[e] = -INFINITY;
}

/* The totals as a modality view (pointers into s). */
static reap_modality_stats totals_view(const reap_layer_stats *s)
{
    reap_modality_stats v = {s->tokens, s->count, s->sum_gate_norm, s->sum_norm,
                             s->sum_gate, s->max_act};
    return v;
}

/* dst += src, over E experts. */
static void modality_add(reap_modality_stats *dst, const reap_modality_stats *src, int E)
{
    dst->tokens += src->tokens;
    for (int e = 0; e < E; e++) {
        dst->count[e] += src->count[e];
        dst->sum_gate_norm[e] += src->sum_gate_norm[e];
        dst->sum_norm[e] += src->sum_norm[e];
        dst->sum_gate[e] += src->sum_gate[e];
        if (src->max_act[e] > dst->max_act[e])
            dst->max_act[e] = src->max_act[e];
    }
}

void reap_layer_stats_zero(reap_layer_stats *s)
{
    reap_modality_stats t = totals_view(s);
    modality_zero(&t, (size_t)s->n_experts);
    s->tokens = 0;
    for (int m = 0; m < REAP_N_MODALITIES; m++)
        if (s->mod[m].count)
            modality_zero(&s->mod[m], (size_t)s->n_experts);
}

int reap_layer_stats_has_image(const reap_layer_stats *s)
{
    return s->mod[REAP_MOD_IMAGE].count && s->mod[REAP_MOD_IMAGE].tokens > 0;
}

void reap_layer_stats_modality(const reap_layer_stats *s, reap_modality m,
                               reap_modality_stats *out)
{
    if (reap_layer_stats_has_image(s)) {
        *out = s->mod[m];
        return;
    }
    if (m == REAP_MOD_TEXT) {
        *out = totals_view(s);
        return;
    }
    *out = s->mod[REAP_MOD_IMAGE];
    out->tokens = 0;
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
    if (reap_layer_stats_has_image(src) || reap_layer_stats_has_image(dst)) {
        const int E = dst->n_experts;
        reap_modality_stats *dt = &dst->mod[REAP_MOD_TEXT], st;
        if (!reap_layer_stats_has_image(dst)) {
            /* make dst's text set explicit before its totals change */
            const reap_modality_stats t = totals_view(dst);
            modality_zero(dt, (size_t)E);
            modality_add(dt, &t, E);
            modality_zero(&dst->mod[REAP_MOD_IMAGE], (size_t)E);
        }
        reap_layer_stats_modality(src, REAP_MOD_TEXT, &st);
        modality_add(dt, &st, E);
        modality_add(&dst->mod[REAP_MOD_IMAGE], &src->mod[REAP_MOD_IMAGE], E);
    }
    reap_modality_stats dt = totals_view(dst);
    const reap_modality_stats stt = totals_view(src);
    modality_add(&dt, &stt, dst->n_experts);
    dst->tokens = dt.tokens;
    return REAP_OK;
}

double reap_layer_stats_score(const reap_layer_stats *s, int e, reap_criterion c)
{
    const reap_modality_stats v = totals_view(s);
    return reap_modality_stats_score(&v, e, c);
}

double reap_modality_stats_score(const reap_modality_stats *s, int e, reap_criterion c)
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

double reap_layer_stats_balanced_score(const reap_layer_stats *s, int e)
{
    double sum = 0.0;
    int present = 0;
    for (int m = 0; m < REAP_N_MODALITIES; m++) {
        reap_modality_stats v;
        reap_layer_stats_modality(s, (reap_modality)m, &v);
        if (v.tokens <= 0)
            continue;
        sum += reap_modality_stats_score(&v, e, REAP_CRIT_REAP);
        present++;
    }
    return present > 0 ? sum / present : 0.0;
}

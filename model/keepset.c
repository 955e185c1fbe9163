/* keepset.c - per-layer keep sets from REAP statistics (see keepset.h).
 *
 * Per layer: score every expert under the criterion, mark protected super experts,
 * order the experts by (protected last, score ascending, index descending) and drop the
 * first n_prune; the rest, sorted ascending, are the keep set. */
#include "keepset.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

static const struct {
    const char *name;
    reap_criterion c;
} crit_names[] = {
    {"reap", REAP_CRIT_REAP},
    {"frequency", REAP_CRIT_FREQUENCY},
    {"ean_sum", REAP_CRIT_EAN_SUM},
    {"ean_mean", REAP_CRIT_EAN_MEAN},
    {"weighted_ean_sum", REAP_CRIT_WEIGHTED_EAN_SUM},
    {"weighted_frequency", REAP_CRIT_WEIGHTED_FREQUENCY},
    {"max_activations", REAP_CRIT_MAX_ACTIVATIONS},
};

#define N_CRIT (sizeof crit_names / sizeof crit_names[0])

int reap_criterion_from_name(const char *name, reap_criterion *out)
{
    for (size_t i = 0; i < N_CRIT; i++)
        if (name && !strcmp(name, crit_names[i].name)) {
            *out = crit_names[i].c;
            return REAP_OK;
        }
    if (name && !strcmp(name, "ean_ca"))
        return reap_err_set(REAP_E_UNSUPPORTED,
                            "criterion ean_ca needs the per-expert sums of expert outputs, "
                            "which these statistics do not record");
    return reap_err_set(REAP_E_INVALID,
                        "unknown criterion '%s' (reap, frequency, ean_sum, ean_mean, "
                        "weighted_ean_sum, weighted_frequency, max_activations)",
                        name ? name : "(null)");
}

const char *reap_criterion_name(reap_criterion c)
{
    for (size_t i = 0; i < N_CRIT; i++)
        if (crit_names[i].c == c)
            return crit_names[i].name;
    return "?";
}

void reap_keepset_free(reap_keepset *ks)
{
    if (!ks)
        return;
    for (int i = 0; i < ks->n_layers && ks->layers; i++) {
        free(ks->layers[i].keep);
        free(ks->layers[i].scores);
        free(ks->layers[i].is_super);
    }
    free(ks->layers);
    memset(ks, 0, sizeof *ks);
}

const reap_keep_layer *reap_keepset_find(const reap_keepset *ks, int layer)
{
    int lo = 0, hi = ks->n_layers;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ks->layers[mid].layer == layer)
            return &ks->layers[mid];
        if (ks->layers[mid].layer < layer)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int reap_keep_new_index(const reap_keepset *ks, const reap_keep_layer *kl, int e)
{
    int lo = 0, hi = ks->n_keep;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (kl->keep[mid] == e)
            return mid;
        if (kl->keep[mid] < e)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_layer_ptr(const void *a, const void *b)
{
    const reap_layer_stats *x = *(const reap_layer_stats *const *)a;
    const reap_layer_stats *y = *(const reap_layer_stats *const *)b;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

/* Drop order: protected experts last; lower score first; among equal scores the higher
 * index first (so ties keep the lower index). */
typedef struct {
    double score;
    int index;
    int prot;
} rank_entry;

static int cmp_rank(const void *a, const void *b)
{
    const rank_entry *x = a, *y = b;
    if (x->prot != y->prot)
        return x->prot - y->prot;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return y->index - x->index;
}

/* max(99.5th percentile (linear interpolation) of the finite max_act values, max / 10);
 * +INFINITY (nothing protected) when no expert was ever routed. */
static int super_threshold(const reap_layer_stats *const *st, int n, double *out)
{
    size_t cnt = 0, k = 0;
    for (int i = 0; i < n; i++)
        for (int e = 0; e < st[i]->n_experts; e++)
            cnt += st[i]->count[e] > 0 && isfinite(st[i]->max_act[e]);
    *out = INFINITY;
    if (!cnt)
        return REAP_OK;
    double *v = malloc(cnt * sizeof *v);
    if (!v)
        return reap_err_set(REAP_E_NOMEM, "keep set: super-expert threshold");
    for (int i = 0; i < n; i++)
        for (int e = 0; e < st[i]->n_experts; e++)
            if (st[i]->count[e] > 0 && isfinite(st[i]->max_act[e]))
                v[k++] = st[i]->max_act[e];
    qsort(v, cnt, sizeof *v, cmp_double);
    double pos = 0.995 * (double)(cnt - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < cnt ? lo + 1 : lo;
    double pct = v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
    double gmax = v[cnt - 1];
    *out = fmax(pct, gmax / 10.0);
    free(v);
    return REAP_OK;
}

#define PRECOND "precondition: "

int reap_keepset_compute(const reap_config *cfg, const reap_layer_stats *stats, int n,
                         const reap_keep_opts *opts, reap_keepset *out)
{
    int rc = REAP_OK;
    const reap_layer_stats **st = NULL;
    rank_entry *rank = NULL;
    memset(out, 0, sizeof *out);

    if (!stats || n <= 0)
        return reap_err_set(REAP_E_PRECONDITION, PRECOND "no statistics: score the model first");
    st = malloc((size_t)n * sizeof *st);
    if (!st)
        return reap_err_set(REAP_E_NOMEM, "keep set: out of memory");
    for (int i = 0; i < n; i++)
        st[i] = &stats[i];
    qsort(st, (size_t)n, sizeof *st, cmp_layer_ptr);

    const int E = st[0]->n_experts, K = st[0]->top_k;
    for (int i = 0; i < n; i++) {
        if (i && st[i]->layer == st[i - 1]->layer) {
            rc = reap_err_set(REAP_E_PRECONDITION, PRECOND "statistics of layer %d given twice",
                              st[i]->layer);
            goto fail;
        }
        if (st[i]->n_experts != E || st[i]->top_k != K) {
            rc = reap_err_set(REAP_E_PRECONDITION,
                              PRECOND "layer %d has E=%d K=%d but layer %d has E=%d K=%d: "
                              "every layer must have the same expert count",
                              st[i]->layer, st[i]->n_experts, st[i]->top_k, st[0]->layer, E, K);
            goto fail;
        }
    }
    int n_model_layers = st[n - 1]->layer + 1;
    if (cfg) {
        n_model_layers = cfg->n_layers;
        if (cfg->n_experts != E || cfg->n_experts_used != K) {
            rc = reap_err_set(REAP_E_PRECONDITION,
                              PRECOND "statistics have E=%d K=%d but the model has "
                              "num_experts %d, num_experts_per_tok %d",
                              E, K, cfg->n_experts, cfg->n_experts_used);
            goto fail;
        }
        int j = 0;
        for (int L = 0; L < cfg->n_layers; L++) {
            int have = j < n && st[j]->layer == L;
            int moe = reap_config_layer_is_moe(cfg, L);
            if (moe && !have) {
                rc = reap_err_set(REAP_E_PRECONDITION,
                                  PRECOND "MoE layer %d has no statistics (score all %d "
                                  "MoE layers first)",
                                  L, reap_config_n_moe_layers(cfg));
                goto fail;
            }
            if (!moe && have) {
                rc = reap_err_set(REAP_E_PRECONDITION,
                                  PRECOND "statistics name layer %d, which is not a MoE "
                                  "layer of this model", L);
                goto fail;
            }
            j += have;
        }
        if (j != n) {
            rc = reap_err_set(REAP_E_PRECONDITION,
                              PRECOND "statistics name layer %d; the model has %d layers",
                              st[n - 1]->layer, cfg->n_layers);
            goto fail;
        }
    }

    int n_prune;
    if ((rc = reap_keep_n_prune(opts, E, K, &n_prune)))
        goto fail;

    out->criterion = opts->criterion;
    out->ratio = opts->n_prune >= 0 ? -1.0 : opts->ratio;
    out->n_experts = E;
    out->n_prune = n_prune;
    out->n_keep = E - n_prune;
    out->top_k = K;
    out->protect_super_experts = opts->protect_super_experts;
    out->balance_modalities = opts->balance_modalities;
    out->n_layers = n;
    out->layers = calloc((size_t)n, sizeof *out->layers);
    rank = malloc((size_t)E * sizeof *rank);
    if (!out->layers || !rank) {
        rc = reap_err_set(REAP_E_NOMEM, "keep set: out of memory");
        goto fail;
    }
    double thr = INFINITY;
    if (opts->protect_super_experts && (rc = super_threshold(st, n, &thr)))
        goto fail;
    out->super_threshold = opts->protect_super_experts && isfinite(thr) ? thr : 0.0;
    const int protect_below = (int)floor(0.75 * n_model_layers);

    for (int i = 0; i < n; i++) {
        const reap_layer_stats *s = st[i];
        reap_keep_layer *kl = &out->layers[i];
        kl->layer = s->layer;
        kl->keep = malloc((size_t)out->n_keep * sizeof *kl->keep + 1);
        kl->scores = malloc((size_t)E * sizeof *kl->scores);
        kl->is_super = calloc((size_t)E, 1);
        if (!kl->keep || !kl->scores || !kl->is_super) {
            rc = reap_err_set(REAP_E_NOMEM, "keep set: out of memory");
            goto fail;
        }
        for (int e = 0; e < E; e++) {
            kl->scores[e] = opts->balance_modalities
                                ? reap_layer_stats_balanced_score(s, e)
                                : reap_layer_stats_score(s, e, opts->criterion);
            if (!isfinite(kl->scores[e])) {
                rc = reap_err_set(REAP_E_INVALID, "layer %d: expert %d has a non-finite %s "
                                  "score", s->layer, e, reap_criterion_name(opts->criterion));
                goto fail;
            }
            int prot = opts->protect_super_experts && s->layer < protect_below &&
                       s->count[e] > 0 && (double)s->max_act[e] > thr;
            kl->is_super[e] = (uint8_t)prot;
            kl->n_super += prot;
            rank[e] = (rank_entry){kl->scores[e], e, prot};
        }
        if (kl->n_super > out->n_keep) {
            rc = reap_err_set(REAP_E_PRECONDITION,
                              PRECOND "layer %d has %d protected super experts but only %d "
                              "experts are kept", s->layer, kl->n_super, out->n_keep);
            goto fail;
        }
        qsort(rank, (size_t)E, sizeof *rank, cmp_rank);
        for (int k = 0; k < out->n_keep; k++)
            kl->keep[k] = rank[n_prune + k].index;
        qsort(kl->keep, (size_t)out->n_keep, sizeof *kl->keep, cmp_int);
    }
    free(rank);
    free(st);
    return REAP_OK;
fail:
    free(rank);
    free(st);
    reap_keepset_free(out);
    return rc;
}

int reap_keep_opts_check(const reap_keep_opts *opts)
{
    if (opts->n_prune < 0 && !(opts->ratio >= 0.0 && opts->ratio < 1.0))
        return reap_err_set(REAP_E_INVALID, "ratio %g is outside [0, 1) (the fraction of "
                            "experts removed)", opts->ratio);
    if (opts->balance_modalities && opts->criterion != REAP_CRIT_REAP)
        return reap_err_set(REAP_E_INVALID, "balance_modalities needs criterion reap (got "
                            "%s): the balanced score is the mean of per-modality REAP scores",
                            reap_criterion_name(opts->criterion));
    return REAP_OK;
}

int reap_keep_n_prune(const reap_keep_opts *opts, int n_experts, int top_k, int *out)
{
    int rc;
    int64_t n;
    if ((rc = reap_keep_opts_check(opts)))
        return rc;
    n = opts->n_prune >= 0 ? opts->n_prune
                           : (int64_t)floor((double)n_experts * opts->ratio + 1e-9);
    if (n >= n_experts)
        return reap_err_set(REAP_E_PRECONDITION, PRECOND "n_prune %lld is not below the %d "
                            "experts per layer of this model", (long long)n, n_experts);
    if (n_experts - n < top_k)
        return reap_err_set(REAP_E_PRECONDITION,
                            PRECOND "pruning %lld of %d experts leaves %lld, fewer than the %d "
                            "experts every token is routed to (num_experts_per_tok)",
                            (long long)n, n_experts, (long long)(n_experts - n), top_k);
    *out = (int)n;
    return REAP_OK;
}

int reap_keep_opts_parse(const char *ratio, const char *n_prune, const char *criterion,
                         int protect_super_experts, reap_keep_opts *out)
{
    int have_r = ratio && *ratio, have_n = n_prune && *n_prune;
    char *end;
    memset(out, 0, sizeof *out);
    out->n_prune = -1;
    out->protect_super_experts = protect_super_experts;
    if (have_r == have_n)
        return reap_err_set(REAP_E_INVALID, "give exactly one of --ratio (fraction of experts "
                            "removed) and --n-prune (experts removed per layer)");
    if (have_r) {
        out->ratio = strtod(ratio, &end);
        if (*end || end == ratio || reap_keep_opts_check(out))   /* the one range rule */
            return reap_err_set(REAP_E_INVALID, "--ratio '%s': expected a number in [0, 1) "
                                "(the fraction of experts removed)", ratio);
    } else {
        long v = strtol(n_prune, &end, 10);
        if (*end || end == n_prune || v < 0 || v > 1000000)
            return reap_err_set(REAP_E_INVALID, "--n-prune '%s': expected a non-negative "
                                "integer", n_prune);
        out->n_prune = (int)v;
    }
    return reap_criterion_from_name(criterion && *criterion ? criterion : "reap",
                                    &out->criterion);
}

json_t *reap_keepset_json(const reap_keepset *ks)
{
    json_t *o = json_object();
    for (int i = 0; o && i < ks->n_layers; i++) {
        json_t *a = json_array();
        char key[16];
        for (int k = 0; k < ks->n_keep; k++)
            json_array_append_new(a, json_integer(ks->layers[i].keep[k]));
        snprintf(key, sizeof key, "%d", ks->layers[i].layer);
        json_object_set_new(o, key, a);
    }
    return o;
}

/* rewrite_awq.c - the AWQ part of the rewrite: modules_to_not_convert after a prune (see
 * rewrite.h, reap_awq_not_convert_rewrite).
 *
 * Entries are substrings of module names. An entry that names an expert index
 * ("experts.<digits>") is matched against every per-expert linear of every pruned MoE
 * layer, "layers.L.mlp.experts.e.{gate,up,down}_proj": when the entry contains "layers."
 * the part from there on must be a prefix of that name (the part before, e.g.
 * "model.language_model.", is kept as written), otherwise the entry must be a substring
 * of the full name (decoder prefix included). Then:
 *   - it matches nothing: kept as it is;
 *   - every match is expert e and e maps to the same new index n in every matched layer:
 *     the digits are replaced by n (kept experts) or the entry is dropped (e pruned
 *     everywhere it matched);
 *   - otherwise (an index prefix such as "experts.1" that also matches 10..19, or one
 *     expert id across layers with different keep sets): replaced by the exact names of
 *     the kept modules it matched, renumbered.
 * Every other entry is kept. The result is checked: for every kept expert linear, "some
 * entry matches" must be the same before (original index) and after (new index).
 */
#include "rewrite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

static const char *const projs[3] = {"gate_proj", "up_proj", "down_proj"};

/* 1 if entry x matches linear p of expert e in layer L (see above). */
static int entry_matches(const reap_config *cfg, const char *x, int L, int e, int p)
{
    char name[192];
    const char *b = strstr(x, "layers.");
    if (b) {
        snprintf(name, sizeof name, "layers.%d.mlp.experts.%d.%s", L, e, projs[p]);
        return strncmp(name, b, strlen(b)) == 0;
    }
    snprintf(name, sizeof name, "%slayers.%d.mlp.experts.%d.%s", cfg->prefix, L, e, projs[p]);
    return strstr(name, x) != NULL;
}

static int any_matches(const reap_config *cfg, char *const *v, int n, int L, int e, int p)
{
    for (int i = 0; i < n; i++)
        if (entry_matches(cfg, v[i], L, e, p))
            return 1;
    return 0;
}

/* Position of the first "experts.<digit>" in x: digits [*d0, *d1) with value *ex. */
static int expert_digits(const char *x, size_t *d0, size_t *d1, long *ex)
{
    for (const char *s = strstr(x, "experts."); s; s = strstr(s + 1, "experts.")) {
        const char *d = s + 8;
        if (*d < '0' || *d > '9')
            continue;
        long v = 0;
        const char *q = d;
        while (*q >= '0' && *q <= '9' && v < 100000000)
            v = v * 10 + (*q++ - '0');
        *d0 = (size_t)(d - x);
        *d1 = (size_t)(q - x);
        *ex = v;
        return 1;
    }
    return 0;
}

typedef struct strv {
    char **v;
    int n, cap;
} strv;

static int strv_push(strv *s, char *owned)
{
    if (!owned)
        return reap_err_set(REAP_E_NOMEM, "modules_to_not_convert: out of memory");
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            free(owned);
            return reap_err_set(REAP_E_NOMEM, "modules_to_not_convert: out of memory");
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = owned;
    return REAP_OK;
}

void reap_strv_free(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Rewrite one expert-naming entry x into `out`. */
static int rewrite_entry(const reap_config *cfg, const reap_keepset *ks, const char *x,
                         strv *out, int *changed)
{
    size_t d0 = 0, d1 = 0;
    long ex = -1;
    int n_match = 0, same_e = 1, new_n = -2, same_n = 1, rc;

    expert_digits(x, &d0, &d1, &ex);
    for (int li = 0; li < ks->n_layers; li++) {
        const reap_keep_layer *kl = &ks->layers[li];
        for (int e = 0; e < ks->n_experts; e++)
            for (int p = 0; p < 3; p++) {
                if (!entry_matches(cfg, x, kl->layer, e, p))
                    continue;
                n_match++;
                if (e != ex) {
                    same_e = 0;
                    continue;
                }
                int ni = reap_keep_new_index(ks, kl, e);
                if (new_n == -2)
                    new_n = ni;
                else if (ni != new_n)
                    same_n = 0;
            }
    }
    if (n_match == 0)
        return strv_push(out, strdup(x));
    if (same_e && same_n) {
        if (new_n < 0) {                /* pruned wherever it matched */
            *changed = 1;
            return REAP_OK;
        }
        size_t len = strlen(x) + 24;
        char *y = malloc(len);
        if (y)
            snprintf(y, len, "%.*s%d%s", (int)d0, x, new_n, x + d1);
        *changed |= (long)new_n != ex;
        return strv_push(out, y);
    }
    /* expand into the exact names of the kept modules it matched */
    const char *b = strstr(x, "layers.");
    const int alen = b ? (int)(b - x) : (int)strlen(cfg->prefix);
    const char *a = b ? x : cfg->prefix;
    *changed = 1;
    for (int li = 0; li < ks->n_layers; li++) {
        const reap_keep_layer *kl = &ks->layers[li];
        for (int ni = 0; ni < ks->n_keep; ni++)
            for (int p = 0; p < 3; p++) {
                if (!entry_matches(cfg, x, kl->layer, kl->keep[ni], p))
                    continue;
                size_t len = (size_t)alen + 96;
                char *y = malloc(len);
                if (y)
                    snprintf(y, len, "%.*slayers.%d.mlp.experts.%d.%s", alen, a, kl->layer, ni,
                             projs[p]);
                if ((rc = strv_push(out, y)))
                    return rc;
            }
    }
    return REAP_OK;
}

int reap_awq_not_convert_rewrite(const reap_config *cfg, const reap_keepset *ks,
                                 char *const *in, int n_in, char ***out, int *n_out,
                                 int *changed)
{
    strv o = {0};
    int rc = REAP_OK;

    *out = NULL;
    *n_out = 0;
    *changed = 0;
    for (int i = 0; i < n_in && !rc; i++) {
        size_t d0, d1;
        long ex;
        if (expert_digits(in[i], &d0, &d1, &ex))
            rc = rewrite_entry(cfg, ks, in[i], &o, changed);
        else
            rc = strv_push(&o, strdup(in[i]));
    }
    /* the same kept modules must stay unquantised, under their new indices */
    for (int li = 0; li < ks->n_layers && !rc; li++) {
        const reap_keep_layer *kl = &ks->layers[li];
        for (int ni = 0; ni < ks->n_keep && !rc; ni++)
            for (int p = 0; p < 3 && !rc; p++)
                if (any_matches(cfg, in, n_in, kl->layer, kl->keep[ni], p) !=
                    any_matches(cfg, o.v, o.n, kl->layer, ni, p))
                    rc = reap_err_set(REAP_E_INTERNAL, "modules_to_not_convert: cannot rewrite "
                                      "the entries for layer %d expert %d (now %d) %s",
                                      kl->layer, kl->keep[ni], ni, projs[p]);
    }
    if (rc) {
        reap_strv_free(o.v, o.n);
        return rc;
    }
    *out = o.v;
    *n_out = o.n;
    return REAP_OK;
}

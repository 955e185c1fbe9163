/* stats_json.c - per-layer statistics as a reap-stats/1 JSON document: writer and reader. */
#include "stats_json.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsopen.h"
#include "fsutil.h"
#include "reap_err.h"

/* The five statistics and the REAP score of a modality view (or the totals) into o. */
static void stats_fields_json(json_t *o, const reap_modality_stats *v, int E)
{
    json_t *count = json_array(), *sgn = json_array(), *sn = json_array(),
           *sg = json_array(), *mx = json_array(), *reap = json_array();
    for (int e = 0; e < E; e++) {
        json_array_append_new(count, json_integer(v->count[e]));
        json_array_append_new(sgn, json_real(v->sum_gate_norm[e]));
        json_array_append_new(sn, json_real(v->sum_norm[e]));
        json_array_append_new(sg, json_real(v->sum_gate[e]));
        json_array_append_new(mx, v->count[e] && isfinite(v->max_act[e])
                                      ? json_real(v->max_act[e]) : json_null());
        json_array_append_new(reap, json_real(reap_modality_stats_score(v, e, REAP_CRIT_REAP)));
    }
    json_object_set_new(o, "count", count);
    json_object_set_new(o, "sum_gate_norm", sgn);
    json_object_set_new(o, "sum_norm", sn);
    json_object_set_new(o, "sum_gate", sg);
    json_object_set_new(o, "max_act", mx);
    json_object_set_new(o, "reap", reap);
}

static json_t *layer_json(const reap_layer_stats *s)
{
    json_t *o = json_object();
    const reap_modality_stats tot = {s->tokens, s->count, s->sum_gate_norm, s->sum_norm,
                                     s->sum_gate, s->max_act};
    json_object_set_new(o, "layer", json_integer(s->layer));
    json_object_set_new(o, "n_experts", json_integer(s->n_experts));
    json_object_set_new(o, "top_k", json_integer(s->top_k));
    json_object_set_new(o, "tokens", json_integer(s->tokens));
    stats_fields_json(o, &tot, s->n_experts);
    /* per modality only for a layer with image tokens (text-only files are unchanged) */
    if (reap_layer_stats_has_image(s))
        for (int m = 0; m < REAP_N_MODALITIES; m++) {
            json_t *mo = json_object();
            json_object_set_new(mo, "tokens", json_integer(s->mod[m].tokens));
            stats_fields_json(mo, &s->mod[m], s->n_experts);
            json_object_set_new(o, m == REAP_MOD_IMAGE ? "image" : "text", mo);
        }
    return o;
}

int reap_stats_json_write(const char *path, const char *model_id, const char *calib_id,
                          int64_t tokens, const reap_layer_stats *layers, int n_layers)
{
    int rc = REAP_OK;
    json_t *doc = json_object(), *arr = json_array();
    if (!doc || !arr) {
        rc = reap_err_set(REAP_E_NOMEM, "statistics JSON");
        goto done;
    }
    json_object_set_new(doc, "format", json_string("reap-stats/1"));
    json_object_set_new(doc, "model_id", model_id ? json_string(model_id) : json_null());
    json_object_set_new(doc, "calib_id", calib_id ? json_string(calib_id) : json_null());
    json_object_set_new(doc, "tokens", json_integer(tokens));
    for (int i = 0; i < n_layers; i++)
        json_array_append_new(arr, layer_json(&layers[i]));
    json_object_set(doc, "layers", arr);
    size_t flags = JSON_INDENT(1) | JSON_REAL_PRECISION(17);
    if (!strcmp(path, "-")) {
        if (json_dumpf(doc, stdout, flags) || fputc('\n', stdout) == EOF)
            rc = reap_err_set(REAP_E_IO, "writing statistics to stdout failed");
        goto done;
    }
    reap_atomic af;
    if ((rc = reap_atomic_open(path, 0666, REAP_ATOMIC_STDIO, &af)))
        goto done;
    if (json_dumpf(doc, af.fp, flags) != 0 || fputc('\n', af.fp) == EOF) {
        rc = reap_err_set(REAP_E_IO, "%s: write: %s", af.tmp, strerror(errno));
        reap_atomic_abort(&af);
        goto done;
    }
    rc = reap_atomic_commit(&af);
done:
    json_decref(arr);
    json_decref(doc);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------- */

/* doc[key] as an array of exactly E numbers into dst (double) or counts (int64). */
static int read_array(const char *path, int layer, const json_t *o, const char *key, int E,
                      double *dst_d, int64_t *dst_i, float *dst_max)
{
    const json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || (int)json_array_size(a) != E)
        return reap_err_set(REAP_E_FORMAT, "%s: layer %d: '%s' must be an array of %d values",
                            path, layer, key, E);
    for (int e = 0; e < E; e++) {
        const json_t *v = json_array_get(a, (size_t)e);
        if (dst_i) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return reap_err_set(REAP_E_FORMAT,
                                    "%s: layer %d: %s[%d] is not a non-negative integer",
                                    path, layer, key, e);
            dst_i[e] = (int64_t)json_integer_value(v);
        } else if (dst_max && json_is_null(v)) {
            dst_max[e] = -INFINITY;
        } else {
            if (!json_is_number(v) || !isfinite(json_number_value(v)))
                return reap_err_set(REAP_E_FORMAT, "%s: layer %d: %s[%d] is not a finite "
                                    "number%s", path, layer, key, e,
                                    dst_max ? " or null" : "");
            if (dst_max)
                dst_max[e] = (float)json_number_value(v);
            else
                dst_d[e] = json_number_value(v);
        }
    }
    return REAP_OK;
}

static int read_int_field(const char *path, int layer, const json_t *o, const char *key,
                          json_int_t lo, json_int_t hi, json_int_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return reap_err_set(REAP_E_FORMAT, "%s: layer entry %d: '%s' must be an integer in "
                            "%lld..%lld", path, layer, key, (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return REAP_OK;
}

static int read_id(const char *path, const json_t *doc, const char *key, char **out)
{
    const json_t *v = json_object_get(doc, key);
    if (!out)
        return REAP_OK;
    *out = NULL;
    if (!v || json_is_null(v))
        return REAP_OK;
    if (!json_is_string(v))
        return reap_err_set(REAP_E_FORMAT, "%s: '%s' must be a string or null", path, key);
    if (!(*out = strdup(json_string_value(v))))
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
    return REAP_OK;
}

/* The five arrays of a statistics object (the layer itself or its "text"/"image"). */
static int read_stats_fields(const char *path, int layer, const json_t *o, int E,
                             reap_modality_stats *v)
{
    int rc;
    if ((rc = read_array(path, layer, o, "count", E, NULL, v->count, NULL)) ||
        (rc = read_array(path, layer, o, "sum_gate_norm", E, v->sum_gate_norm, NULL, NULL)) ||
        (rc = read_array(path, layer, o, "sum_norm", E, v->sum_norm, NULL, NULL)) ||
        (rc = read_array(path, layer, o, "sum_gate", E, v->sum_gate, NULL, NULL)) ||
        (rc = read_array(path, layer, o, "max_act", E, NULL, NULL, v->max_act)))
        return rc;
    return REAP_OK;
}

/* The optional "text" and "image" objects of a layer (both or neither; absent: a layer
 * without image tokens, as in files written before modalities existed). */
static int read_modalities(const char *path, reap_layer_stats *s, const json_t *o)
{
    static const char *const name[REAP_N_MODALITIES] = {"text", "image"};
    const json_t *txt = json_object_get(o, "text"), *img = json_object_get(o, "image");
    if (!txt && !img)
        return REAP_OK;
    for (int m = 0; m < REAP_N_MODALITIES; m++) {
        const json_t *mo = m == REAP_MOD_IMAGE ? img : txt;
        json_int_t tok;
        int rc;
        if (!json_is_object(mo))
            return reap_err_set(REAP_E_FORMAT, "%s: layer %d: '%s' must be an object (the "
                                "per-modality statistics come as both 'text' and 'image')",
                                path, s->layer, name[m]);
        if ((rc = read_int_field(path, s->layer, mo, "tokens", 0, s->tokens, &tok)) ||
            (rc = read_stats_fields(path, s->layer, mo, s->n_experts, &s->mod[m])))
            return rc;
        s->mod[m].tokens = tok;
    }
    if (s->mod[REAP_MOD_TEXT].tokens + s->mod[REAP_MOD_IMAGE].tokens != s->tokens)
        return reap_err_set(REAP_E_FORMAT, "%s: layer %d: text tokens %lld + image tokens "
                            "%lld != tokens %lld", path, s->layer,
                            (long long)s->mod[REAP_MOD_TEXT].tokens,
                            (long long)s->mod[REAP_MOD_IMAGE].tokens, (long long)s->tokens);
    return REAP_OK;
}

int reap_stats_json_read(const char *path, reap_layer_stats **out_layers, int *out_n,
                         char **model_id, char **calib_id, int64_t *tokens)
{
    int rc = REAP_OK, n = 0;
    json_error_t jerr;
    reap_layer_stats *L = NULL;
    json_t *doc = NULL;
    *out_layers = NULL;
    *out_n = 0;
    if (model_id)
        *model_id = NULL;
    if (calib_id)
        *calib_id = NULL;

    FILE *f = NULL;
    if ((rc = reap_fopen_read(path, NULL, &f)))
        return rc;
    doc = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!doc) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%d:%d: %s", path, jerr.line, jerr.column,
                          jerr.text);
        goto fail;
    }
    const json_t *fmt = json_object_get(doc, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "reap-stats/1") != 0) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a reap-stats/1 document (\"format\" is "
                          "missing or different)", path);
        goto fail;
    }
    const json_t *arr = json_object_get(doc, "layers");
    if (!json_is_array(arr)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: 'layers' must be an array", path);
        goto fail;
    }
    size_t cap = json_array_size(arr);
    if (cap > 100000) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: %zu layers is not plausible", path, cap);
        goto fail;
    }
    L = calloc(cap ? cap : 1, sizeof *L);
    if (!L) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < cap; i++) {
        const json_t *o = json_array_get(arr, i);
        json_int_t layer, E, K, tok;
        if (!json_is_object(o)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: layers[%zu] is not an object", path, i);
            goto fail;
        }
        if ((rc = read_int_field(path, (int)i, o, "layer", 0, 1000000, &layer)) ||
            (rc = read_int_field(path, (int)i, o, "n_experts", 1, 1000000, &E)) ||
            (rc = read_int_field(path, (int)i, o, "top_k", 1, E, &K)) ||
            (rc = read_int_field(path, (int)i, o, "tokens", 0, INT64_MAX, &tok)))
            goto fail;
        for (int j = 0; j < n; j++)
            if (L[j].layer == (int)layer) {
                rc = reap_err_set(REAP_E_FORMAT, "%s: layer %d appears twice", path,
                                  (int)layer);
                goto fail;
            }
        if ((rc = reap_layer_stats_init(&L[n], (int)layer, (int)E, (int)K)))
            goto fail;
        reap_layer_stats *s = &L[n++];
        s->tokens = tok;
        reap_modality_stats tot = {0, s->count, s->sum_gate_norm, s->sum_norm, s->sum_gate,
                                   s->max_act};
        if ((rc = read_stats_fields(path, s->layer, o, s->n_experts, &tot)) ||
            (rc = read_modalities(path, s, o)))
            goto fail;
    }
    const json_t *jt = json_object_get(doc, "tokens");
    if (tokens)
        *tokens = json_is_integer(jt) ? (int64_t)json_integer_value(jt) : 0;
    if ((rc = read_id(path, doc, "model_id", model_id)) ||
        (rc = read_id(path, doc, "calib_id", calib_id)))
        goto fail;
    json_decref(doc);
    *out_layers = L;
    *out_n = n;
    return REAP_OK;
fail:
    for (int j = 0; j < n; j++)
        reap_layer_stats_free(&L[j]);
    free(L);
    json_decref(doc);
    if (model_id) {
        free(*model_id);
        *model_id = NULL;
    }
    if (calib_id) {
        free(*calib_id);
        *calib_id = NULL;
    }
    return rc;
}

/* stats_json.c - writes per-layer statistics as a reap-stats/1 JSON document. */
#include "stats_json.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "reap_err.h"

static json_t *layer_json(const reap_layer_stats *s)
{
    json_t *o = json_object();
    json_t *count = json_array(), *sgn = json_array(), *sn = json_array(),
           *sg = json_array(), *mx = json_array(), *reap = json_array();
    for (int e = 0; e < s->n_experts; e++) {
        json_array_append_new(count, json_integer(s->count[e]));
        json_array_append_new(sgn, json_real(s->sum_gate_norm[e]));
        json_array_append_new(sn, json_real(s->sum_norm[e]));
        json_array_append_new(sg, json_real(s->sum_gate[e]));
        json_array_append_new(mx, s->count[e] && isfinite(s->max_act[e])
                                      ? json_real(s->max_act[e]) : json_null());
        json_array_append_new(reap, json_real(reap_layer_stats_score(s, e, REAP_CRIT_REAP)));
    }
    json_object_set_new(o, "layer", json_integer(s->layer));
    json_object_set_new(o, "n_experts", json_integer(s->n_experts));
    json_object_set_new(o, "top_k", json_integer(s->top_k));
    json_object_set_new(o, "tokens", json_integer(s->tokens));
    json_object_set_new(o, "count", count);
    json_object_set_new(o, "sum_gate_norm", sgn);
    json_object_set_new(o, "sum_norm", sn);
    json_object_set_new(o, "sum_gate", sg);
    json_object_set_new(o, "max_act", mx);
    json_object_set_new(o, "reap", reap);
    return o;
}

int reap_stats_json_write(const char *path, const char *model_id, const char *calib_id,
                          int64_t tokens, const reap_layer_stats *layers, int n_layers)
{
    int rc = REAP_OK;
    char tmp[4096];
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
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    int bad = json_dumpf(doc, f, flags) != 0 || fputc('\n', f) == EOF || fflush(f) != 0 ||
              fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
        unlink(tmp);
    }
done:
    json_decref(arr);
    json_decref(doc);
    return rc;
}

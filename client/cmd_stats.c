/* cmd_stats.c - `reapctl stats MODEL_ID`: a model's per-layer statistics from the scorer
 * service (GetStats), merged over chosen (default: every complete) calibration sets.
 *   default   a table: layer, tokens, experts routed, REAP min / median / max, experts
 *             dropped at --ratio
 *   --json    the reap-stats/1 document (the format of `reap-scorer run --stats-json`)
 *   --svg F   a heatmap of layers x experts (colour: REAP score from the layer's lowest,
 *             dark, to its highest, yellow), the experts a prune at --ratio drops crossed
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keepset.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"
#include "stats.h"
#include "stats_json.h"
#include "stats_table.h"

/* A GetStats modality message into v (E entries each); REAP_E_FORMAT when sizes differ. */
static int modality_from_pb(const Reap__V1__ModalityStats *m, size_t E,
                            reap_modality_stats *v)
{
    if (m->n_count != E || m->n_sum_gate_norm != E || m->n_sum_norm != E ||
        m->n_sum_gate != E || m->n_max_act != E)
        return REAP_E_FORMAT;
    v->tokens = (int64_t)m->tokens;
    for (size_t e = 0; e < E; e++) {
        v->count[e] = (int64_t)m->count[e];
        v->sum_gate_norm[e] = m->sum_gate_norm[e];
        v->sum_norm[e] = m->sum_norm[e];
        v->sum_gate[e] = m->sum_gate[e];
        v->max_act[e] = (float)m->max_act[e];
    }
    return REAP_OK;
}

/* GetStats layers -> statistics structs. */
static int to_stats(const Reap__V1__GetStatsResponse *r, reap_layer_stats **out)
{
    reap_layer_stats *st = calloc(r->n_layers ? r->n_layers : 1, sizeof *st);
    if (!st)
        return REAP_E_NOMEM;
    for (size_t l = 0; l < r->n_layers; l++) {
        const Reap__V1__LayerStats *s = r->layers[l];
        size_t E = s->n_experts;
        if (s->n_count != E || s->n_sum_gate_norm != E || s->n_sum_norm != E ||
            s->n_sum_gate != E || s->n_max_act != E ||
            reap_layer_stats_init(&st[l], (int)s->layer, (int)E, (int)s->top_k)) {
            for (size_t k = 0; k < l; k++)
                reap_layer_stats_free(&st[k]);
            free(st);
            return reap_err_set(REAP_E_FORMAT, "layer %u: inconsistent statistics", s->layer);
        }
        st[l].tokens = (int64_t)s->tokens;
        for (size_t e = 0; e < E; e++) {
            st[l].count[e] = (int64_t)s->count[e];
            st[l].sum_gate_norm[e] = s->sum_gate_norm[e];
            st[l].sum_norm[e] = s->sum_norm[e];
            st[l].sum_gate[e] = s->sum_gate[e];
            st[l].max_act[e] = (float)s->max_act[e];
        }
        if ((s->text != NULL) != (s->image != NULL) ||
            (s->image && (modality_from_pb(s->text, E, &st[l].mod[REAP_MOD_TEXT]) ||
                          modality_from_pb(s->image, E, &st[l].mod[REAP_MOD_IMAGE])))) {
            for (size_t k = 0; k <= l; k++)
                reap_layer_stats_free(&st[k]);
            free(st);
            return reap_err_set(REAP_E_FORMAT, "layer %u: inconsistent statistics by "
                                "modality", s->layer);
        }
    }
    *out = st;
    return REAP_OK;
}

/* A colour ramp (dark blue -> teal -> yellow), t in [0, 1]. */
static void ramp(double t, int rgb[3])
{
    static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140},
                                       {94, 201, 98}, {253, 231, 37}};
    if (!(t >= 0))
        t = 0;
    if (t > 1)
        t = 1;
    double x = t * 4;
    int i = (int)x < 4 ? (int)x : 3;
    double f = x - i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]) + 0.5);
}

static int write_svg(const char *path, const char *model_id, const reap_layer_stats *st,
                     int n, const reap_keepset *ks, double ratio, const char *criterion)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return reap_err_set(REAP_E_IO, "%s: cannot write", path);
    int E = n ? st[0].n_experts : 0;
    int cell = E ? 1200 / E : 8;
    if (cell > 24)
        cell = 24;
    if (cell < 4)
        cell = 4;
    int left = 70, top = 70, w = left + E * cell + 40, h = top + n * cell + 60;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", w, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\">REAP scores, model %.16s: %d MoE "
               "layers x %d experts</text>\n", left, model_id, n, E);
    fprintf(f, "<text x=\"%d\" y=\"36\">colour: score from the layer's lowest to its "
               "highest; crossed: dropped at ratio %.2f (%s, %d of %d per layer)</text>\n",
            left, ratio,
            criterion, ks ? ks->n_prune : 0, E);
    int step = cell >= 12 ? 1 : cell >= 6 ? 4 : 8;
    for (int e = 0; e < E; e += step)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                left + e * cell + cell / 2, top - 6, e);
    for (int l = 0; l < n; l++) {
        const reap_layer_stats *s = &st[l];
        const reap_keep_layer *kl = ks ? reap_keepset_find(ks, s->layer) : NULL;
        double lo = INFINITY, hi = -INFINITY;
        for (int e = 0; e < s->n_experts; e++) {
            double v = reap_layer_stats_score(s, e, REAP_CRIT_REAP);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        int y = top + l * cell;
        if (cell >= 8 || l % 4 == 0)
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", left - 6,
                    y + cell - 1, s->layer);
        for (int e = 0; e < s->n_experts; e++) {
            int rgb[3], x = left + e * cell;
            double v = reap_layer_stats_score(s, e, REAP_CRIT_REAP);
            ramp(hi > lo ? (v - lo) / (hi - lo) : 1, rgb);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                       "fill=\"rgb(%d,%d,%d)\"><title>layer %d expert %d: reap %.6g, %lld "
                       "tokens</title></rect>\n", x, y, cell, cell, rgb[0], rgb[1], rgb[2],
                    s->layer, e, v, (long long)s->count[e]);
            if (kl && reap_keep_new_index(ks, kl, e) < 0)
                fprintf(f, "<path d=\"M%d %dL%d %dM%d %dL%d %d\" stroke=\"red\" "
                           "stroke-width=\"%d\" class=\"pruned\"/>\n", x + 1, y + 1,
                        x + cell - 1, y + cell - 1, x + cell - 1, y + 1, x + 1, y + cell - 1,
                        cell >= 12 ? 2 : 1);
        }
    }
    int ly = top + n * cell + 20;
    for (int i = 0; i <= 20; i++) {
        int rgb[3];
        ramp(i / 20.0, rgb);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" "
                   "fill=\"rgb(%d,%d,%d)\"/>\n", left + i * 10, ly, rgb[0], rgb[1], rgb[2]);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">lowest</text><text x=\"%d\" "
               "y=\"%d\">highest REAP score of the layer</text>\n", left - 4, ly + 9,
            left + 215, ly + 9);
    fprintf(f, "<text x=\"10\" y=\"%d\">layer</text><text x=\"%d\" y=\"%d\">expert</text>\n",
            top - 6, left, top - 22);
    fprintf(f, "</svg>\n");
    if (fclose(f))
        return reap_err_set(REAP_E_IO, "%s: write failed", path);
    return REAP_OK;
}

int cmd_stats(int argc, char **argv)
{
    const char *model = NULL, *calib_ids = NULL, *layers = NULL, *svg = NULL,
               *criterion = NULL;
    double ratio = 0.4;
    int json = 0, n = 0, ex, n_pos = 0;
    const char *pos[1];
    reapctl_conn c;
    cli_opt opts[24];
    opts[n++] = (cli_opt){"model-id", NULL, CLI_STR, NULL, "model id or prefix (or give it as "
                          "the first argument)", &model, 0};
    opts[n++] = (cli_opt){"calib-ids", NULL, CLI_STR, NULL, "calibration ids to merge, comma "
                          "separated (default: every complete set)", &calib_ids, 0};
    opts[n++] = (cli_opt){"layers", NULL, CLI_STR, NULL, "only these layers, comma "
                          "separated", &layers, 0};
    opts[n++] = (cli_opt){"ratio", "REAP_PRUNE_RATIO", CLI_DOUBLE, "0.4", "prune ratio for "
                          "the table's drop column and the heatmap's crosses", &ratio, 0};
    opts[n++] = (cli_opt){"criterion", "REAP_CRITERION", CLI_STR, "reap", "criterion of the "
                          "heatmap's crosses", &criterion, 0};
    opts[n++] = (cli_opt){"svg", NULL, CLI_STR, NULL, "write a heatmap (layers x experts) "
                          "here", &svg, 0};
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "print reap-stats/1 JSON", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER, opts, &n);
    const char *usage = "usage: reapctl stats MODEL_ID [--json | --svg FILE] [options]";
    if ((ex = reapctl_parse("stats", usage, opts, n, argc, argv, pos, 1, &n_pos)) >= 0)
        return ex;
    if (!model && n_pos)
        model = pos[0];
    if (!model) {
        fprintf(stderr, "reapctl stats: give the model id (reapctl models lists them)\n");
        return REAPCTL_EXIT_USAGE;
    }
    reap_keep_opts ko;   /* the range of --ratio is keepset.c's rule */
    char rtext[32];
    snprintf(rtext, sizeof rtext, "%.17g", ratio);
    if (reap_keep_opts_parse(rtext, NULL, criterion, 0, &ko)) {
        fprintf(stderr, "reapctl stats: %s\n", reap_err_msg());
        return REAPCTL_EXIT_USAGE;
    }
    Reap__V1__GetStatsRequest q = REAP__V1__GET_STATS_REQUEST__INIT;
    char **ids = NULL, **lv = NULL;
    size_t n_ids = 0, n_lv = 0;
    uint32_t *lnum = NULL;
    if (reapctl_split(calib_ids, &ids, &n_ids) || reapctl_split(layers, &lv, &n_lv) ||
        !(lnum = calloc(n_lv + 1, sizeof *lnum))) {
        fprintf(stderr, "reapctl stats: out of memory\n");
        ex = REAPCTL_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < n_lv; i++) {
        char *end;
        long v = strtol(lv[i], &end, 10);
        if (*end || v < 0) {
            fprintf(stderr, "reapctl stats: --layers: '%s' is not a layer index\n", lv[i]);
            ex = REAPCTL_EXIT_USAGE;
            goto out;
        }
        lnum[i] = (uint32_t)v;
    }
    q.model_id = (char *)model;
    q.calib_ids = ids;
    q.n_calib_ids = n_ids;
    q.layers = lnum;
    q.n_layers = n_lv;
    rpc_client *cl = NULL;
    rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    if ((ex = reapctl_connect("stats", &c, REAPCTL_SCORER, NULL, &cl)))
        goto out;
    if (rpc_client_unary(cl, "/reap.v1.Scorer/GetStats", &q.base,
                         &reap__v1__get_stats_response__descriptor, c.timeout_ms, &resp,
                         &st) != RPC_OK) {
        rpc_client_close(cl);
        ex = reapctl_call_failed("stats", &st);
        goto out;
    }
    rpc_client_close(cl);
    const Reap__V1__GetStatsResponse *r = (const void *)resp;
    reap_layer_stats *ls = NULL;
    reap_keepset ks = {0};
    char *cids = NULL;
    int nl = (int)r->n_layers;
    size_t clen = 1;
    for (size_t i = 0; i < r->n_calib_ids; i++)
        clen += strlen(r->calib_ids[i]) + 1;
    ex = REAPCTL_EXIT_FAIL;
    if (to_stats(r, &ls) || !(cids = calloc(clen, 1))) {
        fprintf(stderr, "reapctl stats: %s\n", reap_err_msg());
        goto out_resp;
    }
    for (size_t i = 0; i < r->n_calib_ids; i++) {
        if (i)
            strcat(cids, ",");
        strcat(cids, r->calib_ids[i]);
    }
    if (json) {
        if (reap_stats_json_write("-", r->model_id, cids, (int64_t)r->tokens, ls, nl)) {
            fprintf(stderr, "reapctl stats: %s\n", reap_err_msg());
            goto out_resp;
        }
    } else if (!svg) {
        printf("model %s, %zu calibration set(s), %llu tokens, statistics digest %.16s\n",
               r->model_id, r->n_calib_ids, (unsigned long long)r->tokens, r->stats_digest);
        reap_stats_print_table(stdout, ls, nl, ratio);
    }
    if (svg) {
        if (reap_keepset_compute(NULL, ls, nl, &ko, &ks)) {
            fprintf(stderr, "reapctl stats: keep set for the heatmap: %s\n", reap_err_msg());
            goto out_resp;
        }
        if (write_svg(svg, r->model_id, ls, nl, &ks, ratio, criterion)) {
            fprintf(stderr, "reapctl stats: %s\n", reap_err_msg());
            goto out_resp;
        }
        if (!json)
            printf("heatmap of %d layers x %d experts written to %s (%d experts per layer "
                   "crossed at ratio %.2f)\n", nl, nl ? ls[0].n_experts : 0, svg, ks.n_prune,
                   ratio);
    }
    ex = 0;
out_resp:
    reap_keepset_free(&ks);
    for (int i = 0; ls && i < nl; i++)
        reap_layer_stats_free(&ls[i]);
    free(ls);
    free(cids);
    protobuf_c_message_free_unpacked(resp, NULL);
out:
    reapctl_strv_free(ids);
    reapctl_strv_free(lv);
    free(lnum);
    return ex;
}

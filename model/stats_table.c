/* stats_table.c - the per-layer summary table (see stats_table.h). */
#include "stats_table.h"

#include "keepset.h"

#include <math.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void reap_stats_print_table(FILE *f, const reap_layer_stats *st, int n, double ratio)
{
    reap_keep_opts ko = {.ratio = ratio, .n_prune = -1};
    int n_drop = -1;
    if (n > 0 && reap_keep_n_prune(&ko, st[0].n_experts, st[0].top_k, &n_drop))
        n_drop = -1;
    char drop[32];
    snprintf(drop, sizeof drop, "drop@%g", ratio);
    int any_image = 0;   /* the image columns only when there are image tokens */
    for (int i = 0; i < n; i++)
        any_image |= reap_layer_stats_has_image(&st[i]);
    fprintf(f, "%5s %8s %7s %12s %12s %12s %8s", "layer", "tokens", "routed", "reap_min",
            "reap_median", "reap_max", drop);
    if (any_image)
        fprintf(f, " %8s %7s", "img_tok", "img_rt");
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        const reap_layer_stats *s = &st[i];
        double *sc = malloc((size_t)s->n_experts * sizeof *sc);
        int routed = 0;
        if (!sc)
            continue;
        for (int e = 0; e < s->n_experts; e++) {
            sc[e] = reap_layer_stats_score(s, e, REAP_CRIT_REAP);
            routed += s->count[e] > 0;
        }
        qsort(sc, (size_t)s->n_experts, sizeof *sc, cmp_double);
        char nd[16] = "-";
        if (n_drop >= 0)
            snprintf(nd, sizeof nd, "%d", n_drop);
        fprintf(f, "%5d %8lld %4d/%-3d %12.6g %12.6g %12.6g %8s", s->layer,
                (long long)s->tokens, routed, s->n_experts, sc[0], sc[s->n_experts / 2],
                sc[s->n_experts - 1], nd);
        if (any_image) {
            reap_modality_stats im;
            int img_routed = 0;
            reap_layer_stats_modality(s, REAP_MOD_IMAGE, &im);
            for (int e = 0; im.tokens > 0 && e < s->n_experts; e++)
                img_routed += im.count[e] > 0;
            fprintf(f, " %8lld %3d/%-3d", (long long)im.tokens, img_routed, s->n_experts);
        }
        fputc('\n', f);
        free(sc);
    }
}

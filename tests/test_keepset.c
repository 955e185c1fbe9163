/* test_keepset.c - keep sets from hand-made statistics: every criterion, floor(E x ratio),
 * ties to the lower index, super-expert protection, refusals; the stats JSON reader
 * (round trip through the writer, malformed documents); the statistics digest.
 *
 * Usage: test_keepset SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keepset.h"
#include "reap_err.h"
#include "stats.h"
#include "stats_json.h"
#include "test_fixtures.h"
#include "test_util.h"

/* Layer `layer` with E experts; expert e gets count c[e] and sum_gate_norm s[e]. */
static void make_layer(reap_layer_stats *st, int layer, int E, int K, const int64_t *c,
                       const double *s)
{
    CHECK_RC(reap_layer_stats_init(st, layer, E, K), REAP_OK);
    for (int e = 0; e < E; e++) {
        st->count[e] = c[e];
        st->sum_gate_norm[e] = s[e];
        st->sum_norm[e] = 2 * s[e] + e;        /* different order than reap */
        st->sum_gate[e] = (double)(E - e);     /* descending with e */
        st->max_act[e] = c[e] ? (float)(e + 1) : -INFINITY;
        st->tokens += c[e];
    }
}

static int keeps(const reap_keepset *ks, int li, const int *want, int n)
{
    if (ks->n_keep != n)
        return 0;
    for (int k = 0; k < n; k++)
        if (ks->layers[li].keep[k] != want[k])
            return 0;
    return 1;
}

static void test_basic(void)
{
    /* reap = s / c: e0 1.0, e1 0.5, e2 3.0, e3 0 (never routed), e4 2.0, e5 0.5 */
    const int64_t c[6] = {2, 4, 1, 0, 3, 2};
    const double s[6] = {2.0, 2.0, 3.0, 0.0, 6.0, 1.0};
    reap_layer_stats st[2];
    make_layer(&st[0], 1, 6, 2, c, s);
    make_layer(&st[1], 0, 6, 2, c, s);
    reap_keepset ks;
    reap_keep_opts o = {REAP_CRIT_REAP, 0.5, -1, 0, 0};

    /* ratio 0.5 -> drop 3: e3 (0), then e1 / e5 tie at 0.5 -> drop the higher (e5) first,
     * then e1. Keep 0, 2, 4. Layers come back sorted by layer index. */
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    CHECK(ks.n_layers == 2 && ks.layers[0].layer == 0 && ks.layers[1].layer == 1);
    CHECK(ks.n_prune == 3 && ks.n_keep == 3);
    const int w1[3] = {0, 2, 4};
    CHECK(keeps(&ks, 0, w1, 3) && keeps(&ks, 1, w1, 3));
    CHECK(reap_keep_new_index(&ks, &ks.layers[0], 4) == 2);
    CHECK(reap_keep_new_index(&ks, &ks.layers[0], 3) == -1);
    CHECK(reap_keepset_find(&ks, 1) == &ks.layers[1] && reap_keepset_find(&ks, 2) == NULL);
    reap_keepset_free(&ks);

    /* drop 2 -> e3 and the tie e1/e5: e5 goes (ties keep the lower index) */
    o.n_prune = 2;
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w2[4] = {0, 1, 2, 4};
    CHECK(keeps(&ks, 0, w2, 4));
    CHECK(ks.ratio < 0);
    reap_keepset_free(&ks);

    /* frequency = count: 4,3 survive top-2 ... drop 4 -> keep e1 (4), e4 (3) */
    o = (reap_keep_opts){REAP_CRIT_FREQUENCY, 0, 4, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w3[2] = {1, 4};
    CHECK(keeps(&ks, 0, w3, 2));
    reap_keepset_free(&ks);

    /* weighted_frequency = sum_gate = E - e, but never-routed e3 scores 0:
     * scores 6,5,4,0,2,1 -> drop 3: e3, e5, e4 */
    o = (reap_keep_opts){REAP_CRIT_WEIGHTED_FREQUENCY, 0, 3, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w4[3] = {0, 1, 2};
    CHECK(keeps(&ks, 0, w4, 3));
    reap_keepset_free(&ks);

    /* ean_sum = 2s + e: 4, 5, 8, 0 (never routed), 16, 7 -> drop 2: e3, e0 */
    o = (reap_keep_opts){REAP_CRIT_EAN_SUM, 0, 2, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w5[4] = {1, 2, 4, 5};
    CHECK(keeps(&ks, 0, w5, 4));
    reap_keepset_free(&ks);

    /* ean_mean, weighted_ean_sum, max_activations run; max_act = e + 1 -> keep highest */
    o = (reap_keep_opts){REAP_CRIT_MAX_ACTIVATIONS, 0, 4, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w6[2] = {4, 5};
    CHECK(keeps(&ks, 0, w6, 2));
    reap_keepset_free(&ks);
    o.criterion = REAP_CRIT_EAN_MEAN;
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    reap_keepset_free(&ks);
    o.criterion = REAP_CRIT_WEIGHTED_EAN_SUM;
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    const int w7[2] = {2, 4}; /* s: 2,2,3,0,6,1 */
    CHECK(keeps(&ks, 0, w7, 2));
    reap_keepset_free(&ks);

    /* ratio 0: nothing dropped */
    o = (reap_keep_opts){REAP_CRIT_REAP, 0.0, -1, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_OK);
    CHECK(ks.n_keep == 6 && ks.n_prune == 0);
    reap_keepset_free(&ks);

    /* refusals */
    o = (reap_keep_opts){REAP_CRIT_REAP, 0, 5, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_E_PRECONDITION);
    CHECK_ERRMSG("fewer than the 2 experts");
    CHECK_RC(reap_keepset_compute(NULL, st, 0, &o, &ks), REAP_E_PRECONDITION);
    CHECK_ERRMSG("no statistics");
    o = (reap_keep_opts){REAP_CRIT_REAP, 1.0, -1, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, 2, &o, &ks), REAP_E_INVALID);
    CHECK_ERRMSG("ratio");

    /* against a config: a missing MoE layer, mismatching E */
    reap_config cfg = {0};
    cfg.n_layers = 3;
    cfg.n_experts = 6;
    cfg.n_experts_used = 2;
    cfg.decoder_sparse_step = 1;
    o = (reap_keep_opts){REAP_CRIT_REAP, 0.4, -1, 0, 0};
    CHECK_RC(reap_keepset_compute(&cfg, st, 2, &o, &ks), REAP_E_PRECONDITION);
    CHECK_ERRMSG("MoE layer 2 has no statistics");
    cfg.n_layers = 2;
    CHECK_RC(reap_keepset_compute(&cfg, st, 2, &o, &ks), REAP_OK);
    CHECK(ks.n_prune == 2); /* floor(6 * 0.4) */
    reap_keepset_free(&ks);
    cfg.n_experts = 8;
    CHECK_RC(reap_keepset_compute(&cfg, st, 2, &o, &ks), REAP_E_PRECONDITION);
    CHECK_ERRMSG("num_experts 8");

    /* the same layer twice */
    reap_layer_stats dup[2] = {st[0], st[0]};
    CHECK_RC(reap_keepset_compute(NULL, dup, 2, &o, &ks), REAP_E_PRECONDITION);
    CHECK_ERRMSG("twice");

    reap_layer_stats_free(&st[0]);
    reap_layer_stats_free(&st[1]);
}

static void test_ratio_floor(void)
{
    /* 128 x 0.40 = 51.2 -> 51 dropped, 77 kept; 100 x 0.29 = 28.999.. -> 29 */
    int64_t c[128];
    double s[128];
    for (int e = 0; e < 128; e++) {
        c[e] = 1 + e;
        s[e] = (double)((e * 37) % 128);
    }
    reap_layer_stats st;
    make_layer(&st, 0, 128, 8, c, s);
    reap_keepset ks;
    reap_keep_opts o = {REAP_CRIT_REAP, 0.40, -1, 0, 0};
    CHECK_RC(reap_keepset_compute(NULL, &st, 1, &o, &ks), REAP_OK);
    CHECK(ks.n_prune == 51 && ks.n_keep == 77);
    for (int k = 1; k < ks.n_keep; k++)
        CHECK(ks.layers[0].keep[k - 1] < ks.layers[0].keep[k]);
    reap_keepset_free(&ks);
    reap_layer_stats_free(&st);

    reap_layer_stats st2;
    make_layer(&st2, 0, 100, 8, c, s);
    o.ratio = 0.29;
    CHECK_RC(reap_keepset_compute(NULL, &st2, 1, &o, &ks), REAP_OK);
    CHECK(ks.n_prune == 29);
    reap_keepset_free(&ks);
    reap_layer_stats_free(&st2);
}

/* The one rule (reap_keep_n_prune) and its validation: E = 100 and ratios whose product
 * lands just below an integer (100 x 0.29 = 28.999..., 0.57, 0.58) remove 29, 57, 58 -
 * through the function and through a keep set - and refusals name the value given. */
static void test_n_prune_rule(void)
{
    static const double ratios[] = {0.29, 0.57, 0.58, 0.0, 0.5};
    static const int want[] = {29, 57, 58, 0, 50};
    int64_t c[100];
    double s[100];
    for (int e = 0; e < 100; e++) {
        c[e] = 1 + e;
        s[e] = (double)((e * 37) % 100);
    }
    reap_layer_stats st;
    make_layer(&st, 0, 100, 8, c, s);
    for (size_t i = 0; i < sizeof ratios / sizeof ratios[0]; i++) {
        reap_keep_opts o = {REAP_CRIT_REAP, ratios[i], -1, 0, 0};
        reap_keepset ks;
        int n = -1;
        CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_OK);
        CHECK(n == want[i]);
        CHECK_RC(reap_keepset_compute(NULL, &st, 1, &o, &ks), REAP_OK);
        CHECK(ks.n_prune == want[i] && ks.n_keep == 100 - want[i]);
        reap_keepset_free(&ks);
    }
    reap_layer_stats_free(&st);

    reap_keep_opts o = {REAP_CRIT_REAP, 0, 7, 0, 0};
    int n = -1;
    CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_OK);
    CHECK(n == 7);
    o.n_prune = 5000000000LL; /* far above any int: named as given, not clamped */
    CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_E_PRECONDITION);
    CHECK_ERRMSG("n_prune 5000000000 is not below the 100 experts");
    o.n_prune = 100;
    CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_E_PRECONDITION);
    CHECK_ERRMSG("n_prune 100 is not below");
    o.n_prune = 93; /* leaves 7 < K = 8 */
    CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_E_PRECONDITION);
    CHECK_ERRMSG("leaves 7, fewer than the 8");
    o.n_prune = -1;
    o.ratio = 1.0;
    CHECK_RC(reap_keep_opts_check(&o), REAP_E_INVALID);
    CHECK_RC(reap_keep_n_prune(&o, 100, 8, &n), REAP_E_INVALID);
    CHECK_ERRMSG("ratio 1 is outside [0, 1)");
    o.ratio = NAN;
    CHECK_RC(reap_keep_opts_check(&o), REAP_E_INVALID);
    o.ratio = -0.1;
    CHECK_RC(reap_keep_opts_check(&o), REAP_E_INVALID);
    o.ratio = 0.25;
    CHECK_RC(reap_keep_opts_check(&o), REAP_OK);
}

static void test_super_experts(void)
{
    /* 16 layers x 16 experts; max_act ~1 except expert 5 of layers 1 and 15 (100): the
     * 99.5th percentile interpolates towards 100 (~72.8) and is the threshold. Only the
     * first floor(0.75 x 16) = 12 layers are protected: layer 1's expert 5 survives
     * even though it scores lowest, layer 15's does not. */
    enum { L = 16, E = 16 };
    reap_layer_stats st[L];
    int64_t c[E];
    double s[E];
    for (int e = 0; e < E; e++) {
        c[e] = 10;
        s[e] = 10.0 * (e + 1);
    }
    s[5] = 0.001;
    for (int l = 0; l < L; l++) {
        make_layer(&st[l], l, E, 2, c, s);
        for (int e = 0; e < E; e++)
            st[l].max_act[e] = 1.0f + 0.01f * (float)e;
    }
    st[1].max_act[5] = 100.0f;
    st[15].max_act[5] = 100.0f;
    reap_keepset ks;
    reap_keep_opts o = {REAP_CRIT_REAP, 0.5, -1, 1, 0};
    CHECK_RC(reap_keepset_compute(NULL, st, L, &o, &ks), REAP_OK);
    CHECK(ks.super_threshold > 70.0 && ks.super_threshold < 75.0);
    CHECK(ks.layers[1].n_super == 1 && ks.layers[1].is_super[5]);
    CHECK(ks.layers[15].n_super == 0);
    CHECK(reap_keep_new_index(&ks, &ks.layers[1], 5) >= 0);
    CHECK(reap_keep_new_index(&ks, &ks.layers[15], 5) < 0);
    /* layer 1 keeps 8: expert 5 plus the 7 best (9..15) */
    CHECK(reap_keep_new_index(&ks, &ks.layers[1], 8) < 0);
    CHECK(reap_keep_new_index(&ks, &ks.layers[1], 9) >= 0);
    reap_keepset_free(&ks);
    o.protect_super_experts = 0;
    CHECK_RC(reap_keepset_compute(NULL, st, L, &o, &ks), REAP_OK);
    CHECK(reap_keep_new_index(&ks, &ks.layers[1], 5) < 0 && ks.super_threshold == 0);
    reap_keepset_free(&ks);
    for (int l = 0; l < L; l++)
        reap_layer_stats_free(&st[l]);
}

static void test_parse(void)
{
    reap_keep_opts o;
    reap_criterion c;
    CHECK_RC(reap_keep_opts_parse("0.4", NULL, NULL, 0, &o), REAP_OK);
    CHECK(o.ratio == 0.4 && o.n_prune == -1 && o.criterion == REAP_CRIT_REAP);
    CHECK_RC(reap_keep_opts_parse(NULL, "3", "ean_sum", 1, &o), REAP_OK);
    CHECK(o.n_prune == 3 && o.criterion == REAP_CRIT_EAN_SUM && o.protect_super_experts);
    CHECK_RC(reap_keep_opts_parse("0.4", "3", NULL, 0, &o), REAP_E_INVALID);
    CHECK_RC(reap_keep_opts_parse(NULL, NULL, NULL, 0, &o), REAP_E_INVALID);
    CHECK_RC(reap_keep_opts_parse("1.5", NULL, NULL, 0, &o), REAP_E_INVALID);
    CHECK_RC(reap_keep_opts_parse("abc", NULL, NULL, 0, &o), REAP_E_INVALID);
    CHECK_RC(reap_keep_opts_parse(NULL, "-1", NULL, 0, &o), REAP_E_INVALID);
    CHECK_RC(reap_criterion_from_name("ean_ca", &c), REAP_E_UNSUPPORTED);
    CHECK_RC(reap_criterion_from_name("nope", &c), REAP_E_INVALID);
    const char *names[] = {"reap", "frequency", "ean_sum", "ean_mean", "weighted_ean_sum",
                           "weighted_frequency", "max_activations"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        CHECK_RC(reap_criterion_from_name(names[i], &c), REAP_OK);
        CHECK(!strcmp(reap_criterion_name(c), names[i]));
    }
}

static void test_stats_json(void)
{
    const int64_t c[4] = {3, 0, 5, 1};
    const double s[4] = {0.1, 0.0, 1.0 / 3.0, 2.5e-7};
    reap_layer_stats st[2], *rd = NULL;
    make_layer(&st[0], 0, 4, 2, c, s);
    make_layer(&st[1], 2, 4, 2, c, s);
    char path[8192], bad[8192];
    snprintf(path, sizeof path, "%s/stats.json", scratch);
    CHECK_RC(reap_stats_json_write(path, "ab12", NULL, 9, st, 2), REAP_OK);
    int n = 0;
    char *mid = NULL, *cid = (char *)1;
    int64_t tok = 0;
    CHECK_RC(reap_stats_json_read(path, &rd, &n, &mid, &cid, &tok), REAP_OK);
    CHECK(n == 2 && tok == 9 && mid && !strcmp(mid, "ab12") && cid == NULL);
    for (int i = 0; rd && i < n; i++) {
        CHECK(rd[i].layer == st[i].layer && rd[i].n_experts == 4 && rd[i].top_k == 2 &&
              rd[i].tokens == st[i].tokens);
        for (int e = 0; e < 4; e++) {
            CHECK(rd[i].count[e] == st[i].count[e]);
            CHECK(rd[i].sum_gate_norm[e] == st[i].sum_gate_norm[e]); /* exact round trip */
            CHECK(rd[i].sum_norm[e] == st[i].sum_norm[e]);
            CHECK(rd[i].sum_gate[e] == st[i].sum_gate[e]);
            CHECK(rd[i].max_act[e] == st[i].max_act[e]); /* -inf for never routed */
        }
    }
    /* the digest does not depend on order or source */
    char h1[65], h2[65], h3[65];
    CHECK_RC(reap_stats_digest(st, 2, h1), REAP_OK);
    reap_layer_stats swapped[2] = {rd[1], rd[0]};
    CHECK_RC(reap_stats_digest(swapped, 2, h2), REAP_OK);
    CHECK(!strcmp(h1, h2));
    rd[0].sum_gate[1] += 1e-12;
    CHECK_RC(reap_stats_digest(rd, 2, h3), REAP_OK);
    CHECK(strcmp(h1, h3) != 0);
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&rd[i]);
    free(rd);
    free(mid);

    /* malformed documents */
    struct {
        const char *text, *msg;
    } cases[] = {
        {"{\"format\": \"other\"}", "not a reap-stats/1"},
        {"{\"format\": \"reap-stats/1\", \"layers\": 3}", "'layers' must be an array"},
        {"{\"format\": \"reap-stats/1\", \"layers\": [{\"layer\": 0, \"n_experts\": 2, "
         "\"top_k\": 3, \"tokens\": 1}]}", "'top_k'"},
        {"{\"format\": \"reap-stats/1\", \"layers\": [{\"layer\": 0, \"n_experts\": 2, "
         "\"top_k\": 1, \"tokens\": 1, \"count\": [1], \"sum_gate_norm\": [1, 2], "
         "\"sum_norm\": [1, 2], \"sum_gate\": [1, 2], \"max_act\": [1, 2]}]}", "'count'"},
        {"{\"format\": \"reap-stats/1\", \"layers\": [{\"layer\": 0, \"n_experts\": 2, "
         "\"top_k\": 1, \"tokens\": 1, \"count\": [1, -1], \"sum_gate_norm\": [1, 2], "
         "\"sum_norm\": [1, 2], \"sum_gate\": [1, 2], \"max_act\": [1, 2]}]}", "count[1]"},
        {"{\"format\": \"reap-stats/1\", \"layers\": [{\"layer\": 0, \"n_experts\": 2, "
         "\"top_k\": 1, \"tokens\": 1, \"count\": [1, 1], \"sum_gate_norm\": [1, \"x\"], "
         "\"sum_norm\": [1, 2], \"sum_gate\": [1, 2], \"max_act\": [1, 2]}]}",
         "sum_gate_norm[1]"},
        {"{\"format\": \"reap-stats/1\", \"layers\": [", "stats_bad.json:"},
    };
    snprintf(bad, sizeof bad, "%s/stats_bad.json", scratch);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(bad, cases[i].text);
        rd = NULL;
        CHECK_RC(reap_stats_json_read(bad, &rd, &n, NULL, NULL, NULL), REAP_E_FORMAT);
        CHECK_ERRMSG(cases[i].msg);
        CHECK(rd == NULL && n == 0);
    }
    snprintf(bad, sizeof bad, "%s/does-not-exist.json", scratch);
    CHECK_RC(reap_stats_json_read(bad, &rd, &n, NULL, NULL, NULL), REAP_E_NOTFOUND);
    reap_layer_stats_free(&st[0]);
    reap_layer_stats_free(&st[1]);
}

/* The one keep set -> JSON shape: {"<layer>": [kept ids ascending]} in layer order, the
 * same bytes whoever prints it (reapctl keepset, the manifest, reap_metadata.json). */
static void test_keepset_json(void)
{
    int k3[2] = {0, 2}, k12[2] = {1, 3};
    reap_keep_layer layers[2] = {{.layer = 3, .keep = k3}, {.layer = 12, .keep = k12}};
    reap_keepset ks = {.n_experts = 4, .n_prune = 2, .n_keep = 2, .n_layers = 2,
                       .layers = layers};
    json_t *j = reap_keepset_json(&ks);
    CHECK(j != NULL);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    CHECK_MSG(text && !strcmp(text, "{\"3\":[0,2],\"12\":[1,3]}"), "%s", text ? text : "NULL");
    free(text);
    json_decref(j);
    ks.n_layers = 0;
    j = reap_keepset_json(&ks);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    CHECK(text && !strcmp(text, "{}"));
    free(text);
    json_decref(j);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_keepset";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    test_basic();
    test_ratio_floor();
    test_n_prune_rule();
    test_super_experts();
    test_parse();
    test_stats_json();
    test_keepset_json();
    TEST_MAIN_END();
}

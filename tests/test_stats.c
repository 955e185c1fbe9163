/* test_stats.c - statistics by modality (stats.h) on hand-made statistics: the view rule
 * (a layer without image tokens has its totals as its text set), exact merging per set,
 * the digest (text-only layers hash as the encoding before modalities existed, computed
 * here independently), the stats JSON (text-only files carry no modality keys; image
 * layers round trip exactly), and the modality-balanced keep set.
 *
 * Usage: test_stats SCRATCH_DIR (created if missing).
 */
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "keepset.h"
#include "reap_err.h"
#include "stats.h"
#include "stats_json.h"
#include "stats_table.h"
#include "test_fixtures.h"
#include "test_util.h"

static uint64_t rng = 12345;

static double urand(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* A modality set with random values; expert e never routed when (e + salt) % 5 == 0. */
static void fill_mod(reap_modality_stats *v, int E, int salt, int64_t tokens)
{
    v->tokens = tokens;
    for (int e = 0; e < E; e++) {
        if ((e + salt) % 5 == 0) {
            v->count[e] = 0;
            v->sum_gate_norm[e] = v->sum_norm[e] = v->sum_gate[e] = 0.0;
            v->max_act[e] = -INFINITY;
            continue;
        }
        v->count[e] = 1 + (int64_t)(urand() * 40);
        v->sum_norm[e] = urand() * 10 * (double)v->count[e];
        v->sum_gate[e] = urand() * (double)v->count[e];
        v->sum_gate_norm[e] = urand() * v->sum_norm[e];
        v->max_act[e] = (float)(urand() * 8 - 2);
    }
}

/* Totals = text + image (sums add, max takes max). */
static void totals_from_mods(reap_layer_stats *s)
{
    const reap_modality_stats *t = &s->mod[REAP_MOD_TEXT], *i = &s->mod[REAP_MOD_IMAGE];
    s->tokens = t->tokens + i->tokens;
    for (int e = 0; e < s->n_experts; e++) {
        s->count[e] = t->count[e] + i->count[e];
        s->sum_gate_norm[e] = t->sum_gate_norm[e] + i->sum_gate_norm[e];
        s->sum_norm[e] = t->sum_norm[e] + i->sum_norm[e];
        s->sum_gate[e] = t->sum_gate[e] + i->sum_gate[e];
        s->max_act[e] = t->max_act[e] > i->max_act[e] ? t->max_act[e] : i->max_act[e];
    }
}

static void make_image_layer(reap_layer_stats *s, int layer, int E)
{
    CHECK_RC(reap_layer_stats_init(s, layer, E, 2), REAP_OK);
    fill_mod(&s->mod[REAP_MOD_TEXT], E, 0, 100 + layer);
    fill_mod(&s->mod[REAP_MOD_IMAGE], E, 2, 7 + layer);
    totals_from_mods(s);
}

/* A text-only layer as backends and old readers leave it: totals only. */
static void make_text_layer(reap_layer_stats *s, int layer, int E)
{
    reap_modality_stats t;
    CHECK_RC(reap_layer_stats_init(s, layer, E, 2), REAP_OK);
    t = (reap_modality_stats){0, s->count, s->sum_gate_norm, s->sum_norm, s->sum_gate,
                              s->max_act};
    fill_mod(&t, E, 1, 90 + layer);
    s->tokens = t.tokens;
}

static int mod_equal(const reap_modality_stats *a, const reap_modality_stats *b, int E)
{
    if (a->tokens != b->tokens)
        return 0;
    for (int e = 0; e < E; e++)
        if (a->count[e] != b->count[e] || a->sum_gate_norm[e] != b->sum_gate_norm[e] ||
            a->sum_norm[e] != b->sum_norm[e] || a->sum_gate[e] != b->sum_gate[e] ||
            memcmp(&a->max_act[e], &b->max_act[e], sizeof(float)))
            return 0;
    return 1;
}

static void test_view(void)
{
    reap_layer_stats t, im;
    reap_modality_stats v;
    make_text_layer(&t, 0, 8);
    /* stale values in the modality arrays of a text-only layer do not count */
    t.mod[REAP_MOD_TEXT].count[3] = 999;
    t.mod[REAP_MOD_IMAGE].count[3] = 999;
    CHECK(!reap_layer_stats_has_image(&t));
    reap_layer_stats_modality(&t, REAP_MOD_TEXT, &v);
    CHECK(v.tokens == t.tokens && v.count == t.count && v.max_act == t.max_act);
    reap_layer_stats_modality(&t, REAP_MOD_IMAGE, &v);
    CHECK(v.tokens == 0);
    make_image_layer(&im, 1, 8);
    CHECK(reap_layer_stats_has_image(&im));
    reap_layer_stats_modality(&im, REAP_MOD_IMAGE, &v);
    CHECK(v.tokens == 8 && v.count == im.mod[REAP_MOD_IMAGE].count);
    reap_layer_stats_free(&t);
    reap_layer_stats_free(&im);
}

static void test_merge(void)
{
    const int E = 8;
    reap_layer_stats a, b, c, t1, t2;
    make_text_layer(&a, 3, E);       /* text only */
    make_image_layer(&b, 3, E);
    make_image_layer(&c, 3, E);      /* other random values */
    /* expected text and image of a + b + c, computed directly */
    reap_layer_stats want;
    CHECK_RC(reap_layer_stats_init(&want, 3, E, 2), REAP_OK);
    const reap_modality_stats at = {a.tokens, a.count, a.sum_gate_norm, a.sum_norm,
                                    a.sum_gate, a.max_act};
    for (int m = 0; m < REAP_N_MODALITIES; m++) {
        reap_modality_stats *w = &want.mod[m];
        const reap_modality_stats *src[3] = {m == REAP_MOD_TEXT ? &at : NULL, &b.mod[m],
                                             &c.mod[m]};
        for (int k = 0; k < 3; k++) {
            if (!src[k])
                continue;
            w->tokens += src[k]->tokens;
            for (int e = 0; e < E; e++) {
                w->count[e] += src[k]->count[e];
                w->sum_gate_norm[e] += src[k]->sum_gate_norm[e];
                w->sum_norm[e] += src[k]->sum_norm[e];
                w->sum_gate[e] += src[k]->sum_gate[e];
                if (src[k]->max_act[e] > w->max_act[e])
                    w->max_act[e] = src[k]->max_act[e];
            }
        }
    }
    CHECK_RC(reap_layer_stats_merge(&a, &b), REAP_OK);
    CHECK_RC(reap_layer_stats_merge(&a, &c), REAP_OK);
    CHECK(reap_layer_stats_has_image(&a));
    CHECK_MSG(mod_equal(&a.mod[REAP_MOD_TEXT], &want.mod[REAP_MOD_TEXT], E),
              "text set of a merge with a text-only layer");
    CHECK_MSG(mod_equal(&a.mod[REAP_MOD_IMAGE], &want.mod[REAP_MOD_IMAGE], E),
              "image set of the merge");
    /* the totals still equal text + image: counts exactly, sums to rounding, max exactly */
    CHECK(a.tokens == a.mod[0].tokens + a.mod[1].tokens);
    for (int e = 0; e < E; e++) {
        CHECK(a.count[e] == a.mod[0].count[e] + a.mod[1].count[e]);
        CHECK(fabs(a.sum_gate_norm[e] - (a.mod[0].sum_gate_norm[e] +
                                         a.mod[1].sum_gate_norm[e])) <=
              1e-12 * fabs(a.sum_gate_norm[e]));
        CHECK(a.max_act[e] == fmaxf(a.mod[0].max_act[e], a.mod[1].max_act[e]));
    }
    /* image + text-only in that order: dst keeps its sets and adds src's totals as text */
    make_image_layer(&t1, 4, E);
    make_text_layer(&t2, 4, E);
    int64_t c0 = t1.mod[REAP_MOD_TEXT].count[1], ci = t1.mod[REAP_MOD_IMAGE].count[1];
    CHECK_RC(reap_layer_stats_merge(&t1, &t2), REAP_OK);
    CHECK(t1.mod[REAP_MOD_TEXT].count[1] == c0 + t2.count[1]);
    CHECK(t1.mod[REAP_MOD_IMAGE].count[1] == ci);
    CHECK(t1.mod[REAP_MOD_TEXT].tokens + t1.mod[REAP_MOD_IMAGE].tokens == t1.tokens);
    reap_layer_stats_free(&t1);
    reap_layer_stats_free(&t2);
    /* text-only + text-only stays text-only */
    make_text_layer(&t1, 5, E);
    make_text_layer(&t2, 5, E);
    CHECK_RC(reap_layer_stats_merge(&t1, &t2), REAP_OK);
    CHECK(!reap_layer_stats_has_image(&t1));
    reap_layer_stats_free(&t1);
    reap_layer_stats_free(&t2);
    reap_layer_stats_free(&want);
    reap_layer_stats_free(&a);
    reap_layer_stats_free(&b);
    reap_layer_stats_free(&c);
}

/* The reap-stats/1 digest as documented before modalities existed, written out here. */
static void old_digest(const reap_layer_stats *s, int n, char hex[65])
{
    crypto_generichash_state h;
    uint8_t out[32], b[8];
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)"reap-stats/1", 12);
    for (int i = 0; i < n; i++) {   /* layers already ascending */
        uint64_t v[4] = {(uint64_t)s[i].layer, (uint64_t)s[i].n_experts,
                         (uint64_t)s[i].top_k, (uint64_t)s[i].tokens};
        for (int k = 0; k < 4; k++) {
            for (int j = 0; j < 8; j++)
                b[j] = (uint8_t)(v[k] >> (8 * j));
            crypto_generichash_update(&h, b, k < 3 ? 4 : 8);
        }
        for (int e = 0; e < s[i].n_experts; e++) {
            uint64_t w[4];
            uint32_t f;
            w[0] = (uint64_t)s[i].count[e];
            memcpy(&w[1], &s[i].sum_gate_norm[e], 8);
            memcpy(&w[2], &s[i].sum_norm[e], 8);
            memcpy(&w[3], &s[i].sum_gate[e], 8);
            memcpy(&f, &s[i].max_act[e], 4);
            for (int k = 0; k < 4; k++) {
                for (int j = 0; j < 8; j++)
                    b[j] = (uint8_t)(w[k] >> (8 * j));
                crypto_generichash_update(&h, b, 8);
            }
            for (int j = 0; j < 4; j++)
                b[j] = (uint8_t)(f >> (8 * j));
            crypto_generichash_update(&h, b, 4);
        }
    }
    crypto_generichash_final(&h, out, 32);
    reap_hex(out, 32, hex);
}

static void test_digest(void)
{
    reap_layer_stats s[2];
    char got[65], want[65], h2[65];
    CHECK(sodium_init() >= 0);
    make_text_layer(&s[0], 0, 8);
    make_text_layer(&s[1], 1, 8);
    s[0].mod[REAP_MOD_TEXT].sum_gate[2] = 42.0; /* ignored: no image tokens */
    CHECK_RC(reap_stats_digest(s, 2, got), REAP_OK);
    old_digest(s, 2, want);
    CHECK_MSG(!strcmp(got, want), "text-only digest changed: %s != %s", got, want);
    /* with image tokens the modality sets enter the digest */
    reap_layer_stats_free(&s[1]);
    make_image_layer(&s[1], 1, 8);
    CHECK_RC(reap_stats_digest(s, 2, got), REAP_OK);
    old_digest(s, 2, want);
    CHECK(strcmp(got, want) != 0);
    s[1].mod[REAP_MOD_IMAGE].max_act[1] += 0.25f;
    CHECK_RC(reap_stats_digest(s, 2, h2), REAP_OK);
    CHECK_MSG(strcmp(got, h2) != 0, "an image max_act does not change the digest");
    reap_layer_stats_free(&s[0]);
    reap_layer_stats_free(&s[1]);
}

static void test_json(void)
{
    reap_layer_stats st[2], *rd = NULL;
    int n = 0;
    char path[8192];
    make_text_layer(&st[0], 0, 6);
    make_image_layer(&st[1], 1, 6);
    snprintf(path, sizeof path, "%s/mod.json", scratch);
    CHECK_RC(reap_stats_json_write(path, NULL, NULL, 0, st, 2), REAP_OK);
    json_t *doc = json_load_file(path, 0, NULL);
    const json_t *layers = json_object_get(doc, "layers");
    CHECK(doc && json_array_size(layers) == 2);
    CHECK_MSG(!json_object_get(json_array_get(layers, 0), "image") &&
                  !json_object_get(json_array_get(layers, 0), "text"),
              "a text-only layer got modality keys");
    CHECK(json_is_object(json_object_get(json_array_get(layers, 1), "image")));
    json_decref(doc);
    CHECK_RC(reap_stats_json_read(path, &rd, &n, NULL, NULL, NULL), REAP_OK);
    CHECK(n == 2);
    if (rd && n == 2) {
        CHECK(!reap_layer_stats_has_image(&rd[0]));
        CHECK(reap_layer_stats_has_image(&rd[1]));
        for (int m = 0; m < REAP_N_MODALITIES; m++)
            CHECK_MSG(mod_equal(&rd[1].mod[m], &st[1].mod[m], 6), "modality %d round trip",
                      m);
    }
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&rd[i]);
    free(rd);
    /* one modality of two is refused */
    snprintf(path, sizeof path, "%s/mod_bad.json", scratch);
    write_text(path, "{\"format\": \"reap-stats/1\", \"layers\": [{\"layer\": 0, "
               "\"n_experts\": 1, \"top_k\": 1, \"tokens\": 1, \"count\": [1], "
               "\"sum_gate_norm\": [1], \"sum_norm\": [1], \"sum_gate\": [1], "
               "\"max_act\": [1], \"image\": {\"tokens\": 1, \"count\": [1], "
               "\"sum_gate_norm\": [1], \"sum_norm\": [1], \"sum_gate\": [1], "
               "\"max_act\": [1]}}]}");
    rd = NULL;
    CHECK_RC(reap_stats_json_read(path, &rd, &n, NULL, NULL, NULL), REAP_E_FORMAT);
    CHECK_ERRMSG("'text' must be an object");
    reap_layer_stats_free(&st[0]);
    reap_layer_stats_free(&st[1]);
}

/* One expert's text and image (count, mean REAP score). */
static void set_expert(reap_layer_stats *s, int e, int64_t ct, double rt, int64_t ci,
                       double ri)
{
    reap_modality_stats *t = &s->mod[REAP_MOD_TEXT], *i = &s->mod[REAP_MOD_IMAGE];
    t->count[e] = ct;
    t->sum_gate_norm[e] = rt * (double)ct;
    t->sum_norm[e] = t->sum_gate[e] = (double)ct;
    t->max_act[e] = ct ? 1.0f : -INFINITY;
    i->count[e] = ci;
    i->sum_gate_norm[e] = ri * (double)ci;
    i->sum_norm[e] = i->sum_gate[e] = (double)ci;
    i->max_act[e] = ci ? 1.0f : -INFINITY;
}

static int keeps3(const reap_keepset *ks, int a, int b, int c)
{
    const int *k = ks->layers[0].keep;
    return ks->n_keep == 3 && k[0] == a && k[1] == b && k[2] == c;
}

/* The image-dominant expert 3 (five image tokens at 0.6, one text token at 0) loses to
 * the text expert 2 (0.55) on the totals (0.5) and wins when balanced (0.3 > 0.275). */
static void test_balanced(void)
{
    reap_layer_stats s;
    reap_keepset ks;
    CHECK_RC(reap_layer_stats_init(&s, 0, 4, 1), REAP_OK);
    set_expert(&s, 0, 60, 0.9, 2, 0.5);
    set_expert(&s, 1, 60, 0.8, 1, 0.6);
    set_expert(&s, 2, 60, 0.55, 0, 0.0);
    set_expert(&s, 3, 1, 0.0, 5, 0.6);
    s.mod[REAP_MOD_TEXT].tokens = 181;
    s.mod[REAP_MOD_IMAGE].tokens = 8;
    totals_from_mods(&s);
    reap_keep_opts o = {.criterion = REAP_CRIT_REAP, .n_prune = 1};
    CHECK_RC(reap_keepset_compute(NULL, &s, 1, &o, &ks), REAP_OK);
    CHECK_MSG(ks.n_layers == 1 && keeps3(&ks, 0, 1, 2), "totals keep the text expert");
    reap_keepset_free(&ks);
    o.balance_modalities = 1;
    CHECK_RC(reap_keepset_compute(NULL, &s, 1, &o, &ks), REAP_OK);
    CHECK_MSG(ks.n_layers == 1 && keeps3(&ks, 0, 1, 3),
              "balanced keeps the image expert");
    CHECK(ks.balance_modalities == 1);
    if (ks.n_layers == 1)
        CHECK(fabs(ks.layers[0].scores[3] - 0.3) < 1e-12 &&
              fabs(ks.layers[0].scores[2] - 0.275) < 1e-12);
    reap_keepset_free(&ks);
    o.criterion = REAP_CRIT_FREQUENCY;
    CHECK_RC(reap_keepset_compute(NULL, &s, 1, &o, &ks), REAP_E_INVALID);
    CHECK_ERRMSG("balance_modalities needs criterion reap (got frequency)");
    reap_layer_stats_free(&s);

    /* a text-only layer: balanced scores are the REAP scores, bit for bit */
    reap_keepset a, b;
    make_text_layer(&s, 0, 8);
    reap_keep_opts p = {.criterion = REAP_CRIT_REAP, .n_prune = 3};
    CHECK_RC(reap_keepset_compute(NULL, &s, 1, &p, &a), REAP_OK);
    p.balance_modalities = 1;
    CHECK_RC(reap_keepset_compute(NULL, &s, 1, &p, &b), REAP_OK);
    if (a.n_layers == 1 && b.n_layers == 1) {
        CHECK(!memcmp(a.layers[0].scores, b.layers[0].scores, 8 * sizeof(double)));
        CHECK(!memcmp(a.layers[0].keep, b.layers[0].keep, 5 * sizeof(int)));
    }
    reap_keepset_free(&a);
    reap_keepset_free(&b);
    reap_layer_stats_free(&s);
}

/* The table's image columns appear only when a layer saw image tokens. */
static void test_table(void)
{
    reap_layer_stats st[2];
    char buf[4096];
    make_text_layer(&st[0], 0, 8);
    make_text_layer(&st[1], 1, 8);
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f)
        return;
    reap_stats_print_table(f, st, 2, 0.25);
    size_t n = fread(buf, 1, sizeof buf - 1, (rewind(f), f));
    buf[n] = 0;
    CHECK_MSG(!strstr(buf, "img_tok"), "text-only table changed:\n%s", buf);
    fclose(f);
    reap_layer_stats_free(&st[1]);
    make_image_layer(&st[1], 1, 8);   /* image tokens 8; expert 3 never sees one */
    f = tmpfile();
    reap_stats_print_table(f, st, 2, 0.25);
    n = fread(buf, 1, sizeof buf - 1, (rewind(f), f));
    buf[n] = 0;
    fclose(f);
    CHECK_MSG(strstr(buf, "img_tok") && strstr(buf, "  0   0/8  ") &&
                  strstr(buf, "  8   7/8  "), "image columns:\n%s", buf);
    reap_layer_stats_free(&st[0]);
    reap_layer_stats_free(&st[1]);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_stats";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    test_view();
    test_merge();
    test_digest();
    test_json();
    test_balanced();
    test_table();
    TEST_MAIN_END();
}

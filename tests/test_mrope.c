/* test_mrope.c - the language-model side of images (Qwen3-VL): mRoPE configuration,
 * image features replacing the embeddings at the image slots, deepstack sets added after
 * the first decoder layers, interleaved mRoPE over (t, h, w) ids, on the CPU engine.
 *
 * 1. Config: the 235B fixture's text rope_scaling gives [24, 20, 20] interleaved;
 *    rope_parameters is read too; a section whose sum is not head_dim / 2, one that is
 *    not three integers, and mrope_interleaved false are refused; absent: the
 *    transformers default [24, 20, 20]; qwen3_moe has no mRoPE.
 * 2. Engine on a generated qwen3_vl_moe model (head_dim 16, section [4, 2, 2]) with
 *    hand-made spans in packed rows (images in reverse index order along the rows, two of
 *    them back to back) and random features: the statistics differ from text only and from
 *    the same features without deepstack (both inputs reach the experts); identical
 *    across thread counts and micro-batch sizes; resuming from the checkpoint after layer
 *    0 gives the later layers bit for bit (deepstack set 0 is in the checkpoint, set 1 is
 *    added after the resumed layer 1); refusals (spans without features, a wrong number
 *    of feature rows, a merge size that does not fit the grids, a NULL deepstack set).
 * 3. With `--oracle PYTHON ORACLE_DIR` (the ctest case oracle_mrope_images): the same run
 *    against tests/oracle/reap_oracle.py --images (float64, written from the spec):
 *    statistics within 1e-5 relative, counts exact (compare_stats.py). Without mRoPE ids
 *    (1-D positions), without the replacement or without deepstack this comparison fails.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "config.h"
#include "engine.h"
#include "genmodel.h"
#include "positions.h"
#include "reap_err.h"
#include "stats_json.h"
#include "test_fixtures.h"
#include "test_mrope_case.h"
#include "test_util.h"

/* ---- 1. config ------------------------------------------------------------------------ */

static int load_text(const char *name, const char *json, reap_config *c)
{
    const char *path = write_scratch(name, json);
    return reap_config_load(path, c);
}

#define VL_HEAD "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"hidden_size\": 64, " \
                "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"head_dim\": 16, " \
                "\"vocab_size\": 100, \"num_experts\": 4, \"num_experts_per_tok\": 2, " \
                "\"moe_intermediate_size\": 32"

static void test_config(void)
{
    reap_config c;
    char fx[1024], path[1200];
    fixtures_dir(fx, sizeof fx);
    snprintf(path, sizeof path, "%s/qwen3-vl-235b-a22b-awq/config.json", fx);
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.mrope_interleaved == 1 && c.mrope_section[0] == 24 && c.mrope_section[1] == 20 &&
          c.mrope_section[2] == 20 && c.head_dim == 128);
    reap_config_free(&c);

    CHECK_RC(load_text("p.json", VL_HEAD ", \"rope_parameters\": {\"rope_type\": \"default\", "
                       "\"rope_theta\": 5000000, \"mrope_section\": [4, 2, 2], "
                       "\"mrope_interleaved\": true}}}", &c), REAP_OK);
    CHECK(c.mrope_section[0] == 4 && c.mrope_section[1] == 2 && c.mrope_section[2] == 2 &&
          c.mrope_interleaved == 1);
    reap_config_free(&c);

    CHECK_RC(load_text("absent.json", VL_HEAD "}}", &c), REAP_OK);
    CHECK(c.mrope_section[0] == 24 && c.mrope_section[1] == 20 && c.mrope_section[2] == 20);
    reap_config_free(&c);

    CHECK_RC(load_text("sum.json", VL_HEAD ", \"rope_scaling\": {\"mrope_section\": "
                       "[4, 2, 3]}}}", &c), REAP_E_INVALID);
    CHECK(strstr(reap_err_msg(), "text_config.rope_scaling.mrope_section") != NULL);
    CHECK_RC(load_text("two.json", VL_HEAD ", \"rope_scaling\": {\"mrope_section\": "
                       "[6, 2]}}}", &c), REAP_E_FORMAT);
    CHECK_RC(load_text("real.json", VL_HEAD ", \"rope_scaling\": {\"mrope_section\": "
                       "[4, 2.0, 2]}}}", &c), REAP_E_FORMAT);
    CHECK_RC(load_text("neg.json", VL_HEAD ", \"rope_scaling\": {\"mrope_section\": "
                       "[10, -1, -1]}}}", &c), REAP_E_INVALID);
    CHECK_RC(load_text("chunked.json", VL_HEAD ", \"rope_scaling\": {\"mrope_section\": "
                       "[4, 2, 2], \"mrope_interleaved\": false}}}", &c), REAP_E_UNSUPPORTED);

    CHECK_RC(load_text("moe.json", "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, "
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                       "\"vocab_size\": 100, \"num_experts\": 4, \"num_experts_per_tok\": 2, "
                       "\"moe_intermediate_size\": 32}", &c), REAP_OK);
    CHECK(c.mrope_section[0] == 0 && c.mrope_section[1] == 0 && c.mrope_section[2] == 0);
    reap_config_free(&c);
}

/* ---- 2. engine with images (the case: test_mrope_case.h) ------------------------------- */

static int score_img(vl_case *v, const reap_image_features *f, int threads, int batch,
                     reap_layer_stats **st, int *n)
{
    reap_engine_opts o = {.backend = &reap_backend_cpu,
                          .backend_opts = {.threads = threads, .batch_rows = batch},
                          .image = f};
    return reap_engine_score(v->l.ck, &v->l.cfg, &v->l.rows, &o, st, n);
}

static void test_engine_images(vl_case *v)
{
    reap_layer_stats *img = NULL, *img2 = NULL, *text = NULL, *nodeep = NULL;
    int n_img = 0, n_img2 = 0, n_text = 0, n_nodeep = 0;
    CHECK_RC(score_img(v, &v->feat, 2, 8, &img, &n_img), REAP_OK);
    CHECK(n_img == 3);
    CHECK_RC(score_img(v, &v->feat, 1, 1, &img2, &n_img2), REAP_OK);
    if (n_img == 3 && n_img2 == 3)
        CHECK_MSG(stats_identical(img, img2, 3), "threads/micro-batch change the result");

    /* text only: the same rows without spans */
    int64_t n_spans = v->l.rows.n_spans;
    v->l.rows.n_spans = 0;
    CHECK_RC(score_img(v, NULL, 2, 8, &text, &n_text), REAP_OK);
    v->l.rows.n_spans = n_spans;
    reap_image_features nd = v->feat;
    nd.n_deepstack = 0;
    CHECK_RC(score_img(v, &nd, 2, 8, &nodeep, &n_nodeep), REAP_OK);
    if (n_img == 3 && n_text == 3 && n_nodeep == 3) {
        CHECK_MSG(!stats_identical(img, text, 1), "image features changed nothing");
        /* deepstack set 0 enters after layer 0: layer 0 is the same, layer 1 differs */
        CHECK(stats_identical(img, nodeep, 1));
        CHECK_MSG(!stats_identical(img + 1, nodeep + 1, 1), "deepstack changed nothing");
    }
    free_stats(img, n_img);
    free_stats(img2, n_img2);
    free_stats(text, n_text);
    free_stats(nodeep, n_nodeep);
}


/* Statistics by modality on the CPU backend: the image tokens are exactly the span slots,
 * the two sets add up to the totals (counts exactly, sums to 1e-12 relative, max
 * exactly), and the same rows without spans have no image set. */
static void test_modality_stats(vl_case *v)
{
    reap_layer_stats *img = NULL, *text = NULL;
    int n_img = 0, n_text = 0;
    const int K = v->l.cfg.n_experts_used;
    CHECK_RC(score_img(v, &v->feat, 2, 8, &img, &n_img), REAP_OK);
    for (int i = 0; i < n_img; i++) {
        const reap_layer_stats *s = &img[i];
        const reap_modality_stats *t = &s->mod[REAP_MOD_TEXT], *im = &s->mod[REAP_MOD_IMAGE];
        CHECK(reap_layer_stats_has_image(s));
        CHECK_MSG(im->tokens == v->n_tok, "layer %d: %lld image tokens, want %lld", s->layer,
                  (long long)im->tokens, (long long)v->n_tok);
        CHECK(t->tokens + im->tokens == s->tokens);
        int64_t routed_img = 0;
        for (int e = 0; e < s->n_experts; e++) {
            routed_img += im->count[e];
            CHECK(t->count[e] + im->count[e] == s->count[e]);
            const double sums[3][3] = {
                {s->sum_gate_norm[e], t->sum_gate_norm[e], im->sum_gate_norm[e]},
                {s->sum_norm[e], t->sum_norm[e], im->sum_norm[e]},
                {s->sum_gate[e], t->sum_gate[e], im->sum_gate[e]}};
            for (int k = 0; k < 3; k++)
                CHECK_MSG(fabs(sums[k][0] - (sums[k][1] + sums[k][2])) <=
                              1e-12 * fabs(sums[k][0]),
                          "layer %d expert %d sum %d: %.17g vs %.17g + %.17g", s->layer, e, k,
                          sums[k][0], sums[k][1], sums[k][2]);
            CHECK(s->max_act[e] == fmaxf(t->max_act[e], im->max_act[e]));
            CHECK((im->count[e] == 0) == (isinf(im->max_act[e]) && im->max_act[e] < 0));
        }
        CHECK(routed_img == im->tokens * K);
    }
    int64_t n_spans = v->l.rows.n_spans;
    v->l.rows.n_spans = 0;
    CHECK_RC(score_img(v, NULL, 2, 8, &text, &n_text), REAP_OK);
    v->l.rows.n_spans = n_spans;
    for (int i = 0; i < n_text; i++) {
        CHECK(!reap_layer_stats_has_image(&text[i]));
        for (int e = 0; e < text[i].n_experts; e++)
            CHECK(text[i].mod[REAP_MOD_IMAGE].count[e] == 0);
    }
    free_stats(img, n_img);
    free_stats(text, n_text);
}

typedef struct {
    int layer;
    float *h;
} saved_hidden;

static int save_hidden(void *ud, int layer, const float *hidden, int64_t T, int H)
{
    saved_hidden *s = ud;
    if (layer != s->layer)
        return REAP_OK;
    s->h = malloc((size_t)T * H * sizeof *s->h);
    if (!s->h)
        return REAP_E_NOMEM;
    memcpy(s->h, hidden, (size_t)T * H * sizeof *s->h);
    return REAP_OK;
}

static void test_resume_images(vl_case *v)
{
    saved_hidden sh = {.layer = 0};
    reap_engine_opts o = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 2},
                          .checkpoint_every = 1, .on_checkpoint = save_hidden, .ud = &sh,
                          .image = &v->feat};
    reap_layer_stats *full = NULL, *rest = NULL;
    int n_full = 0, n_rest = 0;
    CHECK_RC(reap_engine_score(v->l.ck, &v->l.cfg, &v->l.rows, &o, &full, &n_full), REAP_OK);
    CHECK(sh.h != NULL);
    if (sh.h) {
        reap_engine_opts r = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 1},
                              .start_layer = 1, .start_hidden = sh.h, .image = &v->feat};
        CHECK_RC(reap_engine_score(v->l.ck, &v->l.cfg, &v->l.rows, &r, &rest, &n_rest),
                 REAP_OK);
        CHECK(n_full == 3 && n_rest == 2);
        if (n_full == 3 && n_rest == 2)
            CHECK_MSG(stats_identical(full + 1, rest, 2), "resumed image layers differ");
    }
    free(sh.h);
    free_stats(full, n_full);
    free_stats(rest, n_rest);
}

static void test_refusals(vl_case *v)
{
    reap_layer_stats *st = NULL;
    int n = 0;
    CHECK_RC(score_img(v, NULL, 1, 8, &st, &n), REAP_E_INVALID);
    reap_image_features f = v->feat;
    f.n_image_tokens--;
    CHECK_RC(score_img(v, &f, 1, 8, &st, &n), REAP_E_INVALID);
    f = v->feat;
    f.spatial_merge = 3;
    CHECK_RC(score_img(v, &f, 1, 8, &st, &n), REAP_E_INVALID);
    const float *deep[2] = {v->deep[0], NULL};
    f = v->feat;
    f.deepstack = deep;
    CHECK_RC(score_img(v, &f, 1, 8, &st, &n), REAP_E_INVALID);
    f = v->feat;
    f.n_deepstack = 4; /* more than the 3 layers */
    CHECK_RC(score_img(v, &f, 1, 8, &st, &n), REAP_E_INVALID);
    int32_t img = v->l.rows.spans[1].image; /* two spans of one image */
    v->l.rows.spans[1].image = v->l.rows.spans[0].image;
    CHECK_RC(score_img(v, &v->feat, 1, 8, &st, &n), REAP_E_INVALID);
    v->l.rows.spans[1].image = img;
    CHECK(st == NULL && n == 0);
}

/* ---- 3. against the float64 oracle ----------------------------------------------------- */

static int write_f32(const char *path, const float *p, int64_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, sizeof(float), (size_t)n, f);
    return fclose(f) == 0 && w == (size_t)n ? 0 : -1;
}

static void test_oracle(vl_case *v, const char *python, const char *oracle_dir)
{
    char spec[1024], eng[1024], orc[1024], cmd[8192];
    const int64_t n = v->n_tok * v->l.cfg.hidden;
    CHECK(write_f32(sp("merged.f32"), v->merged, n) == 0);
    CHECK(write_f32(sp("deep0.f32"), v->deep[0], n) == 0);
    CHECK(write_f32(sp("deep1.f32"), v->deep[1], n) == 0);
    json_t *doc = json_object(), *ims = json_array(), *sps = json_array();
    for (int i = 0; i < N_IMAGES; i++)
        json_array_append_new(ims, json_pack("{s:[i,i,i]}", "grid", GRID[i][0], GRID[i][1],
                                             GRID[i][2]));
    for (int64_t k = 0; k < v->l.rows.n_spans; k++)
        json_array_append_new(sps, json_pack("{s:i,s:i,s:i}", "row", v->l.rows.spans[k].row,
                                             "start", v->l.rows.spans[k].start, "image",
                                             v->l.rows.spans[k].image));
    json_object_set_new(doc, "merge", json_integer(MERGE));
    json_object_set_new(doc, "images", ims);
    json_object_set_new(doc, "spans", sps);
    json_object_set_new(doc, "merged", json_string("merged.f32"));
    json_object_set_new(doc, "deepstack", json_pack("[s,s]", "deep0.f32", "deep1.f32"));
    path_join(spec, sizeof spec, scratch, "images.json");
    CHECK(json_dump_file(doc, spec, JSON_INDENT(1)) == 0);
    json_decref(doc);

    reap_layer_stats *st = NULL;
    int n_st = 0;
    CHECK_RC(score_img(v, &v->feat, 2, 8, &st, &n_st), REAP_OK);
    path_join(eng, sizeof eng, scratch, "engine.json");
    path_join(orc, sizeof orc, scratch, "oracle.json");
    CHECK_RC(reap_stats_json_write(eng, NULL, NULL, v->l.rows.n_valid, st, n_st), REAP_OK);
    free_stats(st, n_st);

    snprintf(cmd, sizeof cmd, "'%s' '%s/reap_oracle.py' --model '%s' --calib '%s' "
             "--seq-len %d --images '%s' --out '%s'", python, oracle_dir,
             sp("vl-model"), sp("vl-calib.jsonl"), SEQ_LEN, spec, orc);
    CHECK_MSG(system(cmd) == 0, "reap_oracle.py failed");
    snprintf(cmd, sizeof cmd, "'%s' '%s/compare_stats.py' '%s' '%s' --rtol 1e-5", python,
             oracle_dir, eng, orc);
    CHECK_MSG(system(cmd) == 0, "engine and oracle differ");
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "test_mrope.tmp";
    fresh_dir(scratch);
    const int oracle = argc > 4 && strcmp(argv[2], "--oracle") == 0;
    vl_case v;
    if (!oracle)
        test_config();
    vl_case_init(&v);
    if (oracle) {
        test_oracle(&v, argv[3], argv[4]);
    } else {
        test_engine_images(&v);
        test_modality_stats(&v);
        test_resume_images(&v);
        test_refusals(&v);
    }
    vl_case_free(&v);
    TEST_MAIN_END();
}

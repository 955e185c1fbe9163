/* test_engine.c - the CPU engine on generated checkpoints: results bit-identical across
 * thread counts and micro-batch sizes, statistics invariants, scoring rows R1 and R2
 * separately and merging equals scoring R1+R2 at once (a token's values do not depend on
 * the other tokens), and clear errors for a NaN weight, a config that disagrees with the
 * tensor shapes, a missing tensor, and finite weights whose activations overflow (after
 * attention, through the input norm or the q/k head norms; after the router; in an
 * expert's output; after a dense MLP: REAP_E_NUMERIC naming the layer and the stage).
 * The MoE combine's own check (moe_out, "after MoE") is not reached from finite expert
 * outputs: the routing weights of a token sum to at most 1, so the combine cannot leave
 * the float range that the expert outputs stayed in.
 * (Agreement with the float64 oracle is tested by tests/run_oracle_compare.sh.) */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "engine.h"
#include "genmodel.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

static int score(loaded *l, int threads, int batch, reap_layer_stats **st, int *n)
{
    reap_engine_opts o = {.backend = &reap_backend_cpu,
                          .backend_opts = {.threads = threads, .batch_rows = batch}};
    return reap_engine_score(l->ck, &l->cfg, &l->rows, &o, st, n);
}

static void test_determinism_and_invariants(void)
{
    char dir[1024], calib[1024];
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 3;
    spec.hidden = 48;
    spec.n_experts = 12;
    spec.top_k = 3;
    spec.moe_inter = 24;
    spec.n_mlp_only = 1;
    spec.mlp_only_layers[0] = 1;
    spec.n_shards = 2;
    spec.seed = 11;
    path_join(dir, sizeof dir, scratch, "det-model");
    path_join(calib, sizeof calib, scratch, "det-calib.jsonl");
    loaded l;
    gen_loaded(&spec, dir, calib, 9, 5, 70, 3, 40, &l);
    reap_layer_stats *ref = NULL, *other = NULL;
    int n_ref = 0, n_other = 0;
    CHECK_RC(score(&l, 1, 1, &ref, &n_ref), REAP_OK);
    CHECK(n_ref == 2); /* layers 0 and 2 are MoE, 1 is dense */
    if (n_ref == 2) {
        CHECK(ref[0].layer == 0 && ref[1].layer == 2);
        for (int i = 0; i < n_ref; i++) {
            int64_t routed = 0;
            double gates = 0;
            for (int e = 0; e < ref[i].n_experts; e++) {
                routed += ref[i].count[e];
                gates += ref[i].sum_gate[e];
                CHECK(ref[i].sum_gate_norm[e] <= ref[i].sum_norm[e] + 1e-12);
                CHECK(ref[i].count[e] > 0 || ref[i].sum_norm[e] == 0.0);
            }
            CHECK(ref[i].tokens == l.rows.n_valid);
            CHECK(routed == l.rows.n_valid * spec.top_k);
            /* renormalised weights sum to 1 per token */
            CHECK_MSG(fabs(gates - (double)l.rows.n_valid) < 1e-9 * l.rows.n_valid,
                      "sum of gates %.17g vs tokens %lld", gates, (long long)l.rows.n_valid);
        }
    }
    const int variants[][2] = {{2, 1}, {1, 3}, {2, 2}, {2, 100}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        CHECK_RC(score(&l, variants[v][0], variants[v][1], &other, &n_other), REAP_OK);
        CHECK(n_other == n_ref);
        CHECK_MSG(n_other == n_ref && stats_identical(ref, other, n_ref),
                  "threads %d batch %d differ from threads 1 batch 1", variants[v][0],
                  variants[v][1]);
        free_stats(other, n_other);
        other = NULL;
    }
    free_stats(ref, n_ref);
    unload(&l);
}

typedef struct saved_hidden {
    int layer;
    float *h;
    int calls;
} saved_hidden;

static int save_hidden(void *ud, int layer, const float *hidden, int64_t T, int H)
{
    saved_hidden *s = ud;
    s->calls++;
    if (layer != s->layer)
        return REAP_OK;
    s->h = malloc((size_t)T * H * sizeof *s->h);
    if (!s->h)
        return REAP_E_NOMEM;
    memcpy(s->h, hidden, (size_t)T * H * sizeof *s->h);
    return REAP_OK;
}

/* Checkpoint after layer 1, resume from it: layers 2.. give identical statistics. */
static void test_resume_from_checkpoint(void)
{
    char dir[1024], calib[1024];
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_VL_MOE);
    spec.n_layers = 4;
    spec.seed = 21;
    path_join(dir, sizeof dir, scratch, "resume-model");
    path_join(calib, sizeof calib, scratch, "resume-calib.jsonl");
    loaded l;
    gen_loaded(&spec, dir, calib, 6, 5, 50, 9, 32, &l);

    saved_hidden sh = {.layer = 1};
    reap_engine_opts o = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 2},
                          .checkpoint_every = 1, .on_checkpoint = save_hidden, .ud = &sh};
    reap_layer_stats *full = NULL, *rest = NULL;
    int n_full = 0, n_rest = 0;
    CHECK_RC(reap_engine_score(l.ck, &l.cfg, &l.rows, &o, &full, &n_full), REAP_OK);
    CHECK(n_full == 4);
    CHECK(sh.calls == 3); /* after layers 0, 1, 2; never after the last */
    CHECK(sh.h != NULL);

    reap_engine_opts r = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 1},
                          .start_layer = 2, .start_hidden = sh.h};
    CHECK_RC(reap_engine_score(l.ck, &l.cfg, &l.rows, &r, &rest, &n_rest), REAP_OK);
    CHECK(n_rest == 2);
    if (n_full == 4 && n_rest == 2)
        CHECK_MSG(stats_identical(full + 2, rest, 2), "resumed layers differ");

    reap_engine_opts bad = {.backend = &reap_backend_cpu, .start_layer = 2};
    reap_layer_stats *none = NULL;
    int n_none = 0;
    CHECK_RC(reap_engine_score(l.ck, &l.cfg, &l.rows, &bad, &none, &n_none), REAP_E_INVALID);
    free(sh.h);
    free_stats(full, n_full);
    free_stats(rest, n_rest);
    unload(&l);
}

/* Rows `pick[0..n)` of `all` as a new set (tokens and masks copied). */
static int rows_subset(const reap_rows *all, const int *pick, int n, reap_rows *out)
{
    const size_t S = (size_t)all->seq_len;
    memset(out, 0, sizeof *out); /* no images; every field defined */
    out->n_rows = n;
    out->seq_len = all->seq_len;
    out->n_valid = 0;
    out->tokens = malloc((size_t)n * S * sizeof *out->tokens);
    out->mask = malloc((size_t)n * S);
    if (!out->tokens || !out->mask)
        return REAP_E_NOMEM;
    for (int i = 0; i < n; i++) {
        memcpy(out->tokens + i * S, all->tokens + pick[i] * S, S * sizeof *out->tokens);
        memcpy(out->mask + i * S, all->mask + pick[i] * S, S);
        for (size_t t = 0; t < S; t++)
            out->n_valid += out->mask[i * S + t];
    }
    return REAP_OK;
}

/* Scoring rows R1 alone and R2 alone (different thread counts and micro-batches), merged
 * with reap_layer_stats_merge, equals scoring R1+R2 in one run: token and routing counts
 * and max_act exact, sums within 1e-12 relative (they differ only in the order of the
 * fp64 additions). Before it, the hidden states of R1's rows leaving a middle layer are
 * bit-identical alone and inside R1+R2. Two splits: first rows / the rest, and
 * interleaved. Shapes not multiples of the GEMM tiles (H 40, 2I 44, 13 experts). */
static void test_merge_equals_concatenation(void)
{
    char dir[1024], calib[1024];
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 4;
    spec.hidden = 40;
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.head_dim = 10;
    spec.n_experts = 13;
    spec.top_k = 3;
    spec.moe_inter = 22;
    spec.inter = 36;
    spec.n_mlp_only = 1;
    spec.mlp_only_layers[0] = 1;
    spec.seed = 17;
    path_join(dir, sizeof dir, scratch, "merge-model");
    path_join(calib, sizeof calib, scratch, "merge-calib.jsonl");
    loaded l;
    gen_loaded(&spec, dir, calib, 23, 5, 60, 41, 48, &l);
    const int R = l.rows.n_rows, S = l.rows.seq_len, H = spec.hidden;
    CHECK(R >= 8);

    saved_hidden hall = {.layer = 2};
    reap_engine_opts oall = {.backend = &reap_backend_cpu,
                             .backend_opts = {.threads = 2, .batch_rows = 4},
                             .checkpoint_every = 1, .on_checkpoint = save_hidden, .ud = &hall};
    reap_layer_stats *all = NULL;
    int n_all = 0;
    CHECK_RC(reap_engine_score(l.ck, &l.cfg, &l.rows, &oall, &all, &n_all), REAP_OK);
    CHECK(n_all == 3 && hall.h != NULL);

    for (int split = 0; split < 2 && n_all == 3 && hall.h; split++) {
        int pick[2][64], n[2] = {0, 0};
        for (int r = 0; r < R && r < 64; r++) {
            int part = split == 0 ? r >= 5 : r % 2;
            pick[part][n[part]++] = r;
        }
        reap_layer_stats *merged = NULL;
        int n_merged = 0;
        for (int part = 0; part < 2; part++) {
            reap_rows sub;
            CHECK_RC(rows_subset(&l.rows, pick[part], n[part], &sub), REAP_OK);
            saved_hidden h = {.layer = 2};
            reap_engine_opts o = {.backend = &reap_backend_cpu,
                                  .backend_opts = {.threads = 1 + part, .batch_rows = 3},
                                  .checkpoint_every = 1, .on_checkpoint = save_hidden,
                                  .ud = &h};
            reap_layer_stats *st = NULL;
            int n_st = 0;
            CHECK_RC(reap_engine_score(l.ck, &l.cfg, &sub, &o, &st, &n_st), REAP_OK);
            CHECK(n_st == n_all && h.h != NULL);
            int same = h.h != NULL;
            for (int i = 0; same && i < n[part]; i++)
                same = !memcmp(h.h + (size_t)i * S * H, hall.h + (size_t)pick[part][i] * S * H,
                               (size_t)S * H * sizeof(float));
            CHECK_MSG(same, "split %d part %d: hidden states leaving layer 2 differ from "
                      "the same rows scored with the others", split, part);
            if (part == 0) {
                merged = st;
                n_merged = n_st;
            } else {
                for (int i = 0; i < n_st && i < n_merged; i++)
                    CHECK_RC(reap_layer_stats_merge(&merged[i], &st[i]), REAP_OK);
                free_stats(st, n_st);
            }
            free(h.h);
            free(sub.tokens);
            free(sub.mask);
        }
        double worst = 0;
        int exact = n_merged == n_all;
        for (int i = 0; exact && i < n_all; i++) {
            const reap_layer_stats *a = &merged[i], *b = &all[i];
            size_t E = (size_t)b->n_experts;
            exact = a->layer == b->layer && a->tokens == b->tokens &&
                    !memcmp(a->count, b->count, E * sizeof(int64_t)) &&
                    !memcmp(a->max_act, b->max_act, E * sizeof(float));
            for (size_t e = 0; e < E; e++) {
                double d[3] = {rel_diff(a->sum_gate_norm[e], b->sum_gate_norm[e]),
                               rel_diff(a->sum_norm[e], b->sum_norm[e]),
                               rel_diff(a->sum_gate[e], b->sum_gate[e])};
                for (int q = 0; q < 3; q++)
                    worst = d[q] > worst ? d[q] : worst;
            }
        }
        CHECK_MSG(exact, "split %d: counts, tokens or max_act differ", split);
        CHECK_MSG(worst <= 1e-12, "split %d: sums differ by %.3g relative", split, worst);
        printf("  merge split %d (%d + %d rows): counts %s, sums within %.2g relative\n",
               split, n[0], n[1], exact ? "exact" : "DIFFER", worst);
        free_stats(merged, n_merged);
    }
    free(hall.h);
    free_stats(all, n_all);
    unload(&l);
}

static int set_config_int(const char *dir, const char *key, long value)
{
    char p[1024];
    path_join(p, sizeof p, dir, "config.json");
    json_t *j = json_load_file(p, 0, NULL);
    if (!j)
        return REAP_E_IO;
    json_object_set_new(j, key, json_integer(value));
    int rc = json_dump_file(j, p, JSON_INDENT(2)) ? REAP_E_IO : REAP_OK;
    json_decref(j);
    return rc;
}

static void test_bad_inputs(void)
{
    char dir[1024], calib[1024];
    reap_gen_spec spec;
    reap_layer_stats *st = NULL;
    int n = 0;
    loaded l;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.dtype = ST_F32;
    path_join(dir, sizeof dir, scratch, "bad-model");
    path_join(calib, sizeof calib, scratch, "bad-calib.jsonl");
    CHECK_RC(reap_gen_calib(calib, 4, 5, 20, spec.vocab, 5), REAP_OK);

    /* NaN in an expert weight: the run stops and names the tensor. */
    CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
    CHECK_RC(poke_f32(dir, "model.layers.1.mlp.experts.3.down_proj.weight", 5, NAN), REAP_OK);
    CHECK_RC(load(dir, calib, 16, 1, &l), REAP_OK);
    CHECK_RC(score(&l, 2, 4, &st, &n), REAP_E_NUMERIC);
    CHECK_ERRMSG("model.layers.1.mlp.experts.3.down_proj.weight");
    CHECK(st == NULL && n == 0);
    unload(&l);

    /* Inf in the embedding row of a used token. */
    CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
    CHECK_RC(load(dir, calib, 16, 1, &l), REAP_OK);
    int32_t tok = l.rows.tokens[0];
    unload(&l);
    CHECK_RC(poke_f32(dir, "model.embed_tokens.weight", (int64_t)tok * spec.hidden + 1,
                      INFINITY), REAP_OK);
    CHECK_RC(load(dir, calib, 16, 1, &l), REAP_OK);
    CHECK_RC(score(&l, 1, 4, &st, &n), REAP_E_NUMERIC);
    CHECK_ERRMSG("model.embed_tokens.weight");
    unload(&l);

    /* config.json disagrees with the shards: moe_intermediate_size. */
    CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
    CHECK_RC(set_config_int(dir, "moe_intermediate_size", spec.moe_inter + 2), REAP_OK);
    CHECK_RC(load(dir, calib, 16, 1, &l), REAP_OK);
    CHECK_RC(score(&l, 1, 4, &st, &n), REAP_E_FORMAT);
    CHECK_ERRMSG("model.layers.0.mlp.experts.0.gate_proj.weight");
    CHECK_ERRMSG("config.json");
    unload(&l);

    /* A layer the config promises but the checkpoint lacks: refused before scoring,
     * naming the field (config_check.h). */
    CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
    CHECK_RC(set_config_int(dir, "num_hidden_layers", spec.n_layers + 1), REAP_OK);
    CHECK_RC(load(dir, calib, 16, 1, &l), REAP_OK);
    CHECK_RC(score(&l, 1, 4, &st, &n), REAP_E_FORMAT);
    char want[128];
    snprintf(want, sizeof want, "model.layers.%d.", spec.n_layers);
    CHECK_ERRMSG(want);
    snprintf(want, sizeof want, "config.json: num_hidden_layers = %d, but the checkpoint "
             "holds %d layers", spec.n_layers + 1, spec.n_layers);
    CHECK_ERRMSG(want);
    unload(&l);
}

/* Every element of the F32 tensor `name` in the shards of `dir` set to `value`, in place.
 * REAP_OK, REAP_E_NOTFOUND (no such tensor), REAP_E_INVALID (not F32), REAP_E_IO. */
static int fill_f32(const char *dir, const char *name, float value)
{
    reap_ckpt *ck;
    int rc = reap_ckpt_open(dir, &ck);
    if (rc)
        return rc;
    rc = REAP_E_NOTFOUND;
    for (size_t i = 0; i < reap_ckpt_n_files(ck) && rc == REAP_E_NOTFOUND; i++) {
        const st_file *f = reap_ckpt_file(ck, i);
        const st_tensor *t = st_file_find(f, name);
        if (!t)
            continue;
        if (t->dtype != ST_F32) {
            rc = REAP_E_INVALID;
            break;
        }
        float *buf = malloc((size_t)t->numel * sizeof *buf);
        FILE *fp = fopen(st_file_path(f), "r+b");
        rc = buf && fp ? REAP_OK : REAP_E_IO;
        for (int64_t k = 0; buf && k < t->numel; k++)
            buf[k] = value;
        if (!rc && (fseeko(fp, (off_t)(st_file_data_offset(f) + t->begin), SEEK_SET) ||
                    fwrite(buf, sizeof *buf, (size_t)t->numel, fp) != (size_t)t->numel))
            rc = REAP_E_IO;
        if (fp && fclose(fp))
            rc = REAP_E_IO;
        free(buf);
    }
    reap_ckpt_close(ck);
    return rc;
}

/* Finite weights, non-finite activations: one tensor of a fresh F32 model filled with
 * 3e38 (finite) makes the activations overflow at one stage of one layer. The run stops
 * with REAP_E_NUMERIC, and the message names that layer and stage. Layers: 0 and 2 MoE,
 * 1 dense, so a stage in layer L also shows that the layers before it passed. */
static void test_activation_overflow(void)
{
    char dir[1024], calib[1024], tensor[256], want_layer[64];
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.dtype = ST_F32;
    spec.n_layers = 3;
    spec.n_mlp_only = 1;
    spec.mlp_only_layers[0] = 1;
    spec.seed = 5;
    path_join(dir, sizeof dir, scratch, "overflow-model");
    path_join(calib, sizeof calib, scratch, "overflow-calib.jsonl");
    CHECK_RC(reap_gen_calib(calib, 8, 10, 40, spec.vocab, 13), REAP_OK);

    /* the unmodified model scores; its most used expert of layer 2 is the one to break */
    loaded l;
    reap_layer_stats *st = NULL;
    int n = 0, busy = -1;
    CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
    CHECK_RC(load(dir, calib, 32, 1, &l), REAP_OK);
    CHECK_RC(score(&l, 2, 4, &st, &n), REAP_OK);
    CHECK(n == 2);
    if (n == 2 && st[1].layer == 2)
        for (int e = 0; e < st[1].n_experts; e++)
            if (busy < 0 || st[1].count[e] > st[1].count[busy])
                busy = e;
    CHECK(busy >= 0 && st[1].count[busy] > 0);
    free_stats(st, n);
    unload(&l);
    if (busy < 0)
        return;

    static const struct {
        int layer;
        const char *tensor;  /* %d: the expert, where there is one */
        const char *stage;   /* the message's words for the stage */
    } cases[] = {
        {2, "input_layernorm.weight", "after attention"},
        {1, "self_attn.q_norm.weight", "after attention"},
        {0, "self_attn.k_norm.weight", "after attention"},
        {2, "post_attention_layernorm.weight", "after router"},
        {0, "mlp.gate.weight", "after router"},
        {2, "mlp.experts.%d.gate_proj.weight", "non-finite output of expert"},
        {1, "post_attention_layernorm.weight", "after MLP"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char suffix[128];
        snprintf(suffix, sizeof suffix, cases[i].tensor, busy);
        snprintf(tensor, sizeof tensor, "model.layers.%d.%s", cases[i].layer, suffix);
        CHECK_RC(reap_gen_model(&spec, dir), REAP_OK);
        CHECK_RC(fill_f32(dir, tensor, 3e38f), REAP_OK);
        CHECK_RC(load(dir, calib, 32, 1, &l), REAP_OK);
        st = NULL;
        n = 0;
        int rc = score(&l, 2, 4, &st, &n);
        CHECK_MSG(rc == REAP_E_NUMERIC, "%s = 3e38: status %d, want REAP_E_NUMERIC: %s",
                  tensor, rc, rc ? reap_err_msg() : "(no error)");
        CHECK(st == NULL && n == 0);
        snprintf(want_layer, sizeof want_layer, "layer %d: non-finite ", cases[i].layer);
        CHECK_MSG(strstr(reap_err_msg(), want_layer) && strstr(reap_err_msg(), cases[i].stage),
                  "%s = 3e38: message \"%s\" lacks \"%s\" or \"%s\"", tensor,
                  reap_err_msg(), want_layer, cases[i].stage);
        if (strstr(cases[i].stage, "expert")) {
            char e[64];
            snprintf(e, sizeof e, "expert %d (position", busy);
            CHECK_ERRMSG(e);
        } else {
            CHECK_ERRMSG("non-finite activation");
        }
        printf("  %s = 3e38: %s\n", tensor, reap_err_msg());
        free_stats(st, n);
        unload(&l);
    }
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "test_engine.tmp";
    make_dirs(scratch);
    test_determinism_and_invariants();
    test_resume_from_checkpoint();
    test_merge_equals_concatenation();
    test_bad_inputs();
    test_activation_overflow();
    TEST_MAIN_END();
}

/* test_checkpoint.c - checkpoint directories: a single model.safetensors, a sharded
 * checkpoint with an index, and the ways an index and its shards can disagree; a
 * config.json that disagrees with the tensors (more layers than the shards hold, another
 * width, head or expert count) is refused naming the field, and the engine refuses it
 * before scoring any layer (config_check.h). Opened
 * confined to roots (a service): a shard or the index linked out of every root is
 * refused naming it, config.json too, while a Hugging Face cache snapshot whose files
 * are links into ../../blobs/ inside the root opens, and unconfined everything opens.
 *
 * Usage: test_checkpoint SCRATCH_DIR (created if missing; one subdirectory per case).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "config_check.h"
#include "engine.h"
#include "genmodel.h"
#include "reap_err.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* A fresh, empty case directory scratch/name (its path in `out`). */
static void case_dir(const char *name, char *out, size_t cap)
{
    path_join(out, cap, scratch, name);
    CHECK(make_dirs(out) == 0);
    DIR *d = opendir(out);
    CHECK(d != NULL);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlink(pj(out, e->d_name));
    }
    closedir(d);
}

/* Tensor bytes: a function of the tensor name's first char and the byte index. */
static int fill_named(void *ud, size_t index, void *dst, uint64_t nbytes)
{
    const st_write_spec *specs = ud;
    unsigned char *p = dst;
    for (uint64_t j = 0; j < nbytes; j++)
        p[j] = (unsigned char)(specs[index].name[0] + j * 3);
    return REAP_OK;
}

static void write_shard(const char *dir, const char *file, const st_write_spec *specs,
                        size_t n)
{
    CHECK_RC(st_write_file(pj(dir, file), specs, n, fill_named, (void *)specs), REAP_OK);
}

static uint64_t spec_bytes(const st_write_spec *s)
{
    uint64_t n = st_dtype_bits(s->dtype) / 8;
    for (int d = 0; d < s->ndim; d++)
        n *= (uint64_t)s->shape[d];
    return n;
}

/* Open must fail with `want` and a message containing each non-NULL needle. */
static void expect_fail(const char *dir, int want, const char *n1, const char *n2)
{
    reap_ckpt *c = (reap_ckpt *)1;
    reap_err_clear();
    int rc = reap_ckpt_open(dir, &c);
    CHECK_MSG(rc == want, "%s: got %d want %d (%s)", dir, rc, want, reap_err_msg());
    CHECK(c == NULL);
    if (n1)
        CHECK_ERRMSG(n1);
    if (n2)
        CHECK_ERRMSG(n2);
    if (rc == REAP_OK)
        reap_ckpt_close(c);
}

static const st_write_spec shard1[] = {
    {"model.embed_tokens.weight", ST_BF16, 2, {8, 4}},
    {"model.layers.0.mlp.gate.weight", ST_F32, 2, {4, 4}},
};
static const st_write_spec shard2[] = {
    {"lm_head.weight", ST_BF16, 2, {8, 4}},
    {"model.norm.weight", ST_BF16, 1, {4}},
    {"extra.not_in_index", ST_U8, 1, {3}},
};

static void test_single(void)
{
    char dir[8192];
    case_dir("single", dir, sizeof dir);
    write_shard(dir, "model.safetensors", shard1, 2);
    reap_ckpt *c = NULL;
    CHECK_RC(reap_ckpt_open(dir, &c), REAP_OK);
    if (!c)
        return;
    CHECK(strcmp(reap_ckpt_dir(c), dir) == 0);
    CHECK(reap_ckpt_n_files(c) == 1);
    CHECK(reap_ckpt_file(c, 1) == NULL);
    const st_file *f = reap_ckpt_file(c, 0);
    CHECK(f && strstr(st_file_path(f), "model.safetensors") != NULL);
    const st_tensor *t = NULL;
    CHECK_RC(reap_ckpt_get(c, "model.embed_tokens.weight", &t), REAP_OK);
    CHECK(t && t->dtype == ST_BF16 && t->ndim == 2 && t->shape[0] == 8 && t->nbytes == 64);
    CHECK(t && ((const unsigned char *)t->data)[1] == (unsigned char)('m' + 3));
    CHECK(reap_ckpt_find(c, "model.layers.0.mlp.gate.weight") != NULL);
    CHECK(reap_ckpt_find(c, "lm_head.weight") == NULL);

    reap_err_clear();
    t = (const st_tensor *)1;
    CHECK_RC(reap_ckpt_get(c, "model.layers.9.missing", &t), REAP_E_NOTFOUND);
    CHECK(t == NULL);
    CHECK_ERRMSG("model.layers.9.missing");
    CHECK_ERRMSG("single");
    reap_ckpt_close(c);
    reap_ckpt_close(NULL);
}

static void test_sharded(void)
{
    char dir[8192], idx[4096];
    case_dir("sharded", dir, sizeof dir);
    write_shard(dir, SHARD2, shard2, 3);
    write_shard(dir, SHARD1, shard1, 2);
    uint64_t total = 0;
    for (size_t i = 0; i < 2; i++)
        total += spec_bytes(&shard1[i]);
    for (size_t i = 0; i < 3; i++)
        total += spec_bytes(&shard2[i]);
    snprintf(idx, sizeof idx,
             "{\"metadata\": {\"total_size\": %llu, \"other\": \"x\"}, \"weight_map\": {"
             "\"lm_head.weight\": \"" SHARD2 "\","
             "\"model.embed_tokens.weight\": \"" SHARD1 "\","
             "\"model.layers.0.mlp.gate.weight\": \"" SHARD1 "\","
             "\"model.norm.weight\": \"" SHARD2 "\"}}",
             (unsigned long long)total);
    write_text(pj(dir, "model.safetensors.index.json"), idx);
    /* A single-file model next to the index is ignored. */
    write_shard(dir, "model.safetensors", shard2, 1);

    reap_ckpt *c = NULL;
    CHECK_RC(reap_ckpt_open(dir, &c), REAP_OK);
    if (!c)
        return;
    CHECK(reap_ckpt_n_files(c) == 2);
    CHECK(reap_ckpt_n_files(c) == 2 && strstr(st_file_path(reap_ckpt_file(c, 0)), SHARD1) &&
          strstr(st_file_path(reap_ckpt_file(c, 1)), SHARD2));
    for (size_t i = 0; i < 2; i++) {
        const st_tensor *t = reap_ckpt_find(c, shard1[i].name);
        CHECK_MSG(t && t == st_file_find(reap_ckpt_file(c, 0), shard1[i].name), "%s",
                  shard1[i].name);
    }
    for (size_t i = 0; i < 3; i++) {
        const st_tensor *t = reap_ckpt_find(c, shard2[i].name);
        CHECK_MSG(t && t == st_file_find(reap_ckpt_file(c, 1), shard2[i].name), "%s",
                  shard2[i].name);
    }
    const st_tensor *t = NULL;
    CHECK_RC(reap_ckpt_get(c, "extra.not_in_index", &t), REAP_OK);
    CHECK(t && t->nbytes == 3 && ((const unsigned char *)t->data)[2] == (unsigned char)('e' + 6));
    CHECK_RC(reap_ckpt_get(c, "nope", &t), REAP_E_NOTFOUND);
    CHECK_ERRMSG("'nope'");
    reap_ckpt_close(c);

    /* total_size absent, or not an integer: not checked. */
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"metadata\": {\"total_size\": 1.5}, \"weight_map\": {"
               "\"lm_head.weight\": \"" SHARD2 "\"}}");
    c = NULL;
    CHECK_RC(reap_ckpt_open(dir, &c), REAP_OK);
    CHECK(c && reap_ckpt_n_files(c) == 1);
    /* Every tensor of an opened shard is findable; unopened shards contribute none. */
    CHECK(c && reap_ckpt_find(c, "lm_head.weight") && reap_ckpt_find(c, "model.norm.weight"));
    CHECK(c && reap_ckpt_find(c, "model.embed_tokens.weight") == NULL);
    reap_ckpt_close(c);
}

static void test_bad_indexes(void)
{
    char dir[8192];

    case_dir("empty", dir, sizeof dir);
    expect_fail(dir, REAP_E_NOTFOUND, "no model.safetensors.index.json or model.safetensors in",
                "empty");

    char nodir[8192];
    snprintf(nodir, sizeof nodir, "%s/does/not/exist", scratch);
    expect_fail(nodir, REAP_E_NOTFOUND, "does/not/exist", NULL);

    case_dir("missing_shard", dir, sizeof dir);
    write_shard(dir, SHARD1, shard1, 2);
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.embed_tokens.weight\": \"" SHARD1 "\","
               "\"lm_head.weight\": \"model-00003-of-00003.safetensors\"}}");
    expect_fail(dir, REAP_E_NOTFOUND, "model-00003-of-00003.safetensors", NULL);

    case_dir("absent_tensor", dir, sizeof dir);
    write_shard(dir, SHARD1, shard1, 2);
    write_shard(dir, SHARD2, shard2, 3);
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.embed_tokens.weight\": \"" SHARD1 "\","
               "\"model.ghost.weight\": \"" SHARD2 "\"}}");
    expect_fail(dir, REAP_E_FORMAT, "model.ghost.weight", SHARD2);

    /* Mapped to the wrong shard: it exists, but elsewhere. */
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.embed_tokens.weight\": \"" SHARD2 "\","
               "\"lm_head.weight\": \"" SHARD2 "\", \"model.norm.weight\": \"" SHARD1 "\"}}");
    expect_fail(dir, REAP_E_FORMAT, "'model.", "is in");

    case_dir("total_size", dir, sizeof dir);
    write_shard(dir, SHARD1, shard1, 2);
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"metadata\": {\"total_size\": 1000}, \"weight_map\": {"
               "\"model.embed_tokens.weight\": \"" SHARD1 "\"}}");
    expect_fail(dir, REAP_E_FORMAT, "total_size is 1000", "128 bytes");

    case_dir("dup_across", dir, sizeof dir);
    const st_write_spec s1[] = {{"shared.w", ST_F32, 1, {2}}, {"a.w", ST_F32, 1, {2}}};
    const st_write_spec s2[] = {{"shared.w", ST_F32, 1, {2}}, {"b.w", ST_F32, 1, {2}}};
    write_shard(dir, SHARD1, s1, 2);
    write_shard(dir, SHARD2, s2, 2);
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a.w\": \"" SHARD1 "\", \"b.w\": \"" SHARD2 "\","
               "\"shared.w\": \"" SHARD1 "\"}}");
    expect_fail(dir, REAP_E_FORMAT, "'shared.w'", SHARD2);

    case_dir("escape", dir, sizeof dir);
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a.w\": \"../other/model.safetensors\"}}");
    expect_fail(dir, REAP_E_FORMAT, "../other/model.safetensors", "'a.w'");
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a.w\": \"sub/model.safetensors\"}}");
    expect_fail(dir, REAP_E_FORMAT, "sub/model.safetensors", NULL);

    case_dir("bad_json", dir, sizeof dir);
    write_text(pj(dir, "model.safetensors.index.json"), "{\"weight_map\": {");
    expect_fail(dir, REAP_E_FORMAT, "model.safetensors.index.json", "JSON");
    write_text(pj(dir, "model.safetensors.index.json"), "{\"metadata\": {}}");
    expect_fail(dir, REAP_E_FORMAT, "weight_map", NULL);
    write_text(pj(dir, "model.safetensors.index.json"), "{\"weight_map\": {\"a.w\": 3}}");
    expect_fail(dir, REAP_E_FORMAT, "'a.w'", NULL);
    write_text(pj(dir, "model.safetensors.index.json"), "[]");
    expect_fail(dir, REAP_E_FORMAT, "not a JSON object", NULL);

    /* A shard that fails validation: its own message, naming the shard. */
    case_dir("bad_shard", dir, sizeof dir);
    write_text(pj(dir, SHARD1), "garbage");
    write_text(pj(dir, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a.w\": \"" SHARD1 "\"}}");
    expect_fail(dir, REAP_E_FORMAT, SHARD1, NULL);

    case_dir("bad_single", dir, sizeof dir);
    write_text(pj(dir, "model.safetensors"), "");
    expect_fail(dir, REAP_E_FORMAT, "model.safetensors", NULL);
}

/* ---- config.json against the tensors (config_check.h) -------------------------------- */

static int count_layers(void *ud, int layer, const reap_layer_stats *st, double seconds)
{
    (void)layer;
    (void)st;
    (void)seconds;
    (*(int *)ud)++;
    return 0;
}

/* cfg with one field changed must be refused with REAP_E_FORMAT, the message naming
 * config.json and `needle` (the field and its value). */
static void expect_mismatch(const reap_ckpt *ck, const reap_config *good, const char *what,
                            reap_config bad, const char *needle)
{
    (void)good;
    reap_err_clear();
    int rc = reap_config_check_ckpt(&bad, ck);
    CHECK_MSG(rc == REAP_E_FORMAT, "%s: status %d (%s)", what, rc, reap_err_msg());
    CHECK_MSG(strstr(reap_err_msg(), "/config.json: ") && strstr(reap_err_msg(), needle),
              "%s: message \"%s\" lacks \"%s\"", what, reap_err_msg(), needle);
}

/* Generate `spec` into case directory `name`, load its config and open it; the pair
 * must pass reap_config_check_ckpt. 1 with *cfg and *ck set, 0 (checks failed) else. */
static int gen_checked(const reap_gen_spec *spec, const char *name, reap_config *cfg,
                       reap_ckpt **ck)
{
    char dir[4096], cpath[4200];
    case_dir(name, dir, sizeof dir);
    CHECK_RC(reap_gen_model(spec, dir), REAP_OK);
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    CHECK_RC(reap_config_load(cpath, cfg), REAP_OK);
    CHECK_RC(reap_ckpt_open(dir, ck), REAP_OK);
    if (!*ck)
        return 0;
    CHECK_RC(reap_config_check_ckpt(cfg, *ck), REAP_OK);
    return 1;
}

static void test_config_vs_tensors(void)
{
    reap_gen_spec spec;
    reap_config cfg = {0};
    reap_ckpt *ck = NULL;

    /* qwen3_moe, per-expert tensors, layer 1 dense: every field has a tensor to show it. */
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 3;
    spec.n_mlp_only = 1;
    spec.mlp_only_layers[0] = 1;
    spec.n_shards = 2;
    if (!gen_checked(&spec, "cfgcheck", &cfg, &ck))
        return;

    reap_config b = cfg;
    char want[128];
    /* More layers than the shards hold (up to the config limit): refused, naming the
     * field and how many layers there are. */
    b.n_layers = REAP_CONFIG_MAX_LAYERS;
    snprintf(want, sizeof want, "num_hidden_layers = %d, but the checkpoint holds 3 layers",
             REAP_CONFIG_MAX_LAYERS);
    expect_mismatch(ck, &cfg, "layers", b, want);
    b = cfg;
    b.n_layers = 4;
    expect_mismatch(ck, &cfg, "layers+1", b, "num_hidden_layers = 4, but the checkpoint "
                                             "holds 3 layers (no tensor 'model.layers.3.");
    b = cfg;
    b.hidden = cfg.hidden * 2;
    snprintf(want, sizeof want, "hidden_size = %d does not match the checkpoint", b.hidden);
    expect_mismatch(ck, &cfg, "hidden", b, want);
    b = cfg;
    b.vocab = cfg.vocab + 1;
    snprintf(want, sizeof want, "which implies vocab_size = %d", cfg.vocab);
    expect_mismatch(ck, &cfg, "vocab", b, want);
    b = cfg;
    b.head_dim = cfg.head_dim * 2;
    expect_mismatch(ck, &cfg, "head_dim", b, "head_dim = ");
    b = cfg;
    b.n_heads = cfg.n_heads * 2;
    snprintf(want, sizeof want, "which implies num_attention_heads = %d", cfg.n_heads);
    expect_mismatch(ck, &cfg, "heads", b, want);
    b = cfg;
    b.n_kv_heads = cfg.n_heads; /* still divides the heads */
    snprintf(want, sizeof want, "which implies num_key_value_heads = %d", cfg.n_kv_heads);
    expect_mismatch(ck, &cfg, "kv heads", b, want);
    b = cfg;
    b.n_experts = cfg.n_experts + 4;
    snprintf(want, sizeof want, "which implies num_experts = %d", cfg.n_experts);
    expect_mismatch(ck, &cfg, "experts", b, want);
    b = cfg;
    b.moe_inter = cfg.moe_inter * 2;
    snprintf(want, sizeof want, "which implies moe_intermediate_size = %d", cfg.moe_inter);
    expect_mismatch(ck, &cfg, "moe_inter", b, want);
    b = cfg;
    b.inter = cfg.inter + 8;
    snprintf(want, sizeof want, "which implies intermediate_size = %d", cfg.inter);
    expect_mismatch(ck, &cfg, "inter", b, want);

    /* The engine refuses such a configuration before it scores (or sizes) anything: no
     * layer reaches the callback, though the first layers' tensors are all there. */
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t mask[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    reap_rows rows = {.n_rows = 1, .seq_len = 8, .tokens = tokens, .mask = mask, .n_valid = 8};
    int n_cb = 0, n_st = 0;
    reap_layer_stats *st = NULL;
    reap_engine_opts eo = {.on_layer = count_layers, .ud = &n_cb};
    b = cfg;
    b.n_layers = 4;
    CHECK_RC(reap_engine_score(ck, &b, &rows, &eo, &st, &n_st), REAP_E_FORMAT);
    CHECK_ERRMSG("num_hidden_layers = 4");
    CHECK(n_cb == 0 && st == NULL && n_st == 0);
    reap_ckpt_close(ck);
    ck = NULL;
    reap_config_free(&cfg);

    /* qwen3_vl_moe, fused experts: the fields are text_config's. */
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_VL_MOE);
    spec.n_layers = 2;
    if (!gen_checked(&spec, "cfgcheck_vl", &cfg, &ck))
        return;
    b = cfg;
    b.n_layers = 3;
    expect_mismatch(ck, &cfg, "vl layers", b, "text_config.num_hidden_layers = 3, but the "
                                              "checkpoint holds 2 layers");
    b = cfg;
    b.moe_inter = cfg.moe_inter * 2;
    snprintf(want, sizeof want, "text_config.moe_intermediate_size = %d does not match",
             b.moe_inter);
    expect_mismatch(ck, &cfg, "vl moe_inter", b, want);
    b = cfg;
    b.n_experts = cfg.n_experts * 2;
    b.n_experts_used = 1;
    snprintf(want, sizeof want, "which implies num_experts = %d", cfg.n_experts);
    expect_mismatch(ck, &cfg, "vl experts", b, want);
    reap_ckpt_close(ck);
    reap_config_free(&cfg);
}

/* Copy every file of directory src into dst (created). */
static void copy_dir(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    struct dirent *e;
    CHECK(d != NULL && make_dirs(dst) == 0);
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = 0;
        char from[4096], to[4096];
        path_join(from, sizeof from, src, e->d_name);
        path_join(to, sizeof to, dst, e->d_name);
        char *buf = slurp(from, &n);
        CHECK(buf != NULL);
        if (buf)
            write_bytes(to, buf, n);
        free(buf);
    }
    if (d)
        closedir(d);
}

static void test_confined(void)
{
    char root[4096], out[4096], m[4200], p[4200], q[4400];
    CHECK(fresh_dir(sp("conf")) == 0);
    CHECK(make_dirs(sp("conf/root")) == 0 && make_dirs(sp("conf/outside")) == 0);
    CHECK(realpath(sp("conf/root"), root) && realpath(sp("conf/outside"), out));
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 2;
    spec.n_shards = 2;
    path_join(m, sizeof m, root, "m");
    CHECK_RC(reap_gen_model(&spec, m), REAP_OK);
    copy_dir(m, pj(out, "m"));
    const char *dirs[] = {root};
    reap_roots roots = {dirs, 1};
    reap_ckpt *ck = NULL;
    reap_config cfg;
    CHECK_RC(reap_ckpt_open_confined(m, &roots, &ck), REAP_OK);
    CHECK(ck && reap_ckpt_roots(ck) == &roots);
    reap_ckpt_close(ck);

    /* A shard, the index, config.json linked out of the root: refused, named. */
    const char *names[] = {SHARD1, "model.safetensors.index.json", "config.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/leak%d", root, i);
        copy_dir(m, p);
        path_join(q, sizeof q, p, names[i]);
        char target[4400];
        snprintf(target, sizeof target, "%s/m/%s", out, names[i]);
        CHECK(unlink(q) == 0 && symlink(target, q) == 0);
        if (i < 2) {
            CHECK_RC(reap_ckpt_open_confined(p, &roots, &ck), REAP_E_DENIED);
            CHECK_ERRMSG(names[i]);
            CHECK_ERRMSG("outside every root");
            CHECK(ck == NULL);
            CHECK_RC(reap_ckpt_open(p, &ck), REAP_OK); /* unconfined: followed */
            reap_ckpt_close(ck);
        } else {
            CHECK_RC(reap_config_load_confined(q, &roots, &cfg), REAP_E_DENIED);
            CHECK_ERRMSG("config.json: leads to");
            CHECK_RC(reap_config_load(q, &cfg), REAP_OK);
            reap_config_free(&cfg);
        }
    }

    /* A Hugging Face cache snapshot: links into ../../blobs/ inside the root open. */
    snprintf(p, sizeof p, "%s/hub/blobs", root);
    copy_dir(m, p);
    snprintf(p, sizeof p, "%s/hub/snapshots/rev", root);
    CHECK(make_dirs(p) == 0);
    const char *all[] = {SHARD1, SHARD2, "model.safetensors.index.json", "config.json"};
    for (int i = 0; i < 4; i++) {
        char target[512];
        snprintf(target, sizeof target, "../../blobs/%s", all[i]);
        path_join(q, sizeof q, p, all[i]);
        CHECK(symlink(target, q) == 0);
    }
    CHECK_RC(reap_ckpt_open_confined(p, &roots, &ck), REAP_OK);
    CHECK(ck && reap_ckpt_n_files(ck) == 2);
    reap_ckpt_close(ck);
    CHECK_RC(reap_config_load_confined(pj(p, "config.json"), &roots, &cfg), REAP_OK);
    reap_config_free(&cfg);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    if (make_dirs(scratch) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", scratch, strerror(errno));
        return 2;
    }
    test_single();
    test_sharded();
    test_confined();
    test_bad_indexes();
    test_config_vs_tensors();
    TEST_MAIN_END();
}

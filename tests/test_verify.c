/* test_verify.c - structural verification (pruner/verify.h) refuses a broken pruned
 * checkpoint. A generated qwen3_moe checkpoint (F32, split experts, 2 shards, layers 0
 * and 2 MoE, layer 1 dense, 8 experts) is pruned to 5 experts per MoE layer; the output
 * passes reap_verify_structural. Then each case takes a fresh copy of that output, breaks
 * it in one way, and asserts the status and that the message names the tensor or file:
 *   config.json: num_experts wrong; another configuration field changed (REAP_E_INVALID);
 *   index: a tensor mapped to the wrong shard, or to a shard that does not exist (the
 *     reader's REAP_E_FORMAT / REAP_E_NOTFOUND pass through); a tensor missing from the
 *     weight_map; metadata.total_size missing (REAP_E_INVALID);
 *   shard headers: __metadata__.format not "pt"; data buffer not 8-byte aligned
 *     (REAP_E_INVALID);
 *   experts: a kept expert tensor missing (REAP_E_NOTFOUND), reshaped (REAP_E_FORMAT,
 *     the shape the config implies), stored in another dtype than its source; an extra
 *     expert index >= E' (a pruned expert left in); a router tensor (mlp.gate.*) with E
 *     rather than E' rows (REAP_E_INVALID);
 *   other tensors: reshaped, or not in the input (REAP_E_INVALID).
 * Not checked by design: the bytes of a kept expert (or of any tensor) against its source;
 * only names, dtypes and shapes are compared (tests/test_rewrite.c compares the bytes
 * of the rewrite itself).
 *
 * Usage: test_verify SCRATCH_DIR (created if missing).
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "config.h"
#include "genmodel.h"
#include "keepset.h"
#include "prune.h"
#include "reap_err.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "verify.h"

static char in_dir[FX_PATH_MAX], good_dir[FX_PATH_MAX];
static reap_ckpt *in_ck;
static reap_config in_cfg;
static reap_prune_result pres;
static int n_good_tensors;

/* ---- helpers ----------------------------------------------------------------------- */

/* A fresh copy of the verified output (regular files only) as <scratch>/cases/<name>. */
static const char *fresh_copy(const char *name, char *dst, size_t cap)
{
    path_join(dst, cap, sp("cases"), name);
    CHECK(fresh_dir(dst) == 0);
    DIR *d = opendir(good_dir);
    struct dirent *e;
    CHECK(d != NULL);
    while (d && (e = readdir(d))) {
        char from[FX_PATH_MAX], to[FX_PATH_MAX];
        struct stat sb;
        path_join(from, sizeof from, good_dir, e->d_name);
        if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        path_join(to, sizeof to, dst, e->d_name);
        size_t n = 0;
        char *buf = slurp(from, &n);
        CHECK_MSG(buf != NULL, "cannot read %s", from);
        if (buf)
            write_bytes(to, buf, n);
        free(buf);
    }
    if (d)
        closedir(d);
    return dst;
}

/* Base name of the shard of `dir` holding `tensor` (empty when none does). */
static void shard_of(const char *dir, const char *tensor, char *out, size_t cap)
{
    reap_ckpt *ck = NULL;
    out[0] = '\0';
    CHECK_RC(reap_ckpt_open(dir, &ck), REAP_OK);
    for (size_t i = 0; ck && i < reap_ckpt_n_files(ck); i++) {
        const st_file *f = reap_ckpt_file(ck, i);
        if (st_file_find(f, tensor)) {
            const char *b = strrchr(st_file_path(f), '/');
            snprintf(out, cap, "%s", b ? b + 1 : st_file_path(f));
        }
    }
    reap_ckpt_close(ck);
    CHECK_MSG(out[0] != '\0', "no shard of %s holds %s", dir, tensor);
}

/* A shard other than `shard` in `dir` (the output has two). */
static void other_shard(const char *dir, const char *shard, char *out, size_t cap)
{
    reap_ckpt *ck = NULL;
    out[0] = '\0';
    CHECK_RC(reap_ckpt_open(dir, &ck), REAP_OK);
    for (size_t i = 0; ck && i < reap_ckpt_n_files(ck); i++) {
        const char *p = st_file_path(reap_ckpt_file(ck, i)), *b = strrchr(p, '/');
        b = b ? b + 1 : p;
        if (strcmp(b, shard))
            snprintf(out, cap, "%s", b);
    }
    reap_ckpt_close(ck);
    CHECK(out[0] != '\0');
}

typedef struct shard_fill {
    const st_tensor **src; /* [n] the original tensor of each spec, NULL for a new one */
} shard_fill;

/* Same byte count: the original bytes (a reshape); F32 -> BF16: the high halves; a new
 * tensor or anything else: zeros (finite in every float dtype). */
static int fill_from_source(void *ud, size_t index, void *dst, uint64_t nbytes)
{
    const shard_fill *sf = ud;
    const st_tensor *t = sf->src[index];
    if (t && t->nbytes == nbytes) {
        memcpy(dst, t->data, nbytes);
    } else if (t && t->dtype == ST_F32 && nbytes * 2 == t->nbytes) {
        const unsigned char *s = t->data;
        unsigned char *d = dst;
        for (uint64_t i = 0; i < nbytes / 2; i++) {
            d[2 * i] = s[4 * i + 2]; /* little endian: bytes 2, 3 are the high half */
            d[2 * i + 1] = s[4 * i + 3];
        }
    } else {
        memset(dst, 0, nbytes);
    }
    return REAP_OK;
}

/* Rewrite shard `shard` of `dir` with st_write_file: tensor `target` is dropped (repl
 * NULL), replaced by `repl` (when the shard holds it), or `repl` is added (when it does
 * not). Then the index follows: the weight_map names exactly the tensors of the shards
 * and metadata.total_size is their byte count, so only the intended change remains. */
static void edit_shard(const char *dir, const char *shard, const char *target,
                       const st_write_spec *repl)
{
    char path[FX_PATH_MAX];
    st_file *f = NULL;
    path_join(path, sizeof path, dir, shard);
    CHECK_RC(st_file_open(path, &f), REAP_OK);
    if (!f)
        return;
    size_t n = st_file_n_tensors(f), m = 0;
    st_write_spec *specs = calloc(n + 1, sizeof *specs);
    const st_tensor **src = calloc(n + 1, sizeof *src);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_file_tensor(f, i);
        if (!strcmp(t->name, target)) {
            found = 1;
            if (!repl)
                continue;
            specs[m] = *repl;
        } else {
            specs[m] = (st_write_spec){t->name, t->dtype, t->ndim, {0}};
            memcpy(specs[m].shape, t->shape, sizeof t->shape);
        }
        src[m++] = t;
    }
    CHECK_MSG(found || repl, "%s: no tensor %s to drop", shard, target);
    if (!found && repl)
        specs[m++] = *repl; /* src NULL: zeros */
    shard_fill sf = {src};
    /* written to <path>.tmp and renamed over the file still mapped by f */
    CHECK_RC(st_write_file(path, specs, m, fill_from_source, &sf), REAP_OK);
    free(specs);
    free(src);
    st_file_close(f);

    /* the index: weight_map and total_size from the shards as they are now */
    char ipath[FX_PATH_MAX];
    path_join(ipath, sizeof ipath, dir, "model.safetensors.index.json");
    json_t *doc = json_load_file(ipath, 0, NULL);
    CHECK(doc != NULL);
    if (!doc)
        return;
    json_t *map = json_object_get(doc, "weight_map");
    if (!repl)
        json_object_del(map, target);
    else
        json_object_set_new(map, repl->name, json_string(shard));
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors"))
            continue;
        st_file *g = NULL;
        path_join(path, sizeof path, dir, e->d_name);
        CHECK_RC(st_file_open(path, &g), REAP_OK);
        for (size_t i = 0; g && i < st_file_n_tensors(g); i++)
            total += st_file_tensor(g, i)->nbytes;
        st_file_close(g);
    }
    if (d)
        closedir(d);
    json_object_set_new(json_object_get(doc, "metadata"), "total_size",
                        json_integer((json_int_t)total));
    CHECK(json_dump_file(doc, ipath, JSON_INDENT(2)) == 0);
    json_decref(doc);
}

static json_t *load_json(const char *dir, const char *file, char *path, size_t cap)
{
    path_join(path, cap, dir, file);
    json_t *doc = json_load_file(path, 0, NULL);
    CHECK_MSG(doc != NULL, "cannot read %s", path);
    return doc;
}

static void save_json(json_t *doc, const char *path)
{
    CHECK(doc && json_dump_file(doc, path, JSON_INDENT(2)) == 0);
    json_decref(doc);
}

/* Run the structural check on `dir`: status `want`, message containing each of the
 * NULL-terminated `needles`. */
static void expect(const char *what, const char *dir, int want, const char *const *needles)
{
    reap_verify_result vr = {0};
    int rc = reap_verify_structural(dir, in_ck, &in_cfg, &pres.ks, &vr);
    CHECK_MSG(rc == want, "%s: status %d, want %d: %s", what, rc, want,
              rc ? reap_err_msg() : "(no error)");
    for (int i = 0; rc && needles && needles[i]; i++)
        CHECK_MSG(strstr(reap_err_msg(), needles[i]) != NULL,
                  "%s: message \"%s\" lacks \"%s\"", what, reap_err_msg(), needles[i]);
    printf("  %-22s -> %d %s\n", what, rc, rc ? reap_err_msg() : "ok");
    reap_verify_result_free(&vr);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- setup --------------------------------------------------------------------------- */

static int setup(void)
{
    char path[FX_PATH_MAX];
    path_join(in_dir, sizeof in_dir, scratch, "in");
    path_join(good_dir, sizeof good_dir, scratch, "out");
    CHECK(rm_rf(in_dir) == 0 && rm_rf(good_dir) == 0 && rm_rf(sp("cases")) == 0);
    CHECK(make_dirs(sp("cases")) == 0);
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.layout = REAP_EXPERTS_SPLIT;
    spec.dtype = ST_F32;
    spec.n_layers = 3;
    spec.n_mlp_only = 1;
    spec.mlp_only_layers[0] = 1;
    spec.n_shards = 2;
    CHECK_RC(reap_gen_model(&spec, in_dir), REAP_OK);
    path_join(path, sizeof path, in_dir, "config.json");
    CHECK_RC(reap_config_load(path, &in_cfg), REAP_OK);
    CHECK_RC(reap_ckpt_open(in_dir, &in_ck), REAP_OK);
    if (!in_ck)
        return -1;
    /* statistics with distinct scores, so the kept experts are not simply 0..4 */
    reap_layer_stats st[2];
    int k = 0;
    for (int L = 0; L < in_cfg.n_layers; L++) {
        if (!reap_config_layer_is_moe(&in_cfg, L))
            continue;
        CHECK_RC(reap_layer_stats_init(&st[k], L, in_cfg.n_experts, in_cfg.n_experts_used),
                 REAP_OK);
        for (int e = 0; e < in_cfg.n_experts; e++) {
            st[k].count[e] = 10;
            st[k].sum_gate_norm[e] = (double)((e * 5 + L * 3) % in_cfg.n_experts) + 1;
            st[k].sum_norm[e] = st[k].sum_gate[e] = st[k].max_act[e] = 1;
        }
        k++;
    }
    CHECK(k == 2);
    reap_prune_opts po = {0};
    po.model_dir = in_dir;
    po.out_dir = good_dir;
    po.stats = st;
    po.n_stats = k;
    po.keep = (reap_keep_opts){REAP_CRIT_REAP, 0, 3, 0, 0};
    po.verify = 1; /* structural, inside the prune */
    int rc = reap_prune(&po, &pres);
    CHECK_RC(rc, REAP_OK);
    for (int i = 0; i < k; i++)
        reap_layer_stats_free(&st[i]);
    if (rc)
        return -1;
    CHECK(pres.ks.n_keep == 5);
    CHECK(pres.verify.n_shards == 2 && pres.verify.n_tensors > 0);
    n_good_tensors = pres.verify.n_tensors;
    return 0;
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_cases(void)
{
    char dir[FX_PATH_MAX], path[FX_PATH_MAX], name[256], want[512], shard[256], other[256];
    const int Ek = pres.ks.n_keep, H = in_cfg.hidden, I = in_cfg.moe_inter;
    const reap_keep_layer *kl0 = reap_keepset_find(&pres.ks, 0);
    CHECK(kl0 != NULL && I != H);
    if (!kl0)
        return;

    /* the untouched copy passes, with every tensor and shard counted */
    {
        reap_verify_result vr = {0};
        CHECK_RC(reap_verify_structural(fresh_copy("clean", dir, sizeof dir), in_ck, &in_cfg,
                                        &pres.ks, &vr), REAP_OK);
        CHECK(vr.n_tensors == n_good_tensors && vr.n_shards == 2);
        reap_verify_result_free(&vr);
    }

    /* config.json: the expert count */
    fresh_copy("config_experts", dir, sizeof dir);
    json_t *doc = load_json(dir, "config.json", path, sizeof path);
    json_object_set_new(doc, "num_experts", json_integer(Ek + 1));
    save_json(doc, path);
    snprintf(want, sizeof want, "num_experts is %d, expected %d", Ek + 1, Ek);
    expect("config num_experts", dir, REAP_E_INVALID, NEEDLES(want, path));

    /* config.json: another field */
    fresh_copy("config_other", dir, sizeof dir);
    doc = load_json(dir, "config.json", path, sizeof path);
    json_object_set_new(doc, "rms_norm_eps", json_real(1e-5));
    save_json(doc, path);
    expect("config other field", dir, REAP_E_INVALID,
           NEEDLES(path, "a configuration field other than the expert count changed"));

    /* index: a tensor mapped to the wrong shard (the reader refuses it) */
    fresh_copy("index_wrong_shard", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.2.mlp.experts.%d.down_proj.weight", Ek - 1);
    shard_of(dir, name, shard, sizeof shard);
    other_shard(dir, shard, other, sizeof other);
    doc = load_json(dir, "model.safetensors.index.json", path, sizeof path);
    json_object_set_new(json_object_get(doc, "weight_map"), name, json_string(other));
    save_json(doc, path);
    snprintf(want, sizeof want, "tensor '%s' is mapped to shard %s", name, other);
    char it_is[300];
    snprintf(it_is, sizeof it_is, "(it is in %s)", shard);
    expect("index wrong shard", dir, REAP_E_FORMAT, NEEDLES(want, it_is));

    /* index: a tensor mapped to a shard that does not exist */
    fresh_copy("index_no_shard", dir, sizeof dir);
    doc = load_json(dir, "model.safetensors.index.json", path, sizeof path);
    json_object_set_new(json_object_get(doc, "weight_map"), name,
                        json_string("model-00009-of-00009.safetensors"));
    save_json(doc, path);
    expect("index missing shard", dir, REAP_E_NOTFOUND,
           NEEDLES("model-00009-of-00009.safetensors"));

    /* index: a tensor of a shard left out of the weight_map */
    fresh_copy("index_unmapped", dir, sizeof dir);
    doc = load_json(dir, "model.safetensors.index.json", path, sizeof path);
    CHECK(json_object_del(json_object_get(doc, "weight_map"), name) == 0);
    save_json(doc, path);
    snprintf(want, sizeof want, "weight_map names %d tensors, the shards hold %d",
             n_good_tensors - 1, n_good_tensors);
    expect("index unmapped tensor", dir, REAP_E_INVALID, NEEDLES(path, want));

    /* index: no total_size */
    fresh_copy("index_no_total", dir, sizeof dir);
    doc = load_json(dir, "model.safetensors.index.json", path, sizeof path);
    CHECK(json_object_del(json_object_get(doc, "metadata"), "total_size") == 0);
    save_json(doc, path);
    expect("index no total_size", dir, REAP_E_INVALID,
           NEEDLES(path, "metadata.total_size is not the"));

    /* shard header: __metadata__.format "tf" (same length, edited in place) */
    fresh_copy("format", dir, sizeof dir);
    path_join(path, sizeof path, dir, shard);
    {
        size_t len = 0;
        char *buf = slurp(path, &len);
        uint64_t hn = 0;
        CHECK(buf && len > 8);
        if (buf && len > 8) {
            memcpy(&hn, buf, 8); /* little endian */
            char *p = NULL;
            for (uint64_t i = 8; i + 4 <= 8 + hn && !p; i++)
                if (!memcmp(buf + i, "\"pt\"", 4))
                    p = buf + i;
            CHECK(p != NULL);
            if (p)
                memcpy(p, "\"tf\"", 4);
            write_bytes(path, buf, len);
        }
        free(buf);
    }
    expect("format not pt", dir, REAP_E_INVALID, NEEDLES(shard, "__metadata__.format is tf"));

    /* shard header: one more space of padding, so the data starts off the 8-byte grid */
    fresh_copy("align", dir, sizeof dir);
    path_join(path, sizeof path, dir, shard);
    {
        size_t len = 0;
        char *buf = slurp(path, &len);
        uint64_t hn = 0;
        CHECK(buf && len > 8);
        if (buf && len > 8) {
            memcpy(&hn, buf, 8);
            char *nb = malloc(len + 1);
            uint64_t hn1 = hn + 1;
            memcpy(nb, &hn1, 8);
            memcpy(nb + 8, buf + 8, hn);
            nb[8 + hn] = ' ';
            memcpy(nb + 9 + hn, buf + 8 + hn, len - 8 - hn);
            write_bytes(path, nb, len + 1);
            free(nb);
            snprintf(want, sizeof want, "data buffer starts at byte %llu, not a multiple of 8",
                     (unsigned long long)(9 + hn));
        }
        free(buf);
    }
    expect("unaligned data", dir, REAP_E_INVALID, NEEDLES(shard, want));

    /* a kept expert tensor missing (shard and index agree) */
    fresh_copy("expert_missing", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.2.mlp.experts.%d.up_proj.weight", Ek - 1);
    shard_of(dir, name, shard, sizeof shard);
    edit_shard(dir, shard, name, NULL);
    snprintf(want, sizeof want, "tensor '%s' not found", name);
    expect("kept expert missing", dir, REAP_E_NOTFOUND, NEEDLES(want));

    /* a pruned expert left in: index E' in a layer of E' experts */
    fresh_copy("expert_extra", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.2.mlp.experts.%d.gate_proj.weight", Ek);
    {
        char ref[256];
        snprintf(ref, sizeof ref, "model.layers.2.mlp.experts.0.gate_proj.weight");
        shard_of(dir, ref, shard, sizeof shard);
    }
    st_write_spec extra = {name, ST_F32, 2, {I, H}};
    edit_shard(dir, shard, name, &extra);
    snprintf(want, sizeof want, "tensor '%s': expert index %d >= %d", name, Ek, Ek);
    expect("pruned expert left in", dir, REAP_E_INVALID, NEEDLES(want));

    /* a kept expert with another shape (same bytes): the loader names both shapes */
    fresh_copy("expert_shape", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.0.mlp.experts.2.gate_proj.weight");
    shard_of(dir, name, shard, sizeof shard);
    st_write_spec reshaped = {name, ST_F32, 2, {H, I}};
    edit_shard(dir, shard, name, &reshaped);
    snprintf(want, sizeof want, "tensor '%s' has shape [%d, %d] but config.json implies "
             "[%d, %d]", name, H, I, I, H);
    expect("kept expert shape", dir, REAP_E_FORMAT, NEEDLES(want));

    /* a kept expert in another dtype than its source */
    fresh_copy("expert_dtype", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.0.mlp.experts.2.down_proj.weight");
    shard_of(dir, name, shard, sizeof shard);
    st_write_spec retyped = {name, ST_BF16, 2, {H, I}};
    edit_shard(dir, shard, name, &retyped);
    snprintf(want, sizeof want, "tensor '%s' does not match its source "
             "'model.layers.0.mlp.experts.%d.down_proj.weight'", name, kl0->keep[2]);
    expect("kept expert dtype", dir, REAP_E_INVALID, NEEDLES(want));

    /* a router tensor left with E rows */
    fresh_copy("router_rows", dir, sizeof dir);
    snprintf(name, sizeof name, "model.layers.0.mlp.gate.bias");
    shard_of(dir, "model.layers.0.mlp.gate.weight", shard, sizeof shard);
    st_write_spec bias = {name, ST_F32, 1, {in_cfg.n_experts}};
    edit_shard(dir, shard, name, &bias);
    snprintf(want, sizeof want, "tensor '%s': dim 0 is not %d", name, Ek);
    expect("router rows", dir, REAP_E_INVALID, NEEDLES(want));

    /* another tensor reshaped (same bytes; no loader checks the final norm) */
    fresh_copy("other_shape", dir, sizeof dir);
    shard_of(dir, "model.norm.weight", shard, sizeof shard);
    st_write_spec norm = {"model.norm.weight", ST_F32, 2, {1, H}};
    edit_shard(dir, shard, "model.norm.weight", &norm);
    expect("other tensor shape", dir, REAP_E_INVALID,
           NEEDLES("tensor 'model.norm.weight' differs in dtype or shape from the input"));

    /* a tensor the input does not have */
    fresh_copy("other_new", dir, sizeof dir);
    st_write_spec novel = {"model.extra.weight", ST_F32, 1, {4}};
    edit_shard(dir, shard, "model.extra.weight", &novel);
    expect("tensor not in input", dir, REAP_E_INVALID,
           NEEDLES("tensor 'model.extra.weight' is not in the input"));
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_verify";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    if (setup() == 0)
        test_cases();
    reap_prune_result_free(&pres);
    reap_ckpt_close(in_ck);
    reap_config_free(&in_cfg);
    TEST_MAIN_END();
}

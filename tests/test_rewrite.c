/* test_rewrite.c - the streaming safetensors writer and the pruned-checkpoint rewrite on
 * generated checkpoints of both families and both expert layouts:
 *   - writer: pieces spanning tensors, copies from a file, overrun and incomplete files;
 *   - per-expert tensors renamed 0..E'-1 in ascending original order and byte-identical to
 *     their sources; fused tensors and router rows sliced slab by slab; pruned tensors
 *     physically absent; other tensors byte-identical; 8-byte aligned headers,
 *     __metadata__ format pt; index total_size and weight_map; config.json differs only
 *     in the expert count; non-weight files copied, stale weight files and directories not;
 *   - structural and functional verification: pruning 0 experts gives bit-identical final
 *     hidden states and no routing change; on tokens whose top-k experts were all kept,
 *     the first MoE layer's output is identical (renormalised models);
 *   - refusals: existing output without --force, output inside the input, a cancelled
 *     rewrite leaves no temporary directory; the free-space check (reap_check_free_space)
 *     refuses more than the file system has and names both sizes.
 *
 * Usage: test_rewrite SCRATCH_DIR (created if missing; one subdirectory per case).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "engine_hidden.h"
#include "genmodel.h"
#include "keepset.h"
#include "prune.h"
#include "reap_err.h"
#include "rewrite.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"

/* ---- streaming writer -------------------------------------------------------------- */

static void test_writer(void)
{
    const char *dir = sp("writer");
    CHECK(rm_rf(dir) == 0);
    CHECK(mkdir(dir, 0755) == 0);
    st_write_spec specs[3] = {
        {"b", ST_BF16, 1, {3}},     /* 6 bytes */
        {"a", ST_F32, 2, {2, 2}},   /* 16 bytes */
        {"c", ST_U8, 1, {5}},       /* 5 bytes */
    };
    st_writer *w = NULL;
    const char *path = sp2("writer", "w.safetensors");
    CHECK_RC(st_writer_open(path, specs, 3, &w), REAP_OK);
    if (!w)
        return;
    /* file order: F32 "a", then BF16 "b", then U8 "c" */
    CHECK(st_writer_spec_index(w, 0) == 1 && st_writer_spec_index(w, 1) == 0 &&
          st_writer_spec_index(w, 2) == 2);
    CHECK(st_writer_data_size(w) == 27);
    uint64_t b, e;
    st_writer_tensor_range(w, 0, &b, &e);
    CHECK(b == 16 && e == 22);
    unsigned char data[27];
    for (int i = 0; i < 27; i++)
        data[i] = (unsigned char)(i * 7 + 1);
    /* a source file to copy from */
    const char *src = sp2("writer", "src.bin");
    FILE *f = fopen(src, "wb");
    CHECK(f && fwrite(data, 1, 27, f) == 27);
    if (f)
        fclose(f);
    int fd = open(src, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_RC(st_writer_write(w, data, 10), REAP_OK);          /* spans a -> b */
    CHECK_RC(st_writer_copy_fd(w, fd, 10, 12), REAP_OK);      /* b -> c */
    CHECK_RC(st_writer_write(w, data + 22, 6), REAP_E_INVALID); /* one byte too many */
    CHECK_RC(st_writer_write(w, data + 22, 5), REAP_OK);
    CHECK_RC(st_writer_finish(w), REAP_OK);
    st_file *sf = NULL;
    CHECK_RC(st_file_open(path, &sf), REAP_OK);
    if (sf) {
        CHECK(st_file_data_offset(sf) % 8 == 0);
        CHECK(!strcmp(st_file_metadata(sf, "format"), "pt"));
        const st_tensor *t = st_file_find(sf, "b");
        CHECK(t && t->nbytes == 6 && !memcmp(t->data, data + 16, 6));
        t = st_file_find(sf, "a");
        CHECK(t && !memcmp(t->data, data, 16));
        st_file_close(sf);
    }
    /* incomplete: finish refuses, no file left */
    const char *p2 = sp2("writer", "short.safetensors");
    CHECK_RC(st_writer_open(p2, specs, 3, &w), REAP_OK);
    CHECK_RC(st_writer_write(w, data, 20), REAP_OK);
    CHECK_RC(st_writer_finish(w), REAP_E_INVALID);
    CHECK_ERRMSG("tensor 'b' is incomplete");
    CHECK(access(p2, F_OK) != 0);
    char tmp[8300];
    snprintf(tmp, sizeof tmp, "%s.tmp", p2);
    CHECK(access(tmp, F_OK) != 0);
    /* copy past the end of the source */
    CHECK_RC(st_writer_open(p2, specs, 3, &w), REAP_OK);
    CHECK_RC(st_writer_copy_fd(w, fd, 20, 10), REAP_E_IO);
    st_writer_abort(w);
    CHECK(access(tmp, F_OK) != 0);
    /* duplicate names */
    st_write_spec dup[2] = {{"x", ST_U8, 1, {1}}, {"x", ST_U8, 1, {1}}};
    CHECK_RC(st_writer_open(p2, dup, 2, &w), REAP_E_INVALID);
    CHECK(w == NULL);
    close(fd);
}

/* ---- config patch ------------------------------------------------------------------- */

static void test_config_patch(void)
{
    const char *dir = sp("cfgpatch");
    CHECK(rm_rf(dir) == 0);
    CHECK(mkdir(dir, 0755) == 0);
    const char *src = sp2("cfgpatch", "in.json"), *dst = sp2("cfgpatch", "out.json");
    const char *vl =
        "{\n  \"model_type\": \"qwen3_vl_moe\",\n  \"num_experts\": 128,\n"
        "  \"text_config\": {\"rms_norm_eps\": 1e-06, \"num_experts\":128 ,\n"
        "     \"note\": \"num_experts: 128 \\\" {\", \"rope_scaling\": {\"num_experts\": 128},\n"
        "     \"num_local_experts\": 128},\n  \"vision_config\": {\"num_experts\": 128}\n}\n";
    write_text(src, vl);
    CHECK_RC(reap_config_patch_experts(src, dst, REAP_FAMILY_QWEN3_VL_MOE, 77), REAP_OK);
    char *got = slurp(dst, NULL);
    const char *want =
        "{\n  \"model_type\": \"qwen3_vl_moe\",\n  \"num_experts\": 128,\n"
        "  \"text_config\": {\"rms_norm_eps\": 1e-06, \"num_experts\":77 ,\n"
        "     \"note\": \"num_experts: 128 \\\" {\", \"rope_scaling\": {\"num_experts\": 128},\n"
        "     \"num_local_experts\": 77},\n  \"vision_config\": {\"num_experts\": 128}\n}\n";
    CHECK_MSG(got && !strcmp(got, want), "got:\n%s", got ? got : "(null)");
    free(got);
    write_text(src, "{\"model_type\": \"qwen3_moe\", \"num_experts\": 8, \"x\": 1.50}");
    CHECK_RC(reap_config_patch_experts(src, dst, REAP_FAMILY_QWEN3_MOE, 5), REAP_OK);
    got = slurp(dst, NULL);
    CHECK(got && !strcmp(got, "{\"model_type\": \"qwen3_moe\", \"num_experts\": 5, \"x\": 1.50}"));
    free(got);
    write_text(src, "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 8}");
    CHECK_RC(reap_config_patch_experts(src, dst, REAP_FAMILY_QWEN3_MOE, 5), REAP_E_FORMAT);
    CHECK_ERRMSG("no num_experts");
    write_text(src, "{\"model_type\": \"qwen3_moe\", \"num_experts\": 8.5}");
    CHECK_RC(reap_config_patch_experts(src, dst, REAP_FAMILY_QWEN3_MOE, 5), REAP_E_FORMAT);
    write_text(src, "{\"num_experts\": 8");
    CHECK_RC(reap_config_patch_experts(src, dst, REAP_FAMILY_QWEN3_MOE, 5), REAP_E_FORMAT);
}

/* ---- generated checkpoints ------------------------------------------------------------ */

/* Deterministic statistics with distinct scores per (layer, expert). */
static reap_layer_stats *fake_stats(const reap_config *cfg, int *n)
{
    int nm = reap_config_n_moe_layers(cfg), k = 0;
    reap_layer_stats *st = calloc((size_t)nm, sizeof *st);
    for (int L = 0; L < cfg->n_layers; L++) {
        if (!reap_config_layer_is_moe(cfg, L))
            continue;
        CHECK_RC(reap_layer_stats_init(&st[k], L, cfg->n_experts, cfg->n_experts_used),
                 REAP_OK);
        for (int e = 0; e < cfg->n_experts; e++) {
            st[k].count[e] = 10;
            st[k].sum_gate_norm[e] = (double)((e * 5 + L * 3) % cfg->n_experts) + 1;
            st[k].sum_norm[e] = 1;
            st[k].sum_gate[e] = 1;
            st[k].max_act[e] = 1;
        }
        k++;
    }
    *n = nm;
    return st;
}

/* Compare every output tensor with its source in the input. */
static void check_bytes(const reap_ckpt *in, const reap_ckpt *out, const reap_config *cfg,
                        const reap_keepset *ks)
{
    size_t n_out = 0, n_in = 0;
    for (size_t i = 0; i < reap_ckpt_n_files(out); i++) {
        const st_file *f = reap_ckpt_file(out, i);
        CHECK(st_file_data_offset(f) % 8 == 0);
        CHECK(st_file_metadata(f, "format") && !strcmp(st_file_metadata(f, "format"), "pt"));
        n_out += st_file_n_tensors(f);
    }
    int64_t pruned_expected = 0;
    for (size_t i = 0; i < reap_ckpt_n_files(in); i++) {
        const st_file *f = reap_ckpt_file(in, i);
        for (size_t j = 0; j < st_file_n_tensors(f); j++) {
            const st_tensor *t = st_file_tensor(f, j);
            char name[512];
            int layer = -1, e = -1, off = 0;
            n_in++;
            const reap_keep_layer *kl = NULL;
            char tail[256] = "";
            size_t pl = strlen(cfg->prefix);
            if (!strncmp(t->name, cfg->prefix, pl) &&
                sscanf(t->name + pl, "layers.%d.mlp.%n", &layer, &off) == 1 && off > 0)
                kl = reap_keepset_find(ks, layer);
            const char *rest = kl ? t->name + pl + off : NULL;
            if (rest && sscanf(rest, "experts.%d.%255s", &e, tail) == 2) {
                int ni = reap_keep_new_index(ks, kl, e);
                snprintf(name, sizeof name, "%.*sexperts.%d.%s", (int)(rest - t->name),
                         t->name, ni, tail);
                if (ni < 0) {
                    pruned_expected++;
                    /* the old name may exist only as another expert's new name */
                    continue;
                }
                const st_tensor *o = reap_ckpt_find(out, name);
                CHECK_MSG(o && o->nbytes == t->nbytes && !memcmp(o->data, t->data, t->nbytes),
                          "%s -> %s", t->name, name);
            } else if (rest && (!strncmp(rest, "experts.", 8) || !strncmp(rest, "gate.", 5))) {
                const st_tensor *o = reap_ckpt_find(out, t->name);
                CHECK_MSG(o != NULL, "%s missing", t->name);
                if (!o)
                    continue;
                uint64_t row = t->nbytes / (uint64_t)ks->n_experts;
                CHECK(o->shape[0] == ks->n_keep && o->nbytes == row * ks->n_keep);
                for (int k = 0; k < ks->n_keep; k++)
                    CHECK_MSG(!memcmp((const char *)o->data + row * k,
                                      (const char *)t->data + row * kl->keep[k], row),
                              "%s slab %d", t->name, k);
                for (int d = 1; d < t->ndim; d++)
                    CHECK(o->shape[d] == t->shape[d]);
            } else {
                const st_tensor *o = reap_ckpt_find(out, t->name);
                CHECK_MSG(o && o->dtype == t->dtype && o->nbytes == t->nbytes &&
                              !memcmp(o->data, t->data, t->nbytes),
                          "%s not copied byte for byte", t->name);
            }
        }
    }
    CHECK_MSG((int64_t)n_out == (int64_t)n_in - pruned_expected, "out %zu, in %zu, pruned %lld",
              n_out, n_in, (long long)pruned_expected);
}

/* config.json: identical except the expert-count digits. */
static void check_config_diff(const char *in_dir, const char *out_dir, int E, int E2)
{
    char a[8400], b[8400], ea[16], eb[16];
    snprintf(a, sizeof a, "%s/config.json", in_dir);
    snprintf(b, sizeof b, "%s/config.json", out_dir);
    char *x = slurp(a, NULL), *y = slurp(b, NULL);
    snprintf(ea, sizeof ea, ": %d", E);
    snprintf(eb, sizeof eb, ": %d", E2);
    CHECK(x && y);
    if (x && y) {
        char *p = strstr(x, "\"num_experts\"");
        CHECK(p != NULL);
        /* rebuild the expected text */
        char *want = malloc(strlen(x) + 16);
        size_t pre = (size_t)(strstr(p, ea) - x);
        memcpy(want, x, pre);
        strcpy(want + pre, eb);
        strcat(want, strstr(p, ea) + strlen(ea));
        CHECK_MSG(!strcmp(want, y), "config:\n%s", y);
        free(want);
    }
    free(x);
    free(y);
}

typedef struct capture {
    int layer;
    float *h; /* [T, H] copy of the hidden states leaving `layer` */
} capture;

static int on_layer_capture(void *ud, int layer, const float *hidden, int64_t T, int H)
{
    capture *c = ud;
    if (layer == c->layer) {
        c->h = malloc((size_t)T * H * sizeof *c->h);
        memcpy(c->h, hidden, (size_t)T * H * sizeof *c->h);
    }
    return 0;
}

static void prune_case(const char *name, reap_family fam, reap_expert_layout layout,
                       int n_shards, int n_prune, int first_moe)
{
    char in_dir[8192], out_dir[8192], path[8400];
    snprintf(in_dir, sizeof in_dir, "%s", sp2(name, "in"));
    snprintf(out_dir, sizeof out_dir, "%s", sp2(name, "out"));
    CHECK(rm_rf(sp(name)) == 0);
    CHECK(mkdir(sp(name), 0755) == 0);
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, fam);
    spec.layout = layout;
    spec.n_layers = 3;
    spec.n_experts = 8;
    spec.top_k = 2;
    spec.n_shards = n_shards;
    spec.norm_topk_prob = 1;
    if (first_moe == 1) {
        spec.n_mlp_only = 1;
        spec.mlp_only_layers[0] = 0;
    }
    CHECK_RC(reap_gen_model(&spec, in_dir), REAP_OK);
    /* non-weight files: copied; stale weights and directories: not */
    snprintf(path, sizeof path, "%s/tokenizer.json", in_dir);
    write_text(path, "{\"version\": \"1.0\"}\n");
    snprintf(path, sizeof path, "%s/generation_config.json", in_dir);
    write_text(path, "{\"do_sample\": true}\n");
    snprintf(path, sizeof path, "%s/pytorch_model.bin", in_dir);
    write_text(path, "stale");
    snprintf(path, sizeof path, "%s/sub", in_dir);
    CHECK(mkdir(path, 0755) == 0);

    reap_config cfg = {0};
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    CHECK_RC(reap_config_load(path, &cfg), REAP_OK);
    int n_st = 0;
    reap_layer_stats *st = fake_stats(&cfg, &n_st);
    reap_rows rows = {0};
    make_rows(&rows, cfg.vocab, 2, 24, 7u + (unsigned)n_prune, 24 - 3); /* one gap per row */

    reap_prune_opts po = {0};
    po.model_dir = in_dir;
    po.out_dir = out_dir;
    po.stats = st;
    po.n_stats = n_st;
    po.keep = (reap_keep_opts){REAP_CRIT_REAP, 0, n_prune, 0, 0};
    /* one case balances modalities: on text-only statistics the same keep set, and the
     * option recorded in reap_metadata.json and the manifest (only there) */
    const int balance = n_prune == 4;
    po.keep.balance_modalities = balance;
    po.verify = 1;
    po.verify_rows = &rows;
    po.probe.backend_opts.threads = 2;
    reap_prune_result res;
    CHECK_RC(reap_prune(&po, &res), REAP_OK);
    CHECK(res.ks.n_keep == 8 - n_prune);
    /* every output shard, and the input shard it came from, was hashed for the manifest
     * while the rewrite went on */
    CHECK(res.n_files_prehashed == 2 * res.rewrite.n_shards && res.rewrite.n_shards > 0 &&
          res.bytes_prehashed > res.rewrite.bytes_out + res.rewrite.bytes_in);
    CHECK(res.verify.n_moe == reap_config_n_moe_layers(&cfg));
    if (n_prune == 0) {
        CHECK(res.verify.hidden_identical && res.verify.hidden_rel_l2 == 0.0);
        for (int m = 0; m < res.verify.n_moe; m++)
            CHECK(res.verify.route_changed[m] == 0.0);
    } else {
        CHECK(!res.verify.hidden_identical && res.verify.hidden_rel_l2 > 0);
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", out_dir);
    char *tok = slurp(path, NULL);
    CHECK(tok && !strcmp(tok, "{\"version\": \"1.0\"}\n"));
    free(tok);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", out_dir);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "%s/sub", out_dir);
    CHECK(access(path, F_OK) != 0);
    CHECK(strstr(res.rewrite.skipped, "pytorch_model.bin") && strstr(res.rewrite.skipped, "sub"));
    snprintf(path, sizeof path, "%s/reap_metadata.json", out_dir);
    char *meta = slurp(path, NULL);
    CHECK(meta && strstr(meta, "\"experts_to_keep\"") && strstr(meta, "\"mean_scores\"") &&
          strstr(meta, "\"reap_version\"") && strstr(meta, "\"methodology\""));
    CHECK_MSG(meta && (strstr(meta, "\"balance_modalities\": true") != NULL) == balance,
              "%s: balance_modalities in reap_metadata.json: want %d", name, balance);
    free(meta);
    snprintf(path, sizeof path, "%s/reap-manifest.json", out_dir);
    meta = slurp(path, NULL);
    CHECK_MSG(meta && (strstr(meta, "\"balance_modalities\": true") != NULL) == balance,
              "%s: balance_modalities in the manifest: want %d", name, balance);
    free(meta);
    check_config_diff(in_dir, out_dir, 8, 8 - n_prune);

    reap_ckpt *ci = NULL, *co = NULL;
    reap_config ocfg = {0};
    CHECK_RC(reap_ckpt_open(in_dir, &ci), REAP_OK);
    CHECK_RC(reap_ckpt_open(out_dir, &co), REAP_OK);
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    CHECK_RC(reap_config_load(path, &ocfg), REAP_OK);
    if (ci && co) {
        check_bytes(ci, co, &cfg, &res.ks);
        CHECK(reap_ckpt_n_files(co) == (size_t)n_shards);
    }

    /* First MoE layer: tokens whose original top-k experts were all kept have identical
     * outputs (renormalised weights over the same experts, in the same order). */
    if (ci && co && n_prune > 0) {
        capture ca = {first_moe, NULL}, cb = {first_moe, NULL};
        reap_probe pa = {0}, pb = {0};
        reap_probe_opts oa = {.want_routes = 1, .on_layer = on_layer_capture, .ud = &ca};
        reap_probe_opts ob = {.want_routes = 1, .on_layer = on_layer_capture, .ud = &cb};
        oa.backend_opts.threads = ob.backend_opts.threads = 2;
        CHECK_RC(reap_engine_probe(ci, &cfg, &rows, &oa, &pa), REAP_OK);
        CHECK_RC(reap_engine_probe(co, &ocfg, &rows, &ob, &pb), REAP_OK);
        const reap_keep_layer *kl = reap_keepset_find(&res.ks, first_moe);
        int n_kept_tok = 0, n_same = 0, n_other = 0, n_other_diff = 0;
        double worst_kept = 0, least_other = INFINITY;
        for (int64_t n = 0; ca.h && cb.h && kl && n < pa.n_valid; n++) {
            const int32_t *r = pa.routes + n * pa.K; /* first MoE layer = index 0 */
            int all = 1;
            for (int k = 0; k < pa.K; k++)
                all &= reap_keep_new_index(&res.ks, kl, r[k]) >= 0;
            const float *x = ca.h + pa.valid[n] * pa.H, *y = cb.h + pa.valid[n] * pa.H;
            int same = !memcmp(x, y, (size_t)pa.H * sizeof *x);
            double d2 = 0, x2 = 0;
            for (int h = 0; h < pa.H; h++) {
                d2 += ((double)x[h] - y[h]) * ((double)x[h] - y[h]);
                x2 += (double)x[h] * x[h];
            }
            double rel = sqrt(d2 / x2);
            if (all) {
                n_kept_tok++;
                n_same += same;
                worst_kept = fmax(worst_kept, rel);
            } else {
                n_other++;
                n_other_diff += !same;
                least_other = fmin(least_other, rel);
            }
        }
        /* Renormalised models: bit-identical (the CPU backend's weights depend only on
         * the K selected logits, and its router and expert GEMMs are row- and
         * column-independent). Without renormalisation the weights are softmax
         * probabilities over E' instead of E experts: close, not identical. */
        printf("%s: first MoE layer %d: %d tokens with all top-k experts kept: %d "
               "bit-identical, largest relative difference %.3g; %d other tokens: smallest "
               "relative difference %.3g\n", name, first_moe, n_kept_tok, n_same, worst_kept,
               n_other, least_other);
        CHECK(n_kept_tok > 0 && worst_kept < 1e-6);
        if (cfg.norm_topk_prob)
            CHECK_MSG(n_same == n_kept_tok, "%d of %d tokens with all experts kept differ",
                      n_kept_tok - n_same, n_kept_tok);
        CHECK(n_other > 0 && n_other_diff == n_other && least_other > 1e-4);
        free(ca.h);
        free(cb.h);
        reap_probe_free(&pa);
        reap_probe_free(&pb);
    }

    /* Refusals: existing output, output inside the input; --force replaces. */
    reap_prune_result r2;
    CHECK_RC(reap_prune(&po, &r2), REAP_E_INVALID);
    CHECK_ERRMSG("already exists");
    snprintf(path, sizeof path, "%s/x", in_dir);
    po.out_dir = path;
    CHECK_RC(reap_prune(&po, &r2), REAP_E_INVALID);
    CHECK_ERRMSG("inside the input");
    po.out_dir = out_dir;
    po.force = 1;
    po.verify_rows = NULL;
    CHECK_RC(reap_prune(&po, &r2), REAP_OK);
    reap_prune_result_free(&r2);

    reap_ckpt_close(ci);
    reap_ckpt_close(co);
    reap_config_free(&ocfg);
    reap_prune_result_free(&res);
    reap_rows_free(&rows);
    free_stats(st, n_st);
    reap_config_free(&cfg);
}

static int cancel_cb(void *ud, uint64_t done, uint64_t total)
{
    (void)ud;
    return done * 2 > total;
}

static void test_cancel_cleans_up(void)
{
    char in_dir[8192], out_dir[8192], path[8400];
    snprintf(in_dir, sizeof in_dir, "%s", sp2("cancel", "in"));
    snprintf(out_dir, sizeof out_dir, "%s", sp2("cancel", "out"));
    CHECK(rm_rf(sp("cancel")) == 0);
    CHECK(mkdir(sp("cancel"), 0755) == 0);
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_shards = 2;
    CHECK_RC(reap_gen_model(&spec, in_dir), REAP_OK);
    reap_config cfg = {0};
    snprintf(path, sizeof path, "%s/config.json", in_dir);
    CHECK_RC(reap_config_load(path, &cfg), REAP_OK);
    int n_st = 0;
    reap_layer_stats *st = fake_stats(&cfg, &n_st);
    reap_prune_opts po = {0};
    po.model_dir = in_dir;
    po.out_dir = out_dir;
    po.stats = st;
    po.n_stats = n_st;
    po.keep = (reap_keep_opts){REAP_CRIT_REAP, 0.5, -1, 0, 0};
    po.progress = cancel_cb;
    reap_prune_result res;
    CHECK_RC(reap_prune(&po, &res), REAP_E_CANCELLED);
    reap_prune_result_free(&res);
    CHECK(access(out_dir, F_OK) != 0);
    DIR *d = opendir(sp("cancel"));
    struct dirent *e;
    int leftovers = 0;
    while (d && (e = readdir(d)))
        leftovers += strstr(e->d_name, "reap-tmp") != NULL;
    if (d)
        closedir(d);
    CHECK(leftovers == 0);
    /* statistics for another expert count: refused before anything is written */
    st[0].n_experts = 4;
    po.progress = NULL;
    CHECK_RC(reap_prune(&po, &res), REAP_E_PRECONDITION);
    CHECK_ERRMSG("precondition");
    st[0].n_experts = cfg.n_experts;
    free_stats(st, n_st);
    reap_config_free(&cfg);
}

static void test_space_check(void)
{
    CHECK_RC(reap_check_free_space(scratch, 1, "a test"), REAP_OK);
    /* 1 EB: no test machine has it */
    CHECK_RC(reap_check_free_space(scratch, (uint64_t)1 << 60, "a test"), REAP_E_IO);
    CHECK_ERRMSG("not enough disk space for a test");
    CHECK_ERRMSG("1152921504.61 GB");
    CHECK_ERRMSG("--no-space-check");
    /* Skipping is the caller's choice (reap_prune_opts / reap_store_opts.no_space_check,
     * from the commands' --no-space-check or REAP_NO_SPACE_CHECK): the library reads no
     * environment, so the variable alone changes nothing here. */
    setenv("REAP_NO_SPACE_CHECK", "1", 1);
    CHECK_RC(reap_check_free_space(scratch, (uint64_t)1 << 60, "a test"), REAP_E_IO);
    unsetenv("REAP_NO_SPACE_CHECK");
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_rewrite";
    if (mkdir(scratch, 0755) != 0 && errno != EEXIST) {
        perror(scratch);
        return 1;
    }
    test_writer();
    test_config_patch();
    prune_case("split_0", REAP_FAMILY_QWEN3_MOE, REAP_EXPERTS_SPLIT, 2, 0, 0);
    prune_case("split_3", REAP_FAMILY_QWEN3_MOE, REAP_EXPERTS_SPLIT, 3, 3, 1);
    prune_case("fused_vl_0", REAP_FAMILY_QWEN3_VL_MOE, REAP_EXPERTS_FUSED, 2, 0, 0);
    prune_case("fused_vl_4", REAP_FAMILY_QWEN3_VL_MOE, REAP_EXPERTS_FUSED, 1, 4, 0);
    prune_case("split_vl_2", REAP_FAMILY_QWEN3_VL_MOE, REAP_EXPERTS_SPLIT, 2, 2, 0);
    test_cancel_cleans_up();
    test_space_check();
    TEST_MAIN_END();
}

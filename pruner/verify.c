/* verify.c - structural and functional verification of a pruned checkpoint (verify.h). */
#include "verify.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"
#include "weights.h"

void reap_verify_result_free(reap_verify_result *r)
{
    if (!r)
        return;
    free(r->layer);
    free(r->route_changed);
    r->layer = NULL;
    r->route_changed = NULL;
    r->n_moe = 0;
}

#define FAIL(...) reap_err_set(REAP_E_INVALID, "verify: " __VA_ARGS__)

/* Configuration fields other than the expert count must not change. */
static int same_config(const reap_config *a, const reap_config *b)
{
    return a->family == b->family && a->n_layers == b->n_layers && a->hidden == b->hidden &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->head_dim == b->head_dim && a->vocab == b->vocab &&
           a->n_experts_used == b->n_experts_used && a->moe_inter == b->moe_inter &&
           a->inter == b->inter && a->norm_topk_prob == b->norm_topk_prob &&
           a->decoder_sparse_step == b->decoder_sparse_step &&
           a->n_mlp_only == b->n_mlp_only && a->rms_eps == b->rms_eps &&
           a->rope_theta == b->rope_theta && a->tie_word_embeddings == b->tie_word_embeddings &&
           !strcmp(a->prefix, b->prefix) &&
           (a->n_mlp_only == 0 ||
            !memcmp(a->mlp_only_layers, b->mlp_only_layers,
                    (size_t)a->n_mlp_only * sizeof *a->mlp_only_layers));
}

/* "P layers.L.mlp.<rest>" -> rest, layer. */
static const char *mlp_rest(const char *name, const char *prefix, int *layer)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) || strncmp(name + pl, "layers.", 7))
        return NULL;
    char *end;
    long L = strtol(name + pl + 7, &end, 10);
    if (end == name + pl + 7 || strncmp(end, ".mlp.", 5))
        return NULL;
    *layer = (int)L;
    return end + 5;
}

static int check_index(const char *out_dir, const reap_ckpt *ck, int *n_tensors)
{
    char path[8192];
    json_error_t jerr;
    int rc = REAP_OK;
    size_t total_t = 0;
    uint64_t total_b = 0;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out_dir);
    for (size_t i = 0; i < reap_ckpt_n_files(ck); i++) {
        const st_file *f = reap_ckpt_file(ck, i);
        total_t += st_file_n_tensors(f);
        for (size_t j = 0; j < st_file_n_tensors(f); j++)
            total_b += st_file_tensor(f, j)->nbytes;
        const char *fmt = st_file_metadata(f, "format");
        if (!fmt || strcmp(fmt, "pt"))
            return FAIL("%s: __metadata__.format is %s, not \"pt\"", st_file_path(f),
                        fmt ? fmt : "missing");
        if (st_file_data_offset(f) % 8)
            return FAIL("%s: data buffer starts at byte %llu, not a multiple of 8",
                        st_file_path(f), (unsigned long long)st_file_data_offset(f));
    }
    *n_tensors = (int)total_t;
    FILE *jf = NULL;
    json_t *doc = NULL;
    if (reap_fopen_read(path, NULL, &jf) == REAP_OK) {
        doc = json_loadf(jf, 0, &jerr);
        fclose(jf);
    } else {
        snprintf(jerr.text, sizeof jerr.text, "%s", reap_err_msg());
    }
    if (!doc)
        return reap_ckpt_n_files(ck) == 1 ? REAP_OK /* single file, no index */
                                          : FAIL("%s: %s", path, jerr.text);
    const json_t *map = json_object_get(doc, "weight_map");
    const json_t *ts = json_object_get(json_object_get(doc, "metadata"), "total_size");
    if (!json_is_object(map)) {
        rc = FAIL("%s: no weight_map", path);
    } else if (json_object_size(map) != total_t) {
        rc = FAIL("%s: weight_map names %zu tensors, the shards hold %zu", path,
                  json_object_size(map), total_t);
    } else if (!json_is_integer(ts) || (uint64_t)json_integer_value(ts) != total_b) {
        rc = FAIL("%s: metadata.total_size is not the %llu tensor bytes of the shards", path,
                  (unsigned long long)total_b);
    } else {
        for (size_t i = 0; i < reap_ckpt_n_files(ck) && !rc; i++) {
            const st_file *f = reap_ckpt_file(ck, i);
            const char *base = strrchr(st_file_path(f), '/');
            base = base ? base + 1 : st_file_path(f);
            for (size_t j = 0; j < st_file_n_tensors(f); j++) {
                const char *nm = st_file_tensor(f, j)->name;
                const char *where = json_string_value(json_object_get(map, nm));
                if (!where || strcmp(where, base)) {
                    rc = FAIL("%s: tensor '%s' of %s is %s", path, nm, base,
                              where ? "mapped to another shard" : "not in the weight_map");
                    break;
                }
            }
        }
    }
    json_decref(doc);
    return rc;
}

int reap_verify_structural(const char *out_dir, const reap_ckpt *in_ck,
                           const reap_config *in_cfg, const reap_keepset *ks,
                           reap_verify_result *res)
{
    int rc;
    reap_ckpt *ck = NULL;
    reap_config cfg = {0};
    char path[8192];
    int n_tensors = 0;
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if ((rc = reap_ckpt_open(out_dir, &ck)) || (rc = reap_config_load(path, &cfg)))
        goto done;
    if (cfg.n_experts != ks->n_keep) {
        rc = FAIL("%s: num_experts is %d, expected %d", path, cfg.n_experts, ks->n_keep);
        goto done;
    }
    if (!same_config(&cfg, in_cfg)) {
        rc = FAIL("%s: a configuration field other than the expert count changed", path);
        goto done;
    }
    if ((rc = check_index(out_dir, ck, &n_tensors)))
        goto done;
    const st_tensor *emb;
    if ((rc = reap_embed_weights_get(ck, &cfg, &emb)))
        goto done;
    for (int L = 0; L < cfg.n_layers; L++) {
        reap_layer_weights w;
        if ((rc = reap_layer_weights_get(ck, &cfg, L, &w)))
            goto done;
        reap_layer_weights_free(&w);
    }
    /* Every tensor: expert ids < E', gate tensors of E' rows, others as in the input. */
    for (size_t i = 0; i < reap_ckpt_n_files(ck); i++) {
        const st_file *f = reap_ckpt_file(ck, i);
        for (size_t j = 0; j < st_file_n_tensors(f); j++) {
            const st_tensor *t = st_file_tensor(f, j);
            int layer = -1;
            const char *rest = mlp_rest(t->name, cfg.prefix, &layer);
            int moe = rest && reap_keepset_find(ks, layer);
            if (moe && !strncmp(rest, "experts.", 8) && rest[8] >= '0' && rest[8] <= '9') {
                long e = strtol(rest + 8, NULL, 10);
                if (e >= ks->n_keep) {
                    rc = FAIL("tensor '%s': expert index %ld >= %d", t->name, e, ks->n_keep);
                    goto done;
                }
                char orig[1024];
                int ol = snprintf(orig, sizeof orig, "%.*s%d%s", (int)(rest + 8 - t->name),
                                  t->name, reap_keepset_find(ks, layer)->keep[e],
                                  strchr(rest + 8, '.'));
                const st_tensor *src =
                    ol > 0 && (size_t)ol < sizeof orig ? reap_ckpt_find(in_ck, orig) : NULL;
                if (!src || src->dtype != t->dtype || src->ndim != t->ndim ||
                    memcmp(src->shape, t->shape, sizeof t->shape)) {
                    rc = FAIL("tensor '%s' does not match its source '%s'", t->name, orig);
                    goto done;
                }
            } else if (moe && (!strncmp(rest, "experts.", 8) || !strncmp(rest, "gate.", 5))) {
                if (t->ndim < 1 || t->shape[0] != ks->n_keep) {
                    rc = FAIL("tensor '%s': dim 0 is not %d", t->name, ks->n_keep);
                    goto done;
                }
            } else {
                const st_tensor *src = reap_ckpt_find(in_ck, t->name);
                if (!src || src->dtype != t->dtype || src->ndim != t->ndim ||
                    memcmp(src->shape, t->shape, sizeof t->shape)) {
                    rc = FAIL("tensor '%s' %s", t->name,
                              src ? "differs in dtype or shape from the input"
                                  : "is not in the input");
                    goto done;
                }
            }
        }
    }
    if (res) {
        res->n_tensors = n_tensors;
        res->n_shards = (int)reap_ckpt_n_files(ck);
    }
done:
    reap_config_free(&cfg);
    reap_ckpt_close(ck);
    return rc;
}

int reap_verify_functional(const reap_ckpt *in_ck, const reap_config *in_cfg,
                           const reap_ckpt *out_ck, const reap_config *out_cfg,
                           const reap_keepset *ks, const reap_rows *rows,
                           const reap_probe_opts *popts, reap_verify_result *res)
{
    int rc;
    reap_probe a = {0}, b = {0};
    reap_probe_opts po = popts ? *popts : (reap_probe_opts){0};
    po.want_routes = 1;
    if ((rc = reap_engine_probe(in_ck, in_cfg, rows, &po, &a))) {
        reap_err_prefix(rc, "verify: original model");
        goto done;
    }
    if ((rc = reap_engine_probe(out_ck, out_cfg, rows, &po, &b))) {
        reap_err_prefix(rc, "verify: pruned model");
        goto done;
    }
    if (a.n_moe != b.n_moe || a.n_valid != b.n_valid || a.K != b.K) {
        rc = reap_err_set(REAP_E_INTERNAL, "verify: the two runs differ in shape");
        goto done;
    }
    const int K = a.K;
    res->n_moe = a.n_moe;
    res->n_tokens = a.n_valid;
    res->layer = malloc((size_t)(a.n_moe + 1) * sizeof *res->layer);
    res->route_changed = malloc((size_t)(a.n_moe + 1) * sizeof *res->route_changed);
    if (!res->layer || !res->route_changed) {
        rc = reap_err_set(REAP_E_NOMEM, "verify: out of memory");
        goto done;
    }
    for (int m = 0; m < a.n_moe; m++) {
        const reap_keep_layer *kl = reap_keepset_find(ks, a.moe_layer[m]);
        int64_t changed = 0;
        res->layer[m] = a.moe_layer[m];
        for (int64_t n = 0; n < a.n_valid; n++) {
            const int32_t *ra = a.routes + ((int64_t)m * a.n_valid + n) * K;
            const int32_t *rb = b.routes + ((int64_t)m * b.n_valid + n) * K;
            int diff = 0;
            /* kept ids are ascending, so mapped pruned routes stay ascending */
            for (int k = 0; k < K && !diff; k++)
                diff = !kl || rb[k] >= ks->n_keep || kl->keep[rb[k]] != ra[k];
            changed += diff;
        }
        res->route_changed[m] = a.n_valid ? (double)changed / (double)a.n_valid : 0.0;
    }
    double num = 0, den = 0, mx = 0;
    int same = 1;
    for (int64_t n = 0; n < a.n_valid; n++) {
        const float *ha = a.hidden + a.valid[n] * a.H, *hb = b.hidden + b.valid[n] * b.H;
        same &= !memcmp(ha, hb, (size_t)a.H * sizeof *ha);
        for (int h = 0; h < a.H; h++) {
            double d = (double)hb[h] - (double)ha[h];
            num += d * d;
            den += (double)ha[h] * ha[h];
            mx = fmax(mx, fabs(d));
        }
    }
    res->hidden_rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    res->hidden_max_abs = mx;
    res->hidden_identical = same;
done:
    reap_probe_free(&a);
    reap_probe_free(&b);
    if (rc)
        reap_verify_result_free(res);
    return rc;
}

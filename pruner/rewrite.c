/* rewrite.c - the streaming checkpoint rewrite (see rewrite.h): the shards, tensor by
 * tensor, and their index. config.json is rewrite_config.c, the other files and the path
 * helpers rewrite_files.c, AWQ's modules_to_not_convert rewrite_awq.c.
 *
 * Plan first, write second: every input tensor is classified (copy, rename, slice, drop)
 * into an output spec per input shard; then each output shard is opened with st_writer
 * (header from the specs) and filled in file order by copying byte ranges of the input
 * shard kernel-side. Slices copy one range per run of consecutive kept experts. */
#include "rewrite.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "reap_err.h"
#include "rewrite_impl.h"
#include "safetensors.h"

enum out_kind { OUT_COPY, OUT_SLICE };

typedef struct out_tensor {
    const st_tensor *src;
    enum out_kind kind;
    const reap_keep_layer *kl;  /* OUT_SLICE: whose keep list */
    uint64_t row_bytes;         /* OUT_SLICE: bytes per expert along dim 0 */
} out_tensor;

typedef struct out_shard {
    const st_file *in;
    char *name;                 /* output file name */
    size_t n;
    st_write_spec *specs;       /* [n], names owned */
    out_tensor *src;            /* [n] */
} out_shard;


/* ---- planning ----------------------------------------------------------------------------- */

/* Parse "P layers.<L>.mlp.<rest>"; returns rest or NULL. */
static const char *moe_rest(const char *name, const char *prefix, int *layer)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) || strncmp(name + pl, "layers.", 7))
        return NULL;
    const char *p = name + pl + 7;
    if (*p < '0' || *p > '9')
        return NULL;
    long L = 0;
    while (*p >= '0' && *p <= '9' && L < 1000000)
        L = L * 10 + (*p++ - '0');
    if (strncmp(p, ".mlp.", 5))
        return NULL;
    *layer = (int)L;
    return p + 5;
}

static void free_shards(out_shard *sh, size_t n)
{
    for (size_t i = 0; sh && i < n; i++) {
        for (size_t j = 0; j < sh[i].n; j++)
            free((char *)sh[i].specs[j].name);
        free(sh[i].specs);
        free(sh[i].src);
        free(sh[i].name);
    }
    free(sh);
}

static int slice_spec(const st_file *f, const st_tensor *t, const reap_keepset *ks,
                      const reap_keep_layer *kl, st_write_spec *sp, out_tensor *ot)
{
    if (t->ndim < 1 || t->shape[0] != ks->n_experts)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': dim 0 is %lld, expected the "
                            "%d experts of layer %d", st_file_path(f), t->name,
                            t->ndim ? (long long)t->shape[0] : 0LL, ks->n_experts,
                            kl->layer);
    sp->shape[0] = ks->n_keep;
    ot->kind = OUT_SLICE;
    ot->kl = kl;
    ot->row_bytes = t->nbytes / (uint64_t)ks->n_experts;
    return REAP_OK;
}

static int plan_shard(const st_file *f, const reap_config *cfg, const reap_keepset *ks,
                      out_shard *sh, reap_rewrite_result *res)
{
    size_t n = st_file_n_tensors(f);
    sh->in = f;
    sh->specs = calloc(n ? n : 1, sizeof *sh->specs);
    sh->src = calloc(n ? n : 1, sizeof *sh->src);
    if (!sh->specs || !sh->src)
        return reap_err_set(REAP_E_NOMEM, "rewrite plan: out of memory");
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_file_tensor(f, i);
        st_write_spec sp = {.name = NULL, .dtype = t->dtype, .ndim = t->ndim};
        out_tensor ot = {.src = t, .kind = OUT_COPY};
        memcpy(sp.shape, t->shape, sizeof sp.shape);
        char newname[1024];
        const char *outname = t->name;
        int layer = -1;
        const char *rest = moe_rest(t->name, cfg->prefix, &layer);
        const reap_keep_layer *kl = rest ? reap_keepset_find(ks, layer) : NULL;
        res->n_tensors_in++;
        res->bytes_in += t->nbytes;
        if (kl && !strncmp(rest, "experts.", 8) && rest[8] >= '0' && rest[8] <= '9') {
            const char *p = rest + 8;
            long e = 0;
            while (*p >= '0' && *p <= '9' && e <= ks->n_experts)
                e = e * 10 + (*p++ - '0');
            if (*p != '.' || e >= ks->n_experts)
                return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': expert index out of "
                                    "range 0..%d", st_file_path(f), t->name,
                                    ks->n_experts - 1);
            int ni = reap_keep_new_index(ks, kl, (int)e);
            if (ni < 0) {
                res->n_dropped++;
                continue;
            }
            int w = snprintf(newname, sizeof newname, "%.*sexperts.%d%s",
                             (int)(rest - t->name), t->name, ni, p);
            if (w < 0 || (size_t)w >= sizeof newname)
                return reap_err_set(REAP_E_FORMAT, "tensor name too long: '%s'", t->name);
            outname = newname;
            res->n_renamed += ni != (int)e;
        } else if (kl && (!strncmp(rest, "experts.", 8) || !strncmp(rest, "gate.", 5))) {
            int rc = slice_spec(f, t, ks, kl, &sp, &ot);
            if (rc)
                return rc;
            res->n_sliced++;
        }
        if (!(sp.name = strdup(outname)))
            return reap_err_set(REAP_E_NOMEM, "rewrite plan: out of memory");
        sh->specs[sh->n] = sp;
        sh->src[sh->n] = ot;
        sh->n++;
    }
    return REAP_OK;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct progress_state {
    reap_rewrite_progress_fn fn;
    void *ud;
    uint64_t done, total;
} progress_state;

static int write_shard(const out_shard *sh, const reap_roots *roots, const char *out_dir,
                       const reap_keepset *ks, progress_state *ps, reap_rewrite_file_fn done,
                       void *ud)
{
    int rc, fd = -1, keep_cached = 0;
    st_writer *w = NULL;
    char *path = rw_path_join(out_dir, sh->name);
    if (!path)
        return reap_err_set(REAP_E_NOMEM, "rewrite: out of memory");
    const char *in_path = st_file_path(sh->in);
    if ((rc = reap_open_read(in_path, roots, REAP_OPEN_REGULAR, &fd)))
        goto fail;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if ((rc = st_writer_open(path, sh->specs, sh->n, &w)))
        goto fail;
    const uint64_t base = st_file_data_offset(sh->in);
    for (size_t i = 0; i < sh->n; i++) {
        const out_tensor *ot = &sh->src[st_writer_spec_index(w, i)];
        const st_tensor *t = ot->src;
        uint64_t wrote = 0;
        if (ot->kind == OUT_COPY) {
            rc = st_writer_copy_fd(w, fd, base + t->begin, t->nbytes);
            wrote = t->nbytes;
        } else {
            /* one range per run of consecutive kept experts */
            const int *keep = ot->kl->keep;
            for (int k = 0; k < ks->n_keep && !rc;) {
                int j = k + 1;
                while (j < ks->n_keep && keep[j] == keep[j - 1] + 1)
                    j++;
                uint64_t len = (uint64_t)(j - k) * ot->row_bytes;
                rc = st_writer_copy_fd(w, fd, base + t->begin + (uint64_t)keep[k] * ot->row_bytes,
                                       len);
                wrote += len;
                k = j;
            }
        }
        if (rc) {
            reap_err_prefix(rc, "tensor '%s'", t->name);
            goto fail;
        }
        ps->done += wrote;
        if (ps->fn && ps->fn(ps->ud, ps->done, ps->total)) {
            rc = reap_err_set(REAP_E_CANCELLED, "rewrite stopped on request");
            goto fail;
        }
    }
    rc = st_writer_finish(w);
    w = NULL;
    if (!rc && done && done(ud, sh->name, in_path))
        keep_cached = 1;
fail:
    st_writer_abort(w);
    if (fd >= 0) {
        if (!keep_cached)
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    free(path);
    return rc;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* model.safetensors.index.json: the input's other metadata kept, total_size and the
 * weight_map (sorted by name) new. */
static int write_index(const char *in_index, const reap_roots *roots, const char *out_dir,
                       const out_shard *sh, size_t n_sh, uint64_t total)
{
    int rc = REAP_OK;
    json_error_t jerr;
    FILE *f = NULL;
    json_t *doc = NULL, *map = json_object();
    if ((rc = reap_fopen_read(in_index, roots, &f))) {
        json_decref(map);
        return rc;
    }
    doc = json_loadf(f, 0, &jerr);
    fclose(f);
    const char **names = NULL;
    char *text = NULL, *path = rw_path_join(out_dir, "model.safetensors.index.json");
    size_t n = 0, k = 0;
    if (!doc || !json_is_object(doc)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: %s", in_index, doc ? "not an object" : jerr.text);
        goto done;
    }
    for (size_t i = 0; i < n_sh; i++)
        n += sh[i].n;
    names = malloc((n ? n : 1) * 2 * sizeof *names);
    if (!map || !path || !names) {
        rc = reap_err_set(REAP_E_NOMEM, "index: out of memory");
        goto done;
    }
    /* pairs (name, file) sorted by name */
    for (size_t i = 0; i < n_sh; i++)
        for (size_t j = 0; j < sh[i].n; j++) {
            names[2 * k] = sh[i].specs[j].name;
            names[2 * k + 1] = sh[i].name;
            k++;
        }
    qsort(names, n, 2 * sizeof *names, cmp_cstr);
    for (size_t i = 0; i < n; i++)
        if (json_object_set_new(map, names[2 * i], json_string(names[2 * i + 1]))) {
            rc = reap_err_set(REAP_E_NOMEM, "index: out of memory");
            goto done;
        }
    json_t *meta = json_object_get(doc, "metadata");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(doc, "metadata", meta);
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set(doc, "weight_map", map);
    text = json_dumps(doc, JSON_INDENT(2));
    if (!text) {
        rc = reap_err_set(REAP_E_NOMEM, "index: out of memory");
        goto done;
    }
    size_t tl = strlen(text);
    char *nl = realloc(text, tl + 2);
    if (!nl) {
        rc = reap_err_set(REAP_E_NOMEM, "index: out of memory");
        goto done;
    }
    text = nl;
    memcpy(text + tl, "\n", 2);
    rc = rw_write_file(path, text, tl + 1);
done:
    free(names);
    free(text);
    free(path);
    json_decref(map);
    json_decref(doc);
    return rc;
}

int reap_rewrite_checkpoint(const reap_ckpt *ck, const reap_config *cfg,
                            const reap_keepset *ks, const char *out_dir,
                            reap_rewrite_progress_fn progress,
                            reap_rewrite_file_fn shard_done, void *ud, unsigned flags,
                            reap_rewrite_result *res)
{
    int rc = REAP_OK;
    reap_rewrite_result local;
    const size_t nf = reap_ckpt_n_files(ck);
    out_shard *sh = calloc(nf ? nf : 1, sizeof *sh);
    char *in_index = rw_path_join(reap_ckpt_dir(ck), "model.safetensors.index.json");
    char *in_cfg = rw_path_join(reap_ckpt_dir(ck), "config.json");
    char *out_cfg = rw_path_join(out_dir, "config.json");
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!sh || !in_index || !in_cfg || !out_cfg) {
        rc = reap_err_set(REAP_E_NOMEM, "rewrite: out of memory");
        goto done;
    }
    if (ks->n_experts != cfg->n_experts) {
        rc = reap_err_set(REAP_E_INVALID, "keep set is for %d experts, the model has %d",
                          ks->n_experts, cfg->n_experts);
        goto done;
    }
    for (int L = 0; L < cfg->n_layers; L++)
        if (reap_config_layer_is_moe(cfg, L) && !reap_keepset_find(ks, L)) {
            rc = reap_err_set(REAP_E_INVALID, "keep set has no entry for MoE layer %d", L);
            goto done;
        }

    /* Plan every shard, then name them. */
    size_t n_empty = 0;
    for (size_t i = 0; i < nf; i++) {
        if ((rc = plan_shard(reap_ckpt_file(ck, i), cfg, ks, &sh[i], res)))
            goto done;
        n_empty += sh[i].n == 0;
    }
    size_t n_out = nf - n_empty, k = 0;
    for (size_t i = 0; i < nf; i++) {
        if (sh[i].n == 0)
            continue;
        char nm[64];
        k++;
        if (n_empty)
            snprintf(nm, sizeof nm, "model-%05zu-of-%05zu.safetensors", k, n_out);
        sh[i].name = strdup(n_empty ? nm : rw_base_name(st_file_path(sh[i].in)));
        if (!sh[i].name) {
            rc = reap_err_set(REAP_E_NOMEM, "rewrite: out of memory");
            goto done;
        }
        for (size_t j = 0; j < sh[i].n; j++) {
            const out_tensor *ot = &sh[i].src[j];
            res->bytes_out += ot->kind == OUT_COPY ? ot->src->nbytes
                                                   : ot->row_bytes * (uint64_t)ks->n_keep;
        }
        res->n_tensors_out += (int)sh[i].n;
    }

    /* Shard headers, the index, config and other files come on top of the tensor
     * data: a 1% + 64 MiB allowance covers them. */
    if (!(flags & REAP_REWRITE_NO_SPACE_CHECK) &&
        (rc = reap_check_free_space(out_dir, res->bytes_out + res->bytes_out / 100 +
                                                 ((uint64_t)64 << 20),
                                    "the pruned checkpoint")))
        goto done;

    progress_state ps = {progress, ud, 0, res->bytes_out};
    for (size_t i = 0; i < nf; i++) {
        if (sh[i].n == 0)
            continue;
        if ((rc = write_shard(&sh[i], reap_ckpt_roots(ck), out_dir, ks, &ps, shard_done, ud)))
            goto done;
        res->n_shards++;
    }
    if (access(in_index, F_OK) == 0 &&
        (rc = write_index(in_index, reap_ckpt_roots(ck), out_dir, sh, nf, res->bytes_out)))
        goto done;
    if ((rc = rw_config_patch(in_cfg, reap_ckpt_roots(ck), out_cfg, cfg->family, ks->n_keep, cfg,
                           ks)) ||
        (rc = rw_copy_other_files(reap_ckpt_dir(ck), reap_ckpt_roots(ck), out_dir, res)) ||
        (rc = reap_fsync_dir(out_dir)))
        goto done;
done:
    free_shards(sh, nf);
    free(in_index);
    free(in_cfg);
    free(out_cfg);
    return rc;
}

/* rewrite.c - the streaming checkpoint rewrite (see rewrite.h).
 *
 * Plan first, write second: every input tensor is classified (copy, rename, slice, drop)
 * into an output spec per input shard; then each output shard is opened with st_writer
 * (header from the specs) and filled in file order by copying byte ranges of the input
 * shard kernel-side. Slices copy one range per run of consecutive kept experts. */
#include "rewrite.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "reap_err.h"
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

/* ---- small file helpers ---------------------------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* Write `len` bytes to path (create/truncate, fsync). Not reap_write_atomic on purpose:
 * every file the rewrite writes lands in the prune's staging directory, which is made
 * durable (directory fsync) and renamed into place as a whole (prune.c); a per-file
 * temp + rename inside it would only add work. */
static int write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return reap_err_set(REAP_E_IO, "%s: open: %s", path, strerror(errno));
    int rc = reap_write_all(fd, buf, len, path);
    if (!rc && fsync(fd) != 0)
        rc = reap_err_set(REAP_E_IO, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = reap_err_set(REAP_E_IO, "%s: close: %s", path, strerror(errno));
    return rc;
}

int reap_copy_file(const char *src, const char *dst)
{
    return reap_copy_file_confined(src, NULL, dst);
}

int reap_copy_file_confined(const char *src, const reap_roots *roots, const char *dst)
{
    int rc = REAP_OK, in = -1, out = -1;
    unsigned copy_flags = 0;
    if ((rc = reap_open_read(src, roots, REAP_OPEN_REGULAR, &in)))
        return rc;
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = reap_err_set(REAP_E_IO, "%s: open: %s", dst, strerror(errno));
        goto done;
    }
    struct stat st;
    if (fstat(in, &st) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: stat: %s", src, strerror(errno));
        goto done;
    }
    if ((rc = reap_copy_range(in, 0, (uint64_t)st.st_size, out, &copy_flags, src, dst)))
        goto done;
    if (fsync(out) != 0)
        rc = reap_err_set(REAP_E_IO, "%s: fsync: %s", dst, strerror(errno));
done:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && !rc)
        rc = reap_err_set(REAP_E_IO, "%s: close: %s", dst, strerror(errno));
    return rc;
}

/* ---- config.json ------------------------------------------------------------------------- */

/* A tiny JSON scanner that records where values are, so one number can be replaced
 * without re-serialising (and so reformatting) the rest of the file. */
typedef struct scan {
    const char *s;
    size_t n, i;
    int err;
    const char *target;         /* object holding the LM fields: NULL top level, else
                                   the name of a top-level member ("text_config") */
    size_t span[8][2];          /* value spans of expert-count keys found */
    int n_span;
    size_t mtc[2][2];           /* value spans of quantization_config.
                                   modules_to_not_convert: [0] top level, [1] in the LM
                                   object (when that is text_config) */
    int has_mtc[2];
} scan;

/* Roles of an object for the scanner: holds the LM fields (count keys), is a
 * quantization_config (modules_to_not_convert). */
enum { ROLE_LM = 1, ROLE_QUANT = 2, ROLE_QUANT_LM = 4 };

static const char *const count_keys[] = {"num_experts", "num_local_experts",
                                         "n_routed_experts"};

static void sk_ws(scan *c)
{
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                           c->s[c->i] == '\r'))
        c->i++;
}

/* A string token; [*b, *e) is its raw content between the quotes. */
static void sk_string(scan *c, size_t *b, size_t *e)
{
    if (c->i >= c->n || c->s[c->i] != '"') {
        c->err = 1;
        return;
    }
    *b = ++c->i;
    while (c->i < c->n && c->s[c->i] != '"')
        c->i += c->s[c->i] == '\\' ? 2 : 1;
    if (c->i >= c->n) {
        c->err = 1;
        return;
    }
    *e = c->i++;
}

static void sk_value(scan *c, int depth, int role);

static int key_is(const scan *c, size_t kb, size_t klen, const char *key)
{
    return strlen(key) == klen && !memcmp(c->s + kb, key, klen);
}

static void sk_object(scan *c, int depth, int role)
{
    c->i++; /* '{' */
    sk_ws(c);
    if (c->i < c->n && c->s[c->i] == '}') {
        c->i++;
        return;
    }
    while (!c->err) {
        size_t kb = 0, ke = 0;
        sk_ws(c);
        sk_string(c, &kb, &ke);
        sk_ws(c);
        if (c->err || c->i >= c->n || c->s[c->i] != ':') {
            c->err = 1;
            return;
        }
        c->i++;
        sk_ws(c);
        size_t klen = ke - kb;
        int child = 0;
        if (depth == 0 && c->target && key_is(c, kb, klen, c->target))
            child |= ROLE_LM;
        if (key_is(c, kb, klen, "quantization_config")) {
            if (depth == 0)
                child |= ROLE_QUANT;
            else if (depth == 1 && (role & ROLE_LM))
                child |= ROLE_QUANT_LM;
        }
        int counted = 0;
        for (size_t k = 0; (role & ROLE_LM) && k < 3; k++)
            counted |= key_is(c, kb, klen, count_keys[k]);
        int mtc = (role & (ROLE_QUANT | ROLE_QUANT_LM)) &&
                  key_is(c, kb, klen, "modules_to_not_convert")
                      ? ((role & ROLE_QUANT) ? 0 : 1) : -1;
        size_t vb = c->i;
        sk_value(c, depth + 1, child);
        if (counted && c->n_span < 8) {
            c->span[c->n_span][0] = vb;
            c->span[c->n_span][1] = c->i;
            c->n_span++;
        }
        if (mtc >= 0 && !c->err) {
            c->mtc[mtc][0] = vb;
            c->mtc[mtc][1] = c->i;
            c->has_mtc[mtc] = 1;
        }
        sk_ws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            continue;
        }
        if (c->i < c->n && c->s[c->i] == '}') {
            c->i++;
            return;
        }
        c->err = 1;
    }
}

static void sk_value(scan *c, int depth, int role)
{
    sk_ws(c);
    if (c->i >= c->n || depth > 64) {
        c->err = 1;
        return;
    }
    char ch = c->s[c->i];
    if (ch == '{') {
        sk_object(c, depth, role);
    } else if (ch == '[') {
        c->i++;
        sk_ws(c);
        if (c->i < c->n && c->s[c->i] == ']') {
            c->i++;
            return;
        }
        while (!c->err) {
            sk_value(c, depth + 1, 0);
            sk_ws(c);
            if (c->i < c->n && c->s[c->i] == ',') {
                c->i++;
                continue;
            }
            if (c->i < c->n && c->s[c->i] == ']') {
                c->i++;
                return;
            }
            c->err = 1;
        }
    } else if (ch == '"') {
        size_t b, e;
        sk_string(c, &b, &e);
    } else {
        size_t b = c->i;
        while (c->i < c->n && strchr("+-0123456789.eEtruefalsn", c->s[c->i]))
            c->i++;
        if (c->i == b)
            c->err = 1;
    }
}

/* The whole of a regular file (confined to roots, NULL: unconfined), NUL-terminated. */
static int read_text(const char *path, const reap_roots *roots, char **buf, size_t *len)
{
    int fd, rc;
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        return rc;
    rc = reap_read_stream(fd, path, NULL, NULL, buf, len);
    close(fd);
    return rc;
}

/* The modules_to_not_convert array of the quantization_config that config.c reads (top
 * level, else in the LM object `lm`), or NULL; *where: 0 top level, 1 in `lm`. */
static json_t *mtc_array(json_t *root, json_t *lm, int *where)
{
    json_t *q = json_object_get(root, "quantization_config");
    *where = 0;
    if (!json_is_object(q) && lm && lm != root) {
        q = json_object_get(lm, "quantization_config");
        *where = 1;
    }
    json_t *a = json_is_object(q) ? json_object_get(q, "modules_to_not_convert") : NULL;
    return json_is_array(a) ? a : NULL;
}

/* The new modules_to_not_convert (JSON array, new reference) or NULL when unchanged. */
static int new_not_convert(const char *src, json_t *arr, const reap_config *cfg,
                           const reap_keepset *ks, json_t **out)
{
    size_t n = json_array_size(arr), i;
    char **in = calloc(n ? n : 1, sizeof *in), **nv = NULL;
    int n_out = 0, changed = 0, rc = REAP_OK;
    json_t *v;
    *out = NULL;
    if (!in)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", src);
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: modules_to_not_convert[%zu] is not a string",
                              src, i);
            goto done;
        }
        in[i] = (char *)json_string_value(v);
    }
    if ((rc = reap_awq_not_convert_rewrite(cfg, ks, in, (int)n, &nv, &n_out, &changed)))
        goto done;
    if (changed) {
        json_t *a = json_array();
        for (int k = 0; a && k < n_out; k++)
            if (json_array_append_new(a, json_string(nv[k]))) {
                json_decref(a);
                a = NULL;
            }
        if (!a)
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", src);
        *out = a;
    }
done:
    reap_strv_free(nv, n_out);
    free(in);
    return rc;
}

/* Patch the expert counts to n_experts and, when `mtc` is not NULL, replace the
 * modules_to_not_convert array by it. */
static int config_patch(const char *src, const reap_roots *roots, const char *dst,
                        reap_family family, int n_experts, const reap_config *cfg,
                        const reap_keepset *ks)
{
    int rc = REAP_OK, where = 0;
    size_t len = 0;
    char *text = NULL, *out = NULL, *mtc_text = NULL;
    json_t *orig = NULL, *patched = NULL, *mtc = NULL;
    json_error_t jerr;
    if ((rc = read_text(src, roots, &text, &len)))
        return rc;
    scan c = {.s = text, .n = len,
              .target = family == REAP_FAMILY_QWEN3_VL_MOE ? "text_config" : NULL};
    sk_value(&c, 0, c.target == NULL ? ROLE_LM : 0);
    if (c.err) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: not valid JSON near byte %zu", src, c.i);
        goto done;
    }
    if (c.n_span == 0) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: no num_experts / num_local_experts / "
                          "n_routed_experts key in %s", src,
                          c.target ? "text_config" : "the top-level object");
        goto done;
    }
    orig = json_loadb(text, len, 0, &jerr);
    json_t *lm = orig && c.target ? json_object_get(orig, c.target) : orig;
    if (!orig || !json_is_object(lm)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: %s", src, orig ? "no language-model object" :
                          jerr.text);
        goto done;
    }
    /* AWQ: the new modules_to_not_convert, one line */
    json_t *arr = cfg && ks && cfg->quant.method == REAP_QUANT_AWQ ? mtc_array(orig, lm, &where)
                                                                  : NULL;
    if (arr && (rc = new_not_convert(src, arr, cfg, ks, &mtc)))
        goto done;
    if (mtc && !c.has_mtc[where]) {
        rc = reap_err_set(REAP_E_INTERNAL, "%s: modules_to_not_convert not found by the "
                          "scanner", src);
        goto done;
    }
    if (mtc && !(mtc_text = json_dumps(mtc, JSON_ENCODE_ANY))) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", src);
        goto done;
    }
    /* replacements in text order: the count spans, and the array's span */
    size_t rep[9][2];
    const char *with[9];
    int n_rep = 0;
    char num[32];
    int nl = snprintf(num, sizeof num, "%d", n_experts);
    for (int k = 0; k < c.n_span; k++) {
        for (size_t i = c.span[k][0]; i < c.span[k][1]; i++)
            if (!(text[i] >= '0' && text[i] <= '9')) {
                rc = reap_err_set(REAP_E_FORMAT, "%s: an expert-count value is not a "
                                  "non-negative integer", src);
                goto done;
            }
        rep[n_rep][0] = c.span[k][0];
        rep[n_rep][1] = c.span[k][1];
        with[n_rep++] = num;
    }
    if (mtc) {
        int at = n_rep;
        while (at > 0 && rep[at - 1][0] > c.mtc[where][0]) {
            rep[at][0] = rep[at - 1][0];
            rep[at][1] = rep[at - 1][1];
            with[at] = with[at - 1];
            at--;
        }
        rep[at][0] = c.mtc[where][0];
        rep[at][1] = c.mtc[where][1];
        with[at] = mtc_text;
        n_rep++;
    }
    out = malloc(len + (size_t)c.n_span * 32 + (mtc_text ? strlen(mtc_text) : 0) + 1);
    if (!out) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", src);
        goto done;
    }
    size_t o = 0, prev = 0;
    for (int k = 0; k < n_rep; k++) {
        size_t wl = with[k] == num ? (size_t)nl : strlen(with[k]);
        memcpy(out + o, text + prev, rep[k][0] - prev);
        o += rep[k][0] - prev;
        memcpy(out + o, with[k], wl);
        o += wl;
        prev = rep[k][1];
    }
    memcpy(out + o, text + prev, len - prev);
    o += len - prev;
    out[o] = '\0';

    /* Proof: the patched document equals the original with only those values changed. */
    patched = json_loadb(out, o, 0, &jerr);
    if (!patched) {
        rc = reap_err_set(REAP_E_INTERNAL, "%s: patched config.json does not parse: %s", src,
                          jerr.text);
        goto done;
    }
    for (size_t k = 0; k < 3; k++)
        if (json_object_get(lm, count_keys[k]))
            json_object_set_new(lm, count_keys[k], json_integer(n_experts));
    if (mtc)
        json_object_set(json_object_get(where ? lm : orig, "quantization_config"),
                        "modules_to_not_convert", mtc);
    if (!json_equal(orig, patched)) {
        rc = reap_err_set(REAP_E_INTERNAL, "%s: patched config.json differs in more than "
                          "the expert count%s", src, mtc ? " and modules_to_not_convert" : "");
        goto done;
    }
    rc = write_file(dst, out, o);
done:
    json_decref(orig);
    json_decref(patched);
    json_decref(mtc);
    free(mtc_text);
    free(text);
    free(out);
    return rc;
}

int reap_config_patch_experts(const char *src, const char *dst, reap_family family,
                              int n_experts)
{
    return config_patch(src, NULL, dst, family, n_experts, NULL, NULL);
}

int reap_config_patch_pruned(const char *src, const char *dst, const reap_config *cfg,
                             const reap_keepset *ks)
{
    return config_patch(src, NULL, dst, cfg->family, ks->n_keep, cfg, ks);
}

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
    char *path = path_join(out_dir, sh->name);
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
    char *text = NULL, *path = path_join(out_dir, "model.safetensors.index.json");
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
    rc = write_file(path, text, tl + 1);
done:
    free(names);
    free(text);
    free(path);
    json_decref(map);
    json_decref(doc);
    return rc;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Weight files in other formats would be stale after a prune; reap outputs of an
 * earlier prune are regenerated. */
static int skip_name(const char *n)
{
    static const char *const exact[] = {"config.json", "model.safetensors.index.json",
                                        "reap_metadata.json", "reap-manifest.json",
                                        "reap-manifest.json.minisig"};
    static const char *const suffix[] = {".safetensors", ".pt", ".pth", ".gguf", ".ckpt",
                                         ".h5", ".msgpack"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(n, exact[i]))
            return 1;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++)
        if (ends_with(n, suffix[i]))
            return 1;
    return !strncmp(n, "pytorch_model", 13) && (ends_with(n, ".bin") || strstr(n, ".bin."));
}

static void note_skipped(reap_rewrite_result *res, const char *name)
{
    size_t l = strlen(res->skipped);
    if (l + strlen(name) + 3 < sizeof res->skipped)
        snprintf(res->skipped + l, sizeof res->skipped - l, "%s%s", l ? ", " : "", name);
}

static int copy_other_files(const char *in_dir, const reap_roots *roots, const char *out_dir,
                            reap_rewrite_result *res)
{
    int rc = REAP_OK;
    DIR *d = opendir(in_dir);
    if (!d)
        return reap_err_set(REAP_E_IO, "%s: opendir: %s", in_dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *src = path_join(in_dir, e->d_name), *dst = path_join(out_dir, e->d_name);
        struct stat sb;
        if (!src || !dst) {
            rc = reap_err_set(REAP_E_NOMEM, "copy: out of memory");
        } else if (stat(src, &sb) != 0) {
            note_skipped(res, e->d_name); /* a dangling symlink */
        } else if (!S_ISREG(sb.st_mode)) {
            note_skipped(res, e->d_name);
        } else if (skip_name(e->d_name)) {
            if (ends_with(e->d_name, ".safetensors") || !strcmp(e->d_name, "config.json") ||
                !strcmp(e->d_name, "model.safetensors.index.json"))
                ; /* rewritten, or a shard: not "skipped" */
            else
                note_skipped(res, e->d_name);
        } else if (!(rc = reap_copy_file_confined(src, roots, dst))) {
            res->n_files_copied++;
        }
        free(src);
        free(dst);
        if (rc)
            break;
    }
    closedir(d);
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
    char *in_index = path_join(reap_ckpt_dir(ck), "model.safetensors.index.json");
    char *in_cfg = path_join(reap_ckpt_dir(ck), "config.json");
    char *out_cfg = path_join(out_dir, "config.json");
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
        sh[i].name = strdup(n_empty ? nm : base_name(st_file_path(sh[i].in)));
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
    if ((rc = config_patch(in_cfg, reap_ckpt_roots(ck), out_cfg, cfg->family, ks->n_keep, cfg,
                           ks)) ||
        (rc = copy_other_files(reap_ckpt_dir(ck), reap_ckpt_roots(ck), out_dir, res)) ||
        (rc = reap_fsync_dir(out_dir)))
        goto done;
done:
    free_shards(sh, nf);
    free(in_index);
    free(in_cfg);
    free(out_cfg);
    return rc;
}

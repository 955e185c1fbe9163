/* rewrite_config.c - config.json of the pruned checkpoint (rewrite.h:
 * reap_config_patch_experts, reap_config_patch_pruned; rewrite_impl.h: rw_config_patch).
 *
 * The file is patched textually so that key order, formatting and every other byte stay:
 * a tiny scanner finds the spans of the expert-count values (and, for AWQ, of the
 * modules_to_not_convert array) in the object that holds the language-model fields; the
 * spans are replaced; the result is re-parsed and compared with the original changed the
 * same way through jansson, which proves nothing else moved. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reap_err.h"
#include "rewrite.h"
#include "rewrite_impl.h"

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

int rw_config_patch(const char *src, const reap_roots *roots, const char *dst,
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
    rc = rw_write_file(dst, out, o);
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
    return rw_config_patch(src, NULL, dst, family, n_experts, NULL, NULL);
}

int reap_config_patch_pruned(const char *src, const char *dst, const reap_config *cfg,
                             const reap_keepset *ks)
{
    return rw_config_patch(src, NULL, dst, cfg->family, ks->n_keep, cfg, ks);
}

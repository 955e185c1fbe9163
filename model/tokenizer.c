/* tokenizer.c - loading tokenizer.json and the encode pipeline (see tokenizer.h).
 *
 * Loading reads the file once: its bytes are hashed (BLAKE2b-256, the digest) and parsed
 * by jansson; each section is checked against what this implementation supports and
 * turned into tables (tok_bpe.c), tries (tok_added.c), compiled regexes (tok_regex.c)
 * and a normaliser list (tok_norm.c).
 *
 * Encoding is a chain of callbacks over byte ranges of the text, with no intermediate
 * lists:
 *   raw text --added tokens (normalized: false)--> pieces
 *     piece --normalise--> --added tokens (normalized: true)--> pieces
 *       piece --pre-tokenizer stage 0 .. n-1 (Split regexes, ByteLevel)--> pre-tokens
 *         pre-token --BPE--> ids
 * Added-token ids are appended where they occur, so the ids come out in text order.
 *
 * One file: loading and the encode chain share the loaded tables and the callback chain
 * that ties them together; the parts that stand alone are already files of their own
 * (tok_bpe.c, tok_added.c, tok_regex.c, tok_norm.c).
 */
#include "tokenizer.h"

#include "fsopen.h"
#include "reap_err.h"
#include "tok_impl.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define TOK_MAX_STAGES 8

enum { STAGE_SPLIT, STAGE_BYTELEVEL };

typedef struct tok_stage {
    int kind;                   /* STAGE_* */
    int has_re;                 /* Split, or ByteLevel with use_regex */
    tok_regex re;
    tok_split_behavior behavior;
    int invert;
    int add_prefix_space;       /* ByteLevel */
} tok_stage;

struct reap_tokenizer {
    char *path;                 /* the tokenizer.json read */
    uint8_t digest[REAP_TOKENIZER_DIGEST_BYTES];
    tok_norm norm;
    tok_added *added;           /* [n_added] */
    int n_added;
    tok_trie trie_raw;          /* added tokens with normalized: false */
    tok_trie trie_norm;         /* added tokens with normalized: true */
    tok_stage stages[TOK_MAX_STAGES];
    int n_stages;
    tok_bpe bpe;
    int vocab_size;
};

/* ---- loading: helpers ------------------------------------------------------------- */

/* Read a whole file into a malloc'd buffer. */
static int read_file(const char *path, const reap_roots *roots, uint8_t **buf, size_t *n)
{
    FILE *fp = NULL;
    struct stat st;
    uint8_t *p = NULL;
    int rc;

    *buf = NULL;
    *n = 0;
    if ((rc = reap_fopen_read(path, roots, &fp)))
        return rc;
    if (fstat(fileno(fp), &st) != 0 || st.st_size < 0) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    p = malloc((size_t)st.st_size + 1);
    if (!p) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory (%lld bytes)", path,
                          (long long)st.st_size);
        goto fail;
    }
    if (fread(p, 1, (size_t)st.st_size, fp) != (size_t)st.st_size) {
        rc = reap_err_set(REAP_E_IO, "%s: short read", path);
        goto fail;
    }
    fclose(fp);
    *buf = p;
    *n = (size_t)st.st_size;
    return REAP_OK;

fail:
    free(p);
    fclose(fp);
    return rc;
}

/* A boolean field: absent or null gives `def`. */
static int get_bool(const char *path, const char *where, json_t *obj, const char *key,
                    int def, int *out)
{
    json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v)) {
        *out = def;
        return REAP_OK;
    }
    if (!json_is_boolean(v))
        return reap_err_set(REAP_E_FORMAT, "%s: %s.%s is not a boolean", path, where, key);
    *out = json_is_true(v);
    return REAP_OK;
}

/* The "type" string of a component (NULL if absent or not a string). */
static const char *type_of(json_t *obj)
{
    return json_string_value(json_object_get(obj, "type"));
}

/* ---- loading: model ---------------------------------------------------------------- */

/* Look a merge part up: its id, -2 if outside the byte-level alphabet, -1 if missing.
 * buf has room for the decoded bytes. */
static int32_t merge_part_id(const tok_bpe *b, const char *s, size_t n, uint8_t *buf,
                             long *blen)
{
    *blen = tok_bytelevel_decode(s, n, buf);
    if (*blen < 0)
        return -2;
    return tok_bpe_vocab_get(b, buf, (size_t)*blen);
}

static int load_merges(reap_tokenizer *t, json_t *merges)
{
    const char *path = t->path, *a, *bs, *sp;
    size_t i, na, nb;
    json_t *m;
    uint8_t *buf = NULL;
    size_t cap = 0;
    long la, lb;
    int32_t ia, ib, im;
    int rc;

    json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            a = json_string_value(m);
            sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = reap_err_set(REAP_E_FORMAT, "%s: model.merges[%zu] \"%s\" is not two "
                                  "tokens separated by one space", path, i, a);
                goto fail;
            }
            na = (size_t)(sp - a);
            bs = sp + 1;
            nb = strlen(bs);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            na = json_string_length(json_array_get(m, 0));
            bs = json_string_value(json_array_get(m, 1));
            nb = json_string_length(json_array_get(m, 1));
        } else {
            rc = reap_err_set(REAP_E_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor "
                              "[\"a\", \"b\"]", path, i);
            goto fail;
        }
        if (!buf || na + nb > cap) {    /* allocated for ["", ""] too */
            uint8_t *nbuf = realloc(buf, na + nb + 64);
            if (!nbuf) {
                rc = reap_err_set(REAP_E_NOMEM, "out of memory reading merges");
                goto fail;
            }
            buf = nbuf;
            cap = na + nb + 64;
        }
        ia = merge_part_id(&t->bpe, a, na, buf, &la);
        ib = merge_part_id(&t->bpe, bs, nb, buf + (la > 0 ? la : 0), &lb);
        if (ia == -2 || ib == -2)
            continue;       /* a token outside the byte alphabet can never be formed */
        if (ia < 0 || ib < 0) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: model.merges[%zu]: \"%.*s\" is not in the "
                              "vocabulary", path, i, ia < 0 ? (int)na : (int)nb,
                              ia < 0 ? a : bs);
            goto fail;
        }
        im = tok_bpe_vocab_get(&t->bpe, buf, (size_t)(la + lb));
        if (im < 0) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: model.merges[%zu]: the merged token "
                              "\"%.*s%.*s\" is not in the vocabulary", path, i, (int)na, a,
                              (int)nb, bs);
            goto fail;
        }
        if ((rc = tok_bpe_merge_add(&t->bpe, ia, ib, im, (uint32_t)i)))
            goto fail;
    }
    free(buf);
    return REAP_OK;

fail:
    free(buf);
    return rc;
}

static int load_model(reap_tokenizer *t, json_t *root, int *max_id)
{
    const char *path = t->path, *type, *key, *s;
    json_t *model = json_object_get(root, "model"), *vocab, *merges, *v;
    uint8_t *buf = NULL;
    size_t cap = 0, klen;
    long blen;
    json_int_t id;
    int rc, flag = 0;

    if (!json_is_object(model))
        return reap_err_set(REAP_E_FORMAT, "%s: no \"model\" object", path);
    type = type_of(model);
    if (type && strcmp(type, "BPE") != 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: model type \"%s\" is not supported "
                            "(byte-level BPE only)", path, type);
    v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0))
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: BPE dropout is not supported", path);
    s = json_string_value(json_object_get(model, "continuing_subword_prefix"));
    if (s && *s)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: BPE continuing_subword_prefix \"%s\" is "
                            "not supported", path, s);
    s = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if (s && *s)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: BPE end_of_word_suffix \"%s\" is not "
                            "supported", path, s);
    if ((rc = get_bool(path, "model", model, "ignore_merges", 0, &flag)))
        return rc;
    vocab = json_object_get(model, "vocab");
    merges = json_object_get(model, "merges");
    if (!json_is_object(vocab))
        return reap_err_set(REAP_E_FORMAT, "%s: model.vocab is not an object", path);
    if (merges && !json_is_array(merges))
        return reap_err_set(REAP_E_FORMAT, "%s: model.merges is not an array", path);
    if ((rc = tok_bpe_init(&t->bpe, json_object_size(vocab), json_array_size(merges))))
        return rc;
    t->bpe.ignore_merges = flag;

    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || (id = json_integer_value(v)) < 0 || id > INT32_MAX - 1) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: model.vocab[\"%s\"] is not a valid token "
                              "id", path, key);
            goto fail;
        }
        if ((int)id > *max_id)
            *max_id = (int)id;
        klen = strlen(key);
        /* Allocated even for an empty first key: the tables take no NULL key. */
        if (!buf || klen > cap) {
            uint8_t *nbuf = realloc(buf, klen + 64);
            if (!nbuf) {
                rc = reap_err_set(REAP_E_NOMEM, "out of memory reading the vocabulary");
                goto fail;
            }
            buf = nbuf;
            cap = klen + 64;
        }
        blen = tok_bytelevel_decode(key, klen, buf);
        if (blen < 0)
            continue;           /* outside the byte alphabet: never produced by BPE */
        if ((rc = tok_bpe_vocab_add(&t->bpe, buf, (size_t)blen, (int32_t)id))) {
            reap_err_prefix(rc, "%s: model.vocab[\"%s\"]", path, key);
            goto fail;
        }
    }
    free(buf);
    buf = NULL;
    if (merges && (rc = load_merges(t, merges)))
        return rc;
    if ((rc = tok_bpe_finish(&t->bpe)))
        return reap_err_prefix(rc, "%s", path);
    return REAP_OK;

fail:
    free(buf);
    return rc;
}

/* ---- loading: normalizer and pre-tokenizers --------------------------------------- */

static int load_normalizer(reap_tokenizer *t, json_t *n, int depth)
{
    const char *type;
    json_t *list, *item;
    size_t i;
    int rc, kind;

    if (!n || json_is_null(n))
        return REAP_OK;
    type = type_of(n);
    if (!json_is_object(n) || !type)
        return reap_err_set(REAP_E_FORMAT, "%s: normalizer has no \"type\"", t->path);
    if (!strcmp(type, "Sequence") && depth < 4) {
        list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return reap_err_set(REAP_E_FORMAT, "%s: normalizer Sequence without a "
                                "\"normalizers\" array", t->path);
        json_array_foreach(list, i, item)
            if ((rc = load_normalizer(t, item, depth + 1)))
                return rc;
        return REAP_OK;
    }
    if (!strcmp(type, "NFC"))
        kind = TOK_NORM_NFC;
    else if (!strcmp(type, "NFD"))
        kind = TOK_NORM_NFD;
    else if (!strcmp(type, "NFKC"))
        kind = TOK_NORM_NFKC;
    else if (!strcmp(type, "NFKD"))
        kind = TOK_NORM_NFKD;
    else
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: normalizer \"%s\" is not supported "
                            "(supported: NFC, NFD, NFKC, NFKD, Sequence)", t->path, type);
    if (t->norm.n == TOK_MAX_NORM)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: more than %d normalizers", t->path,
                            TOK_MAX_NORM);
    t->norm.kind[t->norm.n++] = kind;
    return REAP_OK;
}

static int parse_behavior(const char *s, tok_split_behavior *b)
{
    static const struct { const char *name; tok_split_behavior b; } names[] = {
        {"Isolated", TOK_SPLIT_ISOLATED}, {"Removed", TOK_SPLIT_REMOVED},
        {"MergedWithPrevious", TOK_SPLIT_MERGED_PREV},
        {"MergedWithNext", TOK_SPLIT_MERGED_NEXT}, {"Contiguous", TOK_SPLIT_CONTIGUOUS},
    };
    size_t i;

    for (i = 0; s && i < sizeof names / sizeof names[0]; i++) {
        if (!strcmp(s, names[i].name)) {
            *b = names[i].b;
            return 0;
        }
    }
    return -1;
}

static int load_split(reap_tokenizer *t, json_t *p, tok_stage *st)
{
    json_t *pat = json_object_get(p, "pattern"), *v;
    const char *beh = json_string_value(json_object_get(p, "behavior"));
    int literal, rc;

    st->kind = STAGE_SPLIT;
    if (parse_behavior(beh, &st->behavior))
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: Split behavior \"%s\" is not supported",
                            t->path, beh ? beh : "(missing)");
    if ((rc = get_bool(t->path, "Split", p, "invert", 0, &st->invert)))
        return rc;
    if (json_is_object(pat) && (v = json_object_get(pat, "Regex")) && json_is_string(v))
        literal = 0;
    else if (json_is_object(pat) && (v = json_object_get(pat, "String")) && json_is_string(v))
        literal = 1;
    else
        return reap_err_set(REAP_E_FORMAT, "%s: Split pattern is neither {\"Regex\": ...} "
                            "nor {\"String\": ...}", t->path);
    if (json_string_length(v) == 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: Split with an empty pattern", t->path);
    if ((rc = tok_regex_compile(&st->re, json_string_value(v), json_string_length(v),
                                literal)))
        return reap_err_prefix(rc, "%s: Split", t->path);
    st->has_re = 1;
    return REAP_OK;
}

static int load_pretok(reap_tokenizer *t, json_t *p, int depth)
{
    const char *type = type_of(p);
    json_t *list, *item;
    tok_stage *st;
    size_t i;
    int rc, use_regex = 1;

    if (!json_is_object(p) || !type)
        return reap_err_set(REAP_E_FORMAT, "%s: pre_tokenizer has no \"type\"", t->path);
    if (!strcmp(type, "Sequence") && depth < 4) {
        list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return reap_err_set(REAP_E_FORMAT, "%s: pre_tokenizer Sequence without a "
                                "\"pretokenizers\" array", t->path);
        json_array_foreach(list, i, item)
            if ((rc = load_pretok(t, item, depth + 1)))
                return rc;
        return REAP_OK;
    }
    if (strcmp(type, "Split") != 0 && strcmp(type, "ByteLevel") != 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported "
                            "(supported: Split, ByteLevel, Sequence)", t->path, type);
    if (t->n_stages > 0 && t->stages[t->n_stages - 1].kind == STAGE_BYTELEVEL)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: pre_tokenizer \"%s\" after ByteLevel is "
                            "not supported (ByteLevel must come last)", t->path, type);
    if (t->n_stages == TOK_MAX_STAGES)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: more than %d pre-tokenizers", t->path,
                            TOK_MAX_STAGES);
    st = &t->stages[t->n_stages++];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "Split"))
        return load_split(t, p, st);

    st->kind = STAGE_BYTELEVEL;
    st->behavior = TOK_SPLIT_ISOLATED;
    if ((rc = get_bool(t->path, "ByteLevel", p, "add_prefix_space", 1, &st->add_prefix_space)) ||
        (rc = get_bool(t->path, "ByteLevel", p, "use_regex", 1, &use_regex)))
        return rc;
    if (use_regex) {
        if ((rc = tok_regex_compile(&st->re, tok_gpt2_pattern, strlen(tok_gpt2_pattern), 0)))
            return reap_err_prefix(rc, "%s: ByteLevel", t->path);
        st->has_re = 1;
    }
    return REAP_OK;
}

/* ---- loading: added tokens --------------------------------------------------------- */

/* Ids are assigned as tokenizers' AddedVocabulary::add_tokens does when it reads
 * tokenizer.json (the "id" fields are only checked there, with a warning): in file order,
 * a token whose content was already added with the same flags is skipped; otherwise its
 * id is that of the earlier token with the same content, else that of the same string in
 * the model vocabulary, else the next free id (counting from the vocabulary's size); the
 * last token given an id decides that id's flags. */
static int load_added(reap_tokenizer *t, json_t *list, json_t *vocab, int *max_id)
{
    const char *path = t->path;
    json_t *item, *c, *idv, *vid;
    tok_added *a, tmp;
    uint8_t *norm;
    size_t i, nn, len;
    int rc, f[5] = {0}, k, e;
    int32_t id, next_id = (int32_t)json_object_size(vocab);

    if (!list || json_is_null(list))
        return REAP_OK;
    if (!json_is_array(list))
        return reap_err_set(REAP_E_FORMAT, "%s: added_tokens is not an array", path);
    t->added = calloc(json_array_size(list) + 1, sizeof *t->added);
    if (!t->added)
        return reap_err_set(REAP_E_NOMEM, "out of memory for added tokens");
    json_array_foreach(list, i, item) {
        c = json_object_get(item, "content");
        idv = json_object_get(item, "id");
        if (!json_is_string(c) || (idv && !json_is_integer(idv)))
            return reap_err_set(REAP_E_FORMAT, "%s: added_tokens[%zu] needs a string "
                                "\"content\" and an integer \"id\"", path, i);
        len = json_string_length(c);
        if (len == 0)
            continue;                   /* tokenizers ignores empty added tokens */
        if ((rc = get_bool(path, "added_tokens[]", item, "single_word", 0, &f[0])) ||
            (rc = get_bool(path, "added_tokens[]", item, "lstrip", 0, &f[1])) ||
            (rc = get_bool(path, "added_tokens[]", item, "rstrip", 0, &f[2])) ||
            (rc = get_bool(path, "added_tokens[]", item, "normalized", 1, &f[3])) ||
            (rc = get_bool(path, "added_tokens[]", item, "special", 0, &f[4])))
            return rc;
        memset(&tmp, 0, sizeof tmp);
        tmp.single_word = (uint8_t)f[0];
        tmp.lstrip = (uint8_t)f[1];
        tmp.rstrip = (uint8_t)f[2];
        tmp.normalized = (uint8_t)f[3];
        tmp.special = (uint8_t)f[4];
        for (e = 0; e < t->n_added; e++)
            if (t->added[e].len == len && !memcmp(t->added[e].content, json_string_value(c), len))
                break;
        if (e < t->n_added) {
            a = &t->added[e];
            if (a->single_word == tmp.single_word && a->lstrip == tmp.lstrip &&
                a->rstrip == tmp.rstrip && a->normalized == tmp.normalized &&
                a->special == tmp.special)
                continue;
            id = a->id;
        } else if ((vid = json_object_getn(vocab, json_string_value(c), len)) &&
                   json_is_integer(vid)) {
            id = (int32_t)json_integer_value(vid);
        } else {
            if (next_id == INT32_MAX)
                return reap_err_set(REAP_E_FORMAT, "%s: too many added tokens", path);
            id = next_id++;
        }
        for (k = 0; k < t->n_added; k++)
            if (t->added[k].id == id)
                break;
        a = &t->added[k];
        if (k == t->n_added) {
            a->content = malloc(len + 1);
            if (!a->content)
                return reap_err_set(REAP_E_NOMEM, "out of memory for added tokens");
            memcpy(a->content, json_string_value(c), len + 1);
            a->len = len;
            t->n_added++;
        } else if (a->len != len || memcmp(a->content, json_string_value(c), len)) {
            char *nc = malloc(len + 1);
            if (!nc)
                return reap_err_set(REAP_E_NOMEM, "out of memory for added tokens");
            memcpy(nc, json_string_value(c), len + 1);
            free(a->content);
            a->content = nc;
            a->len = len;
        }
        a->id = id;
        a->single_word = tmp.single_word;
        a->lstrip = tmp.lstrip;
        a->rstrip = tmp.rstrip;
        a->normalized = tmp.normalized;
        a->special = tmp.special;
        if (id > *max_id)
            *max_id = id;
    }

    for (k = 0; k < t->n_added; k++) {
        a = &t->added[k];
        a->pattern = a->content;
        a->pattern_len = a->len;
        if (a->normalized) {
            /* Matched in normalised text: match its normalised form. */
            if ((rc = tok_norm_apply(&t->norm, (const uint8_t *)a->content, a->len, &norm,
                                     &nn)))
                return rc;
            if (norm) {
                a->pattern = (char *)norm;
                a->pattern_len = nn;
            }
        }
        rc = tok_trie_insert(a->normalized ? &t->trie_norm : &t->trie_raw,
                             (const uint8_t *)a->pattern, a->pattern_len, k);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

/* ---- load / free ---------------------------------------------------------------------- */

int reap_tokenizer_load(const char *path, reap_tokenizer **out)
{
    return reap_tokenizer_load_confined(path, NULL, out);
}

int reap_tokenizer_load_confined(const char *path, const reap_roots *roots,
                                 reap_tokenizer **out)
{
    reap_tokenizer *t = NULL;
    json_error_t jerr;
    json_t *root = NULL, *pre;
    uint8_t *buf = NULL;
    size_t n, plen;
    struct stat st;
    int rc, i, max_id = -1, has_bl = 0;

    if (out)
        *out = NULL;
    if (!path || !out)
        return reap_err_set(REAP_E_INVALID, "reap_tokenizer_load: NULL argument");
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium failed to initialise");
    t = calloc(1, sizeof *t);
    if (!t)
        return reap_err_set(REAP_E_NOMEM, "out of memory");
    tok_trie_init(&t->trie_raw);
    tok_trie_init(&t->trie_norm);
    plen = strlen(path);
    t->path = malloc(plen + sizeof "/tokenizer.json");
    if (!t->path) {
        rc = reap_err_set(REAP_E_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(t->path, path, plen + 1);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        memcpy(t->path + plen, "/tokenizer.json", sizeof "/tokenizer.json");

    if ((rc = read_file(t->path, roots, &buf, &n)))
        goto fail;
    crypto_generichash(t->digest, sizeof t->digest, buf, n, NULL, 0);
    root = json_loadb((const char *)buf, n, 0, &jerr);
    free(buf);
    buf = NULL;
    if (!root) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%d:%d: invalid JSON: %s", t->path, jerr.line,
                          jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a JSON object", t->path);
        goto fail;
    }

    /* Normaliser first: normalized added tokens are matched in normalised form. */
    if ((rc = load_normalizer(t, json_object_get(root, "normalizer"), 0)) ||
        (rc = tok_norm_init(&t->norm)))
        goto fail;
    pre = json_object_get(root, "pre_tokenizer");
    if (pre && !json_is_null(pre) && (rc = load_pretok(t, pre, 0)))
        goto fail;
    for (i = 0; i < t->n_stages; i++)
        has_bl |= t->stages[i].kind == STAGE_BYTELEVEL;
    if (!has_bl) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: no ByteLevel pre_tokenizer: only "
                          "byte-level BPE tokenizers are supported", t->path);
        goto fail;
    }
    if ((rc = load_model(t, root, &max_id)))
        goto fail;
    if ((rc = load_added(t, json_object_get(root, "added_tokens"),
                         json_object_get(json_object_get(root, "model"), "vocab"), &max_id)))
        goto fail;
    t->vocab_size = max_id + 1;
    json_decref(root);
    *out = t;
    return REAP_OK;

fail:
    free(buf);
    json_decref(root);
    reap_tokenizer_free(t);
    return rc;
}

void reap_tokenizer_free(reap_tokenizer *t)
{
    int i;

    if (!t)
        return;
    for (i = 0; i < t->n_added; i++) {
        if (t->added[i].pattern != t->added[i].content)
            free(t->added[i].pattern);
        free(t->added[i].content);
    }
    free(t->added);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    for (i = 0; i < t->n_stages; i++)
        if (t->stages[i].has_re)
            tok_regex_free(&t->stages[i].re);
    tok_bpe_free(&t->bpe);
    tok_norm_free(&t->norm);
    free(t->path);
    free(t);
}

const uint8_t *reap_tokenizer_digest(const reap_tokenizer *t)
{
    return t->digest;
}

int reap_tokenizer_vocab_size(const reap_tokenizer *t)
{
    return t->vocab_size;
}

const tok_bpe *tok_tokenizer_bpe(const reap_tokenizer *t)
{
    return &t->bpe;
}

const char *reap_tokenizer_path(const reap_tokenizer *t)
{
    return t->path;
}

int32_t reap_tokenizer_added_id(const reap_tokenizer *t, const char *content)
{
    int i;

    for (i = 0; content && i < t->n_added; i++)
        if (!strcmp(t->added[i].content, content))
            return t->added[i].id;
    return -1;
}

/* ---- encoding ------------------------------------------------------------------------- */

typedef struct enc_ctx {
    reap_tokenizer *tok;
    tok_cache *cache;                           /* NULL: cache busy, not used */
    tok_bpe_scratch scratch;
    pcre2_match_data *md[TOK_MAX_STAGES];       /* per stage, created on first use */
    int fast;                                   /* no Unicode 15-16 additions needed */
    uint8_t *pbuf;                              /* ByteLevel add_prefix_space copy */
    size_t pbuf_cap;
    tok_ids out;
} enc_ctx;

typedef struct stage_arg {
    enc_ctx *e;
    int stage;
} stage_arg;

static int pretok(enc_ctx *e, int k, const uint8_t *s, size_t n);

static int pretok_cb(void *ctx, const uint8_t *s, size_t n)
{
    stage_arg *a = ctx;

    return pretok(a->e, a->stage, s, n);
}

/* Run pre-tokenizer stage k (and all later ones, then BPE) on s[0..n). */
static int pretok(enc_ctx *e, int k, const uint8_t *s, size_t n)
{
    const reap_tokenizer *t = e->tok;
    const tok_stage *st;
    stage_arg a;
    uint8_t *p;

    if (n == 0)
        return 0;
    if (k == t->n_stages)
        return tok_bpe_word(&t->bpe, e->cache, &e->scratch, s, n, &e->out);
    st = &t->stages[k];
    if (st->kind == STAGE_BYTELEVEL && st->add_prefix_space && s[0] != ' ') {
        /* Safe to reuse: ByteLevel is the last stage, so this piece is finished before
         * the buffer is needed again. */
        if (n + 1 > e->pbuf_cap) {
            p = realloc(e->pbuf, n + 1);
            if (!p)
                return reap_err_set(REAP_E_NOMEM, "out of memory (%zu bytes)", n + 1);
            e->pbuf = p;
            e->pbuf_cap = n + 1;
        }
        e->pbuf[0] = ' ';
        memcpy(e->pbuf + 1, s, n);
        s = e->pbuf;
        n++;
    }
    if (!st->has_re)
        return pretok(e, k + 1, s, n);
    if (!e->md[k] && !(e->md[k] = pcre2_match_data_create(1, NULL)))
        return reap_err_set(REAP_E_NOMEM, "out of memory for regex match data");
    a.e = e;
    a.stage = k + 1;
    return tok_regex_split(&st->re, e->md[k], e->fast, st->behavior, st->invert, s, n,
                           pretok_cb, &a);
}

/* A piece of normalised text between normalized added tokens, or one such token. */
static int norm_piece_cb(void *ctx, const uint8_t *s, size_t n, int32_t id)
{
    enc_ctx *e = ctx;

    if (id >= 0)
        return tok_ids_push(&e->out, id);
    return pretok(e, 0, s, n);
}

/* A piece of raw text between raw added tokens, or one such token. */
static int raw_piece_cb(void *ctx, const uint8_t *s, size_t n, int32_t id)
{
    enc_ctx *e = ctx;
    const reap_tokenizer *t = e->tok;
    uint8_t *norm = NULL;
    size_t nn;
    int rc;

    if (id >= 0)
        return tok_ids_push(&e->out, id);
    if (n == 0)
        return 0;
    if ((rc = tok_norm_apply(&t->norm, s, n, &norm, &nn)))
        return rc;
    if (norm) {
        s = norm;
        n = nn;
    }
    rc = tok_added_split(t->added, &t->trie_norm, s, n, norm_piece_cb, e);
    free(norm);
    return rc;
}

int reap_tokenizer_encode(reap_tokenizer *tok, const char *text, size_t len,
                          int32_t **ids, size_t *n_ids)
{
    enc_ctx e;
    size_t bad;
    int rc, locked, i;

    if (ids)
        *ids = NULL;
    if (n_ids)
        *n_ids = 0;
    if (!tok || (!text && len) || !ids || !n_ids)
        return reap_err_set(REAP_E_INVALID, "reap_tokenizer_encode: NULL argument");
    if (len == 0)
        return REAP_OK;
    bad = tok_utf8_invalid_at((const uint8_t *)text, len);
    if (bad != len)
        return reap_err_set(REAP_E_INVALID, "invalid UTF-8 at byte %zu (0x%02X)", bad,
                            (unsigned)(uint8_t)text[bad]);
    memset(&e, 0, sizeof e);
    e.tok = tok;
    e.fast = !tok_text_has_newer((const uint8_t *)text, len);
    locked = pthread_mutex_trylock(&tok->bpe.cache_lock) == 0;
    e.cache = locked ? &tok->bpe.cache : NULL;
    rc = tok_added_split(tok->added, &tok->trie_raw, (const uint8_t *)text, len, raw_piece_cb,
                         &e);
    if (locked)
        pthread_mutex_unlock(&tok->bpe.cache_lock);
    for (i = 0; i < TOK_MAX_STAGES; i++)
        pcre2_match_data_free(e.md[i]);
    tok_bpe_scratch_free(&e.scratch);
    free(e.pbuf);
    if (rc) {
        free(e.out.v);
        return rc;
    }
    if (e.out.n == 0) {
        free(e.out.v);
        return REAP_OK;
    }
    *ids = e.out.v;
    *n_ids = e.out.n;
    return REAP_OK;
}

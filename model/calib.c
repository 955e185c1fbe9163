/* calib.c - calibration samples from JSON Lines or a JSON array of items, and their
 * packing into rows.
 *
 * Reading (see calib.h for the formats) runs in three steps:
 *   collect  JSON Lines: getline() one line at a time, blank lines skipped, each line
 *            parsed by jansson. JSON array: the file is read whole and each element is
 *            parsed in place (json_loadb with JSON_DISABLE_EOF_CHECK reports how many bytes
 *            it used), so every item keeps the line it starts on. Each item's shape is
 *            checked here, so errors do not depend on shuffling; without shuffling,
 *            collection stops after max_samples items.
 *   select   optional Fisher-Yates shuffle (SplitMix64), keep max_samples.
 *   convert  input_ids are copied; text is tokenised; messages are rendered as ChatML
 *            and tokenised; every id is checked against vocab.
 * Every error names "path:line" (and "item N" inside an array).
 *
 * Packing (see calib.h): one walk over the samples (pack_walk) both counts the rows and,
 * given buffers, fills them, so the row count and the contents cannot disagree. The
 * buffers start zeroed (token 0, mask 0); the walk writes only the valid tokens.
 *
 * One file, one concern: calibration rows from a file. Collection, selection, conversion
 * and packing share the sample list and the error positions (path:line, item N), and
 * packing is one walk for counting and filling; splitting the steps would split that
 * state.
 */
#include "calib.h"

#include "reap_err.h"
#include "strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- reading: items ------------------------------------------------------------- */

enum { ITEM_IDS = 1, ITEM_TEXT, ITEM_MESSAGES };

typedef struct calib_item {
    json_t *json;
    int64_t line;               /* 1-based line where the item starts */
    int64_t index;              /* 0-based index in a JSON array, -1 in JSON Lines */
    int kind;                   /* ITEM_* */
} calib_item;

typedef struct calib_reader {
    const reap_calib_opts *o;
    reap_tokenizer *tok;        /* o->tokenizer, or the one load_tokenizer gave */
    int tok_asked;              /* load_tokenizer was called */
    calib_item *items;          /* [cap], n used */
    int64_t n, cap;
} calib_reader;

static const char *const chat_roles[] = {"system", "user", "assistant", "tool"};

/* Set an error located at item `it`: "path:line: [item N: ]message". */
static int item_err(const calib_reader *r, int64_t line, int64_t index, int status,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int item_err(const calib_reader *r, int64_t line, int64_t index, int status,
                    const char *fmt, ...)
{
    char msg[512], item[48] = "";
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (index >= 0)
        snprintf(item, sizeof item, "item %lld: ", (long long)index);
    return reap_err_set(status, "%s:%lld: %s%s", r->o->path, (long long)line, item, msg);
}

/* A jansson parse failure as an error at `line` (+ the parser's own line offset), never
 * past `last_line`: at the end of the input jansson counts the final newline as the
 * start of one more line. */
static int parse_err(const calib_reader *r, int64_t line, int64_t index,
                     const json_error_t *jerr, int64_t last_line)
{
    int64_t at = line + (jerr->line > 1 ? jerr->line - 1 : 0);
    if (at > last_line)
        at = last_line;

    if (json_error_code(jerr) == json_error_invalid_utf8)
        return item_err(r, at, index, REAP_E_FORMAT, "invalid UTF-8 (column %d)",
                        jerr->column);
    return item_err(r, at, index, REAP_E_FORMAT, "invalid JSON (column %d): %s",
                    jerr->column, jerr->text);
}

/* Check one message of a conversation. */
static int check_message(const calib_reader *r, const calib_item *it, size_t k, json_t *m)
{
    json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
    const char *rs;
    size_t i;

    if (!json_is_object(m))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] is not an "
                        "object", k);
    if (!json_is_string(role))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] has no "
                        "string \"role\"", k);
    if (!json_is_string(content))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] has no "
                        "string \"content\"", k);
    rs = json_string_value(role);
    for (i = 0; i < sizeof chat_roles / sizeof chat_roles[0]; i++)
        if (json_string_length(role) == strlen(chat_roles[i]) && !strcmp(rs, chat_roles[i]))
            return REAP_OK;
    return item_err(r, it->line, it->index, REAP_E_INVALID, "messages[%zu]: unknown role "
                    "\"%.40s\" (allowed: system, user, assistant, tool)", k, rs);
}

/* A text or messages item needs the tokenizer: ask load_tokenizer for it once. */
static int want_tokenizer(calib_reader *r)
{
    if (r->tok || r->tok_asked || !r->o->load_tokenizer)
        return REAP_OK;
    r->tok_asked = 1;
    return r->o->load_tokenizer(r->o->tokenizer_ud, &r->tok);
}

/* Check an item's shape and set it->kind. */
static int item_check(calib_reader *r, calib_item *it)
{
    const reap_calib_opts *o = r->o;
    json_t *j = it->json, *v, *x;
    json_int_t id;
    size_t i;
    int rc;

    if (!json_is_object(j))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "not a JSON object");
    if ((v = json_object_get(j, "input_ids"))) {
        it->kind = ITEM_IDS;
        if (!json_is_array(v))
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "\"input_ids\" is not "
                            "an array");
        if (json_array_size(v) == 0)
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "empty \"input_ids\"");
        json_array_foreach(v, i, x) {
            if (!json_is_integer(x))
                return item_err(r, it->line, it->index, REAP_E_FORMAT, "input_ids[%zu] is "
                                "not an integer", i);
            id = json_integer_value(x);
            /* Negative ids and ids beyond int32 are never token ids, whatever the vocab. */
            if (id < 0 || id > INT32_MAX || (o->vocab > 0 && id >= o->vocab)) {
                if (o->vocab > 0)
                    return item_err(r, it->line, it->index, REAP_E_INVALID, "token id %lld "
                                    "out of range (vocab_size %d)", (long long)id, o->vocab);
                return item_err(r, it->line, it->index, REAP_E_INVALID, "token id %lld out "
                                "of range", (long long)id);
            }
        }
        return REAP_OK;
    }
    if ((v = json_object_get(j, "messages"))) {
        it->kind = ITEM_MESSAGES;
        if (!json_is_array(v))
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "\"messages\" is not an "
                            "array");
        if (json_array_size(v) == 0)
            return item_err(r, it->line, it->index, REAP_E_INVALID, "empty \"messages\"");
        json_array_foreach(v, i, x)
            if ((rc = check_message(r, it, i, x)))
                return rc;
        if ((rc = want_tokenizer(r)))
            return rc;
        if (!r->tok)
            return item_err(r, it->line, it->index, REAP_E_INVALID, "a \"messages\" item "
                            "needs a tokenizer (--tokenizer)");
        if (reap_tokenizer_added_id(r->tok, "<|im_start|>") < 0 ||
            reap_tokenizer_added_id(r->tok, "<|im_end|>") < 0)
            return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "\"messages\" are "
                            "rendered as ChatML, but tokenizer %s has no <|im_start|> and "
                            "<|im_end|> tokens", reap_tokenizer_path(r->tok));
        return REAP_OK;
    }
    if ((v = json_object_get(j, "text"))) {
        it->kind = ITEM_TEXT;
        if (!json_is_string(v))
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "\"text\" is not a "
                            "string");
        if (json_string_length(v) == 0)
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "empty \"text\"");
        if ((rc = want_tokenizer(r)))
            return rc;
        if (!r->tok)
            return item_err(r, it->line, it->index, REAP_E_INVALID, "a \"text\" item needs "
                            "a tokenizer (--tokenizer)");
        return REAP_OK;
    }
    return item_err(r, it->line, it->index, REAP_E_FORMAT, "unknown item shape: expected "
                    "\"input_ids\", \"text\" or \"messages\"");
}

/* Take ownership of `j` as the next item (checked). */
static int reader_add(calib_reader *r, json_t *j, int64_t line, int64_t index)
{
    calib_item *items;
    int64_t ncap;
    int rc;

    if (r->n == r->cap) {
        ncap = r->cap ? r->cap * 2 : 64;
        items = realloc(r->items, (size_t)ncap * sizeof *items);
        if (!items) {
            json_decref(j);
            return item_err(r, line, index, REAP_E_NOMEM, "out of memory");
        }
        r->items = items;
        r->cap = ncap;
    }
    r->items[r->n].json = j;
    r->items[r->n].line = line;
    r->items[r->n].index = index;
    r->items[r->n].kind = 0;
    r->n++;
    if ((rc = item_check(r, &r->items[r->n - 1])))
        return rc;
    return REAP_OK;
}

/* 1 when collection may stop (no shuffle and max_samples items collected). */
static int reader_full(const calib_reader *r)
{
    return !r->o->shuffle && r->o->max_samples > 0 && r->n >= r->o->max_samples;
}

/* ---- reading: the two file formats ------------------------------------------------- */

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static int line_is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (!is_space((unsigned char)s[i]))
            return 0;
    return 1;
}

static int collect_jsonl(calib_reader *r, FILE *fp)
{
    const char *path = r->o->path;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int64_t lineno = 0;
    json_error_t jerr;
    json_t *j;
    int rc = REAP_OK;

    while (!reader_full(r)) {
        errno = 0;
        got = getline(&line, &line_cap, fp);
        if (got < 0) {
            if (ferror(fp))
                rc = reap_err_set(REAP_E_IO, "%s:%lld: read error: %s", path,
                                  (long long)lineno + 1, strerror(errno ? errno : EIO));
            break;          /* end of file */
        }
        lineno++;
        if (lineno == 1 && got >= 3 && !memcmp(line, "\xef\xbb\xbf", 3)) {
            memmove(line, line + 3, (size_t)got - 2);   /* a UTF-8 byte order mark */
            got -= 3;
        }
        if (line_is_blank(line, (size_t)got))
            continue;
        /* json_loadb, not json_loads: a NUL byte inside the line is an error, not an end. */
        j = json_loadb(line, (size_t)got, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!j) {
            rc = parse_err(r, lineno, -1, &jerr, lineno);
            break;
        }
        if ((rc = reader_add(r, j, lineno, -1)))
            break;
    }
    free(line);
    return rc;
}

/* Read the rest of fp into a buffer. */
static int slurp(const char *path, FILE *fp, char **buf, size_t *n)
{
    size_t cap = 1 << 16, len = 0, got;
    char *p = malloc(cap), *q;

    while (p) {
        got = fread(p + len, 1, cap - len, fp);
        len += got;
        if (len < cap) {
            if (ferror(fp)) {
                free(p);
                return reap_err_set(REAP_E_IO, "%s: read error: %s", path,
                                    strerror(errno ? errno : EIO));
            }
            *buf = p;
            *n = len;
            return REAP_OK;
        }
        cap *= 2;
        q = realloc(p, cap);
        if (!q)
            free(p);
        p = q;
    }
    return reap_err_set(REAP_E_NOMEM, "%s: out of memory reading the file", path);
}

static int collect_array(calib_reader *r, FILE *fp)
{
    const char *path = r->o->path;
    char *buf = NULL;
    size_t n = 0, pos = 0, k;
    int64_t line = 1, index = 0;
    json_error_t jerr;
    json_t *j;
    int rc;

    if ((rc = slurp(path, fp, &buf, &n)))
        return rc;
    int64_t last_line = 1;              /* the file's last line that has a character */
    for (size_t q = 0; q + 1 < n; q++)
        last_line += buf[q] == '\n';
#define SKIP_SPACE()                                                                 \
    while (pos < n && is_space((unsigned char)buf[pos])) {                           \
        if (buf[pos] == '\n')                                                        \
            line++;                                                                  \
        pos++;                                                                       \
    }
    if (n >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3))
        pos = 3;
    SKIP_SPACE();
    if (pos >= n || buf[pos] != '[') {
        rc = item_err(r, line, -1, REAP_E_FORMAT, "invalid JSON: expected '['");
        goto fail;
    }
    pos++;
    SKIP_SPACE();
    if (pos < n && buf[pos] == ']') {
        pos++;
        goto end;                                   /* [] */
    }
    while (!reader_full(r)) {
        if (pos >= n) {
            rc = item_err(r, line < last_line ? line : last_line, index, REAP_E_FORMAT,
                          "invalid JSON: the array is not closed");
            goto fail;
        }
        j = json_loadb(buf + pos, n - pos, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY |
                       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!j) {
            rc = parse_err(r, line, index, &jerr, last_line);
            goto fail;
        }
        if ((rc = reader_add(r, j, line, index)))
            goto fail;
        for (k = 0; k < (size_t)jerr.position && pos < n; k++, pos++)
            if (buf[pos] == '\n')
                line++;
        index++;
        SKIP_SPACE();
        if (pos < n && buf[pos] == ',') {
            pos++;
            SKIP_SPACE();
            continue;
        }
        if (pos < n && buf[pos] == ']') {
            pos++;
            goto end;
        }
        rc = item_err(r, line, -1, REAP_E_FORMAT, "invalid JSON: expected ',' or ']' after "
                      "item %lld", (long long)(index - 1));
        goto fail;
    }
    free(buf);
    return REAP_OK;                                 /* stopped early: rest not read */

end:
    SKIP_SPACE();
    if (pos < n) {
        rc = item_err(r, line, -1, REAP_E_FORMAT, "invalid JSON: data after the array");
        goto fail;
    }
#undef SKIP_SPACE
    free(buf);
    return REAP_OK;

fail:
    free(buf);
    return rc;
}

/* ---- reading: selection and conversion ------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void shuffle_items(calib_item *items, int64_t n, uint64_t seed)
{
    uint64_t state = seed;
    int64_t i, j;
    calib_item t;

    for (i = n - 1; i > 0; i--) {
        j = (int64_t)(splitmix64(&state) % (uint64_t)(i + 1));
        t = items[i];
        items[i] = items[j];
        items[j] = t;
    }
}

/* Render a conversation as ChatML: <|im_start|>{role}\n{content}<|im_end|>\n each. */
static int render_chatml(json_t *messages, reap_strbuf *b)
{
    json_t *m, *role, *content;
    size_t i;

    json_array_foreach(messages, i, m) {
        role = json_object_get(m, "role");
        content = json_object_get(m, "content");
        if (reap_strbuf_add(b, "<|im_start|>", 12) ||
            reap_strbuf_add(b, json_string_value(role), json_string_length(role)) ||
            reap_strbuf_add(b, "\n", 1) ||
            reap_strbuf_add(b, json_string_value(content),
                            json_string_length(content)) ||
            reap_strbuf_add(b, "<|im_end|>\n", 11))
            return -1;
    }
    return 0;
}

/* The token ids of a checked item. */
static int item_ids(const calib_reader *r, const calib_item *it, int32_t **ids_out,
                    int64_t *n_out)
{
    const reap_calib_opts *o = r->o;
    json_t *v, *x;
    int32_t *ids = NULL;
    size_t n = 0, i;
    reap_strbuf b = {0};
    int rc;

    *ids_out = NULL;
    *n_out = 0;
    if (it->kind == ITEM_IDS) {
        v = json_object_get(it->json, "input_ids");
        n = json_array_size(v);
        ids = malloc(n * sizeof *ids);
        if (!ids)
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory (%zu "
                            "tokens)", n);
        json_array_foreach(v, i, x)
            ids[i] = (int32_t)json_integer_value(x);    /* range checked in item_check */
        *ids_out = ids;
        *n_out = (int64_t)n;
        return REAP_OK;
    }
    if (it->kind == ITEM_TEXT) {
        v = json_object_get(it->json, "text");
        rc = reap_tokenizer_encode(r->tok, json_string_value(v), json_string_length(v),
                                   &ids, &n);
    } else {
        if (render_chatml(json_object_get(it->json, "messages"), &b)) {
            reap_strbuf_free(&b);
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
        }
        rc = reap_tokenizer_encode(r->tok, b.p, b.n, &ids, &n);
        reap_strbuf_free(&b);
    }
    if (rc && it->index >= 0)
        return reap_err_prefix(rc, "%s:%lld: item %lld", o->path, (long long)it->line,
                               (long long)it->index);
    if (rc)
        return reap_err_prefix(rc, "%s:%lld", o->path, (long long)it->line);
    if (n == 0) {
        free(ids);
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "the text has no tokens");
    }
    for (i = 0; o->vocab > 0 && i < n; i++) {
        if (ids[i] >= o->vocab) {
            rc = item_err(r, it->line, it->index, REAP_E_INVALID, "token id %d from the "
                          "tokenizer out of range (vocab_size %d)", ids[i], o->vocab);
            free(ids);
            return rc;
        }
    }
    *ids_out = ids;
    *n_out = (int64_t)n;
    return REAP_OK;
}

int reap_calib_load(const reap_calib_opts *o, reap_samples *out)
{
    calib_reader r;
    reap_samples s;
    FILE *fp = NULL;
    char *stream = NULL;        /* a FIFO's or pipe's whole content */
    size_t stream_len = 0;
    int64_t i, take;
    int c, rc, fd = -1;

    memset(&r, 0, sizeof r);
    memset(&s, 0, sizeof s);
    if (out)
        memset(out, 0, sizeof *out);
    if (!o || !o->path || !out)
        return reap_err_set(REAP_E_INVALID, "reap_calib_load: NULL argument");
    r.o = o;
    r.tok = o->tokenizer;
    /* A regular file is read through stdio. A FIFO or pipe (unconfined use only) is read
     * whole first, by a read that should_stop can end while no writer comes, and then
     * parsed from memory like a file (it cannot be rewound). */
    if ((rc = reap_open_read(o->path, o->roots, o->roots ? REAP_OPEN_REGULAR
                                                        : REAP_OPEN_STREAM, &fd)))
        return rc;
    if (fcntl(fd, F_GETFL) & O_NONBLOCK) {
        rc = reap_read_stream(fd, o->path, o->should_stop, o->stop_ud, &stream,
                              &stream_len);
        close(fd);
        if (rc)
            return rc;
        if (stream_len == 0) {
            free(stream);
            return reap_err_set(REAP_E_INVALID, "%s: no samples", o->path);
        }
        fp = fmemopen(stream, stream_len, "rb");
    } else {
        fp = fdopen(fd, "rb");
    }
    if (!fp) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: cannot make a stream: %s", o->path,
                          strerror(errno));
        if (!stream)
            close(fd);
        free(stream);
        return rc;
    }
    /* JSON array or JSON Lines: look at the first non-blank character (after a BOM). */
    do {
        c = getc(fp);
    } while (c != EOF && (is_space(c) || c == 0xEF || c == 0xBB || c == 0xBF));
    rewind(fp);
    rc = c == '[' ? collect_array(&r, fp) : collect_jsonl(&r, fp);
    if (rc)
        goto fail;
    if (r.n == 0) {
        rc = reap_err_set(REAP_E_INVALID, "%s: no samples", o->path);
        goto fail;
    }
    if (o->shuffle)
        shuffle_items(r.items, r.n, o->seed);
    take = o->max_samples > 0 && o->max_samples < r.n ? o->max_samples : r.n;

    s.len = malloc((size_t)take * sizeof *s.len);
    s.line = malloc((size_t)take * sizeof *s.line);
    s.ids = calloc((size_t)take, sizeof *s.ids);
    if (!s.len || !s.line || !s.ids) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory for %lld samples", o->path,
                          (long long)take);
        goto fail;
    }
    for (i = 0; i < take; i++) {
        if ((rc = item_ids(&r, &r.items[i], &s.ids[i], &s.len[i])))
            goto fail;
        s.line[i] = r.items[i].line;
        s.n++;
        json_decref(r.items[i].json);       /* no longer needed */
        r.items[i].json = NULL;
    }
    for (i = 0; i < r.n; i++)
        json_decref(r.items[i].json);
    free(r.items);
    fclose(fp);
    free(stream);
    *out = s;
    return REAP_OK;

fail:
    for (i = 0; i < r.n; i++)
        json_decref(r.items[i].json);
    free(r.items);
    reap_samples_free(&s);
    fclose(fp);
    free(stream);
    return rc;
}

int reap_samples_read_jsonl(const char *path, int64_t max_samples, int vocab,
                            reap_samples *out)
{
    reap_calib_opts o;

    memset(&o, 0, sizeof o);
    o.path = path;
    o.max_samples = max_samples;
    o.vocab = vocab;
    return reap_calib_load(&o, out);
}

void reap_calib_images_free(reap_calib_image *im, int32_t n)
{
    for (int32_t i = 0; im && i < n; i++)
        free(im[i].path);
    free(im);
}

void reap_samples_free(reap_samples *s)
{
    int64_t i;

    if (!s)
        return;
    for (i = 0; i < s->n; i++)
        free(s->ids[i]);
    free(s->ids);
    free(s->len);
    free(s->line);
    reap_calib_images_free(s->images, s->n_images);
    free(s->spans);
    memset(s, 0, sizeof *s);
}

/* ---- packing -------------------------------------------------------------------- */

/* Walk the samples as packing places them; returns the number of rows. With `tokens`
 * and `mask` (zeroed, [rows * seq_len]) also writes the valid tokens and counts them
 * into *n_valid. Position `pos` is the next free slot of the current row; pos == 0
 * means the next sample opens a new row. */
static int64_t pack_walk(const reap_samples *s, int seq_len, int32_t *tokens,
                         uint8_t *mask, int64_t *n_valid)
{
    int64_t rows = 0, valid = 0, i, j, take;
    int64_t pos = 0;
    size_t base;

    for (i = 0; i < s->n; i++) {
        if (pos == 0)
            rows++;
        take = seq_len - pos;                   /* room left in this row */
        if (s->len[i] < take)
            take = s->len[i];                   /* else truncate, drop the remainder */
        if (tokens) {
            base = (size_t)(rows - 1) * (size_t)seq_len + (size_t)pos;
            for (j = 0; j < take; j++) {
                tokens[base + (size_t)j] = s->ids[i][j];
                mask[base + (size_t)j] = 1;
            }
        }
        valid += take;
        pos += take;
        if (pos < seq_len)
            pos++;                              /* one gap position: token 0, mask 0 */
        if (pos == seq_len)
            pos = 0;                            /* row full: next sample opens a row */
    }
    if (n_valid)
        *n_valid = valid;
    return rows;
}

int reap_rows_build(const reap_samples *s, int seq_len, int pack, reap_rows *out)
{
    reap_rows r;
    int64_t rows, i, j, take;
    size_t cells, base;
    int rc;

    memset(&r, 0, sizeof r);
    if (out)
        memset(out, 0, sizeof *out);
    if (!s || !out) {
        rc = reap_err_set(REAP_E_INVALID, "reap_rows_build: NULL argument");
        goto fail;
    }
    if (seq_len < 1) {
        rc = reap_err_set(REAP_E_INVALID, "sequence length %d must be at least 1", seq_len);
        goto fail;
    }
    if (s->n < 1) {
        rc = reap_err_set(REAP_E_INVALID, "no calibration samples");
        goto fail;
    }
    for (i = 0; i < s->n; i++) {
        if (s->len[i] < 1 || !s->ids[i]) {
            rc = reap_err_set(REAP_E_INVALID, "calibration sample %lld is empty",
                              (long long)i);
            goto fail;
        }
    }

    rows = pack ? pack_walk(s, seq_len, NULL, NULL, NULL) : s->n;
    if (rows > INT_MAX || (uint64_t)rows > SIZE_MAX / sizeof(int32_t) / (uint64_t)seq_len) {
        rc = reap_err_set(REAP_E_INVALID, "%lld rows of %d tokens are too many",
                          (long long)rows, seq_len);
        goto fail;
    }
    cells = (size_t)rows * (size_t)seq_len;
    r.n_rows = (int)rows;
    r.seq_len = seq_len;
    r.tokens = calloc(cells, sizeof *r.tokens);
    r.mask = calloc(cells, sizeof *r.mask);
    if (!r.tokens || !r.mask) {
        rc = reap_err_set(REAP_E_NOMEM, "out of memory for %lld x %d calibration rows",
                          (long long)rows, seq_len);
        goto fail;
    }

    if (pack) {
        pack_walk(s, seq_len, r.tokens, r.mask, &r.n_valid);
    } else {
        for (i = 0; i < s->n; i++) {
            take = s->len[i] < seq_len ? s->len[i] : seq_len;
            base = (size_t)i * (size_t)seq_len;
            for (j = 0; j < take; j++) {
                r.tokens[base + (size_t)j] = s->ids[i][j];
                r.mask[base + (size_t)j] = 1;
            }
            r.n_valid += take;
        }
    }
    *out = r;
    return REAP_OK;

fail:
    reap_rows_free(&r);
    return rc;
}

void reap_rows_free(reap_rows *r)
{
    if (!r)
        return;
    free(r->tokens);
    free(r->mask);
    reap_calib_images_free(r->images, r->n_images);
    free(r->spans);
    memset(r, 0, sizeof *r);
}

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
 *   convert  input_ids are copied; text is tokenised; messages and image items are
 *            rendered as ChatML (an image as <|vision_start|><|image_pad|><|vision_end|>),
 *            their images read, hashed and probed for their grid, the text tokenised,
 *            and each <|image_pad|> widened to the image's token count (its span);
 *            every id is checked against vocab.
 * Every error names "path:line" (and "item N" inside an array; "image K" for an image).
 *
 * Packing (see calib.h): one walk over the samples (pack_walk) both counts the rows and,
 * given buffers, fills them, so the row count and the contents cannot disagree. The
 * buffers start zeroed (token 0, mask 0); the walk writes only the valid tokens. A sample
 * with images opens a new row when its spans would not fit in the rest of the current
 * one; check_spans refuses beforehand a sample whose spans fit in no row.
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
#include <sodium.h>
#include <ctype.h>
#include <strings.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- reading: items ------------------------------------------------------------- */

enum { ITEM_IDS = 1, ITEM_TEXT, ITEM_MESSAGES, ITEM_IMAGE };

/* The placeholder an image is rendered as before tokenising; its one <|image_pad|> is
 * widened to the image's token count afterwards. */
static const char vision_placeholder[] = "<|vision_start|><|image_pad|><|vision_end|>";
static const char *const vision_tokens[] = {"<|vision_start|>", "<|image_pad|>",
                                            "<|vision_end|>"};

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
    reap_calib_image *images;   /* images of the converted items, [images_cap] */
    int32_t n_images, images_cap;
    reap_sample_span *spans;    /* [spans_cap] */
    int64_t n_spans, spans_cap;
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

/* ---- reading: image references ------------------------------------------------ */

/* The image reference of a content part, or NULL when the part is no image: as in
 * Qwen3-VL's chat template, a part is an image when its "type" is "image" or it has an
 * "image" or "image_url" key. *is_image tells which; the reference is "image", else
 * "image_url" (a string, or an object's "url"); NULL with *is_image set: none usable. */
static json_t *part_image_ref(json_t *part, int *is_image)
{
    json_t *type = json_object_get(part, "type"), *v;

    *is_image = (json_is_string(type) && !strcmp(json_string_value(type), "image")) ||
                json_object_get(part, "image") || json_object_get(part, "image_url");
    if (!*is_image)
        return NULL;
    if ((v = json_object_get(part, "image")))
        return v;
    v = json_object_get(part, "image_url");
    if (json_is_object(v))
        v = json_object_get(v, "url");
    return v;
}

/* The length of the reference's URL scheme ("name" of "name://...", or "data" of
 * "data:..."), 0 for a path. */
static int ref_scheme_len(const char *s)
{
    size_t i = 0;

    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    while (s[i] && (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' ||
                    s[i] == '.'))
        i++;
    if (s[i] != ':')
        return 0;
    if (!strncmp(s + i + 1, "//", 2) || (i == 4 && !strncasecmp(s, "data", 4)))
        return (int)i;
    return 0;
}

/* Check an image reference's shape (`what` names it in messages): a non-empty string
 * without NUL bytes, a path or a file:// URI; other URLs are refused. */
static int image_ref_check(const calib_reader *r, const calib_item *it, const char *what,
                           json_t *ref)
{
    const char *s;
    int k;

    if (!json_is_string(ref))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: the image reference "
                        "is not a string", what);
    s = json_string_value(ref);
    if (json_string_length(ref) == 0)
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: empty image "
                        "reference", what);
    if (strlen(s) != json_string_length(ref))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: the image reference "
                        "holds a NUL byte", what);
    if ((k = ref_scheme_len(s)) && !(k == 4 && !strncasecmp(s, "file", 4)))
        return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "%s: image \"%.80s\": "
                        "%.*s URLs are not fetched; download the image and name the file "
                        "(a path relative to the calibration file, an absolute path or a "
                        "file:// URI)", what, s, k, s);
    return REAP_OK;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The file an image reference names (malloc'd in *out): a file:// URI's percent-decoded
 * absolute path, an absolute path as it is, a relative path joined to the calibration
 * file's folder. `image` names it in messages. */
static int image_ref_resolve(const calib_reader *r, const calib_item *it, int image,
                             const char *ref, char **out)
{
    const char *cal = r->o->path, *slash;
    size_t n = strlen(ref), dir;
    char *p, *q;
    int hi, lo;

    *out = NULL;
    if (ref_scheme_len(ref)) {                  /* file:// (others refused earlier) */
        const char *u = ref + 7;
        if (!strncasecmp(u, "localhost/", 10))
            u += 9;
        if (*u != '/')
            return item_err(r, it->line, it->index, REAP_E_INVALID, "image %d: \"%.80s\": "
                            "a file:// URI must name an absolute path on this host "
                            "(file:///path)", image, ref);
        if (!(p = q = malloc(strlen(u) + 1)))
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
        for (; *u; u++) {
            if (*u != '%') {
                *q++ = *u;
                continue;
            }
            if ((hi = hexval((unsigned char)u[1])) < 0 || (lo = hexval((unsigned char)u[2]))
                < 0 || (hi == 0 && lo == 0)) {
                free(p);
                return item_err(r, it->line, it->index, REAP_E_INVALID, "image %d: "
                                "\"%.80s\": bad percent-encoding in the file:// URI",
                                image, ref);
            }
            *q++ = (char)(hi * 16 + lo);
            u += 2;
        }
        *q = 0;
        *out = p;
        return REAP_OK;
    }
    slash = strrchr(cal, '/');
    dir = ref[0] == '/' || !slash ? 0 : (size_t)(slash - cal) + 1;
    if (!(p = malloc(dir + n + 1)))
        return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
    memcpy(p, cal, dir);
    memcpy(p + dir, ref, n + 1);
    *out = p;
    return REAP_OK;
}

/* Read image `k` of an item (reference `ref`) under the roots, hash it, probe its grid,
 * and append it to r->images. */
static int image_load(calib_reader *r, const calib_item *it, int k, const char *ref)
{
    const reap_calib_opts *o = r->o;
    reap_calib_image im = {0};
    reap_calib_grid g = {0};
    char *data = NULL, *path = NULL;
    size_t n = 0;
    int fd = -1, rc, m = o->spatial_merge;
    int64_t cells;

    if ((rc = image_ref_resolve(r, it, k, ref, &path)))
        return rc;
    if ((rc = reap_open_read(path, o->roots, REAP_OPEN_REGULAR, &fd)) ||
        (rc = reap_read_stream(fd, path, NULL, NULL, &data, &n)))
        goto prefix;
    crypto_generichash(im.digest, sizeof im.digest, (const uint8_t *)data, n, NULL, 0);
    if ((rc = o->probe_image(o->probe_ud, path, (const uint8_t *)data, n, &g)))
        goto prefix;
    cells = (int64_t)g.grid_t * g.grid_h * g.grid_w;
    if (g.grid_t < 1 || g.grid_h < 1 || g.grid_w < 1 || g.grid_h % m || g.grid_w % m ||
        cells / ((int64_t)m * m) > INT32_MAX) {
        rc = item_err(r, it->line, it->index, REAP_E_INVALID, "image %d (%s): the image "
                      "probe gave a patch grid %d x %d x %d that is not whole %d x %d "
                      "merge blocks", k, path, g.grid_t, g.grid_h, g.grid_w, m, m);
        goto fail;
    }
    if (r->n_images == r->images_cap) {
        int32_t cap = r->images_cap ? r->images_cap * 2 : 16;
        reap_calib_image *ims = realloc(r->images, (size_t)cap * sizeof *ims);
        if (!ims) {
            rc = item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
            goto fail;
        }
        r->images = ims;
        r->images_cap = cap;
    }
    im.path = path;
    im.line = it->line;
    im.item = k;
    im.grid_t = g.grid_t;
    im.grid_h = g.grid_h;
    im.grid_w = g.grid_w;
    im.n_tokens = cells / ((int64_t)m * m);
    r->images[r->n_images++] = im;
    close(fd);
    free(data);
    return REAP_OK;

prefix:
    if (it->index >= 0)
        rc = reap_err_prefix(rc, "%s:%lld: item %lld: image %d", o->path,
                             (long long)it->line, (long long)it->index, k);
    else
        rc = reap_err_prefix(rc, "%s:%lld: image %d", o->path, (long long)it->line, k);
fail:
    if (fd >= 0)
        close(fd);
    free(data);
    free(path);
    return rc;
}

/* An item with `n_img` images: the model, the options and the tokenizer must allow
 * them. Called after the item's shape is checked. */
static int want_images(calib_reader *r, const calib_item *it, int n_img);

/* Check one content part of message k (role `role`); counts images into *n_img. */
static int check_part(const calib_reader *r, const calib_item *it, size_t k, size_t p,
                      const char *role, json_t *part, int *n_img)
{
    json_t *ref, *type;
    char what[64];
    int is_image, rc;

    if (!json_is_object(part))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu].content[%zu]"
                        " is not an object", k, p);
    snprintf(what, sizeof what, "messages[%zu].content[%zu]", k, p);
    ref = part_image_ref(part, &is_image);
    if (is_image) {
        if (strcmp(role, "user"))
            return item_err(r, it->line, it->index, REAP_E_INVALID, "%s: an image in a "
                            "\"%s\" turn (Qwen3-VL's chat template renders images in user "
                            "turns only)", what, role);
        if (!ref)
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: an image part "
                            "without an \"image\" or \"image_url\" reference", what);
        if ((rc = image_ref_check(r, it, what, ref)))
            return rc;
        (*n_img)++;
        return REAP_OK;
    }
    type = json_object_get(part, "type");
    if ((json_is_string(type) && !strcmp(json_string_value(type), "video")) ||
        json_object_get(part, "video"))
        return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "%s: video parts are "
                        "not supported", what);
    if (json_object_get(part, "text")) {
        if (!json_is_string(json_object_get(part, "text")))
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: \"text\" is not a "
                            "string", what);
        return REAP_OK;
    }
    return item_err(r, it->line, it->index, REAP_E_FORMAT, "%s: a part with neither an "
                    "image nor \"text\"", what);
}

/* Check one message of a conversation; counts its images into *n_img. */
static int check_message(const calib_reader *r, const calib_item *it, size_t k, json_t *m,
                         int *n_img)
{
    json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content"), *x;
    const char *rs;
    size_t i;
    int rc;

    if (!json_is_object(m))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] is not an "
                        "object", k);
    if (!json_is_string(role))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] has no "
                        "string \"role\"", k);
    if (!json_is_string(content) && !json_is_array(content))
        return item_err(r, it->line, it->index, REAP_E_FORMAT, "messages[%zu] has no "
                        "string or list \"content\"", k);
    rs = json_string_value(role);
    for (i = 0; i < sizeof chat_roles / sizeof chat_roles[0]; i++)
        if (json_string_length(role) == strlen(chat_roles[i]) && !strcmp(rs, chat_roles[i]))
            break;
    if (i == sizeof chat_roles / sizeof chat_roles[0])
        return item_err(r, it->line, it->index, REAP_E_INVALID, "messages[%zu]: unknown "
                        "role \"%.40s\" (allowed: system, user, assistant, tool)", k, rs);
    if (json_is_array(content))
        json_array_foreach(content, i, x)
            if ((rc = check_part(r, it, k, i, rs, x, n_img)))
                return rc;
    return REAP_OK;
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
    int rc, n_img = 0;

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
            if ((rc = check_message(r, it, i, x, &n_img)))
                return rc;
        if (n_img && (rc = want_images(r, it, n_img)))
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
    if ((v = json_object_get(j, "image"))) {
        it->kind = ITEM_IMAGE;
        if ((rc = image_ref_check(r, it, "\"image\"", v)))
            return rc;
        if (!json_is_string(json_object_get(j, "text")))
            return item_err(r, it->line, it->index, REAP_E_FORMAT, "an \"image\" item "
                            "needs a string \"text\" (the prompt)");
        return want_images(r, it, 1);
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
                    "\"input_ids\", \"text\", \"messages\" or \"image\"");
}

static int want_images(calib_reader *r, const calib_item *it, int n_img)
{
    const reap_calib_opts *o = r->o;
    int rc;

    if (sodium_init() < 0)          /* image digests are BLAKE2b-256 */
        return reap_err_set(REAP_E_INTERNAL, "libsodium failed to initialise");
    if (!o->has_vision)
        return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "%d image(s), but the "
                        "model has no vision tower (no vision_config)", n_img);
    if (o->spatial_merge < 1)
        return item_err(r, it->line, it->index, REAP_E_INVALID, "image items need the "
                        "vision tower's spatial_merge_size (got %d)", o->spatial_merge);
    if (!o->probe_image)
        return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "%d image(s), but this "
                        "program reads no images (no image probe)", n_img);
    if ((rc = want_tokenizer(r)))
        return rc;
    if (!r->tok)
        return item_err(r, it->line, it->index, REAP_E_INVALID, "an item with images needs "
                        "a tokenizer (--tokenizer)");
    if (reap_tokenizer_added_id(r->tok, "<|im_start|>") < 0 ||
        reap_tokenizer_added_id(r->tok, "<|im_end|>") < 0)
        return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "items with images are "
                        "rendered as ChatML, but tokenizer %s has no <|im_start|> and "
                        "<|im_end|> tokens", reap_tokenizer_path(r->tok));
    for (size_t i = 0; i < sizeof vision_tokens / sizeof vision_tokens[0]; i++)
        if (reap_tokenizer_added_id(r->tok, vision_tokens[i]) < 0)
            return item_err(r, it->line, it->index, REAP_E_UNSUPPORTED, "images are "
                            "rendered with %s, but tokenizer %s has no such token",
                            vision_tokens[i], reap_tokenizer_path(r->tok));
    return REAP_OK;
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

/* Append `content` (a checked string or list of parts) as Qwen3-VL's chat template
 * renders it: the parts in order, text as it is, each image as vision_placeholder; the
 * image references are appended to refs (json strings, borrowed; [n_refs], room for every
 * image of the item). */
static int render_content(json_t *content, reap_strbuf *b, json_t **refs, int *n_refs)
{
    json_t *part, *ref, *text;
    size_t i;
    int is_image;

    if (json_is_string(content))
        return reap_strbuf_add(b, json_string_value(content), json_string_length(content));
    json_array_foreach(content, i, part) {
        ref = part_image_ref(part, &is_image);
        if (is_image) {
            refs[(*n_refs)++] = ref;
            if (reap_strbuf_add(b, vision_placeholder, sizeof vision_placeholder - 1))
                return -1;
        } else if ((text = json_object_get(part, "text")) &&
                   reap_strbuf_add(b, json_string_value(text), json_string_length(text))) {
            return -1;
        }
    }
    return 0;
}

/* Render an item as ChatML: <|im_start|>{role}\n{content}<|im_end|>\n per message (the
 * short image form: one user message, the image and then the text). */
static int render_chatml(const calib_item *it, reap_strbuf *b, json_t **refs, int *n_refs)
{
    json_t *m, *role, *content;
    size_t i;

    if (it->kind == ITEM_IMAGE) {
        content = json_object_get(it->json, "text");
        refs[(*n_refs)++] = json_object_get(it->json, "image");
        return reap_strbuf_add(b, "<|im_start|>user\n", 17) ||
               reap_strbuf_add(b, vision_placeholder, sizeof vision_placeholder - 1) ||
               reap_strbuf_add(b, json_string_value(content),
                               json_string_length(content)) ||
               reap_strbuf_add(b, "<|im_end|>\n", 11) ? -1 : 0;
    }
    json_array_foreach(json_object_get(it->json, "messages"), i, m) {
        role = json_object_get(m, "role");
        content = json_object_get(m, "content");
        if (reap_strbuf_add(b, "<|im_start|>", 12) ||
            reap_strbuf_add(b, json_string_value(role), json_string_length(role)) ||
            reap_strbuf_add(b, "\n", 1) ||
            render_content(content, b, refs, n_refs) ||
            reap_strbuf_add(b, "<|im_end|>\n", 11))
            return -1;
    }
    return 0;
}

/* Number of image parts in a checked item. */
static int item_count_images(const calib_item *it)
{
    json_t *m, *part;
    size_t i, k;
    int n = 0, is_image;

    if (it->kind == ITEM_IMAGE)
        return 1;
    if (it->kind != ITEM_MESSAGES)
        return 0;
    json_array_foreach(json_object_get(it->json, "messages"), i, m) {
        json_t *content = json_object_get(m, "content");
        if (json_is_array(content))
            json_array_foreach(content, k, part)
                if (part_image_ref(part, &is_image), is_image)
                    n++;
    }
    return n;
}

/* Widen each <|image_pad|> of ids[0..*n) to its image's n_tokens copies (images
 * r->images[first..first + n_img), in order) and record their spans for sample `sample`.
 * Replaces *ids. */
static int widen_images(calib_reader *r, const calib_item *it, int64_t sample,
                        int32_t first, int n_img, int32_t **ids, size_t *n)
{
    int32_t pad = reap_tokenizer_added_id(r->tok, "<|image_pad|>"), *w;
    size_t i, o = 0, total = *n, found = 0;
    int k;

    for (i = 0; i < *n; i++)
        found += (*ids)[i] == pad;
    if (found != (size_t)n_img)
        return item_err(r, it->line, it->index, REAP_E_INVALID, "the text holds %zu "
                        "<|image_pad|> tokens for %d image(s): <|image_pad|> may not "
                        "appear in the text itself", found, n_img);
    for (k = 0; k < n_img; k++)
        total += (size_t)r->images[first + k].n_tokens - 1;
    if (r->n_spans + n_img > r->spans_cap) {
        int64_t cap = r->spans_cap ? r->spans_cap * 2 : 16;
        while (cap < r->n_spans + n_img)
            cap *= 2;
        reap_sample_span *sp = realloc(r->spans, (size_t)cap * sizeof *sp);
        if (!sp)
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
        r->spans = sp;
        r->spans_cap = cap;
    }
    if (!(w = malloc(total * sizeof *w)))
        return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory (%zu tokens)",
                        total);
    for (i = 0, k = 0; i < *n; i++) {
        if ((*ids)[i] != pad) {
            w[o++] = (*ids)[i];
            continue;
        }
        r->spans[r->n_spans].sample = sample;
        r->spans[r->n_spans].offset = (int64_t)o;
        r->spans[r->n_spans].image = first + k;
        r->n_spans++;
        for (int64_t t = 0; t < r->images[first + k].n_tokens; t++)
            w[o++] = pad;
        k++;
    }
    free(*ids);
    *ids = w;
    *n = total;
    return REAP_OK;
}

/* The token ids of a checked item, which becomes sample `sample`; its images are read
 * and appended to r->images, their spans to r->spans. */
static int item_ids(calib_reader *r, const calib_item *it, int64_t sample,
                    int32_t **ids_out, int64_t *n_out)
{
    const reap_calib_opts *o = r->o;
    json_t *v, *x, **refs = NULL;
    int32_t *ids = NULL, first = r->n_images;
    size_t n = 0, i;
    reap_strbuf b = {0};
    int rc, n_img = 0, n_refs = 0;

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
        n_img = item_count_images(it);
        if (n_img && !(refs = malloc((size_t)n_img * sizeof *refs)))
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
        if (render_chatml(it, &b, refs, &n_refs)) {
            reap_strbuf_free(&b);
            free(refs);
            return item_err(r, it->line, it->index, REAP_E_NOMEM, "out of memory");
        }
        for (int k = 0; k < n_refs; k++) {
            if ((rc = image_load(r, it, k, json_string_value(refs[k])))) {
                reap_strbuf_free(&b);
                free(refs);
                return rc;
            }
        }
        free(refs);
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
    if (n_img && (rc = widen_images(r, it, sample, first, n_img, &ids, &n))) {
        free(ids);
        return rc;
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
    s.index = malloc((size_t)take * sizeof *s.index);
    s.ids = calloc((size_t)take, sizeof *s.ids);
    s.source = strdup(o->path);
    if (!s.len || !s.line || !s.index || !s.ids || !s.source) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory for %lld samples", o->path,
                          (long long)take);
        goto fail;
    }
    for (i = 0; i < take; i++) {
        if ((rc = item_ids(&r, &r.items[i], i, &s.ids[i], &s.len[i])))
            goto fail;
        s.line[i] = r.items[i].line;
        s.index[i] = r.items[i].index;
        s.n++;
        json_decref(r.items[i].json);       /* no longer needed */
        r.items[i].json = NULL;
    }
    for (i = 0; i < r.n; i++)
        json_decref(r.items[i].json);
    free(r.items);
    fclose(fp);
    free(stream);
    s.images = r.images;
    s.n_images = r.n_images;
    s.spans = r.spans;
    s.n_spans = r.n_spans;
    *out = s;
    return REAP_OK;

fail:
    for (i = 0; i < r.n; i++)
        json_decref(r.items[i].json);
    free(r.items);
    reap_calib_images_free(r.images, r.n_images);
    free(r.spans);
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
    free(s->index);
    free(s->source);
    reap_calib_images_free(s->images, s->n_images);
    free(s->spans);
    memset(s, 0, sizeof *s);
}

/* ---- packing -------------------------------------------------------------------- */

/* The tokens sample i needs in one row: up to the end of its last image span (0 without
 * images). *c is the first span of sample i (spans are sorted by sample) and is moved
 * past its spans. */
static int64_t sample_need(const reap_samples *s, int64_t i, int64_t *c)
{
    int64_t need = 0, end;

    for (; *c < s->n_spans && s->spans[*c].sample == i; (*c)++) {
        end = s->spans[*c].offset + s->images[s->spans[*c].image].n_tokens;
        if (end > need)
            need = end;
    }
    return need;
}

/* Write span c of the samples at (row, start) into out[k]. */
static void put_span(const reap_samples *s, int64_t c, int64_t row, int64_t start,
                     reap_image_span *out, int64_t k)
{
    out[k].row = (int32_t)row;
    out[k].start = (int32_t)(start + s->spans[c].offset);
    out[k].image = s->spans[c].image;
}

/* Walk the samples as packing places them; returns the number of rows. With `tokens`
 * and `mask` (zeroed, [rows * seq_len]) also writes the valid tokens and counts them
 * into *n_valid, and the image spans into `spans` ([s->n_spans]). Position `pos` is the
 * next free slot of the current row; pos == 0 means the next sample opens a new row.
 * A sample with images whose spans do not fit in the rest of the row opens a new row
 * (reap_rows_build has checked that they fit in an empty one). */
static int64_t pack_walk(const reap_samples *s, int seq_len, int32_t *tokens,
                         uint8_t *mask, int64_t *n_valid, reap_image_span *spans)
{
    int64_t rows = 0, valid = 0, i, j, take, c = 0, c0, need;
    int64_t pos = 0;
    size_t base;

    for (i = 0; i < s->n; i++) {
        c0 = c;
        need = sample_need(s, i, &c);
        if (pos > 0 && need > seq_len - pos)
            pos = 0;                            /* an image would be cut: new row */
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
            for (j = c0; j < c; j++)
                put_span(s, j, rows - 1, pos, spans, j);
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

/* Check the samples' image spans: in range, sorted, inside their sample, and each
 * sample's spans within seq_len of its start (else the error that names the item). */
static int check_spans(const reap_samples *s, int seq_len)
{
    const char *src = s->source ? s->source : "calibration samples";
    int64_t c, i, need, c0;

    if (s->n_images < 0 || s->n_spans < 0 || ((s->n_images > 0 || s->n_spans > 0) &&
                                              (!s->images || !s->spans)))
        return reap_err_set(REAP_E_INVALID, "%s: image spans without images", src);
    for (c = 0; c < s->n_spans; c++) {
        const reap_sample_span *sp = &s->spans[c];
        if (sp->sample < 0 || sp->sample >= s->n || sp->image < 0 ||
            sp->image >= s->n_images || sp->offset < 0 ||
            s->images[sp->image].n_tokens < 1 ||
            sp->offset + s->images[sp->image].n_tokens > s->len[sp->sample] ||
            (c > 0 && (sp->sample < sp[-1].sample ||
                       (sp->sample == sp[-1].sample && sp->offset < sp[-1].offset +
                        s->images[sp[-1].image].n_tokens))))
            return reap_err_set(REAP_E_INVALID, "%s: image span %lld does not lie inside "
                                "its sample in order", src, (long long)c);
    }
    for (i = 0, c = 0; i < s->n; i++) {
        c0 = c;
        need = sample_need(s, i, &c);
        if (need <= seq_len)
            continue;
        for (; c0 < c; c0++) {                  /* the first image that does not fit */
            const reap_sample_span *sp = &s->spans[c0];
            const reap_calib_image *im = &s->images[sp->image];
            if (sp->offset + im->n_tokens <= seq_len)
                continue;
            char item[48] = "";
            if (s->index && s->index[i] >= 0)
                snprintf(item, sizeof item, "item %lld: ", (long long)s->index[i]);
            return reap_err_set(REAP_E_INVALID, "%s:%lld: %simage %d (%s): its %lld image "
                                "tokens end at token %lld of the sample, past a row of %d "
                                "(--seq-len); an image span is never cut: lower "
                                "--max-pixels or raise --seq-len", src,
                                (long long)s->line[i], item, im->item,
                                im->path ? im->path : "?", (long long)im->n_tokens,
                                (long long)(sp->offset + im->n_tokens), seq_len);
        }
    }
    return REAP_OK;
}

/* A copy of n images (paths duplicated) into *out. */
static int images_copy(const reap_calib_image *in, int32_t n, reap_calib_image **out)
{
    reap_calib_image *im;

    *out = NULL;
    if (n == 0)
        return REAP_OK;
    if (!(im = calloc((size_t)n, sizeof *im)))
        return reap_err_set(REAP_E_NOMEM, "out of memory for %d images", n);
    for (int32_t i = 0; i < n; i++) {
        im[i] = in[i];
        im[i].path = NULL;
        if (in[i].path && !(im[i].path = strdup(in[i].path))) {
            reap_calib_images_free(im, n);
            return reap_err_set(REAP_E_NOMEM, "out of memory for %d images", n);
        }
    }
    *out = im;
    return REAP_OK;
}

int reap_rows_build(const reap_samples *s, int seq_len, int pack, reap_rows *out)
{
    reap_rows r;
    int64_t rows, i, j, take, c;
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
    if ((rc = check_spans(s, seq_len)))
        goto fail;

    rows = pack ? pack_walk(s, seq_len, NULL, NULL, NULL, NULL) : s->n;
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
    if (s->n_spans > 0) {
        if ((rc = images_copy(s->images, s->n_images, &r.images)))
            goto fail;
        r.n_images = s->n_images;
        if (!(r.spans = malloc((size_t)s->n_spans * sizeof *r.spans))) {
            rc = reap_err_set(REAP_E_NOMEM, "out of memory for %lld image spans",
                              (long long)s->n_spans);
            goto fail;
        }
        r.n_spans = s->n_spans;
    }

    if (pack) {
        pack_walk(s, seq_len, r.tokens, r.mask, &r.n_valid, r.spans);
    } else {
        for (i = 0, c = 0; i < s->n; i++) {
            take = s->len[i] < seq_len ? s->len[i] : seq_len;
            base = (size_t)i * (size_t)seq_len;
            for (j = 0; j < take; j++) {
                r.tokens[base + (size_t)j] = s->ids[i][j];
                r.mask[base + (size_t)j] = 1;
            }
            for (; c < s->n_spans && s->spans[c].sample == i; c++)
                put_span(s, c, i, 0, r.spans, c);
            r.n_valid += take;
        }
    }
    *out = r;
    return REAP_OK;

fail:
    reap_rows_free(&r);
    return rc;
}

int reap_rows_span_check(const reap_rows *rows, int64_t k)
{
    const reap_image_span *sp = &rows->spans[k];
    if (sp->image < 0 || sp->image >= rows->n_images || sp->row < 0 ||
        sp->row >= rows->n_rows || sp->start < 0 ||
        (int64_t)sp->start + rows->images[sp->image].n_tokens > rows->seq_len)
        return reap_err_set(REAP_E_INVALID, "image span %lld (row %d, start %d, image %d) "
                            "outside the rows (%d rows of %d slots, %d images)", (long long)k,
                            sp->row, sp->start, sp->image, rows->n_rows, rows->seq_len,
                            rows->n_images);
    return REAP_OK;
}

int reap_rows_image_slots(const reap_rows *rows, uint8_t *slot)
{
    memset(slot, 0, (size_t)rows->n_rows * (size_t)rows->seq_len);
    for (int64_t i = 0; i < rows->n_spans; i++) {
        const reap_image_span *sp = &rows->spans[i];
        if (reap_rows_span_check(rows, i))
            return REAP_E_INVALID;
        memset(slot + (int64_t)sp->row * rows->seq_len + sp->start, 1,
               (size_t)rows->images[sp->image].n_tokens);
    }
    return REAP_OK;
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

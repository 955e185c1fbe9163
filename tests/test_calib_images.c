/* test_calib_images.c - unit tests for image items in calibration files (model/calib.c):
 * reading Qwen's content parts and the short {"image", "text"} form, image references
 * (relative, absolute, file://, refused URLs, roots), rendering with the vision tokens,
 * and packing that never cuts an image span.
 *
 * Usage: test_calib_images <scratch-dir>. Images here are not real pictures: the test's
 * image probe reads a file "grid T H W" as a T x H x W patch grid (the real probe, in the
 * scorer, decodes the image and applies smart_resize), so each case's token count is
 * written in the file it names. With spatial_merge 2 an image of grid 1 x 4 x 4 has 4
 * tokens, one of 1 x 2 x 4 has 2. Token ids come from the Qwen3 tokenizer of
 * tests/fixtures/qwen3-tokenizer (read off its vocabulary, as in test_calib.c):
 *   <|im_start|> 151644, <|im_end|> 151645, "user" 872, "assistant" 77091, "\n" 198,
 *   "hi" 6023, "Hello" 9707, "Ġworld" 1879, <|vision_start|> 151652,
 *   <|vision_end|> 151653, <|image_pad|> 151655.
 * Packing cases are written out by hand from the rules in calib.h ("_" is token 0,
 * mask 0; P an image slot).
 */
#include "calib.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>

#define VS 151652
#define VE 151653
#define P 151655
#define P2 P, P
#define P4 P, P, P, P
#define USER 151644, 872, 198
#define END 151645, 198
#define ASSISTANT_HI 151644, 77091, 198, 6023, 151645, 198

static char fixtures[1024];
static reap_tokenizer *qwen;
static int probe_calls;

/* The test probe: the file holds "grid T H W". */
static int test_probe(void *ud, const char *path, const uint8_t *data, size_t n,
                      reap_calib_grid *out)
{
    char buf[64];

    (void)ud;
    probe_calls++;
    snprintf(buf, sizeof buf, "%.*s", (int)(n < 63 ? n : 63), (const char *)data);
    if (sscanf(buf, "grid %d %d %d", &out->grid_t, &out->grid_h, &out->grid_w) != 3)
        return reap_err_set(REAP_E_FORMAT, "%s: not an image", path);
    return REAP_OK;
}

static reap_calib_opts vl_opts(const char *path)
{
    reap_calib_opts o;

    memset(&o, 0, sizeof o);
    o.path = path;
    o.tokenizer = qwen;
    o.has_vision = 1;
    o.spatial_merge = 2;
    o.probe_image = test_probe;
    return o;
}

static void expect_ids(const reap_samples *s, int64_t i, const int32_t *want, int64_t n)
{
    CHECK_MSG(i < s->n, "sample %lld missing", (long long)i);
    if (i >= s->n)
        return;
    CHECK_MSG(s->len[i] == n, "sample %lld: %lld tokens, want %lld", (long long)i,
              (long long)s->len[i], (long long)n);
    for (int64_t k = 0; k < n && k < s->len[i]; k++)
        CHECK_MSG(s->ids[i][k] == want[k], "sample %lld token %lld: %d, want %d",
                  (long long)i, (long long)k, s->ids[i][k], want[k]);
}

#define EXPECT_IDS(s, i, ...)                                                        \
    do {                                                                             \
        static const int32_t w_[] = { __VA_ARGS__ };                                 \
        expect_ids((s), (i), w_, (int64_t)(sizeof w_ / sizeof w_[0]));               \
    } while (0)

static void expect_image(const reap_samples *s, int32_t i, const char *path, int64_t line,
                         int item, int gh, int gw, int64_t n_tokens, const char *content)
{
    uint8_t d[32];

    CHECK_MSG(i < s->n_images, "image %d missing", i);
    if (i >= s->n_images)
        return;
    const reap_calib_image *im = &s->images[i];
    CHECK_MSG(im->path && !strcmp(im->path, path), "image %d path %s, want %s", i,
              im->path ? im->path : "(null)", path);
    CHECK_MSG(im->line == line && im->item == item, "image %d at line %lld item %d, want "
              "%lld item %d", i, (long long)im->line, im->item, (long long)line, item);
    CHECK_MSG(im->grid_t == 1 && im->grid_h == gh && im->grid_w == gw &&
              im->n_tokens == n_tokens, "image %d: grid %d x %d x %d, %lld tokens", i,
              im->grid_t, im->grid_h, im->grid_w, (long long)im->n_tokens);
    crypto_generichash(d, 32, (const uint8_t *)content, strlen(content), NULL, 0);
    CHECK_MSG(!memcmp(d, im->digest, 32), "image %d: digest is not BLAKE2b-256 of its "
              "bytes", i);
}

static void expect_span(const reap_samples *s, int64_t k, int64_t sample, int64_t offset,
                        int32_t image)
{
    CHECK_MSG(k < s->n_spans, "span %lld missing", (long long)k);
    if (k >= s->n_spans)
        return;
    CHECK_MSG(s->spans[k].sample == sample && s->spans[k].offset == offset &&
              s->spans[k].image == image, "span %lld: sample %lld offset %lld image %d, "
              "want %lld %lld %d", (long long)k, (long long)s->spans[k].sample,
              (long long)s->spans[k].offset, s->spans[k].image, (long long)sample,
              (long long)offset, image);
}

static char img_a[4096], img_bc[4096];

static void make_images(void)
{
    char d[4096];

    path_join(d, sizeof d, scratch, "imgs");
    CHECK(make_dirs(d) == 0);
    make_dirs(sp("data"));
    path_join(img_a, sizeof img_a, d, "a.img");
    path_join(img_bc, sizeof img_bc, d, "b c.img");
    write_text(img_a, "grid 1 4 4\n");
    write_text(img_bc, "grid 1 2 4\n");
}

/* Both formats, relative / absolute / file:// references, image_url and type-less
 * parts, text and token items beside them. */
static void test_read_formats(void)
{
    char text[16384], uri[4200], path[4096];
    const char *q;
    char *w;
    reap_samples s;

    /* file:// URI of "b c.img": the space percent-encoded. */
    w = uri + snprintf(uri, sizeof uri, "file://");
    for (q = img_bc; *q; q++)
        w += *q == ' ' ? sprintf(w, "%%20") : sprintf(w, "%c", *q);
    snprintf(text, sizeof text,
             "{\"image\": \"../imgs/a.img\", \"text\": \"hi\"}\n"
             "{\"input_ids\": [1, 2, 3]}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
             "\"text\": \"Hello world\"}, {\"type\": \"image\", \"image\": \"%s\"}, "
             "{\"text\": \"hi\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"%s\"}}]}, "
             "{\"role\": \"assistant\", \"content\": \"hi\"}]}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": [{\"image\": "
             "\"../imgs/a.img\"}]}, {\"role\": \"assistant\", \"content\": [{\"type\": "
             "\"text\", \"text\": \"hi\"}]}]}\n"
             "{\"text\": \"hi\"}\n",
             img_a, uri);
    write_text(sp("data/forms.jsonl"), text);
    reap_calib_opts o = vl_opts(sp("data/forms.jsonl"));
    probe_calls = 0;
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 5 && s.n_images == 4 && s.n_spans == 4 && probe_calls == 4);
    /* Short form: a user turn, the image, then the text. */
    EXPECT_IDS(&s, 0, USER, VS, P4, VE, 6023, END);
    EXPECT_IDS(&s, 1, 1, 2, 3);
    /* Parts in order: text, image (4), text, image (2); then the assistant turn. */
    EXPECT_IDS(&s, 2, USER, 9707, 1879, VS, P4, VE, 6023, VS, P2, VE, END, ASSISTANT_HI);
    /* An image part without "type"; an assistant turn given as a list of text parts. */
    EXPECT_IDS(&s, 3, USER, VS, P4, VE, END, ASSISTANT_HI);
    EXPECT_IDS(&s, 4, 6023);
    path_join(path, sizeof path, scratch, "data/../imgs/a.img");
    expect_image(&s, 0, path, 1, 0, 4, 4, 4, "grid 1 4 4\n");
    expect_image(&s, 1, img_a, 3, 0, 4, 4, 4, "grid 1 4 4\n");
    expect_image(&s, 2, img_bc, 3, 1, 2, 4, 2, "grid 1 2 4\n");
    expect_image(&s, 3, path, 4, 0, 4, 4, 4, "grid 1 4 4\n");
    expect_span(&s, 0, 0, 4, 0);
    expect_span(&s, 1, 2, 6, 1);
    expect_span(&s, 2, 2, 13, 2);
    expect_span(&s, 3, 3, 4, 3);
    CHECK(s.source && !strcmp(s.source, o.path));
    CHECK(s.index && s.index[0] == -1 && s.line[3] == 4);
    reap_samples_free(&s);

    /* Only selected items read their images: max_samples 1 reads one. */
    o.max_samples = 1;
    probe_calls = 0;
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 1 && s.n_images == 1 && probe_calls == 1);
    reap_samples_free(&s);

    /* Images confined to the roots: inside is fine. */
    char root[PATH_MAX];
    const char *dirs[1] = {root};
    reap_roots roots = {dirs, 1};
    CHECK(realpath(sp("data"), root) != NULL);
    write_text(sp("data/in.img"), "grid 1 2 2");
    write_text(sp("data/in.jsonl"), "{\"image\": \"in.img\", \"text\": \"hi\"}\n");
    o = vl_opts(sp("data/in.jsonl"));
    o.roots = &roots;
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    EXPECT_IDS(&s, 0, USER, VS, P, VE, 6023, END);
    reap_samples_free(&s);
}

static void expect_error(const char *name, const char *text, reap_calib_opts o, int want,
                         const char *needle)
{
    reap_samples s;
    char rel[256];

    snprintf(rel, sizeof rel, "data/%s", name);
    write_text(sp(rel), text);
    o.path = sp(rel);
    reap_err_clear();
    CHECK_RC(reap_calib_load(&o, &s), want);
    CHECK_ERRMSG(needle);
    CHECK(s.n == 0 && s.images == NULL && s.spans == NULL);
}

static void test_read_errors(void)
{
    reap_calib_opts o = vl_opts(NULL);
    char text[8192], root[PATH_MAX];
    const char *dirs[1] = {root};
    reap_roots roots = {dirs, 1};

    expect_error("e_missing.jsonl", "{\"input_ids\": [1]}\n"
                 "{\"image\": \"nope.img\", \"text\": \"hi\"}\n", o, REAP_E_NOTFOUND,
                 "e_missing.jsonl:2: image 0: ");
    CHECK_ERRMSG("nope.img");
    /* A path outside the roots, through "..". */
    CHECK(realpath(sp("data"), root) != NULL);
    o.roots = &roots;
    expect_error("e_roots.jsonl", "{\"image\": \"../imgs/a.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_DENIED, "e_roots.jsonl:1: image 0: ");
    o.roots = NULL;
    expect_error("e_http.jsonl", "{\"image\": \"http://example.com/a.jpg\", \"text\": "
                 "\"hi\"}\n", o, REAP_E_UNSUPPORTED, "e_http.jsonl:1: \"image\": image "
                 "\"http://example.com/a.jpg\": http URLs are not fetched; download the "
                 "image");
    expect_error("e_https.json", "[{\"input_ids\": [1]},\n{\"messages\": [{\"role\": "
                 "\"user\", \"content\": [{\"type\": \"image\", \"image\": "
                 "\"HTTPS://example.com/a.jpg\"}]}]}]", o, REAP_E_UNSUPPORTED,
                 "e_https.json:2: item 1: messages[0].content[0]: image "
                 "\"HTTPS://example.com/a.jpg\": HTTPS URLs are not fetched");
    expect_error("e_data.jsonl", "{\"image\": \"data:image/png;base64,AAAA\", \"text\": "
                 "\"hi\"}\n", o, REAP_E_UNSUPPORTED, "data URLs are not fetched");
    expect_error("e_host.jsonl", "{\"image\": \"file://server/a.img\", \"text\": \"hi\"}\n",
                 o, REAP_E_INVALID, "e_host.jsonl:1: image 0: \"file://server/a.img\": a "
                 "file:// URI must name an absolute path");
    expect_error("e_pct.jsonl", "{\"image\": \"file:///a%2.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_INVALID, "bad percent-encoding");
    expect_error("e_pct0.jsonl", "{\"image\": \"file:///a%00.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_INVALID, "bad percent-encoding");
    /* A model without a vision tower: file, line and item named. */
    o.has_vision = 0;
    expect_error("e_novis.json", "[{\"text\": \"hi\"},\n {\"image\": \"a.img\", \"text\": "
                 "\"hi\"}]", o, REAP_E_UNSUPPORTED, "e_novis.json:2: item 1: 1 image(s), "
                 "but the model has no vision tower");
    o.has_vision = 1;
    o.probe_image = NULL;
    expect_error("e_noprobe.jsonl", "{\"image\": \"a.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_UNSUPPORTED, "e_noprobe.jsonl:1: 1 image(s), but this program reads "
                 "no images");
    o.probe_image = test_probe;
    o.spatial_merge = 0;
    expect_error("e_merge.jsonl", "{\"image\": \"a.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_INVALID, "spatial_merge_size");
    o.spatial_merge = 2;
    expect_error("e_role.jsonl", "{\"messages\": [{\"role\": \"assistant\", \"content\": "
                 "[{\"type\": \"image\", \"image\": \"a.img\"}]}]}\n", o, REAP_E_INVALID,
                 "e_role.jsonl:1: messages[0].content[0]: an image in a \"assistant\" turn");
    expect_error("e_video.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": "
                 "[{\"type\": \"video\", \"video\": \"a.mp4\"}]}]}\n", o, REAP_E_UNSUPPORTED,
                 "messages[0].content[0]: video parts are not supported");
    expect_error("e_noref.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": "
                 "[{\"type\": \"image\"}]}]}\n", o, REAP_E_FORMAT, "an image part without");
    expect_error("e_notext.jsonl", "{\"image\": \"a.img\"}\n", o, REAP_E_FORMAT,
                 "e_notext.jsonl:1: an \"image\" item needs a string \"text\"");
    expect_error("e_refnum.jsonl", "{\"image\": 5, \"text\": \"hi\"}\n", o, REAP_E_FORMAT,
                 "the image reference is not a string");
    /* <|image_pad|> in the text itself would be taken for an image slot. */
    snprintf(text, sizeof text, "{\"image\": \"%s\", \"text\": \"<|image_pad|>\"}\n", img_a);
    expect_error("e_pad.jsonl", text, o, REAP_E_INVALID, "e_pad.jsonl:1: the text holds 2 "
                 "<|image_pad|> tokens for 1 image(s)");
    /* The probe's error, located. */
    write_text(sp("data/bad.img"), "not a picture");
    expect_error("e_probe.jsonl", "{\"image\": \"bad.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_FORMAT, "e_probe.jsonl:1: image 0: ");
    CHECK_ERRMSG("bad.img: not an image");
    write_text(sp("data/odd.img"), "grid 1 3 4");
    expect_error("e_grid.jsonl", "{\"image\": \"odd.img\", \"text\": \"hi\"}\n", o,
                 REAP_E_INVALID, "e_grid.jsonl:1: image 0 (");
    CHECK_ERRMSG("patch grid 1 x 3 x 4 that is not whole 2 x 2 merge blocks");
}

/* A tokenizer without the vision tokens: the Qwen3 one with <|image_pad|> renamed. */
static void test_tokenizer_without_vision(void)
{
    char path[4096], dir[4096];
    size_t n;
    char *t, *at;
    reap_tokenizer *tok = NULL;

    snprintf(path, sizeof path, "%s/qwen3-tokenizer/tokenizer.json", fixtures);
    t = slurp(path, &n);
    CHECK(t != NULL);
    if (!t)
        return;
    at = strstr(t, "\"<|image_pad|>\"");
    CHECK(at != NULL);
    if (at)
        memcpy(at + 2, "IMAGE", 5);                     /* "<|IMAGE_pad|>" */
    path_join(dir, sizeof dir, scratch, "tok-novision");
    make_dirs(dir);
    path_join(path, sizeof path, dir, "tokenizer.json");
    write_bytes(path, t, n);
    free(t);
    CHECK_RC(reap_tokenizer_load(dir, &tok), REAP_OK);
    if (!tok)
        return;
    reap_calib_opts o = vl_opts(NULL);
    o.tokenizer = tok;
    expect_error("e_tok.jsonl", "{\"text\": \"hi\"}\n{\"image\": \"a.img\", \"text\": "
                 "\"hi\"}\n", o, REAP_E_UNSUPPORTED, "e_tok.jsonl:2: images are rendered "
                 "with <|image_pad|>, but tokenizer");
    reap_tokenizer_free(tok);
}

/* ---- packing ---- */

#define MAXS 8

/* Hand-built samples with images (caller-owned arrays). */
typedef struct vfix {
    reap_samples s;
    int64_t len[MAXS], line[MAXS], index[MAXS];
    int32_t *ids[MAXS];
    reap_calib_image im[MAXS];
    reap_sample_span sp[MAXS];
} vfix;

static void vfix_init(vfix *f)
{
    memset(f, 0, sizeof *f);
    f->s.ids = f->ids;
    f->s.len = f->len;
    f->s.line = f->line;
    f->s.index = f->index;
    f->s.images = f->im;
    f->s.spans = f->sp;
    f->s.source = "cal.json";
}

static void vfix_add(vfix *f, int32_t *ids, int64_t n)
{
    f->ids[f->s.n] = ids;
    f->len[f->s.n] = n;
    f->line[f->s.n] = f->s.n + 1;
    f->index[f->s.n] = f->s.n;
    f->s.n++;
}

/* An image of n_tokens slots at `offset` of the last sample added. */
static void vfix_image(vfix *f, int64_t offset, int64_t n_tokens, int item, char *path)
{
    int32_t i = f->s.n_images++;

    f->im[i].path = path;
    f->im[i].line = f->s.n;
    f->im[i].item = item;
    f->im[i].grid_t = 1;
    f->im[i].grid_h = 2;
    f->im[i].grid_w = (int)(2 * n_tokens);
    f->im[i].n_tokens = n_tokens;
    f->im[i].digest[0] = (uint8_t)i;
    f->sp[f->s.n_spans].sample = f->s.n - 1;
    f->sp[f->s.n_spans].offset = offset;
    f->sp[f->s.n_spans].image = i;
    f->s.n_spans++;
}

#define VADD(f, ...)                                                                 \
    do {                                                                             \
        static int32_t ids_[] = { __VA_ARGS__ };                                     \
        vfix_add((f), ids_, (int64_t)(sizeof ids_ / sizeof ids_[0]));                \
    } while (0)

static void expect_rows(const char *what, const vfix *f, int seq_len, int pack,
                        int n_rows, const int32_t *tokens, const uint8_t *mask,
                        int64_t n_valid, const reap_image_span *spans, int64_t n_spans)
{
    reap_rows r;

    CHECK_RC(reap_rows_build(&f->s, seq_len, pack, &r), REAP_OK);
    CHECK_MSG(r.n_rows == n_rows && r.seq_len == seq_len && r.n_valid == n_valid,
              "%s: %d rows, %lld valid; want %d, %lld", what, r.n_rows,
              (long long)r.n_valid, n_rows, (long long)n_valid);
    for (int i = 0; r.n_rows == n_rows && i < n_rows * seq_len; i++)
        CHECK_MSG(r.tokens[i] == tokens[i] && r.mask[i] == mask[i], "%s: slot %d (row %d "
                  "col %d): token %d mask %d, want %d %d", what, i, i / seq_len,
                  i % seq_len, r.tokens[i], r.mask[i], tokens[i], mask[i]);
    CHECK_MSG(r.n_spans == n_spans, "%s: %lld spans, want %lld", what,
              (long long)r.n_spans, (long long)n_spans);
    for (int64_t k = 0; k < n_spans && k < r.n_spans; k++)
        CHECK_MSG(r.spans[k].row == spans[k].row && r.spans[k].start == spans[k].start &&
                  r.spans[k].image == spans[k].image, "%s: span %lld at row %d start %d "
                  "image %d, want %d %d %d", what, (long long)k, r.spans[k].row,
                  r.spans[k].start, r.spans[k].image, spans[k].row, spans[k].start,
                  spans[k].image);
    CHECK_MSG(r.n_images == f->s.n_images, "%s: %d images, want %d", what, r.n_images,
              f->s.n_images);
    for (int32_t i = 0; i < r.n_images && i < f->s.n_images; i++) {
        CHECK(r.images[i].path != f->s.images[i].path);      /* a copy */
        CHECK(!strcmp(r.images[i].path, f->s.images[i].path));
        CHECK(r.images[i].n_tokens == f->s.images[i].n_tokens &&
              r.images[i].digest[0] == f->s.images[i].digest[0]);
    }
    reap_rows_free(&r);
}

/* A sample whose image would be cut starts a new row. seq_len 8:
 *   s0 = [1 2 3]            -> row 0 slots 0..2, gap at 3, pos 4
 *   s1 = [5 P P P P 6]      image at 1, 4 tokens: needs 5 > 4 left -> row 1 from 0
 *   row 0: 1 2 3 _ _ _ _ _   row 1: 5 P P P P 6 _ _   span (1, 1, image 0); 9 valid.
 * (Before, s1 was truncated to 5 P P P in row 0 and its image cut.) */
static void test_pack_new_row(void)
{
    vfix f;
    vfix_init(&f);
    VADD(&f, 1, 2, 3);
    VADD(&f, 5, 9, 9, 9, 9, 6);
    vfix_image(&f, 1, 4, 0, "a.img");
    static const int32_t t[] = {1, 2, 3, 0, 0, 0, 0, 0, 5, 9, 9, 9, 9, 6, 0, 0};
    static const uint8_t m[] = {1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0};
    static const reap_image_span sp[] = {{1, 1, 0}};
    expect_rows("new row", &f, 8, 1, 2, t, m, 9, sp, 1);
}

/* Image and text samples packed together; text after the last image is truncated; two
 * images in one sample. seq_len 10:
 *   s0 = [1 2]                   row 0 slots 0-1, gap 2, pos 3
 *   s1 = [5 P P 6 7 8 4 4 4]     image at 1 (2 tokens): needs 3 <= 7 left: slots 3..9
 *                                take 7 (5 P P 6 7 8 4), rest dropped; row full
 *   s2 = [3 3]                   row 1 slots 0-1, gap 2, pos 3
 *   s3 = [5 P 6 P P 6]           images at 1 (1 token) and 3 (2): needs 5 <= 7: 3..8
 *   row 0: 1 2 _ 5 P P 6 7 8 4   row 1: 3 3 _ 5 P 6 P P 6 _
 *   spans (0, 4, 0), (1, 4, 1), (1, 6, 2); valid 2 + 7 + 2 + 6 = 17. */
static void test_pack_mixed(void)
{
    vfix f;
    vfix_init(&f);
    VADD(&f, 1, 2);
    VADD(&f, 5, 9, 9, 6, 7, 8, 4, 4, 4);
    vfix_image(&f, 1, 2, 0, "a.img");
    VADD(&f, 3, 3);
    VADD(&f, 5, 9, 6, 9, 9, 6);
    vfix_image(&f, 1, 1, 0, "b.img");
    vfix_image(&f, 3, 2, 1, "c.img");
    static const int32_t t[] = {1, 2, 0, 5, 9, 9, 6, 7, 8, 4, 3, 3, 0, 5, 9, 6, 9, 9, 6, 0};
    static const uint8_t m[] = {1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0};
    static const reap_image_span sp[] = {{0, 4, 0}, {1, 4, 1}, {1, 6, 2}};
    expect_rows("mixed", &f, 10, 1, 2, t, m, 17, sp, 3);
}

/* No packing: a sample is one row; spans start at the row's start + offset. seq_len 6:
 *   s0 = [1 2 3 4 5 6 7]   row 0: 1 2 3 4 5 6 (truncated)
 *   s1 = [5 P P P 6 7 8]   image at 1 (3 tokens), needs 4 <= 6: row 1: 5 P P P 6 7
 *   span (1, 1, 0); valid 12. */
static void test_no_pack(void)
{
    vfix f;
    vfix_init(&f);
    VADD(&f, 1, 2, 3, 4, 5, 6, 7);
    VADD(&f, 5, 9, 9, 9, 6, 7, 8);
    vfix_image(&f, 1, 3, 0, "a.img");
    static const int32_t t[] = {1, 2, 3, 4, 5, 6, 5, 9, 9, 9, 6, 7};
    static const uint8_t m[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const reap_image_span sp[] = {{1, 1, 0}};
    expect_rows("no pack", &f, 6, 0, 2, t, m, 12, sp, 1);
}

/* An image that cannot fit even in an empty row: both modes fail, naming the file, line,
 * item, the image and its token count, and suggesting --max-pixels or --seq-len. */
static void test_span_too_big(void)
{
    vfix f;
    reap_rows r;
    vfix_init(&f);
    VADD(&f, 1, 2);
    VADD(&f, 1, 2);
    VADD(&f, 5, 9, 6, 9, 9, 9, 9, 9, 9, 9, 6);
    vfix_image(&f, 1, 1, 0, "imgs/small.png");
    vfix_image(&f, 3, 7, 1, "imgs/big.png");
    for (int pack = 0; pack < 2; pack++) {
        reap_err_clear();
        CHECK_RC(reap_rows_build(&f.s, 8, pack, &r), REAP_E_INVALID);
        CHECK_ERRMSG("cal.json:3: item 2: image 1 (imgs/big.png): its 7 image tokens end "
                     "at token 10 of the sample, past a row of 8 (--seq-len); an image "
                     "span is never cut: lower --max-pixels or raise --seq-len");
        CHECK(r.n_rows == 0 && r.tokens == NULL && r.spans == NULL);
    }
    /* Exactly a row: fits (the closing text is truncated). */
    CHECK_RC(reap_rows_build(&f.s, 10, 1, &r), REAP_OK);
    CHECK(r.n_rows == 2 && r.n_spans == 2 && r.spans[1].row == 1 && r.spans[1].start == 3);
    reap_rows_free(&r);
    /* Spans that do not lie inside their sample are refused. */
    f.sp[1].offset = 5;
    CHECK_RC(reap_rows_build(&f.s, 20, 1, &r), REAP_E_INVALID);
    CHECK_ERRMSG("image span 1 does not lie inside its sample");
}

/* Loaded and packed end to end: a JSON array file with an image too big for the row. */
static void test_load_then_pack(void)
{
    reap_samples s;
    reap_rows r;

    write_text(sp("data/pack.json"), "[{\"input_ids\": [1, 2]},\n"
               "{\"image\": \"../imgs/a.img\", \"text\": \"hi\"}]");
    reap_calib_opts o = vl_opts(sp("data/pack.json"));
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    /* Sample 1: USER VS P4 VE hi END = 13 tokens, image at 4..7, needs 8. */
    CHECK_RC(reap_rows_build(&s, 7, 1, &r), REAP_E_INVALID);
    CHECK_ERRMSG("pack.json:2: item 1: image 0 (");
    CHECK_ERRMSG("its 4 image tokens end at token 8 of the sample, past a row of 7");
    /* seq_len 8: s0 takes slots 0-1 (gap 2); s1 needs 8 > 5 left: row 1, truncated. */
    CHECK_RC(reap_rows_build(&s, 8, 1, &r), REAP_OK);
    CHECK(r.n_rows == 2 && r.n_valid == 10 && r.n_spans == 1 && r.spans[0].row == 1 &&
          r.spans[0].start == 4 && r.n_images == 1 && r.images[0].n_tokens == 4);
    CHECK(r.tokens[8 + 3] == VS && r.tokens[8 + 4] == P && r.tokens[8 + 7] == P);
    reap_rows_free(&r);
    reap_samples_free(&s);
}

int main(int argc, char **argv)
{
    char path[2048];

    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    if (make_dirs(scratch) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", scratch, strerror(errno));
        return 2;
    }
    CHECK(sodium_init() >= 0);
    test_pack_new_row();
    test_pack_mixed();
    test_no_pack();
    test_span_too_big();

    make_images();
    fixtures_dir(fixtures, sizeof fixtures);
    snprintf(path, sizeof path, "%s/qwen3-tokenizer", fixtures);
    CHECK_RC(reap_tokenizer_load(path, &qwen), REAP_OK);
    if (qwen) {
        test_read_formats();
        test_read_errors();
        test_load_then_pack();
        test_tokenizer_without_vision();
        reap_tokenizer_free(qwen);
    }
    TEST_MAIN_END();
}

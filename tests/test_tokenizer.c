/* test_tokenizer.c - unit tests for the byte-level BPE tokenizer (model/tokenizer.h).
 *
 * Usage: test_tokenizer <scratch-dir>.
 *
 * Reference ids (every case must match exactly):
 *   fixtures/qwen3-tokenizer/encode_cases.jsonl  300 texts, ids from an independent
 *       implementation (transformers.js), see PROVENANCE.md there;
 *   fixtures/tok-synth/qwen3_edge_cases.jsonl    edge texts (normalisation, specials
 *       inside text, whitespace runs, digits, CJK, emoji, combining marks, ...) encoded
 *       by the Hugging Face tokenizers library;
 *   fixtures/tok-synth/<name>.json + .cases.jsonl  small synthetic tokenizers covering the
 *       GPT-2 ByteLevel regex, every Split behaviour, added-token flags, NFKC and
 *       ignore_merges, with ids from the same library (make_cases.py regenerates them).
 * Plus hand-derived cases, load errors for unsupported components, invalid UTF-8, the
 * digest, concurrent encoding on one handle, the short-word merge loop against the
 * general one, and `reapctl tokenize` (when build/bin/reapctl exists).
 *
 * The fixtures are found next to this source file (or in $REAP_TEST_FIXTURES).
 *
 * One test binary per module: every case runs against the same loaded fixtures, and most
 * of the length is reference cases.
 */
#include "reap_err.h"
#include "tok_impl.h"
#include "tokenizer.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char fixtures[1024];
static char qwen_dir[2048];

static void find_fixtures(void)
{
    fixtures_dir(fixtures, sizeof fixtures);
    snprintf(qwen_dir, sizeof qwen_dir, "%s/qwen3-tokenizer", fixtures);
}

/* Encode and compare with want[0..n). */
static int expect_ids(reap_tokenizer *tok, const char *what, const char *text, size_t len,
                      const int32_t *want, size_t n)
{
    int32_t *ids = NULL;
    size_t got = 0, i;
    int ok;

    CHECK_RC(reap_tokenizer_encode(tok, text, len, &ids, &got), REAP_OK);
    ok = got == n;
    for (i = 0; ok && i < n; i++)
        ok = ids[i] == want[i];
    if (!ok) {
        fprintf(stderr, "%s: ids differ (%zu tokens, want %zu)\n  got: ", what, got, n);
        for (i = 0; i < got && i < 48; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n want:");
        for (i = 0; i < n && i < 48; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

/* Every {"text", "input_ids"} line of `cases` must encode exactly. Returns the number of
 * exact cases; *total gets the number of cases. */
static int run_cases(reap_tokenizer *tok, const char *cases, int *total)
{
    FILE *fp = fopen(cases, "rb");
    char *line = NULL, what[256];
    size_t cap = 0, i, n;
    ssize_t got;
    int exact = 0, lineno = 0;
    int32_t *want;
    json_error_t jerr;
    json_t *root, *text, *ids;

    *total = 0;
    CHECK_MSG(fp != NULL, "cannot open %s", cases);
    if (!fp)
        return 0;
    while ((got = getline(&line, &cap, fp)) > 0) {
        lineno++;
        root = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        text = json_object_get(root, "text");
        ids = json_object_get(root, "input_ids");
        CHECK_MSG(json_is_string(text) && json_is_array(ids), "%s:%d: bad case", cases,
                  lineno);
        if (!json_is_string(text) || !json_is_array(ids)) {
            json_decref(root);
            continue;
        }
        n = json_array_size(ids);
        want = malloc((n + 1) * sizeof *want);
        for (i = 0; want && i < n; i++)
            want[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        snprintf(what, sizeof what, "%s:%d", cases, lineno);
        (*total)++;
        if (want && expect_ids(tok, what, json_string_value(text), json_string_length(text),
                               want, n))
            exact++;
        free(want);
        json_decref(root);
    }
    free(line);
    fclose(fp);
    return exact;
}

/* ---- the Qwen3 tokenizer ---------------------------------------------------------- */

static void test_qwen_fixture(reap_tokenizer *tok)
{
    char path[4096];
    int total, exact;

    snprintf(path, sizeof path, "%s/encode_cases.jsonl", qwen_dir);
    exact = run_cases(tok, path, &total);
    printf("qwen3 fixture: %d of %d cases exact\n", exact, total);
    CHECK(total == 300);
    CHECK(exact == total);

    snprintf(path, sizeof path, "%s/tok-synth/qwen3_edge_cases.jsonl", fixtures);
    exact = run_cases(tok, path, &total);
    printf("qwen3 edge cases: %d of %d cases exact\n", exact, total);
    CHECK(total >= 40);
    CHECK(exact == total);
}

#define EXPECT(tok, text, ...)                                                       \
    do {                                                                             \
        static const int32_t want_[] = { __VA_ARGS__ };                              \
        CHECK(expect_ids((tok), (text), (text), sizeof(text) - 1, want_,             \
                         sizeof want_ / sizeof want_[0]));                           \
    } while (0)

/* Two texts must encode identically. */
static void expect_same(reap_tokenizer *tok, const char *a, const char *b)
{
    int32_t *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;

    CHECK_RC(reap_tokenizer_encode(tok, a, strlen(a), &ia, &na), REAP_OK);
    CHECK_RC(reap_tokenizer_encode(tok, b, strlen(b), &ib, &nb), REAP_OK);
    CHECK_MSG(na == nb && na > 0 && memcmp(ia, ib, na * sizeof *ia) == 0,
              "\"%s\" and \"%s\" encode differently", a, b);
    free(ia);
    free(ib);
}

static void test_qwen_hand(reap_tokenizer *tok)
{
    int32_t *ids = (int32_t *)1;
    size_t n = 7;

    /* Ids read from tokenizer.json's vocabulary by hand:
     * "Hello world" -> pieces "Hello", " world": vocab["Hello"] 9707, vocab["Ġworld"] 1879 */
    EXPECT(tok, "Hello world", 9707, 1879);
    /* The added token splits the text first: "a" 64, <|im_start|> 151644, "b" 65. */
    EXPECT(tok, "a<|im_start|>b", 64, 151644, 65);
    /* 4 spaces before a letter: \s+(?!\S) takes 3 ("ĠĠĠ" 262), the 4th joins the
     * letter (" b" = "Ġb" 293). */
    EXPECT(tok, "a    b", 64, 262, 293);
    /* \p{N} takes one digit at a time: "1" 16, "2" 17, "3" 18. */
    EXPECT(tok, "123", 16, 17, 18);
    /* A whole CJK word that is one vocabulary entry ("ä½łå¥½" 108386), an emoji (its
     * four bytes "ðŁĺĢ" 141334), a lone newline "Ċ" 198 and "ĊĊ" 271. */
    EXPECT(tok, "\xe4\xbd\xa0\xe5\xa5\xbd", 108386);
    EXPECT(tok, "\xf0\x9f\x98\x80", 141334);
    EXPECT(tok, "\n", 198);
    EXPECT(tok, "\n\n", 271);
    /* <|im_start|>user\n: 151644, "user" 872, "Ċ" 198. */
    EXPECT(tok, "<|im_start|>user\n", 151644, 872, 198);

    /* NFC: decomposed and precomposed forms are the same text. */
    expect_same(tok, "cafe\xcc\x81", "caf\xc3\xa9");              /* e + U+0301 = é */
    expect_same(tok, "\xe2\x84\xab", "\xc3\x85");                 /* U+212B = Å */
    expect_same(tok, "\xe1\x84\x80\xe1\x85\xa1", "\xea\xb0\x80"); /* jamo = 가 */

    /* Empty text: no ids. */
    CHECK_RC(reap_tokenizer_encode(tok, "", 0, &ids, &n), REAP_OK);
    CHECK(ids == NULL && n == 0);

    /* Invalid UTF-8: refused with the byte offset. */
    CHECK_RC(reap_tokenizer_encode(tok, "abc\xff", 4, &ids, &n), REAP_E_INVALID);
    CHECK_ERRMSG("byte 3");
    CHECK(ids == NULL && n == 0);
    /* overlong, surrogate, cut short */
    CHECK_RC(reap_tokenizer_encode(tok, "\xc0\x80", 2, &ids, &n), REAP_E_INVALID);
    CHECK_RC(reap_tokenizer_encode(tok, "\xed\xa0\x80", 3, &ids, &n), REAP_E_INVALID);
    CHECK_RC(reap_tokenizer_encode(tok, "\xe4\xbd", 2, &ids, &n), REAP_E_INVALID);
    CHECK_RC(reap_tokenizer_encode(NULL, "a", 1, &ids, &n), REAP_E_INVALID);
}

static void test_qwen_meta(reap_tokenizer *tok)
{
    /* BLAKE2b-256 of the fixture's tokenizer.json, computed independently
     * (Python hashlib.blake2b(data, digest_size=32)). */
    static const char want_hex[] =
        "a42f9011cec7755b32ac9c0c03f93dbadc76c66ae727268d629c918dcfdb568e";
    const uint8_t *d = reap_tokenizer_digest(tok);
    char hex[2 * REAP_TOKENIZER_DIGEST_BYTES + 1];
    int i;

    for (i = 0; i < REAP_TOKENIZER_DIGEST_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    CHECK_MSG(strcmp(hex, want_hex) == 0, "digest %s", hex);
    /* 151643 vocabulary entries (0..151642) and added tokens up to 151668. */
    CHECK(reap_tokenizer_vocab_size(tok) == 151669);
    CHECK(reap_tokenizer_added_id(tok, "<|im_start|>") == 151644);
    CHECK(reap_tokenizer_added_id(tok, "<|im_end|>") == 151645);
    CHECK(reap_tokenizer_added_id(tok, "<think>") == 151667);
    CHECK(reap_tokenizer_added_id(tok, "hello") == -1);
    CHECK(strstr(reap_tokenizer_path(tok), "tokenizer.json") != NULL);
}

/* Several threads encode the fixture on one handle; results must not change. */
typedef struct thread_arg {
    reap_tokenizer *tok;
    int exact, total;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    char path[4096];

    snprintf(path, sizeof path, "%s/encode_cases.jsonl", qwen_dir);
    a->exact = run_cases(a->tok, path, &a->total);
    return NULL;
}

static void test_threads(reap_tokenizer *tok)
{
    pthread_t th[3];
    thread_arg args[3];
    int i, started[3];

    for (i = 0; i < 3; i++) {
        args[i].tok = tok;
        args[i].exact = args[i].total = 0;
        started[i] = pthread_create(&th[i], NULL, thread_main, &args[i]) == 0;
    }
    for (i = 0; i < 3; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        CHECK(started[i] && args[i].total == 300 && args[i].exact == 300);
    }
}

/* The short-word merge loop against the heap loop (the general one) on byte strings cut
 * at random from the fixture texts, lengths 2..80 (both sides of the switch-over). */
static void test_bpe_loops(reap_tokenizer *tok)
{
    const tok_bpe *b = tok_tokenizer_bpe(tok);
    char path[4096], *line = NULL, *all = NULL;
    size_t cap = 0, n_all = 0, i, len, off;
    tok_bpe_scratch scratch = {0};
    tok_ids fast = {0}, ref = {0};
    uint64_t state = 12345;
    FILE *fp;
    ssize_t got;
    int bad = 0;

    snprintf(path, sizeof path, "%s/encode_cases.jsonl", qwen_dir);
    fp = fopen(path, "rb");
    CHECK(fp != NULL);
    if (!fp)
        return;
    while ((got = getline(&line, &cap, fp)) > 0) {   /* raw JSON lines: varied bytes */
        char *p = realloc(all, n_all + (size_t)got);
        if (!p)
            break;
        all = p;
        memcpy(all + n_all, line, (size_t)got);
        n_all += (size_t)got;
    }
    fclose(fp);
    free(line);
    for (i = 0; i < 20000 && n_all > 100; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        len = 2 + (size_t)((state >> 33) % 79);
        off = (size_t)((state >> 13) % (n_all - len));
        fast.n = ref.n = 0;
        CHECK_RC(tok_bpe_word(b, NULL, &scratch, (const uint8_t *)all + off, len, &fast), REAP_OK);
        CHECK_RC(tok_bpe_word_heap(b, &scratch, (const uint8_t *)all + off, len, &ref), REAP_OK);
        if (fast.n != ref.n || memcmp(fast.v, ref.v, fast.n * sizeof *fast.v) != 0)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d of 20000 words merge differently", bad);
    free(fast.v);
    free(ref.v);
    tok_bpe_scratch_free(&scratch);
    free(all);
}

/* ---- synthetic tokenizers ----------------------------------------------------------- */

static void test_synthetic(void)
{
    static const char *names[] = {"gpt2style", "splits", "literal_word", "added_nfkc",
                                  "llama3style"};
    char path[4096], cases[4096];
    reap_tokenizer *tok;
    size_t i;
    int total, exact;

    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/tok-synth/%s.json", fixtures, names[i]);
        snprintf(cases, sizeof cases, "%s/tok-synth/%s.cases.jsonl", fixtures, names[i]);
        CHECK_RC(reap_tokenizer_load(path, &tok), REAP_OK);
        if (!tok)
            continue;
        exact = run_cases(tok, cases, &total);
        printf("%s: %d of %d cases exact\n", names[i], exact, total);
        CHECK(total > 40 && exact == total);
        reap_tokenizer_free(tok);
    }
}

/* ---- load errors -------------------------------------------------------------------- */

/* A minimal tokenizer.json: the 256 byte tokens and no merges, with the given sections
 * (JSON text) spliced in. */
static const char *minimal_json(const char *normalizer, const char *pre, const char *model_type,
                                const char *model_extra, int n_bytes)
{
    static char buf[16384];
    size_t off = 0;
    int b, c, k = 0, first = 1;

    off += (size_t)snprintf(buf + off, sizeof buf - off,
                            "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": %s, "
                            "\"pre_tokenizer\": %s, \"model\": {\"type\": \"%s\"%s, "
                            "\"vocab\": {", normalizer, pre, model_type, model_extra);
    for (b = 0; b < 256; b++) {
        /* The byte-level character of byte b. */
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
            c = b;
        else
            c = 256 + k++;
        if (b >= n_bytes || c == '"' || c == '\\')
            continue;
        if (c < 0x80)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s\"%c\": %d",
                                    first ? "" : ", ", c, b);
        else
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s\"%c%c\": %d",
                                    first ? "" : ", ", 0xC0 | (c >> 6), 0x80 | (c & 0x3F), b);
        first = 0;
    }
    snprintf(buf + off, sizeof buf - off, ", \"\\\"\": 34, \"\\\\\": 92}, \"merges\": []}}");
    return buf;
}

#define BL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"

static void expect_load_error(const char *name, const char *json, int want, const char *needle)
{
    reap_tokenizer *tok = (reap_tokenizer *)1;
    const char *path = write_scratch(name, json);

    reap_err_clear();
    CHECK_RC(reap_tokenizer_load(path, &tok), want);
    CHECK_ERRMSG(needle);
    CHECK(tok == NULL);
}

static void test_load_errors(void)
{
    char path[4096];
    reap_tokenizer *tok;

    /* The minimal tokenizer itself loads and encodes byte by byte. */
    CHECK_RC(reap_tokenizer_load(write_scratch("ok.json",
                                               minimal_json("null", BL, "BPE", "", 256)),
                                 &tok), REAP_OK);
    if (tok) {
        EXPECT(tok, "ab c", 97, 98, 32, 99);
        CHECK(reap_tokenizer_vocab_size(tok) == 256);
        reap_tokenizer_free(tok);
    }

    expect_load_error("unigram.json", minimal_json("null", BL, "Unigram", "", 256),
                      REAP_E_UNSUPPORTED, "model type \"Unigram\"");
    expect_load_error("wordpiece.json", minimal_json("null", BL, "WordPiece", "", 256),
                      REAP_E_UNSUPPORTED, "WordPiece");
    expect_load_error("lower.json",
                      minimal_json("{\"type\": \"Lowercase\"}", BL, "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "normalizer \"Lowercase\"");
    expect_load_error("seqnorm.json",
                      minimal_json("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                                   "\"NFC\"}, {\"type\": \"Precompiled\"}]}", BL, "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "normalizer \"Precompiled\"");
    expect_load_error("metaspace.json",
                      minimal_json("null", "{\"type\": \"Metaspace\"}", "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "pre_tokenizer \"Metaspace\"");
    expect_load_error("noBL.json",
                      minimal_json("null", "{\"type\": \"Split\", \"pattern\": {\"Regex\": "
                                   "\"a\"}, \"behavior\": \"Isolated\", \"invert\": false}",
                                   "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "no ByteLevel pre_tokenizer");
    expect_load_error("nopre.json", minimal_json("null", "null", "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "no ByteLevel");
    expect_load_error("afterBL.json",
                      minimal_json("null", "{\"type\": \"Sequence\", \"pretokenizers\": [" BL
                                   ", {\"type\": \"Digits\"}]}", "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "pre_tokenizer \"Digits\"");
    expect_load_error("afterBL2.json",
                      minimal_json("null", "{\"type\": \"Sequence\", \"pretokenizers\": [" BL
                                   ", {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                                   "\"behavior\": \"Isolated\", \"invert\": false}]}",
                                   "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "after ByteLevel");
    expect_load_error("behavior.json",
                      minimal_json("null", "{\"type\": \"Sequence\", \"pretokenizers\": ["
                                   "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                                   "\"behavior\": \"Sideways\", \"invert\": false}, " BL "]}",
                                   "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "Split behavior \"Sideways\"");
    expect_load_error("badregex.json",
                      minimal_json("null", "{\"type\": \"Sequence\", \"pretokenizers\": ["
                                   "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
                                   "\"behavior\": \"Isolated\", \"invert\": false}, " BL "]}",
                                   "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "PCRE2 cannot compile");
    expect_load_error("nested.json",
                      minimal_json("null", "{\"type\": \"Sequence\", \"pretokenizers\": ["
                                   "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[a[b]]\"}, "
                                   "\"behavior\": \"Isolated\", \"invert\": false}, " BL "]}",
                                   "BPE", "", 256),
                      REAP_E_UNSUPPORTED, "nested character class");
    expect_load_error("dropout.json", minimal_json("null", BL, "BPE", ", \"dropout\": 0.1", 256),
                      REAP_E_UNSUPPORTED, "dropout");
    expect_load_error("prefix.json",
                      minimal_json("null", BL, "BPE", ", \"continuing_subword_prefix\": \"##\"",
                                   256),
                      REAP_E_UNSUPPORTED, "continuing_subword_prefix");
    expect_load_error("bytes.json", minimal_json("null", BL, "BPE", "", 200),
                      REAP_E_UNSUPPORTED, "no token for byte 0xC8");
    expect_load_error("invalid.json", "{\"model\": {\n\"type\": \"BPE\",,}", REAP_E_FORMAT,
                      "invalid.json:2:");
    expect_load_error("nomodel.json", "{\"pre_tokenizer\": " BL "}", REAP_E_FORMAT,
                      "no \"model\"");
    expect_load_error("badmerge.json",
                      "{\"pre_tokenizer\": " BL ", \"model\": {\"type\": \"BPE\", \"vocab\": "
                      "{\"a\": 0}, \"merges\": [\"a zz\"]}}",
                      REAP_E_FORMAT, "merges[0]: \"zz\" is not in the vocabulary");

    snprintf(path, sizeof path, "%s/absent.json", scratch);
    CHECK_RC(reap_tokenizer_load(path, &tok), REAP_E_NOTFOUND);
    CHECK_ERRMSG("absent.json");
    /* A directory without tokenizer.json. */
    CHECK_RC(reap_tokenizer_load(scratch, &tok), REAP_E_NOTFOUND);
    CHECK_ERRMSG("tokenizer.json");
    CHECK_RC(reap_tokenizer_load(NULL, &tok), REAP_E_INVALID);
}

/* ---- the empty vocabulary key --------------------------------------------------------- */

/* minimal_json() with `vocab_head` spliced in as the first vocabulary entries and `merges`
 * as the merges array. */
static const char *splice_json(const char *vocab_head, const char *merges)
{
    static char buf[20000];
    const char *base = minimal_json("null", BL, "BPE", "", 256);
    const char *v = strstr(base, "\"vocab\": {"), *m = strstr(base, "\"merges\": []");

    if (!v || !m)
        return base;
    v += strlen("\"vocab\": {");
    snprintf(buf, sizeof buf, "%.*s%s%.*s\"merges\": %s%s", (int)(v - base), base, vocab_head,
             (int)(m - v), v, merges, m + strlen("\"merges\": []"));
    return buf;
}

/* The empty string is a valid vocabulary key (BPE never produces it). As the first key,
 * or as both parts of the first merge, it used to reach the table's hash with a NULL
 * buffer of length 0 (memcpy from NULL: undefined behaviour, found by the tokenizer
 * fuzzer; the ASan/UBSan build of this test stops there). */
static void test_empty_key(void)
{
    reap_tokenizer *tok = NULL;

    CHECK_RC(reap_tokenizer_load(write_scratch("emptykey.json", splice_json("\"\": 256, ", "[]")),
                                 &tok), REAP_OK);
    if (tok) {
        EXPECT(tok, "ab c", 97, 98, 32, 99);
        CHECK(reap_tokenizer_vocab_size(tok) == 257);
        reap_tokenizer_free(tok);
    }
    tok = NULL;
    CHECK_RC(reap_tokenizer_load(write_scratch("emptymerge.json",
                                               splice_json("\"ab\": 300, \"\": 256, ",
                                                           "[[\"\", \"\"], [\"a\", \"b\"]]")),
                                 &tok), REAP_OK);
    if (tok) {
        EXPECT(tok, "ab c", 300, 32, 99);
        reap_tokenizer_free(tok);
    }
}

/* ---- reapctl tokenize ----------------------------------------------------------------- */

/* Runs build/bin/reapctl (next to this test's build/tests folder) when it was built. */
static void test_reapctl(const char *argv0)
{
    char bin[2048], cmd[16384], in[4096], out[4096], *line = NULL;
    const char *slash = strrchr(argv0, '/');
    size_t cap = 0;
    FILE *fp;
    int rc, n = 0;

    snprintf(bin, sizeof bin, "%.*s/../bin/reapctl", slash ? (int)(slash - argv0) : 1,
             slash ? argv0 : ".");
    if (access(bin, X_OK) != 0) {
        printf("reapctl tokenize: SKIPPED (%s not built)\n", bin);
        return;
    }
    snprintf(in, sizeof in, "%s/tokenize_in.jsonl", scratch);
    snprintf(out, sizeof out, "%s/tokenize_out.jsonl", scratch);
    fp = fopen(in, "wb");
    CHECK(fp != NULL);
    if (!fp)
        return;
    fputs("{\"text\": \"Hello world\"}\n\n{\"text\": \"a<|im_start|>b\", \"id\": 3}\n"
          "{\"text\": \"\"}\n", fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' < '%s' > '%s'", bin, qwen_dir,
             in, out);
    rc = system(cmd);
    CHECK_MSG(rc == 0, "%s: status %d", cmd, rc);
    fp = fopen(out, "rb");
    CHECK(fp != NULL);
    if (!fp)
        return;
    while (getline(&line, &cap, fp) > 0) {
        n++;
        if (n == 1)
            CHECK(strcmp(line, "{\"input_ids\": [9707, 1879]}\n") == 0);
        if (n == 2)
            CHECK(strcmp(line, "{\"input_ids\": [64, 151644, 65]}\n") == 0);
        if (n == 3)
            CHECK(strcmp(line, "{\"input_ids\": []}\n") == 0);
    }
    CHECK(n == 3);
    fclose(fp);
    free(line);

    /* A bad line: exit status 1, nothing else. */
    fp = fopen(in, "wb");
    if (fp) {
        fputs("{\"text\": \"ok\"}\n{\"txt\": 1}\n", fp);
        fclose(fp);
    }
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer '%s' < '%s' > '%s' 2>&1", bin,
             qwen_dir, in, out);
    rc = system(cmd);
    CHECK_MSG(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "bad line: status %d", rc);
}

/* ---- regex rewriting ---------------------------------------------------------------- */

static void expect_translate(const char *in, const char *want)
{
    char *out = NULL;

    CHECK_RC(tok_regex_translate(in, strlen(in), 1, &out), REAP_OK);
    CHECK_MSG(out && strcmp(out, want) == 0, "\"%s\" -> \"%s\", want \"%s\"", in,
              out ? out : "(null)", want);
    free(out);
}

/* The newer-Unicode letters appended to \p{L} (see tok_regex.c): first and last range. */
#define L_NEWER_HEAD "\\x{1C89}-\\x{1C8A}"
#define L_NEWER_TAIL "\\x{31350}-\\x{323AF}"
#define D_NEWER_TAIL "\\x{1E5F1}-\\x{1E5FA}"
#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}" \
           "\\x{205F}\\x{3000}"

/* The rewritten pattern must start with `head`, contain `mid` (if any) and end with
 * `tail`. */
static void expect_translate_parts(const char *in, const char *head, const char *mid,
                                   const char *tail)
{
    char *out = NULL;
    size_t n, nt;

    CHECK_RC(tok_regex_translate(in, strlen(in), 1, &out), REAP_OK);
    n = out ? strlen(out) : 0;
    nt = strlen(tail);
    CHECK_MSG(out && !strncmp(out, head, strlen(head)) && (!mid || strstr(out, mid)) &&
              n >= nt && !strcmp(out + n - nt, tail), "\"%s\" -> \"%s\"", in,
              out ? out : "(null)");
    free(out);
}

static void test_translate(void)
{
    char *out = (char *)1;

    expect_translate("a|b", "a|b");
    expect_translate("(?i:'s|'t)", "(?i:'s|'t)");
    expect_translate("(?m:.)", "(?s:.)");
    expect_translate("\\u00e9", "\\x{00e9}");
    expect_translate("\\h", "[0-9A-Fa-f]");
    expect_translate("\\p{Lu}\\p{Nd}", "\\p{Lu}\\p{Nd}");
    expect_translate("\\s+(?!\\S)", "[" WS "]+(?![^" WS "])");
    expect_translate("[]a]", "[]a]");
    expect_translate("[[:alpha:]x]", "[[:alpha:]x]");
    /* \p{L} and \p{N} gain the Unicode 15-16 letters and numbers, in and out of classes;
     * \P{L} outside a class becomes the negated class. */
    expect_translate_parts("\\p{L}+", "[\\p{L}" L_NEWER_HEAD, NULL, L_NEWER_TAIL "]+");
    expect_translate_parts("\\pN", "[\\p{N}\\x{10D40}-\\x{10D49}", NULL, "\\x{1E5F1}-\\x{1E5FA}]");
    expect_translate_parts("\\P{L}", "[^\\p{L}" L_NEWER_HEAD, NULL, L_NEWER_TAIL "]");
    expect_translate_parts("[^\\s\\p{L}]", "[^" WS "\\p{L}" L_NEWER_HEAD, NULL,
                           L_NEWER_TAIL "]");
    /* \w outside a class has the Latin-1 superscripts and fractions, inside it has not. */
    expect_translate_parts("\\w[\\w]", "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}" L_NEWER_HEAD,
                           D_NEWER_TAIL "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}][\\p{Alphabetic}",
                           D_NEWER_TAIL "]");
    /* \d gains the Unicode 15-16 decimal digits. */
    expect_translate_parts("\\d+", "[\\d\\x{10D40}-\\x{10D49}", NULL, D_NEWER_TAIL "]+");
    /* Without the additions (the fast variant). */
    CHECK_RC(tok_regex_translate("\\p{L}+\\d[\\p{N}]", 15, 0, &out), REAP_OK);
    CHECK_MSG(out && !strcmp(out, "\\p{L}+\\d[\\p{N}]"), "fast: %s", out ? out : "(null)");
    free(out);
    /* Which texts need the exact variant. */
    CHECK(!tok_text_has_newer((const uint8_t *)"abc \xe4\xbd\xa0 \xf0\x9f\x98\x80", 12));
    CHECK(tok_text_has_newer((const uint8_t *)"a\xf0\xb1\x8d\x90", 5));          /* U+31350 */
    CHECK(tok_text_has_newer((const uint8_t *)"\xe0\xa2\x97", 3));                /* U+0897 */
    CHECK(!tok_text_has_newer((const uint8_t *)"\xe0\xa2\x96", 3));               /* U+0896 */
    CHECK_RC(tok_regex_translate("[a&&b]", 6, 1, &out), REAP_E_UNSUPPORTED);
    CHECK(out == NULL);
    CHECK_RC(tok_regex_translate("[\\W]", 4, 1, &out), REAP_E_UNSUPPORTED);
    CHECK_RC(tok_regex_translate("[ab", 3, 1, &out), REAP_E_UNSUPPORTED);
}

int main(int argc, char **argv)
{
    reap_tokenizer *tok = NULL;

    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    if (make_dirs(scratch) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", scratch, strerror(errno));
        return 2;
    }
    find_fixtures();

    CHECK_RC(reap_tokenizer_load(qwen_dir, &tok), REAP_OK);
    if (tok) {
        test_qwen_fixture(tok);
        test_qwen_hand(tok);
        test_qwen_meta(tok);
        test_threads(tok);
        test_bpe_loops(tok);
        reap_tokenizer_free(tok);
    }
    test_synthetic();
    test_load_errors();
    test_empty_key();
    test_translate();
    test_reapctl(argv[0]);
    TEST_MAIN_END();
}

/* test_calib.c - unit tests for model/calib.c (JSONL samples and row packing).
 *
 * Usage: test_calib <scratch-dir>. Packing cases are written out by hand from the rules
 * in calib.h (each with its derivation; "_" is a gap or pad position: token 0, mask 0);
 * reading cases write small .jsonl/.json files into the scratch directory. Text and chat
 * items use the Qwen3 tokenizer of tests/fixtures/qwen3-tokenizer (found next to this
 * source file, or in $REAP_TEST_FIXTURES); their ids were read off its vocabulary by
 * hand (derivations inline) and agree with the Hugging Face tokenizers library.
 *
 * One test binary per module: most of the length is packing and reading cases written
 * out by hand with their derivations.
 */
#include "calib.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

static char fixtures[1024];

/* ---- packing ---- */

#define MAX_SAMPLES 8

/* Samples pointing at caller-owned arrays (not freed with reap_samples_free). */
typedef struct fixture {
    reap_samples s;
    int64_t len[MAX_SAMPLES];
    int32_t *ids[MAX_SAMPLES];
    int64_t line[MAX_SAMPLES];
} fixture;

static void fixture_add(fixture *f, int32_t *ids, int64_t n)
{
    f->ids[f->s.n] = ids;
    f->len[f->s.n] = n;
    f->line[f->s.n] = f->s.n + 1;
    f->s.n++;
    f->s.ids = f->ids;
    f->s.len = f->len;
    f->s.line = f->line;
}

#define ADD(f, ...)                                                                  \
    do {                                                                             \
        static int32_t ids_[] = { __VA_ARGS__ };                                     \
        fixture_add((f), ids_, (int64_t)(sizeof ids_ / sizeof ids_[0]));             \
    } while (0)

/* Build rows and compare with the expected [n_rows * seq_len] tokens and mask. */
static void expect_rows(const char *what, const fixture *f, int seq_len, int pack,
                        int n_rows, const int32_t *tokens, const uint8_t *mask,
                        int64_t n_valid)
{
    reap_rows r;
    int i, n;

    CHECK_RC(reap_rows_build(&f->s, seq_len, pack, &r), REAP_OK);
    CHECK_MSG(r.n_rows == n_rows, "%s: n_rows %d, want %d", what, r.n_rows, n_rows);
    CHECK_MSG(r.seq_len == seq_len, "%s: seq_len %d", what, r.seq_len);
    CHECK_MSG(r.n_valid == n_valid, "%s: n_valid %lld, want %lld", what,
              (long long)r.n_valid, (long long)n_valid);
    if (r.n_rows == n_rows && r.tokens && r.mask) {
        n = n_rows * seq_len;
        for (i = 0; i < n; i++) {
            CHECK_MSG(r.tokens[i] == tokens[i], "%s: row %d pos %d token %d, want %d", what,
                      i / seq_len, i % seq_len, r.tokens[i], tokens[i]);
            CHECK_MSG(r.mask[i] == mask[i], "%s: row %d pos %d mask %d, want %d", what,
                      i / seq_len, i % seq_len, r.mask[i], mask[i]);
        }
    }
    reap_rows_free(&r);
    CHECK(r.tokens == NULL && r.mask == NULL && r.n_rows == 0);
}

static void test_pack_basic(void)
{
    /* seq_len 8, samples [1 2 3] [4 5] [6 7 8 9 10] [11]:
     *   [1 2 3] at row 0 pos 0-2, gap at 3;
     *   [4 5] at pos 4-5, gap at 6;
     *   [6 .. 10]: 1 position left (7): 6 there, 7 8 9 10 dropped; row full, no gap;
     *   [11] opens row 1 at pos 0, gap at 1; pos 2-7 padding.
     * row 0: 1 2 3 _ 4 5 _ 6    row 1: 11 _ _ _ _ _ _ _    valid = 3+2+1+1 = 7 */
    static const int32_t tok[] = { 1, 2, 3, 0, 4, 5, 0, 6,
                                   11, 0, 0, 0, 0, 0, 0, 0 };
    static const uint8_t msk[] = { 1, 1, 1, 0, 1, 1, 0, 1,
                                   1, 0, 0, 0, 0, 0, 0, 0 };
    fixture f;

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2, 3);
    ADD(&f, 4, 5);
    ADD(&f, 6, 7, 8, 9, 10);
    ADD(&f, 11);
    expect_rows("basic", &f, 8, 1, 2, tok, msk, 7);
}

static void test_pack_gap_fills_row(void)
{
    /* seq_len 4, [1 2 3] [4 5]: 1 2 3 at pos 0-2, the gap takes pos 3 and fills the
     * row, so [4 5] opens row 1: 4 5 at pos 0-1, gap at 2, pad at 3.
     * row 0: 1 2 3 _    row 1: 4 5 _ _    valid 5 */
    static const int32_t tok[] = { 1, 2, 3, 0, 4, 5, 0, 0 };
    static const uint8_t msk[] = { 1, 1, 1, 0, 1, 1, 0, 0 };
    fixture f;

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2, 3);
    ADD(&f, 4, 5);
    expect_rows("gap fills row", &f, 4, 1, 2, tok, msk, 5);
}

static void test_pack_exact_fill(void)
{
    /* seq_len 5, [1 2] [3 4] [5 6 7]: 1 2 at pos 0-1, gap 2; 3 4 at pos 3-4 exactly fill
     * the rest of the row: no gap; [5 6 7] opens row 1: pos 0-2, gap 3, pad 4.
     * row 0: 1 2 _ 3 4    row 1: 5 6 7 _ _    valid 7 */
    static const int32_t tok[] = { 1, 2, 0, 3, 4, 5, 6, 7, 0, 0 };
    static const uint8_t msk[] = { 1, 1, 0, 1, 1, 1, 1, 1, 0, 0 };
    /* seq_len 4, [1 2 3 4] [5]: the first sample is exactly one row (no gap); [5] opens
     * row 1 at pos 0, gap 1, pad 2-3.
     * row 0: 1 2 3 4    row 1: 5 _ _ _    valid 5 */
    static const int32_t tok2[] = { 1, 2, 3, 4, 5, 0, 0, 0 };
    static const uint8_t msk2[] = { 1, 1, 1, 1, 1, 0, 0, 0 };
    fixture f;

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2);
    ADD(&f, 3, 4);
    ADD(&f, 5, 6, 7);
    expect_rows("exact fill rest", &f, 5, 1, 2, tok, msk, 7);

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2, 3, 4);
    ADD(&f, 5);
    expect_rows("exact fill row", &f, 4, 1, 2, tok2, msk2, 5);
}

static void test_pack_long(void)
{
    /* seq_len 4, [1 2 3 4 5 6 7] [8 9]: the first sample is longer than a row:
     * 1 2 3 4 fill row 0, 5 6 7 dropped; [8 9] opens row 1 at pos 0-1, gap 2, pad 3.
     * row 0: 1 2 3 4    row 1: 8 9 _ _    valid 6 */
    static const int32_t tok[] = { 1, 2, 3, 4, 8, 9, 0, 0 };
    static const uint8_t msk[] = { 1, 1, 1, 1, 1, 1, 0, 0 };
    /* seq_len 6, [1 2] [3 4 5 6 7 8 9] [10]: 1 2 at pos 0-1, gap 2; 3 4 5 at pos 3-5
     * (6 7 8 9 dropped), row full; [10] opens row 1 at pos 0, gap 1, pad 2-5.
     * row 0: 1 2 _ 3 4 5    row 1: 10 _ _ _ _ _    valid 6 */
    static const int32_t tok2[] = { 1, 2, 0, 3, 4, 5, 10, 0, 0, 0, 0, 0 };
    static const uint8_t msk2[] = { 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0 };
    /* seq_len 1, [1] [2 3]: every sample fills its row, never a gap.
     * row 0: 1    row 1: 2    valid 2 */
    static const int32_t tok3[] = { 1, 2 };
    static const uint8_t msk3[] = { 1, 1 };
    /* seq_len 3, one sample [7]: 7 at pos 0, gap 1, pad 2. row 0: 7 _ _   valid 1 */
    static const int32_t tok4[] = { 7, 0, 0 };
    static const uint8_t msk4[] = { 1, 0, 0 };
    fixture f;

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2, 3, 4, 5, 6, 7);
    ADD(&f, 8, 9);
    expect_rows("long first", &f, 4, 1, 2, tok, msk, 6);

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2);
    ADD(&f, 3, 4, 5, 6, 7, 8, 9);
    ADD(&f, 10);
    expect_rows("long middle", &f, 6, 1, 2, tok2, msk2, 6);

    memset(&f, 0, sizeof f);
    ADD(&f, 1);
    ADD(&f, 2, 3);
    expect_rows("seq_len 1", &f, 1, 1, 2, tok3, msk3, 2);

    memset(&f, 0, sizeof f);
    ADD(&f, 7);
    expect_rows("single", &f, 3, 1, 1, tok4, msk4, 1);
}

static void test_no_pack(void)
{
    /* pack == 0, seq_len 4, samples of test_pack_basic: one row each, truncated/padded.
     * [1 2 3] -> 1 2 3 _; [4 5] -> 4 5 _ _; [6..10] -> 6 7 8 9; [11] -> 11 _ _ _
     * valid 3 + 2 + 4 + 1 = 10 */
    static const int32_t tok[] = { 1, 2, 3, 0, 4, 5, 0, 0, 6, 7, 8, 9, 11, 0, 0, 0 };
    static const uint8_t msk[] = { 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0 };
    fixture f;

    memset(&f, 0, sizeof f);
    ADD(&f, 1, 2, 3);
    ADD(&f, 4, 5);
    ADD(&f, 6, 7, 8, 9, 10);
    ADD(&f, 11);
    expect_rows("no pack", &f, 4, 0, 4, tok, msk, 10);
}

static void test_rows_errors(void)
{
    fixture f;
    reap_rows r;

    memset(&f, 0, sizeof f);
    CHECK_RC(reap_rows_build(&f.s, 8, 1, &r), REAP_E_INVALID);   /* no samples */
    CHECK(r.tokens == NULL && r.n_rows == 0);
    ADD(&f, 1, 2);
    CHECK_RC(reap_rows_build(&f.s, 0, 1, &r), REAP_E_INVALID);
    CHECK_ERRMSG("sequence length");
    CHECK_RC(reap_rows_build(&f.s, -3, 0, &r), REAP_E_INVALID);
    CHECK_RC(reap_rows_build(NULL, 8, 1, &r), REAP_E_INVALID);
}

/* ---- reading ---- */

static void test_read(void)
{
    /* Blank and whitespace-only lines (1, 3, 5) are skipped; line numbers are the
     * file's; other keys are ignored. */
    const char *path = write_scratch("ok.jsonl",
        "\n"
        "{\"input_ids\": [1, 2, 3], \"text\": \"ignored: input_ids win\"}\n"
        "   \t \r\n"
        "{\"text\": \"hi\", \"input_ids\": [4095]}\r\n"
        "\n"
        "{\"input_ids\": [0, 7]}");   /* no final newline */
    reap_samples s;

    CHECK_RC(reap_samples_read_jsonl(path, 0, 4096, &s), REAP_OK);
    CHECK(s.n == 3);
    if (s.n == 3) {
        CHECK(s.len[0] == 3 && s.ids[0][0] == 1 && s.ids[0][1] == 2 && s.ids[0][2] == 3);
        CHECK(s.len[1] == 1 && s.ids[1][0] == 4095);
        CHECK(s.len[2] == 2 && s.ids[2][0] == 0 && s.ids[2][1] == 7);
        CHECK(s.line[0] == 2 && s.line[1] == 4 && s.line[2] == 6);
    }
    reap_samples_free(&s);
    CHECK(s.n == 0 && s.ids == NULL && s.len == NULL && s.line == NULL);

    /* max_samples 2 stops before the third sample (and never sees the bad line 4). */
    path = write_scratch("max.jsonl",
        "{\"input_ids\": [1]}\n{\"input_ids\": [2]}\n{\"input_ids\": [3]}\nnot json\n");
    CHECK_RC(reap_samples_read_jsonl(path, 2, 0, &s), REAP_OK);
    CHECK(s.n == 2 && s.ids[1][0] == 2);
    reap_samples_free(&s);
    CHECK_RC(reap_samples_read_jsonl(path, 3, 0, &s), REAP_OK);
    CHECK(s.n == 3);
    reap_samples_free(&s);
    CHECK_RC(reap_samples_read_jsonl(path, 0, 0, &s), REAP_E_FORMAT);   /* all: line 4 */
    CHECK_ERRMSG("max.jsonl:4:");

    /* vocab <= 0: no upper bound. */
    path = write_scratch("big.jsonl", "{\"input_ids\": [151935, 2147483647]}\n");
    CHECK_RC(reap_samples_read_jsonl(path, 0, 0, &s), REAP_OK);
    CHECK(s.n == 1 && s.ids[0][1] == 2147483647);
    reap_samples_free(&s);

    /* Many samples: the arrays grow. */
    {
        char name[4096];
        FILE *fp;
        int i;
        snprintf(name, sizeof name, "%s/many.jsonl", scratch);
        fp = fopen(name, "wb");
        CHECK(fp != NULL);
        if (fp) {
            for (i = 0; i < 1000; i++)
                fprintf(fp, "{\"input_ids\": [%d, %d]}\n", i, i + 1);
            fclose(fp);
            CHECK_RC(reap_samples_read_jsonl(name, 0, 1001, &s), REAP_OK);
            CHECK(s.n == 1000 && s.ids[999][1] == 1000 && s.line[999] == 1000);
            reap_samples_free(&s);
        }
    }
}

/* Read `text` as <scratch>/<name>, expect `want` and a message containing `needle`. */
static void expect_read_error(const char *name, const char *text, int vocab, int want,
                              const char *needle)
{
    reap_samples s;
    const char *path = write_scratch(name, text);

    reap_err_clear();
    CHECK_RC(reap_samples_read_jsonl(path, 0, vocab, &s), want);
    CHECK_ERRMSG(needle);
    CHECK(s.n == 0 && s.ids == NULL && s.len == NULL && s.line == NULL);
}

static void test_read_errors(void)
{
    expect_read_error("badjson.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\": [1,}\n", 0,
                      REAP_E_FORMAT, "badjson.jsonl:2: invalid JSON");
    /* Cut off at the end of the file: the line of the cut item, not the one after it. */
    expect_read_error("eof1.jsonl", "{\"input_ids\":[1,2\n", 0, REAP_E_FORMAT,
                      "eof1.jsonl:1: invalid JSON");
    expect_read_error("eof2.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\":[1,2\n", 0,
                      REAP_E_FORMAT, "eof2.jsonl:2: invalid JSON");
    expect_read_error("trailing.jsonl", "{\"input_ids\": [1]} x\n", 0, REAP_E_FORMAT,
                      "trailing.jsonl:1: invalid JSON");
    expect_read_error("nonint.jsonl", "\n{\"input_ids\": [1, 2.5]}\n", 0, REAP_E_FORMAT,
                      "nonint.jsonl:2: input_ids[1] is not an integer");
    expect_read_error("strid.jsonl", "{\"input_ids\": [\"3\"]}\n", 0, REAP_E_FORMAT,
                      "strid.jsonl:1: input_ids[0] is not an integer");
    expect_read_error("empty_ids.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\": []}\n", 0,
                      REAP_E_FORMAT, "empty_ids.jsonl:2: empty");
    expect_read_error("noids.jsonl", "{\"ids\": [1]}\n", 0, REAP_E_FORMAT,
                      "noids.jsonl:1: unknown item shape");
    expect_read_error("idsobj.jsonl", "{\"input_ids\": 5}\n", 0, REAP_E_FORMAT,
                      "idsobj.jsonl:1: \"input_ids\" is not an array");
    /* A file starting with '[' is a JSON array of items: here item 0 is a number. */
    expect_read_error("array.jsonl", "[1, 2, 3]\n", 0, REAP_E_FORMAT,
                      "array.jsonl:1: item 0: not a JSON object");
    expect_read_error("range.jsonl",
                      "{\"input_ids\": [1]}\n{\"input_ids\": [4095]}\n{\"input_ids\": [7, 5000]}\n",
                      4096, REAP_E_INVALID,
                      "range.jsonl:3: token id 5000 out of range (vocab_size 4096)");
    expect_read_error("range_eq.jsonl", "{\"input_ids\": [4096]}\n", 4096, REAP_E_INVALID,
                      "range_eq.jsonl:1: token id 4096 out of range");
    expect_read_error("negative.jsonl", "{\"input_ids\": [-1]}\n", 0, REAP_E_INVALID,
                      "negative.jsonl:1: token id -1 out of range");
    expect_read_error("huge.jsonl", "{\"input_ids\": [2147483648]}\n", 0, REAP_E_INVALID,
                      "huge.jsonl:1: token id 2147483648 out of range");
    expect_read_error("empty.jsonl", "", 0, REAP_E_INVALID, "empty.jsonl: no samples");
    expect_read_error("blank.jsonl", "\n  \n\t\n", 0, REAP_E_INVALID,
                      "blank.jsonl: no samples");
    {
        char path[4096];
        reap_samples s;
        snprintf(path, sizeof path, "%s/absent.jsonl", scratch);
        CHECK_RC(reap_samples_read_jsonl(path, 0, 0, &s), REAP_E_NOTFOUND);
        CHECK_ERRMSG("absent.jsonl");
    }
}

static void test_read_then_pack(void)
{
    /* The packing example of test_pack_basic, read from a file. */
    static const int32_t tok[] = { 1, 2, 3, 0, 4, 5, 0, 6,
                                   11, 0, 0, 0, 0, 0, 0, 0 };
    const char *path = write_scratch("pack.jsonl",
        "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5]}\n"
        "{\"input_ids\": [6, 7, 8, 9, 10]}\n\n{\"input_ids\": [11]}\n");
    reap_samples s;
    reap_rows r;

    CHECK_RC(reap_samples_read_jsonl(path, 0, 12, &s), REAP_OK);
    CHECK(s.n == 4 && s.line[3] == 5);
    CHECK_RC(reap_rows_build(&s, 8, 1, &r), REAP_OK);
    CHECK(r.n_rows == 2 && r.n_valid == 7);
    if (r.n_rows == 2)
        CHECK(memcmp(r.tokens, tok, sizeof tok) == 0);
    reap_rows_free(&r);
    reap_samples_free(&s);
}


/* ---- text, chat and JSON arrays (with the Qwen3 tokenizer) ---- */

static reap_tokenizer *qwen;

static reap_calib_opts opts_for(const char *path, int64_t max, int vocab)
{
    reap_calib_opts o;

    memset(&o, 0, sizeof o);
    o.path = path;
    o.max_samples = max;
    o.vocab = vocab;
    o.tokenizer = qwen;
    return o;
}

/* Sample i must be exactly want[0..n). */
static void expect_sample(const reap_samples *s, int64_t i, const int32_t *want, int64_t n,
                          int64_t line)
{
    int64_t k;

    CHECK_MSG(i < s->n, "sample %lld missing", (long long)i);
    if (i >= s->n)
        return;
    CHECK_MSG(s->len[i] == n, "sample %lld: %lld tokens, want %lld", (long long)i,
              (long long)s->len[i], (long long)n);
    for (k = 0; k < n && k < s->len[i]; k++)
        CHECK_MSG(s->ids[i][k] == want[k], "sample %lld token %lld: %d, want %d",
                  (long long)i, (long long)k, s->ids[i][k], want[k]);
    CHECK_MSG(s->line[i] == line, "sample %lld line %lld, want %lld", (long long)i,
              (long long)s->line[i], (long long)line);
}

#define EXPECT_SAMPLE(s, i, line, ...)                                               \
    do {                                                                             \
        static const int32_t w_[] = { __VA_ARGS__ };                                 \
        expect_sample((s), (i), w_, (int64_t)(sizeof w_ / sizeof w_[0]), (line));    \
    } while (0)

/* Ids (read off the fixture's vocabulary):
 *   "Hello world"  -> "Hello" 9707, "Ġworld" 1879
 *   "hi" 6023, "user" 872, "system" 8948, "assistant" 77091, "Ċ" (newline) 198,
 *   <|im_start|> 151644, <|im_end|> 151645, "Be" 3430, "Ġbrief" 9814, "." 13,
 *   "Hello" 9707, "!" 0, "x" 87.
 * A chat item renders as <|im_start|>{role}\n{content}<|im_end|>\n per message. */
#define IDS_HELLO 9707, 1879
#define IDS_CHAT_USER_HI 151644, 872, 198, 6023, 151645, 198
#define IDS_CHAT_3 151644, 8948, 198, 3430, 9814, 13, 151645, 198, \
                   151644, 872, 198, 6023, 151645, 198, \
                   151644, 77091, 198, 9707, 0, 151645, 198

static void test_mixed_kinds(void)
{
    const char *path = write_scratch("mixed.jsonl",
        "{\"text\": \"Hello world\"}\n"
        "\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n"
        "{\"input_ids\": [1, 2, 3]}\n"
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
        "{\"role\": \"user\", \"content\": \"hi\"}, "
        "{\"role\": \"assistant\", \"content\": \"Hello!\"}], \"id\": 17}\n"
        "{\"text\": \"x\"}\n");
    reap_calib_opts o = opts_for(path, 0, 151936);
    reap_samples s;
    reap_rows r;

    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 5);
    EXPECT_SAMPLE(&s, 0, 1, IDS_HELLO);
    EXPECT_SAMPLE(&s, 1, 3, IDS_CHAT_USER_HI);
    EXPECT_SAMPLE(&s, 2, 4, 1, 2, 3);
    EXPECT_SAMPLE(&s, 3, 5, IDS_CHAT_3);
    EXPECT_SAMPLE(&s, 4, 6, 87);

    /* Packed into rows of 8: [9707 1879] gap, [chat 6] fills pos 3-7 with its first 5
     * ids (151644 872 198 6023 151645; the last 198 dropped); row 1: [1 2 3] gap,
     * [chat 21]: 4 positions left: 151644 8948 198 3430; row 2: [87] gap, pad.
     * row 0: 9707 1879 _ 151644 872 198 6023 151645
     * row 1: 1 2 3 _ 151644 8948 198 3430
     * row 2: 87 _ _ _ _ _ _ _            valid 7 + 7 + 1 = 15 */
    {
        static const int32_t tok[] = { 9707, 1879, 0, 151644, 872, 198, 6023, 151645,
                                       1, 2, 3, 0, 151644, 8948, 198, 3430,
                                       87, 0, 0, 0, 0, 0, 0, 0 };
        static const uint8_t msk[] = { 1, 1, 0, 1, 1, 1, 1, 1,
                                       1, 1, 1, 0, 1, 1, 1, 1,
                                       1, 0, 0, 0, 0, 0, 0, 0 };
        CHECK_RC(reap_rows_build(&s, 8, 1, &r), REAP_OK);
        CHECK(r.n_rows == 3 && r.n_valid == 15);
        if (r.n_rows == 3) {
            CHECK(memcmp(r.tokens, tok, sizeof tok) == 0);
            CHECK(memcmp(r.mask, msk, sizeof msk) == 0);
        }
        reap_rows_free(&r);
    }
    reap_samples_free(&s);

    /* max_samples 2: the first two items. */
    o.max_samples = 2;
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 2);
    EXPECT_SAMPLE(&s, 1, 3, IDS_CHAT_USER_HI);
    reap_samples_free(&s);
}

static void test_json_array(void)
{
    /* The same items as a JSON array over several lines; s.line is where each item
     * starts. A UTF-8 byte order mark and blank space around are accepted. */
    const char *path = write_scratch("mixed.json",
        "\xef\xbb\xbf  [\n"
        "  {\"text\": \"Hello world\"},\n"
        "  {\"messages\": [\n"
        "     {\"role\": \"user\", \"content\": \"hi\"}\n"
        "  ]},\n"
        "  {\"input_ids\": [1, 2, 3]}, {\"text\": \"x\"}\n"
        "]\n\n");
    reap_calib_opts o = opts_for(path, 0, 0);
    reap_samples s;

    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 4);
    EXPECT_SAMPLE(&s, 0, 2, IDS_HELLO);
    EXPECT_SAMPLE(&s, 1, 3, IDS_CHAT_USER_HI);
    EXPECT_SAMPLE(&s, 2, 6, 1, 2, 3);
    EXPECT_SAMPLE(&s, 3, 6, 87);
    reap_samples_free(&s);

    /* max_samples stops before the broken rest of the file. */
    path = write_scratch("prefix.json", "[{\"input_ids\": [5]}, {\"input_ids\": [6]}, oops");
    o = opts_for(path, 2, 0);
    CHECK_RC(reap_calib_load(&o, &s), REAP_OK);
    CHECK(s.n == 2 && s.ids[1][0] == 6);
    reap_samples_free(&s);
    o.max_samples = 0;
    CHECK_RC(reap_calib_load(&o, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("prefix.json:1: item 2: invalid JSON");
}

/* Samples [i] for i = 0..9, one per line; returns the file. */
static const char *ten_items(void)
{
    return write_scratch("ten.jsonl",
        "{\"input_ids\": [0]}\n{\"input_ids\": [1]}\n{\"input_ids\": [2]}\n"
        "{\"input_ids\": [3]}\n{\"input_ids\": [4]}\n{\"input_ids\": [5]}\n"
        "{\"input_ids\": [6]}\n{\"input_ids\": [7]}\n{\"input_ids\": [8]}\n"
        "{\"input_ids\": [9]}\n");
}

static void expect_order(const char *what, reap_calib_opts *o, const int32_t *want, int n)
{
    reap_samples s;
    int i;

    CHECK_RC(reap_calib_load(o, &s), REAP_OK);
    CHECK_MSG(s.n == n, "%s: %lld samples, want %d", what, (long long)s.n, n);
    for (i = 0; i < n && i < s.n; i++) {
        CHECK_MSG(s.ids[i][0] == want[i], "%s: sample %d is [%d], want [%d]", what, i,
                  s.ids[i][0], want[i]);
        CHECK(s.line[i] == want[i] + 1);
    }
    reap_samples_free(&s);
}

static void test_shuffle(void)
{
    /* Expected permutations worked out from the documented algorithm (SplitMix64 seeded
     * with the seed; for i = 9..1: j = next() mod (i + 1), swap i and j) by a separate
     * Python transcription of calib.h's description. */
    static const int32_t seed7[] = { 8, 1, 5, 9, 0, 4, 3, 2, 6, 7 };
    static const int32_t seed8[] = { 5, 7, 0, 3, 6, 4, 8, 1, 9, 2 };
    static const int32_t seed0[] = { 6, 3, 2, 9, 8, 1, 4, 7, 0, 5 };
    static const int32_t plain[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    reap_calib_opts o = opts_for(ten_items(), 0, 0);

    o.shuffle = 1;
    o.seed = 7;
    expect_order("seed 7", &o, seed7, 10);
    expect_order("seed 7 again", &o, seed7, 10);
    o.seed = 8;
    expect_order("seed 8", &o, seed8, 10);
    o.seed = 0;
    expect_order("seed 0", &o, seed0, 10);
    /* max_samples with shuffle: the first 3 of the whole file's permutation. */
    o.seed = 7;
    o.max_samples = 3;
    expect_order("seed 7, 3 samples", &o, seed7, 3);
    o.shuffle = 0;
    expect_order("no shuffle, 3 samples", &o, plain, 3);
}

/* reap_calib_load on `text` (as <scratch>/<name>) must fail with want and needle. */
static void expect_load_error(const char *name, const char *text, reap_tokenizer *tok,
                              int vocab, int want, const char *needle)
{
    reap_calib_opts o = opts_for(write_scratch(name, text), 0, vocab);
    reap_samples s;

    o.tokenizer = tok;
    reap_err_clear();
    CHECK_RC(reap_calib_load(&o, &s), want);
    CHECK_ERRMSG(needle);
    CHECK(s.n == 0 && s.ids == NULL && s.len == NULL && s.line == NULL);
}

static void test_calib_errors(void)
{
    char path[4096];
    reap_tokenizer *gpt2 = NULL;

    expect_load_error("e_json.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b}\n", qwen, 0,
                      REAP_E_FORMAT, "e_json.jsonl:2: invalid JSON");
    expect_load_error("e_utf8.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\xff\"}\n", qwen, 0,
                      REAP_E_FORMAT, "e_utf8.jsonl:3: invalid UTF-8");
    expect_load_error("e_utf8.json", "[\n{\"text\": \"a\"},\n{\"text\": \"\xc3\x28\"}]", qwen,
                      0, REAP_E_FORMAT, "e_utf8.json:3: item 1: invalid UTF-8");
    expect_load_error("e_shape.jsonl", "{\"prompt\": \"a\"}\n", qwen, 0, REAP_E_FORMAT,
                      "e_shape.jsonl:1: unknown item shape");
    expect_load_error("e_shape.json", "[{\"text\": \"a\"},\n\n {\"completion\": 1}]", qwen, 0,
                      REAP_E_FORMAT, "e_shape.json:3: item 1: unknown item shape");
    expect_load_error("e_empty.jsonl", "{\"text\": \"a\"}\n{\"text\": \"\"}\n", qwen, 0,
                      REAP_E_FORMAT, "e_empty.jsonl:2: empty \"text\"");
    expect_load_error("e_textnum.jsonl", "{\"text\": 5}\n", qwen, 0, REAP_E_FORMAT,
                      "e_textnum.jsonl:1: \"text\" is not a string");
    expect_load_error("e_role.jsonl",
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                      "{\"role\": \"bot\", \"content\": \"b\"}]}\n", qwen, 0, REAP_E_INVALID,
                      "e_role.jsonl:1: messages[1]: unknown role \"bot\"");
    expect_load_error("e_norole.jsonl", "{\"messages\": [{\"content\": \"a\"}]}\n", qwen, 0,
                      REAP_E_FORMAT, "messages[0] has no string \"role\"");
    expect_load_error("e_nocontent.jsonl", "{\"messages\": [{\"role\": \"user\", "
                      "\"content\": 7}]}\n", qwen, 0, REAP_E_FORMAT,
                      "messages[0] has no string or list \"content\"");
    /* A list of parts (Qwen's format): a part needs an image or a text. */
    expect_load_error("e_nopart.jsonl", "{\"messages\": [{\"role\": \"user\", "
                      "\"content\": [{\"type\": \"text\"}]}]}\n", qwen, 0, REAP_E_FORMAT,
                      "e_nopart.jsonl:1: messages[0].content[0]: a part with neither an "
                      "image nor \"text\"");
    expect_load_error("e_nomsg.jsonl", "{\"messages\": []}\n", qwen, 0, REAP_E_INVALID,
                      "e_nomsg.jsonl:1: empty \"messages\"");
    expect_load_error("e_msgobj.jsonl", "{\"messages\": {\"role\": \"user\"}}\n", qwen, 0,
                      REAP_E_FORMAT, "\"messages\" is not an array");
    expect_load_error("e_notok.jsonl", "{\"input_ids\": [1]}\n{\"text\": \"a\"}\n", NULL, 0,
                      REAP_E_INVALID, "e_notok.jsonl:2: a \"text\" item needs a tokenizer");
    expect_load_error("e_notok2.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": "
                      "\"a\"}]}\n", NULL, 0, REAP_E_INVALID, "needs a tokenizer");
    /* "Hello world" is 9707 1879: out of a 5000-token vocabulary. */
    expect_load_error("e_range.jsonl", "{\"text\": \"x\"}\n{\"text\": \"Hello world\"}\n", qwen,
                      5000, REAP_E_INVALID,
                      "e_range.jsonl:2: token id 9707 from the tokenizer out of range");
    expect_load_error("e_range.json", "[{\"input_ids\": [1]},\n{\"input_ids\": [7000]}]", qwen,
                      5000, REAP_E_INVALID, "e_range.json:2: item 1: token id 7000 out of range");
    expect_load_error("e_trail.json", "[{\"text\": \"a\"}] x", qwen, 0, REAP_E_FORMAT,
                      "e_trail.json:1: invalid JSON: data after the array");
    expect_load_error("e_open.json", "[{\"text\": \"a\"},\n", qwen, 0, REAP_E_FORMAT,
                      "e_open.json:1: item 1: invalid JSON");
    expect_load_error("e_cut.json", "[\n{\"text\": \"a\"},\n{\"text\": \"b\"\n", qwen, 0,
                      REAP_E_FORMAT, "e_cut.json:3: item 1: invalid JSON");
    expect_load_error("e_sep.json", "[{\"text\": \"a\"} {\"text\": \"b\"}]", qwen, 0,
                      REAP_E_FORMAT, "expected ',' or ']' after item 0");
    expect_load_error("e_emptyarr.json", " [ ] ", qwen, 0, REAP_E_INVALID,
                      "e_emptyarr.json: no samples");
    /* Shape errors are found in every item even when shuffling would not select it. */
    {
        reap_calib_opts o = opts_for(write_scratch("e_late.jsonl", "{\"input_ids\": [1]}\n"
                                                   "{\"input_ids\": [2]}\n{\"txt\": 1}\n"), 1, 0);
        reap_samples s;
        o.shuffle = 1;
        CHECK_RC(reap_calib_load(&o, &s), REAP_E_FORMAT);
        CHECK_ERRMSG("e_late.jsonl:3: unknown item shape");
    }
    /* Chat items need a ChatML tokenizer: the synthetic GPT-2 style one has none. */
    snprintf(path, sizeof path, "%s/tok-synth/gpt2style.json", fixtures);
    CHECK_RC(reap_tokenizer_load(path, &gpt2), REAP_OK);
    if (gpt2) {
        expect_load_error("e_chatml.jsonl", "{\"text\": \"fine\"}\n{\"messages\": [{\"role\": "
                          "\"user\", \"content\": \"a\"}]}\n", gpt2, 0, REAP_E_UNSUPPORTED,
                          "e_chatml.jsonl:2: \"messages\" are rendered as ChatML");
        reap_tokenizer_free(gpt2);
    }
    CHECK_RC(reap_calib_load(NULL, NULL), REAP_E_INVALID);
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
    test_pack_basic();
    test_pack_gap_fills_row();
    test_pack_exact_fill();
    test_pack_long();
    test_no_pack();
    test_rows_errors();
    test_read();
    test_read_errors();
    test_read_then_pack();

    fixtures_dir(fixtures, sizeof fixtures);
    snprintf(path, sizeof path, "%s/qwen3-tokenizer", fixtures);
    CHECK_RC(reap_tokenizer_load(path, &qwen), REAP_OK);
    if (qwen) {
        test_mixed_kinds();
        test_json_array();
        test_shuffle();
        test_calib_errors();
        reap_tokenizer_free(qwen);
    }
    TEST_MAIN_END();
}

/* bench_tokenizer.c - single-thread throughput of reap_tokenizer_encode on mixed text.
 *
 * Usage: bench_tokenizer [--tokenizer DIR_OR_FILE] [--cases FILE] [--mb N] [--seed S]
 * Defaults: the Qwen3 fixture under tests/fixtures/qwen3-tokenizer (next to this source)
 * and its encode_cases.jsonl; 16 MB of generated text.
 *
 * Two corpora, each encoded text by text on one thread:
 *   fixture    the 300 fixture texts (source code, licence text, random strings from many
 *              scripts, whitespace and special-token edge cases): a cold pass on a freshly
 *              loaded tokenizer (empty word cache), then the best of 5 warm passes;
 *   generated  --mb MB of 4 KiB texts built by a seeded PRNG: words and punctuation drawn
 *              from the fixture texts (60%), runs of random CJK ideographs (15%), numbers
 *              (10%), random fixture multi-script snippets (10%), emoji and whitespace
 *              runs (5%); one pass on a fresh tokenizer.
 * Baseline in the same process: the pre-tokenizer regex alone (PCRE2 split of the same
 * generated text with the Qwen2 pattern), i.e. the part no BPE implementation avoids.
 * Prints MB/s (10^6 bytes of UTF-8 input per second of this thread's CPU time) and
 * tokens/s.
 */
#include "reap_err.h"
#include "tok_impl.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct text_list {
    char **s;
    size_t *len;
    size_t n, cap, bytes;
} text_list;

static double now(void)
{
    struct timespec ts;

    /* CPU time of this thread: the figure is per core, and other processes on a shared
     * machine do not inflate it. */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void list_add(text_list *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->s = realloc(l->s, l->cap * sizeof *l->s);
        l->len = realloc(l->len, l->cap * sizeof *l->len);
        if (!l->s || !l->len) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    l->s[l->n] = malloc(n + 1);
    if (!l->s[l->n]) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memcpy(l->s[l->n], s, n);
    l->s[l->n][n] = '\0';
    l->len[l->n++] = n;
    l->bytes += n;
}

static int read_cases(const char *path, text_list *l)
{
    FILE *fp = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    json_error_t jerr;
    json_t *root, *t;

    if (!fp) {
        perror(path);
        return -1;
    }
    while (getline(&line, &cap, fp) > 0) {
        root = json_loads(line, JSON_ALLOW_NUL, &jerr);
        t = json_object_get(root, "text");
        if (json_is_string(t) && json_string_length(t) > 0)
            list_add(l, json_string_value(t), json_string_length(t));
        json_decref(root);
    }
    free(line);
    fclose(fp);
    return 0;
}

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t put_cp(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* The whitespace-separated words of the fixture texts that are valid UTF-8 on their own. */
static void fixture_words(const text_list *cases, text_list *words)
{
    size_t i, a, b;
    const char *s;

    for (i = 0; i < cases->n; i++) {
        s = cases->s[i];
        for (a = 0; a < cases->len[i];) {
            while (a < cases->len[i] && (s[a] == ' ' || s[a] == '\n' || s[a] == '\t'))
                a++;
            for (b = a; b < cases->len[i] && s[b] != ' ' && s[b] != '\n' && s[b] != '\t'; b++)
                ;
            if (b > a && b - a < 40 &&
                tok_utf8_invalid_at((const uint8_t *)s + a, b - a) == b - a)
                list_add(words, s + a, b - a);
            a = b;
        }
    }
}

static void generate(const text_list *cases, const text_list *words, size_t total,
                     text_list *out)
{
    static const uint32_t emoji[] = { 0x1F600, 0x1F680, 0x1F44D, 0x2764, 0x1F389, 0x1F914 };
    char text[4096 + 256];
    size_t n, k, j, r;
    const char *w;

    while (out->bytes < total) {
        n = 0;
        while (n < 4096) {
            r = rng() % 100;
            if (r < 60) {                       /* a word */
                k = rng() % words->n;
                w = words->s[k];
                memcpy(text + n, w, words->len[k]);
                n += words->len[k];
                text[n++] = rng() % 12 ? ' ' : '\n';
            } else if (r < 75) {                /* CJK run */
                for (j = 2 + rng() % 10; j > 0; j--)
                    n += put_cp(text + n, 0x4E00 + (uint32_t)(rng() % 0x5000));
                n += put_cp(text + n, rng() % 3 ? 0x3002 : 0xFF0C);
            } else if (r < 85) {                /* a number */
                n += (size_t)snprintf(text + n, 32, " %llu.%02u",
                                      (unsigned long long)(rng() % 100000),
                                      (unsigned)(rng() % 100));
            } else if (r < 95) {                /* a snippet of a fixture text */
                k = rng() % cases->n;
                j = cases->len[k] < 64 ? cases->len[k] : 64;
                while (j > 0 && tok_utf8_invalid_at((const uint8_t *)cases->s[k], j) != j)
                    j--;
                memcpy(text + n, cases->s[k], j);
                n += j;
                text[n++] = ' ';
            } else {                            /* emoji, whitespace runs */
                n += put_cp(text + n, emoji[rng() % 6]);
                for (j = rng() % 9; j > 0; j--)
                    text[n++] = rng() % 4 ? ' ' : '\t';
                text[n++] = '\n';
            }
        }
        list_add(out, text, n);
    }
}

/* Encode every text once; returns seconds, adds tokens. */
static double encode_all(reap_tokenizer *tok, const text_list *l, size_t *tokens)
{
    double t0 = now();
    int32_t *ids;
    size_t i, n;

    for (i = 0; i < l->n; i++) {
        if (reap_tokenizer_encode(tok, l->s[i], l->len[i], &ids, &n) != REAP_OK) {
            fprintf(stderr, "encode: %s\n", reap_err_msg());
            exit(1);
        }
        *tokens += n;
        free(ids);
    }
    return now() - t0;
}

static int count_piece(void *ctx, const uint8_t *s, size_t n)
{
    (void)s;
    (void)n;
    (*(size_t *)ctx)++;
    return 0;
}

int main(int argc, char **argv)
{
    static const char qwen2_pattern[] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
        "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    char tok_path[2048], cases_path[4096];
    const char *slash = strrchr(__FILE__, '/');
    text_list cases = {0}, words = {0}, gen = {0};
    reap_tokenizer *tok = NULL;
    double mb = 16, t, best = 1e30, tl;
    size_t tokens = 0, pieces = 0, i;
    tok_regex re;
    pcre2_match_data *md;
    int k;

    rng_state = 1;
    snprintf(tok_path, sizeof tok_path, "%.*s/../tests/fixtures/qwen3-tokenizer",
             slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    snprintf(cases_path, sizeof cases_path, "%s/encode_cases.jsonl", tok_path);
    for (k = 1; k + 1 < argc; k += 2) {
        if (!strcmp(argv[k], "--tokenizer"))
            snprintf(tok_path, sizeof tok_path, "%s", argv[k + 1]);
        else if (!strcmp(argv[k], "--cases"))
            snprintf(cases_path, sizeof cases_path, "%s", argv[k + 1]);
        else if (!strcmp(argv[k], "--mb"))
            mb = atof(argv[k + 1]);
        else if (!strcmp(argv[k], "--seed"))
            rng_state = strtoull(argv[k + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--tokenizer P] [--cases F] [--mb N] [--seed S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (read_cases(cases_path, &cases) || cases.n == 0)
        return 1;
    fixture_words(&cases, &words);
    generate(&cases, &words, (size_t)(mb * 1e6), &gen);

    t = now();
    if (reap_tokenizer_load(tok_path, &tok) != REAP_OK) {
        fprintf(stderr, "load: %s\n", reap_err_msg());
        return 1;
    }
    printf("load %s: %.3f s\n", reap_tokenizer_path(tok), now() - t);

    t = encode_all(tok, &cases, &tokens);
    printf("fixture   %zu texts, %.3f MB: cold %.1f MB/s", cases.n, cases.bytes / 1e6,
           cases.bytes / 1e6 / t);
    for (k = 0; k < 5; k++) {
        tokens = 0;
        t = encode_all(tok, &cases, &tokens);
        if (t < best)
            best = t;
    }
    printf(", warm %.1f MB/s (%.2f M tokens/s)\n", cases.bytes / 1e6 / best,
           tokens / 1e6 / best);
    reap_tokenizer_free(tok);

    if (reap_tokenizer_load(tok_path, &tok) != REAP_OK) {
        fprintf(stderr, "load: %s\n", reap_err_msg());
        return 1;
    }
    tokens = 0;
    t = encode_all(tok, &gen, &tokens);
    printf("generated %zu texts, %.1f MB: %.1f MB/s (%.2f M tokens/s, %.2f bytes/token)\n",
           gen.n, gen.bytes / 1e6, gen.bytes / 1e6 / t, tokens / 1e6 / t,
           (double)gen.bytes / (double)tokens);
    reap_tokenizer_free(tok);

    /* Baseline: the split regex alone over the generated text. */
    if (tok_regex_compile(&re, qwen2_pattern, strlen(qwen2_pattern), 0) != REAP_OK) {
        fprintf(stderr, "regex: %s\n", reap_err_msg());
        return 1;
    }
    md = pcre2_match_data_create(1, NULL);
    tl = now();
    for (i = 0; i < gen.n; i++)
        tok_regex_split(&re, md, !tok_text_has_newer((const uint8_t *)gen.s[i], gen.len[i]),
                        TOK_SPLIT_ISOLATED, 0, (const uint8_t *)gen.s[i], gen.len[i],
                        count_piece, &pieces);
    tl = now() - tl;
    printf("baseline: regex split alone %.1f MB/s (%.2f M pieces/s, JIT %s); full encode "
           "is %.2f of it\n", gen.bytes / 1e6 / tl, pieces / 1e6 / tl, re.jit ? "on" : "off",
           tl / t);
    pcre2_match_data_free(md);
    tok_regex_free(&re);

    for (i = 0; i < cases.n; i++)
        free(cases.s[i]);
    for (i = 0; i < words.n; i++)
        free(words.s[i]);
    for (i = 0; i < gen.n; i++)
        free(gen.s[i]);
    free(cases.s);
    free(cases.len);
    free(words.s);
    free(words.len);
    free(gen.s);
    free(gen.len);
    return 0;
}

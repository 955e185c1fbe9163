/* tok_regex.c - the Split pre-tokenizer: Oniguruma patterns run by PCRE2.
 *
 * tokenizers compiles Split patterns with Oniguruma (Ruby syntax, UTF-8). PCRE2 with
 * PCRE2_UTF | PCRE2_UCP reads the same syntax for everything these patterns use
 * (alternation, classes, \p{..}, (?i:..), look-around) with a few differences that
 * tok_regex_translate() rewrites:
 *   \s \S    Unicode White_Space (PCRE2 also counts U+180E) - an explicit class;
 *   \w \W    Alphabetic, marks, Nd, Pc; outside a class Oniguruma also counts the
 *            Latin-1 superscripts 1-3 and fractions (its byte table), inside a class
 *            it does not. PCRE2 has all N, no marks;
 *   \h \H    a hexadecimal digit in Oniguruma (horizontal space in PCRE2);
 *   \uHHHH   a code point in Oniguruma (an error in PCRE2): \x{HHHH};
 *   \p{L} \p{N} \d  plus the letters/numbers/digits of Unicode 15-16 (tokenizers'
 *            Oniguruma has Unicode 16 tables, PCRE2 10.42 Unicode 14; *_NEWER below);
 *   (?m)     dot-all in Ruby syntax: (?s); ^ and $ always match at line breaks
 *            (PCRE2_MULTILINE).
 * Nested classes and class intersection (&&) are refused. The pattern is JIT-compiled
 * when PCRE2 has a JIT for the machine. The Unicode 15-16 additions make the classes
 * slower (PCRE2 tests the ranges one by one for every non-letter), so a second variant
 * without them is compiled too and used for text that has none of those characters
 * (tok_text_has_newer; the same pieces either way).
 *
 * Splitting follows tokenizers' NormalizedString::split: the matches and the gaps
 * between them form an ordered list of segments (is_match flags flipped by invert),
 * folded by the behaviour; tok_regex_split streams that fold, holding at most one
 * pending piece. Empty matches are skipped.
 */
#include "tok_impl.h"

#include "reap_err.h"
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>

const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Letters and numbers of Unicode 15.0-16.0 (the tables of tokenizers' Oniguruma) that
 * PCRE2 10.42 (Unicode 14) does not know; added to \p{L} and \p{N} (harmless with a
 * newer PCRE2). Measured against tokenizers 0.23.3: every code point that its \p{L} or
 * \p{N} matches and Unicode 14 leaves unassigned. */
#define L_NEWER "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}" \
    "\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}" \
    "\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}" \
    "\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}" \
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}" \
    "\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}" \
    "\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}" \
    "\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N_NEWER "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}" \
    "\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}" \
    "\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"

/* Marks and decimal digits of Unicode 15.0-16.0 that tokenizers' \w matches, measured
 * the same way (every code point where it and PCRE2's rewritten \w disagreed); the
 * digits are also added to \d. */
#define W_NEWER "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}" \
    "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}" \
    "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}" \
    "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}" \
    "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}" D_NEWER
#define D_NEWER "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}" \
    "\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}" \
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"

/* Class bodies (without brackets). */
#define WS_SET "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
               "\\x{202F}\\x{205F}\\x{3000}"
#define WORD_BASE "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}"
#define WORD_LATIN1 "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}"
#define HEX_SET "0-9A-Fa-f"

/* Every code point of the four *_NEWER sets, merged (for tok_text_has_newer). */
static const int32_t newer_ranges[][2] = {
    {0x897, 0x897}, {0xCF3, 0xCF3}, {0xECE, 0xECE}, {0x1C89, 0x1C8A}, {0xA7CB, 0xA7CD},
    {0xA7DA, 0xA7DC}, {0x105C0, 0x105F3}, {0x10D40, 0x10D65}, {0x10D69, 0x10D6D},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x10EFC, 0x10EFF}, {0x1123F, 0x11241},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5},
    {0x113B7, 0x113C0}, {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113CA},
    {0x113CC, 0x113D3}, {0x113E1, 0x113E2}, {0x116D0, 0x116E3}, {0x11BC0, 0x11BE0},
    {0x11BF0, 0x11BF9}, {0x11F00, 0x11F10}, {0x11F12, 0x11F3A}, {0x11F3E, 0x11F42},
    {0x11F50, 0x11F5A}, {0x1342F, 0x1342F}, {0x13440, 0x13455}, {0x13460, 0x143FA},
    {0x16100, 0x16139}, {0x16D40, 0x16D6C}, {0x16D70, 0x16D79}, {0x18CFF, 0x18CFF},
    {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3},
    {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E08F, 0x1E08F}, {0x1E4D0, 0x1E4F9},
    {0x1E5D0, 0x1E5FA}, {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};

int tok_text_has_newer(const uint8_t *s, size_t n)
{
    size_t i = 0, j, lo, hi, mid;
    int32_t c;

    while (i < n) {
        if (s[i] < 0xE0) {                  /* below U+0800: none there */
            i++;
            continue;
        }
        j = i;
        c = tok_utf8_next(s, n, &j);
        i = j;
        lo = 0;
        hi = sizeof newer_ranges / sizeof newer_ranges[0];
        while (lo < hi) {
            mid = (lo + hi) / 2;
            if (c < newer_ranges[mid][0])
                hi = mid;
            else if (c > newer_ranges[mid][1])
                lo = mid + 1;
            else
                return 1;
        }
    }
    return 0;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int tok_regex_translate(const char *pat, size_t n, int newer, char **out)
{
    reap_strbuf b = {0};
    size_t i = 0, j;
    int in_class = 0, class_start = 0, rc;
    const char *rep;
    char c;

    *out = NULL;
    if (reap_strbuf_add(&b, "", 0))
        goto nomem;
    while (i < n) {
        c = pat[i];
        if (c == '\\' && i + 1 < n) {
            c = pat[i + 1];
            rep = NULL;
            switch (c) {
            case 's': rep = in_class ? WS_SET : "[" WS_SET "]"; break;
            case 'S': rep = in_class ? "\\S" : "[^" WS_SET "]"; break;
            case 'w':
                if (newer)
                    rep = in_class ? WORD_BASE L_NEWER W_NEWER
                                   : "[" WORD_BASE L_NEWER W_NEWER WORD_LATIN1 "]";
                else
                    rep = in_class ? WORD_BASE : "[" WORD_BASE WORD_LATIN1 "]";
                break;
            case 'h': rep = in_class ? HEX_SET : "[" HEX_SET "]"; break;
            case 'd':
                if (newer)
                    rep = in_class ? "\\d" D_NEWER : "[\\d" D_NEWER "]";
                else
                    rep = "\\d";
                break;
            case 'D':
                if (!in_class)
                    rep = newer ? "[^\\d" D_NEWER "]" : "\\D";
                break;
            case 'W':
            case 'H':
                if (in_class) {
                    rc = reap_err_set(REAP_E_UNSUPPORTED, "regex: \\%c inside a character "
                                      "class is not supported", c);
                    goto fail;
                }
                if (c == 'H')
                    rep = "[^" HEX_SET "]";
                else
                    rep = newer ? "[^" WORD_BASE L_NEWER W_NEWER WORD_LATIN1 "]"
                                : "[^" WORD_BASE WORD_LATIN1 "]";
                break;
            case 'p':
            case 'P':
                /* \p{L} \p{N} \pL \pN (and \P outside a class): with the newer ranges. */
                j = 0;
                if (i + 4 < n && pat[i + 2] == '{' && pat[i + 4] == '}' &&
                    (pat[i + 3] == 'L' || pat[i + 3] == 'N'))
                    j = 5;
                else if (i + 2 < n && (pat[i + 2] == 'L' || pat[i + 2] == 'N') &&
                         !(i + 3 < n && pat[i + 3] == '{'))
                    j = 3;
                if (j && newer && (c == 'p' || !in_class)) {
                    char k = pat[i + j - (j == 5 ? 2 : 1)];
                    if (reap_strbuf_adds(&b, in_class ? "" : c == 'p' ? "[" : "[^") ||
                        reap_strbuf_adds(&b, k == 'L' ? "\\p{L}" L_NEWER : "\\p{N}" N_NEWER) ||
                        reap_strbuf_adds(&b, in_class ? "" : "]"))
                        goto nomem;
                    i += j;
                    class_start = 0;
                    continue;
                }
                break;
            case 'u':
                if (i + 5 < n && is_hex(pat[i + 2]) && is_hex(pat[i + 3]) &&
                    is_hex(pat[i + 4]) && is_hex(pat[i + 5])) {
                    if (reap_strbuf_add(&b, "\\x{", 3) || reap_strbuf_add(&b, pat + i + 2, 4) ||
                        reap_strbuf_add(&b, "}", 1))
                        goto nomem;
                    i += 6;
                    class_start = 0;
                    continue;
                }
                break;
            default:
                break;
            }
            if (rep) {
                if (reap_strbuf_adds(&b, rep))
                    goto nomem;
                i += 2;
            } else {
                /* Copy the escape and its whole (possibly multi-byte) character. */
                j = i + 2;
                while (j < n && ((unsigned char)pat[j] & 0xC0) == 0x80)
                    j++;
                if (reap_strbuf_add(&b, pat + i, j - i))
                    goto nomem;
                i = j;
            }
            class_start = 0;
            continue;
        }
        if (in_class) {
            if (c == ']' && !class_start) {
                in_class = 0;
            } else if (c == '[' && i + 1 < n && pat[i + 1] == ':') {
                /* A POSIX class [:name:] inside the class: copy it whole. */
                for (j = i + 2; j + 1 < n && !(pat[j] == ':' && pat[j + 1] == ']'); j++)
                    ;
                j = j + 1 < n ? j + 2 : n;
                if (reap_strbuf_add(&b, pat + i, j - i))
                    goto nomem;
                i = j;
                class_start = 0;
                continue;
            } else if (c == '[') {
                rc = reap_err_set(REAP_E_UNSUPPORTED, "regex: nested character class at "
                                  "offset %zu is not supported", i);
                goto fail;
            } else if (c == '&' && i + 1 < n && pat[i + 1] == '&') {
                rc = reap_err_set(REAP_E_UNSUPPORTED, "regex: class intersection (&&) at "
                                  "offset %zu is not supported", i);
                goto fail;
            }
            class_start = 0;
            if (c == '^' && i > 0 && pat[i - 1] == '[')
                class_start = 1;    /* "[^]" : the ] is still literal */
            if (reap_strbuf_add(&b, &c, 1))
                goto nomem;
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            class_start = 1;
            if (reap_strbuf_add(&b, &c, 1))
                goto nomem;
            i++;
            continue;
        }
        if (c == '(' && i + 2 < n && pat[i + 1] == '?') {
            /* Option letters (?imx-imx) or (?imx-imx:...): Ruby's m is PCRE2's s. */
            j = i + 2;
            while (j < n && (pat[j] == 'i' || pat[j] == 'm' || pat[j] == 'x' ||
                             pat[j] == '-'))
                j++;
            if (j > i + 2 && j < n && (pat[j] == ')' || pat[j] == ':')) {
                if (reap_strbuf_add(&b, "(?", 2))
                    goto nomem;
                for (i += 2; i < j; i++)
                    if (reap_strbuf_add(&b, pat[i] == 'm' ? "s" : &pat[i], 1))
                        goto nomem;
                continue;
            }
        }
        if (reap_strbuf_add(&b, &c, 1))
            goto nomem;
        i++;
    }
    if (in_class) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "regex: unterminated character class");
        goto fail;
    }
    *out = b.p;
    return REAP_OK;

nomem:
    rc = reap_err_set(REAP_E_NOMEM, "out of memory translating a regex");
fail:
    reap_strbuf_free(&b);
    return rc;
}

/* Compile one variant into *code (newer as in tok_regex_translate). */
static int regex_compile_one(const char *pat, size_t n, int literal, int newer,
                             pcre2_code **code, int *jit)
{
    PCRE2_UCHAR msg[256];
    PCRE2_SIZE erroff;
    char *tr = NULL;
    int err, rc;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;

    if (literal) {
        opts = PCRE2_UTF | PCRE2_LITERAL;   /* the only options LITERAL allows here */
        *code = pcre2_compile((PCRE2_SPTR)pat, n, opts, &err, &erroff, NULL);
    } else {
        if ((rc = tok_regex_translate(pat, n, newer, &tr)))
            return rc;
        *code = pcre2_compile((PCRE2_SPTR)tr, PCRE2_ZERO_TERMINATED, opts, &err, &erroff,
                              NULL);
    }
    if (!*code) {
        pcre2_get_error_message(err, msg, sizeof msg);
        rc = reap_err_set(REAP_E_UNSUPPORTED, "regex \"%.*s\": PCRE2 cannot compile it "
                          "(offset %zu of %s): %s", (int)(n > 200 ? 200 : n), pat,
                          (size_t)erroff, literal ? "the string" : "the rewritten pattern",
                          (const char *)msg);
        free(tr);
        return rc;
    }
    free(tr);
    *jit = pcre2_jit_compile(*code, PCRE2_JIT_COMPLETE) == 0;
    return REAP_OK;
}

int tok_regex_compile(tok_regex *re, const char *pat, size_t n, int literal)
{
    char *a = NULL, *b = NULL;
    int rc, same;

    memset(re, 0, sizeof *re);
    if ((rc = regex_compile_one(pat, n, literal, 1, &re->code, &re->jit)))
        return rc;
    if (literal)
        return REAP_OK;
    /* A second, faster variant when the additions change the pattern at all. */
    if ((rc = tok_regex_translate(pat, n, 1, &a)) || (rc = tok_regex_translate(pat, n, 0, &b)))
        goto fail;
    same = !strcmp(a, b);
    if (!same && (rc = regex_compile_one(pat, n, 0, 0, &re->fast, &re->fast_jit)))
        goto fail;
    free(a);
    free(b);
    return REAP_OK;

fail:
    free(a);
    free(b);
    tok_regex_free(re);
    return rc;
}

void tok_regex_free(tok_regex *re)
{
    pcre2_code_free(re->code);
    pcre2_code_free(re->fast);
    memset(re, 0, sizeof *re);
}

/* Next match at or after off: 1 (with *ms, *me), 0 (none), or REAP_E_INTERNAL. */
static int regex_find(const pcre2_code *code, int jit, pcre2_match_data *md,
                      const uint8_t *s, size_t n, size_t off, size_t *ms, size_t *me)
{
    PCRE2_UCHAR msg[256];
    PCRE2_SIZE *ov;
    int rc;

    if (jit)
        rc = pcre2_jit_match(code, s, n, off, 0, md, NULL);
    else
        rc = pcre2_match(code, s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)   /* the interpreter keeps its frames on the heap */
        rc = pcre2_match(code, s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        pcre2_get_error_message(rc, msg, sizeof msg);
        return reap_err_set(REAP_E_INTERNAL, "regex match failed at byte %zu of %zu: %s",
                            off, n, (const char *)msg);
    }
    ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* The streaming fold of segments into pieces (see the file comment). */
typedef struct split_fold {
    tok_split_behavior b;
    const uint8_t *s;
    tok_span_fn fn;
    void *ctx;
    int has;                    /* a pending piece [ps, pe) */
    size_t ps, pe;
    int p_match;                /* pending piece is a (pure) match */
    int p_merged;               /* pending piece already merged (MergedWithNext) */
    int prev_match;             /* is_match of the previous segment */
} split_fold;

static int fold_flush(split_fold *f)
{
    if (!f->has)
        return 0;
    f->has = 0;
    return f->fn(f->ctx, f->s + f->ps, f->pe - f->ps);
}

static int fold_set(split_fold *f, size_t a, size_t e, int is_match)
{
    int rc = fold_flush(f);

    f->has = 1;
    f->ps = a;
    f->pe = e;
    f->p_match = is_match;
    f->p_merged = 0;
    return rc;
}

static int fold_segment(split_fold *f, size_t a, size_t e, int is_match)
{
    int rc = 0;

    switch (f->b) {
    case TOK_SPLIT_ISOLATED:
        rc = f->fn(f->ctx, f->s + a, e - a);
        break;
    case TOK_SPLIT_REMOVED:
        if (!is_match)
            rc = f->fn(f->ctx, f->s + a, e - a);
        break;
    case TOK_SPLIT_CONTIGUOUS:
        if (f->has && f->p_match == is_match)
            f->pe = e;
        else
            rc = fold_set(f, a, e, is_match);
        break;
    case TOK_SPLIT_MERGED_PREV:
        if (is_match && !f->prev_match && f->has)
            f->pe = e;
        else
            rc = fold_set(f, a, e, is_match);
        break;
    case TOK_SPLIT_MERGED_NEXT:
        if (f->has && f->p_match && !f->p_merged && !is_match) {
            f->pe = e;
            f->p_merged = 1;
        } else {
            rc = fold_set(f, a, e, is_match);
        }
        break;
    }
    f->prev_match = is_match;
    return rc;
}

int tok_regex_split(const tok_regex *re, pcre2_match_data *md, int fast,
                    tok_split_behavior b, int invert, const uint8_t *s, size_t n,
                    tok_span_fn fn, void *ctx)
{
    const pcre2_code *code = fast && re->fast ? re->fast : re->code;
    int jit = fast && re->fast ? re->fast_jit : re->jit;
    split_fold f;
    size_t off = 0, prev = 0, ms = 0, me = 0;
    int rc;

    if (n == 0)
        return 0;
    memset(&f, 0, sizeof f);
    f.b = b;
    f.s = s;
    f.fn = fn;
    f.ctx = ctx;
    invert = invert ? 1 : 0;
    while (off < n) {
        rc = regex_find(code, jit, md, s, n, off, &ms, &me);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
        if (me == ms) {                 /* empty match: step over one character */
            off = ms + 1;
            while (off < n && (s[off] & 0xC0) == 0x80)
                off++;
            continue;
        }
        if (ms > prev && (rc = fold_segment(&f, prev, ms, invert)))
            return rc;
        if ((rc = fold_segment(&f, ms, me, !invert)))
            return rc;
        prev = off = me;
    }
    if (prev < n && (rc = fold_segment(&f, prev, n, invert)))
        return rc;
    return fold_flush(&f);
}

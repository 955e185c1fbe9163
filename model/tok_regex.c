/* tok_regex.c - the Split pre-tokenizer: Oniguruma patterns run by PCRE2.
 *
 * tokenizers compiles Split patterns with Oniguruma (Ruby syntax, UTF-8). PCRE2 with
 * PCRE2_UTF | PCRE2_UCP reads the same syntax for everything these patterns use
 * (alternation, classes, \p{..}, (?i:..), look-around) with a few differences that
 * tok_regex_translate() rewrites:
 *   \s \S    Unicode White_Space (PCRE2 also counts U+180E) - an explicit class;
 *   \w \W    Alphabetic, marks, Nd, Pc, and the Latin-1 digits Oniguruma's byte table
 *            adds (superscripts 1-3, vulgar fractions); PCRE2 has all N, no marks;
 *   \h \H    a hexadecimal digit in Oniguruma (horizontal space in PCRE2);
 *   \uHHHH   a code point in Oniguruma (an error in PCRE2): \x{HHHH};
 *   (?m)     dot-all in Ruby syntax: (?s); ^ and $ always match at line breaks
 *            (PCRE2_MULTILINE).
 * Nested classes and class intersection (&&) are refused. The pattern is JIT-compiled
 * when PCRE2 has a JIT for the machine.
 *
 * Splitting follows tokenizers' NormalizedString::split: the matches and the gaps
 * between them form an ordered list of segments (is_match flags flipped by invert),
 * folded by the behaviour; tok_regex_split streams that fold, holding at most one
 * pending piece. Empty matches are skipped.
 */
#include "tok_impl.h"

#include "reap_err.h"

#include <stdio.h>
#include <stdlib.h>

const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Class bodies (without brackets). */
#define WS_SET "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
               "\\x{202F}\\x{205F}\\x{3000}"
#define WORD_SET "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}"
#define HEX_SET "0-9A-Fa-f"

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n)
{
    char *p;
    size_t ncap;

    if (n == 0 && b->p)
        return 0;
    if (b->n + n + 1 > b->cap) {
        ncap = b->cap ? b->cap * 2 : 256;
        while (ncap < b->n + n + 1)
            ncap *= 2;
        p = realloc(b->p, ncap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static int sb_str(strbuf *b, const char *s)
{
    return sb_add(b, s, strlen(s));
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int tok_regex_translate(const char *pat, size_t n, char **out)
{
    strbuf b = {0};
    size_t i = 0, j;
    int in_class = 0, class_start = 0, rc;
    const char *rep;
    char c;

    *out = NULL;
    if (sb_add(&b, "", 0))
        goto nomem;
    while (i < n) {
        c = pat[i];
        if (c == '\\' && i + 1 < n) {
            c = pat[i + 1];
            rep = NULL;
            switch (c) {
            case 's': rep = in_class ? WS_SET : "[" WS_SET "]"; break;
            case 'S': rep = in_class ? "\\S" : "[^" WS_SET "]"; break;
            case 'w': rep = in_class ? WORD_SET : "[" WORD_SET "]"; break;
            case 'h': rep = in_class ? HEX_SET : "[" HEX_SET "]"; break;
            case 'W':
            case 'H':
                if (in_class) {
                    rc = reap_err_set(REAP_E_UNSUPPORTED, "regex: \\%c inside a character "
                                      "class is not supported", c);
                    goto fail;
                }
                rep = c == 'W' ? "[^" WORD_SET "]" : "[^" HEX_SET "]";
                break;
            case 'u':
                if (i + 5 < n && is_hex(pat[i + 2]) && is_hex(pat[i + 3]) &&
                    is_hex(pat[i + 4]) && is_hex(pat[i + 5])) {
                    if (sb_add(&b, "\\x{", 3) || sb_add(&b, pat + i + 2, 4) ||
                        sb_add(&b, "}", 1))
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
                if (sb_str(&b, rep))
                    goto nomem;
                i += 2;
            } else {
                /* Copy the escape and its whole (possibly multi-byte) character. */
                j = i + 2;
                while (j < n && ((unsigned char)pat[j] & 0xC0) == 0x80)
                    j++;
                if (sb_add(&b, pat + i, j - i))
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
                if (sb_add(&b, pat + i, j - i))
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
            if (sb_add(&b, &c, 1))
                goto nomem;
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            class_start = 1;
            if (sb_add(&b, &c, 1))
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
                if (sb_add(&b, "(?", 2))
                    goto nomem;
                for (i += 2; i < j; i++)
                    if (sb_add(&b, pat[i] == 'm' ? "s" : &pat[i], 1))
                        goto nomem;
                continue;
            }
        }
        if (sb_add(&b, &c, 1))
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
    free(b.p);
    return rc;
}

int tok_regex_compile(tok_regex *re, const char *pat, size_t n, int literal)
{
    PCRE2_UCHAR msg[256];
    PCRE2_SIZE erroff;
    char *tr = NULL;
    int err, rc;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;

    memset(re, 0, sizeof *re);
    if (literal) {
        opts = PCRE2_UTF | PCRE2_LITERAL;   /* the only options LITERAL allows here */
        re->code = pcre2_compile((PCRE2_SPTR)pat, n, opts, &err, &erroff, NULL);
    } else {
        if ((rc = tok_regex_translate(pat, n, &tr)))
            return rc;
        re->code = pcre2_compile((PCRE2_SPTR)tr, PCRE2_ZERO_TERMINATED, opts, &err, &erroff,
                                 NULL);
    }
    if (!re->code) {
        pcre2_get_error_message(err, msg, sizeof msg);
        rc = reap_err_set(REAP_E_UNSUPPORTED, "regex \"%.*s\": PCRE2 cannot compile it "
                          "(offset %zu of %s): %s", (int)(n > 200 ? 200 : n), pat,
                          (size_t)erroff, literal ? "the string" : "the rewritten pattern",
                          (const char *)msg);
        free(tr);
        return rc;
    }
    free(tr);
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return REAP_OK;
}

void tok_regex_free(tok_regex *re)
{
    pcre2_code_free(re->code);
    memset(re, 0, sizeof *re);
}

/* Next match at or after off: 1 (with *ms, *me), 0 (none), or REAP_E_INTERNAL. */
static int regex_find(const tok_regex *re, pcre2_match_data *md, const uint8_t *s, size_t n,
                      size_t off, size_t *ms, size_t *me)
{
    PCRE2_UCHAR msg[256];
    PCRE2_SIZE *ov;
    int rc;

    if (re->jit)
        rc = pcre2_jit_match(re->code, s, n, off, 0, md, NULL);
    else
        rc = pcre2_match(re->code, s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)   /* the interpreter keeps its frames on the heap */
        rc = pcre2_match(re->code, s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
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

int tok_regex_split(const tok_regex *re, pcre2_match_data *md, tok_split_behavior b,
                    int invert, const uint8_t *s, size_t n, tok_span_fn fn, void *ctx)
{
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
        rc = regex_find(re, md, s, n, off, &ms, &me);
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

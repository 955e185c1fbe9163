/* tok_norm.c - UTF-8 validation and decoding, the character classes the added-token
 * matcher needs, and Unicode normalisation for the tokenizer.
 *
 * Normalisation runs utf8proc_map() once per normaliser of the sequence, on as little
 * text as possible:
 *   NFC   text is cut at "stable" code points: combining class 0, never the second
 *         character of a canonical composition (utf8proc's comb_index >= 0x8000, Hangul
 *         medial/final jamo), and unchanged by NFC on its own. Such a character neither
 *         reorders nor composes with what precedes it, so NFC(a b) = NFC(a) NFC(b) when
 *         b starts with one. Runs of stable characters are copied; only a run of
 *         unstable ones, together with the stable character before it, goes through
 *         utf8proc. Below U+0300 every code point is stable (UTF-8 bytes < 0xCC); the
 *         BMP is tabled once per tokenizer (8 KiB), other planes are asked on the fly.
 *         tokenizers' NFC (the unicode-normalization-alignments crate) has Unicode 9
 *         combining classes: the 108 combining marks added since (nfc_opaque_ranges)
 *         are starters to it and are never reordered or composed. They are copied as
 *         they are and cut the text on both sides, so utf8proc never sees them.
 *   other forms: ASCII text is left as it is; anything else goes through utf8proc in
 *         pieces cut at the same opaque marks and at the characters whose (mostly
 *         compatibility) decomposition tokenizers lacks (copied as they are).
 * Text that does not change is not copied (*out stays NULL).
 */
#include "tok_impl.h"

#include "reap_err.h"

#include <stdlib.h>
#include <utf8proc.h>

size_t tok_utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0, k, len;
    uint32_t c, min;

    while (i < n) {
        c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            c &= 0x1F;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            c &= 0x0F;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            c &= 0x07;
            min = 0x10000;
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

int32_t tok_utf8_next(const uint8_t *s, size_t n, size_t *i)
{
    uint32_t c = s[*i];
    size_t len, k;

    if (c < 0x80) {
        (*i)++;
        return (int32_t)c;
    }
    if (c < 0xE0) {
        len = 2;
        c &= 0x1F;
    } else if (c < 0xF0) {
        len = 3;
        c &= 0x0F;
    } else {
        len = 4;
        c &= 0x07;
    }
    for (k = 1; k < len && *i + k < n; k++)
        c = (c << 6) | (s[*i + k] & 0x3F);
    *i += len;
    return (int32_t)c;
}

int tok_is_white_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

int tok_is_word_char(int32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    /* Join_Control, and the Other_Alphabetic symbols (circled and squared letters). */
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
        (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* utf8proc_map with one normalisation form; *dst malloc'd. */
static int norm_map(int kind, const uint8_t *in, size_t n, uint8_t **dst, size_t *dst_n)
{
    utf8proc_uint8_t *p = NULL;
    utf8proc_ssize_t got;
    int flags = UTF8PROC_STABLE;

    switch (kind) {
    case TOK_NORM_NFC: flags |= UTF8PROC_COMPOSE; break;
    case TOK_NORM_NFD: flags |= UTF8PROC_DECOMPOSE; break;
    case TOK_NORM_NFKC: flags |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: flags |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    got = utf8proc_map(in, (utf8proc_ssize_t)n, &p, (utf8proc_option_t)flags);
    if (got < 0) {
        if (got == UTF8PROC_ERROR_NOMEM)
            return reap_err_set(REAP_E_NOMEM, "out of memory normalising %zu bytes", n);
        return reap_err_set(REAP_E_INTERNAL, "utf8proc: %s", utf8proc_errmsg(got));
    }
    *dst = p;
    *dst_n = (size_t)got;
    return REAP_OK;
}

/* Combining marks (combining class != 0 in utf8proc, Unicode 15) that tokenizers' NFC
 * treats as class 0: measured against tokenizers 0.23.3 (each mark next to U+05B0,
 * class 10: left in place means class 0 to it). Plus U+11930, the second half of the
 * only canonical composition (U+11938) it lacks. */
static const int32_t nfc_opaque_ranges[][2] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C},
    {0xD3B, 0xD3C}, {0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA},
    {0xA82C, 0xA82C}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x1193D, 0x1193E},
    {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

/* Characters whose decomposition tokenizers' NFKC/NFKD/NFD lacks (compatibility
 * decompositions added after Unicode 9, and U+11938): it leaves them as they are.
 * Measured against tokenizers 0.23.3: every code point that utf8proc's NFKC changes on
 * its own and tokenizers' does not. */
static const int32_t decomp_opaque_ranges[][2] = {
    {0x32FF, 0x32FF}, {0xA7F2, 0xA7F4}, {0xAB69, 0xAB69}, {0x10781, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x11938, 0x11938}, {0x1E030, 0x1E06D},
    {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

static int in_ranges(const int32_t (*r)[2], size_t n, int32_t c)
{
    size_t lo = 0, hi = n, mid;

    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int nfc_opaque(int32_t c)
{
    return in_ranges(nfc_opaque_ranges, sizeof nfc_opaque_ranges / sizeof nfc_opaque_ranges[0],
                     c);
}

/* Opaque for the other forms: the NFC ones plus the missing decompositions. */
static int decomp_opaque(int32_t c)
{
    return nfc_opaque(c) ||
           in_ranges(decomp_opaque_ranges,
                     sizeof decomp_opaque_ranges / sizeof decomp_opaque_ranges[0], c);
}

/* See the file comment. Asks utf8proc (slow for characters with a canonical
 * decomposition: those are normalised on their own to check). */
static int nfc_stable_slow(int32_t c)
{
    const utf8proc_property_t *p = utf8proc_get_property(c);
    uint8_t buf[4], *d = NULL;
    size_t n = 0, dn = 0;
    int same;

    if (c < 0x300)
        return 1;
    if (p->combining_class != 0 || (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000))
        return 0;
    if ((c >= 0x1161 && c <= 0x1175) || (c >= 0x11A8 && c <= 0x11C2))
        return 0;                       /* Hangul V and T jamo compose algorithmically */
    if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0)
        return 1;                       /* no canonical decomposition */
    n = (size_t)utf8proc_encode_char(c, buf);
    if (norm_map(TOK_NORM_NFC, buf, n, &d, &dn) != REAP_OK) {
        reap_err_clear();
        return 0;
    }
    same = dn == n && memcmp(d, buf, n) == 0;
    free(d);
    return same;
}

int tok_norm_init(tok_norm *nm)
{
    int k, c;

    for (k = 0; k < nm->n; k++)
        if (nm->kind[k] == TOK_NORM_NFC)
            break;
    if (k == nm->n || nm->nfc_stable)
        return REAP_OK;
    nm->nfc_stable = calloc(0x10000 / 8, 1);
    if (!nm->nfc_stable)
        return reap_err_set(REAP_E_NOMEM, "out of memory for the NFC table");
    for (c = 0; c < 0x10000; c++)
        if ((c < 0xD800 || c > 0xDFFF) && nfc_stable_slow(c))
            nm->nfc_stable[c >> 3] |= (uint8_t)(1u << (c & 7));
    return REAP_OK;
}

void tok_norm_free(tok_norm *nm)
{
    free(nm->nfc_stable);
    nm->nfc_stable = NULL;
}

static int nfc_stable(const tok_norm *nm, int32_t c)
{
    if (c < 0x300)
        return 1;
    if (c < 0x10000 && nm->nfc_stable)
        return (nm->nfc_stable[c >> 3] >> (c & 7)) & 1;
    return nfc_stable_slow(c);
}

typedef struct bytebuf {
    uint8_t *p;
    size_t n, cap;
} bytebuf;

static int bb_add(bytebuf *b, const uint8_t *s, size_t n)
{
    uint8_t *p;
    size_t ncap;

    if (n == 0)
        return REAP_OK;
    if (b->n + n > b->cap) {
        ncap = b->cap ? b->cap * 2 : 256;
        while (ncap < b->n + n)
            ncap *= 2;
        p = realloc(b->p, ncap);
        if (!p)
            return reap_err_set(REAP_E_NOMEM, "out of memory normalising text");
        b->p = p;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return REAP_OK;
}

/* NFC of s[0..n): see the file comment. *out NULL when s is already NFC. */
static int nfc_apply(const tok_norm *nm, const uint8_t *s, size_t n, uint8_t **out,
                     size_t *out_n)
{
    bytebuf b = {0};
    size_t i = 0, j, boundary = 0, copied = 0, dn;
    uint8_t *d;
    int32_t c;
    int rc, changed = 0;

    while (i < n) {
        if (s[i] < 0xCC) {              /* below U+0300 (or a continuation byte) */
            if ((s[i] & 0xC0) != 0x80)
                boundary = i;
            i++;
            continue;
        }
        j = i;
        c = tok_utf8_next(s, n, &j);
        if (nfc_stable(nm, c)) {
            boundary = i;
            i = j;
            continue;
        }
        if (nfc_opaque(c)) {
            boundary = j;               /* a run may start after it, never at it */
            i = j;
            continue;
        }
        /* An unstable run: up to the next stable or opaque character. */
        while (j < n) {
            size_t k = j;
            if (s[k] < 0xCC)
                break;
            c = tok_utf8_next(s, n, &k);
            if (nfc_stable(nm, c) || nfc_opaque(c))
                break;
            j = k;
        }
        if ((rc = norm_map(TOK_NORM_NFC, s + boundary, j - boundary, &d, &dn)))
            goto fail;
        if (dn != j - boundary || memcmp(d, s + boundary, dn) != 0) {
            if ((rc = bb_add(&b, s + copied, boundary - copied)) ||
                (rc = bb_add(&b, d, dn))) {
                free(d);
                goto fail;
            }
            copied = j;
            changed = 1;
        }
        free(d);
        i = j;
    }
    if (changed) {
        if ((rc = bb_add(&b, s + copied, n - copied)))
            goto fail;
        *out = b.p;
        *out_n = b.n;
    }
    return REAP_OK;

fail:
    free(b.p);
    return rc;
}

/* NFD, NFKC or NFKD of s[0..n): utf8proc on the pieces between opaque marks. *out is
 * always set (malloc'd) on success. */
static int norm_map_cut(int kind, const uint8_t *s, size_t n, uint8_t **out, size_t *out_n)
{
    bytebuf b = {0};
    size_t i = 0, j, start = 0, dn;
    uint8_t *d;
    int rc;

    while (1) {
        /* Find the next opaque mark (or the end). */
        for (j = i; i < n; i = j) {
            j = i;
            if (s[i] >= 0xCC && decomp_opaque(tok_utf8_next(s, n, &j)))
                break;
            if (j == i)
                j = i + 1;
        }
        if (i > start) {
            if ((rc = norm_map(kind, s + start, i - start, &d, &dn)))
                goto fail;
            rc = bb_add(&b, d, dn);
            free(d);
            if (rc)
                goto fail;
        }
        if (i >= n)
            break;
        if ((rc = bb_add(&b, s + i, j - i)))    /* the opaque mark as it is */
            goto fail;
        start = i = j;
    }
    if (!b.p && !(b.p = malloc(1))) {
        rc = reap_err_set(REAP_E_NOMEM, "out of memory normalising text");
        goto fail;
    }
    *out = b.p;
    *out_n = b.n;
    return REAP_OK;

fail:
    free(b.p);
    return rc;
}

int tok_norm_apply(const tok_norm *nm, const uint8_t *s, size_t n, uint8_t **out,
                   size_t *out_n)
{
    uint8_t *cur = NULL, *d = NULL;     /* cur: owned result so far, NULL: still s */
    size_t cur_n = n, dn = 0, i;
    int k, rc, ascii;

    *out = NULL;
    *out_n = 0;
    for (k = 0; k < nm->n && cur_n > 0; k++) {
        const uint8_t *in = cur ? cur : s;
        if (nm->kind[k] == TOK_NORM_NFC) {
            rc = nfc_apply(nm, in, cur_n, &d, &dn);
        } else {
            for (ascii = 1, i = 0; ascii && i < cur_n; i++)
                ascii = in[i] < 0x80;
            if (ascii)
                continue;
            rc = norm_map_cut(nm->kind[k], in, cur_n, &d, &dn);
        }
        if (rc) {
            free(cur);
            return rc;
        }
        if (!d)
            continue;                   /* unchanged */
        free(cur);
        cur = d;
        cur_n = dn;
        d = NULL;
    }
    if (cur) {
        if (cur_n == n && memcmp(cur, s, n) == 0) {
            free(cur);                  /* unchanged after all */
            return REAP_OK;
        }
        *out = cur;
        *out_n = cur_n;
    }
    return REAP_OK;
}

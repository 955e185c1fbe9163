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
 *   other forms: ASCII text is left as it is; anything else goes through utf8proc whole.
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
    int rc, changed = 0;

    while (i < n) {
        if (s[i] < 0xCC) {              /* below U+0300 (or a continuation byte) */
            if ((s[i] & 0xC0) != 0x80)
                boundary = i;
            i++;
            continue;
        }
        j = i;
        if (nfc_stable(nm, tok_utf8_next(s, n, &j))) {
            boundary = i;
            i = j;
            continue;
        }
        /* An unstable run: up to the next stable character. */
        while (j < n) {
            size_t k = j;
            if (s[k] < 0xCC || nfc_stable(nm, tok_utf8_next(s, n, &k)))
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
            rc = norm_map(nm->kind[k], in, cur_n, &d, &dn);
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

/* tok_added.c - matching added tokens (<|im_start|>, ...) literally in text.
 *
 * The patterns live in a byte trie (root children indexed by byte, deeper levels as
 * sibling lists: added-token sets are small). Matches are found as tokenizers'
 * leftmost-longest Aho-Corasick finds them: the earliest start position at which some
 * pattern matches, the longest pattern there, then the search resumes at its end.
 * A match is then filtered and widened as AddedVocabulary::find_matches does:
 *   single_word  dropped unless the text before it does not end with a word character
 *                and the text after it does not start with one (the search still
 *                resumes after the dropped match);
 *   lstrip       widened left over White_Space, but not into the previous piece;
 *   rstrip       widened right over White_Space.
 */
#include "tok_impl.h"

#include "reap_err.h"

#include <stdlib.h>

void tok_trie_init(tok_trie *t)
{
    int i;

    memset(t, 0, sizeof *t);
    for (i = 0; i < 256; i++)
        t->root[i] = -1;
    t->empty = 1;
}

void tok_trie_free(tok_trie *t)
{
    free(t->nodes);
    tok_trie_init(t);
}

static int32_t trie_new_node(tok_trie *t, uint8_t byte)
{
    tok_trie_node *nodes;
    int32_t ncap;

    if (t->n == t->cap) {
        ncap = t->cap ? t->cap * 2 : 64;
        nodes = realloc(t->nodes, (size_t)ncap * sizeof *nodes);
        if (!nodes)
            return -1;
        t->nodes = nodes;
        t->cap = ncap;
    }
    t->nodes[t->n].child = -1;
    t->nodes[t->n].sibling = -1;
    t->nodes[t->n].value = -1;
    t->nodes[t->n].byte = byte;
    return t->n++;
}

int tok_trie_insert(tok_trie *t, const uint8_t *s, size_t n, int32_t value)
{
    int32_t node, c;
    size_t i;

    if (n == 0)
        return REAP_OK;     /* tokenizers ignores empty added tokens */
    node = t->root[s[0]];
    if (node < 0) {
        node = trie_new_node(t, s[0]);
        if (node < 0)
            return reap_err_set(REAP_E_NOMEM, "out of memory for added tokens");
        t->root[s[0]] = node;
    }
    for (i = 1; i < n; i++) {
        for (c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling)
            if (t->nodes[c].byte == s[i])
                break;
        if (c < 0) {
            c = trie_new_node(t, s[i]);
            if (c < 0)
                return reap_err_set(REAP_E_NOMEM, "out of memory for added tokens");
            t->nodes[c].sibling = t->nodes[node].child;
            t->nodes[node].child = c;
        }
        node = c;
    }
    /* The same pattern twice: the later token wins, as a map insert would. */
    t->nodes[node].value = value;
    t->empty = 0;
    return REAP_OK;
}

/* The longest pattern starting at s[i], as its end (0 if none) and value. */
static size_t trie_longest_at(const tok_trie *t, const uint8_t *s, size_t n, size_t i,
                              int32_t *value)
{
    int32_t node = t->root[s[i]], c;
    size_t j = i + 1, end = 0;

    while (node >= 0) {
        if (t->nodes[node].value >= 0) {
            end = j;
            *value = t->nodes[node].value;
        }
        if (j == n)
            break;
        for (c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling)
            if (t->nodes[c].byte == s[j])
                break;
        node = c;
        j++;
    }
    return end;
}

/* 1 if s[0..n) ends with a word character. */
static int ends_with_word(const uint8_t *s, size_t n)
{
    size_t i;

    if (n == 0)
        return 0;
    i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80)
        i--;
    return tok_is_word_char(tok_utf8_next(s, n, &i));
}

static int starts_with_word(const uint8_t *s, size_t n)
{
    size_t i = 0;

    return n > 0 && tok_is_word_char(tok_utf8_next(s, n, &i));
}

/* Start of the White_Space run that ends at s[n]. */
static size_t space_run_start(const uint8_t *s, size_t n)
{
    size_t i = n, j, k;

    while (i > 0) {
        j = i - 1;
        while (j > 0 && (s[j] & 0xC0) == 0x80)
            j--;
        k = j;
        if (!tok_is_white_space(tok_utf8_next(s, n, &k)))
            break;
        i = j;
    }
    return i;
}

/* Length of the White_Space run at the start of s[0..n). */
static size_t space_run_len(const uint8_t *s, size_t n)
{
    size_t i = 0, j;

    while (i < n) {
        j = i;
        if (!tok_is_white_space(tok_utf8_next(s, n, &j)))
            break;
        i = j;
    }
    return i;
}

int tok_added_split(const tok_added *added, const tok_trie *trie, const uint8_t *s,
                    size_t n, tok_piece_fn fn, void *ctx)
{
    size_t pos = 0, prev = 0, start, stop, end;
    int32_t value = -1;
    const tok_added *a;
    int rc;

    if (trie->empty || n == 0)
        return fn(ctx, s, n, -1);
    while (pos < n) {
        if (trie->root[s[pos]] < 0 ||
            (end = trie_longest_at(trie, s, n, pos, &value)) == 0) {
            pos++;
            continue;
        }
        start = pos;
        stop = end;
        pos = end;                      /* the search resumes after this match */
        a = &added[value];
        if (a->single_word && ((start > 0 && ends_with_word(s, start)) ||
                               (stop < n && starts_with_word(s + stop, n - stop))))
            continue;
        if (a->lstrip) {
            start = space_run_start(s, start);
            if (start < prev)
                start = prev;
        }
        if (a->rstrip)
            stop += space_run_len(s + stop, n - stop);
        if (prev < start && (rc = fn(ctx, s + prev, start - prev, -1)))
            return rc;
        if ((rc = fn(ctx, s + start, stop - start, a->id)))
            return rc;
        prev = stop;
        if (pos < stop)
            pos = stop;
    }
    if (prev < n)
        return fn(ctx, s + prev, n - prev, -1);
    return 0;
}

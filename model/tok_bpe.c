/* tok_bpe.c - byte-level BPE: the vocabulary and merge tables and the merge loop.
 *
 * Byte-level alphabet (GPT-2): the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF
 * stand for themselves as code points; the other 68 bytes (0x00..0x20, 0x7F..0xA0,
 * 0xAD), in increasing order, are U+0100, U+0101, ... At load time every vocabulary
 * string is decoded back to bytes, so the merge loop works on the text's own bytes;
 * entries with characters outside the alphabet can never be produced and are left out.
 *
 * Tables (open addressing, linear probing, power-of-two sizes at most half full):
 *   vocabulary  byte string -> id
 *   merges      (left id, right id) -> (rank, merged id)
 *
 * Merge loop (as tokenizers' Word::merge_all): one symbol per byte in a doubly linked
 * list; a binary min-heap holds candidate merges ordered by (rank, position). Pop the
 * best; skip it if its left symbol was absorbed or the pair at that position no longer
 * merges into the same token; else merge and push the new pairs with the left and right
 * neighbours. Lowest rank first, leftmost first among equal ranks. Words of up to
 * SHORT_WORD bytes (nearly all) take a simpler loop with the same result: pair ranks in
 * an array, the best found by a linear scan.
 *
 * Cache: words of up to CACHE_MAX_WORD bytes map to their ids; the cache is emptied
 * when its slots or arenas fill. The caller serialises access (tok_bpe.cache_lock).
 */
#include "tok_impl.h"

#include "reap_err.h"

#include <stdlib.h>

/* ---- token id arrays (tok_impl.h; also used by tokenizer.c) ---------------------- */

int tok_ids_append(tok_ids *a, const int32_t *ids, size_t n)
{
    int32_t *v;
    size_t ncap;

    if (n == 0)
        return REAP_OK;
    if (a->n + n > a->cap) {
        ncap = a->cap ? a->cap * 2 : 256;
        while (ncap < a->n + n)
            ncap *= 2;
        v = realloc(a->v, ncap * sizeof *v);
        if (!v)
            return reap_err_set(REAP_E_NOMEM, "out of memory for %zu token ids", a->n + n);
        a->v = v;
        a->cap = ncap;
    }
    memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
    return REAP_OK;
}

#define CACHE_MAX_WORD 64
#define SHORT_WORD 48           /* longer words use the heap loop */
#define CACHE_SLOTS (1u << 17)
#define CACHE_MAX_COUNT (1u << 16)
#define CACHE_KEYS (2u << 20)
#define CACHE_IDS (1u << 19)

typedef struct bpe_sym {
    int32_t id;
    int32_t prev, next;         /* -1: none */
    uint32_t len;               /* bytes; 0: absorbed into its left neighbour */
} bpe_sym;

typedef struct bpe_cand {
    uint32_t rank;
    uint32_t pos;               /* index of the left symbol */
    int32_t id;                 /* token the pair merges into */
} bpe_cand;

/* ---- byte-level alphabet ------------------------------------------------------------ */

/* The byte a code point of the alphabet stands for, or -1. */
static int alphabet_byte(int32_t c)
{
    if ((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return c;
    if (c >= 256 && c < 256 + 33)
        return c - 256;                 /* 0x00..0x20 */
    if (c >= 289 && c < 289 + 34)
        return 0x7F + (c - 289);        /* 0x7F..0xA0 */
    if (c == 323)
        return 0xAD;
    return -1;
}

long tok_bytelevel_decode(const char *s, size_t n, uint8_t *out)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    long k = 0;
    int b;

    if (tok_utf8_invalid_at(u, n) != n)
        return -1;
    while (i < n) {
        b = alphabet_byte(tok_utf8_next(u, n, &i));
        if (b < 0)
            return -1;
        out[k++] = (uint8_t)b;
    }
    return k;
}

/* ---- tables ------------------------------------------------------------------------- */

static uint32_t pow2_at_least(size_t n)
{
    uint32_t p = 16;

    while (p < n && p < (1u << 31))
        p <<= 1;
    return p;
}

static inline uint64_t merge_hash(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}

int tok_bpe_init(tok_bpe *b, size_t n_vocab, size_t n_merges)
{
    uint32_t i;

    memset(b, 0, sizeof *b);
    b->max_id = -1;
    for (i = 0; i < 256; i++)
        b->byte_id[i] = -1;
    b->vmask = pow2_at_least(2 * n_vocab + 1) - 1;
    b->mmask = pow2_at_least(2 * n_merges + 1) - 1;
    b->vslots = malloc(((size_t)b->vmask + 1) * sizeof *b->vslots);
    b->mslots = malloc(((size_t)b->mmask + 1) * sizeof *b->mslots);
    if (!b->vslots || !b->mslots) {
        tok_bpe_free(b);
        return reap_err_set(REAP_E_NOMEM, "out of memory for %zu vocabulary entries and "
                            "%zu merges", n_vocab, n_merges);
    }
    for (i = 0; i <= b->vmask; i++)
        b->vslots[i].id = -1;
    for (i = 0; i <= b->mmask; i++)
        b->mslots[i].key = UINT64_MAX;
    if (pthread_mutex_init(&b->cache_lock, NULL) != 0) {
        tok_bpe_free(b);
        return reap_err_set(REAP_E_INTERNAL, "cannot create the tokenizer cache lock");
    }
    b->lock_init = 1;
    return REAP_OK;
}

static void cache_free(tok_cache *c)
{
    free(c->slots);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

void tok_bpe_free(tok_bpe *b)
{
    free(b->keys);
    free(b->vslots);
    free(b->mslots);
    cache_free(&b->cache);
    if (b->lock_init)
        pthread_mutex_destroy(&b->cache_lock);
    memset(b, 0, sizeof *b);
}

int32_t tok_bpe_vocab_get(const tok_bpe *b, const uint8_t *key, size_t n)
{
    uint32_t i = (uint32_t)tok_hash(key, n) & b->vmask;
    const tok_vocab_slot *sl;

    for (;; i = (i + 1) & b->vmask) {
        sl = &b->vslots[i];
        if (sl->id < 0)
            return -1;
        if (sl->len == n && memcmp(b->keys + sl->off, key, n) == 0)
            return sl->id;
    }
}

int tok_bpe_vocab_add(tok_bpe *b, const uint8_t *key, size_t n, int32_t id)
{
    uint32_t i;
    uint8_t *keys;
    size_t ncap;

    if (b->n_vocab >= b->vmask / 2)
        return reap_err_set(REAP_E_INTERNAL, "vocabulary table full");
    if (tok_bpe_vocab_get(b, key, n) >= 0)
        return reap_err_set(REAP_E_FORMAT, "two vocabulary entries for the same bytes "
                            "(id %d)", id);
    if (!b->keys || b->keys_len + n > b->keys_cap) {   /* allocated for "" too */
        ncap = b->keys_cap ? b->keys_cap * 2 : 1 << 20;
        while (ncap < b->keys_len + n)
            ncap *= 2;
        keys = realloc(b->keys, ncap);
        if (!keys)
            return reap_err_set(REAP_E_NOMEM, "out of memory for the vocabulary");
        b->keys = keys;
        b->keys_cap = ncap;
    }
    memcpy(b->keys + b->keys_len, key, n);
    for (i = (uint32_t)tok_hash(key, n) & b->vmask; b->vslots[i].id >= 0;
         i = (i + 1) & b->vmask)
        ;
    b->vslots[i].off = (uint32_t)b->keys_len;
    b->vslots[i].len = (uint32_t)n;
    b->vslots[i].id = id;
    b->keys_len += n;
    b->n_vocab++;
    if (id > b->max_id)
        b->max_id = id;
    return REAP_OK;
}

static inline const tok_merge_slot *merge_get(const tok_bpe *b, int32_t left, int32_t right)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint32_t i = (uint32_t)(merge_hash(key) >> 32) & b->mmask;

    for (;; i = (i + 1) & b->mmask) {
        if (b->mslots[i].key == key)
            return &b->mslots[i];
        if (b->mslots[i].key == UINT64_MAX)
            return NULL;
    }
}

int tok_bpe_merge_add(tok_bpe *b, int32_t left, int32_t right, int32_t id, uint32_t rank)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint32_t i = (uint32_t)(merge_hash(key) >> 32) & b->mmask;

    for (;; i = (i + 1) & b->mmask) {
        if (b->mslots[i].key == key)
            break;                      /* repeated pair: the later rank wins */
        if (b->mslots[i].key == UINT64_MAX) {
            if (b->n_merges >= b->mmask / 2)
                return reap_err_set(REAP_E_INTERNAL, "merge table full");
            b->n_merges++;
            break;
        }
    }
    b->mslots[i].key = key;
    b->mslots[i].rank = rank;
    b->mslots[i].id = id;
    return REAP_OK;
}

int tok_bpe_finish(tok_bpe *b)
{
    uint8_t byte;
    int i;

    for (i = 0; i < 256; i++) {
        byte = (uint8_t)i;
        b->byte_id[i] = tok_bpe_vocab_get(b, &byte, 1);
        if (b->byte_id[i] < 0)
            return reap_err_set(REAP_E_UNSUPPORTED, "the vocabulary has no token for byte "
                                "0x%02X: not a complete byte-level BPE vocabulary", i);
    }
    return REAP_OK;
}

/* ---- cache -------------------------------------------------------------------------- */

static void cache_clear(tok_cache *c)
{
    memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
    c->count = 0;
    c->keys_used = 0;
    c->ids_used = 0;
}

/* The slot of word w: its entry, or the empty slot where it would go. */
static tok_cache_slot *cache_slot(tok_cache *c, uint64_t h, const uint8_t *w, size_t n)
{
    uint32_t i = (uint32_t)h & c->mask;
    tok_cache_slot *sl;

    for (;; i = (i + 1) & c->mask) {
        sl = &c->slots[i];
        if (sl->hash == 0 ||
            (sl->hash == h && sl->key_len == n && memcmp(c->keys + sl->key_off, w, n) == 0))
            return sl;
    }
}

/* Remember w -> ids[0..k). Failure to allocate only disables the cache. */
static void cache_put(tok_cache *c, uint64_t h, const uint8_t *w, size_t n,
                      const int32_t *ids, size_t k)
{
    tok_cache_slot *sl;

    if (!c->slots) {
        c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
        c->keys = malloc(CACHE_KEYS);
        c->ids = malloc(CACHE_IDS * sizeof *c->ids);
        if (!c->slots || !c->keys || !c->ids) {
            cache_free(c);
            return;
        }
        c->mask = CACHE_SLOTS - 1;
        c->keys_cap = CACHE_KEYS;
        c->ids_cap = CACHE_IDS;
    }
    if (c->count >= CACHE_MAX_COUNT || c->keys_used + n > c->keys_cap ||
        c->ids_used + k > c->ids_cap)
        cache_clear(c);
    sl = cache_slot(c, h, w, n);
    if (sl->hash)
        return;
    sl->hash = h;
    sl->key_off = (uint32_t)c->keys_used;
    sl->key_len = (uint16_t)n;
    sl->ids_off = (uint32_t)c->ids_used;
    sl->n_ids = (uint16_t)k;
    memcpy(c->keys + c->keys_used, w, n);
    memcpy(c->ids + c->ids_used, ids, k * sizeof *ids);
    c->keys_used += n;
    c->ids_used += k;
    c->count++;
}

/* ---- merge loop --------------------------------------------------------------------- */

static inline int cand_less(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c)
{
    size_t i = (*n)++, p;

    while (i > 0) {
        p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n)
{
    bpe_cand top = h[0], last = h[--(*n)];
    size_t i = 0, c;

    while ((c = 2 * i + 1) < *n) {
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
            c++;
        if (!cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static int scratch_reserve(tok_bpe_scratch *s, size_t n)
{
    void *p;

    if (n > s->sym_cap) {
        p = realloc(s->sym, n * sizeof(bpe_sym));
        if (!p)
            return -1;
        s->sym = p;
        s->sym_cap = n;
    }
    /* n - 1 initial pairs, at most two new candidates per merge (n - 1 merges). */
    if (3 * n > s->heap_cap) {
        p = realloc(s->heap, 3 * n * sizeof(bpe_cand));
        if (!p)
            return -1;
        s->heap = p;
        s->heap_cap = 3 * n;
    }
    return 0;
}

void tok_bpe_scratch_free(tok_bpe_scratch *s)
{
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static inline void push_pair(const tok_bpe *b, bpe_cand *heap, size_t *nh, const bpe_sym *sym,
                             int32_t pos)
{
    const tok_merge_slot *m = merge_get(b, sym[pos].id, sym[sym[pos].next].id);
    bpe_cand c;

    if (m) {
        c.rank = m->rank;
        c.pos = (uint32_t)pos;
        c.id = m->id;
        heap_push(heap, nh, c);
    }
}

/* The merge loop for short words: symbols in plain arrays, the rank of each adjacent
 * pair kept next to it, the best pair found by a linear scan (no heap, no stale
 * entries: one table lookup per new pair). Same result as the heap loop. */
static int bpe_word_short(const tok_bpe *b, const uint8_t *w, size_t n, tok_ids *out)
{
    int32_t ids[SHORT_WORD], nid[SHORT_WORD];
    uint32_t rank[SHORT_WORD];
    const tok_merge_slot *m;
    size_t i, k, best;
    uint32_t r;

    for (i = 0; i < n; i++)
        ids[i] = b->byte_id[w[i]];
    for (i = 0; i + 1 < n; i++) {
        m = merge_get(b, ids[i], ids[i + 1]);
        rank[i] = m ? m->rank : UINT32_MAX;
        nid[i] = m ? m->id : -1;
    }
    while (n > 1) {
        best = 0;
        r = rank[0];
        for (i = 1; i + 1 < n; i++) {
            if (rank[i] < r) {
                r = rank[i];
                best = i;
            }
        }
        if (r == UINT32_MAX)
            break;
        ids[best] = nid[best];
        for (k = best + 1; k + 1 < n; k++) {      /* drop symbol best + 1 */
            ids[k] = ids[k + 1];
            rank[k] = rank[k + 1];
            nid[k] = nid[k + 1];
        }
        n--;
        if (best > 0) {
            m = merge_get(b, ids[best - 1], ids[best]);
            rank[best - 1] = m ? m->rank : UINT32_MAX;
            nid[best - 1] = m ? m->id : -1;
        }
        if (best + 1 < n) {
            m = merge_get(b, ids[best], ids[best + 1]);
            rank[best] = m ? m->rank : UINT32_MAX;
            nid[best] = m ? m->id : -1;
        }
    }
    return tok_ids_append(out, ids, n);
}

int tok_bpe_word_heap(const tok_bpe *b, tok_bpe_scratch *s, const uint8_t *w, size_t n,
                      tok_ids *out)
{
    const tok_merge_slot *m;
    bpe_sym *sym;
    bpe_cand *heap, top;
    size_t nh = 0, i;
    int32_t nx;
    int rc;

    if (n == 0)
        return REAP_OK;
    if (n > INT32_MAX / 4 || scratch_reserve(s, n))
        return reap_err_set(REAP_E_NOMEM, "out of memory for a %zu-byte word", n);
    sym = s->sym;
    heap = s->heap;
    for (i = 0; i < n; i++) {
        sym[i].id = b->byte_id[w[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        sym[i].len = 1;
    }
    for (i = 0; i + 1 < n; i++)
        push_pair(b, heap, &nh, sym, (int32_t)i);
    while (nh > 0) {
        top = heap_pop(heap, &nh);
        if (sym[top.pos].len == 0 || (nx = sym[top.pos].next) < 0)
            continue;
        m = merge_get(b, sym[top.pos].id, sym[nx].id);
        if (!m || m->id != top.id)
            continue;                   /* stale candidate */
        sym[top.pos].id = top.id;
        sym[top.pos].len += sym[nx].len;
        sym[top.pos].next = sym[nx].next;
        sym[nx].len = 0;
        if (sym[nx].next >= 0)
            sym[sym[nx].next].prev = (int32_t)top.pos;
        if (sym[top.pos].prev >= 0)
            push_pair(b, heap, &nh, sym, sym[top.pos].prev);
        if (sym[top.pos].next >= 0)
            push_pair(b, heap, &nh, sym, (int32_t)top.pos);
    }
    for (i = 0;; i = (size_t)sym[i].next) {
        if ((rc = tok_ids_push(out, sym[i].id)))
            return rc;
        if (sym[i].next < 0)
            break;
    }
    return REAP_OK;
}

int tok_bpe_word(const tok_bpe *b, tok_cache *cache, tok_bpe_scratch *s, const uint8_t *w,
                 size_t n, tok_ids *out)
{
    tok_cache_slot *sl;
    size_t start = out->n;
    uint64_t h = 0;
    int32_t id;
    int rc;

    if (n == 1)
        return tok_ids_push(out, b->byte_id[w[0]]);
    if (b->ignore_merges && (id = tok_bpe_vocab_get(b, w, n)) >= 0)
        return tok_ids_push(out, id);
    if (cache && n <= CACHE_MAX_WORD) {
        h = tok_hash(w, n) | 1;
        if (cache->slots) {
            sl = cache_slot(cache, h, w, n);
            if (sl->hash)
                return tok_ids_append(out, cache->ids + sl->ids_off, sl->n_ids);
        }
    }
    if (n <= SHORT_WORD)
        rc = bpe_word_short(b, w, n, out);
    else
        rc = tok_bpe_word_heap(b, s, w, n, out);
    if (rc)
        return rc;
    if (h)
        cache_put(cache, h, w, n, out->v + start, out->n - start);
    return REAP_OK;
}

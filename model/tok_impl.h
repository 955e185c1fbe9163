/* tok_impl.h - internals of the tokenizer (tokenizer.h), shared by model/tok_*.c.
 *
 *   tok_bpe.c    byte-level alphabet, vocabulary and merge tables, the BPE merge loop,
 *                the per-word cache, token id arrays (tok_ids_append)
 *   tok_added.c  added-token matching (a byte trie; leftmost-longest; lstrip, rstrip,
 *                single_word)
 *   tok_regex.c  Oniguruma-to-PCRE2 pattern rewriting, compiling, split behaviours
 *   tok_norm.c   UTF-8 validation and Unicode normalisation (utf8proc)
 *   tokenizer.c  tokenizer.json loading and the encode pipeline
 *
 * Every byte string here is raw UTF-8 bytes (never the byte-level "Ġ" alphabet: the
 * vocabulary is decoded to bytes at load time, so BPE runs on the text's bytes).
 */
#ifndef REAP_TOK_IMPL_H
#define REAP_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- small helpers ----------------------------------------------------------------- */

/* A growable array of token ids. */
typedef struct tok_ids {
    int32_t *v;         /* [cap], n used */
    size_t n, cap;
} tok_ids;

/* Append n ids; REAP_OK or REAP_E_NOMEM (message set). */
int tok_ids_append(tok_ids *a, const int32_t *ids, size_t n);

static inline int tok_ids_push(tok_ids *a, int32_t id)
{
    if (a->n < a->cap) {
        a->v[a->n++] = id;
        return 0;
    }
    return tok_ids_append(a, &id, 1);
}

/* 64-bit hash of a byte string (p never NULL, also when n is 0; not cryptographic; never
 * 0 after `| 1`). */
static inline uint64_t tok_hash(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n, v;

    while (n >= 8) {
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h;
}

/* ---- UTF-8 and normalisation (tok_norm.c) ------------------------------------------ */

/* Offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
 * surrogates and code points above U+10FFFF are invalid), or n if all of s is valid. */
size_t tok_utf8_invalid_at(const uint8_t *s, size_t n);

/* Decode the code point at s[*i] (s valid UTF-8, *i < n) and advance *i past it. */
int32_t tok_utf8_next(const uint8_t *s, size_t n, size_t *i);

/* Unicode White_Space (Oniguruma's \s, Rust regex's \s). */
int tok_is_white_space(int32_t c);

/* Rust regex's Unicode \w: letters, marks, decimal digits, letter numbers, connector
 * punctuation, ZWNJ/ZWJ. */
int tok_is_word_char(int32_t c);

enum { TOK_NORM_NFC = 1, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD };
#define TOK_MAX_NORM 8

typedef struct tok_norm {
    int n;                      /* 0: no normaliser */
    int kind[TOK_MAX_NORM];     /* TOK_NORM_*, applied in order */
    uint8_t *nfc_stable;        /* [0x10000 / 8] bit per BMP code point: NFC leaves it and
                                   its neighbours' boundary alone (see tok_norm.c);
                                   NULL until tok_norm_init */
} tok_norm;

/* Prepare the tables of the normalisers listed in nm (call after filling kind[]).
 * REAP_OK or REAP_E_NOMEM. */
int tok_norm_init(tok_norm *nm);
void tok_norm_free(tok_norm *nm);

/* Normalise s[0..n) (valid UTF-8). *out is a malloc'd result of *out_n bytes, or NULL
 * when the text is already normal (then use s itself). REAP_OK or REAP_E_NOMEM /
 * REAP_E_INTERNAL (message set). */
int tok_norm_apply(const tok_norm *nm, const uint8_t *s, size_t n, uint8_t **out,
                   size_t *out_n);

/* ---- added tokens (tok_added.c) ---------------------------------------------------- */

typedef struct tok_added {
    char *content;              /* as written in tokenizer.json */
    size_t len;
    char *pattern;              /* what is matched: content, or normalised content */
    size_t pattern_len;
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} tok_added;

typedef struct tok_trie_node {
    int32_t child;              /* first child node, -1 none */
    int32_t sibling;            /* next sibling node, -1 none */
    int32_t value;              /* index into the added-token table, -1 if no token ends */
    uint8_t byte;
} tok_trie_node;

/* A byte trie of added-token patterns; the root's children are indexed directly. */
typedef struct tok_trie {
    tok_trie_node *nodes;       /* [cap], n used */
    int32_t n, cap;
    int32_t root[256];          /* node of each first byte, -1 none */
    int empty;                  /* 1: no patterns */
} tok_trie;

void tok_trie_init(tok_trie *t);
int tok_trie_insert(tok_trie *t, const uint8_t *s, size_t n, int32_t value);
void tok_trie_free(tok_trie *t);

/* Called for each piece in order: id >= 0 for an added token (s/n its matched text),
 * id == -1 for text between tokens (possibly empty). Non-zero return stops. */
typedef int (*tok_piece_fn)(void *ctx, const uint8_t *s, size_t n, int32_t id);

/* Split s at the added tokens of `trie` as tokenizers' AddedVocabulary::find_matches
 * does. Returns 0 or the first non-zero callback return. */
int tok_added_split(const tok_added *added, const tok_trie *trie, const uint8_t *s,
                    size_t n, tok_piece_fn fn, void *ctx);

/* ---- regex split (tok_regex.c) ----------------------------------------------------- */

typedef enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS
} tok_split_behavior;

typedef struct tok_regex {
    pcre2_code *code;           /* exact: with the Unicode 15-16 additions */
    pcre2_code *fast;           /* without them (NULL: the pattern has none), for text
                                   with no such character (tok_text_has_newer) */
    int jit, fast_jit;          /* 1: JIT-compiled */
} tok_regex;

/* The pre-tokenizer pattern of GPT-2 (ByteLevel with use_regex). */
extern const char tok_gpt2_pattern[];

/* Rewrite an Oniguruma pattern for PCRE2 (see tokenizer.h); newer != 0 adds the
 * characters of Unicode 15-16 to \p{L}, \p{N}, \d, \w. *out is malloc'd and
 * NUL-terminated. REAP_OK, REAP_E_UNSUPPORTED (message names the construct),
 * REAP_E_NOMEM. */
int tok_regex_translate(const char *pat, size_t n, int newer, char **out);

/* 1 if s[0..n) (valid UTF-8) holds a character of those additions: then only the exact
 * pattern gives the right pieces. */
int tok_text_has_newer(const uint8_t *s, size_t n);

/* Compile `pat` (an Oniguruma regex, or a literal string when literal != 0).
 * REAP_OK, REAP_E_UNSUPPORTED (PCRE2's message and offset), REAP_E_NOMEM. */
int tok_regex_compile(tok_regex *re, const char *pat, size_t n, int literal);
void tok_regex_free(tok_regex *re);

typedef int (*tok_span_fn)(void *ctx, const uint8_t *s, size_t n);

/* Split s (valid UTF-8) by the matches of `re` with the given behaviour; fn gets each
 * non-empty piece in order. fast != 0 uses the pattern without the Unicode 15-16
 * additions (only right for text without such characters). md is match data of at
 * least one pair. Returns 0, the first non-zero callback return, or REAP_E_INTERNAL
 * (PCRE2 failure, message set). */
int tok_regex_split(const tok_regex *re, pcre2_match_data *md, int fast,
                    tok_split_behavior b, int invert, const uint8_t *s, size_t n,
                    tok_span_fn fn, void *ctx);

/* ---- BPE (tok_bpe.c) --------------------------------------------------------------- */

/* Decode a string of the byte-level alphabet ("Ġhello") into bytes. out has room for
 * n bytes. Returns the byte count, or -1 if some character is outside the alphabet. */
long tok_bytelevel_decode(const char *s, size_t n, uint8_t *out);

typedef struct tok_vocab_slot {
    uint32_t off, len;          /* key bytes in keys[] */
    int32_t id;                 /* -1: empty slot */
} tok_vocab_slot;

typedef struct tok_merge_slot {
    uint64_t key;               /* (left id << 32) | right id; UINT64_MAX: empty */
    uint32_t rank;
    int32_t id;                 /* the merged token */
} tok_merge_slot;

typedef struct tok_cache_slot {
    uint64_t hash;              /* 0: empty */
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids;
} tok_cache_slot;

/* Word -> ids cache: open addressing, emptied when any part is full. */
typedef struct tok_cache {
    tok_cache_slot *slots;      /* [mask + 1] */
    uint32_t mask, count;
    uint8_t *keys;              /* [keys_cap] */
    size_t keys_used, keys_cap;
    int32_t *ids;               /* [ids_cap] */
    size_t ids_used, ids_cap;
} tok_cache;

typedef struct tok_bpe {
    uint8_t *keys;              /* vocabulary key bytes */
    size_t keys_len, keys_cap;
    tok_vocab_slot *vslots;     /* [vmask + 1] */
    uint32_t vmask, n_vocab;
    tok_merge_slot *mslots;     /* [mmask + 1] */
    uint32_t mmask, n_merges;
    int32_t byte_id[256];       /* the token of each single byte */
    int32_t max_id;             /* largest vocabulary id */
    int ignore_merges;          /* 1: a word found whole in the vocabulary is one token */
    tok_cache cache;
    pthread_mutex_t cache_lock;
    int lock_init;
} tok_bpe;

/* Scratch space for one encode call (reused across words). */
typedef struct tok_bpe_scratch {
    void *sym;                  /* symbols */
    void *heap;                 /* merge candidates */
    size_t sym_cap, heap_cap;
} tok_bpe_scratch;

/* Tables sized for n_vocab entries and n_merges merges. */
int tok_bpe_init(tok_bpe *b, size_t n_vocab, size_t n_merges);
void tok_bpe_free(tok_bpe *b);

/* Add a vocabulary entry (key in bytes; never NULL, also when n is 0: the empty string
 * is a valid key). REAP_OK, REAP_E_FORMAT (duplicate key), REAP_E_NOMEM. */
int tok_bpe_vocab_add(tok_bpe *b, const uint8_t *key, size_t n, int32_t id);
/* The id of a byte string (key never NULL), or -1. */
int32_t tok_bpe_vocab_get(const tok_bpe *b, const uint8_t *key, size_t n);
/* Add the merge (left, right) -> id with rank; a repeated pair takes the later rank
 * (as tokenizers does). REAP_OK or REAP_E_NOMEM. */
int tok_bpe_merge_add(tok_bpe *b, int32_t left, int32_t right, int32_t id, uint32_t rank);
/* Fill byte_id[]; REAP_E_UNSUPPORTED if a byte has no token. */
int tok_bpe_finish(tok_bpe *b);

/* Append the tokens of one pre-token w[0..n) (n >= 1) to out. cache may be NULL (the
 * caller holds cache_lock otherwise). REAP_OK or REAP_E_NOMEM. */
int tok_bpe_word(const tok_bpe *b, tok_cache *cache, tok_bpe_scratch *s, const uint8_t *w,
                 size_t n, tok_ids *out);
void tok_bpe_scratch_free(tok_bpe_scratch *s);
/* The general merge loop (binary heap) that tok_bpe_word uses for long words, without
 * cache or shortcuts: the reference the short-word loop is tested against. */
int tok_bpe_word_heap(const tok_bpe *b, tok_bpe_scratch *s, const uint8_t *w, size_t n,
                      tok_ids *out);

/* The BPE tables of a loaded tokenizer (tokenizer.c; for tests and benchmarks). */
struct reap_tokenizer;
const tok_bpe *tok_tokenizer_bpe(const struct reap_tokenizer *t);

#endif

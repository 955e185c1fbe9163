/* tokenizer.h - byte-level BPE tokenizer read from a Hugging Face tokenizer.json.
 *
 * Encodes text to token ids exactly as the `tokenizers` library does for the supported
 * components (Qwen2/Qwen3, GPT-2 and Llama-3 style tokenizers), with no BOS/EOS added
 * (add_special_tokens = false):
 *
 *   1. added tokens whose "normalized" flag is false are matched literally in the raw
 *      text (leftmost, then longest; "single_word", "lstrip", "rstrip" honoured; the
 *      "special" flag does not change encoding);
 *   2. every other piece is normalised (NFC/NFD/NFKC/NFKD or a Sequence of them, by
 *      utf8proc), then added tokens with "normalized": true are matched in it;
 *   3. the remaining pieces go through the pre-tokenizers: Split (a regex run by PCRE2
 *      with Unicode properties; behaviours Isolated, Removed, MergedWithPrevious,
 *      MergedWithNext, Contiguous; invert) and finally ByteLevel (add_prefix_space,
 *      use_regex with the GPT-2 pattern);
 *   4. each pre-token's bytes are merged by BPE merge rank (lowest first, leftmost on
 *      ties) and looked up in the vocabulary (ignore_merges honoured).
 *
 * Anything else (WordPiece/Unigram/WordLevel models, BPE dropout, subword prefixes,
 * other normalizers or pre-tokenizers, a pre-tokenizer after ByteLevel, ...) is refused
 * at load time with REAP_E_UNSUPPORTED and a message naming the component. The
 * post_processor, decoder, truncation and padding sections are not used (no special
 * tokens are added, nothing is truncated).
 *
 * Regex dialect: tokenizer.json patterns are written for Oniguruma. Before PCRE2
 * compiles them, \s and \S are rewritten to the Unicode White_Space set (Oniguruma's
 * \s; PCRE2's also takes U+180E), \w and \W to Oniguruma's word set (Alphabetic,
 * marks, decimal digits, connector punctuation; outside classes also superscript digits
 * and fractions), \h and \H to hexadecimal digits, and ^ and $ match at line breaks as
 * in Oniguruma's Ruby syntax. Unicode versions: \p{L}, \p{N}, \d and \w also get the
 * characters of Unicode 15-16 that the library's Oniguruma knows and PCRE2 10.42 does
 * not; normalisation leaves alone the combining marks and decompositions that the
 * library's Unicode 9 normaliser does not know (see tok_regex.c, tok_norm.c). Over the
 * whole code space these classes match the library's exactly.
 *
 * Thread rules: a loaded tokenizer is read-only apart from an internal per-word cache
 * guarded by a mutex; reap_tokenizer_encode() may be called from several threads on
 * the same handle at once (a thread that finds the cache busy encodes without it, with
 * identical results). Loading and freeing are not concurrent with anything else.
 */
#ifndef REAP_TOKENIZER_H
#define REAP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "fsopen.h"

typedef struct reap_tokenizer reap_tokenizer;

/* Size of reap_tokenizer_digest()'s result in bytes. */
#define REAP_TOKENIZER_DIGEST_BYTES 32

/* Load a tokenizer. `path` is a tokenizer.json file or a directory containing one.
 * On success *out is a new handle (free with reap_tokenizer_free).
 * Returns REAP_OK, REAP_E_IO / REAP_E_NOTFOUND (cannot read the file), REAP_E_FORMAT
 * (invalid JSON, a field of the wrong type, a merge naming a token not in the
 * vocabulary; "file:line:column" or the field in the message), REAP_E_UNSUPPORTED (a
 * component this implementation does not handle, named in the message, or a regex
 * PCRE2 cannot compile), REAP_E_INVALID (NULL argument), REAP_E_NOMEM, REAP_E_INTERNAL
 * (libsodium cannot initialise). On failure *out is NULL. Takes ~0.8 s of CPU for the
 * 11 MB Qwen3 tokenizer.json (mostly JSON parsing). */
int reap_tokenizer_load(const char *path, reap_tokenizer **out);

/* reap_tokenizer_load for a service: the tokenizer.json read must also lie under `roots`
 * once its links are resolved (fsopen.h; NULL: unconfined), else REAP_E_DENIED. Not a
 * regular file (a FIFO, ...): REAP_E_INVALID, without waiting. */
int reap_tokenizer_load_confined(const char *path, const reap_roots *roots,
                                 reap_tokenizer **out);

/* Free a tokenizer (NULL is fine). */
void reap_tokenizer_free(reap_tokenizer *tok);

/* Encode `len` bytes of UTF-8 `text` (NUL bytes are ordinary characters). On success
 * *ids is a malloc'd array of *n_ids token ids (free() it; NULL when *n_ids is 0:
 * empty text). No BOS/EOS tokens are added.
 * Returns REAP_OK, REAP_E_INVALID (text is not valid UTF-8: the message gives the byte
 * offset; NULL arguments), REAP_E_NOMEM, REAP_E_INTERNAL (a regex engine failure).
 * On failure *ids is NULL and *n_ids 0. Thread-safe (see above). */
int reap_tokenizer_encode(reap_tokenizer *tok, const char *text, size_t len,
                          int32_t **ids, size_t *n_ids);

/* The identity of the tokenizer: BLAKE2b-256 (libsodium crypto_generichash, no key) of
 * the exact bytes of the tokenizer.json that was loaded. Two tokenizers with the same
 * digest encode identically. REAP_TOKENIZER_DIGEST_BYTES bytes, valid while `tok`
 * lives. */
const uint8_t *reap_tokenizer_digest(const reap_tokenizer *tok);

/* One more than the largest token id the tokenizer can produce (vocabulary and added
 * tokens). */
int reap_tokenizer_vocab_size(const reap_tokenizer *tok);

/* The id of the added token whose content is exactly `content` (e.g. "<|im_start|>"),
 * or -1 if there is none. */
int32_t reap_tokenizer_added_id(const reap_tokenizer *tok, const char *content);

/* The path of the tokenizer.json that was loaded (valid while `tok` lives). */
const char *reap_tokenizer_path(const reap_tokenizer *tok);

#endif

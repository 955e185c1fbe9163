/* fuzz_tokenizer.c - reap_tokenizer_load() on arbitrary bytes as tokenizer.json, then
 * reap_tokenizer_encode() of a text.
 *
 * Input: tokenizer.json bytes, optionally followed by a NUL byte and the text to encode
 * (without one, a few fixed texts: ASCII, whitespace runs, digits, CJK, an emoji,
 * combining marks and chat markers).
 */
#include "fuzz_util.h"
#include "reap_err.h"
#include "tokenizer.h"

static const char *const texts[] = {
    "Hello world, it's 2024!\n\n  indented\tand \"quoted\"",
    "a<|im_start|>b<|im_end|>\n",
    "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 e\xcc\x81 \xef\xac\x81 12345",
};

static void encode(reap_tokenizer *tok, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0, i;
    int vocab = reap_tokenizer_vocab_size(tok);

    if (FUZZ_RC(reap_tokenizer_encode(tok, text, len, &ids, &n)) == REAP_OK)
        for (i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vocab)
                abort();        /* an id outside the tokenizer's range */
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    reap_tokenizer *tok = NULL;
    const uint8_t *text;
    size_t head, text_len, i;

    fuzz_split_nul(data, size, &head, &text, &text_len);
    if (FUZZ_RC(reap_tokenizer_load(fuzz_memfd_set(&in, data, head), &tok)) != REAP_OK)
        return 0;
    if (text) {
        encode(tok, (const char *)text, text_len);
    } else {
        for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
            encode(tok, texts[i], strlen(texts[i]));
    }
    (void)reap_tokenizer_added_id(tok, "<|im_start|>");
    reap_tokenizer_free(tok);
    return 0;
}

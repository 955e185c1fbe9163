/* fuzz_calib.c - reap_calib_load() on arbitrary bytes as a calibration file (JSON Lines
 * or a JSON array of input_ids / text / messages / image items, tokenised with the Qwen3
 * tokenizer of tests/fixtures), then packing into rows.
 *
 * Images: the calibration file lies in the fuzzer's temporary directory beside two
 * image files, "a.img" and "b.img"; a stand-in probe gives each a patch grid from its
 * bytes (no decoder here), so references, rendering and span packing are exercised.
 *
 * The options come from the input's size, so a given input always takes the same path:
 * shuffled or not, at most 3 samples or all, packed rows or one row per sample.
 */
#include "calib.h"
#include "fuzz_util.h"
#include "reap_err.h"

static reap_tokenizer *tok;

/* A stand-in image probe: a grid of whole 2 x 2 blocks from the file's size and first
 * byte. */
static int probe(void *ud, const char *path, const uint8_t *data, size_t n,
                 reap_calib_grid *out)
{
    (void)ud;
    (void)path;
    out->grid_t = 1;
    out->grid_h = 2 * (int)(1 + n % 3);
    out->grid_w = 2 * (1 + (n ? data[0] % 5 : 0));
    return REAP_OK;
}

static void free_tokenizer(void)
{
    reap_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    reap_calib_opts o = {0};
    reap_samples s = {0};
    reap_rows r = {0};

    if (!tok) {
        if (reap_tokenizer_load(REAP_FUZZ_FIXTURES "/qwen3-tokenizer", &tok) != REAP_OK) {
            fprintf(stderr, "fuzz_calib: %s\n", reap_err_msg());
            abort();
        }
        atexit(free_tokenizer);
        char p[4096];
        fuzz_write_file(fuzz_path(p, sizeof p, "a.img"), "abcdefgh", 8);
        fuzz_write_file(fuzz_path(p, sizeof p, "b.img"), "\x07z", 2);
    }
    o.path = fuzz_named_set(&in, "calib.jsonl", data, size);
    o.has_vision = 1;
    o.spatial_merge = 2;
    o.probe_image = probe;
    o.tokenizer = tok;
    o.vocab = reap_tokenizer_vocab_size(tok);
    o.shuffle = size & 1;
    o.seed = size;
    o.max_samples = size & 2 ? 3 : 0;
    if (FUZZ_RC(reap_calib_load(&o, &s)) != REAP_OK)
        return 0;
    if (reap_rows_build(&s, 1 + (int)(size % 17), (size & 4) == 0, &r) == REAP_OK)
        reap_rows_free(&r);
    reap_samples_free(&s);
    return 0;
}

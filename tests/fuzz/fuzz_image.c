/* fuzz_image.c - the image decoders (libjpeg-turbo, libpng, libwebp behind
 * model/image.c) and the preprocessing on arbitrary bytes.
 *
 * The first byte picks what is done with the rest: 0 reap_vision_prep_parse (a
 * preprocessor_config.json); otherwise reap_image_probe_mem, then, for an image of at
 * most 2^20 pixels, reap_image_decode_mem and reap_image_preprocess with a small pixel
 * cap (so that one input stays cheap; the size rule itself is the probe's). */
#include <stdlib.h>

#include "fuzz_util.h"
#include "image.h"
#include "reap_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reap_vision_prep p;
    reap_image img;
    float *patches = NULL;
    int w, h, grid[3];

    if (size < 1)
        return 0;
    if (data[0] % 8 == 0) {
        (void)FUZZ_RC(reap_vision_prep_parse((const char *)data + 1, size - 1, "fuzz.json",
                                             &p));
        return 0;
    }
    if (FUZZ_RC(reap_image_probe_mem(data + 1, size - 1, "fuzz.img", &w, &h)) != REAP_OK ||
        (int64_t)w * h > ((int64_t)1 << 20))
        return 0;
    if (FUZZ_RC(reap_image_decode_mem(data + 1, size - 1, "fuzz.img", &img)) != REAP_OK)
        return 0;
    reap_vision_prep_default(&p);
    p.patch_size = 16;
    p.min_pixels = 32 * 32;
    p.max_pixels = 128 * 128;
    if (FUZZ_RC(reap_image_preprocess(&img, &p, &patches, grid, NULL)) == REAP_OK)
        free(patches);
    reap_image_free(&img);
    return 0;
}

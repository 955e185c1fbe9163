/* image_dump.c - the C image preprocessing of one file, dumped for tests/image_compare.py.
 *
 *   image-dump PREPROCESSOR_CONFIG IMAGE OUT_PREFIX
 *
 * Writes OUT_PREFIX.decoded (8-bit RGB after decoding), OUT_PREFIX.resized (8-bit RGB
 * after smart_resize + bicubic) and OUT_PREFIX.patches (float32 pixel_values, row-major
 * [t*gh*gw][3*T*P*P], host byte order), and prints one line:
 *   "<width> <height> <probe width> <probe height> <resized width> <resized height> <t> <gh> <gw>"
 * On a refusal: the error on stderr, exit 2 (the script checks the refusals too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "reap_err.h"

static int write_file(const char *prefix, const char *ext, const void *p, size_t n)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        fprintf(stderr, "image-dump: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    reap_vision_prep prep;
    reap_image img = {0}, rs = {0};
    float *patches = NULL;
    int grid[3], pw, ph, rc;

    if (argc != 4) {
        fprintf(stderr, "usage: image-dump PREPROCESSOR_CONFIG IMAGE OUT_PREFIX\n");
        return 64;
    }
    if ((rc = reap_vision_prep_load(argv[1], NULL, &prep)) ||
        (rc = reap_image_probe(argv[2], NULL, &pw, &ph)) ||
        (rc = reap_image_decode(argv[2], NULL, &img)) ||
        (rc = reap_image_preprocess(&img, &prep, &patches, grid, &rs))) {
        fprintf(stderr, "image-dump: %s (%s)\n", reap_err_msg(), reap_strerror(rc));
        reap_image_free(&img);
        return 2;
    }
    size_t n = (size_t)grid[0] * grid[1] * grid[2] * 3 * prep.temporal_patch_size *
               prep.patch_size * prep.patch_size;
    rc = write_file(argv[3], "decoded", img.rgb, (size_t)img.width * img.height * 3) ||
         write_file(argv[3], "resized", rs.rgb, (size_t)rs.width * rs.height * 3) ||
         write_file(argv[3], "patches", patches, n * sizeof *patches);
    printf("%d %d %d %d %d %d %d %d %d\n", img.width, img.height, pw, ph, rs.width, rs.height,
           grid[0], grid[1], grid[2]);
    free(patches);
    reap_image_free(&img);
    reap_image_free(&rs);
    return rc ? 1 : 0;
}

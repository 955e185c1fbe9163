/* test_score_image.c - the scorer's image files (scorer/score_image.h): the probe's grid
 * with the model's preprocessor_config.json and the --min-pixels/--max-pixels overrides,
 * and the patches of an image read again for the vision tower, which must be the file
 * the calibration was read from (its BLAKE2b digest). */
#include <limits.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"
#include "score_image.h"
#include "test_util.h"
#include "test_fixtures.h"

static const char *prep_json =
    "{\"patch_size\": 4, \"merge_size\": 2, \"temporal_patch_size\": 2,"
    " \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5],"
    " \"size\": {\"shortest_edge\": 1024, \"longest_edge\": 16384}}";

static reap_vision_config tower(void)
{
    reap_vision_config vc = {.present = 1, .patch = 4, .merge = 2, .temporal_patch = 2,
                             .in_channels = 3};
    return vc;
}

/* The 8 x 8 RGB PNG of test_fixtures.h. */
static const uint8_t *png8;
static size_t png8_n;

static void test_grid(const char *mdir)
{
    reap_vision_config vc = tower();
    reap_score_probe *p = NULL;
    int g[3];
    /* The file's limits: 8 x 8 = 64 < 1024 pixels, scaled up to 32 x 32: 8 x 8 patches. */
    CHECK_RC(reap_score_probe_new(mdir, NULL, &vc, 0, 0, &p), REAP_OK);
    CHECK_RC(reap_score_probe_grid(p, "x.png", png8, png8_n, g), REAP_OK);
    CHECK(g[0] == 1 && g[1] == 8 && g[2] == 8);
    reap_score_probe_free(p);
    /* Overrides: min 16, max 64 -> 8 x 8 pixels, 2 x 2 patches. */
    CHECK_RC(reap_score_probe_new(mdir, NULL, &vc, 16, 64, &p), REAP_OK);
    CHECK_RC(reap_score_probe_grid(p, "x.png", png8, png8_n, g), REAP_OK);
    CHECK(g[0] == 1 && g[1] == 2 && g[2] == 2);
    reap_score_probe_free(p);
    /* min > max after the overrides. */
    CHECK_RC(reap_score_probe_new(mdir, NULL, &vc, 20000, 0, &p), REAP_OK);
    CHECK_RC(reap_score_probe_grid(p, "x.png", png8, png8_n, g), REAP_E_INVALID);
    CHECK_ERRMSG("min_pixels 20000 > max_pixels 16384");
    reap_score_probe_free(p);
    /* A tower whose patch size is not the preprocessor's. */
    vc.patch = 2;
    CHECK_RC(reap_score_probe_new(mdir, NULL, &vc, 0, 0, &p), REAP_OK);
    CHECK_RC(reap_score_probe_grid(p, "x.png", png8, png8_n, g), REAP_E_INVALID);
    CHECK_ERRMSG("preprocessor_config.json: patch_size 4");
    reap_score_probe_free(p);
    /* No preprocessor_config.json. */
    vc = tower();
    CHECK_RC(reap_score_probe_new(sp("nothing"), NULL, &vc, 0, 0, &p), REAP_OK);
    CHECK_RC(reap_score_probe_grid(p, "x.png", png8, png8_n, g), REAP_E_NOTFOUND);
    CHECK_ERRMSG("preprocessor_config.json");
    reap_score_probe_free(p);
}

static void test_patches(const char *mdir)
{
    reap_vision_config vc = tower();
    reap_score_probe *p = NULL;
    uint8_t digest[32];
    float *patches = NULL;
    int g[3] = {1, 8, 8}, other[3] = {1, 2, 2};
    char img[4096];
    snprintf(img, sizeof img, "%s", sp("img.png"));
    write_bytes(img, png8, png8_n);
    crypto_generichash(digest, sizeof digest, png8, png8_n, NULL, 0);
    CHECK_RC(reap_score_probe_new(mdir, NULL, &vc, 0, 0, &p), REAP_OK);

    CHECK_RC(reap_score_image_patches(p, img, NULL, digest, 3, 0, g, &patches), REAP_OK);
    CHECK(patches != NULL);
    /* 64 patches of 3 * 2 * 4 * 4 values in [-1, 1]. */
    int in_range = patches != NULL;
    for (int i = 0; patches && i < 64 * 96; i++)
        in_range &= patches[i] >= -1.0f && patches[i] <= 1.0f;
    CHECK(in_range);
    free(patches);

    /* The file changed after the calibration file was read: its digest differs. */
    uint8_t changed[32];
    memcpy(changed, digest, sizeof changed);
    changed[5] ^= 1;
    patches = (float *)1;
    CHECK_RC(reap_score_image_patches(p, img, NULL, changed, 3, 1, g, &patches),
             REAP_E_INVALID);
    CHECK_ERRMSG("img.png (calibration line 3, image 1): the file changed");
    CHECK(patches == NULL);

    /* Another grid than the probe's. */
    CHECK_RC(reap_score_image_patches(p, img, NULL, digest, 4, 0, other, &patches),
             REAP_E_INVALID);
    CHECK_ERRMSG("preprocessed to a 1 x 8 x 8 patch grid, probed as 1 x 2 x 2");

    /* Gone, and outside the roots. */
    CHECK_RC(reap_score_image_patches(p, sp("gone.png"), NULL, digest, 4, 0, g, &patches),
             REAP_E_NOTFOUND);
    CHECK_ERRMSG("gone.png");
    char *real = realpath(mdir, NULL);      /* roots are resolved directories */
    const char *elsewhere[] = {real};
    reap_roots roots = {.dirs = elsewhere, .n = 1};
    CHECK_RC(reap_score_image_patches(p, img, &roots, digest, 4, 0, g, &patches),
             REAP_E_DENIED);
    CHECK_ERRMSG("img.png");
    free(real);
    reap_score_probe_free(p);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_score_image";
    png8 = test_png8(&png8_n);
    CHECK(fresh_dir(scratch) == 0);
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s", sp("model"));
    CHECK(make_dirs(mdir) == 0);
    write_text(pj(mdir, "preprocessor_config.json"), prep_json);
    if (sodium_init() < 0)
        return 1;
    test_grid(mdir);
    test_patches(mdir);
    TEST_MAIN_END();
}

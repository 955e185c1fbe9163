/* gen_images.h - generated calibration images for tests and the demo: n images of
 * awkward sizes in DIR, PNG (libpng: RGB and RGBA) and JPEG (libjpeg: RGB and grayscale,
 * baseline, quality 90), deterministic for a seed, and DIR/calib.jsonl, an image
 * calibration file over them (model/calib.h): the short form, a message with two images
 * in one user turn, a message with one image and an answer, and text-only items between
 * them. Image k is img-KKK.png or img-KKK.jpg (k % 4: 0 PNG RGB, 1 JPEG RGB, 2 PNG RGBA,
 * 3 JPEG gray); sizes cycle through a list of odd ones (37x23, 50x61, 19x90, 70x45, ...).
 * Thread rules: no shared state. */
#ifndef REAP_GEN_IMAGES_H
#define REAP_GEN_IMAGES_H

#include <stdint.h>

/* The size of image k (width, height). */
void reap_gen_image_size(int k, int *width, int *height);

/* Write n >= 1 images and calib.jsonl into dir (created if missing). Returns REAP_OK,
 * REAP_E_INVALID (n < 1), REAP_E_IO (a file that cannot be written, named),
 * REAP_E_NOMEM. */
int reap_gen_images(const char *dir, int n, uint64_t seed);

#endif

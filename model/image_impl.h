/* image_impl.h - what image.c uses from image_exif.c (not part of the public API). */
#ifndef REAP_IMAGE_IMPL_H
#define REAP_IMAGE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* The EXIF Orientation (tag 0x0112) of IFD0 in the `n` bytes at `p` (a TIFF structure,
 * optionally preceded by "Exif\0\0"): 1..8, or 1 when absent, unreadable or out of
 * range. Reads only inside [p, p + n). */
int image_exif_orientation(const uint8_t *p, size_t n);

/* The EXIF data of a WebP file (its RIFF "EXIF" chunk): *exif, *len inside buf, or
 * *exif = NULL. */
void image_webp_exif(const uint8_t *buf, size_t n, const uint8_t **exif, size_t *len);

/* Turn *img upright for `orientation` as PIL.ImageOps.exif_transpose does (2 mirror,
 * 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
 * counter-clockwise; 5..8 swap width and height). 1 or out of range: unchanged.
 * Returns REAP_OK or REAP_E_NOMEM (*img unchanged). */
int image_orient(reap_image *img, int orientation, const char *name);

#endif

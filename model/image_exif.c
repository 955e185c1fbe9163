/* image_exif.c - the EXIF orientation of an image and turning the pixels upright.
 *
 * transformers' load_image (how a processor reads an image file named in a chat) applies
 * PIL.ImageOps.exif_transpose before convert("RGB"): a photo whose EXIF says "rotated"
 * reaches the model upright, with width and height swapped for orientations 5..8. Only
 * the Orientation tag of IFD0 is read (Pillow's XMP fallback is not).
 */
#include <stdlib.h>
#include <string.h>

#include "image_impl.h"
#include "reap_err.h"

static unsigned rd16(const uint8_t *p, int be)
{
    return be ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int image_exif_orientation(const uint8_t *p, size_t n)
{
    int be;
    uint32_t ifd;
    unsigned count;

    while (n >= 6 && !memcmp(p, "Exif\0\0", 6)) {
        p += 6;
        n -= 6;
    }
    if (n < 8)
        return 1;
    if (!memcmp(p, "II*\0", 4))
        be = 0;
    else if (!memcmp(p, "MM\0*", 4))
        be = 1;
    else
        return 1;
    ifd = rd32(p + 4, be);
    if (ifd > n || n - ifd < 2)
        return 1;
    count = rd16(p + ifd, be);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n)
            break;
        if (rd16(p + e, be) != 0x0112)
            continue;
        unsigned type = rd16(p + e + 2, be), v;
        if (type == 3)                  /* SHORT */
            v = rd16(p + e + 8, be);
        else if (type == 4)             /* LONG */
            v = rd32(p + e + 8, be);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

void image_webp_exif(const uint8_t *buf, size_t n, const uint8_t **exif, size_t *len)
{
    size_t pos = 12;                    /* "RIFF" size "WEBP" */
    *exif = NULL;
    *len = 0;
    while (n >= 8 && pos <= n - 8) {
        uint32_t sz = (uint32_t)buf[pos + 4] | (uint32_t)buf[pos + 5] << 8 |
                      (uint32_t)buf[pos + 6] << 16 | (uint32_t)buf[pos + 7] << 24;
        if (sz > n - pos - 8)
            return;
        if (!memcmp(buf + pos, "EXIF", 4)) {
            *exif = buf + pos + 8;
            *len = sz;
            return;
        }
        pos += 8 + (size_t)sz + (sz & 1);
    }
}

int image_orient(reap_image *img, int orientation, const char *name)
{
    int W = img->width, H = img->height, ow, oh;
    uint8_t *dst;

    if (orientation < 2 || orientation > 8 || !img->rgb)
        return REAP_OK;
    ow = orientation >= 5 ? H : W;
    oh = orientation >= 5 ? W : H;
    dst = malloc((size_t)W * H * 3);
    if (!dst)
        return reap_err_set(REAP_E_NOMEM, "%s: no memory to turn the image upright", name);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;                 /* the input pixel that lands at (x, y) */
            switch (orientation) {
            case 2: sx = W - 1 - x; sy = y; break;
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;
            case 4: sx = x; sy = H - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = H - 1 - x; break;
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;
            default: sx = W - 1 - y; sy = x; break;     /* 8 */
            }
            memcpy(dst + ((size_t)y * ow + x) * 3, img->rgb + ((size_t)sy * W + sx) * 3, 3);
        }
    free(img->rgb);
    img->rgb = dst;
    img->width = ow;
    img->height = oh;
    return REAP_OK;
}

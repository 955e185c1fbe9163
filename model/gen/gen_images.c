/* gen_images.c - generated PNG/JPEG calibration images and their calibration file
 * (gen_images.h). libpng and libjpeg report errors by longjmp here, never by exit. */
#include "gen_images.h"

#include <errno.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>    /* after stdio.h: it uses size_t and FILE */
#include <png.h>

#include "gen_rng.h"
#include "reap_err.h"

static const int sizes[][2] = {{37, 23}, {50, 61}, {19, 90}, {70, 45}, {33, 33},
                               {88, 75}, {41, 17}, {64, 29}};

void reap_gen_image_size(int k, int *width, int *height)
{
    int n = (int)(sizeof sizes / sizeof sizes[0]);
    *width = sizes[k % n][0];
    *height = sizes[k % n][1];
}

/* Busy but smooth-ish pixels: gradients plus seeded noise, `ch` channels. */
static void fill(uint8_t *px, int w, int h, int ch, uint64_t seed)
{
    gen_rng r;
    gen_rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                int v = (x * (5 + 3 * c) + y * (7 - 2 * c) + c * 60) +
                        (int)(gen_rng_next(&r) % 48);
                px[((size_t)y * w + x) * ch + c] = (uint8_t)(v & 255);
            }
}

static int write_png(const char *path, const uint8_t *px, int w, int h, int ch)
{
    FILE *f = fopen(path, "wb");
    png_structp png = NULL;
    png_infop info = NULL;
    if (!f)
        return reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return reap_err_set(REAP_E_IO, "%s: cannot write the PNG", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 ch == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(px + (size_t)y * w * ch));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return fclose(f) ? reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno)) : REAP_OK;
}

typedef struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
} jerr;

static void jpeg_fail(j_common_ptr c)
{
    longjmp(((jerr *)c->err)->jb, 1);
}

static int write_jpeg(const char *path, const uint8_t *px, int w, int h, int ch)
{
    struct jpeg_compress_struct c;
    jerr je;
    FILE *f = fopen(path, "wb");
    if (!f)
        return reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    c.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_fail;
    if (setjmp(je.jb)) {
        jpeg_destroy_compress(&c);
        fclose(f);
        return reap_err_set(REAP_E_IO, "%s: cannot write the JPEG", path);
    }
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = ch;
    c.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * ch);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(f) ? reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno)) : REAP_OK;
}

static void image_name(int k, char *out, size_t n)
{
    snprintf(out, n, "img-%03d.%s", k, k % 4 == 1 || k % 4 == 3 ? "jpg" : "png");
}

/* The calibration file: items cycling through short form, text, two images in one user
 * turn, one image with an answer, until every image is used. */
static int write_calib(const char *dir, int n)
{
    char path[4096], a[32], b[32];
    snprintf(path, sizeof path, "%s/calib.jsonl", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    for (int k = 0, item = 0; k < n; item++) {
        switch (item % 4) {
        case 0:
            image_name(k++, a, sizeof a);
            fprintf(f, "{\"image\": \"%s\", \"text\": \"Where is the red square? Answer "
                       "with a box.\"}\n", a);
            break;
        case 1:
            fprintf(f, "{\"text\": \"A text-only item %d between the image items.\"}\n",
                    item);
            break;
        case 2:
            image_name(k++, a, sizeof a);
            if (k < n) {
                image_name(k++, b, sizeof b);
                fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
                           "\"text\", \"text\": \"Compare\"}, {\"type\": \"image\", "
                           "\"image\": \"%s\"}, {\"type\": \"text\", \"text\": \"with\"}, "
                           "{\"type\": \"image\", \"image\": \"%s\"}]}, {\"role\": "
                           "\"assistant\", \"content\": \"The second is darker.\"}]}\n",
                        a, b);
            } else {
                fprintf(f, "{\"image\": \"%s\", \"text\": \"Describe it.\"}\n", a);
            }
            break;
        default:
            image_name(k++, a, sizeof a);
            fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
                       "\"image\", \"image\": \"%s\"}, {\"type\": \"text\", \"text\": "
                       "\"Count the stripes.\"}]}, {\"role\": \"assistant\", \"content\": "
                       "\"[3, 4, 20, 17]\"}]}\n", a);
            break;
        }
    }
    return fclose(f) ? reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno)) : REAP_OK;
}

int reap_gen_images(const char *dir, int n, uint64_t seed)
{
    char path[4096], name[32];
    int rc = REAP_OK;
    if (n < 1)
        return reap_err_set(REAP_E_INVALID, "images: n %d < 1", n);
    if (mkdir(dir, 0777) && errno != EEXIST)
        return reap_err_set(REAP_E_IO, "%s: %s", dir, strerror(errno));
    for (int k = 0; k < n && !rc; k++) {
        int w, h, kind = k % 4, ch = kind == 2 ? 4 : kind == 3 ? 1 : 3;
        reap_gen_image_size(k, &w, &h);
        uint8_t *px = malloc((size_t)w * h * ch);
        if (!px)
            return reap_err_set(REAP_E_NOMEM, "image %d", k);
        fill(px, w, h, ch, seed * 1000003u + (uint64_t)k);
        image_name(k, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = kind == 1 || kind == 3 ? write_jpeg(path, px, w, h, ch)
                                    : write_png(path, px, w, h, ch);
        free(px);
    }
    return rc ? rc : write_calib(dir, n);
}

/* test_image.c - model/image.h: decoding, refusals, smart_resize, bicubic, patch layout.
 *
 * Images are written here with the libraries themselves (libpng, libjpeg, libwebp), so
 * the expected pixels are known; hostile files are those bytes cut short, flipped or
 * with headers that claim absurd sizes. The exact comparison with Pillow and
 * transformers on many sizes and modes is tests/image_compare.py; the golden values of
 * the bicubic case below come from Pillow 11.3's Image.resize(BICUBIC).
 *
 * Usage: test_image TMPDIR
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <webp/encode.h>

#include "image.h"
#include "reap_err.h"
#include "test_util.h"

static char tmpdir[1024];

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void buf_put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* An eXIf chunk for the next make_png (none when png_exif_len is 0). */
static const uint8_t *png_exif;
static size_t png_exif_len;

static void png_put(png_structp png, png_bytep d, size_t n)
{
    buf_put(png_get_io_ptr(png), d, n);
}

static void png_noflush(png_structp png)
{
    (void)png;
}

/* A PNG of w x h, `ctype`/`depth`, rows of raw samples (16-bit big-endian) in `pix`.
 * palette/trans: for PNG_COLOR_TYPE_PALETTE (may be NULL otherwise). */
static buf make_png(int w, int h, int ctype, int depth, const uint8_t *pix, int interlace,
                    const png_color *pal, int npal)
{
    buf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    int ch = ctype == PNG_COLOR_TYPE_RGB ? 3 : ctype == PNG_COLOR_TYPE_RGBA ? 4 :
             ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    if (setjmp(png_jmpbuf(png)))
        abort();
    png_set_write_fn(png, &b, png_put, png_noflush);
    png_set_IHDR(png, info, w, h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (png_exif_len)
        png_set_eXIf_1(png, info, (png_uint_32)png_exif_len, (png_bytep)png_exif);
    png_write_info(png, info);
    png_bytep *rows = malloc(sizeof *rows * h);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)pix + rowbytes * y;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);
    return b;
}

static buf make_jpeg(int w, int h, int comps, J_COLOR_SPACE cs, const uint8_t *pix,
                     int progressive)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    unsigned char *mem = NULL;
    unsigned long n = 0;
    buf b = {0};
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &n);
    c.image_width = w;
    c.image_height = h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)pix + (size_t)c.next_scanline * w * comps;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    buf_put(&b, mem, n);
    free(mem);
    return b;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f))
        abort();
}

/* CRC-32 of PNG chunks (for headers made by hand). */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static int decode_rc(const buf *b, reap_image *img)
{
    return reap_image_decode_mem(b->p, b->n, "test.img", img);
}

static void test_smart_resize(void)
{
    int h, w;
    /* halves go to even as in Python: 80/32 = 2.5 -> 2, 144/32 = 4.5 -> 4 (C's round()
     * would give 3 and 5); 48/32 = 1.5 -> 2. */
    CHECK_RC(reap_smart_resize(80, 144, 32, 3136, 451584, &h, &w), REAP_OK);
    CHECK(h == 64 && w == 128);
    CHECK_RC(reap_smart_resize(48, 208, 32, 0, 1 << 20, &h, &w), REAP_OK);
    CHECK(h == 64 && w == 192);      /* 1.5 -> 2, 6.5 -> 6 */
    /* max path: beta = sqrt(12e6 / 451584); floor(3000 / beta / 32) = 18 */
    CHECK_RC(reap_smart_resize(3000, 4000, 32, 3136, 451584, &h, &w), REAP_OK);
    CHECK(h == 576 && w == 768);
    /* at least one factor per side on the max path (which may then exceed max_pixels,
     * as in Python): floor(40 / 2.92 / 32) = 0 -> 32, floor(7000 / 2.92 / 32) = 74 */
    CHECK_RC(reap_smart_resize(40, 7000, 32, 0, 32 * 1024, &h, &w), REAP_OK);
    CHECK(h == 32 && w == 74 * 32);
    /* min path: 1x1 -> 0x0 by rounding, then beta = 256 */
    CHECK_RC(reap_smart_resize(1, 1, 32, 65536, 16777216, &h, &w), REAP_OK);
    CHECK(h == 256 && w == 256);
    /* aspect ratio: 200 is allowed, more is not */
    CHECK_RC(reap_smart_resize(1, 200, 32, 3136, 451584, &h, &w), REAP_OK);
    CHECK_RC(reap_smart_resize(1, 201, 32, 3136, 451584, &h, &w), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("aspect ratio");
    CHECK_RC(reap_smart_resize(40000, 1, 32, 3136, 451584, &h, &w), REAP_E_UNSUPPORTED);
    CHECK_RC(reap_smart_resize(0, 5, 32, 3136, 451584, &h, &w), REAP_E_INVALID);
    CHECK_RC(reap_smart_resize(5, 5, 0, 3136, 451584, &h, &w), REAP_E_INVALID);
    /* min_pixels 0 and a side below factor/2: nothing left */
    CHECK_RC(reap_smart_resize(10, 10, 32, 0, 451584, &h, &w), REAP_E_INVALID);
    /* a min_pixels beyond the pixel limit */
    CHECK_RC(reap_smart_resize(10, 10, 32, REAP_IMAGE_MAX_PIXELS * 4, INT64_MAX, &h, &w),
             REAP_E_UNSUPPORTED);
}

static void test_decode_png(void)
{
    uint8_t rgb[5 * 3 * 3], rgba[4 * 2 * 4], gray[7 * 2], gray16[3 * 2 * 2],
        rgb16[2 * 2 * 6], gray2[1 * 3], pal_ix[4];
    reap_image img;
    int w, h;
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 37 + 11);
    for (size_t i = 0; i < sizeof rgba; i++)
        rgba[i] = (uint8_t)(i * 53 + 7);
    for (size_t i = 0; i < sizeof gray; i++)
        gray[i] = (uint8_t)(i * 19);

    buf b = make_png(5, 3, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    CHECK(img.width == 5 && img.height == 3 && !memcmp(img.rgb, rgb, sizeof rgb));
    CHECK_RC(reap_image_probe_mem(b.p, b.n, "p.png", &w, &h), REAP_OK);
    CHECK(w == 5 && h == 3);
    CHECK(reap_image_sniff(b.p, b.n) == REAP_IMAGE_PNG);
    reap_image_free(&img);
    free(b.p);

    /* interlaced (Adam7): the same pixels */
    b = make_png(5, 3, PNG_COLOR_TYPE_RGB, 8, rgb, 1, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    CHECK(img.width == 5 && img.height == 3 && !memcmp(img.rgb, rgb, sizeof rgb));
    reap_image_free(&img);
    free(b.p);

    /* RGBA: alpha dropped, colours kept (no compositing) */
    b = make_png(4, 2, PNG_COLOR_TYPE_RGBA, 8, rgba, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    int ok = img.rgb != NULL;
    for (int i = 0; ok && i < 8; i++)
        ok = !memcmp(img.rgb + 3 * i, rgba + 4 * i, 3);
    CHECK(ok);
    reap_image_free(&img);
    free(b.p);

    /* gray: replicated */
    b = make_png(7, 2, PNG_COLOR_TYPE_GRAY, 8, gray, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    ok = img.rgb != NULL;
    for (int i = 0; ok && i < 14; i++)
        ok = img.rgb[3 * i] == gray[i] && img.rgb[3 * i + 1] == gray[i] &&
             img.rgb[3 * i + 2] == gray[i];
    CHECK(ok);
    reap_image_free(&img);
    free(b.p);

    /* 16-bit gray: clipped to 255 (Pillow's I;16 -> RGB), not scaled */
    static const uint16_t g16[6] = {0, 7, 255, 256, 1000, 65535};
    for (int i = 0; i < 6; i++) {
        gray16[2 * i] = g16[i] >> 8;
        gray16[2 * i + 1] = g16[i] & 0xff;
    }
    b = make_png(3, 2, PNG_COLOR_TYPE_GRAY, 16, gray16, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    ok = img.rgb != NULL;
    for (int i = 0; ok && i < 6; i++)
        ok = img.rgb[3 * i] == (g16[i] > 255 ? 255 : g16[i]) && img.rgb[3 * i + 2] == img.rgb[3 * i];
    CHECK_MSG(ok, "16-bit gray");
    reap_image_free(&img);
    free(b.p);

    /* 16-bit RGB: the high byte */
    for (size_t i = 0; i < sizeof rgb16; i++)
        rgb16[i] = (uint8_t)(i * 41 + 3);
    b = make_png(2, 2, PNG_COLOR_TYPE_RGB, 16, rgb16, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    ok = img.rgb != NULL;
    for (int i = 0; ok && i < 12; i++)
        ok = img.rgb[i] == rgb16[2 * i];
    CHECK_MSG(ok, "16-bit RGB");
    reap_image_free(&img);
    free(b.p);

    /* 2-bit gray: 0..3 -> 0, 85, 170, 255 (one row of 3 pixels: 0b00 01 11 00) */
    gray2[0] = 0x1c;
    b = make_png(3, 1, PNG_COLOR_TYPE_GRAY, 2, gray2, 0, NULL, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    CHECK(img.rgb && img.rgb[0] == 0 && img.rgb[3] == 85 && img.rgb[6] == 255);
    reap_image_free(&img);
    free(b.p);

    /* palette: looked up */
    png_color pal[3] = {{10, 20, 30}, {200, 100, 50}, {1, 2, 3}};
    pal_ix[0] = 2;
    pal_ix[1] = 0;
    pal_ix[2] = 1;
    pal_ix[3] = 1;
    b = make_png(2, 2, PNG_COLOR_TYPE_PALETTE, 8, pal_ix, 0, pal, 3);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    CHECK(img.rgb && img.rgb[0] == 1 && img.rgb[3] == 10 && img.rgb[7] == 100 &&
          img.rgb[11] == 50);
    reap_image_free(&img);
    free(b.p);
}

static void test_decode_jpeg_webp(void)
{
    uint8_t pix[16 * 8 * 4];
    reap_image img;
    int w, h;
    for (int i = 0; i < 16 * 8; i++) {
        pix[3 * i] = 200;
        pix[3 * i + 1] = 100;
        pix[3 * i + 2] = 30;
    }
    for (int prog = 0; prog < 2; prog++) {
        buf b = make_jpeg(16, 8, 3, JCS_RGB, pix, prog);
        CHECK(reap_image_sniff(b.p, b.n) == REAP_IMAGE_JPEG);
        CHECK_RC(reap_image_probe_mem(b.p, b.n, "t.jpg", &w, &h), REAP_OK);
        CHECK(w == 16 && h == 8);
        CHECK_RC(decode_rc(&b, &img), REAP_OK);
        int ok = img.rgb && img.width == 16 && img.height == 8;
        for (int i = 0; ok && i < 16 * 8 * 3; i++)
            ok = abs(img.rgb[i] - pix[i]) <= 2;      /* lossy, flat colour */
        CHECK_MSG(ok, "JPEG (progressive %d) pixels", prog);
        reap_image_free(&img);
        free(b.p);
    }
    /* without its EOI marker: refused, baseline (all pixels there) and progressive */
    for (int prog = 0; prog < 2; prog++) {
        reap_image full;
        for (int i = 0; i < 16 * 8 * 3; i++)
            pix[i] = (uint8_t)(i * 13);
        buf b = make_jpeg(16, 8, 3, JCS_RGB, pix, prog);
        CHECK_RC(decode_rc(&b, &full), REAP_OK);
        b.n -= 2;
        CHECK_RC(decode_rc(&b, &img), REAP_E_FORMAT);
        CHECK(img.rgb == NULL && full.rgb != NULL);
        reap_image_free(&img);
        reap_image_free(&full);
        free(b.p);
    }
    /* grayscale JPEG: replicated */
    memset(pix, 77, 16 * 8);
    buf b = make_jpeg(16, 8, 1, JCS_GRAYSCALE, pix, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_OK);
    CHECK(img.rgb && abs(img.rgb[0] - 77) <= 1 && img.rgb[0] == img.rgb[1] &&
          img.rgb[1] == img.rgb[2]);
    reap_image_free(&img);
    free(b.p);
    /* CMYK: refused clearly */
    memset(pix, 50, sizeof pix);
    b = make_jpeg(8, 8, 4, JCS_CMYK, pix, 0);
    CHECK_RC(decode_rc(&b, &img), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("CMYK");
    CHECK_ERRMSG("test.img");
    CHECK(img.rgb == NULL);
    free(b.p);

    /* WebP lossless: exact */
    for (int i = 0; i < 9 * 5 * 3; i++)
        pix[i] = (uint8_t)(i * 29 + 1);
    uint8_t *enc = NULL;
    size_t n = WebPEncodeLosslessRGB(pix, 9, 5, 9 * 3, &enc);
    CHECK(n > 0);
    CHECK(reap_image_sniff(enc, n) == REAP_IMAGE_WEBP);
    CHECK_RC(reap_image_probe_mem(enc, n, "t.webp", &w, &h), REAP_OK);
    CHECK(w == 9 && h == 5);
    CHECK_RC(reap_image_decode_mem(enc, n, "t.webp", &img), REAP_OK);
    CHECK(img.rgb && img.width == 9 && img.height == 5 && !memcmp(img.rgb, pix, 9 * 5 * 3));
    reap_image_free(&img);
    /* truncated WebP */
    CHECK_RC(reap_image_decode_mem(enc, n / 2, "t.webp", &img), REAP_E_FORMAT);
    CHECK(img.rgb == NULL);
    WebPFree(enc);
}

static void test_refusals(void)
{
    char path[1200];
    reap_image img;
    uint8_t rgb[32 * 32 * 3];
    int w, h;
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);

    /* missing, a directory, empty, unknown magic */
    snprintf(path, sizeof path, "%s/missing.png", tmpdir);
    CHECK_RC(reap_image_decode(path, NULL, &img), REAP_E_NOTFOUND);
    CHECK_ERRMSG("missing.png");
    CHECK_RC(reap_image_probe(path, NULL, &w, &h), REAP_E_NOTFOUND);
    CHECK_RC(reap_image_decode(tmpdir, NULL, &img), REAP_E_INVALID);
    snprintf(path, sizeof path, "%s/empty.jpg", tmpdir);
    write_file(path, "", 0);
    CHECK_RC(reap_image_decode(path, NULL, &img), REAP_E_FORMAT);
    CHECK_ERRMSG("empty.jpg");
    snprintf(path, sizeof path, "%s/anim.png", tmpdir);
    write_file(path, "GIF89a\x01\x00\x01\x00", 10);
    CHECK_RC(reap_image_decode(path, NULL, &img), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("anim.png");
    CHECK_ERRMSG("not a JPEG, PNG or WebP");

    /* a file larger than REAP_IMAGE_MAX_FILE_BYTES (sparse): refused before reading */
    snprintf(path, sizeof path, "%s/huge.jpg", tmpdir);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite("\xff\xd8\xff", 1, 3, f) == 3 &&
          fseeko(f, (off_t)REAP_IMAGE_MAX_FILE_BYTES, SEEK_SET) == 0 && fputc(0, f) == 0);
    if (f)
        fclose(f);
    CHECK_RC(reap_image_probe(path, NULL, &w, &h), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("huge.jpg");
    unlink(path);

    /* PNG cut short at every length: never a crash, always refused */
    buf b = make_png(32, 32, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    int all = 1;
    for (size_t n = 0; n < b.n - 12; n++) {    /* the IEND chunk is 12 bytes */
        int rc = reap_image_decode_mem(b.p, n, "cut.png", &img);
        if (rc != REAP_E_FORMAT && rc != REAP_E_UNSUPPORTED) {
            all = 0;
            fprintf(stderr, "cut PNG at %zu: rc %d\n", n, rc);
        }
        reap_image_free(&img);
    }
    CHECK(all);
    /* a flipped byte in the image data: the CRC says so */
    b.p[b.n - 20] ^= 0x55;
    CHECK_RC(decode_rc(&b, &img), REAP_E_FORMAT);
    CHECK_ERRMSG("corrupt or truncated PNG");
    free(b.p);

    /* JPEG cut short: refused (libjpeg would invent the rest) */
    b = make_jpeg(32, 32, 3, JCS_RGB, rgb, 0);
    all = 1;
    for (size_t n = 0; n < b.n - 2; n += 7) {
        int rc = reap_image_decode_mem(b.p, n, "cut.jpg", &img);
        if (rc != REAP_E_FORMAT && rc != REAP_E_UNSUPPORTED) {
            all = 0;
            fprintf(stderr, "cut JPEG at %zu: rc %d\n", n, rc);
        }
        reap_image_free(&img);
    }
    CHECK(all);
    /* a JPEG whose header claims 65500 x 65500: refused before decoding */
    for (size_t i = 2; i + 9 < b.n; i++) {
        if (b.p[i] == 0xff && b.p[i + 1] == 0xc0) {   /* SOF0: len(2) prec(1) h(2) w(2) */
            b.p[i + 5] = 0xff;
            b.p[i + 6] = 0xdc;
            b.p[i + 7] = 0xff;
            b.p[i + 8] = 0xdc;
            break;
        }
    }
    CHECK_RC(reap_image_probe_mem(b.p, b.n, "huge.jpg", &w, &h), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("huge.jpg");
    CHECK_RC(decode_rc(&b, &img), REAP_E_UNSUPPORTED);
    free(b.p);

    /* a PNG whose IHDR claims 20000 x 20000 (4e8 pixels > 2^28) */
    uint8_t hdr[8 + 25 + 12];
    static const uint8_t magic[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    memcpy(hdr, magic, 8);
    put32(hdr + 8, 13);
    memcpy(hdr + 12, "IHDR", 4);
    put32(hdr + 16, 20000);
    put32(hdr + 20, 20000);
    memcpy(hdr + 24, "\x08\x02\x00\x00\x00", 5);
    put32(hdr + 29, crc32_png(hdr + 12, 17));
    put32(hdr + 33, 0);                   /* an empty IDAT: png_read_info stops there */
    memcpy(hdr + 37, "IDAT", 4);
    put32(hdr + 41, crc32_png(hdr + 37, 4));
    CHECK_RC(reap_image_probe_mem(hdr, sizeof hdr, "huge.png", &w, &h), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("larger than the limit");
    CHECK_RC(reap_image_decode_mem(hdr, sizeof hdr, "huge.png", &img), REAP_E_UNSUPPORTED);
    /* ... and 0 x 5: libpng refuses a zero side */
    put32(hdr + 16, 0);
    put32(hdr + 20, 5);
    put32(hdr + 29, crc32_png(hdr + 12, 17));
    CHECK_RC(reap_image_probe_mem(hdr, sizeof hdr, "zero.png", &w, &h), REAP_E_FORMAT);

    /* an image of 1 x 250 decodes, but the processor refuses its aspect ratio */
    b = make_png(1, 250, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    snprintf(path, sizeof path, "%s/thin.png", tmpdir);
    write_file(path, b.p, b.n);
    free(b.p);
    CHECK_RC(reap_image_decode(path, NULL, &img), REAP_OK);
    reap_vision_prep prep;
    reap_vision_prep_default(&prep);
    float *patches = (float *)1;
    int grid[3];
    CHECK_RC(reap_image_preprocess(&img, &prep, &patches, grid, NULL), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("aspect ratio");
    CHECK(patches == NULL);
    reap_image_free(&img);
}

/* A little-endian TIFF with IFD0 holding Orientation = `o` (SHORT). */
static size_t make_exif(uint8_t *p, int o)
{
    static const uint8_t t[26] = {'I', 'I', '*', 0, 8, 0, 0, 0,         /* header, IFD0 at 8 */
                                  1, 0,                                 /* one entry */
                                  0x12, 0x01, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, /* 0x0112 SHORT */
                                  0, 0, 0, 0};                          /* no next IFD */
    memcpy(p, t, sizeof t);
    p[18] = (uint8_t)o;
    return sizeof t;
}

/* EXIF orientation: the pixels turned upright as PIL.ImageOps.exif_transpose does, the
 * probe's width and height swapped for 5..8. */
static void test_orientation(void)
{
    /* 3 x 2 image, pixel (x, y) has R = 10 * y + x */
    uint8_t rgb[2 * 3 * 3] = {0};
    uint8_t exif[64];
    reap_image img;
    int w, h;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            rgb[(y * 3 + x) * 3] = (uint8_t)(10 * y + x);
    /* for each orientation: the R values of the upright image, row by row */
    static const struct { int o, w, h; uint8_t r[6]; } want[] = {
        {1, 3, 2, {0, 1, 2, 10, 11, 12}},
        {2, 3, 2, {2, 1, 0, 12, 11, 10}},   /* mirrored */
        {3, 3, 2, {12, 11, 10, 2, 1, 0}},   /* rotated 180 */
        {4, 3, 2, {10, 11, 12, 0, 1, 2}},   /* flipped */
        {5, 2, 3, {0, 10, 1, 11, 2, 12}},   /* transposed */
        {6, 2, 3, {10, 0, 11, 1, 12, 2}},   /* rotated 90 clockwise */
        {7, 2, 3, {12, 2, 11, 1, 10, 0}},   /* transverse */
        {8, 2, 3, {2, 12, 1, 11, 0, 10}},   /* rotated 90 counter-clockwise */
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        png_exif_len = make_exif(exif, want[i].o);
        png_exif = exif;
        buf b = make_png(3, 2, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
        png_exif_len = 0;
        CHECK_RC(reap_image_probe_mem(b.p, b.n, "o.png", &w, &h), REAP_OK);
        CHECK_MSG(w == want[i].w && h == want[i].h, "orientation %d: probe %d x %d",
                  want[i].o, w, h);
        CHECK_RC(decode_rc(&b, &img), REAP_OK);
        int ok = img.rgb && img.width == want[i].w && img.height == want[i].h;
        for (int k = 0; ok && k < 6; k++)
            ok = img.rgb[3 * k] == want[i].r[k];
        CHECK_MSG(ok, "orientation %d: pixels", want[i].o);
        reap_image_free(&img);
        free(b.p);
    }
    /* hostile EXIF: an IFD offset past the end, a count past the end: orientation 1 */
    size_t n = make_exif(exif, 6);
    exif[4] = 200;
    png_exif_len = n;
    png_exif = exif;
    buf b = make_png(3, 2, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    CHECK_RC(reap_image_probe_mem(b.p, b.n, "o.png", &w, &h), REAP_OK);
    CHECK(w == 3 && h == 2);
    free(b.p);
    exif[4] = 8;
    exif[8] = 0xff;                     /* 255 entries in 26 bytes */
    exif[10] = 0;
    b = make_png(3, 2, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    png_exif_len = 0;
    CHECK_RC(reap_image_probe_mem(b.p, b.n, "o.png", &w, &h), REAP_OK);
    CHECK(w == 3 && h == 2);
    free(b.p);
}

/* Through a service the image (and the preprocessor config) must lie under the roots. */
static void test_roots(void)
{
    char root[4200], inside[4300], outside[4300], real[4096];
    uint8_t rgb[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    reap_image img;
    int w, h;
    if (!realpath(tmpdir, real))
        abort();
    snprintf(root, sizeof root, "%s/root", real);
    mkdir(root, 0755);
    buf b = make_png(2, 2, PNG_COLOR_TYPE_RGB, 8, rgb, 0, NULL, 0);
    snprintf(inside, sizeof inside, "%s/in.png", root);
    snprintf(outside, sizeof outside, "%s/out.png", real);
    write_file(inside, b.p, b.n);
    write_file(outside, b.p, b.n);
    free(b.p);
    const char *dirs[1] = {root};
    reap_roots roots = {dirs, 1};
    CHECK_RC(reap_image_decode(inside, &roots, &img), REAP_OK);
    CHECK(img.rgb && !memcmp(img.rgb, rgb, sizeof rgb));
    reap_image_free(&img);
    CHECK_RC(reap_image_decode(outside, &roots, &img), REAP_E_DENIED);
    CHECK_ERRMSG("out.png");
    CHECK_RC(reap_image_probe(outside, &roots, &w, &h), REAP_E_DENIED);
    reap_vision_prep p;
    CHECK_RC(reap_vision_prep_load(outside, &roots, &p), REAP_E_DENIED);
}

static void test_bicubic_golden(void)
{
    /* Pillow 11.3: Image.fromarray(a).resize((3, 7), BICUBIC) and ((13, 2), BICUBIC) of
     * the 5 x 4 image a[y][x][c] = (x*53 + y*29 + c*71) % 256. */
    static const uint8_t up_down[7 * 3 * 3] = {
        17, 87, 167, 104, 190, 203, 191, 122, 69, 27, 100, 177, 113, 175, 157, 206, 88, 79,
        46, 124, 196, 132, 153, 79, 224, 32, 98, 63, 142, 220, 155, 172, 84, 162, 36, 114,
        79, 158, 224, 177, 177, 103, 100, 60, 132, 98, 177, 168, 196, 99, 81, 118, 79, 156,
        108, 187, 134, 205, 53, 66, 133, 89, 169};
    static const uint8_t down_up[2 * 13 * 3] = {
        14, 83, 153, 19, 90, 162, 37, 108, 191, 61, 131, 219, 82, 158, 209, 103, 191, 168,
        123, 204, 126, 144, 177, 94, 165, 132, 69, 183, 96, 65, 197, 66, 89, 207, 46, 113,
        212, 38, 120, 65, 136, 218, 72, 143, 210, 90, 167, 190, 114, 191, 159, 135, 187, 124,
        156, 162, 79, 176, 130, 52, 207, 88, 65, 233, 47, 98, 210, 37, 125, 127, 65, 148, 55,
        94, 166, 32, 103, 173};
    uint8_t a[4 * 5 * 3];
    reap_image in = {5, 4, a}, out;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++)
            for (int c = 0; c < 3; c++)
                a[(y * 5 + x) * 3 + c] = (uint8_t)((x * 53 + y * 29 + c * 71) % 256);
    CHECK_RC(reap_image_resize_bicubic(&in, 3, 7, &out), REAP_OK);
    CHECK(out.width == 3 && out.height == 7 && !memcmp(out.rgb, up_down, sizeof up_down));
    reap_image_free(&out);
    CHECK_RC(reap_image_resize_bicubic(&in, 13, 2, &out), REAP_OK);
    CHECK(out.width == 13 && out.height == 2 && !memcmp(out.rgb, down_up, sizeof down_up));
    reap_image_free(&out);
    /* same size: a copy */
    CHECK_RC(reap_image_resize_bicubic(&in, 5, 4, &out), REAP_OK);
    CHECK(out.rgb && !memcmp(out.rgb, a, sizeof a));
    reap_image_free(&out);
    CHECK_RC(reap_image_resize_bicubic(&in, 0, 4, &out), REAP_E_INVALID);
}

static void test_patch_layout(void)
{
    /* 64 x 96 image (w x h), patch 16, merge 2, T 2: no resize (multiples of 32 and
     * within the bounds); grid (1, 6, 4). */
    enum { W = 64, H = 96, P = 16, T = 2 };
    static uint8_t px[H * W * 3];
    reap_image img = {W, H, px};
    reap_vision_prep p;
    float *v = NULL;
    int grid[3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                px[(y * W + x) * 3 + c] = (uint8_t)(x * 7 + y * 13 + c * 50);
    reap_vision_prep_default(&p);
    p.patch_size = P;
    p.min_pixels = 0;
    p.max_pixels = 1 << 20;
    for (int c = 0; c < 3; c++)
        p.image_mean[c] = p.image_std[c] = 0.5;
    CHECK_RC(reap_image_preprocess(&img, &p, &v, grid, NULL), REAP_OK);
    CHECK(grid[0] == 1 && grid[1] == H / P && grid[2] == W / P);
    if (!v)
        return;
    int bad = 0, gw = W / P, row_len = 3 * T * P * P;
    for (int r = 0; r < grid[1] * grid[2]; r++) {
        /* row r: merge block r / 4 (blocks row-major over gh/2 x gw/2), position r % 4 in
         * it (row-major in 2 x 2) */
        int blk = r / 4, in = r % 4;
        int prow = (blk / (gw / 2)) * 2 + in / 2, pcol = (blk % (gw / 2)) * 2 + in % 2;
        for (int i = 0; i < row_len; i++) {
            int c = i / (T * P * P), yy = (i / P) % P, xx = i % P;
            uint8_t u = px[((prow * P + yy) * W + pcol * P + xx) * 3 + c];
            float want = ((float)((double)u * (1.0 / 255.0)) - 0.5f) / 0.5f;
            if (v[(size_t)r * row_len + i] != want)
                bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d patch values misplaced", bad);
    free(v);
}

static void test_prep_parse(void)
{
    reap_vision_prep p;
    const char *qwen3 =
        "{\"size\": {\"longest_edge\": 16777216, \"shortest_edge\": 65536},"
        " \"patch_size\": 16, \"temporal_patch_size\": 2, \"merge_size\": 2,"
        " \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5],"
        " \"processor_class\": \"Qwen3VLProcessor\","
        " \"image_processor_type\": \"Qwen2VLImageProcessorFast\"}";
    CHECK_RC(reap_vision_prep_parse(qwen3, strlen(qwen3), "pc.json", &p), REAP_OK);
    CHECK(p.patch_size == 16 && p.merge_size == 2 && p.temporal_patch_size == 2);
    CHECK(p.min_pixels == 65536 && p.max_pixels == 16777216);
    CHECK(p.image_mean[1] == 0.5 && p.image_std[2] == 0.5);
    const char *old = "{\"min_pixels\": 3136, \"max_pixels\": 451584,"
                      " \"size\": {\"longest_edge\": 9, \"shortest_edge\": 1}}";
    CHECK_RC(reap_vision_prep_parse(old, strlen(old), "pc.json", &p), REAP_OK);
    CHECK(p.min_pixels == 3136 && p.max_pixels == 451584 && p.patch_size == 14);
    CHECK(p.image_mean[0] == 0.48145466);
    static const char *bad[] = {"{", "[]", "{\"patch_size\": \"16\"}", "{\"patch_size\": 0}",
                                "{\"image_std\": [0.5, 0, 0.5]}", "{\"image_mean\": [1, 2]}",
                                "{\"min_pixels\": 100, \"max_pixels\": 10}",
                                "{\"rescale_factor\": -1}", "{\"size\": 5}",
                                "{\"size\": {\"shortest_edge\": 5}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = reap_vision_prep_parse(bad[i], strlen(bad[i]), "bad.json", &p);
        CHECK_MSG(rc == REAP_E_FORMAT || rc == REAP_E_INVALID, "%s: rc %d", bad[i], rc);
        CHECK_ERRMSG("bad.json");
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", tmpdir);
    write_file(path, qwen3, strlen(qwen3));
    CHECK_RC(reap_vision_prep_load(path, NULL, &p), REAP_OK);
    CHECK(p.min_pixels == 65536);
}

int main(int argc, char **argv)
{
    snprintf(tmpdir, sizeof tmpdir, "%s", argc > 1 ? argv[1] : "tmp_test_image");
    if (mkdir(tmpdir, 0755) && errno != EEXIST) {
        perror(tmpdir);
        return 1;
    }
    test_smart_resize();
    test_decode_png();
    test_decode_jpeg_webp();
    test_refusals();
    test_roots();
    test_orientation();
    test_bicubic_golden();
    test_patch_layout();
    test_prep_parse();
    TEST_MAIN_END();
}

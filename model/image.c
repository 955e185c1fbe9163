/* image.c - image files to 8-bit RGB (image.h): format by magic bytes, then libjpeg-turbo,
 * libpng or libwebp with a per-call context, errors turned into status codes.
 *
 * Each decoder reads the header first (size checks before any pixel buffer exists), then
 * the pixels into rows of 1 to 4 channels, which to_rgb turns into RGB the way Pillow's
 * convert("RGB") does for the mode Pillow would have opened the file in. libjpeg and
 * libpng report errors by longjmp from their error callbacks; the only state live across
 * a setjmp is kept in volatile locals or in the context structs the callbacks see.
 */
#include "image.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

#include "image_impl.h"
#include "reap_err.h"

void reap_image_free(reap_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

reap_image_format reap_image_sniff(const void *buf, size_t n)
{
    const uint8_t *b = buf;
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

    if (!b)
        return REAP_IMAGE_UNKNOWN;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return REAP_IMAGE_JPEG;
    if (n >= 8 && !memcmp(b, png_magic, 8))
        return REAP_IMAGE_PNG;
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return REAP_IMAGE_WEBP;
    return REAP_IMAGE_UNKNOWN;
}

/* One owner for the size rule of every format. */
static int check_size(const char *name, const char *fmt, int64_t w, int64_t h)
{
    if (w < 1 || h < 1)
        return reap_err_set(REAP_E_FORMAT, "%s: %s image of %lld x %lld pixels (a side is 0)",
                            name, fmt, (long long)w, (long long)h);
    if (w > REAP_IMAGE_MAX_PIXELS || h > REAP_IMAGE_MAX_PIXELS ||
        w * h > REAP_IMAGE_MAX_PIXELS)
        return reap_err_set(REAP_E_UNSUPPORTED,
                            "%s: %s image of %lld x %lld pixels is larger than the limit of "
                            "%lld pixels", name, fmt, (long long)w, (long long)h,
                            (long long)REAP_IMAGE_MAX_PIXELS);
    return REAP_OK;
}

static int alloc_image(reap_image *out, int w, int h, const char *name)
{
    out->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!out->rgb)
        return reap_err_set(REAP_E_NOMEM, "%s: no memory for %d x %d pixels", name, w, h);
    out->width = w;
    out->height = h;
    return REAP_OK;
}

/* ---- JPEG (libjpeg-turbo) ------------------------------------------------------------ */

/* Progressive files with thousands of scans cost a full pass each: refuse past this. */
#define JPEG_MAX_SCANS 500

typedef struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int too_many_scans;
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    cinfo->err->format_message(cinfo, c->msg);
    longjmp(c->jb, 1);
}

/* Warnings (level -1) are corrupt data (a premature end, a bad Huffman code, ...): libjpeg
 * would go on and invent pixels, Pillow refuses a truncated file. Only extraneous bytes
 * between markers (pixels unaffected, common in camera files) are let through. A file
 * that lacks only its EOI marker is refused too (jpeg_finish_decompress looks for it):
 * Pillow loads some such files and refuses others, depending on how many bytes its
 * decoder had asked for ahead of the last block; one rule here. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    if (level >= 0 || cinfo->err->msg_code == JWRN_EXTRANEOUS_DATA)
        return;
    cinfo->err->format_message(cinfo, c->msg);
    longjmp(c->jb, 1);
}

static void jpeg_on_progress(j_common_ptr cinfo)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    if (cinfo->is_decompressor &&
        ((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS) {
        c->too_many_scans = 1;
        snprintf(c->msg, sizeof c->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(c->jb, 1);
    }
}

/* header_only: stop after the header (probe). */
static int jpeg_decode(const uint8_t *buf, size_t n, const char *name, int header_only,
                       int *orient, reap_image *out, int *w_out, int *h_out)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_ctx ctx;
    uint8_t *volatile row = NULL;
    volatile int rc = REAP_OK, created = 0;

    memset(&ctx, 0, sizeof ctx);
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&ctx.pub);
    ctx.pub.error_exit = jpeg_on_error;
    ctx.pub.emit_message = jpeg_on_message;
    if (setjmp(ctx.jb)) {
        if (ctx.too_many_scans)
            rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: JPEG with %s", name, ctx.msg);
        else
            rc = reap_err_set(REAP_E_FORMAT, "%s: corrupt or truncated JPEG: %s", name,
                              ctx.msg);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    ctx.progress.progress_monitor = jpeg_on_progress;
    cinfo.progress = &ctx.progress;
    jpeg_mem_src(&cinfo, buf, (unsigned long)n);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            !memcmp(m->data, "Exif\0\0", 6)) {       /* the first Exif APP1, as Pillow */
            *orient = image_exif_orientation(m->data, m->data_length);
            break;
        }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: CMYK/YCCK JPEG is not supported (convert "
                          "it to RGB)", name);
        goto done;
    }
    if ((rc = check_size(name, "JPEG", cinfo.image_width, cinfo.image_height)))
        goto done;
    if (header_only) {
        *w_out = (int)cinfo.image_width;
        *h_out = (int)cinfo.image_height;
        goto done;
    }
    /* Pillow's decoding: RGB (or L) output, the library's default (islow) IDCT and fancy
     * upsampling. */
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_width != (int)cinfo.image_width ||
        (int)cinfo.output_height != (int)cinfo.image_height ||
        (cinfo.output_components != 1 && cinfo.output_components != 3)) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: JPEG decodes to %d components", name,
                          cinfo.output_components);
        goto done;
    }
    if ((rc = alloc_image(out, (int)cinfo.output_width, (int)cinfo.output_height, name)))
        goto done;
    row = malloc((size_t)cinfo.output_width * (size_t)cinfo.output_components);
    if (!row) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: no memory", name);
        goto done;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW r = row;
        uint8_t *dst = out->rgb + (size_t)cinfo.output_scanline * out->width * 3;
        if (jpeg_read_scanlines(&cinfo, &r, 1) != 1) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: truncated JPEG", name);
            goto done;
        }
        if (cinfo.output_components == 3) {
            memcpy(dst, row, (size_t)out->width * 3);
        } else {
            for (int x = 0; x < out->width; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
        }
    }
    jpeg_finish_decompress(&cinfo);
done:
    if (created)
        jpeg_destroy_decompress(&cinfo);
    free(row);
    if (rc)
        reap_image_free(out);
    return rc;
}

/* ---- PNG (libpng) -------------------------------------------------------------------- */

typedef struct png_ctx {
    const uint8_t *buf;
    size_t n, pos;
    const char *name;
    char msg[200];
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_on_read(png_structp png, png_bytep data, size_t len)
{
    png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos)
        png_error(png, "file ends early (truncated)");
    memcpy(data, c->buf + c->pos, len);
    c->pos += len;
}

static int png_decode(const uint8_t *buf, size_t n, const char *name, int header_only,
                      int *orient, reap_image *out, int *w_out, int *h_out)
{
    png_structp png = NULL;
    png_infop info = NULL;
    png_ctx ctx = {buf, n, 0, name, ""};
    uint8_t *volatile pix = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = REAP_OK;
    png_uint_32 w, h;
    int depth, ctype, ch;
    size_t rowbytes;

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    if (!png || !(info = png_create_info_struct(png))) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: no memory for the PNG decoder", name);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: corrupt or truncated PNG: %s", name, ctx.msg);
        goto done;
    }
    png_set_read_fn(png, &ctx, png_on_read);
    png_read_info(png, info);
    w = png_get_image_width(png, info);
    h = png_get_image_height(png, info);
    if ((rc = check_size(name, "PNG", w, h)))
        goto done;
    {
        png_uint_32 exif_len = 0;
        png_bytep exif = NULL;
        if ((png_get_eXIf_1(png, info, &exif_len, &exif) & PNG_INFO_eXIf) && exif)
            *orient = image_exif_orientation(exif, exif_len);   /* eXIf before IDAT */
    }
    if (header_only) {
        *w_out = (int)w;
        *h_out = (int)h;
        goto done;
    }
    depth = png_get_bit_depth(png, info);
    ctype = png_get_color_type(png, info);
    /* Pillow's modes: palette -> P (looked up), 1/2/4-bit gray -> 1/L scaled to 0..255,
     * 16-bit RGB(A)/LA -> the high byte; 16-bit gray stays 16 bits (I;16, clipped below). */
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && ctype != PNG_COLOR_TYPE_GRAY)
        png_set_strip_16(png);
    if (depth == 16 && ctype == PNG_COLOR_TYPE_GRAY)
        png_set_swap(png);          /* 16-bit samples in host (little-endian) order */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    ch = png_get_channels(png, info);
    depth = png_get_bit_depth(png, info);
    rowbytes = png_get_rowbytes(png, info);
    if (ch < 1 || ch > 4 || (depth != 8 && depth != 16) ||
        rowbytes != (size_t)w * (size_t)ch * (size_t)(depth / 8)) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: PNG of %d channels at %d bits", name, ch,
                          depth);
        goto done;
    }
    if ((rc = alloc_image(out, (int)w, (int)h, name)))
        goto done;
    pix = malloc(rowbytes * h);
    rows = malloc(sizeof *rows * h);
    if (!pix || !rows) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: no memory for %u x %u pixels", name, w, h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = pix + rowbytes * y;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = rows[y];
        uint8_t *d = out->rgb + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++, d += 3) {
            if (depth == 16) {          /* gray: Pillow clips I;16 to 255 */
                unsigned v = (unsigned)s[2 * x] | (unsigned)s[2 * x + 1] << 8;
                d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
            } else if (ch <= 2) {       /* gray, gray + alpha */
                d[0] = d[1] = d[2] = s[(size_t)x * ch];
            } else {                    /* RGB, RGBA: alpha dropped */
                memcpy(d, s + (size_t)x * ch, 3);
            }
        }
    }
done:
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(pix);
    free(rows);
    if (rc)
        reap_image_free(out);
    return rc;
}

/* ---- WebP (libwebp) ------------------------------------------------------------------ */

static int webp_decode(const uint8_t *buf, size_t n, const char *name, int header_only,
                       int *orient, reap_image *out, int *w_out, int *h_out)
{
    WebPBitstreamFeatures f;
    VP8StatusCode st;
    int rc;

    st = WebPGetFeatures(buf, n, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA)
        return reap_err_set(REAP_E_FORMAT, "%s: truncated WebP header", name);
    if (st != VP8_STATUS_OK)
        return reap_err_set(REAP_E_FORMAT, "%s: corrupt WebP header (libwebp status %d)",
                            name, (int)st);
    if (f.has_animation)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: animated WebP is not supported", name);
    if ((rc = check_size(name, "WebP", f.width, f.height)))
        return rc;
    {
        const uint8_t *exif;
        size_t exif_len;
        image_webp_exif(buf, n, &exif, &exif_len);
        if (exif)
            *orient = image_exif_orientation(exif, exif_len);
    }
    if (header_only) {
        *w_out = f.width;
        *h_out = f.height;
        return REAP_OK;
    }
    if ((rc = alloc_image(out, f.width, f.height, name)))
        return rc;
    /* RGB output: the colour samples are those of RGBA output with the alpha dropped. */
    if (!WebPDecodeRGBInto(buf, n, out->rgb, (size_t)f.width * f.height * 3,
                           f.width * 3)) {
        reap_image_free(out);
        return reap_err_set(REAP_E_FORMAT, "%s: corrupt or truncated WebP", name);
    }
    return REAP_OK;
}

/* ---- entry points -------------------------------------------------------------------- */

/* Decode (or probe) with the format's decoder, then turn the image upright for its EXIF
 * orientation (a probe swaps width and height for orientations 5..8). */
static int decode_any(const void *buf, size_t n, const char *name, int header_only,
                      reap_image *out, int *w, int *h)
{
    int rc, orient = 1;

    if (!name)
        name = "(image)";
    if (!buf && n)
        return reap_err_set(REAP_E_INVALID, "%s: NULL buffer", name);
    switch (reap_image_sniff(buf, n)) {
    case REAP_IMAGE_JPEG:
        rc = jpeg_decode(buf, n, name, header_only, &orient, out, w, h);
        break;
    case REAP_IMAGE_PNG:
        rc = png_decode(buf, n, name, header_only, &orient, out, w, h);
        break;
    case REAP_IMAGE_WEBP:
        rc = webp_decode(buf, n, name, header_only, &orient, out, w, h);
        break;
    default:
        if (n == 0)
            return reap_err_set(REAP_E_FORMAT, "%s: empty file, not an image", name);
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: not a JPEG, PNG or WebP file "
                            "(unknown first bytes)", name);
    }
    if (rc)
        return rc;
    if (header_only) {
        if (orient >= 5) {
            int t = *w;
            *w = *h;
            *h = t;
        }
        return REAP_OK;
    }
    if ((rc = image_orient(out, orient, name)))
        reap_image_free(out);
    return rc;
}

int reap_image_probe_mem(const void *buf, size_t n, const char *name, int *width,
                         int *height)
{
    reap_image unused = {0, 0, NULL};
    if (!width || !height)
        return reap_err_set(REAP_E_INVALID, "reap_image_probe_mem: NULL argument");
    *width = *height = 0;
    return decode_any(buf, n, name, 1, &unused, width, height);
}

int reap_image_decode_mem(const void *buf, size_t n, const char *name, reap_image *out)
{
    int w, h;
    if (!out)
        return reap_err_set(REAP_E_INVALID, "reap_image_decode_mem: NULL argument");
    memset(out, 0, sizeof *out);
    return decode_any(buf, n, name, 0, out, &w, &h);
}

int reap_image_read_file(const char *path, const reap_roots *roots, uint8_t **buf,
                         size_t *n)
{
    int fd = -1, rc;
    char *data = NULL;
    size_t len = 0;
    struct stat st;

    if (!path || !buf || !n)
        return reap_err_set(REAP_E_INVALID, "reap_image_read_file: NULL argument");
    *buf = NULL;
    *n = 0;
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        return rc;
    if (fstat(fd, &st) == 0 && st.st_size > REAP_IMAGE_MAX_FILE_BYTES) {
        close(fd);
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %lld bytes, more than the %lld bytes an "
                            "image file may have", path, (long long)st.st_size,
                            (long long)REAP_IMAGE_MAX_FILE_BYTES);
    }
    rc = reap_read_stream(fd, path, NULL, NULL, &data, &len);
    close(fd);
    if (rc)
        return rc;
    *buf = (uint8_t *)data;
    *n = len;
    return REAP_OK;
}

int reap_image_probe(const char *path, const reap_roots *roots, int *width, int *height)
{
    uint8_t *buf;
    size_t n;
    int rc;

    if (!width || !height)
        return reap_err_set(REAP_E_INVALID, "reap_image_probe: NULL argument");
    *width = *height = 0;
    if ((rc = reap_image_read_file(path, roots, &buf, &n)))
        return rc;
    rc = reap_image_probe_mem(buf, n, path, width, height);
    free(buf);
    return rc;
}

int reap_image_decode(const char *path, const reap_roots *roots, reap_image *out)
{
    uint8_t *buf;
    size_t n;
    int rc;

    if (!out)
        return reap_err_set(REAP_E_INVALID, "reap_image_decode: NULL argument");
    memset(out, 0, sizeof *out);
    if ((rc = reap_image_read_file(path, roots, &buf, &n)))
        return rc;
    rc = reap_image_decode_mem(buf, n, path, out);
    free(buf);
    return rc;
}

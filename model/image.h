/* image.h - calibration images for Qwen3-VL: decoding and the Qwen2-VL image preprocessing.
 *
 * What the vision tower sees of an image file, computed exactly as transformers computes
 * it when a processor reads the file: load_image (Pillow's Image.open, exif_transpose,
 * convert("RGB")), then Qwen2VLImageProcessor (the slow, Pillow-based one, whose rules
 * Qwen3-VL uses):
 *
 *   1. decode (image.c): JPEG through libjpeg-turbo, PNG through libpng, WebP through
 *      libwebp; the format is told by the file's first bytes, never by its name. The
 *      pixels become 8-bit RGB as Pillow's convert("RGB") makes them: grayscale is
 *      replicated, a palette is looked up, alpha is dropped (no compositing), 16-bit
 *      RGB/RGBA/LA samples keep their high byte, 16-bit grayscale is clipped to 255
 *      (Pillow's I;16 -> RGB). CMYK/YCCK JPEGs and animated WebPs are refused. The
 *      image is turned upright for its EXIF Orientation (JPEG APP1, PNG eXIf before
 *      IDAT, WebP EXIF chunk), as transformers' load_image does with
 *      PIL.ImageOps.exif_transpose when a processor reads a file: orientations 5..8
 *      swap width and height (the probe reports the upright size too).
 *   2. reap_smart_resize (image_resize.c): the target size, multiples of patch*merge, with
 *      Python's round-half-to-even; aspect ratio > 200 is refused.
 *   3. reap_image_resize_bicubic (image_resize.c): Pillow's BICUBIC resampling, bit for bit
 *      (8-bit fixed point, horizontal pass then vertical, support widened by the
 *      downscale factor).
 *   4. reap_image_preprocess (image_prep.c): rescale, normalise, temporal repeat and the
 *      patch order of the processor.
 *
 * Limits: each side >= 1 and width * height <= REAP_IMAGE_MAX_PIXELS; a bigger header
 * is refused before any pixel is decoded; a file is at most REAP_IMAGE_MAX_FILE_BYTES. A hostile file never crashes a caller: every
 * library error comes back as a status code with the file named.
 *
 * Errors (reap_err.h; every message names the file or the `name` given):
 *   REAP_E_NOTFOUND      no such file
 *   REAP_E_IO, REAP_E_DENIED, REAP_E_INVALID   unreadable, outside the roots, not a
 *                        regular file (fsopen.h)
 *   REAP_E_FORMAT        corrupt or truncated data, a zero-sized image
 *   REAP_E_UNSUPPORTED   not a JPEG, PNG or WebP file; a CMYK/YCCK JPEG or an animated
 *                        WebP; more than REAP_IMAGE_MAX_PIXELS pixels; aspect ratio > 200
 *   REAP_E_NOMEM         allocation failed
 *
 * Thread rules: no shared state (the libraries are used with per-call contexts); every
 * function may be called from several threads at once on different outputs.
 */
#ifndef REAP_IMAGE_H
#define REAP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fsopen.h"

/* The most pixels (width * height) an image may have: 2^28, 768 MiB of RGB. */
#define REAP_IMAGE_MAX_PIXELS ((int64_t)1 << 28)
/* The largest image file read (bytes): 1 GiB. */
#define REAP_IMAGE_MAX_FILE_BYTES ((int64_t)1 << 30)
/* The processor's limit on max(h, w) / min(h, w). */
#define REAP_IMAGE_MAX_ASPECT 200

typedef enum reap_image_format {
    REAP_IMAGE_UNKNOWN = 0,
    REAP_IMAGE_JPEG,
    REAP_IMAGE_PNG,
    REAP_IMAGE_WEBP
} reap_image_format;

/* An 8-bit RGB image, rows top to bottom, pixels left to right, R G B interleaved. */
typedef struct reap_image {
    int width, height;
    uint8_t *rgb;           /* [height][width][3]; owned, freed by reap_image_free */
} reap_image;

/* Release img->rgb and zero *img. NULL or an empty image: no-op. */
void reap_image_free(reap_image *img);

/* The format of a file that starts with the `n` bytes at `buf`, told by its magic bytes:
 * FF D8 FF (JPEG), 89 'PNG' 0D 0A 1A 0A (PNG), 'RIFF' ???? 'WEBP' (WebP); else
 * REAP_IMAGE_UNKNOWN. */
reap_image_format reap_image_sniff(const void *buf, size_t n);

/* Width and height from the header only (no pixel is decoded), upright (EXIF
 * orientation applied), with the same checks of format and size as a decode: the
 * calibration loader counts an image's tokens with it.
 * `name` names the data in messages. Returns REAP_OK with *width, *height set, or
 * REAP_E_FORMAT / REAP_E_UNSUPPORTED / REAP_E_INVALID (NULL argument). A header that
 * probes fine may still fail to decode (corrupt pixel data). */
int reap_image_probe_mem(const void *buf, size_t n, const char *name, int *width,
                         int *height);

/* Decode the `n` bytes at `buf` (a whole JPEG, PNG or WebP file) to 8-bit RGB in *out
 * (caller frees with reap_image_free). `name` names the data in messages. Returns REAP_OK,
 * REAP_E_FORMAT, REAP_E_UNSUPPORTED, REAP_E_NOMEM, REAP_E_INVALID (NULL argument); on
 * failure *out is empty. */
int reap_image_decode_mem(const void *buf, size_t n, const char *name, reap_image *out);

/* Read the file `path` whole (fsopen.h rules: a regular file, confined to `roots` when
 * roots != NULL) into *buf (malloc'd, caller frees) of *n bytes. Returns REAP_OK, the
 * errors of reap_open_read / reap_read_stream, or REAP_E_UNSUPPORTED for a file of more
 * than REAP_IMAGE_MAX_FILE_BYTES. */
int reap_image_read_file(const char *path, const reap_roots *roots, uint8_t **buf,
                         size_t *n);

/* reap_image_read_file then reap_image_probe_mem / reap_image_decode_mem, the file
 * named by `path`. */
int reap_image_probe(const char *path, const reap_roots *roots, int *width, int *height);
int reap_image_decode(const char *path, const reap_roots *roots, reap_image *out);

/* smart_resize of the Qwen2-VL image processor: the size (*out_h, *out_w), multiples of
 * `factor`, that the image of h x w pixels is resized to:
 *   h' = round(h / factor) * factor, w' likewise (round: halves to even, as Python);
 *   if h' * w' > max_pixels: b = sqrt(h * w / max_pixels),
 *       h' = max(factor, floor(h / b / factor) * factor), w' likewise;
 *   else if h' * w' < min_pixels: b = sqrt(min_pixels / (h * w)),
 *       h' = ceil(h * b / factor) * factor, w' likewise.
 * The arithmetic is in double, as in Python. Returns REAP_OK; REAP_E_UNSUPPORTED when
 * max(h, w) / min(h, w) > REAP_IMAGE_MAX_ASPECT or the result has more than
 * REAP_IMAGE_MAX_PIXELS pixels; REAP_E_INVALID when h, w or factor < 1, min_pixels < 0,
 * max_pixels < 1, or the result is empty (a side below factor / 2 with min_pixels 0). */
int reap_smart_resize(int h, int w, int factor, int64_t min_pixels, int64_t max_pixels,
                      int *out_h, int *out_w);

/* Resample `in` to out_w x out_h with Pillow's Image.resize(size, Image.BICUBIC): the
 * same 8-bit pixels, bit for bit. Same size: a copy. Returns REAP_OK, REAP_E_INVALID
 * (empty input, a size < 1, or more than REAP_IMAGE_MAX_PIXELS), REAP_E_NOMEM; on
 * failure *out is empty. `out` must not be `in`. */
int reap_image_resize_bicubic(const reap_image *in, int out_w, int out_h, reap_image *out);

/* The preprocessing parameters of a model (its preprocessor_config.json). */
typedef struct reap_vision_prep {
    int patch_size;              /* "patch_size" (default 14) */
    int temporal_patch_size;     /* "temporal_patch_size" (default 2) */
    int merge_size;              /* "merge_size" (default 2) */
    int64_t min_pixels;          /* "min_pixels", else "size"."shortest_edge" (3136) */
    int64_t max_pixels;          /* "max_pixels", else "size"."longest_edge" (12845056) */
    double rescale_factor;       /* "rescale_factor" (1/255) */
    double image_mean[3];        /* "image_mean" (the OpenAI CLIP mean) */
    double image_std[3];         /* "image_std" (the OpenAI CLIP std) */
    int do_resize, do_rescale, do_normalize;  /* "do_resize" ... (default true) */
} reap_vision_prep;

/* The defaults of transformers' Qwen2VLImageProcessor (above). */
void reap_vision_prep_default(reap_vision_prep *out);

/* Parse the JSON text `json` (`n` bytes) of a preprocessor_config.json: the fields above
 * over the defaults; "min_pixels"/"max_pixels" win over "size" as in the processor.
 * `name` names the file in messages. Returns REAP_OK, REAP_E_FORMAT (invalid JSON, a
 * field of the wrong type), REAP_E_INVALID (a value out of range: sizes < 1, a std of 0,
 * min_pixels > max_pixels, NULL argument), REAP_E_NOMEM. */
int reap_vision_prep_parse(const char *json, size_t n, const char *name,
                           reap_vision_prep *out);

/* Read and parse the file `preprocessor_config_path` (fsopen.h rules, `roots` as
 * there). Returns what reap_image_read_file and reap_vision_prep_parse return. */
int reap_vision_prep_load(const char *preprocessor_config_path, const reap_roots *roots,
                          reap_vision_prep *out);

/* The patch grid (t, gh, gw) of an image of h x w pixels under `p`: t = 1 (a still image
 * is one temporal patch), gh = h' / patch_size, gw = w' / patch_size with (h', w') from
 * reap_smart_resize(h, w, patch_size * merge_size, ...) (h, w themselves without
 * do_resize). Returns what reap_smart_resize returns; REAP_E_INVALID when the size is
 * not a multiple of patch_size * merge_size without do_resize. */
int reap_image_grid(const reap_vision_prep *p, int h, int w, int grid[3]);

/* The processor's pixel_values of one image: resized to the grid's size (bicubic, when
 * p->do_resize), x -> (float)(x * rescale_factor) in double (do_rescale), then
 * (x - mean[c]) / std[c] in float (do_normalize), repeated to temporal_patch_size frames,
 * and cut into rows of C * T * P * P values (channel, frame, row, column; C = 3,
 * T = temporal_patch_size, P = patch_size), the rows in 2x2 (merge_size^2) merge-block
 * order: block row, block column, row in block, column in block.
 * *patches: malloc'd [grid[0] * grid[1] * grid[2]][3 * T * P * P] floats, caller frees.
 * grid: the (t, gh, gw) of reap_image_grid. Returns REAP_OK or the errors of
 * reap_image_grid / reap_image_resize_bicubic, REAP_E_NOMEM; on failure *patches is NULL.
 * `resized` (may be NULL) receives the resized 8-bit image (caller frees). */
int reap_image_preprocess(const reap_image *img, const reap_vision_prep *p,
                          float **patches, int grid[3], reap_image *resized);

#endif

/* calib.h - calibration samples (token ids) and their packing into fixed-length rows.
 *
 * Input files: JSON Lines (one item per line; blank lines skipped) or one JSON array of
 * items (recognised by its first non-blank character, '['). Item kinds, mixed freely:
 *   {"input_ids": [int, ...]}    token ids, used as they are;
 *   {"text": "..."}              tokenised with the model's tokenizer (no BOS/EOS);
 *   {"messages": [{"role": "...", "content": "..."}, ...]}
 *                                rendered as ChatML, the chat format of the Qwen
 *                                families: "<|im_start|>{role}\n{content}<|im_end|>\n"
 *                                per message, the whole conversation, no generation
 *                                prompt; then tokenised (the <|im_start|>/<|im_end|> are
 *                                matched as the tokenizer's added tokens). Roles: system,
 *                                user, assistant, tool.
 *   {"image": "<ref>", "text": "..."}
 *                                the short image form: one user turn holding the image
 *                                and then the prompt (below);
 * and, in "messages", a content that is a list of parts instead of a string:
 *   [{"type": "image", "image": "<ref>"}, {"type": "text", "text": "..."}, ...]
 * rendered as Qwen3-VL's chat template renders it: the parts in order, a text part as
 * its text, an image part as <|vision_start|> + N x <|image_pad|> + <|vision_end|>. As in
 * that template a part is an image when its "type" is "image" or it has an "image" or
 * "image_url" key (the reference is "image", else "image_url" as a string or as
 * {"url": ...}), else text when it has a "text" key. Images are allowed in user turns
 * only (the template drops them elsewhere; here that is an error); video parts and parts
 * with neither image nor text are refused.
 * Image references: a path relative to the calibration file's folder, an absolute path,
 * or a file:// URI (file:///abs/path or file://localhost/abs/path, percent-decoded).
 * Other URLs (http, https, data, ...) are refused (REAP_E_UNSUPPORTED). With roots the
 * image, like the calibration file, must lie under one of them (fsopen.h). Each image
 * file is read whole once (when its item is converted, i.e. selected), its BLAKE2b-256
 * digest taken, and its bytes handed to opts->probe_image, which reports the patch grid
 * after smart_resize; N = grid_t * grid_h * grid_w / spatial_merge^2. The rendered text
 * is tokenised with one <|image_pad|> per image, each then widened to N copies; the
 * tokenizer must have <|vision_start|>, <|image_pad|> and <|vision_end|>.
 * An item with several of these keys is read by the first of input_ids, messages,
 * image, text; other keys are ignored. Errors name the file and the 1-based line where
 * the item starts, and for a JSON array also the 0-based item index ("file:7: item 3:
 * ...").
 *
 * Selection: without shuffling, the first max_samples items in file order (the rest of
 * the file is not read). With shuffling, every item is read and checked, the items are
 * permuted by Fisher-Yates driven by SplitMix64 seeded with `seed` (for i = n-1 down to
 * 1: r = next(); j = r mod (i + 1); swap items i and j), and the first max_samples of
 * the permutation are kept in that order. Same file, seed and max_samples: same samples.
 *
 * Packing (default, as the reference implementation does): rows of exactly seq_len
 * positions; samples are placed in order; after each sample one gap position (token 0,
 * mask 0); a sample that does not fit in the rest of the row is truncated to fill the row
 * and its remainder dropped; the next sample starts a new row; a partial last row is
 * padded with token 0, mask 0.
 * Images: packing never cuts an image span. A sample with images needs its tokens up to
 * the end of its last image span in one row; when they do not fit in the rest of the
 * current row, the sample starts a new row (the rest of the old row stays padding); when
 * they do not fit even in an empty row, reap_rows_build fails (REAP_E_INVALID, naming
 * file, line, item, the image and the token count). Text after the last image span may
 * be truncated as above. Samples without images pack exactly as before.
 * No packing: one row per sample, truncated to seq_len, padded with token 0, mask 0; a
 * sample's image spans must fit in its row, as above.
 * Masked slots are never attended to as keys and never counted in statistics. The
 * rotary position of each slot depends on the model family and the mask (positions.h):
 * the slot index for Qwen3-MoE, the count of valid slots before it for Qwen3-VL-MoE.
 *
 * Thread rules: no shared state; calls on different outputs may run concurrently (a
 * tokenizer may be shared, see tokenizer.h).
 */
#ifndef REAP_CALIB_H
#define REAP_CALIB_H

#include <stdint.h>

#include "fsopen.h"
#include "tokenizer.h"

/* One image of the calibration set (Qwen3-VL image items; see
 * docs/calibration.md). The vision tower sees it as grid_t x grid_h x grid_w patches; the
 * language model as n_tokens = grid_t * grid_h * grid_w / merge^2 <|image_pad|> slots. */
typedef struct reap_calib_image {
    char *path;           /* the file as opened (resolved against the calibration file's
                             folder); owned */
    int64_t line;         /* 1-based line of the item that names it */
    int item;             /* 0-based index of the image within that item */
    int grid_t, grid_h, grid_w;   /* patch grid after smart_resize (temporal, rows, cols) */
    int64_t n_tokens;     /* its <|image_pad|> slots */
    uint8_t digest[32];   /* BLAKE2b-256 of the file's bytes (part of the calib_id) */
} reap_calib_image;

/* Where an image's tokens sit in a sample: n_tokens consecutive ids from `offset`. */
typedef struct reap_sample_span {
    int64_t sample;       /* index into reap_samples */
    int64_t offset;       /* first <|image_pad|> of the image within the sample */
    int32_t image;        /* index into images */
} reap_sample_span;

typedef struct reap_samples {
    int64_t n;          /* number of samples */
    int64_t *len;       /* [n] tokens per sample */
    int32_t **ids;      /* [n][len[i]] */
    int64_t *line;      /* [n] 1-based source line of each sample */
    int64_t *index;     /* [n] 0-based item index in a JSON array, -1 in JSON Lines; may
                           be NULL (no indices). Owned */
    char *source;       /* the calibration file, for messages; may be NULL. Owned */
    /* Images (0 / NULL for text-only sets), in calibration order; spans sorted by
     * (sample, offset). Owned; reap_samples_free frees them. */
    int32_t n_images;
    reap_calib_image *images;
    int64_t n_spans;
    reap_sample_span *spans;
} reap_samples;

/* What an image probe reports of one image: its patch grid after smart_resize (the
 * image processor's rule, owned by the probe; grid_t 1 for a still image). */
typedef struct reap_calib_grid {
    int grid_t, grid_h, grid_w;
} reap_calib_grid;

/* An image probe: given the `n` bytes of the image file `path` (as read and hashed by
 * reap_calib_load; `path` is for messages only and must not be opened again), fill
 * *out. Returns REAP_OK, or an error status with its message set (reap_err_set) naming
 * the file: an unreadable, corrupt or unsupported image, or an aspect ratio the
 * processor refuses. reap_calib_load prefixes the calibration file, line and item.
 * The scorer plugs in model/image.h's probe (decode the header, smart_resize with the
 * model's min/max pixels); tests plug in their own. Called from the loading thread. */
typedef int (*reap_image_probe_fn)(void *ud, const char *path, const uint8_t *data,
                                   size_t n, reap_calib_grid *out);

typedef struct reap_calib_opts {
    const char *path;           /* the calibration file (JSON Lines or a JSON array) */
    int64_t max_samples;        /* keep at most this many samples (<= 0: all) */
    int vocab;                  /* every id must satisfy 0 <= id < vocab (<= 0: no
                                   upper bound), tokenizer output included */
    reap_tokenizer *tokenizer;  /* for "text"/"messages" items; NULL: load_tokenizer's,
                                   or only "input_ids" items are accepted */
    int (*load_tokenizer)(void *ud, reap_tokenizer **out);
                                /* with tokenizer NULL (may be NULL): called once, at the
                                   first "text"/"messages" item, to load the tokenizer
                                   into *out (the callback keeps and frees it; *out NULL:
                                   the item is refused as needing one). A non-zero
                                   return ends the load with that status. So a file of
                                   token ids never loads a tokenizer, and the file is
                                   read once (a pipe cannot be read twice). */
    void *tokenizer_ud;         /* passed to load_tokenizer */
    int shuffle;                /* 1: shuffle the items (see above) before selecting */
    uint64_t seed;              /* shuffle seed */
    const reap_roots *roots;    /* a service's roots: the file must be a regular file
                                   under one of them once its links are resolved
                                   (fsopen.h), else REAP_E_DENIED. NULL: unconfined, and
                                   the file may also be a FIFO or a pipe (`--calib
                                   /dev/stdin`), read whole before parsing */
    reap_stop_fn should_stop;   /* asked while a FIFO or pipe has no data (about every
                                   100 ms); non-zero ends the load with REAP_E_CANCELLED.
                                   May be NULL (then the load waits for the writer) */
    void *stop_ud;              /* passed to should_stop */
    /* Images (see above). */
    int has_vision;             /* 1: the model has a vision tower; 0: an item with an
                                   image is refused (REAP_E_UNSUPPORTED, file, line,
                                   item) */
    int spatial_merge;          /* the vision tower's spatial_merge_size (Qwen3-VL: 2);
                                   must be >= 1 when has_vision */
    reap_image_probe_fn probe_image;
                                /* the image probe; NULL: image items are refused
                                   (REAP_E_UNSUPPORTED: this program reads no images) */
    void *probe_ud;             /* passed to probe_image */
} reap_calib_opts;

/* Read the samples of opts->path into *out (free with reap_samples_free); s.line[i] is
 * the line where sample i's item starts.
 * Returns REAP_OK, REAP_E_IO (cannot open or read the file), REAP_E_NOTFOUND (no such
 * file), REAP_E_INVALID also for a file that is not a regular file (nor, unconfined, a
 * FIFO or pipe): a directory, a device, a socket; REAP_E_DENIED (outside the roots),
 * REAP_E_CANCELLED (should_stop said so while a FIFO had no data), REAP_E_FORMAT
 * (invalid JSON, invalid UTF-8, an item that is not an object or has none of the known
 * keys, a field of the wrong type, empty input_ids or text), REAP_E_INVALID (a token id
 * out of range, an unknown role, an empty conversation, a text/messages item without a
 * tokenizer, a file with no samples, NULL opts), REAP_E_UNSUPPORTED ("messages" with a
 * tokenizer that has no <|im_start|>/<|im_end|> tokens; an image item for a model
 * without a vision tower, without an image probe, with a tokenizer lacking a vision
 * token, or naming a URL other than file://; a video part), REAP_E_NOMEM. For an image
 * item also: REAP_E_NOTFOUND (no such image), REAP_E_DENIED (an image outside the
 * roots), REAP_E_INVALID (an image that is not a regular file; a bad grid from the
 * probe; text that itself holds <|image_pad|>), or the probe's status. The message
 * names the file and line (and item index; and, for an image, which one and its path).
 * On failure *out is left empty. */
int reap_calib_load(const reap_calib_opts *opts, reap_samples *out);

/* reap_calib_load with no tokenizer and no shuffling (kept for existing callers):
 * at most max_samples samples (<= 0: all) of {"input_ids"} items, ids < vocab
 * (vocab <= 0: no check). */
int reap_samples_read_jsonl(const char *path, int64_t max_samples, int vocab,
                            reap_samples *out);

void reap_samples_free(reap_samples *s);

/* Free an array of n images and their paths (NULL is fine). */
void reap_calib_images_free(reap_calib_image *images, int32_t n);

/* Where an image's tokens sit in the rows: images[image].n_tokens consecutive slots of
 * one row from `start` (packing never cuts an image span). */
typedef struct reap_image_span {
    int32_t row, start;
    int32_t image;        /* index into reap_rows.images */
} reap_image_span;

typedef struct reap_rows {
    int n_rows;
    int seq_len;
    int32_t *tokens;    /* [n_rows * seq_len] */
    uint8_t *mask;      /* [n_rows * seq_len], 1 = valid token */
    int64_t n_valid;    /* number of mask-1 positions */
    /* Images whose spans are in the rows (0 / NULL for text-only rows), in calibration
     * order; spans sorted by (row, start). Owned; reap_rows_free frees them. The vision
     * tower's output for image i is images[i].n_tokens rows, images in index order. */
    int32_t n_images;
    reap_calib_image *images;
    int64_t n_spans;
    reap_image_span *spans;
} reap_rows;

/* Build rows from samples. pack != 0: packing as above; pack == 0: one row per sample.
 * The rows get a copy of the samples' images (every image span fits, or the call fails)
 * with the same indices, and their spans in row coordinates.
 * Returns REAP_OK, REAP_E_INVALID (seq_len < 1, no samples, an image span that does not
 * fit in an empty row - the message names s->source, the line, the item, the image and
 * its token count, and suggests --max-pixels or --seq-len; spans that do not lie inside
 * their sample), REAP_E_NOMEM. */
int reap_rows_build(const reap_samples *s, int seq_len, int pack, reap_rows *out);

void reap_rows_free(reap_rows *r);

/* Whether span k of `rows` lies inside them: it names one of the images, and that
 * image's n_tokens slots from span.start are slots of one of the rows. The one bounds
 * rule of a span; order, overlap and mask are the callers' (positions.h checks them).
 * Returns REAP_OK or REAP_E_INVALID (the message names the span and the rows' size). */
int reap_rows_span_check(const reap_rows *rows, int64_t k);

/* Which slots hold image tokens: slot[n_rows * seq_len] (row-major, like tokens) gets 1
 * for the <|image_pad|> slots of every span (the images[span.image].n_tokens slots from
 * span.start; REAP_MOD_IMAGE of stats.h) and 0 elsewhere (REAP_MOD_TEXT; vision_start
 * and vision_end are text). The one rule the backends use for statistics by modality.
 * Returns REAP_OK, or REAP_E_INVALID for a span outside the rows or naming no image
 * (the message names the span); slot is then unspecified. */
int reap_rows_image_slots(const reap_rows *rows, uint8_t *slot);

#endif

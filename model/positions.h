/* positions.h - the rotary (RoPE) position of every calibration slot.
 *
 * The rows ([n_rows, seq_len] tokens and mask, calib.h) do not say which position each
 * slot has: that is a rule of the model family, and it matters as soon as a row has a
 * masked slot before a valid one (packing puts one masked gap slot after each sample, so
 * every sample after the first one of a row). transformers numbers them as follows, and
 * reap does the same:
 *
 *   Qwen3-MoE (qwen3_moe): the slot's index in its row, 0 .. seq_len-1, whatever the
 *     mask says (the text model builds position ids from the slot index alone).
 *   Qwen3-VL-MoE (qwen3_vl_moe): the number of valid slots (mask 1) before the slot in
 *     its row, so positions count valid tokens only and a packing gap uses no position:
 *     row mask 1 1 1 0 1 1 0 0 -> positions 0 1 2 1 3 4 1 1. Masked slots get 1 (their
 *     value has no effect: a masked key is never attended to and a masked slot has no
 *     MoE output). This is Qwen3-VL's mRoPE index for text (get_rope_index without
 *     images: the cumulative sum of the mask minus one), where the three mRoPE axes are
 *     equal and mRoPE is plain 1-D RoPE.
 * Unpadded rows (every slot valid) get 0 .. seq_len-1 in both families; so do rows
 * padded only at the end, on their valid slots.
 *
 * Every position written is < reap_positions_limit(seq_len), the number of rows a RoPE
 * table needs.
 *
 * Images (qwen3_vl_moe, reap_positions_fill_mrope): with image spans Qwen3-VL gives each
 * slot three ids (t, h, w), as transformers' get_rope_index does. A row's valid slots are
 * walked in order with one counter p (starting at 0): a text slot gets p on all three
 * planes and p advances by one (the rule above); an image span of merged grid
 * gt x hm x wm (hm = grid_h / merge, wm = grid_w / merge; its n_tokens = gt * hm * wm slots
 * in frame-major, then row, then column order) gets t = p + frame, h = p + row,
 * w = p + column, and p continues one past the largest id the span used:
 * p + max(gt, hm, wm). <|vision_start|> / <|vision_end|> are ordinary text slots. Masked
 * slots get 1 on every plane. With no spans the three planes each equal what
 * reap_positions_fill writes. Since max(gt, hm, wm) <= gt * hm * wm, an id never exceeds
 * its slot's index in the row, so reap_positions_limit(seq_len) covers images too.
 *
 * Interleaved mRoPE (reap_mrope_plane): RoPE frequency slot i (0 <= i < head_dim / 2,
 * angle id * theta^(-2i/head_dim)) takes the h id when i % 3 == 1 and i < 3 *
 * mrope_section[1], the w id when i % 3 == 2 and i < 3 * mrope_section[2], else the t id
 * (transformers' apply_interleaved_mrope). With t = h = w this is plain 1-D RoPE.
 *
 * Thread rules: pure functions of their arguments; any number of threads may call them.
 */
#ifndef REAP_POSITIONS_H
#define REAP_POSITIONS_H

#include <stdint.h>

#include "calib.h"
#include "config.h"

/* Fill pos[n_rows * seq_len] (row-major, like rows->tokens) with the RoPE position of
 * every slot of `rows` under the rule of cfg->family (above). Reads only rows->mask.
 * Returns REAP_OK; REAP_E_INVALID for a NULL cfg, rows, rows->mask or pos, n_rows or
 * seq_len < 1, or a family without a rule (its number in the message). On failure pos
 * is left unspecified. */
int reap_positions_fill(const reap_config *cfg, const reap_rows *rows, int32_t *pos);

/* Fill pos3[3 * n_rows * seq_len] (plane 0 = t, 1 = h, 2 = w; each plane row-major like
 * rows->tokens) with the mRoPE ids of every slot (rules above). Reads rows->mask and, when
 * rows->n_spans > 0, rows->spans and rows->images; `merge` is the vision tower's
 * spatial_merge_size (read only with spans). Without spans any family is accepted (the
 * three planes are reap_positions_fill's positions).
 * Returns REAP_OK; REAP_E_INVALID for what reap_positions_fill refuses, and with spans:
 * a family other than qwen3_vl_moe, merge < 1, NULL spans or images, a span whose row or
 * image index is out of range, an image whose grid is not positive or not divisible by
 * merge, or whose n_tokens is not gt * hm * wm, a span that leaves its row, overlaps the
 * previous span or is out of (row, start) order, or covers a masked slot (the message names
 * the span, its row and start). On failure pos3 is left unspecified. */
int reap_positions_fill_mrope(const reap_config *cfg, const reap_rows *rows, int merge,
                              int32_t *pos3);

/* The mRoPE plane (0 = t, 1 = h, 2 = w) that RoPE frequency slot i of cfg's heads uses
 * (interleaved mRoPE above, with cfg->mrope_section); 0 for every slot when cfg has no
 * mRoPE (qwen3_moe: section all 0). */
int reap_mrope_plane(const reap_config *cfg, int i);

/* One more than the largest position reap_positions_fill or reap_positions_fill_mrope can
 * write for rows of
 * `seq_len` slots (any family, any mask): max(seq_len, 2), because a masked slot gets 1
 * even in a row of one slot. The number of rows of a RoPE table. seq_len < 1 gives 2. */
int reap_positions_limit(int seq_len);

#endif

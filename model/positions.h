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
 * Images (not implemented yet; how this extends): with image spans Qwen3-VL gives each
 * slot three ids (t, h, w). The extension is a sibling function that also takes each
 * row's image spans (first slot, merged grid t x h x w) and fills pos3 [3][n_rows *
 * seq_len] (plane 0 = t, 1 = h, 2 = w), walking a row's valid slots in order with one
 * counter p: a text slot gets p on all three planes and p advances by one (the rule
 * above); an image span gets t = p + frame, h = p + grid row, w = p + grid column, and p
 * continues one past the largest id the span used. Masked slots stay 1 on every plane.
 * With no spans its three planes each equal what reap_positions_fill writes, so the
 * text-only path of the backends (one position per slot) keeps working;
 * reap_positions_limit must then cover the largest id. Backends apply mRoPE by taking, per
 * frequency slot, the plane that the interleaved mrope_section assigns.
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

/* One more than the largest position reap_positions_fill can write for rows of
 * `seq_len` slots (any family, any mask): max(seq_len, 2), because a masked slot gets 1
 * even in a row of one slot. The number of rows of a RoPE table. seq_len < 1 gives 2. */
int reap_positions_limit(int seq_len);

#endif

/* vision.h - the Qwen3-VL vision tower on the CPU: preprocessed image patches in, merged
 * image features and deepstack features out (fp32 reference).
 *
 * Dimension legend:
 *   Np   patches of all images, sum over images of t * gh * gw
 *   D    values per patch, C * Tp * P * P (channels x temporal patch x patch x patch)
 *   Hv   vision hidden size, nh heads of hd = Hv / nh
 *   Iv   vision MLP width (intermediate_size)
 *   m    spatial_merge_size; a token merges m*m patches
 *   Nt   image tokens, Np / (m*m)
 *   Ho   out_hidden_size (= the language model's hidden size)
 *   Nd   deepstack feature sets, len(deepstack_visual_indexes)
 *
 * The forward pass (transformers' Qwen3VLMoeVisionModel; docs/calibration.md):
 *   x = patches @ Wpatch^T + b                  the Conv3d patch embedding as a linear map
 *   x += pos(gh, gw)                            the side x side learned table, bilinearly
 *                                               interpolated (float32 linspace, truncating
 *                                               floor, clipped ceiling), merge-block order
 *   per block: x += proj(attn(LN1(x)))          2-D rotary on q and k (hd/2 rotary dims,
 *              x += fc2(act(fc1(LN2(x))))       theta 1e4, row then column frequencies,
 *                                               rotate-half), full attention within each
 *                                               frame of each image; act = hidden_act
 *   after block deepstack_visual_indexes[k]:  deep[k] = merger_k(x)   (LayerNorm over m*m*Hv
 *                                               after grouping m*m patches)
 *   out = merger(x)                             LayerNorm over Hv, group m*m patches, Linear,
 *                                               exact erf GELU, Linear to Ho
 * LayerNorm eps is 1e-6. Patch rows come in the image processor's merge-block order: the
 * m*m patches of one merge block are consecutive, blocks in row-major order of the
 * (gh/m) x (gw/m) grid, frames one after another, images one after another.
 *
 * Numerics: fp32 activations; the GEMMs run on cpu_gemm (one fmaf chain per output
 * element, k ascending), LayerNorm and softmax sums accumulate in double in index order.
 * The results are therefore bit-identical whatever the thread count and whichever images
 * share a call (an image's output depends only on its own patches).
 *
 * Thread rules: a loaded reap_vision is read-only; several threads may run
 * reap_vision_forward on it at once with their own buffers. Each call uses up to
 * `threads` threads of its own. Lifetime: independent of the reap_ckpt it was read from
 * (the weights are copied, converted to fp32: 4 bytes per parameter, about 2.3 GB for
 * the tower of Qwen3-VL-235B-A22B). A forward call allocates about
 * Np * (3 * Hv + max(3 * Hv, Iv) + 2 * hd) floats of activations plus, per thread, the score
 * block of one frame (64 queries by gh * gw keys).
 */
#ifndef REAP_VISION_H
#define REAP_VISION_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"

/* Upper limits reap_vision_forward accepts for one call (REAP_E_INVALID above them). */
#define REAP_VISION_MAX_GRID 4096          /* gh, gw */
#define REAP_VISION_MAX_FRAMES 4096        /* t */
#define REAP_VISION_MAX_PATCHES (1 << 24)  /* Np of one call */

typedef struct reap_vision reap_vision;

/* Read the tower's model.visual.* tensors of `ck` (BF16, F16 or F32, converted to fp32)
 * as cfg->vision describes them:
 *   patch_embed.proj.weight [Hv, C, Tp, P, P] (+ .bias [Hv]), pos_embed.weight [n_pos, Hv],
 *   blocks.N.{norm1,norm2}.{weight,bias} [Hv], blocks.N.attn.qkv.weight [3Hv, Hv] (+ bias),
 *   blocks.N.attn.proj.weight [Hv, Hv] (+ bias), blocks.N.mlp.linear_fc1.weight [Iv, Hv]
 *   (+ bias), blocks.N.mlp.linear_fc2.weight [Hv, Iv] (+ bias),
 *   merger.norm.{weight,bias} [Hv], merger.linear_fc1.weight [m*m*Hv, m*m*Hv] (+ bias),
 *   merger.linear_fc2.weight [Ho, m*m*Hv] (+ bias), and for each deepstack entry K
 *   deepstack_merger_list.K.* alike but with norm [m*m*Hv].
 * (all names below "model.visual.").
 * Returns REAP_OK; REAP_E_INVALID (NULL argument, or cfg->vision.present == 0: the
 * checkpoint has no vision tower); REAP_E_FORMAT (a tensor missing or of another shape:
 * the message names the tensor, the expected shape and the shape found); REAP_E_UNSUPPORTED
 * (a dtype other than BF16/F16/F32, named); REAP_E_NUMERIC (NaN or Inf in a weight: the
 * message names the tensor and the element); REAP_E_NOMEM. On failure *out is NULL. */
int reap_vision_load(const reap_ckpt *ck, const reap_config *cfg, reap_vision **out);

/* Free a tower (NULL is fine). */
void reap_vision_free(reap_vision *v);

/* The configuration a tower was loaded with. */
const reap_vision_config *reap_vision_cfg(const reap_vision *v);

/* D, the values per patch row: C * Tp * P * P. */
int64_t reap_vision_patch_dim(const reap_vision_config *vc);

/* Check n_images grids (grids[3i .. 3i+2] = t, gh, gw of image i) against vc: t, gh, gw
 * at least 1 and at most the limits above, gh and gw multiples of m, the total patch
 * count at most REAP_VISION_MAX_PATCHES. Sets *n_patches (Np) and *n_tokens (Nt) when
 * not NULL. Returns REAP_OK or REAP_E_INVALID naming the image and the value. Pure. */
int reap_vision_grids_check(const reap_vision_config *vc, const int32_t *grids, int n_images,
                            int64_t *n_patches, int64_t *n_tokens);

/* Host bytes of the tower, as reap_vision_load and reap_vision_forward allocate them.
 *   weight_bytes  the loaded tower: every model.visual.* tensor in fp32 (4 bytes per
 *                 parameter), each linear's weight packed for cpu_gemm (its output rows
 *                 rounded up to a multiple of CPU_GEMM_NR = 16): patch embedding,
 *                 position table, depth x (norm1, norm2, qkv, proj, fc1, fc2), the merger
 *                 and the Nd deepstack mergers, biases included
 *   act_bytes     one reap_vision_forward call on n_patches patches whose largest frame
 *                 has frame_patches patches, with `threads` threads: 4 x (Np x (3 Hv +
 *                 max(3 Hv, Iv) + 2 hd) + threads x the attention scratch of one frame
 *                 (q, packed k, v^T, packed v^T, 64 x L scores, 64 x hd outputs))
 * Returns REAP_OK, or REAP_E_INVALID (NULL, vc->present 0, n_patches < 1, frame_patches
 * outside 1..n_patches, threads < 1). Pure. */
typedef struct reap_vision_mem {
    int64_t weight_bytes;
    int64_t act_bytes;
} reap_vision_mem;

int reap_vision_mem_plan(const reap_vision_config *vc, int64_t n_patches,
                         int64_t frame_patches, int threads, reap_vision_mem *out);

/* Run the tower on n_images images.
 *   patches       [Np, D] fp32, row-major, merge-block order (see above)
 *   grids         [n_images, 3] (t, gh, gw)
 *   threads       threads to use (>= 1; the result does not depend on it)
 *   out           [Nt, Ho] merged features, images concatenated in order
 *   deepstack_out [Nd, Nt, Ho] deepstack feature sets, set k after block
 *                 deepstack_visual_indexes[k]; may be NULL when Nd == 0
 * Returns REAP_OK; REAP_E_INVALID (NULL argument, n_images < 1, threads < 1, bad grids as
 * reap_vision_grids_check); REAP_E_NUMERIC (a NaN or Inf in the patches or in an
 * activation: the message names the image, the block and the stage); REAP_E_NOMEM. On
 * failure the contents of out and deepstack_out are unspecified. */
int reap_vision_forward(const reap_vision *v, const float *patches, const int32_t *grids,
                        int n_images, int threads, float *out, float *deepstack_out);

#endif

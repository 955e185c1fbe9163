/* weights.h - typed views of one decoder layer's tensors in a checkpoint.
 *
 * Dimension legend: H hidden, nH query heads, nKV key/value heads, hd head dim,
 * E experts, I expert width (moe_intermediate_size), Id dense MLP width, V vocab.
 *
 * reap_layer_weights_get() looks up every tensor of layer L, checks dtype (BF16, F16 or
 * F32) and shape against the configuration, and fills views that point into the mapped
 * checkpoint (no copies). Two expert layouts:
 *   REAP_EXPERTS_SPLIT: mlp.experts.e.{gate,up}_proj.weight [I, H], down_proj.weight [H, I]
 *   REAP_EXPERTS_FUSED: mlp.experts.gate_up_proj [E, H, 2I], mlp.experts.down_proj [E, I, H]
 *                       (transposed relative to nn.Linear; see checkpoint-formats facts)
 * reap_expert_to_f32() hides the layout: it produces the nn.Linear orientation.
 *
 * Thread rules: views are read-only; conversions may run concurrently.
 * Lifetime: views are valid while the reap_ckpt is open.
 */
#ifndef REAP_WEIGHTS_H
#define REAP_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "safetensors.h"

typedef enum reap_expert_layout {
    REAP_EXPERTS_SPLIT = 1,
    REAP_EXPERTS_FUSED = 2
} reap_expert_layout;

typedef struct reap_layer_weights {
    int layer;
    int is_moe;
    const st_tensor *input_norm;  /* [H] */
    const st_tensor *post_norm;   /* [H] */
    const st_tensor *q_proj;      /* [nH*hd, H] */
    const st_tensor *k_proj;      /* [nKV*hd, H] */
    const st_tensor *v_proj;      /* [nKV*hd, H] */
    const st_tensor *o_proj;      /* [H, nH*hd] */
    const st_tensor *q_norm;      /* [hd] */
    const st_tensor *k_norm;      /* [hd] */
    /* MoE layers */
    const st_tensor *router;      /* [E, H] */
    reap_expert_layout layout;
    const st_tensor **gate;       /* SPLIT: [E] views of [I, H] */
    const st_tensor **up;         /* SPLIT: [E] views of [I, H] */
    const st_tensor **down;       /* SPLIT: [E] views of [H, I] */
    const st_tensor *gate_up;     /* FUSED: [E, H, 2I] */
    const st_tensor *down_fused;  /* FUSED: [E, I, H] */
    /* dense layers */
    const st_tensor *mlp_gate;    /* [Id, H] */
    const st_tensor *mlp_up;      /* [Id, H] */
    const st_tensor *mlp_down;    /* [H, Id] */
} reap_layer_weights;

/* Fill `out` for layer `layer`. Returns REAP_OK, REAP_E_NOTFOUND (missing tensor, named),
 * REAP_E_FORMAT (dtype or shape inconsistent with the config; message names the tensor,
 * its shape and the expected shape), REAP_E_NOMEM. Free with reap_layer_weights_free. */
int reap_layer_weights_get(const reap_ckpt *ck, const reap_config *cfg, int layer,
                           reap_layer_weights *out);
void reap_layer_weights_free(reap_layer_weights *w);

/* The token embedding [V, H]; checked against the config. */
int reap_embed_weights_get(const reap_ckpt *ck, const reap_config *cfg,
                           const st_tensor **out);

/* Convert n elements of tensor t starting at element `first` to fp32.
 * Returns REAP_OK, REAP_E_UNSUPPORTED (dtype not BF16/F16/F32), REAP_E_NUMERIC (NaN or
 * Inf found; the message names the tensor and the element index). */
int reap_tensor_to_f32(const st_tensor *t, int64_t first, int64_t n, float *dst);

/* Expert e of a MoE layer in nn.Linear orientation, fp32:
 * gate [I, H], up [I, H], down [H, I] (any may be NULL to skip it).
 * Same errors as reap_tensor_to_f32. */
int reap_expert_to_f32(const reap_layer_weights *w, const reap_config *cfg, int e,
                       float *gate, float *up, float *down);

/* Scalar conversions. */
float reap_bf16_to_f32(uint16_t v);
float reap_f16_to_f32(uint16_t v);
uint16_t reap_f32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */
uint16_t reap_f32_to_f16(float f);   /* round to nearest even */

#endif

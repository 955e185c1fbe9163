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
 * AWQ int4 (cfg->quant.method == REAP_QUANT_AWQ; docs/awq.md): every linear (q/k/v/o,
 * per-expert gate/up/down, dense gate/up/down) is either plain (`<module>.weight`, the
 * st_tensor view is set) or AWQ GEMM (`<module>.qweight/.qzeros/.scales`, the matching
 * reap_awq_linear view has qweight != NULL); which one is decided by the tensors present.
 * A module stored as AWQ but named by modules_to_not_convert, both forms present, or an
 * AWQ tensor in a checkpoint whose config has no AWQ quantization_config are format
 * errors. The router (mlp.gate) and the norms are never quantised; fused experts
 * ([E, H, 2I] / [E, I, H]) are always plain. For a quantised linear with in_features K,
 * out_features N and group g (the config's group_size):
 *   qweight I32 [K, N/8]    eight 4-bit values per int32, LSB first: nibble i of word
 *                           [k][c] holds column 8c + REAP_AWQ_ORDER[i] (AutoAWQ order
 *                           0 2 4 6 1 3 5 7); column 8c + j sits in nibble
 *                           REAP_AWQ_NIBBLE(j) = 0 4 1 5 2 6 3 7
 *   qzeros  I32 [K/g, N/8]  the zero points, packed the same way
 *   scales  F16 [K/g, N]
 *   W[n][k] = (q[k][n] - z[k/g][n]) * s[k/g][n]   (q, z unsigned 0..15; W is [N, K])
 * reap_awq_to_f32() dequantises one linear; reap_linear_to_f32() and
 * reap_expert_to_f32() take either form. In fp32 the dequantised value is exact (a
 * 5-bit integer times an f16), so every backend sees the same weights.
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

/* Column j of a packed AWQ word is nibble REAP_AWQ_NIBBLE(j) (bits 4n .. 4n+3). */
#define REAP_AWQ_NIBBLE(j) ((((j) >> 1) | (((j) & 1) << 2)))

/* The AutoAWQ packing order: nibble i holds column 8c + reap_awq_order[i]. */
extern const int reap_awq_order[8];

/* One AWQ-quantised linear (GEMM packing). Set iff qweight != NULL. */
typedef struct reap_awq_linear {
    const st_tensor *qweight;     /* I32 [K, N/8] */
    const st_tensor *qzeros;      /* I32 [K/g, N/8] */
    const st_tensor *scales;      /* F16 [K/g, N] */
    int64_t in;                   /* K, in_features */
    int64_t out;                  /* N, out_features */
    int64_t group;                /* g */
} reap_awq_linear;

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
    /* AWQ views: for each linear exactly one of the plain view above (NULL when
     * quantised) and its reap_awq_linear (qweight NULL when plain) is set. */
    int n_awq;                    /* quantised linears in this layer (0: none) */
    reap_awq_linear q_awq;        /* K = H, N = nH*hd */
    reap_awq_linear k_awq, v_awq; /* K = H, N = nKV*hd */
    reap_awq_linear o_awq;        /* K = nH*hd, N = H */
    reap_awq_linear *gate_awq;    /* SPLIT: [E] (K = H, N = I); NULL in FUSED layers */
    reap_awq_linear *up_awq;      /* SPLIT: [E] (K = H, N = I) */
    reap_awq_linear *down_awq;    /* SPLIT: [E] (K = I, N = H) */
    reap_awq_linear mlp_gate_awq, mlp_up_awq; /* K = H, N = Id */
    reap_awq_linear mlp_down_awq; /* K = Id, N = H */
} reap_layer_weights;

/* Fill `out` for layer `layer`. Returns REAP_OK, REAP_E_NOTFOUND (missing tensor, named),
 * REAP_E_FORMAT (dtype or shape inconsistent with the config; message names the tensor,
 * its shape and the expected shape; AWQ tensors that contradict the quantization_config),
 * REAP_E_UNSUPPORTED (a quantised router), REAP_E_NOMEM. Free with
 * reap_layer_weights_free (also after a failure: it is then already freed, and a second
 * free is harmless). */
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

/* Dequantise AWQ linear `a` into dst [N, K] (nn.Linear orientation), fp32, exactly
 * (q - z) * s. Returns REAP_OK, REAP_E_INTERNAL (no qweight, or views whose sizes
 * disagree), REAP_E_NUMERIC (a non-finite scale; the message names the scales tensor and
 * the element). */
int reap_awq_to_f32(const reap_awq_linear *a, float *dst);

/* Rows [k0, k1) of AWQ linear `a` (k0, k1 multiples of the group size, or k1 == K):
 * dst[n * ld + (k - k0)] for n < N, k0 <= k < k1. Same errors as reap_awq_to_f32. */
int reap_awq_rows_to_f32(const reap_awq_linear *a, int64_t k0, int64_t k1, float *dst,
                         int64_t ld);

/* A linear in nn.Linear orientation [N, K], fp32, from whichever view is set: `plain`
 * (converted as reap_tensor_to_f32) or `awq` (dequantised). Either may be NULL.
 * Returns REAP_E_INTERNAL when neither is set, else the converter's status. */
int reap_linear_to_f32(const st_tensor *plain, const reap_awq_linear *awq, float *dst);

/* Expert e of a MoE layer in nn.Linear orientation, fp32:
 * gate [I, H], up [I, H], down [H, I] (any may be NULL to skip it); AWQ experts are
 * dequantised. Same errors as reap_tensor_to_f32 / reap_awq_to_f32. */
int reap_expert_to_f32(const reap_layer_weights *w, const reap_config *cfg, int e,
                       float *gate, float *up, float *down);

/* Scalar conversions. */
float reap_bf16_to_f32(uint16_t v);
float reap_f16_to_f32(uint16_t v);
uint16_t reap_f32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */
uint16_t reap_f32_to_f16(float f);   /* round to nearest even */

#endif

/* genmodel.h - tiny deterministic Qwen3-MoE / Qwen3-VL-MoE checkpoints and calibration
 * files for tests.
 *
 * reap_gen_model() writes a complete Hugging Face checkpoint directory: config.json,
 * the safetensors shard(s) and model.safetensors.index.json. Values are seeded random
 * numbers, so the checkpoint exercises every code path of the scorer and the pruner
 * without any real weights; the float64 oracle (tests/oracle/reap_oracle.py) computes
 * the expected statistics from the same files.
 *
 * Determinism: every tensor is generated from its own stream, seeded by
 * splitmix64(seed ^ fnv1a64(tensor name)); a xoshiro256** generator feeds Box-Muller
 * normals (both outputs used, in order), written in storage (row-major) order. The value
 * of a tensor therefore depends only on (seed, name, shape), never on the shard count,
 * the dtype (up to rounding) or the other tensors. Rounding to BF16/F16 is
 * round-to-nearest-even (reap_f32_to_bf16 / reap_f32_to_f16).
 *
 * Distributions (x ~ N(0,1)):
 *   embed_tokens [V, H]                       x
 *   *_layernorm, norm, q_norm, k_norm         1 + 0.1 x
 *   mlp.gate.weight (router) [E, H]           2 x / sqrt(H)   (well separated logits)
 *   every other linear weight                 x / sqrt(fan_in)  (activations stay O(1))
 *   fan_in: the `in` dimension: [out, in] for nn.Linear tensors, dim 1 of the fused
 *   gate_up_proj [E, H, 2I] (H) and down_proj [E, I, H] (I).
 *
 * AWQ (spec.awq, docs/awq.md): REAP_GEN_AWQ writes an AWQ int4 GEMM checkpoint: every
 * linear that is quantised (below) becomes <module>.qweight I32 [K, N/8], .qzeros I32
 * [K/g, N/8] and .scales F16 [K/g, N], made by gen_awq.h from the module's own stream
 * (approximately normal weights of the same std, drawn per quantisation group, quantised
 * with scales rounded to 4 significant bits), and config.json gets a quantization_config
 * {"quant_method": "awq", "bits": 4, "group_size": g, "zero_point": true, "version":
 * "gemm", "modules_to_not_convert": [...]}. REAP_GEN_AWQ_TWIN writes the same model
 * unquantised: each such linear is <module>.weight [N, K] in `dtype` holding exactly the
 * dequantised values (q - z) * s (exact in BF16/F16/F32), no quantization_config. Every
 * other tensor is identical in both. Quantised: q/k/v/o_proj (unless awq_attention is 0),
 * per-expert gate/up/down_proj (split layout; fused experts stay plain) and dense MLP
 * projections, minus every module whose name contains an entry of
 * modules_to_not_convert = ["model.visual" (qwen3_vl_moe), "mlp.gate" (with MoE layers:
 * the router, and by substring also dense gate_proj), "self_attn" (awq_attention 0),
 * awq_skip...]. The router, norms, embeddings and lm_head are never quantised.
 *
 * Memory: tensors are generated one at a time inside st_write_file's fill callback;
 * peak memory is the largest tensor (plus a float buffer of its element count). AWQ:
 * a module is quantised once per shard (qweight comes first in file order); its zeros
 * and scales are kept until its scales are written (3 bytes per K/g x N entry).
 *
 * Shards: tensors are listed in model order (embed, layer 0..L-1, norm, lm_head, then
 * the vision stub or tower) and cut into n_shards contiguous, non-empty groups of roughly equal
 * bytes. n_shards == 1 writes model.safetensors; otherwise
 * model-%05d-of-%05d.safetensors. The index is written in both cases.
 *
 * Thread rules: the functions share no state; concurrent calls must use different
 * output paths. Errors are reported through reap_err (common/reap_err.h).
 */
#ifndef REAP_GENMODEL_H
#define REAP_GENMODEL_H

#include <stdint.h>

#include "config.h"
#include "safetensors.h"
#include "weights.h"

#define REAP_GEN_MAX_MLP_ONLY 64
#define REAP_GEN_MAX_AWQ_SKIP 16

typedef enum reap_gen_quant {
    REAP_GEN_PLAIN = 0,        /* BF16/F16/F32 tensors only */
    REAP_GEN_AWQ = 1,          /* AWQ int4 GEMM checkpoint */
    REAP_GEN_AWQ_TWIN = 2      /* the AWQ model dequantised, as plain tensors */
} reap_gen_quant;

#define REAP_GEN_MAX_DEEPSTACK 8

/* The vision tower of a qwen3_vl_moe checkpoint. enabled 0 (the default) keeps the
 * two-tensor stub (patch embedding only, vision_config depth 0: no usable tower), so
 * text-only test checkpoints are unchanged. enabled 1 writes a real tower (vision.h)
 * and a preprocessor_config.json:
 *   model.visual.patch_embed.proj.weight [Hv, 3, Tp, P, P]  x / sqrt(3 Tp P P)
 *   model.visual.pos_embed.weight [side*side, Hv]           0.5 x
 *   blocks.N.norm{1,2}.weight, merger norms                  1 + 0.1 x
 *   every bias, every LayerNorm bias                         0.1 x
 *   every linear weight [out, in]                            x / sqrt(in)
 * vision_config: depth, hidden_size, num_heads, intermediate_size, hidden_act
 * gelu_pytorch_tanh, in_channels 3, patch_size, temporal_patch_size, spatial_merge_size,
 * num_position_embeddings side*side, out_hidden_size = H, deepstack_visual_indexes.
 * preprocessor_config.json as Qwen3-VL ships it: patch_size, temporal_patch_size,
 * merge_size, image_mean = image_std = 0.5, size {shortest_edge: min_pixels,
 * longest_edge: max_pixels}, Qwen2VLImageProcessor. */
typedef struct reap_gen_vision {
    int enabled;               /* 1: a real tower (qwen3_vl_moe only) */
    int depth;                 /* blocks (3) */
    int hidden;                /* Hv (32) */
    int n_heads;               /* Hv / n_heads a multiple of 4 (2) */
    int inter;                 /* Iv (64) */
    int patch;                 /* P (4) */
    int temporal_patch;        /* Tp (2) */
    int merge;                 /* m (2) */
    int pos_side;              /* position table side; num_position_embeddings = side^2 (8) */
    int n_deepstack;           /* 0..REAP_GEN_MAX_DEEPSTACK (2) */
    int deepstack[REAP_GEN_MAX_DEEPSTACK]; /* strictly increasing, < depth ([0, 2]) */
    int min_pixels;            /* size.shortest_edge (1024) */
    int max_pixels;            /* size.longest_edge (16384) */
} reap_gen_vision;

typedef struct reap_gen_spec {
    reap_family family;        /* REAP_FAMILY_QWEN3_MOE or REAP_FAMILY_QWEN3_VL_MOE */
    reap_expert_layout layout; /* REAP_EXPERTS_SPLIT (per-expert .weight tensors) or
                                  REAP_EXPERTS_FUSED (gate_up_proj [E,H,2I],
                                  down_proj [E,I,H]); 0: the family's own (split for
                                  qwen3_moe, fused for qwen3_vl_moe) */
    int n_layers;              /* num_hidden_layers, >= 1 */
    int hidden;                /* H */
    int n_heads;               /* nH */
    int n_kv_heads;            /* nKV, divides nH */
    int head_dim;              /* hd, even; written to config.json */
    int n_experts;             /* E, >= 1 */
    int top_k;                 /* K, 1..E */
    int moe_inter;             /* I, moe_intermediate_size */
    int inter;                 /* intermediate_size (dense layers), >= 1 */
    int vocab;                 /* V */
    int norm_topk_prob;        /* written to config.json (qwen3_vl_moe renormalises
                                  whatever it says) */
    int decoder_sparse_step;   /* >= 1 */
    int n_mlp_only;            /* 0..REAP_GEN_MAX_MLP_ONLY */
    int mlp_only_layers[REAP_GEN_MAX_MLP_ONLY]; /* layers with a dense MLP */
    double rope_theta;
    double rms_eps;
    st_dtype dtype;            /* ST_BF16, ST_F16 or ST_F32 */
    int n_shards;              /* 1..number of tensors */
    int tie_word_embeddings;   /* 1: no lm_head.weight */
    uint64_t seed;
    reap_gen_quant awq;        /* REAP_GEN_PLAIN (default), _AWQ or _AWQ_TWIN */
    int awq_group_size;        /* g (128); divides the in_features of quantised linears */
    int awq_attention;         /* 1 (default): q/k/v/o_proj quantised too */
    int n_awq_skip;            /* 0..REAP_GEN_MAX_AWQ_SKIP */
    char awq_skip[REAP_GEN_MAX_AWQ_SKIP][128]; /* more modules_to_not_convert entries */
    reap_gen_vision vision;    /* qwen3_vl_moe: the vision tower (see above) */
} reap_gen_spec;

/* Fill `spec` with a small valid default: qwen3_moe, family layout, 2 layers, H 64,
 * 4 heads, 2 KV heads, hd 16, E 8, K 2, I 32, inter 64, V 128, norm_topk_prob 1,
 * sparse step 1, rope_theta 10000 (qwen3_moe) / 5e6 (qwen3_vl_moe), eps 1e-6, BF16,
 * 1 shard, seed 1, unquantised (AWQ settings: group 128, attention quantised), vision
 * tower off (its sizes: the defaults in reap_gen_vision).
 * `family` selects the family (and its rope_theta default). */
void reap_gen_spec_default(reap_gen_spec *spec, reap_family family);

/* Check a spec: sizes positive, nKV divides nH, hd even, K <= E, dtype BF16/F16/F32,
 * mlp_only layer ids in range, n_shards within 1..number of tensors; a vision tower only
 * for qwen3_vl_moe, its sizes positive, Hv / heads a multiple of 4, deepstack indexes
 * increasing below depth, min_pixels <= max_pixels; with AWQ, the group
 * size divides the in_features and 8 the out_features of every linear kind that may be
 * quantised (attention when awq_attention, split experts, dense MLPs).
 * Returns REAP_OK, REAP_E_INVALID (the message names the field) or REAP_E_NOMEM. */
int reap_gen_spec_check(const reap_gen_spec *spec);

/* Write the checkpoint described by `spec` into directory `dir` (created if missing;
 * existing files of the same names are replaced): config.json, the shard(s) and
 * model.safetensors.index.json (metadata.total_size = sum of tensor data bytes;
 * weight_map: every tensor -> its shard). For qwen3_vl_moe, config.json nests the
 * language-model fields in "text_config" and carries a "vision_config": without
 * spec.vision.enabled a stub (depth 0) and two tiny "model.visual.*" tensors (the scorer
 * and pruner must ignore them); with it the full tower above after the language model's
 * tensors, and preprocessor_config.json beside config.json.
 * Returns REAP_OK, REAP_E_INVALID (bad spec), REAP_E_IO, REAP_E_NOMEM. */
int reap_gen_model(const reap_gen_spec *spec, const char *dir);

/* Number of tensors reap_gen_model writes for `spec` (0 if the spec is invalid). */
int reap_gen_n_tensors(const reap_gen_spec *spec);

/* Write `n_samples` calibration samples as JSON Lines {"input_ids": [...]} to `path`
 * (atomically: temp file, fsync, rename). Lengths are uniform in [min_len, max_len],
 * ids uniform in [0, vocab); deterministic in `seed`.
 * Returns REAP_OK, REAP_E_INVALID (n_samples < 1, 1 <= min_len <= max_len violated,
 * vocab < 1), REAP_E_IO. */
int reap_gen_calib(const char *path, int n_samples, int min_len, int max_len, int vocab,
                   uint64_t seed);

#endif

/* config.h - the language-model configuration of a Qwen3-MoE family checkpoint.
 *
 * reap_config_load() reads config.json for model_type "qwen3_moe" (fields at top level)
 * and "qwen3_vl_moe" (fields in "text_config"), tolerating the field-name drift of newer
 * transformers: num_experts | num_local_experts, rope_theta | rope_parameters.rope_theta.
 * Defaults follow the transformers classes: head_dim = hidden_size / num_attention_heads,
 * norm_topk_prob false (qwen3_moe; always true for qwen3_vl_moe), decoder_sparse_step 1,
 * mlp_only_layers [], rms_norm_eps 1e-6, rope_theta 10000 (qwen3_moe) / 5e6 (qwen3_vl_moe).
 *
 * Layer L is MoE iff L not in mlp_only_layers, n_experts > 0 and
 * (L + 1) % decoder_sparse_step == 0 (reap_config_layer_is_moe).
 *
 * mRoPE (qwen3_vl_moe): text_config's "rope_scaling" (or "rope_parameters", the name newer
 * transformers writes) gives "mrope_section" [t, h, w] (three non-negative integers
 * summing to head_dim / 2) and "mrope_interleaved" (true; false, Qwen2-VL's chunked
 * layout, is refused: Qwen3-VL always interleaves). Without mrope_section the
 * transformers default [24, 20, 20] is taken as it is (not checked against head_dim, as
 * transformers does not). qwen3_moe: no mRoPE (section all 0). How a frequency slot picks
 * its axis: reap_mrope_plane (positions.h).
 *
 * Quantisation: a "quantization_config" object (top level, else in text_config) is read
 * into cfg->quant. Only AWQ int4 GEMM checkpoints are accepted (docs/awq.md):
 * quant_method "awq", bits (or w_bit) 4, group_size (or q_group_size) > 0, zero_point
 * true (default), version (absent, or "gemm" in any case), modules_to_not_convert (null,
 * or an array of strings matched as substrings of module names). Every other method
 * (compressed-tensors, gptq, fp8, bitsandbytes, ...; also a "compression_config") is
 * refused with REAP_E_UNSUPPORTED naming the method. Without one, quant.method is
 * REAP_QUANT_NONE.
 */
#ifndef REAP_CONFIG_H
#define REAP_CONFIG_H

#include "fsopen.h"

/* Upper limits reap_config_load accepts (REAP_E_INVALID above them, naming the field):
 * generous against every released model (the largest have ~130 layers, hidden 16384,
 * 384 experts, 256k vocabularies) and small enough that nothing sized from a config
 * value (per-layer tables, buffers, loops over layers) can grow out of bounds before
 * the checkpoint's tensors are checked (config_check.h). */
#define REAP_CONFIG_MAX_LAYERS 1024        /* num_hidden_layers */
#define REAP_CONFIG_MAX_HIDDEN 65536       /* hidden_size */
#define REAP_CONFIG_MAX_HEADS 1024         /* num_attention_heads, num_key_value_heads */
#define REAP_CONFIG_MAX_HEAD_DIM 1024      /* head_dim */
#define REAP_CONFIG_MAX_EXPERTS 16384      /* num_experts (top-k <= num_experts) */
#define REAP_CONFIG_MAX_INTER 1048576      /* intermediate_size, moe_intermediate_size */
#define REAP_CONFIG_MAX_VOCAB 16777216     /* vocab_size */

typedef enum reap_family {
    REAP_FAMILY_QWEN3_MOE = 1,
    REAP_FAMILY_QWEN3_VL_MOE = 2
} reap_family;

typedef enum reap_quant_method {
    REAP_QUANT_NONE = 0,       /* no quantization_config: BF16/F16/F32 tensors */
    REAP_QUANT_AWQ = 1         /* AWQ int4, GEMM packing (weights.h) */
} reap_quant_method;

typedef struct reap_quant_config {
    reap_quant_method method;
    int bits;                  /* 4 */
    int group_size;            /* g: input rows sharing one scale / zero row */
    int zero_point;            /* 1 */
    char version[16];          /* "gemm" (lower case) */
    int n_not_convert;
    char **not_convert;        /* [n_not_convert] modules_to_not_convert, owned */
} reap_quant_config;

/* ---- vision tower (qwen3_vl_moe "vision_config") -------------------------------------
 * Read by reap_config_load into reap_config.vision for model_type qwen3_vl_moe. Absent
 * fields take the transformers defaults of Qwen3VLMoeVisionConfig (depth 27, hidden
 * 1152, gelu_pytorch_tanh, intermediate 4304, 16 heads, 3 channels, patch 16, merge 2,
 * temporal patch 2, 2304 positions, deepstack [8, 16, 24]), except out_hidden_size,
 * which defaults to text_config.hidden_size (transformers' 3584 fits no released MoE
 * model, and the features must have the text width).
 * present = 0 when there is no usable tower: qwen3_moe, no vision_config, or depth 0
 * (the stub reap-genmodel writes without --vision). When present, the values are
 * checked: each within its limit below; num_heads divides hidden_size; the head dim is
 * a multiple of 4 (2-D rotary over head_dim/2) and at most REAP_CONFIG_MAX_HEAD_DIM;
 * num_position_embeddings is a perfect square; out_hidden_size equals
 * text_config.hidden_size (merged features replace token embeddings);
 * deepstack_visual_indexes increase strictly, each in [0, depth); hidden_act is
 * "gelu_pytorch_tanh" / "gelu_new" (tanh GELU) or "gelu" (erf GELU). */
#define REAP_VISION_MAX_DEPTH 1024
#define REAP_VISION_MAX_HIDDEN 65536       /* hidden_size, out_hidden_size */
#define REAP_VISION_MAX_HEADS 1024
#define REAP_VISION_MAX_INTER 1048576
#define REAP_VISION_MAX_PATCH 1024         /* patch_size */
#define REAP_VISION_MAX_SMALL 16           /* temporal_patch_size, spatial_merge_size,
                                              in_channels */
#define REAP_VISION_MAX_POS 1048576        /* num_position_embeddings */
#define REAP_VISION_MAX_DEEPSTACK 64       /* entries of deepstack_visual_indexes */

typedef enum reap_vision_act {
    REAP_VISION_ACT_GELU_TANH = 1,         /* gelu_pytorch_tanh, gelu_new */
    REAP_VISION_ACT_GELU_ERF = 2           /* gelu */
} reap_vision_act;

typedef struct reap_vision_config {
    int present;               /* 1: a tower to run; 0: the fields below are zero */
    int depth;                 /* blocks */
    int hidden;                /* Hv, hidden_size */
    int n_heads;               /* num_heads */
    int head_dim;              /* Hv / num_heads (derived) */
    int inter;                 /* Iv, intermediate_size */
    reap_vision_act act;       /* hidden_act of the block MLP */
    int patch;                 /* P, patch_size */
    int temporal_patch;        /* Tp, temporal_patch_size */
    int merge;                 /* m, spatial_merge_size */
    int in_channels;           /* C */
    int n_pos;                 /* num_position_embeddings = side * side */
    int pos_side;              /* sqrt(num_position_embeddings) (derived) */
    int out_hidden;            /* out_hidden_size (= text hidden) */
    int n_deepstack;           /* entries of deepstack_visual_indexes */
    int deepstack[REAP_VISION_MAX_DEEPSTACK]; /* block indexes, strictly increasing */
} reap_vision_config;

typedef struct reap_config {
    reap_family family;
    char model_type[32];       /* as written in config.json */
    char prefix[32];           /* tensor name prefix of the decoder: "model." or
                                  "model.language_model." */
    int n_layers;              /* num_hidden_layers */
    int hidden;                /* H, hidden_size */
    int n_heads;               /* num_attention_heads */
    int n_kv_heads;            /* num_key_value_heads */
    int head_dim;              /* hd */
    int vocab;                 /* vocab_size */
    int n_experts;             /* E */
    int n_experts_used;        /* K, num_experts_per_tok */
    int moe_inter;             /* I, moe_intermediate_size */
    int inter;                 /* dense MLP width, intermediate_size (0 if absent) */
    int norm_topk_prob;        /* 1: renormalise top-k weights */
    int decoder_sparse_step;
    int n_mlp_only;
    int *mlp_only_layers;      /* [n_mlp_only], owned */
    double rms_eps;
    double rope_theta;
    int tie_word_embeddings;
    /* mRoPE of the text model (qwen3_vl_moe; all 0 for qwen3_moe). */
    int mrope_interleaved;     /* 1: interleaved mRoPE (the only layout supported) */
    int mrope_section[3];      /* frequency slots per axis t, h, w */
    reap_quant_config quant;   /* method REAP_QUANT_NONE unless quantised */
    reap_vision_config vision; /* qwen3_vl_moe vision_config (present 0 otherwise) */
} reap_config;

/* Parse `path` (a config.json). Returns REAP_OK, REAP_E_IO, REAP_E_NOTFOUND (no such
 * file), REAP_E_INVALID also for a file that is not a regular file (a FIFO is refused
 * without waiting, fsopen.h), REAP_E_FORMAT (bad JSON or
 * a field of the wrong type, named in the message), REAP_E_UNSUPPORTED (other
 * model_type, attention_bias true, a quantisation method or AWQ setting other than the
 * ones above, named; mrope_interleaved false; a vision_config hidden_act other than the
 * GELUs above), REAP_E_INVALID (a value outside its limit above, or inconsistent values:
 * heads not divisible by kv heads, top_k > experts, an mrope_section that does not sum to
 * head_dim / 2, a vision_config breaking the rules above, ...; the message names `path`
 * and the field, e.g. "vision_config.num_heads"). The values are not checked against the tensors here: see
 * reap_config_check_ckpt (config_check.h). On failure *out is left zeroed. Free with
 * reap_config_free (it owns mlp_only_layers and quant.not_convert). Thread rules: a
 * loaded configuration is read-only; any number of threads may read it. */
int reap_config_load(const char *path, reap_config *out);

/* reap_config_load for a service: the file must also lie under `roots` once its links
 * are resolved (fsopen.h; NULL: unconfined), else REAP_E_DENIED; not a regular file
 * (a FIFO, ...): REAP_E_INVALID; missing: REAP_E_NOTFOUND. */
int reap_config_load_confined(const char *path, const reap_roots *roots, reap_config *out);

void reap_config_free(reap_config *cfg);

/* 1 if layer `layer` has a sparse MoE block, 0 if it has a dense MLP. */
int reap_config_layer_is_moe(const reap_config *cfg, int layer);

/* Number of MoE layers. */
int reap_config_n_moe_layers(const reap_config *cfg);

/* Index of the first modules_to_not_convert entry that is a substring of `module` (a
 * module name without the tensor suffix, e.g. "model.layers.3.mlp.experts.7.up_proj"),
 * or -1 when none is (always -1 for an unquantised configuration, or NULL arguments).
 * Pure. */
int reap_config_not_converted(const reap_config *cfg, const char *module);

#endif

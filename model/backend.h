/* backend.h - the compute backend interface of the scoring engine.
 *
 * A backend holds the hidden states of every calibration position ([T, H] fp32 on the
 * CPU backend, device memory on CUDA; T = n_rows * seq_len) and one layer's weights at a
 * time. The engine drives it layer by layer:
 *
 *     init(cfg, rows, opts) -> ctx
 *     embed(ctx, embed_tokens)                 hidden = E[token]
 *     scatter_rows(ctx, slots, n, image, 0)    images: hidden[slots] = merged features
 *     for each layer L:
 *         load_layer(ctx, weights of L)        make L's weights resident (convert/copy)
 *         forward_layer(ctx, stats or NULL)    hidden = layer_L(hidden); MoE statistics
 *         scatter_rows(ctx, slots, n, ds, 1)   images, L < n_deepstack: hidden[slots] +=
 *                                              deepstack feature set L
 *     free(ctx)
 *
 * forward_layer semantics (the contract every backend meets; the CPU backend is the
 * reference, see cpu/backend_cpu.c):
 *   attention: x = hidden; a = rmsnorm(x, input_norm); q,k,v projections; per-head
 *     RMSNorm of q and k over hd (q_norm, k_norm) BEFORE RoPE; NeoX rotate-half RoPE at
 *     the slot's (t, h, w) ids as reap_positions_fill_mrope (positions.h) gives them for
 *     cfg->family, the rows' mask and image spans (text: qwen3_moe the index in the row,
 *     0..seq_len-1; qwen3_vl_moe the number of valid slots before it in the row, the same
 *     on all three planes; image spans: the merged grid's frame, row and column from the
 *     span's first id, with opts->spatial_merge), computed once at init. Frequency slot
 *     i of hd/2 rotates by the angle id * inv_freq_i, inv_freq_i = theta^(-2i/hd), where
 *     id is the plane reap_mrope_plane(cfg, i) picks (interleaved mRoPE; t for qwen3_moe);
 *     the cos/sin come from ONE table of reap_positions_limit(seq_len) ids x hd/2 whose
 *     angles are computed in fp64 and rounded to fp32 once, indexed by the chosen id, so
 *     text (t = h = w) gives exactly the 1-D RoPE values (transformers forms the angle
 *     in fp32; the fp64 angle is kept, as for text before mRoPE); GQA
 *     (query head h uses KV head h / (nH/nKV)); scale hd^-0.5; causal; keys with mask 0 are never
 *     attended to (a query with no visible key gets a zero output); softmax in fp32;
 *     o_proj; x += attention output.
 *   MoE (stats != NULL): m = rmsnorm(x, post_norm); logits = m Wr^T; p = softmax(logits)
 *     over all E in fp32; top-K by logit, ties to the lower expert index; weights
 *     g = p (divided by the sum of the K probabilities if norm_topk_prob);
 *     f_e(m) = down(silu(gate(m)) * up(m)) computed ONLY for routed (token, expert)
 *     pairs of valid tokens; statistics accumulated over valid tokens (mask 1);
 *     x += sum_k g_k f_k(m). Masked positions get no MoE output (they never influence a
 *     valid position, because they are never attended to).
 *   dense (stats == NULL): x += down(silu(gate(a2)) * up(a2)), a2 = rmsnorm(x, post_norm).
 *   NaN/Inf in an activation -> REAP_E_NUMERIC naming the layer and the stage.
 *   scatter_rows: hidden[slots[i]] = src[i] (add 0) or += src[i] (add 1), fp32, for
 *     i < n; slots are distinct positions (row * seq_len + slot). The engine uses it to
 *     put the vision tower's merged features in place of the image slots' embeddings and
 *     to add deepstack feature set L after layer L (engine.h).
 *   Observer: with opts->on_routes set, a MoE layer's forward_layer hands the routes
 *   (top-K ids and weights of every valid position) to it once (reap_routes_cb).
 *
 * Determinism: for a given backend, results must not depend on the number of threads or
 * the micro-batch size (fixed reduction orders).
 *
 * Thread rules: a context is used by one thread at a time (the engine's).
 */
#ifndef REAP_BACKEND_H
#define REAP_BACKEND_H

#include <stdint.h>

#include "calib.h"
#include "config.h"
#include "safetensors.h"
#include "stats.h"
#include "weights.h"

/* The routes of one MoE layer as the backend used them, handed to the observer
 * reap_backend_opts.on_routes. The arrays belong to the backend and are valid during the
 * call only. */
typedef struct reap_routes {
    int layer;              /* decoder layer index */
    int64_t n_valid;        /* Nv: positions with mask 1 */
    const int64_t *valid;   /* [Nv] those positions (row * seq_len + slot), ascending */
    int K;                  /* experts per token */
    const int32_t *ids;     /* [Nv, K] each valid position's experts by descending router
                               logit (ties: the lower expert index first) */
    const double *weights;  /* [Nv, K] their gate weights g (see forward_layer) */
} reap_routes;

/* Observer of the routes (compare ggml's ggml_backend_sched_eval_callback): called by
 * forward_layer of every MoE layer exactly once, after the routes of all valid positions
 * are known and before forward_layer returns, on the thread that called forward_layer.
 * It must not call the backend. Returns REAP_OK to go on; any other value stops
 * forward_layer, which returns that value (the layer may then be partly applied to the
 * hidden states). */
typedef int (*reap_routes_cb)(void *ud, const reap_routes *routes);

/* CUDA attention kernel (reap_backend_opts.attn). */
enum {
    REAP_CUDA_ATTN_AUTO = 0, /* the tiled kernel where supported (bf16, head_dim 16, 32,
                                64, 128), else score matrices */
    REAP_CUDA_ATTN_GEMM = 1  /* score matrices always (the reference path) */
};

/* CUDA routed-expert GEMMs (reap_backend_opts.experts). */
enum {
    REAP_CUDA_EXPERTS_LOOP = 0,    /* one cuBLAS call per expert and projection */
    REAP_CUDA_EXPERTS_GROUPED = 1  /* one cublasGemmGroupedBatchedEx call per projection */
};

/* Every choice a backend makes comes from here (backends read no environment; the
 * commands fill this struct from flags, environment and .env files). Zero-initialised
 * means the defaults. */
typedef struct reap_backend_opts {
    int threads;        /* CPU worker threads (0: all cores) */
    int batch_rows;     /* rows per attention micro-batch (0: backend chooses) */
    int device;         /* accelerator index (CUDA) */
    int precision;      /* REAP_PRECISION_* (CUDA: fp32 or bf16 math; CPU ignores) */
    /* Device memory planning (CUDA; the CPU backend ignores these). */
    double vram_gb;     /* device memory to plan for, GB of 1e9 bytes; 0: the device's
                           free memory */
    double vram_buffer; /* fraction of it left unused, at most 0.9; 0: 0.10; negative:
                           none */
    int prefetch_layers;/* layers whose weights are uploaded ahead while the current
                           one computes, at most 8; 0: 1; negative: none */
    int attn;           /* REAP_CUDA_ATTN_* (CUDA) */
    int experts;        /* REAP_CUDA_EXPERTS_* (CUDA) */
    int profile;        /* 1: print the memory plan at init and per-phase GPU times of
                           every layer on stderr (CUDA) */
    reap_routes_cb on_routes; /* optional observer of every MoE layer's routes (NULL:
                                 none; the CUDA backend then copies no routes to the
                                 host) */
    void *routes_ud;          /* passed to on_routes */
    int spatial_merge;        /* the vision tower's spatial_merge_size, for the mRoPE ids
                                 of the rows' image spans (positions.h); read only when
                                 the rows have spans (then >= 1) */
} reap_backend_opts;

enum { REAP_PRECISION_FP32 = 0, REAP_PRECISION_BF16 = 1 };

typedef struct reap_backend_i {
    const char *name;   /* "cpu", "cuda" */

    /* Create a context for `cfg` and the calibration `rows` (copied; the caller may free
     * them after init); the rotary positions of the rows are fixed here.
     * Returns REAP_OK, REAP_E_NOMEM, REAP_E_DEVICE, REAP_E_INVALID (also for a family
     * without a position rule, or image spans reap_positions_fill_mrope refuses). */
    int (*init)(const reap_config *cfg, const reap_rows *rows,
                const reap_backend_opts *opts, void **ctx);

    /* hidden[t] = embed[tokens[t]] for all positions. `embed` is [V, H]. */
    int (*embed)(void *ctx, const st_tensor *embed);

    /* Make a layer's weights resident. `w` stays valid until the next load_layer. */
    int (*load_layer)(void *ctx, const reap_layer_weights *w);

    /* Run the loaded layer over all positions. `stats` (MoE layers only) was initialised
     * by the caller and is accumulated into; pass NULL for a dense layer. */
    int (*forward_layer)(void *ctx, reap_layer_stats *stats);

    /* Copy the hidden states [T, H] fp32 out of / into the backend (checkpoints). */
    int (*get_hidden)(void *ctx, float *dst);
    int (*set_hidden)(void *ctx, const float *src);

    /* hidden[slots[i]] = src[i] (add == 0) or hidden[slots[i]] += src[i] (add != 0) for
     * i < n. slots: [n] distinct positions 0 <= slot < T (host memory); src: [n, H] fp32
     * (host memory). Both may be freed on return. Returns REAP_OK, REAP_E_INVALID (a slot
     * out of range, named), REAP_E_NOMEM, REAP_E_DEVICE. */
    int (*scatter_rows)(void *ctx, const int64_t *slots, int64_t n, const float *src,
                        int add);

    void (*free)(void *ctx);

    /* Optional (NULL when the backend has none): start uploading the weights of a layer
     * that a later load_layer will ask for, so the copy overlaps forward_layer. Call it
     * after load_layer(L) with layers L+1 .. L+prefetch_layers, each once, in order. The
     * tensors `next` points to must stay valid until the load_layer that uses them (the
     * checkpoint stays open); the struct and its arrays may be freed on return. A later
     * load_layer whose views match a queued layer waits for its copy instead of copying
     * again; anything else is loaded directly (a queued layer that is never asked for
     * costs only its copy). Returns REAP_OK when queued or skipped (no free buffer);
     * errors of the copy itself are reported by the load_layer that uses it. */
    int (*prefetch_layer)(void *ctx, const reap_layer_weights *next);
} reap_backend_i;

extern const reap_backend_i reap_backend_cpu;

/* The CUDA backend, or NULL when this build has no CUDA support. */
const reap_backend_i *reap_backend_cuda(void);

/* Number of usable CUDA devices: 0 without CUDA support in this build, without a driver
 * or device, or on any runtime error. Never fails. */
int reap_cuda_available(void);

#endif

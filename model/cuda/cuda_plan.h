/* cuda_plan.h - the device-memory plan of the CUDA backend, for C callers.
 *
 * The CUDA backend keeps on the device, for the whole run:
 *   resident   hidden states [T, H] fp32, tokens, positions, mask, RoPE tables, and per
 *              (token, slot) routing ids / weights / pair norms / pair maxima [T, K]
 *              (statistics)
 *   weights    1 + P sets of one layer's weights in the compute type (P = layers
 *              prefetched ahead: set L computes while L+1.. are copied in)
 *   staging    two device slots that raw checkpoint bytes pass through (and two pinned
 *              host slots of the same size, not device memory)
 *   workspace  the activations of one micro-batch ("chunk") of rows
 *   margin     left for cuBLAS and the driver
 *   images     (rows with image spans only) the modality of each position [T] bytes
 *              (MoE models: per-modality statistics) and the scatter_rows staging,
 *              REAP_CUDA_SCATTER_ROWS x (8 + H x 4) bytes; the vision tower runs on the
 *              CPU and its features stay in host memory: scatter_rows copies them in
 *              REAP_CUDA_SCATTER_ROWS rows at a time, nothing of them stays resident
 * and chooses the micro-batch: the largest number of rows (at most MAX_CHUNK_TOKENS
 * positions) whose workspace fits the budget with P >= 1; if none does, prefetch is
 * dropped and the micro-batch shrinks to one row; if one row does not fit, the plan fails
 * with REAP_E_NOMEM and a message giving every term.
 *
 * The budget: vram_gb * 1e9 (or the device's free memory when vram_gb is 0), never more
 * than the free memory when a device is present, times (1 - vram_buffer).
 *
 * The same arithmetic sizes the backend's allocations (backend_cuda.cu), so `reap-scorer
 * plan` prints what a run will allocate. Builds without CUDA have a stub that returns
 * REAP_E_UNSUPPORTED (model/nocuda/backend_cuda_absent.c).
 *
 * Dimension legend: T = n_rows * S positions, S seq_len, Tc = chunk_rows * S, H hidden,
 * nH / nKV heads of hd, QKV = (nH + 2 nKV) hd, E experts, K per token, I expert width,
 * Id dense MLP width, P pairs of a chunk = Tc * K.
 *
 * Thread rules: pure functions.
 */
#ifndef REAP_CUDA_PLAN_H
#define REAP_CUDA_PLAN_H

#include <stdint.h>

#include "backend.h"
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define REAP_CUDA_MAX_CHUNK_TOKENS 65536   /* positions per micro-batch, at most */
#define REAP_CUDA_MIN_PREFETCH_TOKENS 16384 /* keep prefetch while chunks are this big */
#define REAP_CUDA_STAGE_BYTES ((int64_t)128 << 20) /* staging slot, at least */
#define REAP_CUDA_MARGIN_BYTES ((int64_t)768 << 20) /* cuBLAS workspace, driver */
#define REAP_CUDA_ATTN_BATCH_BYTES ((int64_t)1 << 30) /* score matrices (GEMM path) */
#define REAP_CUDA_SCATTER_ROWS 256 /* image feature rows per scatter_rows copy */

/* reap_backend_opts' planning fields with their defaults applied. */
typedef struct reap_cuda_settings {
    double vram_gb;       /* 0: the device's free memory */
    double vram_buffer;   /* fraction left unused, 0 .. 0.9 */
    int prefetch_layers;  /* wanted layers ahead, 0 .. 8 */
    int attn_gemm;        /* REAP_CUDA_ATTN_GEMM: score-matrix attention even in bf16 */
} reap_cuda_settings;

/* Apply the defaults of reap_backend_opts to `opts` (NULL: all defaults): vram_gb 0 (the
 * free memory), vram_buffer 0.10, prefetch_layers 1 (clipped to 8), attention auto.
 * Reads no environment. Returns REAP_OK or REAP_E_INVALID (vram_gb outside 0..1e6,
 * vram_buffer above 0.9, an unknown attention kernel; the message names the field). */
int reap_cuda_settings_resolve(const reap_backend_opts *opts, reap_cuda_settings *out);

/* Usable device bytes: (vram_gb * 1e9, or free_bytes when vram_gb is 0, capped at
 * free_bytes when free_bytes > 0) * (1 - vram_buffer). */
int64_t reap_cuda_plan_budget(const reap_cuda_settings *s, int64_t free_bytes);

typedef struct reap_cuda_plan_req {
    int n_rows, seq_len;
    int precision;        /* REAP_PRECISION_* */
    int batch_rows;       /* > 0: this micro-batch (clipped to n_rows); 0: choose */
    int prefetch_layers;  /* wanted layers ahead (>= 0) */
    int attn_gemm;        /* 1: score-matrix attention (else tiled where supported) */
    int64_t budget_bytes; /* device bytes the plan may use */
    int images;           /* 1: the rows have image spans (adds image_bytes) */
} reap_cuda_plan_req;

/* Byte offsets of the chunk workspace ("arena"); the attention and the MoE/MLP views
 * overlap (a layer uses one, then the other). */
typedef struct reap_cuda_arena {
    int64_t qkv32, qkvc, attn, s32, pc, ptrs;   /* attention view */
    int64_t logits, perm, inv, hh, xg, gu, y;   /* MoE / MLP view (y aliases xg) */
    int64_t bytes;                              /* the arena's size */
} reap_cuda_arena;

typedef struct reap_cuda_plan {
    int n_rows, seq_len, precision;
    int chunk_rows;            /* micro-batch: rows per chunk */
    int64_t chunk_tokens;      /* Tc */
    int prefetch_layers;       /* layers copied ahead (weight sets - 1) */
    int attn_flash;            /* 1: tiled flash attention kernel; 0: score matrices */
    int attn_pairs;            /* (row, head) pairs per score batch (GEMM path) */
    int has_dense;             /* some layer has a dense MLP */
    int64_t hidden_bytes;      /* [T, H] fp32 */
    int64_t resident_bytes;    /* hidden + tokens, mask, RoPE, routing/statistics arrays,
                                  + image_bytes */
    int64_t image_bytes;       /* req->images: modality plane (MoE) + scatter staging */
    int64_t moe_layer_bytes;   /* a MoE layer's weights on the device */
    int64_t dense_layer_bytes; /* a dense layer's weights on the device (0: none) */
    int64_t moe_ckpt_bytes;    /* a MoE layer's weights in a bf16 checkpoint */
    int64_t moe_awq_bytes;     /* AWQ configurations (cfg->quant): a MoE layer's weights
                                  as stored (int4 linears with their zeros and scales,
                                  modules_to_not_convert and the router 16-bit); the
                                  upload sends these bytes, the device holds
                                  moe_layer_bytes. 0 for unquantised configurations */
    int64_t weight_set_bytes;  /* one weight set (holds either kind of layer) */
    int64_t stage_slot_bytes;  /* one staging slot (two on the device, two pinned) */
    int64_t chunk_bytes;       /* normed input (fp32 + compute type) + arena */
    reap_cuda_arena arena;
    int64_t margin_bytes;
    int64_t peak_bytes;        /* resident + sets + staging + chunk + margin */
    int64_t budget_bytes;
} reap_cuda_plan;

/* Plan a run of `cfg` (head_dim, hidden, experts, ... must be valid). Returns REAP_OK,
 * REAP_E_INVALID (bad dimensions) or REAP_E_NOMEM (even one row without prefetch does
 * not fit the budget; the message gives the bytes of every term and the budget). */
int reap_cuda_plan_make(const reap_config *cfg, const reap_cuda_plan_req *req,
                        reap_cuda_plan *out);

/* Free and total memory of CUDA device `device`. REAP_OK, REAP_E_DEVICE (no device or
 * runtime error) or REAP_E_UNSUPPORTED (no CUDA in this build). */
int reap_cuda_mem_info(int device, int64_t *free_bytes, int64_t *total_bytes);

/* 1 when the tiled attention kernel handles head_dim `hd` in bf16 (16, 32, 64, 128). */
int reap_cuda_flash_supported(int hd);

#ifdef __cplusplus
}
#endif

#endif

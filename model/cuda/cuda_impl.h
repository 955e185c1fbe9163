/* cuda_impl.h - the CUDA backend's context and helpers, shared by backend_cuda.cu (init,
 * forward pass) and upload.cu (weight sets, staging, prefetch). Internal: not for callers
 * outside model/cuda.
 *
 * Dimension legend: T all positions (n_rows * S), S seq_len, Tc positions of a chunk,
 * H hidden, nH / nKV heads, hd head dim, QKV = (nH + 2 nKV) hd, E experts, K experts per
 * token, I expert width, Id dense MLP width, P routed pairs of a chunk, nb (row, head)
 * pairs per attention batch (score-matrix path).
 */
#ifndef REAP_CUDA_IMPL_H
#define REAP_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "cuda_plan.h"
#include "positions.h"
#include "reap_err.h"
}

#define MAX_EXPERTS 1024
#define MAX_TOPK 32
#define MAX_SETS 9 /* weight sets: 1 + up to 8 prefetched */

/* One layer's weights on the device, in the compute type unless noted. Experts are
 * always in nn.Linear orientation (the fused checkpoint layout is transposed at upload). */
typedef struct wset {
    float *in_norm, *post_norm;  /* [H] fp32 */
    float *qn, *kn;              /* [hd] fp32 */
    void *qkv;                   /* [QKV, H] q rows, then k, then v */
    void *o;                     /* [H, nH*hd] */
    float *router;               /* [E, H] fp32 */
    void *gu;                    /* [E, 2I, H] gate rows then up rows per expert */
    void *d;                     /* [E, H, I] */
    void *mgu;                   /* [2Id, H] dense gate rows then up rows */
    void *md;                    /* [H, Id] */
    int *d_flag;                 /* RF_WEIGHT flag of this set's upload */
    cudaEvent_t ready;           /* on the copy stream: upload complete */
    cudaEvent_t released;        /* on the compute stream: last use as current set */
    /* state, guarded by cuda_ctx.mu */
    int state;                   /* SET_* */
    int layer, is_moe;
    const void *sig[4];          /* data pointers identifying the layer's views */
    reap_layer_weights w;        /* queued job: a copy of the views (arrays owned) */
    int rc;                      /* result of the worker's upload */
    char msg[512];               /* its message */
} wset;

enum { SET_FREE = 0, SET_QUEUED, SET_RUNNING, SET_DONE, SET_CURRENT };

typedef struct cuda_ctx {
    char where[48];             /* "layer 3", "init", "embed": prefix of messages */
    int device, precision;
    int esz;                    /* bytes per compute element (4 or 2) */
    cudaDataType_t ctype;       /* CUDA_R_32F or CUDA_R_16BF */
    /* configuration */
    int H, nH, nKV, hd, QKV, E, K, I, Id, V, norm_topk, has_dense;
    float eps;
    int n_rows, S;
    int64_t T, n_valid;
    reap_cuda_settings settings;
    reap_cuda_plan plan;        /* chunk rows, prefetch depth, attention path, sizes */
    int chunk_rows;             /* rows per chunk */
    int attn_nb;                /* (row, head) pairs per score batch (GEMM path) */
    int flash;                  /* 1: k_flash_attn */
    int grouped;                /* 1: experts through cublasGemmGroupedBatchedEx */
    cudaStream_t st;            /* compute stream (blocking) */
    cudaStream_t cst;           /* copy stream (non-blocking): uploads, conversions */
    cublasHandle_t blas;
    int *d_flag;                /* non-finite flag word (RF_* bits) */
    /* resident state */
    float *d_hidden;            /* [T, H] */
    int32_t *d_tok;             /* [T] */
    uint8_t *d_mask;            /* [T] */
    uint8_t *d_modality;        /* [T] reap_modality of each slot; NULL for text-only rows */
    int64_t n_valid_mod[2];     /* valid positions per modality (text, image) */
    int32_t *d_pos;             /* [T, 3] mRoPE ids t, h, w of each slot (positions.h) */
    uint8_t *d_plane;           /* [hd/2] id plane of each frequency slot (reap_mrope_plane) */
    int64_t *d_scat_slots;      /* [SCATTER_ROWS] scatter_rows staging (allocated at the */
    float *d_scat;              /* [SCATTER_ROWS, H] first call; NULL without images) */
    int n_pos;                  /* rows of the RoPE tables: reap_positions_limit(S) */
    float *d_cos, *d_sin;       /* [n_pos, hd/2] */
    int32_t *d_ids;             /* [T, K] expert of each (token, slot); -1 masked */
    double *d_g;                /* [T, K] routing weight */
    double *d_nrm;              /* [T, K] ||f|| of each routed pair */
    float *d_mx;                /* [T, K] max f of each routed pair */
    /* weights: n_sets sets, `cur` computes; the others are free or being uploaded */
    int n_sets;
    wset sets[MAX_SETS];
    wset *cur;
    int layer, is_moe;
    /* staging: two pinned host slots -> two device slots -> conversion kernels */
    size_t slot_bytes;
    void *h_slot[2];            /* pinned */
    void *d_slot[2];
    cudaEvent_t slot_ev[2];     /* last conversion that read d_slot[i] */
    int slot_next;
    int copy_threads;           /* host threads for pageable -> pinned copies */
    pthread_mutex_t upload_mu;  /* one set upload at a time (slots, copy stream) */
    /* prefetch worker */
    int worker_on, worker_stop;
    pthread_t worker;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int queue[MAX_SETS], q_head, q_len;
    /* chunk workspace: x32/xc always; the attention and MoE buffers alias (arena) */
    float *x32;                 /* [Tc, H] normed input, fp32 */
    void *xc;                   /* [Tc, H] normed input, TC (== x32 in fp32 mode) */
    char *arena;
    /* attention view of the arena */
    float *qkv32;               /* [Tc, QKV] */
    void *qkvc;                 /* [Tc, QKV] TC (== qkv32 in fp32 mode) */
    void *attn;                 /* [Tc, nH*hd] TC */
    float *s32;                 /* [nb, S, S] scores (GEMM path) */
    void *pc;                   /* [nb, S, S] TC probabilities (== s32 in fp32 mode) */
    void **ptrs;                /* [6, nb] batched-GEMM pointer arrays */
    /* MoE / MLP view of the arena */
    float *logits;              /* [Tc, E] */
    int32_t *perm, *inv;        /* [Tc*K] */
    void *hh;                   /* [P, I] or [Tc, Id] TC */
    void *xg;                   /* [P, H] TC gathered routed rows */
    float *gu;                  /* [P, 2I] or [Tc, 2Id] */
    float *y;                   /* [P, H] expert outputs (reuses xg, gu) */
    /* grouped expert GEMMs: pointer arrays [6, E] on the device and pinned on the host,
     * per-group sizes [9, E] and scalars [2, E] on the host */
    void **d_gptr, **h_gptr;
    int *h_gint;
    float *h_gscal;
    cublasOperation_t *h_gop;   /* [2, E] */
    /* statistics */
    int *d_cnt, *d_off;         /* [E] */
    int *h_cnt, *h_off;         /* [E] pinned */
    long long *d_scnt;          /* [E] */
    double *d_sgn, *d_sn, *d_sg;/* [E] */
    float *d_smx;               /* [E] */
    long long *h_scnt;          /* [E] */
    double *h_sgn, *h_sn, *h_sg;
    float *h_smx;
    /* routes observer (opts->on_routes; NULL: none and no host copies) */
    reap_routes_cb on_routes;
    void *routes_ud;
    int32_t *h_ids;             /* [T, K] host copy of d_ids, then [Nv, K] */
    double *h_g;                /* [T, K] host copy of d_g, then [Nv, K] */
    int64_t *h_valid;           /* [Nv] valid positions, ascending */
    int64_t h_n_valid;
    /* opts->profile: per-phase GPU times (events around the phases of a chunk),
     * summed over a layer's chunks and printed to stderr after each layer */
    int prof;
    cudaEvent_t ev[7];
    double prof_ms[6];
} cuda_ctx;

/* ---- error helpers (cuda_util.cu; every CUDA / cuBLAS call goes through one) ------ */

int cu_fail(cuda_ctx *c, cudaError_t e, const char *what);
int cu_fail_at(const char *where, cudaError_t e, const char *what);
int blas_fail(cuda_ctx *c, cublasStatus_t s, const char *what);

#define CU(call, what)                                                                  \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) return cu_fail(c, e_, (what));                           \
    } while (0)
/* after a kernel launch */
#define KCHECK(what) CU(cudaGetLastError(), what)
#define CB(call, what)                                                                  \
    do {                                                                                \
        cublasStatus_t s_ = (call);                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS) return blas_fail(c, s_, (what));               \
    } while (0)

static inline unsigned grid_for(size_t n, unsigned block)
{
    size_t g = (n + block - 1) / block;
    if (g > 65535u * 16u) g = 65535u * 16u;
    return g ? (unsigned)g : 1u;
}

/* cudaMalloc with an out-of-memory message that gives the sizes. */
int dalloc(cuda_ctx *c, void **p, size_t bytes, const char *what);

/* Read and clear the flag word; REAP_E_NUMERIC naming the first stage flagged. */
int check_flag(cuda_ctx *c);

/* upload.cu */
int upload_init(cuda_ctx *c);             /* sets, slots, streams' events, worker */
void upload_free(cuda_ctx *c);            /* stops the worker, frees sets and slots */
int cuda_load_layer(void *ctx, const reap_layer_weights *w);
int cuda_prefetch_layer(void *ctx, const reap_layer_weights *next);
int cuda_embed(void *ctx, const st_tensor *embed);

#endif

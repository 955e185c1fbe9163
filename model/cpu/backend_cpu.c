/* backend_cpu.c - the CPU reference backend (fp32 activations, fp64 statistics).
 *
 * One file on purpose: it is the reference the other backends are compared with, and it
 * reads top to bottom like the math of backend.h (the GEMMs are cpu_gemm.c, the small
 * kernels cpu_ops.c).
 *
 * Dimension legend: T = n_rows * S positions, S sequence length, Tb positions of one
 * attention micro-batch, Nv valid positions, H hidden, nH/nKV heads, hd head dim,
 * E experts, K experts per token, I expert width, Id dense MLP width, n_e tokens routed
 * to expert e.
 *
 * A layer, top to bottom (the contract is in backend.h):
 *   attention_block: per micro-batch of rows: rmsnorm -> q,k,v GEMMs -> q/k head norms
 *                    -> RoPE at each slot's (t, h, w) ids (interleaved mRoPE,
 *                    positions.h, computed once at init) -> causal attention per (row, head) -> o GEMM -> residual
 *   moe_block:       valid positions only: rmsnorm -> router GEMM -> softmax/top-k
 *                    -> the routes observer (opts->on_routes, if any) -> per expert
 *                    (ascending): gather routed rows -> gate_up GEMM ->
 *                    SwiGLU -> down GEMM -> statistics + weighted combine -> residual
 *   mlp_block:       dense SwiGLU MLP on valid positions
 * Weights: load_layer converts one layer to fp32 (AWQ int4 linears are dequantised
 * there, exactly, through reap_linear_to_f32 / reap_expert_to_f32) and packs the
 * token-wise matrices (router, expert gate_up and down, dense MLP) for cpu_gemm.
 * Determinism, and a token's result independent of the other tokens: the token-wise
 * GEMMs (router, experts, dense MLP) run on cpu_gemm (cpu_gemm.h), which computes each
 * output element as one fixed sequence of fmaf steps, so a token's logits and expert
 * outputs depend only on that token and the weights: not on which other tokens were
 * routed to the same expert, their number, its place among them, or the thread count.
 * Scoring calibration sets A and B separately and merging therefore sees the per-token
 * values of scoring A+B at once; the statistics differ only in the order of their fp64
 * sums. Attention projections stay on OpenBLAS sgemm, one single-threaded call per
 * sequence (cpu_matmul_bt with blocks of S rows), so a sequence's result depends only on
 * itself; attention itself is per (sequence, head). Everything else is a fixed-order
 * loop, with work split across threads only over independent outputs. Experts are
 * processed in ascending order, each token's outputs are added in that order, and the
 * statistics accumulate in ascending token order within an expert.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_gemm.h"
#include "cpu_ops.h"
#include "parallel.h"
#include "positions.h"
#include "reap_err.h"

#define CPU_MAX_HEAD_DIM 512

typedef struct cpu_ctx {
    reap_config cfg;            /* copy; mlp_only_layers not owned (not used) */
    int threads, batch_rows;
    reap_routes_cb on_routes;   /* optional observer of each MoE layer's routes */
    void *routes_ud;
    int n_rows, S;
    int64_t T;
    int32_t *tokens;            /* [T] */
    uint8_t *mask;              /* [T] */
    int64_t n_valid;
    int64_t *valid;             /* [Nv] positions with mask 1, ascending */
    uint8_t *modality;          /* [Nv] reap_modality of each valid position (image: in
                                   one of the rows' image spans) */
    int32_t *pos3;              /* [3, T] mRoPE ids t, h, w of each slot (positions.h) */
    uint8_t plane[CPU_MAX_HEAD_DIM / 2]; /* [hd/2] the id plane of each frequency slot */
    float *x;                   /* [T, H] hidden states */
    float *rope_cos, *rope_sin; /* [reap_positions_limit(S), hd/2] */
    /* current layer, fp32, nn.Linear orientation */
    int layer, is_moe;
    float *in_norm, *post_norm; /* [H] */
    float *wq;                  /* [nH*hd, H] */
    float *wk, *wv;             /* [nKV*hd, H] */
    float *wo;                  /* [H, nH*hd] */
    float *q_norm, *k_norm;     /* [hd] */
    /* token-wise matrices, packed for cpu_gemm (cpu_gemm_packed_len floats each) */
    float *router;              /* [E, H] */
    float *w_gate_up;           /* E x [2I, H]: rows 0..I-1 gate, I..2I-1 up; stride gu_len */
    float *w_down;              /* E x [H, I]; stride dn_len */
    int64_t gu_len, dn_len;
    float *mlp_gate_up;         /* [2Id, H]: rows 0..Id-1 gate, Id..2Id-1 up */
    float *mlp_down;            /* [H, Id] */
} cpu_ctx;

/* ---- helpers ----------------------------------------------------------------------- */

static float *falloc(int64_t n)
{
    return n > 0 ? malloc((size_t)n * sizeof(float)) : malloc(sizeof(float));
}

/* A packed GEMM operand: cache-line aligned (freed with free). */
static float *palloc(int64_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, (size_t)(n > 0 ? n : 1) * sizeof(float)) ? NULL : p;
}

static int check_finite(const cpu_ctx *c, const float *x, int64_t n, int64_t width,
                        const char *stage)
{
    int64_t i = cpu_first_nonfinite(x, n);
    if (i < 0)
        return REAP_OK;
    return reap_err_set(REAP_E_NUMERIC, "layer %d: non-finite activation %g after %s "
                        "(row %lld, element %lld)", c->layer, (double)x[i], stage,
                        (long long)(i / width), (long long)(i % width));
}

static int to_f32(const st_tensor *t, float *dst)
{
    return reap_tensor_to_f32(t, 0, t->numel, dst);
}

/* A linear, plain or AWQ (dequantised), in nn.Linear orientation. */
static int linear_f32(const st_tensor *t, const reap_awq_linear *awq, float *dst)
{
    return reap_linear_to_f32(t, awq, dst);
}

/* ---- init / free --------------------------------------------------------------------- */

/* Free the layer buffers (they are allocated at the first layer that needs them and
 * reused by every later one: their sizes depend only on the configuration). */
static void cpu_free_layer(cpu_ctx *c)
{
    float **bufs[] = {&c->in_norm, &c->post_norm, &c->wq, &c->wk, &c->wv, &c->wo,
                      &c->q_norm, &c->k_norm, &c->router, &c->w_gate_up, &c->w_down,
                      &c->mlp_gate_up, &c->mlp_down};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    c->layer = -1;
}

static void cpu_free(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c)
        return;
    cpu_free_layer(c);
    free(c->tokens);
    free(c->modality);
    free(c->mask);
    free(c->valid);
    free(c->pos3);
    free(c->x);
    free(c->rope_cos);
    free(c->rope_sin);
    free(c);
}

/* The modality of each valid position: REAP_MOD_IMAGE inside an image span (the
 * n_tokens slots from span.start), else REAP_MOD_TEXT. */
static int modality_fill(cpu_ctx *c, const reap_rows *rows)
{
    uint8_t *slot = calloc((size_t)c->T, 1);
    if (!slot)
        return reap_err_set(REAP_E_NOMEM, "cpu backend: modality of %lld positions",
                            (long long)c->T);
    if (reap_rows_image_slots(rows, slot)) {
        free(slot);
        return reap_err_prefix(REAP_E_INVALID, "cpu backend");
    }
    for (int64_t n = 0; n < c->n_valid; n++)
        c->modality[n] = slot[c->valid[n]] ? REAP_MOD_IMAGE : REAP_MOD_TEXT;
    free(slot);
    return REAP_OK;
}

static int cpu_init(const reap_config *cfg, const reap_rows *rows,
                    const reap_backend_opts *opts, void **out)
{
    int rc = REAP_OK;
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return reap_err_set(REAP_E_NOMEM, "cpu backend: context");
    c->cfg = *cfg;
    c->cfg.mlp_only_layers = NULL;
    c->cfg.n_mlp_only = 0;
    c->cfg.quant.not_convert = NULL;  /* not owned (not used) */
    c->cfg.quant.n_not_convert = 0;
    c->layer = -1;
    c->threads = opts && opts->threads > 0 ? opts->threads : reap_cpu_count();
    c->batch_rows = opts && opts->batch_rows > 0 ? opts->batch_rows : 8;
    c->on_routes = opts ? opts->on_routes : NULL;
    c->routes_ud = opts ? opts->routes_ud : NULL;
    c->n_rows = rows->n_rows;
    c->S = rows->seq_len;
    c->T = (int64_t)rows->n_rows * rows->seq_len;
    if (cfg->head_dim > CPU_MAX_HEAD_DIM || cfg->head_dim % 2) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "cpu backend: head_dim %d (even, <= %d)",
                          cfg->head_dim, CPU_MAX_HEAD_DIM);
        goto fail;
    }
    if (c->T <= 0) {
        rc = reap_err_set(REAP_E_INVALID, "cpu backend: no calibration positions");
        goto fail;
    }
    cpu_blas_set_threads(1); /* threads come from cpu_matmul_bt and cpu_gemm */
    c->gu_len = cpu_gemm_packed_len(2 * (int64_t)cfg->moe_inter, cfg->hidden);
    c->dn_len = cpu_gemm_packed_len(cfg->hidden, cfg->moe_inter);
    c->tokens = malloc((size_t)c->T * sizeof *c->tokens);
    c->mask = malloc((size_t)c->T);
    c->valid = malloc((size_t)c->T * sizeof *c->valid);
    c->modality = malloc((size_t)c->T);
    c->pos3 = malloc((size_t)(3 * c->T) * sizeof *c->pos3);
    c->x = falloc(c->T * cfg->hidden);
    const int n_pos = reap_positions_limit(c->S);
    c->rope_cos = falloc((int64_t)n_pos * cfg->head_dim / 2);
    c->rope_sin = falloc((int64_t)n_pos * cfg->head_dim / 2);
    if (!c->tokens || !c->mask || !c->valid || !c->modality || !c->pos3 || !c->x ||
        !c->rope_cos || !c->rope_sin) {
        rc = reap_err_set(REAP_E_NOMEM, "cpu backend: hidden states of %lld positions x %d "
                          "(%.1f MiB)", (long long)c->T, cfg->hidden,
                          (double)c->T * cfg->hidden * 4 / 1048576.0);
        goto fail;
    }
    memcpy(c->tokens, rows->tokens, (size_t)c->T * sizeof *c->tokens);
    memcpy(c->mask, rows->mask, (size_t)c->T);
    for (int64_t t = 0; t < c->T; t++)
        if (c->mask[t])
            c->valid[c->n_valid++] = t;
    if ((rc = modality_fill(c, rows)))
        goto fail;
    if ((rc = reap_positions_fill_mrope(cfg, rows, opts ? opts->spatial_merge : 0, c->pos3)))
        goto fail;
    for (int i = 0; i < cfg->head_dim / 2; i++)
        c->plane[i] = (uint8_t)reap_mrope_plane(cfg, i);
    cpu_rope_table(c->rope_cos, c->rope_sin, n_pos, cfg->head_dim, cfg->rope_theta);
    *out = c;
    return REAP_OK;
fail:
    cpu_free(c);
    return rc;
}

static int cpu_embed(void *ctx, const st_tensor *embed)
{
    cpu_ctx *c = ctx;
    const int H = c->cfg.hidden;
    for (int64_t t = 0; t < c->T; t++) {
        int32_t tok = c->tokens[t];
        if (tok < 0 || tok >= c->cfg.vocab)
            return reap_err_set(REAP_E_INVALID, "token id %d at position %lld out of range "
                                "(vocab_size %d)", tok, (long long)t, c->cfg.vocab);
        int rc = reap_tensor_to_f32(embed, (int64_t)tok * H, H, c->x + t * H);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

/* ---- load_layer ------------------------------------------------------------------------ */

typedef struct {
    cpu_ctx *c;
    const reap_layer_weights *w;
    int *rc;            /* [E] */
    char (*msg)[256];   /* [E] */
} expert_load_job;

/* Experts [begin, end): fp32 in nn.Linear orientation into tmp, then packed. */
static void expert_load_range(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    expert_load_job *j = ud;
    cpu_ctx *c = j->c;
    const int64_t H = c->cfg.hidden, I = c->cfg.moe_inter;
    float *tmp = falloc(3 * I * H); /* gate [I, H], up [I, H], down [H, I] */
    for (int64_t e = begin; e < end; e++) {
        int rc = tmp ? reap_expert_to_f32(j->w, &c->cfg, (int)e, tmp, tmp + I * H,
                                          tmp + 2 * I * H)
                     : reap_err_set(REAP_E_NOMEM, "expert %lld: conversion buffer",
                                    (long long)e);
        j->rc[e] = rc;
        if (rc) {
            snprintf(j->msg[e], sizeof j->msg[e], "%s", reap_err_msg());
            continue;
        }
        cpu_gemm_pack(c->w_gate_up + e * c->gu_len, tmp, 2 * I, H);
        cpu_gemm_pack(c->w_down + e * c->dn_len, tmp + 2 * I * H, H, I);
    }
    free(tmp);
}

static int load_experts(cpu_ctx *c, const reap_layer_weights *w)
{
    const int E = c->cfg.n_experts;
    int rc = REAP_OK;
    expert_load_job j = {c, w, calloc((size_t)E, sizeof(int)), calloc((size_t)E, 256)};
    if (!j.rc || !j.msg) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: expert load", w->layer);
        goto done;
    }
    reap_parallel_for(c->threads, E, expert_load_range, &j);
    for (int e = 0; e < E; e++)
        if (j.rc[e]) {
            rc = reap_err_set(j.rc[e], "%s", j.msg[e]);
            break;
        }
done:
    free(j.rc);
    free(j.msg);
    return rc;
}

static int cpu_load_layer(void *ctx, const reap_layer_weights *w)
{
    cpu_ctx *c = ctx;
    const reap_config *cfg = &c->cfg;
    const int64_t H = cfg->hidden, hd = cfg->head_dim, E = cfg->n_experts, Id = cfg->inter;
    const int64_t qd = (int64_t)cfg->n_heads * hd, kvd = (int64_t)cfg->n_kv_heads * hd;
    int rc;
    float *tmp = NULL; /* one matrix in nn.Linear orientation, before packing */
    c->layer = w->layer;
    c->is_moe = w->is_moe;
#define KEEP(buf, n) ((buf) = (buf) ? (buf) : falloc(n))
#define KEEP_PACKED(buf, n) ((buf) = (buf) ? (buf) : palloc(n))
    KEEP(c->in_norm, H);
    KEEP(c->post_norm, H);
    KEEP(c->wq, qd * H);
    KEEP(c->wk, kvd * H);
    KEEP(c->wv, kvd * H);
    KEEP(c->wo, H * qd);
    KEEP(c->q_norm, hd);
    KEEP(c->k_norm, hd);
    if (w->is_moe) {
        KEEP_PACKED(c->router, cpu_gemm_packed_len(E, H));
        KEEP_PACKED(c->w_gate_up, E * c->gu_len);
        KEEP_PACKED(c->w_down, E * c->dn_len);
        tmp = falloc(E * H);
    } else {
        KEEP_PACKED(c->mlp_gate_up, cpu_gemm_packed_len(2 * Id, H));
        KEEP_PACKED(c->mlp_down, cpu_gemm_packed_len(H, Id));
        tmp = falloc(Id * H);
    }
#undef KEEP
#undef KEEP_PACKED
    if (!c->in_norm || !c->post_norm || !c->wq || !c->wk || !c->wv || !c->wo ||
        !c->q_norm || !c->k_norm || !tmp ||
        (w->is_moe && (!c->router || !c->w_gate_up || !c->w_down)) ||
        (!w->is_moe && (!c->mlp_gate_up || !c->mlp_down))) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: weights in fp32", w->layer);
        goto fail;
    }
    if ((rc = to_f32(w->input_norm, c->in_norm)) || (rc = to_f32(w->post_norm, c->post_norm)) ||
        (rc = linear_f32(w->q_proj, &w->q_awq, c->wq)) ||
        (rc = linear_f32(w->k_proj, &w->k_awq, c->wk)) ||
        (rc = linear_f32(w->v_proj, &w->v_awq, c->wv)) ||
        (rc = linear_f32(w->o_proj, &w->o_awq, c->wo)) ||
        (rc = to_f32(w->q_norm, c->q_norm)) || (rc = to_f32(w->k_norm, c->k_norm)))
        goto fail;
    if (w->is_moe) {
        if ((rc = to_f32(w->router, tmp)))
            goto fail;
        cpu_gemm_pack(c->router, tmp, E, H);
        if ((rc = load_experts(c, w)))
            goto fail;
    } else {
        if ((rc = linear_f32(w->mlp_gate, &w->mlp_gate_awq, tmp)))
            goto fail;
        cpu_gemm_pack_rows(c->mlp_gate_up, 2 * Id, H, 0, tmp, Id);
        if ((rc = linear_f32(w->mlp_up, &w->mlp_up_awq, tmp)))
            goto fail;
        cpu_gemm_pack_rows(c->mlp_gate_up, 2 * Id, H, Id, tmp, Id);
        if ((rc = linear_f32(w->mlp_down, &w->mlp_down_awq, tmp)))
            goto fail;
        cpu_gemm_pack(c->mlp_down, tmp, H, Id);
    }
    free(tmp);
    return REAP_OK;
fail:
    reap_err_prefix(rc, "layer %d", w->layer);
    free(tmp);
    c->layer = -1;
    return rc;
}

/* ---- attention block ------------------------------------------------------------------ */

typedef struct {
    cpu_ctx *c;
    int64_t row0;       /* first row of the micro-batch */
    float *q, *k, *v;   /* [Tb, qd], [Tb, kvd], [Tb, kvd] */
    float *att;         /* [Tb, qd] */
    float *scores;      /* [threads, S, S] */
} attn_job;

/* q/k head norms and RoPE for slots [begin, end) of the micro-batch (slot t of the
 * micro-batch is slot row0 * S + t of the rows). */
static void qk_norm_rope_range(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    attn_job *j = ud;
    const reap_config *cfg = &j->c->cfg;
    const int hd = cfg->head_dim, nH = cfg->n_heads, nKV = cfg->n_kv_heads;
    const int64_t T = j->c->T, t0 = j->row0 * j->c->S;
    const int32_t *pos3 = j->c->pos3;  /* [3, T] */
    for (int64_t t = begin; t < end; t++) {
        const int32_t ids[3] = {pos3[t0 + t], pos3[T + t0 + t], pos3[2 * T + t0 + t]};
        for (int h = 0; h < nH; h++) {
            float *qh = j->q + t * nH * hd + (int64_t)h * hd;
            cpu_rmsnorm(qh, qh, j->c->q_norm, 1, hd, cfg->rms_eps);
            cpu_rope_apply(qh, j->c->rope_cos, j->c->rope_sin, ids, j->c->plane, hd);
        }
        for (int h = 0; h < nKV; h++) {
            float *kh = j->k + t * nKV * hd + (int64_t)h * hd;
            cpu_rmsnorm(kh, kh, j->c->k_norm, 1, hd, cfg->rms_eps);
            cpu_rope_apply(kh, j->c->rope_cos, j->c->rope_sin, ids, j->c->plane, hd);
        }
    }
}

/* Attention for (row, head) pairs [begin, end) of the micro-batch. */
static void attention_range(void *ud, int64_t begin, int64_t end, int tid)
{
    attn_job *j = ud;
    const reap_config *cfg = &j->c->cfg;
    const int hd = cfg->head_dim, nH = cfg->n_heads, nKV = cfg->n_kv_heads, S = j->c->S;
    const int qd = nH * hd, kvd = nKV * hd, group = nH / nKV;
    const float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t p = begin; p < end; p++) {
        int64_t r = p / nH;
        int h = (int)(p % nH), kvh = h / group;
        int64_t t0 = r * S;
        cpu_attention_head(j->att + t0 * qd + (int64_t)h * hd, qd,
                           j->q + t0 * qd + (int64_t)h * hd, qd,
                           j->k + t0 * kvd + (int64_t)kvh * hd,
                           j->v + t0 * kvd + (int64_t)kvh * hd, kvd,
                           j->c->mask + (j->row0 + r) * S, S, hd, scale,
                           j->scores + (int64_t)tid * S * S);
    }
}

static int attention_block(cpu_ctx *c)
{
    const reap_config *cfg = &c->cfg;
    const int64_t H = cfg->hidden, S = c->S;
    const int64_t qd = (int64_t)cfg->n_heads * cfg->head_dim;
    const int64_t kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int64_t Bmax = c->batch_rows < c->n_rows ? c->batch_rows : c->n_rows;
    const int64_t Tbmax = Bmax * S;
    int rc = REAP_OK;
    float *a = falloc(Tbmax * H), *q = falloc(Tbmax * qd), *k = falloc(Tbmax * kvd),
          *v = falloc(Tbmax * kvd), *att = falloc(Tbmax * qd), *o = falloc(Tbmax * H),
          *scores = falloc((int64_t)c->threads * S * S);
    if (!a || !q || !k || !v || !att || !o || !scores) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: attention buffers for %lld rows",
                          c->layer, (long long)Bmax);
        goto done;
    }
    for (int64_t r0 = 0; r0 < c->n_rows; r0 += Bmax) {
        int64_t B = c->n_rows - r0 < Bmax ? c->n_rows - r0 : Bmax, Tb = B * S;
        float *x = c->x + r0 * S * H;
        cpu_rmsnorm(a, x, c->in_norm, Tb, (int)H, cfg->rms_eps);
        cpu_matmul_bt(c->threads, S, q, a, c->wq, Tb, qd, H);
        cpu_matmul_bt(c->threads, S, k, a, c->wk, Tb, kvd, H);
        cpu_matmul_bt(c->threads, S, v, a, c->wv, Tb, kvd, H);
        attn_job j = {c, r0, q, k, v, att, scores};
        reap_parallel_for(c->threads, Tb, qk_norm_rope_range, &j);
        reap_parallel_for(c->threads, B * cfg->n_heads, attention_range, &j);
        cpu_matmul_bt(c->threads, S, o, att, c->wo, Tb, H, qd);
        for (int64_t i = 0; i < Tb * H; i++)
            x[i] += o[i];
        if ((rc = check_finite(c, x, Tb * H, H, "attention")))
            goto done;
    }
done:
    free(a); free(q); free(k); free(v); free(att); free(o); free(scores);
    return rc;
}

/* ---- MoE block ----------------------------------------------------------------------- */

typedef struct {
    cpu_ctx *c;
    const float *logits;  /* [Nv, E] */
    int32_t *idx;         /* [Nv, K] */
    double *g;            /* [Nv, K] */
} route_job;

static void route_range(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    route_job *j = ud;
    const int E = j->c->cfg.n_experts, K = j->c->cfg.n_experts_used;
    for (int64_t n = begin; n < end; n++)
        cpu_router_topk(j->logits + n * E, E, K, j->c->cfg.norm_topk_prob, j->idx + n * K,
                        j->g + n * K);
}

typedef struct {
    const float *gu;    /* [n_e, 2I] */
    float *a;           /* [n_e, I] */
    int I;
} swiglu_job;

static void swiglu_range(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    swiglu_job *j = ud;
    cpu_swiglu(j->a + begin * j->I, j->gu + begin * 2 * j->I, end - begin, j->I);
}

/* Gather rows `src[rows[i]]` of width d into dst. */
static void gather_rows(float *dst, const float *src, const int64_t *rows, int64_t n, int64_t d)
{
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + i * d, src + rows[i] * d, (size_t)d * sizeof(float));
}

static int moe_block(cpu_ctx *c, reap_layer_stats *st)
{
    const reap_config *cfg = &c->cfg;
    const int64_t H = cfg->hidden, E = cfg->n_experts, K = cfg->n_experts_used,
                  I = cfg->moe_inter, Nv = c->n_valid;
    int rc = REAP_OK;
    float *m = falloc(Nv * H), *logits = falloc(Nv * E), *moe_out = falloc(Nv * H);
    int32_t *idx = malloc((size_t)(Nv * K + 1) * sizeof *idx);
    double *g = malloc((size_t)(Nv * K + 1) * sizeof *g);
    int64_t *off = calloc((size_t)E + 1, sizeof *off);
    int64_t *tok = malloc((size_t)(Nv * K + 1) * sizeof *tok);   /* routed rows of m */
    double *tok_g = malloc((size_t)(Nv * K + 1) * sizeof *tok_g);
    float *xe = NULL, *gu = NULL, *act = NULL, *y = NULL;
    if (!m || !logits || !moe_out || !idx || !g || !off || !tok || !tok_g) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: MoE buffers for %lld tokens", c->layer,
                          (long long)Nv);
        goto done;
    }
    /* m = rmsnorm(x[valid]); logits = m Wr^T; route. */
    gather_rows(m, c->x, c->valid, Nv, H);
    cpu_rmsnorm(m, m, c->post_norm, Nv, (int)H, cfg->rms_eps);
    cpu_gemm(c->threads, logits, m, c->router, Nv, E, H);
    if ((rc = check_finite(c, logits, Nv * E, E, "router")))
        goto done;
    route_job rj = {c, logits, idx, g};
    reap_parallel_for(c->threads, Nv, route_range, &rj);
    if (c->on_routes) {
        const reap_routes r = {c->layer, Nv, c->valid, (int)K, idx, g};
        if ((rc = c->on_routes(c->routes_ud, &r)))
            goto done;
    }

    /* Token lists per expert, tokens ascending within each expert. */
    for (int64_t n = 0; n < Nv * K; n++)
        off[idx[n] + 1]++;
    for (int64_t e = 0; e < E; e++)
        off[e + 1] += off[e];
    int64_t max_ne = 0;
    {
        int64_t *fill = calloc((size_t)E, sizeof *fill);
        if (!fill) {
            rc = reap_err_set(REAP_E_NOMEM, "layer %d: routing table", c->layer);
            goto done;
        }
        for (int64_t n = 0; n < Nv; n++)
            for (int64_t k = 0; k < K; k++) {
                int64_t e = idx[n * K + k], p = off[e] + fill[e]++;
                tok[p] = n;
                tok_g[p] = g[n * K + k];
            }
        free(fill);
        for (int64_t e = 0; e < E; e++)
            if (off[e + 1] - off[e] > max_ne)
                max_ne = off[e + 1] - off[e];
    }
    xe = falloc(max_ne * H);
    gu = falloc(max_ne * 2 * I);
    act = falloc(max_ne * I);
    y = falloc(max_ne * H);
    if (!xe || !gu || !act || !y) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: expert buffers for %lld tokens",
                          c->layer, (long long)max_ne);
        goto done;
    }
    memset(moe_out, 0, (size_t)(Nv * H) * sizeof *moe_out);
    st->tokens += Nv;
    for (int64_t n = 0; n < Nv; n++)
        st->mod[c->modality[n]].tokens++;
    for (int64_t e = 0; e < E; e++) {
        const int64_t ne = off[e + 1] - off[e];
        const int64_t *te = tok + off[e];
        const double *ge = tok_g + off[e];
        if (ne == 0)
            continue;
        gather_rows(xe, m, te, ne, H);
        cpu_gemm(c->threads, gu, xe, c->w_gate_up + e * c->gu_len, ne, 2 * I, H);
        swiglu_job sj = {gu, act, (int)I};
        reap_parallel_for(c->threads, ne, swiglu_range, &sj);
        cpu_gemm(c->threads, y, act, c->w_down + e * c->dn_len, ne, H, I);
        for (int64_t i = 0; i < ne; i++) {
            const float *yi = y + i * H;
            double norm;
            float mx;
            cpu_norm_max(yi, (int)H, &norm, &mx);
            if (!isfinite(norm)) {
                rc = reap_err_set(REAP_E_NUMERIC, "layer %d: non-finite output of expert "
                                  "%lld (position %lld)", c->layer, (long long)e,
                                  (long long)c->valid[te[i]]);
                goto done;
            }
            st->count[e]++;
            st->sum_gate_norm[e] += ge[i] * norm;
            st->sum_norm[e] += norm;
            st->sum_gate[e] += ge[i];
            if (mx > st->max_act[e])
                st->max_act[e] = mx;
            reap_modality_stats *ms = &st->mod[c->modality[te[i]]];
            ms->count[e]++;
            ms->sum_gate_norm[e] += ge[i] * norm;
            ms->sum_norm[e] += norm;
            ms->sum_gate[e] += ge[i];
            if (mx > ms->max_act[e])
                ms->max_act[e] = mx;
            float gi = (float)ge[i];
            float *o = moe_out + te[i] * H;
            for (int64_t d = 0; d < H; d++)
                o[d] += gi * yi[d];
        }
    }
    for (int64_t n = 0; n < Nv; n++) {
        float *x = c->x + c->valid[n] * H;
        const float *o = moe_out + n * H;
        for (int64_t d = 0; d < H; d++)
            x[d] += o[d];
    }
    rc = check_finite(c, moe_out, Nv * H, H, "MoE");
done:
    free(m); free(logits); free(moe_out); free(idx); free(g); free(off); free(tok);
    free(tok_g); free(xe); free(gu); free(act); free(y);
    return rc;
}

/* ---- dense MLP block ------------------------------------------------------------------ */

static int mlp_block(cpu_ctx *c)
{
    const reap_config *cfg = &c->cfg;
    const int64_t H = cfg->hidden, Id = cfg->inter, Nv = c->n_valid;
    int rc = REAP_OK;
    float *m = falloc(Nv * H), *gu = falloc(Nv * 2 * Id), *act = falloc(Nv * Id),
          *y = falloc(Nv * H);
    if (!m || !gu || !act || !y) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: MLP buffers", c->layer);
        goto done;
    }
    gather_rows(m, c->x, c->valid, Nv, H);
    cpu_rmsnorm(m, m, c->post_norm, Nv, (int)H, cfg->rms_eps);
    cpu_gemm(c->threads, gu, m, c->mlp_gate_up, Nv, 2 * Id, H);
    swiglu_job sj = {gu, act, (int)Id};
    reap_parallel_for(c->threads, Nv, swiglu_range, &sj);
    cpu_gemm(c->threads, y, act, c->mlp_down, Nv, H, Id);
    if ((rc = check_finite(c, y, Nv * H, H, "MLP")))
        goto done;
    for (int64_t n = 0; n < Nv; n++) {
        float *x = c->x + c->valid[n] * H;
        for (int64_t d = 0; d < H; d++)
            x[d] += y[n * H + d];
    }
done:
    free(m); free(gu); free(act); free(y);
    return rc;
}

static int cpu_forward_layer(void *ctx, reap_layer_stats *stats)
{
    cpu_ctx *c = ctx;
    int rc;
    if (c->layer < 0)
        return reap_err_set(REAP_E_INTERNAL, "cpu backend: forward without a loaded layer");
    if (c->is_moe != (stats != NULL))
        return reap_err_set(REAP_E_INTERNAL, "layer %d: statistics %s for a %s layer",
                            c->layer, stats ? "given" : "missing",
                            c->is_moe ? "MoE" : "dense");
    if ((rc = attention_block(c)))
        return rc;
    return c->is_moe ? moe_block(c, stats) : mlp_block(c);
}

static int cpu_get_hidden(void *ctx, float *dst)
{
    cpu_ctx *c = ctx;
    memcpy(dst, c->x, (size_t)(c->T * c->cfg.hidden) * sizeof(float));
    return REAP_OK;
}

static int cpu_set_hidden(void *ctx, const float *src)
{
    cpu_ctx *c = ctx;
    memcpy(c->x, src, (size_t)(c->T * c->cfg.hidden) * sizeof(float));
    return REAP_OK;
}

static int cpu_scatter_rows(void *ctx, const int64_t *slots, int64_t n, const float *src,
                            int add)
{
    cpu_ctx *c = ctx;
    const int64_t H = c->cfg.hidden;
    for (int64_t i = 0; i < n; i++)
        if (slots[i] < 0 || slots[i] >= c->T)
            return reap_err_set(REAP_E_INVALID, "cpu backend: scatter row %lld to position "
                                "%lld of %lld", (long long)i, (long long)slots[i],
                                (long long)c->T);
    for (int64_t i = 0; i < n; i++) {
        float *x = c->x + slots[i] * H;
        const float *y = src + i * H;
        if (add)
            for (int64_t d = 0; d < H; d++)
                x[d] += y[d];
        else
            memcpy(x, y, (size_t)H * sizeof *x);
    }
    return REAP_OK;
}

const reap_backend_i reap_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .embed = cpu_embed,
    .load_layer = cpu_load_layer,
    .forward_layer = cpu_forward_layer,
    .get_hidden = cpu_get_hidden,
    .set_hidden = cpu_set_hidden,
    .scatter_rows = cpu_scatter_rows,
    .free = cpu_free,
};

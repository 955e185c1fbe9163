/* cuda_plan.c - the device-memory arithmetic of the CUDA backend (see cuda_plan.h). Pure C:
 * compiled into the CUDA library and used both by the backend's allocations and by
 * `reap-scorer plan`, which may run where there is no GPU. */
#include "cuda_plan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "positions.h"
#include "reap_err.h"

#define MAX_EXPERTS_PLAN 1024

static int64_t align_up(int64_t n) { return (n + 255) & ~(int64_t)255; }

/* ---- settings --------------------------------------------------------------------- */

int reap_cuda_settings_resolve(const reap_backend_opts *o, reap_cuda_settings *s)
{
    const reap_backend_opts none = {0};
    if (!o) o = &none;
    memset(s, 0, sizeof *s);
    if (!(o->vram_gb >= 0 && o->vram_gb <= 1e6))
        return reap_err_set(REAP_E_INVALID, "vram_gb %g: expected 0 (the free memory) to 1e6",
                            o->vram_gb);
    s->vram_gb = o->vram_gb;
    s->vram_buffer = o->vram_buffer > 0 ? o->vram_buffer : o->vram_buffer < 0 ? 0.0 : 0.10;
    if (!(s->vram_buffer <= 0.9))
        return reap_err_set(REAP_E_INVALID, "vram_buffer %g: at most 0.9", o->vram_buffer);
    s->prefetch_layers = o->prefetch_layers > 0 ? o->prefetch_layers
                         : o->prefetch_layers < 0 ? 0 : 1;
    if (s->prefetch_layers > 8) s->prefetch_layers = 8;
    if (o->attn != REAP_CUDA_ATTN_AUTO && o->attn != REAP_CUDA_ATTN_GEMM)
        return reap_err_set(REAP_E_INVALID, "attention kernel %d: expected auto (%d) or gemm "
                            "(%d)", o->attn, REAP_CUDA_ATTN_AUTO, REAP_CUDA_ATTN_GEMM);
    s->attn_gemm = o->attn == REAP_CUDA_ATTN_GEMM;
    return REAP_OK;
}

int64_t reap_cuda_plan_budget(const reap_cuda_settings *s, int64_t free_bytes)
{
    double v = s->vram_gb > 0 ? s->vram_gb * 1e9 : (double)free_bytes;
    if (free_bytes > 0 && v > (double)free_bytes) v = (double)free_bytes;
    return (int64_t)(v * (1.0 - s->vram_buffer));
}

int reap_cuda_flash_supported(int hd) { return hd == 16 || hd == 32 || hd == 64 || hd == 128; }

/* ---- sizes ------------------------------------------------------------------------- */

typedef struct dims {
    int64_t H, nH, nKV, hd, QKV, qd, E, K, I, Id, S, esz;
    int bf, has_dense;
} dims;

static int64_t chunk_bytes(const dims *d, int nr, int flash, int nb, reap_cuda_arena *a)
{
    const int64_t Tc = (int64_t)nr * d->S, S2 = d->S * d->S, P = Tc * d->K;
    int64_t o = 0, att_end;
    memset(a, 0, sizeof *a);
#define TAKE(field, n)                                                                  \
    do {                                                                                \
        a->field = o;                                                                   \
        o += align_up(n);                                                               \
    } while (0)
    /* attention view */
    TAKE(qkv32, Tc * d->QKV * 4);
    if (d->bf) TAKE(qkvc, Tc * d->QKV * d->esz);
    else a->qkvc = a->qkv32;
    TAKE(attn, Tc * d->qd * d->esz);
    if (!flash) {
        TAKE(s32, nb * S2 * 4);
        if (d->bf) TAKE(pc, nb * S2 * d->esz);
        else a->pc = a->s32;
        TAKE(ptrs, 6 * nb * 8);
    }
    att_end = o;
    /* MoE / MLP view: y (after the down GEMM) reuses xg and gu (dead by then) */
    o = 0;
    int64_t gu = P * 2 * d->I * 4, hh = P * d->I * d->esz, xg = P * d->H * d->esz;
    int64_t y = P * d->H * 4;
    if (d->has_dense) {
        if (Tc * 2 * d->Id * 4 > gu) gu = Tc * 2 * d->Id * 4;
        if (Tc * d->Id * d->esz > hh) hh = Tc * d->Id * d->esz;
    }
    TAKE(logits, Tc * d->E * 4);
    TAKE(perm, P * 4);
    TAKE(inv, P * 4);
    TAKE(hh, hh);
    const int64_t r0 = o;
    TAKE(xg, xg);
    TAKE(gu, gu);
    a->y = r0;
    if (r0 + align_up(y) > o) o = r0 + align_up(y);
#undef TAKE
    a->bytes = att_end > o ? att_end : o;
    return align_up(Tc * d->H * 4) + (d->bf ? align_up(Tc * d->H * d->esz) : 0) + a->bytes;
}

static int attn_pairs(const dims *d, int nr)
{
    const int64_t per = d->S * d->S * (4 + (d->bf ? 2 : 0));
    int64_t nb = REAP_CUDA_ATTN_BATCH_BYTES / per;
    if (nb < 1) nb = 1;
    if (nb > (int64_t)nr * d->nH) nb = (int64_t)nr * d->nH;
    if (nb > 65535) nb = 65535;
    return (int)nb;
}

/* 1 when a modules_to_not_convert entry is a substring of `module` (config.c's rule,
 * repeated here: this file is also built without config.c, see bench/gpu/run.sh). */
static int awq_plain(const reap_config *cfg, const char *module)
{
    for (int i = 0; i < cfg->quant.n_not_convert; i++)
        if (strstr(module, cfg->quant.not_convert[i])) return 1;
    return 0;
}

/* Bytes of a linear [N, K] as stored: AWQ int4 + zeros + scales, or 16-bit. */
static int64_t awq_linear_bytes(const reap_config *cfg, int plain, int64_t N, int64_t K)
{
    const int64_t g = cfg->quant.group_size > 0 ? cfg->quant.group_size : 128;
    if (plain) return 2 * N * K;
    return K * N / 2 + (K / g) * (N / 8) * 4 + (K / g) * N * 2;
}

/* A MoE layer of an AWQ checkpoint as stored (layer 0's module names decide which linears
 * are quantised; norms and the router are 16-bit). */
static int64_t awq_moe_bytes(const reap_config *cfg)
{
    char m[160];
    const int64_t H = cfg->hidden, hd = cfg->head_dim, qd = (int64_t)cfg->n_heads * hd,
                  kvd = (int64_t)cfg->n_kv_heads * hd, E = cfg->n_experts, I = cfg->moe_inter;
    snprintf(m, sizeof m, "%slayers.0.self_attn.q_proj", cfg->prefix);
    const int attn_plain = awq_plain(cfg, m);
    snprintf(m, sizeof m, "%slayers.0.mlp.experts.0.gate_proj", cfg->prefix);
    const int ex_plain = awq_plain(cfg, m);
    return 2 * (2 * H + 2 * hd) + 2 * E * H + awq_linear_bytes(cfg, attn_plain, qd, H) +
           2 * awq_linear_bytes(cfg, attn_plain, kvd, H) +
           awq_linear_bytes(cfg, attn_plain, H, qd) +
           E * (2 * awq_linear_bytes(cfg, ex_plain, I, H) + awq_linear_bytes(cfg, ex_plain, H, I));
}

int reap_cuda_plan_make(const reap_config *cfg, const reap_cuda_plan_req *req,
                        reap_cuda_plan *out)
{
    dims d;
    memset(out, 0, sizeof *out);
    if (cfg->hidden < 1 || cfg->n_heads < 1 || cfg->n_kv_heads < 1 || cfg->head_dim < 2 ||
        req->n_rows < 1 || req->seq_len < 1)
        return reap_err_set(REAP_E_INVALID, "cuda plan: bad dimensions (hidden %d, heads "
                            "%d/%d, head_dim %d, %d rows x %d)", cfg->hidden, cfg->n_heads,
                            cfg->n_kv_heads, cfg->head_dim, req->n_rows, req->seq_len);
    d.H = cfg->hidden;
    d.nH = cfg->n_heads;
    d.nKV = cfg->n_kv_heads;
    d.hd = cfg->head_dim;
    d.qd = d.nH * d.hd;
    d.QKV = (d.nH + 2 * d.nKV) * d.hd;
    d.E = cfg->n_experts > 0 ? cfg->n_experts : 0;
    d.K = d.E > 0 ? cfg->n_experts_used : 0;
    d.I = cfg->moe_inter;
    d.Id = cfg->inter;
    d.S = req->seq_len;
    d.bf = req->precision == REAP_PRECISION_BF16;
    d.esz = d.bf ? 2 : 4;
    d.has_dense = 0;
    for (int l = 0; l < cfg->n_layers; l++)
        if (!reap_config_layer_is_moe(cfg, l)) d.has_dense = 1;
    const int64_t T = (int64_t)req->n_rows * d.S, TK = T * d.K, H = d.H;

    out->n_rows = req->n_rows;
    out->seq_len = req->seq_len;
    out->precision = req->precision;
    out->has_dense = d.has_dense;
    out->attn_flash = d.bf && !req->attn_gemm && reap_cuda_flash_supported((int)d.hd);
    out->hidden_bytes = T * H * 4;
    const int64_t n_pos = reap_positions_limit((int)d.S); /* RoPE table rows */
    /* hidden, tokens, mRoPE ids (3 per slot), mask, id planes, RoPE cos/sin, routing and
     * statistics arrays */
    out->resident_bytes = align_up(T * H * 4) + align_up(T * 4) + align_up(3 * T * 4) +
                          align_up(T) + align_up(d.hd / 2) +
                          2 * align_up(n_pos * (d.hd / 2) * 4) + align_up(TK * 4) +
                          2 * align_up(TK * 8) + align_up(TK * 4) +
                          24 * align_up(MAX_EXPERTS_PLAN * 8);
    if (req->images)
        out->image_bytes = (d.E > 0 ? align_up(T) : 0) +
                           align_up(REAP_CUDA_SCATTER_ROWS * 8) +
                           align_up(REAP_CUDA_SCATTER_ROWS * H * 4);
    out->resident_bytes += out->image_bytes;
    const int64_t common = 4 * align_up(H * 4) + align_up(d.QKV * H * d.esz) +
                           align_up(H * d.qd * d.esz);
    const int64_t moe = d.E > 0 ? align_up(d.E * H * 4) + align_up(d.E * 2 * d.I * H * d.esz) +
                                      align_up(d.E * H * d.I * d.esz)
                                : 0;
    const int64_t dense = d.has_dense ? align_up(2 * d.Id * H * d.esz) + align_up(H * d.Id * d.esz)
                                      : 0;
    out->moe_layer_bytes = d.E > 0 ? common + moe : 0;
    out->dense_layer_bytes = d.has_dense ? common + dense : 0;
    out->moe_ckpt_bytes = d.E > 0 ? 2 * (2 * H + 2 * d.hd + d.QKV * H + H * d.qd + d.E * H +
                                         3 * d.E * d.I * H)
                                  : 0;
    out->moe_awq_bytes = d.E > 0 && cfg->quant.method == REAP_QUANT_AWQ ? awq_moe_bytes(cfg) : 0;
    out->weight_set_bytes = common + moe + dense;
    /* a staging slot holds the largest expert slab in 4-byte elements (transposed at
     * upload) and at least REAP_CUDA_STAGE_BYTES */
    int64_t slab = 2 * d.I * H * 4;
    out->stage_slot_bytes = slab > REAP_CUDA_STAGE_BYTES ? align_up(slab) : REAP_CUDA_STAGE_BYTES;
    out->margin_bytes = REAP_CUDA_MARGIN_BYTES;
    out->budget_bytes = req->budget_bytes;

    const int64_t fixed = out->resident_bytes + 2 * out->stage_slot_bytes + out->margin_bytes;
    int nr_max = (int)(REAP_CUDA_MAX_CHUNK_TOKENS / d.S);
    if (nr_max < 1) nr_max = 1;
    if (nr_max > req->n_rows) nr_max = req->n_rows;
    if (req->batch_rows > 0) nr_max = req->batch_rows < req->n_rows ? req->batch_rows : req->n_rows;
    int nr_floor = (int)(REAP_CUDA_MIN_PREFETCH_TOKENS / d.S);
    if (nr_floor < 1) nr_floor = 1;
    if (nr_floor > nr_max) nr_floor = nr_max;
    /* pass 1: with the wanted prefetch, micro-batch down to nr_floor; pass 2: no
     * prefetch, down to one row (a forced batch_rows is never shrunk) */
    for (int pass = 0; pass < 2; pass++) {
        const int P = pass == 0 ? req->prefetch_layers : 0;
        if (pass == 1 && req->prefetch_layers == 0) break;
        const int lo = pass == 0 ? nr_floor : 1;
        for (int nr = nr_max; nr >= lo;) {
            reap_cuda_arena a;
            const int nb = attn_pairs(&d, nr);
            const int64_t cb = chunk_bytes(&d, nr, out->attn_flash, nb, &a);
            const int64_t peak = fixed + (int64_t)(1 + P) * out->weight_set_bytes + cb;
            if (peak <= req->budget_bytes) {
                out->chunk_rows = nr;
                out->chunk_tokens = (int64_t)nr * d.S;
                out->prefetch_layers = P;
                out->attn_pairs = nb;
                out->arena = a;
                out->chunk_bytes = cb;
                out->peak_bytes = peak;
                return REAP_OK;
            }
            if (req->batch_rows > 0 || nr == lo) break;
            nr = nr / 2 > lo ? nr / 2 : lo;
        }
    }
    /* nothing fits: report one row without prefetch (or the forced micro-batch) */
    {
        const int nr = req->batch_rows > 0 ? nr_max : 1;
        reap_cuda_arena a;
        const int64_t cb = chunk_bytes(&d, nr, out->attn_flash, attn_pairs(&d, nr), &a);
        const int64_t need = fixed + out->weight_set_bytes + cb;
        return reap_err_set(REAP_E_NOMEM,
                            "cuda plan: %lld bytes of device memory needed for %d row%s of "
                            "%d positions (hidden states and statistics %lld for %d rows, "
                            "one layer's weights %lld, staging %lld, workspace %lld, margin "
                            "%lld) but the budget is %lld bytes (REAP_VRAM_GB / free memory "
                            "less REAP_VRAM_BUFFER)",
                            (long long)need, nr, nr == 1 ? "" : "s", req->seq_len,
                            (long long)out->resident_bytes, req->n_rows,
                            (long long)out->weight_set_bytes,
                            (long long)(2 * out->stage_slot_bytes), (long long)cb,
                            (long long)out->margin_bytes, (long long)req->budget_bytes);
    }
}

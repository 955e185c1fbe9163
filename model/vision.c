/* vision.c - the Qwen3-VL vision tower on the CPU (vision.h).
 *
 * Dimension legend: Np patches, D values per patch, Hv hidden, nh heads, hd head dim,
 * Iv MLP width, m merge size, Mg = m*m*Hv merged width, Nt tokens, Ho output width,
 * L patches of one frame (gh * gw).
 *
 * How it works: reap_vision_load converts every model.visual.* tensor to fp32 once and
 * packs the linear weights for cpu_gemm. reap_vision_forward reads top to bottom like the
 * math: patch_embed, pos_embed_add, rotary_table, then per block layer_norm, linear
 * (qkv), attention (rotary applied per head, one frame at a time), linear (proj),
 * layer_norm, linear (fc1), gelu, linear (fc2), with the deepstack mergers after their
 * blocks and the final merger last. Attention of one (frame, head) is two cpu_gemm
 * products over chunks of queries, so its result does not depend on the chunking or on
 * the thread that ran it.
 */
#include "vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_gemm.h"
#include "cpu_ops.h"
#include "parallel.h"
#include "reap_err.h"
#include "weights.h"

#define VIS_LN_EPS 1e-6
#define VIS_ROPE_THETA 10000.0f
#define VIS_Q_CHUNK 64 /* queries per score block in attention */

typedef struct vis_linear {
    float *wp;          /* packed [out, in] (cpu_gemm_pack) */
    float *b;           /* [out] */
    int out, in;
} vis_linear;

typedef struct vis_block {
    float *n1_w, *n1_b; /* [Hv] */
    float *n2_w, *n2_b; /* [Hv] */
    vis_linear qkv;     /* [3Hv, Hv] */
    vis_linear proj;    /* [Hv, Hv] */
    vis_linear fc1;     /* [Iv, Hv] */
    vis_linear fc2;     /* [Hv, Iv] */
} vis_block;

typedef struct vis_merger {
    int post;           /* 1: LayerNorm after grouping (deepstack), over Mg */
    float *n_w, *n_b;   /* [Hv] or [Mg] */
    vis_linear fc1;     /* [Mg, Mg] */
    vis_linear fc2;     /* [Ho, Mg] */
} vis_merger;

struct reap_vision {
    reap_vision_config c;
    vis_linear patch;   /* [Hv, D] */
    float *pos;         /* [n_pos, Hv] */
    vis_block *blocks;  /* [depth] */
    vis_merger merger;
    vis_merger *deep;   /* [Nd] */
};

/* ---- loading -------------------------------------------------------------------------- */

typedef struct loader {
    const reap_ckpt *ck;
    char name[256];
} loader;

/* Tensor "model.visual.<suffix>" of exactly `ndim` dims `shape`, converted to fp32 into a
 * new buffer *dst. */
static int load_tensor(loader *ld, const char *suffix, int ndim, const int64_t *shape,
                       float **dst)
{
    char want[160], got[160];
    int64_t n = 1;
    int rc;

    *dst = NULL;
    snprintf(ld->name, sizeof ld->name, "model.visual.%s", suffix);
    st_shape_str(want, sizeof want, ndim, shape);
    const st_tensor *t = reap_ckpt_find(ld->ck, ld->name);
    if (!t)
        return reap_err_set(REAP_E_FORMAT, "%s: vision tensor '%s' (shape %s) is missing",
                            reap_ckpt_dir(ld->ck), ld->name, want);
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        st_shape_str(got, sizeof got, t->ndim, t->shape);
        return reap_err_set(REAP_E_FORMAT, "%s: vision tensor '%s' has shape %s, expected %s "
                            "from vision_config", reap_ckpt_dir(ld->ck), ld->name, got, want);
    }
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    if (!(*dst = malloc((size_t)n * sizeof **dst)))
        return reap_err_set(REAP_E_NOMEM, "vision tower: out of memory for '%s'", ld->name);
    if ((rc = reap_tensor_to_f32(t, 0, n, *dst))) {
        free(*dst);
        *dst = NULL;
    }
    return rc;
}

static int load_vec(loader *ld, const char *fmt, int k, int n, float **dst)
{
    char suffix[128];
    int64_t shape[1] = { n };
    snprintf(suffix, sizeof suffix, fmt, k);
    return load_tensor(ld, suffix, 1, shape, dst);
}

/* "<module>.weight" [out, in] packed, "<module>.bias" [out]. `wshape` (ndim dims) is the
 * stored shape of the weight when it is not [out, in] (the Conv3d patch embedding). */
static int load_linear(loader *ld, const char *module, int out, int in, int ndim,
                       const int64_t *wshape, vis_linear *L)
{
    char suffix[160];
    int64_t shape2[2] = { out, in }, bshape[1] = { out };
    float *w = NULL;
    int rc;

    L->out = out;
    L->in = in;
    snprintf(suffix, sizeof suffix, "%s.weight", module);
    if ((rc = load_tensor(ld, suffix, wshape ? ndim : 2, wshape ? wshape : shape2, &w)))
        return rc;
    L->wp = malloc((size_t)cpu_gemm_packed_len(out, in) * sizeof *L->wp);
    if (!L->wp) {
        free(w);
        return reap_err_set(REAP_E_NOMEM, "vision tower: out of memory for '%s'", ld->name);
    }
    cpu_gemm_pack(L->wp, w, out, in);
    free(w);
    snprintf(suffix, sizeof suffix, "%s.bias", module);
    return load_tensor(ld, suffix, 1, bshape, &L->b);
}

static void linear_free(vis_linear *L)
{
    free(L->wp);
    free(L->b);
}

static int load_merger(loader *ld, const char *prefix, const reap_vision_config *c, int post,
                       vis_merger *M)
{
    char mod[128];
    int mg = c->merge * c->merge * c->hidden;
    int rc;

    M->post = post;
    snprintf(mod, sizeof mod, "%s.norm.weight", prefix);
    if ((rc = load_vec(ld, mod, 0, post ? mg : c->hidden, &M->n_w)))
        return rc;
    snprintf(mod, sizeof mod, "%s.norm.bias", prefix);
    if ((rc = load_vec(ld, mod, 0, post ? mg : c->hidden, &M->n_b)))
        return rc;
    snprintf(mod, sizeof mod, "%s.linear_fc1", prefix);
    if ((rc = load_linear(ld, mod, mg, mg, 0, NULL, &M->fc1)))
        return rc;
    snprintf(mod, sizeof mod, "%s.linear_fc2", prefix);
    return load_linear(ld, mod, c->out_hidden, mg, 0, NULL, &M->fc2);
}

static void merger_free(vis_merger *M)
{
    free(M->n_w);
    free(M->n_b);
    linear_free(&M->fc1);
    linear_free(&M->fc2);
}

static int load_block(loader *ld, const reap_vision_config *c, int b, vis_block *B)
{
    char mod[96];
    int H = c->hidden, rc;

    if ((rc = load_vec(ld, "blocks.%d.norm1.weight", b, H, &B->n1_w)) ||
        (rc = load_vec(ld, "blocks.%d.norm1.bias", b, H, &B->n1_b)) ||
        (rc = load_vec(ld, "blocks.%d.norm2.weight", b, H, &B->n2_w)) ||
        (rc = load_vec(ld, "blocks.%d.norm2.bias", b, H, &B->n2_b)))
        return rc;
    snprintf(mod, sizeof mod, "blocks.%d.attn.qkv", b);
    if ((rc = load_linear(ld, mod, 3 * H, H, 0, NULL, &B->qkv)))
        return rc;
    snprintf(mod, sizeof mod, "blocks.%d.attn.proj", b);
    if ((rc = load_linear(ld, mod, H, H, 0, NULL, &B->proj)))
        return rc;
    snprintf(mod, sizeof mod, "blocks.%d.mlp.linear_fc1", b);
    if ((rc = load_linear(ld, mod, c->inter, H, 0, NULL, &B->fc1)))
        return rc;
    snprintf(mod, sizeof mod, "blocks.%d.mlp.linear_fc2", b);
    return load_linear(ld, mod, H, c->inter, 0, NULL, &B->fc2);
}

void reap_vision_free(reap_vision *v)
{
    if (!v)
        return;
    linear_free(&v->patch);
    free(v->pos);
    if (v->blocks)
        for (int b = 0; b < v->c.depth; b++) {
            vis_block *B = &v->blocks[b];
            free(B->n1_w);
            free(B->n1_b);
            free(B->n2_w);
            free(B->n2_b);
            linear_free(&B->qkv);
            linear_free(&B->proj);
            linear_free(&B->fc1);
            linear_free(&B->fc2);
        }
    free(v->blocks);
    merger_free(&v->merger);
    if (v->deep)
        for (int k = 0; k < v->c.n_deepstack; k++)
            merger_free(&v->deep[k]);
    free(v->deep);
    free(v);
}

int64_t reap_vision_patch_dim(const reap_vision_config *vc)
{
    return (int64_t)vc->in_channels * vc->temporal_patch * vc->patch * vc->patch;
}

int reap_vision_load(const reap_ckpt *ck, const reap_config *cfg, reap_vision **out)
{
    reap_vision *v = NULL;
    loader ld = { .ck = ck };
    int rc;

    if (out)
        *out = NULL;
    if (!ck || !cfg || !out)
        return reap_err_set(REAP_E_INVALID, "reap_vision_load: NULL argument");
    const reap_vision_config *c = &cfg->vision;
    if (!c->present)
        return reap_err_set(REAP_E_INVALID, "%s: the checkpoint has no vision tower "
                            "(config.json has no vision_config with depth > 0)",
                            reap_ckpt_dir(ck));
    if (!(v = calloc(1, sizeof *v)) ||
        !(v->blocks = calloc((size_t)c->depth, sizeof *v->blocks)) ||
        (c->n_deepstack && !(v->deep = calloc((size_t)c->n_deepstack, sizeof *v->deep)))) {
        rc = reap_err_set(REAP_E_NOMEM, "vision tower: out of memory");
        goto fail;
    }
    v->c = *c;
    int64_t conv[5] = { c->hidden, c->in_channels, c->temporal_patch, c->patch, c->patch };
    int64_t pos[2] = { c->n_pos, c->hidden };
    if ((rc = load_linear(&ld, "patch_embed.proj", c->hidden,
                          (int)reap_vision_patch_dim(c), 5, conv, &v->patch)) ||
        (rc = load_tensor(&ld, "pos_embed.weight", 2, pos, &v->pos)))
        goto fail;
    for (int b = 0; b < c->depth; b++)
        if ((rc = load_block(&ld, c, b, &v->blocks[b])))
            goto fail;
    if ((rc = load_merger(&ld, "merger", c, 0, &v->merger)))
        goto fail;
    for (int k = 0; k < c->n_deepstack; k++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "deepstack_merger_list.%d", k);
        if ((rc = load_merger(&ld, prefix, c, 1, &v->deep[k])))
            goto fail;
    }
    *out = v;
    return REAP_OK;
fail:
    reap_vision_free(v);
    return rc;
}

const reap_vision_config *reap_vision_cfg(const reap_vision *v)
{
    return v ? &v->c : NULL;
}

int reap_vision_grids_check(const reap_vision_config *vc, const int32_t *grids, int n_images,
                            int64_t *n_patches, int64_t *n_tokens)
{
    int64_t np = 0;

    if (!vc || !grids || n_images < 1)
        return reap_err_set(REAP_E_INVALID, "vision tower: no images (or NULL grids)");
    for (int i = 0; i < n_images; i++) {
        int32_t t = grids[3 * i], gh = grids[3 * i + 1], gw = grids[3 * i + 2];
        if (t < 1 || t > REAP_VISION_MAX_FRAMES || gh < 1 || gh > REAP_VISION_MAX_GRID ||
            gw < 1 || gw > REAP_VISION_MAX_GRID)
            return reap_err_set(REAP_E_INVALID, "vision tower: image %d has grid (t %d, h %d, "
                                "w %d); each must be in [1, %d]", i, t, gh, gw,
                                REAP_VISION_MAX_GRID);
        if (gh % vc->merge || gw % vc->merge)
            return reap_err_set(REAP_E_INVALID, "vision tower: image %d has grid h %d, w %d, "
                                "not multiples of spatial_merge_size %d", i, gh, gw,
                                vc->merge);
        np += (int64_t)t * gh * gw;
        if (np > REAP_VISION_MAX_PATCHES)
            return reap_err_set(REAP_E_INVALID, "vision tower: more than %d patches in one "
                                "call (at image %d)", REAP_VISION_MAX_PATCHES, i);
    }
    if (n_patches)
        *n_patches = np;
    if (n_tokens)
        *n_tokens = np / ((int64_t)vc->merge * vc->merge);
    return REAP_OK;
}

/* Floats of a linear [out, in] with bias as load_linear keeps it. */
static int64_t linear_floats(int64_t out, int64_t in)
{
    return cpu_gemm_packed_len(out, in) + out;
}

/* Floats of a merger (load_merger): its norm, fc1 [Mg, Mg], fc2 [Ho, Mg]. */
static int64_t merger_floats(const reap_vision_config *c, int post)
{
    const int64_t mg = (int64_t)c->merge * c->merge * c->hidden;
    return 2 * (post ? mg : c->hidden) + linear_floats(mg, mg) + linear_floats(c->out_hidden, mg);
}

static int64_t attn_scratch_len(int L, int hd);

int reap_vision_mem_plan(const reap_vision_config *vc, int64_t n_patches,
                         int64_t frame_patches, int threads, reap_vision_mem *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!vc || !out || !vc->present || n_patches < 1 || frame_patches < 1 ||
        frame_patches > n_patches || frame_patches > INT32_MAX || threads < 1)
        return reap_err_set(REAP_E_INVALID, "vision memory plan: no tower, or %lld patches "
                            "(largest frame %lld) with %d threads", (long long)n_patches,
                            (long long)frame_patches, threads);
    const int64_t H = vc->hidden, I = vc->inter, hd = vc->head_dim;
    const int64_t block = 4 * H + linear_floats(3 * H, H) + linear_floats(H, H) +
                          linear_floats(I, H) + linear_floats(H, I);
    int64_t w = linear_floats(H, reap_vision_patch_dim(vc)) + (int64_t)vc->n_pos * H +
                vc->depth * block + merger_floats(vc, 0);
    for (int k = 0; k < vc->n_deepstack; k++)
        w += merger_floats(vc, 1);
    const int64_t wide = 3 * H > I ? 3 * H : I;
    out->weight_bytes = 4 * w;
    out->act_bytes = 4 * (n_patches * (3 * H + wide + 2 * hd) +
                          threads * attn_scratch_len((int)frame_patches, (int)hd));
    return REAP_OK;
}

/* ---- the math ------------------------------------------------------------------------- */

/* y[n, out] = x[n, in] @ W^T + b. */
static void linear(int threads, float *y, const float *x, const vis_linear *L, int64_t n)
{
    cpu_gemm(threads, y, x, L->wp, n, L->out, L->in);
    for (int64_t r = 0; r < n; r++)
        for (int j = 0; j < L->out; j++)
            y[r * L->out + j] += L->b[j];
}

typedef struct ln_job {
    float *y;
    const float *x, *w, *b;
    int d;
} ln_job;

/* LayerNorm of rows [r0, r1): mean and variance in double, index order. */
static void layer_norm_range(void *ud, int64_t r0, int64_t r1, int tid)
{
    const ln_job *j = ud;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * j->d;
        float *y = j->y + r * j->d;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < j->d; i++)
            mean += x[i];
        mean /= j->d;
        for (int i = 0; i < j->d; i++)
            var += (x[i] - mean) * (x[i] - mean);
        double inv = 1.0 / sqrt(var / j->d + VIS_LN_EPS);
        for (int i = 0; i < j->d; i++)
            y[i] = (float)((x[i] - mean) * inv * j->w[i] + j->b[i]);
    }
}

static void layer_norm(int threads, float *y, const float *x, const float *w, const float *b,
                       int64_t n, int d)
{
    ln_job j = { y, x, w, b, d };
    reap_parallel_for(threads, n, layer_norm_range, &j);
}

/* GELU in place: tanh approximation (gelu_pytorch_tanh) or exact erf. */
static void gelu(float *x, int64_t n, int use_tanh)
{
    const double k = 0.79788456080286535588; /* sqrt(2 / pi) */
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        x[i] = use_tanh ? (float)(0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v))))
                        : (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
    }
}

/* torch.linspace(0, end, n) in float32, as the CPU kernel computes it: step rounded to
 * float, the first half counted up from 0, the second half down from `end` (one fused
 * multiply-add each). */
static float linspace_at(float end, int n, int i)
{
    if (n == 1)
        return 0.0f;
    float step = end / (float)(n - 1);
    return i < n / 2 ? step * (float)i : fmaf(-step, (float)(n - 1 - i), end);
}

/* Patch p of a frame with grid (gh, gw), in merge-block order, sits at (row, col). */
static void patch_rc(int p, int gw, int m, int *row, int *col)
{
    int in_block = p % (m * m), block = p / (m * m);
    int bw = gw / m;
    *row = (block / bw) * m + in_block / m;
    *col = (block % bw) * m + in_block % m;
}

/* x[L, Hv] += the position table bilinearly interpolated to (gh, gw), merge-block order
 * (fast_pos_embed_interpolate: float32 weights, truncating floor, clipped ceiling). */
static void pos_embed_add(const reap_vision *v, float *x, int gh, int gw)
{
    const int S = v->c.pos_side, H = v->c.hidden, m = v->c.merge;
    for (int p = 0; p < gh * gw; p++) {
        int row, col;
        patch_rc(p, gw, m, &row, &col);
        float hy = linspace_at((float)(S - 1), gh, row);
        float wx = linspace_at((float)(S - 1), gw, col);
        int h0 = (int)hy, w0 = (int)wx;
        int h1 = h0 + 1 < S ? h0 + 1 : S - 1, w1 = w0 + 1 < S ? w0 + 1 : S - 1;
        float dh = hy - (float)h0, dw = wx - (float)w0;
        float c00 = (1.0f - dh) * (1.0f - dw), c01 = (1.0f - dh) * dw;
        float c10 = dh * (1.0f - dw), c11 = dh * dw;
        const float *e00 = v->pos + ((int64_t)h0 * S + w0) * H;
        const float *e01 = v->pos + ((int64_t)h0 * S + w1) * H;
        const float *e10 = v->pos + ((int64_t)h1 * S + w0) * H;
        const float *e11 = v->pos + ((int64_t)h1 * S + w1) * H;
        float *xr = x + (int64_t)p * H;
        for (int i = 0; i < H; i++) {
            float a = e00[i] * c00, b = e01[i] * c01, c = e10[i] * c10, d = e11[i] * c11;
            xr[i] += ((a + b) + c) + d;
        }
    }
}

/* Rotary cos/sin [L, hd] of one frame, merge-block order: angles (row * f_j) for
 * j < hd/4, then (col * f_j), the hd/2 values repeated; f_j = 1 / 1e4^(2j / (hd/2)),
 * everything in float32 as the reference computes it. */
static void rotary_table(float *cos_t, float *sin_t, int gh, int gw, int m, int hd)
{
    const int q = hd / 4, half = hd / 2;
    float inv[1024];
    for (int j = 0; j < q; j++)
        inv[j] = 1.0f / powf(VIS_ROPE_THETA, (float)(2 * j) / (float)half);
    for (int p = 0; p < gh * gw; p++) {
        int row, col;
        patch_rc(p, gw, m, &row, &col);
        float *c = cos_t + (int64_t)p * hd, *s = sin_t + (int64_t)p * hd;
        for (int j = 0; j < q; j++) {
            float ar = (float)row * inv[j], ac = (float)col * inv[j];
            c[j] = c[j + half] = cosf(ar);
            s[j] = s[j + half] = sinf(ar);
            c[q + j] = c[q + j + half] = cosf(ac);
            s[q + j] = s[q + j + half] = sinf(ac);
        }
    }
}

/* Rotate-half rotary on one head vector x[hd] in place. */
static void rotary_apply(float *x, const float *c, const float *s, int hd)
{
    const int half = hd / 2;
    float tmp[1024];
    for (int i = 0; i < hd; i++) {
        float rot = i < half ? -x[i + half] : x[i - half];
        tmp[i] = x[i] * c[i] + rot * s[i];
    }
    memcpy(x, tmp, (size_t)hd * sizeof *x);
}

/* One frame's attention, parallel over heads. */
typedef struct attn_job {
    const reap_vision *v;
    const float *qkv;     /* [L, 3Hv] of this frame */
    float *out;           /* [L, Hv] of this frame */
    const float *cos_t, *sin_t; /* [L, hd] */
    int L;
    float *scratch;       /* per thread: scratch_len floats */
    int64_t scratch_len;
} attn_job;

static int64_t attn_scratch_len(int L, int hd)
{
    /* q [L, hd], kp packed [L, hd], vt [hd, L], vtp packed [hd, L], scores [Qc, L],
     * o [Qc, hd] */
    return (int64_t)L * hd + cpu_gemm_packed_len(L, hd) + (int64_t)hd * L +
           cpu_gemm_packed_len(hd, L) + (int64_t)VIS_Q_CHUNK * L + (int64_t)VIS_Q_CHUNK * hd;
}

static void attention_range(void *ud, int64_t h0, int64_t h1, int tid)
{
    const attn_job *j = ud;
    const int H = j->v->c.hidden, hd = j->v->c.head_dim, L = j->L;
    float *q = j->scratch + tid * j->scratch_len;
    float *kp = q + (int64_t)L * hd;
    float *vt = kp + cpu_gemm_packed_len(L, hd);
    float *vtp = vt + (int64_t)hd * L;
    float *sc = vtp + cpu_gemm_packed_len(hd, L);
    float *o = sc + (int64_t)VIS_Q_CHUNK * L;
    const float scale = 1.0f / sqrtf((float)hd);

    for (int64_t h = h0; h < h1; h++) {
        /* gather q, k (rotated) and v^T of head h; k is packed through q's buffer */
        for (int p = 0; p < L; p++) {
            const float *row = j->qkv + (int64_t)p * 3 * H + h * hd;
            const float *c = j->cos_t + (int64_t)p * hd, *s = j->sin_t + (int64_t)p * hd;
            memcpy(q + (int64_t)p * hd, row + H, (size_t)hd * sizeof *q);
            rotary_apply(q + (int64_t)p * hd, c, s, hd);
            for (int i = 0; i < hd; i++)
                vt[(int64_t)i * L + p] = row[2 * H + i];
        }
        cpu_gemm_pack(kp, q, L, hd);
        cpu_gemm_pack(vtp, vt, hd, L);
        for (int p = 0; p < L; p++) {
            const float *row = j->qkv + (int64_t)p * 3 * H + h * hd;
            memcpy(q + (int64_t)p * hd, row, (size_t)hd * sizeof *q);
            rotary_apply(q + (int64_t)p * hd, j->cos_t + (int64_t)p * hd,
                         j->sin_t + (int64_t)p * hd, hd);
        }
        for (int r0 = 0; r0 < L; r0 += VIS_Q_CHUNK) {
            int nq = L - r0 < VIS_Q_CHUNK ? L - r0 : VIS_Q_CHUNK;
            cpu_gemm(1, sc, q + (int64_t)r0 * hd, kp, nq, L, hd);
            for (int r = 0; r < nq; r++) {
                float *srow = sc + (int64_t)r * L, mx = -INFINITY;
                for (int c = 0; c < L; c++) {
                    srow[c] *= scale;
                    mx = srow[c] > mx ? srow[c] : mx;
                }
                double sum = 0.0;
                for (int c = 0; c < L; c++) {
                    srow[c] = expf(srow[c] - mx);
                    sum += srow[c];
                }
                float inv = (float)(1.0 / sum);
                for (int c = 0; c < L; c++)
                    srow[c] *= inv;
            }
            cpu_gemm(1, o, sc, vtp, nq, hd, L);
            for (int r = 0; r < nq; r++)
                memcpy(j->out + (int64_t)(r0 + r) * H + h * hd, o + (int64_t)r * hd,
                       (size_t)hd * sizeof *o);
        }
    }
}

/* The first non-finite value of x[n, d] as an error naming the block and stage. */
static int check_finite(const float *x, int64_t n, int64_t d, const char *stage, int block)
{
    int64_t at = cpu_first_nonfinite(x, n * d);
    if (at < 0)
        return REAP_OK;
    if (block >= 0)
        return reap_err_set(REAP_E_NUMERIC, "vision tower: non-finite value after %s of "
                            "block %d (row %lld, element %lld)", stage, block,
                            (long long)(at / d), (long long)(at % d));
    return reap_err_set(REAP_E_NUMERIC, "vision tower: non-finite value in %s (row %lld, "
                        "element %lld)", stage, (long long)(at / d), (long long)(at % d));
}

/* out[Nt, Ho] = merger M of x[Np, Hv]. tmp: 2 * Np * Hv floats (Nt * Mg = Np * Hv). */
static void merge(int threads, const reap_vision *v, const vis_merger *M, const float *x,
                  int64_t np, float *tmp, float *out)
{
    const int H = v->c.hidden, mg = v->c.merge * v->c.merge * H;
    const int64_t nt = np / (v->c.merge * v->c.merge);
    float *g = tmp, *f = tmp + np * H;
    if (M->post)
        layer_norm(threads, g, x, M->n_w, M->n_b, nt, mg);
    else
        layer_norm(threads, g, x, M->n_w, M->n_b, np, H);
    /* rows of g are already grouped: m*m consecutive patches form one [Mg] row */
    linear(threads, f, g, &M->fc1, nt);
    gelu(f, nt * mg, 0);
    linear(threads, out, f, &M->fc2, nt);
}

int reap_vision_forward(const reap_vision *v, const float *patches, const int32_t *grids,
                        int n_images, int threads, float *out, float *deepstack_out)
{
    float *x = NULL, *h = NULL, *big = NULL, *attn = NULL, *cos_t = NULL, *sin_t = NULL,
          *scratch = NULL;
    int64_t np, nt;
    int rc;

    if (!v || !patches || !grids || !out || threads < 1 ||
        (v->c.n_deepstack > 0 && !deepstack_out))
        return reap_err_set(REAP_E_INVALID, "reap_vision_forward: NULL argument or "
                            "threads < 1");
    const reap_vision_config *c = &v->c;
    if ((rc = reap_vision_grids_check(c, grids, n_images, &np, &nt)))
        return rc;
    const int H = c->hidden, hd = c->head_dim;
    const int64_t D = reap_vision_patch_dim(c);
    int max_l = 0;
    for (int i = 0; i < n_images; i++)
        if (grids[3 * i + 1] * grids[3 * i + 2] > max_l)
            max_l = grids[3 * i + 1] * grids[3 * i + 2];
    /* big: qkv [Np, 3Hv], fc1 [Np, Iv], a merger's two [Nt, Mg] = [Np, Hv] buffers */
    int64_t wide = 3 * (int64_t)H > c->inter ? 3 * (int64_t)H : c->inter;
    int64_t slen = attn_scratch_len(max_l, hd);
    x = malloc((size_t)(np * H) * sizeof *x);
    h = malloc((size_t)(np * H) * sizeof *h);
    attn = malloc((size_t)(np * H) * sizeof *attn);
    big = malloc((size_t)(np * wide) * sizeof *big);
    cos_t = malloc((size_t)(np * hd) * sizeof *cos_t);
    sin_t = malloc((size_t)(np * hd) * sizeof *sin_t);
    scratch = malloc((size_t)(slen * threads) * sizeof *scratch);
    if (!x || !h || !attn || !big || !cos_t || !sin_t || !scratch) {
        rc = reap_err_set(REAP_E_NOMEM, "vision tower: out of memory for %lld patches",
                          (long long)np);
        goto done;
    }
    if ((rc = check_finite(patches, np, D, "the input patches", -1)))
        goto done;

    /* patch embedding, position embedding and rotary tables, frame by frame */
    linear(threads, x, patches, &v->patch, np);
    int64_t off = 0;
    for (int i = 0; i < n_images; i++) {
        int t = grids[3 * i], gh = grids[3 * i + 1], gw = grids[3 * i + 2];
        for (int f = 0; f < t; f++, off += (int64_t)gh * gw) {
            pos_embed_add(v, x + off * H, gh, gw);
            rotary_table(cos_t + off * hd, sin_t + off * hd, gh, gw, c->merge, hd);
        }
    }
    if ((rc = check_finite(x, np, H, "the patch and position embedding", -1)))
        goto done;

    int k = 0;
    for (int b = 0; b < c->depth; b++) {
        const vis_block *B = &v->blocks[b];
        layer_norm(threads, h, x, B->n1_w, B->n1_b, np, H);
        linear(threads, big, h, &B->qkv, np);
        off = 0;
        for (int i = 0; i < n_images; i++) {
            int t = grids[3 * i], L = grids[3 * i + 1] * grids[3 * i + 2];
            for (int f = 0; f < t; f++, off += L) {
                attn_job j = { v, big + off * 3 * H, attn + off * H, cos_t + off * hd,
                               sin_t + off * hd, L, scratch, slen };
                reap_parallel_for(threads, c->n_heads, attention_range, &j);
            }
        }
        linear(threads, h, attn, &B->proj, np);
        for (int64_t e = 0; e < np * H; e++)
            x[e] += h[e];
        if ((rc = check_finite(x, np, H, "attention", b)))
            goto done;
        layer_norm(threads, h, x, B->n2_w, B->n2_b, np, H);
        linear(threads, big, h, &B->fc1, np);
        gelu(big, np * c->inter, c->act == REAP_VISION_ACT_GELU_TANH);
        linear(threads, h, big, &B->fc2, np);
        for (int64_t e = 0; e < np * H; e++)
            x[e] += h[e];
        if ((rc = check_finite(x, np, H, "the MLP", b)))
            goto done;
        if (k < c->n_deepstack && c->deepstack[k] == b) {
            float *dst = deepstack_out + (int64_t)k * nt * c->out_hidden;
            merge(threads, v, &v->deep[k], x, np, big, dst);
            if ((rc = check_finite(dst, nt, c->out_hidden, "its deepstack merger", b)))
                goto done;
            k++;
        }
    }
    merge(threads, v, &v->merger, x, np, big, out);
    rc = check_finite(out, nt, c->out_hidden, "the merger", -1);
done:
    free(x);
    free(h);
    free(attn);
    free(big);
    free(cos_t);
    free(sin_t);
    free(scratch);
    return rc;
}

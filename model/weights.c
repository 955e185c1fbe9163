/* weights.c - lookup, validation and fp32 conversion of one decoder layer's tensors.
 *
 * Every tensor of a layer is looked up by its Hugging Face name, its dtype must be
 * BF16/F16/F32 and its shape must match the configuration; the message of a mismatch
 * names the tensor, its shape and the expected shape, which is how a config.json that
 * disagrees with the shards is reported.
 */
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

/* ---- scalar conversions ------------------------------------------------------------ */

float reap_bf16_to_f32(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float reap_f16_to_f32(uint16_t v)
{
    uint32_t sign = (uint32_t)(v & 0x8000) << 16;
    uint32_t exp = (v >> 10) & 0x1f;
    uint32_t man = v & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) {                 /* Inf / NaN */
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {             /* normal */
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {             /* zero */
        u = sign;
    } else {                           /* subnormal: renormalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t reap_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);          /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                   /* round to nearest even */
    return (uint16_t)(u >> 16);
}

uint16_t reap_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);             /* NaN */
    if (absu >= 0x477ff000u)                            /* rounds to >= 65520: Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) {                           /* below 2^-14: subnormal or 0 */
        if (absu < 0x33000000u)                          /* below half of 2^-24 */
            return (uint16_t)sign;
        uint32_t man = (absu & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(absu >> 23);             /* 14 + (113 - exp) - 1 */
        uint32_t half = 1u << (shift - 1);
        uint32_t rest = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rest > half || (rest == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu - 0x38000000u;                    /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

/* ---- tensor conversion -------------------------------------------------------------- */

int reap_tensor_to_f32(const st_tensor *t, int64_t first, int64_t n, float *dst)
{
    if (first < 0 || n < 0 || first + n > t->numel)
        return reap_err_set(REAP_E_INTERNAL, "tensor '%s': range [%lld, %lld) outside %lld",
                            t->name, (long long)first, (long long)(first + n),
                            (long long)t->numel);
    switch (t->dtype) {
    case ST_BF16: {
        const uint16_t *s = (const uint16_t *)t->data + first;
        for (int64_t i = 0; i < n; i++)
            dst[i] = reap_bf16_to_f32(s[i]);
        break;
    }
    case ST_F16: {
        const uint16_t *s = (const uint16_t *)t->data + first;
        for (int64_t i = 0; i < n; i++)
            dst[i] = reap_f16_to_f32(s[i]);
        break;
    }
    case ST_F32:
        memcpy(dst, (const float *)t->data + first, (size_t)n * sizeof(float));
        break;
    default:
        return reap_err_set(REAP_E_UNSUPPORTED, "tensor '%s': dtype %s is not supported "
                            "(BF16, F16 or F32)", t->name, st_dtype_name(t->dtype));
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return reap_err_set(REAP_E_NUMERIC, "tensor '%s': non-finite value %g at "
                                "element %lld", t->name, (double)dst[i],
                                (long long)(first + i));
    return REAP_OK;
}

/* Convert `n` elements with stride `stride` starting at element `first`. */
static int tensor_strided_to_f32(const st_tensor *t, int64_t first, int64_t stride,
                                 int64_t n, float *dst)
{
    for (int64_t i = 0; i < n; i++) {
        int rc = reap_tensor_to_f32(t, first + i * stride, 1, &dst[i]);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

int reap_expert_to_f32(const reap_layer_weights *w, const reap_config *cfg, int e,
                       float *gate, float *up, float *down)
{
    const int64_t H = cfg->hidden, I = cfg->moe_inter;
    int rc = REAP_OK;
    if (!w->is_moe || e < 0 || e >= cfg->n_experts)
        return reap_err_set(REAP_E_INTERNAL, "layer %d: no expert %d", w->layer, e);
    if (w->layout == REAP_EXPERTS_SPLIT) {
        if (gate && (rc = reap_tensor_to_f32(w->gate[e], 0, I * H, gate)))
            return rc;
        if (up && (rc = reap_tensor_to_f32(w->up[e], 0, I * H, up)))
            return rc;
        if (down && (rc = reap_tensor_to_f32(w->down[e], 0, H * I, down)))
            return rc;
        return REAP_OK;
    }
    /* FUSED: gate_up [E, H, 2I] -> gate[j][h] = gu[e][h][j], up[j][h] = gu[e][h][I+j];
     * down_fused [E, I, H] -> down[h][j] = d[e][j][h]. */
    const int64_t gu0 = (int64_t)e * H * 2 * I, d0 = (int64_t)e * I * H;
    for (int64_t j = 0; j < I; j++) {
        if (gate && (rc = tensor_strided_to_f32(w->gate_up, gu0 + j, 2 * I, H, gate + j * H)))
            return rc;
        if (up && (rc = tensor_strided_to_f32(w->gate_up, gu0 + I + j, 2 * I, H, up + j * H)))
            return rc;
    }
    if (down) {
        for (int64_t h = 0; h < H; h++)
            if ((rc = tensor_strided_to_f32(w->down_fused, d0 + h, H, I, down + h * I)))
                return rc;
    }
    return REAP_OK;
}

/* ---- lookup and validation ----------------------------------------------------------- */

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "",
                                (long long)shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
}

/* Look up `name`, check a float dtype and the expected shape. */
static int get_checked(const reap_ckpt *ck, const char *name, int ndim, const int64_t *shape,
                       const st_tensor **out)
{
    const st_tensor *t;
    int rc = reap_ckpt_get(ck, name, &t);
    if (rc)
        return rc;
    if (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32)
        return reap_err_set(REAP_E_UNSUPPORTED, "tensor '%s': dtype %s is not supported "
                            "(BF16, F16 or F32)", name, st_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char have[128], want[128];
        shape_str(have, sizeof have, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        return reap_err_set(REAP_E_FORMAT, "tensor '%s' has shape %s but config.json implies "
                            "%s", name, have, want);
    }
    *out = t;
    return REAP_OK;
}

static const char *layer_name(char *buf, size_t n, const reap_config *cfg, int layer,
                              const char *suffix)
{
    snprintf(buf, n, "%slayers.%d.%s", cfg->prefix, layer, suffix);
    return buf;
}

static int get2(const reap_ckpt *ck, const reap_config *cfg, int layer, const char *suffix,
                int64_t a, int64_t b, const st_tensor **out)
{
    char name[256];
    int64_t shape[2] = {a, b};
    return get_checked(ck, layer_name(name, sizeof name, cfg, layer, suffix), 2, shape, out);
}

static int get1(const reap_ckpt *ck, const reap_config *cfg, int layer, const char *suffix,
                int64_t a, const st_tensor **out)
{
    char name[256];
    int64_t shape[1] = {a};
    return get_checked(ck, layer_name(name, sizeof name, cfg, layer, suffix), 1, shape, out);
}

static int get_experts(const reap_ckpt *ck, const reap_config *cfg, int layer,
                       reap_layer_weights *out)
{
    const int64_t H = cfg->hidden, I = cfg->moe_inter, E = cfg->n_experts;
    char name[256];
    layer_name(name, sizeof name, cfg, layer, "mlp.experts.gate_up_proj");
    if (reap_ckpt_find(ck, name)) {
        int64_t gu[3] = {E, H, 2 * I}, dn[3] = {E, I, H};
        const st_tensor *t = reap_ckpt_find(ck, name);
        if (t->ndim == 3 && t->shape[0] == E && t->shape[1] == 2 * I && t->shape[2] == H &&
            H != 2 * I)
            return reap_err_set(REAP_E_UNSUPPORTED, "tensor '%s' is stored [E, 2I, H] "
                                "(out-major fused experts); only [E, H, 2I] is supported",
                                name);
        out->layout = REAP_EXPERTS_FUSED;
        int rc = get_checked(ck, name, 3, gu, &out->gate_up);
        if (rc)
            return rc;
        layer_name(name, sizeof name, cfg, layer, "mlp.experts.down_proj");
        return get_checked(ck, name, 3, dn, &out->down_fused);
    }
    out->layout = REAP_EXPERTS_SPLIT;
    out->gate = calloc((size_t)E, sizeof *out->gate);
    out->up = calloc((size_t)E, sizeof *out->up);
    out->down = calloc((size_t)E, sizeof *out->down);
    if (!out->gate || !out->up || !out->down)
        return reap_err_set(REAP_E_NOMEM, "layer %d: expert table", layer);
    for (int e = 0; e < E; e++) {
        char suffix[96];
        int rc;
        snprintf(suffix, sizeof suffix, "mlp.experts.%d.gate_proj.weight", e);
        if ((rc = get2(ck, cfg, layer, suffix, I, H, &out->gate[e])))
            return rc;
        snprintf(suffix, sizeof suffix, "mlp.experts.%d.up_proj.weight", e);
        if ((rc = get2(ck, cfg, layer, suffix, I, H, &out->up[e])))
            return rc;
        snprintf(suffix, sizeof suffix, "mlp.experts.%d.down_proj.weight", e);
        if ((rc = get2(ck, cfg, layer, suffix, H, I, &out->down[e])))
            return rc;
    }
    return REAP_OK;
}

int reap_layer_weights_get(const reap_ckpt *ck, const reap_config *cfg, int layer,
                           reap_layer_weights *out)
{
    const int64_t H = cfg->hidden, hd = cfg->head_dim;
    const int64_t qd = (int64_t)cfg->n_heads * hd, kvd = (int64_t)cfg->n_kv_heads * hd;
    int rc;
    memset(out, 0, sizeof *out);
    out->layer = layer;
    out->is_moe = reap_config_layer_is_moe(cfg, layer);
    if ((rc = get1(ck, cfg, layer, "input_layernorm.weight", H, &out->input_norm)) ||
        (rc = get1(ck, cfg, layer, "post_attention_layernorm.weight", H, &out->post_norm)) ||
        (rc = get2(ck, cfg, layer, "self_attn.q_proj.weight", qd, H, &out->q_proj)) ||
        (rc = get2(ck, cfg, layer, "self_attn.k_proj.weight", kvd, H, &out->k_proj)) ||
        (rc = get2(ck, cfg, layer, "self_attn.v_proj.weight", kvd, H, &out->v_proj)) ||
        (rc = get2(ck, cfg, layer, "self_attn.o_proj.weight", H, qd, &out->o_proj)) ||
        (rc = get1(ck, cfg, layer, "self_attn.q_norm.weight", hd, &out->q_norm)) ||
        (rc = get1(ck, cfg, layer, "self_attn.k_norm.weight", hd, &out->k_norm)))
        goto fail;
    if (out->is_moe) {
        if ((rc = get2(ck, cfg, layer, "mlp.gate.weight", cfg->n_experts, H, &out->router)) ||
            (rc = get_experts(ck, cfg, layer, out)))
            goto fail;
    } else {
        const int64_t Id = cfg->inter;
        if ((rc = get2(ck, cfg, layer, "mlp.gate_proj.weight", Id, H, &out->mlp_gate)) ||
            (rc = get2(ck, cfg, layer, "mlp.up_proj.weight", Id, H, &out->mlp_up)) ||
            (rc = get2(ck, cfg, layer, "mlp.down_proj.weight", H, Id, &out->mlp_down)))
            goto fail;
    }
    return REAP_OK;
fail:
    reap_layer_weights_free(out);
    return rc;
}

void reap_layer_weights_free(reap_layer_weights *w)
{
    if (!w)
        return;
    free(w->gate);
    free(w->up);
    free(w->down);
    w->gate = w->up = w->down = NULL;
}

int reap_embed_weights_get(const reap_ckpt *ck, const reap_config *cfg,
                           const st_tensor **out)
{
    char name[128];
    int64_t shape[2] = {cfg->vocab, cfg->hidden};
    snprintf(name, sizeof name, "%sembed_tokens.weight", cfg->prefix);
    return get_checked(ck, name, 2, shape, out);
}

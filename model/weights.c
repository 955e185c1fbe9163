/* weights.c - lookup, validation and fp32 conversion of one decoder layer's tensors.
 *
 * Every tensor of a layer is looked up by its Hugging Face name, its dtype must be
 * BF16/F16/F32 and its shape must match the configuration; the message of a mismatch
 * names the tensor, its shape and the expected shape, which is how a config.json that
 * disagrees with the shards is reported. A linear is looked up as `<module>.weight` or,
 * in an AWQ checkpoint, as `<module>.qweight/.qzeros/.scales` (get_linear: I32 / I32 /
 * F16 of shapes [K, N/8], [K/g, N/8], [K/g, N]). The element conversions and the AWQ
 * dequantisation are in weights_convert.c.
 */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

/* ---- lookup and validation ----------------------------------------------------------- */

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
        st_shape_str(have, sizeof have, t->ndim, t->shape);
        st_shape_str(want, sizeof want, ndim, shape);
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

/* Look up `name`, check dtype and a 2-D shape [a, b]. */
static int get_typed2(const reap_ckpt *ck, const char *name, st_dtype dtype, int64_t a,
                      int64_t b, const st_tensor **out)
{
    const st_tensor *t;
    int rc = reap_ckpt_get(ck, name, &t);
    if (rc)
        return rc;
    if (t->dtype != dtype)
        return reap_err_set(REAP_E_FORMAT, "tensor '%s': dtype %s, AWQ stores %s", name,
                            st_dtype_name(t->dtype), st_dtype_name(dtype));
    if (t->ndim != 2 || t->shape[0] != a || t->shape[1] != b) {
        char have[128], want[128];
        int64_t shape[2] = {a, b};
        st_shape_str(have, sizeof have, t->ndim, t->shape);
        st_shape_str(want, sizeof want, 2, shape);
        return reap_err_set(REAP_E_FORMAT, "tensor '%s' has shape %s but config.json implies "
                            "%s (AWQ)", name, have, want);
    }
    *out = t;
    return REAP_OK;
}

/* The linear `<prefix>layers.<layer>.<module>` with out_features N and in_features K:
 * plain `.weight` [N, K] into *plain, or AWQ `.qweight/.qzeros/.scales` into *awq. */
static int get_linear(const reap_ckpt *ck, const reap_config *cfg, int layer,
                      const char *module, int64_t N, int64_t K, const st_tensor **plain,
                      reap_awq_linear *awq, int *n_awq)
{
    char base[256], name[300];
    int64_t shape[2] = {N, K};
    int rc;

    layer_name(base, sizeof base, cfg, layer, module);
    snprintf(name, sizeof name, "%s.qweight", base);
    const st_tensor *qw = reap_ckpt_find(ck, name);
    snprintf(name, sizeof name, "%s.weight", base);
    const st_tensor *pw = reap_ckpt_find(ck, name);
    if (!qw)
        return get_checked(ck, name, 2, shape, plain);
    if (pw)
        return reap_err_set(REAP_E_FORMAT, "module '%s' is stored twice: as '%s' and as AWQ "
                            "'%s.qweight'", base, name, base);
    if (cfg->quant.method != REAP_QUANT_AWQ)
        return reap_err_set(REAP_E_FORMAT, "tensor '%s.qweight' is AWQ-quantised but "
                            "config.json has no AWQ quantization_config", base);
    int skip = reap_config_not_converted(cfg, base);
    if (skip >= 0)
        return reap_err_set(REAP_E_FORMAT, "module '%s' is stored as AWQ but "
                            "modules_to_not_convert names it (\"%s\")", base,
                            cfg->quant.not_convert[skip]);
    const int64_t g = cfg->quant.group_size;
    if (N % 8 != 0 || K % g != 0)
        return reap_err_set(REAP_E_FORMAT, "module '%s': AWQ needs out_features %lld to be a "
                            "multiple of 8 and in_features %lld a multiple of group_size %lld",
                            base, (long long)N, (long long)K, (long long)g);
    memset(awq, 0, sizeof *awq);
    snprintf(name, sizeof name, "%s.qweight", base);
    if ((rc = get_typed2(ck, name, ST_I32, K, N / 8, &awq->qweight)))
        return rc;
    snprintf(name, sizeof name, "%s.qzeros", base);
    if ((rc = get_typed2(ck, name, ST_I32, K / g, N / 8, &awq->qzeros)))
        return rc;
    snprintf(name, sizeof name, "%s.scales", base);
    if ((rc = get_typed2(ck, name, ST_F16, K / g, N, &awq->scales)))
        return rc;
    awq->in = K;
    awq->out = N;
    awq->group = g;
    (*n_awq)++;
    return REAP_OK;
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
    out->gate_awq = calloc((size_t)E, sizeof *out->gate_awq);
    out->up_awq = calloc((size_t)E, sizeof *out->up_awq);
    out->down_awq = calloc((size_t)E, sizeof *out->down_awq);
    if (!out->gate || !out->up || !out->down || !out->gate_awq || !out->up_awq ||
        !out->down_awq)
        return reap_err_set(REAP_E_NOMEM, "layer %d: expert table", layer);
    for (int e = 0; e < E; e++) {
        char module[96];
        int rc;
        snprintf(module, sizeof module, "mlp.experts.%d.gate_proj", e);
        if ((rc = get_linear(ck, cfg, layer, module, I, H, &out->gate[e], &out->gate_awq[e],
                             &out->n_awq)))
            return rc;
        snprintf(module, sizeof module, "mlp.experts.%d.up_proj", e);
        if ((rc = get_linear(ck, cfg, layer, module, I, H, &out->up[e], &out->up_awq[e],
                             &out->n_awq)))
            return rc;
        snprintf(module, sizeof module, "mlp.experts.%d.down_proj", e);
        if ((rc = get_linear(ck, cfg, layer, module, H, I, &out->down[e], &out->down_awq[e],
                             &out->n_awq)))
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
    int *nq = &out->n_awq;
    if ((rc = get1(ck, cfg, layer, "input_layernorm.weight", H, &out->input_norm)) ||
        (rc = get1(ck, cfg, layer, "post_attention_layernorm.weight", H, &out->post_norm)) ||
        (rc = get_linear(ck, cfg, layer, "self_attn.q_proj", qd, H, &out->q_proj, &out->q_awq,
                         nq)) ||
        (rc = get_linear(ck, cfg, layer, "self_attn.k_proj", kvd, H, &out->k_proj,
                         &out->k_awq, nq)) ||
        (rc = get_linear(ck, cfg, layer, "self_attn.v_proj", kvd, H, &out->v_proj,
                         &out->v_awq, nq)) ||
        (rc = get_linear(ck, cfg, layer, "self_attn.o_proj", H, qd, &out->o_proj, &out->o_awq,
                         nq)) ||
        (rc = get1(ck, cfg, layer, "self_attn.q_norm.weight", hd, &out->q_norm)) ||
        (rc = get1(ck, cfg, layer, "self_attn.k_norm.weight", hd, &out->k_norm)))
        goto fail;
    if (out->is_moe) {
        char rq[256];
        layer_name(rq, sizeof rq, cfg, layer, "mlp.gate.qweight");
        if (reap_ckpt_find(ck, rq)) {
            rc = reap_err_set(REAP_E_UNSUPPORTED, "tensor '%s': a quantised router is not "
                              "supported (vLLM builds the router unquantised)", rq);
            goto fail;
        }
        if ((rc = get2(ck, cfg, layer, "mlp.gate.weight", cfg->n_experts, H, &out->router)) ||
            (rc = get_experts(ck, cfg, layer, out)))
            goto fail;
    } else {
        const int64_t Id = cfg->inter;
        if ((rc = get_linear(ck, cfg, layer, "mlp.gate_proj", Id, H, &out->mlp_gate,
                             &out->mlp_gate_awq, nq)) ||
            (rc = get_linear(ck, cfg, layer, "mlp.up_proj", Id, H, &out->mlp_up,
                             &out->mlp_up_awq, nq)) ||
            (rc = get_linear(ck, cfg, layer, "mlp.down_proj", H, Id, &out->mlp_down,
                             &out->mlp_down_awq, nq)))
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
    free(w->gate_awq);
    free(w->up_awq);
    free(w->down_awq);
    w->gate = w->up = w->down = NULL;
    w->gate_awq = w->up_awq = w->down_awq = NULL;
}

int reap_embed_weights_get(const reap_ckpt *ck, const reap_config *cfg,
                           const st_tensor **out)
{
    char name[128];
    int64_t shape[2] = {cfg->vocab, cfg->hidden};
    snprintf(name, sizeof name, "%sembed_tokens.weight", cfg->prefix);
    return get_checked(ck, name, 2, shape, out);
}

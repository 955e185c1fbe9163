/* weights.c - lookup, validation and fp32 conversion of one decoder layer's tensors.
 *
 * Every tensor of a layer is looked up by its Hugging Face name, its dtype must be
 * BF16/F16/F32 and its shape must match the configuration; the message of a mismatch
 * names the tensor, its shape and the expected shape, which is how a config.json that
 * disagrees with the shards is reported. The element conversions are in weights_convert.c.
 */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

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

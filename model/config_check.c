/* config_check.c - config.json against the checkpoint's tensors (config_check.h).
 *
 * How it works: first each dimension config.json names is compared with one tensor that
 * shows it, so that the message can name the field (dim_is); then the full per-layer
 * lookup the engine uses (weights.h) runs over every layer, which owns the complete
 * shape rules (AWQ, fused experts) and names the tensor at fault. Only shard-header
 * metadata is read.
 */
#include "config_check.h"

#include <stdio.h>
#include <string.h>

#include "reap_err.h"
#include "weights.h"

typedef struct chk {
    const reap_config *cfg;
    const reap_ckpt *ck;
    char path[4200];    /* <dir>/config.json, for messages */
    const char *ctx;    /* "" or "text_config." */
} chk;

static const st_tensor *layer_tensor(const chk *k, int layer, const char *suffix,
                                     char *name, size_t n)
{
    snprintf(name, n, "%slayers.%d.%s", k->cfg->prefix, layer, suffix);
    return reap_ckpt_find(k->ck, name);
}

/* Field `field` = value must give dimension `dim` of the ndim-tensor t as value * per.
 * A tensor of another rank is left to the full check (its message shows the shape). */
static int dim_is(const chk *k, const char *field, int value, const st_tensor *t, int ndim,
                  int dim, int64_t per)
{
    if (!t || t->ndim != ndim || t->shape[dim] == (int64_t)value * per)
        return REAP_OK;
    char shape[160];
    st_shape_str(shape, sizeof shape, t->ndim, t->shape);
    if (t->shape[dim] % per == 0)
        return reap_err_set(REAP_E_FORMAT, "%s: %s%s = %d does not match the checkpoint: "
                            "tensor '%s' has shape %s, which implies %s = %lld", k->path,
                            k->ctx, field, value, t->name, shape, field,
                            (long long)(t->shape[dim] / per));
    return reap_err_set(REAP_E_FORMAT, "%s: %s%s = %d does not match the checkpoint: "
                        "tensor '%s' has shape %s", k->path, k->ctx, field, value, t->name,
                        shape);
}

static int first_layer(const reap_config *c, int moe)
{
    for (int L = 0; L < c->n_layers; L++)
        if (reap_config_layer_is_moe(c, L) == moe)
            return L;
    return -1;
}

/* The fields, each against the tensor that shows it. */
static int check_fields(const chk *k)
{
    const reap_config *c = k->cfg;
    char name[300];
    int rc, L;

    snprintf(name, sizeof name, "%sembed_tokens.weight", c->prefix);
    const st_tensor *emb = reap_ckpt_find(k->ck, name);
    if ((rc = dim_is(k, "hidden_size", c->hidden, emb, 2, 1, 1)) ||
        (rc = dim_is(k, "vocab_size", c->vocab, emb, 2, 0, 1)))
        return rc;
    for (L = 0; L < c->n_layers; L++)
        if (!layer_tensor(k, L, "input_layernorm.weight", name, sizeof name))
            return reap_err_set(REAP_E_FORMAT, "%s: %snum_hidden_layers = %d, but the "
                                "checkpoint holds %d layer%s (no tensor '%s')", k->path,
                                k->ctx, c->n_layers, L, L == 1 ? "" : "s", name);
    if ((rc = dim_is(k, "head_dim", c->head_dim,
                     layer_tensor(k, 0, "self_attn.q_norm.weight", name, sizeof name), 1, 0,
                     1)) ||
        (rc = dim_is(k, "num_attention_heads", c->n_heads,
                     layer_tensor(k, 0, "self_attn.q_proj.weight", name, sizeof name), 2, 0,
                     c->head_dim)) ||
        (rc = dim_is(k, "num_key_value_heads", c->n_kv_heads,
                     layer_tensor(k, 0, "self_attn.k_proj.weight", name, sizeof name), 2, 0,
                     c->head_dim)))
        return rc;
    if ((L = first_layer(c, 1)) >= 0) {
        const st_tensor *fused =
            layer_tensor(k, L, "mlp.experts.gate_up_proj", name, sizeof name);
        if ((rc = dim_is(k, "num_experts", c->n_experts,
                         layer_tensor(k, L, "mlp.gate.weight", name, sizeof name), 2, 0, 1)) ||
            (rc = dim_is(k, "num_experts", c->n_experts, fused, 3, 0, 1)) ||
            (rc = dim_is(k, "moe_intermediate_size", c->moe_inter, fused, 3, 2, 2)) ||
            (rc = dim_is(k, "moe_intermediate_size", c->moe_inter,
                         layer_tensor(k, L, "mlp.experts.0.gate_proj.weight", name,
                                      sizeof name), 2, 0, 1)))
            return rc;
    }
    if ((L = first_layer(c, 0)) >= 0 &&
        (rc = dim_is(k, "intermediate_size", c->inter,
                     layer_tensor(k, L, "mlp.gate_proj.weight", name, sizeof name), 2, 0, 1)))
        return rc;
    return REAP_OK;
}

int reap_config_check_ckpt(const reap_config *cfg, const reap_ckpt *ck)
{
    chk k = {.cfg = cfg, .ck = ck};
    const st_tensor *emb;
    int rc;
    snprintf(k.path, sizeof k.path, "%s/config.json", reap_ckpt_dir(ck));
    k.ctx = cfg->family == REAP_FAMILY_QWEN3_VL_MOE ? "text_config." : "";
    if ((rc = check_fields(&k)) || (rc = reap_embed_weights_get(ck, cfg, &emb)))
        return rc;
    for (int L = 0; L < cfg->n_layers; L++) {
        reap_layer_weights w;
        rc = reap_layer_weights_get(ck, cfg, L, &w);
        reap_layer_weights_free(&w);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

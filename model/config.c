/* config.c - reads a Qwen3-MoE / Qwen3-VL-MoE config.json into a reap_config.
 *
 * How it works: pick the JSON object that holds the language-model fields (the top
 * level for qwen3_moe, "text_config" for qwen3_vl_moe), read every field with a typed
 * getter whose error message names the field's path inside the JSON, fill in the
 * transformers defaults, then check the values against each other (config_validate).
 * Types are strict: an integer field written as 4096.0 is a format error. A JSON null
 * counts as absent, as transformers treats None.
 *
 * qwen3_vl_moe's vision_config is read by its own function (get_vision) into
 * reap_config.vision, after the language-model fields.
 *
 * One file, one concern: one config.json into one reap_config (field readers, defaults,
 * cross-checks share the error-path naming); the checks against the checkpoint's tensors
 * are config_check.c.
 */
#include "config.h"

#include "fsopen.h"
#include "reap_err.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the fields come from, for messages: "<path>: missing <ctx><key>". */
typedef struct field_src {
    const char *path;   /* the config.json path as given */
    const char *ctx;    /* "" (qwen3_moe) or "text_config." (qwen3_vl_moe) */
} field_src;

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown type";
}

/* The value of `key` in `obj`, or NULL when absent or null. */
static json_t *field_get(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

/* Integer field. Absent: REAP_E_FORMAT if `required`, else *out = def. */
static int get_int(const field_src *src, json_t *obj, const char *key, int required,
                   int def, int *out)
{
    json_t *v = field_get(obj, key);
    json_int_t x;

    if (!v) {
        if (required)
            return reap_err_set(REAP_E_FORMAT, "%s: missing %s%s", src->path, src->ctx, key);
        *out = def;
        return REAP_OK;
    }
    if (!json_is_integer(v))
        return reap_err_set(REAP_E_FORMAT, "%s: %s%s must be an integer, not %s",
                            src->path, src->ctx, key, json_type_name(v));
    x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return reap_err_set(REAP_E_FORMAT, "%s: %s%s = %lld is out of range", src->path,
                            src->ctx, key, (long long)x);
    *out = (int)x;
    return REAP_OK;
}

/* Boolean field; absent: *out = def. */
static int get_bool(const field_src *src, json_t *obj, const char *key, int def, int *out)
{
    json_t *v = field_get(obj, key);

    if (!v) {
        *out = def;
        return REAP_OK;
    }
    if (!json_is_boolean(v))
        return reap_err_set(REAP_E_FORMAT, "%s: %s%s must be a boolean, not %s", src->path,
                            src->ctx, key, json_type_name(v));
    *out = json_is_true(v) ? 1 : 0;
    return REAP_OK;
}

/* Number field (integer or real); *found = 0 and *out untouched when absent. */
static int get_number(const field_src *src, json_t *obj, const char *key, int *found,
                      double *out)
{
    json_t *v = field_get(obj, key);

    *found = 0;
    if (!v)
        return REAP_OK;
    if (!json_is_number(v))
        return reap_err_set(REAP_E_FORMAT, "%s: %s%s must be a number, not %s", src->path,
                            src->ctx, key, json_type_name(v));
    *out = json_number_value(v);
    *found = 1;
    return REAP_OK;
}

/* rope_theta, then rope_parameters.rope_theta, then rope_scaling.rope_theta, else
 * `def`. A rope_parameters / rope_scaling object without rope_theta is passed over. */
static int get_rope_theta(const field_src *src, json_t *obj, double def, double *out)
{
    static const char *const nests[] = { "rope_parameters", "rope_scaling" };
    char ctx[64];
    field_src sub;
    json_t *nest;
    int found, rc;
    size_t i;

    rc = get_number(src, obj, "rope_theta", &found, out);
    if (rc || found)
        return rc;
    for (i = 0; i < sizeof nests / sizeof nests[0]; i++) {
        nest = field_get(obj, nests[i]);
        if (!nest)
            continue;
        if (!json_is_object(nest))
            return reap_err_set(REAP_E_FORMAT, "%s: %s%s must be an object, not %s",
                                src->path, src->ctx, nests[i], json_type_name(nest));
        snprintf(ctx, sizeof ctx, "%s%s.", src->ctx, nests[i]);
        sub.path = src->path;
        sub.ctx = ctx;
        rc = get_number(&sub, nest, "rope_theta", &found, out);
        if (rc || found)
            return rc;
    }
    *out = def;
    return REAP_OK;
}

/* mlp_only_layers: an array of integers (absent: empty). Ranges are checked later. */
static int get_mlp_only(const field_src *src, json_t *obj, reap_config *c)
{
    json_t *arr = field_get(obj, "mlp_only_layers");
    json_t *v;
    size_t i, n;

    if (!arr)
        return REAP_OK;
    if (!json_is_array(arr))
        return reap_err_set(REAP_E_FORMAT, "%s: %smlp_only_layers must be an array, not %s",
                            src->path, src->ctx, json_type_name(arr));
    n = json_array_size(arr);
    if (n == 0)
        return REAP_OK;
    if (n > INT_MAX)
        return reap_err_set(REAP_E_FORMAT, "%s: %smlp_only_layers is too long", src->path,
                            src->ctx);
    c->mlp_only_layers = calloc(n, sizeof *c->mlp_only_layers);
    if (!c->mlp_only_layers)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", src->path);
    c->n_mlp_only = (int)n;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v))
            return reap_err_set(REAP_E_FORMAT,
                                "%s: %smlp_only_layers[%zu] must be an integer, not %s",
                                src->path, src->ctx, i, json_type_name(v));
        if (json_integer_value(v) < INT_MIN || json_integer_value(v) > INT_MAX)
            return reap_err_set(REAP_E_INVALID, "%s: %smlp_only_layers[%zu] = %lld is out of "
                                "range", src->path, src->ctx, i,
                                (long long)json_integer_value(v));
        c->mlp_only_layers[i] = (int)json_integer_value(v);
    }
    return REAP_OK;
}

/* ---- quantization_config ----------------------------------------------------------- */

/* Lower-case copy of a string value (at most cap - 1 bytes). */
static void lower_copy(char *dst, size_t cap, const char *src)
{
    size_t i;

    for (i = 0; i + 1 < cap && src[i]; i++)
        dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] - 'A' + 'a' : src[i]);
    dst[i] = '\0';
}

/* An integer field that may be written under either of two names (AutoAWQ's own names
 * w_bit / q_group_size, the transformers names bits / group_size). */
static int get_int_alias(const field_src *src, json_t *obj, const char *key,
                         const char *alias, int def, int *out)
{
    if (field_get(obj, key))
        return get_int(src, obj, key, 1, def, out);
    return get_int(src, obj, alias, 0, def, out);
}

/* modules_to_not_convert: null / absent, or an array of strings. */
static int get_not_convert(const field_src *src, json_t *q, reap_quant_config *qc)
{
    json_t *arr = field_get(q, "modules_to_not_convert"), *v;
    size_t i, n;

    if (!arr)
        return REAP_OK;
    if (!json_is_array(arr))
        return reap_err_set(REAP_E_FORMAT, "%s: %smodules_to_not_convert must be an array, "
                            "not %s", src->path, src->ctx, json_type_name(arr));
    n = json_array_size(arr);
    if (n == 0)
        return REAP_OK;
    if (n > 1000000)
        return reap_err_set(REAP_E_FORMAT, "%s: %smodules_to_not_convert is too long",
                            src->path, src->ctx);
    qc->not_convert = calloc(n, sizeof *qc->not_convert);
    if (!qc->not_convert)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", src->path);
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v))
            return reap_err_set(REAP_E_FORMAT, "%s: %smodules_to_not_convert[%zu] must be a "
                                "string, not %s", src->path, src->ctx, i, json_type_name(v));
        if (!(qc->not_convert[i] = strdup(json_string_value(v))))
            return reap_err_set(REAP_E_NOMEM, "%s: out of memory", src->path);
        qc->n_not_convert = (int)i + 1;
    }
    return REAP_OK;
}

/* quantization_config of the top level (else of text_config): AWQ int4 GEMM, or a
 * refusal naming the method. `lm` is the object holding the language-model fields. */
static int get_quant(const char *path, json_t *root, json_t *lm, reap_quant_config *qc)
{
    char ctx[64], method[64];
    field_src src;
    json_t *q, *mv, *vv;
    const char *where = "";
    int rc;

    q = field_get(root, "quantization_config");
    if (!q && lm != root && (q = field_get(lm, "quantization_config")))
        where = "text_config.";
    if (!q) {
        if (field_get(root, "compression_config"))
            return reap_err_set(REAP_E_UNSUPPORTED, "%s: compression_config (quantisation "
                                "method \"compressed-tensors\") is not supported; only AWQ "
                                "int4 (quant_method \"awq\", GEMM packing) checkpoints are "
                                "read", path);
        qc->method = REAP_QUANT_NONE;
        return REAP_OK;
    }
    snprintf(ctx, sizeof ctx, "%squantization_config.", where);
    src.path = path;
    src.ctx = ctx;
    if (!json_is_object(q))
        return reap_err_set(REAP_E_FORMAT, "%s: %squantization_config must be an object, not %s",
                            path, where, json_type_name(q));
    mv = field_get(q, "quant_method");
    if (!mv)
        return reap_err_set(REAP_E_FORMAT, "%s: missing %squant_method", path, ctx);
    if (!json_is_string(mv))
        return reap_err_set(REAP_E_FORMAT, "%s: %squant_method must be a string, not %s", path,
                            ctx, json_type_name(mv));
    lower_copy(method, sizeof method, json_string_value(mv));
    if (strcmp(method, "awq") != 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %squant_method \"%.64s\" is not "
                            "supported; only AWQ int4 (quant_method \"awq\", GEMM packing) "
                            "checkpoints are read", path, ctx, json_string_value(mv));
    qc->method = REAP_QUANT_AWQ;
    if ((rc = get_int_alias(&src, q, "bits", "w_bit", 4, &qc->bits)) ||
        (rc = get_int_alias(&src, q, "group_size", "q_group_size", 0, &qc->group_size)) ||
        (rc = get_bool(&src, q, "zero_point", 1, &qc->zero_point)))
        return rc;
    if (qc->bits != 4)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %sbits = %d: only 4-bit AWQ is supported",
                            path, ctx, qc->bits);
    if (!field_get(q, "group_size") && !field_get(q, "q_group_size"))
        return reap_err_set(REAP_E_FORMAT, "%s: missing %sgroup_size (or q_group_size)", path,
                            ctx);
    if (qc->group_size <= 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %sgroup_size = %d: only positive group "
                            "sizes are supported", path, ctx, qc->group_size);
    if (!qc->zero_point)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %szero_point = false (symmetric AWQ) is "
                            "not supported", path, ctx);
    vv = field_get(q, "version");
    if (vv && !json_is_string(vv))
        return reap_err_set(REAP_E_FORMAT, "%s: %sversion must be a string, not %s", path, ctx,
                            json_type_name(vv));
    lower_copy(qc->version, sizeof qc->version, vv ? json_string_value(vv) : "gemm");
    if (strcmp(qc->version, "gemm") != 0)
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %sversion \"%.32s\" is not supported "
                            "(only the GEMM packing)", path, ctx, json_string_value(vv));
    return get_not_convert(&src, q, qc);
}

/* ---- mRoPE (qwen3_vl_moe) ---------------------------------------------------------- */

/* mrope_section / mrope_interleaved from rope_parameters, else rope_scaling (the first
 * of the two that has mrope_section); without one the transformers default [24, 20, 20],
 * interleaved. An explicit section must have three non-negative integers summing to
 * head_dim / 2 (head_dim is final when this runs). */
static int get_mrope(const field_src *src, json_t *obj, reap_config *c)
{
    static const char *const nests[] = { "rope_parameters", "rope_scaling" };
    const char *p = src->path, *x = src->ctx;

    c->mrope_section[0] = 24;
    c->mrope_section[1] = 20;
    c->mrope_section[2] = 20;
    c->mrope_interleaved = 1;
    for (size_t i = 0; i < sizeof nests / sizeof nests[0]; i++) {
        json_t *nest = field_get(obj, nests[i]), *sec, *v;
        char ctx[64];
        field_src sub;
        size_t k;
        int rc, sum = 0;

        if (!nest)
            continue;
        if (!json_is_object(nest))
            return reap_err_set(REAP_E_FORMAT, "%s: %s%s must be an object, not %s", p, x,
                                nests[i], json_type_name(nest));
        sec = field_get(nest, "mrope_section");
        if (!sec)
            continue;
        snprintf(ctx, sizeof ctx, "%s%s.", x, nests[i]);
        sub.path = p;
        sub.ctx = ctx;
        if (!json_is_array(sec) || json_array_size(sec) != 3)
            return reap_err_set(REAP_E_FORMAT, "%s: %smrope_section must be an array of 3 "
                                "integers (t, h, w)", p, ctx);
        json_array_foreach(sec, k, v) {
            if (!json_is_integer(v))
                return reap_err_set(REAP_E_FORMAT, "%s: %smrope_section[%zu] must be an "
                                    "integer, not %s", p, ctx, k, json_type_name(v));
            if (json_integer_value(v) < 0 || json_integer_value(v) > REAP_CONFIG_MAX_HEAD_DIM)
                return reap_err_set(REAP_E_INVALID, "%s: %smrope_section[%zu] = %lld out of "
                                    "range", p, ctx, k, (long long)json_integer_value(v));
            c->mrope_section[k] = (int)json_integer_value(v);
            sum += c->mrope_section[k];
        }
        if (sum != c->head_dim / 2)
            return reap_err_set(REAP_E_INVALID, "%s: %smrope_section [%d, %d, %d] sums to %d, "
                                "not head_dim / 2 = %d", p, ctx, c->mrope_section[0],
                                c->mrope_section[1], c->mrope_section[2], sum,
                                c->head_dim / 2);
        if ((rc = get_bool(&sub, nest, "mrope_interleaved", 1, &c->mrope_interleaved)))
            return rc;
        if (!c->mrope_interleaved)
            return reap_err_set(REAP_E_UNSUPPORTED, "%s: %smrope_interleaved = false (chunked "
                                "mRoPE) is not supported: qwen3_vl_moe interleaves", p, ctx);
        return REAP_OK;
    }
    return REAP_OK;
}

static void quant_free(reap_quant_config *qc)
{
    for (int i = 0; i < qc->n_not_convert; i++)
        free(qc->not_convert[i]);
    free(qc->not_convert);
    memset(qc, 0, sizeof *qc);
}

/* ---- vision_config (qwen3_vl_moe) --------------------------------------------------- */

/* deepstack_visual_indexes: an array of integers (absent: transformers' [8, 16, 24]). */
static int get_deepstack(const field_src *src, json_t *obj, reap_vision_config *v)
{
    json_t *arr = field_get(obj, "deepstack_visual_indexes"), *x;
    size_t i;

    if (!arr) {
        v->n_deepstack = 3;
        v->deepstack[0] = 8;
        v->deepstack[1] = 16;
        v->deepstack[2] = 24;
        return REAP_OK;
    }
    if (!json_is_array(arr))
        return reap_err_set(REAP_E_FORMAT, "%s: %sdeepstack_visual_indexes must be an array, "
                            "not %s", src->path, src->ctx, json_type_name(arr));
    if (json_array_size(arr) > REAP_VISION_MAX_DEEPSTACK)
        return reap_err_set(REAP_E_INVALID, "%s: %sdeepstack_visual_indexes has %zu entries, "
                            "above the limit of %d this build accepts", src->path, src->ctx,
                            json_array_size(arr), REAP_VISION_MAX_DEEPSTACK);
    json_array_foreach(arr, i, x) {
        if (!json_is_integer(x))
            return reap_err_set(REAP_E_FORMAT, "%s: %sdeepstack_visual_indexes[%zu] must be an "
                                "integer, not %s", src->path, src->ctx, i, json_type_name(x));
        json_int_t d = json_integer_value(x);
        if (d < 0 || d >= v->depth || (i > 0 && d <= v->deepstack[i - 1]))
            return reap_err_set(REAP_E_INVALID, "%s: %sdeepstack_visual_indexes[%zu] = %lld: "
                                "the indexes must increase strictly and lie in [0, depth = %d)",
                                src->path, src->ctx, i, (long long)d, v->depth);
        v->deepstack[i] = (int)d;
        v->n_deepstack = (int)i + 1;
    }
    return REAP_OK;
}

/* vision_config of a qwen3_vl_moe config.json into c->vision (config.h states the
 * rules). `text_hidden` is text_config.hidden_size. Absent or depth 0: present = 0. */
static int get_vision(const char *path, json_t *root, int text_hidden, reap_vision_config *v)
{
    field_src src = { path, "vision_config." };
    json_t *vc = field_get(root, "vision_config"), *act;
    const char *p = path, *x = src.ctx;
    int rc, depth;

    memset(v, 0, sizeof *v);
    if (!vc)
        return REAP_OK;
    if (!json_is_object(vc))
        return reap_err_set(REAP_E_FORMAT, "%s: vision_config must be an object, not %s", path,
                            json_type_name(vc));
    if ((rc = get_int(&src, vc, "depth", 0, 27, &depth)))
        return rc;
    if (depth == 0)
        return REAP_OK;
    v->depth = depth;
    if ((rc = get_int(&src, vc, "hidden_size", 0, 1152, &v->hidden)) ||
        (rc = get_int(&src, vc, "num_heads", 0, 16, &v->n_heads)) ||
        (rc = get_int(&src, vc, "intermediate_size", 0, 4304, &v->inter)) ||
        (rc = get_int(&src, vc, "patch_size", 0, 16, &v->patch)) ||
        (rc = get_int(&src, vc, "temporal_patch_size", 0, 2, &v->temporal_patch)) ||
        (rc = get_int(&src, vc, "spatial_merge_size", 0, 2, &v->merge)) ||
        (rc = get_int(&src, vc, "in_channels", 0, 3, &v->in_channels)) ||
        (rc = get_int(&src, vc, "num_position_embeddings", 0, 2304, &v->n_pos)) ||
        (rc = get_int(&src, vc, "out_hidden_size", 0, text_hidden, &v->out_hidden)))
        return rc;

    /* Limits first: every later check and every buffer is sized from these. */
    static const struct {
        const char *field;
        size_t off;
        int max;
    } lim[] = {
        {"depth", offsetof(reap_vision_config, depth), REAP_VISION_MAX_DEPTH},
        {"hidden_size", offsetof(reap_vision_config, hidden), REAP_VISION_MAX_HIDDEN},
        {"num_heads", offsetof(reap_vision_config, n_heads), REAP_VISION_MAX_HEADS},
        {"intermediate_size", offsetof(reap_vision_config, inter), REAP_VISION_MAX_INTER},
        {"patch_size", offsetof(reap_vision_config, patch), REAP_VISION_MAX_PATCH},
        {"temporal_patch_size", offsetof(reap_vision_config, temporal_patch),
         REAP_VISION_MAX_SMALL},
        {"spatial_merge_size", offsetof(reap_vision_config, merge), REAP_VISION_MAX_SMALL},
        {"in_channels", offsetof(reap_vision_config, in_channels), REAP_VISION_MAX_SMALL},
        {"num_position_embeddings", offsetof(reap_vision_config, n_pos), REAP_VISION_MAX_POS},
        {"out_hidden_size", offsetof(reap_vision_config, out_hidden), REAP_VISION_MAX_HIDDEN},
    };
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
        int val = *(const int *)((const char *)v + lim[k].off);
        if (val <= 0 || val > lim[k].max)
            return reap_err_set(REAP_E_INVALID, "%s: %s%s = %d must be in [1, %d]", p, x,
                                lim[k].field, val, lim[k].max);
    }
    if (v->hidden % v->n_heads != 0)
        return reap_err_set(REAP_E_INVALID, "%s: %shidden_size = %d is not divisible by "
                            "num_heads = %d", p, x, v->hidden, v->n_heads);
    v->head_dim = v->hidden / v->n_heads;
    if (v->head_dim > REAP_CONFIG_MAX_HEAD_DIM)
        return reap_err_set(REAP_E_INVALID, "%s: %shidden_size / num_heads = %d is above the "
                            "limit of %d this build accepts", p, x, v->head_dim,
                            REAP_CONFIG_MAX_HEAD_DIM);
    if (v->head_dim % 4 != 0)
        return reap_err_set(REAP_E_INVALID, "%s: %shidden_size / num_heads = %d must be a "
                            "multiple of 4 for the 2-D rotary embedding", p, x, v->head_dim);
    for (v->pos_side = 1; v->pos_side * v->pos_side < v->n_pos; v->pos_side++)
        ;
    if (v->pos_side * v->pos_side != v->n_pos)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_position_embeddings = %d is not a "
                            "square (the table is a side x side grid)", p, x, v->n_pos);
    if (v->out_hidden != text_hidden)
        return reap_err_set(REAP_E_INVALID, "%s: %sout_hidden_size = %d differs from "
                            "text_config.hidden_size = %d (image features replace token "
                            "embeddings)", p, x, v->out_hidden, text_hidden);
    act = field_get(vc, "hidden_act");
    if (act && !json_is_string(act))
        return reap_err_set(REAP_E_FORMAT, "%s: %shidden_act must be a string, not %s", p, x,
                            json_type_name(act));
    const char *an = act ? json_string_value(act) : "gelu_pytorch_tanh";
    if (strcmp(an, "gelu_pytorch_tanh") == 0 || strcmp(an, "gelu_new") == 0)
        v->act = REAP_VISION_ACT_GELU_TANH;
    else if (strcmp(an, "gelu") == 0)
        v->act = REAP_VISION_ACT_GELU_ERF;
    else
        return reap_err_set(REAP_E_UNSUPPORTED, "%s: %shidden_act \"%.64s\" is not supported "
                            "(gelu_pytorch_tanh, gelu_new, gelu)", p, x, an);
    if ((rc = get_deepstack(&src, vc, v)))
        return rc;
    v->present = 1;
    return REAP_OK;
}

/* Values checked against each other. `has_head_dim`: head_dim was in the file (else it
 * is derived here from hidden / heads). */
static int config_validate(const field_src *src, reap_config *c, int has_head_dim)
{
    const char *p = src->path, *x = src->ctx;
    int i, L;

    /* Upper limits first: later checks loop over layers and size tables by them. */
    static const struct {
        const char *field;
        size_t off;
        int max;
    } lim[] = {
        {"num_hidden_layers", offsetof(reap_config, n_layers), REAP_CONFIG_MAX_LAYERS},
        {"hidden_size", offsetof(reap_config, hidden), REAP_CONFIG_MAX_HIDDEN},
        {"num_attention_heads", offsetof(reap_config, n_heads), REAP_CONFIG_MAX_HEADS},
        {"num_key_value_heads", offsetof(reap_config, n_kv_heads), REAP_CONFIG_MAX_HEADS},
        {"head_dim", offsetof(reap_config, head_dim), REAP_CONFIG_MAX_HEAD_DIM},
        {"vocab_size", offsetof(reap_config, vocab), REAP_CONFIG_MAX_VOCAB},
        {"num_experts", offsetof(reap_config, n_experts), REAP_CONFIG_MAX_EXPERTS},
        {"moe_intermediate_size", offsetof(reap_config, moe_inter), REAP_CONFIG_MAX_INTER},
        {"intermediate_size", offsetof(reap_config, inter), REAP_CONFIG_MAX_INTER},
    };
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
        int v = *(const int *)((const char *)c + lim[k].off);
        if (v > lim[k].max)
            return reap_err_set(REAP_E_INVALID, "%s: %s%s = %d is above the limit of %d "
                                "this build accepts", p, x, lim[k].field, v, lim[k].max);
    }
    if (c->hidden <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %shidden_size = %d must be positive", p, x,
                            c->hidden);
    if (c->n_layers <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_hidden_layers = %d must be positive",
                            p, x, c->n_layers);
    if (c->n_heads <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_attention_heads = %d must be positive",
                            p, x, c->n_heads);
    if (c->n_kv_heads <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_key_value_heads = %d must be positive",
                            p, x, c->n_kv_heads);
    if (c->vocab <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %svocab_size = %d must be positive", p, x,
                            c->vocab);
    if (c->n_heads % c->n_kv_heads != 0)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_attention_heads = %d is not divisible "
                            "by num_key_value_heads = %d", p, x, c->n_heads, c->n_kv_heads);
    if (!has_head_dim) {
        if (c->hidden % c->n_heads != 0)
            return reap_err_set(REAP_E_INVALID, "%s: no %shead_dim and hidden_size = %d is not "
                                "divisible by num_attention_heads = %d", p, x, c->hidden,
                                c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->head_dim <= 0)
        return reap_err_set(REAP_E_INVALID, "%s: %shead_dim = %d must be positive", p, x,
                            c->head_dim);
    if (c->head_dim > REAP_CONFIG_MAX_HEAD_DIM) /* derived: hidden_size / heads */
        return reap_err_set(REAP_E_INVALID, "%s: %shead_dim = %d (hidden_size / "
                            "num_attention_heads) is above the limit of %d this build accepts",
                            p, x, c->head_dim, REAP_CONFIG_MAX_HEAD_DIM);
    if (c->head_dim % 2 != 0)
        return reap_err_set(REAP_E_INVALID, "%s: %shead_dim = %d must be even for RoPE", p, x,
                            c->head_dim);
    if (c->n_experts < 0)
        return reap_err_set(REAP_E_INVALID, "%s: %snum_experts = %d must not be negative", p,
                            x, c->n_experts);
    if (c->n_experts > 0) {
        if (c->n_experts_used < 1 || c->n_experts_used > c->n_experts)
            return reap_err_set(REAP_E_INVALID, "%s: %snum_experts_per_tok = %d must be in "
                                "[1, num_experts = %d]", p, x, c->n_experts_used,
                                c->n_experts);
        if (c->moe_inter <= 0)
            return reap_err_set(REAP_E_INVALID, "%s: %smoe_intermediate_size = %d must be "
                                "positive", p, x, c->moe_inter);
    }
    if (c->decoder_sparse_step < 1)
        return reap_err_set(REAP_E_INVALID, "%s: %sdecoder_sparse_step = %d must be >= 1", p,
                            x, c->decoder_sparse_step);
    for (i = 0; i < c->n_mlp_only; i++)
        if (c->mlp_only_layers[i] < 0 || c->mlp_only_layers[i] >= c->n_layers)
            return reap_err_set(REAP_E_INVALID, "%s: %smlp_only_layers[%d] = %d is outside "
                                "[0, num_hidden_layers = %d)", p, x, i, c->mlp_only_layers[i],
                                c->n_layers);
    if (c->inter < 0)
        return reap_err_set(REAP_E_INVALID, "%s: %sintermediate_size = %d must not be "
                            "negative", p, x, c->inter);
    for (L = 0; L < c->n_layers; L++)
        if (!reap_config_layer_is_moe(c, L) && c->inter <= 0)
            return reap_err_set(REAP_E_INVALID, "%s: layer %d has a dense MLP but "
                                "%sintermediate_size is missing or 0", p, L, x);
    if (!(c->rms_eps > 0.0) || !isfinite(c->rms_eps))
        return reap_err_set(REAP_E_INVALID, "%s: %srms_norm_eps = %g must be positive", p, x,
                            c->rms_eps);
    if (!(c->rope_theta > 0.0) || !isfinite(c->rope_theta))
        return reap_err_set(REAP_E_INVALID, "%s: %srope_theta = %g must be positive", p, x,
                            c->rope_theta);
    return REAP_OK;
}

int reap_config_load(const char *path, reap_config *out)
{
    return reap_config_load_confined(path, NULL, out);
}

int reap_config_load_confined(const char *path, const reap_roots *roots, reap_config *out)
{
    reap_config c;
    field_src src;
    json_error_t jerr;
    FILE *fp = NULL;
    json_t *root = NULL, *fields, *mt, *ne, *nle;
    const char *type;
    double rope_default;
    int rc, has_head_dim, n_local = 0, found = 0;

    memset(&c, 0, sizeof c);
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out) {
        rc = reap_err_set(REAP_E_INVALID, "reap_config_load: NULL argument");
        goto fail;
    }
    src.path = path;
    src.ctx = "";

    if ((rc = reap_fopen_read(path, roots, &fp)))
        goto fail;
    root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (ferror(fp))
            rc = reap_err_set(REAP_E_IO, "%s: read error", path);
        else
            rc = reap_err_set(REAP_E_FORMAT, "%s:%d:%d: invalid JSON: %s", path, jerr.line,
                              jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: top level must be an object, not %s", path,
                          json_type_name(root));
        goto fail;
    }

    /* ---- family: where the fields live ---- */
    mt = field_get(root, "model_type");
    if (!mt) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: no model_type (supported: qwen3_moe, "
                          "qwen3_vl_moe)", path);
        goto fail;
    }
    if (!json_is_string(mt)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: model_type must be a string, not %s", path,
                          json_type_name(mt));
        goto fail;
    }
    type = json_string_value(mt);
    if (strcmp(type, "qwen3_moe") == 0) {
        c.family = REAP_FAMILY_QWEN3_MOE;
        snprintf(c.prefix, sizeof c.prefix, "model.");
        fields = root;
        rope_default = 10000.0;
    } else if (strcmp(type, "qwen3_vl_moe") == 0) {
        c.family = REAP_FAMILY_QWEN3_VL_MOE;
        snprintf(c.prefix, sizeof c.prefix, "model.language_model.");
        fields = field_get(root, "text_config");
        if (!fields) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: missing text_config", path);
            goto fail;
        }
        if (!json_is_object(fields)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: text_config must be an object, not %s", path,
                              json_type_name(fields));
            goto fail;
        }
        src.ctx = "text_config.";
        rope_default = 5000000.0;
    } else {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: model_type \"%.64s\" is not supported "
                          "(supported: qwen3_moe, qwen3_vl_moe)", path, type);
        goto fail;
    }
    snprintf(c.model_type, sizeof c.model_type, "%s", type);

    /* ---- fields ---- */
    if ((rc = get_bool(&src, fields, "attention_bias", 0, &found)))
        goto fail;
    if (found) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: %sattention_bias = true is not supported",
                          path, src.ctx);
        goto fail;
    }
    if ((rc = get_int(&src, fields, "hidden_size", 1, 0, &c.hidden)) ||
        (rc = get_int(&src, fields, "num_hidden_layers", 1, 0, &c.n_layers)) ||
        (rc = get_int(&src, fields, "num_attention_heads", 1, 0, &c.n_heads)) ||
        (rc = get_int(&src, fields, "num_key_value_heads", 0, c.n_heads, &c.n_kv_heads)) ||
        (rc = get_int(&src, fields, "head_dim", 0, 0, &c.head_dim)) ||
        (rc = get_int(&src, fields, "vocab_size", 1, 0, &c.vocab)) ||
        (rc = get_int(&src, fields, "intermediate_size", 0, 0, &c.inter)) ||
        (rc = get_int(&src, fields, "decoder_sparse_step", 0, 1, &c.decoder_sparse_step)))
        goto fail;
    has_head_dim = field_get(fields, "head_dim") != NULL;

    /* num_experts | num_local_experts: at least one; equal when both are written. */
    ne = field_get(fields, "num_experts");
    nle = field_get(fields, "num_local_experts");
    if (!ne && !nle) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: missing %snum_experts (or num_local_experts)",
                          path, src.ctx);
        goto fail;
    }
    if (ne && (rc = get_int(&src, fields, "num_experts", 1, 0, &c.n_experts)))
        goto fail;
    if (nle) {
        if ((rc = get_int(&src, fields, "num_local_experts", 1, 0, &n_local)))
            goto fail;
        if (ne && n_local != c.n_experts) {
            rc = reap_err_set(REAP_E_INVALID, "%s: %snum_experts = %d and num_local_experts = "
                              "%d disagree", path, src.ctx, c.n_experts, n_local);
            goto fail;
        }
        c.n_experts = n_local;
    }
    /* Router and expert widths are needed only when there are experts. */
    if ((rc = get_int(&src, fields, "num_experts_per_tok", c.n_experts > 0, 0,
                      &c.n_experts_used)) ||
        (rc = get_int(&src, fields, "moe_intermediate_size", c.n_experts > 0, 0,
                      &c.moe_inter)))
        goto fail;

    if ((rc = get_bool(&src, fields, "norm_topk_prob", 0, &c.norm_topk_prob)))
        goto fail;
    if (c.family == REAP_FAMILY_QWEN3_VL_MOE)
        c.norm_topk_prob = 1;   /* its router always renormalises */

    if ((rc = get_mlp_only(&src, fields, &c)))
        goto fail;
    if ((rc = get_number(&src, fields, "rms_norm_eps", &found, &c.rms_eps)))
        goto fail;
    if (!found)
        c.rms_eps = 1e-6;
    if ((rc = get_rope_theta(&src, fields, rope_default, &c.rope_theta)))
        goto fail;

    /* tie_word_embeddings: for qwen3_vl_moe the top-level key governs lm_head (the
     * ConditionalGeneration config); text_config's copy is the fallback. */
    if (c.family == REAP_FAMILY_QWEN3_VL_MOE && field_get(root, "tie_word_embeddings")) {
        field_src top = { path, "" };
        rc = get_bool(&top, root, "tie_word_embeddings", 0, &c.tie_word_embeddings);
    } else {
        rc = get_bool(&src, fields, "tie_word_embeddings", 0, &c.tie_word_embeddings);
    }
    if (rc)
        goto fail;

    if ((rc = config_validate(&src, &c, has_head_dim)) ||
        (rc = get_quant(path, root, fields, &c.quant)))
        goto fail;
    if (c.family == REAP_FAMILY_QWEN3_VL_MOE && (rc = get_mrope(&src, fields, &c)))
        goto fail;
    if (c.family == REAP_FAMILY_QWEN3_VL_MOE &&
        (rc = get_vision(path, root, c.hidden, &c.vision)))
        goto fail;

    json_decref(root);
    fclose(fp);
    *out = c;
    return REAP_OK;

fail:
    reap_config_free(&c);
    json_decref(root);
    if (fp)
        fclose(fp);
    return rc;
}

void reap_config_free(reap_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->mlp_only_layers);
    quant_free(&cfg->quant);
    memset(cfg, 0, sizeof *cfg);
}

int reap_config_layer_is_moe(const reap_config *cfg, int layer)
{
    int i;

    if (!cfg || layer < 0 || layer >= cfg->n_layers || cfg->n_experts <= 0 ||
        cfg->decoder_sparse_step < 1)
        return 0;
    for (i = 0; i < cfg->n_mlp_only; i++)
        if (cfg->mlp_only_layers[i] == layer)
            return 0;
    return (layer + 1) % cfg->decoder_sparse_step == 0;
}

int reap_config_n_moe_layers(const reap_config *cfg)
{
    int L, n = 0;

    if (!cfg)
        return 0;
    for (L = 0; L < cfg->n_layers; L++)
        n += reap_config_layer_is_moe(cfg, L);
    return n;
}

int reap_config_not_converted(const reap_config *cfg, const char *module)
{
    if (!cfg || !module || cfg->quant.method == REAP_QUANT_NONE)
        return -1;
    for (int i = 0; i < cfg->quant.n_not_convert; i++)
        if (strstr(module, cfg->quant.not_convert[i]))
            return i;
    return -1;
}

/* genmodel.c - writes tiny deterministic Qwen3-MoE / Qwen3-VL-MoE test checkpoints and
 * calibration JSONL files (see genmodel.h for the contract).
 *
 * How it works: gen_plan() lists every tensor in model order with its shape and its
 * distribution; the list is cut into contiguous shards of roughly equal bytes; each
 * shard is written by st_write_file(), whose fill callback generates one tensor at a
 * time from a stream seeded by (seed, tensor name) and rounds it to the target dtype.
 * AWQ (spec.awq): plan_linear() turns each quantised linear into its qweight / qzeros /
 * scales (or, for the twin, a dequantised .weight); fill_awq() quantises the module with
 * gen_awq.h once per shard and packs or dequantises it. config.json and
 * model.safetensors.index.json are built with jansson and written atomically (temp file,
 * fsync, rename, fsync of the directory).
 *
 * Dimension legend: V vocab, H hidden, nH query heads, nKV KV heads, hd head dim,
 * E experts, I expert width, Id dense MLP width.
 *
 * One file because every tensor is listed once, in gen_plan, with its name, shape, dtype
 * and distribution: the shard cut, the fill callbacks and the index are read off that
 * one list, and config.json is written from the same spec; the AWQ quantiser itself is
 * gen_awq.c.
 */
#include "genmodel.h"

#include "gen_awq.h"
#include "gen_rng.h"
#include "fsutil.h"
#include "reap_err.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the tensor plan ----------------------------------------------------------------- */

typedef enum gen_kind {
    GEN_GAUSS,      /* std * x */
    GEN_NORM_W,     /* 1 + 0.1 x (RMSNorm weights) */
    GEN_AWQ_QWEIGHT,/* AWQ linear (gen_awq.h): packed codes [K, N/8] */
    GEN_AWQ_QZEROS, /* packed zeros [K/g, N/8] */
    GEN_AWQ_SCALES, /* scales [K/g, N] F16 */
    GEN_AWQ_TWIN    /* the dequantised linear [N, K] in the spec dtype */
} gen_kind;

typedef struct gen_tensor {
    char name[160];
    int ndim;
    int64_t shape[5];
    gen_kind kind;
    double std;     /* GEN_GAUSS and the AWQ kinds */
    st_dtype dtype;
    int shard;      /* 0-based */
    uint64_t nbytes;
    /* AWQ kinds: the linear [N, K] of group g, stream "<module>.weight" */
    int64_t awq_n, awq_k, awq_g;
    uint64_t awq_stream;
    int awq_module; /* plan index of the module's first tensor (its cache slot) */
} gen_tensor;

typedef struct gen_plan {
    gen_tensor *t;
    int n, cap;
    int overflow;   /* a name did not fit (a bug) */
    st_dtype dtype; /* of the float tensors */
} gen_plan;

static int plan_add(gen_plan *p, gen_kind kind, double std, int ndim, const int64_t *shape,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int plan_add(gen_plan *p, gen_kind kind, double std, int ndim, const int64_t *shape,
                    const char *fmt, ...)
{
    gen_tensor *t;
    va_list ap;
    int len;

    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        gen_tensor *nt = realloc(p->t, (size_t)cap * sizeof *nt);
        if (!nt)
            return reap_err_set(REAP_E_NOMEM, "genmodel: out of memory");
        p->t = nt;
        p->cap = cap;
    }
    t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    va_start(ap, fmt);
    len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof t->name)
        return reap_err_set(REAP_E_INTERNAL, "genmodel: tensor name too long");
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->kind = kind;
    t->std = std;
    t->dtype = p->dtype;
    p->n++;
    return REAP_OK;
}

static int dtype_size(st_dtype d)
{
    return d == ST_F32 || d == ST_I32 ? 4 : 2;
}

static reap_expert_layout spec_layout(const reap_gen_spec *s)
{
    if (s->layout)
        return s->layout;
    return s->family == REAP_FAMILY_QWEN3_VL_MOE ? REAP_EXPERTS_FUSED : REAP_EXPERTS_SPLIT;
}

static int spec_layer_is_moe(const reap_gen_spec *s, int layer)
{
    for (int i = 0; i < s->n_mlp_only; i++)
        if (s->mlp_only_layers[i] == layer)
            return 0;
    return s->n_experts > 0 && (layer + 1) % s->decoder_sparse_step == 0;
}

/* ---- AWQ: which linears are quantised ------------------------------------------------- */

/* modules_to_not_convert as written to config.json (see genmodel.h). */
static int awq_not_convert(const reap_gen_spec *s, const char *list[], int cap)
{
    int n = 0, has_moe = 0;

    for (int L = 0; L < s->n_layers; L++)
        has_moe |= spec_layer_is_moe(s, L);
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE && n < cap)
        list[n++] = "model.visual";
    if (has_moe && n < cap)
        list[n++] = "mlp.gate";
    if (!s->awq_attention && n < cap)
        list[n++] = "self_attn";
    for (int i = 0; i < s->n_awq_skip && n < cap; i++)
        list[n++] = s->awq_skip[i];
    return n;
}

/* 1 if the linear `module` (full name, no suffix) is written quantised. */
static int awq_quantised(const reap_gen_spec *s, const char *module)
{
    const char *list[REAP_GEN_MAX_AWQ_SKIP + 4];
    int n;

    if (s->awq == REAP_GEN_PLAIN)
        return 0;
    n = awq_not_convert(s, list, (int)(sizeof list / sizeof list[0]));
    for (int i = 0; i < n; i++)
        if (strstr(module, list[i]))
            return 0;
    return 1;
}

/* A linear [N, K] named `<module>`: plain `.weight` (GEN_GAUSS), or AWQ qweight/qzeros/
 * scales, or the dequantised twin `.weight`. */
static int plan_linear(gen_plan *p, const reap_gen_spec *s, double std, int64_t N, int64_t K,
                       const char *module)
{
    char nm[200];
    int rc;

    if (!awq_quantised(s, module)) {
        snprintf(nm, sizeof nm, "%s.weight", module);
        return plan_add(p, GEN_GAUSS, std, 2, (const int64_t[]){N, K}, "%s", nm);
    }
    const int64_t g = s->awq_group_size, first = p->n;
    const uint64_t stream = s->seed ^ gen_fnv1a64((snprintf(nm, sizeof nm, "%s.weight", module),
                                                   nm));
    if (s->awq == REAP_GEN_AWQ_TWIN) {
        if ((rc = plan_add(p, GEN_AWQ_TWIN, std, 2, (const int64_t[]){N, K}, "%s.weight",
                           module)))
            return rc;
    } else {
        if ((rc = plan_add(p, GEN_AWQ_QWEIGHT, std, 2, (const int64_t[]){K, N / 8},
                           "%s.qweight", module)) ||
            (rc = plan_add(p, GEN_AWQ_QZEROS, std, 2, (const int64_t[]){K / g, N / 8},
                           "%s.qzeros", module)) ||
            (rc = plan_add(p, GEN_AWQ_SCALES, std, 2, (const int64_t[]){K / g, N},
                           "%s.scales", module)))
            return rc;
        p->t[first].dtype = p->t[first + 1].dtype = ST_I32;
        p->t[first + 2].dtype = ST_F16;
    }
    for (int64_t i = first; i < p->n; i++) {
        p->t[i].awq_n = N;
        p->t[i].awq_k = K;
        p->t[i].awq_g = g;
        p->t[i].awq_stream = stream;
        p->t[i].awq_module = (int)first;
    }
    return REAP_OK;
}

#define SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })
#define ADD(kind, std, nd, shape, ...)                                            \
    do {                                                                          \
        if ((rc = plan_add(p, kind, std, nd, shape, __VA_ARGS__)))                \
            return rc;                                                            \
    } while (0)
/* LINEAR(std, N, K, fmt, ...): the linear [N, K] whose module name is fmt (no suffix) */
#define LINEAR(std, N, K, ...)                                                    \
    do {                                                                          \
        snprintf(mod, sizeof mod, __VA_ARGS__);                                   \
        if ((rc = plan_linear(p, s, std, N, K, mod)))                             \
            return rc;                                                            \
    } while (0)

/* A LayerNorm of width n named `<module>`: weight 1 + 0.1 x, bias 0.1 x. */
static int plan_layer_norm(gen_plan *p, int64_t n, const char *module)
{
    int rc = plan_add(p, GEN_NORM_W, 0, 1, (const int64_t[]){n}, "%s.weight", module);
    return rc ? rc : plan_add(p, GEN_GAUSS, 0.1, 1, (const int64_t[]){n}, "%s.bias", module);
}

/* A vision linear [N, K] with bias named `<module>` (never quantised). */
static int plan_vis_linear(gen_plan *p, int64_t N, int64_t K, const char *module)
{
    int rc = plan_add(p, GEN_GAUSS, 1.0 / sqrt((double)K), 2, (const int64_t[]){N, K},
                      "%s.weight", module);
    return rc ? rc : plan_add(p, GEN_GAUSS, 0.1, 1, (const int64_t[]){N}, "%s.bias", module);
}

/* The real vision tower (genmodel.h, reap_gen_vision), after the language model. */
static int plan_vision(const reap_gen_spec *s, gen_plan *p)
{
    const reap_gen_vision *v = &s->vision;
    const int64_t Hv = v->hidden, mg = (int64_t)v->merge * v->merge * Hv;
    const int64_t D = 3LL * v->temporal_patch * v->patch * v->patch;
    char mod[160];
    int rc;

    ADD(GEN_GAUSS, 1.0 / sqrt((double)D), 5,
        SHAPE(Hv, 3, v->temporal_patch, v->patch, v->patch),
        "model.visual.patch_embed.proj.weight");
    ADD(GEN_GAUSS, 0.1, 1, SHAPE(Hv), "model.visual.patch_embed.proj.bias");
    ADD(GEN_GAUSS, 0.5, 2, SHAPE((int64_t)v->pos_side * v->pos_side, Hv),
        "model.visual.pos_embed.weight");
#define VIS(call, ...)                                                            \
    do {                                                                          \
        snprintf(mod, sizeof mod, __VA_ARGS__);                                   \
        if ((rc = call))                                                          \
            return rc;                                                            \
    } while (0)
    for (int b = 0; b < v->depth; b++) {
        VIS(plan_layer_norm(p, Hv, mod), "model.visual.blocks.%d.norm1", b);
        VIS(plan_layer_norm(p, Hv, mod), "model.visual.blocks.%d.norm2", b);
        VIS(plan_vis_linear(p, 3 * Hv, Hv, mod), "model.visual.blocks.%d.attn.qkv", b);
        VIS(plan_vis_linear(p, Hv, Hv, mod), "model.visual.blocks.%d.attn.proj", b);
        VIS(plan_vis_linear(p, v->inter, Hv, mod), "model.visual.blocks.%d.mlp.linear_fc1",
            b);
        VIS(plan_vis_linear(p, Hv, v->inter, mod), "model.visual.blocks.%d.mlp.linear_fc2",
            b);
    }
    VIS(plan_layer_norm(p, Hv, mod), "model.visual.merger.norm");
    VIS(plan_vis_linear(p, mg, mg, mod), "model.visual.merger.linear_fc1");
    VIS(plan_vis_linear(p, s->hidden, mg, mod), "model.visual.merger.linear_fc2");
    for (int k = 0; k < v->n_deepstack; k++) {
        VIS(plan_layer_norm(p, mg, mod), "model.visual.deepstack_merger_list.%d.norm", k);
        VIS(plan_vis_linear(p, mg, mg, mod), "model.visual.deepstack_merger_list.%d.linear_fc1",
            k);
        VIS(plan_vis_linear(p, s->hidden, mg, mod),
            "model.visual.deepstack_merger_list.%d.linear_fc2", k);
    }
#undef VIS
    return REAP_OK;
}

/* List every tensor of the checkpoint in model order. */
static int plan_build(const reap_gen_spec *s, gen_plan *p)
{
    const char *pre = s->family == REAP_FAMILY_QWEN3_VL_MOE ? "model.language_model."
                                                            : "model.";
    int64_t H = s->hidden, V = s->vocab, hd = s->head_dim;
    int64_t q_out = (int64_t)s->n_heads * hd, kv_out = (int64_t)s->n_kv_heads * hd;
    int64_t E = s->n_experts, I = s->moe_inter, Id = s->inter;
    double sH = 1.0 / sqrt((double)H);
    char mod[160];
    int rc;

    p->dtype = s->dtype;
    ADD(GEN_GAUSS, 1.0, 2, SHAPE(V, H), "%sembed_tokens.weight", pre);
    for (int L = 0; L < s->n_layers; L++) {
        ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%slayers.%d.input_layernorm.weight", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%slayers.%d.post_attention_layernorm.weight",
            pre, L);
        LINEAR(sH, q_out, H, "%slayers.%d.self_attn.q_proj", pre, L);
        LINEAR(sH, kv_out, H, "%slayers.%d.self_attn.k_proj", pre, L);
        LINEAR(sH, kv_out, H, "%slayers.%d.self_attn.v_proj", pre, L);
        LINEAR(1.0 / sqrt((double)q_out), H, q_out, "%slayers.%d.self_attn.o_proj", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(hd), "%slayers.%d.self_attn.q_norm.weight", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(hd), "%slayers.%d.self_attn.k_norm.weight", pre, L);
        if (!spec_layer_is_moe(s, L)) {
            LINEAR(sH, Id, H, "%slayers.%d.mlp.gate_proj", pre, L);
            LINEAR(sH, Id, H, "%slayers.%d.mlp.up_proj", pre, L);
            LINEAR(1.0 / sqrt((double)Id), H, Id, "%slayers.%d.mlp.down_proj", pre, L);
            continue;
        }
        ADD(GEN_GAUSS, 2.0 * sH, 2, SHAPE(E, H), "%slayers.%d.mlp.gate.weight", pre, L);
        if (spec_layout(s) == REAP_EXPERTS_FUSED) {
            ADD(GEN_GAUSS, sH, 3, SHAPE(E, H, 2 * I),
                "%slayers.%d.mlp.experts.gate_up_proj", pre, L);
            ADD(GEN_GAUSS, 1.0 / sqrt((double)I), 3, SHAPE(E, I, H),
                "%slayers.%d.mlp.experts.down_proj", pre, L);
            continue;
        }
        for (int e = 0; e < s->n_experts; e++) {
            LINEAR(sH, I, H, "%slayers.%d.mlp.experts.%d.gate_proj", pre, L, e);
            LINEAR(sH, I, H, "%slayers.%d.mlp.experts.%d.up_proj", pre, L, e);
            LINEAR(1.0 / sqrt((double)I), H, I, "%slayers.%d.mlp.experts.%d.down_proj", pre, L,
                   e);
        }
    }
    ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%snorm.weight", pre);
    if (!s->tie_word_embeddings)
        ADD(GEN_GAUSS, sH, 2, SHAPE(V, H), "lm_head.weight");
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE && s->vision.enabled)
        return plan_vision(s, p);
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE) {
        /* vision tower stub: patch embedding of 3 channels x 2 frames x 4 x 4 pixels */
        ADD(GEN_GAUSS, 1.0 / sqrt(96.0), 5, SHAPE(16, 3, 2, 4, 4),
            "model.visual.patch_embed.proj.weight");
        ADD(GEN_GAUSS, 0.02, 1, SHAPE(16), "model.visual.patch_embed.proj.bias");
    }
    return REAP_OK;
}

#undef ADD
#undef LINEAR
#undef SHAPE

/* Cut the plan into n contiguous non-empty shards of roughly equal bytes. */
static void plan_shard(gen_plan *p, int n_shards, uint64_t *total)
{
    uint64_t sum = 0, acc = 0;
    int prev = -1;

    for (int i = 0; i < p->n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < p->t[i].ndim; d++)
            numel *= (uint64_t)p->t[i].shape[d];
        p->t[i].nbytes = numel * (uint64_t)dtype_size(p->t[i].dtype);
        sum += p->t[i].nbytes;
    }
    for (int i = 0; i < p->n; i++) {
        int want = sum ? (int)((long double)acc * n_shards / sum) : 0;
        int lo = n_shards - (p->n - i);     /* leave one tensor per remaining shard */
        int hi = prev + 1 < n_shards - 1 ? prev + 1 : n_shards - 1;
        if (lo < prev)
            lo = prev;
        if (want < lo)
            want = lo;
        if (want > hi)
            want = hi;
        p->t[i].shard = want;
        prev = want;
        acc += p->t[i].nbytes;
    }
    *total = sum;
}

/* ---- files ---------------------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char buf[4096];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof buf)
        return reap_err_set(REAP_E_INVALID, "genmodel: bad output directory '%s'", dir);
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return reap_err_set(REAP_E_IO, "genmodel: mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return REAP_OK;
}

/* Start a text file written atomically (reap_atomic_open, stdio, mode 0666 less the
 * umask as fopen gives); messages keep the "genmodel:" prefix. */
static int file_begin(const char *path, reap_atomic *af)
{
    int rc = reap_atomic_open(path, 0666, REAP_ATOMIC_STDIO, af);
    if (rc)
        reap_err_prefix(rc, "genmodel");
    return rc;
}

/* Finish a file begun with file_begin: flush, fsync, close, rename, fsync the directory
 * (reap_atomic_commit). Always releases af; removes the temp file on failure. */
static int file_commit(reap_atomic *af)
{
    int rc = reap_atomic_commit(af);
    if (rc)
        reap_err_prefix(rc, "genmodel");
    return rc;
}

static int json_write_atomic(const json_t *root, const char *path)
{
    reap_atomic af;
    int rc = file_begin(path, &af);
    if (rc)
        return rc;
    if (json_dumpf(root, af.fp, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15)) != 0 || fputc('\n', af.fp) == EOF) {
        rc = reap_err_set(REAP_E_IO, "genmodel: write %s failed", af.tmp);
        reap_atomic_abort(&af);
        return rc;
    }
    return file_commit(&af);
}

/* ---- config.json ------------------------------------------------------------------------ */

static const char *torch_dtype_name(st_dtype d)
{
    return d == ST_F32 ? "float32" : d == ST_F16 ? "float16" : "bfloat16";
}

/* Language-model fields (top level for qwen3_moe, text_config for qwen3_vl_moe). */
static int config_text_fields(const reap_gen_spec *s, json_t *o)
{
    json_t *mlp_only = json_array();
    int bad = 0;

    if (!mlp_only)
        return REAP_E_NOMEM;
    for (int i = 0; i < s->n_mlp_only; i++)
        bad |= json_array_append_new(mlp_only, json_integer(s->mlp_only_layers[i]));
    bad |= json_object_set_new(o, "mlp_only_layers", mlp_only);
    bad |= json_object_set_new(o, "hidden_size", json_integer(s->hidden));
    bad |= json_object_set_new(o, "num_hidden_layers", json_integer(s->n_layers));
    bad |= json_object_set_new(o, "num_attention_heads", json_integer(s->n_heads));
    bad |= json_object_set_new(o, "num_key_value_heads", json_integer(s->n_kv_heads));
    bad |= json_object_set_new(o, "head_dim", json_integer(s->head_dim));
    bad |= json_object_set_new(o, "vocab_size", json_integer(s->vocab));
    bad |= json_object_set_new(o, "num_experts", json_integer(s->n_experts));
    bad |= json_object_set_new(o, "num_experts_per_tok", json_integer(s->top_k));
    bad |= json_object_set_new(o, "moe_intermediate_size", json_integer(s->moe_inter));
    bad |= json_object_set_new(o, "intermediate_size", json_integer(s->inter));
    bad |= json_object_set_new(o, "norm_topk_prob", json_boolean(s->norm_topk_prob));
    bad |= json_object_set_new(o, "decoder_sparse_step", json_integer(s->decoder_sparse_step));
    bad |= json_object_set_new(o, "rms_norm_eps", json_real(s->rms_eps));
    bad |= json_object_set_new(o, "rope_theta", json_real(s->rope_theta));
    bad |= json_object_set_new(o, "attention_bias", json_false());
    bad |= json_object_set_new(o, "attention_dropout", json_real(0.0));
    bad |= json_object_set_new(o, "hidden_act", json_string("silu"));
    bad |= json_object_set_new(o, "max_position_embeddings", json_integer(4096));
    bad |= json_object_set_new(o, "initializer_range", json_real(0.02));
    bad |= json_object_set_new(o, "router_aux_loss_coef", json_real(0.001));
    bad |= json_object_set_new(o, "use_cache", json_true());
    bad |= json_object_set_new(o, "torch_dtype", json_string(torch_dtype_name(s->dtype)));
    return bad ? REAP_E_NOMEM : REAP_OK;
}

/* vision_config of a real tower (genmodel.h, reap_gen_vision); out_hidden_size and
 * model_type are set by the caller. */
static int config_vision_fields(const reap_gen_spec *s, json_t *o)
{
    const reap_gen_vision *v = &s->vision;
    json_t *ds = json_array();
    int bad = 0;

    if (!ds)
        return REAP_E_NOMEM;
    for (int k = 0; k < v->n_deepstack; k++)
        bad |= json_array_append_new(ds, json_integer(v->deepstack[k]));
    bad |= json_object_set_new(o, "deepstack_visual_indexes", ds);
    bad |= json_object_set_new(o, "depth", json_integer(v->depth));
    bad |= json_object_set_new(o, "hidden_size", json_integer(v->hidden));
    bad |= json_object_set_new(o, "hidden_act", json_string("gelu_pytorch_tanh"));
    bad |= json_object_set_new(o, "intermediate_size", json_integer(v->inter));
    bad |= json_object_set_new(o, "num_heads", json_integer(v->n_heads));
    bad |= json_object_set_new(o, "in_channels", json_integer(3));
    bad |= json_object_set_new(o, "patch_size", json_integer(v->patch));
    bad |= json_object_set_new(o, "spatial_merge_size", json_integer(v->merge));
    bad |= json_object_set_new(o, "temporal_patch_size", json_integer(v->temporal_patch));
    bad |= json_object_set_new(o, "num_position_embeddings",
                               json_integer((json_int_t)v->pos_side * v->pos_side));
    bad |= json_object_set_new(o, "initializer_range", json_real(0.02));
    return bad ? REAP_E_NOMEM : REAP_OK;
}

/* preprocessor_config.json of a real tower, the fields Qwen3-VL ships. */
static int preprocessor_write(const reap_gen_spec *s, const char *path)
{
    const reap_gen_vision *v = &s->vision;
    json_t *root = json_object(), *size = json_object(), *mean = json_array(),
           *std = json_array();
    int bad = !root || !size || !mean || !std, rc;

    for (int c = 0; c < 3 && !bad; c++) {
        bad |= json_array_append_new(mean, json_real(0.5));
        bad |= json_array_append_new(std, json_real(0.5));
    }
    bad |= json_object_set_new(size, "shortest_edge", json_integer(v->min_pixels));
    bad |= json_object_set_new(size, "longest_edge", json_integer(v->max_pixels));
    bad |= json_object_set(root, "size", size);
    bad |= json_object_set_new(root, "patch_size", json_integer(v->patch));
    bad |= json_object_set_new(root, "temporal_patch_size", json_integer(v->temporal_patch));
    bad |= json_object_set_new(root, "merge_size", json_integer(v->merge));
    bad |= json_object_set(root, "image_mean", mean);
    bad |= json_object_set(root, "image_std", std);
    bad |= json_object_set_new(root, "do_convert_rgb", json_true());
    bad |= json_object_set_new(root, "do_resize", json_true());
    bad |= json_object_set_new(root, "do_rescale", json_true());
    bad |= json_object_set_new(root, "do_normalize", json_true());
    bad |= json_object_set_new(root, "rescale_factor", json_real(1.0 / 255.0));
    bad |= json_object_set_new(root, "resample", json_integer(3)); /* PIL BICUBIC */
    bad |= json_object_set_new(root, "image_processor_type",
                               json_string("Qwen2VLImageProcessor"));
    bad |= json_object_set_new(root, "processor_class", json_string("Qwen3VLProcessor"));
    rc = bad ? reap_err_set(REAP_E_NOMEM, "genmodel: out of memory building %s", path)
             : json_write_atomic(root, path);
    json_decref(size);
    json_decref(mean);
    json_decref(std);
    json_decref(root);
    return rc;
}

static int config_write(const reap_gen_spec *s, const char *path)
{
    json_t *root = json_object(), *text = NULL, *vis = NULL, *arch = json_array();
    int rc = REAP_E_NOMEM, bad = 0;

    if (!root || !arch)
        goto fail;
    if (s->family == REAP_FAMILY_QWEN3_MOE) {
        if ((rc = config_text_fields(s, root)))
            goto fail;
        bad |= json_array_append_new(arch, json_string("Qwen3MoeForCausalLM"));
        bad |= json_object_set_new(root, "model_type", json_string("qwen3_moe"));
        bad |= json_object_set_new(root, "output_router_logits", json_false());
    } else {
        int half = s->head_dim / 2, s1 = half * 5 / 16, s0 = half - 2 * s1;
        json_t *rope = json_object(), *sec = json_array();

        text = json_object();
        vis = json_object();
        if (!text || !vis || !rope || !sec) {
            json_decref(rope);
            json_decref(sec);
            goto fail;
        }
        if ((rc = config_text_fields(s, text))) {
            json_decref(rope);
            json_decref(sec);
            goto fail;
        }
        rc = REAP_E_NOMEM;
        /* text-only input: the three MRoPE axes coincide, i.e. plain 1-D RoPE */
        bad |= json_array_append_new(sec, json_integer(s0));
        bad |= json_array_append_new(sec, json_integer(s1));
        bad |= json_array_append_new(sec, json_integer(s1));
        bad |= json_object_set_new(rope, "rope_type", json_string("default"));
        bad |= json_object_set_new(rope, "mrope_section", sec);
        bad |= json_object_set_new(rope, "mrope_interleaved", json_true());
        bad |= json_object_set_new(text, "rope_scaling", rope);
        bad |= json_object_set_new(text, "model_type", json_string("qwen3_vl_moe_text"));
        bad |= json_object_set_new(vis, "model_type", json_string("qwen3_vl_moe"));
        if (s->vision.enabled) {
            if ((rc = config_vision_fields(s, vis))) {
                json_decref(rope);
                json_decref(sec);
                goto fail;
            }
            rc = REAP_E_NOMEM;
        } else {
            /* a stub: describes the two model.visual.* tensors, not a usable tower */
            bad |= json_object_set_new(vis, "depth", json_integer(0));
            bad |= json_object_set_new(vis, "hidden_size", json_integer(16));
            bad |= json_object_set_new(vis, "in_channels", json_integer(3));
            bad |= json_object_set_new(vis, "patch_size", json_integer(4));
            bad |= json_object_set_new(vis, "temporal_patch_size", json_integer(2));
        }
        bad |= json_object_set_new(vis, "out_hidden_size", json_integer(s->hidden));
        bad |= json_array_append_new(arch, json_string("Qwen3VLMoeForConditionalGeneration"));
        bad |= json_object_set_new(root, "model_type", json_string("qwen3_vl_moe"));
        bad |= json_object_set_new(root, "text_config", text);
        text = NULL;
        bad |= json_object_set_new(root, "vision_config", vis);
        vis = NULL;
    }
    bad |= json_object_set_new(root, "architectures", arch);
    arch = NULL;
    bad |= json_object_set_new(root, "tie_word_embeddings",
                               json_boolean(s->tie_word_embeddings));
    bad |= json_object_set_new(root, "transformers_version", json_string("4.57.0"));
    if (s->awq == REAP_GEN_AWQ) {
        const char *list[REAP_GEN_MAX_AWQ_SKIP + 4];
        json_t *q = json_object(), *mtc = json_array();
        int n = awq_not_convert(s, list, (int)(sizeof list / sizeof list[0]));
        if (!q || !mtc) {
            json_decref(q);
            json_decref(mtc);
            goto fail;
        }
        for (int i = 0; i < n; i++)
            bad |= json_array_append_new(mtc, json_string(list[i]));
        bad |= json_object_set_new(q, "quant_method", json_string("awq"));
        bad |= json_object_set_new(q, "bits", json_integer(4));
        bad |= json_object_set_new(q, "group_size", json_integer(s->awq_group_size));
        bad |= json_object_set_new(q, "zero_point", json_true());
        bad |= json_object_set_new(q, "version", json_string("gemm"));
        bad |= json_object_set_new(q, "modules_to_not_convert", mtc);
        bad |= json_object_set_new(root, "quantization_config", q);
    }
    if (bad)
        goto fail;
    rc = json_write_atomic(root, path);
fail:
    if (rc == REAP_E_NOMEM)
        reap_err_set(rc, "genmodel: out of memory building %s", path);
    json_decref(text);
    json_decref(vis);
    json_decref(arch);
    json_decref(root);
    return rc;
}

/* ---- shards ------------------------------------------------------------------------------ */

/* Zeros and scales of an AWQ module, kept from its qweight until its scales. */
typedef struct awq_slot {
    uint8_t *z;       /* [K/g, N] */
    uint16_t *s;      /* [K/g, N] F16 bits */
} awq_slot;

typedef struct fill_ctx {
    const reap_gen_spec *spec;
    const gen_tensor **tensors;   /* [n] the shard's tensors, in spec order */
    const gen_tensor *plan;       /* the whole plan (awq_module indexes it) */
    awq_slot *slots;              /* [plan size] */
} fill_ctx;

static void put_float(unsigned char *out, uint64_t i, st_dtype dt, float v)
{
    if (dt == ST_F32) {
        uint32_t u;
        memcpy(&u, &v, 4);
        for (int b = 0; b < 4; b++)
            out[4 * i + (uint64_t)b] = (unsigned char)(u >> (8 * b));
    } else {
        uint16_t u = dt == ST_BF16 ? reap_f32_to_bf16(v) : reap_f32_to_f16(v);
        out[2 * i] = (unsigned char)(u & 0xFF);
        out[2 * i + 1] = (unsigned char)(u >> 8);
    }
}

/* An AWQ tensor: quantise its module (once per shard: qweight first, the zeros and scales
 * kept in the module's slot until the scales are written), then pack or dequantise. */
static int fill_awq(const fill_ctx *c, const gen_tensor *t, unsigned char *out)
{
    awq_slot *slot = &c->slots[t->awq_module];
    gen_awq_linear l;
    int rc;
    const int need_q = t->kind == GEN_AWQ_QWEIGHT || t->kind == GEN_AWQ_TWIN;

    if (!need_q && slot->z) {
        l = (gen_awq_linear){.N = t->awq_n, .K = t->awq_k, .g = t->awq_g, .q = NULL,
                             .z = slot->z, .s = slot->s};
    } else if ((rc = gen_awq_quantise(t->awq_stream, t->std, t->awq_n, t->awq_k, t->awq_g,
                                      need_q, &l))) {
        return reap_err_prefix(rc, "genmodel: %s", t->name);
    }
    const int64_t N = t->awq_n, K = t->awq_k, G = K / t->awq_g;
    switch (t->kind) {
    case GEN_AWQ_QWEIGHT:
        gen_awq_pack(l.q, K, N, out);
        break;
    case GEN_AWQ_QZEROS:
        gen_awq_pack(l.z, G, N, out);
        break;
    case GEN_AWQ_SCALES:
        for (int64_t i = 0; i < G * N; i++) {
            out[2 * i] = (unsigned char)(l.s[i] & 0xFF);
            out[2 * i + 1] = (unsigned char)(l.s[i] >> 8);
        }
        break;
    default: /* GEN_AWQ_TWIN: [N, K] */
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                put_float(out, (uint64_t)(n * K + k), t->dtype, gen_awq_value(&l, n, k));
        break;
    }
    if (l.z == slot->z) {                      /* served from the slot */
        if (t->kind == GEN_AWQ_SCALES) {
            free(slot->z);
            free(slot->s);
            slot->z = NULL;
            slot->s = NULL;
        }
        return REAP_OK;
    }
    if (t->kind == GEN_AWQ_QWEIGHT) {          /* keep zeros and scales for later */
        slot->z = l.z;
        slot->s = l.s;
        l.z = NULL;
        l.s = NULL;
    }
    gen_awq_free(&l);
    return REAP_OK;
}

static int fill_tensor(void *ud, size_t index, void *dst, uint64_t nbytes)
{
    const fill_ctx *c = ud;
    const gen_tensor *t = c->tensors[index];
    st_dtype dt = t->dtype;
    unsigned char *out = dst;
    uint64_t numel = t->nbytes / (uint64_t)dtype_size(dt);
    gen_rng rng;

    if (nbytes != t->nbytes)
        return reap_err_set(REAP_E_INTERNAL, "genmodel: %s: asked for %llu bytes, not %llu",
                            t->name, (unsigned long long)nbytes,
                            (unsigned long long)t->nbytes);
    if (t->kind != GEN_GAUSS && t->kind != GEN_NORM_W)
        return fill_awq(c, t, out);
    gen_rng_seed(&rng, c->spec->seed ^ gen_fnv1a64(t->name));
    for (uint64_t i = 0; i < numel; i++) {
        double x = gen_rng_normal(&rng);
        float v = (float)(t->kind == GEN_NORM_W ? 1.0 + 0.1 * x : t->std * x);

        put_float(out, i, dt, v);
    }
    return REAP_OK;
}

static void shard_name(char *buf, size_t cap, int shard, int n_shards)
{
    if (n_shards == 1)
        snprintf(buf, cap, "model.safetensors");
    else
        snprintf(buf, cap, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

static int shard_write(const reap_gen_spec *s, const gen_plan *p, int shard, const char *dir)
{
    char fname[64], path[4200];
    st_write_spec *specs = calloc((size_t)p->n, sizeof *specs);
    const gen_tensor **ts = calloc((size_t)p->n, sizeof *ts);
    awq_slot *slots = calloc((size_t)p->n, sizeof *slots);
    fill_ctx ctx = { s, ts, p->t, slots };
    size_t n = 0;
    int rc;

    if (!specs || !ts || !slots) {
        rc = reap_err_set(REAP_E_NOMEM, "genmodel: out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        if (p->t[i].shard != shard)
            continue;
        specs[n].name = p->t[i].name;
        specs[n].dtype = p->t[i].dtype;
        specs[n].ndim = p->t[i].ndim;
        memcpy(specs[n].shape, p->t[i].shape, (size_t)p->t[i].ndim * sizeof(int64_t));
        ts[n++] = &p->t[i];
    }
    shard_name(fname, sizeof fname, shard, s->n_shards);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, fname) >= sizeof path) {
        rc = reap_err_set(REAP_E_INVALID, "genmodel: path too long: %s", dir);
        goto fail;
    }
    rc = st_write_file(path, specs, n, fill_tensor, &ctx);
fail:
    for (int i = 0; slots && i < p->n; i++) {
        free(slots[i].z);
        free(slots[i].s);
    }
    free(slots);
    free(specs);
    free(ts);
    return rc;
}

static int index_write(const reap_gen_spec *s, const gen_plan *p, uint64_t total,
                       const char *path)
{
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    char fname[64];
    int rc = REAP_E_NOMEM, bad = 0;

    if (!root || !meta || !wm)
        goto fail;
    for (int i = 0; i < p->n; i++) {
        shard_name(fname, sizeof fname, p->t[i].shard, s->n_shards);
        bad |= json_object_set_new(wm, p->t[i].name, json_string(fname));
    }
    bad |= json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    bad |= json_object_set_new(root, "metadata", meta);
    meta = NULL;
    bad |= json_object_set_new(root, "weight_map", wm);
    wm = NULL;
    if (bad)
        goto fail;
    rc = json_write_atomic(root, path);
fail:
    if (rc == REAP_E_NOMEM)
        reap_err_set(rc, "genmodel: out of memory building %s", path);
    json_decref(meta);
    json_decref(wm);
    json_decref(root);
    return rc;
}

/* ---- public ---------------------------------------------------------------------------- */

void reap_gen_spec_default(reap_gen_spec *s, reap_family family)
{
    memset(s, 0, sizeof *s);
    s->family = family;
    s->layout = 0;
    s->n_layers = 2;
    s->hidden = 64;
    s->n_heads = 4;
    s->n_kv_heads = 2;
    s->head_dim = 16;
    s->n_experts = 8;
    s->top_k = 2;
    s->moe_inter = 32;
    s->inter = 64;
    s->vocab = 128;
    s->norm_topk_prob = 1;
    s->decoder_sparse_step = 1;
    s->rope_theta = family == REAP_FAMILY_QWEN3_VL_MOE ? 5000000.0 : 10000.0;
    s->rms_eps = 1e-6;
    s->dtype = ST_BF16;
    s->n_shards = 1;
    s->seed = 1;
    s->awq = REAP_GEN_PLAIN;
    s->awq_group_size = 128;
    s->awq_attention = 1;
    s->vision = (reap_gen_vision){ .enabled = 0, .depth = 3, .hidden = 32, .n_heads = 2,
                                   .inter = 64, .patch = 4, .temporal_patch = 2, .merge = 2,
                                   .pos_side = 8, .n_deepstack = 2, .deepstack = { 0, 2 },
                                   .min_pixels = 1024, .max_pixels = 16384 };
}

/* The vision tower settings (genmodel.h). */
static int vision_check(const reap_gen_spec *s)
{
    const reap_gen_vision *v = &s->vision;
    if (!v->enabled)
        return REAP_OK;
    if (s->family != REAP_FAMILY_QWEN3_VL_MOE)
        return reap_err_set(REAP_E_INVALID, "genmodel: a vision tower needs qwen3_vl_moe");
    if (v->depth < 1 || v->depth > 1024 || v->hidden < 1 || v->hidden > 65536 ||
        v->n_heads < 1 || v->inter < 1 || v->inter > 1048576 || v->patch < 1 ||
        v->patch > 1024 || v->temporal_patch < 1 || v->temporal_patch > 16 || v->merge < 1 ||
        v->merge > 16 || v->pos_side < 1 || v->pos_side > 1024)
        return reap_err_set(REAP_E_INVALID, "genmodel: vision sizes out of range (depth %d, "
                            "hidden %d, heads %d, inter %d, patch %d, temporal %d, merge %d, "
                            "pos side %d)", v->depth, v->hidden, v->n_heads, v->inter,
                            v->patch, v->temporal_patch, v->merge, v->pos_side);
    if (v->hidden % v->n_heads || (v->hidden / v->n_heads) % 4)
        return reap_err_set(REAP_E_INVALID, "genmodel: vision hidden %d / heads %d must be a "
                            "multiple of 4", v->hidden, v->n_heads);
    if (v->n_deepstack < 0 || v->n_deepstack > REAP_GEN_MAX_DEEPSTACK)
        return reap_err_set(REAP_E_INVALID, "genmodel: at most %d deepstack indexes",
                            REAP_GEN_MAX_DEEPSTACK);
    for (int k = 0; k < v->n_deepstack; k++)
        if (v->deepstack[k] < 0 || v->deepstack[k] >= v->depth ||
            (k > 0 && v->deepstack[k] <= v->deepstack[k - 1]))
            return reap_err_set(REAP_E_INVALID, "genmodel: deepstack index %d must increase "
                                "and lie in [0, depth %d)", v->deepstack[k], v->depth);
    if (v->min_pixels < 1 || v->min_pixels > v->max_pixels)
        return reap_err_set(REAP_E_INVALID, "genmodel: need 1 <= min_pixels (%d) <= "
                            "max_pixels (%d)", v->min_pixels, v->max_pixels);
    return REAP_OK;
}

/* Number of tensors of the checkpoint (-1 when the plan cannot be built). */
static int count_tensors(const reap_gen_spec *s)
{
    gen_plan plan = { 0 };
    int n = plan_build(s, &plan) == REAP_OK ? plan.n : -1;

    free(plan.t);
    return n;
}

/* AWQ: the linear [N, K] kind `what` must pack (N % 8) and group (K % g). */
static int awq_dims_ok(const reap_gen_spec *s, const char *what, int64_t N, int64_t K)
{
    if (N % 8 == 0 && K % s->awq_group_size == 0)
        return REAP_OK;
    return reap_err_set(REAP_E_INVALID, "genmodel: AWQ %s [out %lld, in %lld]: out_features "
                        "must be a multiple of 8 and in_features of the group size %d",
                        what, (long long)N, (long long)K, s->awq_group_size);
}

static int awq_check(const reap_gen_spec *s)
{
    const int64_t H = s->hidden, qd = (int64_t)s->n_heads * s->head_dim,
                  kvd = (int64_t)s->n_kv_heads * s->head_dim, I = s->moe_inter, Id = s->inter;
    int rc, dense = 0, moe = 0;

    if (s->awq == REAP_GEN_PLAIN)
        return REAP_OK;
    if (s->awq != REAP_GEN_AWQ && s->awq != REAP_GEN_AWQ_TWIN)
        return reap_err_set(REAP_E_INVALID, "genmodel: unknown awq mode %d", (int)s->awq);
    if (s->awq_group_size < 1 || s->n_awq_skip < 0 || s->n_awq_skip > REAP_GEN_MAX_AWQ_SKIP)
        return reap_err_set(REAP_E_INVALID, "genmodel: AWQ group size %d must be >= 1 and "
                            "at most %d skip entries", s->awq_group_size,
                            REAP_GEN_MAX_AWQ_SKIP);
    for (int i = 0; i < s->n_awq_skip; i++)
        if (!memchr(s->awq_skip[i], 0, sizeof s->awq_skip[i]))
            return reap_err_set(REAP_E_INVALID, "genmodel: AWQ skip entry %d too long", i);
    for (int L = 0; L < s->n_layers; L++) {
        moe |= spec_layer_is_moe(s, L);
        dense |= !spec_layer_is_moe(s, L);
    }
    if (s->awq_attention &&
        ((rc = awq_dims_ok(s, "q_proj", qd, H)) || (rc = awq_dims_ok(s, "k/v_proj", kvd, H)) ||
         (rc = awq_dims_ok(s, "o_proj", H, qd))))
        return rc;
    if (moe && spec_layout(s) == REAP_EXPERTS_SPLIT &&
        ((rc = awq_dims_ok(s, "expert gate/up_proj", I, H)) ||
         (rc = awq_dims_ok(s, "expert down_proj", H, I))))
        return rc;
    if (dense && ((rc = awq_dims_ok(s, "mlp gate/up_proj", Id, H)) ||
                  (rc = awq_dims_ok(s, "mlp down_proj", H, Id))))
        return rc;
    return REAP_OK;
}

int reap_gen_spec_check(const reap_gen_spec *s)
{
#define NEED(cond, ...)                                          \
    do {                                                         \
        if (!(cond))                                             \
            return reap_err_set(REAP_E_INVALID, __VA_ARGS__);    \
    } while (0)
    NEED(s->family == REAP_FAMILY_QWEN3_MOE || s->family == REAP_FAMILY_QWEN3_VL_MOE,
         "genmodel: unknown family %d", (int)s->family);
    NEED(s->layout == 0 || s->layout == REAP_EXPERTS_SPLIT || s->layout == REAP_EXPERTS_FUSED,
         "genmodel: unknown layout %d", (int)s->layout);
    NEED(s->n_layers >= 1 && s->n_layers <= 10000, "genmodel: n_layers %d out of range",
         s->n_layers);
    NEED(s->hidden >= 1, "genmodel: hidden %d must be >= 1", s->hidden);
    NEED(s->n_heads >= 1 && s->n_kv_heads >= 1 && s->n_heads % s->n_kv_heads == 0,
         "genmodel: n_heads %d must be a positive multiple of n_kv_heads %d", s->n_heads,
         s->n_kv_heads);
    NEED(s->head_dim >= 2 && s->head_dim % 2 == 0, "genmodel: head_dim %d must be even",
         s->head_dim);
    NEED(s->n_experts >= 1 && s->top_k >= 1 && s->top_k <= s->n_experts,
         "genmodel: need 1 <= top_k (%d) <= n_experts (%d)", s->top_k, s->n_experts);
    NEED(s->moe_inter >= 1 && s->inter >= 1 && s->vocab >= 1,
         "genmodel: moe_inter, inter and vocab must be >= 1");
    NEED(s->decoder_sparse_step >= 1, "genmodel: decoder_sparse_step %d must be >= 1",
         s->decoder_sparse_step);
    NEED(s->n_mlp_only >= 0 && s->n_mlp_only <= REAP_GEN_MAX_MLP_ONLY,
         "genmodel: at most %d mlp_only_layers", REAP_GEN_MAX_MLP_ONLY);
    for (int i = 0; i < s->n_mlp_only; i++)
        NEED(s->mlp_only_layers[i] >= 0 && s->mlp_only_layers[i] < s->n_layers,
             "genmodel: mlp_only layer %d out of range 0..%d", s->mlp_only_layers[i],
             s->n_layers - 1);
    NEED(s->dtype == ST_BF16 || s->dtype == ST_F16 || s->dtype == ST_F32,
         "genmodel: dtype must be BF16, F16 or F32");
    NEED(s->rope_theta > 0 && s->rms_eps > 0, "genmodel: rope_theta and rms_eps must be > 0");
    int rc = awq_check(s);
    if (rc || (rc = vision_check(s)))
        return rc;
    const int n_tensors = count_tensors(s);
    if (n_tensors < 0)
        return reap_err_set(REAP_E_NOMEM, "genmodel: out of memory planning the tensors");
    NEED(s->n_shards >= 1 && s->n_shards <= n_tensors,
         "genmodel: n_shards %d must be within 1..%d (the number of tensors)", s->n_shards,
         n_tensors);
#undef NEED
    return REAP_OK;
}

int reap_gen_n_tensors(const reap_gen_spec *s)
{
    return reap_gen_spec_check(s) == REAP_OK ? count_tensors(s) : 0;
}

int reap_gen_model(const reap_gen_spec *s, const char *dir)
{
    gen_plan plan = { 0 };
    char path[4200];
    uint64_t total = 0;
    int rc;

    if ((rc = reap_gen_spec_check(s)) || (rc = mkdir_p(dir)))
        return rc;
    if ((rc = plan_build(s, &plan)))
        goto fail;
    plan_shard(&plan, s->n_shards, &total);
    for (int sh = 0; sh < s->n_shards; sh++)
        if ((rc = shard_write(s, &plan, sh, dir)))
            goto fail;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if ((rc = index_write(s, &plan, total, path)))
        goto fail;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = config_write(s, path)))
        goto fail;
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE && s->vision.enabled) {
        snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
        rc = preprocessor_write(s, path);
    }
fail:
    free(plan.t);
    return rc;
}

int reap_gen_calib(const char *path, int n_samples, int min_len, int max_len, int vocab,
                   uint64_t seed)
{
    gen_rng rng;
    reap_atomic af;
    int rc;

    if (n_samples < 1 || min_len < 1 || max_len < min_len || vocab < 1)
        return reap_err_set(REAP_E_INVALID, "genmodel: calib needs n_samples >= 1, "
                            "1 <= min_len <= max_len, vocab >= 1 (got %d, %d, %d, %d)",
                            n_samples, min_len, max_len, vocab);
    if ((rc = file_begin(path, &af)))
        return rc;
    FILE *fp = af.fp;
    gen_rng_seed(&rng, seed ^ 0xC0FFEE5EEDC0FFEEULL);
    for (int i = 0; i < n_samples; i++) {
        uint64_t span = (uint64_t)(max_len - min_len) + 1;
        int len = min_len + (int)(gen_rng_uniform(&rng) * (double)span);

        if (len > max_len)
            len = max_len;
        fputs("{\"input_ids\": [", fp);
        for (int j = 0; j < len; j++) {
            int id = (int)(gen_rng_uniform(&rng) * (double)vocab);
            if (id >= vocab)
                id = vocab - 1;
            fprintf(fp, j ? ", %d" : "%d", id);
        }
        fputs("]}\n", fp);
    }
    return file_commit(&af);
}

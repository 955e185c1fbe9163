/* genmodel.c - writes tiny deterministic Qwen3-MoE / Qwen3-VL-MoE test checkpoints and
 * calibration JSONL files (see genmodel.h for the contract).
 *
 * How it works: gen_plan() lists every tensor in model order with its shape and its
 * distribution; the list is cut into contiguous shards of roughly equal bytes; each
 * shard is written by st_write_file(), whose fill callback generates one tensor at a
 * time from a stream seeded by (seed, tensor name) and rounds it to the target dtype.
 * config.json and model.safetensors.index.json are built with jansson and written
 * atomically (temp file, fsync, rename, fsync of the directory).
 *
 * Dimension legend: V vocab, H hidden, nH query heads, nKV KV heads, hd head dim,
 * E experts, I expert width, Id dense MLP width.
 */
#include "genmodel.h"

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

/* ---- random numbers ------------------------------------------------------------------ */

/* splitmix64: seeds the xoshiro state (and mixes the per-tensor seed). */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* xoshiro256** (Blackman & Vigna). */
typedef struct gen_rng {
    uint64_t s[4];
    int have_spare;     /* Box-Muller produces normals in pairs */
    double spare;
} gen_rng;

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(gen_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

static void rng_seed(gen_rng *r, uint64_t seed)
{
    uint64_t sm = seed;

    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&sm);
    r->have_spare = 0;
    r->spare = 0.0;
}

/* Uniform in (0, 1): 53 random bits, offset by half a step so 0 never occurs. */
static double rng_uniform(gen_rng *r)
{
    return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Standard normal by Box-Muller; both values of a pair are used, in order. */
static double rng_normal(gen_rng *r)
{
    double u1, u2, rad;

    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    u1 = rng_uniform(r);
    u2 = rng_uniform(r);
    rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(2.0 * M_PI * u2);
    r->have_spare = 1;
    return rad * cos(2.0 * M_PI * u2);
}

/* FNV-1a 64-bit hash of a tensor name. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001B3ULL;
    }
    return h;
}

/* ---- the tensor plan ----------------------------------------------------------------- */

typedef enum gen_kind {
    GEN_GAUSS,      /* std * x */
    GEN_NORM_W      /* 1 + 0.1 x (RMSNorm weights) */
} gen_kind;

typedef struct gen_tensor {
    char name[160];
    int ndim;
    int64_t shape[5];
    gen_kind kind;
    double std;     /* GEN_GAUSS */
    int shard;      /* 0-based */
    uint64_t nbytes;
} gen_tensor;

typedef struct gen_plan {
    gen_tensor *t;
    int n, cap;
    int overflow;   /* a name did not fit (a bug) */
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
    p->n++;
    return REAP_OK;
}

static int dtype_size(st_dtype d)
{
    return d == ST_F32 ? 4 : 2;
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

#define SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })
#define ADD(kind, std, nd, shape, ...)                                            \
    do {                                                                          \
        if ((rc = plan_add(p, kind, std, nd, shape, __VA_ARGS__)))                \
            return rc;                                                            \
    } while (0)

/* List every tensor of the checkpoint in model order. */
static int plan_build(const reap_gen_spec *s, gen_plan *p)
{
    const char *pre = s->family == REAP_FAMILY_QWEN3_VL_MOE ? "model.language_model."
                                                            : "model.";
    int64_t H = s->hidden, V = s->vocab, hd = s->head_dim;
    int64_t q_out = (int64_t)s->n_heads * hd, kv_out = (int64_t)s->n_kv_heads * hd;
    int64_t E = s->n_experts, I = s->moe_inter, Id = s->inter;
    double sH = 1.0 / sqrt((double)H);
    int rc;

    ADD(GEN_GAUSS, 1.0, 2, SHAPE(V, H), "%sembed_tokens.weight", pre);
    for (int L = 0; L < s->n_layers; L++) {
        ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%slayers.%d.input_layernorm.weight", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%slayers.%d.post_attention_layernorm.weight",
            pre, L);
        ADD(GEN_GAUSS, sH, 2, SHAPE(q_out, H), "%slayers.%d.self_attn.q_proj.weight",
            pre, L);
        ADD(GEN_GAUSS, sH, 2, SHAPE(kv_out, H), "%slayers.%d.self_attn.k_proj.weight",
            pre, L);
        ADD(GEN_GAUSS, sH, 2, SHAPE(kv_out, H), "%slayers.%d.self_attn.v_proj.weight",
            pre, L);
        ADD(GEN_GAUSS, 1.0 / sqrt((double)q_out), 2, SHAPE(H, q_out),
            "%slayers.%d.self_attn.o_proj.weight", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(hd), "%slayers.%d.self_attn.q_norm.weight", pre, L);
        ADD(GEN_NORM_W, 0, 1, SHAPE(hd), "%slayers.%d.self_attn.k_norm.weight", pre, L);
        if (!spec_layer_is_moe(s, L)) {
            ADD(GEN_GAUSS, sH, 2, SHAPE(Id, H), "%slayers.%d.mlp.gate_proj.weight", pre, L);
            ADD(GEN_GAUSS, sH, 2, SHAPE(Id, H), "%slayers.%d.mlp.up_proj.weight", pre, L);
            ADD(GEN_GAUSS, 1.0 / sqrt((double)Id), 2, SHAPE(H, Id),
                "%slayers.%d.mlp.down_proj.weight", pre, L);
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
            ADD(GEN_GAUSS, sH, 2, SHAPE(I, H), "%slayers.%d.mlp.experts.%d.gate_proj.weight",
                pre, L, e);
            ADD(GEN_GAUSS, sH, 2, SHAPE(I, H), "%slayers.%d.mlp.experts.%d.up_proj.weight",
                pre, L, e);
            ADD(GEN_GAUSS, 1.0 / sqrt((double)I), 2, SHAPE(H, I),
                "%slayers.%d.mlp.experts.%d.down_proj.weight", pre, L, e);
        }
    }
    ADD(GEN_NORM_W, 0, 1, SHAPE(H), "%snorm.weight", pre);
    if (!s->tie_word_embeddings)
        ADD(GEN_GAUSS, sH, 2, SHAPE(V, H), "lm_head.weight");
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE) {
        /* vision tower stub: patch embedding of 3 channels x 2 frames x 4 x 4 pixels */
        ADD(GEN_GAUSS, 1.0 / sqrt(96.0), 5, SHAPE(16, 3, 2, 4, 4),
            "model.visual.patch_embed.proj.weight");
        ADD(GEN_GAUSS, 0.02, 1, SHAPE(16), "model.visual.patch_embed.proj.bias");
    }
    return REAP_OK;
}

#undef ADD
#undef SHAPE

/* Cut the plan into n contiguous non-empty shards of roughly equal bytes. */
static void plan_shard(gen_plan *p, int n_shards, st_dtype dtype, uint64_t *total)
{
    uint64_t sum = 0, acc = 0;
    int prev = -1;

    for (int i = 0; i < p->n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < p->t[i].ndim; d++)
            numel *= (uint64_t)p->t[i].shape[d];
        p->t[i].nbytes = numel * (uint64_t)dtype_size(dtype);
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

static int fsync_dir_of(const char *path)
{
    char buf[4096];
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    int fd;

    if (len >= sizeof buf)
        return REAP_OK;
    if (len == 0) {
        buf[0] = slash ? '/' : '.';
        buf[1] = '\0';
    } else {
        memcpy(buf, path, len);
        buf[len] = '\0';
    }
    fd = open(buf, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return reap_err_set(REAP_E_IO, "genmodel: open %s: %s", buf, strerror(errno));
    if (fsync(fd) != 0 && errno != EINVAL) {
        int e = errno;
        close(fd);
        return reap_err_set(REAP_E_IO, "genmodel: fsync %s: %s", buf, strerror(e));
    }
    close(fd);
    return REAP_OK;
}

/* Finish a FILE written to `tmp`: flush, fsync, close, rename to `path`, fsync dir.
 * Always closes fp; removes tmp on failure. */
static int file_commit(FILE *fp, const char *tmp, const char *path)
{
    int bad = fflush(fp) != 0 || ferror(fp) || fsync(fileno(fp)) != 0;
    int e = errno;

    if (fclose(fp) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return reap_err_set(REAP_E_IO, "genmodel: write %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return reap_err_set(REAP_E_IO, "genmodel: rename %s: %s", path, strerror(e));
    }
    return fsync_dir_of(path);
}

static int json_write_atomic(const json_t *root, const char *path)
{
    char tmp[4200];
    FILE *fp;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return reap_err_set(REAP_E_INVALID, "genmodel: path too long: %s", path);
    fp = fopen(tmp, "w");
    if (!fp)
        return reap_err_set(REAP_E_IO, "genmodel: open %s: %s", tmp, strerror(errno));
    if (json_dumpf(root, fp, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15)) != 0 || fputc('\n', fp) == EOF) {
        fclose(fp);
        unlink(tmp);
        return reap_err_set(REAP_E_IO, "genmodel: write %s failed", tmp);
    }
    return file_commit(fp, tmp, path);
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
        /* a stub: describes the two model.visual.* tensors, not a usable tower */
        bad |= json_object_set_new(vis, "model_type", json_string("qwen3_vl_moe"));
        bad |= json_object_set_new(vis, "depth", json_integer(0));
        bad |= json_object_set_new(vis, "hidden_size", json_integer(16));
        bad |= json_object_set_new(vis, "in_channels", json_integer(3));
        bad |= json_object_set_new(vis, "patch_size", json_integer(4));
        bad |= json_object_set_new(vis, "temporal_patch_size", json_integer(2));
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

typedef struct fill_ctx {
    const reap_gen_spec *spec;
    const gen_tensor **tensors;   /* [n] the shard's tensors, in spec order */
} fill_ctx;

static int fill_tensor(void *ud, size_t index, void *dst, uint64_t nbytes)
{
    const fill_ctx *c = ud;
    const gen_tensor *t = c->tensors[index];
    st_dtype dt = c->spec->dtype;
    unsigned char *out = dst;
    uint64_t numel = t->nbytes / (uint64_t)dtype_size(dt);
    gen_rng rng;

    if (nbytes != t->nbytes)
        return reap_err_set(REAP_E_INTERNAL, "genmodel: %s: asked for %llu bytes, not %llu",
                            t->name, (unsigned long long)nbytes,
                            (unsigned long long)t->nbytes);
    rng_seed(&rng, c->spec->seed ^ fnv1a64(t->name));
    for (uint64_t i = 0; i < numel; i++) {
        double x = rng_normal(&rng);
        float v = (float)(t->kind == GEN_NORM_W ? 1.0 + 0.1 * x : t->std * x);

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
    fill_ctx ctx = { s, ts };
    size_t n = 0;
    int rc;

    if (!specs || !ts) {
        rc = reap_err_set(REAP_E_NOMEM, "genmodel: out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        if (p->t[i].shard != shard)
            continue;
        specs[n].name = p->t[i].name;
        specs[n].dtype = s->dtype;
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
}

static int count_tensors(const reap_gen_spec *s)
{
    int n = 1 + 8 * s->n_layers + 1 + !s->tie_word_embeddings;

    for (int L = 0; L < s->n_layers; L++) {
        if (!spec_layer_is_moe(s, L))
            n += 3;
        else
            n += 1 + (spec_layout(s) == REAP_EXPERTS_FUSED ? 2 : 3 * s->n_experts);
    }
    if (s->family == REAP_FAMILY_QWEN3_VL_MOE)
        n += 2;
    return n;
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
    NEED(s->n_shards >= 1 && s->n_shards <= count_tensors(s),
         "genmodel: n_shards %d must be within 1..%d (the number of tensors)", s->n_shards,
         count_tensors(s));
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
    if (plan.n != count_tensors(s)) {
        rc = reap_err_set(REAP_E_INTERNAL, "genmodel: planned %d tensors, expected %d",
                          plan.n, count_tensors(s));
        goto fail;
    }
    plan_shard(&plan, s->n_shards, s->dtype, &total);
    for (int sh = 0; sh < s->n_shards; sh++)
        if ((rc = shard_write(s, &plan, sh, dir)))
            goto fail;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if ((rc = index_write(s, &plan, total, path)))
        goto fail;
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = config_write(s, path);
fail:
    free(plan.t);
    return rc;
}

int reap_gen_calib(const char *path, int n_samples, int min_len, int max_len, int vocab,
                   uint64_t seed)
{
    char tmp[4200];
    gen_rng rng;
    FILE *fp;

    if (n_samples < 1 || min_len < 1 || max_len < min_len || vocab < 1)
        return reap_err_set(REAP_E_INVALID, "genmodel: calib needs n_samples >= 1, "
                            "1 <= min_len <= max_len, vocab >= 1 (got %d, %d, %d, %d)",
                            n_samples, min_len, max_len, vocab);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return reap_err_set(REAP_E_INVALID, "genmodel: path too long: %s", path);
    fp = fopen(tmp, "w");
    if (!fp)
        return reap_err_set(REAP_E_IO, "genmodel: open %s: %s", tmp, strerror(errno));
    rng_seed(&rng, seed ^ 0xC0FFEE5EEDC0FFEEULL);
    for (int i = 0; i < n_samples; i++) {
        uint64_t span = (uint64_t)(max_len - min_len) + 1;
        int len = min_len + (int)(rng_uniform(&rng) * (double)span);

        if (len > max_len)
            len = max_len;
        fputs("{\"input_ids\": [", fp);
        for (int j = 0; j < len; j++) {
            int id = (int)(rng_uniform(&rng) * (double)vocab);
            if (id >= vocab)
                id = vocab - 1;
            fprintf(fp, j ? ", %d" : "%d", id);
        }
        fputs("]}\n", fp);
    }
    return file_commit(fp, tmp, path);
}

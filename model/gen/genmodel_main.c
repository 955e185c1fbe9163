/* genmodel_main.c - the `reap-genmodel` command: writes a tiny deterministic test
 * checkpoint (and optionally a calibration JSONL) with the genmodel library.
 *
 * One table (opts[]) drives parsing and --help (an option without an argument name is a
 * switch). Unset size flags keep the defaults of reap_gen_spec_default(); errors go to
 * stderr with exit status 2 (usage) or 1 (failure).
 */
#include "gen_images.h"
#include "genmodel.h"

#include "reap_err.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_id {
    O_OUT, O_FAMILY, O_LAYOUT, O_LAYERS, O_HIDDEN, O_HEADS, O_KV_HEADS, O_HEAD_DIM,
    O_EXPERTS, O_TOP_K, O_MOE_INTER, O_INTER, O_VOCAB, O_NORM_TOPK, O_SPARSE_STEP,
    O_MLP_ONLY, O_DTYPE, O_SHARDS, O_SEED, O_TIE, O_ROPE_THETA, O_RMS_EPS, O_CALIB,
    O_SAMPLES, O_MIN_LEN, O_MAX_LEN, O_CALIB_SEED, O_AWQ, O_AWQ_TWIN, O_GROUP_SIZE,
    O_AWQ_ATTN, O_AWQ_SKIP, O_VISION, O_VIS_DEPTH, O_VIS_HIDDEN, O_VIS_HEADS, O_VIS_INTER,
    O_VIS_PATCH, O_VIS_MERGE, O_VIS_POS_SIDE, O_VIS_DEEPSTACK, O_MIN_PIXELS, O_MAX_PIXELS,
    O_IMAGES, O_N_IMAGES, O_HELP, O_COUNT
};

static const struct opt {
    const char *flag, *arg, *help;
} opts[O_COUNT] = {
    [O_OUT] = { "--out", "DIR", "checkpoint directory to write (required)" },
    [O_FAMILY] = { "--family", "NAME", "qwen3_moe (default) or qwen3_vl_moe" },
    [O_LAYOUT] = { "--layout", "L", "split | fused experts (default: split for qwen3_moe, "
                                    "fused for qwen3_vl_moe)" },
    [O_LAYERS] = { "--layers", "N", "decoder layers (2)" },
    [O_HIDDEN] = { "--hidden", "H", "hidden size (64)" },
    [O_HEADS] = { "--heads", "N", "attention heads (4)" },
    [O_KV_HEADS] = { "--kv-heads", "N", "key/value heads (2)" },
    [O_HEAD_DIM] = { "--head-dim", "N", "head dimension, even (16)" },
    [O_EXPERTS] = { "--experts", "E", "experts per MoE layer (8)" },
    [O_TOP_K] = { "--top-k", "K", "experts per token (2)" },
    [O_MOE_INTER] = { "--moe-inter", "I", "expert intermediate size (32)" },
    [O_INTER] = { "--inter", "I", "dense MLP intermediate size (64)" },
    [O_VOCAB] = { "--vocab", "V", "vocabulary size (128)" },
    [O_NORM_TOPK] = { "--norm-topk", "0|1", "norm_topk_prob (1)" },
    [O_SPARSE_STEP] = { "--sparse-step", "S", "decoder_sparse_step (1)" },
    [O_MLP_ONLY] = { "--mlp-only", "L,L,..", "mlp_only_layers, comma separated (none)" },
    [O_DTYPE] = { "--dtype", "T", "bf16 (default) | f16 | f32" },
    [O_SHARDS] = { "--shards", "N", "number of safetensors shards (1)" },
    [O_SEED] = { "--seed", "S", "random seed (1)" },
    [O_TIE] = { "--tie", "0|1", "tie_word_embeddings: no lm_head.weight (0)" },
    [O_ROPE_THETA] = { "--rope-theta", "X", "rope_theta (10000; 5e6 for qwen3_vl_moe)" },
    [O_RMS_EPS] = { "--rms-eps", "X", "rms_norm_eps (1e-6)" },
    [O_CALIB] = { "--calib", "FILE", "also write a calibration JSONL file" },
    [O_SAMPLES] = { "--samples", "N", "calibration samples (8)" },
    [O_MIN_LEN] = { "--min-len", "A", "shortest sample (4)" },
    [O_MAX_LEN] = { "--max-len", "B", "longest sample (32)" },
    [O_CALIB_SEED] = { "--calib-seed", "S", "calibration seed (default: --seed)" },
    [O_AWQ] = { "--awq", NULL, "write an AWQ int4 (GEMM) checkpoint" },
    [O_AWQ_TWIN] = { "--awq-twin", NULL, "write the AWQ model dequantised (plain tensors, "
                                         "same values)" },
    [O_GROUP_SIZE] = { "--group-size", "G", "AWQ group size (128)" },
    [O_AWQ_ATTN] = { "--awq-attn", "0|1", "AWQ: quantise q/k/v/o_proj too (1)" },
    [O_AWQ_SKIP] = { "--awq-skip", "M,M,..", "AWQ: more modules_to_not_convert entries "
                                             "(written unquantised)" },
    [O_VISION] = { "--vision", NULL, "qwen3_vl_moe: write a real vision tower and "
                                     "preprocessor_config.json (default: a 2-tensor stub)" },
    [O_VIS_DEPTH] = { "--vis-depth", "N", "vision blocks (3)" },
    [O_VIS_HIDDEN] = { "--vis-hidden", "H", "vision hidden size (32)" },
    [O_VIS_HEADS] = { "--vis-heads", "N", "vision heads; hidden / heads a multiple of 4 (2)" },
    [O_VIS_INTER] = { "--vis-inter", "I", "vision MLP width (64)" },
    [O_VIS_PATCH] = { "--vis-patch", "P", "patch size in pixels (4)" },
    [O_VIS_MERGE] = { "--vis-merge", "M", "spatial merge size (2)" },
    [O_VIS_POS_SIDE] = { "--vis-pos-side", "S", "position table side; S*S embeddings (8)" },
    [O_VIS_DEEPSTACK] = { "--vis-deepstack", "B,B,..", "deepstack block indexes, increasing; "
                                                      "'none' for none (0,2)" },
    [O_MIN_PIXELS] = { "--min-pixels", "N", "preprocessor size.shortest_edge (1024)" },
    [O_MAX_PIXELS] = { "--max-pixels", "N", "preprocessor size.longest_edge (16384)" },
    [O_IMAGES] = { "--images", "DIR", "also write generated PNG/JPEG images and an image "
                                      "calibration file DIR/calib.jsonl" },
    [O_N_IMAGES] = { "--n-images", "N", "images to write with --images (6)" },
    [O_HELP] = { "--help", NULL, "show this help" },
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: reap-genmodel --out DIR [options]\n"
                "Writes a tiny deterministic Qwen3-MoE / Qwen3-VL-MoE checkpoint for tests.\n\n");
    for (int i = 0; i < O_COUNT; i++) {
        char left[40];
        snprintf(left, sizeof left, "%s%s%s", opts[i].flag, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(fp, "  %-22s %s\n", left, opts[i].help);
    }
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "reap-genmodel: %s: expected an integer in %ld..%ld, got '%s'\n",
                flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_double(const char *flag, const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    if (errno || end == s || *end || !(*out > 0)) {
        fprintf(stderr, "reap-genmodel: %s: expected a positive number, got '%s'\n", flag, s);
        return -1;
    }
    return 0;
}

static int parse_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "reap-genmodel: %s: expected an unsigned integer, got '%s'\n", flag, s);
        return -1;
    }
    return 0;
}

static int parse_list(const char *s, reap_gen_spec *spec)
{
    char buf[1024], *tok, *save = NULL;

    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "reap-genmodel: --mlp-only: list too long\n");
        return -1;
    }
    strcpy(buf, s);
    spec->n_mlp_only = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (spec->n_mlp_only == REAP_GEN_MAX_MLP_ONLY) {
            fprintf(stderr, "reap-genmodel: --mlp-only: at most %d layers\n",
                    REAP_GEN_MAX_MLP_ONLY);
            return -1;
        }
        if (parse_int("--mlp-only", tok, 0, INT_MAX,
                      &spec->mlp_only_layers[spec->n_mlp_only++]))
            return -1;
    }
    return 0;
}

/* --vis-deepstack: comma-separated block indexes, or "none". */
static int parse_deepstack(const char *s, reap_gen_spec *spec)
{
    char buf[256], *tok, *save = NULL;

    spec->vision.n_deepstack = 0;
    if (strcmp(s, "none") == 0)
        return 0;
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "reap-genmodel: --vis-deepstack: list too long\n");
        return -1;
    }
    strcpy(buf, s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (spec->vision.n_deepstack == REAP_GEN_MAX_DEEPSTACK) {
            fprintf(stderr, "reap-genmodel: --vis-deepstack: at most %d entries\n",
                    REAP_GEN_MAX_DEEPSTACK);
            return -1;
        }
        if (parse_int("--vis-deepstack", tok, 0, 1023,
                      &spec->vision.deepstack[spec->vision.n_deepstack++]))
            return -1;
    }
    return 0;
}

/* --awq-skip: comma-separated modules_to_not_convert entries. */
static int parse_skip(const char *s, reap_gen_spec *spec)
{
    char buf[2048], *tok, *save = NULL;

    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "reap-genmodel: --awq-skip: list too long\n");
        return -1;
    }
    strcpy(buf, s);
    spec->n_awq_skip = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (spec->n_awq_skip == REAP_GEN_MAX_AWQ_SKIP ||
            strlen(tok) >= sizeof spec->awq_skip[0]) {
            fprintf(stderr, "reap-genmodel: --awq-skip: at most %d entries of < %zu bytes\n",
                    REAP_GEN_MAX_AWQ_SKIP, sizeof spec->awq_skip[0]);
            return -1;
        }
        strcpy(spec->awq_skip[spec->n_awq_skip++], tok);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *val[O_COUNT] = { 0 };
    reap_gen_spec spec;
    reap_family family = REAP_FAMILY_QWEN3_MOE;
    int samples = 8, min_len = 4, max_len = 32, rc, n_moe = 0, n_images = 6;
    uint64_t calib_seed;

    for (int i = 1; i < argc; i++) {
        int id = -1;
        for (int k = 0; k < O_COUNT; k++)
            if (strcmp(argv[i], opts[k].flag) == 0)
                id = k;
        if (id == O_HELP || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (id < 0) {
            fprintf(stderr, "reap-genmodel: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
        if (!opts[id].arg) {        /* a switch */
            val[id] = "1";
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "reap-genmodel: %s needs a value %s\n", opts[id].flag,
                    opts[id].arg);
            return 2;
        }
        val[id] = argv[++i];
    }
    if (!val[O_OUT]) {
        fprintf(stderr, "reap-genmodel: --out DIR is required (see --help)\n");
        return 2;
    }
    if (val[O_FAMILY]) {
        if (strcmp(val[O_FAMILY], "qwen3_moe") == 0)
            family = REAP_FAMILY_QWEN3_MOE;
        else if (strcmp(val[O_FAMILY], "qwen3_vl_moe") == 0)
            family = REAP_FAMILY_QWEN3_VL_MOE;
        else {
            fprintf(stderr, "reap-genmodel: --family: qwen3_moe or qwen3_vl_moe, not '%s'\n",
                    val[O_FAMILY]);
            return 2;
        }
    }
    reap_gen_spec_default(&spec, family);
    if (val[O_LAYOUT]) {
        if (strcmp(val[O_LAYOUT], "split") == 0)
            spec.layout = REAP_EXPERTS_SPLIT;
        else if (strcmp(val[O_LAYOUT], "fused") == 0)
            spec.layout = REAP_EXPERTS_FUSED;
        else {
            fprintf(stderr, "reap-genmodel: --layout: split or fused, not '%s'\n",
                    val[O_LAYOUT]);
            return 2;
        }
    }
    if (val[O_DTYPE]) {
        if (strcmp(val[O_DTYPE], "bf16") == 0)
            spec.dtype = ST_BF16;
        else if (strcmp(val[O_DTYPE], "f16") == 0)
            spec.dtype = ST_F16;
        else if (strcmp(val[O_DTYPE], "f32") == 0)
            spec.dtype = ST_F32;
        else {
            fprintf(stderr, "reap-genmodel: --dtype: bf16, f16 or f32, not '%s'\n",
                    val[O_DTYPE]);
            return 2;
        }
    }
    {
        static const struct { int id; size_t off; long lo, hi; } ints[] = {
            { O_LAYERS, offsetof(reap_gen_spec, n_layers), 1, 10000 },
            { O_HIDDEN, offsetof(reap_gen_spec, hidden), 1, 1 << 20 },
            { O_HEADS, offsetof(reap_gen_spec, n_heads), 1, 4096 },
            { O_KV_HEADS, offsetof(reap_gen_spec, n_kv_heads), 1, 4096 },
            { O_HEAD_DIM, offsetof(reap_gen_spec, head_dim), 2, 1 << 16 },
            { O_EXPERTS, offsetof(reap_gen_spec, n_experts), 1, 1 << 16 },
            { O_TOP_K, offsetof(reap_gen_spec, top_k), 1, 1 << 16 },
            { O_MOE_INTER, offsetof(reap_gen_spec, moe_inter), 1, 1 << 20 },
            { O_INTER, offsetof(reap_gen_spec, inter), 1, 1 << 20 },
            { O_VOCAB, offsetof(reap_gen_spec, vocab), 1, 1 << 24 },
            { O_NORM_TOPK, offsetof(reap_gen_spec, norm_topk_prob), 0, 1 },
            { O_SPARSE_STEP, offsetof(reap_gen_spec, decoder_sparse_step), 1, 10000 },
            { O_SHARDS, offsetof(reap_gen_spec, n_shards), 1, 99999 },
            { O_TIE, offsetof(reap_gen_spec, tie_word_embeddings), 0, 1 },
            { O_GROUP_SIZE, offsetof(reap_gen_spec, awq_group_size), 1, 1 << 20 },
            { O_AWQ_ATTN, offsetof(reap_gen_spec, awq_attention), 0, 1 },
            { O_VIS_DEPTH, offsetof(reap_gen_spec, vision.depth), 1, 1024 },
            { O_VIS_HIDDEN, offsetof(reap_gen_spec, vision.hidden), 4, 65536 },
            { O_VIS_HEADS, offsetof(reap_gen_spec, vision.n_heads), 1, 1024 },
            { O_VIS_INTER, offsetof(reap_gen_spec, vision.inter), 1, 1 << 20 },
            { O_VIS_PATCH, offsetof(reap_gen_spec, vision.patch), 1, 1024 },
            { O_VIS_MERGE, offsetof(reap_gen_spec, vision.merge), 1, 16 },
            { O_VIS_POS_SIDE, offsetof(reap_gen_spec, vision.pos_side), 1, 1024 },
            { O_MIN_PIXELS, offsetof(reap_gen_spec, vision.min_pixels), 1, INT_MAX },
            { O_MAX_PIXELS, offsetof(reap_gen_spec, vision.max_pixels), 1, INT_MAX },
        };
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
            if (val[ints[k].id] &&
                parse_int(opts[ints[k].id].flag, val[ints[k].id], ints[k].lo, ints[k].hi,
                          (int *)((char *)&spec + ints[k].off)))
                return 2;
    }
    if ((val[O_MLP_ONLY] && parse_list(val[O_MLP_ONLY], &spec)) ||
        (val[O_SEED] && parse_u64("--seed", val[O_SEED], &spec.seed)) ||
        (val[O_ROPE_THETA] && parse_double("--rope-theta", val[O_ROPE_THETA],
                                           &spec.rope_theta)) ||
        (val[O_RMS_EPS] && parse_double("--rms-eps", val[O_RMS_EPS], &spec.rms_eps)) ||
        (val[O_SAMPLES] && parse_int("--samples", val[O_SAMPLES], 1, INT_MAX, &samples)) ||
        (val[O_MIN_LEN] && parse_int("--min-len", val[O_MIN_LEN], 1, INT_MAX, &min_len)) ||
        (val[O_MAX_LEN] && parse_int("--max-len", val[O_MAX_LEN], 1, INT_MAX, &max_len)))
        return 2;
    if (val[O_AWQ] && val[O_AWQ_TWIN]) {
        fprintf(stderr, "reap-genmodel: --awq and --awq-twin exclude each other\n");
        return 2;
    }
    spec.awq = val[O_AWQ] ? REAP_GEN_AWQ : val[O_AWQ_TWIN] ? REAP_GEN_AWQ_TWIN : REAP_GEN_PLAIN;
    if (!spec.awq && (val[O_GROUP_SIZE] || val[O_AWQ_ATTN] || val[O_AWQ_SKIP])) {
        fprintf(stderr, "reap-genmodel: --group-size/--awq-attn/--awq-skip need --awq or "
                        "--awq-twin\n");
        return 2;
    }
    if (val[O_AWQ_SKIP] && parse_skip(val[O_AWQ_SKIP], &spec))
        return 2;
    spec.vision.enabled = val[O_VISION] != NULL;
    for (int k = O_VIS_DEPTH; k <= O_MAX_PIXELS; k++)
        if (val[k] && !spec.vision.enabled) {
            fprintf(stderr, "reap-genmodel: %s needs --vision\n", opts[k].flag);
            return 2;
        }
    if (spec.vision.enabled && family != REAP_FAMILY_QWEN3_VL_MOE) {
        fprintf(stderr, "reap-genmodel: --vision needs --family qwen3_vl_moe\n");
        return 2;
    }
    if (val[O_VIS_DEEPSTACK] && parse_deepstack(val[O_VIS_DEEPSTACK], &spec))
        return 2;
    calib_seed = spec.seed;
    if (val[O_CALIB_SEED] && parse_u64("--calib-seed", val[O_CALIB_SEED], &calib_seed))
        return 2;
    if (!val[O_CALIB] && (val[O_SAMPLES] || val[O_MIN_LEN] || val[O_MAX_LEN] ||
                          val[O_CALIB_SEED])) {
        fprintf(stderr, "reap-genmodel: --samples/--min-len/--max-len/--calib-seed "
                        "need --calib FILE\n");
        return 2;
    }
    if (val[O_N_IMAGES] && !val[O_IMAGES]) {
        fprintf(stderr, "reap-genmodel: --n-images needs --images DIR\n");
        return 2;
    }
    if (val[O_N_IMAGES] && parse_int("--n-images", val[O_N_IMAGES], 1, 10000, &n_images))
        return 2;
    if (min_len > max_len) {
        fprintf(stderr, "reap-genmodel: --min-len %d > --max-len %d\n", min_len, max_len);
        return 2;
    }
    if ((rc = reap_gen_spec_check(&spec))) {
        fprintf(stderr, "reap-genmodel: %s\n", reap_err_msg());
        return 2;
    }

    if ((rc = reap_gen_model(&spec, val[O_OUT]))) {
        fprintf(stderr, "reap-genmodel: %s: %s\n", reap_strerror(rc), reap_err_msg());
        return 1;
    }
    for (int L = 0; L < spec.n_layers; L++) {
        int dense = (L + 1) % spec.decoder_sparse_step != 0;
        for (int i = 0; i < spec.n_mlp_only; i++)
            dense |= spec.mlp_only_layers[i] == L;
        n_moe += !dense;
    }
    printf("wrote %s: %s, %s experts, %s%s, %d layers (%d MoE), H %d, heads %d/%d x %d, "
           "E %d top-%d, I %d, vocab %d, %d tensors in %d shard(s), seed %" PRIu64 "\n",
           val[O_OUT], family == REAP_FAMILY_QWEN3_MOE ? "qwen3_moe" : "qwen3_vl_moe",
           (spec.layout ? spec.layout : family == REAP_FAMILY_QWEN3_VL_MOE
                                            ? REAP_EXPERTS_FUSED : REAP_EXPERTS_SPLIT)
                   == REAP_EXPERTS_FUSED ? "fused" : "split",
           st_dtype_name(spec.dtype),
           spec.awq == REAP_GEN_AWQ ? " + AWQ int4" : spec.awq ? " (AWQ twin)" : "",
           spec.n_layers, n_moe, spec.hidden, spec.n_heads,
           spec.n_kv_heads, spec.head_dim, spec.n_experts, spec.top_k, spec.moe_inter,
           spec.vocab, reap_gen_n_tensors(&spec), spec.n_shards, spec.seed);
    if (spec.vision.enabled) {
        printf("vision tower: depth %d, hidden %d, heads %d, inter %d, patch %d x %d x %d, "
               "merge %d, %dx%d positions, deepstack [", spec.vision.depth,
               spec.vision.hidden, spec.vision.n_heads, spec.vision.inter,
               spec.vision.temporal_patch, spec.vision.patch, spec.vision.patch,
               spec.vision.merge, spec.vision.pos_side, spec.vision.pos_side);
        for (int k = 0; k < spec.vision.n_deepstack; k++)
            printf("%s%d", k ? ", " : "", spec.vision.deepstack[k]);
        printf("]; pixels %d..%d\n", spec.vision.min_pixels, spec.vision.max_pixels);
    }
    if (val[O_CALIB]) {
        if ((rc = reap_gen_calib(val[O_CALIB], samples, min_len, max_len, spec.vocab,
                                 calib_seed))) {
            fprintf(stderr, "reap-genmodel: %s: %s\n", reap_strerror(rc), reap_err_msg());
            return 1;
        }
        printf("wrote %s: %d samples of %d..%d tokens, seed %" PRIu64 "\n", val[O_CALIB],
               samples, min_len, max_len, calib_seed);
    }
    if (val[O_IMAGES]) {
        if ((rc = reap_gen_images(val[O_IMAGES], n_images, calib_seed))) {
            fprintf(stderr, "reap-genmodel: %s: %s\n", reap_strerror(rc), reap_err_msg());
            return 1;
        }
        printf("wrote %s: %d PNG/JPEG images and calib.jsonl\n", val[O_IMAGES], n_images);
    }
    return 0;
}

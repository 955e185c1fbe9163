/* test_awq.c - AWQ int4 checkpoints (docs/awq.md): configuration, views, dequantisation,
 * the generator's AWQ checkpoints and twins, the CPU backend, and the pruner's AWQ rules.
 *
 *   - quantization_config: awq with either key spelling (bits / w_bit, group_size /
 *     q_group_size, version in any case), nested in text_config, modules_to_not_convert
 *     matched by substring; refusals naming the method (gptq, compressed-tensors, fp8,
 *     compression_config) and the unsupported settings (bits 8, version gemv, zero_point
 *     false, group_size -1), format errors; the 235B fixture config;
 *   - dequantisation of hand-packed words (the AutoAWQ order written out as constants,
 *     not computed with the project's packer; negative int32 words; f16 scales), rows
 *     ranges, and a non-finite scale named in the error;
 *   - generated AWQ checkpoints (split experts, dense layer, skipped modules; fused VL;
 *     attention unquantised): which linears are AWQ, and every dequantised linear equal
 *     bit for bit to the dequantised twin's plain tensor; scoring the two gives identical
 *     statistics;
 *   - reader refusals: AWQ tensors without an AWQ config, a module stored as AWQ that
 *     modules_to_not_convert names, a group size that contradicts the shapes, a quantised
 *     router;
 *   - pruning: the modules_to_not_convert rules (renumber, drop, expand) and the
 *     byte-exact config patch; a pruned AWQ checkpoint whose kept expert groups are
 *     byte-identical to their sources and which passes structural verification;
 *   - the CUDA memory plan's AWQ checkpoint bytes for the 235B fixture (CUDA builds).
 *
 * Usage: test_awq SCRATCH_DIR          the tests (label unit)
 *        test_awq dump MODEL OUT       write every AWQ linear of MODEL dequantised by the
 *                                      reader (fp32, "<module>.weight" [N, K]) into the
 *                                      safetensors file OUT, for tests/oracle/awq_pack.py
 *
 * One test binary per module (the house rule): AWQ touches config, weights, the
 * generator, the CPU backend and the pruner, and its cases share the generated AWQ
 * checkpoints and twins, so they live in one file.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "config.h"
#include "cuda/cuda_plan.h"
#include "engine.h"
#include "genmodel.h"
#include "keepset.h"
#include "reap_err.h"
#include "rewrite.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "verify.h"
#include "weights.h"

/* ---- quantization_config ------------------------------------------------------------- */

#define QWEN3_FIELDS                                                                     \
    "\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "      \
    "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, "          \
    "\"vocab_size\": 128, \"num_experts\": 8, \"num_experts_per_tok\": 2, "                \
    "\"moe_intermediate_size\": 32"

static const char *cfg_with(const char *name, const char *quant)
{
    static char text[4096];
    snprintf(text, sizeof text, "{" QWEN3_FIELDS "%s%s}\n", quant ? ", " : "",
             quant ? quant : "");
    const char *path = sp(name);
    write_text(path, text);
    return path;
}

static void expect_refusal(const char *name, const char *quant, int want, const char *needle)
{
    reap_config c, zero;
    memset(&zero, 0, sizeof zero);
    reap_err_clear();
    CHECK_RC(reap_config_load(cfg_with(name, quant), &c), want);
    CHECK_ERRMSG(needle);
    CHECK(memcmp(&c, &zero, sizeof c) == 0);
}

static void test_config(void)
{
    reap_config c;

    CHECK_RC(reap_config_load(cfg_with("q1.json", "\"quantization_config\": {\"quant_method\": "
                                       "\"awq\", \"bits\": 4, \"group_size\": 128, "
                                       "\"zero_point\": true, \"version\": \"gemm\", "
                                       "\"modules_to_not_convert\": [\"mlp.gate\", "
                                       "\"experts.3.\"]}"), &c),
             REAP_OK);
    CHECK(c.quant.method == REAP_QUANT_AWQ && c.quant.bits == 4 && c.quant.group_size == 128);
    CHECK(c.quant.zero_point == 1 && !strcmp(c.quant.version, "gemm"));
    CHECK(c.quant.n_not_convert == 2 && !strcmp(c.quant.not_convert[1], "experts.3."));
    CHECK(reap_config_not_converted(&c, "model.layers.0.mlp.gate") == 0);
    CHECK(reap_config_not_converted(&c, "model.layers.1.mlp.experts.3.up_proj") == 1);
    CHECK(reap_config_not_converted(&c, "model.layers.1.mlp.experts.13.up_proj") == -1);
    CHECK(reap_config_not_converted(&c, "model.layers.1.self_attn.q_proj") == -1);
    reap_config_free(&c);
    CHECK(c.quant.not_convert == NULL && c.quant.method == REAP_QUANT_NONE);

    /* AutoAWQ's own key names, upper-case method and version, null list */
    CHECK_RC(reap_config_load(cfg_with("q2.json", "\"quantization_config\": {\"quant_method\": "
                                       "\"AWQ\", \"w_bit\": 4, \"q_group_size\": 64, "
                                       "\"version\": \"GEMM\", \"modules_to_not_convert\": "
                                       "null}"), &c),
             REAP_OK);
    CHECK(c.quant.method == REAP_QUANT_AWQ && c.quant.group_size == 64);
    CHECK(c.quant.zero_point == 1 && !strcmp(c.quant.version, "gemm"));
    CHECK(c.quant.n_not_convert == 0 && reap_config_not_converted(&c, "x") == -1);
    reap_config_free(&c);

    /* no quantization_config */
    CHECK_RC(reap_config_load(cfg_with("q3.json", NULL), &c), REAP_OK);
    CHECK(c.quant.method == REAP_QUANT_NONE);
    CHECK(reap_config_not_converted(&c, "model.layers.0.mlp.gate") == -1);
    reap_config_free(&c);

    /* nested in text_config (qwen3_vl_moe) */
    write_text(sp("q4.json"),
               "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"hidden_size\": 64, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128, "
               "\"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": "
               "32, \"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4, "
               "\"group_size\": 32}}}");
    CHECK_RC(reap_config_load(sp("q4.json"), &c), REAP_OK);
    CHECK(c.quant.method == REAP_QUANT_AWQ && c.quant.group_size == 32);
    reap_config_free(&c);

    expect_refusal("r1.json", "\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": "
                   "4, \"group_size\": 128}", REAP_E_UNSUPPORTED, "\"gptq\" is not supported");
    expect_refusal("r2.json", "\"quantization_config\": {\"quant_method\": "
                   "\"compressed-tensors\", \"format\": \"pack-quantized\"}",
                   REAP_E_UNSUPPORTED, "\"compressed-tensors\" is not supported");
    expect_refusal("r3.json", "\"quantization_config\": {\"quant_method\": \"fp8\"}",
                   REAP_E_UNSUPPORTED, "\"fp8\"");
    expect_refusal("r4.json", "\"compression_config\": {\"format\": \"pack-quantized\"}",
                   REAP_E_UNSUPPORTED, "compressed-tensors");
    expect_refusal("r5.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "8, \"group_size\": 128}", REAP_E_UNSUPPORTED, "bits = 8");
    expect_refusal("r6.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4, \"group_size\": 128, \"version\": \"gemv\"}", REAP_E_UNSUPPORTED,
                   "\"gemv\"");
    expect_refusal("r7.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4, \"group_size\": 128, \"zero_point\": false}", REAP_E_UNSUPPORTED,
                   "zero_point = false");
    expect_refusal("r8.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4}", REAP_E_FORMAT, "group_size");
    expect_refusal("r9.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4, \"group_size\": -1}", REAP_E_UNSUPPORTED, "group_size = -1");
    expect_refusal("r10.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4, \"group_size\": 128, \"modules_to_not_convert\": \"mlp.gate\"}",
                   REAP_E_FORMAT, "modules_to_not_convert must be an array");
    expect_refusal("r11.json", "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": "
                   "4, \"group_size\": 128, \"modules_to_not_convert\": [1]}", REAP_E_FORMAT,
                   "modules_to_not_convert[0] must be a string");
    expect_refusal("r12.json", "\"quantization_config\": {\"bits\": 4}", REAP_E_FORMAT,
                   "quant_method");
    expect_refusal("r13.json", "\"quantization_config\": \"awq\"", REAP_E_FORMAT,
                   "must be an object");
}

/* The 235B fixture: the real language-model dimensions, AWQ group 128. */
static void test_fixture(void)
{
    char path[4096];
    const char *src = __FILE__, *slash = strrchr(src, '/');
    reap_config c;
    snprintf(path, sizeof path, "%.*s/fixtures/qwen3-vl-235b-a22b-awq/config.json",
             slash ? (int)(slash - src) : 1, slash ? src : ".");
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.family == REAP_FAMILY_QWEN3_VL_MOE && !strcmp(c.prefix, "model.language_model."));
    CHECK(c.n_layers == 94 && c.hidden == 4096 && c.n_heads == 64 && c.n_kv_heads == 4);
    CHECK(c.head_dim == 128 && c.n_experts == 128 && c.n_experts_used == 8);
    CHECK(c.moe_inter == 1536 && c.vocab == 151936 && c.rms_eps == 1e-6);
    CHECK(c.rope_theta == 5e6 && c.norm_topk_prob == 1 && reap_config_n_moe_layers(&c) == 94);
    CHECK(c.quant.method == REAP_QUANT_AWQ && c.quant.group_size == 128);
    CHECK(reap_config_not_converted(&c, "model.language_model.layers.5.mlp.gate") >= 0);
    CHECK(reap_config_not_converted(&c, "model.language_model.layers.5.mlp.experts.7.up_proj")
          < 0);
    CHECK(reap_config_not_converted(&c, "model.language_model.layers.5.self_attn.q_proj") < 0);

    /* CUDA plan: the stored bytes of one MoE layer, int4 (computed here term by term) */
    reap_cuda_plan p;
    reap_cuda_plan_req req = {.n_rows = 300, .seq_len = 2048, .precision = REAP_PRECISION_BF16,
                              .prefetch_layers = 1, .budget_bytes = (int64_t)140e9};
    int rc = reap_cuda_plan_make(&c, &req, &p);
    if (rc == REAP_E_UNSUPPORTED) {
        printf("cuda plan: not in this build (skipped)\n");
    } else {
        CHECK_RC(rc, REAP_OK);
        /* linear [N, K]: K*N/2 int4 + (K/128)*(N/8)*4 zeros + (K/128)*N*2 scales */
#define AWQB(N, K) ((int64_t)(K) * (N) / 2 + ((K) / 128) * ((N) / 8) * 4 + ((K) / 128) * (N) * 2)
        const int64_t want = 2 * (2 * 4096 + 2 * 128) + 2 * 128 * 4096 + AWQB(8192, 4096) +
                             2 * AWQB(512, 4096) + AWQB(4096, 8192) +
                             128 * (2 * AWQB(1536, 4096) + AWQB(4096, 1536));
#undef AWQB
        CHECK_MSG(p.moe_awq_bytes == want, "moe_awq_bytes %lld, want %lld",
                  (long long)p.moe_awq_bytes, (long long)want);
        printf("235B fixture: MoE layer %.3f GB as AWQ int4, %.3f GB in bf16, %.3f GB on the "
               "device (bf16)\n", p.moe_awq_bytes / 1e9, p.moe_ckpt_bytes / 1e9,
               p.moe_layer_bytes / 1e9);
    }
    reap_config_free(&c);
}

/* ---- dequantisation of hand-packed words --------------------------------------------- */

static st_tensor mk(const char *name, st_dtype dt, int64_t a, int64_t b, const void *data,
                    unsigned esz)
{
    st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = dt;
    t.ndim = 2;
    t.shape[0] = a;
    t.shape[1] = b;
    t.numel = a * b;
    t.nbytes = (uint64_t)(a * b) * esz;
    t.data = data;
    return t;
}

static void test_dequant_known(void)
{
    /* K = 8 inputs, N = 16 outputs, g = 4: qweight [8, 2], qzeros [2, 2], scales [2, 16].
     * 0x75316420: nibbles (LSB first) 0 2 4 6 1 3 5 7 = columns 0 2 4 6 1 3 5 7 of the
     * AutoAWQ order, so column j holds j. 0xFEDCBA98 (negative as int32): column j holds
     * 8 + (0 4 1 5 2 6 3 7)[j]. */
    static const int tab[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    uint32_t qw[8][2], qz[2][2];
    uint16_t sc[2][16];
    for (int k = 0; k < 8; k++) {
        qw[k][0] = k % 2 ? 0xFEDCBA98u : 0x75316420u;
        qw[k][1] = k % 2 ? 0x75316420u : 0xFEDCBA98u;
    }
    qz[0][0] = 0x11111111u;  /* zero 1 everywhere */
    qz[0][1] = 0x00000000u;
    qz[1][0] = 0x88888888u;  /* zero 8 */
    qz[1][1] = 0xFFFFFFFFu;  /* zero 15 */
    for (int n = 0; n < 16; n++) {
        sc[0][n] = reap_f32_to_f16(0.25f * (float)(n + 1));
        sc[1][n] = reap_f32_to_f16(-0.0078125f * (float)(n + 3));
    }
    st_tensor tq = mk("t.qweight", ST_I32, 8, 2, qw, 4), tz = mk("t.qzeros", ST_I32, 2, 2, qz, 4),
              ts = mk("t.scales", ST_F16, 2, 16, sc, 2);
    reap_awq_linear a = {&tq, &tz, &ts, 8, 16, 4};
    float w[16 * 8], part[16 * 4];
    CHECK_RC(reap_awq_to_f32(&a, w), REAP_OK);
    int bad = 0;
    for (int n = 0; n < 16; n++)
        for (int k = 0; k < 8; k++) {
            const int j = n % 8, word_lo = (k % 2 == 0) == (n < 8);
            const int q = word_lo ? j : 8 + tab[j];
            const int z = k < 4 ? (n < 8 ? 1 : 0) : (n < 8 ? 8 : 15);
            const float s = k < 4 ? 0.25f * (float)(n + 1) : -0.0078125f * (float)(n + 3);
            bad += w[n * 8 + k] != (float)(q - z) * s;
        }
    CHECK_MSG(bad == 0, "%d of 128 hand-packed weights differ", bad);
    /* rows [4, 8) with a row stride of 4 */
    CHECK_RC(reap_awq_rows_to_f32(&a, 4, 8, part, 4), REAP_OK);
    bad = 0;
    for (int n = 0; n < 16; n++)
        for (int k = 4; k < 8; k++)
            bad += part[n * 4 + (k - 4)] != w[n * 8 + k];
    CHECK(bad == 0);
    CHECK_RC(reap_awq_rows_to_f32(&a, 2, 8, part, 6), REAP_E_INTERNAL); /* not group-aligned */
    /* through the linear accessor */
    float w2[16 * 8];
    CHECK_RC(reap_linear_to_f32(NULL, &a, w2), REAP_OK);
    CHECK(memcmp(w, w2, sizeof w) == 0);
    CHECK_RC(reap_linear_to_f32(NULL, NULL, w2), REAP_E_INTERNAL);
    /* a NaN scale is named */
    sc[1][5] = 0x7e00;
    CHECK_RC(reap_awq_to_f32(&a, w), REAP_E_NUMERIC);
    CHECK_ERRMSG("t.scales");
    CHECK_ERRMSG("element 21");
}

/* ---- generated AWQ checkpoints -------------------------------------------------------- */

/* n_awq per layer and, linear by linear, dequantised AWQ == the twin's plain tensor. */
static void compare_twin(const char *awq_dir, const char *twin_dir, const int *want_awq)
{
    model a, t;
    CHECK_RC(open_model(awq_dir, &a), REAP_OK);
    CHECK_RC(open_model(twin_dir, &t), REAP_OK);
    CHECK(a.cfg.quant.method == REAP_QUANT_AWQ && t.cfg.quant.method == REAP_QUANT_NONE);
    const int64_t H = a.cfg.hidden, I = a.cfg.moe_inter, E = a.cfg.n_experts;
    float *x = malloc((size_t)(3 * I * H + 1) * sizeof *x), *y = malloc((size_t)(3 * I * H + 1) *
                                                                         sizeof *y);
    float *big = NULL, *big2 = NULL;
    for (int L = 0; L < a.cfg.n_layers; L++) {
        reap_layer_weights wa, wt;
        CHECK_RC(reap_layer_weights_get(a.ck, &a.cfg, L, &wa), REAP_OK);
        CHECK_RC(reap_layer_weights_get(t.ck, &t.cfg, L, &wt), REAP_OK);
        CHECK_MSG(wa.n_awq == want_awq[L], "layer %d: %d AWQ linears, want %d", L, wa.n_awq,
                  want_awq[L]);
        CHECK(wt.n_awq == 0);
        const st_tensor *pa[] = {wa.q_proj, wa.k_proj, wa.v_proj, wa.o_proj,
                                 wa.mlp_gate, wa.mlp_up, wa.mlp_down};
        const st_tensor *pt[] = {wt.q_proj, wt.k_proj, wt.v_proj, wt.o_proj,
                                 wt.mlp_gate, wt.mlp_up, wt.mlp_down};
        const reap_awq_linear *qa[] = {&wa.q_awq, &wa.k_awq, &wa.v_awq, &wa.o_awq,
                                       &wa.mlp_gate_awq, &wa.mlp_up_awq, &wa.mlp_down_awq};
        for (int i = 0; i < 7; i++) {
            if (!pt[i])
                continue;
            CHECK((pa[i] != NULL) != (qa[i]->qweight != NULL)); /* exactly one view */
            big = realloc(big, (size_t)pt[i]->numel * sizeof *big);
            big2 = realloc(big2, (size_t)pt[i]->numel * sizeof *big2);
            CHECK_RC(reap_linear_to_f32(pa[i], qa[i], big), REAP_OK);
            CHECK_RC(reap_linear_to_f32(pt[i], NULL, big2), REAP_OK);
            CHECK_MSG(!memcmp(big, big2, (size_t)pt[i]->numel * sizeof *big),
                      "layer %d linear %d differs from the twin", L, i);
        }
        for (int e = 0; wa.is_moe && e < E; e++) {
            CHECK_RC(reap_expert_to_f32(&wa, &a.cfg, e, x, x + I * H, x + 2 * I * H), REAP_OK);
            CHECK_RC(reap_expert_to_f32(&wt, &t.cfg, e, y, y + I * H, y + 2 * I * H), REAP_OK);
            CHECK_MSG(!memcmp(x, y, (size_t)(3 * I * H) * sizeof *x),
                      "layer %d expert %d differs from the twin", L, e);
        }
        reap_layer_weights_free(&wa);
        reap_layer_weights_free(&wt);
    }
    free(x);
    free(y);
    free(big);
    free(big2);
    close_model(&a);
    close_model(&t);
}

/* Score both checkpoints on the CPU: statistics must be identical. */
static void score_same(const char *awq_dir, const char *twin_dir)
{
    model a, t;
    reap_rows rows;
    CHECK_RC(open_model(awq_dir, &a), REAP_OK);
    CHECK_RC(open_model(twin_dir, &t), REAP_OK);
    make_rows(&rows, a.cfg.vocab, 3, 24, 7, 20);
    reap_engine_opts o = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 2}};
    reap_layer_stats *sa = NULL, *st = NULL;
    int na = 0, nt = 0;
    CHECK_RC(reap_engine_score(a.ck, &a.cfg, &rows, &o, &sa, &na), REAP_OK);
    CHECK_RC(reap_engine_score(t.ck, &t.cfg, &rows, &o, &st, &nt), REAP_OK);
    CHECK(na == nt && na > 0);
    for (int i = 0; i < na && i < nt; i++) {
        const int E = sa[i].n_experts;
        CHECK(!memcmp(sa[i].count, st[i].count, (size_t)E * sizeof *sa[i].count));
        CHECK(!memcmp(sa[i].sum_gate_norm, st[i].sum_gate_norm, (size_t)E * sizeof(double)));
        CHECK(!memcmp(sa[i].sum_norm, st[i].sum_norm, (size_t)E * sizeof(double)));
        CHECK(!memcmp(sa[i].max_act, st[i].max_act, (size_t)E * sizeof *sa[i].max_act));
    }
    for (int i = 0; i < na; i++)
        reap_layer_stats_free(&sa[i]);
    for (int i = 0; i < nt; i++)
        reap_layer_stats_free(&st[i]);
    free(sa);
    free(st);
    free(rows.tokens);
    free(rows.mask);
    close_model(&a);
    close_model(&t);
}

static void gen_pair(const char *name, reap_gen_spec *s)
{
    char a[128], t[128];
    snprintf(a, sizeof a, "%s-awq", name);
    snprintf(t, sizeof t, "%s-twin", name);
    s->awq = REAP_GEN_AWQ;
    CHECK_RC(reap_gen_model(s, sp(a)), REAP_OK);
    s->awq = REAP_GEN_AWQ_TWIN;
    CHECK_RC(reap_gen_model(s, sp(t)), REAP_OK);
    s->awq = REAP_GEN_AWQ;
}

static void test_generated(void)
{
    reap_gen_spec s;

    /* split experts, a dense layer (its gate_proj matches "mlp.gate": plain), expert 2 of
     * layer 1 unquantised, 2 shards */
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.n_layers = 3;
    s.n_mlp_only = 1;
    s.mlp_only_layers[0] = 2;
    s.awq_group_size = 16;
    s.n_shards = 2;
    s.dtype = ST_F16;
    s.n_awq_skip = 1;
    snprintf(s.awq_skip[0], sizeof s.awq_skip[0], "layers.1.mlp.experts.2.");
    gen_pair("split", &s);
    const int want_split[3] = {4 + 24, 4 + 21, 4 + 2};
    compare_twin(sp("split-awq"), sp("split-twin"), want_split);
    score_same(sp("split-awq"), sp("split-twin"));

    /* Qwen3-VL with its fused (plain) experts, attention quantised, BF16 */
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.awq_group_size = 32;
    gen_pair("vlfused", &s);
    const int want_fused[2] = {4, 4};
    compare_twin(sp("vlfused-awq"), sp("vlfused-twin"), want_fused);
    score_same(sp("vlfused-awq"), sp("vlfused-twin"));

    /* Qwen3-VL with per-expert AWQ experts and plain attention */
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.layout = REAP_EXPERTS_SPLIT;
    s.awq_attention = 0;
    s.awq_group_size = 32;
    gen_pair("vlsplit", &s);
    const int want_vs[2] = {24, 24};
    compare_twin(sp("vlsplit-awq"), sp("vlsplit-twin"), want_vs);
    score_same(sp("vlsplit-awq"), sp("vlsplit-twin"));

    /* a group that does not divide an in_features is refused by the generator */
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.awq = REAP_GEN_AWQ;
    CHECK_RC(reap_gen_spec_check(&s), REAP_E_INVALID); /* g 128 > H 64 */
    CHECK_ERRMSG("group size 128");
}

/* ---- reader refusals ----------------------------------------------------------------- */

/* Rewrite <dir>/config.json through a JSON edit. */
static void edit_config(const char *dir, void (*edit)(json_t *root))
{
    char p[4400];
    json_error_t jerr;
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *root = json_load_file(p, 0, &jerr);
    CHECK(root != NULL);
    if (!root)
        return;
    edit(root);
    CHECK(json_dump_file(root, p, JSON_INDENT(2)) == 0);
    json_decref(root);
}

static void drop_quant(json_t *r) { json_object_del(r, "quantization_config"); }

static void skip_expert0(json_t *r)
{
    json_array_append_new(json_object_get(json_object_get(r, "quantization_config"),
                                          "modules_to_not_convert"),
                          json_string("mlp.experts.0."));
}

static void group32(json_t *r)
{
    json_object_set_new(json_object_get(r, "quantization_config"), "group_size",
                        json_integer(32));
}

static int expect_layer_error(const char *dir, int want, const char *needle)
{
    model m;
    reap_layer_weights w;
    int rc = open_model(dir, &m);
    CHECK_RC(rc, REAP_OK);
    if (rc)
        return rc;
    reap_err_clear();
    CHECK_RC(reap_layer_weights_get(m.ck, &m.cfg, 0, &w), want);
    CHECK_ERRMSG(needle);
    reap_layer_weights_free(&w);
    close_model(&m);
    return REAP_OK;
}

/* Copy every tensor of `src` into the single file `dst`, plus `extra` (I32 [2, 8]). */
typedef struct copy_ctx {
    const st_file *f;
    size_t n;
} copy_ctx;

static int copy_fill(void *ud, size_t i, void *dst, uint64_t nbytes)
{
    const copy_ctx *c = ud;
    if (i < c->n)
        memcpy(dst, st_file_tensor(c->f, i)->data, nbytes);
    else
        memset(dst, 0, nbytes);
    return REAP_OK;
}

static void test_reader_errors(void)
{
    reap_gen_spec s;
    char cmd[9000];
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.awq = REAP_GEN_AWQ;
    s.awq_group_size = 16;
    CHECK_RC(reap_gen_model(&s, sp("err1")), REAP_OK);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && cp -r '%s' '%s'", sp("err1"), sp("err2"),
             sp("err1"), sp("err3"));
    CHECK(system(cmd) == 0);
    edit_config(sp("err1"), drop_quant);
    expect_layer_error(sp("err1"), REAP_E_FORMAT, "has no AWQ quantization_config");
    edit_config(sp("err2"), skip_expert0);
    expect_layer_error(sp("err2"), REAP_E_FORMAT, "modules_to_not_convert names it");
    edit_config(sp("err3"), group32);
    expect_layer_error(sp("err3"), REAP_E_FORMAT, "(AWQ)");

    /* a quantised router: one file holding the model plus mlp.gate.qweight, no index */
    st_file *f = NULL;
    CHECK_RC(reap_gen_model(&s, sp("err4src")), REAP_OK);
    CHECK_RC(st_file_open(sp("err4src/model.safetensors"), &f), REAP_OK);
    if (!f)
        return;
    size_t n = st_file_n_tensors(f);
    st_write_spec *specs = calloc(n + 1, sizeof *specs);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_file_tensor(f, i);
        specs[i].name = t->name;
        specs[i].dtype = t->dtype;
        specs[i].ndim = t->ndim;
        memcpy(specs[i].shape, t->shape, sizeof specs[i].shape);
    }
    specs[n] = (st_write_spec){.name = "model.layers.0.mlp.gate.qweight", .dtype = ST_I32,
                               .ndim = 2, .shape = {2, 8}};
    copy_ctx cc = {f, n};
    CHECK(mkdir(sp("err4"), 0755) == 0 || errno == EEXIST);
    CHECK_RC(st_write_file(sp("err4/model.safetensors"), specs, n + 1, copy_fill, &cc),
             REAP_OK);
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", sp("err4src"), sp("err4"));
    CHECK(system(cmd) == 0);
    expect_layer_error(sp("err4"), REAP_E_UNSUPPORTED, "quantised router");
    free(specs);
    st_file_close(f);
}

/* ---- pruning ----------------------------------------------------------------------------- */

static int keep_l0[8] = {0, 2, 3, 5, 6, 8, 9, 11};
static int keep_l1[8] = {1, 2, 3, 4, 5, 6, 8, 10};

static void manual_keepset(reap_keepset *ks, reap_keep_layer *kl)
{
    memset(ks, 0, sizeof *ks);
    memset(kl, 0, 2 * sizeof *kl);
    kl[0].layer = 0;
    kl[0].keep = keep_l0;
    kl[1].layer = 1;
    kl[1].keep = keep_l1;
    ks->n_experts = 12;
    ks->n_keep = 8;
    ks->n_prune = 4;
    ks->top_k = 2;
    ks->n_layers = 2;
    ks->layers = kl;
}

static void test_not_convert_rules(void)
{
    reap_config c;
    reap_keepset ks;
    reap_keep_layer kl[2];
    char **out = NULL;
    int n_out = 0, changed = 0;
    write_text(sp("nc.json"), "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128, "
               "\"num_experts\": 12, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": "
               "32}");
    CHECK_RC(reap_config_load(sp("nc.json"), &c), REAP_OK);
    manual_keepset(&ks, kl);
    char *in[] = {"mlp.gate", "model.layers.0.mlp.experts.3.down_proj",
                  "model.layers.0.mlp.experts.4.down_proj", "layers.1.mlp.experts.10.",
                  "experts.1", "experts.5.", "visual.blocks.0"};
    const char *want[] = {
        "mlp.gate", "model.layers.0.mlp.experts.2.down_proj", /* 3 -> 2; 4 pruned: dropped */
        "layers.1.mlp.experts.7.",                             /* 10 -> 7 */
        /* "experts.1" is a prefix of 1, 10, 11: L0 keeps 11 (-> 7), L1 keeps 1, 10 */
        "model.layers.0.mlp.experts.7.gate_proj", "model.layers.0.mlp.experts.7.up_proj",
        "model.layers.0.mlp.experts.7.down_proj", "model.layers.1.mlp.experts.0.gate_proj",
        "model.layers.1.mlp.experts.0.up_proj", "model.layers.1.mlp.experts.0.down_proj",
        "model.layers.1.mlp.experts.7.gate_proj", "model.layers.1.mlp.experts.7.up_proj",
        "model.layers.1.mlp.experts.7.down_proj",
        /* "experts.5." is 5 in both layers: 3 in L0, 4 in L1 */
        "model.layers.0.mlp.experts.3.gate_proj", "model.layers.0.mlp.experts.3.up_proj",
        "model.layers.0.mlp.experts.3.down_proj", "model.layers.1.mlp.experts.4.gate_proj",
        "model.layers.1.mlp.experts.4.up_proj", "model.layers.1.mlp.experts.4.down_proj",
        "visual.blocks.0"};
    const int n_want = (int)(sizeof want / sizeof want[0]);
    CHECK_RC(reap_awq_not_convert_rewrite(&c, &ks, in, 7, &out, &n_out, &changed), REAP_OK);
    CHECK(changed == 1);
    CHECK_MSG(n_out == n_want, "%d entries, want %d", n_out, n_want);
    for (int i = 0; i < n_out && i < n_want; i++)
        CHECK_MSG(!strcmp(out[i], want[i]), "entry %d: '%s', want '%s'", i, out[i], want[i]);
    reap_strv_free(out, n_out);

    /* nothing names an expert: unchanged */
    char *in2[] = {"mlp.gate", "self_attn"};
    CHECK_RC(reap_awq_not_convert_rewrite(&c, &ks, in2, 2, &out, &n_out, &changed), REAP_OK);
    CHECK(changed == 0 && n_out == 2 && !strcmp(out[1], "self_attn"));
    reap_strv_free(out, n_out);
    reap_config_free(&c);
}

/* config.json patched: the expert count digits and the one array, every other byte kept */
static void test_config_patch(void)
{
    reap_config c;
    reap_keepset ks;
    reap_keep_layer kl[2];
    const char *text =
        "{\n    \"model_type\" : \"qwen3_moe\",\n    \"hidden_size\": 64,\n"
        "    \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128,\n"
        "    \"num_experts\":   12, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,\n"
        "    \"quantization_config\": {\n        \"quant_method\": \"awq\", \"bits\": 4,\n"
        "        \"group_size\": 16,\n        \"modules_to_not_convert\": [\n"
        "            \"mlp.gate\",\n            \"layers.0.mlp.experts.11.\"\n        ],\n"
        "        \"zero_point\": true\n    }\n}\n";
    const char *want =
        "{\n    \"model_type\" : \"qwen3_moe\",\n    \"hidden_size\": 64,\n"
        "    \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128,\n"
        "    \"num_experts\":   8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,\n"
        "    \"quantization_config\": {\n        \"quant_method\": \"awq\", \"bits\": 4,\n"
        "        \"group_size\": 16,\n        \"modules_to_not_convert\": [\"mlp.gate\", "
        "\"layers.0.mlp.experts.7.\"],\n"
        "        \"zero_point\": true\n    }\n}\n";
    write_text(sp("pc-in.json"), text);
    CHECK_RC(reap_config_load(sp("pc-in.json"), &c), REAP_OK);
    manual_keepset(&ks, kl);
    CHECK_RC(reap_config_patch_pruned(sp("pc-in.json"), sp("pc-out.json"), &c, &ks), REAP_OK);
    char *got = slurp(sp("pc-out.json"), NULL);
    CHECK_MSG(got && !strcmp(got, want), "patched config:\n%s", got ? got : "(none)");
    free(got);
    /* without expert entries the array is left byte for byte */
    write_text(sp("pc-in2.json"), "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128, "
               "\"num_experts\": 12, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": "
               "32, \"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4, "
               "\"group_size\": 16, \"modules_to_not_convert\": [ \"mlp.gate\" ]}}");
    reap_config_free(&c);
    CHECK_RC(reap_config_load(sp("pc-in2.json"), &c), REAP_OK);
    CHECK_RC(reap_config_patch_pruned(sp("pc-in2.json"), sp("pc-out2.json"), &c, &ks),
             REAP_OK);
    got = slurp(sp("pc-out2.json"), NULL);
    CHECK(got && strstr(got, "[ \"mlp.gate\" ]") && strstr(got, "\"num_experts\": 8,"));
    free(got);
    reap_config_free(&c);
}

/* Prune a generated AWQ checkpoint: kept groups byte-identical, structure verified. */
static void test_prune(void)
{
    reap_gen_spec s;
    model m, o;
    reap_keepset ks;
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.layout = REAP_EXPERTS_SPLIT;
    s.n_experts = 12;
    s.top_k = 3;
    s.awq = REAP_GEN_AWQ;
    s.awq_group_size = 16;
    s.n_shards = 3;
    s.n_awq_skip = 2;
    snprintf(s.awq_skip[0], sizeof s.awq_skip[0], "layers.0.mlp.experts.3.down_proj");
    snprintf(s.awq_skip[1], sizeof s.awq_skip[1], "experts.1");
    CHECK_RC(reap_gen_model(&s, sp("prune-in")), REAP_OK);
    CHECK_RC(open_model(sp("prune-in"), &m), REAP_OK);

    /* keep sets from made-up scores */
    const int nm = reap_config_n_moe_layers(&m.cfg);
    reap_layer_stats *st = calloc((size_t)nm, sizeof *st);
    for (int L = 0; L < nm; L++) {
        CHECK_RC(reap_layer_stats_init(&st[L], L, 12, 3), REAP_OK);
        for (int e = 0; e < 12; e++) {
            st[L].count[e] = 10;
            st[L].sum_gate_norm[e] = (double)((e * 5 + L * 7) % 12) + 1;
        }
    }
    reap_keep_opts ko = {.criterion = REAP_CRIT_REAP, .ratio = 0.4, .n_prune = -1};
    CHECK_RC(reap_keepset_compute(&m.cfg, st, nm, &ko, &ks), REAP_OK);
    CHECK(ks.n_keep == 8);
    CHECK(mkdir(sp("prune-out"), 0755) == 0 || errno == EEXIST);
    reap_rewrite_result res;
    CHECK_RC(reap_rewrite_checkpoint(m.ck, &m.cfg, &ks, sp("prune-out"), NULL, NULL, NULL, 0,
                                     &res),
             REAP_OK);
    CHECK_RC(reap_verify_structural(sp("prune-out"), m.ck, &m.cfg, &ks, NULL), REAP_OK);
    CHECK_RC(open_model(sp("prune-out"), &o), REAP_OK);
    CHECK(o.cfg.n_experts == 8 && o.cfg.quant.method == REAP_QUANT_AWQ &&
          o.cfg.quant.group_size == 16);
    /* every kept per-expert tensor is its source, byte for byte; no tensor of a pruned
     * expert survives; the unquantised experts keep their .weight under the new index */
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const part[4] = {"qweight", "qzeros", "scales", "weight"};
    int n_same = 0, n_groups = 0;
    for (int li = 0; li < ks.n_layers; li++) {
        const reap_keep_layer *kl = &ks.layers[li];
        for (int ni = 0; ni < 12; ni++)
            for (int p = 0; p < 3; p++)
                for (int q = 0; q < 4; q++) {
                    char nn[256], on[256];
                    snprintf(nn, sizeof nn, "model.language_model.layers.%d.mlp.experts.%d.%s.%s",
                             kl->layer, ni, proj[p], part[q]);
                    const st_tensor *t = reap_ckpt_find(o.ck, nn);
                    if (ni >= 8) {
                        CHECK(t == NULL);
                        continue;
                    }
                    snprintf(on, sizeof on, "model.language_model.layers.%d.mlp.experts.%d.%s.%s",
                             kl->layer, kl->keep[ni], proj[p], part[q]);
                    const st_tensor *src = reap_ckpt_find(m.ck, on);
                    CHECK_MSG((t == NULL) == (src == NULL), "%s vs %s", nn, on);
                    if (t && src) {
                        n_same += t->nbytes == src->nbytes && !memcmp(t->data, src->data,
                                                                      t->nbytes);
                        n_groups++;
                    }
                }
    }
    CHECK_MSG(n_same == n_groups && n_groups > 0, "%d of %d kept tensors identical", n_same,
              n_groups);
    /* the kept unquantised experts are listed under their new index: the reader accepted
     * every layer (verify) and each listed module is plain */
    for (int L = 0; L < o.cfg.n_layers; L++) {
        reap_layer_weights w;
        CHECK_RC(reap_layer_weights_get(o.ck, &o.cfg, L, &w), REAP_OK);
        for (int e = 0; e < 8; e++) {
            char mod[200];
            snprintf(mod, sizeof mod, "model.language_model.layers.%d.mlp.experts.%d.up_proj",
                     L, e);
            CHECK((reap_config_not_converted(&o.cfg, mod) >= 0) == (w.up[e] != NULL));
        }
        reap_layer_weights_free(&w);
    }
    for (int L = 0; L < nm; L++)
        reap_layer_stats_free(&st[L]);
    free(st);
    reap_keepset_free(&ks);
    close_model(&o);
    close_model(&m);
}

/* ---- dump mode -------------------------------------------------------------------------- */

typedef struct dump_lin {
    char name[200];
    const reap_awq_linear *a;
} dump_lin;

static int dump_fill(void *ud, size_t i, void *dst, uint64_t nbytes)
{
    const dump_lin *d = (const dump_lin *)ud + i;
    if (nbytes != (uint64_t)(d->a->in * d->a->out) * 4)
        return reap_err_set(REAP_E_INTERNAL, "dump: size of %s", d->name);
    return reap_awq_to_f32(d->a, dst);
}

static int dump(const char *dir, const char *out)
{
    model m;
    int rc = open_model(dir, &m), n = 0, cap = 0;
    reap_layer_weights *ws = NULL;
    dump_lin *lin = NULL;
    st_write_spec *specs = NULL;
    if (rc)
        goto done;
    ws = calloc((size_t)m.cfg.n_layers, sizeof *ws);
    if (!ws) {
        rc = REAP_E_NOMEM;
        goto done;
    }
    for (int L = 0; L < m.cfg.n_layers; L++) {
        reap_layer_weights *w = &ws[L];
        if ((rc = reap_layer_weights_get(m.ck, &m.cfg, L, w)))
            goto done;
        const reap_awq_linear *all[7] = {&w->q_awq, &w->k_awq, &w->v_awq, &w->o_awq,
                                         &w->mlp_gate_awq, &w->mlp_up_awq, &w->mlp_down_awq};
        int total = 7 + (w->gate_awq ? 3 * m.cfg.n_experts : 0);
        for (int i = 0; i < total; i++) {
            const reap_awq_linear *a = i < 7 ? all[i]
                                       : i < 7 + m.cfg.n_experts ? &w->gate_awq[i - 7]
                                       : i < 7 + 2 * m.cfg.n_experts
                                           ? &w->up_awq[i - 7 - m.cfg.n_experts]
                                           : &w->down_awq[i - 7 - 2 * m.cfg.n_experts];
            if (!a->qweight)
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                lin = realloc(lin, (size_t)cap * sizeof *lin);
                specs = realloc(specs, (size_t)cap * sizeof *specs);
                if (!lin || !specs) {
                    rc = REAP_E_NOMEM;
                    goto done;
                }
            }
            const char *qn = a->qweight->name;
            snprintf(lin[n].name, sizeof lin[n].name, "%.*s.weight",
                     (int)(strlen(qn) - strlen(".qweight")), qn);
            lin[n].a = a;
            n++;
        }
    }
    for (int i = 0; i < n; i++)
        specs[i] = (st_write_spec){.name = lin[i].name, .dtype = ST_F32, .ndim = 2,
                                   .shape = {lin[i].a->out, lin[i].a->in}};
    rc = st_write_file(out, specs, (size_t)n, dump_fill, lin);
    if (!rc)
        printf("test_awq dump: %d AWQ linears of %s -> %s\n", n, dir, out);
done:
    if (rc)
        fprintf(stderr, "test_awq dump: %s\n", reap_err_msg());
    for (int L = 0; ws && L < m.cfg.n_layers; L++)
        reap_layer_weights_free(&ws[L]);
    free(ws);
    free(lin);
    free(specs);
    close_model(&m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "dump"))
        return dump(argv[2], argv[3]);
    if (argc != 2) {
        fprintf(stderr, "usage: test_awq SCRATCH_DIR | test_awq dump MODEL OUT\n");
        return 2;
    }
    scratch = argv[1];
    if (fresh_dir(scratch) != 0)
        return 2;
    test_config();
    test_fixture();
    test_dequant_known();
    test_generated();
    test_reader_errors();
    test_not_convert_rules();
    test_config_patch();
    test_prune();
    TEST_MAIN_END();
}

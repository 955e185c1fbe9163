/* test_awq_cuda.c - the CUDA backend on AWQ int4 checkpoints (label gpu).
 *
 * The CUDA upload dequantises AWQ linears on the device (k_awq_dequant); the CPU backend
 * dequantises on the host (reap_awq_to_f32). Both give the exact values (q - z) * s, and
 * a generated AWQ checkpoint's "dequantised twin" holds exactly those values as plain
 * tensors. So, on generated checkpoints (Qwen3-VL per-expert AWQ experts with some left
 * unquantised, AWQ attention; Qwen3-MoE with an AWQ dense layer; Qwen3-VL fused plain
 * experts with AWQ attention):
 *   - CUDA on the AWQ checkpoint and CUDA on its twin: bit-identical statistics, in fp32
 *     and in bf16 mode (the weight sets on the device are the same bits);
 *   - CUDA fp32 against the CPU on the AWQ checkpoint: every sum within 1e-5 relative,
 *     counts exact;
 *   - prefetched uploads (prefetch_layers 1) bit-identical to direct ones;
 *   - a NaN scale: REAP_E_NUMERIC naming the scales tensor.
 *
 * Without a CUDA build or without a device it prints "SKIPPED: ..." and returns 77
 * (ctest SKIP_RETURN_CODE), never PASS.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "engine.h"
#include "genmodel.h"
#include "reap_err.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "weights.h"

typedef struct run {
    reap_layer_stats *st;
    int n;
} run;

static int score(const model *m, const reap_rows *rows, const reap_backend_i *be, int precision,
                 int prefetch, run *out)
{
    reap_engine_opts o = {.backend = be,
                          .backend_opts = {.device = 0, .precision = precision,
                                           .prefetch_layers = prefetch}};
    memset(out, 0, sizeof *out);
    return reap_engine_score(m->ck, &m->cfg, rows, &o, &out->st, &out->n);
}

static void run_free(run *r)
{
    for (int i = 0; i < r->n; i++)
        reap_layer_stats_free(&r->st[i]);
    free(r->st);
    memset(r, 0, sizeof *r);
}

static void same_bits(const run *a, const run *b, const char *what)
{
    CHECK_MSG(a->n == b->n, "%s: %d vs %d layers", what, a->n, b->n);
    for (int i = 0; i < a->n && i < b->n; i++) {
        const size_t E = (size_t)a->st[i].n_experts;
        int same = !memcmp(a->st[i].count, b->st[i].count, E * sizeof *a->st[i].count) &&
                   !memcmp(a->st[i].sum_gate_norm, b->st[i].sum_gate_norm, E * sizeof(double)) &&
                   !memcmp(a->st[i].sum_norm, b->st[i].sum_norm, E * sizeof(double)) &&
                   !memcmp(a->st[i].sum_gate, b->st[i].sum_gate, E * sizeof(double)) &&
                   !memcmp(a->st[i].max_act, b->st[i].max_act, E * sizeof *a->st[i].max_act);
        CHECK_MSG(same, "%s: layer %d statistics not bit-identical", what, a->st[i].layer);
    }
}

static void close_to(const run *gpu, const run *cpu, const char *what)
{
    double worst = 0;
    int counts = 1;
    CHECK(gpu->n == cpu->n);
    for (int i = 0; i < gpu->n && i < cpu->n; i++)
        for (int e = 0; e < gpu->st[i].n_experts; e++) {
            counts &= gpu->st[i].count[e] == cpu->st[i].count[e];
            worst = fmax(worst, rel_diff(gpu->st[i].sum_gate_norm[e],
                                         cpu->st[i].sum_gate_norm[e]));
            worst = fmax(worst, rel_diff(gpu->st[i].sum_norm[e], cpu->st[i].sum_norm[e]));
            worst = fmax(worst, rel_diff(gpu->st[i].sum_gate[e], cpu->st[i].sum_gate[e]));
        }
    CHECK_MSG(counts, "%s: counts differ", what);
    CHECK_MSG(worst <= 1e-5, "%s: relative error %.3g > 1e-5", what, worst);
    printf("%s: counts exact, max relative error %.3g\n", what, worst);
}

static void case_model(const char *name, reap_gen_spec *s)
{
    char a[256], t[256];
    model ma, mt;
    reap_rows rows;
    run cpu, g32, g32t, gbf, gbft, gpre;
    snprintf(a, sizeof a, "%s", sp(name));
    snprintf(t, sizeof t, "%s-twin", sp(name));
    s->awq = REAP_GEN_AWQ;
    CHECK_RC(reap_gen_model(s, a), REAP_OK);
    s->awq = REAP_GEN_AWQ_TWIN;
    CHECK_RC(reap_gen_model(s, t), REAP_OK);
    if (open_model(a, &ma) || open_model(t, &mt)) {
        CHECK(!"open generated models");
        return;
    }
    make_rows(&rows, ma.cfg.vocab, 3, 40, 11, 36);
    const reap_backend_i *cu = reap_backend_cuda();
    CHECK_RC(score(&ma, &rows, &reap_backend_cpu, REAP_PRECISION_FP32, -1, &cpu), REAP_OK);
    CHECK_RC(score(&ma, &rows, cu, REAP_PRECISION_FP32, -1, &g32), REAP_OK);
    CHECK_RC(score(&mt, &rows, cu, REAP_PRECISION_FP32, -1, &g32t), REAP_OK);
    CHECK_RC(score(&ma, &rows, cu, REAP_PRECISION_BF16, -1, &gbf), REAP_OK);
    CHECK_RC(score(&mt, &rows, cu, REAP_PRECISION_BF16, -1, &gbft), REAP_OK);
    CHECK_RC(score(&ma, &rows, cu, REAP_PRECISION_FP32, 1, &gpre), REAP_OK);
    char what[300];
    snprintf(what, sizeof what, "%s: cuda fp32 AWQ vs twin", name);
    same_bits(&g32, &g32t, what);
    snprintf(what, sizeof what, "%s: cuda bf16 AWQ vs twin", name);
    same_bits(&gbf, &gbft, what);
    snprintf(what, sizeof what, "%s: cuda fp32 prefetched vs direct", name);
    same_bits(&gpre, &g32, what);
    snprintf(what, sizeof what, "%s: cuda fp32 vs cpu on AWQ", name);
    close_to(&g32, &cpu, what);
    run_free(&cpu);
    run_free(&g32);
    run_free(&g32t);
    run_free(&gbf);
    run_free(&gbft);
    run_free(&gpre);
    free(rows.tokens);
    free(rows.mask);
    close_model(&ma);
    close_model(&mt);
}

/* A NaN in one scale of layer 0's q_proj: the upload flags it, the message names it. */
static void case_nan_scale(void)
{
    reap_gen_spec s;
    model m;
    reap_rows rows;
    run r;
    char path[4400], name[256];
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.awq = REAP_GEN_AWQ;
    s.awq_group_size = 16;
    CHECK_RC(reap_gen_model(&s, sp("nan")), REAP_OK);
    snprintf(path, sizeof path, "%s/model.safetensors", sp("nan"));
    st_file *f = NULL;
    CHECK_RC(st_file_open(path, &f), REAP_OK);
    if (!f)
        return;
    snprintf(name, sizeof name, "model.layers.0.self_attn.q_proj.scales");
    const st_tensor *t = st_file_find(f, name);
    const uint64_t off = t ? st_file_data_offset(f) + t->begin + 2 * 5 : 0;
    st_file_close(f);
    CHECK(t != NULL);
    FILE *fp = fopen(path, "r+b");
    CHECK(fp != NULL);
    if (!fp || !off)
        return;
    const unsigned char nan16[2] = {0x00, 0x7e};
    CHECK(fseek(fp, (long)off, SEEK_SET) == 0 && fwrite(nan16, 1, 2, fp) == 2);
    fclose(fp);
    CHECK_RC(open_model(sp("nan"), &m), REAP_OK);
    make_rows(&rows, m.cfg.vocab, 3, 40, 11, 36);
    reap_err_clear();
    CHECK_RC(score(&m, &rows, reap_backend_cuda(), REAP_PRECISION_FP32, -1, &r), REAP_E_NUMERIC);
    CHECK_ERRMSG("q_proj.scales");
    run_free(&r);
    free(rows.tokens);
    free(rows.mask);
    close_model(&m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_awq_cuda SCRATCH_DIR\n");
        return 2;
    }
    if (!reap_backend_cuda()) {
        printf("SKIPPED: this build has no CUDA backend\n");
        return 77;
    }
    if (reap_cuda_available() < 1) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    scratch = argv[1];
    if (fresh_dir(scratch) != 0)
        return 2;

    reap_gen_spec s;
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.layout = REAP_EXPERTS_SPLIT;
    s.n_layers = 3;
    s.n_experts = 12;
    s.top_k = 3;
    s.hidden = 128;
    s.moe_inter = 64;
    s.head_dim = 32;
    s.dtype = ST_F16;
    s.awq_group_size = 32;
    s.n_awq_skip = 1;
    snprintf(s.awq_skip[0], sizeof s.awq_skip[0], "experts.1");
    case_model("vlsplit", &s);

    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.n_layers = 3;
    s.n_mlp_only = 1;
    s.mlp_only_layers[0] = 1;
    s.awq_group_size = 16;
    case_model("dense", &s);

    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.awq_group_size = 64;
    case_model("vlfused", &s);

    case_nan_scale();
    TEST_MAIN_END();
}

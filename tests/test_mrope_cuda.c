/* test_mrope_cuda.c - images on the CUDA backend against the CPU reference (label gpu):
 * the image case of test_mrope_case.h (interleaved mRoPE over hand-made image spans, the
 * merged features replacing the image slots' embeddings through scatter_rows, two
 * deepstack sets added after layers 0 and 1) scored on both backends in fp32: every sum
 * and max_act within 1e-5 relative, counts exact; also with one row per CUDA
 * micro-batch (the chunk's slice of the (t, h, w) ids). The same comparison for the
 * text-only rows of the case (no spans) keeps the 1-D path covered.
 *
 * Without a CUDA build or without a device it prints "SKIPPED: ..." and returns 77
 * (ctest SKIP_RETURN_CODE), never PASS.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "calib.h"
#include "engine.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_mrope_case.h"
#include "test_util.h"

static int score_on(vl_case *v, const reap_backend_i *be, int batch_rows,
                    const reap_image_features *f, reap_layer_stats **st, int *n)
{
    reap_engine_opts o = {.backend = be,
                          .backend_opts = {.threads = 2, .batch_rows = batch_rows,
                                           .precision = REAP_PRECISION_FP32},
                          .image = f};
    return reap_engine_score(v->l.ck, &v->l.cfg, &v->l.rows, &o, st, n);
}

static double rel_err(double a, double b)
{
    double d = fabs(a - b), m = fmax(fabs(a), fabs(b));
    return m > 1e-30 ? d / m : d;
}

static void compare(const char *what, const reap_layer_stats *a, const reap_layer_stats *b,
                    int n)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        for (int e = 0; e < a[i].n_experts; e++) {
            CHECK_MSG(a[i].count[e] == b[i].count[e], "%s layer %d expert %d: count %lld "
                      "(cpu) vs %lld (cuda)", what, a[i].layer, e, (long long)a[i].count[e],
                      (long long)b[i].count[e]);
            const double p[4][2] = {{a[i].sum_gate_norm[e], b[i].sum_gate_norm[e]},
                                    {a[i].sum_norm[e], b[i].sum_norm[e]},
                                    {a[i].sum_gate[e], b[i].sum_gate[e]},
                                    {a[i].max_act[e], b[i].max_act[e]}};
            for (int k = 0; k < 4; k++) {
                if (a[i].count[e] == 0)
                    continue;
                double r = rel_err(p[k][0], p[k][1]);
                if (r > worst)
                    worst = r;
                CHECK_MSG(r <= 1e-5, "%s layer %d expert %d: value %d %.9g vs %.9g", what,
                          a[i].layer, e, k, p[k][0], p[k][1]);
            }
        }
    /* statistics by modality: the same image tokens, counts exact, values to 1e-5 */
    for (int i = 0; i < n; i++) {
        CHECK_MSG(reap_layer_stats_has_image(&a[i]) == reap_layer_stats_has_image(&b[i]),
                  "%s layer %d: image tokens on one backend only", what, a[i].layer);
        for (int m = 0; m < REAP_N_MODALITIES; m++) {
            reap_modality_stats va, vb;
            reap_layer_stats_modality(&a[i], (reap_modality)m, &va);
            reap_layer_stats_modality(&b[i], (reap_modality)m, &vb);
            CHECK_MSG(va.tokens == vb.tokens, "%s layer %d modality %d: tokens %lld vs %lld",
                      what, a[i].layer, m, (long long)va.tokens, (long long)vb.tokens);
            for (int e = 0; va.tokens > 0 && e < a[i].n_experts; e++) {
                CHECK_MSG(va.count[e] == vb.count[e], "%s layer %d modality %d expert %d: "
                          "count %lld vs %lld", what, a[i].layer, m, e,
                          (long long)va.count[e], (long long)vb.count[e]);
                if (va.count[e] == 0)
                    continue;
                const double r = fmax(fmax(rel_err(va.sum_gate_norm[e], vb.sum_gate_norm[e]),
                                           rel_err(va.sum_norm[e], vb.sum_norm[e])),
                                      fmax(rel_err(va.sum_gate[e], vb.sum_gate[e]),
                                           rel_err(va.max_act[e], vb.max_act[e])));
                if (r > worst)
                    worst = r;
                CHECK_MSG(r <= 1e-5, "%s layer %d modality %d expert %d: rel err %.3g", what,
                          a[i].layer, m, e, r);
            }
        }
    }
    printf("  %-36s worst rel err %.2e\n", what, worst);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "test_mrope_cuda.tmp";
    const reap_backend_i *cuda = reap_backend_cuda();
    if (!cuda) {
        printf("SKIPPED: this build has no CUDA backend\n");
        return 77;
    }
    if (reap_cuda_available() < 1) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    fresh_dir(scratch);
    vl_case v;
    vl_case_init(&v);
    reap_layer_stats *cpu = NULL, *gpu = NULL;
    int n_cpu = 0, n_gpu = 0;
    CHECK_RC(score_on(&v, &reap_backend_cpu, 8, &v.feat, &cpu, &n_cpu), REAP_OK);
    for (int batch = 8; batch >= 1; batch -= 7) {
        CHECK_RC(score_on(&v, cuda, batch, &v.feat, &gpu, &n_gpu), REAP_OK);
        if (n_cpu == 3 && n_gpu == 3)
            compare(batch == 1 ? "images, one row per chunk" : "images", cpu, gpu, 3);
        free_stats(gpu, n_gpu);
        gpu = NULL;
    }
    free_stats(cpu, n_cpu);

    int64_t n_spans = v.l.rows.n_spans; /* text only */
    v.l.rows.n_spans = 0;
    cpu = gpu = NULL;
    CHECK_RC(score_on(&v, &reap_backend_cpu, 8, NULL, &cpu, &n_cpu), REAP_OK);
    CHECK_RC(score_on(&v, cuda, 8, NULL, &gpu, &n_gpu), REAP_OK);
    if (n_cpu == 3 && n_gpu == 3)
        compare("text only", cpu, gpu, 3);
    v.l.rows.n_spans = n_spans;
    free_stats(cpu, n_cpu);
    free_stats(gpu, n_gpu);
    vl_case_free(&v);
    TEST_MAIN_END();
}

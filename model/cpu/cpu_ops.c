/* cpu_ops.c - reference implementations of the per-layer math (see cpu_ops.h). */
#include "cpu_ops.h"

#include <cblas.h>
#undef I /* cblas.h pulls in <complex.h>, whose macro I we do not use */
#include <math.h>
#include <string.h>

#include "parallel.h"

void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, int d, double eps)
{
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++)
            ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / d + eps));
        for (int i = 0; i < d; i++)
            yr[i] = w[i] * (xr[i] * inv);
    }
}

typedef struct {
    float *C;
    const float *A, *B;
    int64_t M, N, Kd, block;
} matmul_job;

static void matmul_blocks(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    const matmul_job *j = ud;
    for (int64_t b = begin; b < end; b++) {
        int64_t r0 = b * j->block;
        int64_t m = j->M - r0 < j->block ? j->M - r0 : j->block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)j->N, (int)j->Kd,
                    1.0f, j->A + r0 * j->Kd, (int)j->Kd, j->B, (int)j->Kd, 0.0f,
                    j->C + r0 * j->N, (int)j->N);
    }
}

void cpu_matmul_bt(int threads, int64_t block, float *C, const float *A, const float *B,
                   int64_t M, int64_t N, int64_t Kd)
{
    if (M == 0 || N == 0)
        return;
    matmul_job j = {C, A, B, M, N, Kd, block};
    reap_parallel_for(threads, (M + block - 1) / block, matmul_blocks, &j);
}

void cpu_rope_table(float *cos_t, float *sin_t, int S, int hd, double theta)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double inv_freq = pow(theta, -(2.0 * i) / hd);
        for (int p = 0; p < S; p++) {
            double a = p * inv_freq;
            cos_t[(int64_t)p * half + i] = (float)cos(a);
            sin_t[(int64_t)p * half + i] = (float)sin(a);
        }
    }
}

void cpu_rope_apply(float *v, const float *cos_t, const float *sin_t, const int32_t ids[3],
                    const uint8_t *plane, int hd)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        int64_t row = (int64_t)ids[plane[i]] * half + i;
        float c = cos_t[row], s = sin_t[row];
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
    }
}

void cpu_attention_head(float *out, int ldo, const float *q, int ldq, const float *k,
                        const float *v, int ldk, const uint8_t *mask, int S, int hd,
                        float scale, float *scores)
{
    /* scores[i, j] = q_i . k_j, then each row becomes its softmax over the visible keys
     * (j <= i, mask[j] == 1) with zeros elsewhere, then out = P V. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, hd, 1.0f, q, ldq, k, ldk,
                0.0f, scores, S);
    for (int i = 0; i < S; i++) {
        float *p = scores + (int64_t)i * S;
        if (!mask[i]) {
            memset(p, 0, (size_t)S * sizeof *p);
            continue;
        }
        float mx = -INFINITY;
        for (int j = 0; j <= i; j++)
            if (mask[j] && p[j] * scale > mx)
                mx = p[j] * scale;
        double sum = 0.0;
        for (int j = 0; j <= i; j++) {
            p[j] = mask[j] ? expf(p[j] * scale - mx) : 0.0f;
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j <= i; j++)
            p[j] *= inv;
        memset(p + i + 1, 0, (size_t)(S - i - 1) * sizeof *p);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, hd, S, 1.0f, scores, S, v, ldk,
                0.0f, out, ldo);
}

void cpu_router_topk(const float *logits, int E, int K, int renorm, int32_t *idx,
                     double *w)
{
    float mx = logits[0];
    for (int e = 1; e < E; e++)
        if (logits[e] > mx)
            mx = logits[e];
    double z = 0.0;
    if (!renorm)
        for (int e = 0; e < E; e++)
            z += exp((double)logits[e] - mx);
    /* Selection of the K largest logits; strict '>' keeps the lower index on ties. */
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k; j++)
                taken |= idx[j] == e;
            if (!taken && (best < 0 || logits[e] > logits[best]))
                best = e;
        }
        idx[k] = best;
        w[k] = exp((double)logits[best] - mx);
    }
    /* Renormalised: p_k / sum_topk p = exp(l_k) / sum_topk exp(l_j); the softmax
     * denominator over all E cancels, so it is left out: the weights then depend only on
     * the K selected logits (mx is the top-1 logit), and a pruned model that keeps a
     * token's K experts gives that token bit-identical weights. */
    double s = 0.0;
    if (renorm)
        for (int k = 0; k < K; k++)
            s += w[k];
    for (int k = 0; k < K; k++)
        w[k] /= renorm ? s : z;
}

void cpu_swiglu(float *a, const float *gu, int64_t n, int inter)
{
    for (int64_t r = 0; r < n; r++) {
        const float *g = gu + r * 2 * inter, *u = g + inter;
        float *ar = a + r * inter;
        for (int j = 0; j < inter; j++)
            ar[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
}

void cpu_norm_max(const float *x, int d, double *norm, float *max)
{
    double ss = 0.0;
    float mx = -INFINITY;
    for (int i = 0; i < d; i++) {
        ss += (double)x[i] * x[i];
        if (x[i] > mx)
            mx = x[i];
    }
    *norm = sqrt(ss);
    *max = mx;
}

int64_t cpu_first_nonfinite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

void cpu_blas_set_threads(int n) { openblas_set_num_threads(n); }

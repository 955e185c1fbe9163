/* test_gemm.c - the row-independent GEMM (model/cpu/cpu_gemm.h).
 *
 * The fast kernel (AVX2+FMA when this CPU has it) and the portable fmaf kernel equal the
 * naive reference bit for bit on many odd shapes (M, N, K from 1 to ~300, reductions
 * longer than one cache block, a large one) and for 1, 2 and 3 threads; a row's result
 * is identical wherever it sits in any M; packing by row ranges equals packing whole;
 * and the result agrees with OpenBLAS sgemm and with a float64 product within the error
 * bound of a K-term fp32 dot product: |c - c'| <= K * 2^-23 * sum_k |a_k b_k| for two
 * fp32 evaluations, K * 2^-24 * sum |a_k b_k| against the exact value.
 */
#include <cblas.h>
#undef I
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_gemm.h"
#include "test_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Uniform in [-1, 1), every 8th value scaled by 2^-10..2^10 so that sums see a wide
 * range of exponents (and so rounding depends on the order of the steps). */
static float rnd(void)
{
    float x = (float)(rng_next() >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
    if ((rng_next() & 7) == 0)
        x = ldexpf(x, (int)(rng_next() % 21) - 10);
    return x;
}

static float *rand_matrix(int64_t n)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = rnd();
    return x;
}

static float *packed(const float *B, int64_t N, int64_t K)
{
    float *bp = malloc((size_t)cpu_gemm_packed_len(N, K) * sizeof *bp + sizeof *bp);
    cpu_gemm_pack(bp, B, N, K);
    return bp;
}

/* Fast (auto) and portable kernels with 1, 2, 3 threads equal the reference. */
static int check_shape(int64_t M, int64_t N, int64_t K, int portable_too)
{
    float *A = rand_matrix(M * K), *B = rand_matrix(N * K), *bp = packed(B, N, K);
    float *ref = malloc((size_t)(M * N) * sizeof *ref), *C = malloc((size_t)(M * N) * sizeof *C);
    int ok = 1;
    cpu_gemm_ref(ref, A, B, M, N, K);
    const struct { cpu_gemm_kernel k; int threads; } runs[] = {
        {CPU_GEMM_AUTO, 1}, {CPU_GEMM_AUTO, 2}, {CPU_GEMM_AUTO, 3}, {CPU_GEMM_AVX2, 2},
        {CPU_GEMM_PORTABLE, 1}, {CPU_GEMM_PORTABLE, 2}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        if (runs[r].k == CPU_GEMM_PORTABLE && !portable_too)
            continue;
        for (int64_t i = 0; i < M * N; i++)
            C[i] = NAN; /* every element must be written */
        cpu_gemm_with(runs[r].k, runs[r].threads, C, A, bp, M, N, K);
        if (memcmp(C, ref, (size_t)(M * N) * sizeof *C)) {
            int64_t i = 0;
            while (memcmp(&C[i], &ref[i], sizeof *C) == 0)
                i++;
            fprintf(stderr, "M %lld N %lld K %lld kernel %d threads %d: element (%lld, %lld) "
                    "%.9g vs reference %.9g\n", (long long)M, (long long)N, (long long)K,
                    (int)runs[r].k, runs[r].threads, (long long)(i / N), (long long)(i % N),
                    (double)C[i], (double)ref[i]);
            ok = 0;
        }
    }
    free(A); free(B); free(bp); free(ref); free(C);
    return ok;
}

static void test_shapes(void)
{
    static const int64_t dims[] = {1, 2, 3, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 47, 95, 96, 97,
                                   128, 191, 193, 255, 257, 300};
    const int nd = (int)(sizeof dims / sizeof dims[0]);
    int n = 0, bad = 0;
    /* Every (M, N) pair with a few K each; K over a spread including 1 and > 256. */
    for (int i = 0; i < nd; i++)
        for (int j = 0; j < nd; j++) {
            int64_t K = dims[(i * 7 + j * 3) % nd];
            bad += !check_shape(dims[i], dims[j], K, (i + j) % 4 == 0);
            n++;
        }
    /* Odd random shapes. */
    for (int t = 0; t < 60; t++) {
        int64_t M = 1 + (int64_t)(rng_next() % 300), N = 1 + (int64_t)(rng_next() % 300),
                K = 1 + (int64_t)(rng_next() % 300);
        bad += !check_shape(M, N, K, t % 3 == 0);
        n++;
    }
    /* Reductions of more than one cache block (partial sums reloaded from C), and a
     * large one. */
    static const int64_t longk[][3] = {{7, 19, 1025}, {13, 33, 2049}, {101, 17, 3000},
                                       {6, 16, 1024}, {97, 50, 1500}, {500, 200, 2100}};
    for (size_t t = 0; t < sizeof longk / sizeof longk[0]; t++) {
        bad += !check_shape(longk[t][0], longk[t][1], longk[t][2], t < 3);
        n++;
    }
    CHECK_MSG(bad == 0, "%d of %d shapes differ from the reference", bad, n);
    printf("  %d of %d shapes bit-identical to the reference (kernel %s)\n", n - bad, n,
           cpu_gemm_kernel_name());
}

/* A fixed row at random positions in random M gives the same bits as alone. */
static void test_row_independence(void)
{
    const int64_t N = 200, K = 1100;
    float *row = rand_matrix(K), *B = rand_matrix(N * K), *bp = packed(B, N, K);
    float *alone = malloc((size_t)N * sizeof *alone);
    cpu_gemm(1, alone, row, bp, 1, N, K);
    int bad = 0, trials = 0;
    static const int64_t Ms[] = {2, 5, 6, 7, 95, 96, 97, 191, 256, 300};
    for (size_t t = 0; t < sizeof Ms / sizeof Ms[0]; t++)
        for (int rep = 0; rep < 4; rep++) {
            int64_t M = Ms[t], pos = (int64_t)(rng_next() % (uint64_t)M);
            int threads = 1 + rep % 3;
            float *A = rand_matrix(M * K), *C = malloc((size_t)(M * N) * sizeof *C);
            memcpy(A + pos * K, row, (size_t)K * sizeof *row);
            cpu_gemm(threads, C, A, bp, M, N, K);
            if (memcmp(C + pos * N, alone, (size_t)N * sizeof *C)) {
                fprintf(stderr, "row at %lld of %lld (threads %d) differs from alone\n",
                        (long long)pos, (long long)M, threads);
                bad++;
            }
            trials++;
            free(A); free(C);
        }
    CHECK_MSG(bad == 0, "%d of %d placements differ", bad, trials);
    free(row); free(B); free(bp); free(alone);
}

/* Packing [gate; up] in two calls (a panel straddling the seam) equals packing whole;
 * padding columns are zero. */
static void test_pack_rows(void)
{
    const int64_t I = 21, K = 37, N = 2 * I;
    float *B = rand_matrix(N * K);
    int64_t len = cpu_gemm_packed_len(N, K);
    CHECK(len == 48 * K);
    float *whole = malloc((size_t)len * sizeof *whole), *parts = malloc((size_t)len * sizeof *parts);
    memset(whole, 0x7f, (size_t)len * sizeof *whole);
    memset(parts, 0x55, (size_t)len * sizeof *parts);
    cpu_gemm_pack(whole, B, N, K);
    cpu_gemm_pack_rows(parts, N, K, 0, B, I);
    cpu_gemm_pack_rows(parts, N, K, I, B + I * K, I);
    CHECK(memcmp(whole, parts, (size_t)len * sizeof *whole) == 0);
    int pad_ok = 1;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = N % 16; j < 16; j++)
            pad_ok &= whole[2 * 16 * K + k * 16 + j] == 0.0f;
    CHECK(pad_ok);
    CHECK(whole[1 * 16 * K + 3 * 16 + 5] == B[(16 + 5) * K + 3]);
    free(B); free(whole); free(parts);
}

/* Against OpenBLAS and a float64 product, within the dot-product error bound. */
static void test_vs_blas(void)
{
    static const int64_t shapes[][3] = {{256, 1024, 1024}, {97, 64, 1024}, {33, 1000, 512},
                                        {5, 7, 3}, {200, 150, 3000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = rand_matrix(M * K), *B = rand_matrix(N * K), *bp = packed(B, N, K);
        float *C = malloc((size_t)(M * N) * sizeof *C), *Cb = malloc((size_t)(M * N) * sizeof *Cb);
        cpu_gemm(2, C, A, bp, M, N, K);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A,
                    (int)K, B, (int)K, 0.0f, Cb, (int)N);
        double worst_blas = 0, worst_exact = 0; /* error / (K u sum|ab|) */
        const double u = ldexp(1.0, -24);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double exact = 0, mag = 0;
                for (int64_t k = 0; k < K; k++) {
                    double p = (double)A[m * K + k] * B[n * K + k];
                    exact += p;
                    mag += fabs(p);
                }
                double unit = K * u * mag + 1e-300;
                double c = C[m * N + n], cb = Cb[m * N + n];
                if (fabs(c - cb) / (2 * unit) > worst_blas)
                    worst_blas = fabs(c - cb) / (2 * unit);
                if (fabs(c - exact) / unit > worst_exact)
                    worst_exact = fabs(c - exact) / unit;
            }
        CHECK_MSG(worst_blas <= 1.0, "M %lld N %lld K %lld: vs sgemm %.3g of the bound",
                  (long long)M, (long long)N, (long long)K, worst_blas);
        CHECK_MSG(worst_exact <= 1.0, "M %lld N %lld K %lld: vs float64 %.3g of the bound",
                  (long long)M, (long long)N, (long long)K, worst_exact);
        printf("  M %lld N %lld K %lld: error vs sgemm %.2e, vs float64 %.2e of the bound\n",
               (long long)M, (long long)N, (long long)K, worst_blas, worst_exact);
        free(A); free(B); free(bp); free(C); free(Cb);
    }
}

static void test_edges(void)
{
    float A[6] = {1, 2, 3, 4, 5, 6}, bp[32] = {0}, C[4] = {7, 7, 7, 7};
    /* K 0: C is zero. */
    cpu_gemm(2, C, A, bp, 2, 2, 0);
    CHECK(C[0] == 0.0f && C[1] == 0.0f && C[2] == 0.0f && C[3] == 0.0f);
    /* M 0 or N 0: nothing written. */
    C[0] = 7;
    cpu_gemm(2, C, A, bp, 0, 2, 3);
    cpu_gemm(2, C, A, bp, 2, 0, 3);
    CHECK(C[0] == 7.0f);
    /* The per-element sequence is fma from +0.0f: (-1) * 0 gives +0, not -0. */
    float a1 = -1.0f, b1 = 0.0f, c1 = 1.0f;
    float p1[16];
    cpu_gemm_pack(p1, &b1, 1, 1);
    cpu_gemm(1, &c1, &a1, p1, 1, 1, 1);
    CHECK(c1 == 0.0f && !signbit(c1));
}

int main(void)
{
    openblas_set_num_threads(1);
    test_edges();
    test_pack_rows();
    test_shapes();
    test_row_independence();
    test_vs_blas();
    TEST_MAIN_END();
}

/* test_mrope_case.h - the image case shared by test_mrope.c and test_mrope_cuda.c: a
 * generated qwen3_vl_moe model (3 layers, H 48, head_dim 16, so mrope_section [4, 2, 2];
 * 8 experts top-2; F32), 8 packed calibration samples in rows of SEQ_LEN, five images
 * with hand-made spans (place_images) and random merged and deepstack features
 * (reap_image_features in vl->feat). Header-only (static functions) for the two tests;
 * uses test_fixtures.h and test_util.h, which the including file includes first.
 * Thread rules: none (main thread only, like the fixtures).
 */
#ifndef REAP_TEST_MROPE_CASE_H
#define REAP_TEST_MROPE_CASE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "genmodel.h"

#define N_IMAGES 5
#define N_DEEP 2
#define MERGE 2
#define SEQ_LEN 40

/* Grids (t, h, w) of images 0..4 before merging: 6, 3, 1, 4 and 4 tokens. */
static const int GRID[N_IMAGES][3] = {{1, 4, 6}, {1, 6, 2}, {1, 2, 2}, {1, 4, 4}, {1, 2, 8}};

typedef struct {
    loaded l;
    int64_t n_tok;                   /* image tokens */
    float *merged;                   /* [n_tok, H] */
    float *deep[N_DEEP];             /* [n_tok, H] each */
    reap_image_features feat;
} vl_case;

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Slots [start, start + n) of `row` all valid. */
static int run_valid(const reap_rows *r, int row, int start, int n)
{
    if (start + n > r->seq_len)
        return 0;
    for (int j = 0; j < n; j++)
        if (!r->mask[(int64_t)row * r->seq_len + start + j])
            return 0;
    return 1;
}

/* Place the images along the rows, image N_IMAGES-1 first (so span order is not image
 * order), each after at least one text slot, images 2 and 1 back to back, image 0 in the
 * second row. */
static void place_images(reap_rows *r)
{
    r->images = calloc(N_IMAGES, sizeof *r->images);
    r->spans = calloc(N_IMAGES, sizeof *r->spans);
    if (!r->images || !r->spans)
        abort();
    r->n_images = N_IMAGES;
    for (int i = 0; i < N_IMAGES; i++) {
        r->images[i].grid_t = GRID[i][0];
        r->images[i].grid_h = GRID[i][1];
        r->images[i].grid_w = GRID[i][2];
        r->images[i].n_tokens = (int64_t)GRID[i][0] * (GRID[i][1] / MERGE) *
                                (GRID[i][2] / MERGE);
    }
    int row = 0, at = 1;
    for (int i = N_IMAGES - 1; i >= 0; i--) {
        const int n = (int)r->images[i].n_tokens;
        const int adjacent = i == 1; /* right after image 2 */
        if (i == 0 && row == 0) { /* the last image in the second row */
            row = 1;
            at = 1;
        }
        while (row < r->n_rows) {
            if (adjacent || (at >= 1 && run_valid(r, row, at - 1, 1)))
                if (run_valid(r, row, at, n))
                    break;
            if (++at >= r->seq_len) {
                row++;
                at = 1;
            }
        }
        if (row >= r->n_rows) {
            fprintf(stderr, "test_mrope: no room for image %d\n", i);
            abort();
        }
        r->spans[r->n_spans].row = row;
        r->spans[r->n_spans].start = at;
        r->spans[r->n_spans].image = i;
        r->n_spans++;
        at += n + (i == 2 ? 0 : 2);
    }
}

static void vl_case_init(vl_case *v)
{
    char dir[1024], calib[1024];
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_VL_MOE);
    spec.n_layers = 3;
    spec.hidden = 48;
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.head_dim = 16;
    spec.n_experts = 8;
    spec.top_k = 2;
    spec.moe_inter = 24;
    spec.dtype = ST_F32;
    spec.seed = 31;
    path_join(dir, sizeof dir, scratch, "vl-model");
    path_join(calib, sizeof calib, scratch, "vl-calib.jsonl");
    memset(v, 0, sizeof *v);
    gen_loaded(&spec, dir, calib, 8, 10, 30, 5, SEQ_LEN, &v->l);
    CHECK(v->l.cfg.mrope_section[0] == 4 && v->l.cfg.mrope_section[1] == 2 &&
          v->l.cfg.mrope_section[2] == 2);
    place_images(&v->l.rows);
    for (int i = 0; i < N_IMAGES; i++)
        v->n_tok += v->l.rows.images[i].n_tokens;
    const int64_t n = v->n_tok * v->l.cfg.hidden;
    uint64_t seed = 77;
    v->merged = malloc((size_t)n * sizeof(float));
    for (int k = 0; k < N_DEEP; k++)
        v->deep[k] = malloc((size_t)n * sizeof(float));
    if (!v->merged || !v->deep[0] || !v->deep[1])
        abort();
    for (int64_t i = 0; i < n; i++)
        v->merged[i] = frand(&seed);
    for (int k = 0; k < N_DEEP; k++)
        for (int64_t i = 0; i < n; i++)
            v->deep[k][i] = 0.5f * frand(&seed);
    v->feat.spatial_merge = MERGE;
    v->feat.n_image_tokens = v->n_tok;
    v->feat.merged = v->merged;
    v->feat.n_deepstack = N_DEEP;
    v->feat.deepstack = (const float *const *)v->deep;
}

static void vl_case_free(vl_case *v)
{
    free(v->merged);
    for (int k = 0; k < N_DEEP; k++)
        free(v->deep[k]);
    unload(&v->l);
}

#endif

/* test_positions.c - the rotary positions of calibration slots (model/positions.h).
 *
 * 1. The rule on hand-written masks: qwen3_moe takes the slot index whatever the mask;
 *    qwen3_vl_moe counts the valid slots before a slot (masked slots 1), per row.
 * 2. reap_positions_limit bounds every position written, errors are REAP_E_INVALID.
 * 3. Through the engine on the CPU backend: packed rows of a generated qwen3_vl_moe
 *    model give the same statistics as the same rows with their gaps squeezed out
 *    (valid tokens moved to the front of the row): a masked key is never attended to,
 *    so only the positions could tell them apart, and a Qwen3-VL position counts valid
 *    tokens only. The same weights as qwen3_moe (positions = slot index) must differ,
 *    which shows the comparison can fail.
 * 4. mRoPE ids with image spans (reap_positions_fill_mrope), written out by hand from the
 *    get_rope_index rule: one image in a row, two images back to back, an image after a
 *    packing gap (masked slots 1 on every plane), the span checks (a masked slot in a
 *    span, a span leaving its row, overlapping spans, a grid that does not give the
 *    image's tokens, merge 0, qwen3_moe); without spans the three planes equal
 *    reap_positions_fill's positions (both families); every id < reap_positions_limit.
 *    The interleaved plane of each frequency slot (reap_mrope_plane) for [24, 20, 20].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "config.h"
#include "engine.h"
#include "genmodel.h"
#include "positions.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

/* Two rows of 8 slots: a packed row (gaps at 3 and from 6) and a row whose first slot
 * is masked. */
static const uint8_t MASK[16] = {1, 1, 1, 0, 1, 1, 0, 0,
                                 0, 1, 1, 1, 1, 1, 1, 1};

static void test_rule(void)
{
    uint8_t mask[16];
    int32_t tok[16] = {0}, pos[16];
    memcpy(mask, MASK, sizeof mask);
    reap_rows rows = {.n_rows = 2, .seq_len = 8, .tokens = tok, .mask = mask};
    reap_config cfg;
    memset(&cfg, 0, sizeof cfg);

    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_OK);
    static const int32_t want_vl[16] = {0, 1, 2, 1, 3, 4, 1, 1,
                                        1, 0, 1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 16; i++)
        CHECK_MSG(pos[i] == want_vl[i], "qwen3_vl_moe slot %d: position %d, want %d", i,
                  pos[i], want_vl[i]);

    cfg.family = REAP_FAMILY_QWEN3_MOE;
    CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_OK);
    for (int i = 0; i < 16; i++)
        CHECK_MSG(pos[i] == i % 8, "qwen3_moe slot %d: position %d, want %d", i, pos[i],
                  i % 8);

    /* a full row: both families 0..S-1 */
    memset(mask, 1, sizeof mask);
    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_OK);
    for (int i = 0; i < 16; i++)
        CHECK_MSG(pos[i] == i % 8, "qwen3_vl_moe full row slot %d: position %d", i, pos[i]);
}

static void test_limit_and_errors(void)
{
    CHECK(reap_positions_limit(1) == 2);
    CHECK(reap_positions_limit(2) == 2);
    CHECK(reap_positions_limit(2048) == 2048);
    CHECK(reap_positions_limit(0) == 2);

    /* every position < limit, also for a row of one masked slot */
    for (int S = 1; S <= 9; S++) {
        for (int fam = REAP_FAMILY_QWEN3_MOE; fam <= REAP_FAMILY_QWEN3_VL_MOE; fam++) {
            int32_t tok[18] = {0}, pos[18];
            uint8_t mask[18];
            for (int i = 0; i < 2 * S; i++)
                mask[i] = (uint8_t)((i * 7 + S) % 3 != 0);
            reap_rows rows = {.n_rows = 2, .seq_len = S, .tokens = tok, .mask = mask};
            reap_config cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.family = (reap_family)fam;
            CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_OK);
            for (int i = 0; i < 2 * S; i++)
                CHECK_MSG(pos[i] >= 0 && pos[i] < reap_positions_limit(S),
                          "S %d family %d slot %d: position %d", S, fam, i, pos[i]);
        }
    }

    uint8_t mask[4] = {1, 1, 0, 1};
    int32_t tok[4] = {0}, pos[4];
    reap_rows rows = {.n_rows = 1, .seq_len = 4, .tokens = tok, .mask = mask};
    reap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    CHECK_RC(reap_positions_fill(NULL, &rows, pos), REAP_E_INVALID);
    CHECK_RC(reap_positions_fill(&cfg, NULL, pos), REAP_E_INVALID);
    CHECK_RC(reap_positions_fill(&cfg, &rows, NULL), REAP_E_INVALID);
    rows.seq_len = 0;
    CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_E_INVALID);
    rows.seq_len = 4;
    cfg.family = (reap_family)99;
    CHECK_RC(reap_positions_fill(&cfg, &rows, pos), REAP_E_INVALID);
    CHECK_ERRMSG("99");
}

/* The rows of `l` with each row's valid tokens moved to its front (mask 1 there). */
static void squeeze(const reap_rows *in, reap_rows *out)
{
    const size_t T = (size_t)in->n_rows * in->seq_len;
    *out = *in;
    out->tokens = calloc(T, sizeof *out->tokens);
    out->mask = calloc(T, 1);
    if (!out->tokens || !out->mask) {
        fprintf(stderr, "squeeze: out of memory\n");
        abort();
    }
    for (int r = 0; r < in->n_rows; r++) {
        size_t base = (size_t)r * in->seq_len, n = 0;
        for (int i = 0; i < in->seq_len; i++)
            if (in->mask[base + i]) {
                out->tokens[base + n] = in->tokens[base + i];
                out->mask[base + n++] = 1;
            }
    }
}

/* Worst relative difference of the sums of two runs; *same_counts: counts identical. */
static double stats_diff(const reap_layer_stats *a, const reap_layer_stats *b, int n,
                         int *same_counts)
{
    double worst = 0.0;
    *same_counts = 1;
    for (int l = 0; l < n; l++)
        for (int e = 0; e < a[l].n_experts; e++) {
            if (a[l].count[e] != b[l].count[e]) *same_counts = 0;
            const double d[3] = {rel_diff(a[l].sum_gate_norm[e], b[l].sum_gate_norm[e]),
                                 rel_diff(a[l].sum_norm[e], b[l].sum_norm[e]),
                                 rel_diff(a[l].sum_gate[e], b[l].sum_gate[e])};
            for (int k = 0; k < 3; k++)
                if (d[k] > worst) worst = d[k];
        }
    return worst;
}

static void test_engine_gaps(void)
{
    static const reap_family fams[2] = {REAP_FAMILY_QWEN3_VL_MOE, REAP_FAMILY_QWEN3_MOE};
    for (int f = 0; f < 2; f++) {
        const int vl = fams[f] == REAP_FAMILY_QWEN3_VL_MOE;
        char dir[64], calib[64];
        snprintf(dir, sizeof dir, "model-%s", vl ? "vl" : "moe");
        snprintf(calib, sizeof calib, "calib-%s.jsonl", vl ? "vl" : "moe");
        reap_gen_spec spec;
        reap_gen_spec_default(&spec, fams[f]);
        spec.layout = REAP_EXPERTS_FUSED;
        spec.n_layers = 2;
        spec.hidden = 32;
        spec.head_dim = 8;
        spec.dtype = ST_F32;
        spec.rope_theta = 10000.0; /* the same weights and angles for both families */
        spec.seed = 5;
        loaded l;
        /* 10 samples of 2..9 tokens in rows of 24: several samples, so gaps, per row */
        gen_loaded(&spec, sp(dir), sp(calib), 10, 2, 9, 6, 24, &l);
        reap_rows sq;
        squeeze(&l.rows, &sq);
        CHECK_MSG(memcmp(sq.mask, l.rows.mask, (size_t)l.rows.n_rows * l.rows.seq_len) != 0,
                  "the packed rows have no inner gap");
        reap_engine_opts o = {.backend = &reap_backend_cpu,
                              .backend_opts = {.threads = 2, .batch_rows = 1}};
        reap_layer_stats *a = NULL, *b = NULL;
        int na = 0, nb = 0, same_counts = 0;
        CHECK_RC(reap_engine_score(l.ck, &l.cfg, &l.rows, &o, &a, &na), REAP_OK);
        CHECK_RC(reap_engine_score(l.ck, &l.cfg, &sq, &o, &b, &nb), REAP_OK);
        CHECK(na == nb && na == 2);
        if (na == nb && na > 0) {
            double worst = stats_diff(a, b, na, &same_counts);
            printf("%s: packed rows vs gaps squeezed out: counts %s, worst rel diff %.2e\n",
                   vl ? "qwen3_vl_moe" : "qwen3_moe", same_counts ? "equal" : "differ", worst);
            if (vl)
                CHECK_MSG(same_counts && worst <= 1e-5, "qwen3_vl_moe: the gaps changed "
                          "the statistics (worst rel diff %.3e)", worst);
            else
                CHECK_MSG(!same_counts || worst > 1e-3, "qwen3_moe: squeezing the gaps "
                          "out changed nothing (worst rel diff %.3e)", worst);
        }
        free_stats(a, na);
        free_stats(b, nb);
        free(sq.tokens);
        free(sq.mask);
        unload(&l);
    }
}

/* One row of S slots (mask given, tokens 0) with the images' spans. */
typedef struct {
    reap_rows rows;
    int32_t tok[64];
    uint8_t mask[64];
    reap_calib_image im[4];
    reap_image_span sp[4];
    int32_t pos3[3 * 64];
} mrope_case;

static void mrope_case_init(mrope_case *m, int n_rows, int S, const uint8_t *mask)
{
    memset(m, 0, sizeof *m);
    memcpy(m->mask, mask, (size_t)(n_rows * S));
    m->rows.n_rows = n_rows;
    m->rows.seq_len = S;
    m->rows.tokens = m->tok;
    m->rows.mask = m->mask;
    m->rows.images = m->im;
    m->rows.spans = m->sp;
}

/* Image i with grid t x h x w (merge 2) at (row, start). */
static void add_image(mrope_case *m, int row, int start, int gt, int gh, int gw)
{
    int i = m->rows.n_images++;
    m->im[i].grid_t = gt;
    m->im[i].grid_h = gh;
    m->im[i].grid_w = gw;
    m->im[i].n_tokens = (int64_t)gt * (gh / 2) * (gw / 2);
    m->sp[m->rows.n_spans].row = row;
    m->sp[m->rows.n_spans].start = start;
    m->sp[m->rows.n_spans].image = i;
    m->rows.n_spans++;
}

static void check_planes(const mrope_case *m, const int32_t *t, const int32_t *h,
                         const int32_t *w, int n)
{
    const int64_t T = (int64_t)m->rows.n_rows * m->rows.seq_len;
    for (int i = 0; i < n; i++) {
        CHECK(m->pos3[i] == t[i] && m->pos3[T + i] == h[i] && m->pos3[2 * T + i] == w[i]);
        if (m->pos3[i] != t[i] || m->pos3[T + i] != h[i] || m->pos3[2 * T + i] != w[i])
            fprintf(stderr, "  slot %d: (%d, %d, %d), expected (%d, %d, %d)\n", i,
                    m->pos3[i], m->pos3[T + i], m->pos3[2 * T + i], t[i], h[i], w[i]);
        CHECK(m->pos3[i] < reap_positions_limit(m->rows.seq_len) &&
              m->pos3[T + i] < reap_positions_limit(m->rows.seq_len) &&
              m->pos3[2 * T + i] < reap_positions_limit(m->rows.seq_len));
    }
}

static void test_mrope_spans(void)
{
    reap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    static mrope_case m;
    static const uint8_t ALL[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

    /* One image: <vision_start> at 1, a 1 x 4 x 6 grid (merged 2 x 3) at 2..7; text after
     * continues at 2 + max(1, 2, 3) = 5. */
    mrope_case_init(&m, 1, 12, ALL);
    add_image(&m, 0, 2, 1, 4, 6);
    CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_OK);
    {
        static const int32_t t[12] = {0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 7, 8};
        static const int32_t h[12] = {0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7, 8};
        static const int32_t w[12] = {0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8};
        check_planes(&m, t, h, w, 12);
    }

    /* Two images back to back: 1 x 2 x 4 (merged 1 x 2) at 1, 1 x 6 x 2 (3 x 1) at 3. */
    mrope_case_init(&m, 1, 8, ALL);
    add_image(&m, 0, 1, 1, 2, 4);
    add_image(&m, 0, 3, 1, 6, 2);
    CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_OK);
    {
        static const int32_t t[8] = {0, 1, 1, 3, 3, 3, 6, 7};
        static const int32_t h[8] = {0, 1, 1, 3, 4, 5, 6, 7};
        static const int32_t w[8] = {0, 1, 2, 3, 3, 3, 6, 7};
        check_planes(&m, t, h, w, 8);
    }

    /* After a packing gap (slot 2) and in the second row: masked slots are 1 on every
     * plane and use no id; a 1 x 4 x 4 image (2 x 2) at slot 4 starts at id 3. */
    {
        static const uint8_t mask[20] = {1, 1, 0, 1, 1, 1, 1, 1, 1, 0,
                                         0, 1, 1, 1, 1, 1, 1, 0, 0, 0};
        mrope_case_init(&m, 2, 10, mask);
        add_image(&m, 0, 4, 1, 4, 4);
        add_image(&m, 1, 2, 1, 4, 4);
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_OK);
        static const int32_t t[20] = {0, 1, 1, 2, 3, 3, 3, 3, 5, 1,
                                      1, 0, 1, 1, 1, 1, 3, 1, 1, 1};
        static const int32_t h[20] = {0, 1, 1, 2, 3, 3, 4, 4, 5, 1,
                                      1, 0, 1, 1, 2, 2, 3, 1, 1, 1};
        static const int32_t w[20] = {0, 1, 1, 2, 3, 4, 3, 4, 5, 1,
                                      1, 0, 1, 2, 1, 2, 3, 1, 1, 1};
        check_planes(&m, t, h, w, 20);

        /* refusals, each naming the span */
        m.mask[6] = 0; /* a masked slot inside the first span */
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        m.mask[6] = 1;
        m.sp[1].start = 7; /* 4 tokens from slot 7 of row 1 leave the row of 10 */
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        m.sp[1].row = 0;
        m.sp[1].start = 6; /* overlaps the first span (4..7) */
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        m.sp[1].row = 1;
        m.sp[1].start = 2;
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_OK);
        m.im[0].n_tokens = 3; /* not 1 * 2 * 2 */
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        m.im[0].n_tokens = 4;
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 3, m.pos3), REAP_E_INVALID);
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 0, m.pos3), REAP_E_INVALID);
        m.sp[1].image = 5;
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        m.sp[1].image = 1;
        cfg.family = REAP_FAMILY_QWEN3_MOE;
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 2, m.pos3), REAP_E_INVALID);
        CHECK_RC(reap_positions_fill_mrope(NULL, &m.rows, 2, m.pos3), REAP_E_INVALID);
    }

    /* No spans: each plane is reap_positions_fill's positions, both families. */
    for (int f = 0; f < 2; f++) {
        cfg.family = f ? REAP_FAMILY_QWEN3_VL_MOE : REAP_FAMILY_QWEN3_MOE;
        int32_t pos[16];
        mrope_case_init(&m, 2, 8, MASK);
        CHECK_RC(reap_positions_fill(&cfg, &m.rows, pos), REAP_OK);
        CHECK_RC(reap_positions_fill_mrope(&cfg, &m.rows, 0, m.pos3), REAP_OK);
        for (int p = 0; p < 3; p++)
            CHECK(memcmp(m.pos3 + p * 16, pos, sizeof pos) == 0);
    }
}

static void test_mrope_plane(void)
{
    reap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.family = REAP_FAMILY_QWEN3_MOE;
    for (int i = 0; i < 64; i++)
        CHECK(reap_mrope_plane(&cfg, i) == 0);
    cfg.family = REAP_FAMILY_QWEN3_VL_MOE;
    cfg.mrope_section[0] = 24;
    cfg.mrope_section[1] = 20;
    cfg.mrope_section[2] = 20;
    int n[3] = {0, 0, 0};
    for (int i = 0; i < 64; i++) {
        int want = i < 60 && i % 3 == 1 ? 1 : i < 60 && i % 3 == 2 ? 2 : 0;
        CHECK(reap_mrope_plane(&cfg, i) == want);
        n[reap_mrope_plane(&cfg, i)]++;
    }
    CHECK(n[0] == 24 && n[1] == 20 && n[2] == 20);
    /* uneven sections: h 2 slots (1, 4), w 1 slot (2) of 8 */
    cfg.mrope_section[0] = 5;
    cfg.mrope_section[1] = 2;
    cfg.mrope_section[2] = 1;
    static const int want8[8] = {0, 1, 2, 0, 1, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        CHECK(reap_mrope_plane(&cfg, i) == want8[i]);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "test_positions.tmp";
    make_dirs(scratch);
    test_rule();
    test_limit_and_errors();
    test_engine_gaps();
    test_mrope_spans();
    test_mrope_plane();
    TEST_MAIN_END();
}

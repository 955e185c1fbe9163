/* positions.c - the RoPE position of every calibration slot, per model family.
 *
 * One pass over each row's mask (positions.h has the rules and why): one position per
 * slot for text; with images, three mRoPE ids per slot, the image spans checked first and
 * then walked with the row's counter.
 */
#include "positions.h"

#include "reap_err.h"

#include <string.h>

int reap_positions_fill(const reap_config *cfg, const reap_rows *rows, int32_t *pos)
{
    if (!cfg || !rows || !rows->mask || !pos)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill: NULL argument");
    if (rows->n_rows < 1 || rows->seq_len < 1)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill: %d rows of %d slots",
                            rows->n_rows, rows->seq_len);
    const int64_t S = rows->seq_len;
    switch (cfg->family) {
    case REAP_FAMILY_QWEN3_MOE:
        for (int64_t r = 0; r < rows->n_rows; r++)
            for (int64_t i = 0; i < S; i++)
                pos[r * S + i] = (int32_t)i;
        return REAP_OK;
    case REAP_FAMILY_QWEN3_VL_MOE:
        for (int64_t r = 0; r < rows->n_rows; r++) {
            const uint8_t *m = rows->mask + r * S;
            int32_t n_before = 0; /* valid slots before slot i of this row */
            for (int64_t i = 0; i < S; i++) {
                pos[r * S + i] = m[i] ? n_before : 1;
                n_before += m[i] ? 1 : 0;
            }
        }
        return REAP_OK;
    }
    return reap_err_set(REAP_E_INVALID, "reap_positions_fill: no position rule for model "
                        "family %d", (int)cfg->family);
}

int reap_positions_limit(int seq_len)
{
    return seq_len > 2 ? seq_len : 2;
}

/* Every span against the rows and its image before any id is written. */
static int check_spans(const reap_rows *rows, int merge)
{
    const int64_t S = rows->seq_len;
    if (merge < 1)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill_mrope: spatial merge size "
                            "%d (must be >= 1 with image spans)", merge);
    if (!rows->spans || !rows->images)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill_mrope: %lld image spans "
                            "without %s", (long long)rows->n_spans,
                            rows->spans ? "images" : "the span array");
    for (int64_t k = 0; k < rows->n_spans; k++) {
        const reap_image_span *sp = &rows->spans[k];
        if (reap_rows_span_check(rows, k))
            return REAP_E_INVALID;
        const reap_calib_image *im = &rows->images[sp->image];
        if (im->grid_t < 1 || im->grid_h < 1 || im->grid_w < 1 || im->grid_h % merge ||
            im->grid_w % merge ||
            im->n_tokens != (int64_t)im->grid_t * (im->grid_h / merge) * (im->grid_w / merge))
            return reap_err_set(REAP_E_INVALID, "image %d: grid %d x %d x %d with merge %d "
                                "does not give its %lld tokens", sp->image, im->grid_t,
                                im->grid_h, im->grid_w, merge, (long long)im->n_tokens);
        if (k > 0) {
            const reap_image_span *pv = &rows->spans[k - 1];
            if (pv->row > sp->row ||
                (pv->row == sp->row &&
                 pv->start + rows->images[pv->image].n_tokens > sp->start))
                return reap_err_set(REAP_E_INVALID, "image span %lld (row %d, start %d) "
                                    "overlaps or precedes span %lld (row %d, start %d)",
                                    (long long)k, sp->row, sp->start, (long long)(k - 1),
                                    pv->row, pv->start);
        }
        const uint8_t *m = rows->mask + sp->row * S + sp->start;
        for (int64_t j = 0; j < im->n_tokens; j++)
            if (!m[j])
                return reap_err_set(REAP_E_INVALID, "image span %lld (row %d, start %d): "
                                    "slot %lld is masked", (long long)k, sp->row, sp->start,
                                    (long long)(sp->start + j));
    }
    return REAP_OK;
}

int reap_positions_fill_mrope(const reap_config *cfg, const reap_rows *rows, int merge,
                              int32_t *pos3)
{
    if (!cfg || !rows || !rows->mask || !pos3)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill_mrope: NULL argument");
    if (rows->n_spans <= 0) {
        int rc = reap_positions_fill(cfg, rows, pos3);
        if (rc)
            return rc;
        const int64_t T = (int64_t)rows->n_rows * rows->seq_len;
        memcpy(pos3 + T, pos3, (size_t)T * sizeof *pos3);
        memcpy(pos3 + 2 * T, pos3, (size_t)T * sizeof *pos3);
        return REAP_OK;
    }
    if (rows->n_rows < 1 || rows->seq_len < 1)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill_mrope: %d rows of %d slots",
                            rows->n_rows, rows->seq_len);
    if (cfg->family != REAP_FAMILY_QWEN3_VL_MOE)
        return reap_err_set(REAP_E_INVALID, "reap_positions_fill_mrope: image spans need "
                            "model family qwen3_vl_moe (family %d)", (int)cfg->family);
    int rc = check_spans(rows, merge);
    if (rc)
        return rc;
    const int64_t S = rows->seq_len, T = (int64_t)rows->n_rows * S;
    int32_t *pt = pos3, *ph = pos3 + T, *pw = pos3 + 2 * T;
    int64_t k = 0; /* next span */
    for (int64_t r = 0; r < rows->n_rows; r++) {
        const uint8_t *m = rows->mask + r * S;
        int32_t p = 0; /* the row's counter: the next text id */
        for (int64_t i = 0; i < S;) {
            const int64_t t = r * S + i;
            if (k < rows->n_spans && rows->spans[k].row == r && rows->spans[k].start == i) {
                const reap_calib_image *im = &rows->images[rows->spans[k].image];
                const int32_t hm = im->grid_h / merge, wm = im->grid_w / merge;
                for (int64_t j = 0; j < im->n_tokens; j++) {
                    pt[t + j] = p + (int32_t)(j / ((int64_t)hm * wm));
                    ph[t + j] = p + (int32_t)((j / wm) % hm);
                    pw[t + j] = p + (int32_t)(j % wm);
                }
                int32_t ext = im->grid_t > hm ? im->grid_t : hm;
                p += ext > wm ? ext : wm;
                i += im->n_tokens;
                k++;
                continue;
            }
            pt[t] = ph[t] = pw[t] = m[i] ? p : 1;
            p += m[i] ? 1 : 0;
            i++;
        }
    }
    return REAP_OK;
}

int reap_mrope_plane(const reap_config *cfg, int i)
{
    if (!cfg || i < 0)
        return 0;
    if (i % 3 == 1 && i < 3 * cfg->mrope_section[1])
        return 1;
    if (i % 3 == 2 && i < 3 * cfg->mrope_section[2])
        return 2;
    return 0;
}

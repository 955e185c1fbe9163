/* positions.c - the RoPE position of every calibration slot, per model family.
 *
 * One pass over each row's mask (positions.h has the rules and why). Text only: one
 * position per slot.
 */
#include "positions.h"

#include "reap_err.h"

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

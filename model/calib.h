/* calib.h - calibration samples (token ids) and their packing into fixed-length rows.
 *
 * Input: JSON Lines, one sample per line: {"input_ids": [int, ...]}. Blank lines are
 * skipped. Errors name the file and the 1-based line.
 *
 * Packing (default, as the reference implementation does): rows of exactly seq_len
 * positions; samples are placed in order; after each sample one gap position (token 0,
 * mask 0); a sample that does not fit in the rest of the row is truncated to fill the row
 * and its remainder dropped; the next sample starts a new row; a partial last row is
 * padded with token 0, mask 0.
 * No packing: one row per sample, truncated to seq_len, padded with token 0, mask 0.
 * Positions are 0..seq_len-1 along each row; masked positions are never attended to as
 * keys and never counted in statistics.
 */
#ifndef REAP_CALIB_H
#define REAP_CALIB_H

#include <stdint.h>

typedef struct reap_samples {
    int64_t n;          /* number of samples */
    int64_t *len;       /* [n] tokens per sample */
    int32_t **ids;      /* [n][len[i]] */
    int64_t *line;      /* [n] 1-based source line of each sample */
} reap_samples;

/* Read at most max_samples samples (max_samples <= 0: all) from `path`.
 * Every id must satisfy 0 <= id < vocab (vocab <= 0: no check).
 * Returns REAP_OK, REAP_E_IO, REAP_E_FORMAT (invalid JSON, missing or non-integer
 * input_ids, empty sample, "file:line" in the message), REAP_E_INVALID (id out of range,
 * or a file with no samples). */
int reap_samples_read_jsonl(const char *path, int64_t max_samples, int vocab,
                            reap_samples *out);

void reap_samples_free(reap_samples *s);

typedef struct reap_rows {
    int n_rows;
    int seq_len;
    int32_t *tokens;    /* [n_rows * seq_len] */
    uint8_t *mask;      /* [n_rows * seq_len], 1 = valid token */
    int64_t n_valid;    /* number of mask-1 positions */
} reap_rows;

/* Build rows from samples. pack != 0: packing as above; pack == 0: one row per sample.
 * Returns REAP_OK, REAP_E_INVALID (seq_len < 1, no samples), REAP_E_NOMEM. */
int reap_rows_build(const reap_samples *s, int seq_len, int pack, reap_rows *out);

void reap_rows_free(reap_rows *r);

#endif

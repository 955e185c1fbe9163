/* calib.c - calibration samples from JSON Lines, and their packing into rows.
 *
 * Reading: getline() one line at a time, blank (whitespace-only) lines skipped, each
 * other line parsed by jansson as {"input_ids": [int, ...]}; every error names
 * "path:line". Samples are kept as separate int32 arrays with their source line.
 *
 * Packing (see calib.h): one walk over the samples (pack_walk) both counts the rows and,
 * given buffers, fills them, so the row count and the contents cannot disagree. The
 * buffers start zeroed (token 0, mask 0); the walk writes only the valid tokens.
 */
#include "calib.h"

#include "reap_err.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading -------------------------------------------------------------------- */

static int line_is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\f' &&
            s[i] != '\v')
            return 0;
    return 1;
}

/* Make room for one more sample in `s` (capacity *cap). */
static int samples_grow(reap_samples *s, int64_t *cap)
{
    int64_t ncap;
    int64_t *len, *line;
    int32_t **ids;

    if (s->n < *cap)
        return REAP_OK;
    ncap = *cap ? *cap * 2 : 64;
    len = realloc(s->len, (size_t)ncap * sizeof *len);
    if (!len)
        return REAP_E_NOMEM;
    s->len = len;
    line = realloc(s->line, (size_t)ncap * sizeof *line);
    if (!line)
        return REAP_E_NOMEM;
    s->line = line;
    ids = realloc(s->ids, (size_t)ncap * sizeof *ids);
    if (!ids)
        return REAP_E_NOMEM;
    s->ids = ids;
    *cap = ncap;
    return REAP_OK;
}

/* Parse one non-blank line into a new int32 array *ids_out of *n_out tokens. */
static int sample_parse(const char *path, int64_t lineno, const char *text, size_t n,
                        int vocab, int32_t **ids_out, int64_t *n_out)
{
    json_error_t jerr;
    json_t *root = NULL, *arr, *v;
    int32_t *ids = NULL;
    json_int_t id;
    size_t i, len;
    int rc;

    *ids_out = NULL;
    *n_out = 0;
    /* json_loadb, not json_loads: a NUL byte inside the line is an error, not an end. */
    root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: invalid JSON (column %d): %s", path,
                          (long long)lineno, jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: not a JSON object", path,
                          (long long)lineno);
        goto fail;
    }
    arr = json_object_get(root, "input_ids");
    if (!arr) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: missing \"input_ids\"", path,
                          (long long)lineno);
        goto fail;
    }
    if (!json_is_array(arr)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: \"input_ids\" is not an array", path,
                          (long long)lineno);
        goto fail;
    }
    len = json_array_size(arr);
    if (len == 0) {
        rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: empty \"input_ids\"", path,
                          (long long)lineno);
        goto fail;
    }
    ids = malloc(len * sizeof *ids);
    if (!ids) {
        rc = reap_err_set(REAP_E_NOMEM, "%s:%lld: out of memory (%zu tokens)", path,
                          (long long)lineno, len);
        goto fail;
    }
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s:%lld: input_ids[%zu] is not an integer",
                              path, (long long)lineno, i);
            goto fail;
        }
        id = json_integer_value(v);
        /* Negative ids and ids beyond int32 are never token ids, whatever the vocab. */
        if (id < 0 || id > INT32_MAX || (vocab > 0 && id >= vocab)) {
            if (vocab > 0)
                rc = reap_err_set(REAP_E_INVALID, "%s:%lld: token id %lld out of range "
                                  "(vocab_size %d)", path, (long long)lineno, (long long)id,
                                  vocab);
            else
                rc = reap_err_set(REAP_E_INVALID, "%s:%lld: token id %lld out of range",
                                  path, (long long)lineno, (long long)id);
            goto fail;
        }
        ids[i] = (int32_t)id;
    }
    json_decref(root);
    *ids_out = ids;
    *n_out = (int64_t)len;
    return REAP_OK;

fail:
    free(ids);
    json_decref(root);
    return rc;
}

int reap_samples_read_jsonl(const char *path, int64_t max_samples, int vocab,
                            reap_samples *out)
{
    reap_samples s;
    FILE *fp = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int64_t lineno = 0, cap = 0;
    int rc;

    memset(&s, 0, sizeof s);
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out) {
        rc = reap_err_set(REAP_E_INVALID, "reap_samples_read_jsonl: NULL argument");
        goto fail;
    }
    fp = fopen(path, "rb");
    if (!fp) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    while (max_samples <= 0 || s.n < max_samples) {
        errno = 0;
        got = getline(&line, &line_cap, fp);
        if (got < 0) {
            if (ferror(fp)) {
                rc = reap_err_set(REAP_E_IO, "%s:%lld: read error: %s", path,
                                  (long long)lineno + 1, strerror(errno ? errno : EIO));
                goto fail;
            }
            break;   /* end of file */
        }
        lineno++;
        if (line_is_blank(line, (size_t)got))
            continue;
        if (samples_grow(&s, &cap) != REAP_OK) {
            rc = reap_err_set(REAP_E_NOMEM, "%s:%lld: out of memory", path,
                              (long long)lineno);
            goto fail;
        }
        rc = sample_parse(path, lineno, line, (size_t)got, vocab, &s.ids[s.n], &s.len[s.n]);
        if (rc)
            goto fail;
        s.line[s.n] = lineno;
        s.n++;
    }
    if (s.n == 0) {
        rc = reap_err_set(REAP_E_INVALID, "%s: no samples", path);
        goto fail;
    }
    free(line);
    fclose(fp);
    *out = s;
    return REAP_OK;

fail:
    reap_samples_free(&s);
    free(line);
    if (fp)
        fclose(fp);
    return rc;
}

void reap_samples_free(reap_samples *s)
{
    int64_t i;

    if (!s)
        return;
    for (i = 0; i < s->n; i++)
        free(s->ids[i]);
    free(s->ids);
    free(s->len);
    free(s->line);
    memset(s, 0, sizeof *s);
}

/* ---- packing -------------------------------------------------------------------- */

/* Walk the samples as packing places them; returns the number of rows. With `tokens`
 * and `mask` (zeroed, [rows * seq_len]) also writes the valid tokens and counts them
 * into *n_valid. Position `pos` is the next free slot of the current row; pos == 0
 * means the next sample opens a new row. */
static int64_t pack_walk(const reap_samples *s, int seq_len, int32_t *tokens,
                         uint8_t *mask, int64_t *n_valid)
{
    int64_t rows = 0, valid = 0, i, j, take;
    int64_t pos = 0;
    size_t base;

    for (i = 0; i < s->n; i++) {
        if (pos == 0)
            rows++;
        take = seq_len - pos;                   /* room left in this row */
        if (s->len[i] < take)
            take = s->len[i];                   /* else truncate, drop the remainder */
        if (tokens) {
            base = (size_t)(rows - 1) * (size_t)seq_len + (size_t)pos;
            for (j = 0; j < take; j++) {
                tokens[base + (size_t)j] = s->ids[i][j];
                mask[base + (size_t)j] = 1;
            }
        }
        valid += take;
        pos += take;
        if (pos < seq_len)
            pos++;                              /* one gap position: token 0, mask 0 */
        if (pos == seq_len)
            pos = 0;                            /* row full: next sample opens a row */
    }
    if (n_valid)
        *n_valid = valid;
    return rows;
}

int reap_rows_build(const reap_samples *s, int seq_len, int pack, reap_rows *out)
{
    reap_rows r;
    int64_t rows, i, j, take;
    size_t cells, base;
    int rc;

    memset(&r, 0, sizeof r);
    if (out)
        memset(out, 0, sizeof *out);
    if (!s || !out) {
        rc = reap_err_set(REAP_E_INVALID, "reap_rows_build: NULL argument");
        goto fail;
    }
    if (seq_len < 1) {
        rc = reap_err_set(REAP_E_INVALID, "sequence length %d must be at least 1", seq_len);
        goto fail;
    }
    if (s->n < 1) {
        rc = reap_err_set(REAP_E_INVALID, "no calibration samples");
        goto fail;
    }
    for (i = 0; i < s->n; i++) {
        if (s->len[i] < 1 || !s->ids[i]) {
            rc = reap_err_set(REAP_E_INVALID, "calibration sample %lld is empty",
                              (long long)i);
            goto fail;
        }
    }

    rows = pack ? pack_walk(s, seq_len, NULL, NULL, NULL) : s->n;
    if (rows > INT_MAX || (uint64_t)rows > SIZE_MAX / sizeof(int32_t) / (uint64_t)seq_len) {
        rc = reap_err_set(REAP_E_INVALID, "%lld rows of %d tokens are too many",
                          (long long)rows, seq_len);
        goto fail;
    }
    cells = (size_t)rows * (size_t)seq_len;
    r.n_rows = (int)rows;
    r.seq_len = seq_len;
    r.tokens = calloc(cells, sizeof *r.tokens);
    r.mask = calloc(cells, sizeof *r.mask);
    if (!r.tokens || !r.mask) {
        rc = reap_err_set(REAP_E_NOMEM, "out of memory for %lld x %d calibration rows",
                          (long long)rows, seq_len);
        goto fail;
    }

    if (pack) {
        pack_walk(s, seq_len, r.tokens, r.mask, &r.n_valid);
    } else {
        for (i = 0; i < s->n; i++) {
            take = s->len[i] < seq_len ? s->len[i] : seq_len;
            base = (size_t)i * (size_t)seq_len;
            for (j = 0; j < take; j++) {
                r.tokens[base + (size_t)j] = s->ids[i][j];
                r.mask[base + (size_t)j] = 1;
            }
            r.n_valid += take;
        }
    }
    *out = r;
    return REAP_OK;

fail:
    reap_rows_free(&r);
    return rc;
}

void reap_rows_free(reap_rows *r)
{
    if (!r)
        return;
    free(r->tokens);
    free(r->mask);
    memset(r, 0, sizeof *r);
}

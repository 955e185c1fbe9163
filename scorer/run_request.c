/* run_request.c - scoring requests as JSON (run_request.h). */
#include "run_request.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"

#define REQ_FORMAT "reap-run-request/1"

int reap_run_request_encode(const reap_rm_request *rq, char **out)
{
    char seed[24];
    *out = NULL;
    snprintf(seed, sizeof seed, "%" PRIu64, rq->seed);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:b, s:s, s:i, s:b, s:I, s:i, s:s}",
                          "format", REQ_FORMAT, "model_dir", rq->model_dir, "calib_path",
                          rq->calib_path, "tokenizer_path",
                          rq->tokenizer_path ? json_string(rq->tokenizer_path) : json_null(),
                          "shuffle", rq->shuffle != 0, "seed", seed, "seq_len", rq->seq_len,
                          "pack", rq->pack != 0, "max_samples", (json_int_t)rq->max_samples,
                          "batch_rows", rq->batch_rows, "backend",
                          rq->backend ? rq->backend->name : "cpu");
    if (o)
        *out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return *out ? REAP_OK : reap_err_set(REAP_E_NOMEM, "run request: out of memory");
}

void reap_run_request_buf_free(reap_run_request_buf *b)
{
    if (!b)
        return;
    free(b->model_dir);
    free(b->calib_path);
    free(b->tokenizer_path);
    memset(b, 0, sizeof *b);
}

int reap_run_request_decode(const char *text, reap_run_request_buf *out)
{
    json_error_t jerr;
    json_t *o = json_loads(text ? text : "", JSON_REJECT_DUPLICATES, &jerr), *tok;
    const char *fmt = NULL, *model = NULL, *calib = NULL, *seed = NULL, *backend = NULL;
    int shuffle = 0, pack = 0, seq_len = 0, batch_rows = 0, rc = REAP_OK;
    json_int_t max_samples = 0;
    memset(out, 0, sizeof *out);
    if (!o)
        return reap_err_set(REAP_E_FORMAT, "run request: %s", jerr.text);
    if (json_unpack(o, "{s:s}", "format", &fmt) || strcmp(fmt, REQ_FORMAT)) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "run request: format '%s' (this build reads "
                          REQ_FORMAT ")", fmt ? fmt : "none");
        goto done;
    }
    if (json_unpack_ex(o, &jerr, JSON_STRICT,
                       "{s:s, s:s, s:s, s:o, s:b, s:s, s:i, s:b, s:I, s:i, s:s}", "format",
                       &fmt, "model_dir", &model, "calib_path", &calib, "tokenizer_path",
                       &tok, "shuffle", &shuffle, "seed", &seed, "seq_len", &seq_len, "pack",
                       &pack, "max_samples", &max_samples, "batch_rows", &batch_rows,
                       "backend", &backend)) {
        rc = reap_err_set(REAP_E_FORMAT, "run request: %s", jerr.text);
        goto done;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long sv = strtoull(seed, &end, 10);
    if (!*seed || *end || errno || *seed == '-' || (!json_is_null(tok) && !json_is_string(tok)) ||
        !*model || !*calib || seq_len < 1 || max_samples < 0 || batch_rows < 0 ||
        strlen(backend) >= sizeof out->backend) {
        rc = reap_err_set(REAP_E_FORMAT, "run request: a field is out of range");
        goto done;
    }
    if (!(out->model_dir = strdup(model)) || !(out->calib_path = strdup(calib)) ||
        (json_is_string(tok) && !(out->tokenizer_path = strdup(json_string_value(tok))))) {
        rc = reap_err_set(REAP_E_NOMEM, "run request: out of memory");
        goto done;
    }
    snprintf(out->backend, sizeof out->backend, "%s", backend);
    out->rq = (reap_rm_request){
        .model_dir = out->model_dir,
        .calib_path = out->calib_path,
        .tokenizer_path = out->tokenizer_path,
        .shuffle = shuffle,
        .seed = (uint64_t)sv,
        .seq_len = seq_len,
        .pack = pack,
        .max_samples = (int64_t)max_samples,
        .batch_rows = batch_rows,
    };
done:
    if (rc)
        reap_run_request_buf_free(out);
    json_decref(o);
    return rc;
}

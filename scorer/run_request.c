/* run_request.c - scoring requests as JSON (run_request.h). */
#include "run_request.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsopen.h"
#include "fsutil.h"
#include "reap_err.h"
#include "runs.h"

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

/* ---- pending requests ------------------------------------------------------------------ */

static void pending_path(const char *dir, const uint8_t run_id[16], const char *suffix,
                         char *out, size_t len)
{
    char hex[33];
    reap_run_id_hex(run_id, hex);
    snprintf(out, len, "%s/%s.json%s", dir, hex, suffix);
}

/* The submission time of a pending request, in ns: the wall clock at full resolution,
 * made strictly increasing within this process. The file system's own timestamps are
 * coarse (one kernel tick: requests submitted within a few ms would share one and list
 * in run-id order), so the writer sets the file's mtime to this stamp itself. */
static int64_t pending_stamp(void)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t last;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    pthread_mutex_lock(&mu);
    if (now <= last)
        now = last + 1;
    last = now;
    pthread_mutex_unlock(&mu);
    return now;
}

int reap_run_pending_write(const char *dir, const uint8_t run_id[16], const char *text)
{
    char path[4200];
    reap_atomic af;
    int rc;
    pending_path(dir, run_id, "", path, sizeof path);
    if ((rc = reap_atomic_open(path, 0644, 0, &af)))
        return rc;
    const int64_t t = pending_stamp();
    const struct timespec when[2] = {{t / 1000000000, t % 1000000000},
                                     {t / 1000000000, t % 1000000000}};
    if ((rc = reap_write_all(af.fd, text, strlen(text), af.tmp)))
        goto fail;
    if (futimens(af.fd, when) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: set the submission time: %s", af.tmp,
                          strerror(errno));
        goto fail;
    }
    return reap_atomic_commit(&af);
fail:
    reap_atomic_abort(&af);
    return rc;
}

void reap_run_pending_remove(const char *dir, const uint8_t run_id[16])
{
    char path[4200];
    pending_path(dir, run_id, "", path, sizeof path);
    unlink(path);
}

void reap_run_pending_free(reap_run_pending *p, int n)
{
    for (int i = 0; p && i < n; i++)
        free(p[i].text);
    free(p);
}

static int pending_oldest_first(const void *a, const void *b)
{
    const reap_run_pending *x = a, *y = b;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    return memcmp(x->run_id, y->run_id, 16);
}

int reap_run_pending_list(const char *dir, reap_run_pending **out, int *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    reap_run_pending *v = NULL;
    int cnt = 0, cap = 0, rc = REAP_OK;
    *out = NULL;
    *n = 0;
    if (!d)
        return errno == ENOENT ? REAP_OK : reap_err_set(REAP_E_IO, "%s: %s", dir,
                                                         strerror(errno));
    while ((e = readdir(d))) {
        char hex[33], path[4200];
        struct stat st;
        uint8_t id[16];
        size_t len = strlen(e->d_name);
        if (len != 37 || strcmp(e->d_name + 32, ".json"))
            continue;
        memcpy(hex, e->d_name, 32);
        hex[32] = '\0';
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (reap_run_id_parse(hex, id) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        FILE *f = NULL;
        reap_fopen_read(path, NULL, &f);   /* a FIFO put there is skipped, not waited on */
        char *text = f && st.st_size < (1 << 20) ? calloc((size_t)st.st_size + 1, 1) : NULL;
        int ok = text && fread(text, 1, (size_t)st.st_size, f) == (size_t)st.st_size;
        if (f)
            fclose(f);
        if (!ok) {
            free(text);
            continue; /* unreadable or absurd: skipped, the resume logs what it submits */
        }
        if (cnt == cap) {
            reap_run_pending *nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *v);
            if (!nv) {
                free(text);
                rc = reap_err_set(REAP_E_NOMEM, "pending requests: out of memory");
                break;
            }
            v = nv;
        }
        memcpy(v[cnt].run_id, id, 16);
        v[cnt].text = text;
        v[cnt].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        cnt++;
    }
    closedir(d);
    if (rc) {
        reap_run_pending_free(v, cnt);
        return rc;
    }
    if (cnt)
        qsort(v, (size_t)cnt, sizeof *v, pending_oldest_first);
    *out = v;
    *n = cnt;
    return REAP_OK;
}

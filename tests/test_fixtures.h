/* test_fixtures.h - helpers shared by the C unit tests: scratch paths, small files,
 * directories, and the engine fixtures (a generated model loaded with its calibration
 * rows). Header-only: every function is static inline, so a test pays only for what it
 * calls and unused helpers draw no warning. CHECK and friends come from test_util.h.
 *
 * Scratch directory
 *   scratch               (const char *) the test's scratch directory; main() points it
 *                         at argv[1] (or a default) before sp, sp2 or write_scratch is
 *                         called (they abort while it is NULL).
 *   path_join(out, cap, a, b)   "a/b" into the caller's buffer.
 *   pj(a, b)              "a/b" in a rotating static buffer.
 *   sp(rel)               "<scratch>/rel" in a rotating static buffer.
 *   sp2(dir, rel)         "<scratch>/dir/rel" in a rotating static buffer.
 *                         pj, sp and sp2 share 16 buffers of 8 KiB: a result stays valid
 *                         for the next 15 calls of any of the three; copy it (path_join)
 *                         to keep it longer.
 *   fixtures_dir(out, cap)  the test data folder tests/fixtures: $REAP_TEST_FIXTURES when
 *                         set and not empty, else "fixtures" beside this header (the tests'
 *                         own folder), else "fixtures".
 *
 * Files and directories
 *   put_file(path, p, n)  write n bytes (create or truncate); 0, or -1 with a message on
 *                         stderr. No CHECK.
 *   write_text(path, s)   the string s, as put_file; one CHECK that the write succeeded.
 *   write_bytes(path, p, n)  n bytes, as put_file; one CHECK that the write succeeded.
 *   write_scratch(name, s)   the string s as <scratch>/name, as put_file (no CHECK: the
 *                         caller's next step fails visibly); returns sp(name).
 *   slurp(path, &len)     the whole file, NUL-terminated (len, when not NULL, gets its size
 *                         without the NUL); malloc'd, NULL when it cannot be read. No CHECK.
 *   make_dirs(path)       mkdir -p (mode 0777 less the umask); 0, or -1 with errno.
 *   rm_rf(path)           rm -rf without a shell (a missing path is not an error); 0, or
 *                         -1 with a message on stderr.
 *   fresh_dir(path)       rm_rf then make_dirs: an empty directory; 0 or -1.
 *
 * Engine fixtures (checkpoints from model/gen/genmodel.h)
 *   model, open_model(dir, &m), close_model(&m)
 *                         <dir>/config.json and the checkpoint in <dir>; open_model
 *                         returns the first failing status (no CHECK); close_model is
 *                         safe after a failed open.
 *   loaded, load(dir, calib, seq_len, pack, &l), unload(&l)
 *                         a model plus the JSONL calibration file `calib` read as samples
 *                         and built into rows (reap_rows_build); load returns the first
 *                         failing status (no CHECK); unload is safe after a failed load.
 *   gen_loaded(spec, dir, calib, n_samples, min_len, max_len, calib_seed, seq_len, &l)
 *                         reap_gen_model(spec, dir), reap_gen_calib(calib, n_samples,
 *                         min_len, max_len, spec->vocab, calib_seed), then load(dir, calib,
 *                         seq_len, pack 1): three CHECK_RC(..., REAP_OK), in that order.
 *   make_rows(&r, vocab, n_rows, seq_len, seed, gap)
 *                         rows without a calibration file: tokens from the LCG
 *                         x = x * 1103515245 + 12345, token = (x >> 8) % vocab, every
 *                         position valid except column `gap` of each row. Free with
 *                         reap_rows_free (or free tokens and mask).
 *   poke_f32(dir, name, elem, value)
 *                         overwrite element `elem` of the F32 tensor `name` in the shards of
 *                         <dir> in place; REAP_OK, REAP_E_NOTFOUND (no such tensor),
 *                         REAP_E_IO, or the status of opening the checkpoint. No CHECK.
 *   free_stats(s, n)      free n layer statistics and the array (s may be NULL).
 *   stats_identical(a, b, n)  1 if n layer statistics agree bit for bit (layer, tokens,
 *                         counts, the three sums, max_act), else 0.
 *   rel_diff(a, b)        |a - b| / max(|a|, |b|); 0 when both are 0.
 *
 * Images
 *   test_png8(&n)         an 8 x 8 RGB PNG (8-bit, no interlace): its bytes, n its size.
 *
 * Failures: a path that does not fit its buffer, or a fixture that cannot get memory,
 * prints the reason and calls abort() (a test must never go on with a cut path); the
 * CHECKs named above count and report as in test_util.h (at this header's line, with the
 * path or the status message) and the test goes on.
 *
 * The store tests use test_store_util.h, which has its own scratch, spath and rm_rf; the
 * two headers are not meant to be included together.
 *
 * Threads: none of these helpers is thread-safe (the rotating path buffers are shared, and
 * test_util.h's counters are plain ints). Call them from the main thread only.
 */
#ifndef REAP_TEST_FIXTURES_H
#define REAP_TEST_FIXTURES_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "genmodel.h"
#include "reap_err.h"
#include "safetensors.h"
#include "stats.h"
#include "test_util.h"

/* ---- scratch paths ----------------------------------------------------------------- */

static const char *scratch;

#define FX_PATH_MAX 8192

static inline void fx_die_(const char *what, const char *detail)
{
    fprintf(stderr, "test_fixtures: %s: %s\n", what, detail);
    abort();
}

__attribute__((format(printf, 3, 4)))
static inline void fx_format_(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        fx_die_("path does not fit its buffer", out);
}

static inline char *fx_ring_(void)
{
    static char bufs[16][FX_PATH_MAX];
    static unsigned next;
    return bufs[next++ % 16];
}

static inline const char *fx_scratch_(void)
{
    if (!scratch)
        fx_die_("scratch", "not set (main() sets it before using sp, sp2 or write_scratch)");
    return scratch;
}

static inline void path_join(char *out, size_t cap, const char *a, const char *b)
{
    fx_format_(out, cap, "%s/%s", a, b);
}

static inline const char *pj(const char *a, const char *b)
{
    char *buf = fx_ring_();
    fx_format_(buf, FX_PATH_MAX, "%s/%s", a, b);
    return buf;
}

static inline const char *sp(const char *rel)
{
    return pj(fx_scratch_(), rel);
}

static inline const char *sp2(const char *dir, const char *rel)
{
    char *buf = fx_ring_();
    fx_format_(buf, FX_PATH_MAX, "%s/%s/%s", fx_scratch_(), dir, rel);
    return buf;
}

static inline void fixtures_dir(char *out, size_t cap)
{
    const char *env = getenv("REAP_TEST_FIXTURES");
    const char *slash = strrchr(__FILE__, '/');
    if (env && *env)
        fx_format_(out, cap, "%s", env);
    else if (slash)
        fx_format_(out, cap, "%.*s/fixtures", (int)(slash - __FILE__), __FILE__);
    else
        fx_format_(out, cap, "fixtures");
}

/* ---- files and directories ------------------------------------------------------------- */

static inline int put_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return ok ? 0 : -1;
}

static inline void write_text(const char *path, const char *text)
{
    CHECK_MSG(put_file(path, text, strlen(text)) == 0, "cannot write %s", path);
}

static inline void write_bytes(const char *path, const void *data, size_t n)
{
    CHECK_MSG(put_file(path, data, n) == 0, "cannot write %s", path);
}

static inline const char *write_scratch(const char *name, const char *text)
{
    const char *path = sp(name);
    put_file(path, text, strlen(text));
    return path;
}

static inline char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

static inline int make_dirs(const char *path)
{
    char buf[FX_PATH_MAX];
    struct stat sb;
    const size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = n ? ENAMETOOLONG : ENOENT;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            const char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    if (stat(path, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static inline int fx_rm_one_(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "rm -rf: cannot remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static inline int rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "rm -rf: cannot stat %s: %s\n", path, strerror(errno));
        return -1;
    }
    return nftw(path, fx_rm_one_, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static inline int fresh_dir(const char *path)
{
    return rm_rf(path) == 0 && make_dirs(path) == 0 ? 0 : -1;
}

/* ---- engine fixtures -------------------------------------------------------------------- */

typedef struct model {
    reap_config cfg;
    reap_ckpt *ck;
} model;

static inline int fx_open_(const char *dir, reap_config *cfg, reap_ckpt **ck)
{
    char p[FX_PATH_MAX];
    int rc;
    path_join(p, sizeof p, dir, "config.json");
    if ((rc = reap_config_load(p, cfg)))
        return rc;
    return reap_ckpt_open(dir, ck);
}

static inline int open_model(const char *dir, model *m)
{
    memset(m, 0, sizeof *m);
    return fx_open_(dir, &m->cfg, &m->ck);
}

static inline void close_model(model *m)
{
    reap_ckpt_close(m->ck);
    reap_config_free(&m->cfg);
}

typedef struct loaded {
    reap_config cfg;
    reap_ckpt *ck;
    reap_samples samples;
    reap_rows rows;
} loaded;

static inline int load(const char *dir, const char *calib, int seq_len, int pack, loaded *l)
{
    int rc;
    memset(l, 0, sizeof *l);
    if ((rc = fx_open_(dir, &l->cfg, &l->ck)) ||
        (rc = reap_samples_read_jsonl(calib, 0, l->cfg.vocab, &l->samples)) ||
        (rc = reap_rows_build(&l->samples, seq_len, pack, &l->rows)))
        return rc;
    return REAP_OK;
}

static inline void unload(loaded *l)
{
    reap_rows_free(&l->rows);
    reap_samples_free(&l->samples);
    reap_ckpt_close(l->ck);
    reap_config_free(&l->cfg);
}

static inline void gen_loaded(const reap_gen_spec *spec, const char *dir, const char *calib,
                              int n_samples, int min_len, int max_len, uint64_t calib_seed,
                              int seq_len, loaded *l)
{
    CHECK_RC(reap_gen_model(spec, dir), REAP_OK);
    CHECK_RC(reap_gen_calib(calib, n_samples, min_len, max_len, spec->vocab, calib_seed),
             REAP_OK);
    CHECK_RC(load(dir, calib, seq_len, 1, l), REAP_OK);
}

static inline void make_rows(reap_rows *r, int vocab, int n_rows, int seq_len, unsigned seed,
                             int gap)
{
    const size_t T = (size_t)n_rows * (size_t)seq_len;
    memset(r, 0, sizeof *r);
    r->n_rows = n_rows;
    r->seq_len = seq_len;
    r->tokens = malloc(T * sizeof *r->tokens);
    r->mask = malloc(T);
    if (!r->tokens || !r->mask)
        fx_die_("make_rows", "out of memory");
    for (size_t i = 0; i < T; i++) {
        seed = seed * 1103515245u + 12345u;
        r->tokens[i] = (int32_t)((seed >> 8) % (unsigned)vocab);
        r->mask[i] = (int)(i % (size_t)seq_len) != gap;
        r->n_valid += r->mask[i];
    }
}

static inline int poke_f32(const char *dir, const char *name, int64_t elem, float value)
{
    reap_ckpt *ck;
    int rc = reap_ckpt_open(dir, &ck);
    if (rc)
        return rc;
    for (size_t i = 0; i < reap_ckpt_n_files(ck); i++) {
        const st_file *f = reap_ckpt_file(ck, i);
        const st_tensor *t = st_file_find(f, name);
        if (!t)
            continue;
        const off_t off =
            (off_t)(st_file_data_offset(f) + t->begin + (uint64_t)elem * sizeof value);
        char path[FX_PATH_MAX];
        fx_format_(path, sizeof path, "%s", st_file_path(f));
        reap_ckpt_close(ck);
        int fd = open(path, O_WRONLY);
        if (fd < 0)
            return REAP_E_IO;
        ssize_t w = pwrite(fd, &value, sizeof value, off);
        close(fd);
        return w == sizeof value ? REAP_OK : REAP_E_IO;
    }
    reap_ckpt_close(ck);
    return REAP_E_NOTFOUND;
}

static inline void free_stats(reap_layer_stats *s, int n)
{
    for (int i = 0; s && i < n; i++)
        reap_layer_stats_free(&s[i]);
    free(s);
}

static inline int stats_identical(const reap_layer_stats *a, const reap_layer_stats *b, int n)
{
    for (int i = 0; i < n; i++) {
        const size_t E = (size_t)a[i].n_experts;
        if (a[i].layer != b[i].layer || a[i].tokens != b[i].tokens ||
            memcmp(a[i].count, b[i].count, E * sizeof(int64_t)) ||
            memcmp(a[i].sum_gate_norm, b[i].sum_gate_norm, E * sizeof(double)) ||
            memcmp(a[i].sum_norm, b[i].sum_norm, E * sizeof(double)) ||
            memcmp(a[i].sum_gate, b[i].sum_gate, E * sizeof(double)) ||
            memcmp(a[i].max_act, b[i].max_act, E * sizeof(float)))
            return 0;
    }
    return 1;
}

static inline double rel_diff(double a, double b)
{
    const double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return m == 0.0 ? 0.0 : fabs(a - b) / m;
}

static inline const uint8_t *test_png8(size_t *n)
{
    static const uint8_t png[] = {
        137,80,78,71,13,10,26,10,0,0,0,13,73,72,68,82,0,0,0,8,0,0,0,8,8,2,0,0,0,75,109,41,
        220,0,0,0,175,73,68,65,84,120,218,109,206,145,2,128,48,20,0,192,39,73,146,36,73,50,
        73,146,36,73,146,100,50,73,146,36,73,38,201,100,146,36,73,50,73,146,73,146,36,73,
        146,36,73,146,36,73,50,73,242,126,160,251,130,3,0,176,109,59,8,130,36,73,24,99,66,
        136,113,28,247,125,7,77,211,16,66,97,24,166,105,202,57,111,219,118,154,166,227,56,
        64,215,117,199,113,162,40,202,178,172,44,203,174,235,230,121,62,207,19,12,195,112,
        93,23,99,156,231,121,85,85,82,202,101,89,174,235,2,211,52,61,207,35,132,80,74,235,
        186,238,251,126,93,215,251,190,193,178,44,223,247,227,56,46,138,162,105,154,97,24,
        182,109,83,74,253,151,158,231,129,223,210,251,190,31,151,152,91,225,164,41,165,11,
        0,0,0,0,73,69,78,68,174,66,96,130};
    *n = sizeof png;
    return png;
}

#endif

/* test_safetensors.c - safetensors reader/writer: round trip, layout, and every kind of
 * malformed file the reader must refuse (each with the right status and a message that
 * names the file and the offending tensor or field).
 *
 * Usage: test_safetensors SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reap_err.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Write u64 LE `hlen`, the header string, then `ndata` data bytes (i & 0xff). */
static void write_raw(const char *name, uint64_t hlen, const char *header, size_t ndata)
{
    FILE *fp = fopen(sp(name), "wb");
    CHECK(fp != NULL);
    if (!fp)
        return;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < ndata; i++)
        fputc((int)(i & 0xff), fp);
    fclose(fp);
}

/* Header length = exactly the header string. */
static void write_file(const char *name, const char *header, size_t ndata)
{
    write_raw(name, strlen(header), header, ndata);
}

/* Open must fail with `want`; the message must name `name` and contain `field`. */
static void expect_bad(const char *name, int want, const char *field)
{
    st_file *f = (st_file *)1;
    reap_err_clear();
    int rc = st_file_open(sp(name), &f);
    CHECK_MSG(rc == want, "%s: got %d want %d (%s)", name, rc, want, reap_err_msg());
    CHECK(f == NULL);
    CHECK_ERRMSG(name);
    if (field)
        CHECK_ERRMSG(field);
    if (rc == REAP_OK)
        st_file_close(f);
}

/* ---- round trip -------------------------------------------------------------------- */

static const st_write_spec rt_specs[] = {
    {"b.f32", ST_F32, 2, {2, 3}},
    {"a.bf16", ST_BF16, 1, {4}},
    {"scalar", ST_F64, 0, {0}},
    {"empty", ST_F16, 2, {0, 5}},
    {"c.i8", ST_I8, 1, {3}},
    {"d.i64", ST_I64, 3, {1, 2, 1}},
    {"bool", ST_BOOL, 1, {5}},
};
#define RT_N (sizeof rt_specs / sizeof rt_specs[0])
/* Descending element size, then name. */
static const char *rt_order[RT_N] = {"d.i64", "scalar", "b.f32", "a.bf16",
                                     "empty", "bool",   "c.i8"};

static unsigned char pattern(size_t index, uint64_t j)
{
    return (unsigned char)(index * 31 + j * 7 + 1);
}

struct fill_log {
    size_t calls;
    size_t order[16];
    int fail_at; /* -1: never */
};

static int rt_fill(void *ud, size_t index, void *dst, uint64_t nbytes)
{
    struct fill_log *log = ud;
    if (log->calls < 16)
        log->order[log->calls] = index;
    if ((int)log->calls == log->fail_at) {
        log->calls++;
        return reap_err_set(REAP_E_CANCELLED, "stopped by the test");
    }
    log->calls++;
    unsigned char *p = dst;
    for (uint64_t j = 0; j < nbytes; j++)
        p[j] = pattern(index, j);
    return REAP_OK;
}

static void test_round_trip(void)
{
    const char *path = sp("rt.safetensors");
    struct fill_log log = {0, {0}, -1};
    CHECK_RC(st_write_file(path, rt_specs, RT_N, rt_fill, &log), REAP_OK);
    CHECK(log.calls == RT_N);
    for (size_t i = 0; i < RT_N && i < log.calls; i++)
        CHECK_MSG(strcmp(rt_specs[log.order[i]].name, rt_order[i]) == 0,
                  "fill call %zu was '%s', want '%s'", i, rt_specs[log.order[i]].name,
                  rt_order[i]);
    CHECK(!file_exists(sp("rt.safetensors.tmp")));

    /* The data buffer starts at a multiple of 8; the padding is spaces. */
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    if (fp) {
        unsigned char le[8];
        CHECK(fread(le, 1, 8, fp) == 8);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | le[i];
        CHECK_MSG((8 + n) % 8 == 0, "data starts at %llu", (unsigned long long)(8 + n));
        char *hdr = calloc(1, n + 1);
        CHECK(hdr && fread(hdr, 1, n, fp) == n);
        if (hdr) {
            CHECK(hdr[0] == '{');
            size_t k = n;
            while (k > 0 && hdr[k - 1] == ' ')
                k--;
            CHECK(k > 0 && hdr[k - 1] == '}');
            CHECK(n - k < 8);
            free(hdr);
        }
        fclose(fp);
    }

    st_file *f = NULL;
    CHECK_RC(st_file_open(path, &f), REAP_OK);
    if (!f)
        return;
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (uint64_t)sb.st_size == st_file_size(f));
    CHECK(strcmp(st_file_path(f), path) == 0);
    CHECK(st_file_n_tensors(f) == RT_N);
    const char *fmt = st_file_metadata(f, "format");
    CHECK(fmt && strcmp(fmt, "pt") == 0);
    CHECK(st_file_metadata(f, "nope") == NULL);

    uint64_t pos = 0;
    for (size_t i = 0; i < st_file_n_tensors(f); i++) {
        const st_tensor *t = st_file_tensor(f, i);
        CHECK_MSG(strcmp(t->name, rt_order[i]) == 0, "tensor %zu is '%s', want '%s'", i,
                  t->name, rt_order[i]);
        CHECK(t->begin == pos);
        CHECK(t->nbytes == t->end - t->begin);
        pos = t->end;
        CHECK(st_file_find(f, t->name) == t);
    }
    CHECK(st_file_tensor(f, RT_N) == NULL);
    CHECK(pos + 8 <= st_file_size(f));

    for (size_t s = 0; s < RT_N; s++) {
        const st_write_spec *sp = &rt_specs[s];
        const st_tensor *t = st_file_find(f, sp->name);
        CHECK_MSG(t != NULL, "'%s' not found", sp->name);
        if (!t)
            continue;
        CHECK(t->dtype == sp->dtype);
        CHECK(t->ndim == sp->ndim);
        int64_t numel = 1;
        for (int d = 0; d < sp->ndim; d++) {
            CHECK(t->shape[d] == sp->shape[d]);
            numel *= sp->shape[d];
        }
        CHECK(t->numel == numel);
        CHECK(t->nbytes == (uint64_t)numel * st_dtype_bits(sp->dtype) / 8);
        const unsigned char *p = t->data;
        int same = 1;
        for (uint64_t j = 0; j < t->nbytes; j++)
            same &= p[j] == pattern(s, j);
        CHECK_MSG(same, "'%s' data differs", sp->name);
        /* Element-aligned: every tensor here starts at a multiple of its element size
         * from an 8-aligned data start. */
        CHECK(t->begin % (st_dtype_bits(sp->dtype) / 8) == 0);
    }
    const st_tensor *sc = st_file_find(f, "scalar");
    CHECK(sc && sc->ndim == 0 && sc->numel == 1 && sc->nbytes == 8);
    const st_tensor *em = st_file_find(f, "empty");
    CHECK(em && em->numel == 0 && em->nbytes == 0 && em->begin == em->end);
    CHECK(st_file_find(f, "missing") == NULL);
    CHECK(st_file_find(f, "") == NULL);
    CHECK(st_file_find(f, "zzz") == NULL);
    st_file_close(f);
    st_file_close(NULL);
}

static void test_write_errors(void)
{
    struct fill_log log = {0, {0}, -1};
    const st_write_spec dup[] = {
        {"x", ST_F32, 1, {2}}, {"dupname", ST_F32, 1, {2}}, {"dupname", ST_BF16, 1, {2}}};
    reap_err_clear();
    CHECK_RC(st_write_file(sp("dup_w.safetensors"), dup, 3, rt_fill, &log),
             REAP_E_INVALID);
    CHECK_ERRMSG("dupname");
    CHECK_ERRMSG("dup_w.safetensors");
    CHECK(!file_exists(sp("dup_w.safetensors")));
    CHECK(!file_exists(sp("dup_w.safetensors.tmp")));
    CHECK(log.calls == 0);

    const st_write_spec neg[] = {{"negdim", ST_F32, 2, {2, -3}}};
    CHECK_RC(st_write_file(sp("neg_w.safetensors"), neg, 1, rt_fill, &log),
             REAP_E_INVALID);
    CHECK_ERRMSG("negdim");
    CHECK_ERRMSG("[2, -3]");

    const st_write_spec toomany[] = {{"deep", ST_F32, ST_MAX_DIMS + 1, {1}}};
    CHECK_RC(st_write_file(sp("deep_w.safetensors"), toomany, 1, rt_fill, &log),
             REAP_E_INVALID);
    CHECK_ERRMSG("deep");

    const st_write_spec meta[] = {{"__metadata__", ST_F32, 1, {1}}};
    CHECK_RC(st_write_file(sp("meta_w.safetensors"), meta, 1, rt_fill, &log),
             REAP_E_INVALID);

    /* fill's status aborts the write; neither file is left behind. */
    log.fail_at = 2;
    CHECK_RC(st_write_file(sp("fill_w.safetensors"), rt_specs, RT_N, rt_fill, &log),
             REAP_E_CANCELLED);
    CHECK_ERRMSG("stopped by the test");
    CHECK(log.calls == 3);
    CHECK(!file_exists(sp("fill_w.safetensors")));
    CHECK(!file_exists(sp("fill_w.safetensors.tmp")));

    /* A directory that does not exist: I/O error. */
    log.fail_at = -1;
    CHECK_RC(st_write_file(sp("no/such/dir/x.safetensors"), rt_specs, RT_N, rt_fill, &log),
             REAP_E_IO);
    CHECK_ERRMSG("x.safetensors.tmp");
}

static void test_empty_files(void)
{
    /* Written with no tensors: header only, valid. */
    struct fill_log log = {0, {0}, -1};
    st_file *f = NULL;
    CHECK_RC(st_write_file(sp("none.safetensors"), NULL, 0, rt_fill, &log), REAP_OK);
    CHECK(log.calls == 0);
    CHECK_RC(st_file_open(sp("none.safetensors"), &f), REAP_OK);
    if (f) {
        CHECK(st_file_n_tensors(f) == 0);
        CHECK(st_file_find(f, "x") == NULL);
        CHECK(st_file_metadata(f, "format") && strcmp(st_file_metadata(f, "format"), "pt") == 0);
        CHECK(st_file_size(f) % 8 == 0);
        st_file_close(f);
    }

    /* Hand-written "{}" with padding and no data: valid, no metadata. */
    write_file("bare.safetensors", "{}      ", 0);
    f = NULL;
    CHECK_RC(st_file_open(sp("bare.safetensors"), &f), REAP_OK);
    if (f) {
        CHECK(st_file_n_tensors(f) == 0);
        CHECK(st_file_metadata(f, "format") == NULL);
        st_file_close(f);
    }

    /* Zero-size tensors at the start, in the middle and at the end; JSON key order
     * unrelated to offsets. */
    write_file("zeros.safetensors",
               "{\"z_end\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[6,6]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
               "\"z_mid\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
               "\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]},"
               "\"z0\":{\"dtype\":\"F64\",\"shape\":[0,2],\"data_offsets\":[0,0]},"
               "\"__metadata__\":{\"k\":\"v\"}}",
               6);
    f = NULL;
    CHECK_RC(st_file_open(sp("zeros.safetensors"), &f), REAP_OK);
    if (f) {
        static const char *order[] = {"z0", "a", "z_mid", "b", "z_end"};
        CHECK(st_file_n_tensors(f) == 5);
        for (size_t i = 0; i < 5 && i < st_file_n_tensors(f); i++)
            CHECK_MSG(strcmp(st_file_tensor(f, i)->name, order[i]) == 0, "%zu: %s", i,
                      st_file_tensor(f, i)->name);
        const st_tensor *b = st_file_find(f, "b");
        CHECK(b && ((const unsigned char *)b->data)[0] == 4);
        CHECK(st_file_metadata(f, "k") && strcmp(st_file_metadata(f, "k"), "v") == 0);
        st_file_close(f);
    }
}

/* ---- malformed files --------------------------------------------------------------- */

#define ENTRY(name, dtype, shape, b, e)                                                  \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e \
    "]}"

static void test_bad_files(void)
{
    write_bytes(sp("empty0.safetensors"), "", 0);
    expect_bad("empty0.safetensors", REAP_E_FORMAT, "0 bytes");

    write_bytes(sp("short.safetensors"), "\x02\0\0\0\0", 5);
    expect_bad("short.safetensors", REAP_E_FORMAT, "too short");

    write_raw("hdr_eof.safetensors", 1000, "{}", 0);
    expect_bad("hdr_eof.safetensors", REAP_E_FORMAT, "header length 1000");

    write_raw("hdr_big.safetensors", 200000000ULL, "{}", 0);
    expect_bad("hdr_big.safetensors", REAP_E_FORMAT, "header length 200000000");

    write_raw("hdr_huge.safetensors", UINT64_MAX, "{}", 0);
    expect_bad("hdr_huge.safetensors", REAP_E_FORMAT, "header length");

    write_file("bad_json.safetensors", "{\"w\":{\"dtype\":", 0);
    expect_bad("bad_json.safetensors", REAP_E_FORMAT, "JSON");

    write_file("garbage_after.safetensors", "{} x", 0);
    expect_bad("garbage_after.safetensors", REAP_E_FORMAT, "JSON");

    write_file("empty_hdr.safetensors", "", 0);
    expect_bad("empty_hdr.safetensors", REAP_E_FORMAT, "JSON");

    write_file("not_obj.safetensors", "[1, 2]", 0);
    expect_bad("not_obj.safetensors", REAP_E_FORMAT, "not a JSON object");

    write_file("entry_not_obj.safetensors", "{\"w\": 3}", 0);
    expect_bad("entry_not_obj.safetensors", REAP_E_FORMAT, "'w'");

    write_file("dtype.safetensors", "{" ENTRY("wdt", "F4", "[2]", 0, 1) "}", 1);
    expect_bad("dtype.safetensors", REAP_E_FORMAT, "'wdt'");
    CHECK_ERRMSG("F4");

    write_file("no_dtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    expect_bad("no_dtype.safetensors", REAP_E_FORMAT, "dtype");

    write_file("mismatch.safetensors", "{" ENTRY("wm", "BF16", "[2,3]", 0, 10) "}", 10);
    expect_bad("mismatch.safetensors", REAP_E_FORMAT, "'wm'");
    CHECK_ERRMSG("data_offsets [0, 10] hold 10 bytes but shape [2, 3] of BF16 needs 12");

    write_file("overflow.safetensors",
               "{" ENTRY("wo", "F64", "[4294967296,4294967296]", 0, 8) "}", 8);
    expect_bad("overflow.safetensors", REAP_E_FORMAT, "'wo'");

    write_file("overlap.safetensors",
               "{" ENTRY("ov_a", "F32", "[2]", 0, 8) "," ENTRY("ov_b", "F32", "[2]", 4, 12) "}",
               12);
    expect_bad("overlap.safetensors", REAP_E_FORMAT, "overlap");
    CHECK_ERRMSG("'ov_b'");

    write_file("gap.safetensors",
               "{" ENTRY("gp_a", "F32", "[1]", 0, 4) "," ENTRY("gp_b", "F32", "[1]", 8, 12) "}",
               12);
    expect_bad("gap.safetensors", REAP_E_FORMAT, "gap");
    CHECK_ERRMSG("'gp_b'");

    write_file("gap0.safetensors", "{" ENTRY("g0", "U8", "[4]", 2, 6) "}", 6);
    expect_bad("gap0.safetensors", REAP_E_FORMAT, "'g0'");

    write_file("trailing.safetensors", "{" ENTRY("tr_a", "F32", "[1]", 0, 4) "}", 6);
    expect_bad("trailing.safetensors", REAP_E_FORMAT, "2 trailing bytes");
    CHECK_ERRMSG("'tr_a'");

    write_file("trailing0.safetensors", "{}", 3);
    expect_bad("trailing0.safetensors", REAP_E_FORMAT, "trailing");

    write_file("past_end.safetensors", "{" ENTRY("pe", "F32", "[2]", 0, 8) "}", 4);
    expect_bad("past_end.safetensors", REAP_E_FORMAT, "'pe'");

    write_file("dup.safetensors",
               "{" ENTRY("dupname", "U8", "[1]", 0, 1) "," ENTRY("dupname", "U8", "[1]", 1, 2) "}",
               2);
    expect_bad("dup.safetensors", REAP_E_FORMAT, "dupname");

    write_file("begin_end.safetensors", "{" ENTRY("be", "U8", "[0]", 8, 4) "}", 8);
    expect_bad("begin_end.safetensors", REAP_E_FORMAT, "'be'");
    CHECK_ERRMSG("begin > end");

    write_file("negdim.safetensors", "{" ENTRY("nd", "U8", "[-1]", 0, 0) "}", 0);
    expect_bad("negdim.safetensors", REAP_E_FORMAT, "'nd'");
    CHECK_ERRMSG("shape[0]");

    write_file("realdim.safetensors", "{" ENTRY("rd", "U8", "[2.0]", 0, 2) "}", 2);
    expect_bad("realdim.safetensors", REAP_E_FORMAT, "'rd'");

    write_file("ndims.safetensors", "{" ENTRY("nine", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}",
               1);
    expect_bad("ndims.safetensors", REAP_E_FORMAT, "'nine'");

    write_file("offs.safetensors",
               "{\"of\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1);
    expect_bad("offs.safetensors", REAP_E_FORMAT, "'of'");
    CHECK_ERRMSG("data_offsets");

    write_file("meta_val.safetensors",
               "{\"__metadata__\":{\"format\":\"pt\",\"epochs\":1}," ENTRY("m", "U8", "[1]", 0, 1)
               "}",
               1);
    expect_bad("meta_val.safetensors", REAP_E_FORMAT, "__metadata__");
    CHECK_ERRMSG("'epochs'");

    write_file("meta_obj.safetensors", "{\"__metadata__\":[]}", 0);
    expect_bad("meta_obj.safetensors", REAP_E_FORMAT, "__metadata__");

    /* Not there at all: an I/O error naming the path. */
    expect_bad("does_not_exist.safetensors", REAP_E_NOTFOUND, "No such file");
    /* A FIFO (a writer never comes) is refused at once, not waited on. */
    unlink(sp("fifo.safetensors"));
    CHECK(mkfifo(sp("fifo.safetensors"), 0600) == 0);
    expect_bad("fifo.safetensors", REAP_E_INVALID, "is a FIFO, not a regular file");
}

static void test_dtypes(void)
{
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        st_dtype back;
        CHECK_RC(st_dtype_from_name(st_dtype_name((st_dtype)d), &back), REAP_OK);
        CHECK(back == (st_dtype)d);
        CHECK(st_dtype_bits((st_dtype)d) % 8 == 0 && st_dtype_bits((st_dtype)d) >= 8);
    }
    st_dtype x;
    CHECK_RC(st_dtype_from_name("bf16", &x), REAP_E_FORMAT);
    CHECK_ERRMSG("bf16");
    CHECK(st_dtype_bits(ST_BF16) == 16 && st_dtype_bits(ST_F8_E4M3) == 8 &&
          st_dtype_bits(ST_U64) == 64 && st_dtype_bits(ST_BOOL) == 8);
    CHECK(strcmp(st_dtype_name(ST_F8_E5M2), "F8_E5M2") == 0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    alarm(60); /* an open that waits on a FIFO must fail the test, not hang it */
    if (make_dirs(scratch) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", scratch, strerror(errno));
        return 2;
    }
    test_dtypes();
    test_round_trip();
    test_write_errors();
    test_empty_files();
    test_bad_files();
    TEST_MAIN_END();
}

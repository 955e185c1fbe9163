/* test_fsutil.c - the atomic file write and the file copy of common/fsutil.h.
 *
 * reap_write_atomic / reap_atomic_*: the target holds the old bytes or the whole new
 * ones, never a part (checked while a streaming write is open); the mode is the one asked
 * for, even over a stale temp file of another mode; every failure (an aborted write, a
 * rename that cannot happen, a directory that cannot be written) leaves no temp file and
 * the old target as it was.
 * reap_copy_range: copy_file_range and the forced pread/write fallback give the same
 * bytes as the source, for a range larger than one copy chunk, from a non-zero offset;
 * a source shorter than the range is an error on both paths.
 * reap_read_full: exactly the bytes asked for, from a file and across a pipe's pieces; a
 * file that ends first or a descriptor that cannot be read is REAP_E_IO naming the file.
 *
 * Usage: test_fsutil SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "reap_err.h"
#include "test_util.h"

static const char *scratch;

static const char *sp(const char *name)
{
    static char buf[4][4096];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", scratch, name);
    return buf[k];
}

static int file_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The whole file at p equals want[0..len). */
static int file_is(const char *p, const void *want, size_t len)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return 0;
    unsigned char *got = malloc(len + 1);
    size_t n = got ? fread(got, 1, len + 1, f) : 0;
    fclose(f);
    int ok = got && n == len && memcmp(got, want, len) == 0;
    free(got);
    return ok;
}

static unsigned file_mode(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0u;
}

static void test_whole_buffer(void)
{
    const char *t = sp("a.txt");
    CHECK_RC(reap_write_atomic(t, "first\n", 6, 0640), REAP_OK);
    CHECK(file_is(t, "first\n", 6));
    CHECK(file_mode(t) == 0640);
    CHECK(!file_exists(sp("a.txt.tmp")));

    /* replaced whole; an empty buffer is a valid (empty) file */
    CHECK_RC(reap_write_atomic(t, "second, longer\n", 15, 0640), REAP_OK);
    CHECK(file_is(t, "second, longer\n", 15));
    CHECK_RC(reap_write_atomic(sp("empty"), "", 0, 0644), REAP_OK);
    CHECK(file_is(sp("empty"), "", 0));

    /* a stale temp file of a killed writer, with a wider mode, does not lend its mode */
    int fd = open(sp("key.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "stale stale stale", 17) == 17);
        fchmod(fd, 0666);
        close(fd);
    }
    CHECK_RC(reap_write_atomic(sp("key"), "secret", 6, 0600), REAP_OK);
    CHECK(file_is(sp("key"), "secret", 6));
    CHECK(file_mode(sp("key")) == 0600);
    CHECK(!file_exists(sp("key.tmp")));
}

static void test_streaming(void)
{
    const char *t = sp("s.bin");
    CHECK_RC(reap_write_atomic(t, "old", 3, 0644), REAP_OK);

    /* while open, the target still holds the old bytes; commit puts the new ones whole */
    reap_atomic af;
    CHECK_RC(reap_atomic_open(t, 0644, 0, &af), REAP_OK);
    CHECK(af.fp == NULL && af.fd >= 0);
    CHECK(file_exists(sp("s.bin.tmp")));
    CHECK_RC(reap_write_all(af.fd, "new part one, ", 14, af.tmp), REAP_OK);
    CHECK(file_is(t, "old", 3));
    CHECK_RC(reap_write_all(af.fd, "part two", 8, af.tmp), REAP_OK);
    CHECK(file_is(t, "old", 3));
    CHECK_RC(reap_atomic_commit(&af), REAP_OK);
    CHECK(file_is(t, "new part one, part two", 22));
    CHECK(!file_exists(sp("s.bin.tmp")));
    CHECK(af.path == NULL && af.tmp == NULL && af.fd == -1);
    reap_atomic_abort(&af); /* released: a no-op */
    CHECK(file_is(t, "new part one, part two", 22));

    /* abort: the temp file goes, the target stays */
    CHECK_RC(reap_atomic_open(t, 0644, 0, &af), REAP_OK);
    CHECK_RC(reap_write_all(af.fd, "never seen", 10, af.tmp), REAP_OK);
    reap_atomic_abort(&af);
    CHECK(file_is(t, "new part one, part two", 22));
    CHECK(!file_exists(sp("s.bin.tmp")));

    /* stdio form with a per-process temp name */
    char pidtmp[64];
    snprintf(pidtmp, sizeof pidtmp, "f.json.tmp.%ld", (long)getpid());
    unlink(sp("f.json")); /* from an earlier run in the same scratch directory */
    CHECK_RC(reap_atomic_open(sp("f.json"), 0644, REAP_ATOMIC_STDIO | REAP_ATOMIC_PID_TMP, &af),
             REAP_OK);
    CHECK(af.fp != NULL);
    CHECK(file_exists(sp(pidtmp)));
    fprintf(af.fp, "{\"n\": %d}\n", 42);
    CHECK(!file_exists(sp("f.json")));
    CHECK_RC(reap_atomic_commit(&af), REAP_OK);
    CHECK(file_is(sp("f.json"), "{\"n\": 42}\n", 10));
    CHECK(file_mode(sp("f.json")) == 0644);
    CHECK(!file_exists(sp(pidtmp)));
}

static void test_failures_leave_nothing(void)
{
    /* the rename cannot happen (the target is a non-empty directory): the error names
     * the path, the temp file is gone, the directory and its file are untouched */
    const char *d = sp("isdir");
    mkdir(d, 0755);
    CHECK_RC(reap_write_atomic(sp("isdir/inside"), "keep", 4, 0644), REAP_OK);
    CHECK_RC(reap_write_atomic(d, "data", 4, 0644), REAP_E_IO);
    CHECK_ERRMSG("isdir");
    CHECK(!file_exists(sp("isdir.tmp")));
    CHECK(file_is(sp("isdir/inside"), "keep", 4));

    /* the same through the streaming form, after data was written */
    reap_atomic af;
    CHECK_RC(reap_atomic_open(d, 0644, REAP_ATOMIC_STDIO, &af), REAP_OK);
    fputs("streamed", af.fp);
    CHECK_RC(reap_atomic_commit(&af), REAP_E_IO);
    CHECK(!file_exists(sp("isdir.tmp")));
    CHECK(af.fp == NULL && af.fd == -1 && af.tmp == NULL);

    /* no such directory: open fails naming the temp file, nothing is created */
    CHECK_RC(reap_write_atomic(sp("nodir/x"), "x", 1, 0644), REAP_E_IO);
    CHECK_ERRMSG("nodir/x.tmp");
    CHECK(!file_exists(sp("nodir")));

    /* a directory this user cannot write (meaningless for root, who writes anyway) */
    if (geteuid() != 0) {
        const char *ro = sp("ro");
        mkdir(ro, 0755);
        CHECK_RC(reap_write_atomic(sp("ro/t"), "old", 3, 0644), REAP_OK);
        chmod(ro, 0555);
        CHECK_RC(reap_write_atomic(sp("ro/t"), "new", 3, 0644), REAP_E_IO);
        CHECK_ERRMSG("ro/t.tmp");
        CHECK(file_is(sp("ro/t"), "old", 3));
        CHECK(!file_exists(sp("ro/t.tmp")));
        chmod(ro, 0755);
    } else {
        printf("(running as root: the read-only directory case is not meaningful)\n");
    }
}

/* Fill a file with n pseudo-random bytes; returns them (caller frees). */
static unsigned char *make_source(const char *p, size_t n)
{
    unsigned char *b = malloc(n);
    if (!b)
        return NULL;
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)(x >> 24);
    }
    if (reap_write_atomic(p, b, n, 0644) != REAP_OK) {
        free(b);
        return NULL;
    }
    return b;
}

/* Copy [off, off+len) of src into a fresh dst with the given flags; check the bytes. */
static void copy_and_check(const char *src, const unsigned char *want, uint64_t off,
                           uint64_t len, unsigned flags_in, const char *dst_name)
{
    char dst[4096];
    snprintf(dst, sizeof dst, "%s", sp(dst_name));
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(in >= 0 && out >= 0);
    unsigned flags = flags_in;
    CHECK_RC(reap_copy_range(in, off, len, out, &flags, src, dst), REAP_OK);
    if (flags_in & REAP_COPY_FALLBACK)
        CHECK(flags & REAP_COPY_FALLBACK);
    /* in's own offset is neither used nor moved */
    CHECK(lseek(in, 0, SEEK_CUR) == 0);
    close(in);
    close(out);
    CHECK_MSG(file_is(dst, want + off, (size_t)len), "%s (flags %u)", dst, flags_in);
}

static void test_copy(void)
{
    size_t n = (size_t)REAP_COPY_CHUNK + 3 * 4096 + 123; /* more than one chunk */
    char src[4096]; /* sp's buffers rotate: keep the source name */
    snprintf(src, sizeof src, "%s", sp("copy_src.bin"));
    unsigned char *b = make_source(src, n);
    CHECK(b != NULL);
    if (!b)
        return;
    copy_and_check(src, b, 0, n, 0, "copy_cfr.bin");
    copy_and_check(src, b, 0, n, REAP_COPY_FALLBACK, "copy_fallback.bin");
    copy_and_check(src, b, 7, n - 7 - 5, 0, "copy_cfr_mid.bin");
    copy_and_check(src, b, 7, n - 7 - 5, REAP_COPY_FALLBACK, "copy_fallback_mid.bin");

    /* appended at out's current offset */
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = open(sp("copy_two.bin"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    unsigned fl = REAP_COPY_FALLBACK;
    CHECK_RC(reap_copy_range(in, 0, 100, out, NULL, src, "two"), REAP_OK);
    CHECK_RC(reap_copy_range(in, 100, 50, out, &fl, src, "two"), REAP_OK);
    close(out);
    CHECK(file_is(sp("copy_two.bin"), b, 150));

    /* the source ends before off + len: an error on both paths, naming the source */
    for (int k = 0; k < 2; k++) {
        unsigned f = k ? REAP_COPY_FALLBACK : 0;
        out = open(sp("copy_short.bin"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK_RC(reap_copy_range(in, n - 10, 20, out, &f, src, "short"), REAP_E_IO);
        CHECK_ERRMSG("copy_src.bin");
        close(out);
    }
    close(in);
    free(b);
    unlink(src);
    unlink(sp("copy_cfr.bin"));
    unlink(sp("copy_fallback.bin"));
    unlink(sp("copy_cfr_mid.bin"));
    unlink(sp("copy_fallback_mid.bin"));
}

/* reap_read_full: exactly len bytes, in order, across the reads a pipe splits them into;
 * a file that ends first and a descriptor that cannot be read are REAP_E_IO naming the
 * file. */
static void test_read_full(void)
{
    const size_t n = 300000;
    const char *src = sp("read_full.src");
    unsigned char *want = make_source(src, n), *got = malloc(n + 1);
    CHECK(want != NULL && got != NULL);
    if (!want || !got)
        goto out;
    int fd = open(src, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_RC(reap_read_full(fd, got, n - 1000, src), REAP_OK);
    CHECK_RC(reap_read_full(fd, got + n - 1000, 1000, src), REAP_OK);
    CHECK(memcmp(got, want, n) == 0);
    CHECK_RC(reap_read_full(fd, got, 1, src), REAP_E_IO);   /* at end of file */
    CHECK_ERRMSG("read_full.src: read: short");
    close(fd);

    fd = open(src, O_RDONLY);
    CHECK_RC(reap_read_full(fd, got, n + 1, src), REAP_E_IO);   /* one byte too many */
    CHECK_ERRMSG("read: short");
    CHECK(memcmp(got, want, n) == 0);
    close(fd);

    fd = open(src, O_WRONLY);
    CHECK_RC(reap_read_full(fd, got, 1, src), REAP_E_IO);
    CHECK_ERRMSG("read_full.src: read: Bad file descriptor");
    close(fd);

    /* a pipe hands the bytes over in pieces of at most its capacity */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        _exit(reap_write_all(pfd[1], want, n, "pipe") == REAP_OK ? 0 : 1);
    }
    close(pfd[1]);
    memset(got, 0, n);
    CHECK_RC(reap_read_full(pfd[0], got, n, "pipe"), REAP_OK);
    CHECK(memcmp(got, want, n) == 0);
    close(pfd[0]);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
out:
    free(want);
    free(got);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    mkdir(scratch, 0755);
    umask(022);
    test_whole_buffer();
    test_streaming();
    test_failures_leave_nothing();
    test_copy();
    test_read_full();
    TEST_MAIN_END();
}

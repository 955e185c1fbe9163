/* test_filehash.c - the manifest's file digests (pruner/filehash.h):
 *   - SHA-256 from libcrypto equals libsodium's portable SHA-256 (the reference) on 300
 *     random buffers of random lengths (0 .. 70 000 bytes, and 1 MiB + 3), and the
 *     FIPS 180-2 test vectors;
 *   - reap_hash_file equals both libsodium digests of the bytes it read, for sizes around
 *     its 8 MiB read buffer (0, 1, 8 MiB - 1, 8 MiB, 8 MiB + 1, 17 MiB + 5);
 *   - reap_hash_files: every job hashed, a missing file fails alone;
 *   - the background hasher: digests equal reap_hash_file's; a file changed after it was
 *     hashed (size, or same size and a new mtime, or same size and mtime with the bytes
 *     edited in place: a new ctime) and a file never added are not found;
 *     freeing it with files still queued drops them (no crash, no leak under ASan).
 *
 * Usage: test_filehash SCRATCH_DIR (created if missing).
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "filehash.h"
#include "manifest.h" /* reap_hex */
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

static void ref_digests(const uint8_t *buf, size_t len, uint8_t b2[32], uint8_t sh[32])
{
    crypto_generichash(b2, 32, buf, len, NULL, 0);
    crypto_hash_sha256(sh, buf, len);
}

static void test_sha256(void)
{
    /* FIPS 180-2, appendix B.1 and B.2, and the empty message. */
    static const struct {
        const char *msg, *hex;
    } vec[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        uint8_t d[32];
        char hex[65];
        CHECK_RC(reap_sha256(vec[i].msg, strlen(vec[i].msg), d), REAP_OK);
        reap_hex(d, 32, hex);
        CHECK_MSG(!strcmp(hex, vec[i].hex), "vector %zu: %s", i, hex);
    }
    /* Random buffers against the reference. */
    size_t cap = (1u << 20) + 3;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    if (!buf)
        return;
    randombytes_buf(buf, cap);
    int bad = 0;
    for (int t = 0; t < 300; t++) {
        size_t len = t == 299 ? cap : randombytes_uniform(70001);
        size_t off = randombytes_uniform(64);
        if (off + len > cap)
            off = 0;
        uint8_t fast[32], ref[32];
        CHECK_RC(reap_sha256(buf + off, len, fast), REAP_OK);
        crypto_hash_sha256(ref, buf + off, len);
        bad += memcmp(fast, ref, 32) != 0;
    }
    CHECK_MSG(bad == 0, "%d of 300 random buffers differ from libsodium's SHA-256", bad);
    free(buf);
}

static void test_hash_file(void)
{
    const size_t M = 8u << 20;
    const size_t sizes[] = {0, 1, M - 1, M, M + 1, 2 * M + (1u << 20) + 5};
    size_t cap = sizes[5];
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    if (!buf)
        return;
    randombytes_buf(buf, cap);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *p = sp("f.bin");
        uint8_t b2[32], sh[32], rb2[32], rsh[32], only[32];
        uint64_t size = 12345;
        CHECK(put_file(p, buf, sizes[i]) == 0);
        ref_digests(buf, sizes[i], rb2, rsh);
        CHECK_RC(reap_hash_file(p, b2, sh, &size), REAP_OK);
        CHECK_MSG(size == sizes[i] && !memcmp(b2, rb2, 32) && !memcmp(sh, rsh, 32),
                  "size %zu: digests or size differ (size read %llu)", sizes[i],
                  (unsigned long long)size);
        CHECK_RC(reap_hash_file(p, only, NULL, NULL), REAP_OK);
        CHECK(!memcmp(only, rb2, 32));
    }
    CHECK_RC(reap_hash_file(sp("no-such-file"), NULL, NULL, NULL), REAP_E_NOTFOUND);
    CHECK_ERRMSG("no-such-file");
    free(buf);
}

static void test_hash_files(void)
{
    char name[5][16];
    uint8_t data[5][4000], rb2[5][32], rsh[5][32];
    reap_file_hash jobs[6];
    for (int i = 0; i < 5; i++) {
        snprintf(name[i], sizeof name[i], "m%d.bin", i);
        randombytes_buf(data[i], sizeof data[i]);
        CHECK(put_file(sp(name[i]), data[i], 1000u * (unsigned)i) == 0);
        ref_digests(data[i], 1000u * (unsigned)i, rb2[i], rsh[i]);
        jobs[i] = (reap_file_hash){.dir = scratch, .name = name[i], .with_sha = i != 2};
    }
    jobs[5] = (reap_file_hash){.dir = scratch, .name = "missing.bin", .with_sha = 1};
    reap_hash_files(jobs, 6);
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(jobs[i].rc == REAP_OK && jobs[i].size == 1000u * (unsigned)i &&
                      !memcmp(jobs[i].b2, rb2[i], 32),
                  "job %d", i);
        if (i != 2)
            CHECK(!memcmp(jobs[i].sh, rsh[i], 32));
    }
    CHECK(jobs[5].rc == REAP_E_NOTFOUND && strstr(jobs[5].msg, "missing.bin"));
}

static void test_hasher(void)
{
    reap_hasher *h = NULL;
    char name[6][16];
    uint8_t data[200000];
    CHECK_RC(reap_hasher_start(2, &h), REAP_OK);
    if (!h)
        return;
    for (int i = 0; i < 6; i++) {
        snprintf(name[i], sizeof name[i], "h%d.bin", i);
        randombytes_buf(data, sizeof data);
        CHECK(put_file(sp(name[i]), data, sizeof data - 7u * (unsigned)i) == 0);
        CHECK_RC(reap_hasher_add(h, scratch, name[i], i != 5), REAP_OK);
    }
    reap_hasher_wait(h);
    int nf = 0;
    uint64_t nb = 0;
    reap_hasher_counts(h, &nf, &nb);
    CHECK(nf == 6 && nb == 6 * sizeof data - 7u * (0 + 1 + 2 + 3 + 4 + 5));
    for (int i = 0; i < 6; i++) {
        const reap_file_hash *f = reap_hasher_find(h, scratch, name[i]);
        uint8_t b2[32], sh[32];
        uint64_t size = 0;
        CHECK_RC(reap_hash_file(sp(name[i]), b2, sh, &size), REAP_OK);
        CHECK_MSG(f && f->rc == REAP_OK && f->size == size && !memcmp(f->b2, b2, 32) &&
                      f->with_sha == (i != 5) && (i == 5 || !memcmp(f->sh, sh, 32)),
                  "hasher: %s", name[i]);
    }
    CHECK(reap_hasher_find(h, scratch, "never-added.bin") == NULL);
    CHECK(reap_hasher_find(h, "/elsewhere", name[0]) == NULL);
    /* Changed since it was hashed: longer, or the same size with a new mtime. */
    FILE *f = fopen(sp(name[1]), "ab");
    CHECK(f && fputc('x', f) != EOF && fclose(f) == 0);
    CHECK(reap_hasher_find(h, scratch, name[1]) == NULL);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
    CHECK(utimensat(AT_FDCWD, sp(name[2]), ts, 0) == 0);
    CHECK(reap_hasher_find(h, scratch, name[2]) == NULL);
    /* Same size, bytes changed in place, atime and mtime restored (as utime(2) or
     * `touch -d` can): only the ctime moved, and it is enough. The edit waits until the
     * kernel's timestamp clock has passed the file's ctime, so the edit's ctime is
     * another one (the clock must pass a point: polled, generous deadline). */
    struct stat before, after;
    CHECK(stat(sp(name[4]), &before) == 0);
    CHECK(wait_clock_past(CLOCK_REALTIME_COARSE, ts_ns(before.st_ctim), 5000));
    int fd = open(sp(name[4]), O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, "edit", 4, 100) == 4 && close(fd) == 0);
    struct timespec keep[2] = {before.st_atim, before.st_mtim};
    CHECK(utimensat(AT_FDCWD, sp(name[4]), keep, 0) == 0);
    CHECK(stat(sp(name[4]), &after) == 0 && after.st_size == before.st_size &&
          after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
          after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    CHECK_MSG(reap_hasher_find(h, scratch, name[4]) == NULL,
              "in-place edit with the mtime restored: the old digest was reused");
    CHECK(reap_hasher_find(h, scratch, name[3]) != NULL);
    reap_hasher_free(h);

    /* Freed with files still queued: they are dropped. */
    CHECK_RC(reap_hasher_start(1, &h), REAP_OK);
    for (int r = 0; r < 20 && h; r++)
        for (int i = 0; i < 6; i++)
            CHECK_RC(reap_hasher_add(h, scratch, name[i], 1), REAP_OK);
    reap_hasher_free(h);
    reap_hasher_free(NULL);
    reap_hasher_counts(NULL, &nf, &nb);
    CHECK(nf == 0 && nb == 0);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_filehash";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    if (sodium_init() < 0)
        return 1;
    test_sha256();
    test_hash_file();
    test_hash_files();
    test_hasher();
    TEST_MAIN_END();
}

/* test_fsopen.c - common/fsopen.h: opening user-named files for reading.
 *   - the type rule: a regular file opens (blocking); a FIFO (no writer: open must not
 *     wait), a symbolic link to a FIFO, a directory, a socket and /dev/null are refused
 *     with REAP_E_INVALID naming the file and its type; a missing file is
 *     REAP_E_NOTFOUND; REAP_OPEN_STREAM admits the FIFO and the stream is read whole
 *     once a writer comes, and stopped on request while no writer comes;
 *   - confinement: a file under a root opens; a link inside a root to a file inside it
 *     (a Hugging Face cache snapshot's link into blobs/) opens; a link to a file outside
 *     every root is refused REAP_E_DENIED naming the link and its target; no roots
 *     (NULL) is unconfined; an empty root list refuses everything.
 *   - reap_read_chunks: a file read to its end in chunks of the given size, each handed
 *     over in order with its offset, the total returned; a callback's error stops the
 *     read and is returned; an unreadable descriptor is REAP_E_IO naming the file.
 * A watchdog ends the test if an open blocks (the bug this guards against).
 *
 * Usage: test_fsopen SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsopen.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

static int open_rc(const char *path, const reap_roots *roots, int kind)
{
    int fd = -1, rc = reap_open_read(path, roots, kind, &fd);
    if (rc == REAP_OK) {
        int fl = fcntl(fd, F_GETFL);
        CHECK(fd >= 0);
        struct stat sb;
        /* a regular file comes back blocking */
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
            CHECK(fl >= 0 && !(fl & O_NONBLOCK));
        close(fd);
    } else {
        CHECK(fd == -1);
    }
    return rc;
}

static int stop_now(void *ud)
{
    int *calls = ud;
    return ++*calls >= 3;
}

static void *writer(void *arg)
{
    int fd = open((const char *)arg, O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "{\"input_ids\": [1]}\n", 19) != 19)
            perror("write");
        close(fd);
    }
    return NULL;
}

/* What the reap_read_chunks callback saw. */
typedef struct chunks_seen {
    unsigned char *copy;   /* [cap] the bytes, placed at their offsets */
    size_t cap, calls, max_n;
    uint64_t next_off;     /* where the next chunk must start */
    int out_of_order;
    size_t fail_at;        /* call number that returns REAP_E_FORMAT; 0: never */
} chunks_seen;

static int chunk_cb(void *ud, const void *data, size_t n, uint64_t off)
{
    chunks_seen *cs = ud;
    cs->calls++;
    if (cs->fail_at && cs->calls == cs->fail_at)
        return reap_err_set(REAP_E_FORMAT, "stop here");
    if (off != cs->next_off || n == 0 || off + n > cs->cap)
        cs->out_of_order = 1;
    else
        memcpy(cs->copy + off, data, n);
    if (n > cs->max_n)
        cs->max_n = n;
    cs->next_off = off + n;
    return REAP_OK;
}

static void test_read_chunks(const char *dir)
{
    char path[PATH_MAX + 32];
    const size_t n = 100000, cap = 4096;
    unsigned char *want = malloc(n), *buf = malloc(cap), *copy = calloc(1, n);
    CHECK(want && buf && copy);
    if (!want || !buf || !copy)
        goto out;
    for (size_t i = 0; i < n; i++)
        want[i] = (unsigned char)(i * 131 + (i >> 9));
    snprintf(path, sizeof path, "%s/chunks.bin", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(want, 1, n, f) == n && fclose(f) == 0);

    int fd = -1;
    uint64_t total = 7;
    chunks_seen cs = {.copy = copy, .cap = n};
    CHECK_RC(reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd), REAP_OK);
    CHECK_RC(reap_read_chunks(fd, path, buf, cap, chunk_cb, &cs, &total), REAP_OK);
    close(fd);
    CHECK(total == n);
    CHECK(!cs.out_of_order);
    CHECK(cs.max_n <= cap);
    CHECK_MSG(cs.calls >= (n + cap - 1) / cap, "%zu calls", cs.calls);
    CHECK(memcmp(copy, want, n) == 0);

    /* the callback's error ends the read and comes back; total counts what it took */
    chunks_seen stop = {.copy = copy, .cap = n, .fail_at = 3};
    CHECK_RC(reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd), REAP_OK);
    CHECK_RC(reap_read_chunks(fd, path, buf, cap, chunk_cb, &stop, &total), REAP_E_FORMAT);
    CHECK_ERRMSG("stop here");
    CHECK(stop.calls == 3);
    CHECK(total == stop.next_off);
    close(fd);

    /* an empty file: no call, total 0 */
    snprintf(path, sizeof path, "%s/chunks.empty", dir);
    f = fopen(path, "wb");
    CHECK(f && fclose(f) == 0);
    chunks_seen none = {.copy = copy, .cap = n};
    CHECK_RC(reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd), REAP_OK);
    CHECK_RC(reap_read_chunks(fd, path, buf, cap, chunk_cb, &none, &total), REAP_OK);
    CHECK(total == 0 && none.calls == 0);
    close(fd);

    /* a descriptor open for writing cannot be read: REAP_E_IO naming the file */
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK_RC(reap_read_chunks(fd, path, buf, cap, chunk_cb, &none, NULL), REAP_E_IO);
    CHECK_ERRMSG("chunks.empty: read: Bad file descriptor");
    close(fd);
out:
    free(want);
    free(buf);
    free(copy);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_fsopen";
    CHECK(fresh_dir(scratch) == 0);
    alarm(60); /* an open that blocks must fail the test, not hang it */
    char root[PATH_MAX], out[PATH_MAX], reg[PATH_MAX + 16], fifo[PATH_MAX + 16],
        sock[PATH_MAX + 16];
    CHECK(make_dirs(sp("root/blobs")) == 0 && make_dirs(sp("root/snap")) == 0 &&
          make_dirs(sp("outside")) == 0);
    CHECK(realpath(sp("root"), root) != NULL && realpath(sp("outside"), out) != NULL);
    snprintf(reg, sizeof reg, "%s/blobs/abc", root);
    write_text(reg, "hello");
    write_text(pj(out, "secret"), "secret");
    snprintf(fifo, sizeof fifo, "%s/fifo", root);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK(symlink(fifo, pj(root, "link-to-fifo")) == 0);
    CHECK(symlink("../blobs/abc", pj(root, "snap/config.json")) == 0);  /* HF cache */
    CHECK(symlink(pj(out, "secret"), pj(root, "snap/model.safetensors")) == 0);
    snprintf(sock, sizeof sock, "%s/sock", root);
    int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    CHECK(strlen(sock) < sizeof sa.sun_path);
    if (strlen(sock) < sizeof sa.sun_path)
        memcpy(sa.sun_path, sock, strlen(sock) + 1);
    CHECK(sfd >= 0 && bind(sfd, (struct sockaddr *)&sa, sizeof sa) == 0);

    /* ---- the type rule ---- */
    CHECK_RC(open_rc(reg, NULL, REAP_OPEN_REGULAR), REAP_OK);
    CHECK_RC(open_rc(fifo, NULL, REAP_OPEN_REGULAR), REAP_E_INVALID);
    CHECK_ERRMSG("/fifo: is a FIFO, not a regular file");
    CHECK_RC(open_rc(pj(root, "link-to-fifo"), NULL, REAP_OPEN_REGULAR), REAP_E_INVALID);
    CHECK_ERRMSG("link-to-fifo: is a FIFO");
    CHECK_RC(open_rc(pj(root, "blobs"), NULL, REAP_OPEN_REGULAR), REAP_E_INVALID);
    CHECK_ERRMSG("blobs: is a directory");
    CHECK_RC(open_rc(sock, NULL, REAP_OPEN_STREAM), REAP_E_INVALID);
    CHECK_ERRMSG("sock: is a socket");   /* (open(2) of a socket fails: ENXIO) */
    CHECK_RC(open_rc("/dev/null", NULL, REAP_OPEN_STREAM), REAP_E_INVALID);
    CHECK_ERRMSG("/dev/null: is a character device, not a regular file");
    CHECK_RC(open_rc(pj(root, "missing"), NULL, REAP_OPEN_REGULAR), REAP_E_NOTFOUND);
    CHECK_ERRMSG("missing: No such file");
    FILE *f = NULL;
    CHECK_RC(reap_fopen_read(fifo, NULL, &f), REAP_E_INVALID);
    CHECK(f == NULL);
    CHECK_RC(reap_fopen_read(reg, NULL, &f), REAP_OK);
    char line[16] = "";
    CHECK(f && fgets(line, sizeof line, f) && !strcmp(line, "hello"));
    if (f)
        fclose(f);

    /* ---- a FIFO as a stream: read once a writer comes; stopped while none comes ---- */
    int fd = -1, calls = 0;
    char *buf = NULL;
    size_t len = 0;
    CHECK_RC(reap_open_read(fifo, NULL, REAP_OPEN_STREAM, &fd), REAP_OK);
    CHECK_RC(reap_read_stream(fd, fifo, stop_now, &calls, &buf, &len), REAP_E_CANCELLED);
    CHECK_ERRMSG("stopped on request while waiting for data");
    CHECK(calls == 3 && buf == NULL);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, writer, fifo) == 0);
    CHECK_RC(reap_read_stream(fd, fifo, NULL, NULL, &buf, &len), REAP_OK);
    pthread_join(th, NULL);
    CHECK(buf && len == 19 && !strcmp(buf, "{\"input_ids\": [1]}\n"));
    free(buf);
    close(fd);
    fd = open(reg, O_RDONLY);
    CHECK_RC(reap_read_stream(fd, reg, NULL, NULL, &buf, &len), REAP_OK);
    CHECK(buf && len == 5 && !strcmp(buf, "hello"));
    free(buf);
    close(fd);

    /* ---- confinement ---- */
    const char *dirs[] = {root};
    reap_roots roots = {dirs, 1}, none = {dirs, 0};
    CHECK_RC(open_rc(reg, &roots, REAP_OPEN_REGULAR), REAP_OK);
    CHECK_RC(open_rc(pj(root, "snap/config.json"), &roots, REAP_OPEN_REGULAR), REAP_OK);
    CHECK_RC(open_rc(pj(root, "snap/model.safetensors"), &roots, REAP_OPEN_REGULAR),
             REAP_E_DENIED);
    CHECK_ERRMSG("snap/model.safetensors: leads to");
    CHECK_ERRMSG("/outside/secret, outside every root");
    CHECK_RC(open_rc(pj(root, "snap/model.safetensors"), NULL, REAP_OPEN_REGULAR), REAP_OK);
    CHECK_RC(open_rc(pj(out, "secret"), &roots, REAP_OPEN_REGULAR), REAP_E_DENIED);
    /* A FIFO outside every root, linked inside: refused as outside (never opened to
     * wait on), before its type is told. */
    CHECK(mkfifo(pj(out, "fifo"), 0600) == 0 && symlink(pj(out, "fifo"), pj(root, "l2")) == 0);
    CHECK_RC(open_rc(pj(root, "l2"), &roots, REAP_OPEN_STREAM), REAP_E_DENIED);
    CHECK_ERRMSG("l2: leads to");
    CHECK_RC(open_rc(fifo, &roots, REAP_OPEN_REGULAR), REAP_E_INVALID); /* inside: its type */
    CHECK_RC(open_rc(reg, &none, REAP_OPEN_REGULAR), REAP_E_DENIED);
    CHECK_RC(reap_fopen_read(pj(root, "snap/model.safetensors"), &roots, &f), REAP_E_DENIED);
    CHECK(f == NULL);
    CHECK(reap_path_under("/a/b", "/a") && reap_path_under("/a", "/a") &&
          !reap_path_under("/ab", "/a") && reap_path_under("/x", "/"));
    close(sfd);
    test_read_chunks(scratch);
    TEST_MAIN_END();
}

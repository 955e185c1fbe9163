/* fsutil.c - durable-write helpers (see fsutil.h): write and exact-read loops, directory fsync, the
 * atomic file write and the copy_file_range loop with its fallback. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "reap_err.h"

int reap_write_all(int fd, const void *buf, size_t len, const char *path)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return reap_err_set(REAP_E_IO, "%s: write: %s", path,
                                w < 0 ? strerror(errno) : "no progress");
        p += w;
        len -= (size_t)w;
    }
    return REAP_OK;
}

int reap_read_full(int fd, void *buf, size_t len, const char *path)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return reap_err_set(REAP_E_IO, "%s: read: %s", path,
                                r < 0 ? strerror(errno) : "short");
        p += r;
        len -= (size_t)r;
    }
    return REAP_OK;
}

int reap_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return reap_err_set(REAP_E_IO, "%s: open directory: %s", dir, strerror(errno));
    int bad = fsync(fd);
    int e = errno;
    close(fd);
    return bad ? reap_err_set(REAP_E_IO, "%s: fsync: %s", dir, strerror(e)) : REAP_OK;
}

int reap_fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
    int rc = reap_fsync_dir(dirname(copy));
    free(copy);
    return rc;
}

int reap_check_free_space(const char *dir, uint64_t need, const char *what)
{
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return REAP_OK; /* unknown: let the writes tell */
    uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    if (avail >= need)
        return REAP_OK;
    return reap_err_set(REAP_E_IO,
                        "not enough disk space for %s: it needs %.2f GB, %.2f GB are free "
                        "on the file system of %s (free space there, or pass "
                        "--no-space-check / set REAP_NO_SPACE_CHECK=1 if the file system "
                        "misreports it)",
                        what, need / 1e9, avail / 1e9, dir);
}

/* ---- atomic file writes ------------------------------------------------------------- */

static void atomic_release(reap_atomic *af)
{
    if (af->fp)
        fclose(af->fp);
    else if (af->fd >= 0)
        close(af->fd);
    af->fp = NULL;
    af->fd = -1;
    free(af->path);
    free(af->tmp);
    af->path = af->tmp = NULL;
}

int reap_atomic_open(const char *path, mode_t mode, unsigned flags, reap_atomic *af)
{
    int rc = REAP_OK;
    size_t plen = strlen(path);
    af->fd = -1;
    af->fp = NULL;
    af->path = strdup(path);
    af->tmp = malloc(plen + 32);
    if (!af->path || !af->tmp) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (flags & REAP_ATOMIC_PID_TMP)
        snprintf(af->tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    else
        snprintf(af->tmp, plen + 32, "%s.tmp", path);
    /* a stale temp file from a killed writer would keep its old mode under O_TRUNC */
    if (unlink(af->tmp) != 0 && errno != ENOENT) {
        rc = reap_err_set(REAP_E_IO, "%s: remove stale temp file: %s", af->tmp,
                          strerror(errno));
        goto fail;
    }
    af->fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (af->fd < 0) {
        rc = reap_err_set(REAP_E_IO, "%s: open: %s", af->tmp, strerror(errno));
        goto fail;
    }
    if ((flags & REAP_ATOMIC_STDIO) && !(af->fp = fdopen(af->fd, "wb"))) {
        rc = reap_err_set(REAP_E_IO, "%s: fdopen: %s", af->tmp, strerror(errno));
        close(af->fd);
        af->fd = -1;
        unlink(af->tmp);
        goto fail;
    }
    return REAP_OK;
fail:
    atomic_release(af);
    return rc;
}

int reap_atomic_commit(reap_atomic *af)
{
    int rc = REAP_OK;
    if (af->fp && (fflush(af->fp) != 0 || ferror(af->fp))) {
        rc = reap_err_set(REAP_E_IO, "%s: write: %s", af->tmp,
                          errno ? strerror(errno) : "stream error");
        goto fail;
    }
    if (fsync(af->fd) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: fsync: %s", af->tmp, strerror(errno));
        goto fail;
    }
    int bad = af->fp ? fclose(af->fp) : close(af->fd);
    af->fp = NULL;
    af->fd = -1;
    if (bad != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: close: %s", af->tmp, strerror(errno));
        goto fail;
    }
    if (rename(af->tmp, af->path) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: rename to %s: %s", af->tmp, af->path,
                          strerror(errno));
        goto fail;
    }
    rc = reap_fsync_parent_dir(af->path);
    atomic_release(af);
    return rc;
fail:
    reap_atomic_abort(af);
    return rc;
}

void reap_atomic_abort(reap_atomic *af)
{
    if (af->tmp)
        unlink(af->tmp);
    atomic_release(af);
}

int reap_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
    reap_atomic af;
    int rc = reap_atomic_open(path, mode, 0, &af);
    if (rc)
        return rc;
    if ((rc = reap_write_all(af.fd, buf, len, af.tmp))) {
        reap_atomic_abort(&af);
        return rc;
    }
    return reap_atomic_commit(&af);
}

/* ---- file copies --------------------------------------------------------------------- */

/* pread/write through a bounce buffer, then drop the source pages from the cache. */
static int copy_bounce(int in, uint64_t off, uint64_t len, int out, const char *src,
                       const char *dst)
{
    int rc = REAP_OK;
    uint64_t start = off;
    unsigned char *buf = malloc(REAP_COPY_BOUNCE);
    if (!buf)
        return reap_err_set(REAP_E_NOMEM, "%s: copy buffer", dst);
    while (len > 0) {
        size_t want = len < REAP_COPY_BOUNCE ? (size_t)len : REAP_COPY_BOUNCE;
        ssize_t r = pread(in, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = reap_err_set(REAP_E_IO, "%s: read at offset %llu: %s", src,
                              (unsigned long long)off, strerror(errno));
            goto done;
        }
        if (r == 0) {
            rc = reap_err_set(REAP_E_IO, "%s: source file ends at offset %llu", src,
                              (unsigned long long)off);
            goto done;
        }
        if ((rc = reap_write_all(out, buf, (size_t)r, dst)))
            goto done;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    posix_fadvise(in, (off_t)start, (off_t)(off - start), POSIX_FADV_DONTNEED);
done:
    free(buf);
    return rc;
}

int reap_copy_range(int in, uint64_t off, uint64_t len, int out, unsigned *flags,
                    const char *src, const char *dst)
{
    unsigned local = 0;
    if (!flags)
        flags = &local;
    while (len > 0 && !(*flags & REAP_COPY_FALLBACK)) {
        loff_t in_off = (loff_t)off;
        size_t want = len < REAP_COPY_CHUNK ? (size_t)len : REAP_COPY_CHUNK;
        ssize_t r = copy_file_range(in, &in_off, out, NULL, want, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                      errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)) {
            *flags |= REAP_COPY_FALLBACK; /* e.g. an old kernel or a pair it refuses */
            break;
        }
        if (r < 0)
            return reap_err_set(REAP_E_IO, "%s -> %s: copy_file_range at source offset %llu: %s",
                                src, dst, (unsigned long long)off, strerror(errno));
        if (r == 0)
            return reap_err_set(REAP_E_IO, "%s: source file ends at offset %llu", src,
                                (unsigned long long)off);
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return len ? copy_bounce(in, off, len, out, src, dst) : REAP_OK;
}

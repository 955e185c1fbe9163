/* fsopen.c - opening user-named files for reading: the type rule and confinement to
 * roots, and the loops that read them to the end (see fsopen.h).
 *
 * open(O_NONBLOCK) never waits for a FIFO's writer; fstat on the descriptor says what was
 * opened. Confinement resolves the path with realpath(3) and accepts the file only when
 * the resolved path lies under a root and still names the opened file (same device and
 * inode), which closes the window between resolving and opening. */
#include "fsopen.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reap_err.h"

const char *reap_file_type_name(unsigned mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFIFO: return "a FIFO";
    case S_IFDIR: return "a directory";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFLNK: return "a symbolic link";
    default: return "an unknown kind of file";
    }
}

int reap_path_under(const char *p, const char *root)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return p[0] == '/';
    return !strncmp(p, root, n) && (p[n] == '\0' || p[n] == '/');
}

int reap_roots_check_fd(const reap_roots *roots, int fd, const char *path)
{
    struct stat a, b;
    char *real;
    int i;
    if (!roots)
        return REAP_OK;
    if (!(real = realpath(path, NULL)))
        return reap_err_set(errno == ENOMEM ? REAP_E_NOMEM : REAP_E_IO,
                            "%s: cannot resolve the path: %s", path, strerror(errno));
    for (i = 0; i < roots->n; i++)
        if (reap_path_under(real, roots->dirs[i]))
            break;
    if (i == roots->n) {
        int rc = reap_err_set(REAP_E_DENIED, "%s: leads to %s, outside every root this "
                              "server reads from", path, real);
        free(real);
        return rc;
    }
    if (fstat(fd, &a) || stat(real, &b) || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        int rc = reap_err_set(REAP_E_DENIED, "%s: changed while it was opened (now %s)",
                              path, real);
        free(real);
        return rc;
    }
    free(real);
    return REAP_OK;
}

int reap_open_read(const char *path, const reap_roots *roots, int kind, int *fd_out)
{
    struct stat sb;
    int fd, rc;
    if (fd_out)
        *fd_out = -1;
    if (!path || !fd_out)
        return reap_err_set(REAP_E_INVALID, "reap_open_read: NULL argument");
    fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        /* A socket cannot be opened at all (ENXIO): say what it is. */
        if (e != ENOENT && stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
            return reap_err_set(REAP_E_INVALID, "%s: is %s, not a regular file", path,
                                reap_file_type_name(sb.st_mode));
        return reap_err_set(e == ENOENT ? REAP_E_NOTFOUND : REAP_E_IO, "%s: %s", path,
                            strerror(e));
    }
    if (fstat(fd, &sb)) {
        rc = reap_err_set(REAP_E_IO, "%s: fstat: %s", path, strerror(errno));
        goto fail;
    }
    /* Outside the roots first: say nothing more of a file there than that. */
    if ((rc = reap_roots_check_fd(roots, fd, path)))
        goto fail;
    int stream = S_ISFIFO(sb.st_mode);
    if (!S_ISREG(sb.st_mode) && !(stream && kind == REAP_OPEN_STREAM)) {
        rc = reap_err_set(REAP_E_INVALID, "%s: is %s, not a regular file", path,
                          reap_file_type_name(sb.st_mode));
        goto fail;
    }
    if (!stream) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
            rc = reap_err_set(REAP_E_IO, "%s: fcntl: %s", path, strerror(errno));
            goto fail;
        }
    }
    *fd_out = fd;
    return REAP_OK;
fail:
    close(fd);
    return rc;
}

int reap_fopen_read(const char *path, const reap_roots *roots, FILE **out)
{
    int fd, rc;
    if (out)
        *out = NULL;
    if (!out)
        return reap_err_set(REAP_E_INVALID, "reap_fopen_read: NULL argument");
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        return rc;
    if (!(*out = fdopen(fd, "rb"))) {
        close(fd);
        return reap_err_set(REAP_E_NOMEM, "%s: cannot make a stream", path);
    }
    return REAP_OK;
}

/* Wait until fd has data or its writer is gone; REAP_E_CANCELLED when asked to stop. */
static int wait_readable(int fd, const char *path, reap_stop_fn should_stop, void *ud)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, 100);
        if (n > 0)
            return REAP_OK;    /* data, or POLLHUP: read() says which */
        if (n < 0 && errno != EINTR)
            return reap_err_set(REAP_E_IO, "%s: poll: %s", path, strerror(errno));
        if (should_stop && should_stop(ud))
            return reap_err_set(REAP_E_CANCELLED, "%s: stopped on request while waiting "
                                "for data", path);
    }
}

int reap_read_stream(int fd, const char *path, reap_stop_fn should_stop, void *ud,
                     char **buf, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap), *q;
    int fl = fcntl(fd, F_GETFL), nonblock = fl >= 0 && (fl & O_NONBLOCK), rc;
    *buf = NULL;
    *len = 0;
    if (!p)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory reading the file", path);
    for (;;) {
        if (cap - n < 2) {
            if (!(q = realloc(p, cap * 2))) {
                rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory reading the file "
                                  "(%zu bytes)", path, n);
                goto fail;
            }
            p = q;
            cap *= 2;
        }
        /* A FIFO with no writer yet reads as end of file: wait for data or a hang-up
         * first (poll(2) reports the hang-up only once a writer has come and gone). */
        if (nonblock && (rc = wait_readable(fd, path, should_stop, ud)))
            goto fail;
        ssize_t r = read(fd, p + n, cap - n - 1);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno == EINTR && !(should_stop && should_stop(ud)))
            continue;
        if (errno == EINTR) {
            rc = reap_err_set(REAP_E_CANCELLED, "%s: stopped on request while reading",
                              path);
            goto fail;
        }
        if (errno == EAGAIN && nonblock)
            continue;
        rc = reap_err_set(REAP_E_IO, "%s: read error: %s", path, strerror(errno));
        goto fail;
    }
    p[n] = '\0';
    *buf = p;
    *len = n;
    return REAP_OK;
fail:
    free(p);
    return rc;
}

int reap_read_chunks(int fd, const char *path, void *buf, size_t cap, reap_chunk_fn fn,
                     void *ud, uint64_t *total)
{
    uint64_t off = 0;
    int rc = REAP_OK;
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = reap_err_set(REAP_E_IO, "%s: read: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        if ((rc = fn(ud, buf, (size_t)r, off)))
            break;
        off += (uint64_t)r;
    }
    if (total)
        *total = off;
    return rc;
}

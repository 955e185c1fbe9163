/* fsutil.c - durable-write helpers (see fsutil.h). */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
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
    const char *skip = getenv("REAP_NO_SPACE_CHECK");
    if (skip && !strcmp(skip, "1"))
        return REAP_OK;
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return REAP_OK; /* unknown: let the writes tell */
    uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    if (avail >= need)
        return REAP_OK;
    return reap_err_set(REAP_E_IO,
                        "not enough disk space for %s: it needs %.2f GB, %.2f GB are free "
                        "on the file system of %s (free space there, or set "
                        "REAP_NO_SPACE_CHECK=1 if the file system misreports it)",
                        what, need / 1e9, avail / 1e9, dir);
}

/* fsutil.c - durable-write helpers (see fsutil.h). */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
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

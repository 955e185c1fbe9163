/* fuzz_util.h - what the harnesses share: a private temporary directory and files that
 * hold one input at a time.
 *
 * Each harness process makes one directory under $TMPDIR (else /tmp) on first use and
 * removes it with everything in it at exit; nothing is written anywhere else. An API
 * that takes a path gets the input through a file that is created once per process and
 * rewritten for every input (a memfd, named /proc/self/fd/N, where the file's name does
 * not matter), so no descriptors or files accumulate.
 */
#ifndef REAP_FUZZ_UTIL_H
#define REAP_FUZZ_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reap_err.h"

static char fuzz_dir_[4096];

static inline void fuzz_rm_tree_(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;
    char sub[8192];

    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode) && (d = opendir(path))) {
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                fuzz_rm_tree_(sub);
            }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static inline void fuzz_cleanup_(void)
{
    if (fuzz_dir_[0])
        fuzz_rm_tree_(fuzz_dir_);
}

static inline void fuzz_die_(const char *what)
{
    fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
    abort();
}

/* The process's temporary directory (created on first call, removed at exit). */
static inline const char *fuzz_tmpdir(void)
{
    const char *base;

    if (fuzz_dir_[0])
        return fuzz_dir_;
    base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/reap-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_dir_)) {
        fuzz_dir_[0] = '\0';
        fuzz_die_("mkdtemp");
    }
    atexit(fuzz_cleanup_);
    return fuzz_dir_;
}

/* "<tmpdir>/name" in a static buffer (one per call site is enough for the harnesses). */
static inline const char *fuzz_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", fuzz_tmpdir(), name);
    return buf;
}

/* Replace the whole content of the open file fd with data[0..size). */
static inline void fuzz_fd_set(int fd, const void *data, size_t size)
{
    const uint8_t *p = data;
    size_t off = 0;
    ssize_t w;

    if (ftruncate(fd, 0) != 0)
        fuzz_die_("ftruncate");
    while (off < size) {
        w = pwrite(fd, p + off, size - off, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fuzz_die_("pwrite");
        off += (size_t)w;
    }
}

/* One file that holds the current input: a memfd (fuzz_memfd_set) or a named file in the
 * temporary directory (fuzz_named_set). Zero-initialise; opened on first use. */
typedef struct fuzz_file {
    int fd;
    char path[64];
} fuzz_file;

/* Put data[0..size) into f's memfd; returns its name, /proc/self/fd/N. */
static inline const char *fuzz_memfd_set(fuzz_file *f, const void *data, size_t size)
{
    if (f->fd <= 0) {
        f->fd = memfd_create("reap-fuzz", MFD_CLOEXEC);
        if (f->fd < 0)
            fuzz_die_("memfd_create");
        snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    }
    fuzz_fd_set(f->fd, data, size);
    return f->path;
}

/* Put data[0..size) into the file `name` of the temporary directory (opened once, kept
 * open in f); returns its path. */
static inline const char *fuzz_named_set(fuzz_file *f, const char *name, const void *data,
                                         size_t size)
{
    static char buf[8192];

    if (f->fd <= 0) {
        f->fd = open(fuzz_path(buf, sizeof buf, name), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (f->fd < 0)
            fuzz_die_(buf);
    }
    fuzz_fd_set(f->fd, data, size);
    return fuzz_path(buf, sizeof buf, name);
}

/* Write a whole small file (for fixed files made once per process). */
static inline void fuzz_write_file(const char *path, const void *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0)
        fuzz_die_(path);
    fuzz_fd_set(fd, data, size);
    close(fd);
}

/* Split the input at its first NUL byte: *head_len bytes before it, the rest after it
 * (*tail NULL when there is no NUL). */
static inline void fuzz_split_nul(const uint8_t *data, size_t size, size_t *head_len,
                           const uint8_t **tail, size_t *tail_len)
{
    const uint8_t *z = memchr(data, 0, size);

    *head_len = z ? (size_t)(z - data) : size;
    *tail = z ? z + 1 : NULL;
    *tail_len = z ? size - *head_len - 1 : 0;
}

/* FUZZ_RC(expr): expr's status; with -DREAP_FUZZ_VERBOSE also printed with the error
 * message (to see why a seed is refused: run the harness on it, e.g. with -runs=0). */
#ifdef REAP_FUZZ_VERBOSE
#define FUZZ_RC(expr) fuzz_report_((expr), #expr)
static inline int fuzz_report_(int rc, const char *what)
{
    fprintf(stderr, "%s: %d %s\n", what, rc, rc ? reap_err_msg() : "");
    return rc;
}
#else
#define FUZZ_RC(expr) (expr)
#endif

#endif

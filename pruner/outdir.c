/* outdir.c - temporary output directories under a lock, the sweep of dead writers'
 * leftovers, and the rule for replacing an existing output (see outdir.h).
 *
 * Names: ".<name>.reap-tmp-<pid>-<XXXXXX>" plus ".old" or ".lock". The writer makes the
 * lock file with mkostemps (the unique part), locks it, then makes the directory of the
 * same name without ".lock"; a sweeper takes the lock without waiting, checks that the
 * file it locked is still the one at that path, and only then removes anything.
 */
#define _XOPEN_SOURCE_EXTENDED 1
#define _GNU_SOURCE 1
#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsopen.h"
#include "manifest.h"
#include "reap_err.h"

#define TMP_TAG ".reap-tmp-"

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

int reap_outdir_remove_tree(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static _Thread_local uint64_t tree_bytes; /* nftw has no user pointer */

static int size_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (type == FTW_F && S_ISREG(sb->st_mode))
        tree_bytes += (uint64_t)sb->st_size;
    return 0;
}

static uint64_t tree_size(const char *path)
{
    tree_bytes = 0;
    nftw(path, size_entry, 16, FTW_PHYS);
    return tree_bytes;
}

int reap_outdir_tmp_create(const char *parent, const char *name, reap_outdir_tmp *t)
{
    memset(t, 0, sizeof *t);
    t->lock_fd = -1;
    const char *sep = strcmp(parent, "/") ? "/" : "";
    for (int attempt = 0; attempt < 16; attempt++) {
        int n = snprintf(t->lock, sizeof t->lock, "%s%s.%s" TMP_TAG "%ld-XXXXXX.lock", parent,
                         sep, name, (long)getpid());
        if (n < 0 || (size_t)n + 5 >= sizeof t->lock)
            return reap_err_set(REAP_E_INVALID, "output path '%s/%s' is too long", parent, name);
        int fd = mkostemps(t->lock, 5, O_CLOEXEC);
        if (fd < 0)
            return reap_err_set(REAP_E_IO, "%s: create: %s", t->lock, strerror(errno));
        struct stat a, b;
        /* A sweeper may take a fresh lock file for a stale one before we lock it: then it
         * is unlinked (or replaced) and we start again under a new name. A file system
         * without locks (ENOLCK, EOPNOTSUPP) is no reason to fail: the directory is then
         * never swept, as a sweeper cannot lock it either. */
        int locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
        if ((!locked && errno == EWOULDBLOCK) || fstat(fd, &a) != 0 ||
            lstat(t->lock, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
            close(fd);
            continue;
        }
        memcpy(t->dir, t->lock, (size_t)n - 5);
        t->dir[n - 5] = '\0';
        snprintf(t->old, sizeof t->old, "%s.old", t->dir);
        if (mkdir(t->dir, 0755) != 0) {
            int e = errno;
            unlink(t->lock);
            close(fd);
            if (e == EEXIST)
                continue;
            return reap_err_set(REAP_E_IO, "%s: mkdir: %s", t->dir, strerror(e));
        }
        t->lock_fd = fd;
        return REAP_OK;
    }
    return reap_err_set(REAP_E_IO, "%s: could not make a temporary directory for '%s'", parent,
                        name);
}

void reap_outdir_tmp_release(reap_outdir_tmp *t)
{
    if (!t || t->lock_fd < 0)
        return;
    unlink(t->lock);
    close(t->lock_fd);
    t->lock_fd = -1;
}

/* ---- the sweep ------------------------------------------------------------------------- */

enum { ENT_TMP, ENT_OLD, ENT_LOCK, ENT_LEGACY };

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Is d_name one of ours? Sets *kind, the output's name (name, cap bytes) and the length
 * of the base (the entry without ".old" / ".lock"). */
static int parse_entry(const char *ent, int *kind, char *name, size_t cap, size_t *base_len)
{
    size_t len = strlen(ent);
    *kind = ENT_TMP;
    if (ends_with(ent, ".old")) {
        *kind = ENT_OLD;
        len -= 4;
    } else if (ends_with(ent, ".lock")) {
        *kind = ENT_LOCK;
        len -= 5;
    }
    if (ent[0] != '.')
        return 0;
    const char *tag = NULL;
    for (const char *p = ent; (p = strstr(p, TMP_TAG)) && (size_t)(p - ent) < len; p++)
        tag = p;
    if (!tag || tag == ent + 1 || (size_t)(tag - ent) - 1 >= cap)
        return 0;
    const char *q = tag + strlen(TMP_TAG), *end = ent + len;
    const char *digits = q;
    while (q < end && *q >= '0' && *q <= '9')
        q++;
    if (q == digits)
        return 0;
    if (q == end) {
        if (*kind != ENT_TMP)
            return 0;
        *kind = ENT_LEGACY;  /* .<name>.reap-tmp-<pid>: written before there were locks */
    } else {
        if (*q != '-' || end - q != 7)
            return 0;
        for (q++; q < end; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')))
                return 0;
    }
    memcpy(name, ent + 1, (size_t)(tag - ent) - 1);
    name[tag - ent - 1] = '\0';
    *base_len = len;
    return 1;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int absent(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) != 0 && errno == ENOENT;
}

/* Open and lock `lock` without waiting; -1 when it is held (or cannot be had), -2 when
 * there is no lock file. The file locked is checked to be the one still at that path. */
static int take_lock(const char *lock)
{
    int fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? -2 : -1;
    struct stat a, b;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fstat(fd, &a) != 0 || lstat(lock, &b) != 0 ||
        a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct sweep_ctx {
    reap_leftover_fn fn;
    void *ud;
    int n_removed;
} sweep_ctx;

static void tell(sweep_ctx *c, const char *path, uint64_t bytes, reap_leftover_action a)
{
    if (c->fn)
        c->fn(c->ud, path, bytes, a);
}

/* One temporary or moved-aside directory `path` of output `target`, lock `lock`. */
static void sweep_dir(sweep_ctx *c, const char *path, const char *target, const char *lock,
                      int kind)
{
    int fd = take_lock(lock);
    if (fd == -2) {
        tell(c, path, 0, REAP_LEFTOVER_NO_LOCK);
        return;
    }
    if (fd < 0) {
        tell(c, path, 0, REAP_LEFTOVER_IN_USE);
        return;
    }
    uint64_t bytes = tree_size(path);
    if (kind == ENT_OLD && absent(target) && rename(path, target) == 0) {
        tell(c, target, bytes, REAP_LEFTOVER_RESTORED);
        c->n_removed++;
    } else if (reap_outdir_remove_tree(path) == 0 || absent(path)) {
        tell(c, path, bytes, REAP_LEFTOVER_REMOVED);
        c->n_removed++;
    } else {
        tell(c, path, bytes, REAP_LEFTOVER_FAILED);
    }
    close(fd);
}

/* A lock file whose directories are gone (the writer died after renaming its output into
 * place, or a sweep above removed them): unlinked while locked. */
static void sweep_lock(const char *lock, size_t base_len)
{
    char base[PATH_MAX], old[PATH_MAX + 8];
    if (base_len >= sizeof base)
        return;
    memcpy(base, lock, base_len);
    base[base_len] = '\0';
    snprintf(old, sizeof old, "%s.old", base);
    if (!absent(base) || !absent(old))
        return;
    int fd = take_lock(lock);
    if (fd < 0)
        return;
    if (absent(base) && absent(old))
        unlink(lock);
    close(fd);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int reap_outdir_sweep(const char *parent, const char *name, reap_leftover_fn fn, void *ud,
                      int *n_removed)
{
    sweep_ctx c = {fn, ud, 0};
    char **ents = NULL;
    size_t n = 0, cap = 0;
    int rc = REAP_OK;
    const char *sep = strcmp(parent, "/") ? "/" : "";
    if (n_removed)
        *n_removed = 0;
    /* Collect first: the directory changes under the sweep. */
    DIR *d = opendir(parent);
    if (!d)
        return reap_err_set(REAP_E_IO, "%s: opendir: %s", parent, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char nm[NAME_MAX + 1];
        int kind;
        size_t bl;
        if (!parse_entry(e->d_name, &kind, nm, sizeof nm, &bl) || (name && strcmp(nm, name)))
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            char **g = realloc(ents, nc * sizeof *g);
            if (!g) {
                rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", parent);
                break;
            }
            ents = g;
            cap = nc;
        }
        if (!(ents[n] = strdup(e->d_name))) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", parent);
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(ents, n, sizeof *ents, cmp_cstr);
    /* Directories first, then the lock files they leave without a directory. */
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (size_t i = 0; i < n; i++) {
            char nm[NAME_MAX + 1], path[PATH_MAX], target[PATH_MAX], lock[PATH_MAX];
            int kind;
            size_t bl;
            parse_entry(ents[i], &kind, nm, sizeof nm, &bl);
            if (snprintf(path, sizeof path, "%s%s%s", parent, sep, ents[i]) >= (int)sizeof path ||
                snprintf(target, sizeof target, "%s%s%s", parent, sep, nm) >= (int)sizeof target ||
                snprintf(lock, sizeof lock, "%s%s%.*s.lock", parent, sep, (int)bl, ents[i]) >=
                    (int)sizeof lock)
                continue;
            if (pass == 1) {
                if (kind == ENT_LOCK)
                    sweep_lock(path, strlen(parent) + strlen(sep) + bl);
                continue;
            }
            if (kind == ENT_LOCK || !is_dir(path))
                continue;
            if (kind == ENT_LEGACY)
                tell(&c, path, 0, REAP_LEFTOVER_NO_LOCK);
            else
                sweep_dir(&c, path, target, lock, kind);
        }
    for (size_t i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    if (n_removed)
        *n_removed = c.n_removed;
    return rc;
}

char *reap_leftover_describe(const char *path, uint64_t bytes, reap_leftover_action action,
                             char *buf, size_t cap)
{
    double gb = (double)bytes / 1e9;
    unsigned long long b = (unsigned long long)bytes;
    switch (action) {
    case REAP_LEFTOVER_REMOVED:
        snprintf(buf, cap, "removed %s (%.2f GB, %llu bytes), left by a prune that did not "
                 "finish", path, gb, b);
        break;
    case REAP_LEFTOVER_RESTORED:
        snprintf(buf, cap, "restored %s (%.2f GB, %llu bytes): a prune that did not finish "
                 "had moved it aside", path, gb, b);
        break;
    case REAP_LEFTOVER_IN_USE:
        snprintf(buf, cap, "left %s: another prune is writing it", path);
        break;
    case REAP_LEFTOVER_NO_LOCK:
        snprintf(buf, cap, "left %s: it has no lock file (an older reap's leftover?); remove "
                 "it by hand when no prune is running", path);
        break;
    default:
        snprintf(buf, cap, "could not remove %s (%.2f GB), left by a prune that did not "
                 "finish", path, gb);
        break;
    }
    return buf;
}

/* ---- replacing an existing output ------------------------------------------------------ */

/* Does dir hold a reap manifest? 1 yes; 0 no; -1 a reap-manifest.json that is not one
 * (why in `why`). The file checked is the file read: it is opened as every user-named
 * file is (fsopen.h), so a FIFO put there after the look is refused, never waited on. */
static int has_reap_manifest(const char *dir, char *why, size_t cap)
{
    char path[PATH_MAX + 32];
    json_error_t je;
    FILE *f = NULL;
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    if (lstat(path, &sb) != 0)
        return 0;
    /* a link is not followed: reap writes its manifest as a file */
    int rc = S_ISLNK(sb.st_mode) ? REAP_E_INVALID : reap_fopen_read(path, NULL, &f);
    if (rc == REAP_E_NOTFOUND)
        return 0;
    if (rc == REAP_E_INVALID) {
        snprintf(why, cap, "its %s is not a regular file", REAP_MANIFEST_NAME);
        return -1;
    }
    if (rc) {
        snprintf(why, cap, "its %s cannot be read (%s)", REAP_MANIFEST_NAME, reap_err_msg());
        return -1;
    }
    json_t *doc = json_loadf(f, 0, &je);
    fclose(f);
    const char *fmt = json_string_value(json_object_get(doc, "format"));
    int ok = fmt && !strcmp(fmt, "reap-manifest/1");
    if (!ok)
        snprintf(why, cap, "its %s is not a reap manifest (%s)", REAP_MANIFEST_NAME,
                 doc ? "no \"format\": \"reap-manifest/1\"" : je.text);
    json_decref(doc);
    return ok ? 1 : -1;
}

int reap_outdir_check_replaceable(const char *path, const char *shown)
{
    static const char rule[] = "reap replaces only its own outputs (a directory with a "
                               "reap-manifest.json) or an empty directory; move it away or "
                               "choose another output";
    struct stat sb;
    char why[512] = "", names[3 * (NAME_MAX + 4) + 1] = "";
    size_t n = 0;
    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? REAP_OK
                               : reap_err_set(REAP_E_IO, "output '%s': %s", shown, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return reap_err_set(REAP_E_PRECONDITION, "output '%s' exists and is %s, not a "
                            "directory: %s", shown, S_ISLNK(sb.st_mode) ? "a symbolic link"
                            : S_ISREG(sb.st_mode) ? "a file" : "a special file", rule);
    int m = has_reap_manifest(path, why, sizeof why);
    if (m == 1)
        return REAP_OK;
    DIR *d = opendir(path);
    if (!d)
        return reap_err_set(REAP_E_IO, "output '%s': opendir: %s", shown, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n < 3) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s'%s'", l ? ", " : "", e->d_name);
        }
        n++;
    }
    closedir(d);
    if (n == 0)
        return REAP_OK;
    if (m == 0)
        snprintf(why, sizeof why, "it has no %s", REAP_MANIFEST_NAME);
    return reap_err_set(REAP_E_PRECONDITION, "output '%s' exists and is not a reap output: "
                        "%s and holds %zu entr%s (%s%s); %s", shown, why, n,
                        n == 1 ? "y" : "ies", names, n > 3 ? ", ..." : "", rule);
}

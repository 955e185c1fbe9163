/* rewrite_files.c - the files of a pruned checkpoint that are not rewritten tensor by
 * tensor: path helpers, the plain durable write the rewrite uses for the files it
 * generates, reap_copy_file (rewrite.h) and the copy of every other regular file of the
 * input directory, with the rule for which names are not copied (stale weight formats,
 * outputs of an earlier prune) and the list of what was skipped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "reap_err.h"
#include "rewrite.h"
#include "rewrite_impl.h"

const char *rw_base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

char *rw_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* Not reap_write_atomic on purpose: every file the rewrite writes lands in the prune's
 * staging directory, which is made durable (directory fsync) and renamed into place as a
 * whole (prune.c); a per-file temp + rename inside it would only add work. */
int rw_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return reap_err_set(REAP_E_IO, "%s: open: %s", path, strerror(errno));
    int rc = reap_write_all(fd, buf, len, path);
    if (!rc && fsync(fd) != 0)
        rc = reap_err_set(REAP_E_IO, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = reap_err_set(REAP_E_IO, "%s: close: %s", path, strerror(errno));
    return rc;
}

int reap_copy_file(const char *src, const char *dst)
{
    return reap_copy_file_confined(src, NULL, dst);
}

int reap_copy_file_confined(const char *src, const reap_roots *roots, const char *dst)
{
    int rc = REAP_OK, in = -1, out = -1;
    unsigned copy_flags = 0;
    if ((rc = reap_open_read(src, roots, REAP_OPEN_REGULAR, &in)))
        return rc;
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = reap_err_set(REAP_E_IO, "%s: open: %s", dst, strerror(errno));
        goto done;
    }
    struct stat st;
    if (fstat(in, &st) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: stat: %s", src, strerror(errno));
        goto done;
    }
    if ((rc = reap_copy_range(in, 0, (uint64_t)st.st_size, out, &copy_flags, src, dst)))
        goto done;
    if (fsync(out) != 0)
        rc = reap_err_set(REAP_E_IO, "%s: fsync: %s", dst, strerror(errno));
done:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && !rc)
        rc = reap_err_set(REAP_E_IO, "%s: close: %s", dst, strerror(errno));
    return rc;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Weight files in other formats would be stale after a prune; reap outputs of an
 * earlier prune are regenerated. */
static int skip_name(const char *n)
{
    static const char *const exact[] = {"config.json", "model.safetensors.index.json",
                                        "reap_metadata.json", "reap-manifest.json",
                                        "reap-manifest.json.minisig"};
    static const char *const suffix[] = {".safetensors", ".pt", ".pth", ".gguf", ".ckpt",
                                         ".h5", ".msgpack"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(n, exact[i]))
            return 1;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++)
        if (ends_with(n, suffix[i]))
            return 1;
    return !strncmp(n, "pytorch_model", 13) && (ends_with(n, ".bin") || strstr(n, ".bin."));
}

static void note_skipped(reap_rewrite_result *res, const char *name)
{
    size_t l = strlen(res->skipped);
    if (l + strlen(name) + 3 < sizeof res->skipped)
        snprintf(res->skipped + l, sizeof res->skipped - l, "%s%s", l ? ", " : "", name);
}

int rw_copy_other_files(const char *in_dir, const reap_roots *roots, const char *out_dir,
                            reap_rewrite_result *res)
{
    int rc = REAP_OK;
    DIR *d = opendir(in_dir);
    if (!d)
        return reap_err_set(REAP_E_IO, "%s: opendir: %s", in_dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *src = rw_path_join(in_dir, e->d_name), *dst = rw_path_join(out_dir, e->d_name);
        struct stat sb;
        if (!src || !dst) {
            rc = reap_err_set(REAP_E_NOMEM, "copy: out of memory");
        } else if (stat(src, &sb) != 0) {
            note_skipped(res, e->d_name); /* a dangling symlink */
        } else if (!S_ISREG(sb.st_mode)) {
            note_skipped(res, e->d_name);
        } else if (skip_name(e->d_name)) {
            if (ends_with(e->d_name, ".safetensors") || !strcmp(e->d_name, "config.json") ||
                !strcmp(e->d_name, "model.safetensors.index.json"))
                ; /* rewritten, or a shard: not "skipped" */
            else
                note_skipped(res, e->d_name);
        } else if (!(rc = reap_copy_file_confined(src, roots, dst))) {
            res->n_files_copied++;
        }
        free(src);
        free(dst);
        if (rc)
            break;
    }
    closedir(d);
    return rc;
}

/* rpc_path.c - confinement of client-supplied paths to root directories (rpc_path.h).
 *
 * How: the lexical form of the path (joined to a root when relative, "." and ".."
 * removed) must be under a root - this refuses obvious escapes without touching the
 * filesystem; then realpath(3) resolves every symbolic link and the resolved path must
 * be under a root too. For a path that does not exist yet (an output directory) the
 * parent is resolved and the last component appended.
 */
#include "rpc_path.h"

#include "fsopen.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rpc_status.h"

int rpc_path_under(const char *p, const char *root)
{
    return reap_path_under(p, root);   /* one rule for requests and the files they name */
}

static int under_any(const rpc_roots *r, const char *p)
{
    for (int i = 0; i < r->n; i++)
        if (rpc_path_under(p, r->dirs[i]))
            return 1;
    return 0;
}

/* dir + "/" + name into out (no doubled '/' after a root of "/"). -1 if too long. */
static int join(char *out, size_t cap, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    int n = snprintf(out, cap, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Lexical normalisation of an absolute path: collapse "//", drop ".", pop on "..".
 * out has room for PATH_MAX bytes. */
static void normalize(const char *abs, char *out)
{
    size_t n = 0;
    const char *s = abs;
    out[0] = '/';
    out[1] = '\0';
    n = 1;
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 1 && s[0] == '.') {
            /* nothing */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (n > 1 && out[n - 1] != '/')
                n--;
            if (n > 1)
                n--;   /* the '/' before the popped component */
            out[n] = '\0';
        } else if (n + (n > 1) + len < PATH_MAX) {
            if (n > 1)
                out[n++] = '/';
            memcpy(out + n, s, len);
            n += len;
            out[n] = '\0';
        }
        s += len;
    }
}

static int fail(int code, char *err, size_t errlen, const char *fmt, const char *field,
                const char *path)
{
    snprintf(err, errlen, fmt, field, path);
    return code;
}

/* Map a realpath/stat errno to a code and message. */
static int errno_fail(int e, char *err, size_t errlen, const char *field, const char *path)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return fail(RPC_NOT_FOUND, err, errlen, "%s: '%s' does not exist", field, path);
    case EACCES:
    case EPERM:
        return fail(RPC_PERMISSION_DENIED, err, errlen, "%s: '%s': permission denied", field,
                    path);
    case ELOOP:
        return fail(RPC_INVALID_ARGUMENT, err, errlen,
                    "%s: '%s': too many levels of symbolic links", field, path);
    case ENAMETOOLONG:
        return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: '%s': name too long", field, path);
    case ENOMEM:
        return fail(RPC_RESOURCE_EXHAUSTED, err, errlen, "%s: '%s': out of memory", field,
                    path);
    default: {
        char m[PATH_MAX + 256];
        snprintf(m, sizeof m, "%%s: '%%s': %s", strerror(e));
        return fail(RPC_INTERNAL, err, errlen, m, field, path);
    }
    }
}

/* Type checks of an existing, resolved path. */
static int check_type(const char *res, unsigned flags, char *err, size_t errlen,
                      const char *field, const char *path)
{
    struct stat st;
    if (!(flags & (RPC_PATH_DIR | RPC_PATH_FILE)))
        return 0;
    if (stat(res, &st))
        return errno_fail(errno, err, errlen, field, path);
    if ((flags & RPC_PATH_DIR) && !S_ISDIR(st.st_mode))
        return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: '%s' is not a directory", field,
                    path);
    if ((flags & RPC_PATH_FILE) && !S_ISREG(st.st_mode))
        return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: '%s' is not a regular file",
                    field, path);
    return 0;
}

/* Resolve an existing candidate. Returns 0 with *out set, or a code; *missing is set
 * when it simply does not exist. */
static int resolve_existing(const rpc_roots *r, const char *cand, unsigned flags,
                            char **out, int *missing, char *err, size_t errlen,
                            const char *field, const char *path)
{
    char *res = realpath(cand, NULL);
    int rc;
    *missing = 0;
    if (!res) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            *missing = 1;
        return errno_fail(e, err, errlen, field, path);
    }
    if (!under_any(r, res)) {
        free(res);
        return fail(RPC_PERMISSION_DENIED, err, errlen,
                    "%s: '%s' resolves to a location outside the allowed roots", field, path);
    }
    rc = check_type(res, flags, err, errlen, field, path);
    if (rc) {
        free(res);
        return rc;
    }
    *out = res;
    return 0;
}

int rpc_path_confine(const rpc_roots *r, const char *field, const char *path,
                     unsigned flags, char **resolved, char *err, size_t errlen)
{
    char cand[PATH_MAX], lex[PATH_MAX];
    int rc, missing, inside = 0;

    *resolved = NULL;
    if (!field)
        field = "path";
    if (!path || !*path)
        return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: empty path%s", field, "");
    if (strlen(path) >= PATH_MAX - 1)
        return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: path too long%s", field, "");
    if (r->n == 0)
        return fail(RPC_PERMISSION_DENIED, err, errlen,
                    "%s: '%s': no allowed root directories are configured", field, path);

    if (flags & RPC_PATH_NEW) {
        /* The last component (trailing slashes ignored) names the new entry. */
        char trimmed[PATH_MAX];
        size_t len = strlen(path);
        memcpy(trimmed, path, len + 1);
        while (len > 1 && trimmed[len - 1] == '/')
            trimmed[--len] = '\0';
        const char *slash = strrchr(trimmed, '/');
        const char *base = slash ? slash + 1 : trimmed;
        if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
            return fail(RPC_INVALID_ARGUMENT, err, errlen,
                        "%s: '%s' does not end in a name", field, path);
        if (trimmed[0] == '/')
            snprintf(cand, sizeof cand, "%s", trimmed);
        else if (join(cand, sizeof cand, r->dirs[0], trimmed))
            return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: path too long%s", field, "");
        normalize(cand, lex);
        if (!under_any(r, lex))
            return fail(RPC_PERMISSION_DENIED, err, errlen,
                        "%s: '%s' is outside the allowed roots", field, path);
        rc = resolve_existing(r, cand, flags, resolved, &missing, err, errlen, field, path);
        if (!rc) {
            for (int i = 0; i < r->n; i++)
                if (!strcmp(*resolved, r->dirs[i])) {
                    free(*resolved);
                    *resolved = NULL;
                    return fail(RPC_PERMISSION_DENIED, err, errlen,
                                "%s: '%s' is an allowed root itself, not a new entry in it",
                                field, path);
                }
        }
        if (!missing)
            return rc;

        /* Absent: resolve the parent, append the name. */
        char parent[PATH_MAX], *pres, out[PATH_MAX];
        struct stat st;
        size_t plen = (size_t)(strrchr(cand, '/') - cand);
        memcpy(parent, cand, plen);
        parent[plen ? plen : 1] = '\0';
        if (!plen)
            parent[0] = '/';
        pres = realpath(parent, NULL);
        if (!pres) {
            int e = errno;
            if (e == ENOENT || e == ENOTDIR)
                return fail(RPC_NOT_FOUND, err, errlen,
                            "%s: the parent directory of '%s' does not exist", field, path);
            return errno_fail(e, err, errlen, field, path);
        }
        if (!under_any(r, pres)) {
            free(pres);
            return fail(RPC_PERMISSION_DENIED, err, errlen,
                        "%s: '%s' resolves to a location outside the allowed roots", field,
                        path);
        }
        if (stat(pres, &st) || !S_ISDIR(st.st_mode)) {
            free(pres);
            return fail(RPC_INVALID_ARGUMENT, err, errlen,
                        "%s: the parent of '%s' is not a directory", field, path);
        }
        rc = join(out, sizeof out, pres, base);
        free(pres);
        if (rc)
            return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: path too long%s", field, "");
        if (lstat(out, &st) == 0)   /* a dangling symbolic link: never write through it */
            return fail(RPC_PERMISSION_DENIED, err, errlen,
                        "%s: '%s' is a dangling symbolic link", field, path);
        if (!(*resolved = strdup(out)))
            return fail(RPC_RESOURCE_EXHAUSTED, err, errlen, "%s: '%s': out of memory", field,
                        path);
        return 0;
    }

    /* Existing path: an absolute path is one candidate, a relative one is tried under
     * every root in order. */
    for (int i = 0; i < (path[0] == '/' ? 1 : r->n); i++) {
        if (path[0] == '/')
            snprintf(cand, sizeof cand, "%s", path);
        else if (join(cand, sizeof cand, r->dirs[i], path))
            return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: path too long%s", field, "");
        normalize(cand, lex);
        if (!under_any(r, lex))
            continue;
        inside = 1;
        rc = resolve_existing(r, cand, flags, resolved, &missing, err, errlen, field, path);
        if (!missing)
            return rc;
    }
    if (!inside)
        return fail(RPC_PERMISSION_DENIED, err, errlen,
                    "%s: '%s' is outside the allowed roots", field, path);
    return fail(RPC_NOT_FOUND, err, errlen, "%s: '%s' does not exist", field, path);
}

int rpc_roots_init(rpc_roots *r, const char *what, const char *const *dirs, int n,
                   char *err, size_t errlen)
{
    r->dirs = NULL;
    r->n = 0;
    if (n <= 0)
        return 0;
    r->dirs = calloc((size_t)n, sizeof *r->dirs);
    if (!r->dirs)
        return fail(RPC_RESOURCE_EXHAUSTED, err, errlen, "%s: %s: out of memory", what, "");
    for (int i = 0; i < n; i++) {
        struct stat st;
        char *res;
        if (!dirs[i] || !*dirs[i]) {
            rpc_roots_free(r);
            return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s: empty directory%s", what, "");
        }
        res = realpath(dirs[i], NULL);
        if (!res) {
            int code = errno == ENOENT ? RPC_NOT_FOUND : RPC_INVALID_ARGUMENT;
            char m[512];
            snprintf(m, sizeof m, "%%s '%%s': %s", strerror(errno));
            rpc_roots_free(r);
            return fail(code, err, errlen, m, what, dirs[i]);
        }
        if (stat(res, &st) || !S_ISDIR(st.st_mode)) {
            free(res);
            rpc_roots_free(r);
            return fail(RPC_INVALID_ARGUMENT, err, errlen, "%s '%s' is not a directory", what,
                        dirs[i]);
        }
        r->dirs[r->n++] = res;
    }
    return 0;
}

void rpc_roots_free(rpc_roots *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        free(r->dirs[i]);
    free(r->dirs);
    r->dirs = NULL;
    r->n = 0;
}

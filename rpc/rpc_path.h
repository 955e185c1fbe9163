/* rpc_path.h - confinement of client-supplied paths to configured root directories.
 *
 * Every path a client sends (model directory, calibration file, output directory) is
 * resolved with realpath(3) - symbolic links and ".." included - and must then lie at or
 * under one of the roots the server was started with, else the request is refused with
 * PERMISSION_DENIED. The roots themselves are resolved once, at startup.
 *
 * A relative client path is taken relative to a root: for an existing path the first
 * root under which it exists, for a new path the first root.
 *
 * So that a client cannot probe the filesystem outside the roots, a path whose lexical
 * form (after joining to a root and removing "." and "..") is outside every root is
 * refused with PERMISSION_DENIED without being looked up; NOT_FOUND is only reported for
 * paths that would be inside a root.
 *
 * Pure C (no gRPC); functions return rpc_code values (rpc_status.h). Thread rules: an
 * rpc_roots is immutable after rpc_roots_init and may be shared by threads; the result
 * is only as good as the filesystem is still: a path may be swapped for a symlink after
 * the check (the services check again where they open files for writing, and every file
 * they read is opened and checked against the same roots, common/fsopen.h).
 */
#ifndef REAP_RPC_PATH_H
#define REAP_RPC_PATH_H

#include <stddef.h>

typedef struct rpc_roots {
    char **dirs;   /* resolved absolute directories, no trailing '/' (except "/") */
    int n;
} rpc_roots;

/* Resolve `n` root directories (each must exist and be a directory) into *r.
 * `what` names the option in messages ("--model-root").
 * Returns 0 (RPC_OK); RPC_NOT_FOUND (a root does not exist), RPC_INVALID_ARGUMENT (not a
 * directory, empty), RPC_RESOURCE_EXHAUSTED (out of memory), with a message in err.
 * On failure *r is left empty. n may be 0 (then every path is refused). */
int rpc_roots_init(rpc_roots *r, const char *what, const char *const *dirs, int n,
                   char *err, size_t errlen);

/* Free the directories of *r and empty it. Safe on an empty or zeroed rpc_roots. */
void rpc_roots_free(rpc_roots *r);

/* What rpc_path_confine requires of the path. */
enum {
    RPC_PATH_EXISTING = 0,  /* must exist */
    RPC_PATH_NEW = 1,       /* may be absent: its parent must exist (and be confined);
                               when it exists it is resolved and checked like an
                               existing path; never a root itself */
    RPC_PATH_DIR = 2,       /* when it exists: must be a directory */
    RPC_PATH_FILE = 4       /* when it exists: must be a regular file */
};

/* Resolve `path` and check that it lies under one of the roots of `r`.
 * field: the request field named in messages ("model_path").
 * flags: RPC_PATH_* above.
 * On success returns 0 and *resolved is a malloc'd absolute path (caller frees) with no
 * symbolic links (for RPC_PATH_NEW and an absent path: the resolved parent joined with
 * the last component).
 * Errors (message in err naming field and path; *resolved NULL):
 *   RPC_INVALID_ARGUMENT  empty or over-long path; RPC_PATH_NEW with a last component of
 *                         "." or ".."; wrong type (not a directory / regular file)
 *   RPC_PERMISSION_DENIED outside every root (lexically or after resolving links), no
 *                         roots configured, or access denied by the filesystem
 *   RPC_NOT_FOUND         does not exist (RPC_PATH_NEW: the parent does not exist)
 *   RPC_RESOURCE_EXHAUSTED out of memory; RPC_INTERNAL other filesystem errors */
int rpc_path_confine(const rpc_roots *r, const char *field, const char *path,
                     unsigned flags, char **resolved, char *err, size_t errlen);

/* 1 if the absolute, normalised path `p` is `root` or lies under it, else 0. */
int rpc_path_under(const char *p, const char *root);

#endif

/* outdir.h - where a prune's output is built, and what may be replaced or removed.
 *
 * A prune of <parent>/<name> builds its output in a temporary directory beside it and
 * holds an exclusive flock(2) on a lock file beside that directory for its whole life:
 *
 *   <parent>/.<name>.reap-tmp-<pid>-<XXXXXX>        the output being built
 *   <parent>/.<name>.reap-tmp-<pid>-<XXXXXX>.old    an earlier output moved aside (--force)
 *   <parent>/.<name>.reap-tmp-<pid>-<XXXXXX>.lock   locked while the writer lives
 *
 * The lock file is created and locked before the directory exists and unlinked only
 * after the directories are gone (renamed into place or removed), so a temporary
 * directory whose lock can be taken belongs to a writer that died (SIGKILL, a crash, a
 * lost node): reap_outdir_sweep removes it. A held lock means a live writer, perhaps in
 * another process or container sharing the volume: left alone. Locks are per open file
 * description, so a writer in the same process counts as live too. The lock is not a
 * pid guess: pids repeat across containers and restarts. On a file system without
 * locks nothing can be locked and nothing is swept (reported as in use).
 *
 * Thread rules: no shared state; a reap_outdir_tmp belongs to one prune.
 */
#ifndef REAP_OUTDIR_H
#define REAP_OUTDIR_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

typedef struct reap_outdir_tmp {
    char dir[PATH_MAX];   /* the temporary output directory (created) */
    char old[PATH_MAX + 8]; /* dir + ".old": where an existing output is moved aside */
    char lock[PATH_MAX];  /* dir + ".lock" */
    int lock_fd;          /* holds the lock; -1 when released */
} reap_outdir_tmp;

/* Create and lock <parent>/.<name>.reap-tmp-<pid>-XXXXXX.lock, then make the directory
 * (mode 0755). `parent` is a resolved directory, `name` one path component.
 * Returns REAP_OK, REAP_E_IO (message names the path), REAP_E_INVALID (names too long). */
int reap_outdir_tmp_create(const char *parent, const char *name, reap_outdir_tmp *t);

/* The writer is done: its directories must already be renamed into place or removed.
 * Unlinks the lock file and closes it (the lock goes with it). Safe to call twice. */
void reap_outdir_tmp_release(reap_outdir_tmp *t);

/* What reap_outdir_sweep did with one leftover. */
typedef enum reap_leftover_action {
    REAP_LEFTOVER_REMOVED,   /* a dead writer's directory: removed */
    REAP_LEFTOVER_RESTORED,  /* a dead writer had moved the output aside and not put a new
                                one in place: the old output is renamed back */
    REAP_LEFTOVER_IN_USE,    /* lock held by a live writer: left alone */
    REAP_LEFTOVER_NO_LOCK,   /* no lock file (left by a reap before locks, or not reap's):
                                left alone, for a person to remove */
    REAP_LEFTOVER_FAILED     /* a dead writer's, but it could not be removed (permissions):
                                left, reported */
} reap_leftover_action;

/* Called once per leftover directory: its path, its size (bytes of the regular files in
 * it; 0 unless REMOVED or RESTORED) and what was done. */
typedef void (*reap_leftover_fn)(void *ud, const char *path, uint64_t bytes,
                                 reap_leftover_action action);

/* One line (no newline) for what the sweep did with a leftover, for a log or stderr:
 * "removed PATH (0.12 GB, 123456789 bytes), left by a prune that did not finish", ...
 * Writes at most cap bytes into buf (always terminated) and returns buf. */
char *reap_leftover_describe(const char *path, uint64_t bytes, reap_leftover_action action,
                             char *buf, size_t cap);

/* Clean up after dead writers in `parent`: the temporary directories of outputs named
 * `name` (NULL: of every output in `parent`) whose lock can be taken are removed (an
 * `.old` one is renamed back to <parent>/<name> when nothing is there), and stale lock
 * files are unlinked. `fn` (may be NULL) hears of every leftover directory; *n_removed
 * (may be NULL) counts those removed or restored. A leftover that cannot be removed is
 * reported and skipped. Returns REAP_OK, REAP_E_IO when `parent` cannot be listed, or
 * REAP_E_NOMEM. */
int reap_outdir_sweep(const char *parent, const char *name, reap_leftover_fn fn, void *ud,
                      int *n_removed);

/* The --force / overwrite rule: an existing `path` may be replaced only when it is a
 * directory that holds a reap manifest (reap-manifest.json of format reap-manifest/1),
 * i.e. an earlier reap output, or when it is empty. `shown` names it in the message.
 * Returns REAP_OK, REAP_E_PRECONDITION (anything else: the message says what was found
 * and that reap replaces only its own outputs or empty directories), REAP_E_IO. */
int reap_outdir_check_replaceable(const char *path, const char *shown);

/* Remove the tree at `path` (nothing followed across symlinks). Returns 0 or -1. */
int reap_outdir_remove_tree(const char *path);

#endif

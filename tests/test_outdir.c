/* test_outdir.c - temporary output directories under a lock and the sweep of dead
 * writers' leftovers (pruner/outdir.h), and the rule for replacing an output:
 *   - a temporary directory is made with its lock file beside it, locked; released, the
 *     lock file goes;
 *   - the sweep leaves a directory whose lock is held (here by another open file
 *     description in this process: flock locks are per description), removes one whose
 *     lock is free and reports its size, puts a moved-aside output back when the output
 *     is missing (removes it when a new output is in place), leaves a directory without
 *     a lock file (an older reap's) and reports it, unlinks a stale lock file, keeps to
 *     the output named and touches nothing else in the directory;
 *   - an existing output may be replaced when it holds a reap manifest or is empty; a
 *     directory of other files, a reap-manifest.json that is not one, a file or a
 *     symbolic link are refused as REAP_E_PRECONDITION with the reason.
 * (tests/prune_cli.sh kills a real prune mid-write and checks the next prune's sweep.)
 *
 * Usage: test_outdir SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outdir.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

typedef struct seen {
    int n[5];
    uint64_t bytes[5];
    char path[5][4096];
} seen;

static void on_leftover(void *ud, const char *path, uint64_t bytes, reap_leftover_action a)
{
    seen *s = ud;
    s->n[a]++;
    s->bytes[a] += bytes;
    snprintf(s->path[a], sizeof s->path[a], "%s", path);
}

/* A leftover as a killed writer leaves it: <dir>/.<name>.reap-tmp-<token><suffix> with
 * one file of `size` bytes, and its lock file (not locked) when `with_lock`. */
static void make_leftover(const char *dir, const char *name, const char *token,
                          const char *suffix, size_t size, int with_lock)
{
    char d[4096], f[4200], l[4200];
    snprintf(d, sizeof d, "%s/.%s.reap-tmp-%s%s", dir, name, token, suffix);
    CHECK(make_dirs(d) == 0);
    snprintf(f, sizeof f, "%s/model-00001-of-00002.safetensors", d);
    char *buf = calloc(size + 1, 1);
    if (buf) {
        write_bytes(f, buf, size);
        free(buf);
    }
    if (with_lock) {
        snprintf(l, sizeof l, "%s/.%s.reap-tmp-%s.lock", dir, name, token);
        write_text(l, "");
    }
}

static void test_tmp_create_release(void)
{
    const char *dir = sp("create");
    CHECK(fresh_dir(dir) == 0);
    reap_outdir_tmp t;
    CHECK_RC(reap_outdir_tmp_create(dir, "out", &t), REAP_OK);
    char want[4096];
    snprintf(want, sizeof want, "%s/.out.reap-tmp-%ld-", dir, (long)getpid());
    CHECK(!strncmp(t.dir, want, strlen(want)) && strlen(t.dir) == strlen(want) + 6);
    struct stat sb;
    CHECK(stat(t.dir, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK(exists(t.lock) && !exists(t.old) && t.lock_fd >= 0);
    /* the lock is held: another description cannot take it */
    int fd = open(t.lock, O_RDWR);
    CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK);
    /* a sweep now leaves it and says it is in use */
    seen s = {0};
    int n_removed = -1;
    CHECK_RC(reap_outdir_sweep(dir, "out", on_leftover, &s, &n_removed), REAP_OK);
    CHECK(n_removed == 0 && s.n[REAP_LEFTOVER_IN_USE] == 1 && !strcmp(s.path[REAP_LEFTOVER_IN_USE], t.dir));
    CHECK(exists(t.dir) && exists(t.lock));
    /* released (after the writer removed or renamed its directory): the lock file goes
     * and the lock with it */
    CHECK(rmdir(t.dir) == 0);
    reap_outdir_tmp_release(&t);
    CHECK(!exists(t.lock) && t.lock_fd == -1);
    reap_outdir_tmp_release(&t);   /* twice: harmless */
    if (fd >= 0)
        close(fd);
}

static void test_sweep(void)
{
    const char *dir = sp("sweep");
    char keep_lock[4096], p[4096];
    CHECK(fresh_dir(dir) == 0);
    make_leftover(dir, "out", "11-aaaaaa", "", 1000, 1);      /* dead: removed */
    make_leftover(dir, "out", "12-bbbbbb", "", 10, 1);        /* live: kept */
    make_leftover(dir, "out", "13", "", 10, 0);               /* an older reap's: kept */
    make_leftover(dir, "out", "14-cccccc", "", 10, 0);        /* no lock file: kept */
    make_leftover(dir, "other", "15-dddddd", "", 10, 1);      /* another output: kept */
    snprintf(p, sizeof p, "%s/.out.reap-tmp-16-eeeeee.lock", dir);
    write_text(p, "");                                         /* stale lock: unlinked */
    snprintf(p, sizeof p, "%s/notes.reap-tmp-17-ffffff", dir); /* not a leftover name */
    CHECK(make_dirs(p) == 0);
    snprintf(keep_lock, sizeof keep_lock, "%s/.out.reap-tmp-12-bbbbbb.lock", dir);
    int held = open(keep_lock, O_RDWR);
    CHECK(held >= 0 && flock(held, LOCK_EX | LOCK_NB) == 0);

    seen s = {0};
    int n_removed = -1;
    CHECK_RC(reap_outdir_sweep(dir, "out", on_leftover, &s, &n_removed), REAP_OK);
    CHECK(n_removed == 1);
    CHECK(s.n[REAP_LEFTOVER_REMOVED] == 1 && s.bytes[REAP_LEFTOVER_REMOVED] == 1000);
    snprintf(p, sizeof p, "%s/.out.reap-tmp-11-aaaaaa", dir);
    CHECK(!strcmp(s.path[REAP_LEFTOVER_REMOVED], p) && !exists(p));
    snprintf(p, sizeof p, "%s/.out.reap-tmp-11-aaaaaa.lock", dir);
    CHECK(!exists(p));
    CHECK(s.n[REAP_LEFTOVER_IN_USE] == 1 && exists(keep_lock));
    snprintf(p, sizeof p, "%s/.out.reap-tmp-12-bbbbbb", dir);
    CHECK(exists(p));
    CHECK(s.n[REAP_LEFTOVER_NO_LOCK] == 2 && s.n[REAP_LEFTOVER_RESTORED] == 0);
    snprintf(p, sizeof p, "%s/.out.reap-tmp-13", dir);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/.out.reap-tmp-14-cccccc", dir);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/.other.reap-tmp-15-dddddd", dir);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/.out.reap-tmp-16-eeeeee.lock", dir);
    CHECK(!exists(p));
    snprintf(p, sizeof p, "%s/notes.reap-tmp-17-ffffff", dir);
    CHECK(exists(p));

    /* the live writer dies: now its directory goes too; every output (NULL) swept */
    close(held);
    memset(&s, 0, sizeof s);
    CHECK_RC(reap_outdir_sweep(dir, NULL, on_leftover, &s, &n_removed), REAP_OK);
    CHECK(n_removed == 2 && s.n[REAP_LEFTOVER_REMOVED] == 2 && !exists(keep_lock));
    snprintf(p, sizeof p, "%s/.other.reap-tmp-15-dddddd", dir);
    CHECK(!exists(p));

    /* the line the CLI and the service print for it */
    char line[8192];
    CHECK(!strcmp(reap_leftover_describe("/o/.x.reap-tmp-1-aaaaaa", 1234567890,
                                         REAP_LEFTOVER_REMOVED, line, sizeof line),
                  "removed /o/.x.reap-tmp-1-aaaaaa (1.23 GB, 1234567890 bytes), left by a "
                  "prune that did not finish"));

    /* a missing directory cannot be listed */
    CHECK_RC(reap_outdir_sweep(sp("no-such-dir"), NULL, NULL, NULL, NULL), REAP_E_IO);
}

/* A writer killed between moving the old output aside and renaming the new one in: the
 * old output is put back. Killed after the new one was in place: the old one goes. */
static void test_sweep_old(void)
{
    const char *dir = sp("old");
    char out[4096], p[4200];
    CHECK(fresh_dir(dir) == 0);
    make_leftover(dir, "out", "21-aaaaaa", ".old", 300, 1);
    make_leftover(dir, "out", "21-aaaaaa", "", 200, 0);   /* its complete new output */
    snprintf(out, sizeof out, "%s/out", dir);
    seen s = {0};
    int n_removed = 0;
    CHECK_RC(reap_outdir_sweep(dir, "out", on_leftover, &s, &n_removed), REAP_OK);
    CHECK(n_removed == 2 && s.n[REAP_LEFTOVER_RESTORED] == 1 &&
          !strcmp(s.path[REAP_LEFTOVER_RESTORED], out) && s.bytes[REAP_LEFTOVER_RESTORED] == 300);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", out);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && sb.st_size == 300);
    snprintf(p, sizeof p, "%s/.out.reap-tmp-21-aaaaaa.lock", dir);
    CHECK(!exists(p));

    make_leftover(dir, "out", "22-bbbbbb", ".old", 400, 1);
    memset(&s, 0, sizeof s);
    CHECK_RC(reap_outdir_sweep(dir, "out", on_leftover, &s, &n_removed), REAP_OK);
    CHECK(n_removed == 1 && s.n[REAP_LEFTOVER_REMOVED] == 1 && s.n[REAP_LEFTOVER_RESTORED] == 0);
    snprintf(p, sizeof p, "%s/.out.reap-tmp-22-bbbbbb.old", dir);
    CHECK(!exists(p));
    CHECK(stat(out, &sb) == 0);
}

static void test_replaceable(void)
{
    const char *dir = sp("replace");
    char p[4096], f[4200];
    CHECK(fresh_dir(dir) == 0);
    snprintf(p, sizeof p, "%s/absent", dir);
    CHECK_RC(reap_outdir_check_replaceable(p, "absent"), REAP_OK);
    snprintf(p, sizeof p, "%s/empty", dir);
    CHECK(make_dirs(p) == 0);
    CHECK_RC(reap_outdir_check_replaceable(p, "empty"), REAP_OK);
    snprintf(p, sizeof p, "%s/reap", dir);
    snprintf(f, sizeof f, "%s/reap-manifest.json", p);
    CHECK(make_dirs(p) == 0);
    write_text(f, "{\"format\": \"reap-manifest/1\", \"files\": []}");
    snprintf(f, sizeof f, "%s/model.safetensors", p);
    write_text(f, "x");
    CHECK_RC(reap_outdir_check_replaceable(p, "reap"), REAP_OK);

    snprintf(p, sizeof p, "%s/user", dir);
    snprintf(f, sizeof f, "%s/notes.txt", p);
    CHECK(make_dirs(p) == 0);
    write_text(f, "mine");
    CHECK_RC(reap_outdir_check_replaceable(p, "user"), REAP_E_PRECONDITION);
    CHECK_ERRMSG("output 'user' exists and is not a reap output: it has no reap-manifest.json "
                 "and holds 1 entry ('notes.txt')");
    CHECK_ERRMSG("reap replaces only its own outputs");
    snprintf(f, sizeof f, "%s/reap-manifest.json", p);
    write_text(f, "{\"format\": \"something else\"}");
    CHECK_RC(reap_outdir_check_replaceable(p, "user"), REAP_E_PRECONDITION);
    CHECK_ERRMSG("its reap-manifest.json is not a reap manifest");
    write_text(f, "not json");
    CHECK_RC(reap_outdir_check_replaceable(p, "user"), REAP_E_PRECONDITION);
    CHECK_ERRMSG("is not a reap manifest");

    snprintf(p, sizeof p, "%s/afile", dir);
    write_text(p, "x");
    CHECK_RC(reap_outdir_check_replaceable(p, "afile"), REAP_E_PRECONDITION);
    CHECK_ERRMSG("is a file, not a directory");
    snprintf(f, sizeof f, "%s/link", dir);
    snprintf(p, sizeof p, "%s/empty", dir);
    CHECK(symlink(p, f) == 0);
    CHECK_RC(reap_outdir_check_replaceable(f, "link"), REAP_E_PRECONDITION);
    CHECK_ERRMSG("is a symbolic link");
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_outdir";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    test_tmp_create_release();
    test_sweep();
    test_sweep_old();
    test_replaceable();
    TEST_MAIN_END();
}

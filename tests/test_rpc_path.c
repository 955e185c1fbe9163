/* test_rpc_path.c - unit tests for rpc/rpc_path.c (confinement of client paths to root
 * directories).
 *
 * Usage: test_rpc_path <scratch-dir>. Builds this tree under the scratch directory:
 *   models/m1/            a model directory        models/m1/config.json  a file
 *   models/link-in  -> m1                            (symlink staying inside)
 *   models/link-out -> ../secret                     (symlink escaping the root)
 *   models/dangling -> ../secret/nothing             (dangling, pointing outside)
 *   models/loop     -> loop                          (symlink loop)
 *   calib/c.jsonl   a second root with a file
 *   out/            an output root (RPC_PATH_NEW)    out/esc -> ../secret
 *   secret/s.txt    outside every root
 *   models-evil/x   a sibling whose name starts with the root's name
 */
#include "rpc_path.h"
#include "rpc_status.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX];

/* Confine and expect `want`; on success the resolved path must equal sp(expect_rel). */
static void expect(const rpc_roots *r, const char *path, unsigned flags, int want,
                   const char *expect_rel, int line)
{
    char err[512] = "", *res = NULL;
    int rc = rpc_path_confine(r, "model_path", path, flags, &res, err, sizeof err);
    test_checks++;
    if (rc != want) {
        test_failures++;
        fprintf(stderr, "line %d: '%s' -> %s (%s), want %s\n", line, path, rpc_code_name(rc),
                err, rpc_code_name(want));
    } else if (rc == 0 && expect_rel) {
        char want_abs[PATH_MAX];
        char *rb = realpath(base, NULL);
        snprintf(want_abs, sizeof want_abs, "%s/%s", rb, expect_rel);
        free(rb);
        if (strcmp(res, want_abs)) {
            test_failures++;
            fprintf(stderr, "line %d: '%s' resolved to '%s', want '%s'\n", line, path, res,
                    want_abs);
        }
    } else if (rc != 0) {
        CHECK_MSG(res == NULL, "line %d: resolved set on failure", line);
        CHECK_MSG(strstr(err, "model_path") != NULL, "line %d: message '%s' lacks the field",
                  line, err);
    }
    free(res);
}
#define EXPECT(r, path, flags, want, rel) expect(r, path, flags, want, rel, __LINE__)

int main(int argc, char **argv)
{
    char err[512];
    if (argc < 2) {
        fprintf(stderr, "usage: test_rpc_path SCRATCH\n");
        return 2;
    }
    make_dirs(argv[1]);
    char *rb = realpath(argv[1], NULL);
    if (!rb) {
        fprintf(stderr, "cannot resolve %s\n", argv[1]);
        return 2;
    }
    snprintf(base, sizeof base, "%s", rb);
    free(rb);
    scratch = base;

    /* Fresh tree. */
    const char *dirs[] = {"models/m1", "calib", "out", "secret", "models-evil"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
        make_dirs(sp(dirs[i]));
    write_scratch("models/m1/config.json", "x");
    write_scratch("calib/c.jsonl", "x");
    write_scratch("secret/s.txt", "x");
    write_scratch("models-evil/x", "x");
    const char *links[][2] = {{"m1", "models/link-in"},
                              {"../secret", "models/link-out"},
                              {"../secret/nothing", "models/dangling"},
                              {"loop", "models/loop"},
                              {"../secret", "out/esc"},
                              {"../secret/new", "out/dangling"}};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        unlink(sp(links[i][1]));
        if (symlink(links[i][0], sp(links[i][1])))
            fprintf(stderr, "symlink %s: %s\n", links[i][1], strerror(errno));
    }
    rmdir(sp("out/new1"));

    rpc_roots models, two, outr, none;
    const char *mroot[] = {sp("models")};
    const char *troots[] = {sp("models"), sp("calib")};
    const char *oroot[] = {sp("out")};
    CHECK(rpc_roots_init(&models, "--model-root", mroot, 1, err, sizeof err) == 0);
    CHECK(rpc_roots_init(&two, "--model-root", troots, 2, err, sizeof err) == 0);
    CHECK(rpc_roots_init(&outr, "--output-root", oroot, 1, err, sizeof err) == 0);
    CHECK(rpc_roots_init(&none, "--model-root", NULL, 0, err, sizeof err) == 0);

    /* Roots that are not usable. */
    {
        rpc_roots bad;
        const char *missing[] = {sp("nope")};
        const char *file[] = {sp("calib/c.jsonl")};
        const char *empty[] = {""};
        CHECK(rpc_roots_init(&bad, "--model-root", missing, 1, err, sizeof err) ==
              RPC_NOT_FOUND);
        CHECK(strstr(err, "--model-root") != NULL);
        CHECK(rpc_roots_init(&bad, "--model-root", file, 1, err, sizeof err) ==
              RPC_INVALID_ARGUMENT);
        CHECK(rpc_roots_init(&bad, "--model-root", empty, 1, err, sizeof err) ==
              RPC_INVALID_ARGUMENT);
        CHECK(bad.n == 0 && bad.dirs == NULL);
    }

    /* Existing paths inside. */
    EXPECT(&models, sp("models/m1"), RPC_PATH_DIR, 0, "models/m1");
    EXPECT(&models, sp("models/m1/"), RPC_PATH_DIR, 0, "models/m1");
    EXPECT(&models, sp("models//m1/./"), RPC_PATH_DIR, 0, "models/m1");
    EXPECT(&models, sp("models"), RPC_PATH_DIR, 0, "models");            /* the root itself */
    EXPECT(&models, sp("models/m1/config.json"), RPC_PATH_FILE, 0, "models/m1/config.json");
    EXPECT(&models, sp("models/link-in"), RPC_PATH_DIR, 0, "models/m1"); /* inner symlink */
    EXPECT(&models, "m1", RPC_PATH_DIR, 0, "models/m1");                /* relative */
    EXPECT(&models, "m1/../m1", RPC_PATH_DIR, 0, "models/m1");
    EXPECT(&two, "c.jsonl", RPC_PATH_FILE, 0, "calib/c.jsonl");         /* second root */

    /* Escapes. */
    EXPECT(&models, sp("secret/s.txt"), 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, sp("secret/none"), 0, RPC_PERMISSION_DENIED, NULL);  /* no existence leak */
    EXPECT(&models, sp("models/../secret/s.txt"), 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, "../secret/s.txt", 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, "../../../../../../../etc/passwd", 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, "/etc/passwd", 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, sp("models/link-out"), 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, sp("models/link-out/s.txt"), 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, "link-out/s.txt", 0, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&models, sp("models-evil/x"), 0, RPC_PERMISSION_DENIED, NULL); /* prefix sibling */
    EXPECT(&none, sp("models/m1"), 0, RPC_PERMISSION_DENIED, NULL);       /* no roots */

    /* Missing, malformed, wrong type. */
    EXPECT(&models, sp("models/nope"), 0, RPC_NOT_FOUND, NULL);
    EXPECT(&models, "nope", 0, RPC_NOT_FOUND, NULL);
    EXPECT(&models, sp("models/dangling"), 0, RPC_NOT_FOUND, NULL);
    EXPECT(&models, sp("models/loop"), 0, RPC_INVALID_ARGUMENT, NULL);
    EXPECT(&models, "", 0, RPC_INVALID_ARGUMENT, NULL);
    EXPECT(&models, sp("models/m1/config.json"), RPC_PATH_DIR, RPC_INVALID_ARGUMENT, NULL);
    EXPECT(&models, sp("models/m1"), RPC_PATH_FILE, RPC_INVALID_ARGUMENT, NULL);
    {
        char longp[PATH_MAX + 16];
        memset(longp, 'a', sizeof longp - 1);
        longp[sizeof longp - 1] = '\0';
        EXPECT(&models, longp, 0, RPC_INVALID_ARGUMENT, NULL);
    }

    /* New paths (outputs). */
    EXPECT(&outr, sp("out/new1"), RPC_PATH_NEW | RPC_PATH_DIR, 0, "out/new1");
    EXPECT(&outr, "new1", RPC_PATH_NEW | RPC_PATH_DIR, 0, "out/new1");
    EXPECT(&outr, "new1/", RPC_PATH_NEW | RPC_PATH_DIR, 0, "out/new1");
    EXPECT(&outr, sp("out"), RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);  /* parent outside */
    EXPECT(&outr, sp("out/.."), RPC_PATH_NEW, RPC_INVALID_ARGUMENT, NULL);
    EXPECT(&outr, sp("out/."), RPC_PATH_NEW, RPC_INVALID_ARGUMENT, NULL);
    EXPECT(&outr, "../escape", RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&outr, sp("secret/new"), RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&outr, sp("out/esc/new"), RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);  /* via link */
    EXPECT(&outr, sp("out/esc"), RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);  /* existing link */
    EXPECT(&outr, sp("out/dangling"), RPC_PATH_NEW, RPC_PERMISSION_DENIED, NULL);
    EXPECT(&outr, sp("out/a/b"), RPC_PATH_NEW, RPC_NOT_FOUND, NULL);     /* parent missing */
    make_dirs(sp("out/exists"));
    EXPECT(&outr, sp("out/exists"), RPC_PATH_NEW | RPC_PATH_DIR, 0, "out/exists");
    write_scratch("out/file", "x");
    EXPECT(&outr, sp("out/file"), RPC_PATH_NEW | RPC_PATH_DIR, RPC_INVALID_ARGUMENT, NULL);

    /* rpc_path_under edge cases. */
    CHECK(rpc_path_under("/a/b", "/a"));
    CHECK(rpc_path_under("/a", "/a"));
    CHECK(!rpc_path_under("/ab", "/a"));
    CHECK(rpc_path_under("/x", "/"));

    rpc_roots_free(&models);
    rpc_roots_free(&two);
    rpc_roots_free(&outr);
    rpc_roots_free(&none);
    rpc_roots_free(&none);   /* twice is safe */
    TEST_MAIN_END();
}

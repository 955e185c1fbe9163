/* test_run_request.c - scoring requests as recorded with their runs (scorer/run_request.h):
 * round trips (with and without a tokenizer, the largest seed, every field changed from
 * its default), and refusals of damaged or foreign text, each with a message, never a
 * crash; pending-request files: written, listed oldest first with their text, removed,
 * foreign names skipped, a missing directory read as none.
 *
 * Usage: test_run_request SCRATCH_DIR (created if missing).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "reap_err.h"
#include "run_request.h"
#include "runs.h"
#include "test_fixtures.h"
#include "test_util.h"

static void round_trip(const reap_rm_request *rq, const char *want_backend)
{
    char *text = NULL;
    reap_run_request_buf b;
    CHECK_RC(reap_run_request_encode(rq, &text), REAP_OK);
    CHECK_RC(reap_run_request_decode(text, &b), REAP_OK);
    CHECK(!strcmp(b.rq.model_dir, rq->model_dir) && !strcmp(b.rq.calib_path, rq->calib_path));
    CHECK(rq->tokenizer_path ? b.rq.tokenizer_path && !strcmp(b.rq.tokenizer_path,
                                                              rq->tokenizer_path)
                             : b.rq.tokenizer_path == NULL);
    CHECK(b.rq.shuffle == rq->shuffle && b.rq.seed == rq->seed && b.rq.seq_len == rq->seq_len &&
          b.rq.pack == rq->pack && b.rq.max_samples == rq->max_samples &&
          b.rq.batch_rows == rq->batch_rows && b.rq.backend == NULL && !b.rq.force);
    CHECK_MSG(!strcmp(b.backend, want_backend), "backend '%s'", b.backend);
    reap_run_request_buf_free(&b);
    free(text);
}

static void test_pending(void)
{
    const char *dir = sp("pending");
    uint8_t id[3][16];
    reap_run_pending *p = NULL;
    int n = -1;
    CHECK(fresh_dir(dir) == 0);
    CHECK_RC(reap_run_pending_list(sp("no-such-dir"), &p, &n), REAP_OK);
    CHECK(n == 0 && p == NULL);
    for (int i = 0; i < 3; i++) {
        char text[32];
        /* ids descending, files written back to back: well within one tick of the file
         * system's clock, so only the writer's own submission stamp orders them */
        memset(id[i], 0xc0 - 0x20 * i, 16);
        snprintf(text, sizeof text, "{\"n\": %d}", i);
        CHECK_RC(reap_run_pending_write(dir, id[i], text), REAP_OK);
    }
    write_scratch("pending/notes.json", "x");             /* not a run id: skipped */
    write_scratch("pending/0123.json", "x");
    CHECK_RC(reap_run_pending_list(dir, &p, &n), REAP_OK);
    CHECK(n == 3);
    for (int i = 0; i < n && n == 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "{\"n\": %d}", i);
        CHECK_MSG(!memcmp(p[i].run_id, id[i], 16) && !strcmp(p[i].text, want),
                  "pending %d: %s", i, p[i].text);
    }
    reap_run_pending_free(p, n);
    reap_run_pending_remove(dir, id[1]);
    reap_run_pending_remove(dir, id[1]); /* twice: no error */
    CHECK_RC(reap_run_pending_list(dir, &p, &n), REAP_OK);
    CHECK(n == 2 && !memcmp(p[0].run_id, id[0], 16) && !memcmp(p[1].run_id, id[2], 16));
    reap_run_pending_free(p, n);
    CHECK_RC(reap_run_pending_write(sp("no-such-dir"), id[0], "{}"), REAP_E_IO);
    CHECK_ERRMSG("no-such-dir");
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_run_request";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    test_pending();
    reap_rm_request a = {.model_dir = "/models/m", .calib_path = "/calib/c.jsonl",
                         .seq_len = 2048, .pack = 1};
    round_trip(&a, "cpu");
    reap_rm_request b = {.model_dir = "/models/a \"quoted\" dir", .calib_path = "/c/ü.jsonl",
                         .tokenizer_path = "/models/tok", .shuffle = 1,
                         .seed = UINT64_MAX, .seq_len = 1, .pack = 0, .max_samples = 300,
                         .batch_rows = 16, .backend = &reap_backend_cpu, .force = 1};
    round_trip(&b, "cpu");

    struct {
        const char *text, *msg;
        int rc;
    } bad[] = {
        {"", "run request", REAP_E_FORMAT},
        {"{\"format\": \"reap-run-request/9\"}", "format", REAP_E_UNSUPPORTED},
        {"[1, 2]", "format 'none'", REAP_E_UNSUPPORTED},
        {"{\"format\": \"reap-run-request/1\", \"model_dir\": \"/m\"}", "run request",
         REAP_E_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reap_run_request_buf o;
        CHECK_RC(reap_run_request_decode(bad[i].text, &o), bad[i].rc);
        CHECK_ERRMSG(bad[i].msg);
    }
    /* Well-formed text with one field out of range or of the wrong type. */
    char *text = NULL;
    CHECK_RC(reap_run_request_encode(&a, &text), REAP_OK);
    const char *swaps[][2] = {
        {"\"seq_len\":2048", "\"seq_len\":0"},   {"\"seed\":\"0\"", "\"seed\":\"-1\""},
        {"\"seed\":\"0\"", "\"seed\":\"x\""},     {"\"seed\":\"0\"", "\"seed\":\"\""},
        {"\"seed\":\"0\"", "\"seed\":0"},         {"\"max_samples\":0", "\"max_samples\":-5"},
        {"\"tokenizer_path\":null", "\"tokenizer_path\":3"},
        {"\"pack\":true", "\"pack\":true,\"extra\":1"},
        {"\"seed\":\"0\"", "\"seed\":\"99999999999999999999\""},
    };
    for (size_t i = 0; text && i < sizeof swaps / sizeof swaps[0]; i++) {
        char *p = strstr(text, swaps[i][0]);
        CHECK_MSG(p != NULL, "'%s' not in %s", swaps[i][0], text);
        if (!p)
            continue;
        size_t need = strlen(text) + strlen(swaps[i][1]) + 1;
        char *t = malloc(need);
        snprintf(t, need, "%.*s%s%s", (int)(p - text), text, swaps[i][1],
                 p + strlen(swaps[i][0]));
        reap_run_request_buf o;
        int rc = reap_run_request_decode(t, &o);
        CHECK_MSG(rc == REAP_E_FORMAT, "%s: rc %d", t, rc);
        free(t);
    }
    free(text);
    TEST_MAIN_END();
}

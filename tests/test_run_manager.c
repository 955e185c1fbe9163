/* test_run_manager.c - the run manager's queue and its pending requests
 * (scorer/run_manager.h, run_request.h) on a real store and a generated model. The
 * calibration "file" of one run is a FIFO, so that run blocks in a known state (running,
 * reading its data) until the test writes to it:
 *   - a run that completes: its pending file is gone and its run record holds its
 *     request, which decodes to what was submitted;
 *   - a run reading the FIFO, fed garbage, fails for good: its pending file goes;
 *   - a run waiting on the FIFO (no writer) is cancelled: it ends CANCELLED without a
 *     byte written, its pending file goes;
 *   - 1 running + 1 queued fill a queue of 1: a third run is refused (REAP_RM_E_BUSY) and
 *     leaves no pending file; the same request marked resumed, under a run id of its
 *     own, is accepted (the limit does not apply) under that id;
 *   - every run not yet recorded has its pending file;
 *   - a shutdown ends the queued runs and the run waiting on the FIFO (no writer ever
 *     comes: the wait must not hold the shutdown), all INTERRUPTED; after the manager is
 *     freed, exactly these three runs' files remain (a restart submits them again), and
 *     they decode to their requests.
 * A watchdog ends the test if anything blocks for a minute.
 *
 * Usage: test_run_manager SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "genmodel.h"
#include "reap_err.h"
#include "run_manager.h"
#include "run_request.h"
#include "runs.h"
#include "store.h"
#include "test_fixtures.h"
#include "test_util.h"

/* Poll the job's state until it is `want` (or past it, for `or_ended`); 1 when reached. */
static int wait_state(reap_rm *m, const uint8_t id[16], int want, int or_ended)
{
    for (int i = 0; i < 12000; i++) { /* up to 120 s: the states below must come */
        reap_rm_info in;
        if (reap_rm_get(m, id, &in) == REAP_OK) {
            int st = in.state;
            reap_rm_info_free(&in);
            if (st == want || (or_ended && (st == REAP_RM_DONE || st == REAP_RM_FAILED ||
                                            st == REAP_RM_CANCELLED ||
                                            st == REAP_RM_INTERRUPTED)))
                return st == want;
        }
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    return 0;
}

static int n_pending(const char *dir, reap_run_pending **p)
{
    int n = -1;
    *p = NULL;
    CHECK_RC(reap_run_pending_list(dir, p, &n), REAP_OK);
    return n;
}

/* The run id of job `job_id`. */
static int run_id_of(reap_rm *m, uint64_t job_id, uint8_t out[16])
{
    reap_rm_info *v = NULL;
    int n = 0, found = 0;
    if (reap_rm_list(m, &v, &n))
        return 0;
    for (int i = 0; i < n; i++) {
        if (v[i].job_id == job_id) {
            memcpy(out, v[i].run_id, 16);
            found = 1;
        }
        reap_rm_info_free(&v[i]);
    }
    free(v);
    return found;
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_run_manager";
    CHECK(fresh_dir(scratch) == 0);
    alarm(300); /* a blocked FIFO must not hang the suite */
    char mdir[4096], calib[4096], fifo[4096], sdir[4096], pdir[4096];
    snprintf(mdir, sizeof mdir, "%s", sp("m"));
    snprintf(calib, sizeof calib, "%s", sp("c.jsonl"));
    snprintf(fifo, sizeof fifo, "%s", sp("fifo.jsonl"));
    snprintf(sdir, sizeof sdir, "%s", sp("store"));
    snprintf(pdir, sizeof pdir, "%s", sp("pending"));
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 2;
    CHECK_RC(reap_gen_model(&spec, mdir), REAP_OK);
    CHECK_RC(reap_gen_calib(calib, 4, 8, 30, spec.vocab, 3), REAP_OK);
    CHECK(mkfifo(fifo, 0600) == 0 && mkdir(pdir, 0755) == 0);
    reap_store_opts so = {.create = 1};
    reap_store *st = NULL;
    CHECK_RC(reap_store_open(sdir, &so, &st), REAP_OK);
    if (!st)
        return 1;
    reap_rm_opts ro = {.store = st, .max_running = 1, .max_queued = 1, .hash_threads = 1,
                       .backend_opts = {.threads = 1}, .pending_dir = pdir};
    reap_rm *m = NULL;
    CHECK_RC(reap_rm_create(&ro, &m), REAP_OK);
    if (!m)
        return 1;
    reap_run_pending *p = NULL;
    uint64_t job = 0;

    /* 1. A run that completes: no pending file left, the record holds the request. */
    reap_rm_request r0 = {.model_dir = mdir, .calib_path = calib, .seq_len = 32, .pack = 1,
                          .shuffle = 1, .seed = 77};
    uint8_t id0[16] = {0};
    CHECK_RC(reap_rm_submit(m, &r0, NULL, NULL, NULL, &job), REAP_OK);
    CHECK(run_id_of(m, job, id0));
    CHECK(wait_state(m, id0, REAP_RM_DONE, 1));
    CHECK(n_pending(pdir, &p) == 0);
    reap_run_pending_free(p, 0);
    reap_run_info rec;
    CHECK_RC(reap_store_run_get(st, NULL, id0, &rec), REAP_OK);
    reap_run_request_buf b;
    CHECK(rec.request != NULL);
    if (rec.request) {
        CHECK_RC(reap_run_request_decode(rec.request, &b), REAP_OK);
        CHECK(!strcmp(b.rq.model_dir, mdir) && !strcmp(b.rq.calib_path, calib) &&
              b.rq.seq_len == 32 && b.rq.shuffle == 1 && b.rq.seed == 77 &&
              !strcmp(b.backend, "cpu"));
        reap_run_request_buf_free(&b);
    }
    reap_run_info_free(&rec);

    /* 1b. A run reading the FIFO, fed garbage, fails for good: its file goes. */
    reap_rm_request rf = {.model_dir = mdir, .calib_path = fifo, .seq_len = 32, .pack = 1};
    uint8_t idf[16] = {0};
    CHECK_RC(reap_rm_submit(m, &rf, NULL, NULL, NULL, &job), REAP_OK);
    CHECK(run_id_of(m, job, idf));
    CHECK(wait_state(m, idf, REAP_RM_RUNNING, 1));
    int fd = open(fifo, O_WRONLY); /* returns once the run has the FIFO open */
    CHECK(fd >= 0 && write(fd, "not json\n", 9) == 9);
    if (fd >= 0)
        close(fd);
    CHECK(wait_state(m, idf, REAP_RM_FAILED, 1));
    CHECK(n_pending(pdir, &p) == 0);
    reap_run_pending_free(p, 0);

    /* 1c. A run waiting on the FIFO, which no writer opens, is cancelled: it ends. */
    CHECK_RC(reap_rm_submit(m, &rf, NULL, NULL, NULL, &job), REAP_OK);
    CHECK(run_id_of(m, job, idf));
    CHECK(wait_state(m, idf, REAP_RM_RUNNING, 1));
    CHECK_RC(reap_rm_cancel(m, idf, NULL), REAP_OK);
    CHECK(wait_state(m, idf, REAP_RM_CANCELLED, 1));
    CHECK(n_pending(pdir, &p) == 0);
    reap_run_pending_free(p, 0);

    /* 2. A blocks reading the FIFO (running); B waits (queued): the queue of 1 is full. */
    reap_rm_request ra = {.model_dir = mdir, .calib_path = fifo, .seq_len = 32, .pack = 1};
    reap_rm_request rb = {.model_dir = mdir, .calib_path = calib, .seq_len = 16, .pack = 1};
    reap_rm_request rc = {.model_dir = mdir, .calib_path = calib, .seq_len = 24, .pack = 1};
    uint8_t ida[16] = {0}, idb[16] = {0}, idx[16];
    CHECK_RC(reap_rm_submit(m, &ra, NULL, NULL, NULL, &job), REAP_OK);
    CHECK(run_id_of(m, job, ida));
    CHECK(wait_state(m, ida, REAP_RM_RUNNING, 1));
    CHECK_RC(reap_rm_submit(m, &rb, NULL, NULL, NULL, &job), REAP_OK);
    CHECK(run_id_of(m, job, idb));
    CHECK(n_pending(pdir, &p) == 2);
    reap_run_pending_free(p, 2);
    CHECK_RC(reap_rm_submit(m, &rc, NULL, NULL, NULL, &job), REAP_RM_E_BUSY);
    CHECK_ERRMSG("queue full");
    CHECK(n_pending(pdir, &p) == 2); /* the refused run left nothing */
    reap_run_pending_free(p, 2);
    /* The same request submitted again after a restart: accepted, under its own id. */
    memset(idx, 0x5a, 16);
    rc.run_id = idx;
    rc.resumed = 1;
    CHECK_RC(reap_rm_submit(m, &rc, NULL, NULL, NULL, &job), REAP_OK);
    reap_rm_info in;
    CHECK_RC(reap_rm_get(m, idx, &in), REAP_OK);
    CHECK(in.state == REAP_RM_QUEUED && in.queue_position == 2 && in.seq_len == 24);
    reap_rm_info_free(&in);
    CHECK(n_pending(pdir, &p) == 3);
    reap_run_pending_free(p, 3);

    /* 3. Shutdown: the queued runs end, and A, still waiting for a writer of the FIFO;
     * their files stay (nothing was recorded). */
    reap_rm_stop(m);
    CHECK(wait_state(m, idb, REAP_RM_INTERRUPTED, 1));
    CHECK(wait_state(m, idx, REAP_RM_INTERRUPTED, 1));
    CHECK(wait_state(m, ida, REAP_RM_INTERRUPTED, 1));
    reap_rm_free(m);
    int n = n_pending(pdir, &p);
    CHECK(n == 3);
    const uint8_t *want_id[3] = {ida, idb, idx};
    const int want_len[3] = {32, 16, 24};
    for (int i = 0; i < n && n == 3; i++) {
        CHECK(!memcmp(p[i].run_id, want_id[i], 16)); /* oldest first */
        CHECK_RC(reap_run_request_decode(p[i].text, &b), REAP_OK);
        CHECK(b.rq.seq_len == want_len[i] &&
              !strcmp(b.rq.calib_path, i == 0 ? fifo : calib));
        reap_run_request_buf_free(&b);
    }
    reap_run_pending_free(p, n);
    CHECK(reap_store_run_get(st, NULL, ida, &rec) == REAP_E_NOTFOUND); /* never recorded */
    reap_store_close(st);
    TEST_MAIN_END();
}

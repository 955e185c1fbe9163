/* run_request.h - a scoring request (reap_rm_request) as JSON text, recorded with its run
 * in the store (store/runs.h: request) so that a restarted scorer service can submit an
 * interrupted run again by itself (serve.c).
 *
 *   {"format": "reap-run-request/1", "model_dir": "/abs", "calib_path": "/abs",
 *    "tokenizer_path": "/abs" | null, "shuffle": false, "seed": "0" (decimal u64),
 *    "seq_len": 2048, "pack": true, "max_samples": 0, "batch_rows": 0, "backend": "cpu"}
 *
 * `force` is not recorded: a resumed run scores what is missing, as any run does.
 *
 * Thread rules: no shared state.
 */
#ifndef REAP_RUN_REQUEST_H
#define REAP_RUN_REQUEST_H

#include "run_manager.h"

/* The text of rq (malloc'd, NUL-terminated) in *out. REAP_OK or REAP_E_NOMEM. */
int reap_run_request_encode(const reap_rm_request *rq, char **out);

/* A decoded request: rq's strings point into this struct; rq.backend is NULL (the
 * caller maps `backend`, a name, to an implementation). */
typedef struct reap_run_request_buf {
    reap_rm_request rq;
    char *model_dir, *calib_path, *tokenizer_path;
    char backend[16];
} reap_run_request_buf;

/* Parse text written by reap_run_request_encode. REAP_OK, REAP_E_FORMAT (the message
 * names what is wrong), REAP_E_UNSUPPORTED (another format), REAP_E_NOMEM. On error
 * *out holds nothing to free. */
int reap_run_request_decode(const char *text, reap_run_request_buf *out);

void reap_run_request_buf_free(reap_run_request_buf *b);

/* Pending requests: runs submitted to the service but not yet recorded in the store (a
 * run's record is made when it starts scoring), one file per run, <dir>/<run id>.json
 * holding the request's text. The run manager writes one at submission and removes it
 * when the run has its record or ends for good, so that the runs still queued when the
 * server stops are submitted again, under the same run ids, when it starts
 * (serve_resume.h). Files are written to a temporary name, fsynced and renamed. Each
 * file's modification time is its submission time, set by the writer from the wall clock
 * at full resolution and strictly increasing within a process (the file system's own
 * timestamps are too coarse to order requests made milliseconds apart).
 * Thread rules: calls for different run ids may run concurrently. */

/* REAP_OK, REAP_E_IO (message names the file). */
int reap_run_pending_write(const char *dir, const uint8_t run_id[16], const char *text);

/* Remove the run's file if there is one (errors ignored: a stale file is resubmitted and
 * then found recorded or already scored). */
void reap_run_pending_remove(const char *dir, const uint8_t run_id[16]);

typedef struct reap_run_pending {
    uint8_t run_id[16];
    char *text;                 /* the request's text */
    int64_t mtime_ns;           /* submission time (the file's mtime, see above) */
} reap_run_pending;

/* Every pending request of dir, oldest first by submission time, ties by run id (files
 * whose name is not a run id are skipped). *out malloc'd (free with reap_run_pending_free); a missing dir is no
 * pending request. REAP_OK, REAP_E_IO, REAP_E_NOMEM. */
int reap_run_pending_list(const char *dir, reap_run_pending **out, int *n);
void reap_run_pending_free(reap_run_pending *p, int n);

#endif

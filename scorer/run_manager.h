/* run_manager.h - scoring runs of the scorer service on worker threads: a bounded queue,
 * live progress for any number of watchers, cancellation at layer boundaries, and a
 * graceful stop. Knows nothing of gRPC: the service (serve.c) attaches watchers as
 * callbacks and converts the events to messages.
 *
 * A submitted job waits in a FIFO queue (at most max_queued) until one of max_running
 * worker threads takes it, then runs reap_score_job_run (score_job.h) against the
 * store: identities, resume from the newest hidden-state checkpoint, one write
 * transaction per layer. Its run_id is made at submission (reap_run_id_new) and becomes
 * the id of the store's run record once the job has identified the model and the
 * calibration set (the ACCEPTED event), so a queued job can be watched and cancelled by
 * it. A job that ends before it writes a record (cancelled while queued, failed while
 * identifying, a pair already scored) keeps its id in memory only: the store never gets
 * a record for it.
 *
 * Events of a job, in order: QUEUED (at submission: run id and queue position),
 * ACCEPTED (ids, layers, start layer, or already_scored), TOKENIZED (samples, rows,
 * tokens), LAYER (one per committed layer), then exactly one of FINISHED and ERROR. A
 * job that fails before it is accepted (unreadable checkpoint, calibration errors) or is
 * cancelled while queued sends ERROR after QUEUED.
 *
 * Watchers: a watcher is (fn, release, wud). fn receives every event from the moment it
 * is attached (reap_rm_watch first replays QUEUED while the job is not yet accepted,
 * ACCEPTED and TOKENIZED - and the final event of a job that has ended - so a late
 * watcher sees the current state), on the job's thread, the submitting thread or the
 * attaching thread, with the job's lock held: fn must not block and must not call back
 * into the manager. fn returning non-zero detaches the watcher (it went away). After
 * the final event, after fn returned non-zero, or after reap_rm_unwatch, release(wud)
 * is called exactly once (without the lock) and the watcher is forgotten. Watchers do
 * not own a job: a job runs to its end when every watcher has gone.
 *
 * Stopping: reap_rm_cancel (one run) and reap_rm_stop (all: server shutdown) make a
 * running job stop after the layer in progress is committed (the store keeps it; the
 * same pair scored again resumes); a queued job ends at once (cancelled, or interrupted
 * by a stop) without touching the model or the store.
 *
 * Thread rules: every function is thread-safe except reap_rm_create / reap_rm_free
 * (one thread, no other call in progress or after free). Returned reap_rm_info copies
 * belong to the caller (reap_rm_info_free).
 */
#ifndef REAP_RUN_MANAGER_H
#define REAP_RUN_MANAGER_H

#include <stdint.h>

#include "fsopen.h"
#include "backend.h"
#include "store.h"

/* Manager-specific statuses (beside REAP_E_*): */
#define REAP_RM_E_BUSY (-201)     /* the queue is full */
#define REAP_RM_E_EXISTS (-202)   /* the same request is queued or running */
#define REAP_RM_E_STOPPING (-203) /* the manager is stopping (server shutdown) */

/* Job states; the values are those of reap.v1.RunState. */
typedef enum reap_rm_state {
    REAP_RM_QUEUED = 1,
    REAP_RM_RUNNING = 2,
    REAP_RM_DONE = 3,
    REAP_RM_FAILED = 4,
    REAP_RM_CANCELLED = 5,
    REAP_RM_INTERRUPTED = 6   /* stopped by reap_rm_stop; scoring the pair again resumes */
} reap_rm_state;

/* Why a job stopped early. */
enum { REAP_RM_STOP_NONE = 0, REAP_RM_STOP_CANCEL = 1, REAP_RM_STOP_SHUTDOWN = 2 };

typedef struct reap_rm_opts {
    reap_store *store;               /* required; shared with the caller */
    int max_running;                 /* worker threads (0: 1) */
    int max_queued;                  /* jobs waiting for a worker (0: 4; < 0: none) */
    int keep_finished;               /* ended jobs remembered for watchers (0: 64) */
    int checkpoint_every;            /* hidden-state checkpoint every N layers (0: none) */
    int hash_threads;                /* model hashing threads (0: all cores) */
    reap_backend_opts backend_opts;  /* template (threads, precision, memory planning) */
    const reap_roots *model_roots;   /* every file a run reads of its checkpoint and its
                                        tokenizer must lie under these once its links are
                                        resolved (fsopen.h), else the run fails with
                                        REAP_E_DENIED; NULL: unconfined. Borrowed: must
                                        outlive the manager */
    const reap_roots *calib_roots;   /* the same for calibration files; NULL: unconfined
                                        (a calibration FIFO is then allowed, and a cancel
                                        or a stop ends a run that waits on it) */
    const char *pending_dir;         /* an existing directory: each run's request is kept
                                        there from submission until its store record
                                        exists (run_request.h: pending requests), and
                                        left there when a shutdown ends it before that;
                                        NULL: not kept */
    /* Optional (tests): called by a worker before it scores each layer (after the
     * `accepted` event for the first, after the previous layer's event otherwise), with
     * no lock held; it may block, and the run waits (a cancel or a shutdown takes
     * effect after the layer that follows). NULL: no gate. */
    void (*layer_gate)(void *ud);
    void *layer_gate_ud;
} reap_rm_opts;

/* One scoring request. Strings are copied at submission. */
typedef struct reap_rm_request {
    const char *model_dir;           /* resolved checkpoint directory */
    const char *calib_path;          /* resolved calibration file */
    const char *tokenizer_path;      /* for text items; may be NULL */
    int shuffle;                     /* 1: shuffle the items with seed first */
    uint64_t seed;
    int seq_len;                     /* >= 1 */
    int pack;
    int64_t max_samples;             /* 0: all */
    int batch_rows;                  /* 0: the backend's choice */
    const reap_backend_i *backend;   /* NULL: CPU */
    int force;
    const uint8_t *run_id;           /* [16] the run id to use (a pending request submitted
                                        again after a restart); NULL: a new one */
    int resumed;                     /* 1: a run accepted before a restart, submitted
                                        again: the queue limit does not refuse it */
} reap_rm_request;

/* What is known of a job. Fixed-size except the two paths. */
typedef struct reap_rm_info {
    uint64_t job_id;                 /* manager serial, from 1 */
    int has_run_id;                  /* 1 from submission on (the id is the store's run
                                        record id once ACCEPTED; an already-scored pair's
                                        job keeps it in memory: no record is written) */
    uint8_t run_id[16];
    int queue_position;              /* while QUEUED: 1 = next to start; else 0. Computed
                                        for each event delivered and each copy made */
    int has_ids;
    reap_id model_id, calib_id;
    int state;                       /* reap_rm_state */
    int n_layers, layers_done, start_layer;
    int already_scored;
    int64_t n_samples, n_rows, seq_len, n_tokens;
    int64_t n_images, n_image_tokens; /* images in the rows and their image tokens */
    double compute_seconds;          /* sum of this job's layer times */
    double last_layer_seconds, tokens_per_s, eta_s;
    int last_layer, last_is_moe;     /* the layer of the last LAYER event (-1: none) */
    int64_t submitted_unix_ns, started_unix_ns, updated_unix_ns, finished_unix_ns;
                                     /* started_unix_ns: 0 until a worker takes the job
                                        (0 in an ended job: it ended while queued) */
    int stop;                        /* REAP_RM_STOP_* */
    int status;                      /* REAP_OK or the job's REAP_E_* */
    char error[1024];                /* the job's error message */
    char backend[16];
    char *model_path, *calib_path;   /* malloc'd in copies */
} reap_rm_info;

void reap_rm_info_free(reap_rm_info *info);

typedef enum reap_rm_event_kind {
    REAP_RM_EV_ACCEPTED = 1,
    REAP_RM_EV_TOKENIZED = 2,
    REAP_RM_EV_LAYER = 3,            /* info->last_layer and the rates describe it */
    REAP_RM_EV_FINISHED = 4,
    REAP_RM_EV_ERROR = 5,            /* info->status, stop and error describe it */
    REAP_RM_EV_QUEUED = 6            /* the first event: info->run_id, queue_position
                                        (a replay: 0 when the job has left the queue and
                                        is identifying the model and data) */
} reap_rm_event_kind;

/* kind: reap_rm_event_kind; info: the job now (valid during the call only).
 * Return non-zero when the watcher is gone. */
typedef int (*reap_rm_watch_fn)(void *wud, int kind, const reap_rm_info *info);
typedef void (*reap_rm_release_fn)(void *wud);

typedef struct reap_rm reap_rm;

/* Start the manager and its worker threads. REAP_OK, REAP_E_INVALID (no store),
 * REAP_E_NOMEM, REAP_E_IO (threads). */
int reap_rm_create(const reap_rm_opts *o, reap_rm **out);

/* Stop (as reap_rm_stop), wait for the running jobs to commit their layer and end,
 * release every watcher, free. NULL is a no-op. */
void reap_rm_free(reap_rm *m);

/* Queue a job with a new run id and attach a first watcher (fn may be NULL: no
 * watcher), which receives QUEUED before this returns (on this thread). *job_id (may
 * be NULL) receives its manager serial. Returns REAP_OK; REAP_RM_E_BUSY (queue full;
 * message gives the counts); REAP_RM_E_EXISTS (the same model directory, calibration
 * file and row options are queued or running: message names the run); REAP_RM_E_STOPPING;
 * REAP_E_NOMEM. On failure no watcher was attached and release is not called. */
int reap_rm_submit(reap_rm *m, const reap_rm_request *rq, reap_rm_watch_fn fn,
                   reap_rm_release_fn release, void *wud, uint64_t *job_id);

/* Attach a watcher to the job with this run_id (see above for the replay).
 * REAP_OK, or REAP_E_NOTFOUND when the manager does not know the run (ask the store);
 * then release is not called. */
int reap_rm_watch(reap_rm *m, const uint8_t run_id[16], reap_rm_watch_fn fn,
                  reap_rm_release_fn release, void *wud);

/* Detach the watcher whose wud this is, if any (release is called). */
void reap_rm_unwatch(reap_rm *m, void *wud);

/* Ask the run to stop at its next layer boundary, or, when it is still identifying its
 * model and calibration, before scoring begins (CANCELLED, "cancelled before scoring
 * began", nothing committed). A queued job ends at once: state CANCELLED,
 * status REAP_E_CANCELLED, stop REAP_RM_STOP_CANCEL, error "cancelled before it
 * started", its final event delivered (and its watchers released) before this returns.
 * *out (may be NULL) receives a copy of the job after the request. REAP_OK (also when
 * it has ended already: nothing to do), REAP_E_NOTFOUND (not a job of this manager),
 * REAP_E_NOMEM. */
int reap_rm_cancel(reap_rm *m, const uint8_t run_id[16], reap_rm_info *out);

/* A copy of the job with this run_id. REAP_OK, REAP_E_NOTFOUND, REAP_E_NOMEM. */
int reap_rm_get(reap_rm *m, const uint8_t run_id[16], reap_rm_info *out);

/* Copies of every job known (queued, running, recently ended), oldest first. *out is
 * malloc'd (reap_rm_info_free each, then free()); *n may be 0. REAP_OK, REAP_E_NOMEM. */
int reap_rm_list(reap_rm *m, reap_rm_info **out, int *n);

/* Running and queued jobs now. */
void reap_rm_counts(reap_rm *m, int *running, int *queued);

/* Stop accepting jobs, end the queued ones (ERROR, STOP_SHUTDOWN), ask the running ones
 * to stop after their current layer. Returns at once; non-blocking (safe on a server's
 * completion-queue thread). */
void reap_rm_stop(reap_rm *m);

#endif

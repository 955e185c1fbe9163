/* run_manager.c - scoring runs on worker threads with a bounded queue, watchers,
 * cancellation and a graceful stop (run_manager.h).
 *
 * One mutex (m->mu) guards everything: the job list (queued, running and recently
 * ended jobs, oldest first), each job's info and watchers, and the counters. Workers
 * hold it only to take a job and to publish an event; events are a handful per layer
 * and watcher callbacks do not block, so readers (get, list) never wait long. Released
 * watchers are collected under the lock and released after it is dropped.
 *
 * One file because everything in it runs under that one mutex: the queue, the workers,
 * the watchers and the stop share the job list and its locking rule, which reads best in
 * one place.
 */
#include "run_manager.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reap_err.h"
#include "run_request.h"
#include "runs.h"
#include "score_job.h"

typedef struct rm_watcher {
    reap_rm_watch_fn fn;
    reap_rm_release_fn release;
    void *wud;
    struct rm_watcher *next;
} rm_watcher;

typedef struct rm_job {
    reap_rm *m;
    reap_rm_info info;            /* info.model_path / calib_path owned here */
    char *tokenizer_path;
    char *request;                /* rq as run_request.h text, for the run record */
    reap_rm_request rq;           /* strings point into info / tokenizer_path */
    int cancel_req;
    int accepted, tokenized, ended;
    int pending;                  /* its pending-request file exists (o.pending_dir) */
    rm_watcher *watchers;
    struct rm_job *next;
} rm_job;

struct reap_rm {
    reap_rm_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rm_job *head, *tail;          /* every job known, oldest first */
    int n_queued, n_running, n_ended;
    int stopping;
    uint64_t next_id;
    pthread_t *threads;
    int n_threads;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void reap_rm_info_free(reap_rm_info *info)
{
    if (!info)
        return;
    free(info->model_path);
    free(info->calib_path);
    info->model_path = info->calib_path = NULL;
}

static int info_copy(const reap_rm_info *src, reap_rm_info *dst)
{
    *dst = *src;
    dst->model_path = src->model_path ? strdup(src->model_path) : NULL;
    dst->calib_path = src->calib_path ? strdup(src->calib_path) : NULL;
    if ((src->model_path && !dst->model_path) || (src->calib_path && !dst->calib_path)) {
        reap_rm_info_free(dst);
        return reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
    }
    return REAP_OK;
}

static void job_free(rm_job *j)
{
    if (!j)
        return;
    reap_rm_info_free(&j->info);
    free(j->tokenizer_path);
    free(j->request);
    free(j);
}

/* ---- watchers (m->mu held) ----------------------------------------------------------- */

/* j->info.queue_position now: 1 + the queued jobs ahead of it (FIFO), 0 when not queued. */
static void position_locked(rm_job *j)
{
    int pos = 0;
    if (j->info.state == REAP_RM_QUEUED)
        for (rm_job *o = j->m->head; o; o = o->next) {
            pos += o->info.state == REAP_RM_QUEUED;
            if (o == j)
                break;
        }
    j->info.queue_position = pos;
}

/* A copy of the job for the caller, with its queue position. */
static int copy_locked(rm_job *j, reap_rm_info *out)
{
    position_locked(j);
    return info_copy(&j->info, out);
}

/* Deliver one event to every watcher; the ones that went away move to *gone. */
static void deliver_locked(rm_job *j, int kind, rm_watcher **gone)
{
    rm_watcher **pp = &j->watchers;
    position_locked(j);
    while (*pp) {
        rm_watcher *w = *pp;
        if (w->fn(w->wud, kind, &j->info)) {
            *pp = w->next;
            w->next = *gone;
            *gone = w;
        } else {
            pp = &w->next;
        }
    }
}

static int final_kind(const rm_job *j)
{
    return j->info.state == REAP_RM_DONE ? REAP_RM_EV_FINISHED : REAP_RM_EV_ERROR;
}

/* The final event: delivered, then every watcher is detached. */
static void deliver_final_locked(rm_job *j, rm_watcher **gone)
{
    deliver_locked(j, final_kind(j), gone);
    while (j->watchers) {
        rm_watcher *w = j->watchers;
        j->watchers = w->next;
        w->next = *gone;
        *gone = w;
    }
}

/* Call release for each (without the lock). */
static void release_all(rm_watcher *l)
{
    while (l) {
        rm_watcher *next = l->next;
        if (l->release)
            l->release(l->wud);
        free(l);
        l = next;
    }
}

/* End a job that is still queued (it never reaches a worker): state (CANCELLED or
 * INTERRUPTED), stop (REAP_RM_STOP_*) and error as given, status REAP_E_CANCELLED, the
 * final event delivered, the counters updated. */
static void end_queued_locked(reap_rm *m, rm_job *j, int state, int stop, const char *error,
                              rm_watcher **gone)
{
    j->info.state = state;
    j->info.stop = stop;
    j->info.status = REAP_E_CANCELLED;
    j->info.finished_unix_ns = j->info.updated_unix_ns = now_ns();
    snprintf(j->info.error, sizeof j->info.error, "%s", error);
    j->ended = 1;
    if (j->pending && stop != REAP_RM_STOP_SHUTDOWN) {
        reap_run_pending_remove(m->o.pending_dir, j->info.run_id);
        j->pending = 0;
    }
    deliver_final_locked(j, gone);
    m->n_queued--;
    m->n_ended++;
}

/* Forget the oldest ended jobs beyond keep_finished (they have no watchers). */
static void trim_locked(reap_rm *m)
{
    rm_job **pp = &m->head, *prev = NULL;
    while (*pp && m->n_ended > m->o.keep_finished) {
        rm_job *j = *pp;
        if (j->ended && !j->watchers) {
            *pp = j->next;
            if (m->tail == j)
                m->tail = prev;
            m->n_ended--;
            job_free(j);
        } else {
            prev = j;
            pp = &j->next;
        }
    }
}

/* ---- the job's thread ---------------------------------------------------------------- */

static int on_score_event(void *ud, const reap_score_event *ev)
{
    rm_job *j = ud;
    reap_rm *m = j->m;
    reap_rm_info *in = &j->info;
    rm_watcher *gone = NULL;
    int stop = 0, gate = 0;
    pthread_mutex_lock(&m->mu);
    in->updated_unix_ns = now_ns();
    switch (ev->kind) {
    case REAP_SCORE_EV_WAITING:
        /* Waiting for calibration data from a FIFO: a cancel or a stop ends the wait. */
        if (j->cancel_req || m->stopping) {
            in->stop = j->cancel_req ? REAP_RM_STOP_CANCEL : REAP_RM_STOP_SHUTDOWN;
            stop = 1;
        }
        break;
    case REAP_SCORE_EV_IDS:
        in->has_ids = 1;
        in->model_id = *ev->model_id;
        in->calib_id = *ev->calib_id;
        in->n_layers = ev->n_layers;
        in->n_samples = ev->n_samples;
        in->n_rows = ev->n_rows;
        in->seq_len = ev->seq_len;
        in->n_tokens = ev->n_tokens;
        in->n_images = ev->n_images;
        in->n_image_tokens = ev->n_image_tokens;
        /* Cancelled or shut down while the model was being identified: stop before
         * scoring begins (score_job commits nothing then). */
        if (j->cancel_req || m->stopping) {
            in->stop = j->cancel_req ? REAP_RM_STOP_CANCEL : REAP_RM_STOP_SHUTDOWN;
            stop = 1;
        }
        break;
    case REAP_SCORE_EV_VISION:
    case REAP_SCORE_EV_FEATURES:
        /* The vision tower, before the run record: a cancel or a stop ends the job
         * there, committing nothing (as at EV_IDS). */
        if (j->cancel_req || m->stopping) {
            in->stop = j->cancel_req ? REAP_RM_STOP_CANCEL : REAP_RM_STOP_SHUTDOWN;
            stop = 1;
        }
        break;
    case REAP_SCORE_EV_COMPLETE:
    case REAP_SCORE_EV_START:
        if (ev->kind == REAP_SCORE_EV_COMPLETE) {
            in->already_scored = 1;
            in->layers_done = in->n_layers;
        } else {
            /* ev->run_id is in->run_id: the job passed it to the store's run record. */
            in->start_layer = ev->start_layer;
            in->layers_done = ev->start_layer;
        }
        j->accepted = j->tokenized = 1;
        if (j->pending) { /* the store's record holds the request now (gone before any
                             watcher hears of it: one unlink under the lock) */
            reap_run_pending_remove(m->o.pending_dir, in->run_id);
            j->pending = 0;
        }
        deliver_locked(j, REAP_RM_EV_ACCEPTED, &gone);
        deliver_locked(j, REAP_RM_EV_TOKENIZED, &gone);
        gate = ev->kind == REAP_SCORE_EV_START && in->layers_done < in->n_layers;
        break;
    case REAP_SCORE_EV_LAYER: {
        int computed;
        in->layers_done = ev->layer + 1;
        in->last_layer = ev->layer;
        in->last_is_moe = ev->is_moe;
        in->last_layer_seconds = ev->seconds;
        in->compute_seconds += ev->seconds;
        in->tokens_per_s = ev->seconds > 0 ? (double)in->n_tokens / ev->seconds : 0;
        computed = in->layers_done - in->start_layer;
        in->eta_s = computed > 0 ? in->compute_seconds / computed *
                                       (double)(in->n_layers - in->layers_done)
                                 : 0;
        deliver_locked(j, REAP_RM_EV_LAYER, &gone);
        if (in->layers_done < in->n_layers && (j->cancel_req || m->stopping)) {
            in->stop = j->cancel_req ? REAP_RM_STOP_CANCEL : REAP_RM_STOP_SHUTDOWN;
            stop = 1;
        }
        gate = !stop && in->layers_done < in->n_layers;
        break;
    }
    default:
        break;
    }
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
    if (gate && m->o.layer_gate)
        m->o.layer_gate(m->o.layer_gate_ud);
    return stop;
}

/* After a stop by shutdown: the store's record says "interrupted", so that readers know
 * that scoring the pair again resumes it (score_job recorded "cancelled"). */
static void mark_interrupted(reap_rm *m, rm_job *j)
{
    reap_run_info r = {0};
    char msg[256];
    if (!j->info.has_run_id || reap_store_run_get(m->o.store, NULL, j->info.run_id, &r))
        return;
    snprintf(msg, sizeof msg, "interrupted: the server shut down after layer %d (%d of %d "
             "layers committed); scoring the same model and calibration again resumes",
             j->info.layers_done - 1, j->info.layers_done, j->info.n_layers);
    r.interrupted = 1;
    if (reap_store_run_finish(m->o.store, &r, REAP_RUN_CANCELLED, msg))
        fprintf(stderr, "reap-scorer: run record: %s\n", reap_err_msg());
    reap_run_info_free(&r);
}

static void run_job(reap_rm *m, rm_job *j)
{
    reap_score_result res;
    reap_score_job_opts o = {
        .model_dir = j->rq.model_dir,
        .calib_path = j->rq.calib_path,
        .tokenizer_path = j->rq.tokenizer_path,
        .model_roots = m->o.model_roots,
        .calib_roots = m->o.calib_roots,
        .shuffle = j->rq.shuffle,
        .seed = j->rq.seed,
        .seq_len = j->rq.seq_len,
        .pack = j->rq.pack,
        .max_samples = j->rq.max_samples,
        .backend = j->rq.backend,
        .backend_opts = m->o.backend_opts,
        .store = m->o.store,
        .force = j->rq.force,
        .checkpoint_every = m->o.checkpoint_every,
        .hash_threads = m->o.hash_threads,
        .run_id = j->info.run_id,   /* set at submission, never changed: no lock needed */
        .request = j->request,
        .on_event = on_score_event,
        .ud = j,
    };
    if (j->rq.batch_rows > 0)
        o.backend_opts.batch_rows = j->rq.batch_rows;
    int rc = reap_score_job_run(&o, &res);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", rc ? reap_err_msg() : "");
    reap_score_result_free(&res);
    if (rc == REAP_E_CANCELLED && j->info.stop == REAP_RM_STOP_SHUTDOWN)
        mark_interrupted(m, j);

    rm_watcher *gone = NULL;
    pthread_mutex_lock(&m->mu);
    reap_rm_info *in = &j->info;
    in->status = rc;
    in->finished_unix_ns = in->updated_unix_ns = now_ns();
    if (rc == REAP_OK) {
        in->state = REAP_RM_DONE;
    } else if (rc == REAP_E_CANCELLED && in->stop && !j->accepted) {
        in->state = in->stop == REAP_RM_STOP_CANCEL ? REAP_RM_CANCELLED : REAP_RM_INTERRUPTED;
        snprintf(in->error, sizeof in->error, "%s before scoring began (nothing was "
                 "committed)%s", in->stop == REAP_RM_STOP_CANCEL ? "cancelled"
                                                                 : "server shutting down",
                 in->stop == REAP_RM_STOP_CANCEL ? "" : "; submit it again");
    } else if (rc == REAP_E_CANCELLED && in->stop == REAP_RM_STOP_SHUTDOWN) {
        in->state = REAP_RM_INTERRUPTED;
        snprintf(in->error, sizeof in->error, "server shutting down: run stopped after "
                 "layer %d (%d of %d layers committed); score the same model and "
                 "calibration again to resume", in->layers_done - 1, in->layers_done,
                 in->n_layers);
    } else if (rc == REAP_E_CANCELLED && in->stop == REAP_RM_STOP_CANCEL) {
        in->state = REAP_RM_CANCELLED;
        snprintf(in->error, sizeof in->error, "cancelled after layer %d (%d of %d layers "
                 "committed); score the same model and calibration again to resume",
                 in->layers_done - 1, in->layers_done, in->n_layers);
    } else {
        in->state = REAP_RM_FAILED;
        snprintf(in->error, sizeof in->error, "%s", msg);
    }
    j->ended = 1;
    /* Ended for good unless a shutdown stopped it before it had a record. */
    if (j->pending && in->stop != REAP_RM_STOP_SHUTDOWN) {
        reap_run_pending_remove(m->o.pending_dir, in->run_id);
        j->pending = 0;
    }
    deliver_final_locked(j, &gone);
    m->n_running--;
    m->n_ended++;
    trim_locked(m);
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
}

static void *worker(void *arg)
{
    reap_rm *m = arg;
    for (;;) {
        rm_job *j = NULL;
        pthread_mutex_lock(&m->mu);
        while (!m->stopping && m->n_queued == 0)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->stopping) {
            pthread_mutex_unlock(&m->mu);
            return NULL;
        }
        for (j = m->head; j && j->info.state != REAP_RM_QUEUED; j = j->next)
            ;
        if (j) {
            j->info.state = REAP_RM_RUNNING;
            j->info.started_unix_ns = j->info.updated_unix_ns = now_ns();
            m->n_queued--;
            m->n_running++;
        }
        pthread_mutex_unlock(&m->mu);
        if (j)
            run_job(m, j);
    }
}

/* ---- public -------------------------------------------------------------------------- */

int reap_rm_create(const reap_rm_opts *o, reap_rm **out)
{
    reap_rm *m;
    *out = NULL;
    if (!o || !o->store)
        return reap_err_set(REAP_E_INVALID, "run manager: no store");
    if (!(m = calloc(1, sizeof *m)))
        return reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
    m->o = *o;
    if (m->o.max_running <= 0)
        m->o.max_running = 1;
    if (m->o.max_queued == 0)
        m->o.max_queued = 4;
    else if (m->o.max_queued < 0)
        m->o.max_queued = 0;
    if (m->o.keep_finished <= 0)
        m->o.keep_finished = 64;
    m->next_id = 1;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (!(m->threads = calloc((size_t)m->o.max_running, sizeof *m->threads))) {
        reap_rm_free(m);
        return reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
    }
    for (int i = 0; i < m->o.max_running; i++) {
        if (pthread_create(&m->threads[i], NULL, worker, m)) {
            reap_rm_free(m);
            return reap_err_set(REAP_E_IO, "run manager: cannot start worker threads");
        }
        m->n_threads++;
    }
    *out = m;
    return REAP_OK;
}

void reap_rm_stop(reap_rm *m)
{
    rm_watcher *gone = NULL;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    for (rm_job *j = m->head; j; j = j->next)
        if (j->info.state == REAP_RM_QUEUED)
            end_queued_locked(m, j, REAP_RM_INTERRUPTED, REAP_RM_STOP_SHUTDOWN,
                              "server shutting down before the run started; submit it "
                              "again", &gone);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
}

void reap_rm_free(reap_rm *m)
{
    if (!m)
        return;
    reap_rm_stop(m);
    for (int i = 0; i < m->n_threads; i++)
        pthread_join(m->threads[i], NULL);
    free(m->threads);
    rm_watcher *gone = NULL;
    for (rm_job *j = m->head, *next; j; j = next) {
        next = j->next;
        while (j->watchers) {
            rm_watcher *w = j->watchers;
            j->watchers = w->next;
            w->next = gone;
            gone = w;
        }
        job_free(j);
    }
    release_all(gone);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int same_request(const rm_job *j, const reap_rm_request *rq)
{
    const char *ta = j->rq.tokenizer_path ? j->rq.tokenizer_path : "",
               *tb = rq->tokenizer_path ? rq->tokenizer_path : "";
    return !strcmp(j->rq.model_dir, rq->model_dir) && !strcmp(j->rq.calib_path, rq->calib_path) &&
           j->rq.seq_len == rq->seq_len && j->rq.pack == rq->pack &&
           j->rq.max_samples == rq->max_samples && !strcmp(ta, tb) &&
           j->rq.shuffle == rq->shuffle && (!rq->shuffle || j->rq.seed == rq->seed);
}

int reap_rm_submit(reap_rm *m, const reap_rm_request *rq, reap_rm_watch_fn fn,
                   reap_rm_release_fn release, void *wud, uint64_t *job_id)
{
    rm_job *j = calloc(1, sizeof *j);
    rm_watcher *w = fn ? calloc(1, sizeof *w) : NULL;
    int rc = REAP_OK;
    if (!j || (fn && !w) || !(j->info.model_path = strdup(rq->model_dir)) ||
        !(j->info.calib_path = strdup(rq->calib_path)) ||
        (rq->tokenizer_path && !(j->tokenizer_path = strdup(rq->tokenizer_path)))) {
        rc = reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
        goto fail;
    }
    j->m = m;
    j->rq = *rq;
    j->rq.model_dir = j->info.model_path;
    j->rq.calib_path = j->info.calib_path;
    j->rq.tokenizer_path = j->tokenizer_path;
    if ((rc = reap_run_request_encode(&j->rq, &j->request)))
        goto fail;
    j->info.state = REAP_RM_QUEUED;
    j->info.has_run_id = 1;
    if (rq->run_id)
        memcpy(j->info.run_id, rq->run_id, 16);
    else
        reap_run_id_new(j->info.run_id);
    j->rq.run_id = NULL;
    if (m->o.pending_dir) {
        if (reap_run_pending_write(m->o.pending_dir, j->info.run_id, j->request))
            fprintf(stderr, "reap-scorer: %s (this run is not kept across a restart before "
                    "it starts)\n", reap_err_msg());
        else
            j->pending = 1;
    }
    j->info.last_layer = -1;
    j->info.seq_len = rq->seq_len;
    j->info.submitted_unix_ns = j->info.updated_unix_ns = now_ns();
    snprintf(j->info.backend, sizeof j->info.backend, "%s",
             rq->backend ? rq->backend->name : "cpu");
    if (w) {
        w->fn = fn;
        w->release = release;
        w->wud = wud;
    }
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        rc = reap_err_set(REAP_RM_E_STOPPING, "the server is shutting down");
    } else {
        for (rm_job *o = m->head; o && !rc; o = o->next) {
            if ((o->info.state == REAP_RM_QUEUED || o->info.state == REAP_RM_RUNNING) &&
                same_request(o, rq)) {
                char rh[33];
                reap_run_id_hex(o->info.run_id, rh);
                position_locked(o);
                rc = reap_err_set(REAP_RM_E_EXISTS, "%s with %s is already %s (run %s): "
                                  "watch it with WatchRun or wait", rq->model_dir,
                                  rq->calib_path, o->info.queue_position ? "queued"
                                                                          : "being scored",
                                  rh);
            }
        }
        if (!rc && !rq->resumed && m->n_queued >= m->o.max_queued &&
            m->n_running >= m->o.max_running)
            rc = reap_err_set(REAP_RM_E_BUSY, "scoring queue full: %d running, %d queued "
                              "(limit %d); try again later", m->n_running, m->n_queued,
                              m->o.max_queued);
    }
    if (!rc) {
        j->info.job_id = m->next_id++;
        j->watchers = w;
        w = NULL;
        if (m->tail)
            m->tail->next = j;
        else
            m->head = j;
        m->tail = j;
        m->n_queued++;
        if (job_id)
            *job_id = j->info.job_id;
        /* Before a worker can take it (we hold the lock): QUEUED is the first event. */
        rm_watcher *gone = NULL;
        deliver_locked(j, REAP_RM_EV_QUEUED, &gone);
        j = NULL;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        release_all(gone);
        return REAP_OK;
    }
    pthread_mutex_unlock(&m->mu);
fail:
    /* Refused: a new request's file goes; a resubmitted one's is the caller's to keep. */
    if (j && j->pending && !rq->run_id)
        reap_run_pending_remove(m->o.pending_dir, j->info.run_id);
    free(w);
    job_free(j);
    return rc;
}

/* m->mu held. */
static rm_job *find_locked(reap_rm *m, const uint8_t run_id[16])
{
    for (rm_job *j = m->head; j; j = j->next)
        if (j->info.has_run_id && !memcmp(j->info.run_id, run_id, 16))
            return j;
    return NULL;
}

int reap_rm_watch(reap_rm *m, const uint8_t run_id[16], reap_rm_watch_fn fn,
                  reap_rm_release_fn release, void *wud)
{
    rm_watcher *w = calloc(1, sizeof *w), *gone = NULL;
    if (!w)
        return reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
    w->fn = fn;
    w->release = release;
    w->wud = wud;
    pthread_mutex_lock(&m->mu);
    rm_job *j = find_locked(m, run_id);
    if (!j) {
        pthread_mutex_unlock(&m->mu);
        free(w);
        return REAP_E_NOTFOUND;
    }
    int goneaway = 0;
    position_locked(j);
    if (!j->accepted && !j->ended)
        goneaway = fn(wud, REAP_RM_EV_QUEUED, &j->info);
    if (!goneaway && j->accepted)
        goneaway = fn(wud, REAP_RM_EV_ACCEPTED, &j->info);
    if (!goneaway && j->tokenized)
        goneaway = fn(wud, REAP_RM_EV_TOKENIZED, &j->info);
    if (!goneaway && j->ended)
        fn(wud, final_kind(j), &j->info);
    if (goneaway || j->ended) {
        gone = w;
    } else {
        w->next = j->watchers;
        j->watchers = w;
    }
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
    return REAP_OK;
}

void reap_rm_unwatch(reap_rm *m, void *wud)
{
    rm_watcher *gone = NULL;
    pthread_mutex_lock(&m->mu);
    for (rm_job *j = m->head; j && !gone; j = j->next) {
        for (rm_watcher **pp = &j->watchers; *pp; pp = &(*pp)->next) {
            if ((*pp)->wud == wud) {
                gone = *pp;
                *pp = gone->next;
                gone->next = NULL;
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
}

int reap_rm_cancel(reap_rm *m, const uint8_t run_id[16], reap_rm_info *out)
{
    int rc = REAP_OK;
    rm_watcher *gone = NULL;
    pthread_mutex_lock(&m->mu);
    rm_job *j = find_locked(m, run_id);
    if (!j) {
        rc = REAP_E_NOTFOUND;
    } else {
        if (j->info.state == REAP_RM_QUEUED) {
            /* No worker has it: end it now, nothing was hashed, read or written. */
            end_queued_locked(m, j, REAP_RM_CANCELLED, REAP_RM_STOP_CANCEL,
                              "cancelled before it started", &gone);
        } else if (!j->ended) {
            j->cancel_req = 1;
        }
        if (out)
            rc = copy_locked(j, out);
        trim_locked(m);   /* after the copy: the job may be the one forgotten */
    }
    pthread_mutex_unlock(&m->mu);
    release_all(gone);
    return rc;
}

int reap_rm_get(reap_rm *m, const uint8_t run_id[16], reap_rm_info *out)
{
    int rc;
    pthread_mutex_lock(&m->mu);
    rm_job *j = find_locked(m, run_id);
    rc = j ? copy_locked(j, out) : REAP_E_NOTFOUND;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int reap_rm_list(reap_rm *m, reap_rm_info **out, int *n)
{
    int k = 0, cap = 0, rc = REAP_OK;
    reap_rm_info *v = NULL;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&m->mu);
    for (rm_job *j = m->head; j; j = j->next)
        cap++;
    if (cap && !(v = calloc((size_t)cap, sizeof *v)))
        rc = reap_err_set(REAP_E_NOMEM, "run manager: out of memory");
    for (rm_job *j = m->head; j && !rc; j = j->next)
        if (!(rc = copy_locked(j, &v[k])))
            k++;
    pthread_mutex_unlock(&m->mu);
    if (rc) {
        for (int i = 0; i < k; i++)
            reap_rm_info_free(&v[i]);
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return REAP_OK;
}

void reap_rm_counts(reap_rm *m, int *running, int *queued)
{
    pthread_mutex_lock(&m->mu);
    if (running)
        *running = m->n_running;
    if (queued)
        *queued = m->n_queued;
    pthread_mutex_unlock(&m->mu);
}

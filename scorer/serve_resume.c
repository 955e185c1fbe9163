/* serve_resume.c - resuming interrupted runs when the scorer service starts
 * (serve_resume.h). */
#include "serve_resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hidden_ckpt.h"
#include "reap_err.h"
#include "run_request.h"
#include "runs.h"
#include "scorer_cmds.h"
#include "svc.h"

static int same_pair(const reap_run_info *a, const reap_run_info *b)
{
    return !memcmp(a->model.b, b->model.b, 32) && !memcmp(a->calib.b, b->calib.b, 32);
}

/* Submit a request (text) again: under run id `keep_id` when not NULL, else a new one;
 * REAP_OK and the run id in new_id, or an error and why (logged by the caller). */
static int resubmit(reap_rm *rm, const char *text, const uint8_t *keep_id,
                    const rpc_roots *model_roots, const rpc_roots *calib_roots,
                    const reap_backend_i *fallback, uint8_t new_id[16], char *why,
                    size_t whylen)
{
    reap_run_request_buf b;
    char *model = NULL, *calib = NULL, *tok = NULL;
    reap_rm_info *jobs = NULL;
    uint64_t job_id = 0;
    int n = 0, rc;
    if ((rc = reap_run_request_decode(text, &b))) {
        snprintf(why, whylen, "%s", reap_err_msg());
        return rc;
    }
    if (rpc_path_confine(model_roots, "model_path", b.model_dir, RPC_PATH_EXISTING |
                         RPC_PATH_DIR, &model, why, whylen) ||
        rpc_path_confine(calib_roots, "calib_path", b.calib_path, RPC_PATH_EXISTING |
                         RPC_PATH_FILE, &calib, why, whylen) ||
        (b.tokenizer_path && rpc_path_confine(model_roots, "tokenizer_path",
                                              b.tokenizer_path, RPC_PATH_EXISTING, &tok, why,
                                              whylen))) {
        rc = REAP_E_PRECONDITION;
        goto done;
    }
    reap_rm_request rq = b.rq;
    rq.model_dir = model;
    rq.calib_path = calib;
    rq.tokenizer_path = tok;
    rq.backend = scorer_pick_backend(b.backend);
    if (!rq.backend || (!strcmp(b.backend, "cuda") && reap_cuda_available() <= 0))
        rq.backend = fallback;
    rq.run_id = keep_id;
    rq.resumed = 1;
    if ((rc = reap_rm_submit(rm, &rq, NULL, NULL, NULL, &job_id))) {
        snprintf(why, whylen, "%s", reap_err_msg());
        goto done;
    }
    rc = REAP_E_INTERNAL;
    snprintf(why, whylen, "submitted, but the job is not listed");
    if (!reap_rm_list(rm, &jobs, &n))
        for (int i = 0; i < n; i++) {
            if (jobs[i].job_id == job_id && jobs[i].has_run_id) {
                memcpy(new_id, jobs[i].run_id, 16);
                rc = REAP_OK;
            }
            reap_rm_info_free(&jobs[i]);
        }
    free(jobs);
done:
    free(model);
    free(calib);
    free(tok);
    reap_run_request_buf_free(&b);
    return rc;
}

/* The pending requests p[n] (listed before anything was submitted: the submissions here
 * write pending files of their own) of runs that had not started. */
static int resume_pending(reap_store *s, reap_rm *rm, const char *dir,
                          const reap_run_pending *p, int n, const rpc_roots *model_roots,
                          const rpc_roots *calib_roots, const reap_backend_i *fallback,
                          const char *prog)
{
    int resumed = 0;
    for (int i = 0; i < n; i++) {
        char hex[33], why[1024];
        uint8_t id[16];
        reap_run_info r;
        reap_run_id_hex(p[i].run_id, hex);
        if (reap_store_run_get(s, NULL, p[i].run_id, &r) == REAP_OK) {
            reap_run_info_free(&r);
            reap_run_pending_remove(dir, p[i].run_id);
            continue; /* it started: its record says what became of it */
        }
        int rc = resubmit(rm, p[i].text, p[i].run_id, model_roots, calib_roots, fallback, id,
                          why, sizeof why);
        if (!rc) {
            svc_log(prog, "resume: run %s (not started before the restart) is queued again",
                    hex);
            resumed++;
        } else if (rc == REAP_RM_E_STOPPING || rc == REAP_E_NOMEM) {
            svc_log(prog, "resume: run %s stays pending for the next start: %s", hex, why);
        } else {
            svc_log(prog, "resume: run %s (not started) dropped: %s", hex, why);
            reap_run_pending_remove(dir, p[i].run_id);
        }
    }
    return resumed;
}

int scorer_resume_interrupted(reap_store *s, reap_rm *rm, const char *pending_dir,
                              const rpc_roots *model_roots, const rpc_roots *calib_roots,
                              const reap_backend_i *fallback, const char *prog)
{
    reap_run_info *runs = NULL;
    reap_run_pending *pend = NULL;
    int n = 0, n_pend = 0, resumed = 0;
    if (pending_dir && reap_run_pending_list(pending_dir, &pend, &n_pend)) {
        svc_log(prog, "resume: pending runs: %s", reap_err_msg());
        pend = NULL;
        n_pend = 0;
    }
    /* Runs left "running" by a process that is gone: interrupted. The pair's scoring lock
     * tells: whoever holds it is alive (another process scoring the pair now). */
    if (reap_store_run_list(s, NULL, &runs, &n)) {
        svc_log(prog, "resume: listing runs: %s", reap_err_msg());
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        int lock = -1;
        if (runs[i].state != REAP_RUN_RUNNING)
            continue;
        if (reap_store_pair_lock(s, &runs[i].model, &runs[i].calib, &lock) ||
            reap_store_run_mark_interrupted(s, &runs[i].model, &runs[i].calib, NULL))
            svc_log(prog, "resume: %s", reap_err_msg());
        reap_store_pair_unlock(lock);
    }
    for (int i = 0; i < n; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    runs = NULL;
    if (reap_store_run_list(s, NULL, &runs, &n)) {
        svc_log(prog, "resume: listing runs: %s", reap_err_msg());
        runs = NULL;
        n = 0;
    }
    /* Newest first: the first run seen of each pair is its newest. */
    for (int i = n - 1; i >= 0; i--) {
        reap_run_info *r = &runs[i];
        int newer = 0;
        for (int k = i + 1; k < n && !newer; k++)
            newer = same_pair(&runs[k], r);
        if (newer || !r->interrupted)
            continue;
        char old_hex[33], new_hex[33], why[1024], *note = NULL;
        uint8_t new_id[16];
        reap_run_id_hex(r->run_id, old_hex);
        if (!r->request) {
            svc_log(prog, "resume: run %s was interrupted but records no request (an older "
                    "record): score the pair again to resume it", old_hex);
            continue;
        }
        if (resubmit(rm, r->request, NULL, model_roots, calib_roots, fallback, new_id, why,
                     sizeof why)) {
            svc_log(prog, "resume: run %s not resumed: %s", old_hex, why);
            continue;
        }
        reap_run_id_hex(new_id, new_hex);
        svc_log(prog, "resume: run %s (%d of %d layers committed) resumes as run %s",
                old_hex, r->layers_done, r->n_layers, new_hex);
        resumed++;
        size_t len = (r->error ? strlen(r->error) : 0) + 64;
        if ((note = malloc(len))) {
            snprintf(note, len, "%s; resumed as run %s", r->error ? r->error : "interrupted",
                     new_hex);
            if (reap_store_run_finish(s, r, r->state, note))
                svc_log(prog, "resume: run %s: %s", old_hex, reap_err_msg());
            free(note);
        }
    }
    for (int i = 0; i < n; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    resumed += resume_pending(s, rm, pending_dir, pend, n_pend, model_roots, calib_roots,
                              fallback, prog);
    reap_run_pending_free(pend, n_pend);
    return resumed;
}

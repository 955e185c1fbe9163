/* serve_resume.h - on start, `reap-scorer serve` submits again the runs that a shutdown
 * (SIGTERM) or a crash of this host's scorer interrupted, and the runs that were still
 * waiting to start, so that a restarted pod goes on scoring without a client sending the
 * Score again.
 *
 * A run is resumed when it is the newest run of its (model, calibration) pair, its record
 * says "interrupted" (stopped by a shutdown, or left running by a process that is gone:
 * such records are marked first, when the pair's scoring lock is free, store/runs.h; so
 * a pod that comes back under another host name or PID namespace takes them over too),
 * and it carries its request
 * (run_request.h; records written before requests were recorded have none). Its paths are
 * confined to the roots again; a backend this server lacks becomes the default backend.
 * The new run (a new run id) starts from the newest hidden-state checkpoint as any rerun
 * does; the old record's error gains "; resumed as run <id>".
 *
 * Runs that had not started (queued, or still identifying their model) have no record;
 * their requests wait in the pending directory (run_request.h) and are submitted again,
 * oldest first, under their own run ids, so a client's WatchRun of that id still
 * works. A pending request whose run id has a record by now is dropped (the record
 * covers it), and so is one that is refused for good (paths outside the roots, damaged
 * text, the same pair already being scored); one that meets a server already shutting
 * down stays for the next start. Runs submitted again are not refused for a full queue
 * (they were accepted before the restart). Each decision is logged.
 *
 * Thread rules: call once, before or while serving; uses the store and the run manager
 * as any handler does.
 */
#ifndef REAP_SERVE_RESUME_H
#define REAP_SERVE_RESUME_H

#include "backend.h"
#include "rpc_path.h"
#include "run_manager.h"
#include "store.h"

/* Returns the number of runs submitted again (errors are logged, never fatal).
 * pending_dir: the run manager's (reap_rm_opts), or NULL. */
int scorer_resume_interrupted(reap_store *s, reap_rm *rm, const char *pending_dir,
                              const rpc_roots *model_roots, const rpc_roots *calib_roots,
                              const reap_backend_i *fallback, const char *prog);

#endif

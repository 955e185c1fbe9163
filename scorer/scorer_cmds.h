/* scorer_cmds.h - the subcommands of the reap-scorer executable. Each takes the whole
 * argv (argv[1] is the subcommand name) and returns the process exit status. */
#ifndef REAP_SCORER_CMDS_H
#define REAP_SCORER_CMDS_H

#include "backend.h"
#include "stats.h"
#include "store.h"

int scorer_cmd_run(int argc, char **argv);
int scorer_cmd_plan(int argc, char **argv);

/* Score-store commands (store_cmds.c). */
int scorer_cmd_stats(int argc, char **argv);
int scorer_cmd_list(int argc, char **argv);
int scorer_cmd_export(int argc, char **argv);
int scorer_cmd_import(int argc, char **argv);
int scorer_cmd_check(int argc, char **argv);

/* Shared helpers (run_cmd.c). */
/* Per-layer summary: routed experts, REAP min / median / max, drops at a 40% ratio. */
/* "cpu", "cuda", "auto" -> backend, or NULL (unknown / not built). */
const reap_backend_i *scorer_pick_backend(const char *name);

/* Shared helpers (store_cmds.c). */
/* Comma-separated hex of ids[0..n) in a malloc'd string (*out; free()). REAP_OK or
 * REAP_E_NOMEM. */
int scorer_calib_ids_text(const reap_id *ids, int n, char **out);

#endif

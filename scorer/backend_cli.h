/* backend_cli.h - the command-line options of the compute backend's choices (CUDA memory
 * plan, prefetch depth, attention kernel, expert GEMMs, profiling), one table shared by
 * the commands that build a reap_backend_opts: reap-scorer run, serve and plan, and the
 * GPU benchmark. Backends read no environment (backend.h); these options are where the
 * environment variables enter (flag > environment > .env file > default, cli.h).
 *
 * It lives beside the scorer's commands rather than in model/ so that the model library
 * does not depend on option parsing; the pruner needs none of it (its verification runs
 * on the CPU backend, which takes only a thread count).
 *
 * Options (flag, environment variable, default):
 *   --parallel-layers N  REAP_PARALLEL_LAYERS  1      layers uploaded ahead, 0..8 (0: none)
 *   --vram-gb G          REAP_VRAM_GB          0      device memory to plan for (0: free)
 *   --vram-buffer F      REAP_VRAM_BUFFER      0.10   fraction of it left unused, 0..0.9
 *   --cuda-attn K        REAP_CUDA_ATTN        auto   auto or gemm (score matrices)
 *   --cuda-experts K     REAP_CUDA_EXPERTS     loop   loop or grouped (one grouped GEMM)
 *   --cuda-profile       REAP_CUDA_PROFILE     false  plan and per-phase GPU times
 *
 * Thread rules: as cli.h (parse in main before other threads start).
 */
#ifndef REAP_SCORER_BACKEND_CLI_H
#define REAP_SCORER_BACKEND_CLI_H

#include <stddef.h>

#include "backend.h"
#include "cli.h"

/* The parsed values (destinations of the table's entries). */
typedef struct scorer_backend_cli {
    long parallel_layers;
    double vram_gb, vram_buffer;
    const char *attn, *experts;
    int profile;
} scorer_backend_cli;

#define SCORER_BACKEND_CLI_N 6 /* entries scorer_backend_cli_options writes */

/* Write the SCORER_BACKEND_CLI_N option entries, whose destinations are in *c, to
 * opts[0..cap). Returns the number written, or 0 when cap is too small. */
int scorer_backend_cli_options(scorer_backend_cli *c, cli_opt *opts, int cap);

/* After cli_parse: check the values and set the matching fields of *o (vram_gb,
 * vram_buffer, prefetch_layers, attn, experts, profile; the others are left as they
 * are). Returns 0, or -1 with the problem, naming the flag and its variable, in err. */
int scorer_backend_cli_apply(const scorer_backend_cli *c, reap_backend_opts *o, char *err,
                             size_t errlen);

#endif

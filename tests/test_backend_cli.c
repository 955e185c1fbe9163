/* test_backend_cli.c - the backend's command-line options (scorer/backend_cli.h): where the
 * environment variables that choose the backend's paths enter, now that the backend reads
 * none. Defaults; every variable read through the table and translated into
 * reap_backend_opts; a flag beats its variable; bad values refused naming the flag and the
 * variable; the translated options give the CUDA planner the settings asked for (CUDA
 * builds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cli.h"
#include "cli.h"
#include "cuda/cuda_plan.h"
#include "reap_err.h"
#include "test_util.h"

static const char *const VARS[] = {"REAP_PARALLEL_LAYERS", "REAP_VRAM_GB", "REAP_VRAM_BUFFER",
                                   "REAP_CUDA_ATTN", "REAP_CUDA_EXPERTS", "REAP_CUDA_PROFILE"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++)
        unsetenv(VARS[i]);
}

/* Parse argv (NULL-terminated, after a program name) and apply. Returns 0 or -1 (err). */
static int parse(const char *const *args, reap_backend_opts *o, char *err, size_t errlen)
{
    char *argv[16] = {"prog"};
    int argc = 1, help = 0;
    for (; args && args[argc - 1] && argc < 16; argc++)
        argv[argc] = (char *)args[argc - 1];
    scorer_backend_cli c;
    cli_opt opts[SCORER_BACKEND_CLI_N];
    int n = scorer_backend_cli_options(&c, opts, SCORER_BACKEND_CLI_N);
    CHECK(n == SCORER_BACKEND_CLI_N);
    memset(o, 0, sizeof *o);
    if (cli_parse(opts, n, argc, argv, 1, &help, err, errlen))
        return -1;
    return scorer_backend_cli_apply(&c, o, err, errlen);
}

int main(void)
{
    char err[512];
    reap_backend_opts o;
    cli_opt small[2];
    scorer_backend_cli c;
    CHECK(scorer_backend_cli_options(&c, small, 2) == 0); /* no room: nothing written */

    clear_env();
    CHECK(parse(NULL, &o, err, sizeof err) == 0);
    CHECK(o.prefetch_layers == 1 && o.vram_gb == 0 && o.vram_buffer == 0.10 &&
          o.attn == REAP_CUDA_ATTN_AUTO && o.experts == REAP_CUDA_EXPERTS_LOOP && !o.profile);

    setenv("REAP_PARALLEL_LAYERS", "0", 1);
    setenv("REAP_VRAM_GB", "80", 1);
    setenv("REAP_VRAM_BUFFER", "0", 1);
    setenv("REAP_CUDA_ATTN", "gemm", 1);
    setenv("REAP_CUDA_EXPERTS", "grouped", 1);
    setenv("REAP_CUDA_PROFILE", "1", 1);
    CHECK(parse(NULL, &o, err, sizeof err) == 0);
    CHECK(o.prefetch_layers < 0 && o.vram_gb == 80 && o.vram_buffer < 0 &&
          o.attn == REAP_CUDA_ATTN_GEMM && o.experts == REAP_CUDA_EXPERTS_GROUPED && o.profile);
#ifdef REAP_HAVE_CUDA
    reap_cuda_settings st;
    CHECK_RC(reap_cuda_settings_resolve(&o, &st), REAP_OK);
    CHECK(st.prefetch_layers == 0 && st.vram_gb == 80 && st.vram_buffer == 0.0 &&
          st.attn_gemm == 1);
#endif

    /* a flag beats its variable */
    const char *flags[] = {"--cuda-attn", "auto", "--parallel-layers=3", "--vram-buffer",
                           "0.2", "--cuda-experts", "loop", NULL};
    CHECK(parse(flags, &o, err, sizeof err) == 0);
    CHECK(o.attn == REAP_CUDA_ATTN_AUTO && o.prefetch_layers == 3 && o.vram_buffer == 0.2 &&
          o.experts == REAP_CUDA_EXPERTS_LOOP && o.vram_gb == 80);
    clear_env();

    /* refusals name the flag and the variable */
    setenv("REAP_CUDA_ATTN", "bogus", 1);
    CHECK(parse(NULL, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "--cuda-attn / REAP_CUDA_ATTN 'bogus'"), "got: %s", err);
    clear_env();
    setenv("REAP_CUDA_EXPERTS", "fused", 1);
    CHECK(parse(NULL, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "REAP_CUDA_EXPERTS 'fused'"), "got: %s", err);
    clear_env();
    const char *p9[] = {"--parallel-layers", "9", NULL};
    CHECK(parse(p9, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "--parallel-layers / REAP_PARALLEL_LAYERS 9"), "got: %s", err);
    const char *vb[] = {"--vram-buffer", "0.95", NULL};
    CHECK(parse(vb, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "REAP_VRAM_BUFFER 0.95"), "got: %s", err);
    const char *vg[] = {"--vram-gb", "-2", NULL};
    CHECK(parse(vg, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "REAP_VRAM_GB -2"), "got: %s", err);
    setenv("REAP_VRAM_GB", "lots", 1);
    CHECK(parse(NULL, &o, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "'lots'"), "got: %s", err);
    clear_env();
    TEST_MAIN_END();
}

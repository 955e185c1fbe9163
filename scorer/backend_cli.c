/* backend_cli.c - the backend's option table and its translation into reap_backend_opts
 * (see backend_cli.h). */
#include "backend_cli.h"

#include <stdio.h>
#include <string.h>

int scorer_backend_cli_options(scorer_backend_cli *c, cli_opt *opts, int cap)
{
    const cli_opt mine[SCORER_BACKEND_CLI_N] = {
        {"parallel-layers", "REAP_PARALLEL_LAYERS", CLI_INT, "1", "CUDA: layers whose "
         "weights are uploaded ahead while one computes, 0..8 (0: none)", &c->parallel_layers,
         0},
        {"vram-gb", "REAP_VRAM_GB", CLI_DOUBLE, "0", "CUDA: device memory to plan for, GB "
         "(0: the device's free memory)", &c->vram_gb, 0},
        {"vram-buffer", "REAP_VRAM_BUFFER", CLI_DOUBLE, "0.10", "CUDA: fraction of it left "
         "unused, 0..0.9", &c->vram_buffer, 0},
        {"cuda-attn", "REAP_CUDA_ATTN", CLI_STR, "auto", "CUDA attention: auto (the tiled "
         "kernel where supported) or gemm (score matrices, the reference)", &c->attn, 0},
        {"cuda-experts", "REAP_CUDA_EXPERTS", CLI_STR, "loop", "CUDA expert GEMMs: loop "
         "(one cuBLAS call per expert) or grouped (cublasGemmGroupedBatchedEx)", &c->experts,
         0},
        {"cuda-profile", "REAP_CUDA_PROFILE", CLI_FLAG, NULL, "CUDA: print the memory plan "
         "and per-phase GPU times of every layer on stderr", &c->profile, 0},
    };
    if (cap < SCORER_BACKEND_CLI_N)
        return 0;
    memset(c, 0, sizeof *c);
    memcpy(opts, mine, sizeof mine);
    return SCORER_BACKEND_CLI_N;
}

int scorer_backend_cli_apply(const scorer_backend_cli *c, reap_backend_opts *o, char *err,
                             size_t errlen)
{
    if (c->parallel_layers < 0 || c->parallel_layers > 8) {
        snprintf(err, errlen, "--parallel-layers / REAP_PARALLEL_LAYERS %ld: expected 0..8",
                 c->parallel_layers);
        return -1;
    }
    if (!(c->vram_gb >= 0 && c->vram_gb <= 1e6)) {
        snprintf(err, errlen, "--vram-gb / REAP_VRAM_GB %g: expected 0 (the free memory) to "
                 "1e6", c->vram_gb);
        return -1;
    }
    if (!(c->vram_buffer >= 0 && c->vram_buffer <= 0.9)) {
        snprintf(err, errlen, "--vram-buffer / REAP_VRAM_BUFFER %g: expected 0..0.9",
                 c->vram_buffer);
        return -1;
    }
    const char *attn = c->attn ? c->attn : "auto", *experts = c->experts ? c->experts : "loop";
    if (strcmp(attn, "auto") && strcmp(attn, "gemm")) {
        snprintf(err, errlen, "--cuda-attn / REAP_CUDA_ATTN '%s': expected auto or gemm", attn);
        return -1;
    }
    if (strcmp(experts, "loop") && strcmp(experts, "grouped")) {
        snprintf(err, errlen, "--cuda-experts / REAP_CUDA_EXPERTS '%s': expected loop or "
                 "grouped", experts);
        return -1;
    }
    /* reap_backend_opts: 0 means the default, negative none */
    o->prefetch_layers = c->parallel_layers > 0 ? (int)c->parallel_layers : -1;
    o->vram_gb = c->vram_gb;
    o->vram_buffer = c->vram_buffer > 0 ? c->vram_buffer : -1;
    o->attn = strcmp(attn, "gemm") ? REAP_CUDA_ATTN_AUTO : REAP_CUDA_ATTN_GEMM;
    o->experts = strcmp(experts, "grouped") ? REAP_CUDA_EXPERTS_LOOP : REAP_CUDA_EXPERTS_GROUPED;
    o->profile = c->profile;
    return 0;
}

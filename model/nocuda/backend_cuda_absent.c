/* backend_cuda_absent.c - the CUDA entry points for builds without the CUDA toolkit: no
 * backend, no device, and a memory planner that says so (see model/cuda/cuda_plan.h). */
#include <stddef.h>
#include <string.h>

#include "backend.h"
#include "cuda/cuda_plan.h"
#include "reap_err.h"

const reap_backend_i *reap_backend_cuda(void) { return NULL; }

int reap_cuda_available(void) { return 0; }

int reap_cuda_settings_resolve(const reap_backend_opts *opts, reap_cuda_settings *out)
{
    (void)opts;
    memset(out, 0, sizeof *out);
    return reap_err_set(REAP_E_UNSUPPORTED, "this build has no CUDA backend");
}

int64_t reap_cuda_plan_budget(const reap_cuda_settings *s, int64_t free_bytes)
{
    (void)s;
    (void)free_bytes;
    return 0;
}

int reap_cuda_plan_make(const reap_config *cfg, const reap_cuda_plan_req *req,
                        reap_cuda_plan *out)
{
    (void)cfg;
    (void)req;
    memset(out, 0, sizeof *out);
    return reap_err_set(REAP_E_UNSUPPORTED, "this build has no CUDA backend (built without "
                        "the CUDA toolkit): no device memory plan");
}

int reap_cuda_mem_info(int device, int64_t *free_bytes, int64_t *total_bytes)
{
    (void)device;
    *free_bytes = *total_bytes = 0;
    return reap_err_set(REAP_E_UNSUPPORTED, "this build has no CUDA backend");
}

int reap_cuda_flash_supported(int hd)
{
    (void)hd;
    return 0;
}

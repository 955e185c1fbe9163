/* cuda_util.cu - the error and allocation helpers of the CUDA backend (cuda_impl.h):
 * CUDA / cuBLAS status to a reap error naming the device and the call, cudaMalloc with
 * an out-of-memory message that gives the sizes, and the NaN/Inf flag word. Used by
 * backend_cuda.cu (the layer math) and upload.cu (weight upload); uses neither, so the
 * backend's files do not depend on each other in a cycle.
 */
#include <stddef.h>

#include "cuda_impl.h"
#include "kernels.cuh" /* RF_* flag bits */

int cu_fail_at(const char *where, cudaError_t e, const char *what)
{
    if (e == cudaErrorMemoryAllocation)
        return reap_err_set(REAP_E_NOMEM, "%s: %s: %s", where, what, cudaGetErrorString(e));
    return reap_err_set(REAP_E_DEVICE, "%s: %s: %s (%s)", where, what, cudaGetErrorName(e),
                        cudaGetErrorString(e));
}

int cu_fail(cuda_ctx *c, cudaError_t e, const char *what) { return cu_fail_at(c->where, e, what); }

int blas_fail(cuda_ctx *c, cublasStatus_t s, const char *what)
{
    return reap_err_set(REAP_E_DEVICE, "%s: %s: %s", c->where, what, cublasGetStatusName(s));
}

int check_flag(cuda_ctx *c)
{
    int f = 0;
    CU(cudaMemcpyAsync(&f, c->d_flag, sizeof f, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(flag)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
    if (!f) return REAP_OK;
    CU(cudaMemsetAsync(c->d_flag, 0, sizeof(int), c->st), "cudaMemset(flag)");
    static const struct { int bit; const char *stage; } names[] = {
        {RF_WEIGHT, "weights"}, {RF_EMBED, "embedding"}, {RF_INPUT, "layer input"},
        {RF_ATTN, "attention"}, {RF_ROUTER, "router logits"},
        {RF_EXPERT, "expert activations"}, {RF_MLP, "MLP activations"},
        {RF_OUTPUT, "MoE/MLP output"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (f & names[i].bit)
            return reap_err_set(REAP_E_NUMERIC, "%s: NaN or Inf in %s", c->where,
                                names[i].stage);
    return reap_err_set(REAP_E_NUMERIC, "%s: NaN or Inf (flag %#x)", c->where, f);
}

int dalloc(cuda_ctx *c, void **p, size_t bytes, const char *what)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e == cudaSuccess) return REAP_OK;
    *p = NULL;
    cudaGetLastError(); /* clear the (non-sticky) error */
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (e == cudaErrorMemoryAllocation)
        return reap_err_set(REAP_E_NOMEM, "%s: cudaMalloc(%s): %zu bytes needed, %zu of %zu "
                            "free on device %d", c->where, what, bytes, fr, tot, c->device);
    return cu_fail(c, e, what);
}

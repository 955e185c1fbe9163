/* cuda_probe.h - ask whether a CUDA device can be used, without creating a backend.
 *
 * Implemented in cuda/backend_cuda.cu; builds without CUDA provide a stub returning 0
 * (model/nocuda/). Used by the gpu tests and benchmarks to print SKIPPED instead of
 * failing on machines without a GPU.
 */
#ifndef REAP_CUDA_PROBE_H
#define REAP_CUDA_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (0 when there is no driver, no device, or the runtime
 * reports an error). Never fails, never exits. */
int reap_cuda_available(void);

#ifdef __cplusplus
}
#endif

#endif

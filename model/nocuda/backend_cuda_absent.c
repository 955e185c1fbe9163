/* backend_cuda_absent.c - reap_backend_cuda() for builds without the CUDA toolkit. */
#include <stddef.h>

#include "backend.h"

const reap_backend_i *reap_backend_cuda(void) { return NULL; }

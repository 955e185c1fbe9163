/* backend_cuda_absent.c - the CUDA entry points for builds without the CUDA toolkit. */
#include <stddef.h>

#include "backend.h"

const reap_backend_i *reap_backend_cuda(void) { return NULL; }

int reap_cuda_available(void) { return 0; }

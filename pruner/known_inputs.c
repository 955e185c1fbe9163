/* known_inputs.c - a model identity's file digests as the manifest's known inputs
 * (known_inputs.h). */
#include "known_inputs.h"

#include <stdlib.h>
#include <string.h>

reap_known_file *reap_known_inputs(const reap_model_info *mi)
{
    reap_known_file *k = calloc((size_t)mi->n_files + 1, sizeof *k);
    for (int f = 0; k && f < mi->n_files; f++) {
        k[f].path = mi->files[f].path;
        k[f].size = mi->files[f].size;
        memcpy(k[f].blake2b_256, mi->files[f].digest, 32);
    }
    return k;
}

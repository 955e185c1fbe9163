/* known_inputs.h - a model's identity (the store's catalog record, catalog.h) as the
 * manifest's known input files (manifest.h): the input digests the identity was made of,
 * so that a prune does not read its input a second time to list it. The pruner's
 * conversion, used by `reap-pruner prune` and by the Pruner service (compiled into
 * reap-pruner, not the library: reap_pruner and reapctl need no store).
 *
 * Thread rules: a pure function.
 */
#ifndef REAP_KNOWN_INPUTS_H
#define REAP_KNOWN_INPUTS_H

#include "catalog.h"
#include "manifest.h"

/* The identity's file digests (mi->files) as known input files: a malloc'd array of
 * mi->n_files entries (free()) whose paths point into mi, or NULL when out of memory
 * (the manifest then hashes the input itself). */
reap_known_file *reap_known_inputs(const reap_model_info *mi);

#endif

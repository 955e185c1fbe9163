/* catalog.h - the store's `models` and `calibs` databases: what a model_id and a calib_id
 * stand for.
 *
 * A model record describes the checkpoint behind a model_id: family, dimensions, the
 * layers that carry statistics (MoE layers), and every file hashed into the id. A calib
 * record describes the exact rows behind a calib_id. Both are written before any
 * statistics refer to them; an existing record is kept (the first sighting wins: ids are
 * content hashes, so a second sighting of the same id is the same content).
 *
 * The structures (reap_model_info, reap_calib_info) are defined in record_info.h,
 * below both this API and the record codec.
 *
 * Thread rules: as store.h. Structures returned here own their memory: free them with
 * the matching *_free function (which accepts a zeroed structure).
 */
#ifndef REAP_STORE_CATALOG_H
#define REAP_STORE_CATALOG_H

#include <stdint.h>

#include "record_info.h"
#include "store.h"

/* Record a model (no-op when its id is present). created_unix_ns 0: now.
 * REAP_OK, REAP_E_INVALID (read-only store, empty fields), REAP_E_IO, REAP_E_NOMEM. */
int reap_store_model_put(reap_store *s, const reap_model_info *m);

/* Read a model record (snap may be NULL). REAP_OK, REAP_E_NOTFOUND (message names the
 * id), REAP_E_FORMAT, REAP_E_UNSUPPORTED, REAP_E_NOMEM. */
int reap_store_model_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_model_info *out);

/* All model ids in key order. *ids is malloc'd (free()); *n may be 0 (*ids NULL).
 * REAP_OK, REAP_E_FORMAT (a key of the wrong size, a damaged page), REAP_E_IO,
 * REAP_E_NOMEM. */
int reap_store_model_list(reap_store *s, reap_store_snap *snap, reap_id **ids, int *n);

/* Record a calibration set (no-op when its id is present). As reap_store_model_put. */
int reap_store_calib_put(reap_store *s, const reap_calib_info *c);

/* Read a calibration record. As reap_store_model_get. */
int reap_store_calib_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_calib_info *out);

#endif

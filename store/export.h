/* export.h - export and import of store records as a file: backups, and merging
 * calibration shards scored on other machines into one store.
 *
 * File format (proto/reap_store.proto): the 8 bytes "REAPEXP1", then frames, each a
 * u32 big-endian length and an ExportFrame message: one ExportHeader, the records
 * (models, then calibs, then stats, each in key order; every stored value byte for byte
 * with digest = BLAKE2b-256(db u32 BE | key length u32 BE | key | value)), and one
 * ExportTrailer (record count, BLAKE2b-256 over the concatenated record digests: a
 * truncated, reordered or spliced file fails).
 *
 * Exported: model and calibration records and statistics records (all of them, or those
 * of one model). Not exported: the file-hash cache (machine-local), runs (local history),
 * hidden-state checkpoints.
 *
 * Import verifies the whole file first (magic, every frame, every record digest, the
 * trailer, every value's format version and, for statistics, the record's own digest and
 * key) and then applies it in one write transaction, so a bad file changes nothing.
 * Import is idempotent: a record already present with the same content is skipped;
 * model and calibration records already present are kept (ids are content hashes); a
 * statistics record present with different statistics is a conflict (REAP_E_CONFLICT,
 * nothing imported). Statistics whose model record is neither in the store nor in the
 * file are refused (REAP_E_FORMAT).
 *
 * Thread rules: as store.h.
 */
#ifndef REAP_STORE_EXPORT_H
#define REAP_STORE_EXPORT_H

#include <stdint.h>

#include "store.h"

typedef struct reap_export_counts {
    uint64_t models, calibs, stats;
} reap_export_counts;

/* Write the records of `model` (NULL: every model) to `path` atomically (temporary file,
 * fsync, rename, fsync of the folder), from one snapshot. *counts may be NULL.
 * REAP_OK, REAP_E_NOTFOUND (the model is not in the store), REAP_E_IO, REAP_E_NOMEM,
 * REAP_E_FORMAT (a damaged record in the store). */
int reap_store_export(reap_store *s, const char *path, const reap_id *model,
                      reap_export_counts *counts);

typedef struct reap_import_counts {
    uint64_t records;     /* records in the file */
    uint64_t added;       /* written to the store */
    uint64_t present;     /* already there (identical, or a kept model/calib record) */
} reap_import_counts;

/* Import the file at `path`. *counts may be NULL.
 * REAP_OK; REAP_E_NOTFOUND / REAP_E_IO (cannot read); REAP_E_FORMAT (not an export file,
 * truncated, a digest mismatch: the message names the record); REAP_E_UNSUPPORTED
 * (written by a newer format); REAP_E_INVALID (read-only store); REAP_E_CONFLICT (conflicting statistics);
 * REAP_E_NOMEM. */
int reap_store_import(reap_store *s, const char *path, reap_import_counts *counts);

#endif

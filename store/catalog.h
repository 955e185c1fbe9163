/* catalog.h - the store's `models` and `calibs` databases: what a model_id and a calib_id
 * stand for.
 *
 * A model record describes the checkpoint behind a model_id: family, dimensions, the
 * layers that carry statistics (MoE layers), and every file hashed into the id. A calib
 * record describes the exact rows behind a calib_id. Both are written before any
 * statistics refer to them; an existing record is kept (the first sighting wins: ids are
 * content hashes, so a second sighting of the same id is the same content).
 *
 * Thread rules: as store.h. Structures returned here own their memory: free them with
 * the matching *_free function (which accepts a zeroed structure).
 */
#ifndef REAP_STORE_CATALOG_H
#define REAP_STORE_CATALOG_H

#include <stdint.h>

#include "store.h"

typedef struct reap_model_file {
    char *path;            /* relative to the model directory */
    uint64_t size;         /* bytes */
    uint8_t digest[32];    /* BLAKE2b-256 of the file */
} reap_model_file;

typedef struct reap_model_info {
    reap_id id;
    char *model_type;      /* config.json model_type */
    int n_layers, hidden, n_experts, top_k;
    int n_moe_layers;
    int *moe_layers;       /* [n_moe_layers] ascending: the layers with statistics */
    int n_files;
    reap_model_file *files;  /* [n_files] sorted by path (bytewise) */
    char *first_seen_path; /* informational */
    int64_t created_unix_ns;
} reap_model_info;

void reap_model_info_free(reap_model_info *m);

typedef struct reap_calib_info {
    reap_id id;
    char *source;          /* informational: the calibration file */
    uint64_t n_samples;
    int n_rows, seq_len;
    int pack;              /* 1 packed, 0 one row per sample */
    uint64_t n_tokens;     /* valid positions */
    int has_tokenizer;     /* 1: tokenizer_digest is set */
    uint8_t tokenizer_digest[32];
    int64_t created_unix_ns;
} reap_calib_info;

void reap_calib_info_free(reap_calib_info *c);

/* Record a model (no-op when its id is present). created_unix_ns 0: now.
 * REAP_OK, REAP_E_INVALID (read-only store, empty fields), REAP_E_IO, REAP_E_NOMEM. */
int reap_store_model_put(reap_store *s, const reap_model_info *m);

/* Read a model record (snap may be NULL). REAP_OK, REAP_E_NOTFOUND (message names the
 * id), REAP_E_FORMAT, REAP_E_UNSUPPORTED, REAP_E_NOMEM. */
int reap_store_model_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_model_info *out);

/* All model ids in key order. *ids is malloc'd (free()); *n may be 0 (*ids NULL). */
int reap_store_model_list(reap_store *s, reap_store_snap *snap, reap_id **ids, int *n);

/* Record a calibration set (no-op when its id is present). As reap_store_model_put. */
int reap_store_calib_put(reap_store *s, const reap_calib_info *c);

/* Read a calibration record. As reap_store_model_get. */
int reap_store_calib_get(reap_store *s, reap_store_snap *snap, const reap_id *id,
                         reap_calib_info *out);

#endif

/* record_info.h - the C form of the store's model, calibration and run records: the
 * structures the store's API returns and takes (catalog.h, runs.h) and the record codec
 * (records.h) fills, with the functions that free them. Here, below both, so that the
 * codec does not depend on the API built on it.
 *
 * Structures own their memory: free them with the matching *_free function, which
 * accepts a zeroed structure and leaves it zeroed. Thread rules: plain data; one thread
 * uses one structure at a time.
 */
#ifndef REAP_STORE_RECORD_INFO_H
#define REAP_STORE_RECORD_INFO_H

#include <stdint.h>

#include "store.h"

/* ---- models and calibration sets (catalog.h) ---- */

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

/* ---- runs (runs.h) ---- */

typedef enum reap_run_state {
    REAP_RUN_UNSPECIFIED = 0,
    REAP_RUN_RUNNING = 1,
    REAP_RUN_DONE = 2,
    REAP_RUN_FAILED = 3,
    REAP_RUN_CANCELLED = 4
} reap_run_state;

typedef struct reap_run_info {
    uint8_t run_id[16];
    reap_id model, calib;
    int state;                 /* reap_run_state */
    int layers_done;           /* decoder layers 0..layers_done-1 are committed */
    int n_layers;
    int start_layer;           /* > 0: resumed */
    char *backend, *device, *error, *host;   /* may be NULL */
    char *request;             /* the caller's description of the request (opaque text,
                                  e.g. the scorer service's JSON), may be NULL */
    int64_t started_unix_ns, updated_unix_ns, finished_unix_ns;
    int n_layer_seconds;
    double *layer_seconds;     /* [n_layer_seconds]: layers computed by this run */
    int pid;
    int interrupted;           /* 1: FAILED or CANCELLED by an interruption (a shutdown,
                                  a process that died), so scoring the pair again
                                  resumes it; set by the caller before
                                  reap_store_run_finish, or by
                                  reap_store_run_mark_interrupted. Readers test this,
                                  never the error text (records of older versions:
                                  reap_store.proto RunStop) */
} reap_run_info;

void reap_run_info_free(reap_run_info *r);

#endif

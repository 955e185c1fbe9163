/* store.h - the persistent score store: one LMDB environment (a directory) holding model
 * and calibration identities, per-layer REAP statistics and scoring runs.
 *
 * Layout (design section 4; values are protobuf-c messages of proto/reap_store.proto,
 * each with a format_version; keys are fixed-size binary):
 *
 *   db        key                                          value
 *   meta      "format"                                     StoreMeta (magic, format version)
 *   models    model_id (32 B)                              ModelRecord
 *   filehash  dev | inode | size | mtime_ns (4 x 8 B BE)   FileHashRecord (digest, ctime)
 *   calibs    calib_id (32 B)                              CalibRecord
 *   stats     model_id | calib_id | layer u32 BE (68 B)    LayerStatsRecord (immutable)
 *   runs      run_id (16 B)                                RunRecord
 *   prunes    manifest digest (32 B)                       (the pruner's)
 *
 * Beside the LMDB files, DIR/checkpoints/ holds hidden-state checkpoints of runs in
 * progress (hidden_ckpt.h).
 *
 * Robustness rules (docs/store.md, Robustness): a large map size set before
 * open and doubled on MDB_MAP_FULL (the write is retried); growth by another process
 * adopted on MDB_MAP_RESIZED; mdb_reader_check at open; MDB_NOTLS so snapshots may be
 * used from worker threads; default durable commits (every write is fsynced). Open
 * refuses, with a message naming the directory: a directory that is not a store
 * (REAP_E_FORMAT), a store or record written by a newer format (REAP_E_UNSUPPORTED),
 * a truncated or damaged data.mdb (REAP_E_FORMAT). Values carry digests where they
 * matter (statistics); a record that fails its digest is REAP_E_FORMAT.
 * LMDB does not checksum its B-tree pages: damage inside a page that leaves the file
 * size and meta pages intact is not detected by open (records.c detects damaged values).
 *
 * Return codes: every function that hashes (open, identity.h, export.h, hidden_ckpt.h)
 * returns REAP_E_INTERNAL when libsodium cannot be initialised; the lists below leave
 * that out.
 *
 * Never on a network filesystem. Never use a store across fork(); never open the same
 * directory twice in one process.
 *
 * Thread rules: a reap_store handle may be shared by threads. Each write function runs
 * its own write transaction (LMDB serialises writers across threads and processes).
 * A snapshot (reap_store_snap) is a read transaction: use it from one thread at a time
 * (any thread: MDB_NOTLS); end it promptly (an open snapshot pins old pages and blocks
 * map growth in this process). Do not call write functions from a thread that holds a
 * snapshot open (map growth waits for snapshots: it gives up after 30 s with
 * REAP_E_IO).
 */
#ifndef REAP_STORE_H
#define REAP_STORE_H

#include <stddef.h>
#include <stdint.h>

/* The store format this build writes and the newest it reads. */
#define REAP_STORE_FORMAT_VERSION 1

/* A 32-byte identity: model_id, calib_id (BLAKE2b-256, identity.h). */
typedef struct reap_id {
    uint8_t b[32];
} reap_id;

/* Lower-case hex of an id: 64 characters and a NUL. */
void reap_id_hex(const reap_id *id, char out[65]);

/* Parse 64 hex digits (either case) into *out. REAP_OK or REAP_E_INVALID. */
int reap_id_parse(const char *hex, reap_id *out);

typedef struct reap_store reap_store;
typedef struct reap_store_snap reap_store_snap;

typedef struct reap_store_opts {
    int create;          /* 1: create the directory / store if absent (not with readonly) */
    int readonly;        /* 1: MDB_RDONLY; write functions fail with REAP_E_INVALID */
    size_t map_size;     /* initial map size in bytes (0: 1 GiB); grows as needed */
    int no_space_check;  /* 1: hidden-state checkpoints skip their free-space check (file
                            systems that misreport free space; hidden_ckpt.h) */
} reap_store_opts;

/* Open (or create) the store in directory `dir`. opts NULL: {create 0, readonly 0}.
 * A directory is created only when it does not exist or is empty. On success *out is a
 * handle to close with reap_store_close, and stale reader slots of dead processes have
 * been cleared.
 * Returns REAP_OK; REAP_E_INVALID (dir NULL or empty); REAP_E_NOTFOUND (no such
 * directory and !create, or no store in it);
 * REAP_E_FORMAT (not a reap store, foreign or damaged LMDB file, truncated data.mdb);
 * REAP_E_UNSUPPORTED (written by a newer store format); REAP_E_IO (permissions, lock
 * file, mkdir; errno text in the message); REAP_E_NOMEM. */
int reap_store_open(const char *dir, const reap_store_opts *opts, reap_store **out);

/* Close the handle. Every snapshot must have ended. NULL is a no-op. */
void reap_store_close(reap_store *s);

/* The directory the store was opened on. Valid until close. */
const char *reap_store_dir(const reap_store *s);

/* Clear reader slots left by dead processes (mdb_reader_check). *n_cleared (may be
 * NULL) receives the number of slots cleared. REAP_OK or REAP_E_IO. */
int reap_store_reader_check(reap_store *s, int *n_cleared);

/* The current map size of this process's view, in bytes (for tests and diagnostics). */
size_t reap_store_map_size(reap_store *s);

/* Begin a consistent read-only view of the whole store (an LMDB read transaction):
 * every read through it sees the store as of this moment, whatever writers do.
 * REAP_OK, REAP_E_IO, REAP_E_NOMEM. End it with reap_store_snap_end. */
int reap_store_snap_begin(reap_store *s, reap_store_snap **out);

/* End a snapshot. NULL is a no-op. */
void reap_store_snap_end(reap_store_snap *snap);

/* Number of records in each database (as one snapshot; snap may be NULL). REAP_OK,
 * REAP_E_IO, REAP_E_NOMEM. */
typedef struct reap_store_counts {
    uint64_t models, filehash, calibs, stats, runs, prunes;
} reap_store_counts;
int reap_store_count(reap_store *s, reap_store_snap *snap, reap_store_counts *out);

/* Walk every record of every database, decode it and check its digest and its key.
 * *n_checked receives the number of records checked (may be NULL).
 * REAP_OK; REAP_E_FORMAT / REAP_E_UNSUPPORTED naming the first bad record. */
int reap_store_verify(reap_store *s, uint64_t *n_checked);

#endif

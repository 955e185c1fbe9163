/* store_impl.h - internals shared by the store's source files: the handle, transaction
 * helpers with map growth, LMDB status mapping, the cursor walk (cursor.c). Not a public
 * header. Key sizes and byte helpers are keys.h (included).
 *
 * Map growth: every transaction of this process holds map_lock shared for its lifetime;
 * resizing the map (our own growth on MDB_MAP_FULL, adopting another process's growth on
 * MDB_MAP_RESIZED) takes it exclusively, because mdb_env_set_mapsize needs a process
 * with no transaction open.
 */
#ifndef REAP_STORE_IMPL_H
#define REAP_STORE_IMPL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>

#include "keys.h"
#include "stats.h"
#include "store.h"

struct reap_store {
    MDB_env *env;
    MDB_dbi db_meta, db_models, db_filehash, db_calibs, db_stats, db_runs, db_prunes;
    char *dir;
    char *fault_ctx;   /* fault.h context while a transaction of this store is open */
    int readonly;
    int no_space_check;  /* reap_store_opts.no_space_check */
    pthread_rwlock_t map_lock;
};

struct reap_store_snap {
    reap_store *s;
    MDB_txn *txn;
};

/* Positive internal status: the write transaction ran out of map (MDB_MAP_FULL); the
 * transaction has been aborted and store_write grows the map and runs it again. */
#define STORE_RETRY 1

/* Map an LMDB / errno status to a REAP_E_* code with a message "<dir>: <what>: <text>".
 * MDB_MAP_FULL maps to STORE_RETRY (no message). */
int store_mdb_err(const reap_store *s, int mdb_rc, const char *what);

/* A commit that failed writing: LMDB reports a short write (a file system that ran full
 * in the middle of the write, or the file-size limit) as EIO, hiding the cause. The
 * facts below, read after the failure, tell it. */
typedef struct store_write_facts {
    uint64_t free_bytes;   /* free on the store's file system (UINT64_MAX: unknown) */
    uint64_t fsize_limit;  /* RLIMIT_FSIZE (UINT64_MAX: none) */
    uint64_t data_size;    /* data.mdb's size */
    uint64_t page_size;
} store_write_facts;

/* Under this much free space a short write (EIO) is taken for a full file system. */
#define STORE_FULL_BYTES ((uint64_t)1 << 20)

/* The status and message of commit failure mrc given facts f: ENOSPC, or EIO with under
 * STORE_FULL_BYTES free, is "<dir>: commit: no space left on device (N bytes free on the
 * file system holding the store) ..."; EFBIG, or EIO with data.mdb at the file-size
 * limit, names data.mdb and the limit (REAP_E_IO both); anything else as
 * store_mdb_err(s, mrc, "commit"). Pure but for the message (tests feed it facts). */
int store_commit_err(const reap_store *s, int mrc, const store_write_facts *f);

/* Begin a transaction (write != 0: read-write). Takes map_lock shared; adopts a map
 * grown by another process (MDB_MAP_RESIZED). REAP_OK or a REAP_E_* code. */
int store_txn_begin(reap_store *s, int write, MDB_txn **out);
/* Abort / commit and release map_lock. commit: REAP_OK, STORE_RETRY, REAP_E_* (a
 * failed write explained by store_commit_err). */
void store_txn_abort(reap_store *s, MDB_txn *txn);
int store_txn_commit(reap_store *s, MDB_txn *txn);

/* Run fn inside one write transaction and commit it. fn returns REAP_OK (commit),
 * STORE_RETRY (from store_put: map full) or an error (abort, returned as is). On map
 * full the map is doubled and fn runs again in a fresh transaction, so fn must only
 * change the transaction (and state it recomputes). REAP_E_INVALID on a read-only
 * store. */
typedef int (*store_write_fn)(reap_store *s, MDB_txn *txn, void *ud);
int store_write(reap_store *s, store_write_fn fn, void *ud);

/* mdb_put with status mapping (STORE_RETRY on map full). */
int store_put(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
              const void *val, size_t vlen, unsigned flags);
/* mdb_get: REAP_OK with *val pointing into the map (valid until the transaction ends),
 * REAP_E_NOTFOUND (no message set), or an error. */
int store_get(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
              MDB_val *val);

/* One record of a walk (store_walk): key and value point into the map, valid until the
 * transaction ends. Return REAP_OK to go on, STORE_WALK_STOP to end the walk early (it
 * then returns REAP_OK), or a REAP_E_* code to end it with that code. */
typedef int (*store_walk_fn)(void *ud, const MDB_val *key, const MDB_val *val);
#define STORE_WALK_STOP 2

/* Call fn for every record of database dbi inside txn, in key order: every record when
 * plen is 0, else those whose key begins with the plen bytes at prefix (a key shorter
 * than the prefix does not). klen > 0: every visited key must be klen bytes long.
 * `what` names the database or walk in messages ("models").
 * REAP_OK (also for no record at all, or a walk fn stopped); REAP_E_FORMAT ("<dir>:
 * <what>: key of N bytes (want klen)"); fn's error; a cursor failure mapped by
 * store_mdb_err (REAP_E_FORMAT for a damaged page, REAP_E_IO, ...). */
int store_walk(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t plen,
               size_t klen, const char *what, store_walk_fn fn, void *ud);

/* Room for element n of a list a walk collects: `list` is the address of the list's
 * pointer (T **), *cap its capacity in elements of `size` bytes. When n == *cap the list
 * is reallocated to twice the capacity (16 at first) and *cap updated. REAP_OK, or
 * REAP_E_NOMEM ("<dir>: <what>"; the list and *cap unchanged). */
int store_list_room(const reap_store *s, void *list, int *cap, int n, size_t size,
                    const char *what);

/* A read transaction for a function that takes an optional snapshot: the snapshot's
 * transaction, or a fresh one. Pair with store_read_end(s, snap, txn). */
int store_read_begin(reap_store *s, reap_store_snap *snap, MDB_txn **txn);
void store_read_end(reap_store *s, reap_store_snap *snap, MDB_txn *txn);

/* Write one statistics record inside `txn` unless its key exists (then compare:
 * *outcome SAME or DIFFERENT; the stored record stays). outcome may be NULL. */
int store_stats_put_txn(reap_store *s, MDB_txn *txn, const reap_id *model,
                        const reap_id *calib, const reap_layer_stats *st,
                        const char *backend, int *outcome);

#endif

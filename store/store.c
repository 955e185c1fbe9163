/* store.c - the LMDB environment: open with checks (directory, foreign files, truncation,
 * store format), named databases, transactions with map growth, snapshots and counts
 * (store.h). The full verification walk is verify.c. */
#include "store.h"

#include <dirent.h>
#include <sodium.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "records.h"
#include "hex.h"
#include "reap_err.h"
#include "store_impl.h"

#define DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define MIN_MAP_SIZE ((size_t)64 << 10)
#define GROW_WAIT_S 30
#define META_KEY "format"

/* ---- small helpers --------------------------------------------------------------- */

void reap_id_hex(const reap_id *id, char out[65])
{
    reap_hex(id->b, 32, out);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int reap_id_parse(const char *hex, reap_id *out)
{
    if (!hex || strlen(hex) != 64)
        return reap_err_set(REAP_E_INVALID, "'%s' is not an id (64 hex digits)",
                            hex ? hex : "(null)");
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return reap_err_set(REAP_E_INVALID, "'%s' is not an id (64 hex digits)", hex);
        out->b[i] = (uint8_t)(hi << 4 | lo);
    }
    return REAP_OK;
}

int store_mdb_err(const reap_store *s, int mdb_rc, const char *what)
{
    const char *dir = s ? s->dir : "store";
    int code;
    switch (mdb_rc) {
    case MDB_SUCCESS:
        return REAP_OK;
    case MDB_MAP_FULL:
        return STORE_RETRY;
    case MDB_NOTFOUND:
        code = REAP_E_NOTFOUND;
        break;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_VALSIZE:
        return reap_err_set(REAP_E_FORMAT, "%s: %s: %s (damaged or not a reap store)", dir,
                            what, mdb_strerror(mdb_rc));
    case ENOMEM:
        code = REAP_E_NOMEM;
        break;
    case ENOENT:
        code = REAP_E_NOTFOUND;
        break;
    default:
        code = REAP_E_IO;
    }
    return reap_err_set(code, "%s: %s: %s", dir, what, mdb_strerror(mdb_rc));
}

/* ---- transactions and map growth ------------------------------------------------- */

static int lock_exclusive(reap_store *s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += GROW_WAIT_S;
    int e = pthread_rwlock_timedwrlock(&s->map_lock, &until);
    if (e)
        return reap_err_set(REAP_E_IO,
                            "%s: cannot resize the map: snapshots still open in this "
                            "process after %d s (%s)",
                            s->dir, GROW_WAIT_S, strerror(e));
    return REAP_OK;
}

/* Adopt the map size another process set (size 0), or grow ours to twice `seen`
 * (unless someone in this process already grew it past `seen`). */
static int map_resize(reap_store *s, size_t seen)
{
    int rc = lock_exclusive(s), mrc;
    MDB_envinfo info;
    if (rc)
        return rc;
    if (!seen) {
        mrc = mdb_env_set_mapsize(s->env, 0);
    } else {
        mdb_env_info(s->env, &info);
        mrc = info.me_mapsize > seen ? MDB_SUCCESS : mdb_env_set_mapsize(s->env, 2 * seen);
    }
    pthread_rwlock_unlock(&s->map_lock);
    return mrc ? store_mdb_err(s, mrc, "resizing the map") : REAP_OK;
}

int store_txn_begin(reap_store *s, int write, MDB_txn **out)
{
    *out = NULL;
    if (write && s->readonly)
        return reap_err_set(REAP_E_INVALID, "%s: store opened read-only", s->dir);
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_rdlock(&s->map_lock);
        reap_fault_enter(s->fault_ctx);
        int mrc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, out);
        if (mrc == MDB_SUCCESS)
            return REAP_OK;
        reap_fault_leave();
        pthread_rwlock_unlock(&s->map_lock);
        *out = NULL;
        if (mrc != MDB_MAP_RESIZED || attempt >= 8)
            return store_mdb_err(s, mrc, write ? "write transaction" : "read transaction");
        int rc = map_resize(s, 0);
        if (rc)
            return rc;
    }
}

void store_txn_abort(reap_store *s, MDB_txn *txn)
{
    if (!txn)
        return;
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->map_lock);
    reap_fault_leave();
}

int store_commit_err(const reap_store *s, int mrc, const store_write_facts *f)
{
    if (mrc == MDB_SUCCESS || mrc == MDB_MAP_FULL || !f)
        return store_mdb_err(s, mrc, "commit");
    /* LMDB reports a short write as EIO: with the file-size limit reached, or with the
     * file system full, that is the cause; an EIO of a failing disk is left as it is. */
    if (mrc == EFBIG || (mrc == EIO && f->fsize_limit != UINT64_MAX &&
                         f->data_size + f->page_size >= f->fsize_limit))
        return reap_err_set(REAP_E_IO, "%s: commit: %s/data.mdb reached the file size limit "
                            "of %llu bytes (RLIMIT_FSIZE, ulimit -f); the transaction was "
                            "rolled back, the store is as it was before it", s->dir, s->dir,
                            (unsigned long long)f->fsize_limit);
    if (mrc == ENOSPC || (mrc == EIO && f->free_bytes < STORE_FULL_BYTES))
        return reap_err_set(REAP_E_IO, "%s: commit: no space left on device (%llu bytes "
                            "free on the file system holding the store); the transaction "
                            "was rolled back, the store is as it was before it: free space "
                            "there and run again", s->dir,
                            (unsigned long long)(f->free_bytes == UINT64_MAX
                                                     ? 0 : f->free_bytes));
    return store_mdb_err(s, mrc, "commit");
}

/* What the file system says after a failed commit (store_commit_err). */
static void write_facts(const reap_store *s, store_write_facts *f)
{
    struct statvfs vs;
    struct rlimit rl;
    struct stat st;
    char path[4200];
    f->free_bytes = UINT64_MAX;
    f->fsize_limit = UINT64_MAX;
    f->data_size = 0;
    f->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    if (statvfs(s->dir, &vs) == 0) /* root may also use the reserved blocks */
        f->free_bytes = (uint64_t)(geteuid() == 0 ? vs.f_bfree : vs.f_bavail) * vs.f_frsize;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        f->fsize_limit = (uint64_t)rl.rlim_cur;
    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    if (stat(path, &st) == 0)
        f->data_size = (uint64_t)st.st_size;
}

int store_txn_commit(reap_store *s, MDB_txn *txn)
{
    int mrc = mdb_txn_commit(txn);
    pthread_rwlock_unlock(&s->map_lock);
    reap_fault_leave();
    if (mrc == MDB_SUCCESS || mrc == MDB_MAP_FULL)
        return store_mdb_err(s, mrc, "commit");
    store_write_facts f;
    write_facts(s, &f);
    return store_commit_err(s, mrc, &f);
}

int store_write(reap_store *s, store_write_fn fn, void *ud)
{
    for (int attempt = 0;; attempt++) {
        MDB_txn *txn;
        MDB_envinfo info;
        int rc = store_txn_begin(s, 1, &txn);
        if (rc)
            return rc;
        mdb_env_info(s->env, &info);
        rc = fn(s, txn, ud);
        if (rc == REAP_OK)
            rc = store_txn_commit(s, txn);
        else
            store_txn_abort(s, txn);
        if (rc != STORE_RETRY)
            return rc;
        if (attempt >= 40)
            return reap_err_set(REAP_E_IO, "%s: map still full at %zu bytes", s->dir,
                                info.me_mapsize);
        if ((rc = map_resize(s, info.me_mapsize)))
            return rc;
    }
}

int store_put(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
              const void *val, size_t vlen, unsigned flags)
{
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    return store_mdb_err(s, mdb_put(txn, dbi, &k, &v, flags), "put");
}

int store_get(reap_store *s, MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
              MDB_val *val)
{
    MDB_val k = {klen, (void *)key};
    int mrc = mdb_get(txn, dbi, &k, val);
    if (mrc == MDB_NOTFOUND)
        return REAP_E_NOTFOUND;
    return store_mdb_err(s, mrc, "get");
}

int store_read_begin(reap_store *s, reap_store_snap *snap, MDB_txn **txn)
{
    if (snap) {
        *txn = snap->txn;
        return REAP_OK;
    }
    return store_txn_begin(s, 0, txn);
}

void store_read_end(reap_store *s, reap_store_snap *snap, MDB_txn *txn)
{
    if (!snap)
        store_txn_abort(s, txn);
}

/* ---- open ------------------------------------------------------------------------ */

/* 1 when the directory has no entry but (possibly) an LMDB lock file. */
static int dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int empty = 1;
    if (!d)
        return 0;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
                !strcmp(e->d_name, "lock.mdb");
    closedir(d);
    return empty;
}

typedef struct init_ctx {
    int fresh;      /* no data.mdb existed: write the meta record */
} init_ctx;

static int open_dbs(reap_store *s, MDB_txn *txn, unsigned flags)
{
    static const char *names[] = {"models", "filehash", "calibs", "stats", "runs", "prunes"};
    MDB_dbi *dbis[] = {&s->db_models, &s->db_filehash, &s->db_calibs,
                       &s->db_stats,  &s->db_runs,     &s->db_prunes};
    for (int i = 0; i < 6; i++) {
        int mrc = mdb_dbi_open(txn, names[i], flags, dbis[i]);
        if (mrc == MDB_NOTFOUND)
            return reap_err_set(REAP_E_FORMAT, "%s: damaged store: database '%s' is missing",
                                s->dir, names[i]);
        if (mrc)
            return store_mdb_err(s, mrc, names[i]);
    }
    return REAP_OK;
}

/* Opens (creating when fresh) the named databases and checks or writes the meta record.
 * Runs as a store_write function (read-write stores). */
static int init_write(reap_store *s, MDB_txn *txn, void *ud)
{
    const init_ctx *ic = ud;
    MDB_val v;
    char what[4200];
    uint8_t *buf = NULL;
    size_t len;
    int rc, mrc = mdb_dbi_open(txn, "meta", ic->fresh ? MDB_CREATE : 0, &s->db_meta);
    snprintf(what, sizeof what, "%s: store meta record", s->dir);
    if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE)
        return reap_err_set(REAP_E_FORMAT,
                            "%s: an LMDB environment but not a reap store (no 'meta' "
                            "database)", s->dir);
    if (mrc)
        return store_mdb_err(s, mrc, "meta database");
    rc = store_get(s, txn, s->db_meta, META_KEY, strlen(META_KEY), &v);
    if (rc == REAP_OK) {
        if ((rc = rec_meta_check(v.mv_data, v.mv_size, what)))
            return rc;
        return open_dbs(s, txn, MDB_CREATE);
    }
    if (rc != REAP_E_NOTFOUND)
        return rc;
    if (!ic->fresh)
        return reap_err_set(REAP_E_FORMAT, "%s: not a reap store (no format record)", s->dir);
    if ((rc = open_dbs(s, txn, MDB_CREATE)) || (rc = rec_meta_encode(&buf, &len)))
        return rc;
    rc = store_put(s, txn, s->db_meta, META_KEY, strlen(META_KEY), buf, len, 0);
    free(buf);
    return rc;
}

static int init_readonly(reap_store *s)
{
    MDB_txn *txn;
    MDB_val v;
    char what[4200];
    int rc = store_txn_begin(s, 0, &txn), mrc;
    if (rc)
        return rc;
    snprintf(what, sizeof what, "%s: store meta record", s->dir);
    mrc = mdb_dbi_open(txn, "meta", 0, &s->db_meta);
    if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: an LMDB environment but not a reap store (no "
                                         "'meta' database)", s->dir);
        goto fail;
    }
    if (mrc) {
        rc = store_mdb_err(s, mrc, "meta database");
        goto fail;
    }
    rc = store_get(s, txn, s->db_meta, META_KEY, strlen(META_KEY), &v);
    if (rc == REAP_E_NOTFOUND)
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a reap store (no format record)", s->dir);
    if (rc || (rc = rec_meta_check(v.mv_data, v.mv_size, what)) ||
        (rc = open_dbs(s, txn, 0)))
        goto fail;
    /* DBI handles opened in a read transaction survive only its commit. */
    mrc = mdb_txn_commit(txn);
    pthread_rwlock_unlock(&s->map_lock);
    return store_mdb_err(s, mrc, "opening databases");
fail:
    store_txn_abort(s, txn);
    return rc;
}

/* The file must hold every page the newest meta page says is in use: a shorter file
 * (truncated copy, full disk) would fault (SIGBUS) on first access. */
static int check_file_size(reap_store *s, const char *data_path)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat sb;
    if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &st) || stat(data_path, &sb))
        return reap_err_set(REAP_E_IO, "%s: cannot read the environment info", s->dir);
    unsigned long long need = ((unsigned long long)info.me_last_pgno + 1) * st.ms_psize;
    if ((unsigned long long)sb.st_size < need)
        return reap_err_set(REAP_E_FORMAT,
                            "%s: data.mdb is truncated (%lld bytes; the store's pages need "
                            "%llu): restore it from a backup or export",
                            s->dir, (long long)sb.st_size, need);
    return REAP_OK;
}

int reap_store_open(const char *dir, const reap_store_opts *opts, reap_store **out)
{
    reap_store_opts o = opts ? *opts : (reap_store_opts){0};
    reap_store *s = NULL;
    char data_path[4200];
    struct stat sb;
    int rc = REAP_OK, mrc, fresh = 0, lock_init = 0, entered = 0;
    *out = NULL;
    if (!dir || !*dir)
        return reap_err_set(REAP_E_INVALID, "store: no directory given");
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    if (o.readonly)
        o.create = 0;
    if (stat(dir, &sb)) {
        if (errno != ENOENT)
            return reap_err_set(REAP_E_IO, "%s: %s", dir, strerror(errno));
        if (!o.create)
            return reap_err_set(REAP_E_NOTFOUND, "%s: no such store directory", dir);
        if (mkdir(dir, 0755) && errno != EEXIST)
            return reap_err_set(REAP_E_IO, "%s: cannot create the store directory: %s", dir,
                                strerror(errno));
    } else if (!S_ISDIR(sb.st_mode)) {
        return reap_err_set(REAP_E_FORMAT, "%s: not a directory (a store is a directory)",
                            dir);
    }
    snprintf(data_path, sizeof data_path, "%s/data.mdb", dir);
    if (stat(data_path, &sb)) {
        if (errno != ENOENT)
            return reap_err_set(REAP_E_IO, "%s: %s", data_path, strerror(errno));
        if (!o.create)
            return reap_err_set(REAP_E_NOTFOUND, "%s: no reap store here (no data.mdb)", dir);
        if (!dir_is_empty(dir))
            return reap_err_set(REAP_E_FORMAT,
                                "%s: not a reap store (no data.mdb) and not empty: refusing "
                                "to create a store in it", dir);
        fresh = 1;
    } else if (!S_ISREG(sb.st_mode) || sb.st_size < 2 * 4096) {
        /* LMDB would take an empty data.mdb for a new environment. */
        return reap_err_set(REAP_E_FORMAT,
                            "%s: data.mdb is truncated or not an LMDB file (%lld bytes)", dir,
                            (long long)sb.st_size);
    }

    s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir)) ||
        asprintf(&s->fault_ctx, "reading the score store %s: its data.mdb is damaged (LMDB "
                                "keeps no page checksums). Restore the store from a "
                                "`reap-scorer export` file, or score into a new store",
                 dir) < 0) {
        if (s)
            s->fault_ctx = NULL;
        rc = reap_err_set(REAP_E_NOMEM, "%s: store handle", dir);
        goto fail;
    }
    s->readonly = o.readonly;
    s->no_space_check = o.no_space_check;
    if (pthread_rwlock_init(&s->map_lock, NULL)) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: lock", dir);
        goto fail;
    }
    lock_init = 1;
    size_t map = o.map_size ? o.map_size : DEFAULT_MAP_SIZE;
    if (map < MIN_MAP_SIZE)
        map = MIN_MAP_SIZE;
    if ((mrc = mdb_env_create(&s->env))) {
        rc = store_mdb_err(s, mrc, "mdb_env_create");
        goto fail;
    }
    if ((mrc = mdb_env_set_maxdbs(s->env, 16)) || (mrc = mdb_env_set_mapsize(s->env, map))) {
        rc = store_mdb_err(s, mrc, "environment settings");
        goto fail;
    }
    reap_fault_enter(s->fault_ctx);   /* left at the end of this function */
    entered = 1;
    mrc = mdb_env_open(s->env, dir, MDB_NOTLS | (o.readonly ? MDB_RDONLY : 0), 0644);
    if (mrc) {
        rc = store_mdb_err(s, mrc, "opening the environment");
        goto fail;
    }
    if ((rc = check_file_size(s, data_path)) || (rc = reap_store_reader_check(s, NULL)))
        goto fail;
    /* An environment that never committed a transaction is a creation that was
     * interrupted (killed between LMDB's file setup and our first commit): finish it. */
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (!fresh && info.me_last_txnid == 0) {
        if (!o.create) {
            rc = reap_err_set(REAP_E_NOTFOUND, "%s: no reap store here yet (its creation "
                                               "was interrupted; opening it to write "
                                               "completes it)", dir);
            goto fail;
        }
        fresh = 1;
    }
    if (o.readonly) {
        rc = init_readonly(s);
    } else {
        init_ctx ic = {fresh};
        rc = store_write(s, init_write, &ic);
    }
    if (rc)
        goto fail;
    reap_fault_leave();
    *out = s;
    return REAP_OK;
fail:
    if (entered)
        reap_fault_leave();
    if (s) {
        if (s->env)
            mdb_env_close(s->env);
        if (lock_init)
            pthread_rwlock_destroy(&s->map_lock);
        free(s->dir);
        free(s->fault_ctx);
        free(s);
    }
    return rc;
}

void reap_store_close(reap_store *s)
{
    if (!s)
        return;
    mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->map_lock);
    free(s->dir);
    free(s->fault_ctx);
    free(s);
}

const char *reap_store_dir(const reap_store *s)
{
    return s->dir;
}

int reap_store_reader_check(reap_store *s, int *n_cleared)
{
    int dead = 0, mrc = mdb_reader_check(s->env, &dead);
    if (n_cleared)
        *n_cleared = dead;
    return mrc ? store_mdb_err(s, mrc, "reader check") : REAP_OK;
}

size_t reap_store_map_size(reap_store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/* ---- snapshots, counts, verification --------------------------------------------- */

int reap_store_snap_begin(reap_store *s, reap_store_snap **out)
{
    reap_store_snap *snap = calloc(1, sizeof *snap);
    int rc;
    *out = NULL;
    if (!snap)
        return reap_err_set(REAP_E_NOMEM, "%s: snapshot", s->dir);
    if ((rc = store_txn_begin(s, 0, &snap->txn))) {
        free(snap);
        return rc;
    }
    snap->s = s;
    *out = snap;
    return REAP_OK;
}

void reap_store_snap_end(reap_store_snap *snap)
{
    if (!snap)
        return;
    store_txn_abort(snap->s, snap->txn);
    free(snap);
}

int reap_store_count(reap_store *s, reap_store_snap *snap, reap_store_counts *out)
{
    MDB_txn *txn;
    MDB_stat st;
    MDB_dbi dbis[6] = {s->db_models, s->db_filehash, s->db_calibs,
                       s->db_stats,  s->db_runs,     s->db_prunes};
    uint64_t *dst[6] = {&out->models, &out->filehash, &out->calibs,
                        &out->stats,  &out->runs,     &out->prunes};
    int rc = store_read_begin(s, snap, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < 6; i++) {
        int mrc = mdb_stat(txn, dbis[i], &st);
        if (mrc) {
            rc = store_mdb_err(s, mrc, "counting records");
            break;
        }
        *dst[i] = st.ms_entries;
    }
    store_read_end(s, snap, txn);
    return rc;
}

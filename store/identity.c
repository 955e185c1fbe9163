/* identity.c - model_id (parallel file hashing with the store's file-hash cache) and
 * calib_id (identity.h). */
#include "identity.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsopen.h"
#include "parallel.h"
#include "records.h"
#include "reap_err.h"
#include "store_impl.h"

#define HASH_STEP ((uint64_t)4 << 20)
#define RACY_NS ((int64_t)2000000000)

/* sodium_init picks the fastest BLAKE2b code for this CPU; should it fail, the portable
 * code it would otherwise use computes the same digests. */
static void sodium_ready(void)
{
    if (sodium_init() < 0)
        return;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* The status-change time: set by the kernel on every write, chmod, rename or utime, and
 * unlike the mtime no user tool can set it back. */
static int64_t ctime_ns(const struct stat *st)
{
    return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/* When the file last changed as far as its timestamps tell: the later of mtime and
 * ctime (the racy-window rule below looks at both). */
static int64_t changed_ns(const struct stat *st)
{
    return mtime_ns(st) > ctime_ns(st) ? mtime_ns(st) : ctime_ns(st);
}

static int same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           mtime_ns(a) == mtime_ns(b) && ctime_ns(a) == ctime_ns(b);
}

/* Hash an open file of `size` bytes through a read-only mapping (sequential advice,
 * 4 MiB steps). A mapping, not read(2): copying through a buffer costs ~25% of the
 * throughput here (bench/bench_hash.c). *n receives the bytes hashed. */
static int hash_fd(int fd, const char *path, uint64_t size, uint8_t out[32], uint64_t *n)
{
    crypto_generichash_state h;
    uint8_t *map = NULL;
    crypto_generichash_init(&h, NULL, 0, 32);
    if (size) {
        map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED)
            return reap_err_set(REAP_E_IO, "%s: mmap: %s", path, strerror(errno));
        madvise(map, (size_t)size, MADV_SEQUENTIAL);
        for (uint64_t off = 0; off < size; off += HASH_STEP) {
            size_t len = size - off < HASH_STEP ? (size_t)(size - off) : HASH_STEP;
            crypto_generichash_update(&h, map + off, len);
            /* Out of this process's mapping once hashed (the pages stay in the page
             * cache): resident memory stays at one step per thread, not the file. */
            madvise(map + off, len, MADV_DONTNEED);
        }
        munmap(map, (size_t)size);
    }
    crypto_generichash_final(&h, out, 32);
    *n = size;
    return REAP_OK;
}

int reap_file_digest(const char *path, uint8_t out[32])
{
    struct stat sb;
    uint64_t n;
    int rc, fd;
    if (sodium_init() < 0) /* also picks the fastest BLAKE2b code for this CPU */
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    if ((rc = reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd)))
        return rc;
    if (fstat(fd, &sb))
        rc = reap_err_set(REAP_E_IO, "%s: fstat: %s", path, strerror(errno));
    else
        rc = hash_fd(fd, path, (uint64_t)sb.st_size, out, &n);
    close(fd);
    return rc;
}

/* ---- the file list --------------------------------------------------------------- */

typedef struct hfile {
    char *name;          /* relative path */
    char *path;          /* dir/name */
    struct stat st;
    uint8_t digest[32];
    int cached;          /* digest from the cache */
    int status;          /* worker result */
    char msg[512];       /* worker's error message */
} hfile;

static int wanted(const char *name)
{
    size_t n = strlen(name);
    return !strcmp(name, "config.json") || !strcmp(name, "model.safetensors.index.json") ||
           (n > 12 && !strcmp(name + n - 12, ".safetensors"));
}

static int list_files(const char *dir, const reap_roots *roots, hfile **out, int *n_out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    hfile *files = NULL;
    int n = 0, cap = 0, rc = REAP_OK, have_cfg = 0, have_st = 0;
    *out = NULL;
    *n_out = 0;
    if (!d)
        return reap_err_set(errno == ENOENT ? REAP_E_NOTFOUND : REAP_E_IO, "%s: %s", dir,
                            strerror(errno));
    while ((e = readdir(d))) {
        if (!wanted(e->d_name))
            continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 16;
            hfile *nf = realloc(files, (size_t)nc * sizeof *nf);
            if (!nf) {
                rc = reap_err_set(REAP_E_NOMEM, "%s: file list", dir);
                goto fail;
            }
            files = nf;
            cap = nc;
        }
        hfile *f = &files[n];
        memset(f, 0, sizeof *f);
        size_t plen = strlen(dir) + strlen(e->d_name) + 2;
        f->name = strdup(e->d_name);
        f->path = malloc(plen);
        n++;
        if (!f->name || !f->path) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: file list", dir);
            goto fail;
        }
        snprintf(f->path, plen, "%s/%s", dir, e->d_name);
        if (stat(f->path, &f->st)) {
            rc = reap_err_set(REAP_E_IO, "%s: %s", f->path, strerror(errno));
            goto fail;
        }
        if (!S_ISREG(f->st.st_mode)) {
            /* A FIFO (or directory, ...) named like a checkpoint file: refused, so that
             * the identity never silently differs from the checkpoint that is read. */
            rc = reap_err_set(REAP_E_INVALID, "%s: is %s, not a regular file", f->path,
                              reap_file_type_name(f->st.st_mode));
            goto fail;
        }
        /* Confined: also a file whose digest is cached (it is never opened to hash). */
        int fd;
        if (roots && (rc = reap_open_read(f->path, roots, REAP_OPEN_REGULAR, &fd)))
            goto fail;
        if (roots)
            close(fd);
        have_cfg |= !strcmp(e->d_name, "config.json");
        have_st |= strlen(e->d_name) > 12 && !strcmp(e->d_name + strlen(e->d_name) - 12,
                                                     ".safetensors");
    }
    if (!have_cfg || !have_st) {
        rc = reap_err_set(REAP_E_NOTFOUND, "%s: not a checkpoint (%s)", dir,
                          !have_cfg ? "no config.json" : "no *.safetensors file");
        goto fail;
    }
    *out = files;
    *n_out = n;
    files = NULL;
fail:
    closedir(d);
    for (int i = 0; files && i < n; i++) {
        free(files[i].name);
        free(files[i].path);
    }
    free(files);
    return rc;
}

static void free_files(hfile *files, int n)
{
    for (int i = 0; files && i < n; i++) {
        free(files[i].name);
        free(files[i].path);
    }
    free(files);
}

/* ---- cache -----------------------------------------------------------------------
 * Key (device, inode, size, mtime); the record also holds the file's ctime when it was
 * hashed, and a record is trusted only while the ctime is unchanged (an in-place edit
 * with the mtime restored keeps the key but not the ctime). A record without a ctime
 * (written before it was recorded) is never trusted: the file is hashed again and the
 * record replaced. Files whose mtime or ctime is within RACY_NS of the start of hashing
 * are not cached: a later change in the same timestamp tick could not be told apart. */

static void cache_key(const struct stat *st, uint8_t key[STORE_FILEHASH_KEY_LEN])
{
    store_be64(key, (uint64_t)st->st_dev);
    store_be64(key + 8, (uint64_t)st->st_ino);
    store_be64(key + 16, (uint64_t)st->st_size);
    store_be64(key + 24, (uint64_t)mtime_ns(st));
}

static int cache_lookup(reap_store *s, hfile *files, int n)
{
    MDB_txn *txn;
    int rc = store_txn_begin(s, 0, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < n && !rc; i++) {
        uint8_t key[STORE_FILEHASH_KEY_LEN];
        MDB_val v;
        char what[4400];
        cache_key(&files[i].st, key);
        rc = store_get(s, txn, s->db_filehash, key, sizeof key, &v);
        if (rc == REAP_E_NOTFOUND) {
            rc = REAP_OK;
            continue;
        }
        if (rc)
            break;
        snprintf(what, sizeof what, "%s: file-hash cache entry of %s", s->dir,
                 files[i].path);
        int64_t ctime_rec = 0;
        if ((rc = rec_filehash_decode(v.mv_data, v.mv_size, what, files[i].digest,
                                      &ctime_rec)))
            break;
        files[i].cached = ctime_rec != 0 && ctime_rec == ctime_ns(&files[i].st);
    }
    store_txn_abort(s, txn);
    return rc;
}

typedef struct cache_put {
    hfile *files;
    int n;
    int64_t racy_after;   /* files with mtime or ctime >= this are not cached */
} cache_put;

static int cache_put_fn(reap_store *s, MDB_txn *txn, void *ud)
{
    const cache_put *cp = ud;
    for (int i = 0; i < cp->n; i++) {
        const hfile *f = &cp->files[i];
        uint8_t key[STORE_FILEHASH_KEY_LEN], *buf;
        size_t len;
        int rc;
        if (f->cached || changed_ns(&f->st) >= cp->racy_after)
            continue;
        cache_key(&f->st, key);
        if ((rc = rec_filehash_encode(f->digest, ctime_ns(&f->st), f->path, &buf, &len)))
            return rc;
        rc = store_put(s, txn, s->db_filehash, key, sizeof key, buf, len, 0);
        free(buf);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

/* ---- parallel hashing ------------------------------------------------------------ */

typedef struct hash_job {
    const reap_roots *roots;  /* NULL: unconfined */
    hfile **todo;         /* files to hash, largest first */
    int n_todo;
    int next;             /* atomic work index */
    uint64_t bytes;       /* atomic */
} hash_job;

static void hash_one(hfile *f, const reap_roots *roots, uint64_t *bytes)
{
    struct stat now;
    uint64_t n = 0;
    int fd = -1;
    if ((f->status = reap_open_read(f->path, roots, REAP_OPEN_REGULAR, &fd)))
        goto fail;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (fstat(fd, &now) || !same_stat(&now, &f->st)) {
        f->status = reap_err_set(REAP_E_IO, "%s: file changed while being identified",
                                 f->path);
        goto fail;
    }
    if ((f->status = hash_fd(fd, f->path, (uint64_t)f->st.st_size, f->digest, &n)))
        goto fail;
    if (fstat(fd, &now) || !same_stat(&now, &f->st) || n != (uint64_t)f->st.st_size)
        f->status = reap_err_set(REAP_E_IO, "%s: file changed while being hashed", f->path);
    *bytes = n;
fail:
    if (f->status)
        snprintf(f->msg, sizeof f->msg, "%s", reap_err_msg());
    if (fd >= 0)
        close(fd);
}

static void hash_worker(void *ud, int64_t begin, int64_t end, int tid)
{
    hash_job *job = ud;
    (void)begin;
    (void)end;
    (void)tid;
    for (;;) {
        int i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (i >= job->n_todo)
            break;
        uint64_t n = 0;
        hash_one(job->todo[i], job->roots, &n);
        __atomic_fetch_add(&job->bytes, n, __ATOMIC_RELAXED);
    }
}

static int by_size_desc(const void *a, const void *b)
{
    const hfile *x = *(hfile *const *)a, *y = *(hfile *const *)b;
    return (x->st.st_size < y->st.st_size) - (x->st.st_size > y->st.st_size);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int mf_cmp(const void *a, const void *b)
{
    return strcmp(((const reap_model_file *)a)->path, ((const reap_model_file *)b)->path);
}

void reap_model_id_from_files(reap_model_file *files, int n_files, reap_id *out)
{
    static const char tag[] = "reap-model-id/1";
    crypto_generichash_state h;
    uint8_t num[8];
    sodium_ready();
    qsort(files, (size_t)n_files, sizeof *files, mf_cmp);
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)tag, sizeof tag - 1);
    for (int i = 0; i < n_files; i++) {
        size_t len = strlen(files[i].path);
        store_be32(num, (uint32_t)len);
        crypto_generichash_update(&h, num, 4);
        crypto_generichash_update(&h, (const uint8_t *)files[i].path, len);
        store_be64(num, files[i].size);
        crypto_generichash_update(&h, num, 8);
        crypto_generichash_update(&h, files[i].digest, 32);
    }
    crypto_generichash_final(&h, out->b, 32);
}

int reap_model_identify(reap_store *s, const char *dir, int threads, reap_model_info *out,
                        reap_hash_stats *hs)
{
    return reap_model_identify_confined(s, dir, NULL, threads, out, hs);
}

int reap_model_identify_confined(reap_store *s, const char *dir, const reap_roots *roots,
                                 int threads, reap_model_info *out, reap_hash_stats *hs)
{
    hfile *files = NULL;
    hash_job job = {.roots = roots};
    reap_model_info mi = {0};
    int n = 0, rc;
    int64_t started_ns = store_now_ns();
    double t0 = mono_s();
    memset(out, 0, sizeof *out);
    if (hs)
        memset(hs, 0, sizeof *hs);
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    if ((rc = list_files(dir, roots, &files, &n)))
        return rc;
    if (s && (rc = cache_lookup(s, files, n)))
        goto fail;
    job.todo = malloc((size_t)n * sizeof *job.todo);
    if (!job.todo) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: hashing", dir);
        goto fail;
    }
    for (int i = 0; i < n; i++)
        if (!files[i].cached)
            job.todo[job.n_todo++] = &files[i];
    qsort(job.todo, (size_t)job.n_todo, sizeof *job.todo, by_size_desc);
    int nt = threads > 0 ? threads : reap_cpu_count();
    if (nt > job.n_todo)
        nt = job.n_todo;
    if (nt > 0)
        reap_parallel_for(nt, nt, hash_worker, &job);
    for (int i = 0; i < job.n_todo; i++)
        if (job.todo[i]->status) {
            rc = reap_err_set(job.todo[i]->status, "%s", job.todo[i]->msg);
            goto fail;
        }
    if (s && !s->readonly && job.n_todo) {
        cache_put cp = {files, n, started_ns - RACY_NS};
        if ((rc = store_write(s, cache_put_fn, &cp)))
            goto fail;
    }

    mi.files = calloc((size_t)n, sizeof *mi.files);
    mi.first_seen_path = realpath(dir, NULL);
    if (!mi.first_seen_path)
        mi.first_seen_path = strdup(dir);
    if (!mi.files || !mi.first_seen_path) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: model files", dir);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        mi.files[i].path = files[i].name;
        files[i].name = NULL;
        mi.files[i].size = (uint64_t)files[i].st.st_size;
        memcpy(mi.files[i].digest, files[i].digest, 32);
        mi.n_files++;
        if (hs) {
            hs->bytes_total += (uint64_t)files[i].st.st_size;
            hs->n_cached += files[i].cached;
        }
    }
    reap_model_id_from_files(mi.files, mi.n_files, &mi.id);
    if (hs) {
        hs->n_files = n;
        hs->bytes_hashed = job.bytes;
        hs->seconds = mono_s() - t0;
    }
    *out = mi;
    memset(&mi, 0, sizeof mi);
fail:
    reap_model_info_free(&mi);
    free(job.todo);
    free_files(files, n);
    return rc;
}

/* ---- calib_id -------------------------------------------------------------------- */

void reap_calib_id_compute(const reap_rows *rows, int pack, const uint8_t *tokenizer_digest,
                           reap_id *out)
{
    static const char tag[] = "reap-calib-id/1";
    crypto_generichash_state h;
    uint8_t head[9], b[4 * 1024];
    size_t T = (size_t)rows->n_rows * (size_t)rows->seq_len, k = 0;
    sodium_ready();
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)tag, sizeof tag - 1);
    store_be32(head, (uint32_t)rows->seq_len);
    head[4] = pack ? 1 : 0;
    store_be32(head + 5, (uint32_t)rows->n_rows);
    crypto_generichash_update(&h, head, sizeof head);
    for (size_t t = 0; t < T; t++) {
        uint32_t v = (uint32_t)rows->tokens[t];
        for (int i = 0; i < 4; i++)
            b[k++] = (uint8_t)(v >> (8 * i));
        if (k == sizeof b) {
            crypto_generichash_update(&h, b, k);
            k = 0;
        }
    }
    crypto_generichash_update(&h, b, k);
    crypto_generichash_update(&h, rows->mask, T);
    uint8_t has = tokenizer_digest ? 1 : 0;
    crypto_generichash_update(&h, &has, 1);
    if (tokenizer_digest)
        crypto_generichash_update(&h, tokenizer_digest, 32);
    /* Images (none: nothing more, so text-only ids are what they always were): each
     * image's grid, token count and file digest (not its path), then every span. */
    if (rows->n_images > 0 || rows->n_spans > 0) {
        static const char itag[] = "images";
        uint8_t e[52];
        crypto_generichash_update(&h, (const uint8_t *)itag, sizeof itag - 1);
        store_be32(e, (uint32_t)rows->n_images);
        store_be64(e + 4, (uint64_t)rows->n_spans);
        crypto_generichash_update(&h, e, 12);
        for (int32_t i = 0; i < rows->n_images; i++) {
            const reap_calib_image *im = &rows->images[i];
            store_be32(e, (uint32_t)im->grid_t);
            store_be32(e + 4, (uint32_t)im->grid_h);
            store_be32(e + 8, (uint32_t)im->grid_w);
            store_be64(e + 12, (uint64_t)im->n_tokens);
            memcpy(e + 20, im->digest, 32);
            crypto_generichash_update(&h, e, 52);
        }
        for (int64_t i = 0; i < rows->n_spans; i++) {
            store_be32(e, (uint32_t)rows->spans[i].row);
            store_be32(e + 4, (uint32_t)rows->spans[i].start);
            store_be32(e + 8, (uint32_t)rows->spans[i].image);
            crypto_generichash_update(&h, e, 12);
        }
    }
    crypto_generichash_final(&h, out->b, 32);
}

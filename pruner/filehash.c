/* filehash.c - file digests for manifests (see filehash.h). */
#include "filehash.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsopen.h"
#include "parallel.h"
#include "reap_err.h"

#define HASH_BUF (8u << 20)

int reap_sha256(const void *buf, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) || n != 32)
        return reap_err_set(REAP_E_INTERNAL, "libcrypto SHA-256 failed");
    return REAP_OK;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Status-change time: moves on every write, chmod, rename or utime; no user tool sets it
 * back, so it tells an in-place edit whose mtime was restored. */
static int64_t ctime_ns(const struct stat *st)
{
    return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           mtime_ns(a) == mtime_ns(b) && ctime_ns(a) == ctime_ns(b);
}

/* The digests one pass over a file feeds. */
typedef struct hash_state {
    int fd;                          /* the file, for dropping hashed pages */
    crypto_generichash_state *b2;    /* BLAKE2b-256, or NULL */
    EVP_MD_CTX *sh;                  /* SHA-256, or NULL */
} hash_state;

/* reap_chunk_fn: feed one chunk to the digests. */
static int hash_chunk(void *ud, const void *data, size_t n, uint64_t off)
{
    hash_state *hs = ud;
    if (hs->b2)
        crypto_generichash_update(hs->b2, data, (unsigned long long)n);
    if (hs->sh && !EVP_DigestUpdate(hs->sh, data, n))
        return reap_err_set(REAP_E_INTERNAL, "libcrypto SHA-256 failed");
    /* drop what was hashed from the page cache: memory stays flat on huge files */
    posix_fadvise(hs->fd, (off_t)off, (off_t)n, POSIX_FADV_DONTNEED);
    return REAP_OK;
}

/* Hash path in one pass; *before receives its stat at open, which must still hold at
 * the end. */
static int hash_path(const char *path, const reap_roots *roots, uint8_t b2out[32],
                     uint8_t shout[32], uint64_t *size, struct stat *before)
{
    int rc = REAP_OK;
    crypto_generichash_state b2;
    EVP_MD_CTX *sh = NULL;
    uint64_t total = 0;
    struct stat after;
    unsigned char *buf = malloc(HASH_BUF);
    int fd = -1;
    if (!buf) {
        rc = reap_err_set(REAP_E_NOMEM, "hash buffer");
        goto done;
    }
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        goto done;
    if (fstat(fd, before) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: stat: %s", path, strerror(errno));
        goto done;
    }
    if (sodium_init() < 0) {
        rc = reap_err_set(REAP_E_INTERNAL, "libsodium failed to initialise");
        goto done;
    }
    if (shout && (!(sh = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(sh, EVP_sha256(), NULL))) {
        rc = reap_err_set(REAP_E_INTERNAL, "libcrypto SHA-256 failed to initialise");
        goto done;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    crypto_generichash_init(&b2, NULL, 0, 32);
    hash_state hs = {.fd = fd, .b2 = b2out ? &b2 : NULL, .sh = sh};
    if ((rc = reap_read_chunks(fd, path, buf, HASH_BUF, hash_chunk, &hs, &total)))
        goto done;
    if (fstat(fd, &after) != 0 || !same_file(before, &after) ||
        (uint64_t)after.st_size != total) {
        rc = reap_err_set(REAP_E_IO, "%s: the file changed while it was hashed", path);
        goto done;
    }
    if (b2out)
        crypto_generichash_final(&b2, b2out, 32);
    unsigned int n = 0;
    if (sh && (!EVP_DigestFinal_ex(sh, shout, &n) || n != 32)) {
        rc = reap_err_set(REAP_E_INTERNAL, "libcrypto SHA-256 failed");
        goto done;
    }
    if (size)
        *size = total;
done:
    EVP_MD_CTX_free(sh);
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

int reap_hash_file(const char *path, uint8_t blake2b_256[32], uint8_t sha256[32],
                   uint64_t *size)
{
    return reap_hash_file_confined(path, NULL, blake2b_256, sha256, size);
}

int reap_hash_file_confined(const char *path, const reap_roots *roots,
                            uint8_t blake2b_256[32], uint8_t sha256[32], uint64_t *size)
{
    struct stat st;
    return hash_path(path, roots, blake2b_256, sha256, size, &st);
}

static void hash_job_run(reap_file_hash *j)
{
    char path[8192];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", j->dir, j->name);
    j->rc = hash_path(path, j->roots, j->b2, j->with_sha ? j->sh : NULL, &j->size, &st);
    if (j->rc) {
        snprintf(j->msg, sizeof j->msg, "%s", reap_err_msg());
        return;
    }
    j->dev = (uint64_t)st.st_dev;
    j->ino = (uint64_t)st.st_ino;
    j->mtime_ns = mtime_ns(&st);
    j->ctime_ns = ctime_ns(&st);
}

/* ---- many files on all cores -------------------------------------------------------- */

typedef struct hash_pool {
    reap_file_hash *jobs;
    size_t n;
    atomic_size_t next;
} hash_pool;

static void *pool_worker(void *ud)
{
    hash_pool *p = ud;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            return NULL;
        if (!p->jobs[i].done)
            hash_job_run(&p->jobs[i]);
    }
}

void reap_hash_files(reap_file_hash *jobs, size_t n)
{
    hash_pool pool = {jobs, n, 0};
    pthread_t th[8];
    int nt = reap_cpu_count();
    nt = nt < 1 ? 1 : nt > 8 ? 8 : nt;
    if ((size_t)nt > n)
        nt = (int)n;
    int started = 0;
    for (int t = 1; t < nt; t++)
        if (pthread_create(&th[started], NULL, pool_worker, &pool) == 0)
            started++;
    pool_worker(&pool);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
}

/* ---- the background hasher ---------------------------------------------------------- */

typedef struct hasher_item {
    reap_file_hash job;         /* dir and name point into the item's own copies */
    char *dir, *name;
    int done;                   /* hashed (under the lock) */
    struct hasher_item *next;
} hasher_item;

struct reap_hasher {
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    hasher_item *head, *tail;   /* every file added, in order */
    hasher_item *queue;         /* the first not yet taken by a worker */
    int busy, stop, n_threads;
    int n_done;
    uint64_t bytes_done;
    pthread_t th[8];
};

static void *hasher_worker(void *ud)
{
    reap_hasher *h = ud;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->queue && !h->stop)
            pthread_cond_wait(&h->work, &h->mu);
        if (!h->queue)
            break;
        hasher_item *it = h->queue;
        h->queue = it->next;
        h->busy++;
        pthread_mutex_unlock(&h->mu);
        hash_job_run(&it->job);
        pthread_mutex_lock(&h->mu);
        h->busy--;
        it->done = 1;
        h->n_done += !it->job.rc;
        h->bytes_done += it->job.rc ? 0 : it->job.size;
        if (!h->queue && !h->busy)
            pthread_cond_broadcast(&h->idle);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int reap_hasher_start(int threads, reap_hasher **out)
{
    *out = NULL;
    reap_hasher *h = calloc(1, sizeof *h);
    if (!h)
        return reap_err_set(REAP_E_NOMEM, "hasher: out of memory");
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->idle, NULL);
    threads = threads < 1 ? 1 : threads > 8 ? 8 : threads;
    for (int t = 0; t < threads; t++)
        if (pthread_create(&h->th[h->n_threads], NULL, hasher_worker, h) == 0)
            h->n_threads++;
    if (!h->n_threads) {
        reap_hasher_free(h);
        return reap_err_set(REAP_E_INTERNAL, "hasher: no thread could be started");
    }
    *out = h;
    return REAP_OK;
}

int reap_hasher_add(reap_hasher *h, const char *dir, const char *name, int with_sha)
{
    hasher_item *it = calloc(1, sizeof *it);
    if (!it || !(it->dir = strdup(dir)) || !(it->name = strdup(name))) {
        if (it) {
            free(it->dir);
            free(it);
        }
        return reap_err_set(REAP_E_NOMEM, "hasher: out of memory");
    }
    it->job = (reap_file_hash){.dir = it->dir, .name = it->name, .with_sha = with_sha};
    pthread_mutex_lock(&h->mu);
    if (h->tail)
        h->tail->next = it;
    else
        h->head = it;
    h->tail = it;
    if (!h->queue)
        h->queue = it;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
    return REAP_OK;
}

void reap_hasher_wait(reap_hasher *h)
{
    pthread_mutex_lock(&h->mu);
    while (h->queue || h->busy)
        pthread_cond_wait(&h->idle, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

const reap_file_hash *reap_hasher_find(reap_hasher *h, const char *dir, const char *name)
{
    char path[8192];
    struct stat st;
    const reap_file_hash *found = NULL;
    if (!h)
        return NULL;
    pthread_mutex_lock(&h->mu);
    for (hasher_item *it = h->head; it; it = it->next)
        if (it->done && !strcmp(it->dir, dir) && !strcmp(it->name, name))
            found = &it->job;  /* the last one added wins */
    pthread_mutex_unlock(&h->mu);
    if (!found || found->rc)
        return NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (stat(path, &st) != 0 || (uint64_t)st.st_dev != found->dev ||
        (uint64_t)st.st_ino != found->ino || (uint64_t)st.st_size != found->size ||
        mtime_ns(&st) != found->mtime_ns || ctime_ns(&st) != found->ctime_ns)
        return NULL;
    return found;
}

void reap_hasher_counts(reap_hasher *h, int *n_files, uint64_t *bytes)
{
    *n_files = 0;
    *bytes = 0;
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    *n_files = h->n_done;
    *bytes = h->bytes_done;
    pthread_mutex_unlock(&h->mu);
}

void reap_hasher_free(reap_hasher *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->queue = NULL; /* files not started are dropped */
    h->stop = 1;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->mu);
    for (int t = 0; t < h->n_threads; t++)
        pthread_join(h->th[t], NULL);
    for (hasher_item *it = h->head, *nx; it; it = nx) {
        nx = it->next;
        free(it->dir);
        free(it->name);
        free(it);
    }
    pthread_cond_destroy(&h->work);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

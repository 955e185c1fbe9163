/* hidden_ckpt.c - hidden-state checkpoint files: atomic write (temp, fsync, rename, fsync
 * the folder), newest-valid load, cleanup (hidden_ckpt.h). */
#include "hidden_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsopen.h"
#include "fsutil.h"
#include "reap_err.h"
#include "store_impl.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "hidden-state checkpoints are written in the host's float layout: little-endian only"
#endif

#define HDR_LEN 96
#define MAGIC "REAPHID1"
#define CKPT_VERSION 1
#define CHUNK ((size_t)8 << 20)

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void pair_dir(reap_store *s, const reap_id *m, const reap_id *c, char *out, size_t n)
{
    char mh[65], ch[65];
    reap_id_hex(m, mh);
    reap_id_hex(c, ch);
    snprintf(out, n, "%s/checkpoints/%s-%s", reap_store_dir(s), mh, ch);
}

/* mkdir that accepts an existing directory and makes a new entry durable. */
static int make_dir(const char *dir, const char *parent)
{
    if (mkdir(dir, 0755) == 0)
        return reap_fsync_dir(parent);
    if (errno == EEXIST)
        return REAP_OK;
    return reap_err_set(REAP_E_IO, "%s: cannot create: %s", dir, strerror(errno));
}

/* Parse "layer-LLLLL.bin"; -1 otherwise. */
static int name_layer(const char *name)
{
    int layer, used = 0;
    if (sscanf(name, "layer-%d.bin%n", &layer, &used) != 1 || name[used] != 0 || layer < 0)
        return -1;
    return layer;
}

/* Remove the pair's files except `keep` (NULL: remove all). */
static int remove_others(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[8192];
    int rc = REAP_OK;
    if (!d)
        return errno == ENOENT ? REAP_OK
                               : reap_err_set(REAP_E_IO, "%s: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (keep && !strcmp(e->d_name, keep))
            continue;
        if (name_layer(e->d_name) < 0 && !strstr(e->d_name, ".tmp"))
            continue; /* not ours */
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) && errno != ENOENT && !rc)
            rc = reap_err_set(REAP_E_IO, "%s: %s", p, strerror(errno));
    }
    closedir(d);
    return rc;
}

static void header(uint8_t h[HDR_LEN], const reap_id *m, const reap_id *c, int layer,
                   int64_t T, int H)
{
    memset(h, 0, HDR_LEN);
    memcpy(h, MAGIC, 8);
    le32(h + 8, CKPT_VERSION);
    le32(h + 12, (uint32_t)layer);
    le64(h + 16, (uint64_t)T);
    le32(h + 24, (uint32_t)H);
    memcpy(h + 32, m->b, 32);
    memcpy(h + 64, c->b, 32);
}

int reap_hidden_ckpt_write(reap_store *s, const reap_id *model, const reap_id *calib,
                           int layer, const float *hidden, int64_t T, int H)
{
    char root[4200], dir[4400], final[4600], name[64];
    uint8_t h[HDR_LEN], digest[32];
    crypto_generichash_state st;
    reap_atomic af = {.fd = -1};
    int rc = REAP_OK;
    if (layer < 0 || T < 1 || H < 1)
        return reap_err_set(REAP_E_INVALID, "checkpoint: layer %d, shape [%lld, %d]", layer,
                            (long long)T, H);
    snprintf(root, sizeof root, "%s/checkpoints", reap_store_dir(s));
    pair_dir(s, model, calib, dir, sizeof dir);
    snprintf(name, sizeof name, "layer-%05d.bin", layer);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    if ((rc = make_dir(root, reap_store_dir(s))) || (rc = make_dir(dir, root)) ||
        (!s->no_space_check &&
         (rc = reap_check_free_space(dir, HDR_LEN + (uint64_t)T * (uint64_t)H * sizeof(float) +
                                              32,
                                     "the hidden-state checkpoint"))))
        return rc;
    /* temp "<final>.tmp.<pid>": several scorers may checkpoint the same pair */
    if ((rc = reap_atomic_open(final, 0644, REAP_ATOMIC_PID_TMP, &af)))
        goto fail;
    int fd = af.fd;
    const char *tmp = af.tmp;
    header(h, model, calib, layer, T, H);
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, h, HDR_LEN);
    if ((rc = reap_write_all(fd, h, HDR_LEN, tmp)))
        goto fail;
    const uint8_t *p = (const uint8_t *)hidden;
    size_t left = (size_t)T * (size_t)H * sizeof(float);
    while (left) {
        size_t n = left < CHUNK ? left : CHUNK;
        crypto_generichash_update(&st, p, n);
        if ((rc = reap_write_all(fd, p, n, tmp)))
            goto fail;
        p += n;
        left -= n;
    }
    crypto_generichash_final(&st, digest, 32);
    if ((rc = reap_write_all(fd, digest, 32, tmp)))
        goto fail;
    /* fsync, rename over final, fsync dir; removes the temp file on failure */
    if ((rc = reap_atomic_commit(&af)))
        goto fail;
    rc = remove_others(dir, name);
fail:
    reap_atomic_abort(&af); /* no-op after the commit */
    return rc;
}

/* Why header h (the file's) differs from want (this pair, layer and shape). */
static void header_why(const uint8_t *h, const uint8_t *want, char *why, size_t n)
{
    if (memcmp(h, want, 8))
        snprintf(why, n, "not a hidden-state checkpoint (bad magic)");
    else if (memcmp(h + 8, want + 8, 4))
        snprintf(why, n, "format version %llu (this build reads %d)",
                 (unsigned long long)rd_le(h + 8, 4), CKPT_VERSION);
    else if (memcmp(h + 32, want + 32, 64))
        snprintf(why, n, "its header names another model or calibration set");
    else if (memcmp(h + 12, want + 12, 4))
        snprintf(why, n, "its header says layer %llu, its name layer %llu",
                 (unsigned long long)rd_le(h + 12, 4), (unsigned long long)rd_le(want + 12, 4));
    else if (memcmp(h + 16, want + 16, 12))
        snprintf(why, n, "its header says %llu tokens x hidden %llu, this run has %llu x %llu",
                 (unsigned long long)rd_le(h + 16, 8), (unsigned long long)rd_le(h + 24, 4),
                 (unsigned long long)rd_le(want + 16, 8),
                 (unsigned long long)rd_le(want + 24, 4));
    else
        snprintf(why, n, "damaged header");
}

/* Read and check one checkpoint file; *out malloc'd on success. 0, or -1 (unusable: why
 * says what is wrong with it). */
static int load_one(const char *path, const reap_id *m, const reap_id *c, int layer,
                    int64_t T, int H, float **out, char *why, size_t why_n)
{
    uint8_t h[HDR_LEN], want[HDR_LEN], digest[32], stored[32];
    crypto_generichash_state st;
    size_t bytes = (size_t)T * (size_t)H * sizeof(float);
    uint64_t need = HDR_LEN + (uint64_t)bytes + 32;
    struct stat sb;
    float *buf = NULL;
    int ok = -1, fd = -1;
    if (reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd)) {   /* never waits on a FIFO */
        snprintf(why, why_n, "cannot be opened: %s", reap_err_msg());
        return -1;
    }
    header(want, m, c, layer, T, H);
    if (fstat(fd, &sb)) {
        snprintf(why, why_n, "stat: %s", strerror(errno));
        goto fail;
    }
    if ((uint64_t)sb.st_size != need) {
        /* the header, when there is one, tells another shape from a cut-short file */
        if ((uint64_t)sb.st_size >= HDR_LEN && !reap_read_full(fd, h, HDR_LEN, path) &&
            memcmp(h, want, HDR_LEN))
            header_why(h, want, why, why_n);
        else
            snprintf(why, why_n, "%llu bytes where a checkpoint of %lld x %d floats has "
                     "%llu (cut short or grown)", (unsigned long long)sb.st_size,
                     (long long)T, H, (unsigned long long)need);
        goto fail;
    }
    if (reap_read_full(fd, h, HDR_LEN, path)) {
        snprintf(why, why_n, "read error");
        goto fail;
    }
    if (memcmp(h, want, HDR_LEN)) {
        header_why(h, want, why, why_n);
        goto fail;
    }
    if (!(buf = malloc(bytes ? bytes : 1))) {
        snprintf(why, why_n, "out of memory for %zu bytes", bytes);
        goto fail;
    }
    if (reap_read_full(fd, buf, bytes, path) || reap_read_full(fd, stored, 32, path)) {
        snprintf(why, why_n, "read error");
        goto fail;
    }
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, h, HDR_LEN);
    for (size_t off = 0; off < bytes; off += CHUNK)
        crypto_generichash_update(&st, (const uint8_t *)buf + off,
                                  bytes - off < CHUNK ? bytes - off : CHUNK);
    crypto_generichash_final(&st, digest, 32);
    if (memcmp(digest, stored, 32)) {
        snprintf(why, why_n, "its contents do not match its BLAKE2b-256 digest (damaged)");
        goto fail;
    }
    *out = buf;
    buf = NULL;
    ok = 0;
fail:
    free(buf);
    close(fd);
    return ok;
}

static int int_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

int reap_hidden_ckpt_load(reap_store *s, const reap_id *model, const reap_id *calib,
                          int max_layer, int64_t T, int H, reap_hidden_ckpt_reject_cb on_reject,
                          void *ud, int *layer, float **hidden)
{
    char dir[4400], p[4600];
    DIR *d;
    struct dirent *e;
    int *layers = NULL, n = 0, cap = 0, rc = REAP_E_NOTFOUND;
    *hidden = NULL;
    *layer = -1;
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    pair_dir(s, model, calib, dir, sizeof dir);
    if (!(d = opendir(dir)))
        return REAP_E_NOTFOUND;
    while ((e = readdir(d))) {
        int l = name_layer(e->d_name);
        if (l < 0 || l > max_layer)
            continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 8;
            int *nl = realloc(layers, (size_t)nc * sizeof *nl);
            if (!nl) {
                rc = reap_err_set(REAP_E_NOMEM, "%s: checkpoint list", dir);
                goto fail;
            }
            layers = nl;
            cap = nc;
        }
        layers[n++] = l;
    }
    if (n > 1)
        qsort(layers, (size_t)n, sizeof *layers, int_desc);
    for (int i = 0; i < n; i++) {
        char why[256] = "";
        snprintf(p, sizeof p, "%s/layer-%05d.bin", dir, layers[i]);
        if (!load_one(p, model, calib, layers[i], T, H, hidden, why, sizeof why)) {
            *layer = layers[i];
            rc = REAP_OK;
            break;
        }
        if (on_reject)
            on_reject(ud, p, why);
    }
fail:
    closedir(d);
    free(layers);
    return rc;
}

int reap_store_pair_lock(reap_store *s, const reap_id *model, const reap_id *calib, int *fd)
{
    char root[4200], dir[4400], path[4600], pid[32];
    int rc, lfd;
    *fd = -1;
    snprintf(root, sizeof root, "%s/checkpoints", reap_store_dir(s));
    pair_dir(s, model, calib, dir, sizeof dir);
    snprintf(path, sizeof path, "%s.lock", dir);
    if ((rc = make_dir(root, reap_store_dir(s))))
        return rc;
    lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0)
        return reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        ssize_t n = pread(lfd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(lfd);
        if (e == EWOULDBLOCK)
            return reap_err_set(REAP_E_CONFLICT, "this model and calibration set are being "
                                "scored by another run (process %s) on this store",
                                *pid ? pid : "?");
        return reap_err_set(REAP_E_IO, "%s: flock: %s", path, strerror(e));
    }
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(lfd, 0) || pwrite(lfd, pid, (size_t)len, 0) != len) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
        close(lfd);
        return rc;
    }
    *fd = lfd;
    return REAP_OK;
}

void reap_store_pair_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}

int reap_hidden_ckpt_clear(reap_store *s, const reap_id *model, const reap_id *calib)
{
    char dir[4400];
    int rc;
    pair_dir(s, model, calib, dir, sizeof dir);
    if ((rc = remove_others(dir, NULL)))
        return rc;
    if (rmdir(dir) && errno != ENOENT && errno != ENOTEMPTY)
        return reap_err_set(REAP_E_IO, "%s: %s", dir, strerror(errno));
    return REAP_OK;
}

/* test_store_ident.c - model_id and calib_id: the id of a checkpoint does not depend on
 * where it lies or on the hashing thread count, changes with any weight byte; the
 * file-hash cache is used (nothing re-read) and keyed so that a modified file is hashed
 * again, an in-place edit with the mtime restored too (ctime), and records without a
 * ctime are never used; recently modified files are not cached; file digests equal
 * libsodium's BLAKE2b of the bytes; calib_id tells packing, length and token changes
 * apart. */
#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "calib.h"
#include "genmodel.h"
#include "identity.h"
#include "reap_store.pb-c.h"
#include "test_store_util.h"
#include "test_util.h"

/* Set every file's mtime an hour back and wait until their ctime (set to now by the
 * touch; nothing sets it back) is out of the 2 s "racy" window the cache skips: the
 * clock must pass a point, polled with a generous deadline. */
static void wait_ctime_settled(const char *dir)
{
    char cmd[4200];
    struct dirent *e;
    int64_t newest = 0;
    DIR *d = opendir(dir);
    while (d && (e = readdir(d))) {
        struct stat st;
        snprintf(cmd, sizeof cmd, "%s/%s", dir, e->d_name);
        if (stat(cmd, &st) == 0) {
            int64_t c = ts_ns(st.st_ctim);
            newest = c > newest ? c : newest;
        }
    }
    if (d)
        closedir(d);
    if (!wait_clock_past(CLOCK_REALTIME, newest + 2200000000LL, 12000))
        fprintf(stderr, "clock did not pass the racy window\n");
}

static void age_files(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "touch -d '1 hour ago' '%s'/*", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "touch failed\n");
    wait_ctime_settled(dir);
}

/* Change one byte at `off` of path in place, restoring its atime and mtime (as `touch -d`
 * or utime(2) can): only the ctime tells the file changed. */
static void edit_keep_mtime(const char *path, long off)
{
    struct stat st;
    uint8_t byte;
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0 && fstat(fd, &st) == 0 && pread(fd, &byte, 1, off) == 1);
    byte ^= 0x5a;
    CHECK(pwrite(fd, &byte, 1, off) == 1);
    close(fd);
    struct timespec t[2] = {st.st_atim, st.st_mtim};
    CHECK(utimensat(AT_FDCWD, path, t, 0) == 0);
    struct stat now;
    CHECK(stat(path, &now) == 0 && now.st_size == st.st_size &&
          now.st_mtim.tv_sec == st.st_mtim.tv_sec && now.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
}

/* Turn every file-hash record of the store in st_dir into one written before records
 * held a ctime (ctime_ns 0) and give it a marker digest: such records must never be
 * used. The store must be closed. Returns the number of records rewritten. */
static int make_legacy_records(const char *st_dir)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t keys[16][32], *vals[16];
    size_t lens[16];
    int n = 0;
    CHECK(mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 16) == 0);
    CHECK(mdb_env_open(env, st_dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0 && mdb_dbi_open(txn, "filehash", 0, &dbi) == 0);
    CHECK(mdb_cursor_open(txn, dbi, &cur) == 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && n < 16;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Reap__Store__V1__FileHashRecord *m =
            reap__store__v1__file_hash_record__unpack(NULL, v.mv_size, v.mv_data);
        CHECK(m != NULL && k.mv_size == 32 && m->ctime_ns != 0 && m->digest.len == 32);
        if (!m || k.mv_size != 32 || m->digest.len != 32)
            break;
        m->ctime_ns = 0;
        memset(m->digest.data, 0xab, 32);
        memcpy(keys[n], k.mv_data, 32);
        lens[n] = reap__store__v1__file_hash_record__get_packed_size(m);
        vals[n] = malloc(lens[n]);
        reap__store__v1__file_hash_record__pack(m, vals[n]);
        reap__store__v1__file_hash_record__free_unpacked(m, NULL);
        n++;
    }
    mdb_cursor_close(cur);
    for (int i = 0; i < n; i++) {
        MDB_val nk = {32, keys[i]}, nv = {lens[i], vals[i]};
        CHECK(mdb_put(txn, dbi, &nk, &nv, 0) == 0);
        free(vals[i]);
    }
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    return n;
}

static void test_model_id(void)
{
    char a[1024], b[1024], st_dir[1024], p[2048], cmd[4200];
    reap_gen_spec spec;
    reap_model_info ma = {0}, mb = {0}, mc = {0};
    reap_hash_stats hs;
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1};
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_shards = 3;
    spath(a, sizeof a, "model_a");
    spath(b, sizeof b, "model_b");
    spath(st_dir, sizeof st_dir, "store");
    CHECK_RC(reap_gen_model(&spec, a), REAP_OK);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", a, b);
    CHECK(system(cmd) == 0);

    /* Same bytes elsewhere, any thread count: same id. No store: no cache. */
    CHECK_RC(reap_model_identify(NULL, a, 1, &ma, &hs), REAP_OK);
    CHECK(ma.n_files == 5); /* config, index, 3 shards */
    CHECK(hs.n_cached == 0 && hs.bytes_hashed == hs.bytes_total && hs.bytes_total > 0);
    CHECK_RC(reap_model_identify(NULL, b, 3, &mb, NULL), REAP_OK);
    CHECK(!memcmp(ma.id.b, mb.id.b, 32));
    for (int i = 1; i < ma.n_files; i++)
        CHECK(strcmp(ma.files[i - 1].path, ma.files[i].path) < 0);
    /* Per-file digests are BLAKE2b-256 of the bytes. */
    uint8_t d[32];
    snprintf(p, sizeof p, "%s/%s", a, ma.files[0].path);
    CHECK_RC(reap_file_digest(p, d), REAP_OK);
    CHECK(!memcmp(d, ma.files[0].digest, 32));
    FILE *f = fopen(p, "rb");
    unsigned char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    crypto_generichash(d, 32, buf, n, NULL, 0);
    CHECK(!memcmp(d, ma.files[0].digest, 32));
    reap_model_info_free(&mb);

    /* One byte of one shard changed: another id. */
    snprintf(p, sizeof p, "%s/model-00002-of-00003.safetensors", b);
    int fd = open(p, O_RDWR);
    uint8_t byte;
    CHECK(fd >= 0 && pread(fd, &byte, 1, 1000) == 1);
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, 1000) == 1);
    close(fd);
    CHECK_RC(reap_model_identify(NULL, b, 2, &mb, NULL), REAP_OK);
    CHECK(memcmp(ma.id.b, mb.id.b, 32) != 0);
    reap_model_info_free(&mb);

    /* The cache: fresh files are not cached; aged files are, and then not re-read. */
    CHECK_RC(reap_store_open(st_dir, &create, &s), REAP_OK);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK(hs.n_cached == 0);
    reap_model_info_free(&mc);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK_MSG(hs.n_cached == 0, "racy files cached: %d", hs.n_cached);
    reap_model_info_free(&mc);
    age_files(a);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK(hs.n_cached == 0 && hs.bytes_hashed == hs.bytes_total);
    reap_model_info_free(&mc);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK_MSG(hs.n_cached == 5 && hs.bytes_hashed == 0, "cached %d, hashed %llu",
              hs.n_cached, (unsigned long long)hs.bytes_hashed);
    CHECK(!memcmp(mc.id.b, ma.id.b, 32));
    reap_model_info_free(&mc);
    /* Rewriting a file (new mtime) misses the cache for that file only. */
    snprintf(p, sizeof p, "%s/config.json", a);
    snprintf(cmd, sizeof cmd, "touch -d '30 minutes ago' '%s'", p);
    CHECK(system(cmd) == 0);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK(hs.n_cached == 4 && hs.bytes_hashed > 0 && !memcmp(mc.id.b, ma.id.b, 32));
    reap_model_info_free(&mc);

    /* An in-place edit of a shard with its size, atime and mtime restored (same key):
     * the ctime changed, so the shard is hashed again and the id is the new bytes'.
     * (config.json is not cached either: its ctime, set by the touch above, is recent.) */
    snprintf(p, sizeof p, "%s/model-00003-of-00003.safetensors", a);
    edit_keep_mtime(p, 1000);
    reap_model_info mn = {0}, me = {0};
    CHECK_RC(reap_model_identify(NULL, a, 2, &mn, NULL), REAP_OK); /* the truth */
    CHECK(memcmp(mn.id.b, ma.id.b, 32) != 0);
    CHECK_RC(reap_model_identify(s, a, 2, &me, &hs), REAP_OK);
    CHECK_MSG(hs.n_cached == 3, "edited shard trusted from the cache: %d cached",
              hs.n_cached);
    CHECK_MSG(!memcmp(me.id.b, mn.id.b, 32), "model_id is not the edited bytes' id");
    reap_model_info_free(&me);
    reap_model_info_free(&mn);
    edit_keep_mtime(p, 1000); /* back to the original bytes */
    wait_ctime_settled(a);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK); /* caches the two */
    CHECK(!memcmp(mc.id.b, ma.id.b, 32));
    reap_model_info_free(&mc);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK(hs.n_cached == 5);
    reap_model_info_free(&mc);
    reap_store_close(s);
    s = NULL;

    /* Records written before records held a ctime (ctime_ns 0; here with a marker
     * digest) under the files' current keys are never used: every file is hashed again
     * and the records replaced. */
    CHECK(make_legacy_records(st_dir) >= 5); /* 6: config.json under two mtimes */
    CHECK_RC(reap_store_open(st_dir, NULL, &s), REAP_OK);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK_MSG(hs.n_cached == 0 && hs.bytes_hashed == hs.bytes_total,
              "legacy records trusted: %d cached", hs.n_cached);
    CHECK(!memcmp(mc.id.b, ma.id.b, 32));
    reap_model_info_free(&mc);
    CHECK_RC(reap_model_identify(s, a, 2, &mc, &hs), REAP_OK);
    CHECK(hs.n_cached == 5 && !memcmp(mc.id.b, ma.id.b, 32));
    reap_model_info_free(&mc);

    /* Not a checkpoint. */
    CHECK_RC(reap_model_identify(s, st_dir, 2, &mc, NULL), REAP_E_NOTFOUND);
    CHECK_ERRMSG("config.json");
    snprintf(p, sizeof p, "%s/nope", scratch);
    CHECK_RC(reap_model_identify(s, p, 2, &mc, NULL), REAP_E_NOTFOUND);
    reap_store_close(s);
    reap_model_info_free(&ma);
}

static void test_calib_id(void)
{
    char p[1024];
    reap_samples smp = {0};
    reap_rows packed = {0}, unpacked = {0}, shorter = {0};
    reap_id a, b, c, d, e;
    spath(p, sizeof p, "calib.jsonl");
    CHECK_RC(reap_gen_calib(p, 10, 3, 40, 100, 7), REAP_OK);
    CHECK_RC(reap_samples_read_jsonl(p, 0, 100, &smp), REAP_OK);
    CHECK_RC(reap_rows_build(&smp, 32, 1, &packed), REAP_OK);
    CHECK_RC(reap_rows_build(&smp, 32, 0, &unpacked), REAP_OK);
    CHECK_RC(reap_rows_build(&smp, 31, 1, &shorter), REAP_OK);
    reap_calib_id_compute(&packed, 1, NULL, &a);
    reap_calib_id_compute(&packed, 1, NULL, &b);
    CHECK(!memcmp(a.b, b.b, 32));
    reap_calib_id_compute(&unpacked, 0, NULL, &c);
    reap_calib_id_compute(&shorter, 1, NULL, &d);
    CHECK(memcmp(a.b, c.b, 32) && memcmp(a.b, d.b, 32));
    uint8_t tok[32] = {1};
    reap_calib_id_compute(&packed, 1, tok, &e);
    CHECK(memcmp(a.b, e.b, 32) != 0);
    packed.tokens[5] ^= 1;
    reap_calib_id_compute(&packed, 1, NULL, &e);
    CHECK(memcmp(a.b, e.b, 32) != 0);
    packed.tokens[5] ^= 1;
    packed.mask[packed.seq_len - 1] ^= 1;
    reap_calib_id_compute(&packed, 1, NULL, &e);
    CHECK(memcmp(a.b, e.b, 32) != 0);
    reap_rows_free(&packed);
    reap_rows_free(&unpacked);
    reap_rows_free(&shorter);
    reap_samples_free(&smp);
}

/* The calib_id of text-only rows is what it was before images existed (ids already in
 * stores must not change): a pinned value for a small set, computed by the code before
 * image spans were hashed. Images then change the id: their digests, their grids and
 * where their spans sit. */
static void test_calib_id_images(void)
{
    int32_t tokens[8] = {1, 2, 3, 0, 4, 5, 0, 0};
    uint8_t mask[8] = {1, 1, 1, 0, 1, 1, 0, 0};
    reap_calib_image im[1] = {{.path = "a.png", .line = 1, .grid_t = 1, .grid_h = 2,
                               .grid_w = 4, .n_tokens = 2, .digest = {7}}};
    reap_image_span sp[1] = {{.row = 1, .start = 0, .image = 0}};
    reap_rows r = {.n_rows = 2, .seq_len = 4, .tokens = tokens, .mask = mask, .n_valid = 5};
    reap_id text, a, b;
    char hex[65];

    reap_calib_id_compute(&r, 1, NULL, &text);
    reap_id_hex(&text, hex);
    CHECK_MSG(!strcmp(hex, "ea393f5bd50e84ea27ef0d863bcbba0a4ab59698771ddd1fc09638a6e4917dcd"), "text-only calib_id %s changed", hex);
    r.n_images = 1;
    r.images = im;
    r.n_spans = 1;
    r.spans = sp;
    reap_calib_id_compute(&r, 1, NULL, &a);
    CHECK(memcmp(a.b, text.b, 32) != 0);
    im[0].path = "elsewhere/a.png";                 /* the path is not the identity */
    im[0].line = 9;
    reap_calib_id_compute(&r, 1, NULL, &b);
    CHECK(!memcmp(a.b, b.b, 32));
    im[0].digest[0] ^= 1;                           /* other bytes */
    reap_calib_id_compute(&r, 1, NULL, &b);
    CHECK(memcmp(a.b, b.b, 32) != 0);
    im[0].digest[0] ^= 1;
    im[0].grid_h = 4;                               /* other grid, same token count */
    im[0].grid_w = 2;
    reap_calib_id_compute(&r, 1, NULL, &b);
    CHECK(memcmp(a.b, b.b, 32) != 0);
    im[0].grid_h = 2;
    im[0].grid_w = 4;
    sp[0].start = 1;                                /* the span elsewhere */
    reap_calib_id_compute(&r, 1, NULL, &b);
    CHECK(memcmp(a.b, b.b, 32) != 0);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_ident";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_model_id();
    test_calib_id();
    test_calib_id_images();
    TEST_MAIN_END();
}

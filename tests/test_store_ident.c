/* test_store_ident.c - model_id and calib_id: the id of a checkpoint does not depend on
 * where it lies or on the hashing thread count, changes with any weight byte; the
 * file-hash cache is used (nothing re-read) and keyed so that a modified file is hashed
 * again; recently modified files are not cached; file digests equal libsodium's BLAKE2b
 * of the bytes; calib_id tells packing, length and token changes apart. */
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "calib.h"
#include "genmodel.h"
#include "identity.h"
#include "test_store_util.h"
#include "test_util.h"

/* Set every file's mtime an hour back (out of the "racy" window the cache skips). */
static void age_files(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "touch -d '1 hour ago' '%s'/*", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "touch failed\n");
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

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_ident";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_model_id();
    test_calib_id();
    TEST_MAIN_END();
}

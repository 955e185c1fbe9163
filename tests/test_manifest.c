/* test_manifest.c - minisign-format keys and signatures, and the signed manifest of an
 * output directory: sign/verify round trip, every tampering caught (a file's bytes, a
 * missing or an extra file, the manifest, the trusted comment, the signature, another
 * key), secret keys as `minisign -G -W` writes them (zero checksum) accepted, corrupt
 * and encrypted keys refused. (The stock minisign binary checks our signatures in the
 * integration test tests/prune_cli.sh.) Digests computed earlier (the background
 * hasher's, the caller's input digests) are reused only while they still hold (an
 * in-place edit with the mtime restored included: the ctime tells).
 * Statistics of another checkpoint (stats_model_id) are recorded in the manifest and the
 * trusted comment, and such an output verifies.
 *
 * Usage: test_manifest SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keepset.h"
#include "manifest.h"
#include "minisign.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

static void count_line(void *ud, const char *subject, const char *text)
{
    (void)subject;
    (void)text;
    (*(int *)ud)++;
}

/* A keep set of one layer (0): 3 of 4 experts kept (keep[3]), top-k 2, ratio 0.25. */
static reap_keepset keep_3_of_4(reap_keep_layer *kl, int *keep)
{
    reap_keepset ks = {0};
    kl->layer = 0;
    kl->keep = keep;
    ks.n_layers = 1;
    ks.layers = kl;
    ks.n_experts = 4;
    ks.n_keep = 3;
    ks.n_prune = 1;
    ks.top_k = 2;
    ks.ratio = 0.25;
    return ks;
}

static void test_keys(void)
{
    char pub[REAP_MINISIGN_PUB_B64_LEN + 1];
    reap_sign_key sk;
    reap_pub_key pk, pk2;
    const char *prefix = sp("k1");
    unlink(sp("k1.key"));
    unlink(sp("k1.pub"));
    CHECK_RC(reap_minisign_keygen(prefix, 0, pub), REAP_OK);
    CHECK(strlen(pub) == REAP_MINISIGN_PUB_B64_LEN && !strncmp(pub, "RW", 2));
    CHECK_RC(reap_minisign_keygen(prefix, 0, NULL), REAP_E_INVALID);
    CHECK_ERRMSG("already exists");
    struct stat sb;
    CHECK(stat(sp("k1.key"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK_RC(reap_minisign_load_secret(sp("k1.key"), &sk), REAP_OK);
    CHECK_RC(reap_minisign_load_public(sp("k1.pub"), &pk), REAP_OK);
    CHECK_RC(reap_minisign_load_public(pub, &pk2), REAP_OK);
    CHECK(!memcmp(&pk, &pk2, sizeof pk));
    reap_pub_key derived;
    reap_minisign_public_of(&sk, &derived);
    CHECK(!memcmp(&derived, &pk, sizeof pk));
    char b64[REAP_MINISIGN_PUB_B64_LEN + 1];
    reap_minisign_public_b64(&pk, b64);
    CHECK(!strcmp(b64, pub));
    char *pubfile = slurp(sp("k1.pub"), NULL);
    CHECK(pubfile && !strncmp(pubfile, "untrusted comment: minisign public key ", 39));
    if (pubfile && strchr(pubfile, '\n')) {
        /* The comment's key id is the one inside the key: bytes 2..9 of the decoded public
         * key, read little-endian and printed as 16 upper-case hex digits, as minisign
         * -G does. (It was 0000000000000000: the id was read from a wiped buffer.) */
        const char *b64 = strchr(pubfile, '\n') + 1;
        uint8_t bin[64];
        size_t n = 0;
        char want[17], got[17] = {0};
        CHECK(sodium_base642bin(bin, sizeof bin, b64, strcspn(b64, "\r\n"), NULL, &n, NULL,
                                sodium_base64_VARIANT_ORIGINAL) == 0 && n == 42);
        for (int i = 0; i < 8; i++)
            snprintf(want + 2 * i, 3, "%02X", bin[9 - i]);
        sscanf(pubfile + 39, "%16s", got);
        CHECK_MSG(!strcmp(got, want), "comment key id %s, key's id %s", got, want);
        CHECK(strcmp(got, "0000000000000000") != 0);
        CHECK(pubfile[39 + 16] == '\n');
        char id[17];
        reap_minisign_key_id(pk.keynum, id);
        CHECK_MSG(!strcmp(id, want), "reap_minisign_key_id %s, want %s", id, want);
    }
    free(pubfile);

    /* the secret key as minisign -G -W writes it: checksum left zero */
    char *text = slurp(sp("k1.key"), NULL);
    char *nl = text ? strchr(text, '\n') : NULL;
    CHECK(nl != NULL);
    if (nl) {
        unsigned char bin[158];
        size_t len = 0;
        char *end = strchr(nl + 1, '\n');
        if (end)
            *end = '\0';
        CHECK(sodium_base642bin(bin, sizeof bin, nl + 1, strlen(nl + 1), NULL, &len, NULL,
                                sodium_base64_VARIANT_ORIGINAL) == 0 && len == 158);
        char line[512], out[1024];
        memset(bin + 126, 0, 32);
        sodium_bin2base64(line, sizeof line, bin, 158, sodium_base64_VARIANT_ORIGINAL);
        snprintf(out, sizeof out, "untrusted comment: minisign encrypted secret key\n%s\n", line);
        write_text(sp("w.key"), out);
        reap_sign_key sk2;
        CHECK_RC(reap_minisign_load_secret(sp("w.key"), &sk2), REAP_OK);
        CHECK(!memcmp(&sk2, &sk, sizeof sk));
        /* a wrong checksum, a flipped secret-key byte, an encrypted key */
        memset(bin + 126, 1, 32);
        sodium_bin2base64(line, sizeof line, bin, 158, sodium_base64_VARIANT_ORIGINAL);
        snprintf(out, sizeof out, "untrusted comment: x\n%s\n", line);
        write_text(sp("bad.key"), out);
        CHECK_RC(reap_minisign_load_secret(sp("bad.key"), &sk2), REAP_E_FORMAT);
        CHECK_ERRMSG("checksum");
        memset(bin + 126, 0, 32);
        bin[62 + 40] ^= 1; /* public half of sk */
        sodium_bin2base64(line, sizeof line, bin, 158, sodium_base64_VARIANT_ORIGINAL);
        snprintf(out, sizeof out, "untrusted comment: x\n%s\n", line);
        write_text(sp("bad.key"), out);
        CHECK_RC(reap_minisign_load_secret(sp("bad.key"), &sk2), REAP_E_FORMAT);
        CHECK_ERRMSG("disagree");
        memcpy(bin + 2, "Sc", 2);
        sodium_bin2base64(line, sizeof line, bin, 158, sodium_base64_VARIANT_ORIGINAL);
        snprintf(out, sizeof out, "untrusted comment: x\n%s\n", line);
        write_text(sp("bad.key"), out);
        CHECK_RC(reap_minisign_load_secret(sp("bad.key"), &sk2), REAP_E_UNSUPPORTED);
        CHECK_ERRMSG("encrypted");
        sodium_memzero(bin, sizeof bin);
    }
    free(text);
    write_text(sp("bad.key"), "hello\nworld\n");
    CHECK_RC(reap_minisign_load_secret(sp("bad.key"), &sk), REAP_E_FORMAT);
    CHECK_RC(reap_minisign_load_public("RWnotakey", &pk2), REAP_E_FORMAT);

    /* sign / verify a file */
    reap_minisign_load_secret(sp("k1.key"), &sk);
    write_text(sp("msg.txt"), "hello\n");
    CHECK_RC(reap_minisign_sign_file(&sk, sp("msg.txt"), sp("msg.txt.minisig"), "tc one",
                                     "uc"), REAP_OK);
    char tc[256] = "";
    CHECK_RC(reap_minisign_verify_file(&pk, sp("msg.txt"), sp("msg.txt.minisig"), tc,
                                       sizeof tc), REAP_OK);
    CHECK(!strcmp(tc, "tc one"));
    CHECK_RC(reap_minisign_sign_file(&sk, sp("msg.txt"), sp("x.minisig"), "two\nlines", "u"),
             REAP_E_INVALID);
    write_text(sp("msg.txt"), "hellO\n");
    CHECK_RC(reap_minisign_verify_file(&pk, sp("msg.txt"), sp("msg.txt.minisig"), NULL, 0),
             REAP_E_INVALID);
    CHECK_ERRMSG("signature verification failed");
    reap_sign_key_wipe(&sk);
}

static void test_manifest_dir(void)
{
    char dir[8192], in[8192];
    snprintf(dir, sizeof dir, "%s", sp("outdir"));
    snprintf(in, sizeof in, "%s", sp("indir"));
    CHECK(rm_rf(dir) == 0 && rm_rf(in) == 0);
    CHECK(mkdir(dir, 0755) == 0 && mkdir(in, 0755) == 0);
    char p[8400];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, "{\"num_experts\": 4}\n");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_text(p, "weights weights");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_text(p, "{}");
    snprintf(p, sizeof p, "%s/config.json", in);
    write_text(p, "{\"num_experts\": 8}\n");
    snprintf(p, sizeof p, "%s/model.safetensors", in);
    write_text(p, "more weights");
    snprintf(p, sizeof p, "%s/notes.txt", in); /* not an input file */
    write_text(p, "x");

    reap_sign_key sk, other;
    reap_pub_key pk, opk;
    unlink(sp("k2.key"));
    unlink(sp("k2.pub"));
    CHECK_RC(reap_minisign_keygen(sp("k2"), 1, NULL), REAP_OK);
    CHECK_RC(reap_minisign_load_secret(sp("k1.key"), &sk), REAP_OK);
    CHECK_RC(reap_minisign_load_secret(sp("k2.key"), &other), REAP_OK);
    reap_minisign_public_of(&sk, &pk);
    reap_minisign_public_of(&other, &opk);
    reap_keep_layer kl = {0};
    int keep[3] = {0, 2, 3};
    reap_keepset ks = keep_3_of_4(&kl, keep);
    const char *calib[2] = {"c1", "c2"};
    reap_manifest_inputs mi = {"m0del", calib, 2, "00ff", NULL, NULL, 0, NULL, NULL};
    char digest[65];
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, &sk, digest), REAP_OK);
    snprintf(p, sizeof p, "%s/%s", dir, REAP_MANIFEST_NAME);
    char *man = slurp(p, NULL);
    CHECK(man && strstr(man, "\"model.safetensors\"") && strstr(man, "\"sha256\"") &&
          strstr(man, "\"c2\"") && strstr(man, "\"m0del\"") && !strstr(man, "notes.txt") &&
          strstr(man, "\"keep_sets\""));
    CHECK_MSG(man && !strstr(man, "balance_modalities"), "balance_modalities written unset");
    {   /* --balance-modalities is recorded in the parameters only when set */
        ks.balance_modalities = 1;
        CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, &sk, digest), REAP_OK);
        char *man2 = slurp(p, NULL);
        CHECK(man2 && strstr(man2, "\"balance_modalities\": true"));
        free(man2);
        ks.balance_modalities = 0;
        CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, &sk, digest), REAP_OK);
        free(man);   /* the manifest of this last write (its timestamp) is the one below */
        man = slurp(p, NULL);
        CHECK(man && !strstr(man, "balance_modalities"));
    }
    int n = 0;
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, count_line, &n, NULL), REAP_OK);
    CHECK(n == 0);
    char sig[8400], tc[512];
    snprintf(sig, sizeof sig, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    CHECK_RC(reap_minisign_verify_file(&pk, p, sig, tc, sizeof tc), REAP_OK);
    CHECK(strstr(tc, digest) && strstr(tc, "model_id=m0del"));

    /* another key */
    n = 0;
    CHECK_RC(reap_manifest_verify_dir(dir, &opk, count_line, &n, NULL), REAP_E_INVALID);
    CHECK(n == 1);
    CHECK_ERRMSG("signed by key");

    /* a changed file, an extra file, a missing file */
    char f1[8400], f2[8400], f3[8400];
    snprintf(f1, sizeof f1, "%s/model.safetensors", dir);
    snprintf(f2, sizeof f2, "%s/extra.txt", dir);
    snprintf(f3, sizeof f3, "%s/tokenizer.json", dir);
    write_text(f1, "weights weightz");
    write_text(f2, "x");
    unlink(f3);
    n = 0;
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, count_line, &n, NULL), REAP_E_INVALID);
    CHECK(n == 3);
    write_text(f1, "weights weights");
    write_text(f3, "{}");
    unlink(f2);
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, NULL, NULL, &n), REAP_OK);

    /* the manifest itself changed (one byte), the trusted comment changed */
    char *orig_sig = slurp(sig, NULL);
    FILE *mf = fopen(p, "a"); /* one more byte: still valid JSON, another file */
    CHECK(mf && fputc(' ', mf) == ' ');
    if (mf)
        fclose(mf);
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, NULL, NULL, &n), REAP_E_INVALID);
    CHECK_ERRMSG("signature verification failed");
    write_text(p, man);
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, NULL, NULL, &n), REAP_OK);
    char *tcl = orig_sig ? strstr(orig_sig, "timestamp=") : NULL;
    CHECK(tcl != NULL);
    if (tcl) {
        tcl[10] = tcl[10] == '1' ? '2' : '1';
        write_text(sig, orig_sig);
        CHECK_RC(reap_manifest_verify_dir(dir, &pk, NULL, NULL, &n), REAP_E_INVALID);
        CHECK_ERRMSG("trusted comment");
    }
    /* a signature file missing */
    unlink(sig);
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, NULL, NULL, &n), REAP_E_INVALID);
    CHECK_ERRMSG("missing");
    /* no signature check requested: files still verified */
    CHECK_RC(reap_manifest_verify_dir(dir, NULL, NULL, NULL, &n), REAP_OK);
    /* statistics of another checkpoint, used deliberately: their model_id is a field of
     * the signed manifest and of the trusted comment, and the output verifies */
    const char *foreign = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789cdef";
    mi.stats_model_id = foreign;
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, &sk, digest), REAP_OK);
    json_error_t je;
    json_t *doc = json_load_file(p, 0, &je);
    json_t *inputs = json_object_get(doc, "inputs");
    CHECK(json_is_string(json_object_get(inputs, "stats_model_id")) &&
          !strcmp(json_string_value(json_object_get(inputs, "stats_model_id")), foreign) &&
          !strcmp(json_string_value(json_object_get(inputs, "model_id")), "m0del"));
    json_decref(doc);
    CHECK_RC(reap_minisign_verify_file(&pk, p, sig, tc, sizeof tc), REAP_OK);
    CHECK(strstr(tc, "model_id=m0del ") && strstr(tc, digest) && strstr(tc, "stats_model_id=") &&
          !strcmp(strstr(tc, "stats_model_id=") + 15, foreign));
    n = 0;
    CHECK_RC(reap_manifest_verify_dir(dir, &pk, count_line, &n, NULL), REAP_OK);
    CHECK(n == 0);
    mi.stats_model_id = NULL;   /* and without it the field is absent */
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, &sk, digest), REAP_OK);
    char *plain = slurp(p, NULL);
    CHECK(plain && !strstr(plain, "stats_model_id"));
    free(plain);
    /* a directory with no manifest */
    CHECK_RC(reap_manifest_verify_dir(in, &pk, NULL, NULL, &n), REAP_E_NOTFOUND);
    free(orig_sig);
    free(man);
    reap_sign_key_wipe(&sk);
    reap_sign_key_wipe(&other);
}

/* Digests computed earlier are reused, never trusted blindly: output files the background
 * hasher digested (a file changed since is hashed again), input files the caller knows
 * (one of another size is hashed again). Entries are compared with those of a manifest
 * that hashed everything itself. */
static json_t *entry_of(json_t *arr, const char *path)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *ep = json_string_value(json_object_get(e, "path"));
        if (ep && !strcmp(ep, path))
            return e;
    }
    return NULL;
}

/* Bytes this process has read through read(2) and friends so far (/proc/self/io rchar);
 * -1 when unknown. */
static long long proc_rchar(void)
{
    long long v = -1;
    char line[128];
    FILE *f = fopen("/proc/self/io", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %lld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* Whether manifest file `path` lists input `name` with BLAKE2b-256 `hex`. */
static int input_digest_is(const char *path, const char *name, const char *hex)
{
    json_t *m = json_load_file(path, 0, NULL);
    json_t *e = m ? entry_of(json_object_get(json_object_get(m, "inputs"), "files"), name)
                  : NULL;
    const char *got = json_string_value(json_object_get(e, "blake2b_256"));
    int ok = got && !strcmp(got, hex);
    json_decref(m);
    return ok;
}

static void test_manifest_reuse(void)
{
    char dir[8192], in[8192], p[8400];
    snprintf(dir, sizeof dir, "%s", sp("reuse-out"));
    snprintf(in, sizeof in, "%s", sp("reuse-in"));
    CHECK(rm_rf(dir) == 0 && rm_rf(in) == 0);
    CHECK(mkdir(dir, 0755) == 0 && mkdir(in, 0755) == 0);
    const char *outs[3] = {"config.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, outs[i]);
        write_text(p, i == 0 ? "{\"num_experts\": 3}\n" : i == 1 ? "shard one" : "shard two");
    }
    snprintf(p, sizeof p, "%s/config.json", in);
    write_text(p, "{\"num_experts\": 4}\n");
    snprintf(p, sizeof p, "%s/model.safetensors", in);
    write_text(p, "input weights");
    reap_keep_layer kl = {0};
    int keep[3] = {0, 1, 3};
    reap_keepset ks = keep_3_of_4(&kl, keep);

    /* Everything hashed here: the reference. */
    reap_manifest_inputs mi = {"m", NULL, 0, NULL, NULL, NULL, 0, NULL, NULL};
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, NULL, NULL, NULL), REAP_OK);
    snprintf(p, sizeof p, "%s/%s", dir, REAP_MANIFEST_NAME);
    json_t *ref = json_load_file(p, 0, NULL);
    CHECK(ref != NULL);
    unlink(p);

    /* Shards pre-hashed (the second then changed), inputs known: config.json by its true
     * digest, model.safetensors once with its size and a marker digest (used as it is:
     * the file is not read again), once with another size (hashed again). */
    reap_hasher *h = NULL;
    CHECK_RC(reap_hasher_start(1, &h), REAP_OK);
    CHECK_RC(reap_hasher_add(h, dir, outs[1], 1), REAP_OK);
    CHECK_RC(reap_hasher_add(h, dir, outs[2], 1), REAP_OK);
    CHECK_RC(reap_hasher_add(h, dir, outs[0], 0), REAP_OK); /* no SHA-256: not enough */
    reap_hasher_wait(h);
    snprintf(p, sizeof p, "%s/%s", dir, outs[2]);
    write_text(p, "shard two, changed");
    reap_known_file known[2] = {{"config.json", 19, {0}}, {"model.safetensors", 13, {0}}};
    snprintf(p, sizeof p, "%s/config.json", in);
    CHECK_RC(reap_hash_file(p, known[0].blake2b_256, NULL, NULL), REAP_OK);
    memset(known[1].blake2b_256, 0xab, 32);
    mi.files = known;
    mi.n_files = 2;
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, h, NULL, NULL), REAP_OK);
    snprintf(p, sizeof p, "%s/%s", dir, REAP_MANIFEST_NAME);
    json_t *got = json_load_file(p, 0, NULL);
    CHECK(got != NULL);
    if (ref && got) {
        json_t *rf = json_object_get(ref, "files"), *gf = json_object_get(got, "files");
        json_t *ri = json_object_get(json_object_get(ref, "inputs"), "files");
        json_t *gi = json_object_get(json_object_get(got, "inputs"), "files");
        CHECK(json_array_size(gf) == 3 && json_array_size(gi) == 2);
        CHECK(json_equal(entry_of(rf, outs[0]), entry_of(gf, outs[0])));
        CHECK(json_equal(entry_of(rf, outs[1]), entry_of(gf, outs[1])));
        /* the changed shard: its new size and digests, not the hasher's */
        json_t *c = entry_of(gf, outs[2]);
        CHECK(c && json_integer_value(json_object_get(c, "size")) == 18 &&
              !json_equal(entry_of(rf, outs[2]), c));
        CHECK(json_equal(entry_of(ri, "config.json"), entry_of(gi, "config.json")));
        const char *mark = json_string_value(
            json_object_get(entry_of(gi, "model.safetensors"), "blake2b_256"));
        CHECK(mark && !strncmp(mark, "abababab", 8));
    }
    CHECK_RC(reap_manifest_verify_dir(dir, NULL, NULL, NULL, NULL), REAP_OK);
    json_decref(got);

    /* A known size that is not the file's: hashed again, the reference digest. */
    known[1].size = 14;
    unlink(p);
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, h, NULL, NULL), REAP_OK);
    got = json_load_file(p, 0, NULL);
    if (ref && got)
        CHECK(json_equal(
            entry_of(json_object_get(json_object_get(ref, "inputs"), "files"),
                     "model.safetensors"),
            entry_of(json_object_get(json_object_get(got, "inputs"), "files"),
                     "model.safetensors")));
    json_decref(got);

    /* No known inputs, the hasher digested one (BLAKE2b only, as inputs need): used, not
     * read again (this process's read count, /proc/self/io rchar, grows by less than the
     * input's 4 MiB while the manifest is written). Then its bytes change in place with
     * its size, atime and mtime restored: the ctime tells, and the manifest has the new
     * bytes' digest, not the hasher's. */
    char ip[8400];
    struct stat ist;
    size_t big = 4u << 20;
    uint8_t d_old[32], d_new[32];
    char hx[65];
    unsigned char *wb = malloc(big);
    CHECK(wb != NULL);
    if (!wb)
        return;
    for (size_t i = 0; i < big; i++)
        wb[i] = (unsigned char)(i * 131u >> 3);
    snprintf(ip, sizeof ip, "%s/model.safetensors", in);
    FILE *wf = fopen(ip, "wb");
    CHECK(wf && fwrite(wb, 1, big, wf) == big && fclose(wf) == 0);
    CHECK_RC(reap_hash_file(ip, d_old, NULL, NULL), REAP_OK);
    CHECK_RC(reap_hasher_add(h, in, "model.safetensors", 0), REAP_OK);
    reap_hasher_wait(h);
    mi.files = NULL;
    mi.n_files = 0;
    unlink(p);
    long long r0 = proc_rchar();
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, h, NULL, NULL), REAP_OK);
    long long r1 = proc_rchar();
    CHECK_MSG(r0 >= 0 && r1 - r0 < (long long)big, "input read again: %lld bytes",
              r1 - r0);
    reap_hex(d_old, 32, hx);
    CHECK(input_digest_is(p, "model.safetensors", hx));

    /* The in-place edit, once the kernel's timestamp clock is past the file's ctime (so
     * the edit's ctime is another one; the clock must pass a point: polled). */
    CHECK(stat(ip, &ist) == 0);
    CHECK(wait_clock_past(CLOCK_REALTIME_COARSE, ts_ns(ist.st_ctim), 5000));
    wf = fopen(ip, "r+b");
    CHECK(wf && fputs("INPUT", wf) >= 0 && fclose(wf) == 0);
    struct timespec times[2] = {ist.st_atim, ist.st_mtim};
    CHECK(utimensat(AT_FDCWD, ip, times, 0) == 0);
    CHECK_RC(reap_hash_file(ip, d_new, NULL, NULL), REAP_OK);
    CHECK(memcmp(d_old, d_new, 32) != 0);
    unlink(p);
    CHECK_RC(reap_manifest_write(dir, in, &ks, &mi, h, NULL, NULL), REAP_OK);
    reap_hex(d_new, 32, hx);
    CHECK_MSG(input_digest_is(p, "model.safetensors", hx),
              "the manifest signs the hasher's digest of the bytes before the edit");
    free(wb);
    json_decref(ref);
    reap_hasher_free(h);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_manifest";
    if (make_dirs(scratch) != 0) {
        perror(scratch);
        return 1;
    }
    if (sodium_init() < 0)
        return 1;
    test_keys();
    test_manifest_dir();
    test_manifest_reuse();
    TEST_MAIN_END();
}

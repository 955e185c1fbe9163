/* minisign.c - minisign-compatible Ed25519 keys and prehashed signatures with libsodium
 * (formats in minisign.h). */
#include "minisign.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsopen.h"
#include "fsutil.h"
#include "reap_err.h"

#define SK_BYTES 158
#define SIG_BYTES 74
#define PK_BYTES 42

static int init_sodium(void)
{
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium failed to initialise");
    return REAP_OK;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void reap_minisign_key_id(const uint8_t keynum[8], char *buf)
{
    snprintf(buf, 17, "%016" PRIX64, le64(keynum));
}

void reap_sign_key_wipe(reap_sign_key *k)
{
    if (k)
        sodium_memzero(k, sizeof *k);
}

static void sk_chk(const uint8_t keynum[8], const uint8_t sk[64], uint8_t chk[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"Ed", 2);
    crypto_generichash_update(&st, keynum, 8);
    crypto_generichash_update(&st, sk, 64);
    crypto_generichash_final(&st, chk, 32);
}

/* Read at most `lines` lines of a small text file into buf (NUL-terminated lines). */
static int read_lines(const char *path, const reap_roots *roots,
                      char lines[][REAP_MINISIGN_MAX_COMMENT * 8], int want, int *got)
{
    FILE *f = NULL;
    int rc;
    if ((rc = reap_fopen_read(path, roots, &f)))
        return rc;
    *got = 0;
    while (*got < want && fgets(lines[*got], REAP_MINISIGN_MAX_COMMENT * 8, f)) {
        char *s = lines[*got];
        size_t l = strlen(s);
        while (l && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ' ||
                     s[l - 1] == '\t'))
            s[--l] = '\0';
        (*got)++;
    }
    fclose(f);
    return REAP_OK;
}

static int b64_decode(const char *s, uint8_t *out, size_t want)
{
    size_t len = 0;
    if (sodium_base642bin(out, want, s, strlen(s), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 || len != want)
        return -1;
    return 0;
}

static void b64_encode(const uint8_t *bin, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, bin, n, sodium_base64_VARIANT_ORIGINAL);
}

int reap_minisign_keygen(const char *prefix, int force, char *pub_b64)
{
    int rc;
    char kpath[4096], ppath[4096];
    uint8_t skb[SK_BYTES] = {0}, pkb[PK_BYTES];
    char skline[256], pkline[REAP_MINISIGN_PUB_B64_LEN + 1], text[1024];
    if ((rc = init_sodium()))
        return rc;
    if (snprintf(kpath, sizeof kpath, "%s.key", prefix) >= (int)sizeof kpath ||
        snprintf(ppath, sizeof ppath, "%s.pub", prefix) >= (int)sizeof ppath)
        return reap_err_set(REAP_E_INVALID, "key prefix too long");
    if (!force && (access(kpath, F_OK) == 0 || access(ppath, F_OK) == 0))
        return reap_err_set(REAP_E_INVALID, "%s or %s already exists (use --force to "
                            "replace the key pair)", kpath, ppath);
    uint8_t *keynum = skb + 54, *sk = skb + 62, pk[32];
    memcpy(skb, "Ed\0\0B2", 6);
    randombytes_buf(keynum, 8);
    crypto_sign_keypair(pk, sk);
    sk_chk(keynum, sk, skb + 126);
    memcpy(pkb, "Ed", 2);
    memcpy(pkb + 2, keynum, 8);
    memcpy(pkb + 10, pk, 32);
    b64_encode(skb, SK_BYTES, skline, sizeof skline);
    b64_encode(pkb, PK_BYTES, pkline, sizeof pkline);
    snprintf(text, sizeof text, "untrusted comment: minisign secret key (unencrypted)\n%s\n",
             skline);
    rc = reap_write_atomic(kpath, text, strlen(text), 0600);
    sodium_memzero(skb, sizeof skb);
    sodium_memzero(skline, sizeof skline);
    sodium_memzero(text, sizeof text);
    if (rc)
        return rc;
    /* The key id from the public key: keynum points into skb, wiped above. */
    snprintf(text, sizeof text, "untrusted comment: minisign public key %016" PRIX64 "\n%s\n",
             le64(pkb + 2), pkline);
    if ((rc = reap_write_atomic(ppath, text, strlen(text), 0644)))
        return rc;
    if (pub_b64)
        memcpy(pub_b64, pkline, sizeof pkline);
    return REAP_OK;
}

int reap_minisign_load_secret(const char *path, reap_sign_key *out)
{
    int rc, got;
    static _Thread_local char lines[2][REAP_MINISIGN_MAX_COMMENT * 8];
    uint8_t skb[SK_BYTES], chk[32], pk[32];
    memset(out, 0, sizeof *out);
    if ((rc = init_sodium()) || (rc = read_lines(path, NULL, lines, 2, &got)))
        return rc;
    if (got < 2 || strncmp(lines[0], "untrusted comment:", 18) ||
        b64_decode(lines[1], skb, SK_BYTES)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a minisign secret key file", path);
        goto done;
    }
    if (memcmp(skb, "Ed", 2) || memcmp(skb + 4, "B2", 2)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: unsupported key algorithm", path);
        goto done;
    }
    if (!memcmp(skb + 2, "Sc", 2)) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "%s: the secret key is password-encrypted; "
                          "make an unencrypted one (reapctl keygen, or minisign -G -W)", path);
        goto done;
    }
    if (memcmp(skb + 2, "\0\0", 2)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: unknown key derivation function", path);
        goto done;
    }
    memcpy(out->keynum, skb + 54, 8);
    memcpy(out->sk, skb + 62, 64);
    sk_chk(out->keynum, out->sk, chk);
    static const uint8_t zero[32];
    if (memcmp(skb + 126, zero, 32) && memcmp(skb + 126, chk, 32)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: secret key checksum mismatch (corrupted key)",
                          path);
        goto done;
    }
    crypto_sign_ed25519_sk_to_pk(pk, out->sk);
    uint8_t seed[32], pk2[32], sk2[64];
    crypto_sign_ed25519_sk_to_seed(seed, out->sk);
    crypto_sign_seed_keypair(pk2, sk2, seed);
    int bad = memcmp(pk, pk2, 32) != 0;
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk2, sizeof sk2);
    if (bad) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: secret and public halves of the key disagree",
                          path);
        goto done;
    }
    rc = REAP_OK;
done:
    sodium_memzero(skb, sizeof skb);
    sodium_memzero(lines, sizeof lines);
    if (rc)
        reap_sign_key_wipe(out);
    return rc;
}

void reap_minisign_public_of(const reap_sign_key *sk, reap_pub_key *out)
{
    memcpy(out->keynum, sk->keynum, 8);
    crypto_sign_ed25519_sk_to_pk(out->pk, sk->sk);
}

void reap_minisign_public_b64(const reap_pub_key *pk, char *buf)
{
    uint8_t pkb[PK_BYTES];
    memcpy(pkb, "Ed", 2);
    memcpy(pkb + 2, pk->keynum, 8);
    memcpy(pkb + 10, pk->pk, 32);
    b64_encode(pkb, PK_BYTES, buf, REAP_MINISIGN_PUB_B64_LEN + 1);
}

int reap_minisign_load_public(const char *file_or_b64, reap_pub_key *out)
{
    int rc, got = 0;
    static _Thread_local char lines[2][REAP_MINISIGN_MAX_COMMENT * 8];
    uint8_t pkb[PK_BYTES];
    const char *b64 = file_or_b64;
    if ((rc = init_sodium()))
        return rc;
    if (access(file_or_b64, F_OK) == 0) {
        if ((rc = read_lines(file_or_b64, NULL, lines, 2, &got)))
            return rc;
        if (got < 2 || strncmp(lines[0], "untrusted comment:", 18))
            return reap_err_set(REAP_E_FORMAT, "%s: not a minisign public key file",
                                file_or_b64);
        b64 = lines[1];
    }
    if (b64_decode(b64, pkb, PK_BYTES) || memcmp(pkb, "Ed", 2))
        return reap_err_set(REAP_E_FORMAT, "%s: not a minisign public key (file or base64 "
                            "string starting with RW)", file_or_b64);
    memcpy(out->keynum, pkb + 2, 8);
    memcpy(out->pk, pkb + 10, 32);
    return REAP_OK;
}

static int blake2b512_file(const char *path, const reap_roots *roots, uint8_t out[64]);

int reap_blake2b512_file(const char *path, uint8_t out[64])
{
    return blake2b512_file(path, NULL, out);
}

/* reap_chunk_fn: feed one chunk to the BLAKE2b state ud. */
static int blake2b_chunk(void *ud, const void *data, size_t n, uint64_t off)
{
    (void)off;
    crypto_generichash_update(ud, data, (unsigned long long)n);
    return REAP_OK;
}

static int blake2b512_file(const char *path, const reap_roots *roots, uint8_t out[64])
{
    int rc = REAP_OK;
    crypto_generichash_state st;
    unsigned char *buf = malloc(1u << 20);
    int fd = -1;
    if (!buf) {
        rc = reap_err_set(REAP_E_NOMEM, "hash buffer");
        goto done;
    }
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        goto done;
    if ((rc = init_sodium()))
        goto done;
    crypto_generichash_init(&st, NULL, 0, 64);
    if ((rc = reap_read_chunks(fd, path, buf, 1u << 20, blake2b_chunk, &st, NULL)))
        goto done;
    crypto_generichash_final(&st, out, 64);
done:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static int comment_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return strlen(s) < 8000;
}

int reap_minisign_sign_file(const reap_sign_key *key, const char *file, const char *sig_path,
                            const char *trusted_comment, const char *untrusted_comment)
{
    int rc;
    uint8_t hash[64], sigb[SIG_BYTES], global[64];
    unsigned char *buf = NULL;
    char *text = NULL;
    if (!comment_ok(trusted_comment) || !comment_ok(untrusted_comment) ||
        strlen(untrusted_comment) > 900)
        return reap_err_set(REAP_E_INVALID, "signature comments must be printable single "
                            "lines");
    if ((rc = init_sodium()) || (rc = reap_blake2b512_file(file, hash)))
        return rc;
    memcpy(sigb, "ED", 2);
    memcpy(sigb + 2, key->keynum, 8);
    crypto_sign_detached(sigb + 10, NULL, hash, 64, key->sk);
    size_t tl = strlen(trusted_comment);
    buf = malloc(64 + tl);
    text = malloc(tl + 2048);
    if (!buf || !text) {
        rc = reap_err_set(REAP_E_NOMEM, "signature: out of memory");
        goto done;
    }
    memcpy(buf, sigb + 10, 64);
    memcpy(buf + 64, trusted_comment, tl);
    crypto_sign_detached(global, NULL, buf, 64 + tl, key->sk);
    char s1[128], s2[128];
    b64_encode(sigb, SIG_BYTES, s1, sizeof s1);
    b64_encode(global, 64, s2, sizeof s2);
    snprintf(text, tl + 2048, "untrusted comment: %s\n%s\ntrusted comment: %s\n%s\n",
             untrusted_comment, s1, trusted_comment, s2);
    rc = reap_write_atomic(sig_path, text, strlen(text), 0644);
done:
    free(buf);
    free(text);
    return rc;
}

int reap_minisign_verify_file(const reap_pub_key *pk, const char *file, const char *sig_path,
                              char *trusted, size_t cap)
{
    return reap_minisign_verify_file_confined(pk, file, sig_path, NULL, trusted, cap);
}

int reap_minisign_verify_file_confined(const reap_pub_key *pk, const char *file,
                                       const char *sig_path, const reap_roots *roots,
                                       char *trusted, size_t cap)
{
    int rc, got;
    static _Thread_local char lines[4][REAP_MINISIGN_MAX_COMMENT * 8];
    uint8_t sigb[SIG_BYTES], global[64], hash[64];
    unsigned char *buf = NULL;
    if ((rc = init_sodium()) || (rc = read_lines(sig_path, roots, lines, 4, &got)))
        return rc;
    if (got < 4 || strncmp(lines[0], "untrusted comment:", 18) ||
        strncmp(lines[2], "trusted comment: ", 17) || b64_decode(lines[1], sigb, SIG_BYTES) ||
        b64_decode(lines[3], global, 64))
        return reap_err_set(REAP_E_FORMAT, "%s: not a minisign signature file", sig_path);
    if (memcmp(sigb, "ED", 2))
        return reap_err_set(REAP_E_FORMAT, "%s: signature algorithm is not prehashed "
                            "Ed25519 (\"ED\")", sig_path);
    if (memcmp(sigb + 2, pk->keynum, 8))
        return reap_err_set(REAP_E_INVALID, "%s: signed by key %016" PRIX64 ", but the public "
                            "key is %016" PRIX64, sig_path, le64(sigb + 2), le64(pk->keynum));
    if ((rc = blake2b512_file(file, roots, hash)))
        return rc;
    if (crypto_sign_verify_detached(sigb + 10, hash, 64, pk->pk) != 0)
        return reap_err_set(REAP_E_INVALID, "%s: signature verification failed (the file "
                            "was changed or the signature is not for it)", file);
    const char *tc = lines[2] + 17;
    size_t tl = strlen(tc);
    if (!(buf = malloc(64 + tl)))
        return reap_err_set(REAP_E_NOMEM, "signature: out of memory");
    memcpy(buf, sigb + 10, 64);
    memcpy(buf + 64, tc, tl);
    int bad = crypto_sign_verify_detached(global, buf, 64 + tl, pk->pk) != 0;
    free(buf);
    if (bad)
        return reap_err_set(REAP_E_INVALID, "%s: trusted comment signature verification "
                            "failed (the trusted comment was changed)", sig_path);
    if (trusted && cap)
        snprintf(trusted, cap, "%s", tc);
    return REAP_OK;
}

/* minisign.h - Ed25519 keys and signatures in minisign's formats (libsodium), so that
 * the stock `minisign -Vm FILE -P KEY` checks what reap signs.
 *
 *   public key file   "untrusted comment: minisign public key <KEYID hex>\n"
 *                     base64("Ed" || keynum[8] || pk[32]) "\n"
 *   secret key file   "untrusted comment: ...\n" base64 of 158 bytes:
 *                     "Ed" || kdf "\0\0" (unencrypted, as `minisign -G -W` writes) ||
 *                     "B2" || salt[32] || opslimit[8] || memlimit[8] || keynum[8] ||
 *                     sk[64] || chk[32], chk = BLAKE2b-256("Ed" || keynum || sk)
 *                     (minisign -W leaves chk zero; both are accepted on reading)
 *   signature file    "untrusted comment: ...\n" base64("ED" || keynum || sig[64]) "\n"
 *                     "trusted comment: <text>\n" base64(global_sig[64]) "\n"
 *                     sig = Ed25519(BLAKE2b-512(file)) ("ED": prehashed),
 *                     global_sig = Ed25519(sig || trusted comment text)
 *
 * Thread rules: no shared state (libsodium is initialised on first use, thread-safe).
 * Secret key material is wiped from memory by reap_sign_key_wipe.
 */
#ifndef REAP_MINISIGN_H
#define REAP_MINISIGN_H

#include <stddef.h>
#include <stdint.h>

#include "fsopen.h"

/* Return codes: every function that returns a code may also return REAP_E_INTERNAL when
 * libsodium cannot be initialised; the lists below leave that out. */

typedef struct reap_sign_key {
    uint8_t keynum[8];
    uint8_t sk[64];           /* libsodium secret key: seed || public key */
} reap_sign_key;

typedef struct reap_pub_key {
    uint8_t keynum[8];
    uint8_t pk[32];
} reap_pub_key;

#define REAP_MINISIGN_PUB_B64_LEN 56  /* characters of the base64 public key */
#define REAP_MINISIGN_MAX_COMMENT 1024

/* Make a new key pair and write PREFIX.key (mode 0600, unencrypted) and PREFIX.pub.
 * Existing files are an error unless force. pub_b64 (may be NULL) receives the base64
 * public key (REAP_MINISIGN_PUB_B64_LEN + 1 bytes).
 * Returns REAP_OK, REAP_E_INVALID (a file exists), REAP_E_IO. */
int reap_minisign_keygen(const char *prefix, int force, char *pub_b64);

/* Read a secret key file (as written above or by `minisign -G -W`).
 * Returns REAP_OK, REAP_E_IO, REAP_E_FORMAT (not a minisign key, bad checksum, secret
 * and public halves that disagree), REAP_E_UNSUPPORTED (a password-encrypted key). */
int reap_minisign_load_secret(const char *path, reap_sign_key *out);

/* The public half of a secret key. */
void reap_minisign_public_of(const reap_sign_key *sk, reap_pub_key *out);

/* A public key from a file, or from the base64 string itself (as minisign -P takes).
 * Returns REAP_OK, REAP_E_IO, REAP_E_FORMAT. */
int reap_minisign_load_public(const char *file_or_b64, reap_pub_key *out);

/* The base64 form of a public key (buf of REAP_MINISIGN_PUB_B64_LEN + 1 bytes). */
void reap_minisign_public_b64(const reap_pub_key *pk, char *buf);

/* The key id as minisign prints it (the 8 key-number bytes read as a little-endian
 * integer, 16 upper-case hex digits; e.g. the .pub comment line) into buf of 17 bytes. */
void reap_minisign_key_id(const uint8_t keynum[8], char *buf);

/* Sign `file` into `sig_path` (prehashed, atomically: temp file, fsync, rename) with the
 * given trusted comment (printable, no newline, < 8 KiB) and an untrusted comment.
 * Returns REAP_OK, REAP_E_INVALID (bad comment), REAP_E_IO, REAP_E_NOMEM. */
int reap_minisign_sign_file(const reap_sign_key *key, const char *file, const char *sig_path,
                            const char *trusted_comment, const char *untrusted_comment);

/* Verify `sig_path` over `file` with `pk`: algorithm "ED", key id, file signature, then
 * the trusted comment's signature. trusted (may be NULL) receives the trusted comment
 * (cap bytes). Returns REAP_OK, REAP_E_IO, REAP_E_FORMAT (malformed signature file),
 * REAP_E_INVALID (wrong key id or a signature that does not verify; the message says
 * which), REAP_E_NOMEM. */
int reap_minisign_verify_file(const reap_pub_key *pk, const char *file, const char *sig_path,
                              char *trusted, size_t cap);

/* reap_minisign_verify_file for a service: both files must be regular files (a FIFO is
 * REAP_E_INVALID, without waiting) under `roots` once their links are resolved
 * (fsopen.h; NULL: unconfined), else REAP_E_DENIED. Otherwise as
 * reap_minisign_verify_file. */
int reap_minisign_verify_file_confined(const reap_pub_key *pk, const char *file,
                                       const char *sig_path, const reap_roots *roots,
                                       char *trusted, size_t cap);

/* BLAKE2b-512 of a file (minisign's prehash). REAP_OK, REAP_E_IO, REAP_E_NOMEM. */
int reap_blake2b512_file(const char *path, uint8_t out[64]);

void reap_sign_key_wipe(reap_sign_key *k);

#endif

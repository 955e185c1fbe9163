/* fuzz_minisign.c - the minisign file readers: public key file, public key string,
 * signature file (verified over a fixed file with the harness's public key), secret key
 * file. The first input byte picks the reader (mod 4), the rest is the file or string.
 *
 * A public key string that names an existing file is read as that file (minisign.h);
 * strings that name one are skipped here (the file reader has its own mode), so no
 * other file is ever read.
 */
#include "fuzz_keys.h"
#include "fuzz_util.h"
#include "minisign.h"
#include "reap_err.h"

static reap_pub_key pk;
static char signed_path[8192];

static void setup(void)
{
    fuzz_path(signed_path, sizeof signed_path, "signed.bin");
    fuzz_write_file(signed_path, FUZZ_SIGNED_TEXT, strlen(FUZZ_SIGNED_TEXT));
    if (reap_minisign_load_public(FUZZ_PUB_B64, &pk) != REAP_OK) {
        fprintf(stderr, "fuzz_minisign: %s\n", reap_err_msg());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    static int ready;
    reap_pub_key got;
    reap_sign_key sk;
    char trusted[32], b64[REAP_MINISIGN_PUB_B64_LEN + 1], *s;

    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    switch (data[0] & 3) {
    case 0:
        if (FUZZ_RC(reap_minisign_load_public(fuzz_memfd_set(&in, data + 1, size - 1), &got)) ==
            REAP_OK)
            reap_minisign_public_b64(&got, b64);
        break;
    case 1:
        if (!(s = malloc(size)))
            return 0;
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        if (access(s, F_OK) != 0 && FUZZ_RC(reap_minisign_load_public(s, &got)) == REAP_OK)
            reap_minisign_public_b64(&got, b64);
        free(s);
        break;
    case 2:
        (void)FUZZ_RC(reap_minisign_verify_file(&pk, signed_path,
                                                fuzz_memfd_set(&in, data + 1, size - 1),
                                                trusted, sizeof trusted));
        break;
    default:
        if (FUZZ_RC(reap_minisign_load_secret(fuzz_memfd_set(&in, data + 1, size - 1), &sk)) ==
            REAP_OK) {
            reap_minisign_public_of(&sk, &got);
            reap_sign_key_wipe(&sk);
        }
        break;
    }
    return 0;
}

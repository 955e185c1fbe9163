/* fuzz_manifest.c - reap_manifest_verify_dir() on a directory whose reap-manifest.json
 * (and signature) are the input: the manifest's JSON, its file entries against two fixed
 * files (a.bin, b.bin), and the minisign signature with the harness's public key.
 *
 * Input: the manifest bytes, optionally followed by a NUL byte and the bytes of
 * reap-manifest.json.minisig; without a NUL there is no signature file and the signature
 * is not checked.
 */
#include "fuzz_keys.h"
#include "fuzz_util.h"
#include "manifest.h"
#include "reap_err.h"

static char dir[8192], sig_path[8192];
static reap_pub_key pk;

static void setup(void)
{
    char p[8192];

    fuzz_path(dir, sizeof dir, "out");
    if (mkdir(dir, 0700) != 0)
        fuzz_die_(dir);
    snprintf(p, sizeof p, "%s/a.bin", dir);
    fuzz_write_file(p, "alpha\n", 6);
    snprintf(p, sizeof p, "%s/b.bin", dir);
    fuzz_write_file(p, "beta\n", 5);
    snprintf(sig_path, sizeof sig_path, "%s/" REAP_MANIFEST_SIG_NAME, dir);
    if (reap_minisign_load_public(FUZZ_PUB_B64, &pk) != REAP_OK) {
        fprintf(stderr, "fuzz_manifest: %s\n", reap_err_msg());
        abort();
    }
}

static void count_line(void *ud, const char *subject, const char *text)
{
    if (!subject[0] || !text[0])
        abort();                /* every problem names its subject and says what */
    ++*(int *)ud;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file man, sig;
    static int ready;
    const uint8_t *tail;
    size_t head, tail_len;
    int lines = 0, n = 0, rc;

    if (!ready) {
        setup();
        ready = 1;
    }
    fuzz_split_nul(data, size, &head, &tail, &tail_len);
    fuzz_named_set(&man, "out/" REAP_MANIFEST_NAME, data, head);
    if (tail)
        fuzz_named_set(&sig, "out/" REAP_MANIFEST_SIG_NAME, tail, tail_len);
    else if (sig.fd > 0) {
        close(sig.fd);
        sig.fd = 0;
        unlink(sig_path);
    }
    rc = FUZZ_RC(reap_manifest_verify_dir(dir, tail ? &pk : NULL, count_line, &lines, &n));
    if (lines != n || (rc == REAP_OK && n) || (rc == REAP_E_INVALID && !n))
        abort();                /* the count and the status agree with the lines */
    return 0;
}

/* cmd_keygen.c - `reapctl keygen --out PREFIX`: a new Ed25519 key pair in minisign's
 * formats (PREFIX.key, unencrypted, mode 0600; PREFIX.pub) for signing manifests. */
#include <stdio.h>

#include "cli.h"
#include "minisign.h"
#include "reap_err.h"
#include "reapctl_cmds.h"

int cmd_keygen(int argc, char **argv)
{
    const char *prefix = NULL;
    int force = 0, help = 0;
    char err[512], pub[REAP_MINISIGN_PUB_B64_LEN + 1];
    const cli_opt opts[] = {
        {"out", NULL, CLI_STR, NULL, "write PREFIX.key and PREFIX.pub", &prefix, 1},
        {"force", NULL, CLI_FLAG, NULL, "replace existing key files", &force, 0},
    };
    const int n = (int)(sizeof opts / sizeof opts[0]);
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reapctl keygen: %s\n", err);
        cli_usage(stderr, "usage: reapctl keygen --out PREFIX [--force]", opts, n);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: reapctl keygen --out PREFIX [--force]", opts, n);
        return 0;
    }
    if (reap_minisign_keygen(prefix, force, pub) != REAP_OK) {
        fprintf(stderr, "reapctl keygen: %s\n", reap_err_msg());
        return 1;
    }
    printf("secret key: %s.key (keep it secret; give it to reap-pruner --key)\n"
           "public key: %s.pub\n"
           "check a manifest with: minisign -Vm reap-manifest.json -P %s\n",
           prefix, prefix, pub);
    return 0;
}

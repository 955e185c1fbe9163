/* cmd_keygen.c - `reapctl keygen --out PREFIX`: a new Ed25519 key pair in minisign's
 * formats (PREFIX.key, unencrypted, mode 0600; PREFIX.pub) for signing manifests.
 * --json prints {key_id, secret_key, public_key, public_key_b64} instead of the text. */
#include <jansson.h>
#include <stdio.h>

#include "cli.h"
#include "minisign.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

int cmd_keygen(int argc, char **argv)
{
    const char *prefix = NULL;
    int force = 0, json = 0, ex;
    char pub[REAP_MINISIGN_PUB_B64_LEN + 1], id[17], path[4200];
    reap_pub_key pk;
    const char *usage = "usage: reapctl keygen --out PREFIX [--force] [--json]";
    const cli_opt opts[] = {
        {"out", NULL, CLI_STR, NULL, "write PREFIX.key and PREFIX.pub", &prefix, 1},
        {"force", NULL, CLI_FLAG, NULL, "replace existing key files", &force, 0},
        {"json", NULL, CLI_FLAG, NULL, "print the key id and paths as JSON", &json, 0},
    };
    const int n = (int)(sizeof opts / sizeof opts[0]);
    if ((ex = reapctl_parse("keygen", usage, opts, n, argc, argv, NULL, 0, NULL)) >= 0)
        return ex;
    if (reap_minisign_keygen(prefix, force, pub) != REAP_OK ||
        reap_minisign_load_public(pub, &pk) != REAP_OK) {
        fprintf(stderr, "reapctl keygen: %s\n", reap_err_msg());
        return 1;
    }
    reap_minisign_key_id(pk.keynum, id);
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "key_id", json_string(id));
        snprintf(path, sizeof path, "%s.key", prefix);
        json_object_set_new(doc, "secret_key", json_string(path));
        snprintf(path, sizeof path, "%s.pub", prefix);
        json_object_set_new(doc, "public_key", json_string(path));
        json_object_set_new(doc, "public_key_b64", json_string(pub));
        json_dumpf(doc, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(doc);
        return 0;
    }
    printf("key id %s\n"
           "secret key: %s.key (keep it secret; give it to reap-pruner --key)\n"
           "public key: %s.pub\n"
           "check a manifest with: minisign -Vm reap-manifest.json -P %s\n",
           id, prefix, prefix, pub);
    return 0;
}

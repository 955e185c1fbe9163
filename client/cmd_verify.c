/* cmd_verify.c - `reapctl verify DIR --pubkey FILE`: check a pruned checkpoint against its
 * signed manifest (signature, trusted comment, every file re-hashed, missing and extra
 * files). Prints every problem; exit status 3 if there is any.
 * With --pruner ADDR (or --remote) the pruner service checks DIR on its filesystem
 * (Verify; the server's key unless --pubkey is given). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "manifest.h"
#include "minisign.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

static void print_problem(void *ud, const char *line)
{
    (void)ud;
    printf("FAIL %s\n", line);
}

int cmd_verify(int argc, char **argv)
{
    const char *dir = NULL, *pubkey = NULL;
    int help = 0, unsigned_ok = 0, n_problems = 0, first = 2, remote = 0, sizes_only = 0,
        json = 0, n = 0;
    char err[512];
    reapctl_conn conn;
    cli_opt opts[24] = {
        {"dir", NULL, CLI_STR, NULL, "output directory (or give it as the first argument)",
         &dir, 0},
        {"pubkey", "REAP_PUBKEY", CLI_STR, NULL, "minisign public key file or base64 string",
         &pubkey, 0},
        {"no-signature", NULL, CLI_FLAG, NULL, "only re-hash the files (no signature check)",
         &unsigned_ok, 0},
        {"remote", NULL, CLI_FLAG, NULL, "let the pruner service check DIR (also implied by "
         "--pruner)", &remote, 0},
        {"sizes-only", NULL, CLI_FLAG, NULL, "remote: signature and file sizes only (no "
         "re-hashing)", &sizes_only, 0},
        {"json", NULL, CLI_FLAG, NULL, "remote: print the response as JSON", &json, 0},
    };
    while (opts[n].flag)
        n++;
    reapctl_conn_opts(&conn, REAPCTL_PRUNER, opts, &n);
    const char *usage = "usage: reapctl verify DIR (--pubkey FILE | --pruner ADDR) [options]";
    if (argc > 2 && strncmp(argv[2], "-", 1)) {
        dir = argv[2];
        first = 3;
    }
    const char *positional = dir;
    if (cli_parse(opts, n, argc, argv, first, &help, err, sizeof err)) {
        fprintf(stderr, "reapctl verify: %s\n", err);
        cli_usage(stderr, usage, opts, n);
        return 2;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n);
        return 0;
    }
    if (positional && !dir)
        dir = positional;
    reapctl_conn_note(&conn, argc, argv);
    if (dir && (remote || conn.pruner_given)) {
        rpc_client *cl = NULL;
        reap_pub_key rpk;
        char b64[REAP_MINISIGN_PUB_B64_LEN + 1];
        int ex;
        if (pubkey) {
            if (reap_minisign_load_public(pubkey, &rpk) != REAP_OK) {
                fprintf(stderr, "reapctl verify: %s\n", reap_err_msg());
                return 1;
            }
            reap_minisign_public_b64(&rpk, b64);
        }
        if ((ex = reapctl_connect("verify", &conn, REAPCTL_PRUNER, NULL, &cl)))
            return ex;
        ex = reapctl_remote_verify("verify", cl, dir, pubkey ? b64 : NULL, sizes_only, json,
                                   conn.timeout_ms > 0 ? conn.timeout_ms * 20 : 0);
        rpc_client_close(cl);
        return ex;
    }
    if (!dir || (!pubkey && !unsigned_ok)) {
        fprintf(stderr, "reapctl verify: give the directory and --pubkey (or "
                        "--no-signature)\n");
        return 2;
    }
    reap_pub_key pk;
    if (pubkey && reap_minisign_load_public(pubkey, &pk) != REAP_OK) {
        fprintf(stderr, "reapctl verify: %s\n", reap_err_msg());
        return 1;
    }
    int rc = reap_manifest_verify_dir(dir, pubkey ? &pk : NULL, print_problem, NULL,
                                      &n_problems);
    if (rc == REAP_OK) {
        printf("OK %s: every file matches %s%s\n", dir, REAP_MANIFEST_NAME,
               pubkey ? " and the signature verifies" : " (signature not checked)");
        return 0;
    }
    if (n_problems == 0)
        printf("FAIL %s\n", reap_err_msg());
    fprintf(stderr, "reapctl verify: %s: %d problem%s\n", dir, n_problems ? n_problems : 1,
            n_problems > 1 ? "s" : "");
    return rc == REAP_E_INVALID ? REAPCTL_EXIT_CHECK : REAPCTL_EXIT_FAIL;
}

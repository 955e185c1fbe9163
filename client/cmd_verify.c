/* cmd_verify.c - `reapctl verify DIR --pubkey FILE`: check a pruned checkpoint against its
 * signed manifest (signature, trusted comment, every file re-hashed, missing and extra
 * files). Prints every problem (--json: one JSON report); exit status 3 if there is any.
 * DIR may come before or after the options.
 * With --pruner ADDR (or --remote) the pruner service checks DIR on its filesystem
 * (Verify; the server's key unless --pubkey is given). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "manifest.h"
#include "minisign.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

/* Problems (manifest.h: the subject, a file's name or "signature" / "manifest", and what
 * is wrong): printed as FAIL lines, or collected into a JSON array (ud) as {file,
 * message} like the remote Verify's problems. */
static void print_problem(void *ud, const char *subject, const char *text)
{
    (void)ud;
    printf("FAIL %s: %s\n", subject, text);
}

static void json_problem(void *ud, const char *subject, const char *text)
{
    json_t *pr = json_object();
    json_object_set_new(pr, "file", json_string(subject));
    json_object_set_new(pr, "message", json_string(text));
    json_array_append_new(ud, pr);
}

int cmd_verify(int argc, char **argv)
{
    const char *dir = NULL, *pubkey = NULL;
    int unsigned_ok = 0, n_problems = 0, remote = 0, sizes_only = 0, json = 0,
        n = 0, n_pos = 0, ex;
    const char *pos[1];
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
        {"json", NULL, CLI_FLAG, NULL, "print a JSON report (remote: the response)", &json,
         0},
    };
    while (opts[n].flag)
        n++;
    reapctl_conn_opts(&conn, REAPCTL_PRUNER, opts, &n);
    const char *usage = "usage: reapctl verify DIR (--pubkey FILE | --pruner ADDR) [options]";
    if ((ex = reapctl_parse("verify", usage, opts, n, argc, argv, pos, 1, &n_pos)) >= 0)
        return ex;
    if (n_pos && !dir)
        dir = pos[0];
    reapctl_conn_note(&conn, argc, argv);
    if (dir && (remote || conn.pruner_given)) {
        rpc_client *cl = NULL;
        reap_pub_key rpk;
        char b64[REAP_MINISIGN_PUB_B64_LEN + 1];
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
    json_t *problems = json ? json_array() : NULL;
    int rc = reap_manifest_verify_dir(dir, pubkey ? &pk : NULL,
                                      json ? json_problem : print_problem, problems,
                                      &n_problems);
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "output_path", json_string(dir));
        json_object_set_new(doc, "ok", json_boolean(rc == REAP_OK));
        json_object_set_new(doc, "signature_checked", json_boolean(pubkey != NULL));
        if (rc != REAP_OK && n_problems == 0)   /* no file named: the whole check failed */
            json_problem(problems, "", reap_err_msg());
        json_object_set_new(doc, "problems", problems);
        json_dumpf(doc, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(doc);
        return rc == REAP_OK ? 0 : rc == REAP_E_INVALID ? REAPCTL_EXIT_CHECK : REAPCTL_EXIT_FAIL;
    }
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

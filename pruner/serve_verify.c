/* serve_verify.c - Verify of `reap-pruner serve` (pruner_serve_impl.h): a pruned checkpoint
 * under the roots checked against its signed manifest (reap_manifest_verify_dir: the
 * signature, every file re-hashed, missing and extra files; or, with skip_rehash, the
 * signature and the sizes only), each problem reported with the file it is about, and
 * the manifest's own fields (model id, calibration ids, criterion, ratio, n_keep).
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "criterion_proto.h"
#include "filehash.h"
#include "manifest.h"
#include "pruner_serve_impl.h"
#include "reap_err.h"
#include "rpc_status.h"
#include "svc.h"

/* A public key sent by a client: the base64 line (or a whole .pub file's text), never a
 * path (the server does not open files a client names outside its roots). */
static rpc_code parse_pubkey(const char *text, reap_pub_key *pk, char *err, size_t errlen)
{
    const char *line = text, *p;
    uint8_t bin[64];
    size_t len, n = 0;
    for (p = text; *p; p++)   /* the last non-empty line */
        if (*p == '\n' && p[1] && p[1] != '\n')
            line = p + 1;
    len = strcspn(line, "\r\n");
    if (sodium_init() < 0 ||
        sodium_base642bin(bin, sizeof bin, line, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) || n != 42 || memcmp(bin, "Ed", 2)) {
        snprintf(err, errlen, "public_key: not a minisign public key (the base64 line "
                 "starting with RW)");
        return RPC_INVALID_ARGUMENT;
    }
    memcpy(pk->keynum, bin + 2, 8);
    memcpy(pk->pk, bin + 10, 32);
    return RPC_OK;
}

typedef struct verify_ctx {
    svc_pool *pool;
    Reap__V1__VerifyProblem **v;
    size_t n, cap;
} verify_ctx;

/* A problem (manifest.h: reap_verify_report_fn) as a VerifyProblem: its subject (the
 * file's name, "signature" or "manifest"; "" when the whole check failed with no
 * subject) and what is wrong. */
static void on_problem(void *ud, const char *subject, const char *text)
{
    verify_ctx *c = ud;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Reap__V1__VerifyProblem **v = svc_alloc(c->pool, cap * sizeof *v);
        if (!v)
            return;
        if (c->n)
            memcpy(v, c->v, c->n * sizeof *v);
        c->v = v;
        c->cap = cap;
    }
    Reap__V1__VerifyProblem *pr = svc_alloc(c->pool, sizeof *pr);
    if (!pr)
        return;
    reap__v1__verify_problem__init(pr);
    pr->file = svc_strdup(c->pool, subject);
    pr->message = svc_strdup(c->pool, text);
    c->v[c->n++] = pr;
}

/* Manifest fields for the response (best effort: the verification says whether the
 * manifest can be trusted). */
static void manifest_fields(const char *dir, const reap_roots *roots, svc_pool *pool,
                            Reap__V1__VerifyResponse *r)
{
    char path[4200];
    json_error_t je;
    FILE *f = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    if (reap_fopen_read(path, roots, &f))
        return;
    json_t *doc = json_loadf(f, 0, &je);
    fclose(f);
    if (!doc)
        return;
    json_t *in = json_object_get(doc, "inputs"), *par = json_object_get(doc, "parameters");
    json_t *files = json_object_get(doc, "files"), *cal = json_object_get(in, "calibration_ids");
    const char *mid = json_string_value(json_object_get(in, "model_id"));
    const char *crit = json_string_value(json_object_get(par, "criterion"));
    reap_criterion c;
    r->files_checked = (uint32_t)json_array_size(files);
    r->model_id = svc_strdup(pool, mid);
    if (crit && reap_criterion_from_name(crit, &c) == REAP_OK)
        r->criterion = reap_criterion_to_proto(c);
    r->ratio = json_number_value(json_object_get(par, "ratio"));
    r->n_keep = (uint32_t)json_integer_value(json_object_get(par, "n_keep"));
    if (json_array_size(cal) &&
        (r->calib_ids = svc_alloc(pool, json_array_size(cal) * sizeof *r->calib_ids)))
        for (size_t i = 0; i < json_array_size(cal); i++)
            r->calib_ids[r->n_calib_ids++] =
                svc_strdup(pool, json_string_value(json_array_get(cal, i)));
    json_decref(doc);
}

/* Signature and sizes only (skip_rehash). */
static int verify_light(const char *dir, const reap_roots *roots, const reap_pub_key *pk,
                        verify_ctx *vc)
{
    char path[4200], sig[4200];
    json_error_t je;
    int bad = 0;
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    snprintf(sig, sizeof sig, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    if (reap_minisign_verify_file_confined(pk, path, sig, roots, NULL, 0)) {
        on_problem(vc, "signature", reap_err_msg());
        bad++;
    }
    FILE *f = NULL;
    json_t *doc = NULL;
    if (reap_fopen_read(path, roots, &f) == REAP_OK) {
        doc = json_loadf(f, 0, &je);
        fclose(f);
    }
    json_t *files = json_object_get(doc, "files");
    if (!json_is_array(files)) {
        on_problem(vc, "manifest", "no \"files\" array");
        json_decref(doc);
        return bad + 1;
    }
    for (size_t i = 0; i < json_array_size(files); i++) {
        json_t *f = json_array_get(files, i);
        const char *name = json_string_value(json_object_get(f, "path"));
        struct stat sb;
        char fp[4200];
        if (!name)
            continue;
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        if (stat(fp, &sb)) {
            on_problem(vc, name, "missing");
            bad++;
        } else if ((json_int_t)sb.st_size != json_integer_value(json_object_get(f, "size"))) {
            on_problem(vc, name, "size changed");
            bad++;
        }
    }
    json_decref(doc);
    return bad;
}

int pruner_serve_verify(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__VerifyRequest *q = (const void *)req;
    pruner_svc *S = ud;
    char err[1024], path[4200], *dir = NULL;
    reap_pub_key pk;
    rpc_code code;
    svc_pool pool = {0};
    verify_ctx vc = {.pool = &pool};
    Reap__V1__VerifyResponse resp = REAP__V1__VERIFY_RESPONSE__INIT;
    uint8_t digest[32];
    struct stat sb;
    int rc;

    if (!*q->output_path)
        return rpc_call_error(call, RPC_INVALID_ARGUMENT, "output_path: required");
    if (*q->public_key) {
        if ((code = parse_pubkey(q->public_key, &pk, err, sizeof err)))
            return rpc_call_error(call, code, "%s", err);
    } else if (S->have_pub) {
        pk = S->pub;
    } else {
        return rpc_call_error(call, RPC_FAILED_PRECONDITION, "public_key: none given and the "
                              "server has no key (--key or --pubkey)");
    }
    if ((code = rpc_path_confine(&S->verify_roots, "output_path", q->output_path,
                                 RPC_PATH_EXISTING | RPC_PATH_DIR, &dir, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    snprintf(path, sizeof path, "%s/%s", dir, REAP_MANIFEST_NAME);
    if (stat(path, &sb)) {
        rc = rpc_call_error(call, RPC_NOT_FOUND, "output_path: %s has no %s", dir,
                            REAP_MANIFEST_NAME);
        goto done;
    }
    int n_problems = 0;
    if (q->skip_rehash) {
        n_problems = verify_light(dir, &S->verify_fs, &pk, &vc);
        rc = n_problems ? REAP_E_INVALID : REAP_OK;
    } else {
        rc = reap_manifest_verify_dir_confined(dir, &S->verify_fs, &pk, on_problem, &vc,
                                               &n_problems);
        if (rc && rc != REAP_E_INVALID) {
            rc = rpc_call_error(call, rpc_code_from_reap(rc), "%s", reap_err_msg());
            goto done;
        }
        if (rc && vc.n == 0)
            on_problem(&vc, "", reap_err_msg());   /* no file named: the whole check */
    }
    char sig[4200];
    snprintf(sig, sizeof sig, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    resp.ok = rc == REAP_OK;
    resp.signature_ok = reap_minisign_verify_file_confined(&pk, path, sig, &S->verify_fs, NULL,
                                                           0) == REAP_OK;
    resp.problems = vc.v;
    resp.n_problems = vc.n;
    if (reap_hash_file_confined(path, &S->verify_fs, digest, NULL, NULL) == REAP_OK)
        resp.manifest_digest = svc_hex(&pool, digest, 32);
    manifest_fields(dir, &S->verify_fs, &pool, &resp);
    rc = svc_respond(call, &pool, &resp.base);
done:
    svc_pool_free(&pool);
    free(dir);
    return rc;
}

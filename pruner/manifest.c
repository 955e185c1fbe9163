/* manifest.c - building, signing and verifying reap-manifest.json (see manifest.h). */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "filehash.h"
#include "reap_err.h"

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of the regular files in dir (excluding the manifest and its signature;
 * with `only_inputs`, only config.json, the index and *.safetensors). Directories and
 * other entries are returned in *others (may be NULL). */
static int list_dir(const char *dir, int only_inputs, char ***names, size_t *n,
                    char ***others, size_t *n_others)
{
    int rc = REAP_OK;
    size_t cap = 0, cap2 = 0;
    *names = NULL;
    *n = 0;
    if (others) {
        *others = NULL;
        *n_others = 0;
    }
    DIR *d = opendir(dir);
    if (!d)
        return reap_err_set(REAP_E_IO, "%s: opendir: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..") || !strcmp(nm, REAP_MANIFEST_NAME) ||
            !strcmp(nm, REAP_MANIFEST_SIG_NAME))
            continue;
        size_t l = strlen(nm);
        if (only_inputs && strcmp(nm, "config.json") &&
            strcmp(nm, "model.safetensors.index.json") &&
            !(l > 12 && !strcmp(nm + l - 12, ".safetensors")))
            continue;
        char path[8192];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        int regular = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        char ***arr = regular ? names : others;
        size_t *cnt = regular ? n : n_others, *cp = regular ? &cap : &cap2;
        if (!arr)
            continue;
        if (*cnt == *cp) {
            size_t nc = *cp ? 2 * *cp : 32;
            char **g = realloc(*arr, nc * sizeof *g);
            if (!g) {
                rc = reap_err_set(REAP_E_NOMEM, "listing %s", dir);
                break;
            }
            *arr = g;
            *cp = nc;
        }
        if (!((*arr)[*cnt] = strdup(nm))) {
            rc = reap_err_set(REAP_E_NOMEM, "listing %s", dir);
            break;
        }
        (*cnt)++;
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_cstr);
    return rc;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static int jobs_status(const reap_file_hash *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (jobs[i].rc)
            return reap_err_set(jobs[i].rc, "%s", jobs[i].msg);
    return REAP_OK;
}

static json_t *file_entry(const reap_file_hash *j)
{
    char b2h[65], shh[65];
    reap_hex(j->b2, 32, b2h);
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(j->name));
    json_object_set_new(o, "size", json_integer((json_int_t)j->size));
    json_object_set_new(o, "blake2b_256", json_string(b2h));
    if (j->with_sha) {
        reap_hex(j->sh, 32, shh);
        json_object_set_new(o, "sha256", json_string(shh));
    }
    return o;
}

/* The digest of input file `name` of size `size` given by the caller, or NULL. */
static const reap_known_file *known_input(const reap_manifest_inputs *in, const char *name,
                                          uint64_t size)
{
    for (int i = 0; in && i < in->n_files; i++)
        if (!strcmp(in->files[i].path, name) && in->files[i].size == size)
            return &in->files[i];
    return NULL;
}

int reap_manifest_write(const char *out_dir, const char *in_dir, const reap_keepset *ks,
                        const reap_manifest_inputs *in, reap_hasher *hashed,
                        const reap_sign_key *key, char *digest_hex)
{
    int rc = REAP_OK;
    char **outs = NULL, **ins = NULL, *text = NULL;
    size_t n_out = 0, n_in = 0;
    reap_file_hash *jobs = NULL;
    json_t *doc = json_object(), *files = json_array(), *inputs = json_object(),
           *infiles = json_array(), *params = json_object(), *calib = json_array(),
           *soft = json_object();
    char mpath[8192], spath[8192], tc[512], dh[65], when[32];
    uint8_t dig[32];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);

    if ((rc = list_dir(out_dir, 0, &outs, &n_out, NULL, NULL)) ||
        (rc = list_dir(in_dir, 1, &ins, &n_in, NULL, NULL)))
        goto done;
    jobs = calloc(n_out + n_in + 1, sizeof *jobs);
    if (!jobs) {
        rc = reap_err_set(REAP_E_NOMEM, "manifest: out of memory");
        goto done;
    }
    /* Output files the background hasher digested (unchanged since) and input files the
     * caller knows are taken as they are; the rest are hashed here, on all cores. */
    if (hashed)
        reap_hasher_wait(hashed);
    for (size_t i = 0; i < n_out; i++) {
        const reap_file_hash *h = reap_hasher_find(hashed, out_dir, outs[i]);
        if (h && !h->with_sha)
            h = NULL;
        jobs[i] = h ? *h : (reap_file_hash){.with_sha = 1};
        jobs[i].dir = out_dir;
        jobs[i].name = outs[i];
        jobs[i].done = h != NULL;
    }
    for (size_t i = 0; i < n_in; i++) {
        reap_file_hash *j = &jobs[n_out + i];
        struct stat st;
        char path[8192];
        const reap_known_file *k = NULL;
        *j = (reap_file_hash){.dir = in_dir, .name = ins[i], .roots = in ? in->roots : NULL,
                              .with_sha = 0};
        snprintf(path, sizeof path, "%s/%s", in_dir, ins[i]);
        if (in && in->n_files && stat(path, &st) == 0)
            k = known_input(in, ins[i], (uint64_t)st.st_size);
        const reap_file_hash *h = k ? NULL : reap_hasher_find(hashed, in_dir, ins[i]);
        if (k) {
            j->size = k->size;
            memcpy(j->b2, k->blake2b_256, 32);
        } else if (h) {
            j->size = h->size;
            memcpy(j->b2, h->b2, 32);
        }
        j->done = k || h;
    }
    reap_hash_files(jobs, n_out + n_in);
    if ((rc = jobs_status(jobs, n_out + n_in)))
        goto done;
    for (size_t i = 0; i < n_out; i++)
        json_array_append_new(files, file_entry(&jobs[i]));
    for (size_t i = 0; i < n_in; i++)
        json_array_append_new(infiles, file_entry(&jobs[n_out + i]));
    for (int i = 0; in && i < in->n_calib; i++)
        json_array_append_new(calib, json_string(in->calib_ids[i]));
    json_object_set_new(inputs, "model_id",
                        in && in->model_id ? json_string(in->model_id) : json_null());
    json_object_set(inputs, "files", infiles);
    json_object_set(inputs, "calibration_ids", calib);
    json_object_set_new(inputs, "stats_digest",
                        in && in->stats_digest ? json_string(in->stats_digest) : json_null());
    if (in && in->stats_model_id)
        json_object_set_new(inputs, "stats_model_id", json_string(in->stats_model_id));

    json_object_set_new(params, "criterion", json_string(reap_criterion_name(ks->criterion)));
    json_object_set_new(params, "ratio", ks->ratio >= 0 ? json_real(ks->ratio) : json_null());
    json_object_set_new(params, "n_prune", json_integer(ks->n_prune));
    json_object_set_new(params, "n_experts", json_integer(ks->n_experts));
    json_object_set_new(params, "n_keep", json_integer(ks->n_keep));
    json_object_set_new(params, "top_k", json_integer(ks->top_k));
    json_object_set_new(params, "protect_super_experts",
                        json_boolean(ks->protect_super_experts));
    if (ks->balance_modalities)   /* only when set: other manifests stay byte-identical */
        json_object_set_new(params, "balance_modalities", json_true());
    json_object_set_new(params, "super_threshold", json_real(ks->super_threshold));
    json_object_set_new(params, "keep_sets", reap_keepset_json(ks));

    json_object_set_new(soft, "name", json_string("reap"));
    json_object_set_new(soft, "version", json_string(REAP_VERSION));
    json_object_set_new(soft, "backend",
                        in && in->backend ? json_string(in->backend) : json_null());

    json_object_set_new(doc, "format", json_string("reap-manifest/1"));
    json_object_set_new(doc, "created", json_string(when));
    json_object_set(doc, "software", soft);
    json_object_set(doc, "inputs", inputs);
    json_object_set(doc, "parameters", params);
    json_object_set(doc, "files", files);
    text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    if (!text) {
        rc = reap_err_set(REAP_E_NOMEM, "manifest: out of memory");
        goto done;
    }
    snprintf(mpath, sizeof mpath, "%s/%s", out_dir, REAP_MANIFEST_NAME);
    snprintf(spath, sizeof spath, "%s/%s", out_dir, REAP_MANIFEST_SIG_NAME);
    /* Written in place, not with reap_write_atomic: out_dir is the prune's staging
     * directory, fsynced and renamed into place as a whole by the caller. */
    FILE *f = fopen(mpath, "w");
    if (!f) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", mpath, strerror(errno));
        goto done;
    }
    int bad = fputs(text, f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0 ||
              fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        rc = reap_err_set(REAP_E_IO, "%s: write failed", mpath);
        goto done;
    }
    if ((rc = reap_hash_file(mpath, dig, NULL, NULL)))
        goto done;
    reap_hex(dig, 32, dh);
    if (digest_hex)
        memcpy(digest_hex, dh, 65);
    if (key) {
        snprintf(tc, sizeof tc, "reap-manifest model_id=%s manifest_blake2b256=%s "
                 "timestamp=%lld%s%s", in && in->model_id ? in->model_id : "none", dh,
                 (long long)now, in && in->stats_model_id ? " stats_model_id=" : "",
                 in && in->stats_model_id ? in->stats_model_id : "");
        rc = reap_minisign_sign_file(key, mpath, spath, tc, "signature of a reap pruned "
                                     "checkpoint manifest");
    }
done:
    free(jobs);
    free(text);
    free_names(outs, n_out);
    free_names(ins, n_in);
    json_decref(files);
    json_decref(infiles);
    json_decref(calib);
    json_decref(inputs);
    json_decref(params);
    json_decref(soft);
    json_decref(doc);
    return rc;
}

/* ---- verification ------------------------------------------------------------------- */

typedef struct vstate {
    reap_verify_report_fn fn;
    void *ud;
    int n;
    char first[1300];   /* "subject: text" of the first problem */
} vstate;

/* One problem: `subject` the file it is about, "signature" or "manifest"; the text from
 * fmt. The first is kept, as "subject: text", for the function's error message. */
static void problem(vstate *v, const char *subject, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(vstate *v, const char *subject, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!v->n++)
        snprintf(v->first, sizeof v->first, "%.255s: %s", subject, text);
    if (v->fn)
        v->fn(v->ud, subject, text);
}

static int plain_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

int reap_manifest_verify_dir(const char *dir, const reap_pub_key *pk,
                             reap_verify_report_fn report, void *ud, int *n_problems)
{
    return reap_manifest_verify_dir_confined(dir, NULL, pk, report, ud, n_problems);
}

int reap_manifest_verify_dir_confined(const char *dir, const reap_roots *roots,
                                      const reap_pub_key *pk, reap_verify_report_fn report,
                                      void *ud, int *n_problems)
{
    int rc = REAP_OK;
    vstate v = {report, ud, 0, ""};
    char mpath[8192], spath[8192], tc[8192], dh[65], want[128];
    uint8_t dig[32];
    json_t *doc = NULL;
    json_error_t jerr;
    char **names = NULL, **others = NULL;
    size_t n_names = 0, n_others = 0;
    uint8_t *seen = NULL;
    reap_file_hash *jobs = NULL;
    const json_t **entry = NULL;

    snprintf(mpath, sizeof mpath, "%s/%s", dir, REAP_MANIFEST_NAME);
    snprintf(spath, sizeof spath, "%s/%s", dir, REAP_MANIFEST_SIG_NAME);
    if (access(mpath, F_OK) != 0) {
        rc = reap_err_set(REAP_E_NOTFOUND, "%s: no %s (not a reap output directory?)", dir,
                          REAP_MANIFEST_NAME);
        goto done;
    }
    if ((rc = reap_hash_file_confined(mpath, roots, dig, NULL, NULL)))
        goto done;
    reap_hex(dig, 32, dh);
    if (pk) {
        if (access(spath, F_OK) != 0) {
            problem(&v, "signature", "%s is missing", REAP_MANIFEST_SIG_NAME);
        } else if (reap_minisign_verify_file_confined(pk, mpath, spath, roots, tc,
                                                      sizeof tc) != REAP_OK) {
            problem(&v, "signature", "%s", reap_err_msg());
        } else {
            snprintf(want, sizeof want, "manifest_blake2b256=%s", dh);
            if (!strstr(tc, want))
                problem(&v, "signature", "the trusted comment does not name this manifest's "
                        "digest %s", dh);
        }
    }
    FILE *mf = NULL;
    if ((rc = reap_fopen_read(mpath, roots, &mf)))
        goto done;
    doc = json_loadf(mf, JSON_REJECT_DUPLICATES, &jerr);
    fclose(mf);
    const json_t *files = doc ? json_object_get(doc, "files") : NULL;
    if (!doc || !json_is_array(files)) {
        problem(&v, "manifest", "%s", doc ? "no \"files\" array" : jerr.text);
        rc = reap_err_set(REAP_E_INVALID, "%s: %d problem%s; first: %s", dir, v.n,
                          v.n == 1 ? "" : "s", v.first);
        goto done;
    }
    if ((rc = list_dir(dir, 0, &names, &n_names, &others, &n_others)))
        goto done;
    seen = calloc(n_names ? n_names : 1, 1);
    if (!seen) {
        rc = reap_err_set(REAP_E_NOMEM, "verify: out of memory");
        goto done;
    }
    size_t i, n_jobs = 0;
    json_t *e;
    jobs = calloc(json_array_size(files) + 1, sizeof *jobs);
    entry = calloc(json_array_size(files) + 1, sizeof *entry);
    if (!jobs || !entry) {
        rc = reap_err_set(REAP_E_NOMEM, "verify: out of memory");
        goto done;
    }
    json_array_foreach(files, i, e) {
        const char *p = json_string_value(json_object_get(e, "path"));
        if (!p || !plain_name(p) || !json_is_integer(json_object_get(e, "size")) ||
            !json_is_string(json_object_get(e, "blake2b_256")) ||
            !json_is_string(json_object_get(e, "sha256"))) {
            problem(&v, "manifest", "files[%zu] is malformed", i);
            continue;
        }
        char **hit = bsearch(&p, names, n_names, sizeof *names, cmp_cstr);
        if (!hit) {
            problem(&v, p, "missing");
            continue;
        }
        if (seen[hit - names]) {
            problem(&v, "manifest", "%s is listed twice", p);
            continue;
        }
        seen[hit - names] = 1;
        entry[n_jobs] = e;
        jobs[n_jobs++] = (reap_file_hash){.dir = dir, .name = p, .roots = roots,
                                          .with_sha = 1};
    }
    reap_hash_files(jobs, n_jobs);
    for (size_t k = 0; k < n_jobs; k++) {
        const char *p = jobs[k].name;
        const json_t *js = json_object_get(entry[k], "size");
        const char *b2w = json_string_value(json_object_get(entry[k], "blake2b_256"));
        const char *shw = json_string_value(json_object_get(entry[k], "sha256"));
        char b2h[65], shh[65];
        uint64_t size = jobs[k].size;
        if (jobs[k].rc) {
            problem(&v, p, "%s", jobs[k].msg);
            continue;
        }
        reap_hex(jobs[k].b2, 32, b2h);
        reap_hex(jobs[k].sh, 32, shh);
        if ((json_int_t)size != json_integer_value(js))
            problem(&v, p, "size %llu, manifest says %lld", (unsigned long long)size,
                    (long long)json_integer_value(js));
        else if (strcmp(b2h, b2w) || strcmp(shh, shw))
            problem(&v, p, "content changed (%s%s%s)",
                    strcmp(b2h, b2w) ? "BLAKE2b-256" : "",
                    strcmp(b2h, b2w) && strcmp(shh, shw) ? " and " : "",
                    strcmp(shh, shw) ? "SHA-256" : "");
    }
    for (size_t k = 0; k < n_names; k++)
        if (!seen[k])
            problem(&v, names[k], "extra file, not in the manifest");
    for (size_t k = 0; k < n_others; k++)
        problem(&v, others[k], "extra entry (not a regular file), not in the manifest");
    rc = v.n ? reap_err_set(REAP_E_INVALID, "%s: %d problem%s; first: %s", dir, v.n,
                            v.n == 1 ? "" : "s", v.first)
             : REAP_OK;
done:
    if (n_problems)
        *n_problems = v.n;
    free(jobs);
    free(entry);
    free(seen);
    free_names(names, n_names);
    free_names(others, n_others);
    json_decref(doc);
    return rc;
}

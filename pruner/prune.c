/* prune.c - a prune end to end (see prune.h). */
#include "prune.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config_check.h"
#include "manifest.h"
#include "outdir.h"
#include "parallel.h"
#include "reap_err.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void reap_prune_result_free(reap_prune_result *res)
{
    if (!res)
        return;
    reap_keepset_free(&res->ks);
    reap_verify_result_free(&res->verify);
}

/* Not reap_write_atomic on purpose: path lies in the prune's staging directory, which
 * is fsynced and renamed into place as a whole (reap_prune_run), so a reader never sees
 * a part of it. */
static int write_json(const char *path, json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!text)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
    FILE *f = fopen(path, "w");
    int rc = REAP_OK;
    if (!f) {
        rc = reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    } else {
        int bad = fputs(text, f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0 ||
                  fsync(fileno(f)) != 0;
        bad |= fclose(f) != 0;
        if (bad)
            rc = reap_err_set(REAP_E_IO, "%s: write failed", path);
    }
    free(text);
    return rc;
}

int reap_metadata_write(const char *dir, const reap_config *cfg, const reap_keepset *ks,
                        const char *model_id, const char *const *calib_ids, int n_calib)
{
    char path[8192];
    json_t *doc = json_object(), *keep = reap_keepset_json(ks), *scores = json_array(),
           *calib = json_array(), *sup = json_object();
    for (int i = 0; i < ks->n_layers; i++) {
        const reap_keep_layer *kl = &ks->layers[i];
        json_t *s = json_array(), *p = json_array();
        char key[16];
        for (int e = 0; e < ks->n_experts; e++) {
            json_array_append_new(s, json_real(kl->scores[e]));
            if (kl->is_super[e])
                json_array_append_new(p, json_integer(e));
        }
        snprintf(key, sizeof key, "%d", kl->layer);
        json_array_append_new(scores, s);
        if (kl->n_super)
            json_object_set_new(sup, key, p);
        else
            json_decref(p);
    }
    for (int i = 0; i < n_calib; i++)
        json_array_append_new(calib, json_string(calib_ids[i]));
    json_object_set_new(doc, "reap_version", json_string(REAP_VERSION));
    json_object_set_new(doc, "methodology",
                        json_string("REAP (router-weighted expert activation pruning, "
                                    "arXiv 2510.13999): per MoE layer, the experts with the "
                                    "lowest criterion scores over the calibration tokens are "
                                    "removed; the same number in every layer"));
    json_object_set_new(doc, "criterion", json_string(reap_criterion_name(ks->criterion)));
    json_object_set_new(doc, "num_layers", json_integer(cfg->n_layers));
    json_object_set_new(doc, "num_experts_original", json_integer(ks->n_experts));
    json_object_set_new(doc, "experts_kept", json_integer(ks->n_keep));
    json_object_set_new(doc, "n_prune", json_integer(ks->n_prune));
    json_object_set_new(doc, "prune_ratio",
                        ks->ratio >= 0 ? json_real(ks->ratio)
                                       : json_real((double)ks->n_prune / ks->n_experts));
    json_object_set_new(doc, "model_id", model_id ? json_string(model_id) : json_null());
    json_object_set(doc, "calibration_ids", calib);
    json_object_set_new(doc, "protect_super_experts", json_boolean(ks->protect_super_experts));
    if (ks->balance_modalities)   /* only when set: other outputs stay byte-identical */
        json_object_set_new(doc, "balance_modalities", json_true());
    json_object_set(doc, "super_experts", sup);
    json_object_set(doc, "experts_to_keep", keep);
    json_object_set(doc, "mean_scores", scores);
    snprintf(path, sizeof path, "%s/reap_metadata.json", dir);
    int rc = write_json(path, doc);
    json_decref(keep);
    json_decref(scores);
    json_decref(calib);
    json_decref(sup);
    json_decref(doc);
    return rc;
}

static int write_verify_json(const char *dir, const reap_verify_result *v, int functional)
{
    char path[8192];
    json_t *doc = json_object(), *layers = json_object();
    json_object_set_new(doc, "structural", json_string("ok"));
    json_object_set_new(doc, "n_tensors", json_integer(v->n_tensors));
    json_object_set_new(doc, "n_shards", json_integer(v->n_shards));
    if (functional) {
        for (int m = 0; m < v->n_moe; m++) {
            char key[16];
            snprintf(key, sizeof key, "%d", v->layer[m]);
            json_object_set_new(layers, key, json_real(v->route_changed[m]));
        }
        json_object_set_new(doc, "tokens", json_integer(v->n_tokens));
        json_object_set(doc, "route_changed_fraction", layers);
        json_object_set_new(doc, "hidden_rel_l2", json_real(v->hidden_rel_l2));
        json_object_set_new(doc, "hidden_max_abs", json_real(v->hidden_max_abs));
        json_object_set_new(doc, "hidden_identical", json_boolean(v->hidden_identical));
    }
    snprintf(path, sizeof path, "%s/reap-verify.json", dir);
    int rc = write_json(path, doc);
    json_decref(layers);
    json_decref(doc);
    return rc;
}

/* Resolve the target: realpath of its parent + its name (the target may not exist). */
static int resolve_target(const char *out, char *real_parent, char *name, size_t cap)
{
    char tmp[PATH_MAX];
    size_t l = strlen(out);
    while (l > 1 && out[l - 1] == '/')
        l--;
    if (l == 0 || l >= sizeof tmp)
        return reap_err_set(REAP_E_INVALID, "bad output path '%s'", out);
    memcpy(tmp, out, l);
    tmp[l] = '\0';
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return reap_err_set(REAP_E_INVALID, "output path '%s' must name a directory to "
                            "create", out);
    size_t bl = strlen(base);
    if (bl >= cap)
        return reap_err_set(REAP_E_INVALID, "output name '%s' is too long", base);
    memcpy(name, base, bl + 1);
    if (slash == tmp)
        strcpy(tmp, "/");
    else if (slash)
        *slash = '\0';
    else
        strcpy(tmp, ".");
    if (!realpath(tmp, real_parent))
        return reap_err_set(REAP_E_IO, "output parent directory '%s': %s", tmp,
                            strerror(errno));
    return REAP_OK;
}

static int is_within(const char *path, const char *dir)
{
    size_t l = strlen(dir);
    return !strncmp(path, dir, l) && (path[l] == '/' || path[l] == '\0' ||
                                      (l == 1 && dir[0] == '/'));
}

/* May the prune write `target` (shown as `shown`)? Absent: yes; present: only with force,
 * and only an earlier reap output or an empty directory. */
static int output_check(const char *target, const char *shown, int force)
{
    struct stat sb;
    if (lstat(target, &sb) != 0)
        return REAP_OK;
    if (!force)
        return reap_err_set(REAP_E_INVALID, "output '%s' already exists (use --force to "
                            "replace it: an earlier reap output or an empty directory)", shown);
    return reap_outdir_check_replaceable(target, shown);
}

int reap_prune_output_check(const char *out_dir, int force)
{
    char parent[PATH_MAX], name[NAME_MAX + 1], target[PATH_MAX + NAME_MAX + 2];
    int rc = resolve_target(out_dir, parent, name, sizeof name);
    if (rc)
        return rc;
    snprintf(target, sizeof target, "%s/%s", strcmp(parent, "/") ? parent : "", name);
    return output_check(target, out_dir, force);
}

/* The rewrite's callbacks: progress to the caller, each finished shard to the
 * background hasher, and the input shard it read too when the caller does not know the
 * input's digests (then the hasher reads it while its pages are still cached). */
typedef struct prune_cb {
    const reap_prune_opts *o;
    reap_hasher *hasher;
    const char *dir, *in_dir;
} prune_cb;

static int cb_progress(void *ud, uint64_t done, uint64_t total)
{
    const prune_cb *c = ud;
    return c->o->progress ? c->o->progress(c->o->ud, done, total) : 0;
}

static int cb_shard_done(void *ud, const char *name, const char *in_path)
{
    const prune_cb *c = ud;
    const char *base = strrchr(in_path, '/');
    if (!c->hasher)
        return 0;
    reap_hasher_add(c->hasher, c->dir, name, 1); /* out of memory: hashed at the end */
    if (c->o->n_input_files || !base || strncmp(in_path, c->in_dir, (size_t)(base - in_path)) ||
        strlen(c->in_dir) != (size_t)(base - in_path))
        return 0;
    return reap_hasher_add(c->hasher, c->in_dir, base + 1, 0) == REAP_OK;
}

int reap_prune(const reap_prune_opts *o, reap_prune_result *res)
{
    int rc;
    reap_ckpt *ck = NULL, *out_ck = NULL;
    reap_config cfg = {0}, out_cfg = {0};
    char in_real[PATH_MAX], parent[PATH_MAX], name[NAME_MAX + 1], target[PATH_MAX + NAME_MAX + 2];
    char path[8192];
    reap_outdir_tmp tmp = {.lock_fd = -1};
    const char *tmpdir = tmp.dir;
    int tmp_made = 0, moved_aside = 0;
    double t0;
    reap_hasher *hasher = NULL;
    memset(res, 0, sizeof *res);

    if (!realpath(o->model_dir, in_real))
        return reap_err_set(REAP_E_NOTFOUND, "model directory '%s': %s", o->model_dir,
                            strerror(errno));
    if ((rc = resolve_target(o->out_dir, parent, name, sizeof name)))
        return rc;
    snprintf(target, sizeof target, "%s/%s", strcmp(parent, "/") ? parent : "", name);
    if (is_within(target, in_real))
        return reap_err_set(REAP_E_INVALID, "output '%s' is inside the input directory '%s'",
                            o->out_dir, o->model_dir);
    if (is_within(in_real, target))
        return reap_err_set(REAP_E_INVALID, "the input directory '%s' is inside the output "
                            "'%s'", o->model_dir, o->out_dir);
    /* Leftovers of earlier prunes of this output whose writers died (killed, crashed). */
    if ((rc = reap_outdir_sweep(parent, name, o->leftover, o->leftover_ud, NULL)) ||
        (rc = output_check(target, o->out_dir, o->force)))
        return rc;
    struct stat sb;
    int exists;

    snprintf(path, sizeof path, "%s/config.json", in_real);
    if ((rc = reap_config_load_confined(path, o->model_roots, &cfg)) ||
        (rc = reap_ckpt_open_confined(in_real, o->model_roots, &ck)) ||
        (rc = reap_config_check_ckpt(&cfg, ck)))
        goto fail;
    if ((rc = reap_keepset_compute(&cfg, o->stats, o->n_stats, &o->keep, &res->ks)))
        goto fail;

    /* Built in a temporary directory beside the target, under a lock held until it is
     * renamed into place or removed (outdir.h). */
    if ((rc = reap_outdir_tmp_create(parent, name, &tmp)))
        goto fail;
    tmp_made = 1;

    /* Each finished shard is hashed for the manifest while the next one is written (one
     * worker per core, up to 4: the writer mostly waits for the disk). A hasher that
     * cannot start leaves every file to the manifest. */
    int nt = reap_cpu_count();
    reap_hasher_start(nt < 1 ? 1 : nt > 4 ? 4 : nt, &hasher);
    prune_cb cb = {o, hasher, tmpdir, in_real};
    t0 = now_s();
    if ((rc = reap_rewrite_checkpoint(ck, &cfg, &res->ks, tmpdir, cb_progress, cb_shard_done,
                                      &cb, o->no_space_check ? REAP_REWRITE_NO_SPACE_CHECK : 0,
                                      &res->rewrite)))
        goto fail;
    res->seconds_rewrite = now_s() - t0;
    if ((rc = reap_metadata_write(tmpdir, &cfg, &res->ks, o->model_id, o->calib_ids,
                                  o->n_calib)))
        goto fail;

    if (o->verify) {
        t0 = now_s();
        if ((rc = reap_verify_structural(tmpdir, ck, &cfg, &res->ks, &res->verify)))
            goto fail;
        if (o->verify_rows) {
            snprintf(path, sizeof path, "%s/config.json", tmpdir);
            if ((rc = reap_ckpt_open(tmpdir, &out_ck)) ||
                (rc = reap_config_load(path, &out_cfg)) ||
                (rc = reap_verify_functional(ck, &cfg, out_ck, &out_cfg, &res->ks,
                                             o->verify_rows, &o->probe, &res->verify)))
                goto fail;
        }
        if ((rc = write_verify_json(tmpdir, &res->verify, o->verify_rows != NULL)))
            goto fail;
        res->seconds_verify = now_s() - t0;
    }

    t0 = now_s();
    char stats_hex[65];
    if ((rc = reap_stats_digest(o->stats, o->n_stats, stats_hex)))
        goto fail;
    reap_manifest_inputs mi = {o->model_id, o->calib_ids, o->n_calib, stats_hex,
                               o->verify_rows ? (o->probe.backend ? o->probe.backend->name
                                                                  : "cpu")
                                              : NULL,
                               o->input_files, o->n_input_files, o->stats_model_id,
                               o->model_roots};
    if ((rc = reap_manifest_write(tmpdir, in_real, &res->ks, &mi, hasher, o->key,
                                  res->manifest_digest)) ||
        (rc = reap_fsync_dir(tmpdir)))
        goto fail;
    res->seconds_manifest = now_s() - t0;
    reap_hasher_counts(hasher, &res->n_files_prehashed, &res->bytes_prehashed);

    /* Into place. What is there now is checked again: the rewrite took a while. An
     * existing output is moved aside under the lock, so a prune killed between the two
     * renames leaves it for the next prune's sweep to put back. */
    if ((rc = output_check(target, o->out_dir, o->force)))
        goto fail;
    exists = lstat(target, &sb) == 0;
    if (exists) {
        if (rename(target, tmp.old) != 0) {
            rc = reap_err_set(REAP_E_IO, "%s: move aside: %s", target, strerror(errno));
            goto fail;
        }
        moved_aside = 1;
    }
    /* A directory rename, not reap_write_atomic's file rename: the whole output
     * directory, built under a temporary name, replaces the target at once. */
    if (rename(tmpdir, target) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: rename to %s: %s", tmpdir, target, strerror(errno));
        if (moved_aside && rename(tmp.old, target) == 0)
            moved_aside = 0;
        goto fail;
    }
    tmp_made = 0;
    if (moved_aside && reap_outdir_remove_tree(tmp.old) == 0)
        moved_aside = 0;
    rc = reap_fsync_dir(parent);
fail:
    reap_hasher_free(hasher); /* before the files go: a failed prune drops its queue */
    if (tmp_made)
        reap_outdir_remove_tree(tmpdir);
    /* The lock goes last, and only when nothing of this prune is left beside the output
     * (an old output that could not be put back keeps it: the next sweep restores it). */
    if (tmp.lock_fd >= 0 && !moved_aside)
        reap_outdir_tmp_release(&tmp);
    else if (tmp.lock_fd >= 0)
        close(tmp.lock_fd);
    reap_ckpt_close(out_ck);
    reap_config_free(&out_cfg);
    reap_ckpt_close(ck);
    reap_config_free(&cfg);
    return rc;
}

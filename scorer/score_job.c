/* score_job.c - one scoring run with identities, store commits, hidden-state checkpoints
 * and resume (score_job.h). */
#include "score_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib.h"
#include "catalog.h"
#include "checkpoint.h"
#include "config_check.h"
#include "config.h"
#include "engine.h"
#include "hidden_ckpt.h"
#include "reap_err.h"
#include "parallel.h"
#include "runs.h"
#include "score_vision.h"
#include "stats_store.h"
#include "tokenizer.h"

typedef struct job_ctx {
    const reap_score_job_opts *o;
    const reap_config *cfg;
    reap_score_result *res;
    reap_run_info run;
    int have_run;
    int cb_status;          /* error raised inside a callback */
    char cb_msg[1024];
    int stop_requested;
    int n_ckpt_skipped;     /* checkpoints that could not be written */
} job_ctx;

static int emit(job_ctx *j, reap_score_event *ev)
{
    ev->model_id = &j->res->model_id;
    ev->calib_id = &j->res->calib_id;
    ev->run_id = j->have_run ? j->run.run_id : NULL;
    ev->n_layers = j->cfg->n_layers;
    ev->cfg = j->cfg;
    return j->o->on_event ? j->o->on_event(j->o->ud, ev) : 0;
}

static int on_layer(void *ud, int layer, const reap_layer_stats *st, double seconds)
{
    job_ctx *j = ud;
    if (j->o->store) {
        reap_stats_outcome oc = REAP_STATS_WRITTEN;
        int rc = reap_store_run_commit_layer(j->o->store, &j->run, layer, seconds, st, &oc);
        if (rc) {
            j->cb_status = rc;
            snprintf(j->cb_msg, sizeof j->cb_msg, "%s", reap_err_msg());
            return 1;
        }
        if (oc == REAP_STATS_DIFFERENT) {
            reap_score_event ev = {.kind = REAP_SCORE_EV_DIFFER, .layer = layer};
            j->res->n_differ++;
            emit(j, &ev);
        }
    }
    reap_score_event ev = {.kind = REAP_SCORE_EV_LAYER, .layer = layer, .is_moe = st != NULL,
                           .seconds = seconds};
    if (emit(j, &ev)) {
        j->stop_requested = 1;
        return 1;
    }
    return 0;
}

/* A hidden-state checkpoint only saves work on a restart: one that cannot be written
 * (disk full, the folder unusable) is reported and skipped, never the end of the run.
 * The pair keeps its previous checkpoint, if any. */
static int on_checkpoint(void *ud, int layer, const float *hidden, int64_t T, int H)
{
    job_ctx *j = ud;
    int rc = reap_hidden_ckpt_write(j->o->store, &j->res->model_id, &j->res->calib_id, layer,
                                    hidden, T, H);
    if (rc == REAP_E_IO) {
        j->n_ckpt_skipped++;
        fprintf(stderr, "reap-scorer: warning: hidden-state checkpoint after layer %d not "
                        "written (%s); scoring goes on, a restart would resume from an older "
                        "checkpoint\n", layer, reap_err_msg());
        return REAP_OK;
    }
    return rc;
}

/* A checkpoint a resume cannot use: said, with what is wrong, since the run then starts
 * further back (an older checkpoint or layer 0) and takes longer than expected. */
static void on_ckpt_reject(void *ud, const char *path, const char *why)
{
    (void)ud;
    fprintf(stderr, "reap-scorer: warning: hidden-state checkpoint %s is not usable (%s); "
                    "resuming from an older checkpoint or from the start\n", path, why);
}

/* The pair is complete: its checkpoints are of no further use. Failing to remove them
 * costs disk space, not results, so it is a warning. */
static void clear_checkpoints(reap_store *s, const reap_score_result *res)
{
    if (reap_hidden_ckpt_clear(s, &res->model_id, &res->calib_id))
        fprintf(stderr, "reap-scorer: warning: hidden-state checkpoints of the finished "
                        "pair not removed: %s\n", reap_err_msg());
}

/* Model record fields from the config. */
static int fill_model(const reap_config *cfg, reap_model_info *m)
{
    int n = reap_config_n_moe_layers(cfg), k = 0;
    m->model_type = strdup(cfg->model_type);
    m->moe_layers = malloc((size_t)(n > 0 ? n : 1) * sizeof *m->moe_layers);
    if (!m->model_type || !m->moe_layers)
        return reap_err_set(REAP_E_NOMEM, "model record");
    for (int l = 0; l < cfg->n_layers; l++)
        if (reap_config_layer_is_moe(cfg, l))
            m->moe_layers[k++] = l;
    m->n_moe_layers = k;
    m->n_layers = cfg->n_layers;
    m->hidden = cfg->hidden;
    m->n_experts = cfg->n_experts;
    m->top_k = cfg->n_experts_used;
    return REAP_OK;
}

/* First MoE layer of the pair without a record (n_layers when complete). */
static int first_missing_layer(reap_store *s, const reap_model_info *m, const reap_id *mid,
                               const reap_id *cid, int *first)
{
    int *have = NULL, n = 0, k = 0, rc;
    *first = m->n_layers;
    if ((rc = reap_store_stats_layers(s, NULL, mid, cid, &have, &n)))
        return rc;
    for (int i = 0; i < m->n_moe_layers; i++) {
        while (k < n && have[k] < m->moe_layers[i])
            k++;
        if (k >= n || have[k] != m->moe_layers[i]) {
            *first = m->moe_layers[i];
            break;
        }
    }
    free(have);
    return REAP_OK;
}

/* This calibration set's records for every MoE layer, from one snapshot. */
static int read_back(reap_store *s, const reap_model_info *m, reap_score_result *res)
{
    reap_store_snap *snap = NULL;
    int rc;
    res->stats = calloc((size_t)m->n_moe_layers, sizeof *res->stats);
    if (!res->stats)
        return reap_err_set(REAP_E_NOMEM, "statistics");
    if ((rc = reap_store_snap_begin(s, &snap)))
        return rc;
    for (int i = 0; i < m->n_moe_layers && !rc; i++) {
        rc = reap_store_stats_get(s, snap, &res->model_id, &res->calib_id, m->moe_layers[i],
                                  &res->stats[i]);
        if (rc == REAP_E_NOTFOUND)
            rc = reap_err_set(rc, "%s: layer %d has no statistics after the run",
                              reap_store_dir(s), m->moe_layers[i]);
        if (!rc)
            res->n_stats++;
    }
    reap_store_snap_end(snap);
    return rc;
}

/* Progress of the vision tower (EV_VISION). */
static int on_vision_batch(void *ud, const reap_score_vision_batch *b)
{
    reap_score_event ev = {.kind = REAP_SCORE_EV_VISION, .images_done = b->first + b->n,
                           .n_images = b->total, .vision = b};
    return emit(ud, &ev);
}

/* The vision tower's features for the rows' images, into *feat (score_vision.h). */
static int vision_features(job_ctx *j, const reap_ckpt *ck, const reap_config *cfg,
                           reap_score_probe *probe, const reap_rows *rows,
                           reap_score_features *feat)
{
    int threads = j->o->backend_opts.threads > 0 ? j->o->backend_opts.threads
                                                 : reap_cpu_count();
    int rc = reap_score_vision_run(ck, cfg, rows, probe, j->o->calib_roots, threads,
                                   j->o->vision_batch_patches, on_vision_batch, j, feat);
    if (rc == REAP_E_CANCELLED)
        j->stop_requested = 1;
    if (rc)
        return rc;
    reap_score_event ev = {.kind = REAP_SCORE_EV_FEATURES, .rows = rows, .image = &feat->f};
    if (emit(j, &ev)) {
        j->stop_requested = 1;
        return reap_err_set(REAP_E_CANCELLED, "stopped on request after the vision tower, "
                                              "before scoring began (nothing was committed)");
    }
    return REAP_OK;
}

/* While a calibration FIFO has no data: ask on_event whether to give up. */
static int calib_should_stop(void *ud)
{
    reap_score_event ev = {.kind = REAP_SCORE_EV_WAITING};
    return emit(ud, &ev);
}

/* The tokenizer for the first text or messages item (calib.h load_tokenizer). */
typedef struct tok_loader {
    const char *path;               /* NULL: none available */
    const reap_roots *roots;
    reap_tokenizer *tok;            /* loaded, owned */
} tok_loader;

static int load_tokenizer(void *ud, reap_tokenizer **out)
{
    tok_loader *l = ud;
    int rc = l->path ? reap_tokenizer_load_confined(l->path, l->roots, &l->tok) : REAP_OK;
    *out = l->tok;
    return rc;
}

/* Read the calibration samples, in one pass (the file may be a pipe). The tokenizer is
 * loaded only when the file needs one (its first text or messages item), so a file of
 * token ids keeps the same calib_id whether or not --tokenizer is given; without
 * --tokenizer the model directory's tokenizer.json is used when there is one. *tok
 * receives the tokenizer used, or NULL. */
static int load_samples(job_ctx *j, const reap_config *cfg, reap_score_probe *probe,
                        reap_samples *smp, reap_tokenizer **tok)
{
    const reap_score_job_opts *o = j->o;
    char model_tok[4096];
    tok_loader tl = {.path = o->tokenizer_path, .roots = o->model_roots};
    if (!tl.path && o->model_dir) {
        /* Default: the model's own tokenizer.json, when the checkpoint ships one. */
        snprintf(model_tok, sizeof model_tok, "%s/tokenizer.json", o->model_dir);
        if (access(model_tok, F_OK) == 0)
            tl.path = model_tok;
    }
    reap_calib_opts co = {.path = o->calib_path, .max_samples = o->max_samples,
                          .vocab = cfg->vocab, .shuffle = o->shuffle, .seed = o->seed,
                          .load_tokenizer = load_tokenizer, .tokenizer_ud = &tl,
                          .roots = o->calib_roots, .should_stop = calib_should_stop,
                          .stop_ud = j};
    if (cfg->vision.present) {
        /* Image items: probed with the model's preprocessing (score_vision.h). */
        co.has_vision = 1;
        co.spatial_merge = cfg->vision.merge;
        co.probe_image = reap_score_probe_image;
        co.probe_ud = probe;
    }
    int rc = reap_calib_load(&co, smp);
    if (rc) {
        reap_tokenizer_free(tl.tok);
        tl.tok = NULL;
    }
    *tok = tl.tok;
    return rc;
}

void reap_score_result_free(reap_score_result *res)
{
    if (!res)
        return;
    for (int i = 0; i < res->n_stats; i++)
        reap_layer_stats_free(&res->stats[i]);
    free(res->stats);
    memset(res, 0, sizeof *res);
}

int reap_score_job_run(const reap_score_job_opts *o, reap_score_result *res)
{
    reap_config cfg = {0};
    reap_ckpt *ck = NULL;
    reap_samples samples = {0};
    reap_rows rows = {0};
    reap_model_info model = {0};
    reap_calib_info calib = {0};
    reap_layer_stats *stats = NULL;
    reap_tokenizer *tok = NULL;
    reap_score_features feat = {0};
    float *start_hidden = NULL;
    int n_stats = 0, rc, start = 0, pair_lock = -1;
    char path[4096];
    job_ctx j = {.o = o, .cfg = &cfg, .res = res};
    reap_store *s = o->store;
    reap_score_probe *probe = NULL;
    memset(res, 0, sizeof *res);

    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    if ((rc = reap_config_load_confined(path, o->model_roots, &cfg)))
        goto fail;
    if (reap_config_n_moe_layers(&cfg) == 0) {
        rc = reap_err_set(REAP_E_INVALID, "%s: the model has no MoE layer to score", path);
        goto fail;
    }
    /* config.json against the shards before anything is hashed or sized from it. */
    if ((rc = reap_ckpt_open_confined(o->model_dir, o->model_roots, &ck)) ||
        (rc = reap_config_check_ckpt(&cfg, ck)))
        goto fail;
    if ((rc = reap_model_identify_confined(s, o->model_dir, o->model_roots, o->hash_threads,
                                           &model, &res->hash)) ||
        (rc = fill_model(&cfg, &model)))
        goto fail;
    res->model_id = model.id;
    if (cfg.vision.present &&
        (rc = reap_score_probe_new(o->model_dir, o->model_roots, &cfg.vision, o->min_pixels,
                                   o->max_pixels, &probe)))
        goto fail;
    if ((rc = load_samples(&j, &cfg, probe, &samples, &tok)) ||
        (rc = reap_rows_build(&samples, o->seq_len, o->pack, &rows)))
        goto fail;
    reap_calib_id_compute(&rows, o->pack, tok ? reap_tokenizer_digest(tok) : NULL,
                          &res->calib_id);
    res->n_tokens = rows.n_valid;
    int64_t n_image_tokens = 0;
    for (int i = 0; i < rows.n_images; i++)
        n_image_tokens += rows.images[i].n_tokens;
    reap_score_event ev_ids = {.kind = REAP_SCORE_EV_IDS, .n_samples = samples.n,
                               .n_rows = rows.n_rows, .seq_len = rows.seq_len,
                               .n_tokens = rows.n_valid, .hash = &res->hash,
                               .n_images = rows.n_images, .n_image_tokens = n_image_tokens};
    if (emit(&j, &ev_ids)) {
        rc = reap_err_set(REAP_E_CANCELLED, "stopped on request before scoring began "
                                            "(nothing was committed)");
        goto fail;
    }

    if (s) {
        calib.id = res->calib_id;
        calib.source = (char *)o->calib_path;
        calib.n_samples = (uint64_t)samples.n;
        calib.n_rows = rows.n_rows;
        calib.seq_len = rows.seq_len;
        calib.pack = o->pack ? 1 : 0;
        calib.n_tokens = (uint64_t)rows.n_valid;
        if (tok) {
            calib.has_tokenizer = 1;
            memcpy(calib.tokenizer_digest, reap_tokenizer_digest(tok), 32);
        }
        int first, stale;
        if ((rc = reap_store_pair_lock(s, &res->model_id, &res->calib_id, &pair_lock)) ||
            (rc = reap_store_model_put(s, &model)) || (rc = reap_store_calib_put(s, &calib)) ||
            (rc = reap_store_pair_stale(s, NULL, &res->model_id, &res->calib_id, &stale)))
            goto fail;
        /* Stale records are never skipped, resumed or kept next to new ones (records are
         * immutable, so new ones could not replace them): refuse before anything runs. */
        if (stale) {
            char mh[65], ch[65];
            reap_id_hex(&res->model_id, mh);
            reap_id_hex(&res->calib_id, ch);
            rc = reap_err_set(REAP_E_PRECONDITION,
                              "%s: model %.16s calibration %.16s: the stored statistics were "
                              "scored before the rotary-positions fix for packed Qwen3-VL-MoE "
                              "rows (positions_rule 0) and are wrong; they must be replaced, "
                              "which a store cannot do in place: score into a new store "
                              "(reap-scorer export --model carries the records of other "
                              "models over)",
                              reap_store_dir(s), mh, ch);
            goto fail;
        }
        if ((rc = first_missing_layer(s, &model, &res->model_id, &res->calib_id, &first)))
            goto fail;
        /* Runs of this pair killed earlier: record them as interrupted. */
        if ((rc = reap_store_run_mark_interrupted(s, &res->model_id, &res->calib_id, NULL)))
            goto fail;
        if (first >= cfg.n_layers && !o->force) {
            reap_score_event ev = {.kind = REAP_SCORE_EV_COMPLETE};
            res->already_complete = 1;
            emit(&j, &ev);
            /* A run killed after its last commit leaves its checkpoints behind. */
            clear_checkpoints(s, res);
            rc = read_back(s, &model, res);
            goto fail;
        }
        /* The images' features, before the run record: a stop or a failure here (a
         * changed image) commits nothing, like one before EV_IDS. */
        if (rows.n_spans > 0 && (rc = vision_features(&j, ck, &cfg, probe, &rows, &feat)))
            goto fail;
        /* Resume: the newest checkpoint leaving a layer before the first missing one. */
        int ck_layer;
        if (!o->force && first > 0 &&
            reap_hidden_ckpt_load(s, &res->model_id, &res->calib_id, first - 1,
                                  (int64_t)rows.n_rows * rows.seq_len, cfg.hidden,
                                  on_ckpt_reject, NULL, &ck_layer, &start_hidden) == REAP_OK)
            start = ck_layer + 1;
        char device[32];
        snprintf(device, sizeof device, "%s:%d", o->backend ? o->backend->name : "cpu",
                 o->backend_opts.device);
        if ((rc = reap_store_run_begin(s, o->run_id, &res->model_id, &res->calib_id,
                                       cfg.n_layers, start, o->backend ? o->backend->name
                                                                       : "cpu",
                                       device, o->request, &j.run)))
            goto fail;
        j.have_run = 1;
        res->has_run = 1;
        memcpy(res->run_id, j.run.run_id, 16);
    }
    if (!s && rows.n_spans > 0 &&
        (rc = vision_features(&j, ck, &cfg, probe, &rows, &feat)))
        goto fail;
    res->start_layer = start;
    reap_score_event ev_start = {.kind = REAP_SCORE_EV_START, .start_layer = start};
    emit(&j, &ev_start);

    reap_engine_opts eo = {
        .backend = o->backend,
        .backend_opts = o->backend_opts,
        .on_layer = on_layer,
        .ud = &j,
        .start_layer = start,
        .start_hidden = start_hidden,
        .checkpoint_every = s ? o->checkpoint_every : 0,
        .on_checkpoint = s ? on_checkpoint : NULL,
        .image = rows.n_spans > 0 ? &feat.f : NULL,
    };
    rc = reap_engine_score(ck, &cfg, &rows, &eo, &stats, &n_stats);
    free(start_hidden);
    start_hidden = NULL;
    if (rc && j.cb_status)
        rc = reap_err_set(j.cb_status, "%s", j.cb_msg);
    else if (rc == REAP_E_CANCELLED && j.stop_requested)
        rc = reap_err_set(REAP_E_CANCELLED, "stopped on request after layer %d",
                          j.run.layers_done - 1);
    if (rc)
        goto fail;
    if (!s) {
        res->stats = stats;
        res->n_stats = n_stats;
        stats = NULL;
        n_stats = 0;
        goto fail;
    }
    if ((rc = reap_store_run_finish(s, &j.run, REAP_RUN_DONE, NULL)))
        goto fail;
    clear_checkpoints(s, res);
    rc = read_back(s, &model, res);
fail:
    if (rc && j.have_run && j.run.state == REAP_RUN_RUNNING) {
        /* Record the failure; keep the first error's message for the caller. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", reap_err_msg());
        reap_store_run_finish(s, &j.run, rc == REAP_E_CANCELLED ? REAP_RUN_CANCELLED
                                                                : REAP_RUN_FAILED, msg);
        reap_err_set(rc, "%s", msg);
    }
    reap_store_pair_unlock(pair_lock);
    free(start_hidden);
    reap_score_features_free(&feat);
    reap_score_probe_free(probe);
    for (int i = 0; i < n_stats; i++)
        reap_layer_stats_free(&stats[i]);
    free(stats);
    reap_run_info_free(&j.run);
    reap_model_info_free(&model);
    reap_rows_free(&rows);
    reap_samples_free(&samples);
    reap_tokenizer_free(tok);
    reap_ckpt_close(ck);
    reap_config_free(&cfg);
    return rc;
}

/* test_score_job_images.c - the scoring job (scorer/score_job.h) with image items, on a
 * generated Qwen3-VL-MoE checkpoint with a real vision tower:
 *   - a run without a store: the vision events (EV_VISION per tower call, then
 *     EV_FEATURES with the features of every image token) come before EV_START;
 *   - the tower in calls of one image each gives bit-identical statistics;
 *   - a stop asked at EV_VISION ends the job before anything is committed: no run
 *     record, no statistics;
 *   - a run stopped after layer 0 resumes from its hidden-state checkpoint (the image
 *     features then only add the later deepstack sets) and ends with statistics
 *     bit-identical to the run without a store.
 * The numbers themselves are checked against the float64 oracle by oracle_vision_e2e_*.
 *
 * Usage: test_score_job_images SCRATCH_DIR (created if missing).
 */
#include <stdio.h>
#include <string.h>

#include "genmodel.h"
#include "reap_err.h"
#include "runs.h"
#include "score_job.h"
#include "stats_store.h"
#include "store.h"
#include "test_util.h"
#include "test_fixtures.h"

typedef struct watcher {
    int stop_at;                 /* event kind to stop at, -1: none */
    int n_vision, n_features, n_start, n_layers, order_ok;
    int64_t feature_tokens;
} watcher;

static int on_event(void *ud, const reap_score_event *ev)
{
    watcher *w = ud;
    switch (ev->kind) {
    case REAP_SCORE_EV_VISION:
        w->n_vision++;
        w->order_ok &= w->n_start == 0 && ev->images_done <= ev->n_images;
        break;
    case REAP_SCORE_EV_FEATURES:
        w->n_features++;
        w->feature_tokens = ev->image->n_image_tokens;
        w->order_ok &= w->n_start == 0 && w->n_vision > 0;
        break;
    case REAP_SCORE_EV_START:
        w->n_start++;
        break;
    case REAP_SCORE_EV_LAYER:
        w->n_layers++;
        break;
    }
    return ev->kind == w->stop_at;
}

static int n_runs(reap_store *st)
{
    reap_run_info *runs = NULL;
    int n = 0;
    CHECK_RC(reap_store_run_list(st, NULL, &runs, &n), REAP_OK);
    for (int i = 0; i < n; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    return n;
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_score_job_images";
    CHECK(fresh_dir(scratch) == 0);
    char mdir[4096], calib[4096], sdir[4096], tok[4096], fx[4096];
    snprintf(mdir, sizeof mdir, "%s", sp("m"));
    snprintf(calib, sizeof calib, "%s", sp("c.jsonl"));
    snprintf(sdir, sizeof sdir, "%s", sp("store"));
    fixtures_dir(fx, sizeof fx);
    path_join(tok, sizeof tok, fx, "qwen3-tokenizer");

    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_VL_MOE);
    spec.n_layers = 3;
    spec.vocab = 151936;        /* the Qwen3 tokenizer's ids, vision tokens included */
    spec.vision.enabled = 1;
    CHECK_RC(reap_gen_model(&spec, mdir), REAP_OK);
    /* An 8 x 8 RGB PNG: 8 x 8 patches of 4 after smart_resize to 32 x 32, 16 image
     * tokens. */
    size_t png8_n;
    const uint8_t *png8 = test_png8(&png8_n);
    write_bytes(sp("a.png"), png8, png8_n);
    write_bytes(sp("b.png"), png8, png8_n);
    write_text(calib,
               "{\"image\": \"a.png\", \"text\": \"one\"}\n"
               "{\"text\": \"a text item between the images\"}\n"
               "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", "
               "\"image\": \"b.png\"}, {\"type\": \"text\", \"text\": \"two\"}]}]}\n");

    reap_score_job_opts o = {0};
    o.model_dir = mdir;
    o.calib_path = calib;
    o.tokenizer_path = tok;
    o.seq_len = 64;
    o.pack = 1;
    o.hash_threads = 1;
    o.backend_opts.threads = 1;
    o.on_event = on_event;

    /* The reference: no store, the tower in one call. */
    watcher w0 = {.stop_at = -1, .order_ok = 1};
    o.ud = &w0;
    reap_score_result ref;
    CHECK_RC(reap_score_job_run(&o, &ref), REAP_OK);
    CHECK(ref.n_stats == spec.n_layers);
    CHECK(w0.n_vision == 1 && w0.n_features == 1 && w0.order_ok);
    CHECK_MSG(w0.feature_tokens == 32, "%lld image tokens", (long long)w0.feature_tokens);

    /* One image per tower call: the same statistics, bit for bit. */
    watcher w1 = {.stop_at = -1, .order_ok = 1};
    o.ud = &w1;
    o.vision_batch_patches = 64;
    reap_score_result r1;
    CHECK_RC(reap_score_job_run(&o, &r1), REAP_OK);
    CHECK(w1.n_vision == 2 && w1.order_ok);
    CHECK(r1.n_stats == ref.n_stats && stats_identical(r1.stats, ref.stats, ref.n_stats));
    reap_score_result_free(&r1);
    o.vision_batch_patches = 0;

    reap_store_opts so = {.create = 1};
    reap_store *st = NULL;
    CHECK_RC(reap_store_open(sdir, &so, &st), REAP_OK);
    if (!st)
        return 1;
    o.store = st;
    o.checkpoint_every = 1;

    /* Stopped in the vision tower: nothing committed. */
    watcher w2 = {.stop_at = REAP_SCORE_EV_VISION, .order_ok = 1};
    o.ud = &w2;
    reap_score_result r2;
    CHECK_RC(reap_score_job_run(&o, &r2), REAP_E_CANCELLED);
    CHECK_ERRMSG("nothing was committed");
    CHECK(!r2.has_run && w2.n_start == 0 && w2.n_layers == 0);
    CHECK(n_runs(st) == 0);
    reap_score_result_free(&r2);

    /* Stopped after layer 0, then resumed from its checkpoint: the same statistics. */
    watcher w3 = {.stop_at = REAP_SCORE_EV_LAYER, .order_ok = 1};
    o.ud = &w3;
    reap_score_result r3;
    CHECK_RC(reap_score_job_run(&o, &r3), REAP_E_CANCELLED);
    CHECK(w3.n_layers == 1 && r3.has_run);
    reap_score_result_free(&r3);
    watcher w4 = {.stop_at = -1, .order_ok = 1};
    o.ud = &w4;
    reap_score_result r4;
    CHECK_RC(reap_score_job_run(&o, &r4), REAP_OK);
    CHECK(r4.start_layer == 1 && w4.n_vision == 1 && w4.order_ok);
    CHECK(r4.n_stats == ref.n_stats && stats_identical(r4.stats, ref.stats, ref.n_stats));
    reap_score_result_free(&r4);

    reap_score_result_free(&ref);
    reap_store_close(st);
    TEST_MAIN_END();
}

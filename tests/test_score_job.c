/* test_score_job.c - the scoring job (scorer/score_job.h) against a real store on a
 * generated model, for what the services and the CLI rely on when a run is stopped:
 *   - a stop asked at the identification event ends the job before scoring begins:
 *     REAP_E_CANCELLED, "before scoring began", no run record, no statistics record;
 *   - a stop asked at the first layer event ends it after that layer is committed: one
 *     run record, state cancelled, layers_done 1, the layer's statistics stored;
 *   - a damaged checkpoint is not used and the run says so on stderr, naming the file and
 *     what is wrong (its digest), and starts at layer 0;
 *   - scoring the pair again resumes from the hidden-state checkpoint left after layer 0
 *     (start_layer 1) and ends with statistics bit-identical to a run without a store;
 *   - a run id chosen by the caller (the run manager's, made at submission) is the id of
 *     the store's run record;
 *   - a complete packed Qwen3-VL-MoE pair whose records were written before the rotary-
 *     positions fix (positions_rule 0) is not "already scored": the job refuses with
 *     REAP_E_PRECONDITION saying so (with --force too), writes no run record; the same
 *     pair scored by this build is already scored.
 *
 * Usage: test_score_job SCRATCH_DIR (created if missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog.h"
#include "genmodel.h"
#include "reap_err.h"
#include "runs.h"
#include "score_job.h"
#include "stats_store.h"
#include "store.h"
#include "test_util.h"
#include "test_fixtures.h"

/* Stops the job at the first event of kind `at` (and counts the events seen). */
typedef struct stopper {
    int at;
    int n_ids, n_start, n_layers, n_complete;
} stopper;

static int on_event(void *ud, const reap_score_event *ev)
{
    stopper *s = ud;
    s->n_ids += ev->kind == REAP_SCORE_EV_IDS;
    s->n_start += ev->kind == REAP_SCORE_EV_START;
    s->n_layers += ev->kind == REAP_SCORE_EV_LAYER;
    s->n_complete += ev->kind == REAP_SCORE_EV_COMPLETE;
    return ev->kind == s->at;
}

static int n_runs(reap_store *st, reap_run_info *last)
{
    reap_run_info *runs = NULL;
    int n = 0;
    CHECK_RC(reap_store_run_list(st, NULL, &runs, &n), REAP_OK);
    for (int i = 0; i < n; i++) {
        if (i == n - 1 && last)
            *last = runs[i];
        else
            reap_run_info_free(&runs[i]);
    }
    free(runs);
    return n;
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_score_job";
    CHECK(fresh_dir(scratch) == 0);
    const char *mdir = sp("m"), *calib = sp("c.jsonl"), *sdir = sp("store");
    char mdir_s[4096], calib_s[4096], sdir_s[4096];
    snprintf(mdir_s, sizeof mdir_s, "%s", mdir);
    snprintf(calib_s, sizeof calib_s, "%s", calib);
    snprintf(sdir_s, sizeof sdir_s, "%s", sdir);
    reap_gen_spec spec;
    reap_gen_spec_default(&spec, REAP_FAMILY_QWEN3_MOE);
    spec.n_layers = 3;
    CHECK_RC(reap_gen_model(&spec, mdir_s), REAP_OK);
    CHECK_RC(reap_gen_calib(calib_s, 6, 8, 40, spec.vocab, 11), REAP_OK);

    reap_score_job_opts o = {0};
    o.model_dir = mdir_s;
    o.calib_path = calib_s;
    o.seq_len = 32;
    o.pack = 1;
    o.hash_threads = 1;
    o.backend_opts.threads = 1;

    /* The reference: no store. */
    reap_score_result ref;
    CHECK_RC(reap_score_job_run(&o, &ref), REAP_OK);
    CHECK(ref.n_stats > 0);

    reap_store_opts so = {.create = 1};
    reap_store *st = NULL;
    CHECK_RC(reap_store_open(sdir_s, &so, &st), REAP_OK);
    if (!st)
        return 1;
    o.store = st;
    o.checkpoint_every = 1;
    o.on_event = on_event;

    /* 1. Stopped while identifying: nothing written. */
    stopper s1 = {.at = REAP_SCORE_EV_IDS};
    o.ud = &s1;
    reap_score_result r1;
    CHECK_RC(reap_score_job_run(&o, &r1), REAP_E_CANCELLED);
    CHECK_ERRMSG("before scoring began");
    CHECK(s1.n_ids == 1 && s1.n_start == 0 && s1.n_layers == 0);
    CHECK(!r1.has_run);
    CHECK(n_runs(st, NULL) == 0);
    int *layers = NULL, nl = -1;
    CHECK_RC(reap_store_stats_layers(st, NULL, &ref.model_id, &ref.calib_id, &layers, &nl),
             REAP_OK);
    CHECK(nl == 0);
    free(layers);
    reap_score_result_free(&r1);

    /* 2. Stopped at the first layer: that layer committed, the run cancelled. */
    stopper s2 = {.at = REAP_SCORE_EV_LAYER};
    o.ud = &s2;
    reap_score_result r2;
    CHECK_RC(reap_score_job_run(&o, &r2), REAP_E_CANCELLED);
    CHECK_ERRMSG("after layer 0");
    CHECK(s2.n_layers == 1 && r2.has_run);
    reap_run_info last = {0};
    CHECK(n_runs(st, &last) == 1);
    CHECK(last.state == REAP_RUN_CANCELLED && last.layers_done == 1);
    CHECK(!memcmp(last.run_id, r2.run_id, 16));
    reap_run_info_free(&last);
    CHECK_RC(reap_store_stats_layers(st, NULL, &ref.model_id, &ref.calib_id, &layers, &nl),
             REAP_OK);
    CHECK(nl == 1 && layers && layers[0] == 0);
    free(layers);
    reap_score_result_free(&r2);

    /* 2b. The checkpoint left after layer 0 damaged (one byte of its hidden states):
     * not used, and said on stderr, naming the file and what is wrong; the run starts
     * at layer 0 (stopped after it, which writes a good checkpoint again). */
    char mh[65], ch[65], ckpath[8192], errpath[4096];
    reap_id_hex(&ref.model_id, mh);
    reap_id_hex(&ref.calib_id, ch);
    snprintf(ckpath, sizeof ckpath, "%s/checkpoints/%s-%s/layer-00000.bin", sdir_s, mh, ch);
    snprintf(errpath, sizeof errpath, "%s", sp("stderr.txt"));
    FILE *cf = fopen(ckpath, "r+b");
    CHECK(cf && fseek(cf, 200, SEEK_SET) == 0);
    int byte = cf ? fgetc(cf) : EOF;
    CHECK(byte != EOF && fseek(cf, 200, SEEK_SET) == 0 && fputc(byte ^ 0x40, cf) != EOF);
    if (cf)
        fclose(cf);
    stopper s2b = {.at = REAP_SCORE_EV_LAYER};
    o.ud = &s2b;
    reap_score_result r2b;
    fflush(stderr);
    int saved = dup(2), efd = open(errpath, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(saved >= 0 && efd >= 0 && dup2(efd, 2) == 2);
    int rc2b = reap_score_job_run(&o, &r2b);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(efd);
    CHECK_RC(rc2b, REAP_E_CANCELLED);
    CHECK(r2b.start_layer == 0 && s2b.n_layers == 1);
    char err[4096] = "";
    FILE *ef = fopen(errpath, "r");
    size_t ne = ef ? fread(err, 1, sizeof err - 1, ef) : 0;
    err[ne] = 0;
    if (ef)
        fclose(ef);
    CHECK_MSG(strstr(err, ckpath) && strstr(err, "digest (damaged)") &&
                  strstr(err, "warning"),
              "stderr of a resume over a damaged checkpoint: \"%s\"", err);
    reap_score_result_free(&r2b);

    /* 3. Again, with the caller's run id: resumes after layer 0, same statistics. */
    uint8_t want[16];
    reap_run_id_new(want);
    o.run_id = want;
    stopper s3 = {.at = -1};
    o.ud = &s3;
    reap_score_result r3;
    CHECK_RC(reap_score_job_run(&o, &r3), REAP_OK);
    CHECK(r3.start_layer == 1);
    CHECK(r3.has_run && !memcmp(r3.run_id, want, 16));
    CHECK(s3.n_layers == spec.n_layers - 1);
    CHECK(r3.n_stats == ref.n_stats && stats_identical(r3.stats, ref.stats, ref.n_stats));
    CHECK(n_runs(st, &last) == 3);
    CHECK(last.state == REAP_RUN_DONE && !memcmp(last.run_id, want, 16));
    reap_run_info_free(&last);
    reap_score_result_free(&r3);

    /* 4. Stale records: a packed Qwen3-VL-MoE pair scored into store "vl_new" by this
     * build, and the same statistics in store "vl_old" as an older build wrote them. */
    char vdir[4096], new_s[4096], old_s[4096];
    snprintf(vdir, sizeof vdir, "%s", sp("vl"));
    snprintf(new_s, sizeof new_s, "%s", sp("vl_new"));
    snprintf(old_s, sizeof old_s, "%s", sp("vl_old"));
    reap_gen_spec vspec;
    reap_gen_spec_default(&vspec, REAP_FAMILY_QWEN3_VL_MOE);
    vspec.n_layers = 2;
    CHECK_RC(reap_gen_model(&vspec, vdir), REAP_OK);
    CHECK_RC(reap_gen_calib(calib_s, 6, 8, 40, vspec.vocab, 11), REAP_OK);
    reap_store *snew = NULL, *sold = NULL;
    CHECK_RC(reap_store_open(new_s, &so, &snew), REAP_OK);
    CHECK_RC(reap_store_open(old_s, &so, &sold), REAP_OK);
    if (!snew || !sold)
        return 1;
    o.model_dir = vdir;
    o.run_id = NULL;
    o.store = snew;
    stopper s4 = {.at = -1};
    o.ud = &s4;
    reap_score_result r4;
    CHECK_RC(reap_score_job_run(&o, &r4), REAP_OK);
    CHECK(r4.n_stats == vspec.n_layers && !r4.already_complete);
    reap_model_info vm = {0};
    reap_calib_info vc = {0};
    CHECK_RC(reap_store_model_get(snew, NULL, &r4.model_id, &vm), REAP_OK);
    CHECK_RC(reap_store_calib_get(snew, NULL, &r4.calib_id, &vc), REAP_OK);
    CHECK(vc.pack == 1);
    CHECK_RC(reap_store_model_put(sold, &vm), REAP_OK);
    CHECK_RC(reap_store_calib_put(sold, &vc), REAP_OK);
    for (int i = 0; i < r4.n_stats; i++)
        CHECK_RC(reap_store_stats_put_rule(sold, &r4.model_id, &r4.calib_id, &r4.stats[i],
                                           "cpu", 0, NULL),
                 REAP_OK);
    reap_model_info_free(&vm);
    reap_calib_info_free(&vc);
    /* This build's records: already scored. */
    stopper s5 = {.at = -1};
    o.ud = &s5;
    reap_score_result r5;
    CHECK_RC(reap_score_job_run(&o, &r5), REAP_OK);
    CHECK(r5.already_complete && s5.n_complete == 1);
    reap_score_result_free(&r5);
    /* The older build's records: refused, plain and with --force; no run record. */
    o.store = sold;
    for (int force = 0; force < 2; force++) {
        stopper s6 = {.at = -1};
        o.ud = &s6;
        o.force = force;
        reap_score_result r6;
        CHECK_RC(reap_score_job_run(&o, &r6), REAP_E_PRECONDITION);
        CHECK_ERRMSG("before the rotary-positions fix");
        CHECK_ERRMSG("new store");
        CHECK(!r6.already_complete && s6.n_complete == 0 && s6.n_start == 0);
        CHECK(!r6.has_run && n_runs(sold, NULL) == 0);
        reap_score_result_free(&r6);
    }
    o.force = 0;
    reap_score_result_free(&r4);
    reap_store_close(snew);
    reap_store_close(sold);

    reap_score_result_free(&ref);
    reap_store_close(st);
    TEST_MAIN_END();
}

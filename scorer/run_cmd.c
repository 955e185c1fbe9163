/* run_cmd.c - `reap-scorer run`: score a checkpoint on a calibration file in one process
 * and write the per-layer statistics as JSON / a table. With --store DIR each layer is
 * committed to the score store, a killed run resumes, complete work is skipped, and the
 * output is the merged view of every complete calibration set of the model
 * (score_job.h does the work). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "backend_cli.h"
#include "calib.h"
#include "checkpoint.h"
#include "cli.h"
#include "config.h"
#include "engine.h"
#include "reap_err.h"
#include "runs.h"
#include "score_job.h"
#include "scorer_cmds.h"
#include "stats_json.h"
#include "layer_gate.h"
#include "stats_table.h"
#include "stats_store.h"
#include "store.h"
#include "vision_dump.h"

/* SIGINT / SIGTERM: stop after the layer in progress is committed. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

typedef struct run_progress {
    int64_t valid_tokens;
    int quiet;
    const char *store_dir;
    scorer_layer_gate *gate;   /* --layer-gate (tests): waited on before each layer */
    scorer_vision_dump *dump;  /* --dump-vision (tests), NULL: none */
    int dump_rc;               /* its first error */
} run_progress;

static int on_event(void *ud, const reap_score_event *ev)
{
    run_progress *p = ud;
    char mh[65], ch[65], rh[33];
    reap_id_hex(ev->model_id, mh);
    reap_id_hex(ev->calib_id, ch);
    switch (ev->kind) {
    case REAP_SCORE_EV_IDS:
        p->valid_tokens = ev->n_tokens;
        if (!p->quiet)
            fprintf(stderr, "reap-scorer: model_id %s (%d files, %.2f GB, %d cached, "
                            "hashed %.2f GB in %.2f s)\n"
                            "reap-scorer: calib_id %s (%lld samples -> %lld rows x %lld, "
                            "%lld valid tokens)\n",
                    mh, ev->hash->n_files, ev->hash->bytes_total / 1e9, ev->hash->n_cached,
                    ev->hash->bytes_hashed / 1e9, ev->hash->seconds, ch,
                    (long long)ev->n_samples, (long long)ev->n_rows, (long long)ev->seq_len,
                    (long long)ev->n_tokens);
        break;
    case REAP_SCORE_EV_COMPLETE:
        fprintf(stderr, "reap-scorer: model %.16s calibration %.16s is already scored in %s "
                        "(every MoE layer): nothing to do (--force scores it again)\n",
                mh, ch, p->store_dir);
        break;
    case REAP_SCORE_EV_START:
        if (ev->run_id && !p->quiet) {
            reap_run_id_hex(ev->run_id, rh);
            fprintf(stderr, "reap-scorer: run %s: %s at layer %d/%d\n", rh,
                    ev->start_layer ? "resuming from a hidden-state checkpoint" : "starting",
                    ev->start_layer + 1, ev->n_layers);
        }
        if (ev->start_layer < ev->n_layers)
            scorer_layer_gate_wait(p->gate);
        break;
    case REAP_SCORE_EV_VISION:
        if (!p->quiet)
            fprintf(stderr, "reap-scorer: vision tower: %d/%d images (%lld patches in "
                            "%.2f s)\n", ev->images_done, ev->n_images,
                    (long long)ev->vision->n_patches, ev->vision->seconds);
        if (p->dump && !p->dump_rc)
            p->dump_rc = scorer_vision_dump_batch(p->dump, ev->vision);
        break;
    case REAP_SCORE_EV_FEATURES:
        if (p->dump && !p->dump_rc)
            p->dump_rc = scorer_vision_dump_features(p->dump, ev->rows, ev->image,
                                                     ev->cfg->hidden);
        break;
    case REAP_SCORE_EV_DIFFER:
        fprintf(stderr, "reap-scorer: warning: layer %d: recomputed statistics differ from "
                        "the stored record (the stored record is kept)\n", ev->layer);
        break;
    case REAP_SCORE_EV_LAYER:
        if (!p->quiet)
            fprintf(stderr, "layer %3d/%d  %-5s  %7.2f s  %10.0f tokens/s%s\n",
                    ev->layer + 1, ev->n_layers, ev->is_moe ? "MoE" : "dense", ev->seconds,
                    ev->seconds > 0 ? p->valid_tokens / ev->seconds : 0.0,
                    p->store_dir ? "  committed" : "");
        if (ev->layer + 1 < ev->n_layers && !stop_signal)
            scorer_layer_gate_wait(p->gate);
        break;
    }
    return stop_signal != 0;
}

const reap_backend_i *scorer_pick_backend(const char *name)
{
    if (!strcmp(name, "cpu"))
        return &reap_backend_cpu;
    if (!strcmp(name, "cuda"))
        return reap_backend_cuda();
    if (!strcmp(name, "auto")) {
        const reap_backend_i *cuda = reap_backend_cuda();
        return cuda && reap_cuda_available() > 0 ? cuda : &reap_backend_cpu;
    }
    return NULL;
}

/* Write the merged view (store) or this run's statistics (no store) as JSON / table. */
static int write_outputs(reap_store *st, const reap_score_result *res, const char *stats_json,
                         int table)
{
    reap_layer_stats *merged = NULL;
    reap_id *used = NULL;
    int n_merged = 0, n_used = 0, rc = REAP_OK;
    const reap_layer_stats *show = res->stats;
    int n_show = res->n_stats;
    char mh[65], *calib_ids = NULL;
    reap_id_hex(&res->model_id, mh);
    if (st) {
        if ((rc = reap_store_stats_merged(st, NULL, &res->model_id, NULL, 0, &merged,
                                          &n_merged, &used, &n_used)))
            goto fail;
        show = merged;
        n_show = n_merged;
    }
    if ((rc = scorer_calib_ids_text(st ? used : &res->calib_id, st ? n_used : 1, &calib_ids)))
        goto fail;
    if (st && n_used > 1)
        fprintf(stderr, "reap-scorer: statistics merged over %d calibration sets\n", n_used);
    if (stats_json && (rc = reap_stats_json_write(stats_json, mh, calib_ids,
                                                  n_show ? show[0].tokens : 0, show, n_show)))
        goto fail;
    if (table || !stats_json)
        reap_stats_print_table(stdout, show, n_show, 0.4);
fail:
    for (int i = 0; i < n_merged; i++)
        reap_layer_stats_free(&merged[i]);
    free(merged);
    free(used);
    free(calib_ids);
    return rc;
}

int scorer_cmd_run(int argc, char **argv)
{
    const char *model = NULL, *calib = NULL, *stats_json = NULL, *backend = NULL,
               *precision = NULL, *store_dir = NULL, *tokenizer = NULL;
    const char *seed_s = NULL, *gate_path = NULL, *dump_dir = NULL;
    long min_pixels = 0, max_pixels = 0, vision_batch = 0;
    scorer_vision_dump *dump = NULL;
    scorer_layer_gate gate;
    long seq_len = 0, max_samples = 0, batch = 0, threads = 0, ckpt_every = 0, seed = 0;
    int no_pack = 0, quiet = 0, table = 0, help = 0, force = 0, shuffle = 0;
    int no_space_check = 0;
    scorer_backend_cli bcli;
    const cli_opt mine[] = {
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory (config.json, "
         "safetensors shards)", &model, 1},
        {"calib", "REAP_CALIBRATION_PATH", CLI_STR, NULL, "calibration file: JSON Lines or "
         "a JSON array of {\"input_ids\"}, {\"text\"}, {\"messages\"} or {\"image\"} "
         "items", &calib, 1},
        {"tokenizer", "REAP_TOKENIZER_PATH", CLI_STR, NULL, "tokenizer.json (or its "
         "directory) for text and messages items", &tokenizer, 0},
        {"shuffle", NULL, CLI_FLAG, NULL, "shuffle the items (with --seed) before taking "
         "--max-samples", &shuffle, 0},
        {"seed", NULL, CLI_STR, NULL, "shuffle seed, an integer >= 0 (with --shuffle; "
         "default 0)", &seed_s, 0},
        {"seq-len", "REAP_SEQ_LEN", CLI_INT, "2048", "positions per row", &seq_len, 0},
        {"no-pack", NULL, CLI_FLAG, NULL, "one row per sample instead of packing", &no_pack, 0},
        {"max-samples", "REAP_MAX_SAMPLES", CLI_INT, "300", "use the first N samples "
         "(0: all)", &max_samples, 0},
        {"batch-size", "REAP_BATCH_SIZE", CLI_INT, "0", "rows per micro-batch (0: the "
         "backend chooses: 8 on CPU, the memory plan on CUDA)", &batch, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads (0: all cores)", &threads, 0},
        {"backend", "REAP_BACKEND", CLI_STR, "auto", "cpu, cuda or auto (CUDA when a "
         "device is present)", &backend, 0},
        {"precision", "REAP_PRECISION", CLI_STR, "fp32", "CUDA math: fp32 or bf16",
         &precision, 0},
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory (created if "
         "absent): commit each layer, resume after a crash, skip complete work", &store_dir,
         0},
        {"force", NULL, CLI_FLAG, NULL, "with --store: score a complete (model, "
         "calibration) pair again from layer 0 and verify its stored records", &force, 0},
        {"checkpoint-every", "REAP_CHECKPOINT_EVERY", CLI_INT, "4", "with --store: "
         "hidden-state checkpoint every N layers (0: none)", &ckpt_every, 0},
        {"stats-json", NULL, CLI_STR, NULL, "write statistics JSON here ('-': stdout); with "
         "--store the merged view of every complete calibration set of the model",
         &stats_json, 0},
        {"table", NULL, CLI_FLAG, NULL, "print a per-layer summary table", &table, 0},
        {"quiet", NULL, CLI_FLAG, NULL, "no per-layer progress on stderr", &quiet, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "with --store: "
         "hidden-state checkpoints skip the free-space check (file systems that "
         "misreport free space)", &no_space_check, 0},
        {"min-pixels", NULL, CLI_INT, "0", "image items: smart_resize's min_pixels (0: the "
         "model's preprocessor_config.json)", &min_pixels, 0},
        {"max-pixels", NULL, CLI_INT, "0", "image items: smart_resize's max_pixels (0: the "
         "model's preprocessor_config.json); lower it to bound an image's tokens",
         &max_pixels, 0},
        {"vision-batch", NULL, CLI_INT, "0", "image items: patches per vision tower call "
         "(0: 16384; lower bounds the tower's memory, same results)", &vision_batch, 0},
        {"dump-vision", NULL, CLI_STR, NULL, "for tests: write the image patches, vision "
         "features and token rows into this directory (created)", &dump_dir, 0},
        {"layer-gate", NULL, CLI_STR, NULL, "for tests: a FIFO; before each layer the run "
         "reads one byte from it (closing the writer opens it for good)", &gate_path, 0},
    };
    cli_opt opts[sizeof mine / sizeof mine[0] + SCORER_BACKEND_CLI_N];
    int n_opts = (int)(sizeof mine / sizeof mine[0]);
    memcpy(opts, mine, sizeof mine);
    n_opts += scorer_backend_cli_options(&bcli, opts + n_opts, SCORER_BACKEND_CLI_N);
    char err[512];
    reap_backend_opts bopts = {0};
    reap_store *st = NULL;
    reap_score_result res = {0};
    int rc = REAP_OK;

    if (cli_parse(opts, n_opts, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reap-scorer run: %s\n", err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: reap-scorer run --model DIR --calib FILE [--store DIR] "
                          "[options]", opts, n_opts);
        return 0;
    }
    if (seq_len < 1 || seq_len > 1 << 20 || batch < 0 || threads < 0 || max_samples < 0 ||
        ckpt_every < 0 || min_pixels < 0 || max_pixels < 0 ||
        vision_batch < 0) {
        fprintf(stderr, "reap-scorer run: --seq-len must be >= 1, --batch-size, "
                        "--threads, --max-samples, --checkpoint-every, --min-pixels, "
                        "--max-pixels and --vision-batch >= 0\n");
        return 2;
    }
    if (cli_shuffle_seed(seed_s, shuffle, &seed, err, sizeof err) ||
        scorer_backend_cli_apply(&bcli, &bopts, err, sizeof err)) {
        fprintf(stderr, "reap-scorer run: %s\n", err);
        return 2;
    }
    const reap_backend_i *be = scorer_pick_backend(backend);
    if (!be) {
        fprintf(stderr, "reap-scorer run: backend '%s' is %s\n", backend,
                strcmp(backend, "cuda") ? "unknown (cpu, cuda or auto)"
                                        : "not available in this build");
        return 2;
    }
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16")) {
        fprintf(stderr, "reap-scorer run: --precision must be fp32 or bf16\n");
        return 2;
    }
    if (force && !store_dir) {
        fprintf(stderr, "reap-scorer run: --force needs --store\n");
        return 2;
    }
    scorer_layer_gate_init(&gate, gate_path);
    if (store_dir) {
        reap_store_opts so = {.create = 1, .no_space_check = no_space_check};
        if ((rc = reap_store_open(store_dir, &so, &st)))
            goto fail;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (dump_dir && (rc = scorer_vision_dump_open(dump_dir, &dump)))
        goto fail;
    run_progress prog = {0, quiet, store_dir, &gate, dump, 0};
    bopts.threads = (int)threads;
    bopts.batch_rows = (int)batch;
    bopts.precision = strcmp(precision, "bf16") ? REAP_PRECISION_FP32 : REAP_PRECISION_BF16;
    reap_score_job_opts jo = {
        .model_dir = model,
        .calib_path = calib,
        .tokenizer_path = tokenizer,
        .shuffle = shuffle,
        .seed = (uint64_t)seed,
        .seq_len = (int)seq_len,
        .pack = !no_pack,
        .max_samples = max_samples,
        .min_pixels = min_pixels,
        .max_pixels = max_pixels,
        .vision_batch_patches = vision_batch,
        .backend = be,
        .backend_opts = bopts,
        .store = st,
        .force = force,
        .checkpoint_every = (int)ckpt_every,
        .hash_threads = (int)threads,
        .on_event = on_event,
        .ud = &prog,
    };
    if ((rc = reap_score_job_run(&jo, &res)))
        goto fail;
    if (prog.dump_rc) {
        rc = prog.dump_rc;
        goto fail;
    }
    if (res.n_differ)
        fprintf(stderr, "reap-scorer: warning: %d recomputed layer(s) differ from the "
                        "store\n", res.n_differ);
    rc = write_outputs(st, &res, stats_json, table);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer run: error: %s\n", reap_err_msg());
    reap_score_result_free(&res);
    scorer_vision_dump_close(dump);
    reap_store_close(st);
    scorer_layer_gate_free(&gate);
    return rc ? 1 : 0;
}

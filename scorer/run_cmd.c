/* run_cmd.c - `reap-scorer run`: score a checkpoint on a calibration file in one process
 * (no server, no store) and write the per-layer statistics as JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "calib.h"
#include "checkpoint.h"
#include "cli.h"
#include "config.h"
#include "engine.h"
#include "reap_err.h"
#include "scorer_cmds.h"
#include "stats_json.h"

typedef struct run_progress {
    const reap_config *cfg;
    int64_t valid_tokens;
    int quiet;
} run_progress;

static int on_layer(void *ud, int layer, const reap_layer_stats *st, double seconds)
{
    run_progress *p = ud;
    if (!p->quiet)
        fprintf(stderr, "layer %3d/%d  %-5s  %7.2f s  %10.0f tokens/s\n", layer + 1,
                p->cfg->n_layers, st ? "MoE" : "dense", seconds,
                seconds > 0 ? p->valid_tokens / seconds : 0.0);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Per-layer summary: routed experts, REAP min / median / max, and how many experts a
 * 40% prune would drop. */
static void print_table(const reap_layer_stats *st, int n)
{
    printf("%5s %8s %7s %12s %12s %12s %8s\n", "layer", "tokens", "routed", "reap_min",
           "reap_median", "reap_max", "drop@0.4");
    for (int i = 0; i < n; i++) {
        const reap_layer_stats *s = &st[i];
        double *sc = malloc((size_t)s->n_experts * sizeof *sc);
        int routed = 0;
        if (!sc)
            return;
        for (int e = 0; e < s->n_experts; e++) {
            sc[e] = reap_layer_stats_score(s, e, REAP_CRIT_REAP);
            routed += s->count[e] > 0;
        }
        qsort(sc, (size_t)s->n_experts, sizeof *sc, cmp_double);
        printf("%5d %8lld %4d/%-3d %12.6g %12.6g %12.6g %8d\n", s->layer,
               (long long)s->tokens, routed, s->n_experts, sc[0], sc[s->n_experts / 2],
               sc[s->n_experts - 1], (int)floor(s->n_experts * 0.4));
        free(sc);
    }
}

static const reap_backend_i *pick_backend(const char *name)
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

int scorer_cmd_run(int argc, char **argv)
{
    const char *model = NULL, *calib = NULL, *stats_json = NULL, *backend = NULL,
               *precision = NULL;
    long seq_len = 0, max_samples = 0, batch = 0, threads = 0;
    int no_pack = 0, quiet = 0, table = 0, help = 0;
    const cli_opt opts[] = {
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory (config.json, "
         "safetensors shards)", &model, 1},
        {"calib", "REAP_CALIBRATION_PATH", CLI_STR, NULL, "calibration JSON Lines file "
         "({\"input_ids\": [...]} per line)", &calib, 1},
        {"seq-len", "REAP_SEQ_LEN", CLI_INT, "2048", "positions per row", &seq_len, 0},
        {"no-pack", NULL, CLI_FLAG, NULL, "one row per sample instead of packing", &no_pack, 0},
        {"max-samples", "REAP_MAX_SAMPLES", CLI_INT, "0", "use the first N samples "
         "(0: all)", &max_samples, 0},
        {"batch-size", "REAP_BATCH_SIZE", CLI_INT, "8", "rows per attention micro-batch",
         &batch, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads (0: all cores)", &threads, 0},
        {"backend", "REAP_BACKEND", CLI_STR, "auto", "cpu, cuda or auto (CUDA when a "
         "device is present)", &backend, 0},
        {"precision", "REAP_PRECISION", CLI_STR, "fp32", "CUDA math: fp32 or bf16",
         &precision, 0},
        {"stats-json", NULL, CLI_STR, NULL, "write statistics JSON here ('-': stdout)",
         &stats_json, 0},
        {"table", NULL, CLI_FLAG, NULL, "print a per-layer summary table", &table, 0},
        {"quiet", NULL, CLI_FLAG, NULL, "no per-layer progress on stderr", &quiet, 0},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    reap_config cfg = {0};
    reap_ckpt *ck = NULL;
    reap_samples samples = {0};
    reap_rows rows = {0};
    reap_layer_stats *stats = NULL;
    int n_stats = 0, rc = REAP_OK;
    char path[4096];

    if (cli_parse(opts, n_opts, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reap-scorer run: %s\n", err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: reap-scorer run --model DIR --calib FILE [options]",
                  opts, n_opts);
        return 0;
    }
    if (seq_len < 1 || seq_len > 1 << 20 || batch < 1 || threads < 0 || max_samples < 0) {
        fprintf(stderr, "reap-scorer run: --seq-len, --batch-size must be >= 1, "
                        "--threads and --max-samples >= 0\n");
        return 2;
    }
    const reap_backend_i *be = pick_backend(backend);
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

    snprintf(path, sizeof path, "%s/config.json", model);
    if ((rc = reap_config_load(path, &cfg)))
        goto fail;
    if (reap_config_n_moe_layers(&cfg) == 0) {
        rc = reap_err_set(REAP_E_INVALID, "%s: the model has no MoE layer to score", path);
        goto fail;
    }
    if ((rc = reap_ckpt_open(model, &ck)))
        goto fail;
    if ((rc = reap_samples_read_jsonl(calib, max_samples, cfg.vocab, &samples)))
        goto fail;
    if ((rc = reap_rows_build(&samples, (int)seq_len, !no_pack, &rows)))
        goto fail;
    if (!quiet)
        fprintf(stderr, "reap-scorer: %s (%s, %d layers, %d experts, top-%d), %lld samples "
                        "-> %d rows x %ld, %lld valid tokens, backend %s\n",
                model, cfg.model_type, cfg.n_layers, cfg.n_experts, cfg.n_experts_used,
                (long long)samples.n, rows.n_rows, seq_len, (long long)rows.n_valid,
                be->name);

    run_progress prog = {&cfg, rows.n_valid, quiet};
    reap_engine_opts eo = {
        .backend = be,
        .backend_opts = {.threads = (int)threads, .batch_rows = (int)batch,
                         .precision = strcmp(precision, "bf16") ? REAP_PRECISION_FP32
                                                                 : REAP_PRECISION_BF16},
        .on_layer = on_layer,
        .ud = &prog,
    };
    if ((rc = reap_engine_score(ck, &cfg, &rows, &eo, &stats, &n_stats)))
        goto fail;
    /* model_id and calib_id are defined by the score store; not computed here yet. */
    if (stats_json &&
        (rc = reap_stats_json_write(stats_json, NULL, NULL, rows.n_valid, stats, n_stats)))
        goto fail;
    if (table || !stats_json)
        print_table(stats, n_stats);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer run: error: %s\n", reap_err_msg());
    for (int i = 0; i < n_stats; i++)
        reap_layer_stats_free(&stats[i]);
    free(stats);
    reap_rows_free(&rows);
    reap_samples_free(&samples);
    reap_ckpt_close(ck);
    reap_config_free(&cfg);
    return rc ? 1 : 0;
}

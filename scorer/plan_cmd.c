/* plan_cmd.c - `reap-scorer plan`: the CUDA backend's device-memory plan for a model and a
 * calibration size, computed from config.json alone (no weights read, no GPU needed when
 * --vram-gb is given): per-layer weight bytes, hidden-state bytes, the chosen micro-batch
 * of rows, prefetch depth and the expected peak (see model/cuda/cuda_plan.h); with
 * --image-tokens N on a checkpoint with a vision tower, also the host memory of the
 * image side (score_vision.h reap_score_vision_mem_plan) and the device bytes images add. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cli.h"
#include "cli.h"
#include "config.h"
#include "cuda/cuda_plan.h"
#include "reap_err.h"
#include "score_vision.h"
#include "scorer_cmds.h"

#define SEED_VRAM_GB 140.0 /* assumed without a device and without --vram-gb */

static void line(const char *what, long long bytes)
{
    printf("  %-40s %16lld  %9.2f GB\n", what, bytes, bytes / 1e9);
}

int scorer_cmd_plan(int argc, char **argv)
{
    const char *model = NULL, *precision = NULL;
    long seq_len = 0, n_rows = 0, batch = 0, device = 0, image_tokens = 0, vision_batch = 0,
         threads = 0;
    int help = 0;
    scorer_backend_cli bcli;
    reap_backend_opts bo = {0};
    const cli_opt mine[] = {
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory (only config.json "
         "is read)", &model, 1},
        {"rows", NULL, CLI_INT, NULL, "calibration rows", &n_rows, 1},
        {"seq-len", "REAP_SEQ_LEN", CLI_INT, "2048", "positions per row", &seq_len, 0},
        {"precision", "REAP_PRECISION", CLI_STR, "bf16", "CUDA math: fp32 or bf16",
         &precision, 0},
        {"batch-rows", NULL, CLI_INT, "0", "force the micro-batch (0: choose)", &batch, 0},
        {"device", "REAP_DEVICE", CLI_INT, "0", "CUDA device whose free memory is used",
         &device, 0},
        {"image-tokens", NULL, CLI_INT, "0", "image tokens of the calibration set (an "
         "estimate; 0: text only): adds the vision tower's memory", &image_tokens, 0},
        {"vision-batch", NULL, CLI_INT, "0", "patches per vision tower call, as on "
         "`run` (0: 16384)", &vision_batch, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads of the vision tower (0: "
         "this machine's cores)", &threads, 0},
    };
    /* the backend's options (--vram-gb 0 here: the device's free memory, or 140 GB
     * without a device) */
    cli_opt opts[sizeof mine / sizeof mine[0] + SCORER_BACKEND_CLI_N];
    int n_opts = (int)(sizeof mine / sizeof mine[0]);
    memcpy(opts, mine, sizeof mine);
    n_opts += scorer_backend_cli_options(&bcli, opts + n_opts, SCORER_BACKEND_CLI_N);
    char err[512], path[4096];
    reap_config cfg = {0};
    reap_cuda_settings st;
    reap_cuda_plan p;
    int rc;

    if (cli_parse(opts, n_opts, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reap-scorer plan: %s\n", err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: reap-scorer plan --model DIR --rows N [options]", opts,
                  n_opts);
        return 0;
    }
    if (n_rows < 1 || n_rows > 1 << 24 || seq_len < 1 || seq_len > 1 << 20 || batch < 0) {
        fprintf(stderr, "reap-scorer plan: --rows and --seq-len must be >= 1, --batch-rows "
                        ">= 0\n");
        return 2;
    }
    if (image_tokens < 0 || image_tokens > n_rows * seq_len || vision_batch < 0 ||
        vision_batch > 1 << 24 || threads < 0 || threads > 4096) {
        fprintf(stderr, "reap-scorer plan: --image-tokens must be 0 .. rows x seq-len (%lld), "
                "--vision-batch 0 .. %d, --threads 0 .. 4096\n",
                (long long)n_rows * seq_len, 1 << 24);
        return 2;
    }
    if (scorer_backend_cli_apply(&bcli, &bo, err, sizeof err)) {
        fprintf(stderr, "reap-scorer plan: %s\n", err);
        return 2;
    }
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16")) {
        fprintf(stderr, "reap-scorer plan: --precision must be fp32 or bf16\n");
        return 2;
    }
    snprintf(path, sizeof path, "%s/config.json", model);
    if ((rc = reap_config_load(path, &cfg)))
        goto fail;
    if (image_tokens > 0 && !cfg.vision.present) {
        rc = reap_err_set(REAP_E_INVALID, "--image-tokens %ld: %s has no vision tower "
                          "(no vision_config with depth > 0)", image_tokens, path);
        goto fail;
    }

    /* the budget: --vram-gb, else the device's free memory, else the seed's 140 GB */
    int64_t fr = 0, tot = 0;
    const char *source = "--vram-gb / REAP_VRAM_GB";
    if (bo.vram_gb <= 0) {
        if (reap_cuda_mem_info((int)device, &fr, &tot) == REAP_OK) {
            source = "free memory of CUDA device";
        } else {
            bo.vram_gb = SEED_VRAM_GB;
            source = "no CUDA device here: assumed";
        }
    }
    if ((rc = reap_cuda_settings_resolve(&bo, &st)))
        goto fail;
    reap_cuda_plan_req req = {.n_rows = (int)n_rows, .seq_len = (int)seq_len,
                              .precision = strcmp(precision, "bf16") ? REAP_PRECISION_FP32
                                                                     : REAP_PRECISION_BF16,
                              .batch_rows = (int)batch, .prefetch_layers = st.prefetch_layers,
                              .attn_gemm = st.attn_gemm,
                              .budget_bytes = reap_cuda_plan_budget(&st, fr),
                              .images = image_tokens > 0};
    const int n_moe = reap_config_n_moe_layers(&cfg);
    printf("model: %s (%s), %d layers (%d MoE, %d dense), H %d, heads %d/%d x %d, %d experts "
           "top-%d, I %d\n", model, cfg.model_type, cfg.n_layers, n_moe, cfg.n_layers - n_moe,
           cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_experts,
           cfg.n_experts_used, cfg.moe_inter);
    printf("calibration: %ld rows x %ld = %lld positions, precision %s\n", n_rows, seq_len,
           (long long)n_rows * seq_len, precision);
    if (fr > 0)
        printf("budget: %.2f GB = %.2f GB (%s %ld) less %.0f%%\n", req.budget_bytes / 1e9,
               fr / 1e9, source, device, st.vram_buffer * 100);
    else
        printf("budget: %.2f GB = %.2f GB (%s) less %.0f%%\n", req.budget_bytes / 1e9,
               st.vram_gb, source, st.vram_buffer * 100);
    rc = reap_cuda_plan_make(&cfg, &req, &p);
    if (rc && rc != REAP_E_NOMEM)
        goto fail;
    char main_err[1024] = "";  /* the budget's refusal, reported after the card lines */
    if (rc)
        snprintf(main_err, sizeof main_err, "%s", reap_err_msg());
    printf("per layer:\n");
    if (p.moe_layer_bytes) line("MoE layer weights on the device", p.moe_layer_bytes);
    if (p.dense_layer_bytes) line("dense layer weights on the device", p.dense_layer_bytes);
    if (p.moe_ckpt_bytes) line("MoE layer in a bf16 checkpoint (upload)", p.moe_ckpt_bytes);
    if (p.moe_awq_bytes) line("MoE layer in an AWQ checkpoint (upload)", p.moe_awq_bytes);
    printf("device memory:\n");
    line("hidden states [T, H] fp32", p.hidden_bytes);
    line("resident (hidden, tokens, routing, stats)", p.resident_bytes);
    if (!rc) {
        char what[64];
        snprintf(what, sizeof what, "weight sets (1 + %d prefetched)", p.prefetch_layers);
        line(what, (1 + p.prefetch_layers) * p.weight_set_bytes);
        line("staging (2 slots; 2 more pinned on host)", 2 * p.stage_slot_bytes);
        snprintf(what, sizeof what, "workspace of one micro-batch (%d rows)", p.chunk_rows);
        line(what, p.chunk_bytes);
        line("margin (cuBLAS, driver)", p.margin_bytes);
        line("expected peak", p.peak_bytes);
        line("budget", p.budget_bytes);
        printf("micro-batch: %d rows (%lld positions), %d chunks per layer; prefetch %d "
               "layer%s ahead; attention: %s\n", p.chunk_rows, (long long)p.chunk_tokens,
               (int)((n_rows + p.chunk_rows - 1) / p.chunk_rows), p.prefetch_layers,
               p.prefetch_layers == 1 ? "" : "s",
               p.attn_flash ? "tiled kernel (flash)" : "score matrices (GEMM)");
    }
    if (image_tokens > 0) {
        /* The image side: the tower runs on the CPU, its features stay in host memory. */
        reap_score_vision_mem vm;
        const reap_vision_config *vc = &cfg.vision;
        int nthr = threads > 0 ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (nthr < 1) nthr = 1;
        int vrc = reap_score_vision_mem_plan(&cfg, vision_batch, nthr, image_tokens, &vm);
        if (vrc) {
            rc = vrc;
            goto fail;
        }
        char what[96];
        printf("images: %ld image tokens; vision tower depth %d, hidden %d, MLP %d, %d "
               "deepstack sets; it runs on the CPU (host memory):\n", image_tokens,
               vc->depth, vc->hidden, vc->inter, vc->n_deepstack);
        line("tower weights, fp32", vm.tower.weight_bytes);
        snprintf(what, sizeof what, "tower activations (%lld patches, %d thr)",
                 (long long)vm.batch_patches, nthr);
        line(what, vm.tower.act_bytes);
        line("patches and outputs of one tower call", vm.batch_bytes);
        snprintf(what, sizeof what, "kept features (x %d: merged + deepstack)",
                 1 + vc->n_deepstack);
        line(what, vm.feature_bytes);
        line("image token slots (engine)", vm.slot_bytes);
        line("host memory of the image side", vm.total_bytes);
        printf("  on the device the images add %lld bytes (in the resident line: modality "
               "plane and %d-row staging of features copied in from the host)\n",
               (long long)p.image_bytes, REAP_CUDA_SCATTER_ROWS);
    }
    /* The two cards the scorer is meant for, side by side, with the same settings. */
    printf("on the target cards (%.0f%% left unused):\n", st.vram_buffer * 100);
    static const struct { const char *name; double gb; } cards[] = {{"H200", 140.0},
                                                                   {"H100", 80.0}};
    for (int i = 0; i < 2; i++) {
        reap_cuda_plan cp;
        reap_cuda_plan_req cr = req;
        cr.budget_bytes = (int64_t)(cards[i].gb * 1e9 * (1.0 - st.vram_buffer));
        int crc = reap_cuda_plan_make(&cfg, &cr, &cp);
        if (crc == REAP_OK)
            printf("  %s (%3.0f GB): micro-batch %4d rows, %4d chunks per layer, peak "
                   "%7.2f GB of %7.2f GB\n", cards[i].name, cards[i].gb, cp.chunk_rows,
                   (int)((n_rows + cp.chunk_rows - 1) / cp.chunk_rows), cp.peak_bytes / 1e9,
                   cp.budget_bytes / 1e9);
        else if (crc == REAP_E_NOMEM)
            printf("  %s (%3.0f GB): does not fit: even one row needs more than %.2f GB "
                   "(fewer rows per run, or more cards)\n", cards[i].name, cards[i].gb,
                   cr.budget_bytes / 1e9);
        else {
            rc = crc;
            goto fail;
        }
    }
    if (rc)
        reap_err_set(rc, "%s", main_err);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer plan: error: %s\n", reap_err_msg());
    reap_config_free(&cfg);
    return rc ? 1 : 0;
}

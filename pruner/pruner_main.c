/* pruner_main.c - reap-pruner: `prune` rewrites a checkpoint without its lowest-scoring
 * experts (one shot, statistics from a reap-stats/1 JSON file); `version`. The gRPC
 * `serve` subcommand lives with the services. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fault.h"
#include "calib.h"
#include "catalog.h"
#include "cli.h"
#include "config.h"
#include "keepset.h"
#include "known_inputs.h"
#include "manifest.h"
#include "minisign.h"
#include "outdir.h"
#include "prune.h"
#include "reap_err.h"
#include "serve_cmd.h"
#include "stats_json.h"
#include "identity.h"
#include "store.h"

/* The statistics must be the input checkpoint's: `actual` is the checkpoint's model_id,
 * `stats_id` the one the statistics name (NULL: they name none, nothing to check),
 * `given_id` the --model-id claim (NULL: none). A --model-id that is not the checkpoint's
 * is always refused; statistics of another checkpoint only without force_foreign, and
 * with it *foreign gets their id (for the manifest). The one rule for --store and for
 * the input hashed here. Returns REAP_OK or REAP_E_PRECONDITION naming both ids. */
static int check_stats_model(const char *model, const char *actual, const char *stats_path,
                             const char *stats_id, const char *given_id, int force_foreign,
                             const char **foreign)
{
    *foreign = NULL;
    if (given_id && strcasecmp(given_id, actual))
        return reap_err_set(REAP_E_PRECONDITION, "--model-id %.80s is not this checkpoint's: "
                            "%s is model_id %s", given_id, model, actual);
    if (!stats_id || !strcasecmp(stats_id, actual))
        return REAP_OK;
    size_t n = strspn(stats_id, "0123456789abcdefABCDEF");
    if (!force_foreign || n != 64 || stats_id[n])
        return reap_err_set(REAP_E_PRECONDITION, "the statistics %s are for model_id %.80s, "
                            "but %s is model_id %s: they score another checkpoint's experts "
                            "(score this one, or give --force-foreign-stats to prune by them "
                            "deliberately; the manifest then records their model_id)%s",
                            stats_path, stats_id, model, actual, force_foreign ?
                            "; their model_id is not 64 hex digits, so it cannot be "
                            "recorded" : "");
    *foreign = stats_id;
    fprintf(stderr, "warning: --force-foreign-stats: pruning %s (model_id %s) by the "
            "statistics of model_id %s; the manifest records it as stats_model_id\n", model,
            actual, stats_id);
    return REAP_OK;
}

/* The input checkpoint's identity, computed as the scorer computes it: through the file-
 * hash cache of the score store when there is one (--store), else by hashing the input
 * here (once: the manifest then takes the input digests from the identity instead of
 * reading the input again). */
static int identify_input(const char *store_dir, const char *model, int threads,
                          reap_model_info *mi, reap_known_file **known, char id_hex[65])
{
    reap_store *s = NULL;
    reap_hash_stats hs = {0};
    int rc = store_dir ? reap_store_open(store_dir, NULL, &s) : REAP_OK;
    if (!rc)
        rc = reap_model_identify(s, model, threads, mi, &hs);
    reap_store_close(s);
    if (rc)
        return rc;
    reap_id_hex(&mi->id, id_hex);
    if (!(*known = reap_known_inputs(mi)))
        return reap_err_set(REAP_E_NOMEM, "out of memory");
    if (store_dir)
        printf("input: model %.16s..., %d files, %d digests from the store's cache "
               "(%.2f GB hashed now)\n", id_hex, hs.n_files, hs.n_cached,
               hs.bytes_hashed / 1e9);
    else
        printf("input: model %.16s..., %d files, %.2f GB hashed in %.2f s (--store takes "
               "the digests from the score store's cache)\n", id_hex, hs.n_files,
               hs.bytes_hashed / 1e9, hs.seconds);
    return REAP_OK;
}

/* Leftovers of killed prunes of this output: what the sweep did, on stderr. */
static void on_leftover(void *ud, const char *path, uint64_t bytes, reap_leftover_action a)
{
    char line[PATH_MAX + 256];
    (void)ud;
    fprintf(stderr, "%s\n", reap_leftover_describe(path, bytes, a, line, sizeof line));
}

static int on_progress(void *ud, uint64_t done, uint64_t total)
{
    int *last = ud;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (pct / 10 != *last / 10 || done == total) {
        fprintf(stderr, "rewrite: %3d%%  %.2f of %.2f GB\n", pct, done / 1e9, total / 1e9);
        *last = pct;
    }
    return 0;
}

/* "a,b,c" -> array of strings (in place in a copy). */
static int split_ids(const char *s, char **copy, const char ***out, int *n)
{
    *copy = NULL;
    *out = NULL;
    *n = 0;
    if (!s || !*s)
        return 0;
    if (!(*copy = strdup(s)) || !(*out = calloc(strlen(s) + 2, sizeof **out)))
        return -1;
    for (char *tok = strtok(*copy, ","); tok; tok = strtok(NULL, ","))
        (*out)[(*n)++] = tok;
    return 0;
}

static int cmd_prune(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *stats_path = NULL, *ratio = NULL, *n_prune = NULL,
               *criterion = NULL, *key_path = NULL, *model_id = NULL, *calib_ids = NULL,
               *vcalib = NULL, *store_dir = NULL;
    long vseq = 0, vsamples = 0, threads = 0;
    int protect = 0, balance = 0, force = 0, verify = 0, quiet = 0, help = 0, foreign_ok = 0;
    int no_space_check = 0;
    const cli_opt opts[] = {
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "input checkpoint directory", &model, 1},
        {"stats-json", "REAP_STATS_JSON", CLI_STR, NULL, "statistics (reap-scorer run "
         "--stats-json output)", &stats_path, 1},
        {"out", "REAP_OUTPUT_PATH", CLI_STR, NULL, "output directory to create", &out, 1},
        {"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "fraction of experts removed per "
         "layer (floor(E x R))", &ratio, 0},
        {"n-prune", NULL, CLI_STR, NULL, "experts removed per layer (instead of --ratio)",
         &n_prune, 0},
        {"criterion", "REAP_CRITERION", CLI_STR, "reap", "reap, frequency, ean_sum, "
         "ean_mean, weighted_ean_sum, weighted_frequency, max_activations", &criterion, 0},
        {"protect-super-experts", NULL, CLI_FLAG, NULL, "never prune super experts (first "
         "75% of layers)", &protect, 0},
        {"balance-modalities", NULL, CLI_FLAG, NULL, "score experts by the mean of their "
         "text and image REAP scores (criterion reap; image calibration with few image "
         "tokens)", &balance, 0},
        {"key", "REAP_SIGNING_KEY", CLI_STR, NULL, "minisign secret key file to sign the "
         "manifest (unsigned without)", &key_path, 0},
        {"model-id", "REAP_MODEL_ID", CLI_STR, NULL, "the input's model id, checked (the "
         "manifest records the id computed from the input)", &model_id, 0},
        {"calib-id", NULL, CLI_STR, NULL, "calibration ids, comma separated (default: the "
         "statistics' calib_id)", &calib_ids, 0},
        {"force", NULL, CLI_FLAG, NULL, "replace an existing output directory (only an "
         "earlier reap output or an empty directory)", &force, 0},
        {"force-foreign-stats", NULL, CLI_FLAG, NULL, "prune by statistics of another "
         "checkpoint (their model_id is not this input's); recorded in the signed "
         "manifest", &foreign_ok, 0},
        {"verify", NULL, CLI_FLAG, NULL, "structural verification of the output (and "
         "functional with --verify-calib)", &verify, 0},
        {"verify-calib", NULL, CLI_STR, NULL, "held-out token rows (JSON Lines) for the "
         "functional check", &vcalib, 0},
        {"verify-seq-len", NULL, CLI_INT, "128", "positions per verification row", &vseq, 0},
        {"verify-samples", NULL, CLI_INT, "16", "verification samples used", &vsamples, 0},
        {"threads", "REAP_THREADS", CLI_INT, "0", "CPU threads for hashing and "
         "verification (0: all)", &threads, 0},
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store whose file-hash cache "
         "identifies the input (without it the input is hashed before the rewrite)",
         &store_dir, 0},
        {"quiet", NULL, CLI_FLAG, NULL, "no progress on stderr", &quiet, 0},
        {"no-space-check", "REAP_NO_SPACE_CHECK", CLI_FLAG, NULL, "skip the "
         "free-space check before writing the output (file systems that misreport free "
         "space)", &no_space_check, 0},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    char err[512], id_hex[65];
    reap_model_info mi = {0};
    reap_known_file *known = NULL;
    int rc, n_stats = 0, n_calib = 0, last = -1;
    reap_layer_stats *stats = NULL;
    char *doc_model = NULL, *doc_calib = NULL, *ids_copy = NULL;
    const char **ids = NULL;
    reap_sign_key key;
    int have_key = 0;
    reap_samples samples = {0};
    reap_rows rows = {0};
    reap_config cfg = {0};
    reap_prune_result res;
    reap_prune_opts po = {0};
    memset(&res, 0, sizeof res);

    if (cli_parse(opts, n_opts, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reap-pruner prune: %s\n", err);
        cli_usage(stderr, "usage: reap-pruner prune [options]", opts, n_opts);
        return 2;
    }
    if (help) {
        cli_usage(stdout, "usage: reap-pruner prune [options]", opts, n_opts);
        return 0;
    }
    if ((rc = reap_keep_opts_parse(ratio, n_prune, criterion, protect, &po.keep)) ||
        ((po.keep.balance_modalities = balance) && (rc = reap_keep_opts_check(&po.keep)))) {
        fprintf(stderr, "reap-pruner prune: %s\n", reap_err_msg());
        return 2;
    }
    if ((rc = reap_stats_json_read(stats_path, &stats, &n_stats, &doc_model, &doc_calib,
                                   NULL)))
        goto fail;
    if (split_ids(calib_ids ? calib_ids : doc_calib, &ids_copy, &ids, &n_calib)) {
        rc = reap_err_set(REAP_E_NOMEM, "out of memory");
        goto fail;
    }
    if (key_path) {
        if ((rc = reap_minisign_load_secret(key_path, &key)))
            goto fail;
        have_key = 1;
    }
    if (vcalib) {
        char cpath[4096];
        snprintf(cpath, sizeof cpath, "%s/config.json", model);
        if ((rc = reap_config_load(cpath, &cfg)) ||
            (rc = reap_samples_read_jsonl(vcalib, vsamples, cfg.vocab, &samples)) ||
            (rc = reap_rows_build(&samples, (int)vseq, 1, &rows)))
            goto fail;
        verify = 1;
    }
    /* The manifest's model_id is the input's, never a claim: statistics of another
     * checkpoint are refused unless --force-foreign-stats. */
    if ((rc = reap_prune_output_check(out, force)) ||   /* before hashing the input */
        (rc = identify_input(store_dir, model, (int)threads, &mi, &known, id_hex)) ||
        (rc = check_stats_model(model, id_hex, stats_path, doc_model, model_id, foreign_ok,
                                &po.stats_model_id)))
        goto fail;
    po.input_files = known;
    po.n_input_files = mi.n_files;
    po.model_dir = model;
    po.out_dir = out;
    po.stats = stats;
    po.n_stats = n_stats;
    po.model_id = id_hex;
    po.leftover = on_leftover;
    po.calib_ids = ids;
    po.n_calib = n_calib;
    po.key = have_key ? &key : NULL;
    po.force = force;
    po.verify = verify;
    po.verify_rows = vcalib ? &rows : NULL;
    po.probe.backend_opts.threads = (int)threads;
    po.no_space_check = no_space_check;
    po.progress = quiet ? NULL : on_progress;
    po.ud = &last;
    if ((rc = reap_prune(&po, &res)))
        goto fail;

    const reap_rewrite_result *rw = &res.rewrite;
    printf("pruned %s -> %s\n", model, out);
    printf("experts: %d -> %d per layer (%d dropped, criterion %s%s), %d MoE layers\n",
           res.ks.n_experts, res.ks.n_keep, res.ks.n_prune,
           reap_criterion_name(res.ks.criterion),
           res.ks.protect_super_experts ? ", super experts protected" : "", res.ks.n_layers);
    if (res.ks.balance_modalities)
        printf("scores: modality-balanced (mean of the text and image REAP scores)\n");
    printf("tensors: %d in, %d out (%d renamed, %d sliced, %d dropped); %d shard%s\n",
           rw->n_tensors_in, rw->n_tensors_out, rw->n_renamed, rw->n_sliced, rw->n_dropped,
           rw->n_shards, rw->n_shards == 1 ? "" : "s");
    printf("bytes: %.3f GB -> %.3f GB in %.2f s (%.0f MB/s written)\n", rw->bytes_in / 1e9,
           rw->bytes_out / 1e9, res.seconds_rewrite,
           res.seconds_rewrite > 0 ? rw->bytes_out / 1e6 / res.seconds_rewrite : 0.0);
    printf("files copied: %d%s%s\n", rw->n_files_copied, rw->skipped[0] ? "; skipped: " : "",
           rw->skipped);
    if (verify) {
        printf("verify: structural ok (%d tensors, %d shards)\n", res.verify.n_tensors,
               res.verify.n_shards);
        if (res.verify.n_moe) {
            printf("verify: %lld tokens; final hidden states: relative L2 drift %.6g, max "
                   "|diff| %.6g%s\n", (long long)res.verify.n_tokens,
                   res.verify.hidden_rel_l2, res.verify.hidden_max_abs,
                   res.verify.hidden_identical ? " (bit-identical)" : "");
            printf("%6s %16s\n", "layer", "routing changed");
            for (int m = 0; m < res.verify.n_moe; m++)
                printf("%6d %15.2f%%\n", res.verify.layer[m],
                       100.0 * res.verify.route_changed[m]);
        }
    }
    printf("manifest: %s (blake2b-256 %s)%s; %d shard%s (%.2f GB) hashed during the "
           "rewrite, %.2f s more for the manifest\n", REAP_MANIFEST_NAME, res.manifest_digest,
           have_key ? ", signed" : ", not signed (no --key)", res.n_files_prehashed,
           res.n_files_prehashed == 1 ? "" : "s", res.bytes_prehashed / 1e9,
           res.seconds_manifest);
    rc = REAP_OK;
fail:
    if (rc)
        fprintf(stderr, "reap-pruner prune: %s\n", reap_err_msg());
    reap_prune_result_free(&res);
    for (int i = 0; i < n_stats; i++)
        reap_layer_stats_free(&stats[i]);
    free(stats);
    free(doc_model);
    free(doc_calib);
    free(ids_copy);
    free(ids);
    if (have_key)
        reap_sign_key_wipe(&key);
    reap_rows_free(&rows);
    reap_samples_free(&samples);
    reap_config_free(&cfg);
    free(known);
    reap_model_info_free(&mi);
    return rc ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: reap-pruner COMMAND [options]\n\n"
               "commands:\n"
               "  prune     write a pruned copy of a checkpoint (see prune --help)\n"
               "  serve     the reap.v1.Pruner gRPC service (see serve --help)\n"
               "  version   print the version\n");
}

int main(int argc, char **argv)
{
    reap_fault_handlers_install("reap-pruner"); /* a damaged store: a message, not "Bus error" */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "prune"))
        return cmd_prune(argc, argv);
    if (!strcmp(argv[1], "serve"))
        return pruner_cmd_serve(argc, argv);
    if (!strcmp(argv[1], "version")) {
        printf("reap-pruner %s\n", REAP_VERSION);
        return 0;
    }
    fprintf(stderr, "reap-pruner: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

/* store_cmds.c - reap-scorer subcommands on the score store:
 *   stats   merged statistics of a model over chosen (default: all complete)
 *           calibration sets, as reap-stats/1 JSON or a table
 *   list    models, calibration sets (complete or not) and runs
 *   export  records (all, or one model's) to a file
 *   import  records from export files (verified, idempotent)
 *   check   open, clear stale readers, count and verify every record
 * Readers open the store read-only, so they run beside a scorer that is writing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "cli.h"
#include "export.h"
#include "identity.h"
#include "reap_err.h"
#include "runs.h"
#include "scorer_cmds.h"
#include "stats_json.h"
#include "stats_table.h"
#include "stats_store.h"
#include "store.h"

int scorer_calib_ids_text(const reap_id *ids, int n, char **out)
{
    char *s = malloc((size_t)(n > 0 ? n : 1) * 65 + 1);
    *out = NULL;
    if (!s)
        return reap_err_set(REAP_E_NOMEM, "id list");
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(s, ",");
        reap_id_hex(&ids[i], s + strlen(s));
    }
    *out = s;
    return REAP_OK;
}

/* Parse options; prints usage / errors. Returns -1 to continue, else an exit status. */
static int parse(const char *cmd, const char *usage, const cli_opt *opts, int n, int argc,
                 char **argv)
{
    char err[512];
    int help = 0;
    if (cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reap-scorer %s: %s\n", cmd, err);
        return 2;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n);
        return 0;
    }
    return -1;
}

static int open_store(const char *dir, int readonly, reap_store **s)
{
    reap_store_opts o = {.create = !readonly, .readonly = readonly};
    return reap_store_open(dir, &o, s);
}

/* The model id from --model-id HEX or --model DIR (hashed, using the store's cache). */
static int resolve_model(reap_store *s, const char *id_hex, const char *dir, reap_id *out)
{
    reap_model_info mi = {0};
    int rc;
    if (id_hex && dir)
        return reap_err_set(REAP_E_INVALID, "give --model-id or --model, not both");
    if (id_hex)
        return reap_id_parse(id_hex, out);
    if (!dir)
        return reap_err_set(REAP_E_INVALID, "--model-id HEX or --model DIR is required");
    if ((rc = reap_model_identify(s, dir, 0, &mi, NULL)))
        return rc;
    *out = mi.id;
    reap_model_info_free(&mi);
    return REAP_OK;
}

/* "a,b,c" -> ids. */
static int parse_id_list(const char *text, reap_id **ids, int *n)
{
    int cap = 1, k = 0, rc = REAP_OK;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    reap_id *v = calloc((size_t)cap, sizeof *v);
    char *copy = strdup(text), *save = NULL;
    if (!v || !copy) {
        rc = reap_err_set(REAP_E_NOMEM, "id list");
        goto fail;
    }
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if ((rc = reap_id_parse(tok, &v[k++])))
            goto fail;
    *ids = v;
    *n = k;
    v = NULL;
fail:
    free(v);
    free(copy);
    return rc;
}

int scorer_cmd_stats(int argc, char **argv)
{
    const char *store_dir = NULL, *model_hex = NULL, *model_dir = NULL, *calib_list = NULL,
               *stats_json = NULL;
    int table = 0;
    const cli_opt opts[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory", &store_dir, 1},
        {"model-id", NULL, CLI_STR, NULL, "model id (64 hex digits)", &model_hex, 0},
        {"model", NULL, CLI_STR, NULL, "or the checkpoint directory (hashed)", &model_dir, 0},
        {"calib-ids", NULL, CLI_STR, NULL, "comma-separated calibration ids to merge "
         "(default: every complete set of the model)", &calib_list, 0},
        {"stats-json", NULL, CLI_STR, NULL, "write reap-stats/1 JSON here ('-': stdout)",
         &stats_json, 0},
        {"table", NULL, CLI_FLAG, NULL, "print a per-layer summary table", &table, 0},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int ex = parse("stats", "usage: reap-scorer stats --store DIR (--model-id HEX | --model "
                   "DIR) [--calib-ids ID,ID] [--stats-json OUT] [--table]",
                   opts, n_opts, argc, argv);
    if (ex >= 0)
        return ex;
    reap_store *s = NULL;
    reap_id model, *calibs = NULL, *used = NULL;
    reap_layer_stats *st = NULL;
    int n_calibs = 0, n_st = 0, n_used = 0, rc;
    char mh[65], *ids_text = NULL;
    if ((rc = open_store(store_dir, 1, &s)) ||
        (rc = resolve_model(s, model_hex, model_dir, &model)) ||
        (calib_list && (rc = parse_id_list(calib_list, &calibs, &n_calibs))) ||
        (rc = reap_store_stats_merged(s, NULL, &model, calibs, n_calibs, &st, &n_st, &used,
                                      &n_used)) ||
        (rc = scorer_calib_ids_text(used, n_used, &ids_text)))
        goto fail;
    reap_id_hex(&model, mh);
    fprintf(stderr, "reap-scorer stats: model %s, %d calibration set(s) merged\n", mh, n_used);
    if (stats_json && (rc = reap_stats_json_write(stats_json, mh, ids_text,
                                                  n_st ? st[0].tokens : 0, st, n_st)))
        goto fail;
    if (table || !stats_json)
        reap_stats_print_table(stdout, st, n_st, 0.4);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer stats: error: %s\n", reap_err_msg());
    for (int i = 0; i < n_st; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    free(calibs);
    free(used);
    free(ids_text);
    reap_store_close(s);
    return rc ? 1 : 0;
}

static void fmt_time(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    if (!ns || !gmtime_r(&t, &tm) || !strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, n, "-");
}

int scorer_cmd_list(int argc, char **argv)
{
    const char *store_dir = NULL;
    const cli_opt opts[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory", &store_dir, 1},
    };
    int ex = parse("list", "usage: reap-scorer list --store DIR", opts, 1, argc, argv);
    if (ex >= 0)
        return ex;
    reap_store *s = NULL;
    reap_store_snap *snap = NULL;
    reap_id *models = NULL;
    reap_run_info *runs = NULL;
    int n_models = 0, n_runs = 0, rc;
    char h1[65], h2[65], rh[33], t1[32];
    if ((rc = open_store(store_dir, 1, &s)) || (rc = reap_store_snap_begin(s, &snap)) ||
        (rc = reap_store_model_list(s, snap, &models, &n_models)))
        goto fail;
    printf("models (%d)\n", n_models);
    for (int i = 0; i < n_models && !rc; i++) {
        reap_model_info m = {0};
        reap_id *calibs = NULL;
        int n_calibs = 0;
        if (!(rc = reap_store_model_get(s, snap, &models[i], &m)) &&
            !(rc = reap_store_stats_calibs(s, snap, &models[i], 0, &calibs, &n_calibs))) {
            uint64_t bytes = 0;
            for (int f = 0; f < m.n_files; f++)
                bytes += m.files[f].size;
            reap_id_hex(&m.id, h1);
            printf("  %s  %s, %d layers (%d MoE), %d experts top-%d, %d files %.3f GB, "
                   "first seen at %s\n", h1, m.model_type, m.n_layers, m.n_moe_layers,
                   m.n_experts, m.top_k, m.n_files, bytes / 1e9, m.first_seen_path);
            for (int c = 0; c < n_calibs && !rc; c++) {
                reap_calib_info ci = {0};
                int complete = 0, stale = 0, *layers = NULL, n_layers = 0;
                rc = reap_store_stats_complete(s, snap, &m.id, &calibs[c], &complete);
                if (!rc)
                    rc = reap_store_pair_stale(s, snap, &m.id, &calibs[c], &stale);
                if (!rc)
                    rc = reap_store_stats_layers(s, snap, &m.id, &calibs[c], &layers,
                                                 &n_layers);
                reap_id_hex(&calibs[c], h2);
                if (!rc && reap_store_calib_get(s, snap, &calibs[c], &ci) == REAP_OK)
                    printf("    calib %s  %s  %d/%d layers, %llu tokens, %d rows x %d %s, "
                           "%s\n", h2, complete ? "complete" : "partial ", n_layers,
                           m.n_moe_layers, (unsigned long long)ci.n_tokens, ci.n_rows,
                           ci.seq_len, ci.pack ? "packed" : "unpacked", ci.source);
                else if (!rc)
                    printf("    calib %s  %s  %d/%d layers (no calibration record)\n", h2,
                           complete ? "complete" : "partial ", n_layers, m.n_moe_layers);
                if (!rc && stale)
                    printf("      stale: scored before the rotary-positions fix for packed "
                           "Qwen3-VL-MoE rows; not used (score into a new store)\n");
                free(layers);
                reap_calib_info_free(&ci);
            }
        }
        free(calibs);
        reap_model_info_free(&m);
    }
    if (rc || (rc = reap_store_run_list(s, snap, &runs, &n_runs)))
        goto fail;
    printf("runs (%d)\n", n_runs);
    for (int i = 0; i < n_runs; i++) {
        reap_run_id_hex(runs[i].run_id, rh);
        reap_id_hex(&runs[i].model, h1);
        reap_id_hex(&runs[i].calib, h2);
        fmt_time(runs[i].started_unix_ns, t1, sizeof t1);
        printf("  %s  %-9s layers %d/%d (from %d)  model %.16s calib %.16s  %s  %s  pid %d"
               "%s%s\n", rh, reap_run_state_name(runs[i].state), runs[i].layers_done,
               runs[i].n_layers, runs[i].start_layer, h1, h2,
               runs[i].backend ? runs[i].backend : "-", t1, runs[i].pid,
               runs[i].error && *runs[i].error ? "  error: " : "",
               runs[i].error ? runs[i].error : "");
    }
fail:
    if (rc)
        fprintf(stderr, "reap-scorer list: error: %s\n", reap_err_msg());
    for (int i = 0; i < n_runs; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    free(models);
    reap_store_snap_end(snap);
    reap_store_close(s);
    return rc ? 1 : 0;
}

int scorer_cmd_export(int argc, char **argv)
{
    const char *store_dir = NULL, *out = NULL, *model_hex = NULL, *model_dir = NULL;
    const cli_opt opts[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory", &store_dir, 1},
        {"out", NULL, CLI_STR, NULL, "export file to write", &out, 1},
        {"model-id", NULL, CLI_STR, NULL, "export only this model's records", &model_hex, 0},
        {"model", NULL, CLI_STR, NULL, "or its checkpoint directory (hashed)", &model_dir, 0},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int ex = parse("export", "usage: reap-scorer export --store DIR --out FILE [--model-id "
                   "HEX | --model DIR]", opts, n_opts, argc, argv);
    if (ex >= 0)
        return ex;
    reap_store *s = NULL;
    reap_id model;
    reap_export_counts c = {0};
    int rc, one = model_hex || model_dir;
    if ((rc = open_store(store_dir, 1, &s)) ||
        (one && (rc = resolve_model(s, model_hex, model_dir, &model))) ||
        (rc = reap_store_export(s, out, one ? &model : NULL, &c)))
        goto fail;
    fprintf(stderr, "reap-scorer export: %s: %llu model, %llu calibration and %llu "
                    "statistics records\n", out, (unsigned long long)c.models,
            (unsigned long long)c.calibs, (unsigned long long)c.stats);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer export: error: %s\n", reap_err_msg());
    reap_store_close(s);
    return rc ? 1 : 0;
}

int scorer_cmd_import(int argc, char **argv)
{
    const char *store_dir = NULL, *in = NULL;
    const cli_opt opts[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory (created if "
         "absent)", &store_dir, 1},
        {"in", NULL, CLI_STR, NULL, "export file to import", &in, 1},
    };
    int ex = parse("import", "usage: reap-scorer import --store DIR --in FILE", opts, 2, argc,
                   argv);
    if (ex >= 0)
        return ex;
    reap_store *s = NULL;
    reap_import_counts c = {0};
    int rc;
    if ((rc = open_store(store_dir, 0, &s)) || (rc = reap_store_import(s, in, &c)))
        goto fail;
    fprintf(stderr, "reap-scorer import: %s: %llu records, %llu added, %llu already present\n",
            in, (unsigned long long)c.records, (unsigned long long)c.added,
            (unsigned long long)c.present);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer import: error: %s\n", reap_err_msg());
    reap_store_close(s);
    return rc ? 1 : 0;
}

int scorer_cmd_check(int argc, char **argv)
{
    const char *store_dir = NULL;
    const cli_opt opts[] = {
        {"store", "REAP_STORE_PATH", CLI_STR, NULL, "score store directory", &store_dir, 1},
    };
    int ex = parse("check", "usage: reap-scorer check --store DIR", opts, 1, argc, argv);
    if (ex >= 0)
        return ex;
    reap_store *s = NULL;
    reap_store_counts c = {0};
    uint64_t n = 0;
    int rc;
    if ((rc = open_store(store_dir, 1, &s)) || (rc = reap_store_count(s, NULL, &c)) ||
        (rc = reap_store_verify(s, &n)))
        goto fail;
    printf("%s: ok: %llu records verified (models %llu, calibs %llu, stats %llu, runs %llu, "
           "filehash %llu, prunes %llu)\n", store_dir, (unsigned long long)n,
           (unsigned long long)c.models, (unsigned long long)c.calibs,
           (unsigned long long)c.stats, (unsigned long long)c.runs,
           (unsigned long long)c.filehash, (unsigned long long)c.prunes);
fail:
    if (rc)
        fprintf(stderr, "reap-scorer check: error: %s\n", reap_err_msg());
    reap_store_close(s);
    return rc ? 1 : 0;
}

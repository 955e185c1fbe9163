/* cmd_keepset.c - `reapctl keepset`: the experts each MoE layer would keep, printed as a
 * table or JSON, without writing anything. Statistics come from a reap-stats/1 file for
 * now (the store later). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "config.h"
#include "keepset.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "stats_json.h"

static void print_json(const reap_keepset *ks)
{
    json_t *doc = json_object(), *layers = json_object();
    for (int i = 0; i < ks->n_layers; i++) {
        json_t *a = json_array();
        char key[16];
        for (int k = 0; k < ks->n_keep; k++)
            json_array_append_new(a, json_integer(ks->layers[i].keep[k]));
        snprintf(key, sizeof key, "%d", ks->layers[i].layer);
        json_object_set_new(layers, key, a);
    }
    json_object_set_new(doc, "criterion", json_string(reap_criterion_name(ks->criterion)));
    json_object_set_new(doc, "ratio", ks->ratio >= 0 ? json_real(ks->ratio) : json_null());
    json_object_set_new(doc, "n_experts", json_integer(ks->n_experts));
    json_object_set_new(doc, "n_prune", json_integer(ks->n_prune));
    json_object_set_new(doc, "n_keep", json_integer(ks->n_keep));
    json_object_set_new(doc, "protect_super_experts", json_boolean(ks->protect_super_experts));
    json_object_set_new(doc, "experts_to_keep", layers);
    json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    putchar('\n');
    json_decref(doc);
}

static void print_table(const reap_keepset *ks)
{
    printf("criterion %s: %d -> %d experts per layer (%d dropped)%s\n",
           reap_criterion_name(ks->criterion), ks->n_experts, ks->n_keep, ks->n_prune,
           ks->protect_super_experts ? ", super experts protected" : "");
    printf("%5s %6s  %s\n", "layer", "super", "kept experts (original ids)");
    for (int i = 0; i < ks->n_layers; i++) {
        printf("%5d %6d ", ks->layers[i].layer, ks->layers[i].n_super);
        for (int k = 0; k < ks->n_keep; k++)
            printf(" %d", ks->layers[i].keep[k]);
        putchar('\n');
    }
}

int cmd_keepset(int argc, char **argv)
{
    const char *stats_path = NULL, *model = NULL, *ratio = NULL, *n_prune = NULL,
               *criterion = NULL;
    int protect = 0, as_json = 0, help = 0, n = 0, rc;
    char err[512];
    reap_layer_stats *st = NULL;
    reap_config cfg = {0};
    reap_keepset ks = {0};
    reap_keep_opts ko;
    const cli_opt opts[] = {
        {"stats-json", "REAP_STATS_JSON", CLI_STR, NULL, "statistics (reap-scorer run "
         "--stats-json output)", &stats_path, 1},
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory: check the "
         "statistics cover its MoE layers (optional)", &model, 0},
        {"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "fraction of experts removed per layer",
         &ratio, 0},
        {"n-prune", NULL, CLI_STR, NULL, "experts removed per layer (instead of --ratio)",
         &n_prune, 0},
        {"criterion", "REAP_CRITERION", CLI_STR, "reap", "scoring criterion", &criterion, 0},
        {"protect-super-experts", NULL, CLI_FLAG, NULL, "never drop super experts",
         &protect, 0},
        {"json", NULL, CLI_FLAG, NULL, "print JSON instead of a table", &as_json, 0},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    const char *usage = "usage: reapctl keepset --stats-json FILE (--ratio R | --n-prune N) "
                        "[options]";
    if (cli_parse(opts, n_opts, argc, argv, 2, &help, err, sizeof err)) {
        fprintf(stderr, "reapctl keepset: %s\n", err);
        cli_usage(stderr, usage, opts, n_opts);
        return 2;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n_opts);
        return 0;
    }
    if (reap_keep_opts_parse(ratio, n_prune, criterion, protect, &ko)) {
        fprintf(stderr, "reapctl keepset: %s\n", reap_err_msg());
        return 2;
    }
    char cpath[4096];
    if (model)
        snprintf(cpath, sizeof cpath, "%s/config.json", model);
    if ((rc = reap_stats_json_read(stats_path, &st, &n, NULL, NULL, NULL)) ||
        (model && (rc = reap_config_load(cpath, &cfg))) ||
        (rc = reap_keepset_compute(model ? &cfg : NULL, st, n, &ko, &ks))) {
        fprintf(stderr, "reapctl keepset: %s\n", reap_err_msg());
    } else if (as_json) {
        print_json(&ks);
    } else {
        print_table(&ks);
    }
    reap_keepset_free(&ks);
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    reap_config_free(&cfg);
    return rc ? 1 : 0;
}

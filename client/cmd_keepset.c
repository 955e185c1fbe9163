/* cmd_keepset.c - `reapctl keepset`: the experts each MoE layer would keep, printed as a
 * table or JSON, without writing anything. Statistics come from a reap-stats/1 file
 * (--stats-json, computed here) or, without one, from the store through the pruner
 * service (ComputeKeepSet for --model-id; the same table and JSON shape). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "config.h"
#include "criterion_proto.h"
#include "keepset.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"
#include "stats_json.h"

static void print_json(const reap_keepset *ks)
{
    json_t *doc = json_object(), *layers = reap_keepset_json(ks);
    json_object_set_new(doc, "criterion", json_string(reap_criterion_name(ks->criterion)));
    json_object_set_new(doc, "ratio", ks->ratio >= 0 ? json_real(ks->ratio) : json_null());
    json_object_set_new(doc, "n_experts", json_integer(ks->n_experts));
    json_object_set_new(doc, "n_prune", json_integer(ks->n_prune));
    json_object_set_new(doc, "n_keep", json_integer(ks->n_keep));
    json_object_set_new(doc, "protect_super_experts", json_boolean(ks->protect_super_experts));
    if (ks->balance_modalities)
        json_object_set_new(doc, "balance_modalities", json_true());
    json_object_set_new(doc, "experts_to_keep", layers);
    json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    putchar('\n');
    json_decref(doc);
}

static void print_table(const reap_keepset *ks)
{
    printf("criterion %s: %d -> %d experts per layer (%d dropped)%s%s\n",
           reap_criterion_name(ks->criterion), ks->n_experts, ks->n_keep, ks->n_prune,
           ks->protect_super_experts ? ", super experts protected" : "",
           ks->balance_modalities ? ", modality-balanced" : "");
    printf("%5s %6s  %s\n", "layer", "super", "kept experts (original ids)");
    for (int i = 0; i < ks->n_layers; i++) {
        printf("%5d %6d ", ks->layers[i].layer, ks->layers[i].n_super);
        for (int k = 0; k < ks->n_keep; k++)
            printf(" %d", ks->layers[i].keep[k]);
        putchar('\n');
    }
}

/* The kept ids of a ComputeKeepSet reply as a reap_keepset (layers and kept ids only),
 * for reap_keepset_json. REAP_OK, REAP_E_NOMEM, REAP_E_FORMAT (a layer that keeps other
 * than the reply's n_keep experts). */
static int keepset_from_reply(const Reap__V1__KeepSetResponse *r, reap_keepset *ks)
{
    memset(ks, 0, sizeof *ks);
    ks->n_keep = (int)r->n_keep;
    if (r->n_layers && !(ks->layers = calloc(r->n_layers, sizeof *ks->layers)))
        return reap_err_set(REAP_E_NOMEM, "keep set of %zu layers", r->n_layers);
    ks->n_layers = (int)r->n_layers;
    for (size_t i = 0; i < r->n_layers; i++) {
        const Reap__V1__LayerKeepSet *l = r->layers[i];
        reap_keep_layer *kl = &ks->layers[i];
        kl->layer = (int)l->layer;
        if (l->n_keep != r->n_keep) {
            reap_keepset_free(ks);
            return reap_err_set(REAP_E_FORMAT, "the reply's layer %u keeps %zu experts, "
                                "not n_keep %u", l->layer, l->n_keep, r->n_keep);
        }
        if (l->n_keep && !(kl->keep = malloc(l->n_keep * sizeof *kl->keep))) {
            reap_keepset_free(ks);
            return reap_err_set(REAP_E_NOMEM, "keep set of layer %u", l->layer);
        }
        for (size_t k = 0; k < l->n_keep; k++)
            kl->keep[k] = (int)l->keep[k];
    }
    return REAP_OK;
}

/* ComputeKeepSet on the pruner service; prints as the local mode does. */
static int keepset_remote(const reapctl_conn *c, const char *model_id, const char *calib_ids,
                          const reap_keep_opts *ko, int as_json)
{
    Reap__V1__KeepSetRequest q = REAP__V1__KEEP_SET_REQUEST__INIT;
    Reap__V1__PruneParams p = REAP__V1__PRUNE_PARAMS__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_client *cl = NULL;
    rpc_client_status st;
    char **ids = NULL;
    size_t n_ids = 0;
    int ex;
    if (reapctl_split(calib_ids, &ids, &n_ids)) {
        fprintf(stderr, "reapctl keepset: out of memory\n");
        return REAPCTL_EXIT_FAIL;
    }
    p.calib_ids = ids;
    p.n_calib_ids = n_ids;
    /* The one given is sent as set, so an explicit 0 prunes nothing (not the server's
     * default ratio). */
    if (ko->n_prune >= 0) {
        p.n_prune = (uint32_t)ko->n_prune;
        p.n_prune_set = 1;
    } else {
        p.ratio = ko->ratio;
        p.ratio_set = 1;
    }
    p.criterion = reap_criterion_to_proto(ko->criterion);
    p.protect_super_experts = ko->protect_super_experts;
    q.model_id = (char *)model_id;
    q.params = &p;
    if ((ex = reapctl_connect("keepset", c, REAPCTL_PRUNER, NULL, &cl)))
        goto out;
    if (rpc_client_unary(cl, "/reap.v1.Pruner/ComputeKeepSet", &q.base,
                         &reap__v1__keep_set_response__descriptor, c->timeout_ms, &resp,
                         &st) != RPC_OK) {
        ex = reapctl_call_failed("keepset", &st);
        goto out;
    }
    const Reap__V1__KeepSetResponse *r = (const void *)resp;
    const char *cname = reap_criterion_name(ko->criterion);
    if (as_json) {
        reap_keepset ks;
        if (keepset_from_reply(r, &ks)) {
            fprintf(stderr, "reapctl keepset: %s\n", reap_err_msg());
            ex = REAPCTL_EXIT_FAIL;
            goto out;
        }
        json_t *doc = reapctl_pb_to_json(resp), *layers = reap_keepset_json(&ks);
        reap_keepset_free(&ks);
        json_object_set_new(doc, "criterion", json_string(cname));
        json_object_set_new(doc, "n_prune", json_integer((json_int_t)r->n_experts - r->n_keep));
        json_object_set_new(doc, "protect_super_experts",
                            json_boolean(ko->protect_super_experts));
        json_object_set_new(doc, "experts_to_keep", layers);
        json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        putchar('\n');
        json_decref(doc);
    } else {
        printf("model %.16s, %zu calibration set(s), statistics digest %.16s\n", r->model_id,
               r->n_calib_ids, r->stats_digest);
        printf("criterion %s: %u -> %u experts per layer (%u dropped)%s\n", cname,
               r->n_experts, r->n_keep, r->n_experts - r->n_keep,
               ko->protect_super_experts ? ", super experts protected" : "");
        printf("%5s %6s  %s\n", "layer", "super", "kept experts (original ids)");
        for (size_t i = 0; i < r->n_layers; i++) {
            printf("%5u %6s ", r->layers[i]->layer, "-");
            for (size_t k = 0; k < r->layers[i]->n_keep; k++)
                printf(" %u", r->layers[i]->keep[k]);
            putchar('\n');
        }
    }
    ex = 0;
out:
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_client_close(cl);
    reapctl_strv_free(ids);
    return ex;
}

int cmd_keepset(int argc, char **argv)
{
    const char *stats_path = NULL, *model = NULL, *ratio = NULL, *n_prune = NULL,
               *criterion = NULL, *model_id = NULL, *calib_ids = NULL;
    int protect = 0, balance = 0, as_json = 0, n = 0, rc, n_opts = 0, ex;
    reapctl_conn conn;
    reap_layer_stats *st = NULL;
    reap_config cfg = {0};
    reap_keepset ks = {0};
    reap_keep_opts ko;
    cli_opt opts[24] = {
        {"stats-json", "REAP_STATS_JSON", CLI_STR, NULL, "statistics (reap-scorer run "
         "--stats-json output); without it: the store, through the pruner service",
         &stats_path, 0},
        {"model", "REAP_MODEL_PATH", CLI_STR, NULL, "checkpoint directory: check the "
         "statistics cover its MoE layers (optional; without --stats-json: a model id)",
         &model, 0},
        {"model-id", NULL, CLI_STR, NULL, "model id or prefix in the store (pruner service)",
         &model_id, 0},
        {"calib-ids", NULL, CLI_STR, NULL, "with the service: calibration sets to merge, comma "
         "separated (default: every complete set)", &calib_ids, 0},
        {"ratio", "REAP_PRUNE_RATIO", CLI_STR, NULL, "fraction of experts removed per layer",
         &ratio, 0},
        {"n-prune", NULL, CLI_STR, NULL, "experts removed per layer (instead of --ratio)",
         &n_prune, 0},
        {"criterion", "REAP_CRITERION", CLI_STR, "reap", "scoring criterion", &criterion, 0},
        {"protect-super-experts", NULL, CLI_FLAG, NULL, "never drop super experts",
         &protect, 0},
        {"balance-modalities", NULL, CLI_FLAG, NULL, "mean of the text and image REAP "
         "scores (criterion reap; with --stats-json only)", &balance, 0},
        {"json", NULL, CLI_FLAG, NULL, "print JSON instead of a table", &as_json, 0},
    };
    while (opts[n_opts].flag)
        n_opts++;
    reapctl_conn_opts(&conn, REAPCTL_PRUNER, opts, &n_opts);
    const char *usage = "usage: reapctl keepset (--stats-json FILE | --model-id ID) "
                        "(--ratio R | --n-prune N) [options]";
    if ((ex = reapctl_parse("keepset", usage, opts, n_opts, argc, argv, NULL, 0, NULL)) >= 0)
        return ex;
    if (reap_keep_opts_parse(ratio, n_prune, criterion, protect, &ko) ||
        ((ko.balance_modalities = balance) && reap_keep_opts_check(&ko))) {
        fprintf(stderr, "reapctl keepset: %s\n", reap_err_msg());
        return 2;
    }
    if (!stats_path && balance) {
        /* the pruner service's ComputeKeepSet has no such parameter yet */
        fprintf(stderr, "reapctl keepset: --balance-modalities needs --stats-json FILE (the "
                "pruner service computes totals-based keep sets only)\n");
        return 2;
    }
    if (!stats_path) {
        struct stat sb;
        if (!model_id && model && stat(model, &sb) != 0)
            model_id = model;
        if (!model_id) {
            fprintf(stderr, "reapctl keepset: give --stats-json FILE, or --model-id ID for "
                    "the statistics in the store (pruner service)\n");
            return 2;
        }
        return keepset_remote(&conn, model_id, calib_ids, &ko, as_json);
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

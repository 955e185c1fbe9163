/* serve_keepset.c - the keep-set side of `reap-pruner serve` (pruner_serve_impl.h): a request's
 * PruneParams as keep options, the model's statistics read from the store (one
 * snapshot), and ComputeKeepSet (reap_keepset_compute: which experts each layer keeps,
 * with their scores; nothing is written).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "criterion_proto.h"
#include "pruner_serve_impl.h"
#include "reap_err.h"
#include "rpc_status.h"
#include "stats.h"
#include "svc.h"

rpc_code pruner_parse_params(const pruner_svc *S, const Reap__V1__PruneParams *p,
                             reap_keep_opts *ko, char *err, size_t errlen)
{
    memset(ko, 0, sizeof *ko);
    if (!p) {
        snprintf(err, errlen, "params: required (ratio or n_prune)");
        return RPC_INVALID_ARGUMENT;
    }
    if (p->criterion == REAP__V1__CRITERION__CRITERION_UNSPECIFIED) {
        ko->criterion = S->criterion_default;
    } else if (reap_criterion_from_proto((int)p->criterion, &ko->criterion)) {
        snprintf(err, errlen, "params.criterion: unknown value %d", (int)p->criterion);
        return RPC_INVALID_ARGUMENT;
    }
    ko->protect_super_experts = p->protect_super_experts;
    int have_ratio = p->ratio_set || p->ratio != 0, have_n = p->n_prune_set || p->n_prune != 0;
    if (have_ratio && have_n) {
        snprintf(err, errlen, "params: give ratio or n_prune, not both (ratio %g, n_prune %u)",
                 p->ratio, p->n_prune);
        return RPC_INVALID_ARGUMENT;
    }
    if (have_n) {
        ko->n_prune = p->n_prune;   /* the value sent: refusals name it as it came */
        ko->ratio = -1;
        return RPC_OK;
    }
    ko->n_prune = -1;
    if (!have_ratio) {
        if (!S->ratio_default) {
            snprintf(err, errlen, "params: give ratio (in [0, 1)) or n_prune (this server "
                     "has no default ratio, --ratio / REAP_PRUNE_RATIO)");
            return RPC_INVALID_ARGUMENT;
        }
        ko->ratio = strtod(S->ratio_default, NULL);
        return RPC_OK;
    }
    ko->ratio = p->ratio;
    if (reap_keep_opts_check(ko)) {
        snprintf(err, errlen, "params.%s", reap_err_msg());
        return RPC_INVALID_ARGUMENT;
    }
    return RPC_OK;
}

rpc_code pruner_check_n_prune(const reap_keep_opts *ko, const reap_layer_stats *st, int n_st,
                              int *n_prune, char *err, size_t errlen)
{
    int rc;
    *n_prune = 0;
    if (!n_st)
        return RPC_OK;   /* no statistics: reported by the keep set */
    if ((rc = reap_keep_n_prune(ko, st[0].n_experts, st[0].top_k, n_prune))) {
        snprintf(err, errlen, "params: %s", reap_err_msg());
        return rc == REAP_E_INVALID ? RPC_INVALID_ARGUMENT : RPC_FAILED_PRECONDITION;
    }
    return RPC_OK;
}

rpc_code pruner_load_stats(pruner_svc *S, const reap_id *model, char *const *calib_texts,
                           size_t n_calib, reap_layer_stats **st, int *n_st, reap_id **used,
                           int *n_used, char *err, size_t errlen)
{
    reap_store_snap *snap = NULL;
    reap_id *calibs = NULL;
    rpc_code code;
    int rc;
    if ((rc = reap_store_snap_begin(S->d.store, &snap))) {
        snprintf(err, errlen, "store: %s", reap_err_msg());
        return RPC_INTERNAL;
    }
    code = svc_resolve_calibs(S->d.store, snap, model, "params.calib_ids", calib_texts, n_calib,
                              &calibs, err, errlen);
    if (!code && (rc = reap_store_stats_merged(S->d.store, snap, model, calibs, (int)n_calib, st,
                                               n_st, used, n_used))) {
        code = rpc_code_from_reap(rc);
        snprintf(err, errlen, "%s", reap_err_msg());
    }
    reap_store_snap_end(snap);
    free(calibs);
    return code;
}

void pruner_free_stats(reap_layer_stats *st, int n)
{
    for (int i = 0; i < n; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
}

int pruner_serve_keepset(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__KeepSetRequest *q = (const void *)req;
    pruner_svc *S = ud;
    reap_keep_opts ko;
    reap_keepset ks = {0};
    reap_layer_stats *st = NULL;
    reap_id model, *used = NULL;
    int n_st = 0, n_used = 0, n_prune = 0, rc;
    char err[1024], digest[65];
    svc_pool pool = {0};
    rpc_code code;
    Reap__V1__KeepSetResponse resp = REAP__V1__KEEP_SET_RESPONSE__INIT;

    if ((code = pruner_parse_params(S, q->params, &ko, err, sizeof err)) ||
        (code = svc_resolve_model(S->d.store, NULL, "model_id", q->model_id, &model, err,
                                  sizeof err)) ||
        (code = pruner_load_stats(S, &model, q->params->calib_ids, q->params->n_calib_ids,
                                  &st, &n_st, &used, &n_used, err, sizeof err)))
        return rpc_call_error(call, code, "%s", err);
    if ((code = pruner_check_n_prune(&ko, st, n_st, &n_prune, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if ((rc = reap_keepset_compute(NULL, st, n_st, &ko, &ks)) ||
        (rc = reap_stats_digest(st, n_st, digest))) {
        rc = rpc_call_error(call, rpc_code_from_reap(rc), "%s", reap_err_msg());
        goto done;
    }
    resp.model_id = svc_hex(&pool, model.b, 32);
    resp.calib_ids = svc_alloc(&pool, (size_t)n_used * sizeof *resp.calib_ids);
    for (int i = 0; i < n_used && resp.calib_ids; i++)
        resp.calib_ids[resp.n_calib_ids++] = svc_hex(&pool, used[i].b, 32);
    resp.criterion = reap_criterion_to_proto(ks.criterion);
    resp.ratio = ks.ratio >= 0 ? ks.ratio : 0;
    resp.n_experts = (uint32_t)ks.n_experts;
    resp.n_keep = (uint32_t)ks.n_keep;
    resp.stats_digest = digest;
    resp.layers = svc_alloc(&pool, (size_t)ks.n_layers * sizeof *resp.layers);
    for (int l = 0; l < ks.n_layers && resp.layers; l++) {
        const reap_keep_layer *kl = &ks.layers[l];
        Reap__V1__LayerKeepSet *o = svc_alloc(&pool, sizeof *o);
        size_t E = (size_t)ks.n_experts;
        if (!o)
            break;
        reap__v1__layer_keep_set__init(o);
        o->layer = (uint32_t)kl->layer;
        o->keep = svc_alloc(&pool, E * sizeof *o->keep);
        o->pruned = svc_alloc(&pool, E * sizeof *o->pruned);
        o->scores = svc_alloc(&pool, E * sizeof *o->scores);
        if (pool.failed)
            break;
        for (size_t e = 0, k = 0; e < E; e++) {
            if (k < (size_t)ks.n_keep && kl->keep[k] == (int)e) {
                o->keep[o->n_keep++] = (uint32_t)e;
                k++;
            } else {
                o->pruned[o->n_pruned++] = (uint32_t)e;
            }
            o->scores[e] = kl->scores[e];
        }
        o->n_scores = E;
        resp.layers[resp.n_layers++] = o;
    }
    rc = svc_respond(call, &pool, &resp.base);
done:
    reap_keepset_free(&ks);
    pruner_free_stats(st, n_st);
    free(used);
    svc_pool_free(&pool);
    return rc;
}

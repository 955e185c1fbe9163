/* serve_store.c - the store queries of `reap-scorer serve` (scorer_serve_impl.h): ListModels
 * (the catalog: models, their calibration sets and how many layers each has scored) and
 * GetStats (merged statistics of a model, with their digest), each read through one
 * store snapshot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "reap.pb-c.h"
#include "reap_err.h"
#include "scorer_serve_impl.h"
#include "stats.h"
#include "stats_store.h"
#include "svc.h"

int scorer_serve_list_models(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    scorer_svc *S = ud;
    reap_store_snap *snap = NULL;
    reap_id *ids = NULL;
    int n = 0, rc;
    svc_pool pool = {0};
    Reap__V1__ListModelsResponse resp = REAP__V1__LIST_MODELS_RESPONSE__INIT;
    (void)req;
    if ((rc = reap_store_snap_begin(S->d.store, &snap)) ||
        (rc = reap_store_model_list(S->d.store, snap, &ids, &n)))
        goto fail;
    if (n && !(resp.models = svc_alloc(&pool, (size_t)n * sizeof *resp.models)))
        goto respond;
    for (int i = 0; i < n; i++) {
        reap_model_info mi = {0};
        reap_id *calibs = NULL;
        int n_calibs = 0;
        Reap__V1__Model *o = svc_alloc(&pool, sizeof *o);
        if (!o)
            goto respond;
        reap__v1__model__init(o);
        if ((rc = reap_store_model_get(S->d.store, snap, &ids[i], &mi)) ||
            (rc = reap_store_stats_calibs(S->d.store, snap, &ids[i], 0, &calibs, &n_calibs))) {
            reap_model_info_free(&mi);
            goto fail;
        }
        o->model_id = svc_hex(&pool, mi.id.b, 32);
        o->model_type = svc_strdup(&pool, mi.model_type);
        o->n_layers = (uint32_t)mi.n_layers;
        o->hidden = (uint32_t)mi.hidden;
        o->n_experts = (uint32_t)mi.n_experts;
        o->top_k = (uint32_t)mi.top_k;
        o->first_seen_path = svc_strdup(&pool, mi.first_seen_path);
        if ((o->moe_layers = svc_alloc(&pool, (size_t)mi.n_moe_layers * sizeof(uint32_t)))) {
            for (int l = 0; l < mi.n_moe_layers; l++)
                o->moe_layers[l] = (uint32_t)mi.moe_layers[l];
            o->n_moe_layers = (size_t)mi.n_moe_layers;
        }
        for (int f = 0; f < mi.n_files; f++)
            o->total_bytes += mi.files[f].size;
        if (n_calibs && (o->calibs = svc_alloc(&pool, (size_t)n_calibs * sizeof *o->calibs)))
            for (int c = 0; c < n_calibs; c++) {
                Reap__V1__CalibSet *cs = svc_alloc(&pool, sizeof *cs);
                reap_calib_info ci = {0};
                int *layers = NULL, n_layers = 0;
                if (!cs)
                    break;
                reap__v1__calib_set__init(cs);
                cs->calib_id = svc_hex(&pool, calibs[c].b, 32);
                if (reap_store_calib_get(S->d.store, snap, &calibs[c], &ci) == REAP_OK) {
                    cs->source = svc_strdup(&pool, ci.source);
                    cs->samples = ci.n_samples;
                    cs->rows = (uint32_t)ci.n_rows;
                    cs->seq_len = (uint32_t)ci.seq_len;
                    cs->packed = ci.pack;
                    cs->tokens = ci.n_tokens;
                }
                reap_calib_info_free(&ci);
                if (reap_store_stats_layers(S->d.store, snap, &ids[i], &calibs[c], &layers,
                                            &n_layers) == REAP_OK)
                    cs->layers_scored = (uint32_t)n_layers;
                free(layers);
                o->calibs[o->n_calibs++] = cs;
            }
        free(calibs);
        reap_model_info_free(&mi);
        resp.models[resp.n_models++] = o;
    }
respond:   /* after a failed allocation too: svc_respond answers RESOURCE_EXHAUSTED */
    rc = svc_respond(call, &pool, &resp.base);
    goto done;
fail:
    rc = rpc_call_error(call, scorer_code(rc), "store: %s", reap_err_msg());
done:
    reap_store_snap_end(snap);
    free(ids);
    svc_pool_free(&pool);
    return rc;
}

/* One modality's statistics as a GetStats message (in pool; NULL and pool->failed when
 * out of memory). */
static Reap__V1__ModalityStats *modality_pb(svc_pool *pool, const reap_modality_stats *v,
                                            size_t E)
{
    Reap__V1__ModalityStats *o = svc_alloc(pool, sizeof *o);
    if (!o)
        return NULL;
    reap__v1__modality_stats__init(o);
    o->tokens = (uint64_t)v->tokens;
    o->count = svc_alloc(pool, E * sizeof *o->count);
    o->sum_gate_norm = svc_alloc(pool, E * sizeof(double));
    o->sum_norm = svc_alloc(pool, E * sizeof(double));
    o->sum_gate = svc_alloc(pool, E * sizeof(double));
    o->max_act = svc_alloc(pool, E * sizeof(double));
    if (pool->failed)
        return NULL;
    for (size_t e = 0; e < E; e++) {
        o->count[e] = (uint64_t)v->count[e];
        o->sum_gate_norm[e] = v->sum_gate_norm[e];
        o->sum_norm[e] = v->sum_norm[e];
        o->sum_gate[e] = v->sum_gate[e];
        o->max_act[e] = (double)v->max_act[e];
    }
    o->n_count = o->n_sum_gate_norm = o->n_sum_norm = o->n_sum_gate = o->n_max_act = E;
    return o;
}

int scorer_serve_get_stats(rpc_call *call, const ProtobufCMessage *req, void *ud)
{
    const Reap__V1__GetStatsRequest *q = (const void *)req;
    scorer_svc *S = ud;
    reap_store_snap *snap = NULL;
    reap_id model, *calibs = NULL, *used = NULL;
    reap_layer_stats *st = NULL;
    int n_st = 0, n_used = 0, rc;
    svc_pool pool = {0};
    Reap__V1__GetStatsResponse resp = REAP__V1__GET_STATS_RESPONSE__INIT;
    char err[1024], digest[65];
    rpc_code code;

    if ((rc = reap_store_snap_begin(S->d.store, &snap)))
        return rpc_call_error(call, RPC_INTERNAL, "store: %s", reap_err_msg());
    if ((code = svc_resolve_model(S->d.store, snap, "model_id", q->model_id, &model, err,
                                  sizeof err)) ||
        (code = svc_resolve_calibs(S->d.store, snap, &model, "calib_ids", q->calib_ids,
                                   q->n_calib_ids, &calibs, err, sizeof err))) {
        rc = rpc_call_error(call, code, "%s", err);
        goto done;
    }
    if ((rc = reap_store_stats_merged(S->d.store, snap, &model, calibs, (int)q->n_calib_ids, &st,
                                      &n_st, &used, &n_used))) {
        rc = rpc_call_error(call, scorer_code(rc), "%s", reap_err_msg());
        goto done;
    }
    for (size_t i = 0; i < q->n_layers; i++) {
        int found = 0;
        for (int l = 0; l < n_st; l++)
            found |= st[l].layer == (int)q->layers[i];
        if (!found) {
            rc = rpc_call_error(call, RPC_INVALID_ARGUMENT, "layers[%zu]: layer %u is not a "
                                "MoE layer of the model", i, q->layers[i]);
            goto done;
        }
    }
    if ((rc = reap_stats_digest(st, n_st, digest))) {
        rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "%s", reap_err_msg());
        goto done;
    }
    resp.model_id = svc_hex(&pool, model.b, 32);
    resp.stats_digest = digest;
    resp.tokens = n_st ? (uint64_t)st[0].tokens : 0;
    resp.calib_ids = svc_alloc(&pool, (size_t)n_used * sizeof *resp.calib_ids);
    for (int i = 0; i < n_used && resp.calib_ids; i++)
        resp.calib_ids[resp.n_calib_ids++] = svc_hex(&pool, used[i].b, 32);
    resp.layers = svc_alloc(&pool, (size_t)n_st * sizeof *resp.layers);
    for (int l = 0; l < n_st && resp.layers; l++) {
        const reap_layer_stats *s = &st[l];
        int want = q->n_layers == 0;
        for (size_t i = 0; i < q->n_layers; i++)
            want |= s->layer == (int)q->layers[i];
        if (!want)
            continue;
        size_t E = (size_t)s->n_experts;
        Reap__V1__LayerStats *o = svc_alloc(&pool, sizeof *o);
        if (!o)
            break;
        reap__v1__layer_stats__init(o);
        o->layer = (uint32_t)s->layer;
        o->n_experts = (uint32_t)E;
        o->top_k = (uint32_t)s->top_k;
        o->tokens = (uint64_t)s->tokens;
        o->count = svc_alloc(&pool, E * sizeof *o->count);
        o->sum_gate_norm = svc_alloc(&pool, E * sizeof(double));
        o->sum_norm = svc_alloc(&pool, E * sizeof(double));
        o->sum_gate = svc_alloc(&pool, E * sizeof(double));
        o->max_act = svc_alloc(&pool, E * sizeof(double));
        o->reap = svc_alloc(&pool, E * sizeof(double));
        if (pool.failed)
            break;
        for (size_t e = 0; e < E; e++) {
            o->count[e] = (uint64_t)s->count[e];
            o->sum_gate_norm[e] = s->sum_gate_norm[e];
            o->sum_norm[e] = s->sum_norm[e];
            o->sum_gate[e] = s->sum_gate[e];
            o->max_act[e] = (double)s->max_act[e];
            o->reap[e] = reap_layer_stats_score(s, (int)e, REAP_CRIT_REAP);
        }
        o->n_count = o->n_sum_gate_norm = o->n_sum_norm = o->n_sum_gate = o->n_max_act =
            o->n_reap = E;
        if (reap_layer_stats_has_image(s)) {   /* text-only replies unchanged */
            o->text = modality_pb(&pool, &s->mod[REAP_MOD_TEXT], E);
            o->image = modality_pb(&pool, &s->mod[REAP_MOD_IMAGE], E);
            if (pool.failed)
                break;
        }
        resp.layers[resp.n_layers++] = o;
    }
    rc = svc_respond(call, &pool, &resp.base);
done:
    reap_store_snap_end(snap);
    for (int i = 0; i < n_st; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    free(calibs);
    free(used);
    svc_pool_free(&pool);
    return rc;
}

/* engine_hidden.c - the layer loop of engine.c, keeping final hidden states and per-token
 * routes for verification (see engine_hidden.h). The routes come from the backend itself
 * through its observer (reap_backend_opts.on_routes). */
#include "engine_hidden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "reap_err.h"
#include "weights.h"


void reap_probe_free(reap_probe *p)
{
    if (!p)
        return;
    free(p->hidden);
    free(p->valid);
    free(p->moe_layer);
    free(p->routes);
    memset(p, 0, sizeof *p);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct route_sink {
    reap_probe *p;
    int cap;            /* MoE layers of the config: room in p->moe_layer and p->routes */
} route_sink;

/* The backend's routes observer (reap_routes_cb): the routes of MoE layer number
 * p->n_moe, each token's ids sorted ascending. */
static int collect_routes(void *ud, const reap_routes *r)
{
    route_sink *sink = ud;
    reap_probe *p = sink->p;
    if (p->n_moe >= sink->cap || r->K != p->K || r->n_valid != p->n_valid ||
        memcmp(r->valid, p->valid, (size_t)p->n_valid * sizeof *p->valid))
        return reap_err_set(REAP_E_INTERNAL, "layer %d: routes of MoE layer %d for %lld "
                            "positions, top-%d; expected at most %d MoE layers, %lld valid "
                            "positions, top-%d", r->layer, p->n_moe, (long long)r->n_valid,
                            r->K, sink->cap, (long long)p->n_valid, p->K);
    int32_t *dst = p->routes + (int64_t)p->n_moe * p->n_valid * p->K;
    memcpy(dst, r->ids, (size_t)(p->n_valid * p->K) * sizeof *dst);
    for (int64_t n = 0; n < p->n_valid; n++)
        qsort(dst + n * p->K, (size_t)p->K, sizeof *dst, cmp_i32);
    p->moe_layer[p->n_moe++] = r->layer;
    return REAP_OK;
}

int reap_engine_probe(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_probe_opts *opts, reap_probe *out)
{
    const reap_backend_i *be = opts && opts->backend ? opts->backend : &reap_backend_cpu;
    reap_backend_opts bopts = opts ? opts->backend_opts : (reap_backend_opts){0};
    const int want_routes = opts && opts->want_routes;
    const int64_t T = (int64_t)rows->n_rows * rows->seq_len, H = cfg->hidden;
    const int K = cfg->n_experts_used;
    int rc = REAP_OK, n_moe = reap_config_n_moe_layers(cfg);
    void *ctx = NULL;
    reap_layer_stats st = {0};
    const st_tensor *embed;
    route_sink sink = {out, n_moe};
    memset(out, 0, sizeof *out);

    out->T = T;
    out->H = (int)H;
    out->K = K;
    out->hidden = malloc((size_t)(T * H + 1) * sizeof *out->hidden);
    out->valid = malloc((size_t)(T + 1) * sizeof *out->valid);
    if (!out->hidden || !out->valid) {
        rc = reap_err_set(REAP_E_NOMEM, "probe: hidden states of %lld x %lld", (long long)T,
                          (long long)H);
        goto fail;
    }
    for (int64_t t = 0; t < T; t++)
        if (rows->mask[t])
            out->valid[out->n_valid++] = t;

    if (want_routes && n_moe > 0) {
        out->moe_layer = malloc((size_t)n_moe * sizeof *out->moe_layer);
        out->routes = malloc((size_t)(n_moe * out->n_valid * K + 1) * sizeof *out->routes);
        if (!out->moe_layer || !out->routes) {
            rc = reap_err_set(REAP_E_NOMEM, "probe: routes of %d layers x %lld positions",
                              n_moe, (long long)out->n_valid);
            goto fail;
        }
        bopts.on_routes = collect_routes;
        bopts.routes_ud = &sink;
    }
    if ((rc = reap_layer_stats_init(&st, 0, cfg->n_experts, K)))
        goto fail;
    if ((rc = be->init(cfg, rows, &bopts, &ctx)) ||
        (rc = reap_embed_weights_get(ck, cfg, &embed)) || (rc = be->embed(ctx, embed)))
        goto fail;

    for (int layer = 0; layer < cfg->n_layers; layer++) {
        reap_layer_weights w;
        if ((rc = reap_layer_weights_get(ck, cfg, layer, &w)))
            goto fail;
        reap_layer_stats_zero(&st);
        st.layer = layer;
        rc = be->load_layer(ctx, &w);
        if (!rc)
            rc = be->forward_layer(ctx, w.is_moe ? &st : NULL);
        reap_layer_weights_free(&w);
        if (rc)
            goto fail;
        if (opts && opts->on_layer) {
            if ((rc = be->get_hidden(ctx, out->hidden)) ||
                (rc = opts->on_layer(opts->ud, layer, out->hidden, T, (int)H)))
                goto fail;
        }
    }
    if (out->n_moe != (out->routes ? n_moe : 0)) {
        rc = reap_err_set(REAP_E_UNSUPPORTED, "probe: the %s backend reported the routes of "
                          "%d of %d MoE layers", be->name, out->n_moe, n_moe);
        goto fail;
    }
    if ((rc = be->get_hidden(ctx, out->hidden)))
        goto fail;
    char nname[64];
    snprintf(nname, sizeof nname, "%snorm.weight", cfg->prefix);
    const st_tensor *nt = reap_ckpt_find(ck, nname);
    if (nt && nt->numel == H) {
        float *wn = malloc((size_t)H * sizeof *wn);
        if (!wn) {
            rc = reap_err_set(REAP_E_NOMEM, "probe: final norm");
            goto fail;
        }
        rc = reap_tensor_to_f32(nt, 0, H, wn);
        if (!rc)
            cpu_rmsnorm(out->hidden, out->hidden, wn, T, (int)H, cfg->rms_eps);
        free(wn);
        if (rc)
            goto fail;
        out->final_norm = 1;
    }
    be->free(ctx);
    reap_layer_stats_free(&st);
    return REAP_OK;
fail:
    if (ctx)
        be->free(ctx);
    reap_layer_stats_free(&st);
    reap_probe_free(out);
    return rc;
}

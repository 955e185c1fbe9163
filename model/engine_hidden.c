/* engine_hidden.c - the layer loop of engine.c, keeping final hidden states and per-token
 * routes for verification (see engine_hidden.h). */
#include "engine_hidden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_gemm.h"
#include "cpu_ops.h"
#include "parallel.h"
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

typedef struct route_job {
    const float *logits;  /* [Nv, E] */
    int E, K, renorm;
    int32_t *out;         /* [Nv, K] */
} route_job;

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void route_range(void *ud, int64_t begin, int64_t end, int tid)
{
    (void)tid;
    route_job *j = ud;
    double w[512];
    for (int64_t n = begin; n < end; n++) {
        int32_t *idx = j->out + n * j->K;
        cpu_router_topk(j->logits + n * j->E, j->E, j->K, j->renorm, idx, w);
        qsort(idx, (size_t)j->K, sizeof *idx, cmp_i32);
    }
}

/* Routes of the valid positions of x' ([T, H]) with the router of layer w. */
static int probe_routes(const reap_config *cfg, const reap_layer_weights *w, const float *xp,
                        const int64_t *valid, int64_t Nv, int threads, int32_t *out)
{
    const int64_t H = cfg->hidden, E = cfg->n_experts;
    int rc = REAP_OK;
    float *m = malloc((size_t)(Nv * H + 1) * sizeof *m);
    float *logits = malloc((size_t)(Nv * E + 1) * sizeof *logits);
    float *post = malloc((size_t)H * sizeof *post);
    float *router = malloc((size_t)(E * H) * sizeof *router);
    float *router_p = malloc((size_t)cpu_gemm_packed_len(E, H) * sizeof *router_p);
    if (!m || !logits || !post || !router || !router_p) {
        rc = reap_err_set(REAP_E_NOMEM, "layer %d: routing probe buffers", w->layer);
        goto done;
    }
    if ((rc = reap_tensor_to_f32(w->post_norm, 0, H, post)) ||
        (rc = reap_tensor_to_f32(w->router, 0, E * H, router)))
        goto done;
    for (int64_t n = 0; n < Nv; n++)
        memcpy(m + n * H, xp + valid[n] * H, (size_t)H * sizeof *m);
    cpu_rmsnorm(m, m, post, Nv, (int)H, cfg->rms_eps);
    /* The same row-independent GEMM as the CPU backend's router (cpu_gemm.h). */
    cpu_gemm_pack(router_p, router, E, H);
    cpu_gemm(threads, logits, m, router_p, Nv, E, H);
    route_job j = {logits, (int)E, cfg->n_experts_used, cfg->norm_topk_prob, out};
    reap_parallel_for(threads, Nv, route_range, &j);
done:
    free(m);
    free(logits);
    free(post);
    free(router);
    free(router_p);
    return rc;
}

int reap_engine_probe(const reap_ckpt *ck, const reap_config *cfg, const reap_rows *rows,
                      const reap_probe_opts *opts, reap_probe *out)
{
    const reap_backend_i *be = opts && opts->backend ? opts->backend : &reap_backend_cpu;
    reap_backend_opts bopts = opts ? opts->backend_opts : (reap_backend_opts){0};
    const int want_routes = opts && opts->want_routes;
    const int64_t T = (int64_t)rows->n_rows * rows->seq_len, H = cfg->hidden;
    const int K = cfg->n_experts_used;
    int threads = bopts.threads > 0 ? bopts.threads : reap_cpu_count();
    int rc = REAP_OK, n_moe = reap_config_n_moe_layers(cfg);
    void *ctx = NULL;
    float *h_in = NULL, *xp = NULL;
    uint16_t *zeros = NULL;
    reap_layer_stats st = {0};
    reap_config bcfg = *cfg;
    const st_tensor *embed;
    memset(out, 0, sizeof *out);
    if (K > 512)
        return reap_err_set(REAP_E_UNSUPPORTED, "routing probe: top_k %d > 512", K);

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

    /* The zero dense MLP of the routing probe: [Id, H] gate/up and [H, Id] down, BF16
     * zeros (the backend is told Id = 1 when the model has no dense width). */
    st_tensor zg = {0}, zd = {0};
    if (want_routes && n_moe > 0) {
        int64_t Id = cfg->inter > 0 ? cfg->inter : 1;
        bcfg.inter = (int)Id;
        out->moe_layer = malloc((size_t)n_moe * sizeof *out->moe_layer);
        out->routes = malloc((size_t)(n_moe * out->n_valid * K + 1) * sizeof *out->routes);
        h_in = malloc((size_t)(T * H) * sizeof *h_in);
        xp = malloc((size_t)(T * H) * sizeof *xp);
        zeros = calloc((size_t)(Id * H), sizeof *zeros);
        if (!out->moe_layer || !out->routes || !h_in || !xp || !zeros) {
            rc = reap_err_set(REAP_E_NOMEM, "probe: routing buffers");
            goto fail;
        }
        zg = (st_tensor){.name = "(probe zero gate/up)", .dtype = ST_BF16, .ndim = 2,
                         .shape = {Id, H}, .data = zeros, .nbytes = (uint64_t)(Id * H * 2),
                         .numel = Id * H};
        zd = zg;
        zd.name = "(probe zero down)";
        zd.shape[0] = H;
        zd.shape[1] = Id;
    }
    if ((rc = reap_layer_stats_init(&st, 0, cfg->n_experts, K)))
        goto fail;
    if ((rc = be->init(&bcfg, rows, &bopts, &ctx)) ||
        (rc = reap_embed_weights_get(ck, cfg, &embed)) || (rc = be->embed(ctx, embed)))
        goto fail;

    for (int layer = 0; layer < cfg->n_layers; layer++) {
        reap_layer_weights w;
        if ((rc = reap_layer_weights_get(ck, cfg, layer, &w)))
            goto fail;
        if (w.is_moe && want_routes) {
            reap_layer_weights pw = w;
            pw.is_moe = 0;
            pw.mlp_gate = &zg;
            pw.mlp_up = &zg;
            pw.mlp_down = &zd;
            int m = out->n_moe++;
            out->moe_layer[m] = layer;
            if (!(rc = be->get_hidden(ctx, h_in)) && !(rc = be->load_layer(ctx, &pw)) &&
                !(rc = be->forward_layer(ctx, NULL)) && !(rc = be->get_hidden(ctx, xp)))
                rc = probe_routes(cfg, &w, xp, out->valid, out->n_valid, threads,
                                  out->routes + (int64_t)m * out->n_valid * K);
            if (!rc)
                rc = be->set_hidden(ctx, h_in);
        }
        if (!rc) {
            reap_layer_stats_zero(&st);
            st.layer = layer;
            rc = be->load_layer(ctx, &w);
            if (!rc)
                rc = be->forward_layer(ctx, w.is_moe ? &st : NULL);
        }
        reap_layer_weights_free(&w);
        if (rc)
            goto fail;
        if (opts && opts->on_layer) {
            if ((rc = be->get_hidden(ctx, out->hidden)) ||
                (rc = opts->on_layer(opts->ud, layer, out->hidden, T, (int)H)))
                goto fail;
        }
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
    free(h_in);
    free(xp);
    free(zeros);
    reap_layer_stats_free(&st);
    return REAP_OK;
fail:
    if (ctx)
        be->free(ctx);
    free(h_in);
    free(xp);
    free(zeros);
    reap_layer_stats_free(&st);
    reap_probe_free(out);
    return rc;
}

/* test_routes.c - the backend's routes observer (reap_backend_opts.on_routes, backend.h)
 * and the verification probe built on it (engine_hidden.h), on generated checkpoints.
 *
 * The CPU backend runs the whole model with an observer that records, per MoE layer, the
 * layer index, the valid positions, K, the top-K ids and their weights, and with the
 * probe's on_layer hook that records the hidden states leaving every layer. An
 * independent float64 reference written here from the weights (rmsnorm, q/k/v, per-head
 * q/k norm, NeoX RoPE at reap_positions_fill's positions, causal GQA attention over valid
 * keys, o_proj, residual, post-attention rmsnorm, router, softmax, top-K with ties to the
 * lower index) computes each MoE layer's routes from the hidden states entering that
 * layer, and they must agree:
 *   - one report per MoE layer, in layer order, with the valid positions of the rows;
 *   - ids equal (in the reported order: descending logit) for every token whose K-th and
 *     (K+1)-th reference logits are more than GAP apart (fp32 vs fp64 may reorder a
 *     near-tie; at least 90% of the tokens must be clear of it, else the test says so);
 *   - weights within 1e-4 relative on those tokens (renormalised or not, as configured);
 *   - reap_engine_probe's routes are the observer's ids sorted ascending, per layer;
 *   - an observer that returns an error stops the run with that error.
 * Models: qwen3_moe (split experts, a dense layer, no renormalisation, GQA 4) and
 * qwen3_vl_moe (fused, packed short samples: positions count valid tokens only).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "engine_hidden.h"
#include "genmodel.h"
#include "positions.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "weights.h"

#define GAP 1e-4 /* logit gap (relative to the largest |logit| + 1) below which a route
                    may legitimately differ between fp32 and fp64 */

typedef struct layer_routes {
    int layer, K;
    int64_t n_valid;
    int64_t *valid;   /* [Nv] */
    int32_t *ids;     /* [Nv, K] */
    double *w;        /* [Nv, K] */
} layer_routes;

typedef struct recorder {
    layer_routes *l;  /* [n] */
    int n, cap;
    float **hidden;   /* [n_layers] hidden states leaving each layer, [T, H] */
    int n_layers;
    int fail_at;      /* layer whose report returns REAP_E_CANCELLED (-1: none) */
} recorder;

static int on_routes(void *ud, const reap_routes *r)
{
    recorder *rec = ud;
    if (r->layer == rec->fail_at)
        return reap_err_set(REAP_E_CANCELLED, "observer stops at layer %d", r->layer);
    if (rec->n >= rec->cap)
        return reap_err_set(REAP_E_INTERNAL, "more reports than MoE layers");
    layer_routes *l = &rec->l[rec->n++];
    const size_t nk = (size_t)(r->n_valid * r->K);
    l->layer = r->layer;
    l->K = r->K;
    l->n_valid = r->n_valid;
    l->valid = malloc((size_t)(r->n_valid + 1) * sizeof *l->valid);
    l->ids = malloc((nk + 1) * sizeof *l->ids);
    l->w = malloc((nk + 1) * sizeof *l->w);
    if (!l->valid || !l->ids || !l->w)
        return reap_err_set(REAP_E_NOMEM, "recorder");
    memcpy(l->valid, r->valid, (size_t)r->n_valid * sizeof *l->valid);
    memcpy(l->ids, r->ids, nk * sizeof *l->ids);
    memcpy(l->w, r->weights, nk * sizeof *l->w);
    return REAP_OK;
}

static int on_layer(void *ud, int layer, const float *hidden, int64_t T, int H)
{
    recorder *rec = ud;
    if (layer < 0 || layer >= rec->n_layers)
        return REAP_E_INTERNAL;
    rec->hidden[layer] = malloc((size_t)(T * H) * sizeof(float));
    if (!rec->hidden[layer])
        return REAP_E_NOMEM;
    memcpy(rec->hidden[layer], hidden, (size_t)(T * H) * sizeof(float));
    return REAP_OK;
}

static void recorder_free(recorder *rec)
{
    for (int i = 0; i < rec->n; i++) {
        free(rec->l[i].valid);
        free(rec->l[i].ids);
        free(rec->l[i].w);
    }
    for (int i = 0; i < rec->n_layers; i++)
        free(rec->hidden ? rec->hidden[i] : NULL);
    free(rec->l);
    free(rec->hidden);
    memset(rec, 0, sizeof *rec);
}

/* ---- the float64 reference ------------------------------------------------------------ */

static double *tensor_f64(const st_tensor *t, const reap_awq_linear *awq, int64_t n)
{
    float *f = malloc((size_t)n * sizeof *f);
    double *d = malloc((size_t)n * sizeof *d);
    int rc = !f || !d ? REAP_E_NOMEM : awq ? reap_linear_to_f32(t, awq, f)
                                           : reap_tensor_to_f32(t, 0, n, f);
    CHECK_RC(rc, REAP_OK);
    for (int64_t i = 0; d && f && i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

static void rmsnorm64(double *y, const double *x, const double *w, int n, double eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    const double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

/* y[out] = W[out, in] x[in] */
static void linear64(double *y, const double *W, const double *x, int out, int in)
{
    for (int o = 0; o < out; o++) {
        double s = 0.0;
        for (int i = 0; i < in; i++)
            s += W[(int64_t)o * in + i] * x[i];
        y[o] = s;
    }
}

/* NeoX rotate-half RoPE of one head vector at position pos. */
static void rope64(double *v, int hd, int pos, double theta)
{
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const double ang = pos * pow(theta, -2.0 * i / hd);
        const double a = v[i], b = v[i + half];
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + half] = b * cos(ang) + a * sin(ang);
    }
}

/* Router logits [T, E] (valid positions only) of layer `layer` for the hidden states `x`
 * ([T, H] fp32) entering it. */
static double *reference_logits(const loaded *l, int layer, const float *x, const int32_t *pos)
{
    const reap_config *c = &l->cfg;
    const int H = c->hidden, nH = c->n_heads, nKV = c->n_kv_heads, hd = c->head_dim,
              E = c->n_experts, S = l->rows.seq_len, qd = nH * hd, kvd = nKV * hd;
    const int64_t T = (int64_t)l->rows.n_rows * S;
    reap_layer_weights w;
    CHECK_RC(reap_layer_weights_get(l->ck, c, layer, &w), REAP_OK);
    double *in_norm = tensor_f64(w.input_norm, NULL, H), *post = tensor_f64(w.post_norm, NULL, H),
           *wq = tensor_f64(w.q_proj, &w.q_awq, (int64_t)qd * H),
           *wk = tensor_f64(w.k_proj, &w.k_awq, (int64_t)kvd * H),
           *wv = tensor_f64(w.v_proj, &w.v_awq, (int64_t)kvd * H),
           *wo = tensor_f64(w.o_proj, &w.o_awq, (int64_t)H * qd),
           *qn = tensor_f64(w.q_norm, NULL, hd), *kn = tensor_f64(w.k_norm, NULL, hd),
           *wr = tensor_f64(w.router, NULL, (int64_t)E * H);
    double *q = malloc((size_t)(T * qd) * sizeof *q), *k = malloc((size_t)(T * kvd) * sizeof *k),
           *v = malloc((size_t)(T * kvd) * sizeof *v), *a = malloc((size_t)H * sizeof *a),
           *xd = malloc((size_t)H * sizeof *xd), *att = malloc((size_t)qd * sizeof *att),
           *o = malloc((size_t)H * sizeof *o), *p = malloc((size_t)S * sizeof *p),
           *logits = calloc((size_t)(T * E), sizeof *logits);
    const double scale = 1.0 / sqrt((double)hd);
    for (int64_t t = 0; t < T; t++) { /* projections, head norms, RoPE */
        for (int i = 0; i < H; i++)
            xd[i] = x[t * H + i];
        rmsnorm64(a, xd, in_norm, H, c->rms_eps);
        linear64(q + t * qd, wq, a, qd, H);
        linear64(k + t * kvd, wk, a, kvd, H);
        linear64(v + t * kvd, wv, a, kvd, H);
        for (int h = 0; h < nH; h++) {
            rmsnorm64(q + t * qd + h * hd, q + t * qd + h * hd, qn, hd, c->rms_eps);
            rope64(q + t * qd + h * hd, hd, pos[t], c->rope_theta);
        }
        for (int h = 0; h < nKV; h++) {
            rmsnorm64(k + t * kvd + h * hd, k + t * kvd + h * hd, kn, hd, c->rms_eps);
            rope64(k + t * kvd + h * hd, hd, pos[t], c->rope_theta);
        }
    }
    for (int64_t t = 0; t < T; t++) {
        if (!l->rows.mask[t])
            continue;
        const int64_t r0 = t - t % S; /* the row's first slot */
        for (int h = 0; h < nH; h++) {
            const int kvh = h / (nH / nKV);
            double mx = -INFINITY, z = 0.0;
            for (int64_t j = r0; j <= t; j++) {
                p[j - r0] = -INFINITY;
                if (!l->rows.mask[j])
                    continue;
                double s = 0.0;
                for (int i = 0; i < hd; i++)
                    s += q[t * qd + h * hd + i] * k[j * kvd + kvh * hd + i];
                p[j - r0] = s * scale;
                mx = fmax(mx, p[j - r0]);
            }
            for (int64_t j = r0; j <= t; j++)
                z += l->rows.mask[j] ? exp(p[j - r0] - mx) : 0.0;
            for (int i = 0; i < hd; i++) {
                double s = 0.0;
                for (int64_t j = r0; j <= t; j++)
                    if (l->rows.mask[j])
                        s += exp(p[j - r0] - mx) / z * v[j * kvd + kvh * hd + i];
                att[h * hd + i] = s;
            }
        }
        linear64(o, wo, att, H, qd);
        for (int i = 0; i < H; i++)
            xd[i] = x[t * H + i] + o[i];
        rmsnorm64(a, xd, post, H, c->rms_eps);
        linear64(logits + t * E, wr, a, E, H);
    }
    reap_layer_weights_free(&w);
    free(in_norm); free(post); free(wq); free(wk); free(wv); free(wo); free(qn); free(kn);
    free(wr); free(q); free(k); free(v); free(a); free(xd); free(att); free(o); free(p);
    return logits;
}

/* Top-K of one token's logits (descending, ties to the lower index), its gate weights,
 * and the gap between the K-th and the (K+1)-th logit (INFINITY when K == E). */
static double reference_topk(const double *lg, int E, int K, int renorm, int32_t *ids, double *w)
{
    double mx = lg[0], z = 0.0, zk = 0.0;
    for (int e = 1; e < E; e++)
        mx = fmax(mx, lg[e]);
    for (int e = 0; e < E; e++)
        z += exp(lg[e] - mx);
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k; j++)
                taken |= ids[j] == e;
            if (!taken && (best < 0 || lg[e] > lg[best]))
                best = e;
        }
        ids[k] = best;
        w[k] = exp(lg[best] - mx);
        zk += w[k];
    }
    for (int k = 0; k < K; k++)
        w[k] /= renorm ? zk : z;
    double next = -INFINITY;
    for (int e = 0; e < E; e++) {
        int taken = 0;
        for (int j = 0; j < K; j++)
            taken |= ids[j] == e;
        if (!taken)
            next = fmax(next, lg[e]);
    }
    return K == E ? INFINITY : lg[ids[K - 1]] - next;
}

/* ---- the checks ------------------------------------------------------------------------ */

static void check_model(const char *name, const reap_gen_spec *spec, int n_samples,
                        int min_len, int max_len, int seq_len)
{
    char dir[FX_PATH_MAX], calib[FX_PATH_MAX], sub[256];
    loaded l;
    snprintf(sub, sizeof sub, "model-%s", name);
    path_join(dir, sizeof dir, scratch, sub);
    snprintf(sub, sizeof sub, "calib-%s.jsonl", name);
    path_join(calib, sizeof calib, scratch, sub);
    gen_loaded(spec, dir, calib, n_samples, min_len, max_len, spec->seed + 1, seq_len, &l);
    const reap_config *c = &l.cfg;
    const int n_moe = reap_config_n_moe_layers(c), E = c->n_experts, K = c->n_experts_used;
    const int64_t T = (int64_t)l.rows.n_rows * l.rows.seq_len;
    recorder rec = {.cap = n_moe, .n_layers = c->n_layers, .fail_at = -1};
    rec.l = calloc((size_t)n_moe + 1, sizeof *rec.l);
    rec.hidden = calloc((size_t)c->n_layers, sizeof *rec.hidden);
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    CHECK(rec.l && rec.hidden && pos);
    CHECK_RC(reap_positions_fill(c, &l.rows, pos), REAP_OK);

    /* the observer alone (want_routes 0: the probe leaves backend_opts.on_routes as is) */
    reap_probe pr;
    reap_probe_opts po = {.backend = &reap_backend_cpu,
                          .backend_opts = {.threads = 2, .batch_rows = 3,
                                           .on_routes = on_routes, .routes_ud = &rec},
                          .on_layer = on_layer, .ud = &rec};
    CHECK_RC(reap_engine_probe(l.ck, c, &l.rows, &po, &pr), REAP_OK);
    reap_probe_free(&pr);
    CHECK_MSG(rec.n == n_moe, "%s: %d reports for %d MoE layers", name, rec.n, n_moe);

    int64_t clear = 0, total = 0, id_diff = 0;
    double worst_w = 0.0;
    int32_t ids[64];
    double w[64];
    for (int m = 0, layer = 0; m < rec.n && layer < c->n_layers; layer++) {
        if (!reap_config_layer_is_moe(c, layer))
            continue;
        const layer_routes *r = &rec.l[m++];
        CHECK_MSG(r->layer == layer && r->K == K && r->n_valid == l.rows.n_valid,
                  "%s: report %d is layer %d, K %d, %lld positions (want layer %d, K %d, "
                  "%lld)", name, m - 1, r->layer, r->K, (long long)r->n_valid, layer, K,
                  (long long)l.rows.n_valid);
        if (r->layer != layer || r->K != K || r->n_valid != l.rows.n_valid)
            continue;
        for (int64_t n = 0, t = 0; t < T; t++)
            if (l.rows.mask[t])
                CHECK(r->valid[n++] == t);
        /* the hidden states entering the layer: the embedding, or the previous layer's */
        float *x_in = layer ? rec.hidden[layer - 1] : NULL, *emb = NULL;
        if (!layer) {
            const st_tensor *et;
            emb = malloc((size_t)(T * c->hidden) * sizeof *emb);
            CHECK_RC(reap_embed_weights_get(l.ck, c, &et), REAP_OK);
            for (int64_t t = 0; t < T; t++)
                CHECK_RC(reap_tensor_to_f32(et, (int64_t)l.rows.tokens[t] * c->hidden,
                                            c->hidden, emb + t * c->hidden), REAP_OK);
            x_in = emb;
        }
        double *lg = reference_logits(&l, layer, x_in, pos);
        for (int64_t n = 0; n < r->n_valid; n++) {
            const double *lt = lg + r->valid[n] * E;
            double amax = 0.0;
            for (int e = 0; e < E; e++)
                amax = fmax(amax, fabs(lt[e]));
            const double gap = reference_topk(lt, E, K, c->norm_topk_prob, ids, w);
            total++;
            if (gap <= GAP * (amax + 1.0))
                continue;
            clear++;
            for (int k = 0; k < K; k++) {
                id_diff += ids[k] != r->ids[n * K + k];
                worst_w = fmax(worst_w, fabs(w[k] - r->w[n * K + k]) / fmax(w[k], 1e-30));
            }
        }
        free(lg);
        free(emb);
    }
    printf("%s: %d MoE layers, %lld tokens (%lld clear of a near-tie): %lld ids differ, "
           "weights within %.2e\n", name, rec.n, (long long)total, (long long)clear,
           (long long)id_diff, worst_w);
    CHECK_MSG(id_diff == 0, "%s: %lld routed ids differ from the float64 reference", name,
              (long long)id_diff);
    CHECK_MSG(worst_w <= 1e-4, "%s: routing weights differ by %.3e (relative)", name,
              worst_w);
    CHECK_MSG(clear >= total * 9 / 10 && total > 0, "%s: only %lld of %lld tokens clear of "
              "a near-tie: the comparison says too little", name, (long long)clear,
              (long long)total);

    /* the probe's routes are the observer's, sorted ascending per token */
    reap_probe_opts pw = {.backend = &reap_backend_cpu, .backend_opts = {.threads = 1},
                          .want_routes = 1};
    CHECK_RC(reap_engine_probe(l.ck, c, &l.rows, &pw, &pr), REAP_OK);
    CHECK(pr.n_moe == rec.n && pr.K == K && pr.n_valid == l.rows.n_valid);
    for (int m = 0; m < pr.n_moe && m < rec.n; m++) {
        CHECK(pr.moe_layer[m] == rec.l[m].layer);
        int64_t bad = 0;
        for (int64_t n = 0; n < pr.n_valid; n++) {
            const int32_t *got = pr.routes + ((int64_t)m * pr.n_valid + n) * K;
            for (int k = 0; k < K; k++) {
                int smaller = 0, found = 0; /* got[k] is the k-th smallest reported id */
                for (int j = 0; j < K; j++) {
                    smaller += rec.l[m].ids[n * K + j] < got[k];
                    found |= rec.l[m].ids[n * K + j] == got[k];
                }
                bad += !found || smaller != k;
            }
        }
        CHECK_MSG(bad == 0, "%s: probe layer %d: %lld routes differ from the observer's",
                  name, pr.moe_layer[m], (long long)bad);
    }
    reap_probe_free(&pr);

    /* an observer's error stops the run with that error */
    const int last_moe = rec.n ? rec.l[rec.n - 1].layer : -1;
    recorder stop = {.l = calloc((size_t)n_moe + 1, sizeof *stop.l), .cap = n_moe,
                     .fail_at = last_moe};
    po.backend_opts.routes_ud = &stop;
    po.on_layer = NULL;
    CHECK_RC(reap_engine_probe(l.ck, c, &l.rows, &po, &pr), REAP_E_CANCELLED);
    CHECK_ERRMSG("observer stops at layer");
    CHECK(stop.n == n_moe - 1);
    recorder_free(&stop);

    recorder_free(&rec);
    free(pos);
    unload(&l);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "tmp_test_routes";
    make_dirs(scratch);
    reap_gen_spec s;
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_MOE);
    s.layout = REAP_EXPERTS_SPLIT;
    s.n_layers = 3;
    s.hidden = 48;
    s.n_heads = 4;
    s.n_kv_heads = 1;
    s.head_dim = 12;
    s.n_experts = 12;
    s.top_k = 3;
    s.moe_inter = 24;
    s.inter = 40;
    s.norm_topk_prob = 0;
    s.n_mlp_only = 1;
    s.mlp_only_layers[0] = 1;
    s.dtype = ST_BF16;
    s.seed = 21;
    check_model("qwen3_moe-split-dense", &s, 10, 3, 60, 37);

    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.n_layers = 3;
    s.hidden = 48;
    s.n_heads = 4;
    s.n_kv_heads = 2;
    s.head_dim = 12;
    s.n_experts = 8;
    s.top_k = 2;
    s.moe_inter = 24;
    s.inter = 32;
    s.dtype = ST_BF16;
    s.seed = 27;
    check_model("qwen3_vl_moe-packed", &s, 14, 2, 12, 40);
    TEST_MAIN_END();
}

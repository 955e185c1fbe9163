/* upload.cu - layer weights onto the device: weight sets, staging and prefetch.
 *
 * One file on purpose: the weight sets, the staging slots and the prefetch worker share
 * one set of streams and events whose ordering is the whole point; split, the ordering
 * rules would be spread over several files.
 *
 * Raw checkpoint bytes (pageable: the mapped safetensors shards) are copied by a few
 * host threads into one of two pinned host slots, sent to the matching device slot on
 * the copy stream, and converted there to the compute type into a weight set (fused
 * expert slabs transposed to nn.Linear orientation on the way). The two slots alternate,
 * so the host copy of piece i + 1 overlaps the transfer and conversion of piece i.
 *
 * Weight sets: 1 + P (P = plan.prefetch_layers). load_layer(L) makes one set current;
 * prefetch_layer(L + 1) queues the upload of L + 1 into a free set, which a worker thread
 * performs on the copy stream while forward_layer(L) computes on the compute stream. A
 * set's `ready` event orders the compute stream after its upload; its `released` event
 * orders a new upload after the last compute that read it.
 *
 * Reference path: without prefetch (P = 0, or a load_layer that matches no queued set)
 * the same upload runs on the calling thread and load_layer waits for it.
 *
 * AWQ int4 linears (weights.h) travel packed: a piece is a run of whole quantisation
 * groups of input rows (their qweight, qzeros and scales back to back in the slot), and
 * k_awq_dequant writes them into the weight set in the compute type, nn.Linear
 * orientation, exactly as the CPU's reap_awq_to_f32 does in fp32. Only the int4 bytes
 * (plus scales and zeros) cross the bus.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "kernels.cuh"

extern "C" {
#include "parallel.h"
#include "weights.h"
}

typedef __nv_bfloat16 bf16;

#define CUW(call, what)                                                                 \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) return cu_fail_at(where, e_, (what));                    \
    } while (0)

/* ---- host copies ------------------------------------------------------------------- */

typedef struct hcopy {
    char *dst;
    const char *src;
} hcopy;

static void hcopy_range(void *ud, int64_t b, int64_t e, int tid)
{
    const hcopy *h = (const hcopy *)ud;
    (void)tid;
    memcpy(h->dst + b, h->src + b, (size_t)(e - b));
}

/* memcpy, split over the copy threads when large */
static void host_copy(const cuda_ctx *c, void *dst, const void *src, size_t n)
{
    if (n < ((size_t)4 << 20) || c->copy_threads < 2) {
        memcpy(dst, src, n);
        return;
    }
    hcopy h = {(char *)dst, (const char *)src};
    reap_parallel_for(c->copy_threads, (int64_t)n, hcopy_range, &h);
}

/* ---- staged conversion ------------------------------------------------------------- */

static int src_dtype(const st_tensor *t, int *dt, size_t *esz)
{
    switch (t->dtype) {
    case ST_F32: *dt = SRC_F32; *esz = 4; return REAP_OK;
    case ST_BF16: *dt = SRC_BF16; *esz = 2; return REAP_OK;
    case ST_F16: *dt = SRC_F16; *esz = 2; return REAP_OK;
    default:
        return reap_err_set(REAP_E_UNSUPPORTED, "tensor %s: dtype %s (BF16, F16 or F32 only)",
                            t->name, st_dtype_name(t->dtype));
    }
}

/* One piece through the next slot: `bytes` raw bytes from src (then bytes2 from src2 and
 * bytes3 from src3, back to back), then either a flat conversion of n elements to dst
 * (n_mat == 0, awq == 0), a transposing conversion of n_mat [rows, cols] matrices, or
 * (awq) the dequantisation of awq_kc rows of an AWQ linear with awq_n outputs and group
 * awq_g into dst with row stride ld. to_f32: fp32 destination, else the compute type. */
typedef struct piece {
    const void *src, *src2, *src3;
    size_t bytes, bytes2, bytes3;
    int dtype;
    void *dst;
    int64_t n;
    int to_f32;
    int n_mat, rows, cols;
    int awq, awq_n, awq_g;
    int64_t awq_kc, ld;
} piece;

static int stage_piece(cuda_ctx *c, const piece *p, int *flag, const char *where)
{
    const int k = c->slot_next;
    c->slot_next ^= 1;
    const size_t total = p->bytes + p->bytes2 + p->bytes3;
    if (total > c->slot_bytes)
        return reap_err_set(REAP_E_INTERNAL, "%s: piece of %zu bytes > staging slot %zu", where,
                            total, c->slot_bytes);
    CUW(cudaEventSynchronize(c->slot_ev[k]), "cudaEventSynchronize(staging slot)");
    host_copy(c, c->h_slot[k], p->src, p->bytes);
    if (p->bytes2) host_copy(c, (char *)c->h_slot[k] + p->bytes, p->src2, p->bytes2);
    if (p->bytes3) host_copy(c, (char *)c->h_slot[k] + p->bytes + p->bytes2, p->src3, p->bytes3);
    CUW(cudaMemcpyAsync(c->d_slot[k], c->h_slot[k], total, cudaMemcpyHostToDevice, c->cst),
        "cudaMemcpyAsync(weights)");
    const int f32 = p->to_f32 || c->precision == REAP_PRECISION_FP32;
    if (p->awq) {
        const unsigned blocks = grid_for((size_t)p->awq_kc * p->awq_n, 256);
        if (f32)
            k_awq_dequant<float><<<blocks, 256, 0, c->cst>>>(
                c->d_slot[k], p->awq_kc, p->awq_n, p->awq_g, (float *)p->dst, p->ld, flag);
        else
            k_awq_dequant<bf16><<<blocks, 256, 0, c->cst>>>(
                c->d_slot[k], p->awq_kc, p->awq_n, p->awq_g, (bf16 *)p->dst, p->ld, flag);
    } else if (p->n_mat == 0) {
        if (f32)
            k_convert<float><<<grid_for((size_t)p->n, 256), 256, 0, c->cst>>>(
                c->d_slot[k], p->dtype, (float *)p->dst, (size_t)p->n, flag);
        else
            k_convert<bf16><<<grid_for((size_t)p->n, 256), 256, 0, c->cst>>>(
                c->d_slot[k], p->dtype, (bf16 *)p->dst, (size_t)p->n, flag);
    } else {
        dim3 grid((unsigned)((p->cols + 31) / 32), (unsigned)((p->rows + 31) / 32),
                  (unsigned)p->n_mat);
        if (f32)
            k_convert_t<float><<<grid, dim3(32, 8), 0, c->cst>>>(
                c->d_slot[k], p->dtype, p->rows, p->cols, (float *)p->dst, flag);
        else
            k_convert_t<bf16><<<grid, dim3(32, 8), 0, c->cst>>>(
                c->d_slot[k], p->dtype, p->rows, p->cols, (bf16 *)p->dst, flag);
    }
    CUW(cudaGetLastError(), "convert weights");
    CUW(cudaEventRecord(c->slot_ev[k], c->cst), "cudaEventRecord(staging slot)");
    return REAP_OK;
}

static int need_numel(const char *where, const st_tensor *t, int64_t n)
{
    if (!t) return reap_err_set(REAP_E_INTERNAL, "%s: missing weight view", where);
    if (t->numel != n)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor %s has %lld elements, expected %lld",
                            where, t->name, (long long)t->numel, (long long)n);
    return REAP_OK;
}

/* dst[0..n) = elements [0, n) of t (t->numel == n), flat. */
static int upload_flat(cuda_ctx *c, const st_tensor *t, int64_t n, void *dst, int to_f32,
                       int *flag, const char *where)
{
    int dt = 0, rc;
    size_t sz = 1;
    if ((rc = need_numel(where, t, n))) return rc;
    if ((rc = src_dtype(t, &dt, &sz))) return reap_err_prefix(rc, "%s", where);
    const int64_t step = (int64_t)(c->slot_bytes / sz);
    const size_t dsz = to_f32 ? 4 : (size_t)c->esz;
    for (int64_t off = 0; off < n; off += step) {
        piece p;
        memset(&p, 0, sizeof p);
        p.n = n - off < step ? n - off : step;
        p.src = (const char *)t->data + (size_t)off * sz;
        p.bytes = (size_t)p.n * sz;
        p.dtype = dt;
        p.dst = (char *)dst + (size_t)off * dsz;
        p.to_f32 = to_f32;
        if ((rc = stage_piece(c, &p, flag, where))) return rc;
    }
    return REAP_OK;
}

/* AWQ linear a ([N, K], group g) -> dst [N, K] in the compute type, a run of whole groups
 * of input rows per piece. */
static int upload_awq(cuda_ctx *c, const reap_awq_linear *a, int64_t n, void *dst, int *flag,
                      const char *where)
{
    const int64_t K = a->in, N = a->out, g = a->group, Nw = N / 8;
    int rc;
    if (K * N != n || g <= 0 || N % 8 || K % g || N > (1 << 30))
        return reap_err_set(REAP_E_FORMAT, "%s: AWQ tensor %s is [K %lld, N %lld, g %lld], "
                            "expected %lld weights", where, a->qweight->name, (long long)K,
                            (long long)N, (long long)g, (long long)n);
    if ((rc = need_numel(where, a->qweight, K * Nw)) ||
        (rc = need_numel(where, a->qzeros, K / g * Nw)) ||
        (rc = need_numel(where, a->scales, K / g * N)))
        return rc;
    if (a->qweight->dtype != ST_I32 || a->qzeros->dtype != ST_I32 || a->scales->dtype != ST_F16)
        return reap_err_set(REAP_E_FORMAT, "%s: AWQ tensor %s: dtypes must be I32/I32/F16",
                            where, a->qweight->name);
    const size_t group_bytes = (size_t)(g * Nw * 4 + Nw * 4 + N * 2);
    const int64_t per = (int64_t)(c->slot_bytes / group_bytes);
    if (per < 1)
        return reap_err_set(REAP_E_INTERNAL, "%s: AWQ group of %zu bytes > staging slot",
                            where, group_bytes);
    for (int64_t gk0 = 0; gk0 < K / g; gk0 += per) {
        const int64_t ng = K / g - gk0 < per ? K / g - gk0 : per, k0 = gk0 * g;
        piece p;
        memset(&p, 0, sizeof p);
        p.src = (const char *)a->qweight->data + (size_t)(k0 * Nw) * 4;
        p.bytes = (size_t)(ng * g * Nw) * 4;
        p.src2 = (const char *)a->qzeros->data + (size_t)(gk0 * Nw) * 4;
        p.bytes2 = (size_t)(ng * Nw) * 4;
        p.src3 = (const char *)a->scales->data + (size_t)(gk0 * N) * 2;
        p.bytes3 = (size_t)(ng * N) * 2;
        p.dst = (char *)dst + (size_t)k0 * c->esz;
        p.awq = 1;
        p.awq_kc = ng * g;
        p.awq_n = (int)N;
        p.awq_g = (int)g;
        p.ld = K;
        if ((rc = stage_piece(c, &p, flag, where))) return rc;
    }
    return REAP_OK;
}

/* A linear of n weights: AWQ (awq->qweight set) or plain, into dst (compute type). */
static int upload_linear(cuda_ctx *c, const st_tensor *plain, const reap_awq_linear *awq,
                         int64_t n, void *dst, int *flag, const char *where)
{
    if (awq && awq->qweight) return upload_awq(c, awq, n, dst, flag, where);
    return upload_flat(c, plain, n, dst, 0, flag, where);
}

/* Fused expert tensor t = [E, rows, cols] -> dst [E, cols, rows] (compute type). */
static int upload_transposed(cuda_ctx *c, const st_tensor *t, int E, int rows, int cols,
                             void *dst, int *flag, const char *where)
{
    int dt = 0, rc;
    size_t sz = 1;
    if ((rc = need_numel(where, t, (int64_t)E * rows * cols))) return rc;
    if ((rc = src_dtype(t, &dt, &sz))) return reap_err_prefix(rc, "%s", where);
    const size_t slab = (size_t)rows * cols * sz;
    int per = (int)(c->slot_bytes / slab);
    if (per < 1)
        return reap_err_set(REAP_E_INTERNAL, "%s: expert slab of %zu bytes > staging slot",
                            where, slab);
    for (int e0 = 0; e0 < E; e0 += per) {
        piece p;
        memset(&p, 0, sizeof p);
        p.n_mat = E - e0 < per ? E - e0 : per;
        p.rows = rows;
        p.cols = cols;
        p.src = (const char *)t->data + (size_t)e0 * slab;
        p.bytes = (size_t)p.n_mat * slab;
        p.dtype = dt;
        p.dst = (char *)dst + (size_t)e0 * rows * cols * c->esz;
        if ((rc = stage_piece(c, &p, flag, where))) return rc;
    }
    return REAP_OK;
}

/* Upload layer w into set s on the copy stream (caller holds upload_mu); records
 * s->ready. Does not wait for the copies to finish. */
static int upload_set(cuda_ctx *c, wset *s, const reap_layer_weights *w, const char *where)
{
    const int64_t H = c->H, hd = c->hd, qd = (int64_t)c->nH * hd, kvd = (int64_t)c->nKV * hd;
    const int64_t E = c->E, I = c->I, Id = c->Id;
    const size_t esz = (size_t)c->esz;
    int *fl = s->d_flag;
    int rc;
    CUW(cudaSetDevice(c->device), "cudaSetDevice");
    CUW(cudaStreamWaitEvent(c->cst, s->released, 0), "cudaStreamWaitEvent(released)");
    CUW(cudaMemsetAsync(fl, 0, sizeof(int), c->cst), "cudaMemsetAsync(flag)");
    char *qkv = (char *)s->qkv;
    if ((rc = upload_flat(c, w->input_norm, H, s->in_norm, 1, fl, where)) ||
        (rc = upload_flat(c, w->post_norm, H, s->post_norm, 1, fl, where)) ||
        (rc = upload_flat(c, w->q_norm, hd, s->qn, 1, fl, where)) ||
        (rc = upload_flat(c, w->k_norm, hd, s->kn, 1, fl, where)) ||
        (rc = upload_linear(c, w->q_proj, &w->q_awq, qd * H, qkv, fl, where)) ||
        (rc = upload_linear(c, w->k_proj, &w->k_awq, kvd * H, qkv + (size_t)qd * H * esz, fl,
                            where)) ||
        (rc = upload_linear(c, w->v_proj, &w->v_awq, kvd * H,
                            qkv + (size_t)(qd + kvd) * H * esz, fl, where)) ||
        (rc = upload_linear(c, w->o_proj, &w->o_awq, H * qd, s->o, fl, where)))
        return rc;
    if (w->is_moe) {
        if (E < 1) return reap_err_set(REAP_E_INVALID, "%s: MoE layer but no experts", where);
        if ((rc = upload_flat(c, w->router, E * H, s->router, 1, fl, where))) return rc;
        char *gu = (char *)s->gu, *dn = (char *)s->d;
        const size_t ex_gu = (size_t)2 * I * H * esz, ex_d = (size_t)H * I * esz;
        if (w->layout == REAP_EXPERTS_FUSED) {
            /* [E, H, 2I] -> [E, 2I, H]; [E, I, H] -> [E, H, I] */
            if ((rc = upload_transposed(c, w->gate_up, (int)E, (int)H, (int)(2 * I), gu, fl,
                                        where)) ||
                (rc = upload_transposed(c, w->down_fused, (int)E, (int)I, (int)H, dn, fl,
                                        where)))
                return rc;
        } else if (w->layout == REAP_EXPERTS_SPLIT) {
            if (!w->gate || !w->up || !w->down)
                return reap_err_set(REAP_E_INTERNAL, "%s: missing expert views", where);
            for (int64_t e = 0; e < E; e++)
                if ((rc = upload_linear(c, w->gate[e], w->gate_awq ? &w->gate_awq[e] : NULL,
                                        I * H, gu + e * ex_gu, fl, where)) ||
                    (rc = upload_linear(c, w->up[e], w->up_awq ? &w->up_awq[e] : NULL, I * H,
                                        gu + e * ex_gu + ex_gu / 2, fl, where)) ||
                    (rc = upload_linear(c, w->down[e], w->down_awq ? &w->down_awq[e] : NULL,
                                        H * I, dn + e * ex_d, fl, where)))
                    return rc;
        } else {
            return reap_err_set(REAP_E_INTERNAL, "%s: unknown expert layout %d", where,
                                (int)w->layout);
        }
    } else {
        if (!c->has_dense)
            return reap_err_set(REAP_E_INTERNAL, "%s: dense layer not planned", where);
        if ((rc = upload_linear(c, w->mlp_gate, &w->mlp_gate_awq, Id * H, s->mgu, fl, where)) ||
            (rc = upload_linear(c, w->mlp_up, &w->mlp_up_awq, Id * H,
                                (char *)s->mgu + (size_t)Id * H * esz, fl, where)) ||
            (rc = upload_linear(c, w->mlp_down, &w->mlp_down_awq, H * Id, s->md, fl, where)))
            return rc;
    }
    CUW(cudaEventRecord(s->ready, c->cst), "cudaEventRecord(ready)");
    return REAP_OK;
}

/* ---- non-finite weights: name the tensor (error path only) ------------------------- */

static int find_nonfinite(const st_tensor *t, int64_t first, int64_t n)
{
    float buf[4096];
    if (!t) return REAP_OK;
    for (int64_t off = 0; off < n; off += 4096) {
        const int64_t m = n - off < 4096 ? n - off : 4096;
        int rc = reap_tensor_to_f32(t, first + off, m, buf);
        if (rc) return rc;
    }
    return REAP_OK;
}

static int find_nonfinite_layer(const cuda_ctx *c, const reap_layer_weights *w)
{
    const st_tensor *ts[] = {w->input_norm, w->post_norm, w->q_proj, w->k_proj, w->v_proj,
                             w->o_proj, w->q_norm, w->k_norm, w->router, w->gate_up,
                             w->down_fused, w->mlp_gate, w->mlp_up, w->mlp_down};
    int rc;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        if (ts[i] && (rc = find_nonfinite(ts[i], 0, ts[i]->numel))) return rc;
    if (w->is_moe && w->layout == REAP_EXPERTS_SPLIT && w->gate && w->up && w->down)
        for (int e = 0; e < c->E; e++)
            if ((w->gate[e] && (rc = find_nonfinite(w->gate[e], 0, w->gate[e]->numel))) ||
                (w->up[e] && (rc = find_nonfinite(w->up[e], 0, w->up[e]->numel))) ||
                (w->down[e] && (rc = find_nonfinite(w->down[e], 0, w->down[e]->numel))))
                return rc;
    /* AWQ: only the scales can be non-finite */
    const reap_awq_linear *qs[] = {&w->q_awq, &w->k_awq, &w->v_awq, &w->o_awq,
                                   &w->mlp_gate_awq, &w->mlp_up_awq, &w->mlp_down_awq};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        if (qs[i]->qweight && (rc = find_nonfinite(qs[i]->scales, 0, qs[i]->scales->numel)))
            return rc;
    const reap_awq_linear *ex[] = {w->gate_awq, w->up_awq, w->down_awq};
    for (int e = 0; w->is_moe && w->layout == REAP_EXPERTS_SPLIT && e < c->E; e++)
        for (int j = 0; j < 3; j++)
            if (ex[j] && ex[j][e].qweight &&
                (rc = find_nonfinite(ex[j][e].scales, 0, ex[j][e].scales->numel)))
                return rc;
    return REAP_OK;
}

/* ---- sets, worker ------------------------------------------------------------------ */

static void signature(const reap_layer_weights *w, const void *sig[4])
{
    sig[0] = w->q_proj ? w->q_proj->data : w->q_awq.qweight ? w->q_awq.qweight->data : NULL;
    sig[1] = w->input_norm ? w->input_norm->data : NULL;
    sig[2] = w->is_moe ? (w->router ? w->router->data : NULL)
             : w->mlp_gate ? w->mlp_gate->data
             : w->mlp_gate_awq.qweight ? w->mlp_gate_awq.qweight->data : NULL;
    sig[3] = !w->is_moe ? NULL
             : w->layout == REAP_EXPERTS_FUSED ? (w->gate_up ? w->gate_up->data : NULL)
             : (w->gate && w->gate[0]) ? w->gate[0]->data
             : (w->gate_awq && w->gate_awq[0].qweight) ? w->gate_awq[0].qweight->data : NULL;
}

/* A queued / running / finished set holding layer w (caller holds mu), or NULL. */
static wset *find_queued(cuda_ctx *c, const reap_layer_weights *w)
{
    const void *sig[4];
    signature(w, sig);
    for (int i = 0; i < c->n_sets; i++) {
        wset *s = &c->sets[i];
        if ((s->state == SET_QUEUED || s->state == SET_RUNNING || s->state == SET_DONE) &&
            s->layer == w->layer && s->is_moe == w->is_moe && !memcmp(s->sig, sig, sizeof sig))
            return s;
    }
    return NULL;
}

static void views_free(reap_layer_weights *w)
{
    free((void *)w->gate);
    free((void *)w->up);
    free((void *)w->down);
    free(w->gate_awq);
    free(w->up_awq);
    free(w->down_awq);
    w->gate = w->up = w->down = NULL;
    w->gate_awq = w->up_awq = w->down_awq = NULL;
}

static void *worker_main(void *arg)
{
    cuda_ctx *c = (cuda_ctx *)arg;
    cudaSetDevice(c->device);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->worker_stop && c->q_len == 0) pthread_cond_wait(&c->cv, &c->mu);
        if (c->worker_stop) break;
        wset *s = &c->sets[c->queue[c->q_head]];
        c->q_head = (c->q_head + 1) % MAX_SETS;
        c->q_len--;
        s->state = SET_RUNNING;
        pthread_mutex_unlock(&c->mu);
        char where[48];
        snprintf(where, sizeof where, "layer %d (prefetch)", s->w.layer);
        pthread_mutex_lock(&c->upload_mu);
        int rc = upload_set(c, s, &s->w, where);
        pthread_mutex_unlock(&c->upload_mu);
        pthread_mutex_lock(&c->mu);
        s->rc = rc;
        if (rc) snprintf(s->msg, sizeof s->msg, "%s", reap_err_msg());
        views_free(&s->w);
        s->state = SET_DONE;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int upload_init(cuda_ctx *c)
{
    int rc;
    const size_t H = c->H, esz = c->esz;
    c->n_sets = 1 + c->plan.prefetch_layers;
    if (c->n_sets > MAX_SETS) c->n_sets = MAX_SETS;
    c->slot_bytes = (size_t)c->plan.stage_slot_bytes;
    /* host copies run while the GPU computes: most cores, two left for the rest */
    const int ncpu = reap_cpu_count();
    c->copy_threads = ncpu - 2 > 12 ? 12 : (ncpu - 2 < 1 ? 1 : ncpu - 2);
    pthread_mutex_init(&c->upload_mu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    CU(cudaStreamCreateWithFlags(&c->cst, cudaStreamNonBlocking), "cudaStreamCreate(copy)");
    for (int k = 0; k < 2; k++) {
        CU(cudaEventCreateWithFlags(&c->slot_ev[k], cudaEventDisableTiming), "cudaEventCreate");
        CU(cudaHostAlloc(&c->h_slot[k], c->slot_bytes, cudaHostAllocDefault),
           "cudaHostAlloc(staging slot)");
        if ((rc = dalloc(c, &c->d_slot[k], c->slot_bytes, "staging slot"))) return rc;
    }
    for (int i = 0; i < c->n_sets; i++) {
        wset *s = &c->sets[i];
        CU(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming), "cudaEventCreate");
        CU(cudaEventCreateWithFlags(&s->released, cudaEventDisableTiming), "cudaEventCreate");
#define SALLOC(ptr, bytes, what)                                                        \
    do {                                                                                \
        if ((rc = dalloc(c, (void **)&(ptr), (bytes), (what)))) return rc;              \
    } while (0)
        SALLOC(s->d_flag, sizeof(int), "weight flag");
        SALLOC(s->in_norm, H * 4, "input_layernorm");
        SALLOC(s->post_norm, H * 4, "post_attention_layernorm");
        SALLOC(s->qn, (size_t)c->hd * 4, "q_norm");
        SALLOC(s->kn, (size_t)c->hd * 4, "k_norm");
        SALLOC(s->qkv, (size_t)c->QKV * H * esz, "q/k/v weights");
        SALLOC(s->o, H * c->nH * c->hd * esz, "o_proj weights");
        if (c->E > 0) {
            SALLOC(s->router, (size_t)c->E * H * 4, "router weights");
            SALLOC(s->gu, (size_t)c->E * 2 * c->I * H * esz, "expert gate_up weights");
            SALLOC(s->d, (size_t)c->E * H * c->I * esz, "expert down weights");
        }
        if (c->has_dense) {
            SALLOC(s->mgu, 2 * (size_t)c->Id * H * esz, "mlp gate/up weights");
            SALLOC(s->md, H * c->Id * esz, "mlp down weights");
        }
#undef SALLOC
        s->layer = -1;
    }
    if (c->n_sets > 1) {
        if (pthread_create(&c->worker, NULL, worker_main, c))
            return reap_err_set(REAP_E_NOMEM, "cuda backend: cannot start the upload thread");
        c->worker_on = 1;
    }
    return REAP_OK;
}

void upload_free(cuda_ctx *c)
{
    if (c->worker_on) {
        pthread_mutex_lock(&c->mu);
        c->worker_stop = 1;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->worker, NULL);
        c->worker_on = 0;
    }
    if (c->cst) cudaStreamSynchronize(c->cst);
    for (int i = 0; i < MAX_SETS; i++) {
        wset *s = &c->sets[i];
        void *p[] = {s->d_flag, s->in_norm, s->post_norm, s->qn, s->kn, s->qkv, s->o,
                     s->router, s->gu, s->d, s->mgu, s->md};
        for (size_t k = 0; k < sizeof p / sizeof p[0]; k++)
            if (p[k]) cudaFree(p[k]);
        if (s->ready) cudaEventDestroy(s->ready);
        if (s->released) cudaEventDestroy(s->released);
        views_free(&s->w);
        memset(s, 0, sizeof *s);
    }
    for (int k = 0; k < 2; k++) {
        if (c->h_slot[k]) cudaFreeHost(c->h_slot[k]);
        if (c->d_slot[k]) cudaFree(c->d_slot[k]);
        if (c->slot_ev[k]) cudaEventDestroy(c->slot_ev[k]);
        c->h_slot[k] = c->d_slot[k] = NULL;
        c->slot_ev[k] = NULL;
    }
    if (c->cst) cudaStreamDestroy(c->cst);
    c->cst = NULL;
    if (c->n_sets) {
        pthread_mutex_destroy(&c->upload_mu);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        c->n_sets = 0;
    }
}

/* ---- backend entry points ---------------------------------------------------------- */

int cuda_prefetch_layer(void *ctx, const reap_layer_weights *next)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c->worker_on || !next) return REAP_OK;
    pthread_mutex_lock(&c->mu);
    wset *s = find_queued(c, next);
    if (s) { /* already on its way */
        pthread_mutex_unlock(&c->mu);
        return REAP_OK;
    }
    for (int i = 0; i < c->n_sets && !s; i++)
        if (c->sets[i].state == SET_FREE && &c->sets[i] != c->cur) s = &c->sets[i];
    if (!s || c->q_len >= MAX_SETS) { /* no free set: load_layer will copy it */
        pthread_mutex_unlock(&c->mu);
        return REAP_OK;
    }
    s->w = *next;
    s->w.gate = s->w.up = s->w.down = NULL;
    s->w.gate_awq = s->w.up_awq = s->w.down_awq = NULL;
    if (next->is_moe && next->layout == REAP_EXPERTS_SPLIT && next->gate) {
        const size_t n = (size_t)c->E * sizeof(st_tensor *);
        const size_t na = (size_t)c->E * sizeof(reap_awq_linear);
        const int awq = next->gate_awq && next->up_awq && next->down_awq;
        s->w.gate = (const st_tensor **)malloc(n);
        s->w.up = (const st_tensor **)malloc(n);
        s->w.down = (const st_tensor **)malloc(n);
        if (awq) {
            s->w.gate_awq = (reap_awq_linear *)malloc(na);
            s->w.up_awq = (reap_awq_linear *)malloc(na);
            s->w.down_awq = (reap_awq_linear *)malloc(na);
        }
        if (!s->w.gate || !s->w.up || !s->w.down ||
            (awq && (!s->w.gate_awq || !s->w.up_awq || !s->w.down_awq))) {
            views_free(&s->w);
            pthread_mutex_unlock(&c->mu);
            return REAP_OK; /* skipped: load_layer copies it */
        }
        memcpy((void *)s->w.gate, next->gate, n);
        memcpy((void *)s->w.up, next->up, n);
        memcpy((void *)s->w.down, next->down, n);
        if (awq) {
            memcpy(s->w.gate_awq, next->gate_awq, na);
            memcpy(s->w.up_awq, next->up_awq, na);
            memcpy(s->w.down_awq, next->down_awq, na);
        }
    }
    s->layer = next->layer;
    s->is_moe = next->is_moe;
    signature(next, s->sig);
    s->rc = REAP_OK;
    s->msg[0] = 0;
    s->state = SET_QUEUED;
    c->queue[(c->q_head + c->q_len) % MAX_SETS] = (int)(s - c->sets);
    c->q_len++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return REAP_OK;
}

int cuda_load_layer(void *ctx, const reap_layer_weights *w)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc;
    char where[48];
    snprintf(c->where, sizeof c->where, "layer %d", w->layer);
    snprintf(where, sizeof where, "layer %d", w->layer);
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    c->layer = -1;

    /* a prefetched copy of this layer, or a set to copy it into now */
    pthread_mutex_lock(&c->mu);
    wset *s = find_queued(c, w);
    if (s) {
        while (s->state != SET_DONE) pthread_cond_wait(&c->cv, &c->mu);
        if (s->rc) {
            rc = s->rc;
            s->state = SET_FREE;
            s->layer = -1;
            pthread_mutex_unlock(&c->mu);
            return reap_err_set(rc, "%s", s->msg);
        }
    } else {
        /* the current set (its compute is over), else a free one, else the oldest
         * finished prefetch (discarded) */
        for (;;) {
            s = c->cur;
            for (int i = 0; i < c->n_sets && !s; i++)
                if (c->sets[i].state == SET_FREE) s = &c->sets[i];
            for (int i = 0; i < c->n_sets && !s; i++)
                if (c->sets[i].state == SET_DONE) s = &c->sets[i];
            if (s) break;
            pthread_cond_wait(&c->cv, &c->mu);
        }
        if (s == c->cur) c->cur = NULL;
        s->state = SET_RUNNING; /* not FREE: prefetch leaves it alone */
        s->layer = -1;
        pthread_mutex_unlock(&c->mu);
        CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize");
        pthread_mutex_lock(&c->upload_mu);
        rc = upload_set(c, s, w, where);
        pthread_mutex_unlock(&c->upload_mu);
        pthread_mutex_lock(&c->mu);
        if (rc) {
            s->state = SET_FREE;
            pthread_mutex_unlock(&c->mu);
            return rc;
        }
    }
    pthread_mutex_unlock(&c->mu);

    /* order the compute stream after the upload, then check the weights were finite */
    int f = 0;
    CU(cudaStreamWaitEvent(c->st, s->ready, 0), "cudaStreamWaitEvent(ready)");
    CU(cudaMemcpyAsync(&f, s->d_flag, sizeof f, cudaMemcpyDeviceToHost, c->st),
       "cudaMemcpy(weight flag)");
    CU(cudaStreamSynchronize(c->st), "cudaStreamSynchronize(weights)");
    pthread_mutex_lock(&c->mu);
    if (c->cur && c->cur != s) {
        cudaError_t e = cudaEventRecord(c->cur->released, c->st);
        c->cur->state = SET_FREE;
        c->cur->layer = -1;
        c->cur = NULL;
        if (e != cudaSuccess) {
            s->state = SET_FREE;
            pthread_mutex_unlock(&c->mu);
            return cu_fail(c, e, "cudaEventRecord(released)");
        }
    }
    if (f) {
        s->state = SET_FREE;
        s->layer = -1;
        pthread_mutex_unlock(&c->mu);
        int rc2 = find_nonfinite_layer(c, w);
        return rc2 ? reap_err_prefix(rc2, "layer %d", w->layer)
                   : reap_err_set(REAP_E_NUMERIC, "layer %d: NaN or Inf in weights", w->layer);
    }
    s->state = SET_CURRENT;
    s->layer = w->layer;
    s->is_moe = w->is_moe;
    c->cur = s;
    pthread_mutex_unlock(&c->mu);
    c->layer = w->layer;
    c->is_moe = w->is_moe;
    return REAP_OK;
}

int cuda_embed(void *ctx, const st_tensor *embed)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int dt = 0, rc;
    size_t sz = 1;
    snprintf(c->where, sizeof c->where, "embed");
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    if ((rc = src_dtype(embed, &dt, &sz))) return rc;
    if (embed->ndim != 2 || embed->shape[1] != c->H || embed->shape[0] < c->V)
        return reap_err_set(REAP_E_FORMAT, "embed: tensor %s is not [%d, %d]", embed->name,
                            c->V, c->H);
    const size_t row_bytes = (size_t)c->H * sz;
    const int rows_per = (int)(c->slot_bytes / row_bytes);
    if (rows_per < 1)
        return reap_err_set(REAP_E_UNSUPPORTED, "embed: hidden size %d too large", c->H);
    /* the device slot 0 as a plain staging buffer, nothing else in flight */
    pthread_mutex_lock(&c->upload_mu);
    cudaError_t e = cudaStreamSynchronize(c->cst);
    for (int v0 = 0; v0 < c->V && e == cudaSuccess; v0 += rows_per) {
        const int v1 = c->V - v0 < rows_per ? c->V : v0 + rows_per;
        e = cudaMemcpyAsync(c->d_slot[0], (const char *)embed->data + (size_t)v0 * row_bytes,
                            (size_t)(v1 - v0) * row_bytes, cudaMemcpyHostToDevice, c->st);
        if (e != cudaSuccess) break;
        k_embed_gather<<<grid_for((size_t)c->T * 32, 256), 256, 0, c->st>>>(
            c->d_tok, c->T, v0, v1, c->d_slot[0], dt, c->H, c->d_hidden, c->d_flag);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->st);
    pthread_mutex_unlock(&c->upload_mu);
    if (e != cudaSuccess) return cu_fail(c, e, "embedding upload");
    if ((rc = check_flag(c)) == REAP_E_NUMERIC) {
        /* name the tensor and element: scan the rows of the tokens used, on the host */
        int32_t *tok = (int32_t *)malloc((size_t)c->T * sizeof *tok);
        if (!tok) return rc;
        int rc2 = REAP_OK;
        if (cudaMemcpyAsync(tok, c->d_tok, (size_t)c->T * 4, cudaMemcpyDeviceToHost, c->st) ==
                cudaSuccess &&
            cudaStreamSynchronize(c->st) == cudaSuccess)
            for (int64_t t = 0; t < c->T && !rc2; t++)
                rc2 = find_nonfinite(embed, (int64_t)tok[t] * c->H, c->H);
        free(tok);
        if (rc2) return reap_err_prefix(rc2, "embed");
    }
    return rc;
}

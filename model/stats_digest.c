/* stats_digest.c - the digest of a set of statistics records (reap_stats_digest,
 * stats.h): BLAKE2b-256 (libsodium) over a canonical encoding, so that a manifest and a
 * GetStats reply name the same records the same way. Apart from stats.c so that the
 * statistics themselves need no hashing library (the GPU benchmark links stats.c alone). */
#include "stats.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "reap_err.h"

static int cmp_layer_ptr(const void *a, const void *b)
{
    const reap_layer_stats *x = *(const reap_layer_stats *const *)a;
    const reap_layer_stats *y = *(const reap_layer_stats *const *)b;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

static void put_u32(crypto_generichash_state *st, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(st, b, 4);
}

static void put_u64(crypto_generichash_state *st, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(st, b, 8);
}

/* Per expert: count (u64), sum_gate_norm, sum_norm, sum_gate (f64 bits), max_act. */
static void put_experts(crypto_generichash_state *h, const reap_modality_stats *v, int E)
{
    for (int e = 0; e < E; e++) {
        uint64_t b;
        uint32_t f;
        put_u64(h, (uint64_t)v->count[e]);
        memcpy(&b, &v->sum_gate_norm[e], 8);
        put_u64(h, b);
        memcpy(&b, &v->sum_norm[e], 8);
        put_u64(h, b);
        memcpy(&b, &v->sum_gate[e], 8);
        put_u64(h, b);
        memcpy(&f, &v->max_act[e], 4);
        put_u32(h, f);
    }
}

int reap_stats_digest(const reap_layer_stats *stats, int n, char hex[65])
{
    const reap_layer_stats **st = malloc((size_t)(n > 0 ? n : 1) * sizeof *st);
    crypto_generichash_state h;
    uint8_t out[32];
    if (!st)
        return reap_err_set(REAP_E_NOMEM, "statistics digest");
    for (int i = 0; i < n; i++)
        st[i] = &stats[i];
    if (n > 0)
        qsort(st, (size_t)n, sizeof *st, cmp_layer_ptr);
    if (sodium_init() < 0) {
        free(st);
        return reap_err_set(REAP_E_INTERNAL, "libsodium failed to initialise");
    }
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)"reap-stats/1", 12);
    for (int i = 0; i < n; i++) {
        const reap_layer_stats *s = st[i];
        put_u32(&h, (uint32_t)s->layer);
        put_u32(&h, (uint32_t)s->n_experts);
        put_u32(&h, (uint32_t)s->top_k);
        put_u64(&h, (uint64_t)s->tokens);
        const reap_modality_stats tot = {s->tokens, s->count, s->sum_gate_norm,
                                         s->sum_norm, s->sum_gate, s->max_act};
        put_experts(&h, &tot, s->n_experts);
        /* per modality only for a layer with image tokens: text-only digests unchanged */
        if (reap_layer_stats_has_image(s)) {
            crypto_generichash_update(&h, (const uint8_t *)"modalities", 10);
            for (int m = 0; m < REAP_N_MODALITIES; m++) {
                put_u64(&h, (uint64_t)s->mod[m].tokens);
                put_experts(&h, &s->mod[m], s->n_experts);
            }
        }
    }
    crypto_generichash_final(&h, out, 32);
    reap_hex(out, 32, hex);
    free(st);
    return REAP_OK;
}

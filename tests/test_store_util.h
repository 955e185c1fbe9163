/* test_store_util.h - helpers shared by the store tests: scratch paths, random
 * statistics, a registered model with n MoE layers. Header-only (static functions). */
#ifndef REAP_TEST_STORE_UTIL_H
#define REAP_TEST_STORE_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog.h"
#include "reap_err.h"
#include "stats.h"
#include "store.h"

static const char *scratch;

static inline void spath(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", scratch, name);
}

static inline void rm_rf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", path);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rng_unif(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

/* Random statistics; expert 0 never routed (count 0, max -inf). */
static inline int make_stats(reap_layer_stats *st, int layer, int E, int K)
{
    int rc = reap_layer_stats_init(st, layer, E, K);
    if (rc)
        return rc;
    st->tokens = 1000 + (int64_t)(rng_next() % 1000);
    for (int e = 1; e < E; e++) {
        st->count[e] = (int64_t)(rng_next() % 500) + 1;
        st->sum_gate_norm[e] = rng_unif() * 100;
        st->sum_norm[e] = rng_unif() * 300;
        st->sum_gate[e] = rng_unif() * 50;
        st->max_act[e] = (float)(rng_unif() * 20 - 5);
    }
    return REAP_OK;
}

static inline void fake_id(reap_id *id, uint8_t tag)
{
    for (int i = 0; i < 32; i++)
        id->b[i] = (uint8_t)(tag * 31 + i);
}

/* A model record of family model_type with n_layers layers, all MoE. */
static inline int put_model_type(reap_store *s, const reap_id *id, const char *model_type,
                                 int n_layers, int E)
{
    reap_model_info m = {0};
    int moe[64];
    reap_model_file f = {(char *)"config.json", 10, {0}};
    for (int i = 0; i < n_layers; i++)
        moe[i] = i;
    m.id = *id;
    m.model_type = (char *)model_type;
    m.n_layers = n_layers;
    m.hidden = 64;
    m.n_experts = E;
    m.top_k = 2;
    m.n_moe_layers = n_layers;
    m.moe_layers = moe;
    m.n_files = 1;
    m.files = &f;
    m.first_seen_path = (char *)"somewhere";
    return reap_store_model_put(s, &m);
}

/* A qwen3_moe model record with n_layers layers, all MoE. */
static inline int put_model(reap_store *s, const reap_id *id, int n_layers, int E)
{
    return put_model_type(s, id, "qwen3_moe", n_layers, E);
}

#endif

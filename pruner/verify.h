/* verify.h - checks of a pruned checkpoint (what the original prune script's --verify
 * checked, extended; that script is not part of this repository).
 *
 * Structural (reap_verify_structural): reopen the output with the project's reader
 * (every header validated, index vs shards), load its config.json, then
 *   - the expert count is E' and every other configuration field equals the input's;
 *   - every decoder layer's tensors have the shapes the new config implies (router
 *     [E', H], experts 0..E'-1 per expert or fused dim 0 = E'), no expert index >= E'
 *     anywhere, every mlp.gate.* tensor has dim 0 = E';
 *   - every other tensor has the input's name, dtype and shape;
 *   - the index maps every tensor of every shard exactly once to its shard, names no
 *     other tensor, and total_size is the sum of tensor bytes;
 *   - every shard's data starts at a multiple of 8 and __metadata__.format is "pt".
 * Functional (reap_verify_functional): run the engine over the same token rows on the
 * original and the pruned checkpoint (reap_engine_probe) and report, per MoE layer, the
 * fraction of valid tokens whose set of routed experts (pruned ids mapped back to
 * original ids) differs, and the relative L2 drift ||h' - h|| / ||h|| of the final hidden
 * states over valid positions (plus max |h' - h| and whether they are bit-identical).
 *
 * Thread rules: none shared; each call opens what it reads.
 */
#ifndef REAP_VERIFY_H
#define REAP_VERIFY_H

#include <stdint.h>

#include "calib.h"
#include "checkpoint.h"
#include "config.h"
#include "engine_hidden.h"
#include "keepset.h"

typedef struct reap_verify_result {
    /* structural */
    int n_tensors;            /* tensors in the output */
    int n_shards;
    /* functional (n_moe == 0 when it did not run) */
    int n_moe;
    int *layer;               /* [n_moe] */
    double *route_changed;    /* [n_moe] fraction of valid tokens */
    int64_t n_tokens;         /* valid tokens compared */
    double hidden_rel_l2;
    double hidden_max_abs;
    int hidden_identical;     /* 1: bit-identical over valid positions */
} reap_verify_result;

/* Structural checks of `out_dir` against the input configuration `in_cfg`, the input
 * checkpoint `in_ck` and the keep set. Returns REAP_OK, or REAP_E_INVALID naming the
 * first failed check (the output reader's own errors pass through: REAP_E_FORMAT,
 * REAP_E_NOTFOUND, REAP_E_IO). res may be NULL. */
int reap_verify_structural(const char *out_dir, const reap_ckpt *in_ck,
                           const reap_config *in_cfg, const reap_keepset *ks,
                           reap_verify_result *res);

/* Functional comparison over `rows`. Fills the functional fields of res (free with
 * reap_verify_result_free). Returns REAP_OK or the engine's error. */
int reap_verify_functional(const reap_ckpt *in_ck, const reap_config *in_cfg,
                           const reap_ckpt *out_ck, const reap_config *out_cfg,
                           const reap_keepset *ks, const reap_rows *rows,
                           const reap_probe_opts *popts, reap_verify_result *res);

void reap_verify_result_free(reap_verify_result *r);

#endif

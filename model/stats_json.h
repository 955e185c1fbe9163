/* stats_json.h - the "reap-stats/1" JSON document of a scoring run.
 *
 *   {"format": "reap-stats/1", "model_id": "<hex>"|null, "calib_id": "<hex>"|null,
 *    "tokens": <valid tokens>,
 *    "layers": [{"layer": L, "n_experts": E, "top_k": K, "tokens": N,
 *                "count": [E ints], "sum_gate_norm": [E], "sum_norm": [E],
 *                "sum_gate": [E], "max_act": [E, null where never routed],
 *                "reap": [E]}]}
 * Reals are written with 17 significant digits (exact round trip of doubles).
 */
#ifndef REAP_STATS_JSON_H
#define REAP_STATS_JSON_H

#include <stdint.h>

#include "stats.h"

/* Write the document to `path` ("-" for stdout), atomically for files (temp + rename).
 * model_id / calib_id may be NULL. Returns REAP_OK, REAP_E_IO, REAP_E_NOMEM. */
int reap_stats_json_write(const char *path, const char *model_id, const char *calib_id,
                          int64_t tokens, const reap_layer_stats *layers, int n_layers);

/* Read a reap-stats/1 document written by reap_stats_json_write (or by hand in that
 * shape). Validates the format tag, that every layer has n_experts >= 1, 1 <= top_k <=
 * n_experts, arrays of exactly n_experts numbers (count: non-negative integers;
 * max_act: numbers or null = never routed, read as -INFINITY), that every sum is a
 * finite number and no layer appears twice. "reap" is derived data and ignored.
 * On success *out_layers is an array of *out_n statistics in document order (free each
 * with reap_layer_stats_free, then the array with free()); *model_id / *calib_id (each
 * pointer may be NULL when not wanted) receive malloc'd strings or NULL where the
 * document has null; *tokens (may be NULL) the document's token count.
 * Returns REAP_OK, REAP_E_IO (cannot read), REAP_E_FORMAT (invalid JSON or shape; the
 * message names the file, the layer and the field), REAP_E_NOMEM.
 * Thread rules: none (no shared state). */
int reap_stats_json_read(const char *path, reap_layer_stats **out_layers, int *out_n,
                         char **model_id, char **calib_id, int64_t *tokens);

#endif

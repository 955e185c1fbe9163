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

#endif

/* stats_table.h - the per-layer summary table of REAP statistics printed by
 * `reap-scorer run --table`, `reap-scorer stats` and `reapctl stats`: tokens, routed
 * experts, REAP min / median / max, and how many experts a prune at `ratio` drops; when
 * any layer saw image tokens, two more columns: image tokens and image-routed experts
 * (text-only tables are unchanged). */
#ifndef REAP_STATS_TABLE_H
#define REAP_STATS_TABLE_H

#include <stdio.h>

#include "stats.h"

/* Print the table of n layers to f. The drop column is how many experts of each layer a
 * prune at `ratio` removes, by the one rule of keepset.h (reap_keep_n_prune); "-" when
 * that rule refuses the ratio for these statistics. Skips a layer whose score buffer
 * cannot be allocated (the table is informational). */
void reap_stats_print_table(FILE *f, const reap_layer_stats *st, int n, double ratio);

#endif

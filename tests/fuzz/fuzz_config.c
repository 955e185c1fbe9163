/* fuzz_config.c - reap_config_load() on arbitrary bytes as config.json, then the
 * per-layer queries on what it accepted. */
#include "config.h"
#include "fuzz_util.h"
#include "reap_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    reap_config cfg;
    int l;

    if (FUZZ_RC(reap_config_load(fuzz_memfd_set(&in, data, size), &cfg)) != REAP_OK)
        return 0;
    for (l = 0; l < cfg.n_layers && l < 4096; l++)
        (void)reap_config_layer_is_moe(&cfg, l);
    (void)reap_config_n_moe_layers(&cfg);
    (void)reap_config_not_converted(&cfg, "model.layers.0.mlp.experts.0.up_proj");
    reap_config_free(&cfg);
    return 0;
}

/* gpu_only_shims.c - stand-ins for the two functions the CUDA backend takes from the
 * JSON-linked model sources (safetensors.c, config.c), for the GPU-only build of
 * bench/gpu/run.sh on machines without the jansson / OpenBLAS development packages.
 * Only that build links this file; the project build uses the real ones, and these
 * follow them exactly (st_dtype_name for the float dtypes the backend reports,
 * reap_config_layer_is_moe as in config.c).
 */
#include "config.h"
#include "safetensors.h"

const char *st_dtype_name(st_dtype d)
{
    switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    default: return "other";
    }
}

int reap_config_layer_is_moe(const reap_config *cfg, int layer)
{
    if (!cfg || layer < 0 || layer >= cfg->n_layers || cfg->n_experts <= 0 ||
        cfg->decoder_sparse_step < 1)
        return 0;
    for (int i = 0; i < cfg->n_mlp_only; i++)
        if (cfg->mlp_only_layers[i] == layer) return 0;
    return (layer + 1) % cfg->decoder_sparse_step == 0;
}

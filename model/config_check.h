/* config_check.h - a configuration checked against the tensors of its checkpoint, before
 * anything is sized from it.
 *
 * reap_config_load (config.h) checks config.json's values on their own (types, limits,
 * consistency). A config.json can still disagree with the shards it sits beside: claim
 * more layers than they hold, another width, head count or expert count. Such a
 * disagreement would otherwise surface only at the layer that shows it, after the
 * checkpoint has been hashed, the calibration rows built and the per-layer tables and
 * hidden-state buffers allocated. reap_config_check_ckpt reads only tensor metadata (the
 * shard headers, already validated by reap_ckpt_open) and allocates nothing sized by the
 * configuration beyond one layer's expert table.
 *
 * Thread rules: pure reads of two read-only objects; any thread.
 */
#ifndef REAP_CONFIG_CHECK_H
#define REAP_CONFIG_CHECK_H

#include "checkpoint.h"
#include "config.h"

/* Check cfg against the tensors of ck:
 *   - the dimensions config.json names, each against the tensor that shows it, with a
 *     message naming "<dir>/config.json" and the field: vocab_size and hidden_size
 *     (embed_tokens [V, H]), num_hidden_layers (every layer 0 .. N-1 has its
 *     input_layernorm; a config claiming more layers than the shards hold is refused
 *     with the number found), head_dim (q_norm [hd]), num_attention_heads and
 *     num_key_value_heads (q_proj [nH*hd, H], k_proj [nKV*hd, H], when not quantised),
 *     num_experts (the first MoE layer's router [E, H]), moe_intermediate_size (its
 *     first expert, or the fused gate_up_proj [E, H, 2I]), intermediate_size (the first
 *     dense layer's gate_proj [Id, H]);
 *   - then every tensor of every layer and the embedding, as the engine will read them
 *     (reap_layer_weights_get, reap_embed_weights_get: presence, dtype, shape, AWQ).
 * Returns REAP_OK, REAP_E_FORMAT (a field that disagrees with the tensors, or a tensor of
 * the wrong dtype or shape), REAP_E_NOTFOUND (a tensor missing), REAP_E_UNSUPPORTED,
 * REAP_E_NOMEM; the message names the file and the field or tensor. */
int reap_config_check_ckpt(const reap_config *cfg, const reap_ckpt *ck);

#endif

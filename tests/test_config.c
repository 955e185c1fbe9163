/* test_config.c - unit tests for model/config.c (reap_config_load and layer helpers).
 *
 * Usage: test_config <scratch-dir>. Each case writes a small config.json variant into
 * the scratch directory, loads it and checks the fields, the defaults, or the status
 * code and the field named in the error message.
 */
#include "config.h"
#include "reap_err.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Load `text` and expect status `want`; the error message must contain `needle`. */
static void expect_error(const char *name, const char *text, int want, const char *needle)
{
    reap_config c;
    reap_config zero;
    const char *path = write_scratch(name, text);

    memset(&zero, 0, sizeof zero);
    reap_err_clear();
    CHECK_RC(reap_config_load(path, &c), want);
    CHECK_ERRMSG(needle);
    CHECK(memcmp(&c, &zero, sizeof c) == 0);   /* left zeroed */
}

static void test_qwen3_moe(void)
{
    /* Shapes of Qwen3-30B-A3B, written the way transformers saves them. */
    const char *path = write_scratch("qwen3_moe.json",
        "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\",\n"
        " \"attention_bias\": false, \"decoder_sparse_step\": 1, \"head_dim\": 128,\n"
        " \"hidden_size\": 2048, \"intermediate_size\": 6144, \"max_position_embeddings\": 40960,\n"
        " \"mlp_only_layers\": [], \"moe_intermediate_size\": 768, \"norm_topk_prob\": true,\n"
        " \"num_attention_heads\": 32, \"num_experts\": 128, \"num_experts_per_tok\": 8,\n"
        " \"num_hidden_layers\": 48, \"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-06,\n"
        " \"rope_scaling\": null, \"rope_theta\": 1000000.0, \"tie_word_embeddings\": false,\n"
        " \"torch_dtype\": \"bfloat16\", \"vocab_size\": 151936}\n");
    reap_config c;

    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.family == REAP_FAMILY_QWEN3_MOE);
    CHECK(c.vision.present == 0 && c.vision.depth == 0);   /* no tower in qwen3_moe */
    CHECK(strcmp(c.model_type, "qwen3_moe") == 0);
    CHECK(strcmp(c.prefix, "model.") == 0);
    CHECK(c.n_layers == 48);
    CHECK(c.hidden == 2048);
    CHECK(c.n_heads == 32);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.head_dim == 128);   /* explicit, not 2048/32 = 64 */
    CHECK(c.vocab == 151936);
    CHECK(c.n_experts == 128);
    CHECK(c.n_experts_used == 8);
    CHECK(c.moe_inter == 768);
    CHECK(c.inter == 6144);
    CHECK(c.norm_topk_prob == 1);
    CHECK(c.decoder_sparse_step == 1);
    CHECK(c.n_mlp_only == 0 && c.mlp_only_layers == NULL);
    CHECK(c.rms_eps == 1e-6);
    CHECK(c.rope_theta == 1e6);
    CHECK(c.tie_word_embeddings == 0);
    CHECK(reap_config_n_moe_layers(&c) == 48);
    CHECK(reap_config_layer_is_moe(&c, 0) == 1);
    CHECK(reap_config_layer_is_moe(&c, 47) == 1);
    CHECK(reap_config_layer_is_moe(&c, 48) == 0);   /* out of range */
    CHECK(reap_config_layer_is_moe(&c, -1) == 0);
    reap_config_free(&c);
    CHECK(c.mlp_only_layers == NULL && c.n_layers == 0);
    reap_config_free(&c);   /* twice is harmless */
}

static void test_qwen3_vl_moe(void)
{
    /* Nested text_config; norm_topk_prob false in the file is overridden to true; the
     * top-level tie_word_embeddings governs; rope_theta from text_config. */
    const char *path = write_scratch("qwen3_vl_moe.json",
        "{\"architectures\": [\"Qwen3VLMoeForConditionalGeneration\"],\n"
        " \"model_type\": \"qwen3_vl_moe\", \"tie_word_embeddings\": true,\n"
        " \"image_token_id\": 151655,\n"
        " \"text_config\": {\"model_type\": \"qwen3_vl_moe_text\", \"hidden_size\": 4096,\n"
        "   \"num_hidden_layers\": 94, \"num_attention_heads\": 64, \"num_key_value_heads\": 4,\n"
        "   \"head_dim\": 128, \"vocab_size\": 151936, \"num_experts\": 128,\n"
        "   \"num_experts_per_tok\": 8, \"moe_intermediate_size\": 1536,\n"
        "   \"intermediate_size\": 12288, \"norm_topk_prob\": false, \"decoder_sparse_step\": 1,\n"
        "   \"mlp_only_layers\": [], \"rms_norm_eps\": 1e-06, \"rope_theta\": 5000000,\n"
        "   \"rope_scaling\": {\"mrope_interleaved\": true, \"mrope_section\": [24, 20, 20],\n"
        "                    \"rope_type\": \"default\"},\n"
        "   \"tie_word_embeddings\": false, \"attention_bias\": false},\n"
        " \"vision_config\": {\"depth\": 27, \"hidden_size\": 1152}}\n");
    reap_config c;

    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.family == REAP_FAMILY_QWEN3_VL_MOE);
    /* vision_config: the two fields given, transformers' defaults, out_hidden = H */
    CHECK(c.vision.present == 1 && c.vision.depth == 27 && c.vision.hidden == 1152);
    CHECK(c.vision.n_heads == 16 && c.vision.head_dim == 72 && c.vision.inter == 4304);
    CHECK(c.vision.patch == 16 && c.vision.temporal_patch == 2 && c.vision.merge == 2);
    CHECK(c.vision.in_channels == 3 && c.vision.n_pos == 2304 && c.vision.pos_side == 48);
    CHECK(c.vision.out_hidden == 4096 && c.vision.act == REAP_VISION_ACT_GELU_TANH);
    CHECK(c.vision.n_deepstack == 3 && c.vision.deepstack[0] == 8 &&
          c.vision.deepstack[1] == 16 && c.vision.deepstack[2] == 24);
    CHECK(strcmp(c.model_type, "qwen3_vl_moe") == 0);
    CHECK(strcmp(c.prefix, "model.language_model.") == 0);
    CHECK(c.n_layers == 94);
    CHECK(c.hidden == 4096);
    CHECK(c.n_heads == 64 && c.n_kv_heads == 4 && c.head_dim == 128);
    CHECK(c.vocab == 151936);
    CHECK(c.n_experts == 128 && c.n_experts_used == 8 && c.moe_inter == 1536);
    CHECK(c.inter == 12288);
    CHECK(c.norm_topk_prob == 1);   /* forced */
    CHECK(c.rope_theta == 5e6);
    CHECK(c.tie_word_embeddings == 1);
    CHECK(reap_config_n_moe_layers(&c) == 94);
    reap_config_free(&c);

    /* Defaults of the VL family: rope_theta 5e6 when nowhere written; norm_topk_prob
     * true even when absent. */
    path = write_scratch("qwen3_vl_moe_min.json",
        "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"hidden_size\": 64,\n"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100,\n"
        " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}}\n");
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.rope_theta == 5e6);
    CHECK(c.norm_topk_prob == 1);
    CHECK(c.tie_word_embeddings == 0);
    reap_config_free(&c);
}

static void test_field_drift(void)
{
    reap_config c;
    const char *path;

    /* num_local_experts instead of num_experts; rope_parameters.rope_theta. */
    path = write_scratch("drift.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 100,\n"
        " \"num_local_experts\": 16, \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 32,\n"
        " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 250000.0}}\n");
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.n_experts == 16);
    CHECK(c.rope_theta == 250000.0);
    reap_config_free(&c);

    /* Both expert-count names, agreeing: accepted. */
    path = write_scratch("drift_both.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 16,\n"
        " \"num_local_experts\": 16, \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 32,\n"
        " \"rope_scaling\": {\"rope_type\": \"default\", \"rope_theta\": 123.0}}\n");
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.n_experts == 16);
    CHECK(c.rope_theta == 123.0);   /* last fallback: rope_scaling.rope_theta */
    reap_config_free(&c);

    /* Both, disagreeing. */
    expect_error("drift_disagree.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 16,\n"
        " \"num_local_experts\": 8, \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "num_local_experts");

    /* Top-level rope_theta wins over rope_parameters. */
    path = write_scratch("drift_rope.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 16,\n"
        " \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 32, \"rope_theta\": 7,\n"
        " \"rope_parameters\": {\"rope_theta\": 9}}\n");
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.rope_theta == 7.0);
    reap_config_free(&c);
}

static void test_defaults(void)
{
    /* Only the required fields: head_dim = 96 / 6 = 16, kv heads = heads,
     * decoder_sparse_step 1, norm_topk_prob false, eps 1e-6, theta 1e4, untied. */
    const char *path = write_scratch("defaults.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 96, \"num_hidden_layers\": 3,\n"
        " \"num_attention_heads\": 6, \"vocab_size\": 50, \"num_experts\": 4,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,\n"
        " \"num_key_value_heads\": null, \"head_dim\": null}\n");
    reap_config c;

    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.head_dim == 16);
    CHECK(c.n_kv_heads == 6);
    CHECK(c.decoder_sparse_step == 1);
    CHECK(c.norm_topk_prob == 0);
    CHECK(c.rms_eps == 1e-6);
    CHECK(c.rope_theta == 10000.0);
    CHECK(c.tie_word_embeddings == 0);
    CHECK(c.inter == 0);
    CHECK(c.n_mlp_only == 0);
    CHECK(reap_config_n_moe_layers(&c) == 3);
    reap_config_free(&c);
}

static void test_layer_pattern(void)
{
    /* 8 layers, decoder_sparse_step 2 -> MoE where (L+1) % 2 == 0: L = 1, 3, 5, 7;
     * mlp_only_layers [3, 0] removes 3 (0 was dense anyway). MoE: 1, 5, 7. */
    static const int want[8] = { 0, 1, 0, 0, 0, 1, 0, 1 };
    const char *path = write_scratch("pattern.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 8,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 16,\n"
        " \"intermediate_size\": 128, \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 0]}\n");
    reap_config c;
    int L;

    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.n_mlp_only == 2);
    CHECK(c.decoder_sparse_step == 2);
    for (L = 0; L < 8; L++)
        CHECK_MSG(reap_config_layer_is_moe(&c, L) == want[L], "layer %d", L);
    CHECK(reap_config_n_moe_layers(&c) == 3);
    reap_config_free(&c);

    /* Dense layers but no intermediate_size. */
    expect_error("pattern_nointer.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 8,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 16,\n"
        " \"decoder_sparse_step\": 2}\n",
        REAP_E_INVALID, "intermediate_size");
}

static void test_errors(void)
{
    /* Required field missing: the message names its path in the JSON. */
    expect_error("missing_vl.json",
        "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}}\n",
        REAP_E_FORMAT, "missing text_config.hidden_size");
    expect_error("missing.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_FORMAT, "missing vocab_size");
    expect_error("missing_experts.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_FORMAT, "missing num_experts");
    expect_error("no_text_config.json", "{\"model_type\": \"qwen3_vl_moe\"}\n",
                 REAP_E_FORMAT, "missing text_config");

    /* Wrong types. */
    expect_error("real_int.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 4096.0, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_FORMAT, "hidden_size must be an integer");
    expect_error("string_int.json",
        "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"hidden_size\": 64,\n"
        " \"num_hidden_layers\": \"2\", \"num_attention_heads\": 4, \"vocab_size\": 100,\n"
        " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}}\n",
        REAP_E_FORMAT, "text_config.num_hidden_layers must be an integer");
    expect_error("bool_type.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"norm_topk_prob\": 1}\n",
        REAP_E_FORMAT, "norm_topk_prob must be a boolean");
    expect_error("mlp_only_type.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,\n"
        " \"intermediate_size\": 64, \"mlp_only_layers\": [0, \"1\"]}\n",
        REAP_E_FORMAT, "mlp_only_layers[1] must be an integer");
    expect_error("model_type_type.json", "{\"model_type\": 3}\n", REAP_E_FORMAT,
                 "model_type must be a string");

    /* Unsupported. */
    expect_error("mixtral.json",
        "{\"model_type\": \"mixtral\", \"hidden_size\": 64}\n",
        REAP_E_UNSUPPORTED, "\"mixtral\"");
    expect_error("no_type.json", "{\"hidden_size\": 64}\n", REAP_E_UNSUPPORTED,
                 "model_type");
    expect_error("attn_bias.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"attention_bias\": true}\n",
        REAP_E_UNSUPPORTED, "attention_bias");

    /* Malformed JSON (missing comma on line 2), not an object, missing file. */
    expect_error("malformed.json",
        "{\"model_type\": \"qwen3_moe\",\n \"hidden_size\": 64\n \"num_hidden_layers\": 2}\n",
        REAP_E_FORMAT, "invalid JSON");
    expect_error("array.json", "[1, 2]\n", REAP_E_FORMAT, "must be an object");
    expect_error("dup.json", "{\"model_type\": \"qwen3_moe\", \"model_type\": \"x\"}\n",
                 REAP_E_FORMAT, "invalid JSON");
    {
        char path[4096];
        reap_config c;
        snprintf(path, sizeof path, "%s/does_not_exist.json", scratch);
        CHECK_RC(reap_config_load(path, &c), REAP_E_NOTFOUND);
        CHECK_ERRMSG("does_not_exist.json");
    }

    /* Inconsistent values. */
    expect_error("topk.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 9, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "num_experts_per_tok");
    expect_error("topk0.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 0, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "num_experts_per_tok");
    expect_error("heads.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 6, \"num_key_value_heads\": 4, \"head_dim\": 16,\n"
        " \"vocab_size\": 100, \"num_experts\": 8, \"num_experts_per_tok\": 2,\n"
        " \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "not divisible by num_key_value_heads");
    expect_error("mlp_only_range.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 4,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,\n"
        " \"intermediate_size\": 64, \"mlp_only_layers\": [1, 4]}\n",
        REAP_E_INVALID, "mlp_only_layers[1] = 4");
    expect_error("odd_head_dim.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 60, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "head_dim = 15");
    expect_error("zero_hidden.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 0, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "hidden_size = 0");
    expect_error("sparse_step.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,\n"
        " \"decoder_sparse_step\": 0}\n",
        REAP_E_INVALID, "decoder_sparse_step");
    expect_error("moe_inter.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 0}\n",
        REAP_E_INVALID, "moe_intermediate_size");
}

/* Values beyond the limits of config.h are refused by reap_config_load itself, naming
 * the field, before anything could be sized from them (a config.json claiming 2^31-1
 * layers made `reap-scorer run` grow to gigabytes before failing). */
static void test_limits(void)
{
    char text[1024];
    static const struct {
        const char *field, *value, *needle;
    } cases[] = {
        {"num_hidden_layers", "2147483647", "num_hidden_layers = 2147483647 is above the limit"},
        {"num_hidden_layers", "1025", "num_hidden_layers = 1025 is above the limit of 1024"},
        {"hidden_size", "1048576", "hidden_size = 1048576 is above the limit"},
        {"num_attention_heads", "4096", "num_attention_heads = 4096 is above the limit"},
        {"num_key_value_heads", "2048", "num_key_value_heads = 2048 is above the limit"},
        {"head_dim", "2048", "head_dim = 2048 is above the limit"},
        {"vocab_size", "2000000000", "vocab_size = 2000000000 is above the limit"},
        {"num_experts", "2147483647", "num_experts = 2147483647 is above the limit"},
        {"moe_intermediate_size", "16777216", "moe_intermediate_size = 16777216 is above"},
        {"intermediate_size", "2147483647", "intermediate_size = 2147483647 is above"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* JSON keys are unique: the case's field replaces the base value. */
        snprintf(text, sizeof text,
                 "{\"model_type\": \"qwen3_moe\", \"%s\": %s%s%s%s%s%s%s%s%s}\n",
                 cases[i].field, cases[i].value,
                 strcmp(cases[i].field, "hidden_size") ? ", \"hidden_size\": 64" : "",
                 strcmp(cases[i].field, "num_hidden_layers") ? ", \"num_hidden_layers\": 2" : "",
                 strcmp(cases[i].field, "num_attention_heads") ? ", \"num_attention_heads\": 4"
                                                               : "",
                 strcmp(cases[i].field, "vocab_size") ? ", \"vocab_size\": 100" : "",
                 strcmp(cases[i].field, "num_experts") ? ", \"num_experts\": 8" : "",
                 ", \"num_experts_per_tok\": 2",
                 strcmp(cases[i].field, "moe_intermediate_size")
                     ? ", \"moe_intermediate_size\": 32" : "",
                 strcmp(cases[i].field, "intermediate_size") ? ", \"intermediate_size\": 64"
                                                             : "");
        expect_error("limit.json", text, REAP_E_INVALID, cases[i].needle);
        CHECK_ERRMSG("limit.json");
    }
    /* Nested (qwen3_vl_moe): the field's path names text_config. */
    expect_error("limit_vl.json",
        "{\"model_type\": \"qwen3_vl_moe\", \"text_config\": {\"hidden_size\": 64,\n"
        " \"num_hidden_layers\": 2147483647, \"num_attention_heads\": 4, \"vocab_size\": 100,\n"
        " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}}\n",
        REAP_E_INVALID, "text_config.num_hidden_layers = 2147483647 is above the limit");
    /* A head_dim derived from hidden_size / num_attention_heads is bounded too. */
    expect_error("limit_hd.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 65536, \"num_hidden_layers\": 2,\n"
        " \"num_attention_heads\": 32, \"vocab_size\": 100, \"num_experts\": 8,\n"
        " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32}\n",
        REAP_E_INVALID, "head_dim = 2048 (hidden_size / num_attention_heads) is above");
    /* The limits themselves are accepted. */
    const char *path = write_scratch("at_limit.json",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 65536, \"num_hidden_layers\": 1024,\n"
        " \"num_attention_heads\": 1024, \"num_key_value_heads\": 1024, \"head_dim\": 1024,\n"
        " \"vocab_size\": 16777216, \"num_experts\": 16384, \"num_experts_per_tok\": 16384,\n"
        " \"moe_intermediate_size\": 1048576, \"intermediate_size\": 1048576}\n");
    reap_config c;
    CHECK_RC(reap_config_load(path, &c), REAP_OK);
    CHECK(c.n_layers == REAP_CONFIG_MAX_LAYERS && c.n_experts == REAP_CONFIG_MAX_EXPERTS);
    reap_config_free(&c);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch-dir>\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    if (make_dirs(scratch) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", scratch, strerror(errno));
        return 2;
    }
    test_qwen3_moe();
    test_qwen3_vl_moe();
    test_field_drift();
    test_defaults();
    test_layer_pattern();
    test_errors();
    test_limits();
    TEST_MAIN_END();
}

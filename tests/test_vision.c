/* test_vision.c - the CPU vision tower (model/vision.h) and its vision_config.
 *
 * Unit mode (`test_vision SCRATCH`, the ctest unit test):
 *   - vision_config parsing: a generated --vision config, the depth-0 stub (no tower),
 *     and refusals naming the field (deepstack index out of range, heads not dividing,
 *     out_hidden_size against the text hidden size, unknown hidden_act);
 *   - loading: a missing tensor and a mis-shaped one are REAP_E_FORMAT naming the tensor
 *     and both shapes; a NaN in a weight is REAP_E_NUMERIC naming the tensor, an
 *     activation that overflows names the block and the stage; a checkpoint without a
 *     tower is REAP_E_INVALID;
 *   - grids that do not divide by the merge size are REAP_E_INVALID;
 *   - determinism: 1 and 3 threads give identical bits, and each image of a two-image
 *     call equals that image run alone, bit for bit.
 * Dump mode (`test_vision --dump MODEL OUTDIR t,h,w [t,h,w ...]`, used by
 * tests/vision_oracle.sh): seeded random patches through the tower, written as
 * little-endian float32 files with meta.json for tests/oracle/vision_oracle.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "genmodel.h"
#include "reap_err.h"
#include "safetensors.h"
#include "test_fixtures.h"
#include "test_util.h"
#include "vision.h"

/* Deterministic patches in [-1, 1). */
static void fill_patches(float *p, int64_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

typedef struct tower {
    reap_config cfg;
    reap_ckpt *ck;
    reap_vision *v;
} tower;

static int tower_open(const char *dir, tower *t)
{
    char path[4200];
    int rc;
    memset(t, 0, sizeof *t);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = reap_config_load(path, &t->cfg)) || (rc = reap_ckpt_open(dir, &t->ck)))
        return rc;
    return reap_vision_load(t->ck, &t->cfg, &t->v);
}

static void tower_close(tower *t)
{
    reap_vision_free(t->v);
    reap_ckpt_close(t->ck);
    reap_config_free(&t->cfg);
    memset(t, 0, sizeof *t);
}

/* Run the tower on `grids`; patches, out, deep malloc'd for the caller. */
static int run(const reap_vision *v, const int32_t *grids, int n, int threads, uint64_t seed,
               float **patches, float **out, float **deep, int64_t *np, int64_t *nt)
{
    const reap_vision_config *c = reap_vision_cfg(v);
    int rc = reap_vision_grids_check(c, grids, n, np, nt);
    if (rc)
        return rc;
    int64_t D = reap_vision_patch_dim(c), ho = c->out_hidden;
    *patches = malloc((size_t)(*np * D) * sizeof(float));
    *out = malloc((size_t)(*nt * ho) * sizeof(float));
    *deep = malloc((size_t)(*nt * ho * (c->n_deepstack ? c->n_deepstack : 1)) * sizeof(float));
    if (!*patches || !*out || !*deep)
        return REAP_E_NOMEM;
    fill_patches(*patches, *np * D, seed);
    return reap_vision_forward(v, *patches, grids, n, threads, *out, *deep);
}

static int gen(const char *dir, int depth, const int *ds, int n_ds, st_dtype dtype)
{
    reap_gen_spec s;
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    s.vision.enabled = 1;
    s.vision.depth = depth;
    s.vision.n_deepstack = n_ds;
    for (int k = 0; k < n_ds; k++)
        s.vision.deepstack[k] = ds[k];
    s.dtype = dtype;
    return reap_gen_model(&s, dir);
}

/* Replace the first occurrence of `from` by `to` in dir/config.json. */
static void edit_config(const char *dir, const char *from, const char *to)
{
    char path[4200], buf[16384];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = slurp(path, NULL);
    CHECK(text != NULL);
    if (!text)
        return;
    char *at = strstr(text, from);
    CHECK_MSG(at != NULL, "config.json lacks \"%s\"", from);
    if (at) {
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        write_text(path, buf);
    }
    free(text);
}

static void test_config(void)
{
    char dir[4096], path[4200];
    reap_config cfg;
    int ds[2] = { 0, 2 };

    path_join(dir, sizeof dir, scratch, "cfg");
    CHECK(fresh_dir(dir) == 0);
    CHECK_RC(gen(dir, 3, ds, 2, ST_F32), REAP_OK);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK_RC(reap_config_load(path, &cfg), REAP_OK);
    CHECK(cfg.vision.present == 1 && cfg.vision.depth == 3 && cfg.vision.hidden == 32 &&
          cfg.vision.n_heads == 2 && cfg.vision.head_dim == 16 && cfg.vision.inter == 64 &&
          cfg.vision.patch == 4 && cfg.vision.temporal_patch == 2 && cfg.vision.merge == 2 &&
          cfg.vision.in_channels == 3 && cfg.vision.n_pos == 64 && cfg.vision.pos_side == 8 &&
          cfg.vision.out_hidden == cfg.hidden && cfg.vision.act == REAP_VISION_ACT_GELU_TANH);
    CHECK(cfg.vision.n_deepstack == 2 && cfg.vision.deepstack[0] == 0 &&
          cfg.vision.deepstack[1] == 2);
    /* the memory plan: every size here is a multiple of 16 (no packing padding), so the
     * weights are 4 bytes per parameter of the tensors listed in vision.h */
    {
        reap_vision_mem vm;
        const int64_t block = 4 * 32 + (96 * 32 + 96) + (32 * 32 + 32) + (64 * 32 + 64) +
                              (32 * 64 + 32);
        const int64_t merger = (128 * 128 + 128) + (64 * 128 + 64);
        const int64_t params = (32 * 96 + 32) + 64 * 32 + 3 * block + (2 * 32 + merger) +
                               2 * (2 * 128 + merger);
        CHECK_RC(reap_vision_mem_plan(&cfg.vision, 100, 40, 1, &vm), REAP_OK);
        CHECK(vm.weight_bytes == 4 * params);
        reap_vision_mem v2, v3;
        CHECK_RC(reap_vision_mem_plan(&cfg.vision, 200, 40, 1, &v2), REAP_OK);
        CHECK_RC(reap_vision_mem_plan(&cfg.vision, 200, 40, 3, &v3), REAP_OK);
        /* Np x (3 Hv + max(3 Hv, Iv) + 2 hd) floats per patch: 96 + 96 + 32 */
        CHECK(v2.act_bytes - vm.act_bytes == 4 * 100 * (96 + 96 + 32));
        CHECK(v3.act_bytes > v2.act_bytes && (v3.act_bytes - v2.act_bytes) % 2 == 0);
        CHECK_RC(reap_vision_mem_plan(&cfg.vision, 100, 101, 1, &vm), REAP_E_INVALID);
        CHECK_RC(reap_vision_mem_plan(&cfg.vision, 100, 40, 0, &vm), REAP_E_INVALID);
        reap_vision_config none = {0};
        CHECK_RC(reap_vision_mem_plan(&none, 100, 40, 1, &vm), REAP_E_INVALID);
        CHECK(vm.weight_bytes == 0 && vm.act_bytes == 0);
    }
    reap_config_free(&cfg);

    /* refusals, each naming its field */
    static const struct { const char *from, *to, *needle; int rc; } bad[] = {
        { "\"deepstack_visual_indexes\": [\n      0,\n      2\n    ]",
          "\"deepstack_visual_indexes\": [0, 3]", "vision_config.deepstack_visual_indexes[1]",
          REAP_E_INVALID },
        { "\"deepstack_visual_indexes\": [\n      0,\n      2\n    ]",
          "\"deepstack_visual_indexes\": [2, 0]", "vision_config.deepstack_visual_indexes[1]",
          REAP_E_INVALID },
        { "\"num_heads\": 2", "\"num_heads\": 3", "vision_config.hidden_size", REAP_E_INVALID },
        { "\"num_heads\": 2", "\"num_heads\": 16", "multiple of 4", REAP_E_INVALID },
        { "\"out_hidden_size\": 64", "\"out_hidden_size\": 65", "vision_config.out_hidden_size",
          REAP_E_INVALID },
        { "\"gelu_pytorch_tanh\"", "\"relu\"", "vision_config.hidden_act", REAP_E_UNSUPPORTED },
        { "\"num_position_embeddings\": 64", "\"num_position_embeddings\": 60",
          "vision_config.num_position_embeddings", REAP_E_INVALID },
        { "\"depth\": 3", "\"depth\": 3.0", "vision_config.depth", REAP_E_FORMAT },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(gen(dir, 3, ds, 2, ST_F32), REAP_OK);
        edit_config(dir, bad[i].from, bad[i].to);
        CHECK_RC(reap_config_load(path, &cfg), bad[i].rc);
        CHECK_ERRMSG(bad[i].needle);
    }

    /* the stub of a text-only qwen3_vl_moe checkpoint: no tower */
    reap_gen_spec s;
    reap_gen_spec_default(&s, REAP_FAMILY_QWEN3_VL_MOE);
    CHECK(fresh_dir(dir) == 0);
    CHECK_RC(reap_gen_model(&s, dir), REAP_OK);
    CHECK_RC(reap_config_load(path, &cfg), REAP_OK);
    CHECK(cfg.vision.present == 0);
    tower t;
    CHECK_RC(tower_open(dir, &t), REAP_E_INVALID);
    CHECK_ERRMSG("no vision tower");
    tower_close(&t);
    reap_config_free(&cfg);
}

/* Overwrite element i of F32 tensor `name` in dir/model.safetensors with x. */
static void poke(const char *dir, const char *name, int64_t i, float x)
{
    char shard[4300];
    st_file *f = NULL;
    snprintf(shard, sizeof shard, "%s/model.safetensors", dir);
    CHECK_RC(st_file_open(shard, &f), REAP_OK);
    const st_tensor *w = f ? st_file_find(f, name) : NULL;
    CHECK(w != NULL && w->dtype == ST_F32 && i < w->numel);
    uint64_t off = w ? st_file_data_offset(f) + w->begin + 4 * (uint64_t)i : 0;
    st_file_close(f);
    if (!w)
        return;
    int fd = open(shard, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, &x, 4, (off_t)off) == 4);
    if (fd >= 0)
        close(fd);
}

static void test_load_errors(void)
{
    char dir[4096];
    int ds[1] = { 1 };
    tower t;

    path_join(dir, sizeof dir, scratch, "load");
    CHECK(fresh_dir(dir) == 0);
    /* config says 2 deepstack mergers, the shards hold 1 */
    CHECK_RC(gen(dir, 2, ds, 1, ST_BF16), REAP_OK);
    edit_config(dir, "\"deepstack_visual_indexes\": [\n      1\n    ]",
                "\"deepstack_visual_indexes\": [0, 1]");
    CHECK_RC(tower_open(dir, &t), REAP_E_FORMAT);
    CHECK_ERRMSG("'model.visual.deepstack_merger_list.1.norm.weight' (shape [128]) is missing");
    tower_close(&t);

    /* config's intermediate_size disagrees with the tensors */
    CHECK_RC(gen(dir, 2, ds, 1, ST_BF16), REAP_OK);
    edit_config(dir, "\"intermediate_size\": 64,\n    \"model_type\": \"qwen3_vl_moe\"",
                "\"intermediate_size\": 48,\n    \"model_type\": \"qwen3_vl_moe\"");
    CHECK_RC(tower_open(dir, &t), REAP_E_FORMAT);
    CHECK_ERRMSG("'model.visual.blocks.0.mlp.linear_fc1.weight' has shape [64, 32], "
                 "expected [48, 32]");
    tower_close(&t);

    /* a NaN in a vision weight */
    CHECK_RC(gen(dir, 2, ds, 1, ST_F32), REAP_OK);
    poke(dir, "model.visual.blocks.1.attn.proj.weight", 5, NAN);
    CHECK_RC(tower_open(dir, &t), REAP_E_NUMERIC);
    CHECK_ERRMSG("model.visual.blocks.1.attn.proj.weight");
    tower_close(&t);

    /* finite weights whose activations overflow: the error names block and stage */
    CHECK_RC(gen(dir, 2, ds, 1, ST_F32), REAP_OK);
    poke(dir, "model.visual.blocks.1.attn.proj.bias", 0, 3e38f);
    poke(dir, "model.visual.blocks.1.mlp.linear_fc2.bias", 0, 3e38f);
    CHECK_RC(tower_open(dir, &t), REAP_OK);
    if (t.v) {
        int32_t g[3] = { 1, 2, 2 };
        float *p = NULL, *o = NULL, *d = NULL;
        int64_t np, nt;
        CHECK_RC(run(t.v, g, 1, 1, 3, &p, &o, &d, &np, &nt), REAP_E_NUMERIC);
        CHECK_ERRMSG("non-finite value after the MLP of block 1");
        free(p);
        free(o);
        free(d);
    }
    tower_close(&t);
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static void test_forward(void)
{
    char dir[4200];
    int ds[2] = { 0, 2 };
    tower t;

    path_join(dir, sizeof dir, scratch, "fwd");
    CHECK(fresh_dir(dir) == 0);
    CHECK_RC(gen(dir, 3, ds, 2, ST_BF16), REAP_OK);
    CHECK_RC(tower_open(dir, &t), REAP_OK);
    if (!t.v) {
        tower_close(&t);
        return;
    }
    const reap_vision_config *c = reap_vision_cfg(t.v);
    const int64_t ho = c->out_hidden, D = reap_vision_patch_dim(c);

    int32_t odd[3] = { 1, 6, 5 };
    CHECK_RC(reap_vision_grids_check(c, odd, 1, NULL, NULL), REAP_E_INVALID);
    CHECK_ERRMSG("image 0 has grid h 6, w 5");

    /* two images: 1 thread vs 3 threads, and each alone */
    int32_t two[6] = { 1, 6, 10, 1, 4, 4 };
    float *p1 = NULL, *o1 = NULL, *d1 = NULL, *p3 = NULL, *o3 = NULL, *d3 = NULL;
    int64_t np, nt, np3, nt3;
    CHECK_RC(run(t.v, two, 2, 1, 7, &p1, &o1, &d1, &np, &nt), REAP_OK);
    CHECK_RC(run(t.v, two, 2, 3, 7, &p3, &o3, &d3, &np3, &nt3), REAP_OK);
    CHECK(np == 76 && nt == 19);
    CHECK(same_bits(o1, o3, nt * ho) && same_bits(d1, d3, 2 * nt * ho));

    /* image 1 alone, its patches taken from the joint call */
    float *o_b = malloc((size_t)(4 * ho) * sizeof(float));
    float *d_b = malloc((size_t)(2 * 4 * ho) * sizeof(float));
    CHECK_RC(reap_vision_forward(t.v, p1 + 60 * D, two + 3, 1, 2, o_b, d_b), REAP_OK);
    CHECK(same_bits(o_b, o1 + 15 * ho, 4 * ho));
    CHECK(same_bits(d_b, d1 + 15 * ho, 4 * ho) && same_bits(d_b + 4 * ho, d1 + (nt + 15) * ho,
                                                           4 * ho));
    /* the two images differ (the test can see a mixed-up image) */
    CHECK(!same_bits(o1, o1 + 15 * ho, 4 * ho));

    /* a NaN patch is refused */
    p1[3] = NAN;
    CHECK_RC(reap_vision_forward(t.v, p1, two, 2, 1, o1, d1), REAP_E_NUMERIC);
    CHECK_ERRMSG("input patches");

    free(o_b);
    free(d_b);
    free(p1);
    free(o1);
    free(d1);
    free(p3);
    free(o3);
    free(d3);
    tower_close(&t);
}

/* --dump MODEL OUTDIR t,h,w ... */
static int dump(int argc, char **argv)
{
    int32_t grids[3 * 16];
    int n = argc - 4;
    tower t;
    float *p = NULL, *o = NULL, *d = NULL;
    int64_t np, nt;
    char path[4200];
    int rc;

    if (n < 1 || n > 16) {
        fprintf(stderr, "usage: test_vision --dump MODEL OUTDIR t,h,w [t,h,w ...] (1..16)\n");
        return 2;
    }
    for (int i = 0; i < n; i++)
        if (sscanf(argv[4 + i], "%d,%d,%d", &grids[3 * i], &grids[3 * i + 1],
                   &grids[3 * i + 2]) != 3) {
            fprintf(stderr, "test_vision: bad grid '%s'\n", argv[4 + i]);
            return 2;
        }
    if ((rc = tower_open(argv[2], &t)) ||
        (rc = run(t.v, grids, n, 2, 1234, &p, &o, &d, &np, &nt))) {
        fprintf(stderr, "test_vision: %s: %s\n", reap_strerror(rc), reap_err_msg());
        return 1;
    }
    const reap_vision_config *c = reap_vision_cfg(t.v);
    make_dirs(argv[3]);
    snprintf(path, sizeof path, "%s/patches.f32", argv[3]);
    int bad = put_file(path, p, (size_t)(np * reap_vision_patch_dim(c)) * 4);
    snprintf(path, sizeof path, "%s/out.f32", argv[3]);
    bad |= put_file(path, o, (size_t)(nt * c->out_hidden) * 4);
    snprintf(path, sizeof path, "%s/deep.f32", argv[3]);
    bad |= put_file(path, d, (size_t)(nt * c->out_hidden * c->n_deepstack) * 4);
    char meta[2048];
    int k = snprintf(meta, sizeof meta, "{\"grids\": [");
    for (int i = 0; i < n; i++)
        k += snprintf(meta + k, sizeof meta - (size_t)k, "%s[%d, %d, %d]", i ? ", " : "",
                      grids[3 * i], grids[3 * i + 1], grids[3 * i + 2]);
    snprintf(meta + k, sizeof meta - (size_t)k,
             "], \"n_patches\": %lld, \"n_tokens\": %lld, \"n_deepstack\": %d}\n",
             (long long)np, (long long)nt, c->n_deepstack);
    snprintf(path, sizeof path, "%s/meta.json", argv[3]);
    bad |= put_file(path, meta, strlen(meta));
    printf("test_vision: %d image(s), %lld patches -> %lld tokens x %d, %d deepstack sets\n",
           n, (long long)np, (long long)nt, c->out_hidden, c->n_deepstack);
    free(p);
    free(o);
    free(d);
    tower_close(&t);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--dump") == 0)
        return dump(argc, argv);
    scratch = argc > 1 ? argv[1] : "test_vision.tmp";
    CHECK(fresh_dir(scratch) == 0);
    test_config();
    test_load_errors();
    test_forward();
    TEST_MAIN_END();
}

/* test_store_stale.c - stale statistics (stats_store.h: reap_store_pair_stale): a packed
 * qwen3_vl_moe pair with a layer record of positions_rule 0 (as builds before the
 * per-family rotary positions wrote it) is stale and the merged view refuses it, naming
 * the pair; the same records of a qwen3_moe model, of an unpacked calibration set, or
 * with positions_rule 1 (what this build writes) are not; a pair whose calibration record
 * is missing counts as packed; export/import carries positions_rule unchanged. */
#include <stdlib.h>
#include <string.h>

#include "export.h"
#include "stats_store.h"
#include "store.h"
#include "test_store_util.h"
#include "test_util.h"

static void put_calib(reap_store *s, const reap_id *c, int pack)
{
    reap_calib_info ci = {0};
    ci.id = *c;
    ci.source = (char *)"calib.jsonl";
    ci.n_samples = 3;
    ci.n_rows = 2;
    ci.seq_len = 16;
    ci.pack = pack;
    ci.n_tokens = 30;
    CHECK_RC(reap_store_calib_put(s, &ci), REAP_OK);
}

/* Layers 0..n_layers-1 of (m, c); layer 0 with rule0_layer0 ? 0 : the current rule. */
static void put_pair(reap_store *s, const reap_id *m, const reap_id *c, int n_layers,
                     int rule0_layer0)
{
    for (int l = 0; l < n_layers; l++) {
        reap_layer_stats st;
        CHECK_RC(make_stats(&st, l, 8, 2), REAP_OK);
        uint32_t rule = l == 0 && rule0_layer0 ? 0 : REAP_STORE_POSITIONS_RULE;
        CHECK_RC(reap_store_stats_put_rule(s, m, c, &st, "cpu", rule, NULL), REAP_OK);
        reap_layer_stats_free(&st);
    }
}

static int stale_of(reap_store *s, const reap_id *m, const reap_id *c)
{
    int stale = -1;
    CHECK_RC(reap_store_pair_stale(s, NULL, m, c, &stale), REAP_OK);
    return stale;
}

/* reap_store_stats_merged over calibs[0..n) (n 0: every complete set): its return code. */
static int merged_rc(reap_store *s, const reap_id *m, const reap_id *calibs, int n)
{
    reap_layer_stats *st = NULL;
    int n_st = 0;
    int rc = reap_store_stats_merged(s, NULL, m, calibs, n, &st, &n_st, NULL, NULL);
    for (int i = 0; i < n_st; i++)
        reap_layer_stats_free(&st[i]);
    free(st);
    return rc;
}

int main(int argc, char **argv)
{
    char da[1024], db[1024], file[1024], ch[65];
    reap_store *a = NULL, *b = NULL;
    reap_store_opts create = {.create = 1};
    reap_id vl, vl2, qm, unknown, packed, unpacked, fresh, nocalib;
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_stale";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    spath(da, sizeof da, "a");
    spath(db, sizeof db, "b");
    spath(file, sizeof file, "vl.reapx");
    fake_id(&vl, 1);
    fake_id(&qm, 2);
    fake_id(&unknown, 3);
    fake_id(&packed, 4);
    fake_id(&unpacked, 5);
    fake_id(&fresh, 6);
    fake_id(&nocalib, 7);
    fake_id(&vl2, 8);
    CHECK_RC(reap_store_open(da, &create, &a), REAP_OK);
    CHECK_RC(reap_store_open(db, &create, &b), REAP_OK);
    if (!a || !b)
        TEST_MAIN_END();
    CHECK_RC(put_model_type(a, &vl, "qwen3_vl_moe", 2, 8), REAP_OK);
    CHECK_RC(put_model_type(a, &vl2, "qwen3_vl_moe", 2, 8), REAP_OK);
    CHECK_RC(put_model_type(a, &qm, "qwen3_moe", 2, 8), REAP_OK);
    put_calib(a, &packed, 1);
    put_calib(a, &unpacked, 0);
    put_calib(a, &fresh, 1);

    /* Only layer 0 of the packed VL pair is rule 0: one such layer makes the pair stale. */
    put_pair(a, &vl, &packed, 2, 1);
    put_pair(a, &vl, &unpacked, 2, 1);
    put_pair(a, &vl, &fresh, 2, 0);
    put_pair(a, &vl2, &nocalib, 2, 1);   /* another model: export wants calib records */
    put_pair(a, &qm, &packed, 2, 1);
    CHECK(stale_of(a, &vl, &packed) == 1);
    CHECK(stale_of(a, &vl, &unpacked) == 0);   /* rows without gaps: unaffected */
    CHECK(stale_of(a, &vl, &fresh) == 0);      /* rule 1: this build's records */
    CHECK(stale_of(a, &vl2, &nocalib) == 1);    /* packing unknown: counted as packed */
    CHECK(stale_of(a, &qm, &packed) == 0);     /* Qwen3-MoE positions never changed */
    CHECK(stale_of(a, &vl, &unknown) == 0);    /* no records: nothing stale */
    int stale = -1;
    CHECK_RC(reap_store_pair_stale(a, NULL, &unknown, &packed, &stale), REAP_E_NOTFOUND);

    /* The merged view refuses a stale pair, chosen or among the complete sets, and names
     * it; the others merge. */
    reap_id_hex(&packed, ch);
    CHECK_RC(merged_rc(a, &vl, &packed, 1), REAP_E_PRECONDITION);
    CHECK_ERRMSG(ch);
    CHECK_ERRMSG("stale");
    CHECK_RC(merged_rc(a, &vl, NULL, 0), REAP_E_PRECONDITION);
    CHECK_ERRMSG("stale");
    reap_id ok_sets[2] = {unpacked, fresh};
    CHECK_RC(merged_rc(a, &vl, ok_sets, 2), REAP_OK);
    CHECK_RC(merged_rc(a, &qm, &packed, 1), REAP_OK);
    CHECK_RC(merged_rc(a, &qm, NULL, 0), REAP_OK);

    /* Export/import keeps positions_rule: the stale pair is stale in the importing store,
     * the rule-1 pair is not. */
    reap_export_counts ec;
    reap_import_counts ic;
    CHECK_RC(reap_store_export(a, file, &vl, &ec), REAP_OK);
    CHECK_RC(reap_store_import(b, file, &ic), REAP_OK);
    CHECK(ic.added > 0);
    CHECK(stale_of(b, &vl, &packed) == 1);
    CHECK(stale_of(b, &vl, &fresh) == 0);
    CHECK(stale_of(b, &vl, &unpacked) == 0);
    CHECK_RC(merged_rc(b, &vl, &packed, 1), REAP_E_PRECONDITION);
    CHECK_RC(merged_rc(b, &vl, &fresh, 1), REAP_OK);

    reap_store_close(a);
    reap_store_close(b);
    TEST_MAIN_END();
}

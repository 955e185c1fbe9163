/* test_store.c - the score store in one process: ids, open/create and every refusal
 * (missing, foreign directory, plain file, foreign LMDB, future format, truncated and
 * garbage data.mdb), statistics records (round trip with -inf, write-once, damage and
 * future-version detection), completeness and the merged view (fixed order, one set =
 * its record), runs, map growth from a tiny map, read-only stores, hidden-state
 * checkpoints, statistics by modality (image sets round trip and merge; text-only and
 * old records carry no modality fields and keep the pre-modality digest).
 *
 * One test binary per module: the store's single-process cases share one scratch store
 * and the helpers of test_store_util.h; processes, export, identities and the cursor
 * walk have their own files (test_store_proc.c, test_store_export.c, test_store_ident.c,
 * test_store_walk.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <lmdb.h>
#include <sodium.h>
#include <unistd.h>

#include "catalog.h"
#include "hidden_ckpt.h"
#include "reap_store.pb-c.h"
#include "records.h"
#include "runs.h"
#include "stats_store.h"
#include "store.h"
#include "store_impl.h"
#include "test_store_util.h"
#include "test_util.h"

static void test_ids(void)
{
    reap_id a, b;
    char hex[65];
    fake_id(&a, 7);
    reap_id_hex(&a, hex);
    CHECK(strlen(hex) == 64);
    CHECK_RC(reap_id_parse(hex, &b), REAP_OK);
    CHECK(!memcmp(a.b, b.b, 32));
    hex[3] = 'G';
    CHECK_RC(reap_id_parse(hex, &b), REAP_E_INVALID);
    CHECK_RC(reap_id_parse("abc", &b), REAP_E_INVALID);
    uint8_t r[16] = {1, 2, 3}, r2[16];
    char rh[33];
    reap_run_id_hex(r, rh);
    CHECK_RC(reap_run_id_parse(rh, r2), REAP_OK);
    CHECK(!memcmp(r, r2, 16));
}

/* Write raw bytes into a named database of an LMDB environment (no reap code). */
static int raw_put(const char *dir, const char *db, const void *key, size_t klen,
                   const void *val, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    int rc = mdb_env_create(&env);
    if (rc)
        return rc;
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, (size_t)1 << 26);
    if (!(rc = mdb_env_open(env, dir, 0, 0644)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
        if (!(rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi)) &&
            !(rc = mdb_put(txn, dbi, &k, &v, 0)))
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

/* Flip one byte of a stored value in place (through raw LMDB). */
static int raw_flip(const char *dir, const char *db, const void *key, size_t klen, size_t at)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_env_create(&env);
    if (rc)
        return rc;
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, (size_t)1 << 26);
    if (!(rc = mdb_env_open(env, dir, 0, 0644)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
        if (!(rc = mdb_dbi_open(txn, db, 0, &dbi)) && !(rc = mdb_get(txn, dbi, &k, &v))) {
            uint8_t *copy = malloc(v.mv_size);
            memcpy(copy, v.mv_data, v.mv_size);
            copy[at % v.mv_size] ^= 0x20;
            MDB_val nv = {v.mv_size, copy};
            rc = mdb_put(txn, dbi, &k, &nv, 0);
            free(copy);
        }
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

static void test_open_refusals(void)
{
    char dir[1024], p[1100];
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1}, ro = {.readonly = 1};

    spath(dir, sizeof dir, "nope");
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_E_NOTFOUND);
    CHECK_ERRMSG("no such store directory");
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_E_NOTFOUND);

    /* A foreign directory: never turned into a store. */
    spath(dir, sizeof dir, "foreign");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("hello\n", f);
    fclose(f);
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("not a reap store");
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    CHECK(access(p, F_OK) != 0);

    /* A plain file. */
    spath(dir, sizeof dir, "foreign/notes.txt");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("not a directory");

    /* An LMDB environment of someone else. */
    spath(dir, sizeof dir, "otherlmdb");
    mkdir(dir, 0755);
    CHECK(raw_put(dir, "things", "k", 1, "v", 1) == 0);
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("not a reap store");
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_E_FORMAT);

    /* An interrupted creation: LMDB set up data.mdb, nothing was committed. */
    spath(dir, sizeof dir, "interrupted");
    mkdir(dir, 0755);
    {
        MDB_env *env;
        CHECK(mdb_env_create(&env) == 0 && mdb_env_open(env, dir, 0, 0644) == 0);
        mdb_env_close(env);
    }
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_E_NOTFOUND);
    CHECK_ERRMSG("interrupted");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    reap_store_close(s);
    s = NULL;
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_OK);
    reap_store_close(s);
    s = NULL;

    /* A store written by a future format. */
    spath(dir, sizeof dir, "future");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    reap_store_close(s);
    s = NULL;
    const uint8_t future[] = {0x08, 99, 0x12, 10, 'r', 'e', 'a', 'p', '-', 's', 't', 'o',
                              'r', 'e'};
    CHECK(raw_put(dir, "meta", "format", 6, future, sizeof future) == 0);
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("newer reap");
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_E_UNSUPPORTED);

    /* Truncated and garbage data.mdb files. */
    spath(dir, sizeof dir, "trunc");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    reap_id m, c;
    fake_id(&m, 1);
    fake_id(&c, 2);
    CHECK_RC(put_model(s, &m, 40, 128), REAP_OK);
    for (int l = 0; l < 40; l++) {
        reap_layer_stats st;
        make_stats(&st, l, 128, 8);
        CHECK_RC(reap_store_stats_put(s, &m, &c, &st, "cpu", NULL), REAP_OK);
        reap_layer_stats_free(&st);
    }
    reap_store_close(s);
    s = NULL;
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    struct stat sb;
    stat(p, &sb);
    CHECK(truncate(p, sb.st_size / 2) == 0);
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("truncated");
    CHECK(truncate(p, 5000) == 0);
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("truncated");
    CHECK(truncate(p, 0) == 0);
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_E_FORMAT);
    CHECK_ERRMSG("truncated");
    int fd = open(p, O_WRONLY | O_TRUNC);
    uint8_t junk[65536];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rng_next();
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_E_FORMAT);
    CHECK(s == NULL);
}

static void test_records(void)
{
    char dir[1024];
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1};
    reap_id m, c1, c2, c3;
    reap_layer_stats a[3], got = {0};
    reap_stats_outcome oc;
    spath(dir, sizeof dir, "records");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    if (!s)
        return;
    fake_id(&m, 10);
    fake_id(&c1, 11);
    fake_id(&c2, 12);
    fake_id(&c3, 13);
    CHECK_RC(put_model(s, &m, 3, 16), REAP_OK);
    CHECK_RC(put_model(s, &m, 3, 16), REAP_OK); /* present: kept */

    for (int l = 0; l < 3; l++)
        make_stats(&a[l], l, 16, 2);
    CHECK_RC(reap_store_stats_put(s, &m, &c1, &a[0], "cpu", &oc), REAP_OK);
    CHECK(oc == REAP_STATS_WRITTEN);
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &c1, 0, &got), REAP_OK);
    CHECK(reap_stats_identical(&got, &a[0]));
    CHECK(isinf(got.max_act[0]) && got.max_act[0] < 0);
    reap_layer_stats_free(&got);
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &c1, 1, &got), REAP_E_NOTFOUND);

    /* Write-once: same -> SAME; different -> DIFFERENT and the stored one stays. */
    CHECK_RC(reap_store_stats_put(s, &m, &c1, &a[0], "cpu", &oc), REAP_OK);
    CHECK(oc == REAP_STATS_SAME);
    reap_layer_stats other;
    make_stats(&other, 0, 16, 2);
    CHECK_RC(reap_store_stats_put(s, &m, &c1, &other, "cpu", &oc), REAP_OK);
    CHECK(oc == REAP_STATS_DIFFERENT);
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &c1, 0, &got), REAP_OK);
    CHECK(reap_stats_identical(&got, &a[0]));
    reap_layer_stats_free(&got);
    reap_layer_stats_free(&other);

    /* Completeness and the merged view. */
    int complete = -1;
    CHECK_RC(reap_store_stats_complete(s, NULL, &m, &c1, &complete), REAP_OK);
    CHECK(complete == 0);
    {   /* every set incomplete (c1 has layer 0 only): a precondition naming the gaps */
        reap_layer_stats *pm = NULL;
        int npm = 0;
        CHECK_RC(reap_store_stats_merged(s, NULL, &m, NULL, 0, &pm, &npm, NULL, NULL),
                 REAP_E_PRECONDITION);
        CHECK_ERRMSG("has 1 of 3 MoE layers (missing: 1, 2)");
        CHECK(pm == NULL && npm == 0);
    }
    for (int l = 1; l < 3; l++)
        CHECK_RC(reap_store_stats_put(s, &m, &c1, &a[l], "cpu", NULL), REAP_OK);
    CHECK_RC(reap_store_stats_complete(s, NULL, &m, &c1, &complete), REAP_OK);
    CHECK(complete == 1);
    reap_layer_stats b[3], d[3];
    for (int l = 0; l < 3; l++) {
        make_stats(&b[l], l, 16, 2);
        make_stats(&d[l], l, 16, 2);
        CHECK_RC(reap_store_stats_put(s, &m, &c2, &b[l], "cpu", NULL), REAP_OK);
        if (l < 2) /* c3 partial */
            CHECK_RC(reap_store_stats_put(s, &m, &c3, &d[l], "cpu", NULL), REAP_OK);
    }
    reap_id *ids = NULL;
    int n = 0;
    CHECK_RC(reap_store_stats_calibs(s, NULL, &m, 0, &ids, &n), REAP_OK);
    CHECK(n == 3);
    free(ids);
    CHECK_RC(reap_store_stats_calibs(s, NULL, &m, 1, &ids, &n), REAP_OK);
    CHECK(n == 2 && !memcmp(ids[0].b, c1.b, 32) && !memcmp(ids[1].b, c2.b, 32));
    free(ids);

    reap_layer_stats *mg = NULL, *mg2 = NULL;
    reap_id *used = NULL;
    int nm = 0, nm2 = 0, nu = 0;
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, NULL, 0, &mg, &nm, &used, &nu), REAP_OK);
    CHECK(nm == 3 && nu == 2);
    for (int l = 0; l < nm; l++) {
        reap_layer_stats want;
        reap_layer_stats_init(&want, l, 16, 2);
        reap_layer_stats_zero(&want);
        /* c1 < c2: the merge starts from c1's record and adds c2's. */
        reap_layer_stats_merge(&want, &a[l]);
        reap_layer_stats_merge(&want, &b[l]);
        CHECK_MSG(mg[l].tokens == a[l].tokens + b[l].tokens, "layer %d", l);
        for (int e = 0; e < 16; e++) {
            CHECK(mg[l].count[e] == a[l].count[e] + b[l].count[e]);
            CHECK(mg[l].sum_gate_norm[e] == a[l].sum_gate_norm[e] + b[l].sum_gate_norm[e]);
            CHECK(mg[l].max_act[e] == want.max_act[e]);
        }
        reap_layer_stats_free(&want);
    }
    /* Order of the chosen ids does not matter; duplicates and partial sets refused. */
    reap_id pick[2] = {c2, c1};
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, pick, 2, &mg2, &nm2, NULL, NULL), REAP_OK);
    for (int l = 0; l < nm && l < nm2; l++)
        CHECK(reap_stats_identical(&mg[l], &mg2[l]));
    for (int l = 0; l < nm2; l++)
        reap_layer_stats_free(&mg2[l]);
    free(mg2);
    reap_id dup[2] = {c1, c1};
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, dup, 2, &mg2, &nm2, NULL, NULL),
             REAP_E_INVALID);
    /* c3 stopped after 2 of 3 layers: a precondition, naming the set and what is missing. */
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, &c3, 1, &mg2, &nm2, NULL, NULL),
             REAP_E_PRECONDITION);
    CHECK_ERRMSG("no complete statistics");
    CHECK_ERRMSG("has 2 of 3 MoE layers (missing: 2)");
    {
        char c3h[65];
        reap_id_hex(&c3, c3h);
        CHECK_ERRMSG(c3h);
    }
    reap_id c9;   /* no record at all: not found */
    fake_id(&c9, 19);
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, &c9, 1, &mg2, &nm2, NULL, NULL),
             REAP_E_NOTFOUND);
    /* One set: its records unchanged. */
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, &c2, 1, &mg2, &nm2, NULL, NULL), REAP_OK);
    for (int l = 0; l < nm2; l++) {
        CHECK(reap_stats_identical(&mg2[l], &b[l]));
        reap_layer_stats_free(&mg2[l]);
    }
    free(mg2);
    for (int l = 0; l < nm; l++)
        reap_layer_stats_free(&mg[l]);
    free(mg);
    free(used);
    reap_id unknown;
    fake_id(&unknown, 99);
    CHECK_RC(reap_store_stats_merged(s, NULL, &unknown, NULL, 0, &mg, &nm, NULL, NULL),
             REAP_E_NOTFOUND);

    /* Runs: begin, commit (stats + run in one transaction), finish, list. */
    reap_run_info run;
    reap_id c4;
    fake_id(&c4, 14);
    /* An id made in advance (the scorer service makes it at submission) is the record's.
     * Ids are random, so the 8-hex-digit prefixes a person types differ even for ids made
     * back to back (a time-first id gave 200 ids made in a row one prefix; 200 random
     * ones share a 32-bit prefix with probability 5e-6). */
    uint8_t want_id[16], id2[16];
    enum { N_IDS = 200 };
    static uint8_t many_ids[N_IDS][16];
    int prefix_clash = 0;
    for (int i = 0; i < N_IDS; i++) {
        reap_run_id_new(many_ids[i]);
        for (int j = 0; j < i; j++)
            prefix_clash += !memcmp(many_ids[i], many_ids[j], 4);
    }
    CHECK(prefix_clash == 0);
    reap_run_id_new(want_id);
    reap_run_id_new(id2);
    CHECK(memcmp(want_id, id2, 16) != 0);
    CHECK_RC(reap_store_run_begin(s, want_id, &m, &c4, 3, 0, "cpu", "cpu:0", "{\"x\": 1}", &run), REAP_OK);
    CHECK(!memcmp(run.run_id, want_id, 16));
    CHECK_RC(reap_store_run_commit_layer(s, &run, 0, 0.5, &b[0], &oc), REAP_OK);
    CHECK(oc == REAP_STATS_WRITTEN && run.layers_done == 1);
    CHECK_RC(reap_store_run_commit_layer(s, &run, 1, 0.25, &b[2], &oc), REAP_E_INVALID);
    CHECK_RC(reap_store_run_commit_layer(s, &run, 1, 0.25, &b[1], &oc), REAP_OK);
    reap_run_info got_run;
    CHECK_RC(reap_store_run_get(s, NULL, run.run_id, &got_run), REAP_OK);
    CHECK(got_run.layers_done == 2 && got_run.state == REAP_RUN_RUNNING &&
          got_run.n_layer_seconds == 2 && got_run.layer_seconds[1] == 0.25);
    reap_run_info_free(&got_run);
    CHECK_RC(reap_store_run_finish(s, &run, REAP_RUN_FAILED, "disk on fire"), REAP_OK);
    /* Runs list in the order they started, whatever their ids: three more, begun in turn
     * with ids made in descending order. */
    uint8_t later_id[3][16];
    reap_run_info later[3];
    for (int i = 0; i < 3; i++) {
        nanosleep(&(struct timespec){0, 2000000}, NULL); /* distinct start times */
        memset(later_id[i], 0xf0 - 0x10 * i, 16);
        CHECK_RC(reap_store_run_begin(s, later_id[i], &m, &c4, 3, 0, "cpu", NULL, NULL, &later[i]),
                 REAP_OK);
        CHECK_RC(reap_store_run_finish(s, &later[i], REAP_RUN_CANCELLED, NULL), REAP_OK);
        reap_run_info_free(&later[i]);
    }
    reap_run_info *runs = NULL;
    int nr = 0;
    CHECK_RC(reap_store_run_list(s, NULL, &runs, &nr), REAP_OK);
    CHECK(nr == 4 && runs[0].state == REAP_RUN_FAILED && !strcmp(runs[0].error, "disk on fire"));
    CHECK(nr == 4 && !memcmp(runs[0].run_id, want_id, 16));
    CHECK(nr == 4 && runs[0].request && !strcmp(runs[0].request, "{\"x\": 1}") &&
          !runs[1].request);
    for (int i = 1; i < nr; i++) {
        CHECK(!memcmp(runs[i].run_id, later_id[i - 1], 16));
        CHECK(runs[i].started_unix_ns >= runs[i - 1].started_unix_ns);
    }
    for (int i = 0; i < nr; i++)
        reap_run_info_free(&runs[i]);
    free(runs);
    reap_run_info_free(&run);

    /* Interrupted runs (the caller holds the pair's lock): a record of another host and
     * PID namespace (pid 1 on "elsewhere") is dead, one of this process is not, another
     * pair's is not looked at. */
    reap_run_info mine, theirs, other_pair;
    reap_id c5;
    fake_id(&c5, 15);
    int lock = -1, n_marked = -1;
    CHECK_RC(reap_store_run_begin(s, NULL, &m, &c4, 3, 0, "cpu", NULL, NULL, &mine), REAP_OK);
    CHECK_RC(reap_store_run_begin(s, NULL, &m, &c4, 3, 0, "cpu", NULL, NULL, &theirs), REAP_OK);
    CHECK_RC(reap_store_run_begin(s, NULL, &m, &c5, 3, 0, "cpu", NULL, NULL, &other_pair),
             REAP_OK);
    theirs.pid = 1;
    free(theirs.host);
    theirs.host = strdup("elsewhere");
    other_pair.pid = 1;
    CHECK_RC(reap_store_run_commit_layer(s, &theirs, 0, 0.1, NULL, NULL), REAP_OK);
    CHECK_RC(reap_store_run_commit_layer(s, &other_pair, 0, 0.1, NULL, NULL), REAP_OK);
    CHECK_RC(reap_store_pair_lock(s, &m, &c4, &lock), REAP_OK);
    CHECK_RC(reap_store_run_mark_interrupted(s, &m, &c4, &n_marked), REAP_OK);
    reap_store_pair_unlock(lock);
    CHECK(n_marked == 1);
    reap_run_info got_mine, got_theirs, got_other;
    CHECK_RC(reap_store_run_get(s, NULL, mine.run_id, &got_mine), REAP_OK);
    CHECK_RC(reap_store_run_get(s, NULL, theirs.run_id, &got_theirs), REAP_OK);
    CHECK_RC(reap_store_run_get(s, NULL, other_pair.run_id, &got_other), REAP_OK);
    CHECK(got_mine.state == REAP_RUN_RUNNING && got_other.state == REAP_RUN_RUNNING);
    CHECK(got_theirs.state == REAP_RUN_FAILED && got_theirs.error &&
          !strcmp(got_theirs.error, "interrupted: process 1 on elsewhere is gone"));
    CHECK_RC(reap_store_run_finish(s, &mine, REAP_RUN_CANCELLED, NULL), REAP_OK);
    CHECK_RC(reap_store_run_finish(s, &other_pair, REAP_RUN_CANCELLED, NULL), REAP_OK);
    reap_run_info_free(&got_mine);
    reap_run_info_free(&got_theirs);
    reap_run_info_free(&got_other);
    reap_run_info_free(&mine);
    reap_run_info_free(&theirs);
    reap_run_info_free(&other_pair);

    uint64_t checked = 0;
    CHECK_RC(reap_store_verify(s, &checked), REAP_OK);
    CHECK(checked == 1 + 3 + 3 + 2 + 2 + 7); /* model, c1, c2, c3, c4 stats, 7 runs */
    reap_store_close(s);
    s = NULL;

    /* A damaged value and a future-version value: clear errors, no crash. */
    uint8_t key[68];
    memcpy(key, m.b, 32);
    memcpy(key + 32, c2.b, 32);
    key[64] = key[65] = key[66] = 0;
    key[67] = 1;
    CHECK(raw_flip(dir, "stats", key, sizeof key, 200) == 0);
    key[67] = 2;
    const uint8_t future[] = {0x08, 7};
    CHECK(raw_put(dir, "stats", key, sizeof key, future, sizeof future) == 0);
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_OK);
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &c2, 1, &got), REAP_E_FORMAT);
    CHECK_ERRMSG("layer 1");
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &c2, 2, &got), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("newer reap");
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, &c2, 1, &mg, &nm, NULL, NULL), REAP_E_FORMAT);
    CHECK(reap_store_verify(s, NULL) != REAP_OK);
    reap_store_close(s);
    for (int l = 0; l < 3; l++) {
        reap_layer_stats_free(&a[l]);
        reap_layer_stats_free(&b[l]);
        reap_layer_stats_free(&d[l]);
    }
}

static void test_growth_and_readonly(void)
{
    char dir[1024];
    reap_store *s = NULL;
    reap_store_opts tiny = {.create = 1, .map_size = 64 << 10}, ro = {.readonly = 1};
    reap_id m, c;
    spath(dir, sizeof dir, "growth");
    CHECK_RC(reap_store_open(dir, &tiny, &s), REAP_OK);
    if (!s)
        return;
    size_t before = reap_store_map_size(s);
    fake_id(&m, 20);
    fake_id(&c, 21);
    CHECK_RC(put_model(s, &m, 60, 256), REAP_OK);
    reap_layer_stats st[60];
    for (int l = 0; l < 60; l++) {
        make_stats(&st[l], l, 256, 8);
        CHECK_RC(reap_store_stats_put(s, &m, &c, &st[l], "cpu", NULL), REAP_OK);
    }
    size_t after = reap_store_map_size(s);
    CHECK_MSG(after > before && after >= (size_t)60 * 256 * 36, "map %zu -> %zu", before,
              after);
    printf("map growth: %zu KiB -> %zu KiB for 60 records of 256 experts\n", before >> 10,
           after >> 10);
    reap_store_close(s);
    s = NULL;

    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_OK);
    if (!s)
        return;
    for (int l = 0; l < 60; l++) {
        reap_layer_stats got;
        CHECK_RC(reap_store_stats_get(s, NULL, &m, &c, l, &got), REAP_OK);
        CHECK(reap_stats_identical(&got, &st[l]));
        reap_layer_stats_free(&got);
    }
    CHECK_RC(reap_store_stats_put(s, &m, &c, &st[0], "cpu", NULL), REAP_E_INVALID);
    CHECK_ERRMSG("read-only");
    reap_store_counts counts;
    CHECK_RC(reap_store_count(s, NULL, &counts), REAP_OK);
    CHECK(counts.stats == 60 && counts.models == 1);
    reap_store_close(s);
    for (int l = 0; l < 60; l++)
        reap_layer_stats_free(&st[l]);
}

/* The checkpoints reap_hidden_ckpt_load passes over: the last one's path and reason. */
typedef struct rejects {
    int n;
    char path[2048], why[256];
} rejects;

static void collect_reject(void *ud, const char *path, const char *why)
{
    rejects *r = ud;
    r->n++;
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->why, sizeof r->why, "%s", why);
}

static void test_hidden_ckpt(void)
{
    rejects rj = {0};
    char dir[1024], p[2048];
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1};
    reap_id m, c;
    const int64_t T = 37;
    const int H = 24;
    float *h1 = malloc(sizeof(float) * T * H), *h3 = malloc(sizeof(float) * T * H), *got;
    int layer;
    for (int64_t i = 0; i < T * H; i++) {
        h1[i] = (float)rng_unif();
        h3[i] = -(float)rng_unif();
    }
    spath(dir, sizeof dir, "ckpt");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    fake_id(&m, 30);
    fake_id(&c, 31);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 10, T, H, NULL, NULL, &layer, &got), REAP_E_NOTFOUND);
    CHECK_RC(reap_hidden_ckpt_write(s, &m, &c, 1, h1, T, H), REAP_OK);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 10, T, H, NULL, NULL, &layer, &got), REAP_OK);
    CHECK(layer == 1 && got && !memcmp(got, h1, sizeof(float) * T * H));
    free(got);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 0, T, H, NULL, NULL, &layer, &got), REAP_E_NOTFOUND);
    rj.n = 0;
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 10, T, H + 1, collect_reject, &rj, &layer, &got),
             REAP_E_NOTFOUND);
    /* another shape: passed over, and said (the header tells it from a cut-short file) */
    CHECK_MSG(rj.n == 1 && strstr(rj.path, "layer-00001.bin") &&
                  strstr(rj.why, "37 tokens x hidden 24, this run has 37 x 25"),
              "shape: %d rejections, %s: %s", rj.n, rj.path, rj.why);
    reap_id other;
    fake_id(&other, 32);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &other, 10, T, H, NULL, NULL, &layer, &got),
             REAP_E_NOTFOUND);
    /* A newer checkpoint replaces the older one. */
    CHECK_RC(reap_hidden_ckpt_write(s, &m, &c, 3, h3, T, H), REAP_OK);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 2, T, H, NULL, NULL, &layer, &got), REAP_E_NOTFOUND);
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 3, T, H, NULL, NULL, &layer, &got), REAP_OK);
    CHECK(layer == 3 && got && !memcmp(got, h3, sizeof(float) * T * H));
    free(got);
    /* A damaged checkpoint is not used. */
    char mh[65], ch[65];
    reap_id_hex(&m, mh);
    reap_id_hex(&c, ch);
    snprintf(p, sizeof p, "%s/checkpoints/%s-%s/layer-00003.bin", dir, mh, ch);
    int fd = open(p, O_RDWR);
    uint8_t byte;
    CHECK(pread(fd, &byte, 1, 500) == 1);
    byte ^= 1;
    CHECK(pwrite(fd, &byte, 1, 500) == 1);
    close(fd);
    rj.n = 0;
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 3, T, H, collect_reject, &rj, &layer, &got),
             REAP_E_NOTFOUND);
    /* ... and said: the file and what is wrong with it. */
    CHECK_MSG(rj.n == 1 && !strcmp(rj.path, p) && strstr(rj.why, "digest (damaged)"),
              "damaged: %d rejections, %s: %s", rj.n, rj.path, rj.why);
    /* Cut short: said too. */
    CHECK(truncate(p, 1000) == 0);
    rj.n = 0;
    CHECK_RC(reap_hidden_ckpt_load(s, &m, &c, 3, T, H, collect_reject, &rj, &layer, &got),
             REAP_E_NOTFOUND);
    CHECK_MSG(rj.n == 1 && !strcmp(rj.path, p) && strstr(rj.why, "1000 bytes") &&
                  strstr(rj.why, "cut short"), "short: %d rejections, %s: %s", rj.n, rj.path,
              rj.why);
    CHECK_RC(reap_hidden_ckpt_clear(s, &m, &c), REAP_OK);
    CHECK(access(p, F_OK) != 0);
    /* One scoring run per pair: a second lock fails at once, naming the holder. */
    int l1 = -1, l2 = -1, l3 = -1;
    CHECK_RC(reap_store_pair_lock(s, &m, &c, &l1), REAP_OK);
    CHECK_RC(reap_store_pair_lock(s, &m, &c, &l2), REAP_E_CONFLICT);
    char pid[32];
    snprintf(pid, sizeof pid, "process %ld", (long)getpid());
    CHECK_ERRMSG(pid);
    CHECK_RC(reap_store_pair_lock(s, &m, &other, &l3), REAP_OK);
    reap_store_pair_unlock(l1);
    reap_store_pair_unlock(l3);
    CHECK_RC(reap_store_pair_lock(s, &m, &c, &l2), REAP_OK);
    reap_store_pair_unlock(l2);
    reap_store_close(s);
    free(h1);
    free(h3);
}

/* A commit whose write fails. LMDB reports a short write as EIO; the store says why.
 * For real: a child process whose file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets)
 * is half a page past data.mdb's end commits until LMDB has to grow the file: the write
 * is cut short, LMDB says EIO, and the message names data.mdb and the limit, not
 * "Input/output error"; the store is intact after.
 * A full file system cannot be made here without mounting one, so the same rule for it
 * (ENOSPC, or EIO with under 1 MiB free) is checked on store_commit_err with the facts
 * a full disk shows. */
static void test_write_full(void)
{
    char dir[1024], data[1100];
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1};
    reap_id m, c;
    struct stat st;
    spath(dir, sizeof dir, "full");
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    if (!s)
        return;
    fake_id(&m, 40);
    fake_id(&c, 41);
    CHECK_RC(put_model(s, &m, 64, 2048), REAP_OK);
    reap_store_close(s);
    s = NULL;

    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char msg[1024] = "";
        int rc = REAP_OK, l;
        close(pfd[0]);
        signal(SIGXFSZ, SIG_IGN);
        if (reap_store_open(dir, NULL, &s) != REAP_OK || stat(data, &st) != 0)
            _exit(2);
        /* Half a page past the end: LMDB's next write that grows the file is cut short,
         * which it reports as EIO (as on a file system that runs full mid-write). */
        struct rlimit rl = {(rlim_t)st.st_size + 2048, RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(3);
        for (l = 0; l < 64 && rc == REAP_OK; l++) {
            reap_layer_stats ls;
            if (make_stats(&ls, l, 2048, 8))
                _exit(4);
            rc = reap_store_stats_put(s, &m, &c, &ls, "cpu", NULL);
            reap_layer_stats_free(&ls);
        }
        snprintf(msg, sizeof msg, "%d %d %s", rc, l, rc ? reap_err_msg() : "");
        if (write(pfd[1], msg, strlen(msg)) < 0)
            _exit(5);
        reap_store_close(s);
        _exit(0);
    }
    close(pfd[1]);
    char got[1024] = "";
    ssize_t n = read(pfd[0], got, sizeof got - 1);
    got[n > 0 ? n : 0] = 0;
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    printf("commit over the file-size limit: %s\n", got);
    CHECK_MSG(strstr(got, "data.mdb reached the file size limit") && strstr(got, dir) &&
                  !strstr(got, "Input/output error"),
              "message: %s", got);
    /* The failed transaction left nothing behind: the store opens and checks clean. */
    uint64_t n_checked = 0;
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_OK);
    if (!s)
        return;
    CHECK_RC(reap_store_verify(s, &n_checked), REAP_OK);
    CHECK(n_checked >= 1);

    /* A full file system: ENOSPC as such, or LMDB's EIO with (almost) nothing free. */
    store_write_facts full = {.free_bytes = 4096, .fsize_limit = UINT64_MAX,
                              .data_size = 1 << 20, .page_size = 4096};
    store_write_facts roomy = full;
    roomy.free_bytes = (uint64_t)50 << 30;
    reap_err_clear();
    CHECK_RC(store_commit_err(s, EIO, &full), REAP_E_IO);
    CHECK_ERRMSG("commit: no space left on device (4096 bytes free on the file system");
    CHECK_ERRMSG(dir);
    CHECK_RC(store_commit_err(s, ENOSPC, &roomy), REAP_E_IO);
    CHECK_ERRMSG("no space left on device");
    /* A failing disk with room left stays an I/O error. */
    CHECK_RC(store_commit_err(s, EIO, &roomy), REAP_E_IO);
    CHECK_ERRMSG("Input/output error");
    CHECK(!strstr(reap_err_msg(), "no space"));
    store_write_facts limited = roomy;
    limited.fsize_limit = 1 << 20;
    CHECK_RC(store_commit_err(s, EIO, &limited), REAP_E_IO);
    CHECK_ERRMSG("file size limit of 1048576 bytes");
    reap_store_close(s);
}

/* ---- statistics by modality ------------------------------------------------------------ */

/* Give st (from make_stats) text and image sets, totals = text + image. */
static void add_modalities(reap_layer_stats *st)
{
    reap_modality_stats *t = &st->mod[REAP_MOD_TEXT], *im = &st->mod[REAP_MOD_IMAGE];
    t->tokens = st->tokens - 37;
    im->tokens = 37;
    for (int e = 0; e < st->n_experts; e++) {
        if (st->count[e] == 0)
            continue;
        im->count[e] = e % 3 == 0 ? 0 : st->count[e] / 3;
        t->count[e] = st->count[e] - im->count[e];
        im->sum_gate_norm[e] = im->count[e] ? rng_unif() * 10 : 0.0;
        im->sum_norm[e] = im->count[e] ? rng_unif() * 30 : 0.0;
        im->sum_gate[e] = im->count[e] ? rng_unif() * 5 : 0.0;
        im->max_act[e] = im->count[e] ? (float)(rng_unif() * 20 - 5) : -INFINITY;
        t->sum_gate_norm[e] = rng_unif() * 100;
        t->sum_norm[e] = rng_unif() * 300;
        t->sum_gate[e] = rng_unif() * 50;
        t->max_act[e] = (float)(rng_unif() * 20 - 5);
        st->sum_gate_norm[e] = t->sum_gate_norm[e] + im->sum_gate_norm[e];
        st->sum_norm[e] = t->sum_norm[e] + im->sum_norm[e];
        st->sum_gate[e] = t->sum_gate[e] + im->sum_gate[e];
        st->max_act[e] = fmaxf(t->max_act[e], im->max_act[e]);
    }
}

/* The record digest as written before modalities existed (fields 2-12), here on its own. */
static void old_record_digest(const reap_id *m, const reap_id *c, const reap_layer_stats *st,
                              uint8_t out[32])
{
    crypto_generichash_state h;
    uint8_t b[36];
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)"reap-stats/1", 12);
    crypto_generichash_update(&h, m->b, 32);
    crypto_generichash_update(&h, c->b, 32);
    const uint64_t head[4] = {(uint64_t)st->layer, (uint64_t)st->n_experts,
                              (uint64_t)st->top_k, (uint64_t)st->tokens};
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < (k < 3 ? 4 : 8); j++)
            b[k * 4 + j] = (uint8_t)(head[k] >> (8 * j));
    crypto_generichash_update(&h, b, 20);
    for (int e = 0; e < st->n_experts; e++) {
        uint64_t w[4];
        uint32_t f;
        w[0] = (uint64_t)st->count[e];
        memcpy(&w[1], &st->sum_gate_norm[e], 8);
        memcpy(&w[2], &st->sum_norm[e], 8);
        memcpy(&w[3], &st->sum_gate[e], 8);
        memcpy(&f, &st->max_act[e], 4);
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 8; j++)
                b[8 * k + j] = (uint8_t)(w[k] >> (8 * j));
        for (int j = 0; j < 4; j++)
            b[32 + j] = (uint8_t)(f >> (8 * j));
        crypto_generichash_update(&h, b, 36);
    }
    crypto_generichash_final(&h, out, 32);
}

static void test_modality_records(void)
{
    char dir[1024];
    reap_store *s = NULL;
    reap_store_opts create = {.create = 1};
    reap_id m, ct, ci;
    reap_layer_stats txt[2], img[2], got;
    spath(dir, sizeof dir, "modality");
    CHECK_RC(reap_store_open(dir, &create, &s), REAP_OK);
    if (!s)
        return;
    fake_id(&m, 40);
    fake_id(&ct, 41);
    fake_id(&ci, 42);
    CHECK_RC(put_model(s, &m, 2, 12), REAP_OK);
    for (int l = 0; l < 2; l++) {
        make_stats(&txt[l], l, 12, 2);
        make_stats(&img[l], l, 12, 2);
        add_modalities(&img[l]);
        CHECK_RC(reap_store_stats_put(s, &m, &ct, &txt[l], "cpu", NULL), REAP_OK);
        CHECK_RC(reap_store_stats_put(s, &m, &ci, &img[l], "cpu", NULL), REAP_OK);
    }
    /* round trip: the image sets come back bit for bit */
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &ci, 1, &got), REAP_OK);
    CHECK(reap_layer_stats_has_image(&got));
    CHECK(reap_stats_identical(&got, &img[1]));
    CHECK(got.mod[REAP_MOD_IMAGE].tokens == 37 &&
          got.mod[REAP_MOD_IMAGE].count[1] == img[1].mod[REAP_MOD_IMAGE].count[1] &&
          got.mod[REAP_MOD_TEXT].max_act[2] == img[1].mod[REAP_MOD_TEXT].max_act[2]);
    reap_layer_stats_free(&got);
    CHECK_RC(reap_store_stats_get(s, NULL, &m, &ct, 1, &got), REAP_OK);
    CHECK(!reap_layer_stats_has_image(&got));
    CHECK(reap_stats_identical(&got, &txt[1]));
    reap_layer_stats_free(&got);

    /* the merged view of a text-only set and an image set: exact per set */
    reap_layer_stats *mg = NULL;
    int nm = 0;
    CHECK_RC(reap_store_stats_merged(s, NULL, &m, NULL, 0, &mg, &nm, NULL, NULL), REAP_OK);
    CHECK(nm == 2);
    for (int l = 0; l < nm; l++) {
        const reap_modality_stats *t = &mg[l].mod[REAP_MOD_TEXT],
                                  *im = &mg[l].mod[REAP_MOD_IMAGE];
        CHECK(reap_layer_stats_has_image(&mg[l]));
        CHECK(im->tokens == 37 && t->tokens == txt[l].tokens + img[l].tokens - 37);
        CHECK(mg[l].tokens == t->tokens + im->tokens);
        for (int e = 0; e < 12; e++) {
            CHECK(im->count[e] == img[l].mod[REAP_MOD_IMAGE].count[e]);
            CHECK(t->count[e] == txt[l].count[e] + img[l].mod[REAP_MOD_TEXT].count[e]);
            CHECK(mg[l].count[e] == t->count[e] + im->count[e]);
            CHECK(t->max_act[e] == fmaxf(txt[l].max_act[e],
                                         img[l].mod[REAP_MOD_TEXT].max_act[e]));
            CHECK(im->sum_gate_norm[e] == img[l].mod[REAP_MOD_IMAGE].sum_gate_norm[e]);
        }
        reap_layer_stats_free(&mg[l]);
    }
    free(mg);

    /* a text-only record carries no modality fields and has the old digest */
    uint8_t *buf = NULL, want[32];
    size_t len = 0;
    txt[0].mod[REAP_MOD_TEXT].count[1] = 77;   /* stale arrays do not leak into it */
    CHECK_RC(rec_stats_encode(&m, &ct, &txt[0], "cpu", 1, &buf, &len), REAP_OK);
    Reap__Store__V1__LayerStatsRecord *r =
        buf ? reap__store__v1__layer_stats_record__unpack(NULL, len, buf) : NULL;
    CHECK(r != NULL);
    old_record_digest(&m, &ct, &txt[0], want);
    if (r) {
        CHECK(r->text == NULL && r->image == NULL);
        CHECK(r->digest.len == 32 && !memcmp(r->digest.data, want, 32));
        reap__store__v1__layer_stats_record__free_unpacked(r, NULL);
    }
    free(buf);
    /* an old record (fields 1-16, as written before): decodes as no image tokens */
    {
        Reap__Store__V1__LayerStatsRecord o = REAP__STORE__V1__LAYER_STATS_RECORD__INIT;
        o.format_version = REAP_STORE_FORMAT_VERSION;
        o.model_id = (ProtobufCBinaryData){32, m.b};
        o.calib_id = (ProtobufCBinaryData){32, ct.b};
        o.layer = 0;
        o.n_experts = 12;
        o.top_k = 2;
        o.tokens = txt[0].tokens;
        o.n_count = o.n_sum_gate_norm = o.n_sum_norm = o.n_sum_gate = o.n_max_act = 12;
        o.count = txt[0].count;
        o.sum_gate_norm = txt[0].sum_gate_norm;
        o.sum_norm = txt[0].sum_norm;
        o.sum_gate = txt[0].sum_gate;
        o.max_act = txt[0].max_act;
        o.digest = (ProtobufCBinaryData){32, want};
        len = reap__store__v1__layer_stats_record__get_packed_size(&o);
        buf = malloc(len);
        reap__store__v1__layer_stats_record__pack(&o, buf);
        CHECK_RC(rec_stats_decode(buf, len, NULL, "old record", &got, NULL, NULL, NULL, NULL),
                 REAP_OK);
        CHECK(!reap_layer_stats_has_image(&got));
        CHECK(reap_stats_identical(&got, &txt[0]));
        reap_layer_stats_free(&got);
        free(buf);
    }
    /* an image record whose image set was altered fails its digest */
    CHECK_RC(rec_stats_encode(&m, &ci, &img[0], "cpu", 1, &buf, &len), REAP_OK);
    r = buf ? reap__store__v1__layer_stats_record__unpack(NULL, len, buf) : NULL;
    CHECK(r && r->image && r->text && r->image->n_count == 12);
    free(buf);
    buf = NULL;
    if (r && r->image) {
        r->image->max_act[1] += 1.0f;
        len = reap__store__v1__layer_stats_record__get_packed_size(r);
        buf = malloc(len);
        reap__store__v1__layer_stats_record__pack(r, buf);
        CHECK_RC(rec_stats_decode(buf, len, NULL, "altered", NULL, NULL, NULL, NULL, NULL),
                 REAP_E_FORMAT);
        CHECK_ERRMSG("fails its digest");
        /* one modality of two: refused */
        Reap__Store__V1__ModalityStats *keep_text = r->text;
        r->text = NULL;
        free(buf);
        len = reap__store__v1__layer_stats_record__get_packed_size(r);
        buf = malloc(len);
        reap__store__v1__layer_stats_record__pack(r, buf);
        CHECK_RC(rec_stats_decode(buf, len, NULL, "half", NULL, NULL, NULL, NULL, NULL),
                 REAP_E_FORMAT);
        CHECK_ERRMSG("one modality of two");
        r->text = keep_text;
    }
    free(buf);
    if (r)
        reap__store__v1__layer_stats_record__free_unpacked(r, NULL);
    for (int l = 0; l < 2; l++) {
        reap_layer_stats_free(&txt[l]);
        reap_layer_stats_free(&img[l]);
    }
    reap_store_close(s);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "/tmp/test_store";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_ids();
    test_open_refusals();
    test_records();
    test_growth_and_readonly();
    test_hidden_ckpt();
    test_write_full();
    test_modality_records();
    TEST_MAIN_END();
}

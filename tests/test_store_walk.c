/* test_store_walk.c - the store's one cursor walk (store_walk, store_impl.h) and the
 * list growth its collectors share (store_list_room): an empty database, a whole
 * database in key order, prefix boundaries (the keys just before and just past a prefix,
 * a key equal to the prefix, a key shorter than it), a key of the wrong size, a callback
 * that stops the walk early and one that fails; the list functions built on the walk
 * (models, runs) on an empty store. */
#include <lmdb.h>
#include <sys/stat.h>

#include "catalog.h"
#include "runs.h"
#include "store.h"
#include "store_impl.h"
#include "test_store_util.h"
#include "test_util.h"

/* Keys of one walk, as text (the test's keys are printable). */
typedef struct seen {
    char keys[16][16];
    int n;
    int stop_after;   /* > 0: return STORE_WALK_STOP at this many records */
    int fail_after;   /* > 0: return REAP_E_FORMAT at this many records */
} seen;

static int collect(void *ud, const MDB_val *k, const MDB_val *v)
{
    seen *s = ud;
    (void)v;
    if (s->n < 16 && k->mv_size < 16) {
        memcpy(s->keys[s->n], k->mv_data, k->mv_size);
        s->keys[s->n][k->mv_size] = 0;
    }
    s->n++;
    if (s->stop_after && s->n == s->stop_after)
        return STORE_WALK_STOP;
    if (s->fail_after && s->n == s->fail_after)
        return reap_err_set(REAP_E_FORMAT, "stopped at %d", s->n);
    return REAP_OK;
}

static int walk_klen(reap_store *st, MDB_dbi dbi, const char *prefix, size_t klen,
                     seen *out)
{
    MDB_txn *txn;
    int rc = store_txn_begin(st, 0, &txn);
    if (rc)
        return rc;
    rc = store_walk(st, txn, dbi, prefix, prefix ? strlen(prefix) : 0, klen, "prunes",
                    collect, out);
    store_txn_abort(st, txn);
    return rc;
}

static int walk(reap_store *st, MDB_dbi dbi, const char *prefix, seen *out)
{
    return walk_klen(st, dbi, prefix, 0, out);
}

/* In key order (bytewise): "a", "ab", "ab\x01", "abz", "ac", "b". */
static const char *const keys[] = {"ac", "ab", "b", "abz", "a", "ab\x01"};

static int put_keys(reap_store *st, MDB_txn *txn, void *ud)
{
    (void)ud;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        int rc = store_put(st, txn, st->db_prunes, keys[i], strlen(keys[i]), "v", 1, 0);
        if (rc)
            return rc;
    }
    return REAP_OK;
}

static void test_walk(void)
{
    char dir[4200];
    reap_store_opts o = {.create = 1};
    reap_store *st = NULL;
    seen s;
    spath(dir, sizeof dir, "walk");
    CHECK_RC(reap_store_open(dir, &o, &st), REAP_OK);
    if (!st)
        return;

    /* An empty database: no call, REAP_OK, with and without a prefix. */
    memset(&s, 0, sizeof s);
    CHECK_RC(walk(st, st->db_prunes, NULL, &s), REAP_OK);
    CHECK(s.n == 0);
    CHECK_RC(walk(st, st->db_prunes, "ab", &s), REAP_OK);
    CHECK(s.n == 0);

    CHECK_RC(store_write(st, put_keys, NULL), REAP_OK);

    /* Everything, in key order. */
    memset(&s, 0, sizeof s);
    CHECK_RC(walk(st, st->db_prunes, NULL, &s), REAP_OK);
    CHECK(s.n == 6);
    CHECK(!strcmp(s.keys[0], "a") && !strcmp(s.keys[1], "ab") &&
          !strcmp(s.keys[2], "ab\x01") && !strcmp(s.keys[3], "abz") &&
          !strcmp(s.keys[4], "ac") && !strcmp(s.keys[5], "b"));

    /* Prefix "ab": the key equal to it and those that extend it; not "a" (shorter, just
     * before) nor "ac" (just past). */
    memset(&s, 0, sizeof s);
    CHECK_RC(walk(st, st->db_prunes, "ab", &s), REAP_OK);
    CHECK_MSG(s.n == 3, "%d records", s.n);
    CHECK(!strcmp(s.keys[0], "ab") && !strcmp(s.keys[1], "ab\x01") &&
          !strcmp(s.keys[2], "abz"));

    /* A prefix past every key, and one between keys that no key starts with. */
    memset(&s, 0, sizeof s);
    CHECK_RC(walk(st, st->db_prunes, "c", &s), REAP_OK);
    CHECK(s.n == 0);
    CHECK_RC(walk(st, st->db_prunes, "aa", &s), REAP_OK);
    CHECK(s.n == 0);

    /* The last key as prefix: the walk ends at the end of the database. */
    CHECK_RC(walk(st, st->db_prunes, "b", &s), REAP_OK);
    CHECK(s.n == 1 && !strcmp(s.keys[0], "b"));

    /* The callback stops the walk: REAP_OK, no further call. */
    memset(&s, 0, sizeof s);
    s.stop_after = 2;
    CHECK_RC(walk(st, st->db_prunes, NULL, &s), REAP_OK);
    CHECK(s.n == 2);

    /* The callback fails: its code comes back, no further call. */
    memset(&s, 0, sizeof s);
    s.fail_after = 1;
    CHECK_RC(walk(st, st->db_prunes, "ab", &s), REAP_E_FORMAT);
    CHECK(s.n == 1);
    CHECK_ERRMSG("stopped at 1");

    /* A key size: keys of "ab" of two bytes pass; "ab\x01" (three) ends the walk. */
    memset(&s, 0, sizeof s);
    CHECK_RC(walk_klen(st, st->db_prunes, "ab", 2, &s), REAP_E_FORMAT);
    CHECK(s.n == 1);
    CHECK_ERRMSG("prunes: key of 3 bytes (want 2)");

    /* The lists built on the walk, on databases with no record. */
    reap_id *ids = (reap_id *)&s;
    reap_run_info *runs = (reap_run_info *)&s;
    int n = -1;
    CHECK_RC(reap_store_model_list(st, NULL, &ids, &n), REAP_OK);
    CHECK(n == 0 && ids == NULL);
    n = -1;
    CHECK_RC(reap_store_run_list(st, NULL, &runs, &n), REAP_OK);
    CHECK(n == 0 && runs == NULL);
    reap_store_close(st);
}

static void test_list_room(void)
{
    int *v = NULL, cap = 0;
    CHECK_RC(store_list_room(NULL, &v, &cap, 0, sizeof *v, "ints"), REAP_OK);
    CHECK(v != NULL && cap == 16);
    for (int i = 0; i < 40; i++) {
        CHECK_RC(store_list_room(NULL, &v, &cap, i, sizeof *v, "ints"), REAP_OK);
        v[i] = i;   /* ASan: every index below cap is inside the allocation */
    }
    CHECK(cap == 64);
    CHECK(v[39] == 39 && v[16] == 16);
    int *before = v;
    CHECK_RC(store_list_room(NULL, &v, &cap, 10, sizeof *v, "ints"), REAP_OK);
    CHECK(v == before && cap == 64);
    free(v);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_walk";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_walk();
    test_list_room();
    TEST_MAIN_END();
}

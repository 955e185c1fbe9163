/* test_run_record.c - a run record says whether the run was interrupted as a field
 * (RunRecord.stop), not in its error text: the flag round-trips through the encoding
 * whatever the error says (a failure whose message starts with "interrupted" is not an
 * interruption, an interruption with any message is), reap_store_run_mark_interrupted
 * sets it, and records written before the field existed (stop UNSPECIFIED) are read by
 * their error text, the one place that reads it. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "records.h"
#include "reap_err.h"
#include "reap_store.pb-c.h"
#include "hidden_ckpt.h"
#include "runs.h"
#include "store.h"
#include "test_store_util.h"
#include "test_util.h"

/* A run record with the given state, error and flag, encoded and decoded again. */
static int round_trip(int state, const char *error, int interrupted)
{
    reap_run_info r = {0}, got = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    r.run_id[0] = 7;
    r.state = state;
    r.n_layers = 3;
    r.error = (char *)error;
    r.interrupted = interrupted;
    CHECK_RC(rec_run_encode(&r, &buf, &len), REAP_OK);
    CHECK_RC(rec_run_decode(buf, len, r.run_id, "test run", &got), REAP_OK);
    int out = got.interrupted;
    CHECK(got.state == state && !strcmp(got.error ? got.error : "", error ? error : ""));
    reap_run_info_free(&got);
    free(buf);
    return out;
}

/* A record as versions before RunRecord.stop wrote it (no stop field). */
static int legacy(int state, const char *error)
{
    Reap__Store__V1__RunRecord m = REAP__STORE__V1__RUN_RECORD__INIT;
    uint8_t id[16] = {9}, model[32] = {0}, calib[32] = {0};
    reap_run_info got = {0};
    m.format_version = 1;
    m.run_id = (ProtobufCBinaryData){16, id};
    m.model_id = (ProtobufCBinaryData){32, model};
    m.calib_id = (ProtobufCBinaryData){32, calib};
    m.state = (Reap__Store__V1__RunState)state;
    m.n_layers = 3;
    m.error = (char *)error;
    size_t len = protobuf_c_message_get_packed_size(&m.base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&m.base, buf);
    CHECK_RC(rec_run_decode(buf, len, id, "legacy run", &got), REAP_OK);
    int out = got.interrupted;
    reap_run_info_free(&got);
    free(buf);
    return out;
}

static void test_encoding(void)
{
    CHECK(round_trip(REAP_RUN_CANCELLED, "the server shut down after layer 1", 1) == 1);
    CHECK(round_trip(REAP_RUN_FAILED, "interrupted system call reading a shard", 0) == 0);
    CHECK(round_trip(REAP_RUN_CANCELLED, "interrupted: looks like one, is not", 0) == 0);
    CHECK(round_trip(REAP_RUN_FAILED, NULL, 1) == 1);
    CHECK(round_trip(REAP_RUN_DONE, NULL, 0) == 0);
    CHECK(legacy(REAP_RUN_FAILED, "interrupted: process 1 on elsewhere is gone") == 1);
    CHECK(legacy(REAP_RUN_CANCELLED, "interrupted: the server shut down after layer 0") == 1);
    CHECK(legacy(REAP_RUN_FAILED, "disk on fire") == 0);
    CHECK(legacy(REAP_RUN_DONE, "interrupted") == 0);
}

/* mark_interrupted: the dead process's record becomes FAILED and interrupted. */
static void test_mark(const char *dir)
{
    reap_store *s = NULL;
    reap_store_opts o = {.create = 1};
    reap_id m, c;
    reap_run_info dead, got;
    int n_marked = 0, lock = -1;
    memset(&m, 1, sizeof m);
    memset(&c, 2, sizeof c);
    CHECK_RC(reap_store_open(dir, &o, &s), REAP_OK);
    if (!s)
        return;
    CHECK_RC(reap_store_run_begin(s, NULL, &m, &c, 3, 0, "cpu", NULL, NULL, &dead), REAP_OK);
    dead.pid = 1;
    free(dead.host);
    dead.host = strdup("elsewhere");
    CHECK_RC(reap_store_run_commit_layer(s, &dead, 0, 0.1, NULL, NULL), REAP_OK);
    CHECK_RC(reap_store_pair_lock(s, &m, &c, &lock), REAP_OK);
    CHECK_RC(reap_store_run_mark_interrupted(s, &m, &c, &n_marked), REAP_OK);
    reap_store_pair_unlock(lock);
    CHECK(n_marked == 1);
    CHECK_RC(reap_store_run_get(s, NULL, dead.run_id, &got), REAP_OK);
    CHECK(got.state == REAP_RUN_FAILED && got.interrupted == 1);
    /* An ordinary end: not interrupted. */
    got.interrupted = 0;
    CHECK_RC(reap_store_run_finish(s, &got, REAP_RUN_CANCELLED, "interrupted by hand"),
             REAP_OK);
    reap_run_info_free(&got);
    CHECK_RC(reap_store_run_get(s, NULL, dead.run_id, &got), REAP_OK);
    CHECK(got.state == REAP_RUN_CANCELLED && got.interrupted == 0);
    reap_run_info_free(&got);
    reap_run_info_free(&dead);
    reap_store_close(s);
}

int main(int argc, char **argv)
{
    const char *scratch = argc > 1 ? argv[1] : "/tmp/test_run_record";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_encoding();
    test_mark(scratch);
    TEST_MAIN_END();
}

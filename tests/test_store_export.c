/* test_store_export.c - export/import: records round-trip bit for bit (the merged view of
 * the importing store equals the exporter's), import is idempotent, a one-model export
 * carries only that model, and a truncated file, a flipped byte, an appended frame, a
 * future export format and conflicting statistics are refused with nothing imported. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export.h"
#include "stats_store.h"
#include "store.h"
#include "test_store_util.h"
#include "test_util.h"

/* image: the records also carry text and image statistics (a quarter of each count). */
static void fill_store(reap_store *s, const reap_id *m, const reap_id *c, int n_layers,
                       int E, int image)
{
    reap_calib_info ci = {0};
    ci.id = *c;
    ci.source = (char *)"calib.jsonl";
    ci.n_samples = 3;
    ci.n_rows = 2;
    ci.seq_len = 16;
    ci.pack = 1;
    ci.n_tokens = 30;
    CHECK_RC(reap_store_calib_put(s, &ci), REAP_OK);
    for (int l = 0; l < n_layers; l++) {
        reap_layer_stats st;
        make_stats(&st, l, E, 2);
        if (image) {
            reap_modality_stats *t = &st.mod[REAP_MOD_TEXT], *im = &st.mod[REAP_MOD_IMAGE];
            im->tokens = 5;
            t->tokens = st.tokens - 5;
            for (int e = 0; e < E; e++) {
                im->count[e] = st.count[e] / 4;
                t->count[e] = st.count[e] - im->count[e];
                im->sum_gate_norm[e] = st.sum_gate_norm[e] / 4;
                t->sum_gate_norm[e] = st.sum_gate_norm[e] - im->sum_gate_norm[e];
                im->sum_norm[e] = st.sum_norm[e] / 4;
                t->sum_norm[e] = st.sum_norm[e] - im->sum_norm[e];
                im->sum_gate[e] = st.sum_gate[e] / 4;
                t->sum_gate[e] = st.sum_gate[e] - im->sum_gate[e];
                im->max_act[e] = im->count[e] ? st.max_act[e] - 1.0f : -INFINITY;
                t->max_act[e] = st.max_act[e];
            }
        }
        CHECK_RC(reap_store_stats_put(s, m, c, &st, "cpu", NULL), REAP_OK);
        reap_layer_stats_free(&st);
    }
}

static int merged_equal(reap_store *a, reap_store *b, const reap_id *m)
{
    reap_layer_stats *x = NULL, *y = NULL;
    int nx = 0, ny = 0, eq;
    eq = !reap_store_stats_merged(a, NULL, m, NULL, 0, &x, &nx, NULL, NULL) &&
         !reap_store_stats_merged(b, NULL, m, NULL, 0, &y, &ny, NULL, NULL) && nx == ny &&
         nx > 0;
    for (int i = 0; eq && i < nx; i++)
        eq = reap_stats_identical(&x[i], &y[i]) &&
             reap_layer_stats_has_image(&x[i]) == reap_layer_stats_has_image(&y[i]);
    /* m1 has a calibration set with image statistics (fill_store): they came along */
    if (eq && nx > 0 && x[0].n_experts == 32)
        eq = reap_layer_stats_has_image(&y[0]) && y[0].mod[REAP_MOD_IMAGE].tokens == 5;
    for (int i = 0; i < nx; i++)
        reap_layer_stats_free(&x[i]);
    for (int i = 0; i < ny; i++)
        reap_layer_stats_free(&y[i]);
    free(x);
    free(y);
    return eq;
}

static void copy_file(const char *from, const char *to, long cut, long flip_at)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    long pos = 0;
    int ch;
    while (in && out && (ch = fgetc(in)) != EOF && (cut < 0 || pos < cut)) {
        if (pos == flip_at)
            ch ^= 0x01;
        fputc(ch, out);
        pos++;
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

int main(int argc, char **argv)
{
    char da[1024], db[1024], dc[1024], f1[1024], f2[1024], bad[1024];
    reap_store *a = NULL, *b = NULL, *c = NULL;
    reap_store_opts create = {.create = 1};
    reap_id m1, m2, c1, c2, c3;
    reap_export_counts ec;
    reap_import_counts ic;
    reap_store_counts cnt;
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_export";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    spath(da, sizeof da, "a");
    spath(db, sizeof db, "b");
    spath(dc, sizeof dc, "c");
    spath(f1, sizeof f1, "all.reapx");
    spath(f2, sizeof f2, "m1.reapx");
    spath(bad, sizeof bad, "bad.reapx");
    fake_id(&m1, 1);
    fake_id(&m2, 2);
    fake_id(&c1, 3);
    fake_id(&c2, 4);
    fake_id(&c3, 5);

    CHECK_RC(reap_store_open(da, &create, &a), REAP_OK);
    CHECK_RC(reap_store_open(db, &create, &b), REAP_OK);
    CHECK_RC(reap_store_open(dc, &create, &c), REAP_OK);
    if (!a || !b || !c)
        TEST_MAIN_END();
    CHECK_RC(put_model(a, &m1, 4, 32), REAP_OK);
    CHECK_RC(put_model(a, &m2, 2, 8), REAP_OK);
    fill_store(a, &m1, &c1, 4, 32, 0);
    fill_store(a, &m1, &c2, 4, 32, 1);
    fill_store(a, &m2, &c3, 2, 8, 0);

    /* Everything: 2 models, 3 calibs, 10 stats. */
    CHECK_RC(reap_store_export(a, f1, NULL, &ec), REAP_OK);
    CHECK(ec.models == 2 && ec.calibs == 3 && ec.stats == 10);
    CHECK_RC(reap_store_import(b, f1, &ic), REAP_OK);
    CHECK(ic.records == 15 && ic.added == 15 && ic.present == 0);
    CHECK(merged_equal(a, b, &m1) && merged_equal(a, b, &m2));
    /* Idempotent. */
    CHECK_RC(reap_store_import(b, f1, &ic), REAP_OK);
    CHECK(ic.added == 0 && ic.present == 15);
    CHECK_RC(reap_store_count(b, NULL, &cnt), REAP_OK);
    CHECK(cnt.models == 2 && cnt.calibs == 3 && cnt.stats == 10);
    CHECK_RC(reap_store_verify(b, NULL), REAP_OK);

    /* One model: its record, the calibration sets its statistics use, its statistics. */
    CHECK_RC(reap_store_export(a, f2, &m1, &ec), REAP_OK);
    CHECK(ec.models == 1 && ec.calibs == 2 && ec.stats == 8);
    reap_id missing;
    fake_id(&missing, 77);
    CHECK_RC(reap_store_export(a, bad, &missing, &ec), REAP_E_NOTFOUND);
    CHECK(access(bad, F_OK) != 0);

    /* Damaged files: nothing imported. */
    struct stat sb;
    stat(f2, &sb);
    copy_file(f2, bad, sb.st_size - 10, -1);
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_FORMAT);
    CHECK_ERRMSG("truncated");
    copy_file(f2, bad, sb.st_size - 40, -1); /* the trailer frame cut off whole or not */
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_FORMAT);
    copy_file(f2, bad, -1, sb.st_size / 2);
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_FORMAT);
    copy_file(f2, bad, -1, 3);
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_FORMAT);
    CHECK_ERRMSG("not a reap export file");
    /* Two exports glued together: a second header after the trailer. */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cat '%s' '%s' > '%s'", f2, f2, bad);
    CHECK(system(cmd) == 0);
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_FORMAT);
    /* A future export format (header format_version at byte 8+4+2 = 14: varint 1 -> 9). */
    copy_file(f2, bad, -1, -1);
    int fd = open(bad, O_RDWR);
    uint8_t hdr[16];
    CHECK(pread(fd, hdr, 16, 0) == 16);
    CHECK(hdr[12] == 0x0a && hdr[14] == 0x08 && hdr[15] == 1); /* frame.header, field 1 */
    hdr[15] = 9;
    CHECK(pwrite(fd, hdr, 16, 0) == 16);
    close(fd);
    CHECK_RC(reap_store_import(c, bad, &ic), REAP_E_UNSUPPORTED);
    CHECK_ERRMSG("newer reap");
    CHECK_RC(reap_store_count(c, NULL, &cnt), REAP_OK);
    CHECK(cnt.models == 0 && cnt.calibs == 0 && cnt.stats == 0);

    /* Conflicting statistics: store c holds another layer 0 for (m1, c1). */
    CHECK_RC(put_model(c, &m1, 4, 32), REAP_OK);
    reap_layer_stats st;
    make_stats(&st, 0, 32, 2);
    CHECK_RC(reap_store_stats_put(c, &m1, &c1, &st, "cpu", NULL), REAP_OK);
    reap_layer_stats_free(&st);
    CHECK_RC(reap_store_import(c, f2, &ic), REAP_E_CONFLICT);
    CHECK_ERRMSG("conflict");
    CHECK_RC(reap_store_count(c, NULL, &cnt), REAP_OK);
    CHECK(cnt.stats == 1 && cnt.calibs == 0);

    reap_store_close(a);
    reap_store_close(b);
    reap_store_close(c);
    TEST_MAIN_END();
}

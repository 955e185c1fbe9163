/* export.c - export of store records to a file and verified, idempotent import
 * (export.h). */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "records.h"
#include "fsutil.h"
#include "fsopen.h"
#include "reap_err.h"
#include "reap_store.pb-c.h"
#include "store_impl.h"

#define EXPORT_MAGIC "REAPEXP1"
#define MAX_FRAME ((size_t)1 << 30)

typedef Reap__Store__V1__ExportFrame PbFrame;
typedef Reap__Store__V1__ExportHeader PbHeader;
typedef Reap__Store__V1__ExportRecord PbRecord;
typedef Reap__Store__V1__ExportTrailer PbTrailer;

enum { DB_MODELS = 1, DB_CALIBS = 2, DB_STATS = 3 };

static const char *db_name(int db)
{
    return db == DB_MODELS ? "models" : db == DB_CALIBS ? "calibs" : "stats";
}

static size_t db_key_len(int db)
{
    return db == DB_STATS ? STORE_STATS_KEY_LEN : STORE_ID_LEN;
}

static void record_digest(int db, const void *key, size_t klen, const void *val,
                          size_t vlen, uint8_t out[32])
{
    crypto_generichash_state h;
    uint8_t head[8];
    store_be32(head, (uint32_t)db);
    store_be32(head + 4, (uint32_t)klen);
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, head, 8);
    crypto_generichash_update(&h, key, klen);
    crypto_generichash_update(&h, val, vlen);
    crypto_generichash_final(&h, out, 32);
}

/* Check a value the way the store reads it (version, parse, key, digest). */
static int check_value(int db, const uint8_t *key, const void *val, size_t vlen,
                       const char *what)
{
    switch (db) {
    case DB_MODELS:
        return rec_model_decode(val, vlen, key, what, NULL);
    case DB_CALIBS:
        return rec_calib_decode(val, vlen, key, what, NULL);
    default:
        return rec_stats_decode(val, vlen, key, what, NULL, NULL, NULL, NULL, NULL);
    }
}

/* ---- export ---------------------------------------------------------------------- */

typedef struct writer {
    FILE *f;
    const char *path;
    crypto_generichash_state all;   /* over record digests */
    uint64_t n_records;
    reap_store *s;
} writer;

static int write_frame(writer *w, const PbFrame *fr)
{
    size_t n = protobuf_c_message_get_packed_size(&fr->base);
    uint8_t len[4], *buf = malloc(n ? n : 1);
    int rc = REAP_OK;
    if (!buf)
        return reap_err_set(REAP_E_NOMEM, "%s: export frame", w->path);
    protobuf_c_message_pack(&fr->base, buf);
    store_be32(len, (uint32_t)n);
    if (fwrite(len, 1, 4, w->f) != 4 || fwrite(buf, 1, n, w->f) != n)
        rc = reap_err_set(REAP_E_IO, "%s: write: %s", w->path, strerror(errno));
    free(buf);
    return rc;
}

static int write_record(writer *w, int db, const MDB_val *k, const MDB_val *v)
{
    PbFrame fr = REAP__STORE__V1__EXPORT_FRAME__INIT;
    PbRecord r = REAP__STORE__V1__EXPORT_RECORD__INIT;
    uint8_t digest[32];
    char what[4400];
    int rc;
    snprintf(what, sizeof what, "%s: %s record", w->s->dir, db_name(db));
    if (k->mv_size != db_key_len(db))
        return reap_err_set(REAP_E_FORMAT, "%s: key of %zu bytes", what, k->mv_size);
    if ((rc = check_value(db, k->mv_data, v->mv_data, v->mv_size, what)))
        return rc;
    record_digest(db, k->mv_data, k->mv_size, v->mv_data, v->mv_size, digest);
    crypto_generichash_update(&w->all, digest, 32);
    r.db = (Reap__Store__V1__ExportDb)db;
    r.key.len = k->mv_size;
    r.key.data = k->mv_data;
    r.value.len = v->mv_size;
    r.value.data = v->mv_data;
    r.digest.len = 32;
    r.digest.data = digest;
    fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_RECORD;
    fr.record = &r;
    w->n_records++;
    return write_frame(w, &fr);
}

typedef struct id_list {
    reap_id *v;
    int n, cap;
} id_list;

static int id_push(id_list *l, const uint8_t *b)
{
    if (l->n && !memcmp(l->v[l->n - 1].b, b, 32))
        return REAP_OK;
    int rc = store_list_room(NULL, &l->v, &l->cap, l->n, sizeof *l->v, "export: id list");
    if (rc)
        return rc;
    memcpy(l->v[l->n++].b, b, 32);
    return REAP_OK;
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

/* One walk of export_db: write each record of database `db`, or (calibs != NULL)
 * collect the calib ids of stats keys instead. */
typedef struct export_walk {
    writer *w;
    int db;
    id_list *calibs;
} export_walk;

static int export_visit(void *ud, const MDB_val *k, const MDB_val *v)
{
    const export_walk *x = ud;
    if (!x->calibs)
        return write_record(x->w, x->db, k, v);
    return id_push(x->calibs, (const uint8_t *)k->mv_data + 32);
}

/* Export the records of `dbi` whose key starts with prefix[0..plen) (plen 0: all).
 * calibs != NULL: collect the calib ids of stats keys instead of writing. */
static int export_db(writer *w, MDB_txn *txn, MDB_dbi dbi, int db, const uint8_t *prefix,
                     size_t plen, id_list *calibs)
{
    export_walk x = {w, db, calibs};
    return store_walk(w->s, txn, dbi, prefix, plen, db_key_len(db), db_name(db),
                      export_visit, &x);
}

static int export_body(writer *w, MDB_txn *txn, const reap_id *model,
                       reap_export_counts *counts)
{
    reap_store *s = w->s;
    PbFrame fr = REAP__STORE__V1__EXPORT_FRAME__INIT;
    PbHeader hd = REAP__STORE__V1__EXPORT_HEADER__INIT;
    PbTrailer tr = REAP__STORE__V1__EXPORT_TRAILER__INIT;
    id_list calibs = {0};
    uint8_t all[32];
    uint64_t before;
    MDB_val k, v;
    int rc;
    hd.format_version = REAP_STORE_FORMAT_VERSION;
    hd.software = (char *)"reap " REAP_VERSION;
    hd.created_unix_ns = store_now_ns();
    if (model) {
        hd.model_id.len = 32;
        hd.model_id.data = (uint8_t *)model->b;
    }
    fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_HEADER;
    fr.header = &hd;
    if (fwrite(EXPORT_MAGIC, 1, 8, w->f) != 8) {
        rc = reap_err_set(REAP_E_IO, "%s: write: %s", w->path, strerror(errno));
        goto fail;
    }
    if ((rc = write_frame(w, &fr)))
        goto fail;
    /* models */
    before = w->n_records;
    if (model) {
        if ((rc = store_get(s, txn, s->db_models, model->b, 32, &v))) {
            char hex[65];
            reap_id_hex(model, hex);
            if (rc == REAP_E_NOTFOUND)
                rc = reap_err_set(rc, "%s: no model %s in the store", s->dir, hex);
            goto fail;
        }
        k.mv_size = 32;
        k.mv_data = (void *)model->b;
        rc = write_record(w, DB_MODELS, &k, &v);
    } else {
        rc = export_db(w, txn, s->db_models, DB_MODELS, NULL, 0, NULL);
    }
    if (rc)
        goto fail;
    counts->models = w->n_records - before;
    /* calibs: every one, or those the model's statistics refer to */
    before = w->n_records;
    if (model) {
        if ((rc = export_db(w, txn, s->db_stats, DB_STATS, model->b, 32, &calibs)))
            goto fail;
        if (calibs.n > 1)
            qsort(calibs.v, (size_t)calibs.n, sizeof *calibs.v, id_cmp);
        for (int i = 0; i < calibs.n && !rc; i++) {
            if ((rc = store_get(s, txn, s->db_calibs, calibs.v[i].b, 32, &v))) {
                if (rc == REAP_E_NOTFOUND)
                    rc = reap_err_set(REAP_E_FORMAT, "%s: statistics refer to a calibration "
                                                     "set with no record", s->dir);
                goto fail;
            }
            k.mv_size = 32;
            k.mv_data = calibs.v[i].b;
            rc = write_record(w, DB_CALIBS, &k, &v);
        }
    } else {
        rc = export_db(w, txn, s->db_calibs, DB_CALIBS, NULL, 0, NULL);
    }
    if (rc)
        goto fail;
    counts->calibs = w->n_records - before;
    /* stats */
    before = w->n_records;
    if ((rc = export_db(w, txn, s->db_stats, DB_STATS, model ? model->b : NULL,
                        model ? 32 : 0, NULL)))
        goto fail;
    counts->stats = w->n_records - before;
    crypto_generichash_final(&w->all, all, 32);
    tr.n_records = w->n_records;
    tr.digest.len = 32;
    tr.digest.data = all;
    fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_TRAILER;
    fr.trailer = &tr;
    rc = write_frame(w, &fr);
fail:
    free(calibs.v);
    return rc;
}

int reap_store_export(reap_store *s, const char *path, const reap_id *model,
                      reap_export_counts *counts)
{
    reap_export_counts c = {0};
    writer w = {0};
    MDB_txn *txn = NULL;
    reap_atomic af = {.fd = -1};
    int rc;
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    w.s = s;
    crypto_generichash_init(&w.all, NULL, 0, 32);
    if ((rc = store_txn_begin(s, 0, &txn)))
        return rc;
    /* temp "<path>.tmp.<pid>": two exports of one target may run at once */
    if ((rc = reap_atomic_open(path, 0666, REAP_ATOMIC_PID_TMP | REAP_ATOMIC_STDIO, &af)))
        goto fail;
    w.f = af.fp;
    w.path = af.tmp;
    if ((rc = export_body(&w, txn, model, &c)))
        goto fail;
    w.f = NULL; /* the commit flushes and closes it */
    if ((rc = reap_atomic_commit(&af)))
        goto fail;
    if (counts)
        *counts = c;
fail:
    reap_atomic_abort(&af); /* closes w.f and removes the temp file unless committed */
    store_txn_abort(s, txn);
    return rc;
}

/* ---- import ---------------------------------------------------------------------- */

typedef struct import_set {
    PbFrame **frames;      /* every unpacked frame (owned) */
    int n_frames;
    PbRecord **recs;       /* the record frames' records, file order */
    uint64_t n_recs;
    reap_import_counts counts;
} import_set;

static void import_set_free(import_set *is)
{
    for (int i = 0; i < is->n_frames; i++)
        protobuf_c_message_free_unpacked(&is->frames[i]->base, NULL);
    free(is->frames);
    free(is->recs);
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    struct stat sb;
    int rc, fd = -1;
    *buf = NULL;
    if ((rc = reap_open_read(path, NULL, REAP_OPEN_REGULAR, &fd)))
        return rc;
    if (fstat(fd, &sb)) {
        rc = reap_err_set(REAP_E_IO, "%s: fstat: %s", path, strerror(errno));
        goto fail;
    }
    *len = (size_t)sb.st_size;
    if (!(*buf = malloc(*len ? *len : 1))) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: %zu bytes", path, *len);
        goto fail;
    }
    rc = reap_read_full(fd, *buf, *len, path);
fail:
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    close(fd);
    return rc;
}

/* Parse and verify the whole file into *is. */
static int import_parse(const char *path, const uint8_t *buf, size_t len, import_set *is)
{
    crypto_generichash_state all;
    uint8_t digest[32], total[32];
    size_t off = 8;
    int cap = 0, seen_trailer = 0, rc = REAP_OK;
    char what[4400];
    crypto_generichash_init(&all, NULL, 0, 32);
    if (len < 8 || memcmp(buf, EXPORT_MAGIC, 8))
        return reap_err_set(REAP_E_FORMAT, "%s: not a reap export file", path);
    while (off < len) {
        if (seen_trailer)
            return reap_err_set(REAP_E_FORMAT, "%s: data after the trailer", path);
        if (len - off < 4)
            return reap_err_set(REAP_E_FORMAT, "%s: truncated frame at byte %zu", path, off);
        size_t n = store_rd_be32(buf + off);
        off += 4;
        if (n > MAX_FRAME || n > len - off)
            return reap_err_set(REAP_E_FORMAT, "%s: truncated frame at byte %zu", path,
                                off - 4);
        PbFrame *fr = reap__store__v1__export_frame__unpack(NULL, n, buf + off);
        if (!fr)
            return reap_err_set(REAP_E_FORMAT, "%s: damaged frame at byte %zu", path, off - 4);
        if (is->n_frames == cap) {
            int nc = cap ? 2 * cap : 256;
            PbFrame **nf = realloc(is->frames, (size_t)nc * sizeof *nf);
            PbRecord **nr = nf ? realloc(is->recs, (size_t)nc * sizeof *nr) : NULL;
            if (nf)
                is->frames = nf;
            if (nr)
                is->recs = nr;
            if (!nf || !nr) {
                protobuf_c_message_free_unpacked(&fr->base, NULL);
                return reap_err_set(REAP_E_NOMEM, "%s: frames", path);
            }
            cap = nc;
        }
        is->frames[is->n_frames++] = fr;
        off += n;
        int first = is->n_frames == 1;
        if (first != (fr->frame_case == REAP__STORE__V1__EXPORT_FRAME__FRAME_HEADER))
            return reap_err_set(REAP_E_FORMAT, "%s: %s", path,
                                first ? "no header frame" : "a second header frame");
        if (first) {
            uint32_t v = fr->header->format_version;
            if (v == 0)
                return reap_err_set(REAP_E_FORMAT, "%s: damaged header", path);
            if (v > REAP_STORE_FORMAT_VERSION)
                return reap_err_set(REAP_E_UNSUPPORTED,
                                    "%s: written by a newer reap (export format %u; this "
                                    "build reads up to %d): upgrade reap to import it",
                                    path, v, REAP_STORE_FORMAT_VERSION);
            continue;
        }
        if (fr->frame_case == REAP__STORE__V1__EXPORT_FRAME__FRAME_TRAILER) {
            seen_trailer = 1;
            crypto_generichash_final(&all, total, 32);
            if (fr->trailer->n_records != is->n_recs || fr->trailer->digest.len != 32 ||
                memcmp(fr->trailer->digest.data, total, 32))
                return reap_err_set(REAP_E_FORMAT,
                                    "%s: trailer does not match the records (%llu in the "
                                    "trailer, %llu read): file damaged or spliced", path,
                                    (unsigned long long)fr->trailer->n_records,
                                    (unsigned long long)is->n_recs);
            continue;
        }
        if (fr->frame_case != REAP__STORE__V1__EXPORT_FRAME__FRAME_RECORD)
            return reap_err_set(REAP_E_FORMAT, "%s: unknown frame at byte %zu", path, off - n);
        PbRecord *r = fr->record;
        int db = (int)r->db;
        snprintf(what, sizeof what, "%s: record %llu", path,
                 (unsigned long long)is->n_recs + 1);
        if (db < DB_MODELS || db > DB_STATS || r->key.len != db_key_len(db) ||
            r->digest.len != 32)
            return reap_err_set(REAP_E_FORMAT, "%s: damaged record frame", what);
        record_digest(db, r->key.data, r->key.len, r->value.data, r->value.len, digest);
        if (memcmp(digest, r->digest.data, 32))
            return reap_err_set(REAP_E_FORMAT, "%s (%s): digest mismatch: damaged", what,
                                db_name(db));
        if ((rc = check_value(db, r->key.data, r->value.data, r->value.len, what)))
            return rc;
        crypto_generichash_update(&all, digest, 32);
        is->recs[is->n_recs++] = r;
    }
    if (!seen_trailer)
        return reap_err_set(REAP_E_FORMAT, "%s: truncated (no trailer)", path);
    return REAP_OK;
}

static int import_apply(reap_store *s, MDB_txn *txn, void *ud)
{
    import_set *is = ud;
    MDB_dbi dbis[4] = {0, s->db_models, s->db_calibs, s->db_stats};
    char what[4400];
    int rc;
    is->counts.records = is->n_recs;
    is->counts.added = is->counts.present = 0;
    for (uint64_t i = 0; i < is->n_recs; i++) {
        const PbRecord *r = is->recs[i];
        int db = (int)r->db;
        MDB_val v;
        snprintf(what, sizeof what, "%s: %s record", s->dir, db_name(db));
        if (db == DB_STATS) {
            MDB_val mv;
            rc = store_get(s, txn, s->db_models, r->key.data, 32, &mv);
            if (rc == REAP_E_NOTFOUND)
                return reap_err_set(REAP_E_FORMAT, "import: statistics of a model that is "
                                                   "neither in the store nor in the file");
            if (rc)
                return rc;
        }
        rc = store_get(s, txn, dbis[db], r->key.data, r->key.len, &v);
        if (rc == REAP_E_NOTFOUND) {
            if ((rc = store_put(s, txn, dbis[db], r->key.data, r->key.len, r->value.data,
                                r->value.len, 0)))
                return rc;
            is->counts.added++;
            continue;
        }
        if (rc)
            return rc;
        if (db == DB_STATS) {
            uint8_t have[32], want[32];
            if ((rc = rec_stats_decode(v.mv_data, v.mv_size, r->key.data, what, NULL, NULL,
                                       NULL, have, NULL)) ||
                (rc = rec_stats_decode(r->value.data, r->value.len, r->key.data, what, NULL,
                                       NULL, NULL, want, NULL)))
                return rc;
            if (memcmp(have, want, 32)) {
                char mh[65], ch[65];
                reap_id m, c;
                memcpy(m.b, r->key.data, 32);
                memcpy(c.b, r->key.data + 32, 32);
                reap_id_hex(&m, mh);
                reap_id_hex(&c, ch);
                return reap_err_set(REAP_E_CONFLICT,
                                    "import conflict: statistics of model %s, calibration "
                                    "%s, layer %u differ from the store's (nothing imported)",
                                    mh, ch, store_rd_be32(r->key.data + 64));
            }
        }
        is->counts.present++;
    }
    return REAP_OK;
}

int reap_store_import(reap_store *s, const char *path, reap_import_counts *counts)
{
    import_set is = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    if (sodium_init() < 0)
        return reap_err_set(REAP_E_INTERNAL, "libsodium initialisation failed");
    if (s->readonly)
        return reap_err_set(REAP_E_INVALID, "%s: store opened read-only", s->dir);
    if ((rc = read_file(path, &buf, &len)) || (rc = import_parse(path, buf, len, &is)) ||
        (rc = store_write(s, import_apply, &is)))
        goto fail;
    if (counts)
        *counts = is.counts;
fail:
    import_set_free(&is);
    free(buf);
    return rc;
}

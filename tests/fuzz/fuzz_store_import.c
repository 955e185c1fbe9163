/* fuzz_store_import.c - reap_store_import() of an export file (store/export.h: magic,
 * length-prefixed ExportFrame messages, record digests, trailer) into a store in the
 * harness's temporary directory.
 *
 * Two input forms, so that the fuzzer gets past the digests to the record decoders and
 * the write transaction:
 *   - an input starting with the magic "REAPEXP1" is imported as it is (the file format
 *     itself: framing, protobuf, digests, trailer);
 *   - any other input is a list of records, each: one byte (db = byte % 3 + 1: models,
 *     calibs, stats), the key (32 bytes, or 68 for stats), a 2-byte big-endian value
 *     length and the value; the harness wraps them into a well-formed export file (header,
 *     one frame per record with its digest, the trailer) and imports that.
 *
 * Every input meets an empty store: a failed import changes nothing (the whole file is
 * verified before anything is written), and after an import that added records the store
 * is removed and made again.
 */
#include "export.h"
#include "fuzz_util.h"
#include "reap_err.h"
#include "reap_store.pb-c.h"
#include "store.h"
#include "store_impl.h"

#include <sodium.h>

static reap_store *store;
static char store_dir[8192];

static void close_store(void)
{
    reap_store_close(store);
    store = NULL;
    fuzz_rm_tree_(store_dir);
}

static void open_store(void)
{
    reap_store_opts so = {.create = 1, .map_size = 64u << 20};

    fuzz_path(store_dir, sizeof store_dir, "store");
    if (reap_store_open(store_dir, &so, &store) != REAP_OK) {
        fprintf(stderr, "fuzz_store_import: %s\n", reap_err_msg());
        abort();
    }
}

/* ---- the records form -------------------------------------------------------------- */

typedef struct obuf {
    uint8_t *p;
    size_t n, cap;
} obuf;

static void reserve(obuf *o, size_t more)
{
    if (o->n + more > o->cap) {
        o->cap = 2 * (o->n + more);
        if (!(o->p = realloc(o->p, o->cap)))
            abort();
    }
}

static void put_frame(obuf *o, const Reap__Store__V1__ExportFrame *fr)
{
    size_t n = protobuf_c_message_get_packed_size(&fr->base);

    reserve(o, 4 + n);
    o->p[o->n] = (uint8_t)(n >> 24);
    o->p[o->n + 1] = (uint8_t)(n >> 16);
    o->p[o->n + 2] = (uint8_t)(n >> 8);
    o->p[o->n + 3] = (uint8_t)n;
    protobuf_c_message_pack(&fr->base, o->p + o->n + 4);
    o->n += 4 + n;
}

/* The export file for the records form of data[0..size) into *o. */
static void wrap_records(const uint8_t *data, size_t size, obuf *o)
{
    Reap__Store__V1__ExportFrame fr = REAP__STORE__V1__EXPORT_FRAME__INIT;
    Reap__Store__V1__ExportHeader h = REAP__STORE__V1__EXPORT_HEADER__INIT;
    Reap__Store__V1__ExportRecord r = REAP__STORE__V1__EXPORT_RECORD__INIT;
    Reap__Store__V1__ExportTrailer t = REAP__STORE__V1__EXPORT_TRAILER__INIT;
    crypto_generichash_state all, one;
    uint8_t digest[32], total[32], head[8];
    size_t off = 0, klen, vlen;
    uint64_t n = 0;
    int db;

    o->n = 0;
    reserve(o, 8);
    memcpy(o->p, "REAPEXP1", 8);
    o->n = 8;
    h.format_version = REAP_STORE_FORMAT_VERSION;
    h.software = "fuzz";
    fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_HEADER;
    fr.header = &h;
    put_frame(o, &fr);
    crypto_generichash_init(&all, NULL, 0, 32);
    while (off < size) {
        db = data[off] % 3 + 1;
        klen = db == 3 ? STORE_STATS_KEY_LEN : STORE_ID_LEN;
        if (size - off < 1 + klen + 2)
            break;
        vlen = ((size_t)data[off + 1 + klen] << 8) | data[off + 2 + klen];
        if (vlen > size - off - 3 - klen)
            vlen = size - off - 3 - klen;
        r.db = (Reap__Store__V1__ExportDb)db;
        r.key.data = (uint8_t *)data + off + 1;
        r.key.len = klen;
        r.value.data = (uint8_t *)data + off + 3 + klen;
        r.value.len = vlen;
        head[0] = head[1] = head[2] = 0;
        head[3] = (uint8_t)db;
        head[4] = head[5] = 0;
        head[6] = (uint8_t)(klen >> 8);
        head[7] = (uint8_t)klen;
        crypto_generichash_init(&one, NULL, 0, 32);
        crypto_generichash_update(&one, head, 8);
        crypto_generichash_update(&one, r.key.data, klen);
        crypto_generichash_update(&one, r.value.data, vlen);
        crypto_generichash_final(&one, digest, 32);
        crypto_generichash_update(&all, digest, 32);
        r.digest.data = digest;
        r.digest.len = 32;
        fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_RECORD;
        fr.record = &r;
        put_frame(o, &fr);
        n++;
        off += 3 + klen + vlen;
    }
    crypto_generichash_final(&all, total, 32);
    t.n_records = n;
    t.digest.data = total;
    t.digest.len = 32;
    fr.frame_case = REAP__STORE__V1__EXPORT_FRAME__FRAME_TRAILER;
    fr.trailer = &t;
    put_frame(o, &fr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    static int registered;
    static obuf o;
    reap_import_counts c = {0};
    const char *path;

    if (!registered) {
        if (sodium_init() < 0)
            abort();
        fuzz_tmpdir();          /* its removal registered first: runs after close_store */
        atexit(close_store);
        registered = 1;
    }
    if (!store)
        open_store();
    if (size >= 8 && memcmp(data, "REAPEXP1", 8) == 0) {
        path = fuzz_memfd_set(&in, data, size);
    } else {
        wrap_records(data, size, &o);
        path = fuzz_memfd_set(&in, o.p, o.n);
    }
    if (FUZZ_RC(reap_store_import(store, path, &c)) == REAP_OK && c.added > c.records)
        abort();                /* more records added than the file holds */
    if (c.added)
        close_store();
    return 0;
}

/* records.c - protobuf-c encoding of the store's values, format-version checks and the
 * statistics digest (records.h). Every value is checked on the way in: field 1 first
 * (format_version, so a newer format is told apart from damage), then the message, then
 * sizes, key agreement and, for statistics, the digest. */
#include "records.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "reap_err.h"
#include "reap_store.pb-c.h"

typedef Reap__Store__V1__StoreMeta PbMeta;
typedef Reap__Store__V1__ModelFile PbModelFile;
typedef Reap__Store__V1__ModelRecord PbModel;
typedef Reap__Store__V1__CalibRecord PbCalib;
typedef Reap__Store__V1__FileHashRecord PbFileHash;
typedef Reap__Store__V1__LayerStatsRecord PbStats;
typedef Reap__Store__V1__RunRecord PbRun;
typedef Reap__Store__V1__ModalityStats PbModality;

#define MAX_EXPERTS (1 << 20)

/* A const string as protobuf-c's char * (never written through). */
static char *pb_str(const char *s)
{
    return (char *)(s ? s : "");
}

static ProtobufCBinaryData pb_bytes(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

static int pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    *buf = malloc(n ? n : 1);
    if (!*buf)
        return reap_err_set(REAP_E_NOMEM, "store: encoding a %zu-byte record", n);
    *len = protobuf_c_message_pack(m, *buf);
    return REAP_OK;
}

/* strdup that maps NULL to NULL and reports failure. */
static int dup_str(const char *src, char **dst)
{
    *dst = NULL;
    if (!src)
        return REAP_OK;
    *dst = strdup(src);
    return *dst ? REAP_OK : reap_err_set(REAP_E_NOMEM, "store: string copy");
}

int rec_version_check(const void *buf, size_t len, const char *what)
{
    const uint8_t *p = buf;
    uint64_t v = 0;
    size_t i = 1;
    int shift = 0;
    if (len < 2 || p[0] != 0x08) /* field 1, varint */
        return reap_err_set(REAP_E_FORMAT, "%s: damaged record (no format_version)", what);
    for (;; i++, shift += 7) {
        if (i >= len || shift > 63)
            return reap_err_set(REAP_E_FORMAT, "%s: damaged record (format_version)", what);
        v |= (uint64_t)(p[i] & 0x7f) << shift;
        if (!(p[i] & 0x80))
            break;
    }
    if (v == 0)
        return reap_err_set(REAP_E_FORMAT, "%s: damaged record (format_version 0)", what);
    if (v > REAP_STORE_FORMAT_VERSION)
        return reap_err_set(REAP_E_UNSUPPORTED,
                            "%s: written by a newer reap (record format %llu; this build "
                            "reads formats up to %d): upgrade reap to read this store",
                            what, (unsigned long long)v, REAP_STORE_FORMAT_VERSION);
    return REAP_OK;
}

/* Version check, then unpack; NULL result is damage. */
static int unpack(const ProtobufCMessageDescriptor *d, const void *buf, size_t len,
                  const char *what, ProtobufCMessage **out)
{
    int rc = rec_version_check(buf, len, what);
    *out = NULL;
    if (rc)
        return rc;
    *out = protobuf_c_message_unpack(d, NULL, len, buf);
    if (!*out)
        return reap_err_set(REAP_E_FORMAT, "%s: damaged record (does not parse)", what);
    return REAP_OK;
}

/* ---- meta ------------------------------------------------------------------------ */

int rec_meta_encode(uint8_t **buf, size_t *len)
{
    PbMeta m = REAP__STORE__V1__STORE_META__INIT;
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.magic = pb_str(STORE_MAGIC);
    m.software = pb_str("reap " REAP_VERSION);
    m.created_unix_ns = store_now_ns();
    return pack(&m.base, buf, len);
}

int rec_meta_check(const void *buf, size_t len, const char *what)
{
    ProtobufCMessage *msg;
    int rc = unpack(&reap__store__v1__store_meta__descriptor, buf, len, what, &msg);
    if (rc)
        return rc;
    PbMeta *m = (PbMeta *)msg;
    if (!m->magic || strcmp(m->magic, STORE_MAGIC))
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a reap store (magic \"%s\")", what,
                          m->magic ? m->magic : "");
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* ---- statistics ------------------------------------------------------------------ */

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t f64_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Per expert: count, sum_gate_norm, sum_norm, sum_gate (64-bit), max_act (32-bit). */
static void digest_experts(crypto_generichash_state *h, const reap_modality_stats *v, int E)
{
    uint8_t e_buf[36];
    for (int e = 0; e < E; e++) {
        uint32_t mx;
        memcpy(&mx, &v->max_act[e], sizeof mx);
        le64(e_buf, (uint64_t)v->count[e]);
        le64(e_buf + 8, f64_bits(v->sum_gate_norm[e]));
        le64(e_buf + 16, f64_bits(v->sum_norm[e]));
        le64(e_buf + 24, f64_bits(v->sum_gate[e]));
        le32(e_buf + 32, mx);
        crypto_generichash_update(h, e_buf, sizeof e_buf);
    }
}

void rec_stats_digest(const reap_id *model, const reap_id *calib,
                      const reap_layer_stats *st, uint8_t out[32])
{
    crypto_generichash_state h;
    uint8_t head[12 + 8];
    static const char tag[] = "reap-stats/1";
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)tag, sizeof tag - 1);
    crypto_generichash_update(&h, model->b, 32);
    crypto_generichash_update(&h, calib->b, 32);
    le32(head, (uint32_t)st->layer);
    le32(head + 4, (uint32_t)st->n_experts);
    le32(head + 8, (uint32_t)st->top_k);
    le64(head + 12, (uint64_t)st->tokens);
    crypto_generichash_update(&h, head, sizeof head);
    const reap_modality_stats tot = {st->tokens, st->count, st->sum_gate_norm, st->sum_norm,
                                     st->sum_gate, st->max_act};
    digest_experts(&h, &tot, st->n_experts);
    /* the per-modality sets only for a layer with image tokens, so a text-only record
     * keeps the digest it had before modalities existed */
    if (reap_layer_stats_has_image(st)) {
        crypto_generichash_update(&h, (const uint8_t *)"modalities", 10);
        for (int m = 0; m < REAP_N_MODALITIES; m++) {
            uint8_t t[8];
            le64(t, (uint64_t)st->mod[m].tokens);
            crypto_generichash_update(&h, t, sizeof t);
            digest_experts(&h, &st->mod[m], st->n_experts);
        }
    }
    crypto_generichash_final(&h, out, 32);
}

int rec_stats_encode(const reap_id *model, const reap_id *calib, const reap_layer_stats *st,
                     const char *backend, uint32_t positions_rule, uint8_t **buf,
                     size_t *len)
{
    PbStats m = REAP__STORE__V1__LAYER_STATS_RECORD__INIT;
    PbModality pm[REAP_N_MODALITIES] = {REAP__STORE__V1__MODALITY_STATS__INIT,
                                        REAP__STORE__V1__MODALITY_STATS__INIT};
    uint8_t digest[32];
    size_t E = (size_t)st->n_experts;
    if (st->n_experts < 1 || st->n_experts > MAX_EXPERTS || st->layer < 0 || st->top_k < 0)
        return reap_err_set(REAP_E_INVALID, "store: statistics of layer %d with %d experts",
                            st->layer, st->n_experts);
    rec_stats_digest(model, calib, st, digest);
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.model_id = pb_bytes(model->b, 32);
    m.calib_id = pb_bytes(calib->b, 32);
    m.layer = (uint32_t)st->layer;
    m.n_experts = (uint32_t)st->n_experts;
    m.top_k = (uint32_t)st->top_k;
    m.tokens = st->tokens;
    m.n_count = E;
    m.count = st->count;
    m.n_sum_gate_norm = E;
    m.sum_gate_norm = st->sum_gate_norm;
    m.n_sum_norm = E;
    m.sum_norm = st->sum_norm;
    m.n_sum_gate = E;
    m.sum_gate = st->sum_gate;
    m.n_max_act = E;
    m.max_act = st->max_act;
    m.digest = pb_bytes(digest, 32);
    m.created_unix_ns = store_now_ns();
    m.backend = pb_str(backend);
    m.positions_rule = positions_rule;
    if (reap_layer_stats_has_image(st)) {
        for (int k = 0; k < REAP_N_MODALITIES; k++) {
            const reap_modality_stats *v = &st->mod[k];
            pm[k].tokens = v->tokens;
            pm[k].n_count = pm[k].n_sum_gate_norm = pm[k].n_sum_norm = pm[k].n_sum_gate =
                pm[k].n_max_act = E;
            pm[k].count = v->count;
            pm[k].sum_gate_norm = v->sum_gate_norm;
            pm[k].sum_norm = v->sum_norm;
            pm[k].sum_gate = v->sum_gate;
            pm[k].max_act = v->max_act;
        }
        m.text = &pm[REAP_MOD_TEXT];
        m.image = &pm[REAP_MOD_IMAGE];
    }
    return pack(&m.base, buf, len);
}

int rec_stats_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_layer_stats *out, reap_id *model, reap_id *calib,
                     uint8_t digest[32], uint32_t *positions_rule)
{
    ProtobufCMessage *msg = NULL;
    reap_layer_stats st = {0};
    reap_id mid, cid;
    uint8_t want[32];
    int rc;
    if (out)
        memset(out, 0, sizeof *out);
    if ((rc = unpack(&reap__store__v1__layer_stats_record__descriptor, buf, len, what, &msg)))
        goto fail;
    PbStats *m = (PbStats *)msg;
    size_t E = m->n_experts;
    if (m->model_id.len != 32 || m->calib_id.len != 32 || m->digest.len != 32 || E < 1 ||
        E > MAX_EXPERTS || m->layer > INT32_MAX || m->n_count != E ||
        m->n_sum_gate_norm != E || m->n_sum_norm != E || m->n_sum_gate != E ||
        m->n_max_act != E) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged statistics record (sizes)", what);
        goto fail;
    }
    memcpy(mid.b, m->model_id.data, 32);
    memcpy(cid.b, m->calib_id.data, 32);
    if (key && (memcmp(key, mid.b, 32) || memcmp(key + 32, cid.b, 32) ||
                store_rd_be32(key + 64) != m->layer)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: statistics record does not match its key",
                          what);
        goto fail;
    }
    /* A view of the message's arrays for the digest; copied below only if wanted. */
    st.layer = (int)m->layer;
    st.n_experts = (int)E;
    st.top_k = (int)m->top_k;
    st.tokens = m->tokens;
    st.count = m->count;
    st.sum_gate_norm = m->sum_gate_norm;
    st.sum_norm = m->sum_norm;
    st.sum_gate = m->sum_gate;
    st.max_act = m->max_act;
    if ((m->text != NULL) != (m->image != NULL)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged statistics record (one modality of "
                          "two)", what);
        goto fail;
    }
    if (m->image) {
        const PbModality *pm[REAP_N_MODALITIES] = {m->text, m->image};
        for (int k = 0; k < REAP_N_MODALITIES; k++) {
            if (pm[k]->n_count != E || pm[k]->n_sum_gate_norm != E || pm[k]->n_sum_norm != E ||
                pm[k]->n_sum_gate != E || pm[k]->n_max_act != E) {
                rc = reap_err_set(REAP_E_FORMAT, "%s: damaged statistics record (%s sizes)",
                                  what, k == REAP_MOD_IMAGE ? "image" : "text");
                goto fail;
            }
            st.mod[k].tokens = pm[k]->tokens;
            st.mod[k].count = pm[k]->count;
            st.mod[k].sum_gate_norm = pm[k]->sum_gate_norm;
            st.mod[k].sum_norm = pm[k]->sum_norm;
            st.mod[k].sum_gate = pm[k]->sum_gate;
            st.mod[k].max_act = pm[k]->max_act;
        }
    }
    rec_stats_digest(&mid, &cid, &st, want);
    if (memcmp(want, m->digest.data, 32)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: statistics record fails its digest (damaged)",
                          what);
        goto fail;
    }
    if (out) {
        if ((rc = reap_layer_stats_init(out, st.layer, st.n_experts, st.top_k)))
            goto fail;
        out->tokens = st.tokens;
        memcpy(out->count, st.count, E * sizeof *out->count);
        memcpy(out->sum_gate_norm, st.sum_gate_norm, E * sizeof *out->sum_gate_norm);
        memcpy(out->sum_norm, st.sum_norm, E * sizeof *out->sum_norm);
        memcpy(out->sum_gate, st.sum_gate, E * sizeof *out->sum_gate);
        memcpy(out->max_act, st.max_act, E * sizeof *out->max_act);
        if (m->image)
            for (int k = 0; k < REAP_N_MODALITIES; k++) {
                reap_modality_stats *o = &out->mod[k];
                const reap_modality_stats *v = &st.mod[k];
                o->tokens = v->tokens;
                memcpy(o->count, v->count, E * sizeof *o->count);
                memcpy(o->sum_gate_norm, v->sum_gate_norm, E * sizeof *o->sum_gate_norm);
                memcpy(o->sum_norm, v->sum_norm, E * sizeof *o->sum_norm);
                memcpy(o->sum_gate, v->sum_gate, E * sizeof *o->sum_gate);
                memcpy(o->max_act, v->max_act, E * sizeof *o->max_act);
            }
    }
    if (model)
        *model = mid;
    if (calib)
        *calib = cid;
    if (digest)
        memcpy(digest, want, 32);
    if (positions_rule)
        *positions_rule = m->positions_rule;
fail:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* ---- models ---------------------------------------------------------------------- */

int rec_model_encode(const reap_model_info *mi, uint8_t **buf, size_t *len)
{
    PbModel m = REAP__STORE__V1__MODEL_RECORD__INIT;
    PbModelFile *files = NULL, **fp = NULL;
    uint32_t *moe = NULL;
    int rc = REAP_OK;
    size_t nf = (size_t)mi->n_files, nm = (size_t)mi->n_moe_layers;
    files = calloc(nf ? nf : 1, sizeof *files);
    fp = calloc(nf ? nf : 1, sizeof *fp);
    moe = calloc(nm ? nm : 1, sizeof *moe);
    if (!files || !fp || !moe) {
        rc = reap_err_set(REAP_E_NOMEM, "store: model record");
        goto fail;
    }
    for (size_t i = 0; i < nf; i++) {
        PbModelFile f = REAP__STORE__V1__MODEL_FILE__INIT;
        f.path = pb_str(mi->files[i].path);
        f.size = mi->files[i].size;
        f.digest = pb_bytes(mi->files[i].digest, 32);
        files[i] = f;
        fp[i] = &files[i];
    }
    for (size_t i = 0; i < nm; i++)
        moe[i] = (uint32_t)mi->moe_layers[i];
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.model_id = pb_bytes(mi->id.b, 32);
    m.model_type = pb_str(mi->model_type);
    m.n_layers = (uint32_t)mi->n_layers;
    m.hidden = (uint32_t)mi->hidden;
    m.n_experts = (uint32_t)mi->n_experts;
    m.top_k = (uint32_t)mi->top_k;
    m.n_moe_layers = nm;
    m.moe_layers = moe;
    m.n_files = nf;
    m.files = fp;
    m.first_seen_path = pb_str(mi->first_seen_path);
    m.created_unix_ns = mi->created_unix_ns ? mi->created_unix_ns : store_now_ns();
    rc = pack(&m.base, buf, len);
fail:
    free(files);
    free(fp);
    free(moe);
    return rc;
}

int rec_model_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_model_info *out)
{
    ProtobufCMessage *msg = NULL;
    reap_model_info mi = {0};
    int rc;
    if ((rc = unpack(&reap__store__v1__model_record__descriptor, buf, len, what, &msg)))
        goto fail;
    PbModel *m = (PbModel *)msg;
    int bad = m->model_id.len != 32 || (key && memcmp(key, m->model_id.data, 32)) ||
              m->n_layers > INT32_MAX || m->n_moe_layers > m->n_layers ||
              m->n_files > INT32_MAX;
    for (size_t i = 0; !bad && i < m->n_moe_layers; i++)
        bad = m->moe_layers[i] >= m->n_layers || (i && m->moe_layers[i] <= m->moe_layers[i - 1]);
    for (size_t i = 0; !bad && i < m->n_files; i++)
        bad = m->files[i]->digest.len != 32;
    if (bad) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged model record", what);
        goto fail;
    }
    if (!out)
        goto fail; /* verified; nothing to copy */
    memcpy(mi.id.b, m->model_id.data, 32);
    mi.n_layers = (int)m->n_layers;
    mi.hidden = (int)m->hidden;
    mi.n_experts = (int)m->n_experts;
    mi.top_k = (int)m->top_k;
    mi.n_moe_layers = (int)m->n_moe_layers;
    mi.n_files = (int)m->n_files;
    mi.created_unix_ns = m->created_unix_ns;
    mi.moe_layers = calloc(m->n_moe_layers ? m->n_moe_layers : 1, sizeof *mi.moe_layers);
    mi.files = calloc(m->n_files ? m->n_files : 1, sizeof *mi.files);
    if (!mi.moe_layers || !mi.files || dup_str(m->model_type, &mi.model_type) ||
        dup_str(m->first_seen_path, &mi.first_seen_path)) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: model record", what);
        goto fail;
    }
    for (size_t i = 0; i < m->n_moe_layers; i++)
        mi.moe_layers[i] = (int)m->moe_layers[i];
    for (size_t i = 0; i < m->n_files; i++) {
        mi.files[i].size = m->files[i]->size;
        memcpy(mi.files[i].digest, m->files[i]->digest.data, 32);
        if (dup_str(m->files[i]->path, &mi.files[i].path)) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: model record", what);
            goto fail;
        }
    }
    *out = mi;
    memset(&mi, 0, sizeof mi);
fail:
    reap_model_info_free(&mi);
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* ---- calibs ---------------------------------------------------------------------- */

int rec_calib_encode(const reap_calib_info *c, uint8_t **buf, size_t *len)
{
    PbCalib m = REAP__STORE__V1__CALIB_RECORD__INIT;
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.calib_id = pb_bytes(c->id.b, 32);
    m.source = pb_str(c->source);
    m.n_samples = c->n_samples;
    m.n_rows = (uint32_t)c->n_rows;
    m.seq_len = (uint32_t)c->seq_len;
    m.packing = c->pack ? REAP__STORE__V1__PACKING__PACKING_PACKED
                        : REAP__STORE__V1__PACKING__PACKING_NONE;
    m.n_tokens = c->n_tokens;
    if (c->has_tokenizer)
        m.tokenizer_digest = pb_bytes(c->tokenizer_digest, 32);
    m.created_unix_ns = c->created_unix_ns ? c->created_unix_ns : store_now_ns();
    return pack(&m.base, buf, len);
}

int rec_calib_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_calib_info *out)
{
    ProtobufCMessage *msg = NULL;
    int rc;
    if ((rc = unpack(&reap__store__v1__calib_record__descriptor, buf, len, what, &msg)))
        goto fail;
    PbCalib *m = (PbCalib *)msg;
    if (m->calib_id.len != 32 || (key && memcmp(key, m->calib_id.data, 32)) ||
        (m->tokenizer_digest.len != 0 && m->tokenizer_digest.len != 32) ||
        m->n_rows > INT32_MAX || m->seq_len > INT32_MAX ||
        (m->packing != REAP__STORE__V1__PACKING__PACKING_PACKED &&
         m->packing != REAP__STORE__V1__PACKING__PACKING_NONE)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged calibration record", what);
        goto fail;
    }
    if (!out)
        goto fail;
    memset(out, 0, sizeof *out);
    memcpy(out->id.b, m->calib_id.data, 32);
    out->n_samples = m->n_samples;
    out->n_rows = (int)m->n_rows;
    out->seq_len = (int)m->seq_len;
    out->pack = m->packing == REAP__STORE__V1__PACKING__PACKING_PACKED;
    out->n_tokens = m->n_tokens;
    out->has_tokenizer = m->tokenizer_digest.len == 32;
    if (out->has_tokenizer)
        memcpy(out->tokenizer_digest, m->tokenizer_digest.data, 32);
    out->created_unix_ns = m->created_unix_ns;
    if ((rc = dup_str(m->source, &out->source)))
        goto fail;
fail:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* ---- filehash -------------------------------------------------------------------- */

int rec_filehash_encode(const uint8_t digest[32], int64_t ctime_ns, const char *path,
                        uint8_t **buf, size_t *len)
{
    PbFileHash m = REAP__STORE__V1__FILE_HASH_RECORD__INIT;
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.digest = pb_bytes(digest, 32);
    m.ctime_ns = ctime_ns;
    m.path = pb_str(path);
    m.hashed_unix_ns = store_now_ns();
    return pack(&m.base, buf, len);
}

int rec_filehash_decode(const void *buf, size_t len, const char *what, uint8_t digest[32],
                        int64_t *ctime_ns)
{
    ProtobufCMessage *msg = NULL;
    int rc;
    if ((rc = unpack(&reap__store__v1__file_hash_record__descriptor, buf, len, what, &msg)))
        goto fail;
    PbFileHash *m = (PbFileHash *)msg;
    if (m->digest.len != 32) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged file-hash record", what);
        goto fail;
    }
    if (digest)
        memcpy(digest, m->digest.data, 32);
    if (ctime_ns)
        *ctime_ns = m->ctime_ns;
fail:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* ---- runs ------------------------------------------------------------------------ */

int rec_run_encode(const reap_run_info *r, uint8_t **buf, size_t *len)
{
    PbRun m = REAP__STORE__V1__RUN_RECORD__INIT;
    m.format_version = REAP_STORE_FORMAT_VERSION;
    m.run_id = pb_bytes(r->run_id, 16);
    m.model_id = pb_bytes(r->model.b, 32);
    m.calib_id = pb_bytes(r->calib.b, 32);
    m.state = (Reap__Store__V1__RunState)r->state;
    m.layers_done = (uint32_t)r->layers_done;
    m.n_layers = (uint32_t)r->n_layers;
    m.start_layer = (uint32_t)r->start_layer;
    m.backend = pb_str(r->backend);
    m.device = pb_str(r->device);
    m.started_unix_ns = r->started_unix_ns;
    m.updated_unix_ns = r->updated_unix_ns;
    m.finished_unix_ns = r->finished_unix_ns;
    m.n_layer_seconds = (size_t)r->n_layer_seconds;
    m.layer_seconds = r->layer_seconds;
    m.error = pb_str(r->error);
    m.pid = r->pid;
    m.host = pb_str(r->host);
    m.request = pb_str(r->request);
    m.stop = r->interrupted ? REAP__STORE__V1__RUN_STOP__RUN_STOP_INTERRUPTED
                            : REAP__STORE__V1__RUN_STOP__RUN_STOP_OTHER;
    return pack(&m.base, buf, len);
}

int rec_run_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                   reap_run_info *out)
{
    ProtobufCMessage *msg = NULL;
    reap_run_info r = {0};
    int rc;
    if ((rc = unpack(&reap__store__v1__run_record__descriptor, buf, len, what, &msg)))
        goto fail;
    PbRun *m = (PbRun *)msg;
    if (m->run_id.len != 16 || m->model_id.len != 32 || m->calib_id.len != 32 ||
        (key && memcmp(key, m->run_id.data, 16)) || m->n_layers > INT32_MAX ||
        m->layers_done > m->n_layers || m->n_layer_seconds > m->n_layers) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: damaged run record", what);
        goto fail;
    }
    if (!out)
        goto fail;
    memcpy(r.run_id, m->run_id.data, 16);
    memcpy(r.model.b, m->model_id.data, 32);
    memcpy(r.calib.b, m->calib_id.data, 32);
    r.state = (int)m->state;
    r.layers_done = (int)m->layers_done;
    r.n_layers = (int)m->n_layers;
    r.start_layer = (int)m->start_layer;
    r.started_unix_ns = m->started_unix_ns;
    r.updated_unix_ns = m->updated_unix_ns;
    r.finished_unix_ns = m->finished_unix_ns;
    r.pid = m->pid;
    /* Records written before `stop` existed say it in their error text only. */
    if (m->stop == REAP__STORE__V1__RUN_STOP__RUN_STOP_UNSPECIFIED)
        r.interrupted = (m->state == REAP__STORE__V1__RUN_STATE__RUN_STATE_FAILED ||
                         m->state == REAP__STORE__V1__RUN_STATE__RUN_STATE_CANCELLED) &&
                        m->error && !strncmp(m->error, "interrupted", 11);
    else
        r.interrupted = m->stop == REAP__STORE__V1__RUN_STOP__RUN_STOP_INTERRUPTED;
    r.n_layer_seconds = (int)m->n_layer_seconds;
    r.layer_seconds = malloc((m->n_layer_seconds ? m->n_layer_seconds : 1) * sizeof(double));
    if (!r.layer_seconds || dup_str(m->backend, &r.backend) ||
        dup_str(m->device, &r.device) || dup_str(m->error, &r.error) ||
        dup_str(m->host, &r.host) ||
        dup_str(m->request && *m->request ? m->request : NULL, &r.request)) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: run record", what);
        goto fail;
    }
    if (m->n_layer_seconds)
        memcpy(r.layer_seconds, m->layer_seconds, m->n_layer_seconds * sizeof(double));
    *out = r;
    memset(&r, 0, sizeof r);
fail:
    reap_run_info_free(&r);
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* records.h - encoding and decoding of the store's values (protobuf-c messages of
 * proto/reap_store.proto) with format-version checks and the statistics digest.
 * Internal to store/.
 *
 * Every decoder first reads field 1 (format_version) without parsing the rest: 0 or a
 * value that does not parse is REAP_E_FORMAT ("damaged"), a version above
 * REAP_STORE_FORMAT_VERSION is REAP_E_UNSUPPORTED ("written by a newer reap"). `what`
 * names the record in messages ("<dir>: stats <model>/<calib>/layer 3").
 * Encoders return a malloc'd buffer (free()).
 */
#ifndef REAP_STORE_RECORDS_H
#define REAP_STORE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "record_info.h"
#include "stats.h"
#include "store.h"

#define STORE_MAGIC "reap-store"

/* Check field 1 of an encoded value. REAP_OK, REAP_E_FORMAT, REAP_E_UNSUPPORTED. */
int rec_version_check(const void *buf, size_t len, const char *what);

/* ---- meta ---- */
int rec_meta_encode(uint8_t **buf, size_t *len);
/* REAP_OK when magic and version are acceptable. */
int rec_meta_check(const void *buf, size_t len, const char *what);

/* ---- statistics ---- */
/* BLAKE2b-256 over "reap-stats/1" | model | calib | layer, E, K (u32 LE) | tokens (i64 LE)
 * | per expert: count i64, sum_gate_norm, sum_norm, sum_gate (f64), max_act (f32 bits),
 * all little-endian. */
void rec_stats_digest(const reap_id *model, const reap_id *calib,
                      const reap_layer_stats *st, uint8_t out[32]);
/* positions_rule: the record's field 16 (proto/reap_store.proto; the store writes
 * REAP_STORE_POSITIONS_RULE). */
int rec_stats_encode(const reap_id *model, const reap_id *calib, const reap_layer_stats *st,
                     const char *backend, uint32_t positions_rule, uint8_t **buf,
                     size_t *len);
/* Decode and verify (digest, array lengths, and the key when key != NULL). out may be
 * NULL (verify only); else initialised here. model/calib/digest/positions_rule may be
 * NULL; *positions_rule is 0 for a record written without the field. */
int rec_stats_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_layer_stats *out, reap_id *model, reap_id *calib,
                     uint8_t digest[32], uint32_t *positions_rule);

/* ---- models, calibs ---- */
int rec_model_encode(const reap_model_info *m, uint8_t **buf, size_t *len);
/* key (32 B) may be NULL; out may be NULL (verify only). */
int rec_model_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_model_info *out);
int rec_calib_encode(const reap_calib_info *c, uint8_t **buf, size_t *len);
int rec_calib_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                     reap_calib_info *out);

/* ---- filehash ---- */
/* ctime_ns: the file's status-change time when hashed. decode: *ctime_ns (may be NULL)
 * receives it, 0 for a record written without it (never to be trusted). */
int rec_filehash_encode(const uint8_t digest[32], int64_t ctime_ns, const char *path,
                        uint8_t **buf, size_t *len);
int rec_filehash_decode(const void *buf, size_t len, const char *what, uint8_t digest[32],
                        int64_t *ctime_ns);

/* ---- runs ---- */
int rec_run_encode(const reap_run_info *r, uint8_t **buf, size_t *len);
int rec_run_decode(const void *buf, size_t len, const uint8_t *key, const char *what,
                   reap_run_info *out);

#endif

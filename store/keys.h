/* keys.h - the byte encodings shared by the store's keys and records: key sizes,
 * big-endian integers, the stats key, and the clock records are stamped with.
 * Not a public header. Pure functions (but store_now_ns); thread-safe.
 *
 * It sits below everything else in store/: the record codec (records.h) and the LMDB
 * environment (store_impl.h) both use it and it uses neither.
 */
#ifndef REAP_STORE_KEYS_H
#define REAP_STORE_KEYS_H

#include <stdint.h>

#include "store.h"

/* Key sizes. */
#define STORE_ID_LEN 32
#define STORE_STATS_KEY_LEN 68
#define STORE_RUN_ID_LEN 16
#define STORE_FILEHASH_KEY_LEN 32

/* Current wall-clock time in nanoseconds since the epoch. */
int64_t store_now_ns(void);

/* Big-endian helpers for keys. */
void store_be32(uint8_t *p, uint32_t v);
void store_be64(uint8_t *p, uint64_t v);
uint32_t store_rd_be32(const uint8_t *p);

/* The stats key: model_id | calib_id | layer (u32 big-endian). */
void store_stats_key(uint8_t key[STORE_STATS_KEY_LEN], const reap_id *model,
                     const reap_id *calib, uint32_t layer);

#endif

/* keys.c - the byte encodings shared by the store's keys and records (keys.h):
 * big-endian integers, the stats key, the clock records are stamped with. */
#include "keys.h"

#include <string.h>
#include <time.h>

int64_t store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void store_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint32_t store_rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void store_stats_key(uint8_t key[STORE_STATS_KEY_LEN], const reap_id *model,
                     const reap_id *calib, uint32_t layer)
{
    memcpy(key, model->b, 32);
    memcpy(key + 32, calib->b, 32);
    store_be32(key + 64, layer);
}

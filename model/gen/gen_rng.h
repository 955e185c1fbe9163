/* gen_rng.h - the generator's deterministic random numbers (internal to model/gen).
 *
 * splitmix64 seeds a xoshiro256** state (Blackman & Vigna); normals come from
 * Box-Muller (both values of a pair used, in order). A tensor's stream is seeded with
 * seed ^ gen_fnv1a64(its name), so its values depend only on (seed, name, shape).
 *
 * Thread rules: a gen_rng is used by one thread at a time.
 */
#ifndef REAP_GEN_RNG_H
#define REAP_GEN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct gen_rng {
    uint64_t s[4];
    int have_spare;     /* Box-Muller produces normals in pairs */
    double spare;
} gen_rng;

/* splitmix64: seeds the xoshiro state. */
static inline uint64_t gen_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t gen_rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: the next 64 random bits. */
static inline uint64_t gen_rng_next(gen_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = gen_rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = gen_rotl64(s[3], 45);
    return result;
}

static inline void gen_rng_seed(gen_rng *r, uint64_t seed)
{
    uint64_t sm = seed;

    for (int i = 0; i < 4; i++)
        r->s[i] = gen_splitmix64(&sm);
    r->have_spare = 0;
    r->spare = 0.0;
}

/* Uniform in (0, 1): 53 random bits, offset by half a step so 0 never occurs. */
static inline double gen_rng_uniform(gen_rng *r)
{
    return ((double)(gen_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Standard normal by Box-Muller; both values of a pair are used, in order. */
static inline double gen_rng_normal(gen_rng *r)
{
    double u1, u2, rad;

    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    u1 = gen_rng_uniform(r);
    u2 = gen_rng_uniform(r);
    rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(2.0 * M_PI * u2);
    r->have_spare = 1;
    return rad * cos(2.0 * M_PI * u2);
}

/* FNV-1a 64-bit hash of a name. */
static inline uint64_t gen_fnv1a64(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001B3ULL;
    }
    return h;
}

#endif

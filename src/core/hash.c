/*
 * Hashing and random numbers shared by the balancers, the cache index and
 * the canary splits: XXH64's single-lane path and xorshift64*.
 */
#include "core/hash.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/*
 * XXH64's single-lane path: 8 bytes a round, then 4, then 1, then a full
 * avalanche, so the high bits the pickers use depend on every input bit.
 * Byte order is the host's: hashes are not meant to leave the machine.
 */
uint64_t lg_hash64(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = seed + P5 + (uint64_t)n;
    for (; n >= 8; b += 8, n -= 8) {
        uint64_t k;
        memcpy(&k, b, 8);
        k = rotl64(k * P2, 31) * P1;
        h = rotl64(h ^ k, 27) * P1 + P4;
    }
    if (n >= 4) {
        uint32_t k;
        memcpy(&k, b, 4);
        h = rotl64(h ^ ((uint64_t)k * P1), 23) * P2 + P3;
        b += 4;
        n -= 4;
    }
    for (; n > 0; b++, n--)
        h = rotl64(h ^ (*b * P5), 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

void lg_rand_seed(uint64_t *rng, uint64_t seed)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;     /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    *rng = z ? z : P1;                              /* xorshift must not start at 0 */
}

uint64_t lg_rand_next(uint64_t *rng)
{
    uint64_t x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint32_t lg_rand_below(uint64_t *rng, uint32_t bound)
{
    return (uint32_t)lg_scale64(lg_rand_next(rng), bound);
}

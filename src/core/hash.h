/* Hashing and random numbers (hash.c). */
#ifndef LEGATE_CORE_HASH_H
#define LEGATE_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH64: fast, well mixed, host byte order (hashes never leave the machine). */
uint64_t lg_hash64(const void *p, size_t n, uint64_t seed);
/* xorshift64* seeded by splitmix64: per-worker, not for secrets. */
void     lg_rand_seed(uint64_t *rng, uint64_t seed);
uint64_t lg_rand_next(uint64_t *rng);
uint32_t lg_rand_below(uint64_t *rng, uint32_t bound);  /* uniform in [0, bound), bound > 0 */

/* Map a uniform 64-bit value onto [0, bound): the high word of the product. */
static inline uint64_t lg_scale64(uint64_t x, uint64_t bound)
{
#ifdef __SIZEOF_INT128__
    return (uint64_t)(((unsigned __int128)x * bound) >> 64);
#else
    return x % bound;
#endif
}

#endif

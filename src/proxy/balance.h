/*
 * Load-balancing algorithms: pure functions over an array of servers.
 *
 * They know nothing of sockets, workers or shared memory.  The caller fills
 * one lg_bal_server_t per server (from the configuration, from counters in
 * shared memory, and from the request's "already tried" set), calls a
 * picker and gets the chosen index, or -1 when no server is usable.  No
 * picker allocates, blocks or reads a clock; state that must persist between
 * picks (WRR weights, the RNG, the Maglev table) is the caller's, so it can
 * live per worker or in a shared zone under the caller's lock.
 *
 * Weights: the static pickers (IP hash, Maglev) use `weight`, so the mapping
 * stays put while servers warm up or recover; the dynamic ones (WRR, least
 * connections, the two-choice pickers) use the effective weight.  With no
 * load information every picker spreads requests in proportion to weight.
 */
#ifndef LEGATE_PROXY_BALANCE_H
#define LEGATE_PROXY_BALANCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/hash.h"

typedef struct lg_bal_server {
    uint32_t weight;            /* configured, 1..1000 */
    uint32_t eff_weight;        /* in use now, 1..weight (slow start, after failures); 0 = weight */
    uint32_t active;            /* open connections, all workers */
    uint32_t inflight;          /* requests awaiting a response, all workers */
    uint64_t ewma_us;           /* peak-EWMA latency now (lg_ewma_get); 0 = no sample yet */
    int      usable;            /* 0: down, ejected, or already tried for this request */
} lg_bal_server_t;

/* ---- pickers: each returns an index in [0, n) or -1 ---- */

/*
 * Smooth weighted round robin, nginx's algorithm: current[n] (zero to start)
 * is the caller's; the sequence for weights {5,1,1} is a a b a c a a.
 * Unusable servers are skipped and their current weight left alone.
 */
int lg_bal_wrr(const lg_bal_server_t *s, size_t n, int32_t *current);

/*
 * Weighted least connections: lowest active/eff_weight; ties are broken at
 * random in proportion to weight (so an idle upstream is spread by weight).
 */
int lg_bal_least_conn(const lg_bal_server_t *s, size_t n, uint64_t *rng);

/*
 * Power of two choices: two distinct usable servers drawn at random in
 * proportion to eff_weight, the one with the lower active/eff_weight wins
 * (the first drawn on a tie).
 */
int lg_bal_p2c(const lg_bal_server_t *s, size_t n, uint64_t *rng);

/*
 * Peak-EWMA two choices (Finagle's): drawn as lg_bal_p2c(), the lower
 * cost = ewma_us * (inflight + 1) / eff_weight wins.  A server with no
 * sample yet costs 0 when idle (it gets tried) and the most possible while
 * it has a request in flight (it gets one at a time until it is measured).
 */
int lg_bal_peak_ewma(const lg_bal_server_t *s, size_t n, uint64_t *rng);

/*
 * IP hash: nginx's choice of bytes (the first three octets of an IPv4
 * address, so a /24 sticks together; all sixteen of IPv6; an IPv4-mapped
 * IPv6 address counts as IPv4; other families all hash alike) and nginx's
 * probing: the hash picks a weight unit, and if that server is unusable the
 * hash is hashed again, up to 20 times, then the next usable server in
 * order is taken.  The hash itself is lg_hash64, not nginx's mod-6271 one,
 * which would starve every server past a cumulative weight of 6271.
 */
int lg_bal_ip_hash(const lg_bal_server_t *s, size_t n, const struct sockaddr *sa);

/*
 * Consistent hashing on a key: Maglev (Eisenbud et al., NSDI 2016).
 * A table of m entries (m prime, n <= m <= 2^32; LG_MAGLEV_M is a good
 * size up to a few hundred servers) is built once per configuration; each
 * server fills entries in proportion to its weight, following its own
 * permutation of the table derived from ids[i] (its address text: a
 * server's place must not depend on its index, or adding one would move
 * everything).
 *
 * A lookup is one table read; an unusable server's keys go to the next
 * entries of the table, which are spread over the other servers by weight.
 * This is deterministic: a key goes to the same server for as long as the
 * set of usable servers is the same, and marking a server unusable moves
 * only the keys it had.  Rebuilding the table with a server added or
 * removed moves about 1/n of the keys, plus a fraction of a percent more
 * than the minimum (Maglev trades that for even shares and O(1) lookups;
 * see the notes in balance.c).
 *
 * Build returns 0, or -1 with a message in err.  The table is the
 * caller's: m entries of uint16_t (so n <= 65535).
 */
#define LG_MAGLEV_M 65537

int lg_maglev_build(uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                    const char *const *ids, char *err, size_t errlen);
int lg_bal_maglev(const uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                  const void *key, size_t keylen);
/* The same, with the key already hashed by lg_maglev_hash(). */
int lg_bal_maglev_h(const uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                    uint64_t h);
uint64_t lg_maglev_hash(const void *key, size_t keylen);

/* ---- peak EWMA of response time ---- */

/*
 * The estimate jumps to any sample above it at once, and otherwise moves
 * towards the samples with time constant tau (a sample dt after the last
 * one has weight 1 - e^(-dt/tau)).  Read through lg_ewma_get(), it also
 * decays towards 0 while no sample comes, so a server shunned after a spike
 * is tried again after a few tau.  Clocks are monotonic microseconds.
 *
 * Not atomic: keep one per worker, or guard a shared one with a lock.
 */
typedef struct lg_ewma {
    double   value_us;          /* 0: no sample yet */
    uint64_t stamp_us;          /* time of the last sample */
} lg_ewma_t;

void     lg_ewma_update(lg_ewma_t *e, uint64_t sample_us, uint64_t now_us, uint64_t tau_us);
uint64_t lg_ewma_get(const lg_ewma_t *e, uint64_t now_us, uint64_t tau_us);

#endif

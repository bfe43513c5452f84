/*
 * The shared tables of the request-rate and concurrency limits
 * (limit_zone.c; the feature is limit.c).  Kept apart from the pipeline so
 * the unit tests drive the arithmetic and the eviction directly.
 *
 * LAYOUT (one shared-memory zone per limit zone, all offsets inside it)
 *
 *   0     lg_lz_t header: magic, kind, number of sets, the hash seed,
 *         eviction counters and the time of the last "zone is full" line
 *   64    nsets x lg_lz_set_t, 320 bytes each: a robust mutex (padded to
 *         64 bytes) and LG_LZ_WAYS entries of 32 bytes
 *         { key hash, last use (us), 16 bytes of state }; the state is the
 *         GCRA theoretical arrival time (us) of a rate zone, or, in a
 *         concurrency zone, the requests in flight counted in LG_LZ_LANES
 *         lanes, one per worker slot modulo LG_LZ_LANES: when a worker dies
 *         with requests in flight the master zeroes its lane, so that its
 *         requests do not stay counted for ever (with more than 8 workers,
 *         or while an old generation drains, a lane is shared and zeroing
 *         it forgets live requests too: the limit is then briefly looser,
 *         never stricter)
 *
 * A key lives in the set its hash chooses (a set-associative table, as a
 * CPU cache): lookups and updates touch one set, never a list shared by
 * the whole zone.  Keys are stored as 64-bit hashes with a per-zone seed
 * chosen when the zone is made; two keys colliding would share one state,
 * at odds of 2^-64 per pair.
 *
 * LOCKING
 *
 * One lg_shm_mutex_t per set, held for the few instructions of a lookup
 * and update, never across a system call or a log line.  A key's requests
 * wait only for the set's lock, so one key never blocks the keys of other
 * sets, and the zone has no lock of its own.  The header's counters are
 * relaxed atomics.  If a worker dies holding a set's lock, the next taker
 * goes on with what it finds: every field is written as a whole word, so
 * the worst a half-done update leaves is one key with another's timestamp
 * or a count one off, which the next updates wash out.
 *
 * EVICTION
 *
 * A new key takes, in order: an empty entry; a rate entry whose arrival
 * time has passed (its state is the same as no state: not an eviction); a
 * concurrency entry with nothing in flight; else, in a rate zone, the
 * least recently used entry of its set (an eviction: that key starts
 * afresh).  Concurrency entries with requests in flight are never evicted:
 * when all of a set's are busy the new key is not counted (LG_LZ_FULL) and
 * its request goes on, so that a full zone never refuses other keys.
 */
#ifndef LEGATE_FEATURE_LIMIT_ZONE_H
#define LEGATE_FEATURE_LIMIT_ZONE_H

#include <stddef.h>
#include <stdint.h>

#include "core/shm.h"

#define LG_LZ_WAYS  8
#define LG_LZ_MAGIC 0x4c4c5a31u        /* "LLZ1" */

#define LG_LZ_LANES 8

typedef struct lg_lz_entry {
    uint64_t hash;                      /* 0: empty */
    int64_t  last;                      /* last use, us */
    union {
        int64_t  tat;                   /* rate zones: theoretical arrival time, us */
        uint16_t lane[LG_LZ_LANES];     /* concurrency zones: in flight per slot % LANES */
    } u;
} lg_lz_entry_t;

_Static_assert(sizeof(lg_lz_entry_t) == 32, "an entry is half a cache line");

typedef struct lg_lz_set {
    _Alignas(64) lg_shm_mutex_t mx;
    _Alignas(64) lg_lz_entry_t e[LG_LZ_WAYS];
} lg_lz_set_t;

typedef struct lg_lz {
    uint32_t         magic;
    uint32_t         conn;              /* 1: a concurrency zone */
    uint64_t         nsets;
    uint64_t         seed;
    lg_shm_counter_t evictions;         /* keys evicted with live state, ever */
    lg_shm_counter_t full;              /* concurrency keys not counted for lack of room, ever */
    _Atomic int64_t  logged_at;         /* ms of the last "zone is full" line */
    lg_shm_counter_t logged_evictions;  /* evictions + full at that time */
    _Alignas(64) lg_lz_set_t sets[];
} lg_lz_t;

/* How many bytes a zone of `size` bytes really uses (whole sets). */
size_t   lg_lz_bytes(size_t size);
/* Make a table in zeroed memory of `size` bytes (the master, the zone fresh).
 * 0, or -1 when size holds no set or the mutexes cannot be made. */
int      lg_lz_init(lg_lz_t *z, size_t size, int conn, uint64_t seed);
/* The number of keys it can hold. */
static inline size_t lg_lz_capacity(const lg_lz_t *z) { return (size_t)z->nsets * LG_LZ_WAYS; }
uint64_t lg_lz_hash(const lg_lz_t *z, const char *key, size_t n);

/*
 * GCRA, in microseconds.  interval: 1 s / rate; burst: requests allowed past
 * the rate; delay: of those, how many are passed without waiting.  At `now`
 * a request of key h is:
 *   LG_LZ_PASS     let through, *wait_us = 0
 *   LG_LZ_DELAY    let through after *wait_us
 *   LG_LZ_REJECT   refused; *wait_us is when it would conform again
 * dry: account as usual but never refuse (the caller reports what would
 * have happened from the return value; the state is not charged for a
 * request that would have been refused).
 * *evicted is set to 1 when a live key had to make room.
 */
enum { LG_LZ_PASS = 0, LG_LZ_DELAY = 1, LG_LZ_REJECT = 2, LG_LZ_FULL = 3 };

int      lg_lz_rate(lg_lz_t *z, uint64_t h, int64_t now, int64_t interval, int64_t burst,
                    int64_t delay, int64_t *wait_us, int *evicted);

/* The arithmetic alone, on one theoretical arrival time (unit tests, and
 * lg_lz_rate under the set's lock).  Updates *tat unless it rejects. */
int      lg_gcra(int64_t *tat, int64_t now, int64_t interval, int64_t burst, int64_t delay,
                 int64_t *wait_us);

/*
 * Bandwidth: of n bytes key h wants to send at `now` (us), how many it may,
 * at rate bytes a second shared by every request of the key; 0 with
 * *wait_us until some may.
 */
size_t   lg_lz_bandwidth(lg_lz_t *z, uint64_t h, int64_t now, int64_t rate, size_t n, int64_t *wait_us);

/*
 * Concurrency: count one more request of key h if fewer than max are in
 * flight (LG_LZ_PASS; release it later), refuse it (LG_LZ_REJECT), or
 * LG_LZ_FULL: no room to count it (not counted: do not release).  dry:
 * count it even past max, returning LG_LZ_REJECT (release it later too).
 */
int      lg_lz_conn_acquire(lg_lz_t *z, uint64_t h, int64_t now, int64_t max, int dry, int slot);
void     lg_lz_conn_release(lg_lz_t *z, uint64_t h, int slot);
/* Requests in flight for h (tests, logs). */
int64_t  lg_lz_conn_count(lg_lz_t *z, uint64_t h);
/* The master: worker `slot` died; forget what it had in flight. */
void     lg_lz_conn_clear_slot(lg_lz_t *z, int slot);

#endif

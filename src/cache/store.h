/*
 * The shared HTTP cache store: one zone of the shared-memory segment, so a
 * response stored by one worker is a hit in every worker, a purge applies
 * to all, and the cache survives a reload (same zone, same size).
 *
 * Layout (offsets from the zone's start, never pointers):
 *
 *   header | index[nslots] | ring[capacity]
 *
 * Objects are appended to the ring at an ever-growing absolute position
 * `wpos` (the ring offset is wpos % capacity; an object never wraps: the
 * tail is skipped).  An object at absolute position p is intact while
 * p >= wpos - capacity, which is how a reader knows, after copying it out,
 * that no writer overwrote it meanwhile: eviction is by age of storing
 * (FIFO), and costs nothing, except that a hit on an object in the oldest
 * quarter copies it to the front (FIFO with reinsertion, an LRU
 * approximation: what is used stays, what is not leaves in order).  The index is an open-addressed table of
 * fixed windows; an entry names its object by key hash and position.
 *
 * Locking: one robust process-shared mutex guards the header and index, held
 * for a few hundred nanoseconds (no copying under it).  Writers reserve
 * space under the lock, copy outside it, then publish the entry under it.
 * A worker killed while holding it leaves at worst one entry half-written:
 * the next locker sees the owner died, and entries are validated against
 * their object header on every read anyway.
 *
 * A key may also be in state FILLING: one worker is fetching it, others
 * wait (collapsed forwarding) until it is VALID, the filler's deadline
 * passes, or the filler is gone.
 */
#ifndef LEGATE_CACHE_STORE_H
#define LEGATE_CACHE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/shm.h"

typedef struct lg_cache lg_cache_t;

/* What a stored response carries besides its bytes. */
typedef struct lg_cmeta {
    int64_t  stored;            /* wall ms when stored (or revalidated) */
    int64_t  expires;           /* wall ms when it stops being fresh */
    int64_t  stale_if_error;    /* ms after expires it may still serve on upstream errors */
    int64_t  stale_while_revalidate; /* ms after expires it may serve while one refresh runs */
    int64_t  identity_len;      /* LG_CF_GZIPPED: the body's length before compression */
    int64_t  age0;              /* seconds of Age it already had when stored */
    uint32_t flags;             /* LG_CF_* */
    int      status;
} lg_cmeta_t;

#define LG_CF_MUST_REVALIDATE 0x1   /* no-cache / must-revalidate: check each time once stale */
#define LG_CF_HAS_VALIDATOR   0x2   /* ETag or Last-Modified: revalidation possible */
#define LG_CF_GZIPPED         0x4   /* compressed here when stored: gunzip for other clients */
#define LG_CF_IMMUTABLE       0x8   /* immutable: a reload does not revalidate it while fresh */

typedef enum lg_cache_look {
    LG_CACHE_MISS    = 0,       /* nothing: go upstream (and *fill is set: you fill it) */
    LG_CACHE_HIT     = 1,       /* found: meta, head and body copied out */
    LG_CACHE_WAIT    = 2,       /* another worker is filling it: ask again soon */
} lg_cache_look_t;

/* Master: attach (and on first use format) the zone of `size` bytes. */
lg_cache_t *lg_store_attach(lg_shm_t *shm, size_t size, char *err, size_t errlen);
/* 1 if that attach made the zone empty (first use, or a new size). */
int  lg_store_fresh(const lg_cache_t *c);

/*
 * Master only, with no worker running: write the whole zone to path (via
 * path.tmp and a rename), or read it back into a fresh zone of the same
 * size.  load returns the objects found, 0 when there is no file, -1 with
 * err when the file is unusable (the cache then starts empty).
 */
int  lg_store_save(lg_cache_t *c, const char *path, char *err, size_t errlen);
int  lg_store_load(lg_cache_t *c, const char *path, char *err, size_t errlen);

/*
 * Look key up.  On HIT, *obj is a malloc'd copy of [head | body] with the
 * head's and the body's lengths, and *meta.  On MISS with may_fill, the key
 * is marked FILLING for this process until lock_ms from now (*filler = 1)
 * unless another filler (another process, or another token of this one:
 * each request has its own) fills it (then WAIT).  Fresh or not is the
 * caller's decision from meta.
 */
lg_cache_look_t lg_store_get(lg_cache_t *c, const char *key, size_t keylen, int may_fill,
                             int64_t lock_ms, uint64_t token, char **obj, size_t *head_len,
                             size_t *body_len, lg_cmeta_t *meta, int *filler);

/* Store (replacing): the head (HTTP response head, CRLF CRLF included) and body. */
int  lg_store_put(lg_cache_t *c, const char *key, size_t keylen, const lg_cmeta_t *meta,
                  const char *head, size_t head_len, const char *body, size_t body_len);
/*
 * cache_min_uses: count one request for key; 1 when it has now been asked
 * for min_uses times (or is stored or being filled already): store its
 * answer; 0: not yet (go upstream, store nothing).  Counts live in index
 * slots and are the first thing given up when slots are short.
 */
int  lg_store_count_use(lg_cache_t *c, const char *key, size_t keylen, int min_uses);

/*
 * stale-while-revalidate: claim the refresh of a stored key until `until`
 * (wall ms).  1: the caller starts it; 0: one is already running (or the
 * key is gone).  Storing the key again ends the claim.
 */
int  lg_store_try_update(lg_cache_t *c, const char *key, size_t keylen, int64_t until);
/* Give up a FILLING mark (the response was not storable, or failed). */
void lg_store_abandon(lg_cache_t *c, const char *key, size_t keylen);
/* Remove one key; 1 if something was there. */
int  lg_store_delete(lg_cache_t *c, const char *key, size_t keylen);
/* Every key starting with prefix: removed, or (soft) marked stale.  Returns how many. */
int  lg_store_purge_prefix(lg_cache_t *c, const char *prefix, size_t n, int soft);
/* Mark one key stale (soft purge); 1 if it was there. */
int  lg_store_expire(lg_cache_t *c, const char *key, size_t keylen);

/*
 * The disk tier's feed (worker 0, from a timer): objects in the oldest
 * eighth of the ring, about to be overwritten and not offered before,
 * copied out and given to fn, the oldest first, up to about budget bytes
 * a call.  How many were given.
 */
typedef void (*lg_store_demote_fn)(void *arg, const char *key, size_t keylen, const lg_cmeta_t *meta,
                                   const char *head, size_t head_len, const char *body,
                                   size_t body_len);
int  lg_store_demote(lg_cache_t *c, size_t budget, lg_store_demote_fn fn, void *arg);

typedef struct lg_store_stats {
    uint64_t hits, misses, stores, evictions, promotions, objects;
    uint64_t capacity, used;
} lg_cache_stats_t;
void lg_store_stats(lg_cache_t *c, lg_cache_stats_t *st);
size_t lg_store_max_object(const lg_cache_t *c);
void   lg_store_set_max_object(lg_cache_t *c, size_t n);   /* at most an eighth of the ring */

#endif

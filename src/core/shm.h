/*
 * The shared-memory segment: one anonymous MAP_SHARED mapping made by the
 * master before it forks workers, divided into named zones.  Layout, locking
 * rules and the reload protocol are described at the top of shm.c.
 *
 * In short: only the master calls lg_shm_zone(), lg_shm_mark_unused() and
 * lg_shm_sweep(); workers use the zone addresses they inherit.  Data inside a
 * zone is guarded by an lg_shm_mutex_t kept in that zone, or is made of the
 * C11 atomics below.  Nothing stored inside the segment is a pointer:
 * references are offsets from the segment base (lg_shm_off / lg_shm_ptr).
 */
#ifndef LEGATE_CORE_SHM_H
#define LEGATE_CORE_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define LG_SHM_ALIGN     64     /* every zone starts on a cache line */
#define LG_SHM_MAX_ZONES 64
#define LG_SHM_NAME_MAX  31     /* bytes in a zone name, without the NUL */

/* Opaque; the handle is the segment's first byte (its header). */
typedef struct lg_shm lg_shm_t;

/*
 * Map a segment with `size` bytes of room for zones (the header is added, the
 * total rounded up to a page).  NULL with a message in err on failure.
 */
lg_shm_t *lg_shm_create(size_t size, char *err, size_t errlen);

/* Unmap in the calling process only; others keep their mapping.  NULL-safe. */
void      lg_shm_destroy(lg_shm_t *shm);

/*
 * Find or create the zone `name` (1..LG_SHM_NAME_MAX bytes) of `size` bytes.
 * The same name and size as an existing zone return its memory unchanged
 * with *fresh = 0: that is how state survives a reload.  A new name, or a
 * new size for an existing name, gets zeroed memory and *fresh = 1; the old
 * memory of a resized zone stays reserved (old workers may still use it)
 * until lg_shm_sweep() releases it.  fresh may be NULL.
 *
 * Returns NULL with errno ENOSPC (no room, or LG_SHM_MAX_ZONES in use),
 * EINVAL (bad name or size), or EPERM (called in a process other than the
 * one that created the segment).  64-byte aligned.
 */
void     *lg_shm_zone(lg_shm_t *shm, const char *name, size_t size, int *fresh);

/*
 * Start a new generation before re-requesting zones on reload; returns its
 * number (the first generation is 1).  Every lg_shm_zone() stamps the zone
 * with the current generation.
 */
unsigned  lg_shm_mark_unused(lg_shm_t *shm);

/*
 * Release every zone not requested in generation `oldest` or later, and the
 * old memory of zones resized before it.  Call it with the generation of the
 * oldest configuration that still has live workers (after the last worker
 * of an older one has been reaped): space is handed out again by the next
 * lg_shm_zone(), and a draining worker must never see its zone reused.
 * Returns how many zones were released, or -1 (errno EPERM/EINVAL).
 */
int       lg_shm_sweep(lg_shm_t *shm, unsigned oldest);

/* Offsets from the segment base; 0 is never a zone byte and means "none". */
static inline uint64_t lg_shm_off(const lg_shm_t *shm, const void *p)
{
    return p ? (uint64_t)((const char *)p - (const char *)shm) : 0;
}

static inline void *lg_shm_ptr(lg_shm_t *shm, uint64_t off)
{
    return off ? (char *)shm + off : NULL;
}

/*
 * Process-shared robust mutexes.  If a process dies holding one (a worker
 * killed with SIGKILL), the kernel releases it and the next lg_shm_lock()
 * returns 1: the mutex has been made consistent and is held, but the data
 * it protects may be half-updated and the caller must validate or reset it.
 * Otherwise lg_shm_lock() returns 0.  Any other failure is a broken
 * invariant and aborts.
 *
 * Initialise once, when the zone that holds it is fresh; never re-initialise
 * a mutex another process may hold.  Hold it for a few instructions only:
 * no system call, allocation or logging inside.
 */
typedef struct lg_shm_mutex {
    pthread_mutex_t m;
} lg_shm_mutex_t;

int  lg_shm_mutex_init(lg_shm_mutex_t *mx);     /* 0 or an errno value */
int  lg_shm_lock(lg_shm_mutex_t *mx);           /* 0, or 1: owner died */
void lg_shm_unlock(lg_shm_mutex_t *mx);

/*
 * Lock-free counters for zones.  Relaxed ordering: they are statistics and
 * balancing inputs that tolerate being a moment stale, and nothing else is
 * published through them.  Process-shared atomics must be lock-free (an
 * emulated atomic would take a lock private to each process).
 */
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
               "64-bit atomics are not lock-free: shared counters would not work");
_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0),
               "32-bit atomics are not lock-free: shared counters would not work");

typedef _Atomic uint64_t lg_shm_counter_t;

static inline uint64_t lg_shm_get(const lg_shm_counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void lg_shm_set(lg_shm_counter_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Returns the new value. */
static inline uint64_t lg_shm_add(lg_shm_counter_t *c, uint64_t v)
{
    return atomic_fetch_add_explicit(c, v, memory_order_relaxed) + v;
}

/*
 * Subtract, stopping at 0, and return the new value.  A gauge such as
 * "active connections" can be reset by the master after a worker died with
 * connections open; the survivors' decrements must then not wrap around.
 */
static inline uint64_t lg_shm_sub_sat(lg_shm_counter_t *c, uint64_t v)
{
    uint64_t old = atomic_load_explicit(c, memory_order_relaxed), nv;
    do {
        nv = old > v ? old - v : 0;
    } while (!atomic_compare_exchange_weak_explicit(c, &old, nv, memory_order_relaxed,
                                                    memory_order_relaxed));
    return nv;
}

/* Raise *c to at least v (a high-water mark); returns the resulting value. */
static inline uint64_t lg_shm_max(lg_shm_counter_t *c, uint64_t v)
{
    uint64_t old = atomic_load_explicit(c, memory_order_relaxed);
    while (old < v && !atomic_compare_exchange_weak_explicit(c, &old, v, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
    return old < v ? v : old;
}

#endif

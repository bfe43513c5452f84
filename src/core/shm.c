/*
 * The shared-memory segment.
 *
 * LAYOUT
 *
 * One mmap(MAP_SHARED|MAP_ANONYMOUS) made by the master; workers inherit it
 * at the same address when they fork.  All positions are byte offsets from
 * the segment base, which is also the lg_shm_t pointer:
 *
 *   0          struct lg_shm: magic "LGSM", version, total size, the first
 *              data offset, a high-water mark, the creator's pid, the
 *              current generation, then the zone table: LG_SHM_MAX_ZONES
 *              records of 64 bytes { name[32], off, size, span, gen, state }
 *   data_off   zone memory: each zone at a multiple of 64 bytes, taking
 *              `span` = size rounded up to 64; placed first-fit, so space a
 *              sweep released is reused
 *   size       end of the mapping (a multiple of the page size)
 *
 * The segment holds no pointers.  Zones are found through offsets in the
 * table, and data in zones that refers to other data stores offsets too
 * (lg_shm_off / lg_shm_ptr; offset 0 is the header, so it means "none").
 * Today every process maps the segment at the same address, but nothing may
 * depend on it: a named segment or a re-executed binary would not.
 *
 * LOCKING RULES
 *
 * 1. The header and the zone table belong to the master.  Only the process
 *    that created the segment may call lg_shm_zone(), lg_shm_mark_unused()
 *    and lg_shm_sweep() (others get EPERM); it is single-threaded, so the
 *    table needs no lock.  Workers never read the table: they get the zone
 *    addresses from the master through the configuration they inherit.
 * 2. Zone contents belong to whoever requested the zone.  They are shared by
 *    all workers of every live generation, so every access is either a C11
 *    atomic (lg_shm_counter_t: relaxed counters and gauges) or made holding
 *    an lg_shm_mutex_t stored in the same zone.
 * 3. Those mutexes are robust: a worker killed while holding one does not
 *    block the others.  The next lg_shm_lock() returns 1, and the caller
 *    must then check or rebuild what the mutex guards before using it,
 *    because the dead worker may have stopped half-way through an update.
 *    Keep critical sections to a few instructions (no system call, no
 *    allocation, no logging) so that this repair stays simple.
 * 4. A mutex is initialised by the master when its zone is fresh, before
 *    any worker can see it, and never again while the zone lives.
 *
 * RELOAD
 *
 * The master keeps the segment across reloads.  It calls lg_shm_mark_unused()
 * (a new generation), then builds the new configuration, which requests its
 * zones again: a zone requested with the same name and size keeps its memory
 * and its state (*fresh = 0).  A zone whose size changed gets new zeroed
 * memory; its old memory stays reserved, because workers of the previous
 * configuration keep using it while they drain.  When the last worker of a
 * generation has exited, lg_shm_sweep(oldest live generation) releases the
 * zones no live generation requested and the old memory of resized zones.
 * Until then the space is simply unavailable: a segment too small for two
 * configurations at once makes the reload fail (ENOSPC), never corrupts.
 * A failed reload releases nothing either: the running configuration's
 * zones keep the generation that protects them from the sweep.
 */
#include "core/shm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHM_MAGIC   0x4c47534du         /* "LGSM" */
#define SHM_VERSION 1u

#define ROUND_UP(n, a) (((n) + (a) - 1) & ~((uint64_t)(a) - 1))

enum {
    ZONE_FREE    = 0,                   /* slot unused */
    ZONE_LIVE    = 1,                   /* found by name */
    ZONE_RETIRED = 2,                   /* replaced by a resize; space held until swept */
};

typedef struct shm_zone {
    char     name[LG_SHM_NAME_MAX + 1];
    uint64_t off;                       /* from the segment base, multiple of 64 */
    uint64_t size;                      /* as requested */
    uint64_t span;                      /* size rounded up to 64: space occupied */
    uint32_t gen;                       /* last generation that requested it */
    uint32_t state;                     /* ZONE_* */
} shm_zone_t;

_Static_assert(sizeof(shm_zone_t) == 64, "a zone record is one cache line");

struct lg_shm {
    uint32_t   magic;
    uint32_t   version;
    uint64_t   size;                    /* of the whole mapping, header included */
    uint64_t   data_off;                /* first byte a zone may use */
    uint64_t   hwm;                     /* bytes past this were never handed out: still zero */
    int32_t    owner;                   /* pid of the creator, the only writer of the table */
    uint32_t   gen;                     /* current generation, from 1 */
    _Alignas(LG_SHM_ALIGN) shm_zone_t zones[LG_SHM_MAX_ZONES];
};

_Static_assert(sizeof(struct lg_shm) % LG_SHM_ALIGN == 0, "zone data must start aligned");

lg_shm_t *lg_shm_create(size_t size, char *err, size_t errlen)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    if (size == 0 || size > ((uint64_t)1 << 46)) {
        snprintf(err, errlen, "shared memory size %zu out of range", size);
        return NULL;
    }
    uint64_t total = ROUND_UP(sizeof(struct lg_shm) + (uint64_t)size, (uint64_t)page);
    lg_shm_t *shm = mmap(NULL, total, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
        snprintf(err, errlen, "mmap(%llu bytes of shared memory) failed: %s",
                 (unsigned long long)total, strerror(errno));
        return NULL;
    }
    /* An anonymous mapping is zero-filled: only the non-zero fields. */
    shm->magic = SHM_MAGIC;
    shm->version = SHM_VERSION;
    shm->size = total;
    shm->data_off = sizeof(struct lg_shm);
    shm->hwm = shm->data_off;
    shm->owner = (int32_t)getpid();
    shm->gen = 1;
    return shm;
}

void lg_shm_destroy(lg_shm_t *shm)
{
    if (shm)
        munmap(shm, shm->size);
}

/* The checks every table operation starts with; sets errno. */
static int shm_writable(const lg_shm_t *shm)
{
    if (shm == NULL || shm->magic != SHM_MAGIC || shm->version != SHM_VERSION) {
        errno = EINVAL;
        return 0;
    }
    if (shm->owner != (int32_t)getpid()) {
        errno = EPERM;
        return 0;
    }
    return 1;
}

static int overlaps(const lg_shm_t *shm, uint64_t at, uint64_t span)
{
    for (size_t i = 0; i < LG_SHM_MAX_ZONES; i++) {
        const shm_zone_t *z = &shm->zones[i];
        if (z->state != ZONE_FREE && at < z->off + z->span && z->off < at + span)
            return 1;
    }
    return 0;
}

/*
 * Lowest free range of `span` bytes, or 0.  A lowest fitting gap starts
 * either at data_off or right after some zone, so those are the only
 * candidates: 65 x 64 checks at most, once per zone creation.
 */
static uint64_t first_fit(const lg_shm_t *shm, uint64_t span)
{
    uint64_t best = 0;
    for (size_t c = 0; c <= LG_SHM_MAX_ZONES; c++) {
        uint64_t at;
        if (c == LG_SHM_MAX_ZONES)
            at = shm->data_off;
        else if (shm->zones[c].state != ZONE_FREE)
            at = shm->zones[c].off + shm->zones[c].span;
        else
            continue;
        if (span > shm->size - at || (best && at >= best))
            continue;
        if (!overlaps(shm, at, span))
            best = at;
    }
    return best;
}

void *lg_shm_zone(lg_shm_t *shm, const char *name, size_t size, int *fresh)
{
    if (fresh)
        *fresh = 0;
    if (!shm_writable(shm))
        return NULL;
    size_t len = name ? strnlen(name, LG_SHM_NAME_MAX + 1) : 0;
    if (len == 0 || len > LG_SHM_NAME_MAX || size == 0) {
        errno = EINVAL;
        return NULL;
    }

    shm_zone_t *old = NULL, *slot = NULL;
    for (size_t i = 0; i < LG_SHM_MAX_ZONES; i++) {
        shm_zone_t *z = &shm->zones[i];
        if (z->state == ZONE_LIVE && strcmp(z->name, name) == 0)
            old = z;
        else if (z->state == ZONE_FREE && slot == NULL)
            slot = z;
    }
    if (old && old->size == size) {
        old->gen = shm->gen;
        return (char *)shm + old->off;
    }

    uint64_t span = ROUND_UP((uint64_t)size, LG_SHM_ALIGN);
    uint64_t off = span <= shm->size ? first_fit(shm, span) : 0;
    if (slot == NULL || off == 0) {
        errno = ENOSPC;
        return NULL;
    }
    char *p = (char *)shm + off;
    if (off < shm->hwm)                 /* reused space; above hwm it is still zero */
        memset(p, 0, shm->hwm - off < span ? shm->hwm - off : span);
    if (off + span > shm->hwm)
        shm->hwm = off + span;

    memset(slot->name, 0, sizeof(slot->name));
    memcpy(slot->name, name, len);
    slot->off = off;
    slot->size = size;
    slot->span = span;
    slot->gen = shm->gen;
    slot->state = ZONE_LIVE;
    if (old)
        old->state = ZONE_RETIRED;      /* keeps its gen: swept with its generation */
    if (fresh)
        *fresh = 1;
    return p;
}

unsigned lg_shm_mark_unused(lg_shm_t *shm)
{
    if (!shm_writable(shm))
        return 0;
    return ++shm->gen;
}

int lg_shm_sweep(lg_shm_t *shm, unsigned oldest)
{
    if (!shm_writable(shm))
        return -1;
    int n = 0;
    for (size_t i = 0; i < LG_SHM_MAX_ZONES; i++) {
        shm_zone_t *z = &shm->zones[i];
        if (z->state != ZONE_FREE && z->gen < oldest) {
            memset(z, 0, sizeof(*z));
            n++;
        }
    }
    return n;
}

int lg_shm_mutex_init(lg_shm_mutex_t *mx)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc != 0)
        return rc;
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&mx->m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

int lg_shm_lock(lg_shm_mutex_t *mx)
{
    int rc = pthread_mutex_lock(&mx->m);
    if (rc == 0)
        return 0;
    if (rc == EOWNERDEAD && pthread_mutex_consistent(&mx->m) == 0)
        return 1;
    /*
     * ENOTRECOVERABLE cannot happen (we always make the mutex consistent);
     * EINVAL means memory that is not an initialised mutex.  Either way the
     * data is not protected any more: stop loudly, the master replaces us.
     */
    fprintf(stderr, "lg_shm_lock: pthread_mutex_lock: %s\n", strerror(rc));
    abort();
}

void lg_shm_unlock(lg_shm_mutex_t *mx)
{
    pthread_mutex_unlock(&mx->m);
}

/*
 * The shared tables of the limits: layout, locking and eviction are
 * described in limit_zone.h.  Every function here runs under one set's
 * lock for a few dozen instructions: no system call, no allocation, no log.
 */
#include "feature/limit_zone.h"

#include <string.h>

#include "core/hash.h"

size_t lg_lz_bytes(size_t size)
{
    if (size < sizeof(lg_lz_t) + sizeof(lg_lz_set_t))
        return 0;
    size_t nsets = (size - sizeof(lg_lz_t)) / sizeof(lg_lz_set_t);
    return sizeof(lg_lz_t) + nsets * sizeof(lg_lz_set_t);
}

int lg_lz_init(lg_lz_t *z, size_t size, int conn, uint64_t seed)
{
    if (lg_lz_bytes(size) == 0)
        return -1;
    z->nsets = (size - sizeof(lg_lz_t)) / sizeof(lg_lz_set_t);
    z->conn = (uint32_t)conn;
    z->seed = seed;
    for (uint64_t i = 0; i < z->nsets; i++)
        if (lg_shm_mutex_init(&z->sets[i].mx) != 0)
            return -1;
    z->magic = LG_LZ_MAGIC;
    return 0;
}

uint64_t lg_lz_hash(const lg_lz_t *z, const char *key, size_t n)
{
    uint64_t h = lg_hash64(key, n, z->seed);
    return h ? h : 1;           /* 0 marks an empty entry */
}

static lg_lz_set_t *set_of(lg_lz_t *z, uint64_t h)
{
    return &z->sets[lg_scale64(h, z->nsets)];
}

static int64_t in_flight(const lg_lz_entry_t *e)
{
    int64_t n = 0;
    for (int i = 0; i < LG_LZ_LANES; i++)
        n += e->u.lane[i];
    return n;
}

/* An entry whose state is the same as no state at all. */
static int idle(const lg_lz_t *z, const lg_lz_entry_t *e, int64_t now)
{
    return e->hash == 0 || (z->conn ? in_flight(e) == 0 : e->u.tat <= now);
}

/*
 * The entry of h in its set, made if need be (see EVICTION in the header);
 * NULL when a concurrency set has no idle entry.  Under the set's lock.
 */
static lg_lz_entry_t *entry(lg_lz_t *z, lg_lz_set_t *s, uint64_t h, int64_t now, int *evicted)
{
    lg_lz_entry_t *free_e = NULL, *lru = NULL;
    for (int i = 0; i < LG_LZ_WAYS; i++) {
        lg_lz_entry_t *e = &s->e[i];
        if (e->hash == h)
            return e;
        if (idle(z, e, now)) {
            /* an empty entry first, else the idle one used longest ago */
            if (free_e == NULL || (free_e->hash != 0 && (e->hash == 0 || e->last < free_e->last)))
                free_e = e;
        } else if (lru == NULL || e->last < lru->last) {
            lru = e;
        }
    }
    lg_lz_entry_t *e = free_e;
    if (e == NULL) {
        if (z->conn)
            return NULL;        /* requests in flight are never forgotten */
        e = lru;
        *evicted = 1;
        lg_shm_add(&z->evictions, 1);
    }
    e->hash = h;
    memset(&e->u, 0, sizeof(e->u));
    e->last = now;
    return e;
}

int lg_gcra(int64_t *tat, int64_t now, int64_t interval, int64_t burst, int64_t delay,
            int64_t *wait_us)
{
    /* GCRA: the key is `ahead` of its schedule of one request per interval;
     * up to burst intervals ahead conform, and the request moves the
     * schedule on by one interval.  Past delay intervals ahead, the request
     * waits until it is only delay intervals ahead. */
    int64_t t = *tat > now ? *tat : now;
    int64_t ahead = t - now;
    if (ahead > burst * interval) {
        *wait_us = ahead - burst * interval;
        return LG_LZ_REJECT;
    }
    *tat = t + interval;
    int64_t w = ahead - delay * interval;
    *wait_us = w > 0 ? w : 0;
    return w > 0 ? LG_LZ_DELAY : LG_LZ_PASS;
}

int lg_lz_rate(lg_lz_t *z, uint64_t h, int64_t now, int64_t interval, int64_t burst,
               int64_t delay, int64_t *wait_us, int *evicted)
{
    lg_lz_set_t *s = set_of(z, h);
    lg_shm_lock(&s->mx);        /* owner died: go on, see LOCKING */
    lg_lz_entry_t *e = entry(z, s, h, now, evicted);
    int rc = lg_gcra(&e->u.tat, now, interval, burst, delay, wait_us);
    e->last = now;
    lg_shm_unlock(&s->mx);
    return rc;
}

size_t lg_lz_bandwidth(lg_lz_t *z, uint64_t h, int64_t now, int64_t rate, size_t n, int64_t *wait_us)
{
    /* GCRA over bytes: the arrival time advances by each byte's share of a
     * second; a tenth of a second's worth (at least 16 KiB) may go ahead */
    int64_t burst = rate / 10 > 16384 ? rate / 10 : 16384;
    int64_t burst_us = burst * 1000000 / rate;
    int evicted = 0;
    size_t grant = 0;
    lg_lz_set_t *s = set_of(z, h);
    lg_shm_lock(&s->mx);
    lg_lz_entry_t *e = entry(z, s, h, now, &evicted);
    int64_t tat = e->u.tat > now ? e->u.tat : now;
    int64_t credit = now + burst_us - tat;      /* µs of sending left */
    if (credit > 0) {
        int64_t k = credit * rate / 1000000;
        grant = k < (int64_t)n ? (size_t)k : n;
        tat += (int64_t)grant * 1000000 / rate;
        e->u.tat = tat;
    }
    e->last = now;
    lg_shm_unlock(&s->mx);
    if (grant == 0) {
        /* wait for a twentieth of a second's worth, at most 16 KiB */
        int64_t step = rate / 20 < 16384 ? rate / 20 + 1 : 16384;
        *wait_us = tat + step * 1000000 / rate - burst_us - now;
        if (*wait_us < 1000)
            *wait_us = 1000;
    }
    return grant;
}

int lg_lz_conn_acquire(lg_lz_t *z, uint64_t h, int64_t now, int64_t max, int dry, int slot)
{
    lg_lz_set_t *s = set_of(z, h);
    int evicted = 0, rc, lane = slot % LG_LZ_LANES;
    lg_shm_lock(&s->mx);
    lg_lz_entry_t *e = entry(z, s, h, now, &evicted);
    if (e == NULL) {
        rc = LG_LZ_FULL;
        lg_shm_add(&z->full, 1);
    } else {
        int64_t n = in_flight(e);
        if ((n >= max && !dry) || e->u.lane[lane] == UINT16_MAX) {
            rc = LG_LZ_REJECT;
            if (e->u.lane[lane] == UINT16_MAX)
                rc = LG_LZ_FULL;    /* 65535 of one key in one worker: not counted */
        } else {
            rc = n >= max ? LG_LZ_REJECT : LG_LZ_PASS;
            e->u.lane[lane]++;
            e->last = now;
        }
    }
    lg_shm_unlock(&s->mx);
    return rc;
}

void lg_lz_conn_release(lg_lz_t *z, uint64_t h, int slot)
{
    lg_lz_set_t *s = set_of(z, h);
    int lane = slot % LG_LZ_LANES;
    lg_shm_lock(&s->mx);
    for (int i = 0; i < LG_LZ_WAYS; i++)
        if (s->e[i].hash == h) {
            if (s->e[i].u.lane[lane] > 0)   /* 0: the master zeroed it, see LAYOUT */
                s->e[i].u.lane[lane]--;
            break;
        }
    lg_shm_unlock(&s->mx);
}

int64_t lg_lz_conn_count(lg_lz_t *z, uint64_t h)
{
    lg_lz_set_t *s = set_of(z, h);
    int64_t n = 0;
    lg_shm_lock(&s->mx);
    for (int i = 0; i < LG_LZ_WAYS; i++)
        if (s->e[i].hash == h)
            n = in_flight(&s->e[i]);
    lg_shm_unlock(&s->mx);
    return n;
}

void lg_lz_conn_clear_slot(lg_lz_t *z, int slot)
{
    int lane = slot % LG_LZ_LANES;
    for (uint64_t i = 0; z->conn && i < z->nsets; i++) {
        lg_lz_set_t *s = &z->sets[i];
        lg_shm_lock(&s->mx);
        for (int k = 0; k < LG_LZ_WAYS; k++)
            s->e[k].u.lane[lane] = 0;
        lg_shm_unlock(&s->mx);
    }
}

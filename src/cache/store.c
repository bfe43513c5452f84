#include "cache/store.h"
#include "core/event.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"      /* lg_hash64 */

#define CMAGIC   0x4c474341u     /* "LGCA" */
#define OMAGIC   0x4c474f42u     /* "LGOB" */
#define STORE_VERSION  5
#define WINDOW   8               /* index slots probed per key */
#define ALIGN64(n) (((n) + 63) & ~(uint64_t)63)

enum { E_EMPTY = 0, E_VALID = 1, E_FILLING = 2, E_COUNT = 3 };   /* COUNT: uses, no object */

typedef struct centry {
    uint64_t   hash;            /* 0: empty slot */
    uint64_t   pos;             /* absolute ring position of the object */
    uint32_t   len;             /* object bytes */
    uint32_t   state;
    pid_t      filler;
    uint64_t   token;           /* which request of the filler */
    int64_t    fill_until;      /* wall ms */
    int64_t    updating_until;  /* a background refresh runs until then (wall ms) */
    lg_cmeta_t meta;
} centry_t;

typedef struct cobj {
    uint32_t   magic;
    uint32_t   keylen;
    uint64_t   hash;
    uint64_t   pos;             /* where it was written: a check on read */
    uint32_t   head_len;
    uint32_t   body_len;
    /* key, head, body follow */
} cobj_t;

typedef struct chdr {
    uint32_t         magic, version;
    lg_shm_mutex_t   mx;
    uint64_t         capacity;  /* ring bytes */
    uint64_t         nslots;
    _Atomic uint64_t wpos;      /* absolute write position */
    _Atomic uint64_t hits, misses, stores, evictions, promotions;
    uint64_t         max_object;
    uint64_t         demoted;   /* objects before this position were offered to the disk tier */
} chdr_t;

struct lg_cache {
    chdr_t   *h;
    centry_t *idx;
    char     *ring;
    size_t    size;             /* the zone's bytes */
    int       fresh;            /* formatted by the last attach: empty */
};

static lg_cache_t the_cache;    /* one per process: the zone's view */

static int intact(const lg_cache_t *c, uint64_t pos);

lg_cache_t *lg_store_attach(lg_shm_t *shm, size_t size, char *err, size_t errlen)
{
    if (size < 256 * 1024) {
        snprintf(err, errlen, "cache_size must be at least 256k");
        return NULL;
    }
    int fresh = 0;
    char *z = lg_shm_zone(shm, "cache", size, &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for the cache");
        return NULL;
    }
    chdr_t *h = (chdr_t *)z;
    uint64_t nslots = size / 4096 < 1024 ? 1024 : size / 4096;
    uint64_t idx_off = ALIGN64(sizeof(chdr_t));
    uint64_t ring_off = ALIGN64(idx_off + nslots * sizeof(centry_t));
    if (ring_off + 64 * 1024 > size) {
        snprintf(err, errlen, "cache_size is too small");
        return NULL;
    }
    the_cache.fresh = fresh || h->magic != CMAGIC || h->version != STORE_VERSION;
    if (the_cache.fresh) {
        memset(z, 0, ring_off);
        lg_shm_mutex_init(&h->mx);
        h->capacity = (size - ring_off) & ~(uint64_t)63;
        h->nslots = nslots;
        h->max_object = h->capacity / 8;
        h->magic = CMAGIC;
        h->version = STORE_VERSION;
    }
    the_cache.h = h;
    the_cache.idx = (centry_t *)(z + idx_off);
    the_cache.ring = z + ring_off;
    the_cache.size = size;
    return &the_cache;
}

int lg_store_fresh(const lg_cache_t *c)
{
    return c->fresh;
}

/* ---- a copy on disk, so that the cache survives a restart ---- */

#define FILE_MAGIC "LGCACHE\0"

typedef struct cfile {
    char     magic[8];
    uint32_t version, pad;
    uint64_t size, capacity, nslots;
} cfile_t;

int lg_store_save(lg_cache_t *c, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* the master may be root: never through a link planted in the directory */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    cfile_t fh = { FILE_MAGIC, STORE_VERSION, 0, c->size, c->h->capacity, c->h->nslots };
    /* the zone as it is: positions are offsets inside it, times are wall clock */
    int ok = fwrite(&fh, sizeof(fh), 1, f) == 1 && fwrite(c->h, c->size, 1, f) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) < 0) {
        snprintf(err, errlen, "%s: %s", ok ? path : tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int lg_store_load(lg_cache_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;           /* nothing saved yet */
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    cfile_t fh;
    int rc = -1;
    if (fread(&fh, sizeof(fh), 1, f) != 1 || memcmp(fh.magic, FILE_MAGIC, 8) != 0 ||
        fh.version != STORE_VERSION) {
        snprintf(err, errlen, "%s: not a cache file of this version", path);
    } else if (fh.size != c->size || fh.capacity != c->h->capacity || fh.nslots != c->h->nslots) {
        snprintf(err, errlen, "%s: saved with another cache_size", path);
    } else if (fread(c->h, c->size, 1, f) != 1 || c->h->magic != CMAGIC ||
               c->h->capacity != fh.capacity || c->h->nslots != fh.nslots) {
        snprintf(err, errlen, "%s: truncated or damaged", path);
        /* the zone may be half overwritten: format it again */
        memset(c->h, 0, (size_t)(c->ring - (char *)c->h));
        c->h->magic = CMAGIC;
        c->h->version = STORE_VERSION;
        c->h->capacity = fh.capacity;
        c->h->nslots = fh.nslots;
        c->h->max_object = fh.capacity / 8;
    } else {
        rc = 0;
    }
    fclose(f);
    /* nobody holds the lock or fills anything in a new process tree; an
     * entry pointing outside the ring is from a damaged file */
    lg_shm_mutex_init(&c->h->mx);
    int objects = 0;
    for (uint64_t i = 0; i < c->h->nslots; i++) {
        centry_t *e = &c->idx[i];
        if (e->state == E_FILLING || e->state > E_COUNT ||
            (e->state == E_VALID && (e->len < sizeof(cobj_t) ||
                                     e->pos % c->h->capacity + e->len > c->h->capacity)))
            memset(e, 0, sizeof(*e));
        objects += c->idx[i].state == E_VALID && intact(c, c->idx[i].pos);
    }
    c->fresh = 0;
    return rc < 0 ? -1 : objects;
}

void lg_store_set_max_object(lg_cache_t *c, size_t n)
{
    c->h->max_object = n < c->h->capacity / 8 ? n : c->h->capacity / 8;
}

size_t lg_store_max_object(const lg_cache_t *c)
{
    return c ? (size_t)c->h->max_object : 0;
}

static uint64_t key_hash(const char *key, size_t n)
{
    uint64_t h = lg_hash64(key, n, 0x6361636865ull);
    return h ? h : 1;
}

static int intact(const lg_cache_t *c, uint64_t pos)
{
    uint64_t w = atomic_load_explicit(&c->h->wpos, memory_order_acquire);
    return pos + c->h->capacity >= w;
}

/* The slot holding hash, or NULL; *free_slot gets a place to put it. */
static centry_t *find(lg_cache_t *c, uint64_t hash, centry_t **free_slot)
{
    uint64_t n = c->h->nslots, base = hash % n;
    centry_t *found = NULL, *empty = NULL, *oldest = NULL;
    for (uint64_t i = 0; i < WINDOW; i++) {
        centry_t *e = &c->idx[(base + i) % n];
        if (e->hash == hash && e->state != E_EMPTY) {
            found = e;
            continue;
        }
        if (e->state == E_VALID && !intact(c, e->pos)) {
            /* its object was overwritten: the slot is free again */
            memset(e, 0, sizeof(*e));
            atomic_fetch_add_explicit(&c->h->evictions, 1, memory_order_relaxed);
        }
        if (e->state == E_EMPTY || e->state == E_COUNT) {
            /* a use count is worth less than any object: reusable */
            if (empty == NULL || empty->state == E_COUNT)
                empty = e->state == E_EMPTY || empty == NULL ? e : empty;
        } else if (e->state == E_VALID && (oldest == NULL || e->pos < oldest->pos)) {
            oldest = e;
        }
    }
    if (free_slot)
        *free_slot = empty ? empty : oldest;
    return found;
}

static int filler_alive(const centry_t *e)
{
    return e->fill_until > lg_wall_ms() && (kill(e->filler, 0) == 0 || errno == EPERM);
}

/* Room for len bytes at the front of the ring (an object never wraps). */
static uint64_t reserve(lg_cache_t *c, uint64_t len)
{
    lg_shm_lock(&c->h->mx);
    uint64_t w = atomic_load_explicit(&c->h->wpos, memory_order_relaxed);
    uint64_t off = w % c->h->capacity;
    if (off + len > c->h->capacity)
        w += c->h->capacity - off;
    atomic_store_explicit(&c->h->wpos, w + len, memory_order_release);
    lg_shm_unlock(&c->h->mx);
    return w;
}

/*
 * A hit on an object in the oldest quarter of the ring moves it to the
 * front: an object in use never reaches the end and is never evicted,
 * while one nobody asked for leaves in storing order.  That is the CLOCK /
 * FIFO-reinsertion approximation of LRU, paid once per lap of the ring by
 * the objects that earn it.  buf holds the object exactly as stored.
 */
static void promote(lg_cache_t *c, uint64_t hash, char *buf, uint64_t len, uint64_t old)
{
    uint64_t pos = reserve(c, len);
    cobj_t *o = (cobj_t *)buf;
    o->pos = pos;
    memcpy(c->ring + pos % c->h->capacity, buf, len);
    o->pos = old;
    lg_shm_lock(&c->h->mx);
    centry_t *e = find(c, hash, NULL);
    if (e && e->state == E_VALID && e->pos == old && intact(c, pos)) {
        e->pos = pos;           /* unless someone stored a new version meanwhile */
        atomic_fetch_add_explicit(&c->h->promotions, 1, memory_order_relaxed);
    }
    lg_shm_unlock(&c->h->mx);
}

lg_cache_look_t lg_store_get(lg_cache_t *c, const char *key, size_t keylen, int may_fill,
                             int64_t lock_ms, uint64_t token, char **obj, size_t *head_len,
                             size_t *body_len, lg_cmeta_t *meta, int *filler)
{
    uint64_t hash = key_hash(key, keylen);
    *filler = 0;
    *obj = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        centry_t copy, *slot = NULL;
        lg_shm_lock(&c->h->mx);
        centry_t *e = find(c, hash, &slot);
        if (e && e->state == E_VALID &&
            (e->len < sizeof(cobj_t) || e->pos % c->h->capacity + e->len > c->h->capacity)) {
            memset(e, 0, sizeof(*e));   /* not an object of this ring (a damaged file) */
            e = NULL;
        }
        if (e && e->state == E_VALID && !intact(c, e->pos)) {
            memset(e, 0, sizeof(*e));
            e = NULL;
        }
        if (e && e->state == E_COUNT) {
            slot = e;           /* counted uses only: nothing stored */
            e = NULL;
        }
        if (e && e->state == E_FILLING) {
            if ((e->filler != getpid() || e->token != token) && filler_alive(e)) {
                lg_shm_unlock(&c->h->mx);
                return LG_CACHE_WAIT;
            }
            memset(e, 0, sizeof(*e));      /* the filler is gone or late: take over */
            slot = e;
            e = NULL;
        }
        if (e == NULL) {
            if (may_fill && slot) {
                memset(slot, 0, sizeof(*slot));
                slot->hash = hash;
                slot->state = E_FILLING;
                slot->filler = getpid();
                slot->token = token;
                slot->fill_until = lg_wall_ms() + lock_ms;
                *filler = 1;
            }
            lg_shm_unlock(&c->h->mx);
            atomic_fetch_add_explicit(&c->h->misses, 1, memory_order_relaxed);
            return LG_CACHE_MISS;
        }
        copy = *e;
        lg_shm_unlock(&c->h->mx);

        /* copy out without the lock, then check nobody overwrote it: only
         * the head and body (a 100 KiB hit was copied twice, the whole
         * object out and then its payload down over the key) */
        const char *src = c->ring + copy.pos % c->h->capacity;
        cobj_t o;
        memcpy(&o, src, sizeof(o));
        if (o.magic != OMAGIC || o.hash != hash || o.pos != copy.pos || o.keylen != keylen ||
            sizeof(o) + (uint64_t)keylen + o.head_len + o.body_len > copy.len ||
            memcmp(src + sizeof(o), key, keylen) != 0)
            continue;                       /* overwritten or a collision: look again */
        size_t off = sizeof(o) + keylen;
        size_t hl = o.head_len, bl = o.body_len;
        char *buf = malloc(hl + bl + 1);
        if (buf == NULL)
            return LG_CACHE_MISS;
        memcpy(buf, src + off, hl + bl);
        if (!intact(c, copy.pos)) {
            free(buf);
            continue;                       /* the writer came round meanwhile */
        }
        uint64_t w = atomic_load_explicit(&c->h->wpos, memory_order_relaxed);
        if (copy.pos + c->h->capacity - c->h->capacity / 4 < w) {
            /* about to be overwritten: a copy at the ring's head (rare) */
            char *whole = malloc(copy.len);
            if (whole) {
                memcpy(whole, src, copy.len);
                if (intact(c, copy.pos))
                    promote(c, hash, whole, copy.len, copy.pos);
                free(whole);
            }
        }
        *head_len = hl;
        *body_len = bl;
        *obj = buf;
        *meta = copy.meta;
        atomic_fetch_add_explicit(&c->h->hits, 1, memory_order_relaxed);
        return LG_CACHE_HIT;
    }
    atomic_fetch_add_explicit(&c->h->misses, 1, memory_order_relaxed);
    return LG_CACHE_MISS;
}

int lg_store_put(lg_cache_t *c, const char *key, size_t keylen, const lg_cmeta_t *meta,
                 const char *head, size_t head_len, const char *body, size_t body_len)
{
    uint64_t total = ALIGN64(sizeof(cobj_t) + keylen + head_len + body_len);
    uint64_t hash = key_hash(key, keylen);
    if (total > c->h->max_object + 4096 || head_len > UINT32_MAX || body_len > UINT32_MAX) {
        lg_store_abandon(c, key, keylen);
        return -1;
    }
    uint64_t pos = reserve(c, total);

    char *dst = c->ring + pos % c->h->capacity;
    cobj_t o = { OMAGIC, (uint32_t)keylen, hash, pos, (uint32_t)head_len, (uint32_t)body_len };
    memcpy(dst, &o, sizeof(o));
    memcpy(dst + sizeof(o), key, keylen);
    memcpy(dst + sizeof(o) + keylen, head, head_len);
    if (body_len)
        memcpy(dst + sizeof(o) + keylen + head_len, body, body_len);

    /* publish */
    lg_shm_lock(&c->h->mx);
    centry_t *slot = NULL, *e = find(c, hash, &slot);
    if (e == NULL)
        e = slot;
    if (e && intact(c, pos)) {
        if (e->state == E_VALID && e->hash != hash)
            atomic_fetch_add_explicit(&c->h->evictions, 1, memory_order_relaxed);
        memset(e, 0, sizeof(*e));
        e->hash = hash;
        e->pos = pos;
        e->len = (uint32_t)total;
        e->state = E_VALID;
        e->meta = *meta;
        atomic_fetch_add_explicit(&c->h->stores, 1, memory_order_relaxed);
    }
    lg_shm_unlock(&c->h->mx);
    return e ? 0 : -1;
}

int lg_store_count_use(lg_cache_t *c, const char *key, size_t keylen, int min_uses)
{
    if (min_uses <= 1)
        return 1;
    uint64_t hash = key_hash(key, keylen);
    lg_shm_lock(&c->h->mx);
    centry_t *slot = NULL, *e = find(c, hash, &slot);
    int go = 1;
    if (e && e->state == E_COUNT) {
        e->len++;               /* (len counts uses in a COUNT entry) */
        if ((int)e->len >= min_uses)
            memset(e, 0, sizeof(*e));   /* enough: the fill takes the slot */
        else
            go = 0;
    } else if (e == NULL) {
        if (slot && slot->state != E_VALID) {
            memset(slot, 0, sizeof(*slot));
            slot->hash = hash;
            slot->state = E_COUNT;
            slot->len = 1;
            go = 0;
        }
        /* else: nowhere to keep a count (the window holds objects only):
         * admit, rather than never storing this key */
    }
    lg_shm_unlock(&c->h->mx);
    return go;
}

int lg_store_try_update(lg_cache_t *c, const char *key, size_t keylen, int64_t until)
{
    uint64_t hash = key_hash(key, keylen);
    int64_t now = lg_wall_ms();
    lg_shm_lock(&c->h->mx);
    centry_t *e = find(c, hash, NULL);
    int mine = e && e->state == E_VALID && e->updating_until <= now;
    if (mine)
        e->updating_until = until;
    lg_shm_unlock(&c->h->mx);
    return mine;
}

void lg_store_abandon(lg_cache_t *c, const char *key, size_t keylen)
{
    uint64_t hash = key_hash(key, keylen);
    lg_shm_lock(&c->h->mx);
    centry_t *e = find(c, hash, NULL);
    if (e && e->state == E_FILLING && e->filler == getpid())
        memset(e, 0, sizeof(*e));
    lg_shm_unlock(&c->h->mx);
}

int lg_store_delete(lg_cache_t *c, const char *key, size_t keylen)
{
    uint64_t hash = key_hash(key, keylen);
    lg_shm_lock(&c->h->mx);
    centry_t *e = find(c, hash, NULL);
    int found = e && e->state == E_VALID;
    if (e)
        memset(e, 0, sizeof(*e));
    lg_shm_unlock(&c->h->mx);
    return found;
}

int lg_store_expire(lg_cache_t *c, const char *key, size_t keylen)
{
    uint64_t hash = key_hash(key, keylen);
    lg_shm_lock(&c->h->mx);
    centry_t *e = find(c, hash, NULL);
    int found = e && e->state == E_VALID;
    if (found && e->meta.expires > lg_wall_ms() - 1)
        e->meta.expires = lg_wall_ms() - 1;
    lg_shm_unlock(&c->h->mx);
    return found;
}

int lg_store_purge_prefix(lg_cache_t *c, const char *prefix, size_t n, int soft)
{
    int count = 0;
    int64_t now = lg_wall_ms();
    lg_shm_lock(&c->h->mx);
    for (uint64_t i = 0; i < c->h->nslots; i++) {
        centry_t *e = &c->idx[i];
        if (e->state != E_VALID)
            continue;
        if (!intact(c, e->pos)) {
            memset(e, 0, sizeof(*e));
            continue;
        }
        const cobj_t *o = (const cobj_t *)(c->ring + e->pos % c->h->capacity);
        if (o->magic != OMAGIC || o->keylen < n ||
            memcmp((const char *)(o + 1), prefix, n) != 0)
            continue;
        if (soft) {
            if (e->meta.expires > now - 1)
                e->meta.expires = now - 1;
        } else {
            memset(e, 0, sizeof(*e));
        }
        count++;
    }
    lg_shm_unlock(&c->h->mx);
    return count;
}

typedef struct cand {
    uint64_t pos, len, hash;
} cand_t;

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos ? 1 : 0;
}

int lg_store_demote(lg_cache_t *c, size_t budget, lg_store_demote_fn fn, void *arg)
{
    cand_t cands[64];
    size_t n = 0;
    lg_shm_lock(&c->h->mx);
    uint64_t w = atomic_load_explicit(&c->h->wpos, memory_order_relaxed);
    /* the oldest eighth of the ring: what the next writes overwrite */
    uint64_t edge = w > c->h->capacity - c->h->capacity / 8 ? w - (c->h->capacity - c->h->capacity / 8) : 0;
    uint64_t from = c->h->demoted;
    for (uint64_t i = 0; i < c->h->nslots; i++) {
        centry_t *e = &c->idx[i];
        if (e->state != E_VALID || e->pos < from || e->pos >= edge || !intact(c, e->pos))
            continue;
        if (n < sizeof(cands) / sizeof(cands[0])) {
            cands[n++] = (cand_t){ e->pos, e->len, e->hash };
        } else {
            /* keep the oldest: they leave first */
            size_t worst = 0;
            for (size_t k = 1; k < n; k++)
                if (cands[k].pos > cands[worst].pos)
                    worst = k;
            if (e->pos < cands[worst].pos)
                cands[worst] = (cand_t){ e->pos, e->len, e->hash };
        }
    }
    lg_shm_unlock(&c->h->mx);
    qsort(cands, n, sizeof(cand_t), cand_cmp);
    /* what is below upto has been offered (or is gone); with fewer than a
     * full list, every candidate up to the edge was in it */
    int full = n == sizeof(cands) / sizeof(cands[0]);
    uint64_t upto = full ? from : edge;
    int offered = 0;
    size_t spent = 0;
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && spent + cands[k].len > budget) {
            upto = cands[k].pos;        /* the rest next time */
            break;
        }
        if (full)
            upto = cands[k].pos + 1;
        spent += cands[k].len;
        char *buf = malloc(cands[k].len);
        if (buf == NULL) {
            upto = cands[k].pos;
            break;
        }
        memcpy(buf, c->ring + cands[k].pos % c->h->capacity, cands[k].len);
        const cobj_t *o = (const cobj_t *)buf;
        lg_cmeta_t meta;
        int ok = 0;
        lg_shm_lock(&c->h->mx);
        centry_t *e = find(c, cands[k].hash, NULL);
        if (e && e->state == E_VALID && e->pos == cands[k].pos) {
            meta = e->meta;
            ok = 1;
        }
        lg_shm_unlock(&c->h->mx);
        /* copied whole before a writer came by, and the object it should be */
        if (ok && intact(c, cands[k].pos) && o->magic == OMAGIC && o->pos == cands[k].pos &&
            o->hash == cands[k].hash &&
            sizeof(cobj_t) + (uint64_t)o->keylen + o->head_len + o->body_len <= cands[k].len) {
            const char *key = (const char *)(o + 1);
            fn(arg, key, o->keylen, &meta, key + o->keylen, o->head_len,
               key + o->keylen + o->head_len, o->body_len);
            offered++;
        }
        free(buf);
    }
    lg_shm_lock(&c->h->mx);
    if (upto > c->h->demoted)
        c->h->demoted = upto;
    lg_shm_unlock(&c->h->mx);
    return offered;
}

void lg_store_stats(lg_cache_t *c, lg_cache_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (c == NULL)
        return;
    st->hits = atomic_load(&c->h->hits);
    st->misses = atomic_load(&c->h->misses);
    st->stores = atomic_load(&c->h->stores);
    st->evictions = atomic_load(&c->h->evictions);
    st->promotions = atomic_load(&c->h->promotions);
    st->capacity = c->h->capacity;
    uint64_t w = atomic_load(&c->h->wpos);
    st->used = w < c->h->capacity ? w : c->h->capacity;
    lg_shm_lock(&c->h->mx);
    for (uint64_t i = 0; i < c->h->nslots; i++)
        st->objects += c->idx[i].state == E_VALID && intact(c, c->idx[i].pos);
    lg_shm_unlock(&c->h->mx);
}

/*
 * The cache's disk tier: files under cache_path/disk and their index in
 * shared memory.  See disk.h for the layout, the file format and the
 * locking rules.
 *
 * Zone layout (offsets from the zone's start):
 *
 *   header | slots[nslots]
 *
 * Slots are an open-addressed table on the key's hash with linear probing;
 * a removed slot becomes DEAD (probes go past it, an insert may reuse it).
 * The table has at least twice as many slots as the tier can hold objects
 * (each is larger than cache_max_object), so a probe ends soon.
 */
#include "cache/disk.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/event.h"
#include "core/hash.h"
#include "core/log.h"

#define DMAGIC   0x4c474449u    /* "LGDI" */
#define DVERSION 2        /* 2: updating_until, the send counters */
#define HEAD_MAX 65536
#define VICTIMS  64             /* files unlinked after one update, at most */

enum { S_EMPTY = 0, S_VALID = 1, S_DEAD = 2 };

typedef struct dslot {
    uint64_t hash;
    uint64_t size;              /* the file's bytes */
    int64_t  atime;             /* wall ms of the last use */
    int64_t  expires;           /* wall ms: stale after */
    int64_t  updating_until;    /* wall ms: a refresh of it runs until then */
    uint32_t state, keylen;
    char     key[LG_DISK_KEY_MAX];
} dslot_t;

typedef struct dhdr {
    uint32_t       magic, version;
    lg_shm_mutex_t mx;
    uint64_t       nslots, capacity, used, objects;
    int64_t        max_object, inactive_ms;
    int            scan_done;   /* the directory has been read back */
    _Atomic uint64_t count[LG_DISK_NCOUNT];     /* lg_disk_count(), no lock */
} dhdr_t;

struct lg_disk {
    dhdr_t  *h;
    dslot_t *slots;
    char     dir[4000];         /* cache_path/disk */
};

static lg_disk_t the_disk;
lg_disk_t *lg_disk;

#define ALIGN64(x) (((x) + 63) & ~(uint64_t)63)

static uint64_t nslots_for(int64_t disk_size, int64_t min_object)
{
    uint64_t most = (uint64_t)(disk_size / (min_object > 4096 ? min_object : 4096));
    uint64_t n = 2 * most + 64;
    return n > (1u << 20) ? (1u << 20) : n;
}

size_t lg_disk_zone_size(int64_t disk_size, int64_t min_object)
{
    return (size_t)(ALIGN64(sizeof(dhdr_t)) + nslots_for(disk_size, min_object) * sizeof(dslot_t));
}

lg_disk_t *lg_disk_attach(lg_shm_t *shm, const char *dir, int64_t disk_size, int64_t min_object,
                          int64_t max_object, int64_t inactive_ms, char *err, size_t errlen)
{
    lg_disk = NULL;
    if ((size_t)snprintf(the_disk.dir, sizeof(the_disk.dir), "%s/disk", dir) >= sizeof(the_disk.dir)) {
        snprintf(err, errlen, "cache_path is too long");
        return NULL;
    }
    if (mkdir(the_disk.dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", the_disk.dir, strerror(errno));
        return NULL;
    }
    size_t size = lg_disk_zone_size(disk_size, min_object);
    int fresh = 0;
    char *z = lg_shm_zone(shm, "cache-disk", size, &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for the disk cache's index");
        return NULL;
    }
    dhdr_t *h = (dhdr_t *)z;
    if (fresh || h->magic != DMAGIC || h->version != DVERSION) {
        memset(z, 0, size);
        lg_shm_mutex_init(&h->mx);
        h->nslots = nslots_for(disk_size, min_object);
        h->magic = DMAGIC;
        h->version = DVERSION;
    }
    /* the bounds may change on a reload; the index stays */
    h->capacity = (uint64_t)disk_size;
    h->max_object = max_object;
    h->inactive_ms = inactive_ms;
    the_disk.h = h;
    the_disk.slots = (dslot_t *)(z + ALIGN64(sizeof(dhdr_t)));
    lg_disk = &the_disk;
    return lg_disk;
}

int64_t lg_disk_max_object(void)
{
    return lg_disk ? lg_disk->h->max_object : 0;
}

int lg_disk_ready(void)
{
    return lg_disk && lg_disk->h->scan_done;
}

void lg_disk_stats(lg_disk_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (lg_disk == NULL)
        return;
    lg_shm_lock(&lg_disk->h->mx);
    st->objects = lg_disk->h->objects;
    st->used = lg_disk->h->used;
    st->capacity = lg_disk->h->capacity;
    lg_shm_unlock(&lg_disk->h->mx);
    for (int i = 0; i < LG_DISK_NCOUNT; i++)
        st->count[i] = atomic_load_explicit(&lg_disk->h->count[i], memory_order_relaxed);
}

void lg_disk_count(lg_disk_counter_t what, uint64_t n)
{
    if (lg_disk && (unsigned)what < LG_DISK_NCOUNT)
        atomic_fetch_add_explicit(&lg_disk->h->count[what], n, memory_order_relaxed);
}

/* ---- the index (callers hold the mutex) ---- */

static uint64_t key_hash(const char *key, size_t kl)
{
    return lg_hash64(key, kl, 0x6469736bull);
}

static void path_of(char *out, size_t n, uint64_t hash)
{
    snprintf(out, n, "%s/%016llx", lg_disk->dir, (unsigned long long)hash);
}

static long find(uint64_t hash, const char *key, size_t kl)
{
    dhdr_t *h = lg_disk->h;
    for (uint64_t i = 0, k = hash % h->nslots; i < h->nslots; i++, k = (k + 1) % h->nslots) {
        dslot_t *s = &lg_disk->slots[k];
        if (s->state == S_EMPTY)
            return -1;
        if (s->state == S_VALID && s->hash == hash && s->keylen == kl && memcmp(s->key, key, kl) == 0)
            return (long)k;
    }
    return -1;
}

static void kill_slot(dslot_t *s, uint64_t *victims, int *nv)
{
    dhdr_t *h = lg_disk->h;
    h->used -= s->size;
    h->objects--;
    s->state = S_DEAD;
    if (victims && *nv < VICTIMS)
        victims[(*nv)++] = s->hash;
    /* a DEAD run that ends at an EMPTY slot ends no probe: EMPTY again, so
     * that probes for absent keys stay short however much comes and goes */
    uint64_t k = (uint64_t)(s - lg_disk->slots);
    if (lg_disk->slots[(k + 1) % h->nslots].state != S_EMPTY)
        return;
    for (uint64_t i = 0; i < h->nslots && lg_disk->slots[k].state == S_DEAD; i++) {
        lg_disk->slots[k].state = S_EMPTY;
        k = (k + h->nslots - 1) % h->nslots;
    }
}

/* The least recently used object, or NULL. */
static dslot_t *coldest(void)
{
    dslot_t *best = NULL;
    for (uint64_t k = 0; k < lg_disk->h->nslots; k++) {
        dslot_t *s = &lg_disk->slots[k];
        if (s->state == S_VALID && (best == NULL || s->atime < best->atime))
            best = s;
    }
    return best;
}

/*
 * Index key as a file of size bytes: replacing an entry of the same key;
 * the least recently used leave until it fits (their hashes in victims).
 * only_new: keep an entry already there (the directory scan).  0 or -1.
 */
static int index_put(uint64_t hash, const char *key, size_t kl, uint64_t size, int64_t expires,
                     int64_t now, int only_new, uint64_t *victims, int *nv)
{
    dhdr_t *h = lg_disk->h;
    if (size > h->capacity)
        return -1;
    long at = find(hash, key, kl);
    if (at >= 0) {
        if (only_new)
            return 0;
        kill_slot(&lg_disk->slots[at], NULL, NULL);     /* the same file, replaced */
    }
    while (h->used + size > h->capacity) {
        dslot_t *v = coldest();
        if (v == NULL || *nv >= VICTIMS)
            return -1;
        kill_slot(v, victims, nv);
    }
    for (uint64_t i = 0, k = hash % h->nslots; i < h->nslots; i++, k = (k + 1) % h->nslots) {
        dslot_t *s = &lg_disk->slots[k];
        if (s->state == S_VALID)
            continue;
        s->hash = hash;
        s->size = size;
        s->atime = now;
        s->expires = expires;
        s->updating_until = 0;
        s->keylen = (uint32_t)kl;
        memcpy(s->key, key, kl);
        s->state = S_VALID;
        h->used += size;
        h->objects++;
        return 0;
    }
    return -1;
}

static void unlink_victims(const uint64_t *victims, int nv)
{
    char path[4096 + 32];
    for (int i = 0; i < nv; i++) {
        path_of(path, sizeof(path), victims[i]);
        unlink(path);
    }
}

/* Forget key's entry (not its file: it may be another key's now). */
static void index_drop(uint64_t hash, const char *key, size_t kl)
{
    lg_shm_lock(&lg_disk->h->mx);
    long at = find(hash, key, kl);
    if (at >= 0)
        kill_slot(&lg_disk->slots[at], NULL, NULL);
    lg_shm_unlock(&lg_disk->h->mx);
}

/* ---- writing ---- */

int lg_disk_fill_start(lg_disk_fill_t *f, const char *key, size_t kl, const lg_cmeta_t *m,
                       const char *head, size_t hl, uint64_t bodylen)
{
    static unsigned seq;
    f->fd = -1;
    int unknown = bodylen == LG_DISK_LEN_UNKNOWN;
    if (lg_disk == NULL || kl == 0 || kl > LG_DISK_KEY_MAX || hl == 0 || hl > HEAD_MAX ||
        (!unknown && bodylen > (uint64_t)lg_disk->h->max_object))
        return -1;
    if (unknown)
        bodylen = 0;            /* written at the end, when it is known */
    lg_disk_hdr_t hdr;
    memset(&hdr, 0, sizeof(hdr));
    memcpy(hdr.magic, LG_DISK_MAGIC, 8);
    hdr.keylen = (uint32_t)kl;
    hdr.headlen = (uint32_t)hl;
    hdr.bodylen = bodylen;
    hdr.meta = *m;
    hdr.crc = lg_disk_crc(lg_disk_crc(0, key, kl), head, hl);
    f->fixed = sizeof(hdr) + kl + hl;
    f->size = f->fixed + bodylen;
    if (f->size > lg_disk->h->capacity)
        return -1;
    snprintf(f->tmp, sizeof(f->tmp), "tmp.%d.%u", (int)getpid(), seq++);
    char path[4096 + 64];
    snprintf(path, sizeof(path), "%s/%s", lg_disk->dir, f->tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct iovec iov[3] = { { &hdr, sizeof(hdr) }, { (void *)key, kl }, { (void *)head, hl } };
    ssize_t n = writev(fd, iov, 3);
    if (n != (ssize_t)(sizeof(hdr) + kl + hl)) {
        close(fd);
        unlink(path);
        return -1;
    }
    f->fd = fd;
    f->unknown = unknown;
    f->want = unknown ? (uint64_t)lg_disk->h->max_object : bodylen;
    f->got = 0;
    memcpy(f->key, key, kl);
    f->keylen = kl;
    f->expires = m->expires;
    return 0;
}

void lg_disk_fill_abort(lg_disk_fill_t *f)
{
    if (f->fd < 0)
        return;
    close(f->fd);
    f->fd = -1;
    char path[4096 + 64];
    snprintf(path, sizeof(path), "%s/%s", lg_disk->dir, f->tmp);
    unlink(path);
}

int lg_disk_fill_write(lg_disk_fill_t *f, const char *p, size_t n)
{
    if (f->fd < 0)
        return -1;
    if (f->got + n > f->want) {
        lg_disk_fill_abort(f);
        return -1;
    }
    while (n) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            lg_disk_fill_abort(f);
            return -1;
        }
        p += w;
        n -= (size_t)w;
        f->got += (uint64_t)w;
    }
    return 0;
}

int lg_disk_fill_finish(lg_disk_fill_t *f)
{
    if (f->fd < 0)
        return -1;
    if (f->unknown) {
        /* a chunked answer: its length, now known, into the header */
        uint64_t bl = f->got;
        f->size = f->fixed + bl;
        if (f->size > lg_disk->h->capacity ||
            pwrite(f->fd, &bl, sizeof(bl), offsetof(lg_disk_hdr_t, bodylen)) != (ssize_t)sizeof(bl)) {
            lg_disk_fill_abort(f);
            return -1;
        }
    } else if (f->got != f->want) {
        lg_disk_fill_abort(f);
        return -1;
    }
    close(f->fd);
    f->fd = -1;
    char tmp[4096 + 64], path[4096 + 32];
    snprintf(tmp, sizeof(tmp), "%s/%s", lg_disk->dir, f->tmp);
    uint64_t hash = key_hash(f->key, f->keylen);
    path_of(path, sizeof(path), hash);
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    uint64_t victims[VICTIMS];
    int nv = 0;
    lg_shm_lock(&lg_disk->h->mx);
    int rc = index_put(hash, f->key, f->keylen, f->size, f->expires, lg_wall_ms(), 0, victims, &nv);
    lg_shm_unlock(&lg_disk->h->mx);
    unlink_victims(victims, nv);
    if (rc < 0)
        unlink(path);
    return rc;
}

int lg_disk_put(const char *key, size_t kl, const lg_cmeta_t *m, const char *head, size_t hl,
                const char *body, size_t bl)
{
    lg_disk_fill_t f;
    if (lg_disk_fill_start(&f, key, kl, m, head, hl, bl) < 0 || lg_disk_fill_write(&f, body, bl) < 0)
        return -1;
    return lg_disk_fill_finish(&f);
}

/* ---- reading ---- */

/* The header, key and head of an open file: 0, or -1 (not one of ours, or damaged). */
static int read_head(int fd, uint64_t fsize, lg_disk_hdr_t *h, char **keyhead)
{
    char hb[sizeof(lg_disk_hdr_t)];
    if (pread(fd, hb, sizeof(hb), 0) != (ssize_t)sizeof(hb))
        return -1;
    memcpy(h, hb, sizeof(*h));
    if (h->keylen > LG_DISK_KEY_MAX || h->headlen > HEAD_MAX)
        return -1;
    size_t n = sizeof(hb) + h->keylen + h->headlen;
    char *all = malloc(n);
    if (all == NULL)
        return -1;
    if (pread(fd, all, n, 0) != (ssize_t)n || lg_disk_header_check(all, n, fsize, h) < 0) {
        free(all);
        return -1;
    }
    *keyhead = all;
    return 0;
}

int lg_disk_open(const char *key, size_t kl, lg_cmeta_t *meta, char **head, size_t *hl,
                 uint64_t *body_off, uint64_t *bodylen)
{
    if (lg_disk == NULL || kl == 0 || kl > LG_DISK_KEY_MAX)
        return -1;
    uint64_t hash = key_hash(key, kl);
    lg_shm_lock(&lg_disk->h->mx);
    long at = find(hash, key, kl);
    if (at >= 0)
        lg_disk->slots[at].atime = lg_wall_ms();
    lg_shm_unlock(&lg_disk->h->mx);
    if (at < 0)
        return -1;
    char path[4096 + 32];
    path_of(path, sizeof(path), hash);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    lg_disk_hdr_t h;
    char *kh = NULL;
    if (fd < 0 || fstat(fd, &st) < 0 || read_head(fd, (uint64_t)st.st_size, &h, &kh) < 0) {
        if (fd >= 0) {
            lg_warn("cache: %s is damaged: removed", path);
            unlink(path);       /* never served */
            close(fd);
        }
        index_drop(hash, key, kl);
        return -1;
    }
    if (h.keylen != kl || memcmp(kh + sizeof(h), key, kl) != 0) {
        /* another key of the same hash took the file: not ours to remove */
        free(kh);
        close(fd);
        index_drop(hash, key, kl);
        return -1;
    }
    char *hd = malloc(h.headlen + 1);
    if (hd == NULL) {
        free(kh);
        close(fd);
        return -1;
    }
    memcpy(hd, kh + sizeof(h) + kl, h.headlen);
    hd[h.headlen] = 0;
    free(kh);
    *meta = h.meta;
    *head = hd;
    *hl = h.headlen;
    *body_off = sizeof(h) + kl + h.headlen;
    *bodylen = h.bodylen;
    return fd;
}

int lg_disk_remove(const char *key, size_t kl)
{
    if (lg_disk == NULL || kl > LG_DISK_KEY_MAX)
        return 0;
    uint64_t hash = key_hash(key, kl);
    lg_shm_lock(&lg_disk->h->mx);
    long at = find(hash, key, kl);
    if (at >= 0)
        kill_slot(&lg_disk->slots[at], NULL, NULL);
    lg_shm_unlock(&lg_disk->h->mx);
    if (at < 0)
        return 0;
    char path[4096 + 32];
    path_of(path, sizeof(path), hash);
    unlink(path);
    return 1;
}

int lg_disk_try_update(const char *key, size_t kl, int64_t until)
{
    if (lg_disk == NULL || kl == 0 || kl > LG_DISK_KEY_MAX)
        return 0;
    uint64_t hash = key_hash(key, kl);
    int64_t now = lg_wall_ms();
    lg_shm_lock(&lg_disk->h->mx);
    long at = find(hash, key, kl);
    int mine = at >= 0 && lg_disk->slots[at].updating_until <= now;
    if (mine)
        lg_disk->slots[at].updating_until = until;
    lg_shm_unlock(&lg_disk->h->mx);
    return mine;
}

int lg_disk_refresh(int fd, const char *key, size_t kl, const lg_cmeta_t *m)
{
    if (lg_disk == NULL || fd < 0 || kl == 0 || kl > LG_DISK_KEY_MAX)
        return -1;
    uint64_t hash = key_hash(key, kl);
    char path[4096 + 32];
    path_of(path, sizeof(path), hash);
    /* the file we served from, not one a newer fill renamed over it since */
    struct stat a, b;
    int wfd = open(path, O_WRONLY | O_CLOEXEC);
    if (wfd < 0)
        return -1;
    int rc = -1;
    if (fstat(fd, &a) == 0 && fstat(wfd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev &&
        pwrite(wfd, m, sizeof(*m), offsetof(lg_disk_hdr_t, meta)) == (ssize_t)sizeof(*m))
        rc = 0;
    close(wfd);
    if (rc < 0)
        return -1;
    lg_shm_lock(&lg_disk->h->mx);
    long at = find(hash, key, kl);
    if (at >= 0) {
        lg_disk->slots[at].expires = m->expires;
        lg_disk->slots[at].updating_until = 0;
    }
    lg_shm_unlock(&lg_disk->h->mx);
    return 0;
}

int lg_disk_rehead(int fd, uint64_t body_off, uint64_t bodylen, const char *key, size_t kl,
                   const lg_cmeta_t *m, const char *head, size_t hl)
{
    if (lg_disk == NULL || fd < 0 || bodylen > LG_DISK_REHEAD_MAX)
        return -1;
    lg_disk_fill_t f;
    if (lg_disk_fill_start(&f, key, kl, m, head, hl, bodylen) < 0)
        return -1;
    loff_t in = (loff_t)body_off;
    uint64_t left = bodylen;
    while (left) {
        ssize_t n = copy_file_range(fd, &in, f.fd, NULL, left, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            lg_disk_fill_abort(&f);
            return -1;
        }
        left -= (uint64_t)n;
        f.got += (uint64_t)n;
    }
    return lg_disk_fill_finish(&f);
}

int lg_disk_remove_prefix(const char *prefix, size_t n)
{
    if (lg_disk == NULL)
        return 0;
    int count = 0;
    for (;;) {
        uint64_t victims[VICTIMS];
        int nv = 0;
        lg_shm_lock(&lg_disk->h->mx);
        for (uint64_t k = 0; k < lg_disk->h->nslots && nv < VICTIMS; k++) {
            dslot_t *s = &lg_disk->slots[k];
            if (s->state == S_VALID && s->keylen >= n && memcmp(s->key, prefix, n) == 0)
                kill_slot(s, victims, &nv);
        }
        lg_shm_unlock(&lg_disk->h->mx);
        unlink_victims(victims, nv);
        count += nv;
        if (nv < VICTIMS)
            return count;
    }
}

/* ---- worker 0: the directory read back, inactive objects removed ---- */

static DIR *scan;

static int hex16(const char *s, uint64_t *out)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    *out = x;
    return s[16] == '\0' ? 0 : -1;
}

/* One directory entry: indexed again, or removed when it is not whole. */
static void scan_one(const char *name)
{
    char path[4096 + 300];
    snprintf(path, sizeof(path), "%s/%s", lg_disk->dir, name);
    if (strncmp(name, "tmp.", 4) == 0) {
        /* a fill that its worker never finished (it died, or legate stopped) */
        int pid = atoi(name + 4);
        if (pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
            unlink(path);
        return;
    }
    uint64_t hash;
    if (hex16(name, &hash) < 0)
        return;                 /* not ours: left alone */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    lg_disk_hdr_t h;
    char *kh = NULL;
    if (fstat(fd, &st) < 0 || read_head(fd, (uint64_t)st.st_size, &h, &kh) < 0 ||
        key_hash(kh + sizeof(h), h.keylen) != hash) {
        close(fd);
        free(kh);
        lg_warn("cache: %s is damaged: removed", path);
        unlink(path);
        return;
    }
    close(fd);
    uint64_t victims[VICTIMS];
    int nv = 0;
    lg_shm_lock(&lg_disk->h->mx);
    int rc = index_put(hash, kh + sizeof(h), h.keylen, (uint64_t)st.st_size, h.meta.expires,
                       lg_wall_ms(), 1, victims, &nv);
    lg_shm_unlock(&lg_disk->h->mx);
    free(kh);
    unlink_victims(victims, nv);
    if (rc < 0)
        unlink(path);           /* the tier is smaller now: no room for it */
}

void lg_disk_tick(void)
{
    if (lg_disk == NULL)
        return;
    dhdr_t *h = lg_disk->h;
    if (!h->scan_done) {
        if (scan == NULL && (scan = opendir(lg_disk->dir)) == NULL) {
            h->scan_done = 1;
            return;
        }
        /* a few files a tick: the loop serves requests in between */
        for (int i = 0; i < 32; i++) {
            struct dirent *e = readdir(scan);
            if (e == NULL) {
                closedir(scan);
                scan = NULL;
                h->scan_done = 1;
                lg_notice("cache: %llu objects on disk indexed", (unsigned long long)h->objects);
                return;
            }
            if (e->d_name[0] != '.')
                scan_one(e->d_name);
        }
        return;
    }
    /* cache_disk_inactive */
    int64_t old = lg_wall_ms() - h->inactive_ms;
    uint64_t victims[VICTIMS];
    int nv = 0;
    lg_shm_lock(&h->mx);
    for (uint64_t k = 0; k < h->nslots && nv < VICTIMS; k++) {
        dslot_t *s = &lg_disk->slots[k];
        if (s->state == S_VALID && s->atime < old)
            kill_slot(s, victims, &nv);
    }
    lg_shm_unlock(&h->mx);
    unlink_victims(victims, nv);
}

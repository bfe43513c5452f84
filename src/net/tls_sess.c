/*
 * The TLS session cache shared by all workers, for clients that resume by
 * session ID (TLS 1.2 without tickets, or any version when tickets are
 * off).  Tickets need no cache: their keys are shared instead (tls.c).
 *
 * One shared-memory zone ("tls-sessions"):
 *
 *   mutex | nsets | counters | slots[nsets * WAYS]
 *   slot = { expires_ms, id_len, der_len, id[32], der[SLOT_DER] }
 *
 * A session is a DER blob (i2d_SSL_SESSION), never a pointer.  The table is
 * set-associative: an ID picks a set of WAYS slots by its first bytes (IDs
 * are random), and a new session takes the same ID's slot, an empty or
 * expired one, or evicts the one expiring first.  Sessions too large for a
 * slot (a client certificate inside) are simply not shared.
 *
 * Locking: the robust mutex guards every slot; it is held for one memcpy of
 * at most a slot, never across a system call or an allocation.  A worker
 * killed while holding it may leave a slot half-written: the next locker
 * sees "owner died" and empties the whole table, which costs only full
 * handshakes.
 */
#include "net/tls.h"
#include "core/event.h"

#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/shm.h"

#define WAYS     4
#define SLOT_DER 440            /* a TLS 1.2 session with SNI and ALPN is ~150-250 */

typedef struct sess_slot {
    int64_t       expires_ms;   /* 0: empty */
    uint8_t       id_len;
    uint16_t      der_len;
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    unsigned char der[SLOT_DER];
} sess_slot_t;

typedef struct sess_zone {
    lg_shm_mutex_t   mx;
    uint32_t         nsets;
    lg_shm_counter_t stored, hits, misses, evicted;
    sess_slot_t      slots[];
} sess_zone_t;

static sess_zone_t *zone;       /* in shared memory (attached by the master) */

int lg_tls_sess_attach(lg_shm_t *shm, size_t size, char *err, size_t errlen)
{
    zone = NULL;
    if (size == 0)
        return 0;
    size_t per_set = WAYS * sizeof(sess_slot_t);
    if (size < sizeof(sess_zone_t) + per_set) {
        snprintf(err, errlen, "tls_session_cache is too small for one set of sessions");
        return -1;
    }
    uint32_t nsets = (uint32_t)((size - sizeof(sess_zone_t)) / per_set);
    int fresh = 0;
    sess_zone_t *z = lg_shm_zone(shm, "tls-sessions", size, &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for the TLS session cache");
        return -1;
    }
    if (fresh) {
        lg_shm_mutex_init(&z->mx);
        z->nsets = nsets;
    }
    zone = z;
    return 0;
}

/* Lock; a previous holder that died may have left a torn slot: start empty. */
static void lock(void)
{
    if (lg_shm_lock(&zone->mx) == 1)
        memset(zone->slots, 0, (size_t)zone->nsets * WAYS * sizeof(sess_slot_t));
}

static sess_slot_t *set_of(const unsigned char *id, unsigned len)
{
    uint32_t h = 2166136261u;               /* FNV-1a: IDs are random, any mix will do */
    for (unsigned i = 0; i < len && i < 8; i++)
        h = (h ^ id[i]) * 16777619u;
    return &zone->slots[(size_t)(h % zone->nsets) * WAYS];
}

static sess_slot_t *find(sess_slot_t *set, const unsigned char *id, unsigned len, int64_t now)
{
    for (int w = 0; w < WAYS; w++)
        if (set[w].expires_ms > now && set[w].id_len == len && memcmp(set[w].id, id, len) == 0)
            return &set[w];
    return NULL;
}

static int new_cb(SSL *ssl, SSL_SESSION *sess)
{
    /* TLS 1.3 with tickets: the ticket carries the session, nothing to keep
     * (OpenSSL calls this for every ticket it sends) */
    if (SSL_version(ssl) == TLS1_3_VERSION && !(SSL_get_options(ssl) & SSL_OP_NO_TICKET))
        return 0;
    unsigned len = 0;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    int n = i2d_SSL_SESSION(sess, NULL);
    if (zone == NULL || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH || n <= 0 || n > SLOT_DER)
        return 0;
    unsigned char der[SLOT_DER], *p = der;
    if (i2d_SSL_SESSION(sess, &p) != n)
        return 0;
    int64_t now = lg_wall_ms();
    int64_t expires = (int64_t)(SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess)) * 1000;
    if (expires <= now)
        return 0;
    lock();
    sess_slot_t *set = set_of(id, len), *s = find(set, id, len, now);
    for (int w = 0; s == NULL && w < WAYS; w++)
        if (set[w].expires_ms <= now)
            s = &set[w];
    if (s == NULL) {                        /* evict the one that expires first */
        s = &set[0];
        for (int w = 1; w < WAYS; w++)
            if (set[w].expires_ms < s->expires_ms)
                s = &set[w];
        lg_shm_add(&zone->evicted, 1);
    }
    s->expires_ms = expires;
    s->id_len = (uint8_t)len;
    memcpy(s->id, id, len);
    s->der_len = (uint16_t)n;
    memcpy(s->der, der, (size_t)n);
    lg_shm_unlock(&zone->mx);
    lg_shm_add(&zone->stored, 1);
    return 0;                               /* we keep no reference to sess */
}

static SSL_SESSION *get_cb(SSL *ssl, const unsigned char *id, int len, int *copy)
{
    (void)ssl;
    *copy = 0;                              /* OpenSSL owns what we return */
    if (zone == NULL || len <= 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return NULL;
    unsigned char der[SLOT_DER];
    int n = 0;
    lock();
    sess_slot_t *s = find(set_of(id, (unsigned)len), id, (unsigned)len, lg_wall_ms());
    if (s) {
        n = s->der_len;
        memcpy(der, s->der, (size_t)n);
    }
    lg_shm_unlock(&zone->mx);
    if (n == 0) {
        lg_shm_add(&zone->misses, 1);
        return NULL;
    }
    const unsigned char *p = der;
    SSL_SESSION *sess = d2i_SSL_SESSION(NULL, &p, n);
    lg_shm_add(sess ? &zone->hits : &zone->misses, 1);
    return sess;
}

static void remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    (void)ctx;
    unsigned len = 0;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    if (zone == NULL || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    lock();
    sess_slot_t *s = find(set_of(id, len), id, len, lg_wall_ms());
    if (s)
        s->expires_ms = 0;
    lg_shm_unlock(&zone->mx);
}

void lg_tls_sess_setup(SSL_CTX *ctx, long timeout_s, int shared)
{
    SSL_CTX_set_timeout(ctx, timeout_s);
    if (!shared) {
        /* no shared cache: OpenSSL's own, per worker */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, 20000);
        return;
    }
    /* the zone is attached after the contexts are built (and again on
     * reload): the callbacks find it at run time */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_cb);
    SSL_CTX_sess_set_get_cb(ctx, get_cb);
    SSL_CTX_sess_set_remove_cb(ctx, remove_cb);
}

void lg_tls_sess_stats(uint64_t *stored, uint64_t *hits, uint64_t *misses, uint64_t *evicted)
{
    *stored = zone ? lg_shm_get(&zone->stored) : 0;
    *hits = zone ? lg_shm_get(&zone->hits) : 0;
    *misses = zone ? lg_shm_get(&zone->misses) : 0;
    *evicted = zone ? lg_shm_get(&zone->evicted) : 0;
}

/*
 * Forward-proxy destinations: the per-worker table of the upstreams made
 * at run time for what clients asked for.  A record is one server -- the
 * address a name resolved to -- keyed by scheme, host, port and that
 * address, so two names on one address never share a connection (a
 * server may answer them differently) and a name that moves to a new
 * address gets a new record while the old one's connections drain.
 *
 * The connections themselves are pooled by proxy/upstream.c exactly as a
 * configured upstream's: one pool mechanism, with the destination's
 * limits in the record (keepalive per destination, keepalive_total over
 * all of them, keepalive_timeout).  A tunnel's record is never pooled.
 *
 * The table is a hash on "scheme://host:port", so lg_dest_idle finds a
 * destination with an idle connection before any name lookup.  Records
 * belong to one forward block: another block's address rules
 * (allow_private, deny_destinations) may differ.
 */
#include "forward/dest_pool.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "proxy/proxy.h"

#define DEST_MAX     512        /* records per worker */
#define DEST_BUCKETS 1024       /* a power of two */

static struct lg_dynup *table[DEST_BUCKETS];
static int ndests;
static int idle_total;          /* idle connections over every destination */

/* "http://host:port" ("https://" for TLS inspection's destinations; "[v6]"
 * bracketed) into out, by hand: it is made for
 * every request, and printf's machinery would be most of its cost. */
static size_t hostkey(char *out, size_t len, const char *host, unsigned port, int tls)
{
    size_t hn = strlen(host), n = 0;
    int v6 = memchr(host, ':', hn) != NULL;
    if (hn + 17 > len)
        hn = len - 17;
    memcpy(out, tls ? "https://" : "http://", tls ? 8 : 7);
    n = tls ? 8 : 7;
    if (v6)
        out[n++] = '[';
    memcpy(out + n, host, hn);
    n += hn;
    if (v6)
        out[n++] = ']';
    out[n++] = ':';
    char digits[6];
    size_t k = 0;
    do
        digits[k++] = (char)('0' + port % 10);
    while ((port /= 10) != 0 && k < sizeof(digits));
    while (k)
        out[n++] = digits[--k];
    out[n] = '\0';
    return n;
}

lg_upstream_t *lg_dest_idle(const lg_forward_t *f, const char *host, unsigned port, int tls)
{
    char hk[300];
    size_t hn = hostkey(hk, sizeof(hk), host, port, tls);
    uint64_t h = lg_hash64(hk, hn, 0);
    for (struct lg_dynup *d = table[h & (DEST_BUCKETS - 1)]; d; d = d->next)
        if (d->npool > 0 && d->hash == h && d->owner == f && d->hostkey_len == hn &&
            memcmp(d->key, hk, hn) == 0 && d->key[hn] == '|')
            return &d->up;
    return NULL;
}

/* Make room: drop a record nothing refers to (no connection, no request). */
static void evict_one(void)
{
    for (size_t b = 0; b < DEST_BUCKETS; b++)
        for (struct lg_dynup **pp = &table[b]; *pp; pp = &(*pp)->next)
            if ((*pp)->refs == 0 && (*pp)->npool == 0) {
                struct lg_dynup *d = *pp;
                *pp = d->next;
                free(d);
                ndests--;
                return;
            }
}

lg_upstream_t *lg_dest_get(const lg_forward_t *f, const char *host, unsigned port,
                           const struct sockaddr_storage *ss, int tunnel, void *tls_ctx)
{
    char ip[64];
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    unsigned aport = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                                     : ((const struct sockaddr_in *)ss)->sin_port);
    inet_ntop(ss->ss_family, a, ip, sizeof(ip));
    char key[sizeof(((struct lg_dynup *)0)->key)];
    size_t hn = hostkey(key, sizeof(key), host, port, tls_ctx != NULL);
    uint64_t h = lg_hash64(key, hn, 0);
    snprintf(key + hn, sizeof(key) - hn, ss->ss_family == AF_INET6 ? "|[%s]:%u%s" : "|%s:%u%s",
             ip, aport, tunnel ? "/t" : "");
    struct lg_dynup **bucket = &table[h & (DEST_BUCKETS - 1)];
    for (struct lg_dynup *d = *bucket; d; d = d->next)
        if (d->hash == h && d->owner == f && strcmp(d->key, key) == 0)
            return &d->up;
    if (ndests >= DEST_MAX)
        evict_one();            /* (when every record is busy, the table grows past it) */
    struct lg_dynup *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    memcpy(d->key, key, sizeof(key));
    d->hostkey_len = hn;
    d->hash = h;
    memcpy(&d->srv.addr.ss, ss, sizeof(*ss));
    d->srv.addr.len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
    snprintf(d->text, sizeof(d->text), ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, aport);
    d->srv.addr.text = d->text;
    d->srv.weight = 1;
    d->up.name = d->key;
    d->up.servers = &d->srv;
    d->up.nservers = 1;
    d->up.keepalive = tunnel ? 0 : f->keepalive;
    if (tls_ctx) {
        /* what the client was shown a minted certificate for must be the
         * name the destination proves: SNI and verification (net/tls.c) */
        snprintf(d->sni, sizeof(d->sni), "%s", host);
        d->up.tls = 1;
        d->up.tls_verify = 1;
        d->up.tls_server_name = d->sni;
        d->up.ssl_ctx = tls_ctx;
    }
    d->up.index = -1;
    d->up.dyn = d;
    d->up.fail_on = d->up.next_upstream = (char *)"error timeout";
    d->up.next_mask = LG_COND_ERROR | LG_COND_TIMEOUT;
    d->owner = f;
    d->idle_total = &idle_total;
    d->idle_max = f->keepalive_total;
    d->idle_timeout = f->keepalive_timeout;
    d->next = *bucket;
    *bucket = d;
    ndests++;
    return &d->up;
}

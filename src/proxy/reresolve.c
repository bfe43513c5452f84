/*
 * Upstream server names looked up again while legate runs (resolve = true,
 * nginx's "server name resolve" with its "resolver ... valid="), so a
 * backend behind a changing DNS name keeps working without a reload.
 *
 * Each worker has its own c-ares resolver per such upstream (net/resolve.c)
 * and asks it for every server's name once a second.  The resolver's cache
 * answers until the record's TTL runs out (or resolve_valid, which replaces
 * the TTL), so the name servers see one query per TTL and worker; a new
 * answer that no longer holds the address in use moves the server to the
 * first address of the answer, and its idle pooled connections to the old
 * one are closed.  A failed lookup keeps the address it had.  A server
 * whose name did not resolve when the configuration loaded is out of the
 * balancing until a first answer comes.
 *
 * Each worker changes its own copy of the configuration: workers agree
 * within a TTL, not at the same instant, as nginx's do.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/resolve.h"
#include "pipeline/worker.h"

#define ASK_EVERY 1000          /* ms: the cache answers until the TTL runs out */

typedef struct rr_server {
    lg_upstream_t   *up;        /* borrowed: the worker's configuration */
    size_t           si;
    lg_resolver_t   *res;       /* borrowed: the upstream's */
    lg_resolve_t    *q;         /* in flight, or NULL */
    lg_timer_t       timer;
    int              failing;   /* the last lookup failed (logged once) */
    char             text[INET6_ADDRSTRLEN + 16];  /* addr.text points here */
} rr_server_t;

static int same_addr(const struct sockaddr_storage *a, const lg_addr_t *b)
{
    if (a->ss_family != b->ss.ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)&b->ss)->sin_addr, 4) == 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)&b->ss)->sin6_addr, 16) == 0;
    return 0;
}

static void answered(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    rr_server_t *rs = arg;
    lg_upstream_server_t *srv = &rs->up->servers[rs->si];
    rs->q = NULL;
    if (status != LG_RESOLVE_OK || n == 0) {
        if (!rs->failing)
            lg_warn("upstream \"%s\" server %s:%d: %s; %s", rs->up->name, srv->host, srv->port,
                    lg_resolve_strerror(status),
                    srv->unresolved ? "it stays out until the name resolves"
                                    : "the address it had is kept");
        rs->failing = 1;
        return;
    }
    rs->failing = 0;
    for (size_t i = 0; i < n; i++)
        if (!srv->unresolved && same_addr(&addrs[i], &srv->addr))
            return;             /* still one of the name's: no change */
    char was[sizeof(rs->text)], ip[INET6_ADDRSTRLEN];
    snprintf(was, sizeof(was), "%s", srv->unresolved ? "none" : rs->text);
    memset(&srv->addr.ss, 0, sizeof(srv->addr.ss));
    memcpy(&srv->addr.ss, &addrs[0], sizeof(addrs[0]));
    if (addrs[0].ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&srv->addr.ss;
        s6->sin6_port = htons((uint16_t)srv->port);
        srv->addr.len = sizeof(*s6);
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(rs->text, sizeof(rs->text), "[%s]:%d", ip, srv->port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&srv->addr.ss;
        s4->sin_port = htons((uint16_t)srv->port);
        srv->addr.len = sizeof(*s4);
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(rs->text, sizeof(rs->text), "%s:%d", ip, srv->port);
    }
    /* in place: a request holding the pointer ($upstream_addr) stays valid */
    srv->addr.text = rs->text;
    srv->unresolved = 0;
    lg_upstream_drop_idle(rs->up, rs->si);
    lg_notice("upstream \"%s\" server %s:%d now resolves to %s (was %s)", rs->up->name, srv->host,
              srv->port, rs->text, was);
}

static void ask(lg_timer_t *t)
{
    rr_server_t *rs = t->data;
    if (rs->q == NULL)
        rs->q = lg_resolve(rs->res, rs->up->servers[rs->si].host, answered, rs);
    lg_timer_set(&lg_w.loop, &rs->timer, ASK_EVERY);
}

/* Made once per worker and kept for its life: the worker exits whole. */
int lg_reresolve_init(void)
{
    lg_conf_t *c = lg_w.conf;
    for (size_t u = 0; u < c->nupstreams; u++) {
        lg_upstream_t *up = &c->upstreams[u];
        if (!up->resolve)
            continue;
        lg_resolver_opts_t o;
        char err[256];
        lg_resolver_opts_init(&o);
        o.servers = up->resolvers && up->resolvers->n ? (const char *const *)up->resolvers->v : NULL;
        o.nservers = up->resolvers ? up->resolvers->n : 0;
        o.cache_size = 64;
        o.neg_ttl = 1;          /* a name that failed is asked again soon */
        if (up->resolve_valid > 0) {
            /* nginx's valid=: the answer's TTL is replaced */
            uint32_t v = (uint32_t)((up->resolve_valid + 999) / 1000);
            o.min_ttl = o.max_ttl = v;
        }
        lg_resolver_t *res = lg_resolver_new(&lg_w.loop, &o, err, sizeof(err));
        if (res == NULL) {
            lg_error("upstream \"%s\": cannot start its resolver: %s; its servers keep the "
                     "addresses they had at load", up->name, err);
            continue;
        }
        for (size_t i = 0; i < up->nservers; i++) {
            lg_upstream_server_t *srv = &up->servers[i];
            if (srv->host == NULL)
                continue;       /* an address: nothing to look up */
            rr_server_t *rs = calloc(1, sizeof(*rs));
            if (rs == NULL)
                return -1;
            rs->up = up;
            rs->si = i;
            rs->res = res;
            snprintf(rs->text, sizeof(rs->text), "%s", srv->addr.text ? srv->addr.text : "");
            srv->addr.text = rs->text;
            rs->timer.cb = ask;
            rs->timer.data = rs;
            /* at once for a name with no address yet, else after the first period */
            lg_timer_set(&lg_w.loop, &rs->timer, srv->unresolved ? 0 : ASK_EVERY);
        }
    }
    return 0;
}

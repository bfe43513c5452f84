/*
 * One cache for the fleet (cluster.cache_peers): the nodes are the servers
 * of an upstream, and each cache key has one owner among them, chosen by
 * the consistent hash of that upstream (Maglev on the base cache key, the
 * same table on every node: its servers are written alike everywhere).
 * A miss whose key another node owns is sent to that node, which serves
 * it from its copy or fetches it from the origin once and stores it, as
 * Squid's CARP and Varnish's shard director do; this node passes the
 * answer through and keeps no copy.
 *
 *   client -> node A: MISS, owner B  --X-Legate-Shard-->  node B: HIT or
 *   origin fetch, stored on B  --> A --> client
 *
 * The hop to the owner is a relay, not a second proxy: the client's own
 * head goes on (hop-by-hop fields dropped), with one field saying which
 * node sent it, the client's scheme, its address and the hop A would have
 * named in X-Forwarded-For, signed (HMAC-SHA256 with cache_peers_secret,
 * over those, the time, the method, target and authority).  B trusts the
 * field only when the signature holds, the time is within a minute, the
 * request is a GET or HEAD without a body, and it comes from an address of
 * the upstream's servers.  Then the request has the client's scheme
 * ($scheme, the cache key) and address (rules, logs, X-Forwarded-For);
 * B's access phase runs as A's did (the same address and credentials give
 * the same answer, and $remote_user or a JWT claim in a cache key is the
 * same on both), except its limits: the request was counted on A.  And it
 * is never sent on to another node whatever B thinks of the ring -- the
 * loop guard, which also covers two nodes that disagree on who is up.  A
 * field B does not trust is dropped, and the request is a client's like
 * any other.
 *
 * Failure: the owner refusing, resetting or silent past the upstream's
 * timeouts (proxy_connect_timeout / proxy_read_timeout of the peers'
 * upstream) makes A fetch from the origin itself, without storing; the
 * failure counts for passive health, and health checks on that upstream
 * take a dead node out of the ring, which moves only that node's keys.
 */
#include "cluster/cluster.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cache/http.h"
#include "cluster/wire.h"
#include "core/log.h"
#include "http/message.h"
#include "pipeline/request.h"
#include "pipeline/vars.h"
#include "pipeline/worker.h"
#include "proxy/proxy.h"

#define GUARD "x-legate-shard"
#define SKEW  60                /* seconds a signed field stays good */

static int shard_slot;

typedef struct shard_req {
    lg_upstream_t *origin;      /* the route's choice, for the fallback */
    int            owner;       /* the peer the request went to, or -1 */
    int            relayed;     /* it came from a node of the fleet: never sent on */
} shard_req_t;

#define SREQ(s) ((shard_req_t *)(s)->ctx[shard_slot])

static const lg_cluster_conf_t *shard_conf(void)
{
    const lg_cluster_conf_t *cf = lg_w.conf->cluster;
    return cf && cf->peers ? cf : NULL;
}

static shard_req_t *sreq(lg_req_t *s)
{
    if (SREQ(s) == NULL && (s->ctx[shard_slot] = lg_arena_calloc(&s->arena, sizeof(shard_req_t))))
        SREQ(s)->owner = -1;
    return SREQ(s);
}

/* The connection comes from the address of one of the nodes (any port:
 * a node's own connections leave from an ephemeral one). */
static int from_peer(const lg_req_t *s, const lg_upstream_t *up)
{
    const struct sockaddr_storage *a = &s->conn->peer;
    for (size_t i = 0; i < up->nservers; i++) {
        const struct sockaddr_storage *b = &up->servers[i].addr.ss;
        if (a->ss_family != b->ss_family)
            continue;
        if (a->ss_family == AF_INET &&
            ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
            ((const struct sockaddr_in *)b)->sin_addr.s_addr)
            return 1;
        if (a->ss_family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                   &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0)
            return 1;
    }
    return 0;
}

/* The signature of a relay field: hex HMAC-SHA256 over its parts and the
 * request it rides on (65 bytes with the NUL). */
static void relay_sig(const lg_req_t *s, const char *node, size_t nn, int https, const char *for_,
                      size_t fl, const char *hop, size_t hl, int64_t t, char out[65])
{
    const char *key = lg_w.conf->cluster->cache_peers_secret;
    char buf[LG_MAX_REQUEST_LINE + 1024];
    int n = snprintf(buf, sizeof(buf), "%.*s|%s|%.*s|%.*s|%lld|%.*s|%.*s|%.*s", (int)nn, node,
                     https ? "https" : "http", (int)fl, for_, (int)hl, hop, (long long)t,
                     (int)s->req.method_len, s->req.method, (int)s->ri.authority.n, s->ri.authority.p,
                     (int)s->req.target_len, s->req.target);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (n < 0 || (size_t)n >= sizeof(buf) ||
        HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)buf, (size_t)n, md, &mdlen) == NULL)
        mdlen = 0;
    static const char hx[] = "0123456789abcdef";
    size_t o = 0;
    for (unsigned i = 0; i < mdlen && o + 2 < 65; i++) {
        out[o++] = hx[md[i] >> 4];
        out[o++] = hx[md[i] & 15];
    }
    out[o] = '\0';             /* empty when HMAC failed: matches nothing */
}

/*
 * POST_READ: the relay field goes, whoever sent it (the origin never sees
 * it); from a node of the fleet it makes this request the client's.
 */
static int shard_post_read(lg_req_t *s)
{
    const lg_cluster_conf_t *cf = shard_conf();
    if (cf == NULL)
        return LG_DECLINED;
    /* every request passes here: look first, move fields only when there is
     * one to take off */
    size_t i = 0;
    while (i < s->req.num_headers && !http_name_eq(&s->req.headers[i], GUARD))
        i++;
    if (i == s->req.num_headers)
        return LG_DECLINED;
    http_header_t guard = s->req.headers[i];    /* a copy: its slot is reused below */
    size_t k = i;
    for (; i < s->req.num_headers; i++)
        if (!http_name_eq(&s->req.headers[i], GUARD))
            s->req.headers[k++] = s->req.headers[i];
    s->req.num_headers = k;
    if (lg_req_is_forward(s))
        return LG_DECLINED;     /* dropped, never passed on */
    const char *why = NULL;
    lg_relay_field_t f;
    char sig[65];
    int64_t now = (int64_t)time(NULL);
    if (!from_peer(s, cf->peers))
        why = "not from a node of the upstream";
    else if (lg_relay_field_parse(guard.value, guard.value_len, &f) < 0)
        why = "garbled";
    else if (!(s->ri.body == LG_BODY_NONE && (s->ri.is_head || (s->req.method_len == 3 &&
                                                                memcmp(s->req.method, "GET", 3) == 0))))
        why = "not on a GET or HEAD without a body";
    else if (f.t < 0 || f.t < now - SKEW || f.t > now + SKEW)
        why = "out of date";
    else {
        relay_sig(s, f.node, f.node_len, f.https, f.for_, f.for_len, f.hop, f.hop_len, f.t, sig);
        if (f.sig_len != 64 || sig[0] == '\0' || CRYPTO_memcmp(sig, f.sig, 64) != 0)
            why = "not signed with this node's cache_peers_secret";
    }
    if (why) {
        lg_info("cluster: ignored X-Legate-Shard from %s: %s", s->peer_text, why);
        return LG_DECLINED;
    }
    shard_req_t *st = sreq(s);
    if (st == NULL)
        return LG_DECLINED;
    st->relayed = 1;            /* the loop guard: never sent on */
    s->hop_scheme = f.https ? 2 : 1;
    lg_req_set_client(s, f.for_, f.for_len);
    if (f.hop_len && f.hop_len < 64)
        s->relay_hop = lg_arena_strndup(&s->arena, f.hop, f.hop_len);
    s->limits_done = 1;
    lg_cluster_count(LG_CM_SHARD_RELAYED);
    return LG_DECLINED;
}

/* The cache's miss (lg_cache_shard): does another node own this key? */
static int shard_owner(lg_req_t *s, const char *key, size_t n)
{
    (void)n;
    const lg_cluster_conf_t *cf = shard_conf();
    if (cf == NULL || s->route == NULL || s->up == NULL || lg_req_is_forward(s) ||
        s->ri.body != LG_BODY_NONE || s->upgrade || s->ri.authority.n == 0)
        return 0;
    shard_req_t *st = sreq(s);
    if (st == NULL || st->relayed || st->owner >= 0)
        return 0;
    int full = 0;
    int i = lg_upstream_pick(cf->peers, NULL, key, 0, &full);
    if (i < 0 || i == cf->self)
        return 0;               /* ours, or no node up but us: the origin */
    st->owner = i;
    st->origin = s->up;
    s->cache_peer = cf->peers->servers[i].addr.text;
    lg_cluster_count(LG_CM_SHARD_SENT);
    return 1;
}

/* The head the owner gets: the client's, as it came, plus the relay field. */
static char *relay_head(lg_req_t *s, size_t *len)
{
    const lg_cluster_conf_t *cf = shard_conf();
    const char *node = cf->node ? cf->node : lg_w.conf->via_name;
    size_t cap = s->req.method_len + s->req.target_len + s->ri.authority.n + strlen(node) + 512;
    for (size_t i = 0; i < s->req.num_headers; i++)
        cap += s->req.headers[i].name_len + s->req.headers[i].value_len + 4;
    char *h = lg_arena_alloc(&s->arena, cap);
    if (h == NULL)
        return NULL;
    size_t o = (size_t)snprintf(h, cap, "%.*s %.*s HTTP/1.1\r\nHost: %.*s\r\n",
                                (int)s->req.method_len, s->req.method,
                                (int)s->req.target_len, s->req.target,
                                (int)s->ri.authority.n, s->ri.authority.p);
    for (size_t i = 0; i < s->req.num_headers && o < cap; i++) {
        const http_header_t *x = &s->req.headers[i];
        if (lg_http_is_hop_by_hop(x, s->ri.connection) || http_name_eq(x, "host") ||
            http_name_eq(x, "content-length"))
            continue;
        o += (size_t)snprintf(h + o, cap - o, "%.*s: %.*s\r\n", (int)x->name_len, x->name,
                              (int)x->value_len, x->value);
    }
    const char *hop = lg_vars_hop_addr(s);
    int64_t t = (int64_t)time(NULL);
    char sig[65];
    relay_sig(s, node, strlen(node), lg_req_tls(s), s->peer_text, strlen(s->peer_text), hop,
              strlen(hop), t, sig);
    if (o < cap)
        o += (size_t)snprintf(h + o, cap - o, "X-Legate-Shard: node=%s; proto=%s; for=%s; hop=%s; "
                              "t=%lld; sig=%s\r\n\r\n", node, lg_req_tls(s) ? "https" : "http",
                              s->peer_text, hop, (long long)t, sig);
    if (o >= cap)
        return NULL;
    *len = o;
    return h;
}

/* CONTENT: a key another node owns goes there, before the reverse proxy
 * would send it to the origin. */
static int shard_content(lg_req_t *s)
{
    shard_req_t *st = SREQ(s);
    if (st == NULL || st->owner < 0)
        return LG_DECLINED;
    const lg_cluster_conf_t *cf = shard_conf();
    /* the owner, and only it: the others count as tried */
    size_t n = cf->peers->nservers;
    size_t all = n >= 64 ? ~(size_t)0 : (((size_t)1 << n) - 1);
    s->tried = all & ~((size_t)1 << st->owner);
    lg_reverse_proxy_via(s, cf->peers, relay_head);
    return LG_DONE;
}

/* UPSTREAM_ERROR: the owner did not answer: the origin, from here. */
static int shard_error(lg_req_t *s)
{
    shard_req_t *st = SREQ(s);
    if (st == NULL || st->owner < 0 || st->origin == NULL)
        return LG_DECLINED;
    const lg_cluster_conf_t *cf = shard_conf();
    lg_cluster_warn("cluster: cache peer %s did not answer for \"%.*s\": fetched from upstream "
                    "\"%s\" instead", cf->peers->servers[st->owner].addr.text,
                    (int)s->ri.uri.n, s->ri.uri.p, st->origin->name);
    lg_cluster_count(LG_CM_SHARD_FALLBACK);
    lg_upstream_t *origin = st->origin;
    st->origin = NULL;          /* once */
    s->tried = 0;
    s->ntries = 0;
    s->upstream_status = 0;
    s->upstream_cond = 0;
    s->reqp.hdr = NULL;
    s->reqp.hdr_len = 0;
    lg_reverse_proxy_to(s, origin);
    return LG_DONE;
}

static int shard_init(void)
{
    lg_cache_shard = shard_conf() ? shard_owner : NULL;
    return 0;
}

const lg_feature_t lg_feature_shard = {
    .name = "cache shard",
    .init = shard_init,
    .handlers = {
        { LG_PH_POST_READ, shard_post_read },
        { LG_PH_CONTENT, shard_content },
        { LG_PH_UPSTREAM_ERROR, shard_error },
    },
    .ctx_slot = &shard_slot,
};

/*
 * Upstreams: the connections to upstream servers (upstream.c: a keep-alive
 * pool per server per worker, the balancers' choice, passive health), the
 * active health checks (health.c), and the reverse proxy built on them
 * (reverse.c).
 *
 * Ownership: the worker owns upstream connections; a request borrows one
 * while it is in flight (uc->owner) and gives it back to the pool, or
 * closes it, when the response is complete.
 */
#ifndef LEGATE_PROXY_PROXY_H
#define LEGATE_PROXY_PROXY_H

#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "core/event.h"
#include "net/buf.h"
#include "net/io.h"
#include "pipeline/request.h"
#include "pipeline/worker.h"

typedef struct lg_uconn lg_uconn_t;

struct lg_uconn {
    uint32_t        magic;
    lg_end_t        e;
    lg_timer_t      idle_timer; /* while pooled */
    lg_upstream_t  *up;         /* borrowed from the conf generation */
    size_t          server;     /* index in up->servers */
    lg_buf_t       *in;         /* response bytes */
    lg_req_t       *owner;      /* NULL while pooled */
    lg_uconn_t     *next;       /* pool stack link */
    int             connected;
    int             reused;     /* served a request before */
    int             counted;    /* counted in the shared active connections */
    int             tls_done;   /* TLS handshake with the upstream complete */
    unsigned        requests;
    /* an HTTP/2 upstream: e is a stream of a shared session (h2up.c), or NULL */
    struct lg_h2ust *h2;
};

#define LG_UCONN_MAGIC 0x55434f4eu
#define LG_CHECK_UCONN(uc) LG_DEBUG_BUG_ON((uc) == NULL || (uc)->magic != LG_UCONN_MAGIC)

/*
 * A forward-proxy destination: an upstream of one server made at run time
 * (forward/dest_pool.c) for a (scheme, host, port, address), whose idle
 * connections sit in the same keep-alive pool as a configured upstream's
 * (upstream.c: pool_head).  Freed when nothing refers to it any more and
 * the table needs room.
 */
struct lg_dynup {
    lg_upstream_t        up;            /* up.dyn points back here; up.index = -1 */
    lg_upstream_server_t srv;
    char                 key[320];      /* "http[s]://host:port|ip:port" (+ "/t" for tunnels) */
    size_t               hostkey_len;   /* the "http://host:port" prefix of key */
    uint64_t             hash;          /* of that prefix */
    const void          *owner;         /* the forward block it was made for (borrowed) */
    char                 text[72];      /* "ip:port", for logs */
    char                 sni[256];      /* https:// (TLS inspection): the name asked and verified */
    lg_uconn_t          *pool;          /* idle connections */
    int                  npool;
    int                  refs;          /* connections and sessions using it */
    int                 *idle_total;    /* the worker's idle destination connections */
    int                  idle_max;      /* ... and their bound (keepalive_total) */
    lg_msec_t            idle_timeout;  /* how long one stays idle (keepalive_timeout) */
    struct lg_dynup     *next;          /* hash chain */
};

/* upstream.c */
int         lg_upstream_init(void);
lg_uconn_t *lg_upstream_get(lg_req_t *r, lg_upstream_t *up, size_t *tried_mask, int *err);
/* The balancer's choice among up's servers not in `tried` (a bit a server),
 * for a client at peer (ip_hash) with this hash key (hash; NULL: round
 * robin): an index, or -1 (*full: some were at max_conns).  For callers
 * without a request (UDP sessions). */
int         lg_upstream_pick(lg_upstream_t *up, const struct sockaddr *peer, const char *key,
                             size_t tried, int *full);
/* Passive health and latency: a try succeeded (response head) or failed. */
void        lg_upstream_result(lg_uconn_t *uc, int ok, lg_msec_t latency_ms);
#define LG_EWMA_TAU_US 10000000ull   /* peak EWMA time constant: 10 s */
void        lg_upstream_release(lg_uconn_t *uc, int reusable);
/* Close every idle connection to server si of up (a destination that
 * dropped one has most likely dropped them all). */
void        lg_upstream_flush(lg_upstream_t *up, size_t si);
const char *lg_upstream_addr(const lg_uconn_t *uc);
/* Close the idle pooled connections to server si (its address changed). */
void        lg_upstream_drop_idle(lg_upstream_t *up, size_t si);
/* resolve = true: each worker looks its servers' names up again as their
 * answers expire (proxy/reresolve.c); called by lg_upstream_init. */
int         lg_reresolve_init(void);

/*
 * h2up.c: HTTP/2 upstreams.  A request's "connection" is a stream of a
 * session shared per server per worker (up to h2_connections of them):
 * uc->e is a virtual end that takes the HTTP/1.1 request the stages write
 * and gives back the response as HTTP/1.1 bytes (chunked, trailers in the
 * last chunk).  lg_h2up_get: a stream on server si, or NULL with *err;
 * lg_h2up_release: the stream ends (reset if still open), uc is freed by
 * the caller.
 */
int         lg_h2up_init(void);
lg_uconn_t *lg_h2up_get(lg_req_t *r, lg_upstream_t *up, size_t si, int *err);
void        lg_h2up_release(lg_uconn_t *uc);

/* reverse.c: the route's upstream answers; and, for the forward proxy,
 * a destination it resolved (a CONNECT becomes a tunnel). */
extern const lg_feature_t lg_feature_reverse;
void lg_reverse_proxy_to(lg_req_t *r, lg_upstream_t *up);
/* The same through a proxy (the forward proxy's parents): the head sent
 * up is head_fn's (absolute form, Proxy-Authorization), and a CONNECT goes
 * up as a request, becoming the tunnel when the parent answers 2xx. */
typedef char *(*lg_head_fn)(lg_req_t *r, size_t *len);
void lg_reverse_proxy_via(lg_req_t *r, lg_upstream_t *up, lg_head_fn head_fn);
/* upstream.c: has up a server that is not down (configuration, health)? */
int  lg_upstream_usable(const lg_upstream_t *up);

/* health.c: active health checks, run by worker slot 0 only */
void lg_health_start(void);
void lg_health_stop(void);
/* The shared verdict on server si of up (logged when it changes). */
void lg_health_apply(lg_upstream_t *up, size_t si, int down, const char *why);
/* Set by src/cluster: this node's verdict is a vote, sent after every probe. */
extern void (*lg_health_cluster_vote)(lg_upstream_t *up, size_t si, int local_down);

#endif

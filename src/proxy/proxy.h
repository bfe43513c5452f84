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
 * (proxy/forward.c), with its own keep-alive pool.  Freed when nothing
 * refers to it any more and the cache needs room.
 */
struct lg_dynup {
    lg_upstream_t        up;            /* up.dyn points back here; up.index = -1 */
    lg_upstream_server_t srv;
    char                 key[80];       /* "ip:port" (+ "/t" for tunnels) */
    char                 text[72];      /* "ip:port", for logs */
    lg_uconn_t          *pool;          /* idle connections */
    int                  npool;
    int                  refs;          /* connections and sessions using it */
    struct lg_dynup     *next;
};

/* upstream.c */
int         lg_upstream_init(void);
lg_uconn_t *lg_upstream_get(lg_req_t *r, lg_upstream_t *up, size_t *tried_mask, int *err);
/* Passive health and latency: a try succeeded (response head) or failed. */
void        lg_upstream_result(lg_uconn_t *uc, int ok, lg_msec_t latency_ms);
#define LG_EWMA_TAU_US 10000000ull   /* peak EWMA time constant: 10 s */
void        lg_upstream_release(lg_uconn_t *uc, int reusable);
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

/* health.c: active health checks, run by worker slot 0 only */
void lg_health_start(void);
void lg_health_stop(void);

#endif

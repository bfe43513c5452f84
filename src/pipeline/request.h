/*
 * A request and the phases it passes (request.c).
 *
 * A front end (HTTP/1.1 today) makes a request when the first byte of its
 * head arrives, parses the head into it and calls lg_req_start().  The
 * request then passes the phases below in this order; in each, the
 * handlers that features registered run in registration order:
 *
 *   POST_READ  the head is read: the client's real address (real_ip_from)
 *   ACCESS     may the client ask this: forward-proxy rules and auth
 *   ROUTE      server and route, rewrite, local returns, upstream choice
 *   CACHE      a stored answer, a collapsed wait, a purge
 *   CONTENT    who answers: an upstream (reverse or forward), a tunnel
 *   REQUEST_BODY  the request body's pipe is set up: filters (a gunzip)
 *   ----- the answer's head arrives (lg_req_response_head) -----
 *   RESPONSE   the response head: store in the cache, choose a coding
 *   BODY       the response body's pipe is set up: filters and taps
 *   ----- the request ends (lg_req_finish) -----
 *   LOG        the access log, cache bookkeeping
 *
 *   UPSTREAM_ERROR runs instead of RESPONSE when no upstream answered
 *   (a stale cached answer may be served instead of the error).
 *
 * A handler returns LG_DECLINED or LG_OK (go on), LG_DONE (the request has
 * been answered or handed to a stage: skip the rest of its phases),
 * LG_AGAIN (suspended: the handler resumes it later with lg_req_resume(),
 * which carries on with the next handler, or it answers it), or LG_ERROR
 * (a 500).  A request is in exactly one phase at a time (r->phase).
 *
 * After the phases, a request is driven by its stage: whatever owns it now
 * (an upstream attempt, a tunnel, a local answer being written) gets the
 * connection's events through r->stage and arms its timer.
 *
 * Memory: the request and everything it holds come from its own arena,
 * made when it starts and destroyed when it ends; cleanups registered with
 * lg_req_cleanup() run first (a resolver lookup cancelled, a cache fill
 * abandoned).  A feature keeps its own state in r->ctx[its slot].
 */
#ifndef LEGATE_PIPELINE_REQUEST_H
#define LEGATE_PIPELINE_REQUEST_H

#include <regex.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "core/arena.h"
#include "core/event.h"
#include "core/log.h"
#include "core/rc.h"
#include "http/message.h"
#include "http/parse.h"
#include "pipeline/conn.h"
#include "pipeline/pipe.h"

#define LG_MAX_HEADERS 100
#define LG_MAX_REQUEST_LINE 8192

typedef enum lg_phase {
    LG_PH_POST_READ = 0,        /* head read: the client's address */
    LG_PH_ACCESS = 1,           /* rules, authentication, limits */
    LG_PH_ROUTE = 2,            /* server, route, rewrite, returns, upstream choice */
    LG_PH_CACHE = 3,            /* cache lookup */
    LG_PH_CONTENT = 4,          /* who answers */
    LG_PH_REQUEST_BODY = 5,     /* the request body's pipe is set up: its filters */
    LG_PH_RESPONSE = 6,         /* the response head */
    LG_PH_BODY = 7,             /* the response body's filters and taps */
    LG_PH_UPSTREAM_ERROR = 8,   /* no upstream answer: a substitute? */
    LG_PH_LOG = 9,              /* the request ended */
    LG_PH_MAX,
    LG_PH_NONE = LG_PH_MAX,     /* not in the phases (head being read, or a stage) */
} lg_phase_t;

const char *lg_feature_phase_name(lg_phase_t p);

/* What the one timer of the connection is counting for a request stage. */
typedef enum lg_tkind {
    LG_T_SEND = 0,              /* send_timeout: between two writes to the client */
    LG_T_BODY = 1,              /* client_body_timeout: between two reads of the body */
    LG_T_UP_CONNECT = 2,        /* proxy_connect_timeout */
    LG_T_UP_SEND = 3,           /* proxy_send_timeout */
    LG_T_UP_READ = 4,           /* proxy_read_timeout */
    LG_T_QUEUE = 5,             /* queued: next look for room (queue_timeout bounds it) */
    LG_T_RESOLVE = 6,           /* forward proxy: name resolution (proxy_connect_timeout) */
    LG_T_TUNNEL = 7,            /* a tunnel's idle timeout (its opener's setting) */
    LG_T_WAIT = 8,              /* a suspended handler looks again */
    LG_T_RATE = 9,              /* limit_rate: the response body may go on */
} lg_tkind_t;

/*
 * Whoever drives a request once its phases are over.  step() gets every
 * event of the client connection and of the request's upstream; arm()
 * returns the next timeout in ms (or -1) and sets *kind; timeout() is
 * called when it fires.  Stages are static and named for logs.
 */
typedef struct lg_stage {
    const char *name;
    void      (*step)(lg_req_t *r);
    lg_msec_t (*arm)(lg_req_t *r, lg_tkind_t *kind);
    void      (*timeout)(lg_req_t *r, lg_tkind_t kind);
} lg_stage_t;

typedef int (*lg_handler_t)(lg_req_t *r);

/* What the response goes through on its way to the client. */
typedef enum lg_xform {
    LG_XFORM_NONE   = 0,
    LG_XFORM_GZIP   = 1,        /* compressed here */
    LG_XFORM_GUNZIP = 2,        /* decompressed here for a client without gzip */
    LG_XFORM_BR     = 3,        /* compressed here with brotli */
    LG_XFORM_ZSTD   = 4,        /* compressed here with zstd */
} lg_xform_t;

/* A feature: handlers for some phases, and optionally a context slot. */
typedef struct lg_feature {
    const char *name;
    struct { lg_phase_t phase; lg_handler_t fn; } handlers[6];  /* fn NULL ends */
    int        *ctx_slot;      /* set at registration to the feature's r->ctx index, or NULL */
    int       (*init)(void);   /* in each worker, before requests: 0 or -1 */
} lg_feature_t;

/* feature.c: the registry, and the phase engine request.c drives. */
void lg_feature_register(const lg_feature_t *f);
int  lg_feature_init_all(void);    /* in the worker */
/* Handlers from (r->phase, r->ph_next) through `last`: LG_OK all ran (r->phase
 * is the one after last), LG_AGAIN one suspended it, LG_DONE answered or
 * handed to a stage (r->phase NONE). */
int  lg_feature_run_phases(lg_req_t *r, lg_phase_t last);
/* Every handler of a response-side phase: LG_OK, or LG_DONE / LG_ERROR. */
int  lg_feature_run_one(lg_req_t *r, lg_phase_t p);

#define LG_CTX_MAX 8

typedef struct lg_cleanup {
    void             (*fn)(void *arg);
    void              *arg;
    struct lg_cleanup *next;
} lg_cleanup_t;

struct lg_uconn;
struct lg_tunnel;

struct lg_req {
    uint32_t        magic;
    lg_conn_t      *conn;       /* borrowed: the connection that owns it */
    /* borrowed: where the client's bytes of this request come from and its
     * answer goes -- the connection's own end (HTTP/1.1), or an HTTP/2
     * stream posing as one; stages read and write nothing else */
    lg_end_t       *cend;
    /* borrowed: the buffer holding the head (head_len bytes at start) and
     * the body's first bytes: the connection's (HTTP/1.1) or the stream's */
    lg_buf_t       *in;
    void           *stream;     /* the front end's own per-request state (HTTP/2), or NULL */
    lg_arena_t      arena;      /* everything below that is not inline */
    lg_phase_t      phase;      /* where in the phases, LG_PH_NONE outside them */
    unsigned        ph_next;    /* the next handler to run in phase */
    const lg_stage_t *stage;    /* borrowed (static): who drives it now, or NULL */
    lg_tkind_t      tkind;      /* what the timer counts for the stage */
    lg_cleanup_t   *cleanups;
    void           *ctx[LG_CTX_MAX];    /* features' own state (arena) */

    /* the client, for this request (real_ip_from may replace the connection's) */
    struct sockaddr_storage peer;
    char            peer_text[64];
    unsigned short  peer_port;
    char            country[3]; /* geoip: the client's country, "" unknown */
    int             country_done;

    /* the head */
    http_request_t  req;        /* req.headers: arena array of LG_MAX_HEADERS */
    lg_req_info_t   ri;
    size_t          head_len;   /* bytes of the head at conn->in->start */
    lg_msec_t       t_start;    /* first byte of the request */

    /* routing */
    const lg_server_t *server;
    const lg_route_t  *route;
    const char     *mpath;      /* normalised path the route matched (arena) */
    const lg_route_t *route_found; /* lg_route_request's answer, once routed is set */
    int             routed;     /* lg_route_request: 0 not yet, 1 done, or its error (400, 500) */
    regmatch_t      caps[10];   /* regex captures into mpath */
    lg_upstream_t  *up;         /* the upstream chosen (route, split, forward destination) */
    int             max_forwards; /* TRACE/OPTIONS: the Max-Forwards to send on, plus 1; 0 = none */
    /* the protocol this request may switch to: sent upstream as Upgrade
     * (with Connection: upgrade), and the 101 that accepts it is passed
     * back with it.  NULL: Upgrade is hop-by-hop like any other (a feature
     * sets it when the route allows the switch) */
    const char     *upgrade;
    int             keep_alive;

    /* a response made here */
    int             status;
    const char     *local;      /* local response (arena) */
    size_t          local_len, local_sent;
    const char     *local_body; /* and a second piece sent after it (a cached body), or NULL */
    size_t          local_body_len;
    const char     *local_extra;  /* header lines added to a response made here */
    const char     *local_ctype;  /* its Content-Type, if not the default */
    const char     *auth_realm; /* a 401 / 407 asks for Basic credentials in this realm */
    /* satisfy = "any": a check already let the request through (its address,
     * its password), so the others (auth_request, JWT) are not asked */
    int             satisfied;
    const char     *set_cookie; /* canary cohort cookie to set (arena), or NULL */

    /* the upstream attempt (proxy/reverse.c) */
    struct lg_uconn *uc;        /* borrowed from the pool while in flight */
    lg_end_t       *uend;       /* borrowed: uc's end, for the stages that relay to it */
    size_t          tried;      /* bit mask of upstream servers tried */
    unsigned        ntries;     /* tries counted against next_upstream_tries */
    lg_msec_t       t_queued;   /* when it started waiting in the queue */
    lg_msec_t       t_first_try;
    lg_msec_t       t_upstream; /* when the current try started */
    int             attach_err; /* why no server could be had (EBUSY: max_conns) */
    int             abandoned;  /* response ended before the request body was sent */
    int             body_gunzip; /* the request body is decompressed on its way up */
    http_header_t  *rsp_headers; /* arena: parse room for the response head, made once */
    lg_pipe_t       reqp;       /* client -> upstream */
    lg_pipe_t       rspp;       /* upstream -> client */
    /* limit_rate_zone: the budget the response pipe (or a tunnel's
     * downstream half) draws from, set in ACCESS by the limits feature */
    size_t        (*rate_fn)(void *arg, size_t n, int64_t now, int64_t *wait_ms);
    void           *rate_arg;
    int             rsp_head_done;
    size_t          rsp_scanned;
    int             upstream_status;
    unsigned        upstream_cond;  /* LG_COND_* of the last upstream failure, for the cache */
    int             upstream_keep;
    /* interim (1xx) answers passed to the client before the final one
     * (proxy/reverse.c): the bytes of one not yet written, which hold back
     * the reading of the upstream's next head */
    const char     *interim;    /* arena, or NULL */
    size_t          interim_len, interim_off;
    unsigned        interims;   /* how many were passed on */
    int             continue_sent; /* a 100 Continue went to the client */
    lg_msec_t       upstream_time;  /* until the response head (ms) */
    lg_msec_t       upstream_connect_time; /* TCP (and TLS) connect of the try that answered, -1 */
    char            request_id[65]; /* $request_id, made (or a trusted front end's) when first used */
    char            trace_id[33];   /* $trace_id (traceparent): the client's or a new one; "" none */
    struct lg_tunnel *tunnel;   /* arena: a tunnel relay, once the request became one */

    /* trailer fields of the response, "Name: value\r\n" lines (arena), set
     * by whoever read them; an HTTP/2 client gets them as a trailing
     * HEADERS after the body (gRPC's grpc-status) */
    const char     *trailers;
    const char     *upstream_extra;  /* header lines features add to the upstream head */
    const char     *response_extra;  /* ...and to the client's response head (lg_req_add_header) */
    int             own_conditionals; /* a feature (the cache) asks its own: drop the client's */
    /* a request from another node of the fleet (cluster/shard.c): the
     * client's scheme as that node saw it (0: this connection's; 1 http,
     * 2 https), the hop that node would have named in X-Forwarded-For,
     * and that its limits were counted there (not twice); and, on the node
     * that sends a request on, the node owning its key ($cache_peer) */
    unsigned char   hop_scheme;
    int             limits_done;
    const char     *relay_hop;
    const char     *cache_peer;
    /* error_pages' "STATUS @name" (respond.c): the request was handed to
     * that route once; no error page applies to it again (nginx's
     * recursive_error_pages off), and the cache neither stores nor serves
     * for it */
    const lg_route_t *err_route;
    /* the status its answer carries whatever the route answers: the
     * error's own, or "=CODE"'s; 0: the route's own */
    int             err_status;
    uint64_t        upstream_bytes_in; /* read from upstreams until their heads ($upstream_bytes_received) */
    int             finished;   /* lg_req_finish ran: the answer went out whole ($request_completion) */

    /* the response head as features see it (RESPONSE phase), on the stack
     * of whoever read it: valid during that phase only */
    const http_response_t *rsp;
    const lg_rsp_info_t   *rsp_ri;
    const char     *rsp_raw;    /* the head as received */
    size_t          rsp_raw_len;
    int             xform;      /* lg_xform_t: the coding the response goes through */
    int             vary_ae;    /* Vary: Accept-Encoding (it could have had a coding) */
    /* an answer served from the cache: what the head says instead of the upstream's */
    int             cache_serving;
    int64_t         cache_age, cache_length;
    const char     *cache_range;  /* Content-Range of a 206/416 from the cache */

    /* log fields */
    const char     *user;       /* the authenticated user (arena), or NULL */
    const char     *blocked;    /* the rule that refused it (arena) */
    /* claims of a verified token ($jwt_claim_NAME), set by feature/jwt.c:
     * names[i] = values[i], both arena strings; pipeline/vars.c reads them */
    const char    **claim_names, **claim_values;
    size_t          nclaims;
    const char     *limit_req_status;  /* $limit_req_status: PASSED, DELAYED, REJECTED... or NULL */
    const char     *limit_conn_status; /* $limit_conn_status (feature/limit.c) */
    const char     *cache_status; /* X-Cache / $cache_status, or NULL */
    const char     *upstream_addr; /* the server that answered ($upstream_addr), or NULL */
    uint64_t        bytes_in;   /* from the client, this request */
    uint64_t        bytes_out;  /* to the client, this request */
};

/* Did the client speak TLS ($scheme, X-Forwarded-Proto)?  The connection's
 * say, unless a trusted node of the fleet relayed the request. */
static inline int lg_req_tls(const lg_req_t *r)
{
    return r->hop_scheme ? r->hop_scheme == 2 : lg_conn_tls(r->conn);
}

#define LG_REQ_MAGIC 0x52455155u
#define LG_CHECK_REQ(r) LG_DEBUG_BUG_ON((r) == NULL || (r)->magic != LG_REQ_MAGIC || \
                                        (r)->conn == NULL || \
                                        ((r)->conn->req != (r) && !(r)->conn->fe->multiplexed))

/* A request on c, its arena made; c->req points to it unless the front
 * end multiplexes (HTTP/2 lists its own).  NULL: no memory. */
lg_req_t *lg_req_new(lg_conn_t *c);
/* Run the request's stage now (an event of its upstream, a wait over).
 * r may have ended earlier in this loop round. */
void lg_req_run(lg_req_t *r);
/* The client of this request is at ip (text, n bytes; realip.c): its
 * address, text and country follow.  -1, nothing changed, when ip is not an
 * IPv4 or IPv6 address. */
int  lg_req_set_client(lg_req_t *r, const char *ip, size_t n);
/* The request cannot go on: HTTP/1.1 closes its connection, HTTP/2 resets
 * its stream.  r is gone afterwards. */
void lg_req_abort(lg_req_t *r, const char *why);
static inline lg_buf_t *lg_req_in(const lg_req_t *r) { return r->in; }
/* Run the phases from the first; then the stage it was handed to drives it.
 * head_status: the front end found the head unacceptable (400, 501...):
 * answered so once the client's address is known (POST_READ). */
void lg_req_start(lg_req_t *r, int head_status);
/* A suspended handler is done waiting: carry on with the next handler. */
void lg_req_resume(lg_req_t *r);
/* Its phases again from CONTENT, for the route r->route is now (an error
 * page's route); called by a stage, never from inside a handler. */
void lg_req_content(lg_req_t *r);
/* Hand the request to a stage, ending its phases. */
void lg_req_set_stage(lg_req_t *r, const lg_stage_t *st);
/* A handler waits (it returns LG_AGAIN): the stage gets the events and
 * the timer meanwhile; the phases go on at lg_req_resume(). */
void lg_req_suspend(lg_req_t *r, const lg_stage_t *st);
/* A forward-proxy request (absolute form or CONNECT on a forward server). */
static inline int lg_req_is_forward(const lg_req_t *r)
{
    return r->server && r->server->forward && (r->ri.absolute_form || r->ri.connect);
}

/* route.c: the server a Host names on a listener, the route of a path. */
const lg_server_t *lg_route_server(const lg_bind_t *b, lg_str_t host);
const lg_route_t  *lg_route_find(const lg_server_t *srv, const lg_req_t *r,
                                 const char *path, size_t n, regmatch_t caps[10]);
/*
 * The route the request's path (normalised into r->mpath) and conditions
 * select, found once and remembered: the ACCESS phase asks it to know
 * which route's settings apply before the ROUTE phase sets r->route from
 * it.  NULL with *status 0: no route matches (404); 400: a path that
 * cannot be normalised; 500: out of memory.
 */
const lg_route_t  *lg_route_request(lg_req_t *r, int *status);
/* The response head is in r->rsp / r->rsp_ri: the RESPONSE phase.  LG_OK,
 * or LG_DONE when a handler answered instead (a cache revalidation). */
int  lg_req_response_head(lg_req_t *r);
/* The response pipe is set up: the BODY phase installs filters and taps. */
void lg_req_response_body(lg_req_t *r);
/* The request body's pipe is set up: REQUEST_BODY installs its filters. */
void lg_req_request_body(lg_req_t *r);
/* No upstream answered with status: LG_DONE if a handler answered instead. */
int  lg_req_upstream_error(lg_req_t *r, int status);
/* The request is over: the LOG phase, then the front end takes the
 * connection back (keep-alive or close).  complete: the whole answer went out. */
void lg_req_finish(lg_req_t *r);
/* Run the cleanups and free the arena (the connection is closing). */
void lg_req_free(lg_req_t *r);
void lg_req_cleanup(lg_req_t *r, void (*fn)(void *), void *arg);

/* The status an answer of `status` goes out with: an error page's route
 * answers with the error's status (or its "=CODE") unless it has no body
 * to carry (1xx, 204, 304). */
static inline int lg_req_status(const lg_req_t *r, int status)
{
    return r->err_status && status >= 200 && status != 204 && status != 304 ? r->err_status : status;
}

/* Answers made here (respond.c).  They hand the request to the local stage,
 * or, for an error whose page is a route ("404 @name"), to that route. */
void lg_respond(lg_req_t *r, int status, const char *body, const char *location);
void lg_respond_error(lg_req_t *r, int status);
void lg_respond_raw(lg_req_t *r, int status, const char *head, size_t hlen,
                     const char *body, size_t blen);
/* The settings that apply: the route's, or (before routing) the server's,
 * or the listener's default server's. */
const lg_common_t *lg_req_common(const lg_req_t *r);

/* The error pages that apply: the route's, also before the ROUTE phase
 * set r->route (an ACCESS refusal of a route found early), else the
 * server's. */
static inline const lg_errpages_t *lg_req_error_pages(const lg_req_t *r)
{
    if (r->route == NULL && r->routed == 1 && r->route_found)
        return r->route_found->common.error_pages;
    return lg_req_common(r)->error_pages;
}

/* A header line for the client's response head (RESPONSE phase handlers):
 * appended in the arena; 0, or -1 out of memory. */
int lg_req_add_header(lg_req_t *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* realip.c: the country of the request's client (real_ip_from runs in POST_READ). */
const char *lg_realip_country(lg_req_t *r);

#endif

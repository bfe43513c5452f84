/*
 * The reverse proxy: one lg_session_t per client connection, driven by an
 * explicit state machine (session.c), relaying bodies through two lg_pipe_t
 * (pipe.c) to a pooled upstream connection (upstream.c).
 *
 * Ownership: the worker owns sessions and upstream connections; a session
 * borrows its upstream connection while a request is in flight and gives it
 * back to the pool (or closes it) when the response is complete.  Every
 * per-request allocation comes from session->arena, reset between requests.
 */
#ifndef LEGATE_PROXY_PROXY_H
#define LEGATE_PROXY_PROXY_H

#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "core/arena.h"
#include "core/event.h"
#include "http/message.h"
#include "http/parse.h"
#include "net/buf.h"
#include "net/io.h"
#include "net/splice.h"

#define LG_MAX_HEADERS 100
#define LG_MAX_REQUEST_LINE 8192

typedef struct lg_session lg_session_t;
typedef struct lg_uconn lg_uconn_t;

/* A one-way body relay from a source descriptor to a destination. */
typedef struct lg_pipe {
    lg_buf_t      *buf;         /* borrowed: holds the source's bytes */
    char          *base;        /* compaction target inside buf (after a head kept for the request) */
    char          *dec;         /* [buf->pos, dec) decoded, ready to send; [dec, buf->last) raw */
    lg_body_kind_t in;          /* framing of the source */
    int64_t        remaining;   /* LG_BODY_LENGTH: bytes still to come */
    int64_t        length;      /* LG_BODY_LENGTH: the whole body */
    http_chunked_t chunked;
    int            out_chunked; /* re-encode as chunked towards dst */
    uint64_t       chunk_left;  /* bytes of the current output chunk still to send */
    char           fx[32];      /* framing bytes pending: "\r\n%x\r\n" or the last chunk */
    uint8_t        fx_pos, fx_len;
    int            chunks;      /* output chunks started */
    const char    *hdr;         /* borrowed (arena): head to send before the body */
    size_t         hdr_len, hdr_sent;
    int            src_done;    /* the whole body has been received and decoded */
    int            kept;        /* the whole body sits at base, unchanged: it can be resent */
    int            done;        /* ...and everything has been written */
    int            src_eof;     /* the source closed */
    uint64_t       body_bytes;  /* payload bytes written */
    uint64_t       decoded;     /* payload bytes received and decoded */
    struct lg_codec *codec;     /* optional filter (gzip, gunzip) in the request arena */
    lg_buf_t      *zbuf;        /* owned: the filter's output, while a filter is set */
    uint64_t       zpending;    /* bytes the encoder took since its last flush */
    int            want_flush;  /* the source went quiet: flush the encoder */
    /* sees every decoded payload byte, then (NULL, 0) once when the source
     * is complete -- before the last bytes go out, so a cache fill is
     * visible to the client's next request */
    void         (*tap)(void *arg, const char *p, size_t n);
    void          *tap_arg;
    int            tap_ended;
    uint64_t       limit;       /* max payload bytes, 0 = none (client_max_body_size) */
    uint64_t       wire_bytes;  /* bytes written, head and framing included */
} lg_pipe_t;

typedef enum lg_pipe_rc {
    LG_PIPE_DONE  = 0,          /* everything received and written */
    LG_PIPE_AGAIN = 1,          /* waiting: see the want_* flags */
    LG_PIPE_ERR_SRC = -1,       /* source failed or closed too early */
    LG_PIPE_ERR_DST = -2,       /* destination failed */
    LG_PIPE_ERR_LIMIT = -3,     /* the body grew past p->limit */
} lg_pipe_rc_t;

struct lg_uconn {
    uint32_t        magic;
    lg_end_t        e;
    lg_timer_t      idle_timer; /* while pooled */
    lg_upstream_t  *up;         /* borrowed from the conf generation */
    size_t          server;     /* index in up->servers */
    lg_buf_t       *in;         /* response bytes */
    lg_session_t   *owner;      /* NULL while pooled */
    lg_uconn_t     *next;       /* pool stack link */
    int             connected;
    int             reused;     /* served a request before */
    int             counted;    /* counted in the shared active connections */
    int             tls_done;   /* TLS handshake with the upstream complete */
    unsigned        requests;
};

/* What the session's one timer is counting, chosen by session_arm(). */
typedef enum lg_tkind {
    LG_T_HEADER = 0,            /* client_header_timeout: whole head, from its first byte */
    LG_T_KEEPALIVE = 1,         /* keepalive_timeout: idle between requests */
    LG_T_BODY = 2,              /* client_body_timeout: between two reads of the body */
    LG_T_SEND = 3,              /* send_timeout: between two writes to the client */
    LG_T_UP_CONNECT = 4,        /* proxy_connect_timeout */
    LG_T_UP_SEND = 5,           /* proxy_send_timeout */
    LG_T_UP_READ = 6,           /* proxy_read_timeout */
    LG_T_LINGER = 7,            /* lingering close */
    LG_T_QUEUE = 8,             /* queued: next look for room (queue_timeout bounds it) */
    LG_T_HANDSHAKE = 9,         /* tls_handshake_timeout, for the whole handshake */
    LG_T_RESOLVE = 10,          /* forward proxy: name resolution (proxy_connect_timeout) */
    LG_T_TUNNEL = 11,           /* tunnel_idle_timeout */
    LG_T_CACHE_WAIT = 12,       /* look at the cache again (collapsed forwarding) */
} lg_tkind_t;

typedef enum lg_sstate {
    LG_S_READ_HEAD  = 0,        /* waiting for / parsing a request head */
    LG_S_CONNECT    = 1,        /* connecting to the upstream */
    LG_S_PROXY      = 2,        /* request and response bodies flowing */
    LG_S_LOCAL      = 3,        /* writing a response made here */
    LG_S_DRAIN      = 4,        /* lingering close: reading and discarding */
    LG_S_CLOSED     = 5,
    LG_S_QUEUED     = 6,        /* waiting for room under max_conns */
    LG_S_HANDSHAKE  = 7,        /* TLS handshake with the client */
    LG_S_RESOLVE    = 8,        /* forward proxy: resolving the destination */
    LG_S_TUNNEL     = 9,        /* CONNECT: bytes relayed both ways */
    LG_S_SOCKS      = 10,       /* SOCKS5 negotiation */
    LG_S_CACHE_WAIT = 11,       /* another worker is fetching this key: waiting for it */
    LG_S_PROXYPROTO = 12,       /* reading the PROXY protocol header */
} lg_sstate_t;

const char *lg_sstate_name(lg_sstate_t s);

struct lg_session {
    uint32_t        magic;
    lg_end_t        e;          /* the client */
    lg_timer_t      timer;
    lg_tkind_t      tkind;      /* what the timer is armed for */
    lg_sstate_t     state;
    int             rerun;      /* run the state machine again even if the state is unchanged */
    const lg_bind_t *bind;      /* borrowed */
    struct sockaddr_storage peer;       /* the client: real_ip may replace it per request */
    struct sockaddr_storage conn_peer;  /* who is connected (after any PROXY header) */
    int             peer_replaced;      /* peer came from real_ip_header */
    char            peer_text[64];
    unsigned short  peer_port;
    uint64_t        id;
    unsigned        requests;
    lg_buf_t       *in;         /* client bytes; NULL while idle */

    /* the current request */
    lg_arena_t      arena;
    http_request_t  req;        /* req.headers: arena array of LG_MAX_HEADERS */
    lg_req_info_t   ri;
    size_t          head_len;   /* bytes of the head at in->start */
    size_t          scanned;
    const lg_server_t *server;
    const lg_route_t  *route;
    const char     *mpath;      /* normalised path the route matched (arena) */
    regmatch_t      caps[10];   /* regex captures into mpath */
    lg_msec_t       t_start;    /* first byte of the request */
    int             status;
    int             keep_alive;
    int             sent_continue;
    const char     *local;      /* local response (arena) */
    size_t          local_len, local_sent;
    const char     *local_body; /* and a second piece sent after it (a cached body), or NULL */
    size_t          local_body_len;

    lg_upstream_t  *up;         /* the upstream chosen for this request (route or split) */
    const char     *set_cookie; /* canary cohort cookie to set (arena), or NULL */
    const char     *blocked;    /* forward proxy: the rule that refused it (arena) */
    const char     *user;       /* forward proxy: the authenticated user (arena), or NULL */
    const char     *auth_realm; /* a 407 asks for Basic credentials in this realm */
    struct lg_resolve *resolving; /* forward proxy: lookup in flight, or NULL */
    int             tunnel_up;  /* tunnel pipes set up */
    int             socks;      /* a SOCKS5 connection (replies are SOCKS, not HTTP) */
    int             socks_phase;
    int             half_up, half_down; /* each direction's end passed on */
    int             spliced;    /* the tunnel relays through kernel pipes now */
    lg_splice_t     sp_up, sp_down;
    lg_uconn_t     *uc;         /* borrowed from the pool while in flight */
    size_t          tried;      /* bit mask of upstream servers tried */
    unsigned        ntries;     /* tries counted against next_upstream_tries */
    lg_msec_t       t_queued;   /* when it started waiting in the queue */
    lg_msec_t       t_first_try;
    int             attach_err; /* why no server could be had (EBUSY: max_conns) */
    int             abandoned;  /* response ended before the request body was sent */
    int             body_gunzip; /* the request body is decompressed on its way up */
    int             max_forwards; /* TRACE/OPTIONS: the Max-Forwards to send on, plus 1; 0 = none */
    const char     *local_extra;  /* header lines added to a response made here */
    const char     *local_ctype;  /* its Content-Type, if not the default */
    char            country[3];   /* geoip: the client's country, "" unknown */
    int             country_done;
    struct lg_cstate *cache;    /* arena: the cache's view of this request, or NULL */
    int             refresh;    /* a background cache refresh (stale-while-revalidate) */
    int             refresh_tls; /* ...for a request that came over TLS ($scheme) */
    int             cache_serving; /* the response comes from the cache */
    int64_t         cache_age, cache_length;
    const char     *cache_range;  /* Content-Range of a 206/416 from the cache */
    lg_msec_t       t_upstream; /* when the upstream try started */
    lg_pipe_t       reqp;       /* client -> upstream */
    lg_pipe_t       rspp;       /* upstream -> client */
    int             rsp_head_done;
    size_t          rsp_scanned;
    int             upstream_status;
    int             upstream_keep;
    lg_msec_t       upstream_time;
    uint64_t        bytes_in;   /* from the client, this request */
    uint64_t        bytes_out;  /* to the client, this request */
    lg_session_t   *prev, *next; /* all sessions of the worker */
};

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

/* The worker's state, one per process. */
typedef struct lg_worker {
    lg_loop_t      loop;
    lg_conf_t     *conf;        /* borrowed: inherited from the master */
    int            slot;
    int            quitting;    /* graceful: no accept, close idle */
    int            nconns;      /* client connections open */
    uint64_t       next_id;
    lg_uconn_t  ***pools;       /* [upstream][server] -> idle stack */
    int          **npool;
    int32_t       *rr_current;  /* smooth WRR state, [upstream][server] flattened */
    size_t        *rr_base;     /* where each upstream starts in the flattened arrays */
    struct lg_ewma *ewma;       /* peak EWMA latency, per worker, flattened like rr_current */
    uint64_t       rng;         /* xorshift state for the random choices */
    int           *queued;      /* requests waiting per upstream (max_conns queue) */
} lg_worker_t;

extern lg_worker_t lg_w;

/* session.c */
void lg_session_accept(int lfd, const lg_bind_t *bind);
void lg_sessions_close_idle(void);

/* pipe.c */
void lg_pipe_init(lg_pipe_t *p, lg_buf_t *buf, char *base, lg_body_kind_t in,
                  int64_t length, int out_chunked);
lg_pipe_rc_t lg_pipe_run(lg_pipe_t *p, lg_end_t *src, lg_end_t *dst);
/* Put a filter between source and destination (it is the pipe's from now). */
int          lg_pipe_set_codec(lg_pipe_t *p, struct lg_codec *c);
/* Send the head (and a kept body) again, to another server; -1 if the body is gone. */
int          lg_pipe_rewind(lg_pipe_t *p);
void         lg_pipe_release(lg_pipe_t *p);     /* idempotent */

/* What the response goes through on its way to the client. */
typedef enum lg_xform {
    LG_XFORM_NONE   = 0,
    LG_XFORM_GZIP   = 1,        /* compressed here */
    LG_XFORM_GUNZIP = 2,        /* decompressed here for a client without gzip */
    LG_XFORM_BR     = 3,        /* compressed here with brotli */
    LG_XFORM_ZSTD   = 4,        /* compressed here with zstd */
} lg_xform_t;

/* upstream.c */
int         lg_upstream_init(void);
lg_uconn_t *lg_upstream_get(lg_session_t *s, lg_upstream_t *up, size_t *tried_mask, int *err);
/* Passive health and latency: a try succeeded (response head) or failed. */
void        lg_upstream_result(lg_uconn_t *uc, int ok, lg_msec_t latency_ms);
#define LG_EWMA_TAU_US 10000000ull   /* peak EWMA time constant: 10 s */
void        lg_upstream_release(lg_uconn_t *uc, int reusable);
const char *lg_uconn_addr(const lg_uconn_t *uc);

/* forward.c: the forward proxy */
int  lg_forward_prepare(lg_conf_t *conf, char *err, size_t errlen);    /* master and -t */
/* After the rules (and a cache miss): look the destination up, then proxy. */
void lg_forward_resolve(lg_session_t *s);
void lg_forward_start(lg_session_t *s);
void lg_forward_cancel(lg_session_t *s);

/* session.c, for forward.c's asynchronous steps */
void lg_session_respond(lg_session_t *s, int status, const char *body);
void lg_session_proxy_to(lg_session_t *s, lg_upstream_t *up);
void lg_session_wake(lg_session_t *s);
void lg_session_close(lg_session_t *s, const char *why);
const char *lg_session_country(lg_session_t *s);    /* geoip, "" when unknown */
int  lg_forward_check_user(lg_session_t *s, const char *user, const char *pass);

/* tunnel.c */
void lg_tunnel_step(lg_session_t *s);
void lg_tunnel_end(lg_session_t *s);

/* socks.c */
void          lg_socks_step(lg_session_t *s);
void          lg_socks_fail(lg_session_t *s, int http_status);
unsigned char lg_socks_code(int http_status);

/* cached.c: the HTTP cache on the proxy path */
extern struct lg_cache *lg_cache;
int  lg_cache_on_request(lg_session_t *s);     /* 1: handled here (hit, wait, purge) */
int  lg_cache_on_response(lg_session_t *s, const http_response_t *r, const lg_rsp_info_t *ri,
                          const char *raw, size_t rawlen);  /* 1: answered from the cache */
int  lg_cache_on_error(lg_session_t *s, int status);        /* 1: stale served */
void lg_cache_on_finish(lg_session_t *s, int complete);
void lg_cache_on_close(lg_session_t *s);
void lg_cache_tap(lg_session_t *s);            /* after the response pipe is set up */
const char *lg_cache_status(const lg_session_t *s);
void lg_cache_conditional(lg_session_t *s, void *sb,
                          void (*add)(void *, const char *, size_t, const char *, size_t));
void lg_session_send_raw(lg_session_t *s, int status, const char *buf, size_t len);
/* stale-while-revalidate: the same GET again, in the background.  0 or -1
 * (refresh.c). */
int  lg_session_refresh(const lg_session_t *orig);
/* A session on a connected fd, registered and counted (its fd is the
 * caller's to close on NULL); then HTTP from the first byte. */
lg_session_t *lg_session_new(int fd, const lg_bind_t *bind, const struct sockaddr_storage *peer);
void lg_session_begin_http(lg_session_t *s);
/* client_addr.c: the client's address (peer, peer_text, peer_port), and
 * real_ip_from applied to the request just parsed. */
void lg_session_set_peer(lg_session_t *s, const struct sockaddr_storage *ss);
void lg_session_real_ip(lg_session_t *s);
/* The same in two pieces (a head and a body), written with one writev. */
void lg_session_send_raw2(lg_session_t *s, int status, const char *head, size_t hlen,
                          const char *body, size_t blen);
/* gzip would apply to this response, whatever the client accepts (the cache
 * stores such answers compressed, once). */
int lg_session_compressible(lg_session_t *s, const http_response_t *r, const lg_rsp_info_t *ri);
/* xform.c: set up the response's filter for xf (NONE if it cannot); the
 * request body's gunzip when configured. */
lg_xform_t lg_session_start_xform(lg_session_t *s, lg_xform_t xf, const lg_rsp_info_t *ri);
void lg_session_request_gunzip(lg_session_t *s);
/* The settings that apply: the route's, or (forward proxy, before routing)
 * the server's, or the listener's default server's. */
const lg_common_t *lg_session_common(const lg_session_t *s);
lg_xform_t lg_session_choose_xform(lg_session_t *s, const http_response_t *r,
                                   const lg_rsp_info_t *ri);

/* health.c: active health checks, run by worker slot 0 only */
void lg_health_start(void);
void lg_health_stop(void);

/* route.c */
const lg_server_t *lg_route_server(const lg_bind_t *b, lg_str_t host);
const lg_route_t  *lg_route_find(const lg_server_t *srv, const lg_session_t *s,
                                 const char *path, size_t n, regmatch_t caps[10]);

/* headers.c */
char *lg_build_upstream_head(lg_session_t *s, size_t *len);
char *lg_build_client_head(lg_session_t *s, const http_response_t *r,
                           const lg_rsp_info_t *ri, int out_chunked, lg_xform_t xf,
                           size_t *len);
char *lg_build_local(lg_session_t *s, int status, const char *body,
                     const char *location, size_t *len);
/* Returns the header value for `name` from the request, or NULL. */
const http_header_t *lg_req_header(const lg_session_t *s, const char *name);
int lg_via_loop(const lg_session_t *s);    /* our via_name is in the request's Via */
/* The value of cookie `name` in the request's Cookie headers, or {NULL,0}. */
lg_str_t lg_req_cookie(const lg_session_t *s, const char *name);

/* accesslog.c */
int  lg_accesslog_open_all(const lg_conf_t *conf);   /* in the worker */
void lg_accesslog_write(lg_session_t *s);
void lg_accesslog_flush(void);
void lg_accesslog_reopen(void);

#endif

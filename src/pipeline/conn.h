/*
 * A client connection (conn.c) and the front end that speaks its protocol.
 *
 * Ownership: the worker owns connections (the list in conn.c); a
 * connection owns the requests it lists (HTTP/1.1: at most one at a time,
 * c->req) and its read buffer, which is NULL while idle so an idle
 * keep-alive connection holds no buffer.  A connection outlives its
 * requests; lg_conn_close() ends the requests it still has first.
 *
 *   accept -> [PROXYPROTO] -> [HANDSHAKE] -> front end (HTTP/1.1 or SOCKS5)
 *                                             |            ^
 *                                             v            | keep-alive
 *                                          request(s) -----+
 *                                             |
 *                                             v
 *                                     DRAIN (lingering close) -> CLOSED
 *
 * The front end is chosen by the listener and reached through a table of
 * function pointers, so this file names no protocol beyond TLS and PROXY.
 */
#ifndef LEGATE_PIPELINE_CONN_H
#define LEGATE_PIPELINE_CONN_H

#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "core/event.h"
#include "net/buf.h"
#include "net/io.h"
#include "pipeline/worker.h"

typedef struct lg_conn lg_conn_t;
typedef struct lg_req lg_req_t;

typedef enum lg_connstate {
    LG_C_PROXYPROTO = 0,        /* reading the PROXY protocol header */
    LG_C_HANDSHAKE  = 1,        /* TLS handshake with the client */
    LG_C_FRONT      = 2,        /* the front end has it (idle, reading, requests) */
    LG_C_DRAIN      = 3,        /* lingering close: reading and discarding */
    LG_C_CLOSED     = 4,
} lg_connstate_t;

const char *lg_conn_state_name(lg_connstate_t s);

/* A protocol spoken on accepted connections once TLS (if any) is up. */
typedef struct lg_frontend {
    const char *name;                           /* "HTTP/1.1", "SOCKS5" */
    void      (*start)(lg_conn_t *c);           /* first time in LG_C_FRONT */
    void      (*step)(lg_conn_t *c);            /* an event on the connection */
    void      (*arm)(lg_conn_t *c);             /* set c->timer for what it waits on */
    void      (*timeout)(lg_conn_t *c);         /* that timer fired */
    /* graceful stop begins: close what no request can be on, tell the rest
     * to end after their next answer */
    void      (*drain)(lg_conn_t *c);
    void      (*done)(lg_conn_t *c, lg_req_t *r); /* r was logged: free it, keep-alive or close */
    /* optional: answer an error the protocol's own way (1), or let HTTP do it (0) */
    int       (*error)(lg_conn_t *c, lg_req_t *r, int status);
    /* what the client is sent when its request becomes a tunnel */
    const char *tunnel_ok;
    size_t      tunnel_ok_len;
    /* many requests at once (HTTP/2): c->req is unused, each request is
     * run, aborted and timed on its own through these */
    int         multiplexed;
    void      (*run)(lg_conn_t *c, lg_req_t *r);
    void      (*abort)(lg_conn_t *c, lg_req_t *r, const char *why);
    void      (*close)(lg_conn_t *c);   /* optional: the connection is closing */
} lg_frontend_t;

typedef enum lg_proto {
    LG_PROTO_HTTP1 = 0,
    LG_PROTO_SOCKS5 = 1,
    LG_PROTO_HTTP2 = 2,
    LG_PROTO_HTTP3 = 3,
    LG_PROTO_STREAM = 4,        /* stream servers' bytes (stream/stream.c) */
    LG_PROTO_MAX
} lg_proto_t;

/* A front end makes itself known before any connection is accepted. */
void lg_conn_frontend_register(lg_proto_t p, const lg_frontend_t *fe);
/* The connection speaks p from now on (ALPN chose h2; an h2c preface):
 * the new front end starts with whatever is in c->in. */
void lg_conn_switch(lg_conn_t *c, lg_proto_t p);
/* The connection belongs to another listener's servers from now on, as if
 * accepted there after any PROXY header (a stream server's ssl_preread
 * hands a name to an HTTP server: its TLS handshake starts now, reading
 * the ClientHello the stream server only peeked at). */
void lg_conn_rebind(lg_conn_t *c, const lg_bind_t *bind);
void lg_h1_register(void);     /* h1.c */
void lg_h2_register(void);     /* h2.c */
void lg_h3_register(void);     /* h3.c, when built with HTTP/3 */

/*
 * A CONNECT tunnel the forward proxy intercepts (TLS inspection): the
 * client speaks TLS to legate inside it, and each request it sends in
 * origin form is one for https://authority (h1.c makes it so), through
 * the forward proxy's server.
 */
typedef struct lg_inspect {
    const lg_server_t *server;  /* borrowed: the forward proxy's (the conf generation) */
    unsigned           port;
    size_t             host_len, authority_len;
    char               host[256];       /* the server name */
    char               authority[264];  /* host[:port], port only when not 443 */
} lg_inspect_t;

/* The connection's client speaks TLS from now on, on ssl (server side, not
 * yet shaken hands; owned from here), and HTTP/1.1 inside it.  For a
 * tunnel the forward proxy takes over: c->req is gone, c->inspect set. */
void lg_conn_start_tls(lg_conn_t *c, SSL *ssl);

struct lg_conn {
    uint32_t        magic;
    lg_end_t        e;
    lg_timer_t      timer;      /* one timer: what it counts is the state's business */
    lg_connstate_t     state;
    const lg_frontend_t *fe;    /* borrowed: static */
    const lg_bind_t *bind;      /* borrowed: the conf generation */
    struct sockaddr_storage peer;   /* who is connected (after any PROXY header) */
    char            peer_text[64];
    unsigned short  peer_port;
    uint64_t        id;
    unsigned        requests;   /* requests finished on it */
    lg_msec_t       t_start;    /* accept, then first byte of the head being read */
    lg_msec_t       t_idle;     /* since when no request has been on it */
    lg_buf_t       *in;         /* owned: client bytes; NULL while idle */
    size_t          scanned;    /* how far the head being read was searched */
    lg_req_t       *req;        /* owned: the request in progress, or NULL */
    int             rerun;      /* run again even if the state is unchanged */
    int             refresh;    /* an internal connection: a background cache refresh */
    int             refresh_tls; /* ...for a request that came over TLS ($scheme) */
    int             quic;       /* a QUIC connection (TLS inside QUIC, not on c->e) */
    int             socks_phase; /* SOCKS5 front end: negotiation step */
    void           *fe_data;    /* owned by the front end (HTTP/2: its session) */
    /* the Authorization last accepted on this connection (feature/access.c):
     * a digest of it and the password file, so the next request with the
     * same credentials costs no second hash; all zero = none */
    unsigned char   auth_ok[16];
    lg_inspect_t   *inspect;    /* owned (malloc): an intercepted tunnel's destination, or NULL */
    lg_conn_t      *prev, *next; /* all connections of the worker */
    lg_conn_t      *idle_prev, *idle_next; /* keep-alive connections waiting, oldest first */
    int             in_idle;
};

#define LG_CONN_MAGIC 0x434f4e4eu

/* The client's bytes came encrypted: $scheme https, HSTS, X-Forwarded-Proto. */
static inline int lg_conn_tls(const lg_conn_t *c)
{
    return c->e.ssl != NULL || c->refresh_tls || c->quic;
}
/* On entry of every function a connection's events reach, in debug and
 * sanitizer builds: a freed or foreign pointer stops loudly. */
#define LG_CHECK_CONN(c) LG_DEBUG_BUG_ON((c) == NULL || (c)->magic != LG_CONN_MAGIC)

void lg_conn_accept(int lfd, const lg_bind_t *bind);
/* A connection on a connected fd, registered and counted (its fd is the
 * caller's to close on NULL); lg_conn_begin() starts its front end at once
 * (an internal connection: no PROXY header, no TLS). */
lg_conn_t *lg_conn_new(int fd, const lg_bind_t *bind, const struct sockaddr_storage *peer);
void lg_conn_begin(lg_conn_t *c);
/* A connection without a descriptor of its own, speaking p from the start:
 * a QUIC connection, whose packets arrive through its endpoint.  NULL when
 * out of memory or at worker_connections. */
lg_conn_t *lg_conn_new_virtual(const lg_bind_t *bind, const struct sockaddr_storage *peer, lg_proto_t p);
void lg_conn_close(lg_conn_t *c, const char *why);       /* idempotent */
/* Run the connection's driver (after an event that the loop did not deliver). */
void lg_conn_run(lg_conn_t *c);
/* Send what was written, close_notify, then read and drop until EOF. */
void lg_conn_linger(lg_conn_t *c);
/* Graceful stop: every connection's front end drains it. */
void lg_conn_drain_all(void);
/* A keep-alive connection waits for its next request (1) or has one (0):
 * the waiting ones may be closed to make room (lg_conn_reclaim). */
void lg_conn_set_idle(lg_conn_t *c, int idle);
/* At worker_connections: close the connection that has waited longest for
 * its next request, as nginx does with reusable connections.  1 if one was
 * closed, 0 if none waits. */
int  lg_conn_reclaim(void);
/* The counters of the connection's listener, or NULL (none kept, or an
 * internal connection). */
lg_lstats_t *lg_conn_stats(const lg_conn_t *c);
/* The connection's address, as text and port. */
void lg_conn_set_peer(lg_conn_t *c, const struct sockaddr_storage *ss);

#endif

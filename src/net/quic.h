/*
 * QUIC (RFC 9000) server connections on libngtcp2 with its GnuTLS crypto
 * backend: Debian 12's OpenSSL 3.0 has no QUIC API, so the TLS of QUIC
 * runs in GnuTLS with the same certificate files OpenSSL loads for TCP.
 *
 * An endpoint is one UDP socket of a worker.  Its datagrams are matched to
 * connections by destination connection ID (a table per endpoint), a new
 * Initial packet makes a connection, and everything else gets nothing (or
 * a stateless reset, once a later version keeps the tokens).  A connection
 * knows nothing of HTTP: the application above it (pipeline/h3.c) gets
 * stream bytes through lg_quic_app_t and gives bytes to send when pulled.
 *
 * Time: ngtcp2's clock is nanoseconds of CLOCK_MONOTONIC; each connection
 * has one loop timer at ngtcp2's next expiry.
 */
#ifndef LEGATE_NET_QUIC_H
#define LEGATE_NET_QUIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/event.h"

typedef struct lg_quic lg_quic_t;
typedef struct lg_quic_ep lg_quic_ep_t;

typedef struct lg_quic_vec {
    const uint8_t *base;
    size_t         len;
} lg_quic_vec_t;

/* What the application does with a connection.  Callbacks returning int:
 * 0, or -1 to end the connection with an application error. */
typedef struct lg_quic_app {
    int     (*open)(lg_quic_t *q);              /* before the first stream byte */
    int     (*recv)(lg_quic_t *q, int64_t sid, const uint8_t *p, size_t n, int fin);
    int     (*acked)(lg_quic_t *q, int64_t sid, uint64_t n);
    int     (*stream_close)(lg_quic_t *q, int64_t sid, uint64_t code);
    int     (*stream_reset)(lg_quic_t *q, int64_t sid, uint64_t code);
    int     (*unblock)(lg_quic_t *q, int64_t sid);
    /* the next stream bytes to send: a count of vectors (0 with *sid -1:
     * nothing), or -1 */
    ssize_t (*pull)(lg_quic_t *q, int64_t *sid, int *fin, lg_quic_vec_t *v, size_t n);
    int     (*wrote)(lg_quic_t *q, int64_t sid, size_t n);
    void    (*blocked)(lg_quic_t *q, int64_t sid);
    void    (*shut_wr)(lg_quic_t *q, int64_t sid);
    /* after a batch of packets was read and before the reply is written:
     * requests made ready run here, so their output goes in the same flight */
    void    (*settle)(lg_quic_t *q);
    void    (*gone)(lg_quic_t *q);              /* the connection is freed after this */
} lg_quic_app_t;

typedef struct lg_quic_conf {
    const char *cert, *key;                     /* PEM files (the server's first pair) */
    const char *cert2, *key2;                   /* a second pair (ECDSA beside RSA), or NULL */
    lg_msec_t   idle_timeout;
    lg_msec_t   handshake_timeout;
    uint64_t    max_streams_bidi;               /* requests at once per connection */
    uint64_t    stream_window;                  /* bytes a client may send on a stream unread */
    uint64_t    conn_window;
    unsigned    max_conns;                      /* per endpoint */
    unsigned    max_per_addr;                   /* connections from one client address */
    int         retry;                          /* validate every client address by a Retry first */
    /* The key of Retry tokens and stateless reset tokens: the same in every
     * worker (the master makes it), so any worker can reset, or take the
     * token of, a connection another worker began. */
    const uint8_t *secret;
    size_t      secret_len;
    int         steer_id;                       /* the socket's steering id (net/steer.h), or -1 */
} lg_quic_conf_t;

/* An endpoint on a bound UDP socket (the caller's to close after
 * lg_quic_ep_free), with its own copy of conf.  NULL with why filled. */
lg_quic_ep_t *lg_quic_ep_new(lg_loop_t *loop, int fd, const lg_quic_conf_t *conf, const lg_quic_app_t *app,
                             void *app_data, char *why, size_t whylen);
/* Close every connection (no CONNECTION_CLOSE: the process goes) and free. */
void lg_quic_ep_free(lg_quic_ep_t *ep);
/* Graceful stop: the application is told through its own GOAWAY; the
 * endpoint takes no new connections.  Returns the connections left. */
unsigned lg_quic_ep_drain(lg_quic_ep_t *ep);
unsigned lg_quic_ep_count(const lg_quic_ep_t *ep);
/* One datagram from `from`, as the socket's reader hands it on (and the
 * fuzz harness, without a socket in between). */
void     lg_quic_ep_input(lg_quic_ep_t *ep, const uint8_t *pkt, size_t n,
                          const struct sockaddr_storage *from, socklen_t flen);
void    *lg_quic_ep_data(const lg_quic_ep_t *ep);

/* The connection's application state (set by the application in open). */
void  lg_quic_set_data(lg_quic_t *q, void *data);
void *lg_quic_data(const lg_quic_t *q);
lg_quic_ep_t *lg_quic_ep(const lg_quic_t *q);
const struct sockaddr_storage *lg_quic_peer(const lg_quic_t *q);
/* Open the server's unidirectional stream (HTTP/3 control and QPACK). */
int   lg_quic_open_uni(lg_quic_t *q, int64_t *sid);
/* Flow control: n bytes of stream sid were consumed by the application. */
void  lg_quic_consumed(lg_quic_t *q, int64_t sid, size_t n);
/* The rest of what the client sends on the stream is not wanted
 * (STOP_SENDING): the answer still goes out whole. */
void  lg_quic_stop_reading(lg_quic_t *q, int64_t sid, uint64_t code);
/* Reset a stream both ways with an application code. */
void  lg_quic_reset(lg_quic_t *q, int64_t sid, uint64_t code);
/* The application has bytes to send: write what can go now (after the
 * current callback returns, never inside one). */
void  lg_quic_kick(lg_quic_t *q);
/* End the connection with an application error (CONNECTION_CLOSE). */
void  lg_quic_close(lg_quic_t *q, uint64_t code, const char *why);

#endif

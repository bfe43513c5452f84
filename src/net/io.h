/*
 * One end of a relay: a non-blocking descriptor, maybe with TLS on it, and
 * its readiness as edge-triggered epoll reported it (nginx's "ready" flags).
 *
 * Every read and write of the proxy goes through lg_end_recv() and
 * lg_end_writev(), so plain TCP, unix sockets and TLS share one code path.
 * They return the bytes moved (0 from recv: the peer closed), LG_AGAIN when
 * the call would block -- the ready flag it needs is cleared and the want
 * flag set, whichever way TLS needs it (a read may wait for writability) --
 * or LG_ERROR with errno set.  EINTR is retried inside.
 */
#ifndef LEGATE_NET_IO_H
#define LEGATE_NET_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include "core/event.h"
#include "core/rc.h"

typedef struct ssl_st SSL;
typedef struct lg_end lg_end_t;

/*
 * An end that is not a descriptor: an HTTP/2 stream presents itself to the
 * stages as one (pipeline/h2.c), so a relay needs no second code path.
 * Same contract as the functions below: bytes, 0 for the end, LG_AGAIN
 * with the ready flag cleared, LG_ERROR.  shutdown: nothing more will be
 * written.
 */
typedef struct lg_end_ops {
    ssize_t (*recv)(lg_end_t *e, void *buf, size_t n);
    ssize_t (*writev)(lg_end_t *e, const struct iovec *iov, int cnt);
    void    (*shutdown)(lg_end_t *e);
} lg_end_ops_t;

struct lg_end {
    lg_io_t io;                 /* io.fd -1 for a virtual end */
    SSL    *ssl;                /* owned: TLS on this end, or NULL */
    const lg_end_ops_t *ops;    /* borrowed: a virtual end's, or NULL for a descriptor */
    uint8_t r_ready, w_ready, rd_hup;
    uint8_t want_r, want_w;     /* what the last step waited for */
    uint8_t held;               /* its write waits for the end of the batch */
};

ssize_t lg_end_recv(lg_end_t *e, void *buf, size_t n);
ssize_t lg_end_writev(lg_end_t *e, const struct iovec *iov, int cnt);
ssize_t lg_end_send(lg_end_t *e, const void *buf, size_t n);
/* The TLS handshake on e (client or server side, as e->ssl was made):
 * LG_OK, LG_AGAIN (flags set as for a read), or LG_ERROR with why filled. */
int     lg_end_handshake(lg_end_t *e, char *why, size_t whylen);
/* No more writes on e: close_notify and shutdown(SHUT_WR), or the virtual
 * end's own (an HTTP/2 stream's END_STREAM). */
void    lg_end_shutdown(lg_end_t *e);
/* TLS close_notify (if the handshake finished), out of epoll, close(2).
 * Idempotent: the one teardown of an end. */
void    lg_end_close(lg_end_t *e, lg_loop_t *loop);

/*
 * Writes held to the end of the event batch, as HAProxy's streams do: the
 * requests and answers of a batch are all read first, then all written.
 * Written as each was read, the writes to the origin and to the clients
 * alternated with reads, and each woke a peer that had gone back to sleep
 * meanwhile; the wake-ups are charged to the writer (doc/performance.md,
 * "Where the rest goes": a tenth less system time at 1 KiB proxied).
 *
 * lg_end_hold(e) says whether a write to e should wait: inside the event
 * callbacks of a batch, for a descriptor, yes -- its ready flag is cleared
 * as for EAGAIN and, after the batch, the end's own callback gets EPOLLOUT
 * as from the kernel, and writes then.  Only a message's head is held
 * (pipeline/pipe.c): the body after it goes at once.  lg_end_hold_init()
 * names the loop (a worker's); without it nothing is held.
 */
void lg_end_hold_init(lg_loop_t *l);
int  lg_end_hold(lg_end_t *e);

/* What an epoll event says about the end: ready to read (data, EOF or an
 * error to read), ready to write, the peer half-closed. */
static inline void lg_end_on_event(lg_end_t *e, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        e->r_ready = 1;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        e->w_ready = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        e->rd_hup = 1;
}

/*
 * With edge-triggered epoll a read that did not fill the buffer has drained
 * the socket (new bytes raise a new edge), so skip the recv() that would
 * only say EAGAIN: one system call less per request on each side.  Not when
 * the peer has half-closed (no edge will come for the EOF), and not with
 * TLS (a record may wait decrypted inside OpenSSL with no edge to come).
 */
static inline void lg_end_short_read(lg_end_t *e, size_t got, size_t room)
{
    if (got < room && !e->rd_hup && e->ssl == NULL && e->ops == NULL)
        e->r_ready = 0;
}

/* A write that took less than offered: on a plain socket its buffer is
 * full (wait for EPOLLOUT); with TLS it may just be one record, so try again. */
static inline void lg_end_short_write(lg_end_t *e)
{
    if (e->ssl == NULL && e->ops == NULL)
        e->w_ready = 0;
}

#endif

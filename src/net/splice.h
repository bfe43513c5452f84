/*
 * Zero-copy relay between two plain sockets through a kernel pipe
 * (splice(2)): what CONNECT tunnels and WebSocket tunnels use once the
 * handshake bytes are out, and what a length-framed response body uses
 * after its first buffer (pipeline/pipe.c), so those bytes never cross
 * into user space.  Same contract as a body pipe: run until it would
 * block, report which end it waits for.
 *
 * Kernel pipes come from a per-worker pool of empty ones and go back to
 * it when closed empty: a request's body costs no pipe2() and close().
 */
#ifndef LEGATE_NET_SPLICE_H
#define LEGATE_NET_SPLICE_H

#include <stddef.h>
#include <stdint.h>

#include "net/io.h"

typedef struct lg_splice {
    int      fds[2];            /* owned: the pipe, -1 when closed */
    size_t   inpipe;            /* bytes in the pipe, not yet written */
    int      eof;               /* the source has ended (or `left` reached 0) */
    int64_t  left;              /* bytes still to read from the source; -1: until it ends */
    uint64_t bytes;             /* bytes written to the destination */
} lg_splice_t;

/* 0 or -1 (errno).  left: read at most this many bytes (a body's rest,
 * so a keep-alive connection is never read past it), -1 for no bound. */
int  lg_splice_open(lg_splice_t *sp, int64_t left);
/* Idempotent.  A pipe with bytes still in it is closed, never pooled. */
void lg_splice_close(lg_splice_t *sp);
/* 0 done (source ended or its bound reached, all written), 1 waiting,
 * -1 source failed, -2 destination failed, -3 the source ended before
 * its bound */
int  lg_splice_run(lg_splice_t *sp, lg_end_t *src, lg_end_t *dst);

#endif

/*
 * Zero-copy relay between two plain sockets through a kernel pipe
 * (splice(2)): what CONNECT tunnels use once the handshake bytes are out,
 * so tunnelled data never crosses into user space.  Same contract as a
 * body pipe: run until it would block, report which end it waits for.
 */
#ifndef LEGATE_NET_SPLICE_H
#define LEGATE_NET_SPLICE_H

#include <stddef.h>
#include <stdint.h>

#include "net/io.h"

typedef struct lg_splice {
    int      fds[2];            /* owned: the pipe, -1 when closed */
    size_t   inpipe;            /* bytes in the pipe, not yet written */
    int      eof;               /* the source has ended */
    uint64_t bytes;             /* bytes written to the destination */
} lg_splice_t;

int  lg_splice_open(lg_splice_t *sp);      /* 0 or -1 (errno) */
void lg_splice_close(lg_splice_t *sp);     /* idempotent */
/* 0 done (source ended, all written), 1 waiting, -1 source failed, -2 destination failed */
int  lg_splice_run(lg_splice_t *sp, lg_end_t *src, lg_end_t *dst);

#endif

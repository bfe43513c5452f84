/*
 * The tunnel relay (tunnel.c): what a CONNECT, a SOCKS5 request or a
 * request whose upstream switched protocols (101) become.
 * Bytes go both ways between the client's end and r->uend, each
 * direction's end passed on with a half-close, through the body pipes at
 * first and through kernel pipes (splice) once nothing is buffered and
 * both ends are plain sockets.  It names no protocol: the opener passes
 * the bytes that tell the client the tunnel is open, the status the log
 * shows, and how long the tunnel may sit idle (each kind of tunnel has its
 * own setting for it).
 */
#ifndef LEGATE_PIPELINE_TUNNEL_H
#define LEGATE_PIPELINE_TUNNEL_H

#include "net/splice.h"
#include "pipeline/request.h"

typedef struct lg_tunnel {
    int         half_up, half_down;     /* each direction's end passed on */
    int         spliced;                /* the kernel relays now */
    lg_splice_t sp_up, sp_down;
    lg_msec_t   idle_timeout;
    const char *ended;                  /* $tunnel_end: "closed" (both sides ended), "idle",
                                           "client error", "upstream error"; NULL while open */
} lg_tunnel_t;

/* r->uend is connected: send `open` to the client and relay, reading the
 * upstream into ub (the upstream end's buffer, borrowed; bytes already in
 * it from ub->pos on are relayed first).  Bytes the client sent after the
 * request head belong to the tunnel.  status: r->status for the log. */
void lg_tunnel_start(lg_req_t *r, int status, const char *open, size_t open_len, lg_buf_t *ub,
                     lg_msec_t idle_timeout);

#endif

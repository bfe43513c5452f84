/*
 * The tunnel relay (tunnel.c): what a CONNECT, a SOCKS5 request -- and,
 * later, a WebSocket upgrade -- become once their upstream is connected.
 * Bytes go both ways between the client's end and r->uend, each
 * direction's end passed on with a half-close, through the body pipes at
 * first and through kernel pipes (splice) once nothing is buffered and
 * both ends are plain sockets.  It names no protocol: the opener passes
 * the bytes that tell the client the tunnel is open.
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
} lg_tunnel_t;

/* r->uend is connected: send `ok` to the client and relay, reading the
 * upstream into ub (the upstream end's buffer, borrowed). */
void lg_tunnel_start(lg_req_t *r, const char *ok, size_t ok_len, lg_buf_t *ub);

#endif

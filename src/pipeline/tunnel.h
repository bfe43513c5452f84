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

/* What a gate is shown (lg_tunnel_gate_t's `why`): bytes came, or no more
 * will -- the client ended its sending, the gate's time ran out, or the
 * buffer is full.  After any but LG_GATE_BYTES it must decide. */
typedef enum lg_gate_why {
    LG_GATE_BYTES = 0, LG_GATE_EOF, LG_GATE_TIMEOUT, LG_GATE_FULL,
} lg_gate_why_t;

/* A gate holds the client's first bytes back (read, not relayed) until it
 * has judged them: 0 read more, 1 relay them (all, unchanged), -1 refused
 * (the gate set r->blocked and t->ended; the tunnel closes), 2 taken over
 * (the gate set t->takeover: the request is logged and goes, the
 * upstream connection with it, and the client connection speaks TLS on
 * that SSL, which reads the bytes the gate saw first -- lg_conn_start_tls).
 * The forward proxy's connect_sni and TLS inspection are one
 * (forward/forward.c). */
typedef int (*lg_tunnel_gate_t)(lg_req_t *r, const unsigned char *p, size_t n,
                                lg_gate_why_t why);

typedef struct lg_tunnel {
    int         half_up, half_down;     /* each direction's end passed on */
    int         spliced;                /* the kernel relays now */
    lg_splice_t sp_up, sp_down;
    lg_msec_t   idle_timeout;
    const char *ended;                  /* $tunnel_end: "closed" (both sides ended), "idle",
                                           "client error", "upstream error"; NULL while open */
    lg_tunnel_gate_t gate;              /* while it judges, or NULL */
    lg_msec_t   gate_deadline;          /* when the gate must decide */
    const char *sni;                    /* $tunnel_sni: the ClientHello's server name, or NULL */
    SSL        *takeover;               /* owned: the gate's TLS for the client (answer 2), or NULL */
} lg_tunnel_t;

/* Called by lg_tunnel_start for every tunnel, when set: a layer above
 * (the forward proxy) may set t->gate and t->gate_deadline there.  A
 * hook, so the pipeline does not depend on the layers that use it. */
extern void (*lg_tunnel_open_hook)(lg_req_t *r, lg_tunnel_t *t);

/* r->uend is connected: send `open` to the client and relay, reading the
 * upstream into ub (the upstream end's buffer, borrowed; bytes already in
 * it from ub->pos on are relayed first).  Bytes the client sent after the
 * request head belong to the tunnel.  status: r->status for the log. */
void lg_tunnel_start(lg_req_t *r, int status, const char *open, size_t open_len, lg_buf_t *ub,
                     lg_msec_t idle_timeout);

#endif

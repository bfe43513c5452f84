/*
 * Stream servers: the front end of their listeners and the feature that
 * sends a session to its upstream (see stream.h).
 *
 * A session is one request on its connection, from accept to close:
 *
 *   [PREREAD: ClientHello read, route chosen] -> phases (ACCESS: rules,
 *   limit_conn; ROUTE: here, the upstream attempt) -> connect stage
 *   (reverse.c: retries, connect timeout) -> tunnel stage (tunnel.c)
 *   -> LOG -> the connection closes.
 *
 * The PROXY protocol header for the upstream is put in front of the
 * client's bytes in the connection's buffer, so the relay sends it first
 * and a retry on another server sends it again, like every byte the
 * client sent before the upstream was connected.
 */
#include "stream/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/clienthello.h"
#include "pipeline/conn.h"
#include "pipeline/tunnel.h"
#include "proxy/proxy.h"

/* Room kept in front of the client's bytes for a PROXY header (v1 is at
 * most 107 bytes, v2 with IPv6 52). */
#define PP_ROOM 128

static int stream_slot;         /* r->ctx index: the PROXY header's length, + 1 */

static const lg_stream_t *stream_of(const lg_conn_t *c)
{
    return c->bind->default_server->stream;
}

/* ---- the PROXY protocol header ---- */

size_t lg_stream_proxy_header(int version, const struct sockaddr_storage *src,
                              const struct sockaddr_storage *dst, unsigned char *out,
                              size_t outlen)
{
    int fam = src->ss_family;
    int ip = (fam == AF_INET || fam == AF_INET6) && dst->ss_family == fam;
    if (outlen < 108)
        return 0;
    if (version == 1) {
        if (!ip) {
            memcpy(out, "PROXY UNKNOWN\r\n", 15);
            return 15;
        }
        char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
        unsigned sp, dp;
        if (fam == AF_INET) {
            const struct sockaddr_in *s4 = (const void *)src, *d4 = (const void *)dst;
            inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
            inet_ntop(AF_INET, &d4->sin_addr, b, sizeof(b));
            sp = ntohs(s4->sin_port);
            dp = ntohs(d4->sin_port);
        } else {
            const struct sockaddr_in6 *s6 = (const void *)src, *d6 = (const void *)dst;
            inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
            inet_ntop(AF_INET6, &d6->sin6_addr, b, sizeof(b));
            sp = ntohs(s6->sin6_port);
            dp = ntohs(d6->sin6_port);
        }
        int n = snprintf((char *)out, outlen, "PROXY %s %s %s %u %u\r\n",
                         fam == AF_INET ? "TCP4" : "TCP6", a, b, sp, dp);
        return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
    }
    static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                           0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
    memcpy(out, sig, 12);
    if (!ip) {
        out[12] = 0x20;         /* v2 LOCAL: the receiver uses the connection's own addresses */
        out[13] = 0x00;
        out[14] = out[15] = 0;
        return 16;
    }
    out[12] = 0x21;             /* v2 PROXY */
    size_t len;
    unsigned char *p = out + 16;
    if (fam == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)src, *d4 = (const void *)dst;
        out[13] = 0x11;         /* TCP over IPv4 */
        memcpy(p, &s4->sin_addr, 4);
        memcpy(p + 4, &d4->sin_addr, 4);
        memcpy(p + 8, &s4->sin_port, 2);
        memcpy(p + 10, &d4->sin_port, 2);
        len = 12;
    } else {
        const struct sockaddr_in6 *s6 = (const void *)src, *d6 = (const void *)dst;
        out[13] = 0x21;         /* TCP over IPv6 */
        memcpy(p, &s6->sin6_addr, 16);
        memcpy(p + 16, &d6->sin6_addr, 16);
        memcpy(p + 32, &s6->sin6_port, 2);
        memcpy(p + 34, &d6->sin6_port, 2);
        len = 36;
    }
    out[14] = (unsigned char)(len >> 8);
    out[15] = (unsigned char)len;
    return 16 + len;
}

/* Put the header for this session in front of the bytes read so far. */
static int put_proxy_header(lg_req_t *s, const lg_stream_t *st)
{
    lg_conn_t *c = s->conn;
    unsigned char h[PP_ROOM];
    struct sockaddr_storage local;
    socklen_t ll = sizeof(local);
    memset(&local, 0, sizeof(local));
    if (getsockname(c->e.io.fd, (struct sockaddr *)&local, &ll) < 0)
        local.ss_family = AF_UNSPEC;
    size_t n = lg_stream_proxy_header(st->pp_version, &s->peer, &local, h, sizeof(h));
    lg_buf_t *b = c->in;
    if (n == 0 || (size_t)(b->end - b->last) < n)
        return -1;
    memmove(b->start + n, b->start, (size_t)(b->last - b->start));
    memcpy(b->start, h, n);
    b->last += n;
    s->ctx[stream_slot] = (void *)(uintptr_t)(n + 1);
    return 0;
}

/* ---- choosing the upstream by the ClientHello ---- */

static int name_match(const lg_server_name_t *sn, const char *name, size_t n)
{
    size_t ln = strlen(sn->name);
    switch (sn->kind) {
    case LG_NAME_EXACT:
        return ln == n && memcmp(sn->name, name, n) == 0;
    case LG_NAME_WILDCARD:  /* stored as ".example.com" */
        return n > ln && memcmp(name + n - ln, sn->name, ln) == 0;
    case LG_NAME_SUFFIX:    /* stored as "www.example." */
        return n > ln && memcmp(name, sn->name, ln) == 0;
    case LG_NAME_REGEX:
        return sn->re && regexec(sn->re, name, 0, NULL, 0) == 0;
    }
    return 0;
}

/* The first route whose conditions all hold, or NULL (the server's proxy_pass). */
static const lg_stream_route_t *choose(const lg_stream_t *st, lg_ch_rc_t rc,
                                       const lg_clienthello_t *ch)
{
    int tls = rc == LG_CH_OK;
    for (size_t i = 0; i < st->nroutes; i++) {
        const lg_stream_route_t *rt = &st->routes[i];
        if (rt->no_sni && !(tls && !ch->has_sni))
            continue;
        if (rt->nnames) {
            int ok = 0;
            for (size_t k = 0; tls && ch->has_sni && !ok && k < rt->nnames; k++)
                ok = name_match(&rt->names[k], ch->sni, ch->sni_len);
            if (!ok)
                continue;
        }
        if (rt->alpn) {
            int ok = 0;
            for (size_t k = 0; tls && !ok && k < rt->alpn->n; k++)
                ok = lg_clienthello_has_alpn(ch, rt->alpn->v[k]);
            if (!ok)
                continue;
        }
        return rt;
    }
    return NULL;
}

/* ---- the session ---- */

/* The request becomes the session to up: through the phases (access
 * rules, limits), then ROUTE (stream_route) starts the upstream attempt. */
static void begin(lg_req_t *s, lg_upstream_t *up)
{
    lg_conn_t *c = s->conn;
    const lg_stream_t *st = stream_of(c);
    if (c->in == NULL && (c->in = lg_buf_get()) == NULL) {
        lg_conn_close(c, "out of memory");
        return;
    }
    s->in = c->in;
    s->server = c->bind->default_server;
    s->keep_alive = 0;
    s->req.method = "STREAM";
    s->req.method_len = 6;
    s->req.version = 11;
    s->ri.connect = 1;              /* a tunnel from the first byte */
    s->ri.method_idempotent = 1;    /* nothing reached an upstream yet: a failed connect retries */
    s->up = up;
    if (up) {
        s->req.target = up->name;
        s->req.target_len = strlen(up->name);
    }
    if (up && st->pp_version && put_proxy_header(s, st) < 0) {
        lg_conn_close(c, "no room for the PROXY protocol header");
        return;
    }
    lg_req_start(s, up ? 0 : 502);
}

/*
 * ssl_preread: look at the client's first bytes until the ClientHello is
 * whole (or is not one).  They are only peeked at (MSG_PEEK, as the PROXY
 * protocol reader does): they stay in the socket, so the relay sends them
 * upstream untouched, or an HTTP server's TLS handshake reads them itself.
 * No request exists until the choice is made.
 */
static void preread(lg_conn_t *c)
{
    const lg_stream_t *st = stream_of(c);
    if (c->in == NULL && (c->in = lg_buf_get()) == NULL) {
        lg_conn_close(c, "out of memory");
        return;
    }
    lg_buf_t *b = c->in;
    size_t room = (size_t)(b->end - b->start) - PP_ROOM;
    if (!c->e.r_ready) {
        c->e.want_r = 1;
        return;
    }
    ssize_t n = recv(c->e.io.fd, b->start, room, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        c->e.r_ready = 0;
        c->e.want_r = 1;
        return;
    }
    if (n <= 0) {
        lg_conn_close(c, "client closed before its ClientHello was read");
        return;
    }
    lg_clienthello_t ch;
    lg_ch_rc_t rc = lg_clienthello_parse((const unsigned char *)b->start, (size_t)n, &ch);
    if (rc == LG_CH_MORE && (size_t)n < room && !c->e.rd_hup) {
        c->e.r_ready = 0;       /* all there is was seen: the next segment raises an edge */
        c->e.want_r = 1;
        return;
    }
    if (rc == LG_CH_MORE)
        rc = LG_CH_MALFORMED;   /* larger than any real one, or the client stopped sending */
    c->e.r_ready = 1;           /* the bytes are still to be read, by whoever takes them */
    const lg_stream_route_t *rt = choose(st, rc, &ch);
    if (rt && rt->http_bind) {
        /* one port for both: legate's HTTP servers there take it, with TLS */
        lg_buf_put(c->in);
        c->in = NULL;
        lg_conn_rebind(c, rt->http_bind);
        return;
    }
    lg_req_t *s = lg_req_new(c);
    if (s == NULL) {
        lg_conn_close(c, "out of memory");
        return;
    }
    b->last = b->start;         /* (peeked only: nothing was taken) */
    if (rc == LG_CH_OK && ch.has_sni) {
        char *sni = lg_arena_strdup(&s->arena, ch.sni);
        if (sni) {              /* $host in the log is the name asked for */
            s->ri.host.p = sni;
            s->ri.host.n = ch.sni_len;
        }
    }
    lg_upstream_t *up = rt ? rt->upstream : st->upstream;
    if (up == NULL)
        lg_info("stream %s: client %s: %s%s%s matches no route", c->bind->addr.text,
                s->peer_text, lg_clienthello_rc_name(rc), ch.has_sni ? " for " : "",
                ch.has_sni ? ch.sni : "");
    begin(s, up);
}

static void stream_start(lg_conn_t *c)
{
    if (stream_of(c)->ssl_preread)
        return;                 /* the request is made once the ClientHello chose */
    lg_req_t *s = lg_req_new(c);
    if (s == NULL) {
        lg_conn_close(c, "out of memory");
        return;
    }
    begin(s, stream_of(c)->upstream);
}

static void stream_step(lg_conn_t *c)
{
    lg_req_t *s = c->req;
    if (s == NULL) {
        if (stream_of(c)->ssl_preread)
            preread(c);
        return;
    }
    if (s->stage)
        s->stage->step(s);      /* the session's: connect, tunnel */
}

static void stream_arm(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    lg_msec_t t;
    if (r && r->stage) {
        t = r->stage->arm(r, &r->tkind);
    } else {
        /* reading the ClientHello: a client that sends nothing goes */
        lg_msec_t left = c->t_start + stream_of(c)->preread_timeout - lg_w.loop.now;
        t = left > 0 ? left : 0;
    }
    lg_timer_set(&lg_w.loop, &c->timer, t);
}

static void stream_timeout(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    if (r && r->stage)
        r->stage->timeout(r, r->tkind);
    else
        lg_conn_close(c, "no ClientHello within preread_timeout");
}

/* Graceful stop: sessions go on until they end (shutdown_timeout bounds
 * them); a byte stream has no way to be told to go elsewhere. */
static void stream_drain(lg_conn_t *c)
{
    (void)c;
}

static void stream_done(lg_conn_t *c, lg_req_t *r)
{
    lg_conn_close(c, r->status == 200 ? "stream ended" : "stream refused");
}

/* No upstream, refused, over a limit: the status is logged, the client
 * only sees the connection close (nginx's stream does the same). */
static int stream_error(lg_conn_t *c, lg_req_t *s, int status)
{
    (void)c;
    s->status = status;
    lg_req_finish(s);
    return 1;
}

static const lg_frontend_t stream_frontend = {
    .name = "stream",
    .start = stream_start,
    .step = stream_step,
    .arm = stream_arm,
    .timeout = stream_timeout,
    .drain = stream_drain,
    .done = stream_done,
    .error = stream_error,
    .tunnel_ok = "",
    .tunnel_ok_len = 0,
};

void lg_stream_register(void)
{
    lg_conn_frontend_register(LG_PROTO_STREAM, &stream_frontend);
}

/* ---- the feature ---- */

static int is_session(const lg_req_t *s)
{
    return s->server && s->server->stream && s->ri.connect;
}

/* ROUTE: a session's upstream was chosen by its front end; connect it
 * (reverse.c: the same attempt as a CONNECT's, retries included). */
static int stream_route(lg_req_t *s)
{
    if (!is_session(s))
        return LG_DECLINED;
    lg_reverse_proxy_to(s, s->up);
    return LG_DONE;
}

/* LOG: the PROXY header went up with the client's bytes but is not theirs. */
static int stream_log(lg_req_t *s)
{
    size_t pp = (size_t)(uintptr_t)s->ctx[stream_slot];
    if (is_session(s) && pp > 1 && s->bytes_in >= pp - 1)
        s->bytes_in -= pp - 1;
    return LG_OK;
}

const lg_feature_t lg_feature_stream = {
    .name = "stream",
    .handlers = { { LG_PH_ROUTE, stream_route }, { LG_PH_LOG, stream_log } },
    .ctx_slot = &stream_slot,
};

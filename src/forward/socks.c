/*
 * SOCKS5 (RFC 1928, RFC 1929 username/password) on a forward-proxy
 * listener: the greeting, the method choice, authentication with the same
 * users as HTTP proxy authentication, and the CONNECT request, decoded from
 * the client buffer as bytes arrive.  Then the request goes through the
 * forward proxy's rules (forward.c) and, if allowed, becomes a tunnel.
 *
 *   GREETING -> [AUTH] -> REQUEST -> (forward checks, resolve, connect)
 *                                  \-> UDP ASSOCIATE -> (client checks) -> relay
 *
 * UDP ASSOCIATE (RFC 1928 section 7): the client is given a UDP port on
 * the address it reached us at; a datagram from it (its address, and its
 * port once known) with FRAG 0 goes on if its destination passes what a
 * SOCKS5 CONNECT to it would (the port list, the user's rules and
 * blocklists, the destination address checks; a name is resolved first,
 * a few datagrams at a time); the answers of the destinations it sent to
 * come back wrapped.  Anything else -- fragments, other senders,
 * strangers answering -- is dropped and counted.  The association lasts as long as its TCP
 * connection (and tunnel_idle_timeout without traffic).
 *
 * BIND is answered "command not supported".
 */
#include "forward/forward.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/log.h"
#include "feature/metrics.h"
#include "forward/gateway.h"
#include "net/resolve.h"

enum {
    SOCKS_GREETING = 0,
    SOCKS_AUTH     = 1,
    SOCKS_REQUEST  = 2,
    SOCKS_DONE     = 3,
};

/* Reply codes of RFC 1928 section 6. */
static unsigned char socks_code(int http_status)
{
    switch (http_status) {
    case 200: return 0x00;      /* succeeded */
    case 403:
    case 407: return 0x02;      /* connection not allowed by ruleset */
    case 502: return 0x04;      /* host unreachable */
    case 504: return 0x06;      /* TTL expired (timed out) */
    case 501: return 0x07;      /* command not supported */
    case 400: return 0x08;      /* address type not supported */
    default:  return 0x01;      /* general failure */
    }
}

static int reply(lg_req_t *s, const unsigned char *p, size_t n)
{
    return lg_end_send(&s->conn->e, p, n) == (ssize_t)n ? 0 : -1;
}

/* The front end's error hook: a failure reply, logged; then the
 * connection closes (socks_done). */
static int socks_error(lg_conn_t *c, lg_req_t *s, int http_status)
{
    (void)c;
    unsigned char r[10] = { 5, socks_code(http_status), 0, 1, 0, 0, 0, 0, 0, 0 };
    reply(s, r, sizeof(r));
    /* logged once it was a request (a destination named), not before */
    s->status = s->req.method ? http_status : 0;
    lg_req_finish(s);
    return 1;
}

static void socks_fail(lg_req_t *s, int http_status)
{
    socks_error(s->conn, s, http_status);
}

/*
 * Decode what has arrived.  1: a CONNECT request is complete (s->ri filled),
 * 0: waiting for bytes, -1: closed.
 */
static int parse(lg_req_t *s)
{
    lg_buf_t *b = s->conn->in;
    lg_forward_t *f = s->conn->bind->default_server->forward;
    for (;;) {
        const unsigned char *p = (const unsigned char *)b->start + s->head_len;
        size_t n = (size_t)(b->last - (char *)p);
        switch (s->conn->socks_phase) {
        case SOCKS_GREETING: {
            if (n < 2)
                return 0;
            if (p[0] != 5) {
                lg_mx_count(LG_MX_SOCKS, NULL, NULL, "bad_handshake", 1);
                lg_conn_close(s->conn, "not SOCKS5");
                return -1;
            }
            if (n < 2u + p[1])
                return 0;
            unsigned char want = f->auth_file ? 2 : 0, chosen = 0xff;
            for (unsigned i = 0; i < p[1]; i++)
                if (p[2 + i] == want)
                    chosen = want;
            unsigned char r[2] = { 5, chosen };
            s->head_len += 2u + p[1];
            if (reply(s, r, 2) < 0 || chosen == 0xff) {
                lg_mx_count(LG_MX_SOCKS, NULL, NULL, "bad_handshake", 1);
                lg_conn_close(s->conn, "no acceptable SOCKS method");
                return -1;
            }
            s->conn->socks_phase = chosen == 2 ? SOCKS_AUTH : SOCKS_REQUEST;
            continue;
        }
        case SOCKS_AUTH: {
            /* RFC 1929: VER=1 ULEN UNAME PLEN PASSWD */
            if (n < 2)
                return 0;
            size_t ul = p[1];
            if (n < 3 + ul || n < 3 + ul + p[2 + ul])
                return 0;
            size_t pl = p[2 + ul];
            char user[256], pass[256];
            memcpy(user, p + 2, ul);
            user[ul] = '\0';
            memcpy(pass, p + 3 + ul, pl);
            pass[pl] = '\0';
            s->head_len += 3 + ul + pl;
            int ok = p[0] == 1 && lg_forward_check_user(s, user, pass);
            unsigned char r[2] = { 1, ok ? 0 : 1 };
            if (reply(s, r, 2) < 0 || !ok) {
                lg_info("SOCKS5: authentication of \"%s\" from %s failed", user, s->peer_text);
                lg_mx_count(LG_MX_SOCKS, NULL, NULL, "auth_failed", 1);
                lg_conn_close(s->conn, "SOCKS authentication failed");
                return -1;
            }
            s->conn->socks_phase = SOCKS_REQUEST;
            continue;
        }
        case SOCKS_REQUEST: {
            if (n < 5)
                return 0;
            size_t alen = p[3] == 1 ? 4 : p[3] == 4 ? 16 : p[3] == 3 ? 1u + p[4] : 0;
            if (alen == 0 || p[0] != 5) {
                socks_fail(s, 400);
                return -1;
            }
            if (n < 4 + alen + 2)
                return 0;
            char host[300];
            if (p[3] == 1)
                inet_ntop(AF_INET, p + 4, host, sizeof(host));
            else if (p[3] == 4) {
                host[0] = '[';
                inet_ntop(AF_INET6, p + 4, host + 1, sizeof(host) - 2);
                strcat(host, "]");
            } else {
                memcpy(host, p + 5, p[4]);
                host[p[4]] = '\0';
            }
            int port = p[4 + alen] << 8 | p[5 + alen];
            int cmd = p[1];
            s->head_len += 4 + alen + 2;     /* what follows belongs to the tunnel */
            char *auth = lg_arena_printf(&s->arena, "%s:%d", host, port);
            if (auth == NULL) {
                socks_fail(s, 500);
                return -1;
            }
            s->req.method = "CONNECT";
            s->req.method_len = 7;
            s->req.target = auth;
            s->req.target_len = strlen(auth);
            s->req.version = 11;
            s->ri.connect = 1;
            s->ri.authority.p = auth;
            s->ri.authority.n = strlen(auth);
            s->ri.host.p = auth;
            s->ri.host.n = strlen(host);
            s->ri.port = port;
            s->ri.path = s->ri.uri = s->ri.authority;
            s->conn->socks_phase = SOCKS_DONE;
            if (cmd == 3) {
                /* DST names where the client will send from (often all
                 * zeros: not known yet) */
                s->ri.udp_associate = 1;
                s->req.method = "UDP";
                s->req.method_len = 3;
                return 1;
            }
            if (cmd != 1) {
                socks_fail(s, 501);
                return -1;
            }
            if (port == 0 || s->ri.host.n == 0) {
                socks_fail(s, 400);
                return -1;
            }
            return 1;
        }
        default:
            return 0;
        }
    }
}

static void socks_step(lg_conn_t *c)
{
    lg_req_t *s = c->req;
    if (s == NULL || s->phase != LG_PH_NONE || s->stage) {
        if (s && s->stage)
            s->stage->step(s);
        return;                 /* negotiated: the request's stage has it */
    }
    if (s->conn->in == NULL && (s->conn->in = lg_buf_get()) == NULL) {
        lg_conn_close(s->conn, "out of memory");
        return;
    }
    lg_buf_t *b = s->conn->in;
    s->in = b;                  /* the request was made before the buffer */
    for (;;) {
        int rc = parse(s);
        if (rc < 0)
            return;
        if (rc > 0) {
            s->server = s->conn->bind->default_server;
            s->keep_alive = 0;
            s->t_start = lg_w.loop.now;
            lg_req_start(s, 0);
            return;
        }
        if (b->last == b->end) {
            lg_conn_close(s->conn, "SOCKS request too large");
            return;
        }
        if (!s->conn->e.r_ready) {
            s->conn->e.want_r = 1;
            return;
        }
        ssize_t n = lg_end_recv(&s->conn->e, b->last, (size_t)(b->end - b->last));
        if (n > 0) {
            b->last += n;
            continue;
        }
        if (n == LG_AGAIN)
            return;
        lg_conn_close(s->conn, "client closed during SOCKS negotiation");
        return;
    }
}

/* The request exists from the greeting on: authentication fills its user. */
static void socks_start(lg_conn_t *c)
{
    if (lg_req_new(c) == NULL)
        lg_conn_close(c, "out of memory");
}

static void socks_arm(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    lg_msec_t t;
    if (r && r->stage) {
        t = r->stage->arm(r, &r->tkind);
    } else {
        lg_msec_t left = c->t_start + c->bind->default_server->common.client_header_timeout -
                         lg_w.loop.now;
        t = left > 0 ? left : 0;
    }
    lg_timer_set(&lg_w.loop, &c->timer, t);
}

static void socks_timeout(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    if (r && r->stage)
        r->stage->timeout(r, r->tkind);
    else
        lg_conn_close(c, "client timed out during SOCKS negotiation");
}

/* Graceful stop: negotiations and tunnels go on (shutdown_timeout bounds
 * them); a SOCKS5 client has no way to be told to go elsewhere. */
static void socks_drain(lg_conn_t *c)
{
    (void)c;
}

static void socks_done(lg_conn_t *c, lg_req_t *r)
{
    lg_mx_count(LG_MX_SOCKS, NULL, NULL, r->status == 200 ? "tunnel" : "refused", 1);
    lg_conn_close(c, r->status == 200 ? "tunnel ended" : "SOCKS request refused");
}

/* ---- UDP ASSOCIATE ---- */

#define UDP_MAGIC  0x55445041u
#define UDP_PEERS  32           /* destinations a client's answers may come from */
#define UDP_ROUNDS 64           /* datagrams a step moves each way before others have a turn */
#define UDP_MAX    65535
#define UDP_LOOKUPS 8           /* datagrams to names waiting for their lookup */

struct socks_udp;

/* A datagram whose destination is a name being looked up. */
typedef struct udp_lookup {
    struct socks_udp *u;        /* borrowed: its association */
    lg_resolve_t     *lk;       /* in flight, or NULL (the slot is free) */
    char              name[256];
    unsigned          port;
    unsigned char    *data;     /* owned (malloc): the payload */
    size_t            n;
} udp_lookup_t;

typedef struct socks_udp {
    uint32_t   magic;
    lg_req_t  *r;               /* borrowed; NULL once the request went */
    lg_io_t    cio;             /* owned: the client's side, on the address it reached us at */
    lg_io_t    oio[2];          /* owned: towards destinations, IPv4 and IPv6 (made on use) */
    uint8_t    c_ready, o_ready[2];
    struct sockaddr_storage client;     /* the client's address; its port once known */
    int        client_port;     /* 0 until the first datagram (or the request named it) */
    struct sockaddr_storage peers[UDP_PEERS];
    size_t     npeers, next_peer;
    uint64_t   relayed, answered, dropped;
    int        warned;          /* drops logged (a few, not a flood) */
    udp_lookup_t lookups[UDP_LOOKUPS];
} socks_udp_t;

static const lg_stage_t udp_stage;

static socks_udp_t *udp_of(lg_req_t *r)
{
    socks_udp_t *u = r->conn->fe_data;
    LG_BUG_ON(u == NULL || u->magic != UDP_MAGIC);
    return u;
}

static void udp_io(lg_io_t *io, uint32_t ev)
{
    socks_udp_t *u = io->data;
    if (u->magic != UDP_MAGIC || u->r == NULL)
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (io == &u->cio)
            u->c_ready = 1;
        else
            u->o_ready[io == &u->oio[1]] = 1;
    }
    lg_req_run(u->r);
}

static void udp_close_io(lg_io_t *io)
{
    if (io->fd >= 0) {
        lg_io_del(&lg_w.loop, io);
        close(io->fd);
        io->fd = -1;
    }
}

static void udp_cleanup(void *arg)
{
    socks_udp_t *u = arg;
    for (size_t i = 0; i < UDP_LOOKUPS; i++) {
        if (u->lookups[i].lk)
            lg_resolve_cancel(u->lookups[i].lk);
        u->lookups[i].lk = NULL;
        free(u->lookups[i].data);
        u->lookups[i].data = NULL;
    }
    udp_close_io(&u->cio);
    udp_close_io(&u->oio[0]);
    udp_close_io(&u->oio[1]);
    if (u->r && u->r->conn->fe_data == u)
        u->r->conn->fe_data = NULL;
    u->r = NULL;
    u->magic = 0;
    lg_loop_defer_free(&lg_w.loop, u);
}

static int udp_socket(socks_udp_t *u, lg_io_t *io, int family, const struct sockaddr_storage *bind_to)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind_to) {
        socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (bind(fd, (const struct sockaddr *)bind_to, len) < 0) {
            close(fd);
            return -1;
        }
    }
    io->fd = fd;
    io->cb = udp_io;
    io->data = u;
    if (lg_io_add(&lg_w.loop, io, EPOLLIN | EPOLLET) < 0) {
        close(fd);
        io->fd = -1;
        return -1;
    }
    return 0;
}

static unsigned ss_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
           ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static void udp_drop(socks_udp_t *u, const char *why)
{
    u->dropped++;
    if (u->warned < 5) {
        u->warned++;
        lg_info("SOCKS5 UDP: a datagram of %s dropped: %s", u->r->peer_text, why);
    }
}

static void send_on(socks_udp_t *u, const char *name, const struct sockaddr_storage *dst,
                    const unsigned char *p, size_t n);

static void looked_up(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    udp_lookup_t *l = arg;
    socks_udp_t *u = l->u;
    l->lk = NULL;
    if (u->magic == UDP_MAGIC && u->r) {
        if (status != LG_RESOLVE_OK || n == 0) {
            udp_drop(u, "the destination's name does not resolve");
        } else if (l->port == 0) {
            udp_drop(u, "destination port 0");
        } else {
            struct sockaddr_storage dst = addrs[0];
            if (dst.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&dst)->sin6_port = htons((uint16_t)l->port);
            else
                ((struct sockaddr_in *)&dst)->sin_port = htons((uint16_t)l->port);
            send_on(u, l->name, &dst, l->data, l->n);
        }
    }
    free(l->data);
    l->data = NULL;
}

/* A datagram to a name: held (a few at a time) while the name is looked up. */
static void lookup(socks_udp_t *u, const char *name, size_t nl, unsigned port,
                   const unsigned char *p, size_t n)
{
    udp_lookup_t *l = NULL;
    for (size_t i = 0; i < UDP_LOOKUPS && l == NULL; i++)
        if (u->lookups[i].lk == NULL && u->lookups[i].data == NULL)
            l = &u->lookups[i];
    struct lg_resolver *res = lg_forward_resolver(u->r);
    if (l == NULL || res == NULL) {
        udp_drop(u, l ? "no resolver" : "too many names being looked up");
        return;
    }
    memcpy(l->name, name, nl);
    l->name[nl] = '\0';
    l->port = port;
    l->u = u;
    l->n = n;
    if ((l->data = malloc(n ? n : 1)) == NULL) {
        udp_drop(u, "out of memory");
        return;
    }
    memcpy(l->data, p, n);
    if ((l->lk = lg_resolve(res, l->name, looked_up, l)) == NULL) {
        free(l->data);
        l->data = NULL;
        udp_drop(u, "cannot look the name up");
    }
}

/* A datagram from the client: checked, unwrapped, sent on. */
static void from_client(socks_udp_t *u, const unsigned char *p, size_t n,
                        const struct sockaddr_storage *from)
{
    if (!same_ip(from, &u->client) || (u->client_port && ss_port(from) != (unsigned)u->client_port)) {
        udp_drop(u, "not from the client's address");
        return;
    }
    struct sockaddr_storage dst;
    char name[256];
    unsigned port = 0;
    int frag = 0;
    ssize_t hl = lg_socks_udp_header(p, n, &frag, &dst, name, &port);
    if (hl < 0) {
        udp_drop(u, "no SOCKS5 UDP header");
        return;
    }
    if (frag) {
        udp_drop(u, "a fragment (FRAG is not 0): fragments are not reassembled");
        return;
    }
    if (port == 0) {
        udp_drop(u, "destination port 0");
        return;
    }
    if (dst.ss_family == AF_UNSPEC) {
        /* a name: looked up (the resolver's cache answers most), then on */
        if (!u->client_port)
            u->client_port = (int)ss_port(from);
        lookup(u, name, strlen(name), port, p + hl, n - (size_t)hl);
        return;
    }
    if (!u->client_port)
        u->client_port = (int)ss_port(from);   /* the first sender's port from now on */
    send_on(u, NULL, &dst, p + hl, n - (size_t)hl);
}

/* The payload to dst (named name, or NULL), if the rules allow it. */
static void send_on(socks_udp_t *u, const char *name, const struct sockaddr_storage *dst0,
                    const unsigned char *p, size_t n)
{
    struct sockaddr_storage d = *dst0, *dst = &d;
    char why[512];
    if (lg_forward_udp_refusal(u->r, name, dst, why, sizeof(why))) {
        udp_drop(u, why);
        return;
    }
    int v6 = dst->ss_family == AF_INET6;
    if (u->oio[v6].fd < 0 && udp_socket(u, &u->oio[v6], dst->ss_family, NULL) < 0) {
        udp_drop(u, "cannot open a socket towards the destination");
        return;
    }
    socklen_t dl = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (sendto(u->oio[v6].fd, p, n, 0, (const struct sockaddr *)dst, dl) < 0) {
        udp_drop(u, strerror(errno));  /* UDP: a full buffer loses the datagram */
        return;
    }
    u->relayed++;
    u->r->bytes_in += n;
    for (size_t i = 0; i < u->npeers; i++)
        if (same_ip(&u->peers[i], dst) && ss_port(&u->peers[i]) == ss_port(dst))
            return;
    u->peers[u->next_peer] = *dst;
    u->next_peer = (u->next_peer + 1) % UDP_PEERS;
    if (u->npeers < UDP_PEERS)
        u->npeers++;
}

/* A datagram from a destination: only one the client sent to, wrapped. */
static void from_peer(socks_udp_t *u, const unsigned char *p, size_t n,
                      const struct sockaddr_storage *from)
{
    size_t i;
    for (i = 0; i < u->npeers; i++)
        if (same_ip(&u->peers[i], from) && ss_port(&u->peers[i]) == ss_port(from))
            break;
    if (i == u->npeers) {
        udp_drop(u, "an answer from an address the client did not send to");
        return;
    }
    static unsigned char out[22 + UDP_MAX];
    size_t hl;
    out[0] = out[1] = out[2] = 0;
    if (from->ss_family == AF_INET6) {
        out[3] = 4;
        memcpy(out + 4, &((const struct sockaddr_in6 *)from)->sin6_addr, 16);
        memcpy(out + 20, &((const struct sockaddr_in6 *)from)->sin6_port, 2);
        hl = 22;
    } else {
        out[3] = 1;
        memcpy(out + 4, &((const struct sockaddr_in *)from)->sin_addr, 4);
        memcpy(out + 8, &((const struct sockaddr_in *)from)->sin_port, 2);
        hl = 10;
    }
    if (n > UDP_MAX - hl) {
        udp_drop(u, "an answer too large to wrap");
        return;
    }
    memcpy(out + hl, p, n);
    struct sockaddr_storage to = u->client;
    if (to.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&to)->sin6_port = htons((uint16_t)u->client_port);
    else
        ((struct sockaddr_in *)&to)->sin_port = htons((uint16_t)u->client_port);
    socklen_t tl = to.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (sendto(u->cio.fd, out, hl + n, 0, (const struct sockaddr *)&to, tl) < 0) {
        udp_drop(u, strerror(errno));
        return;
    }
    u->answered++;
    u->r->bytes_out += n;
}

/* Read one socket dry (bounded): 1 if more may wait, 0 if dry. */
static int udp_drain(socks_udp_t *u, lg_io_t *io, uint8_t *ready, int client_side)
{
    static unsigned char buf[UDP_MAX + 1];
    for (int k = 0; k < UDP_ROUNDS && *ready && io->fd >= 0; k++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(io->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                *ready = 0;
            else if (errno != EINTR)
                *ready = 0;     /* an ICMP error for an earlier datagram: nothing to read */
            return 0;
        }
        if (client_side)
            from_client(u, buf, (size_t)n, &from);
        else
            from_peer(u, buf, (size_t)n, &from);
        if (u->r == NULL)
            return 0;
    }
    return *ready;
}

static void udp_end(lg_req_t *r, const char *why)
{
    socks_udp_t *u = udp_of(r);
    lg_info("SOCKS5 UDP association of %s ended (%s): %llu datagrams relayed, %llu answers, "
            "%llu dropped", r->peer_text, why, (unsigned long long)u->relayed,
            (unsigned long long)u->answered, (unsigned long long)u->dropped);
    r->status = 200;
    lg_req_finish(r);           /* socks_done closes the connection */
}

static void udp_step(lg_req_t *r)
{
    socks_udp_t *u = udp_of(r);
    lg_end_t *ce = r->cend;
    /* the TCP connection: whatever the client sends there means nothing;
     * its end is the association's */
    while (ce->r_ready) {
        char junk[512];
        ssize_t n = lg_end_recv(ce, junk, sizeof(junk));
        if (n == LG_AGAIN)
            break;
        if (n <= 0) {
            udp_end(r, n == 0 ? "the client closed its TCP connection" : "TCP connection failed");
            return;
        }
    }
    int more = udp_drain(u, &u->cio, &u->c_ready, 1);
    for (int v6 = 0; v6 < 2 && u->r; v6++)
        more |= udp_drain(u, &u->oio[v6], &u->o_ready[v6], 0);
    if (more)
        r->conn->rerun = 1;     /* the others have their turn, then more */
}

static lg_msec_t udp_arm(lg_req_t *r, lg_tkind_t *kind)
{
    *kind = LG_T_TUNNEL;
    return r->server->forward->tunnel_idle_timeout;
}

static void udp_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    udp_end(r, "idle timeout");
}

static const lg_stage_t udp_stage = {
    .name = "SOCKS5 UDP association", .step = udp_step, .arm = udp_arm, .timeout = udp_timeout,
};

void lg_socks_udp_start(lg_req_t *r)
{
    lg_conn_t *c = r->conn;
    socks_udp_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        socks_fail(r, 500);
        return;
    }
    u->magic = UDP_MAGIC;
    u->r = r;
    u->cio.fd = u->oio[0].fd = u->oio[1].fd = -1;
    c->fe_data = u;             /* the front end's own: how the stage finds it */
    lg_req_cleanup(r, udp_cleanup, u);
    /* the client's address is the TCP connection's; a port it named is
     * the only one accepted, else the first datagram's */
    u->client = r->peer;
    u->client_port = r->ri.port;
    /* the relay listens where the client reached us, on a port of its own */
    struct sockaddr_storage local;
    socklen_t ll = sizeof(local);
    if (r->peer.ss_family == AF_UNIX || getsockname(c->e.io.fd, (struct sockaddr *)&local, &ll) < 0 ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6)) {
        socks_fail(r, 501);
        return;
    }
    if (local.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&local)->sin6_port = 0;
    else
        ((struct sockaddr_in *)&local)->sin_port = 0;
    ll = local.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (udp_socket(u, &u->cio, local.ss_family, &local) < 0 ||
        getsockname(u->cio.fd, (struct sockaddr *)&local, &ll) < 0) {
        lg_error("SOCKS5 UDP: cannot open the relay socket: %s", strerror(errno));
        socks_fail(r, 500);
        return;
    }
    unsigned char rep[22] = { 5, 0, 0 };
    size_t rl;
    if (local.ss_family == AF_INET6) {
        rep[3] = 4;
        memcpy(rep + 4, &((struct sockaddr_in6 *)&local)->sin6_addr, 16);
        memcpy(rep + 20, &((struct sockaddr_in6 *)&local)->sin6_port, 2);
        rl = 22;
    } else {
        rep[3] = 1;
        memcpy(rep + 4, &((struct sockaddr_in *)&local)->sin_addr, 4);
        memcpy(rep + 8, &((struct sockaddr_in *)&local)->sin_port, 2);
        rl = 10;
    }
    if (reply(r, rep, rl) < 0) {
        lg_req_abort(r, "cannot send the SOCKS5 reply");
        return;
    }
    r->status = 200;
    r->upstream_status = 200;
    lg_req_set_stage(r, &udp_stage);
}

static const unsigned char socks_ok[] = { 5, 0, 0, 1, 0, 0, 0, 0, 0, 0 };

static const lg_frontend_t socks_frontend = {
    .name = "SOCKS5",
    .start = socks_start,
    .step = socks_step,
    .arm = socks_arm,
    .timeout = socks_timeout,
    .drain = socks_drain,
    .done = socks_done,
    .error = socks_error,
    .tunnel_ok = (const char *)socks_ok,
    .tunnel_ok_len = sizeof(socks_ok),
};

void lg_socks_register(void)
{
    lg_conn_frontend_register(LG_PROTO_SOCKS5, &socks_frontend);
}

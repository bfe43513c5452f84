/*
 * SOCKS5 (RFC 1928, RFC 1929 username/password) on a forward-proxy
 * listener: the greeting, the method choice, authentication with the same
 * users as HTTP proxy authentication, and the CONNECT request, decoded from
 * the client buffer as bytes arrive.  Then the request goes through the
 * forward proxy's rules (forward.c) and, if allowed, becomes a tunnel.
 *
 *   GREETING -> [AUTH] -> REQUEST -> (forward checks, resolve, connect)
 *
 * BIND and UDP ASSOCIATE are answered "command not supported".
 */
#include "forward/forward.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include "core/log.h"
#include "feature/metrics.h"

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

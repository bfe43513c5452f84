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
#include "proxy/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include "core/log.h"

enum {
    SOCKS_GREETING = 0,
    SOCKS_AUTH     = 1,
    SOCKS_REQUEST  = 2,
    SOCKS_DONE     = 3,
};

/* Reply codes of RFC 1928 section 6. */
unsigned char lg_socks_code(int http_status)
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

static int reply(lg_session_t *s, const unsigned char *p, size_t n)
{
    return lg_end_send(&s->e, p, n) == (ssize_t)n ? 0 : -1;
}

/* A failure reply to the request, then the connection closes. */
void lg_socks_fail(lg_session_t *s, int http_status)
{
    unsigned char r[10] = { 5, lg_socks_code(http_status), 0, 1, 0, 0, 0, 0, 0, 0 };
    s->status = http_status;
    reply(s, r, sizeof(r));
    if (s->req.method)
        lg_accesslog_write(s);
    lg_session_close(s, "SOCKS request refused");
}

/*
 * Decode what has arrived.  1: a CONNECT request is complete (s->ri filled),
 * 0: waiting for bytes, -1: closed.
 */
static int parse(lg_session_t *s)
{
    lg_buf_t *b = s->in;
    lg_forward_t *f = s->bind->default_server->forward;
    for (;;) {
        const unsigned char *p = (const unsigned char *)b->start + s->head_len;
        size_t n = (size_t)(b->last - (char *)p);
        switch (s->socks_phase) {
        case SOCKS_GREETING: {
            if (n < 2)
                return 0;
            if (p[0] != 5) {
                lg_session_close(s, "not SOCKS5");
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
                lg_session_close(s, "no acceptable SOCKS method");
                return -1;
            }
            s->socks_phase = chosen == 2 ? SOCKS_AUTH : SOCKS_REQUEST;
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
                lg_session_close(s, "SOCKS authentication failed");
                return -1;
            }
            s->socks_phase = SOCKS_REQUEST;
            continue;
        }
        case SOCKS_REQUEST: {
            if (n < 5)
                return 0;
            size_t alen = p[3] == 1 ? 4 : p[3] == 4 ? 16 : p[3] == 3 ? 1u + p[4] : 0;
            if (alen == 0 || p[0] != 5) {
                lg_socks_fail(s, 400);
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
                lg_socks_fail(s, 500);
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
            s->socks_phase = SOCKS_DONE;
            if (cmd != 1) {
                lg_socks_fail(s, 501);
                return -1;
            }
            if (port == 0 || s->ri.host.n == 0) {
                lg_socks_fail(s, 400);
                return -1;
            }
            return 1;
        }
        default:
            return 0;
        }
    }
}

void lg_socks_step(lg_session_t *s)
{
    if (s->in == NULL && (s->in = lg_buf_get()) == NULL) {
        lg_session_close(s, "out of memory");
        return;
    }
    lg_buf_t *b = s->in;
    for (;;) {
        int rc = parse(s);
        if (rc < 0)
            return;
        if (rc > 0) {
            s->server = s->bind->default_server;
            s->keep_alive = 0;
            s->t_start = lg_w.loop.now;
            lg_forward_start(s);
            return;
        }
        if (b->last == b->end) {
            lg_session_close(s, "SOCKS request too large");
            return;
        }
        if (!s->e.r_ready) {
            s->e.want_r = 1;
            return;
        }
        ssize_t n = lg_end_recv(&s->e, b->last, (size_t)(b->end - b->last));
        if (n > 0) {
            b->last += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            s->e.r_ready = 0;
            s->e.want_r = 1;
            return;
        }
        lg_session_close(s, "client closed during SOCKS negotiation");
        return;
    }
}

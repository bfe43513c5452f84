/*
 * Client connections: accept, the PROXY protocol header, the TLS
 * handshake, then the front end of the listener's protocol; lingering
 * close; the one teardown.  See conn.h for the states and ownership.
 *
 * lg_conn_run() is the one driver: every event on the client, and on the
 * upstream of its request, lands there; it loops while a step changes the
 * state, then arms the connection's timer for whatever it now waits on.
 * Timeouts are "between two successive operations", as nginx counts them.
 */
#include "pipeline/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "net/proxyproto.h"
#include "net/tls.h"
#include "pipeline/request.h"

#define LINGER_MS 5000

static lg_conn_t *conns;        /* all open connections, for a graceful stop */
static lg_conn_t *idle_head, *idle_tail;   /* waiting keep-alive ones, oldest first */
static const lg_frontend_t *frontends[LG_PROTO_MAX];

const char *lg_conn_state_name(lg_connstate_t st)
{
    switch (st) {
    case LG_C_PROXYPROTO: return "reading the PROXY header";
    case LG_C_HANDSHAKE:  return "TLS handshake";
    case LG_C_FRONT:      return "serving";
    case LG_C_DRAIN:      return "lingering close";
    case LG_C_CLOSED:     return "closed";
    }
    return "?";
}

void lg_conn_frontend_register(lg_proto_t p, const lg_frontend_t *fe)
{
    LG_BUG_ON(p >= LG_PROTO_MAX);
    frontends[p] = fe;
}

lg_lstats_t *lg_conn_stats(const lg_conn_t *c)
{
    if (lg_w.lstats == NULL || c->refresh || c->bind == NULL)
        return NULL;
    return &lg_w.lstats[c->bind - lg_w.conf->binds];
}

void lg_conn_switch(lg_conn_t *c, lg_proto_t p)
{
    LG_BUG_ON(c->req != NULL || frontends[p] == NULL);
    c->fe = frontends[p];
    c->fe->start(c);
    c->rerun = 1;
}

static void start_protocol(lg_conn_t *c);

void lg_conn_rebind(lg_conn_t *c, const lg_bind_t *bind)
{
    LG_BUG_ON(c->req != NULL || c->state != LG_C_FRONT);
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls)
        ls->closed++;           /* it leaves this listener's count for the other's */
    c->bind = bind;
    if ((ls = lg_conn_stats(c)) != NULL)
        ls->accepted++;
    c->fe = frontends[bind->socks ? LG_PROTO_SOCKS5 : bind->stream ? LG_PROTO_STREAM : LG_PROTO_HTTP1];
    start_protocol(c);          /* TLS reads the ClientHello still in the socket */
    c->rerun = 1;
}

void lg_conn_start_tls(lg_conn_t *c, SSL *ssl)
{
    LG_BUG_ON(c->req != NULL || c->e.ssl != NULL || c->state != LG_C_FRONT);
    lg_buf_put(c->in);          /* what was read is the ssl's to read first now */
    c->in = NULL;
    c->scanned = 0;
    c->e.ssl = ssl;
    c->e.r_ready = 1;           /* those bytes wait in OpenSSL: no edge will say so */
    c->fe = frontends[LG_PROTO_HTTP1];
    c->state = LG_C_HANDSHAKE;
    c->t_start = lg_w.loop.now;
    c->rerun = 1;
}

void lg_conn_set_peer(lg_conn_t *c, const struct sockaddr_storage *ss)
{
    memcpy(&c->peer, ss, sizeof(*ss));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, c->peer_text, sizeof(c->peer_text));
        c->peer_port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, c->peer_text, sizeof(c->peer_text));
        c->peer_port = ntohs(a->sin6_port);
    } else {
        strcpy(c->peer_text, "unix:");
        c->peer_port = 0;
    }
}

void lg_conn_close(lg_conn_t *c, const char *why)
{
    if (c->state == LG_C_CLOSED)
        return;
    LG_CHECK_CONN(c);
    lg_debug("closing client %s connection %llu: %s", c->peer_text,
             (unsigned long long)c->id, why);
    c->state = LG_C_CLOSED;
    lg_conn_set_idle(c, 0);
    lg_req_free(c->req);        /* its cleanups, its upstream, its arena */
    if (c->fe->close)
        c->fe->close(c);        /* a multiplexing front end's requests, likewise */
    lg_timer_del(&lg_w.loop, &c->timer);
    lg_end_close(&c->e, &lg_w.loop);
    lg_buf_put(c->in);
    c->in = NULL;
    free(c->inspect);
    c->inspect = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->magic = 0;
    lg_w.nconns--;
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls)
        ls->closed++;
    lg_loop_defer_free(&lg_w.loop, c);
    if (lg_w.conn_closed)
        lg_w.conn_closed();
}

/* ---- before the front end ---- */

static void enter_front(lg_conn_t *c)
{
    c->state = LG_C_FRONT;
    c->t_start = c->t_idle = lg_w.loop.now;
    /* ALPN chose HTTP/2 in the handshake */
    if (c->e.ssl && c->bind->http2 && lg_tls_alpn_h2(c->e.ssl) && frontends[LG_PROTO_HTTP2])
        c->fe = frontends[LG_PROTO_HTTP2];
    c->fe->start(c);
}

/* What the listener speaks after any PROXY header: TLS first, if it says so. */
static void start_protocol(lg_conn_t *c)
{
    if (c->bind->tls && !c->bind->socks) {
        c->e.ssl = lg_tls_accept(c->bind, c->e.io.fd);
        if (c->e.ssl == NULL) {
            lg_conn_close(c, "cannot start TLS");
            return;
        }
        c->state = LG_C_HANDSHAKE;
        c->t_start = lg_w.loop.now;
        return;
    }
    enter_front(c);
}

static void proxyproto_step(lg_conn_t *c)
{
    if (!c->e.r_ready) {
        c->e.want_r = 1;
        return;
    }
    struct sockaddr_storage src = c->peer;
    char why[128];
    int rc = lg_proxyproto_read(c->e.io.fd, &src, why, sizeof(why));
    if (rc == LG_AGAIN) {
        c->e.r_ready = 0;
        c->e.want_r = 1;
        return;
    }
    if (rc == LG_ERROR) {
        lg_info("client %s: %s", c->peer_text, why);
        lg_conn_close(c, "bad PROXY protocol header");
        return;
    }
    lg_conn_set_peer(c, &src);
    start_protocol(c);
}

static void handshake_step(lg_conn_t *c)
{
    char why[256];
    int rc = lg_end_handshake(&c->e, why, sizeof(why));
    lg_lstats_t *ls = lg_conn_stats(c);
    if (rc == LG_OK) {
        if (ls) {
            ls->tls_ok++;
            ls->tls_resumed += lg_tls_session_reused(c->e.ssl) != 0;
        }
        enter_front(c);
        return;
    }
    if (rc == LG_AGAIN)
        return;
    if (ls) {
        /* a reason an operator can act on, from OpenSSL's words */
        if (strstr(why, "version") || strstr(why, "protocol"))
            ls->tls_fail_version++;
        else if (strstr(why, "cipher") || strstr(why, "sigalg") || strstr(why, "group"))
            ls->tls_fail_cipher++;
        else if (strstr(why, "certificate") || strstr(why, "verify"))
            ls->tls_fail_certificate++;
        else if (strstr(why, "closed") || strstr(why, "EOF") || strstr(why, "reset"))
            ls->tls_fail_closed++;
        else
            ls->tls_fail_other++;
    }
    lg_info("TLS handshake with %s failed: %s", c->peer_text, why);
    lg_conn_close(c, "TLS handshake failed");
}

/* ---- the end ---- */

void lg_conn_linger(lg_conn_t *c)
{
    lg_buf_put(c->in);
    c->in = NULL;
    lg_tls_close(c->e.ssl);     /* close_notify first */
    c->e.ssl = NULL;
    shutdown(c->e.io.fd, SHUT_WR);
    c->state = LG_C_DRAIN;
    c->e.r_ready = 1;
    lg_timer_del(&lg_w.loop, &c->timer);
}

/* Lingering close: the peer may still be sending; read and drop it so our
 * response is not destroyed by a reset, until EOF or the linger timer. */
static void drain_step(lg_conn_t *c)
{
    char sink[4096];
    while (c->e.r_ready) {
        ssize_t n = lg_end_recv(&c->e, sink, sizeof(sink));   /* TLS is over: plain */
        if (n > 0)
            continue;
        if (n == LG_AGAIN)
            break;
        lg_conn_close(c, "lingering close done");
        return;
    }
    c->e.want_r = 1;
}

/* ---- the driver ---- */

static void conn_arm(lg_conn_t *c)
{
    lg_msec_t t = -1;
    switch (c->state) {
    case LG_C_PROXYPROTO: {
        lg_msec_t left = c->t_start + c->bind->default_server->common.client_header_timeout -
                         lg_w.loop.now;
        t = left > 0 ? left : 0;
        break;
    }
    case LG_C_HANDSHAKE: {
        /* one deadline for the whole handshake: a trickling client is cut off */
        lg_msec_t left = c->t_start + c->bind->default_server->tls.handshake_timeout -
                         lg_w.loop.now;
        t = left > 0 ? left : 0;
        break;
    }
    case LG_C_FRONT:
        c->fe->arm(c);
        return;
    case LG_C_DRAIN:
        if (lg_timer_armed(&c->timer))
            return;
        t = LINGER_MS;
        break;
    case LG_C_CLOSED:
        return;
    }
    lg_timer_set(&lg_w.loop, &c->timer, t);
}

void lg_conn_run(lg_conn_t *c)
{
    /* closed in this loop round by whoever calls (its memory goes after
     * the round): nothing to run */
    if (c->state == LG_C_CLOSED)
        return;
    LG_CHECK_CONN(c);
    /* each step says again what it waits on; the timer follows from that */
    c->e.want_r = c->e.want_w = 0;
    if (c->req && c->req->uend)
        c->req->uend->want_r = c->req->uend->want_w = 0;
    for (int round = 0; round < 64; round++) {
        lg_connstate_t before = c->state;
        c->rerun = 0;
        switch (c->state) {
        case LG_C_PROXYPROTO:
            proxyproto_step(c);
            break;
        case LG_C_HANDSHAKE:
            handshake_step(c);
            break;
        case LG_C_FRONT:
            c->fe->step(c);
            break;
        case LG_C_DRAIN:
            drain_step(c);
            break;
        case LG_C_CLOSED:
            return;
        }
        if (c->state == LG_C_CLOSED)
            return;
        if (c->state == before && !c->rerun)
            break;
    }
    conn_arm(c);
}

static void conn_timeout(lg_timer_t *tm)
{
    lg_conn_t *c = tm->data;
    LG_CHECK_CONN(c);
    switch (c->state) {
    case LG_C_PROXYPROTO:
        lg_conn_close(c, "client timed out sending the PROXY header");
        return;
    case LG_C_HANDSHAKE:
        lg_info("TLS handshake with %s timed out", c->peer_text);
        if (lg_conn_stats(c))
            lg_conn_stats(c)->tls_fail_timeout++;
        lg_conn_close(c, "TLS handshake timed out");
        return;
    case LG_C_FRONT:
        c->fe->timeout(c);
        break;
    case LG_C_DRAIN:
        lg_conn_close(c, "lingering close timed out");
        return;
    case LG_C_CLOSED:
        return;
    }
    if (c->state != LG_C_CLOSED)
        lg_conn_run(c);
}

static void client_cb(lg_io_t *io, uint32_t ev)
{
    lg_conn_t *c = io->data;
    lg_end_on_event(&c->e, ev);
    lg_conn_run(c);
}

/* ---- accept ---- */

lg_conn_t *lg_conn_new(int fd, const lg_bind_t *bind, const struct sockaddr_storage *peer)
{
    lg_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->magic = LG_CONN_MAGIC;
    c->e.io.fd = fd;
    c->e.io.cb = client_cb;
    c->e.io.data = c;
    c->timer.cb = conn_timeout;
    c->timer.data = c;
    c->bind = bind;
    c->fe = frontends[bind->socks ? LG_PROTO_SOCKS5 : bind->stream ? LG_PROTO_STREAM : LG_PROTO_HTTP1];
    LG_BUG_ON(c->fe == NULL);
    c->id = ++lg_w.next_id;
    c->t_start = lg_w.loop.now;
    lg_conn_set_peer(c, peer);
    if (lg_io_add(&lg_w.loop, &c->e.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        free(c);
        return NULL;
    }
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    lg_w.nconns++;
    c->e.r_ready = 1;           /* TCP_DEFER_ACCEPT (or a socketpair): the request is likely here */
    c->e.w_ready = 1;
    c->state = LG_C_PROXYPROTO; /* the caller says what comes first */
    return c;
}

lg_conn_t *lg_conn_new_virtual(const lg_bind_t *bind, const struct sockaddr_storage *peer, lg_proto_t p)
{
    if (frontends[p] == NULL || lg_w.nconns >= lg_w.conf->worker_connections)
        return NULL;
    lg_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->magic = LG_CONN_MAGIC;
    c->e.io.fd = -1;
    c->timer.cb = conn_timeout;
    c->timer.data = c;
    c->bind = bind;
    c->fe = frontends[p];
    c->id = ++lg_w.next_id;
    c->t_start = c->t_idle = lg_w.loop.now;
    lg_conn_set_peer(c, peer);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    lg_w.nconns++;
    c->state = LG_C_FRONT;
    c->fe->start(c);
    return c;
}

void lg_conn_begin(lg_conn_t *c)
{
    enter_front(c);
    lg_conn_run(c);
}

void lg_conn_accept(int lfd, const lg_bind_t *bind)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            lg_log_errno(errno == EMFILE || errno == ENFILE ? LG_LOG_CRIT : LG_LOG_ERROR,
                         errno, "accept() on %s failed", bind->addr.text);
        return;
    }
    if (ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    lg_conn_t *c = lg_conn_new(fd, bind, &ss);
    if (c == NULL) {
        close(fd);
        return;
    }
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls)
        ls->accepted++;
    if (bind->proxy_protocol)
        c->state = LG_C_PROXYPROTO;
    else
        start_protocol(c);
    if (c->state != LG_C_CLOSED)
        lg_conn_run(c);
}

void lg_conn_set_idle(lg_conn_t *c, int idle)
{
    if (idle == c->in_idle)
        return;
    c->in_idle = idle;
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls) {
        if (idle)
            ls->idle_in++;
        else
            ls->idle_out++;
    }
    if (idle) {
        c->idle_next = NULL;
        c->idle_prev = idle_tail;
        if (idle_tail)
            idle_tail->idle_next = c;
        else
            idle_head = c;
        idle_tail = c;
        return;
    }
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        idle_head = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    else
        idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
}

int lg_conn_reclaim(void)
{
    static lg_msec_t last_said;
    static unsigned since;
    lg_conn_t *c = idle_head;
    if (c == NULL)
        return 0;
    since++;
    if (lg_w.loop.now - last_said >= 1000) {
        /* at most once a second: a busy edge at its limit would flood the log */
        lg_warn("%d worker_connections reached: closed %u idle keep-alive connection%s "
                "to make room", lg_w.conf->worker_connections, since, since == 1 ? "" : "s");
        last_said = lg_w.loop.now;
        since = 0;
    }
    if (lg_conn_stats(c))
        lg_conn_stats(c)->reclaimed++;
    lg_conn_close(c, "idle, closed to make room for a new connection");
    return 1;
}

void lg_conn_drain_all(void)
{
    lg_conn_t *c = conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == LG_C_FRONT)
            c->fe->drain(c);
    }
}

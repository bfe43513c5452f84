/*
 * A client connection and the requests on it: the proxy's state machine.
 *
 *   READ_HEAD --head--> (local response) --> LOCAL --sent--> READ_HEAD | DRAIN
 *       |                                                      ^
 *       +--route to upstream--> CONNECT --> PROXY --done-------+
 *
 * session_run() is the one driver: every event on the client or on its
 * upstream connection lands there, and it loops while a step makes
 * progress.  session_close() is the one teardown; it is idempotent and
 * releases whatever is not NULL.  Timeouts are "between two successive
 * operations", as nginx counts them: the timer is re-armed after each run
 * for whatever the session is now waiting on.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "net/tls.h"
#include "net/proxyproto.h"
#include "net/acl.h"
#include "net/geo.h"
#include "http/negotiate.h"
#include "http/codec.h"
#include "proxy/balance.h"
#include "pipeline/vars.h"

#define SESSION_MAGIC 0x5345534eu
#define LINGER_MS 5000
#define ARENA_BLOCK 4096
#define ARENA_LIMIT (1024 * 1024)

static lg_session_t *sessions;      /* all open sessions, for a graceful stop */

extern void lg_worker_conn_closed(void);

static const http_limits_t limits = {
    .max_line = LG_MAX_REQUEST_LINE,
    .max_head = LG_BUF_SIZE / 2,
    .max_headers = LG_MAX_HEADERS,
};

const char *lg_sstate_name(lg_sstate_t st)
{
    switch (st) {
    case LG_S_READ_HEAD: return "reading request";
    case LG_S_CONNECT:   return "connecting to upstream";
    case LG_S_PROXY:     return "proxying";
    case LG_S_LOCAL:     return "sending response";
    case LG_S_DRAIN:     return "lingering close";
    case LG_S_CLOSED:    return "closed";
    case LG_S_QUEUED:    return "queued for an upstream";
    case LG_S_HANDSHAKE: return "TLS handshake";
    case LG_S_RESOLVE:   return "resolving the destination";
    case LG_S_TUNNEL:    return "tunnel";
    case LG_S_SOCKS:     return "SOCKS5 negotiation";
    case LG_S_CACHE_WAIT: return "waiting for the cache";
    case LG_S_PROXYPROTO: return "reading the PROXY header";
    }
    return "?";
}

static void session_run(lg_session_t *s);
static void proxyproto_step(lg_session_t *s);
static void session_arm(lg_session_t *s);

const lg_common_t *lg_session_common(const lg_session_t *s)
{
    if (s->route)
        return &s->route->common;
    if (s->server)
        return &s->server->common;
    return &s->bind->default_server->common;
}

static void session_close(lg_session_t *s, const char *why)
{
    if (s->state == LG_S_CLOSED)
        return;
    lg_debug("closing client %s connection %llu: %s", s->peer_text,
             (unsigned long long)s->id, why);
    if (s->state == LG_S_QUEUED)
        lg_w.queued[s->up->index]--;
    lg_forward_cancel(s);
    lg_cache_on_close(s);
    s->state = LG_S_CLOSED;
    if (s->uc) {
        lg_upstream_release(s->uc, 0);
        s->uc = NULL;
    }
    lg_timer_del(&lg_w.loop, &s->timer);
    lg_tls_close(s->e.ssl);
    s->e.ssl = NULL;
    if (s->e.io.fd >= 0) {
        lg_io_del(&lg_w.loop, &s->e.io);
        close(s->e.io.fd);
        s->e.io.fd = -1;
    }
    lg_pipe_release(&s->rspp);
    lg_pipe_release(&s->reqp);
    if (s->spliced) {
        lg_splice_close(&s->sp_up);
        lg_splice_close(&s->sp_down);
    }
    lg_buf_put(s->in);
    s->in = NULL;
    lg_arena_destroy(&s->arena);
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->magic = 0;
    lg_w.nconns--;
    lg_loop_defer_free(&lg_w.loop, s);
    lg_worker_conn_closed();
}

/* ---- events ---- */

static void client_cb(lg_io_t *io, uint32_t ev)
{
    lg_session_t *s = io->data;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->e.r_ready = 1;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        s->e.w_ready = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->e.rd_hup = 1;
    session_run(s);
}

static void upstream_cb(lg_io_t *io, uint32_t ev)
{
    lg_uconn_t *uc = io->data;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        uc->e.r_ready = 1;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        uc->e.w_ready = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        uc->e.rd_hup = 1;
    if (uc->owner)
        session_run(uc->owner);
}

/* ---- local responses ---- */

static void respond_local(lg_session_t *s, int status, const char *body, const char *location)
{
    s->status = status;
    size_t len = 0;
    const char *r = lg_build_local(s, status, body, location, &len);
    if (r == NULL) {
        session_close(s, "out of memory building a response");
        return;
    }
    s->local = r;
    s->local_len = len;
    s->local_body = NULL;
    s->local_sent = 0;
    s->state = LG_S_LOCAL;
}

static void respond_error(lg_session_t *s, int status)
{
    if (s->socks) {
        lg_socks_fail(s, status);       /* a SOCKS reply, then close */
        return;
    }
    /* the request's body (if any) was not read: the connection cannot go on */
    if (s->ri.body != LG_BODY_NONE && !(s->reqp.buf && s->reqp.src_done))
        s->keep_alive = 0;
    if (status == 400 || status == 414 || status == 431 || status == 505 || status == 413)
        s->keep_alive = 0;
    respond_local(s, status, NULL, NULL);
}

/* ---- reading the request head ---- */

/* Returns 1 with a complete head, 0 when waiting or closed. */
static int read_head(lg_session_t *s)
{
    for (;;) {
        if (s->in == NULL) {
            if (!s->e.r_ready) {
                s->e.want_r = 1;
                return 0;
            }
            s->in = lg_buf_get();
            if (s->in == NULL) {
                session_close(s, "out of memory");
                return 0;
            }
        }
        lg_buf_t *b = s->in;
        size_t have = lg_buf_len(b);
        if (have) {
            if (s->req.headers == NULL) {
                s->req.headers = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
                if (s->req.headers == NULL) {
                    session_close(s, "out of memory");
                    return 0;
                }
            }
            ssize_t rc = http_parse_request(b->pos, have, &s->req, &limits, &s->scanned);
            if (rc > 0) {
                s->head_len = (size_t)rc;
                s->bytes_in = (uint64_t)rc;
                return 1;
            }
            if (rc != HTTP_AGAIN) {
                s->keep_alive = 0;
                int st = rc == HTTP_URI_TOO_LONG ? 414 : rc == HTTP_HEAD_TOO_LARGE ? 431 :
                         rc == HTTP_BAD_VERSION ? 505 : 400;
                lg_info("client %s sent an invalid request head (%d)", s->peer_text, st);
                s->req.method = NULL;   /* nothing trustworthy to log */
                s->req.num_headers = 0;
                respond_error(s, st);
                return 0;
            }
        }
        if (b->last == b->end) {
            /* cannot happen: the parser gives up at max_head < buffer size */
            respond_error(s, 431);
            return 0;
        }
        if (!s->e.r_ready) {
            s->e.want_r = 1;
            if (lg_buf_len(b) == 0) {
                lg_buf_put(b);  /* idle: hold no buffer */
                s->in = NULL;
            }
            return 0;
        }
        size_t room = (size_t)(b->end - b->last);
        ssize_t n = lg_end_recv(&s->e, b->last, room);
        if (n > 0) {
            if (lg_buf_len(b) == 0)
                s->t_start = lg_w.loop.now;
            b->last += n;
            lg_end_short_read(&s->e, (size_t)n, room);
            continue;
        }
        if (n == 0) {
            session_close(s, lg_buf_len(b) ? "client closed mid-request" : "client closed");
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            s->e.r_ready = 0;
            continue;           /* the check above puts the idle buffer back */
        }
        session_close(s, "recv() from client failed");
        return 0;
    }
}

/* ---- routing ---- */

static void start_upstream(lg_session_t *s);

/*
 * Canary: which upstream of the route's split serves this request.  A
 * cohort cookie set earlier wins; otherwise the split key (a cookie, a
 * header, the client address) is hashed onto the weights, so a user stays
 * in the same cohort; a request without a key is placed at random and, if
 * the route names a cookie, told its cohort so it stays there.
 */
static lg_upstream_t *choose_split(lg_session_t *s)
{
    const lg_route_t *rt = s->route;
    if (rt->split_cookie) {
        lg_str_t v = lg_req_cookie(s, rt->split_cookie);
        for (size_t i = 0; v.p && i < rt->nsplits; i++)
            if (strlen(rt->splits[i].upstream->name) == v.n &&
                memcmp(rt->splits[i].upstream->name, v.p, v.n) == 0)
                return rt->splits[i].upstream;
    }
    uint32_t total = 0;
    for (size_t i = 0; i < rt->nsplits; i++)
        total += (uint32_t)rt->splits[i].weight;
    const char *key = lg_vars_expand(s, rt->split_key, LG_VARS_ESCAPE, NULL);
    uint32_t x = key && *key ? (uint32_t)(lg_hash64(key, strlen(key), 0x63616e61ull) % total)
                             : lg_rand_below(&lg_w.rng, total);
    size_t i = 0;
    for (; i + 1 < rt->nsplits && x >= (uint32_t)rt->splits[i].weight; i++)
        x -= (uint32_t)rt->splits[i].weight;
    if (rt->split_cookie)
        s->set_cookie = lg_arena_printf(&s->arena, "%s=%s; Path=/", rt->split_cookie,
                                        rt->splits[i].upstream->name);
    return rt->splits[i].upstream;
}

/*
 * Max-Forwards (RFC 9110 7.6.2) for TRACE and OPTIONS: at zero the request
 * stops here and legate answers it; otherwise it goes on decremented.
 */
static int max_forwards(lg_session_t *s)
{
    int trace = s->req.method_len == 5 && memcmp(s->req.method, "TRACE", 5) == 0;
    int options = s->req.method_len == 7 && memcmp(s->req.method, "OPTIONS", 7) == 0;
    const http_header_t *h = (trace || options) ? lg_req_header(s, "max-forwards") : NULL;
    s->max_forwards = 0;
    if (h == NULL)
        return 0;
    long n = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9' || n > 100000) {
            respond_error(s, 400);
            return 1;
        }
        n = n * 10 + (h->value[i] - '0');
    }
    if (n > 0) {
        s->max_forwards = (int)n;       /* (n - 1) + 1 */
        return 0;
    }
    if (options) {
        s->route = NULL;
        s->local_extra = "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT\r\n";
        respond_local(s, 200, "", NULL);
        return 1;
    }
    /* TRACE: the request as received, without what would leak credentials */
    char *msg = lg_arena_printf(&s->arena, "%.*s %.*s HTTP/%d.%d\r\n", (int)s->req.method_len,
                                s->req.method, (int)s->req.target_len, s->req.target,
                                s->req.version / 10, s->req.version % 10);
    for (size_t i = 0; msg && i < s->req.num_headers; i++) {
        const http_header_t *x = &s->req.headers[i];
        if (http_name_eq(x, "authorization") || http_name_eq(x, "proxy-authorization") ||
            http_name_eq(x, "cookie"))
            continue;
        msg = lg_arena_printf(&s->arena, "%s%.*s: %.*s\r\n", msg, (int)x->name_len, x->name,
                              (int)x->value_len, x->value);
    }
    s->route = NULL;
    s->local_ctype = "message/http";
    respond_local(s, 200, msg ? msg : "", NULL);
    return 1;
}


/* The request carries our own Via entry: it went round; stop it here. */
static int via_loop(lg_session_t *s)
{
    if (!lg_via_loop(s))
        return 0;
    const http_header_t *v = lg_req_header(s, "via");
    lg_error("forwarding loop detected: Via \"%.*s\" names this proxy (via_name \"%s\"), "
             "client: %s, request: \"%.*s\"", v ? (int)v->value_len : 0, v ? v->value : "",
             lg_w.conf->via_name, s->peer_text, (int)s->ri.uri.n, s->ri.uri.p);
    s->blocked = "forwarding loop (Via)";
    respond_local(s, 508, NULL, NULL);
    return 1;
}

static void process_request(lg_session_t *s)
{
    int st = lg_http_analyze_request(&s->req, &s->ri);
    s->server = lg_route_server(s->bind, s->ri.host);
    lg_session_real_ip(s);
    if (st) {
        s->keep_alive = 0;
        respond_error(s, st);
        return;
    }
    const lg_common_t *sc = &s->server->common;
    s->keep_alive = s->ri.keep_alive && sc->keepalive_timeout > 0 &&
                    s->requests + 1 < (unsigned)sc->keepalive_requests && !lg_w.quitting;
    if (max_forwards(s))
        return;                 /* answered here: Max-Forwards reached zero */
    if (s->server->forward && (s->ri.absolute_form || s->ri.connect)) {
        s->route = NULL;
        if (s->ri.connect)
            s->keep_alive = 0;  /* the connection becomes the tunnel */
        /* elite adds no Via, so it cannot see a loop either */
        if (strcmp(s->server->forward->anonymity, "elite") != 0 && via_loop(s))
            return;
        lg_forward_start(s);
        return;
    }

    char *mp = lg_arena_alloc(&s->arena, s->ri.path.n + 2);
    if (mp == NULL) {
        respond_error(s, 500);
        return;
    }
    ssize_t mn;
    if (s->ri.path.n == 1 && s->ri.path.p[0] == '*') {
        mp[0] = '*';
        mp[1] = '\0';
        mn = 1;
    } else {
        mn = lg_http_normalize_path(s->ri.path.p, s->ri.path.n, mp);
    }
    if (mn < 0) {
        respond_error(s, 400);
        return;
    }
    s->mpath = mp;
    s->route = lg_route_find(s->server, s, mp, (size_t)mn, s->caps);
    if (s->route == NULL) {
        respond_error(s, 404);
        return;
    }
    const lg_common_t *c = &s->route->common;
    s->keep_alive = s->keep_alive && c->keepalive_timeout > 0;
    if (c->client_max_body_size && s->ri.body == LG_BODY_LENGTH &&
        s->ri.length > c->client_max_body_size) {
        lg_error("client %s intended to send too large body: %lld bytes",
                 s->peer_text, (long long)s->ri.length);
        respond_error(s, 413);
        return;
    }
    if (s->route->action == LG_ACTION_RETURN) {
        if (s->ri.body != LG_BODY_NONE)
            s->keep_alive = 0;  /* the body is not read: close after */
        const char *body = lg_vars_expand(s, s->route->body, LG_VARS_RAW, NULL);
        const char *location = lg_vars_expand(s, s->route->location, LG_VARS_RAW, NULL);
        if ((body == NULL && s->route->body) || (location == NULL && s->route->location)) {
            session_close(s, "out of memory expanding a body");
            return;
        }
        respond_local(s, s->route->status, body, location);
        return;
    }
    if (c->via && via_loop(s))
        return;
    s->up = s->route->nsplits ? choose_split(s) : s->route->upstream;
    if (lg_cache_on_request(s))
        return;                 /* answered, or waiting, from the cache */
    start_upstream(s);
}

/* ---- the upstream side ---- */

static void log_upstream_error(lg_session_t *s, int err, const char *what)
{
    lg_log_errno(LG_LOG_ERROR, err,
                 "upstream \"%s\" server %s: %s, client: %s, request: \"%.*s %.*s\"",
                 s->up->name, s->uc ? lg_uconn_addr(s->uc) : "-", what,
                 s->peer_text, (int)s->req.method_len, s->req.method,
                 (int)s->req.target_len, s->req.target);
}

/*
 * Attach a connection to a server not tried yet.  The request head is kept
 * in the arena and only its send position is reset, so a retry costs no
 * rebuild.
 */
static int attach_upstream(lg_session_t *s, int counted)
{
    int err = 0;
    lg_uconn_t *uc = lg_upstream_get(s, s->up, &s->tried, &err);
    if (uc == NULL) {
        s->attach_err = err;
        return -1;
    }
    if (counted && s->ntries++ == 0)
        s->t_first_try = lg_w.loop.now;
    s->rerun = 1;               /* a new connection: drive the session again */
    s->uc = uc;
    uc->owner = s;
    uc->e.io.cb = upstream_cb;
    uc->e.io.data = uc;
    uc->e.want_r = uc->e.want_w = 0;
    lg_sstate_t ready = s->ri.connect ? LG_S_TUNNEL : LG_S_PROXY;
    if (uc->reused) {
        uc->e.w_ready = 1;
        s->state = ready;
    } else {
        uc->e.w_ready = uc->connected;
        uc->e.r_ready = 0;
        /* a TLS upstream still needs its handshake once TCP is up */
        s->state = uc->connected && !uc->up->tls ? ready : LG_S_CONNECT;
    }
    s->t_upstream = lg_w.loop.now;
    s->rsp_scanned = 0;
    if (s->reqp.buf)
        lg_pipe_rewind(&s->reqp);   /* the head (and a kept body) go out again */
    return 0;
}


static void start_upstream(lg_session_t *s)
{
    lg_buf_t *b = s->in;
    b->pos = b->start + s->head_len;
    lg_pipe_init(&s->reqp, b, b->pos, s->ri.body, s->ri.length,
                 s->ri.body == LG_BODY_CHUNKED);
    /* a chunked body has no announced length: count it as it comes */
    s->reqp.limit = (uint64_t)lg_session_common(s)->client_max_body_size;
    lg_session_request_gunzip(s);
    size_t len = 0;
    const char *head = lg_build_upstream_head(s, &len);
    if (head == NULL) {
        respond_error(s, 500);
        return;
    }
    s->reqp.hdr = head;
    s->reqp.hdr_len = len;
    if (attach_upstream(s, 1) < 0) {
        if (s->attach_err == EBUSY && lg_w.queued[s->up->index] < s->up->queue) {
            /* every server is at max_conns: wait for room, bounded */
            lg_w.queued[s->up->index]++;
            s->t_queued = lg_w.loop.now;
            s->state = LG_S_QUEUED;
            return;
        }
        if (s->attach_err == EBUSY) {
            lg_error("upstream \"%s\": every server is at max_conns, client %s", s->up->name,
                     s->peer_text);
            respond_error(s, 503);
            return;
        }
        lg_error("no live upstreams in \"%s\" for client %s", s->up->name,
                 s->peer_text);
        respond_error(s, 502);
        return;
    }
    if (s->ri.expect_continue && s->ri.body != LG_BODY_NONE && lg_buf_len(b) == 0) {
        /* we read the body ourselves, so we are the one to say "go on" */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t n = lg_end_send(&s->e, cont, sizeof(cont) - 1);
        if (n != (ssize_t)sizeof(cont) - 1)
            s->keep_alive = 0;
    }
}

/* May this request go to another server after a failure of kind `cond`? */
static int may_retry(const lg_session_t *s, unsigned cond)
{
    const lg_upstream_t *up = s->up;
    if (!(up->next_mask & cond))
        return 0;
    if (!s->ri.method_idempotent && !(up->next_mask & LG_COND_NON_IDEMPOTENT))
        return 0;               /* a POST may have had its effect: not again */
    unsigned limit = up->next_upstream_tries ? (unsigned)up->next_upstream_tries
                                             : (unsigned)up->nservers;
    if (s->ntries >= limit)
        return 0;
    if (up->next_upstream_timeout && lg_w.loop.now - s->t_first_try >= up->next_upstream_timeout)
        return 0;
    /* a body already (partly) sent is resent only if we still hold it whole */
    return s->reqp.wire_bytes <= s->reqp.hdr_len || s->reqp.kept;
}

/*
 * The current upstream failed before a response head was complete.  A
 * pooled connection the server had closed is not a failure: the request
 * simply goes out again on another.  Otherwise count the failure for
 * passive health (fail_on), try the next server when next_upstream allows,
 * else answer 502/504.
 */
static void upstream_failed(lg_session_t *s, int status, unsigned cond, int err, const char *what)
{
    lg_uconn_t *uc = s->uc;
    int stale = cond == LG_COND_ERROR && uc && uc->reused && s->rsp_scanned == 0 &&
                (uc->in == NULL || lg_buf_len(uc->in) == 0);
    int body_intact = s->reqp.wire_bytes <= s->reqp.hdr_len || s->reqp.kept;
    if (!stale) {
        log_upstream_error(s, err, what);
        if (uc && (s->up->fail_mask & cond))
            lg_upstream_result(uc, 0, 0);   /* passive health */
    }
    lg_upstream_release(uc, 0);
    s->uc = NULL;
    if (stale && body_intact) {
        size_t bit = uc->server < 64 ? ((size_t)1 << uc->server) : 0;
        s->tried &= ~bit;
        if (attach_upstream(s, 0) == 0)
            return;
    } else if (may_retry(s, cond) && attach_upstream(s, 1) == 0) {
        return;
    }
    s->upstream_status = status;
    if (lg_cache_on_error(s, status))
        return;                 /* stale-if-error */
    respond_error(s, status);
}

static void connect_step(lg_session_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (!uc->connected) {
        if (!uc->e.w_ready && !uc->e.r_ready) {
            uc->e.want_w = 1;
            return;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(uc->e.io.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            upstream_failed(s, 502, LG_COND_ERROR, err, "connect() failed");
            return;
        }
        uc->connected = 1;
        uc->e.w_ready = 1;
    }
    if (uc->up->tls && !uc->tls_done) {
        if (uc->e.ssl == NULL &&
            (uc->e.ssl = lg_tls_connect(uc->up, uc->server, uc->e.io.fd)) == NULL) {
            upstream_failed(s, 502, LG_COND_ERROR, 0, "cannot start TLS");
            return;
        }
        int want_r = 0, want_w = 0;
        char why[256];
        int rc = lg_tls_handshake(uc->e.ssl, &want_r, &want_w, why, sizeof(why));
        if (rc == 0) {
            if (want_r) {
                uc->e.r_ready = 0;
                uc->e.want_r = 1;
            }
            if (want_w) {
                uc->e.w_ready = 0;
                uc->e.want_w = 1;
            }
            return;
        }
        if (rc < 0) {
            const char *v = lg_tls_verify_error(uc->e.ssl);
            char what[400];
            snprintf(what, sizeof(what), "TLS handshake with upstream failed: %s", v ? v : why);
            upstream_failed(s, 502, LG_COND_ERROR, 0, what);
            return;
        }
        uc->tls_done = 1;
    }
    s->state = s->ri.connect ? LG_S_TUNNEL : LG_S_PROXY;
}

/* Read and parse the upstream's response head.  1: done, 0: waiting/failed. */
static int read_response_head(lg_session_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (uc->in == NULL && (uc->in = lg_buf_get()) == NULL) {
        upstream_failed(s, 502, LG_COND_ERROR, ENOMEM, "no buffer");
        return 0;
    }
    lg_buf_t *b = uc->in;
    static const http_limits_t ul = {
        .max_line = LG_BUF_SIZE / 2, .max_head = LG_BUF_SIZE / 2, .max_headers = LG_MAX_HEADERS,
    };
    for (;;) {
        if (lg_buf_len(b)) {
            http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
            if (hs == NULL) {
                upstream_failed(s, 502, LG_COND_ERROR, ENOMEM, "out of memory");
                return 0;
            }
            http_response_t r = { .headers = hs };
            ssize_t rc = http_parse_response(b->pos, lg_buf_len(b), &r, &ul, &s->rsp_scanned);
            if (rc > 0) {
                if (r.status < 200) {
                    /* 1xx: interim, not forwarded (we answered 100 ourselves) */
                    b->pos += rc;
                    s->rsp_scanned = 0;
                    continue;
                }
                lg_rsp_info_t ri;
                if (lg_http_analyze_response(&r, s->ri.is_head, &ri) < 0) {
                    s->rsp_scanned = 1;
                    upstream_failed(s, 502, LG_COND_INVALID_HEADER, 0, "upstream sent invalid response framing");
                    return 0;
                }
                unsigned sc = r.status == 500 ? LG_COND_HTTP_500 : r.status == 502 ? LG_COND_HTTP_502 :
                              r.status == 503 ? LG_COND_HTTP_503 : r.status == 504 ? LG_COND_HTTP_504 :
                              r.status == 429 ? LG_COND_HTTP_429 : 0;
                if (sc && (s->up->fail_mask & sc))
                    lg_upstream_result(uc, 0, 0);
                if (sc && may_retry(s, sc)) {
                    /* keep this answer until another server has been found */
                    lg_uconn_t *old = s->uc;
                    s->uc = NULL;
                    if (attach_upstream(s, 1) == 0) {
                        lg_info("upstream \"%s\" server %s answered %d: trying the next server",
                                s->up->name, lg_uconn_addr(old), r.status);
                        lg_upstream_release(old, 0);
                        return 0;
                    }
                    s->uc = old;
                }
                if (lg_cache_on_response(s, &r, &ri, b->pos, (size_t)rc)) {
                    /* answered from the cache (revalidated, or stale on error) */
                    s->upstream_status = r.status;
                    lg_upstream_release(s->uc, 0);
                    s->uc = NULL;
                    return 0;
                }
                b->pos += rc;
                s->upstream_status = r.status;
                s->upstream_time = lg_w.loop.now - s->t_upstream;
                lg_upstream_result(uc, 1, s->upstream_time);
                s->status = r.status;
                s->upstream_keep = ri.keep_alive;
                lg_pipe_init(&s->rspp, b, b->start, ri.body, ri.length, 0);
                lg_cache_tap(s);
                lg_xform_t xf = lg_session_start_xform(s, lg_session_choose_xform(s, &r, &ri), &ri);
                /* a transformed body has a length nobody knows yet */
                int unknown = ri.body == LG_BODY_CHUNKED || ri.body == LG_BODY_CLOSE ||
                              xf != LG_XFORM_NONE;
                int out_chunked = unknown && s->req.version >= 11;
                if (unknown && !out_chunked)
                    s->keep_alive = 0;  /* HTTP/1.0 client: the close delimits */
                if (!s->reqp.done) {
                    /* answered before the whole body was sent (e.g. 413):
                     * stop sending it and close both sides afterwards */
                    s->abandoned = 1;
                    s->keep_alive = 0;
                }
                size_t hl = 0;
                const char *head = lg_build_client_head(s, &r, &ri, out_chunked, xf, &hl);
                if (head == NULL) {
                    upstream_failed(s, 502, LG_COND_ERROR, ENOMEM, "out of memory");
                    return 0;
                }
                s->rspp.out_chunked = out_chunked;
                s->rspp.hdr = head;
                s->rspp.hdr_len = hl;
                s->rsp_head_done = 1;
                return 1;
            }
            if (rc != HTTP_AGAIN) {
                s->rsp_scanned = 1;
                upstream_failed(s, 502, LG_COND_INVALID_HEADER, 0, "upstream sent an invalid response head");
                return 0;
            }
        }
        if (b->last == b->end) {
            upstream_failed(s, 502, LG_COND_INVALID_HEADER, 0, "upstream sent too big a header");
            return 0;
        }
        if (!uc->e.r_ready) {
            uc->e.want_r = 1;
            return 0;
        }
        size_t room = (size_t)(b->end - b->last);
        ssize_t n = lg_end_recv(&uc->e, b->last, room);
        if (n > 0) {
            b->last += n;
            lg_end_short_read(&uc->e, (size_t)n, room);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            uc->e.r_ready = 0;
            uc->e.want_r = 1;
            return 0;
        }
        upstream_failed(s, 502, LG_COND_ERROR, n < 0 ? errno : 0,
                        n == 0 ? "upstream prematurely closed connection while reading response header"
                               : "recv() failed while reading response header");
        return 0;
    }
}

static void finish_request(lg_session_t *s);

static void proxy_step(lg_session_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (!s->reqp.done && !s->abandoned) {
        lg_pipe_rc_t rc = lg_pipe_run(&s->reqp, &s->e, &uc->e);
        if (rc == LG_PIPE_ERR_SRC && s->body_gunzip && s->reqp.codec &&
            s->reqp.codec->err == LG_CODEC_EBOMB && !s->rspp.wire_bytes) {
            lg_error("client %s sent a gzip body over gunzip_request_max once decompressed",
                     s->peer_text);
            s->keep_alive = 0;
            lg_upstream_release(s->uc, 0);
            s->uc = NULL;
            respond_error(s, 413);
            return;
        }
        if (rc == LG_PIPE_ERR_SRC) {
            lg_info("client %s closed or sent a bad body while sending the request body",
                    s->peer_text);
            if (s->reqp.src_eof || s->rspp.wire_bytes) {
                session_close(s, "client body failed");
            } else {
                s->keep_alive = 0;
                lg_upstream_release(s->uc, 0);
                s->uc = NULL;
                respond_error(s, 400);
            }
            return;
        }
        if (rc == LG_PIPE_ERR_LIMIT) {
            lg_error("client %s intended to send too large chunked body: more than %lld bytes",
                     s->peer_text, (long long)lg_session_common(s)->client_max_body_size);
            lg_upstream_release(s->uc, 0);
            s->uc = NULL;
            if (s->rspp.wire_bytes) {
                session_close(s, "body too large");
            } else {
                s->keep_alive = 0;
                respond_error(s, 413);
            }
            return;
        }
        if (rc == LG_PIPE_ERR_DST) {
            if (!s->rsp_head_done) {
                upstream_failed(s, 502, LG_COND_ERROR, errno, "send() to upstream failed");
                return;
            }
            s->abandoned = 1;
        }
    }
    if (s->state != LG_S_PROXY)
        return;
    if (!s->rsp_head_done && !read_response_head(s))
        return;
    lg_pipe_rc_t rc = lg_pipe_run(&s->rspp, &uc->e, &s->e);
    if (rc == LG_PIPE_AGAIN)
        return;
    if (rc == LG_PIPE_ERR_SRC) {
        log_upstream_error(s, errno, "upstream prematurely closed connection while reading response body");
        session_close(s, "upstream body failed");
        return;
    }
    if (rc == LG_PIPE_ERR_DST) {
        session_close(s, "send() to client failed");
        return;
    }
    finish_request(s);
}

static void local_step(lg_session_t *s)
{
    size_t total = s->local_len + (s->local_body ? s->local_body_len : 0);
    while (s->local_sent < total) {
        if (!s->e.w_ready) {
            s->e.want_w = 1;
            return;
        }
        struct iovec iov[2];
        int cnt = 0;
        if (s->local_sent < s->local_len) {
            iov[cnt].iov_base = (void *)(s->local + s->local_sent);
            iov[cnt++].iov_len = s->local_len - s->local_sent;
        }
        if (s->local_body) {
            size_t off = s->local_sent > s->local_len ? s->local_sent - s->local_len : 0;
            iov[cnt].iov_base = (void *)(s->local_body + off);
            iov[cnt++].iov_len = s->local_body_len - off;
        }
        ssize_t n = lg_end_writev(&s->e, iov, cnt);
        if (n > 0) {
            s->local_sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            s->e.w_ready = 0;
            s->e.want_w = 1;
            return;
        }
        session_close(s, "send() to client failed");
        return;
    }
    s->bytes_out = total;
    s->local_body = NULL;
    finish_request(s);
}

/* ---- for the forward proxy (forward.c) ---- */

void lg_session_send_raw(lg_session_t *s, int status, const char *buf, size_t len)
{
    lg_session_send_raw2(s, status, buf, len, NULL, 0);
}

void lg_session_send_raw2(lg_session_t *s, int status, const char *head, size_t hlen,
                          const char *body, size_t blen)
{
    s->status = status;
    s->local = head;
    s->local_len = hlen;
    s->local_body = blen ? body : NULL;
    s->local_body_len = blen;
    s->local_sent = 0;
    s->state = LG_S_LOCAL;
}


void lg_session_close(lg_session_t *s, const char *why)
{
    session_close(s, why);
}

void lg_session_respond(lg_session_t *s, int status, const char *body)
{
    if (s->socks) {
        lg_socks_fail(s, status);
        return;
    }
    if (s->ri.connect)
        s->keep_alive = 0;
    if (body)
        respond_local(s, status, body, NULL);
    else
        respond_error(s, status);
}

static void start_tunnel(lg_session_t *s)
{
    if (attach_upstream(s, 1) < 0) {
        lg_error("forward proxy: cannot connect to %s for client %s", s->up->name, s->peer_text);
        respond_error(s, 502);
    }
}

void lg_session_proxy_to(lg_session_t *s, lg_upstream_t *up)
{
    s->up = up;
    if (s->ri.connect)
        start_tunnel(s);
    else
        start_upstream(s);
}

void lg_session_wake(lg_session_t *s)
{
    if (s->state != LG_S_CLOSED)
        session_run(s);
}

static void handshake_step(lg_session_t *s)
{
    int want_r = 0, want_w = 0;
    char why[256];
    int rc = lg_tls_handshake(s->e.ssl, &want_r, &want_w, why, sizeof(why));
    if (rc == 1) {
        s->state = LG_S_READ_HEAD;
        s->t_start = lg_w.loop.now;
        return;
    }
    if (rc == 0) {
        if (want_r) {
            s->e.r_ready = 0;
            s->e.want_r = 1;
        }
        if (want_w) {
            s->e.w_ready = 0;
            s->e.want_w = 1;
        }
        return;
    }
    lg_info("TLS handshake with %s failed: %s", s->peer_text, why);
    session_close(s, "TLS handshake failed");
}

/* Lingering close: the peer may still be sending; read and drop it so our
 * response is not destroyed by a reset, until EOF or the linger timer. */
static void drain_step(lg_session_t *s)
{
    char sink[4096];
    while (s->e.r_ready) {
        ssize_t n = recv(s->e.io.fd, sink, sizeof(sink), 0);   /* raw: TLS is over */
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            s->e.r_ready = 0;
            break;
        }
        session_close(s, "lingering close done");
        return;
    }
    s->e.want_r = 1;
}

static void finish_request(lg_session_t *s)
{
    if (s->state != LG_S_LOCAL)
        s->bytes_out = s->rspp.wire_bytes;
    s->bytes_in = s->head_len + s->reqp.body_bytes;
    if (s->status)
        lg_accesslog_write(s);
    lg_cache_on_finish(s, 1);
    s->cache = NULL;            /* it lives in the arena, about to go */
    if (s->uc) {
        int reusable = s->upstream_keep && s->reqp.done && s->rspp.done && !s->abandoned;
        lg_upstream_release(s->uc, reusable);
        s->uc = NULL;
    }
    lg_pipe_release(&s->rspp);
    lg_pipe_release(&s->reqp);
    s->requests++;
    if (!s->keep_alive || lg_w.quitting) {
        lg_buf_put(s->in);
        s->in = NULL;
        lg_arena_destroy(&s->arena);
        memset(&s->req, 0, sizeof(s->req));
        lg_tls_close(s->e.ssl);         /* close_notify first */
        s->e.ssl = NULL;
        shutdown(s->e.io.fd, SHUT_WR);
        s->state = LG_S_DRAIN;
        s->e.r_ready = 1;
        return;
    }
    /* keep-alive: the bytes after this request (pipelining) go to the front */
    lg_buf_t *b = s->in;
    if (b) {
        char *next = s->reqp.buf ? s->reqp.dec : b->start + s->head_len;
        size_t rest = (size_t)(b->last - next);
        if (rest) {
            memmove(b->start, next, rest);
            b->pos = b->start;
            b->last = b->start + rest;
            s->t_start = lg_w.loop.now;
        } else {
            lg_buf_put(b);
            s->in = NULL;
        }
    }
    lg_arena_destroy(&s->arena);
    /* reset every per-request field (req up to the list links) */
    memset(&s->req, 0, (size_t)((char *)&s->prev - (char *)&s->req));
    s->state = LG_S_READ_HEAD;
}

static void session_run(lg_session_t *s)
{
    s->e.want_r = s->e.want_w = 0;
    if (s->uc)
        s->uc->e.want_r = s->uc->e.want_w = 0;
    for (;;) {
        lg_sstate_t before = s->state;
        switch (s->state) {
        case LG_S_READ_HEAD:
            if (read_head(s))
                process_request(s);
            break;
        case LG_S_CONNECT:
            connect_step(s);
            break;
        case LG_S_PROXY:
            proxy_step(s);
            break;
        case LG_S_LOCAL:
            local_step(s);
            break;
        case LG_S_DRAIN:
            drain_step(s);
            break;
        case LG_S_QUEUED:
            break;              /* the queue timer looks for room */
        case LG_S_HANDSHAKE:
            handshake_step(s);
            break;
        case LG_S_RESOLVE:
            break;              /* the resolver calls back */
        case LG_S_TUNNEL:
            lg_tunnel_step(s);
            break;
        case LG_S_SOCKS:
            lg_socks_step(s);
            break;
        case LG_S_CACHE_WAIT:
            break;              /* the timer looks again */
        case LG_S_PROXYPROTO:
            proxyproto_step(s);
            break;
        case LG_S_CLOSED:
            return;
        }
        int rerun = s->rerun;   /* a step that changed what we wait on */
        s->rerun = 0;
        if (rerun && s->state != LG_S_CLOSED)
            continue;
        if (s->state == before && s->state != LG_S_READ_HEAD)
            break;
        if (s->state == LG_S_READ_HEAD && before == LG_S_READ_HEAD)
            break;
    }
    session_arm(s);
}

/* ---- timers ---- */

static void session_arm(lg_session_t *s)
{
    const lg_common_t *c = lg_session_common(s);
    lg_msec_t t = -1;
    lg_tkind_t k = LG_T_SEND;
#define CONSIDER(cond, val, kind) \
    do { if ((cond) && (t < 0 || (val) < t)) { t = (val); k = (kind); } } while (0)
    switch (s->state) {
    case LG_S_READ_HEAD:
        if ((s->in && lg_buf_len(s->in)) || s->requests == 0) {
            /* the whole head must arrive within client_header_timeout of its
             * first byte: a client trickling a byte at a time is cut off */
            lg_msec_t left = s->t_start + c->client_header_timeout - lg_w.loop.now;
            CONSIDER(1, left > 0 ? left : 0, LG_T_HEADER);
        } else {
            CONSIDER(1, c->keepalive_timeout, LG_T_KEEPALIVE);
        }
        break;
    case LG_S_CONNECT:
        CONSIDER(1, c->proxy_connect_timeout, LG_T_UP_CONNECT);
        break;
    case LG_S_PROXY:
        CONSIDER(s->e.want_r, c->client_body_timeout, LG_T_BODY);
        CONSIDER(s->e.want_w, c->send_timeout, LG_T_SEND);
        CONSIDER(s->uc && s->uc->e.want_w, c->proxy_send_timeout, LG_T_UP_SEND);
        CONSIDER(s->uc && s->uc->e.want_r, c->proxy_read_timeout, LG_T_UP_READ);
        CONSIDER(t < 0, c->proxy_read_timeout, LG_T_UP_READ);
        break;
    case LG_S_LOCAL:
        CONSIDER(1, c->send_timeout, LG_T_SEND);
        break;
    case LG_S_QUEUED:
        CONSIDER(1, 10, LG_T_QUEUE);
        break;
    case LG_S_RESOLVE:
        CONSIDER(1, c->proxy_connect_timeout, LG_T_RESOLVE);
        break;
    case LG_S_CACHE_WAIT:
        CONSIDER(1, 10, LG_T_CACHE_WAIT);
        break;
    case LG_S_PROXYPROTO: {
        lg_msec_t left = s->t_start + c->client_header_timeout - lg_w.loop.now;
        CONSIDER(1, left > 0 ? left : 0, LG_T_HEADER);
        break;
    }
    case LG_S_SOCKS: {
        lg_msec_t left = s->t_start + c->client_header_timeout - lg_w.loop.now;
        CONSIDER(1, left > 0 ? left : 0, LG_T_HEADER);
        break;
    }
    case LG_S_TUNNEL:
        CONSIDER(1, s->server->forward ? s->server->forward->tunnel_idle_timeout : 300000,
                 LG_T_TUNNEL);
        break;
    case LG_S_HANDSHAKE: {
        /* one deadline for the whole handshake: a trickling client is cut off */
        lg_msec_t left = s->t_start + s->bind->default_server->tls.handshake_timeout - lg_w.loop.now;
        CONSIDER(1, left > 0 ? left : 0, LG_T_HANDSHAKE);
        break;
    }
    case LG_S_DRAIN:
        if (lg_timer_armed(&s->timer))
            return;
        CONSIDER(1, LINGER_MS, LG_T_LINGER);
        break;
    case LG_S_CLOSED:
        return;
    }
#undef CONSIDER
    s->tkind = k;
    lg_timer_set(&lg_w.loop, &s->timer, t);
}

static void session_timeout(lg_timer_t *tm)
{
    lg_session_t *s = tm->data;
    switch (s->tkind) {
    case LG_T_HEADER:
        session_close(s, "client timed out sending the request head");
        return;
    case LG_T_KEEPALIVE:
        session_close(s, "keep-alive timeout");
        return;
    case LG_T_LINGER:
        session_close(s, "lingering close timed out");
        return;
    case LG_T_SEND:
        session_close(s, "client timed out receiving the response");
        return;
    case LG_T_BODY:
        lg_info("client %s timed out sending the request body", s->peer_text);
        if (s->rspp.wire_bytes) {
            session_close(s, "client body timeout");
            return;
        }
        s->keep_alive = 0;
        lg_upstream_release(s->uc, 0);
        s->uc = NULL;
        respond_error(s, 408);
        break;
    case LG_T_RESOLVE:
        lg_forward_cancel(s);
        lg_error("forward proxy: resolving \"%.*s\" timed out, client: %s", (int)s->ri.host.n,
                 s->ri.host.p, s->peer_text);
        respond_error(s, 504);
        break;
    case LG_T_TUNNEL:
        lg_tunnel_end(s);       /* idle for tunnel_idle_timeout */
        return;
    case LG_T_HANDSHAKE:
        lg_info("TLS handshake with %s timed out", s->peer_text);
        session_close(s, "TLS handshake timed out");
        return;
    case LG_T_CACHE_WAIT:
        s->state = LG_S_READ_HEAD;      /* (any state but WAIT: the lookup sets it again) */
        if (lg_cache_on_request(s))
            break;
        if (s->route == NULL && s->server->forward)
            lg_forward_resolve(s);      /* a forward-proxy miss: the name first */
        else
            start_upstream(s);
        break;
    case LG_T_QUEUE:
        if (attach_upstream(s, 1) == 0) {
            lg_w.queued[s->up->index]--;
            break;
        }
        if (lg_w.loop.now - s->t_queued < s->up->queue_timeout) {
            session_arm(s);     /* look again shortly */
            return;
        }
        lg_w.queued[s->up->index]--;
        lg_error("upstream \"%s\": no room under max_conns within queue_timeout, client %s",
                 s->up->name, s->peer_text);
        s->keep_alive = 0;
        respond_error(s, 503);
        break;
    case LG_T_UP_CONNECT:
        upstream_failed(s, 504, LG_COND_TIMEOUT, ETIMEDOUT, "upstream timed out while connecting");
        break;
    case LG_T_UP_SEND:
    case LG_T_UP_READ:
        if (s->rsp_head_done) {
            log_upstream_error(s, ETIMEDOUT, "upstream timed out while reading response body");
            session_close(s, "upstream timeout");
            return;
        }
        upstream_failed(s, 504, LG_COND_TIMEOUT, ETIMEDOUT, s->tkind == LG_T_UP_SEND
                        ? "upstream timed out while sending request"
                        : "upstream timed out while reading response header");
        break;
    }
    if (s->state != LG_S_CLOSED)
        session_run(s);
}

/* ---- accept ---- */


/* What the listener speaks after any PROXY header: SOCKS5, TLS or HTTP. */
static int start_protocol(lg_session_t *s)
{
    const lg_bind_t *bind = s->bind;
    s->state = LG_S_READ_HEAD;
    s->t_start = lg_w.loop.now;
    if (bind->socks) {
        s->socks = 1;
        s->server = bind->default_server;
        s->state = LG_S_SOCKS;
    } else if (bind->tls) {
        s->e.ssl = lg_tls_accept(bind, s->e.io.fd);
        if (s->e.ssl == NULL) {
            session_close(s, "cannot start TLS");
            return -1;
        }
        s->state = LG_S_HANDSHAKE;
    }
    return 0;
}

static void proxyproto_step(lg_session_t *s)
{
    if (!s->e.r_ready) {
        s->e.want_r = 1;
        return;
    }
    struct sockaddr_storage src = s->peer;
    char why[128];
    int rc = lg_proxyproto_read(s->e.io.fd, &src, why, sizeof(why));
    if (rc == 0) {
        s->e.r_ready = 0;
        s->e.want_r = 1;
        return;
    }
    if (rc < 0) {
        lg_info("client %s: %s", s->peer_text, why);
        session_close(s, "bad PROXY protocol header");
        return;
    }
    lg_session_set_peer(s, &src);
    s->conn_peer = s->peer;
    start_protocol(s);
}

lg_session_t *lg_session_new(int fd, const lg_bind_t *bind, const struct sockaddr_storage *peer)
{
    lg_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->magic = SESSION_MAGIC;
    s->e.io.fd = fd;
    s->e.io.cb = client_cb;
    s->e.io.data = s;
    s->timer.cb = session_timeout;
    s->timer.data = s;
    s->bind = bind;
    s->id = ++lg_w.next_id;
    s->t_start = lg_w.loop.now;
    lg_arena_init(&s->arena, ARENA_BLOCK, ARENA_LIMIT);
    lg_session_set_peer(s, peer);
    s->conn_peer = *peer;
    if (lg_io_add(&lg_w.loop, &s->e.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        free(s);
        return NULL;
    }
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    lg_w.nconns++;
    s->e.r_ready = 1;           /* TCP_DEFER_ACCEPT (or a socketpair): the request is likely here */
    s->e.w_ready = 1;
    return s;
}

void lg_session_begin_http(lg_session_t *s)
{
    s->state = LG_S_READ_HEAD;
    session_run(s);
}

void lg_session_accept(int lfd, const lg_bind_t *bind)
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
    lg_session_t *s = lg_session_new(fd, bind, &ss);
    if (s == NULL) {
        close(fd);
        return;
    }
    if (bind->proxy_protocol)
        s->state = LG_S_PROXYPROTO;
    else if (start_protocol(s) < 0)
        return;
    session_run(s);
}



void lg_sessions_close_idle(void)
{
    lg_session_t *s = sessions, *next;
    for (; s; s = next) {
        next = s->next;
        if (s->state == LG_S_READ_HEAD && (s->in == NULL || lg_buf_len(s->in) == 0))
            session_close(s, "shutting down");
    }
}

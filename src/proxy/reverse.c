/*
 * The reverse proxy: routing a request to an upstream (the ROUTE phase)
 * and the upstream attempt that answers it (the CONTENT phase): a pooled
 * or new connection to a server the balancer picks, the request head and
 * body sent through one pipe, the response head read and handed to the
 * RESPONSE phase, the body relayed through the other pipe.  Failures
 * before a response head try the next server where next_upstream allows.
 *
 * Stages (who drives the request after its phases):
 *   body     proxy_request_buffering: the whole request body read first
 *   queued   every server is at max_conns: look for room, bounded
 *   connect  TCP (and TLS) to the upstream
 *   proxy    bodies flowing both ways; with proxy_buffering the upstream
 *            goes once its body is all in the spool, the client drains it
 * A CONNECT request ends in the tunnel relay (pipeline/tunnel.c) instead,
 * and so does a WebSocket request once its upstream answers 101.
 *
 * WebSocket (RFC 6455 over HTTP/1.1): a GET asking to upgrade to
 * "websocket", on a route with websocket on, goes upstream with its
 * Upgrade and Connection headers like any request; only a 101 whose
 * Upgrade names websocket makes it a tunnel.  Any other answer is an
 * ordinary response, and whatever the client sent after its head is read
 * as its next HTTP request, never relayed raw: an upstream that refuses
 * the upgrade cannot be made to carry smuggled bytes.
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/hash.h"
#include "core/log.h"
#include "feature/metrics.h"
#include "http/codec.h"
#include "net/tls.h"
#include "pipeline/headers.h"
#include "pipeline/spool.h"
#include "pipeline/tunnel.h"
#include "pipeline/vars.h"

static const lg_stage_t connect_stage, proxy_stage, queued_stage, body_stage;

static void start_upstream(lg_req_t *s, lg_head_fn head_fn);
static void go_upstream(lg_req_t *s, lg_head_fn head_fn);

static void upstream_cb(lg_io_t *io, uint32_t ev)
{
    lg_uconn_t *uc = io->data;
    LG_CHECK_UCONN(uc);
    lg_end_on_event(&uc->e, ev);
    if (uc->owner)
        lg_req_run(uc->owner);
}

/* Give the upstream connection back, not for reuse. */
static void detach(lg_req_t *s)
{
    lg_upstream_release(s->uc, 0);
    s->uc = NULL;
    s->upstream_addr = NULL;
    s->uend = NULL;
}

/* The request goes away with its connection (a client that left). */
static void cleanup(void *arg)
{
    lg_req_t *s = arg;
    if (s->stage == &queued_stage) {
        lg_w.queued[s->up->index]--;
        s->stage = NULL;        /* once: a second attempt registers this again */
    }
    if (s->uc)
        detach(s);
}

/* CONNECT tunnels without a forward block (none today) keep the old bound. */
#define CONNECT_IDLE_DEFAULT 300000

/* Connected (and TLS up): a CONNECT becomes a tunnel, the rest are proxied. */
static void connected(lg_req_t *s)
{
    s->upstream_connect_time = s->uc->reused ? 0 : lg_w.loop.now - s->t_upstream;
    /* (a CONNECT with a head to send goes to a parent proxy, as a request) */
    if (s->ri.connect && s->reqp.hdr == NULL) {
        lg_uconn_t *uc = s->uc;
        if (uc->in == NULL && (uc->in = lg_buf_get()) == NULL) {
            lg_req_abort(s, "no buffer for the tunnel");
            return;
        }
        lg_msec_t idle = s->server && s->server->forward ? s->server->forward->tunnel_idle_timeout
                                                         : CONNECT_IDLE_DEFAULT;
        lg_tunnel_start(s, 200, s->conn->fe->tunnel_ok, s->conn->fe->tunnel_ok_len, uc->in, idle);
    } else
        lg_req_set_stage(s, &proxy_stage);
}

/* ---- routing (the ROUTE phase) ---- */

/*
 * Canary: which upstream of the route's split serves this request.  A
 * cohort cookie set earlier wins; otherwise the split key (a cookie, a
 * header, the client address) is hashed onto the weights, so a user stays
 * in the same cohort; a request without a key is placed at random and, if
 * the route names a cookie, told its cohort so it stays there.
 */
static lg_upstream_t *choose_split(lg_req_t *s)
{
    const lg_route_t *rt = s->route;
    if (rt->split_cookie) {
        lg_str_t v = lg_headers_cookie(s, rt->split_cookie);
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
 * A WebSocket opening handshake (RFC 6455 4.1): GET, HTTP/1.1 or later,
 * Upgrade naming websocket and Connection naming upgrade.  With a body it
 * is not one: the bytes after the head would be both the body and the
 * first frames, and two hops could disagree on which.
 */
static int wants_websocket(const lg_req_t *s)
{
    if (s->req.version < 11 || s->ri.body != LG_BODY_NONE || s->req.method_len != 3 ||
        memcmp(s->req.method, "GET", 3) != 0)
        return 0;
    const http_header_t *u = lg_headers_get(s, "upgrade");
    return u && lg_http_list_has(u->value, u->value_len, "websocket") && s->ri.connection.p &&
           lg_http_list_has(s->ri.connection.p, s->ri.connection.n, "upgrade");
}

/* Server, route, and what the route says: a return, an upstream, a split. */
static int route_phase(lg_req_t *s)
{
    if (lg_req_is_forward(s)) {
        s->route = NULL;        /* the forward proxy's: no routes */
        return LG_DECLINED;
    }
    int status = 0;
    s->route = lg_route_request(s, &status);
    if (status) {
        lg_respond_error(s, status);
        return LG_DONE;
    }
    if (s->route == NULL) {
        lg_respond_error(s, 404);
        return LG_DONE;
    }
    const lg_common_t *c = &s->route->common;
    s->keep_alive = s->keep_alive && c->keepalive_timeout > 0;
    if (c->client_max_body_size && s->ri.body == LG_BODY_LENGTH &&
        s->ri.length > c->client_max_body_size) {
        lg_error("client %s intended to send too large body: %lld bytes",
                 s->peer_text, (long long)s->ri.length);
        lg_respond_error(s, 413);
        return LG_DONE;
    }
    if (s->route->action == LG_ACTION_RETURN) {
        if (s->ri.body != LG_BODY_NONE)
            s->keep_alive = 0;  /* the body is not read: close after */
        const char *body = lg_vars_expand(s, s->route->body, LG_VARS_RAW, NULL);
        const char *location = lg_vars_expand(s, s->route->location, LG_VARS_RAW, NULL);
        if ((body == NULL && s->route->body) || (location == NULL && s->route->location)) {
            lg_req_abort(s, "out of memory expanding a body");
            return LG_DONE;
        }
        if (body)
            s->local_ctype = c->default_type;   /* nginx's default_type */
        lg_respond(s, s->route->status, body, location);
        return LG_DONE;
    }
    if (c->via && lg_headers_via_refuse(s))
        return LG_DONE;
    s->up = s->route->nsplits ? choose_split(s) : s->route->upstream;
    /* refused (websocket off): Upgrade stays hop-by-hop and is dropped, so
     * the upstream sees a plain GET and answers it as such, as behind an
     * nginx location without the Upgrade/Connection lines */
    if (c->websocket && wants_websocket(s))
        s->upgrade = "websocket";
    return LG_OK;
}

/* ---- the upstream attempt ---- */

static void log_upstream_error(lg_req_t *s, int err, const char *what)
{
    lg_log_errno(LG_LOG_ERROR, err,
                 "upstream \"%s\" server %s: %s, client: %s, request: \"%.*s %.*s\"",
                 s->up->name, s->uc ? lg_upstream_addr(s->uc) : "-", what,
                 s->peer_text, (int)s->req.method_len, s->req.method,
                 (int)s->req.target_len, s->req.target);
}

/* ---- interim responses (1xx) ---- */

/*
 * At most this many interim answers are passed on per request; more are
 * read and dropped, as all of them were before: an upstream cannot make a
 * client read an endless run of heads through us.
 */
#define INTERIM_MAX 16

/*
 * Write what is left of the pending interim head: 1 all out (or nothing
 * was pending), 0 the client does not take more now (want_w set), -1 the
 * write failed.  Until it is out, nothing else is written to the client
 * and the upstream's next head is not read (proxy_step).
 */
static int interim_flush(lg_req_t *s)
{
    while (s->interim && s->interim_off < s->interim_len) {
        ssize_t n = lg_end_send(s->cend, s->interim + s->interim_off,
                                s->interim_len - s->interim_off);
        if (n > 0) {
            s->interim_off += (size_t)n;
            continue;
        }
        if (n == LG_AGAIN)
            return 0;
        s->interim = NULL;
        return -1;
    }
    s->interim = NULL;
    return 1;
}

static int interim_send(lg_req_t *s, const char *p, size_t n)
{
    s->interim = p;
    s->interim_len = n;
    s->interim_off = 0;
    return interim_flush(s);
}

/*
 * An upstream's 1xx head (RFC 9110 15.2): passed to the client before the
 * final answer -- 102 Processing, 103 Early Hints with its Link fields,
 * and 100 Continue when the client asked for one and we have not said it
 * ourselves -- without its hop-by-hop and framing fields.  Never to an
 * HTTP/1.0 client (15.2: it cannot read one), never stored: the cache
 * sees only the final head.  1 passed or dropped, 0 waiting for the
 * client, -1 the write failed.
 */
static int interim_pass(lg_req_t *s, const http_response_t *r)
{
    if (s->req.version < 11 || s->interims >= INTERIM_MAX || s->conn->refresh)
        return 1;
    if (r->status == 100 && (!s->ri.expect_continue || s->continue_sent))
        return 1;
    lg_str_t conn = { NULL, 0 };
    size_t room = 32 + r->reason_len;
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (h->name_len == 10 && strncasecmp(h->name, "connection", 10) == 0 && conn.p == NULL) {
            conn.p = h->value;
            conn.n = h->value_len;
        }
        room += h->name_len + h->value_len + 4;
    }
    char *head = lg_arena_alloc(&s->arena, room);
    if (head == NULL)
        return 1;               /* an interim answer is a hint: lose it, not the request */
    size_t n = (size_t)snprintf(head, room, "HTTP/1.1 %03d %.*s\r\n", r->status,
                                (int)r->reason_len, r->reason);
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (lg_http_is_hop_by_hop(h, conn) ||
            (h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0))
            continue;
        memcpy(head + n, h->name, h->name_len);
        n += h->name_len;
        memcpy(head + n, ": ", 2);
        n += 2;
        memcpy(head + n, h->value, h->value_len);
        n += h->value_len;
        memcpy(head + n, "\r\n", 2);
        n += 2;
    }
    memcpy(head + n, "\r\n", 2);
    n += 2;
    s->interims++;
    if (r->status == 100)
        s->continue_sent = 1;
    return interim_send(s, head, n);
}

/*
 * Attach a connection to a server not tried yet.  The request head is kept
 * in the arena and only its send position is reset, so a retry costs no
 * rebuild.
 */
static int attach_upstream(lg_req_t *s, int counted)
{
    int err = 0;
    lg_uconn_t *uc = lg_upstream_get(s, s->up, &s->tried, &err);
    if (uc == NULL) {
        s->attach_err = err;
        return -1;
    }
    if (counted && s->ntries++ == 0)
        s->t_first_try = lg_w.loop.now;
    s->uc = uc;
    s->upstream_addr = lg_upstream_addr(uc);
    uc->owner = s;
    uc->e.io.cb = upstream_cb;
    uc->e.io.data = uc;
    uc->e.want_r = uc->e.want_w = 0;
    s->uend = &uc->e;
    s->t_upstream = lg_w.loop.now;
    if (uc->reused) {
        uc->e.w_ready = 1;
        connected(s);
    } else {
        uc->e.w_ready = uc->connected;
        uc->e.r_ready = 0;
        /* a TLS upstream still needs its handshake once TCP is up */
        if (uc->connected && !uc->up->tls)
            connected(s);
        else
            lg_req_set_stage(s, &connect_stage);
    }
    s->rsp_scanned = 0;
    if (s->reqp.buf)
        lg_pipe_rewind(&s->reqp);   /* the head (and a kept body) go out again */
    return 0;
}


/* The CONTENT phase: the route's upstream answers. */
static int content_phase(lg_req_t *s)
{
    if (s->up == NULL || lg_req_is_forward(s))
        return LG_DECLINED;
    start_upstream(s, NULL);
    return LG_DONE;
}

void lg_reverse_proxy_to(lg_req_t *s, lg_upstream_t *up)
{
    s->up = up;
    if (!s->ri.connect) {
        start_upstream(s, NULL);
        return;
    }
    lg_req_cleanup(s, cleanup, s);
    s->reqp.hdr = NULL;         /* a tunnel from the start: nothing to send first */
    s->reqp.hdr_len = 0;
    if (attach_upstream(s, 1) < 0) {
        lg_error("forward proxy: cannot connect to %s for client %s", s->up->name, s->peer_text);
        lg_respond_error(s, 502);
    }
}

void lg_reverse_proxy_via(lg_req_t *s, lg_upstream_t *up, lg_head_fn head_fn)
{
    s->up = up;
    start_upstream(s, head_fn);
}

/* "100 Continue" when the client waits for one before its body: we read
 * the body ourselves, so we are the one to say "go on". */
static void say_continue(lg_req_t *s)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!s->ri.expect_continue || s->ri.body == LG_BODY_NONE || s->continue_sent ||
        lg_buf_len(lg_req_in(s)) != 0)
        return;
    s->continue_sent = 1;
    if (interim_send(s, cont, sizeof(cont) - 1) < 0)
        s->keep_alive = 0;      /* the client went: its answer's write fails too */
}

/*
 * proxy_request_buffering: the whole body is read (the spool: memory up to
 * client_body_buffer_size, then an unlinked temporary file) before any
 * upstream is chosen, so a slow upload holds no upstream connection, and
 * it goes up with a Content-Length.  Not needed for a body that came whole
 * with the head, nor through a parent proxy (head_fn), nor for a tunnel.
 */
static int buffer_request(lg_req_t *s, lg_head_fn head_fn)
{
    const lg_common_t *c = lg_req_common(s);
    if (!c->proxy_request_buffering || head_fn || s->ri.connect || s->ri.body == LG_BODY_NONE ||
        s->reqp.kept || s->reqp.src_done)
        return 0;
    if (lg_pipe_set_spool(&s->reqp, (size_t)c->client_body_buffer_size, INT64_MAX,
                          lg_w.conf->proxy_temp_path, "request", 1) < 0)
        return 0;               /* no memory for it: streamed, as without the setting */
    say_continue(s);
    lg_req_set_stage(s, &body_stage);
    return 1;
}

static void body_step(lg_req_t *s)
{
    if (s->interim) {
        int rc = interim_flush(s);      /* the 100 Continue first */
        if (rc < 0) {
            lg_req_abort(s, "send() to client failed");
            return;
        }
        if (rc == 0)
            return;
    }
    lg_pipe_rc_t rc = lg_pipe_run(&s->reqp, s->cend, NULL);
    switch (rc) {
    case LG_PIPE_AGAIN:
        return;
    case LG_PIPE_ERR_LIMIT:
        lg_error("client %s intended to send too large chunked body: more than %lld bytes",
                 s->peer_text, (long long)lg_req_common(s)->client_max_body_size);
        s->keep_alive = 0;
        lg_respond_error(s, 413);
        return;
    case LG_PIPE_FULL:
        /* the temporary file cannot be had (logged): what is in memory goes
         * first, the rest streams behind it, never resent */
        lg_spool_unkeep(s->reqp.spool);
        s->reqp.kept = 0;
        go_upstream(s, NULL);
        return;
    case LG_PIPE_DONE:
        if (s->ri.body != LG_BODY_LENGTH) {
            /* chunked (or an HTTP/2 stream's DATA): its length is known now */
            s->ri.body = LG_BODY_LENGTH;
            s->ri.length = (int64_t)s->reqp.decoded;
            s->reqp.out_chunked = 0;
        }
        go_upstream(s, NULL);
        return;
    default:
        lg_info("client %s closed or sent a bad body while sending the request body",
                s->peer_text);
        if (s->reqp.src_eof) {
            lg_req_abort(s, "client body failed");
            return;
        }
        s->keep_alive = 0;
        lg_respond_error(s, 400);
        return;
    }
}

static lg_msec_t body_arm(lg_req_t *s, lg_tkind_t *kind)
{
    const lg_common_t *c = lg_req_common(s);
    *kind = s->interim ? LG_T_SEND : LG_T_BODY;
    return s->interim ? c->send_timeout : c->client_body_timeout;
}

static void body_timeout(lg_req_t *s, lg_tkind_t kind)
{
    if (kind == LG_T_SEND) {
        lg_req_abort(s, "client timed out receiving the response");
        return;
    }
    lg_info("client %s timed out sending the request body", s->peer_text);
    s->keep_alive = 0;
    lg_respond_error(s, 408);
}

static void start_upstream(lg_req_t *s, lg_head_fn head_fn)
{
    lg_buf_t *b = lg_req_in(s);
    lg_req_cleanup(s, cleanup, s);
    b->pos = b->start + s->head_len;
    /* a body of no announced length (chunked, or an HTTP/2 stream's DATA
     * without content-length) goes up chunked */
    lg_pipe_init(&s->reqp, b, b->pos, s->ri.body, s->ri.length,
                 s->ri.body == LG_BODY_CHUNKED || s->ri.body == LG_BODY_CLOSE);
    /* a chunked body has no announced length: count it as it comes */
    s->reqp.limit = (uint64_t)lg_req_common(s)->client_max_body_size;
    if (buffer_request(s, head_fn))
        return;                 /* body_step goes on once the body is in */
    go_upstream(s, head_fn);
}

/* The request head built, an upstream server chosen and connected to (or
 * the request queued for room under max_conns). */
static void go_upstream(lg_req_t *s, lg_head_fn head_fn)
{
    lg_req_request_body(s);     /* its filters (a gunzip) */
    size_t len = 0;
    const char *head = head_fn ? head_fn(s, &len) : lg_headers_upstream(s, &len);
    if (head == NULL) {
        lg_respond_error(s, 500);
        return;
    }
    s->reqp.hdr = head;
    s->reqp.hdr_len = len;
    if (attach_upstream(s, 1) < 0) {
        if (s->attach_err == EBUSY && lg_w.queued[s->up->index] < s->up->queue) {
            /* every server is at max_conns: wait for room, bounded */
            lg_w.queued[s->up->index]++;
            s->t_queued = lg_w.loop.now;
            lg_req_set_stage(s, &queued_stage);
            return;
        }
        if (s->attach_err == EBUSY) {
            lg_error("upstream \"%s\": every server is at max_conns, client %s", s->up->name,
                     s->peer_text);
            lg_respond_error(s, 503);
            return;
        }
        lg_error("no live upstreams in \"%s\" for client %s", s->up->name,
                 s->peer_text);
        s->upstream_cond = LG_COND_ERROR;
        if (lg_req_upstream_error(s, 502) == LG_DONE)
            return;             /* answered otherwise (a stale copy) */
        s->upstream_status = 0; /* no upstream answered */
        lg_respond_error(s, 502);
        return;
    }
    say_continue(s);
}

/* May this request go to another server after a failure of kind `cond`? */
static int may_retry(const lg_req_t *s, unsigned cond)
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
static void upstream_failed(lg_req_t *s, int status, unsigned cond, int err, const char *what)
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
    s->upstream_addr = NULL;
    s->uend = NULL;
    int careful = s->up->dyn || lg_req_is_forward(s);  /* a destination or a parent */
    if (stale && body_intact && careful && s->ri.method_idempotent) {
        /* the forward proxy's: once, on a new connection (the others the
         * server left idle are likely closed as well) */
        lg_upstream_flush(s->up, uc->server);
        s->tried &= ~(uc->server < 64 ? ((size_t)1 << uc->server) : 0);
        if (attach_upstream(s, 0) == 0)
            return;
    } else if (stale && body_intact && !careful) {
        size_t bit = uc->server < 64 ? ((size_t)1 << uc->server) : 0;
        s->tried &= ~bit;
        if (attach_upstream(s, 0) == 0)
            return;
    } else if (may_retry(s, cond) && attach_upstream(s, 1) == 0) {
        return;
    }
    if (s->interim) {
        /* half an interim head is out: no answer can follow it cleanly */
        lg_req_abort(s, "upstream failed while an interim response was being sent");
        return;
    }
    s->upstream_cond = cond;
    if (lg_req_upstream_error(s, status) == LG_DONE)
        return;                 /* answered otherwise (stale-if-error) */
    lg_respond_error(s, status);
}

static void connect_step(lg_req_t *s)
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
            lg_mx_upstream_error(uc, NULL);
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
        char why[256];
        int rc = lg_end_handshake(&uc->e, why, sizeof(why));
        if (rc == LG_AGAIN)
            return;
        if (rc == LG_ERROR) {
            const char *v = lg_tls_verify_error(uc->e.ssl);
            char what[400];
            snprintf(what, sizeof(what), "TLS handshake with upstream failed: %s", v ? v : why);
            upstream_failed(s, 502, LG_COND_ERROR, 0, what);
            return;
        }
        uc->tls_done = 1;
    }
    connected(s);
}

/* The 101's Upgrade names the protocol the request asked for. */
static int switches_to(const http_response_t *r, const char *proto)
{
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (h->name_len == 7 && strncasecmp(h->name, "upgrade", 7) == 0 &&
            lg_http_list_has(h->value, h->value_len, proto))
            return 1;
    }
    return 0;
}

/*
 * The upstream accepted the upgrade with the head r (hlen bytes at
 * uc->in->pos): the 101 goes to the client as the tunnel's first bytes,
 * and from here on both connections carry the new protocol.  The RESPONSE
 * and BODY phases do not run: there is no response body to cache, code or
 * time, as for a CONNECT.  The upstream connection ends with the tunnel
 * (upstream_keep 0, and log_phase never pools a tunnel's).
 */
static void switch_protocols(lg_req_t *s, const http_response_t *r, size_t hlen)
{
    lg_uconn_t *uc = s->uc;
    lg_rsp_info_t ri;
    if (lg_http_analyze_response(r, 0, &ri) < 0) {
        s->rsp_scanned = 1;
        upstream_failed(s, 502, LG_COND_INVALID_HEADER, 0, "upstream sent invalid response framing");
        return;
    }
    size_t hl = 0;
    const char *head = lg_headers_client(s, r, &ri, 0, LG_XFORM_NONE, 0, &hl);
    if (head == NULL) {
        upstream_failed(s, 502, LG_COND_ERROR, ENOMEM, "out of memory");
        return;
    }
    uc->in->pos += hlen;        /* what follows the 101 is the new protocol's */
    s->upstream_time = lg_w.loop.now - s->t_upstream;
    lg_upstream_result(uc, 1, s->upstream_time);
    s->upstream_keep = 0;
    s->rsp_head_done = 1;
    const lg_common_t *c = lg_req_common(s);
    lg_tunnel_start(s, 101, head, hl, uc->in, c->websocket_idle_timeout);
}

/*
 * A CONNECT that went up as a request (to a parent proxy, through
 * lg_reverse_proxy_via) got its 2xx: from here the connection is the
 * client's tunnel, as a direct CONNECT's is once connected.  Bytes after
 * the 2xx head are the destination's first.
 */
static void connect_opened(lg_req_t *s, const http_response_t *r, size_t hlen)
{
    lg_uconn_t *uc = s->uc;
    uc->in->pos += hlen;
    s->upstream_time = lg_w.loop.now - s->t_upstream;
    s->upstream_status = r->status;
    lg_upstream_result(uc, 1, s->upstream_time);
    s->upstream_keep = 0;
    s->rsp_head_done = 1;
    lg_msec_t idle = s->server && s->server->forward ? s->server->forward->tunnel_idle_timeout
                                                     : CONNECT_IDLE_DEFAULT;
    lg_tunnel_start(s, 200, s->conn->fe->tunnel_ok, s->conn->fe->tunnel_ok_len, uc->in, idle);
}

/*
 * proxy_buffering: the response body goes through a spool, so the upstream
 * is read as fast as it sends whatever the client's pace, and its
 * connection goes back once the body is in (proxy_step).  As in nginx, the
 * upstream may say no for one answer with "X-Accel-Buffering: no" (a
 * stream of events that must not wait in a file).
 */
static int wants_buffering(const lg_req_t *s, const http_response_t *r, const lg_rsp_info_t *ri)
{
    if (!lg_req_common(s)->proxy_buffering || ri->body == LG_BODY_NONE ||
        (ri->body == LG_BODY_LENGTH && ri->length == 0))
        return 0;
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (h->name_len == 17 && strncasecmp(h->name, "x-accel-buffering", 17) == 0)
            return !(h->value_len == 2 && strncasecmp(h->value, "no", 2) == 0);
    }
    return 1;
}

/* Read and parse the upstream's response head.  1: done, 0: waiting/failed. */
static int read_response_head(lg_req_t *s)
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
    /* one parse room per request, however many reads the head takes */
    if (s->rsp_headers == NULL &&
        (s->rsp_headers = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS)) == NULL) {
        upstream_failed(s, 502, LG_COND_ERROR, ENOMEM, "out of memory");
        return 0;
    }
    for (;;) {
        if (lg_buf_len(b)) {
            http_response_t r = { .headers = s->rsp_headers };
            ssize_t rc = http_parse_response(b->pos, lg_buf_len(b), &r, &ul, &s->rsp_scanned);
            if (rc > 0) {
                if (s->ri.connect && r.status >= 200 && r.status < 300) {
                    /* a CONNECT sent on to a parent proxy, which opened it */
                    s->rsp_scanned = 1;
                    connect_opened(s, &r, (size_t)rc);
                    return 0;
                }
                if (r.status == 101) {
                    /* only the switch we asked for, and only once the
                     * whole request head is out: the tunnel starts right
                     * after what was sent */
                    s->rsp_scanned = 1;
                    if (s->upgrade && s->reqp.done && switches_to(&r, s->upgrade))
                        switch_protocols(s, &r, (size_t)rc);
                    else
                        upstream_failed(s, 502, LG_COND_INVALID_HEADER, 0,
                                        "upstream switched protocols without being asked to");
                    return 0;
                }
                if (r.status < 200) {
                    /* 1xx: interim, passed on (or dropped) before the final head */
                    int pass = interim_pass(s, &r);
                    b->pos += rc;
                    s->rsp_scanned = 0;
                    if (pass < 0) {
                        lg_req_abort(s, "send() to client failed");
                        return 0;
                    }
                    if (pass == 0)
                        return 0;       /* proxy_step writes the rest first */
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
                    s->upstream_addr = NULL;
                    if (attach_upstream(s, 1) == 0) {
                        lg_info("upstream \"%s\" server %s answered %d: trying the next server",
                                s->up->name, lg_upstream_addr(old), r.status);
                        lg_upstream_release(old, 0);
                        return 0;
                    }
                    s->uc = old;
                    s->upstream_addr = lg_upstream_addr(old);
                }
                const lg_common_t *cc = lg_req_common(s);
                if (cc->intercept_errors && r.status >= 300 && r.status != 304 && !s->err_route &&
                    lg_errpage_find(cc->error_pages, r.status)) {
                    /* nginx's proxy_intercept_errors: the configured page, not the
                     * upstream's body (which stays unread: not reused) */
                    s->upstream_status = r.status;
                    s->upstream_time = lg_w.loop.now - s->t_upstream;
                    lg_upstream_result(uc, 1, s->upstream_time);
                    if (!s->reqp.done)
                        s->keep_alive = 0;
                    detach(s);
                    lg_respond(s, r.status, NULL, NULL);
                    return 0;
                }
                s->rsp = &r;
                s->rsp_ri = &ri;
                s->rsp_raw = b->pos;
                s->rsp_raw_len = (size_t)rc;
                s->upstream_status = r.status;
                if (lg_req_response_head(s) == LG_DONE) {
                    /* answered otherwise (the cache: revalidated, or stale on error) */
                    s->rsp = NULL;
                    s->rsp_ri = NULL;
                    detach(s);
                    s->upstream_status = r.status;      /* the cache's answer cleared it */
                    return 0;
                }
                b->pos += rc;
                s->upstream_time = lg_w.loop.now - s->t_upstream;
                lg_upstream_result(uc, 1, s->upstream_time);
                s->status = lg_req_status(s, r.status);     /* as the client's head says */
                s->upstream_keep = ri.keep_alive;
                lg_pipe_init(&s->rspp, b, b->start, ri.body, ri.length, 0);
                s->rspp.splice_ok = 1;  /* the pipe checks the rest (pipe.h) */
                if (ri.body == LG_BODY_CHUNKED) {
                    /* its trailer section goes on: to an HTTP/2 client as
                     * r->trailers (gRPC's grpc-status), in the last chunk
                     * to an HTTP/1.1 one */
                    char *room = lg_arena_alloc(&s->arena, 2 * HTTP_CHUNKED_MAX_TRAILER + 16);
                    if (room)
                        lg_pipe_keep_trailers(&s->rspp, room, HTTP_CHUNKED_MAX_TRAILER);
                }
                s->rspp.rate = (uint64_t)lg_req_common(s)->limit_rate;     /* limit_rate */
                s->rspp.rate_after = (uint64_t)lg_req_common(s)->limit_rate_after;
                s->rspp.rate_t0 = lg_w.loop.now;
                s->rspp.rate_fn = s->rate_fn;           /* limit_rate_zone */
                s->rspp.rate_arg = s->rate_arg;
                if (wants_buffering(s, &r, &ri))
                    lg_pipe_set_spool(&s->rspp, (size_t)lg_req_common(s)->proxy_buffers_size,
                                      lg_req_common(s)->proxy_max_temp_file_size,
                                      lg_w.conf->proxy_temp_path, "response", 0);
                lg_req_response_body(s);        /* taps and filters: r->xform may change */
                lg_xform_t xf = (lg_xform_t)s->xform;
                /* a transformed body has a length nobody knows yet */
                int unknown = ri.body == LG_BODY_CHUNKED || ri.body == LG_BODY_CLOSE ||
                              xf != LG_XFORM_NONE;
                /* HTTP/2 frames the body itself: never chunked there */
                int out_chunked = unknown && s->req.version == 11;
                if (unknown && !out_chunked)
                    s->keep_alive = 0;  /* HTTP/1.0 client: the close delimits */
                if (!s->reqp.done && !uc->h2) {
                    /* answered before the whole body was sent (e.g. 413):
                     * stop sending it and close both sides afterwards.  Not
                     * on an HTTP/2 stream: there the two directions are
                     * independent (gRPC streams both ways at once) */
                    s->abandoned = 1;
                    s->keep_alive = 0;
                }
                size_t hl = 0;
                const char *head = lg_headers_client(s, &r, &ri, out_chunked, xf, s->vary_ae, &hl);
                s->rsp = NULL;          /* they were on this stack frame */
                s->rsp_ri = NULL;
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
        if (b->last == b->end && b->pos > b->start) {
            /* interim heads read and passed: their room is the next head's */
            size_t left = lg_buf_len(b);
            memmove(b->start, b->pos, left);
            b->pos = b->start;
            b->last = b->start + left;
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
            s->upstream_bytes_in += (uint64_t)n;   /* the body's first bytes too */
            lg_end_short_read(&uc->e, (size_t)n, room);
            continue;
        }
        if (n == LG_AGAIN)
            return 0;
        upstream_failed(s, 502, LG_COND_ERROR, n == LG_ERROR ? errno : 0,
                        n == 0 ? "upstream prematurely closed connection while reading response header"
                               : "recv() failed while reading response header");
        return 0;
    }
}


/*
 * The client closed its end once its request was sent: EOF seen, nothing
 * pipelined behind it (a peek finds no byte, only the end, as nginx
 * checks a broken connection).  A TLS client's close_notify is a byte:
 * such a client is not taken for gone, its next write failing instead.
 */
static int client_gone(lg_req_t *s)
{
    lg_conn_t *c = s->conn;
    if (s->cend->ops)
        return 0;               /* an HTTP/2 client resets the stream: the front end knows */
    if (!c->e.rd_hup || !s->reqp.done || (c->in && c->in->last > c->in->pos))
        return 0;
    char b;
    ssize_t n = recv(c->e.io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void response_body(lg_req_t *s, lg_end_t *src);

static void proxy_step(lg_req_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (uc == NULL && s->rsp_head_done) {
        response_body(s, NULL);         /* from the spool alone */
        return;
    }
    LG_CHECK_UCONN(uc);
    if (!s->reqp.done && !s->abandoned) {
        lg_pipe_rc_t rc = lg_pipe_run(&s->reqp, s->cend, &uc->e);
        if (rc == LG_PIPE_ERR_SRC && s->body_gunzip && s->reqp.codec &&
            s->reqp.codec->err == LG_CODEC_EBOMB && !s->rspp.wire_bytes) {
            lg_error("client %s sent a gzip body over gunzip_request_max once decompressed",
                     s->peer_text);
            s->keep_alive = 0;
            detach(s);
            lg_respond_error(s, 413);
            return;
        }
        if (rc == LG_PIPE_ERR_SRC) {
            lg_info("client %s closed or sent a bad body while sending the request body",
                    s->peer_text);
            if (s->reqp.src_eof || s->rspp.wire_bytes) {
                lg_req_abort(s, "client body failed");
            } else {
                s->keep_alive = 0;
                detach(s);
                lg_respond_error(s, 400);
            }
            return;
        }
        if (rc == LG_PIPE_ERR_LIMIT) {
            lg_error("client %s intended to send too large chunked body: more than %lld bytes",
                     s->peer_text, (long long)lg_req_common(s)->client_max_body_size);
            detach(s);
            if (s->rspp.wire_bytes) {
                lg_req_abort(s, "body too large");
            } else {
                s->keep_alive = 0;
                lg_respond_error(s, 413);
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
    if (s->stage != &proxy_stage)
        return;
    if (!s->rsp_head_done && client_gone(s)) {
        /* as nginx without proxy_ignore_client_abort: nobody will read the
         * answer, so what the request holds -- an upstream connection, a
         * limit_conn slot -- goes now, not when the upstream answers */
        lg_info("client %s closed the connection while waiting for the upstream", s->peer_text);
        lg_req_abort(s, "client closed while waiting for the upstream");
        return;
    }
    if (s->interim && !s->rsp_head_done) {
        /* an interim head still going out: the final one waits behind it */
        int rc = interim_flush(s);
        if (rc < 0) {
            lg_req_abort(s, "send() to client failed");
            return;
        }
        if (rc == 0)
            return;
    }
    if (!s->rsp_head_done && !read_response_head(s))
        return;
    response_body(s, &uc->e);
}

/*
 * The response body to the client, from the upstream (src) or, once all of
 * it is in the spool and the upstream connection went back, from the
 * spool alone (src NULL).
 */
static void response_body(lg_req_t *s, lg_end_t *src)
{
    lg_pipe_rc_t rc = lg_pipe_run(&s->rspp, src, s->cend);
    if (rc == LG_PIPE_AGAIN && src && s->rspp.src_done && (s->reqp.done || s->abandoned) &&
        lg_pipe_detach_src(&s->rspp) == 0) {
        /* proxy_buffering: the whole body is in; the client drains the
         * spool without holding the upstream connection */
        lg_upstream_release(s->uc, s->upstream_keep && s->reqp.done && !s->abandoned);
        s->uc = NULL;
        s->uend = NULL;
        return;
    }
    if (rc == LG_PIPE_AGAIN)
        return;
    if (rc == LG_PIPE_ERR_SRC) {
        log_upstream_error(s, errno, "upstream prematurely closed connection while reading response body");
        lg_req_abort(s, "upstream body failed");
        return;
    }
    if (rc == LG_PIPE_ERR_DST) {
        lg_req_abort(s, "send() to client failed");
        return;
    }
    if (!s->reqp.done) {
        /* an HTTP/2 upstream answered before it took the whole body: the
         * rest of it is never read, so the client's connection cannot
         * carry another request */
        s->abandoned = 1;
        s->keep_alive = 0;
    }
    size_t tn = 0;
    const char *tr = lg_pipe_trailers(&s->rspp, &tn);
    if (tr && (s->trailers = lg_arena_alloc(&s->arena, tn + 1)) != NULL) {
        memcpy((char *)s->trailers, tr, tn);
        ((char *)s->trailers)[tn] = 0;
    }
    lg_req_finish(s);
}


/* ---- the stages ---- */

static lg_msec_t connect_arm(lg_req_t *s, lg_tkind_t *kind)
{
    *kind = LG_T_UP_CONNECT;
    /* the upstream's own (HAProxy's timeout connect), else the route's */
    return s->up && s->up->connect_timeout ? s->up->connect_timeout
                                           : lg_req_common(s)->proxy_connect_timeout;
}

/* The shortest of the timeouts for what the proxy stage waits on. */
static lg_msec_t proxy_arm(lg_req_t *s, lg_tkind_t *kind)
{
    const lg_common_t *c = lg_req_common(s);
    const lg_end_t *ce = s->cend, *ue = s->uend;
    lg_msec_t t = -1;
    lg_msec_t rd = s->up && s->up->read_timeout ? s->up->read_timeout : c->proxy_read_timeout;
    *kind = LG_T_UP_READ;
#define CONSIDER(cond, val, k) \
    do { if ((cond) && (t < 0 || (val) < t)) { t = (val); *kind = (k); } } while (0)
    CONSIDER(ce->want_r, c->client_body_timeout, LG_T_BODY);
    CONSIDER(ce->want_w, c->send_timeout, LG_T_SEND);
    CONSIDER(ue && ue->want_w, c->proxy_send_timeout, LG_T_UP_SEND);
    CONSIDER(ue && ue->want_r, rd, LG_T_UP_READ);
    CONSIDER(t < 0, rd, LG_T_UP_READ);
    /* limit_rate held the body back: nothing else is awaited meanwhile */
    CONSIDER(s->rspp.rate_wait, s->rspp.rate_wait > lg_w.loop.now ? s->rspp.rate_wait - lg_w.loop.now : 0,
             LG_T_RATE);
#undef CONSIDER
    return t;
}

static lg_msec_t queued_arm(lg_req_t *s, lg_tkind_t *kind)
{
    (void)s;
    *kind = LG_T_QUEUE;
    return 10;                  /* look for room again shortly */
}

static void queued_step(lg_req_t *s)
{
    (void)s;                    /* the timer looks for room */
}

static void upstream_timeout(lg_req_t *s, lg_tkind_t kind)
{
    switch (kind) {
    case LG_T_SEND:
        lg_req_abort(s, "client timed out receiving the response");
        return;
    case LG_T_BODY:
        lg_info("client %s timed out sending the request body", s->peer_text);
        if (s->rspp.wire_bytes) {
            lg_req_abort(s, "client body timeout");
            return;
        }
        s->keep_alive = 0;
        detach(s);
        lg_respond_error(s, 408);
        return;
    case LG_T_UP_CONNECT:
        lg_mx_upstream_error(s->uc, "connect");
        upstream_failed(s, 504, LG_COND_TIMEOUT, ETIMEDOUT, "upstream timed out while connecting");
        return;
    case LG_T_UP_SEND:
    case LG_T_UP_READ:
        if (s->uc == NULL) {    /* (not awaited once the upstream went: a backstop) */
            lg_req_abort(s, "timeout while sending the response");
            return;
        }
        lg_mx_upstream_error(s->uc, kind == LG_T_UP_SEND ? "send" : "read");
        if (s->rsp_head_done) {
            log_upstream_error(s, ETIMEDOUT, "upstream timed out while reading response body");
            lg_req_abort(s, "upstream timeout");
            return;
        }
        upstream_failed(s, 504, LG_COND_TIMEOUT, ETIMEDOUT, kind == LG_T_UP_SEND
                        ? "upstream timed out while sending request"
                        : "upstream timed out while reading response header");
        return;
    case LG_T_RATE:
        s->rspp.rate_wait = 0;  /* the driver runs the step again: the pipe goes on */
        return;
    case LG_T_QUEUE:
        if (attach_upstream(s, 1) == 0) {
            lg_w.queued[s->up->index]--;
            return;
        }
        if (lg_w.loop.now - s->t_queued < s->up->queue_timeout)
            return;             /* look again shortly */
        lg_w.queued[s->up->index]--;
        s->stage = NULL;
        lg_error("upstream \"%s\": no room under max_conns within queue_timeout, client %s",
                 s->up->name, s->peer_text);
        s->keep_alive = 0;
        lg_respond_error(s, 503);
        return;
    default:
        LG_BUG_ON(1);           /* not a timer of these stages */
    }
}

static const lg_stage_t connect_stage = {
    .name = "connecting to upstream", .step = connect_step, .arm = connect_arm,
    .timeout = upstream_timeout,
};
static const lg_stage_t proxy_stage = {
    .name = "proxying", .step = proxy_step, .arm = proxy_arm, .timeout = upstream_timeout,
};
static const lg_stage_t body_stage = {
    .name = "reading the request body", .step = body_step, .arm = body_arm,
    .timeout = body_timeout,
};
static const lg_stage_t queued_stage = {
    .name = "queued for an upstream", .step = queued_step, .arm = queued_arm,
    .timeout = upstream_timeout,
};

/* The LOG phase: the connection goes back to the pool if it may be
 * reused.  $upstream_addr stays: it names the configuration's text. */
static int log_phase(lg_req_t *s)
{
    if (s->uc) {
        int reusable = s->upstream_keep && s->reqp.done && s->rspp.done && !s->abandoned &&
                       s->tunnel == NULL;       /* it spoke another protocol: never pooled */
        lg_upstream_release(s->uc, reusable);
        s->uc = NULL;
        s->uend = NULL;
    }
    return LG_OK;
}

const lg_feature_t lg_feature_reverse = {
    .name = "reverse proxy",
    .handlers = {
        { LG_PH_ROUTE, route_phase },
        { LG_PH_CONTENT, content_phase },
        { LG_PH_LOG, log_phase },
    },
};

/*
 * The HTTP/1.1 front end: reads request heads from a connection, makes one
 * request at a time from them, hands each to the pipeline, and when it is
 * over keeps the connection for the next (pipelined bytes moved to the
 * front of the buffer) or closes it.
 *
 *   idle (no request, no buffer) --first byte--> head being read
 *        ^                                            |
 *        | keep-alive                         head complete: phases, stage
 *        +------------- done <-------------------------+
 *
 * A request comes into existence at its head's first byte and goes when it
 * ends, so an idle keep-alive connection holds neither a request nor a
 * buffer.
 */
#include "pipeline/request.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "net/buf.h"

#define DRAIN_GRACE_MS 1000

static const http_limits_t limits = {
    .max_line = LG_MAX_REQUEST_LINE,
    .max_head = LG_BUF_SIZE / 2,
    .max_headers = LG_MAX_HEADERS,
};


/* No request on it, and no byte of one. */
static int idle(const lg_conn_t *c)
{
    return c->req == NULL && (c->in == NULL || lg_buf_len(c->in) == 0);
}

/* An invalid head: nothing in it is trustworthy, log it as such. */
static void bad_head(lg_req_t *r, int st)
{
    r->keep_alive = 0;
    lg_info("client %s sent an invalid request head (%d)", r->peer_text, st);
    r->req.method = NULL;
    r->req.num_headers = 0;
    r->server = r->conn->bind->default_server;
    lg_respond_error(r, st);
}

/*
 * Until its head is complete a request is only bytes: they are parsed into
 * this worker-wide scratch room (the parser does not allocate), and the
 * request object with its arena is made when the head is whole -- so a
 * client trickling a head holds its bytes and nothing else.
 */
static http_header_t scratch_headers[LG_MAX_HEADERS];

/* The request for a head whose bytes are in c->in: made now. */
static lg_req_t *make_request(lg_conn_t *c, const http_request_t *head)
{
    lg_req_t *r = lg_req_new(c);
    if (r == NULL)
        return NULL;
    r->t_start = c->t_start;
    size_t n = head->num_headers ? head->num_headers : 1;
    r->req = *head;
    r->req.headers = lg_arena_alloc(&r->arena, sizeof(http_header_t) * n);
    if (r->req.headers == NULL) {
        lg_req_free(r);
        return NULL;
    }
    memcpy(r->req.headers, head->headers, sizeof(http_header_t) * head->num_headers);
    return r;
}

/*
 * A client that stopped in the middle of a head keeps only its bytes: the
 * 32 KiB buffer goes back for a small one while it waits, and comes back
 * before the next read (slowloris costs a kilobyte, not 32).
 */
static void shrink_while_waiting(lg_conn_t *c)
{
    lg_buf_t *b = c->in;
    size_t n = lg_buf_len(b);
    if (lg_buf_is_small(b) || n > LG_BUF_SMALL || b->pos != b->start)
        return;
    lg_buf_t *s = lg_buf_get_small();
    if (s == NULL)
        return;
    memcpy(s->start, b->start, n);
    s->last = s->start + n;
    lg_buf_put(b);
    c->in = s;
}

/* Returns 1 with a complete head in c->req, 0 when waiting or closed. */
static int read_head(lg_conn_t *c)
{
    for (;;) {
        if (c->in == NULL) {
            if (!c->e.r_ready) {
                c->e.want_r = 1;
                return 0;
            }
            c->in = lg_buf_get();
            if (c->in == NULL) {
                lg_conn_close(c, "out of memory");
                return 0;
            }
        }
        lg_buf_t *b = c->in;
        size_t have = lg_buf_len(b);
        /* HTTP/2 by prior knowledge (h2c) where the listener speaks it: the
         * preface's first line is no HTTP/1.1 request; the rest is checked
         * by the HTTP/2 front end */
        if (have >= 16 && c->requests == 0 && c->bind->http2 &&
            memcmp(b->pos, "PRI * HTTP/2.0\r\n", 16) == 0) {
            c->scanned = 0;
            lg_conn_switch(c, LG_PROTO_HTTP2);
            return 0;
        }
        if (have) {
            lg_conn_set_idle(c, 0);
            http_request_t head = { .headers = scratch_headers };
            ssize_t rc = http_parse_request(b->pos, have, &head, &limits, &c->scanned);
            if (rc > 0) {
                c->scanned = 0;
                lg_req_t *r = make_request(c, &head);
                if (r == NULL) {
                    lg_conn_close(c, "out of memory");
                    return 0;
                }
                r->head_len = (size_t)rc;
                r->bytes_in = (uint64_t)rc;
                return 1;
            }
            if (rc != HTTP_AGAIN) {
                c->scanned = 0;
                lg_req_t *r = make_request(c, &(http_request_t){ .headers = scratch_headers });
                if (r == NULL) {
                    lg_conn_close(c, "out of memory");
                    return 0;
                }
                bad_head(r, rc == HTTP_URI_TOO_LONG ? 414 : rc == HTTP_HEAD_TOO_LARGE ? 431 :
                            rc == HTTP_BAD_VERSION ? 505 : 400);
                return 0;
            }
        }
        if (b->last == b->end && !lg_buf_is_small(b)) {
            /* cannot happen: the parser gives up at max_head < buffer size */
            lg_req_t *r = make_request(c, &(http_request_t){ .headers = scratch_headers });
            if (r == NULL)
                lg_conn_close(c, "out of memory");
            else
                bad_head(r, 431);
            return 0;
        }
        if (!c->e.r_ready) {
            c->e.want_r = 1;
            if (lg_buf_len(b) == 0) {
                lg_buf_put(b);  /* idle: hold no buffer */
                c->in = NULL;
            } else {
                shrink_while_waiting(c);
            }
            return 0;
        }
        if (lg_buf_is_small(b)) {
            if (lg_buf_grow(&c->in) < 0) {
                lg_conn_close(c, "out of memory");
                return 0;
            }
            b = c->in;
        }
        size_t room = (size_t)(b->end - b->last);
        ssize_t n = lg_end_recv(&c->e, b->last, room);
        if (n > 0) {
            if (lg_buf_len(b) == 0)
                c->t_start = lg_w.loop.now;
            b->last += n;
            lg_end_short_read(&c->e, (size_t)n, room);
            continue;
        }
        if (n == 0) {
            lg_conn_close(c, lg_buf_len(b) ? "client closed mid-request" : "client closed");
            return 0;
        }
        if (n == LG_AGAIN)
            continue;           /* the check above puts the idle buffer back */
        lg_conn_close(c, "recv() from client failed");
        return 0;
    }
}

/*
 * A request inside an intercepted tunnel (c->inspect) is one for
 * https://authority/path, whatever its Host says: the destination is the
 * name the tunnel was judged and intercepted by.  It goes through the
 * forward proxy's server as an absolute-form request would, so its rules,
 * URL filters, cache, limits and log see the https:// URL.  Only origin
 * form: a tunnel inside the tunnel, or another destination, is a 400.
 */
static int inspected(lg_conn_t *c, lg_req_t *r)
{
    const lg_inspect_t *in = c->inspect;
    r->server = in->server;
    if (r->ri.connect || r->ri.absolute_form)
        return 400;
    char *t = lg_arena_printf(&r->arena, "https://%s%.*s", in->authority, (int)r->ri.uri.n,
                              r->ri.uri.p);
    if (t == NULL)
        return 500;
    r->req.target = t;
    r->req.target_len = strlen(t);
    r->ri.host = (lg_str_t){ in->host, in->host_len };
    r->ri.authority = (lg_str_t){ in->authority, in->authority_len };
    r->ri.port = (int)in->port;
    r->ri.absolute_form = 1;
    r->ri.scheme = LG_SCHEME_HTTP;
    return 0;
}

/* The head is complete: what HTTP/1.1 itself says about it, then the phases. */
static void begin(lg_conn_t *c, lg_req_t *r)
{
    int st = lg_http_analyze_request(&r->req, &r->ri);
    r->server = lg_route_server(c->bind, r->ri.host);
    if (c->inspect && st == 0)
        st = inspected(c, r);
    const lg_common_t *sc = &r->server->common;
    r->keep_alive = !st && r->ri.keep_alive && sc->keepalive_timeout > 0 &&
                    c->requests + 1 < (unsigned)sc->keepalive_requests && !lg_w.quitting;
    if (r->ri.connect)
        r->keep_alive = 0;      /* the connection becomes the tunnel */
    lg_req_start(r, st);
}

static void h1_start(lg_conn_t *c)
{
    (void)c;
}

static void h1_step(lg_conn_t *c)
{
    for (int round = 0; round < 64 && c->state == LG_C_FRONT; round++) {
        lg_req_t *r = c->req;
        if (r == NULL) {
            if (!read_head(c))
                return;
            begin(c, c->req);
            continue;
        }
        if (r->stage == NULL)
            return;             /* suspended in a phase: its handler resumes it */
        unsigned done = c->requests;
        const lg_stage_t *st = r->stage;
        c->rerun = 0;
        st->step(r);
        if (c->state != LG_C_FRONT)
            return;
        if (c->requests != done)
            continue;           /* finished: a pipelined head may be waiting */
        if (r->stage == st && !c->rerun)
            return;             /* waiting for an event */
    }
}

static void h1_arm(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    lg_msec_t t;
    if (r && r->stage) {
        t = r->stage->arm(r, &r->tkind);
    } else if (r && r->phase != LG_PH_NONE) {
        return;                 /* suspended without a stage: nothing to count */
    } else {
        const lg_common_t *sc = &c->bind->default_server->common;
        if (lg_w.quitting && idle(c)) {
            lg_msec_t left = c->t_idle + DRAIN_GRACE_MS - lg_w.loop.now;
            t = left > 0 ? left : 0;
        } else if ((c->in && lg_buf_len(c->in)) || c->requests == 0) {
            /* the whole head must arrive within client_header_timeout of its
             * first byte: a client trickling a byte at a time is cut off */
            lg_msec_t left = c->t_start + sc->client_header_timeout - lg_w.loop.now;
            t = left > 0 ? left : 0;
        } else {
            t = sc->keepalive_timeout;
        }
    }
    lg_timer_set(&lg_w.loop, &c->timer, t);
}

static void h1_timeout(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    if (r && r->stage) {
        r->stage->timeout(r, r->tkind);
        return;
    }
    if (lg_w.quitting && idle(c))
        lg_conn_close(c, "shutting down");
    else if ((c->in && lg_buf_len(c->in)) || c->requests == 0)
        lg_conn_close(c, "client timed out sending the request head");
    else
        lg_conn_close(c, "keep-alive timeout");
}

/*
 * Graceful stop (reload, upgrade, QUIT).  A keep-alive client may have
 * sent its next request already, or be about to, so a connection is not
 * closed under it: an answer not yet begun says Connection: close; one
 * already begun with keep-alive leaves the connection open for one more
 * request, which is answered with close (h1_done, begin).  A connection
 * that has been idle for DRAIN_GRACE_MS is closed: no request is coming
 * that its client has not had time to see refused by a new connection.
 */
static void h1_drain(lg_conn_t *c)
{
    lg_req_t *r = c->req;
    if (r && !r->rsp_head_done && r->local == NULL)
        r->keep_alive = 0;
    if (idle(c) && lg_w.loop.now - c->t_idle >= DRAIN_GRACE_MS) {
        lg_conn_close(c, "shutting down");
        return;
    }
    lg_conn_run(c);             /* the timer now counts the grace */
}

static void h1_done(lg_conn_t *c, lg_req_t *r)
{
    c->requests++;
    c->t_idle = lg_w.loop.now;
    /* while draining, r->keep_alive is still 1 only if the client was told
     * so: it may send one more request, which will be told to close */
    int keep = r->keep_alive;
    lg_buf_t *b = c->in;
    char *next = b ? (r->reqp.buf ? r->reqp.dec : b->start + r->head_len) : NULL;
    lg_req_free(r);
    if (!keep) {
        lg_conn_linger(c);
        return;
    }
    /* keep-alive: the bytes after this request (pipelining) go to the front */
    if (b) {
        size_t rest = (size_t)(b->last - next);
        if (rest) {
            memmove(b->start, next, rest);
            b->pos = b->start;
            b->last = b->start + rest;
            c->t_start = lg_w.loop.now;
        } else {
            lg_buf_put(b);
            c->in = NULL;
        }
    }
    if (c->in == NULL)
        lg_conn_set_idle(c, 1);     /* waiting for its next request */
}

static const lg_frontend_t h1_frontend = {
    .name = "HTTP/1.1",
    .start = h1_start,
    .step = h1_step,
    .arm = h1_arm,
    .timeout = h1_timeout,
    .drain = h1_drain,
    .done = h1_done,
    .error = NULL,
    .tunnel_ok = "HTTP/1.1 200 Connection established\r\n\r\n",
    .tunnel_ok_len = sizeof("HTTP/1.1 200 Connection established\r\n\r\n") - 1,
};

void lg_h1_register(void)
{
    lg_conn_frontend_register(LG_PROTO_HTTP1, &h1_frontend);
}

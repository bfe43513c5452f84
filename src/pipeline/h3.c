/*
 * The HTTP/3 front end (RFC 9114), on libnghttp3 over net/quic.c: one
 * nghttp3 session per QUIC connection, one request per bidirectional
 * stream, handed to the same phases and stages as HTTP/1.1 and HTTP/2
 * requests.
 *
 * As in h2.c, a stream poses as the request's client end (a virtual
 * lg_end_t): recv gives the DATA the client sent (QUIC flow control is
 * the backpressure: the stream's window opens as the request reads),
 * writev takes the HTTP/1.1-shaped response the stages write, turns its
 * head into a HEADERS frame and queues the body.  Unlike nghttp2, nghttp3
 * does not copy the body: what it was given must stay until the client
 * acknowledged it, so the body waits in a chain of buffers freed as ACKs
 * come (at most OUT_BUFS of them a stream: the request writes no faster
 * than the client takes it).
 *
 * The QUIC connection is an lg_conn_t without a descriptor (c->e.io.fd is
 * -1): requests, logs and metrics find the client's address and listener
 * there as for TCP.  Packets drive it through net/quic.c; the requests
 * made ready by a batch of packets (or by their upstreams' events) run in
 * settle(), before what they wrote is packed into the reply packets.
 */
#include "pipeline/mux.h"

#ifdef LG_HAVE_HTTP3   /* the whole file: configure found ngtcp2, nghttp3, GnuTLS */

#include <errno.h>
#include <nghttp3/nghttp3.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/buf.h"
#include "net/quic.h"
#include "pipeline/h3.h"

#define OUT_BUFS 4                      /* body buffers a stream may have unacknowledged */
#define STREAM_IN LG_H3_STREAM_WINDOW   /* request body bytes held for the request */

typedef struct h3s h3s_t;

typedef enum h3_out {
    OUT_HEAD = 0,               /* waiting for the response head */
    OUT_BODY = 1,               /* head submitted: bytes are DATA */
    OUT_NONE = 2,               /* a bodyless answer: bytes are dropped */
} h3_out_t;

typedef struct h3c {
    lg_conn_t    *c;
    lg_quic_t    *q;
    nghttp3_conn *h3;
    h3s_t        *streams;
    lg_mux_runq_t runq;         /* streams whose request can go on */
    unsigned      nstreams;
    int           busy;
    int           goaway;
    int           drain_pending;    /* opened while the worker quits: GOAWAY after its first request */
} h3c_t;

typedef struct obuf {
    struct obuf *next;
    lg_buf_t    *b;
    size_t       given;         /* bytes handed to nghttp3 (from b->pos) */
} obuf_t;

struct h3s {
    lg_mux_stream_t m;          /* first: end, request, timer, run queue, head (pipeline/mux.h) */
    h3c_t       *h;
    int64_t      id;
    h3s_t       *prev, *next;
    int          ws;            /* an RFC 9220 WebSocket (not offered: always 0) */
    char        *in;            /* owned: request body bytes not yet read */
    size_t       in_pos, in_len, in_unacked;
    int          in_eof;
    lg_buf_t    *rbuf;
    h3_out_t     ostate;
    int          is_head;
    lg_buf_t    *ohead;
    size_t       oscan;
    obuf_t      *out, *out_tail;        /* the body: given to nghttp3 until acknowledged */
    unsigned     nout;
    int          out_eof, blocked;
    char        *trailers;
};

#define H3S_MAGIC 0x48335354u

static lg_mux_nv_t scratch_fields[LG_MAX_HEADERS + 1];
static nghttp3_nv scratch_nv[LG_MAX_HEADERS + 1];
static char scratch_names[LG_BUF_SIZE];

/* The shared field list as nghttp3's. */
static size_t to_nv(size_t n)
{
    for (size_t i = 0; i < n; i++)
        scratch_nv[i] = (nghttp3_nv){ (uint8_t *)scratch_fields[i].name, (uint8_t *)scratch_fields[i].value,
                                      scratch_fields[i].namelen, scratch_fields[i].valuelen,
                                      NGHTTP3_NV_FLAG_NONE };
    return n;
}
static const lg_end_ops_t stream_ops;
static void h3_run_queue(h3c_t *h);

/* ---- streams ---- */

static void stream_timer_cb(lg_timer_t *tm);

static h3s_t *stream_new(h3c_t *h, int64_t id)
{
    h3s_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    lg_mux_stream_init(&st->m, H3S_MAGIC, &stream_ops, stream_timer_cb);
    st->h = h;
    st->id = id;
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    h->nstreams++;
    return st;
}

static void runq_add(h3s_t *st)
{
    lg_mux_runq_add(&st->h->runq, &st->m);
}

static void stream_free(h3s_t *st)
{
    h3c_t *h = st->h;
    lg_mux_stream_drop(&st->m);
    lg_mux_runq_remove(&h->runq, &st->m);
    lg_timer_del(&lg_w.loop, &st->m.timer);
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    h->nstreams--;
    if (h->nstreams == 0)
        h->c->t_idle = lg_w.loop.now;
    if (h->h3)
        nghttp3_conn_set_stream_user_data(h->h3, st->id, NULL);
    while (st->out) {
        obuf_t *o = st->out;
        st->out = o->next;
        lg_buf_put(o->b);
        free(o);
    }
    free(st->in);
    free(st->trailers);
    lg_buf_put(st->rbuf);
    lg_buf_put(st->ohead);
    st->m.magic = 0;
    lg_loop_defer_free(&lg_w.loop, st);
}

/* ---- the stream as the request's client end ---- */

static ssize_t stream_recv(lg_end_t *e, void *buf, size_t n)
{
    h3s_t *st = (h3s_t *)e;
    if (st->in_len == 0) {
        if (st->in_eof)
            return 0;
        e->r_ready = 0;
        e->want_r = 1;
        return LG_AGAIN;
    }
    size_t k = st->in_len < n ? st->in_len : n;
    memcpy(buf, st->in + st->in_pos, k);
    st->in_pos += k;
    st->in_len -= k;
    if (st->in_len == 0)
        st->in_pos = 0;
    /* the window opens by what was read: the client sends no faster than
     * the request (its upstream) takes it */
    lg_quic_consumed(st->h->q, st->id, k);
    e->r_ready = st->in_len > 0 || st->in_eof;
    return (ssize_t)k;
}

static nghttp3_ssize read_data(nghttp3_conn *conn, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *flags, void *ud, void *sud);

/* A complete HTTP/1.1 response head: HEADERS.  1 final, 0 interim, -1. */
static int submit_head(void *arg, const http_response_t *rsp)
{
    h3s_t *st = arg;
    h3c_t *h = st->h;
    int status = rsp->status;
    char code[4];
    int nf = lg_mux_response_fields(rsp, status, 0, code, scratch_fields, LG_MAX_HEADERS + 1,
                                    scratch_names, sizeof(scratch_names));
    if (nf < 0)
        return -1;
    size_t n = to_nv((size_t)nf);
    if (status < 200)
        return nghttp3_conn_submit_info(h->h3, st->id, scratch_nv, n) != 0 ? -1 : 0;
    if (st->is_head || status == 204 || status == 304) {
        st->ostate = OUT_NONE;
        return nghttp3_conn_submit_response(h->h3, st->id, scratch_nv, n, NULL) != 0 ? -1 : 1;
    }
    nghttp3_data_reader dr = { read_data };
    st->ostate = OUT_BODY;
    return nghttp3_conn_submit_response(h->h3, st->id, scratch_nv, n, &dr) != 0 ? -1 : 1;
}

/* Queue body bytes: how many fit (0: OUT_BUFS wait for acknowledgements). */
static size_t queue_body(h3s_t *st, const char *p, size_t n)
{
    size_t total = 0;
    while (n) {
        obuf_t *o = st->out_tail;
        if (o == NULL || o->b->last == o->b->end) {
            if (st->nout >= OUT_BUFS)
                break;
            o = calloc(1, sizeof(*o));
            if (o == NULL || (o->b = lg_buf_get()) == NULL) {
                free(o);
                break;
            }
            if (st->out_tail)
                st->out_tail->next = o;
            else
                st->out = o;
            st->out_tail = o;
            st->nout++;
        }
        size_t room = (size_t)(o->b->end - o->b->last);
        size_t k = n < room ? n : room;
        memcpy(o->b->last, p, k);
        o->b->last += k;
        p += k;
        n -= k;
        total += k;
    }
    if (total && st->blocked) {
        st->blocked = 0;
        nghttp3_conn_resume_stream(st->h->h3, st->id);
    }
    return total;
}

static ssize_t stream_writev(lg_end_t *e, const struct iovec *iov, int cnt)
{
    h3s_t *st = (h3s_t *)e;
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        const char *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        while (n) {
            if (st->ostate == OUT_HEAD) {
                size_t took = 0, extra = 0;
                const char *rest = NULL;
                int rc = lg_mux_take_head(&st->ohead, &st->oscan, p, n, &took, &rest, &extra,
                                          submit_head, st);
                if (rc < 0) {
                    errno = EPROTO;
                    return LG_ERROR;
                }
                total += took;
                p += took;
                n -= took;
                if (rc == 1) {
                    if (extra && st->ostate == OUT_BODY)
                        queue_body(st, rest, extra);    /* fits: the chain is empty */
                    lg_buf_put(st->ohead);
                    st->ohead = NULL;
                }
                if (took == 0)
                    goto full;
                continue;
            }
            if (st->ostate == OUT_NONE) {
                total += n;
                p += n;
                n = 0;
                continue;
            }
            size_t k = queue_body(st, p, n);
            total += k;
            p += k;
            n -= k;
            if (k == 0)
                goto full;
        }
    }
    lg_quic_kick(st->h->q);
    return (ssize_t)total;
full:
    lg_quic_kick(st->h->q);
    if (total)
        return (ssize_t)total;
    e->w_ready = 0;
    e->want_w = 1;
    return LG_AGAIN;
}

static void stream_shutdown(lg_end_t *e)
{
    h3s_t *st = (h3s_t *)e;
    st->out_eof = 1;
    if (st->blocked) {
        st->blocked = 0;
        nghttp3_conn_resume_stream(st->h->h3, st->id);
    }
    lg_quic_kick(st->h->q);
}

static const lg_end_ops_t stream_ops = {
    .recv = stream_recv, .writev = stream_writev, .shutdown = stream_shutdown,
};

/* The body is over: trailers carry the end, or the FIN does. */
static void end_body(h3s_t *st, uint32_t *flags)
{
    *flags |= NGHTTP3_DATA_FLAG_EOF;
    if (st->trailers == NULL)
        return;
    size_t n = to_nv(lg_mux_trailer_fields(st->trailers, scratch_fields, LG_MAX_HEADERS, scratch_names,
                                           sizeof(scratch_names)));
    if (n && nghttp3_conn_submit_trailers(st->h->h3, st->id, scratch_nv, n) == 0)
        *flags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
}

static nghttp3_ssize read_data(nghttp3_conn *conn, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *flags, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    size_t nv = 0;
    for (obuf_t *o = st->out; o && nv < veccnt; o = o->next) {
        size_t have = lg_buf_len(o->b) - o->given;
        if (have == 0)
            continue;
        vec[nv].base = (uint8_t *)o->b->pos + o->given;
        vec[nv].len = have;
        o->given += have;
        nv++;
    }
    if (nv == 0 && !st->out_eof) {
        st->blocked = 1;
        return NGHTTP3_ERR_WOULDBLOCK;
    }
    if (st->out_eof) {
        int all = 1;
        for (obuf_t *o = st->out; o; o = o->next)
            all &= o->given == lg_buf_len(o->b);
        if (all)
            end_body(st, flags);
    }
    return (nghttp3_ssize)nv;
}

/* n more body bytes were acknowledged: their buffers go, room for more. */
static int on_acked(nghttp3_conn *conn, int64_t sid, uint64_t n, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL)
        return 0;
    while (n && st->out) {
        obuf_t *o = st->out;
        size_t k = n < o->given ? (size_t)n : o->given;
        o->b->pos += k;
        o->given -= k;
        n -= k;
        if (lg_buf_len(o->b) == 0 && (o->b->last == o->b->end || o->next)) {
            st->out = o->next;
            if (st->out_tail == o)
                st->out_tail = NULL;
            lg_buf_put(o->b);
            free(o);
            st->nout--;
        } else if (k == 0) {
            break;
        }
    }
    if (st->m.r && !st->m.end.w_ready) {
        st->m.end.w_ready = 1;
        runq_add(st);
    }
    return 0;
}

/* ---- building the request ---- */

static int on_begin_headers(nghttp3_conn *conn, int64_t sid, void *ud, void *sud)
{
    h3c_t *h = ud;
    (void)sud;
    if (h->goaway)
        return 0;
    h3s_t *st = stream_new(h, sid);
    if (st == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    lg_req_t *r = lg_req_new(h->c);
    if (r == NULL || lg_mux_req_init(&st->m.q, r) < 0) {
        lg_req_free(r);
        stream_free(st);
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    }
    st->m.r = r;
    r->stream = st;
    r->cend = &st->m.end;
    r->in = NULL;
    nghttp3_conn_set_stream_user_data(conn, sid, st);
    return 0;
}

static int on_header(nghttp3_conn *conn, int64_t sid, int32_t token, nghttp3_rcbuf *name,
                     nghttp3_rcbuf *value, uint8_t flags, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)flags;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL || st->m.r == NULL)
        return 0;
    nghttp3_vec nn = nghttp3_rcbuf_get_buf(name), vv = nghttp3_rcbuf_get_buf(value);
    (void)token;
    lg_mux_size_t sz = lg_mux_req_account(&st->m.q, nn.len, vv.len, lg_w.conf->http2_max_header_list_size);
    if (sz == LG_MUX_SIZE_BOMB)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    if (sz != LG_MUX_SIZE_OK)
        return 0;
    return lg_mux_req_field(&st->m.q, st->m.r, nn.base, nn.len, vv.base, vv.len) < 0 ? NGHTTP3_ERR_CALLBACK_FAILURE : 0;
}

static int on_end_headers(nghttp3_conn *conn, int64_t sid, int fin, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL || st->m.r == NULL)
        return 0;
    lg_req_t *r = st->m.r;
    int big = lg_mux_req_build(&st->m.q, r, 30, fin, 0, &st->ws);
    st->is_head = r->ri.is_head;
    if (fin)
        st->in_eof = 1;
    st->rbuf = big ? lg_buf_get() : lg_buf_get_small();
    r->in = st->rbuf;
    st->m.start = 1;
    if (r->in == NULL)
        st->m.q.status = 500;
    runq_add(st);
    return 0;
}

static int on_data(nghttp3_conn *conn, int64_t sid, const uint8_t *data, size_t len, void *ud, void *sud)
{
    (void)conn;
    h3c_t *h = ud;
    h3s_t *st = sud;
    if (st == NULL || st->m.r == NULL || st->m.q.status) {
        lg_quic_consumed(h->q, sid, len);       /* nobody reads it: let more come */
        return 0;
    }
    if (st->in == NULL && (st->in = malloc(STREAM_IN)) == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    if (st->in_pos && st->in_pos + st->in_len + len > STREAM_IN) {
        memmove(st->in, st->in + st->in_pos, st->in_len);
        st->in_pos = 0;
    }
    if (st->in_pos + st->in_len + len > STREAM_IN)
        return NGHTTP3_ERR_CALLBACK_FAILURE;    /* past the window we gave */
    memcpy(st->in + st->in_pos + st->in_len, data, len);
    st->in_len += len;
    st->m.end.r_ready = 1;
    runq_add(st);
    return 0;
}

static int on_deferred_consume(nghttp3_conn *conn, int64_t sid, size_t n, void *ud, void *sud)
{
    (void)conn;
    (void)sud;
    h3c_t *h = ud;
    lg_quic_consumed(h->q, sid, n);
    return 0;
}

static int on_end_stream(nghttp3_conn *conn, int64_t sid, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL)
        return 0;
    st->in_eof = 1;
    st->m.end.r_ready = st->m.end.rd_hup = 1;
    if (st->m.r)
        runq_add(st);
    return 0;
}

static int on_stream_close(nghttp3_conn *conn, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)conn;
    (void)sid;
    (void)ud;
    h3s_t *st = sud;
    if (st == NULL || st->m.magic != H3S_MAGIC)
        return 0;
    if (st->m.r)
        lg_debug("HTTP/3 client %s closed stream %lld before its answer ended (%llu)",
                 st->h->c->peer_text, (long long)sid, (unsigned long long)code);
    stream_free(st);
    return 0;
}

static int on_stop_sending(nghttp3_conn *conn, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)conn;
    (void)sud;
    h3c_t *h = ud;
    lg_quic_reset(h->q, sid, code);
    return 0;
}

static int on_reset_stream(nghttp3_conn *conn, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)conn;
    (void)code;
    (void)sud;
    h3c_t *h = ud;
    lg_quic_reset(h->q, sid, NGHTTP3_H3_REQUEST_CANCELLED);
    return 0;
}

/* ---- running requests (as h2.c) ---- */

static void stream_arm(h3s_t *st)
{
    lg_req_t *r = st->m.r;
    lg_msec_t t = -1;
    if (r && r->stage)
        t = r->stage->arm(r, &r->tkind);
    if (t < 0)
        lg_timer_del(&lg_w.loop, &st->m.timer);
    else
        lg_timer_set(&lg_w.loop, &st->m.timer, t);
}

static void h3_run_queue(h3c_t *h)
{
    h->busy++;
    for (int round = 0; round < 4 && h->runq.head && h->c->state == LG_C_FRONT; round++) {
        lg_mux_stream_t *m = lg_mux_runq_take(&h->runq);
        while (m && h->c->state == LG_C_FRONT) {
            h3s_t *st = (h3s_t *)m;
            m = m->rnext;
            st->m.queued = 0;
            if (st->m.magic != H3S_MAGIC)
                continue;
            lg_mux_stream_run(&st->m, h->c);
            if (h->c->state == LG_C_FRONT && st->m.magic == H3S_MAGIC)
                stream_arm(st);
        }
    }
    h->busy--;
    if (h->runq.head)
        lg_quic_kick(h->q);     /* more next turn */
}

static void stream_timer_cb(lg_timer_t *tm)
{
    h3s_t *st = tm->data;
    lg_req_t *r = st->m.r;
    if (r && r->stage) {
        r->stage->timeout(r, r->tkind);
        if (st->m.magic == H3S_MAGIC && st->m.r == r)
            runq_add(st);
    }
    if (st->h->c->state == LG_C_FRONT)
        lg_quic_kick(st->h->q);
}

/* ---- the QUIC connection's application ---- */

static nghttp3_callbacks h3_callbacks = {
    .acked_stream_data = on_acked,
    .stream_close = on_stream_close,
    .recv_data = on_data,
    .deferred_consume = on_deferred_consume,
    .begin_headers = on_begin_headers,
    .recv_header = on_header,
    .end_headers = on_end_headers,
    .stop_sending = on_stop_sending,
    .end_stream = on_end_stream,
    .reset_stream = on_reset_stream,
};

static const lg_frontend_t h3_frontend;

static int app_open(lg_quic_t *q)
{
    const lg_bind_t *bind = lg_quic_ep_data(lg_quic_ep(q));
    h3c_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    lg_conn_t *c = lg_conn_new_virtual(bind, lg_quic_peer(q), LG_PROTO_HTTP3);
    if (c == NULL) {
        free(h);
        return -1;
    }
    h->c = c;
    h->q = q;
    c->quic = 1;
    c->fe_data = h;
    lg_quic_set_data(q, h);
    nghttp3_settings s;
    nghttp3_settings_default(&s);
    s.max_field_section_size = (uint64_t)lg_w.conf->http2_max_header_list_size;
    s.qpack_max_dtable_capacity = 4096;
    s.qpack_blocked_streams = 16;
    int64_t ctrl, enc, dec;
    if (nghttp3_conn_server_new(&h->h3, &h3_callbacks, &s, NULL, h) != 0 ||
        lg_quic_open_uni(q, &ctrl) < 0 || nghttp3_conn_bind_control_stream(h->h3, ctrl) != 0 ||
        lg_quic_open_uni(q, &enc) < 0 || lg_quic_open_uni(q, &dec) < 0 ||
        nghttp3_conn_bind_qpack_streams(h->h3, enc, dec) != 0) {
        lg_conn_close(c, "HTTP/3 session set-up failed");
        return -1;
    }
    nghttp3_conn_set_max_client_streams_bidi(h->h3, (uint64_t)lg_w.conf->http2_max_concurrent_streams);
    /* its handshake ended after the worker began to quit: the client sent
     * its first request with it, or is about to, so a GOAWAY now (naming
     * no stream) would refuse a request it had every right to make; drain
     * once that request is taken */
    h->drain_pending = lg_w.quitting;
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls) {
        ls->accepted++;
        ls->tls_ok++;
    }
    return 0;
}

static h3c_t *h3_of(lg_quic_t *q)
{
    h3c_t *h = lg_quic_data(q);
    return h && h->h3 && h->c->state == LG_C_FRONT ? h : NULL;
}

static int app_recv(lg_quic_t *q, int64_t sid, const uint8_t *p, size_t n, int fin)
{
    h3c_t *h = h3_of(q);
    if (h == NULL)
        return -1;
    nghttp3_ssize k = nghttp3_conn_read_stream(h->h3, sid, p, n, fin);
    if (k < 0) {
        lg_info("HTTP/3 client %s: %s", h->c->peer_text, nghttp3_strerror((int)k));
        lg_quic_close(q, nghttp3_err_infer_quic_app_error_code((int)k), nghttp3_strerror((int)k));
        return 0;
    }
    /* framing and headers are consumed at once; DATA as the request reads */
    lg_quic_consumed(q, sid, (size_t)k);
    return 0;
}

static int app_acked(lg_quic_t *q, int64_t sid, uint64_t n)
{
    h3c_t *h = h3_of(q);
    return h == NULL || nghttp3_conn_add_ack_offset(h->h3, sid, n) == 0 ? 0 : -1;
}

static int app_stream_close(lg_quic_t *q, int64_t sid, uint64_t code)
{
    h3c_t *h = h3_of(q);
    if (h == NULL)
        return 0;
    int rc = nghttp3_conn_close_stream(h->h3, sid, code);
    return rc == 0 || rc == NGHTTP3_ERR_STREAM_NOT_FOUND ? 0 : -1;
}

static int app_stream_reset(lg_quic_t *q, int64_t sid, uint64_t code)
{
    (void)code;
    h3c_t *h = h3_of(q);
    if (h == NULL)
        return 0;
    return nghttp3_conn_shutdown_stream_read(h->h3, sid) == 0 ? 0 : -1;
}

static int app_unblock(lg_quic_t *q, int64_t sid)
{
    h3c_t *h = h3_of(q);
    return h == NULL || nghttp3_conn_unblock_stream(h->h3, sid) == 0 ? 0 : -1;
}

static ssize_t app_pull(lg_quic_t *q, int64_t *sid, int *fin, lg_quic_vec_t *v, size_t n)
{
    h3c_t *h = h3_of(q);
    *sid = -1;
    *fin = 0;
    if (h == NULL)
        return 0;
    nghttp3_ssize k = nghttp3_conn_writev_stream(h->h3, sid, fin, (nghttp3_vec *)v, n);
    return k < 0 ? -1 : (ssize_t)k;
}

static int app_wrote(lg_quic_t *q, int64_t sid, size_t n)
{
    h3c_t *h = h3_of(q);
    return h == NULL || nghttp3_conn_add_write_offset(h->h3, sid, n) == 0 ? 0 : -1;
}

static void app_blocked(lg_quic_t *q, int64_t sid)
{
    h3c_t *h = h3_of(q);
    if (h)
        nghttp3_conn_block_stream(h->h3, sid);
}

static void app_shut_wr(lg_quic_t *q, int64_t sid)
{
    h3c_t *h = h3_of(q);
    if (h)
        nghttp3_conn_shutdown_stream_write(h->h3, sid);
}

static void h3_drain(lg_conn_t *c);

static void app_settle(lg_quic_t *q)
{
    h3c_t *h = h3_of(q);
    if (h == NULL)
        return;
    h3_run_queue(h);
    if (h->drain_pending && h->nstreams > 0 && h->c->state == LG_C_FRONT) {
        h->drain_pending = 0;
        h3_drain(h->c);         /* the GOAWAY names the request taken */
    }
    if (h->c->state == LG_C_FRONT && h->goaway && h->nstreams == 0)
        lg_quic_close(q, NGHTTP3_H3_NO_ERROR, "HTTP/3 connection drained");
}

static void app_gone(lg_quic_t *q)
{
    h3c_t *h = lg_quic_data(q);
    if (h == NULL)
        return;
    h->q = NULL;
    lg_quic_set_data(q, NULL);
    lg_conn_close(h->c, "QUIC connection ended");       /* h3_close frees h */
}

static const lg_quic_app_t quic_app = {
    .open = app_open,
    .recv = app_recv,
    .acked = app_acked,
    .stream_close = app_stream_close,
    .stream_reset = app_stream_reset,
    .unblock = app_unblock,
    .pull = app_pull,
    .wrote = app_wrote,
    .blocked = app_blocked,
    .shut_wr = app_shut_wr,
    .settle = app_settle,
    .gone = app_gone,
};

const lg_quic_app_t *lg_h3_app(void) { return &quic_app; }

/* ---- the front end, as the connection sees it ---- */

static void h3_start(lg_conn_t *c) { (void)c; }
static void h3_step(lg_conn_t *c)
{
    h3c_t *h = c->fe_data;
    if (h && h->q)
        lg_quic_kick(h->q);
}
static void h3_arm(lg_conn_t *c) { (void)c; }        /* QUIC keeps the connection's time */
static void h3_timeout(lg_conn_t *c) { (void)c; }

static void h3_drain(lg_conn_t *c)
{
    h3c_t *h = c->fe_data;
    if (h == NULL || h->goaway)
        return;
    h->goaway = 1;
    /* GOAWAY naming the streams taken; those finish, then the connection */
    nghttp3_conn_shutdown(h->h3);
    if (h->q)
        lg_quic_kick(h->q);
}

static void h3_run(lg_conn_t *c, lg_req_t *r)
{
    if (c->state != LG_C_FRONT)
        return;
    h3c_t *h = c->fe_data;
    if (r)
        runq_add(r->stream);
    if (h->q)
        lg_quic_kick(h->q);     /* settle runs it, then the reply is packed */
}

static void h3_abort(lg_conn_t *c, lg_req_t *r, const char *why)
{
    h3s_t *st = r->stream;
    lg_debug("HTTP/3 client %s stream %lld reset: %s", c->peer_text, (long long)st->id, why);
    lg_mux_stream_drop(&st->m);
    if (st->h->q)
        lg_quic_reset(st->h->q, st->id, NGHTTP3_H3_INTERNAL_ERROR);
}

static void h3_done(lg_conn_t *c, lg_req_t *r)
{
    h3s_t *st = r->stream;
    c->requests++;
    st->m.r = NULL;
    if (st->ostate == OUT_HEAD) {
        if (st->h->q)
            lg_quic_reset(st->h->q, st->id, NGHTTP3_H3_INTERNAL_ERROR);     /* no answer was made */
    } else {
        st->out_eof = 1;
        if (r->trailers && *r->trailers)
            st->trailers = strdup(r->trailers);
        if (st->blocked) {
            st->blocked = 0;
            nghttp3_conn_resume_stream(st->h->h3, st->id);
        }
        /* answered before the whole body came (a 413): the rest is not
         * wanted, the answer still goes (RFC 9114 4.1.1) */
        if (!st->in_eof && st->h->q)
            lg_quic_stop_reading(st->h->q, st->id, NGHTTP3_H3_NO_ERROR);
    }
    lg_timer_del(&lg_w.loop, &st->m.timer);
    lg_req_free(r);
    if (st->h->q)
        lg_quic_kick(st->h->q);
}

static void h3_close(lg_conn_t *c)
{
    h3c_t *h = c->fe_data;
    if (h == NULL)
        return;
    c->fe_data = NULL;
    while (h->streams)
        stream_free(h->streams);
    if (h->h3)
        nghttp3_conn_del(h->h3);
    h->h3 = NULL;
    if (h->q) {
        /* closed from above (a worker stopping): the QUIC side goes too */
        lg_quic_set_data(h->q, NULL);
        lg_quic_close(h->q, NGHTTP3_H3_NO_ERROR, "connection closed");
    }
    lg_loop_defer_free(&lg_w.loop, h);
}

static const lg_frontend_t h3_frontend = {
    .name = "HTTP/3",
    .start = h3_start,
    .step = h3_step,
    .arm = h3_arm,
    .timeout = h3_timeout,
    .drain = h3_drain,
    .done = h3_done,
    .error = NULL,
    .tunnel_ok = "HTTP/1.1 200 Connection established\r\n\r\n",
    .tunnel_ok_len = sizeof("HTTP/1.1 200 Connection established\r\n\r\n") - 1,
    .multiplexed = 1,
    .run = h3_run,
    .abort = h3_abort,
    .close = h3_close,
};

void lg_h3_register(void)
{
    lg_conn_frontend_register(LG_PROTO_HTTP3, &h3_frontend);
}

#endif /* LG_HAVE_HTTP3 */

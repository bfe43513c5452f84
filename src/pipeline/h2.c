/*
 * The HTTP/2 front end (RFC 9113), on libnghttp2: one session per client
 * connection, one request per stream, made from the stream's HEADERS and
 * handed to the same phases and stages as an HTTP/1.1 request.
 *
 * A stream poses as the request's client end (r->cend, a virtual lg_end_t):
 *   recv    gives the DATA the client sent (flow control is the
 *           backpressure: the window opens only as the request reads)
 *   writev  takes what the stages write for an HTTP/1.1 client -- a
 *           response head, then the body -- turns the head into HEADERS
 *           (1xx as informational HEADERS, a WebSocket 101 as the 200 of
 *           RFC 8441) and queues the body for DATA frames, at most one
 *           buffer ahead of the client's window
 * so the reverse proxy, the cache, the codings, tunnels and local answers
 * need no HTTP/2 code.  When the request finishes, END_STREAM follows the
 * last queued byte; the request is freed at once, the stream when nghttp2
 * closes it.
 *
 * Driving: the connection's events read frames into the session and send
 * what it has queued; streams whose request can go on (data arrived, room
 * for output, a head complete) wait in a run queue that is served between
 * the two, never inside nghttp2's callbacks.  Each stream has its own
 * timer for its request's stage; the connection's timer counts idleness
 * (no streams) or a client that stopped reading.
 *
 * Defences, beyond what nghttp2 checks itself (the frame and stream state
 * machine, pseudo-headers, connection-specific fields, content-length):
 *   - resets the client sends, and the ones it makes us send, share a
 *     token bucket (http2_reset_rate a second, twice that as burst): the
 *     rapid-reset and MadeYouReset attacks end in GOAWAY ENHANCE_YOUR_CALM;
 *     a reset stream's request is freed at once, with its upstream attempt;
 *   - SETTINGS, PING, PRIORITY and empty frames share another bucket
 *     (http2_control_rate); queued ACKs are capped by nghttp2;
 *   - a header block may have at most MAX_CONTINUATIONS frames, and its
 *     decoded size and count are capped (http2_max_header_list_size,
 *     LG_MAX_HEADERS): past them the request is answered 431, and a block
 *     far past them resets the stream (HPACK bombs);
 *   - the streams a client may open are SETTINGS_MAX_CONCURRENT_STREAMS;
 *   - a stream whose client never opens its window meets send_timeout.
 */
#include "pipeline/mux.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/buf.h"
#include "net/h2io.h"

#define DRAIN_GRACE_MS 1000
#define MAX_CONTINUATIONS 32
#define STREAM_WINDOW 65535             /* the protocol's initial window: no SETTINGS race */
#define CONN_WINDOW (1 << 20)
#define RUN_ROUNDS 16
#define SLOT_RELEASE_MS 1000            /* idle this long: the slot's pages go back (net/h2io.h) */

typedef struct h2s h2s_t;

typedef enum h2_out {
    OUT_HEAD = 0,               /* waiting for the response head */
    OUT_BODY = 1,               /* head submitted: bytes are DATA */
    OUT_NONE = 2,               /* head submitted with END_STREAM: bytes are dropped */
} h2_out_t;

/*
 * An idle connection rests in two steps, each a second (SLOT_RELEASE_MS)
 * into an idle spell.  First its frame buffer's pages go back and it asks
 * the client to stop indexing header fields (SETTINGS_HEADER_TABLE_SIZE
 * 0; RFC 7541 4.2 makes the client empty its table).  Once the client has
 * acknowledged that, the session holds nothing a new one cannot be told:
 * the client's settings, our send window, the last stream -- the HPACK
 * table the client encodes against is empty, and the one we encode
 * against may hold anything, as a fresh encoder only uses entries it
 * added itself (eviction is oldest first).  So the session is freed
 * (~5 KiB: nghttp2's session and its HPACK tables) and the connection
 * keeps only those numbers; the next bytes from the client make a session
 * again, fed the frames that bring it to the same state (the replies are
 * thrown away), and header compression is offered again.
 */
typedef enum h2_rest {
    REST_AWAKE = 0,             /* the session as started: headers indexed at the default size */
    REST_ASKED = 1,             /* SETTINGS_HEADER_TABLE_SIZE 0 sent: may sleep once it is acked */
    REST_ASLEEP = 2,            /* no session: the fields below say what a new one must know */
    REST_WAKING = 3,            /* a new session is being fed the old one's state */
} h2_rest_t;

#define REST_NSET 8             /* the client's settings kept while asleep */
static const int32_t rest_ids[REST_NSET] = {
    NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, NGHTTP2_SETTINGS_ENABLE_PUSH,
    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
    NGHTTP2_SETTINGS_MAX_FRAME_SIZE, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
    NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL,
    /* RFC 9218: nghttp2 reads it as unset (not 0 or 1) until the client
     * sends it, and later versions refuse a change once it has */
    NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES,
};

typedef struct h2c {
    lg_post_t    post;          /* first: streams to run and frames to send after the batch */
    nghttp2_session *ses;
    lg_conn_t   *c;
    h2s_t       *streams;       /* every stream with state here */
    lg_mux_runq_t runq;         /* streams whose request can go on */
    unsigned     nstreams;
    lg_buf_t    *out;           /* owned: frames serialized, not yet written */
    int          busy;          /* inside step: run requests later, not now */
    int          goaway;        /* GOAWAY sent: the connection ends once streams do */
    int          dead;          /* a fatal error: close once the GOAWAY is out */
    /* token buckets, in thousandths of a token, refilled by elapsed ms */
    int64_t      rst_tokens, ctl_tokens;
    lg_msec_t    rst_t, ctl_t;
    unsigned     conts;         /* CONTINUATION frames of the header block being read */
    int32_t      last_sid;      /* the highest stream a client's HEADERS named */
    int32_t      closed[32];    /* streams closed lately: their trailers may still come */
    uint32_t     closed_ended;  /* bit i: closed[i]'s client had sent END_STREAM */
    unsigned     nclosed;
    lg_h2io_slot_t slot;        /* nghttp2's frame buffer and stream table, given back when idle */
    lg_msec_t    slot_idle;     /* the idle spell (its t_idle) they were given back in; -1 none */
    h2_rest_t    rest;
    int32_t      proc_sid;      /* asleep and after: the last stream the old sessions processed */
    int32_t      stand_in;      /* after a wake: the stream h2_wake fed its session, 0 none */
    unsigned     settings_out;  /* our SETTINGS sent, not yet acknowledged */
    lg_msec_t    woke;          /* when the connection last woke (-1 never): rest waits a second */
    int32_t      send_window;   /* asleep: the connection's window to the client */
    uint32_t     client_set[REST_NSET]; /* asleep: the client's settings, as rest_ids */
    /* where the client's bytes stand in its frames: nghttp2 takes all it is
     * given, so a part of a frame may be inside the session, and a session
     * that sleeps would lose it */
    uint32_t     fr_left;       /* bytes of the preface or frame payload still to come */
    uint8_t      fr_have;       /* bytes of the next frame header come */
    uint8_t      fr_hd[5];      /* its length, type and flags */
    uint8_t      fr_block;      /* a header block lacks its END_HEADERS */
} h2c_t;

struct h2s {
    lg_mux_stream_t m;          /* first: end, request, timer, run queue, head (pipeline/mux.h) */
    h2c_t       *h;
    int32_t      id;
    h2s_t       *prev, *next;   /* h->streams */
    /* the request body: DATA received, not yet read by the request */
    char        *in;            /* owned: STREAM_WINDOW bytes */
    size_t       in_pos, in_len;
    int          in_eof;        /* END_STREAM received */
    lg_buf_t    *rbuf;          /* owned: what r->in points to */
    /* the response */
    h2_out_t     ostate;
    int          is_head, ws;   /* a HEAD request; an RFC 8441 WebSocket */
    lg_buf_t    *ohead;         /* owned: response head bytes being gathered */
    size_t       oscan;
    lg_buf_t    *obody;         /* owned: body bytes waiting for DATA frames */
    int          out_eof;       /* the request finished: END_STREAM after obody */
    char        *trailers;      /* owned: r->trailers, sent after obody */
    int          deferred;      /* nghttp2 waits for us to resume the data */
    lg_msec_t    t_progress;    /* the last DATA that went out */
};

#define H2S_MAGIC 0x48325354u

static lg_mux_nv_t scratch_fields[LG_MAX_HEADERS + 1];
static nghttp2_nv scratch_nv[LG_MAX_HEADERS + 1];
static char scratch_names[LG_BUF_SIZE];

/* The shared field list as nghttp2's. */
static size_t to_nv(size_t n)
{
    for (size_t i = 0; i < n; i++)
        scratch_nv[i] = (nghttp2_nv){ (uint8_t *)scratch_fields[i].name, (uint8_t *)scratch_fields[i].value,
                                      scratch_fields[i].namelen, scratch_fields[i].valuelen,
                                      NGHTTP2_NV_FLAG_NONE };
    return n;
}

static void h2_flush(h2c_t *h);
static void h2_run_queue(h2c_t *h);
static int h2_wake(h2c_t *h);
static void h2_rest(h2c_t *h, int may_ask);
static lg_msec_t rest_at(const h2c_t *h);
static int32_t last_proc(const h2c_t *h);

/* Frames to write (none while the connection sleeps). */
static int want_write(const h2c_t *h)
{
    return h->ses != NULL && nghttp2_session_want_write(h->ses);
}
static void h2_settle(h2c_t *h);
static const lg_end_ops_t stream_ops;

/* ---- buckets ---- */

/* Take one token of a bucket refilled at rate a second (burst 2 * rate):
 * 0, or -1 when it is empty. */
static int bucket_take(int64_t *tokens, lg_msec_t *t, int rate)
{
    lg_msec_t now = lg_w.loop.now;
    int64_t cap = (int64_t)rate * 2000;
    if (*t == 0) {
        *tokens = cap;
        *t = now;
    }
    *tokens += (now - *t) * (int64_t)rate;
    *t = now;
    if (*tokens > cap)
        *tokens = cap;
    if (*tokens < 1000)
        return -1;
    *tokens -= 1000;
    return 0;
}

/* The client misbehaves: GOAWAY ENHANCE_YOUR_CALM, then close. */
static void calm(h2c_t *h, const char *what)
{
    if (h->dead)
        return;
    lg_warn("HTTP/2 client %s: %s: GOAWAY", h->c->peer_text, what);
    nghttp2_session_terminate_session2(h->ses, last_proc(h), NGHTTP2_ENHANCE_YOUR_CALM);
    h->dead = 1;
}

/* ---- streams ---- */

static void stream_timer_cb(lg_timer_t *tm);

static h2s_t *stream_new(h2c_t *h, int32_t id)
{
    h2s_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    lg_mux_stream_init(&st->m, H2S_MAGIC, &stream_ops, stream_timer_cb);
    st->h = h;
    st->id = id;
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    h->nstreams++;
    return st;
}

static void runq_add(h2s_t *st)
{
    lg_mux_runq_add(&st->h->runq, &st->m);
}

static void stream_free(h2s_t *st)
{
    h2c_t *h = st->h;
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
    free(st->in);
    free(st->trailers);
    lg_buf_put(st->rbuf);
    lg_buf_put(st->ohead);
    lg_buf_put(st->obody);
    st->m.magic = 0;
    lg_loop_defer_free(&lg_w.loop, st);
}

static void stream_reset(h2s_t *st, uint32_t code)
{
    nghttp2_submit_rst_stream(st->h->ses, NGHTTP2_FLAG_NONE, st->id, code);
}

/* ---- the stream as the request's client end ---- */

static ssize_t stream_recv(lg_end_t *e, void *buf, size_t n)
{
    h2s_t *st = (h2s_t *)e;
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
    nghttp2_session_consume(st->h->ses, st->id, k);
    e->r_ready = st->in_len > 0 || st->in_eof;
    return (ssize_t)k;
}

static ssize_t data_source_read_cb(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t length,
                                   uint32_t *flags, nghttp2_data_source *src, void *ud);

/*
 * A complete HTTP/1.1 response head: HEADERS.  1 when it was the final
 * head, 0 an interim one (more heads follow), -1 when it cannot be sent.
 */
static int submit_head(void *arg, const http_response_t *rsp)
{
    h2s_t *st = arg;
    h2c_t *h = st->h;
    int status = rsp->status;
    if (status == 101 && st->ws)
        status = 200;           /* RFC 8441 5: the tunnel is open */
    char code[4];
    int nf = lg_mux_response_fields(rsp, status, st->ws, code, scratch_fields, LG_MAX_HEADERS + 1,
                                    scratch_names, sizeof(scratch_names));
    if (nf < 0)
        return -1;
    size_t n = to_nv((size_t)nf);
    if (status < 200) {
        /* interim (100 Continue, 103 Early Hints): more heads follow */
        return nghttp2_submit_headers(h->ses, NGHTTP2_FLAG_NONE, st->id, NULL, scratch_nv, n,
                                      NULL) < 0 ? -1 : 0;
    }
    int bodyless = st->is_head || status == 204 || status == 304;
    if (bodyless) {
        st->ostate = OUT_NONE;
        return nghttp2_submit_response(h->ses, st->id, scratch_nv, n, NULL) < 0 ? -1 : 1;
    }
    if (st->obody == NULL && (st->obody = lg_buf_get()) == NULL)
        return -1;
    nghttp2_data_provider dp = { .source.ptr = st, .read_callback = data_source_read_cb };
    st->ostate = OUT_BODY;
    st->t_progress = lg_w.loop.now;
    return nghttp2_submit_response(h->ses, st->id, scratch_nv, n, &dp) < 0 ? -1 : 1;
}

/* Queue body bytes for DATA frames: how many fit. */
static size_t queue_body(h2s_t *st, const char *p, size_t n)
{
    lg_buf_t *b = st->obody;
    if (b->pos == b->last)
        b->pos = b->last = b->start;
    else if (b->pos > b->start && (size_t)(b->end - b->last) < n) {
        size_t len = lg_buf_len(b);
        memmove(b->start, b->pos, len);
        b->pos = b->start;
        b->last = b->start + len;
    }
    size_t room = (size_t)(b->end - b->last);
    size_t k = n < room ? n : room;
    memcpy(b->last, p, k);
    b->last += k;
    if (k && st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->h->ses, st->id);
    }
    return k;
}

static ssize_t stream_writev(lg_end_t *e, const struct iovec *iov, int cnt)
{
    h2s_t *st = (h2s_t *)e;
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
                if (rc == 1 && extra) {
                    /* bytes taken with the head that are body: they fit,
                     * the body buffer is as large as the head's and empty */
                    if (st->ostate == OUT_BODY)
                        queue_body(st, rest, extra);
                    st->ohead->pos = st->ohead->last = st->ohead->start;
                }
                if (rc == 1) {
                    lg_buf_put(st->ohead);
                    st->ohead = NULL;
                }
                if (took == 0)
                    goto full;
                continue;
            }
            if (st->ostate == OUT_NONE) {
                total += n;     /* a HEAD's or a 304's: nothing to send */
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
    return (ssize_t)total;      /* the step that wrote is followed by a flush */
full:
    if (total)
        return (ssize_t)total;
    e->w_ready = 0;
    e->want_w = 1;
    return LG_AGAIN;
}

static void stream_shutdown(lg_end_t *e)
{
    h2s_t *st = (h2s_t *)e;
    /* a tunnel's downstream half ended: END_STREAM after what is queued */
    st->out_eof = 1;
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->h->ses, st->id);
    }
}

static const lg_end_ops_t stream_ops = {
    .recv = stream_recv, .writev = stream_writev, .shutdown = stream_shutdown,
};

/* The body is over: END_STREAM, or the trailer fields carry it. */
static void end_body(nghttp2_session *ses, h2s_t *st, uint32_t *flags)
{
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->trailers == NULL)
        return;
    size_t n = to_nv(lg_mux_trailer_fields(st->trailers, scratch_fields, LG_MAX_HEADERS, scratch_names,
                                           sizeof(scratch_names)));
    if (n && nghttp2_submit_trailer(ses, st->id, scratch_nv, n) == 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
}

static ssize_t data_source_read_cb(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t length,
                                   uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)id;
    (void)ud;
    h2s_t *st = src->ptr;
    lg_buf_t *b = st->obody;
    size_t have = b ? lg_buf_len(b) : 0;
    if (have == 0) {
        if (st->out_eof) {
            end_body(ses, st, flags);
            return 0;
        }
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t k = have < length ? have : length;
    memcpy(buf, b->pos, k);
    b->pos += k;
    st->t_progress = lg_w.loop.now;
    if (lg_buf_len(b) == 0 && st->out_eof)
        end_body(ses, st, flags);
    /* room again: the request may write more */
    if (st->m.r && !st->m.end.w_ready) {
        st->m.end.w_ready = 1;
        runq_add(st);
    }
    return (ssize_t)k;
}

/* ---- building the request from HEADERS ---- */

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    h2c_t *h = ud;
    h->conts = 0;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        h->rest == REST_WAKING)
        return 0;               /* waking: the stand-in for the old streams (h2_wake) */
    if (h->goaway || h->dead)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (h->rest == REST_ASKED) {
        /* busy again before the sleep, or just woken: index headers again */
        nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, NGHTTP2_DEFAULT_HEADER_TABLE_SIZE };
        nghttp2_submit_settings(ses, NGHTTP2_FLAG_NONE, &iv, 1);
        h->rest = REST_AWAKE;
    }
    h2s_t *st = stream_new(h, frame->hd.stream_id);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    lg_req_t *r = lg_req_new(h->c);
    if (r == NULL || lg_mux_req_init(&st->m.q, r) < 0) {
        lg_req_free(r);
        stream_free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->m.r = r;
    r->stream = st;
    lg_lstats_t *ls = lg_conn_stats(h->c);
    if (ls)
        ls->h2_streams++;
    r->cend = &st->m.end;
    r->in = NULL;
    nghttp2_session_set_stream_user_data(ses, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    h2c_t *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2s_t *st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
    if (st == NULL || st->m.r == NULL)
        return 0;               /* trailers of a request already answered */
    lg_mux_size_t sz = lg_mux_req_account(&st->m.q, nl, vl, lg_w.conf->http2_max_header_list_size);
    if (sz == LG_MUX_SIZE_BOMB)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (sz != LG_MUX_SIZE_OK)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;               /* trailers: not passed on (HTTP/1.1 upstreams) */
    (void)h;
    return lg_mux_req_field(&st->m.q, st->m.r, name, nl, value, vl) < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

/* The head is complete: an HTTP/1.1-shaped request (version 2.0) from it. */
static void build_request(h2s_t *st, int end_stream)
{
    lg_req_t *r = st->m.r;
    int big = lg_mux_req_build(&st->m.q, r, 20, end_stream, 1, &st->ws);
    st->is_head = r->ri.is_head;
    if (end_stream)
        st->in_eof = 1;
    /* where the body's first bytes would be, for the stages that expect a
     * buffer: large enough for a tunnel's or a body's reads */
    st->rbuf = big ? lg_buf_get() : lg_buf_get_small();
    r->in = st->rbuf;
    st->m.start = 1;
    if (r->in == NULL)
        st->m.q.status = 500;
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    h2c_t *h = ud;
    h2s_t *st = frame->hd.stream_id ? nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id)
                                    : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (st == NULL || st->m.r == NULL)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            build_request(st, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
            runq_add(st);
        } else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            st->in_eof = 1;     /* trailers end the body */
            st->m.end.r_ready = st->m.end.rd_hup = 1;
            runq_add(st);
        }
        break;
    case NGHTTP2_DATA:
        if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st->in_eof = 1;
            st->m.end.r_ready = st->m.end.rd_hup = 1;
            if (st->m.r)
                runq_add(st);
        }
        break;
    case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->rest != REST_WAKING && h->settings_out > 0)
            h->settings_out--;
        break;
    case NGHTTP2_RST_STREAM:
        if (h->rest == REST_WAKING)
            break;              /* the stand-in's end */
        if (lg_conn_stats(h->c))
            lg_conn_stats(h->c)->h2_resets_in++;
        if (bucket_take(&h->rst_tokens, &h->rst_t, lg_w.conf->http2_reset_rate) < 0)
            calm(h, "resets streams faster than http2_reset_rate");
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    h2s_t *st = nghttp2_session_get_stream_user_data(ses, id);
    if (st == NULL || st->m.r == NULL || st->m.q.status) {
        nghttp2_session_consume(ses, id, len);  /* nobody reads it: let more come */
        return 0;
    }
    if (st->in == NULL && (st->in = malloc(STREAM_WINDOW)) == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (st->in_pos && st->in_pos + st->in_len + len > STREAM_WINDOW) {
        memmove(st->in, st->in + st->in_pos, st->in_len);
        st->in_pos = 0;
    }
    /* cannot overflow: the stream's window is what was read out */
    if (st->in_pos + st->in_len + len > STREAM_WINDOW)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(st->in + st->in_pos + st->in_len, data, len);
    st->in_len += len;
    st->m.end.r_ready = 1;
    runq_add(st);
    return 0;
}

static int on_begin_frame(nghttp2_session *ses, const nghttp2_frame_hd *hd, void *ud)
{
    (void)ses;
    h2c_t *h = ud;
    int control = hd->type == NGHTTP2_SETTINGS || hd->type == NGHTTP2_PING ||
                  hd->type == NGHTTP2_PRIORITY ||
                  /* empty frames that end nothing cost us work and the client none */
                  (hd->length == 0 && (hd->type == NGHTTP2_DATA || hd->type == NGHTTP2_CONTINUATION) &&
                   !(hd->flags & (NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_END_HEADERS)));
    if (h->rest == REST_WAKING)
        return 0;               /* frames of our own making (h2_wake) */
    if (control && bucket_take(&h->ctl_tokens, &h->ctl_t, lg_w.conf->http2_control_rate) < 0)
        calm(h, "sends control frames faster than http2_control_rate");
    if (hd->type == NGHTTP2_CONTINUATION && ++h->conts > MAX_CONTINUATIONS)
        calm(h, "a header block of too many CONTINUATION frames");
    if (hd->type == NGHTTP2_HEADERS && hd->stream_id > h->last_sid) {
        h->last_sid = hd->stream_id;
    } else if (hd->type == NGHTTP2_HEADERS && hd->stream_id <= h->last_sid && !h->dead &&
               nghttp2_session_find_stream(ses, hd->stream_id) == NULL) {
        /*
         * A stream that is not open (closed streams are not kept, see
         * h2_setup).  Trailers may cross a reset of ours: a stream closed
         * lately whose client had not ended it is let be (nghttp2 drops
         * the block).  One whose client had sent END_STREAM is closed for
         * it (RFC 9113 5.1: STREAM_CLOSED); any other ID below one already
         * used is a new stream out of order (5.1.1: PROTOCOL_ERROR).  DATA
         * on a closed stream nghttp2 drops (5.1 allows that), with no
         * callback.
         */
        int recent = 0, ended = 0;
        for (unsigned i = 0; i < sizeof(h->closed) / sizeof(h->closed[0]); i++)
            if (h->closed[i] == hd->stream_id) {
                recent = 1;
                ended = (h->closed_ended >> i) & 1;
            }
        if (!recent || ended) {
            lg_info("HTTP/2 client %s: HEADERS on stream %d, %s", h->c->peer_text, hd->stream_id,
                    ended ? "which it had ended" : "after a higher stream");
            nghttp2_session_terminate_session2(ses, last_proc(h), ended ? NGHTTP2_STREAM_CLOSED
                                                         : NGHTTP2_PROTOCOL_ERROR);
            h->dead = 1;
        }
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    h2c_t *h = ud;
    if (h->rest == REST_WAKING)
        return 0;               /* replies to our own frames, dropped */
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        h->settings_out++;
    lg_lstats_t *ls = lg_conn_stats(h->c);
    if (ls && frame->hd.type == NGHTTP2_RST_STREAM)
        ls->h2_resets_out++;
    if (ls && frame->hd.type == NGHTTP2_GOAWAY)
        ls->h2_goaways++;
    if (frame->hd.type == NGHTTP2_RST_STREAM && !h->dead &&
        bucket_take(&h->rst_tokens, &h->rst_t, lg_w.conf->http2_reset_rate) < 0)
        calm(h, "makes us reset streams faster than http2_reset_rate");
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2s_t *st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
        /* answered before the whole body came (a 413): what still comes is
         * read and dropped for client_body_timeout, then the stream is
         * reset (RFC 9113 8.1).  Not at once: clients (curl 7.88) take a
         * RST_STREAM right after a complete answer for a failure */
        if (st && st->m.r == NULL && !st->in_eof)
            runq_add(st);       /* stream_arm counts the timeout */
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *ud)
{
    (void)ud;
    (void)code;
    h2s_t *st = nghttp2_session_get_stream_user_data(ses, id);
    if (st == NULL || st->m.magic != H2S_MAGIC)
        return 0;
    nghttp2_session_set_stream_user_data(ses, id, NULL);
    h2c_t *h = st->h;
    unsigned i = h->nclosed++ % (sizeof(h->closed) / sizeof(h->closed[0]));
    h->closed[i] = id;
    h->closed_ended = (h->closed_ended & ~(1u << i)) | ((uint32_t)(st->in_eof != 0) << i);
    if (st->m.r)
        lg_debug("HTTP/2 client %s closed stream %d before its answer ended (%u)",
                 st->h->c->peer_text, id, code);
    stream_free(st);
    return 0;
}

/* ---- running requests ---- */

static void stream_arm(h2s_t *st)
{
    lg_req_t *r = st->m.r;
    lg_msec_t t = -1;
    const lg_common_t *sc = &st->h->c->bind->default_server->common;
    if (r && r->stage)
        t = r->stage->arm(r, &r->tkind);
    else if (r == NULL && st->obody && lg_buf_len(st->obody))
        t = sc->send_timeout;           /* a stalled window */
    else if (r == NULL && !st->in_eof && st->ostate != OUT_HEAD)
        t = sc->client_body_timeout;    /* a body nobody reads any more */
    if (t < 0)
        lg_timer_del(&lg_w.loop, &st->m.timer);
    else
        lg_timer_set(&lg_w.loop, &st->m.timer, t);
}

static void h2_run_queue(h2c_t *h)
{
    /* streams queued while these run wait for the next round */
    lg_mux_stream_t *m = lg_mux_runq_take(&h->runq);
    while (m && h->c->state == LG_C_FRONT) {
        h2s_t *st = (h2s_t *)m;
        m = m->rnext;
        st->m.queued = 0;
        if (st->m.magic != H2S_MAGIC)
            continue;
        lg_mux_stream_run(&st->m, h->c);
        if (h->c->state == LG_C_FRONT && st->m.magic == H2S_MAGIC)
            stream_arm(st);
    }
}

static void stream_timer_cb(lg_timer_t *tm)
{
    h2s_t *st = tm->data;
    h2c_t *h = st->h;
    lg_conn_t *c = h->c;
    lg_req_t *r = st->m.r;
    if (r && r->stage) {
        r->stage->timeout(r, r->tkind);
        if (st->m.magic == H2S_MAGIC && st->m.r == r)
            runq_add(st);
    } else if (r == NULL && st->obody && lg_buf_len(st->obody) &&
               lg_w.loop.now - st->t_progress >= c->bind->default_server->common.send_timeout) {
        lg_info("HTTP/2 client %s: stream %d sat with a closed window for send_timeout",
                c->peer_text, st->id);
        stream_reset(st, NGHTTP2_CANCEL);
    } else if (r == NULL && !st->in_eof && !(st->obody && lg_buf_len(st->obody))) {
        stream_reset(st, NGHTTP2_NO_ERROR);     /* answered; the rest of its body is not wanted */
    } else if (st->m.magic == H2S_MAGIC) {
        stream_arm(st);
    }
    if (c->state == LG_C_FRONT)
        lg_conn_run(c);
}

/* ---- the connection ---- */

/* Serialize what the session has and write it: many small frames go out
 * in one write (net/h2io.c); between writes, streams whose data nghttp2
 * took may write again. */
static void h2_flush(h2c_t *h)
{
    lg_conn_t *c = h->c;
    if (h->ses == NULL)
        return;                 /* asleep: nothing to send */
    for (int round = 0; round < 64 && c->state == LG_C_FRONT; round++) {
        const char *why = NULL;
        lg_h2io_rc_t rc = lg_h2io_round(h->ses, &h->out, &c->e, &why);
        if (rc == LG_H2IO_ERROR) {
            lg_conn_close(c, strcmp(why, "send() failed") == 0 ? "send() to client failed" : why);
            return;
        }
        if (rc != LG_H2IO_WROTE)
            return;
        if (h->runq.head)
            h2_run_queue(h);
    }
}

/* Read what the client sent into the session. */
/* Follow the frames in n bytes the session took (see fr_left). */
static void track_frames(h2c_t *h, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (h->fr_left > 0) {
            size_t k = n < h->fr_left ? n : h->fr_left;
            h->fr_left -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        if (h->fr_have < sizeof(h->fr_hd))
            h->fr_hd[h->fr_have] = *p;
        p++;
        n--;
        if (++h->fr_have < 9)
            continue;
        h->fr_have = 0;
        h->fr_left = (uint32_t)h->fr_hd[0] << 16 | (uint32_t)h->fr_hd[1] << 8 | h->fr_hd[2];
        uint8_t type = h->fr_hd[3];
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE || type == NGHTTP2_CONTINUATION)
            h->fr_block = !(h->fr_hd[4] & NGHTTP2_FLAG_END_HEADERS);
    }
}

/* Between frames: the session holds no part of one. */
static int at_frame_edge(const h2c_t *h)
{
    return h->fr_left == 0 && h->fr_have == 0 && !h->fr_block;
}

static void h2_read(h2c_t *h)
{
    lg_conn_t *c = h->c;
    for (int round = 0; round < 16 && c->state == LG_C_FRONT; round++) {
        /* the client must read our answers before we read its next frames */
        if (h->out && lg_buf_len(h->out) > LG_BUF_SIZE / 2)
            return;
        if (h->dead)
            return;
        if (c->in == NULL || lg_buf_len(c->in) == 0) {
            if (!c->e.r_ready) {
                c->e.want_r = 1;
                return;
            }
            if (c->in == NULL && (c->in = lg_buf_get()) == NULL) {
                lg_conn_close(c, "out of memory");
                return;
            }
            lg_buf_t *b = c->in;
            b->pos = b->last = b->start;
            size_t room = (size_t)(b->end - b->last);
            ssize_t n = lg_end_recv(&c->e, b->last, room);
            if (n == 0) {
                lg_conn_close(c, "client closed");
                return;
            }
            if (n == LG_AGAIN) {
                lg_buf_put(c->in);      /* an idle connection holds no buffer */
                c->in = NULL;
                return;
            }
            if (n < 0) {
                lg_conn_close(c, "recv() from client failed");
                return;
            }
            b->last += n;
            lg_end_short_read(&c->e, (size_t)n, room);
        }
        if (h->ses == NULL && h2_wake(h) < 0) {
            lg_conn_close(c, "out of memory");
            return;
        }
        lg_buf_t *b = c->in;
        ssize_t rv = nghttp2_session_mem_recv(h->ses, (const uint8_t *)b->pos, lg_buf_len(b));
        if (rv < 0) {
            lg_info("HTTP/2 client %s: %s", c->peer_text, nghttp2_strerror((int)rv));
            if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
                lg_conn_close(c, "not an HTTP/2 connection preface");
                return;
            }
            nghttp2_session_terminate_session2(h->ses, last_proc(h), NGHTTP2_PROTOCOL_ERROR);
            h->dead = 1;
            lg_buf_put(c->in);
            c->in = NULL;
            return;
        }
        track_frames(h, (const uint8_t *)b->pos, (size_t)rv);
        b->pos += rv;
        if (lg_buf_len(b) == 0) {
            lg_buf_put(c->in);
            c->in = NULL;
        }
    }
}

static void h2_step(lg_conn_t *c)
{
    h2c_t *h = c->fe_data;
    h->busy++;
    for (int round = 0; round < RUN_ROUNDS && c->state == LG_C_FRONT; round++) {
        h2_read(h);
        if (c->state != LG_C_FRONT)
            break;
        h2_run_queue(h);
        if (c->state != LG_C_FRONT)
            break;
        h2_flush(h);
        if (c->state != LG_C_FRONT)
            break;
        int more_in = c->e.r_ready && !h->dead && !(h->out && lg_buf_len(h->out) > LG_BUF_SIZE / 2);
        int more_out = c->e.w_ready && want_write(h);
        if (!more_in && !more_out && h->runq.head == NULL)
            break;
    }
    h->busy--;
    if (c->state != LG_C_FRONT)
        return;
    /* work left after the rounds (a stream made ready late): go again
     * rather than wait for an event that may not come */
    c->rerun = h->runq.head != NULL || (c->e.w_ready && want_write(h));
    h2_settle(h);
}

/* After a step: a session that is over, or drained, ends the connection. */
static void h2_settle(h2c_t *h)
{
    lg_conn_t *c = h->c;
    if (h->ses == NULL)
        return;                 /* asleep: waiting for the client */
    int pending = h->out && lg_buf_len(h->out);
    if (!pending && !nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses)) {
        lg_conn_close(c, h->dead ? "HTTP/2 connection error" : "HTTP/2 session over");
        return;
    }
    if (h->goaway && h->nstreams == 0 && !pending && !nghttp2_session_want_write(h->ses)) {
        lg_conn_close(c, "HTTP/2 connection drained");
        return;
    }
    if (h->rest == REST_ASKED && h->nstreams == 0 && rest_at(h) <= lg_w.loop.now)
        h2_rest(h, 0);          /* the client may have acked the table size */
}

/* Posted: the streams made ready by this batch's events run, and what
 * they wrote goes out in one write, not one a stream. */
static void h2_posted(lg_post_t *p)
{
    h2c_t *h = (h2c_t *)p;
    lg_conn_t *c = h->c;
    if (c->state != LG_C_FRONT || c->fe_data != h)
        return;                 /* closed meanwhile (its memory goes after this) */
    h->busy++;
    h2_run_queue(h);
    if (c->state == LG_C_FRONT)
        h2_flush(h);
    h->busy--;
    if (c->state != LG_C_FRONT)
        return;
    h2_settle(h);
    if (c->state != LG_C_FRONT)
        return;
    /* the flush stops after its rounds with streams still to run (a large
     * body moves a buffer a round): go on at the next turn, as h2_step's
     * rerun does -- when the upstream has sent its last bytes no event
     * would come, and the end of the body waited for ever */
    if (h->runq.head != NULL || (c->e.w_ready && want_write(h)))
        lg_loop_post(&lg_w.loop, &h->post);
    c->fe->arm(c);
}

/* An event of one request's upstream (or a wait over): that stream runs
 * once this batch of events is handled. */
static void h2_run(lg_conn_t *c, lg_req_t *r)
{
    if (c->state != LG_C_FRONT)
        return;
    h2c_t *h = c->fe_data;
    if (r)
        runq_add(r->stream);
    if (!h->busy)
        lg_loop_post(&lg_w.loop, &h->post);
}

static void h2_abort(lg_conn_t *c, lg_req_t *r, const char *why)
{
    h2s_t *st = r->stream;
    lg_debug("HTTP/2 client %s stream %d reset: %s", c->peer_text, st->id, why);
    lg_mux_stream_drop(&st->m);
    stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    runq_add(st);               /* the RST goes out with the next flush */
}

static void h2_done(lg_conn_t *c, lg_req_t *r)
{
    h2s_t *st = r->stream;
    c->requests++;
    st->m.r = NULL;
    if (st->ostate == OUT_HEAD) {
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);   /* no answer was made */
    } else {
        st->out_eof = 1;
        if (r->trailers && *r->trailers)
            st->trailers = strdup(r->trailers);
        if (st->deferred) {
            st->deferred = 0;
            nghttp2_session_resume_data(st->h->ses, st->id);
        }
    }
    lg_req_free(r);
    runq_add(st);
}

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;

static int h2_setup(void)
{
    if (callbacks)
        return 0;
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&options) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(callbacks, lg_h2io_send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_option_set_no_auto_window_update(options, 1);
    nghttp2_option_set_max_outbound_ack(options, 1000);
    /* a closed stream is freed, not kept (up to SETTINGS_MAX_CONCURRENT_STREAMS
     * of them, ~300 bytes each) for RFC 7540's dependency tree, which
     * RFC 9113 deprecates: an idle connection then holds no streams, and its
     * stream table is empty (net/h2io.h gives its page back) */
    nghttp2_option_set_no_closed_streams(options, 1);
#ifdef HAVE_NGHTTP2_OPTION_SET_MAX_SETTINGS
    nghttp2_option_set_max_settings(options, 32);
#endif
#ifdef HAVE_NGHTTP2_OPTION_SET_MAX_CONTINUATIONS
    nghttp2_option_set_max_continuations(options, MAX_CONTINUATIONS);
#endif
    return 0;
}

/* A session with our SETTINGS and connection window queued; `table` the
 * HPACK table size it lets the client index with. */
static int session_open(h2c_t *h, uint32_t table)
{
    nghttp2_mem mem = lg_h2io_mem(&h->slot);
    h->slot.opening = 1;
    int rv = nghttp2_session_server_new3(&h->ses, callbacks, h, options, &mem);
    h->slot.opening = 0;
    if (rv != 0) {
        h->ses = NULL;
        return -1;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)lg_w.conf->http2_max_concurrent_streams },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lg_w.conf->http2_max_header_list_size },
        { NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1 },
        { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, table },
    };
    size_t n = sizeof(iv) / sizeof(iv[0]) - (table == NGHTTP2_DEFAULT_HEADER_TABLE_SIZE);
    nghttp2_submit_settings(h->ses, NGHTTP2_FLAG_NONE, iv, n);
    nghttp2_session_set_local_window_size(h->ses, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    return 0;
}

static void h2_start(lg_conn_t *c)
{
    h2c_t *h = calloc(1, sizeof(*h));
    if (h == NULL || h2_setup() < 0) {
        free(h);
        lg_conn_close(c, "out of memory");
        return;
    }
    h->c = c;
    h->post.fn = h2_posted;
    c->fe_data = h;
#ifdef HAVE_NGHTTP2_OPTION_SET_STREAM_RESET_RATE_LIMIT
    /* nghttp2's own rapid-reset guard, at our rate (set per session: the
     * rate is the configuration's) */
    nghttp2_option_set_stream_reset_rate_limit(options, (uint64_t)lg_w.conf->http2_reset_rate * 2,
                                               (uint64_t)lg_w.conf->http2_reset_rate);
#endif
    h->slot_idle = -1;
    h->woke = -1;
    h->fr_left = NGHTTP2_CLIENT_MAGIC_LEN;
    if (session_open(h, NGHTTP2_DEFAULT_HEADER_TABLE_SIZE) < 0) {
        lg_conn_close(c, "out of memory");
        return;
    }
    c->t_idle = lg_w.loop.now;
    lg_conn_set_idle(c, 0);
    c->rerun = 1;
    lg_lstats_t *ls = lg_conn_stats(c);
    if (ls)
        ls->h2_conns++;
}

/* ---- resting (see h2_rest_t) ---- */

/* The last stream processed on the connection, by any of its sessions. */
static int32_t last_proc(const h2c_t *h)
{
    int32_t id = nghttp2_session_get_last_proc_stream_id(h->ses);
    if (id <= h->stand_in)
        id = 0;                 /* the stand-in was never processed */
    return id > h->proc_sid ? id : h->proc_sid;
}

/* Nothing in flight either way, nothing owed: what rest needs. */
static int rest_ready(const h2c_t *h)
{
    const lg_conn_t *c = h->c;
    /* want_read: a session nghttp2 has ended itself (a connection error
     * it found, a GOAWAY from the client) is never made new */
    return h->ses && h->nstreams == 0 && !h->goaway && !h->dead && !lg_w.quitting && h->out == NULL &&
           nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses) &&
           (c->in == NULL || lg_buf_len(c->in) == 0) && !c->e.r_ready && at_frame_edge(h);
}

static void h2_sleep(h2c_t *h)
{
    for (int i = 0; i < REST_NSET; i++)
        h->client_set[i] = nghttp2_session_get_remote_settings(h->ses, rest_ids[i]);
    h->send_window = nghttp2_session_get_remote_window_size(h->ses);
    h->proc_sid = last_proc(h);
    h->slot.shed = 1;           /* sleeping is for giving memory back */
    nghttp2_session_del(h->ses);    /* its slot goes back with it */
    h->slot.shed = 0;
    h->ses = NULL;
    h->rest = REST_ASLEEP;
    lg_debug("HTTP/2 client %s: the connection sleeps", h->c->peer_text);
}

/*
 * An idle spell has lasted: sleep if the client has emptied its HPACK
 * table, else (may_ask) ask it to, and give back the window it is owed so
 * a new session's count starts where the client's does.
 */
static void h2_rest(h2c_t *h, int may_ask)
{
    if (!rest_ready(h))
        return;
    nghttp2_session *ses = h->ses;
    int32_t owed = CONN_WINDOW - nghttp2_session_get_local_window_size(ses);
    /* local settings change on the client's ACK, when nghttp2 also empties
     * the table it decodes with; and none of ours may be in flight, as a
     * new session expects no ACK (a late one would be a PROTOCOL_ERROR) */
    if (owed == 0 && nghttp2_session_get_remote_window_size(ses) >= NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
        h->rest == REST_ASKED && h->settings_out == 0 &&
        nghttp2_session_get_local_settings(ses, NGHTTP2_SETTINGS_HEADER_TABLE_SIZE) == 0) {
        h2_sleep(h);
        return;
    }
    if (!may_ask)
        return;
    if (owed > 0)
        nghttp2_submit_window_update(ses, NGHTTP2_FLAG_NONE, 0, owed);
    if (h->rest == REST_AWAKE) {
        nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0 };
        nghttp2_submit_settings(ses, NGHTTP2_FLAG_NONE, &iv, 1);
        h->rest = REST_ASKED;
    }
}

static uint8_t *frame_hd(uint8_t *p, size_t len, uint8_t type, uint8_t flags, int32_t sid)
{
    *p++ = (uint8_t)(len >> 16);
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
    *p++ = type;
    *p++ = flags;
    p[0] = (uint8_t)((uint32_t)sid >> 24);
    p[1] = (uint8_t)((uint32_t)sid >> 16);
    p[2] = (uint8_t)((uint32_t)sid >> 8);
    p[3] = (uint8_t)sid;
    return p + 4;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    *p++ = (uint8_t)(v >> 24);
    *p++ = (uint8_t)(v >> 16);
    *p++ = (uint8_t)(v >> 8);
    *p++ = (uint8_t)v;
    return p;
}

/*
 * A request head that leaves the HPACK tables as they are: the table size
 * update to 0 that the new session's decoder wants first (RFC 7541 4.2:
 * its size is ours, 0, and it starts from the default), :method GET,
 * :scheme http, :path / from the static table, and :authority "x" as a
 * literal not indexed (6.3, 6.1, 6.2.2).
 */
static const uint8_t stand_in_head[] = { 0x20, 0x82, 0x86, 0x84, 0x01, 0x01, 'x' };

/*
 * A session again, in the old one's state: it is fed the client's preface
 * and settings, the ACK of ours and the window the client had given, and
 * what it answers is dropped (the client had all that).  The old streams
 * are stood in for by one: a request on the highest stream the client
 * opened, reset at once, so that the new session counts every lower ID as
 * used and closed -- a late RST_STREAM, WINDOW_UPDATE or DATA on an old
 * stream is ignored and late trailers fall to on_begin_frame's rule, as
 * before the sleep, rather than being idle-stream errors or new requests
 * -- and its GOAWAYs name that stream.  The callbacks ignore all of it
 * (REST_WAKING).  Then it offers header compression again.  -1: out of
 * memory.
 */
static int h2_wake(h2c_t *h)
{
    if (session_open(h, 0) < 0)
        return -1;
    uint8_t in[24 + 9 + REST_NSET * 6 + 9 + 13 + 9 + sizeof(stand_in_head) + 13], *p = in;
    memcpy(p, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    p += NGHTTP2_CLIENT_MAGIC_LEN;
    uint8_t *set = p;
    p += 9;
    for (int i = 0; i < REST_NSET; i++) {
        if (rest_ids[i] == NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES && h->client_set[i] > 1)
            continue;           /* never sent */
        *p++ = 0;
        *p++ = (uint8_t)rest_ids[i];
        p = put32(p, h->client_set[i]);
    }
    frame_hd(set, (size_t)(p - set - 9), NGHTTP2_SETTINGS, NGHTTP2_FLAG_NONE, 0);
    p = frame_hd(p, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
    if (h->send_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
        p = frame_hd(p, 4, NGHTTP2_WINDOW_UPDATE, NGHTTP2_FLAG_NONE, 0);
        p = put32(p, (uint32_t)(h->send_window - NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE));
    }
    if (h->last_sid > 0) {
        p = frame_hd(p, sizeof(stand_in_head), NGHTTP2_HEADERS,
                     NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_END_HEADERS, h->last_sid);
        memcpy(p, stand_in_head, sizeof(stand_in_head));
        p += sizeof(stand_in_head);
        p = frame_hd(p, 4, NGHTTP2_RST_STREAM, NGHTTP2_FLAG_NONE, h->last_sid);
        p = put32(p, NGHTTP2_CANCEL);
    }
    h->rest = REST_WAKING;
    int ok = lg_h2io_discard(h->ses) == 0 &&
             nghttp2_session_mem_recv(h->ses, in, (size_t)(p - in)) == p - in &&
             lg_h2io_discard(h->ses) == 0;
    h->rest = REST_AWAKE;
    if (!ok) {
        nghttp2_session_del(h->ses);
        h->ses = NULL;
        h->rest = REST_ASLEEP;
        return -1;
    }
    /* header compression stays off until a stream starts (on_begin_headers
     * offers it then): woken by frames that open no stream (a PING), the
     * connection rests again without asking the client anything -- but
     * not before a second has passed, so that a client sending frames
     * apart cannot make a session for each one */
    h->rest = REST_ASKED;
    h->stand_in = h->last_sid;
    h->settings_out = 0;
    h->slot_idle = -1;
    h->woke = lg_w.loop.now;
    lg_debug("HTTP/2 client %s: the connection wakes", h->c->peer_text);
    return 0;
}

/* Awake and idle, and this spell's step to rest not yet taken. */
static int rest_due(const h2c_t *h)
{
    return h->ses != NULL && h->slot_idle != h->c->t_idle;
}

/* When that step is: a second into the idle spell, or after the wake. */
static lg_msec_t rest_at(const h2c_t *h)
{
    lg_msec_t t = h->c->t_idle > h->woke ? h->c->t_idle : h->woke;
    return t + SLOT_RELEASE_MS;
}

/* When a connection without streams is closed for idleness. */
static lg_msec_t idle_deadline(const lg_conn_t *c)
{
    return c->t_idle + (lg_w.quitting ? DRAIN_GRACE_MS : c->bind->default_server->common.keepalive_timeout);
}

static void h2_arm(lg_conn_t *c)
{
    h2c_t *h = c->fe_data;
    const lg_common_t *sc = &c->bind->default_server->common;
    lg_msec_t t = -1;
    if (h->out && lg_buf_len(h->out) && !c->e.w_ready) {
        t = sc->send_timeout;   /* a client that stopped reading */
    } else if (h->nstreams == 0) {
        lg_msec_t at = idle_deadline(c);
        if (rest_due(h) && rest_at(h) < at)
            at = rest_at(h);
        t = at > lg_w.loop.now ? at - lg_w.loop.now : 0;
    }
    if (t < 0)
        lg_timer_del(&lg_w.loop, &c->timer);
    else
        lg_timer_set(&lg_w.loop, &c->timer, t);
}

static void h2_timeout(lg_conn_t *c)
{
    h2c_t *h = c->fe_data;
    if (h->out && lg_buf_len(h->out) && !c->e.w_ready) {
        lg_conn_close(c, "client timed out receiving");
        return;
    }
    if (h->nstreams == 0) {
        if (lg_w.loop.now < idle_deadline(c)) {
            /* a second without streams: a step to rest, and the frame
             * buffer's pages go back once it holds nothing -- every frame
             * out (want_write 0 means the last was taken whole) and
             * written.  Not before: a client between requests does not
             * pay for it each time.  The idle timeout is still to come */
            if (rest_due(h) && rest_at(h) <= lg_w.loop.now) {
                h->slot_idle = c->t_idle;
                h2_rest(h, 1);
                if (h->ses) {
                    h2_flush(h);
                    if (c->state != LG_C_FRONT)
                        return;
                    if (h->out == NULL && !nghttp2_session_want_write(h->ses))
                        lg_h2io_release(&h->slot);
                }
            }
            h2_arm(c);
            return;
        }
        /* idle: say so, then go (the GOAWAY is best effort) */
        if (h->ses == NULL && h2_wake(h) < 0) {
            lg_conn_close(c, "HTTP/2 idle timeout");
            return;
        }
        nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE, last_proc(h), NGHTTP2_NO_ERROR, NULL, 0);
        h2_flush(h);
        lg_conn_close(c, lg_w.quitting ? "shutting down" : "HTTP/2 idle timeout");
    }
}

/* Graceful stop: GOAWAY with the last stream taken; those finish. */
static void h2_drain(lg_conn_t *c)
{
    h2c_t *h = c->fe_data;
    if (h->ses == NULL && h2_wake(h) < 0) {
        lg_conn_close(c, "out of memory");
        return;
    }
    if (!h->goaway) {
        h->goaway = 1;
        nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE, last_proc(h), NGHTTP2_NO_ERROR, NULL, 0);
    }
    lg_conn_run(c);
}

static void h2_close(lg_conn_t *c)
{
    h2c_t *h = c->fe_data;
    if (h == NULL)
        return;
    c->fe_data = NULL;
    while (h->streams)
        stream_free(h->streams);
    if (h->ses) {
        /* its close callbacks find no streams: they are gone */
        nghttp2_session_del(h->ses);
    }
    lg_buf_put(h->out);
    /* whoever closed may be inside this connection's step: it goes after the round */
    lg_loop_defer_free(&lg_w.loop, h);
}

static const lg_frontend_t h2_frontend = {
    .name = "HTTP/2",
    .start = h2_start,
    .step = h2_step,
    .arm = h2_arm,
    .timeout = h2_timeout,
    .drain = h2_drain,
    .done = h2_done,
    .error = NULL,
    .tunnel_ok = "HTTP/1.1 200 Connection established\r\n\r\n",
    .tunnel_ok_len = sizeof("HTTP/1.1 200 Connection established\r\n\r\n") - 1,
    .multiplexed = 1,
    .run = h2_run,
    .abort = h2_abort,
    .close = h2_close,
};

void lg_h2_register(void)
{
    lg_conn_frontend_register(LG_PROTO_HTTP2, &h2_frontend);
}

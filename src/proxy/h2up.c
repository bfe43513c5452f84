/*
 * HTTP/2 to upstreams (RFC 9113), on libnghttp2's client session: the
 * servers of an upstream with protocol "h2c" (prior knowledge) or "h2"
 * (TLS, ALPN) get one multiplexed connection per worker -- or up to
 * h2_connections -- instead of a pool of HTTP/1.1 ones.
 *
 * A request's upstream "connection" (lg_uconn_t) is one stream of such a
 * session, and its end uc->e is a virtual end (io.fd -1, ops), so the
 * reverse proxy's stages run unchanged:
 *   writev  takes the HTTP/1.1 request they write -- head, then a body by
 *           Content-Length or chunked -- and turns the head into HEADERS
 *           (:method, :scheme, :authority from Host, :path; connection-
 *           specific fields dropped, "te: trailers" added as nginx's
 *           grpc_pass does) and the body, de-chunked, into DATA under the
 *           server's flow control: at most QMAX bytes wait, then LG_AGAIN
 *   recv    gives the response as HTTP/1.1: a status line and the fields,
 *           then the body -- with the server's Content-Length when it gave
 *           one, else chunked, and the trailer fields (gRPC's grpc-status)
 *           in the last chunk, where the response pipe picks them up.  Our
 *           window opens only as the request reads: backpressure.
 *
 * Concurrency: nghttp2 holds back HEADERS beyond the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS until a stream closes; a new request
 * goes to the least loaded session under that limit, or to a new one while
 * there are fewer than h2_connections.  A GOAWAY takes the session out of
 * the choice; the streams above its last-stream-id were not processed
 * (REFUSED_STREAM), so the request goes again on another connection, as
 * over a stale pooled HTTP/1.1 connection (uc->reused) -- while the
 * server answers some: one that refuses everything cannot loop requests.
 *
 * Driving: the session's socket events and a zero-delay "kick" timer read
 * frames, write what nghttp2 queued, and then run the requests whose
 * streams got something (a run queue, as the HTTP/2 front end keeps): a
 * request is never run, and nghttp2 never re-entered, from nghttp2's own
 * callbacks.
 */
#include "proxy/proxy.h"

#include "net/h2io.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/message.h"
#include "net/tls.h"

#define STREAM_WINDOW 65535             /* our window per stream: what one response may buffer */
#define CONN_WINDOW (1 << 24)
#define QMAX (64 * 1024)                /* request body bytes waiting for DATA frames */
#define RB_MAX (4 * STREAM_WINDOW + LG_BUF_SIZE)   /* response bytes waiting for the request */
#define HEAD_MAX (64 * 1024)
#define IDLE_TIMEOUT 60000
#define STREAM_ID_LAST 0x7fff0000u         /* a session opens no stream past this: a new one does */

typedef struct h2sess h2sess_t;
typedef struct lg_h2ust h2ust_t;

/* bytes [pos, len) of p (malloc'd) */
typedef struct gbuf {
    char  *p;
    size_t pos, len, cap;
} gbuf_t;

struct h2sess {
    uint32_t         magic;
    lg_end_t         e;                 /* the socket (and TLS) */
    nghttp2_session *ses;
    lg_upstream_t   *up;
    size_t           si;
    h2sess_t        *next;              /* the server's sessions that take streams */
    int              listed;
    int              connected, tls_done, dead, goaway, busy;
    unsigned         answered;          /* streams it answered whole */
    int32_t          goaway_last;
    const char      *why;               /* why it died */
    h2ust_t         *streams;           /* every stream with state here */
    unsigned         nstreams;
    h2ust_t         *runq, *runq_tail;
    lg_buf_t        *out, *in;          /* owned */
    lg_timer_t       kick, timer;
    lg_msec_t        connect_timeout;
};

#define SESS_MAGIC 0x48325553u

enum { Q_HEAD = 0, Q_BODY = 1, Q_DONE = 2 };
enum { R_HEAD = 0, R_BODY = 1, R_DONE = 2 };

struct lg_h2ust {
    uint32_t        magic;
    lg_uconn_t     *uc;                 /* the request's, until released */
    h2sess_t       *s;                  /* NULL once the session is gone */
    int32_t         id;                 /* 0 until HEADERS were submitted */
    h2ust_t        *prev, *next, *rnext;
    int             queued;
    /* the request */
    int             qstate;
    lg_buf_t       *qhead;              /* owned: the head as it is written */
    size_t          qscan;
    lg_body_kind_t  qbody;
    int64_t         qleft;
    http_chunked_t  qch;
    gbuf_t          qdata;              /* body bytes for DATA frames */
    int             q_eof, deferred, is_head;
    /* the response */
    int             rstate, status, chunked, has_len, nobody;
    gbuf_t          rh, tr, rb;         /* head fields, trailer fields, HTTP/1.1 bytes out */
    size_t          unconsumed;         /* DATA bytes in rb not yet given back to the window */
    int             err, closed;
};

#define UST_MAGIC 0x48325554u

/* per upstream server: the sessions that take streams, and how many
 * refused streams went again since one was last answered there */
typedef struct h2srv {
    h2sess_t *list;
    unsigned  streak;
} h2srv_t;

#define MAX_REFUSED_STREAK 64

static h2srv_t **tab;                   /* [upstream index][server] */
static size_t ntab;
static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
/* the upstream head has the client's fields and the ones the proxy adds */
#define MAX_FIELDS (2 * LG_MAX_HEADERS)
static http_header_t scratch_headers[MAX_FIELDS];
static nghttp2_nv scratch_nv[MAX_FIELDS + 8];
static char scratch_names[LG_BUF_SIZE];

static void sess_drive(h2sess_t *s);
static void sess_flush(h2sess_t *s);
static const lg_end_ops_t stream_ops;

/* ---- byte buffers ---- */

static int gb_add(gbuf_t *g, const void *d, size_t n, size_t max)
{
    if (g->pos == g->len)
        g->pos = g->len = 0;
    if (g->len + n > g->cap && g->pos) {
        memmove(g->p, g->p + g->pos, g->len - g->pos);
        g->len -= g->pos;
        g->pos = 0;
    }
    if (g->len + n > g->cap) {
        if (g->len + n > max)
            return -1;
        size_t c = g->cap ? g->cap : 1024;
        while (c < g->len + n)
            c *= 2;
        if (c > max)
            c = max;
        char *q = realloc(g->p, c);
        if (q == NULL)
            return -1;
        g->p = q;
        g->cap = c;
    }
    memcpy(g->p + g->len, d, n);
    g->len += n;
    return 0;
}

static inline size_t gb_n(const gbuf_t *g) { return g->len - g->pos; }

static void gb_free(gbuf_t *g)
{
    free(g->p);
    memset(g, 0, sizeof(*g));
}

static inline h2ust_t *end_stream(lg_end_t *e)
{
    lg_uconn_t *uc = (lg_uconn_t *)((char *)e - offsetof(lg_uconn_t, e));
    return uc->h2;
}

/* ---- the per-server tables ---- */

int lg_h2up_init(void)
{
    lg_conf_t *c = lg_w.conf;
    ntab = c->nupstreams;
    tab = calloc(ntab ? ntab : 1, sizeof(*tab));
    if (tab == NULL)
        return -1;
    for (size_t u = 0; u < ntab; u++) {
        if (!c->upstreams[u].h2)
            continue;
        tab[u] = calloc(c->upstreams[u].nservers, sizeof(h2srv_t));
        if (tab[u] == NULL)
            return -1;
    }
    return 0;
}

static h2srv_t *srv_of(lg_upstream_t *up, size_t si)
{
    if (up->dyn || up->index < 0 || (size_t)up->index >= ntab || tab[up->index] == NULL)
        return NULL;
    return &tab[up->index][si];
}

static h2sess_t **sess_head(lg_upstream_t *up, size_t si)
{
    h2srv_t *v = srv_of(up, si);
    return v ? &v->list : NULL;
}

/*
 * A stream the server did not process (refused, or above its GOAWAY's
 * last stream): the request may go again at once, as over a stale pooled
 * connection.  A session that answered streams, or whose GOAWAY names
 * streams it takes (last stream > 0), has shown the server works (one that
 * takes N requests a connection, then GOAWAY, refuses dozens at once when
 * many were in flight); only refusals on sessions that took nothing count
 * towards MAX_REFUSED_STREAK in a row, past which they are the failure
 * they look like.
 */
static void stream_refused(h2sess_t *s, h2ust_t *st)
{
    h2srv_t *v = srv_of(s->up, s->si);
    if (st->uc == NULL || st->rstate != R_HEAD || gb_n(&st->rb) || v == NULL)
        return;
    if (s->answered || (s->goaway && s->goaway_last > 0) || v->streak++ < MAX_REFUSED_STREAK)
        st->uc->reused = 1;
}

/* No more streams for this session (GOAWAY, an error, its end). */
static void sess_unlist(h2sess_t *s)
{
    if (!s->listed)
        return;
    s->listed = 0;
    h2sess_t **pp = sess_head(s->up, s->si);
    while (pp && *pp && *pp != s)
        pp = &(*pp)->next;
    if (pp && *pp)
        *pp = s->next;
    s->next = NULL;
}

/* ---- streams ---- */

static void kick(h2sess_t *s)
{
    if (!s->busy)
        lg_timer_set(&lg_w.loop, &s->kick, 0);
}

static void runq_add(h2ust_t *st)
{
    h2sess_t *s = st->s;
    if (s == NULL || st->queued)
        return;
    st->queued = 1;
    st->rnext = NULL;
    if (s->runq_tail)
        s->runq_tail->rnext = st;
    else
        s->runq = st;
    s->runq_tail = st;
    kick(s);
}

static void runq_remove(h2ust_t *st)
{
    h2sess_t *s = st->s;
    if (s == NULL || !st->queued)
        return;
    h2ust_t **pp = &s->runq, *prev = NULL;
    while (*pp && *pp != st) {
        prev = *pp;
        pp = &(*pp)->rnext;
    }
    if (*pp)
        *pp = st->rnext;
    if (s->runq_tail == st)
        s->runq_tail = prev;
    st->queued = 0;
}

/* Something for the request: data, the end, an error, room. */
static void stream_ready(h2ust_t *st)
{
    if (st->uc) {
        st->uc->e.r_ready = 1;
        runq_add(st);
    }
}

static void stream_unlink(h2ust_t *st)
{
    h2sess_t *s = st->s;
    if (s == NULL)
        return;
    runq_remove(st);
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    s->nstreams--;
    st->s = NULL;
}

static void stream_free(h2ust_t *st)
{
    stream_unlink(st);
    lg_buf_put(st->qhead);
    gb_free(&st->qdata);
    gb_free(&st->rh);
    gb_free(&st->tr);
    gb_free(&st->rb);
    st->magic = 0;
    lg_loop_defer_free(&lg_w.loop, st);
}

/* The stream is freed once nobody refers to it: neither the request nor
 * nghttp2 (a stream closed, or never submitted, or its session gone). */
static void stream_maybe_free(h2ust_t *st)
{
    if (st->uc == NULL && (st->s == NULL || st->closed || st->id == 0))
        stream_free(st);
}

/* ---- the response, as HTTP/1.1 bytes ---- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return "Status";
    }
}

/* The final response head is complete: its HTTP/1.1 form into rb. */
static int emit_head(h2ust_t *st, int end_stream)
{
    char line[64];
    if (gb_n(&st->tr) && !end_stream) {
        /* grpc-status in a head that does not end the stream: a field */
        if (gb_add(&st->rh, st->tr.p + st->tr.pos, gb_n(&st->tr), HEAD_MAX) < 0)
            return -1;
        gb_free(&st->tr);
    }
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", st->status, reason(st->status));
    if (gb_add(&st->rb, line, (size_t)n, RB_MAX) < 0 ||
        (gb_n(&st->rh) && gb_add(&st->rb, st->rh.p + st->rh.pos, gb_n(&st->rh), RB_MAX) < 0))
        return -1;
    st->nobody = st->is_head || st->status == 204 || st->status == 304;
    const char *framing = "";
    if (st->nobody || st->has_len)
        framing = "";
    else if (end_stream && gb_n(&st->tr) == 0)
        framing = "content-length: 0\r\n";
    else {
        framing = "transfer-encoding: chunked\r\n";
        st->chunked = 1;
    }
    if (gb_add(&st->rb, framing, strlen(framing), RB_MAX) < 0 || gb_add(&st->rb, "\r\n", 2, RB_MAX) < 0)
        return -1;
    gb_free(&st->rh);
    st->rstate = R_BODY;
    return 0;
}

/* END_STREAM: the last chunk, with the trailer fields. */
static int emit_end(h2ust_t *st)
{
    if (st->rstate == R_DONE)
        return 0;
    if (st->chunked) {
        if (gb_add(&st->rb, "0\r\n", 3, RB_MAX) < 0 ||
            (gb_n(&st->tr) && gb_add(&st->rb, st->tr.p + st->tr.pos, gb_n(&st->tr), RB_MAX) < 0) ||
            gb_add(&st->rb, "\r\n", 2, RB_MAX) < 0)
            return -1;
    }
    gb_free(&st->tr);
    st->rstate = R_DONE;
    return 0;
}

/* ---- nghttp2's callbacks: they note and queue, never run a request ---- */

static h2ust_t *stream_of(nghttp2_session *ses, int32_t id)
{
    h2ust_t *st = id ? nghttp2_session_get_stream_user_data(ses, id) : NULL;
    return st && st->magic == UST_MAGIC ? st : NULL;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2ust_t *st = stream_of(ses, frame->hd.stream_id);
    if (st == NULL || st->uc == NULL || st->rstate == R_DONE)
        return 0;
    if (st->rstate == R_HEAD && nl == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;
        for (size_t i = 0; i < vl && i < 3; i++)
            v = v * 10 + (value[i] - '0');
        st->status = v;
        return 0;
    }
    if (nl && name[0] == ':')
        return 0;
    /* gRPC's "trailers-only" answer has grpc-status in its one HEADERS:
     * kept aside, to go as the trailer section it stands for */
    int grpc = nl > 5 && memcmp(name, "grpc-", 5) == 0 &&
               ((nl == 11 && memcmp(name, "grpc-status", 11) == 0) ||
                (nl == 12 && memcmp(name, "grpc-message", 12) == 0) ||
                (nl == 23 && memcmp(name, "grpc-status-details-bin", 23) == 0));
    gbuf_t *g = st->rstate == R_HEAD && !grpc ? &st->rh : &st->tr;
    if (st->rstate == R_HEAD && nl == 14 && memcmp(name, "content-length", 14) == 0)
        st->has_len = 1;
    if (gb_add(g, name, nl, HEAD_MAX) < 0 || gb_add(g, ": ", 2, HEAD_MAX) < 0 ||
        gb_add(g, value, vl, HEAD_MAX) < 0 || gb_add(g, "\r\n", 2, HEAD_MAX) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;   /* the stream is reset */
    return 0;
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
    h2sess_t *s = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        s->goaway = 1;
        s->goaway_last = frame->goaway.last_stream_id;
        sess_unlist(s);
        lg_info("HTTP/2 upstream \"%s\" server %s sent GOAWAY (last stream %d, code %u)",
                s->up->name, s->up->servers[s->si].addr.text, frame->goaway.last_stream_id,
                frame->goaway.error_code);
        return 0;
    }
    h2ust_t *st = stream_of(ses, frame->hd.stream_id);
    if (st == NULL || st->uc == NULL)
        return 0;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (st->rstate == R_HEAD) {
            if (st->status < 200) {
                /* interim (100, 102, 103): its HTTP/1.1 form before the
                 * final head's; the reverse proxy decides what goes on */
                char line[64];
                int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", st->status,
                                 reason(st->status));
                if (gb_add(&st->rb, line, (size_t)n, RB_MAX) < 0 ||
                    (gb_n(&st->rh) && gb_add(&st->rb, st->rh.p + st->rh.pos, gb_n(&st->rh), RB_MAX) < 0) ||
                    gb_add(&st->rb, "\r\n", 2, RB_MAX) < 0)
                    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                gb_free(&st->rh);
                gb_free(&st->tr);
                st->status = 0;
                st->has_len = 0;
                stream_ready(st);
                return 0;
            }
            if (emit_head(st, end) < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        if (end && emit_end(st) < 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        stream_ready(st);
    } else if (frame->hd.type == NGHTTP2_DATA && end) {
        if (emit_end(st) < 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        stream_ready(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    h2ust_t *st = stream_of(ses, id);
    if (st == NULL || st->uc == NULL || st->rstate != R_BODY || st->nobody) {
        nghttp2_session_consume(ses, id, len);  /* nobody reads it: let more come */
        return 0;
    }
    if (st->chunked) {
        char hex[24];
        int n = snprintf(hex, sizeof(hex), "%zx\r\n", len);
        if (len && (gb_add(&st->rb, hex, (size_t)n, RB_MAX) < 0 ||
                    gb_add(&st->rb, data, len, RB_MAX) < 0 || gb_add(&st->rb, "\r\n", 2, RB_MAX) < 0))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else if (gb_add(&st->rb, data, len, RB_MAX) < 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->unconsumed += len;
    stream_ready(st);
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *ud)
{
    h2sess_t *s = ud;
    h2ust_t *st = stream_of(ses, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ses, id, NULL);
    st->closed = 1;
    if (st->rstate == R_DONE) {
        h2srv_t *v = srv_of(s->up, s->si);
        s->answered++;
        if (v)
            v->streak = 0;
    } else {
        /* not processed (a GOAWAY above it, REFUSED_STREAM, or HEADERS
         * nghttp2 could not send): safe to send again elsewhere, once the
         * session has shown it works */
        int refused = code == NGHTTP2_REFUSED_STREAM || (s->goaway && id > s->goaway_last);
        st->err = refused ? ECONNREFUSED : ECONNRESET;
        if (refused)
            stream_refused(s, st);
        if (st->uc)
            lg_debug("HTTP/2 upstream %s: stream %d closed (%u) before its response ended",
                     s->up->servers[s->si].addr.text, id, code);
    }
    if (st->uc) {
        st->uc->e.w_ready = 1;
        stream_ready(st);
    } else {
        stream_free(st);
    }
    return 0;
}

static ssize_t data_read_cb(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    (void)ud;
    h2ust_t *st = stream_of(ses, id);
    if (st == NULL || st->uc == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t have = gb_n(&st->qdata);
    if (have == 0) {
        if (st->q_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t k = have < length ? have : length;
    memcpy(buf, st->qdata.p + st->qdata.pos, k);
    st->qdata.pos += k;
    if (gb_n(&st->qdata) == 0 && st->q_eof)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!st->uc->e.w_ready) {
        st->uc->e.w_ready = 1;     /* room again: the request may write more */
        runq_add(st);
    }
    return (ssize_t)k;
}

/* ---- the stream as the request's upstream end ---- */

static ssize_t stream_recv(lg_end_t *e, void *buf, size_t n)
{
    h2ust_t *st = end_stream(e);
    size_t have = gb_n(&st->rb);
    if (have) {
        size_t k = have < n ? have : n;
        memcpy(buf, st->rb.p + st->rb.pos, k);
        st->rb.pos += k;
        /* the window opens by what was read (framing counted as payload
         * at worst: a few bytes early) */
        size_t c = k < st->unconsumed ? k : st->unconsumed;
        if (gb_n(&st->rb) == 0)
            c = st->unconsumed;
        st->unconsumed -= c;
        if (c && st->s && !st->s->dead) {
            nghttp2_session_consume(st->s->ses, st->id, c);
            sess_flush(st->s);
        }
        e->r_ready = gb_n(&st->rb) > 0 || st->rstate == R_DONE || st->err;
        return (ssize_t)k;
    }
    if (st->rstate == R_DONE)
        return 0;
    if (st->err || st->s == NULL) {
        errno = st->err ? st->err : ECONNRESET;
        return LG_ERROR;
    }
    e->r_ready = 0;
    e->want_r = 1;
    return LG_AGAIN;
}

static int skip_field(const http_header_t *f)
{
    static const char *const drop[] = {
        "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
        "upgrade", "te", "http2-settings", NULL,
    };
    for (int i = 0; drop[i]; i++)
        if (http_name_eq(f, drop[i]))
            return 1;
    return 0;
}

/* The request head is complete (hlen bytes in qhead): HEADERS.  0 or -1. */
static int submit_head(h2ust_t *st, const http_request_t *q)
{
    h2sess_t *s = st->s;
    lg_req_info_t ri;
    memset(&ri, 0, sizeof(ri));
    if (lg_http_analyze_request(q, &ri) != 0 || ri.connect || ri.body == LG_BODY_CLOSE)
        return -1;
    size_t n = 0, used = 0;
#define NV(nm, nl, v, vl) (scratch_nv[n++] = (nghttp2_nv){ (uint8_t *)(nm), (uint8_t *)(v), (nl), (vl), \
                                                         NGHTTP2_NV_FLAG_NONE })
    NV(":method", 7, q->method, q->method_len);
    const char *scheme = s->up->tls ? "https" : "http";
    NV(":scheme", 7, scheme, strlen(scheme));
    for (size_t i = 0; i < q->num_headers; i++)
        if (http_name_eq(&q->headers[i], "host")) {
            NV(":authority", 10, q->headers[i].value, q->headers[i].value_len);
            break;
        }
    NV(":path", 5, q->target, q->target_len);
    for (size_t i = 0; i < q->num_headers && n < MAX_FIELDS + 6; i++) {
        const http_header_t *f = &q->headers[i];
        if (skip_field(f))
            continue;
        if (used + f->name_len > sizeof(scratch_names))
            return -1;
        char *nm = scratch_names + used;
        for (size_t k = 0; k < f->name_len; k++)
            nm[k] = (char)((f->name[k] >= 'A' && f->name[k] <= 'Z') ? f->name[k] + 32 : f->name[k]);
        used += f->name_len;
        NV(nm, f->name_len, f->value, f->value_len);
    }
    /* as nginx's grpc_pass: the upstream may end the response with trailers */
    NV("te", 2, "trailers", 8);
#undef NV
    st->is_head = ri.is_head;
    int body = ri.body == LG_BODY_CHUNKED || (ri.body == LG_BODY_LENGTH && ri.length > 0);
    nghttp2_data_provider dp = { .source.ptr = NULL, .read_callback = data_read_cb };
    int32_t id = nghttp2_submit_request(s->ses, NULL, scratch_nv, n, body ? &dp : NULL, st);
    if (id < 0)
        return -1;
    st->id = id;
    if (!body) {
        st->qstate = Q_DONE;
        st->q_eof = 1;
    } else {
        st->qstate = Q_BODY;
        st->qbody = ri.body;
        st->qleft = ri.length;
        if (ri.body == LG_BODY_CHUNKED)
            http_chunked_init(&st->qch);
    }
    return 0;
}

/* Body bytes for DATA frames: how many were taken (0: no room), or -1. */
static ssize_t take_body(h2ust_t *st, const char *p, size_t n)
{
    size_t held = gb_n(&st->qdata);
    size_t room = held < QMAX ? QMAX - held : 0;
    if (room == 0)
        return 0;
    size_t k = n < room ? n : room;
    if (st->qbody == LG_BODY_LENGTH) {
        if ((int64_t)k > st->qleft)
            k = (size_t)st->qleft;
        if (gb_add(&st->qdata, p, k, QMAX + 1) < 0)
            return -1;
        st->qleft -= (int64_t)k;
        if (st->qleft == 0)
            st->q_eof = 1;
    } else {
        /* de-chunked in place, at the tail */
        size_t at = st->qdata.len - st->qdata.pos;
        if (gb_add(&st->qdata, p, k, QMAX + 1) < 0)
            return -1;
        char *raw = st->qdata.p + st->qdata.pos + at;
        size_t out = 0;
        if (http_chunked_decode(&st->qch, raw, k, &out) < 0)
            return -1;
        st->qdata.len = st->qdata.pos + at + out;
        if (st->qch.done)
            st->q_eof = 1;
    }
    if (st->q_eof)
        st->qstate = Q_DONE;
    if (st->deferred && (gb_n(&st->qdata) || st->q_eof)) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->s->ses, st->id);
    }
    return (ssize_t)k;
}

static ssize_t stream_writev(lg_end_t *e, const struct iovec *iov, int cnt)
{
    h2ust_t *st = end_stream(e);
    h2sess_t *s = st->s;
    if (st->err || s == NULL || s->dead || (st->closed && st->qstate != Q_DONE)) {
        errno = st->err ? st->err : st->closed ? EPIPE : ECONNRESET;
        return LG_ERROR;
    }
    static const http_limits_t lim = {
        .max_line = LG_BUF_SIZE / 2, .max_head = LG_BUF_SIZE, .max_headers = MAX_FIELDS,
    };
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        const char *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        while (n) {
            if (st->qstate == Q_HEAD) {
                if (st->qhead == NULL && (st->qhead = lg_buf_get()) == NULL) {
                    errno = ENOMEM;
                    return LG_ERROR;
                }
                lg_buf_t *b = st->qhead;
                size_t room = (size_t)(b->end - b->last);
                size_t k = n < room ? n : room;
                memcpy(b->last, p, k);
                b->last += k;
                http_request_t q = { .headers = scratch_headers };
                ssize_t rc = http_parse_request(b->pos, lg_buf_len(b), &q, &lim, &st->qscan);
                if (rc == HTTP_AGAIN && b->last < b->end) {
                    total += k;
                    p += k;
                    n -= k;
                    continue;
                }
                if (rc < 0 || submit_head(st, &q) < 0) {
                    errno = EPROTO;
                    return LG_ERROR;
                }
                /* bytes of this piece after the head are the body's: they
                 * go in again below */
                size_t before = lg_buf_len(b) - k;
                size_t head_part = (size_t)rc - before;
                total += head_part;
                p += head_part;
                n -= head_part;
                lg_buf_put(st->qhead);
                st->qhead = NULL;
                continue;
            }
            if (st->qstate == Q_DONE) {
                total += n;     /* past the body's end: nothing to send */
                p += n;
                n = 0;
                continue;
            }
            ssize_t k = take_body(st, p, n);
            if (k < 0) {
                errno = EPROTO;
                return LG_ERROR;
            }
            if (k == 0)
                goto full;
            total += (size_t)k;
            p += k;
            n -= (size_t)k;
        }
    }
    sess_flush(s);
    return (ssize_t)total;
full:
    sess_flush(s);
    if (total)
        return (ssize_t)total;
    e->w_ready = 0;
    e->want_w = 1;
    return LG_AGAIN;
}

static void stream_shutdown(lg_end_t *e)
{
    (void)e;                    /* the body's framing ends the stream */
}

static const lg_end_ops_t stream_ops = {
    .recv = stream_recv, .writev = stream_writev, .shutdown = stream_shutdown,
};

/* ---- the session ---- */

static void sess_fail(h2sess_t *s, const char *why)
{
    if (s->dead)
        return;
    s->dead = 1;
    s->why = why;
    sess_unlist(s);
    kick(s);
}

static void sess_read(h2sess_t *s);

/* Serialize what nghttp2 has and write it. */
static void sess_flush(h2sess_t *s)
{
    if (s->dead || !s->connected || (s->up->tls && !s->tls_done))
        return;
    for (int round = 0; round < 64; round++) {
        const char *why = NULL;
        lg_h2io_rc_t rc = lg_h2io_round(s->ses, &s->out, &s->e, &why);
        if (rc == LG_H2IO_ERROR) {
            if (strcmp(why, "send() failed") == 0) {
                /* a server that sent GOAWAY and closed resets what we were
                 * still writing; its GOAWAY (and answers) may wait unread:
                 * read them first, so the streams it never took go again
                 * rather than fail */
                s->e.r_ready = 1;
                sess_read(s);
                why = "send() to upstream failed";
            }
            sess_fail(s, why);
            return;
        }
        if (rc != LG_H2IO_WROTE)
            return;
    }
    kick(s);                    /* more to write: go on in a moment */
}

static void sess_read(h2sess_t *s)
{
    for (int round = 0; round < 16 && !s->dead; round++) {
        if (!s->e.r_ready) {
            s->e.want_r = 1;
            return;
        }
        if (s->in == NULL && (s->in = lg_buf_get()) == NULL) {
            sess_fail(s, "out of memory");
            return;
        }
        lg_buf_t *b = s->in;
        size_t room = (size_t)(b->end - b->start);
        ssize_t n = lg_end_recv(&s->e, b->start, room);
        if (n == 0) {
            sess_fail(s, "upstream closed the HTTP/2 connection");
            return;
        }
        if (n == LG_AGAIN) {
            lg_buf_put(s->in);
            s->in = NULL;
            return;
        }
        if (n < 0) {
            sess_fail(s, "recv() from upstream failed");
            return;
        }
        lg_end_short_read(&s->e, (size_t)n, room);
        ssize_t rv = nghttp2_session_mem_recv(s->ses, (const uint8_t *)b->start, (size_t)n);
        if (rv < 0) {
            lg_info("HTTP/2 upstream %s: %s", s->up->servers[s->si].addr.text,
                    nghttp2_strerror((int)rv));
            sess_fail(s, "HTTP/2 protocol error from upstream");
            return;
        }
    }
}

/* The session goes: its streams fail (or go again elsewhere), their
 * requests run once it is gone. */
static void sess_teardown(h2sess_t *s)
{
    sess_unlist(s);
    lg_timer_del(&lg_w.loop, &s->kick);
    lg_timer_del(&lg_w.loop, &s->timer);
    if (s->dead && s->why && s->nstreams)
        lg_error("HTTP/2 upstream \"%s\" server %s: %s", s->up->name,
                 s->up->servers[s->si].addr.text, s->why);
    h2ust_t *run = NULL;
    while (s->streams) {
        h2ust_t *st = s->streams;
        runq_remove(st);
        if (!st->closed && st->rstate != R_DONE) {
            int refused = st->id == 0 || (s->goaway && st->id > s->goaway_last);
            st->err = refused ? ECONNREFUSED : ECONNRESET;
            if (refused)
                stream_refused(s, st);
        }
        stream_unlink(st);
        st->closed = 1;
        if (st->uc) {
            st->uc->e.r_ready = st->uc->e.w_ready = 1;
            st->rnext = run;
            run = st;
        } else {
            stream_free(st);
        }
    }
    if (s->ses)
        nghttp2_session_del(s->ses);
    s->ses = NULL;
    lg_end_close(&s->e, &lg_w.loop);
    lg_buf_put(s->out);
    lg_buf_put(s->in);
    s->out = s->in = NULL;
    s->magic = 0;
    lg_loop_defer_free(&lg_w.loop, s);
    while (run) {
        h2ust_t *st = run;
        run = st->rnext;
        if (st->magic == UST_MAGIC && st->uc && st->uc->owner)
            lg_req_run(st->uc->owner);
    }
}

static void sess_run_queue(h2sess_t *s)
{
    h2ust_t *q = s->runq;
    s->runq = s->runq_tail = NULL;
    while (q) {
        h2ust_t *st = q;
        q = st->rnext;
        if (st->magic != UST_MAGIC)
            continue;
        st->queued = 0;
        if (st->uc && st->uc->owner)
            lg_req_run(st->uc->owner);
    }
}

static void sess_arm(h2sess_t *s)
{
    if (!s->connected || (s->up->tls && !s->tls_done))
        return;                 /* the connect timer runs */
    if (s->nstreams == 0)
        lg_timer_set(&lg_w.loop, &s->timer, IDLE_TIMEOUT);
    else
        lg_timer_del(&lg_w.loop, &s->timer);
}

/* TCP, then TLS with ALPN h2: 1 up, 0 waiting, -1 failed. */
static int sess_connect(h2sess_t *s)
{
    if (!s->connected) {
        if (!s->e.w_ready && !s->e.r_ready)
            return 0;
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(s->e.io.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            lg_log_errno(LG_LOG_ERROR, err, "connect() to HTTP/2 upstream \"%s\" server %s failed",
                         s->up->name, s->up->servers[s->si].addr.text);
            sess_fail(s, "connect() failed");
            return -1;
        }
        s->connected = 1;
        s->e.w_ready = 1;
    }
    if (s->up->tls && !s->tls_done) {
        if (s->e.ssl == NULL) {
            s->e.ssl = lg_tls_connect(s->up, s->si, s->e.io.fd);
            if (s->e.ssl == NULL) {
                sess_fail(s, "cannot start TLS");
                return -1;
            }
            static const unsigned char alpn[] = "\x02h2";
            SSL_set_alpn_protos(s->e.ssl, alpn, sizeof(alpn) - 1);
        }
        char why[256];
        int rc = lg_end_handshake(&s->e, why, sizeof(why));
        if (rc == LG_AGAIN)
            return 0;
        if (rc == LG_ERROR) {
            const char *v = lg_tls_verify_error(s->e.ssl);
            lg_error("TLS handshake with HTTP/2 upstream \"%s\" server %s failed: %s", s->up->name,
                     s->up->servers[s->si].addr.text, v ? v : why);
            sess_fail(s, "TLS handshake failed");
            return -1;
        }
        const unsigned char *p = NULL;
        unsigned pn = 0;
        SSL_get0_alpn_selected(s->e.ssl, &p, &pn);
        if (pn != 2 || memcmp(p, "h2", 2) != 0) {
            lg_error("HTTP/2 upstream \"%s\" server %s did not choose h2 by ALPN", s->up->name,
                     s->up->servers[s->si].addr.text);
            sess_fail(s, "no h2 by ALPN");
            return -1;
        }
        s->tls_done = 1;
    }
    lg_timer_del(&lg_w.loop, &s->timer);
    return 1;
}

static void sess_drive(h2sess_t *s)
{
    if (s->magic != SESS_MAGIC)
        return;
    s->busy++;
    if (!s->dead && sess_connect(s) == 1) {
        for (int round = 0; round < 16 && !s->dead; round++) {
            sess_read(s);
            sess_flush(s);
            sess_run_queue(s);
            sess_flush(s);
            if (s->runq == NULL && !s->e.r_ready &&
                !(s->e.w_ready && nghttp2_session_want_write(s->ses)))
                break;
        }
    }
    s->busy--;
    int over = s->dead || (s->connected && (!s->up->tls || s->tls_done) &&
                           !nghttp2_session_want_read(s->ses) && !nghttp2_session_want_write(s->ses) &&
                           (s->out == NULL || lg_buf_len(s->out) == 0));
    if (over || (s->goaway && s->nstreams == 0)) {
        sess_teardown(s);
        return;
    }
    sess_arm(s);
    if (s->runq)
        kick(s);
}

static void sess_io_cb(lg_io_t *io, uint32_t ev)
{
    h2sess_t *s = io->data;
    lg_end_on_event(&s->e, ev);
    sess_drive(s);
}

static void kick_cb(lg_timer_t *t)
{
    sess_drive(t->data);
}

static void timer_cb(lg_timer_t *t)
{
    h2sess_t *s = t->data;
    if (!s->connected || (s->up->tls && !s->tls_done)) {
        lg_error("HTTP/2 upstream \"%s\" server %s: connect timed out", s->up->name,
                 s->up->servers[s->si].addr.text);
        sess_fail(s, "connect timed out");
    } else if (s->nstreams == 0) {
        /* idle: say so and go */
        nghttp2_submit_goaway(s->ses, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        sess_flush(s);
        sess_fail(s, NULL);
    }
    sess_drive(s);
}

static void *h2_malloc(size_t size, void *ud) { (void)ud; return malloc(size); }
static void h2_free(void *p, void *ud) { (void)ud; free(p); }
static void *h2_calloc(size_t n, size_t size, void *ud) { (void)ud; return calloc(n, size); }
static void *h2_realloc(void *p, size_t size, void *ud) { (void)ud; return realloc(p, size); }

static int setup(void)
{
    if (callbacks)
        return 0;
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&options) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(callbacks, lg_h2io_send_cb);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_option_set_no_auto_window_update(options, 1);
    /* until the server's SETTINGS say how many streams it takes, one: a
     * burst of requests on a new connection must not run past a limit it
     * is about to announce (the SETTINGS come first, one round trip) */
    nghttp2_option_set_peer_max_concurrent_streams(options, 1);
    return 0;
}

static h2sess_t *sess_new(lg_req_t *r, lg_upstream_t *up, size_t si, int *err)
{
    if (setup() < 0) {
        *err = ENOMEM;
        return NULL;
    }
    const lg_addr_t *a = &up->servers[si].addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    if (a->ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    int rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    if (rc < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    h2sess_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    s->magic = SESS_MAGIC;
    s->up = up;
    s->si = si;
    s->e.io.fd = fd;
    s->e.io.cb = sess_io_cb;
    s->e.io.data = s;
    s->connected = rc == 0;
    s->e.w_ready = s->connected;
    s->kick.cb = kick_cb;
    s->kick.data = s;
    s->timer.cb = timer_cb;
    s->timer.data = s;
    nghttp2_mem mem = { NULL, h2_malloc, h2_free, h2_calloc, h2_realloc };
    if (nghttp2_session_client_new3(&s->ses, callbacks, s, options, &mem) != 0) {
        *err = ENOMEM;
        close(fd);
        free(s);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEAD_MAX },
    };
    nghttp2_submit_settings(s->ses, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(s->ses, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    if (lg_io_add(&lg_w.loop, &s->e.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        *err = errno;
        nghttp2_session_del(s->ses);
        close(fd);
        free(s);
        return NULL;
    }
    s->connect_timeout = up->connect_timeout ? up->connect_timeout
                                             : lg_req_common(r)->proxy_connect_timeout;
    lg_timer_set(&lg_w.loop, &s->timer, s->connect_timeout);
    h2sess_t **head = sess_head(up, si);
    if (head) {
        s->next = *head;
        *head = s;
        s->listed = 1;
    }
    if (s->connected)
        kick(s);
    return s;
}

lg_uconn_t *lg_h2up_get(lg_req_t *r, lg_upstream_t *up, size_t si, int *err)
{
    h2sess_t **head = sess_head(up, si);
    if (head == NULL) {
        *err = EINVAL;
        return NULL;
    }
    /* the least loaded session under the server's stream limit; else a new
     * one while there may be more; else the least loaded (nghttp2 holds its
     * HEADERS back until a stream closes) */
    h2sess_t *best = NULL, *least = NULL;
    int count = 0;
    for (h2sess_t *s = *head, *next; s; s = next) {
        next = s->next;
        if (nghttp2_session_get_next_stream_id(s->ses) > STREAM_ID_LAST) {
            /* out of stream IDs: it takes no more, and goes when its
             * streams are done (none of them refused) */
            sess_unlist(s);
            s->goaway = 1;
            s->goaway_last = INT32_MAX;
            kick(s);
            continue;
        }
        count++;
        uint32_t limit = nghttp2_session_get_remote_settings(s->ses,
                                                             NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        if (least == NULL || s->nstreams < least->nstreams)
            least = s;
        if (s->nstreams < limit && (best == NULL || s->nstreams < best->nstreams))
            best = s;
    }
    h2sess_t *s = best;
    if (s == NULL && count < up->h2_connections)
        s = sess_new(r, up, si, err);
    if (s == NULL)
        s = least;
    if (s == NULL)
        return NULL;
    lg_uconn_t *uc = calloc(1, sizeof(*uc));
    h2ust_t *st = calloc(1, sizeof(*st));
    if (uc == NULL || st == NULL) {
        free(uc);
        free(st);
        *err = ENOMEM;
        return NULL;
    }
    uc->magic = LG_UCONN_MAGIC;
    uc->e.io.fd = -1;
    uc->e.ops = &stream_ops;
    uc->e.w_ready = 1;
    uc->up = up;
    uc->server = si;
    uc->connected = 1;          /* the session connects for it */
    uc->tls_done = 1;
    uc->h2 = st;
    st->magic = UST_MAGIC;
    st->uc = uc;
    st->s = s;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    s->nstreams++;
    sess_arm(s);
    return uc;
}

void lg_h2up_release(lg_uconn_t *uc)
{
    h2ust_t *st = uc->h2;
    if (st == NULL)
        return;
    uc->h2 = NULL;
    st->uc = NULL;
    h2sess_t *s = st->s;
    if (s && !s->dead) {
        runq_remove(st);
        if (st->id > 0 && !st->closed)
            nghttp2_submit_rst_stream(s->ses, NGHTTP2_FLAG_NONE, st->id,
                                      st->rstate == R_DONE ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
        if (st->id > 0 && st->unconsumed)
            nghttp2_session_consume(s->ses, st->id, st->unconsumed);    /* the connection's window */
        st->unconsumed = 0;
    }
    stream_maybe_free(st);
    if (s && s->magic == SESS_MAGIC) {
        sess_flush(s);
        if (!s->busy)
            sess_arm(s);
        if (s->goaway && s->nstreams == 0)
            kick(s);
    }
}

/*
 * The field mapping HTTP/2 and HTTP/3 share: see mux.h.
 */
#include "pipeline/mux.h"

#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "core/hash.h"
#include "net/buf.h"

/* ---- the request ---- */

static int keep_str(lg_req_t *r, lg_str_t *dst, const uint8_t *p, size_t n)
{
    char *s = lg_arena_alloc(&r->arena, n + 1);
    if (s == NULL)
        return -1;
    memcpy(s, p, n);
    s[n] = 0;
    dst->p = s;
    dst->n = n;
    return 0;
}

static void add_field(lg_mux_req_t *q, const char *name, size_t nl, const char *value, size_t vl)
{
    if (q->nh >= LG_MAX_HEADERS) {
        q->status = 431;
        return;
    }
    q->hdrs[q->nh++] = (http_header_t){ name, nl, value, vl };
}

int lg_mux_req_init(lg_mux_req_t *q, lg_req_t *r)
{
    memset(q, 0, sizeof(*q));
    /* entries are written before they are read (nh counts them): only
     * Host's place needs to start empty, not 3 KiB a stream */
    q->hdrs = lg_arena_alloc(&r->arena, sizeof(http_header_t) * (LG_MAX_HEADERS + 1));
    if (q->hdrs == NULL)
        return -1;
    q->hdrs[0] = (http_header_t){ 0 };
    q->nh = 1;                  /* room for Host, first */
    return 0;
}

lg_mux_size_t lg_mux_req_account(lg_mux_req_t *q, size_t nl, size_t vl, int64_t limit)
{
    q->hsize += nl + vl + 32;
    q->nfields++;
    if (q->hsize <= (size_t)limit && !q->status)
        return LG_MUX_SIZE_OK;
    q->status = 431;
    /* far past the limit: a compression bomb, not a big cookie */
    if (q->hsize > (size_t)limit * 4 || q->nfields > LG_MAX_HEADERS * 4)
        return LG_MUX_SIZE_BOMB;
    return LG_MUX_SIZE_OVER;
}

static int is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

int lg_mux_req_field(lg_mux_req_t *q, lg_req_t *r, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl)
{
    if (nl && name[0] == ':') {
        lg_str_t *dst = is(name, nl, ":method") ? &q->method :
                        is(name, nl, ":path") ? &q->path :
                        is(name, nl, ":authority") ? &q->authority :
                        is(name, nl, ":scheme") ? &q->scheme :
                        is(name, nl, ":protocol") ? &q->protocol : NULL;
        return dst ? keep_str(r, dst, value, vl) : 0;
    }
    int cookie = is(name, nl, "cookie");
    if (cookie && q->cookie) {
        /* cookie crumbs become one field for HTTP/1.1 */
        http_header_t *f = &q->hdrs[q->cookie - 1];
        char *v = lg_arena_alloc(&r->arena, f->value_len + 2 + vl + 1);
        if (v == NULL)
            return -1;
        memcpy(v, f->value, f->value_len);
        memcpy(v + f->value_len, "; ", 2);
        memcpy(v + f->value_len + 2, value, vl);
        v[f->value_len + 2 + vl] = 0;
        f->value = v;
        f->value_len += 2 + vl;
        return 0;
    }
    lg_str_t n, v;
    if (keep_str(r, &n, name, nl) < 0 || keep_str(r, &v, value, vl) < 0)
        return -1;
    if (cookie)
        q->cookie = (int)q->nh + 1;
    if (is(name, nl, "host")) {
        q->hdrs[0] = (http_header_t){ n.p, n.n, v.p, v.n };     /* Host stays first */
        return 0;
    }
    add_field(q, n.p, n.n, v.p, v.n);
    return 0;
}

/* A random Sec-WebSocket-Key for the HTTP/1.1 upstream of a WebSocket stream. */
static const char *ws_key(lg_req_t *r)
{
    unsigned char raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t x = lg_rand_next(&lg_w.rng);
        memcpy(raw + i, &x, 8);
    }
    char *k = lg_arena_alloc(&r->arena, 25);
    if (k)
        EVP_EncodeBlock((unsigned char *)k, raw, 16);
    return k;
}

int lg_mux_req_build(lg_mux_req_t *q, lg_req_t *r, int version, int end_stream, int ws_ok, int *ws)
{
    http_request_t *rq = &r->req;
    *ws = 0;
    /* Host: the client's, else :authority (RFC 9113 8.3.1, RFC 9114 4.3.1) */
    if (q->hdrs[0].name == NULL) {
        if (q->authority.n)
            q->hdrs[0] = (http_header_t){ "host", 4, q->authority.p, q->authority.n };
        else
            q->hdrs[0] = (http_header_t){ "x-legate-no-host", 16, "", 0 };
    } else if (q->authority.n && (q->hdrs[0].value_len != q->authority.n ||
               strncasecmp(q->hdrs[0].value, q->authority.p, q->authority.n) != 0)) {
        q->status = 400;        /* two different authorities: malformed */
    }
    int connect = q->method.n == 7 && memcmp(q->method.p, "CONNECT", 7) == 0;
    if (connect && q->protocol.n) {
        /* extended CONNECT (RFC 8441, RFC 9220): a WebSocket to an HTTP/1.1
         * upstream is its GET with Upgrade; only a 101 opens the tunnel */
        if (!ws_ok || !(q->protocol.n == 9 && strncasecmp(q->protocol.p, "websocket", 9) == 0)) {
            q->status = 501;
        } else {
            const char *key = ws_key(r);
            if (key == NULL) {
                q->status = 500;
            } else {
                *ws = 1;
                add_field(q, "upgrade", 7, "websocket", 9);
                add_field(q, "connection", 10, "upgrade", 7);
                add_field(q, "sec-websocket-key", 17, key, strlen(key));
            }
        }
        rq->method = "GET";
        rq->method_len = 3;
        rq->target = q->path.p ? q->path.p : "/";
        rq->target_len = q->path.p ? q->path.n : 1;
    } else {
        rq->method = q->method.p ? q->method.p : "GET";
        rq->method_len = q->method.p ? q->method.n : 3;
        rq->target = connect ? q->authority.p : q->path.p;
        rq->target_len = connect ? q->authority.n : q->path.n;
        if (rq->target == NULL || q->method.p == NULL) {
            rq->target = "/";
            rq->target_len = 1;
            q->status = 400;
        }
    }
    if (q->hdrs[0].name_len == 16)      /* no authority at all */
        q->hdrs[0] = q->hdrs[--q->nh];
    rq->version = version;
    rq->headers = q->hdrs;
    rq->num_headers = q->nh;
    int bad = lg_http_analyze_request(rq, &r->ri);
    if (!q->status)
        q->status = bad;
    /* the framing is the stream's: END_STREAM (a FIN) ends the body */
    if (end_stream || *ws || r->ri.connect)
        r->ri.body = LG_BODY_NONE;
    else if (r->ri.body != LG_BODY_LENGTH)
        r->ri.body = LG_BODY_CLOSE;
    r->server = lg_route_server(r->conn->bind, r->ri.host);
    r->keep_alive = 1;          /* the connection's business, not the request's */
    r->t_start = lg_w.loop.now;
    return r->ri.body != LG_BODY_NONE || *ws || r->ri.connect;
}

/* ---- the response ---- */

static int name_is(const http_header_t *f, const char *s)
{
    return f->name_len == strlen(s) && strncasecmp(f->name, s, f->name_len) == 0;
}

/* Lowercase p into the scratch room: NULL when it is full. */
static const char *lower(const char *p, size_t n, char *scratch, size_t cap, size_t *used)
{
    if (*used + n > cap)
        return NULL;
    char *d = scratch + *used;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
    *used += n;
    return d;
}

int lg_mux_response_fields(const http_response_t *rsp, int status, int ws, char code[4],
                           lg_mux_nv_t *out, size_t max, char *scratch, size_t cap)
{
    code[0] = (char)('0' + status / 100 % 10);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    code[3] = 0;
    size_t n = 0, used = 0;
    out[n++] = (lg_mux_nv_t){ (const uint8_t *)":status", (const uint8_t *)code, 7, 3 };
    for (size_t i = 0; i < rsp->num_headers && n < max; i++) {
        const http_header_t *f = &rsp->headers[i];
        if (name_is(f, "connection") || name_is(f, "keep-alive") || name_is(f, "proxy-connection") ||
            name_is(f, "transfer-encoding") || name_is(f, "upgrade"))
            continue;
        if (ws && name_is(f, "sec-websocket-accept"))
            continue;
        const char *nm = lower(f->name, f->name_len, scratch, cap, &used);
        if (nm == NULL)
            return -1;
        out[n++] = (lg_mux_nv_t){ (const uint8_t *)nm, (const uint8_t *)f->value, f->name_len,
                                  f->value_len };
    }
    return (int)n;
}

size_t lg_mux_trailer_fields(const char *text, lg_mux_nv_t *out, size_t max, char *scratch, size_t cap)
{
    size_t n = 0, used = 0;
    for (const char *p = text; *p && n < max;) {
        const char *eol = strstr(p, "\r\n"), *colon = strchr(p, ':');
        if (eol == NULL)
            break;
        if (colon && colon < eol) {
            const char *nm = lower(p, (size_t)(colon - p), scratch, cap, &used);
            const char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            if (nm)
                out[n++] = (lg_mux_nv_t){ (const uint8_t *)nm, (const uint8_t *)v, (size_t)(colon - p),
                                          (size_t)(eol - v) };
        }
        p = eol + 2;
    }
    return n;
}

int lg_mux_take_head(lg_buf_t **ohead, size_t *oscan, const char *p, size_t n, size_t *took,
                     const char **rest, size_t *extra,
                     int (*submit)(void *st, const http_response_t *rsp), void *st)
{
    static http_header_t scratch_headers[LG_MAX_HEADERS];
    static const http_limits_t lim = {
        .max_line = LG_BUF_SIZE / 2, .max_head = LG_BUF_SIZE, .max_headers = LG_MAX_HEADERS,
    };
    if (*ohead == NULL && (*ohead = lg_buf_get()) == NULL)
        return -1;
    lg_buf_t *b = *ohead;
    size_t room = (size_t)(b->end - b->last);
    size_t k = n < room ? n : room;
    memcpy(b->last, p, k);
    b->last += k;
    *took = k;
    for (;;) {
        http_response_t rsp = { .headers = scratch_headers };
        ssize_t rc = http_parse_response(b->pos, lg_buf_len(b), &rsp, &lim, oscan);
        if (rc == HTTP_AGAIN)
            return b->last == b->end ? -1 : 0;
        if (rc < 0)
            return -1;
        *oscan = 0;
        int fin = submit(st, &rsp);
        if (fin < 0)
            return -1;
        b->pos += rc;
        if (!fin) {
            if (lg_buf_len(b) == 0) {
                b->pos = b->last = b->start;    /* room for the heads that follow */
                return 0;
            }
            continue;           /* an interim head: the final one may follow */
        }
        *rest = b->pos;
        *extra = lg_buf_len(b);
        return 1;
    }
}

/* ---- streams ---- */

void lg_mux_stream_init(lg_mux_stream_t *m, uint32_t magic, const lg_end_ops_t *ops, lg_timer_cb cb)
{
    m->magic = magic;
    m->end.io.fd = -1;
    m->end.ops = ops;
    m->end.w_ready = 1;
    m->timer.cb = cb;
    m->timer.data = m;
}

void lg_mux_stream_drop(lg_mux_stream_t *m)
{
    lg_req_t *r = m->r;
    if (r == NULL)
        return;
    m->r = NULL;
    lg_req_free(r);
}

void lg_mux_runq_add(lg_mux_runq_t *q, lg_mux_stream_t *m)
{
    if (m->queued)
        return;
    m->queued = 1;
    m->rnext = NULL;
    if (q->tail)
        q->tail->rnext = m;
    else
        q->head = m;
    q->tail = m;
}

void lg_mux_runq_remove(lg_mux_runq_t *q, lg_mux_stream_t *m)
{
    if (!m->queued)
        return;
    lg_mux_stream_t **pp = &q->head, *prev = NULL;
    while (*pp && *pp != m) {
        prev = *pp;
        pp = &(*pp)->rnext;
    }
    if (*pp)
        *pp = m->rnext;
    if (q->tail == m)
        q->tail = prev;
    m->queued = 0;
}

lg_mux_stream_t *lg_mux_runq_take(lg_mux_runq_t *q)
{
    lg_mux_stream_t *h = q->head;
    q->head = q->tail = NULL;
    return h;
}

void lg_mux_stream_run(lg_mux_stream_t *m, lg_conn_t *c)
{
    if (m->start) {
        m->start = 0;
        lg_req_start(m->r, m->q.status);
    }
    for (int round = 0; round < 64; round++) {
        lg_req_t *r = m->r;
        if (r == NULL || r->stage == NULL || c->state != LG_C_FRONT)
            break;
        const lg_stage_t *sg = r->stage;
        r->cend->want_r = r->cend->want_w = 0;
        if (r->uend)
            r->uend->want_r = r->uend->want_w = 0;
        c->rerun = 0;
        sg->step(r);
        if (m->r != r || c->state != LG_C_FRONT)
            break;              /* finished or aborted */
        if (r->stage == sg && !c->rerun)
            break;
    }
}

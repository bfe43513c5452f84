/*
 * What the ftp:// and gopher:// gateways share (see gw_int.h): their
 * connections in the worker's loop, and the answer written to the client
 * as the server's bytes arrive, never more than one buffer held.
 */
#include "forward/gw_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/headers.h"

/* An event on one of the gateway's descriptors: the request's stage runs. */
static void gw_io(lg_io_t *io, uint32_t ev)
{
    lg_gw_t *g = io->data;
    if (g->magic != LG_GW_MAGIC || g->r == NULL)
        return;                 /* the request went in this loop round */
    lg_end_on_event(io == &g->ctl.io ? &g->ctl : &g->dat, ev);
    lg_req_run(g->r);
}

void lg_gw_close(lg_gw_t *g)
{
    lg_end_close(&g->ctl, &lg_w.loop);
    lg_end_close(&g->dat, &lg_w.loop);
    g->ctl_connecting = g->dat_connecting = 0;
}

/* The request ends (finished, aborted, its connection closed). */
static void gw_cleanup(void *arg)
{
    lg_gw_t *g = arg;
    lg_gw_close(g);
    lg_gw_text_free(&g->text);
    lg_gw_text_free(&g->raw);
    if (g->r && g->r->uend == &g->ctl)
        g->r->uend = NULL;
    g->r = NULL;
    g->magic = 0;
    lg_loop_defer_free(&lg_w.loop, g);
}

lg_gw_t *lg_gw_new(lg_req_t *r, const lg_stage_t *st, const struct sockaddr_storage *ss)
{
    lg_gw_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        lg_respond_error(r, 500);
        return NULL;
    }
    g->magic = LG_GW_MAGIC;
    g->r = r;
    g->ctl.io.fd = g->dat.io.fd = -1;
    g->length = -1;
    g->addr = *ss;
    g->read_timeout = lg_req_common(r)->proxy_read_timeout;
    g->text.max = LG_GW_LIST_MAX * 12;   /* escaping makes a page up to ~10 times its source */
    g->raw.max = LG_GW_LIST_MAX;
    g->is_head = r->ri.is_head;
    lg_req_cleanup(r, gw_cleanup, g);
    r->uend = &g->ctl;
    /* no request body is read: the connection cannot carry another request */
    if (r->ri.body != LG_BODY_NONE)
        r->keep_alive = 0;
    lg_req_set_stage(r, st);
    return g;
}

int lg_gw_connect(lg_gw_t *g, lg_end_t *e, const struct sockaddr_storage *ss)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if (connect(fd, (const struct sockaddr *)ss, len) < 0 && errno != EINPROGRESS) {
        int e2 = errno;
        close(fd);
        errno = e2;
        return -1;
    }
    memset(e, 0, sizeof(*e));
    e->io.fd = fd;
    e->io.cb = gw_io;
    e->io.data = g;
    if (lg_io_add(&lg_w.loop, &e->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        int e2 = errno;
        close(fd);
        e->io.fd = -1;
        errno = e2;
        return -1;
    }
    if (e == &g->ctl)
        g->ctl_connecting = 1;
    else
        g->dat_connecting = 1;
    return 0;
}

int lg_gw_connected(lg_end_t *e)
{
    if (!e->w_ready) {
        e->want_w = 1;
        return LG_AGAIN;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(e->io.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        errno = err;
        return LG_ERROR;
    }
    return LG_OK;
}

int lg_gw_send_ctl(lg_gw_t *g)
{
    while (g->cout_off < g->cout_len) {
        if (!g->ctl.w_ready) {
            g->ctl.want_w = 1;
            return LG_AGAIN;
        }
        ssize_t n = lg_end_send(&g->ctl, g->cout + g->cout_off, g->cout_len - g->cout_off);
        if (n > 0) {
            g->cout_off += (size_t)n;
            continue;
        }
        if (n == LG_AGAIN)
            return LG_AGAIN;
        return LG_ERROR;
    }
    return LG_OK;
}

int lg_gw_command(lg_gw_t *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g->cout, sizeof(g->cout) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(g->cout) - 2)
        return LG_ERROR;
    memcpy(g->cout + n, "\r\n", 2);
    g->cout_len = (size_t)n + 2;
    g->cout_off = 0;
    return lg_gw_send_ctl(g);
}

ssize_t lg_gw_read_ctl(lg_gw_t *g)
{
    if (g->cin_len == sizeof(g->cin))
        return -3;
    if (!g->ctl.r_ready) {
        g->ctl.want_r = 1;
        return LG_AGAIN;
    }
    size_t room = sizeof(g->cin) - g->cin_len;
    ssize_t n = lg_end_recv(&g->ctl, g->cin + g->cin_len, room);
    if (n > 0) {
        g->cin_len += (size_t)n;
        lg_end_short_read(&g->ctl, (size_t)n, room);
    }
    return n;
}

int lg_gw_head(lg_gw_t *g, int status, const char *ctype, int64_t length)
{
    lg_req_t *r = g->r;
    http_header_t h[2];
    size_t nh = 0;
    char lenbuf[24];
    h[nh++] = (http_header_t){ "Content-Type", 12, ctype, strlen(ctype) };
    if (length >= 0) {
        int ln = snprintf(lenbuf, sizeof(lenbuf), "%lld", (long long)length);
        h[nh++] = (http_header_t){ "Content-Length", 14, lenbuf, (size_t)ln };
    }
    http_response_t rsp = { .version = 11, .status = status, .reason = "", .reason_len = 0,
                            .headers = h, .num_headers = nh };
    lg_rsp_info_t ri;
    memset(&ri, 0, sizeof(ri));
    ri.body = length >= 0 ? LG_BODY_LENGTH : LG_BODY_CLOSE;
    ri.length = length;
    /* HTTP/2 frames the body itself; HTTP/1.0 has only the close */
    g->chunked = length < 0 && !g->is_head && r->req.version == 11 && r->cend->ops == NULL;
    if (length < 0 && !g->chunked)
        r->keep_alive = 0;
    g->length = length;
    size_t hl = 0;
    const char *head = lg_headers_client(r, &rsp, &ri, g->chunked, LG_XFORM_NONE, 0, &hl);
    if (head == NULL)
        return -1;
    g->head = head;
    g->head_len = hl;
    g->head_off = 0;
    r->status = status;
    r->upstream_status = status;
    r->rsp_head_done = 1;
    return 0;
}

int lg_gw_flush(lg_gw_t *g)
{
    lg_req_t *r = g->r;
    lg_end_t *ce = r->cend;
    g->wait_client = 0;
    while (g->head_off < g->head_len || g->wpos < g->wend) {
        if (!ce->w_ready) {
            ce->want_w = 1;
            g->wait_client = 1;
            return LG_AGAIN;
        }
        struct iovec iov[2];
        int cnt = 0;
        if (g->head_off < g->head_len) {
            iov[cnt].iov_base = (void *)(g->head + g->head_off);
            iov[cnt++].iov_len = g->head_len - g->head_off;
        }
        if (g->wpos < g->wend) {
            iov[cnt].iov_base = g->wbuf + g->wpos;
            iov[cnt++].iov_len = g->wend - g->wpos;
        }
        size_t offered = iov[0].iov_len + (cnt > 1 ? iov[1].iov_len : 0);
        ssize_t n = lg_end_writev(ce, iov, cnt);
        if (n == LG_AGAIN) {
            g->wait_client = 1;
            return LG_AGAIN;
        }
        if (n <= 0) {
            lg_gw_close(g);
            lg_req_abort(r, "send() to client failed");
            return LG_ERROR;
        }
        r->bytes_out += (uint64_t)n;
        size_t left = (size_t)n;
        size_t h = g->head_len - g->head_off;
        if (h) {
            size_t k = left < h ? left : h;
            g->head_off += k;
            left -= k;
        }
        g->wpos += left;
        if ((size_t)n < offered)
            lg_end_short_write(ce);
    }
    g->wpos = g->wend = 0;
    if (g->ending) {
        g->ending = 0;
        lg_gw_close(g);
        lg_req_finish(r);
        return LG_OK;
    }
    return LG_OK;
}

int lg_gw_pump(lg_gw_t *g, lg_end_t *src, const char **why)
{
    for (int round = 0; round < 64; round++) {
        /* the head goes out with the first bytes of the body: a server
         * that sends nothing at all can still be answered with a 502 */
        if (g->wpos < g->wend) {
            int rc = lg_gw_flush(g);
            if (rc != LG_OK) {
                *why = "the client";
                return rc;
            }
        }
        if (g->src_eof)
            return LG_OK;
        if (g->is_head) {
            g->src_eof = 1;     /* the head is the answer: lg_gw_complete sends it */
            return LG_OK;
        }
        if (!src->r_ready) {
            src->want_r = 1;
            return LG_AGAIN;
        }
        /* room before the bytes for the chunk's size line, after them for its CRLF */
        char *p = g->wbuf + 16;
        ssize_t n = lg_end_recv(src, p, LG_GW_BUF);
        if (n == LG_AGAIN)
            return LG_AGAIN;
        if (n < 0) {
            *why = "recv() from the server failed";
            return LG_ERROR;
        }
        if (n == 0) {
            g->src_eof = 1;
            return LG_OK;
        }
        lg_end_short_read(src, (size_t)n, LG_GW_BUF);
        if (g->length >= 0 && g->body_bytes + (uint64_t)n > (uint64_t)g->length) {
            *why = "the server sent more than the size it gave";
            return LG_ERROR;
        }
        g->body_bytes += (uint64_t)n;
        g->wpos = 16;
        g->wend = 16 + (size_t)n;
        if (g->chunked) {
            char sz[16];
            int sl = snprintf(sz, sizeof(sz), "%zx\r\n", (size_t)n);
            g->wpos = 16 - (size_t)sl;
            memcpy(g->wbuf + g->wpos, sz, (size_t)sl);
            memcpy(g->wbuf + g->wend, "\r\n", 2);
            g->wend += 2;
        }
    }
    /* many buffers in one go: let the others have their turn */
    g->r->conn->rerun = 1;
    return LG_AGAIN;
}

void lg_gw_complete(lg_gw_t *g)
{
    lg_gw_close(g);
    g->ending = 1;
    if (g->chunked) {
        memcpy(g->wbuf, "0\r\n\r\n", 5);
        g->wpos = 0;
        g->wend = 5;
    }
    lg_gw_flush(g);
}

void lg_gw_page(lg_gw_t *g, int status, const char *ctype)
{
    lg_req_t *r = g->r;
    lg_gw_close(g);
    if (g->raw.full || g->text.full) {
        /* a page cut anywhere would pass for the whole listing */
        lg_gw_fail(g, 502, "the listing or menu is larger than legate reads whole (1 MiB)",
                   NULL, 0);
        return;
    }
    if (lg_gw_head(g, status, ctype, (int64_t)g->text.n) < 0) {
        lg_req_abort(r, "out of memory");
        return;
    }
    lg_respond_raw(r, status, g->head, g->head_len, g->is_head ? NULL : g->text.p,
                   g->is_head ? 0 : g->text.n);
}

void lg_gw_fail(lg_gw_t *g, int status, const char *why, const char *detail, size_t dn)
{
    lg_req_t *r = g->r;
    lg_gw_close(g);
    /* what the server refused (no file, no login) is the client's matter */
    lg_log(status < 500 ? LG_LOG_INFO : LG_LOG_ERROR, "%s gateway: %s: %s%s%.*s, client: %s",
             r->ri.scheme == LG_SCHEME_FTP ? "ftp" : "gopher", r->ri.authority.p ?
             lg_arena_printf(&r->arena, "%.*s", (int)r->ri.authority.n, r->ri.authority.p) : "-",
             why, detail ? ": " : "", detail ? (int)(dn > 200 ? 200 : dn) : 0,
             detail ? detail : "", r->peer_text);
    if (g->head_off > 0) {
        /* bytes went out already: cut the connection, so the answer ends
         * without its last chunk or short of its length -- a client sees a
         * failed transfer, never a complete one */
        r->upstream_status = 502;
        lg_req_abort(r, "the transfer from the server was cut short");
        return;
    }
    lg_gw_text_t t = { .max = 8192 };
    lg_gw_text_str(&t, "<html><head><title>");
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    lg_gw_text_str(&t, st);
    lg_gw_text_str(&t, "</title></head><body>\r\n<h1>");
    lg_gw_text_str(&t, st);
    lg_gw_text_str(&t, " ");
    lg_gw_text_str(&t, lg_http_reason(status));
    lg_gw_text_str(&t, "</h1>\r\n<p>");
    lg_gw_text_html(&t, why, strlen(why));
    if (detail) {
        lg_gw_text_str(&t, "</p>\r\n<p>The server said: <code>");
        lg_gw_text_html(&t, detail, dn > 1024 ? 1024 : dn);
        lg_gw_text_str(&t, "</code>");
    }
    lg_gw_text_str(&t, "</p>\r\n</body></html>\r\n");
    char *page = t.p ? lg_arena_strdup(&r->arena, t.p) : NULL;
    lg_gw_text_free(&t);
    r->upstream_status = status;
    r->rsp_head_done = 0;
    r->local_ctype = "text/html";
    lg_respond(r, status, page, NULL);
}

lg_msec_t lg_gw_arm(lg_req_t *r, lg_tkind_t *kind)
{
    lg_gw_t *g = lg_gw_of(r);
    if (g->wait_client) {
        *kind = LG_T_SEND;
        return lg_req_common(r)->send_timeout;
    }
    if (g->ctl_connecting || g->dat_connecting) {
        *kind = LG_T_UP_CONNECT;
        return lg_req_common(r)->proxy_connect_timeout;
    }
    *kind = LG_T_UP_READ;
    return g->read_timeout;
}

void lg_gw_timeout(lg_req_t *r, lg_tkind_t kind)
{
    lg_gw_t *g = lg_gw_of(r);
    if (kind == LG_T_SEND) {
        lg_gw_close(g);
        lg_req_abort(r, "client timed out receiving the response");
        return;
    }
    lg_gw_fail(g, 504, kind == LG_T_UP_CONNECT ? "connecting to the server timed out"
                                               : "the server did not answer in time", NULL, 0);
}

/*
 * Answers legate makes itself (errors, returns, redirects, cached bodies,
 * TRACE): the head is built (headers.c) and the "local" stage writes it,
 * with an optional second piece (a body held elsewhere) in the same
 * writev, then finishes the request.
 */
#include "pipeline/request.h"

#include <sys/uio.h>

#include "pipeline/headers.h"

static void local_step(lg_req_t *r)
{
    lg_end_t *ce = r->cend;
    size_t total = r->local_len + (r->local_body ? r->local_body_len : 0);
    while (r->local_sent < total) {
        if (!ce->w_ready) {
            ce->want_w = 1;
            return;
        }
        struct iovec iov[2];
        int cnt = 0;
        if (r->local_sent < r->local_len) {
            iov[cnt].iov_base = (void *)(r->local + r->local_sent);
            iov[cnt++].iov_len = r->local_len - r->local_sent;
        }
        if (r->local_body) {
            size_t off = r->local_sent > r->local_len ? r->local_sent - r->local_len : 0;
            iov[cnt].iov_base = (void *)(r->local_body + off);
            iov[cnt++].iov_len = r->local_body_len - off;
        }
        ssize_t n = lg_end_writev(ce, iov, cnt);
        if (n > 0) {
            r->local_sent += (size_t)n;
            continue;
        }
        if (n == LG_AGAIN)
            return;
        lg_req_abort(r, "send() to client failed");
        return;
    }
    r->bytes_out = total;
    r->local_body = NULL;
    lg_req_finish(r);
}

static lg_msec_t local_arm(lg_req_t *r, lg_tkind_t *kind)
{
    *kind = LG_T_SEND;
    return lg_req_common(r)->send_timeout;
}

static void local_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    lg_req_abort(r, "client timed out receiving the response");
}

static const lg_stage_t local_stage = {
    .name = "sending response", .step = local_step, .arm = local_arm, .timeout = local_timeout,
};

void lg_respond_raw(lg_req_t *r, int status, const char *head, size_t hlen,
                     const char *body, size_t blen)
{
    r->status = status;
    r->local = head;
    r->local_len = hlen;
    r->local_body = blen ? body : NULL;
    r->local_body_len = blen;
    r->local_sent = 0;
    lg_req_set_stage(r, &local_stage);
}

void lg_respond(lg_req_t *r, int status, const char *body, const char *location)
{
    lg_conn_t *c = r->conn;
    if (c->fe->error && c->fe->error(c, r, status))
        return;                 /* the protocol answers its own way (SOCKS5) */
    if (r->ri.connect)
        r->keep_alive = 0;      /* the connection was to become the tunnel */
    size_t len = 0;
    const char *h = lg_headers_local(r, status, body, location, &len);
    if (h == NULL) {
        lg_req_abort(r, "out of memory building a response");
        return;
    }
    lg_respond_raw(r, status, h, len, NULL, 0);
}

void lg_respond_error(lg_req_t *r, int status)
{
    /* the request's body (if any) was not read: the connection cannot go on */
    if (r->ri.body != LG_BODY_NONE && !(r->reqp.buf && r->reqp.src_done))
        r->keep_alive = 0;
    if (status == 400 || status == 414 || status == 431 || status == 505 || status == 413)
        r->keep_alive = 0;
    lg_respond(r, status, NULL, NULL);
}

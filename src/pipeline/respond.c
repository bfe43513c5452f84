/*
 * Answers legate makes itself (errors, returns, redirects, cached bodies,
 * TRACE): the head is built (headers.c) and the "local" stage writes it,
 * with an optional second piece (a body held elsewhere) in the same
 * writev, then finishes the request.
 */
#include "pipeline/request.h"

#include <sys/uio.h>

#include "pipeline/headers.h"
#include "pipeline/vars.h"

#include <string.h>

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

/* Build and send the answer (the page of its status applied in headers.c). */
static void answer(lg_req_t *r, int status, const char *body, const char *location)
{
    if (r->ri.connect)
        r->keep_alive = 0;      /* the connection was to become the tunnel */
    size_t len = 0;
    const char *h = lg_headers_local(r, status, body, location, &len);
    if (h == NULL) {
        lg_req_abort(r, "out of memory building a response");
        return;
    }
    /* (headers.c set r->status: the status the head carries) */
    lg_respond_raw(r, r->status, h, len, NULL, 0);
}

/* ---- error_pages' "STATUS @name": the error answered by a route ---- */

/*
 * The route an error of `status` is handed to, or NULL for a page made
 * here.  Not for an answer with a body of its own, a request already
 * handed to a route once, a forward-proxy request or a tunnel, an error
 * about the head or the body itself (which the route could not trust
 * either), nor a proxy route when the request's body was already (partly)
 * sent elsewhere and is not held whole.
 */
static const lg_route_t *error_route(lg_req_t *r, int status, const char *body,
                                     const lg_errpage_t **out)
{
    if (r->err_route || body || status < 300 || status == 304 || r->ri.connect ||
        lg_req_is_forward(r) || r->tunnel)
        return NULL;
    switch (status) {
    case 400: case 408: case 413: case 414: case 431: case 501: case 505:
        return NULL;
    }
    const lg_errpage_t *pg = lg_errpage_find(lg_req_error_pages(r), status);
    if (pg == NULL || pg->route == NULL)
        return NULL;
    const lg_server_t *srv = r->server ? r->server : r->conn->bind->default_server;
    const lg_route_t *to = NULL;
    for (size_t i = 0; i < srv->nroutes && to == NULL; i++)
        if (srv->routes[i].name && strcmp(srv->routes[i].name, pg->route) == 0)
            to = &srv->routes[i];
    if (to == NULL)
        return NULL;            /* (legate -t checks every server's names) */
    if (to->action == LG_ACTION_PROXY &&
        (to->upstream == NULL || r->uc ||
         (r->ri.body != LG_BODY_NONE && r->reqp.buf && !r->reqp.kept &&
          (r->reqp.body_bytes || r->reqp.wire_bytes > r->reqp.hdr_len))))
        return NULL;
    *out = pg;
    return to;
}

static void redirect_step(lg_req_t *r)
{
    const lg_route_t *to = r->err_route;
    r->route = to;
    r->up = NULL;
    r->upgrade = NULL;
    r->local_extra = NULL;
    r->local_ctype = NULL;
    r->tried = 0;
    r->ntries = 0;
    r->upstream_cond = 0;
    /* the first answer's filters (a request body's gunzip) go; the route
     * sets up its own */
    lg_pipe_release(&r->reqp);
    lg_pipe_release(&r->rspp);
    if (to->action != LG_ACTION_PROXY && r->ri.body != LG_BODY_NONE &&
        !(r->reqp.buf && r->reqp.src_done))
        r->keep_alive = 0;      /* the body is not read: close after */
    switch (to->action) {
    case LG_ACTION_RETURN: {
        const char *body = lg_vars_expand(r, to->body, LG_VARS_RAW, NULL);
        const char *location = lg_vars_expand(r, to->location, LG_VARS_RAW, NULL);
        if ((body == NULL && to->body) || (location == NULL && to->location)) {
            lg_req_abort(r, "out of memory expanding a body");
            return;
        }
        if (body)
            r->local_ctype = to->common.default_type;
        answer(r, to->status, body, location);
        return;
    }
    case LG_ACTION_PROXY:
        r->up = to->upstream;
        break;
    case LG_ACTION_STATIC:
        /* nginx's "error_page 502 /50x.html" with "location = /50x.html":
         * an exact route serves its own path, any other the request's */
        if (to->match == LG_MATCH_EXACT && to->pattern && !to->named_only)
            r->mpath = to->pattern;
        break;
    default:
        break;
    }
    lg_req_content(r);
}

static lg_msec_t redirect_arm(lg_req_t *r, lg_tkind_t *kind)
{
    *kind = LG_T_SEND;
    return lg_req_common(r)->send_timeout;
}

static void redirect_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    lg_req_abort(r, "error page redirect did not run");     /* (it runs at once) */
}

/* a stage, so the route runs from the driver, not inside whoever failed */
static const lg_stage_t redirect_stage = {
    .name = "error page route", .step = redirect_step, .arm = redirect_arm,
    .timeout = redirect_timeout,
};

void lg_respond(lg_req_t *r, int status, const char *body, const char *location)
{
    lg_conn_t *c = r->conn;
    if (c->fe->error && c->fe->error(c, r, status))
        return;                 /* the protocol answers its own way (SOCKS5) */
    const lg_errpage_t *pg = NULL;
    const lg_route_t *to = error_route(r, status, body, &pg);
    if (to) {
        r->err_route = to;
        r->err_status = pg->code < 0 ? status : pg->code;
        lg_req_set_stage(r, &redirect_stage);
        return;
    }
    /* an error of the route an error page handed the request to: its own
     * status (as nginx's recursive error) */
    r->err_status = 0;
    answer(r, status, body, location);
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

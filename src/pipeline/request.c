/*
 * The request pipeline: a request's life from its head to its log line
 * (see request.h for the phases and the handler contract); the handlers
 * themselves are run by feature.c.
 */
#include "pipeline/request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQ_ARENA_BLOCK 4096
#define REQ_ARENA_LIMIT (1024 * 1024)
/* ---- lifecycle ---- */

lg_req_t *lg_req_new(lg_conn_t *c)
{
    LG_CHECK_CONN(c);
    LG_BUG_ON(c->req != NULL);          /* HTTP/1.1: one request at a time */
    int listed = !c->fe->multiplexed;
    lg_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->magic = LG_REQ_MAGIC;
    r->conn = c;
    r->phase = LG_PH_NONE;
    lg_arena_init(&r->arena, REQ_ARENA_BLOCK, REQ_ARENA_LIMIT);
    memcpy(&r->peer, &c->peer, sizeof(r->peer));
    memcpy(r->peer_text, c->peer_text, sizeof(r->peer_text));
    r->peer_port = c->peer_port;
    r->t_start = lg_w.loop.now;
    r->cend = &c->e;
    r->upstream_connect_time = -1;
    r->in = c->in;
    if (listed)
        c->req = r;
    return r;
}

void lg_req_run(lg_req_t *r)
{
    /* r may have ended in this loop round (its memory goes after it): its
     * connection still wants its turn */
    lg_conn_t *c = r->conn;
    if (c->fe->run)
        c->fe->run(c, r->magic == LG_REQ_MAGIC ? r : NULL);
    else
        lg_conn_run(c);
}

void lg_req_abort(lg_req_t *r, const char *why)
{
    lg_conn_t *c = r->conn;
    if (c->fe->abort)
        c->fe->abort(c, r, why);
    else
        lg_conn_close(c, why);
}

void lg_req_cleanup(lg_req_t *r, void (*fn)(void *), void *arg)
{
    lg_cleanup_t *cl = lg_arena_alloc(&r->arena, sizeof(*cl));
    LG_BUG_ON(cl == NULL);      /* a few bytes: the arena's first block has them */
    cl->fn = fn;
    cl->arg = arg;
    cl->next = r->cleanups;
    r->cleanups = cl;
}

void lg_req_free(lg_req_t *r)
{
    if (r == NULL)
        return;
    LG_CHECK_REQ(r);
    /* cleanups may register nothing new: take the list first */
    lg_cleanup_t *cl = r->cleanups;
    r->cleanups = NULL;
    for (; cl; cl = cl->next)
        cl->fn(cl->arg);
    lg_pipe_release(&r->rspp);
    lg_pipe_release(&r->reqp);
    lg_arena_destroy(&r->arena);
    if (r->conn->req == r)
        r->conn->req = NULL;
    r->magic = 0;
    /* events for it may still be queued in this loop round */
    lg_loop_defer_free(&lg_w.loop, r);
}

const lg_common_t *lg_req_common(const lg_req_t *r)
{
    if (r->route)
        return &r->route->common;
    if (r->server)
        return &r->server->common;
    return &r->conn->bind->default_server->common;
}

int lg_req_add_header(lg_req_t *r, const char *name, const char *fmt, ...)
{
    char val[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(val))
        return -1;
    const char *was = r->response_extra ? r->response_extra : "";
    char *s = lg_arena_printf(&r->arena, "%s%s: %s\r\n", was, name, val);
    if (s == NULL)
        return -1;
    r->response_extra = s;
    return 0;
}

/* ---- the phase engine ---- */

/* The request phases ran to their end with nobody to answer. */
static void run_request_phases(lg_req_t *r)
{
    if (lg_feature_run_phases(r, LG_PH_CONTENT) != LG_OK)
        return;
    r->phase = LG_PH_NONE;
    if (r->stage == NULL)
        lg_respond_error(r, 404);   /* no content handler took it */
}

void lg_req_start(lg_req_t *r, int head_status)
{
    LG_CHECK_REQ(r);
    r->phase = LG_PH_POST_READ;
    r->ph_next = 0;
    if (lg_feature_run_phases(r, LG_PH_POST_READ) != LG_OK)
        return;                 /* answered in POST_READ */
    if (head_status) {
        r->phase = LG_PH_NONE;
        r->keep_alive = 0;
        lg_respond_error(r, head_status);
        return;
    }
    run_request_phases(r);
}

void lg_req_resume(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    LG_BUG_ON(r->phase > LG_PH_CONTENT);    /* LG_PH_NONE too: it is not suspended */
    r->stage = NULL;
    run_request_phases(r);
}

void lg_req_content(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    r->stage = NULL;
    r->phase = LG_PH_CONTENT;
    r->ph_next = 0;
    run_request_phases(r);
}

void lg_req_set_stage(lg_req_t *r, const lg_stage_t *st)
{
    r->phase = LG_PH_NONE;
    r->stage = st;
    r->conn->rerun = 1;         /* the new owner may be able to go on at once */
}

void lg_req_suspend(lg_req_t *r, const lg_stage_t *st)
{
    LG_BUG_ON(r->phase == LG_PH_NONE);
    r->stage = st;
}

int lg_req_response_head(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    return lg_feature_run_one(r, LG_PH_RESPONSE);
}

void lg_req_request_body(lg_req_t *r)
{
    lg_feature_run_one(r, LG_PH_REQUEST_BODY);
}

void lg_req_response_body(lg_req_t *r)
{
    lg_feature_run_one(r, LG_PH_BODY);
}

int lg_req_upstream_error(lg_req_t *r, int status)
{
    r->upstream_status = status;
    return lg_feature_run_one(r, LG_PH_UPSTREAM_ERROR) == LG_DONE ? LG_DONE : LG_OK;
}

void lg_req_finish(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    r->stage = NULL;
    r->finished = 1;
    if (r->tunnel == NULL) {    /* a tunnel counts its spliced bytes too */
        if (r->local == NULL)
            r->bytes_out = r->rspp.wire_bytes;
        r->bytes_in = r->head_len + r->reqp.body_bytes;
    }
    lg_feature_run_one(r, LG_PH_LOG);
    r->conn->fe->done(r->conn, r);
}

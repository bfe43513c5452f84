/*
 * The request pipeline: a request's life from its head to its log line,
 * and the phase engine that runs the features' handlers (see request.h for
 * the phases and the handler contract).
 *
 * Handlers are kept per phase in registration order; the table is filled
 * once per process (lg_feature_register, from proc/features.c) before any
 * request exists and never changes after, so running a phase is a walk
 * over a small array with no lookup by name.
 */
#include "pipeline/request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQ_ARENA_BLOCK 4096
#define REQ_ARENA_LIMIT (1024 * 1024)
#define MAX_HANDLERS 16
#define MAX_FEATURES 24

static struct {
    lg_handler_t fn[MAX_HANDLERS];
    const char  *who[MAX_HANDLERS];
    unsigned     n;
} phases[LG_PH_MAX];

static const lg_feature_t *features[MAX_FEATURES];
static unsigned nfeatures;
static int nslots;

const char *lg_phase_name(lg_phase_t p)
{
    switch (p) {
    case LG_PH_POST_READ:      return "post-read";
    case LG_PH_ACCESS:         return "access";
    case LG_PH_ROUTE:          return "route";
    case LG_PH_CACHE:          return "cache";
    case LG_PH_CONTENT:        return "content";
    case LG_PH_REQUEST_BODY:   return "request-body";
    case LG_PH_RESPONSE:       return "response";
    case LG_PH_BODY:           return "body";
    case LG_PH_UPSTREAM_ERROR: return "upstream-error";
    case LG_PH_LOG:            return "log";
    case LG_PH_MAX:            break;
    }
    return "none";
}

void lg_feature_register(const lg_feature_t *f)
{
    LG_BUG_ON(nfeatures == MAX_FEATURES);
    features[nfeatures++] = f;
    if (f->ctx_slot) {
        LG_BUG_ON(nslots == LG_CTX_MAX);
        *f->ctx_slot = nslots++;
    }
    for (size_t i = 0; i < sizeof(f->handlers) / sizeof(f->handlers[0]) && f->handlers[i].fn; i++) {
        lg_phase_t p = f->handlers[i].phase;
        LG_BUG_ON(p >= LG_PH_MAX || phases[p].n == MAX_HANDLERS);
        phases[p].who[phases[p].n] = f->name;
        phases[p].fn[phases[p].n++] = f->handlers[i].fn;
    }
}

int lg_features_init(void)
{
    for (unsigned i = 0; i < nfeatures; i++)
        if (features[i]->init && features[i]->init() < 0) {
            lg_error("feature %s failed to start", features[i]->name);
            return -1;
        }
    return 0;
}

/* ---- lifecycle ---- */

lg_req_t *lg_req_new(lg_conn_t *c)
{
    LG_CHECK_CONN(c);
    LG_BUG_ON(c->req != NULL);          /* HTTP/1.1: one request at a time */
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
    c->req = r;
    return r;
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

/*
 * Run handlers from (r->phase, r->ph_next) up to and including `last`.
 * LG_OK: all ran, r->phase is the one after `last`; LG_AGAIN: a handler
 * suspended it; LG_DONE: answered, or handed to a stage (r->phase NONE).
 */
static int run_phases(lg_req_t *r, lg_phase_t last)
{
    while (r->phase <= last) {
        lg_phase_t p = r->phase;
        while (r->ph_next < phases[p].n) {
            unsigned i = r->ph_next++;
            int rc = phases[p].fn[i](r);
            if (rc == LG_OK || rc == LG_DECLINED)
                continue;
            if (rc == LG_AGAIN)
                return LG_AGAIN;        /* the handler resumes it */
            if (rc == LG_ERROR) {
                lg_error("%s: request failed in the %s phase", phases[p].who[i], lg_phase_name(p));
                lg_req_error(r, 500);
            }
            r->phase = LG_PH_NONE;
            return LG_DONE;
        }
        r->phase = (lg_phase_t)(p + 1);
        r->ph_next = 0;
    }
    return LG_OK;
}

/* The request phases ran to their end with nobody to answer. */
static void run_request_phases(lg_req_t *r)
{
    if (run_phases(r, LG_PH_CONTENT) != LG_OK)
        return;
    r->phase = LG_PH_NONE;
    if (r->stage == NULL)
        lg_req_error(r, 404);   /* no content handler took it */
}

void lg_req_start(lg_req_t *r, int head_status)
{
    LG_CHECK_REQ(r);
    r->phase = LG_PH_POST_READ;
    r->ph_next = 0;
    if (run_phases(r, LG_PH_POST_READ) != LG_OK)
        return;                 /* answered in POST_READ */
    if (head_status) {
        r->phase = LG_PH_NONE;
        r->keep_alive = 0;
        lg_req_error(r, head_status);
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

/* Run one of the response-side phases in full; LG_DONE if a handler answered. */
static int run_one(lg_req_t *r, lg_phase_t p)
{
    for (unsigned i = 0; i < phases[p].n; i++) {
        int rc = phases[p].fn[i](r);
        if (rc == LG_DONE)
            return LG_DONE;
        if (rc == LG_ERROR)
            return LG_ERROR;
    }
    return LG_OK;
}

int lg_req_response_head(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    return run_one(r, LG_PH_RESPONSE);
}

void lg_req_request_body(lg_req_t *r)
{
    run_one(r, LG_PH_REQUEST_BODY);
}

void lg_req_response_body(lg_req_t *r)
{
    run_one(r, LG_PH_BODY);
}

int lg_req_upstream_error(lg_req_t *r, int status)
{
    r->upstream_status = status;
    return run_one(r, LG_PH_UPSTREAM_ERROR) == LG_DONE ? LG_DONE : LG_OK;
}

void lg_req_finish(lg_req_t *r)
{
    LG_CHECK_REQ(r);
    r->stage = NULL;
    if (r->tunnel == NULL) {    /* a tunnel counts its spliced bytes too */
        if (r->local == NULL)
            r->bytes_out = r->rspp.wire_bytes;
        r->bytes_in = r->head_len + r->reqp.body_bytes;
    }
    run_one(r, LG_PH_LOG);
    r->conn->fe->done(r->conn, r);
}

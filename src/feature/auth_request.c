/*
 * Subrequest authorisation, as nginx's auth_request, in the ACCESS phase:
 * before a request is proxied (or served from the cache), legate asks an
 * authentication service -- an upstream -- with the original method and
 * URI (X-Original-Method, X-Original-URI) and the chosen request headers.
 *
 *   auth_request = "auth";  auth_request_uri = "/check";
 *   auth_request_headers = [ "Authorization", "Cookie" ];
 *   auth_request_set = [ "X-User" ];       # copied into the proxied request
 *
 * A 2xx lets the request go on, with the service's answer's auth_request_set
 * headers replacing whatever the client sent under those names (so a client
 * cannot claim to be X-User: admin); a 401 or 403 is returned to the client
 * with the service's WWW-Authenticate; anything else, a service that cannot
 * be reached or does not answer within auth_request_timeout, is a 500 and
 * nothing is proxied.
 *
 * The request is suspended meanwhile (a stage counts the timeout); the
 * subrequest runs on an upstream connection of its own, driven by its own
 * event callback, and resumes the request when the service has answered.
 *
 * With auth_request_cache_time, a 2xx, 401 or 403 is remembered for that
 * long under auth_request_cache_key (by default the method, URI and
 * credentials), in each worker: the next request with the same key gets
 * the same decision, and the same auth_request_set headers, without asking.
 */
#include "feature/auth_request.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <stdlib.h>

#include "core/hash.h"
#include "feature/metrics.h"
#include "net/tls.h"
#include "pipeline/headers.h"
#include "pipeline/vars.h"
#include "proxy/proxy.h"

typedef enum ar_state {
    AR_CONNECT = 0,             /* TCP (and TLS) to the service */
    AR_SEND = 1,                /* the subrequest's head going out */
    AR_READ = 2,                /* its answer's head coming in */
} ar_state_t;

typedef struct ar {
    lg_req_t      *r;           /* borrowed: the request waiting */
    lg_uconn_t    *uc;          /* borrowed from the pool until the answer */
    ar_state_t     st;
    const lg_common_t *c;       /* the settings that apply */
    char          *head;        /* arena */
    size_t         len, sent, scanned;
    size_t         tried;
    http_header_t  hs[LG_MAX_HEADERS];
} ar_t;

static int ar_slot;
static const lg_stage_t wait_stage;

/* ---- at load ---- */

static int prepare_level(lg_common_t *c, const lg_common_t *parent, const lg_conf_t *conf,
                         int line, int serves, char *err, size_t errlen)
{
    (void)parent;
    (void)serves;
    c->auth_request_up = NULL;
    if (c->auth_request == NULL || c->auth_request[0] == '\0')
        return 0;
    for (size_t i = 0; i < conf->nupstreams; i++)
        if (strcmp(conf->upstreams[i].name, c->auth_request) == 0) {
            c->auth_request_up = &conf->upstreams[i];
            break;
        }
    if (c->auth_request_up == NULL) {
        size_t u = strlen(err);
        if (u < errlen)
            snprintf(err + u, errlen - u, "%s:%d: unknown upstream '%s' in 'auth_request'\n",
                     conf->file, line, c->auth_request);
        return -1;
    }
    if (c->auth_request_uri[0] != '/') {
        size_t u = strlen(err);
        if (u < errlen)
            snprintf(err + u, errlen - u, "%s:%d: 'auth_request_uri' must be a path (\"/...\")\n",
                     conf->file, line);
        return -1;
    }
    return 0;
}

int lg_auth_request_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    return lg_conf_each_level(conf, prepare_level, err, errlen);
}

/* ---- remembered answers (per worker) ---- */

#define AR_CACHE 1024           /* entries; a full table replaces what it finds */

typedef struct ar_entry {
    uint64_t   hash;            /* of the settings' level and the key; 0 free */
    char      *key;             /* malloc'd */
    lg_msec_t  until;
    int        status;          /* 2xx, 401, 403 */
    char      *lines;           /* malloc'd: auth_request_set lines (2xx) or WWW-Authenticate */
} ar_entry_t;

static ar_entry_t ar_cache[AR_CACHE];

static ar_entry_t *cache_slot(const lg_common_t *c, const char *key, uint64_t *hp)
{
    uint64_t h = lg_hash64(key, strlen(key), (uint64_t)(uintptr_t)c) | 1;
    *hp = h;
    return &ar_cache[h % AR_CACHE];
}

static const ar_entry_t *cache_find(const lg_common_t *c, const char *key)
{
    uint64_t h;
    ar_entry_t *e = cache_slot(c, key, &h);
    if (e->hash != h || e->until <= lg_w.loop.now || strcmp(e->key, key) != 0)
        return NULL;
    return e;
}

static void cache_put(const lg_common_t *c, const char *key, int status, const char *lines)
{
    uint64_t h;
    ar_entry_t *e = cache_slot(c, key, &h);
    char *k = strdup(key), *l = strdup(lines ? lines : "");
    if (k == NULL || l == NULL) {
        free(k);
        free(l);
        return;
    }
    free(e->key);
    free(e->lines);
    *e = (ar_entry_t){ h, k, lg_w.loop.now + c->auth_request_cache_time, status, l };
}

/* ---- the subrequest ---- */

static int listed(const lg_strv_t *v, const char *name, size_t n)
{
    for (size_t i = 0; v && i < v->n; i++)
        if (strlen(v->v[i]) == n && strncasecmp(v->v[i], name, n) == 0)
            return 1;
    return 0;
}

/* The head sent to the service: GET of its path, the original method and
 * URI, the chosen headers of the client's request. */
static char *build_head(lg_req_t *r, const lg_common_t *c, size_t *len)
{
    const lg_upstream_t *up = c->auth_request_up;
    char *h = lg_arena_printf(&r->arena,
                              "GET %s HTTP/1.1\r\nHost: %s\r\nX-Original-Method: %.*s\r\n"
                              "X-Original-URI: %.*s\r\nConnection: close\r\n",
                              c->auth_request_uri, up->servers[0].addr.text,
                              (int)r->req.method_len, r->req.method, (int)r->ri.uri.n, r->ri.uri.p);
    for (size_t i = 0; h && i < r->req.num_headers; i++) {
        const http_header_t *x = &r->req.headers[i];
        if (listed(c->auth_request_headers, x->name, x->name_len))
            h = lg_arena_printf(&r->arena, "%s%.*s: %.*s\r\n", h, (int)x->name_len, x->name,
                                (int)x->value_len, x->value);
    }
    if (h)
        h = lg_arena_printf(&r->arena, "%s\r\n", h);
    if (h)
        *len = strlen(h);
    return h;
}

static void ar_release(ar_t *a)
{
    if (a->uc) {
        lg_upstream_release(a->uc, 0);
        a->uc = NULL;
    }
    a->r->ctx[ar_slot] = NULL;
}

static void ar_cleanup(void *arg)
{
    ar_t *a = arg;
    if (a->r->ctx[ar_slot] == a)
        ar_release(a);
}

/* The service failed us: a 500, nothing proxied. */
static void ar_fail(ar_t *a, int err, const char *what)
{
    lg_req_t *r = a->r;
    lg_log_errno(LG_LOG_ERROR, err, "auth_request to \"%s\" server %s: %s, client: %s, "
                 "request: \"%.*s %.*s\"", a->c->auth_request,
                 a->uc ? lg_upstream_addr(a->uc) : "-", what, r->peer_text,
                 (int)r->req.method_len, r->req.method, (int)r->ri.uri.n, r->ri.uri.p);
    ar_release(a);
    r->stage = NULL;
    r->blocked = "auth_request: the service failed";
    lg_mx_count(LG_MX_AUTH, "request", NULL, "failed", 1);
    lg_respond_error(r, 500);
}

/* The service's answer is in: let the request go on, or answer for it. */
/* The decision, from the service or remembered: 2xx lets r go on with the
 * service's lines (auth_request_set); 401 / 403 answer it.  0, or -1 out
 * of memory. */
static int apply(lg_req_t *r, const lg_common_t *c, int st, const char *lines)
{
    lg_mx_count(LG_MX_AUTH, "request", NULL, st < 300 ? "passed" : "rejected", 1);
    if (st >= 200 && st < 300) {
        /* the client's own lines under those names go: the service says */
        size_t k = 0;
        for (size_t i = 0; i < r->req.num_headers; i++)
            if (!listed(c->auth_request_set, r->req.headers[i].name, r->req.headers[i].name_len))
                r->req.headers[k++] = r->req.headers[i];
        r->req.num_headers = k;
        if (lines && *lines) {
            const char *extra = lg_arena_printf(&r->arena, "%s%s",
                                                r->upstream_extra ? r->upstream_extra : "", lines);
            if (extra == NULL)
                return -1;
            r->upstream_extra = extra;
        }
        return 0;
    }
    if (lines && *lines)
        r->local_extra = lines;
    r->blocked = st == 401 ? "auth_request: 401" : "auth_request: 403";
    lg_respond(r, st, NULL, NULL);
    return 0;
}

static void ar_decide(ar_t *a, const http_response_t *rsp)
{
    lg_req_t *r = a->r;
    const lg_common_t *c = a->c;
    int st = rsp->status;
    if ((st >= 200 && st < 300) || st == 401 || st == 403) {
        /* the lines the decision carries: auth_request_set's, or the challenge */
        const char *lines = "";
        for (size_t i = 0; i < rsp->num_headers && lines; i++) {
            const http_header_t *x = &rsp->headers[i];
            int take = st < 300 ? listed(c->auth_request_set, x->name, x->name_len)
                                : http_name_eq(x, "www-authenticate");
            if (take)
                lines = lg_arena_printf(&r->arena, "%s%.*s: %.*s\r\n", lines, (int)x->name_len,
                                        x->name, (int)x->value_len, x->value);
        }
        if (lines == NULL) {
            ar_fail(a, ENOMEM, "out of memory");
            return;
        }
        if (c->auth_request_cache_time > 0) {
            const char *key = lg_vars_expand(r, c->auth_request_cache_key, LG_VARS_RAW, NULL);
            if (key)
                cache_put(c, key, st, lines);
        }
        ar_release(a);
        if (st < 300) {
            if (apply(r, c, st, lines) < 0) {
                lg_respond_error(r, 500);
                return;
            }
            lg_req_resume(r);
            return;
        }
        r->stage = NULL;
        apply(r, c, st, lines);
        return;
    }
    char what[64];
    snprintf(what, sizeof(what), "the service answered %d", st);
    ar_fail(a, 0, what);
}

/* Drive the subrequest as far as its connection allows. */
static void ar_step(ar_t *a)
{
    lg_uconn_t *uc = a->uc;
    uc->e.want_r = uc->e.want_w = 0;
    if (a->st == AR_CONNECT) {
        if (!uc->connected) {
            if (!uc->e.w_ready && !uc->e.r_ready)
                return;
            int err = 0;
            socklen_t l = sizeof(err);
            getsockopt(uc->e.io.fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                ar_fail(a, err, "connect() failed");
                return;
            }
            uc->connected = 1;
            uc->e.w_ready = 1;
        }
        if (uc->up->tls && !uc->tls_done) {
            char why[256];
            if (uc->e.ssl == NULL &&
                (uc->e.ssl = lg_tls_connect(uc->up, uc->server, uc->e.io.fd)) == NULL) {
                ar_fail(a, 0, "cannot start TLS");
                return;
            }
            int rc = lg_end_handshake(&uc->e, why, sizeof(why));
            if (rc == LG_AGAIN)
                return;
            if (rc == LG_ERROR) {
                ar_fail(a, 0, "TLS handshake failed");
                return;
            }
            uc->tls_done = 1;
        }
        a->st = AR_SEND;
    }
    if (a->st == AR_SEND) {
        while (a->sent < a->len) {
            ssize_t n = lg_end_send(&uc->e, a->head + a->sent, a->len - a->sent);
            if (n == LG_AGAIN)
                return;
            if (n <= 0) {
                ar_fail(a, errno, "send() failed");
                return;
            }
            a->sent += (size_t)n;
        }
        a->st = AR_READ;
    }
    if (uc->in == NULL && (uc->in = lg_buf_get()) == NULL) {
        ar_fail(a, ENOMEM, "no buffer");
        return;
    }
    static const http_limits_t lim = { LG_BUF_SIZE / 2, LG_BUF_SIZE / 2, LG_MAX_HEADERS };
    lg_buf_t *b = uc->in;
    for (;;) {
        if (lg_buf_len(b)) {
            http_response_t rsp = { .headers = a->hs };
            ssize_t rc = http_parse_response(b->pos, lg_buf_len(b), &rsp, &lim, &a->scanned);
            if (rc > 0 && rsp.status < 200) {
                b->pos += rc;           /* 1xx: not the answer */
                a->scanned = 0;
                continue;
            }
            if (rc > 0) {
                ar_decide(a, &rsp);
                return;
            }
            if (rc != HTTP_AGAIN || b->last == b->end) {
                ar_fail(a, 0, "the service sent an invalid response head");
                return;
            }
        }
        ssize_t n = lg_end_recv(&uc->e, b->last, (size_t)(b->end - b->last));
        if (n == LG_AGAIN)
            return;
        if (n <= 0) {
            ar_fail(a, n < 0 ? errno : 0, "the service closed before its answer");
            return;
        }
        b->last += n;
    }
}

static void ar_io(lg_io_t *io, uint32_t ev)
{
    ar_t *a = io->data;
    lg_uconn_t *uc = a->uc;
    LG_CHECK_UCONN(uc);
    lg_end_on_event(&uc->e, ev);
    lg_req_t *r = a->r;
    ar_step(a);
    lg_req_run(r);
}

/* ---- the ACCESS phase ---- */

static int auth_request_phase(lg_req_t *r)
{
    if (lg_req_is_forward(r) || r->conn->refresh || r->satisfied)
        return LG_DECLINED;     /* a refresh repeats a request that passed already; satisfy
                                   "any" and another check let it in */
    int status;
    const lg_route_t *rt = lg_route_request(r, &status);
    const lg_common_t *c = rt ? &rt->common : lg_req_common(r);
    if (c->auth_request_up == NULL)
        return LG_DECLINED;
    if (c->auth_request_cache_time > 0) {
        const char *key = lg_vars_expand(r, c->auth_request_cache_key, LG_VARS_RAW, NULL);
        const ar_entry_t *e = key ? cache_find(c, key) : NULL;
        if (e) {
            const char *lines = lg_arena_printf(&r->arena, "%s", e->lines);
            if (lines == NULL || apply(r, c, e->status, lines) < 0)
                return LG_ERROR;
            return e->status < 300 ? LG_OK : LG_DONE;
        }
    }
    ar_t *a = lg_arena_calloc(&r->arena, sizeof(*a));
    if (a == NULL)
        return LG_ERROR;
    a->r = r;
    a->c = c;
    if ((a->head = build_head(r, c, &a->len)) == NULL)
        return LG_ERROR;
    int err = 0;
    a->uc = lg_upstream_get(r, c->auth_request_up, &a->tried, &err);
    if (a->uc == NULL) {
        ar_fail(a, err, err == EBUSY ? "every server is at max_conns" : "no live server");
        return LG_DONE;
    }
    r->ctx[ar_slot] = a;
    lg_req_cleanup(r, ar_cleanup, a);
    a->uc->owner = r;
    a->uc->e.io.cb = ar_io;
    a->uc->e.io.data = a;
    if (a->uc->reused)
        a->uc->e.w_ready = 1;
    else {
        a->uc->e.w_ready = a->uc->connected;
        a->uc->e.r_ready = 0;
    }
    lg_req_suspend(r, &wait_stage);
    ar_step(a);
    return r->stage == &wait_stage ? LG_AGAIN : LG_DONE;
}

static void wait_step(lg_req_t *r)
{
    (void)r;                    /* the subrequest's own events drive it */
}

static lg_msec_t wait_arm(lg_req_t *r, lg_tkind_t *kind)
{
    ar_t *a = r->ctx[ar_slot];
    *kind = LG_T_WAIT;
    return a ? a->c->auth_request_timeout : 0;
}

static void wait_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    ar_t *a = r->ctx[ar_slot];
    if (a)
        ar_fail(a, ETIMEDOUT, "the service timed out");
}

static const lg_stage_t wait_stage = {
    .name = "asking the auth service", .step = wait_step, .arm = wait_arm,
    .timeout = wait_timeout,
};

const lg_feature_t lg_feature_auth_request = {
    .name = "auth_request",
    .handlers = { { LG_PH_ACCESS, auth_request_phase } },
    .ctx_slot = &ar_slot,
};

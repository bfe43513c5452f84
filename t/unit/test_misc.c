/*
 * Unit tests of the helpers below the proxy: message framing rules
 * (smuggling defences), path normalisation, arenas, the timer heap.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/event.h"
#include "http/message.h"
#include "http/parse.h"

/* ---- request framing: one line per case ---- */

typedef struct {
    const char *head;
    int         status;     /* expected lg_http_analyze_request result */
    int         body;       /* expected body kind when status == 0 */
} req_case_t;

static const req_case_t req_cases[] = {
    { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, LG_BODY_NONE },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 0, LG_BODY_LENGTH },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0, LG_BODY_NONE },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 0, LG_BODY_LENGTH },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, LG_BODY_LENGTH },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0, LG_BODY_CHUNKED },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 0, LG_BODY_CHUNKED },
    /* smuggling */
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 0 },
    { "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 0 },
    { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0 },
    { "GET / HTTP/1.1\r\n\r\n", 400, 0 },
    { "GET / HTTP/1.0\r\n\r\n", 0, LG_BODY_NONE },
    { "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 0, LG_BODY_NONE },
    { "GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n", 400, 0 },
    { "GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0 },
    { "GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0 },
    { "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0 },
    { "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0, LG_BODY_NONE },
    { "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, 0 },
    { "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400, 0 },
    { "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0, LG_BODY_NONE },
    { "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 0, LG_BODY_NONE },
    { "GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", 417, 0 },
};

Test(message, request_cases)
{
    for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
        const req_case_t *c = &req_cases[i];
        http_header_t hs[32];
        http_request_t r = { .headers = hs };
        http_limits_t lim = { 8192, 16384, 32 };
        size_t scanned = 0;
        ssize_t rc = http_parse_request(c->head, strlen(c->head), &r, &lim, &scanned);
        cr_assert_gt(rc, 0, "case %zu does not parse: %s", i, c->head);
        lg_req_info_t ri;
        int st = lg_http_analyze_request(&r, &ri);
        cr_expect_eq(st, c->status, "case %zu: status %d, want %d: %s", i, st, c->status, c->head);
        if (st == 0 && c->status == 0)
            cr_expect_eq((int)ri.body, c->body, "case %zu: body kind %d, want %d", i, ri.body, c->body);
    }
}

Test(message, request_fields)
{
    const char *h = "GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n"
                    "Connection: close\r\n\r\n";
    http_header_t hs[8];
    http_request_t r = { .headers = hs };
    http_limits_t lim = { 8192, 16384, 8 };
    size_t sc = 0;
    cr_assert_gt(http_parse_request(h, strlen(h), &r, &lim, &sc), 0);
    lg_req_info_t ri;
    cr_assert_eq(lg_http_analyze_request(&r, &ri), 0);
    cr_expect(ri.absolute_form);
    cr_expect_eq(ri.host.n, 11);
    cr_expect(strncmp(ri.host.p, "Example.com", 11) == 0);
    cr_expect_eq(ri.path.n, 4);
    cr_expect(strncmp(ri.uri.p, "/a/b?x=1", ri.uri.n) == 0);
    cr_expect(strncmp(ri.query.p, "x=1", ri.query.n) == 0);
    cr_expect_eq(ri.keep_alive, 0);
}

/* ---- response framing ---- */

typedef struct {
    const char *head;
    int         was_head;
    int         rc;
    int         body;
    int         keep;
} rsp_case_t;

static const rsp_case_t rsp_cases[] = {
    { "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, 0, LG_BODY_LENGTH, 1 },
    { "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 1, 0, LG_BODY_NONE, 1 },
    { "HTTP/1.1 204 No Content\r\n\r\n", 0, 0, LG_BODY_NONE, 1 },
    { "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 0, 0, LG_BODY_NONE, 1 },
    { "HTTP/1.1 200 OK\r\n\r\n", 0, 0, LG_BODY_CLOSE, 0 },
    { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, LG_BODY_CHUNKED, 1 },
    { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 0, LG_BODY_CHUNKED, 1 },
    { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 0, 0, LG_BODY_CHUNKED, 0 },
    { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, -1, 0, 0 },
    { "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 0, -1, 0, 0 },
    { "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", 0, 0, LG_BODY_LENGTH, 0 },
    { "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 0, 0, LG_BODY_LENGTH, 0 },
    { "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", 0, 0, LG_BODY_LENGTH, 1 },
};

Test(message, response_cases)
{
    for (size_t i = 0; i < sizeof(rsp_cases) / sizeof(rsp_cases[0]); i++) {
        const rsp_case_t *c = &rsp_cases[i];
        http_header_t hs[16];
        http_response_t r = { .headers = hs };
        http_limits_t lim = { 8192, 16384, 16 };
        size_t sc = 0;
        cr_assert_gt(http_parse_response(c->head, strlen(c->head), &r, &lim, &sc), 0,
                     "case %zu does not parse", i);
        lg_rsp_info_t ri;
        int rc = lg_http_analyze_response(&r, c->was_head, &ri);
        cr_expect_eq(rc, c->rc, "case %zu: rc %d", i, rc);
        if (rc == 0) {
            cr_expect_eq((int)ri.body, c->body, "case %zu: body %d want %d", i, ri.body, c->body);
            cr_expect_eq(ri.keep_alive, c->keep, "case %zu: keep %d", i, ri.keep_alive);
        }
    }
}

Test(message, hop_by_hop)
{
    http_header_t h = { "X-Secret", 8, "1", 1 };
    lg_str_t conn = { "keep-alive, X-Secret", 20 };
    lg_str_t none = { NULL, 0 };
    cr_expect(lg_http_is_hop_by_hop(&h, conn));
    cr_expect(!lg_http_is_hop_by_hop(&h, none));
    http_header_t te = { "TE", 2, "trailers", 8 };
    cr_expect(lg_http_is_hop_by_hop(&te, none));
    http_header_t pc = { "Proxy-Connection", 16, "x", 1 };
    cr_expect(lg_http_is_hop_by_hop(&pc, none));
    http_header_t ct = { "Content-Type", 12, "x", 1 };
    cr_expect(!lg_http_is_hop_by_hop(&ct, conn));
}

/* ---- path normalisation ---- */

static const struct { const char *in, *out; } paths[] = {
    { "/", "/" },
    { "/a/b", "/a/b" },
    { "//a///b", "/a/b" },
    { "/a/./b", "/a/b" },
    { "/a/b/..", "/a/" },   /* RFC 3986 5.2.4 */
    { "/a/b/../c", "/a/c" },
    { "/a/%2e%2e/c", "/c" },
    { "/%41%62", "/Ab" },
    { "/a/.", "/a/" },
    { "/..", NULL },
    { "/a/../..", NULL },
    { "/%zz", NULL },
    { "/%4", NULL },
    { "/%00", NULL },
};

Test(message, normalize_path)
{
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        char out[64];
        ssize_t n = lg_http_normalize_path(paths[i].in, strlen(paths[i].in), out);
        if (paths[i].out == NULL) {
            cr_expect_lt(n, 0, "%s should be refused, got %s", paths[i].in, n >= 0 ? out : "");
        } else {
            cr_expect_geq(n, 0, "%s refused", paths[i].in);
            if (n >= 0)
                cr_expect_str_eq(out, paths[i].out, "%s -> %s, want %s", paths[i].in, out, paths[i].out);
        }
    }
}

Test(message, list_has)
{
    cr_expect(lg_http_list_has("keep-alive, Close", 17, "close"));
    cr_expect(!lg_http_list_has("closed", 6, "close"));
    cr_expect(lg_http_list_has(" ,, close ,", 11, "close"));
}

/* ---- arena ---- */

Test(arena, alloc_align_limit)
{
    lg_arena_t a;
    lg_arena_init(&a, 1024, 4096);
    char *p = lg_arena_alloc(&a, 10);
    char *q = lg_arena_alloc(&a, 10);
    cr_assert(p && q);
    cr_expect_eq(((uintptr_t)p) % 16, 0);
    cr_expect_eq(((uintptr_t)q) % 16, 0);
    cr_expect_str_eq(lg_arena_printf(&a, "%d-%s", 7, "x"), "7-x");
    cr_expect_null(lg_arena_alloc(&a, 8192), "over the limit must fail, not crash");
    lg_arena_reset(&a);
    cr_expect_leq(a.total, 1024);
    cr_expect_not_null(lg_arena_alloc(&a, 100));
    lg_arena_destroy(&a);
    lg_arena_destroy(&a);   /* idempotent */
}

/* ---- timers ---- */

static int fired[16];
static int nfired;
static void on_timer(lg_timer_t *t) { fired[nfired++] = (int)(intptr_t)t->data; }

Test(event, timer_heap_order_and_delete)
{
    lg_loop_t l;
    cr_assert_eq(lg_loop_init(&l), 0);
    lg_timer_t t[8];
    int order[8] = { 5, 1, 7, 3, 0, 6, 2, 4 };
    for (int i = 0; i < 8; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].cb = on_timer;
        t[i].data = (void *)(intptr_t)i;
        lg_timer_set(&l, &t[i], order[i]);
    }
    lg_timer_del(&l, &t[2]);            /* due at 7 */
    lg_timer_set(&l, &t[3], 0);         /* moved to the front */
    cr_expect(!lg_timer_armed(&t[2]));
    nfired = 0;
    for (int k = 0; k < 20 && nfired < 7; k++)
        lg_loop_once(&l, 5);
    cr_assert_eq(nfired, 7);
    /* expected order by due time: t3(0), t4(0), t1(1), t6(2), t7(4), t0(5), t5(6) */
    int want[7] = { 3, 4, 1, 6, 7, 0, 5 };
    for (int i = 0; i < 7; i++) {
        if (i == 0 || i == 1)
            cr_expect(fired[i] == 3 || fired[i] == 4);
        else
            cr_expect_eq(fired[i], want[i], "position %d: %d", i, fired[i]);
    }
    lg_loop_destroy(&l);
}

/* core/relit.c: a literal-prefix regex gives regexec's answer and captures,
 * and anything else is left to regexec. */
#include "core/relit.h"

Test(relit, agrees_with_regexec)
{
    static const char *res[] = {
        "^/c/(.*)$", "^/c(/.*)$", "^/c(/.*)", "^/api/", "^/a\\.b/(.*)$", "^/API/(.*)$",
        "^/x\\+y(.*)", "^/", "^/c/(.*)",
    };
    static const char *subjects[] = {
        "/c/1k", "/c/", "/c", "/cx", "/c/a/b?x", "/api/v1", "/api", "/a.b/z", "/aXb/z", "/API/q",
        "/api/Q", "/x+y", "/x+yz", "/", "",
    };
    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        for (int icase = 0; icase < 2; icase++) {
            lg_relit_t rl;
            cr_assert_neq(lg_relit_parse(&rl, res[i], icase), LG_RELIT_NONE, "%s is a literal prefix", res[i]);
            regex_t re;
            cr_assert_eq(regcomp(&re, res[i], REG_EXTENDED | (icase ? REG_ICASE : 0)), 0);
            for (size_t j = 0; j < sizeof(subjects) / sizeof(subjects[0]); j++) {
                regmatch_t a[10], b[10];
                int x = regexec(&re, subjects[j], 10, a, 0) == 0;
                int y = lg_relit_match(&rl, subjects[j], strlen(subjects[j]), b);
                cr_assert_eq(y, x, "%s%s on %s: %d, regexec %d", res[i], icase ? " (icase)" : "", subjects[j], y, x);
                for (int k = 0; x && k < 10; k++)
                    cr_assert(a[k].rm_so == b[k].rm_so && a[k].rm_eo == b[k].rm_eo,
                              "%s on %s: capture %d [%d,%d) against regexec's [%d,%d)", res[i], subjects[j], k,
                              (int)b[k].rm_so, (int)b[k].rm_eo, (int)a[k].rm_so, (int)a[k].rm_eo);
            }
            regfree(&re);
        }
    }
}

Test(relit, other_shapes_stay_with_regexec)
{
    static const char *res[] = {
        "/c/(.*)$", "^/c/$", "^/c/(.+)$", "^/c/([^/]*)$", "^/c|^/d", "^/c/(.*)/x", "^/c\\d", "^/c/.*",
        "^/c?", "^", "^(.*)$", "^/a[b]", "^/c/(.*)$x",
    };
    for (size_t i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        lg_relit_t rl;
        cr_assert_eq(lg_relit_parse(&rl, res[i], 0), LG_RELIT_NONE, "%s is not a literal prefix", res[i]);
    }
}

/*
 * Unit tests for src/http/parse.c.
 *
 * Every case is one table line.  Each input is copied so that it ends right
 * before a PROT_NONE page: a parser that reads one byte too far crashes the
 * case instead of passing by luck.  Heads are fed whole and then one byte
 * more at a time (keeping `scanned`, each prefix again placed against the
 * guard page); chunked bodies are fed whole, byte by byte, and split in two
 * at every offset.  All feedings must agree.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/parse.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ */
/* guard-page buffers                                                  */

typedef struct {
    char   *map;
    size_t  map_len;
    char   *end;            /* first byte of the PROT_NONE page */
} guard_t;

static void guard_init(guard_t *g, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (n + pg - 1) / pg * pg;

    if (data == 0)
        data = pg;
    g->map_len = data + pg;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(g->map != MAP_FAILED);
    cr_assert(mprotect(g->map + data, pg, PROT_NONE) == 0);
    g->end = g->map + data;
}

/* Place src[0..n) so that it ends at the guard page; return its start. */
static char *guard_put(guard_t *g, const void *src, size_t n)
{
    char *p = g->end - n;

    memcpy(p, src, n);
    return p;
}

static void guard_free(guard_t *g)
{
    munmap(g->map, g->map_len);
}

/* Printable form of a test input, for failure messages. */
static const char *show(const char *s, size_t n)
{
    static char out[512];
    size_t o = 0;

    for (size_t i = 0; i < n && o < sizeof(out) - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\r");
        else if (c == '\n')
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\n");
        else if (c < 0x20 || c >= 0x7f || c == '\\')
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

static int span_eq(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

/* ------------------------------------------------------------------ */
/* limits used by the tables                                           */

#define MAX_LINE    64
#define MAX_HEAD    1024
#define MAX_HEADERS 16

static const http_limits_t lim = {
    .max_line = MAX_LINE, .max_head = MAX_HEAD, .max_headers = MAX_HEADERS,
};

/* Long literals for the limit cases. */
#define S8    "aaaaaaaa"
#define S16   S8 S8
#define S64   S16 S16 S16 S16
#define S256  S64 S64 S64 S64
#define S1024 S256 S256 S256 S256

/* ------------------------------------------------------------------ */
/* requests                                                            */

typedef struct {
    const char *in;         /* the head, or the bad input */
    size_t      len;
    ssize_t     rc;         /* 0: success, head = whole `in` */
    const char *method;
    const char *target;
    int         version;
    size_t      nhdr;
    const char *hname;      /* one header checked: name and value */
    const char *hval;
    const char *rest;       /* appended after `in`, must not be consumed */
} req_case_t;

#define RQ(in, m, t, v, n, hn, hv) \
    { in, sizeof(in) - 1, 0, m, t, v, n, hn, hv, "" }
#define RQ_PIPE(in, rest, m, t, v, n, hn, hv) \
    { in, sizeof(in) - 1, 0, m, t, v, n, hn, hv, rest }
#define RQ_ERR(in, rc) \
    { in, sizeof(in) - 1, rc, NULL, NULL, 0, 0, NULL, NULL, "" }

#define HEAD16                                                              \
    "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n"      \
    "I: 9\r\nJ: 10\r\nK: 11\r\nL: 12\r\nM: 13\r\nN: 14\r\nO: 15\r\nP: 16\r\n"

#define BROWSER                                                             \
    "GET /index.html?q=1 HTTP/1.1\r\n"                                      \
    "Host: www.example.com\r\n"                                             \
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) "                \
    "Gecko/20100101 Firefox/128.0\r\n"                                      \
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,"        \
    "*/*;q=0.8\r\n"                                                         \
    "Accept-Language: en-US,en;q=0.5\r\n"                                   \
    "Accept-Encoding: gzip, deflate, br\r\n"                                \
    "Connection: keep-alive\r\n"                                            \
    "Upgrade-Insecure-Requests: 1\r\n"                                      \
    "Cookie: session=0123456789abcdef\r\n"                                  \
    "\r\n"

static const req_case_t req_cases[] = {
    /* valid */
    RQ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
       "GET", "/", 11, 1, "host", "example.com"),
    RQ(BROWSER, "GET", "/index.html?q=1", 11, 8, "User-Agent",
       "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    RQ_PIPE("POST /submit?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            "hello", "POST", "/submit?x=1", 11, 2, "content-length", "5"),
    RQ("GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
       "GET", "http://example.com:8080/a/b?c=d", 11, 1, "Host", "example.com:8080"),
    RQ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
       "CONNECT", "example.com:443", 11, 1, "Host", "example.com:443"),
    RQ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS", "*", 11, 1, "Host", "a"),
    RQ("GET / HTTP/1.0\r\n\r\n", "GET", "/", 10, 0, NULL, NULL),
    RQ("GET / HTTP/1.9\r\nHost: a\r\n\r\n", "GET", "/", 11, 1, "Host", "a"),
    RQ("M-SEARCH * HTTP/1.1\r\nMan: \"ssdp:discover\"\r\n\r\n",
       "M-SEARCH", "*", 11, 1, "MAN", "\"ssdp:discover\""),
    RQ("get / HTTP/1.1\r\n\r\n", "get", "/", 11, 0, NULL, NULL),
    RQ("GET /a%20b?q=[x]&y={z}|~#frag HTTP/1.1\r\n\r\n",
       "GET", "/a%20b?q=[x]&y={z}|~#frag", 11, 0, NULL, NULL),
    RQ("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", 11, 1, "Host", "a"),
    RQ("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", "GET", "/", 11, 0, NULL, NULL),
    RQ_PIPE("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET", "/1", 11, 1, "Host", "a"),
    RQ_PIPE("GET /1 HTTP/1.1\r\n\r\n", "\r\n", "GET", "/1", 11, 0, NULL, NULL),
    RQ("GET / HTTP/1.1\r\nX: \t  v a l \t \r\n\r\n", "GET", "/", 11, 1, "x", "v a l"),
    RQ("GET / HTTP/1.1\r\nX:\r\n\r\n", "GET", "/", 11, 1, "X", ""),
    RQ("GET / HTTP/1.1\r\nX: \t \r\n\r\n", "GET", "/", 11, 1, "X", ""),
    RQ("GET / HTTP/1.1\r\nX:a:b \"c\" (d)\r\n\r\n", "GET", "/", 11, 1, "X", "a:b \"c\" (d)"),
    RQ("GET / HTTP/1.1\r\nX: caf\xc3\xa9 \xff\r\n\r\n", "GET", "/", 11, 1, "X", "caf\xc3\xa9 \xff"),
    RQ("GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n",
       "GET", "/", 11, 1, "!#$%&'*+-.^_`|~09azaz", "v"),
    RQ("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n", "GET", "/", 11, 3, "b", "2"),
    RQ("GET / HTTP/1.1\r\n" HEAD16 "\r\n", "GET", "/", 11, 16, "P", "16"),
    /* request line of exactly MAX_LINE (64) bytes */
    RQ("GET /" S16 S16 "aaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
       "GET", "/" S16 S16 "aaaaaaaaaaaaaaaaaa", 11, 0, NULL, NULL),
    /* head of exactly MAX_HEAD (1024) bytes */
    RQ("GET / HTTP/1.1\r\nX: " S256 S256 S256 S64 S64 S64 S16 S16 S8 "a\r\n\r\n",
       "GET", "/", 11, 1, "X", S256 S256 S256 S64 S64 S64 S16 S16 S8 "a"),

    /* incomplete */
    RQ_ERR("", HTTP_AGAIN),
    RQ_ERR("\r\n\r", HTTP_AGAIN),
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n", HTTP_AGAIN),
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\r", HTTP_AGAIN),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\r\rb", HTTP_AGAIN),  /* bare CR: found at end */

    /* line endings: CRLF only */
    RQ_ERR("GET / HTTP/1.1\nHost: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\n\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\r\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX\r: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\r HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\n\r\r\n\r\n", HTTP_BAD),
    RQ_ERR("\nGET / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("\r\rGET / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", HTTP_BAD),

    /* field lines */
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX\0Y: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX(Y): a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX/Y: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\n: a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost a\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1\r\nHost\r\n\r\n", HTTP_BAD),

    /* request line */
    RQ_ERR("GET / HTTP/2.0\r\n\r\n", HTTP_BAD_VERSION),
    RQ_ERR("GET / HTTP/3.0\r\nHost: a\r\n\r\n", HTTP_BAD_VERSION),
    RQ_ERR("GET / HTTP/0.9\r\n\r\n", HTTP_BAD_VERSION),
    RQ_ERR("GET / HTTP/2\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/11\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.10\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.x\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / http/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTPS/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / HTTP/1.1 \r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET / \r\n\r\n", HTTP_BAD),
    RQ_ERR("GET\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET/ HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET  / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /  HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET\t/ HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\tHTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR(" GET / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("G@T / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GE(T) / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("G\0T / HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\x7f HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\x80 HTTP/1.1\r\n\r\n", HTTP_BAD),
    RQ_ERR("GET /\0 HTTP/1.1\r\n\r\n", HTTP_BAD),

    /* limits */
    RQ_ERR("GET /" S16 S16 "aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
           HTTP_URI_TOO_LONG),
    RQ_ERR("GET /" S64 S64 " HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_URI_TOO_LONG),
    RQ_ERR("\r\nGET /" S64 S64, HTTP_URI_TOO_LONG),
    RQ_ERR("GET / HTTP/1.1\r\nX: " S256 S256 S256 S64 S64 S64 S16 S16 S8 "aa\r\n\r\n",
           HTTP_HEAD_TOO_LARGE),
    RQ_ERR("GET / HTTP/1.1\r\nX: " S1024, HTTP_HEAD_TOO_LARGE),
    RQ_ERR("GET / HTTP/1.1\r\nX: " S1024 "\n", HTTP_HEAD_TOO_LARGE),
    RQ_ERR("GET / HTTP/1.1\r\n" HEAD16 "Q: 17\r\n\r\n", HTTP_HEAD_TOO_LARGE),
};

ParameterizedTestParameters(request, table)
{
    static size_t idx[ARRAY_SIZE(req_cases)];

    for (size_t i = 0; i < ARRAY_SIZE(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, ARRAY_SIZE(idx));
}

static void check_request_fields(const req_case_t *tc, const http_request_t *r,
                                 const char *buf, size_t n, size_t k)
{
    const char *in = show(tc->in, tc->len);

    cr_assert(span_eq(r->method, r->method_len, tc->method),
              "[%s] method, len %zu", in, k);
    cr_assert(span_eq(r->target, r->target_len, tc->target),
              "[%s] target, len %zu", in, k);
    cr_assert_eq(r->version, tc->version, "[%s] version", in);
    cr_assert_eq(r->num_headers, tc->nhdr, "[%s] header count %zu", in,
                 r->num_headers);
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        cr_assert(h->name >= buf && h->name + h->name_len <= buf + n);
        cr_assert(h->value >= buf && h->value + h->value_len <= buf + n);
    }
    if (tc->hname == NULL)
        return;
    for (size_t i = 0; i < r->num_headers; i++) {
        if (http_name_eq(&r->headers[i], tc->hname)) {
            cr_assert(span_eq(r->headers[i].value, r->headers[i].value_len,
                              tc->hval), "[%s] value of %s", in, tc->hname);
            return;
        }
    }
    cr_assert_fail("[%s] no header %s", in, tc->hname);
}

ParameterizedTest(size_t *ip, request, table)
{
    const req_case_t *tc = &req_cases[*ip];
    size_t rest = strlen(tc->rest), n = tc->len + rest;
    ssize_t want = tc->rc == 0 ? (ssize_t)tc->len : tc->rc;
    static char src[4096];
    http_header_t hdr[MAX_HEADERS];
    http_request_t r;
    guard_t g;
    size_t scanned = 0;

    cr_assert(n <= sizeof(src));
    memcpy(src, tc->in, tc->len);
    memcpy(src + tc->len, tc->rest, rest);
    guard_init(&g, n);

    /* whole */
    char *buf = guard_put(&g, src, n);
    memset(&r, 0, sizeof(r));
    r.headers = hdr;
    ssize_t rc = http_parse_request(buf, n, &r, &lim, &scanned);
    cr_assert_eq(rc, want, "[%s] whole: rc %zd, want %zd",
                 show(tc->in, tc->len), rc, want);
    if (tc->rc == 0)
        check_request_fields(tc, &r, buf, n, n);

    /* one more byte per call, each prefix against the guard page */
    scanned = 0;
    rc = HTTP_AGAIN;
    size_t k;
    for (k = 0; k <= n && rc == HTTP_AGAIN; k++) {
        buf = guard_put(&g, src, k);
        rc = http_parse_request(buf, k, &r, &lim, &scanned);
    }
    k--;
    cr_assert_eq(rc, want, "[%s] incremental: rc %zd at len %zu, want %zd",
                 show(tc->in, tc->len), rc, k, want);
    if (tc->rc == 0) {
        cr_assert_eq(k, tc->len, "[%s] complete at %zu", show(tc->in, tc->len), k);
        check_request_fields(tc, &r, buf, k, k);
    }

    guard_free(&g);
}

/* Limits outside the table: header count 0, huge max_line, pathological feeds. */

Test(request, no_header_room)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    http_limits_t l = { .max_line = 64, .max_head = 1024, .max_headers = 0 };
    http_request_t r = { .headers = NULL };
    size_t scanned = 0;

    cr_assert_eq(http_parse_request(in, sizeof(in) - 1, &r, &l, &scanned),
                 HTTP_HEAD_TOO_LARGE);
    scanned = 0;
    cr_assert_eq(http_parse_request(in, 18, &r, &l, &scanned), HTTP_AGAIN);
    scanned = 0;
    cr_assert_eq(http_parse_request("GET / HTTP/1.1\r\n\r\n", 18, &r, &l,
                                    &scanned), 18);
}

Test(request, unlimited_line)
{
    static const char in[] = "GET / HTTP/1.1\r\n\r\n";
    http_limits_t l = { .max_line = SIZE_MAX, .max_head = SIZE_MAX,
                        .max_headers = 4 };
    http_header_t hdr[4];
    http_request_t r = { .headers = hdr };
    size_t scanned = 0;

    cr_assert_eq(http_parse_request(in, 5, &r, &l, &scanned), HTTP_AGAIN);
    cr_assert_eq(http_parse_request(in, sizeof(in) - 1, &r, &l, &scanned),
                 (ssize_t)sizeof(in) - 1);
}

/* A slow client: scanning must not restart from 0 (checked via *scanned). */
Test(request, scanned_advances)
{
    static const char in[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    http_header_t hdr[4];
    http_request_t r = { .headers = hdr };
    size_t scanned = 0, last = 0;

    for (size_t k = 1; k < sizeof(in) - 1; k++) {
        cr_assert_eq(http_parse_request(in, k, &r, &lim, &scanned), HTTP_AGAIN);
        cr_assert(scanned >= last && scanned <= k);
        last = scanned;
    }
    cr_assert_eq(scanned, sizeof(in) - 2);
}

/* ------------------------------------------------------------------ */
/* responses                                                           */

typedef struct {
    const char *in;
    size_t      len;
    ssize_t     rc;         /* 0: success, head = whole `in` */
    int         version;
    int         status;
    const char *reason;
    size_t      nhdr;
    const char *hname;
    const char *hval;
    const char *rest;
} rsp_case_t;

#define RS(in, v, s, reason, n, hn, hv) \
    { in, sizeof(in) - 1, 0, v, s, reason, n, hn, hv, "" }
#define RS_BODY(in, rest, v, s, reason, n, hn, hv) \
    { in, sizeof(in) - 1, 0, v, s, reason, n, hn, hv, rest }
#define RS_ERR(in, rc) \
    { in, sizeof(in) - 1, rc, 0, 0, NULL, 0, NULL, NULL, "" }

static const rsp_case_t rsp_cases[] = {
    RS("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
       11, 200, "OK", 1, "content-length", "0"),
    RS_BODY("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\n", "hello",
            11, 200, "OK", 2, "Server", "x"),
    RS("HTTP/1.0 404 Not Found\r\n\r\n", 10, 404, "Not Found", 0, NULL, NULL),
    RS("HTTP/1.1 204 \r\n\r\n", 11, 204, "", 0, NULL, NULL),
    RS("HTTP/1.1 200\r\nX: y\r\n\r\n", 11, 200, "", 1, "X", "y"),
    RS("HTTP/1.1 200\r\n\r\n", 11, 200, "", 0, NULL, NULL),
    RS("HTTP/1.1 999 \tWeird\t r\xc3\xa9" "ason \r\n\r\n",
       11, 999, "\tWeird\t r\xc3\xa9" "ason ", 0, NULL, NULL),
    RS("HTTP/1.1 100 Continue\r\n\r\n", 11, 100, "Continue", 0, NULL, NULL),
    RS("HTTP/1.3 301 Moved\r\nLocation: /x\r\n\r\n", 11, 301, "Moved", 1, "location", "/x"),

    RS_ERR("HTTP/1.1 200 OK\r\n", HTTP_AGAIN),
    RS_ERR("HTTP/1.1 200 OK\r\nX: y\r\n\r", HTTP_AGAIN),

    RS_ERR("HTTP/1.1 099 Low\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 20 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 2000 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 20a OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 -20 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1  200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 \r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 O\x01K\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 O\rK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 OK\nX: y\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 OK\r\nX: \0\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/2.0 200 OK\r\n\r\n", HTTP_BAD_VERSION),
    RS_ERR("HTTP/2 200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("http/1.1 200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("ICY 200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("\r\nHTTP/1.1 200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("\nHTTP/1.1 200 OK\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 " S64 "\r\n\r\n", HTTP_BAD),
    RS_ERR("HTTP/1.1 200 OK\r\nX: " S1024 "\r\n\r\n", HTTP_HEAD_TOO_LARGE),
    RS_ERR("HTTP/1.1 200 OK\r\n" HEAD16 "Q: 17\r\n\r\n", HTTP_HEAD_TOO_LARGE),
};

ParameterizedTestParameters(response, table)
{
    static size_t idx[ARRAY_SIZE(rsp_cases)];

    for (size_t i = 0; i < ARRAY_SIZE(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, ARRAY_SIZE(idx));
}

static void check_response_fields(const rsp_case_t *tc, const http_response_t *r)
{
    const char *in = show(tc->in, tc->len);

    cr_assert_eq(r->version, tc->version, "[%s] version", in);
    cr_assert_eq(r->status, tc->status, "[%s] status %d", in, r->status);
    cr_assert(span_eq(r->reason, r->reason_len, tc->reason), "[%s] reason", in);
    cr_assert_eq(r->num_headers, tc->nhdr, "[%s] header count", in);
    if (tc->hname == NULL)
        return;
    for (size_t i = 0; i < r->num_headers; i++) {
        if (http_name_eq(&r->headers[i], tc->hname)) {
            cr_assert(span_eq(r->headers[i].value, r->headers[i].value_len,
                              tc->hval), "[%s] value of %s", in, tc->hname);
            return;
        }
    }
    cr_assert_fail("[%s] no header %s", in, tc->hname);
}

ParameterizedTest(size_t *ip, response, table)
{
    const rsp_case_t *tc = &rsp_cases[*ip];
    size_t rest = strlen(tc->rest), n = tc->len + rest;
    ssize_t want = tc->rc == 0 ? (ssize_t)tc->len : tc->rc;
    static char src[4096];
    http_header_t hdr[MAX_HEADERS];
    http_response_t r;
    guard_t g;
    size_t scanned = 0;

    cr_assert(n <= sizeof(src));
    memcpy(src, tc->in, tc->len);
    memcpy(src + tc->len, tc->rest, rest);
    guard_init(&g, n);

    char *buf = guard_put(&g, src, n);
    memset(&r, 0, sizeof(r));
    r.headers = hdr;
    ssize_t rc = http_parse_response(buf, n, &r, &lim, &scanned);
    cr_assert_eq(rc, want, "[%s] whole: rc %zd, want %zd",
                 show(tc->in, tc->len), rc, want);
    if (tc->rc == 0)
        check_response_fields(tc, &r);

    scanned = 0;
    rc = HTTP_AGAIN;
    size_t k;
    for (k = 0; k <= n && rc == HTTP_AGAIN; k++) {
        buf = guard_put(&g, src, k);
        rc = http_parse_response(buf, k, &r, &lim, &scanned);
    }
    k--;
    cr_assert_eq(rc, want, "[%s] incremental: rc %zd at len %zu, want %zd",
                 show(tc->in, tc->len), rc, k, want);
    if (tc->rc == 0) {
        cr_assert_eq(k, tc->len);
        check_response_fields(tc, &r);
    }

    guard_free(&g);
}

/* ------------------------------------------------------------------ */
/* chunked                                                             */

typedef struct {
    const char *in;
    size_t      len;
    int         bad;        /* expect HTTP_BAD */
    size_t      consumed;   /* bytes of `in` that belong to the body */
    const char *out;        /* decoded payload */
    size_t      out_len;
    int         done;
} chunk_case_t;

/* complete body, nothing after it */
#define CK(in, out) { in, sizeof(in) - 1, 0, sizeof(in) - 1, out, sizeof(out) - 1, 1 }
/* complete body followed by `rest`, which must be left alone */
#define CK_END(in, rest, out) \
    { in rest, sizeof(in rest) - 1, 0, sizeof(in) - 1, out, sizeof(out) - 1, 1 }
/* incomplete: everything consumed, not done */
#define CK_MORE(in, out) \
    { in, sizeof(in) - 1, 0, sizeof(in) - 1, out, sizeof(out) - 1, 0 }
#define CK_BAD(in) { in, sizeof(in) - 1, 1, 0, "", 0, 0 }

static const chunk_case_t chunk_cases[] = {
    CK("5\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("0\r\n\r\n", ""),
    CK("3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n", "abcdefgh"),
    CK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij"),
    CK("1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", "\r\n"),
    CK("0005\r\nhello\r\n000\r\n\r\n", "hello"),
    CK("0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n", "hello"),
    CK("5;foo\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;foo=bar\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5 ; foo = bar ; baz;q=1\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5\t;\tfoo\t=\tbar\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;a=\"x y\\\"z;=\"\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;a=\"\"\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;a=\"caf\xc3\xa9\";b\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;a=\"x\" ;b\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5;a ;b\r\nhello\r\n0\r\n\r\n", "hello"),
    CK("5\r\nhello\r\n0;last=1\r\n\r\n", "hello"),
    CK("5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:1\r\n\r\n", "hello"),
    CK("0\r\nX: \t a b \xff \r\nY:\r\n\r\n", ""),
    CK_END("5\r\nhello\r\n0\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "hello"),
    CK_END("0\r\n\r\n", "0\r\n\r\n", ""),
    CK_END("0\r\nX: y\r\n\r\n", "\r\n", ""),
    CK_MORE("", ""),
    CK_MORE("5\r\nhel", "hel"),
    CK_MORE("5\r\nhello\r\n0\r\n", "hello"),
    CK_MORE("5\r\nhello\r\n0\r\n\r", "hello"),
    CK_MORE("5\r\nhello\r\n0\r\nX: y\r\n", "hello"),
    CK_MORE("7fffffffffffffff\r\nabc", "abc"),
    CK_MORE("5;a=\"x", ""),

    /* chunk-size */
    CK_BAD("g\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("-5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("+5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("0x5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD(" 5\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5 \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5\r\nhello\r\n5x\r\n"),
    CK_BAD("00000000000000005\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("10000000000000000\r\n"),
    CK_BAD("8000000000000000\r\n"),
    CK_BAD("ffffffffffffffff\r\n"),
    CK_BAD("5\nhello\r\n0\r\n\r\n"),
    CK_BAD("5\r\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5\rhello\r\n0\r\n\r\n"),

    /* chunk-data and its CRLF */
    CK_BAD("5\r\nhelloX\r\n0\r\n\r\n"),
    CK_BAD("5\r\nhello\n0\r\n\r\n"),
    CK_BAD("5\r\nhello\r0\r\n\r\n"),
    CK_BAD("5\r\nhello0\r\n\r\n"),
    CK_BAD("5\r\nhell\r\n0\r\n\r\n"),

    /* chunk-ext */
    CK_BAD("5;\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5; \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;=x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a= \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=b c\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=b \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a \r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a@b\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=b@c\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a==b\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\"x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a=\x01\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a\0\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("5;a\nhello\r\n0\r\n\r\n"),
    CK_BAD("5 x\r\nhello\r\n0\r\n\r\n"),
    CK_BAD("0;\r\n\r\n"),

    /* trailer section */
    CK_BAD("0\r\nX: y\r\n z\r\n\r\n"),
    CK_BAD("0\r\n X: y\r\n\r\n"),
    CK_BAD("0\r\nX : y\r\n\r\n"),
    CK_BAD("0\r\nX: a\0b\r\n\r\n"),
    CK_BAD("0\r\nX: a\x7f\r\n\r\n"),
    CK_BAD("0\r\nX: y\n\r\n"),
    CK_BAD("0\r\nX: y\r\n\n"),
    CK_BAD("0\r\nX: y\ry\r\n\r\n"),
    CK_BAD("0\r\nX y\r\n\r\n"),
    CK_BAD("0\r\n: y\r\n\r\n"),
    CK_BAD("0\r\n\rX"),
    CK_BAD("0\r\n\n"),
};

ParameterizedTestParameters(chunked, table)
{
    static size_t idx[ARRAY_SIZE(chunk_cases)];

    for (size_t i = 0; i < ARRAY_SIZE(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, ARRAY_SIZE(idx));
}

/*
 * Feed src[0..n) in pieces of the given sizes (the last repeated), each
 * piece against the guard page; collect payload into out.  Returns HTTP_BAD
 * or the total consumed.
 */
static ssize_t chunk_feed(const char *src, size_t n, const size_t *pieces,
                          size_t npieces, char *out, size_t *out_len,
                          http_chunked_t *c)
{
    guard_t g;
    size_t off = 0, pi = 0;

    guard_init(&g, n);
    http_chunked_init(c);
    *out_len = 0;
    do {
        size_t k = pieces[pi < npieces ? pi : npieces - 1];
        pi++;
        if (k > n - off)
            k = n - off;
        char *buf = guard_put(&g, src + off, k);
        size_t got = (size_t)-1;
        ssize_t rc = http_chunked_decode(c, buf, k, &got);
        cr_assert(got <= k, "out_len %zu > len %zu", got, k);
        if (rc < 0) {
            cr_assert_eq(rc, HTTP_BAD);
            guard_free(&g);
            return rc;
        }
        cr_assert((size_t)rc <= k);
        memcpy(out + *out_len, buf, got);
        *out_len += got;
        off += (size_t)rc;
        if (!c->done)
            cr_assert_eq((size_t)rc, k, "consumed %zd of %zu before the end", rc, k);
    } while (!c->done && off < n);
    guard_free(&g);
    return (ssize_t)off;
}

static void check_chunked(const chunk_case_t *tc)
{
    static char out[32768];
    const char *in = show(tc->in, tc->len);
    http_chunked_t c;
    size_t out_len;

    cr_assert(tc->len <= sizeof(out));

    /* whole, byte by byte, in threes, then split in two at every offset */
    size_t whole = tc->len ? tc->len : 1, one = 1, three = 3;
    const struct { const size_t *p; size_t n; } plans[] = {
        { &whole, 1 }, { &one, 1 }, { &three, 1 },
    };
    size_t stride = tc->len / 256 + 1;    /* long inputs: ~256 splits */
    for (size_t i = 0; i < ARRAY_SIZE(plans) + tc->len; i++) {
        size_t split[2] = { i - ARRAY_SIZE(plans), tc->len };
        const size_t *p = i < ARRAY_SIZE(plans) ? plans[i].p : split;
        size_t np = i < ARRAY_SIZE(plans) ? 1 : 2;
        if (i >= ARRAY_SIZE(plans) && (split[0] == 0 || split[0] % stride))
            continue;

        ssize_t rc = chunk_feed(tc->in, tc->len, p, np, out, &out_len, &c);
        if (tc->bad) {
            cr_assert_eq(rc, HTTP_BAD, "[%s] plan %zu: rc %zd", in, i, rc);
            continue;
        }
        cr_assert_eq(rc, (ssize_t)tc->consumed, "[%s] plan %zu: rc %zd",
                     in, i, rc);
        cr_assert_eq(c.done, tc->done, "[%s] plan %zu: done", in, i);
        cr_assert(out_len == tc->out_len && memcmp(out, tc->out, out_len) == 0,
                  "[%s] plan %zu: payload [%s]", in, i, show(out, out_len));
    }
}

ParameterizedTest(size_t *ip, chunked, table)
{
    check_chunked(&chunk_cases[*ip]);
}

/* Called again after the end or after an error. */
Test(chunked, sticky_end_and_error)
{
    char a[] = "0\r\n\r\n0\r\n\r\n", b[] = "x\r\n";
    http_chunked_t c;
    size_t out;

    http_chunked_init(&c);
    cr_assert_eq(http_chunked_decode(&c, a, sizeof(a) - 1, &out), 5);
    cr_assert(c.done);
    cr_assert_eq(http_chunked_decode(&c, a + 5, 5, &out), 0);
    cr_assert_eq(out, 0);

    http_chunked_init(&c);
    cr_assert_eq(http_chunked_decode(&c, b, 3, &out), HTTP_BAD);
    cr_assert_eq(http_chunked_decode(&c, a, 5, &out), HTTP_BAD);
}

/* The trailer section is kept when the caller gives room, across calls. */
Test(chunked, trailers_kept)
{
    char in[] = "3\r\nabc\r\n0\r\ngrpc-status: 0\r\nX-A: b c\r\n\r\n";
    char tr[HTTP_CHUNKED_MAX_TRAILER];
    http_chunked_t c;
    size_t out, total = 0;

    for (size_t cut = 0; cut < sizeof(in) - 1; cut++) {
        char buf[sizeof(in)];
        memcpy(buf, in, sizeof(in));
        http_chunked_init(&c);
        c.tr = tr;
        c.tr_cap = sizeof(tr);
        ssize_t a = http_chunked_decode(&c, buf, cut, &out);
        cr_assert_eq(a, (ssize_t)cut);
        total = out;
        ssize_t b = http_chunked_decode(&c, buf + cut, sizeof(in) - 1 - cut, &out);
        cr_assert_eq(b, (ssize_t)(sizeof(in) - 1 - cut));
        total += out;
        cr_assert(c.done);
        cr_assert_eq(total, 3);
        cr_assert_eq(c.tr_len, strlen("grpc-status: 0\r\nX-A: b c\r\n"));
        cr_assert(memcmp(tr, "grpc-status: 0\r\nX-A: b c\r\n", c.tr_len) == 0);
    }
    /* no room given: discarded as before */
    char buf[sizeof(in)];
    memcpy(buf, in, sizeof(in));
    http_chunked_init(&c);
    cr_assert_eq(http_chunked_decode(&c, buf, sizeof(in) - 1, &out), (ssize_t)sizeof(in) - 1);
    cr_assert(c.done);
    cr_assert_eq(c.tr_len, 0);
}

/* Largest size: 2^63 - 1 is accepted and kept in `remaining`. */
Test(chunked, max_size)
{
    char in[] = "7FFFFFFFFFFFFFFF;x=y\r\nab";
    http_chunked_t c;
    size_t out;

    http_chunked_init(&c);
    cr_assert_eq(http_chunked_decode(&c, in, sizeof(in) - 1, &out),
                 (ssize_t)sizeof(in) - 1);
    cr_assert_eq(out, 2);
    cr_assert_eq(c.remaining, UINT64_C(0x7ffffffffffffffd));
    cr_assert(!c.done);
}

/* Trailer section of exactly HTTP_CHUNKED_MAX_TRAILER bytes, then one more. */
Test(chunked, trailer_limit)
{
    for (size_t extra = 0; extra <= 1; extra++) {
        size_t vlen = HTTP_CHUNKED_MAX_TRAILER - 7 + extra;   /* "X: " CRLF CRLF */
        size_t n = 3 + 3 + vlen + 4;
        char *in = malloc(n);
        memcpy(in, "0\r\nX: ", 6);
        memset(in + 6, 'v', vlen);
        memcpy(in + 6 + vlen, "\r\n\r\n", 4);
        chunk_case_t tc = { in, n, (int)extra, n, "", 0, 1 };
        check_chunked(&tc);
        free(in);
    }
}

/* Chunk extensions are capped per message; a few hundred bytes are fine. */
Test(chunked, extension_limit)
{
    for (size_t big = 0; big <= 1; big++) {
        size_t vlen = big ? 20000 : 500;
        size_t n = 4 + vlen + 2 + 1 + 2 + 5;
        char *in = malloc(n);
        memcpy(in, "1;a=", 4);
        memset(in + 4, 'e', vlen);
        memcpy(in + 4 + vlen, "\r\nx\r\n0\r\n\r\n", 10);
        chunk_case_t tc = { in, n, (int)big, n, "x", 1, 1 };
        check_chunked(&tc);
        free(in);
    }
}

/* ------------------------------------------------------------------ */
/* http_name_eq                                                        */

Test(name_eq, table)
{
    static const struct { const char *name, *lit; int eq; } cases[] = {
        { "Host", "host", 1 },
        { "HOST", "Host", 1 },
        { "host", "HOST", 1 },
        { "Content-Length", "content-length", 1 },
        { "Host", "Hos", 0 },
        { "Hos", "Host", 0 },
        { "Host", "Hosx", 0 },
        { "", "", 1 },
        { "", "a", 0 },
        { "a", "", 0 },
        { "[", "{", 0 },
        { "@", "`", 0 },
        { "^", "~", 0 },
        { "_", "\x7f", 0 },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        http_header_t h = { .name = cases[i].name,
                            .name_len = strlen(cases[i].name) };
        cr_expect_eq(http_name_eq(&h, cases[i].lit), cases[i].eq,
                     "%s vs %s", cases[i].name, cases[i].lit);
    }

    /* the name is not NUL-terminated: only name_len bytes count */
    http_header_t h = { .name = "Hostname", .name_len = 4 };
    cr_expect(http_name_eq(&h, "host"));
    cr_expect(!http_name_eq(&h, "hostname"));
}

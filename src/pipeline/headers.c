/*
 * Building message heads: the request sent upstream, the response sent to
 * the client, and responses made here (errors, `return`).
 *
 * Heads are written into the request arena by a small string builder; they
 * are never longer than the head they come from plus what the configuration
 * adds, so the arena's limit bounds them.
 */
#include "pipeline/headers.h"

#include "core/hash.h"
#include "pipeline/vars.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct sb {
    lg_arena_t *a;
    char       *p;
    size_t      n, cap;
    int         oom;
} sb_t;

static void sb_init(sb_t *b, lg_arena_t *a, size_t cap)
{
    b->a = a;
    b->n = 0;
    b->cap = cap;
    b->oom = 0;
    b->p = lg_arena_alloc(a, cap);
    if (b->p == NULL)
        b->oom = 1;
}

static int sb_grow(sb_t *b, size_t need)
{
    if (b->oom)
        return -1;
    size_t cap = b->cap * 2;
    while (cap < b->n + need)
        cap *= 2;
    char *p = lg_arena_alloc(b->a, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    memcpy(p, b->p, b->n);
    b->p = p;
    b->cap = cap;
    return 0;
}

static void sb_add(sb_t *b, const char *s, size_t n)
{
    /* out of memory once is out for good: nothing is copied into NULL */
    if (b->oom || (b->n + n > b->cap && sb_grow(b, n) < 0))
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_str(sb_t *b, const char *s) { sb_add(b, s, strlen(s)); }

/* "1.1 via_name\r\n": on every proxied request and response when via is on,
 * so without printf (whose machinery a callgrind profile showed first). */
static void sb_via(sb_t *b, int version)
{
    char v[4] = { (char)('0' + version / 10 % 10), '.', (char)('0' + version % 10), ' ' };
    sb_add(b, v, 4);
    sb_str(b, lg_w.conf->via_name);
    sb_add(b, "\r\n", 2);
}

/* name, a decimal number, CRLF: the lengths and ages of every head */
static void sb_num_header(sb_t *b, const char *name, int64_t v)
{
    char d[24];
    size_t i = sizeof(d);
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    do {
        d[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    sb_str(b, name);
    sb_add(b, d + i, sizeof(d) - i);
    sb_add(b, "\r\n", 2);
}

/* "HTTP/1.1 NNN " */
static void sb_status(sb_t *b, int status)
{
    char l[13] = "HTTP/1.1 000 ";
    if (status < 0 || status > 999)
        status = 500;
    l[9] = (char)('0' + status / 100);
    l[10] = (char)('0' + status / 10 % 10);
    l[11] = (char)('0' + status % 10);
    sb_add(b, l, sizeof(l));
}

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void sb_header(sb_t *b, const char *name, size_t nl, const char *val, size_t vl)
{
    sb_add(b, name, nl);
    sb_add(b, ": ", 2);
    sb_add(b, val, vl);
    sb_add(b, "\r\n", 2);
}

static char *sb_done(sb_t *b, size_t *len)
{
    if (b->oom)
        return NULL;
    *len = b->n;
    return b->p;
}

static int name_is(const http_header_t *h, const char *lit)
{
    size_t n = strlen(lit);
    return h->name_len == n && strncasecmp(h->name, lit, n) == 0;
}

static int in_strv(const lg_strv_t *v, const http_header_t *h)
{
    if (v == NULL)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (name_is(h, v->v[i]))
            return 1;
    return 0;
}

static int hex_ok(const char *p, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
        nonzero |= p[i] != '0';
    }
    return nonzero;
}

/*
 * W3C Trace Context: the client's traceparent, if valid (version 00, a
 * non-zero trace and parent id), keeps its trace id and flags and gets our
 * span as its parent; else a trace starts here, sampled.  $trace_id names it.
 */
static void add_traceparent(lg_req_t *s, sb_t *b)
{
    static const char hex[] = "0123456789abcdef";
    const http_header_t *tp = lg_headers_get(s, "traceparent");
    const char *flags = "01";
    char f[3];
    if (tp && tp->value_len == 55 && memcmp(tp->value, "00-", 3) == 0 && tp->value[35] == '-' &&
        tp->value[52] == '-' && hex_ok(tp->value + 3, 32) && hex_ok(tp->value + 36, 16) &&
        (hex_ok(tp->value + 53, 2) || memcmp(tp->value + 53, "00", 2) == 0)) {
        memcpy(s->trace_id, tp->value + 3, 32);
        memcpy(f, tp->value + 53, 2);
        f[2] = 0;
        flags = f;
    } else if (s->trace_id[0] == 0) {
        for (int i = 0; i < 2; i++) {
            uint64_t x = lg_rand_next(&lg_w.rng);
            for (int j = 0; j < 16; j++, x >>= 4)
                s->trace_id[i * 16 + j] = hex[x & 15];
        }
    }
    s->trace_id[32] = 0;
    char span[17];
    uint64_t x = lg_rand_next(&lg_w.rng) | 1;
    for (int j = 0; j < 16; j++, x >>= 4)
        span[j] = hex[x & 15];
    span[16] = 0;
    sb_printf(b, "traceparent: 00-%s-%s-%s\r\n", s->trace_id, span, flags);
}

/* Does the configuration set this header (lower-case name)? */
static int ops_has(const lg_header_ops_t *o, const char *lname)
{
    for (size_t i = 0; o && i < o->n; i++)
        if (strcasecmp(o->v[i].name, lname) == 0)
            return 1;
    return 0;
}

static int in_ops(const lg_header_ops_t *o, const http_header_t *h)
{
    if (o == NULL)
        return 0;
    for (size_t i = 0; i < o->n; i++)
        if (name_is(h, o->v[i].name))
            return 1;
    return 0;
}

const http_header_t *lg_headers_get(const lg_req_t *s, const char *name)
{
    for (size_t i = 0; i < s->req.num_headers; i++)
        if (name_is(&s->req.headers[i], name))
            return &s->req.headers[i];
    return NULL;
}

/*
 * A forwarding loop: some Via entry of the request was added by us
 * ("1.1 NAME", "HTTP/1.1 NAME:port (comment)", comma-separated, in any
 * number of Via fields).  Its received-by is compared with via_name.
 */
int lg_headers_via_loop(const lg_req_t *s)
{
    const char *me = lg_w.conf->via_name;
    size_t ml = strlen(me);
    for (size_t i = 0; i < s->req.num_headers; i++) {
        const http_header_t *h = &s->req.headers[i];
        if (!name_is(h, "via"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *e = memchr(p, ',', (size_t)(end - p));
            if (e == NULL)
                e = end;
            /* protocol, white space, received-by */
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            while (p < e && *p != ' ' && *p != '\t')
                p++;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            const char *b = p;
            while (p < e && *p != ' ' && *p != '\t')
                p++;
            size_t n = (size_t)(p - b);
            if (n == ml && strncasecmp(b, me, ml) == 0)
                return 1;
            p = e + 1;
        }
    }
    return 0;
}

lg_str_t lg_headers_cookie(const lg_req_t *s, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < s->req.num_headers; i++) {
        const http_header_t *h = &s->req.headers[i];
        if (!name_is(h, "cookie"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (semi == NULL)
                semi = end;
            if (eq && eq < semi && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0)
                return (lg_str_t){ eq + 1, (size_t)(semi - eq - 1) };
            p = semi;
        }
    }
    return (lg_str_t){ NULL, 0 };
}

/* ---- the date, formatted once a second ---- */

static const char *http_date(void)
{
    static char buf[40];
    static time_t last;
    time_t now = (time_t)lg_w.loop.wall;
    if (now != last || buf[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

/* A template's value, verbatim: header values, rewrite. */
static void sb_tpl(lg_req_t *s, sb_t *b, const lg_tpl_t *t)
{
    size_t n;
    const char *v = lg_vars_expand(s, t, LG_VARS_RAW, &n);
    if (v == NULL)
        b->oom = 1;
    else
        sb_add(b, v, n);
}

static void add_expanded(lg_req_t *s, sb_t *b, const lg_header_ops_t *ops)
{
    if (ops == NULL)
        return;
    for (size_t i = 0; i < ops->n; i++) {
        sb_str(b, ops->v[i].name);
        sb_add(b, ": ", 2);
        sb_tpl(s, b, ops->v[i].value);
        sb_add(b, "\r\n", 2);
    }
}

/* Strict-Transport-Security on responses over TLS, when the server asks. */
static void add_hsts(const lg_req_t *s, sb_t *b)
{
    const lg_server_t *srv = s->server ? s->server : s->conn->bind->default_server;
    if (lg_conn_tls(s->conn) && srv->tls.hsts) {
        sb_str(b, "Strict-Transport-Security: ");
        sb_str(b, srv->tls.hsts);
        sb_add(b, "\r\n", 2);
    }
    /* the same address answers HTTP/3 over UDP: browsers learn it here
     * (RFC 7838), on HTTP/1.1 and HTTP/2 answers */
    const lg_bind_t *bd = s->conn->bind;
    if (bd && bd->quic && !s->conn->quic) {
        const struct sockaddr_storage *ss = &bd->addr.ss;
        unsigned port = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                                        : ((const struct sockaddr_in *)ss)->sin_port);
        sb_printf(b, "Alt-Svc: h3=\":%u\"; ma=86400\r\n", port);
    }
}

/* Headers that tell of a proxy or of the client (elite anonymity drops them). */
static int reveals(const http_header_t *h)
{
    static const char *const names[] = {
        "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
        "x-forwarded-port", "x-real-ip", "via", "from", "client-ip", "x-client-ip", NULL,
    };
    for (int i = 0; names[i]; i++)
        if (name_is(h, names[i]))
            return 1;
    return h->name_len > 6 && strncasecmp(h->name, "proxy-", 6) == 0;
}

char *lg_headers_upstream(lg_req_t *s, size_t *len)
{
    /* a forward-proxy request has no route: the server's settings apply */
    const lg_common_t *c = lg_req_common(s);
    /* (a destination, or a parent proxy the forward proxy chose) */
    const lg_forward_t *fw = lg_req_is_forward(s) ? s->server->forward : NULL;
    int anonymity = 0;      /* 0 transparent, 1 anonymous, 2 elite */
    lg_common_t local;
    if (fw) {
        anonymity = strcmp(fw->anonymity, "elite") == 0 ? 2 :
                    strcmp(fw->anonymity, "anonymous") == 0 ? 1 : 0;
        local = *c;
        local.x_forwarded_for = anonymity == 0;     /* transparent: the client's address */
        local.via = anonymity < 2;                  /* anonymous: Via only */
        local.x_forwarded_proto = local.x_forwarded_host = local.x_real_ip = 0;
        local.forwarded = 0;
        c = &local;
    }
    sb_t b;
    sb_init(&b, &s->arena, s->head_len + 512);

    sb_add(&b, s->req.method, s->req.method_len);
    sb_add(&b, " ", 1);
    if (s->route && s->route->rewrite) {
        size_t before = b.n;
        sb_tpl(s, &b, s->route->rewrite);
        if (s->ri.query.p && memchr(b.p + before, '?', b.n - before) == NULL) {
            sb_add(&b, "?", 1);
            sb_add(&b, s->ri.query.p, s->ri.query.n);
        }
    } else {
        sb_add(&b, s->ri.uri.p, s->ri.uri.n);
    }
    sb_str(&b, " HTTP/1.1\r\n");

    /* a header the configuration sets replaces legate's own (nginx's
     * proxy_set_header Host / X-Forwarded-For), never a second one */
    if (ops_has(c->add_request_headers, "host"))
        ;
    else if (s->ri.authority.n)
        sb_header(&b, "Host", 4, s->ri.authority.p, s->ri.authority.n);
    else    /* an HTTP/1.0 request without Host: name the upstream's first server */
        sb_header(&b, "Host", 4, s->up->servers[0].addr.text,
                  strlen(s->up->servers[0].addr.text));

    const http_header_t *xff = NULL, *via = NULL, *fwd = NULL;
    for (size_t i = 0; i < s->req.num_headers; i++) {
        const http_header_t *h = &s->req.headers[i];
        if (lg_http_is_hop_by_hop(h, s->ri.connection) || name_is(h, "host") ||
            name_is(h, "content-length") || name_is(h, "expect") ||
            in_strv(c->remove_request_headers, h) || in_ops(c->add_request_headers, h))
            continue;
        if (fw && ((anonymity > 0 && reveals(h)) || in_strv(fw->strip_headers, h)))
            continue;
        if (s->body_gunzip && name_is(h, "content-encoding"))
            continue;           /* the body goes up decompressed */
        if (s->max_forwards && name_is(h, "max-forwards"))
            continue;           /* sent on decremented, below */
        if (c->traceparent && name_is(h, "traceparent"))
            continue;           /* ours, with the same trace id, below */
        if (s->own_conditionals && (name_is(h, "if-none-match") || name_is(h, "if-modified-since") ||
                         name_is(h, "if-range") || name_is(h, "range")))
            continue;           /* the cache asks for the whole thing, and judges these itself */
        if (c->x_forwarded_for && name_is(h, "x-forwarded-for")) { xff = h; continue; }
        if (c->via && name_is(h, "via")) { via = h; continue; }
        if (c->forwarded && name_is(h, "forwarded")) { fwd = h; continue; }
        if ((c->x_real_ip && name_is(h, "x-real-ip")) ||
            (c->x_forwarded_proto && name_is(h, "x-forwarded-proto")) ||
            (c->x_forwarded_host && name_is(h, "x-forwarded-host")))
            continue;
        sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    if (s->body_gunzip)
        sb_str(&b, "Transfer-Encoding: chunked\r\n");
    else if (s->ri.body == LG_BODY_LENGTH)
        sb_num_header(&b, "Content-Length: ", s->ri.length);
    else if (s->ri.body == LG_BODY_CHUNKED || s->ri.body == LG_BODY_CLOSE)
        sb_str(&b, "Transfer-Encoding: chunked\r\n");
    else if (s->ri.length == 0 && lg_headers_get(s, "content-length"))
        sb_str(&b, "Content-Length: 0\r\n");

    if (c->x_forwarded_for && !ops_has(c->add_request_headers, "x-forwarded-for")) {
        sb_str(&b, "X-Forwarded-For: ");
        if (xff) {
            sb_add(&b, xff->value, xff->value_len);
            sb_add(&b, ", ", 2);
        }
        sb_str(&b, lg_vars_hop_addr(s));
        sb_add(&b, "\r\n", 2);
    }
    if (c->x_real_ip && !ops_has(c->add_request_headers, "x-real-ip"))
        sb_printf(&b, "X-Real-IP: %s\r\n", s->peer_text);
    if (c->x_forwarded_proto && !ops_has(c->add_request_headers, "x-forwarded-proto"))
        sb_str(&b, lg_req_tls(s) ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    if (c->x_forwarded_host && s->ri.authority.n && !ops_has(c->add_request_headers, "x-forwarded-host"))
        sb_header(&b, "X-Forwarded-Host", 16, s->ri.authority.p, s->ri.authority.n);
    if (c->forwarded && !ops_has(c->add_request_headers, "forwarded")) {
        sb_str(&b, "Forwarded: ");
        if (fwd) {
            sb_add(&b, fwd->value, fwd->value_len);
            sb_add(&b, ", ", 2);
        }
        const char *proto = lg_req_tls(s) ? "https" : "http";
        if (s->peer.ss_family == AF_INET6)
            sb_printf(&b, "for=\"[%s]\";proto=%s", s->peer_text, proto);
        else
            sb_printf(&b, "for=%s;proto=%s", s->peer_text, proto);
        if (s->ri.authority.n) {
            sb_str(&b, ";host=\"");
            sb_add(&b, s->ri.authority.p, s->ri.authority.n);
            sb_str(&b, "\"");
        }
        sb_add(&b, "\r\n", 2);
    }
    if (c->via && !ops_has(c->add_request_headers, "via")) {
        sb_str(&b, "Via: ");
        if (via) {
            sb_add(&b, via->value, via->value_len);
            sb_add(&b, ", ", 2);
        }
        sb_via(&b, s->req.version);
    }
    if (s->upgrade)     /* the client's own Upgrade/Connection were dropped above */
        sb_printf(&b, "Connection: upgrade\r\nUpgrade: %s\r\n", s->upgrade);
    add_expanded(s, &b, c->add_request_headers);
    if (c->traceparent)
        add_traceparent(s, &b);
    if (s->upstream_extra)
        sb_add(&b, s->upstream_extra, strlen(s->upstream_extra));
    if (s->max_forwards)
        sb_printf(&b, "Max-Forwards: %d\r\n", s->max_forwards - 1);
    sb_add(&b, "\r\n", 2);
    return sb_done(&b, len);
}

/*
 * proxy_redirect: a Location (or a Refresh's url=) naming the upstream
 * server itself is rewritten to name what the client asked ("default",
 * as nginx's), and "FROM TO" rules replace a prefix.  1 when written.
 */
static int redirect(lg_req_t *s, const lg_common_t *c, sb_t *b, const http_header_t *h)
{
    const lg_strv_t *rules = c->proxy_redirect;
    if (rules == NULL || rules->n == 0 || s->up == NULL || s->up->dyn || lg_req_is_forward(s))
        return 0;
    const char *v = h->value;
    size_t n = h->value_len, skip = 0;
    if (name_is(h, "refresh")) {
        const char *u = NULL;
        for (size_t i = 0; i + 4 <= n && !u; i++)
            if (strncasecmp(v + i, "url=", 4) == 0)
                u = v + i + 4;
        if (u == NULL)
            return 0;
        skip = (size_t)(u - v);
    }
    const char *url = v + skip;
    size_t un = n - skip;
    for (size_t i = 0; i < rules->n; i++) {
        const char *rule = rules->v[i];
        if (strcmp(rule, "off") == 0)
            return 0;
        const char *from = rule, *to = NULL;
        size_t fl = 0;
        char base[300];
        if (strcmp(rule, "default") == 0) {
            const char *scheme = lg_req_tls(s) ? "https" : "http";
            if (s->ri.authority.n == 0 || s->ri.authority.n > 200)
                continue;
            snprintf(base, sizeof(base), "%s://%.*s", scheme, (int)s->ri.authority.n, s->ri.authority.p);
            /* each server of the upstream, by the address the configuration names */
            for (size_t k = 0; k < s->up->nservers; k++) {
                const char *a = s->up->servers[k].addr.text;
                size_t al = strlen(a);
                for (int sch = 0; sch < 2; sch++) {
                    const char *p = sch ? "https://" : "http://";
                    size_t pl = strlen(p);
                    if (un >= pl + al && strncasecmp(url, p, pl) == 0 &&
                        strncasecmp(url + pl, a, al) == 0 &&
                        (un == pl + al || url[pl + al] == '/' || url[pl + al] == '?')) {
                        sb_add(b, h->name, h->name_len);
                        sb_add(b, ": ", 2);
                        sb_add(b, v, skip);
                        sb_str(b, base);
                        sb_add(b, url + pl + al, un - pl - al);
                        sb_add(b, "\r\n", 2);
                        return 1;
                    }
                }
            }
            continue;
        }
        to = strchr(rule, ' ');
        if (to == NULL)
            continue;
        fl = (size_t)(to - from);
        to++;
        if (un >= fl && strncmp(url, from, fl) == 0) {
            sb_add(b, h->name, h->name_len);
            sb_add(b, ": ", 2);
            sb_add(b, v, skip);
            sb_str(b, to);
            sb_add(b, url + fl, un - fl);
            sb_add(b, "\r\n", 2);
            return 1;
        }
    }
    return 0;
}

/* A "FROM TO" rule of proxy_cookie_domain / proxy_cookie_path. */
static int cookie_rule(const char *rule, const char **to, size_t *fl)
{
    const char *sp = strchr(rule, ' ');
    if (sp == NULL)
        return 0;       /* "off" */
    *fl = (size_t)(sp - rule);
    *to = sp + 1;
    return 1;
}

/*
 * proxy_cookie_domain / proxy_cookie_path, as nginx's: a Set-Cookie whose
 * Domain is FROM (ignoring case and a leading dot) gets TO, one whose Path
 * starts with FROM gets that prefix replaced by TO; the first rule that
 * matches applies.  1 when written.
 */
static int cookie_rewrite(const lg_common_t *c, sb_t *b, const http_header_t *h)
{
    const lg_strv_t *dom = c->proxy_cookie_domain, *path = c->proxy_cookie_path;
    if ((dom == NULL || dom->n == 0) && (path == NULL || path->n == 0))
        return 0;
    const char *v = h->value, *end = h->value + h->value_len;
    const char *semi = memchr(v, ';', h->value_len);
    if (semi == NULL)
        return 0;               /* no attributes */
    int changed = 0;
    size_t mark = b->n;         /* kept only if something changed */
    sb_add(b, h->name, h->name_len);
    sb_add(b, ": ", 2);
    sb_add(b, v, (size_t)(semi - v));
    for (const char *p = semi; p < end;) {
        const char *next = memchr(p + 1, ';', (size_t)(end - p - 1));
        const char *ae = next ? next : end;
        const char *a = p + 1;
        while (a < ae && (*a == ' ' || *a == '\t'))
            a++;
        const lg_strv_t *rules = NULL;
        size_t al = 0;
        if ((size_t)(ae - a) > 7 && strncasecmp(a, "domain=", 7) == 0) {
            rules = dom;
            al = 7;
        } else if ((size_t)(ae - a) >= 5 && strncasecmp(a, "path=", 5) == 0) {
            rules = path;
            al = 5;
        }
        int done = 0;
        if (rules) {
            const char *val = a + al;
            size_t vn = (size_t)(ae - val);
            while (vn && (val[vn - 1] == ' ' || val[vn - 1] == '\t'))
                vn--;
            size_t dot = rules == dom && vn && val[0] == '.' ? 1 : 0;
            for (size_t i = 0; i < rules->n && !done; i++) {
                const char *to;
                size_t fl;
                if (!cookie_rule(rules->v[i], &to, &fl))
                    break;      /* "off" */
                const char *from = rules->v[i];
                if (rules == dom) {
                    if (fl && from[0] == '.') {
                        from++;
                        fl--;
                    }
                    if (vn - dot != fl || strncasecmp(val + dot, from, fl) != 0)
                        continue;
                    sb_add(b, p, (size_t)(val - p));
                    sb_add(b, val, dot);
                    sb_str(b, to[0] == '.' && dot ? to + 1 : to);
                } else {
                    if (vn < fl || strncmp(val, from, fl) != 0)
                        continue;
                    sb_add(b, p, (size_t)(val - p));
                    sb_str(b, to);
                    sb_add(b, val + fl, vn - fl);
                }
                sb_add(b, val + vn, (size_t)(ae - val - vn));
                done = changed = 1;
            }
        }
        if (!done)
            sb_add(b, p, (size_t)(ae - p));
        p = ae;
    }
    if (!changed) {
        b->n = mark;            /* as it came: written by the caller */
        return 0;
    }
    sb_add(b, "\r\n", 2);
    return 1;
}

char *lg_headers_set_cookie(lg_arena_t *a, const lg_common_t *c, const char *value, size_t n,
                            size_t *len)
{
    sb_t b;
    http_header_t h = { .name = "Set-Cookie", .name_len = 10, .value = value, .value_len = n };
    sb_init(&b, a, 256);
    if (!cookie_rewrite(c, &b, &h))
        return NULL;
    return sb_done(&b, len);
}

char *lg_headers_client(lg_req_t *s, const http_response_t *r,
                           const lg_rsp_info_t *ri, int out_chunked, lg_xform_t xf, int vary_ae,
                           size_t *len)
{
    const lg_common_t *c = lg_req_common(s);
    sb_t b;
    if (lg_vars_keep_upstream_head && s->rsp_raw && s->rsp_raw_len) {
        /* $upstream_http_* after this phase (the access log): the buffer
         * holding the head is the body's next */
        char *copy = lg_arena_alloc(&s->arena, s->rsp_raw_len);
        if (copy) {
            memcpy(copy, s->rsp_raw, s->rsp_raw_len);
            s->rsp_raw = copy;
        } else {
            s->rsp_raw = NULL;
        }
    }
    sb_init(&b, &s->arena, 1024);
    int status = lg_req_status(s, r->status);   /* an error page's route: the error's */
    sb_status(&b, status);
    if (r->reason_len && status == r->status)
        sb_add(&b, r->reason, r->reason_len);
    else
        sb_str(&b, lg_http_reason(status));
    sb_add(&b, "\r\n", 2);
    const http_header_t *via = NULL;
    int vary_done = 0;
    /* what Accept-Encoding decides varies with it, compressed this time or
     * not (nginx's gzip_vary): a shared cache downstream must not hand an
     * identity copy to gzip clients, nor the reverse */
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (lg_http_is_hop_by_hop(h, ri->connection) ||
            in_strv(c->remove_response_headers, h) || in_ops(c->add_response_headers, h))
            continue;
        if (vary_ae && name_is(h, "vary")) {      /* merged with ours */
            if (lg_http_list_has(h->value, h->value_len, "accept-encoding") ||
                lg_http_list_has(h->value, h->value_len, "*")) {
                sb_header(&b, h->name, h->name_len, h->value, h->value_len);
            } else {
                sb_str(&b, "Vary: ");
                sb_add(&b, h->value, h->value_len);
                sb_str(&b, ", Accept-Encoding\r\n");
            }
            vary_done = 1;
            continue;
        }
        if (name_is(h, "content-length") &&
            (ri->body == LG_BODY_CHUNKED || ri->body == LG_BODY_CLOSE || xf != LG_XFORM_NONE ||
             s->cache_serving))
            continue;
        if (s->cache_serving && (name_is(h, "age") || name_is(h, "content-range")))
            continue;           /* ours follow */
        if (xf != LG_XFORM_NONE) {
            if (xf == LG_XFORM_GUNZIP && name_is(h, "content-encoding"))
                continue;
            if (name_is(h, "etag") && h->value_len >= 1 && h->value[0] == '"') {
                /* the bytes change: a strong validator would lie (RFC 9110 8.8.1) */
                sb_str(&b, "ETag: W/");
                sb_add(&b, h->value, h->value_len);
                sb_add(&b, "\r\n", 2);
                continue;
            }
        }
        if (c->via && name_is(h, "via")) {
            via = h;
            continue;
        }
        if ((name_is(h, "location") || name_is(h, "refresh")) && redirect(s, c, &b, h))
            continue;
        if (name_is(h, "set-cookie") && cookie_rewrite(c, &b, h))
            continue;
        sb_header(&b, h->name, h->name_len, h->value, h->value_len);
    }
    add_hsts(s, &b);
    if (s->cache_serving) {
        if (s->cache_length >= 0)       /* -1: coded on the way, length unknown */
            sb_num_header(&b, "Content-Length: ", s->cache_length);
        sb_num_header(&b, "Age: ", s->cache_age);
        if (s->cache_range)
            sb_printf(&b, "Content-Range: %s\r\n", s->cache_range);
        if (r->status == 200)
            sb_str(&b, "Accept-Ranges: bytes\r\n");
    }
    if (s->cache_status) {
        sb_str(&b, "X-Cache: ");
        sb_str(&b, s->cache_status);
        sb_add(&b, "\r\n", 2);
    }
    if (s->response_extra)
        sb_str(&b, s->response_extra);
    if (s->set_cookie) {
        sb_str(&b, "Set-Cookie: ");
        sb_str(&b, s->set_cookie);
        sb_add(&b, "\r\n", 2);
    }
    if (xf == LG_XFORM_GZIP)
        sb_str(&b, "Content-Encoding: gzip\r\n");
    else if (xf == LG_XFORM_BR)
        sb_str(&b, "Content-Encoding: br\r\n");
    else if (xf == LG_XFORM_ZSTD)
        sb_str(&b, "Content-Encoding: zstd\r\n");
    if (vary_ae && !vary_done)
        sb_str(&b, "Vary: Accept-Encoding\r\n");
    if (out_chunked)
        sb_str(&b, "Transfer-Encoding: chunked\r\n");
    if (c->via) {
        sb_str(&b, "Via: ");
        if (via) {
            sb_add(&b, via->value, via->value_len);
            sb_add(&b, ", ", 2);
        }
        sb_via(&b, r->version);
    }
    if (s->upgrade && r->status == 101)     /* the switch we asked for on the client's behalf */
        sb_printf(&b, "Connection: upgrade\r\nUpgrade: %s\r\n", s->upgrade);
    else if (!s->keep_alive)
        sb_str(&b, "Connection: close\r\n");
    else if (s->req.version == 10)
        sb_str(&b, "Connection: keep-alive\r\n");
    add_expanded(s, &b, c->add_response_headers);
    sb_add(&b, "\r\n", 2);
    return sb_done(&b, len);
}

char *lg_headers_local(lg_req_t *s, int status, const char *body,
                     const char *location, size_t *len)
{
    sb_t b;
    sb_init(&b, &s->arena, 1024);
    char page[256];
    const char *ctype = "text/plain";
    if (body == NULL && status >= 300 && !(status == 304)) {
        snprintf(page, sizeof(page),
                 "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n"
                 "<center><h1>%d %s</h1></center>\r\n<hr><center>legate</center>\r\n"
                 "</body>\r\n</html>\r\n",
                 status, lg_http_reason(status), status, lg_http_reason(status));
        body = page;
        ctype = "text/html";
    }
    size_t blen = body ? strlen(body) : 0;
    /* the configuration's page for this status (nginx's error_page); none
     * once an error page's route has the request (no second redirect) */
    const lg_errpage_t *pg = (body == page || body == NULL) && !s->err_route
                             ? lg_errpage_find(lg_req_error_pages(s), status) : NULL;
    if (pg && pg->route)
        pg = NULL;              /* a route's page it could not be given: the built-in one */
    if (pg) {
        body = pg->body;
        blen = pg->len;
        ctype = pg->ctype;
    }
    /* "=CODE" of the page, or the error's status an error page's route
     * answers with */
    status = pg && pg->code > 0 ? pg->code : lg_req_status(s, status);
    s->status = status;
    if (status < 200 || status == 204 || status == 304)
        blen = 0;
    sb_printf(&b, "HTTP/1.1 %03d %s\r\nServer: legate\r\nDate: %s\r\n",
              status, lg_http_reason(status), http_date());
    if (status >= 200 && status != 204 && status != 304) {
        sb_printf(&b, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                  s->local_ctype && !pg ? s->local_ctype : ctype, blen);
    }
    if (status == 407 && s->auth_realm)
        sb_printf(&b, "Proxy-Authenticate: Basic realm=\"%s\"\r\n", s->auth_realm);
    if (status == 401 && s->auth_realm)
        sb_printf(&b, "WWW-Authenticate: Basic realm=\"%s\"\r\n", s->auth_realm);
    if (location) {
        sb_str(&b, "Location: ");
        sb_str(&b, location);
        sb_add(&b, "\r\n", 2);
    }
    if (s->route && s->route->action == LG_ACTION_RETURN)
        add_expanded(s, &b, s->route->common.add_response_headers);
    else if (lg_req_common(s)->headers_always)   /* nginx's add_header ... always */
        add_expanded(s, &b, lg_req_common(s)->add_response_headers);
    if (s->local_extra)
        sb_str(&b, s->local_extra);
    add_hsts(s, &b);
    if (!s->keep_alive)
        sb_str(&b, "Connection: close\r\n");
    else if (s->req.version == 10)
        sb_str(&b, "Connection: keep-alive\r\n");
    sb_add(&b, "\r\n", 2);
    if (blen && !s->ri.is_head)
        sb_add(&b, body, blen);
    return sb_done(&b, len);
}

char *lg_headers_file(lg_req_t *s, int status, const char *ctype, int64_t length,
                      const char *extra, size_t *len)
{
    sb_t b;
    sb_init(&b, &s->arena, 1024);
    status = lg_req_status(s, status);          /* an error page's route: the error's */
    sb_printf(&b, "HTTP/1.1 %03d %s\r\nServer: legate\r\nDate: %s\r\n",
              status, lg_http_reason(status), http_date());
    if (status != 304) {
        if (ctype)
            sb_printf(&b, "Content-Type: %s\r\n", ctype);
        sb_printf(&b, "Content-Length: %lld\r\n", (long long)length);
    }
    if (extra)
        sb_str(&b, extra);
    /* the route's add_response_headers, as on a return's answer */
    if (s->route)
        add_expanded(s, &b, s->route->common.add_response_headers);
    add_hsts(s, &b);
    if (!s->keep_alive)
        sb_str(&b, "Connection: close\r\n");
    else if (s->req.version == 10)
        sb_str(&b, "Connection: keep-alive\r\n");
    sb_add(&b, "\r\n", 2);
    return sb_done(&b, len);
}

int lg_headers_via_refuse(lg_req_t *s)
{
    if (!lg_headers_via_loop(s))
        return 0;
    const http_header_t *v = lg_headers_get(s, "via");
    lg_error("forwarding loop detected: Via \"%.*s\" names this proxy (via_name \"%s\"), "
             "client: %s, request: \"%.*s\"", v ? (int)v->value_len : 0, v ? v->value : "",
             lg_w.conf->via_name, s->peer_text, (int)s->ri.uri.n, s->ri.uri.p);
    s->blocked = "forwarding loop (Via)";
    lg_respond(s, 508, NULL, NULL);
    return 1;
}

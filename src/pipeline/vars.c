/*
 * The variables of templates.  Names are looked up here only while a
 * configuration loads; a request's expansion selects each getter by the index
 * the template was compiled with.  A new variable is one enum entry, one row
 * of the table and one case of var_get(), plus its line in the VARIABLES
 * section of doc/legate.conf.5.
 *
 * The getters read the session's fields and nothing more, so that they
 * follow the session wherever its fields move.
 */
#include "config.h"

#include "pipeline/vars.h"

#include "pipeline/headers.h"
#include "pipeline/tunnel.h"
#include "core/hash.h"
#include "net/acl.h"
#include "net/tls.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum {
    V_REMOTE_ADDR, V_REALIP_REMOTE_ADDR, V_REMOTE_PORT, V_REMOTE_USER,
    V_TIME_LOCAL, V_TIME_ISO8601, V_MSEC,
    V_REQUEST, V_REQUEST_METHOD, V_REQUEST_URI, V_URI, V_ARGS, V_QUERY_STRING,
    V_HOST, V_SCHEME, V_SERVER_PROTOCOL, V_SERVER_NAME, V_PROXY_HOST,
    V_SSL_PROTOCOL, V_SSL_CIPHER, V_SSL_SERVER_NAME, V_SSL_SESSION_REUSED,
    V_SSL_CLIENT_S_DN, V_SSL_CLIENT_FINGERPRINT, V_SSL_CLIENT_VERIFY,
    V_STATUS, V_BODY_BYTES_SENT, V_BYTES_SENT, V_REQUEST_LENGTH, V_BYTES_RECEIVED,
    V_REQUEST_TIME,
    V_UPSTREAM_ADDR, V_UPSTREAM_STATUS, V_UPSTREAM_RESPONSE_TIME,
    V_UPSTREAM_CONNECT_TIME, V_UPSTREAM_HEADER_TIME, V_REQUEST_ID, V_TRACE_ID,
    V_CONNECTION, V_CONNECTION_REQUESTS, V_PID,
    V_CACHE_STATUS, V_GEO_COUNTRY, V_BLOCKED, V_LIMIT_REQ_STATUS, V_LIMIT_CONN_STATUS,
    V_SERVER_PORT, V_TUNNEL_END, V_TUNNEL_SNI,
    V_IS_ARGS, V_DOCUMENT_URI, V_CONTENT_TYPE, V_CONTENT_LENGTH, V_HTTPS, V_HOSTNAME,
    V_SERVER_ADDR,
    V_HTTP, V_COOKIE, V_ARG, V_JWT_CLAIM, V_CAPTURE, V_SENT_HTTP, V_UPSTREAM_HTTP,
    V_UPSTREAM_CACHE_STATUS, V_UPSTREAM_BYTES_SENT, V_UPSTREAM_BYTES_RECEIVED,
    V_UPSTREAM_RESPONSE_LENGTH, V_REQUEST_COMPLETION, V_LEGATE_VERSION,
    V_PROXY_ADD_X_FORWARDED_FOR, V_REQUEST_FILENAME, V_DOCUMENT_ROOT, V_REALIP_REMOTE_PORT,
    V_CACHE_PEER,
    V_COUNT
};

enum {
    F_PREFIX = 1,           /* the name is a prefix, the rest of it the argument */
    F_DIGIT  = 2,           /* one digit 1..9, which is the argument */
};

static const struct {
    const char *name;
    unsigned    flags;
} vars[V_COUNT] = {
    [V_REMOTE_ADDR]              = { "remote_addr", 0 },
    [V_REALIP_REMOTE_ADDR]       = { "realip_remote_addr", 0 },
    [V_REMOTE_PORT]              = { "remote_port", 0 },
    [V_REMOTE_USER]              = { "remote_user", 0 },
    [V_TIME_LOCAL]               = { "time_local", 0 },
    [V_TIME_ISO8601]             = { "time_iso8601", 0 },
    [V_MSEC]                     = { "msec", 0 },
    [V_REQUEST]                  = { "request", 0 },
    [V_REQUEST_METHOD]           = { "request_method", 0 },
    [V_REQUEST_URI]              = { "request_uri", 0 },
    [V_URI]                      = { "uri", 0 },
    [V_ARGS]                     = { "args", 0 },
    [V_QUERY_STRING]             = { "query_string", 0 },
    [V_HOST]                     = { "host", 0 },
    [V_SCHEME]                   = { "scheme", 0 },
    [V_SERVER_PROTOCOL]          = { "server_protocol", 0 },
    [V_SERVER_NAME]              = { "server_name", 0 },
    [V_PROXY_HOST]               = { "proxy_host", 0 },
    [V_SSL_PROTOCOL]             = { "ssl_protocol", 0 },
    [V_SSL_CIPHER]               = { "ssl_cipher", 0 },
    [V_SSL_SERVER_NAME]          = { "ssl_server_name", 0 },
    [V_SSL_SESSION_REUSED]       = { "ssl_session_reused", 0 },
    [V_SSL_CLIENT_S_DN]          = { "ssl_client_s_dn", 0 },
    [V_SSL_CLIENT_FINGERPRINT]   = { "ssl_client_fingerprint", 0 },
    [V_SSL_CLIENT_VERIFY]        = { "ssl_client_verify", 0 },
    [V_STATUS]                   = { "status", 0 },
    [V_BODY_BYTES_SENT]          = { "body_bytes_sent", 0 },
    [V_BYTES_SENT]               = { "bytes_sent", 0 },
    [V_REQUEST_LENGTH]           = { "request_length", 0 },
    [V_BYTES_RECEIVED]           = { "bytes_received", 0 },
    [V_REQUEST_TIME]             = { "request_time", 0 },
    [V_UPSTREAM_ADDR]            = { "upstream_addr", 0 },
    [V_UPSTREAM_STATUS]          = { "upstream_status", 0 },
    [V_UPSTREAM_RESPONSE_TIME]   = { "upstream_response_time", 0 },
    [V_UPSTREAM_CONNECT_TIME]    = { "upstream_connect_time", 0 },
    [V_UPSTREAM_HEADER_TIME]     = { "upstream_header_time", 0 },
    [V_REQUEST_ID]               = { "request_id", 0 },
    [V_TRACE_ID]                 = { "trace_id", 0 },
    [V_CONNECTION]               = { "connection", 0 },
    [V_CONNECTION_REQUESTS]      = { "connection_requests", 0 },
    [V_PID]                      = { "pid", 0 },
    [V_CACHE_STATUS]             = { "cache_status", 0 },
    [V_GEO_COUNTRY]              = { "geo_country", 0 },
    [V_BLOCKED]                  = { "blocked", 0 },
    [V_LIMIT_REQ_STATUS]         = { "limit_req_status", 0 },
    [V_LIMIT_CONN_STATUS]        = { "limit_conn_status", 0 },
    [V_HTTP]                     = { "http_", F_PREFIX },
    [V_COOKIE]                   = { "cookie_", F_PREFIX },
    [V_ARG]                      = { "arg_", F_PREFIX },
    [V_SERVER_PORT]              = { "server_port", 0 },
    [V_TUNNEL_END]               = { "tunnel_end", 0 },
    [V_TUNNEL_SNI]               = { "tunnel_sni", 0 },
    [V_IS_ARGS]                  = { "is_args", 0 },
    [V_DOCUMENT_URI]             = { "document_uri", 0 },
    [V_CONTENT_TYPE]             = { "content_type", 0 },
    [V_CONTENT_LENGTH]           = { "content_length", 0 },
    [V_HTTPS]                    = { "https", 0 },
    [V_HOSTNAME]                 = { "hostname", 0 },
    [V_SERVER_ADDR]              = { "server_addr", 0 },
    [V_SENT_HTTP]                = { "sent_http_", F_PREFIX },
    [V_UPSTREAM_HTTP]            = { "upstream_http_", F_PREFIX },
    [V_JWT_CLAIM]                = { "jwt_claim_", F_PREFIX },
    [V_CAPTURE]                  = { "1", F_DIGIT },     /* $1 .. $9 */
    [V_UPSTREAM_CACHE_STATUS]    = { "upstream_cache_status", 0 },  /* nginx's name of cache_status */
    [V_UPSTREAM_BYTES_SENT]      = { "upstream_bytes_sent", 0 },
    [V_UPSTREAM_BYTES_RECEIVED]  = { "upstream_bytes_received", 0 },
    [V_UPSTREAM_RESPONSE_LENGTH] = { "upstream_response_length", 0 },
    [V_REQUEST_COMPLETION]       = { "request_completion", 0 },
    [V_LEGATE_VERSION]           = { "legate_version", 0 },
    [V_PROXY_ADD_X_FORWARDED_FOR] = { "proxy_add_x_forwarded_for", 0 },
    [V_REQUEST_FILENAME]         = { "request_filename", 0 },
    [V_DOCUMENT_ROOT]            = { "document_root", 0 },
    [V_REALIP_REMOTE_PORT]       = { "realip_remote_port", 0 },
    [V_CACHE_PEER]               = { "cache_peer", 0 },   /* the node that owns the key (cluster) */
};

int lg_vars_keep_upstream_head;

int lg_vars_lookup(const char *name, size_t n, size_t *arg)
{
    for (int i = 0; i < V_COUNT; i++) {
        size_t k = strlen(vars[i].name);
        if (vars[i].flags & F_DIGIT) {
            if (n == 1 && name[0] >= '1' && name[0] <= '9') {
                *arg = 0;
                return i;
            }
        } else if (vars[i].flags & F_PREFIX) {
            if (n > k && memcmp(name, vars[i].name, k) == 0) {
                if (i == V_UPSTREAM_HTTP)   /* the access log may ask after the head is gone */
                    lg_vars_keep_upstream_head = 1;
                *arg = k;
                return i;
            }
        } else if (n == k && memcmp(name, vars[i].name, k) == 0) {
            *arg = n;
            return i;
        }
    }
    return -1;
}

void lg_vars_init(void)
{
    lg_conf_set_var_lookup(lg_vars_lookup);
}

/* ---- the value being built, in the request's arena ---- */

typedef struct out {
    lg_arena_t *a;
    char       *p;
    size_t      n, cap;
    int         oom;
} out_t;

static void out_add(out_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->n + n)
            cap *= 2;
        char *p = lg_arena_alloc(b->a, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void out_str(out_t *b, const char *s) { out_add(b, s, strlen(s)); }

static void out_printf(out_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(out_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        out_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Bytes from the client, escaped for a log line or a key. */
/* Numbers without printf: a log line has half a dozen and printf's
 * machinery was the largest cost of writing one (callgrind). */
static void out_u64(out_t *b, uint64_t v)
{
    char d[24];
    size_t i = sizeof(d);
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_add(b, d + i, sizeof(d) - i);
}

/* "HTTP/1.1" from 11 (in every log line: not worth a printf) */
static void out_version(out_t *b, const char *prefix, int v)
{
    out_str(b, prefix);
    char d[3] = { (char)('0' + (v / 10) % 10), '.', (char)('0' + v % 10) };
    out_add(b, d, 3);
}

/* Milliseconds as seconds with three decimals, as nginx writes times. */
static void out_ms(out_t *b, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    out_u64(b, (uint64_t)(ms / 1000));
    char f[4] = { '.', (char)('0' + ms % 1000 / 100), (char)('0' + ms % 100 / 10),
                  (char)('0' + ms % 10) };
    out_add(b, f, 4);
}

/* $time_local and $time_iso8601 change once a second: formatted then. */
static const char *local_time(int iso)
{
    static char buf[2][40];
    static time_t last[2] = { -1, -1 };
    time_t now = (time_t)lg_w.loop.wall;
    if (now != last[iso]) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(buf[iso], sizeof(buf[iso]), iso ? "%Y-%m-%dT%H:%M:%S%z" : "%d/%b/%Y:%H:%M:%S %z",
                 &tm);
        last[iso] = now;
    }
    return buf[iso];
}

static int esc_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static void out_esc(out_t *b, const char *v, size_t n, int json)
{
    for (size_t i = 0; i < n; i++) {
        /* a run that needs no escape (nearly all of a key or a log field):
         * one copy, not one a byte */
        size_t j = i;
        while (j < n && esc_plain((unsigned char)v[j]))
            j++;
        if (j > i)
            out_add(b, v + i, j - i);
        if (j == n)
            return;
        i = j;
        unsigned char c = (unsigned char)v[i];
        if (json) {
            if (c == '"' || c == '\\') {
                char e[2] = { '\\', (char)c };
                out_add(b, e, 2);
            } else if (c < 0x20 || c >= 0x7f) {
                out_printf(b, "\\u%04x", c);
            } else {
                out_add(b, (const char *)&c, 1);
            }
        } else if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            out_printf(b, "\\x%02X", c);
        } else {
            out_add(b, (const char *)&c, 1);
        }
    }
}

/* ---- the getters ---- */

/* One definition for $realip_remote_addr and X-Forwarded-For (headers.c),
 * which must agree: the connection's peer (after any PROXY header), which
 * differs from the client's address when real_ip_from replaced it. */
const char *lg_vars_hop_addr(const lg_req_t *s)
{
    /* relayed by a node of the fleet (cluster/shard.c): that node is not a
     * hop of the client's request; the one it would have named is */
    return s->relay_hop ? s->relay_hop : s->conn->peer_text;
}

/* $http_user_agent is the request header User-Agent: lower case, '-' as '_'. */
static const http_header_t *header_named(const lg_req_t *s, const char *name, size_t n)
{
    for (size_t i = 0; i < s->req.num_headers; i++) {
        const http_header_t *h = &s->req.headers[i];
        if (h->name_len != n)
            continue;
        size_t k = 0;
        for (; k < n; k++) {
            char c = h->name[k];
            c = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (c == '-' ? '_' : c);
            if (c != name[k])
                break;
        }
        if (k == n)
            return h;
    }
    return NULL;
}

/*
 * Append variable part->var to b.  Values from the client are escaped unless
 * esc is LG_VARS_RAW: header templates take them verbatim, as the parser has
 * already refused CR, LF and NUL in them.
 */
/*
 * request_id_header: a request ID a trusted front end (real_ip_from) set
 * is kept, so one ID follows the request through every hop; 1 to 64 of
 * [A-Za-z0-9._-], anything else is not an ID.
 */
static int trusted_request_id(lg_req_t *s)
{
    const lg_common_t *c = lg_req_common(s);
    if (c->request_id_header == NULL || s->server == NULL || s->server->real_ip_rt == NULL ||
        lg_cidr_lookup(s->server->real_ip_rt, (const struct sockaddr *)&s->conn->peer) < 0)
        return 0;
    const http_header_t *h = lg_headers_get(s, c->request_id_header);
    if (h == NULL || h->value_len == 0 || h->value_len > 64)
        return 0;
    for (size_t i = 0; i < h->value_len; i++) {
        char ch = h->value[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    memcpy(s->request_id, h->value, h->value_len);
    s->request_id[h->value_len] = 0;
    return 1;
}

/* A field of a head as text ("HTTP/1.1 200 OK\r\nName: value\r\n..."),
 * name as in $sent_http_content_type; 1 with its value in *v, *vn. */
static int text_field(const char *head, size_t n, const char *name, size_t nl,
                      const char **v, size_t *vn)
{
    const char *p = head, *end = head + n;
    const char *eol = memchr(p, '\n', n);
    p = eol ? eol + 1 : end;                       /* the status line */
    while (p < end) {
        eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p)
            break;                                  /* the empty line ends the head */
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && (size_t)(colon - p) == nl) {
            size_t k = 0;
            for (; k < nl; k++) {
                char c = p[k];
                c = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (c == '-' ? '_' : c);
                if (c != name[k])
                    break;
            }
            if (k == nl) {
                const char *q = colon + 1;
                while (q < le && (*q == ' ' || *q == '\t'))
                    q++;
                *v = q;
                *vn = (size_t)(le - q);
                return 1;
            }
        }
        p = eol ? eol + 1 : end;
    }
    return 0;
}

static int name_eq_var(const char *hn, size_t hl, const char *name, size_t nl)
{
    if (hl != nl)
        return 0;
    for (size_t k = 0; k < nl; k++) {
        char c = hn[k];
        c = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (c == '-' ? '_' : c);
        if (c != name[k])
            return 0;
    }
    return 1;
}

/* ---- maps (nginx's map) ---- */

static int ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

const lg_map_entry_t *lg_map_match(const lg_map_t *m, const char *v, size_t n, regmatch_t caps[10])
{
    const lg_map_entry_t *lead = NULL, *trail = NULL;
    for (size_t i = 0; i < m->n; i++) {
        const lg_map_entry_t *e = &m->v[i];
        switch (e->kind) {
        case LG_MAPK_EXACT:
            if (e->len == n && ieq(v, e->key, n))
                return e;
            break;
        case LG_MAPK_LEADING:       /* ".example.com": a longer name ending so */
            if (n > e->len && ieq(v + n - e->len, e->key, e->len) &&
                (lead == NULL || e->len > lead->len))
                lead = e;
            break;
        case LG_MAPK_TRAILING:      /* "www.example.": a longer name starting so */
            if (n > e->len && ieq(v, e->key, e->len) && (trail == NULL || e->len > trail->len))
                trail = e;
            break;
        case LG_MAPK_REGEX:
            break;
        }
    }
    if (lead || trail)
        return lead ? lead : trail;
    for (size_t i = 0; i < m->n; i++)       /* v is NUL-terminated by the caller */
        if (m->v[i].kind == LG_MAPK_REGEX && regexec(m->v[i].re, v, 10, caps, 0) == 0)
            return &m->v[i];
    return NULL;
}

/* A declared variable's depth of expansion: a map whose source names the
 * map (directly or through others) ends here, empty, instead of looping. */
static int uvar_depth;

static const lg_set_t *set_find(const lg_sets_t *sets, int idx)
{
    for (size_t i = 0; sets && i < sets->n; i++)
        if (sets->v[i].var == idx)
            return &sets->v[i];
    return NULL;
}

/*
 * $name of a map or a set: the nearest set (route, then server, then http
 * level) wins; else the map; else empty.  Evaluated each time it is used,
 * as its source may change during the request ($status, $upstream_http_*).
 */
static void user_var(lg_req_t *s, out_t *b, int idx, lg_vars_esc_t esc)
{
    const lg_conf_t *conf = lg_w.conf;
    if (conf == NULL || idx < 0 || (size_t)idx >= conf->nuvars || uvar_depth >= 8)
        return;
    const lg_set_t *st = set_find(lg_req_common(s)->sets, idx);
    if (st == NULL && s->server)
        st = set_find(s->server->common.sets, idx);
    if (st == NULL)
        st = set_find(conf->http.sets, idx);
    const lg_map_t *m = conf->uvars[idx].map;
    const char *val = NULL;
    size_t n = 0;
    uvar_depth++;
    if (st) {
        val = lg_vars_expand(s, st->value, LG_VARS_RAW, &n);
    } else if (m) {
        size_t sn = 0;
        const char *src = lg_vars_expand(s, m->source, LG_VARS_RAW, &sn);
        regmatch_t caps[10];
        const lg_map_entry_t *e = src ? lg_map_match(m, src, sn, caps) : NULL;
        if (e && e->kind == LG_MAPK_REGEX) {
            /* $1..$9 in the value are this regex's groups, not the route's */
            regmatch_t saved[10];
            const char *saved_path = s->mpath;
            memcpy(saved, s->caps, sizeof(saved));
            memcpy(s->caps, caps, sizeof(saved));
            s->mpath = src;
            val = lg_vars_expand(s, e->value, LG_VARS_RAW, &n);
            memcpy(s->caps, saved, sizeof(saved));
            s->mpath = saved_path;
        } else if (e) {
            val = lg_vars_expand(s, e->value, LG_VARS_RAW, &n);
        } else if (m->dflt) {
            val = lg_vars_expand(s, m->dflt, LG_VARS_RAW, &n);
        }
    }
    uvar_depth--;
    if (val == NULL || n == 0)
        return;
    if (esc != LG_VARS_RAW)
        out_esc(b, val, n, esc == LG_VARS_JSON);
    else
        out_add(b, val, n);
}

static void var_get(lg_req_t *s, out_t *b, const lg_tpl_part_t *part, lg_vars_esc_t esc)
{
    if (part->var >= LG_TPL_USER) {
        user_var(s, b, part->var - LG_TPL_USER, esc);
        return;
    }
    int escape = esc != LG_VARS_RAW, json = esc == LG_VARS_JSON;
#define RAW(p, l) do { if (escape) out_esc(b, (p), (l), json); else out_add(b, (p), (l)); } while (0)
    char tmp[512];
    tmp[0] = '\0';
    switch (part->var) {
    case V_REMOTE_ADDR:
        out_str(b, s->peer_text);
        break;
    case V_REALIP_REMOTE_ADDR:
        out_str(b, lg_vars_hop_addr(s));
        break;
    case V_REMOTE_PORT:
        out_printf(b, "%u", s->peer_port);
        break;
    case V_REMOTE_USER:
        if (s->user)
            RAW(s->user, strlen(s->user));
        else
            out_str(b, json ? "" : "-");
        break;
    case V_TIME_LOCAL:
    case V_TIME_ISO8601:
        out_str(b, local_time(part->var == V_TIME_ISO8601));
        break;
    case V_MSEC: {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        out_printf(b, "%lld.%03ld", (long long)ts.tv_sec, ts.tv_nsec / 1000000);
        break;
    }
    case V_REQUEST:
        if (s->req.method) {
            RAW(s->req.method, s->req.method_len);
            out_add(b, " ", 1);
            RAW(s->req.target, s->req.target_len);
            out_version(b, " HTTP/", s->req.version);
        }
        break;
    case V_REQUEST_METHOD:
        if (s->req.method)
            RAW(s->req.method, s->req.method_len);
        break;
    case V_REQUEST_URI:
        if (s->ri.uri.p)
            RAW(s->ri.uri.p, s->ri.uri.n);
        break;
    case V_URI:
        if (s->ri.path.p)
            RAW(s->ri.path.p, s->ri.path.n);
        break;
    case V_ARGS:
    case V_QUERY_STRING:
        if (s->ri.query.p)
            RAW(s->ri.query.p, s->ri.query.n);
        break;
    case V_HOST:
        if (s->ri.host.n)
            RAW(s->ri.host.p, s->ri.host.n);
        else if (s->server && s->server->nnames)
            out_str(b, s->server->names[0].name);
        break;
    case V_SCHEME:
        out_str(b, lg_req_tls(s) ? "https" : "http");
        break;
    case V_SERVER_PROTOCOL:
        out_version(b, "HTTP/", s->req.version);
        break;
    case V_SERVER_NAME:
        if (s->server && s->server->nnames)
            out_str(b, s->server->names[0].name);
        break;
    case V_PROXY_HOST:
        if (s->ri.authority.n)
            RAW(s->ri.authority.p, s->ri.authority.n);
        break;
    case V_SSL_PROTOCOL:
        RAW(lg_tls_protocol(s->conn->e.ssl), strlen(lg_tls_protocol(s->conn->e.ssl)));
        break;
    case V_SSL_CIPHER:
        RAW(lg_tls_cipher(s->conn->e.ssl), strlen(lg_tls_cipher(s->conn->e.ssl)));
        break;
    case V_SSL_SERVER_NAME:
        RAW(lg_tls_server_name(s->conn->e.ssl), strlen(lg_tls_server_name(s->conn->e.ssl)));
        break;
    case V_SSL_SESSION_REUSED:
        if (s->conn->e.ssl)
            out_str(b, lg_tls_session_reused(s->conn->e.ssl) ? "r" : ".");
        break;
    case V_SSL_CLIENT_S_DN:
        lg_tls_client_subject(s->conn->e.ssl, tmp, sizeof(tmp));
        RAW(tmp, strlen(tmp));
        break;
    case V_SSL_CLIENT_FINGERPRINT:
        lg_tls_client_fingerprint(s->conn->e.ssl, tmp, sizeof(tmp));
        RAW(tmp, strlen(tmp));
        break;
    case V_SSL_CLIENT_VERIFY:
        if (s->conn->e.ssl)
            lg_tls_client_verify(s->conn->e.ssl, tmp, sizeof(tmp));
        RAW(tmp, strlen(tmp));
        break;
    case V_STATUS:
        if (s->status < 100)
            out_add(b, s->status < 10 ? "00" : "0", s->status < 10 ? 2 : 1);
        out_u64(b, (uint64_t)(s->status > 0 ? s->status : 0));
        break;
    case V_BODY_BYTES_SENT:
        out_u64(b, s->local ? (s->status ? s->bytes_out : 0) : s->rspp.body_bytes);
        break;
    case V_BYTES_SENT:
        out_u64(b, s->bytes_out);
        break;
    case V_REQUEST_LENGTH:
    case V_BYTES_RECEIVED:
        out_u64(b, s->bytes_in);
        break;
    case V_REQUEST_TIME:
        out_ms(b, lg_w.loop.now - s->t_start);
        break;
    case V_UPSTREAM_ADDR:
        out_str(b, s->upstream_addr ? s->upstream_addr : (s->upstream_status ? "" : "-"));
        break;
    case V_UPSTREAM_STATUS:
        if (s->upstream_status)
            out_u64(b, (uint64_t)s->upstream_status);
        else
            out_str(b, "-");
        break;
    case V_UPSTREAM_RESPONSE_TIME:
    case V_UPSTREAM_HEADER_TIME:
        if (s->upstream_status)
            out_ms(b, s->upstream_time);
        else
            out_str(b, "-");
        break;
    case V_UPSTREAM_CONNECT_TIME:
        if (s->upstream_connect_time >= 0 && s->upstream_addr)
            out_ms(b, s->upstream_connect_time);
        else
            out_str(b, "-");
        break;
    case V_TRACE_ID:
        if (s->trace_id[0])
            RAW(s->trace_id, 32);
        break;
    case V_REQUEST_ID:
        if (s->request_id[0] == 0 && !trusted_request_id(s)) {
            /* 128 random bits, made when first asked for, the same after */
            static const char hex[] = "0123456789abcdef";
            for (int i = 0; i < 2; i++) {
                uint64_t x = lg_rand_next(&lg_w.rng);
                for (int j = 0; j < 16; j++, x >>= 4)
                    s->request_id[i * 16 + j] = hex[x & 15];
            }
            s->request_id[32] = 0;
        }
        RAW(s->request_id, strlen(s->request_id));
        break;
    case V_CONNECTION:
        out_u64(b, s->conn->id);
        break;
    case V_CONNECTION_REQUESTS:
        out_u64(b, s->conn->requests);
        break;
    case V_PID:
        out_printf(b, "%d", (int)getpid());
        break;
    case V_CACHE_STATUS:
    case V_UPSTREAM_CACHE_STATUS:
        out_str(b, s->cache_status ? s->cache_status : "-");
        break;
    case V_CACHE_PEER:
        out_str(b, s->cache_peer ? s->cache_peer : "-");
        break;
    case V_UPSTREAM_BYTES_SENT:         /* the heads and bodies written to upstreams */
        if (s->upstream_addr || s->upstream_status)
            out_u64(b, s->reqp.wire_bytes);
        else
            out_str(b, "-");
        break;
    case V_UPSTREAM_BYTES_RECEIVED:     /* heads read, then the body as framed */
        if (s->upstream_addr || s->upstream_status)
            out_u64(b, s->upstream_bytes_in + (s->rsp_head_done ? s->rspp.src_bytes : 0));
        else
            out_str(b, "-");
        break;
    case V_UPSTREAM_RESPONSE_LENGTH:    /* the body's payload, de-chunked */
        if (s->upstream_status)
            out_u64(b, s->rsp_head_done ? s->rspp.decoded : 0);
        else
            out_str(b, "-");
        break;
    case V_REQUEST_COMPLETION:          /* the LOG phase runs for whole answers only */
        if (s->finished)
            out_add(b, "OK", 2);
        break;
    case V_LEGATE_VERSION:
        out_str(b, PACKAGE_VERSION);
        break;
    case V_PROXY_ADD_X_FORWARDED_FOR: {
        /* the request's X-Forwarded-For fields and the hop's address, what
         * legate's own X-Forwarded-For sends */
        int any = 0;
        for (size_t i = 0; i < s->req.num_headers; i++) {
            const http_header_t *h = &s->req.headers[i];
            if (h->name_len == 15 && strncasecmp(h->name, "x-forwarded-for", 15) == 0) {
                if (any++)
                    out_add(b, ", ", 2);
                RAW(h->value, h->value_len);
            }
        }
        if (any)
            out_add(b, ", ", 2);
        out_str(b, lg_vars_hop_addr(s));
        break;
    }
    case V_DOCUMENT_ROOT:
    case V_REQUEST_FILENAME: {
        /* a file route's: its root (or alias), and the file a path names below it */
        const lg_route_t *rt = s->route;
        const char *base = rt ? (rt->root ? rt->root : rt->alias) : NULL;
        if (base == NULL)
            break;
        out_str(b, base);
        if (part->var == V_DOCUMENT_ROOT || s->mpath == NULL)
            break;
        const char *rel = s->mpath;
        if (rt->alias && rt->match != LG_MATCH_REGEX && strncmp(rel, rt->pattern, rt->pattern_len) == 0)
            rel += rt->pattern_len;
        size_t bl = strlen(base);
        if (bl && base[bl - 1] == '/' && rel[0] == '/')
            rel++;
        else if ((bl == 0 || base[bl - 1] != '/') && rel[0] != '/' && rel[0])
            out_add(b, "/", 1);
        RAW(rel, strlen(rel));
        break;
    }
    case V_REALIP_REMOTE_PORT:
        out_printf(b, "%u", s->conn->peer_port);
        break;
    case V_TUNNEL_END:          /* how a tunnel (CONNECT, WebSocket, stream session) ended */
        out_str(b, s->tunnel && s->tunnel->ended ? s->tunnel->ended : "-");
        break;
    case V_TUNNEL_SNI:          /* the server name of a CONNECT tunnel's ClientHello (connect_sni) */
        out_str(b, s->tunnel && s->tunnel->sni ? s->tunnel->sni : "-");
        break;
    case V_GEO_COUNTRY:
        out_str(b, lg_realip_country(s));
        break;
    case V_BLOCKED:
        if (s->blocked)
            RAW(s->blocked, strlen(s->blocked));
        else if (escape && !json)
            out_add(b, "-", 1);
        break;
    case V_LIMIT_REQ_STATUS:
    case V_LIMIT_CONN_STATUS: {
        const char *v = part->var == V_LIMIT_REQ_STATUS ? s->limit_req_status : s->limit_conn_status;
        if (v)
            out_str(b, v);
        else if (escape && !json)
            out_add(b, "-", 1);
        break;
    }
    case V_HTTP: {
        const http_header_t *h = header_named(s, part->text, part->len);
        if (h)
            RAW(h->value, h->value_len);
        else if (escape && !json)
            out_add(b, "-", 1);
        break;
    }
    case V_COOKIE: {
        lg_str_t v = lg_headers_cookie(s, part->text);
        if (v.p)
            RAW(v.p, v.n);
        break;
    }
    case V_ARG: {
        /* the first NAME=value of the query string, as sent (not decoded) */
        const char *q = s->ri.query.p, *end = q ? q + s->ri.query.n : NULL;
        size_t nl = part->len;
        while (q && q < end) {
            const char *amp = memchr(q, '&', (size_t)(end - q));
            const char *stop = amp ? amp : end;
            if ((size_t)(stop - q) > nl && q[nl] == '=' && memcmp(q, part->text, nl) == 0) {
                RAW(q + nl + 1, (size_t)(stop - q - nl - 1));
                break;
            }
            q = amp ? amp + 1 : NULL;
        }
        break;
    }
    case V_SERVER_PORT: {
        const struct sockaddr_storage *ss = &s->conn->bind->addr.ss;
        if (ss->ss_family == AF_INET)
            out_u64(b, ntohs(((const struct sockaddr_in *)ss)->sin_port));
        else if (ss->ss_family == AF_INET6)
            out_u64(b, ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
        break;
    }
    case V_IS_ARGS:
        if (s->ri.query.p)
            out_add(b, "?", 1);
        break;
    case V_DOCUMENT_URI:
        if (s->ri.path.p)
            RAW(s->ri.path.p, s->ri.path.n);
        break;
    case V_CONTENT_TYPE:
    case V_CONTENT_LENGTH: {
        int ct = part->var == V_CONTENT_TYPE;
        const http_header_t *h = header_named(s, ct ? "content_type" : "content_length",
                                              ct ? 12 : 14);
        if (h)
            RAW(h->value, h->value_len);
        break;
    }
    case V_HTTPS:
        if (s->conn->e.ssl || s->conn->refresh_tls)
            out_add(b, "on", 2);
        break;
    case V_HOSTNAME: {
        static char host[256];
        if (host[0] == '\0' && (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0'))
            strcpy(host, "localhost");
        out_str(b, host);
        break;
    }
    case V_SERVER_ADDR: {
        /* the address the client reached, not the wildcard the listener bound */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char a[INET6_ADDRSTRLEN] = "";
        if (s->conn->e.io.fd >= 0 &&
            getsockname(s->conn->e.io.fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof(a));
            else if (ss.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof(a));
        }
        out_str(b, a);
        break;
    }
    case V_SENT_HTTP: {
        /* the head sent (or being sent) to the client */
        const char *head = s->rsp_head_done ? s->rspp.hdr : s->local;
        size_t hn = s->rsp_head_done ? s->rspp.hdr_len : s->local_len;
        const char *v;
        size_t vn;
        if (head && text_field(head, hn, part->text, part->len, &v, &vn))
            RAW(v, vn);
        else if (escape && !json)
            out_add(b, "-", 1);
        break;
    }
    case V_UPSTREAM_HTTP: {
        /* the upstream's head: parsed while it is handled, else the copy
         * headers.c keeps once a template asks for one */
        const char *v = NULL;
        size_t vn = 0;
        int found = 0;
        if (s->rsp) {
            for (size_t i = 0; i < s->rsp->num_headers && !found; i++) {
                const http_header_t *h = &s->rsp->headers[i];
                if (name_eq_var(h->name, h->name_len, part->text, part->len)) {
                    v = h->value;
                    vn = h->value_len;
                    found = 1;
                }
            }
        } else if (s->rsp_head_done && s->upstream_status && s->rsp_raw && lg_vars_keep_upstream_head) {
            found = text_field(s->rsp_raw, s->rsp_raw_len, part->text, part->len, &v, &vn);
        }
        if (found)
            RAW(v, vn);
        else if (escape && !json)
            out_add(b, "-", 1);
        break;
    }
    case V_JWT_CLAIM:
        /* a verified token's claim; unverified tokens never set any */
        for (size_t i = 0; i < s->nclaims; i++)
            if (strcmp(s->claim_names[i], part->text) == 0) {
                RAW(s->claim_values[i], strlen(s->claim_values[i]));
                break;
            }
        break;
    case V_CAPTURE: {
        /* captures refer to the path the route matched */
        const regmatch_t *m = &s->caps[part->text[0] - '0'];
        if (m->rm_so >= 0 && s->mpath)
            out_add(b, s->mpath + m->rm_so, (size_t)(m->rm_eo - m->rm_so));
        break;
    }
    default:            /* LG_TPL_UNCHECKED: compiled without the table */
        break;
    }
#undef RAW
}

const char *lg_vars_expand(lg_req_t *s, const lg_tpl_t *t, lg_vars_esc_t esc, size_t *len)
{
    if (t == NULL)
        return NULL;
    if (t->nvars == 0) {
        if (len)
            *len = strlen(t->src);
        return t->src;
    }
    out_t b = { .a = &s->arena, .cap = strlen(t->src) + 256 };
    if ((b.p = lg_arena_alloc(b.a, b.cap)) == NULL)
        return NULL;
    for (size_t i = 0; i < t->nparts; i++) {
        const lg_tpl_part_t *part = &t->parts[i];
        if (part->var == LG_TPL_LITERAL)
            out_add(&b, part->text, part->len);
        else
            var_get(s, &b, part, esc);
    }
    out_add(&b, "", 1);
    if (b.oom)
        return NULL;
    if (len)
        *len = b.n - 1;
    return b.p;
}

const lg_tpl_t *lg_vars_builtin(const char *src)
{
    static lg_arena_t arena;
    static int ready;
    char err[128];
    if (!ready) {
        lg_arena_init(&arena, 4096, 0);
        lg_vars_init();
        ready = 1;
    }
    return lg_tpl_compile(&arena, src, err, sizeof(err));
}

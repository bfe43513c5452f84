/*
 * Configuration loader: one libconfig file -> one lg_conf_t generation.
 *
 * Every setting is one row of a directive table (name, type, bounds, default,
 * offset of the target field), one table per level: global, http, upstream,
 * upstream server, server, listen and route, plus the table of inheritable
 * settings shared by http, server and route.  parse_block() walks a libconfig
 * group against its level's tables, so an unknown key, a wrong type or a
 * value out of range is reported the same way at every level.  The same rows
 * drive the defaults and the http -> server -> route merge: a new setting is
 * one new row, plus its line in conf/dump.c and in doc/legate.conf.5.  Value
 * parsers (durations, sizes, addresses) are in conf/parse_util.c.
 *
 * Errors never stop the walk.  Each one is appended to the caller's buffer
 * as "FILE:LINE: message" and the load fails at the end, so that -t shows
 * every mistake at once.  A setting with an error stays unset, and the checks
 * that depend on it are skipped instead of reporting the same mistake twice.
 *
 * Everything lives in conf->arena; the only other resources are the compiled
 * regexes, which lg_conf_free() finds by walking the tree (arrays are
 * allocated zeroed at their final size before they are filled, so a half
 * built tree is safe to walk).
 */
#include "conf/conf.h"

#include <errno.h>
#include <libconfig.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define SEC   INT64_C(1000)
#define DAY   (86400 * SEC)
#define WEEK  (7 * DAY)

/* Loader state for one lg_conf_load() call. */
typedef struct ld {
    lg_conf_t              *conf;
    const char             *file;       /* borrowed: main file as given */
    const char             *incdir;     /* arena: @include base, NULL = cwd */
    int                     has_prefix; /* resolve relative paths under conf->prefix */
    char                   *err;        /* borrowed: caller's buffer */
    size_t                  errlen;
    size_t                  errused;
    int                     nerr;
    const config_setting_t *servers;    /* http.servers, parsed after upstreams */
} ld_t;

/* --- errors ------------------------------------------------------------ */

static void ld_append(ld_t *ld, const char *file, int line, const char *fmt, va_list ap)
{
    ld->nerr++;
    if (ld->err == NULL || ld->errused + 1 >= ld->errlen)
        return;
    char  *p = ld->err + ld->errused;
    size_t room = ld->errlen - ld->errused;
    int    n = line > 0 ? snprintf(p, room, "%s:%d: ", file, line)
                        : snprintf(p, room, "%s: ", file);
    if (n >= 0 && (size_t)n < room) {
        int m = vsnprintf(p + n, room - (size_t)n, fmt, ap);
        n = m < 0 ? -1 : n + m;
    }
    if (n >= 0 && (size_t)n + 1 < room) {
        p[n] = '\n';
        p[n + 1] = '\0';
        ld->errused += (size_t)n + 1;
    } else {
        ld->errused = ld->errlen - 1;   /* truncated: stop appending */
        ld->err[ld->errlen - 1] = '\0';
    }
}

static void ld_error_at(ld_t *ld, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int ld_error(ld_t *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ld_error_at(ld_t *ld, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ld_append(ld, file, line, fmt, ap);
    va_end(ap);
}

/*
 * libconfig names an included file by the path written in @include, which is
 * relative to the include directory; name it as the sysadmin can open it.
 */
static const char *ld_file_name(ld_t *ld, const char *f)
{
    if (f == NULL || strcmp(f, ld->file) == 0)
        return ld->file;
    if (f[0] == '/' || ld->incdir == NULL)
        return f;
    char *p = lg_arena_printf(&ld->conf->arena, "%s/%s", ld->incdir, f);
    return p ? p : f;
}

/* Report an error at setting s; returns -1 so handlers can "return ld_error()". */
static int ld_error(ld_t *ld, const config_setting_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (s == NULL)
        ld_append(ld, ld->file, 0, fmt, ap);
    else
        ld_append(ld, ld_file_name(ld, config_setting_source_file(s)),
                  (int)config_setting_source_line(s), fmt, ap);
    va_end(ap);
    return -1;
}

static int ld_oom(ld_t *ld, const config_setting_t *s)
{
    return ld_error(ld, s, "out of memory");
}

static void *ld_calloc(ld_t *ld, size_t n, size_t size)
{
    if (n != 0 && size > SIZE_MAX / n)
        return NULL;
    return lg_arena_calloc(&ld->conf->arena, n * size);
}

static char *ld_strdup(ld_t *ld, const char *s)
{
    return lg_arena_strdup(&ld->conf->arena, s);
}

/* The name to use in messages: list elements have none, take the list's. */
static const char *sname(const config_setting_t *s)
{
    while (s != NULL && config_setting_name(s) == NULL)
        s = config_setting_parent(s);
    return s != NULL ? config_setting_name(s) : "?";
}

/* --- directive tables ---------------------------------------------------- */

typedef enum dtype {
    D_INT      = 0,     /* int: integer in [min, max] */
    D_INT64    = 1,     /* int64_t: integer in [min, max] */
    D_BOOL     = 2,     /* int: true / false */
    D_DURATION = 3,     /* lg_msec_t: integer seconds or "500ms" "10s" "2m" "1h" "1d" */
    D_SIZE     = 4,     /* int64_t: integer bytes or "512" "16k" "1m" "2g" */
    D_STRING   = 5,     /* char *: non-empty string */
    D_PATH     = 6,     /* char *: file, relative -> under prefix; `keyword` kept as is */
    D_LEVEL    = 7,     /* lg_log_level_t: "debug" .. "emerg" */
    D_WORKERS  = 8,     /* int: integer in [min, max] or "auto" (CPUs online) */
    D_HEADERS  = 9,     /* lg_header_ops_t *: group of Name = "value" */
    D_NAMES    = 10,    /* lg_strv_t *: header name or list of header names */
    D_CUSTOM   = 11,    /* handled by fn: structure, not a value; no default, not merged */
    D_STRLIST  = 12,    /* lg_strv_t *: string or list of strings; keyword "paths": resolved;
                           default: space-separated */
} dtype_t;

/* Rows of kind D_LEVEL write the enum through an int pointer. */
_Static_assert(sizeof(lg_log_level_t) == sizeof(int), "lg_log_level_t is not int-sized");

typedef int (*dfn_t)(ld_t *ld, const config_setting_t *s, void *base);

typedef struct directive {
    const char *name;
    dtype_t     type;
    int64_t     min, max;   /* bounds in the stored unit (ms, bytes) */
    const char *def;        /* default in config syntax ("" = empty list); NULL: stays unset */
    size_t      off;        /* offset of the target field in the level's struct */
    const char *keyword;    /* D_PATH: a value that is not a path ("stderr", "off") */
    dfn_t       fn;         /* D_CUSTOM */
} directive_t;

#define ROW(name, type, min, max, def, st, f) \
    { name, type, min, max, def, offsetof(st, f), NULL, NULL }
#define PATH(name, def, kw, st, f) \
    { name, D_PATH, 0, 0, def, offsetof(st, f), kw, NULL }
#define CUSTOM(name, fn) \
    { name, D_CUSTOM, 0, 0, NULL, 0, NULL, fn }

static int fn_http(ld_t *, const config_setting_t *, void *);
static int fn_upstreams(ld_t *, const config_setting_t *, void *);
static int fn_servers(ld_t *, const config_setting_t *, void *);
static int fn_upstream_servers(ld_t *, const config_setting_t *, void *);
static int fn_upstream_address(ld_t *, const config_setting_t *, void *);
static int fn_listen(ld_t *, const config_setting_t *, void *);
static int fn_listen_address(ld_t *, const config_setting_t *, void *);
static int fn_server_name(ld_t *, const config_setting_t *, void *);
static int fn_routes(ld_t *, const config_setting_t *, void *);
static int fn_match(ld_t *, const config_setting_t *, void *);
static int fn_proxy_pass(ld_t *, const config_setting_t *, void *);
static int fn_return(ld_t *, const config_setting_t *, void *);
static int fn_route_string(ld_t *, const config_setting_t *, void *);
static int fn_route_hosts(ld_t *, const config_setting_t *, void *);
static int fn_route_methods(ld_t *, const config_setting_t *, void *);
static int fn_route_pair(ld_t *, const config_setting_t *, void *);
static int fn_split(ld_t *, const config_setting_t *, void *);
static int fn_health(ld_t *, const config_setting_t *, void *);

static const directive_t global_dirs[] = {
    ROW("worker_processes",     D_WORKERS,  1, 512,        "auto",   lg_conf_t, worker_processes),
    ROW("user",                 D_STRING,   0, 0,          NULL,     lg_conf_t, user),
    ROW("group",                D_STRING,   0, 0,          NULL,     lg_conf_t, group),
    PATH("pid",                 "logs/legate.pid", NULL,             lg_conf_t, pid_file),
    PATH("error_log",           "logs/error.log",  "stderr",         lg_conf_t, error_log),
    ROW("error_log_level",      D_LEVEL,    0, 0,          "notice", lg_conf_t, error_log_level),
    ROW("worker_connections",   D_INT,      1, 1000000,    "1024",   lg_conf_t, worker_connections),
    ROW("worker_rlimit_nofile", D_INT,      0, INT32_MAX,  "0",      lg_conf_t, worker_rlimit_nofile),
    ROW("shutdown_timeout",     D_DURATION, 0, WEEK,       "10s",    lg_conf_t, shutdown_timeout),
    ROW("shared_memory_size",   D_SIZE,     65536, (int64_t)1 << 34, "1m", lg_conf_t, shared_memory_size),
    ROW("tls_ticket_rotate",    D_DURATION, 1000, WEEK,    "1h",     lg_conf_t, tls_ticket_rotate),
    CUSTOM("http", fn_http),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* Inheritable: used at http, server and route level. */
static const directive_t common_dirs[] = {
    ROW("client_header_timeout",   D_DURATION, 1, WEEK,   "60s",  lg_common_t, client_header_timeout),
    ROW("client_body_timeout",     D_DURATION, 1, WEEK,   "60s",  lg_common_t, client_body_timeout),
    ROW("send_timeout",            D_DURATION, 1, WEEK,   "60s",  lg_common_t, send_timeout),
    ROW("keepalive_timeout",       D_DURATION, 0, WEEK,   "75s",  lg_common_t, keepalive_timeout),
    ROW("keepalive_requests",      D_INT64,    1, 1000000000, "1000", lg_common_t, keepalive_requests),
    ROW("proxy_connect_timeout",   D_DURATION, 1, WEEK,   "5s",   lg_common_t, proxy_connect_timeout),
    ROW("proxy_send_timeout",      D_DURATION, 1, WEEK,   "60s",  lg_common_t, proxy_send_timeout),
    ROW("proxy_read_timeout",      D_DURATION, 1, WEEK,   "60s",  lg_common_t, proxy_read_timeout),
    ROW("client_max_body_size",    D_SIZE,     0, INT64_MAX, "1m", lg_common_t, client_max_body_size),
    ROW("add_request_headers",     D_HEADERS,  0, 0,      "",     lg_common_t, add_request_headers),
    ROW("remove_request_headers",  D_NAMES,    0, 0,      "",     lg_common_t, remove_request_headers),
    ROW("add_response_headers",    D_HEADERS,  0, 0,      "",     lg_common_t, add_response_headers),
    ROW("remove_response_headers", D_NAMES,    0, 0,      "",     lg_common_t, remove_response_headers),
    ROW("x_forwarded_for",         D_BOOL,     0, 1,      "true",  lg_common_t, x_forwarded_for),
    ROW("x_forwarded_proto",       D_BOOL,     0, 1,      "true",  lg_common_t, x_forwarded_proto),
    ROW("x_forwarded_host",        D_BOOL,     0, 1,      "false", lg_common_t, x_forwarded_host),
    ROW("x_real_ip",               D_BOOL,     0, 1,      "false", lg_common_t, x_real_ip),
    ROW("forwarded",               D_BOOL,     0, 1,      "false", lg_common_t, forwarded),
    ROW("via",                     D_BOOL,     0, 1,      "true",  lg_common_t, via),
    ROW("gzip",                    D_BOOL,     0, 1,      "false", lg_common_t, gzip),
    ROW("gzip_level",              D_INT,      1, 9,      "1",     lg_common_t, gzip_level),
    ROW("gzip_min_length",         D_SIZE,     0, INT64_MAX, "20", lg_common_t, gzip_min_length),
    ROW("gzip_types",              D_STRING,   0, 0,      "text/html", lg_common_t, gzip_types),
    ROW("gunzip",                  D_BOOL,     0, 1,      "false", lg_common_t, gunzip),
    PATH("access_log",             "logs/access.log", "off",        lg_common_t, access_log),
    ROW("log_format",              D_STRING,   0, 0,      "combined", lg_common_t, log_format),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t http_dirs[] = {
    CUSTOM("upstreams", fn_upstreams),
    CUSTOM("servers",   fn_servers),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t upstream_dirs[] = {
    CUSTOM("servers", fn_upstream_servers),
    ROW("keepalive", D_INT, 0, 10000, "32", lg_upstream_t, keepalive),
    ROW("balance",      D_STRING,   0, 0,    "round_robin", lg_upstream_t, balance_name),
    ROW("hash_key",     D_STRING,   0, 0,    "$request_uri", lg_upstream_t, hash_key),
    ROW("max_fails",    D_INT,      0, 1000, "1",   lg_upstream_t, max_fails),
    ROW("fail_timeout", D_DURATION, 1, WEEK, "10s", lg_upstream_t, fail_timeout),
    CUSTOM("health_check", fn_health),
    ROW("fail_on",       D_STRING,   0, 0,    "error timeout invalid_header", lg_upstream_t, fail_on),
    ROW("next_upstream", D_STRING,   0, 0,    "error timeout", lg_upstream_t, next_upstream),
    ROW("next_upstream_tries",   D_INT,      0, 100,  "0", lg_upstream_t, next_upstream_tries),
    ROW("next_upstream_timeout", D_DURATION, 0, WEEK, "0", lg_upstream_t, next_upstream_timeout),
    ROW("slow_start",    D_DURATION, 0, WEEK, "0", lg_upstream_t, slow_start),
    ROW("queue",         D_INT,      0, 100000, "0", lg_upstream_t, queue),
    ROW("queue_timeout", D_DURATION, 1, WEEK, "1s", lg_upstream_t, queue_timeout),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t health_dirs[] = {
    ROW("interval", D_DURATION, 10, WEEK, "5s", lg_health_t, interval),
    ROW("timeout",  D_DURATION, 1, WEEK,  "2s", lg_health_t, timeout),
    ROW("method",   D_STRING,   0, 0,     "GET", lg_health_t, method),
    ROW("path",     D_STRING,   0, 0,     "/", lg_health_t, path),
    ROW("host",     D_STRING,   0, 0,     NULL, lg_health_t, host),
    ROW("status",   D_STRING,   0, 0,     "200-399", lg_health_t, status),
    ROW("body",     D_STRING,   0, 0,     NULL, lg_health_t, body),
    ROW("rise",     D_INT,      1, 100,   "2", lg_health_t, rise),
    ROW("fall",     D_INT,      1, 100,   "3", lg_health_t, fall),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t upstream_server_dirs[] = {
    CUSTOM("address", fn_upstream_address),
    ROW("weight", D_INT, 1, 1000, "1", lg_upstream_server_t, weight),
    ROW("backup", D_BOOL, 0, 1, "false", lg_upstream_server_t, backup),
    ROW("down",   D_BOOL, 0, 1, "false", lg_upstream_server_t, down),
    ROW("max_conns", D_INT, 0, 1000000, "0", lg_upstream_server_t, max_conns),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

#define TLS_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

static int fn_tls_certs(ld_t *, const config_setting_t *, void *);
static const char *get_string(ld_t *ld, const config_setting_t *s);
static char *resolve_path(ld_t *ld, const char *p);

/* TLS settings of a server: rows on lg_tls_conf_t. */
static const directive_t tls_dirs[] = {
    CUSTOM("tls_certificates", fn_tls_certs),
    ROW("tls_protocols",     D_STRING,   0, 0, "TLSv1.2 TLSv1.3", lg_tls_conf_t, protocols),
    ROW("tls_ciphers",       D_STRING,   0, 0, TLS_CIPHERS, lg_tls_conf_t, ciphers),
    ROW("tls_ciphersuites",  D_STRING,   0, 0, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        lg_tls_conf_t, ciphersuites),
    PATH("tls_client_ca",    NULL, NULL, lg_tls_conf_t, client_ca),
    ROW("tls_verify_client", D_STRING,   0, 0, "off", lg_tls_conf_t, verify_client),
    ROW("tls_verify_depth",  D_INT,      1, 100, "1", lg_tls_conf_t, verify_depth),
    PATH("tls_ocsp_response", NULL, NULL, lg_tls_conf_t, ocsp_response),
    ROW("hsts",              D_STRING,   0, 0, NULL, lg_tls_conf_t, hsts),
    ROW("tls_handshake_timeout", D_DURATION, 1, WEEK, "10s", lg_tls_conf_t, handshake_timeout),
    ROW("tls_session_tickets", D_BOOL,   0, 1, "true", lg_tls_conf_t, session_tickets),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static int fn_tls_certs(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_tls_conf_t *t = base;
    if (!config_setting_is_list(s) && !config_setting_is_group(s))
        return ld_error(ld, s, "'tls_certificates' must be { cert = ...; key = ...; } or a list of them");
    int one = config_setting_is_group(s);
    int n = one ? 1 : config_setting_length(s);
    if (n == 0)
        return ld_error(ld, s, "'tls_certificates' is empty");
    if ((t->certs = ld_calloc(ld, (size_t)n, sizeof(*t->certs))) == NULL)
        return ld_oom(ld, s);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = one ? s : config_setting_get_elem(s, (unsigned)i);
        const config_setting_t *c = config_setting_get_member(g, "cert");
        const config_setting_t *k = config_setting_get_member(g, "key");
        lg_cert_t *ce = &t->certs[t->ncerts++];
        ce->line = (int)config_setting_source_line(g);
        if (!config_setting_is_group(g) || c == NULL || k == NULL || config_setting_length(g) != 2) {
            rc = ld_error(ld, g, "a certificate is { cert = \"file.pem\"; key = \"file.key\"; }");
            continue;
        }
        const char *cv = get_string(ld, c), *kv = get_string(ld, k);
        if (cv == NULL || kv == NULL) {
            rc = -1;
            continue;
        }
        ce->cert = resolve_path(ld, cv);
        ce->key = resolve_path(ld, kv);
        if (ce->cert == NULL || ce->key == NULL)
            rc = ld_oom(ld, g);
    }
    return rc;
}

static int fn_forward(ld_t *, const config_setting_t *, void *);
static void table_unset(const directive_t *t, void *base);
static int table_defaults(ld_t *ld, const directive_t *t, void *base);
static int parse_block(ld_t *ld, const config_setting_t *g, const char *level,
                       const directive_t *t1, void *b1, const directive_t *t2, void *b2);

static const directive_t forward_dirs[] = {
    ROW("allow_clients",     D_STRLIST, 0, 0, "127.0.0.0/8 ::1/128", lg_forward_t, allow_clients),
    ROW("deny_clients",      D_STRLIST, 0, 0, "", lg_forward_t, deny_clients),
    ROW("connect_ports",     D_STRING,  0, 0, "443", lg_forward_t, connect_ports),
    ROW("allow_private",     D_BOOL,    0, 1, "false", lg_forward_t, allow_private),
    ROW("deny_destinations", D_STRLIST, 0, 0, "", lg_forward_t, deny_destinations),
    { "blocklists", D_STRLIST, 0, 0, "", offsetof(lg_forward_t, blocklists), "paths", NULL },
    ROW("block_domains",     D_STRLIST, 0, 0, "", lg_forward_t, block_domains),
    ROW("url_filters",       D_STRLIST, 0, 0, "", lg_forward_t, url_filters),
    ROW("anonymity",         D_STRING,  0, 0, "transparent", lg_forward_t, anonymity),
    ROW("strip_headers",     D_NAMES,   0, 0, "", lg_forward_t, strip_headers),
    ROW("resolvers",         D_STRLIST, 0, 0, "", lg_forward_t, resolvers),
    PATH("hosts_file",       NULL, NULL, lg_forward_t, hosts_file),
    ROW("dns_family",        D_STRING,  0, 0, "ipv4_first", lg_forward_t, dns_family),
    ROW("tunnel_idle_timeout", D_DURATION, 1, WEEK, "5m", lg_forward_t, tunnel_idle_timeout),
    ROW("keepalive",         D_INT,     0, 10000, "8", lg_forward_t, keepalive),
    PATH("auth_file",        NULL, NULL, lg_forward_t, auth_file),
    ROW("auth_realm",        D_STRING,  0, 0, "legate", lg_forward_t, auth_realm),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static int fn_forward(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'forward' must be a group { allow_clients = ...; }");
    lg_forward_t *f = ld_calloc(ld, 1, sizeof(*f));
    if (f == NULL)
        return ld_oom(ld, s);
    f->line = (int)config_setting_source_line(s);
    table_unset(forward_dirs, f);
    int rc = parse_block(ld, s, "forward", forward_dirs, f, NULL, NULL);
    rc |= table_defaults(ld, forward_dirs, f);
    if (rc == 0) {
        static const char *const anon[] = { "transparent", "anonymous", "elite", NULL };
        static const char *const fam[] = { "ipv4_first", "ipv6_first", "ipv4_only", "ipv6_only", NULL };
        int ok = 0;
        for (int i = 0; anon[i]; i++)
            ok |= strcmp(f->anonymity, anon[i]) == 0;
        if (!ok)
            rc = ld_error(ld, config_setting_get_member(s, "anonymity"),
                          "'anonymity' must be \"transparent\", \"anonymous\" or \"elite\"");
        ok = 0;
        for (int i = 0; fam[i]; i++)
            ok |= strcmp(f->dns_family, fam[i]) == 0;
        if (!ok)
            rc = ld_error(ld, config_setting_get_member(s, "dns_family"),
                          "'dns_family' must be ipv4_first, ipv6_first, ipv4_only or ipv6_only");
    }
    srv->forward = f;
    return rc;
}

static const directive_t server_dirs[] = {
    CUSTOM("listen",      fn_listen),
    CUSTOM("server_name", fn_server_name),
    CUSTOM("routes",      fn_routes),
    CUSTOM("forward",     fn_forward),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t listen_dirs[] = {
    CUSTOM("address", fn_listen_address),
    ROW("backlog", D_INT,  1, 65535, "511",   lg_listen_t, backlog),
    ROW("default", D_BOOL, 0, 1,     "false", lg_listen_t, is_default),
    ROW("tls",     D_BOOL, 0, 1,     "false", lg_listen_t, tls),
    ROW("protocol", D_STRING, 0, 0,  "http",  lg_listen_t, protocol),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t route_dirs[] = {
    CUSTOM("exact",      fn_match),
    CUSTOM("prefix",     fn_match),
    CUSTOM("path",       fn_match),     /* synonym of prefix */
    CUSTOM("regex",      fn_match),
    CUSTOM("proxy_pass", fn_proxy_pass),
    CUSTOM("return",     fn_return),
    CUSTOM("body",       fn_route_string),
    CUSTOM("location",   fn_route_string),
    CUSTOM("rewrite",    fn_route_string),
    CUSTOM("host",       fn_route_hosts),
    CUSTOM("methods",    fn_route_methods),
    CUSTOM("header",     fn_route_pair),
    CUSTOM("query",      fn_route_pair),
    CUSTOM("split",      fn_split),
    CUSTOM("split_key",  fn_route_string),
    CUSTOM("split_cookie", fn_route_string),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* --- field access by row ---------------------------------------------- */

enum { K_INT, K_INT64, K_PTR };

static int field_kind(dtype_t t)
{
    switch (t) {
    case D_INT: case D_BOOL: case D_LEVEL: case D_WORKERS:
        return K_INT;
    case D_INT64: case D_DURATION: case D_SIZE:
        return K_INT64;
    default:
        return K_PTR;
    }
}

#define FIELD(d, base) ((char *)(base) + (d)->off)

static void field_unset(const directive_t *d, void *base)
{
    switch (field_kind(d->type)) {
    case K_INT:   *(int *)FIELD(d, base) = LG_UNSET; break;
    case K_INT64: *(int64_t *)FIELD(d, base) = LG_UNSET; break;
    default:      *(void **)FIELD(d, base) = NULL; break;
    }
}

static int field_is_unset(const directive_t *d, const void *base)
{
    const char *f = (const char *)base + d->off;
    switch (field_kind(d->type)) {
    case K_INT:   return *(const int *)f == LG_UNSET;
    case K_INT64: return *(const int64_t *)f == LG_UNSET;
    default:      return *(void *const *)f == NULL;
    }
}

static void field_store(const directive_t *d, void *base, int64_t v)
{
    if (field_kind(d->type) == K_INT)
        *(int *)FIELD(d, base) = (int)v;
    else
        *(int64_t *)FIELD(d, base) = v;
}

static void table_unset(const directive_t *t, void *base)
{
    for (; t->name; t++)
        if (t->type != D_CUSTOM)
            field_unset(t, base);
}

/* --- value conversion -------------------------------------------------- */

static int get_int(const config_setting_t *s, int64_t *v)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return -1;
    *v = config_setting_get_int64(s);
    return 0;
}

/* For messages: "7d", "2h", "90s", "250ms", in the largest unit that divides evenly. */
static const char *fmt_duration(char *buf, size_t n, lg_msec_t ms)
{
    static const struct { const char *u; int64_t m; } units[] = {
        { "d", DAY }, { "h", 3600 * SEC }, { "m", 60 * SEC }, { "s", SEC }, { "ms", 1 },
    };
    size_t i = 0;
    while (ms != 0 && ms % units[i].m != 0)
        i++;
    snprintf(buf, n, "%lld%s", (long long)(ms / units[i].m), ms ? units[i].u : "s");
    return buf;
}

static int range_error(ld_t *ld, const directive_t *d, const config_setting_t *s)
{
    char lo[32], hi[32];

    if (d->type == D_DURATION) {
        fmt_duration(lo, sizeof(lo), d->min);
        fmt_duration(hi, sizeof(hi), d->max);
    } else {
        snprintf(lo, sizeof(lo), "%lld", (long long)d->min);
        snprintf(hi, sizeof(hi), "%lld", (long long)d->max);
    }
    if (d->max == INT64_MAX && d->min == 0)
        return ld_error(ld, s, "'%s' must not be negative", d->name);
    return ld_error(ld, s, "'%s' must be between %s and %s", d->name, lo, hi);
}

static int check_range(ld_t *ld, const directive_t *d, const config_setting_t *s, int64_t v)
{
    if (v < d->min || v > d->max)
        return range_error(ld, d, s);
    return 0;
}

static const char *get_string(ld_t *ld, const config_setting_t *s)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        ld_error(ld, s, "'%s' must be a string", sname(s));
        return NULL;
    }
    const char *v = config_setting_get_string(s);
    if (v[0] == '\0') {
        ld_error(ld, s, "'%s' must not be empty", sname(s));
        return NULL;
    }
    return v;
}

static char *resolve_path(ld_t *ld, const char *p)
{
    if (p[0] == '/' || !ld->has_prefix)
        return ld_strdup(ld, p);
    return lg_arena_printf(&ld->conf->arena, "%s/%s", ld->conf->prefix, p);
}

static int ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 512 ? 512 : (int)n;
}

/* RFC 9110 tchar: what a header name may hold. */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return 0;
    }
    return 1;
}

/* A header value must not smuggle CR/LF (or any control byte but HTAB). */
static int is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static int set_headers(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'%s' must be a group of Name = \"value\" settings", d->name);
    int              n = config_setting_length(s), bad = 0;
    lg_header_ops_t *ops = ld_calloc(ld, 1, sizeof(*ops));
    if (ops == NULL || (n > 0 && (ops->v = ld_calloc(ld, (size_t)n, sizeof(*ops->v))) == NULL))
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *h = config_setting_get_elem(s, (unsigned)i);
        const char             *name = config_setting_name(h);
        if (config_setting_type(h) != CONFIG_TYPE_STRING) {
            bad = ld_error(ld, h, "header '%s' in '%s' must be a string", name, d->name);
            continue;
        }
        const char *value = config_setting_get_string(h);
        if (!is_field_value(value)) {   /* names: libconfig allows only tchars */
            bad = ld_error(ld, h, "header '%s' in '%s' has a control character in its value",
                           name, d->name);
            continue;
        }
        lg_header_op_t *op = &ops->v[ops->n++];
        op->name = ld_strdup(ld, name);
        op->value = ld_strdup(ld, value);
        if (op->name == NULL || op->value == NULL)
            return ld_oom(ld, s);
    }
    if (bad)
        return -1;
    *(lg_header_ops_t **)FIELD(d, base) = ops;
    return 0;
}

static int set_names(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    int single = config_setting_type(s) == CONFIG_TYPE_STRING;
    int plain = d->type == D_STRLIST;
    int paths = plain && d->keyword && strcmp(d->keyword, "paths") == 0;
    if (!single && !config_setting_is_array(s) && !config_setting_is_list(s))
        return ld_error(ld, s, plain ? "'%s' must be a string or a list of strings"
                                     : "'%s' must be a header name or a list of header names",
                        d->name);
    int        n = single ? 1 : config_setting_length(s), bad = 0;
    lg_strv_t *sv = ld_calloc(ld, 1, sizeof(*sv));
    if (sv == NULL || (n > 0 && (sv->v = ld_calloc(ld, (size_t)n, sizeof(char *))) == NULL))
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = single ? s : config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            bad = ld_error(ld, e, plain ? "'%s' must be a string or a list of strings"
                                        : "'%s' must be a header name or a list of header names",
                           d->name);
            continue;
        }
        const char *v = config_setting_get_string(e);
        if (!plain && !is_token(v)) {
            bad = ld_error(ld, e, "'%s': '%s' is not a valid header name", d->name, v);
            continue;
        }
        if ((sv->v[sv->n++] = paths ? resolve_path(ld, v) : ld_strdup(ld, v)) == NULL)
            return ld_oom(ld, s);
    }
    if (bad)
        return -1;
    *(lg_strv_t **)FIELD(d, base) = sv;
    return 0;
}

/* Convert setting s according to row d and store it into base. */
static int set_value(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    const char *name = d->name, *str;
    int         type = config_setting_type(s);
    int64_t     v;
    char       *p;

    switch (d->type) {
    case D_INT:
    case D_INT64:
        if (get_int(s, &v) < 0)
            return ld_error(ld, s, "'%s' must be an integer", name);
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            return ld_error(ld, s, "'%s' must be a boolean (true or false)", name);
        field_store(d, base, config_setting_get_bool(s));
        return 0;

    case D_DURATION:
        if (get_int(s, &v) == 0) {
            if (v < 0 || v > INT64_MAX / SEC)
                return range_error(ld, d, s);
            v *= SEC;
        } else if (type != CONFIG_TYPE_STRING
                   || lg_parse_duration(config_setting_get_string(s), &v) < 0) {
            return ld_error(ld, s, "'%s' must be a duration: seconds, or a string "
                            "such as \"500ms\", \"30s\", \"5m\", \"1h\", \"1d\"", name);
        }
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_SIZE:
        if (get_int(s, &v) < 0 && (type != CONFIG_TYPE_STRING
                                   || lg_parse_size(config_setting_get_string(s), &v) < 0))
            return ld_error(ld, s, "'%s' must be a size: bytes, or a string such as "
                            "\"512\", \"16k\", \"1m\", \"2g\"", name);
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_STRING:
    case D_PATH:
        if ((str = get_string(ld, s)) == NULL)
            return -1;
        if (d->type == D_PATH && (d->keyword == NULL || strcmp(str, d->keyword) != 0))
            p = resolve_path(ld, str);
        else
            p = ld_strdup(ld, str);
        if (p == NULL)
            return ld_oom(ld, s);
        *(char **)FIELD(d, base) = p;
        return 0;

    case D_LEVEL: {
        lg_log_level_t l;
        if (type != CONFIG_TYPE_STRING || lg_log_level_parse(config_setting_get_string(s), &l) < 0)
            return ld_error(ld, s, "'%s' must be one of \"debug\", \"info\", \"notice\", "
                            "\"warn\", \"error\", \"crit\", \"alert\", \"emerg\"", name);
        field_store(d, base, l);
        return 0;
    }

    case D_WORKERS:
        if (type == CONFIG_TYPE_STRING && strcmp(config_setting_get_string(s), "auto") == 0) {
            field_store(d, base, ncpus());
            return 0;
        }
        if (get_int(s, &v) < 0)
            return ld_error(ld, s, "'%s' must be an integer or \"auto\"", name);
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_HEADERS:
        return set_headers(ld, d, s, base);
    case D_NAMES:
    case D_STRLIST:
        return set_names(ld, d, s, base);
    case D_CUSTOM:
        return d->fn(ld, s, base);
    }
    return -1;
}

/* Give every unset field of the table its default (written in config syntax). */
static int table_defaults(ld_t *ld, const directive_t *t, void *base)
{
    for (; t->name; t++) {
        if (t->type == D_CUSTOM || t->def == NULL || !field_is_unset(t, base))
            continue;
        int64_t        v = 0;
        lg_log_level_t l;
        void          *p = NULL;
        int            rc = 0;

        switch (t->type) {
        case D_INT: case D_INT64:
            v = strtoll(t->def, NULL, 10);
            break;
        case D_BOOL:
            v = strcmp(t->def, "true") == 0;
            break;
        case D_DURATION:
            rc = lg_parse_duration(t->def, &v);
            break;
        case D_SIZE:
            rc = lg_parse_size(t->def, &v);
            break;
        case D_LEVEL:
            rc = lg_log_level_parse(t->def, &l);
            v = l;
            break;
        case D_WORKERS:
            v = strcmp(t->def, "auto") == 0 ? ncpus() : strtoll(t->def, NULL, 10);
            break;
        case D_STRING:
            p = ld_strdup(ld, t->def);
            break;
        case D_PATH:
            p = t->keyword && strcmp(t->def, t->keyword) == 0 ? ld_strdup(ld, t->def)
                                                               : resolve_path(ld, t->def);
            break;
        case D_HEADERS:
            p = ld_calloc(ld, 1, sizeof(lg_header_ops_t));
            break;
        case D_NAMES:
            p = ld_calloc(ld, 1, sizeof(lg_strv_t));
            break;
        case D_STRLIST: {
            /* the default is written space-separated: "127.0.0.0/8 ::1" */
            lg_strv_t *sv = ld_calloc(ld, 1, sizeof(*sv));
            size_t words = 0;
            for (const char *q = t->def; *q; q++)
                words += (q == t->def || q[-1] == ' ') && *q != ' ';
            if (sv && words && (sv->v = ld_calloc(ld, words, sizeof(char *))) == NULL)
                sv = NULL;
            for (const char *q = t->def; sv && *q;) {
                while (*q == ' ')
                    q++;
                size_t k = strcspn(q, " ");
                if (k == 0)
                    break;
                char *w = ld_calloc(ld, 1, k + 1);
                if (w == NULL) {
                    sv = NULL;
                    break;
                }
                memcpy(w, q, k);
                sv->v[sv->n++] = w;
                q += k;
            }
            p = sv;
            break;
        }
        case D_CUSTOM:
            break;
        }
        if (rc < 0 || (field_kind(t->type) == K_PTR && p == NULL)) {
            ld_error_at(ld, ld->file, 0, "internal error: default of '%s'", t->name);
            return -1;
        }
        if (field_kind(t->type) == K_PTR)
            *(void **)FIELD(t, base) = p;
        else
            field_store(t, base, v);
    }
    return 0;
}

static const directive_t *table_find(const directive_t *t, const char *name)
{
    for (; t != NULL && t->name; t++)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/*
 * Apply every member of group g: its row is looked up in t1 (target b1),
 * then t2 (target b2).  Returns -1 if any member had an error.
 */
/* Up to three tables may share one group (server: its own, common, TLS). */
static int parse_block3(ld_t *ld, const config_setting_t *g, const char *level,
                        const directive_t *t1, void *b1, const directive_t *t2, void *b2,
                        const directive_t *t3, void *b3)
{
    int rc = 0, n = config_setting_length(g);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char             *name = config_setting_name(s);
        const directive_t      *d;
        void                   *base;

        if ((d = table_find(t1, name)) != NULL)
            base = b1;
        else if ((d = table_find(t2, name)) != NULL)
            base = b2;
        else if ((d = table_find(t3, name)) != NULL)
            base = b3;
        else {
            rc = ld_error(ld, s, "unknown setting '%s' in %s", name, level);
            continue;
        }
        if (set_value(ld, d, s, base) < 0)
            rc = -1;
    }
    return rc;
}

static int parse_block(ld_t *ld, const config_setting_t *g, const char *level,
                       const directive_t *t1, void *b1, const directive_t *t2, void *b2)
{
    return parse_block3(ld, g, level, t1, b1, t2, b2, NULL, NULL);
}

/* --- upstreams --------------------------------------------------------- */

static int parse_addr_setting(ld_t *ld, const config_setting_t *s, int default_port,
                              lg_addr_t *out)
{
    char        msg[256];
    const char *str = get_string(ld, s);

    if (str == NULL)
        return -1;
    if (lg_parse_addr(str, default_port, out, &ld->conf->arena, msg, sizeof(msg)) < 0) {
        memset(out, 0, sizeof(*out));
        return ld_error(ld, s, "%s", msg);
    }
    return 0;
}

static int fn_upstream_address(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_upstream_server_t *us = base;
    return parse_addr_setting(ld, s, 80, &us->addr);
}

static int fn_listen_address(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_listen_t *l = base;
    return parse_addr_setting(ld, s, 0, &l->addr);
}

/*
 * The shape shared by upstream servers, listen and server_name: one entry
 * (a string, or a group when `groups`), or an array / list of entries.
 * Returns the number of entries, or -1 after reporting a wrong shape.
 */
static int entry_count(ld_t *ld, const config_setting_t *s, int groups, const char *what)
{
    if (config_setting_type(s) == CONFIG_TYPE_STRING || (groups && config_setting_is_group(s)))
        return 1;
    if (config_setting_is_array(s) || config_setting_is_list(s))
        return config_setting_length(s);
    ld_error(ld, s, "'%s' must be %s", config_setting_name(s), what);
    return -1;
}

/* An empty array or list: "no entries", not a type error. */
static int is_empty_list(const config_setting_t *s)
{
    return (config_setting_is_array(s) || config_setting_is_list(s))
        && config_setting_length(s) == 0;
}

static const config_setting_t *entry_at(const config_setting_t *s, int i)
{
    if (config_setting_type(s) == CONFIG_TYPE_STRING || config_setting_is_group(s))
        return s;
    return config_setting_get_elem(s, (unsigned)i);
}

static int fn_upstream_servers(ld_t *ld, const config_setting_t *s, void *base)
{
    static const char what[] = "an address, a group { address = ...; weight = ...; }, "
                               "or a list of them";
    lg_upstream_t *up = base;
    int            n = entry_count(ld, s, 1, what), rc = 0;

    if (n < 0)
        return -1;
    if (n == 0)
        return 0;       /* "has no servers", reported by the caller */
    if ((up->servers = ld_calloc(ld, (size_t)n, sizeof(*up->servers))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = entry_at(s, i);
        lg_upstream_server_t   *us = &up->servers[up->nservers++];

        table_unset(upstream_server_dirs, us);
        us->line = (int)config_setting_source_line(e);
        if (config_setting_type(e) == CONFIG_TYPE_STRING) {
            rc |= fn_upstream_address(ld, e, us);
        } else if (config_setting_is_group(e)) {
            rc |= parse_block(ld, e, "upstream server", upstream_server_dirs, us, NULL, NULL);
            if (config_setting_get_member(e, "address") == NULL)
                rc = ld_error(ld, e, "upstream server has no 'address'");
        } else {
            rc = ld_error(ld, e, "'servers' of an upstream must be %s", what);
        }
        rc |= table_defaults(ld, upstream_server_dirs, us);
    }
    return rc;
}

static const char *const balance_names[] = {
    [LG_BAL_ROUND_ROBIN] = "round_robin", [LG_BAL_LEAST_CONN] = "least_conn",
    [LG_BAL_IP_HASH] = "ip_hash", [LG_BAL_HASH] = "hash",
    [LG_BAL_RANDOM] = "random", [LG_BAL_PEAK_EWMA] = "peak_ewma",
};

/* "error timeout http_502" -> a mask; 0 and an error for an unknown word. */
static int cond_mask(ld_t *ld, const config_setting_t *at, const char *list, int allow_ni,
                     unsigned *out)
{
    static const struct { const char *name; unsigned bit; } words[] = {
        { "error", LG_COND_ERROR }, { "timeout", LG_COND_TIMEOUT },
        { "invalid_header", LG_COND_INVALID_HEADER }, { "http_500", LG_COND_HTTP_500 },
        { "http_502", LG_COND_HTTP_502 }, { "http_503", LG_COND_HTTP_503 },
        { "http_504", LG_COND_HTTP_504 }, { "http_429", LG_COND_HTTP_429 },
        { "non_idempotent", LG_COND_NON_IDEMPOTENT }, { "off", 0 },
    };
    unsigned m = 0;
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, " ,");
        if (n == 0)
            break;
        size_t i;
        for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strlen(words[i].name) == n && strncmp(words[i].name, p, n) == 0)
                break;
        if (i == sizeof(words) / sizeof(words[0]) ||
            (!allow_ni && words[i].bit == LG_COND_NON_IDEMPOTENT))
            return ld_error(ld, at, "unknown condition '%.*s' (error, timeout, invalid_header, "
                            "http_500, http_502, http_503, http_504, http_429%s, off)",
                            (int)n, p, allow_ni ? ", non_idempotent" : "");
        m |= words[i].bit;
        p += n;
    }
    *out = m;
    return 0;
}

/* balance name -> enum, and sanity of the server list. */
static int check_balance(ld_t *ld, const config_setting_t *u, lg_upstream_t *up)
{
    const config_setting_t *b = config_setting_get_member(u, "balance");
    size_t i;
    if (up->balance_name == NULL)
        return -1;
    for (i = 0; i < sizeof(balance_names) / sizeof(balance_names[0]); i++)
        if (strcmp(up->balance_name, balance_names[i]) == 0)
            break;
    if (i == sizeof(balance_names) / sizeof(balance_names[0]))
        return ld_error(ld, b ? b : u, "unknown balance '%s' (round_robin, least_conn, "
                        "ip_hash, hash, random, peak_ewma)", up->balance_name);
    up->balance = (lg_balance_t)i;
    if (up->fail_on == NULL || up->next_upstream == NULL)
        return -1;
    const config_setting_t *fo = config_setting_get_member(u, "fail_on");
    const config_setting_t *nu = config_setting_get_member(u, "next_upstream");
    if (cond_mask(ld, fo ? fo : u, up->fail_on, 0, &up->fail_mask) < 0 ||
        cond_mask(ld, nu ? nu : u, up->next_upstream, 1, &up->next_mask) < 0)
        return -1;
    size_t primaries = 0;
    for (size_t k = 0; k < up->nservers; k++)
        primaries += !up->servers[k].backup;
    if (up->nservers && primaries == 0)
        return ld_error(ld, u, "upstream '%s' has only backup servers", up->name);
    if (up->nservers > 64)
        return ld_error(ld, u, "upstream '%s' has more than 64 servers", up->name);
    return 0;
}

static int fn_upstreams(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_conf_t *conf = base;
    int        rc = 0, n;

    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'upstreams' must be a group of name = { servers = ...; }");
    n = config_setting_length(s);
    if (n == 0)
        return 0;
    if ((conf->upstreams = ld_calloc(ld, (size_t)n, sizeof(*conf->upstreams))) == NULL)
        return ld_oom(ld, s);
    /* libconfig rejects a duplicate name in a group: names are unique here. */
    for (int i = 0; i < n; i++) {
        const config_setting_t *u = config_setting_get_elem(s, (unsigned)i);
        lg_upstream_t          *up = &conf->upstreams[conf->nupstreams++];

        up->index = i;
        up->line = (int)config_setting_source_line(u);
        table_unset(upstream_dirs, up);
        if ((up->name = ld_strdup(ld, config_setting_name(u))) == NULL)
            return ld_oom(ld, u);
        if (!config_setting_is_group(u)) {
            rc = ld_error(ld, u, "upstream '%s' must be a group", up->name);
            continue;
        }
        const config_setting_t *ss = config_setting_get_member(u, "servers");
        rc |= parse_block(ld, u, "upstream", upstream_dirs, up, NULL, NULL);
        if (ss == NULL || is_empty_list(ss))
            rc = ld_error(ld, u, "upstream '%s' has no servers", up->name);
        rc |= table_defaults(ld, upstream_dirs, up);
        rc |= check_balance(ld, u, up);
    }
    return rc;
}

static lg_upstream_t *upstream_find(const lg_conf_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->nupstreams; i++)
        if (conf->upstreams[i].name && strcmp(conf->upstreams[i].name, name) == 0)
            return &conf->upstreams[i];
    return NULL;
}

/* --- servers ----------------------------------------------------------- */

static int fn_listen(ld_t *ld, const config_setting_t *s, void *base)
{
    static const char what[] = "an address, a group { address = ...; backlog = ...; "
                               "default = ...; }, or a list of them";
    lg_server_t *srv = base;
    int          n = entry_count(ld, s, 1, what), rc = 0;

    if (n < 0)
        return -1;
    if (n == 0)
        return 0;       /* "has no 'listen'", reported by the caller */
    if ((srv->listens = ld_calloc(ld, (size_t)n, sizeof(*srv->listens))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = entry_at(s, i);
        lg_listen_t            *l = &srv->listens[srv->nlistens++];

        table_unset(listen_dirs, l);
        l->line = (int)config_setting_source_line(e);
        if (config_setting_type(e) == CONFIG_TYPE_STRING) {
            rc |= fn_listen_address(ld, e, l);
        } else if (config_setting_is_group(e)) {
            rc |= parse_block(ld, e, "listen", listen_dirs, l, NULL, NULL);
            if (config_setting_get_member(e, "address") == NULL)
                rc = ld_error(ld, e, "listen has no 'address'");
        } else {
            rc = ld_error(ld, e, "'listen' must be %s", what);
        }
        rc |= table_defaults(ld, listen_dirs, l);
    }
    return rc;
}

/*
 * "example.com" exact, "*.example.com" leading wildcard (stored as
 * ".example.com"), "www.example.*" trailing wildcard (stored as
 * "www.example."), "~re" a case-insensitive POSIX ERE (stored as written,
 * with its "~").  Any other '*' is a mistake.
 */
static int server_name_parse(ld_t *ld, const config_setting_t *e, lg_server_name_t *sn)
{
    const char *v = get_string(ld, e);
    size_t      len;

    if (v == NULL)
        return -1;
    len = strlen(v);
    if (v[0] == '~') {
        regex_t *re = ld_calloc(ld, 1, sizeof(*re));
        char     msg[256];
        int      rc;

        if (re == NULL || (sn->name = ld_strdup(ld, v)) == NULL)
            return ld_oom(ld, e);
        if (v[1] == '\0')
            return ld_error(ld, e, "server name '~' has an empty regex");
        if ((rc = regcomp(re, v + 1, REG_EXTENDED | REG_ICASE | REG_NOSUB)) != 0) {
            regerror(rc, re, msg, sizeof(msg));
            return ld_error(ld, e, "bad regex in server name '%s': %s", v, msg);
        }
        sn->kind = LG_NAME_REGEX;
        sn->re = re;
        return 0;
    }
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '/')
            return ld_error(ld, e, "invalid server name '%s'", v);
    }
    const char *star = strchr(v, '*');
    const char *name = v;
    size_t      keep = len;

    sn->kind = LG_NAME_EXACT;
    if (star != NULL) {
        if (strchr(star + 1, '*') == NULL && star == v && len > 2 && v[1] == '.') {
            sn->kind = LG_NAME_WILDCARD;
            name = v + 1;
            keep = len - 1;
        } else if (strchr(star + 1, '*') == NULL && star == v + len - 1 && len > 2
                   && v[len - 2] == '.') {
            sn->kind = LG_NAME_SUFFIX;
            keep = len - 1;
        } else {
            return ld_error(ld, e, "invalid server name '%s': '*' is only allowed as the "
                            "whole first label (\"*.example.com\") or the whole last "
                            "label (\"www.example.*\")", v);
        }
    }
    if (name[0] == '.' && sn->kind == LG_NAME_EXACT)
        return ld_error(ld, e, "invalid server name '%s'", v);
    if (sn->kind != LG_NAME_SUFFIX && keep > 1 && name[keep - 1] == '.')
        keep--;     /* "example.com." is "example.com", as a Host header is matched */
    if ((sn->name = lg_arena_strndup(&ld->conf->arena, name, keep)) == NULL)
        return ld_oom(ld, e);
    for (char *p = sn->name; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return 0;
}

static int fn_server_name(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    int          n = entry_count(ld, s, 0, "a name or a list of names"), rc = 0;

    if (n <= 0)
        return n;
    if ((srv->names = ld_calloc(ld, (size_t)n, sizeof(*srv->names))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        lg_server_name_t sn = { 0 };
        if (server_name_parse(ld, entry_at(s, i), &sn) < 0)
            rc = -1;
        else
            srv->names[srv->nnames++] = sn;
    }
    return rc;
}

/* --- routes ------------------------------------------------------------ */

/* Route-level parse state: which settings appeared, for the checks at the end. */
typedef struct route_ctx {
    lg_route_t             *rt;
    const config_setting_t *matcher;
    const config_setting_t *action;
    const config_setting_t *body;
    const config_setting_t *location;
    const config_setting_t *rewrite;
    const config_setting_t *split;
    const config_setting_t *split_key;
    const config_setting_t *split_cookie;
    int                     matcher_ok; /* pattern valid (and compiled) */
    int                     status_ok;  /* 'return' status valid */
} route_ctx_t;

static int fn_match(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_route_t  *rt = rc->rt;
    const char  *kind = config_setting_name(s);
    const char  *v;

    if (rc->matcher != NULL)
        return ld_error(ld, s, "route has more than one of 'exact', 'prefix', 'regex' "
                        "('%s' and '%s')", config_setting_name(rc->matcher), kind);
    rc->matcher = s;
    if ((v = get_string(ld, s)) == NULL)
        return -1;
    if ((rt->pattern = ld_strdup(ld, v)) == NULL)
        return ld_oom(ld, s);
    rt->pattern_len = strlen(v);
    if (strcmp(kind, "regex") == 0) {
        regex_t *re = ld_calloc(ld, 1, sizeof(*re));
        char     msg[256];
        int      err;

        if (re == NULL)
            return ld_oom(ld, s);
        rt->match = LG_MATCH_REGEX;
        if ((err = regcomp(re, v, REG_EXTENDED)) != 0) {
            regerror(err, re, msg, sizeof(msg));
            return ld_error(ld, s, "bad regex '%s': %s", v, msg);
        }
        rt->re = re;
        rc->matcher_ok = 1;
        return 0;
    }
    rt->match = strcmp(kind, "exact") == 0 ? LG_MATCH_EXACT : LG_MATCH_PREFIX;
    if (v[0] != '/')
        return ld_error(ld, s, "'%s' must start with '/'", kind);
    rc->matcher_ok = 1;
    return 0;
}

static int route_action(ld_t *ld, route_ctx_t *rc, const config_setting_t *s)
{
    if (rc->action != NULL)
        return ld_error(ld, s, "route has both 'proxy_pass' and 'return'");
    rc->action = s;
    return 0;
}

static int fn_proxy_pass(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *v;

    if (route_action(ld, rc, s) < 0 || (v = get_string(ld, s)) == NULL)
        return -1;
    rc->rt->action = LG_ACTION_PROXY;
    if ((rc->rt->upstream = upstream_find(ld->conf, v)) == NULL)
        return ld_error(ld, s, "unknown upstream '%s' in 'proxy_pass'", v);
    return 0;
}

static int fn_return(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int64_t      v;

    if (route_action(ld, rc, s) < 0)
        return -1;
    rc->rt->action = LG_ACTION_RETURN;
    if (get_int(s, &v) < 0)
        return ld_error(ld, s, "'return' must be an integer");
    if (v < 100 || v > 599)
        return ld_error(ld, s, "'return' must be between 100 and 599");
    rc->rt->status = (int)v;
    rc->status_ok = 1;
    return 0;
}

/* body, location, rewrite: strings whose validity depends on the action. */
static int fn_route_string(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *name = config_setting_name(s), *v;
    char        *p;

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return ld_error(ld, s, "'%s' must be a string", name);
    v = config_setting_get_string(s);
    if (v[0] == '\0' && strcmp(name, "body") != 0)
        return ld_error(ld, s, "'%s' must not be empty", name);
    if ((p = ld_strdup(ld, v)) == NULL)
        return ld_oom(ld, s);
    if (strcmp(name, "split_key") == 0) {
        rc->split_key = s;
        rc->rt->split_key = p;
    } else if (strcmp(name, "split_cookie") == 0) {
        rc->split_cookie = s;
        rc->rt->split_cookie = p;
        for (const char *c = p; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
                return ld_error(ld, s, "'split_cookie' must be a cookie name (letters, digits, '_', '-')");
    } else if (strcmp(name, "body") == 0) {
        rc->body = s;
        rc->rt->body = p;
    } else if (strcmp(name, "location") == 0) {
        rc->location = s;
        rc->rt->location = p;
    } else {
        rc->rewrite = s;
        rc->rt->rewrite = p;
        if (v[0] != '/' && v[0] != '$')
            return ld_error(ld, s, "'rewrite' must start with '/' or a $1..$9 capture");
    }
    return 0;
}

static int fn_route_hosts(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_server_t  tmp = { 0 };       /* the same syntax and rules as server_name */
    int          r = fn_server_name(ld, s, &tmp);
    rc->rt->hosts = tmp.names;
    rc->rt->nhosts = tmp.nnames;
    return r;
}

static int fn_route_methods(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int          n = entry_count(ld, s, 0, "a method or a list of methods");
    if (n <= 0)
        return n;
    lg_strv_t *v = ld_calloc(ld, 1, sizeof(*v));
    if (v == NULL || (v->v = ld_calloc(ld, (size_t)n, sizeof(char *))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = entry_at(s, i);
        const char *m = get_string(ld, e);
        if (m == NULL)
            return -1;
        for (const char *c = m; *c; c++)
            if (*c < 'A' || *c > 'Z')
                return ld_error(ld, e, "method '%s' must be upper-case letters", m);
        if ((v->v[v->n++] = ld_strdup(ld, m)) == NULL)
            return ld_oom(ld, e);
    }
    rc->rt->methods = v;
    return 0;
}

/* header = "Name" | "Name: value";  query = "name" | "name=value" */
static int fn_route_pair(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int          is_header = strcmp(config_setting_name(s), "header") == 0;
    const char  *v = get_string(ld, s);
    if (v == NULL)
        return -1;
    const char *sep = strchr(v, is_header ? ':' : '=');
    size_t      nl = sep ? (size_t)(sep - v) : strlen(v);
    if (nl == 0)
        return ld_error(ld, s, "'%s' needs a name", config_setting_name(s));
    char *name = ld_calloc(ld, 1, nl + 1);
    if (name == NULL)
        return ld_oom(ld, s);
    memcpy(name, v, nl);
    char *value = NULL;
    if (sep) {
        const char *p = sep + 1;
        while (is_header && (*p == ' ' || *p == '\t'))
            p++;
        if ((value = ld_strdup(ld, p)) == NULL)
            return ld_oom(ld, s);
    }
    if (is_header) {
        for (size_t i = 0; i < nl; i++)
            if (name[i] == ' ' || name[i] == '\t')
                return ld_error(ld, s, "'header' must be \"Name\" or \"Name: value\"");
        rc->rt->header_name = name;
        rc->rt->header_value = value;
    } else {
        rc->rt->query_name = name;
        rc->rt->query_value = value;
    }
    return 0;
}

static int fn_health(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_upstream_t *up = base;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'health_check' must be a group { interval = ...; path = ...; }");
    lg_health_t *h = ld_calloc(ld, 1, sizeof(*h));
    if (h == NULL)
        return ld_oom(ld, s);
    table_unset(health_dirs, h);
    int rc = parse_block(ld, s, "health_check", health_dirs, h, NULL, NULL);
    rc |= table_defaults(ld, health_dirs, h);
    if (rc == 0) {
        int a = 0, b = 0, n = 0;
        if (sscanf(h->status, "%d-%d%n", &a, &b, &n) == 2 && h->status[n] == '\0') {
            /* a range */
        } else if (sscanf(h->status, "%d%n", &a, &n) == 1 && h->status[n] == '\0') {
            b = a;
        } else {
            a = 0;
        }
        const config_setting_t *st = config_setting_get_member(s, "status");
        if (a < 100 || b > 599 || a > b)
            return ld_error(ld, st ? st : s, "'status' must be a status or a range such as \"200-399\"");
        h->status_min = a;
        h->status_max = b;
        if (h->path[0] != '/')
            return ld_error(ld, s, "health_check 'path' must start with '/'");
    }
    up->health = h;
    return rc;
}

/* split = ( { upstream = "stable"; weight = 90; }, { upstream = "canary"; weight = 10; } ) */
static int fn_split(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_route_t  *rt = rc->rt;
    rc->split = s;
    if (!config_setting_is_list(s) || config_setting_length(s) < 2)
        return ld_error(ld, s, "'split' must be a list of at least two { upstream = ...; weight = ...; }");
    int n = config_setting_length(s);
    if ((rt->splits = ld_calloc(ld, (size_t)n, sizeof(*rt->splits))) == NULL)
        return ld_oom(ld, s);
    int err = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        lg_split_t *sp = &rt->splits[rt->nsplits++];
        const config_setting_t *u = config_setting_get_member(e, "upstream");
        const config_setting_t *w = config_setting_get_member(e, "weight");
        int64_t wv = 0;
        if (!config_setting_is_group(e) || u == NULL || w == NULL || config_setting_length(e) != 2) {
            err = ld_error(ld, e, "each split entry is { upstream = \"name\"; weight = N; }");
            continue;
        }
        const char *un = get_string(ld, u);
        if (un == NULL) {
            err = -1;
            continue;
        }
        if ((sp->upstream = upstream_find(ld->conf, un)) == NULL)
            err = ld_error(ld, u, "unknown upstream '%s' in 'split'", un);
        if (get_int(w, &wv) < 0 || wv < 1 || wv > 10000)
            err = ld_error(ld, w, "'weight' must be between 1 and 10000");
        sp->weight = (int)wv;
    }
    rt->action = LG_ACTION_PROXY;
    return err;
}

/* $1..$9 (or ${1}..${9}) in a template must name a group of the route's regex. */
static int check_captures(ld_t *ld, const route_ctx_t *rc, const config_setting_t *s,
                          const char *tmpl)
{
    const lg_route_t *rt = rc->rt;
    for (const char *p = tmpl; (p = strchr(p, '$')) != NULL; p++) {
        const char *d = p[1] == '{' ? p + 2 : p + 1;
        if (*d < '1' || *d > '9' || (p[1] == '{' && d[1] != '}'))
            continue;
        size_t want = (size_t)(*d - '0');
        if (rt->match != LG_MATCH_REGEX)
            return ld_error(ld, s, "'%s' uses $%zu but the route has no 'regex'",
                            config_setting_name(s), want);
        if (rt->re != NULL && want > rt->re->re_nsub)
            return ld_error(ld, s, "'%s' uses $%zu but the regex has %zu group(s)",
                            config_setting_name(s), want, rt->re->re_nsub);
    }
    return 0;
}

static int route_parse(ld_t *ld, const config_setting_t *g, lg_route_t *rt)
{
    route_ctx_t rc = { .rt = rt };
    int         err;

    rt->line = (int)config_setting_source_line(g);
    table_unset(common_dirs, &rt->common);
    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a route must be a group { prefix = ...; proxy_pass = ...; }");
    err = parse_block(ld, g, "route", route_dirs, &rc, common_dirs, &rt->common);

    if (rc.matcher == NULL)
        err = ld_error(ld, g, "route has none of 'exact', 'prefix', 'regex'");
    if (rc.split && rc.action)
        err = ld_error(ld, rc.split, "route has both 'split' and '%s'", config_setting_name(rc.action));
    if (rc.split)
        rc.action = rc.split;
    if (rc.action == NULL)
        err = ld_error(ld, g, "route has neither 'proxy_pass' nor 'return'");
    if ((rc.split_key || rc.split_cookie) && !rc.split)
        err = ld_error(ld, rc.split_key ? rc.split_key : rc.split_cookie,
                       "'%s' is only allowed with 'split'",
                       rc.split_key ? "split_key" : "split_cookie");
    if (rc.split && rt->split_key == NULL && (rt->split_key = ld_strdup(ld, "$remote_addr")) == NULL)
        err = ld_oom(ld, g);
    if (rc.split && rt->nsplits && rt->splits[0].upstream)
        rt->upstream = rt->splits[0].upstream;  /* for logs before the choice */
    int is_return = rc.action && rt->action == LG_ACTION_RETURN;
    int is_proxy = rc.action && rt->action == LG_ACTION_PROXY;
    if (rc.body && !is_return)
        err = ld_error(ld, rc.body, "'body' is only allowed with 'return'");
    if (rc.location && (is_proxy || (rc.status_ok && (rt->status < 300 || rt->status > 399))))
        err = ld_error(ld, rc.location, "'location' is only allowed with a 3xx 'return'");
    if (rc.rewrite && !is_proxy)
        err = ld_error(ld, rc.rewrite, "'rewrite' is only allowed with 'proxy_pass'");
    if (rc.matcher_ok) {
        if (rc.rewrite && check_captures(ld, &rc, rc.rewrite, rt->rewrite) < 0)
            err = -1;
        if (rc.location && check_captures(ld, &rc, rc.location, rt->location) < 0)
            err = -1;
    }
    return err;
}

static int fn_routes(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    int          n, rc = 0;

    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'routes' must be a list ( { ... }, { ... } )");
    if ((n = config_setting_length(s)) == 0)
        return 0;
    if ((srv->routes = ld_calloc(ld, (size_t)n, sizeof(*srv->routes))) == NULL)
        return ld_oom(ld, s);
    srv->nroutes = (size_t)n;
    for (int i = 0; i < n; i++)
        rc |= route_parse(ld, config_setting_get_elem(s, (unsigned)i), &srv->routes[i]);
    return rc;
}

static int server_parse(ld_t *ld, const config_setting_t *g, lg_server_t *srv)
{
    int rc;

    srv->line = (int)config_setting_source_line(g);
    table_unset(common_dirs, &srv->common);
    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a server must be a group { listen = ...; routes = (...); }");
    table_unset(tls_dirs, &srv->tls);
    srv->tls.line = srv->line;
    rc = parse_block3(ld, g, "server", server_dirs, srv, common_dirs, &srv->common,
                      tls_dirs, &srv->tls);
    rc |= table_defaults(ld, tls_dirs, &srv->tls);
    if (srv->tls.verify_client && strcmp(srv->tls.verify_client, "off") != 0 &&
        strcmp(srv->tls.verify_client, "on") != 0 && strcmp(srv->tls.verify_client, "optional") != 0)
        rc = ld_error(ld, config_setting_get_member(g, "tls_verify_client"),
                      "'tls_verify_client' must be \"off\", \"on\" or \"optional\"");
    else if (srv->tls.verify_client && strcmp(srv->tls.verify_client, "off") != 0 &&
             srv->tls.client_ca == NULL)
        rc = ld_error(ld, config_setting_get_member(g, "tls_verify_client"),
                      "'tls_verify_client' needs 'tls_client_ca'");
    const config_setting_t *l = config_setting_get_member(g, "listen");
    if (l == NULL || is_empty_list(l))
        rc = ld_error(ld, g, "server has no 'listen'");
    return rc;
}

/* http.servers is only remembered here: it is parsed once the upstreams are. */
static int fn_servers(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    ld->servers = s;
    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'servers' must be a list ( { ... }, { ... } )");
    return 0;
}

static int servers_parse(ld_t *ld, const config_setting_t *s)
{
    lg_conf_t *conf = ld->conf;
    int        n = config_setting_length(s), rc = 0;

    if (n == 0)
        return 0;
    if ((conf->servers = ld_calloc(ld, (size_t)n, sizeof(*conf->servers))) == NULL)
        return ld_oom(ld, s);
    conf->nservers = (size_t)n;
    for (int i = 0; i < n; i++) {
        conf->servers[i].index = i;
        rc |= server_parse(ld, config_setting_get_elem(s, (unsigned)i), &conf->servers[i]);
    }
    return rc;
}

static int fn_http(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_conf_t *conf = base;
    int        rc;

    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'http' must be a group { servers = (...); }");
    rc = parse_block(ld, s, "http", http_dirs, conf, common_dirs, &conf->http);
    if (ld->servers != NULL && config_setting_is_list(ld->servers))
        rc |= servers_parse(ld, ld->servers);
    return rc;
}

/* --- binds ------------------------------------------------------------- */

static int addr_equal(const lg_addr_t *a, const lg_addr_t *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return 0;
    switch (a->ss.ss_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id
            && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return strcmp(x->sun_path, y->sun_path) == 0;
    }
    }
    return 0;
}

/* The setting of servers[i].listens[j]: entries and slots correspond one to one. */
static const config_setting_t *listen_setting(ld_t *ld, size_t i, size_t j)
{
    const config_setting_t *g = config_setting_get_elem(ld->servers, (unsigned)i);
    const config_setting_t *l = g ? config_setting_get_member(g, "listen") : NULL;
    return l ? entry_at(l, (int)j) : NULL;
}

/*
 * One lg_bind_t per distinct sockaddr (two spellings of one address are one
 * bind), in order of first appearance, listing its servers in config order.
 * The bind's backlog is the largest asked for.
 */
static int derive_binds(ld_t *ld, const config_setting_t *where)
{
    lg_conf_t               *conf = ld->conf;
    size_t                   total = 0;
    int                      rc = 0;
    const config_setting_t **dflt;      /* per bind: the listen that made it default */

    for (size_t i = 0; i < conf->nservers; i++)
        total += conf->servers[i].nlistens;
    if (total == 0)
        return 0;
    conf->binds = ld_calloc(ld, total, sizeof(*conf->binds));
    dflt = ld_calloc(ld, total, sizeof(*dflt));
    if (conf->binds == NULL || dflt == NULL)
        return ld_oom(ld, where);

    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        for (size_t j = 0; j < srv->nlistens; j++) {
            const lg_listen_t *l = &srv->listens[j];
            lg_bind_t         *b = NULL;
            size_t             k;

            if (l->addr.len == 0)
                continue;   /* bad address, already reported */
            for (k = 0; k < j && !addr_equal(&srv->listens[k].addr, &l->addr); k++)
                ;
            if (k < j) {
                rc = ld_error(ld, listen_setting(ld, i, j), "duplicate listen address %s "
                              "in one server (also at line %d)", l->addr.text,
                              srv->listens[k].line);
                continue;
            }
            for (k = 0; k < conf->nbinds; k++)
                if (addr_equal(&conf->binds[k].addr, &l->addr))
                    break;
            b = &conf->binds[k];
            if (k == conf->nbinds) {
                conf->nbinds++;
                b->addr = l->addr;
                b->backlog = l->backlog;
                b->tls = l->tls;
                b->socks = l->protocol && strcmp(l->protocol, "socks5") == 0;
                if ((b->servers = ld_calloc(ld, conf->nservers, sizeof(*b->servers))) == NULL)
                    return ld_oom(ld, where);
            }
            if (l->backlog > b->backlog)
                b->backlog = l->backlog;
            if (l->tls != b->tls)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is listed with tls = %s here "
                              "and tls = %s in another server", l->addr.text,
                              l->tls ? "true" : "false", b->tls ? "true" : "false");
            if (l->protocol && strcmp(l->protocol, "http") != 0 && strcmp(l->protocol, "socks5") != 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "'protocol' must be \"http\" or \"socks5\"");
            else if ((l->protocol && strcmp(l->protocol, "socks5") == 0) != b->socks)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is socks5 in one server and not in "
                              "another", l->addr.text);
            else if (b->socks && srv->forward == NULL)
                rc = ld_error(ld, listen_setting(ld, i, j), "a socks5 listener needs the server's "
                              "'forward' settings");
            else if (b->socks && l->tls)
                rc = ld_error(ld, listen_setting(ld, i, j), "socks5 with tls is not supported");
            if (l->tls && srv->tls.ncerts == 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "tls = true on %s but the server has "
                              "no 'tls_certificates'", l->addr.text);
            b->servers[b->nservers++] = srv;
            if (l->is_default == 1) {
                const config_setting_t *ls = listen_setting(ld, i, j);
                if (dflt[k] != NULL) {
                    rc = ld_error(ld, ls, "two default servers for %s (the other at %s:%u)",
                                  l->addr.text,
                                  ld_file_name(ld, config_setting_source_file(dflt[k])),
                                  config_setting_source_line(dflt[k]));
                } else {
                    dflt[k] = ls;
                    b->default_server = srv;
                }
            }
        }
    }
    for (size_t k = 0; k < conf->nbinds; k++)
        if (conf->binds[k].default_server == NULL)
            conf->binds[k].default_server = conf->binds[k].servers[0];
    return rc;
}

/* --- merge ------------------------------------------------------------- */

static void merge_common(lg_common_t *child, const lg_common_t *parent)
{
    for (const directive_t *d = common_dirs; d->name; d++) {
        if (!field_is_unset(d, child))
            continue;
        switch (field_kind(d->type)) {
        case K_INT:
            *(int *)FIELD(d, child) = *(const int *)((const char *)parent + d->off);
            break;
        case K_INT64:
            *(int64_t *)FIELD(d, child) = *(const int64_t *)((const char *)parent + d->off);
            break;
        default:
            *(void **)FIELD(d, child) = *(void *const *)((const char *)parent + d->off);
            break;
        }
    }
}

/* --- load / free ------------------------------------------------------- */

/* Parse the tree libconfig read, derive the binds, fill defaults and merge. */
static void load_tree(ld_t *ld, const config_t *cfg)
{
    lg_conf_t              *conf = ld->conf;
    const config_setting_t *root = config_root_setting(cfg);
    const config_setting_t *http;

    table_unset(global_dirs, conf);
    table_unset(common_dirs, &conf->http);
    parse_block(ld, root, "global", global_dirs, conf, NULL, NULL);

    /* (an 'http' or 'servers' of the wrong type has been reported already) */
    http = config_setting_get_member(root, "http");
    if (http == NULL)
        ld_error_at(ld, ld->file, 1, "no servers defined");
    else if (conf->nservers == 0 && config_setting_is_group(http)
             && (ld->servers == NULL || config_setting_is_list(ld->servers)))
        ld_error(ld, ld->servers ? ld->servers : http, "no servers defined");
    derive_binds(ld, root);

    table_defaults(ld, global_dirs, conf);
    table_defaults(ld, common_dirs, &conf->http);
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        merge_common(&srv->common, &conf->http);
        for (size_t j = 0; j < srv->nroutes; j++)
            merge_common(&srv->routes[j].common, &srv->common);
    }
}

static char *dir_of(lg_arena_t *a, const char *file)
{
    const char *slash = strrchr(file, '/');
    if (slash == NULL)
        return NULL;
    if (slash == file)
        return lg_arena_strdup(a, "/");
    return lg_arena_strndup(a, file, (size_t)(slash - file));
}

lg_conf_t *lg_conf_load(const char *file, const char *prefix, char *err, size_t errlen)
{
    ld_t       ld = { .file = file, .err = err, .errlen = errlen };
    config_t   cfg;
    lg_conf_t *conf;
    size_t     n;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if ((conf = calloc(1, sizeof(*conf))) == NULL) {
        ld_error_at(&ld, file, 0, "out of memory");
        return NULL;
    }
    ld.conf = conf;
    lg_arena_init(&conf->arena, 16384, 0);

    if (prefix == NULL)
        prefix = "";
    for (n = strlen(prefix); n > 0 && prefix[n - 1] == '/'; n--)
        ;
    ld.has_prefix = prefix[0] != '\0';
    conf->prefix = lg_arena_strndup(&conf->arena, prefix, n);
    /* absolute, so that a reload after the master's chdir("/") finds it */
    if (file[0] == '/') {
        conf->file = lg_arena_strdup(&conf->arena, file);
    } else {
        char cwd[4096];
        conf->file = getcwd(cwd, sizeof(cwd)) ? lg_arena_printf(&conf->arena, "%s/%s", cwd, file)
                                              : lg_arena_strdup(&conf->arena, file);
    }
    ld.incdir = dir_of(&conf->arena, file);
    if (conf->prefix == NULL || conf->file == NULL) {
        ld_error_at(&ld, file, 0, "out of memory");
        lg_conf_free(conf);
        return NULL;
    }

    config_init(&cfg);
    if (ld.incdir != NULL)
        config_set_include_dir(&cfg, ld.incdir);
    errno = 0;
    if (config_read_file(&cfg, file) != CONFIG_TRUE) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            ld_error_at(&ld, file, 0, "cannot read configuration file: %s",
                        errno ? strerror(errno) : "I/O error");
        else
            ld_error_at(&ld, ld_file_name(&ld, config_error_file(&cfg)),
                        config_error_line(&cfg), "%s", config_error_text(&cfg));
        goto done;
    }

    load_tree(&ld, &cfg);
done:
    config_destroy(&cfg);
    if (ld.nerr > 0) {
        lg_conf_free(conf);
        return NULL;
    }
    return conf;
}

void lg_conf_free(lg_conf_t *conf)
{
    if (conf == NULL)
        return;
    if (conf->on_free)
        conf->on_free(conf);
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        for (size_t j = 0; j < srv->nnames; j++)
            if (srv->names[j].re != NULL)
                regfree(srv->names[j].re);
        for (size_t j = 0; j < srv->nroutes; j++) {
            if (srv->routes[j].re != NULL)
                regfree(srv->routes[j].re);
            for (size_t k = 0; k < srv->routes[j].nhosts; k++)
                if (srv->routes[j].hosts[k].re != NULL)
                    regfree(srv->routes[j].hosts[k].re);
        }
    }
    for (size_t i = 0; i < conf->nupstreams; i++)
        free(conf->upstreams[i].maglev);     /* built by the proxy layer */
    for (size_t i = 0; i < conf->nservers; i++)
        if (conf->servers[i].forward && conf->servers[i].forward->rt_free)
            conf->servers[i].forward->rt_free(conf->servers[i].forward->rt);
    lg_arena_destroy(&conf->arena);
    free(conf);
}

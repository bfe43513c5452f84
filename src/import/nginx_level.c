/*
 * legate --import-nginx: the settings of one level (http, server or
 * location).  Scalars are written at the level nginx has them, since legate
 * inherits the same way (http -> server -> route).  The array-like
 * directives nginx does not merge across levels (proxy_set_header,
 * add_header, allow/deny, limit_req, limit_conn) are resolved per location
 * the way nginx does -- the innermost level that has any wins -- and written
 * on each route.
 */
#include "import/nginx_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <grp.h>
#include <regex.h>
#include <strings.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "net/htpasswd.h"
#include "pipeline/vars.h"

/* ---------------------------------------------------------------- scalars */

/* common settings that are the same in nginx and legate: duration, size or integer */
static const struct { const char *ngx, *lg; char kind; } simple[] = {
    { "client_header_timeout", "client_header_timeout", 't' },
    { "client_body_timeout",   "client_body_timeout",   't' },
    { "send_timeout",          "send_timeout",          't' },
    { "keepalive_timeout",     "keepalive_timeout",     't' },
    { "keepalive_requests",    "keepalive_requests",    'i' },
    { "proxy_connect_timeout", "proxy_connect_timeout", 't' },
    { "proxy_send_timeout",    "proxy_send_timeout",    't' },
    { "proxy_read_timeout",    "proxy_read_timeout",    't' },
    { "client_max_body_size",  "client_max_body_size",  's' },
    { "gzip_min_length",       "gzip_min_length",       's' },
    { "gzip_comp_level",       "gzip_level",            'i' },
    { "limit_rate",            "limit_rate",            's' },
    { "limit_rate_after",      "limit_rate_after",      's' },
    { "limit_req_status",      "limit_req_status",      'i' },
    { "limit_conn_status",     "limit_conn_status",     'i' },
    { "proxy_cache_min_uses",  "cache_min_uses",        'i' },
    { "proxy_cache_lock_timeout", "cache_lock_timeout", 't' },
    { "websocket_idle_timeout", "websocket_idle_timeout", 't' },
    { "proxy_max_temp_file_size", "proxy_max_temp_file_size", 's' },
};

static const struct { const char *name, *why; } ignored[] = {
    { "sendfile",            "legate's file routes use sendfile(2) by themselves" },
    { "tcp_nopush",          "legate sets its own socket options" },
    { "tcp_nodelay",         "legate sets TCP_NODELAY itself" },
    { "types_hash_max_size", "no MIME types table in legate" },
    { "types_hash_bucket_size", "no MIME types table in legate" },
    { "server_names_hash_bucket_size", "legate sizes its tables itself" },
    { "server_names_hash_max_size", "legate sizes its tables itself" },
    { "types",               "legate's file routes take their types from /etc/mime.types" },
    { "autoindex",           "legate lists no directories (403, as autoindex off)" },
    { "expires",             "not in legate: set Cache-Control with add_header at the origin" },
    { "server_tokens",       "legate's Server header is not configurable" },
    { "proxy_http_version",  "legate always speaks HTTP/1.1 to upstreams" },
    { "proxy_buffer_size",   "legate reads a response head into a fixed 32 KiB buffer" },
    { "proxy_busy_buffers_size", "legate's proxy_buffers_size covers it" },
    { "client_header_buffer_size", "legate's header limits are fixed (431)" },
    { "large_client_header_buffers", "legate's header limits are fixed (431)" },
    { "gzip_vary",           "legate always sends Vary: Accept-Encoding with a coding" },
    { "gzip_proxied",        "legate compresses proxied answers by gzip_types" },
    { "gzip_buffers",        "legate's codec buffers are fixed" },
    { "gzip_http_version",   "not in legate" },
    { "gzip_disable",        "not in legate" },
    { "ssl_prefer_server_ciphers", "legate prefers the server's order" },
    { "ssl_session_cache",   "legate shares sessions itself (tls_session_cache, global)" },
    { "ssl_dhparam",         "legate uses ECDHE and the built-in groups" },
    { "ssl_ecdh_curve",      "legate uses OpenSSL's default groups" },
    { "ssl_stapling",        "legate staples a response file (tls_ocsp_response)" },
    { "ssl_stapling_verify", "legate staples a response file (tls_ocsp_response)" },
    { "ssl_trusted_certificate", "not needed for legate's stapling of a file" },
    { "ssl_buffer_size",     "not in legate" },
    { "ssl_early_data",      "legate does not accept TLS early data" },
    { "resolver",            "legate's resolvers are an upstream's, for its "
                             "server ... resolve (none here)" },
    { "resolver_timeout",    "legate's lookups of resolve time out by themselves" },
    { "http3",               "legate serves HTTP/3 on every listen with quic" },
    { "http3_hq",            "not in legate" },
    { "http3_max_concurrent_streams", "legate's HTTP/3 limits are its own" },
    { "http3_stream_buffer_size", "legate's HTTP/3 limits are its own" },
    { "quic_retry",          "legate's QUIC settings are global (quic_*)" },
    { "quic_gso",            "legate's QUIC settings are global (quic_*)" },
    { "quic_host_key",       "legate's QUIC settings are global (quic_*)" },
    { "quic_active_connection_id_limit", "legate's QUIC settings are global (quic_*)" },
    { "quic_bpf",            "legate steers QUIC by connection ID by default (quic_steering)" },
    { "reset_timedout_connection", "legate resets timed-out connections" },
    { "lingering_close",     "legate always lingers" },
    { "lingering_timeout",   "legate's lingering close is fixed" },
    { "log_not_found",       "legate logs a missing file as any 404" },
    { "open_file_cache",     "legate opens each file for its request" },
    { "charset",             "not in legate" },
    { "proxy_cache_revalidate", "legate always revalidates with ETag/Last-Modified" },
    { "proxy_cache_lock",    "legate always collapses concurrent misses" },
    { "proxy_cache_background_update", "legate refreshes in the background by Cache-Control" },
    { "proxy_cache_methods", "legate caches GET and HEAD" },
    { "proxy_ssl_session_reuse", "legate resumes upstream TLS sessions" },
    { "proxy_pass_header",   "not in legate" },
    { "real_ip_recursive",   "legate walks real_ip_header from the right past trusted addresses" },
    { "underscores_in_headers", "not in legate" },
    { "ignore_invalid_headers", "legate refuses invalid headers (400)" },
    { "http2_max_concurrent_streams", "legate's is one for all servers: the http level's is "
                                      "translated" },
    { "map_hash_bucket_size", "no maps in legate" },
    { "variables_hash_max_size", "legate's variables are fixed" },
    { "variables_hash_bucket_size", "legate's variables are fixed" },
    { "client_body_temp_path", "legate's temporary files go to proxy_temp_path, a global "
                               "setting: give it by hand" },
    { "proxy_temp_path",     "legate's is a global setting (one directory, no levels): give "
                             "it by hand" },
    { "fastcgi_temp_path",   "legate speaks HTTP only" },
    { "uwsgi_temp_path",     "legate speaks HTTP only" },
    { "scgi_temp_path",      "legate speaks HTTP only" },
};

const char *nginx_level_ignored(const char *name)
{
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        if (strcmp(ignored[i].name, name) == 0)
            return ignored[i].why;
    return NULL;
}

/* the directives handled at a level: the rest are reported as not translated */
static const char *const handled_common[] = {
    "proxy_set_header", "add_header", "allow", "deny", "limit_req", "limit_conn",
    "gzip", "gzip_types", "access_log", "auth_basic", "auth_basic_user_file", "satisfy",
    "proxy_cache", "proxy_cache_valid", "proxy_cache_key", "proxy_cache_bypass",
    "proxy_no_cache", "proxy_ignore_headers", "proxy_hide_header", "proxy_next_upstream",
    "proxy_next_upstream_tries", "proxy_next_upstream_timeout", "auth_request",
    "set_real_ip_from", "real_ip_header", "ssl_certificate", "ssl_certificate_key",
    "ssl_protocols", "ssl_ciphers", "ssl_client_certificate", "ssl_verify_client",
    "ssl_verify_depth", "ssl_session_timeout", "ssl_session_tickets", "ssl_stapling_file",
    "log_format", "limit_req_zone", "limit_conn_zone", "upstream", "server", "location",
    "proxy_cache_path", "map", "split_clients", "listen", "server_name", "proxy_pass",
    "return", "rewrite", "include", "http2", "error_page", "proxy_intercept_errors",
    "proxy_redirect", "default_type", "limit_req_dry_run", "limit_conn_dry_run",
    "auth_request_set", "proxy_cache_use_stale", "max_ranges", "set", "root", "alias",
    "index", "try_files", "proxy_buffering", "proxy_request_buffering", "proxy_buffers",
    "client_body_buffer_size",
    NULL,
};

int nginx_level_handled(const char *name)
{
    for (size_t i = 0; handled_common[i]; i++)
        if (strcmp(handled_common[i], name) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
        if (strcmp(simple[i].ngx, name) == 0)
            return 1;
    return 0;
}

/* The innermost level that has any of the names; nginx's array inheritance. */
const level_t *nginx_level_array(const level_t *lv, const char *const *names)
{
    for (; lv; lv = lv->up)
        for (const ngx_dir_t *d = lv->block; d; d = d->next)
            for (size_t i = 0; names[i]; i++)
                if (imp_is(d, names[i]))
                    return lv;
    return NULL;
}

/* ---------------------------------------------------------------- error pages, redirects */

/* The root that serves URI in this server: the location "= URI" (or the
 * prefix location equal to it) with a root, else the level's, the server's
 * or http's root.  NULL if none. */
static const char *root_for(imp_t *im, const ngx_dir_t *block, const char *uri)
{
    for (const ngx_dir_t *d = im->server ? im->server->block : NULL; d; d = d->next) {
        if (!imp_is(d, "location") || !d->has_block)
            continue;
        const char *p = d->nargs == 3 && strcmp(d->args[1], "=") == 0 ? d->args[2]
                      : d->nargs == 2 ? d->args[1] : NULL;
        const ngx_dir_t *r = p && strcmp(p, uri) == 0 ? imp_child(d->block, "root") : NULL;
        if (r && r->nargs == 2)
            return r->args[1];
    }
    const ngx_dir_t *levels[] = { block, im->server ? im->server->block : NULL,
                                  im->http ? im->http->block : NULL };
    for (size_t i = 0; i < 3; i++) {
        const ngx_dir_t *r = levels[i] ? imp_child(levels[i], "root") : NULL;
        if (r && r->nargs == 2)
            return r->args[1];
    }
    return NULL;
}

/* The server being translated has "location @nm" (written as a route named nm). */
static int named_location(const imp_t *im, const char *nm)
{
    if (im->server == NULL || nm[0] == '\0' || strlen(nm) >= 64 ||
        strspn(nm, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(nm))
        return 0;
    for (const ngx_dir_t *d = im->server->block; d; d = d->next)
        if (imp_is(d, "location") && d->has_block && d->nargs == 2 && d->args[1][0] == '@' &&
            strcmp(d->args[1] + 1, nm) == 0)
            return 1;
    return 0;
}

/* error_page CODE ... [=[CODE]] URI -> error_pages = [ "CODE ... [=CODE] FILE" ]:
 * the file the URI names under its root (legate reads it when it loads);
 * error_page CODE ... [=[CODE]] @name -> "CODE ... [=[CODE]] @name", the
 * named location's route. */
static void emit_error_pages(imp_t *im, sb_t *b, int n, const ngx_dir_t *block)
{
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!imp_is(d, "error_page"))
            continue;
        if (d->nargs < 3) {
            imp_report(im, d, "takes statuses and a URI: left out");
            continue;
        }
        const char *uri = d->args[d->nargs - 1];
        int last = d->nargs - 1;
        const char *over = NULL;        /* "=CODE" or "=" as legate writes it */
        if (d->args[last - 1][0] == '=') {
            char *end;
            const char *eq = d->args[last - 1];
            long c = eq[1] ? strtol(eq + 1, &end, 10) : 0;
            if (eq[1] && (*end || c < 200 || c > 599)) {
                imp_report(im, d, "%s: legate's status override is 200 to 599: left out", eq);
                continue;
            }
            /* "=" alone: the status of what answers, a file's 200 */
            over = eq[1] ? eq : uri[0] == '@' ? "=" : "=200";
            last--;
        }
        if (last < 2) {
            imp_report(im, d, "takes statuses and a URI: left out");
            continue;
        }
        if (uri[0] == '@' && !named_location(im, uri + 1)) {
            imp_report(im, d, "no named location %s in this server: left out", uri);
            continue;
        }
        if (uri[0] != '/' && uri[0] != '@') {
            imp_report(im, d, "a redirect to \"%s\" is not in legate's error_pages (files and "
                              "named routes only): left out", uri);
            continue;
        }
        if (uri[0] == '/' && strpbrk(uri, "$?")) {
            imp_report(im, d, "a URI with variables or arguments is not a file: left out");
            continue;
        }
        sb_t codes = { 0 };
        imp_sb_add(&codes, "", 0);
        int bad = 0;
        for (int i = 1; i < last && !bad; i++) {
            char *end;
            long c = strtol(d->args[i], &end, 10);
            if (*end || c < 300 || c > 599)
                bad = 1;
            else
                imp_sb_printf(&codes, "%s%ld", codes.n ? " " : "", c);
        }
        if (bad) {
            imp_report(im, d, "statuses are 300 to 599: left out");
            free(codes.p);
            continue;
        }
        if (over)
            imp_sb_printf(&codes, " %s", over);
        if (uri[0] == '@') {
            imp_sb_printf(&codes, " %s", uri);
            goto emit;
        }
        const char *root = root_for(im, block, uri);
        if (root == NULL) {
            imp_report(im, d, "no root serves \"%s\": left out", uri);
            free(codes.p);
            continue;
        }
        char rel[PATH_MAX], path[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s%s%s", root,
                 root[0] && root[strlen(root) - 1] == '/' ? "" : "", uri);
        if (!imp_file_readable(im, d, rel, path, sizeof(path))) {
            free(codes.p);
            continue;
        }
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 256 * 1024) {
            imp_report(im, d, "\"%s\" is not a file of at most 256k: left out", path);
            free(codes.p);
            continue;
        }
        imp_sb_printf(&codes, " %s", path);
    emit:
        if (first) {
            imp_ind(b, n);
            imp_sb_str(b, "error_pages = [ ");
        } else
            imp_sb_str(b, ", ");
        imp_sb_quote(b, codes.p);
        free(codes.p);
        first = 0;
    }
    if (!first)
        imp_sb_str(b, " ];\n");
}

/* proxy_redirect off | default | FROM TO -> proxy_redirect (literal URLs) */
static void emit_proxy_redirect(imp_t *im, sb_t *b, int n, const ngx_dir_t *block)
{
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!imp_is(d, "proxy_redirect"))
            continue;
        char rule[2048];
        if (d->nargs == 2 && (strcmp(d->args[1], "off") == 0 || strcmp(d->args[1], "default") == 0))
            snprintf(rule, sizeof(rule), "%s", d->args[1]);
        else if (d->nargs == 3 && d->args[1][0] != '~' && !strchr(d->args[1], '$') &&
                 !strchr(d->args[2], '$') && !strchr(d->args[1], ' ') && !strchr(d->args[2], ' ')) {
            snprintf(rule, sizeof(rule), "%s %s", d->args[1], d->args[2]);
            if (d->args[2][0] == '/')
                imp_report(im, d, "nginx makes a relative Location absolute (the client's Host and "
                                  "port, absolute_redirect); legate sends \"%s...\" as it is",
                           d->args[2]);
        }
        else {
            imp_report(im, d, "a regex or variables: legate's rules are literal URL prefixes; left out");
            continue;
        }
        if (first) {
            imp_ind(b, n);
            imp_sb_str(b, "proxy_redirect = [ ");
        } else
            imp_sb_str(b, ", ");
        imp_sb_quote(b, rule);
        first = 0;
    }
    if (!first)
        imp_sb_str(b, " ];\n");
}

/* a syslog: target of nginx as legate's: server=, facility=, tag= kept
 * (severity=, nohostname left with a remark); NULL if legate cannot send to
 * it (a host name: legate takes an address) */
char *nginx_level_syslog(imp_t *im, const ngx_dir_t *d, const char *target)
{
    sb_t t = { 0 };
    imp_sb_str(&t, "syslog:");
    char *copy = strdup(target + 7);
    if (copy == NULL)
        abort();
    int have_server = 0, ok = 1;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (strncmp(p, "server=", 7) == 0) {
            const char *a = p + 7;
            if (strncmp(a, "unix:", 5) != 0) {
                char host[256];
                snprintf(host, sizeof(host), "%s", a[0] == '[' ? a + 1 : a);
                char *end = a[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
                if (end && (a[0] == '[' || strchr(host, ':') == end))
                    *end = '\0';
                unsigned char buf[16];
                if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1) {
                    imp_report(im, d, "syslog server \"%s\": legate takes an IP address or unix:path; "
                                      "left out", a);
                    ok = 0;
                    break;
                }
            }
            have_server = 1;
            imp_sb_printf(&t, "%s%s", t.n > 7 ? "," : "", p);
        } else if (strncmp(p, "facility=", 9) == 0 || strncmp(p, "tag=", 4) == 0)
            imp_sb_printf(&t, "%s%s", t.n > 7 ? "," : "", p);
        else
            imp_report(im, d, "syslog \"%s\" is not in legate: ignored", p);
    }
    free(copy);
    if (ok && !have_server) {
        imp_report(im, d, "a syslog target needs server=: left out");
        ok = 0;
    }
    if (!ok) {
        free(t.p);
        return NULL;
    }
    return t.p;
}

/* The settings of one level that legate inherits the same way. */
/* nginx refuses most directives given twice at one level; legate's libconfig
 * would too: the first is kept */
static int repeated(imp_t *im, const ngx_dir_t *block, const ngx_dir_t *d)
{
    static const char *const many[] = { "proxy_cache_valid", "access_log", "add_header",
        "proxy_set_header", "allow", "deny", "limit_req", "limit_conn", "proxy_hide_header",
        "proxy_ignore_headers", "log_format", "ssl_certificate", "ssl_certificate_key", "listen",
        "server_name", "location", "rewrite", "include", "server", "error_page", "upstream",
        "limit_req_zone", "limit_conn_zone", "proxy_cache_path", "map", "split_clients", "geo",
        "set_real_ip_from", "auth_request_set", "set", "if",
        "proxy_redirect", NULL };
    for (size_t i = 0; many[i]; i++)
        if (imp_is(d, many[i]))
            return 0;
    for (const ngx_dir_t *e = block; e && e != d; e = e->next)
        if (strcmp(e->args[0], d->args[0]) == 0) {
            imp_report(im, d, "given twice at this level (nginx refuses it): the first, at line %d, "
                              "is kept", e->line);
            return 1;
        }
    return 0;
}

void nginx_level_scalars(imp_t *im, sb_t *b, int n, const ngx_dir_t *block, int is_location)
{
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (repeated(im, block, d))
            continue;
        for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
            if (!imp_is(d, simple[i].ngx))
                continue;
            if (d->nargs < 2) {
                imp_report(im, d, "needs a value: left out");
                break;
            }
            if (d->nargs > 2 && strcmp(simple[i].ngx, "keepalive_timeout") == 0)
                imp_report(im, d, "the second value (Keep-Alive: timeout=) is not sent by legate");
            long long v = simple[i].kind == 't' ? imp_time_ms(d->args[1])
                        : simple[i].kind == 's' ? imp_size(d->args[1])
                                                : (strtoll(d->args[1], NULL, 10));
            if (v < 0 || (simple[i].kind == 'i' && !isdigit((unsigned char)d->args[1][0]))) {
                imp_report(im, d, "cannot read \"%s\": left out", d->args[1]);
                break;
            }
            if (simple[i].kind == 't' && v == 0 && strcmp(simple[i].lg, "keepalive_timeout") != 0) {
                imp_report(im, d, "0 is not a timeout in legate: left out");
                break;
            }
            imp_ind(b, n);
            imp_sb_printf(b, "%s = ", simple[i].lg);
            if (simple[i].kind == 't')
                imp_sb_duration(b, v);
            else
                imp_sb_printf(b, "%lld", v);
            imp_sb_str(b, ";\n");
            break;
        }
        if ((imp_is(d, "limit_req_dry_run") || imp_is(d, "limit_conn_dry_run")) && d->nargs == 2) {
            imp_ind(b, n);
            imp_sb_printf(b, "%s = %s;\n", d->args[0], strcmp(d->args[1], "on") == 0 ? "true"
                                                                                   : "false");
        } else if ((imp_is(d, "proxy_buffering") || imp_is(d, "proxy_request_buffering")) &&
                   d->nargs == 2) {
            imp_ind(b, n);
            imp_sb_printf(b, "%s = %s;\n", d->args[0], strcmp(d->args[1], "on") == 0 ? "true"
                                                                                   : "false");
        } else if ((imp_is(d, "proxy_buffers") && d->nargs == 3) ||
                   (imp_is(d, "client_body_buffer_size") && d->nargs == 2)) {
            /* proxy_buffers N SIZE: legate's spool takes their sum */
            int many = imp_is(d, "proxy_buffers");
            char *end = NULL;
            long long k = many ? strtoll(d->args[1], &end, 10) : 1;
            long long sz = imp_size(d->args[many ? 2 : 1]);
            if ((many && (*end || end == d->args[1] || k < 1 || k > 1024)) || sz < 0) {
                imp_report(im, d, "cannot read it: left out");
                continue;
            }
            long long v = k * sz;
            if (v < 4096) {
                imp_report(im, d, "legate's smallest is 4k: 4k");
                v = 4096;
            } else if (v > (1LL << 30)) {
                imp_report(im, d, "legate's largest is 1g: 1g");
                v = 1LL << 30;
            }
            imp_ind(b, n);
            imp_sb_printf(b, "%s = %lld;\n", many ? "proxy_buffers_size" : "client_body_buffer_size",
                          v);
        } else if (imp_is(d, "gzip") && d->nargs == 2) {
            imp_ind(b, n);
            imp_sb_printf(b, "gzip = %s;\n", strcmp(d->args[1], "on") == 0 ? "true" : "false");
        } else if (imp_is(d, "gzip_types") && d->nargs >= 2) {
            imp_ind(b, n);
            imp_sb_str(b, "gzip_types = [ \"text/html\"");
            for (int i = 1; i < d->nargs; i++)
                if (strcmp(d->args[i], "text/html") != 0) {
                    imp_sb_str(b, ", ");
                    imp_sb_quote(b, d->args[i]);
                }
            imp_sb_str(b, " ];\n");
        } else if (imp_is(d, "satisfy") && d->nargs == 2) {
            imp_kv_quoted(b, n, "satisfy", d->args[1]);
        } else if (imp_is(d, "proxy_cache") && d->nargs == 2) {
            int on = strcmp(d->args[1], "off") != 0;
            if (on && im->cache_size_mb == 0) {
                imp_report(im, d, "no proxy_cache_path before it: left out");
                continue;
            }
            imp_ind(b, n);
            imp_sb_printf(b, "cache = %s;\n", on ? "true" : "false");
        } else if (imp_is(d, "proxy_cache_valid") && d->nargs >= 2) {
            /* handled with the others of the level below */
        } else if ((imp_is(d, "proxy_cache_key") || imp_is(d, "proxy_cache_bypass") ||
                    imp_is(d, "proxy_no_cache")) && d->nargs >= 2) {
            if (d->nargs > 2 && !imp_is(d, "proxy_cache_key")) {
                imp_report(im, d, "several conditions: legate takes one template; left out");
                continue;
            }
            const char *why = NULL;
            char *t = imp_template(d->args[1], &why);
            if (t == NULL) {
                imp_report(im, d, "%s: left out", why);
                continue;
            }
            imp_kv_quoted(b, n, imp_is(d, "proxy_cache_key") ? "cache_key" :
                                imp_is(d, "proxy_cache_bypass") ? "cache_bypass" : "cache_no_store", t);
            free(t);
        } else if (imp_is(d, "proxy_ignore_headers") && d->nargs >= 2) {
            imp_ind(b, n);
            imp_sb_str(b, "cache_ignore_headers = [ ");
            for (int i = 1; i < d->nargs; i++) {
                if (i > 1)
                    imp_sb_str(b, ", ");
                imp_sb_quote(b, d->args[i]);
            }
            imp_sb_str(b, " ];\n");
        } else if (imp_is(d, "proxy_hide_header") && d->nargs == 2) {
            imp_kv_quoted(b, n, "remove_response_headers", d->args[1]);
        } else if (imp_is(d, "proxy_intercept_errors") && d->nargs == 2) {
            imp_ind(b, n);
            imp_sb_printf(b, "intercept_errors = %s;\n", strcmp(d->args[1], "on") == 0 ? "true"
                                                                                      : "false");
        } else if (imp_is(d, "proxy_cache_use_stale") && d->nargs >= 2) {
            /* the same words in legate; none of nginx's is unknown to it, but a
             * future one would fail legate -t, so only these pass */
            static const char *const words[] = { "error", "timeout", "invalid_header",
                "updating", "http_500", "http_502", "http_503", "http_504", "http_403",
                "http_404", "http_429", "off", NULL };
            sb_t w = { 0 };
            imp_sb_add(&w, "", 0);
            for (int i = 1; i < d->nargs; i++) {
                size_t k = 0;
                while (words[k] && strcmp(words[k], d->args[i]) != 0)
                    k++;
                if (words[k] == NULL) {
                    imp_report(im, d, "\"%s\" is not in legate's cache_use_stale: ignored",
                               d->args[i]);
                    continue;
                }
                if (w.n)
                    imp_sb_str(&w, " ");
                imp_sb_str(&w, d->args[i]);
            }
            if (w.n)
                imp_kv_quoted(b, n, "cache_use_stale", w.p);
            free(w.p);
        } else if (imp_is(d, "try_files") && !is_location) {
            imp_report(im, d, "legate's try_files is a route's, not a server's: left out");
        } else if (imp_is(d, "max_ranges") && d->nargs == 2) {
            char *end;
            long v = strtol(d->args[1], &end, 10);
            if (*end || end == d->args[1] || v < 0) {
                imp_report(im, d, "cannot read \"%s\": left out", d->args[1]);
                continue;
            }
            if (v > 256) {
                imp_report(im, d, "legate answers at most 256 ranges from its cache: 256");
                v = 256;
            }
            imp_ind(b, n);
            imp_sb_printf(b, "cache_max_ranges = %ld;\n", v);
        } else if (imp_is(d, "default_type") && d->nargs == 2) {
            imp_kv_quoted(b, n, "default_type", d->args[1]);
        } else if (imp_is(d, "access_log")) {
            /* below, with log_format */
        }
        (void)is_location;
    }
    emit_error_pages(im, b, n, block);
    emit_proxy_redirect(im, b, n, block);
    /* set: all of the level in one group (not at http level: nginx has none
     * there); the last of one name wins, as nginx runs them in order */
    if (is_location || block != (im->http ? im->http->block : NULL)) {
        sb_t sets = { 0 };
        imp_sb_add(&sets, "", 0);
        for (const ngx_dir_t *d = block; d; d = d->next) {
            if (!imp_is(d, "set"))
                continue;
            if (d->nargs != 3 || d->args[1][0] != '$') {
                imp_report(im, d, "takes a $variable and a value: left out");
                continue;
            }
            const char *name = d->args[1] + 1;
            int later = 0;
            for (const ngx_dir_t *e = d->next; e && !later; e = e->next)
                later = imp_is(e, "set") && e->nargs == 3 && strcmp(e->args[1], d->args[1]) == 0;
            if (later)
                continue;   /* the last one counts, as nginx runs them in order */
            const char *why = NULL;
            char *t = imp_template(d->args[2], &why);
            if (t == NULL) {
                imp_report(im, d, "%s: left out", why);
                continue;
            }
            if (!imp_declared(name, strlen(name))) {
                free(t);
                continue;   /* reported when declared */
            }
            imp_sb_printf(&sets, " %s = ", name);
            imp_sb_quote(&sets, t);
            imp_sb_str(&sets, ";");
            free(t);
        }
        if (sets.n) {
            imp_ind(b, n);
            imp_sb_printf(b, "set = {%s };\n", sets.p);
        }
        free(sets.p);
    }
    /* proxy_cache_valid: all of the level in one list */
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!imp_is(d, "proxy_cache_valid") || d->nargs < 2)
            continue;
        long long ms = imp_time_ms(d->args[d->nargs - 1]);
        if (ms < 0) {
            imp_report(im, d, "cannot read the time \"%s\": left out", d->args[d->nargs - 1]);
            continue;
        }
        sb_t one = { 0 };
        if (d->nargs == 2)
            imp_sb_str(&one, "200 301 302");
        for (int i = 1; i < d->nargs - 1; i++) {
            if (i > 1)
                imp_sb_str(&one, " ");
            imp_sb_str(&one, strcmp(d->args[i], "any") == 0 ? "any" : d->args[i]);
        }
        if (ms % 1000)
            imp_sb_printf(&one, " %lldms", ms);
        else
            imp_sb_printf(&one, " %llds", ms / 1000);
        if (first) {
            imp_ind(b, n);
            imp_sb_str(b, "cache_valid = [ ");
        } else
            imp_sb_str(b, ", ");
        imp_sb_quote(b, one.p);
        free(one.p);
        first = 0;
    }
    if (!first)
        imp_sb_str(b, " ];\n");
    /* access_log (the last one: legate has one log per level) */
    const ngx_dir_t *al = NULL;
    int nal = 0;
    for (const ngx_dir_t *d = block; d; d = d->next)
        if (imp_is(d, "access_log")) {
            al = d;
            nal++;
        }
    if (al) {
        if (nal > 1)
            imp_report(im, al, "legate writes one access log per level: only this one is kept");
        if (al->nargs >= 2 && strcmp(al->args[1], "off") == 0)
            imp_kv_quoted(b, n, "access_log", "off");
        else if (al->nargs >= 2) {
            char *target = NULL;
            if (strncmp(al->args[1], "syslog:", 7) == 0)
                target = nginx_level_syslog(im, al, al->args[1]);
            else if (strchr(al->args[1], '$'))
                imp_report(im, al, "a log file name with variables is not in legate: left out");
            else
                target = strdup(al->args[1]);
            if (target) {
                imp_kv_quoted(b, n, "access_log", target);
                free(target);
                for (int i = 3; i < al->nargs; i++) {
                    if (strncmp(al->args[i], "if=", 3) == 0) {
                        const char *why = NULL;
                        char *t = imp_template(al->args[i] + 3, &why);
                        if (t == NULL)
                            imp_report(im, al, "if=: %s: every request is logged", why);
                        else {
                            imp_kv_quoted(b, n, "access_log_if", t);
                            free(t);
                        }
                    } else
                        imp_report(im, al, "\"%s\" is not in legate: ignored", al->args[i]);
                }
                if (al->nargs >= 3 && strcmp(al->args[2], "combined") != 0) {
                    const ngx_dir_t *lf = NULL;
                    for (int i = 0; i < im->nlog_formats; i++)
                        if (strcmp(im->log_formats[i]->args[1], al->args[2]) == 0)
                            lf = im->log_formats[i];
                    if (lf == NULL)
                        imp_report(im, al, "no log_format \"%s\": the combined format is used",
                                   al->args[2]);
                    else {
                        sb_t f = { 0 };
                        imp_sb_add(&f, "", 0);
                        int a0 = 2;
                        if (lf->nargs > 2 && strncmp(lf->args[2], "escape=", 7) == 0) {
                            if (strcmp(lf->args[2], "escape=json") == 0)
                                imp_report(im, lf, "escape=json: legate escapes as for text logs");
                            a0 = 3;
                        }
                        for (int i = a0; i < lf->nargs; i++)
                            imp_sb_str(&f, lf->args[i]);
                        const char *why = NULL;
                        char *t = imp_template(f.p, &why);
                        free(f.p);
                        if (t == NULL)
                            imp_report(im, lf, "%s: the combined format is used instead", why);
                        else {
                            imp_kv_quoted(b, n, "log_format", t);
                            free(t);
                        }
                    }
                }
            }
        }
    }
}

/* nginx's quirk, said where it bites: a level with any of these drops the
 * outer levels' (once per directive and level) */
static void said_not_inherited(imp_t *im, const level_t *l, const char *const *names)
{
    if (l == NULL || l->self == NULL)
        return;
    const level_t *outer = nginx_level_array(l->up, names);
    if (outer == NULL)
        return;
    const ngx_dir_t *mine = NULL, *theirs = NULL;
    for (const ngx_dir_t *d = l->block; d && !mine; d = d->next)
        for (size_t i = 0; names[i]; i++)
            if (imp_is(d, names[i]))
                mine = d;
    for (const ngx_dir_t *d = outer->block; d && !theirs; d = d->next)
        for (size_t i = 0; names[i]; i++)
            if (imp_is(d, names[i]))
                theirs = d;
    for (int i = 0; i < im->nsaid; i++)
        if (im->said[i] == mine)
            return;
    if (im->nsaid < (int)(sizeof(im->said) / sizeof(im->said[0])))
        im->said[im->nsaid++] = mine;
    imp_report(im, mine, "nginx does not inherit the %s of %s:%d here (a level with its own "
                         "replaces them all); the translation does the same", theirs->args[0],
               theirs->file, theirs->line);
}

/* "proxy_set_header NAME $var" where an auth_request_set of the level
 * gives $var the service's header of that same name: legate's
 * auth_request_set = [ NAME ] does both.  The auth_request_set, or NULL. */
static const ngx_dir_t *auth_set_for(const level_t *lv, const char *name, const char *val)
{
    static const char *const ars[] = { "auth_request_set", NULL };
    const level_t *l = nginx_level_array(lv, ars);
    if (l == NULL || val[0] != '$')
        return NULL;
    for (const ngx_dir_t *d = l->block; d; d = d->next) {
        if (!imp_is(d, "auth_request_set") || d->nargs != 3 || strcmp(d->args[1], val) != 0 ||
            strncmp(d->args[2], "$upstream_http_", 15) != 0)
            continue;
        const char *h = d->args[2] + 15;
        size_t i = 0;
        for (; h[i] && name[i]; i++) {
            char a = h[i] == '_' ? '-' : (char)tolower((unsigned char)h[i]);
            if (a != tolower((unsigned char)name[i]))
                break;
        }
        if (h[i] == '\0' && name[i] == '\0')
            return d;
    }
    return NULL;
}

/* auth_request URI: the (internal) location of the server with that path
 * and a proxy_pass to an upstream -> auth_request, auth_request_uri */
void nginx_level_auth_request(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    const ngx_dir_t *ar = nginx_level_inherited(lv, "auth_request");
    if (ar == NULL || ar->nargs != 2)
        return;
    if (strcmp(ar->args[1], "off") == 0)
        return;
    const char *uri = ar->args[1];
    const ngx_dir_t *target = NULL;
    for (const ngx_dir_t *d = im->server ? im->server->block : NULL; d; d = d->next) {
        if (!imp_is(d, "location") || !d->has_block)
            continue;
        const char *p = d->nargs == 3 && strcmp(d->args[1], "=") == 0 ? d->args[2]
                      : d->nargs == 2 ? d->args[1] : NULL;
        if (p && strcmp(p, uri) == 0)
            target = d;
    }
    const ngx_dir_t *pp = target ? imp_child(target->block, "proxy_pass") : NULL;
    if (pp == NULL || pp->nargs != 2) {
        imp_report(im, ar, "no location \"%s\" with a proxy_pass in this server: left out", uri);
        return;
    }
    const char *path;
    int tls;
    const char *up = nginx_upstream_for(im, pp, pp->args[1], &path, &tls);
    if (up == NULL)
        return;
    imp_kv_quoted(b, n, "auth_request", up);
    imp_kv_quoted(b, n, "auth_request_uri", path && strcmp(path, "/") != 0 ? path : uri);
    /* auth_request_set $v $upstream_http_x_user + proxy_set_header X-User $v */
    static const char *const ars[] = { "auth_request_set", NULL };
    static const char *const psh[] = { "proxy_set_header", NULL };
    const level_t *al = nginx_level_array(lv, ars), *pl = nginx_level_array(lv, psh);
    sb_t names = { 0 };
    for (const ngx_dir_t *d = al ? al->block : NULL; d; d = d->next) {
        if (!imp_is(d, "auth_request_set"))
            continue;
        const ngx_dir_t *used = NULL;
        for (const ngx_dir_t *h = pl ? pl->block : NULL; h && !used; h = h->next)
            if (imp_is(h, "proxy_set_header") && h->nargs == 3 &&
                auth_set_for(lv, h->args[1], h->args[2]) == d)
                used = h;
        if (used == NULL) {
            imp_report(im, d, "legate passes a header of the service's answer under its own name "
                              "(auth_request_set = [ name ]) only: left out");
            continue;
        }
        imp_sb_str(&names, names.n ? ", " : "");
        imp_sb_quote(&names, used->args[1]);
    }
    if (names.n) {
        imp_ind(b, n);
        imp_sb_printf(b, "auth_request_set = [ %s ];\n", names.p);
    }
    free(names.p);
    /* a proxy_cache on the auth location: legate remembers decisions */
    const ngx_dir_t *pc = imp_child(target->block, "proxy_cache");
    if (pc && pc->nargs == 2 && strcmp(pc->args[1], "off") != 0) {
        long long ms = -1;
        for (const ngx_dir_t *d = target->block; d; d = d->next) {
            if (!imp_is(d, "proxy_cache_valid") || d->nargs < 2)
                continue;
            int for200 = d->nargs == 2;
            for (int i = 1; i < d->nargs - 1; i++)
                if (strcmp(d->args[i], "200") == 0 || strcmp(d->args[i], "any") == 0)
                    for200 = 1;
            if (for200)
                ms = imp_time_ms(d->args[d->nargs - 1]);
        }
        if (ms <= 0) {
            imp_report(im, pc, "no proxy_cache_valid for 200 on the auth location: legate asks "
                               "the service for each request");
        } else {
            if (ms > 7 * 86400000LL) {
                imp_report(im, pc, "legate remembers a decision for 7 days at most");
                ms = 7 * 86400000LL;
            }
            imp_ind(b, n);
            imp_sb_str(b, "auth_request_cache_time = ");
            imp_sb_duration(b, ms);
            imp_sb_str(b, ";\n");
            imp_report(im, pc, "legate remembers the service's decisions (2xx, 401, 403) in each "
                               "worker, not in a shared cache");
            const ngx_dir_t *key = imp_child(target->block, "proxy_cache_key");
            if (key && key->nargs == 2) {
                const char *why = NULL;
                char *t = imp_template(key->args[1], &why);
                if (t == NULL)
                    imp_report(im, key, "%s: legate's default key is used", why);
                else {
                    imp_kv_quoted(b, n, "auth_request_cache_key", t);
                    free(t);
                }
            } else
                imp_report(im, pc, "nginx's default key ($scheme$proxy_host$request_uri) does not "
                                   "tell credentials apart; legate's does");
        }
    }
    for (const ngx_dir_t *d = target->block; d; d = d->next)
        if (imp_is(d, "proxy_set_header") || imp_is(d, "proxy_pass_request_body"))
            imp_report(im, d, "legate sends the auth service the request's head without a body "
                              "(auth_request_headers chooses the headers): not translated");
}

int nginx_level_zone_known(const imp_t *im, char kind, const char *name)
{
    for (int i = 0; i < im->nzones; i++)
        if (im->zones[i][0] == kind && strcmp(im->zones[i] + 2, name) == 0)
            return 1;
    return 0;
}

/* a header set twice in one group would be a libconfig error: the first wins */
static int header_seen(imp_t *im, const ngx_dir_t *d, const char **names, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcasecmp(names[i], name) == 0) {
            imp_report(im, d, "legate sets a header once: only the first %s is kept", name);
            return 1;
        }
    if (*n < 64)
        names[(*n)++] = name;
    return 0;
}

/* auth_basic with its file, as they apply to a location: nginx checks
 * nothing without a file, legate refuses auth_basic without one */
static void emit_auth_basic(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    const ngx_dir_t *ab = nginx_level_inherited(lv, "auth_basic");
    if (ab == NULL || ab->nargs != 2)
        return;
    if (strcmp(ab->args[1], "off") == 0) {
        imp_kv_quoted(b, n, "auth_basic", "off");
        return;
    }
    const ngx_dir_t *uf = nginx_level_inherited(lv, "auth_basic_user_file");
    if (uf == NULL || uf->nargs != 2) {
        imp_report(im, ab, "no auth_basic_user_file: nginx asks for nothing, nor does the translation");
        return;
    }
    char path[PATH_MAX], err[512];
    if (!imp_file_readable(im, uf, uf->args[1], path, sizeof(path)))
        return;
    lg_htpasswd_t *h = lg_htpasswd_load(path, err, sizeof(err));
    if (h == NULL) {
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        imp_report(im, uf, "legate refuses this file (%s): authentication left out", err);
        return;
    }
    lg_htpasswd_free(h);
    imp_kv_quoted(b, n, "auth_basic", ab->args[1]);
    imp_kv_quoted(b, n, "auth_basic_user_file", path);
}

/* proxy_set_header, add_header, allow/deny, limit_req, limit_conn: per location */
void nginx_level_arrays(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    emit_auth_basic(im, b, n, lv);
    static const char *const psh[] = { "proxy_set_header", NULL };
    static const char *const ah[] = { "add_header", NULL };
    static const char *const ad[] = { "allow", "deny", NULL };
    static const char *const lr[] = { "limit_req", NULL };
    static const char *const lc[] = { "limit_conn", NULL };
    const level_t *l;

    said_not_inherited(im, nginx_level_array(lv, psh), psh);
    const char *seen[64];
    int nseen = 0;
    if ((l = nginx_level_array(lv, psh)) != NULL) {
        sb_t h = { 0 };
        int xff = -1, xrip = -1, xproto = -1;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!imp_is(d, "proxy_set_header"))
                continue;
            if (d->nargs != 3) {
                imp_report(im, d, "takes a name and a value: left out");
                continue;
            }
            const char *name = d->args[1], *val = d->args[2];
            if (nginx_level_inherited(lv, "auth_request") && auth_set_for(lv, name, val))
                continue;   /* auth_request_set = [ name ], with auth_request */
            if (strcasecmp(name, "Host") == 0 && (strcmp(val, "$host") == 0 ||
                                                  strcmp(val, "$http_host") == 0))
                continue;   /* legate passes the client's Host */
            if (strcasecmp(name, "X-Forwarded-For") == 0 &&
                strcmp(val, "$proxy_add_x_forwarded_for") == 0) {
                xff = 1;
                continue;
            }
            if (strcasecmp(name, "X-Real-IP") == 0 && strcmp(val, "$remote_addr") == 0) {
                xrip = 1;
                continue;
            }
            if (strcasecmp(name, "X-Forwarded-Proto") == 0 && strcmp(val, "$scheme") == 0) {
                xproto = 1;
                continue;
            }
            if ((strcasecmp(name, "Upgrade") == 0 && strcmp(val, "$http_upgrade") == 0) ||
                (strcasecmp(name, "Connection") == 0 &&
                 (strcasecmp(val, "upgrade") == 0 || strcmp(val, "$connection_upgrade") == 0)))
                continue;   /* legate forwards WebSocket upgrades itself (websocket = true) */
            if (strcasecmp(name, "Connection") == 0 && val[0] == '\0')
                continue;   /* legate keeps upstream connections alive itself */
            if (val[0] == '\0') {
                imp_ind(b, n);
                imp_sb_str(b, "remove_request_headers = ");
                imp_sb_quote(b, name);
                imp_sb_str(b, ";\n");
                continue;
            }
            const char *why = NULL;
            char *t = imp_template(val, &why);
            if (t == NULL) {
                imp_report(im, d, "%s: left out", why);
                continue;
            }
            if (header_seen(im, d, seen, &nseen, name)) {
                free(t);
                continue;
            }
            char key[128];
            imp_setting_name(key, sizeof(key), name);
            if (h.n == 0)
                imp_sb_add(&h, "", 0);
            imp_sb_printf(&h, " %s = ", key);
            imp_sb_quote(&h, t);
            imp_sb_str(&h, ";");
            free(t);
        }
        if (h.n) {
            imp_ind(b, n);
            imp_sb_printf(b, "add_request_headers = {%s };\n", h.p);
        }
        free(h.p);
        if (xrip == 1) {
            imp_ind(b, n);
            imp_sb_str(b, "x_real_ip = true;\n");
        }
        (void)xff;
        (void)xproto;
    }
    said_not_inherited(im, nginx_level_array(lv, ah), ah);
    nseen = 0;
    if ((l = nginx_level_array(lv, ah)) != NULL) {
        sb_t h = { 0 };
        const ngx_dir_t *always = NULL, *plain = NULL;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!imp_is(d, "add_header"))
                continue;
            if (d->nargs != 3 && !(d->nargs == 4 && strcmp(d->args[3], "always") == 0)) {
                imp_report(im, d, "takes a name, a value and maybe \"always\": left out");
                continue;
            }
            if (strcasecmp(d->args[1], "Strict-Transport-Security") == 0 && l->self &&
                imp_is(l->self, "server"))
                continue;   /* hsts, with the server's TLS */
            if (strcasecmp(d->args[1], "Alt-Svc") == 0 && im->server_quic) {
                imp_report(im, d, "legate sends Alt-Svc itself on a server with quic: left out");
                continue;
            }
            const char *why = NULL;
            char *t = imp_template(d->args[2], &why);
            if (t == NULL) {
                imp_report(im, d, "%s: left out", why);
                continue;
            }
            if (header_seen(im, d, seen, &nseen, d->args[1])) {
                free(t);
                continue;
            }
            if (d->nargs == 3) {
                imp_report(im, d, "legate adds it to every proxied response, nginx only to 2xx and "
                                  "3xx without \"always\"");
                plain = d;
            } else
                always = d;
            char key[128];
            imp_setting_name(key, sizeof(key), d->args[1]);
            if (h.n == 0)
                imp_sb_add(&h, "", 0);
            imp_sb_printf(&h, " %s = ", key);
            imp_sb_quote(&h, t);
            imp_sb_str(&h, ";");
            free(t);
        }
        if (h.n) {
            imp_ind(b, n);
            imp_sb_printf(b, "add_response_headers = {%s };\n", h.p);
        }
        free(h.p);
        /* legate's "always" is one switch for the level's headers */
        if (always) {
            imp_ind(b, n);
            imp_sb_str(b, "add_response_headers_always = true;\n");
            if (plain)
                imp_report(im, plain, "without \"always\" beside one with it (%s:%d): legate adds "
                                      "all of this level's headers to its own answers too",
                           always->file, always->line);
        }
    }
    said_not_inherited(im, nginx_level_array(lv, ad), ad);
    if ((l = nginx_level_array(lv, ad)) != NULL) {
        imp_ind(b, n);
        imp_sb_str(b, "access_rules = [");
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!(imp_is(d, "allow") || imp_is(d, "deny")))
                continue;
            if (d->nargs != 2) {
                imp_report(im, d, "takes one address: left out");
                continue;
            }
            if (strncmp(d->args[1], "unix:", 5) == 0) {
                imp_report(im, d, "unix: is not in legate's rules: left out");
                continue;
            }
            char rule[160];
            snprintf(rule, sizeof(rule), "%s %s", d->args[0], d->args[1]);
            imp_sb_str(b, k++ ? ", " : " ");
            imp_sb_quote(b, rule);
        }
        imp_sb_str(b, " ];\n");
    }
    said_not_inherited(im, nginx_level_array(lv, lr), lr);
    if ((l = nginx_level_array(lv, lr)) != NULL) {
        sb_t r = { 0 };
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!imp_is(d, "limit_req"))
                continue;
            const char *zone = NULL;
            long burst = -1, delay = -1;
            int nodelay = 0;
            for (int i = 1; i < d->nargs; i++) {
                if (strncmp(d->args[i], "zone=", 5) == 0) zone = d->args[i] + 5;
                else if (strncmp(d->args[i], "burst=", 6) == 0) burst = atol(d->args[i] + 6);
                else if (strncmp(d->args[i], "delay=", 6) == 0) delay = atol(d->args[i] + 6);
                else if (strcmp(d->args[i], "nodelay") == 0) nodelay = 1;
            }
            if (zone == NULL) {
                imp_report(im, d, "no zone=: left out");
                continue;
            }
            char zn[128];
            imp_setting_name(zn, sizeof(zn), zone);
            if (!nginx_level_zone_known(im, 'r', zn)) {
                imp_report(im, d, "no limit_req_zone \"%s\": left out", zone);
                continue;
            }
            if (k++)
                imp_sb_str(&r, ", ");
            imp_sb_printf(&r, "{ zone = \"%s\";", zn);
            if (burst >= 0)
                imp_sb_printf(&r, " burst = %ld;", burst);
            if (nodelay)
                imp_sb_str(&r, " nodelay = true;");
            else if (delay >= 0)
                imp_sb_printf(&r, " delay = %ld;", delay);
            imp_sb_str(&r, " }");
        }
        if (k) {
            imp_ind(b, n);
            imp_sb_printf(b, "limit_req = ( %s );\n", r.p);
        }
        free(r.p);
    }
    said_not_inherited(im, nginx_level_array(lv, lc), lc);
    if ((l = nginx_level_array(lv, lc)) != NULL) {
        sb_t r = { 0 };
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!imp_is(d, "limit_conn"))
                continue;
            if (d->nargs != 3 || !isdigit((unsigned char)d->args[2][0])) {
                imp_report(im, d, "takes a zone and a number: left out");
                continue;
            }
            char zn[128];
            imp_setting_name(zn, sizeof(zn), d->args[1]);
            if (!nginx_level_zone_known(im, 'c', zn)) {
                imp_report(im, d, "no limit_conn_zone \"%s\": left out", d->args[1]);
                continue;
            }
            if (k++)
                imp_sb_str(&r, ", ");
            imp_sb_printf(&r, "{ zone = \"%s\"; max = %ld; }", zn, atol(d->args[2]));
        }
        if (k) {
            imp_ind(b, n);
            imp_sb_printf(b, "limit_conn = ( %s );\n", r.p);
        }
        free(r.p);
    }
}

const ngx_dir_t *nginx_level_inherited(const level_t *lv, const char *name)
{
    for (; lv; lv = lv->up) {
        const ngx_dir_t *d = imp_child(lv->block, name);
        if (d)
            return d;
    }
    return NULL;
}

/*
 * Configuration loader: one libconfig file -> one lg_conf_t generation.
 *
 * Every setting is one row of a directive table (name, type, bounds, default,
 * offset of the target field), one table per level: global, http, upstream,
 * upstream server, server, listen and route, plus the table of inheritable
 * settings shared by http, server and route.  ld_parse_block() walks a libconfig
 * group against its level's tables, so an unknown key, a wrong type or a
 * value out of range is reported the same way at every level.  The same rows
 * drive the defaults and the http -> server -> route merge: a new setting is
 * one new row, plus its line in conf/dump.c and in doc/legate.conf.5.  Value
 * parsers (durations, sizes, addresses) are in conf/parse_util.c; the
 * upstream, route and per-server TLS / forward-proxy sections are in
 * load_upstream.c, load_route.c and load_server.c, sharing load_int.h.
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
#include "conf/load_int.h"

#include "core/syslog.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <libconfig.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

static const char *sname(const config_setting_t *s)
{
    while (s != NULL && config_setting_name(s) == NULL)
        s = config_setting_parent(s);
    return s != NULL ? config_setting_name(s) : "?";
}


static int fn_http(ld_t *, const config_setting_t *, void *);

/* error_log and access_log "syslog:..." targets parse */
static void check_one_syslog(ld_t *ld, const config_setting_t *where, const char *name,
                             const char *target, int line)
{
    lg_syslog_t s;
    char err[256];
    if (!lg_is_syslog(target) || lg_syslog_parse(target, &s, err, sizeof(err)) == 0)
        return;
    if (where)
        ld_error(ld, where, "'%s': %s", name, err);
    else
        ld_error_at(ld, ld->file, line, "'%s': %s", name, err);
}

static void check_syslog(ld_t *ld, const config_setting_t *root, const lg_conf_t *conf)
{
    check_one_syslog(ld, config_setting_get_member(root, "error_log"), "error_log", conf->error_log, 0);
    check_one_syslog(ld, NULL, "access_log", conf->http.access_log, conf->http_line);
    for (size_t i = 0; i < conf->nservers; i++) {
        const lg_server_t *srv = &conf->servers[i];
        check_one_syslog(ld, NULL, "access_log", srv->common.access_log, srv->line);
        for (size_t j = 0; j < srv->nroutes; j++)
            check_one_syslog(ld, NULL, "access_log", srv->routes[j].common.access_log,
                             srv->routes[j].line);
    }
}

/* metrics_status_codes: distinct codes 100..599, at most LG_METRICS_CODES */
static void check_metrics_codes(ld_t *ld, const config_setting_t *root, const lg_conf_t *conf)
{
    const lg_strv_t *c = conf->metrics_status_codes;
    const config_setting_t *s = config_setting_get_member(root, "metrics_status_codes");
    if (c == NULL || s == NULL)
        return;
    if (c->n > LG_METRICS_CODES) {
        ld_error(ld, s, "'metrics_status_codes' may list at most %d codes", LG_METRICS_CODES);
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        char *end;
        long v = strtol(c->v[i], &end, 10);
        int again = 0;
        for (size_t j = 0; j < i; j++)
            again |= strtol(c->v[j], NULL, 10) == v;
        if (end == c->v[i] || *end || v < 100 || v > 599 || again) {
            ld_error(ld, s, "'metrics_status_codes': \"%s\" is not a status code from 100 to 599 "
                     "listed once", c->v[i]);
            return;
        }
    }
}

/* metrics_buckets: durations in increasing order, at most LG_METRICS_BUCKETS */
static void check_metrics_buckets(ld_t *ld, const config_setting_t *root, const lg_conf_t *conf)
{
    const lg_strv_t *b = conf->metrics_buckets;
    const config_setting_t *s = config_setting_get_member(root, "metrics_buckets");
    lg_msec_t last = -1;
    if (b == NULL || s == NULL)
        return;
    if (b->n == 0 || b->n > LG_METRICS_BUCKETS) {
        ld_error(ld, s, "'metrics_buckets' must have 1 to %d durations", LG_METRICS_BUCKETS);
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        lg_msec_t ms;
        if (lg_parse_duration(b->v[i], &ms) < 0 || ms <= last) {
            ld_error(ld, s, "'metrics_buckets': \"%s\" is not a duration larger than the one before",
                     b->v[i]);
            return;
        }
        last = ms;
    }
}
static int fn_servers(ld_t *, const config_setting_t *, void *);
static int fn_listen_address(ld_t *, const config_setting_t *, void *);

static const directive_t global_dirs[] = {
    ROW("worker_processes",     D_WORKERS,  1, 512,        "auto",   lg_conf_t, worker_processes),
    ROW("user",                 D_STRING,   0, 0,          NULL,     lg_conf_t, user),
    ROW("via_name",             D_STRING,   0, 0,          NULL,     lg_conf_t, via_name),
    ROW("group",                D_STRING,   0, 0,          NULL,     lg_conf_t, group),
    PATH("pid",                 "logs/legate.pid", NULL,             lg_conf_t, pid_file),
    PATH("error_log",           "logs/error.log",  "stderr",         lg_conf_t, error_log),
    ROW("error_log_level",      D_LEVEL,    0, 0,          "notice", lg_conf_t, error_log_level),
    ROW("worker_connections",   D_INT,      0, 1000000,    "0",      lg_conf_t, worker_connections),
    ROW("worker_rlimit_nofile", D_INT,      0, INT32_MAX,  "0",      lg_conf_t, worker_rlimit_nofile),
    ROW("shutdown_timeout",     D_DURATION, 0, WEEK,       "10s",    lg_conf_t, shutdown_timeout),
    ROW("http2_max_concurrent_streams", D_INT, 1, 65535,  "128",    lg_conf_t, http2_max_concurrent_streams),
    ROW("http2_max_header_list_size", D_SIZE, 1024, 1 << 20, "16k", lg_conf_t, http2_max_header_list_size),
    ROW("http2_reset_rate",     D_INT,      1, 1000000,    "100",    lg_conf_t, http2_reset_rate),
    ROW("http2_control_rate",   D_INT,      1, 1000000,    "100",    lg_conf_t, http2_control_rate),
    ROW("quic_max_connections_per_address", D_INT, 1, 1000000, "64", lg_conf_t, quic_max_connections_per_address),
    ROW("quic_retry",           D_BOOL,     0, 1,          "false",  lg_conf_t, quic_retry),
    ROW("quic_steering",        D_BOOL,     0, 1,          "true",   lg_conf_t, quic_steering),
    ROW("metrics_status_codes", D_STRLIST,  0, 0, NULL, lg_conf_t, metrics_status_codes),
    ROW("metrics_buckets",      D_STRLIST,  0, 0, "5ms 10ms 25ms 50ms 100ms 250ms 500ms 1s 2500ms 5s 10s",
        lg_conf_t, metrics_buckets),
    ROW("shared_memory_size",   D_SIZE,     65536, (int64_t)1 << 34, "1m", lg_conf_t, shared_memory_size),
    ROW("tls_ticket_rotate",    D_DURATION, 1000, WEEK,    "1h",     lg_conf_t, tls_ticket_rotate),
    ROW("tls_session_cache",    D_SIZE,     0, (int64_t)1 << 32, "1m", lg_conf_t, tls_session_cache),
    ROW("cache_size",           D_SIZE,     0, (int64_t)1 << 36, "0", lg_conf_t, cache_size),
    ROW("cache_max_object",     D_SIZE,     1024, (int64_t)1 << 31, "1m", lg_conf_t, cache_max_object),
    PATH("cache_path",          NULL, NULL, lg_conf_t, cache_path),
    ROW("cache_disk_size",      D_SIZE,     0, (int64_t)1 << 50, "0", lg_conf_t, cache_disk_size),
    ROW("cache_disk_max_object", D_SIZE,    1024, (int64_t)1 << 40, "1g", lg_conf_t, cache_disk_max_object),
    ROW("cache_disk_inactive",  D_DURATION, 1000, 365 * DAY, "10m", lg_conf_t, cache_disk_inactive),
    PATH("proxy_temp_path",     NULL, NULL, lg_conf_t, proxy_temp_path),
    PATH("geoip_mmdb",          NULL, NULL, lg_conf_t, geoip_mmdb),
    { "geoip_csv_blocks", D_STRLIST, 0, 0, "", offsetof(lg_conf_t, geoip_csv_blocks), "paths", NULL },
    PATH("geoip_csv_locations", NULL, NULL, lg_conf_t, geoip_csv_locations),
    CUSTOM("http", fn_http),
    CUSTOM("cluster", ld_fn_cluster),
    CUSTOM("stream", ld_fn_stream),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* Inheritable: used at http, server and route level. */
const directive_t ld_common_dirs[] = {
    ROW("client_header_timeout",   D_DURATION, 1, WEEK,   "60s",  lg_common_t, client_header_timeout),
    ROW("client_body_timeout",     D_DURATION, 1, WEEK,   "60s",  lg_common_t, client_body_timeout),
    ROW("send_timeout",            D_DURATION, 1, WEEK,   "60s",  lg_common_t, send_timeout),
    ROW("keepalive_timeout",       D_DURATION, 0, WEEK,   "75s",  lg_common_t, keepalive_timeout),
    ROW("keepalive_requests",      D_INT64,    1, 1000000000, "1000", lg_common_t, keepalive_requests),
    ROW("proxy_connect_timeout",   D_DURATION, 1, WEEK,   "5s",   lg_common_t, proxy_connect_timeout),
    ROW("proxy_send_timeout",      D_DURATION, 1, WEEK,   "60s",  lg_common_t, proxy_send_timeout),
    ROW("proxy_read_timeout",      D_DURATION, 1, WEEK,   "60s",  lg_common_t, proxy_read_timeout),
    ROW("client_max_body_size",    D_SIZE,     0, INT64_MAX, "1m", lg_common_t, client_max_body_size),
    ROW("websocket",               D_BOOL,     0, 1,      "true", lg_common_t, websocket),
    ROW("websocket_idle_timeout",  D_DURATION, 1, WEEK,   "1h",   lg_common_t, websocket_idle_timeout),
    ROW("add_request_headers",     D_HEADERS,  0, 0,      "",     lg_common_t, add_request_headers),
    ROW("remove_request_headers",  D_NAMES,    0, 0,      "",     lg_common_t, remove_request_headers),
    ROW("add_response_headers",    D_HEADERS,  0, 0,      "",     lg_common_t, add_response_headers),
    ROW("remove_response_headers", D_NAMES,    0, 0,      "",     lg_common_t, remove_response_headers),
    ROW("x_forwarded_for",         D_BOOL,     0, 1,      "true",  lg_common_t, x_forwarded_for),
    ROW("x_forwarded_proto",       D_BOOL,     0, 1,      "true",  lg_common_t, x_forwarded_proto),
    ROW("x_forwarded_host",        D_BOOL,     0, 1,      "false", lg_common_t, x_forwarded_host),
    ROW("x_real_ip",               D_BOOL,     0, 1,      "false", lg_common_t, x_real_ip),
    ROW("forwarded",               D_BOOL,     0, 1,      "false", lg_common_t, forwarded),
    /* no default here: true for a forward proxy's server, false for the
     * reverse proxy (nginx sends none), set after the merge */
    ROW("via",                     D_BOOL,     0, 1,      NULL,    lg_common_t, via),
    ROW("server_timing",           D_BOOL,     0, 1,      "false", lg_common_t, server_timing),
    ROW("gzip",                    D_BOOL,     0, 1,      "false", lg_common_t, gzip),
    ROW("gzip_level",              D_INT,      1, 9,      "1",     lg_common_t, gzip_level),
    ROW("gzip_min_length",         D_SIZE,     0, INT64_MAX, "20", lg_common_t, gzip_min_length),
    { "gzip_types", D_STRLIST, 0, 0, "text/html", offsetof(lg_common_t, gzip_types), "words", NULL },
    ROW("gunzip",                  D_BOOL,     0, 1,      "false", lg_common_t, gunzip),
    ROW("brotli",                  D_BOOL,     0, 1,      "false", lg_common_t, brotli),
    ROW("brotli_level",            D_INT,      0, 6,      "4",     lg_common_t, brotli_level),
    ROW("zstd",                    D_BOOL,     0, 1,      "false", lg_common_t, zstd),
    ROW("zstd_level",              D_INT,      1, 6,      "3",     lg_common_t, zstd_level),
    ROW("gunzip_request_bodies",   D_BOOL,     0, 1,      "false", lg_common_t, gunzip_request_bodies),
    ROW("gunzip_request_max",      D_SIZE,     1, INT64_MAX, "10m", lg_common_t, gunzip_request_max),
    ROW("cache",                   D_BOOL,     0, 1,      "false", lg_common_t, cache),
    ROW("cache_key",               D_TPL,      0, 0,      "$scheme://$host$request_uri", lg_common_t, cache_key),
    ROW("cache_valid",             D_VALID,    0, 0,      "",      lg_common_t, cache_valid),
    ROW("cache_lock_timeout",      D_DURATION, 0, WEEK,   "5s",    lg_common_t, cache_lock_timeout),
    ROW("cache_bypass",            D_TPL,      0, 0,      "0",     lg_common_t, cache_bypass),
    ROW("cache_no_store",          D_TPL,      0, 0,      "0",     lg_common_t, cache_no_store),
    ROW("cache_min_uses",          D_INT,      1, 1000000, "1",    lg_common_t, cache_min_uses),
    ROW("cache_ignore_headers",    D_NAMES,    0, 0,      "",      lg_common_t, cache_ignore_headers),
    ROW("cache_purge_allow",       D_STRLIST,  0, 0,      "",      lg_common_t, cache_purge_allow),
    ROW("cache_authorized",        D_BOOL,     0, 1,      "false", lg_common_t, cache_authorized),
    ROW("cache_private",           D_BOOL,     0, 1,      "false", lg_common_t, cache_private),
    ROW("cache_store_set_cookie",  D_BOOL,     0, 1,      "false", lg_common_t, cache_store_set_cookie),
    ROW("cache_vary_normalize",    D_NAMES,    0, 0,      "Accept Accept-Language Accept-Charset", lg_common_t, cache_vary_normalize),
    ROW("cache_targeted_fields",   D_NAMES,    0, 0,      "CDN-Cache-Control", lg_common_t, cache_targeted_fields),
    ROW("cache_targeted_remove",   D_BOOL,     0, 1,      "false", lg_common_t, cache_targeted_remove),
    ROW("cache_partial",           D_BOOL,     0, 1,      "false", lg_common_t, cache_partial),
    ROW("cache_max_ranges",        D_INT,      0, 256,    "16",    lg_common_t, cache_max_ranges),
    { "cache_use_stale", D_CUSTOM, 0, 0, NULL, offsetof(lg_common_t, cache_use_stale), NULL, ld_fn_cache_use_stale },
    ROW("access_rules",            D_STRLIST,  0, 0,      "",      lg_common_t, access_rules),
    ROW("auth_basic",              D_STRING,   0, 0,      "off",   lg_common_t, auth_basic),
    PATH("auth_basic_user_file",   NULL, NULL,                      lg_common_t, auth_basic_user_file),
    ROW("satisfy",                 D_STRING,   0, 0,      "all",   lg_common_t, satisfy),
    ROW("auth_request",            D_STRING,   0, 0,      NULL,    lg_common_t, auth_request),
    ROW("auth_request_uri",        D_STRING,   0, 0,      "/",     lg_common_t, auth_request_uri),
    ROW("auth_request_headers",    D_STRLIST,  0, 0,      "Authorization Cookie", lg_common_t, auth_request_headers),
    ROW("auth_request_set",        D_STRLIST,  0, 0,      "",      lg_common_t, auth_request_set),
    ROW("auth_request_timeout",    D_DURATION, 1, WEEK,   "5s",    lg_common_t, auth_request_timeout),
    ROW("auth_request_cache_time", D_DURATION, 0, WEEK,   "0s",    lg_common_t, auth_request_cache_time),
    ROW("auth_request_cache_key",  D_TPL,      0, 0,
        "$request_method $request_uri $http_authorization $http_cookie", lg_common_t, auth_request_cache_key),
    ROW("auth_jwt",                D_STRING,   0, 0,      "off",   lg_common_t, auth_jwt),
    PATH("auth_jwt_key_file",      NULL, NULL,                      lg_common_t, auth_jwt_key_file),
    PATH("auth_jwt_secret_file",   NULL, NULL,                      lg_common_t, auth_jwt_secret_file),
    ROW("auth_jwt_cookie",         D_STRING,   0, 0,      NULL,    lg_common_t, auth_jwt_cookie),
    ROW("auth_jwt_leeway",         D_DURATION, 0, WEEK,   "60s",   lg_common_t, auth_jwt_leeway),
    ROW("auth_jwt_issuer",         D_STRING,   0, 0,      NULL,    lg_common_t, auth_jwt_issuer),
    ROW("auth_jwt_audience",       D_STRING,   0, 0,      NULL,    lg_common_t, auth_jwt_audience),
    /* limits (load_limit.c): a custom row with an offset is merged as a pointer */
    { "limit_req", D_CUSTOM, 0, 0, NULL, offsetof(lg_common_t, limit_req), NULL, ld_fn_limit_req },
    ROW("limit_req_status",        D_INT,      400, 599,  "429",   lg_common_t, limit_req_status),
    ROW("limit_req_dry_run",       D_BOOL,     0, 1,      "false", lg_common_t, limit_req_dry_run),
    { "limit_conn", D_CUSTOM, 0, 0, NULL, offsetof(lg_common_t, limit_conn), NULL, ld_fn_limit_conn },
    ROW("limit_conn_status",       D_INT,      400, 599,  "503",   lg_common_t, limit_conn_status),
    ROW("limit_conn_dry_run",      D_BOOL,     0, 1,      "false", lg_common_t, limit_conn_dry_run),
    ROW("limit_rate",              D_SIZE,     0, (int64_t)1 << 40, "0", lg_common_t, limit_rate),
    ROW("limit_rate_after",        D_SIZE,     0, INT64_MAX, "0",  lg_common_t, limit_rate_after),
    ROW("limit_rate_zone",         D_STRING,   0, 0,      NULL,    lg_common_t, limit_rate_zone),
    /* proxy_buffering / proxy_request_buffering (pipeline/spool.c) */
    ROW("proxy_buffering",         D_BOOL,     0, 1,      "false", lg_common_t, proxy_buffering),
    ROW("proxy_buffers_size",      D_SIZE,     4096, (int64_t)1 << 30, "256k", lg_common_t, proxy_buffers_size),
    ROW("proxy_max_temp_file_size", D_SIZE,    0, (int64_t)1 << 50, "1g", lg_common_t, proxy_max_temp_file_size),
    ROW("proxy_request_buffering", D_BOOL,     0, 1,      "false", lg_common_t, proxy_request_buffering),
    ROW("client_body_buffer_size", D_SIZE,     4096, (int64_t)1 << 30, "16k", lg_common_t, client_body_buffer_size),
    ROW("default_type",            D_STRING,   0, 0,      "text/plain", lg_common_t, default_type),
    ROW("add_response_headers_always", D_BOOL, 0, 1,      "false", lg_common_t, headers_always),
    ROW("error_pages",             D_ERRPAGES, 0, 0,      "",      lg_common_t, error_pages),
    ROW("intercept_errors",        D_BOOL,     0, 1,      "false", lg_common_t, intercept_errors),
    { "proxy_redirect", D_STRLIST, 0, 0, "default", offsetof(lg_common_t, proxy_redirect), NULL, NULL },
    { "proxy_cookie_domain", D_STRLIST, 0, 0, "", offsetof(lg_common_t, proxy_cookie_domain), NULL, NULL },
    { "proxy_cookie_path", D_STRLIST, 0, 0, "", offsetof(lg_common_t, proxy_cookie_path), NULL, NULL },
    /* declared variables (load_map.c): a custom row with an offset is merged as a pointer */
    { "set", D_CUSTOM, 0, 0, NULL, offsetof(lg_common_t, sets), NULL, ld_fn_set },
    PATH("access_log",             "logs/access.log", "off",        lg_common_t, access_log),
    ROW("log_format",              D_TPL,      0, 0,      "combined", lg_common_t, log_format),
    ROW("access_log_if",           D_TPL,      0, 0,      NULL,    lg_common_t, access_log_if),
    ROW("access_log_sample",       D_INT,      1, 1000000, "1",    lg_common_t, access_log_sample),
    ROW("traceparent",             D_BOOL,     0, 1,      "false", lg_common_t, traceparent),
    ROW("request_id_header",       D_STRING,   0, 0,      NULL,    lg_common_t, request_id_header),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t http_dirs[] = {
    CUSTOM("upstreams", ld_fn_upstreams),
    CUSTOM("servers",   fn_servers),
    CUSTOM("limit_req_zones",  ld_fn_limit_req_zones),
    CUSTOM("limit_conn_zones", ld_fn_limit_conn_zones),
    CUSTOM("maps",      ld_fn_maps),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};











static const directive_t server_dirs[] = {
    CUSTOM("listen",      ld_fn_listen),
    CUSTOM("server_name", ld_fn_server_name),
    CUSTOM("routes",      ld_fn_routes),
    CUSTOM("forward",     ld_fn_forward),
    ROW("real_ip_from",   D_STRLIST, 0, 0, "", lg_server_t, real_ip_from),
    ROW("real_ip_header", D_STRING,  0, 0, "X-Forwarded-For", lg_server_t, real_ip_header),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t listen_dirs[] = {
    CUSTOM("address", fn_listen_address),
    ROW("backlog", D_INT,  1, 65535, "511",   lg_listen_t, backlog),
    ROW("default", D_BOOL, 0, 1,     "false", lg_listen_t, is_default),
    ROW("tls",     D_BOOL, 0, 1,     "false", lg_listen_t, tls),
    ROW("protocol", D_STRING, 0, 0,  "http",  lg_listen_t, protocol),
    ROW("proxy_protocol", D_BOOL, 0, 1, "false", lg_listen_t, proxy_protocol),
    ROW("http2",   D_BOOL, 0, 1,     "false", lg_listen_t, http2),
    ROW("quic",    D_BOOL, 0, 1,     "false", lg_listen_t, quic),
    ROW("udp",     D_BOOL, 0, 1,     "false", lg_listen_t, udp),
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

void ld_table_unset(const directive_t *t, void *base)
{
    for (; t->name; t++)
        if (t->type != D_CUSTOM)
            field_unset(t, base);
}

/* --- value conversion -------------------------------------------------- */

int ld_get_int(const config_setting_t *s, int64_t *v)
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

const char *ld_get_string(ld_t *ld, const config_setting_t *s)
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

/*
 * Where a relative path points, as nginx: what legate writes (pid file,
 * logs, the cache directory) lives under the prefix (-p); what it reads
 * (certificates, keys, CA files, lists, password files, databases) sits
 * beside the configuration file that names it.
 */
static char *resolve_output(ld_t *ld, const char *p)
{
    if (p[0] == '/' || !ld->has_prefix || lg_is_syslog(p))
        return ld_strdup(ld, p);
    return lg_arena_printf(&ld->conf->arena, "%s/%s", ld->conf->prefix, p);
}

char *ld_resolve_path(ld_t *ld, const char *p)
{
    const char *slash = strrchr(ld->conf->file, '/');
    if (p[0] == '/' || slash == NULL)
        return ld_strdup(ld, p);
    return lg_arena_printf(&ld->conf->arena, "%.*s/%s", (int)(slash - ld->conf->file),
                           ld->conf->file, p);
}

int ld_string_list(ld_t *ld, const config_setting_t *s, const char *what,
                   int (*ok)(const char *), const char *errfmt, lg_strv_t **out)
{
    int n = ld_entry_count(ld, s, 0, what);
    if (n <= 0)
        return n;
    lg_strv_t *v = ld_calloc(ld, 1, sizeof(*v));
    if (v == NULL || (v->v = ld_calloc(ld, (size_t)n, sizeof(char *))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        const char *str = ld_get_string(ld, e);
        if (str == NULL)
            return -1;
        if (!ok(str))
            return ld_error(ld, e, errfmt, str);
        if ((v->v[v->n++] = ld_strdup(ld, str)) == NULL)
            return ld_oom(ld, e);
    }
    *out = v;
    return 0;
}

int ld_tpl(ld_t *ld, const config_setting_t *s, const char *what, const char *src,
           lg_tpl_t **out)
{
    char msg[256];
    lg_tpl_t *t = lg_tpl_compile(&ld->conf->arena, src, msg, sizeof(msg));
    if (t == NULL)
        return ld_error(ld, s, "%s in '%s'", msg, what);
    *out = t;
    return 0;
}

static int is_country(const char *c)
{
    return strlen(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z';
}

int ld_countries(ld_t *ld, const config_setting_t *s, lg_strv_t **out)
{
    return ld_string_list(ld, s, "a country code or a list of them", is_country,
                          "'%s' is not an upper-case ISO 3166 country code", out);
}

/* The directives whose files legate writes. */
static int is_output(const directive_t *d)
{
    return strcmp(d->name, "pid") == 0 || strcmp(d->name, "error_log") == 0 ||
           strcmp(d->name, "access_log") == 0 || strcmp(d->name, "cache_path") == 0;
}

static int ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 512 ? 512 : (int)n;
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
        if (ld_get_int(s, &v) < 0)
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
        if (ld_get_int(s, &v) == 0) {
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
        if (ld_get_int(s, &v) < 0 && (type != CONFIG_TYPE_STRING
                                   || lg_parse_size(config_setting_get_string(s), &v) < 0))
            return ld_error(ld, s, "'%s' must be a size: bytes, or a string such as "
                            "\"512\", \"16k\", \"1m\", \"2g\"", name);
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_STRING:
    case D_PATH:
        if ((str = ld_get_string(ld, s)) == NULL)
            return -1;
        if (d->type == D_PATH && (d->keyword == NULL || strcmp(str, d->keyword) != 0))
            p = is_output(d) ? resolve_output(ld, str) : ld_resolve_path(ld, str);
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
        if (ld_get_int(s, &v) < 0)
            return ld_error(ld, s, "'%s' must be an integer or \"auto\"", name);
        if (check_range(ld, d, s, v) < 0)
            return -1;
        field_store(d, base, v);
        return 0;

    case D_HEADERS:
        return ld_set_headers(ld, d, s, base);
    case D_NAMES:
    case D_STRLIST:
        return ld_set_names(ld, d, s, base);
    case D_VALID:
        return ld_set_valid(ld, d, s, base);
    case D_ERRPAGES:
        return ld_set_errpages(ld, d, s, base);
    case D_TPL:
        if ((str = ld_get_string(ld, s)) == NULL)
            return -1;
        return ld_tpl(ld, s, name, str, (lg_tpl_t **)FIELD(d, base));
    case D_CUSTOM:
        return d->fn(ld, s, base);
    }
    return -1;
}

/* Give every unset field of the table its default (written in config syntax). */
int ld_table_defaults(ld_t *ld, const directive_t *t, void *base)
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
        case D_TPL: {
            char msg[128];
            p = lg_tpl_compile(&ld->conf->arena, t->def, msg, sizeof(msg));
            break;
        }
        case D_PATH:
            p = t->keyword && strcmp(t->def, t->keyword) == 0 ? ld_strdup(ld, t->def)
                        : is_output(t) ? resolve_output(ld, t->def) : ld_resolve_path(ld, t->def);
            break;
        case D_HEADERS:
            p = ld_calloc(ld, 1, sizeof(lg_header_ops_t));
            break;
        case D_ERRPAGES:
            p = ld_calloc(ld, 1, sizeof(lg_errpages_t));
            break;
        case D_VALID:
            p = ld_calloc(ld, 1, sizeof(lg_valid_t));
            break;
        case D_NAMES:
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
int ld_parse_block3(ld_t *ld, const config_setting_t *g, const char *level,
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

int ld_parse_block(ld_t *ld, const config_setting_t *g, const char *level,
                       const directive_t *t1, void *b1, const directive_t *t2, void *b2)
{
    return ld_parse_block3(ld, g, level, t1, b1, t2, b2, NULL, NULL);
}

/* --- upstreams --------------------------------------------------------- */

int ld_parse_addr(ld_t *ld, const config_setting_t *s, int default_port,
                              lg_addr_t *out)
{
    char        msg[256];
    const char *str = ld_get_string(ld, s);

    if (str == NULL)
        return -1;
    if (lg_parse_addr(str, default_port, out, &ld->conf->arena, msg, sizeof(msg)) < 0) {
        memset(out, 0, sizeof(*out));
        return ld_error(ld, s, "%s", msg);
    }
    return 0;
}


static int fn_listen_address(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_listen_t *l = base;
    return ld_parse_addr(ld, s, 0, &l->addr);
}

/*
 * The shape shared by upstream servers, listen and server_name: one entry
 * (a string, or a group when `groups`), or an array / list of entries.
 * Returns the number of entries, or -1 after reporting a wrong shape.
 */
int ld_entry_count(ld_t *ld, const config_setting_t *s, int groups, const char *what)
{
    if (config_setting_type(s) == CONFIG_TYPE_STRING || (groups && config_setting_is_group(s)))
        return 1;
    if (config_setting_is_array(s) || config_setting_is_list(s))
        return config_setting_length(s);
    ld_error(ld, s, "'%s' must be %s", config_setting_name(s), what);
    return -1;
}

/* An empty array or list: "no entries", not a type error. */
int ld_is_empty_list(const config_setting_t *s)
{
    return (config_setting_is_array(s) || config_setting_is_list(s))
        && config_setting_length(s) == 0;
}

const config_setting_t *ld_entry_at(const config_setting_t *s, int i)
{
    if (config_setting_type(s) == CONFIG_TYPE_STRING || config_setting_is_group(s))
        return s;
    return config_setting_get_elem(s, (unsigned)i);
}







/* --- servers ----------------------------------------------------------- */

int ld_fn_listen(ld_t *ld, const config_setting_t *s, void *base)
{
    static const char what[] = "an address, a group { address = ...; backlog = ...; "
                               "default = ...; }, or a list of them";
    lg_server_t *srv = base;
    int          n = ld_entry_count(ld, s, 1, what), rc = 0;

    if (n < 0)
        return -1;
    if (n == 0)
        return 0;       /* "has no 'listen'", reported by the caller */
    if ((srv->listens = ld_calloc(ld, (size_t)n, sizeof(*srv->listens))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        lg_listen_t            *l = &srv->listens[srv->nlistens++];

        ld_table_unset(listen_dirs, l);
        l->line = (int)config_setting_source_line(e);
        if (config_setting_type(e) == CONFIG_TYPE_STRING) {
            rc |= fn_listen_address(ld, e, l);
        } else if (config_setting_is_group(e)) {
            rc |= ld_parse_block(ld, e, "listen", listen_dirs, l, NULL, NULL);
            if (config_setting_get_member(e, "address") == NULL)
                rc = ld_error(ld, e, "listen has no 'address'");
        } else {
            rc = ld_error(ld, e, "'listen' must be %s", what);
        }
        rc |= ld_table_defaults(ld, listen_dirs, l);
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
    const char *v = ld_get_string(ld, e);
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

int ld_fn_server_name(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    int          n = ld_entry_count(ld, s, 0, "a name or a list of names"), rc = 0;

    if (n <= 0)
        return n;
    if ((srv->names = ld_calloc(ld, (size_t)n, sizeof(*srv->names))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        lg_server_name_t sn = { 0 };
        if (server_name_parse(ld, ld_entry_at(s, i), &sn) < 0)
            rc = -1;
        else
            srv->names[srv->nnames++] = sn;
    }
    return rc;
}

/* --- routes ------------------------------------------------------------ */















static int server_parse(ld_t *ld, const config_setting_t *g, lg_server_t *srv)
{
    int rc;

    srv->line = (int)config_setting_source_line(g);
    ld_table_unset(ld_common_dirs, &srv->common);
    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a server must be a group { listen = ...; routes = (...); }");
    ld_table_unset(ld_tls_dirs, &srv->tls);
    srv->tls.line = srv->line;
    ld_table_unset(server_dirs, srv);
    rc = ld_parse_block3(ld, g, "server", server_dirs, srv, ld_common_dirs, &srv->common,
                      ld_tls_dirs, &srv->tls);
    rc |= ld_table_defaults(ld, ld_tls_dirs, &srv->tls);
    rc |= ld_table_defaults(ld, server_dirs, srv);
    if (srv->tls.verify_client && strcmp(srv->tls.verify_client, "off") != 0 &&
        strcmp(srv->tls.verify_client, "on") != 0 && strcmp(srv->tls.verify_client, "optional") != 0)
        rc = ld_error(ld, config_setting_get_member(g, "tls_verify_client"),
                      "'tls_verify_client' must be \"off\", \"on\" or \"optional\"");
    else if (srv->tls.verify_client && strcmp(srv->tls.verify_client, "off") != 0 &&
             srv->tls.client_ca == NULL)
        rc = ld_error(ld, config_setting_get_member(g, "tls_verify_client"),
                      "'tls_verify_client' needs 'tls_client_ca'");
    const config_setting_t *l = config_setting_get_member(g, "listen");
    if (l == NULL || ld_is_empty_list(l))
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

    conf->http_line = (int)config_setting_source_line(s);
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'http' must be a group { servers = (...); }");
    rc = ld_parse_block(ld, s, "http", http_dirs, conf, ld_common_dirs, &conf->http);
    if (ld->servers != NULL && config_setting_is_list(ld->servers))
        rc |= servers_parse(ld, ld->servers);
    return rc;
}

/* --- merge ------------------------------------------------------------- */

static void merge_common(lg_common_t *child, const lg_common_t *parent)
{
    for (const directive_t *d = ld_common_dirs; d->name; d++) {
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

/*
 * via_name: the received-by of our Via entries, which is also how a
 * request that comes back to us is recognised (a forwarding loop).  By
 * default the host name, as Squid's visible_hostname, so that two legates
 * on two machines in a chain do not mistake each other for a loop.
 */
static void check_via_name(ld_t *ld, const config_setting_t *root, lg_conf_t *conf)
{
    if (conf->via_name == NULL) {
        char host[256];
        if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
            strcpy(host, "legate");
        host[sizeof(host) - 1] = '\0';
        conf->via_name = ld_strdup(ld, host);
        return;
    }
    for (const char *p = conf->via_name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("-._~!$&'*+^`|:[]", *p))) {
            ld_error(ld, config_setting_get_member(root, "via_name"),
                     "'via_name' must be a host name or a token (no spaces, commas or quotes)");
            return;
        }
    if (conf->via_name[0] == '\0')
        ld_error(ld, config_setting_get_member(root, "via_name"), "'via_name' is empty");
}

/* As nginx: the worker user must exist when the master is root (else it is
 * not used, see legate.conf(5)); found by -t rather than by each worker. */
static void check_user(ld_t *ld, const config_setting_t *root, const lg_conf_t *conf)
{
    if (geteuid() != 0)
        return;
    if (conf->user && getpwnam(conf->user) == NULL)
        ld_error(ld, config_setting_get_member(root, "user"), "'user': no user \"%s\"",
                 conf->user);
    if (conf->group && getgrnam(conf->group) == NULL)
        ld_error(ld, config_setting_get_member(root, "group"), "'group': no group \"%s\"",
                 conf->group);
    if (conf->group && conf->user == NULL)
        ld_error(ld, config_setting_get_member(root, "group"), "'group' needs 'user'");
}

static void load_tree(ld_t *ld, const config_t *cfg)
{
    lg_conf_t              *conf = ld->conf;
    const config_setting_t *root = config_root_setting(cfg);
    const config_setting_t *http;

    ld_table_unset(global_dirs, conf);
    ld_table_unset(ld_common_dirs, &conf->http);
    {   /* routes borrow upstreams as they are parsed: one array for http and stream */
        const config_setting_t *hu = config_lookup(cfg, "http.upstreams");
        ld->upstreams_room = (hu && config_setting_is_group(hu) ? (size_t)config_setting_length(hu) : 0) +
                             ld_stream_count_upstreams(root);
    }
    ld_parse_block(ld, root, "global", global_dirs, conf, NULL, NULL);
    ld_stream_parse(ld);        /* its servers join conf->servers */
    {   /* the database opens later (lg_forward_prepare): keep its line for errors */
        const config_setting_t *gs = config_setting_get_member(root, "geoip_mmdb");
        if (gs == NULL)
            gs = config_setting_get_member(root, "geoip_csv_blocks");
        conf->geoip_line = gs ? config_setting_source_line(gs) : 1;
    }

    /* (an 'http' or 'servers' of the wrong type has been reported already) */
    http = config_setting_get_member(root, "http");
    if (http == NULL && ld->stream == NULL)
        ld_error_at(ld, ld->file, 1, "no servers defined");
    else if (http && conf->nservers == 0 && config_setting_is_group(http)
             && (ld->servers == NULL || config_setting_is_list(ld->servers)))
        ld_error(ld, ld->servers ? ld->servers : http, "no servers defined");
    ld_derive_binds(ld, root);
    ld_stream_finish(ld);

    ld_table_defaults(ld, global_dirs, conf);
    ld_table_defaults(ld, ld_common_dirs, &conf->http);
    check_via_name(ld, root, conf);
    check_metrics_buckets(ld, root, conf);
    check_metrics_codes(ld, root, conf);
    check_user(ld, root, conf);
    if (conf->tls_session_cache > 0 && conf->tls_session_cache < 16384)
        ld_error(ld, config_setting_get_member(root, "tls_session_cache"),
                 "'tls_session_cache' must be 0 (off) or at least 16k");
    if (conf->cache_path) {     /* saved there at exit: find out now, not then */
        struct stat st;
        const config_setting_t *cp = config_setting_get_member(root, "cache_path");
        if (stat(conf->cache_path, &st) < 0 || !S_ISDIR(st.st_mode))
            ld_error(ld, cp, "'cache_path' \"%s\" is not a directory", conf->cache_path);
        else if (access(conf->cache_path, W_OK) < 0)
            ld_error(ld, cp, "'cache_path' \"%s\" is not writable: %s", conf->cache_path,
                     strerror(errno));
        else if (conf->cache_size == 0)
            ld_error(ld, cp, "'cache_path' needs 'cache_size'");
    }
    if (conf->cache_disk_size > 0 && conf->cache_path == NULL)
        ld_error(ld, config_setting_get_member(root, "cache_disk_size"),
                 "'cache_disk_size' needs 'cache_path' (the files live under it)");
    else if (conf->cache_disk_size > 0 && conf->cache_disk_size < conf->cache_max_object)
        ld_error(ld, config_setting_get_member(root, "cache_disk_size"),
                 "'cache_disk_size' is smaller than 'cache_max_object' (the disk holds larger objects)");
    if (conf->proxy_temp_path) {        /* buffering's temporary files: find out now */
        struct stat st;
        const config_setting_t *tp = config_setting_get_member(root, "proxy_temp_path");
        if (stat(conf->proxy_temp_path, &st) < 0 || !S_ISDIR(st.st_mode))
            ld_error(ld, tp, "'proxy_temp_path' \"%s\" is not a directory", conf->proxy_temp_path);
        else if (access(conf->proxy_temp_path, W_OK) < 0)
            ld_error(ld, tp, "'proxy_temp_path' \"%s\" is not writable: %s", conf->proxy_temp_path,
                     strerror(errno));
    }
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        merge_common(&srv->common, &conf->http);
        if (srv->common.via == LG_UNSET)
            srv->common.via = srv->forward != NULL;
        for (size_t j = 0; j < srv->nroutes; j++)
            merge_common(&srv->routes[j].common, &srv->common);
    }
    ld_limits_finish(ld);
    ld_cluster_finish(ld, root);
    ld_check_errpages(ld, conf);
    ld_check_self_routes(ld, conf);
    check_syslog(ld, root, conf);
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
                        config_error_line(&cfg), "%s%s%s", config_error_text(&cfg),
                        ld_syntax_hint_of(&ld, &cfg) ? ": " : "", ld_syntax_hint_of(&ld, &cfg) ?
                        ld_syntax_hint_of(&ld, &cfg) : "");
        goto done;
    }

    ld_include_globs(&ld, &cfg);
    ld_uvars_prescan(&ld, &cfg);
    load_tree(&ld, &cfg);
done:
    lg_tpl_set_user_vars(NULL, 0);
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
            if (srv->routes[j].header_re != NULL)
                regfree(srv->routes[j].header_re);
            for (size_t k = 0; k < srv->routes[j].nconds; k++)
                if (srv->routes[j].conds[k].re != NULL)
                    regfree(srv->routes[j].conds[k].re);
        }
    }
    ld_uvars_free(conf);
    for (size_t i = 0; i < conf->nupstreams; i++)
        free(conf->upstreams[i].maglev);     /* built by the proxy layer */
    for (size_t i = 0; i < conf->nservers; i++)
        if (conf->servers[i].forward && conf->servers[i].forward->rt_free)
            conf->servers[i].forward->rt_free(conf->servers[i].forward->rt);
    if (conf->proxy_free)
        conf->proxy_free(conf);     /* the geo database and real-ip sets */
    if (conf->access_free)
        conf->access_free(conf);    /* access rules, htpasswd files */
    if (conf->jwt_free)
        conf->jwt_free(conf);       /* JWT keys */
    lg_arena_destroy(&conf->arena);
    free(conf);
}

int lg_conf_each_level(lg_conf_t *conf, lg_conf_level_fn fn, char *err, size_t errlen)
{
    int rc = fn(&conf->http, NULL, conf, conf->http_line, 0, err, errlen);
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        rc |= fn(&srv->common, &conf->http, conf, srv->line, 1, err, errlen);
        for (size_t j = 0; j < srv->nroutes; j++)
            rc |= fn(&srv->routes[j].common, &srv->common, conf, srv->routes[j].line, 1,
                     err, errlen);
    }
    return rc < 0 ? -1 : 0;
}

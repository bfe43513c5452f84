/*
 * Upstreams: their servers, balancing, passive and active health, retries
 * (part of the configuration loader, see load.c).
 */
#include "conf/load_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fn_upstream_servers(ld_t *, const config_setting_t *, void *);
static int fn_upstream_address(ld_t *, const config_setting_t *, void *);
static int fn_health(ld_t *, const config_setting_t *, void *);

static const directive_t upstream_dirs[] = {
    CUSTOM("servers", fn_upstream_servers),
    ROW("keepalive", D_INT, 0, 10000, "32", lg_upstream_t, keepalive),
    ROW("balance",      D_STRING,   0, 0,    "round_robin", lg_upstream_t, balance_name),
    ROW("hash_key",     D_TPL,      0, 0,    "$request_uri", lg_upstream_t, hash_key),
    ROW("max_fails",    D_INT,      0, 1000, "1",   lg_upstream_t, max_fails),
    ROW("fail_timeout", D_DURATION, 1, WEEK, "10s", lg_upstream_t, fail_timeout),
    /* HAProxy's per-backend "timeout connect" / "timeout server" */
    ROW("proxy_connect_timeout", D_DURATION, 0, WEEK, "0", lg_upstream_t, connect_timeout),
    ROW("proxy_read_timeout",    D_DURATION, 0, WEEK, "0", lg_upstream_t, read_timeout),
    CUSTOM("health_check", fn_health),
    ROW("tls",             D_BOOL,   0, 1, "false", lg_upstream_t, tls),
    ROW("protocol",        D_STRING, 0, 0, "http/1.1", lg_upstream_t, protocol),
    ROW("h2_connections",  D_INT,    1, 64, "1",    lg_upstream_t, h2_connections),
    ROW("tls_verify",      D_BOOL,   0, 1, "true",  lg_upstream_t, tls_verify),
    PATH("tls_ca",         NULL, NULL, lg_upstream_t, tls_ca),
    ROW("tls_server_name", D_STRING, 0, 0, NULL,    lg_upstream_t, tls_server_name),
    PATH("tls_certificate", NULL, NULL, lg_upstream_t, tls_certificate),
    PATH("tls_key",        NULL, NULL, lg_upstream_t, tls_key),
    ROW("fail_on",       D_STRING,   0, 0,    "error timeout invalid_header", lg_upstream_t, fail_on),
    ROW("next_upstream", D_STRING,   0, 0,    "error timeout", lg_upstream_t, next_upstream),
    ROW("next_upstream_tries",   D_INT,      0, 100,  "0", lg_upstream_t, next_upstream_tries),
    ROW("next_upstream_timeout", D_DURATION, 0, WEEK, "0", lg_upstream_t, next_upstream_timeout),
    ROW("slow_start",    D_DURATION, 0, WEEK, "0", lg_upstream_t, slow_start),
    ROW("queue",         D_INT,      0, 100000, "0", lg_upstream_t, queue),
    ROW("max_conns",     D_INT,      0, 10000000, "0", lg_upstream_t, max_conns),
    ROW("queue_timeout", D_DURATION, 1, WEEK, "1s", lg_upstream_t, queue_timeout),
    ROW("resolve",       D_BOOL,     0, 1, "false", lg_upstream_t, resolve),
    ROW("resolvers",     D_STRLIST,  0, 0, "", lg_upstream_t, resolvers),
    ROW("resolve_valid", D_DURATION, 0, WEEK, "0", lg_upstream_t, resolve_valid),
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
    ROW("type",     D_STRING,   0, 0,     "http", lg_health_t, type),
    ROW("send",     D_STRING,   0, 0,     NULL, lg_health_t, send),
    ROW("expect",   D_STRING,   0, 0,     NULL, lg_health_t, expect),
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

static const char *const balance_names[] = {
    [LG_BAL_ROUND_ROBIN] = "round_robin", [LG_BAL_LEAST_CONN] = "least_conn",
    [LG_BAL_IP_HASH] = "ip_hash", [LG_BAL_HASH] = "hash",
    [LG_BAL_RANDOM] = "random", [LG_BAL_PEAK_EWMA] = "peak_ewma",
};

/*
 * A name ("app.internal:8080") is kept beside its address.  With resolve =
 * true the address comes from the workers' own lookups only: the server
 * starts without one (out of the balancing until the first answer).
 */
static int fn_upstream_address(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_upstream_server_t *us = base;
    const char *v = config_setting_type(s) == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
    if (v && v[0] != '[' && strncmp(v, "unix:", 5) != 0 && strspn(v, "0123456789.:") != strlen(v)) {
        const char *colon = strchr(v, ':');
        us->host = lg_arena_strndup(&ld->conf->arena, v, colon ? (size_t)(colon - v) : strlen(v));
        us->port = colon ? atoi(colon + 1) : 80;
        if (us->host == NULL)
            return ld_oom(ld, s);
        if (ld->resolving) {
            /* the upstream's resolvers give its address, not the system's:
             * none is asked here (legate -t stays quick without a network) */
            if (us->port <= 0 || us->port > 65535 || (colon && strspn(colon + 1, "0123456789") != strlen(colon + 1)))
                return ld_error(ld, s, "'%s': bad port (must be 1..65535)", v);
            memset(&us->addr, 0, sizeof(us->addr));
            us->addr.text = lg_arena_strdup(&ld->conf->arena, v);
            us->unresolved = 1;
            return us->addr.text ? 0 : ld_oom(ld, s);
        }
    }
    return ld_parse_addr(ld, s, 80, &us->addr);
}

static int fn_upstream_servers(ld_t *ld, const config_setting_t *s, void *base)
{
    static const char what[] = "an address, a group { address = ...; weight = ...; }, "
                               "or a list of them";
    lg_upstream_t *up = base;
    int            n = ld_entry_count(ld, s, 1, what), rc = 0;

    if (n < 0)
        return -1;
    if (n == 0)
        return 0;       /* "has no servers", reported by the caller */
    if ((up->servers = ld_calloc(ld, (size_t)n, sizeof(*up->servers))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        lg_upstream_server_t   *us = &up->servers[up->nservers++];

        ld_table_unset(upstream_server_dirs, us);
        us->line = (int)config_setting_source_line(e);
        if (config_setting_type(e) == CONFIG_TYPE_STRING) {
            rc |= fn_upstream_address(ld, e, us);
        } else if (config_setting_is_group(e)) {
            rc |= ld_parse_block(ld, e, "upstream server", upstream_server_dirs, us, NULL, NULL);
            if (config_setting_get_member(e, "address") == NULL)
                rc = ld_error(ld, e, "upstream server has no 'address'");
        } else {
            rc = ld_error(ld, e, "'servers' of an upstream must be %s", what);
        }
        rc |= ld_table_defaults(ld, upstream_server_dirs, us);
    }
    return rc;
}

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
    if ((up->tls_certificate == NULL) != (up->tls_key == NULL))
        return ld_error(ld, u, "upstream '%s': 'tls_certificate' and 'tls_key' go together",
                        up->name);
    if (up->fail_on == NULL || up->next_upstream == NULL || up->protocol == NULL)
        return -1;
    const config_setting_t *pr = config_setting_get_member(u, "protocol");
    if (strcmp(up->protocol, "http/1.1") == 0) {
        up->h2 = 0;
    } else if (strcmp(up->protocol, "h2c") == 0) {
        up->h2 = 1;
        if (up->tls)
            return ld_error(ld, pr, "upstream '%s': protocol \"h2c\" is HTTP/2 without TLS; "
                            "with tls = true use \"h2\"", up->name);
    } else if (strcmp(up->protocol, "h2") == 0) {
        up->h2 = 1;
        if (!up->tls)
            return ld_error(ld, pr, "upstream '%s': protocol \"h2\" is HTTP/2 over TLS "
                            "(tls = true); without TLS use \"h2c\"", up->name);
    } else {
        return ld_error(ld, pr ? pr : u, "unknown upstream protocol '%s' (http/1.1, h2c, h2)",
                        up->protocol);
    }
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

/*
 * Parse a group of upstreams into conf->upstreams after the ones already
 * there.  The array is made once with room for both http.upstreams and
 * stream.upstreams (ld->upstreams_room, counted before the walk), because
 * routes borrow pointers into it as soon as they are parsed.
 */
static int upstreams_add(ld_t *ld, const config_setting_t *s, int stream)
{
    lg_conf_t *conf = ld->conf;
    int        rc = 0, n;

    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'upstreams' must be a group of name = { servers = ...; }");
    n = config_setting_length(s);
    if (n == 0)
        return 0;
    if (conf->upstreams == NULL) {
        size_t room = ld->upstreams_room > (size_t)n ? ld->upstreams_room : (size_t)n;
        if ((conf->upstreams = ld_calloc(ld, room, sizeof(*conf->upstreams))) == NULL)
            return ld_oom(ld, s);
        ld->upstreams_room = room;
    }
    if (conf->nupstreams + (size_t)n > ld->upstreams_room)
        return ld_error(ld, s, "too many upstreams");  /* (counted before: cannot happen) */
    for (int i = 0; i < n; i++) {
        const config_setting_t *u = config_setting_get_elem(s, (unsigned)i);
        const char             *name = config_setting_name(u);
        lg_upstream_t          *other = ld_upstream_find(conf, name);
        lg_upstream_t          *up = &conf->upstreams[conf->nupstreams];

        if (other) {
            /* (libconfig refuses a name twice in one group: this is http and stream) */
            rc = ld_error(ld, u, "upstream '%s' is defined twice (also at line %d)", name,
                          other->line);
            continue;
        }
        conf->nupstreams++;
        up->index = (int)(up - conf->upstreams);
        up->stream = stream;
        up->line = (int)config_setting_source_line(u);
        ld_table_unset(upstream_dirs, up);
        if ((up->name = ld_strdup(ld, name)) == NULL)
            return ld_oom(ld, u);
        if (!config_setting_is_group(u)) {
            rc = ld_error(ld, u, "upstream '%s' must be a group", up->name);
            continue;
        }
        const config_setting_t *ss = config_setting_get_member(u, "servers");
        const config_setting_t *rs = config_setting_get_member(u, "resolve");
        ld->resolving = rs && config_setting_type(rs) == CONFIG_TYPE_BOOL && config_setting_get_bool(rs);
        rc |= ld_parse_block(ld, u, "upstream", upstream_dirs, up, NULL, NULL);
        ld->resolving = 0;
        if (ss == NULL || ld_is_empty_list(ss))
            rc = ld_error(ld, u, "upstream '%s' has no servers", up->name);
        if (stream && config_setting_get_member(u, "hash_key") == NULL &&
            ld_tpl(ld, u, "hash_key", "$remote_addr", &up->hash_key) < 0)
            rc = -1;    /* a stream has no URI: hash the client address by default */
        rc |= ld_table_defaults(ld, upstream_dirs, up);
        rc |= check_balance(ld, u, up);
        if (stream && up->protocol && strcmp(up->protocol, "http/1.1") != 0)
            rc = ld_error(ld, config_setting_get_member(u, "protocol"),
                          "a stream upstream carries bytes, not HTTP: 'protocol' does not apply");
    }
    return rc;
}

int ld_fn_upstreams(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    return upstreams_add(ld, s, 0);
}

int ld_stream_upstreams(ld_t *ld, const config_setting_t *s)
{
    return upstreams_add(ld, s, 1);
}

static int fn_health(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_upstream_t *up = base;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'health_check' must be a group { interval = ...; path = ...; }");
    lg_health_t *h = ld_calloc(ld, 1, sizeof(*h));
    if (h == NULL)
        return ld_oom(ld, s);
    ld_table_unset(health_dirs, h);
    int rc = ld_parse_block(ld, s, "health_check", health_dirs, h, NULL, NULL);
    rc |= ld_table_defaults(ld, health_dirs, h);
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
        const config_setting_t *ty = config_setting_get_member(s, "type");
        h->tcp = strcmp(h->type, "tcp") == 0;
        if (!h->tcp && strcmp(h->type, "http") != 0)
            return ld_error(ld, ty, "health_check 'type' must be \"http\" or \"tcp\"");
        if (!h->tcp && (h->send || h->expect))
            return ld_error(ld, config_setting_get_member(s, h->send ? "send" : "expect"),
                            "health_check 'send' and 'expect' need type = \"tcp\"");
        if (h->send && (h->send_len = ld_unescape(h->send)) == 0)
            return ld_error(ld, config_setting_get_member(s, "send"), "'send' is empty");
        if (h->send_len > 1024)
            return ld_error(ld, config_setting_get_member(s, "send"), "'send' is longer than 1024 bytes");
        if (h->expect_len > 4096)
            return ld_error(ld, config_setting_get_member(s, "expect"), "'expect' is longer than 4096 bytes");
        if (h->expect && (h->expect_len = ld_unescape(h->expect)) == 0)
            return ld_error(ld, config_setting_get_member(s, "expect"), "'expect' is empty");
    }
    up->health = h;
    return rc;
}

/* C escapes in place (\r \n \t \0 \\ \xHH): the bytes a TCP check sends or
 * expects; returns their count (they may hold NUL bytes after this). */
size_t ld_unescape(char *s)
{
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (*p != '\\' || p[1] == '\0') {
            *o++ = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'r': *o++ = '\r'; break;
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case '0': *o++ = '\0'; break;
        case 'x': {
            unsigned v = 0;
            int k = 0;
            for (; k < 2 && isxdigit((unsigned char)p[1]); k++, p++)
                v = v * 16 + (unsigned)(isdigit((unsigned char)p[1]) ? p[1] - '0'
                                                                   : (p[1] | 32) - 'a' + 10);
            *o++ = k ? (char)v : 'x';
            break;
        }
        default: *o++ = *p; break;
        }
    }
    *o = '\0';
    return (size_t)(o - s);
}

lg_upstream_t *ld_upstream_find(const lg_conf_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->nupstreams; i++)
        if (conf->upstreams[i].name && strcmp(conf->upstreams[i].name, name) == 0)
            return &conf->upstreams[i];
    return NULL;
}

/*
 * The stream section (part of the configuration loader, see load.c):
 * layer-4 servers, nginx's stream { } and HAProxy's mode tcp.
 *
 *   stream = {
 *       upstreams = { name = { servers = (...); balance = ...; }; };
 *       servers = ( { listen = ...; proxy_pass = "name"; ... } );
 *   };
 *
 * stream.upstreams join conf->upstreams (one name space with
 * http.upstreams), so balancing, shared state, passive and active health
 * are the HTTP side's.  Each stream server becomes an lg_server_t after the
 * HTTP ones, with srv->stream set and its listens marked "stream": binds,
 * the PROXY protocol from clients, TLS termination, access rules, limits
 * and the access log are then the HTTP side's too.
 */
#include "conf/load_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/un.h>

static lg_server_t *cur_srv;    /* the server being parsed (the listen row's base) */

static int fn_stream_listen(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    return ld_fn_listen(ld, s, cur_srv);
}

static int fn_stream_routes(ld_t *, const config_setting_t *, void *);

static const directive_t stream_dirs[] = {
    CUSTOM("listen", fn_stream_listen),
    CUSTOM("routes", fn_stream_routes),
    ROW("proxy_pass",          D_STRING,   0, 0,    NULL,  lg_stream_t, proxy_pass),
    ROW("proxy_timeout",       D_DURATION, 1, WEEK, "10m", lg_stream_t, proxy_timeout),
    ROW("send_proxy_protocol", D_STRING,   0, 0,    "off", lg_stream_t, proxy_protocol),
    ROW("ssl_preread",         D_BOOL,     0, 1,    "false", lg_stream_t, ssl_preread),
    ROW("preread_timeout",     D_DURATION, 1, WEEK, "30s", lg_stream_t, preread_timeout),
    ROW("proxy_responses",     D_INT,      0, 1000000, "0", lg_stream_t, proxy_responses),
    ROW("udp_sessions",        D_INT,      1, 1000000, "4096", lg_stream_t, udp_sessions),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* The inheritable settings that mean something for a byte stream: the
 * rows of ld_common_dirs by these names (filled in on first use). */
static const char *const common_names[] = {
    "proxy_connect_timeout", "access_log", "log_format", "access_log_if", "access_rules",
    "limit_conn", "limit_conn_dry_run", "limit_rate", "limit_rate_after",
};
static directive_t stream_common[sizeof(common_names) / sizeof(common_names[0]) + 1];

static void build_common(void)
{
    if (stream_common[0].name)
        return;
    size_t k = 0;
    for (size_t i = 0; i < sizeof(common_names) / sizeof(common_names[0]); i++)
        for (const directive_t *d = ld_common_dirs; d->name; d++)
            if (strcmp(d->name, common_names[i]) == 0)
                stream_common[k++] = *d;
}

size_t ld_stream_count_upstreams(const config_setting_t *root)
{
    const config_setting_t *st = config_setting_get_member(root, "stream");
    const config_setting_t *u = st && config_setting_is_group(st)
                                ? config_setting_get_member(st, "upstreams") : NULL;
    return u && config_setting_is_group(u) ? (size_t)config_setting_length(u) : 0;
}

/* Only remembered here: parsed once http is (ld_stream_parse). */
int ld_fn_stream(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'stream' must be a group { upstreams = { ... }; servers = (...); }");
    ld->stream = s;
    return 0;
}

/* The upstream a proxy_pass at s names: a stream one. */
static lg_upstream_t *stream_upstream(ld_t *ld, const config_setting_t *s, const char *name)
{
    lg_upstream_t *up = ld_upstream_find(ld->conf, name);
    if (up == NULL) {
        ld_error(ld, s, "'proxy_pass': no upstream \"%s\" in stream.upstreams", name);
        return NULL;
    }
    if (!up->stream) {
        ld_error(ld, s, "'proxy_pass': \"%s\" is an http upstream; a stream server needs one "
                 "of stream.upstreams", name);
        return NULL;
    }
    return up;
}

/* An ALPN protocol ID as clients send it: 1..255 visible bytes ("h2", "imap"). */
static int alpn_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 255)
        return 0;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

static int fn_stream_routes(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_stream_t *st = base;
    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'routes' must be a list ( { server_name = ...; proxy_pass = ...; } )");
    int n = config_setting_length(s), rc = 0;
    if (n == 0)
        return 0;
    if ((st->routes = ld_calloc(ld, (size_t)n, sizeof(*st->routes))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        lg_stream_route_t      *rt = &st->routes[st->nroutes++];
        rt->line = (int)config_setting_source_line(g);
        if (!config_setting_is_group(g)) {
            rc = ld_error(ld, g, "a stream route must be a group { server_name = ...; proxy_pass = ...; }");
            continue;
        }
        /* server_name as an HTTP server's, parsed by the same code; "" is
         * a ClientHello without the extension */
        const config_setting_t *sn = config_setting_get_member(g, "server_name");
        if (sn && config_setting_type(sn) == CONFIG_TYPE_STRING &&
            config_setting_get_string(sn) && config_setting_get_string(sn)[0] == '\0') {
            rt->no_sni = 1;
        } else if (sn) {
            lg_server_t tmp = { 0 };
            if (ld_fn_server_name(ld, sn, &tmp) < 0)
                rc = -1;
            rt->names = tmp.names;
            rt->nnames = tmp.nnames;
        }
        for (int k = 0; k < config_setting_length(g); k++) {
            const config_setting_t *m = config_setting_get_elem(g, (unsigned)k);
            const char *nm = config_setting_name(m);
            if (strcmp(nm, "server_name") != 0 && strcmp(nm, "proxy_pass") != 0 &&
                strcmp(nm, "alpn") != 0 && strcmp(nm, "http") != 0)
                rc = ld_error(ld, m, "unknown setting '%s' in a stream route (server_name, "
                              "alpn, proxy_pass, http)", nm);
        }
        const config_setting_t *pp = config_setting_get_member(g, "proxy_pass");
        const config_setting_t *al = config_setting_get_member(g, "alpn");
        const config_setting_t *hs = config_setting_get_member(g, "http");
        if (hs && pp) {
            rc = ld_error(ld, hs, "a stream route has 'proxy_pass' or 'http', not both");
        } else if (hs) {
            if (ld_parse_addr(ld, hs, 443, &rt->http) < 0)
                rc = -1;
        } else if (pp) {
            const char *v = ld_get_string(ld, pp);
            if (v == NULL)
                rc = -1;
            else if ((rt->proxy_pass = ld_strdup(ld, v)) == NULL)
                return ld_oom(ld, pp);
            else if ((rt->upstream = stream_upstream(ld, pp, v)) == NULL)
                rc = -1;
        } else {
            rc = ld_error(ld, g, "a stream route needs 'proxy_pass' (an upstream) or 'http' "
                          "(the listen address of legate's HTTP servers that take it over)");
        }
        if (al && ld_string_list(ld, al, "a protocol name or a list of them", alpn_ok,
                                 "invalid ALPN protocol name \"%s\"", &rt->alpn) < 0)
            rc = -1;
    }
    return rc;
}

static int stream_server_parse(ld_t *ld, const config_setting_t *g, lg_server_t *srv)
{
    lg_stream_t *st = ld_calloc(ld, 1, sizeof(*st));
    int rc;

    if (st == NULL)
        return ld_oom(ld, g);
    srv->stream = st;
    srv->line = st->line = (int)config_setting_source_line(g);
    ld_table_unset(ld_common_dirs, &srv->common);
    ld_table_unset(ld_tls_dirs, &srv->tls);
    srv->tls.line = srv->line;
    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a stream server must be a group { listen = ...; proxy_pass = ...; }");
    ld_table_unset(stream_dirs, st);
    build_common();
    cur_srv = srv;
    rc = ld_parse_block3(ld, g, "stream server", stream_dirs, st, stream_common, &srv->common,
                         ld_tls_dirs, &srv->tls);
    rc |= ld_table_defaults(ld, stream_dirs, st);
    rc |= ld_table_defaults(ld, ld_tls_dirs, &srv->tls);
    for (size_t i = 0; i < srv->nlistens; i++)
        srv->listens[i].protocol = "stream";
    if (srv->common.log_format == NULL &&
        ld_tpl(ld, g, "log_format", "stream", &srv->common.log_format) < 0)
        rc = -1;        /* a session's line, not an HTTP request's (accesslog.c) */
    const config_setting_t *l = config_setting_get_member(g, "listen");
    if (l == NULL || ld_is_empty_list(l))
        rc = ld_error(ld, g, "stream server has no 'listen'");
    if (st->proxy_pass && (st->upstream = stream_upstream(ld, config_setting_get_member(g, "proxy_pass"),
                                                          st->proxy_pass)) == NULL)
        rc = -1;
    if (st->proxy_pass == NULL && st->nroutes == 0)
        rc = ld_error(ld, g, "stream server has no 'proxy_pass' (nor 'routes')");
    if (st->nroutes && !st->ssl_preread)
        rc = ld_error(ld, config_setting_get_member(g, "routes"),
                      "stream 'routes' choose by the ClientHello: they need ssl_preread = true");
    const char *pp = st->proxy_protocol;
    st->pp_version = strcmp(pp, "off") == 0 ? 0 : strcmp(pp, "v1") == 0 ? 1
                   : strcmp(pp, "v2") == 0 ? 2 : -1;
    if (st->pp_version < 0)
        rc = ld_error(ld, config_setting_get_member(g, "send_proxy_protocol"),
                      "'send_proxy_protocol' must be \"off\", \"v1\" or \"v2\"");
    for (size_t i = 0; i < srv->nlistens; i++) {
        const lg_listen_t *li = &srv->listens[i];
        const char *what = li->tls ? "tls" : li->proxy_protocol ? "proxy_protocol"
                         : st->ssl_preread ? "ssl_preread" : st->pp_version ? "send_proxy_protocol"
                         : srv->common.limit_conn ? "limit_conn"
                         : srv->common.limit_rate > 0 ? "limit_rate" : NULL;
        if (li->udp && what)
            rc = ld_error(ld, l, "%s does not apply to a udp listen (datagrams are relayed as "
                          "they are)", what);
    }
    for (size_t i = 0; i < srv->nlistens; i++)
        if (srv->listens[i].tls && st->ssl_preread)
            rc = ld_error(ld, config_setting_get_member(g, "ssl_preread"),
                          "ssl_preread reads the ClientHello as it is: not with tls = true "
                          "on the listen (which decrypts)");
    return rc;
}

void ld_stream_parse(ld_t *ld)
{
    const config_setting_t *s = ld->stream;
    lg_conf_t *conf = ld->conf;
    if (s == NULL)
        return;
    for (int k = 0; k < config_setting_length(s); k++) {
        const config_setting_t *m = config_setting_get_elem(s, (unsigned)k);
        const char *nm = config_setting_name(m);
        if (strcmp(nm, "upstreams") != 0 && strcmp(nm, "servers") != 0)
            ld_error(ld, m, "unknown setting '%s' in 'stream' (upstreams, servers)", nm);
    }
    const config_setting_t *u = config_setting_get_member(s, "upstreams");
    if (u)
        ld_stream_upstreams(ld, u);
    const config_setting_t *sv = config_setting_get_member(s, "servers");
    if (sv == NULL || (config_setting_is_list(sv) && config_setting_length(sv) == 0)) {
        ld_error(ld, sv ? sv : s, "stream has no servers");
        return;
    }
    if (!config_setting_is_list(sv)) {
        ld_error(ld, sv, "stream 'servers' must be a list ( { ... }, { ... } )");
        return;
    }
    size_t n = (size_t)config_setting_length(sv);
    lg_server_t *all = ld_calloc(ld, conf->nservers + n, sizeof(*all));
    if (all == NULL) {
        ld_oom(ld, sv);
        return;
    }
    /* nothing borrows a server before the binds are derived: moving them is safe */
    if (conf->nservers)
        memcpy(all, conf->servers, conf->nservers * sizeof(*all));
    conf->servers = all;
    for (size_t i = 0; i < n; i++) {
        lg_server_t *srv = &conf->servers[conf->nservers];
        srv->index = (int)conf->nservers++;
        stream_server_parse(ld, config_setting_get_elem(sv, (unsigned)i), srv);
    }
}

/* The same address (IP and port, or unix path): load_cluster.c too. */
int ld_same_addr(const lg_addr_t *a, const lg_addr_t *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    if (a->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return strcmp(x->sun_path, y->sun_path) == 0;
    }
    return 0;
}

void ld_stream_finish(ld_t *ld)
{
    /* http = "addr": one of the binds just derived, an HTTP one */
    lg_conf_t *conf = ld->conf;
    const config_setting_t *sv = ld->stream ? config_setting_get_member(ld->stream, "servers") : NULL;
    size_t first = 0;
    while (first < conf->nservers && conf->servers[first].stream == NULL)
        first++;
    for (size_t i = first; i < conf->nservers; i++) {
        lg_stream_t *st = conf->servers[i].stream;
        const lg_server_t *srv = &conf->servers[i];
        int udp = 0;
        for (size_t k = 0; k < srv->nlistens; k++)
            udp |= srv->listens[k].udp;
        const lg_strv_t *rules = srv->common.access_rules ? srv->common.access_rules
                                                          : conf->http.access_rules;
        if (udp && rules && rules->n) {
            /* datagrams are not filtered: say so rather than let them through */
            const config_setting_t *g = sv ? config_setting_get_elem(sv, (unsigned)(i - first)) : NULL;
            ld_error(ld, g, "access_rules do not apply to a udp listen: firewall the port instead");
        }
        for (size_t k = 0; st && k < st->nroutes; k++) {
            lg_stream_route_t *rt = &st->routes[k];
            if (rt->http.len == 0)
                continue;
            for (size_t b = 0; b < conf->nbinds && rt->http_bind == NULL; b++)
                if (ld_same_addr(&conf->binds[b].addr, &rt->http))
                    rt->http_bind = &conf->binds[b];
            const config_setting_t *g = sv ? config_setting_get_elem(sv, (unsigned)(i - first)) : NULL;
            const config_setting_t *rs = g ? config_setting_get_member(g, "routes") : NULL;
            const config_setting_t *at = rs ? config_setting_get_elem(rs, (unsigned)k) : NULL;
            at = at ? config_setting_get_member(at, "http") : NULL;
            if (rt->http_bind == NULL)
                ld_error(ld, at, "'http': no HTTP server listens on %s", rt->http.text);
            else if (rt->http_bind->stream || rt->http_bind->socks)
                ld_error(ld, at, "'http': %s is not an HTTP listener", rt->http.text);
        }
    }
}

/*
 * legate --import-nginx: upstream blocks -> upstreams (weights, backup,
 * down, max_fails, keepalive, balancing), and proxy_pass targets -> the
 * upstream a route names (a host:port of its own becomes a group of one).
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

/* ---------------------------------------------------------------- upstreams */

upstream_out_t *nginx_upstream_find(imp_t *im, const char *name)
{
    for (upstream_out_t *u = im->ups; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static upstream_out_t *new_upstream(imp_t *im, const char *name)
{
    upstream_out_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        abort();
    imp_setting_name(u->name, sizeof(u->name) - 8, name);
    size_t base = strlen(u->name);
    for (int k = 2; nginx_upstream_find(im, u->name); k++)     /* app.v1 and app_v1 */
        snprintf(u->name + base, sizeof(u->name) - base, "_%d", k);
    upstream_out_t **t = &im->ups;
    while (*t)
        t = &(*t)->next;
    *t = u;
    return u;
}

static int resolves(const char *hostport)
{
    char host[256];
    const char *h = hostport;
    size_t n;
    if (h[0] == '[') {
        const char *e = strchr(h, ']');
        if (e == NULL)
            return 0;
        n = (size_t)(e - h - 1);
        h++;
    } else {
        const char *c = strrchr(h, ':');
        n = c ? (size_t)(c - h) : strlen(h);
    }
    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (res)
        freeaddrinfo(res);
    return rc == 0;
}

/* "host[:port]" of nginx -> legate's "host:port" (port 80 by default) */
static void with_port(char *out, size_t outlen, const char *addr, int tls)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        snprintf(out, outlen, "%s", addr);
        return;
    }
    const char *close = strchr(addr, ']');
    const char *colon = strrchr(close ? close : addr, ':');
    if (colon)
        snprintf(out, outlen, "%s", addr);
    else
        snprintf(out, outlen, "%s:%d", addr, tls ? 443 : 80);
}

/* A resolver address as legate's resolvers take it: an IPv4 or IPv6
 * address, IPv4 with a port; 0 for a name (legate wants addresses). */
static int resolver_addr(const char *a)
{
    unsigned char buf[16];
    char host[64];
    if (inet_pton(AF_INET6, a, buf) == 1)
        return 1;
    const char *colon = strchr(a, ':');
    size_t n = colon ? (size_t)(colon - a) : strlen(a);
    if (n >= sizeof(host))
        return 0;
    memcpy(host, a, n);
    host[n] = '\0';
    if (inet_pton(AF_INET, host, buf) != 1)
        return 0;
    if (colon == NULL)
        return 1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return *end == '\0' && end != colon + 1 && port >= 1 && port <= 65535;
}

/* The resolver of an upstream with "server ... resolve": its own (nginx
 * 1.27.3 allows one in the block), else the http level's. */
static void emit_resolver(imp_t *im, sb_t *b, const ngx_dir_t *ups)
{
    const ngx_dir_t *r = imp_child(ups->block, "resolver");
    if (r == NULL && im->http)
        r = imp_child(im->http->block, "resolver");
    if (r == NULL) {
        imp_report(im, ups, "server ... resolve without a resolver (nginx refuses it): legate "
                            "asks those of /etc/resolv.conf");
        return;
    }
    if (r != imp_child(ups->block, "resolver"))
        im->resolver_used = 1;      /* the http level's: not reported there */
    int nres = 0;
    sb_t list = { 0 };
    imp_sb_add(&list, "", 0);
    for (int i = 1; i < r->nargs; i++) {
        const char *a = r->args[i];
        if (strncmp(a, "valid=", 6) == 0) {
            long long ms = imp_time_ms(a + 6);
            if (ms < 0 || ms > 3600LL * 1000) {
                imp_report(im, r, "\"%s\": legate takes up to an hour: the TTL is used", a);
                continue;
            }
            imp_ind(b, 3);
            imp_sb_str(b, "resolve_valid = ");
            imp_sb_duration(b, ms);
            imp_sb_str(b, ";\n");
        } else if (strncmp(a, "ipv4=", 5) == 0 || strncmp(a, "ipv6=", 5) == 0 ||
                   strncmp(a, "status_zone=", 12) == 0) {
            imp_report(im, r, "\"%s\": legate takes the first address, IPv4 first: ignored", a);
        } else if (!resolver_addr(a)) {
            imp_report(im, r, "\"%s\": legate's resolvers are addresses (ip or ip:port): "
                              "left out", a);
        } else {
            imp_sb_str(&list, nres++ ? ", " : "");
            imp_sb_quote(&list, a);
        }
    }
    if (nres) {
        imp_ind(b, 3);
        imp_sb_printf(b, "resolvers = [ %s ];\n", list.p);
    } else
        imp_report(im, r, "no address legate can ask: those of /etc/resolv.conf are asked");
    free(list.p);
}

void nginx_upstream_translate(imp_t *im, const ngx_dir_t *d)
{
    if (d->nargs != 2) {
        imp_report(im, d, "takes one name: left out");
        return;
    }
    upstream_out_t *u = new_upstream(im, d->args[1]);
    sb_t *b = &u->body;
    imp_sb_add(b, "", 0);
    long max_fails = -1;
    long long fail_timeout = -1;
    int nsrv = 0, resolve = 0;
    sb_t srv = { 0 };
    imp_sb_add(&srv, "", 0);
    for (const ngx_dir_t *s = d->block; s; s = s->next) {
        if (imp_is(s, "server") && s->nargs >= 2) {
            char addr[300];
            int res = 0;
            for (int i = 2; i < s->nargs; i++)
                res |= strcmp(s->args[i], "resolve") == 0;
            with_port(addr, sizeof(addr), s->args[1], 0);
            if (res && strncmp(addr, "unix:", 5) == 0) {
                imp_report(im, s, "resolve with a unix socket: ignored");
                res = 0;
            }
            if (res && !resolve) {
                /* legate re-resolves per upstream, not per server */
                resolve = 1;
                imp_ind(b, 3);
                imp_sb_str(b, "resolve = true;\n");
                emit_resolver(im, b, d);
            }
            /* a name looked up while running needs no answer now */
            if (!res && strncmp(addr, "unix:", 5) != 0 && !resolves(addr)) {
                imp_report(im, s, "\"%s\" does not resolve: left out", s->args[1]);
                continue;
            }
            imp_sb_str(&srv, nsrv++ ? ",\n" : "\n");
            imp_ind(&srv, 4);
            imp_sb_str(&srv, "{ address = ");
            imp_sb_quote(&srv, addr);
            imp_sb_str(&srv, ";");
            for (int i = 2; i < s->nargs; i++) {
                const char *a = s->args[i];
                if (strncmp(a, "weight=", 7) == 0)
                    imp_sb_printf(&srv, " weight = %ld;", atol(a + 7));
                else if (strncmp(a, "max_conns=", 10) == 0)
                    imp_sb_printf(&srv, " max_conns = %ld;", atol(a + 10));
                else if (strcmp(a, "backup") == 0)
                    imp_sb_str(&srv, " backup = true;");
                else if (strcmp(a, "down") == 0)
                    imp_sb_str(&srv, " down = true;");
                else if (strncmp(a, "max_fails=", 10) == 0) {
                    long v = atol(a + 10);
                    if (max_fails >= 0 && v != max_fails)
                        imp_report(im, s, "legate has one max_fails per upstream: %ld is used", max_fails);
                    else
                        max_fails = v;
                } else if (strncmp(a, "fail_timeout=", 13) == 0) {
                    long long v = imp_time_ms(a + 13);
                    if (v <= 0)
                        imp_report(im, s, "cannot read \"%s\": ignored", a);
                    else if (fail_timeout >= 0 && v != fail_timeout)
                        imp_report(im, s, "legate has one fail_timeout per upstream: the first is used");
                    else
                        fail_timeout = v;
                } else if (strcmp(a, "resolve") == 0) {
                    /* above */
                } else if (strncmp(a, "slow_start=", 11) == 0) {
                    imp_report(im, s, "slow_start is per upstream in legate: set it there by hand");
                } else
                    imp_report(im, s, "\"%s\" is not in legate: ignored", a);
            }
            imp_sb_str(&srv, " }");
        } else if (imp_is(s, "keepalive") && s->nargs == 2) {
            imp_ind(b, 3);
            imp_sb_printf(b, "keepalive = %ld;\n", atol(s->args[1]));
        } else if (imp_is(s, "least_conn")) {
            imp_ind(b, 3);
            imp_sb_str(b, "balance = \"least_conn\";\n");
        } else if (imp_is(s, "ip_hash")) {
            imp_ind(b, 3);
            imp_sb_str(b, "balance = \"ip_hash\";\n");
        } else if (imp_is(s, "random")) {
            imp_ind(b, 3);
            imp_sb_str(b, "balance = \"random\";\n");
            if (s->nargs > 1 && strcmp(s->args[1], "two") != 0)
                imp_report(im, s, "legate's random always takes two choices");
        } else if (imp_is(s, "hash") && s->nargs >= 2) {
            const char *why = NULL;
            char *t = imp_template(s->args[1], &why);
            if (t == NULL) {
                imp_report(im, s, "%s: round robin instead", why);
                continue;
            }
            imp_ind(b, 3);
            imp_sb_str(b, "balance = \"hash\";\n");
            imp_kv_quoted(b, 3, "hash_key", t);
            free(t);
            if (s->nargs < 3 || strcmp(s->args[2], "consistent") != 0)
                imp_report(im, s, "legate's hash is always consistent (Maglev)");
        } else if (imp_is(s, "keepalive_timeout") || imp_is(s, "keepalive_requests") ||
                   imp_is(s, "keepalive_time")) {
            imp_report(im, s, "legate's idle upstream connections have no limit of their own: ignored");
        } else if (imp_is(s, "resolver") || imp_is(s, "resolver_timeout")) {
            /* with the first server ... resolve */
        } else if (imp_is(s, "zone")) {
            /* legate keeps upstream state in its shared memory anyway */
        } else
            imp_report(im, s, "not translated in an upstream");
    }
    if (!resolve && imp_child(d->block, "resolver"))
        imp_report(im, imp_child(d->block, "resolver"), "no server ... resolve uses it: left out");
    if (resolve)
        imp_report(im, d, "resolve: legate looks every name of the upstream up again, and one "
                          "name is one server (its first address, IPv4 first)");
    if (max_fails >= 0) {
        imp_ind(b, 3);
        imp_sb_printf(b, "max_fails = %ld;\n", max_fails);
    }
    if (fail_timeout > 0) {
        imp_ind(b, 3);
        imp_sb_str(b, "fail_timeout = ");
        imp_sb_duration(b, fail_timeout);
        imp_sb_str(b, ";\n");
    }
    if (nsrv == 0) {
        imp_report(im, d, "no server left: a placeholder 127.0.0.1:9 marked down is written");
        imp_sb_str(&srv, "\n");
        imp_ind(&srv, 4);
        imp_sb_str(&srv, "{ address = \"127.0.0.1:9\"; down = true; }");
    }
    imp_ind(b, 3);
    imp_sb_printf(b, "servers = (%s\n", srv.p);
    imp_ind(b, 3);
    imp_sb_str(b, ");\n");
    free(srv.p);
}

/* proxy_pass URL -> upstream name (made for a literal address); the URI part in *uri */
const char *nginx_upstream_for(imp_t *im, const ngx_dir_t *d, const char *url, const char **uri,
                                      int *tls)
{
    const char *p;
    *tls = 0;
    if (strncmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        *tls = 1;
    } else {
        imp_report(im, d, "only http:// and https:// are proxied by legate: left out");
        return NULL;
    }
    if (strchr(url, '$')) {
        imp_report(im, d, "a proxy_pass with variables is not in legate: left out");
        return NULL;
    }
    char host[300];
    const char *slash = strchr(p, '/');
    if (strncmp(p, "unix:", 5) == 0) {
        const char *c = strchr(p + 5, ':');
        slash = c ? c + 1 : NULL;
        size_t n = c ? (size_t)(c - p) : strlen(p);
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
    } else {
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
    }
    *uri = slash && *slash ? slash : NULL;
    char key[128];
    imp_setting_name(key, sizeof(key), host);
    upstream_out_t *u = nginx_upstream_find(im, key);
    if (u && !*tls)
        return u->name;
    /* a literal address: an upstream of its own */
    char name[140];
    snprintf(name, sizeof(name), "%s%s", key, *tls ? "_tls" : "");
    if ((u = nginx_upstream_find(im, name)) != NULL)
        return u->name;
    if (u == NULL && nginx_upstream_find(im, key) && *tls) {
        imp_report(im, d, "https:// to an upstream block: set tls = true on upstream \"%s\" by hand",
                   key);
        return nginx_upstream_find(im, key)->name;
    }
    char addr[320];
    with_port(addr, sizeof(addr), host, *tls);
    if (strncmp(addr, "unix:", 5) != 0 && !resolves(addr)) {
        imp_report(im, d, "\"%s\" does not resolve: left out", host);
        return NULL;
    }
    u = new_upstream(im, name);
    imp_sb_add(&u->body, "", 0);
    imp_ind(&u->body, 3);
    imp_sb_str(&u->body, "servers = ( ");
    imp_sb_quote(&u->body, addr);
    imp_sb_str(&u->body, " );\n");
    if (*tls) {
        imp_ind(&u->body, 3);
        imp_sb_str(&u->body, "tls = true;\n");
        imp_ind(&u->body, 3);
        imp_sb_str(&u->body, "tls_verify = false;   # nginx's proxy_ssl_verify off\n");
    }
    return u->name;
}

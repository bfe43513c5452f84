/*
 * The forward proxy: requests from clients that chose legate as their
 * proxy, in absolute form (GET http://host/path) or as CONNECT tunnels.
 *
 *   client ACL -> sign-in / anonymous_domains -> the port policy of the
 *     way in (connect_ports, socks_ports, http_ports) -> domain blocklists
 *     -> URL filters -> a parent rule (parent.c: through an upstream of
 *     parent proxies, or direct) -> an idle connection to the destination
 *     (dest_pool.c), else resolve (c-ares, never blocking) -> destination
 *     address checks (private ranges unless allow_private: server-side
 *     request forgery; deny_destinations) -> a destination upstream made
 *     at run time, pooled as any upstream -> the ordinary proxy path, or
 *     a tunnel.  The parents failing: direct, unless never_direct.
 *
 * The lists are built once by the master (lg_forward_prepare, also run by
 * legate -t so a bad file is a FILE:LINE error) and shared with the
 * workers by fork.  Each worker has one resolver per forward server.
 */
#include "forward/forward.h"
#include "forward/dest_pool.h"
#include "forward/gateway.h"
#include "forward/parent.h"

#include "pipeline/headers.h"
#include "pipeline/tunnel.h"
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "feature/metrics.h"
#include "net/acl.h"
#include "net/clienthello.h"
#include "net/resolve.h"
#include "net/geo.h"
#include "net/htpasswd.h"
#include "net/tls_mint.h"

#include <openssl/crypto.h>

/* A group of auth_groups_file and, per user rule, its built lists. */
typedef struct fwd_group {
    char   *name;
    char  **members;
    size_t  n;
} fwd_group_t;

typedef struct fwd_urule {
    lg_domset_t  *allow, *block;
    lg_portset_t *cports;       /* CONNECT; NULL: the forward's */
    lg_portset_t *sports;       /* SOCKS5; NULL: the forward's */
} fwd_urule_t;

typedef struct fwd_rt {
    lg_htpasswd_t *users;       /* auth_file (every htpasswd format, net/htpasswd.c) */
    fwd_group_t   *groups;
    size_t         ngroups;
    fwd_urule_t   *urules;      /* parallel to lg_forward_t.user_rules */
    size_t         nurules;
    lg_cidr_set_t *allow, *deny, *deny_dst;
    lg_domset_t   *block;
    lg_domset_t   *anon;        /* anonymous_domains */
    lg_urlre_t    *urlre;
    /* one port policy per way in, as Squid's SSL_ports and Safe_ports */
    lg_portset_t   cports;      /* connect_ports: CONNECT */
    lg_portset_t   sports;      /* socks_ports: SOCKS5 */
    lg_portset_t   hports;      /* http_ports: absolute-form http:// */
    lg_parents_t  *parents;     /* parent proxy rules (parent.c), or NULL */
    /* TLS inspection: names intercepted and never intercepted, the CA, and
     * the context destinations are verified with (all NULL: none) */
    lg_domset_t   *inspect, *inspect_never;
    lg_mint_ca_t  *ca;
    struct ssl_ctx_st *verify_ctx;
    lg_resolver_t *resolver;    /* per worker, made on first use */
} fwd_rt_t;

static void rt_free(void *p)
{
    fwd_rt_t *rt = p;
    if (rt == NULL)
        return;
    lg_cidr_free(rt->allow);
    lg_cidr_free(rt->deny);
    lg_cidr_free(rt->deny_dst);
    lg_domset_free(rt->block);
    lg_domset_free(rt->anon);
    lg_urlre_free(rt->urlre);
    lg_parents_free(rt->parents);
    lg_domset_free(rt->inspect);
    lg_domset_free(rt->inspect_never);
    lg_mint_ca_free(rt->ca);
    lg_mint_ctx_free(rt->verify_ctx);
    lg_htpasswd_free(rt->users);
    for (size_t i = 0; i < rt->ngroups; i++) {
        for (size_t k = 0; k < rt->groups[i].n; k++)
            free(rt->groups[i].members[k]);
        free(rt->groups[i].members);
        free(rt->groups[i].name);
    }
    free(rt->groups);
    for (size_t i = 0; i < rt->nurules; i++) {
        lg_domset_free(rt->urules[i].allow);
        lg_domset_free(rt->urules[i].block);
        free(rt->urules[i].cports);
        free(rt->urules[i].sports);
    }
    free(rt->urules);
    free(rt);
}

#define ERR(...) (*used += (size_t)snprintf(err + *used, *used < errlen ? errlen - *used : 0, \
                                            __VA_ARGS__))

/* auth_groups_file: "group: user user ..." (commas allowed), "#" comments, as
 * Apache's AuthGroupFile. */
static int load_groups(fwd_rt_t *rt, const char *path, char *err, size_t errlen, size_t *used)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        ERR("%s: cannot read: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line + strspn(line, " \t");
        if (*p == '\0' || *p == '#')
            continue;
        size_t nl = strcspn(p, " \t:");
        char *colon = p + nl + strspn(p + nl, " \t");
        if (nl == 0 || *colon != ':') {
            ERR("%s:%d: expected \"group: user user ...\"\n", path, lineno);
            rc = -1;
            continue;
        }
        fwd_group_t *g = realloc(rt->groups, (rt->ngroups + 1) * sizeof(*g));
        if (g == NULL)
            break;
        rt->groups = g;
        g = &rt->groups[rt->ngroups++];
        memset(g, 0, sizeof(*g));
        g->name = strndup(p, nl);
        for (char *save = NULL, *m = strtok_r(colon + 1, " \t,", &save); m;
             m = strtok_r(NULL, " \t,", &save)) {
            char **mm = realloc(g->members, (g->n + 1) * sizeof(*mm));
            if (mm == NULL)
                break;
            g->members = mm;
            g->members[g->n++] = strdup(m);
        }
    }
    fclose(f);
    return rc;
}

static const fwd_group_t *group_of(const fwd_rt_t *rt, const char *name)
{
    for (size_t i = 0; i < rt->ngroups; i++)
        if (rt->groups[i].name && strcmp(rt->groups[i].name, name) == 0)
            return &rt->groups[i];
    return NULL;
}

/* "*" any signed-in user, "@group" its members, else the name itself. */
static int user_is(const fwd_rt_t *rt, const char *user, const char *pat)
{
    if (user == NULL)
        return 0;
    if (strcmp(pat, "*") == 0)
        return 1;
    if (pat[0] != '@')
        return strcmp(pat, user) == 0;
    const fwd_group_t *g = group_of(rt, pat + 1);
    for (size_t i = 0; g && i < g->n; i++)
        if (g->members[i] && strcmp(g->members[i], user) == 0)
            return 1;
    return 0;
}

static int user_in(const fwd_rt_t *rt, const char *user, const lg_strv_t *pats)
{
    for (size_t i = 0; pats && i < pats->n; i++)
        if (user_is(rt, user, pats->v[i]))
            return 1;
    return 0;
}

/* Every "@group" named must exist: a typo would silently match no one. */
static int check_groups(const fwd_rt_t *rt, const lg_strv_t *pats, const char *file, int line,
                        const char *what, char *err, size_t errlen, size_t *used)
{
    int rc = 0;
    for (size_t i = 0; pats && i < pats->n; i++)
        if (pats->v[i][0] == '@' && group_of(rt, pats->v[i] + 1) == NULL) {
            ERR("%s:%d: '%s': no group \"%s\" in auth_groups_file\n", file, line, what,
                pats->v[i] + 1);
            rc = -1;
        }
    return rc;
}

static lg_domset_t *domains(const lg_strv_t *v, const char *what)
{
    lg_domset_t *d = lg_domset_new();
    for (size_t k = 0; d && v && k < v->n; k++)
        lg_domset_add(d, v->v[k], strlen(v->v[k]), what);
    return d;
}

/* A user rule's own port list, if it has one: 0, or -1 with err. */
static int user_ports(lg_portset_t **out, const char *text, const char *file, int line,
                      const char *what, char *err, size_t errlen, size_t *used)
{
    char msg[256];
    if (text == NULL)
        return 0;
    *out = calloc(1, sizeof(**out));
    if (*out == NULL || lg_portset_parse(*out, text, msg, sizeof(msg)) < 0) {
        ERR("%s:%d: '%s': %s\n", file, line, what, *out ? msg : "out of memory");
        return -1;
    }
    return 0;
}

static int build_user_rules(fwd_rt_t *rt, const lg_forward_t *f, const char *file, char *err,
                            size_t errlen, size_t *used)
{
    int rc = 0;
    if (f->auth_groups_file && load_groups(rt, f->auth_groups_file, err, errlen, used) < 0)
        rc = -1;
    rc |= check_groups(rt, f->allow_users, file, f->line, "allow_users", err, errlen, used);
    if (f->nuser_rules == 0)
        return rc;
    rt->urules = calloc(f->nuser_rules, sizeof(*rt->urules));
    if (rt->urules == NULL)
        return -1;
    rt->nurules = f->nuser_rules;
    for (size_t i = 0; i < f->nuser_rules; i++) {
        const lg_user_rule_t *r = &f->user_rules[i];
        fwd_urule_t *u = &rt->urules[i];
        rc |= check_groups(rt, r->users, file, r->line, "users", err, errlen, used);
        u->allow = domains(r->allow_domains, "allow_domains");
        u->block = domains(r->block_domains, "block_domains");
        rc |= user_ports(&u->cports, r->connect_ports, file, r->line, "connect_ports", err,
                         errlen, used);
        rc |= user_ports(&u->sports, r->socks_ports, file, r->line, "socks_ports", err, errlen,
                         used);
    }
    return rc;
}

static int cidrs(lg_cidr_set_t **out, const lg_strv_t *v, const char *file, int line,
                 const char *what, char *err, size_t errlen, size_t *used)
{
    char msg[256];
    *out = lg_cidr_new();
    if (*out == NULL)
        return -1;
    for (size_t i = 0; v && i < v->n; i++) {
        if (lg_cidr_add(*out, v->v[i], msg, sizeof(msg)) < 0) {
            *used += (size_t)snprintf(err + *used, *used < errlen ? errlen - *used : 0,
                                      "%s:%d: '%s': %s\n", file, line, what, msg);
            return -1;
        }
    }
    return lg_cidr_build(*out, msg, sizeof(msg));
}

/*
 * cache_purge_allow: a set per list as written; a level that inherited its
 * parent's list (the merge copies the pointer) shares the parent's set.
 */
static int purge_set(lg_common_t *c, const lg_common_t *parent, const char *file, int line,
                     char *err, size_t errlen, size_t *used)
{
    if (parent && c->cache_purge_allow == parent->cache_purge_allow) {
        c->cache_purge_rt = parent->cache_purge_rt;
        return 0;
    }
    if (c->cache_purge_allow == NULL || c->cache_purge_allow->n == 0)
        return 0;
    return cidrs((lg_cidr_set_t **)&c->cache_purge_rt, c->cache_purge_allow, file, line,
                 "cache_purge_allow", err, errlen, used);
}

static void proxy_free(lg_conf_t *conf)
{
    lg_geo_free(conf->geo);
    conf->geo = NULL;
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        lg_cidr_free(srv->real_ip_rt);
        srv->real_ip_rt = NULL;
        for (size_t j = 0; j < srv->nroutes; j++)
            if (srv->routes[j].common.cache_purge_rt != srv->common.cache_purge_rt)
                lg_cidr_free(srv->routes[j].common.cache_purge_rt);
        if (srv->common.cache_purge_rt != conf->http.cache_purge_rt)
            lg_cidr_free(srv->common.cache_purge_rt);
    }
    lg_cidr_free(conf->http.cache_purge_rt);
    conf->http.cache_purge_rt = NULL;
}

static void sni_tunnel_open(lg_req_t *s, lg_tunnel_t *t);

/* tls_inspect / tls_inspect_never: names, each covering its subdomains
 * ("*.example.com" is read as "example.com"); a bad one is an error. */
static lg_domset_t *inspect_set(const lg_strv_t *v, const char *what, const char *file, int line,
                                char *err, size_t errlen, size_t *used, int *rc)
{
    lg_domset_t *d = lg_domset_new();
    for (size_t k = 0; d && v && k < v->n; k++) {
        const char *n = v->v[k];
        if (strncmp(n, "*.", 2) == 0)
            n += 2;
        if (lg_domset_add(d, n, strlen(n), what) < 0) {
            ERR("%s:%d: '%s': \"%s\" is not a domain name\n", file, line, what, v->v[k]);
            *rc = -1;
        }
    }
    return d;
}

/* The CA, the name lists and the destinations' verifying context. */
static void inspect_prepare(fwd_rt_t *rt, const lg_forward_t *f, const char *file, char *err,
                            size_t errlen, size_t *used, int *rc)
{
    if (f->tls_inspect == NULL || f->tls_inspect->n == 0)
        return;
    char msg[512];
    int line = f->tls_inspect_line;
    rt->inspect = inspect_set(f->tls_inspect, "tls_inspect", file, f->line, err, errlen, used, rc);
    rt->inspect_never = inspect_set(f->tls_inspect_never, "tls_inspect_never", file, f->line, err,
                                    errlen, used, rc);
    if ((rt->ca = lg_mint_ca_load(f->tls_inspect_ca, f->tls_inspect_ca_key, msg,
                                  sizeof(msg))) == NULL) {
        ERR("%s:%d: %s\n", file, line, msg);
        *rc = -1;
    }
    if ((rt->verify_ctx = lg_mint_verify_ctx(f->tls_inspect_verify, msg, sizeof(msg))) == NULL) {
        ERR("%s:%d: %s%s%s\n", file, f->line, msg, f->tls_inspect_verify ? " " : "",
            f->tls_inspect_verify ? f->tls_inspect_verify : "");
        *rc = -1;
    }
}

int lg_forward_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    size_t used = strlen(err);
    int rc = 0;
    lg_tunnel_open_hook = sni_tunnel_open;      /* connect_sni (below) */
    conf->proxy_free = proxy_free;
    if (conf->geoip_mmdb || (conf->geoip_csv_blocks && conf->geoip_csv_blocks->n)) {
        char msg[512];
        if (conf->geoip_mmdb == NULL && conf->geoip_csv_locations == NULL) {
            used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                     "%s:%d: 'geoip_csv_blocks' needs 'geoip_csv_locations'\n",
                                     conf->file, conf->geoip_line);
            rc = -1;
        } else if ((conf->geo = lg_geo_open(conf->geoip_mmdb,
                                            conf->geoip_csv_blocks ? conf->geoip_csv_blocks->v : NULL,
                                            conf->geoip_csv_blocks ? conf->geoip_csv_blocks->n : 0,
                                            conf->geoip_csv_locations, msg, sizeof(msg))) == NULL) {
            used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                     "%s:%d: geoip: %s\n", conf->file, conf->geoip_line, msg);
            rc = -1;
        }
    }
    if (purge_set(&conf->http, NULL, conf->file, conf->http_line, err, errlen, &used) < 0)
        rc = -1;
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        if (purge_set(&srv->common, &conf->http, conf->file, srv->line, err, errlen, &used) < 0)
            rc = -1;
        for (size_t j = 0; j < srv->nroutes; j++)
            if (purge_set(&srv->routes[j].common, &srv->common, conf->file, srv->routes[j].line,
                          err, errlen, &used) < 0)
                rc = -1;
        if (srv->real_ip_from && srv->real_ip_from->n &&
            cidrs((lg_cidr_set_t **)&srv->real_ip_rt, srv->real_ip_from, conf->file, srv->line,
                  "real_ip_from", err, errlen, &used) < 0)
            rc = -1;
    }
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_forward_t *f = conf->servers[i].forward;
        if (f == NULL)
            continue;
        fwd_rt_t *rt = calloc(1, sizeof(*rt));
        if (rt == NULL)
            return -1;
        f->rt = rt;
        f->rt_free = rt_free;   /* lg_conf_free() calls it */
        char msg[512];
        const char *file = conf->file;
        if (cidrs(&rt->allow, f->allow_clients, file, f->line, "allow_clients", err, errlen, &used) < 0 ||
            cidrs(&rt->deny, f->deny_clients, file, f->line, "deny_clients", err, errlen, &used) < 0 ||
            cidrs(&rt->deny_dst, f->deny_destinations, file, f->line, "deny_destinations", err,
                  errlen, &used) < 0)
            rc = -1;
        const struct { lg_portset_t *set; const char *text, *name; } pol[] = {
            { &rt->cports, f->connect_ports, "connect_ports" },
            { &rt->sports, f->socks_ports, "socks_ports" },
            { &rt->hports, f->http_ports, "http_ports" },
        };
        for (size_t k = 0; k < sizeof(pol) / sizeof(pol[0]); k++) {
            lg_portset_clear(pol[k].set);
            if (lg_portset_parse(pol[k].set, pol[k].text, msg, sizeof(msg)) < 0) {
                used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                         "%s:%d: '%s': %s\n", file, f->line, pol[k].name, msg);
                rc = -1;
            }
        }
        rt->anon = domains(f->anonymous_domains, "anonymous_domains");
        rt->block = domains(f->block_domains, "block_domains");
        for (size_t k = 0; rt->block && f->blocklists && k < f->blocklists->n; k++) {
            lg_domset_stats_t st;
            if (lg_domset_load(rt->block, f->blocklists->v[k], LG_DOMSET_AUTO, &st, msg,
                               sizeof(msg)) < 0) {
                used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                         "%s:%d: blocklist: %s\n", file, f->line, msg);
                rc = -1;
            }
        }
        if (f->auth_file) {
            if ((rt->users = lg_htpasswd_load(f->auth_file, err, errlen)) == NULL)
                rc = -1;
            used = strlen(err);
        }
        if (build_user_rules(rt, f, file, err, errlen, &used) < 0)
            rc = -1;
        rt->parents = lg_parents_build(conf, f, err, errlen, &rc);
        used = strlen(err);
        inspect_prepare(rt, f, file, err, errlen, &used, &rc);
        rt->urlre = lg_urlre_new();
        for (size_t k = 0; rt->urlre && f->url_filters && k < f->url_filters->n; k++) {
            if (lg_urlre_add(rt->urlre, f->url_filters->v[k], msg, sizeof(msg)) < 0) {
                used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                         "%s:%d: 'url_filters': %s\n", file, f->line, msg);
                rc = -1;
            }
        }
    }
    return rc;
}

/* ---- the worker side ---- */

static lg_resolver_t *resolver_of(lg_forward_t *f)
{
    fwd_rt_t *rt = f->rt;
    if (rt->resolver)
        return rt->resolver;
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.servers = f->resolvers ? (const char *const *)f->resolvers->v : NULL;
    o.nservers = f->resolvers ? f->resolvers->n : 0;
    o.hosts_file = f->hosts_file;
    o.family = strcmp(f->dns_family, "ipv6_first") == 0 ? LG_RESOLVE_V6_FIRST :
               strcmp(f->dns_family, "ipv4_only") == 0 ? LG_RESOLVE_V4_ONLY :
               strcmp(f->dns_family, "ipv6_only") == 0 ? LG_RESOLVE_V6_ONLY : LG_RESOLVE_V4_FIRST;
    char err[256];
    rt->resolver = lg_resolver_new(&lg_w.loop, &o, err, sizeof(err));
    if (rt->resolver == NULL)
        lg_alert("cannot start the resolver: %s", err);
    return rt->resolver;
}

int lg_forward_check_user(lg_req_t *s, const char *user, const char *pass)
{
    fwd_rt_t *rt = s->conn->bind->default_server->forward->rt;
    if (!lg_htpasswd_check(rt->users, user, pass, lg_w.loop.now))
        return 0;
    s->user = lg_arena_strdup(&s->arena, user);
    return 1;
}

/* Proxy-Authorization: Basic; 1 and s->user set, or 0. */
static int authenticate(lg_req_t *s, fwd_rt_t *rt)
{
    const http_header_t *h = lg_headers_get(s, "proxy-authorization");
    char buf[512];
    const char *user, *pass;
    if (h == NULL || lg_htpasswd_basic(h->value, h->value_len, buf, sizeof(buf), &user, &pass) < 0)
        return 0;
    int ok = lg_htpasswd_check(rt->users, user, pass, lg_w.loop.now);
    if (ok)
        s->user = lg_arena_strdup(&s->arena, user);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

/* Why a request is refused, for the 403 page and the log. */
static void refuse(lg_req_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(lg_req_t *s, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    s->blocked = lg_arena_strdup(&s->arena, why);
    lg_info("forward proxy: %s refused: %s", s->peer_text, why);
    char *page = lg_arena_printf(&s->arena,
        "<html><head><title>403 Forbidden</title></head><body>\r\n"
        "<h1>403 Forbidden</h1>\r\n<p>legate refused this request: %s</p>\r\n</body></html>\r\n",
        why);
    lg_respond(s, 403, page, NULL);
}

/* The destination's name as rules and the resolver see it ("[v6]" -> "v6"). */
static size_t dest_host(const lg_req_t *s, char host[256])
{
    size_t hn = s->ri.host.n < 256 ? s->ri.host.n : 255;
    const char *hp = s->ri.host.p;
    if (hn >= 2 && hp[0] == '[') {
        hp++;
        hn -= 2;
    }
    memcpy(host, hp, hn);
    host[hn] = '\0';
    return hn;
}

/* A request's state (its context slot; arena, made by CONTENT). */
typedef struct fwd_req {
    struct lg_resolve *lookup;  /* in flight, or NULL */
    int                parent;  /* the parent rule it went by, or -1 */
    int                direct;  /* failed over to direct: no parent again */
} fwd_req_t;

static int fwd_slot;
#define FREQ(s) ((fwd_req_t *)(s)->ctx[fwd_slot])

static const lg_stage_t resolve_stage;
static int addr_refusal(lg_forward_t *f, const struct sockaddr_storage *ss, char *why, size_t wl);

static void resolved(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    lg_req_t *s = arg;
    FREQ(s)->lookup = NULL;
    lg_forward_t *f = s->server->forward;
    lg_mx_count(LG_MX_DNS, NULL, NULL, status == LG_RESOLVE_OK && n ? "ok" : "failed", 1);
    if (status != LG_RESOLVE_OK || n == 0) {
        lg_error("forward proxy: cannot resolve \"%.*s\": %s, client: %s", (int)s->ri.host.n,
                 s->ri.host.p, lg_resolve_strerror(status), s->peer_text);
        lg_respond_error(s, 502);
        lg_req_run(s);
        return;
    }
    struct sockaddr_storage ss = addrs[0];
    static const unsigned dport[] = { [LG_SCHEME_HTTP] = 80, [LG_SCHEME_FTP] = 21,
                                      [LG_SCHEME_GOPHER] = 70 };
    unsigned port = s->ri.port ? (unsigned)s->ri.port : dport[s->ri.scheme];
    if (ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    /* judged on the address we would connect to, not the name: DNS
     * rebinding and odd literals cannot slip past */
    char why[256];
    if (addr_refusal(f, &ss, why, sizeof(why))) {
        refuse(s, "%s", why);
    } else if (s->ri.scheme == LG_SCHEME_FTP) {
        lg_ftp_start(s, &ss);           /* the gateways (gateway.h) */
    } else if (s->ri.scheme == LG_SCHEME_GOPHER) {
        lg_gopher_start(s, &ss);
    } else {
        char host[256];
        dest_host(s, host);
        /* inside an inspected tunnel: TLS to the destination, verified */
        lg_upstream_t *up = lg_dest_get(f, host, port, &ss, s->ri.connect,
                                        s->conn->inspect ? ((fwd_rt_t *)f->rt)->verify_ctx : NULL);
        if (up == NULL)
            lg_respond_error(s, 500);
        else
            lg_reverse_proxy_to(s, up);
    }
    lg_req_run(s);
}

/*
 * May the request's user go to host:port: the user's rule (the first
 * naming the user), the port policy of the way the request came in
 * (socks_ports for SOCKS5 CONNECT and SOCKS5 UDP datagrams, connect_ports
 * for CONNECT, http_ports for the rest; a user rule's own list first), the
 * blocklists.  0, or 1 with the reason in why.
 */
static int dest_refusal(lg_req_t *s, const char *host, size_t hn, unsigned port, char *why, size_t wl)
{
    lg_forward_t *f = s->server->forward;
    fwd_rt_t *rt = f->rt;
    const fwd_urule_t *ur = NULL;
    int urline = 0;
    for (size_t i = 0; i < rt->nurules && ur == NULL; i++)
        if (user_in(rt, s->user, f->user_rules[i].users)) {
            ur = &rt->urules[i];
            urline = f->user_rules[i].line;
        }
    int socks = s->conn->bind->socks;
    const lg_portset_t *own = socks ? (ur ? ur->sports : NULL) : s->ri.connect && ur ? ur->cports : NULL;
    const lg_portset_t *ports = own ? own : socks ? &rt->sports : s->ri.connect ? &rt->cports
                                                                             : &rt->hports;
    const char *what = s->ri.udp_associate ? "SOCKS5 UDP" : socks ? "SOCKS5 CONNECT"
                     : s->ri.connect ? "CONNECT" : "a request";
    lg_domset_hit_t hit;
    if (!lg_portset_has(ports, port)) {
        if (own == NULL)
            snprintf(why, wl, "%s to port %u is not allowed (%s)", what, port,
                     socks ? "socks_ports" : s->ri.connect ? "connect_ports" : "http_ports");
        else
            snprintf(why, wl, "%s to port %u is not allowed for %s (user rule at line %d)", what,
                     port, s->user, urline);
    } else if (lg_domset_match(rt->block, host, hn, &hit)) {
        snprintf(why, wl, "%s is blocked by %s (%s)", host, hit.source, hit.rule);
    } else if (ur && lg_domset_match(ur->block, host, hn, &hit)) {
        snprintf(why, wl, "%s is blocked for %s by the user rule at line %d (%s)", host, s->user,
                 urline, hit.rule);
    } else if (ur && lg_domset_count(ur->allow) && !lg_domset_match(ur->allow, host, hn, NULL)) {
        snprintf(why, wl, "%s is not in allow_domains for %s (user rule at line %d)", host,
                 s->user, urline);
    } else {
        return 0;
    }
    return 1;
}

/* The destination address: private ranges (unless allow_private) and
 * deny_destinations.  0, or 1 with the reason in why. */
static int addr_refusal(lg_forward_t *f, const struct sockaddr_storage *ss, char *why, size_t wl)
{
    fwd_rt_t *rt = f->rt;
    const char *cls = f->allow_private ? NULL : lg_cidr_private((const struct sockaddr *)ss, 0);
    int di = lg_cidr_lookup(rt->deny_dst, (const struct sockaddr *)ss);
    if (cls)
        snprintf(why, wl, "the destination is a %s address (allow_private is off)", cls);
    else if (di >= 0)
        snprintf(why, wl, "the destination address is in deny_destinations (%s)",
                 lg_cidr_rule(rt->deny_dst, di));
    else
        return 0;
    return 1;
}

struct lg_resolver *lg_forward_resolver(lg_req_t *s)
{
    return resolver_of(s->server->forward);
}

int lg_forward_udp_refusal(lg_req_t *s, const char *name, const struct sockaddr_storage *ss,
                           char *why, size_t wl)
{
    char host[64];
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    unsigned port = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                                    : ((const struct sockaddr_in *)ss)->sin_port);
    inet_ntop(ss->ss_family, a, host, sizeof(host));
    if (name == NULL)
        name = host;
    return dest_refusal(s, name, strlen(name), port, why, wl) ||
           addr_refusal(s->server->forward, ss, why, wl);
}

/*
 * The ACCESS phase for forward-proxy requests: who the client is and
 * whether it may go where it asks.  A refusal answers here (403, 407).
 */
static int forward_access(lg_req_t *s)
{
    if (s->ri.scheme != LG_SCHEME_HTTP && !lg_req_is_forward(s)) {
        lg_respond_error(s, 400);       /* ftp:// and gopher:// only where a forward proxy is */
        return LG_DONE;
    }
    if (!lg_req_is_forward(s))
        return LG_DECLINED;
    lg_forward_t *f = s->server->forward;
    fwd_rt_t *rt = f->rt;
    /* elite adds no Via, so it cannot see a loop either */
    if (strcmp(f->anonymity, "elite") != 0 && lg_headers_via_refuse(s))
        return LG_DONE;
    const struct sockaddr *peer = (const struct sockaddr *)&s->peer;
    int d = lg_cidr_lookup(rt->deny, peer);
    if (d >= 0) {
        refuse(s, "the client address is in deny_clients (%s)", lg_cidr_rule(rt->deny, d));
        return LG_DONE;
    }
    if (s->peer.ss_family != AF_UNIX && lg_cidr_lookup(rt->allow, peer) < 0) {
        refuse(s, "the client address is not in allow_clients");
        return LG_DONE;
    }
    if (f->allow_countries || f->deny_countries) {
        const char *cc = lg_realip_country(s);
        if (lg_strv_has(f->deny_countries, cc)) {
            refuse(s, "clients from %s are in deny_countries", cc);
            return LG_DONE;
        }
        if (f->allow_countries && !lg_strv_has(f->allow_countries, cc)) {
            refuse(s, "the client's country (%s) is not in allow_countries", cc[0] ? cc : "unknown");
            return LG_DONE;
        }
    }
    if (s->ri.udp_associate) {
        /* SOCKS5 signed in during its negotiation; each datagram's
         * destination is judged as it comes (lg_forward_udp_refusal) */
        if (f->allow_users && f->allow_users->n && !user_in(rt, s->user, f->allow_users)) {
            refuse(s, "user %s may not use this proxy (allow_users)", s->user ? s->user : "-");
            return LG_DONE;
        }
        lg_socks_udp_start(s);
        return LG_DONE;
    }
    if (s->ri.host.n == 0 || s->ri.host.n > 253) {
        lg_respond_error(s, 400);
        return LG_DONE;
    }
    char host[256];
    size_t hn = dest_host(s, host);
    /* anonymous_domains: where a client that did not sign in may go --
     * without signing in when there is an auth_file, and nowhere else
     * when there is none */
    int anon_ok = lg_domset_count(rt->anon) == 0 || lg_domset_match(rt->anon, host, hn, NULL);
    /* SOCKS5 authenticated during its negotiation (s->user set there) */
    if (f->auth_file && !s->conn->bind->socks && !authenticate(s, rt) &&
        !(lg_domset_count(rt->anon) && anon_ok)) {
        s->auth_realm = f->auth_realm;
        s->blocked = "proxy authentication required";
        lg_respond_error(s, 407);
        return LG_DONE;
    }
    if (s->user == NULL && !anon_ok) {
        refuse(s, "%s is not in anonymous_domains (clients that do not sign in may reach only "
               "those)", host);
        return LG_DONE;
    }
    if (f->allow_users && f->allow_users->n && !user_in(rt, s->user, f->allow_users)) {
        refuse(s, "user %s may not use this proxy (allow_users)", s->user ? s->user : "-");
        return LG_DONE;
    }
    char why[512];
    unsigned port = s->ri.port ? (unsigned)s->ri.port : s->ri.scheme == LG_SCHEME_FTP ? 21
                  : s->ri.scheme == LG_SCHEME_GOPHER ? 70 : 80;
    if (dest_refusal(s, host, hn, port, why, sizeof(why))) {
        refuse(s, "%s", why);
        return LG_DONE;
    }
    if (!s->ri.connect && lg_urlre_count(rt->urlre)) {
        static const char *const sch[] = { "http", "ftp", "gopher" };
        char *url = lg_arena_printf(&s->arena, "%s://%.*s%.*s",
                                    s->conn->inspect ? "https" : sch[s->ri.scheme],
                                    (int)s->ri.authority.n,
                                    s->ri.authority.p, (int)s->ri.uri.n, s->ri.uri.p);
        int k = url ? lg_urlre_match(rt->urlre, url, strlen(url)) : -1;
        if (k >= 0) {
            refuse(s, "the URL matches the filter \"%s\"", lg_urlre_pattern(rt->urlre, k));
            return LG_DONE;
        }
    }
    return LG_OK;               /* a cached answer (CACHE) needs no name lookup */
}

/*
 * connect_sni: the tunnel holds the client's first bytes (pipeline/
 * tunnel.c's gate) until they are a whole ClientHello, and its server
 * name is judged as a CONNECT host is -- anonymous_domains, the user's
 * rule, block_domains and blocklists (Squid's ssl_bump peek with
 * ssl::server_name).  "match" also wants it to be the CONNECT host
 * itself: a subdomain is another name (a front for it, perhaps), so it is
 * refused too.  Allowed, every byte read goes up unchanged.  The tunnel
 * is open (the 200 sent) when the client speaks, so a refusal closes it.
 */
static int sni_refuse(lg_req_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sni_refuse(lg_req_t *s, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    s->blocked = lg_arena_strdup(&s->arena, why);
    s->tunnel->ended = "sni refused";
    lg_info("forward proxy: %s tunnel to %.*s closed: %s", s->peer_text, (int)s->ri.host.n,
            s->ri.host.p, why);
    return -1;
}

static int inspect_gate(lg_req_t *s, const lg_clienthello_t *ch, lg_ch_rc_t rc,
                        const unsigned char *p, size_t n);

/* TLS inspection is configured and may apply: an HTTP/1.1 CONNECT (not
 * SOCKS5, not a stream of an HTTP/2 or HTTP/3 connection), not one inside
 * an inspected tunnel, nor over TLS to legate (an HTTPS proxy: the
 * client's connection has its TLS already, TLS inside it is spliced). */
static int may_inspect(const lg_req_t *s)
{
    return ((const fwd_rt_t *)s->server->forward->rt)->ca != NULL && !s->conn->bind->socks &&
           !s->conn->fe->multiplexed && s->conn->inspect == NULL && !lg_conn_tls(s->conn);
}

static int sni_gate(lg_req_t *s, const unsigned char *p, size_t n, lg_gate_why_t why)
{
    lg_forward_t *f = s->server->forward;
    lg_clienthello_t ch;
    lg_ch_rc_t rc = lg_clienthello_parse(p, n, &ch);
    if (rc == LG_CH_MORE && why == LG_GATE_BYTES)
        return 0;
    if (strcmp(f->connect_sni, "off") == 0)
        return inspect_gate(s, &ch, rc, p, n);     /* only TLS inspection waited */
    const char *missing = NULL;
    if (rc == LG_CH_MORE)
        missing = why == LG_GATE_TIMEOUT ? "no whole TLS ClientHello within connect_sni_timeout"
                : why == LG_GATE_EOF ? "the client stopped sending before its ClientHello was whole"
                : "the ClientHello is larger than the tunnel's buffer";
    else if (rc == LG_CH_NOT_TLS)
        missing = "the client's first bytes are not TLS";
    else if (rc == LG_CH_MALFORMED)
        missing = "the client's ClientHello is malformed";
    else if (!ch.has_sni)
        missing = "the client's ClientHello names no server (no SNI)";
    if (missing) {
        if (strcmp(f->connect_sni_missing, "allow") == 0) {
            lg_info("forward proxy: %s tunnel to %.*s relayed without a server name: %s "
                    "(connect_sni_missing is allow)", s->peer_text, (int)s->ri.host.n,
                    s->ri.host.p, missing);
            return 1;
        }
        return sni_refuse(s, "%s (connect_sni_missing is refuse)", missing);
    }
    s->tunnel->sni = lg_arena_strdup(&s->arena, ch.sni);
    char host[256];
    size_t hn = dest_host(s, host);
    while (hn && host[hn - 1] == '.')
        host[--hn] = '\0';
    if (strcmp(f->connect_sni, "match") == 0 &&
        (hn != ch.sni_len || strncasecmp(host, ch.sni, hn) != 0))
        return sni_refuse(s, "the ClientHello's server name %s is not the CONNECT host %s "
                          "(connect_sni is match)", ch.sni, host);
    fwd_rt_t *rt = f->rt;
    if (s->user == NULL && lg_domset_count(rt->anon) &&
        !lg_domset_match(rt->anon, ch.sni, ch.sni_len, NULL))
        return sni_refuse(s, "the ClientHello's server name %s is not in anonymous_domains",
                          ch.sni);
    char w[512];
    if (dest_refusal(s, ch.sni, ch.sni_len, (unsigned)s->ri.port, w, sizeof(w)))
        return sni_refuse(s, "the ClientHello's server name: %s", w);
    return inspect_gate(s, &ch, rc, p, n);
}

/*
 * TLS inspection (Squid's ssl_bump bump, and splice for the rest): a
 * whole ClientHello whose server name (else the CONNECT host) is in
 * tls_inspect and not in tls_inspect_never gets legate's TLS with a
 * certificate minted for that name (net/tls_mint.c), and the tunnel
 * becomes an HTTP/1.1 connection whose requests are for https://name
 * (pipeline/h1.c); its bytes so far go to that TLS.  Anything else --
 * no TLS, another name, an address -- is relayed untouched (1).
 */
static int inspect_gate(lg_req_t *s, const lg_clienthello_t *ch, lg_ch_rc_t rc,
                        const unsigned char *p, size_t n)
{
    fwd_rt_t *rt = s->server->forward->rt;
    if (!may_inspect(s) || rc != LG_CH_OK)
        return 1;
    if (ch->has_sni && s->tunnel->sni == NULL)
        s->tunnel->sni = lg_arena_strdup(&s->arena, ch->sni);     /* $tunnel_sni, spliced too */
    char host[256];
    size_t hn;
    if (ch->has_sni) {
        hn = ch->sni_len < sizeof(host) ? ch->sni_len : sizeof(host) - 1;
        memcpy(host, ch->sni, hn);
        host[hn] = '\0';
    } else {
        hn = dest_host(s, host);
    }
    while (hn && host[hn - 1] == '.')
        host[--hn] = '\0';
    for (size_t i = 0; i < hn; i++)
        if (host[i] >= 'A' && host[i] <= 'Z')
            host[i] = (char)(host[i] - 'A' + 'a');
    if (!lg_mint_name_ok(host) || !lg_domset_match(rt->inspect, host, hn, NULL) ||
        lg_domset_match(rt->inspect_never, host, hn, NULL))
        return 1;
    /* the rules judged the CONNECT host; a server name that differs (and
     * connect_sni did not judge) is judged now, as it is what is fetched */
    char w[512];
    if (ch->has_sni && strcmp(s->server->forward->connect_sni, "off") == 0 &&
        dest_refusal(s, host, hn, (unsigned)s->ri.port, w, sizeof(w)))
        return sni_refuse(s, "the ClientHello's server name: %s", w);
    lg_inspect_t *in = calloc(1, sizeof(*in));
    char why[256];
    SSL *ssl = in ? lg_mint_accept(rt->ca, host, s->conn->e.io.fd, p, n, why, sizeof(why)) : NULL;
    if (ssl == NULL) {
        free(in);
        lg_error("forward proxy: cannot inspect the tunnel of %s to %s: %s", s->peer_text, host,
                 in ? why : "out of memory");
        s->tunnel->ended = "inspection failed";
        return -1;
    }
    in->server = s->server;
    in->port = (unsigned)s->ri.port;
    in->host_len = (size_t)snprintf(in->host, sizeof(in->host), "%s", host);
    in->authority_len = (size_t)(in->port == 443 ?
        snprintf(in->authority, sizeof(in->authority), "%s", host) :
        snprintf(in->authority, sizeof(in->authority), "%s:%u", host, in->port));
    free(s->conn->inspect);
    s->conn->inspect = in;
    s->tunnel->ended = "inspected";
    s->tunnel->takeover = ssl;
    lg_info("forward proxy: %s tunnel to %s:%u inspected", s->peer_text, host, in->port);
    return 2;
}

/* Every CONNECT (and SOCKS5 CONNECT) tunnel of a forward proxy with
 * connect_sni on waits for its ClientHello; other tunnels (WebSocket,
 * stream servers) are not the forward proxy's. */
static void sni_tunnel_open(lg_req_t *s, lg_tunnel_t *t)
{
    if (!lg_req_is_forward(s) || !s->ri.connect || s->ri.udp_associate)
        return;
    if (strcmp(s->server->forward->connect_sni, "off") == 0 && !may_inspect(s))
        return;
    t->gate = sni_gate;
    t->gate_deadline = lg_w.loop.now + s->server->forward->connect_sni_timeout;
}

static void cancel_lookup(void *arg)
{
    lg_req_t *s = arg;
    if (FREQ(s) && FREQ(s)->lookup) {
        lg_resolve_cancel(FREQ(s)->lookup);
        FREQ(s)->lookup = NULL;
    }
}

/* A parent proxy's failure as the client sees it: 502/503 and why. */
static void parent_fail(lg_req_t *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void parent_fail(lg_req_t *s, int status, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    lg_error("forward proxy: %s, client: %s", why, s->peer_text);
    s->blocked = lg_arena_strdup(&s->arena, why);
    char *page = lg_arena_printf(&s->arena,
        "<html><head><title>%d</title></head><body>\r\n<h1>%d %s</h1>\r\n"
        "<p>legate could not forward this request: %s</p>\r\n</body></html>\r\n",
        status, status, status == 503 ? "Service Unavailable" : "Bad Gateway", why);
    lg_respond(s, status, page, NULL);
}

static char *parent_head(lg_req_t *s, size_t *len)
{
    return lg_parents_head(s, ((fwd_rt_t *)s->server->forward->rt)->parents, FREQ(s)->parent, len);
}

static int never_direct(const lg_forward_t *f, int k)
{
    return f->never_direct || f->parents[k].never_direct;
}

/*
 * A parent rule for the destination: through its upstream when one of its
 * proxies is up (LG_DONE), else a 503 under never_direct (LG_DONE), else
 * direct (LG_DECLINED).
 */
static int via_parent(lg_req_t *s, const char *host, size_t hn)
{
    lg_forward_t *f = s->server->forward;
    fwd_rt_t *rt = f->rt;
    fwd_req_t *st = FREQ(s);
    int k = st->direct ? -1 : lg_parents_pick(rt->parents, host, hn);
    if (k < 0)
        return LG_DECLINED;
    if (s->conn->inspect) {
        /* an inspected request's TLS to the destination is legate's, and
         * verified here: never a parent's */
        if (!never_direct(f, k))
            return LG_DECLINED;
        parent_fail(s, 502, "%s is inspected (tls_inspect), an inspected request goes direct, "
                    "and never_direct forbids that: list it in tls_inspect_never", host);
        return LG_DONE;
    }
    lg_upstream_t *up = f->parents[k].upstream;
    if (lg_upstream_usable(up)) {
        st->parent = k;
        lg_reverse_proxy_via(s, up, parent_head);
        return LG_DONE;
    }
    if (never_direct(f, k)) {
        parent_fail(s, 503, "no parent proxy of \"%s\" is up, and never_direct forbids going "
                    "direct to %s", up->name, host);
        return LG_DONE;
    }
    lg_warn("forward proxy: no parent proxy of \"%s\" is up: %s goes direct", up->name, host);
    st->direct = 1;
    return LG_DECLINED;
}

static int forward_content(lg_req_t *s);

/* ftp:// and gopher:// go to their gateway from ROUTE, before the cache
 * (whose keys are HTTP URLs) could answer them. */
static int forward_gateway(lg_req_t *s)
{
    if (!lg_req_is_forward(s) || s->ri.scheme == LG_SCHEME_HTTP)
        return LG_DECLINED;
    return forward_content(s);
}

/* The CONTENT phase: look the destination up; resolved() goes on. */
static int forward_content(lg_req_t *s)
{
    if (!lg_req_is_forward(s))
        return LG_DECLINED;
    char host[256];
    size_t hn = dest_host(s, host);
    if (FREQ(s) == NULL) {
        fwd_req_t *st = lg_arena_alloc(&s->arena, sizeof(*st));
        if (st == NULL) {
            lg_respond_error(s, 500);
            return LG_DONE;
        }
        *st = (fwd_req_t){ .lookup = NULL, .parent = -1, .direct = 0 };
        s->ctx[fwd_slot] = st;
        lg_req_cleanup(s, cancel_lookup, s);
    }
    if (via_parent(s, host, hn) == LG_DONE)
        return LG_DONE;
    /* a destination with an idle connection needs no name lookup: its
     * address was judged (private ranges, deny_destinations) when that
     * connection was made */
    lg_upstream_t *idle = s->ri.connect || !s->ri.method_idempotent ? NULL :
                          lg_dest_idle(s->server->forward, host,
                                       s->ri.port ? (unsigned)s->ri.port : 80,
                                       s->conn->inspect != NULL);
    if (idle) {
        lg_reverse_proxy_to(s, idle);
        return LG_DONE;
    }
    lg_resolver_t *r = resolver_of(s->server->forward);
    if (r == NULL) {
        lg_respond_error(s, 502);
        return LG_DONE;
    }
    if (s->phase == LG_PH_NONE)
        lg_req_set_stage(s, &resolve_stage);    /* a failover: past the phases already */
    else
        lg_req_suspend(s, &resolve_stage);
    struct lg_resolve *lk = lg_resolve(r, host, resolved, s);
    if (lk == NULL) {
        s->stage = NULL;
        lg_respond_error(s, 502);
        return LG_DONE;
    }
    FREQ(s)->lookup = lk;
    return LG_AGAIN;
}

/*
 * UPSTREAM_ERROR: the parents of the rule failed (every proxy tried, or
 * none answered in time).  Direct instead, when the rule allows it and
 * the request has no body that may have gone up already; else the 502
 * says why.
 */
static int forward_upstream_error(lg_req_t *s)
{
    if (!lg_req_is_forward(s) || FREQ(s) == NULL || FREQ(s)->parent < 0)
        return LG_DECLINED;
    lg_forward_t *f = s->server->forward;
    fwd_req_t *st = FREQ(s);
    int k = st->parent;
    const char *name = f->parents[k].upstream->name;
    if (never_direct(f, k)) {
        parent_fail(s, s->upstream_status == 504 ? 504 : 502, "the parent proxies of \"%s\" "
                    "failed, and never_direct forbids going direct", name);
        return LG_DONE;
    }
    if (s->ri.body != LG_BODY_NONE)
        return LG_DECLINED;     /* its body may be half sent: not again */
    lg_warn("forward proxy: the parent proxies of \"%s\" failed: %.*s goes direct", name,
            (int)s->ri.host.n, s->ri.host.p);
    st->parent = -1;
    st->direct = 1;
    s->up = NULL;
    s->tried = 0;
    s->ntries = 0;
    s->upstream_status = 0;
    s->reqp.hdr = NULL;
    s->reqp.hdr_len = 0;
    forward_content(s);         /* answers, proxies, or resolves (resolved() goes on) */
    return LG_DONE;
}

/* RESPONSE: a parent that wants credentials (407) means legate's login for
 * it is missing or wrong -- the operator's to fix, not the client's, who
 * must not be asked for a password for the parent. */
static int forward_response(lg_req_t *s)
{
    if (!lg_req_is_forward(s) || FREQ(s) == NULL || FREQ(s)->parent < 0 ||
        s->upstream_status != 407)
        return LG_DECLINED;
    const lg_parent_rule_t *r = &s->server->forward->parents[FREQ(s)->parent];
    parent_fail(s, 502, "the parent proxy %s of \"%s\" refused legate's credentials (407)%s",
                s->upstream_addr ? s->upstream_addr : "-", r->upstream->name,
                r->login ? ": check 'login' of the parent rule" : ": the parent rule has no 'login'");
    return LG_DONE;
}

static void resolve_step(lg_req_t *s)
{
    (void)s;                    /* the resolver calls back */
}

static lg_msec_t resolve_arm(lg_req_t *s, lg_tkind_t *kind)
{
    *kind = LG_T_RESOLVE;
    return lg_req_common(s)->proxy_connect_timeout;
}

static void resolve_timeout(lg_req_t *s, lg_tkind_t kind)
{
    (void)kind;
    cancel_lookup(s);
    lg_mx_count(LG_MX_DNS, NULL, NULL, "timeout", 1);
    lg_error("forward proxy: resolving \"%.*s\" timed out, client: %s", (int)s->ri.host.n,
             s->ri.host.p, s->peer_text);
    lg_respond_error(s, 504);
}

static const lg_stage_t resolve_stage = {
    .name = "resolving the destination", .step = resolve_step, .arm = resolve_arm,
    .timeout = resolve_timeout,
};

const lg_feature_t lg_feature_forward = {
    .name = "forward proxy",
    .handlers = {
        { LG_PH_ACCESS, forward_access },
        { LG_PH_ROUTE, forward_gateway },
        { LG_PH_CONTENT, forward_content },
        { LG_PH_UPSTREAM_ERROR, forward_upstream_error },
        { LG_PH_RESPONSE, forward_response },
    },
    .ctx_slot = &fwd_slot,
};

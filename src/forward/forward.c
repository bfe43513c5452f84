/*
 * The forward proxy: requests from clients that chose legate as their
 * proxy, in absolute form (GET http://host/path) or as CONNECT tunnels.
 *
 *   client ACL -> CONNECT port -> domain blocklists -> URL filters
 *     -> resolve (c-ares, never blocking) -> destination address checks
 *     (private ranges unless allow_private: server-side request forgery;
 *     deny_destinations) -> a destination upstream made at run time
 *     (its own keep-alive pool) -> the ordinary proxy path, or a tunnel.
 *
 * The lists are built once by the master (lg_forward_prepare, also run by
 * legate -t so a bad file is a FILE:LINE error) and shared with the
 * workers by fork.  Each worker has one resolver per forward server.
 */
#include "forward/forward.h"

#include "pipeline/headers.h"
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
#include "net/resolve.h"
#include "net/geo.h"
#include "net/htpasswd.h"

#include <openssl/crypto.h>

/* A group of auth_groups_file and, per user rule, its built lists. */
typedef struct fwd_group {
    char   *name;
    char  **members;
    size_t  n;
} fwd_group_t;

typedef struct fwd_urule {
    lg_domset_t  *allow, *block;
    lg_portset_t *ports;        /* NULL: the forward's */
} fwd_urule_t;

typedef struct fwd_rt {
    lg_htpasswd_t *users;       /* auth_file (every htpasswd format, net/htpasswd.c) */
    fwd_group_t   *groups;
    size_t         ngroups;
    fwd_urule_t   *urules;      /* parallel to lg_forward_t.user_rules */
    size_t         nurules;
    lg_cidr_set_t *allow, *deny, *deny_dst;
    lg_domset_t   *block;
    lg_urlre_t    *urlre;
    lg_portset_t   ports;
    lg_resolver_t *resolver;    /* per worker, made on first use */
} fwd_rt_t;

#define DYN_MAX 512             /* destinations cached per worker */

static struct lg_dynup *dyns;   /* the worker's destination cache */
static int ndyns;

static void rt_free(void *p)
{
    fwd_rt_t *rt = p;
    if (rt == NULL)
        return;
    lg_cidr_free(rt->allow);
    lg_cidr_free(rt->deny);
    lg_cidr_free(rt->deny_dst);
    lg_domset_free(rt->block);
    lg_urlre_free(rt->urlre);
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
        free(rt->urules[i].ports);
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
        if (r->connect_ports) {
            char msg[256];
            u->ports = calloc(1, sizeof(*u->ports));
            if (u->ports == NULL || lg_portset_parse(u->ports, r->connect_ports, msg,
                                                     sizeof(msg)) < 0) {
                ERR("%s:%d: 'connect_ports': %s\n", file, r->line, u->ports ? msg : "out of memory");
                rc = -1;
            }
        }
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

int lg_forward_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    size_t used = strlen(err);
    int rc = 0;
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
        lg_portset_clear(&rt->ports);
        if (lg_portset_parse(&rt->ports, f->connect_ports, msg, sizeof(msg)) < 0) {
            used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                     "%s:%d: 'connect_ports': %s\n", file, f->line, msg);
            rc = -1;
        }
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

/* The destination record for addr, made or found. */
static lg_upstream_t *destination(const struct sockaddr_storage *ss, int tunnel, const char *host,
                                  int keepalive)
{
    char ip[64];
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    unsigned port = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                                    : ((const struct sockaddr_in *)ss)->sin_port);
    inet_ntop(ss->ss_family, a, ip, sizeof(ip));
    char key[80];
    snprintf(key, sizeof(key), ss->ss_family == AF_INET6 ? "[%s]:%u%s" : "%s:%u%s", ip, port,
             tunnel ? "/t" : "");
    struct lg_dynup **pp = &dyns, *victim = NULL, **victim_pp = NULL;
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0)
            return &(*pp)->up;
        if ((*pp)->refs == 0 && (*pp)->npool == 0) {
            victim = *pp;
            victim_pp = pp;
        }
    }
    if (ndyns >= DYN_MAX && victim) {
        *victim_pp = victim->next;      /* nobody uses it: make room */
        free(victim);
        ndyns--;
    }
    struct lg_dynup *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    snprintf(d->key, sizeof(d->key), "%s", key);
    memcpy(&d->srv.addr.ss, ss, sizeof(*ss));
    d->srv.addr.len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
    snprintf(d->text, sizeof(d->text), ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    d->srv.addr.text = d->text;
    d->srv.weight = 1;
    d->up.name = d->key;
    (void)host;
    d->up.servers = &d->srv;
    d->up.nservers = 1;
    d->up.keepalive = tunnel ? 0 : keepalive;
    d->up.index = -1;
    d->up.dyn = d;
    d->up.fail_on = d->up.next_upstream = (char *)"error timeout";
    d->up.next_mask = LG_COND_ERROR | LG_COND_TIMEOUT;
    d->next = dyns;
    dyns = d;
    ndyns++;
    return &d->up;
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

/* The lookup in flight for a request, or NULL (its context slot). */
static int fwd_slot;
#define LOOKUP(s) ((struct lg_resolve *)(s)->ctx[fwd_slot])

static const lg_stage_t resolve_stage;

static void resolved(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    lg_req_t *s = arg;
    s->ctx[fwd_slot] = NULL;
    lg_forward_t *f = s->server->forward;
    fwd_rt_t *rt = f->rt;
    lg_mx_count(LG_MX_DNS, NULL, NULL, status == LG_RESOLVE_OK && n ? "ok" : "failed", 1);
    if (status != LG_RESOLVE_OK || n == 0) {
        lg_error("forward proxy: cannot resolve \"%.*s\": %s, client: %s", (int)s->ri.host.n,
                 s->ri.host.p, lg_resolve_strerror(status), s->peer_text);
        lg_respond_error(s, 502);
        lg_req_run(s);
        return;
    }
    struct sockaddr_storage ss = addrs[0];
    unsigned port = s->ri.port ? (unsigned)s->ri.port : 80;
    if (ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    /* judged on the address we would connect to, not the name: DNS
     * rebinding and odd literals cannot slip past */
    const char *cls = f->allow_private ? NULL : lg_cidr_private((const struct sockaddr *)&ss, 0);
    int di = lg_cidr_lookup(rt->deny_dst, (const struct sockaddr *)&ss);
    if (cls) {
        refuse(s, "the destination is a %s address (allow_private is off)", cls);
    } else if (di >= 0) {
        refuse(s, "the destination address is in deny_destinations (%s)",
               lg_cidr_rule(rt->deny_dst, di));
    } else {
        lg_upstream_t *up = destination(&ss, s->ri.connect, NULL, f->keepalive);
        if (up == NULL)
            lg_respond_error(s, 500);
        else
            lg_reverse_proxy_to(s, up);
    }
    lg_req_run(s);
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

/*
 * The ACCESS phase for forward-proxy requests: who the client is and
 * whether it may go where it asks.  A refusal answers here (403, 407).
 */
static int forward_access(lg_req_t *s)
{
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
    /* SOCKS5 authenticated during its negotiation (s->user set there) */
    if (f->auth_file && !s->conn->bind->socks && !authenticate(s, rt)) {
        s->auth_realm = f->auth_realm;
        s->blocked = "proxy authentication required";
        lg_respond_error(s, 407);
        return LG_DONE;
    }
    if (s->ri.host.n == 0 || s->ri.host.n > 253) {
        lg_respond_error(s, 400);
        return LG_DONE;
    }
    char host[256];
    size_t hn = dest_host(s, host);
    if (f->allow_users && f->allow_users->n && !user_in(rt, s->user, f->allow_users)) {
        refuse(s, "user %s may not use this proxy (allow_users)", s->user ? s->user : "-");
        return LG_DONE;
    }
    /* the first rule naming the user applies */
    const fwd_urule_t *ur = NULL;
    int urline = 0;
    for (size_t i = 0; i < rt->nurules && ur == NULL; i++)
        if (user_in(rt, s->user, f->user_rules[i].users)) {
            ur = &rt->urules[i];
            urline = f->user_rules[i].line;
        }
    const lg_portset_t *ports = ur && ur->ports ? ur->ports : &rt->ports;
    if (s->ri.connect && !lg_portset_has(ports, (unsigned)s->ri.port)) {
        if (ports == &rt->ports)
            refuse(s, "CONNECT to port %d is not allowed (connect_ports)", s->ri.port);
        else
            refuse(s, "CONNECT to port %d is not allowed for %s (user rule at line %d)",
                   s->ri.port, s->user, urline);
        return LG_DONE;
    }
    lg_domset_hit_t hit;
    if (lg_domset_match(rt->block, host, hn, &hit)) {
        refuse(s, "%s is blocked by %s (%s)", host, hit.source, hit.rule);
        return LG_DONE;
    }
    if (ur && lg_domset_match(ur->block, host, hn, &hit)) {
        refuse(s, "%s is blocked for %s by the user rule at line %d (%s)", host, s->user,
               urline, hit.rule);
        return LG_DONE;
    }
    if (ur && lg_domset_count(ur->allow) && !lg_domset_match(ur->allow, host, hn, NULL)) {
        refuse(s, "%s is not in allow_domains for %s (user rule at line %d)", host, s->user,
               urline);
        return LG_DONE;
    }
    if (!s->ri.connect && lg_urlre_count(rt->urlre)) {
        char *url = lg_arena_printf(&s->arena, "http://%.*s%.*s", (int)s->ri.authority.n,
                                    s->ri.authority.p, (int)s->ri.uri.n, s->ri.uri.p);
        int k = url ? lg_urlre_match(rt->urlre, url, strlen(url)) : -1;
        if (k >= 0) {
            refuse(s, "the URL matches the filter \"%s\"", lg_urlre_pattern(rt->urlre, k));
            return LG_DONE;
        }
    }
    return LG_OK;               /* a cached answer (CACHE) needs no name lookup */
}

static void cancel_lookup(void *arg)
{
    lg_req_t *s = arg;
    if (LOOKUP(s)) {
        lg_resolve_cancel(LOOKUP(s));
        s->ctx[fwd_slot] = NULL;
    }
}

/* The CONTENT phase: look the destination up; resolved() goes on. */
static int forward_content(lg_req_t *s)
{
    if (!lg_req_is_forward(s))
        return LG_DECLINED;
    char host[256];
    dest_host(s, host);
    lg_resolver_t *r = resolver_of(s->server->forward);
    if (r == NULL) {
        lg_respond_error(s, 502);
        return LG_DONE;
    }
    lg_req_suspend(s, &resolve_stage);
    lg_req_cleanup(s, cancel_lookup, s);
    struct lg_resolve *lk = lg_resolve(r, host, resolved, s);
    if (lk == NULL) {
        s->stage = NULL;
        lg_respond_error(s, 502);
        return LG_DONE;
    }
    s->ctx[fwd_slot] = lk;
    return LG_AGAIN;
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
        { LG_PH_CONTENT, forward_content },
    },
    .ctx_slot = &fwd_slot,
};

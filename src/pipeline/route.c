/*
 * Choosing the virtual server and the route, with nginx's precedence.
 *
 * Server, among those on the listen address: exact name, then the longest
 * leading wildcard ("*.example.com"), then the longest trailing wildcard
 * ("www.example.*"), then the first regex in config order, else the
 * address's default server.
 *
 * Route, within the server: only routes whose conditions (host, methods,
 * header, query) all hold are candidates; among them an exact match wins
 * at once; otherwise regexes in config order, first match wins; otherwise
 * the longest matching prefix (the first of equal ones).
 */
#include "core/relit.h"
#include "pipeline/headers.h"
#include "pipeline/vars.h"

#include <string.h>
#include <strings.h>

/* How a name matches: 0 exact, 1 leading wildcard, 2 trailing, 3 regex; -1 not. */
static int name_match(const lg_server_name_t *sn, const char *name, size_t n, size_t *len)
{
    size_t ln = strlen(sn->name);
    *len = ln;
    switch (sn->kind) {
    case LG_NAME_EXACT:
        return ln == n && memcmp(sn->name, name, n) == 0 ? 0 : -1;
    case LG_NAME_WILDCARD:  /* stored as ".example.com" */
        return n > ln && memcmp(name + n - ln, sn->name, ln) == 0 ? 1 : -1;
    case LG_NAME_SUFFIX:    /* stored as "www.example." */
        return n > ln && memcmp(name, sn->name, ln) == 0 ? 2 : -1;
    case LG_NAME_REGEX:
        return sn->re && regexec(sn->re, name, 0, NULL, 0) == 0 ? 3 : -1;
    }
    return -1;
}

/* Lower-case host, without a trailing dot, NUL-terminated; 0 if unusable. */
static size_t host_key(lg_str_t host, char name[256])
{
    if (host.n == 0 || host.n > 255)
        return 0;
    for (size_t i = 0; i < host.n; i++) {
        char c = host.p[i];
        name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    size_t n = host.n;
    if (name[n - 1] == '.')
        n--;                    /* "example.com." is "example.com" */
    name[n] = '\0';
    return n;
}

const lg_server_t *lg_route_server(const lg_bind_t *b, lg_str_t host)
{
    char name[256];
    size_t n;
    if (b->nservers == 1 || (n = host_key(host, name)) == 0)
        return b->default_server;
    const lg_server_t *best = NULL;
    size_t best_len = 0;
    int best_rank = 99;
    for (size_t s = 0; s < b->nservers; s++) {
        const lg_server_t *srv = b->servers[s];
        for (size_t k = 0; k < srv->nnames; k++) {
            size_t ln;
            int rank = name_match(&srv->names[k], name, n, &ln);
            if (rank == 0)
                return srv;
            /* longer wildcards win; among regexes the first in config order */
            if (rank > 0 && (rank < best_rank || (rank == best_rank && rank < 3 && ln > best_len))) {
                best = srv;
                best_rank = rank;
                best_len = ln;
            }
        }
    }
    return best ? best : b->default_server;
}

static int query_has(lg_str_t q, const char *name, const char *value)
{
    size_t nl = strlen(name);
    const char *p = q.p, *end = q.p + q.n;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *ne = eq ? eq : stop;
        if ((size_t)(ne - p) == nl && memcmp(p, name, nl) == 0) {
            if (value == NULL)
                return 1;
            const char *v = eq ? eq + 1 : stop;
            if ((size_t)(stop - v) == strlen(value) && memcmp(v, value, (size_t)(stop - v)) == 0)
                return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* One condition of a route's "if": its variables expanded for this request. */
static int cond_holds(const lg_cond_t *c, lg_req_t *s)
{
    size_t n = 0;
    const char *v = lg_vars_expand(s, c->left, LG_VARS_RAW, &n);
    int ok;
    if (v == NULL)
        return 0;               /* out of memory: the route is not taken */
    switch (c->op) {
    case LG_COND_EQ: {
        size_t rn = 0;
        const char *r = lg_vars_expand(s, c->right, LG_VARS_RAW, &rn);
        ok = r != NULL && rn == n && memcmp(r, v, n) == 0;
        break;
    }
    case LG_COND_REGEX:
        ok = regexec(c->re, v, 0, NULL, 0) == 0;
        break;
    default:
        ok = n > 0 && !(n == 1 && v[0] == '0');
        break;
    }
    return ok != c->negate;
}

/* The route's host, methods, header, query, countries and if conditions, all of them. */
static int conditions_hold(const lg_route_t *r, const lg_req_t *s)
{
    if (r->nhosts) {
        char name[256];
        size_t n = host_key(s->ri.host, name), ln;
        int any = 0;
        for (size_t i = 0; n && i < r->nhosts && !any; i++)
            any = name_match(&r->hosts[i], name, n, &ln) >= 0;
        if (!any)
            return 0;
    }
    if (r->methods && r->methods->n) {
        int any = 0;
        for (size_t i = 0; i < r->methods->n && !any; i++)
            any = strlen(r->methods->v[i]) == s->req.method_len &&
                  memcmp(r->methods->v[i], s->req.method, s->req.method_len) == 0;
        if (!any)
            return 0;
    }
    if (r->header_name) {
        const http_header_t *h = lg_headers_get(s, r->header_name);
        int ok = h != NULL;
        if (ok && r->header_value)
            ok = strlen(r->header_value) == h->value_len &&
                 memcmp(r->header_value, h->value, h->value_len) == 0;
        if (ok && r->header_re) {
            char v[1024];           /* a longer value is matched on its first 1023 bytes */
            size_t n = h->value_len < sizeof(v) - 1 ? h->value_len : sizeof(v) - 1;
            memcpy(v, h->value, n);
            v[n] = '\0';
            ok = regexec(r->header_re, v, 0, NULL, 0) == 0;
        }
        if (ok == r->header_not)
            return 0;
    }
    if (r->query_name && query_has(s->ri.query, r->query_name, r->query_value) == r->query_not)
        return 0;
    if (r->countries && !lg_strv_has(r->countries, lg_realip_country((lg_req_t *)s)))
        return 0;
    for (size_t i = 0; i < r->nconds; i++)
        if (!cond_holds(&r->conds[i], (lg_req_t *)s))
            return 0;
    return 1;
}

const lg_route_t *lg_route_find(const lg_server_t *srv, const lg_req_t *s,
                                const char *path, size_t n, regmatch_t caps[10])
{
    const lg_route_t *prefix = NULL;
    size_t prefix_len = 0;
    const lg_route_t *regex = NULL;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const lg_route_t *r = &srv->routes[i];
        if (r->named_only || !conditions_hold(r, s))
            continue;           /* a route whose conditions fail does not match */
        switch (r->match) {
        case LG_MATCH_EXACT:
            if (r->pattern_len == n && memcmp(r->pattern, path, n) == 0) {
                memset(caps, -1, sizeof(regmatch_t) * 10);
                return r;
            }
            break;
        case LG_MATCH_PREFIX:
            if (r->pattern_len <= n && r->pattern_len >= prefix_len &&
                memcmp(r->pattern, path, r->pattern_len) == 0 &&
                (prefix == NULL || r->pattern_len > prefix_len)) {
                prefix = r;
                prefix_len = r->pattern_len;
            }
            break;
        case LG_MATCH_REGEX:
            /* path is NUL-terminated by the caller */
            if (regex == NULL && (r->relit ? lg_relit_match(r->relit, path, n, caps)
                                           : r->re && regexec(r->re, path, 10, caps, 0) == 0))
                regex = r;
            break;
        }
    }
    /* nginx's order: exact; then the longest prefix if it says no_regex
     * (^~); then the first regex in the file; then the longest prefix */
    if (regex && !(prefix && prefix->no_regex))
        return regex;
    memset(caps, -1, sizeof(regmatch_t) * 10);
    return prefix;
}

const lg_route_t *lg_route_request(lg_req_t *r, int *status)
{
    if (r->routed) {
        *status = r->routed == 1 ? 0 : r->routed;
        return r->route_found;
    }
    *status = 0;
    char *mp = lg_arena_alloc(&r->arena, r->ri.path.n + 2);
    if (mp == NULL) {
        r->routed = *status = 500;      /* another try would fail the same way */
        return NULL;
    }
    ssize_t mn;
    if (r->ri.path.n == 1 && r->ri.path.p[0] == '*') {
        mp[0] = '*';
        mp[1] = '\0';
        mn = 1;
    } else {
        mn = lg_http_normalize_path(r->ri.path.p, r->ri.path.n, mp);
    }
    if (mn < 0) {
        r->routed = *status = 400;
        return NULL;
    }
    r->mpath = mp;
    r->route_found = r->server ? lg_route_find(r->server, r, mp, (size_t)mn, r->caps) : NULL;
    r->routed = 1;
    return r->route_found;
}

/*
 * Choosing the virtual server and the route, with nginx's precedence.
 *
 * Server, among those on the listen address: exact name, then the longest
 * leading wildcard ("*.example.com"), then the longest trailing wildcard
 * ("www.example.*"), then the first regex in config order, else the
 * address's default server.
 *
 * Route, within the server: an exact match wins at once; otherwise regexes
 * in config order, first match wins; otherwise the longest matching prefix.
 */
#include "proxy/proxy.h"

#include <string.h>
#include <strings.h>

const lg_server_t *lg_route_server(const lg_bind_t *b, lg_str_t host)
{
    if (host.n == 0 || host.n > 255 || b->nservers == 1)
        return b->default_server;
    char name[256];
    for (size_t i = 0; i < host.n; i++) {
        char c = host.p[i];
        name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    size_t n = host.n;
    if (n && name[n - 1] == '.')
        n--;                    /* "example.com." is "example.com" */
    name[n] = '\0';

    const lg_server_t *best = NULL;
    size_t best_len = 0;
    int best_rank = 99;
    for (size_t s = 0; s < b->nservers; s++) {
        const lg_server_t *srv = b->servers[s];
        for (size_t k = 0; k < srv->nnames; k++) {
            const lg_server_name_t *sn = &srv->names[k];
            size_t ln = strlen(sn->name);
            switch (sn->kind) {
            case LG_NAME_EXACT:
                if (ln == n && memcmp(sn->name, name, n) == 0)
                    return srv;
                break;
            case LG_NAME_WILDCARD:  /* stored as ".example.com" */
                if (n > ln && memcmp(name + n - ln, sn->name, ln) == 0 &&
                    (best_rank > 1 || (best_rank == 1 && ln > best_len))) {
                    best = srv, best_len = ln, best_rank = 1;
                }
                break;
            case LG_NAME_SUFFIX:    /* stored as "www.example." */
                if (n > ln && memcmp(name, sn->name, ln) == 0 &&
                    (best_rank > 2 || (best_rank == 2 && ln > best_len))) {
                    best = srv, best_len = ln, best_rank = 2;
                }
                break;
            case LG_NAME_REGEX:
                if (best_rank > 3 && sn->re && regexec(sn->re, name, 0, NULL, 0) == 0) {
                    best = srv, best_rank = 3;
                }
                break;
            }
        }
    }
    return best ? best : b->default_server;
}

const lg_route_t *lg_route_find(const lg_server_t *s, const char *path, size_t n,
                                regmatch_t caps[10])
{
    const lg_route_t *prefix = NULL;
    size_t prefix_len = 0;
    const lg_route_t *regex = NULL;
    for (size_t i = 0; i < s->nroutes; i++) {
        const lg_route_t *r = &s->routes[i];
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
            if (regex == NULL && r->re && regexec(r->re, path, 10, caps, 0) == 0)
                regex = r;
            break;
        }
    }
    if (regex)
        return regex;
    memset(caps, -1, sizeof(regmatch_t) * 10);
    return prefix;
}

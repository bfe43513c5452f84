/*
 * Parent proxies: per-destination rules that send a forward-proxy request
 * through a parent proxy instead of straight to the destination.
 *
 *   always_direct match -> direct
 *   first parents rule whose domains match (none: every name) -> its upstream
 *   no rule -> direct
 *
 * The parents are an upstream of http.upstreams, so the balancer, active
 * health checks and passive ejection apply as to any upstream.  What
 * happens when they fail (failover to direct, or never_direct's 502/503)
 * is forward.c's; the head the parent gets is made here: the request in
 * absolute form (a parent is a proxy, not an origin), a CONNECT as
 * itself, each with the rule's Proxy-Authorization.
 */
#include "forward/parent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "net/acl.h"
#include "pipeline/headers.h"

struct lg_parents {
    lg_domset_t  *direct;       /* always_direct */
    lg_domset_t **doms;         /* per rule; NULL: every name */
    char        **auth;         /* per rule: "Proxy-Authorization: Basic ...\r\n", or NULL */
    size_t        n;
};

void lg_parents_free(lg_parents_t *p)
{
    if (p == NULL)
        return;
    lg_domset_free(p->direct);
    for (size_t i = 0; i < p->n; i++) {
        lg_domset_free(p->doms[i]);
        if (p->auth[i]) {
            OPENSSL_cleanse(p->auth[i], strlen(p->auth[i]));
            free(p->auth[i]);
        }
    }
    free(p->doms);
    free(p->auth);
    free(p);
}

static lg_domset_t *domains(const lg_strv_t *v, const char *what)
{
    if (v == NULL || v->n == 0)
        return NULL;
    lg_domset_t *d = lg_domset_new();
    for (size_t k = 0; d && k < v->n; k++)
        lg_domset_add(d, v->v[k], strlen(v->v[k]), what);
    return d;
}

lg_parents_t *lg_parents_build(const lg_conf_t *conf, const lg_forward_t *f, char *err,
                               size_t errlen, int *rc)
{
    if (f->nparents == 0)
        return NULL;
    lg_parents_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->doms = calloc(f->nparents, sizeof(*p->doms))) == NULL ||
        (p->auth = calloc(f->nparents, sizeof(*p->auth))) == NULL) {
        lg_parents_free(p);
        *rc = -1;
        return NULL;
    }
    p->n = f->nparents;
    p->direct = domains(f->always_direct, "always_direct");
    size_t used = strlen(err);
    for (size_t i = 0; i < f->nparents; i++) {
        lg_parent_rule_t *r = &f->parents[i];
        r->upstream = NULL;
        for (size_t u = 0; u < conf->nupstreams; u++)
            if (strcmp(conf->upstreams[u].name, r->upstream_name) == 0)
                r->upstream = &conf->upstreams[u];
        if (r->upstream == NULL) {
            used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                     "%s:%d: parent rule: no upstream \"%s\" in http.upstreams\n",
                                     conf->file, r->line, r->upstream_name);
            *rc = -1;
        } else if (r->upstream->h2 || r->upstream->tls) {
            used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0,
                                     "%s:%d: parent rule: upstream \"%s\" must speak plain HTTP/1.1 "
                                     "(a parent proxy is reached as Squid's cache_peer)\n",
                                     conf->file, r->line, r->upstream_name);
            *rc = -1;
        }
        p->doms[i] = domains(r->domains, "parent rule");
        if (r->login) {
            size_t n = strlen(r->login);
            char *b64 = malloc(4 * ((n + 2) / 3) + 1);
            if (b64) {
                EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)r->login, (int)n);
                size_t hl = strlen(b64) + 40;
                if ((p->auth[i] = malloc(hl)) != NULL)
                    snprintf(p->auth[i], hl, "Proxy-Authorization: Basic %s\r\n", b64);
                OPENSSL_cleanse(b64, strlen(b64));
                free(b64);
            }
        }
    }
    return p;
}

int lg_parents_pick(const lg_parents_t *p, const char *host, size_t hn)
{
    if (p == NULL || (p->direct && lg_domset_match(p->direct, host, hn, NULL)))
        return -1;
    for (size_t i = 0; i < p->n; i++)
        if (p->doms[i] == NULL || lg_domset_match(p->doms[i], host, hn, NULL))
            return (int)i;
    return -1;
}

char *lg_parents_head(lg_req_t *s, const lg_parents_t *p, int k, size_t *len)
{
    const char *auth = p->auth[k] ? p->auth[k] : "";
    if (s->ri.connect) {
        char *h = lg_arena_printf(&s->arena, "CONNECT %.*s HTTP/1.1\r\nHost: %.*s\r\n%s\r\n",
                                  (int)s->ri.authority.n, s->ri.authority.p,
                                  (int)s->ri.authority.n, s->ri.authority.p, auth);
        *len = h ? strlen(h) : 0;
        return h;
    }
    /* the head the destination would get, its target in absolute form */
    size_t n = 0;
    const char *head = lg_headers_upstream(s, &n);
    const char *sp = head ? memchr(head, ' ', n) : NULL;
    const char *eol = head ? memchr(head, '\n', n) : NULL;
    if (sp == NULL || eol == NULL)
        return NULL;
    const char *rest = eol + 1;
    char *h = lg_arena_printf(&s->arena, "%.*s http://%.*s%.*s HTTP/1.1\r\n%s%.*s",
                              (int)(sp - head), head, (int)s->ri.authority.n, s->ri.authority.p,
                              (int)s->ri.uri.n, s->ri.uri.p, auth, (int)(n - (size_t)(rest - head)),
                              rest);
    *len = h ? strlen(h) : 0;
    return h;
}

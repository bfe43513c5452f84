/*
 * Parent proxies of the forward proxy (parent.c): which destinations go
 * through which upstream of parent proxies (Squid's cache_peer ... parent,
 * cache_peer_domain, always_direct, never_direct), and the request head a
 * parent gets.  The parents themselves are ordinary upstreams: balanced,
 * health-checked and passively ejected by proxy/upstream.c and health.c.
 */
#ifndef LEGATE_FORWARD_PARENT_H
#define LEGATE_FORWARD_PARENT_H

#include "pipeline/request.h"

typedef struct lg_parents lg_parents_t;

/* Build the rules of f (master and -t): its upstreams found by name,
 * domain sets, credentials encoded.  NULL with err when there are none or
 * on error (*rc -1). */
lg_parents_t *lg_parents_build(const lg_conf_t *conf, const lg_forward_t *f, char *err,
                               size_t errlen, int *rc);
void          lg_parents_free(lg_parents_t *p);
/* The rule for host (its index in f->parents), or -1: direct. */
int           lg_parents_pick(const lg_parents_t *p, const char *host, size_t hn);
/* The head for the parent of rule k: an absolute-form request, or the
 * CONNECT itself, with the rule's Proxy-Authorization.  NULL: no memory. */
char         *lg_parents_head(lg_req_t *r, const lg_parents_t *p, int k, size_t *len);

#endif

/*
 * The HTTP cache on the request path (http.c), a feature of the pipeline:
 * lookups in the CACHE phase (hits, purges, collapsed waits), stores and
 * revalidations in RESPONSE, the fill's tap in BODY, stale-if-error in
 * UPSTREAM_ERROR, bookkeeping in LOG; and the background refresh of
 * stale-while-revalidate (refresh.c).  The store itself is store.c.
 */
#ifndef LEGATE_CACHE_HTTP_H
#define LEGATE_CACHE_HTTP_H

#include "pipeline/request.h"

extern struct lg_cache *lg_cache;       /* attached by the master before fork, or NULL */
extern const lg_feature_t lg_feature_cache;
extern const lg_feature_t lg_feature_cache_log;
/* stale-while-revalidate: the same GET again, in the background, on an
 * internal connection.  0 or -1. */
int lg_refresh_start(const lg_req_t *orig);

/*
 * Purges for a fleet (src/cluster sets and calls these; the cache does not
 * know the cluster).  lg_cache_purge_fanout, when set, is called after a
 * PURGE was applied here, with the answer made for it: it answers the
 * request itself (later, once the other nodes were told) and returns 1,
 * or returns 0 and the answer goes out as it is.  lg_cache_purge_key
 * applies a purge another node accepted: the key as the cache makes it
 * (a trailing '*' a prefix); returns how many objects it touched.
 */
extern int (*lg_cache_purge_fanout)(lg_req_t *s, const char *key, size_t n, int soft,
                                    int status, const char *body);
int lg_cache_purge_key(const char *key, size_t n, int soft);

/*
 * The fleet's one cache (src/cluster/shard.c sets it): called on a miss
 * with the base key; 1 means another node owns the key and the request
 * goes there.  The request then passes through this cache: nothing is
 * stored here, nor waited for, and the client's conditionals and ranges
 * go on to the owner, which answers them from its copy.
 */
extern int (*lg_cache_shard)(lg_req_t *s, const char *key, size_t n);

#endif

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

#endif

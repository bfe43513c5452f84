/*
 * What the pipeline is made of: the front ends, and the features in the
 * order their handlers run within each phase.  A new feature is one file
 * exporting an lg_feature_t and one line here.
 */
#include "proc/proc.h"

#include "cache/http.h"
#include "feature/access.h"
#include "feature/accesslog.h"
#include "feature/auth_request.h"
#include "feature/jwt.h"
#include "feature/metrics.h"
#include "feature/coding.h"
#include "forward/forward.h"
#include "pipeline/request.h"
#include "proxy/proxy.h"
#include "stream/stream.h"

extern const lg_feature_t lg_feature_realip, lg_feature_max_forwards, lg_feature_server_timing,
                          lg_feature_limit, lg_feature_static, lg_feature_shard;

static const lg_feature_t *const features[] = {
    &lg_feature_realip,         /* POST_READ: the client's address first */
    &lg_feature_shard,          /* POST_READ: a request another node sent (its client's
                                   address and scheme); CONTENT: a miss another node owns
                                   goes there, before the reverse proxy; UPSTREAM_ERROR */
    &lg_feature_max_forwards,   /* ACCESS: TRACE/OPTIONS with Max-Forwards 0 answered here */
    &lg_feature_access,         /* ACCESS: access_rules, auth_basic, satisfy (reverse proxy) */
    &lg_feature_auth_request,   /* ACCESS: an authentication service asked (reverse proxy) */
    &lg_feature_jwt,            /* ACCESS: JSON Web Tokens (reverse proxy); before the limits,
                                   so a claim can key a rate limit */
    &lg_feature_forward,        /* ACCESS, CONTENT: forward-proxy requests */
    &lg_feature_limit,          /* ACCESS: limit_req / limit_conn, reverse and forward alike;
                                   after the forward proxy's sign-in, so $remote_user is known */
    &lg_feature_static,         /* CONTENT: files (root, alias); a try_files fallback to a
                                   status or proxied route goes on to the two below */
    &lg_feature_metrics,        /* CONTENT: status routes; LOG: the request's series */
    &lg_feature_stream,         /* ROUTE: a stream session to its upstream (before the
                                   reverse proxy's routes); LOG: its byte counts */
    &lg_feature_reverse,        /* ROUTE, CONTENT, LOG: routes and upstreams */
    &lg_feature_cache,          /* CACHE, RESPONSE, BODY, UPSTREAM_ERROR */
    &lg_feature_coding,         /* REQUEST_BODY, RESPONSE, BODY: after the cache's tap */
    &lg_feature_server_timing,  /* RESPONSE */
    &lg_feature_accesslog,      /* LOG */
    &lg_feature_cache_log,      /* LOG: after the access line */
};

void lg_features_setup(void)
{
    static int done;
    if (done++)
        return;
    lg_h1_register();
    lg_h2_register();
#ifdef LG_HAVE_HTTP3
    lg_h3_register();
#endif
    lg_socks_register();
    lg_stream_register();
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
        lg_feature_register(features[i]);
}

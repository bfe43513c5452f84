/*
 * Server-Timing (W3C Server Timing) on proxied answers, where a route or
 * server says server_timing = true: how long the upstream took to send its
 * response head, and how long the request had been in legate by then, so a
 * browser's developer tools show where the time went.
 *
 *   Server-Timing: upstream;dur=12, proxy;dur=13
 *
 * The whole feature: this file and its line in proc/features.c (plus its
 * setting).  It runs in the RESPONSE phase, after the cache (an answer the
 * cache makes itself has no upstream time) and after the codings.
 */
#include "pipeline/request.h"

static int server_timing(lg_req_t *r)
{
    if (!lg_req_common(r)->server_timing)
        return LG_DECLINED;
    lg_msec_t now = lg_w.loop.now;
    /* out of arena: the answer goes without it, nothing else is lost */
    lg_req_add_header(r, "Server-Timing", "upstream;dur=%lld, proxy;dur=%lld",
                      (long long)(now - r->t_upstream), (long long)(now - r->t_start));
    return LG_OK;
}

const lg_feature_t lg_feature_server_timing = {
    .name = "server_timing",
    .handlers = { { LG_PH_RESPONSE, server_timing } },
};

/*
 * Metrics and status pages (metrics.c): counters kept per worker, moved
 * into the shared-memory zone "metrics" once a second; status routes
 * answer them as Prometheus text, JSON or an HTML page.
 */
#ifndef LEGATE_FEATURE_METRICS_H
#define LEGATE_FEATURE_METRICS_H

#include "conf/conf.h"
#include "core/shm.h"
#include "pipeline/request.h"

extern const lg_feature_t lg_feature_metrics;

/* Master: the zone and each route's series.  0, or -1 with err. */
size_t lg_metrics_shm_size(const lg_conf_t *conf);
int    lg_metrics_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);
/* Worker: move its counts into the zone (each second, and before exiting). */
void   lg_metrics_flush(void);
/* Set by src/cluster in a worker with a cluster: its counters as Prometheus text. */
extern size_t (*lg_metrics_cluster)(char *buf, size_t n);

/*
 * Counting from other features: lg_mx_count(family, a, b, what, n) adds n
 * to one series, in this worker's memory (no lock; moved to the zone with
 * the rest).  a and b are the values of the family's labels that come
 * from the configuration (a zone's name, an upstream and a server
 * address) or from a fixed set (an auth method), NULL where the family has
 * none; what is one of the family's fixed outcomes, or NULL.  Only series
 * the master made from the configuration are counted: a value it did not
 * make (one a client chose) is dropped, so no client can grow the page.
 * The families and their labels: the table fams[] in metrics_kv.c.
 */
typedef enum lg_mx_family {
    LG_MX_LIMIT_REQ = 0,        /* zone; PASSED DELAYED REJECTED *_DRY_RUN */
    LG_MX_LIMIT_CONN = 1,       /* zone; PASSED REJECTED REJECTED_DRY_RUN */
    LG_MX_LIMIT_RATE = 2,       /* zone: responses drawn from a limit_rate zone */
    LG_MX_LIMIT_RATE_WAIT = 3,  /* zone: times one waited for its share */
    LG_MX_ACCESS = 4,           /* access_rules verdicts: allowed denied */
    LG_MX_AUTH = 5,             /* method basic jwt request; passed rejected throttled failed */
    LG_MX_SOCKS = 6,            /* SOCKS5 sessions: tunnel refused auth_failed bad_handshake */
    LG_MX_DNS = 7,              /* forward proxy lookups: ok failed timeout */
    LG_MX_HEALTH = 8,           /* upstream, server; pass fail */
    LG_MX_CACHE_COLLAPSED = 9,  /* requests that waited for another's fill */
    LG_MX_CACHE_PURGE = 10,     /* PURGE requests: purged not_found refused */
    LG_MX_UP_CONNECT_ERR = 11,  /* upstream, server: connect() failed (refused, unreachable) */
    LG_MX_UP_TIMEOUT = 12,      /* upstream, server; connect send read */
    LG_MX_ACCEPT_PAUSED = 13,   /* times a worker stopped accepting at worker_connections */
    LG_MX_ACCEPT_PAUSED_MS = 14, /* and for how long (ms; the page says seconds) */
    LG_MX_NCOUNTED = 15,        /* families past this are counted inside metrics.c only */
} lg_mx_family_t;

void lg_mx_count(lg_mx_family_t fam, const char *a, const char *b, const char *what, uint64_t n);

/* One hook each for the proxy and the worker, on top of lg_mx_count:
 * a try of a configured upstream server failed to connect (phase NULL)
 * or timed out ("connect", "send", "read"); uc NULL or a forward proxy's
 * destination counts nothing. */
struct lg_uconn;
void lg_mx_upstream_error(const struct lg_uconn *uc, const char *phase);
/* The worker stopped accepting at worker_connections (1), or started again (0). */
void lg_mx_accept_paused(int paused);

#endif

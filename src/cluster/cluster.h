/*
 * The fleet: state that several legate nodes share through one Redis
 * (issue 19).  This layer sits above cache/ and net/ (it applies purges
 * to the cache and installs TLS ticket keys) and below proc/ (workers
 * start it); the cache and TLS code never call it, they expose hooks.
 *
 *   redis.c    one Redis connection (TCP, unix, TLS) on the worker's loop,
 *              hiredis for the protocol; budgets, backoff
 *   cluster.c  per-worker start, the shared counters, rate-limited warnings
 *   purge.c    PURGE fan-out over publish/subscribe
 *   tickets.c  TLS session ticket keys made, rotated and shared in Redis
 *   shard.c    one cache for the fleet: a miss goes to the key's owner node
 *   none.c     the same entry points for a build without hiredis
 *
 * Whatever Redis does (down, slow, restarted, full of bad data), a
 * request never waits on it longer than redis_timeout and every feature
 * falls back to what the node does alone, with a warning at most once a
 * second for the whole node and a counter on the metrics page.
 */
#ifndef LEGATE_CLUSTER_CLUSTER_H
#define LEGATE_CLUSTER_CLUSTER_H

#include <stddef.h>

#include "conf/conf.h"
#include "core/event.h"
#include "core/shm.h"

typedef enum lg_cmetric {
    LG_CM_ERRORS = 0,           /* connect failures, lost connections, AUTH refused */
    LG_CM_TIMEOUTS = 1,         /* commands without an answer within their budget */
    LG_CM_DEGRADED = 2,         /* operations done locally only because Redis was not there */
    LG_CM_PURGES_SENT = 3,      /* purges published to the other nodes */
    LG_CM_PURGES_APPLIED = 4,   /* purges from other nodes applied here */
    LG_CM_BAD_DATA = 5,         /* garbled messages or keys ignored */
    LG_CM_TICKET_SYNCS = 6,     /* ticket key sets read from Redis */
    LG_CM_TICKET_CHANGES = 7,   /* ... that changed this node's keys */
    LG_CM_SHARD_SENT = 8,       /* cache misses sent to the node that owns the key */
    LG_CM_SHARD_FALLBACK = 9,   /* ... that it did not answer: fetched from the origin here */
    LG_CM_SHARD_RELAYED = 10,   /* requests other nodes sent here as the key's owner */
    LG_CM_MAX
} lg_cmetric_t;

/* Master: the "cluster" zone (counters, warning clock).  0, or -1 with err. */
int    lg_cluster_attach(const lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);
/* Worker: connect and start the shared features.  0, or -1. */
int    lg_cluster_worker_init(const lg_conf_t *conf, lg_loop_t *loop, int slot);
void   lg_cluster_worker_exit(void);
/* Prometheus text for the metrics page (nothing without a cluster). */
size_t lg_cluster_metrics(char *buf, size_t n);

/* For the cluster's own files. */
void   lg_cluster_count(lg_cmetric_t m);
/* A warning, at most one a second for the whole node (the rest counted). */
void   lg_cluster_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A connection reached READY: say so if a warning said it was not. */
void   lg_cluster_recovered(const char *what, const char *addr);

#endif

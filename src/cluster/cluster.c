/*
 * The cluster in a worker: its Redis connections, the shared counters and
 * the warning clock.
 *
 * Every worker has one command connection (PUBLISH, scripts).  Worker 0
 * alone has the subscriber connection and the ticket key timer: the cache
 * and the ticket keys are per node (shared memory), so one listener per
 * node applies a purge once, and PUBLISH's subscriber count is a count of
 * nodes.
 *
 * The zone "cluster" (shared by the node's workers, made by the master):
 *
 *   magic | last_warn_ms | suppressed | counters[LG_CM_MAX] | sub_up | cmd_up
 *
 * all C11 atomics, no lock.  last_warn_ms is taken with a compare-and-swap,
 * so at most one worker logs a cluster warning in any second.
 */
#include "cluster/cluster.h"
#include "cluster/cluster_int.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "feature/metrics.h"

#define CL_MAGIC 0x434c5553u

typedef struct cl_zone {
    uint32_t         magic;
    _Atomic int64_t  last_warn_ms;
    _Atomic uint64_t suppressed;
    _Atomic uint64_t counters[LG_CM_MAX];
    _Atomic int      sub_up;            /* worker 0's subscription stands */
    _Atomic int      cmd_up;            /* worker 0's command connection is READY */
    _Atomic int      warned;            /* a warning since the last recovery */
} cl_zone_t;

static cl_zone_t *zone;                 /* shared memory, NULL without a cluster */
lg_cluster_t lg_cl;                     /* this worker's */

static const char *const cm_names[LG_CM_MAX] = {
    [LG_CM_ERRORS] = "redis_errors",
    [LG_CM_TIMEOUTS] = "redis_timeouts",
    [LG_CM_DEGRADED] = "degraded",
    [LG_CM_PURGES_SENT] = "purges_sent",
    [LG_CM_PURGES_APPLIED] = "purges_applied",
    [LG_CM_BAD_DATA] = "bad_data",
    [LG_CM_TICKET_SYNCS] = "ticket_syncs",
    [LG_CM_TICKET_CHANGES] = "ticket_changes",
    [LG_CM_SHARD_SENT] = "cache_peer_requests",
    [LG_CM_SHARD_FALLBACK] = "cache_peer_fallbacks",
    [LG_CM_SHARD_RELAYED] = "cache_peer_served",
};

static const char *const cm_help[LG_CM_MAX] = {
    [LG_CM_ERRORS] = "Redis connections that failed, were lost or refused AUTH.",
    [LG_CM_TIMEOUTS] = "Redis commands without an answer within their budget.",
    [LG_CM_DEGRADED] = "Cluster operations done on this node only because Redis was not there.",
    [LG_CM_PURGES_SENT] = "Purges published to the other nodes.",
    [LG_CM_PURGES_APPLIED] = "Purges from other nodes applied to this node's cache.",
    [LG_CM_BAD_DATA] = "Garbled, wrongly typed or old-format data from Redis ignored.",
    [LG_CM_TICKET_SYNCS] = "TLS ticket key sets read from Redis.",
    [LG_CM_TICKET_CHANGES] = "Ticket key sets from Redis that changed this node's keys.",
    [LG_CM_SHARD_SENT] = "Cache misses sent to the node that owns the key (cache_peers).",
    [LG_CM_SHARD_FALLBACK] = "Cache misses whose owner node did not answer, fetched from the origin here.",
    [LG_CM_SHARD_RELAYED] = "Requests other nodes sent here, as the owner of their key.",
};

int lg_cluster_attach(const lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen)
{
    if (conf->cluster == NULL) {
        zone = NULL;
        return 0;
    }
    int fresh = 0;
    cl_zone_t *z = lg_shm_zone(shm, "cluster", sizeof(*z), &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for the cluster counters");
        return -1;
    }
    if (fresh || z->magic != CL_MAGIC) {
        memset(z, 0, sizeof(*z));
        z->magic = CL_MAGIC;
    }
    zone = z;
    return 0;
}

void lg_cluster_count(lg_cmetric_t m)
{
    if (zone && m < LG_CM_MAX)
        atomic_fetch_add_explicit(&zone->counters[m], 1, memory_order_relaxed);
}

void lg_cluster_warn(const char *fmt, ...)
{
    int64_t now = lg_wall_ms();
    if (zone) {
        int64_t last = atomic_load(&zone->last_warn_ms);
        if (now - last < 1000 || !atomic_compare_exchange_strong(&zone->last_warn_ms, &last, now)) {
            atomic_fetch_add_explicit(&zone->suppressed, 1, memory_order_relaxed);
            return;
        }
        atomic_store(&zone->warned, 1);
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint64_t more = zone ? atomic_exchange(&zone->suppressed, 0) : 0;
    if (more)
        lg_warn("%s (and %llu more cluster warnings in the last second); serving from this node alone",
                msg, (unsigned long long)more);
    else
        lg_warn("%s; serving from this node alone", msg);
}

void lg_cluster_recovered(const char *what, const char *addr)
{
    if (zone && atomic_exchange(&zone->warned, 0))
        lg_notice("cluster: redis %s connection to %s is back", what, addr);
    else
        lg_info("cluster: redis %s connection to %s ready", what, addr);
}

void lg_cluster_set_up(int which, int up)
{
    if (zone == NULL)
        return;
    if (which == 0)
        atomic_store(&zone->cmd_up, up);
    else
        atomic_store(&zone->sub_up, up);
}

int lg_cluster_sub_up(void)
{
    return zone ? atomic_load(&zone->sub_up) : 0;
}

static void cmd_state(lg_redis_t *r)
{
    if (lg_cl.slot == 0)
        lg_cluster_set_up(0, lg_redis_ready(r));
}

int lg_cluster_worker_init(const lg_conf_t *conf, lg_loop_t *loop, int slot)
{
    memset(&lg_cl, 0, sizeof(lg_cl));
    if (conf->cluster == NULL)
        return 0;
    lg_cl.cf = conf->cluster;
    lg_cl.conf = conf;
    lg_cl.loop = loop;
    lg_cl.slot = slot;
    lg_cl.node = conf->cluster->node ? conf->cluster->node : conf->via_name;
    lg_cl.cmd.on_state = cmd_state;
    lg_metrics_cluster = lg_cluster_metrics;
    lg_redis_start(&lg_cl.cmd, lg_cl.cf, loop, "commands");
    if (lg_cl.cf->purge && lg_cluster_purge_init() < 0)
        return -1;
    if (lg_cluster_ratelimit_init() < 0)
        return -1;
    if (slot == 0 && lg_cl.cf->tls_tickets && lg_cluster_tickets_init() < 0)
        return -1;
    if (slot == 0 && lg_cl.cf->health_votes > 0 && lg_cluster_votes_init() < 0)
        return -1;
    return 0;
}

void lg_cluster_worker_exit(void)
{
    if (lg_cl.cf == NULL)
        return;
    lg_redis_stop(&lg_cl.sub);
    lg_redis_stop(&lg_cl.cmd);
}

static void add(char *buf, size_t n, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t n, size_t *used, const char *fmt, ...)
{
    if (*used + 1 >= n)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *used, n - *used, fmt, ap);
    va_end(ap);
    if (k > 0)
        *used = *used + (size_t)k < n ? *used + (size_t)k : n - 1;
}

size_t lg_cluster_metrics(char *buf, size_t n)
{
    size_t used = 0;
    if (n)
        buf[0] = '\0';
    if (zone == NULL || n == 0)
        return 0;
    for (int i = 0; i < LG_CM_MAX; i++)
        add(buf, n, &used, "# HELP legate_cluster_%s_total %s\n# TYPE legate_cluster_%s_total counter\n"
            "legate_cluster_%s_total %llu\n", cm_names[i], cm_help[i], cm_names[i], cm_names[i],
            (unsigned long long)atomic_load_explicit(&zone->counters[i], memory_order_relaxed));
    add(buf, n, &used, "# HELP legate_cluster_redis_up Whether worker 0 has a working Redis connection.\n"
        "# TYPE legate_cluster_redis_up gauge\nlegate_cluster_redis_up %d\n", atomic_load(&zone->cmd_up));
    add(buf, n, &used, "# HELP legate_cluster_purge_subscribed Whether this node hears purges from the others.\n"
        "# TYPE legate_cluster_purge_subscribed gauge\nlegate_cluster_purge_subscribed %d\n",
        atomic_load(&zone->sub_up));
    return used;
}

/*
 * Request-rate and concurrency limits, nginx's limit_req and limit_conn,
 * in the ACCESS phase so that reverse- and forward-proxy requests both
 * pass them.  The tables are shared by every worker (limit_zone.h: layout,
 * locking, eviction); this file chooses the rules, expands the keys and
 * answers.
 *
 * Which rules apply: the route's, the server's, or the http level's, as
 * for any inherited setting.  ACCESS runs before ROUTE, so where a route
 * has limits of its own (srv->limit_routes, found at load) the route is
 * looked up here the way the ROUTE phase will; elsewhere the server's
 * settings are the route's too and nothing is looked up.
 *
 * Concurrency counts requests in flight, not connections: with keep-alive
 * one connection carries many requests one after the other, and a client
 * can hold idle connections that cost the origin nothing; a request counts
 * from this phase until it is freed (lg_req_cleanup), however it ends --
 * answered, refused, or its client gone.
 *
 * Place: after the forward proxy's ACCESS handler, so that a key of
 * $remote_user is the user that signed in; a request its client rules or
 * sign-in refuse (403, 407) is not counted.  (nginx counts before auth,
 * keying on the user name claimed, unchecked; legate keys on a checked one.)
 *
 * Order: concurrency first, then rate, so that a request refused for
 * concurrency spends none of its key's rate; a request delayed by the rate
 * holds its concurrency slot while it waits (it holds a connection here).
 * Several rules of one kind are checked in order and the first refusal
 * answers; rules before it have been charged (nginx reverts them; the
 * difference is one request's worth of rate).
 */
#include "feature/limit.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"
#include "feature/limit_zone.h"
#include "feature/metrics.h"
#include "http/message.h"
#include "pipeline/request.h"
#include "pipeline/vars.h"

/* ---- the master: zones in the shared segment ---- */

size_t lg_limits_shm_size(const lg_conf_t *conf)
{
    size_t n = 0;
    for (size_t i = 0; i < conf->nlimit_zones; i++)
        n += (size_t)conf->limit_zones[i].size + LG_SHM_ALIGN;
    return n;
}

int lg_limits_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen)
{
    for (size_t i = 0; i < conf->nlimit_zones; i++) {
        lg_limit_zone_t *lz = &conf->limit_zones[i];
        /* same kind, name and key: the same zone, whose state carries over
         * a reload (a new rate applies to the kept timestamps); a new size
         * is a new zone, which lg_shm_zone() hands out zeroed */
        uint64_t h = lg_hash64(lz->name, strlen(lz->name), lz->conn ? 0x636f6e6eu : 0x72617465u);
        h = lg_hash64(lz->key->src, strlen(lz->key->src), h);
        char name[LG_SHM_NAME_MAX + 1];
        snprintf(name, sizeof(name), "lim-%016llx", (unsigned long long)h);
        size_t bytes = lg_lz_bytes((size_t)lz->size);
        int fresh = 0;
        lg_lz_t *z = bytes ? lg_shm_zone(shm, name, bytes, &fresh) : NULL;
        if (z == NULL) {
            snprintf(err, errlen, "shared memory is too small for %s zone \"%s\"",
                     lz->conn ? "limit_conn" : "limit_req", lz->name);
            return -1;
        }
        if (fresh || z->magic != LG_LZ_MAGIC) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            /* the seed keeps clients from choosing keys that crowd one set */
            uint64_t seed = lg_hash64(&ts, sizeof(ts), (uint64_t)getpid() ^ h);
            if (lg_lz_init(z, bytes, lz->conn, seed) < 0) {
                snprintf(err, errlen, "cannot set up %s zone \"%s\"",
                         lz->conn ? "limit_conn" : "limit_req", lz->name);
                return -1;
            }
        }
        lz->table = z;
    }
    return 0;
}

void lg_limits_clear_slot(const lg_conf_t *conf, int slot)
{
    for (size_t i = 0; i < conf->nlimit_zones; i++)
        if (conf->limit_zones[i].conn && conf->limit_zones[i].table)
            lg_lz_conn_clear_slot(conf->limit_zones[i].table, slot);
}

/* ---- the worker ---- */

static int limit_slot;

#define LIM_MAX_RULES 16       /* cluster verdicts kept per request */

typedef struct lim_ctx {
    lg_msec_t due;              /* a delayed request goes on at this time */
    signed char verdict[LIM_MAX_RULES];  /* cluster zones: the fleet's answer + 2; 0 not asked */
} lim_ctx_t;

int  (*lg_limit_cluster_take)(lg_req_t *r, const lg_limit_zone_t *lz, const char *key, size_t n,
                              int burst, lg_limit_done_t done);
void (*lg_limit_cluster_cancel)(lg_req_t *r);

typedef struct lim_hold {       /* one request counted in a concurrency zone */
    lg_lz_t *z;
    uint64_t h;
    int      slot;              /* the worker's, whose lane counted it */
} lim_hold_t;

static int64_t now_us(void)
{
    /* the loop's clock is in ms and a round old; a rate of a few thousand
     * per second needs better, and this costs a vDSO call */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* At most one line a second per zone, whichever worker writes it. */
static void note_full(const lg_limit_zone_t *lz, lg_lz_t *z)
{
    int64_t now = lg_w.loop.now, was = atomic_load_explicit(&z->logged_at, memory_order_relaxed);
    if (now - was < 1000 ||
        !atomic_compare_exchange_strong_explicit(&z->logged_at, &was, now, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    uint64_t total = lg_shm_get(&z->evictions) + lg_shm_get(&z->full);
    uint64_t before = atomic_exchange_explicit(&z->logged_evictions, total, memory_order_relaxed);
    if (lz->conn)
        lg_warn("limit_conn zone \"%s\" is full (%zu keys): %llu keys not counted since the "
                "last report; raise its size", lz->name, lg_lz_capacity(z),
                (unsigned long long)(total - before));
    else
        lg_warn("limit_req zone \"%s\" is full (%zu keys): %llu least recently used keys "
                "evicted since the last report; raise its size", lz->name, lg_lz_capacity(z),
                (unsigned long long)(total - before));
}

static void release(void *arg)
{
    lim_hold_t *hd = arg;
    lg_lz_conn_release(hd->z, hd->h, hd->slot);
}

/* The settings of the request's route, found ahead of the ROUTE phase when
 * its server has routes with limits of their own. */
static const lg_common_t *settings(lg_req_t *r)
{
    if (r->route)
        return &r->route->common;
    const lg_server_t *srv = r->server ? r->server : r->conn->bind->default_server;
    if (!srv->limit_routes || lg_req_is_forward(r) || r->ri.path.p == NULL)
        return &srv->common;
    /* found once for the request: the access rules and ROUTE use it too */
    int st;
    const lg_route_t *rt = lg_route_request(r, &st);
    return rt ? &rt->common : &srv->common;     /* st: the ROUTE phase answers it */
}

/* The zone's key for r: NULL when empty (an empty key is not limited, as
 * in nginx: "$http_x_api_key" limits only requests that carry one). */
static const char *key_of(lg_req_t *r, const lg_limit_zone_t *lz, size_t *n)
{
    const char *k = lg_vars_expand(r, lz->key, LG_VARS_RAW, n);
    return k && *n ? k : NULL;
}

static int refuse(lg_req_t *r, int status, const char *what, const lg_limit_zone_t *lz,
                  const char *key, int64_t retry_us)
{
    r->blocked = lg_arena_printf(&r->arena, "%s zone=%s", what, lz->name);
    lg_warn("%s: refusing a request of \"%s\" in zone \"%s\", client: %s, request: \"%.*s %.*s\"",
            what, key, lz->name, r->peer_text, (int)r->req.method_len, r->req.method,
            (int)r->req.target_len, r->req.target);
    if (retry_us > 0)
        r->local_extra = lg_arena_printf(&r->arena, "%sRetry-After: %lld\r\n",
                                         r->local_extra ? r->local_extra : "",
                                         (long long)((retry_us + 999999) / 1000000));
    lg_respond_error(r, status);
    return LG_DONE;
}

static int check_conn(lg_req_t *r, const lg_common_t *c, int64_t now)
{
    for (size_t i = 0; i < c->limit_conn->n; i++) {
        const lg_limit_rule_t *rule = &c->limit_conn->v[i];
        const lg_limit_zone_t *lz = rule->zone;
        size_t n;
        const char *key = key_of(r, lz, &n);
        if (key == NULL)
            continue;
        lg_lz_t *z = lz->table;
        uint64_t h = lg_lz_hash(z, key, n);
        int rc = lg_lz_conn_acquire(z, h, now, rule->max, c->limit_conn_dry_run, lg_w.slot);
        if (rc == LG_LZ_FULL) {
            note_full(lz, z);
            continue;
        }
        lg_mx_count(LG_MX_LIMIT_CONN, lz->name, NULL, rc == LG_LZ_PASS ? "PASSED"
                    : c->limit_conn_dry_run ? "REJECTED_DRY_RUN" : "REJECTED", 1);
        if (rc == LG_LZ_PASS || c->limit_conn_dry_run) {
            lim_hold_t *hd = lg_arena_alloc(&r->arena, sizeof(*hd));
            if (hd == NULL) {
                lg_lz_conn_release(z, h, lg_w.slot);
                return LG_ERROR;
            }
            hd->z = z;
            hd->h = h;
            hd->slot = lg_w.slot;
            lg_req_cleanup(r, release, hd);
        }
        if (rc == LG_LZ_PASS) {
            if (r->limit_conn_status == NULL)
                r->limit_conn_status = "PASSED";
            continue;
        }
        if (c->limit_conn_dry_run) {
            r->limit_conn_status = "REJECTED_DRY_RUN";
            lg_info("limit_conn: dry run: would refuse a request of \"%s\" in zone \"%s\"",
                    key, lz->name);
            continue;
        }
        r->limit_conn_status = "REJECTED";
        return refuse(r, c->limit_conn_status, "limit_conn", lz, key, 0);
    }
    return LG_OK;
}

static const lg_stage_t delay_stage;

static const lg_stage_t cluster_stage;
static void cluster_done(lg_req_t *r, int verdict);

static lim_ctx_t *ctx_of(lg_req_t *r)
{
    lim_ctx_t *x = r->ctx[limit_slot];
    if (x == NULL)
        x = r->ctx[limit_slot] = lg_arena_calloc(&r->arena, sizeof(*x));
    return x;
}

/*
 * A cluster-scoped zone asks the fleet first (src/cluster: a local budget
 * leased from Redis).  Cluster zones are checked before local ones, so a
 * request suspended for the fleet's answer has counted nothing locally
 * yet, and the whole check runs again when the answer is in.  Returns
 * LG_OK (on to the local zones), LG_DONE (refused), LG_AGAIN (waiting).
 */
static int check_cluster(lg_req_t *r, const lg_common_t *c, const char **skip)
{
    for (size_t i = 0; i < c->limit_req->n && i < LIM_MAX_RULES; i++) {
        const lg_limit_rule_t *rule = &c->limit_req->v[i];
        const lg_limit_zone_t *lz = rule->zone;
        skip[i] = NULL;
        if (!lz->cluster || lg_limit_cluster_take == NULL)
            continue;
        size_t n;
        const char *key = key_of(r, lz, &n);
        if (key == NULL)
            continue;
        lim_ctx_t *x = ctx_of(r);
        if (x == NULL)
            return LG_ERROR;
        int v = x->verdict[i] ? x->verdict[i] - 2 : lg_limit_cluster_take(r, lz, key, n, rule->burst,
                                                                          cluster_done);
        if (v == 2) {
            x->verdict[i] = 0;
            lg_req_suspend(r, &cluster_stage);
            return LG_AGAIN;
        }
        x->verdict[i] = (signed char)(v + 2);
        if (v == 1) {
            skip[i] = "cluster";        /* the fleet counted it */
            if (r->limit_req_status == NULL)
                r->limit_req_status = "PASSED";
        } else if (v == 0) {
            if (c->limit_req_dry_run) {
                r->limit_req_status = "REJECTED_DRY_RUN";
                skip[i] = "cluster";
                continue;
            }
            r->limit_req_status = "REJECTED";
            return refuse(r, c->limit_req_status, "limit_req", lz, key, lz->interval_us);
        }
        /* -1: no answer from the fleet: this node counts it alone */
    }
    return LG_OK;
}

static int check_rate(lg_req_t *r, const lg_common_t *c, int64_t now)
{
    const char *skip[LIM_MAX_RULES] = { 0 };
    int crc = check_cluster(r, c, skip);
    if (crc != LG_OK)
        return crc;
    int64_t wait = 0;
    for (size_t i = 0; i < c->limit_req->n; i++) {
        if (i < LIM_MAX_RULES && skip[i])
            continue;
        const lg_limit_rule_t *rule = &c->limit_req->v[i];
        const lg_limit_zone_t *lz = rule->zone;
        size_t n;
        const char *key = key_of(r, lz, &n);
        if (key == NULL)
            continue;
        lg_lz_t *z = lz->table;
        int64_t w = 0;
        int evicted = 0;
        int rc = lg_lz_rate(z, lg_lz_hash(z, key, n), now, lz->interval_us, rule->burst,
                            rule->delay, &w, &evicted);
        if (evicted)
            note_full(lz, z);
        lg_mx_count(LG_MX_LIMIT_REQ, lz->name, NULL, rc == LG_LZ_PASS ? "PASSED"
                    : rc == LG_LZ_REJECT ? (c->limit_req_dry_run ? "REJECTED_DRY_RUN" : "REJECTED")
                    : (c->limit_req_dry_run ? "DELAYED_DRY_RUN" : "DELAYED"), 1);
        if (rc == LG_LZ_PASS) {
            if (r->limit_req_status == NULL)
                r->limit_req_status = "PASSED";
            continue;
        }
        if (c->limit_req_dry_run) {
            r->limit_req_status = rc == LG_LZ_REJECT ? "REJECTED_DRY_RUN" : "DELAYED_DRY_RUN";
            lg_info("limit_req: dry run: would %s a request of \"%s\" in zone \"%s\"",
                    rc == LG_LZ_REJECT ? "refuse" : "delay", key, lz->name);
            continue;
        }
        if (rc == LG_LZ_REJECT) {
            r->limit_req_status = "REJECTED";
            return refuse(r, c->limit_req_status, "limit_req", lz, key, w);
        }
        r->limit_req_status = "DELAYED";
        if (w > wait)
            wait = w;
    }
    if (wait == 0)
        return LG_OK;
    lim_ctx_t *x = ctx_of(r);
    if (x == NULL)
        return LG_ERROR;
    x->due = lg_w.loop.now + (wait + 999) / 1000;
    lg_req_suspend(r, &delay_stage);
    return LG_AGAIN;
}

/* limit_rate_zone: the key's share of the zone's bandwidth, drawn by the
 * response pipe as it writes. */
typedef struct lim_rate {
    lg_lz_t *z;
    uint64_t h;
    int64_t  rate;
    const char *zone;   /* its name, for the metrics */
} lim_rate_t;

static size_t rate_take(void *arg, size_t n, int64_t now_ms, int64_t *wait_ms)
{
    lim_rate_t *x = arg;
    int64_t wait_us = 0;
    (void)now_ms;               /* the zone counts on the system-wide clock, finer */
    size_t k = lg_lz_bandwidth(x->z, x->h, now_us(), x->rate, n, &wait_us);
    if (k == 0) {
        *wait_ms = lg_w.loop.now + (wait_us + 999) / 1000;
        lg_mx_count(LG_MX_LIMIT_RATE_WAIT, x->zone, NULL, NULL, 1);
    }
    return k;
}

static int rate_zone(lg_req_t *r, const lg_common_t *c)
{
    const lg_limit_zone_t *lz = c->limit_rate_z;
    size_t n;
    const char *key = key_of(r, lz, &n);
    if (key == NULL || lz->table == NULL)
        return LG_OK;           /* no key: not limited, as limit_req */
    lim_rate_t *x = lg_arena_alloc(&r->arena, sizeof(*x));
    if (x == NULL)
        return LG_ERROR;
    x->z = lz->table;
    x->h = lg_lz_hash(x->z, key, n);
    x->rate = lz->bytes_rate;
    x->zone = lz->name;
    lg_mx_count(LG_MX_LIMIT_RATE, lz->name, NULL, NULL, 1);
    r->rate_fn = rate_take;
    r->rate_arg = x;
    return LG_OK;
}

static int limit_access(lg_req_t *r)
{
    if (r->limits_done)
        return LG_DECLINED;     /* another node of the fleet counted it (cluster/shard.c) */
    const lg_common_t *c = settings(r);
    int has_conn = c->limit_conn && c->limit_conn->n, has_req = c->limit_req && c->limit_req->n;
    if (c->limit_rate_z && rate_zone(r, c) != LG_OK)
        return LG_ERROR;
    if (!has_conn && !has_req)
        return LG_DECLINED;
    int64_t now = now_us();
    if (has_conn) {
        int rc = check_conn(r, c, now);
        if (rc != LG_OK)
            return rc;
    }
    return has_req ? check_rate(r, c, now) : LG_OK;
}

/* A delayed request: its timer, nothing else; never a sleep. */
static lg_msec_t delay_arm(lg_req_t *r, lg_tkind_t *kind)
{
    lim_ctx_t *x = r->ctx[limit_slot];
    *kind = LG_T_WAIT;
    return x->due > lg_w.loop.now ? x->due - lg_w.loop.now : 0;
}

static void delay_step(lg_req_t *r)
{
    (void)r;                    /* the timer ends the wait */
}

static void delay_timeout(lg_req_t *r, lg_tkind_t kind)
{
    lim_ctx_t *x = r->ctx[limit_slot];
    (void)kind;
    if (lg_w.loop.now < x->due)
        return;                 /* early: armed again for the rest */
    lg_req_resume(r);
}

/* The fleet answered: check again with the answer.  run: from Redis's
 * callback, outside this connection's events, so drive it on here. */
static void cluster_verdict(lg_req_t *r, int verdict, int run)
{
    lim_ctx_t *x = r->ctx[limit_slot];
    const lg_common_t *c = settings(r);
    for (size_t i = 0; x && i < c->limit_req->n && i < LIM_MAX_RULES; i++)
        if (c->limit_req->v[i].zone->cluster && x->verdict[i] == 0) {
            x->verdict[i] = (signed char)(verdict + 2);
            break;
        }
    r->stage = NULL;            /* no longer waiting on the fleet */
    int rc = check_rate(r, c, now_us());
    if (rc == LG_OK)
        lg_req_resume(r);
    else if (rc == LG_ERROR)
        lg_respond_error(r, 500);
    if (run)
        lg_req_run(r);          /* LG_DONE answered; LG_AGAIN waits again */
}

static void cluster_done(lg_req_t *r, int verdict)
{
    cluster_verdict(r, verdict, 1);
}

static lg_msec_t cluster_arm(lg_req_t *r, lg_tkind_t *kind)
{
    (void)r;
    *kind = LG_T_WAIT;
    return 2000;                /* a backstop: src/cluster answers within redis_timeout */
}

static void cluster_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    if (lg_limit_cluster_cancel)
        lg_limit_cluster_cancel(r);
    cluster_verdict(r, -1, 0);  /* the connection runs after its timeout */
}

static const lg_stage_t cluster_stage = {
    .name = "asking the fleet (limit_req)", .step = delay_step, .arm = cluster_arm,
    .timeout = cluster_timeout,
};

static const lg_stage_t delay_stage = {
    .name = "delayed by limit_req", .step = delay_step, .arm = delay_arm, .timeout = delay_timeout,
};

const lg_feature_t lg_feature_limit = {
    .name = "limit",
    .handlers = { { LG_PH_ACCESS, limit_access } },
    .ctx_slot = &limit_slot,
};

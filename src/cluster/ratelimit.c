/*
 * Cluster-scoped request rates: the GCRA state of a key of a zone with
 * cluster = true lives in Redis ("<name>:rl:<zone>:<key>", the theoretical
 * arrival time in microseconds of Redis's clock), updated atomically by
 * SCRIPT.  To keep the hot path off the network a worker leases a small
 * budget: it asks for LEASE requests' worth at once, the script grants
 * the ones that conform now (it advances the arrival time by one interval
 * per granted request, exactly as that many requests would), and the
 * worker lets that many requests through with no network, within
 * LEASE_MS; what it has not used by then is dropped.
 *
 * Accuracy: every request let through was granted by the script, so the
 * fleet never passes more than rate x time + burst + 1 (the bound of one
 * GCRA) -- leasing can only make it stricter: a grant a worker does not use
 * within LEASE_MS is lost, at most one lease per worker when the key's
 * traffic stops or moves to other workers.  LEASE, the largest lease, is a
 * twentieth of a second of the rate (at least 1, at most burst + 1), so at
 * 100 r/s a worker leases up to 5 requests.  While waiting for a lease (one Redis
 * round trip, bounded by redis_timeout) requests of that key in that worker
 * queue on the same lease.  Redis unreachable, slow, or answering nonsense:
 * the zone counts on this node alone (its local shared table: the fleet
 * then passes up to N times the rate), with a warning and a counter.
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/log.h"
#include "feature/limit.h"
#include "pipeline/request.h"

#define LEASES    1024          /* per worker, direct-mapped by key */
#define LEASE_MS  200

static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "local tat, bad = tonumber(v), 0\n"
    "if v and tat == nil then bad = 1 end\n"
    "if tat == nil or tat < now then tat = now end\n"
    "local room = math.floor(((burst + 1) * T - (tat - now)) / T)\n"
    "local g = math.max(0, math.min(want, room))\n"
    "if g > 0 then\n"
    "  tat = tat + g * T\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)\n"
    "end\n"
    "return { g, bad }\n";

typedef struct waiter {
    lg_req_t        *r;
    lg_limit_done_t  done;
    struct waiter   *next;
    struct lease    *l;         /* NULL once answered or cancelled */
} waiter_t;

typedef struct lease {
    uint64_t    h;              /* of zone index and key; 0 free */
    const lg_limit_zone_t *lz;
    int         burst;
    int         tokens;         /* requests granted, not yet used */
    int         size;           /* the next lease: grows while leases run out, shrinks when they expire */
    lg_msec_t   until;          /* tokens good until */
    lg_rcmd_t  *c;              /* the lease being asked for */
    int         want;
    waiter_t   *head, *tail;
    char        rkey[300];      /* the Redis key */
} lease_t;

static lease_t *leases;         /* LEASES, calloc'd in the worker */
static char sha[41];

static int lease_size(const lg_limit_zone_t *lz, int burst)
{
    int64_t per_sec = 1000000 / (lz->interval_us > 0 ? lz->interval_us : 1);
    int64_t n = per_sec / 20;
    if (n < 1)
        n = 1;
    if (n > burst + 1)
        n = burst + 1;
    return (int)n;
}

static int ask(lease_t *l);

static void leased(void *arg, redisReply *rep)
{
    lease_t *l = arg;
    l->c = NULL;
    int granted = -1;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[1]->type == REDIS_REPLY_INTEGER &&
        rep->element[0]->integer >= 0 && rep->element[0]->integer <= l->want) {
        granted = (int)rep->element[0]->integer;
        if (rep->element[1]->integer) {
            lg_cluster_count(LG_CM_BAD_DATA);
            lg_warn("cluster: %s in redis held no arrival time: the key starts afresh", l->rkey);
        }
    } else if (rep) {
        lg_cluster_count(LG_CM_BAD_DATA);
        lg_cluster_warn("cluster: redis answered the rate script for %s with %s", l->rkey,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "something unexpected");
    }
    if (granted < 0)
        lg_cluster_count(LG_CM_DEGRADED);
    int full = granted == l->want;
    if (granted > 0) {
        l->tokens = granted;
        l->until = lg_cl.loop->now + LEASE_MS;
    }
    /* answer the queue in order; a verdict may free its request (and the
     * request's cleanup looks at w->l), so detach each first */
    while (l->head && (granted < 0 || l->tokens > 0 || !full)) {
        waiter_t *w = l->head;
        l->head = w->next;
        if (l->head == NULL)
            l->tail = NULL;
        w->l = NULL;
        int v = granted < 0 ? -1 : l->tokens > 0 ? 1 : 0;
        if (v == 1)
            l->tokens--;
        w->done(w->r, v);
    }
    if (l->head && ask(l) < 0)  /* the fleet had room for all we asked: ask again */
        leased(l, NULL);
}

/* 0: asked; -1: it cannot go out (the caller answers the queue) */
static int ask(lease_t *l)
{
    int n = 0;
    for (waiter_t *w = l->head; w; w = w->next)
        n++;
    l->want = l->size > 0 ? l->size : 1;
    if (n > l->want)
        l->want = n;
    char iv[24], bu[16], wa[16];
    snprintf(iv, sizeof(iv), "%lld", (long long)l->lz->interval_us);
    snprintf(bu, sizeof(bu), "%d", l->burst);
    snprintf(wa, sizeof(wa), "%d", l->want);
    const char *argv[4] = { l->rkey, iv, bu, wa };
    size_t lens[4] = { strlen(l->rkey), strlen(iv), strlen(bu), strlen(wa) };
    l->c = lg_redis_eval(&lg_cl.cmd, SCRIPT, sha, 1, 4, argv, lens, 0, leased, l);
    if (l->c == NULL) {
        lg_cluster_warn("cluster: limit_req zone \"%s\" counts on this node alone: redis at %s "
                        "cannot take a command now", l->lz->name, lg_cl.cf->redis);
        return -1;
    }
    return 0;
}

static void waiter_cleanup(void *arg)
{
    waiter_t *w = arg;
    lease_t *l = w->l;
    if (l == NULL)
        return;
    waiter_t **pp = &l->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = w->next;
        if (l->tail == w)
            l->tail = prev;
    }
    w->l = NULL;
}

static int take(lg_req_t *r, const lg_limit_zone_t *lz, const char *key, size_t n, int burst,
                lg_limit_done_t done)
{
    if (leases == NULL)
        return -1;
    uint64_t h = lg_hash64(key, n, 0x6c6567617465ULL) ^ ((uint64_t)(lz->index + 1) * 0x9e3779b97f4a7c15ULL);
    if (h == 0)
        h = 1;
    lease_t *l = &leases[h % LEASES];
    if (l->h != h) {
        if (l->c || l->head)
            return -1;          /* the slot is busy with another key's lease: count locally */
        memset(l, 0, sizeof(*l));
        l->h = h;
        l->lz = lz;
        l->burst = burst;
        char k[200];
        size_t kn = n < sizeof(k) ? n : sizeof(k);
        for (size_t i = 0; i < kn; i++)
            k[i] = key[i] > ' ' && key[i] < 127 ? key[i] : '_';
        if (n > sizeof(k))
            snprintf(l->rkey, sizeof(l->rkey), "%s:rl:%s:%.*s~%016llx", lg_cl.cf->name, lz->name,
                     (int)(sizeof(k) - 20), k, (unsigned long long)lg_hash64(key, n, 0x6c6567617465ULL));
        else
            snprintf(l->rkey, sizeof(l->rkey), "%s:rl:%s:%.*s", lg_cl.cf->name, lz->name, (int)kn, k);
    }
    if (l->tokens > 0 && lg_cl.loop->now < l->until) {
        l->tokens--;
        return 1;
    }
    /* size the next lease to this worker's own demand: doubled when the
     * last ran out in time, halved when it expired unused, so what a
     * worker holds and may waste follows the share of the key it sees */
    int max = lease_size(lz, burst);
    if (l->tokens > 0)
        l->size = l->size / 2 > 1 ? l->size / 2 : 1;
    else if (l->until && lg_cl.loop->now < l->until)
        l->size = l->size * 2 < max ? l->size * 2 : max;
    if (l->size < 1 || l->size > max)
        l->size = l->size < 1 ? 1 : max;
    l->tokens = 0;
    if (!lg_redis_ready(&lg_cl.cmd)) {
        lg_cluster_count(LG_CM_DEGRADED);
        lg_cluster_warn("cluster: limit_req zone \"%s\" counts on this node alone: no connection "
                        "to redis at %s", lz->name, lg_cl.cf->redis);
        return -1;
    }
    waiter_t *w = lg_arena_calloc(&r->arena, sizeof(*w));
    if (w == NULL)
        return -1;
    w->r = r;
    w->done = done;
    w->l = l;
    if (l->tail) l->tail->next = w; else l->head = w;
    l->tail = w;
    lg_req_cleanup(r, waiter_cleanup, w);
    if (l->c == NULL && ask(l) < 0) {
        waiter_cleanup(w);
        lg_cluster_count(LG_CM_DEGRADED);
        return -1;
    }
    return 2;
}

/* The request waited too long (limit.c's backstop): drop it from every queue. */
static void cancel(lg_req_t *r)
{
    for (size_t i = 0; leases && i < LEASES; i++) {
        lease_t *l = &leases[i];
        for (waiter_t *w = l->head; w; w = w->next)
            if (w->r == r) {
                waiter_cleanup(w);
                return;
            }
    }
}

int lg_cluster_ratelimit_init(void)
{
    int any = 0;
    for (size_t i = 0; i < lg_cl.conf->nlimit_zones; i++)
        any |= lg_cl.conf->limit_zones[i].cluster;
    if (!any)
        return 0;
    leases = calloc(LEASES, sizeof(*leases));
    if (leases == NULL)
        return -1;
    lg_redis_sha1(SCRIPT, sha);
    lg_limit_cluster_take = take;
    lg_limit_cluster_cancel = cancel;
    return 0;
}

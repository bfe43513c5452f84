/*
 * Upstream connections: a per-worker keep-alive pool for every upstream
 * server, smooth weighted round robin (nginx's algorithm) to pick a server,
 * and non-blocking connect.
 *
 * A pooled connection stays registered with epoll under idle_cb, so an
 * upstream that closes it is noticed and the descriptor closed at once
 * instead of failing the next request that would have picked it.
 */
#include "proxy/proxy.h"
#include "pipeline/vars.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/log.h"
#include "feature/metrics.h"
#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include "proxy/balance.h"
#include "proxy/upstate.h"

#define POOL_IDLE_TIMEOUT 60000

static void count_active(lg_uconn_t *uc, int delta);

/* The idle stack and its count for server si of up: configured upstreams in
 * the worker's tables, forward-proxy destinations in their own record. */
static lg_uconn_t **pool_head(lg_upstream_t *up, size_t si, int **count)
{
    if (up->dyn) {
        *count = &up->dyn->npool;
        return &up->dyn->pool;
    }
    *count = &lg_w.npool[up->index][si];
    return &lg_w.pools[up->index][si];
}

/* One more (+1) or one less (-1) idle connection in *count; a destination
 * also counts it in the worker's total (keepalive_total). */
static void pool_count(lg_upstream_t *up, int *count, int delta)
{
    *count += delta;
    if (up->dyn && up->dyn->idle_total)
        *up->dyn->idle_total += delta;
}

int lg_upstream_init(void)
{
    lg_conf_t *c = lg_w.conf;
    size_t total = 0;
    lg_w.pools = calloc(c->nupstreams ? c->nupstreams : 1, sizeof(*lg_w.pools));
    lg_w.npool = calloc(c->nupstreams ? c->nupstreams : 1, sizeof(*lg_w.npool));
    lg_w.rr_base = calloc(c->nupstreams ? c->nupstreams : 1, sizeof(*lg_w.rr_base));
    if (!lg_w.pools || !lg_w.npool || !lg_w.rr_base)
        return -1;
    for (size_t u = 0; u < c->nupstreams; u++) {
        lg_upstream_t *up = &c->upstreams[u];
        lg_w.pools[u] = calloc(up->nservers, sizeof(lg_uconn_t *));
        lg_w.npool[u] = calloc(up->nservers, sizeof(int));
        if (!lg_w.pools[u] || !lg_w.npool[u])
            return -1;
        lg_w.rr_base[u] = total;
        total += up->nservers;
    }
    lg_w.rr_current = calloc(total ? total : 1, sizeof(int32_t));
    lg_w.ewma = calloc(total ? total : 1, sizeof(lg_ewma_t));
    lg_w.queued = calloc(c->nupstreams ? c->nupstreams : 1, sizeof(int));
    if (lg_w.queued == NULL)
        return -1;
    if (lg_h2up_init() < 0 || lg_reresolve_init() < 0)
        return -1;
    lg_rand_seed(&lg_w.rng, (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)lg_w.loop.now);
    return lg_w.rr_current && lg_w.ewma ? 0 : -1;
}

const char *lg_upstream_addr(const lg_uconn_t *uc)
{
    return uc->up->servers[uc->server].addr.text;
}

static void uconn_free(lg_uconn_t *uc)
{
    lg_end_close(&uc->e, &lg_w.loop);
    lg_timer_del(&lg_w.loop, &uc->idle_timer);
    lg_buf_put(uc->in);
    uc->in = NULL;
    if (uc->up->dyn)
        uc->up->dyn->refs--;
    uc->magic = 0;
    lg_loop_defer_free(&lg_w.loop, uc);
}

static void pool_remove(lg_uconn_t *uc)
{
    int *count;
    lg_uconn_t **pp = pool_head(uc->up, uc->server, &count);
    while (*pp && *pp != uc)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = uc->next;
        pool_count(uc->up, count, -1);
    }
    uc->next = NULL;
}

/* A pooled connection became readable or hung up: either way it is done. */
static void idle_cb(lg_io_t *io, uint32_t events)
{
    lg_uconn_t *uc = io->data;
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return;
    if (uc->e.ssl && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        /* a TLS 1.3 session ticket may arrive on an idle connection: let
         * OpenSSL take it, and keep the connection unless data or an end came */
        char c;
        int n = SSL_peek(uc->e.ssl, &c, 1);
        if (n <= 0 && SSL_get_error(uc->e.ssl, n) == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            return;
        }
        ERR_clear_error();
    }
    pool_remove(uc);
    uconn_free(uc);
}

void lg_upstream_drop_idle(lg_upstream_t *up, size_t si)
{
    int *count;
    lg_uconn_t **pp = pool_head(up, si, &count);
    while (*pp) {
        lg_uconn_t *uc = *pp;
        *pp = uc->next;
        (*count)--;
        uc->next = NULL;
        uconn_free(uc);
    }
}

static void idle_timeout_cb(lg_timer_t *t)
{
    lg_uconn_t *uc = t->data;
    pool_remove(uc);
    uconn_free(uc);
}

void lg_upstream_release(lg_uconn_t *uc, int reusable)
{
    if (uc == NULL)
        return;
    uc->owner = NULL;
    if (uc->counted) {
        count_active(uc, -1);
        uc->counted = 0;
    }
    if (uc->h2) {
        lg_h2up_release(uc);   /* the stream ends; the session stays */
        uconn_free(uc);
        return;
    }
    int *count;
    lg_uconn_t **head = pool_head(uc->up, uc->server, &count);
    const struct lg_dynup *d = uc->up->dyn;
    if (!reusable || lg_w.quitting || uc->up->keepalive == 0 ||
        *count >= uc->up->keepalive ||
        (d && d->idle_total && *d->idle_total >= d->idle_max) ||
        (uc->in && lg_buf_len(uc->in) != 0)) {
        uconn_free(uc);
        return;
    }
    lg_buf_put(uc->in);         /* a pooled connection holds no buffer */
    uc->in = NULL;
    uc->reused = 1;
    uc->e.io.cb = idle_cb;
    uc->e.io.data = uc;
    uc->next = *head;
    *head = uc;
    pool_count(uc->up, count, +1);
    uc->idle_timer.cb = idle_timeout_cb;
    uc->idle_timer.data = uc;
    lg_timer_set(&lg_w.loop, &uc->idle_timer,
                 d && d->idle_timeout ? d->idle_timeout : POOL_IDLE_TIMEOUT);
}

void lg_upstream_flush(lg_upstream_t *up, size_t si)
{
    int *count;
    lg_uconn_t **head = pool_head(up, si, &count);
    while (*head) {
        lg_uconn_t *uc = *head;
        *head = uc->next;
        pool_count(up, count, -1);
        uc->next = NULL;
        uconn_free(uc);
    }
}

static lg_msec_t mono_now(void)
{
    return lg_w.loop.now;   /* CLOCK_MONOTONIC ms: the same clock in every process */
}

/* Is server i out: down by configuration or ejected by passive health? */
static int server_out(const lg_upstream_t *up, size_t i, lg_msec_t now)
{
    if (up->servers[i].down || up->servers[i].unresolved)
        return 1;           /* resolve: a name with no address yet */
    lg_upstate_t *st = up->state;
    return st && (atomic_load_explicit(&st[i].down_until, memory_order_relaxed) > now ||
                  atomic_load_explicit(&st[i].hc_down, memory_order_relaxed));
}

int lg_upstream_usable(const lg_upstream_t *up)
{
    lg_msec_t now = mono_now();
    for (size_t i = 0; i < up->nservers; i++)
        if (!server_out(up, i, now))
            return 1;
    return 0;
}

static uint32_t active_sum(const lg_upstate_t *st)
{
    uint32_t n = 0;
    int slots = lg_w.conf->worker_processes < LG_UPSTATE_SLOTS ? lg_w.conf->worker_processes
                                                              : LG_UPSTATE_SLOTS;
    for (int k = 0; k < slots; k++)
        n += atomic_load_explicit(&st->active[k], memory_order_relaxed);
    return n;
}

/*
 * Choose a server not in `tried` with the upstream's algorithm: primaries
 * first, backups only when no primary is usable.  -1 when none is.
 */
/* Slow start: a server that just came back gets a growing share of its weight. */
#define SLOW_START_SCALE 100     /* so that a weight of 1 can still ramp */

static uint32_t eff_weight(const lg_upstream_t *up, size_t i, lg_msec_t now)
{
    uint32_t w = (uint32_t)up->servers[i].weight;
    if (up->slow_start == 0 || up->state == NULL)
        return w;
    w *= SLOW_START_SCALE;
    int64_t back = atomic_load_explicit(&up->state[i].back_at, memory_order_relaxed);
    if (back == 0 || now < back || now - back >= up->slow_start)
        return w;
    uint64_t e = (uint64_t)w * (uint64_t)(now - back) / (uint64_t)up->slow_start;
    return e ? (uint32_t)e : 1;
}

/*
 * Choose a server not in `tried` with the upstream's algorithm: primaries
 * first, backups only when no primary is usable.  -1 when none is; *full
 * says some were skipped only because they are at max_conns.
 */
int lg_upstream_pick(lg_upstream_t *up, const struct sockaddr *peer, const char *key,
                     size_t tried, int *full)
{
    lg_bal_server_t bs[64];
    size_t n = up->nservers;
    lg_msec_t now = mono_now();
    int need_load = up->balance == LG_BAL_LEAST_CONN || up->balance == LG_BAL_RANDOM ||
                    up->balance == LG_BAL_PEAK_EWMA;
    *full = 0;
    if (up->max_conns && up->state) {
        /* circuit breaking for the whole upstream, over all workers */
        uint32_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += active_sum(&up->state[i]);
        if (total >= (uint32_t)up->max_conns) {
            *full = 1;
            return -1;
        }
    }
    for (int backups = 0; backups < 2; backups++) {
        int any = 0;
        for (size_t i = 0; i < n; i++) {
            int usable = !(tried & ((size_t)1 << i)) && up->servers[i].backup == backups &&
                         !server_out(up, i, now);
            bs[i] = (lg_bal_server_t){ .weight = (uint32_t)up->servers[i].weight *
                                                 (up->slow_start ? SLOW_START_SCALE : 1),
                                       .eff_weight = eff_weight(up, i, now) };
            if ((need_load || up->servers[i].max_conns) && up->state) {
                bs[i].active = active_sum(&up->state[i]);
                bs[i].inflight = bs[i].active;
                /* circuit breaking: a server at max_conns takes no more */
                if (usable && up->servers[i].max_conns &&
                    bs[i].active >= (uint32_t)up->servers[i].max_conns) {
                    usable = 0;
                    *full = 1;
                }
            }
            bs[i].usable = usable;
            any |= usable;
            if (up->balance == LG_BAL_PEAK_EWMA)
                bs[i].ewma_us = lg_ewma_get(&lg_w.ewma[lg_w.rr_base[up->index] + i],
                                            (uint64_t)now * 1000, LG_EWMA_TAU_US);
        }
        if (!any)
            continue;
        int *cur = lg_w.rr_current + lg_w.rr_base[up->index];
        switch (up->balance) {
        case LG_BAL_ROUND_ROBIN:
            return lg_bal_wrr(bs, n, cur);
        case LG_BAL_LEAST_CONN:
            return lg_bal_least_conn(bs, n, &lg_w.rng);
        case LG_BAL_RANDOM:
            return lg_bal_p2c(bs, n, &lg_w.rng);
        case LG_BAL_PEAK_EWMA:
            return lg_bal_peak_ewma(bs, n, &lg_w.rng);
        case LG_BAL_IP_HASH:
            return lg_bal_ip_hash(bs, n, peer);
        case LG_BAL_HASH:
            if (key == NULL || up->maglev == NULL)
                return lg_bal_wrr(bs, n, cur);
            return lg_bal_maglev(up->maglev, LG_MAGLEV_M, bs, n, key, strlen(key));
        }
    }
    return -1;
}

/* A request's choice: its hash key is its template expanded. */
static int pick_server(lg_req_t *s, lg_upstream_t *up, size_t tried, int *full)
{
    const char *key = up->balance == LG_BAL_HASH
                      ? lg_vars_expand(s, up->hash_key, LG_VARS_ESCAPE, NULL) : NULL;
    return lg_upstream_pick(up, (const struct sockaddr *)&s->peer, key, tried, full);
}

void lg_upstream_result(lg_uconn_t *uc, int ok, lg_msec_t latency_ms)
{
    lg_upstream_t *up = uc->up;
    lg_upstate_t *st = up->state ? &up->state[uc->server] : NULL;
    lg_msec_t now = mono_now();
    if (ok) {
        if (st && atomic_load_explicit(&st->ejections, memory_order_relaxed) &&
            now - atomic_load_explicit(&st->back_at, memory_order_relaxed) > 10 * up->fail_timeout)
            atomic_store_explicit(&st->ejections, 0, memory_order_relaxed);
        if (up->balance == LG_BAL_PEAK_EWMA)
            lg_ewma_update(&lg_w.ewma[lg_w.rr_base[up->index] + uc->server],
                           (uint64_t)(latency_ms > 0 ? latency_ms : 0) * 1000 + 100,
                           (uint64_t)now * 1000, LG_EWMA_TAU_US);
        if (st && atomic_load_explicit(&st->fails, memory_order_relaxed))
            atomic_store_explicit(&st->fails, 0, memory_order_relaxed);
        return;
    }
    /* as nginx: a lone server is never taken out, there is nothing to fail over to */
    if (st == NULL || up->max_fails == 0 || up->nservers == 1)
        return;
    lg_shm_add(&st->failures, 1);
    int64_t start = atomic_load_explicit(&st->window_start, memory_order_relaxed);
    if (now - start > up->fail_timeout) {
        atomic_store_explicit(&st->window_start, now, memory_order_relaxed);
        atomic_store_explicit(&st->fails, 0, memory_order_relaxed);
    }
    uint32_t f = atomic_fetch_add_explicit(&st->fails, 1, memory_order_relaxed) + 1;
    if (f >= (uint32_t)up->max_fails &&
        atomic_load_explicit(&st->down_until, memory_order_relaxed) <= now) {
        /* outlier ejection: each ejection in a row lasts longer, up to 10x */
        uint32_t k = atomic_fetch_add_explicit(&st->ejections, 1, memory_order_relaxed);
        lg_msec_t d = up->fail_timeout * (lg_msec_t)(1 + (k < 9 ? k : 9));
        atomic_store_explicit(&st->down_until, now + d, memory_order_relaxed);
        atomic_store_explicit(&st->back_at, now + d, memory_order_relaxed);
        atomic_store_explicit(&st->fails, 0, memory_order_relaxed);
        lg_warn("upstream \"%s\" server %s is out for %lld ms after %u failures",
                up->name, up->servers[uc->server].addr.text, (long long)d, f);
    }
}

static void count_active(lg_uconn_t *uc, int delta)
{
    if (uc->up->state == NULL || lg_w.slot >= LG_UPSTATE_SLOTS)
        return;     /* (forward-proxy destinations have no shared state) */
    _Atomic uint32_t *a = &uc->up->state[uc->server].active[lg_w.slot];
    if (delta > 0) {
        atomic_fetch_add_explicit(a, 1, memory_order_relaxed);
        lg_shm_add(&uc->up->state[uc->server].requests, 1);
    } else if (atomic_load_explicit(a, memory_order_relaxed) > 0) {
        atomic_fetch_sub_explicit(a, 1, memory_order_relaxed);
    }
}

static lg_uconn_t *uconn_connect(lg_upstream_t *up, size_t si, int *err)
{
    const lg_addr_t *a = &up->servers[si].addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    if (a->ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    int rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    if (rc < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    lg_uconn_t *uc = calloc(1, sizeof(*uc));
    if (uc == NULL) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    uc->magic = LG_UCONN_MAGIC;
    uc->e.io.fd = fd;
    uc->up = up;
    if (up->dyn)
        up->dyn->refs++;        /* the destination outlives its connections */
    uc->server = si;
    uc->connected = rc == 0;
    if (lg_io_add(&lg_w.loop, &uc->e.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        *err = errno;
        close(fd);
        free(uc);
        return NULL;
    }
    return uc;
}

/*
 * Pick a server not in *tried and return a connection to it: a pooled one if
 * there is one, else a new one (connect in progress).  On failure to even
 * start a connect, that server is marked tried and the next is attempted.
 */
lg_uconn_t *lg_upstream_get(lg_req_t *s, lg_upstream_t *up, size_t *tried, int *err)
{
    for (;;) {
        int full = 0;
        /* a forward-proxy destination has one server: no choice to make */
        int si = up->dyn ? ((*tried & 1) ? -1 : 0) : pick_server(s, up, *tried, &full);
        if (si < 0) {
            *err = full ? EBUSY : 0;
            return NULL;
        }
        if (si < 64)
            *tried |= (size_t)1 << si;
        if (up->h2) {
            /* a stream of the server's shared HTTP/2 session */
            lg_uconn_t *uc = lg_h2up_get(s, up, (size_t)si, err);
            if (uc) {
                uc->counted = 1;
                count_active(uc, +1);
                return uc;
            }
            lg_uconn_t tmp = { .up = up, .server = (size_t)si };
            if (up->fail_mask & LG_COND_ERROR)
                lg_upstream_result(&tmp, 0, 0);
            lg_mx_upstream_error(&tmp, NULL);
            lg_log_errno(LG_LOG_ERROR, *err, "connect() to HTTP/2 upstream \"%s\" server %s failed",
                         up->name, up->servers[si].addr.text);
            continue;
        }
        int *count;
        lg_uconn_t **head = pool_head(up, (size_t)si, &count);
        /* as Squid: a forward-proxy request that may not be sent twice
         * (a POST) never goes on a reused connection to a destination or a
         * parent, where a close racing it would leave no way to know
         * whether it took effect */
        int careful = up->dyn || (s && lg_req_is_forward(s));
        lg_uconn_t *uc = careful && !s->ri.method_idempotent ? NULL : *head;
        if (uc) {
            *head = uc->next;
            pool_count(up, count, -1);
            uc->next = NULL;
            lg_timer_del(&lg_w.loop, &uc->idle_timer);
            uc->counted = 1;
            count_active(uc, +1);
            return uc;
        }
        uc = uconn_connect(up, (size_t)si, err);
        if (uc) {
            uc->counted = 1;
            count_active(uc, +1);
            return uc;
        }
        lg_uconn_t tmp = { .up = up, .server = (size_t)si };
        if (up->fail_mask & LG_COND_ERROR)
            lg_upstream_result(&tmp, 0, 0);
        lg_mx_upstream_error(&tmp, NULL);
        lg_log_errno(LG_LOG_ERROR, *err, "connect() to upstream \"%s\" server %s failed",
                     up->name, up->servers[si].addr.text);
    }
}

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

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/log.h"

#define UCONN_MAGIC 0x55434f4eu
#define POOL_IDLE_TIMEOUT 60000

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
    lg_w.rr_current = calloc(total ? total : 1, sizeof(int));
    return lg_w.rr_current ? 0 : -1;
}

const char *lg_uconn_addr(const lg_uconn_t *uc)
{
    return uc->up->servers[uc->server].addr.text;
}

static void uconn_free(lg_uconn_t *uc)
{
    if (uc->e.io.fd >= 0) {
        lg_io_del(&lg_w.loop, &uc->e.io);
        close(uc->e.io.fd);
        uc->e.io.fd = -1;
    }
    lg_timer_del(&lg_w.loop, &uc->idle_timer);
    lg_buf_put(uc->in);
    uc->in = NULL;
    uc->magic = 0;
    lg_loop_defer_free(&lg_w.loop, uc);
}

static void pool_remove(lg_uconn_t *uc)
{
    size_t u = (size_t)uc->up->index;
    lg_uconn_t **pp = &lg_w.pools[u][uc->server];
    while (*pp && *pp != uc)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = uc->next;
        lg_w.npool[u][uc->server]--;
    }
    uc->next = NULL;
}

/* A pooled connection became readable or hung up: either way it is done. */
static void idle_cb(lg_io_t *io, uint32_t events)
{
    lg_uconn_t *uc = io->data;
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return;
    pool_remove(uc);
    uconn_free(uc);
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
    size_t u = (size_t)uc->up->index;
    if (!reusable || lg_w.quitting || uc->up->keepalive == 0 ||
        lg_w.npool[u][uc->server] >= uc->up->keepalive ||
        (uc->in && lg_buf_len(uc->in) != 0)) {
        uconn_free(uc);
        return;
    }
    lg_buf_put(uc->in);         /* a pooled connection holds no buffer */
    uc->in = NULL;
    uc->reused = 1;
    uc->e.io.cb = idle_cb;
    uc->e.io.data = uc;
    uc->next = lg_w.pools[u][uc->server];
    lg_w.pools[u][uc->server] = uc;
    lg_w.npool[u][uc->server]++;
    uc->idle_timer.cb = idle_timeout_cb;
    uc->idle_timer.data = uc;
    lg_timer_set(&lg_w.loop, &uc->idle_timer, POOL_IDLE_TIMEOUT);
}

/* Smooth weighted round robin over servers not yet tried for this request. */
static int pick_server(lg_upstream_t *up, size_t tried)
{
    int *cur = lg_w.rr_current + lg_w.rr_base[up->index];
    int total = 0, best = -1;
    for (size_t i = 0; i < up->nservers; i++) {
        if (i < 64 && (tried & ((size_t)1 << i)))
            continue;
        int w = up->servers[i].weight;
        cur[i] += w;
        total += w;
        if (best < 0 || cur[i] > cur[best])
            best = (int)i;
    }
    if (best >= 0)
        cur[best] -= total;
    return best;
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
    uc->magic = UCONN_MAGIC;
    uc->e.io.fd = fd;
    uc->up = up;
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
lg_uconn_t *lg_upstream_get(lg_upstream_t *up, size_t *tried, int *err)
{
    for (;;) {
        int si = pick_server(up, *tried);
        if (si < 0)
            return NULL;
        if (si < 64)
            *tried |= (size_t)1 << si;
        size_t u = (size_t)up->index;
        lg_uconn_t *uc = lg_w.pools[u][si];
        if (uc) {
            lg_w.pools[u][si] = uc->next;
            lg_w.npool[u][si]--;
            uc->next = NULL;
            lg_timer_del(&lg_w.loop, &uc->idle_timer);
            return uc;
        }
        uc = uconn_connect(up, (size_t)si, err);
        if (uc)
            return uc;
        lg_log_errno(LG_LOG_ERROR, *err, "connect() to upstream \"%s\" server %s failed",
                     up->name, up->servers[si].addr.text);
    }
}

/*
 * Active health checks.  One worker (slot 0 of the current generation)
 * probes every server of every upstream that has a health_check, and
 * writes the verdict into the shared upstream state, so the whole process
 * tree acts on one set of checks instead of one per worker.
 *
 * A probe is a small state machine in the worker's event loop:
 *   CONNECT -> [HANDSHAKE] -> SEND -> READ -> (verdict) -> idle until the
 *   next interval,
 * with one timer for both the interval and the probe's timeout.  The probe
 * sends "Connection: close" and reads until the peer closes, the head and
 * the body match are decided, or its buffer is full.  An upstream with
 * `tls = true` is probed over TLS with the same verification, SNI and client
 * certificate as its requests (lg_tls_connect), so a certificate that fails
 * verification fails the check too.
 *
 * A check of type "tcp" (stream upstreams, HAProxy's tcp-check) skips the
 * HTTP: connecting passes, or, with `send` / `expect`, those bytes are
 * sent and the answer must contain the expected ones.
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "feature/metrics.h"
#include "net/io.h"
#include "net/tls.h"
#include "proxy/upstate.h"

typedef enum hc_state {
    HC_IDLE    = 0,             /* waiting for the next interval */
    HC_CONNECT = 1,
    HC_SEND    = 2,
    HC_READ    = 3,
    HC_HANDSHAKE = 4,
} hc_state_t;

typedef struct probe {
    lg_end_t       e;           /* the socket, and its TLS when the upstream has tls */
    lg_timer_t     timer;
    hc_state_t     state;
    lg_upstream_t *up;          /* borrowed from the conf */
    size_t         si;
    char           req[1024];
    size_t         req_len, sent;
    char           buf[8192];
    size_t         len;
    int            local_down;  /* this node's own verdict (rise/fall applied) */
} probe_t;

static probe_t *probes;         /* owned array */
static size_t nprobes;

static void probe_verdict(probe_t *p, int ok, const char *why);

static void probe_close(probe_t *p)
{
    lg_end_close(&p->e, &lg_w.loop);
}

/* Did the response pass?  0 = not decided yet, 1 = pass, -1 = fail. */
static int judge(probe_t *p, int eof, const char **why)
{
    const lg_health_t *h = p->up->health;
    int major, minor, status;
    if (h->tcp) {               /* type "tcp": the expected bytes somewhere in the answer */
        if (memmem(p->buf, p->len, h->expect, h->expect_len))
            return 1;
        *why = eof ? "closed before the expected bytes" : "the expected bytes did not come";
        return eof || p->len == sizeof(p->buf) ? -1 : 0;
    }
    char *end = memmem(p->buf, p->len, "\r\n\r\n", 4);
    if (end == NULL) {
        *why = "no complete response head";
        return eof || p->len == sizeof(p->buf) ? -1 : 0;
    }
    if (sscanf(p->buf, "HTTP/%d.%d %d", &major, &minor, &status) != 3) {
        *why = "not an HTTP response";
        return -1;
    }
    if (status < h->status_min || status > h->status_max) {
        *why = "unexpected status";
        return -1;
    }
    if (h->body == NULL)
        return 1;
    const char *body = end + 4;
    size_t blen = p->len - (size_t)(body - p->buf);
    if (memmem(body, blen, h->body, strlen(h->body)))
        return 1;
    *why = "body does not match";
    return eof || p->len == sizeof(p->buf) ? -1 : 0;
}

static void probe_io(lg_io_t *io, uint32_t ev)
{
    probe_t *p = io->data;
    const char *why = NULL;
    if (p->state == HC_CONNECT) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(p->e.io.fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (ev & (EPOLLERR | EPOLLHUP)) == (EPOLLERR | EPOLLHUP)) {
            probe_verdict(p, 0, "connect failed");
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        p->state = HC_SEND;
        if (p->up->tls) {
            if ((p->e.ssl = lg_tls_connect(p->up, p->si, p->e.io.fd)) == NULL) {
                probe_verdict(p, 0, "cannot start TLS");
                return;
            }
            p->state = HC_HANDSHAKE;
        }
    }
    if (p->state == HC_HANDSHAKE) {
        char msg[256];
        int rc = lg_end_handshake(&p->e, msg, sizeof(msg));
        if (rc == LG_AGAIN)
            return;             /* the next edge continues it */
        if (rc == LG_ERROR) {
            const char *v = lg_tls_verify_error(p->e.ssl);
            lg_info("health check of %s: TLS handshake failed: %s", p->up->servers[p->si].addr.text,
                    v ? v : msg);
            probe_verdict(p, 0, v ? "certificate verification failed" : "TLS handshake failed");
            return;
        }
        p->state = HC_SEND;
    }
    if (p->state == HC_SEND) {
        while (p->sent < p->req_len) {
            ssize_t n = lg_end_send(&p->e, p->req + p->sent, p->req_len - p->sent);
            if (n > 0) {
                p->sent += (size_t)n;
                continue;
            }
            if (n == LG_AGAIN)
                return;
            probe_verdict(p, 0, "send failed");
            return;
        }
        if (p->up->health->tcp && p->up->health->expect == NULL) {
            probe_verdict(p, 1, NULL);  /* type "tcp" without expect: connecting is the check */
            return;
        }
        p->state = HC_READ;
    }
    if (p->state == HC_READ) {
        for (;;) {
            ssize_t n = lg_end_recv(&p->e, p->buf + p->len, sizeof(p->buf) - p->len);
            if (n > 0) {
                p->len += (size_t)n;
                int v = judge(p, 0, &why);
                if (v) {
                    probe_verdict(p, v > 0, why);
                    return;
                }
                continue;
            }
            if (n == LG_AGAIN)
                return;
            int v = judge(p, 1, &why);
            probe_verdict(p, v > 0, n < 0 ? "read failed" : why);
            return;
        }
    }
}

static void probe_start(probe_t *p)
{
    const lg_addr_t *a = &p->up->servers[p->si].addr;
    p->len = p->sent = 0;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        probe_verdict(p, 0, "socket failed");
        return;
    }
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        close(fd);
        probe_verdict(p, 0, "connect failed");
        return;
    }
    p->e.io.fd = fd;
    p->e.io.cb = probe_io;
    p->e.io.data = p;
    p->state = HC_CONNECT;
    if (lg_io_add(&lg_w.loop, &p->e.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        probe_close(p);
        probe_verdict(p, 0, "epoll_ctl failed");
        return;
    }
    lg_timer_set(&lg_w.loop, &p->timer, p->up->health->timeout);
}

static void probe_timer(lg_timer_t *t)
{
    probe_t *p = t->data;
    if (p->state == HC_IDLE)
        probe_start(p);
    else
        probe_verdict(p, 0, "timed out");
}

void (*lg_health_cluster_vote)(lg_upstream_t *up, size_t si, int local_down);

void lg_health_apply(lg_upstream_t *up, size_t si, int down, const char *why)
{
    lg_upstate_t *st = up->state ? &up->state[si] : NULL;
    if (st == NULL)
        return;
    int was = atomic_load_explicit(&st->hc_down, memory_order_relaxed);
    if (down && !was) {
        atomic_store_explicit(&st->hc_down, 1, memory_order_relaxed);
        lg_warn("upstream \"%s\" server %s is down: %s", up->name, up->servers[si].addr.text, why);
    } else if (!down && was) {
        atomic_store_explicit(&st->hc_down, 0, memory_order_relaxed);
        atomic_store_explicit(&st->back_at, lg_w.loop.now, memory_order_relaxed);
        lg_notice("upstream \"%s\" server %s is up: %s", up->name, up->servers[si].addr.text, why);
    }
}

/*
 * Count the result; this node's verdict flips after `rise` passes or
 * `fall` failures in a row.  Without a cluster it is the shared state;
 * with one (lg_health_cluster_vote set by src/cluster) it is this node's
 * vote, and the fleet's count of votes decides (lg_health_apply).
 */
static void probe_verdict(probe_t *p, int ok, const char *why)
{
    probe_close(p);
    lg_timer_del(&lg_w.loop, &p->timer);
    p->state = HC_IDLE;
    const lg_health_t *h = p->up->health;
    lg_mx_count(LG_MX_HEALTH, p->up->name, p->up->servers[p->si].addr.text,
                ok ? "pass" : "fail", 1);
    lg_upstate_t *st = p->up->state ? &p->up->state[p->si] : NULL;
    if (st) {
        int32_t k = atomic_load_explicit(&st->hc_streak, memory_order_relaxed);
        k = ok ? (k > 0 ? k + 1 : 1) : (k < 0 ? k - 1 : -1);
        atomic_store_explicit(&st->hc_streak, k, memory_order_relaxed);
        char msg[160];
        if (!p->local_down && k <= -h->fall) {
            p->local_down = 1;
            snprintf(msg, sizeof(msg), "health check failed %d times (%s)", -k, why ? why : "?");
            if (!lg_health_cluster_vote)
                lg_health_apply(p->up, p->si, 1, msg);
            else
                lg_info("upstream \"%s\" server %s: this node's health check failed %d times (%s)",
                        p->up->name, p->up->servers[p->si].addr.text, -k, why ? why : "?");
        } else if (p->local_down && k >= h->rise) {
            p->local_down = 0;
            snprintf(msg, sizeof(msg), "health check passed %d times", k);
            if (!lg_health_cluster_vote)
                lg_health_apply(p->up, p->si, 0, msg);
        }
        if (lg_health_cluster_vote)
            lg_health_cluster_vote(p->up, p->si, p->local_down);   /* each interval: votes expire */
    }
    if (!lg_w.quitting)
        lg_timer_set(&lg_w.loop, &p->timer, h->interval);
}

void lg_health_start(void)
{
    const lg_conf_t *c = lg_w.conf;
    size_t n = 0;
    for (size_t u = 0; u < c->nupstreams; u++)
        if (c->upstreams[u].health)
            n += c->upstreams[u].nservers;
    if (n == 0)
        return;
    probes = calloc(n, sizeof(*probes));
    if (probes == NULL) {
        lg_alert("no memory for health checks");
        return;
    }
    for (size_t u = 0; u < c->nupstreams; u++) {
        lg_upstream_t *up = &c->upstreams[u];
        if (up->health == NULL)
            continue;
        for (size_t i = 0; i < up->nservers; i++) {
            probe_t *p = &probes[nprobes++];
            p->e.io.fd = -1;
            p->up = up;
            p->si = i;
            p->timer.cb = probe_timer;
            p->timer.data = p;
            /* a reload keeps the shared verdict: start from it */
            p->local_down = up->state ? atomic_load(&up->state[i].hc_down) : 0;
            if (up->health->tcp) {
                /* type "tcp": connect, send `send` if any, find `expect` if any */
                size_t k = up->health->send_len <= sizeof(p->req) ? up->health->send_len : 0;
                if (k)
                    memcpy(p->req, up->health->send, k);
                p->req_len = k;
                lg_timer_set(&lg_w.loop, &p->timer,
                             (lg_msec_t)(i * (size_t)up->health->interval / up->nservers) % 1000 + 1);
                continue;
            }
            const char *host = up->health->host ? up->health->host : up->servers[i].addr.text;
            int len = snprintf(p->req, sizeof(p->req),
                               "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: legate-health-check\r\n"
                               "Connection: close\r\n\r\n",
                               up->health->method, up->health->path, host);
            p->req_len = len > 0 && (size_t)len < sizeof(p->req) ? (size_t)len : 0;
            /* spread the first probes over the interval */
            lg_timer_set(&lg_w.loop, &p->timer,
                         (lg_msec_t)(i * (size_t)up->health->interval / up->nservers) % 1000 + 1);
        }
    }
    lg_info("health checks started for %zu servers", nprobes);
}

void lg_health_stop(void)
{
    for (size_t i = 0; i < nprobes; i++) {
        probe_close(&probes[i]);
        lg_timer_del(&lg_w.loop, &probes[i].timer);
    }
}

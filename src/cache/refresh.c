/*
 * stale-while-revalidate's background request (see cached.c).
 */
#include "cache/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * A background refresh (stale-while-revalidate) is an ordinary request on a
 * socketpair: its session routes, revalidates and stores like any other,
 * and a sink on the other end reads its answer into nothing.  The request
 * repeats the client's GET (its headers, so that Vary picks the same
 * variant), less what would make it conditional, partial or long-lived.
 */
typedef struct refresh_sink {
    lg_io_t              io;
    struct refresh_sink *prev, *next;   /* all of them: reachable until freed */
} refresh_sink_t;

static refresh_sink_t *sinks;

static void sink_unlink(refresh_sink_t *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        sinks = k->next;
    if (k->next)
        k->next->prev = k->prev;
}

static void sink_cb(lg_io_t *io, uint32_t ev)
{
    (void)ev;
    refresh_sink_t *k = io->data;
    char buf[16384];
    for (;;) {
        ssize_t n = read(io->fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        break;                  /* EOF: the refresh is over */
    }
    lg_io_del(&lg_w.loop, io);
    close(io->fd);
    sink_unlink(k);
    free(k);
}

int lg_refresh_start(const lg_req_t *orig)
{
    static const char *const drop[] = {
        "cache-control", "pragma", "if-none-match", "if-modified-since", "if-match",
        "if-unmodified-since", "if-range", "range", "connection", "keep-alive", "te",
        "upgrade", "content-length", "transfer-encoding", "expect", "proxy-connection", NULL
    };
    char head[16384];
    int n = orig->route == NULL     /* a forward-proxy request: absolute form again */
          ? snprintf(head, sizeof(head), "GET http://%.*s%.*s HTTP/1.1\r\n",
                     (int)orig->ri.authority.n, orig->ri.authority.p, (int)orig->ri.uri.n,
                     orig->ri.uri.p)
          : snprintf(head, sizeof(head), "GET %.*s HTTP/1.1\r\n", (int)orig->ri.uri.n,
                     orig->ri.uri.p);
    for (size_t i = 0; i < orig->req.num_headers && n > 0 && (size_t)n < sizeof(head); i++) {
        const http_header_t *h = &orig->req.headers[i];
        int skip = 0;
        for (int k = 0; drop[k] && !skip; k++)
            skip = http_name_eq(h, drop[k]);
        if (!skip)
            n += snprintf(head + n, sizeof(head) - (size_t)n, "%.*s: %.*s\r\n",
                          (int)h->name_len, h->name, (int)h->value_len, h->value);
    }
    if (n <= 0 || (size_t)n + 24 >= sizeof(head))
        return -1;
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n\r\n");

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    refresh_sink_t *k = calloc(1, sizeof(*k));
    lg_conn_t *c = NULL;
    if (k == NULL || write(sv[1], head, (size_t)n) != n)
        goto fail;
    k->io.fd = sv[1];
    k->io.cb = sink_cb;
    k->io.data = k;
    if (lg_io_add(&lg_w.loop, &k->io, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0)
        goto fail;
    /* the client's address: the same balancing and rules */
    if ((c = lg_conn_new(sv[0], orig->conn->bind, &orig->peer)) == NULL) {
        lg_io_del(&lg_w.loop, &k->io);
        goto fail;
    }
    k->next = sinks;
    if (sinks)
        sinks->prev = k;
    sinks = k;
    c->refresh = 1;
    c->refresh_tls = lg_conn_tls(orig->conn);
    lg_conn_begin(c);
    return 0;

fail:
    close(sv[0]);
    close(sv[1]);
    free(k);
    return -1;
}

/*
 * UDP stream servers (a listen with udp = true): datagrams from a client
 * go to one server of the upstream, chosen once per session by the
 * upstream's balancer (lg_upstream_pick), and what that server sends back
 * goes to the client from the listening socket (nginx's
 * `listen ... udp`, for DNS, syslog, RADIUS...).
 *
 * A session is a client address on a listener: its own connected socket
 * to the server (so the kernel filters what comes back and reports an
 * ICMP refusal as ECONNREFUSED, counted for passive health), one timer
 * for proxy_timeout, and, with proxy_responses, an end as soon as every
 * datagram got its answers.  Sessions live in a per-worker hash table;
 * SO_REUSEPORT sends one client's datagrams to one worker.
 *
 * On a graceful stop the listeners are no longer read (the new workers
 * read the same sockets) but stay open for the replies of the sessions
 * left, which end at their timeout or last answer.
 */
#include "stream/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "feature/accesslog.h"
#include "proxy/proxy.h"

#define UDP_MAX  65536          /* the largest datagram */
#define BATCH    64             /* datagrams read per event, then the others get a turn */
#define NBUCKETS 4096

typedef struct ulisten {
    lg_io_t          io;
    const lg_bind_t *bind;
    int              sessions;  /* open on this listener */
} ulisten_t;

typedef struct usess {
    uint32_t                magic;
    lg_io_t                 io;         /* the connected socket to the server */
    lg_timer_t              timer;
    ulisten_t              *ul;         /* replies leave from its socket */
    struct sockaddr_storage peer;
    socklen_t               peer_len;
    char                    peer_text[64];
    lg_upstream_t          *up;
    size_t                  server;
    uint64_t                in, out, bytes_in, bytes_out;   /* datagrams and bytes, each way */
    lg_msec_t               t_start;
    int                     failed;     /* the server refused (ICMP): logged 502 */
    struct usess           *hnext;
} usess_t;

#define USESS_MAGIC 0x55445053u

#define MAX_ULS 1024            /* udp listening sockets of a worker (addresses x slots) */
static ulisten_t *uls;          /* owned: [MAX_ULS], nuls used */
static size_t nuls;
static usess_t *buckets[NBUCKETS];
static int nsess;
static unsigned char dgram[UDP_MAX];

static uint64_t peer_hash(const ulisten_t *ul, const struct sockaddr_storage *ss, socklen_t len)
{
    return lg_hash64(ss, len, (uint64_t)(uintptr_t)ul);
}

static usess_t **slot_of(const ulisten_t *ul, const struct sockaddr_storage *ss, socklen_t len)
{
    usess_t **pp = &buckets[peer_hash(ul, ss, len) % NBUCKETS];
    while (*pp && !((*pp)->ul == ul && (*pp)->peer_len == len && memcmp(&(*pp)->peer, ss, len) == 0))
        pp = &(*pp)->hnext;
    return pp;
}

static const lg_stream_t *stream_of(const ulisten_t *ul)
{
    return ul->bind->default_server->stream;
}

/* The one teardown: log the session, unlink, close, free (after the loop round). */
static void sess_end(usess_t *s, const char *why)
{
    const lg_server_t *srv = s->ul->bind->default_server;
    usess_t **pp = slot_of(s->ul, &s->peer, s->peer_len);
    if (*pp == s)
        *pp = s->hnext;
    lg_timer_del(&lg_w.loop, &s->timer);
    if (s->io.fd >= 0) {
        lg_io_del(&lg_w.loop, &s->io);
        close(s->io.fd);
        s->io.fd = -1;
    }
    char t[64], line[512];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(t, sizeof(t), "%d/%b/%Y:%H:%M:%S %z", &tm);
    lg_msec_t d = lg_w.loop.now - s->t_start;
    snprintf(line, sizeof(line), "%s [%s] %s udp %d %llu %llu %lld.%03lld upstream=%s "
             "datagrams=%llu/%llu ended=\"%s\"", s->peer_text, t, s->ul->bind->addr.text,
             s->failed ? 502 : 200, (unsigned long long)s->bytes_in,
             (unsigned long long)s->bytes_out, (long long)(d / 1000), (long long)(d % 1000),
             s->up->servers[s->server].addr.text, (unsigned long long)s->in,
             (unsigned long long)s->out, why);
    lg_accesslog_line(srv->common.access_log, line);
    s->ul->sessions--;
    nsess--;
    s->magic = 0;
    lg_loop_defer_free(&lg_w.loop, s);
}

static void sess_timeout(lg_timer_t *t)
{
    sess_end(t->data, "proxy_timeout");
}

/* Answers of the server: to the client, from the listener's address. */
static void sess_read(lg_io_t *io, uint32_t ev)
{
    usess_t *s = io->data;
    (void)ev;
    LG_BUG_ON(s->magic != USESS_MAGIC);
    const lg_stream_t *st = stream_of(s->ul);
    for (int i = 0; i < BATCH; i++) {
        ssize_t n = recv(s->io.fd, dgram, sizeof(dgram), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            /* ICMP port unreachable and the like: the server is not there */
            lg_uconn_t tmp = { .up = s->up, .server = s->server };
            if (s->up->fail_mask & LG_COND_ERROR)
                lg_upstream_result(&tmp, 0, 0);
            lg_log_errno(LG_LOG_ERROR, errno, "udp upstream \"%s\" server %s, client: %s",
                         s->up->name, s->up->servers[s->server].addr.text, s->peer_text);
            s->failed = 1;
            sess_end(s, "upstream refused");
            return;
        }
        if (sendto(s->ul->io.fd, dgram, (size_t)n, 0, (const struct sockaddr *)&s->peer,
                   s->peer_len) < 0 && errno != EAGAIN)
            lg_log_errno(LG_LOG_INFO, errno, "udp reply to %s", s->peer_text);
        s->out++;
        s->bytes_out += (uint64_t)n;
        if (st->proxy_responses && s->out >= s->in * (uint64_t)st->proxy_responses) {
            sess_end(s, "answered");
            return;
        }
        lg_timer_set(&lg_w.loop, &s->timer, st->proxy_timeout);
    }
}

/* A new session: a server by the balancer, a socket connected to it. */
static usess_t *sess_new(ulisten_t *ul, const struct sockaddr_storage *peer, socklen_t len)
{
    const lg_stream_t *st = stream_of(ul);
    lg_upstream_t *up = st->upstream;
    char text[64] = "-";
    if (peer->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text, sizeof(text));
    else if (peer->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, text, sizeof(text));
    if (ul->sessions >= st->udp_sessions) {
        static lg_msec_t warned;
        if (lg_w.loop.now - warned > 1000) {    /* once a second at most: a flood is likely */
            lg_warn("udp %s: %d sessions, the most udp_sessions allows: datagrams from new "
                    "clients dropped", ul->bind->addr.text, ul->sessions);
            warned = lg_w.loop.now;
        }
        return NULL;
    }
    size_t tried = 0;
    for (size_t attempt = 0; attempt < up->nservers; attempt++) {
        int full = 0;
        int si = lg_upstream_pick(up, (const struct sockaddr *)peer, text, tried, &full);
        if (si < 0)
            break;
        tried |= (size_t)1 << (si < 64 ? si : 63);
        const lg_addr_t *a = &up->servers[si].addr;
        int fd = socket(a->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
            usess_t *s = calloc(1, sizeof(*s));
            if (s == NULL) {
                close(fd);
                return NULL;
            }
            s->magic = USESS_MAGIC;
            s->io.fd = fd;
            s->io.cb = sess_read;
            s->io.data = s;
            s->timer.cb = sess_timeout;
            s->timer.data = s;
            s->ul = ul;
            memcpy(&s->peer, peer, len);
            s->peer_len = len;
            snprintf(s->peer_text, sizeof(s->peer_text), "%s", text);
            s->up = up;
            s->server = (size_t)si;
            s->t_start = lg_w.loop.now;
            if (lg_io_add(&lg_w.loop, &s->io, EPOLLIN) < 0) {
                close(fd);
                free(s);
                return NULL;
            }
            usess_t **pp = slot_of(ul, peer, len);
            s->hnext = *pp;
            *pp = s;
            ul->sessions++;
            nsess++;
            lg_timer_set(&lg_w.loop, &s->timer, st->proxy_timeout);
            return s;
        }
        lg_uconn_t tmp = { .up = up, .server = (size_t)si };
        if (up->fail_mask & LG_COND_ERROR)
            lg_upstream_result(&tmp, 0, 0);
        lg_log_errno(LG_LOG_ERROR, errno, "udp upstream \"%s\" server %s", up->name, a->text);
        if (fd >= 0)
            close(fd);
    }
    lg_error("no live upstreams in \"%s\" for udp client %s", up->name, text);
    return NULL;
}

/* Datagrams from clients. */
static void listen_read(lg_io_t *io, uint32_t ev)
{
    ulisten_t *ul = io->data;
    (void)ev;
    for (int i = 0; i < BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        ssize_t n = recvfrom(ul->io.fd, dgram, sizeof(dgram), 0, (struct sockaddr *)&peer, &len);
        if (n < 0)
            return;             /* EAGAIN, or an error for a datagram we cannot answer */
        usess_t *s = *slot_of(ul, &peer, len);
        if (s == NULL && (s = sess_new(ul, &peer, len)) == NULL)
            continue;           /* dropped: the client will retry */
        if (send(s->io.fd, dgram, (size_t)n, 0) < 0 && errno != EAGAIN) {
            if (errno == ECONNREFUSED) {
                lg_uconn_t tmp = { .up = s->up, .server = s->server };
                if (s->up->fail_mask & LG_COND_ERROR)
                    lg_upstream_result(&tmp, 0, 0);
                s->failed = 1;
                sess_end(s, "upstream refused");
            }
            continue;
        }
        s->in++;
        s->bytes_in += (uint64_t)n;
        lg_timer_set(&lg_w.loop, &s->timer, stream_of(ul)->proxy_timeout);
    }
}

int lg_udp_listen(int fd, const lg_bind_t *bind)
{
    /* made once and never moved: epoll holds pointers to the lg_io_t in it */
    if (uls == NULL && (uls = calloc(MAX_ULS, sizeof(*uls))) == NULL)
        return -1;
    if (nuls >= MAX_ULS)
        return -1;
    ulisten_t *ul = &uls[nuls++];
    ul->io.fd = fd;
    ul->io.cb = listen_read;
    ul->io.data = ul;
    ul->bind = bind;
    return lg_io_add(&lg_w.loop, &ul->io, EPOLLIN);
}

void lg_udp_quit(void)
{
    for (size_t i = 0; i < nuls; i++)
        lg_io_del(&lg_w.loop, &uls[i].io);     /* kept open: the replies still leave by it */
}

int lg_udp_sessions(void)
{
    return nsess;
}

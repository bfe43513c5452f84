/*
 * A worker: one epoll loop serving the listening sockets of its slots.
 *
 * Signals only set flags; the loop acts on them between batches (epoll_wait
 * returns EINTR when one arrives).  QUIT: stop accepting, drain every
 * connection (pipeline/h1.c: idle ones after a short grace, busy ones after
 * their next answer, which says Connection: close), let in-flight requests
 * finish, exit when none is left (the master kills us at shutdown_timeout).  TERM/INT: exit now.
 * USR1: reopen the log files.
 */
#include "proc/proc.h"

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/log.h"
#include "net/listen.h"
#include "net/tls.h"
#include "cache/store.h"
#include "cache/http.h"
#include "cluster/cluster.h"
#include "feature/accesslog.h"
#include "feature/metrics.h"
#include "pipeline/conn.h"
#ifdef LG_HAVE_HTTP3
#include "net/quic.h"
#include "pipeline/h3.h"
#endif
#include "proxy/proxy.h"
#include "stream/stream.h"

lg_worker_t lg_w;

typedef struct wlistener {
    lg_io_t          io;
    const lg_bind_t *bind;
} wlistener_t;

static wlistener_t *wl;         /* owned array */
#ifdef LG_HAVE_HTTP3
static lg_quic_ep_t **qeps;     /* owned: QUIC endpoints of this worker */
static size_t nqeps;

/* The QUIC endpoints of this worker's slots: the same certificates as the
 * TCP listener's (loaded into GnuTLS), the server's timeouts. */
static void quic_start(const lg_conf_t *conf, int slot, int nworkers)
{
    qeps = calloc(conf->nbinds * 512 + 1, sizeof(*qeps));
    if (qeps == NULL)
        exit(2);
    for (size_t b = 0; b < conf->nbinds; b++) {
        const lg_bind_t *bd = &conf->binds[b];
        if (!bd->quic)
            continue;
        const lg_server_t *srv = bd->default_server;
        const lg_tls_conf_t *t = &srv->tls;
        lg_quic_conf_t qc = {
            .cert = t->certs[0].cert, .key = t->certs[0].key,
            .cert2 = t->ncerts > 1 ? t->certs[1].cert : NULL,
            .key2 = t->ncerts > 1 ? t->certs[1].key : NULL,
            .idle_timeout = srv->common.keepalive_timeout,
            .handshake_timeout = t->handshake_timeout,
            .max_streams_bidi = (uint64_t)conf->http2_max_concurrent_streams,
            .stream_window = LG_H3_STREAM_WINDOW,
            .conn_window = 1024 * 1024,
            .max_conns = (unsigned)conf->worker_connections,
            .max_per_addr = (unsigned)conf->quic_max_connections_per_address,
            .retry = conf->quic_retry,
            .secret = lg_quic_secret, .secret_len = sizeof(lg_quic_secret),
        };
        for (int s = slot; s < 512; s += nworkers) {
            int fd = lg_listener_quic_fd(conf, b, s);
            if (fd < 0)
                continue;
            char why[256];
            qc.steer_id = lg_listener_quic_id(conf, b, s);
            lg_quic_ep_t *ep = lg_quic_ep_new(&lg_w.loop, fd, &qc, lg_h3_app(), (void *)bd, why,
                                              sizeof(why));
            if (ep == NULL) {
                lg_emerg("%s", why);
                exit(2);
            }
            qeps[nqeps++] = ep;
        }
    }
}

/* QUIC connections of this worker, handshakes included (those have no
 * lg_conn_t yet, and must not be cut by the worker's exit). */
static unsigned quic_open(void)
{
    unsigned n = 0;
    for (size_t i = 0; i < nqeps; i++)
        n += lg_quic_ep_count(qeps[i]);
    return n;
}

/* Graceful stop: no new QUIC connections; the open ones get GOAWAY (their
 * lg_conn_t drains with the rest) and keep their packets coming. */
static void quic_drain(void)
{
    for (size_t i = 0; i < nqeps; i++)
        lg_quic_ep_drain(qeps[i]);
}
#endif
static size_t nwl;
static int accepting;
static lg_timer_t tick;

static volatile sig_atomic_t sig_quit, sig_term, sig_reopen;

static void on_signal(int sig)
{
    if (sig == SIGQUIT)
        sig_quit = 1;
    else if (sig == SIGTERM || sig == SIGINT)
        sig_term = 1;
    else if (sig == SIGUSR1)
        sig_reopen = 1;
}

static void accept_cb(lg_io_t *io, uint32_t ev)
{
    wlistener_t *l = io->data;
    (void)ev;
    /*
     * level-triggered: take a small batch, the rest comes next round.  Each
     * new TLS connection costs a key exchange at once (the ClientHello is
     * usually there); 64 in a row held up every response already waiting
     * (p99 22 ms against nginx's 6; new-connection rate 0.90x), 4 interleave
     * them with the rest (p99 7 ms, 1.05-1.14x).  nginx takes one.
     */
    for (int i = 0; i < 4 && accepting; i++) {
        int before = lg_w.nconns;
        lg_conn_accept(io->fd, l->bind);
        if (lg_w.nconns == before)
            break;              /* EAGAIN or an error */
        /* at the limit: make room from connections waiting between
         * requests; only when none waits, pause until one closes (every
         * connection has a timeout, so accepting always resumes) */
        if (lg_w.nconns >= lg_w.conf->worker_connections && !lg_conn_reclaim()) {
            lg_warn("%d worker_connections are busy: not accepting until one closes",
                    lg_w.conf->worker_connections);
            for (size_t k = 0; k < nwl; k++)
                lg_io_mod(&lg_w.loop, &wl[k].io, 0);
            accepting = 0;
            lg_mx_accept_paused(1);
        }
    }
}

/* lg_w.conn_closed: a connection closed, there may be room to accept again. */
static void conn_closed(void)
{
    if (!accepting && !lg_w.quitting && lg_w.nconns < lg_w.conf->worker_connections) {
        for (size_t k = 0; k < nwl; k++)
            lg_io_mod(&lg_w.loop, &wl[k].io, EPOLLIN);
        accepting = 1;
        lg_mx_accept_paused(0);
    }
}

/* SNI: the server of this address whose server_name matches. */
static const lg_server_t *sni_server(const lg_bind_t *b, const char *name)
{
    lg_str_t h = { name, strlen(name) };
    return lg_route_server(b, h);
}

static void tick_cb(lg_timer_t *t)
{
    static unsigned ticks;
    lg_accesslog_flush();
    lg_metrics_flush();
    if (lg_w.slot == 0 && lg_cache && ++ticks % 60 == 0) {
        lg_cache_stats_t st;
        lg_store_stats(lg_cache, &st);
        lg_info("cache: %llu objects, %llu/%llu KiB used, hits %llu, misses %llu, stores %llu, "
                "evictions %llu, promotions %llu", (unsigned long long)st.objects,
                (unsigned long long)(st.used / 1024), (unsigned long long)(st.capacity / 1024),
                (unsigned long long)st.hits, (unsigned long long)st.misses,
                (unsigned long long)st.stores, (unsigned long long)st.evictions,
                (unsigned long long)st.promotions);
    }
    lg_timer_set(&lg_w.loop, t, 1000);
}

static void stop_accepting(void)
{
    for (size_t k = 0; k < nwl; k++) {
        if (wl[k].io.fd >= 0) {
            lg_io_del(&lg_w.loop, &wl[k].io);
            close(wl[k].io.fd);     /* our copy only: the master keeps the socket */
            wl[k].io.fd = -1;
        }
    }
    accepting = 0;
}

static void drop_privileges(const lg_conf_t *conf)
{
    if (geteuid() != 0 || conf->user == NULL)
        return;
    struct passwd *pw = getpwnam(conf->user);
    if (pw == NULL) {
        lg_emerg("getpwnam(\"%s\") failed", conf->user);
        exit(2);
    }
    gid_t gid = pw->pw_gid;
    if (conf->group) {
        struct group *gr = getgrnam(conf->group);
        if (gr == NULL) {
            lg_emerg("getgrnam(\"%s\") failed", conf->group);
            exit(2);
        }
        gid = gr->gr_gid;
    }
    if (setgid(gid) < 0 || initgroups(conf->user, gid) < 0 || setuid(pw->pw_uid) < 0) {
        lg_log_errno(LG_LOG_EMERG, errno, "cannot switch to user \"%s\"", conf->user);
        exit(2);
    }
}

void lg_worker_run(lg_conf_t *conf, int slot, int nworkers)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /*
     * Cache hits and streamed bodies allocate and free blocks of tens to
     * hundreds of KiB per request.  glibc would mmap and munmap each (or
     * trim the heap after each), and every request would fault its pages
     * in again: measured, a third of the time of a 100 KiB cache hit.
     * Keep such blocks in the heap, and up to 32 MiB of free heap mapped.
     */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    lg_log_set_worker(slot + 1);
    memset(&lg_w, 0, sizeof(lg_w));
    lg_w.conf = conf;
    lg_w.slot = slot;
    lg_w.conn_closed = conn_closed;
    if (lg_loop_init(&lg_w.loop) < 0) {
        lg_log_errno(LG_LOG_EMERG, errno, "epoll_create1() failed");
        exit(2);
    }
    lg_end_hold_init(&lg_w.loop);
    if (lg_accesslog_open_all(conf) < 0 || lg_upstream_init() < 0 || lg_feature_init_all() < 0 ||
        lg_cluster_worker_init(conf, &lg_w.loop, slot) < 0)
        exit(2);

    lg_listeners_close_except(conf, slot, nworkers);
    nwl = 0;
    wl = calloc(lg_listeners_count() * 512 + 1, sizeof(*wl));
    if (wl == NULL)
        exit(2);
    for (size_t b = 0; b < conf->nbinds; b++) {
        lg_listener_t *l = lg_listener_find(&conf->binds[b].addr, conf->binds[b].udp);
        if (l == NULL)
            continue;
        for (int s = 0; s < l->nfds; s++) {
            if (l->fds[s] < 0)
                continue;
            if (conf->binds[b].udp) {   /* datagrams: stream/udp.c reads them */
                if (lg_udp_listen(l->fds[s], &conf->binds[b]) < 0)
                    lg_log_errno(LG_LOG_ALERT, errno, "udp listener %s", l->text);
                continue;
            }
            wlistener_t *w = &wl[nwl++];
            w->io.fd = l->fds[s];
            w->io.cb = accept_cb;
            w->io.data = w;
            w->bind = &conf->binds[b];
            uint32_t ev = EPOLLIN;
            if (l->ss.ss_family == AF_UNIX)
                ev |= EPOLLEXCLUSIVE;   /* one socket shared by all workers */
            if (lg_io_add(&lg_w.loop, &w->io, ev) < 0)
                lg_log_errno(LG_LOG_ALERT, errno, "epoll_ctl() for %s failed", l->text);
        }
    }
    accepting = 1;
#ifdef LG_HAVE_HTTP3
    quic_start(conf, slot, nworkers);
#endif
    lg_tls_set_sni(sni_server);
    drop_privileges(conf);
    if (lg_ready_pipe[1] >= 0) {
        ssize_t wn = write(lg_ready_pipe[1], "r", 1);
        (void)wn;               /* a master that stopped reading does not care */
        close(lg_ready_pipe[1]);
    }
    if (lg_ready_pipe[0] >= 0)
        close(lg_ready_pipe[0]);
    lg_ready_pipe[0] = lg_ready_pipe[1] = -1;

    tick.cb = tick_cb;
    lg_timer_set(&lg_w.loop, &tick, 1000);
    if (slot == 0)
        lg_health_start();      /* once for the whole process tree */

    for (;;) {
        lg_loop_once(&lg_w.loop, 1000);
        if (sig_term) {
            lg_accesslog_flush();
            lg_metrics_flush();
            exit(0);
        }
        if (sig_reopen) {
            sig_reopen = 0;
            lg_log_reopen();
            lg_accesslog_reopen();
        }
        if (sig_quit && !lg_w.quitting) {
            lg_w.quitting = 1;
            lg_health_stop();
            stop_accepting();
#ifdef LG_HAVE_HTTP3
            quic_drain();
#endif
            lg_udp_quit();
            lg_conn_drain_all();
        }
        if (lg_w.quitting && lg_w.nconns == 0 && lg_udp_sessions() == 0
#ifdef LG_HAVE_HTTP3
            && quic_open() == 0
#endif
            ) {
            lg_accesslog_flush();
            lg_metrics_flush();
            exit(0);
        }
    }
}

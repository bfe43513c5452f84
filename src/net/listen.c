#include "net/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/log.h"
#include "net/steer.h"

#define MAX_LISTENERS 256

static lg_listener_t *ls[MAX_LISTENERS];   /* owned */
static size_t nls;

size_t lg_listeners_count(void) { return nls; }
lg_listener_t *lg_listener_at(size_t i) { return i < nls ? ls[i] : NULL; }

static int same_addr(const struct sockaddr_storage *a, socklen_t alen,
                     const struct sockaddr_storage *b, socklen_t blen)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    if (a->ss_family == AF_UNIX) {
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        return strcmp(x->sun_path, y->sun_path) == 0;
    }
    return alen == blen && memcmp(a, b, alen) == 0;
}

lg_listener_t *lg_listener_find(const lg_addr_t *a, int udp)
{
    for (size_t i = 0; i < nls; i++)
        if (ls[i]->udp == udp && same_addr(&ls[i]->ss, ls[i]->len, &a->ss, a->len))
            return ls[i];
    return NULL;
}

static int open_socket(const lg_listener_t *l, int backlog, char *err, size_t errlen)
{
    int fd = socket(l->ss.ss_family, (l->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket() for %s failed: %s", l->text, strerror(errno));
        return -1;
    }
    int one = 1;
    if (l->ss.ss_family != AF_UNIX) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
            snprintf(err, errlen, "SO_REUSEPORT on %s failed: %s", l->text, strerror(errno));
            close(fd);
            return -1;
        }
        if (l->ss.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        /* accept only once the request's first bytes have arrived */
        int secs = 1;
        if (!l->udp)
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
        /* UDP (QUIC, stream servers): a full buffer drops datagrams, room for bursts */
        int sz = 4 << 20;
        if (l->udp) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        }
    } else {
        const struct sockaddr_un *sun = (const void *)&l->ss;
        struct stat st;
        if (lstat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(sun->sun_path);   /* stale socket of a previous run */
    }
    if (bind(fd, (const struct sockaddr *)&l->ss, l->len) < 0) {
        snprintf(err, errlen, "bind() to %s failed: %s", l->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (!l->udp && listen(fd, backlog) < 0) {
        snprintf(err, errlen, "listen() on %s failed: %s", l->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Every socket of a listener has SO_REUSEPORT (one per worker), so bind()
 * would also succeed beside another process's SO_REUSEPORT socket of the
 * same user -- a second legate, an HAProxy -- and the kernel would split
 * the address's connections between the two without a word.  Before a
 * new address is bound, a socket without SO_REUSEPORT tries it: in use
 * is then an error, as it is for nginx.  SO_REUSEADDR (TCP) so that
 * connections in TIME_WAIT do not count; not for UDP, where it would
 * share the port.  The same port on another of our own addresses (a
 * wildcard beside a specific address) is ours, not a conflict.
 */
static int probe_free(const lg_listener_t *l, size_t ncreated, char *err, size_t errlen)
{
    if (l->ss.ss_family != AF_INET && l->ss.ss_family != AF_INET6)
        return 0;
    int fd = socket(l->ss.ss_family, (l->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;               /* the real socket() reports it */
    int one = 1;
    if (!l->udp)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int rc = bind(fd, (const struct sockaddr *)&l->ss, l->len);
    int e = errno;
    close(fd);
    if (rc == 0 || e != EADDRINUSE)
        return 0;
    uint16_t port = ((const struct sockaddr_in *)&l->ss)->sin_port;     /* same offset in v6 */
    for (size_t i = 0; i < nls + ncreated; i++) {     /* this sync's are in ls[] too */
        const lg_listener_t *o = ls[i];
        if (o != l && o->udp == l->udp && o->ss.ss_family == l->ss.ss_family &&
            ((const struct sockaddr_in *)&o->ss)->sin_port == port)
            return 0;
    }
    snprintf(err, errlen, "bind() to %s failed: %s (another process listens there)", l->text,
             strerror(EADDRINUSE));
    return -1;
}

/*
 * The listener of address a over TCP or UDP, made if missing (remembered in
 * created[] so a failure undoes only what this sync made), with sockets for
 * `slots` slots, marked used.  NULL with err filled.
 */
static lg_listener_t *ensure(const lg_addr_t *a, int udp, int backlog, int slots,
                             lg_listener_t **created, size_t *ncreated, char *err, size_t errlen)
{
    lg_listener_t *l = lg_listener_find(a, udp);
    for (size_t i = 0; l == NULL && i < *ncreated; i++)
        if (created[i]->udp == udp && same_addr(&created[i]->ss, created[i]->len, &a->ss, a->len))
            l = created[i];
    if (l == NULL) {
        if (nls + *ncreated >= MAX_LISTENERS) {
            snprintf(err, errlen, "too many listen addresses");
            return NULL;
        }
        l = calloc(1, sizeof(*l));
        if (l == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(&l->ss, &a->ss, sizeof(l->ss));
        l->len = a->len;
        l->udp = udp;
        snprintf(l->text, sizeof(l->text), "%s", a->text);
        for (int s = 0; s < 512; s++)
            l->fds[s] = -1;
        l->steer_map = -1;
        l->born = 1;
        if (probe_free(l, *ncreated, err, errlen) < 0) {
            free(l);
            return NULL;
        }
        created[(*ncreated)++] = l;
        ls[nls + *ncreated - 1] = l;    /* adopted by "nls += ncreated" */
    }
    l->used = 1;
    int want = l->ss.ss_family == AF_UNIX ? 1 : slots;
    for (int s = l->nfds; s < want; s++) {
        l->fds[s] = open_socket(l, backlog, err, errlen);
        if (l->fds[s] < 0) {
            for (int k = l->nfds; k < s; k++) {
                close(l->fds[k]);
                l->fds[k] = -1;
            }
            return NULL;
        }
    }
    if (l->nfds < want)
        l->nfds = want;
    return l;
}

int lg_listeners_sync(const lg_conf_t *conf, int slots, char *err, size_t errlen)
{
    if (slots > 512)
        slots = 512;
    lg_listener_t *created[MAX_LISTENERS];
    size_t ncreated = 0;
    /* pass 1: create what is missing, without touching anything existing */
    for (size_t i = 0; i < nls; i++)
        ls[i]->used = ls[i]->quic = 0;
    for (size_t b = 0; b < conf->nbinds; b++) {
        const lg_bind_t *bd = &conf->binds[b];
        lg_listener_t *l = ensure(&bd->addr, bd->udp, bd->backlog, slots, created, &ncreated, err, errlen);
        /* HTTP/3: the same address's UDP port, a listener of its own */
        lg_listener_t *q = NULL;
        if (l == NULL || (bd->quic && (q = ensure(&bd->addr, 1, bd->backlog, slots, created, &ncreated, err,
                                                  errlen)) == NULL))
            goto fail;
        if (q != NULL)
            q->quic = 1;
        /* a stream server's protocol may have the server speak first
         * (SMTP, MySQL): no waiting for the client's bytes to accept.  Set
         * on every socket, as an address may change sides on a reload. */
        int secs = bd->stream ? 0 : 1;
        for (int s = 0; s < l->nfds && l->ss.ss_family != AF_UNIX && !l->udp; s++)
            if (l->fds[s] >= 0)
                setsockopt(l->fds[s], IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
    }
    nls += ncreated;
    /* pass 2: close listeners no longer configured */
    size_t keep = 0;
    for (size_t i = 0; i < nls; i++) {
        if (ls[i]->used) {
            ls[keep++] = ls[i];
            continue;
        }
        lg_notice("closing listener %s", ls[i]->text);
        for (int s = 0; s < ls[i]->nfds; s++)
            close(ls[i]->fds[s]);
        if (ls[i]->steer_map >= 0)
            close(ls[i]->steer_map);
        if (ls[i]->ss.ss_family == AF_UNIX)
            unlink(((struct sockaddr_un *)&ls[i]->ss)->sun_path);
        free(ls[i]);
    }
    nls = keep;
    return 0;

fail:
    /* undo only what this call created */
    for (size_t i = 0; i < ncreated; i++) {
        for (int s = 0; s < created[i]->nfds; s++)
            close(created[i]->fds[s]);
        free(created[i]);
        ls[nls + i] = NULL;
    }
    return -1;
}

int lg_listener_fd(const lg_conf_t *conf, size_t b, int slot)
{
    lg_listener_t *l = lg_listener_find(&conf->binds[b].addr, conf->binds[b].udp);
    if (l == NULL)
        return -1;
    if (l->ss.ss_family == AF_UNIX)
        slot = 0;
    return slot < l->nfds ? l->fds[slot] : -1;
}

int lg_listener_quic_fd(const lg_conf_t *conf, size_t b, int slot)
{
    if (!conf->binds[b].quic)
        return -1;
    lg_listener_t *l = lg_listener_find(&conf->binds[b].addr, 1);    /* the address's UDP port */
    return l && slot < l->nfds ? l->fds[slot] : -1;
}

int lg_listener_quic_id(const lg_conf_t *conf, size_t b, int slot)
{
    if (!conf->binds[b].quic)
        return -1;
    lg_listener_t *l = lg_listener_find(&conf->binds[b].addr, 1);
    return l && l->steered && slot < l->nfds ? (int)(l->bank * 512 + (unsigned)slot) : -1;
}

static int steer_off;           /* the kernel said no once: not again */

/* l's sockets (bank l->bank) into a new map of its own. */
static int steer_begin(lg_listener_t *l)
{
    char why[512];
    int map = lg_steer_new(why, sizeof(why));
    if (map < 0) {
        lg_notice("QUIC: no connection steering (%s): a reload or a client's change of address "
                  "can break an open QUIC connection", why);
        steer_off = 1;
        return -1;
    }
    fcntl(map, F_SETFD, FD_CLOEXEC);
    for (int s = 0; s < l->nfds; s++)
        if (l->fds[s] >= 0 && lg_steer_add(map, l->bank * 512 + (unsigned)s, l->fds[s]) < 0)
            lg_log_errno(LG_LOG_ERROR, errno, "QUIC steering: cannot name the socket of %s slot %d", l->text, s);
    l->steer_map = map;
    return 0;
}

/*
 * A fresh socket per slot for the generation about to start, named by a
 * new bank in the map, and the program pointed at that bank.  The master's
 * copies of the old sockets close here: the old workers keep theirs, and
 * the map keeps steering their connections' datagrams to them until the
 * last of those workers exits.  A listener made by this very sync is
 * fresh already; one inherited from the previous binary is first named by
 * the bank that binary gave it, so its connections stay with it too.
 */
static void steer_generation(lg_listener_t *l, int slots)
{
    int fresh = l->born;
    if (l->steer_map < 0 && steer_begin(l) < 0)
        return;
    if (!fresh) {
        int nfd[512];
        int n = l->ss.ss_family == AF_UNIX ? 1 : slots;
        char err[256];
        for (int s = 0; s < n; s++) {
            nfd[s] = open_socket(l, 0, err, sizeof(err));
            if (nfd[s] < 0) {
                lg_error("QUIC: %s: keeping the old generation's sockets for the new one", err);
                for (int k = 0; k < s; k++)
                    close(nfd[k]);
                return;
            }
        }
        unsigned nb = (l->bank + 1) % LG_STEER_BANKS;
        for (int s = 0; s < l->nfds; s++)
            if (l->fds[s] >= 0)
                close(l->fds[s]);
        for (int s = 0; s < 512; s++)
            l->fds[s] = s < n ? nfd[s] : -1;
        l->nfds = n;
        l->bank = nb;
        l->imported = 0;
        for (int s = 0; s < n; s++)
            if (lg_steer_add(l->steer_map, l->bank * 512 + (unsigned)s, l->fds[s]) < 0)
                lg_log_errno(LG_LOG_ERROR, errno, "QUIC steering: cannot name the socket of %s slot %d",
                             l->text, s);
    }
    char why[512];
    if (lg_steer_attach(l->steer_map, l->fds[0], l->bank * 512, (unsigned)l->nfds, why, sizeof(why)) < 0)
        lg_error("QUIC steering on %s: %s", l->text, why);
    else
        l->steered = 1;         /* its workers mark their connection IDs */
}

/* quic_steering turned off by a reload: the sockets of the last
 * generation are shared by the next, as without steering. */
static void steer_stop(lg_listener_t *l)
{
    lg_steer_detach(l->fds[0]);
    close(l->steer_map);
    l->steer_map = -1;
    l->steered = 0;
}

void lg_listeners_new_generation(const lg_conf_t *conf, int slots)
{
    if (slots > 512)
        slots = 512;
    for (size_t i = 0; i < nls; i++) {
        lg_listener_t *l = ls[i];
        if (l->udp && l->quic && !conf->quic_steering && l->steer_map >= 0)
            steer_stop(l);
        else if (l->udp && l->quic && conf->quic_steering && !steer_off)
            steer_generation(l, slots);
        l->born = 0;
    }
}

void lg_listeners_close_except(const lg_conf_t *conf, int worker, int nworkers)
{
    (void)conf;
    for (size_t i = 0; i < nls; i++) {
        if (ls[i]->steer_map >= 0) {
            close(ls[i]->steer_map);    /* the master's to update; l->steered stays */
            ls[i]->steer_map = -1;
        }
        if (ls[i]->ss.ss_family == AF_UNIX)
            continue;
        for (int s = 0; s < ls[i]->nfds; s++) {
            if (s % nworkers != worker) {
                close(ls[i]->fds[s]);
                ls[i]->fds[s] = -1;
            }
        }
    }
}

void lg_listeners_close_all(void)
{
    for (size_t i = 0; i < nls; i++) {
        for (int s = 0; s < ls[i]->nfds; s++)
            if (ls[i]->fds[s] >= 0)
                close(ls[i]->fds[s]);
        if (ls[i]->steer_map >= 0)
            close(ls[i]->steer_map);
        free(ls[i]);
    }
    nls = 0;
}

/* LEGATE_LISTEN_FDS="fd,slot,text;fd,slot,text;..."  (text has no ';') */
int lg_listeners_export(void)
{
    size_t cap = 64;
    for (size_t i = 0; i < nls; i++)    /* "fd,slot,text;" each: exact room */
        cap += (size_t)ls[i]->nfds * (26 + strlen(ls[i]->text));
    char *env = malloc(cap);
    if (env == NULL)
        return -1;
    size_t n = 0;
    env[0] = '\0';
    for (size_t i = 0; i < nls; i++) {
        for (int s = 0; s < ls[i]->nfds; s++) {
            int fd = ls[i]->fds[s];
            if (fd < 0)
                continue;
            int fl = fcntl(fd, F_GETFD);
            fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
            n += (size_t)snprintf(env + n, cap - n, "%d,%d,%s;", fd, s, ls[i]->text);
        }
    }
    int rc = setenv("LEGATE_LISTEN_FDS", env, 1);
    /* LEGATE_QUIC_BANKS="bank,map,text;...": the steering ids of QUIC
     * sockets, and the map that names them (a socket can be in one map
     * only: the new binary goes on with this one) */
    n = 0;
    env[0] = '\0';
    for (size_t i = 0; i < nls && rc == 0; i++) {
        if (ls[i]->steer_map < 0 || n + strlen(ls[i]->text) + 32 >= cap)
            continue;
        fcntl(ls[i]->steer_map, F_SETFD, fcntl(ls[i]->steer_map, F_GETFD) & ~FD_CLOEXEC);
        n += (size_t)snprintf(env + n, cap - n, "%u,%d,%s;", ls[i]->bank, ls[i]->steer_map, ls[i]->text);
    }
    if (rc == 0)
        rc = n ? setenv("LEGATE_QUIC_BANKS", env, 1) : unsetenv("LEGATE_QUIC_BANKS");
    free(env);
    return rc;
}

static void import_banks(void)
{
    const char *env = getenv("LEGATE_QUIC_BANKS");
    char *copy = env ? strdup(env) : NULL;
    unsetenv("LEGATE_QUIC_BANKS");
    if (copy == NULL)
        return;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        unsigned bank;
        int map, off = 0;
        if (sscanf(tok, "%u,%d,%n", &bank, &map, &off) != 2 || bank >= LG_STEER_BANKS || map < 0)
            continue;
        fcntl(map, F_SETFD, FD_CLOEXEC);
        lg_listener_t *l = NULL;
        for (size_t i = 0; i < nls && l == NULL; i++)
            if (ls[i]->udp && ls[i]->imported && ls[i]->steer_map < 0 && strcmp(ls[i]->text, tok + off) == 0)
                l = ls[i];
        if (l == NULL) {
            close(map);
            continue;
        }
        l->bank = bank;
        l->steer_map = map;
    }
    free(copy);
}

void lg_listeners_import(void)
{
    const char *env = getenv("LEGATE_LISTEN_FDS");
    if (env == NULL)
        return;
    char *copy = strdup(env);
    unsetenv("LEGATE_LISTEN_FDS");
    if (copy == NULL)
        return;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        int fd, slot, off = 0;
        if (sscanf(tok, "%d,%d,%n", &fd, &slot, &off) != 2 || slot < 0 || slot >= 512)
            continue;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            continue;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int type = SOCK_STREAM;
        socklen_t tl = sizeof(type);
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
        int udp = type == SOCK_DGRAM;   /* a UDP listener (QUIC, a stream server) */
        lg_listener_t *l = NULL;
        for (size_t i = 0; i < nls; i++)
            if (ls[i]->udp == udp && same_addr(&ls[i]->ss, ls[i]->len, &ss, len))
                l = ls[i];
        if (l == NULL) {
            if (nls >= MAX_LISTENERS) {
                close(fd);
                continue;
            }
            l = calloc(1, sizeof(*l));
            if (l == NULL) {
                close(fd);
                continue;
            }
            memcpy(&l->ss, &ss, sizeof(ss));
            l->len = len;
            l->udp = udp;
            snprintf(l->text, sizeof(l->text), "%s", tok + off);
            for (int s = 0; s < 512; s++)
                l->fds[s] = -1;
            l->steer_map = -1;
            l->imported = 1;
            ls[nls++] = l;
        }
        l->fds[slot] = fd;
        if (slot + 1 > l->nfds)
            l->nfds = slot + 1;
    }
    free(copy);
    import_banks();
}

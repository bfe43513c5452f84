/*
 * hiredis on legate's event loop, and a connection that heals itself.
 *
 * The adapter: hiredis asks for read and write interest through
 * ac->ev.addRead/delRead/addWrite/delWrite and says the context is going
 * away through ac->ev.cleanup.  Unlike client connections, the Redis
 * socket is registered level-triggered with exactly the interest hiredis
 * asked for: redisAsyncHandleRead() reads once per call, and an
 * edge-triggered registration would strand replies that arrived in the
 * same burst.  There are at most two such sockets per worker, so the
 * epoll_ctl per interest change costs nothing that matters.
 *
 *   IDLE --retry timer--> CONNECTING --AUTH/PING answered--> READY
 *     ^                       |                                 |
 *     +----- backoff ---------+---- error, EOF, stuck ----------+
 *
 * Budgets: each command carries a deadline (redis_timeout unless the caller
 * says otherwise).  Past it the caller's callback runs with NULL and the
 * caller goes on locally; the reply, if it ever comes, is dropped.  A
 * command still unanswered after STUCK_FACTOR budgets (at least a second)
 * means Redis is stuck (SIGSTOPped, swapping, a network black hole): the
 * connection is dropped and made again, so nothing piles up behind it.
 * Connect and AUTH together get redis_connect_timeout.  Backoff doubles
 * from 100 ms to 5 s and is reset by a connection that reached READY.
 *
 * hiredis calls every pending callback with a NULL reply when it frees a
 * context (on error or on redisAsyncFree), then our cleanup hook: that is
 * where r->ac becomes NULL, so no path can use a freed context.
 */
#include "cluster/redis.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <openssl/sha.h>

#include "cluster/cluster.h"
#include "core/log.h"

#define BACKOFF_MIN   100
#define BACKOFF_MAX   5000
#define STUCK_FACTOR  10
#define MAX_WAITING   1024      /* commands in flight per connection */

struct lg_rcmd {
    lg_redis_t  *r;
    lg_redis_cb  cb;            /* NULL: cancelled or already answered (expired) */
    void        *arg;
    lg_msec_t    sent, deadline;
    lg_rcmd_t   *prev, *next;   /* in r's waiting list while linked */
    int          linked;
    /* EVALSHA: what to send as EVAL on NOSCRIPT (one block, owned) */
    int          eval_argc;
    char       **eval_argv;
    size_t      *eval_lens;
};

const char *lg_redis_state_name(lg_redis_state_t s)
{
    switch (s) {
    case LG_RS_IDLE:       return "idle";
    case LG_RS_CONNECTING: return "connecting";
    case LG_RS_READY:      return "ready";
    }
    return "?";
}

static void schedule_retry(lg_redis_t *r);

/* ---- the adapter ---- */

static void io_update(lg_redis_t *r)
{
    if (r->io.fd < 0)
        return;
    uint32_t ev = (r->want_r ? EPOLLIN : 0) | (r->want_w ? EPOLLOUT : 0);
    if (!r->registered) {
        if (lg_io_add(r->loop, &r->io, ev) == 0)
            r->registered = 1;
        else
            lg_log_errno(LG_LOG_ERROR, errno, "cluster: epoll_ctl() for redis failed");
    } else if (ev != r->events) {
        lg_io_mod(r->loop, &r->io, ev);
    }
    r->events = ev;
}

static void ev_add_read(void *p)  { lg_redis_t *r = p; r->want_r = 1; io_update(r); }
static void ev_del_read(void *p)  { lg_redis_t *r = p; r->want_r = 0; io_update(r); }
static void ev_add_write(void *p) { lg_redis_t *r = p; r->want_w = 1; io_update(r); }
static void ev_del_write(void *p) { lg_redis_t *r = p; r->want_w = 0; io_update(r); }

/* hiredis frees the context after this: forget it (the fd is hiredis's to close) */
static void ev_cleanup(void *p)
{
    lg_redis_t *r = p;
    if (r->registered && r->io.fd >= 0)
        lg_io_del(r->loop, &r->io);
    r->io.fd = -1;              /* events still queued in this batch are skipped */
    r->registered = 0;
    r->want_r = r->want_w = 0;
    r->events = 0;
    r->ac = NULL;
    if (r->st != LG_RS_IDLE) {
        int was_ready = r->st == LG_RS_READY;
        r->st = LG_RS_IDLE;
        if (was_ready && r->on_state)
            r->on_state(r);
    }
    schedule_retry(r);
}

static void io_cb(lg_io_t *io, uint32_t events)
{
    lg_redis_t *r = io->data;
    if (r->ac && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleRead(r->ac);
    if (r->ac && r->want_w && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleWrite(r->ac);
}

/* ---- waiting commands ---- */

static void unlink_cmd(lg_rcmd_t *c)
{
    if (!c->linked)
        return;
    lg_redis_t *r = c->r;
    if (c->prev) c->prev->next = c->next; else r->head = c->next;
    if (c->next) c->next->prev = c->prev; else r->tail = c->prev;
    c->prev = c->next = NULL;
    c->linked = 0;
    r->nwaiting--;
}

static void free_cmd(lg_rcmd_t *c)
{
    unlink_cmd(c);
    free(c->eval_argv);         /* one block with the lengths and strings */
    free(c);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    lg_rcmd_t *c = priv;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_ERROR && c->eval_argv && c->cb && ac &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* the script cache was flushed (a restarted Redis): send it whole */
        int n = c->eval_argc;
        char **argv = c->eval_argv;
        size_t *lens = c->eval_lens;
        if (redisAsyncCommandArgv(ac, reply_cb, c, n, (const char **)argv, lens) == REDIS_OK) {
            free(c->eval_argv);     /* hiredis formatted it into its buffer */
            c->eval_argv = NULL;
            return;
        }
        rep = NULL;
    }
    lg_redis_cb cb = c->cb;
    c->cb = NULL;
    if (cb) {
        if (rep == NULL)
            lg_cluster_count(LG_CM_TIMEOUTS);
        cb(c->arg, rep);
    }
    free_cmd(c);
}

static void drop(lg_redis_t *r, const char *why)
{
    if (r->ac == NULL)
        return;
    lg_cluster_warn("cluster: redis %s connection to %s dropped: %s", r->what, r->cf->redis, why);
    lg_cluster_count(LG_CM_ERRORS);
    redisAsyncContext *ac = r->ac;
    redisAsyncFree(ac);         /* callbacks get NULL; ev_cleanup runs */
}

static void tick_cb(lg_timer_t *t)
{
    lg_redis_t *r = t->data;
    lg_msec_t now = r->loop->now;
    lg_msec_t stuck = r->cf->redis_timeout * STUCK_FACTOR;
    if (stuck < 1000)
        stuck = 1000;
    for (lg_rcmd_t *c = r->head, *next; c; c = next) {
        next = c->next;
        if (c->cb && now >= c->deadline) {
            lg_redis_cb cb = c->cb;
            c->cb = NULL;       /* the reply, if it comes, is dropped */
            lg_cluster_count(LG_CM_TIMEOUTS);
            lg_cluster_warn("cluster: redis at %s did not answer within %lld ms", r->cf->redis,
                            (long long)(c->deadline - c->sent));
            cb(c->arg, NULL);
        }
    }
    if (r->head && now - r->head->sent >= stuck) {
        drop(r, "a command has waited too long");
        return;
    }
    if (r->head)
        lg_timer_set(r->loop, &r->tick, r->cf->redis_timeout / 4 + 1);
}

static lg_rcmd_t *send_argv(lg_redis_t *r, int argc, const char **argv, const size_t *lens,
                            lg_msec_t budget, lg_redis_cb cb, void *arg)
{
    if (r->ac == NULL || r->st != LG_RS_READY || r->nwaiting >= MAX_WAITING)
        return NULL;
    lg_rcmd_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->sent = r->loop->now;
    c->deadline = c->sent + (budget > 0 ? budget : r->cf->redis_timeout);
    if (redisAsyncCommandArgv(r->ac, reply_cb, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return NULL;
    }
    c->prev = r->tail;
    if (r->tail) r->tail->next = c; else r->head = c;
    r->tail = c;
    c->linked = 1;
    r->nwaiting++;
    if (!lg_timer_armed(&r->tick))
        lg_timer_set(r->loop, &r->tick, r->cf->redis_timeout / 4 + 1);
    return c;
}

lg_rcmd_t *lg_redis_command(lg_redis_t *r, int argc, const char **argv, const size_t *lens,
                            lg_msec_t budget, lg_redis_cb cb, void *arg)
{
    return send_argv(r, argc, argv, lens, budget, cb, arg);
}

lg_rcmd_t *lg_redis_eval(lg_redis_t *r, const char *script, const char *sha, int nkeys,
                         int argc, const char **argv, const size_t *lens,
                         lg_msec_t budget, lg_redis_cb cb, void *arg)
{
    enum { MAXARG = 16 };
    if (argc + 3 > MAXARG)
        return NULL;
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    const char *v[MAXARG];
    size_t l[MAXARG];
    v[0] = "EVALSHA"; l[0] = 7;
    v[1] = sha;       l[1] = strlen(sha);
    v[2] = nk;        l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        v[3 + i] = argv[i];
        l[3 + i] = lens[i];
    }
    /* the EVAL form, kept for NOSCRIPT: one block of pointers, lengths, bytes */
    int n = argc + 3;
    const char *src[MAXARG];
    size_t sl[MAXARG];
    src[0] = "EVAL"; sl[0] = 4;
    src[1] = script; sl[1] = strlen(script);
    src[2] = nk;     sl[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        src[3 + i] = argv[i];
        sl[3 + i] = lens[i];
    }
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += sl[i] + 1;     /* each NUL-terminated */
    char **ev = malloc((size_t)n * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (ev == NULL)
        return NULL;
    size_t *el = (size_t *)(ev + n);
    char *p = (char *)(el + n);
    for (int i = 0; i < n; i++) {
        memcpy(p, src[i], sl[i]);
        p[sl[i]] = '\0';
        ev[i] = p;
        el[i] = sl[i];
        p += sl[i] + 1;
    }
    lg_rcmd_t *c = send_argv(r, n, v, l, budget, cb, arg);
    if (c == NULL) {
        free(ev);
        return NULL;
    }
    c->eval_argc = n;
    c->eval_argv = ev;
    c->eval_lens = el;
    return c;
}

void lg_redis_cancel(lg_rcmd_t *c)
{
    if (c)
        c->cb = NULL;           /* freed when hiredis is done with it */
}

void lg_redis_sha1(const char *script, char out[41])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)script, strlen(script), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- the connection ---- */

static void became_ready(lg_redis_t *r)
{
    r->st = LG_RS_READY;
    r->backoff = BACKOFF_MIN;
    lg_timer_del(r->loop, &r->retry);
    lg_cluster_recovered(r->what, r->cf->redis);
    if (r->on_state)
        r->on_state(r);
}

static void sub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    lg_redis_t *r = priv;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[0]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (r->st == LG_RS_CONNECTING)
            became_ready(r);
        return;
    }
    if (r->on_message && r->st == LG_RS_READY)
        r->on_message(r->msg_arg, rep);
}

/* The handshake's answer: AUTH's (or PING's) reply. */
static void hello_cb(void *arg, redisReply *rep)
{
    lg_redis_t *r = arg;
    if (rep == NULL)
        return;                 /* the connection went; ev_cleanup retries */
    if (rep->type == REDIS_REPLY_ERROR) {
        lg_cluster_warn("cluster: redis at %s refused %s: %s", r->cf->redis,
                        r->cf->redis_password ? "AUTH" : "PING", rep->str);
        lg_cluster_count(LG_CM_ERRORS);
        r->st = LG_RS_CONNECTING;
        /* not from inside a callback: hiredis defers the free itself */
        redisAsyncFree(r->ac);
        return;
    }
    if (r->channel) {
        const char *v[2] = { "SUBSCRIBE", r->channel };
        size_t l[2] = { 9, strlen(r->channel) };
        if (redisAsyncCommandArgv(r->ac, sub_cb, r, 2, v, l) != REDIS_OK)
            redisAsyncFree(r->ac);
        return;                 /* READY when the subscription is confirmed */
    }
    became_ready(r);
}

static void connect_cb(const redisAsyncContext *ac, int status)
{
    lg_redis_t *r = ac->data;
    if (status != REDIS_OK) {
        lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis,
                        ac->errstr[0] ? ac->errstr : "error");
        lg_cluster_count(LG_CM_ERRORS);
    }
    /* on failure hiredis frees the context next: ev_cleanup schedules the retry */
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    lg_redis_t *r = ac->data;
    if (status != REDIS_OK) {
        lg_cluster_warn("cluster: lost the redis %s connection to %s: %s", r->what, r->cf->redis,
                        ac->errstr[0] ? ac->errstr : "closed");
        lg_cluster_count(LG_CM_ERRORS);
    }
}

/*
 * The handshake is sent before the connection is up (hiredis buffers it):
 * AUTH [user] password when configured, else PING, so READY always means
 * a Redis answered.  Its callback is an ordinary waiting command with
 * the connect budget, sent around send_argv's READY check.
 */
static int hello(lg_redis_t *r)
{
    const char *v[3];
    size_t l[3];
    int n = 0;
    if (r->cf->redis_password) {
        v[n] = "AUTH"; l[n++] = 4;
        if (r->cf->redis_user) {
            v[n] = r->cf->redis_user;
            l[n] = strlen(v[n]); n++;
        }
        v[n] = r->cf->redis_password;
        l[n] = strlen(v[n]); n++;
    } else {
        v[n] = "PING"; l[n++] = 4;
    }
    r->st = LG_RS_READY;        /* only so send_argv lets it out */
    lg_rcmd_t *c = send_argv(r, n, v, l, r->cf->redis_connect_timeout, hello_cb, r);
    r->st = LG_RS_CONNECTING;
    return c ? 0 : -1;
}

static void retry_cb(lg_timer_t *t)
{
    lg_redis_t *r = t->data;
    if (r->st == LG_RS_CONNECTING) {        /* connect or AUTH took too long */
        lg_cluster_warn("cluster: redis at %s: no connection within %lld ms", r->cf->redis,
                        (long long)r->cf->redis_connect_timeout);
        lg_cluster_count(LG_CM_ERRORS);
        if (r->ac)
            redisAsyncFree(r->ac);
        else
            schedule_retry(r);
        return;
    }
    if (r->st != LG_RS_IDLE || r->ac)
        return;
    redisAsyncContext *ac = r->cf->unix_path ? redisAsyncConnectUnix(r->cf->unix_path)
                                             : redisAsyncConnect(r->cf->host, r->cf->port);
    if (ac == NULL || ac->err) {
        lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis,
                        ac ? ac->errstr : "out of memory");
        lg_cluster_count(LG_CM_ERRORS);
        if (ac)
            redisAsyncFree(ac);     /* no hooks attached yet */
        schedule_retry(r);
        return;
    }
    r->ac = ac;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->io.fd = ac->c.fd;
    r->io.cb = io_cb;
    r->io.data = r;
    r->registered = 0;
    r->want_r = r->want_w = 0;
    r->st = LG_RS_CONNECTING;
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    lg_timer_set(r->loop, &r->retry, r->cf->redis_connect_timeout);
    if (hello(r) < 0)
        redisAsyncFree(ac);
}

static void schedule_retry(lg_redis_t *r)
{
    if (r->loop == NULL)
        return;                 /* stopped */
    lg_timer_set(r->loop, &r->retry, r->backoff);
    r->backoff = r->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : r->backoff * 2;
}

void lg_redis_start(lg_redis_t *r, const lg_cluster_conf_t *cf, lg_loop_t *loop, const char *what)
{
    r->what = what;
    r->cf = cf;
    r->loop = loop;
    r->st = LG_RS_IDLE;
    r->io.fd = -1;
    r->retry.cb = retry_cb;
    r->retry.data = r;
    r->tick.cb = tick_cb;
    r->tick.data = r;
    r->backoff = BACKOFF_MIN;
    lg_timer_set(loop, &r->retry, 0);       /* connect from the loop, not from init */
}

void lg_redis_stop(lg_redis_t *r)
{
    if (r->loop == NULL)
        return;
    lg_loop_t *loop = r->loop;
    lg_timer_del(loop, &r->retry);
    lg_timer_del(loop, &r->tick);
    if (r->ac)
        redisAsyncFree(r->ac);
    lg_timer_del(loop, &r->retry);
    r->loop = NULL;
}

/*
 * A connection to Redis on legate's event loop, and a connection that
 * heals itself.
 *
 * legate owns the socket -- TCP, a unix socket, or TCP with TLS for
 * rediss:// -- as an lg_end_t (net/io.h), the end every proxied
 * connection uses, so TLS is net/tls.c's client code and not a second
 * one.  hiredis is kept for the protocol only: redisFormatCommandArgv()
 * frames a command, a redisReader parses replies.  Why not hiredis's
 * asynchronous API, as before TLS: in hiredis 0.14 (Debian 12) it reads
 * and writes a descriptor of its own making and cannot adopt one, and
 * its TLS (hiredis_ssl) came with 1.0.  Feeding it one end of a
 * socketpair relayed to a TLS connection would cost two more descriptors,
 * a second event driver and a copy of every byte.  So plain, unix and
 * TLS connections share this one code path: Redis answers in order, so a
 * reply answers the oldest waiting command (r->head); on a subscriber
 * connection, once SUBSCRIBE is sent, every reply is a push.
 *
 *   IDLE --retry timer--> CONNECTING --AUTH/PING answered--> READY
 *     ^                       |                                 |
 *     +----- backoff ---------+---- error, EOF, stuck ----------+
 *
 * CONNECTING goes through steps: the TCP connect, the TLS handshake
 * (rediss://), then the answer to AUTH (or PING, so READY always means a
 * Redis answered), which is queued at once and written as soon as bytes
 * can flow.  The socket is registered once, edge-triggered, with ready
 * flags, as every descriptor of legate's.
 *
 * Budgets: each command carries a deadline (redis_timeout unless the caller
 * says otherwise).  Past it the caller's callback runs with NULL and the
 * caller goes on locally; the reply, if it ever comes, is dropped.  A
 * command still unanswered after STUCK_FACTOR budgets (at least a second)
 * means Redis is stuck (SIGSTOPped, swapping, a network black hole): the
 * connection is dropped and made again, so nothing piles up behind it.
 * Connect, TLS handshake and AUTH together get redis_connect_timeout.
 * Backoff doubles from 100 ms to 5 s and is reset by a connection that
 * reached READY.
 *
 * One teardown, conn_close(): it closes the end, frees the reader and the
 * unwritten commands, and answers every waiting command with NULL.  A
 * callback may send a command (queued; written after the batch, never
 * from inside the caller's call, so lg_redis_command() never runs a
 * callback before it returns) or end the connection, which the read loop
 * notices by r->gen.
 */
#include "cluster/redis.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "net/tls.h"

#define BACKOFF_MIN   100
#define BACKOFF_MAX   5000
#define STUCK_FACTOR  10
#define MAX_WAITING   1024      /* commands in flight per connection */
#define MAX_OUT       (1 << 20) /* bytes of commands not yet written */

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

const char *lg_redis_step_name(lg_redis_step_t s)
{
    switch (s) {
    case LG_RC_TCP:  return "TCP connect";
    case LG_RC_TLS:  return "TLS handshake";
    case LG_RC_OPEN: return "AUTH/PING answer";
    }
    return "?";
}

static void schedule_retry(lg_redis_t *r);
static void conn_close(lg_redis_t *r);

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

static void link_cmd(lg_redis_t *r, lg_rcmd_t *c)
{
    c->prev = r->tail;
    c->next = NULL;
    if (r->tail) r->tail->next = c; else r->head = c;
    r->tail = c;
    c->linked = 1;
    r->nwaiting++;
}

/* ---- the bytes ---- */

/* Frame argv onto the output; written after this batch (see the top).  0 or -1. */
static int queue(lg_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    if (r->rd == NULL || r->olen - r->ooff > MAX_OUT)
        return -1;
    char *cmd = NULL;
    long long n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0 || cmd == NULL)
        return -1;
    if (r->ooff > 0 && r->ooff == r->olen)
        r->ooff = r->olen = 0;
    if (r->olen + (size_t)n > r->ocap) {
        if (r->ooff > 0) {      /* OpenSSL may see a moved buffer (ACCEPT_MOVING_WRITE_BUFFER) */
            memmove(r->out, r->out + r->ooff, r->olen - r->ooff);
            r->olen -= r->ooff;
            r->ooff = 0;
        }
        size_t cap = r->ocap ? r->ocap : 4096;
        while (cap < r->olen + (size_t)n)
            cap *= 2;
        char *p = cap > r->ocap ? realloc(r->out, cap) : r->out;
        if (p == NULL) {
            redisFreeCommand(cmd);
            return -1;
        }
        r->out = p;
        r->ocap = cap;
    }
    memcpy(r->out + r->olen, cmd, (size_t)n);
    r->olen += (size_t)n;
    redisFreeCommand(cmd);
    lg_loop_post(r->loop, &r->flush);
    return 0;
}

#define CERT_HINT " (does Redis want a client certificate, tls-auth-clients? see redis_tls_cert)"

/* What went wrong on the end, for a log line (a TLS alert says most). */
static const char *end_error(lg_redis_t *r, int err, char *buf, size_t n)
{
    if (r->alert) {
        int desc = r->alert & 0xff;
        /* OpenSSL 3.0 has no text for TLS 1.3's certificate_required */
        const char *name = desc == 116 ? "certificate required" : SSL_alert_desc_string_long(desc);
        snprintf(buf, n, "redis ended TLS with the alert \"%s\"%s", name,
                 desc == 116 || desc == 40 || desc == 42 ? CERT_HINT : "");
        return buf;
    }
    const char *why = err == 0 ? "closed by redis" : r->end.ssl && err == EPROTO ? "TLS protocol error"
                                                                               : strerror(err);
    /* Redis refusing a client without a certificate may reset the
     * connection before its alert can be read (AUTH sits unread) */
    if (r->end.ssl && r->st == LG_RS_CONNECTING && r->cf->redis_tls_cert == NULL) {
        snprintf(buf, n, "%s%s", why, CERT_HINT);
        return buf;
    }
    return why;
}

/* Lost while connected: EOF or an error. */
static void conn_lost(lg_redis_t *r, int err)
{
    char buf[256];
    const char *why = end_error(r, err, buf, sizeof(buf));
    if (r->st == LG_RS_READY)
        lg_cluster_warn("cluster: lost the redis %s connection to %s: %s", r->what, r->cf->redis, why);
    else
        lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis, why);
    lg_cluster_count(LG_CM_ERRORS);
    conn_close(r);
}

/* Write what is queued while the socket takes it.  0, or -1: closed. */
static int flush_out(lg_redis_t *r)
{
    while (r->ooff < r->olen && r->end.w_ready) {
        size_t len = r->olen - r->ooff;
        ssize_t n = lg_end_send(&r->end, r->out + r->ooff, len);
        if (n == LG_AGAIN)
            break;
        if (n < 0) {
            conn_lost(r, errno);
            return -1;
        }
        r->ooff += (size_t)n;
        if ((size_t)n < len)
            lg_end_short_write(&r->end);
    }
    if (r->ooff == r->olen)
        r->ooff = r->olen = 0;
    return 0;
}

static void flush_post(lg_post_t *p)
{
    lg_redis_t *r = (lg_redis_t *)((char *)p - offsetof(lg_redis_t, flush));
    if (r->rd && r->step == LG_RC_OPEN)
        flush_out(r);
}

static void on_reply(lg_redis_t *r, redisReply *rep);

/* Read and dispatch every reply there is.  Stops when the connection goes. */
static void read_replies(lg_redis_t *r)
{
    unsigned gen = r->gen;
    char buf[16384];
    for (;;) {
        ssize_t n = lg_end_recv(&r->end, buf, sizeof(buf));
        if (n == LG_AGAIN)
            return;
        if (n <= 0) {
            conn_lost(r, n == 0 ? 0 : errno);
            return;
        }
        lg_end_short_read(&r->end, (size_t)n, sizeof(buf));
        if (redisReaderFeed(r->rd, buf, (size_t)n) != REDIS_OK) {
            lg_cluster_warn("cluster: redis %s connection to %s dropped: out of memory", r->what, r->cf->redis);
            lg_cluster_count(LG_CM_ERRORS);
            conn_close(r);
            return;
        }
        for (;;) {
            void *rep = NULL;
            if (redisReaderGetReply(r->rd, &rep) != REDIS_OK) {
                lg_cluster_warn("cluster: redis %s connection to %s dropped: not the Redis protocol: %s",
                                r->what, r->cf->redis, r->rd->errstr);
                lg_cluster_count(LG_CM_BAD_DATA);
                conn_close(r);
                return;
            }
            if (rep == NULL)
                break;
            on_reply(r, rep);
            freeReplyObject(rep);
            if (gen != r->gen)
                return;         /* a callback ended the connection */
        }
        if (!r->end.r_ready)
            return;
    }
}

/* A TLS alert from Redis says why it ends the connection: keep it for the log. */
static void tls_info(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_ALERT) && (where & SSL_CB_READ) && (ret >> 8) == SSL3_AL_FATAL) {
        lg_redis_t *r = SSL_get_app_data(ssl);
        if (r)
            r->alert = 0x100 | (ret & 0xff);
    }
}

/* The connection's one driver: each step as far as it goes without blocking. */
static void conn_step(lg_redis_t *r)
{
    unsigned gen = r->gen;
    if (r->step == LG_RC_TCP) {
        if (!r->end.w_ready)
            return;             /* connect(2) still in progress */
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(r->end.io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis, strerror(err));
            lg_cluster_count(LG_CM_ERRORS);
            conn_close(r);
            return;
        }
        if (r->cf->redis_tls) {
            r->end.ssl = lg_tls_connect_redis(r->cf, r->end.io.fd);
            if (r->end.ssl == NULL) {
                lg_cluster_warn("cluster: redis at %s: cannot start TLS (out of memory)", r->cf->redis);
                lg_cluster_count(LG_CM_ERRORS);
                conn_close(r);
                return;
            }
            SSL_set_app_data(r->end.ssl, r);
            SSL_set_info_callback(r->end.ssl, tls_info);
            r->step = LG_RC_TLS;
        } else {
            r->step = LG_RC_OPEN;
        }
    }
    if (r->step == LG_RC_TLS) {
        char why[256] = "";
        int rc = lg_end_handshake(&r->end, why, sizeof(why));
        if (rc == LG_AGAIN)
            return;
        if (rc != LG_OK) {
            const char *verr = lg_tls_verify_error(r->end.ssl);
            char buf[256];
            if (verr)
                lg_cluster_warn("cluster: TLS to redis at %s failed: its certificate did not verify: %s",
                                r->cf->redis, verr);
            else
                lg_cluster_warn("cluster: TLS to redis at %s failed: %s", r->cf->redis,
                                r->alert ? end_error(r, 0, buf, sizeof(buf)) : why);
            lg_cluster_count(LG_CM_ERRORS);
            conn_close(r);
            return;
        }
        r->step = LG_RC_OPEN;
        /* the handshake may have read the first record: no edge will say so */
        r->end.r_ready = 1;
    }
    if (flush_out(r) < 0 || gen != r->gen)
        return;
    /* TLS: a record may wait inside OpenSSL, and a read may have waited
     * for writability; the read says LG_AGAIN at once when there is none */
    if (r->end.r_ready || r->end.ssl)
        read_replies(r);
    if (gen == r->gen)
        flush_out(r);           /* what the callbacks queued */
}

static void io_cb(lg_io_t *io, uint32_t events)
{
    lg_redis_t *r = io->data;
    if (r->rd == NULL)
        return;
    lg_end_on_event(&r->end, events);
    conn_step(r);
}

/* The one teardown (idempotent): see the top. */
static void conn_close(lg_redis_t *r)
{
    if (r->rd == NULL)
        return;
    r->gen++;
    lg_end_close(&r->end, r->loop);
    redisReaderFree(r->rd);
    r->rd = NULL;
    free(r->out);
    r->out = NULL;
    r->olen = r->ooff = r->ocap = 0;
    r->subscribing = 0;
    r->alert = 0;
    int was_ready = r->st == LG_RS_READY;
    r->st = LG_RS_IDLE;
    lg_timer_del(r->loop, &r->tick);
    while (r->head) {           /* their callbacks get NULL, as the contract says */
        lg_rcmd_t *c = r->head;
        unlink_cmd(c);
        lg_redis_cb cb = c->cb;
        c->cb = NULL;
        if (cb) {
            lg_cluster_count(LG_CM_TIMEOUTS);
            cb(c->arg, NULL);
        }
        free_cmd(c);
    }
    if (was_ready && r->on_state)
        r->on_state(r);
    schedule_retry(r);
}

/* A reply to the oldest waiting command (c, unlinked by the caller). */
static void answer(lg_redis_t *r, lg_rcmd_t *c, redisReply *rep)
{
    if (rep && rep->type == REDIS_REPLY_ERROR && c->eval_argv && c->cb &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* the script cache was flushed (a restarted Redis): send it whole */
        if (queue(r, c->eval_argc, (const char **)c->eval_argv, c->eval_lens) == 0) {
            free(c->eval_argv);
            c->eval_argv = NULL;
            c->sent = r->loop->now;     /* its deadline stays the caller's */
            link_cmd(r, c);
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
    if (r->rd == NULL)
        return;
    lg_cluster_warn("cluster: redis %s connection to %s dropped: %s", r->what, r->cf->redis, why);
    lg_cluster_count(LG_CM_ERRORS);
    conn_close(r);              /* callbacks get NULL; the retry is scheduled */
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
    /* (a subscriber connection takes no commands: its replies are pushes) */
    if (r->rd == NULL || r->st != LG_RS_READY || r->subscribing || r->nwaiting >= MAX_WAITING)
        return NULL;
    lg_rcmd_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->sent = r->loop->now;
    c->deadline = c->sent + (budget > 0 ? budget : r->cf->redis_timeout);
    if (queue(r, argc, argv, lens) < 0) {
        free(c);
        return NULL;
    }
    link_cmd(r, c);
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
        c->cb = NULL;           /* freed when its reply comes or the connection goes */
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

/* A subscriber connection's replies, once SUBSCRIBE is sent. */
static void sub_reply(lg_redis_t *r, redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[0]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (r->st == LG_RS_CONNECTING)
            became_ready(r);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && r->st == LG_RS_CONNECTING) {
        lg_cluster_warn("cluster: redis at %s refused SUBSCRIBE %s: %s", r->cf->redis, r->channel, rep->str);
        lg_cluster_count(LG_CM_ERRORS);
        conn_close(r);
        return;
    }
    if (r->on_message && r->st == LG_RS_READY)
        r->on_message(r->msg_arg, rep);
}

static void on_reply(lg_redis_t *r, redisReply *rep)
{
    if (r->subscribing) {
        sub_reply(r, rep);
        return;
    }
    lg_rcmd_t *c = r->head;
    if (c == NULL) {
        drop(r, "a reply to no command");
        return;
    }
    unlink_cmd(c);
    answer(r, c, rep);
}

/* The handshake's answer: AUTH's (or PING's) reply. */
static void hello_cb(void *arg, redisReply *rep)
{
    lg_redis_t *r = arg;
    if (rep == NULL)
        return;                 /* the connection went; conn_close retries */
    if (rep->type == REDIS_REPLY_ERROR) {
        lg_cluster_warn("cluster: redis at %s refused %s: %s", r->cf->redis,
                        r->cf->redis_password ? "AUTH" : "PING", rep->str);
        lg_cluster_count(LG_CM_ERRORS);
        conn_close(r);
        return;
    }
    if (r->channel) {
        const char *v[2] = { "SUBSCRIBE", r->channel };
        size_t l[2] = { 9, strlen(r->channel) };
        if (queue(r, 2, v, l) < 0) {
            drop(r, "cannot send SUBSCRIBE");
            return;
        }
        r->subscribing = 1;
        return;                 /* READY when the subscription is confirmed */
    }
    became_ready(r);
}

/*
 * The handshake is queued before the connection is up: AUTH [user]
 * password when configured, else PING.  Its callback is an ordinary
 * waiting command with the connect budget, sent around send_argv's
 * READY check.
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

/* A non-blocking socket towards Redis, connect(2) started.  fd, or -1 with why. */
static int open_socket(const lg_cluster_conf_t *cf, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (cf->unix_path) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        if (strlen(cf->unix_path) >= sizeof(un->sun_path)) {
            snprintf(why, whylen, "the socket path is too long");
            return -1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, cf->unix_path);
        sl = sizeof(*un);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, cf->host, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            in->sin_port = htons((uint16_t)cf->port);
            sl = sizeof(*in);
        } else if (inet_pton(AF_INET6, cf->host, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)cf->port);
            sl = sizeof(*in6);
        } else {
            snprintf(why, whylen, "not an IP address");     /* the loader checked */
            return -1;
        }
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket(): %s", strerror(errno));
        return -1;
    }
    if (!cf->unix_path) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    int rc;
    do
        rc = connect(fd, (struct sockaddr *)&ss, sl);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        snprintf(why, whylen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void retry_cb(lg_timer_t *t)
{
    lg_redis_t *r = t->data;
    if (r->st == LG_RS_CONNECTING) {        /* connect, TLS or AUTH took too long */
        lg_cluster_warn("cluster: redis at %s: no connection within %lld ms (%s not done)", r->cf->redis,
                        (long long)r->cf->redis_connect_timeout,
                        r->rd ? lg_redis_step_name(r->step) : "connect");
        lg_cluster_count(LG_CM_ERRORS);
        if (r->rd)
            conn_close(r);
        else
            schedule_retry(r);
        return;
    }
    if (r->st != LG_RS_IDLE || r->rd)
        return;
    char why[128];
    int fd = open_socket(r->cf, why, sizeof(why));
    if (fd < 0) {
        lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis, why);
        lg_cluster_count(LG_CM_ERRORS);
        schedule_retry(r);
        return;
    }
    memset(&r->end, 0, sizeof(r->end));
    r->end.io.fd = fd;
    r->end.io.cb = io_cb;
    r->end.io.data = r;
    r->rd = redisReaderCreate();
    if (r->rd == NULL || lg_io_add(r->loop, &r->end.io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
        lg_cluster_warn("cluster: cannot connect to redis at %s: %s", r->cf->redis,
                        r->rd ? strerror(errno) : "out of memory");
        lg_cluster_count(LG_CM_ERRORS);
        if (r->rd) {
            conn_close(r);      /* closes fd, schedules the retry */
        } else {
            close(fd);
            r->end.io.fd = -1;
            schedule_retry(r);
        }
        return;
    }
    r->step = LG_RC_TCP;        /* the first EPOLLOUT says connect(2) is done */
    r->st = LG_RS_CONNECTING;
    lg_timer_set(r->loop, &r->retry, r->cf->redis_connect_timeout);
    if (hello(r) < 0)
        drop(r, "cannot queue AUTH/PING");
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
    r->end.io.fd = -1;
    r->rd = NULL;
    r->retry.cb = retry_cb;
    r->retry.data = r;
    r->tick.cb = tick_cb;
    r->tick.data = r;
    r->flush.fn = flush_post;
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
    conn_close(r);
    lg_timer_del(loop, &r->retry);          /* conn_close scheduled one */
    r->loop = NULL;
}

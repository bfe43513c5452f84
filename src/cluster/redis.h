/*
 * One connection to Redis, driven by hiredis's asynchronous API from the
 * worker's own event loop (redis.c).  Nothing here ever blocks: connect is
 * non-blocking (Redis is named by an IP, never resolved), every command
 * has a deadline, and a connection that does not answer is dropped and
 * made again with a growing backoff.
 *
 * A command's callback runs exactly once: with the reply, or with NULL
 * when there is none within its budget (Redis down, slow, restarting, or
 * the connection lost).  A caller that goes away first cancels it.
 */
#ifndef LEGATE_CLUSTER_REDIS_H
#define LEGATE_CLUSTER_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "conf/conf.h"
#include "core/event.h"

typedef enum lg_redis_state {
    LG_RS_IDLE = 0,             /* no connection; the retry timer makes one */
    LG_RS_CONNECTING = 1,       /* TCP connect, then AUTH (or PING) answered */
    LG_RS_READY = 2,            /* commands go out */
} lg_redis_state_t;

const char *lg_redis_state_name(lg_redis_state_t s);

/* reply NULL: no answer within the budget, or no connection */
typedef void (*lg_redis_cb)(void *arg, redisReply *reply);

typedef struct lg_rcmd lg_rcmd_t;       /* a command waiting for its reply */

typedef struct lg_redis {
    const char              *what;      /* for logs: "commands", "subscriber" */
    const lg_cluster_conf_t *cf;        /* borrowed: the configuration's */
    lg_loop_t               *loop;      /* borrowed: the worker's */
    redisAsyncContext       *ac;        /* owned by hiredis; NULL when not connected */
    lg_redis_state_t         st;
    lg_io_t                  io;
    int                      want_r, want_w, registered;
    uint32_t                 events;    /* what epoll has for io */
    lg_timer_t               retry;     /* IDLE: reconnect; CONNECTING: give up */
    lg_timer_t               tick;      /* expires waiting commands */
    lg_msec_t                backoff;   /* next wait before reconnecting */
    lg_rcmd_t               *head, *tail; /* waiting, in the order sent */
    size_t                   nwaiting;
    /* subscriber connections: called for every pushed message (reply NULL
     * when the connection is lost); set before lg_redis_start() */
    const char              *channel;
    lg_redis_cb              on_message;
    void                    *msg_arg;
    void                   (*on_state)(struct lg_redis *r);  /* READY reached or lost */
} lg_redis_t;

/* Start connecting (and reconnecting for ever). */
void lg_redis_start(lg_redis_t *r, const lg_cluster_conf_t *cf, lg_loop_t *loop, const char *what);
/* Drop the connection; waiting callbacks get NULL. */
void lg_redis_stop(lg_redis_t *r);
static inline int lg_redis_ready(const lg_redis_t *r) { return r->st == LG_RS_READY; }

/*
 * Send argv; cb(arg, reply) within budget ms (0: the configured
 * redis_timeout).  NULL when it cannot go out now (not connected, too many
 * waiting): the caller degrades at once and cb is never called.
 */
lg_rcmd_t *lg_redis_command(lg_redis_t *r, int argc, const char **argv, const size_t *lens,
                            lg_msec_t budget, lg_redis_cb cb, void *arg);
/* EVALSHA sha, falling back to EVAL script on NOSCRIPT; argv after the script. */
lg_rcmd_t *lg_redis_eval(lg_redis_t *r, const char *script, const char *sha, int nkeys,
                         int argc, const char **argv, const size_t *lens,
                         lg_msec_t budget, lg_redis_cb cb, void *arg);
/* The caller goes away: cb is not called. */
void lg_redis_cancel(lg_rcmd_t *c);

/* SHA-1 of a script, as EVALSHA wants it (41 bytes with the NUL). */
void lg_redis_sha1(const char *script, char out[41]);

#endif

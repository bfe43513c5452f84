/*
 * One connection to Redis on the worker's own event loop (redis.c): a
 * socket legate owns -- TCP, a unix socket, or TCP with TLS (rediss://) --
 * with hiredis for the protocol only (framing commands, parsing replies).
 * Nothing here ever blocks: connect is non-blocking (Redis is named by an
 * IP, never resolved), every command has a deadline, and a connection
 * that does not answer is dropped and made again with a growing backoff.
 *
 * A command's callback runs exactly once: with the reply, or with NULL
 * when there is none within its budget (Redis down, slow, restarting, or
 * the connection lost).  A caller that goes away first cancels it.
 */
#ifndef LEGATE_CLUSTER_REDIS_H
#define LEGATE_CLUSTER_REDIS_H

#include <hiredis/hiredis.h>

#include "conf/conf.h"
#include "core/event.h"
#include "net/io.h"

typedef enum lg_redis_state {
    LG_RS_IDLE = 0,             /* no connection; the retry timer makes one */
    LG_RS_CONNECTING = 1,       /* the steps below, then AUTH (or PING) answered */
    LG_RS_READY = 2,            /* commands go out */
} lg_redis_state_t;

/* Where a connection is (CONNECTING goes through them in order; READY is OPEN). */
typedef enum lg_redis_step {
    LG_RC_TCP = 0,              /* connect(2) in progress */
    LG_RC_TLS = 1,              /* TLS handshake (rediss:// only) */
    LG_RC_OPEN = 2,             /* bytes flow: commands written, replies read */
} lg_redis_step_t;

const char *lg_redis_state_name(lg_redis_state_t s);
const char *lg_redis_step_name(lg_redis_step_t s);

/* reply NULL: no answer within the budget, or no connection */
typedef void (*lg_redis_cb)(void *arg, redisReply *reply);

typedef struct lg_rcmd lg_rcmd_t;       /* a command waiting for its reply */

typedef struct lg_redis {
    const char              *what;      /* for logs: "commands", "subscriber" */
    const lg_cluster_conf_t *cf;        /* borrowed: the configuration's */
    lg_loop_t               *loop;      /* borrowed: the worker's */
    lg_redis_state_t         st;
    lg_redis_step_t          step;      /* of the connection, while there is one */
    lg_end_t                 end;       /* end.io.fd -1 when not connected; end.ssl owned */
    redisReader             *rd;        /* owned: replies being parsed; NULL iff not connected */
    char                    *out;       /* owned: commands not yet written, out[ooff..olen) */
    size_t                   olen, ooff, ocap;
    unsigned                 gen;       /* +1 per teardown: a callback may end the connection */
    int                      subscribing; /* SUBSCRIBE sent: every reply is a push */
    int                      alert;     /* a fatal TLS alert from Redis, 0x100 | description */
    lg_post_t                flush;     /* writes commands queued during this batch */
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

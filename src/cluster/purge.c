/*
 * PURGE for the fleet: a purge accepted by any node is applied there at
 * once (as without a cluster), then published on the channel
 * "<name>:purge"; worker 0 of every node is subscribed and applies it to
 * its node's cache when it arrives.  The message is one line of text:
 *
 *   v1 TAB node TAB soft(0|1) TAB key          (key: as the cache makes it;
 *                                               a trailing '*' a prefix)
 *
 * The answer waits for PUBLISH's reply (at most redis_timeout) and says
 * in X-Purge-Nodes how many nodes applied the purge: this one, plus every
 * other node whose subscriber Redis handed the message to.  PUBLISH
 * counts subscribers, and there is one per node (worker 0's), including
 * this node's own (which skips messages from its own node, since the
 * purge is applied already): so the count is PUBLISH's, plus one when
 * this node's subscription is down at that moment.  "Applied" therefore
 * means "delivered to a live subscriber, which applies it in its next
 * loop iteration" -- bounded by one loop turn after delivery.  A node
 * whose subscription was down during the purge misses it (Redis pub/sub
 * keeps nothing for absent subscribers); the count tells the caller to
 * send it again.  With Redis unreachable the answer comes at once with
 * X-Purge-Nodes: 1 and X-Purge-Cluster: local-only.
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/http.h"
#include "cluster/wire.h"
#include "core/log.h"
#include "pipeline/request.h"

#define MAX_KEY LG_PURGE_MAX_KEY

typedef struct fanout {
    lg_req_t      *s;           /* borrowed: the PURGE waiting */
    lg_rcmd_t     *c;           /* the PUBLISH, until answered */
    int            status;
    const char    *body;        /* arena */
    struct fanout *prev, *next; /* in `waiting` until answered */
} fanout_t;

static char channel[128];
static fanout_t *waiting;       /* purges waiting for PUBLISH (few; looked up by request) */

static void unwait(fanout_t *fo)
{
    if (fo->prev) fo->prev->next = fo->next; else if (waiting == fo) waiting = fo->next;
    if (fo->next) fo->next->prev = fo->prev;
    fo->prev = fo->next = NULL;
}

/* run: from outside the connection's own events (Redis's), drive it on */
static void answer(fanout_t *fo, long long nodes, int local_only, int run)
{
    lg_req_t *s = fo->s;
    unwait(fo);
    lg_redis_cancel(fo->c);
    fo->c = NULL;
    s->local_extra = lg_arena_printf(&s->arena, "%sX-Purge-Nodes: %lld\r\n%s",
                                     s->local_extra ? s->local_extra : "", nodes,
                                     local_only ? "X-Purge-Cluster: local-only\r\n" : "");
    lg_respond(s, fo->status, fo->body, NULL);
    if (run)
        lg_req_run(s);          /* s may be gone after this */
}

static void published(void *arg, redisReply *rep)
{
    fanout_t *fo = arg;
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER) {
        lg_cluster_count(LG_CM_DEGRADED);
        if (rep)
            lg_cluster_warn("cluster: PUBLISH of a purge answered %s",
                            rep->type == REDIS_REPLY_ERROR ? rep->str : "something not a number");
        answer(fo, 1, 1, 1);
        return;
    }
    lg_cluster_count(LG_CM_PURGES_SENT);
    long long n = rep->integer + (lg_cluster_sub_up() ? 0 : 1);
    answer(fo, n < 1 ? 1 : n, 0, 1);
}

static void fanout_cleanup(void *arg)
{
    fanout_t *fo = arg;
    lg_redis_cancel(fo->c);     /* the client went before Redis answered */
    fo->c = NULL;
    unwait(fo);
}

static void wait_step(lg_req_t *s)
{
    (void)s;                    /* the PUBLISH's answer drives it */
}

/* redis.c answers within redis_timeout; this is only a backstop behind it */
static lg_msec_t wait_arm(lg_req_t *s, lg_tkind_t *kind)
{
    (void)s;
    *kind = LG_T_WAIT;
    return lg_cl.cf->redis_timeout * 2 + 100;
}

static void wait_timeout(lg_req_t *s, lg_tkind_t kind)
{
    (void)kind;
    for (fanout_t *fo = waiting; fo; fo = fo->next)
        if (fo->s == s) {
            lg_cluster_count(LG_CM_DEGRADED);
            answer(fo, 1, 1, 0);    /* the connection runs after its timeout */
            return;
        }
}

static const lg_stage_t wait_stage = {
    .name = "telling the other nodes", .step = wait_step, .arm = wait_arm, .timeout = wait_timeout,
};

static int fanout(lg_req_t *s, const char *key, size_t n, int soft, int status, const char *body)
{
    fanout_t *fo = lg_arena_calloc(&s->arena, sizeof(*fo));
    char *msg = n <= MAX_KEY ? lg_arena_printf(&s->arena, "v1\t%s\t%d\t%.*s", lg_cl.node, soft,
                                               (int)n, key) : NULL;
    if (fo == NULL || msg == NULL)
        return 0;
    fo->s = s;
    fo->status = status;
    fo->body = body;
    const char *v[3] = { "PUBLISH", channel, msg };
    size_t l[3] = { 7, strlen(channel), strlen(msg) };
    fo->c = lg_redis_command(&lg_cl.cmd, 3, v, l, 0, published, fo);
    lg_debug("cluster: purge of %.*s published: %s (connection %s)", (int)n, key, fo->c ? "yes" : "no",
             lg_redis_state_name(lg_cl.cmd.st));
    if (fo->c == NULL) {
        lg_cluster_count(LG_CM_DEGRADED);
        lg_cluster_warn("cluster: a purge was applied on this node only: no connection to redis at %s",
                        lg_cl.cf->redis);
        answer(fo, 1, 1, 0);    /* in the CACHE phase: the phases' caller runs it */
        return 1;
    }
    lg_req_cleanup(s, fanout_cleanup, fo);
    fo->next = waiting;
    if (waiting)
        waiting->prev = fo;
    waiting = fo;
    lg_req_set_stage(s, &wait_stage);
    return 1;
}

/* A message from the channel: another node's purge, or something to ignore. */
static void on_message(void *arg, redisReply *rep)
{
    (void)arg;
    if (rep == NULL)
        return;                 /* the subscription is lost; redis.c reconnects */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") != 0 ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return;                 /* (un)subscribe confirmations */
    const char *p = rep->element[2]->str;
    size_t len = rep->element[2]->len;
    lg_purge_msg_t m;
    if (lg_purge_msg_parse(p, len, &m) < 0) {
        lg_cluster_count(LG_CM_BAD_DATA);
        char shown[41];
        size_t k = 0;
        for (; k < len && k < sizeof(shown) - 1; k++)
            shown[k] = p[k] >= ' ' && p[k] < 127 ? p[k] : '?';
        shown[k] = '\0';
        lg_warn("cluster: ignored a message on %s that is not a purge of this version (%zu bytes: "
                "\"%s\")", channel, len, shown);
        return;
    }
    if (m.node_len == strlen(lg_cl.node) && memcmp(m.node, lg_cl.node, m.node_len) == 0)
        return;                 /* ours: applied when it was accepted */
    int n = lg_cache_purge_key(m.key, m.key_len, m.soft);
    lg_cluster_count(LG_CM_PURGES_APPLIED);
    lg_info("cluster: applied a %spurge from %.*s: %.*s (%d objects)", m.soft ? "soft " : "",
            (int)m.node_len, m.node, (int)(m.key_len > 200 ? 200 : m.key_len), m.key, n);
}

static void sub_state(lg_redis_t *r)
{
    lg_cluster_set_up(1, lg_redis_ready(r));
}

int lg_cluster_purge_init(void)
{
    snprintf(channel, sizeof(channel), "%s:purge", lg_cl.cf->name);
    lg_cache_purge_fanout = fanout;
    if (lg_cl.slot == 0) {
        lg_cl.sub.channel = channel;
        lg_cl.sub.on_message = on_message;
        lg_cl.sub.on_state = sub_state;
        lg_redis_start(&lg_cl.sub, lg_cl.cf, lg_cl.loop, "subscriber");
    }
    return 0;
}

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
 * whose subscription was down during the purge would miss it (Redis
 * pub/sub keeps nothing for absent subscribers), so every purge also goes
 * into a log, the stream "<name>:purge-log" (the last purge_log entries,
 * trimmed by XADD MAXLEN ~), in the same script as the PUBLISH, and the
 * message carries the entry's id:
 *
 *   v2 TAB id TAB v1 TAB node TAB soft TAB key
 *
 * Worker 0 remembers the id of the newest purge it has seen; whenever its
 * subscription (re)starts it reads the log after that id (XRANGE, in
 * batches) and applies what it missed, and a message whose id it has
 * seen already is skipped, so a purge is applied once.  A node that was
 * away longer than the log reaches back misses the older ones.
 * With Redis unreachable the answer comes at once with X-Purge-Nodes: 1
 * and X-Purge-Cluster: local-only.
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
static char logkey[128];        /* the purge log, a stream */
static fanout_t *waiting;       /* purges waiting for PUBLISH (few; looked up by request) */

/* XADD to the log (redis.pcall: a key of another type must not stop the
 * PUBLISH), then PUBLISH with the entry's id: { subscribers, id } */
static const char SCRIPT[] =
    "local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])\n"
    "if type(id) ~= 'string' then id = '0-0' end\n"
    "return { redis.call('PUBLISH', KEYS[2], 'v2\\t' .. id .. '\\t' .. ARGV[1]), id }\n";
static char sha[41];

/*
 * Worker 0's view of the log: the cursor (the newest entry read from the
 * log or heard of, "" before the first look), whether it is catching up
 * (a read of the log under way: live messages are applied but do not move
 * the cursor, or the backlog behind them would be skipped), and the ids
 * applied lately, so that a purge heard live and read from the log again
 * is applied once.
 */
typedef struct sid { uint64_t ms, seq; } sid_t;
static char last_id[LG_STREAM_ID_MAX + 1];
static sid_t cursor, live_max;
static int catching_up, again;
static sid_t recent[128];
static unsigned nrecent;
static lg_timer_t replay_timer;
static lg_rcmd_t *replaying;
static enum { RP_NEWEST, RP_RANGE } replay_step;

#define REPLAY_BATCH 500

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
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2)
        rep = rep->element[0];          /* { subscribers, the log entry's id } */
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
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%d", lg_cl.cf->purge_log);
    const char *v[4] = { logkey, channel, msg, maxlen };
    size_t l[4] = { strlen(logkey), strlen(channel), strlen(msg), strlen(maxlen) };
    fo->c = lg_redis_eval(&lg_cl.cmd, SCRIPT, sha, 2, 4, v, l, 0, published, fo);
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

static void bad_data(const char *where, const char *p, size_t len)
{
    lg_cluster_count(LG_CM_BAD_DATA);
    char shown[41];
    size_t k = 0;
    for (; k < len && k < sizeof(shown) - 1; k++)
        shown[k] = p[k] >= ' ' && p[k] < 127 ? p[k] : '?';
    shown[k] = '\0';
    lg_warn("cluster: ignored %s that is not a purge of this version (%zu bytes: \"%s\")", where, len,
            shown);
}

static int sid_lt(sid_t a, sid_t b) { return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq); }

static void set_cursor(sid_t id)
{
    cursor = id;
    snprintf(last_id, sizeof(last_id), "%llu-%llu", (unsigned long long)id.ms,
             (unsigned long long)id.seq);
}

/* Applied lately?  If not, it is now. */
static int seen(sid_t id)
{
    unsigned n = nrecent < 128 ? nrecent : 128;
    for (unsigned i = 0; i < n; i++)
        if (recent[i].ms == id.ms && recent[i].seq == id.seq)
            return 1;
    recent[nrecent++ % 128] = id;
    return 0;
}

static void apply(const lg_purge_msg_t *m, const char *how)
{
    if (m->node_len == strlen(lg_cl.node) && memcmp(m->node, lg_cl.node, m->node_len) == 0)
        return;                 /* ours: applied when it was accepted */
    int n = lg_cache_purge_key(m->key, m->key_len, m->soft);
    lg_cluster_count(LG_CM_PURGES_APPLIED);
    lg_info("cluster: applied a %spurge from %.*s%s: %.*s (%d objects)", m->soft ? "soft " : "",
            (int)m->node_len, m->node, how, (int)(m->key_len > 200 ? 200 : m->key_len), m->key, n);
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
        char where[160];
        snprintf(where, sizeof(where), "a message on %s", channel);
        bad_data(where, p, len);
        return;
    }
    sid_t id;
    if (m.id == NULL || lg_stream_id_parse(m.id, m.id_len, &id.ms, &id.seq) < 0 ||
        (id.ms == 0 && id.seq == 0)) {
        apply(&m, "");          /* not in the log: nothing to compare */
        return;
    }
    if (seen(id))
        return;                 /* read from the log already */
    apply(&m, "");
    if (catching_up) {
        if (sid_lt(live_max, id))
            live_max = id;      /* the cursor moves once the backlog is read */
    } else if (!last_id[0] || sid_lt(cursor, id)) {
        set_cursor(id);
    }
}

static void replay_later(lg_msec_t ms)
{
    if (!lg_timer_armed(&replay_timer))
        lg_timer_set(lg_cl.loop, &replay_timer, ms);
}

/*
 * Catching up, each time the subscription starts: the newest entry first
 * (a log newer than nothing: the first look only notes it, a node that
 * starts has nothing to catch up on; a log older than the cursor was reset
 * -- Redis restarted empty, or its clock went back -- and the cursor
 * follows it), then XRANGE "(cursor" + COUNT n in batches, applying what
 * was not applied live.  A batch that is not full ends the catching up.
 */
static void replay_done(void)
{
    catching_up = 0;
    if (sid_lt(cursor, live_max))
        set_cursor(live_max);
    if (again) {                /* the subscription restarted meanwhile */
        again = 0;
        catching_up = 1;
        replay_step = RP_NEWEST;
        replay_later(0);
    }
}

static int entry(redisReply *e, sid_t *id, redisReply **msg)
{
    /* [ id, [ "m", message ] ] */
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements != 2 ||
        e->element[1]->element[1]->type != REDIS_REPLY_STRING ||
        lg_stream_id_parse(e->element[0]->str, e->element[0]->len, &id->ms, &id->seq) < 0)
        return -1;
    *msg = e->element[1]->element[1];
    return 0;
}

static void replayed(void *arg, redisReply *rep)
{
    (void)arg;
    replaying = NULL;
    if (rep == NULL) {
        replay_later(1000);     /* no answer in time: again */
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY) {
        if (rep->type == REDIS_REPLY_ERROR) {
            lg_cluster_warn("cluster: the purge log %s cannot be read: %s", logkey, rep->str);
            lg_cluster_count(LG_CM_BAD_DATA);
        }
        if (!last_id[0])
            set_cursor((sid_t){ 0, 0 });
        replay_done();
        return;
    }
    if (replay_step == RP_NEWEST) {
        sid_t newest = { 0, 0 };
        redisReply *msg;
        if (rep->elements == 1 && entry(rep->element[0], &newest, &msg) < 0)
            bad_data("an entry of the purge log", "", 0);
        if (!last_id[0]) {
            set_cursor(newest);         /* the first look: from here on */
            replay_done();
            return;
        }
        if (sid_lt(newest, cursor)) {
            lg_warn("cluster: the purge log %s is older than the last purge this node saw "
                    "(%s): Redis lost it or its clock went back; following it from here",
                    logkey, last_id);
            set_cursor(newest);
            replay_done();
            return;
        }
        replay_step = RP_RANGE;
        replay_later(0);
        return;
    }
    size_t applied = 0;
    for (size_t i = 0; i < rep->elements; i++) {
        sid_t id;
        redisReply *msg;
        lg_purge_msg_t m;
        if (entry(rep->element[i], &id, &msg) < 0) {
            bad_data("an entry of the purge log", "", 0);
            continue;
        }
        if (sid_lt(cursor, id))
            set_cursor(id);
        if (lg_purge_msg_parse(msg->str, msg->len, &m) < 0 || m.id != NULL) {
            bad_data("an entry of the purge log", msg->str, msg->len);
            continue;
        }
        if (seen(id))
            continue;           /* heard live meanwhile */
        apply(&m, " (from the log: missed while away)");
        applied++;
    }
    if (applied)
        lg_notice("cluster: %zu purges missed while the subscription was down applied from %s",
                  applied, logkey);
    if (rep->elements == REPLAY_BATCH)
        replay_later(0);        /* more */
    else
        replay_done();
}

static void replay_tick(lg_timer_t *t)
{
    (void)t;
    if (replaying || !lg_redis_ready(&lg_cl.sub))
        return;                 /* sub_state starts it again when it is back */
    const char *v[6];
    size_t l[6];
    char from[LG_STREAM_ID_MAX + 2], count[16];
    snprintf(count, sizeof(count), "%d", REPLAY_BATCH);
    if (replay_step == RP_NEWEST) {
        v[0] = "XREVRANGE"; v[1] = logkey; v[2] = "+"; v[3] = "-"; v[4] = "COUNT"; v[5] = "1";
    } else {
        snprintf(from, sizeof(from), "(%s", last_id);
        v[0] = "XRANGE"; v[1] = logkey; v[2] = from; v[3] = "+"; v[4] = "COUNT"; v[5] = count;
    }
    for (int i = 0; i < 6; i++)
        l[i] = strlen(v[i]);
    replaying = lg_redis_command(&lg_cl.cmd, 6, v, l, 1000, replayed, NULL);
    if (replaying == NULL)
        replay_later(200);      /* the command connection is not up yet */
}

static void sub_state(lg_redis_t *r)
{
    lg_cluster_set_up(1, lg_redis_ready(r));
    if (!lg_redis_ready(r))
        return;
    /* catch up on what went by while it was down */
    if (catching_up && replaying) {
        again = 1;              /* once the read under way is over */
        return;
    }
    if (!catching_up)
        live_max = cursor;
    catching_up = 1;
    replay_step = RP_NEWEST;
    replay_later(0);
}

int lg_cluster_purge_init(void)
{
    snprintf(channel, sizeof(channel), "%s:purge", lg_cl.cf->name);
    snprintf(logkey, sizeof(logkey), "%s:purge-log", lg_cl.cf->name);
    lg_redis_sha1(SCRIPT, sha);
    lg_cache_purge_fanout = fanout;
    if (lg_cl.slot == 0) {
        replay_timer.cb = replay_tick;
        lg_cl.sub.channel = channel;
        lg_cl.sub.on_message = on_message;
        lg_cl.sub.on_state = sub_state;
        lg_redis_start(&lg_cl.sub, lg_cl.cf, lg_cl.loop, "subscriber");
    }
    return 0;
}

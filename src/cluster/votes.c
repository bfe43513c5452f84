/*
 * Upstream health for the fleet: after every probe, worker 0 of each node
 * sends its verdict on the server as a vote, and the script below counts
 * the fresh votes of all nodes in one Redis hash
 * ("<name>:hc:<upstream>:<server>", a field per node: "0|1 SP ms").  A
 * server is out on a node when that node's own checks say so, or when at
 * least health_votes nodes' checks say so: a server ejected by enough
 * nodes is ejected everywhere, and one node's bad link ejects it for that
 * node only.  A vote older than three check intervals (by Redis's clock)
 * is not counted, so a node that stops or leaves stops voting.  Redis
 * unreachable or answering nonsense: each node goes by its own checks.
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy.h"

static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local window = tonumber(ARGV[3])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)\n"
    "redis.call('PEXPIRE', KEYS[1], window * 2)\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local down, fresh, bad = 0, 0, 0\n"
    "for i = 1, #all, 2 do\n"
    "  local s, ts = string.match(all[i + 1], '^([01]) (%d+)$')\n"
    "  if s == nil then bad = bad + 1\n"
    "  elseif now - tonumber(ts) <= window then\n"
    "    fresh = fresh + 1\n"
    "    if s == '1' then down = down + 1 end\n"
    "  end\n"
    "end\n"
    "return { down, fresh, bad }\n";

typedef struct vote {
    lg_upstream_t *up;
    size_t         si;
    int            local_down;
    lg_rcmd_t     *c;
    char           key[256];
} vote_t;

static vote_t *votes;           /* one per checked server, worker 0 */
static size_t nvotes;
static char sha[41];

static void counted(void *arg, redisReply *rep)
{
    vote_t *v = arg;
    v->c = NULL;
    char why[160];
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_INTEGER ||
        rep->element[2]->type != REDIS_REPLY_INTEGER) {
        lg_cluster_count(LG_CM_DEGRADED);
        if (rep) {
            lg_cluster_count(LG_CM_BAD_DATA);
            lg_cluster_warn("cluster: redis answered the health vote for %s with %s", v->key,
                            rep->type == REDIS_REPLY_ERROR ? rep->str : "something unexpected");
        }
        snprintf(why, sizeof(why), "this node's health checks (no word from the fleet)");
        lg_health_apply(v->up, v->si, v->local_down, why);
        return;
    }
    long long down = rep->element[0]->integer, fresh = rep->element[1]->integer;
    if (rep->element[2]->integer) {
        lg_cluster_count(LG_CM_BAD_DATA);
        lg_cluster_warn("cluster: %s holds %lld votes this legate cannot read: not counted", v->key,
                        rep->element[2]->integer);
    }
    int out = v->local_down || down >= lg_cl.cf->health_votes;
    snprintf(why, sizeof(why), "health checks of %lld of %lld nodes say down (%d needed)%s", down,
             fresh, lg_cl.cf->health_votes, v->local_down ? ", this one's among them" : "");
    lg_health_apply(v->up, v->si, out, why);
}

static void vote(lg_upstream_t *up, size_t si, int local_down)
{
    vote_t *v = NULL;
    for (size_t i = 0; i < nvotes && v == NULL; i++)
        if (votes[i].up == up && votes[i].si == si)
            v = &votes[i];
    if (v == NULL) {
        lg_health_apply(up, si, local_down, "this node's health checks");
        return;
    }
    v->local_down = local_down;
    if (v->c)
        return;                 /* the last vote is still out: this one adds nothing */
    char st[2] = { local_down ? '1' : '0', '\0' };
    char win[24];
    snprintf(win, sizeof(win), "%lld", (long long)(up->health->interval * 3 + 1000));
    const char *argv[4] = { v->key, lg_cl.node, st, win };
    size_t lens[4] = { strlen(v->key), strlen(lg_cl.node), 1, strlen(win) };
    v->c = lg_redis_eval(&lg_cl.cmd, SCRIPT, sha, 1, 4, argv, lens, 0, counted, v);
    if (v->c == NULL) {
        lg_cluster_count(LG_CM_DEGRADED);
        lg_health_apply(up, si, local_down, "this node's health checks (no connection to the fleet)");
    }
}

int lg_cluster_votes_init(void)
{
    const lg_conf_t *c = lg_cl.conf;
    size_t n = 0;
    for (size_t u = 0; u < c->nupstreams; u++)
        if (c->upstreams[u].health)
            n += c->upstreams[u].nservers;
    if (n == 0)
        return 0;
    votes = calloc(n, sizeof(*votes));
    if (votes == NULL)
        return -1;
    for (size_t u = 0; u < c->nupstreams; u++) {
        lg_upstream_t *up = &c->upstreams[u];
        if (up->health == NULL)
            continue;
        for (size_t i = 0; i < up->nservers; i++) {
            vote_t *v = &votes[nvotes++];
            v->up = up;
            v->si = i;
            snprintf(v->key, sizeof(v->key), "%s:hc:%s:%s", lg_cl.cf->name, up->name,
                     up->servers[i].addr.text);
        }
    }
    lg_redis_sha1(SCRIPT, sha);
    lg_health_cluster_vote = vote;
    return 0;
}

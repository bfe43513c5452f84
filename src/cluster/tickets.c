/*
 * TLS session ticket keys for the fleet, so that a ticket one node issued
 * opens on every other.  The key set lives in one Redis string,
 * "<name>:tls-tickets":
 *
 *   v1 SP created_ms SP next SP current [SP previous]     (keys: 160 hex digits,
 *                                                          name|AES|HMAC)
 *
 * Worker 0 of every node runs SCRIPT below every sync interval (a quarter
 * of tls_ticket_rotate, 500 ms to 10 s), offering two fresh random keys.
 * The script, atomic in Redis, makes the set if there is none and rotates
 * it when `current` is older than tls_ticket_rotate by Redis's own clock
 * (TIME: the nodes' clocks do not matter): previous <- current <- next <-
 * a new key.  Whichever node comes first rotates; the others read the
 * result.  Every node knows `next` a whole period before it starts making
 * tickets, so a node that has not yet seen a rotation still opens tickets
 * made with the new key.
 *
 * A value the script cannot read (garbled, an old format) is replaced and
 * said so; a key of another type makes Redis answer WRONGTYPE, which is
 * logged and leaves this node's keys as they are.  Redis unreachable: the
 * node keeps the keys it has (and after three rotation periods without the
 * fleet the master starts rotating locally, see net/tls.c).
 */
#include "cluster/cluster_int.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"
#include "core/log.h"
#include "net/tls.h"

#define KEYHEX LG_TICKET_KEYHEX

static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "local keys, created, replaced = {}, 0, 0\n"
    "if v then\n"
    "  local f = {}\n"
    "  for w in string.gmatch(v, '%S+') do f[#f + 1] = w end\n"
    "  local good = f[1] == 'v1' and tonumber(f[2]) ~= nil and #f >= 4 and #f <= 5\n"
    "  for i = 3, #f do\n"
    "    if not good then break end\n"
    "    if string.len(f[i]) ~= 160 or string.find(f[i], '^%x+$') == nil then good = false end\n"
    "    keys[#keys + 1] = f[i]\n"
    "  end\n"
    "  if good then created = tonumber(f[2]) else keys = {}; replaced = 1 end\n"
    "end\n"
    "local changed = false\n"
    "if #keys == 0 then\n"
    "  keys = { ARGV[3], ARGV[2] }\n"
    "  created, changed = now, true\n"
    "elseif now - created >= tonumber(ARGV[1]) then\n"
    "  keys = { ARGV[2], keys[1], keys[2] }\n"
    "  created, changed = now, true\n"
    "end\n"
    "if changed then\n"
    "  v = 'v1 ' .. created .. ' ' .. table.concat(keys, ' ')\n"
    "  redis.call('SET', KEYS[1], v)\n"
    "end\n"
    "return { v, replaced }\n";

static char sha[41];
static char key[160];
static lg_timer_t timer;
static lg_rcmd_t *pending;
static lg_msec_t every;

/* "v1 created next current [previous]" into this node's keys. */
static void install(const char *v, size_t len)
{
    unsigned char keys[3 * 80];
    int64_t created = 0;
    int n = lg_ticket_set_parse(v, len, keys, &created);
    if (n < 0) {
        lg_cluster_count(LG_CM_BAD_DATA);
        lg_warn("cluster: ignored TLS ticket keys from redis in a form this legate cannot read "
                "(%zu bytes); this node keeps its keys", len);
        return;
    }
    /* stored newest first: next, current, previous -- current makes tickets */
    int rc = lg_tls_tickets_install(keys, n, 1, created);
    OPENSSL_cleanse(keys, sizeof(keys));
    lg_cluster_count(LG_CM_TICKET_SYNCS);
    if (rc == 1) {
        lg_cluster_count(LG_CM_TICKET_CHANGES);
        lg_info("cluster: TLS session ticket keys from redis installed (%d keys)", n);
    }
}

static void synced(void *arg, redisReply *rep)
{
    (void)arg;
    pending = NULL;
    if (rep == NULL) {
        lg_cluster_count(LG_CM_DEGRADED);
        return;                 /* keep the keys we have; the warning was given */
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        lg_cluster_count(LG_CM_BAD_DATA);
        lg_cluster_warn("cluster: redis refused the TLS ticket key script on %s: %s; this node "
                        "keeps its keys", key, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_INTEGER) {
        lg_cluster_count(LG_CM_BAD_DATA);
        lg_warn("cluster: the TLS ticket key script answered something unexpected; keys kept");
        return;
    }
    if (rep->element[1]->integer)
        lg_warn("cluster: %s in redis held something unreadable: replaced with new keys", key);
    install(rep->element[0]->str, rep->element[0]->len);
}

static void fresh_key(char out[KEYHEX + 1])
{
    unsigned char b[80];
    if (RAND_bytes(b, sizeof(b)) <= 0) {
        out[0] = '\0';
        return;
    }
    for (int i = 0; i < 80; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void tick(lg_timer_t *t)
{
    lg_timer_set(lg_cl.loop, t, every);
    if (pending || !lg_redis_ready(&lg_cl.cmd))
        return;                 /* one at a time; nothing to do without Redis */
    char rot[24], k1[KEYHEX + 1], k2[KEYHEX + 1];
    snprintf(rot, sizeof(rot), "%lld", (long long)lg_cl.conf->tls_ticket_rotate);
    fresh_key(k1);
    fresh_key(k2);
    if (k1[0] == '\0' || k2[0] == '\0')
        return;
    const char *argv[4] = { key, rot, k1, k2 };
    size_t lens[4] = { strlen(key), strlen(rot), KEYHEX, KEYHEX };
    /* a script gets a second: it is not on any request's path */
    pending = lg_redis_eval(&lg_cl.cmd, SCRIPT, sha, 1, 4, argv, lens, 1000, synced, NULL);
}

static void cmd_ready(lg_redis_t *r)
{
    lg_cluster_set_up(0, lg_redis_ready(r));
    if (lg_redis_ready(r))
        lg_timer_set(lg_cl.loop, &timer, 0);    /* at once: a node starts with the fleet's keys */
}

int lg_cluster_tickets_init(void)
{
    lg_redis_sha1(SCRIPT, sha);
    snprintf(key, sizeof(key), "%s:tls-tickets", lg_cl.cf->name);
    every = lg_cl.conf->tls_ticket_rotate / 4;
    if (every < 500)
        every = 500;
    if (every > 10000)
        every = 10000;
    timer.cb = tick;
    lg_cl.cmd.on_state = cmd_ready;
    lg_timer_set(lg_cl.loop, &timer, every);
    return 0;
}

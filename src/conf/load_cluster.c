/*
 * The fleet's shared state (part of the configuration loader, see load.c;
 * the run time is src/cluster):
 *
 *   cluster = {
 *     redis = "127.0.0.1:6379";          # or "unix:/run/redis/redis.sock"
 *                                        # or "rediss://10.0.0.5:6380" (TLS)
 *     redis_tls_ca = "/etc/legate/redis-ca.pem";           # TLS, optional
 *     redis_tls_cert = "c.pem";  redis_tls_key = "c.key";  # tls-auth-clients
 *     redis_user = "legate";  redis_password = "secret";   # AUTH, optional
 *     redis_timeout = "100ms";           # no request waits longer on Redis
 *     node = "edge-1";                   # default: via_name
 *     purge = true;  tls_tickets = true;
 *     cache_peers = "fleet";             # the nodes as an upstream: one sharded cache
 *     cache_self = "10.0.0.1:8080";      # this node's server there (default: a listen address)
 *   };
 *
 * Redis is named by an IP address, never a host name: hiredis resolves
 * names with a blocking getaddrinfo(), and a worker must never block.
 */
#include "conf/load_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const directive_t cluster_dirs[] = {
    ROW("redis",                 D_STRING,   0, 0, NULL, lg_cluster_conf_t, redis),
    ROW("redis_user",            D_STRING,   0, 0, NULL, lg_cluster_conf_t, redis_user),
    ROW("redis_password",        D_STRING,   0, 0, NULL, lg_cluster_conf_t, redis_password),
    ROW("redis_timeout",         D_DURATION, 1, 10 * SEC, "100ms", lg_cluster_conf_t, redis_timeout),
    ROW("redis_connect_timeout", D_DURATION, 1, 60 * SEC, "1s", lg_cluster_conf_t, redis_connect_timeout),
    /* TLS to Redis (rediss://); checked in tls_checks() */
    PATH("redis_tls_ca",         NULL, NULL, lg_cluster_conf_t, redis_tls_ca),
    ROW("redis_tls_name",        D_STRING,   0, 0, NULL, lg_cluster_conf_t, redis_tls_name),
    PATH("redis_tls_cert",       NULL, NULL, lg_cluster_conf_t, redis_tls_cert),
    PATH("redis_tls_key",        NULL, NULL, lg_cluster_conf_t, redis_tls_key),
    ROW("redis_tls_verify",      D_BOOL,     0, 1, "true", lg_cluster_conf_t, redis_tls_verify),
    ROW("name",                  D_STRING,   0, 0, "legate", lg_cluster_conf_t, name),
    ROW("node",                  D_STRING,   0, 0, NULL, lg_cluster_conf_t, node),
    ROW("purge",                 D_BOOL,     0, 1, "true", lg_cluster_conf_t, purge),
    ROW("purge_log",             D_INT,      100, 10000000, "10000", lg_cluster_conf_t, purge_log),
    ROW("tls_tickets",           D_BOOL,     0, 1, "true", lg_cluster_conf_t, tls_tickets),
    ROW("health_votes",          D_INT,      0, 1000, "2", lg_cluster_conf_t, health_votes),
    ROW("cache_peers",           D_STRING,   0, 0, NULL, lg_cluster_conf_t, cache_peers),
    ROW("cache_self",            D_STRING,   0, 0, NULL, lg_cluster_conf_t, cache_self),
    ROW("cache_peers_secret",    D_STRING,   0, 0, NULL, lg_cluster_conf_t, cache_peers_secret),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/*
 * TLS to Redis: the settings only mean something with rediss://, a client
 * certificate needs its key, and the files must be readable now (the
 * master loads them in lg_tls_prepare, which reports a bad PEM).
 */
static int tls_file(ld_t *ld, const config_setting_t *s, const char *name, const char *path)
{
    if (path && access(path, R_OK) < 0)
        return ld_error(ld, config_setting_get_member(s, name), "cannot read '%s' \"%s\": %s",
                        name, path, strerror(errno));
    return 0;
}

static int tls_checks(ld_t *ld, const config_setting_t *s, const lg_cluster_conf_t *cf)
{
    static const char *const opts[] = { "redis_tls_ca", "redis_tls_name", "redis_tls_cert",
                                        "redis_tls_key", "redis_tls_verify" };
    if (!cf->redis_tls) {
        for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
            if (config_setting_get_member(s, opts[i]))
                return ld_error(ld, config_setting_get_member(s, opts[i]),
                                "'%s' is for TLS to Redis, and 'redis' is not \"rediss://IP:port\"",
                                opts[i]);
        return 0;
    }
    if ((cf->redis_tls_cert == NULL) != (cf->redis_tls_key == NULL))
        return ld_error(ld, config_setting_get_member(s, cf->redis_tls_cert ? "redis_tls_cert"
                                                                             : "redis_tls_key"),
                        "'redis_tls_cert' and 'redis_tls_key' go together (a client certificate "
                        "and its key)");
    if (cf->redis_tls_name && (cf->redis_tls_name[0] == '\0' || strlen(cf->redis_tls_name) > 253))
        return ld_error(ld, config_setting_get_member(s, "redis_tls_name"),
                        "'redis_tls_name' must be a host name (the one in Redis's certificate)");
    return tls_file(ld, s, "redis_tls_ca", cf->redis_tls_ca) |
           tls_file(ld, s, "redis_tls_cert", cf->redis_tls_cert) |
           tls_file(ld, s, "redis_tls_key", cf->redis_tls_key);
}

/* "IP:port", "[IPv6]:port", "rediss://IP:port" (TLS) or "unix:/path" into
 * cf's derived fields; "redis://IP:port" is IP:port, as Redis clients write it. */
static int redis_addr(ld_t *ld, const config_setting_t *at, lg_cluster_conf_t *cf)
{
    const char *a = cf->redis;
    if (strncmp(a, "rediss://", 9) == 0) {
        cf->redis_tls = 1;
        a += 9;
    } else if (strncmp(a, "redis://", 8) == 0) {
        a += 8;
    } else if (strncmp(a, "unix:", 5) == 0) {
        if (a[5] != '/')
            return ld_error(ld, at, "'redis' unix socket must be an absolute path (unix:/run/redis.sock)");
        cf->unix_path = ld_strdup(ld, a + 5);
        return cf->unix_path ? 0 : ld_oom(ld, at);
    }
    const char *colon = strrchr(a, ':');
    const char *h = a, *he = colon;
    if (a[0] == '[') {
        const char *rb = strchr(a, ']');
        if (rb == NULL || rb[1] != ':')
            colon = NULL;
        h = a + 1;
        he = rb;
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || end == colon + 1 || *end != '\0' || port < 1 || port > 65535 ||
        he == NULL || he <= h || (size_t)(he - h) >= sizeof(cf->host))
        return ld_error(ld, at, "'redis' must be IP:port (such as \"127.0.0.1:6379\"), "
                        "rediss://IP:port (TLS) or unix:/path");
    memcpy(cf->host, h, (size_t)(he - h));
    cf->host[he - h] = '\0';
    unsigned char buf[16];
    if (inet_pton(AF_INET, cf->host, buf) != 1 && inet_pton(AF_INET6, cf->host, buf) != 1)
        return ld_error(ld, at, "'redis' must name an IP address, not \"%s\": resolving a name "
                        "would block the workers", cf->host);
    cf->port = (int)port;
    return 0;
}

int ld_fn_cluster(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    lg_conf_t *conf = ld->conf;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'cluster' must be a group { redis = \"IP:port\"; ... }");
#ifndef LG_HAVE_HIREDIS
    (void)conf;
    (void)cluster_dirs;
    (void)redis_addr;
    (void)tls_checks;
    return ld_error(ld, s, "'cluster' needs a legate built with hiredis (Debian libhiredis-dev); "
                    "this one was built without it, so it cannot share state through Redis");
#else
    lg_cluster_conf_t *cf = ld_calloc(ld, 1, sizeof(*cf));
    if (cf == NULL)
        return ld_oom(ld, s);
    ld_table_unset(cluster_dirs, cf);
    cf->line = (int)config_setting_source_line(s);
    int bad = ld_parse_block(ld, s, "cluster", cluster_dirs, cf, NULL, NULL);
    bad |= ld_table_defaults(ld, cluster_dirs, cf);
    if (bad)
        return -1;
    if (cf->redis == NULL)
        return ld_error(ld, s, "'cluster' has no 'redis' (the address of the Redis the nodes share)");
    if (redis_addr(ld, config_setting_get_member(s, "redis"), cf) < 0)
        return -1;
    if (tls_checks(ld, s, cf) < 0)
        return -1;
    if (cf->redis_user && cf->redis_password == NULL)
        return ld_error(ld, config_setting_get_member(s, "redis_user"),
                        "'redis_user' needs 'redis_password' (AUTH user password)");
    for (const char *p = cf->name; *p; p++)
        if (*p <= ' ' || *p >= 127)
            return ld_error(ld, config_setting_get_member(s, "name"),
                            "cluster 'name' must be printable without spaces: it prefixes Redis keys");
    for (const char *p = cf->node ? cf->node : ""; *p; p++)
        if (*p <= ' ' || *p >= 127)
            return ld_error(ld, config_setting_get_member(s, "node"),
                            "cluster 'node' must be printable without spaces");
    conf->cluster = cf;
    return 0;
#endif
}


/*
 * cache_peers, once every upstream is known: the nodes' upstream, and which
 * of its servers is this node.  Its balance is the ring (Maglev on the
 * cache key), whatever it said: every node must place a key alike.
 */
void ld_cluster_finish(ld_t *ld, const config_setting_t *root)
{
#ifdef LG_HAVE_HIREDIS
    lg_cluster_conf_t *cf = ld->conf->cluster;
    if (cf == NULL || cf->cache_peers == NULL)
        return;
    const config_setting_t *cs = config_setting_get_member(root, "cluster");
    const config_setting_t *at = cs ? config_setting_get_member(cs, "cache_peers") : NULL;
    lg_upstream_t *up = ld_upstream_find(ld->conf, cf->cache_peers);
    if (up == NULL) {
        ld_error(ld, at ? at : root, "unknown upstream '%s' in 'cache_peers'", cf->cache_peers);
        return;
    }
    if (cf->cache_peers_secret == NULL || strlen(cf->cache_peers_secret) < 16) {
        const config_setting_t *ks = cs ? config_setting_get_member(cs, "cache_peers_secret") : NULL;
        ld_error(ld, ks ? ks : at ? at : root, "'cache_peers' needs 'cache_peers_secret' of at least 16 "
                 "characters, the same on every node: it signs what one node tells another about "
                 "its client");
        return;
    }
    if (up->stream || up->h2 || up->nservers < 2 || up->nservers > 64) {
        ld_error(ld, at ? at : root, "'cache_peers' upstream '%s' must be an HTTP/1.1 upstream of "
                 "2 to 64 nodes (this one included)", up->name);
        return;
    }
    cf->self = -1;
    for (size_t i = 0; i < up->nservers; i++) {
        const lg_upstream_server_t *sv = &up->servers[i];
        if (cf->cache_self ? strcmp(sv->addr.text, cf->cache_self) == 0 : 0) {
            cf->self = (int)i;
            break;
        }
        for (size_t b = 0; !cf->cache_self && b < ld->conf->nbinds; b++)
            if (!ld->conf->binds[b].stream && !ld->conf->binds[b].tls &&
                ld_same_addr(&sv->addr, &ld->conf->binds[b].addr)) {
                cf->self = (int)i;
                break;
            }
        if (cf->self >= 0)
            break;
    }
    if (cf->self < 0) {
        const config_setting_t *ss = cs ? config_setting_get_member(cs, "cache_self") : NULL;
        if (cf->cache_self)
            ld_error(ld, ss ? ss : at, "'cache_self' \"%s\" is not a server of upstream '%s' "
                     "(write it as the server is written there)", cf->cache_self, up->name);
        else
            ld_error(ld, at ? at : root, "none of the servers of upstream '%s' is a plain HTTP "
                     "address this node listens on: set 'cache_self' to this node's server",
                     up->name);
        return;
    }
    up->balance = LG_BAL_HASH;  /* the ring; its table is built with the others */
    up->balance_name = "hash";
    cf->peers = up;
#else
    (void)ld;
    (void)root;
#endif
}

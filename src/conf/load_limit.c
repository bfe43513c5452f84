/*
 * Request-rate and concurrency limits (part of the configuration loader,
 * see load.c; the run time is feature/limit.c):
 *
 *   http = {
 *     limit_req_zones  = ( { name = "api"; key = "$remote_addr"; rate = "20r/s"; size = "1m"; } );
 *     limit_conn_zones = ( { name = "perip"; key = "$remote_addr"; size = "1m"; } );
 *     limit_req  = { zone = "api"; burst = 10; nodelay = true; };   # or a list, or () for none
 *     limit_conn = { zone = "perip"; max = 4; };
 *     ...
 *
 * Rules name zones that may be declared after them in the file, so names
 * are resolved in one pass once everything is loaded (ld_limits_finish).
 */
#include "conf/load_int.h"

#include <stdlib.h>
#include <string.h>

#define MAX_LIMIT_ZONES 16      /* each is one of the segment's 64 zones */

static const directive_t zone_dirs[] = {
    ROW("name", D_STRING, 0, 0, NULL, lg_limit_zone_t, name),
    ROW("key",  D_TPL,    0, 0, NULL, lg_limit_zone_t, key),
    ROW("size", D_SIZE,   4096, (int64_t)1 << 32, "1m", lg_limit_zone_t, size),
    ROW("rate", D_STRING, 0, 0, NULL, lg_limit_zone_t, rate),
    ROW("cluster", D_BOOL, 0, 1, "false", lg_limit_zone_t, cluster),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t rule_dirs[] = {
    ROW("zone",    D_STRING, 0, 0, NULL, lg_limit_rule_t, zone_name),
    ROW("burst",   D_INT,    0, 1000000, "0", lg_limit_rule_t, burst),
    ROW("delay",   D_INT,    0, 1000000, NULL, lg_limit_rule_t, delay),
    ROW("nodelay", D_BOOL,   0, 1, "false", lg_limit_rule_t, nodelay),
    ROW("max",     D_INT,    1, 1000000, NULL, lg_limit_rule_t, max),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* "20r/s", "30r/m": the interval between two requests in microseconds. */
static int parse_rate(const char *s, int64_t *us)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n <= 0 || n > 1000000)
        return -1;
    if (strcmp(end, "r/s") == 0)
        *us = 1000000LL / n;
    else if (strcmp(end, "r/m") == 0)
        *us = 60000000LL / n;
    else
        return -1;
    return *us > 0 ? 0 : -1;
}

static int zones(ld_t *ld, const config_setting_t *s, int conn)
{
    lg_conf_t *conf = ld->conf;
    const char *what = conn ? "limit_conn_zones" : "limit_req_zones";
    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'%s' must be a list ( { name = ...; key = ...; }, ... )", what);
    if (conf->limit_zones == NULL &&
        (conf->limit_zones = ld_calloc(ld, MAX_LIMIT_ZONES, sizeof(*conf->limit_zones))) == NULL)
        return ld_oom(ld, s);
    int rc = 0, n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        if (!config_setting_is_group(g)) {
            rc = ld_error(ld, g, "an entry of '%s' must be a group { name = ...; key = ...; }", what);
            continue;
        }
        if (conf->nlimit_zones == MAX_LIMIT_ZONES) {
            rc = ld_error(ld, g, "more than %d limit zones", MAX_LIMIT_ZONES);
            break;
        }
        lg_limit_zone_t *z = &conf->limit_zones[conf->nlimit_zones];
        ld_table_unset(zone_dirs, z);
        z->conn = conn;
        z->line = (int)config_setting_source_line(g);
        int bad = ld_parse_block(ld, g, what, zone_dirs, z, NULL, NULL);
        bad |= ld_table_defaults(ld, zone_dirs, z);
        if (z->name == NULL)
            bad = ld_error(ld, g, "a zone of '%s' has no 'name'", what);
        if (z->key == NULL)
            bad = ld_error(ld, g, "a zone of '%s' has no 'key'", what);
        if (conn && z->rate)
            bad = ld_error(ld, config_setting_get_member(g, "rate"),
                           "'rate' belongs to limit_req_zones, not limit_conn_zones");
        size_t rl = z->rate ? strlen(z->rate) : 0;
        if (!conn && z->rate == NULL) {
            bad = ld_error(ld, g, "a zone of 'limit_req_zones' has no 'rate'");
        } else if (!conn && rl > 2 && strcmp(z->rate + rl - 2, "/s") == 0 &&
                   z->rate[rl - 3] != 'r') {
            /* bytes a second: a bandwidth zone, for limit_rate_zone */
            char num[32];
            snprintf(num, sizeof(num), "%.*s", (int)(rl - 2), z->rate);
            if (lg_parse_size(num, &z->bytes_rate) < 0 || z->bytes_rate < 1024 ||
                z->bytes_rate > ((int64_t)1 << 40))
                bad = ld_error(ld, config_setting_get_member(g, "rate"),
                               "'rate' of a bandwidth zone must be bytes a second, such as "
                               "\"512k/s\" or \"10m/s\" (1k/s to 1t/s)");
        } else if (!conn && parse_rate(z->rate, &z->interval_us) < 0) {
            bad = ld_error(ld, config_setting_get_member(g, "rate"),
                           "'rate' must be requests per second or minute, such as \"20r/s\" "
                           "or \"30r/m\" (1 to 1000000), or bytes a second such as \"512k/s\"");
        }
        if (z->cluster && (conn || z->bytes_rate))
            bad = ld_error(ld, config_setting_get_member(g, "cluster"),
                           "'cluster' is for request-rate zones (limit_req_zones with r/s or r/m)");
        for (size_t k = 0; z->name && k < conf->nlimit_zones; k++)
            if (conf->limit_zones[k].conn == conn && strcmp(conf->limit_zones[k].name, z->name) == 0)
                bad = ld_error(ld, g, "%s \"%s\" is declared twice (also at line %d)", what,
                               z->name, conf->limit_zones[k].line);
        if (bad) {
            rc = -1;
            continue;
        }
        z->index = (int)conf->nlimit_zones++;
    }
    return rc;
}

int ld_fn_limit_req_zones(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    return zones(ld, s, 0);
}

int ld_fn_limit_conn_zones(ld_t *ld, const config_setting_t *s, void *base)
{
    (void)base;
    return zones(ld, s, 1);
}

/* One group, or a list of groups; an empty list turns inherited limits off. */
static int rules(ld_t *ld, const config_setting_t *s, int conn, lg_limits_t **out)
{
    const char *what = conn ? "limit_conn" : "limit_req";
    int n = ld_entry_count(ld, s, 1, conn ? "a group { zone = ...; max = ...; } or a list of them"
                                          : "a group { zone = ...; burst = ...; } or a list of them");
    if (n < 0)
        return -1;
    if (config_setting_type(s) == CONFIG_TYPE_STRING)
        return ld_error(ld, s, "'%s' must be a group { zone = ...; } or a list of them", what);
    lg_limits_t *l = ld_calloc(ld, 1, sizeof(*l));
    if (l == NULL || (n > 0 && (l->v = ld_calloc(ld, (size_t)n, sizeof(*l->v))) == NULL))
        return ld_oom(ld, s);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = ld_entry_at(s, i);
        if (!config_setting_is_group(g)) {
            rc = ld_error(ld, g, "an entry of '%s' must be a group { zone = ...; }", what);
            continue;
        }
        lg_limit_rule_t *r = &l->v[l->n];
        ld_table_unset(rule_dirs, r);
        r->line = (int)config_setting_source_line(g);
        int bad = ld_parse_block(ld, g, what, rule_dirs, r, NULL, NULL);
        bad |= ld_table_defaults(ld, rule_dirs, r);
        if (r->zone_name == NULL)
            bad = ld_error(ld, g, "'%s' has no 'zone'", what);
        if (conn) {
            if (r->max == LG_UNSET)
                bad = ld_error(ld, g, "'limit_conn' has no 'max'");
            if (config_setting_get_member(g, "burst") || config_setting_get_member(g, "delay") ||
                config_setting_get_member(g, "nodelay"))
                bad = ld_error(ld, g, "'burst', 'delay' and 'nodelay' belong to limit_req");
        } else {
            if (r->max != LG_UNSET)
                bad = ld_error(ld, config_setting_get_member(g, "max"), "'max' belongs to limit_conn");
            if (r->nodelay && r->delay != LG_UNSET)
                bad = ld_error(ld, g, "'limit_req' has both 'delay' and 'nodelay'");
            else if (r->nodelay)
                r->delay = r->burst;
            else if (r->delay == LG_UNSET)
                r->delay = 0;
            else if (r->delay > r->burst)
                bad = ld_error(ld, config_setting_get_member(g, "delay"),
                               "'delay' (%d) must not exceed 'burst' (%d)", r->delay, r->burst);
        }
        if (bad)
            rc = -1;
        else
            l->n++;
    }
    if (rc == 0)
        *out = l;
    return rc;
}

int ld_fn_limit_req(ld_t *ld, const config_setting_t *s, void *base)
{
    return rules(ld, s, 0, &((lg_common_t *)base)->limit_req);
}

int ld_fn_limit_conn(ld_t *ld, const config_setting_t *s, void *base)
{
    return rules(ld, s, 1, &((lg_common_t *)base)->limit_conn);
}

static void resolve(ld_t *ld, lg_limits_t *l, int conn)
{
    for (size_t i = 0; l && i < l->n; i++) {
        lg_limit_rule_t *r = &l->v[i];
        if (r->zone)
            continue;           /* shared with the level it was inherited from */
        for (size_t k = 0; k < ld->conf->nlimit_zones; k++)
            if (ld->conf->limit_zones[k].conn == conn &&
                strcmp(ld->conf->limit_zones[k].name, r->zone_name) == 0)
                r->zone = &ld->conf->limit_zones[k];
        if (r->zone == NULL)
            ld_error_at(ld, ld->file, r->line, "'%s' names zone \"%s\", which %s does not declare",
                        conn ? "limit_conn" : "limit_req", r->zone_name,
                        conn ? "limit_conn_zones" : "limit_req_zones");
        else if (!conn && r->zone->bytes_rate)
            ld_error_at(ld, ld->file, r->line, "'limit_req' names zone \"%s\", a bandwidth zone "
                        "(its rate is bytes a second): that is for 'limit_rate_zone'", r->zone_name);
    }
}

/* limit_rate_zone = "name": a bandwidth zone of limit_req_zones. */
static void resolve_rate(ld_t *ld, lg_common_t *c, int line)
{
    if (c->limit_rate_zone == NULL || c->limit_rate_z)
        return;
    for (size_t k = 0; k < ld->conf->nlimit_zones; k++) {
        lg_limit_zone_t *z = &ld->conf->limit_zones[k];
        if (!z->conn && strcmp(z->name, c->limit_rate_zone) == 0) {
            if (z->bytes_rate == 0)
                ld_error_at(ld, ld->file, line, "'limit_rate_zone' names zone \"%s\", whose rate "
                            "is requests, not bytes a second", z->name);
            c->limit_rate_z = z;
            return;
        }
    }
    ld_error_at(ld, ld->file, line, "'limit_rate_zone' names zone \"%s\", which limit_req_zones "
                "does not declare", c->limit_rate_zone);
}

/* After the merge: zone names resolved, and which servers must find the
 * route in ACCESS because a route has limits of its own. */
void ld_limits_finish(ld_t *ld)
{
    lg_conf_t *conf = ld->conf;
    for (size_t i = 0; i < conf->nlimit_zones; i++)
        if (conf->limit_zones[i].cluster && conf->cluster == NULL)
            ld_error_at(ld, ld->file, conf->limit_zones[i].line,
                        "limit_req zone \"%s\" has cluster = true but there is no 'cluster' section "
                        "(the Redis the nodes share)", conf->limit_zones[i].name);
    resolve(ld, conf->http.limit_req, 0);
    resolve(ld, conf->http.limit_conn, 1);
    resolve_rate(ld, &conf->http, conf->http_line);
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        resolve(ld, srv->common.limit_req, 0);
        resolve(ld, srv->common.limit_conn, 1);
        resolve_rate(ld, &srv->common, srv->line);
        for (size_t j = 0; j < srv->nroutes; j++) {
            lg_common_t *c = &srv->routes[j].common;
            resolve(ld, c->limit_req, 0);
            resolve(ld, c->limit_conn, 1);
            resolve_rate(ld, c, srv->routes[j].line);
            if (c->limit_req != srv->common.limit_req || c->limit_conn != srv->common.limit_conn ||
                c->limit_req_status != srv->common.limit_req_status ||
                c->limit_req_dry_run != srv->common.limit_req_dry_run ||
                c->limit_conn_status != srv->common.limit_conn_status ||
                c->limit_conn_dry_run != srv->common.limit_conn_dry_run ||
                c->limit_rate_z != srv->common.limit_rate_z)
                srv->limit_routes = 1;
        }
    }
}

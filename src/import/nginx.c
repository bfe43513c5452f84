/*
 * legate --import-nginx FILE: an nginx configuration translated to legate's.
 *
 * The files are read with their includes (globs, relative to the main
 * file's directory as nginx's prefix), parsed by nginx_parse.c into one tree,
 * then walked: main -> global settings, http -> the http group, upstream ->
 * upstreams, server -> servers, location -> routes (nested ones flattened
 * with their parent's settings).  Scalars are written at the level nginx has
 * them, since legate inherits the same way (http -> server -> route).  The
 * array-like directives nginx does not merge across levels (proxy_set_header,
 * add_header, allow/deny, limit_req, limit_conn) are resolved per location
 * the way nginx does -- the innermost level that has any wins, the outer
 * ones are dropped -- and written on each route.
 *
 * What is not translated is reported on diag as FILE:LINE: directive: why,
 * and so is every place where legate behaves differently.  Whatever would
 * make legate -t fail (a certificate that cannot be read, a variable legate
 * does not have, a host name that does not resolve) is left out and reported,
 * so the output always loads.  See legate-nginx(7).
 */
#include "import/nginx_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <grp.h>
#include <regex.h>
#include <strings.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "net/htpasswd.h"
#include "net/text.h"
#include "pipeline/vars.h"

/* ---------------------------------------------------------------- reading */

static ngx_dir_t *load(imp_t *im, const char *path, int depth, int *failed);

/* Replace every include in the list by the directives of its files. */
static ngx_dir_t *expand(imp_t *im, ngx_dir_t *list, int depth, int *failed)
{
    ngx_dir_t *head = NULL, **tail = &head;
    while (list) {
        ngx_dir_t *d = list;
        list = d->next;
        d->next = NULL;
        if (d->block)
            d->block = expand(im, d->block, depth, failed);
        if (!imp_is(d, "include") || d->has_block) {
            *tail = d;
            tail = &d->next;
            continue;
        }
        if (d->nargs != 2) {
            imp_report(im, d, "takes one file name or pattern: left out");
            ngx_free(d);
            continue;
        }
        char pat[PATH_MAX];
        if (d->args[1][0] == '/')
            snprintf(pat, sizeof(pat), "%s", d->args[1]);
        else
            snprintf(pat, sizeof(pat), "%s/%s", im->dir, d->args[1]);
        glob_t g;
        int grc = glob(pat, 0, NULL, &g);
        if (grc == GLOB_NOMATCH && strpbrk(d->args[1], "*?[") == NULL)
            imp_report(im, d, "\"%s\" does not exist: left out", pat);
        if (grc == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++) {
                ngx_dir_t *sub = load(im, g.gl_pathv[i], depth + 1, failed);
                while (sub) {
                    ngx_dir_t *n = sub->next;
                    sub->next = NULL;
                    *tail = sub;
                    tail = &sub->next;
                    sub = n;
                }
            }
        }
        if (grc == 0 || grc == GLOB_NOMATCH)
            globfree(&g);
        ngx_free(d);
    }
    return head;
}

static ngx_dir_t *load(imp_t *im, const char *path, int depth, int *failed)
{
    if (depth > 16 || im->nfiles == (int)(sizeof(im->files) / sizeof(im->files[0]))) {
        fprintf(im->diag, "%s: includes nested too deeply or too many files: left out\n", path);
        im->ndiag++;
        return NULL;
    }
    size_t len;
    char err_read[PATH_MAX + 128];
    char *text = lg_text_read_file(path, &len, err_read, sizeof(err_read));
    if (text == NULL) {
        /* "PATH: why" from lg_text_read_file; the remark says "cannot read" */
        size_t pl = strlen(path);
        const char *why = strncmp(err_read, path, pl) == 0 && err_read[pl] == ':'
                        ? err_read + pl + 2 : err_read;
        fprintf(im->diag, "%s: cannot read: %s\n", path, why);
        *failed = 1;
        return NULL;
    }
    char *name = strdup(path);
    if (name == NULL)
        abort();
    im->files[im->nfiles++] = name;
    const char *err;
    int line;
    ngx_dir_t *tree = ngx_parse(text, len, name, &err, &line);
    free(text);
    if (err) {
        fprintf(im->diag, "%s:%d: %s\n", name, line, err);
        *failed = 1;
        return NULL;
    }
    return expand(im, tree, depth, failed);
}

/* ---------------------------------------------------------------- http */

static void translate_zones(imp_t *im, const ngx_dir_t *d)
{
    const char *zone = NULL, *rate = NULL;
    for (int i = 2; i < d->nargs; i++) {
        if (strncmp(d->args[i], "zone=", 5) == 0) zone = d->args[i] + 5;
        else if (strncmp(d->args[i], "rate=", 5) == 0) rate = d->args[i] + 5;
        else if (strcmp(d->args[i], "sync") != 0)
            imp_report(im, d, "\"%s\" is not in legate: ignored", d->args[i]);
    }
    if (d->nargs < 3 || zone == NULL || (imp_is(d, "limit_req_zone") && rate == NULL)) {
        imp_report(im, d, "needs a key, zone= and (for limit_req_zone) rate=: left out");
        return;
    }
    char name[128];
    const char *colon = strchr(zone, ':');
    snprintf(name, sizeof(name), "%.*s", (int)(colon ? colon - zone : (long)strlen(zone)), zone);
    char zn[128];
    imp_setting_name(zn, sizeof(zn), name);
    const char *why = NULL;
    char *key = imp_template(d->args[1], &why);
    if (key == NULL) {
        imp_report(im, d, "%s: left out", why);
        return;
    }
    if (nginx_level_zone_known(im, imp_is(d, "limit_req_zone") ? 'r' : 'c', zn)) {
        imp_report(im, d, "zone \"%s\" is declared twice (nginx refuses it): the first is kept", zn);
        free(key);
        return;
    }
    if (im->nzones < (int)(sizeof(im->zones) / sizeof(im->zones[0]))) {
        char *z = malloc(strlen(zn) + 3);
        if (z == NULL)
            abort();
        sprintf(z, "%c:%s", imp_is(d, "limit_req_zone") ? 'r' : 'c', zn);
        im->zones[im->nzones++] = z;
    }
    sb_t *b = imp_is(d, "limit_req_zone") ? &im->zones_req : &im->zones_conn;
    imp_sb_str(b, b->n ? ",\n" : "\n");
    imp_ind(b, 2);
    imp_sb_printf(b, "{ name = \"%s\"; key = ", zn);
    imp_sb_quote(b, key);
    if (rate)
        imp_sb_printf(b, "; rate = \"%s\"", rate);
    if (colon && imp_size(colon + 1) > 0)
        imp_sb_printf(b, "; size = \"%s\"", colon + 1);
    imp_sb_str(b, "; }");
    free(key);
}

/*
 * The first proxy_cache_path as legate's disk tier: its directory as
 * cache_path (legate keeps its files in DIR/disk and DIR/legate.cache),
 * max_size as cache_disk_size, inactive= as cache_disk_inactive.  legate -t
 * refuses a cache_path the master cannot write, so a directory that is not
 * one here, or not writable, leaves the disk tier out (reported).
 */
static void cache_disk(imp_t *im, const ngx_dir_t *d, long long max, long long inactive)
{
    char path[512];
    const char *p = d->args[1];
    int n = p[0] == '/' ? snprintf(path, sizeof(path), "%s", p)
                        : snprintf(path, sizeof(path), "%s/%s", im->dir, p);
    struct stat st;
    if (n < 0 || (size_t)n >= sizeof(path) || strchr(path, '$')) {
        imp_report(im, d, "cannot use the path \"%s\": no disk tier (the cache stays in memory)", p);
        return;
    }
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode) || access(path, W_OK | X_OK) < 0) {
        imp_report(im, d, "\"%s\" is not a directory writable here: no disk tier (the cache "
                          "stays in memory); make it and set cache_path and cache_disk_size", path);
        return;
    }
    snprintf(im->cache_path, sizeof(im->cache_path), "%s", path);
    im->cache_disk = max > 0 ? max : 0;
    im->cache_inactive = inactive;
    if (max <= 0)
        imp_report(im, d, "no max_size: legate's disk tier needs a size; 1g is written");
    if (max <= 0)
        im->cache_disk = 1024LL * 1024 * 1024;
}

/* The websocket idiom (map $http_upgrade $connection_upgrade) is not a map
 * in the translation: legate passes upgrades itself (see proxy_set_header). */
static int upgrade_map(const ngx_dir_t *d)
{
    return d->nargs == 3 && strcmp(d->args[1], "$http_upgrade") == 0;
}

/* The names of map and set, declared before any template is read: legate's
 * too are known everywhere in the file.  Collected first ... */
typedef struct decl {
    const ngx_dir_t *d[512];
    int              n;
} decl_t;

static void collect_vars(imp_t *im, decl_t *dc, const ngx_dir_t *block, int http_level)
{
    for (const ngx_dir_t *d = block; d; d = d->next) {
        const char *name = NULL;
        if (http_level && imp_is(d, "map") && d->has_block && d->nargs == 3 && !upgrade_map(d))
            name = d->args[2];
        else if (imp_is(d, "set") && d->nargs == 3 && !http_level)
            name = d->args[1];
        if (name) {
            const char *why = name[0] == '$' ? imp_declare(name + 1) : "not a variable";
            if (why == NULL && dc->n == (int)(sizeof(dc->d) / sizeof(dc->d[0])))
                why = "more than 512 maps and sets";
            if (why)
                imp_report(im, d, "\"%s\": %s: left out", name, why);
            else
                dc->d[dc->n++] = d;
        }
        if (d->has_block && (imp_is(d, "server") || imp_is(d, "location")))
            collect_vars(im, dc, d->block, 0);
    }
}

/* ... then a name stays declared only while it has a set or one of its
 * maps a source legate can read: else a template naming it would pass
 * here and fail legate -t (nobody declares it there).  Leaving one out can
 * leave out another that names it: until nothing changes.  A name only
 * sets declare is set empty at http level as well, as nginx's variable is
 * empty where no set ran, and so that it is declared even when none of
 * its sets is written (their locations left out). */
static void declare_vars(imp_t *im, const ngx_dir_t *http)
{
    decl_t dc;
    dc.n = 0;
    collect_vars(im, &dc, http, 1);
    for (int changed = 1, round = 0; changed && round <= dc.n; round++) {
        changed = 0;
        for (int i = 0; i < dc.n; i++) {
            int is_map = imp_is(dc.d[i], "map");
            const char *name = (is_map ? dc.d[i]->args[2] : dc.d[i]->args[1]) + 1;
            if (!imp_declared(name, strlen(name)))
                continue;
            int ok = 0;
            for (int j = 0; j < dc.n && !ok; j++) {
                int jm = imp_is(dc.d[j], "map");
                if (strcmp((jm ? dc.d[j]->args[2] : dc.d[j]->args[1]) + 1, name) != 0)
                    continue;
                if (!jm) {
                    ok = 1;     /* a set: declared at http level too (below) */
                    break;
                }
                const char *why = NULL;
                char *t = imp_template(dc.d[j]->args[1], &why);
                ok = t != NULL;
                free(t);
            }
            if (!ok) {
                imp_undeclare(name);
                changed = 1;
            }
        }
    }
    if (im->set_only.p == NULL)
        imp_sb_add(&im->set_only, "", 0);
    for (int i = 0; i < dc.n; i++) {
        if (imp_is(dc.d[i], "map"))
            continue;
        const char *name = dc.d[i]->args[1] + 1;
        int mapped = 0, before = 0;
        for (int j = 0; j < dc.n; j++) {
            if (imp_is(dc.d[j], "map") && strcmp(dc.d[j]->args[2] + 1, name) == 0)
                mapped = 1;
            if (j < i && !imp_is(dc.d[j], "map") && strcmp(dc.d[j]->args[1] + 1, name) == 0)
                before = 1;
        }
        if (!mapped && !before && imp_declared(name, strlen(name)))
            imp_sb_printf(&im->set_only, " %s = \"\";", name);
    }
}

/* the groups of a POSIX ERE, for the $1..$9 of a map value */
static int ere_groups(const char *re)
{
    int n = 0, br = 0;
    for (const char *p = re; *p; p++) {
        if (*p == '\\' && p[1])
            p++;
        else if (br) {
            if (*p == ']')
                br = 0;
        } else if (*p == '[') {
            br = 1;
            if (p[1] == '^')
                p++;
            if (p[1] == ']')
                p++;
        } else if (*p == '(')
            n++;
    }
    return n;
}

/* the highest $N (1..9) of a template, 0 if none */
static int max_capture(const char *t)
{
    int m = 0;
    for (const char *p = t; (p = strchr(p, '$')) != NULL; p++) {
        const char *d = p[1] == '{' ? p + 2 : p + 1;
        if (*d >= '1' && *d <= '9' && d[1] != '_' && !isalnum((unsigned char)d[1]) &&
            *d - '0' > m)
            m = *d - '0';
    }
    return m;
}

/* a remark on an entry of a map, named "map" (its first word is a key) */
static const ngx_dir_t *as_map(ngx_dir_t *fake, const ngx_dir_t *e, char **args)
{
    static char map[] = "map";
    *fake = *e;
    args[0] = map;
    fake->args = args;
    fake->nargs = 1;
    return fake;
}

/* map SOURCE $NAME { ... } as one of legate's http.maps */
static void translate_map(imp_t *im, const ngx_dir_t *d)
{
    if (d->nargs != 3 || !d->has_block || d->args[2][0] != '$') {
        imp_report(im, d, "takes a source and a $variable with a block: left out");
        return;
    }
    const char *name = d->args[2] + 1;
    const char *why = NULL;
    char *src = imp_template(d->args[1], &why);
    if (src && !imp_declared(name, strlen(name))) {
        free(src);
        return;     /* reported by collect_vars */
    }
    if (src == NULL) {
        imp_report(im, d, "%s: left out ($%s is empty in legate)", why, name);
        return;
    }
    int hostnames = imp_child(d->block, "hostnames") != NULL;
    ngx_dir_t fake;
    char *fargs[1];
    sb_t vals = { 0 };
    imp_sb_add(&vals, "", 0);
    char *def = NULL;
    int nvals = 0;
    for (const ngx_dir_t *e = d->block; e; e = e->next) {
        if ((imp_is(e, "hostnames") || imp_is(e, "volatile")) && e->nargs == 1)
            continue;
        if (imp_is(e, "include")) {
            imp_report(im, as_map(&fake, e, fargs), "an include in a map is not read: its entries are left out");
            continue;
        }
        if (e->nargs != 2) {
            imp_report(im, as_map(&fake, e, fargs), "a map entry is a key and a value: left out");
            continue;
        }
        char *v = imp_template(e->args[1], &why);
        if (v == NULL) {
            imp_report(im, as_map(&fake, e, fargs), "%s: left out", why);
            continue;
        }
        const char *k = e->args[0];
        if (strcmp(k, "default") == 0) {
            if (def || max_capture(v))
                imp_report(im, as_map(&fake, e, fargs), def ? "a second default: left out"
                                      : "$1..$9 in the default: left out");
            else
                def = v, v = NULL;
            free(v);
            continue;
        }
        sb_t key = { 0 };
        imp_sb_add(&key, "", 0);
        int groups = -1;
        if (k[0] == '~') {
            int icase = k[1] == '*';
            char *ere = imp_ere(k + 1 + icase, 0, &why);
            if (ere == NULL) {
                imp_report(im, as_map(&fake, e, fargs), "\"%s\": %s: left out", k, why);
                free(v);
                free(key.p);
                continue;
            }
            groups = ere_groups(ere);
            imp_sb_printf(&key, "~%s%s", icase ? "*" : "", ere);
            free(ere);
        } else {
            if (k[0] == '.' && hostnames) {
                imp_report(im, as_map(&fake, e, fargs), "\"%s\" (the name and its subdomains): legate takes "
                                  "\"*%s\" for the subdomains only; left out", k, k);
                free(v);
                free(key.p);
                continue;
            }
            if (!hostnames && ((k[0] == '*' && k[1] == '.') ||
                               (strlen(k) > 2 && strcmp(k + strlen(k) - 2, ".*") == 0)))
                imp_report(im, as_map(&fake, e, fargs), "without hostnames nginx compares \"%s\" as it is; legate "
                                  "reads it as a wildcard", k);
            imp_sb_str(&key, k);
        }
        if (max_capture(v) > (groups < 0 ? 0 : groups)) {
            imp_report(im, as_map(&fake, e, fargs), "the value names a group the key does not have: left out");
            free(v);
            free(key.p);
            continue;
        }
        imp_sb_str(&vals, nvals++ ? ",\n" : "\n");
        imp_sb_str(&vals, "              ");
        imp_sb_str(&vals, "[ ");
        imp_sb_quote(&vals, key.p);
        imp_sb_str(&vals, ", ");
        imp_sb_quote(&vals, v);
        imp_sb_str(&vals, " ]");
        free(key.p);
        free(v);
    }
    if (im->maps.p == NULL)
        imp_sb_add(&im->maps, "", 0);
    imp_sb_str(&im->maps, im->maps.n ? ",\n" : "\n");
    imp_ind(&im->maps, 2);
    imp_sb_str(&im->maps, "{ variable = ");
    imp_sb_quote(&im->maps, name);
    imp_sb_str(&im->maps, "; source = ");
    imp_sb_quote(&im->maps, src);
    imp_sb_str(&im->maps, "; default = ");
    imp_sb_quote(&im->maps, def ? def : "");
    imp_sb_str(&im->maps, ";");
    if (nvals)
        imp_sb_printf(&im->maps, "\n          values = (%s\n          );", vals.p);
    imp_sb_str(&im->maps, " }");
    free(vals.p);
    free(def);
    free(src);
}

static void translate_http(imp_t *im, sb_t *out, const ngx_dir_t *http)
{
    level_t lv = { .up = NULL, .block = http->block, .self = NULL };
    im->http = http;
    declare_vars(im, http->block);
    /* first what others refer to: log formats, upstreams, zones, the cache */
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        if (imp_is(d, "log_format") && d->nargs >= 3 &&
            im->nlog_formats < (int)(sizeof(im->log_formats) / sizeof(im->log_formats[0])))
            im->log_formats[im->nlog_formats++] = d;
        else if (imp_is(d, "upstream") && d->has_block)
            nginx_upstream_translate(im, d);
        else if (imp_is(d, "limit_req_zone") || imp_is(d, "limit_conn_zone"))
            translate_zones(im, d);
        else if (imp_is(d, "proxy_cache_path")) {
            long long max = -1, inactive = -1;
            for (int i = 2; i < d->nargs; i++)
                if (strncmp(d->args[i], "max_size=", 9) == 0)
                    max = imp_size(d->args[i] + 9);
                else if (strncmp(d->args[i], "inactive=", 9) == 0) {
                    inactive = imp_time_ms(d->args[i] + 9);
                    if (inactive >= 0 && inactive < 1000) {
                        imp_report(im, d, "legate's cache_disk_inactive is 1s at least: 1s");
                        inactive = 1000;
                    } else if (inactive > 365LL * 86400 * 1000) {
                        imp_report(im, d, "legate's cache_disk_inactive is a year at most: 365d");
                        inactive = 365LL * 86400 * 1000;
                    }
                }
            if (!im->cache_size_mb && d->nargs >= 2)
                cache_disk(im, d, max, inactive);
            int mb = max > 0 ? (int)(max / (1024 * 1024)) : 64;
            if (mb > 1024) {
                imp_report(im, d, "legate's cache is in shared memory: %d MB instead of max_size", 1024);
                mb = 1024;
            }
            if (mb < 1)
                mb = 1;
            if (im->cache_size_mb)
                imp_report(im, d, "legate has one cache: this one is merged into the first");
            else
                imp_report(im, d, "legate keeps the hot part of the cache in memory "
                                  "(cache_size = \"%dm\")%s", mb,
                           im->cache_path[0] ? ", the rest on disk (cache_disk_size)" : "");
            if (!im->cache_size_mb)
                im->cache_size_mb = mb;
        } else if (imp_is(d, "map")) {
            if (!upgrade_map(d))
                translate_map(im, d);
        } else if (imp_is(d, "geo"))
            imp_report(im, d, "geo is not in legate (it has allow_countries/countries by GeoIP): "
                              "left out");
        else if (imp_is(d, "http2_max_concurrent_streams") && d->nargs == 2) {
            /* legate's is global: the http level's, the one nginx's servers inherit */
            char *end;
            long v = strtol(d->args[1], &end, 10);
            if (*end || v < 1 || v > 65535)
                imp_report(im, d, "1 to 65535 in legate: left out");
            else
                im->h2_streams = (int)v;
        } else if (imp_is(d, "split_clients")) {
            /* with the proxy_pass that uses it */
        }
    }
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        if (imp_is(d, "http2_max_concurrent_streams"))
            continue;   /* above */
        const char *why = nginx_level_ignored(d->args[0]);
        if ((imp_is(d, "resolver") || imp_is(d, "resolver_timeout")) && im->resolver_used)
            ;   /* written on the upstreams with server ... resolve */
        else if (why)
            imp_report(im, d, "not translated: %s", why);
        else if (imp_is(d, "proxy_pass") || imp_is(d, "return") || imp_is(d, "location") || imp_is(d, "listen"))
            imp_report(im, d, "not allowed at http level: left out");
        else if (imp_is(d, "if") || imp_is(d, "set"))
            imp_report(im, d, "not in legate: left out");
        else if (!nginx_level_handled(d->args[0]) && !imp_is(d, "geo"))
            imp_report(im, d, "not translated: legate has no such setting");
    }
    sb_t servers = { 0 };
    imp_sb_add(&servers, "", 0);
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        if (!imp_is(d, "server") || !d->has_block)
            continue;
        size_t at = servers.n;
        int before = im->nservers;
        nginx_server_translate(im, &servers, &lv, d);
        if (im->nservers == before || im->nsrv_text >= (int)(sizeof(im->srv_text) /
                                                              sizeof(im->srv_text[0])))
            continue;
        /* the server's own text, without the separator before it */
        const char *t = servers.p + at;
        t += strspn(t, ",\n ");
        char *copy = strdup(t);
        if (copy == NULL)
            abort();
        const ngx_dir_t *sn = imp_child(d->block, "server_name");
        const char *name = sn && sn->nargs >= 2 && sn->args[1][0] ? sn->args[1] : "server";
        if (strcmp(name, "_") == 0 || name[0] == '~')
            name = "default";
        snprintf(im->srv_name[im->nsrv_text], sizeof(im->srv_name[0]), "%02d-", im->nsrv_text + 1);
        imp_setting_name(im->srv_name[im->nsrv_text] + 3, sizeof(im->srv_name[0]) - 3,
                         name[0] == '*' || name[0] == '.' ? name + 1 + (name[1] == '.') : name);
        im->srv_text[im->nsrv_text++] = copy;
    }

    sb_t *common = &im->part_http;
    imp_sb_add(common, "", 0);
    nginx_level_scalars(im, common, 1, http->block, 0);
    if (im->maps.n)
        imp_sb_printf(common, "    maps = (%s\n    );\n", im->maps.p);
    if (im->set_only.n)
        imp_sb_printf(common, "    set = {%s };\n", im->set_only.p);
    if (im->zones_req.n)
        imp_sb_printf(common, "    limit_req_zones = (%s\n    );\n", im->zones_req.p);
    if (im->zones_conn.n)
        imp_sb_printf(common, "    limit_conn_zones = (%s\n    );\n", im->zones_conn.p);
    imp_sb_add(&im->part_ups, "", 0);
    if (im->ups) {
        imp_sb_str(&im->part_ups, "    upstreams = {\n");
        for (upstream_out_t *u = im->ups; u; u = u->next)
            imp_sb_printf(&im->part_ups, "        %s = {\n%s        };\n", u->name,
                          u->body.p ? u->body.p : "");
        imp_sb_str(&im->part_ups, "    };\n");
    }
    imp_sb_str(out, "http = {\n");
    imp_sb_str(out, common->p);
    imp_sb_str(out, im->part_ups.p);
    imp_sb_printf(out, "    servers = (%s\n    );\n};\n", servers.p);
    free(servers.p);
}

/* ---------------------------------------------------------------- main */

static void translate_main(imp_t *im, sb_t *out, const ngx_dir_t *root, const ngx_dir_t **http)
{
    for (const ngx_dir_t *d = root; d; d = d->next) {
        if (imp_is(d, "worker_processes") && d->nargs == 2) {
            if (strcmp(d->args[1], "auto") == 0)
                imp_sb_str(out, "worker_processes = \"auto\";\n");
            else
                imp_sb_printf(out, "worker_processes = %ld;\n", atol(d->args[1]));
        } else if (imp_is(d, "user") && d->nargs >= 2) {
            if (getpwnam(d->args[1]) == NULL) {
                imp_report(im, d, "no user \"%s\" here: left out", d->args[1]);
                continue;
            }
            imp_kv_quoted(out, 0, "user", d->args[1]);
            if (d->nargs == 3) {
                if (getgrnam(d->args[2]) == NULL)
                    imp_report(im, d, "no group \"%s\" here: left out", d->args[2]);
                else
                    imp_kv_quoted(out, 0, "group", d->args[2]);
            }
        } else if (imp_is(d, "pid") && d->nargs == 2) {
            imp_kv_quoted(out, 0, "pid", d->args[1]);
        } else if (imp_is(d, "error_log") && d->nargs >= 2) {
            if (strncmp(d->args[1], "memory:", 7) == 0) {
                imp_report(im, d, "legate logs to a file, syslog or stderr: left out");
                continue;
            }
            if (strncmp(d->args[1], "syslog:", 7) == 0) {
                char *target = nginx_level_syslog(im, d, d->args[1]);
                if (target == NULL)
                    continue;
                imp_kv_quoted(out, 0, "error_log", target);
                free(target);
            } else
                imp_kv_quoted(out, 0, "error_log", strcmp(d->args[1], "/dev/stderr") == 0 ? "stderr"
                                                                                        : d->args[1]);
            if (d->nargs == 3)
                imp_kv_quoted(out, 0, "error_log_level", d->args[2]);
        } else if (imp_is(d, "worker_rlimit_nofile") && d->nargs == 2) {
            imp_sb_printf(out, "worker_rlimit_nofile = %ld;\n", atol(d->args[1]));
        } else if (imp_is(d, "worker_shutdown_timeout") && d->nargs == 2) {
            long long ms = imp_time_ms(d->args[1]);
            if (ms > 0) {
                imp_sb_str(out, "shutdown_timeout = ");
                imp_sb_duration(out, ms);
                imp_sb_str(out, ";\n");
            }
        } else if (imp_is(d, "events")) {
            for (const ngx_dir_t *e = d->block; e; e = e->next) {
                if (imp_is(e, "worker_connections") && e->nargs == 2) {
                    imp_sb_printf(out, "worker_connections = %ld;\n", atol(e->args[1]));
                    imp_report(im, e, "nginx counts upstream connections too; legate counts "
                                      "clients (0, the default, follows the open-file limit)");
                } else if (imp_is(e, "use") || imp_is(e, "multi_accept") || imp_is(e, "accept_mutex"))
                    ;   /* legate: epoll, SO_REUSEPORT per worker */
                else
                    imp_report(im, e, "not translated: legate has no such setting");
            }
        } else if (imp_is(d, "http") && d->has_block) {
            *http = d;
        } else if (imp_is(d, "load_module")) {
            imp_report(im, d, "legate has no modules: left out");
        } else if (imp_is(d, "stream") || imp_is(d, "mail")) {
            imp_report(im, d, "legate proxies HTTP only: the block is left out");
        } else if (imp_is(d, "daemon") || imp_is(d, "master_process") || imp_is(d, "pcre_jit") ||
                   imp_is(d, "worker_cpu_affinity") || imp_is(d, "worker_priority") || imp_is(d, "env") ||
                   imp_is(d, "thread_pool") || imp_is(d, "timer_resolution") || imp_is(d, "lock_file") ||
                   imp_is(d, "working_directory") || imp_is(d, "ssl_engine")) {
            imp_report(im, d, "not translated: legate has no such setting");
        } else
            imp_report(im, d, "not translated: legate has no such setting");
    }
}

/* FILE's text into DIR/NAME (DIR/conf.d made as needed); never over a file
 * that exists.  0 or -1 with a message on diag. */
static int write_new(FILE *diag, const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fprintf(diag, "%s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? ": not overwritten (import into a new directory)" : "");
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    fputs(text, f);
    if (fclose(f) != 0) {
        fprintf(diag, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* --out DIR: legate.conf (the global settings, the http group's, and an
 * include of conf.d/), conf.d/upstreams.conf, and a file per server */
static int write_dir(imp_t *im, const char *dir, const char *file, const sb_t *head)
{
    /* all or nothing: no file is written when one of them is there already */
    int there = 0;
    for (int i = -2; i < im->nsrv_text; i++) {
        char path[PATH_MAX];
        if (i == -2)
            snprintf(path, sizeof(path), "%s/legate.conf", dir);
        else if (i == -1)
            snprintf(path, sizeof(path), "%s/conf.d/upstreams.conf", dir);
        else
            snprintf(path, sizeof(path), "%s/conf.d/%s.conf", dir, im->srv_name[i]);
        if (access(path, F_OK) == 0) {
            fprintf(im->diag, "%s: %s: not overwritten (import into a new directory)\n", path,
                    strerror(EEXIST));
            there = 1;
        }
    }
    if (there)
        return -1;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(im->diag, "%s: %s\n", dir, strerror(errno));
        return -1;
    }
    char cd[PATH_MAX];
    snprintf(cd, sizeof(cd), "%s/conf.d", dir);
    if (mkdir(cd, 0755) < 0 && errno != EEXIST) {
        fprintf(im->diag, "%s: %s\n", cd, strerror(errno));
        return -1;
    }
    sb_t m = { 0 };
    imp_sb_str(&m, head->p);
    imp_sb_str(&m, "\n# the upstreams and one file per nginx server\ninclude = \"conf.d/*.conf\";\n\n");
    imp_sb_printf(&m, "http = {\n%s};\n", im->part_http.p ? im->part_http.p : "");
    int rc = write_new(im->diag, dir, "legate.conf", m.p);
    free(m.p);
    if (rc < 0)
        return -1;
    if (im->part_ups.n) {
        sb_t u = { 0 };
        imp_sb_printf(&u, "# Translated from %s: the upstream groups.\nhttp = {\n%s};\n", file,
                      im->part_ups.p);
        rc = write_new(im->diag, dir, "conf.d/upstreams.conf", u.p);
        free(u.p);
        if (rc < 0)
            return -1;
    }
    for (int i = 0; i < im->nsrv_text; i++) {
        sb_t t = { 0 };
        char name[96];
        snprintf(name, sizeof(name), "conf.d/%s.conf", im->srv_name[i]);
        imp_sb_printf(&t, "# Translated from %s.\nhttp = {\n    servers = (\n        %s\n    );\n};\n",
                      file, im->srv_text[i]);
        rc = write_new(im->diag, dir, name, t.p);
        free(t.p);
        if (rc < 0)
            return -1;
    }
    fprintf(im->diag, "%s: written to %s/legate.conf and %d file%s in %s/\n", file, dir,
            im->nsrv_text + (im->part_ups.n > 0), im->nsrv_text + (im->part_ups.n > 0) == 1 ? ""
                                                                                          : "s", cd);
    return 0;
}

int lg_import_nginx(const char *file, FILE *out, FILE *diag)
{
    return lg_import_nginx_to(file, out, NULL, diag);
}

int lg_import_nginx_to(const char *file, FILE *out, const char *outdir, FILE *diag)
{
    imp_t im;
    memset(&im, 0, sizeof(im));
    im.diag = diag;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    im.dir = dir;
    imp_declared_reset();
    int failed = 0;
    ngx_dir_t *root = load(&im, file, 0, &failed);
    int rc = -1;
    if (failed)
        goto done;
    const ngx_dir_t *http = NULL;
    sb_t head = { 0 }, body = { 0 };
    imp_sb_add(&head, "", 0);
    imp_sb_add(&body, "", 0);
    imp_sb_printf(&head, "# Translated from %s by legate --import-nginx; see legate-nginx(7).\n"
                         "# Check it with: legate -t -c FILE\n\n", file);
    translate_main(&im, &head, root, &http);
    if (http)
        translate_http(&im, &body, http);
    if (im.nservers == 0) {
        fprintf(diag, "%s: no server could be translated: nothing written\n", file);
        free(head.p);
        free(body.p);
        goto done;
    }
    if (im.cache_size_mb)
        imp_sb_printf(&head, "cache_size = \"%dm\";\n", im.cache_size_mb);
    if (im.cache_size_mb && im.cache_path[0]) {
        imp_kv_quoted(&head, 0, "cache_path", im.cache_path);
        if (im.cache_disk % (1024 * 1024) == 0)
            imp_sb_printf(&head, "cache_disk_size = \"%lldm\";\n", im.cache_disk / (1024 * 1024));
        else if (im.cache_disk % 1024 == 0)
            imp_sb_printf(&head, "cache_disk_size = \"%lldk\";\n", im.cache_disk / 1024);
        else
            imp_sb_printf(&head, "cache_disk_size = \"%lld\";\n", im.cache_disk);
        if (im.cache_inactive >= 0) {
            imp_sb_str(&head, "cache_disk_inactive = ");
            imp_sb_duration(&head, im.cache_inactive);
            imp_sb_str(&head, ";\n");
        }
    }
    if (im.h2_streams)
        imp_sb_printf(&head, "http2_max_concurrent_streams = %d;\n", im.h2_streams);
    if (outdir) {
        rc = write_dir(&im, outdir, file, &head);
    } else {
        fputs(head.p, out);
        fputc('\n', out);
        fputs(body.p, out);
        rc = 0;
    }
    free(head.p);
    free(body.p);
    if (rc == 0)
        fprintf(diag, "%s: translated, %d remark%s\n", file, im.ndiag, im.ndiag == 1 ? "" : "s");
done:
    ngx_free(root);
    for (upstream_out_t *u = im.ups; u;) {
        upstream_out_t *n = u->next;
        free(u->body.p);
        free(u);
        u = n;
    }
    free(im.zones_req.p);
    free(im.maps.p);
    free(im.set_only.p);
    imp_declared_reset();
    free(im.part_http.p);
    free(im.part_ups.p);
    for (int i = 0; i < im.nsrv_text; i++)
        free(im.srv_text[i]);
    free(im.zones_conn.p);
    for (int i = 0; i < im.nfiles; i++)
        free(im.files[i]);
    for (int i = 0; i < im.nsaid_msgs; i++)
        free(im.said_msgs[i]);
    for (int i = 0; i < im.nzones; i++)
        free(im.zones[i]);
    return rc;
}

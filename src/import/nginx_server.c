/*
 * legate --import-nginx: server blocks -> servers (listen, server_name, TLS)
 * and their locations -> routes (exact, prefix, regex, iregex; nested ones
 * flattened with their parent's settings), with the actions legate has:
 * proxy_pass (split_clients as a weighted choice), return, the common
 * rewrites.
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
#include "pipeline/vars.h"

/* ---------------------------------------------------------------- servers */

typedef struct route_ctx {
    const ngx_dir_t *split;         /* split_clients of the $variable proxied to */
} route_ctx_t;

static const ngx_dir_t *find_split(imp_t *im, const char *var)
{
    for (const ngx_dir_t *d = im->http ? im->http->block : NULL; d; d = d->next)
        if (imp_is(d, "split_clients") && d->nargs == 3 && strcmp(d->args[2], var) == 0)
            return d;
    return NULL;
}

static int emit_split(imp_t *im, sb_t *b, int n, const ngx_dir_t *pp, const char *var)
{
    const ngx_dir_t *sc = find_split(im, var);
    if (sc == NULL) {
        imp_report(im, pp, "a proxy_pass with variables is not in legate: left out");
        return 0;
    }
    sb_t s = { 0 };
    imp_sb_add(&s, "", 0);
    double used = 0;
    int k = 0;
    for (const ngx_dir_t *e = sc->block; e; e = e->next) {
        if (e->nargs != 2) {
            imp_report(im, e, "takes a share and a value: left out");
            continue;
        }
        double pct;
        if (strcmp(e->args[0], "*") == 0)
            pct = 100.0 - used;
        else
            pct = atof(e->args[0]);
        used += pct;
        const upstream_out_t *u = nginx_upstream_find(im, e->args[1]);
        if (u == NULL) {
            imp_report(im, e, "\"%s\" is not an upstream: its share is left out", e->args[1]);
            continue;
        }
        int w = (int)(pct * 100 + 0.5);
        if (w < 1)
            continue;
        imp_sb_printf(&s, "%s{ upstream = \"%s\"; weight = %d; }", k++ ? ", " : "", u->name, w);
    }
    if (k < 2) {
        imp_report(im, sc, "a split needs two upstreams: left out");
        free(s.p);
        return 0;
    }
    const char *why = NULL;
    char *key = imp_template(sc->args[1], &why);
    if (key == NULL) {
        imp_report(im, sc, "%s: left out", why);
        free(s.p);
        return 0;
    }
    imp_ind(b, n);
    imp_sb_printf(b, "split = ( %s );\n", s.p);
    imp_kv_quoted(b, n, "split_key", key);
    imp_report(im, sc, "legate's split hashes the key its own way: the same shares, other members");
    free(key);
    free(s.p);
    return 1;
}

/* proxy_next_upstream* of a location: settings of the upstream in legate */
static void next_upstream(imp_t *im, const level_t *lv, const char *name)
{
    upstream_out_t *u = nginx_upstream_find(im, name);
    const ngx_dir_t *nu = nginx_level_inherited(lv, "proxy_next_upstream");
    const ngx_dir_t *tries = nginx_level_inherited(lv, "proxy_next_upstream_tries");
    const ngx_dir_t *tmo = nginx_level_inherited(lv, "proxy_next_upstream_timeout");
    if (u == NULL || (!nu && !tries && !tmo))
        return;
    if (u->has_next) {
        const ngx_dir_t *d = nu ? nu : tries ? tries : tmo;
        if (u->has_next != d->line)
            imp_report(im, d, "legate retries per upstream: the first location's setting for "
                              "\"%s\" is used", name);
        return;
    }
    const ngx_dir_t *first = nu ? nu : tries ? tries : tmo;
    u->has_next = first->line;
    if (nu) {
        sb_t w = { 0 };
        imp_sb_add(&w, "", 0);
        for (int i = 1; i < nu->nargs; i++) {
            const char *a = nu->args[i];
            if (strcmp(a, "error") == 0 || strcmp(a, "timeout") == 0 ||
                strcmp(a, "invalid_header") == 0 || strcmp(a, "non_idempotent") == 0 ||
                strcmp(a, "http_500") == 0 || strcmp(a, "http_502") == 0 ||
                strcmp(a, "http_503") == 0 || strcmp(a, "http_504") == 0 ||
                strcmp(a, "http_429") == 0) {
                if (w.n)
                    imp_sb_str(&w, " ");
                imp_sb_str(&w, a);
            } else
                imp_report(im, nu, "\"%s\" is not in legate's next_upstream: left out", a);
        }
        if (w.n)
            imp_kv_quoted(&u->body, 3, "next_upstream", w.p);
        free(w.p);
    }
    if (tries && tries->nargs == 2) {
        imp_ind(&u->body, 3);
        imp_sb_printf(&u->body, "next_upstream_tries = %ld;\n", atol(tries->args[1]));
    }
    if (tmo && tmo->nargs == 2) {
        long long ms = imp_time_ms(tmo->args[1]);
        if (ms > 0) {
            imp_ind(&u->body, 3);
            imp_sb_str(&u->body, "next_upstream_timeout = ");
            imp_sb_duration(&u->body, ms);
            imp_sb_str(&u->body, ";\n");
        }
    }
}

static int re_capture(const char *s)
{
    for (const char *p = strchr(s, '$'); p; p = strchr(p + 1, '$'))
        if (p[1] >= '1' && p[1] <= '9')
            return 1;
    return 0;
}

/*
 * The condition of an nginx if as legate's route condition (if = "..."):
 * "$v", "$v = text", "$v != text", "$v ~ re", "~*", "!~", "!~*".  NULL with
 * *why for the rest: file tests (-f, -d, -e, -x), a left side that is not
 * one variable, text with spaces.
 */
static char *if_condition(const ngx_dir_t *d, const char **why)
{
    const char *t[3];
    char first[256], last[256];
    int n = 0;
    for (int i = 1; i < d->nargs; i++) {
        const char *a = d->args[i];
        if (i == d->nargs - 1 && strcmp(a, ")") == 0)
            break;
        if (n == 3) {
            *why = "more than a variable, an operator and a value";
            return NULL;
        }
        t[n++] = a;
    }
    if (n == 0 || t[0][0] != '(') {
        *why = "cannot read the condition";
        return NULL;
    }
    snprintf(first, sizeof(first), "%s", t[0] + 1);
    t[0] = first;
    size_t ln = strlen(t[n - 1]);
    if (strcmp(d->args[d->nargs - 1], ")") != 0) {
        if (ln == 0 || t[n - 1][ln - 1] != ')') {
            *why = "cannot read the condition";
            return NULL;
        }
        snprintf(last, sizeof(last), "%.*s", (int)(ln - 1), t[n - 1]);
        t[n - 1] = last;
    }
    if (n == 2 || t[0][0] == '-' || (t[0][0] == '!' && t[0][1] == '-')) {
        *why = "file tests (-f, -d, -e, -x) are not in legate's conditions";
        return NULL;
    }
    const char *name = t[0] + 1;
    if (t[0][0] != '$' || name[0] == '\0' || strspn(name, "abcdefghijklmnopqrstuvwxyz"
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != strlen(name)) {
        *why = "the left side is not one variable";
        return NULL;
    }
    char *left = imp_template(t[0], why);
    if (left == NULL)
        return NULL;
    sb_t c = { 0 };
    imp_sb_add(&c, "", 0);
    imp_sb_str(&c, left);
    free(left);
    if (n == 1)
        return c.p;
    const char *op = t[1];
    char *right = NULL;
    if (strcmp(op, "=") == 0 || strcmp(op, "!=") == 0) {
        if (t[2][0] == '\0' || strpbrk(t[2], " \t")) {
            *why = "an empty value or one with spaces is not in legate's conditions";
            free(c.p);
            return NULL;
        }
        right = imp_template(t[2], why);
    } else if (strcmp(op, "~") == 0 || strcmp(op, "~*") == 0 || strcmp(op, "!~") == 0 ||
               strcmp(op, "!~*") == 0) {
        if (strpbrk(t[2], " \t")) {
            *why = "a regex with spaces is not in legate's conditions";
            free(c.p);
            return NULL;
        }
        right = imp_ere(t[2], 0, why);
    } else
        *why = "an operator legate's conditions do not have";
    if (right == NULL) {
        free(c.p);
        return NULL;
    }
    imp_sb_printf(&c, " %s %s", op, right);
    free(right);
    return c.p;
}

static int emit_action(imp_t *im, sb_t *b, int n, const level_t *lv, const char *match_kind,
                       const char *path);

/* The ifs of a location that only return: each a route of its own before
 * the location's, with the same match and the condition (nginx's return
 * in an if runs in the rewrite phase, before the location's access rules,
 * limits and headers, and so does this route, which has none of them). */
static void translate_ifs(imp_t *im, sb_t *routes, int *nroutes, const level_t *lv,
                          const ngx_dir_t *loc, const char *kind, const char *match)
{
    for (const ngx_dir_t *d = loc->block; d; d = d->next) {
        if (!imp_is(d, "if"))
            continue;
        if (!d->has_block || d->block == NULL || d->block->next || !imp_is(d->block, "return")) {
            imp_report(im, d, "only an if that just returns is translated: the block is left out");
            continue;
        }
        if (match == NULL) {
            imp_report(im, d, "in this location (named, or its route rewritten): the block is "
                              "left out");
            continue;
        }
        const char *why = NULL;
        char *cond = if_condition(d, &why);
        if (cond == NULL) {
            imp_report(im, d, "%s: the block is left out", why);
            continue;
        }
        const ngx_dir_t *ret = d->block;
        const char *text = ret->nargs >= 3 ? ret->args[2] : ret->nargs == 2 ? ret->args[1] : "";
        if (re_capture(text) && (strchr(cond, '~') || strstr(kind, "regex") == NULL)) {
            imp_report(im, d, "$1..$9 %s: the block is left out", strchr(cond, '~')
                       ? "of the if's regex are not set in legate" : "without a regex location");
            free(cond);
            continue;
        }
        level_t il = { .up = lv, .block = d->block, .self = d };
        sb_t body = { 0 };
        imp_sb_add(&body, "", 0);
        /* "regex" in the kind: $1..$9 are the location's captures, as in nginx */
        if (emit_action(im, &body, 5, &il, kind, match)) {
            imp_sb_str(routes, *nroutes ? ",\n" : "\n");
            imp_ind(routes, 4);
            imp_sb_str(routes, "{\n");
            imp_ind(routes, 5);
            imp_sb_printf(routes, "%s = ", kind);
            imp_sb_quote(routes, match);
            imp_sb_str(routes, ";\n");
            imp_kv_quoted(routes, 5, "if", cond);
            imp_sb_str(routes, body.p);
            imp_ind(routes, 4);
            imp_sb_str(routes, "}");
            (*nroutes)++;
        }
        free(body.p);
        free(cond);
    }
}

/* a path of nginx's as legate's: relative ones are below nginx's prefix */
static void abs_path(imp_t *im, sb_t *b, const char *p)
{
    if (p[0] != '/') {
        imp_sb_str(b, im->dir);
        imp_sb_str(b, "/");
    }
    imp_sb_str(b, p);
}

/*
 * root or alias, index and try_files -> a file route.  nginx serves files
 * from any location without another action; the translation does so where
 * the configuration says how (a root or alias at some level, or a
 * try_files), and from nginx's default root, html in its prefix, then.
 * A try_files whose last entry is a URI, not @name or =code, has that URI
 * as a file of the route and =404 after it.
 */
static int emit_files(imp_t *im, sb_t *b, int n, const level_t *lv, const char *match_kind)
{
    int in_loc = lv->self && imp_is(lv->self, "location");
    const ngx_dir_t *alias = in_loc ? imp_child(lv->block, "alias") : NULL;
    const ngx_dir_t *root = nginx_level_inherited(lv, "root");
    const ngx_dir_t *tf = in_loc ? imp_child(lv->block, "try_files") : NULL;
    if (alias == NULL && root == NULL && tf == NULL)
        return 0;
    if (alias && (alias->nargs != 2 || strchr(alias->args[1], '$'))) {
        imp_report(im, alias, "an alias with variables (or without a path) is not in legate: "
                              "left out");
        return 0;
    }
    if (alias && strstr(match_kind, "regex")) {
        imp_report(im, alias, "an alias in a regex location (with captures) is not in legate: "
                              "left out");
        return 0;
    }
    if (alias && strcmp(match_kind, "name") == 0) {
        imp_report(im, alias, "an alias in a named location: left out");
        return 0;
    }
    if (!alias && root && (root->nargs != 2 || strchr(root->args[1], '$'))) {
        imp_report(im, root, "a root with variables (or without a path) is not in legate: left out");
        return 0;
    }
    sb_t path = { 0 };
    imp_sb_add(&path, "", 0);
    abs_path(im, &path, alias ? alias->args[1] : root ? root->args[1] : "html");
    imp_kv_quoted(b, n, alias ? "alias" : "root", path.p);
    free(path.p);
    if (!alias && !root)
        imp_report(im, tf, "no root: nginx's default, html in its prefix, is written");
    static const char *const idx[] = { "index", NULL };
    const level_t *il = nginx_level_array(lv, idx);
    if (il) {
        sb_t list = { 0 };
        imp_sb_add(&list, "", 0);
        int nidx = 0;
        for (const ngx_dir_t *d = il->block; d; d = d->next) {
            if (!imp_is(d, "index"))
                continue;
            for (int i = 1; i < d->nargs; i++) {
                const char *f = d->args[i];
                if (strchr(f, '/') || strchr(f, '$') || strcmp(f, ".") == 0 || strcmp(f, "..") == 0) {
                    imp_report(im, d, "\"%s\": legate's index files are names in the directory: "
                                      "left out", f);
                    continue;
                }
                imp_sb_str(&list, nidx++ ? ", " : "");
                imp_sb_quote(&list, f);
            }
        }
        if (nidx) {
            imp_ind(b, n);
            imp_sb_printf(b, "index = [ %s ];\n", list.p);
        }
        free(list.p);
    }
    if (tf && tf->nargs < 3) {
        imp_report(im, tf, "needs a file and a fallback: left out");
        tf = NULL;
    }
    if (tf) {
        sb_t list = { 0 };
        imp_sb_add(&list, "", 0);
        int ok = 1;
        for (int i = 1; i < tf->nargs && ok; i++) {
            const char *a = tf->args[i];
            int last = i == tf->nargs - 1;
            if (last && a[0] == '@') {
                int known = 0;
                for (int k = 0; k < im->nnamed && !known; k++)
                    known = strcmp(im->named[k], a + 1) == 0;
                if (!known) {
                    imp_report(im, tf, "no location %s legate could take in this server: left out", a);
                    ok = 0;
                    break;
                }
                imp_sb_str(&list, ", ");
                imp_sb_quote(&list, a);
                continue;
            }
            if (last && a[0] == '=') {
                char *end;
                long code = strtol(a + 1, &end, 10);
                if (*end || end == a + 1 || code < 200 || code > 599) {
                    imp_report(im, tf, "\"%s\": legate's fallback status is 200 to 599: left out", a);
                    ok = 0;
                    break;
                }
                imp_sb_printf(&list, ", \"=%ld\"", code);
                continue;
            }
            const char *why = NULL;
            char *t = imp_template(a, &why);
            if (t == NULL || (t[0] != '/' && t[0] != '$')) {
                imp_report(im, tf, "\"%s\": %s: left out", a,
                           t ? "legate's entries start with / or a $variable" : why);
                free(t);
                ok = 0;
                break;
            }
            imp_sb_str(&list, i > 1 ? ", " : "");
            imp_sb_quote(&list, t);
            free(t);
            if (last) {
                imp_report(im, tf, "the last entry, \"%s\", is served as a file of this route "
                                   "(nginx looks the locations up again for it), else 404", a);
                imp_sb_str(&list, ", \"=404\"");
            }
        }
        if (ok) {
            imp_ind(b, n);
            imp_sb_printf(b, "try_files = [ %s ];\n", list.p);
        }
        free(list.p);
    }
    return 1;
}

/* the action of a location; 0 when it has none legate can take */
static int emit_action(imp_t *im, sb_t *b, int n, const level_t *lv, const char *match_kind,
                       const char *path)
{
    const ngx_dir_t *ret = imp_child(lv->block, "return");
    const ngx_dir_t *pp = imp_child(lv->block, "proxy_pass");
    if (ret) {
        int code;
        const char *text = NULL;
        if (ret->nargs == 2 && (strncmp(ret->args[1], "http://", 7) == 0 ||
                                strncmp(ret->args[1], "https://", 8) == 0 ||
                                ret->args[1][0] == '$')) {
            code = 302;
            text = ret->args[1];
        } else if (ret->nargs >= 2 && isdigit((unsigned char)ret->args[1][0])) {
            code = atoi(ret->args[1]);
            text = ret->nargs >= 3 ? ret->args[2] : NULL;
        } else {
            imp_report(im, ret, "cannot read it: left out");
            return 0;
        }
        if (code < 100 || code > 599 || code == 444) {
            if (code == 444)
                imp_report(im, ret, "444 (close without an answer) is not in legate: 403 instead");
            else {
                imp_report(im, ret, "status %d is not in legate: left out", code);
                return 0;
            }
            code = 403;
            text = NULL;
        }
        imp_ind(b, n);
        imp_sb_printf(b, "return = %d;\n", code);
        if (text && strstr(match_kind, "regex") == NULL && strpbrk(text, "$") &&
            re_capture(text)) {
            imp_report(im, ret, "$1..$9 without a regex location: the text is left out");
            text = NULL;
        }
        if (text) {
            const char *why = NULL;
            char *t = imp_template(text, &why);
            if (t == NULL)
                imp_report(im, ret, "%s: the text is left out", why);
            else {
                int redirect = code >= 300 && code <= 399;
                imp_kv_quoted(b, n, redirect ? "location" : "body", t);
                free(t);
            }
        }
        if (pp)
            imp_report(im, pp, "after a return: never reached");
        return 1;
    }
    if (pp == NULL)
        return emit_files(im, b, n, lv, match_kind);
    if (lv->self && imp_is(lv->self, "location") && imp_child(lv->block, "try_files"))
        imp_report(im, imp_child(lv->block, "try_files"), "beside a proxy_pass: left out (legate's "
                   "try_files is a file route's; put the proxy_pass in a named location)");
    if (pp->nargs != 2) {
        imp_report(im, pp, "takes one URL: left out");
        return 0;
    }
    const char *url = pp->args[1];
    if ((strncmp(url, "http://$", 8) == 0 || strncmp(url, "https://$", 9) == 0) &&
        strchr(url + 8, '/') == NULL) {
        return emit_split(im, b, n, pp, strchr(url, '$'));
    }
    const char *uri;
    int tls;
    const char *up = nginx_upstream_for(im, pp, url, &uri, &tls);
    if (up == NULL)
        return 0;
    imp_kv_quoted(b, n, "proxy_pass", up);
    next_upstream(im, lv, up);
    /* nginx's default Host upstream is $proxy_host; legate passes the client's */
    static const char *const psh[] = { "proxy_set_header", NULL };
    const level_t *hl = nginx_level_array(lv, psh);
    int host_set = 0;
    for (const ngx_dir_t *d = hl ? hl->block : NULL; d; d = d->next)
        if (imp_is(d, "proxy_set_header") && d->nargs >= 2 && strcasecmp(d->args[1], "Host") == 0)
            host_set = 1;
    if (!host_set)
        imp_report(im, pp, "without proxy_set_header Host nginx sends Host: $proxy_host (the "
                           "upstream's name); legate passes the client's Host");
    if (uri) {
        /* nginx replaces the matched prefix by the URI: a capture of the rest */
        if (strcmp(match_kind, "prefix") == 0 && strcmp(uri, path) != 0) {
            imp_report(im, pp, "the URI part replaces the prefix: written as a regex route, which "
                               "legate tries before prefixes");
            sb_t r = { 0 };
            imp_sb_add(&r, "", 0);
            imp_sb_str(&r, uri);
            imp_sb_str(&r, "$1");
            imp_kv_quoted(b, n, "rewrite", r.p);
            free(r.p);
            return 2;      /* the caller writes the match as a regex */
        } else if (strcmp(match_kind, "prefix") != 0 && strcmp(uri, "/") != 0) {
            imp_report(im, pp, "a URI part with a regex or exact location: the path is sent as is");
        }
    }
    return 1;
}

static void regex_escape(sb_t *b, const char *s)
{
    for (; *s; s++) {
        if (strchr(".[]()*+?{}|^$\\", *s))
            imp_sb_add(b, "\\", 1);
        imp_sb_add(b, s, 1);
    }
}

static void translate_rewrite(imp_t *im, sb_t *routes, int *nroutes, const ngx_dir_t *d);

/* a location and its nested ones -> routes */
static void translate_location(imp_t *im, sb_t *routes, int *nroutes, const level_t *up,
                               const ngx_dir_t *loc)
{
    level_t lv = { .up = up, .block = loc->block, .self = loc };
    const char *kind, *path;
    int icase = 0;
    if (loc->nargs == 2 && loc->args[1][0] == '@') {
        /* a route reached only by try_files' @name */
        const char *nm = loc->args[1] + 1;
        if (nm[0] == '\0' || strspn(nm, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_-") != strlen(nm) || strlen(nm) >= 64) {
            imp_report(im, loc, "legate's route names are letters, digits, '_' and '-': left out");
            return;
        }
        if (up->self && imp_is(up->self, "location")) {
            imp_report(im, loc, "a named location inside another (nginx refuses it): left out");
            return;
        }
        for (int k = 0; k < im->nnamed; k++)
            if (strcmp(im->named[k], nm) == 0) {
                imp_report(im, loc, "a second location @%s (nginx refuses it): left out", nm);
                return;
            }
        kind = "name";
        path = nm;
    } else if (loc->nargs == 3 && strcmp(loc->args[1], "=") == 0) {
        kind = "exact";
        path = loc->args[2];
    } else if (loc->nargs == 3 && strcmp(loc->args[1], "^~") == 0) {
        kind = "prefix";
        path = loc->args[2];
        imp_report(im, loc, "^~ (no regex after this prefix): legate tries regex routes before "
                            "prefixes whatever the prefix");
    } else if (loc->nargs == 3 && (strcmp(loc->args[1], "~") == 0 ||
                                   strcmp(loc->args[1], "~*") == 0)) {
        icase = loc->args[1][1] == '*';
        kind = icase ? "iregex" : "regex";      /* legate's iregex: nginx's ~* */
        path = loc->args[2];
    } else if (loc->nargs == 2) {
        kind = "prefix";
        path = loc->args[1];
    } else {
        imp_report(im, loc, "cannot read its match: left out");
        return;
    }
    int internal = imp_child(loc->block, "internal") != NULL;
    if (internal)
        imp_report(im, imp_child(loc->block, "internal"), "an internal location is not a route in "
                   "legate (auth_request asks its upstream directly): it answers 404, as in nginx");
    char *ere = NULL;
    if (strstr(kind, "regex")) {
        const char *why = NULL;
        ere = imp_ere(path, 0, &why);
        if (ere == NULL) {
            imp_report(im, loc, "\"%s\": %s: left out", path, why);
            return;
        }
    } else if (path[0] != '/' && strcmp(kind, "name") != 0) {
        imp_report(im, loc, "a path that does not start with / is not in legate: left out");
        return;
    }
    /* the common rewrites of a location: "rewrite RE /path break;" before a
     * proxy_pass (the route becomes that regex, the path sent upstream its
     * replacement), and redirecting ones (a route of their own) */
    const ngx_dir_t *loc_rw = NULL, *loc_redirect = NULL;
    char *rw_re = NULL, *rw_to = NULL;
    int nrw = 0;
    for (const ngx_dir_t *d = internal ? NULL : loc->block; d; d = d->next)
        if (imp_is(d, "rewrite"))
            nrw++;
    if (strcmp(kind, "name") == 0)
        nrw = 0;    /* a named route has no path to match a rewrite's regex against */
    for (const ngx_dir_t *d = nrw == 1 ? loc->block : NULL; d; d = d->next) {
        if (!imp_is(d, "rewrite") || d->nargs < 3)
            continue;
        const char *flag = d->nargs >= 4 ? d->args[3] : "";
        const char *rep = d->args[2];
        int url = strncmp(rep, "http://", 7) == 0 || strncmp(rep, "https://", 8) == 0 ||
                  strncmp(rep, "$scheme", 7) == 0;
        if (strcmp(flag, "permanent") == 0 || strcmp(flag, "redirect") == 0 || url) {
            loc_redirect = d;
            translate_rewrite(im, routes, nroutes, d);
            imp_report(im, d, "a redirect of this location is a regex route of its own: legate tries "
                              "it for every path the regex matches");
        } else if ((strcmp(flag, "break") == 0 || strcmp(flag, "last") == 0) &&
                   imp_child(loc->block, "proxy_pass") && !imp_child(loc->block, "return")) {
            const char *why = NULL;
            rw_re = imp_ere(d->args[1], 0, &why);
            if (rw_re == NULL) {
                imp_report(im, d, "\"%s\": %s: left out", d->args[1], why);
                continue;
            }
            rw_to = imp_template(rep, &why);
            if (rw_to == NULL) {
                imp_report(im, d, "%s: left out", why);
                free(rw_re);
                rw_re = NULL;
                continue;
            }
            loc_rw = d;
            imp_report(im, d, "the route is this regex, with the replacement as the path sent "
                              "upstream: paths of the location it does not match go to other "
                              "routes%s", strcmp(flag, "last") == 0 ? " (and legate does not "
                              "search the locations again, as last does)" : "");
        }
    }
    for (const ngx_dir_t *d = internal ? NULL : loc->block; d; d = d->next) {
        const char *why = nginx_level_ignored(d->args[0]);
        if (imp_is(d, "location") || imp_is(d, "return") || imp_is(d, "proxy_pass"))
            continue;
        if (why)
            imp_report(im, d, "not translated: %s", why);
        else if (imp_is(d, "rewrite") && d != loc_rw && d != loc_redirect)
            imp_report(im, d, "only one rewrite ... break|last with a proxy_pass, or a redirecting "
                              "one, is translated in a location: left out");
        else if (imp_is(d, "if")) {
            /* below, with the route */
        } else if (imp_is(d, "internal")) {
            /* handled above */
        }
        else if (!nginx_level_handled(d->args[0]))
            imp_report(im, d, "not translated: legate has no such setting");
        else if (imp_is(d, "ssl_certificate") || imp_is(d, "listen") || imp_is(d, "server_name"))
            imp_report(im, d, "not allowed in a location");
    }
    sb_t body = { 0 };
    imp_sb_add(&body, "", 0);
    int act;
    if (internal) {
        imp_ind(&body, 5);
        imp_sb_str(&body, "return = 404;\n");
        act = 1;
    } else
        act = emit_action(im, &body, 5, &lv, kind, path);
    if (act == 2 && loc_rw) {
        imp_report(im, loc_rw, "with a proxy_pass URI as well: left out");
        free(rw_re);
        free(rw_to);
        rw_re = rw_to = NULL;
        loc_rw = NULL;
    }
    if (act == 1 && loc_rw) {
        imp_kv_quoted(&body, 5, "rewrite", rw_to);
        act = 3;
    }
    if (act && !internal) {
        nginx_level_scalars(im, &body, 5, loc->block, 1);
        nginx_level_arrays(im, &body, 5, &lv);
        nginx_level_auth_request(im, &body, 5, &lv);
    }
    if (!internal)
        translate_ifs(im, routes, nroutes, &lv, loc, kind,
                      strcmp(kind, "name") == 0 || act == 2 || act == 3 ? NULL : ere ? ere : path);
    if (act) {
        imp_sb_str(routes, *nroutes ? ",\n" : "\n");
        imp_ind(routes, 4);
        imp_sb_str(routes, "{\n");
        imp_ind(routes, 5);
        if (act == 3) {
            imp_sb_str(routes, "regex = ");
            imp_sb_quote(routes, rw_re);
        } else if (act == 2) {
            sb_t r = { 0 };
            imp_sb_add(&r, "", 0);
            imp_sb_str(&r, "^");
            regex_escape(&r, path);
            imp_sb_str(&r, "(.*)$");
            imp_sb_str(routes, "regex = ");
            imp_sb_quote(routes, r.p);
            free(r.p);
        } else {
            imp_sb_printf(routes, "%s = ", kind);
            imp_sb_quote(routes, ere ? ere : path);
        }
        imp_sb_str(routes, ";\n");
        imp_sb_str(routes, body.p);
        imp_ind(routes, 4);
        imp_sb_str(routes, "}");
        (*nroutes)++;
        if (strcmp(kind, "name") == 0 && im->nnamed < (int)(sizeof(im->named) / sizeof(im->named[0])))
            snprintf(im->named[im->nnamed++], sizeof(im->named[0]), "%s", path);
    } else if (imp_child(loc->block, "location") == NULL) {
        imp_report(im, loc, "no proxy_pass or return legate can take: no route (legate answers 404)");
    }
    free(body.p);
    free(ere);
    free(rw_re);
    free(rw_to);
    for (const ngx_dir_t *d = loc->block; d; d = d->next)
        if (imp_is(d, "location") && d->has_block)
            translate_location(im, routes, nroutes, &lv, d);
}

/* a server-level rewrite that redirects -> a regex route */
static void translate_rewrite(imp_t *im, sb_t *routes, int *nroutes, const ngx_dir_t *d)
{
    if (d->nargs < 3) {
        imp_report(im, d, "takes a regex and a replacement: left out");
        return;
    }
    const char *flag = d->nargs >= 4 ? d->args[3] : "";
    const char *rep = d->args[2];
    int code;
    if (strcmp(flag, "permanent") == 0)
        code = 301;
    else if (strcmp(flag, "redirect") == 0 || strncmp(rep, "http://", 7) == 0 ||
             strncmp(rep, "https://", 8) == 0 || strncmp(rep, "$scheme", 7) == 0)
        code = 302;
    else {
        imp_report(im, d, "only redirecting rewrites (permanent, redirect, or to a URL) are "
                          "translated at server level: left out");
        return;
    }
    const char *why = NULL;
    char *ere = imp_ere(d->args[1], 0, &why);
    if (ere == NULL) {
        imp_report(im, d, "\"%s\": %s: left out", d->args[1], why);
        return;
    }
    sb_t r = { 0 };
    imp_sb_add(&r, "", 0);
    size_t rl = strlen(rep);
    int keep_query = !(rl > 0 && rep[rl - 1] == '?');
    imp_sb_add(&r, rep, keep_query ? rl : rl - 1);
    if (keep_query) {
        imp_report(im, d, "nginx appends the query string to the redirect; legate's location is "
                          "sent as written");
    }
    char *t = imp_template(r.p, &why);
    free(r.p);
    if (t == NULL) {
        imp_report(im, d, "%s: left out", why);
        free(ere);
        return;
    }
    imp_sb_str(routes, *nroutes ? ",\n" : "\n");
    imp_ind(routes, 4);
    imp_sb_str(routes, "{ regex = ");
    imp_sb_quote(routes, ere);
    imp_sb_printf(routes, "; return = %d; location = ", code);
    imp_sb_quote(routes, t);
    imp_sb_str(routes, "; }");
    (*nroutes)++;
    free(t);
    free(ere);
}

typedef struct tls_conf {
    const ngx_dir_t *certs[8], *keys[8];
    int ncerts, nkeys;
} tls_conf_t;

static void collect_tls(const ngx_dir_t *block, tls_conf_t *t)
{
    int c = 0, k = 0;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (imp_is(d, "ssl_certificate"))
            c++;
        if (imp_is(d, "ssl_certificate_key"))
            k++;
    }
    if (c == 0 && k == 0)
        return;
    t->ncerts = t->nkeys = 0;   /* nginx: a level with any replaces the outer ones */
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (imp_is(d, "ssl_certificate") && t->ncerts < 8 && d->nargs == 2)
            t->certs[t->ncerts++] = d;
        if (imp_is(d, "ssl_certificate_key") && t->nkeys < 8 && d->nargs == 2)
            t->keys[t->nkeys++] = d;
    }
}

/* An nginx listen address as legate writes it: "80", "*:80", "host" get
 * nginx's defaults (every address, port 80). */
void nginx_server_listen_addr(const char *a, char *addr, size_t len)
{
    if (strncmp(a, "unix:", 5) == 0)
        snprintf(addr, len, "%s", a);
    else if (strspn(a, "0123456789") == strlen(a))
        snprintf(addr, len, "0.0.0.0:%s", a);
    else if (a[0] == '*' && a[1] == ':')
        snprintf(addr, len, "0.0.0.0:%s", a + 2);
    else if (strchr(a, ':') == NULL || (a[0] == '[' && strstr(a, "]:") == NULL))
        snprintf(addr, len, "%s:80", a);
    else
        snprintf(addr, len, "%s", a);
}

static int listen_has(const ngx_dir_t *d, const char *opt)
{
    for (int i = 2; i < d->nargs; i++)
        if (strcmp(d->args[i], opt) == 0)
            return 1;
    return 0;
}

/* a "listen ADDR ssl" in the block */
static int ssl_listen_at(const ngx_dir_t *block, const char *addr)
{
    char a[300];
    for (const ngx_dir_t *d = block; d; d = d->next)
        if (imp_is(d, "listen") && d->nargs >= 2 && listen_has(d, "ssl") && !listen_has(d, "quic")) {
            nginx_server_listen_addr(d->args[1], a, sizeof(a));
            if (strcmp(a, addr) == 0)
                return 1;
        }
    return 0;
}

/* Whether a server of http listens with quic on addr.  nginx's UDP socket
 * serves every server of the address, and legate wants quic the same in
 * every server that lists it: the answer is the same for all of them. */
static int quic_at(imp_t *im, const char *addr)
{
    char a[300];
    if (im->http == NULL)
        return 0;
    for (const ngx_dir_t *s = im->http->block; s; s = s->next) {
        if (!imp_is(s, "server") || !s->has_block)
            continue;
        for (const ngx_dir_t *d = s->block; d; d = d->next)
            if (imp_is(d, "listen") && d->nargs >= 2 && listen_has(d, "quic")) {
                nginx_server_listen_addr(d->args[1], a, sizeof(a));
                if (strcmp(a, addr) == 0)
#ifdef LG_HAVE_HTTP3
                    return 1;
#else
                {
                    imp_report(im, d, "this legate is built without HTTP/3: left out");
                    return 0;
                }
#endif
            }
    }
    return 0;
}

void nginx_server_translate(imp_t *im, sb_t *out, const level_t *http, const ngx_dir_t *srv)
{
    level_t lv = { .up = http, .block = srv->block, .self = srv };
    sb_t b = { 0 };
    imp_sb_add(&b, "", 0);
    im->server = srv;
    /* TLS first: a server whose certificates cannot be read loses its ssl listens */
    tls_conf_t tls = { 0 };
    if (http)
        collect_tls(http->block, &tls);
    collect_tls(srv->block, &tls);
    int tls_ok = tls.ncerts > 0 && tls.ncerts == tls.nkeys;
    char certs[8][PATH_MAX], keys[8][PATH_MAX];
    for (int i = 0; tls_ok && i < tls.ncerts; i++) {
        if (strncmp(tls.certs[i]->args[1], "data:", 5) == 0 ||
            strchr(tls.certs[i]->args[1], '$')) {
            imp_report(im, tls.certs[i], "certificates from variables or data: are not in legate");
            tls_ok = 0;
        } else if (!imp_file_readable(im, tls.certs[i], tls.certs[i]->args[1], certs[i], PATH_MAX) ||
                   !imp_file_readable(im, tls.keys[i], tls.keys[i]->args[1], keys[i], PATH_MAX))
            tls_ok = 0;
    }
    if (tls.ncerts != tls.nkeys)
        imp_report(im, srv, "as many ssl_certificate_key as ssl_certificate are needed: no TLS");

    /* listen */
    im->server_quic = 0;
    sb_t ls = { 0 };
    imp_sb_add(&ls, "", 0);
    int nlisten = 0, any_tls = 0;
    char seen_addr[32][300];
    /* nginx 1.25's "http2 on;" turns HTTP/2 on for every address of the server */
    const ngx_dir_t *h2d = imp_child(srv->block, "http2");
    int srv_h2 = h2d && h2d->nargs >= 2 && strcmp(h2d->args[1], "on") == 0;
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        if (!imp_is(d, "listen"))
            continue;
        if (d->nargs < 2) {
            imp_report(im, d, "needs an address: left out");
            continue;
        }
        char addr[300];
        nginx_server_listen_addr(d->args[1], addr, sizeof(addr));
        int ssl = 0, pp = 0, def = 0, h2 = srv_h2;
        long backlog = 0;
        for (int i = 2; i < d->nargs; i++) {
            const char *o = d->args[i];
            if (strcmp(o, "ssl") == 0) ssl = 1;
            else if (strcmp(o, "proxy_protocol") == 0) pp = 1;
            else if (strcmp(o, "default_server") == 0 || strcmp(o, "default") == 0) def = 1;
            else if (strncmp(o, "backlog=", 8) == 0) backlog = atol(o + 8);
            else if (strcmp(o, "http2") == 0)
                h2 = 1;
            else if (strcmp(o, "reuseport") == 0 || strcmp(o, "deferred") == 0 ||
                     strcmp(o, "bind") == 0 || strncmp(o, "ipv6only=", 9) == 0 ||
                     strncmp(o, "so_keepalive", 12) == 0 || strncmp(o, "fastopen", 8) == 0 ||
                     strncmp(o, "rcvbuf", 6) == 0 || strncmp(o, "sndbuf", 6) == 0)
                ; /* legate: SO_REUSEPORT sockets per worker, bound separately */
            else if (strcmp(o, "quic") == 0) {
                /* legate's QUIC is the UDP twin of a TLS listen (quic = true
                 * on it, written there): this UDP address is not one of its own */
                if (!ssl_listen_at(srv->block, addr))
                    imp_report(im, d, "legate runs QUIC beside a TLS listen of the same "
                                      "address (listen %s ssl): left out", d->args[1]);
                ssl = -1;
            } else
                imp_report(im, d, "\"%s\" is not in legate: ignored", o);
        }
        if (ssl < 0)
            continue;
        if (ssl && !tls_ok) {
            imp_report(im, d, "ssl without certificates legate can read: this address is left out");
            continue;
        }
        int dup = 0;
        for (int k = 0; k < nlisten && !dup; k++)
            dup = strcmp(seen_addr[k], addr) == 0;
        if (dup) {
            imp_report(im, d, "%s is listed twice in this server (nginx refuses it): left out", addr);
            continue;
        }
        if (nlisten < 32)
            snprintf(seen_addr[nlisten], sizeof(seen_addr[0]), "%s", addr);
        else {
            imp_report(im, d, "more than 32 addresses: left out");
            continue;
        }
        any_tls |= ssl;
        imp_sb_str(&ls, nlisten++ ? ", " : "");
        if (!ssl && !pp && !def && !backlog && !h2)
            imp_sb_quote(&ls, addr);
        else {
            imp_sb_str(&ls, "{ address = ");
            imp_sb_quote(&ls, addr);
            imp_sb_str(&ls, ";");
            if (ssl) imp_sb_str(&ls, " tls = true;");
            if (pp) imp_sb_str(&ls, " proxy_protocol = true;");
            if (def) imp_sb_str(&ls, " default = true;");
            if (backlog > 0) imp_sb_printf(&ls, " backlog = %ld;", backlog);
            if (h2) imp_sb_str(&ls, " http2 = true;");
            if (ssl && quic_at(im, addr)) {
                imp_sb_str(&ls, " quic = true;");
                im->server_quic = 1;
            }
            imp_sb_str(&ls, " }");
        }
    }
    if (nlisten == 0) {
        if (imp_child(srv->block, "listen") == NULL) {
            imp_sb_quote(&ls, "0.0.0.0:80");
            nlisten = 1;
            imp_report(im, srv, "no listen: nginx's default *:80 is written");
        } else {
            imp_report(im, srv, "no address left to listen on: the server is left out");
            free(ls.p);
            free(b.p);
            return;
        }
    }
    imp_ind(&b, 3);
    imp_sb_printf(&b, "listen = ( %s );\n", ls.p);
    free(ls.p);

    /* server_name */
    const ngx_dir_t *sn = imp_child(srv->block, "server_name");
    if (sn) {
        sb_t names = { 0 };
        int k = 0;
        for (int i = 1; i < sn->nargs; i++) {
            const char *nm = sn->args[i];
            if (strcmp(nm, "_") == 0 || nm[0] == '\0' || strcmp(nm, "\"\"") == 0 ||
                strcmp(nm, "$hostname") == 0)
                continue;
            if (names.n == 0)
                imp_sb_add(&names, "", 0);
            if (nm[0] == '~') {
                const char *why = NULL;
                char *e = imp_ere(nm + 1, 1, &why);
                if (e == NULL) {
                    imp_report(im, sn, "\"%s\": %s: left out", nm, why);
                    continue;
                }
                sb_t t = { 0 };
                imp_sb_add(&t, "~", 1);
                imp_sb_str(&t, e);
                imp_sb_str(&names, k++ ? ", " : "");
                imp_sb_quote(&names, t.p);
                free(t.p);
                free(e);
            } else if (nm[0] == '.') {
                imp_sb_str(&names, k++ ? ", " : "");
                imp_sb_quote(&names, nm + 1);
                char w[300];
                snprintf(w, sizeof(w), "*%s", nm);
                imp_sb_str(&names, ", ");
                imp_sb_quote(&names, w);
                k++;
            } else {
                imp_sb_str(&names, k++ ? ", " : "");
                imp_sb_quote(&names, nm);
            }
        }
        if (k) {
            imp_ind(&b, 3);
            imp_sb_printf(&b, "server_name = [ %s ];\n", names.p);
        }
        free(names.p);
    }
    if (any_tls) {
        imp_ind(&b, 3);
        imp_sb_str(&b, "tls_certificates = (");
        for (int i = 0; i < tls.ncerts; i++) {
            imp_sb_str(&b, i ? ", " : " ");
            imp_sb_str(&b, "{ cert = ");
            imp_sb_quote(&b, certs[i]);
            imp_sb_str(&b, "; key = ");
            imp_sb_quote(&b, keys[i]);
            imp_sb_str(&b, "; }");
        }
        imp_sb_str(&b, " );\n");
        const ngx_dir_t *d;
        if ((d = nginx_level_inherited(&lv, "ssl_protocols")) != NULL) {
            sb_t p = { 0 };
            imp_sb_add(&p, "", 0);
            for (int i = 1; i < d->nargs; i++) {
                if (strcmp(d->args[i], "TLSv1") == 0 || strcmp(d->args[i], "TLSv1.1") == 0 ||
                    strcmp(d->args[i], "SSLv3") == 0 || strcmp(d->args[i], "SSLv2") == 0) {
                    imp_report(im, d, "%s is not offered by legate (TLS 1.2 and 1.3 only)", d->args[i]);
                    continue;
                }
                if (p.n)
                    imp_sb_str(&p, " ");
                imp_sb_str(&p, d->args[i]);
            }
            if (p.n)
                imp_kv_quoted(&b, 3, "tls_protocols", p.p);
            free(p.p);
        }
        if ((d = nginx_level_inherited(&lv, "ssl_ciphers")) != NULL && d->nargs == 2)
            imp_kv_quoted(&b, 3, "tls_ciphers", d->args[1]);
        if ((d = nginx_level_inherited(&lv, "ssl_session_timeout")) != NULL && d->nargs == 2) {
            long long ms = imp_time_ms(d->args[1]);
            if (ms > 0) {
                imp_ind(&b, 3);
                imp_sb_str(&b, "tls_session_timeout = ");
                imp_sb_duration(&b, ms);
                imp_sb_str(&b, ";\n");
            }
        }
        if ((d = nginx_level_inherited(&lv, "ssl_session_tickets")) != NULL && d->nargs == 2) {
            imp_ind(&b, 3);
            imp_sb_printf(&b, "tls_session_tickets = %s;\n",
                          strcmp(d->args[1], "off") == 0 ? "false" : "true");
        }
        char path[PATH_MAX];
        if ((d = nginx_level_inherited(&lv, "ssl_client_certificate")) != NULL && d->nargs == 2 &&
            imp_file_readable(im, d, d->args[1], path, sizeof(path))) {
            imp_kv_quoted(&b, 3, "tls_client_ca", path);
            const ngx_dir_t *v = nginx_level_inherited(&lv, "ssl_verify_client");
            if (v && v->nargs == 2)
                imp_kv_quoted(&b, 3, "tls_verify_client", v->args[1]);
            if ((v = nginx_level_inherited(&lv, "ssl_verify_depth")) != NULL && v->nargs == 2) {
                imp_ind(&b, 3);
                imp_sb_printf(&b, "tls_verify_depth = %ld;\n", atol(v->args[1]));
            }
        }
        if ((d = nginx_level_inherited(&lv, "ssl_stapling_file")) != NULL && d->nargs == 2 &&
            imp_file_readable(im, d, d->args[1], path, sizeof(path)))
            imp_kv_quoted(&b, 3, "tls_ocsp_response", path);
        /* HSTS from add_header at server (or http) level */
        for (const level_t *l = &lv; l; l = l->up)
            for (const ngx_dir_t *h = l->block; h; h = h->next)
                if (imp_is(h, "add_header") && h->nargs >= 3 &&
                    strcasecmp(h->args[1], "Strict-Transport-Security") == 0) {
                    imp_kv_quoted(&b, 3, "hsts", h->args[2]);
                    goto hsts_done;
                }
    hsts_done:;
    }
    /* real_ip (server settings in legate) */
    {
        const level_t *rl = NULL;
        static const char *const rif[] = { "set_real_ip_from", NULL };
        if ((rl = nginx_level_array(&lv, rif)) != NULL) {
            imp_ind(&b, 3);
            imp_sb_str(&b, "real_ip_from = [");
            int k = 0;
            for (const ngx_dir_t *d = rl->block; d; d = d->next)
                if (imp_is(d, "set_real_ip_from") && d->nargs == 2) {
                    if (strncmp(d->args[1], "unix:", 5) == 0) {
                        imp_report(im, d, "unix: is not in legate: left out");
                        continue;
                    }
                    imp_sb_str(&b, k++ ? ", " : " ");
                    imp_sb_quote(&b, d->args[1]);
                }
            imp_sb_str(&b, " ];\n");
            const ngx_dir_t *h = nginx_level_inherited(&lv, "real_ip_header");
            if (h && h->nargs == 2) {
                if (strcmp(h->args[1], "proxy_protocol") == 0)
                    imp_report(im, h, "legate takes the PROXY protocol address itself (listen "
                                      "proxy_protocol)");
                else
                    imp_kv_quoted(&b, 3, "real_ip_header", h->args[1]);
            }
        }
    }
    nginx_level_scalars(im, &b, 3, srv->block, 0);
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        const char *why = nginx_level_ignored(d->args[0]);
        if (imp_is(d, "location") || imp_is(d, "listen") || imp_is(d, "server_name") || imp_is(d, "return") ||
            imp_is(d, "rewrite"))
            continue;
        if (why)
            imp_report(im, d, "not translated: %s", why);
        else if (imp_is(d, "if"))
            imp_report(im, d, "\"if\" is not in legate: the block is left out");
        else if (imp_is(d, "proxy_pass"))
            imp_report(im, d, "not allowed here in nginx either: left out");
        else if (!nginx_level_handled(d->args[0]))
            imp_report(im, d, "not translated: legate has no such setting");
    }

    /* routes: server-level rewrites and return first, as nginx's rewrite phase */
    sb_t routes = { 0 };
    imp_sb_add(&routes, "", 0);
    int nroutes = 0;
    const ngx_dir_t *ret = NULL;
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        if (imp_is(d, "rewrite"))
            translate_rewrite(im, &routes, &nroutes, d);
        if (imp_is(d, "return") && ret == NULL)
            ret = d;
    }
    if (ret) {
        /* answers everything before any location is chosen */
        sb_t body = { 0 };
        imp_sb_add(&body, "", 0);
        level_t only = { .up = &lv, .block = ret, .self = srv };
        ngx_dir_t one = *ret;
        one.next = NULL;
        only.block = &one;
        if (emit_action(im, &body, 5, &only, "prefix", "/")) {
            imp_sb_str(&routes, nroutes ? ",\n" : "\n");
            imp_ind(&routes, 4);
            imp_sb_str(&routes, "{\n");
            imp_ind(&routes, 5);
            imp_sb_str(&routes, "prefix = \"/\";\n");
            imp_sb_str(&routes, body.p);
            imp_ind(&routes, 4);
            imp_sb_str(&routes, "}");
            nroutes++;
        }
        free(body.p);
        if (imp_child(srv->block, "location"))
            imp_report(im, ret, "a server-level return answers before any location: the locations "
                                "are left out");
    } else {
        /* named locations first: a try_files names only those written */
        im->nnamed = 0;
        for (int named = 1; named >= 0; named--)
            for (const ngx_dir_t *d = srv->block; d; d = d->next)
                if (imp_is(d, "location") && d->has_block &&
                    (d->nargs == 2 && d->args[1][0] == '@') == named)
                    translate_location(im, &routes, &nroutes, &lv, d);
    }
    if (nroutes) {
        imp_ind(&b, 3);
        imp_sb_printf(&b, "routes = (%s\n", routes.p);
        imp_ind(&b, 3);
        imp_sb_str(&b, ");\n");
    }
    free(routes.p);
    imp_sb_str(out, im->nservers++ ? ",\n" : "\n");
    imp_ind(out, 2);
    imp_sb_printf(out, "{   # %s:%d\n", srv->file, srv->line);
    imp_sb_str(out, b.p);
    imp_ind(out, 2);
    imp_sb_str(out, "}");
    free(b.p);
}

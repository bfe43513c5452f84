/*
 * The loader's readers of structured values (part of the loader, see
 * load.c): header groups (add_*_headers), name and string lists, and the
 * "status ... rest" lists of cache_valid and error_pages, whose files are
 * read here.  load.c's set_value() dispatches to them by directive type.
 */
#include "conf/load_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar: what a header name may hold. */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return 0;
    }
    return 1;
}

/* A header value must not smuggle CR/LF (or any control byte but HTAB). */
static int is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int ld_set_headers(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'%s' must be a group of Name = \"value\" settings", d->name);
    int              n = config_setting_length(s), bad = 0;
    lg_header_ops_t *ops = ld_calloc(ld, 1, sizeof(*ops));
    if (ops == NULL || (n > 0 && (ops->v = ld_calloc(ld, (size_t)n, sizeof(*ops->v))) == NULL))
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *h = config_setting_get_elem(s, (unsigned)i);
        const char             *name = config_setting_name(h);
        if (config_setting_type(h) != CONFIG_TYPE_STRING) {
            bad = ld_error(ld, h, "header '%s' in '%s' must be a string", name, d->name);
            continue;
        }
        const char *value = config_setting_get_string(h);
        static const char *const framing[] = {
            "Connection", "Content-Length", "Transfer-Encoding", "Keep-Alive", "Upgrade", "TE",
            "Trailer", "Proxy-Connection", NULL,
        };
        int refused = 0;
        for (int f = 0; framing[f]; f++)
            refused |= strcasecmp(name, framing[f]) == 0;
        if (refused) {
            /* legate frames each message itself: a second opinion would
             * be a smuggling vector */
            bad = ld_error(ld, h, "'%s' cannot be set in '%s': legate writes the framing and "
                           "hop-by-hop headers itself", name, d->name);
            continue;
        }
        if (!is_field_value(value)) {   /* names: libconfig allows only tchars */
            bad = ld_error(ld, h, "header '%s' in '%s' has a control character in its value",
                           name, d->name);
            continue;
        }
        lg_header_op_t *op = &ops->v[ops->n];
        if ((op->name = ld_strdup(ld, name)) == NULL)
            return ld_oom(ld, s);
        if (ld_tpl(ld, h, d->name, value, &op->value) < 0) {
            bad = -1;
            continue;
        }
        ops->n++;
    }
    if (bad)
        return -1;
    *(lg_header_ops_t **)FIELD(d, base) = ops;
    return 0;
}

int ld_set_names(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    int single = config_setting_type(s) == CONFIG_TYPE_STRING;
    int plain = d->type == D_STRLIST;
    int paths = plain && d->keyword && strcmp(d->keyword, "paths") == 0;
    if (!single && !config_setting_is_array(s) && !config_setting_is_list(s))
        return ld_error(ld, s, plain ? "'%s' must be a string or a list of strings"
                                     : "'%s' must be a header name or a list of header names",
                        d->name);
    int words = plain && d->keyword && strcmp(d->keyword, "words") == 0;
    int        n = single ? 1 : config_setting_length(s), bad = 0;
    size_t     cap = (size_t)n;
    /* "text/html text/css" names two, so that run time never splits it */
    for (int i = 0; words && i < n; i++) {
        const char *v = config_setting_get_string(single ? s : config_setting_get_elem(s, (unsigned)i));
        for (; v && *v; v++)
            cap += *v == ' ' || *v == ',';
    }
    lg_strv_t *sv = ld_calloc(ld, 1, sizeof(*sv));
    if (sv == NULL || (cap > 0 && (sv->v = ld_calloc(ld, cap, sizeof(char *))) == NULL))
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = single ? s : config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            bad = ld_error(ld, e, plain ? "'%s' must be a string or a list of strings"
                                        : "'%s' must be a header name or a list of header names",
                           d->name);
            continue;
        }
        const char *v = config_setting_get_string(e);
        if (!plain && !is_token(v)) {
            bad = ld_error(ld, e, "'%s': '%s' is not a valid header name", d->name, v);
            continue;
        }
        if (words) {
            for (const char *p = v; *p;) {
                size_t k = strcspn(p, " ,");
                if (k && (sv->v[sv->n++] = lg_arena_strndup(&ld->conf->arena, p, k)) == NULL)
                    return ld_oom(ld, s);
                p += k;
                p += *p != '\0';
            }
            continue;
        }
        if ((sv->v[sv->n++] = paths ? ld_resolve_path(ld, v) : ld_strdup(ld, v)) == NULL)
            return ld_oom(ld, s);
    }
    if (bad)
        return -1;
    *(lg_strv_t **)FIELD(d, base) = sv;
    return 0;
}

/* cache_valid: "200 301 10m", "any 1m"; the first rule naming a status applies. */
const lg_errpage_t *lg_errpage_find(const lg_errpages_t *p, int status)
{
    for (size_t i = 0; p && i < p->n; i++)
        for (size_t k = 0; k < p->v[i].nstatus; k++)
            if (p->v[i].status[k] == status)
                return &p->v[i];
    return NULL;
}

/* A string-or-list setting read as a list of strings (cache_valid, error_pages). */
static lg_strv_t *strings_of(ld_t *ld, const directive_t *d, const config_setting_t *s)
{
    directive_t as_list = *d;
    lg_strv_t  *sv = NULL;
    as_list.type = D_STRLIST;
    as_list.off = 0;
    return ld_set_names(ld, &as_list, s, &sv) < 0 ? NULL : sv;
}

/*
 * The status codes of "404 500 ... REST" up to last (the REST is the
 * caller's), from min00 to 599, and "any" where allowed.  0, or -1 with the
 * error reported at e.
 */
static int statuses_of(ld_t *ld, const directive_t *d, const config_setting_t *e, const char *text,
                       const char *last, int min_class, int *any, int **out, size_t *n)
{
    if ((*out = ld_calloc(ld, strlen(text) / 2 + 1, sizeof(int))) == NULL)
        return ld_oom(ld, e);
    *n = 0;
    for (const char *p = text; p < last;) {
        size_t k = strcspn(p, " ");
        if (k > (size_t)(last - p))
            k = (size_t)(last - p);
        if (k == 3 && any && strncmp(p, "any", 3) == 0)
            *any = 1;
        else if (k == 3 && p[0] >= '0' + min_class && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' &&
                 p[2] >= '0' && p[2] <= '9')
            (*out)[(*n)++] = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        else if (k)
            return ld_error(ld, e, any ? "'%s': '%.*s' in \"%s\" is not a status code or any"
                                       : "'%s': '%.*s' in \"%s\" is not a status code from %d00 to 599",
                            d->name, (int)k, p, text, min_class);
        p += k + 1;
    }
    if ((any == NULL || !*any) && *n == 0)
        return ld_error(ld, e, any ? "'%s': \"%s\" names no status code (or any)"
                                   : "'%s': \"%s\" names no status code", d->name, text);
    return 0;
}

#define ERRPAGE_MAX (256 * 1024)

int ld_set_errpages(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    lg_strv_t *sv = strings_of(ld, d, s);
    if (sv == NULL)
        return -1;
    lg_errpages_t *ep = ld_calloc(ld, 1, sizeof(*ep));
    if (ep == NULL || (sv->n && (ep->v = ld_calloc(ld, sv->n, sizeof(*ep->v))) == NULL))
        return ld_oom(ld, s);
    int bad = 0;
    for (size_t i = 0; i < sv->n; i++) {
        const config_setting_t *e = ld_entry_at(s, (int)i);
        lg_errpage_t *pg = &ep->v[ep->n];
        const char *text = sv->v[i], *last = strrchr(text, ' ');
        pg->text = text;
        pg->code = -1;
        pg->line = e ? (int)config_setting_source_line(e) : 0;
        pg->file = ld_file_name(ld, e ? config_setting_source_file(e) : NULL);
        if (last == NULL || last[1] == 0) {
            bad = ld_error(ld, e, "'%s': \"%s\" must be status codes and a file or \"@route\"",
                           d->name, text);
            continue;
        }
        /* "=CODE" or "=" before the target (nginx's error_page 404 =200 ...) */
        const char *codes_end = last, *eq = last;
        while (eq > text && eq[-1] != ' ')
            eq--;
        if (eq < last && *eq == '=') {
            codes_end = eq > text ? eq - 1 : eq;
            if (eq + 1 == last) {
                pg->code = 0;
            } else {
                char *end;
                long c = strtol(eq + 1, &end, 10);
                if (end != last || c < 200 || c > 599) {
                    bad = ld_error(ld, e, "'%s': '%.*s' in \"%s\" must be \"=\" or \"=CODE\" "
                                   "with a status from 200 to 599", d->name, (int)(last - eq), eq,
                                   text);
                    continue;
                }
                pg->code = (int)c;
            }
        }
        if (statuses_of(ld, d, e, text, codes_end, 3, NULL, &pg->status, &pg->nstatus) < 0) {
            bad = -1;
            continue;
        }
        if (last[1] == '@') {
            /* a route of the server: found by name once the servers are read */
            if (last[2] == '\0') {
                bad = ld_error(ld, e, "'%s': \"%s\": '@' must be followed by a route's name",
                               d->name, text);
                continue;
            }
            pg->route = last + 2;
            ep->n++;
            continue;
        }
        if (pg->code == 0) {
            bad = ld_error(ld, e, "'%s': \"%s\": \"=\" alone (the route's own status) needs "
                           "\"@route\"; a file takes \"=CODE\"", d->name, text);
            continue;
        }
        char *path = ld_resolve_path(ld, last + 1);
        FILE *f = path ? fopen(path, "rb") : NULL;
        if (f == NULL) {
            bad = ld_error(ld, e, "'%s': cannot read \"%s\": %s", d->name, path ? path : last + 1,
                           strerror(errno));
            continue;
        }
        char *buf = lg_arena_alloc(&ld->conf->arena, ERRPAGE_MAX + 1);
        size_t n = buf ? fread(buf, 1, ERRPAGE_MAX + 1, f) : 0;
        fclose(f);
        if (buf == NULL)
            return ld_oom(ld, e);
        if (n > ERRPAGE_MAX) {
            bad = ld_error(ld, e, "'%s': \"%s\" is larger than 256k", d->name, path);
            continue;
        }
        buf[n] = 0;
        pg->body = buf;
        pg->len = n;
        const char *dot = strrchr(path, '.');
        pg->ctype = dot && (strcmp(dot, ".html") == 0 || strcmp(dot, ".htm") == 0)
                        ? "text/html; charset=utf-8"
                    : dot && strcmp(dot, ".json") == 0 ? "application/json" : "text/plain; charset=utf-8";
        ep->n++;
    }
    if (bad)
        return -1;
    *(lg_errpages_t **)FIELD(d, base) = ep;
    return 0;
}

/* The named route of srv, or NULL. */
static const lg_route_t *route_named(const lg_server_t *srv, const char *name)
{
    for (size_t i = 0; i < srv->nroutes; i++)
        if (srv->routes[i].name && strcmp(srv->routes[i].name, name) == 0)
            return &srv->routes[i];
    return NULL;
}

static void check_errpage_routes(ld_t *ld, const lg_server_t *srv, const lg_errpages_t *ep)
{
    for (size_t i = 0; ep && i < ep->n; i++) {
        const lg_errpage_t *pg = &ep->v[i];
        if (pg->route == NULL)
            continue;
        const lg_route_t *rt = route_named(srv, pg->route);
        if (rt == NULL)
            ld_error_at(ld, pg->file, pg->line, "'error_pages': \"%s\" names route '@%s', but "
                        "the server at line %d has no route with name = \"%s\"", pg->text,
                        pg->route, srv->line, pg->route);
        else if (rt->action == LG_ACTION_PROXY && rt->upstream == NULL)
            ld_error_at(ld, pg->file, pg->line, "'error_pages': \"%s\": route '@%s' (line %d) "
                        "splits between upstreams: an error page's route names one",
                        pg->text, pg->route, rt->line);
    }
}

/*
 * After the merge: every "@name" of the error_pages a server or one of its
 * routes uses names a route of that server (route names are the
 * server's, as try_files' "@name"; an http-level list is checked against
 * each server that inherits it).
 */
void ld_check_errpages(ld_t *ld, const lg_conf_t *conf)
{
    for (size_t i = 0; i < conf->nservers; i++) {
        const lg_server_t *srv = &conf->servers[i];
        if (srv->stream)
            continue;
        const lg_errpages_t *seen = srv->common.error_pages;
        check_errpage_routes(ld, srv, seen);
        for (size_t j = 0; j < srv->nroutes; j++)
            if (srv->routes[j].common.error_pages != seen)
                check_errpage_routes(ld, srv, srv->routes[j].common.error_pages);
    }
}

int ld_set_valid(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base)
{
    lg_strv_t *sv = strings_of(ld, d, s);
    if (sv == NULL)
        return -1;
    lg_valid_t *vl = ld_calloc(ld, 1, sizeof(*vl));
    if (vl == NULL || (sv->n && (vl->v = ld_calloc(ld, sv->n, sizeof(*vl->v))) == NULL))
        return ld_oom(ld, s);
    int bad = 0;
    for (size_t i = 0; i < sv->n; i++) {
        const config_setting_t *e = ld_entry_at(s, (int)i);
        lg_valid_rule_t *r = &vl->v[vl->n];
        const char *text = sv->v[i], *last = strrchr(text, ' ');
        r->text = sv->v[i];
        if (last == NULL || lg_parse_duration(last + 1, &r->ms) < 0) {
            bad = ld_error(ld, e, "'%s': \"%s\" must be status codes (or any) and a duration",
                           d->name, text);
            continue;
        }
        if (statuses_of(ld, d, e, text, last, 1, &r->any, &r->status, &r->nstatus) < 0)
            bad = -1;
        vl->n++;
    }
    if (bad)
        return -1;
    *(lg_valid_t **)FIELD(d, base) = vl;
    return 0;
}


/*
 * cache_use_stale = "error timeout updating http_500": nginx's
 * proxy_cache_use_stale, as a string or a list of its words, each checked
 * here so that a misspelt one is a FILE:LINE error, not a silent no.
 */
int ld_fn_cache_use_stale(ld_t *ld, const config_setting_t *s, void *base)
{
    static const directive_t d = {
        "cache_use_stale", D_STRLIST, 0, 0, "", offsetof(lg_common_t, cache_use_stale), "words", NULL,
    };
    static const char *const words[] = {
        "error", "timeout", "invalid_header", "updating", "http_500", "http_502", "http_503",
        "http_504", "http_403", "http_404", "http_429", "off", NULL,
    };
    if (ld_set_names(ld, &d, s, base) < 0)
        return -1;
    const lg_strv_t *sv = ((const lg_common_t *)base)->cache_use_stale;
    int rc = 0;
    for (size_t i = 0; i < sv->n; i++) {
        size_t k = 0;
        while (words[k] && strcmp(words[k], sv->v[i]) != 0)
            k++;
        if (words[k] == NULL)
            rc = ld_error(ld, s, "'cache_use_stale': unknown condition '%s' (error, timeout, "
                          "invalid_header, updating, http_500, http_502, http_503, http_504, "
                          "http_403, http_404, http_429, off)", sv->v[i]);
    }
    return rc;
}

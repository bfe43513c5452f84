/*
 * Routes: matchers, conditions, actions and canary splits (part of the
 * configuration loader, see load.c).
 */
#include "conf/load_int.h"
#include "core/relit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <regex.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

static int fn_match(ld_t *, const config_setting_t *, void *);
static int fn_proxy_pass(ld_t *, const config_setting_t *, void *);
static int fn_return(ld_t *, const config_setting_t *, void *);
static int fn_status(ld_t *, const config_setting_t *, void *);
static int fn_no_regex(ld_t *, const config_setting_t *, void *);
static int fn_route_string(ld_t *, const config_setting_t *, void *);
static int fn_route_hosts(ld_t *, const config_setting_t *, void *);
static int fn_route_methods(ld_t *, const config_setting_t *, void *);
static int fn_route_pair(ld_t *, const config_setting_t *, void *);
static int fn_split(ld_t *, const config_setting_t *, void *);
static int fn_countries(ld_t *, const config_setting_t *, void *);
static int fn_route_if(ld_t *, const config_setting_t *, void *);
static int fn_root(ld_t *, const config_setting_t *, void *);
static int fn_try_files(ld_t *, const config_setting_t *, void *);
static int fn_route_name(ld_t *, const config_setting_t *, void *);
static int fn_symlinks(ld_t *, const config_setting_t *, void *);
static int fn_index(ld_t *, const config_setting_t *, void *);

/* Route-level parse state: which settings appeared, for the checks at the end. */
typedef struct route_ctx {
    lg_route_t             *rt;
    const config_setting_t *matcher;
    const config_setting_t *action;
    const config_setting_t *body;
    const config_setting_t *location;
    const config_setting_t *rewrite;
    const config_setting_t *split;
    const config_setting_t *split_key;
    const config_setting_t *split_cookie;
    const config_setting_t *no_regex;
    const config_setting_t *try_files;
    const config_setting_t *index;
    const config_setting_t *symlinks;
    const config_setting_t *name;
    int                     matcher_ok; /* pattern valid (and compiled) */
    int                     status_ok;  /* 'return' status valid */
} route_ctx_t;

static const directive_t route_dirs[] = {
    CUSTOM("exact",      fn_match),
    CUSTOM("prefix",     fn_match),
    CUSTOM("path",       fn_match),     /* synonym of prefix */
    CUSTOM("regex",      fn_match),
    CUSTOM("iregex",     fn_match),     /* case-insensitive: nginx's ~* */
    CUSTOM("no_regex",   fn_no_regex),  /* a prefix that skips the regexes: nginx's ^~ */
    CUSTOM("proxy_pass", fn_proxy_pass),
    CUSTOM("return",     fn_return),
    CUSTOM("status",     fn_status),
    CUSTOM("body",       fn_route_string),
    CUSTOM("location",   fn_route_string),
    CUSTOM("rewrite",    fn_route_string),
    CUSTOM("host",       fn_route_hosts),
    CUSTOM("methods",    fn_route_methods),
    CUSTOM("header",     fn_route_pair),
    CUSTOM("query",      fn_route_pair),
    CUSTOM("if",         fn_route_if),
    CUSTOM("root",       fn_root),
    CUSTOM("alias",      fn_root),
    CUSTOM("index",      fn_index),
    CUSTOM("try_files",  fn_try_files),
    CUSTOM("name",       fn_route_name),
    CUSTOM("symlinks",   fn_symlinks),
    CUSTOM("split",      fn_split),
    CUSTOM("countries",  fn_countries),
    CUSTOM("split_key",  fn_route_string),
    CUSTOM("split_cookie", fn_route_string),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static int fn_match(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_route_t  *rt = rc->rt;
    const char  *kind = config_setting_name(s);
    const char  *v;

    if (rc->matcher != NULL)
        return ld_error(ld, s, "route has more than one of 'exact', 'prefix', 'regex', 'iregex' "
                        "('%s' and '%s')", config_setting_name(rc->matcher), kind);
    rc->matcher = s;
    if ((v = ld_get_string(ld, s)) == NULL)
        return -1;
    if ((rt->pattern = ld_strdup(ld, v)) == NULL)
        return ld_oom(ld, s);
    rt->pattern_len = strlen(v);
    if (strcmp(kind, "regex") == 0 || strcmp(kind, "iregex") == 0) {
        regex_t *re = ld_calloc(ld, 1, sizeof(*re));
        char     msg[256];
        int      err;

        if (re == NULL)
            return ld_oom(ld, s);
        rt->match = LG_MATCH_REGEX;
        if ((err = regcomp(re, v, REG_EXTENDED | (kind[0] == 'i' ? REG_ICASE : 0))) != 0) {
            regerror(err, re, msg, sizeof(msg));
            return ld_error(ld, s, "bad regex '%s': %s", v, msg);
        }
        rt->re = re;
        rt->icase = kind[0] == 'i';
        lg_relit_t rl;
        if (lg_relit_parse(&rl, v, rt->icase) != LG_RELIT_NONE) {
            if ((rt->relit = ld_calloc(ld, 1, sizeof(rl))) == NULL)
                return ld_oom(ld, s);
            *rt->relit = rl;
        }
        rc->matcher_ok = 1;
        return 0;
    }
    rt->match = strcmp(kind, "exact") == 0 ? LG_MATCH_EXACT : LG_MATCH_PREFIX;
    if (v[0] != '/')
        return ld_error(ld, s, "'%s' must start with '/'", kind);
    rc->matcher_ok = 1;
    return 0;
}

static int route_action(ld_t *ld, route_ctx_t *rc, const config_setting_t *s)
{
    if (rc->action != NULL)
        return ld_error(ld, s, "route has both '%s' and '%s'", config_setting_name(rc->action),
                        config_setting_name(s));
    rc->action = s;
    return 0;
}

static int fn_proxy_pass(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *v;

    if (route_action(ld, rc, s) < 0 || (v = ld_get_string(ld, s)) == NULL)
        return -1;
    rc->rt->action = LG_ACTION_PROXY;
    if ((rc->rt->upstream = ld_upstream_find(ld->conf, v)) == NULL)
        return ld_error(ld, s, "unknown upstream '%s' in 'proxy_pass'", v);
    return 0;
}

static int fn_no_regex(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return ld_error(ld, s, "'no_regex' must be true or false");
    rc->rt->no_regex = config_setting_get_bool(s);
    rc->no_regex = s;
    return 0;
}

static int fn_status(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *v;

    if (route_action(ld, rc, s) < 0 || (v = ld_get_string(ld, s)) == NULL)
        return -1;
    if (strcmp(v, "metrics") != 0 && strcmp(v, "json") != 0 && strcmp(v, "html") != 0)
        return ld_error(ld, s, "'status' must be \"metrics\", \"json\" or \"html\"");
    rc->rt->action = LG_ACTION_STATUS;
    if ((rc->rt->status_page = ld_strdup(ld, v)) == NULL)
        return ld_oom(ld, s);
    return 0;
}

static int fn_return(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int64_t      v;

    if (route_action(ld, rc, s) < 0)
        return -1;
    rc->rt->action = LG_ACTION_RETURN;
    if (ld_get_int(s, &v) < 0)
        return ld_error(ld, s, "'return' must be an integer");
    if (v < 100 || v > 599)
        return ld_error(ld, s, "'return' must be between 100 and 599");
    rc->rt->status = (int)v;
    rc->status_ok = 1;
    return 0;
}

/* body, location, rewrite: strings whose validity depends on the action. */
static int fn_route_string(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *name = config_setting_name(s), *v;
    char        *p;

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return ld_error(ld, s, "'%s' must be a string", name);
    v = config_setting_get_string(s);
    if (v[0] == '\0' && strcmp(name, "body") != 0)
        return ld_error(ld, s, "'%s' must not be empty", name);
    if (strcmp(name, "split_cookie") == 0) {
        if ((p = ld_strdup(ld, v)) == NULL)
            return ld_oom(ld, s);
        rc->split_cookie = s;
        rc->rt->split_cookie = p;
        for (const char *c = p; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
                return ld_error(ld, s, "'split_cookie' must be a cookie name (letters, digits, '_', '-')");
        return 0;
    }
    const config_setting_t **at;
    lg_tpl_t               **t;
    if (strcmp(name, "split_key") == 0) {
        at = &rc->split_key;
        t = &rc->rt->split_key;
    } else if (strcmp(name, "body") == 0) {
        at = &rc->body;
        t = &rc->rt->body;
    } else if (strcmp(name, "location") == 0) {
        at = &rc->location;
        t = &rc->rt->location;
    } else {
        at = &rc->rewrite;
        t = &rc->rt->rewrite;
        if (v[0] != '/' && v[0] != '$') {
            *at = s;
            return ld_error(ld, s, "'rewrite' must start with '/' or a $1..$9 capture");
        }
    }
    *at = s;
    return ld_tpl(ld, s, name, v, t);
}

static int fn_route_hosts(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_server_t  tmp = { 0 };       /* the same syntax and rules as server_name */
    int          r = ld_fn_server_name(ld, s, &tmp);
    rc->rt->hosts = tmp.names;
    rc->rt->nhosts = tmp.nnames;
    return r;
}

static int is_method(const char *m)
{
    for (; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return 0;
    return 1;
}

static int fn_route_methods(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    return ld_string_list(ld, s, "a method or a list of methods", is_method,
                          "method '%s' must be upper-case letters", &rc->rt->methods);
}

static regex_t *compile_re(ld_t *ld, const config_setting_t *s, const char *src, int icase)
{
    regex_t *re = ld_calloc(ld, 1, sizeof(*re));
    char     msg[256];
    int      err;
    if (re == NULL) {
        ld_oom(ld, s);
        return NULL;
    }
    if (src[0] == '\0') {
        ld_error(ld, s, "'%s' has an empty regex", config_setting_name(s));
        return NULL;
    }
    if ((err = regcomp(re, src, REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0))) != 0) {
        regerror(err, re, msg, sizeof(msg));
        ld_error(ld, s, "bad regex '%s' in '%s': %s", src, config_setting_name(s), msg);
        return NULL;
    }
    return re;
}

/*
 * header = "Name" | "Name: value" | "Name ~ re" | "Name ~* re";
 * query = "name" | "name=value"; either negated by a leading '!'.
 */
static int fn_route_pair(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int          is_header = strcmp(config_setting_name(s), "header") == 0;
    const char  *v = ld_get_string(ld, s);
    if (v == NULL)
        return -1;
    if (is_header)
        rc->rt->header_text = ld_strdup(ld, v);
    else
        rc->rt->query_text = ld_strdup(ld, v);
    int negate = v[0] == '!';
    if (negate)
        v++;
    if (is_header) {
        rc->rt->header_not = negate;
        const char *sp = strpbrk(v, " \t"), *colon = strchr(v, ':');
        if (sp && (colon == NULL || sp < colon)) {
            const char *op = sp;
            while (*op == ' ' || *op == '\t')
                op++;
            if (op[0] != '~')
                return ld_error(ld, s, "'header' must be \"Name\", \"Name: value\" or "
                                "\"Name ~ regex\" (\"~*\" ignores case), '!' first to negate");
            int icase = op[1] == '*';
            const char *re = op + 1 + icase;
            while (*re == ' ' || *re == '\t')
                re++;
            if ((rc->rt->header_name = lg_arena_strndup(&ld->conf->arena, v, (size_t)(sp - v))) == NULL)
                return ld_oom(ld, s);
            return (rc->rt->header_re = compile_re(ld, s, re, icase)) ? 0 : -1;
        }
    } else {
        rc->rt->query_not = negate;
    }
    const char *sep = strchr(v, is_header ? ':' : '=');
    size_t      nl = sep ? (size_t)(sep - v) : strlen(v);
    if (nl == 0)
        return ld_error(ld, s, "'%s' needs a name", config_setting_name(s));
    char *name = ld_calloc(ld, 1, nl + 1);
    if (name == NULL)
        return ld_oom(ld, s);
    memcpy(name, v, nl);
    char *value = NULL;
    if (sep) {
        const char *p = sep + 1;
        while (is_header && (*p == ' ' || *p == '\t'))
            p++;
        if ((value = ld_strdup(ld, p)) == NULL)
            return ld_oom(ld, s);
    }
    if (is_header) {
        for (size_t i = 0; i < nl; i++)
            if (name[i] == ' ' || name[i] == '\t')
                return ld_error(ld, s, "'header' must be \"Name\" or \"Name: value\"");
        rc->rt->header_name = name;
        rc->rt->header_value = value;
    } else {
        rc->rt->query_name = name;
        rc->rt->query_value = value;
    }
    return 0;
}

/*
 * if = [ "$var", "!$var", "$var = text", "$var != text", "$var ~ re",
 * "$var ~* re", "$var !~ re", "$var !~* re" ]: all must hold (nginx's if,
 * as a condition of the route rather than a block).
 */
static int cond_parse(ld_t *ld, const config_setting_t *s, const char *v, lg_cond_t *c)
{
    const char *p = v;
    if ((c->text = ld_strdup(ld, v)) == NULL)
        return ld_oom(ld, s);
    if (*p == '!') {
        c->negate = 1;
        p++;
    }
    if (*p != '$')
        return ld_error(ld, s, "'if' condition \"%s\" must start with a $variable "
                        "(\"$var\", \"!$var\", \"$var = text\", \"$var ~ regex\")", v);
    const char *le = strpbrk(p, " \t");
    char *left = lg_arena_strndup(&ld->conf->arena, p, le ? (size_t)(le - p) : strlen(p));
    if (left == NULL)
        return ld_oom(ld, s);
    if (ld_tpl(ld, s, "if", left, &c->left) < 0)
        return -1;
    if (le == NULL)
        return 0;                               /* "$var": true when not "" nor "0" */
    if (c->negate)
        return ld_error(ld, s, "'if' condition \"%s\": a leading '!' only negates a lone "
                        "$variable; write \"$var != text\" or \"$var !~ regex\"", v);
    const char *op = le;
    while (*op == ' ' || *op == '\t')
        op++;
    size_t ol = strcspn(op, " \t");
    const char *rhs = op + ol;
    while (*rhs == ' ' || *rhs == '\t')
        rhs++;
    if (ol == 1 && op[0] == '=') {
        c->op = LG_COND_EQ;
    } else if (ol == 2 && op[0] == '!' && op[1] == '=') {
        c->op = LG_COND_EQ;
        c->negate = 1;
    } else if ((ol == 1 || ol == 2) && op[0] == '~') {
        c->op = LG_COND_REGEX;
    } else if ((ol == 2 || ol == 3) && op[0] == '!' && op[1] == '~') {
        c->op = LG_COND_REGEX;
        c->negate = 1;
    } else {
        return ld_error(ld, s, "'if' condition \"%s\": unknown operator \"%.*s\" (=, !=, ~, ~*, "
                        "!~, !~*)", v, (int)ol, op);
    }
    if (c->op == LG_COND_EQ)
        return ld_tpl(ld, s, "if", rhs, &c->right);
    if (*rhs == '\0')
        return ld_error(ld, s, "'if' condition \"%s\" has no regex", v);
    return (c->re = compile_re(ld, s, rhs, op[ol - 1] == '*')) ? 0 : -1;
}

static int fn_route_if(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    int n = ld_entry_count(ld, s, 0, "a condition or a list of conditions"), err = 0;
    if (n <= 0)
        return n;
    if ((rc->rt->conds = ld_calloc(ld, (size_t)n, sizeof(*rc->rt->conds))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        const char *v = ld_get_string(ld, e);
        lg_cond_t *c = &rc->rt->conds[rc->rt->nconds];
        if (v == NULL || cond_parse(ld, e, v, c) < 0) {
            if (c->re) {
                regfree(c->re);
                c->re = NULL;
            }
            err = -1;
            continue;
        }
        rc->rt->nconds++;
    }
    return err;
}

/* root = "/srv/www"; alias = "/srv/acme/": the route serves files */
static int fn_root(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char  *v;
    char        *p;
    if (route_action(ld, rc, s) < 0 || (v = ld_get_string(ld, s)) == NULL)
        return -1;
    rc->rt->action = LG_ACTION_STATIC;
    if (v[0] == '\0')
        return ld_error(ld, s, "'%s' must not be empty", config_setting_name(s));
    if ((p = ld_resolve_path(ld, v)) == NULL)
        return ld_oom(ld, s);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';          /* the path that follows brings its own '/' */
    if (strcmp(config_setting_name(s), "root") == 0)
        rc->rt->root = p;
    else
        rc->rt->alias = p;
    return 0;
}

static int no_slash(const char *v)
{
    return v[0] != '\0' && strchr(v, '/') == NULL && strcmp(v, "..") != 0 && strcmp(v, ".") != 0;
}

static int fn_index(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    rc->index = s;
    return ld_string_list(ld, s, "a file name or a list of them", no_slash,
                          "index file '%s' must be a file name (no '/')", &rc->rt->index);
}

/* try_files = [ "$uri", "$uri/", "/maintenance.html", "@app" | "=404" ] */
static int fn_try_files(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_route_t  *rt = rc->rt;
    int n = ld_entry_count(ld, s, 0, "a list of paths ending with \"@route\" or \"=code\""), err = 0;
    rc->try_files = s;
    if (n < 0)
        return -1;
    if (n < 2)
        return ld_error(ld, s, "'try_files' needs at least one path and, last, a fallback "
                        "(\"@route\" or \"=code\"), as [ \"$uri\", \"=404\" ]");
    if ((rt->try_files = ld_calloc(ld, (size_t)n, sizeof(*rt->try_files))) == NULL)
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        const char *v = ld_get_string(ld, e);
        if (v == NULL) {
            err = -1;
            continue;
        }
        if (i == n - 1) {
            if (v[0] == '@' && v[1] != '\0') {
                if ((rt->try_fallback = ld_strdup(ld, v + 1)) == NULL)
                    return ld_oom(ld, e);
            } else if (v[0] == '=' && v[1] >= '1' && v[1] <= '9') {
                char *end;
                long code = strtol(v + 1, &end, 10);
                if (*end != '\0' || code < 200 || code > 599)
                    err = ld_error(ld, e, "'try_files' fallback '%s': the status must be 200 to 599", v);
                rt->try_status = (int)code;
            } else {
                err = ld_error(ld, e, "the last of 'try_files' is the fallback: \"@route\" (a route's "
                               "'name') or \"=code\" (such as \"=404\"), not '%s'", v);
            }
            continue;
        }
        if (v[0] != '/' && v[0] != '$')
            err = ld_error(ld, e, "'try_files' entry '%s' must start with '/' or a $variable", v);
        else if (ld_tpl(ld, e, "try_files", v, &rt->try_files[rt->ntry_files]) == 0)
            rt->ntry_files++;
        else
            err = -1;
    }
    return err;
}

static int fn_route_name(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char *v = ld_get_string(ld, s);
    rc->name = s;
    if (v == NULL)
        return -1;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return ld_error(ld, s, "route 'name' must be letters, digits, '_' and '-'");
    if (v[0] == '\0')
        return ld_error(ld, s, "route 'name' must not be empty");
    return (rc->rt->name = ld_strdup(ld, v)) ? 0 : ld_oom(ld, s);
}

static int fn_symlinks(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    const char *v = ld_get_string(ld, s);
    rc->symlinks = s;
    if (v == NULL)
        return -1;
    if (strcmp(v, "off") == 0)
        rc->rt->symlinks = LG_SYMLINKS_OFF;
    else if (strcmp(v, "inside") == 0)
        rc->rt->symlinks = LG_SYMLINKS_INSIDE;
    else if (strcmp(v, "on") == 0)
        rc->rt->symlinks = LG_SYMLINKS_ON;
    else
        return ld_error(ld, s, "'symlinks' must be \"off\", \"inside\" or \"on\"");
    return 0;
}

/* countries = [ "FR", "DE" ]: ISO 3166 codes of the client's country */
static int fn_countries(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    return ld_countries(ld, s, &rc->rt->countries);
}

/* split = ( { upstream = "stable"; weight = 90; }, { upstream = "canary"; weight = 10; } ) */
static int fn_split(ld_t *ld, const config_setting_t *s, void *base)
{
    route_ctx_t *rc = base;
    lg_route_t  *rt = rc->rt;
    rc->split = s;
    if (!config_setting_is_list(s) || config_setting_length(s) < 2)
        return ld_error(ld, s, "'split' must be a list of at least two { upstream = ...; weight = ...; }");
    int n = config_setting_length(s);
    if ((rt->splits = ld_calloc(ld, (size_t)n, sizeof(*rt->splits))) == NULL)
        return ld_oom(ld, s);
    int err = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        lg_split_t *sp = &rt->splits[rt->nsplits++];
        const config_setting_t *u = config_setting_get_member(e, "upstream");
        const config_setting_t *w = config_setting_get_member(e, "weight");
        int64_t wv = 0;
        if (!config_setting_is_group(e) || u == NULL || w == NULL || config_setting_length(e) != 2) {
            err = ld_error(ld, e, "each split entry is { upstream = \"name\"; weight = N; }");
            continue;
        }
        const char *un = ld_get_string(ld, u);
        if (un == NULL) {
            err = -1;
            continue;
        }
        if ((sp->upstream = ld_upstream_find(ld->conf, un)) == NULL)
            err = ld_error(ld, u, "unknown upstream '%s' in 'split'", un);
        if (ld_get_int(w, &wv) < 0 || wv < 1 || wv > 10000)
            err = ld_error(ld, w, "'weight' must be between 1 and 10000");
        sp->weight = (int)wv;
    }
    rt->action = LG_ACTION_PROXY;
    return err;
}

/* $1..$9 (or ${1}..${9}) in a template must name a group of the route's regex. */
static int check_captures(ld_t *ld, const route_ctx_t *rc, const config_setting_t *s,
                          const char *tmpl)
{
    const lg_route_t *rt = rc->rt;
    for (const char *p = tmpl; (p = strchr(p, '$')) != NULL; p++) {
        const char *d = p[1] == '{' ? p + 2 : p + 1;
        if (*d < '1' || *d > '9' || (p[1] == '{' && d[1] != '}'))
            continue;
        size_t want = (size_t)(*d - '0');
        if (rt->match != LG_MATCH_REGEX)
            return ld_error(ld, s, "'%s' uses $%zu but the route has no 'regex'",
                            config_setting_name(s), want);
        if (rt->re != NULL && want > rt->re->re_nsub)
            return ld_error(ld, s, "'%s' uses $%zu but the regex has %zu group(s)",
                            config_setting_name(s), want, rt->re->re_nsub);
    }
    return 0;
}

static int route_parse(ld_t *ld, const config_setting_t *g, lg_route_t *rt)
{
    route_ctx_t rc = { .rt = rt };
    int         err;

    rt->line = (int)config_setting_source_line(g);
    rt->symlinks = LG_SYMLINKS_INSIDE;
    ld_table_unset(ld_common_dirs, &rt->common);
    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a route must be a group { prefix = ...; proxy_pass = ...; }");
    err = ld_parse_block(ld, g, "route", route_dirs, &rc, ld_common_dirs, &rt->common);

    if (rc.matcher == NULL && rt->name != NULL)
        rt->named_only = 1;     /* reached only by try_files' "@name" */
    else if (rc.matcher == NULL)
        err = ld_error(ld, g, "route has none of 'exact', 'prefix', 'regex' (or a 'name' for "
                       "try_files' \"@name\")");
    if (rc.split && rc.action)
        err = ld_error(ld, rc.split, "route has both 'split' and '%s'", config_setting_name(rc.action));
    if (rc.split)
        rc.action = rc.split;
    if (rc.action == NULL)
        err = ld_error(ld, g, "route has none of 'proxy_pass', 'return', 'status', 'root', 'alias'");
    int is_static = rc.action && rt->action == LG_ACTION_STATIC;
    if ((rc.try_files || rc.index || rc.symlinks) && !is_static)
        err = ld_error(ld, rc.try_files ? rc.try_files : rc.index ? rc.index : rc.symlinks,
                       "'%s' is only allowed with 'root' or 'alias'",
                       config_setting_name(rc.try_files ? rc.try_files : rc.index ? rc.index : rc.symlinks));
    if (is_static && rt->alias && rt->match == LG_MATCH_REGEX)
        err = ld_error(ld, rc.action, "'alias' replaces a prefix: use it with 'prefix' or "
                       "'exact' (a regex route takes 'root')");
    if (is_static && rt->index == NULL) {
        if ((rt->index = ld_calloc(ld, 1, sizeof(*rt->index))) == NULL ||
            (rt->index->v = ld_calloc(ld, 1, sizeof(char *))) == NULL ||
            (rt->index->v[0] = ld_strdup(ld, "index.html")) == NULL)
            return ld_oom(ld, g);
        rt->index->n = 1;
    }
    if ((rc.split_key || rc.split_cookie) && !rc.split)
        err = ld_error(ld, rc.split_key ? rc.split_key : rc.split_cookie,
                       "'%s' is only allowed with 'split'",
                       rc.split_key ? "split_key" : "split_cookie");
    if (rc.split && rt->split_key == NULL && ld_tpl(ld, g, "split_key", "$remote_addr", &rt->split_key) < 0)
        err = -1;
    if (rc.split && rt->nsplits && rt->splits[0].upstream)
        rt->upstream = rt->splits[0].upstream;  /* for logs before the choice */
    int is_return = rc.action && rt->action == LG_ACTION_RETURN;
    int is_proxy = rc.action && rt->action == LG_ACTION_PROXY;
    if (rc.body && !is_return)
        err = ld_error(ld, rc.body, "'body' is only allowed with 'return'");
    if (rc.location && (is_proxy || (rc.status_ok && (rt->status < 300 || rt->status > 399))))
        err = ld_error(ld, rc.location, "'location' is only allowed with a 3xx 'return'");
    if (rc.no_regex && rt->no_regex && rt->match != LG_MATCH_PREFIX)
        err = ld_error(ld, rc.no_regex, "'no_regex' is only for 'prefix' routes");
    if (rc.rewrite && !is_proxy)
        err = ld_error(ld, rc.rewrite, "'rewrite' is only allowed with 'proxy_pass'");
    if (rc.matcher_ok) {
        if (rc.rewrite && rt->rewrite && check_captures(ld, &rc, rc.rewrite, rt->rewrite->src) < 0)
            err = -1;
        if (rc.location && rt->location && check_captures(ld, &rc, rc.location, rt->location->src) < 0)
            err = -1;
    }
    return err;
}

int ld_fn_routes(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    int          n, rc = 0;

    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'routes' must be a list ( { ... }, { ... } )");
    if ((n = config_setting_length(s)) == 0)
        return 0;
    if ((srv->routes = ld_calloc(ld, (size_t)n, sizeof(*srv->routes))) == NULL)
        return ld_oom(ld, s);
    srv->nroutes = (size_t)n;
    for (int i = 0; i < n; i++)
        rc |= route_parse(ld, config_setting_get_elem(s, (unsigned)i), &srv->routes[i]);
    /* names are the server's: "@name" finds a route of the same server */
    for (int i = 0; i < n; i++) {
        lg_route_t *rt = &srv->routes[i];
        for (int j = 0; rt->name && j < i; j++)
            if (srv->routes[j].name && strcmp(srv->routes[j].name, rt->name) == 0)
                rc = ld_error(ld, config_setting_get_elem(s, (unsigned)i),
                              "two routes named '%s' (the other at line %d)", rt->name,
                              srv->routes[j].line);
        if (rt->try_fallback == NULL)
            continue;
        for (int j = 0; j < n && rt->fallback == NULL; j++)
            if (srv->routes[j].name && strcmp(srv->routes[j].name, rt->try_fallback) == 0)
                rt->fallback = &srv->routes[j];
        if (rt->fallback == NULL)
            rc = ld_error(ld, config_setting_get_elem(s, (unsigned)i),
                          "'try_files' falls back to '@%s' but no route of this server has "
                          "name = \"%s\"", rt->try_fallback, rt->try_fallback);
        else if (rt->fallback->action == LG_ACTION_STATIC && rt->fallback->try_fallback)
            rc = ld_error(ld, config_setting_get_elem(s, (unsigned)i),
                          "'try_files' falls back to '@%s', which has a fallback of its own: "
                          "one step only", rt->try_fallback);
    }
    return rc;
}

/* ---- a route to itself ---- */

/* The upstream server's address is one the listen address l accepts. */
static int listen_takes(const lg_addr_t *l, const lg_addr_t *u)
{
    if (l->ss.ss_family != u->ss.ss_family || l->ss.ss_family == AF_UNIX)
        return l->ss.ss_family == AF_UNIX && u->ss.ss_family == AF_UNIX &&
               strcmp(((const struct sockaddr_un *)&l->ss)->sun_path,
                      ((const struct sockaddr_un *)&u->ss)->sun_path) == 0;
    if (l->ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&l->ss, *b = (const void *)&u->ss;
        return a->sin_port == b->sin_port &&
               (a->sin_addr.s_addr == b->sin_addr.s_addr ||
                (a->sin_addr.s_addr == htonl(INADDR_ANY) && (ntohl(b->sin_addr.s_addr) >> 24) == 127));
    }
    if (l->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&l->ss, *b = (const void *)&u->ss;
        return a->sin6_port == b->sin6_port &&
               (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0 ||
                (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) && IN6_IS_ADDR_LOOPBACK(&b->sin6_addr)));
    }
    return 0;
}

/*
 * A route whose upstream is its own server (one of the server's listen
 * addresses; a wildcard listen takes the loopback address too) gets every
 * request it sends back: a loop that Via no longer catches, since the
 * reverse proxy adds none by default.  Refused, unless the route has Via
 * (via = true: the loop is answered 508 when it comes back) or something
 * makes the request that comes back another one: a rewrite, a Host of its
 * own, or a condition the route tests.
 */
void ld_check_self_routes(ld_t *ld, const lg_conf_t *conf)
{
    for (size_t i = 0; i < conf->nservers; i++) {
        const lg_server_t *srv = &conf->servers[i];
        if (srv->stream || srv->forward)
            continue;
        for (size_t j = 0; j < srv->nroutes; j++) {
            const lg_route_t *rt = &srv->routes[j];
            const lg_header_ops_t *ho = rt->common.add_request_headers;
            int host = 0;
            for (size_t k = 0; ho && k < ho->n; k++)
                host |= strcasecmp(ho->v[k].name, "host") == 0;
            if (rt->action != LG_ACTION_PROXY || rt->common.via == 1 || rt->rewrite || host ||
                rt->nconds || rt->nhosts ||
                rt->methods || rt->header_name || rt->query_name || rt->countries)
                continue;
            for (size_t s = 0; s < (rt->nsplits ? rt->nsplits : 1); s++) {
                const lg_upstream_t *up = rt->nsplits ? rt->splits[s].upstream : rt->upstream;
                for (size_t u = 0; up && u < up->nservers; u++) {
                    const lg_upstream_server_t *us = &up->servers[u];
                    for (size_t l = 0; !us->unresolved && l < srv->nlistens; l++)
                        if (listen_takes(&srv->listens[l].addr, &us->addr)) {
                            ld_error_at(ld, ld->file, rt->line,
                                        "the route proxies to upstream '%s', whose server %s is "
                                        "this server's own listen address %s (line %d): every "
                                        "request would come back to it (a loop)", up->name,
                                        us->addr.text, srv->listens[l].addr.text,
                                        srv->listens[l].line);
                            goto next_route;
                        }
                }
            }
        next_route:;
        }
    }
}

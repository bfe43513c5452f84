/*
 * Declared variables: maps (nginx's map) and set (nginx's set), part of the
 * configuration loader (see load.c).
 *
 * Their names are gathered from the whole tree before anything else is
 * read (ld_uvars_prescan), so that a template anywhere -- a log format at
 * http level, a header of a server above the maps -- may name them; a
 * template naming a variable nobody declares stays an error.
 */
#include "conf/load_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <regex.h>

static int is_var_name(const char *v)
{
    if (v == NULL || v[0] == '\0' || (v[0] >= '0' && v[0] <= '9'))
        return 0;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    return 1;
}

static int uvar_find(const lg_conf_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->nuvars; i++)
        if (strcmp(conf->uvars[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Declare name (once); -1 with the error reported when it cannot be. */
static int uvar_declare(ld_t *ld, const config_setting_t *at, const char *name, size_t *cap)
{
    lg_conf_t *conf = ld->conf;
    size_t     arg;
    int        i;

    if (!is_var_name(name))
        return ld_error(ld, at, "'%s' is not a variable name (letters, digits and '_', "
                        "not starting with a digit)", name);
    if (lg_tpl_lookup_builtin(name, strlen(name), &arg) >= 0)
        return ld_error(ld, at, "$%s is a built-in variable: choose another name", name);
    if ((i = uvar_find(conf, name)) >= 0)
        return i;
    if (conf->nuvars == *cap) {
        size_t     ncap = *cap ? *cap * 2 : 16;
        lg_uvar_t *v = ld_calloc(ld, ncap, sizeof(*v));
        if (v == NULL)
            return ld_oom(ld, at);
        if (conf->nuvars)
            memcpy(v, conf->uvars, conf->nuvars * sizeof(*v));
        conf->uvars = v;
        *cap = ncap;
    }
    if ((conf->uvars[conf->nuvars].name = ld_strdup(ld, name)) == NULL)
        return ld_oom(ld, at);
    return (int)conf->nuvars++;
}

static void prescan_set(ld_t *ld, const config_setting_t *level, size_t *cap)
{
    const config_setting_t *set = level && config_setting_is_group(level)
                                  ? config_setting_get_member(level, "set") : NULL;
    if (set == NULL || !config_setting_is_group(set))
        return;         /* the wrong type is reported where it is read */
    for (int i = 0; i < config_setting_length(set); i++) {
        const config_setting_t *e = config_setting_get_elem(set, (unsigned)i);
        uvar_declare(ld, e, config_setting_name(e), cap);
    }
}

void ld_uvars_prescan(ld_t *ld, const config_t *cfg)
{
    const config_setting_t *http = config_setting_get_member(config_root_setting(cfg), "http");
    size_t cap = 0;

    if (http == NULL || !config_setting_is_group(http))
        return;
    const config_setting_t *maps = config_setting_get_member(http, "maps");
    if (maps && config_setting_is_list(maps))
        for (int i = 0; i < config_setting_length(maps); i++) {
            const config_setting_t *m = config_setting_get_elem(maps, (unsigned)i);
            const config_setting_t *v = config_setting_is_group(m)
                                        ? config_setting_get_member(m, "variable") : NULL;
            if (v && config_setting_type(v) == CONFIG_TYPE_STRING) {
                const char *name = config_setting_get_string(v);
                if (name[0] == '$')
                    name++;
                uvar_declare(ld, v, name, &cap);
            }
        }
    prescan_set(ld, http, &cap);
    const config_setting_t *servers = config_setting_get_member(http, "servers");
    for (int i = 0; servers && config_setting_is_list(servers) &&
                    i < config_setting_length(servers); i++) {
        const config_setting_t *srv = config_setting_get_elem(servers, (unsigned)i);
        prescan_set(ld, srv, &cap);
        const config_setting_t *routes = config_setting_is_group(srv)
                                         ? config_setting_get_member(srv, "routes") : NULL;
        for (int j = 0; routes && config_setting_is_list(routes) &&
                        j < config_setting_length(routes); j++)
            prescan_set(ld, config_setting_get_elem(routes, (unsigned)j), &cap);
    }
    if (ld->conf->nuvars) {
        char **names = ld_calloc(ld, ld->conf->nuvars, sizeof(*names));
        if (names == NULL)
            return;
        for (size_t i = 0; i < ld->conf->nuvars; i++)
            names[i] = ld->conf->uvars[i].name;
        lg_tpl_set_user_vars(names, ld->conf->nuvars);
    }
}

/* $1..$9 in a map value: only with a regex key that has that many groups. */
static int check_value_captures(ld_t *ld, const config_setting_t *s, const lg_map_entry_t *e)
{
    for (const char *p = e->value->src; (p = strchr(p, '$')) != NULL; p++) {
        const char *d = p[1] == '{' ? p + 2 : p + 1;
        if (*d < '1' || *d > '9' || (p[1] == '{' && d[1] != '}'))
            continue;
        size_t want = (size_t)(*d - '0');
        if (e->kind != LG_MAPK_REGEX)
            return ld_error(ld, s, "map value uses $%zu but its key is not a regex ('~...')", want);
        if (want > e->re->re_nsub)
            return ld_error(ld, s, "map value uses $%zu but the regex has %zu group(s)", want,
                            e->re->re_nsub);
    }
    return 0;
}

/* One [ "key", "value" ] of a map. */
static int map_entry(ld_t *ld, const config_setting_t *s, lg_map_entry_t *e)
{
    const config_setting_t *k = config_setting_get_elem(s, 0), *v = config_setting_get_elem(s, 1);
    if (!(config_setting_is_array(s) || config_setting_is_list(s)) || config_setting_length(s) != 2 ||
        config_setting_type(k) != CONFIG_TYPE_STRING || config_setting_type(v) != CONFIG_TYPE_STRING)
        return ld_error(ld, s, "each map value is [ \"key\", \"value\" ] (two strings)");
    const char *key = config_setting_get_string(k);
    size_t      n = strlen(key);
    if (key[0] == '~') {
        int   icase = key[1] == '*';
        const char *re_src = key + 1 + icase;
        char  msg[256];
        int   err;
        if (re_src[0] == '\0')
            return ld_error(ld, s, "map key '%s' has an empty regex", key);
        if ((e->re = ld_calloc(ld, 1, sizeof(*e->re))) == NULL)
            return ld_oom(ld, s);
        if ((err = regcomp(e->re, re_src, REG_EXTENDED | (icase ? REG_ICASE : 0))) != 0) {
            regerror(err, e->re, msg, sizeof(msg));
            e->re = NULL;
            return ld_error(ld, s, "bad regex in map key '%s': %s", key, msg);
        }
        e->kind = LG_MAPK_REGEX;
        e->key = ld_strdup(ld, key);
    } else {
        const char *star = strchr(key, '*');
        const char *from = key;
        size_t      len = n;
        e->kind = LG_MAPK_EXACT;
        if (key[0] == '\\' && (key[1] == '~' || key[1] == '*')) {
            from = key + 1;     /* "\~x": a key that starts with '~' or '*' as text */
            len = n - 1;
        } else if (star == key && key[1] == '.' && n > 2 && strchr(key + 1, '*') == NULL) {
            e->kind = LG_MAPK_LEADING;
            from = key + 1;
            len = n - 1;
        } else if (star == key + n - 1 && n > 2 && key[n - 2] == '.' && strchr(key, '*') == star) {
            e->kind = LG_MAPK_TRAILING;
            len = n - 1;
        } else if (star != NULL) {
            return ld_error(ld, s, "map key '%s': '*' is only allowed as the whole first label "
                            "(\"*.example.com\") or the whole last (\"www.example.*\"); "
                            "a '~' key is a regex", key);
        }
        if ((e->key = lg_arena_strndup(&ld->conf->arena, from, len)) != NULL)
            for (char *p = e->key; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p + 32);
        e->len = len;
    }
    if (e->key == NULL)
        return ld_oom(ld, s);
    if (ld_tpl(ld, v, "map value", config_setting_get_string(v), &e->value) < 0)
        return -1;
    return check_value_captures(ld, v, e);
}

static int map_parse(ld_t *ld, const config_setting_t *g)
{
    const config_setting_t *var, *src, *def, *vals;
    lg_map_t *m;
    int       rc = 0, idx;

    if (!config_setting_is_group(g))
        return ld_error(ld, g, "a map is { variable = \"name\"; source = \"$var\"; "
                        "values = ( [ \"key\", \"value\" ], ... ); default = \"...\"; }");
    for (int i = 0; i < config_setting_length(g); i++) {
        const char *n = config_setting_name(config_setting_get_elem(g, (unsigned)i));
        if (strcmp(n, "variable") && strcmp(n, "source") && strcmp(n, "default") &&
            strcmp(n, "values"))
            rc = ld_error(ld, config_setting_get_elem(g, (unsigned)i), "unknown map setting '%s' "
                          "(a map has variable, source, values, default)", n);
    }
    var = config_setting_get_member(g, "variable");
    src = config_setting_get_member(g, "source");
    def = config_setting_get_member(g, "default");
    vals = config_setting_get_member(g, "values");
    if (var == NULL || config_setting_type(var) != CONFIG_TYPE_STRING)
        return ld_error(ld, var ? var : g, "a map needs 'variable' (the name it defines, a string)");
    const char *name = config_setting_get_string(var);
    if (name[0] == '$')
        name++;
    if ((idx = uvar_find(ld->conf, name)) < 0)
        return -1;      /* reported by the prescan */
    if (ld->conf->uvars[idx].map != NULL)
        return ld_error(ld, var, "$%s is defined by another map (line %d)", name,
                        ld->conf->uvars[idx].map->line);
    if ((m = ld_calloc(ld, 1, sizeof(*m))) == NULL)
        return ld_oom(ld, g);
    m->line = (int)config_setting_source_line(g);
    ld->conf->uvars[idx].map = m;
    if (src == NULL || config_setting_type(src) != CONFIG_TYPE_STRING)
        rc = ld_error(ld, src ? src : g, "a map needs 'source' (a template such as \"$host\")");
    else if (ld_tpl(ld, src, "source", config_setting_get_string(src), &m->source) < 0)
        rc = -1;
    if (def != NULL) {
        if (config_setting_type(def) != CONFIG_TYPE_STRING)
            rc = ld_error(ld, def, "'default' must be a string");
        else if (ld_tpl(ld, def, "default", config_setting_get_string(def), &m->dflt) < 0)
            rc = -1;
    }
    if (vals == NULL)
        return rc;
    if (!config_setting_is_list(vals))
        return ld_error(ld, vals, "'values' must be a list ( [ \"key\", \"value\" ], ... )");
    int n = config_setting_length(vals);
    if (n > 0 && (m->v = ld_calloc(ld, (size_t)n, sizeof(*m->v))) == NULL)
        return ld_oom(ld, vals);
    for (int i = 0; i < n; i++) {
        lg_map_entry_t *e = &m->v[m->n];
        if (map_entry(ld, config_setting_get_elem(vals, (unsigned)i), e) < 0) {
            rc = -1;
            continue;
        }
        m->n++;
    }
    return rc;
}

int ld_fn_maps(ld_t *ld, const config_setting_t *s, void *base)
{
    int rc = 0;
    (void)base;
    if (!config_setting_is_list(s))
        return ld_error(ld, s, "'maps' must be a list ( { variable = ...; source = ...; }, ... )");
    for (int i = 0; i < config_setting_length(s); i++)
        rc |= map_parse(ld, config_setting_get_elem(s, (unsigned)i));
    return rc;
}

/* set = { name = "template"; ... }: a row of lg_common_t (base) */
int ld_fn_set(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_common_t *c = base;
    int          n, rc = 0;

    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'set' must be a group { name = \"value\"; ... }");
    n = config_setting_length(s);
    if ((c->sets = ld_calloc(ld, 1, sizeof(*c->sets))) == NULL ||
        (n > 0 && (c->sets->v = ld_calloc(ld, (size_t)n, sizeof(*c->sets->v))) == NULL))
        return ld_oom(ld, s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *name = config_setting_name(e);
        int idx = uvar_find(ld->conf, name);
        lg_set_t *st = &c->sets->v[c->sets->n];
        if (idx < 0) {
            rc = -1;    /* reported by the prescan */
            continue;
        }
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            rc = ld_error(ld, e, "'set': the value of %s must be a string", name);
            continue;
        }
        st->var = idx;
        if (ld_tpl(ld, e, "set", config_setting_get_string(e), &st->value) < 0) {
            rc = -1;
            continue;
        }
        c->sets->n++;
    }
    return rc;
}

void ld_uvars_free(lg_conf_t *conf)
{
    for (size_t i = 0; i < conf->nuvars; i++) {
        lg_map_t *m = conf->uvars[i].map;
        for (size_t j = 0; m && j < m->n; j++)
            if (m->v[j].re)
                regfree(m->v[j].re);
    }
}

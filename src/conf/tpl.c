/*
 * Templates compiled at load.  The syntax is the one the run-time expander
 * always accepted, kept byte for byte so that a configuration that worked
 * still means the same: $name or ${name}; a name is letters, digits and '_',
 * except that a leading digit is a capture of one digit ("$1abc" is $1 then
 * "abc"); a '$' not followed by a name, and a "${" never closed, are text.
 * What changed is that an unknown name is now an error, found here.
 */
#include "conf/conf.h"

#include <stdio.h>
#include <string.h>

/* Without a registered lookup (unit tests of the loader alone) any name is
 * accepted and expands to nothing, as every unknown name once did. */
static int unchecked(const char *name, size_t n, size_t *arg)
{
    (void)name;
    *arg = n;
    return LG_TPL_UNCHECKED;
}

static lg_var_lookup_t lookup = unchecked;

void lg_conf_set_var_lookup(lg_var_lookup_t fn)
{
    lookup = fn ? fn : unchecked;
}

/* The configuration being loaded declares these (maps, set); a load runs in
 * one process at a time, which sets them before and clears them after. */
static char *const *user_names;
static size_t       nuser_names;

void lg_tpl_set_user_vars(char *const *names, size_t n)
{
    user_names = names;
    nuser_names = names ? n : 0;
}

int lg_tpl_lookup_builtin(const char *name, size_t n, size_t *arg)
{
    return lookup(name, n, arg);
}

static int lookup_any(const char *name, size_t n, size_t *arg)
{
    for (size_t i = 0; i < nuser_names; i++)
        if (strlen(user_names[i]) == n && memcmp(user_names[i], name, n) == 0) {
            *arg = n;
            return LG_TPL_USER + (int)i;
        }
    return lookup(name, n, arg);
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static void add_literal(lg_tpl_t *t, const char *p, size_t n)
{
    lg_tpl_part_t *last = t->nparts ? &t->parts[t->nparts - 1] : NULL;
    if (n == 0)
        return;
    if (last && last->var == LG_TPL_LITERAL && last->text + last->len == p) {
        last->len += n;
        return;
    }
    t->parts[t->nparts++] = (lg_tpl_part_t){ p, n, LG_TPL_LITERAL };
}

lg_tpl_t *lg_tpl_compile(lg_arena_t *a, const char *src, char *err, size_t errlen)
{
    size_t dollars = 0;
    for (const char *q = src; (q = strchr(q, '$')) != NULL; q++)
        dollars++;
    lg_tpl_t *t = lg_arena_calloc(a, sizeof(*t));
    char *copy = lg_arena_strdup(a, src);
    /* each '$' ends at most one literal and makes at most one more part */
    if (t == NULL || copy == NULL ||
        (t->parts = lg_arena_calloc(a, (2 * dollars + 1) * sizeof(*t->parts))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->src = copy;
    for (const char *p = copy; *p;) {
        if (*p != '$') {
            const char *q = strchr(p, '$');
            size_t n = q ? (size_t)(q - p) : strlen(p);
            add_literal(t, p, n);
            p += n;
            continue;
        }
        const char *dollar = p++;
        const char *name = p;
        size_t n = 0;
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (e == NULL) {
                add_literal(t, dollar, 2);
                p++;
                continue;
            }
            name = p + 1;
            n = (size_t)(e - name);
            p = e + 1;
        } else {
            while (is_name_char(p[n]))
                n++;
            if (n && name[0] >= '0' && name[0] <= '9')
                n = 1;
            p += n;
        }
        if (n == 0) {
            add_literal(t, dollar, 1);
            continue;
        }
        size_t arg = n;
        int v = lookup_any(name, n, &arg);
        if (v == -1) {
            snprintf(err, errlen, "unknown variable \"$%.*s\"", (int)n, name);
            return NULL;
        }
        char *at = lg_arena_strndup(a, name + arg, n - arg);
        if (at == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        t->parts[t->nparts++] = (lg_tpl_part_t){ at, n - arg, v };
        t->nvars++;
    }
    return t;
}

/*
 * Configuration errors: FILE:LINE messages gathered for legate -t and a
 * refused reload, with a hint read from the file itself when libconfig
 * says no more than "syntax error"; and the loader's allocation helpers,
 * which report running out of memory the same way.
 */
#include "conf/load_int.h"

#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

/* --- errors ------------------------------------------------------------ */

static void ld_append(ld_t *ld, const char *file, int line, const char *fmt, va_list ap)
{
    ld->nerr++;
    if (ld->err == NULL || ld->errused + 1 >= ld->errlen)
        return;
    char  *p = ld->err + ld->errused;
    size_t room = ld->errlen - ld->errused;
    int    n = line > 0 ? snprintf(p, room, "%s:%d: ", file, line)
                        : snprintf(p, room, "%s: ", file);
    if (n >= 0 && (size_t)n < room) {
        int m = vsnprintf(p + n, room - (size_t)n, fmt, ap);
        n = m < 0 ? -1 : n + m;
    }
    if (n >= 0 && (size_t)n + 1 < room) {
        p[n] = '\n';
        p[n + 1] = '\0';
        ld->errused += (size_t)n + 1;
    } else {
        ld->errused = ld->errlen - 1;   /* truncated: stop appending */
        ld->err[ld->errlen - 1] = '\0';
    }
}


void ld_error_at(ld_t *ld, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ld_append(ld, file, line, fmt, ap);
    va_end(ap);
}

/*
 * libconfig names an included file by the path written in @include, which is
 * relative to the include directory; name it as the sysadmin can open it.
 */
const char *ld_file_name(ld_t *ld, const char *f)
{
    if (f == NULL || strcmp(f, ld->file) == 0)
        return ld->file;
    if (f[0] == '/' || ld->incdir == NULL)
        return f;
    char *p = lg_arena_printf(&ld->conf->arena, "%s/%s", ld->incdir, f);
    return p ? p : f;
}

/* Line `want` of path (without its newline) into buf; 0 or -1. */
static int file_line(const char *path, int want, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    int line = 1;
    if (f == NULL || want < 1)
        goto fail;
    while (line < want) {
        int c = fgetc(f);
        if (c == EOF)
            goto fail;
        line += c == '\n';
    }
    if (fgets(buf, (int)n, f) == NULL)
        goto fail;
    buf[strcspn(buf, "\r\n")] = '\0';
    fclose(f);
    return 0;
fail:
    if (f)
        fclose(f);
    buf[0] = '\0';
    return -1;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/*
 * libconfig says "syntax error" and nothing more: what the line (and the
 * one before) shows, in words that say what to write.  NULL: no idea.
 */
const char *ld_syntax_hint(const char *path, int line)
{
    char cur[1024], prev[1024] = "";
    if (file_line(path, line, cur, sizeof(cur)) < 0)
        return NULL;
    for (int l = line - 1; l >= 1 && l >= line - 20 && prev[0] == '\0'; l--) {
        if (file_line(path, l, prev, sizeof(prev)) < 0)
            break;
        char *hash = strchr(prev, '#');
        if (hash && !memchr(prev, '"', (size_t)(hash - prev)))
            *hash = '\0';
        size_t k = strlen(prev);
        while (k && (prev[k - 1] == ' ' || prev[k - 1] == '\t'))
            prev[--k] = '\0';
        if (skip_ws(prev)[0] == '\0')
            prev[0] = '\0';
    }
    const char *c = skip_ws(cur);
    size_t pl = strlen(prev);
    for (const char *p = cur; *p; p++) {
        if (*p == '"') {                        /* skip strings */
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p == '\0')
                break;
            continue;
        }
        if (*p == ',' && (skip_ws(p + 1)[0] == ')' || skip_ws(p + 1)[0] == ']'))
            return "a ',' after the last element of a list or array: libconfig takes no "
                   "comma before ')' or ']'; remove it";
        /* never valid: a setting starts with a name */
        if (*p == ';' && (skip_ws(p + 1)[0] == '{' || skip_ws(p + 1)[0] == '"'))
            return "elements of a list ( ... ) or an array [ ... ] are separated by ','; "
                   "';' ends a setting inside a group { ... }";
        if (*p == '=' || *p == ':') {
            const char *v = skip_ws(p + 1);
            if ((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || *v == '/' || *v == '$') {
                size_t w = strcspn(v, " \t;,)}]");
                if (!((w == 4 && strncasecmp(v, "true", 4) == 0) ||
                      (w == 5 && strncasecmp(v, "false", 5) == 0)))
                    return "a string value is written in double quotes: name = \"value\";";
            }
        }
    }
    if ((c[0] == ')' || c[0] == ']') && pl && prev[pl - 1] == ',')
        return "a ',' after the last element of a list or array (on the line before): "
               "libconfig takes no comma before ')' or ']'; remove it";
    if (c[0] == '{' && pl && prev[pl - 1] == '}')
        return "elements of a list are separated by ',': put one after the '}' on the line before";
    return NULL;
}

const char *ld_syntax_hint_of(ld_t *ld, const config_t *cfg)
{
    if (config_error_text(cfg) == NULL || strcmp(config_error_text(cfg), "syntax error") != 0)
        return NULL;
    return ld_syntax_hint(ld_file_name(ld, config_error_file(cfg)), config_error_line(cfg));
}

/* Report an error at setting s; returns -1 so handlers can "return ld_error()". */
int ld_error(ld_t *ld, const config_setting_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (s == NULL)
        ld_append(ld, ld->file, 0, fmt, ap);
    else
        ld_append(ld, ld_file_name(ld, config_setting_source_file(s)),
                  (int)config_setting_source_line(s), fmt, ap);
    va_end(ap);
    return -1;
}

int ld_oom(ld_t *ld, const config_setting_t *s)
{
    return ld_error(ld, s, "out of memory");
}

void *ld_calloc(ld_t *ld, size_t n, size_t size)
{
    if (n != 0 && size > SIZE_MAX / n)
        return NULL;
    return lg_arena_calloc(&ld->conf->arena, n * size);
}

char *ld_strdup(ld_t *ld, const char *s)
{
    return lg_arena_strdup(&ld->conf->arena, s);
}

/* The name to use in messages: list elements have none, take the list's. */

/*
 * include = "PATTERN"; (or a list of patterns, such as conf.d/ then *.conf), at the top level
 * of the main file: every file a pattern matches, in name order, is read as a
 * configuration of its own and merged into the main one before anything is
 * checked.  A group merges into the group of the same name, a list is
 * appended to the list of the same name (servers from several files), any
 * other setting given twice is an error naming both places.  A pattern that
 * matches nothing is not an error when it has a wildcard (an empty conf.d/),
 * as nginx's include; a plain file name that does not exist is.
 *
 * libconfig 1.5's own @include takes one file and cannot insert list items
 * from several files; this gives the Debian conf.d/ layout.  Settings copied
 * keep their file and line, so errors still point into the file that holds
 * them.
 */
#include "conf/load_int.h"

#include <errno.h>
#include <glob.h>
#include <string.h>

static int copy_setting(ld_t *ld, config_setting_t *parent, const config_setting_t *s,
                        const char *file);

static void place(config_setting_t *n, const config_setting_t *s, const char *file)
{
    n->line = s->line;
    n->file = file;
    config_setting_set_format(n, config_setting_get_format(s));
}

static int copy_children(ld_t *ld, config_setting_t *dst, const config_setting_t *src,
                         const char *file)
{
    int rc = 0;
    for (int i = 0; i < config_setting_length(src); i++)
        rc |= copy_setting(ld, dst, config_setting_get_elem(src, (unsigned)i), file);
    return rc;
}

static int copy_setting(ld_t *ld, config_setting_t *parent, const config_setting_t *s,
                        const char *file)
{
    int type = config_setting_type(s);
    config_setting_t *n = config_setting_add(parent, config_setting_name(s), type);
    if (n == NULL) {
        ld_error_at(ld, file, (int)s->line, "cannot merge '%s'",
                    config_setting_name(s) ? config_setting_name(s) : "(element)");
        return -1;
    }
    place(n, s, file);
    switch (type) {
    case CONFIG_TYPE_INT:    config_setting_set_int(n, config_setting_get_int(s)); break;
    case CONFIG_TYPE_INT64:  config_setting_set_int64(n, config_setting_get_int64(s)); break;
    case CONFIG_TYPE_FLOAT:  config_setting_set_float(n, config_setting_get_float(s)); break;
    case CONFIG_TYPE_BOOL:   config_setting_set_bool(n, config_setting_get_bool(s)); break;
    case CONFIG_TYPE_STRING: config_setting_set_string(n, config_setting_get_string(s)); break;
    default:                 return copy_children(ld, n, s, file);
    }
    return 0;
}

static int merge_group(ld_t *ld, config_setting_t *dst, const config_setting_t *src,
                       const char *file)
{
    int rc = 0;
    for (int i = 0; i < config_setting_length(src); i++) {
        const config_setting_t *s = config_setting_get_elem(src, (unsigned)i);
        const char *name = config_setting_name(s);
        config_setting_t *d = config_setting_get_member(dst, name);
        if (d == NULL)
            rc |= copy_setting(ld, dst, s, file);
        else if (config_setting_is_group(d) && config_setting_is_group(s))
            rc |= merge_group(ld, d, s, file);
        else if (config_setting_is_list(d) && config_setting_is_list(s))
            rc |= copy_children(ld, d, s, file);
        else {
            ld_error_at(ld, file, (int)s->line, "'%s' is already set in %s:%d", name,
                        ld_file_name(ld, config_setting_source_file(d)),
                        (int)config_setting_source_line(d));
            rc = -1;
        }
    }
    return rc;
}

static void merge_file(ld_t *ld, config_t *cfg, const char *path)
{
    config_t sub;
    config_init(&sub);
    if (ld->incdir != NULL)
        config_set_include_dir(&sub, ld->incdir);
    errno = 0;
    if (config_read_file(&sub, path) != CONFIG_TRUE) {
        if (config_error_type(&sub) == CONFIG_ERR_FILE_IO)
            ld_error_at(ld, path, 0, "cannot read included file: %s",
                        errno ? strerror(errno) : "I/O error");
        else
            ld_error_at(ld, ld_file_name(ld, config_error_file(&sub)),
                        config_error_line(&sub), "%s%s%s", config_error_text(&sub),
                        ld_syntax_hint_of(ld, &sub) ? ": " : "",
                        ld_syntax_hint_of(ld, &sub) ? ld_syntax_hint_of(ld, &sub) : "");
        config_destroy(&sub);
        return;
    }
    config_setting_t *root = config_root_setting(&sub);
    const config_setting_t *inc = config_setting_get_member(root, "include");
    if (inc != NULL)
        ld_error_at(ld, path, (int)inc->line, "'include' is allowed only in the main file");
    else {
        const char *file = lg_arena_strdup(&ld->conf->arena, path);
        if (file == NULL)
            ld_error_at(ld, path, 0, "out of memory");
        else
            merge_group(ld, config_root_setting(cfg), root, file);
    }
    config_destroy(&sub);
}

static void include_pattern(ld_t *ld, config_t *cfg, const config_setting_t *s)
{
    const char *pat = config_setting_get_string(s);
    if (pat == NULL || pat[0] == '\0') {
        ld_error(ld, s, "'include' takes a file name or pattern, or a list of them");
        return;
    }
    const char *full = pat;
    if (pat[0] != '/' && ld->incdir != NULL)
        full = lg_arena_printf(&ld->conf->arena, "%s/%s", ld->incdir, pat);
    if (full == NULL) {
        ld_oom(ld, s);
        return;
    }
    glob_t g;
    int grc = glob(full, GLOB_ERR, NULL, &g);
    if (grc == GLOB_NOMATCH) {
        if (strpbrk(pat, "*?[") == NULL)
            ld_error(ld, s, "included file \"%s\" does not exist", full);
        return;
    }
    if (grc != 0) {
        ld_error(ld, s, "cannot expand \"%s\": %s", full,
                 grc == GLOB_NOSPACE ? "out of memory" : strerror(errno ? errno : EIO));
        globfree(&g);
        return;
    }
    for (size_t i = 0; i < g.gl_pathc; i++)
        merge_file(ld, cfg, g.gl_pathv[i]);
    globfree(&g);
}

void ld_include_globs(ld_t *ld, config_t *cfg)
{
    config_setting_t *root = config_root_setting(cfg);
    config_setting_t *inc = config_setting_get_member(root, "include");
    if (inc == NULL)
        return;
    if (config_setting_type(inc) == CONFIG_TYPE_STRING)
        include_pattern(ld, cfg, inc);
    else if (config_setting_is_aggregate(inc) && !config_setting_is_group(inc)) {
        for (int i = 0; i < config_setting_length(inc); i++) {
            const config_setting_t *e = config_setting_get_elem(inc, (unsigned)i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING)
                ld_error(ld, e, "'include' takes a file name or pattern, or a list of them");
            else
                include_pattern(ld, cfg, e);
        }
    } else
        ld_error(ld, inc, "'include' takes a file name or pattern, or a list of them");
    /* merged: what is left is checked as if it had been written in one file */
    config_setting_remove(root, "include");
}

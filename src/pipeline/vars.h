/*
 * The $variables of templates (header values, log formats, cache keys,
 * rewrites...): one table, looked up by name only while a configuration
 * loads (conf/tpl.c compiles each template to parts that name variables by
 * index), and read by index for each request.
 */
#ifndef LEGATE_PIPELINE_VARS_H
#define LEGATE_PIPELINE_VARS_H

#include <stddef.h>

#include "conf/conf.h"

struct lg_req;

typedef enum lg_vars_esc {
    LG_VARS_RAW    = 0,     /* verbatim: header values, rewrite, Location, return bodies */
    LG_VARS_ESCAPE = 1,     /* values from the client as \xHH where unsafe, "-" for some absent
                               ones: plain log formats, and keys (cache, hash, split) */
    LG_VARS_JSON   = 2,     /* JSON string escapes: the json log format */
} lg_vars_esc_t;

/* Register the table with the configuration loader; before any lg_conf_load(). */
void lg_vars_init(void);

/* The lookup conf/tpl.c uses (lg_var_lookup_t). */
int lg_vars_lookup(const char *name, size_t n, size_t *arg);

/*
 * The value of t for request s, NUL-terminated, its length in *len when len
 * is not NULL.  A template without variables is returned as written, not
 * copied; else the value is in the request's arena.  NULL for a NULL t, or
 * when out of memory.
 */
const char *lg_vars_expand(struct lg_req *s, const lg_tpl_t *t, lg_vars_esc_t esc,
                           size_t *len);

/* Compile a template built into legate (log formats, the forward cache key)
 * into memory kept for the life of the process; the caller keeps the result.
 * NULL if src names an unknown variable, which the unit tests make sure no
 * built-in does. */
const lg_tpl_t *lg_vars_builtin(const char *src);

/* Set when a template names $upstream_http_*: headers.c then keeps a copy
 * of the upstream's head for the rest of the request (the access log). */
extern int lg_vars_keep_upstream_head;

/* nginx's map: the entry a value selects (exact, then the longest
 * "*.x" wildcard, then the longest "x.*", then the first regex), or NULL
 * for the default.  v[n] must be NUL; a regex's groups go to caps. */
const lg_map_entry_t *lg_map_match(const lg_map_t *m, const char *v, size_t n, regmatch_t caps[10]);

/*
 * The address this hop received the request from: the connection's peer,
 * which differs from the client's address when real_ip_from replaced it.
 */
const char *lg_vars_hop_addr(const struct lg_req *s);

#endif

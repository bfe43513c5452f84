/*
 * Internals shared by the configuration loader's files (load.c: the walk,
 * values, defaults, merge and binds; load_upstream.c: upstreams and their
 * health checks; load_route.c: routes; load_server.c: TLS and forward-proxy
 * settings of servers).  Not for use outside src/conf.
 */
#ifndef LEGATE_CONF_LOAD_INT_H
#define LEGATE_CONF_LOAD_INT_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

#define SEC   INT64_C(1000)
#define DAY   (86400 * SEC)
#define WEEK  (7 * DAY)

/* Loader state for one lg_conf_load() call. */
typedef struct ld {
    lg_conf_t              *conf;
    const char             *file;       /* borrowed: main file as given */
    const char             *incdir;     /* arena: @include base, NULL = cwd */
    int                     has_prefix; /* resolve relative paths under conf->prefix */
    char                   *err;        /* borrowed: caller's buffer */
    size_t                  errlen;
    size_t                  errused;
    int                     nerr;
    const config_setting_t *servers;    /* http.servers, parsed after upstreams */
    const config_setting_t *stream;     /* the stream group, parsed after http */
    size_t                  upstreams_room; /* conf->upstreams is made this long (http + stream) */
    int                     resolving;  /* the upstream being read has resolve = true */
} ld_t;

/* --- directive tables ---------------------------------------------------- */

typedef enum dtype {
    D_INT      = 0,     /* int: integer in [min, max] */
    D_INT64    = 1,     /* int64_t: integer in [min, max] */
    D_BOOL     = 2,     /* int: true / false */
    D_DURATION = 3,     /* lg_msec_t: integer seconds or "500ms" "10s" "2m" "1h" "1d" */
    D_SIZE     = 4,     /* int64_t: integer bytes or "512" "16k" "1m" "2g" */
    D_STRING   = 5,     /* char *: non-empty string */
    D_PATH     = 6,     /* char *: file, relative -> under prefix; `keyword` kept as is */
    D_LEVEL    = 7,     /* lg_log_level_t: "debug" .. "emerg" */
    D_WORKERS  = 8,     /* int: integer in [min, max] or "auto" (CPUs online) */
    D_HEADERS  = 9,     /* lg_header_ops_t *: group of Name = "value" */
    D_NAMES    = 10,    /* lg_strv_t *: header name or list of header names */
    D_CUSTOM   = 11,    /* handled by fn: structure, not a value; no default, not merged */
    D_STRLIST  = 12,    /* lg_strv_t *: string or list of strings; keyword "paths": resolved;
                           keyword "words": each string is also split at spaces and commas;
                           default: space-separated */
    D_TPL      = 13,    /* lg_tpl_t *: non-empty string with $variables, compiled */
    D_VALID    = 14,    /* lg_valid_t *: "status ... duration" strings (cache_valid) */
    D_ERRPAGES = 15,    /* lg_errpages_t *: "status ... file" strings, files read at load */
} dtype_t;

/* Rows of kind D_LEVEL write the enum through an int pointer. */
_Static_assert(sizeof(lg_log_level_t) == sizeof(int), "lg_log_level_t is not int-sized");

typedef int (*dfn_t)(ld_t *ld, const config_setting_t *s, void *base);

typedef struct directive {
    const char *name;
    dtype_t     type;
    int64_t     min, max;   /* bounds in the stored unit (ms, bytes) */
    const char *def;        /* default in config syntax ("" = empty list); NULL: stays unset */
    size_t      off;        /* offset of the target field in the level's struct */
    const char *keyword;    /* D_PATH: a value that is not a path ("stderr", "off") */
    dfn_t       fn;         /* D_CUSTOM */
} directive_t;

#define ROW(name, type, min, max, def, st, f) \
    { name, type, min, max, def, offsetof(st, f), NULL, NULL }
#define PATH(name, def, kw, st, f) \
    { name, D_PATH, 0, 0, def, offsetof(st, f), kw, NULL }
#define CUSTOM(name, fn) \
    { name, D_CUSTOM, 0, 0, NULL, 0, NULL, fn }

/* errors: "FILE:LINE: message", collected, never stopping the walk */
int         ld_error(ld_t *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void        ld_error_at(ld_t *ld, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int         ld_oom(ld_t *ld, const config_setting_t *s);
const char *ld_file_name(ld_t *ld, const char *f);
/* What a libconfig "syntax error" at path:line is likely to be, or NULL. */
const char *ld_syntax_hint(const char *path, int line);
/* The same for the error cfg reports (its file and line), if a syntax error. */
const char *ld_syntax_hint_of(ld_t *ld, const config_t *cfg);
/* conf->binds from every server's listen entries (load_bind.c) */
int         ld_derive_binds(ld_t *ld, const config_setting_t *where);
/* include.c: merge the files of a top-level 'include' into cfg, then drop it */
void        ld_include_globs(ld_t *ld, config_t *cfg);

/* memory from the generation's arena */
void       *ld_calloc(ld_t *ld, size_t n, size_t size);
char       *ld_strdup(ld_t *ld, const char *s);

/* values */
const char *ld_get_string(ld_t *ld, const config_setting_t *s);
int         ld_get_int(const config_setting_t *s, int64_t *v);
char       *ld_resolve_path(ld_t *ld, const char *p);
/* A string or a list of strings, each passing ok() (else errfmt with it). */
int         ld_string_list(ld_t *ld, const config_setting_t *s, const char *what,
                           int (*ok)(const char *), const char *errfmt, lg_strv_t **out);
/* Compile template src, written at s for `what`; an unknown variable is reported at s. */
int         ld_tpl(ld_t *ld, const config_setting_t *s, const char *what, const char *src,
                   lg_tpl_t **out);
/* The same for upper-case ISO 3166 country codes. */
int         ld_countries(ld_t *ld, const config_setting_t *s, lg_strv_t **out);     /* a file read: beside the config */
int         ld_parse_addr(ld_t *ld, const config_setting_t *s, int default_port, lg_addr_t *out);
int         ld_entry_count(ld_t *ld, const config_setting_t *s, int groups, const char *what);
const config_setting_t *ld_entry_at(const config_setting_t *s, int i);

#define FIELD(d, base) ((char *)(base) + (d)->off)

/* load_value.c: structured values, by directive type */
int ld_set_headers(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base);   /* D_HEADERS */
int ld_set_names(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base);     /* D_NAMES, D_STRLIST */
int ld_set_valid(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base);     /* D_VALID */
int ld_set_errpages(ld_t *ld, const directive_t *d, const config_setting_t *s, void *base);  /* D_ERRPAGES */
/* error_pages' "@name": each names a route of the server using it (after the merge) */
void ld_check_errpages(ld_t *ld, const lg_conf_t *conf);
/* A route that proxies to an address of its own server's listen (load_route.c). */
void ld_check_self_routes(ld_t *ld, const lg_conf_t *conf);
int         ld_is_empty_list(const config_setting_t *s);

/* tables */
void        ld_table_unset(const directive_t *t, void *base);
int         ld_table_defaults(ld_t *ld, const directive_t *t, void *base);
int         ld_parse_block(ld_t *ld, const config_setting_t *g, const char *level,
                           const directive_t *t1, void *b1, const directive_t *t2, void *b2);
int         ld_parse_block3(ld_t *ld, const config_setting_t *g, const char *level,
                            const directive_t *t1, void *b1, const directive_t *t2, void *b2,
                            const directive_t *t3, void *b3);

/* the parts in other files */
int         ld_fn_upstreams(ld_t *ld, const config_setting_t *s, void *base);    /* load_upstream.c */
int         ld_stream_upstreams(ld_t *ld, const config_setting_t *s);          /* stream.upstreams */
size_t      ld_unescape(char *s);       /* C escapes in place; the byte count */
int         ld_fn_listen(ld_t *ld, const config_setting_t *s, void *base);     /* load.c */
int         ld_fn_stream(ld_t *ld, const config_setting_t *s, void *base);     /* load_stream.c */
size_t      ld_stream_count_upstreams(const config_setting_t *root);
void        ld_stream_parse(ld_t *ld);      /* after http: stream servers join conf->servers */
void        ld_stream_finish(ld_t *ld);     /* after the binds: routes to HTTP listeners found */
lg_upstream_t *ld_upstream_find(const lg_conf_t *conf, const char *name);
int         ld_fn_routes(ld_t *ld, const config_setting_t *s, void *base);       /* load_route.c */
int         ld_fn_server_name(ld_t *ld, const config_setting_t *s, void *base);  /* load.c */
extern const directive_t ld_tls_dirs[];                                          /* load_server.c */
extern const directive_t ld_common_dirs[];                                       /* load.c */
int         ld_fn_forward(ld_t *ld, const config_setting_t *s, void *base);
int         ld_fn_cluster(ld_t *ld, const config_setting_t *s, void *base);         /* load_cluster.c */
void        ld_cluster_finish(ld_t *ld, const config_setting_t *root);              /* load_cluster.c */
int         ld_same_addr(const lg_addr_t *a, const lg_addr_t *b);                  /* load_stream.c */
int         ld_fn_limit_req_zones(ld_t *ld, const config_setting_t *s, void *base);  /* load_limit.c */
int         ld_fn_limit_conn_zones(ld_t *ld, const config_setting_t *s, void *base);
int         ld_fn_limit_req(ld_t *ld, const config_setting_t *s, void *base);        /* lg_common_t */
int         ld_fn_limit_conn(ld_t *ld, const config_setting_t *s, void *base);
int         ld_fn_cache_use_stale(ld_t *ld, const config_setting_t *s, void *base);   /* load_value.c */
void        ld_limits_finish(ld_t *ld);
void        ld_uvars_prescan(ld_t *ld, const config_t *cfg);                  /* load_map.c */
int         ld_fn_maps(ld_t *ld, const config_setting_t *s, void *base);
int         ld_fn_set(ld_t *ld, const config_setting_t *s, void *base);       /* lg_common_t */
void        ld_uvars_free(lg_conf_t *conf);     /* after the merge: zone names resolved */

#endif

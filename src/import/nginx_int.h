/*
 * The insides of legate --import-nginx, shared by its files:
 *   nginx_parse.c     the nginx configuration language: tokens, the tree
 *   nginx.c           reading (includes), main and http, the output
 *   nginx_level.c     the settings of one level (http, server, location)
 *   nginx_server.c    servers and their locations -> servers and routes
 *   nginx_upstream.c  upstream blocks and proxy_pass targets -> upstreams
 *   imp.c             the text being written, remarks, value conversions
 * Not for use outside src/import/.
 */
#ifndef LEGATE_IMPORT_NGINX_INT_H
#define LEGATE_IMPORT_NGINX_INT_H

#include "import/nginx.h"

#include <stddef.h>
#include <stdio.h>

/* The output text: grows as needed (abort when out of memory: a one-shot
 * command, not the server). */
typedef struct sb {
    char  *p;
    size_t n, cap;
} sb_t;

typedef struct upstream_out {
    char   name[128];
    sb_t   body;            /* the group's text, without its braces */
    int    has_next;        /* next_upstream set already */
    struct upstream_out *next;
} upstream_out_t;

typedef struct imp {
    FILE           *diag;
    const char     *dir;            /* nginx's prefix: the main file's directory */
    int             ndiag;
    upstream_out_t *ups;
    sb_t            zones_req, zones_conn;
    sb_t            maps;           /* the http level's maps, translated */
    sb_t            set_only;       /* names only set declares, empty at http level */
    const ngx_dir_t *http;
    const ngx_dir_t *log_formats[64];
    int             nlog_formats;
    int             nservers;
    int             cache_size_mb;
    int             resolver_used;  /* the http level's resolver went to an upstream */
    char            cache_path[512]; /* proxy_cache_path's directory, "" if unusable */
    long long       cache_disk;      /* its max_size: the disk tier's, bytes (0: none) */
    long long       cache_inactive;  /* its inactive=, ms (-1: not given) */
    int             h2_streams;     /* http2_max_concurrent_streams of http, 0 if none */
    char           *files[256];     /* read, for the parse tree's file names */
    const ngx_dir_t *said[256];     /* inheritance remarks made */
    int             nsaid;
    char           *said_msgs[1024]; /* remarks made */
    int             nsaid_msgs;
    char           *zones[128];      /* limit_req_zone, limit_conn_zone names */
    int             nzones;
    const ngx_dir_t *server;        /* being translated */
    char            named[64][64];  /* its named locations written as routes */
    int             nnamed;
    int             server_quic;    /* it has a listen with quic = true */
    int             nfiles;
    /* the parts of the output, for a directory (--out): the http group's
     * own settings, the upstreams, and each server's text with its name */
    sb_t            part_http, part_ups;
    char           *srv_text[512];
    char            srv_name[512][64];
    int             nsrv_text;
} imp_t;

/* One level: http, server or location. */
typedef struct level {
    const struct level *up;
    const ngx_dir_t    *block;      /* its directives */
    const ngx_dir_t    *self;       /* the server/location directive, NULL for http */
} level_t;

/* imp.c */
void imp_sb_add(sb_t *b, const char *s, size_t n);
void imp_sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imp_sb_str(sb_t *b, const char *s);
void imp_sb_quote(sb_t *b, const char *s);
void imp_ind(sb_t *b, int n);
void imp_report(imp_t *im, const ngx_dir_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int imp_is(const ngx_dir_t *d, const char *name);
const ngx_dir_t *imp_child(const ngx_dir_t *block, const char *name);
long long imp_time_ms(const char *s);
void imp_sb_duration(sb_t *b, long long ms);
long long imp_size(const char *s);
char *imp_template(const char *s, const char **why);
int imp_declared(const char *name, size_t n);
const char *imp_declare(const char *name);
void imp_declared_reset(void);
void imp_undeclare(const char *name);
char *imp_ere(const char *re, int icase, const char **why);
void imp_kv_quoted(sb_t *b, int n, const char *key, const char *val);
void imp_setting_name(char *out, size_t outlen, const char *in);
int imp_file_readable(imp_t *im, const ngx_dir_t *d, const char *path, char *out, size_t outlen);

/* nginx_level.c */
const char *nginx_level_ignored(const char *name);
int nginx_level_handled(const char *name);
const level_t *nginx_level_array(const level_t *lv, const char *const *names);
char *nginx_level_syslog(imp_t *im, const ngx_dir_t *d, const char *target);
void nginx_level_scalars(imp_t *im, sb_t *b, int n, const ngx_dir_t *block, int is_location);
void nginx_level_auth_request(imp_t *im, sb_t *b, int n, const level_t *lv);
int nginx_level_zone_known(const imp_t *im, char kind, const char *name);
void nginx_level_arrays(imp_t *im, sb_t *b, int n, const level_t *lv);
const ngx_dir_t *nginx_level_inherited(const level_t *lv, const char *name);

/* nginx_upstream.c */
upstream_out_t *nginx_upstream_find(imp_t *im, const char *name);
void nginx_upstream_translate(imp_t *im, const ngx_dir_t *d);
const char *nginx_upstream_for(imp_t *im, const ngx_dir_t *d, const char *url,
                               const char **uri, int *tls);

/* nginx_server.c */
void nginx_server_translate(imp_t *im, sb_t *out, const level_t *http, const ngx_dir_t *srv);
void nginx_server_listen_addr(const char *a, char *addr, size_t len);

#endif

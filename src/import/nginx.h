/*
 * legate --import-nginx FILE: an nginx configuration translated to a legate
 * one.  See legate-nginx(7).
 */
#ifndef LEGATE_IMPORT_NGINX_H
#define LEGATE_IMPORT_NGINX_H

#include <stddef.h>
#include <stdio.h>

/* The nginx configuration language's tokens (nginx's ngx_conf_read_token):
 * words (quotes and escapes resolved), ';', '{' and '}'. */
typedef enum { NGX_TOK_WORD, NGX_TOK_SEMI, NGX_TOK_OPEN, NGX_TOK_CLOSE, NGX_TOK_EOF,
               NGX_TOK_ERROR } ngx_tok_kind_t;

typedef struct ngx_lexer {
    const char *p, *end;
    int         line;
    char       *word;           /* the last word, NUL-terminated (owned) */
    size_t      wlen, wcap;
    int         quoted;         /* the last word was quoted */
    const char *error;          /* set with NGX_TOK_ERROR */
} ngx_lexer_t;

void           ngx_lex_init(ngx_lexer_t *lx, const char *text, size_t len);
ngx_tok_kind_t ngx_lex_next(ngx_lexer_t *lx);
void           ngx_lex_free(ngx_lexer_t *lx);

/* An nginx directive tree. */
typedef struct ngx_dir {
    char            **args;     /* args[0] is the name */
    int               nargs;
    const char       *file;
    int               line;
    struct ngx_dir   *block;    /* first child, when it has { } */
    int               has_block;
    struct ngx_dir   *next;
} ngx_dir_t;

/* Parse text into a tree (includes are not followed here).  NULL with
 * *err set (static text) and *errline on a syntax error. */
ngx_dir_t *ngx_parse(const char *text, size_t len, const char *file, const char **err,
                     int *errline);
void       ngx_free(ngx_dir_t *d);

/* Read FILE (following include globs), write the legate configuration to
 * out and what could not be translated to diag.  0, or -1 if FILE could not
 * be read or parsed. */
int lg_import_nginx(const char *file, FILE *out, FILE *diag);
/* The same into a directory when outdir is set (out unused): outdir/legate.conf
 * including the conf.d directory, conf.d/upstreams.conf and one conf.d file per
 * server.  Files that exist are never overwritten (-1). */
int lg_import_nginx_to(const char *file, FILE *out, const char *outdir, FILE *diag);

#endif

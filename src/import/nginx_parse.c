/*
 * The nginx configuration language, as nginx's ngx_conf_read_token reads it:
 * words separated by white space, ';' ending a directive, '{' '}' around a
 * block, '#' starting a comment where a word could start, "..." and '...'
 * quoting, a backslash making the next character ordinary (and kept, but
 * before a quote or a backslash; \n \r \t are control characters, as in
 * nginx), and ${name} kept inside a word.  No allocation but
 * the word buffer and the tree; bounded depth.  Fuzzed by t/fuzz/fuzz_nginx.c.
 */
#include "import/nginx.h"

#include <stdlib.h>
#include <string.h>

#define NGX_MAX_DEPTH 64
#define NGX_MAX_ARGS  1024

void ngx_lex_init(ngx_lexer_t *lx, const char *text, size_t len)
{
    memset(lx, 0, sizeof(*lx));
    lx->p = text;
    lx->end = text + len;
    lx->line = 1;
}

void ngx_lex_free(ngx_lexer_t *lx)
{
    free(lx->word);
    lx->word = NULL;
    lx->wlen = lx->wcap = 0;
}

static int put(ngx_lexer_t *lx, char c)
{
    if (lx->wlen + 2 > lx->wcap) {
        size_t cap = lx->wcap ? lx->wcap * 2 : 64;
        if (cap > (1u << 24)) {
            lx->error = "word too long";
            return -1;
        }
        char *w = realloc(lx->word, cap);
        if (w == NULL) {
            lx->error = "out of memory";
            return -1;
        }
        lx->word = w;
        lx->wcap = cap;
    }
    lx->word[lx->wlen++] = c;
    lx->word[lx->wlen] = '\0';
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char unescape(char c)
{
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default:  return c;
    }
}

ngx_tok_kind_t ngx_lex_next(ngx_lexer_t *lx)
{
    lx->wlen = 0;
    lx->quoted = 0;
    if (put(lx, 'x') < 0)       /* make sure word exists */
        return NGX_TOK_ERROR;
    lx->wlen = 0;
    lx->word[0] = '\0';
    for (;;) {
        while (lx->p < lx->end && is_space(*lx->p)) {
            if (*lx->p == '\n')
                lx->line++;
            lx->p++;
        }
        if (lx->p >= lx->end)
            return NGX_TOK_EOF;
        if (*lx->p != '#')
            break;
        while (lx->p < lx->end && *lx->p != '\n')
            lx->p++;
    }
    char c = *lx->p;
    if (c == ';' || c == '{' || c == '}') {
        lx->p++;
        return c == ';' ? NGX_TOK_SEMI : c == '{' ? NGX_TOK_OPEN : NGX_TOK_CLOSE;
    }
    if (c == '"' || c == '\'') {
        char q = c;
        lx->p++;
        lx->quoted = 1;
        for (;;) {
            if (lx->p >= lx->end) {
                lx->error = "unterminated quoted string";
                return NGX_TOK_ERROR;
            }
            c = *lx->p++;
            if (c == q)
                break;
            if (c == '\n')
                lx->line++;
            if (c == '\\' && lx->p < lx->end) {
                char e = *lx->p++;
                if (e == '\n')
                    lx->line++;
                /* nginx keeps a backslash before anything but the quote,
                 * a backslash and n r t */
                if (e == q || e == '\\' || e == 'n' || e == 'r' || e == 't')
                    c = unescape(e);
                else {
                    if (put(lx, '\\') < 0)
                        return NGX_TOK_ERROR;
                    c = e;
                }
            }
            if (put(lx, c) < 0)
                return NGX_TOK_ERROR;
        }
        /* ')' too, as nginx allows: if ($a = "b c") -- it is then a word of its own */
        if (lx->p < lx->end && !is_space(*lx->p) && *lx->p != ';' && *lx->p != '{'
            && *lx->p != '}' && *lx->p != ')') {
            lx->error = "unexpected character after a quoted string";
            return NGX_TOK_ERROR;
        }
        return NGX_TOK_WORD;
    }
    int brace = 0;              /* inside ${...} */
    while (lx->p < lx->end) {
        c = *lx->p;
        if (!brace && (is_space(c) || c == ';' || c == '}'))
            break;
        if (!brace && c == '{') {
            if (lx->wlen > 0 && lx->word[lx->wlen - 1] == '$')
                brace = 1;
            else
                break;
        } else if (brace && c == '}')
            brace = 0;
        else if (brace && (c == '\n' || c == ';')) {
            lx->error = "unterminated ${ in a word";
            return NGX_TOK_ERROR;
        }
        lx->p++;
        if (c == '\\' && lx->p < lx->end) {
            /* the next character is not special; as in nginx the backslash
             * stays but before a quote, a backslash and n r t */
            char e = *lx->p++;
            if (e == '\n')
                lx->line++;
            if (e == '"' || e == '\'' || e == '\\' || e == 'n' || e == 'r' || e == 't')
                c = unescape(e);
            else {
                if (put(lx, '\\') < 0)
                    return NGX_TOK_ERROR;
                c = e;
            }
        }
        if (put(lx, c) < 0)
            return NGX_TOK_ERROR;
    }
    if (brace) {
        lx->error = "unterminated ${ in a word";
        return NGX_TOK_ERROR;
    }
    return NGX_TOK_WORD;
}

void ngx_free(ngx_dir_t *d)
{
    while (d) {
        ngx_dir_t *next = d->next;
        for (int i = 0; i < d->nargs; i++)
            free(d->args[i]);
        free(d->args);
        ngx_free(d->block);
        free(d);
        d = next;
    }
}

typedef struct {
    ngx_lexer_t  lx;
    const char  *file;
    const char  *err;
    int          errline;
} pstate_t;

static ngx_dir_t *parse_block(pstate_t *ps, int depth, int want_close);

static ngx_dir_t *parse_directive(pstate_t *ps, int depth, ngx_tok_kind_t *endk)
{
    ngx_dir_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        ps->err = "out of memory";
        return NULL;
    }
    d->file = ps->file;
    d->line = ps->lx.line;
    int cap = 0;
    for (;;) {
        if (d->nargs == cap) {
            if (cap >= NGX_MAX_ARGS) {
                ps->err = "too many arguments";
                goto fail;
            }
            cap = cap ? cap * 2 : 4;
            char **a = realloc(d->args, (size_t)cap * sizeof(*a));
            if (a == NULL) {
                ps->err = "out of memory";
                goto fail;
            }
            d->args = a;
        }
        d->args[d->nargs] = strdup(ps->lx.word);
        if (d->args[d->nargs] == NULL) {
            ps->err = "out of memory";
            goto fail;
        }
        d->nargs++;
        ngx_tok_kind_t k = ngx_lex_next(&ps->lx);
        if (k == NGX_TOK_WORD)
            continue;
        if (k == NGX_TOK_SEMI) {
            *endk = k;
            return d;
        }
        if (k == NGX_TOK_OPEN) {
            if (depth + 1 > NGX_MAX_DEPTH) {
                ps->err = "blocks nested too deeply";
                goto fail;
            }
            d->has_block = 1;
            d->block = parse_block(ps, depth + 1, 1);
            if (ps->err)
                goto fail;
            *endk = k;
            return d;
        }
        if (k == NGX_TOK_ERROR)
            ps->err = ps->lx.error;
        else
            ps->err = k == NGX_TOK_EOF ? "unexpected end of file, expecting \";\" or \"}\""
                                       : "unexpected \"}\"";
        goto fail;
    }
fail:
    if (ps->errline == 0)
        ps->errline = ps->lx.line;
    ngx_free(d);
    return NULL;
}

static ngx_dir_t *parse_block(pstate_t *ps, int depth, int want_close)
{
    ngx_dir_t *head = NULL, **tail = &head;
    for (;;) {
        ngx_tok_kind_t k = ngx_lex_next(&ps->lx);
        if (k == NGX_TOK_EOF) {
            if (want_close) {
                ps->err = "unexpected end of file, expecting \"}\"";
                ps->errline = ps->lx.line;
            }
            return head;
        }
        if (k == NGX_TOK_CLOSE) {
            if (!want_close) {
                ps->err = "unexpected \"}\"";
                ps->errline = ps->lx.line;
            }
            return head;
        }
        if (k == NGX_TOK_ERROR) {
            ps->err = ps->lx.error;
            ps->errline = ps->lx.line;
            return head;
        }
        if (k != NGX_TOK_WORD) {
            ps->err = k == NGX_TOK_SEMI ? "unexpected \";\"" : "unexpected \"{\"";
            ps->errline = ps->lx.line;
            return head;
        }
        ngx_tok_kind_t endk;
        ngx_dir_t *d = parse_directive(ps, depth, &endk);
        if (d == NULL)
            return head;
        *tail = d;
        tail = &d->next;
    }
}

ngx_dir_t *ngx_parse(const char *text, size_t len, const char *file, const char **err,
                     int *errline)
{
    pstate_t ps;
    memset(&ps, 0, sizeof(ps));
    ngx_lex_init(&ps.lx, text, len);
    ps.file = file;
    ngx_dir_t *root = parse_block(&ps, 0, 0);
    ngx_lex_free(&ps.lx);
    if (ps.err) {
        ngx_free(root);
        *err = ps.err;
        *errline = ps.errline;
        return NULL;
    }
    *err = NULL;
    *errline = 0;
    return root;
}

/*
 * libFuzzer harness for the nginx configuration reader of legate
 * --import-nginx (src/import/nginx_parse.c): the tokenizer (quotes, escapes,
 * ${var} in words, comments) and the block parser (bounded depth).  Every
 * input either parses to a tree whose directives all have a name and a
 * line, or fails with a message; nothing leaks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "import/nginx.h"

static void walk(const ngx_dir_t *d, int depth)
{
    for (; d; d = d->next) {
        if (d->nargs < 1 || d->args[0] == NULL || d->line < 1 || depth > 64)
            abort();
        for (int i = 0; i < d->nargs; i++)
            (void)strlen(d->args[i]);
        walk(d->block, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *err = NULL;
    int line = 0;
    ngx_dir_t *t = ngx_parse((const char *)data, size, "fuzz.conf", &err, &line);
    if (err == NULL)
        walk(t, 0);
    else if (t != NULL || line < 1)
        abort();
    ngx_free(t);

    /* the lexer alone, to the end */
    ngx_lexer_t lx;
    ngx_lex_init(&lx, (const char *)data, size);
    for (int i = 0; i < 100000; i++) {
        ngx_tok_kind_t k = ngx_lex_next(&lx);
        if (k == NGX_TOK_EOF || k == NGX_TOK_ERROR)
            break;
    }
    ngx_lex_free(&lx);
    return 0;
}

/*
 * Regular expressions that are a literal prefix (relit.c), matched without
 * regexec: "^/api/(.*)$", "^/c(/.*)$", "^/static/" -- the shape nginx's
 * "location /api/ { proxy_pass http://up/; }" takes once translated, and
 * the commonest regex route there is.  glibc's regexec with captures costs
 * thousands of instructions a request for them (a third of a cache hit);
 * a memcmp gives the same answer and the same captures.
 *
 * Recognised: "^" LITERAL, then optionally one group "(.*)" or "(/.*)",
 * then optionally "$" (only after a group: "^L$" is an exact match, left to
 * regexec).  LITERAL is characters that are not ERE operators, or an
 * operator escaped by "\".  Anything else is not recognised, and the route
 * keeps using regexec; the caller keeps the regcomp'd form either way.
 */
#ifndef LEGATE_CORE_RELIT_H
#define LEGATE_CORE_RELIT_H

#include <regex.h>
#include <stddef.h>

typedef enum lg_relit_form {
    LG_RELIT_NONE = 0,          /* not a literal prefix: use regexec */
    LG_RELIT_PREFIX,            /* ^L            : caps[0] = the literal */
    LG_RELIT_REST,              /* ^L(.*)$?      : caps[1] = the rest */
    LG_RELIT_SLASH_REST,        /* ^L(/.*)$?     : the rest starts with "/" */
} lg_relit_form_t;

typedef struct lg_relit {
    lg_relit_form_t form;
    int             icase;      /* ASCII case folded (iregex) */
    size_t          len;
    char            lit[256];
} lg_relit_t;

/* Fill rl from the regex source re; returns rl->form (NONE if not one). */
lg_relit_form_t lg_relit_parse(lg_relit_t *rl, const char *re, int icase);
/* regexec's answer for s[0..n): 1 with caps[0..9] filled as regexec would
 * (unused ones -1), or 0. */
int lg_relit_match(const lg_relit_t *rl, const char *s, size_t n, regmatch_t caps[10]);

#endif

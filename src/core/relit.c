/* Literal-prefix regular expressions: see relit.h. */
#include "core/relit.h"

#include <string.h>
#include <strings.h>

static int is_operator(char c)
{
    return strchr(".[]()*+?{}|^$\\", c) != NULL;
}

lg_relit_form_t lg_relit_parse(lg_relit_t *rl, const char *re, int icase)
{
    memset(rl, 0, sizeof(*rl));
    rl->icase = icase;
    if (re[0] != '^')
        return LG_RELIT_NONE;
    const char *p = re + 1;
    size_t n = 0;
    for (; *p && *p != '('; p++) {
        char c = *p;
        if (c == '\\') {
            /* an escaped operator is itself; an escaped letter or digit is
             * a back-reference or a class in some dialects: not literal */
            if (p[1] == '\0' || !is_operator(p[1]))
                return LG_RELIT_NONE;
            c = *++p;
        } else if (is_operator(c)) {
            if (c == '$')
                break;          /* "^L$": an exact match, regexec's */
            return LG_RELIT_NONE;
        }
        if (n + 1 >= sizeof(rl->lit))
            return LG_RELIT_NONE;
        rl->lit[n++] = c;
    }
    lg_relit_form_t form = LG_RELIT_PREFIX;
    if (*p == '(') {
        if (strncmp(p, "(.*)", 4) == 0) {
            form = LG_RELIT_REST;
            p += 4;
        } else if (strncmp(p, "(/.*)", 5) == 0) {
            form = LG_RELIT_SLASH_REST;
            p += 5;
        } else {
            return LG_RELIT_NONE;
        }
        if (*p == '$')
            p++;                /* ".*" runs to the end anyway */
    }
    if (*p != '\0' || n == 0)
        return LG_RELIT_NONE;
    rl->len = n;
    rl->form = form;
    return form;
}

int lg_relit_match(const lg_relit_t *rl, const char *s, size_t n, regmatch_t caps[10])
{
    if (n < rl->len || (rl->icase ? strncasecmp(s, rl->lit, rl->len) : memcmp(s, rl->lit, rl->len)) != 0)
        return 0;
    if (rl->form == LG_RELIT_SLASH_REST && (n == rl->len || s[rl->len] != '/'))
        return 0;
    memset(caps, -1, sizeof(regmatch_t) * 10);
    caps[0].rm_so = 0;
    if (rl->form == LG_RELIT_PREFIX) {
        caps[0].rm_eo = (regoff_t)rl->len;
    } else {
        caps[0].rm_eo = (regoff_t)n;
        caps[1].rm_so = (regoff_t)rl->len;
        caps[1].rm_eo = (regoff_t)n;
    }
    return 1;
}

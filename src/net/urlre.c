/* URL regex filters (see acl.h for the contract). */
#include "net/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <regex.h>

#include "core/arena.h"
#include "net/text.h"

/* ================================================================== */
/* URL regex filters                                                   */

struct lg_urlre {
    regex_t *re;                    /* owned array, each regcomp'd */
    char   **pat;                   /* owned array of owned strings */
    size_t   n, cap;
};

lg_urlre_t *lg_urlre_new(void)
{
    return calloc(1, sizeof(lg_urlre_t));
}

void lg_urlre_free(lg_urlre_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        regfree(&s->re[i]);
        free(s->pat[i]);
    }
    free(s->re);
    free(s->pat);
    free(s);
}

int lg_urlre_add(lg_urlre_t *s, const char *pattern, char *err, size_t errlen)
{
    if (s->n >= INT32_MAX) {
        snprintf(err, errlen, "too many patterns");
        return -1;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        regex_t *re = realloc(s->re, cap * sizeof(*re));
        if (re == NULL)
            goto nomem;
        s->re = re;
        char **pat = realloc(s->pat, cap * sizeof(*pat));
        if (pat == NULL)
            goto nomem;
        s->pat = pat;
        s->cap = cap;
    }
    char *copy = strdup(pattern);
    if (copy == NULL)
        goto nomem;
    int rc = regcomp(&s->re[s->n], pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[200];
        regerror(rc, &s->re[s->n], msg, sizeof(msg));
        snprintf(err, errlen, "bad regular expression \"%s\": %s", pattern, msg);
        free(copy);
        return -1;
    }
    s->pat[s->n] = copy;
    return (int)s->n++;

nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int lg_urlre_load(lg_urlre_t *s, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = lg_text_read_file(path, &len, err, errlen);
    if (buf == NULL)
        return -1;
    int count = 0;
    size_t line = 0;
    (void)len;
    for (char *p = buf, *eol; p != NULL; p = eol ? eol + 1 : NULL) {
        eol = strchr(p, '\n');
        if (eol != NULL)
            *eol = '\0';
        line++;
        char *e = p + strlen(p);
        while (p < e && lg_text_space((unsigned char)*p))
            p++;
        while (e > p && lg_text_space((unsigned char)e[-1]))
            *--e = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        char msg[512];
        if (lg_urlre_add(s, p, msg, sizeof(msg)) < 0) {
            snprintf(err, errlen, "%s:%zu: %s", path, line, msg);
            free(buf);
            return -1;
        }
        count++;
    }
    free(buf);
    return count;
}

int lg_urlre_match(const lg_urlre_t *s, const char *url, size_t len)
{
    for (size_t i = 0; i < s->n; i++) {
        regmatch_t m[1];
        m[0].rm_so = 0;
        m[0].rm_eo = (regoff_t)len;
        if (regexec(&s->re[i], url, 1, m, REG_STARTEND) == 0)
            return (int)i;
    }
    return -1;
}

const char *lg_urlre_pattern(const lg_urlre_t *s, int idx)
{
    return idx >= 0 && (size_t)idx < s->n ? s->pat[idx] : NULL;
}

size_t lg_urlre_count(const lg_urlre_t *s)
{
    return s->n;
}

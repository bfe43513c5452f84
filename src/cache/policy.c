#include "cache/policy.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void lg_cc_init(lg_cc_t *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = cc->s_maxage = LG_CC_UNSET;
    cc->stale_while_revalidate = cc->stale_if_error = LG_CC_UNSET;
    cc->max_stale = cc->min_fresh = LG_CC_UNSET;
}

static int64_t num(const char *v, size_t n)
{
    if (n && v[0] == '"' && n >= 2 && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n == 0)
        return LG_CC_UNSET;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)v[i]))
            return LG_CC_UNSET;
        if (x < INT64_C(100000000000))
            x = x * 10 + (v[i] - '0');      /* huge values saturate (RFC 9111 1.2.2) */
    }
    return x;
}

static void add_fields(lg_cc_t *cc, const char *v, size_t n)
{
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    size_t used = strlen(cc->fields);
    for (size_t i = 0; i < n && used + 2 < sizeof(cc->fields); i++) {
        char c = (char)tolower((unsigned char)v[i]);
        if (c == ' ' || c == '\t')
            continue;
        if (i == 0 && used)
            cc->fields[used++] = ',';
        cc->fields[used++] = c;
    }
    cc->fields[used] = '\0';
}

void lg_cc_parse(lg_cc_t *cc, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t ns = i;
        while (i < n && v[i] != '=' && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        size_t nl = i - ns;
        const char *arg = NULL;
        size_t al = 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] == '=') {
            i++;
            arg = v + i;
            if (i < n && v[i] == '"') {
                i++;
                while (i < n && v[i] != '"')
                    i++;
                if (i < n)
                    i++;
            } else {
                while (i < n && v[i] != ',')
                    i++;
            }
            al = (size_t)(v + i - arg);
            while (al && (arg[al - 1] == ' ' || arg[al - 1] == '\t'))
                al--;
        }
        const char *d = v + ns;
#define D(lit) (nl == sizeof(lit) - 1 && strncasecmp(d, lit, nl) == 0)
        if (D("no-store"))
            cc->no_store = 1;
        else if (D("no-cache")) {
            if (arg && al > 2) {
                cc->no_cache_fields = 1;
                add_fields(cc, arg, al);
            } else {
                cc->no_cache = 1;
            }
        } else if (D("private")) {
            if (arg && al > 2) {
                cc->private_fields = 1;
                add_fields(cc, arg, al);
            } else {
                cc->private_ = 1;
            }
        } else if (D("public"))
            cc->public_ = 1;
        else if (D("must-revalidate"))
            cc->must_revalidate = 1;
        else if (D("proxy-revalidate"))
            cc->proxy_revalidate = 1;
        else if (D("only-if-cached"))
            cc->only_if_cached = 1;
        else if (D("no-transform"))
            cc->no_transform = 1;
        else if (D("max-age") && arg)
            cc->max_age = num(arg, al);
        else if (D("s-maxage") && arg)
            cc->s_maxage = num(arg, al);
        else if (D("stale-while-revalidate") && arg)
            cc->stale_while_revalidate = num(arg, al);
        else if (D("stale-if-error") && arg)
            cc->stale_if_error = num(arg, al);
        else if (D("max-stale"))
            cc->max_stale = arg ? num(arg, al) : INT64_MAX;
        else if (D("min-fresh") && arg)
            cc->min_fresh = num(arg, al);
#undef D
    }
}

int lg_status_heuristic(int status)
{
    switch (status) {
    case 200: case 203: case 204: case 206: case 300: case 301: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return 1;
    default:
        return 0;
    }
}

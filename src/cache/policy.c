#include "cache/policy.h"
#include "cache/disk.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
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
        else if (D("immutable"))
            cc->immutable = 1;
        else if (D("must-understand"))
            cc->must_understand = 1;
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

/* ---- HTTP-date, strictly ---- */

static int digits(const char *s, int n, int *out)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        x = x * 10 + (s[i] - '0');
    }
    *out = x;
    return 1;
}

static int name_of(const char *s, size_t n, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0)
            return i;
    return -1;
}

static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
static const char *const days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
static const char *const days_l[] = { "Monday", "Tuesday", "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday" };

/* "HH:MM:SS" */
static int time_of(const char *s, int *hh, int *mm, int *ss)
{
    return digits(s, 2, hh) && s[2] == ':' && digits(s + 3, 2, mm) && s[5] == ':' &&
           digits(s + 6, 2, ss) && *hh <= 23 && *mm <= 59 && *ss <= 60;
}

static int64_t civil(int y, int m, int d, int hh, int mm, int ss)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m < 0 || d < 1 || d > mdays[m] || (m == 1 && d == 29 && !leap))
        return -1;
    /* days from civil (Howard Hinnant's algorithm), no time zone involved */
    int yy = y - (m < 2), mo = m + 1;
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days_ = era * 146097 + doe - 719468;
    return days_ * 86400 + hh * 3600 + mm * 60 + ss;
}

int64_t lg_cache_date(const char *s, size_t n)
{
    int d, y, hh, mm, ss, m;
    if (n == 29 && s[3] == ',' && s[4] == ' ') {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        if (name_of(s, 3, days, 7) < 0 || !digits(s + 5, 2, &d) || s[7] != ' ' ||
            (m = name_of(s + 8, 3, months, 12)) < 0 || s[11] != ' ' || !digits(s + 12, 4, &y) ||
            s[16] != ' ' || !time_of(s + 17, &hh, &mm, &ss) || s[25] != ' ' ||
            strncasecmp(s + 26, "GMT", 3) != 0)
            return -1;
        return civil(y, m, d, hh, mm, ss);
    }
    if (n == 24 && s[3] == ' ') {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        if (name_of(s, 3, days, 7) < 0 || (m = name_of(s + 4, 3, months, 12)) < 0 ||
            s[7] != ' ' || s[10] != ' ' || !time_of(s + 11, &hh, &mm, &ss) || s[19] != ' ' ||
            !digits(s + 20, 4, &y))
            return -1;
        if (s[8] == ' ') {
            if (!digits(s + 9, 1, &d))
                return -1;
        } else if (!digits(s + 8, 2, &d)) {
            return -1;
        }
        return civil(y, m, d, hh, mm, ss);
    }
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    const char *comma = memchr(s, ',', n < 10 ? n : 10);
    if (comma == NULL || name_of(s, (size_t)(comma - s), days_l, 7) < 0)
        return -1;
    size_t off = (size_t)(comma - s) + 1;
    if (n - off != 23)
        return -1;
    const char *p = s + off;
    if (p[0] != ' ' || !digits(p + 1, 2, &d) || p[3] != '-' ||
        (m = name_of(p + 4, 3, months, 12)) < 0 || p[7] != '-' || !digits(p + 8, 2, &y) ||
        p[10] != ' ' || !time_of(p + 11, &hh, &mm, &ss) || p[19] != ' ' ||
        strncasecmp(p + 20, "GMT", 3) != 0)
        return -1;
    y += y < 70 ? 2000 : 1900;
    return civil(y, m, d, hh, mm, ss);
}

/* ---- Age ---- */

int64_t lg_cache_age(const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (x < LG_DELTA_MAX)
            x = x * 10 + (v[i] - '0');
    }
    return x > LG_DELTA_MAX ? LG_DELTA_MAX : x;
}

/* ---- Vary ---- */

void lg_vary_init(lg_vary_t *v)
{
    memset(v, 0, sizeof(*v));
}

static int vary_has_n(const lg_vary_t *v, const char *name, size_t n)
{
    for (const char *p = v->fields; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && strncasecmp(p, name, n) == 0)
            return 1;
        p += k;
        if (*p == ',')
            p++;
    }
    return 0;
}

int lg_vary_has(const lg_vary_t *v, const char *name)
{
    return vary_has_n(v, name, strlen(name));
}

void lg_vary_add(lg_vary_t *v, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t b = i;
        while (i < n && s[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
            e--;
        if (e == b)
            continue;
        if (e - b == 1 && s[b] == '*') {
            v->star = 1;
            continue;
        }
        for (size_t k = b; k < e; k++) {
            unsigned char c = (unsigned char)s[k];
            /* a token (RFC 9110 5.6.2), or the list is not one we can key on */
            if (c <= ' ' || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c)) {
                v->overflow = 1;
                return;
            }
        }
        if (vary_has_n(v, s + b, e - b))
            continue;
        if (v->len + (e - b) + 2 > sizeof(v->fields)) {
            v->overflow = 1;
            return;
        }
        if (v->len)
            v->fields[v->len++] = ',';
        for (size_t k = b; k < e; k++)
            v->fields[v->len++] = (char)tolower((unsigned char)s[k]);
        v->fields[v->len] = '\0';
    }
}

/* ---- freshness ---- */

int64_t lg_cache_lifetime(const lg_fresh_in_t *in, int *explicit_)
{
    const lg_cc_t *cc = in->cc;
    int64_t base = in->date >= 0 ? in->date : in->now;
    *explicit_ = 1;
    if (in->shared && cc->s_maxage != LG_CC_UNSET)
        return cc->s_maxage * 1000;
    if (cc->max_age != LG_CC_UNSET)
        return cc->max_age * 1000;
    if (in->nexpires > 0) {
        /* not one valid HTTP-date: already expired (RFC 9111 5.3) */
        if (in->nexpires > 1 || in->expires < 0 || in->expires <= base)
            return 0;
        int64_t d = in->expires - base;
        return (d > LG_DELTA_MAX ? LG_DELTA_MAX : d) * 1000;
    }
    *explicit_ = 0;
    if (in->configured >= 0)
        return in->configured;
    if ((lg_status_heuristic(in->status) || cc->public_) && in->last_modified >= 0 &&
        in->last_modified < base) {
        int64_t life = (base - in->last_modified) * 100;    /* 10% of its age (RFC 9111 4.2.2) */
        return life > 86400 * 1000 ? 86400 * 1000 : life;
    }
    return -1;
}

const char *lg_cache_stale_word(int how, int status)
{
    switch (how) {
    case LG_STALE_ERROR:   return "error";
    case LG_STALE_TIMEOUT: return "timeout";
    case LG_STALE_INVALID: return "invalid_header";
    default:               break;
    }
    switch (status) {
    case 500: return "http_500";
    case 502: return "http_502";
    case 503: return "http_503";
    case 504: return "http_504";
    case 403: return "http_403";
    case 404: return "http_404";
    case 429: return "http_429";
    default:  return NULL;
    }
}

int lg_cache_stale_named(char *const *words, size_t n, const char *word)
{
    int on = 0;
    for (size_t i = 0; word && i < n; i++) {
        if (strcmp(words[i], "off") == 0)
            return 0;
        on |= strcmp(words[i], word) == 0;
    }
    return on;
}

int lg_cache_must_revalidate(const lg_cc_t *cc, int shared)
{
    return cc->no_cache || cc->must_revalidate ||
           (shared && (cc->proxy_revalidate || cc->s_maxage != LG_CC_UNSET));
}

int lg_cache_304_updates(const char *name, size_t n, int gzipped)
{
    static const char *const keep[] = {
        "content-length", "transfer-encoding", "content-encoding", "content-range", "vary",
        "age", "set-cookie", "x-cache", NULL,
    };
    for (int i = 0; keep[i]; i++)
        if (strlen(keep[i]) == n && strncasecmp(name, keep[i], n) == 0)
            return 0;
    return !(gzipped && n == 4 && strncasecmp(name, "etag", 4) == 0);
}

int lg_status_understood(int status)
{
    switch (status) {
    case 200: case 203: case 204: case 300: case 301: case 302: case 307: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return 1;
    default:
        return 0;
    }
}

int lg_cache_store_rule(const lg_store_in_t *in)
{
    const lg_cc_t *cc = in->cc;
    if (in->req_no_store)
        return LG_STORE_NO;
    if (cc->must_understand) {
        if (!lg_status_understood(in->status))
            return LG_STORE_NO;
    } else if (cc->no_store) {
        return LG_STORE_NO;
    }
    if (cc->private_ && in->shared)
        return LG_STORE_NO;
    if (in->authorized && in->shared && !in->store_authorized && !cc->public_ &&
        !cc->must_revalidate && cc->s_maxage == LG_CC_UNSET)
        return LG_STORE_NO;
    if (in->set_cookie) {
        if (in->cookie_ignored)
            return LG_STORE_NO_COOKIE;
        if (!in->store_set_cookie)
            return LG_STORE_NO;
    }
    return LG_STORE_YES;
}

int lg_cache_usable(const lg_cc_t *rc, int64_t age_ms, int64_t left_ms, int must_revalidate,
                    int immutable)
{
    int reload_ok = immutable && left_ms > 0;   /* RFC 8246: no revalidation while fresh */
    if (rc->no_cache && !reload_ok)
        return 0;
    if (rc->max_age != LG_CC_UNSET && age_ms > rc->max_age * 1000 && !reload_ok)
        return 0;
    if (rc->min_fresh != LG_CC_UNSET && left_ms < rc->min_fresh * 1000)
        return 0;
    if (left_ms > 0)
        return 1;
    /* stale: max-stale lets the client accept it, unless the origin forbade */
    return rc->max_stale != LG_CC_UNSET && !must_revalidate &&
           (rc->max_stale == INT64_MAX || -left_ms <= rc->max_stale * 1000);
}

/* ---- Vary: normalised request fields ---- */

typedef struct vel {
    char    text[96];           /* the element without its q parameter */
    int     q;                  /* thousandths */
} vel_t;

static int vel_cmp(const void *a, const void *b)
{
    const vel_t *x = a, *y = b;
    if (x->q != y->q)
        return y->q - x->q;
    return strcmp(x->text, y->text);
}

/* "0.8", "1", "1.000": thousandths, or -1 */
static int qvalue(const char *v, size_t n)
{
    if (n == 0 || (v[0] != '0' && v[0] != '1'))
        return -1;
    int q = (v[0] - '0') * 1000, scale = 100;
    if (n > 1) {
        if (v[1] != '.' || n > 5)
            return -1;
        for (size_t i = 2; i < n; i++, scale /= 10) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            q += (v[i] - '0') * scale;
        }
    }
    return q > 1000 ? -1 : q;
}

size_t lg_vary_normalise(const char *v, size_t n, char *out, size_t outlen)
{
    vel_t el[32];
    size_t ne = 0, i = 0;
    while (i < n && ne < sizeof(el) / sizeof(el[0])) {
        size_t b = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i++;
        /* the element, lower case, no whitespace; its q parameter apart */
        vel_t *x = &el[ne];
        size_t tl = 0;
        x->q = 1000;
        for (size_t k = b; k < e;) {
            size_t pe = k;
            while (pe < e && v[pe] != ';')
                pe++;
            char part[96];
            size_t pl = 0;
            for (size_t j = k; j < pe && pl + 1 < sizeof(part); j++)
                if ((unsigned char)v[j] > ' ' && (unsigned char)v[j] < 0x7f)    /* visible only */
                    part[pl++] = (char)tolower((unsigned char)v[j]);
            part[pl] = '\0';
            if (k > b && pl > 2 && part[0] == 'q' && part[1] == '=') {
                int q = qvalue(part + 2, pl - 2);
                x->q = q < 0 ? 1000 : q;
            } else if (pl && tl + pl + 2 < sizeof(x->text)) {
                if (k > b)
                    x->text[tl++] = ';';
                memcpy(x->text + tl, part, pl);
                tl += pl;
            }
            k = pe + 1;
        }
        x->text[tl] = '\0';
        if (tl == 0)
            continue;
        int dup = 0;
        for (size_t k = 0; k < ne && !dup; k++)
            dup = strcmp(el[k].text, x->text) == 0;
        if (!dup)
            ne++;
    }
    qsort(el, ne, sizeof(el[0]), vel_cmp);
    size_t used = 0;
    if (outlen == 0)
        return 0;
    out[0] = '\0';
    for (size_t k = 0; k < ne; k++) {
        char one[112];
        int m;
        if (el[k].q == 1000) {
            m = snprintf(one, sizeof(one), "%s", el[k].text);
        } else {
            char qs[24];
            snprintf(qs, sizeof(qs), "%d.%03d", el[k].q / 1000, el[k].q % 1000);
            size_t ql = strlen(qs);
            while (ql > 3 && qs[ql - 1] == '0')
                qs[--ql] = '\0';
            if (qs[ql - 1] == '0' && ql == 3)
                qs[1] = '\0';      /* "0.0" -> "0" */
            m = snprintf(one, sizeof(one), "%s;q=%s", el[k].text, qs);
        }
        if (m < 0 || used + (size_t)m + (used ? 1 : 0) + 1 > outlen)
            break;
        if (used)
            out[used++] = ',';
        memcpy(out + used, one, (size_t)m + 1);
        used += (size_t)m;
    }
    return used;
}

int lg_cache_post_storable(int status, const lg_cc_t *cc, int nexpires, int shared)
{
    if (!lg_status_understood(status))
        return 0;
    return cc->max_age != LG_CC_UNSET || (shared && cc->s_maxage != LG_CC_UNSET) || nexpires > 0;
}

/* ---- Structured Fields dictionaries (RFC 8941), validated only ---- */

static int sf_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static int sf_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int sf_key(const char *v, size_t n, size_t *i)
{
    if (*i >= n || !(sf_lcalpha(v[*i]) || v[*i] == '*'))
        return 0;
    while (*i < n && (sf_lcalpha(v[*i]) || sf_digit(v[*i]) || strchr("_-.*", v[*i])))
        (*i)++;
    return 1;
}

static int sf_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || sf_digit(c) ||
           (c && strchr("!#$%&'*+-.^_`|~:/", c));
}

static int sf_bare(const char *v, size_t n, size_t *i)
{
    if (*i >= n)
        return 0;
    char c = v[*i];
    if (c == '-' || sf_digit(c)) {
        size_t k = *i + (c == '-'), d = 0;
        while (k < n && sf_digit(v[k]))
            k++, d++;
        if (d == 0)
            return 0;
        if (k < n && v[k] == '.') {
            size_t f = 0;
            k++;
            while (k < n && sf_digit(v[k]))
                k++, f++;
            if (d > 12 || f == 0 || f > 3)
                return 0;
        } else if (d > 15) {
            return 0;
        }
        *i = k;
        return 1;
    }
    if (c == '"') {
        size_t k = *i + 1;
        while (k < n && v[k] != '"') {
            if (v[k] == '\\') {
                if (k + 1 >= n || (v[k + 1] != '"' && v[k + 1] != '\\'))
                    return 0;
                k++;
            } else if ((unsigned char)v[k] < 0x20 || (unsigned char)v[k] > 0x7e) {
                return 0;
            }
            k++;
        }
        if (k >= n)
            return 0;
        *i = k + 1;
        return 1;
    }
    if (c == '?') {
        if (*i + 1 >= n || (v[*i + 1] != '0' && v[*i + 1] != '1'))
            return 0;
        *i += 2;
        return 1;
    }
    if (c == ':') {
        size_t k = *i + 1;
        while (k < n && v[k] != ':') {
            char b = v[k];
            if (!((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || sf_digit(b) ||
                  b == '+' || b == '/' || b == '='))
                return 0;
            k++;
        }
        if (k >= n)
            return 0;
        *i = k + 1;
        return 1;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*') {
        size_t k = *i + 1;
        while (k < n && sf_tchar(v[k]))
            k++;
        *i = k;
        return 1;
    }
    return 0;
}

static int sf_params(const char *v, size_t n, size_t *i)
{
    while (*i < n && v[*i] == ';') {
        (*i)++;
        while (*i < n && v[*i] == ' ')
            (*i)++;
        if (!sf_key(v, n, i))
            return 0;
        if (*i < n && v[*i] == '=') {
            (*i)++;
            if (!sf_bare(v, n, i))
                return 0;
        }
    }
    return 1;
}

static int sf_item_or_list(const char *v, size_t n, size_t *i)
{
    if (*i < n && v[*i] == '(') {
        (*i)++;
        for (;;) {
            while (*i < n && v[*i] == ' ')
                (*i)++;
            if (*i >= n)
                return 0;
            if (v[*i] == ')') {
                (*i)++;
                break;
            }
            if (!sf_bare(v, n, i) || !sf_params(v, n, i))
                return 0;
            if (*i < n && v[*i] != ' ' && v[*i] != ')')
                return 0;
        }
        return sf_params(v, n, i);
    }
    return sf_bare(v, n, i) && sf_params(v, n, i);
}

int lg_sf_dictionary_valid(const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && v[i] == ' ')
        i++;
    while (n > i && v[n - 1] == ' ')
        n--;
    if (i >= n)
        return 0;                       /* empty: not a value to obey */
    for (;;) {
        if (!sf_key(v, n, &i))
            return 0;
        if (i < n && v[i] == '=') {
            i++;
            if (!sf_item_or_list(v, n, &i))
                return 0;
        } else if (!sf_params(v, n, &i)) {
            return 0;
        }
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i >= n)
            return 1;
        if (v[i] != ',')
            return 0;
        i++;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i >= n)
            return 0;                   /* a trailing comma */
    }
}

/* ---- partial content ---- */

/* digits at v[*i..]: the number, or -1 (none, or past 2^62) */
static int64_t dnum(const char *v, size_t n, size_t *i)
{
    size_t b = *i;
    int64_t x = 0;
    while (*i < n && v[*i] >= '0' && v[*i] <= '9') {
        if (x > (INT64_C(1) << 62) / 10)
            return -1;
        x = x * 10 + (v[(*i)++] - '0');
    }
    return *i > b ? x : -1;
}

int lg_content_range(const char *v, size_t n, int64_t *first, int64_t *last, int64_t *complete)
{
    size_t i = 0;
    if (n < 6 || strncasecmp(v, "bytes ", 6) != 0)
        return 0;
    i = 6;
    while (i < n && v[i] == ' ')
        i++;
    int64_t a = dnum(v, n, &i);
    if (a < 0 || i >= n || v[i++] != '-')
        return 0;
    int64_t b = dnum(v, n, &i);
    if (b < 0 || i >= n || v[i++] != '/')
        return 0;
    int64_t c = dnum(v, n, &i);
    if (c < 0 || i != n || a > b || b >= c)
        return 0;
    *first = a;
    *last = b;
    *complete = c;
    return 1;
}

int lg_range_one(const char *v, size_t n, int64_t len, int64_t *from, int64_t *to)
{
    size_t i = 0;
    if (v == NULL || n < 7 || strncasecmp(v, "bytes=", 6) != 0 || memchr(v, ',', n))
        return 0;                       /* several ranges: the whole body instead */
    i = 6;
    while (i < n && v[i] == ' ')
        i++;
    int64_t a = -1, b = -1;
    if (i < n && v[i] != '-' && (a = dnum(v, n, &i)) < 0)
        return 0;
    if (i >= n || v[i++] != '-')
        return 0;
    if (i < n && (b = dnum(v, n, &i)) < 0)
        return 0;
    while (i < n && v[i] == ' ')
        i++;
    if (i != n || (a < 0 && b < 0))
        return 0;
    if (a < 0) {                        /* the last b bytes */
        if (b == 0 || len == 0)
            return -1;
        *from = b >= len ? 0 : len - b;
        *to = len - 1;
        return 1;
    }
    if (b >= 0 && b < a)
        return 0;                       /* invalid: ignored (RFC 9110 14.1.1) */
    if (a >= len)
        return -1;
    *from = a;
    *to = b < 0 || b >= len ? len - 1 : b;
    return 1;
}

static int range_cmp(const void *x, const void *y)
{
    const lg_range_t *a = x, *b = y;
    return a->from < b->from ? -1 : a->from > b->from ? 1 : 0;
}

int lg_range_parse(const char *v, size_t n, int64_t len, lg_range_t *out, int max)
{
    size_t i = 0;
    if (v == NULL || max < 1 || max > LG_RANGES_LIMIT || n < 6 || strncasecmp(v, "bytes", 5) != 0)
        return 0;
    i = 5;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i >= n || v[i++] != '=')
        return 0;
    int specs = 0, k = 0;
    for (;;) {
        /* 1#range-spec: empty elements and whitespace around commas */
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i >= n)
            break;
        int64_t a = -1, b = -1;
        if (v[i] != '-' && (a = dnum(v, n, &i)) < 0)
            return 0;
        if (i >= n || v[i++] != '-')
            return 0;
        if (i < n && v[i] >= '0' && v[i] <= '9' && (b = dnum(v, n, &i)) < 0)
            return 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] != ',')
            return 0;
        if (a < 0 && b < 0)
            return 0;                   /* "-" alone */
        if (a >= 0 && b >= 0 && b < a)
            return 0;                   /* invalid: the field is ignored (14.1.1) */
        if (++specs > max)
            return 0;                   /* too many: the whole instead */
        int64_t f, t;
        if (a < 0) {                    /* the last b bytes */
            if (b == 0 || len == 0)
                continue;
            f = b >= len ? 0 : len - b;
            t = len - 1;
        } else {
            if (a >= len)
                continue;               /* not satisfiable: left out */
            f = a;
            t = b < 0 || b >= len ? len - 1 : b;
        }
        out[k].from = f;
        out[k].to = t;
        k++;
    }
    if (specs == 0)
        return 0;
    if (k == 0)
        return -1;
    /* coalesce what overlaps or touches; keep the order asked otherwise */
    lg_range_t sorted[LG_RANGES_LIMIT];
    memcpy(sorted, out, sizeof(lg_range_t) * (size_t)k);
    qsort(sorted, (size_t)k, sizeof(lg_range_t), range_cmp);
    int m = 0;
    for (int j = 0; j < k; j++) {
        if (m && sorted[j].from <= sorted[m - 1].to + 1) {
            if (sorted[j].to > sorted[m - 1].to)
                sorted[m - 1].to = sorted[j].to;
        } else {
            sorted[m++] = sorted[j];
        }
    }
    if (m < k)
        memcpy(out, sorted, sizeof(lg_range_t) * (size_t)m);
    return m;
}

int lg_range_union(int64_t a1, int64_t b1, int64_t a2, int64_t b2, int64_t *a, int64_t *b)
{
    if (a2 > b1 + 1 || a1 > b2 + 1)
        return 0;                       /* a gap between them */
    *a = a1 < a2 ? a1 : a2;
    *b = b1 > b2 ? b1 : b2;
    return 1;
}

/* ---- the disk tier's file header (used by disk.c; pure, so fuzzed here) ---- */

uint32_t lg_disk_crc(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    crc = ~crc;
    while (n--) {
        crc ^= *b++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

int lg_disk_header_check(const char *p, size_t n, uint64_t fsize, lg_disk_hdr_t *h)
{
    if (n < sizeof(*h))
        return -1;
    memcpy(h, p, sizeof(*h));
    if (memcmp(h->magic, LG_DISK_MAGIC, 8) != 0 || h->keylen == 0 || h->keylen > LG_DISK_KEY_MAX ||
        h->headlen == 0 || h->headlen > 65536 || h->meta.status < 100 || h->meta.status > 999)
        return -1;
    uint64_t fixed = sizeof(*h) + (uint64_t)h->keylen + h->headlen;
    if (h->bodylen > fsize || fsize - h->bodylen != fixed || n < fixed)
        return -1;              /* truncated, grown, or lengths that do not add up */
    if (lg_disk_crc(0, p + sizeof(*h), (size_t)(h->keylen + h->headlen)) != h->crc)
        return -1;
    return 0;
}

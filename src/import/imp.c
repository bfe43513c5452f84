/*
 * What every part of legate --import-nginx uses: the text being written
 * (sb_t), remarks on diag (FILE:LINE: directive: why, each said once), and
 * nginx values as legate's (durations, sizes, variables as templates, PCRE
 * as POSIX extended regular expressions).
 */
#include "import/nginx_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <grp.h>
#include <regex.h>
#include <strings.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "net/htpasswd.h"
#include "pipeline/vars.h"

void imp_sb_add(sb_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void imp_sb_printf(sb_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        imp_sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    imp_sb_add(b, big, (size_t)n);
    free(big);
}

void imp_sb_str(sb_t *b, const char *s)
{
    imp_sb_add(b, s, strlen(s));
}

/* a libconfig string literal */
void imp_sb_quote(sb_t *b, const char *s)
{
    imp_sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            imp_sb_printf(b, "\\%c", c);
        else if (c == '\n')
            imp_sb_str(b, "\\n");
        else if (c == '\t')
            imp_sb_str(b, "\\t");
        else if (c == '\r')
            imp_sb_str(b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            imp_sb_printf(b, "\\x%02x", c);
        else
            imp_sb_add(b, (const char *)&c, 1);
    }
    imp_sb_add(b, "\"", 1);
}

void imp_ind(sb_t *b, int n)
{
    for (int i = 0; i < n; i++)
        imp_sb_str(b, "    ");
}

void imp_report(imp_t *im, const ngx_dir_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void imp_report(imp_t *im, const ngx_dir_t *d, const char *fmt, ...)
{
    char msg[1024];
    int k = snprintf(msg, sizeof(msg), "%s:%d: %s: ", d->file, d->line, d->args[0]);
    va_list ap;
    va_start(ap, fmt);
    if (k > 0 && (size_t)k < sizeof(msg))
        vsnprintf(msg + k, sizeof(msg) - (size_t)k, fmt, ap);
    va_end(ap);
    /* a server's directive resolved for each of its locations: said once */
    for (int i = 0; i < im->nsaid_msgs; i++)
        if (strcmp(im->said_msgs[i], msg) == 0)
            return;
    if (im->nsaid_msgs < (int)(sizeof(im->said_msgs) / sizeof(im->said_msgs[0]))) {
        char *c = strdup(msg);
        if (c)
            im->said_msgs[im->nsaid_msgs++] = c;
    }
    fprintf(im->diag, "%s\n", msg);
    im->ndiag++;
}

int imp_is(const ngx_dir_t *d, const char *name)
{
    return strcmp(d->args[0], name) == 0;
}

const ngx_dir_t *imp_child(const ngx_dir_t *block, const char *name)
{
    const ngx_dir_t *found = NULL;
    for (const ngx_dir_t *d = block; d; d = d->next)
        if (imp_is(d, name))
            found = d;      /* nginx: the last one would be a duplicate error; take it */
    return found;
}

/* ---------------------------------------------------------------- values */

/* nginx time ("30", "500ms", "1h30m") in milliseconds; -1 if bad */
long long imp_time_ms(const char *s)
{
    long long total = 0;
    const char *p = s;
    if (*p == '\0')
        return -1;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -1;
        long long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p++ - '0');
            if (v > 100000000000LL)
                return -1;
        }
        long long mul = 1000;
        if (p[0] == 'm' && p[1] == 's') { mul = 1; p += 2; }
        else if (*p == 's') { mul = 1000; p++; }
        else if (*p == 'm') { mul = 60000; p++; }
        else if (*p == 'h') { mul = 3600000; p++; }
        else if (*p == 'd') { mul = 86400000; p++; }
        else if (*p == 'w') { mul = 7 * 86400000LL; p++; }
        else if (*p == 'M') { mul = 30 * 86400000LL; p++; }
        else if (*p == 'y') { mul = 365 * 86400000LL; p++; }
        else if (*p != '\0')
            return -1;
        total += v * mul;
    }
    return total;
}

void imp_sb_duration(sb_t *b, long long ms)
{
    if (ms % 1000 == 0)
        imp_sb_printf(b, "\"%llds\"", ms / 1000);
    else
        imp_sb_printf(b, "\"%lldms\"", ms);
}

/* nginx size ("512", "16k", "1m", "2g") in bytes; -1 if bad */
long long imp_size(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': v *= 1024; end++; break;
    case 'm': case 'M': v *= 1024 * 1024; end++; break;
    case 'g': case 'G': v *= 1024LL * 1024 * 1024; end++; break;
    default: return -1;
    }
    return *end == '\0' ? v : -1;
}

/* The variables the nginx configuration declares (map, set) and legate
 * will too (maps, set): a template may name them.  One import at a time. */
static char *declared[256];
static int   ndeclared;

int imp_declared(const char *name, size_t n)
{
    for (int i = 0; i < ndeclared; i++)
        if (strlen(declared[i]) == n && memcmp(declared[i], name, n) == 0)
            return 1;
    return 0;
}

/* 0 when declared (or already), else why not */
const char *imp_declare(const char *name)
{
    size_t arg;
    if (name[0] == '\0' || isdigit((unsigned char)name[0]))
        return "not a name legate takes (letters, digits, '_', not a digit first)";
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return "not a name legate takes (letters, digits, '_', not a digit first)";
    if (lg_vars_lookup(name, strlen(name), &arg) >= 0)
        return "a variable of legate's own has this name";
    if (imp_declared(name, strlen(name)))
        return NULL;
    if (ndeclared == (int)(sizeof(declared) / sizeof(declared[0])))
        return "more than 256 declared variables";
    if ((declared[ndeclared] = strdup(name)) == NULL)
        abort();
    ndeclared++;
    return NULL;
}

void imp_undeclare(const char *name)
{
    for (int i = 0; i < ndeclared; i++)
        if (strcmp(declared[i], name) == 0) {
            free(declared[i]);
            declared[i] = declared[--ndeclared];
            return;
        }
}

void imp_declared_reset(void)
{
    for (int i = 0; i < ndeclared; i++)
        free(declared[i]);
    ndeclared = 0;
}

/*
 * An nginx value with variables as a legate template: NULL (and *why set)
 * when it names a variable legate does not have.  $binary_remote_addr is
 * $remote_addr (the same key, written as text), $upstream_cache_status is
 * $cache_status, $nginx_version $legate_version.
 */
char *imp_template(const char *s, const char **why)
{
    sb_t b = { 0 };
    imp_sb_add(&b, "", 0);
    static char bad[96];
    for (const char *p = s; *p;) {
        if (*p != '$') {
            imp_sb_add(&b, p++, 1);
            continue;
        }
        const char *name = p + 1;
        size_t n;
        int braced = *name == '{';
        if (braced) {
            const char *e = strchr(name, '}');
            if (e == NULL) {
                imp_sb_add(&b, p++, 1);
                continue;
            }
            name++;
            n = (size_t)(e - name);
        } else {
            n = 0;
            while (isalnum((unsigned char)name[n]) || name[n] == '_')
                n++;
        }
        if (n == 0) {
            imp_sb_add(&b, p++, 1);
            continue;
        }
        const char *use = name;
        size_t un = n;
        /* nginx's names for what legate calls otherwise: the key as text; the
         * cache's verdict, whose words (HIT, MISS, EXPIRED, STALE, UPDATING,
         * REVALIDATED, BYPASS) are nginx's */
        static const struct { const char *ngx, *lg; } renamed[] = {
            { "binary_remote_addr",    "remote_addr" },
            { "upstream_cache_status", "cache_status" },
            { "nginx_version",         "legate_version" },
        };
        for (size_t r = 0; r < sizeof(renamed) / sizeof(renamed[0]); r++)
            if (n == strlen(renamed[r].ngx) && memcmp(name, renamed[r].ngx, n) == 0) {
                use = renamed[r].lg;
                un = strlen(use);
            }
        size_t arg;
        if (lg_vars_lookup(use, un, &arg) < 0 && !imp_declared(use, un)) {
            snprintf(bad, sizeof(bad), "legate has no variable $%.*s", (int)(n > 60 ? 60 : n), name);
            *why = bad;
            free(b.p);
            return NULL;
        }
        imp_sb_str(&b, "${");
        imp_sb_add(&b, use, un);
        imp_sb_str(&b, "}");
        p = name + n + (braced ? 1 : 0);
    }
    /* plain ${name} where $name would do, for readability */
    sb_t c = { 0 };
    imp_sb_add(&c, "", 0);
    for (const char *p = b.p; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *e = strchr(p, '}');
            char after = e[1];
            if (!(isalnum((unsigned char)after) || after == '_')) {
                imp_sb_add(&c, "$", 1);
                imp_sb_add(&c, p + 2, (size_t)(e - p - 2));
                p = e + 1;
                continue;
            }
            imp_sb_add(&c, p, (size_t)(e + 1 - p));
            p = e + 1;
            continue;
        }
        imp_sb_add(&c, p++, 1);
    }
    free(b.p);
    return c.p;
}

/* a PCRE as nginx writes it, as a POSIX ERE for legate; NULL if it cannot */
char *imp_ere(const char *re, int icase, const char **why)
{
    sb_t b = { 0 };
    imp_sb_add(&b, "", 0);
    int bracket = 0;
    for (const char *p = re; *p; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            char e = *++p;
            const char *cls = NULL;
            switch (e) {
            case 'd': cls = "[0-9]"; break;
            case 'D': cls = "[^0-9]"; break;
            case 'w': cls = "[A-Za-z0-9_]"; break;
            case 'W': cls = "[^A-Za-z0-9_]"; break;
            case 's': cls = "[[:space:]]"; break;
            case 'S': cls = "[^[:space:]]"; break;
            }
            if (cls && !bracket) {
                imp_sb_str(&b, cls);
                continue;
            }
            if (bracket && (e == 'd' || e == 'w' || e == 's')) {
                imp_sb_str(&b, e == 'd' ? "0-9" : e == 'w' ? "A-Za-z0-9_" : "[:space:]");
                continue;
            }
            if (isalnum((unsigned char)e)) {
                *why = "a PCRE escape POSIX regular expressions do not have";
                free(b.p);
                return NULL;
            }
            if (bracket) {
                imp_sb_add(&b, &e, 1);
                continue;
            }
            imp_sb_add(&b, "\\", 1);
            imp_sb_add(&b, &e, 1);
            continue;
        }
        if (!bracket && c == '(' && p[1] == '?') {
            *why = "(?...) groups are PCRE only";
            free(b.p);
            return NULL;
        }
        if (!bracket && (c == '*' || c == '+' || c == '?' || c == '}') && p[1] == '?') {
            *why = "lazy quantifiers are PCRE only";
            free(b.p);
            return NULL;
        }
        if (c == '[' && !bracket) {
            bracket = 1;
            imp_sb_add(&b, "[", 1);
            if (p[1] == '^') {
                imp_sb_add(&b, "^", 1);
                p++;
            }
            if (p[1] == ']') {
                imp_sb_add(&b, "]", 1);
                p++;
            }
            continue;
        }
        if (c == ']' && bracket) {
            bracket = 0;
            imp_sb_add(&b, "]", 1);
            continue;
        }
        if (icase && isalpha((unsigned char)c)) {
            char lo = (char)tolower((unsigned char)c), up = (char)toupper((unsigned char)c);
            if (bracket) {
                imp_sb_add(&b, &lo, 1);
                imp_sb_add(&b, &up, 1);
                if (p[1] == '-' && isalpha((unsigned char)p[2])) {
                    /* a-z: both ranges */
                    char e = p[2];
                    imp_sb_printf(&b, "%c-%c%c-%c", lo, (char)tolower((unsigned char)e), up,
                                  (char)toupper((unsigned char)e));
                    p += 2;
                }
            } else
                imp_sb_printf(&b, "[%c%c]", lo, up);
            continue;
        }
        imp_sb_add(&b, &c, 1);
    }
    if (bracket) {
        *why = "an unterminated [";
        free(b.p);
        return NULL;
    }
    regex_t rx;
    if (regcomp(&rx, b.p, REG_EXTENDED) != 0) {
        *why = "not a POSIX extended regular expression";
        free(b.p);
        return NULL;
    }
    regfree(&rx);
    return b.p;
}

void imp_kv_quoted(sb_t *b, int n, const char *key, const char *val)
{
    imp_ind(b, n);
    imp_sb_printf(b, "%s = ", key);
    imp_sb_quote(b, val);
    imp_sb_str(b, ";\n");
}

/* a setting name libconfig accepts */
void imp_setting_name(char *out, size_t outlen, const char *in)
{
    size_t j = 0;
    if (!isalpha((unsigned char)in[0]) && outlen > 2)
        out[j++] = 'u';
    for (size_t i = 0; in[i] && j + 1 < outlen; i++) {
        char c = in[i];
        out[j++] = (isalnum((unsigned char)c) || c == '-' || c == '_') ? c : '_';
    }
    out[j] = '\0';
}

int imp_file_readable(imp_t *im, const ngx_dir_t *d, const char *path, char *out, size_t outlen)
{
    if (path[0] == '/')
        snprintf(out, outlen, "%s", path);
    else
        snprintf(out, outlen, "%s/%s", im->dir, path);
    if (access(out, R_OK) < 0) {
        imp_report(im, d, "cannot read \"%s\" (%s): left out", out, strerror(errno));
        return 0;
    }
    return 1;
}

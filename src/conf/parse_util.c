/*
 * Value parsers shared by the config loader, its tests and the other layers:
 * durations, sizes, socket addresses and log level names.
 *
 * They never log and never allocate except through the caller's arena; a
 * failure is -1 (with a message in the caller's buffer for addresses).  They
 * are strict on purpose: no leading or trailing blanks, no signs, no
 * fractions, no combined units ("1m30s"), so that what a sysadmin writes has
 * exactly one meaning.
 */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/*
 * Parse a run of decimal digits at *p into *v, advancing *p.  Returns -1 if
 * there is no digit or the value does not fit in an int64_t.
 */
static int parse_digits(const char **p, int64_t *v)
{
    const char *s = *p;
    int64_t     n = 0;

    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        int d = *s - '0';
        if (n > (INT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *p = s;
    *v = n;
    return 0;
}

/* n * mult, or -1 on overflow (n, mult >= 0). */
static int mul_checked(int64_t n, int64_t mult, int64_t *out)
{
    if (mult != 0 && n > INT64_MAX / mult)
        return -1;
    *out = n * mult;
    return 0;
}

int lg_parse_duration(const char *s, lg_msec_t *out)
{
    int64_t n, mult;

    if (s == NULL || parse_digits(&s, &n) < 0)
        return -1;
    if (strcmp(s, "") == 0 || strcmp(s, "s") == 0)
        mult = 1000;
    else if (strcmp(s, "ms") == 0)
        mult = 1;
    else if (strcmp(s, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(s, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(s, "d") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    return mul_checked(n, mult, out);
}

int lg_parse_size(const char *s, int64_t *out)
{
    int64_t n, mult;

    if (s == NULL || parse_digits(&s, &n) < 0)
        return -1;
    switch (s[0]) {
    case '\0':           mult = 1; break;
    case 'k': case 'K':  mult = INT64_C(1) << 10; break;
    case 'm': case 'M':  mult = INT64_C(1) << 20; break;
    case 'g': case 'G':  mult = INT64_C(1) << 30; break;
    default:             return -1;
    }
    if (s[0] != '\0' && s[1] != '\0')
        return -1;
    return mul_checked(n, mult, out);
}

static int addr_fail(char *err, size_t errlen, const char *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int addr_fail(char *err, size_t errlen, const char *s, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        int n = snprintf(err, errlen, "invalid address '%s': ", s);
        if (n >= 0 && (size_t)n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* "1".."65535" only. */
static int parse_port(const char *s, int *port)
{
    int64_t v;

    if (parse_digits(&s, &v) < 0 || *s != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/*
 * Resolve `host` (already stripped of brackets) into out->ss with `port`.
 * A numeric address is taken as is; a name goes through getaddrinfo() and
 * the first answer wins, as the resolver ordered them.
 */
static int resolve_host(const char *orig, const char *host, int v6only, int port,
                        lg_addr_t *out, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    int             rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = v6only ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 && v6only)
        return addr_fail(err, errlen, orig, "bad IPv6 address '%s'", host);
    if (rc != 0) {
        hints.ai_flags = 0;
        rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0)
            return addr_fail(err, errlen, orig, "cannot resolve '%s': %s",
                             host, gai_strerror(rc));
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    if (res->ai_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons((uint16_t)port);
    else if (res->ai_family == AF_INET6)
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons((uint16_t)port);
    else
        rc = -1;
    freeaddrinfo(res);
    if (rc != 0)
        return addr_fail(err, errlen, orig, "'%s' is neither IPv4 nor IPv6", host);
    return 0;
}

int lg_parse_addr(const char *s, int default_port, lg_addr_t *out, lg_arena_t *a,
                  char *err, size_t errlen)
{
    char        host[256];
    const char *port_s = NULL;
    int         port = default_port, v6 = 0;

    memset(out, 0, sizeof(*out));
    if (s == NULL || s[0] == '\0')
        return addr_fail(err, errlen, s ? s : "", "empty");

    if (strncmp(s, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
        size_t              n = strlen(s + 5);

        if (n == 0)
            return addr_fail(err, errlen, s, "missing socket path");
        if (n >= sizeof(un->sun_path))
            return addr_fail(err, errlen, s, "socket path longer than %zu bytes",
                             sizeof(un->sun_path) - 1);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, s + 5, n + 1);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        out->text = lg_arena_strdup(a, s);
        return out->text ? 0 : addr_fail(err, errlen, s, "out of memory");
    }

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        size_t      n;

        if (end == NULL)
            return addr_fail(err, errlen, s, "missing ']'");
        n = (size_t)(end - s - 1);
        if (n == 0 || n >= sizeof(host))
            return addr_fail(err, errlen, s, "bad IPv6 address");
        memcpy(host, s + 1, n);
        host[n] = '\0';
        v6 = 1;
        if (end[1] == ':')
            port_s = end + 2;
        else if (end[1] != '\0')
            return addr_fail(err, errlen, s, "expected ':' after ']'");
    } else {
        const char *colon = strchr(s, ':');
        size_t      n;

        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return addr_fail(err, errlen, s,
                             "IPv6 addresses must be in brackets, as in [::1]:8080");
        if (colon == NULL && strspn(s, "0123456789") == strlen(s)) {
            /* a bare port, as nginx's "listen 8080" */
            strcpy(host, "*");
            port_s = s;
        } else {
            n = colon ? (size_t)(colon - s) : strlen(s);
            if (n == 0)
                return addr_fail(err, errlen, s, "missing host (use '*' for all addresses)");
            if (n >= sizeof(host))
                return addr_fail(err, errlen, s, "host name too long");
            memcpy(host, s, n);
            host[n] = '\0';
            if (colon != NULL)
                port_s = colon + 1;
        }
    }

    if (port_s != NULL) {
        if (parse_port(port_s, &port) < 0)
            return addr_fail(err, errlen, s, "bad port '%s' (must be 1..65535)", port_s);
    } else if (default_port <= 0) {
        return addr_fail(err, errlen, s, "missing port");
    }

    if (strcmp(host, "*") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        out->len = sizeof(*sin);
    } else if (resolve_host(s, host, v6, port, out, err, errlen) < 0) {
        return -1;
    }

    /* The text is the canonical numeric form: two spellings of one address
     * print (and compare) the same. */
    char num[INET6_ADDRSTRLEN + 16];
    if (getnameinfo((struct sockaddr *)&out->ss, out->len, num, sizeof(num),
                    NULL, 0, NI_NUMERICHOST) != 0)
        return addr_fail(err, errlen, s, "cannot format address");
    if (out->ss.ss_family == AF_INET6)
        out->text = lg_arena_printf(a, "[%s]:%d", num, port);
    else
        out->text = lg_arena_printf(a, "%s:%d", num, port);
    return out->text ? 0 : addr_fail(err, errlen, s, "out of memory");
}

int lg_parse_quotable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

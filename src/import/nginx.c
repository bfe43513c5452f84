/*
 * legate --import-nginx FILE: an nginx configuration translated to legate's.
 *
 * The files are read with their includes (globs, relative to the main
 * file's directory as nginx's prefix), parsed by nginx_parse.c into one tree,
 * then walked: main -> global settings, http -> the http group, upstream ->
 * upstreams, server -> servers, location -> routes (nested ones flattened
 * with their parent's settings).  Scalars are written at the level nginx has
 * them, since legate inherits the same way (http -> server -> route).  The
 * array-like directives nginx does not merge across levels (proxy_set_header,
 * add_header, allow/deny, limit_req, limit_conn) are resolved per location
 * the way nginx does -- the innermost level that has any wins, the outer
 * ones are dropped -- and written on each route.
 *
 * What is not translated is reported on diag as FILE:LINE: directive: why,
 * and so is every place where legate behaves differently.  Whatever would
 * make legate -t fail (a certificate that cannot be read, a variable legate
 * does not have, a host name that does not resolve) is left out and reported,
 * so the output always loads.  See legate-nginx(7).
 */
#include "import/nginx.h"

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

/* ---------------------------------------------------------------- text */

typedef struct sb {
    char  *p;
    size_t n, cap;
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n)
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

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

static void sb_str(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* a libconfig string literal */
static void sb_quote(sb_t *b, const char *s)
{
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c == '\n')
            sb_str(b, "\\n");
        else if (c == '\t')
            sb_str(b, "\\t");
        else if (c == '\r')
            sb_str(b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            sb_printf(b, "\\x%02x", c);
        else
            sb_add(b, (const char *)&c, 1);
    }
    sb_add(b, "\"", 1);
}

static void ind(sb_t *b, int n)
{
    for (int i = 0; i < n; i++)
        sb_str(b, "    ");
}

/* ---------------------------------------------------------------- state */

typedef struct upstream_out {
    char   name[128];
    sb_t   body;            /* the group's text, without its braces */
    int    has_next;        /* next_upstream set already */
    struct upstream_out *next;
} upstream_out_t;

typedef struct imp {
    FILE           *diag;
    const char     *dir;            /* nginx's prefix: the main file's directory */
    int             ndiag;
    upstream_out_t *ups;
    sb_t            zones_req, zones_conn;
    const ngx_dir_t *http;
    const ngx_dir_t *log_formats[64];
    int             nlog_formats;
    int             nservers;
    int             cache_size_mb;
    char           *files[256];     /* read, for the parse tree's file names */
    const ngx_dir_t *said[256];     /* inheritance remarks made */
    int             nsaid;
    char           *said_msgs[1024]; /* remarks made */
    int             nsaid_msgs;
    char           *zones[128];      /* limit_req_zone, limit_conn_zone names */
    int             nzones;
    const ngx_dir_t *server;        /* being translated */
    int             nfiles;
    /* the parts of the output, for a directory (--out): the http group's
     * own settings, the upstreams, and each server's text with its name */
    sb_t            part_http, part_ups;
    char           *srv_text[512];
    char            srv_name[512][64];
    int             nsrv_text;
} imp_t;

static void report(imp_t *im, const ngx_dir_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(imp_t *im, const ngx_dir_t *d, const char *fmt, ...)
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

static int is(const ngx_dir_t *d, const char *name)
{
    return strcmp(d->args[0], name) == 0;
}

static const ngx_dir_t *child(const ngx_dir_t *block, const char *name)
{
    const ngx_dir_t *found = NULL;
    for (const ngx_dir_t *d = block; d; d = d->next)
        if (is(d, name))
            found = d;      /* nginx: the last one would be a duplicate error; take it */
    return found;
}

/* ---------------------------------------------------------------- reading */

static int read_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    sb_t b = { 0 };
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        sb_add(&b, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b.p);
        return -1;
    }
    if (b.p == NULL)
        sb_add(&b, "", 0);
    *text = b.p;
    *len = b.n;
    return 0;
}

static ngx_dir_t *load(imp_t *im, const char *path, int depth, int *failed);

/* Replace every include in the list by the directives of its files. */
static ngx_dir_t *expand(imp_t *im, ngx_dir_t *list, int depth, int *failed)
{
    ngx_dir_t *head = NULL, **tail = &head;
    while (list) {
        ngx_dir_t *d = list;
        list = d->next;
        d->next = NULL;
        if (d->block)
            d->block = expand(im, d->block, depth, failed);
        if (!is(d, "include") || d->has_block) {
            *tail = d;
            tail = &d->next;
            continue;
        }
        if (d->nargs != 2) {
            report(im, d, "takes one file name or pattern: left out");
            ngx_free(d);
            continue;
        }
        char pat[PATH_MAX];
        if (d->args[1][0] == '/')
            snprintf(pat, sizeof(pat), "%s", d->args[1]);
        else
            snprintf(pat, sizeof(pat), "%s/%s", im->dir, d->args[1]);
        glob_t g;
        int grc = glob(pat, 0, NULL, &g);
        if (grc == GLOB_NOMATCH && strpbrk(d->args[1], "*?[") == NULL)
            report(im, d, "\"%s\" does not exist: left out", pat);
        if (grc == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++) {
                ngx_dir_t *sub = load(im, g.gl_pathv[i], depth + 1, failed);
                while (sub) {
                    ngx_dir_t *n = sub->next;
                    sub->next = NULL;
                    *tail = sub;
                    tail = &sub->next;
                    sub = n;
                }
            }
        }
        if (grc == 0 || grc == GLOB_NOMATCH)
            globfree(&g);
        ngx_free(d);
    }
    return head;
}

static ngx_dir_t *load(imp_t *im, const char *path, int depth, int *failed)
{
    if (depth > 16 || im->nfiles == (int)(sizeof(im->files) / sizeof(im->files[0]))) {
        fprintf(im->diag, "%s: includes nested too deeply or too many files: left out\n", path);
        im->ndiag++;
        return NULL;
    }
    char *text;
    size_t len;
    if (read_file(path, &text, &len) < 0) {
        fprintf(im->diag, "%s: cannot read: %s\n", path, strerror(errno));
        *failed = 1;
        return NULL;
    }
    char *name = strdup(path);
    if (name == NULL)
        abort();
    im->files[im->nfiles++] = name;
    const char *err;
    int line;
    ngx_dir_t *tree = ngx_parse(text, len, name, &err, &line);
    free(text);
    if (err) {
        fprintf(im->diag, "%s:%d: %s\n", name, line, err);
        *failed = 1;
        return NULL;
    }
    return expand(im, tree, depth, failed);
}

static const char *upstream_for(imp_t *im, const ngx_dir_t *d, const char *url,
                                const char **uri, int *tls);

/* ---------------------------------------------------------------- values */

/* nginx time ("30", "500ms", "1h30m") in milliseconds; -1 if bad */
static long long ngx_time_ms(const char *s)
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

static void sb_duration(sb_t *b, long long ms)
{
    if (ms % 1000 == 0)
        sb_printf(b, "\"%llds\"", ms / 1000);
    else
        sb_printf(b, "\"%lldms\"", ms);
}

/* nginx size ("512", "16k", "1m", "2g") in bytes; -1 if bad */
static long long ngx_size(const char *s)
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

/*
 * An nginx value with variables as a legate template: NULL (and *why set)
 * when it names a variable legate does not have.  $binary_remote_addr is
 * $remote_addr (the same key, written as text).
 */
static char *template_of(const char *s, const char **why)
{
    sb_t b = { 0 };
    sb_add(&b, "", 0);
    static char bad[96];
    for (const char *p = s; *p;) {
        if (*p != '$') {
            sb_add(&b, p++, 1);
            continue;
        }
        const char *name = p + 1;
        size_t n;
        int braced = *name == '{';
        if (braced) {
            const char *e = strchr(name, '}');
            if (e == NULL) {
                sb_add(&b, p++, 1);
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
            sb_add(&b, p++, 1);
            continue;
        }
        const char *use = name;
        size_t un = n;
        if (n == 18 && memcmp(name, "binary_remote_addr", 18) == 0) {
            use = "remote_addr";
            un = 11;
        }
        size_t arg;
        if (lg_vars_lookup(use, un, &arg) < 0) {
            snprintf(bad, sizeof(bad), "legate has no variable $%.*s", (int)(n > 60 ? 60 : n), name);
            *why = bad;
            free(b.p);
            return NULL;
        }
        sb_str(&b, "${");
        sb_add(&b, use, un);
        sb_str(&b, "}");
        p = name + n + (braced ? 1 : 0);
    }
    /* plain ${name} where $name would do, for readability */
    sb_t c = { 0 };
    sb_add(&c, "", 0);
    for (const char *p = b.p; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *e = strchr(p, '}');
            char after = e[1];
            if (!(isalnum((unsigned char)after) || after == '_')) {
                sb_add(&c, "$", 1);
                sb_add(&c, p + 2, (size_t)(e - p - 2));
                p = e + 1;
                continue;
            }
            sb_add(&c, p, (size_t)(e + 1 - p));
            p = e + 1;
            continue;
        }
        sb_add(&c, p++, 1);
    }
    free(b.p);
    return c.p;
}

/* a PCRE as nginx writes it, as a POSIX ERE for legate; NULL if it cannot */
static char *ere_of(const char *re, int icase, const char **why)
{
    sb_t b = { 0 };
    sb_add(&b, "", 0);
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
                sb_str(&b, cls);
                continue;
            }
            if (bracket && (e == 'd' || e == 'w' || e == 's')) {
                sb_str(&b, e == 'd' ? "0-9" : e == 'w' ? "A-Za-z0-9_" : "[:space:]");
                continue;
            }
            if (isalnum((unsigned char)e)) {
                *why = "a PCRE escape POSIX regular expressions do not have";
                free(b.p);
                return NULL;
            }
            if (bracket) {
                sb_add(&b, &e, 1);
                continue;
            }
            sb_add(&b, "\\", 1);
            sb_add(&b, &e, 1);
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
            sb_add(&b, "[", 1);
            if (p[1] == '^') {
                sb_add(&b, "^", 1);
                p++;
            }
            if (p[1] == ']') {
                sb_add(&b, "]", 1);
                p++;
            }
            continue;
        }
        if (c == ']' && bracket) {
            bracket = 0;
            sb_add(&b, "]", 1);
            continue;
        }
        if (icase && isalpha((unsigned char)c)) {
            char lo = (char)tolower((unsigned char)c), up = (char)toupper((unsigned char)c);
            if (bracket) {
                sb_add(&b, &lo, 1);
                sb_add(&b, &up, 1);
                if (p[1] == '-' && isalpha((unsigned char)p[2])) {
                    /* a-z: both ranges */
                    char e = p[2];
                    sb_printf(&b, "%c-%c%c-%c", lo, (char)tolower((unsigned char)e), up,
                              (char)toupper((unsigned char)e));
                    p += 2;
                }
            } else
                sb_printf(&b, "[%c%c]", lo, up);
            continue;
        }
        sb_add(&b, &c, 1);
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

static void kv_quoted(sb_t *b, int n, const char *key, const char *val)
{
    ind(b, n);
    sb_printf(b, "%s = ", key);
    sb_quote(b, val);
    sb_str(b, ";\n");
}

/* a setting name libconfig accepts */
static void setting_name(char *out, size_t outlen, const char *in)
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

/* ---------------------------------------------------------------- scalars */

/* common settings that are the same in nginx and legate: duration, size or integer */
static const struct { const char *ngx, *lg; char kind; } simple[] = {
    { "client_header_timeout", "client_header_timeout", 't' },
    { "client_body_timeout",   "client_body_timeout",   't' },
    { "send_timeout",          "send_timeout",          't' },
    { "keepalive_timeout",     "keepalive_timeout",     't' },
    { "keepalive_requests",    "keepalive_requests",    'i' },
    { "proxy_connect_timeout", "proxy_connect_timeout", 't' },
    { "proxy_send_timeout",    "proxy_send_timeout",    't' },
    { "proxy_read_timeout",    "proxy_read_timeout",    't' },
    { "client_max_body_size",  "client_max_body_size",  's' },
    { "gzip_min_length",       "gzip_min_length",       's' },
    { "gzip_comp_level",       "gzip_level",            'i' },
    { "limit_rate",            "limit_rate",            's' },
    { "limit_rate_after",      "limit_rate_after",      's' },
    { "limit_req_status",      "limit_req_status",      'i' },
    { "limit_conn_status",     "limit_conn_status",     'i' },
    { "proxy_cache_min_uses",  "cache_min_uses",        'i' },
    { "proxy_cache_lock_timeout", "cache_lock_timeout", 't' },
    { "websocket_idle_timeout", "websocket_idle_timeout", 't' },
};

static const struct { const char *name, *why; } ignored[] = {
    { "sendfile",            "legate serves no files (proxy only)" },
    { "tcp_nopush",          "legate sets its own socket options" },
    { "tcp_nodelay",         "legate sets TCP_NODELAY itself" },
    { "types_hash_max_size", "no MIME types table in legate" },
    { "types_hash_bucket_size", "no MIME types table in legate" },
    { "server_names_hash_bucket_size", "legate sizes its tables itself" },
    { "server_names_hash_max_size", "legate sizes its tables itself" },
    { "types",               "legate serves no files: no MIME types" },
    { "root",                "legate serves no files" },
    { "alias",               "legate serves no files" },
    { "index",               "legate serves no files" },
    { "autoindex",           "legate serves no files" },
    { "try_files",           "legate serves no files" },
    { "expires",             "not in legate: set Cache-Control with add_header at the origin" },
    { "server_tokens",       "legate's Server header is not configurable" },
    { "proxy_http_version",  "legate always speaks HTTP/1.1 to upstreams" },
    { "proxy_buffering",     "legate always streams with backpressure (no disk buffering)" },
    { "proxy_buffers",       "legate streams with fixed buffers" },
    { "proxy_buffer_size",   "legate streams with fixed buffers" },
    { "proxy_busy_buffers_size", "legate streams with fixed buffers" },
    { "proxy_max_temp_file_size", "legate never buffers to disk" },
    { "proxy_request_buffering", "legate streams request bodies" },
    { "client_body_buffer_size", "legate streams request bodies" },
    { "client_header_buffer_size", "legate's header limits are fixed (431)" },
    { "large_client_header_buffers", "legate's header limits are fixed (431)" },
    { "gzip_vary",           "legate always sends Vary: Accept-Encoding with a coding" },
    { "gzip_proxied",        "legate compresses proxied answers by gzip_types" },
    { "gzip_buffers",        "legate's codec buffers are fixed" },
    { "gzip_http_version",   "not in legate" },
    { "gzip_disable",        "not in legate" },
    { "ssl_prefer_server_ciphers", "legate prefers the server's order" },
    { "ssl_session_cache",   "legate shares sessions itself (tls_session_cache, global)" },
    { "ssl_dhparam",         "legate uses ECDHE and the built-in groups" },
    { "ssl_ecdh_curve",      "legate uses OpenSSL's default groups" },
    { "ssl_stapling",        "legate staples a response file (tls_ocsp_response)" },
    { "ssl_stapling_verify", "legate staples a response file (tls_ocsp_response)" },
    { "ssl_trusted_certificate", "not needed for legate's stapling of a file" },
    { "ssl_buffer_size",     "not in legate" },
    { "ssl_early_data",      "legate does not accept TLS early data" },
    { "resolver",            "legate resolves upstream names when it loads the configuration "
                             "(resolvers are a forward proxy's)" },
    { "resolver_timeout",    "legate resolves upstream names when it loads the configuration" },
    { "reset_timedout_connection", "legate resets timed-out connections" },
    { "lingering_close",     "legate always lingers" },
    { "lingering_timeout",   "legate's lingering close is fixed" },
    { "log_not_found",       "legate serves no files" },
    { "open_file_cache",     "legate serves no files" },
    { "charset",             "not in legate" },
    { "proxy_cache_revalidate", "legate always revalidates with ETag/Last-Modified" },
    { "proxy_cache_lock",    "legate always collapses concurrent misses" },
    { "proxy_cache_background_update", "legate refreshes in the background by Cache-Control" },
    { "proxy_cache_use_stale", "legate serves stale by the origin's Cache-Control "
                               "(stale-while-revalidate, stale-if-error)" },
    { "proxy_cache_methods", "legate caches GET and HEAD" },
    { "proxy_ssl_session_reuse", "legate resumes upstream TLS sessions" },
    { "proxy_pass_header",   "not in legate" },
    { "real_ip_recursive",   "legate walks real_ip_header from the right past trusted addresses" },
    { "underscores_in_headers", "not in legate" },
    { "ignore_invalid_headers", "legate refuses invalid headers (400)" },
    { "http2_max_concurrent_streams", "legate's is a top-level setting "
                                      "(http2_max_concurrent_streams): set it there by hand" },
    { "auth_request_set",    "use auth_request_set = [ header names ] by hand" },
    { "map_hash_bucket_size", "no maps in legate" },
    { "variables_hash_max_size", "legate's variables are fixed" },
    { "variables_hash_bucket_size", "legate's variables are fixed" },
    { "client_body_temp_path", "legate never buffers to disk" },
    { "proxy_temp_path",     "legate never buffers to disk" },
    { "fastcgi_temp_path",   "legate speaks HTTP only" },
    { "uwsgi_temp_path",     "legate speaks HTTP only" },
    { "scgi_temp_path",      "legate speaks HTTP only" },
};

static const char *ignored_why(const char *name)
{
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        if (strcmp(ignored[i].name, name) == 0)
            return ignored[i].why;
    return NULL;
}

/* the directives handled at a level: the rest are reported as not translated */
static const char *const handled_common[] = {
    "proxy_set_header", "add_header", "allow", "deny", "limit_req", "limit_conn",
    "gzip", "gzip_types", "access_log", "auth_basic", "auth_basic_user_file", "satisfy",
    "proxy_cache", "proxy_cache_valid", "proxy_cache_key", "proxy_cache_bypass",
    "proxy_no_cache", "proxy_ignore_headers", "proxy_hide_header", "proxy_next_upstream",
    "proxy_next_upstream_tries", "proxy_next_upstream_timeout", "auth_request",
    "set_real_ip_from", "real_ip_header", "ssl_certificate", "ssl_certificate_key",
    "ssl_protocols", "ssl_ciphers", "ssl_client_certificate", "ssl_verify_client",
    "ssl_verify_depth", "ssl_session_timeout", "ssl_session_tickets", "ssl_stapling_file",
    "log_format", "limit_req_zone", "limit_conn_zone", "upstream", "server", "location",
    "proxy_cache_path", "map", "split_clients", "listen", "server_name", "proxy_pass",
    "return", "rewrite", "include", "http2", "error_page", "proxy_intercept_errors",
    "proxy_redirect", "default_type",
    NULL,
};

static int is_handled(const char *name)
{
    for (size_t i = 0; handled_common[i]; i++)
        if (strcmp(handled_common[i], name) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
        if (strcmp(simple[i].ngx, name) == 0)
            return 1;
    return 0;
}

/* One level: http, server or location. */
typedef struct level {
    const struct level *up;
    const ngx_dir_t    *block;      /* its directives */
    const ngx_dir_t    *self;       /* the server/location directive, NULL for http */
} level_t;

static const ngx_dir_t *inherited(const level_t *lv, const char *name);

/* The innermost level that has any of the names; nginx's array inheritance. */
static const level_t *array_level(const level_t *lv, const char *const *names)
{
    for (; lv; lv = lv->up)
        for (const ngx_dir_t *d = lv->block; d; d = d->next)
            for (size_t i = 0; names[i]; i++)
                if (is(d, names[i]))
                    return lv;
    return NULL;
}

static int file_readable(imp_t *im, const ngx_dir_t *d, const char *path, char *out, size_t outlen)
{
    if (path[0] == '/')
        snprintf(out, outlen, "%s", path);
    else
        snprintf(out, outlen, "%s/%s", im->dir, path);
    if (access(out, R_OK) < 0) {
        report(im, d, "cannot read \"%s\" (%s): left out", out, strerror(errno));
        return 0;
    }
    return 1;
}


/* ---------------------------------------------------------------- error pages, redirects */

/* The root that serves URI in this server: the location "= URI" (or the
 * prefix location equal to it) with a root, else the level's, the server's
 * or http's root.  NULL if none. */
static const char *root_for(imp_t *im, const ngx_dir_t *block, const char *uri)
{
    for (const ngx_dir_t *d = im->server ? im->server->block : NULL; d; d = d->next) {
        if (!is(d, "location") || !d->has_block)
            continue;
        const char *p = d->nargs == 3 && strcmp(d->args[1], "=") == 0 ? d->args[2]
                      : d->nargs == 2 ? d->args[1] : NULL;
        const ngx_dir_t *r = p && strcmp(p, uri) == 0 ? child(d->block, "root") : NULL;
        if (r && r->nargs == 2)
            return r->args[1];
    }
    const ngx_dir_t *levels[] = { block, im->server ? im->server->block : NULL,
                                  im->http ? im->http->block : NULL };
    for (size_t i = 0; i < 3; i++) {
        const ngx_dir_t *r = levels[i] ? child(levels[i], "root") : NULL;
        if (r && r->nargs == 2)
            return r->args[1];
    }
    return NULL;
}

/* error_page CODE ... [=CODE] URI -> error_pages = [ "CODE ... FILE" ]: the
 * file the URI names under its root (legate reads it when it loads). */
static void emit_error_pages(imp_t *im, sb_t *b, int n, const ngx_dir_t *block)
{
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!is(d, "error_page"))
            continue;
        if (d->nargs < 3) {
            report(im, d, "takes statuses and a URI: left out");
            continue;
        }
        const char *uri = d->args[d->nargs - 1];
        int last = d->nargs - 1;
        if (d->args[last - 1][0] == '=') {
            report(im, d, "%s: legate answers with the error's own status: left out",
                   d->args[last - 1]);
            continue;
        }
        if (uri[0] == '@') {
            report(im, d, "a named location is not in legate: left out");
            continue;
        }
        if (uri[0] != '/') {
            report(im, d, "a redirect to \"%s\" is not in legate's error_pages (files only): "
                          "left out", uri);
            continue;
        }
        if (strpbrk(uri, "$?")) {
            report(im, d, "a URI with variables or arguments is not a file: left out");
            continue;
        }
        sb_t codes = { 0 };
        sb_add(&codes, "", 0);
        int bad = 0;
        for (int i = 1; i < last && !bad; i++) {
            char *end;
            long c = strtol(d->args[i], &end, 10);
            if (*end || c < 300 || c > 599)
                bad = 1;
            else
                sb_printf(&codes, "%s%ld", codes.n ? " " : "", c);
        }
        if (bad) {
            report(im, d, "statuses are 300 to 599: left out");
            free(codes.p);
            continue;
        }
        const char *root = root_for(im, block, uri);
        if (root == NULL) {
            report(im, d, "no root serves \"%s\": left out", uri);
            free(codes.p);
            continue;
        }
        char rel[PATH_MAX], path[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s%s%s", root,
                 root[0] && root[strlen(root) - 1] == '/' ? "" : "", uri);
        if (!file_readable(im, d, rel, path, sizeof(path))) {
            free(codes.p);
            continue;
        }
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 256 * 1024) {
            report(im, d, "\"%s\" is not a file of at most 256k: left out", path);
            free(codes.p);
            continue;
        }
        sb_printf(&codes, " %s", path);
        if (first) {
            ind(b, n);
            sb_str(b, "error_pages = [ ");
        } else
            sb_str(b, ", ");
        sb_quote(b, codes.p);
        free(codes.p);
        first = 0;
    }
    if (!first)
        sb_str(b, " ];\n");
}

/* proxy_redirect off | default | FROM TO -> proxy_redirect (literal URLs) */
static void emit_proxy_redirect(imp_t *im, sb_t *b, int n, const ngx_dir_t *block)
{
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!is(d, "proxy_redirect"))
            continue;
        char rule[2048];
        if (d->nargs == 2 && (strcmp(d->args[1], "off") == 0 || strcmp(d->args[1], "default") == 0))
            snprintf(rule, sizeof(rule), "%s", d->args[1]);
        else if (d->nargs == 3 && d->args[1][0] != '~' && !strchr(d->args[1], '$') &&
                 !strchr(d->args[2], '$') && !strchr(d->args[1], ' ') && !strchr(d->args[2], ' ')) {
            snprintf(rule, sizeof(rule), "%s %s", d->args[1], d->args[2]);
            if (d->args[2][0] == '/')
                report(im, d, "nginx makes a relative Location absolute (the client's Host and "
                              "port, absolute_redirect); legate sends \"%s...\" as it is",
                       d->args[2]);
        }
        else {
            report(im, d, "a regex or variables: legate's rules are literal URL prefixes; left out");
            continue;
        }
        if (first) {
            ind(b, n);
            sb_str(b, "proxy_redirect = [ ");
        } else
            sb_str(b, ", ");
        sb_quote(b, rule);
        first = 0;
    }
    if (!first)
        sb_str(b, " ];\n");
}

/* a syslog: target of nginx as legate's: server=, facility=, tag= kept
 * (severity=, nohostname left with a remark); NULL if legate cannot send to
 * it (a host name: legate takes an address) */
static char *syslog_target(imp_t *im, const ngx_dir_t *d, const char *target)
{
    sb_t t = { 0 };
    sb_str(&t, "syslog:");
    char *copy = strdup(target + 7);
    if (copy == NULL)
        abort();
    int have_server = 0, ok = 1;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (strncmp(p, "server=", 7) == 0) {
            const char *a = p + 7;
            if (strncmp(a, "unix:", 5) != 0) {
                char host[256];
                snprintf(host, sizeof(host), "%s", a[0] == '[' ? a + 1 : a);
                char *end = a[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
                if (end && (a[0] == '[' || strchr(host, ':') == end))
                    *end = '\0';
                unsigned char buf[16];
                if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1) {
                    report(im, d, "syslog server \"%s\": legate takes an IP address or unix:path; "
                                  "left out", a);
                    ok = 0;
                    break;
                }
            }
            have_server = 1;
            sb_printf(&t, "%s%s", t.n > 7 ? "," : "", p);
        } else if (strncmp(p, "facility=", 9) == 0 || strncmp(p, "tag=", 4) == 0)
            sb_printf(&t, "%s%s", t.n > 7 ? "," : "", p);
        else
            report(im, d, "syslog \"%s\" is not in legate: ignored", p);
    }
    free(copy);
    if (ok && !have_server) {
        report(im, d, "a syslog target needs server=: left out");
        ok = 0;
    }
    if (!ok) {
        free(t.p);
        return NULL;
    }
    return t.p;
}

/* The settings of one level that legate inherits the same way. */
/* nginx refuses most directives given twice at one level; legate's libconfig
 * would too: the first is kept */
static int repeated(imp_t *im, const ngx_dir_t *block, const ngx_dir_t *d)
{
    static const char *const many[] = { "proxy_cache_valid", "access_log", "add_header",
        "proxy_set_header", "allow", "deny", "limit_req", "limit_conn", "proxy_hide_header",
        "proxy_ignore_headers", "log_format", "ssl_certificate", "ssl_certificate_key", "listen",
        "server_name", "location", "rewrite", "include", "server", "error_page",
        "proxy_redirect", NULL };
    for (size_t i = 0; many[i]; i++)
        if (is(d, many[i]))
            return 0;
    for (const ngx_dir_t *e = block; e && e != d; e = e->next)
        if (strcmp(e->args[0], d->args[0]) == 0) {
            report(im, d, "given twice at this level (nginx refuses it): the first, at line %d, "
                          "is kept", e->line);
            return 1;
        }
    return 0;
}

static void emit_scalars(imp_t *im, sb_t *b, int n, const ngx_dir_t *block, int is_location)
{
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (repeated(im, block, d))
            continue;
        for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
            if (!is(d, simple[i].ngx))
                continue;
            if (d->nargs < 2) {
                report(im, d, "needs a value: left out");
                break;
            }
            if (d->nargs > 2 && strcmp(simple[i].ngx, "keepalive_timeout") == 0)
                report(im, d, "the second value (Keep-Alive: timeout=) is not sent by legate");
            long long v = simple[i].kind == 't' ? ngx_time_ms(d->args[1])
                        : simple[i].kind == 's' ? ngx_size(d->args[1])
                                                : (strtoll(d->args[1], NULL, 10));
            if (v < 0 || (simple[i].kind == 'i' && !isdigit((unsigned char)d->args[1][0]))) {
                report(im, d, "cannot read \"%s\": left out", d->args[1]);
                break;
            }
            if (simple[i].kind == 't' && v == 0 && strcmp(simple[i].lg, "keepalive_timeout") != 0) {
                report(im, d, "0 is not a timeout in legate: left out");
                break;
            }
            ind(b, n);
            sb_printf(b, "%s = ", simple[i].lg);
            if (simple[i].kind == 't')
                sb_duration(b, v);
            else
                sb_printf(b, "%lld", v);
            sb_str(b, ";\n");
            break;
        }
        if (is(d, "gzip") && d->nargs == 2) {
            ind(b, n);
            sb_printf(b, "gzip = %s;\n", strcmp(d->args[1], "on") == 0 ? "true" : "false");
        } else if (is(d, "gzip_types") && d->nargs >= 2) {
            ind(b, n);
            sb_str(b, "gzip_types = [ \"text/html\"");
            for (int i = 1; i < d->nargs; i++)
                if (strcmp(d->args[i], "text/html") != 0) {
                    sb_str(b, ", ");
                    sb_quote(b, d->args[i]);
                }
            sb_str(b, " ];\n");
        } else if (is(d, "satisfy") && d->nargs == 2) {
            kv_quoted(b, n, "satisfy", d->args[1]);
        } else if (is(d, "proxy_cache") && d->nargs == 2) {
            int on = strcmp(d->args[1], "off") != 0;
            if (on && im->cache_size_mb == 0) {
                report(im, d, "no proxy_cache_path before it: left out");
                continue;
            }
            ind(b, n);
            sb_printf(b, "cache = %s;\n", on ? "true" : "false");
        } else if (is(d, "proxy_cache_valid") && d->nargs >= 2) {
            /* handled with the others of the level below */
        } else if ((is(d, "proxy_cache_key") || is(d, "proxy_cache_bypass") ||
                    is(d, "proxy_no_cache")) && d->nargs >= 2) {
            if (d->nargs > 2 && !is(d, "proxy_cache_key")) {
                report(im, d, "several conditions: legate takes one template; left out");
                continue;
            }
            const char *why = NULL;
            char *t = template_of(d->args[1], &why);
            if (t == NULL) {
                report(im, d, "%s: left out", why);
                continue;
            }
            kv_quoted(b, n, is(d, "proxy_cache_key") ? "cache_key" :
                            is(d, "proxy_cache_bypass") ? "cache_bypass" : "cache_no_store", t);
            free(t);
        } else if (is(d, "proxy_ignore_headers") && d->nargs >= 2) {
            ind(b, n);
            sb_str(b, "cache_ignore_headers = [ ");
            for (int i = 1; i < d->nargs; i++) {
                if (i > 1)
                    sb_str(b, ", ");
                sb_quote(b, d->args[i]);
            }
            sb_str(b, " ];\n");
        } else if (is(d, "proxy_hide_header") && d->nargs == 2) {
            kv_quoted(b, n, "remove_response_headers", d->args[1]);
        } else if (is(d, "proxy_intercept_errors") && d->nargs == 2) {
            ind(b, n);
            sb_printf(b, "intercept_errors = %s;\n", strcmp(d->args[1], "on") == 0 ? "true"
                                                                                  : "false");
        } else if (is(d, "default_type") && d->nargs == 2) {
            kv_quoted(b, n, "default_type", d->args[1]);
        } else if (is(d, "access_log")) {
            /* below, with log_format */
        }
        (void)is_location;
    }
    emit_error_pages(im, b, n, block);
    emit_proxy_redirect(im, b, n, block);
    /* proxy_cache_valid: all of the level in one list */
    int first = 1;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (!is(d, "proxy_cache_valid") || d->nargs < 2)
            continue;
        long long ms = ngx_time_ms(d->args[d->nargs - 1]);
        if (ms < 0) {
            report(im, d, "cannot read the time \"%s\": left out", d->args[d->nargs - 1]);
            continue;
        }
        sb_t one = { 0 };
        if (d->nargs == 2)
            sb_str(&one, "200 301 302");
        for (int i = 1; i < d->nargs - 1; i++) {
            if (i > 1)
                sb_str(&one, " ");
            sb_str(&one, strcmp(d->args[i], "any") == 0 ? "any" : d->args[i]);
        }
        if (ms % 1000)
            sb_printf(&one, " %lldms", ms);
        else
            sb_printf(&one, " %llds", ms / 1000);
        if (first) {
            ind(b, n);
            sb_str(b, "cache_valid = [ ");
        } else
            sb_str(b, ", ");
        sb_quote(b, one.p);
        free(one.p);
        first = 0;
    }
    if (!first)
        sb_str(b, " ];\n");
    /* access_log (the last one: legate has one log per level) */
    const ngx_dir_t *al = NULL;
    int nal = 0;
    for (const ngx_dir_t *d = block; d; d = d->next)
        if (is(d, "access_log")) {
            al = d;
            nal++;
        }
    if (al) {
        if (nal > 1)
            report(im, al, "legate writes one access log per level: only this one is kept");
        if (al->nargs >= 2 && strcmp(al->args[1], "off") == 0)
            kv_quoted(b, n, "access_log", "off");
        else if (al->nargs >= 2) {
            char *target = NULL;
            if (strncmp(al->args[1], "syslog:", 7) == 0)
                target = syslog_target(im, al, al->args[1]);
            else if (strchr(al->args[1], '$'))
                report(im, al, "a log file name with variables is not in legate: left out");
            else
                target = strdup(al->args[1]);
            if (target) {
                kv_quoted(b, n, "access_log", target);
                free(target);
                for (int i = 3; i < al->nargs; i++) {
                    if (strncmp(al->args[i], "if=", 3) == 0) {
                        const char *why = NULL;
                        char *t = template_of(al->args[i] + 3, &why);
                        if (t == NULL)
                            report(im, al, "if=: %s: every request is logged", why);
                        else {
                            kv_quoted(b, n, "access_log_if", t);
                            free(t);
                        }
                    } else
                        report(im, al, "\"%s\" is not in legate: ignored", al->args[i]);
                }
                if (al->nargs >= 3 && strcmp(al->args[2], "combined") != 0) {
                    const ngx_dir_t *lf = NULL;
                    for (int i = 0; i < im->nlog_formats; i++)
                        if (strcmp(im->log_formats[i]->args[1], al->args[2]) == 0)
                            lf = im->log_formats[i];
                    if (lf == NULL)
                        report(im, al, "no log_format \"%s\": the combined format is used",
                               al->args[2]);
                    else {
                        sb_t f = { 0 };
                        sb_add(&f, "", 0);
                        int a0 = 2;
                        if (lf->nargs > 2 && strncmp(lf->args[2], "escape=", 7) == 0) {
                            if (strcmp(lf->args[2], "escape=json") == 0)
                                report(im, lf, "escape=json: legate escapes as for text logs");
                            a0 = 3;
                        }
                        for (int i = a0; i < lf->nargs; i++)
                            sb_str(&f, lf->args[i]);
                        const char *why = NULL;
                        char *t = template_of(f.p, &why);
                        free(f.p);
                        if (t == NULL)
                            report(im, lf, "%s: the combined format is used instead", why);
                        else {
                            kv_quoted(b, n, "log_format", t);
                            free(t);
                        }
                    }
                }
            }
        }
    }
}

/* nginx's quirk, said where it bites: a level with any of these drops the
 * outer levels' (once per directive and level) */
static void said_not_inherited(imp_t *im, const level_t *l, const char *const *names)
{
    if (l == NULL || l->self == NULL)
        return;
    const level_t *outer = array_level(l->up, names);
    if (outer == NULL)
        return;
    const ngx_dir_t *mine = NULL, *theirs = NULL;
    for (const ngx_dir_t *d = l->block; d && !mine; d = d->next)
        for (size_t i = 0; names[i]; i++)
            if (is(d, names[i]))
                mine = d;
    for (const ngx_dir_t *d = outer->block; d && !theirs; d = d->next)
        for (size_t i = 0; names[i]; i++)
            if (is(d, names[i]))
                theirs = d;
    for (int i = 0; i < im->nsaid; i++)
        if (im->said[i] == mine)
            return;
    if (im->nsaid < (int)(sizeof(im->said) / sizeof(im->said[0])))
        im->said[im->nsaid++] = mine;
    report(im, mine, "nginx does not inherit the %s of %s:%d here (a level with its own "
                     "replaces them all); the translation does the same", theirs->args[0],
           theirs->file, theirs->line);
}

/* auth_request URI: the (internal) location of the server with that path
 * and a proxy_pass to an upstream -> auth_request, auth_request_uri */
static void emit_auth_request(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    const ngx_dir_t *ar = inherited(lv, "auth_request");
    if (ar == NULL || ar->nargs != 2)
        return;
    if (strcmp(ar->args[1], "off") == 0)
        return;
    const char *uri = ar->args[1];
    const ngx_dir_t *target = NULL;
    for (const ngx_dir_t *d = im->server ? im->server->block : NULL; d; d = d->next) {
        if (!is(d, "location") || !d->has_block)
            continue;
        const char *p = d->nargs == 3 && strcmp(d->args[1], "=") == 0 ? d->args[2]
                      : d->nargs == 2 ? d->args[1] : NULL;
        if (p && strcmp(p, uri) == 0)
            target = d;
    }
    const ngx_dir_t *pp = target ? child(target->block, "proxy_pass") : NULL;
    if (pp == NULL || pp->nargs != 2) {
        report(im, ar, "no location \"%s\" with a proxy_pass in this server: left out", uri);
        return;
    }
    const char *path;
    int tls;
    const char *up = upstream_for(im, pp, pp->args[1], &path, &tls);
    if (up == NULL)
        return;
    kv_quoted(b, n, "auth_request", up);
    kv_quoted(b, n, "auth_request_uri", path && strcmp(path, "/") != 0 ? path : uri);
    for (const ngx_dir_t *d = target->block; d; d = d->next)
        if (is(d, "proxy_set_header") || is(d, "proxy_pass_request_body"))
            report(im, d, "legate sends the auth service the request's head without a body "
                          "(auth_request_headers chooses the headers): not translated");
}

static int zone_known(const imp_t *im, char kind, const char *name)
{
    for (int i = 0; i < im->nzones; i++)
        if (im->zones[i][0] == kind && strcmp(im->zones[i] + 2, name) == 0)
            return 1;
    return 0;
}

/* a header set twice in one group would be a libconfig error: the first wins */
static int header_seen(imp_t *im, const ngx_dir_t *d, const char **names, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (strcasecmp(names[i], name) == 0) {
            report(im, d, "legate sets a header once: only the first %s is kept", name);
            return 1;
        }
    if (*n < 64)
        names[(*n)++] = name;
    return 0;
}

/* auth_basic with its file, as they apply to a location: nginx checks
 * nothing without a file, legate refuses auth_basic without one */
static void emit_auth_basic(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    const ngx_dir_t *ab = inherited(lv, "auth_basic");
    if (ab == NULL || ab->nargs != 2)
        return;
    if (strcmp(ab->args[1], "off") == 0) {
        kv_quoted(b, n, "auth_basic", "off");
        return;
    }
    const ngx_dir_t *uf = inherited(lv, "auth_basic_user_file");
    if (uf == NULL || uf->nargs != 2) {
        report(im, ab, "no auth_basic_user_file: nginx asks for nothing, nor does the translation");
        return;
    }
    char path[PATH_MAX], err[512];
    if (!file_readable(im, uf, uf->args[1], path, sizeof(path)))
        return;
    lg_htpasswd_t *h = lg_htpasswd_load(path, err, sizeof(err));
    if (h == NULL) {
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        report(im, uf, "legate refuses this file (%s): authentication left out", err);
        return;
    }
    lg_htpasswd_free(h);
    kv_quoted(b, n, "auth_basic", ab->args[1]);
    kv_quoted(b, n, "auth_basic_user_file", path);
}

/* proxy_set_header, add_header, allow/deny, limit_req, limit_conn: per location */
static void emit_arrays(imp_t *im, sb_t *b, int n, const level_t *lv)
{
    emit_auth_basic(im, b, n, lv);
    static const char *const psh[] = { "proxy_set_header", NULL };
    static const char *const ah[] = { "add_header", NULL };
    static const char *const ad[] = { "allow", "deny", NULL };
    static const char *const lr[] = { "limit_req", NULL };
    static const char *const lc[] = { "limit_conn", NULL };
    const level_t *l;

    said_not_inherited(im, array_level(lv, psh), psh);
    const char *seen[64];
    int nseen = 0;
    if ((l = array_level(lv, psh)) != NULL) {
        sb_t h = { 0 };
        int xff = -1, xrip = -1, xproto = -1;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!is(d, "proxy_set_header"))
                continue;
            if (d->nargs != 3) {
                report(im, d, "takes a name and a value: left out");
                continue;
            }
            const char *name = d->args[1], *val = d->args[2];
            if (strcasecmp(name, "Host") == 0 && (strcmp(val, "$host") == 0 ||
                                                  strcmp(val, "$http_host") == 0))
                continue;   /* legate passes the client's Host */
            if (strcasecmp(name, "X-Forwarded-For") == 0 &&
                strcmp(val, "$proxy_add_x_forwarded_for") == 0) {
                xff = 1;
                continue;
            }
            if (strcasecmp(name, "X-Real-IP") == 0 && strcmp(val, "$remote_addr") == 0) {
                xrip = 1;
                continue;
            }
            if (strcasecmp(name, "X-Forwarded-Proto") == 0 && strcmp(val, "$scheme") == 0) {
                xproto = 1;
                continue;
            }
            if ((strcasecmp(name, "Upgrade") == 0 && strcmp(val, "$http_upgrade") == 0) ||
                (strcasecmp(name, "Connection") == 0 &&
                 (strcasecmp(val, "upgrade") == 0 || strcmp(val, "$connection_upgrade") == 0)))
                continue;   /* legate forwards WebSocket upgrades itself (websocket = true) */
            if (strcasecmp(name, "Connection") == 0 && val[0] == '\0')
                continue;   /* legate keeps upstream connections alive itself */
            if (val[0] == '\0') {
                ind(b, n);
                sb_str(b, "remove_request_headers = ");
                sb_quote(b, name);
                sb_str(b, ";\n");
                continue;
            }
            const char *why = NULL;
            char *t = template_of(val, &why);
            if (t == NULL) {
                report(im, d, "%s: left out", why);
                continue;
            }
            if (header_seen(im, d, seen, &nseen, name)) {
                free(t);
                continue;
            }
            char key[128];
            setting_name(key, sizeof(key), name);
            if (h.n == 0)
                sb_add(&h, "", 0);
            sb_printf(&h, " %s = ", key);
            sb_quote(&h, t);
            sb_str(&h, ";");
            free(t);
        }
        if (h.n) {
            ind(b, n);
            sb_printf(b, "add_request_headers = {%s };\n", h.p);
        }
        free(h.p);
        if (xrip == 1) {
            ind(b, n);
            sb_str(b, "x_real_ip = true;\n");
        }
        (void)xff;
        (void)xproto;
    }
    said_not_inherited(im, array_level(lv, ah), ah);
    nseen = 0;
    if ((l = array_level(lv, ah)) != NULL) {
        sb_t h = { 0 };
        const ngx_dir_t *always = NULL, *plain = NULL;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!is(d, "add_header"))
                continue;
            if (d->nargs != 3 && !(d->nargs == 4 && strcmp(d->args[3], "always") == 0)) {
                report(im, d, "takes a name, a value and maybe \"always\": left out");
                continue;
            }
            if (strcasecmp(d->args[1], "Strict-Transport-Security") == 0 && l->self &&
                is(l->self, "server"))
                continue;   /* hsts, with the server's TLS */
            const char *why = NULL;
            char *t = template_of(d->args[2], &why);
            if (t == NULL) {
                report(im, d, "%s: left out", why);
                continue;
            }
            if (header_seen(im, d, seen, &nseen, d->args[1])) {
                free(t);
                continue;
            }
            if (d->nargs == 3) {
                report(im, d, "legate adds it to every proxied response, nginx only to 2xx and "
                              "3xx without \"always\"");
                plain = d;
            } else
                always = d;
            char key[128];
            setting_name(key, sizeof(key), d->args[1]);
            if (h.n == 0)
                sb_add(&h, "", 0);
            sb_printf(&h, " %s = ", key);
            sb_quote(&h, t);
            sb_str(&h, ";");
            free(t);
        }
        if (h.n) {
            ind(b, n);
            sb_printf(b, "add_response_headers = {%s };\n", h.p);
        }
        free(h.p);
        /* legate's "always" is one switch for the level's headers */
        if (always) {
            ind(b, n);
            sb_str(b, "add_response_headers_always = true;\n");
            if (plain)
                report(im, plain, "without \"always\" beside one with it (%s:%d): legate adds "
                                  "all of this level's headers to its own answers too",
                       always->file, always->line);
        }
    }
    said_not_inherited(im, array_level(lv, ad), ad);
    if ((l = array_level(lv, ad)) != NULL) {
        ind(b, n);
        sb_str(b, "access_rules = [");
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!(is(d, "allow") || is(d, "deny")))
                continue;
            if (d->nargs != 2) {
                report(im, d, "takes one address: left out");
                continue;
            }
            if (strncmp(d->args[1], "unix:", 5) == 0) {
                report(im, d, "unix: is not in legate's rules: left out");
                continue;
            }
            char rule[160];
            snprintf(rule, sizeof(rule), "%s %s", d->args[0], d->args[1]);
            sb_str(b, k++ ? ", " : " ");
            sb_quote(b, rule);
        }
        sb_str(b, " ];\n");
    }
    said_not_inherited(im, array_level(lv, lr), lr);
    if ((l = array_level(lv, lr)) != NULL) {
        sb_t r = { 0 };
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!is(d, "limit_req"))
                continue;
            const char *zone = NULL;
            long burst = -1, delay = -1;
            int nodelay = 0;
            for (int i = 1; i < d->nargs; i++) {
                if (strncmp(d->args[i], "zone=", 5) == 0) zone = d->args[i] + 5;
                else if (strncmp(d->args[i], "burst=", 6) == 0) burst = atol(d->args[i] + 6);
                else if (strncmp(d->args[i], "delay=", 6) == 0) delay = atol(d->args[i] + 6);
                else if (strcmp(d->args[i], "nodelay") == 0) nodelay = 1;
            }
            if (zone == NULL) {
                report(im, d, "no zone=: left out");
                continue;
            }
            char zn[128];
            setting_name(zn, sizeof(zn), zone);
            if (!zone_known(im, 'r', zn)) {
                report(im, d, "no limit_req_zone \"%s\": left out", zone);
                continue;
            }
            if (k++)
                sb_str(&r, ", ");
            sb_printf(&r, "{ zone = \"%s\";", zn);
            if (burst >= 0)
                sb_printf(&r, " burst = %ld;", burst);
            if (nodelay)
                sb_str(&r, " nodelay = true;");
            else if (delay >= 0)
                sb_printf(&r, " delay = %ld;", delay);
            sb_str(&r, " }");
        }
        if (k) {
            ind(b, n);
            sb_printf(b, "limit_req = ( %s );\n", r.p);
        }
        free(r.p);
    }
    said_not_inherited(im, array_level(lv, lc), lc);
    if ((l = array_level(lv, lc)) != NULL) {
        sb_t r = { 0 };
        int k = 0;
        for (const ngx_dir_t *d = l->block; d; d = d->next) {
            if (!is(d, "limit_conn"))
                continue;
            if (d->nargs != 3 || !isdigit((unsigned char)d->args[2][0])) {
                report(im, d, "takes a zone and a number: left out");
                continue;
            }
            char zn[128];
            setting_name(zn, sizeof(zn), d->args[1]);
            if (!zone_known(im, 'c', zn)) {
                report(im, d, "no limit_conn_zone \"%s\": left out", d->args[1]);
                continue;
            }
            if (k++)
                sb_str(&r, ", ");
            sb_printf(&r, "{ zone = \"%s\"; max = %ld; }", zn, atol(d->args[2]));
        }
        if (k) {
            ind(b, n);
            sb_printf(b, "limit_conn = ( %s );\n", r.p);
        }
        free(r.p);
    }
}

/* ---------------------------------------------------------------- upstreams */

static upstream_out_t *find_upstream(imp_t *im, const char *name)
{
    for (upstream_out_t *u = im->ups; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static upstream_out_t *new_upstream(imp_t *im, const char *name)
{
    upstream_out_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        abort();
    setting_name(u->name, sizeof(u->name) - 8, name);
    size_t base = strlen(u->name);
    for (int k = 2; find_upstream(im, u->name); k++)     /* app.v1 and app_v1 */
        snprintf(u->name + base, sizeof(u->name) - base, "_%d", k);
    upstream_out_t **t = &im->ups;
    while (*t)
        t = &(*t)->next;
    *t = u;
    return u;
}

static int resolves(const char *hostport)
{
    char host[256];
    const char *h = hostport;
    size_t n;
    if (h[0] == '[') {
        const char *e = strchr(h, ']');
        if (e == NULL)
            return 0;
        n = (size_t)(e - h - 1);
        h++;
    } else {
        const char *c = strrchr(h, ':');
        n = c ? (size_t)(c - h) : strlen(h);
    }
    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (res)
        freeaddrinfo(res);
    return rc == 0;
}

/* "host[:port]" of nginx -> legate's "host:port" (port 80 by default) */
static void with_port(char *out, size_t outlen, const char *addr, int tls)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        snprintf(out, outlen, "%s", addr);
        return;
    }
    const char *close = strchr(addr, ']');
    const char *colon = strrchr(close ? close : addr, ':');
    if (colon)
        snprintf(out, outlen, "%s", addr);
    else
        snprintf(out, outlen, "%s:%d", addr, tls ? 443 : 80);
}

static void translate_upstream(imp_t *im, const ngx_dir_t *d)
{
    if (d->nargs != 2) {
        report(im, d, "takes one name: left out");
        return;
    }
    upstream_out_t *u = new_upstream(im, d->args[1]);
    sb_t *b = &u->body;
    sb_add(b, "", 0);
    long max_fails = -1;
    long long fail_timeout = -1;
    int nsrv = 0;
    sb_t srv = { 0 };
    sb_add(&srv, "", 0);
    for (const ngx_dir_t *s = d->block; s; s = s->next) {
        if (is(s, "server") && s->nargs >= 2) {
            char addr[300];
            with_port(addr, sizeof(addr), s->args[1], 0);
            if (strncmp(addr, "unix:", 5) != 0 && !resolves(addr)) {
                report(im, s, "\"%s\" does not resolve: left out", s->args[1]);
                continue;
            }
            sb_str(&srv, nsrv++ ? ",\n" : "\n");
            ind(&srv, 4);
            sb_str(&srv, "{ address = ");
            sb_quote(&srv, addr);
            sb_str(&srv, ";");
            for (int i = 2; i < s->nargs; i++) {
                const char *a = s->args[i];
                if (strncmp(a, "weight=", 7) == 0)
                    sb_printf(&srv, " weight = %ld;", atol(a + 7));
                else if (strncmp(a, "max_conns=", 10) == 0)
                    sb_printf(&srv, " max_conns = %ld;", atol(a + 10));
                else if (strcmp(a, "backup") == 0)
                    sb_str(&srv, " backup = true;");
                else if (strcmp(a, "down") == 0)
                    sb_str(&srv, " down = true;");
                else if (strncmp(a, "max_fails=", 10) == 0) {
                    long v = atol(a + 10);
                    if (max_fails >= 0 && v != max_fails)
                        report(im, s, "legate has one max_fails per upstream: %ld is used", max_fails);
                    else
                        max_fails = v;
                } else if (strncmp(a, "fail_timeout=", 13) == 0) {
                    long long v = ngx_time_ms(a + 13);
                    if (v <= 0)
                        report(im, s, "cannot read \"%s\": ignored", a);
                    else if (fail_timeout >= 0 && v != fail_timeout)
                        report(im, s, "legate has one fail_timeout per upstream: the first is used");
                    else
                        fail_timeout = v;
                } else if (strncmp(a, "slow_start=", 11) == 0) {
                    report(im, s, "slow_start is per upstream in legate: set it there by hand");
                } else
                    report(im, s, "\"%s\" is not in legate: ignored", a);
            }
            sb_str(&srv, " }");
        } else if (is(s, "keepalive") && s->nargs == 2) {
            ind(b, 3);
            sb_printf(b, "keepalive = %ld;\n", atol(s->args[1]));
        } else if (is(s, "least_conn")) {
            ind(b, 3);
            sb_str(b, "balance = \"least_conn\";\n");
        } else if (is(s, "ip_hash")) {
            ind(b, 3);
            sb_str(b, "balance = \"ip_hash\";\n");
        } else if (is(s, "random")) {
            ind(b, 3);
            sb_str(b, "balance = \"random\";\n");
            if (s->nargs > 1 && strcmp(s->args[1], "two") != 0)
                report(im, s, "legate's random always takes two choices");
        } else if (is(s, "hash") && s->nargs >= 2) {
            const char *why = NULL;
            char *t = template_of(s->args[1], &why);
            if (t == NULL) {
                report(im, s, "%s: round robin instead", why);
                continue;
            }
            ind(b, 3);
            sb_str(b, "balance = \"hash\";\n");
            kv_quoted(b, 3, "hash_key", t);
            free(t);
            if (s->nargs < 3 || strcmp(s->args[2], "consistent") != 0)
                report(im, s, "legate's hash is always consistent (Maglev)");
        } else if (is(s, "keepalive_timeout") || is(s, "keepalive_requests") ||
                   is(s, "keepalive_time")) {
            report(im, s, "legate's idle upstream connections have no limit of their own: ignored");
        } else if (is(s, "zone")) {
            /* legate keeps upstream state in its shared memory anyway */
        } else
            report(im, s, "not translated in an upstream");
    }
    if (max_fails >= 0) {
        ind(b, 3);
        sb_printf(b, "max_fails = %ld;\n", max_fails);
    }
    if (fail_timeout > 0) {
        ind(b, 3);
        sb_str(b, "fail_timeout = ");
        sb_duration(b, fail_timeout);
        sb_str(b, ";\n");
    }
    if (nsrv == 0) {
        report(im, d, "no server left: a placeholder 127.0.0.1:9 marked down is written");
        sb_str(&srv, "\n");
        ind(&srv, 4);
        sb_str(&srv, "{ address = \"127.0.0.1:9\"; down = true; }");
    }
    ind(b, 3);
    sb_printf(b, "servers = (%s\n", srv.p);
    ind(b, 3);
    sb_str(b, ");\n");
    free(srv.p);
}

/* proxy_pass URL -> upstream name (made for a literal address); the URI part in *uri */
static const char *upstream_for(imp_t *im, const ngx_dir_t *d, const char *url, const char **uri,
                                int *tls)
{
    const char *p;
    *tls = 0;
    if (strncmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        *tls = 1;
    } else {
        report(im, d, "only http:// and https:// are proxied by legate: left out");
        return NULL;
    }
    if (strchr(url, '$')) {
        report(im, d, "a proxy_pass with variables is not in legate: left out");
        return NULL;
    }
    char host[300];
    const char *slash = strchr(p, '/');
    if (strncmp(p, "unix:", 5) == 0) {
        const char *c = strchr(p + 5, ':');
        slash = c ? c + 1 : NULL;
        size_t n = c ? (size_t)(c - p) : strlen(p);
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
    } else {
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        snprintf(host, sizeof(host), "%.*s", (int)n, p);
    }
    *uri = slash && *slash ? slash : NULL;
    char key[128];
    setting_name(key, sizeof(key), host);
    upstream_out_t *u = find_upstream(im, key);
    if (u && !*tls)
        return u->name;
    /* a literal address: an upstream of its own */
    char name[140];
    snprintf(name, sizeof(name), "%s%s", key, *tls ? "_tls" : "");
    if ((u = find_upstream(im, name)) != NULL)
        return u->name;
    if (u == NULL && find_upstream(im, key) && *tls) {
        report(im, d, "https:// to an upstream block: set tls = true on upstream \"%s\" by hand",
               key);
        return find_upstream(im, key)->name;
    }
    char addr[320];
    with_port(addr, sizeof(addr), host, *tls);
    if (strncmp(addr, "unix:", 5) != 0 && !resolves(addr)) {
        report(im, d, "\"%s\" does not resolve: left out", host);
        return NULL;
    }
    u = new_upstream(im, name);
    sb_add(&u->body, "", 0);
    ind(&u->body, 3);
    sb_str(&u->body, "servers = ( ");
    sb_quote(&u->body, addr);
    sb_str(&u->body, " );\n");
    if (*tls) {
        ind(&u->body, 3);
        sb_str(&u->body, "tls = true;\n");
        ind(&u->body, 3);
        sb_str(&u->body, "tls_verify = false;   # nginx's proxy_ssl_verify off\n");
    }
    return u->name;
}

/* ---------------------------------------------------------------- servers */

typedef struct route_ctx {
    const ngx_dir_t *split;         /* split_clients of the $variable proxied to */
} route_ctx_t;

static const ngx_dir_t *find_split(imp_t *im, const char *var)
{
    for (const ngx_dir_t *d = im->http ? im->http->block : NULL; d; d = d->next)
        if (is(d, "split_clients") && d->nargs == 3 && strcmp(d->args[2], var) == 0)
            return d;
    return NULL;
}

static int emit_split(imp_t *im, sb_t *b, int n, const ngx_dir_t *pp, const char *var)
{
    const ngx_dir_t *sc = find_split(im, var);
    if (sc == NULL) {
        report(im, pp, "a proxy_pass with variables is not in legate: left out");
        return 0;
    }
    sb_t s = { 0 };
    sb_add(&s, "", 0);
    double used = 0;
    int k = 0;
    for (const ngx_dir_t *e = sc->block; e; e = e->next) {
        if (e->nargs != 2) {
            report(im, e, "takes a share and a value: left out");
            continue;
        }
        double pct;
        if (strcmp(e->args[0], "*") == 0)
            pct = 100.0 - used;
        else
            pct = atof(e->args[0]);
        used += pct;
        const upstream_out_t *u = find_upstream(im, e->args[1]);
        if (u == NULL) {
            report(im, e, "\"%s\" is not an upstream: its share is left out", e->args[1]);
            continue;
        }
        int w = (int)(pct * 100 + 0.5);
        if (w < 1)
            continue;
        sb_printf(&s, "%s{ upstream = \"%s\"; weight = %d; }", k++ ? ", " : "", u->name, w);
    }
    if (k < 2) {
        report(im, sc, "a split needs two upstreams: left out");
        free(s.p);
        return 0;
    }
    const char *why = NULL;
    char *key = template_of(sc->args[1], &why);
    if (key == NULL) {
        report(im, sc, "%s: left out", why);
        free(s.p);
        return 0;
    }
    ind(b, n);
    sb_printf(b, "split = ( %s );\n", s.p);
    kv_quoted(b, n, "split_key", key);
    report(im, sc, "legate's split hashes the key its own way: the same shares, other members");
    free(key);
    free(s.p);
    return 1;
}

/* proxy_next_upstream* of a location: settings of the upstream in legate */
static void next_upstream(imp_t *im, const level_t *lv, const char *name)
{
    upstream_out_t *u = find_upstream(im, name);
    const ngx_dir_t *nu = inherited(lv, "proxy_next_upstream");
    const ngx_dir_t *tries = inherited(lv, "proxy_next_upstream_tries");
    const ngx_dir_t *tmo = inherited(lv, "proxy_next_upstream_timeout");
    if (u == NULL || (!nu && !tries && !tmo))
        return;
    if (u->has_next) {
        const ngx_dir_t *d = nu ? nu : tries ? tries : tmo;
        if (u->has_next != d->line)
            report(im, d, "legate retries per upstream: the first location's setting for "
                          "\"%s\" is used", name);
        return;
    }
    const ngx_dir_t *first = nu ? nu : tries ? tries : tmo;
    u->has_next = first->line;
    if (nu) {
        sb_t w = { 0 };
        sb_add(&w, "", 0);
        for (int i = 1; i < nu->nargs; i++) {
            const char *a = nu->args[i];
            if (strcmp(a, "error") == 0 || strcmp(a, "timeout") == 0 ||
                strcmp(a, "invalid_header") == 0 || strcmp(a, "non_idempotent") == 0 ||
                strcmp(a, "http_500") == 0 || strcmp(a, "http_502") == 0 ||
                strcmp(a, "http_503") == 0 || strcmp(a, "http_504") == 0 ||
                strcmp(a, "http_429") == 0) {
                if (w.n)
                    sb_str(&w, " ");
                sb_str(&w, a);
            } else
                report(im, nu, "\"%s\" is not in legate's next_upstream: left out", a);
        }
        if (w.n)
            kv_quoted(&u->body, 3, "next_upstream", w.p);
        free(w.p);
    }
    if (tries && tries->nargs == 2) {
        ind(&u->body, 3);
        sb_printf(&u->body, "next_upstream_tries = %ld;\n", atol(tries->args[1]));
    }
    if (tmo && tmo->nargs == 2) {
        long long ms = ngx_time_ms(tmo->args[1]);
        if (ms > 0) {
            ind(&u->body, 3);
            sb_str(&u->body, "next_upstream_timeout = ");
            sb_duration(&u->body, ms);
            sb_str(&u->body, ";\n");
        }
    }
}

static int re_capture(const char *s)
{
    for (const char *p = strchr(s, '$'); p; p = strchr(p + 1, '$'))
        if (p[1] >= '1' && p[1] <= '9')
            return 1;
    return 0;
}

/* the action of a location; 0 when it has none legate can take */
static int emit_action(imp_t *im, sb_t *b, int n, const level_t *lv, const char *match_kind,
                       const char *path)
{
    const ngx_dir_t *ret = child(lv->block, "return");
    const ngx_dir_t *pp = child(lv->block, "proxy_pass");
    if (ret) {
        int code;
        const char *text = NULL;
        if (ret->nargs == 2 && (strncmp(ret->args[1], "http://", 7) == 0 ||
                                strncmp(ret->args[1], "https://", 8) == 0 ||
                                ret->args[1][0] == '$')) {
            code = 302;
            text = ret->args[1];
        } else if (ret->nargs >= 2 && isdigit((unsigned char)ret->args[1][0])) {
            code = atoi(ret->args[1]);
            text = ret->nargs >= 3 ? ret->args[2] : NULL;
        } else {
            report(im, ret, "cannot read it: left out");
            return 0;
        }
        if (code < 100 || code > 599 || code == 444) {
            if (code == 444)
                report(im, ret, "444 (close without an answer) is not in legate: 403 instead");
            else {
                report(im, ret, "status %d is not in legate: left out", code);
                return 0;
            }
            code = 403;
            text = NULL;
        }
        ind(b, n);
        sb_printf(b, "return = %d;\n", code);
        if (text && strstr(match_kind, "regex") == NULL && strpbrk(text, "$") &&
            re_capture(text)) {
            report(im, ret, "$1..$9 without a regex location: the text is left out");
            text = NULL;
        }
        if (text) {
            const char *why = NULL;
            char *t = template_of(text, &why);
            if (t == NULL)
                report(im, ret, "%s: the text is left out", why);
            else {
                int redirect = code >= 300 && code <= 399;
                kv_quoted(b, n, redirect ? "location" : "body", t);
                free(t);
            }
        }
        if (pp)
            report(im, pp, "after a return: never reached");
        return 1;
    }
    if (pp == NULL)
        return 0;
    if (pp->nargs != 2) {
        report(im, pp, "takes one URL: left out");
        return 0;
    }
    const char *url = pp->args[1];
    if ((strncmp(url, "http://$", 8) == 0 || strncmp(url, "https://$", 9) == 0) &&
        strchr(url + 8, '/') == NULL) {
        return emit_split(im, b, n, pp, strchr(url, '$'));
    }
    const char *uri;
    int tls;
    const char *up = upstream_for(im, pp, url, &uri, &tls);
    if (up == NULL)
        return 0;
    kv_quoted(b, n, "proxy_pass", up);
    next_upstream(im, lv, up);
    if (uri) {
        /* nginx replaces the matched prefix by the URI: a capture of the rest */
        if (strcmp(match_kind, "prefix") == 0 && strcmp(uri, path) != 0) {
            report(im, pp, "the URI part replaces the prefix: written as a regex route, which "
                           "legate tries before prefixes");
            sb_t r = { 0 };
            sb_add(&r, "", 0);
            sb_str(&r, uri);
            sb_str(&r, "$1");
            kv_quoted(b, n, "rewrite", r.p);
            free(r.p);
            return 2;      /* the caller writes the match as a regex */
        } else if (strcmp(match_kind, "prefix") != 0 && strcmp(uri, "/") != 0) {
            report(im, pp, "a URI part with a regex or exact location: the path is sent as is");
        }
    }
    return 1;
}

static void regex_escape(sb_t *b, const char *s)
{
    for (; *s; s++) {
        if (strchr(".[]()*+?{}|^$\\", *s))
            sb_add(b, "\\", 1);
        sb_add(b, s, 1);
    }
}

static void translate_rewrite(imp_t *im, sb_t *routes, int *nroutes, const ngx_dir_t *d);

/* a location and its nested ones -> routes */
static void translate_location(imp_t *im, sb_t *routes, int *nroutes, const level_t *up,
                               const ngx_dir_t *loc)
{
    level_t lv = { .up = up, .block = loc->block, .self = loc };
    const char *kind, *path;
    int icase = 0;
    if (loc->nargs == 2 && loc->args[1][0] == '@') {
        report(im, loc, "named locations are not in legate: left out");
        return;
    }
    if (loc->nargs == 3 && strcmp(loc->args[1], "=") == 0) {
        kind = "exact";
        path = loc->args[2];
    } else if (loc->nargs == 3 && strcmp(loc->args[1], "^~") == 0) {
        kind = "prefix";
        path = loc->args[2];
        report(im, loc, "^~ (no regex after this prefix): legate tries regex routes before "
                        "prefixes whatever the prefix");
    } else if (loc->nargs == 3 && (strcmp(loc->args[1], "~") == 0 ||
                                   strcmp(loc->args[1], "~*") == 0)) {
        icase = loc->args[1][1] == '*';
        kind = icase ? "iregex" : "regex";      /* legate's iregex: nginx's ~* */
        path = loc->args[2];
    } else if (loc->nargs == 2) {
        kind = "prefix";
        path = loc->args[1];
    } else {
        report(im, loc, "cannot read its match: left out");
        return;
    }
    int internal = child(loc->block, "internal") != NULL;
    if (internal)
        report(im, child(loc->block, "internal"), "an internal location is not a route in "
               "legate (auth_request asks its upstream directly): it answers 404, as in nginx");
    char *ere = NULL;
    if (strstr(kind, "regex")) {
        const char *why = NULL;
        ere = ere_of(path, 0, &why);
        if (ere == NULL) {
            report(im, loc, "\"%s\": %s: left out", path, why);
            return;
        }
    } else if (path[0] != '/') {
        report(im, loc, "a path that does not start with / is not in legate: left out");
        return;
    }
    /* the common rewrites of a location: "rewrite RE /path break;" before a
     * proxy_pass (the route becomes that regex, the path sent upstream its
     * replacement), and redirecting ones (a route of their own) */
    const ngx_dir_t *loc_rw = NULL, *loc_redirect = NULL;
    char *rw_re = NULL, *rw_to = NULL;
    int nrw = 0;
    for (const ngx_dir_t *d = internal ? NULL : loc->block; d; d = d->next)
        if (is(d, "rewrite"))
            nrw++;
    for (const ngx_dir_t *d = nrw == 1 ? loc->block : NULL; d; d = d->next) {
        if (!is(d, "rewrite") || d->nargs < 3)
            continue;
        const char *flag = d->nargs >= 4 ? d->args[3] : "";
        const char *rep = d->args[2];
        int url = strncmp(rep, "http://", 7) == 0 || strncmp(rep, "https://", 8) == 0 ||
                  strncmp(rep, "$scheme", 7) == 0;
        if (strcmp(flag, "permanent") == 0 || strcmp(flag, "redirect") == 0 || url) {
            loc_redirect = d;
            translate_rewrite(im, routes, nroutes, d);
            report(im, d, "a redirect of this location is a regex route of its own: legate tries "
                          "it for every path the regex matches");
        } else if ((strcmp(flag, "break") == 0 || strcmp(flag, "last") == 0) &&
                   child(loc->block, "proxy_pass") && !child(loc->block, "return")) {
            const char *why = NULL;
            rw_re = ere_of(d->args[1], 0, &why);
            if (rw_re == NULL) {
                report(im, d, "\"%s\": %s: left out", d->args[1], why);
                continue;
            }
            rw_to = template_of(rep, &why);
            if (rw_to == NULL) {
                report(im, d, "%s: left out", why);
                free(rw_re);
                rw_re = NULL;
                continue;
            }
            loc_rw = d;
            report(im, d, "the route is this regex, with the replacement as the path sent "
                          "upstream: paths of the location it does not match go to other "
                          "routes%s", strcmp(flag, "last") == 0 ? " (and legate does not "
                          "search the locations again, as last does)" : "");
        }
    }
    for (const ngx_dir_t *d = internal ? NULL : loc->block; d; d = d->next) {
        const char *why = ignored_why(d->args[0]);
        if (is(d, "location") || is(d, "return") || is(d, "proxy_pass"))
            continue;
        if (why)
            report(im, d, "not translated: %s", why);
        else if (is(d, "rewrite") && d != loc_rw && d != loc_redirect)
            report(im, d, "only one rewrite ... break|last with a proxy_pass, or a redirecting "
                          "one, is translated in a location: left out");
        else if (is(d, "if"))
            report(im, d, "\"if\" is not in legate: the block is left out");
        else if (is(d, "internal")) {
            /* handled above */
        }
        else if (!is_handled(d->args[0]))
            report(im, d, "not translated: legate has no such setting");
        else if (is(d, "ssl_certificate") || is(d, "listen") || is(d, "server_name"))
            report(im, d, "not allowed in a location");
    }
    sb_t body = { 0 };
    sb_add(&body, "", 0);
    int act;
    if (internal) {
        ind(&body, 5);
        sb_str(&body, "return = 404;\n");
        act = 1;
    } else
        act = emit_action(im, &body, 5, &lv, kind, path);
    if (act == 2 && loc_rw) {
        report(im, loc_rw, "with a proxy_pass URI as well: left out");
        free(rw_re);
        free(rw_to);
        rw_re = rw_to = NULL;
        loc_rw = NULL;
    }
    if (act == 1 && loc_rw) {
        kv_quoted(&body, 5, "rewrite", rw_to);
        act = 3;
    }
    if (act && !internal) {
        emit_scalars(im, &body, 5, loc->block, 1);
        emit_arrays(im, &body, 5, &lv);
        emit_auth_request(im, &body, 5, &lv);
    }
    if (act) {
        sb_str(routes, *nroutes ? ",\n" : "\n");
        ind(routes, 4);
        sb_str(routes, "{\n");
        ind(routes, 5);
        if (act == 3) {
            sb_str(routes, "regex = ");
            sb_quote(routes, rw_re);
        } else if (act == 2) {
            sb_t r = { 0 };
            sb_add(&r, "", 0);
            sb_str(&r, "^");
            regex_escape(&r, path);
            sb_str(&r, "(.*)$");
            sb_str(routes, "regex = ");
            sb_quote(routes, r.p);
            free(r.p);
        } else {
            sb_printf(routes, "%s = ", kind);
            sb_quote(routes, ere ? ere : path);
        }
        sb_str(routes, ";\n");
        sb_str(routes, body.p);
        ind(routes, 4);
        sb_str(routes, "}");
        (*nroutes)++;
    } else if (child(loc->block, "location") == NULL) {
        report(im, loc, "no proxy_pass or return legate can take: no route (legate answers 404)");
    }
    free(body.p);
    free(ere);
    free(rw_re);
    free(rw_to);
    for (const ngx_dir_t *d = loc->block; d; d = d->next)
        if (is(d, "location") && d->has_block)
            translate_location(im, routes, nroutes, &lv, d);
}

/* a server-level rewrite that redirects -> a regex route */
static void translate_rewrite(imp_t *im, sb_t *routes, int *nroutes, const ngx_dir_t *d)
{
    if (d->nargs < 3) {
        report(im, d, "takes a regex and a replacement: left out");
        return;
    }
    const char *flag = d->nargs >= 4 ? d->args[3] : "";
    const char *rep = d->args[2];
    int code;
    if (strcmp(flag, "permanent") == 0)
        code = 301;
    else if (strcmp(flag, "redirect") == 0 || strncmp(rep, "http://", 7) == 0 ||
             strncmp(rep, "https://", 8) == 0 || strncmp(rep, "$scheme", 7) == 0)
        code = 302;
    else {
        report(im, d, "only redirecting rewrites (permanent, redirect, or to a URL) are "
                      "translated at server level: left out");
        return;
    }
    const char *why = NULL;
    char *ere = ere_of(d->args[1], 0, &why);
    if (ere == NULL) {
        report(im, d, "\"%s\": %s: left out", d->args[1], why);
        return;
    }
    sb_t r = { 0 };
    sb_add(&r, "", 0);
    size_t rl = strlen(rep);
    int keep_query = !(rl > 0 && rep[rl - 1] == '?');
    sb_add(&r, rep, keep_query ? rl : rl - 1);
    if (keep_query) {
        report(im, d, "nginx appends the query string to the redirect; legate's location is "
                      "sent as written");
    }
    char *t = template_of(r.p, &why);
    free(r.p);
    if (t == NULL) {
        report(im, d, "%s: left out", why);
        free(ere);
        return;
    }
    sb_str(routes, *nroutes ? ",\n" : "\n");
    ind(routes, 4);
    sb_str(routes, "{ regex = ");
    sb_quote(routes, ere);
    sb_printf(routes, "; return = %d; location = ", code);
    sb_quote(routes, t);
    sb_str(routes, "; }");
    (*nroutes)++;
    free(t);
    free(ere);
}

typedef struct tls_conf {
    const ngx_dir_t *certs[8], *keys[8];
    int ncerts, nkeys;
} tls_conf_t;

static void collect_tls(const ngx_dir_t *block, tls_conf_t *t)
{
    int c = 0, k = 0;
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (is(d, "ssl_certificate"))
            c++;
        if (is(d, "ssl_certificate_key"))
            k++;
    }
    if (c == 0 && k == 0)
        return;
    t->ncerts = t->nkeys = 0;   /* nginx: a level with any replaces the outer ones */
    for (const ngx_dir_t *d = block; d; d = d->next) {
        if (is(d, "ssl_certificate") && t->ncerts < 8 && d->nargs == 2)
            t->certs[t->ncerts++] = d;
        if (is(d, "ssl_certificate_key") && t->nkeys < 8 && d->nargs == 2)
            t->keys[t->nkeys++] = d;
    }
}

static const ngx_dir_t *inherited(const level_t *lv, const char *name)
{
    for (; lv; lv = lv->up) {
        const ngx_dir_t *d = child(lv->block, name);
        if (d)
            return d;
    }
    return NULL;
}

static void translate_server(imp_t *im, sb_t *out, const level_t *http, const ngx_dir_t *srv)
{
    level_t lv = { .up = http, .block = srv->block, .self = srv };
    sb_t b = { 0 };
    sb_add(&b, "", 0);
    im->server = srv;
    /* TLS first: a server whose certificates cannot be read loses its ssl listens */
    tls_conf_t tls = { 0 };
    if (http)
        collect_tls(http->block, &tls);
    collect_tls(srv->block, &tls);
    int tls_ok = tls.ncerts > 0 && tls.ncerts == tls.nkeys;
    char certs[8][PATH_MAX], keys[8][PATH_MAX];
    for (int i = 0; tls_ok && i < tls.ncerts; i++) {
        if (strncmp(tls.certs[i]->args[1], "data:", 5) == 0 ||
            strchr(tls.certs[i]->args[1], '$')) {
            report(im, tls.certs[i], "certificates from variables or data: are not in legate");
            tls_ok = 0;
        } else if (!file_readable(im, tls.certs[i], tls.certs[i]->args[1], certs[i], PATH_MAX) ||
                   !file_readable(im, tls.keys[i], tls.keys[i]->args[1], keys[i], PATH_MAX))
            tls_ok = 0;
    }
    if (tls.ncerts != tls.nkeys)
        report(im, srv, "as many ssl_certificate_key as ssl_certificate are needed: no TLS");

    /* listen */
    sb_t ls = { 0 };
    sb_add(&ls, "", 0);
    int nlisten = 0, any_tls = 0;
    char seen_addr[32][300];
    /* nginx 1.25's "http2 on;" turns HTTP/2 on for every address of the server */
    const ngx_dir_t *h2d = child(srv->block, "http2");
    int srv_h2 = h2d && h2d->nargs >= 2 && strcmp(h2d->args[1], "on") == 0;
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        if (!is(d, "listen"))
            continue;
        if (d->nargs < 2) {
            report(im, d, "needs an address: left out");
            continue;
        }
        const char *a = d->args[1];
        char addr[300];
        if (strncmp(a, "unix:", 5) == 0)
            snprintf(addr, sizeof(addr), "%s", a);
        else if (strspn(a, "0123456789") == strlen(a))
            snprintf(addr, sizeof(addr), "0.0.0.0:%s", a);
        else if (a[0] == '*' && a[1] == ':')
            snprintf(addr, sizeof(addr), "0.0.0.0:%s", a + 2);
        else if (strchr(a, ':') == NULL || (a[0] == '[' && strstr(a, "]:") == NULL))
            snprintf(addr, sizeof(addr), "%s:80", a);
        else
            snprintf(addr, sizeof(addr), "%s", a);
        int ssl = 0, pp = 0, def = 0, h2 = srv_h2;
        long backlog = 0;
        for (int i = 2; i < d->nargs; i++) {
            const char *o = d->args[i];
            if (strcmp(o, "ssl") == 0) ssl = 1;
            else if (strcmp(o, "proxy_protocol") == 0) pp = 1;
            else if (strcmp(o, "default_server") == 0 || strcmp(o, "default") == 0) def = 1;
            else if (strncmp(o, "backlog=", 8) == 0) backlog = atol(o + 8);
            else if (strcmp(o, "http2") == 0)
                h2 = 1;
            else if (strcmp(o, "reuseport") == 0 || strcmp(o, "deferred") == 0 ||
                     strcmp(o, "bind") == 0 || strncmp(o, "ipv6only=", 9) == 0 ||
                     strncmp(o, "so_keepalive", 12) == 0 || strncmp(o, "fastopen", 8) == 0 ||
                     strncmp(o, "rcvbuf", 6) == 0 || strncmp(o, "sndbuf", 6) == 0)
                ; /* legate: SO_REUSEPORT sockets per worker, bound separately */
            else if (strcmp(o, "quic") == 0) {
                report(im, d, "QUIC is not in legate: left out");
                ssl = -1;
            } else
                report(im, d, "\"%s\" is not in legate: ignored", o);
        }
        if (ssl < 0)
            continue;
        if (ssl && !tls_ok) {
            report(im, d, "ssl without certificates legate can read: this address is left out");
            continue;
        }
        int dup = 0;
        for (int k = 0; k < nlisten && !dup; k++)
            dup = strcmp(seen_addr[k], addr) == 0;
        if (dup) {
            report(im, d, "%s is listed twice in this server (nginx refuses it): left out", addr);
            continue;
        }
        if (nlisten < 32)
            snprintf(seen_addr[nlisten], sizeof(seen_addr[0]), "%s", addr);
        else {
            report(im, d, "more than 32 addresses: left out");
            continue;
        }
        any_tls |= ssl;
        sb_str(&ls, nlisten++ ? ", " : "");
        if (!ssl && !pp && !def && !backlog && !h2)
            sb_quote(&ls, addr);
        else {
            sb_str(&ls, "{ address = ");
            sb_quote(&ls, addr);
            sb_str(&ls, ";");
            if (ssl) sb_str(&ls, " tls = true;");
            if (pp) sb_str(&ls, " proxy_protocol = true;");
            if (def) sb_str(&ls, " default = true;");
            if (backlog > 0) sb_printf(&ls, " backlog = %ld;", backlog);
            if (h2) sb_str(&ls, " http2 = true;");
            sb_str(&ls, " }");
        }
    }
    if (nlisten == 0) {
        if (child(srv->block, "listen") == NULL) {
            sb_quote(&ls, "0.0.0.0:80");
            nlisten = 1;
            report(im, srv, "no listen: nginx's default *:80 is written");
        } else {
            report(im, srv, "no address left to listen on: the server is left out");
            free(ls.p);
            free(b.p);
            return;
        }
    }
    ind(&b, 3);
    sb_printf(&b, "listen = ( %s );\n", ls.p);
    free(ls.p);

    /* server_name */
    const ngx_dir_t *sn = child(srv->block, "server_name");
    if (sn) {
        sb_t names = { 0 };
        int k = 0;
        for (int i = 1; i < sn->nargs; i++) {
            const char *nm = sn->args[i];
            if (strcmp(nm, "_") == 0 || nm[0] == '\0' || strcmp(nm, "\"\"") == 0 ||
                strcmp(nm, "$hostname") == 0)
                continue;
            if (names.n == 0)
                sb_add(&names, "", 0);
            if (nm[0] == '~') {
                const char *why = NULL;
                char *e = ere_of(nm + 1, 1, &why);
                if (e == NULL) {
                    report(im, sn, "\"%s\": %s: left out", nm, why);
                    continue;
                }
                sb_t t = { 0 };
                sb_add(&t, "~", 1);
                sb_str(&t, e);
                sb_str(&names, k++ ? ", " : "");
                sb_quote(&names, t.p);
                free(t.p);
                free(e);
            } else if (nm[0] == '.') {
                sb_str(&names, k++ ? ", " : "");
                sb_quote(&names, nm + 1);
                char w[300];
                snprintf(w, sizeof(w), "*%s", nm);
                sb_str(&names, ", ");
                sb_quote(&names, w);
                k++;
            } else {
                sb_str(&names, k++ ? ", " : "");
                sb_quote(&names, nm);
            }
        }
        if (k) {
            ind(&b, 3);
            sb_printf(&b, "server_name = [ %s ];\n", names.p);
        }
        free(names.p);
    }
    if (any_tls) {
        ind(&b, 3);
        sb_str(&b, "tls_certificates = (");
        for (int i = 0; i < tls.ncerts; i++) {
            sb_str(&b, i ? ", " : " ");
            sb_str(&b, "{ cert = ");
            sb_quote(&b, certs[i]);
            sb_str(&b, "; key = ");
            sb_quote(&b, keys[i]);
            sb_str(&b, "; }");
        }
        sb_str(&b, " );\n");
        const ngx_dir_t *d;
        if ((d = inherited(&lv, "ssl_protocols")) != NULL) {
            sb_t p = { 0 };
            sb_add(&p, "", 0);
            for (int i = 1; i < d->nargs; i++) {
                if (strcmp(d->args[i], "TLSv1") == 0 || strcmp(d->args[i], "TLSv1.1") == 0 ||
                    strcmp(d->args[i], "SSLv3") == 0 || strcmp(d->args[i], "SSLv2") == 0) {
                    report(im, d, "%s is not offered by legate (TLS 1.2 and 1.3 only)", d->args[i]);
                    continue;
                }
                if (p.n)
                    sb_str(&p, " ");
                sb_str(&p, d->args[i]);
            }
            if (p.n)
                kv_quoted(&b, 3, "tls_protocols", p.p);
            free(p.p);
        }
        if ((d = inherited(&lv, "ssl_ciphers")) != NULL && d->nargs == 2)
            kv_quoted(&b, 3, "tls_ciphers", d->args[1]);
        if ((d = inherited(&lv, "ssl_session_timeout")) != NULL && d->nargs == 2) {
            long long ms = ngx_time_ms(d->args[1]);
            if (ms > 0) {
                ind(&b, 3);
                sb_str(&b, "tls_session_timeout = ");
                sb_duration(&b, ms);
                sb_str(&b, ";\n");
            }
        }
        if ((d = inherited(&lv, "ssl_session_tickets")) != NULL && d->nargs == 2) {
            ind(&b, 3);
            sb_printf(&b, "tls_session_tickets = %s;\n",
                      strcmp(d->args[1], "off") == 0 ? "false" : "true");
        }
        char path[PATH_MAX];
        if ((d = inherited(&lv, "ssl_client_certificate")) != NULL && d->nargs == 2 &&
            file_readable(im, d, d->args[1], path, sizeof(path))) {
            kv_quoted(&b, 3, "tls_client_ca", path);
            const ngx_dir_t *v = inherited(&lv, "ssl_verify_client");
            if (v && v->nargs == 2)
                kv_quoted(&b, 3, "tls_verify_client", v->args[1]);
            if ((v = inherited(&lv, "ssl_verify_depth")) != NULL && v->nargs == 2) {
                ind(&b, 3);
                sb_printf(&b, "tls_verify_depth = %ld;\n", atol(v->args[1]));
            }
        }
        if ((d = inherited(&lv, "ssl_stapling_file")) != NULL && d->nargs == 2 &&
            file_readable(im, d, d->args[1], path, sizeof(path)))
            kv_quoted(&b, 3, "tls_ocsp_response", path);
        /* HSTS from add_header at server (or http) level */
        for (const level_t *l = &lv; l; l = l->up)
            for (const ngx_dir_t *h = l->block; h; h = h->next)
                if (is(h, "add_header") && h->nargs >= 3 &&
                    strcasecmp(h->args[1], "Strict-Transport-Security") == 0) {
                    kv_quoted(&b, 3, "hsts", h->args[2]);
                    goto hsts_done;
                }
    hsts_done:;
    }
    /* real_ip (server settings in legate) */
    {
        const level_t *rl = NULL;
        static const char *const rif[] = { "set_real_ip_from", NULL };
        if ((rl = array_level(&lv, rif)) != NULL) {
            ind(&b, 3);
            sb_str(&b, "real_ip_from = [");
            int k = 0;
            for (const ngx_dir_t *d = rl->block; d; d = d->next)
                if (is(d, "set_real_ip_from") && d->nargs == 2) {
                    if (strncmp(d->args[1], "unix:", 5) == 0) {
                        report(im, d, "unix: is not in legate: left out");
                        continue;
                    }
                    sb_str(&b, k++ ? ", " : " ");
                    sb_quote(&b, d->args[1]);
                }
            sb_str(&b, " ];\n");
            const ngx_dir_t *h = inherited(&lv, "real_ip_header");
            if (h && h->nargs == 2) {
                if (strcmp(h->args[1], "proxy_protocol") == 0)
                    report(im, h, "legate takes the PROXY protocol address itself (listen "
                                  "proxy_protocol)");
                else
                    kv_quoted(&b, 3, "real_ip_header", h->args[1]);
            }
        }
    }
    emit_scalars(im, &b, 3, srv->block, 0);
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        const char *why = ignored_why(d->args[0]);
        if (is(d, "location") || is(d, "listen") || is(d, "server_name") || is(d, "return") ||
            is(d, "rewrite"))
            continue;
        if (why)
            report(im, d, "not translated: %s", why);
        else if (is(d, "if"))
            report(im, d, "\"if\" is not in legate: the block is left out");
        else if (is(d, "proxy_pass"))
            report(im, d, "not allowed here in nginx either: left out");
        else if (!is_handled(d->args[0]))
            report(im, d, "not translated: legate has no such setting");
    }

    /* routes: server-level rewrites and return first, as nginx's rewrite phase */
    sb_t routes = { 0 };
    sb_add(&routes, "", 0);
    int nroutes = 0;
    const ngx_dir_t *ret = NULL;
    for (const ngx_dir_t *d = srv->block; d; d = d->next) {
        if (is(d, "rewrite"))
            translate_rewrite(im, &routes, &nroutes, d);
        if (is(d, "return") && ret == NULL)
            ret = d;
    }
    if (ret) {
        /* answers everything before any location is chosen */
        sb_t body = { 0 };
        sb_add(&body, "", 0);
        level_t only = { .up = &lv, .block = ret, .self = srv };
        ngx_dir_t one = *ret;
        one.next = NULL;
        only.block = &one;
        if (emit_action(im, &body, 5, &only, "prefix", "/")) {
            sb_str(&routes, nroutes ? ",\n" : "\n");
            ind(&routes, 4);
            sb_str(&routes, "{\n");
            ind(&routes, 5);
            sb_str(&routes, "prefix = \"/\";\n");
            sb_str(&routes, body.p);
            ind(&routes, 4);
            sb_str(&routes, "}");
            nroutes++;
        }
        free(body.p);
        if (child(srv->block, "location"))
            report(im, ret, "a server-level return answers before any location: the locations "
                            "are left out");
    } else {
        for (const ngx_dir_t *d = srv->block; d; d = d->next)
            if (is(d, "location") && d->has_block)
                translate_location(im, &routes, &nroutes, &lv, d);
    }
    if (nroutes) {
        ind(&b, 3);
        sb_printf(&b, "routes = (%s\n", routes.p);
        ind(&b, 3);
        sb_str(&b, ");\n");
    }
    free(routes.p);
    sb_str(out, im->nservers++ ? ",\n" : "\n");
    ind(out, 2);
    sb_printf(out, "{   # %s:%d\n", srv->file, srv->line);
    sb_str(out, b.p);
    ind(out, 2);
    sb_str(out, "}");
    free(b.p);
}

/* ---------------------------------------------------------------- http */

static void translate_zones(imp_t *im, const ngx_dir_t *d)
{
    const char *zone = NULL, *rate = NULL;
    for (int i = 2; i < d->nargs; i++) {
        if (strncmp(d->args[i], "zone=", 5) == 0) zone = d->args[i] + 5;
        else if (strncmp(d->args[i], "rate=", 5) == 0) rate = d->args[i] + 5;
        else if (strcmp(d->args[i], "sync") != 0)
            report(im, d, "\"%s\" is not in legate: ignored", d->args[i]);
    }
    if (d->nargs < 3 || zone == NULL || (is(d, "limit_req_zone") && rate == NULL)) {
        report(im, d, "needs a key, zone= and (for limit_req_zone) rate=: left out");
        return;
    }
    char name[128];
    const char *colon = strchr(zone, ':');
    snprintf(name, sizeof(name), "%.*s", (int)(colon ? colon - zone : (long)strlen(zone)), zone);
    char zn[128];
    setting_name(zn, sizeof(zn), name);
    const char *why = NULL;
    char *key = template_of(d->args[1], &why);
    if (key == NULL) {
        report(im, d, "%s: left out", why);
        return;
    }
    if (zone_known(im, is(d, "limit_req_zone") ? 'r' : 'c', zn)) {
        report(im, d, "zone \"%s\" is declared twice (nginx refuses it): the first is kept", zn);
        free(key);
        return;
    }
    if (im->nzones < (int)(sizeof(im->zones) / sizeof(im->zones[0]))) {
        char *z = malloc(strlen(zn) + 3);
        if (z == NULL)
            abort();
        sprintf(z, "%c:%s", is(d, "limit_req_zone") ? 'r' : 'c', zn);
        im->zones[im->nzones++] = z;
    }
    sb_t *b = is(d, "limit_req_zone") ? &im->zones_req : &im->zones_conn;
    sb_str(b, b->n ? ",\n" : "\n");
    ind(b, 2);
    sb_printf(b, "{ name = \"%s\"; key = ", zn);
    sb_quote(b, key);
    if (rate)
        sb_printf(b, "; rate = \"%s\"", rate);
    if (colon && ngx_size(colon + 1) > 0)
        sb_printf(b, "; size = \"%s\"", colon + 1);
    sb_str(b, "; }");
    free(key);
}

static void translate_http(imp_t *im, sb_t *out, const ngx_dir_t *http)
{
    level_t lv = { .up = NULL, .block = http->block, .self = NULL };
    im->http = http;
    /* first what others refer to: log formats, upstreams, zones, the cache */
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        if (is(d, "log_format") && d->nargs >= 3 &&
            im->nlog_formats < (int)(sizeof(im->log_formats) / sizeof(im->log_formats[0])))
            im->log_formats[im->nlog_formats++] = d;
        else if (is(d, "upstream") && d->has_block)
            translate_upstream(im, d);
        else if (is(d, "limit_req_zone") || is(d, "limit_conn_zone"))
            translate_zones(im, d);
        else if (is(d, "proxy_cache_path")) {
            long long max = -1;
            for (int i = 2; i < d->nargs; i++)
                if (strncmp(d->args[i], "max_size=", 9) == 0)
                    max = ngx_size(d->args[i] + 9);
            int mb = max > 0 ? (int)(max / (1024 * 1024)) : 64;
            if (mb > 1024) {
                report(im, d, "legate's cache is in shared memory: %d MB instead of max_size", 1024);
                mb = 1024;
            }
            if (mb < 1)
                mb = 1;
            if (im->cache_size_mb)
                report(im, d, "legate has one cache: this one is merged into the first");
            else
                report(im, d, "legate keeps the cache in memory (cache_size = \"%dm\"); "
                              "cache_path can save it at exit", mb);
            if (!im->cache_size_mb)
                im->cache_size_mb = mb;
        } else if (is(d, "map")) {
            if (d->nargs != 3 || strcmp(d->args[1], "$http_upgrade") != 0)
                report(im, d, "maps are not in legate: left out");
        } else if (is(d, "geo"))
            report(im, d, "geo is not in legate (it has allow_countries/countries by GeoIP): "
                          "left out");
        else if (is(d, "split_clients")) {
            /* with the proxy_pass that uses it */
        }
    }
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        const char *why = ignored_why(d->args[0]);
        if (why)
            report(im, d, "not translated: %s", why);
        else if (is(d, "proxy_pass") || is(d, "return") || is(d, "location") || is(d, "listen"))
            report(im, d, "not allowed at http level: left out");
        else if (is(d, "if") || is(d, "set"))
            report(im, d, "not in legate: left out");
        else if (!is_handled(d->args[0]) && !is(d, "geo"))
            report(im, d, "not translated: legate has no such setting");
    }
    sb_t servers = { 0 };
    sb_add(&servers, "", 0);
    for (const ngx_dir_t *d = http->block; d; d = d->next) {
        if (!is(d, "server") || !d->has_block)
            continue;
        size_t at = servers.n;
        int before = im->nservers;
        translate_server(im, &servers, &lv, d);
        if (im->nservers == before || im->nsrv_text >= (int)(sizeof(im->srv_text) /
                                                              sizeof(im->srv_text[0])))
            continue;
        /* the server's own text, without the separator before it */
        const char *t = servers.p + at;
        t += strspn(t, ",\n ");
        char *copy = strdup(t);
        if (copy == NULL)
            abort();
        const ngx_dir_t *sn = child(d->block, "server_name");
        const char *name = sn && sn->nargs >= 2 && sn->args[1][0] ? sn->args[1] : "server";
        if (strcmp(name, "_") == 0 || name[0] == '~')
            name = "default";
        snprintf(im->srv_name[im->nsrv_text], sizeof(im->srv_name[0]), "%02d-", im->nsrv_text + 1);
        setting_name(im->srv_name[im->nsrv_text] + 3, sizeof(im->srv_name[0]) - 3,
                     name[0] == '*' || name[0] == '.' ? name + 1 + (name[1] == '.') : name);
        im->srv_text[im->nsrv_text++] = copy;
    }

    sb_t *common = &im->part_http;
    sb_add(common, "", 0);
    emit_scalars(im, common, 1, http->block, 0);
    if (im->zones_req.n)
        sb_printf(common, "    limit_req_zones = (%s\n    );\n", im->zones_req.p);
    if (im->zones_conn.n)
        sb_printf(common, "    limit_conn_zones = (%s\n    );\n", im->zones_conn.p);
    sb_add(&im->part_ups, "", 0);
    if (im->ups) {
        sb_str(&im->part_ups, "    upstreams = {\n");
        for (upstream_out_t *u = im->ups; u; u = u->next)
            sb_printf(&im->part_ups, "        %s = {\n%s        };\n", u->name,
                      u->body.p ? u->body.p : "");
        sb_str(&im->part_ups, "    };\n");
    }
    sb_str(out, "http = {\n");
    sb_str(out, common->p);
    sb_str(out, im->part_ups.p);
    sb_printf(out, "    servers = (%s\n    );\n};\n", servers.p);
    free(servers.p);
}

/* ---------------------------------------------------------------- main */

static void translate_main(imp_t *im, sb_t *out, const ngx_dir_t *root, const ngx_dir_t **http)
{
    for (const ngx_dir_t *d = root; d; d = d->next) {
        if (is(d, "worker_processes") && d->nargs == 2) {
            if (strcmp(d->args[1], "auto") == 0)
                sb_str(out, "worker_processes = \"auto\";\n");
            else
                sb_printf(out, "worker_processes = %ld;\n", atol(d->args[1]));
        } else if (is(d, "user") && d->nargs >= 2) {
            if (getpwnam(d->args[1]) == NULL) {
                report(im, d, "no user \"%s\" here: left out", d->args[1]);
                continue;
            }
            kv_quoted(out, 0, "user", d->args[1]);
            if (d->nargs == 3) {
                if (getgrnam(d->args[2]) == NULL)
                    report(im, d, "no group \"%s\" here: left out", d->args[2]);
                else
                    kv_quoted(out, 0, "group", d->args[2]);
            }
        } else if (is(d, "pid") && d->nargs == 2) {
            kv_quoted(out, 0, "pid", d->args[1]);
        } else if (is(d, "error_log") && d->nargs >= 2) {
            if (strncmp(d->args[1], "memory:", 7) == 0) {
                report(im, d, "legate logs to a file, syslog or stderr: left out");
                continue;
            }
            if (strncmp(d->args[1], "syslog:", 7) == 0) {
                char *target = syslog_target(im, d, d->args[1]);
                if (target == NULL)
                    continue;
                kv_quoted(out, 0, "error_log", target);
                free(target);
            } else
                kv_quoted(out, 0, "error_log", strcmp(d->args[1], "/dev/stderr") == 0 ? "stderr"
                                                                                    : d->args[1]);
            if (d->nargs == 3)
                kv_quoted(out, 0, "error_log_level", d->args[2]);
        } else if (is(d, "worker_rlimit_nofile") && d->nargs == 2) {
            sb_printf(out, "worker_rlimit_nofile = %ld;\n", atol(d->args[1]));
        } else if (is(d, "worker_shutdown_timeout") && d->nargs == 2) {
            long long ms = ngx_time_ms(d->args[1]);
            if (ms > 0) {
                sb_str(out, "shutdown_timeout = ");
                sb_duration(out, ms);
                sb_str(out, ";\n");
            }
        } else if (is(d, "events")) {
            for (const ngx_dir_t *e = d->block; e; e = e->next) {
                if (is(e, "worker_connections") && e->nargs == 2) {
                    sb_printf(out, "worker_connections = %ld;\n", atol(e->args[1]));
                    report(im, e, "nginx counts upstream connections too; legate counts "
                                  "clients (0, the default, follows the open-file limit)");
                } else if (is(e, "use") || is(e, "multi_accept") || is(e, "accept_mutex"))
                    ;   /* legate: epoll, SO_REUSEPORT per worker */
                else
                    report(im, e, "not translated: legate has no such setting");
            }
        } else if (is(d, "http") && d->has_block) {
            *http = d;
        } else if (is(d, "load_module")) {
            report(im, d, "legate has no modules: left out");
        } else if (is(d, "stream") || is(d, "mail")) {
            report(im, d, "legate proxies HTTP only: the block is left out");
        } else if (is(d, "daemon") || is(d, "master_process") || is(d, "pcre_jit") ||
                   is(d, "worker_cpu_affinity") || is(d, "worker_priority") || is(d, "env") ||
                   is(d, "thread_pool") || is(d, "timer_resolution") || is(d, "lock_file") ||
                   is(d, "working_directory") || is(d, "ssl_engine")) {
            report(im, d, "not translated: legate has no such setting");
        } else
            report(im, d, "not translated: legate has no such setting");
    }
}

/* FILE's text into DIR/NAME (DIR/conf.d made as needed); never over a file
 * that exists.  0 or -1 with a message on diag. */
static int write_new(FILE *diag, const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fprintf(diag, "%s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? ": not overwritten (import into a new directory)" : "");
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    fputs(text, f);
    if (fclose(f) != 0) {
        fprintf(diag, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* --out DIR: legate.conf (the global settings, the http group's, and an
 * include of conf.d/), conf.d/upstreams.conf, and a file per server */
static int write_dir(imp_t *im, const char *dir, const char *file, const sb_t *head)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(im->diag, "%s: %s\n", dir, strerror(errno));
        return -1;
    }
    char cd[PATH_MAX];
    snprintf(cd, sizeof(cd), "%s/conf.d", dir);
    if (mkdir(cd, 0755) < 0 && errno != EEXIST) {
        fprintf(im->diag, "%s: %s\n", cd, strerror(errno));
        return -1;
    }
    sb_t m = { 0 };
    sb_str(&m, head->p);
    sb_str(&m, "\n# the upstreams and one file per nginx server\ninclude = \"conf.d/*.conf\";\n\n");
    sb_printf(&m, "http = {\n%s};\n", im->part_http.p ? im->part_http.p : "");
    int rc = write_new(im->diag, dir, "legate.conf", m.p);
    free(m.p);
    if (rc < 0)
        return -1;
    if (im->part_ups.n) {
        sb_t u = { 0 };
        sb_printf(&u, "# Translated from %s: the upstream groups.\nhttp = {\n%s};\n", file,
                  im->part_ups.p);
        rc = write_new(im->diag, dir, "conf.d/upstreams.conf", u.p);
        free(u.p);
        if (rc < 0)
            return -1;
    }
    for (int i = 0; i < im->nsrv_text; i++) {
        sb_t t = { 0 };
        char name[96];
        snprintf(name, sizeof(name), "conf.d/%s.conf", im->srv_name[i]);
        sb_printf(&t, "# Translated from %s.\nhttp = {\n    servers = (\n        %s\n    );\n};\n",
                  file, im->srv_text[i]);
        rc = write_new(im->diag, dir, name, t.p);
        free(t.p);
        if (rc < 0)
            return -1;
    }
    fprintf(im->diag, "%s: written to %s/legate.conf and %d file%s in %s/\n", file, dir,
            im->nsrv_text + (im->part_ups.n > 0), im->nsrv_text + (im->part_ups.n > 0) == 1 ? ""
                                                                                          : "s", cd);
    return 0;
}

int lg_import_nginx(const char *file, FILE *out, FILE *diag)
{
    return lg_import_nginx_to(file, out, NULL, diag);
}

int lg_import_nginx_to(const char *file, FILE *out, const char *outdir, FILE *diag)
{
    imp_t im;
    memset(&im, 0, sizeof(im));
    im.diag = diag;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    im.dir = dir;
    int failed = 0;
    ngx_dir_t *root = load(&im, file, 0, &failed);
    int rc = -1;
    if (failed)
        goto done;
    const ngx_dir_t *http = NULL;
    sb_t head = { 0 }, body = { 0 };
    sb_add(&head, "", 0);
    sb_add(&body, "", 0);
    sb_printf(&head, "# Translated from %s by legate --import-nginx; see legate-nginx(7).\n"
                     "# Check it with: legate -t -c FILE\n\n", file);
    translate_main(&im, &head, root, &http);
    if (http)
        translate_http(&im, &body, http);
    if (im.nservers == 0) {
        fprintf(diag, "%s: no server could be translated: nothing written\n", file);
        free(head.p);
        free(body.p);
        goto done;
    }
    if (im.cache_size_mb)
        sb_printf(&head, "cache_size = \"%dm\";\n", im.cache_size_mb);
    if (outdir) {
        rc = write_dir(&im, outdir, file, &head);
    } else {
        fputs(head.p, out);
        fputc('\n', out);
        fputs(body.p, out);
        rc = 0;
    }
    free(head.p);
    free(body.p);
    if (rc == 0)
        fprintf(diag, "%s: translated, %d remark%s\n", file, im.ndiag, im.ndiag == 1 ? "" : "s");
done:
    ngx_free(root);
    for (upstream_out_t *u = im.ups; u;) {
        upstream_out_t *n = u->next;
        free(u->body.p);
        free(u);
        u = n;
    }
    free(im.zones_req.p);
    free(im.part_http.p);
    free(im.part_ups.p);
    for (int i = 0; i < im.nsrv_text; i++)
        free(im.srv_text[i]);
    free(im.zones_conn.p);
    for (int i = 0; i < im.nfiles; i++)
        free(im.files[i]);
    for (int i = 0; i < im.nsaid_msgs; i++)
        free(im.said_msgs[i]);
    for (int i = 0; i < im.nzones; i++)
        free(im.zones[i]);
    return rc;
}

#include "http/message.h"

#include <string.h>
#include <strings.h>

static int ieq(const char *a, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    return n == m && strncasecmp(a, lit, n) == 0;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int lg_http_list_has(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* Content-Length: 1*DIGIT, or a list of identical values ("5, 5"). */
static int parse_length(const char *v, size_t n, int64_t *out)
{
    int64_t first = -1;
    size_t i = 0;
    while (i < n) {
        while (i < n && is_ows(v[i]))
            i++;
        if (i == n || v[i] < '0' || v[i] > '9')
            return -1;
        int64_t x = 0;
        size_t digits = 0;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            if (++digits > 18)
                return -1;
            x = x * 10 + (v[i] - '0');
            i++;
        }
        while (i < n && is_ows(v[i]))
            i++;
        if (first >= 0 && x != first)
            return -1;
        first = x;
        if (i < n) {
            if (v[i] != ',')
                return -1;
            i++;
            if (i == n)
                return -1;
        }
    }
    if (first < 0)
        return -1;
    *out = first;
    return 0;
}

/* RFC 3986 host: reg-name / IPv4 / "[" IPv6 "]", then optional ":" port. */
static int split_authority(const char *a, size_t n, lg_str_t *host)
{
    if (n == 0)
        return -1;
    size_t i = 0, hend;
    if (a[0] == '[') {
        while (i < n && a[i] != ']') {
            char c = a[i];
            if (i > 0 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                           (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
                return -1;
            i++;
        }
        if (i == n)
            return -1;
        i++;
        hend = i;
    } else {
        while (i < n && a[i] != ':') {
            unsigned char c = (unsigned char)a[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                  c == '~' || c == '%' || c == '!' || c == '$' || c == '&' ||
                  c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' ||
                  c == ',' || c == ';' || c == '='))
                return -1;
            i++;
        }
        hend = i;
    }
    if (i < n) {
        if (a[i] != ':')
            return -1;
        for (i++; i < n; i++)
            if (a[i] < '0' || a[i] > '9')
                return -1;
    }
    host->p = a;
    host->n = hend;
    return 0;
}

static void split_uri(const char *u, size_t n, lg_req_info_t *ri)
{
    ri->uri.p = u;
    ri->uri.n = n;
    const char *q = memchr(u, '?', n);
    if (q) {
        ri->path.p = u;
        ri->path.n = (size_t)(q - u);
        ri->query.p = q + 1;
        ri->query.n = n - ri->path.n - 1;
    } else {
        ri->path.p = u;
        ri->path.n = n;
        ri->query.p = NULL;
        ri->query.n = 0;
    }
    /* a fragment is not sent on the wire; if a client does, drop it */
    const char *f = memchr(u, '#', n);
    if (f) {
        size_t cut = (size_t)(f - u);
        ri->uri.n = cut;
        if (ri->path.n > cut)
            ri->path.n = cut;
        if (ri->query.p && (size_t)(ri->query.p - u) + ri->query.n > cut)
            ri->query.n = cut > (size_t)(ri->query.p - u) ? cut - (size_t)(ri->query.p - u) : 0;
    }
}

int lg_http_analyze_request(const http_request_t *r, lg_req_info_t *ri)
{
    memset(ri, 0, sizeof(*ri));
    const http_header_t *host_h = NULL;
    int n_cl = 0, n_te = 0, te_ok = 1;
    int64_t cl = -1;
    int te_chunked_last = 0;

    ri->is_head = ieq(r->method, r->method_len, "HEAD");
    ri->method_idempotent = ri->is_head || ieq(r->method, r->method_len, "GET") ||
        ieq(r->method, r->method_len, "PUT") || ieq(r->method, r->method_len, "DELETE") ||
        ieq(r->method, r->method_len, "OPTIONS") || ieq(r->method, r->method_len, "TRACE");

    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (ieq(h->name, h->name_len, "host")) {
            if (host_h)
                return 400;             /* more than one Host */
            host_h = h;
        } else if (ieq(h->name, h->name_len, "content-length")) {
            int64_t x;
            if (parse_length(h->value, h->value_len, &x) < 0)
                return 400;
            if (cl >= 0 && x != cl)
                return 400;             /* differing lengths */
            cl = x;
            n_cl++;
        } else if (ieq(h->name, h->name_len, "transfer-encoding")) {
            /* only exactly "chunked", once, is accepted: any other coding
             * would make us frame a body another hop may frame differently */
            n_te++;
            if (!ieq(h->value, h->value_len, "chunked"))
                te_ok = 0;
            else
                te_chunked_last = 1;
        } else if (ieq(h->name, h->name_len, "connection")) {
            if (ri->connection.p == NULL) {
                ri->connection.p = h->value;
                ri->connection.n = h->value_len;
            } else {
                return 400;             /* keep the model simple: one Connection */
            }
        } else if (ieq(h->name, h->name_len, "expect")) {
            if (ieq(h->value, h->value_len, "100-continue"))
                ri->expect_continue = 1;
            else
                return 417;
        }
    }

    if (n_te) {
        if (r->version == 10 || n_cl || n_te > 1 || !te_ok || !te_chunked_last)
            return 400;
        ri->body = LG_BODY_CHUNKED;
    } else if (n_cl) {
        ri->body = cl > 0 ? LG_BODY_LENGTH : LG_BODY_NONE;
        ri->length = cl;
    } else {
        ri->body = LG_BODY_NONE;
    }

    /* the request-target */
    const char *t = r->target;
    size_t tn = r->target_len;
    size_t sl = tn && t[0] == '/' ? 0 :         /* origin-form, nearly every request */
                tn >= 7 && strncasecmp(t, "http://", 7) == 0 ? 7 :
                tn >= 6 && strncasecmp(t, "ftp://", 6) == 0 ? 6 :
                tn >= 9 && strncasecmp(t, "gopher://", 9) == 0 ? 9 : 0;
    if (sl) {
        ri->scheme = sl == 7 ? LG_SCHEME_HTTP : sl == 6 ? LG_SCHEME_FTP : LG_SCHEME_GOPHER;
        const char *a = t + sl;
        size_t rest = tn - sl;
        size_t an = 0;
        while (an < rest && a[an] != '/' && a[an] != '?')
            an++;
        /* ftp:// alone may carry a user and password (RFC 1738 3.1), as
         * Squid takes them; any other target with userinfo is refused */
        const char *at = NULL;
        for (size_t i = 0; i < an; i++)
            if (a[i] == '@')
                at = a + i;
        if (at && ri->scheme == LG_SCHEME_FTP && at > a) {
            ri->userinfo.p = a;
            ri->userinfo.n = (size_t)(at - a);
            an -= (size_t)(at + 1 - a);
            rest -= (size_t)(at + 1 - a);
            a = at + 1;
        }
        if (an == 0 || memchr(a, '@', an))
            return 400;                 /* no userinfo in a target */
        ri->absolute_form = 1;
        ri->authority.p = a;
        ri->authority.n = an;
        if (split_authority(a, an, &ri->host) < 0)
            return 400;
        if (an == rest)
            split_uri("/", 1, ri);
        else if (a[an] == '?')
            return 400;
        else
            split_uri(a + an, rest - an, ri);
        if (host_h) {
            /* RFC 9112 3.2.2 says to ignore Host here; a front end that
             * routed on the Host would disagree with us, so refuse instead */
            if (host_h->value_len != an || strncasecmp(host_h->value, a, an) != 0)
                return 400;
        }
    } else if (tn >= 1 && t[0] == '/') {
        split_uri(t, tn, ri);
    } else if (tn == 1 && t[0] == '*') {
        if (!ieq(r->method, r->method_len, "OPTIONS"))
            return 400;
        ri->path.p = t;
        ri->path.n = 1;
        ri->uri = ri->path;
    } else if (ieq(r->method, r->method_len, "CONNECT")) {
        /* authority-form: host:port, the port required (RFC 9110 9.3.6) */
        const char *colon = NULL;
        for (size_t i = tn; i > 0; i--)
            if (t[i - 1] == ':') {
                colon = t + i - 1;
                break;
            }
        if (colon == NULL || colon + 1 == t + tn || memchr(t, '@', tn) || memchr(t, '/', tn))
            return 400;
        if (split_authority(t, tn, &ri->host) < 0)
            return 400;
        ri->connect = 1;
        ri->authority.p = t;
        ri->authority.n = tn;
        ri->path.p = ri->uri.p = t;
        ri->path.n = ri->uri.n = tn;
    } else {
        return 400;                     /* garbage */
    }
    if (ri->connect && ri->body != LG_BODY_NONE)
        return 400;                     /* a CONNECT has no body: bytes after it are the tunnel's */

    if (!ri->absolute_form && !ri->connect) {
        if (host_h) {
            ri->authority.p = host_h->value;
            ri->authority.n = host_h->value_len;
            if (host_h->value_len && split_authority(host_h->value, host_h->value_len, &ri->host) < 0)
                return 400;
        } else if (r->version >= 11) {
            return 400;                 /* RFC 9112 3.2: Host is required */
        }
    }

    if (r->version >= 11)
        ri->keep_alive = !(ri->connection.p && lg_http_list_has(ri->connection.p, ri->connection.n, "close"));
    else
        ri->keep_alive = ri->connection.p && lg_http_list_has(ri->connection.p, ri->connection.n, "keep-alive");
    /* the port, if the authority names one */
    if (ri->authority.n > ri->host.n && ri->authority.p[ri->host.n] == ':') {
        int port = 0;
        for (size_t i = ri->host.n + 1; i < ri->authority.n; i++)
            port = port * 10 + (ri->authority.p[i] - '0');
        if (port < 1 || port > 65535 || ri->authority.n - ri->host.n > 6)
            return 400;
        ri->port = port;
    }
    if (ri->expect_continue && r->version < 11)
        ri->expect_continue = 0;
    return 0;
}

int lg_http_analyze_response(const http_response_t *r, int request_was_head,
                             lg_rsp_info_t *ri)
{
    memset(ri, 0, sizeof(*ri));
    int64_t cl = -1;
    int n_te = 0, te_chunked = 0;
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (ieq(h->name, h->name_len, "content-length")) {
            int64_t x;
            if (parse_length(h->value, h->value_len, &x) < 0 || (cl >= 0 && x != cl))
                return -1;
            cl = x;
        } else if (ieq(h->name, h->name_len, "transfer-encoding")) {
            n_te++;
            /* chunked must be the final coding (RFC 9112 6.1) */
            size_t n = h->value_len;
            while (n && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t'))
                n--;
            te_chunked = n >= 7 && strncasecmp(h->value + n - 7, "chunked", 7) == 0 &&
                (n == 7 || h->value[n - 8] == ',' || h->value[n - 8] == ' ');
        } else if (ieq(h->name, h->name_len, "connection") && ri->connection.p == NULL) {
            ri->connection.p = h->value;
            ri->connection.n = h->value_len;
        }
    }
    if (r->version >= 11)
        ri->keep_alive = !(ri->connection.p && lg_http_list_has(ri->connection.p, ri->connection.n, "close"));
    else
        ri->keep_alive = ri->connection.p && lg_http_list_has(ri->connection.p, ri->connection.n, "keep-alive");

    if (request_was_head || r->status < 200 || r->status == 204 || r->status == 304) {
        ri->body = LG_BODY_NONE;
        return 0;
    }
    if (n_te) {
        if (n_te > 1 || !te_chunked || r->version < 11)
            return -1;
        if (cl >= 0)
            ri->keep_alive = 0;         /* RFC 9112 6.3: TE wins, then close */
        ri->body = LG_BODY_CHUNKED;
    } else if (cl >= 0) {
        ri->body = cl ? LG_BODY_LENGTH : LG_BODY_NONE;
        ri->length = cl;
    } else {
        ri->body = LG_BODY_CLOSE;
        ri->keep_alive = 0;
    }
    return 0;
}

int lg_http_is_hop_by_hop(const http_header_t *h, lg_str_t conn)
{
    /* by length first: every field of every head passes here, twice on a
     * proxied request, and most have a length none of these has */
    const char *n = h->name;
    switch (h->name_len) {
    case 2:  if (strncasecmp(n, "te", 2) == 0) return 1; break;
    case 7:  if (strncasecmp(n, "trailer", 7) == 0 || strncasecmp(n, "upgrade", 7) == 0) return 1; break;
    case 10: if (strncasecmp(n, "connection", 10) == 0 || strncasecmp(n, "keep-alive", 10) == 0)
                 return 1;
             break;
    case 16: if (strncasecmp(n, "proxy-connection", 16) == 0) return 1; break;
    case 17: if (strncasecmp(n, "transfer-encoding", 17) == 0) return 1; break;
    case 18: if (strncasecmp(n, "proxy-authenticate", 18) == 0) return 1; break;
    case 19: if (strncasecmp(n, "proxy-authorization", 19) == 0) return 1; break;
    }
    if (conn.p == NULL)
        return 0;
    /* every field the Connection header names is hop-by-hop too */
    size_t i = 0;
    while (i < conn.n) {
        while (i < conn.n && (is_ows(conn.p[i]) || conn.p[i] == ','))
            i++;
        size_t s = i;
        while (i < conn.n && conn.p[i] != ',' && !is_ows(conn.p[i]))
            i++;
        if (i > s && i - s == h->name_len && strncasecmp(conn.p + s, h->name, i - s) == 0)
            return 1;
    }
    return 0;
}

const char *lg_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 508: return "Loop Detected";
    default:  return "";
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

ssize_t lg_http_normalize_path(const char *p, size_t n, char *out)
{
    size_t o = 0;
    if (n == 0 || p[0] != '/')
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(p[i + 1]), l = hexval(p[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            if (c == '\0')
                return -1;
            i += 2;
        }
        if (c == '/') {
            if (o > 0 && out[o - 1] == '/')
                continue;                       /* merge slashes */
            /* resolve the segment just written if it is "." or ".." */
        }
        out[o++] = c;
        /* after writing, look at the last segment when a '/' closes it or at the end */
        int at_end = (i + 1 == n);
        if (c == '/' || at_end) {
            size_t end = (c == '/') ? o - 1 : o;   /* segment ends before this slash */
            size_t s = end;
            while (s > 0 && out[s - 1] != '/')
                s--;
            size_t len = end - s;
            if (len == 1 && out[s] == '.') {
                o = s;                          /* drop "./" or trailing "." */
            } else if (len == 2 && out[s] == '.' && out[s + 1] == '.') {
                if (s <= 1)
                    return -1;                  /* escapes the root */
                size_t k = s - 1;               /* the '/' before ".." */
                while (k > 0 && out[k - 1] != '/')
                    k--;
                o = k;
            }
        }
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return (ssize_t)o;
}

/*
 * Parsers of what FTP and Gopher servers send, and the HTML pages their
 * listings and menus become (see gateway.h).  Everything here is a pure
 * function of its input: a hostile server's bytes can make a page say
 * odd things, never run script in it or reach past the input.
 */
#include "forward/gateway.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- FTP replies ---- */

static int digit(char c) { return c >= '0' && c <= '9'; }

/* The line at p (n bytes left): its length without the end of line in
 * *ln, the bytes it takes with it as the return; 0 if incomplete, -1 bad. */
static ssize_t line_at(const char *p, size_t n, size_t *ln)
{
    size_t lim = n < LG_FTP_LINE_MAX ? n : LG_FTP_LINE_MAX;
    const char *nl = memchr(p, '\n', lim);
    if (nl == NULL)
        return n >= LG_FTP_LINE_MAX ? -1 : 0;
    size_t l = (size_t)(nl - p);
    if (memchr(p, '\0', l))
        return -1;
    *ln = l > 0 && p[l - 1] == '\r' ? l - 1 : l;
    return (ssize_t)(l + 1);
}

ssize_t lg_ftp_reply_parse(const char *buf, size_t len, int *code)
{
    size_t ln;
    ssize_t took = line_at(buf, len, &ln);
    if (took <= 0)
        return took;
    if (ln < 3 || !digit(buf[0]) || !digit(buf[1]) || !digit(buf[2]) || buf[0] < '1' ||
        buf[0] > '5' || (ln > 3 && buf[3] != ' ' && buf[3] != '-'))
        return -1;
    int c = (buf[0] - '0') * 100 + (buf[1] - '0') * 10 + (buf[2] - '0');
    size_t off = (size_t)took;
    if (ln > 3 && buf[3] == '-') {
        /* multi-line: up to a line that starts with the same code and a
         * space (RFC 959 4.2); the lines between may say anything */
        for (;;) {
            took = line_at(buf + off, len - off, &ln);
            if (took <= 0)
                return took;
            const char *l = buf + off;
            off += (size_t)took;
            if (ln >= 3 && memcmp(l, buf, 3) == 0 && (ln == 3 || l[3] == ' '))
                break;
        }
    }
    *code = c;
    return (ssize_t)off;
}

int lg_ftp_epsv_port(const char *s, size_t n)
{
    /* "229 Entering Extended Passive Mode (|||6446|)": the delimiter is
     * whatever byte follows the "(" (RFC 2428 3) */
    const char *o = memchr(s, '(', n);
    if (o == NULL || (size_t)(o - s) + 5 > n)
        return -1;
    size_t i = (size_t)(o - s) + 1;
    char d = s[i];
    if (d < 33 || d > 126 || digit(d))
        return -1;
    if (i + 3 >= n || s[i + 1] != d || s[i + 2] != d)
        return -1;
    i += 3;
    long port = 0;
    size_t nd = 0;
    for (; i < n && digit(s[i]) && nd < 6; i++, nd++)
        port = port * 10 + (s[i] - '0');
    if (nd == 0 || i >= n || s[i] != d || port < 1 || port > 65535)
        return -1;
    return (int)port;
}

int lg_ftp_pasv_port(const char *s, size_t n)
{
    /* six numbers after the first digit that follows the code */
    size_t i = 3;
    while (i < n && !digit(s[i]))
        i++;
    long v[6];
    for (int k = 0; k < 6; k++) {
        size_t nd = 0;
        v[k] = 0;
        for (; i < n && digit(s[i]) && nd < 4; i++, nd++)
            v[k] = v[k] * 10 + (s[i] - '0');
        if (nd == 0 || v[k] > 255)
            return -1;
        if (k < 5) {
            if (i >= n || s[i] != ',')
                return -1;
            i++;
        }
    }
    long port = v[4] * 256 + v[5];
    return port >= 1 ? (int)port : -1;
}

int64_t lg_ftp_size(const char *s, size_t n)
{
    if (n < 5 || memcmp(s, "213 ", 4) != 0)
        return -1;
    int64_t v = 0;
    size_t i = 4, nd = 0;
    for (; i < n && digit(s[i]); i++, nd++) {
        if (nd >= 18)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (nd == 0 || (i < n && s[i] != '\r' && s[i] != '\n' && s[i] != ' '))
        return -1;
    return v;
}

/* ---- text ---- */

void lg_gw_text_add(lg_gw_text_t *t, const char *s, size_t n)
{
    if (t->full)
        return;
    if (t->n + n + 1 > t->cap) {
        size_t want = t->cap ? t->cap : 4096;
        while (want < t->n + n + 1)
            want *= 2;
        if (t->max && want > t->max)
            want = t->max;
        if (t->n + n + 1 > want) {
            t->full = 1;
            return;
        }
        char *p = realloc(t->p, want);
        if (p == NULL) {
            t->full = 1;
            return;
        }
        t->p = p;
        t->cap = want;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
}

void lg_gw_text_str(lg_gw_text_t *t, const char *s) { lg_gw_text_add(t, s, strlen(s)); }

void lg_gw_text_html(lg_gw_text_t *t, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '&': lg_gw_text_str(t, "&amp;"); break;
        case '<': lg_gw_text_str(t, "&lt;"); break;
        case '>': lg_gw_text_str(t, "&gt;"); break;
        case '"': lg_gw_text_str(t, "&quot;"); break;
        case '\'': lg_gw_text_str(t, "&#39;"); break;
        default:
            if (c >= 0x20 && c != 0x7f)
                lg_gw_text_add(t, (const char *)&c, 1);
        }
    }
}

void lg_gw_text_url(lg_gw_text_t *t, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || digit((char)c) || c == '-' ||
            c == '.' || c == '_' || c == '~' || c == '/') {
            lg_gw_text_add(t, (const char *)&c, 1);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            lg_gw_text_add(t, e, 3);
        }
    }
}

void lg_gw_text_free(lg_gw_text_t *t)
{
    free(t->p);
    t->p = NULL;
    t->n = t->cap = 0;
}

static int hexval(char c)
{
    return digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

ssize_t lg_gw_unescape(const char *s, size_t n, char *out, int tab_ok)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (c == '\0' || c == '\r' || c == '\n' || (c == '\t' && !tab_ok))
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

/* ---- FTP listings ---- */

/* The n-th (0-based) blank-separated field of a line and what follows it. */
static const char *field(const char *l, size_t n, int k, size_t *fl, const char **rest)
{
    size_t i = 0;
    for (int f = 0;; f++) {
        while (i < n && (l[i] == ' ' || l[i] == '\t'))
            i++;
        if (i >= n)
            return NULL;
        size_t b = i;
        while (i < n && l[i] != ' ' && l[i] != '\t')
            i++;
        if (f == k) {
            *fl = i - b;
            if (rest) {
                size_t j = i;
                if (j < n)
                    j++;          /* the single separator before a name */
                *rest = l + j;
            }
            return l + b;
        }
    }
}

static void entry(lg_gw_text_t *t, const char *name, size_t nn, int dir, const char *size,
                  size_t sn, const char *when, size_t wn)
{
    if (nn == 0 || (nn == 1 && name[0] == '.') || (nn == 2 && name[0] == '.' && name[1] == '.'))
        return;
    if (memchr(name, '/', nn))
        return;                 /* a name is one path segment, nothing else */
    lg_gw_text_str(t, "<tr><td><a href=\"");
    lg_gw_text_url(t, name, nn);
    if (dir)
        lg_gw_text_str(t, "/");
    lg_gw_text_str(t, "\">");
    lg_gw_text_html(t, name, nn);
    if (dir)
        lg_gw_text_str(t, "/");
    lg_gw_text_str(t, "</a></td><td>");
    lg_gw_text_html(t, when, wn);
    lg_gw_text_str(t, "</td><td align=\"right\">");
    if (!dir)
        lg_gw_text_html(t, size, sn);
    else
        lg_gw_text_str(t, "-");
    lg_gw_text_str(t, "</td></tr>\n");
}

static void mlsd_line(lg_gw_text_t *t, const char *l, size_t n)
{
    /* "fact=value;fact=value; name" (RFC 3659 7.2) */
    const char *sp = memchr(l, ' ', n);
    if (sp == NULL)
        return;
    const char *name = sp + 1;
    size_t nn = n - (size_t)(name - l);
    int dir = -1;
    const char *size = "", *when = "";
    size_t sn = 0, wn = 0;
    for (const char *f = l; f < sp;) {
        const char *semi = memchr(f, ';', (size_t)(sp - f));
        const char *e = semi ? semi : sp;
        const char *eq = memchr(f, '=', (size_t)(e - f));
        if (eq) {
            size_t kn = (size_t)(eq - f), vn = (size_t)(e - eq - 1);
            const char *v = eq + 1;
            if (kn == 4 && strncasecmp(f, "type", 4) == 0) {
                if (vn == 3 && strncasecmp(v, "dir", 3) == 0)
                    dir = 1;
                else if (vn == 4 && strncasecmp(v, "file", 4) == 0)
                    dir = 0;
                else
                    dir = -2;     /* cdir, pdir, OS.unix=symlink...: not listed */
            } else if (kn == 4 && strncasecmp(f, "size", 4) == 0) {
                size = v;
                sn = vn;
            } else if (kn == 6 && strncasecmp(f, "modify", 6) == 0) {
                when = v;
                wn = vn;
            }
        }
        f = e + 1;
    }
    if (dir >= 0)
        entry(t, name, nn, dir, size, sn, when, wn);
}

static void list_line(lg_gw_text_t *t, const char *l, size_t n)
{
    size_t fl = 0, sl = 0;
    const char *rest = NULL;
    const char *f0 = field(l, n, 0, &fl, NULL);
    if (f0 == NULL)
        return;
    if (fl == 10 && strchr("-dl", f0[0])) {
        /* Unix: perms links owner group size month day time|year name */
        const char *size = field(l, n, 4, &sl, NULL);
        size_t w1, w2, w3;
        const char *m = field(l, n, 5, &w1, NULL);
        const char *d = field(l, n, 6, &w2, NULL);
        const char *y = field(l, n, 7, &w3, &rest);
        if (size && m && d && y && rest && rest < l + n) {
            size_t nn = (size_t)(l + n - rest);
            const char *name = rest;
            if (f0[0] == 'l') {
                const char *arrow = NULL;
                for (size_t i = 0; i + 4 <= nn; i++)
                    if (memcmp(name + i, " -> ", 4) == 0) {
                        arrow = name + i;
                        break;
                    }
                if (arrow)
                    nn = (size_t)(arrow - name);
            }
            entry(t, name, nn, f0[0] == 'd', size, sl, m, (size_t)(y + w3 - m));
            return;
        }
    } else if (fl == 8 && digit(f0[0]) && f0[2] == '-') {
        /* DOS: 01-31-24  10:00AM  <DIR>|size  name */
        const char *sz = field(l, n, 2, &sl, &rest);
        while (rest && rest < l + n && (*rest == ' ' || *rest == '\t'))
            rest++;             /* the name is after the column's padding */
        if (sz && rest && rest < l + n) {
            int dir = sl == 5 && memcmp(sz, "<DIR>", 5) == 0;
            entry(t, rest, (size_t)(l + n - rest), dir, sz, sl, f0, fl);
            return;
        }
    }
    /* a style not known: the line as it is, no link */
    lg_gw_text_str(t, "<tr><td colspan=\"3\">");
    lg_gw_text_html(t, l, n);
    lg_gw_text_str(t, "</td></tr>\n");
}

void lg_ftp_render_listing(lg_gw_text_t *t, const char *path, size_t pn, const char *list,
                           size_t n, int mlsd)
{
    lg_gw_text_str(t, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>FTP directory ");
    lg_gw_text_html(t, path, pn);
    lg_gw_text_str(t, "</title></head><body>\n<h1>FTP directory ");
    lg_gw_text_html(t, path, pn);
    lg_gw_text_str(t, "</h1>\n<table>\n");
    if (pn > 1)
        lg_gw_text_str(t, "<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(list + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - list) : n;
        size_t ln = e - i;
        if (ln && list[i + ln - 1] == '\r')
            ln--;
        if (ln)
            (mlsd ? mlsd_line : list_line)(t, list + i, ln);
        i = e + 1;
    }
    lg_gw_text_str(t, "</table>\n<hr><address>legate</address>\n</body></html>\n");
}

/* ---- Gopher menus ---- */

/* A host a link may name: letters, digits, dots, hyphens (or a v6 literal's
 * hex and colons), nothing a URL or the page could be bent with. */
static int host_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || digit(c) || c == '.' ||
              c == '-' || c == ':'))
            return 0;
    }
    return 1;
}

static const char *gopher_kind(char type)
{
    switch (type) {
    case '0': return "text";
    case '1': return "menu";
    case '7': return "search";
    case '9': case '5': case '4': case '6': return "binary";
    case 'g': case 'I': case 'p': return "image";
    case 's': return "sound";
    case 'h': return "html";
    case 'd': return "document";
    default: return NULL;
    }
}

static void menu_line(lg_gw_text_t *t, const char *l, size_t n)
{
    char type = l[0];
    const char *f[4] = { l + 1, NULL, NULL, NULL };
    size_t fn[4] = { 0, 0, 0, 0 };
    int nf = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || l[i] == '\t') {
            fn[nf - 1] = (size_t)(l + i - f[nf - 1]);
            if (i == n || nf == 4)
                break;
            f[nf++] = l + i + 1;
        }
    }
    const char *kind = gopher_kind(type);
    long port = 0;
    int port_ok = nf >= 4 && fn[3] > 0 && fn[3] <= 5;
    for (size_t i = 0; port_ok && i < fn[3]; i++) {
        if (!digit(f[3][i]))
            port_ok = 0;
        else
            port = port * 10 + (f[3][i] - '0');
    }
    port_ok = port_ok && port >= 1 && port <= 65535;
    if (type == 'i' || type == '3' || kind == NULL || !port_ok || !host_ok(f[2], fn[2])) {
        /* information, an error, an unknown type or a bad address: text only */
        lg_gw_text_str(t, type == '3' ? "<pre class=\"error\">" : "<pre>");
        lg_gw_text_html(t, f[0], fn[0]);
        lg_gw_text_str(t, "</pre>\n");
        return;
    }
    lg_gw_text_str(t, "<pre>");
    lg_gw_text_str(t, type == '1' ? "[DIR]  " : "       ");
    if (type == 'h' && fn[1] > 4 && memcmp(f[1], "URL:", 4) == 0 &&
        ((fn[1] > 11 && strncasecmp(f[1] + 4, "http://", 7) == 0) ||
         (fn[1] > 12 && strncasecmp(f[1] + 4, "https://", 8) == 0))) {
        /* a link out to the web (the "URL:" convention) */
        lg_gw_text_str(t, "<a href=\"");
        lg_gw_text_html(t, f[1] + 4, fn[1] - 4);
    } else {
        char pb[24];
        int bracket = memchr(f[2], ':', fn[2]) != NULL;
        lg_gw_text_str(t, "<a href=\"gopher://");
        if (bracket)
            lg_gw_text_str(t, "[");
        lg_gw_text_html(t, f[2], fn[2]);
        if (bracket)
            lg_gw_text_str(t, "]");
        snprintf(pb, sizeof(pb), ":%ld/", port);
        lg_gw_text_str(t, pb);
        lg_gw_text_add(t, &type, 1);
        lg_gw_text_url(t, f[1], fn[1]);
    }
    lg_gw_text_str(t, "\">");
    lg_gw_text_html(t, f[0], fn[0]);
    lg_gw_text_str(t, "</a>");
    if (type == '7')
        lg_gw_text_str(t, " (search: add ?words to the link)");
    else if (type != '1') {
        lg_gw_text_str(t, " (");
        lg_gw_text_str(t, kind);
        lg_gw_text_str(t, ")");
    }
    lg_gw_text_str(t, "</pre>\n");
}

void lg_gopher_render_menu(lg_gw_text_t *t, const char *title, size_t tn, const char *menu,
                           size_t n)
{
    lg_gw_text_str(t, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Gopher menu ");
    lg_gw_text_html(t, title, tn);
    lg_gw_text_str(t, "</title></head><body>\n<h1>Gopher menu ");
    lg_gw_text_html(t, title, tn);
    lg_gw_text_str(t, "</h1>\n");
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(menu + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - menu) : n;
        size_t ln = e - i;
        if (ln && menu[i + ln - 1] == '\r')
            ln--;
        if (ln == 1 && menu[i] == '.')
            break;              /* the end of the menu */
        if (ln)
            menu_line(t, menu + i, ln);
        i = e + 1;
    }
    lg_gw_text_str(t, "<hr><address>legate</address>\n</body></html>\n");
}

/* ---- SOCKS5 UDP ---- */

ssize_t lg_socks_udp_header(const unsigned char *p, size_t n, int *frag,
                            struct sockaddr_storage *dst, char name[256], unsigned *port)
{
    memset(dst, 0, sizeof(*dst));
    name[0] = '\0';
    if (n < 4 || p[0] != 0 || p[1] != 0)
        return -1;
    *frag = p[2];
    size_t al;
    switch (p[3]) {
    case 1:
        al = 4;
        break;
    case 4:
        al = 16;
        break;
    case 3:
        if (n < 5 || p[4] == 0)
            return -1;
        al = 1u + p[4];
        break;
    default:
        return -1;
    }
    if (n < 4 + al + 2)
        return -1;
    *port = (unsigned)(p[4 + al] << 8 | p[5 + al]);
    if (p[3] == 1) {
        struct sockaddr_in *a = (struct sockaddr_in *)dst;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, p + 4, 4);
        a->sin_port = htons((uint16_t)*port);
    } else if (p[3] == 4) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)dst;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, p + 4, 16);
        a->sin6_port = htons((uint16_t)*port);
    } else {
        if (memchr(p + 5, '\0', p[4]))
            return -1;
        memcpy(name, p + 5, p[4]);
        name[p[4]] = '\0';
        dst->ss_family = AF_UNSPEC;
    }
    return (ssize_t)(4 + al + 2);
}

/*
 * HTTP/1.x head parsers and chunked decoder; the contract is in parse.h.
 *
 * A head is parsed in two passes.  head_find() looks for the LF that ends
 * the empty line, resuming where the previous call stopped (`*scanned`) and
 * enforcing the size limits in byte order, so that a head fed in one read
 * and the same head fed one byte at a time give the same answer.  Only when
 * the whole head is in the buffer do the line parsers run; they need no
 * bounds checks inside a line because every line of a complete head ends in
 * CR, which belongs to none of the byte classes they loop over.
 */
#include "http/parse.h"

#include <stdint.h>
#include <string.h>

/* Byte classes (RFC 9110 5.5, 5.6.2, 5.6.4; RFC 9112 3.2). */
enum {
    C_TCHAR  = 0x01,    /* token character */
    C_FIELD  = 0x02,    /* field value / reason byte: VCHAR SP HTAB obs-text */
    C_QDTEXT = 0x04,    /* qdtext: as C_FIELD minus DQUOTE and backslash */
    C_HEX    = 0x08,    /* hex digit */
    C_TARGET = 0x10,    /* request-target byte: 0x21-0x7E */
};

#define _ 0                                         /* CTL, DEL: never valid */
#define W (C_FIELD | C_QDTEXT)                      /* SP, HTAB, obs-text */
#define D (C_FIELD | C_QDTEXT | C_TARGET)           /* VCHAR delimiter */
#define Q (C_FIELD | C_TARGET)                      /* DQUOTE, backslash */
#define T (C_TCHAR | C_FIELD | C_QDTEXT | C_TARGET) /* tchar */
#define X (T | C_HEX)                               /* tchar, hex digit */

static const unsigned char cls[256] = {
    /* 00 */ _, _, _, _, _, _, _, _, _, W, _, _, _, _, _, _,
    /* 10 */ _, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _,
    /* 20 */ W, T, Q, T, T, T, T, T, D, D, T, T, D, T, T, D,
    /* 30 */ X, X, X, X, X, X, X, X, X, X, D, D, D, D, D, D,
    /* 40 */ D, X, X, X, X, X, X, T, T, T, T, T, T, T, T, T,
    /* 50 */ T, T, T, T, T, T, T, T, T, T, T, D, Q, D, T, T,
    /* 60 */ T, X, X, X, X, X, X, T, T, T, T, T, T, T, T, T,
    /* 70 */ T, T, T, T, T, T, T, T, T, T, T, D, T, D, T, _,
    /* 80 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* 90 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* a0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* b0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* c0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* d0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* e0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
    /* f0 */ W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,
};

#undef _
#undef W
#undef D
#undef Q
#undef T
#undef X

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

/* At most this many empty lines may precede a request line. */
#define HEAD_MAX_LEADING_CRLF 4

/* No end of head in buf[0..len): wait for more, unless it is already too big. */
static ssize_t head_incomplete(size_t len, const http_limits_t *lim)
{
    return len > lim->max_head ? HTTP_HEAD_TOO_LARGE : HTTP_AGAIN;
}

/*
 * Find the end of the head in buf[0..len).  Returns the head length (through
 * the LF of the empty line), HTTP_AGAIN, or an error.  *startp is set to the
 * offset of the start line (after skipped empty lines, requests only).
 *
 * Errors are reported in the order their bytes arrive: a byte at offset i
 * counts only once len > i.  Bytes at or past max_head are never looked at,
 * so an over-long head is HTTP_HEAD_TOO_LARGE whatever they contain, and an
 * over-long start line is reported once max_line + 2 of its bytes (the line
 * may end in CR) are in without an LF.  Bare LF is caught here, so that a
 * client that ends its lines with LF alone gets a 400 instead of a timeout;
 * bare CR is left to the line parsers.
 */
static ssize_t head_find(const char *buf, size_t len, const http_limits_t *lim,
                         int request, size_t *scanned, size_t *startp)
{
    size_t avail = len < lim->max_head ? len : lim->max_head;
    int max_empty = request ? HEAD_MAX_LEADING_CRLF : 0;
    size_t start = 0;

    for (int n = 0; ; n++) {
        if (start >= avail)
            return head_incomplete(len, lim);
        if (buf[start] == '\n')
            return HTTP_BAD;
        if (buf[start] != '\r')
            break;
        if (n == max_empty)
            return HTTP_BAD;
        if (start + 1 >= avail)
            return head_incomplete(len, lim);
        if (buf[start + 1] != '\n')
            return HTTP_BAD;
        start += 2;
    }
    *startp = start;

    size_t p = *scanned > start ? *scanned : start;

    /*
     * Start line too long: no LF among its first max_line + 2 bytes.  Any
     * other event comes after an LF, hence after this one, so checking it
     * first keeps byte order.  Runs at most once per message when fed
     * incrementally (the call whose bytes cross the limit).
     */
    size_t line_end = lim->max_line < SIZE_MAX - 2 - start
                      ? start + lim->max_line + 2 : SIZE_MAX;
    if (line_end <= avail && p < line_end
        && memchr(buf + start, '\n', line_end - start) == NULL)
        return request ? HTTP_URI_TOO_LONG : HTTP_BAD;

    while (p < avail) {
        const char *lf = memchr(buf + p, '\n', avail - p);
        if (lf == NULL)
            break;
        size_t i = (size_t)(lf - buf);
        /* buf[start] is neither CR nor LF, so i > start. */
        if (buf[i - 1] != '\r')
            return HTTP_BAD;
        if (i - start >= 3 && buf[i - 2] == '\n')
            return (ssize_t)(i + 1);
        p = i + 1;
    }
    *scanned = avail;
    return head_incomplete(len, lim);
}

/* "HTTP/1.0" -> 10, "HTTP/1.x" -> 11, "HTTP/d.d" -> 505, else 400.  Reads 8. */
static int parse_version(const char *p)
{
    if (memcmp(p, "HTTP/", 5) != 0
        || (unsigned char)(p[5] - '0') > 9 || p[6] != '.'
        || (unsigned char)(p[7] - '0') > 9)
        return HTTP_BAD;
    if (p[5] != '1')
        return HTTP_BAD_VERSION;
    return p[7] == '0' ? 10 : 11;
}

/*
 * Parse the field lines from p to the empty line that ends a complete head.
 * Returns 0, HTTP_BAD or HTTP_HEAD_TOO_LARGE (more than max fields).
 */
static int parse_fields(const char *p, http_header_t *h, size_t max,
                        size_t *num)
{
    size_t n = 0;

    *num = 0;
    for (;;) {
        if (*p == '\r')
            return p[1] == '\n' ? 0 : HTTP_BAD;

        /* A line starting with SP/HTAB (obs-fold) fails here too. */
        const char *name = p;
        while (IS(*p, C_TCHAR))
            p++;
        if (p == name || *p != ':')
            return HTTP_BAD;
        size_t name_len = (size_t)(p - name);

        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *value = p;
        while (IS(*p, C_FIELD))
            p++;
        if (p[0] != '\r' || p[1] != '\n')
            return HTTP_BAD;
        const char *vend = p;
        while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        p += 2;

        if (n == max)
            return HTTP_HEAD_TOO_LARGE;
        h[n].name = name;
        h[n].name_len = name_len;
        h[n].value = value;
        h[n].value_len = (size_t)(vend - value);
        *num = ++n;
    }
}

ssize_t http_parse_request(const char *buf, size_t len, http_request_t *req,
                           const http_limits_t *lim, size_t *scanned)
{
    size_t start = 0;
    ssize_t head = head_find(buf, len, lim, 1, scanned, &start);
    if (head < 0)
        return head;

    const char *p = buf + start;
    const char *end = buf + head;

    req->num_headers = 0;

    req->method = p;
    while (IS(*p, C_TCHAR))
        p++;
    if (p == req->method || *p != ' ')
        return HTTP_BAD;
    req->method_len = (size_t)(p - req->method);

    req->target = ++p;
    while (IS(*p, C_TARGET))
        p++;
    if (p == req->target || *p != ' ')
        return HTTP_BAD;
    req->target_len = (size_t)(p - req->target);
    p++;

    /* version + CRLF, and the head's final CRLF still to come */
    if (end - p < 12)
        return HTTP_BAD;
    int v = parse_version(p);
    if (v < 0)
        return v;
    req->version = v;
    p += 8;
    if (p[0] != '\r' || p[1] != '\n')
        return HTTP_BAD;
    if ((size_t)(p - (buf + start)) > lim->max_line)
        return HTTP_URI_TOO_LONG;   /* head_find catches this first */

    int rc = parse_fields(p + 2, req->headers, lim->max_headers,
                          &req->num_headers);
    return rc < 0 ? rc : head;
}

ssize_t http_parse_response(const char *buf, size_t len, http_response_t *rsp,
                            const http_limits_t *lim, size_t *scanned)
{
    size_t start = 0;
    ssize_t head = head_find(buf, len, lim, 0, scanned, &start);
    if (head < 0)
        return head;

    const char *p = buf;

    rsp->num_headers = 0;

    /* shortest: "HTTP/1.1 200\r\n\r\n" */
    if (head < 16)
        return HTTP_BAD;
    int v = parse_version(p);
    if (v < 0)
        return v;
    rsp->version = v;
    p += 8;
    if (p[0] != ' '
        || (unsigned char)(p[1] - '1') > 8
        || (unsigned char)(p[2] - '0') > 9
        || (unsigned char)(p[3] - '0') > 9)
        return HTTP_BAD;
    rsp->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    p += 4;

    rsp->reason = p;
    if (*p == ' ') {
        rsp->reason = ++p;
        while (IS(*p, C_FIELD))
            p++;
    }
    rsp->reason_len = (size_t)(p - rsp->reason);
    if (p[0] != '\r' || p[1] != '\n')
        return HTTP_BAD;
    if ((size_t)(p - buf) > lim->max_line)
        return HTTP_BAD;            /* head_find catches this first */

    int rc = parse_fields(p + 2, rsp->headers, lim->max_headers,
                          &rsp->num_headers);
    return rc < 0 ? rc : head;
}

/*
 * Chunked decoder states (RFC 9112 7.1):
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 *   ext-val      = token / quoted-string
 */
enum {
    CH_SIZE_START  =  0, /* first hex digit of a chunk-size */
    CH_SIZE        =  1, /* more hex digits, or what follows them */
    CH_EXT_WS      =  2, /* BWS after size or ext-val: ";" must follow */
    CH_EXT_NAME0   =  3, /* after ";": BWS, then the first name byte */
    CH_EXT_NAME    =  4, /* in ext-name */
    CH_EXT_NAME_WS =  5, /* BWS after ext-name: "=" or ";" must follow */
    CH_EXT_VAL0    =  6, /* after "=": BWS, then a token or DQUOTE */
    CH_EXT_TOKEN   =  7, /* in a token ext-val */
    CH_EXT_QSTR    =  8, /* in a quoted-string ext-val */
    CH_EXT_QPAIR   =  9, /* after a backslash in a quoted-string */
    CH_EXT_QEND    = 10, /* after the closing DQUOTE */
    CH_SIZE_LF     = 11, /* CR of the chunk-size line seen */
    CH_DATA        = 12, /* chunk-data, `remaining` bytes to go */
    CH_DATA_CR     = 13, /* chunk-data read: CR must follow */
    CH_DATA_LF     = 14, /* CR after chunk-data seen */
    CH_TR_LINE     = 15, /* start of a trailer field line or the final CRLF */
    CH_TR_NAME     = 16, /* in a trailer field name */
    CH_TR_VALUE    = 17, /* in a trailer field value */
    CH_TR_LF       = 18, /* CR of a trailer field line seen */
    CH_FINAL_LF    = 19, /* CR of the final CRLF seen */
    CH_DONE        = 20, /* message complete: consume nothing more */
    CH_ERROR       = 21, /* malformed: every later call fails */
};

/*
 * Total chunk-extension bytes allowed in one message.  Extensions carry no
 * payload; without a cap a client could keep a connection busy forever with
 * them (cf. CVE-2024-22019).  Counted in c->trailer_bytes until the
 * last-chunk, which then restarts the count for the trailer section.
 */
#define CHUNKED_MAX_EXT 16384

void http_chunked_init(http_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CH_SIZE_START;
}

static inline unsigned hexval(unsigned char ch)
{
    return ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10;
}

ssize_t http_chunked_decode(http_chunked_t *c, char *buf, size_t len,
                            size_t *out_len)
{
    size_t i = 0, w = 0;
    int st = c->state;

    while (i < len) {
        unsigned char ch = (unsigned char)buf[i];

        if (st >= CH_EXT_WS && st <= CH_EXT_QEND
            && ++c->trailer_bytes > CHUNKED_MAX_EXT)
            goto bad;
        if (st >= CH_TR_LINE && st <= CH_FINAL_LF
            && ++c->trailer_bytes > HTTP_CHUNKED_MAX_TRAILER)
            goto bad;
        if (st >= CH_TR_LINE && st <= CH_TR_LF && c->tr && c->tr_len < c->tr_cap &&
            !(st == CH_TR_LINE && ch == '\r'))
            c->tr[c->tr_len++] = (char)ch;  /* a field line of the trailer section */

        switch (st) {
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            if (w != i)
                memmove(buf + w, buf + i, n);
            w += n;
            i += n;
            c->remaining -= n;
            if (c->remaining == 0)
                st = CH_DATA_CR;
            continue;
        }
        case CH_SIZE_START:
            if (!IS(ch, C_HEX))
                goto bad;
            c->remaining = hexval(ch);
            c->hex_digits = 1;
            st = CH_SIZE;
            break;
        case CH_SIZE:
            if (IS(ch, C_HEX)) {
                /* 16 digits at most; the value must stay below 2^63 */
                if (++c->hex_digits > 16 || c->remaining >> 59)
                    goto bad;
                c->remaining = c->remaining << 4 | hexval(ch);
            } else if (ch == '\r') {
                st = CH_SIZE_LF;
            } else if (ch == ';') {
                st = CH_EXT_NAME0;
            } else if (ch == ' ' || ch == '\t') {
                st = CH_EXT_WS;
            } else {
                goto bad;
            }
            break;
        case CH_EXT_WS:
            if (ch == ';')
                st = CH_EXT_NAME0;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            break;
        case CH_EXT_NAME0:
            if (IS(ch, C_TCHAR))
                st = CH_EXT_NAME;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            break;
        case CH_EXT_NAME:
        case CH_EXT_TOKEN:
        case CH_EXT_QEND:
            if (st != CH_EXT_QEND && IS(ch, C_TCHAR))
                break;
            if (ch == '\r')
                st = CH_SIZE_LF;
            else if (ch == ';')
                st = CH_EXT_NAME0;
            else if (st == CH_EXT_NAME && ch == '=')
                st = CH_EXT_VAL0;
            else if (ch == ' ' || ch == '\t')
                st = st == CH_EXT_NAME ? CH_EXT_NAME_WS : CH_EXT_WS;
            else
                goto bad;
            break;
        case CH_EXT_NAME_WS:
            if (ch == '=')
                st = CH_EXT_VAL0;
            else if (ch == ';')
                st = CH_EXT_NAME0;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            break;
        case CH_EXT_VAL0:
            if (ch == '"')
                st = CH_EXT_QSTR;
            else if (IS(ch, C_TCHAR))
                st = CH_EXT_TOKEN;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            break;
        case CH_EXT_QSTR:
            if (ch == '"')
                st = CH_EXT_QEND;
            else if (ch == '\\')
                st = CH_EXT_QPAIR;
            else if (!IS(ch, C_QDTEXT))
                goto bad;
            break;
        case CH_EXT_QPAIR:
            if (!IS(ch, C_FIELD))
                goto bad;
            st = CH_EXT_QSTR;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto bad;
            if (c->remaining == 0) {
                c->trailer_bytes = 0;
                st = CH_TR_LINE;
            } else {
                st = CH_DATA;
            }
            break;
        case CH_DATA_CR:
            if (ch != '\r')
                goto bad;
            st = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto bad;
            st = CH_SIZE_START;
            break;
        case CH_TR_LINE:
            if (ch == '\r')
                st = CH_FINAL_LF;
            else if (IS(ch, C_TCHAR))
                st = CH_TR_NAME;
            else
                goto bad;
            break;
        case CH_TR_NAME:
            if (ch == ':')
                st = CH_TR_VALUE;
            else if (!IS(ch, C_TCHAR))
                goto bad;
            break;
        case CH_TR_VALUE:
            if (ch == '\r')
                st = CH_TR_LF;
            else if (!IS(ch, C_FIELD))
                goto bad;
            break;
        case CH_TR_LF:
            if (ch != '\n')
                goto bad;
            st = CH_TR_LINE;
            break;
        case CH_FINAL_LF:
            if (ch != '\n')
                goto bad;
            c->done = 1;
            c->state = CH_DONE;
            *out_len = w;
            return (ssize_t)(i + 1);
        case CH_DONE:
            c->state = st;
            *out_len = w;
            return (ssize_t)i;
        default:
            goto bad;
        }
        i++;
    }
    c->state = st;
    *out_len = w;
    return (ssize_t)i;

bad:
    c->state = CH_ERROR;
    *out_len = w;
    return HTTP_BAD;
}

/* ASCII lower case, as a macro so the loop below stays call-free. */
#define LOWER(c) ((unsigned char)((c) - 'A') < 26 ? (c) | 0x20 : (c))



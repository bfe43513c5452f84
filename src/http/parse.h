/*
 * HTTP/1.x message-head and chunked-body parsers (RFC 9112).
 *
 * Contract, after picohttpparser: no allocation and no copying.  Results
 * point into the caller's buffer, which must stay unchanged while they are
 * used.  The head parsers are restartable from the start of the buffer: call
 * again with more bytes after HTTP_AGAIN; `*scanned` remembers how far the
 * previous call looked for the end of the head so that a slow client does not
 * make us rescan its bytes quadratically.
 *
 * The parsers are strict where leniency lets two parsers disagree (request
 * smuggling, RFC 9112 section 11.2): bare CR, obs-fold, whitespace before the
 * colon, bytes outside tchar in names, control bytes in values, and a missing
 * or malformed version are all HTTP_BAD.  Framing rules that need the whole
 * header set (Content-Length vs Transfer-Encoding, duplicate Host...) live in
 * http/message.c, not here.
 */
#ifndef LEGATE_HTTP_PARSE_H
#define LEGATE_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Return codes shared by every parser in this file. Non-negative = success. */
enum http_parse_rc {
    HTTP_AGAIN          = -1,   /* incomplete: read more and call again */
    HTTP_BAD            = -2,   /* malformed: 400, close */
    HTTP_URI_TOO_LONG   = -3,   /* request line over the limit: 414 */
    HTTP_HEAD_TOO_LARGE = -4,   /* header block or count over the limit: 431 */
    HTTP_BAD_VERSION    = -5,   /* HTTP/2+ or unknown major version: 505 */
};

typedef struct {
    const char *name;           /* borrowed: points into the parsed buffer */
    size_t      name_len;
    const char *value;          /* borrowed; leading/trailing OWS trimmed */
    size_t      value_len;
} http_header_t;

typedef struct {
    size_t max_line;            /* request/status line limit (bytes, w/o CRLF) */
    size_t max_head;            /* whole head limit incl. final CRLFCRLF */
    size_t max_headers;         /* capacity of the headers array */
} http_limits_t;

typedef struct {
    const char    *method;      /* borrowed */
    size_t         method_len;
    const char    *target;      /* borrowed: request-target as sent */
    size_t         target_len;
    int            version;     /* 10 for HTTP/1.0, 11 for HTTP/1.1 */
    http_header_t *headers;     /* caller's array of max_headers entries */
    size_t         num_headers; /* out */
} http_request_t;

typedef struct {
    int            version;     /* 10 or 11 */
    int            status;      /* 100..999 */
    const char    *reason;      /* borrowed, may be empty */
    size_t         reason_len;
    http_header_t *headers;
    size_t         num_headers;
} http_response_t;

/*
 * Parse a request head from buf[0..len).  Leading empty lines (CRLF) before
 * the request line are skipped, as RFC 9112 2.2 allows.
 * Returns the number of bytes of the head (including the final CRLF CRLF,
 * and any skipped leading CRLFs) or a negative http_parse_rc.
 * `*scanned` must be 0 for the first call on a new message.
 */
ssize_t http_parse_request(const char *buf, size_t len, http_request_t *req,
                           const http_limits_t *lim, size_t *scanned);

/* Same for a response head (status-line). */
ssize_t http_parse_response(const char *buf, size_t len, http_response_t *rsp,
                            const http_limits_t *lim, size_t *scanned);

/*
 * Chunked transfer coding decoder, resumable across reads.
 *
 * http_chunked_decode() decodes in place: on return buf[0..*out_len) holds the
 * payload bytes found in buf[0..len).  It returns the number of input bytes
 * consumed (always == len unless the body ended inside buf, in which case the
 * bytes after the last CRLF of the message are not consumed and belong to the
 * next message), or HTTP_BAD.  `done` becomes 1 once the last-chunk and the
 * trailer section have been read.  The trailer section is discarded, or,
 * when the caller points `tr` at tr_cap bytes after http_chunked_init(),
 * kept there as its field lines ("Name: value\r\n"..., without the final
 * CRLF; tr_len bytes, at most tr_cap, HTTP_CHUNKED_MAX_TRAILER is enough).
 *
 * Chunk sizes over 16 hex digits or overflowing 2^63, chunk extensions with
 * bytes outside the grammar, bare CR/LF, and trailer lines that are not valid
 * field lines are HTTP_BAD.  Trailers are limited to max_trailer bytes.
 */
typedef struct {
    int      state;             /* private */
    uint64_t remaining;         /* bytes left in the current chunk */
    size_t   hex_digits;        /* private */
    size_t   trailer_bytes;     /* private */
    int      done;              /* out: message body complete */
    char    *tr;                /* borrowed, optional: room for the trailer section */
    size_t   tr_len, tr_cap;
} http_chunked_t;

#define HTTP_CHUNKED_MAX_TRAILER 8192

void    http_chunked_init(http_chunked_t *c);
ssize_t http_chunked_decode(http_chunked_t *c, char *buf, size_t len,
                            size_t *out_len);

/* Case-insensitive compare of a header name with a NUL-terminated literal.
 * Inline: a cached answer's head is searched a few dozen
 * times, and the call cost as much as the usual first-byte mismatch. */
static inline int http_name_eq(const http_header_t *h, const char *lit)
{
    const unsigned char *a = (const unsigned char *)h->name;
    const unsigned char *b = (const unsigned char *)lit;
    for (size_t i = 0; i < h->name_len; i++) {
        unsigned char c = a[i], d = b[i];
        if (d == '\0' || ((unsigned char)(c - 'A') < 26 ? (c | 0x20) : c) !=
                          ((unsigned char)(d - 'A') < 26 ? (d | 0x20) : d))
            return 0;
    }
    return b[h->name_len] == '\0';
}

#endif

/*
 * Message-level rules of RFC 9110/9112 on top of the syntax parser: body
 * framing, Host, the request-target forms, persistence, hop-by-hop fields.
 * This is where request smuggling is refused (RFC 9112 6.3, 11.2): anything
 * that two parsers could frame differently is an error, never a guess.
 */
#ifndef LEGATE_HTTP_MESSAGE_H
#define LEGATE_HTTP_MESSAGE_H

#include <stdint.h>

#include "http/parse.h"

typedef enum lg_body_kind {
    LG_BODY_NONE    = 0,    /* no body */
    LG_BODY_LENGTH  = 1,    /* Content-Length bytes */
    LG_BODY_CHUNKED = 2,    /* Transfer-Encoding: chunked */
    LG_BODY_CLOSE   = 3,    /* until the connection closes (responses only) */
} lg_body_kind_t;

typedef struct lg_str {
    const char *p;
    size_t      n;
} lg_str_t;

/* The scheme of an absolute-form target: the forward proxy's gateways
 * (forward/ftp.c, forward/gopher.c) answer the two that are not HTTP. */
typedef enum lg_scheme {
    LG_SCHEME_HTTP   = 0,       /* http:// (and every other form of target) */
    LG_SCHEME_FTP    = 1,       /* ftp:// */
    LG_SCHEME_GOPHER = 2,       /* gopher:// */
} lg_scheme_t;

typedef struct lg_req_info {
    lg_body_kind_t body;
    int64_t        length;          /* LG_BODY_LENGTH */
    lg_str_t       host;            /* without port; from the target or Host */
    lg_str_t       authority;       /* host[:port] as sent */
    lg_str_t       path;            /* origin-form path, before '?' ("*" for OPTIONS *) */
    lg_str_t       query;           /* after '?', or {NULL,0} */
    lg_str_t       uri;             /* path[?query]: the origin-form target */
    lg_str_t       connection;      /* Connection field value (combined first) */
    int            absolute_form;   /* target was http://... (or ftp://, gopher://) */
    int            scheme;          /* lg_scheme_t of an absolute-form target */
    lg_str_t       userinfo;        /* ftp://user:pass@host/: "user:pass", else {NULL,0} */
    int            keep_alive;      /* client wants the connection kept */
    int            expect_continue; /* Expect: 100-continue */
    int            is_head;
    int            method_idempotent;
    int            connect;         /* CONNECT host:port (authority-form) */
    int            udp_associate;   /* SOCKS5 UDP ASSOCIATE (forward/socks.c), with connect */
    int            port;            /* from the target or Host, 0 if none given */
} lg_req_info_t;

/* Returns 0, or the status to answer with (400, 417, 501...). */
int lg_http_analyze_request(const http_request_t *r, lg_req_info_t *ri);

typedef struct lg_rsp_info {
    lg_body_kind_t body;
    int64_t        length;
    lg_str_t       connection;
    int            keep_alive;      /* upstream allows reuse */
} lg_rsp_info_t;

/* Returns 0 or -1 (invalid: answer 502 and do not reuse the upstream). */
int lg_http_analyze_response(const http_response_t *r, int request_was_head,
                             lg_rsp_info_t *ri);

/*
 * Is h hop-by-hop: one of the fixed list of RFC 9110 7.6.1 (plus
 * Proxy-Connection, Keep-Alive...) or named in the Connection value `conn`.
 */
int lg_http_is_hop_by_hop(const http_header_t *h, lg_str_t conn);

/* Does the comma-separated list `v` contain `token` (case-insensitive)? */
int lg_http_list_has(const char *v, size_t n, const char *token);

/* Reason phrase for a status code ("" if unknown). */
const char *lg_http_reason(int status);

/* Percent-decode and normalise a path for route matching: "%41" -> "A",
 * "//" -> "/", "/./" -> "/", "/a/../" -> "/".  Returns the length written to
 * out (capacity at least n+1), or -1 if the path escapes the root or has a bad
 * escape or a NUL. */
ssize_t lg_http_normalize_path(const char *p, size_t n, char *out);

#endif

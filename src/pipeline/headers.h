/*
 * Heads legate writes (headers.c): the request head to an upstream, the
 * response head to the client, and the head of an answer made here; and
 * lookups in the request's head.  Everything is built in the request's
 * arena; NULL means it ran out (the caller fails that request).
 */
#ifndef LEGATE_PIPELINE_HEADERS_H
#define LEGATE_PIPELINE_HEADERS_H

#include "pipeline/request.h"

char *lg_headers_upstream(lg_req_t *r, size_t *len);
char *lg_headers_client(lg_req_t *r, const http_response_t *rsp, const lg_rsp_info_t *ri,
                        int out_chunked, lg_xform_t xf, int vary_ae, size_t *len);
char *lg_headers_local(lg_req_t *r, int status, const char *body, const char *location,
                       size_t *len);
/* The head of a file's answer (feature/static.c): status, Content-Type
 * (NULL: none), Content-Length, extra "Name: value\r\n" lines, then the
 * route's add_response_headers, HSTS and Connection. */
char *lg_headers_file(lg_req_t *r, int status, const char *ctype, int64_t length,
                      const char *extra, size_t *len);
/* proxy_cookie_domain / proxy_cookie_path on one Set-Cookie value: the
 * rewritten "Set-Cookie: ...\r\n" line in a, or NULL when no rule applies
 * (or out of memory).  For the fuzz harness; lg_headers_client uses it. */
char *lg_headers_set_cookie(lg_arena_t *a, const lg_common_t *c, const char *value, size_t n,
                            size_t *len);
/* The request's header `name` (lower case), or NULL. */
const http_header_t *lg_headers_get(const lg_req_t *r, const char *name);
/* The value of cookie `name` in the request's Cookie headers, or {NULL,0}. */
lg_str_t lg_headers_cookie(const lg_req_t *r, const char *name);
/* Our via_name is in the request's Via: it went round. */
int lg_headers_via_loop(const lg_req_t *r);
/* ...and if so, log it and answer 508 Loop Detected: 1, else 0. */
int lg_headers_via_refuse(lg_req_t *r);

#endif

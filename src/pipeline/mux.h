/*
 * What the multiplexing front ends share (mux.c): HTTP/2 (h2.c) and
 * HTTP/3 (h3.c) carry the same requests and answers in different frames,
 * so the mapping between their header fields and the HTTP/1.1-shaped
 * request and response the stages use is done once, here:
 *
 *   request   decoded fields -> pseudo-headers kept, cookie crumbs joined,
 *             Host first (lg_mux_req_*), then an http_request_t and its
 *             facts (lg_mux_req_build)
 *   response  the HTTP/1.1 head the stages write -> parsed as it arrives
 *             (lg_mux_take_head), its fields lowercased without the
 *             connection-specific ones (lg_mux_response_fields), trailer
 *             text -> fields (lg_mux_trailer_fields)
 *
 * The field lists are lg_mux_nv_t, which the front ends copy into their
 * library's nv type (nghttp2_nv, nghttp3_nv).
 */
#ifndef LEGATE_PIPELINE_MUX_H
#define LEGATE_PIPELINE_MUX_H

#include "pipeline/request.h"

typedef struct lg_mux_nv {
    const uint8_t *name, *value;
    size_t         namelen, valuelen;
} lg_mux_nv_t;

/* A request head as its fields arrive (in the request's arena). */
typedef struct lg_mux_req {
    http_header_t *hdrs;        /* LG_MAX_HEADERS + 1; [0] is Host */
    size_t         nh, hsize, nfields;
    int            cookie;      /* index of the joined cookie field + 1, or 0 */
    int            status;      /* the head is not acceptable: answer this (431, 400, 501) */
    lg_str_t       method, path, authority, scheme, protocol;
} lg_mux_req_t;

typedef enum lg_mux_size {
    LG_MUX_SIZE_OK = 0,
    LG_MUX_SIZE_OVER = 1,       /* past the limit: the request gets 431 */
    LG_MUX_SIZE_BOMB = 2,       /* far past it (a QPACK/HPACK bomb): reset the stream */
} lg_mux_size_t;

int  lg_mux_req_init(lg_mux_req_t *q, lg_req_t *r);             /* 0, or -1 out of memory */
/* Count a field against limit (as SETTINGS_MAX_HEADER_LIST_SIZE counts). */
lg_mux_size_t lg_mux_req_account(lg_mux_req_t *q, size_t nl, size_t vl, int64_t limit);
/* One decoded field: a pseudo-header kept, cookie crumbs joined (RFC 9113
 * 8.2.3, RFC 9114 4.2.1), Host first.  0, or -1 out of memory. */
int  lg_mux_req_field(lg_mux_req_t *q, lg_req_t *r, const uint8_t *name, size_t nl,
                      const uint8_t *value, size_t vl);
/*
 * The head is complete: r->req and r->ri from it (version 20 or 30), the
 * framing the stream's own (END_STREAM / FIN ends the body), r->server.
 * Extended CONNECT for a WebSocket (RFC 8441, RFC 9220) becomes its
 * HTTP/1.1 GET with Upgrade when ws_ok, and *ws says so; otherwise it is
 * 501.  Returns whether the request's body or tunnel needs a large buffer.
 */
int  lg_mux_req_build(lg_mux_req_t *q, lg_req_t *r, int version, int end_stream, int ws_ok, int *ws);

/*
 * What every stream of a multiplexed connection is, first in the front
 * end's own stream struct (h2s_t, h3s_t): the request's client end, the
 * request, its timer, its place in the connection's run queue, and its
 * head as it arrives.  Streams whose request can go on wait in the run
 * queue; the front end runs the queue between reading and writing, never
 * inside its library's callbacks.
 */
typedef struct lg_mux_stream lg_mux_stream_t;
struct lg_mux_stream {
    lg_end_t         end;       /* first: the request's client end (virtual) */
    uint32_t         magic;     /* the front end's, 0 once freed */
    lg_req_t        *r;         /* the request, until it finishes or is aborted */
    lg_timer_t       timer;     /* the request's stage timeout */
    lg_mux_stream_t *rnext;
    int              queued;
    int              start;     /* the head is complete: lg_req_start when run */
    lg_mux_req_t     q;
};

typedef struct lg_mux_runq {
    lg_mux_stream_t *head, *tail;
} lg_mux_runq_t;

/* A new stream's end (virtual: ops) and timer (cb gets the stream). */
void lg_mux_stream_init(lg_mux_stream_t *m, uint32_t magic, const lg_end_ops_t *ops, lg_timer_cb cb);
/* The request goes without a log line (as an HTTP/1.1 one whose client left). */
void lg_mux_stream_drop(lg_mux_stream_t *m);

void lg_mux_runq_add(lg_mux_runq_t *q, lg_mux_stream_t *m);
void lg_mux_runq_remove(lg_mux_runq_t *q, lg_mux_stream_t *m);
/* Take the queue as it is: streams queued while these run wait for the
 * next call.  Returns its head (walk rnext; each is dequeued). */
lg_mux_stream_t *lg_mux_runq_take(lg_mux_runq_t *q);
/* The stream's request goes on as far as it can: started if its head just
 * completed, then its stage stepped while it makes progress.  The caller
 * arms the stream's timer afterwards if m->magic still holds. */
void lg_mux_stream_run(lg_mux_stream_t *m, lg_conn_t *c);

/*
 * A response head's fields as HTTP/2 and HTTP/3 send them: ":status"
 * (code, 4 bytes, is the caller's) then the head's fields with lowercase
 * names (the caller's scratch room of cap bytes), connection-specific
 * fields dropped (RFC 9113 8.2.2, RFC 9114 4.2) and Sec-WebSocket-Accept
 * when ws.  The number of fields, or -1 when the names do not fit.
 */
int  lg_mux_response_fields(const http_response_t *rsp, int status, int ws, char code[4],
                            lg_mux_nv_t *out, size_t max, char *scratch, size_t cap);
/* Trailer text ("Name: value\r\n"...) as fields, names lowercased. */
size_t lg_mux_trailer_fields(const char *text, lg_mux_nv_t *out, size_t max, char *scratch, size_t cap);

/*
 * Take bytes of the response head the stages write into *ohead (parsing
 * from *oscan): for each complete head, submit(st, rsp) says 1 final (the
 * body follows), 0 interim (another head follows), -1 broken.  Returns 1
 * when a final head was submitted (*extra bytes at *rest are body), 0
 * taken and waiting for more, -1 a broken head.
 */
int  lg_mux_take_head(lg_buf_t **ohead, size_t *oscan, const char *p, size_t n, size_t *took,
                      const char **rest, size_t *extra,
                      int (*submit)(void *st, const http_response_t *rsp), void *st);

#endif

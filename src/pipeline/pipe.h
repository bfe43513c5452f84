/*
 * A one-way body relay between two ends (pipe.c): framing in (length,
 * chunked, until close) and out (as is, or re-chunked), an optional filter
 * (a content coding), a tap that sees every payload byte (a cache fill),
 * and an optional spool that holds what a slow destination has not taken.
 * The request owns its two pipes; the buffers are borrowed from the ends.
 */
#ifndef LEGATE_PIPELINE_PIPE_H
#define LEGATE_PIPELINE_PIPE_H

#include <stdint.h>

#include "http/message.h"
#include "http/parse.h"
#include "net/buf.h"
#include "net/io.h"
#include "net/splice.h"

/* A one-way body relay from a source descriptor to a destination. */
typedef struct lg_pipe {
    lg_buf_t      *buf;         /* borrowed: holds the source's bytes */
    char          *base;        /* compaction target inside buf (after a head kept for the request) */
    char          *dec;         /* [buf->pos, dec) decoded, ready to send; [dec, buf->last) raw */
    lg_body_kind_t in;          /* framing of the source */
    int64_t        remaining;   /* LG_BODY_LENGTH: bytes still to come */
    int64_t        length;      /* LG_BODY_LENGTH: the whole body */
    http_chunked_t chunked;
    int            out_chunked; /* re-encode as chunked towards dst */
    uint64_t       chunk_left;  /* bytes of the current output chunk still to send */
    char           fx[32];      /* framing bytes pending: "\r\n%x\r\n" or the last chunk */
    char          *fxb;         /* or, the last chunk with a trailer section: tr_room's */
    uint16_t       fx_pos, fx_len;
    char          *tr_room;     /* borrowed (lg_pipe_keep_trailers): where fxb is built */
    int            chunks;      /* output chunks started */
    const char    *hdr;         /* borrowed (arena): head to send before the body */
    size_t         hdr_len, hdr_sent;
    int            src_done;    /* the whole body has been received and decoded */
    int            kept;        /* the whole body sits at base, unchanged: it can be resent */
    int            done;        /* ...and everything has been written */
    int            src_eof;     /* the source closed */
    uint64_t       body_bytes;  /* payload bytes written */
    uint64_t       decoded;     /* payload bytes received and decoded */
    struct lg_codec *codec;     /* optional filter (gzip, gunzip) in the request arena */
    lg_buf_t      *zbuf;        /* owned: the filter's output, while a filter is set */
    uint64_t       zpending;    /* bytes the encoder took since its last flush */
    int            want_flush;  /* the source went quiet: flush the encoder */
    /* sees every decoded payload byte, then (NULL, 0) once when the source
     * is complete -- before the last bytes go out, so a cache fill is
     * visible to the client's next request */
    void         (*tap)(void *arg, const char *p, size_t n);
    void          *tap_arg;
    int            tap_ended;
    uint64_t       limit;       /* max payload bytes, 0 = none (client_max_body_size) */
    uint64_t       wire_bytes;  /* bytes written, head and framing included */
    uint64_t       src_bytes;   /* bytes read from the source, framing included */
    /* bandwidth (limit_rate): payload bytes a second, 0 = none; the first
     * rate_after go unthrottled; counted from rate_t0 (ms) */
    uint64_t       rate, rate_after;
    int64_t        rate_t0;
    int64_t        rate_wait;   /* throttled: the owner's timer should run the pipe then (ms), 0 none */
    /* a budget shared with other requests (limit_rate_zone): of n payload
     * bytes, how many may go at now (ms); 0 with *wait_ms until some may */
    size_t       (*rate_fn)(void *arg, size_t n, int64_t now, int64_t *wait_ms);
    void          *rate_arg;
    /* owned: proxy_buffering / proxy_request_buffering (spool.h): the
     * payload goes through it, so the source is read while dst is slow */
    struct lg_spool *spool;
    /* a length-framed body between two plain sockets, once the buffer is
     * empty, moves through a kernel pipe (net/splice.h) and never enters
     * user space: when splice_ok (the owner's: nothing watches the bytes)
     * and nothing else (filter, tap, spool, rate, re-chunking) is set */
    uint8_t        splice_ok, sp_open;
    lg_splice_t    sp;          /* while sp_open */
    uint64_t       spliced;     /* payload bytes that went that way */
} lg_pipe_t;

typedef enum lg_pipe_rc {
    LG_PIPE_DONE  = 0,          /* everything received and written */
    LG_PIPE_AGAIN = 1,          /* waiting: see the want_* flags */
    LG_PIPE_ERR_SRC = -1,       /* source failed or closed too early */
    LG_PIPE_ERR_DST = -2,       /* destination failed */
    LG_PIPE_ERR_LIMIT = -3,     /* the body grew past p->limit */
    LG_PIPE_FULL  = 2,          /* only reading into the spool (dst NULL): it takes no more */
} lg_pipe_rc_t;

void lg_pipe_init(lg_pipe_t *p, lg_buf_t *buf, char *base, lg_body_kind_t in,
                  int64_t length, int out_chunked);
lg_pipe_rc_t lg_pipe_run(lg_pipe_t *p, lg_end_t *src, lg_end_t *dst);
/* Put a filter between source and destination (it is the pipe's from now). */
int          lg_pipe_set_codec(lg_pipe_t *p, struct lg_codec *c);
/*
 * Keep the trailer section of a chunked source (room: 2 * cap + 16 bytes,
 * cap at least HTTP_CHUNKED_MAX_TRAILER, the owner's): lg_pipe_trailers()
 * gives it once the source is done, and chunked output carries it in its
 * last chunk.  Call after lg_pipe_init.
 */
void         lg_pipe_keep_trailers(lg_pipe_t *p, char *room, size_t cap);
/* The trailer section kept ("Name: value\r\n" lines, not terminated): its
 * bytes and *n, or NULL when there was none. */
const char  *lg_pipe_trailers(const lg_pipe_t *p, size_t *n);
/* Send the head (and a kept body) again, to another server; -1 if the body is gone. */
int          lg_pipe_rewind(lg_pipe_t *p);
/*
 * Put a spool between source and destination (spool.h; the pipe's from
 * now): mem_max bytes of memory, then file_max of an unlinked file in dir;
 * keep: nothing read is dropped, so lg_pipe_rewind can send it again.
 * -1: no memory (the pipe streams).  Call after lg_pipe_init.
 */
int          lg_pipe_set_spool(lg_pipe_t *p, size_t mem_max, int64_t file_max, const char *dir,
                               const char *what, int keep);
/* The whole body is in the spool: the source and its buffer are not used
 * again (the upstream connection can go).  0, or -1 if not yet. */
int          lg_pipe_detach_src(lg_pipe_t *p);
void         lg_pipe_release(lg_pipe_t *p);     /* idempotent: the spool and filter go */

#endif

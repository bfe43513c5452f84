/*
 * One-way body relay with backpressure.
 *
 * The source's bytes sit in one buffer, in three regions:
 *
 *   base ... pos ........ dec ........ last ...... end
 *            [ decoded,    )[ raw, not   )[ free     )
 *              to write      decoded yet
 *
 * Reading appends at `last`; decoding (Content-Length counting or in-place
 * chunked decoding) moves `dec`; writing moves `pos`.  Nothing is read while
 * the destination cannot take what is already decoded, so memory per pipe is
 * one buffer whatever the body size.  When the source framing ends, bytes
 * after it (a pipelined request) stay in [dec, last) for the session.
 *
 * Output is either the payload as is, or re-encoded as chunked: each write
 * of n payload bytes starts a chunk "\r\n<hex n>\r\n" (no leading CRLF for
 * the first), and the end is "\r\n0\r\n\r\n".  Deferring each chunk's CRLF to
 * the next prefix lets head, prefix and payload go out in one sendmsg.
 *
 * With a spool (proxy_buffering, proxy_request_buffering) the decoded bytes
 * move from the buffer into it at once, and what goes out (or into the
 * filter) is read from the spool: the source is read on while the
 * destination is slow, until the spool's memory and file are full, and
 * once the source is done the pipe no longer needs it (lg_pipe_detach_src).
 */
#include "pipeline/pipe.h"

#include "core/log.h"
#include "http/codec.h"
#include "pipeline/spool.h"
#include "pipeline/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

static void splice_put(lg_pipe_t *p);

void lg_pipe_init(lg_pipe_t *p, lg_buf_t *buf, char *base, lg_body_kind_t in,
                  int64_t length, int out_chunked)
{
    if (p->spool) {             /* (a pipe made again: its old spool goes) */
        lg_spool_free(p->spool);
        free(p->spool);
    }
    splice_put(p);
    memset(p, 0, sizeof(*p));
    p->buf = buf;
    p->base = base;
    p->dec = buf->pos;
    p->in = in;
    p->remaining = length;
    p->length = length;
    p->out_chunked = out_chunked;
    if (in == LG_BODY_CHUNKED)
        http_chunked_init(&p->chunked);
    if (in == LG_BODY_NONE || (in == LG_BODY_LENGTH && length == 0))
        p->src_done = 1;
    /* a Content-Length body that arrived with the head stays where it is
     * while it is sent, so another server can be given it again */
    p->kept = in == LG_BODY_LENGTH && base == buf->pos &&
              (int64_t)(buf->last - buf->pos) >= length;
}

/* Decode the raw region.  Returns 0 or -1 on a framing error. */
static int pipe_decode_raw(lg_pipe_t *p);

static int pipe_decode(lg_pipe_t *p)
{
    char *before = p->dec;
    if (pipe_decode_raw(p) < 0)
        return -1;
    p->decoded += (uint64_t)(p->dec - before);
    if (p->tap && p->dec > before)
        p->tap(p->tap_arg, before, (size_t)(p->dec - before));
    if (p->tap && p->src_done && !p->tap_ended) {
        p->tap_ended = 1;
        p->tap(p->tap_arg, NULL, 0);
    }
    if (p->limit && p->decoded > p->limit)
        return -2;
    return 0;
}

static int pipe_decode_raw(lg_pipe_t *p)
{
    lg_buf_t *b = p->buf;
    char *raw = p->dec;
    size_t n = (size_t)(b->last - raw);
    if (p->src_done || n == 0)
        return 0;
    switch (p->in) {
    case LG_BODY_LENGTH: {
        size_t k = (uint64_t)p->remaining < n ? (size_t)p->remaining : n;
        p->dec += k;
        p->remaining -= (int64_t)k;
        if (p->remaining == 0)
            p->src_done = 1;
        return 0;
    }
    case LG_BODY_CLOSE:
        p->dec = b->last;
        return 0;
    case LG_BODY_CHUNKED: {
        size_t out = 0;
        ssize_t c = http_chunked_decode(&p->chunked, raw, n, &out);
        if (c < 0)
            return -1;
        if (p->chunked.done) {
            size_t rest = n - (size_t)c;
            memmove(raw + out, raw + c, rest);
            b->last = raw + out + rest;
            p->src_done = 1;
        } else {
            b->last = raw + out;
        }
        p->dec = raw + out;
        return 0;
    }
    case LG_BODY_NONE:
        p->src_done = 1;
        return 0;
    }
    return 0;
}

void lg_pipe_keep_trailers(lg_pipe_t *p, char *room, size_t cap)
{
    if (p->in != LG_BODY_CHUNKED)
        return;
    p->chunked.tr = room;
    p->chunked.tr_cap = cap;
    p->tr_room = room + cap;
}

const char *lg_pipe_trailers(const lg_pipe_t *p, size_t *n)
{
    if (p->chunked.tr == NULL || p->chunked.tr_len == 0 || !p->chunked.done)
        return NULL;
    *n = p->chunked.tr_len;
    return p->chunked.tr;
}

int lg_pipe_set_codec(lg_pipe_t *p, struct lg_codec *c)
{
    p->zbuf = lg_buf_get();
    if (p->zbuf == NULL)
        return -1;
    p->codec = c;
    return 0;
}

int lg_pipe_rewind(lg_pipe_t *p)
{
    if (p->wire_bytes > p->hdr_len && p->spool) {
        if (!p->kept)
            return -1;
        lg_spool_rewind(p->spool);      /* the whole body is there: read it again */
        p->body_bytes = 0;
    } else if (p->wire_bytes > p->hdr_len) {
        if (!p->kept)
            return -1;          /* part of the body is gone: it cannot be resent */
        lg_buf_t *b = p->buf;
        b->pos = p->dec = p->base;
        if (b->last < p->base + p->length)
            b->last = p->base + p->length;  /* the bytes are still there */
        p->remaining = p->length;
        p->decoded = 0;
        p->src_done = p->length == 0;
        p->body_bytes = 0;
    }
    p->done = 0;
    p->hdr_sent = 0;
    p->wire_bytes = 0;
    p->fx_pos = p->fx_len = 0;
    p->fxb = NULL;
    p->chunks = 0;
    p->chunk_left = 0;
    return 0;
}

/* ---- splice: a length-framed body from socket to socket, kernel-side ---- */

/*
 * Below this many bytes still to come the buffer's way is as cheap: a
 * splice costs two system calls a pass, as a recv and a send do.  Above it,
 * the copies into and out of user space go (100 KiB proxied: see
 * doc/performance.md).  HAProxy has this as `option splice-response`
 * (off by default); nginx has no equivalent.
 */
#define SPLICE_MIN   16384

/* Idempotent. */
static void splice_put(lg_pipe_t *p)
{
    if (!p->sp_open)
        return;
    p->sp_open = 0;
    lg_splice_close(&p->sp);
}

static int splice_can(const lg_pipe_t *p, const lg_end_t *src, const lg_end_t *dst)
{
    return p->splice_ok && p->in == LG_BODY_LENGTH && p->remaining >= SPLICE_MIN &&
           src != NULL && dst != NULL && p->codec == NULL && p->tap == NULL && p->spool == NULL &&
           p->rate == 0 && p->rate_fn == NULL && !p->out_chunked && p->limit == 0 &&
           p->hdr_sent == p->hdr_len && p->fx_pos == p->fx_len &&
           src->ssl == NULL && src->ops == NULL && src->io.fd >= 0 &&
           dst->ssl == NULL && dst->ops == NULL && dst->io.fd >= 0;
}

/* The rest of the body, kernel-side: what lg_pipe_run returns.  Each read
 * is bounded by the bytes still due (lg_splice_open's `left`), so a
 * keep-alive upstream connection stays clean. */
static lg_pipe_rc_t splice_run(lg_pipe_t *p, lg_end_t *src, lg_end_t *dst)
{
    uint64_t out0 = p->sp.bytes;
    int64_t left0 = p->sp.left;
    int rc = lg_splice_run(&p->sp, src, dst);
    uint64_t out = p->sp.bytes - out0, in = (uint64_t)(left0 - p->sp.left);
    p->body_bytes += out;
    p->wire_bytes += out;
    p->spliced += out;
    p->remaining -= (int64_t)in;
    p->decoded += in;
    p->src_bytes += in;
    switch (rc) {
    case 0:
        p->src_done = 1;
        p->done = 1;
        splice_put(p);
        return LG_PIPE_DONE;
    case 1:
        return LG_PIPE_AGAIN;
    case -2:
        return LG_PIPE_ERR_DST;
    case -3:
        p->src_eof = 1;         /* closed before the body's end */
        return LG_PIPE_ERR_SRC;
    default:
        return LG_PIPE_ERR_SRC;
    }
}

void lg_pipe_release(lg_pipe_t *p)
{
    splice_put(p);
    if (p->spool) {
        lg_spool_free(p->spool);
        free(p->spool);
        p->spool = NULL;
    }
    if (p->codec)
        lg_codec_end(p->codec);
    p->codec = NULL;
    lg_buf_put(p->zbuf);
    p->zbuf = NULL;
}

/* ---- where the payload to send is: [pos, dec) of the buffer, or the spool ---- */

/* The next payload bytes to send (or filter), contiguous: their count, -1
 * when the spool's file cannot be read. */
static ssize_t payload_peek(lg_pipe_t *p, const char **at)
{
    if (p->spool)
        return lg_spool_peek(p->spool, at);
    *at = p->buf->pos;
    return p->dec - p->buf->pos;
}

static void payload_consume(lg_pipe_t *p, size_t n)
{
    if (p->spool)
        lg_spool_consume(p->spool, n);
    else
        p->buf->pos += n;
}

/* Payload received and not sent (or filtered) yet. */
static uint64_t payload_pending(const lg_pipe_t *p)
{
    uint64_t n = p->buf ? (uint64_t)(p->dec - p->buf->pos) : 0;
    return p->spool ? n + lg_spool_pending(p->spool) : n;
}

/* Spooled: what is decoded moves from the buffer into the spool, as much
 * as it takes; once the whole body is there, it can be resent (a keep
 * spool) and the source may go (lg_pipe_detach_src). */
static void spool_fill(lg_pipe_t *p)
{
    lg_buf_t *b = p->buf;
    if (p->spool == NULL || b == NULL)
        return;
    if (p->dec > b->pos)
        b->pos += lg_spool_append(p->spool, b->pos, (size_t)(p->dec - b->pos));
    p->kept = p->spool->keep && p->src_done && b->pos == p->dec && p->codec == NULL;
}

int lg_pipe_set_spool(lg_pipe_t *p, size_t mem_max, int64_t file_max, const char *dir,
                      const char *what, int keep)
{
    LG_BUG_ON(p->spool != NULL);
    lg_spool_t *sp = malloc(sizeof(*sp));
    if (sp == NULL)
        return -1;
    lg_spool_init(sp, mem_max, file_max, dir, what, keep);
    /* memory from the start: an empty spool always takes bytes */
    sp->mem_cap = mem_max < 16384 ? mem_max : 16384;
    if ((sp->mem = malloc(sp->mem_cap)) == NULL) {
        free(sp);
        return -1;
    }
    p->spool = sp;
    p->kept = 0;
    return 0;
}

int lg_pipe_detach_src(lg_pipe_t *p)
{
    if (p->spool == NULL || !p->src_done || (p->buf && p->buf->pos != p->dec))
        return -1;
    p->buf = NULL;
    return 0;
}

/*
 * Feed the filter what is decoded, into its (empty) output buffer.  The
 * encoder is flushed when the source has gone quiet, so a streamed
 * response (server-sent events) reaches the client as it is produced.
 */
static int filter_step(lg_pipe_t *p)
{
    lg_buf_t *z = p->zbuf;
    const char *in = NULL;
    ssize_t in_n = payload_peek(p, &in);
    if (in_n < 0)
        return -1;
    int src_done = p->src_done && payload_pending(p) == (uint64_t)in_n;
    if (p->codec->done || (in_n == 0 && !src_done && !p->want_flush))
        return 0;
    z->pos = z->last = z->start;
    int flags = (src_done ? LG_CODEC_FINISH : 0) | (p->want_flush ? LG_CODEC_FLUSH : 0);
    size_t used = 0;
    ssize_t r = lg_codec_run(p->codec, in, (size_t)in_n, &used, z->last, (size_t)(z->end - z->last),
                             flags);
    if (r < 0)
        return -1;
    payload_consume(p, used);
    z->last += r;
    if (p->codec->kind != LG_CODEC_GZIP_DECODE)     /* the encoders: gzip, br, zstd */
        p->zpending = (flags & LG_CODEC_FLUSH) ? 0 : p->zpending + used;
    if ((size_t)r < (size_t)(z->end - z->start))
        p->want_flush = 0;      /* everything asked for came out */
    return 0;
}

typedef enum {
    W_NONE = 0,                 /* nothing to write */
    W_WROTE,                    /* some went out: look again */
    W_BLOCKED,                  /* dst is full (want_w) or limit_rate holds it (rate_wait) */
    W_ERR,                      /* dst failed (or the spool's file) */
} wrc_t;

/* Write what is ready: the head, chunk framing, payload. */
static wrc_t pipe_write(lg_pipe_t *p, lg_end_t *dst)
{
    const char *from = NULL;
    size_t avail;
    if (p->codec) {
        from = p->zbuf->pos;
        avail = (size_t)(p->zbuf->last - p->zbuf->pos);
    } else {
        ssize_t k = payload_peek(p, &from);
        if (k < 0)
            return W_ERR;
        avail = (size_t)k;
    }
    int fx_pending = p->fx_pos < p->fx_len;

    if (p->out_chunked && !fx_pending) {
        if (avail > 0 && p->chunk_left == 0) {
            p->fxb = NULL;
            p->fx_len = (uint16_t)snprintf(p->fx, sizeof(p->fx), "%s%zx\r\n",
                                          p->chunks ? "\r\n" : "", avail);
            p->fx_pos = 0;
            p->chunk_left = avail;
            p->chunks++;
            fx_pending = 1;
        } else if (avail == 0 && p->src_done && p->chunks >= 0 &&
                   (p->codec || payload_pending(p) == 0)) {
            size_t tn = 0;
            const char *tr = lg_pipe_trailers(p, &tn);
            if (tr) {
                /* the last chunk carries the trailer section */
                char *d = p->tr_room;
                size_t k = (size_t)snprintf(d, 8, "%s0\r\n", p->chunks ? "\r\n" : "");
                memcpy(d + k, tr, tn);
                memcpy(d + k + tn, "\r\n", 2);
                p->fxb = d;
                p->fx_len = (uint16_t)(k + tn + 2);
            } else {
                p->fx_len = (uint16_t)snprintf(p->fx, sizeof(p->fx), "%s0\r\n\r\n",
                                               p->chunks ? "\r\n" : "");
            }
            p->fx_pos = 0;
            p->chunks = -1;             /* terminator queued */
            fx_pending = 1;
        }
    }

    struct iovec iov[3];
    int cnt = 0;
    size_t total = 0, hdr_n = 0, fx_n = 0, data_n = 0;
    if (p->hdr_sent < p->hdr_len) {
        hdr_n = p->hdr_len - p->hdr_sent;
        iov[cnt].iov_base = (void *)(p->hdr + p->hdr_sent);
        iov[cnt++].iov_len = hdr_n;
    }
    if (fx_pending) {
        fx_n = (size_t)(p->fx_len - p->fx_pos);
        iov[cnt].iov_base = (p->fxb ? p->fxb : p->fx) + p->fx_pos;
        iov[cnt++].iov_len = fx_n;
    }
    data_n = avail;
    if (p->out_chunked && data_n > p->chunk_left)
        data_n = (size_t)p->chunk_left;
    p->rate_wait = 0;
    if (p->rate && data_n) {
        /* limit_rate: what the time since rate_t0 allows past rate_after;
         * out of budget, wait for a twentieth of a second's worth (at
         * most 16 KiB) rather than trickle tiny writes */
        int64_t now = lg_w.loop.now;
        int64_t allowed = (int64_t)p->rate_after - (int64_t)p->body_bytes +
                          (int64_t)p->rate * (now - p->rate_t0) / 1000;
        if (allowed <= 0) {
            data_n = 0;
            if (hdr_n == 0 && !fx_pending) {
                int64_t step = (int64_t)(p->rate / 20 < 16384 ? p->rate / 20 : 16384) + 1;
                p->rate_wait = now + ((step - allowed) * 1000 + (int64_t)p->rate - 1) /
                                     (int64_t)p->rate;
                return W_BLOCKED;
            }
        } else if ((uint64_t)allowed < data_n) {
            data_n = (size_t)allowed;
        }
    }
    if (p->rate_fn && data_n) {
        int64_t wait = 0;
        size_t k = p->rate_fn(p->rate_arg, data_n, lg_w.loop.now, &wait);
        if (k == 0) {
            data_n = 0;
            if (hdr_n == 0 && !fx_pending) {
                p->rate_wait = wait > lg_w.loop.now ? wait : lg_w.loop.now + 1;
                return W_BLOCKED;
            }
        } else {
            data_n = k;
        }
    }
    if (data_n) {
        iov[cnt].iov_base = (void *)from;
        iov[cnt++].iov_len = data_n;
    }
    total = hdr_n + fx_n + data_n;
    if (total == 0)
        return W_NONE;
    /* a head waits for the end of the batch (net/io.h); the body that
     * follows it does not: held too, each 32 KiB of a 100 KiB answer
     * waited a batch and cost a second pass (5% more CPU, measured) */
    if (!dst->w_ready || (hdr_n && p->hdr_sent == 0 && lg_end_hold(dst))) {
        dst->want_w = 1;
        return W_BLOCKED;
    }
    ssize_t n = lg_end_writev(dst, iov, cnt);
    if (n == LG_AGAIN)
        return W_BLOCKED;
    if (n < 0)
        return W_ERR;
    size_t left = (size_t)n;
    p->wire_bytes += left;
    size_t k = left < hdr_n ? left : hdr_n;
    p->hdr_sent += k;
    left -= k;
    k = left < fx_n ? left : fx_n;
    p->fx_pos = (uint16_t)(p->fx_pos + k);
    left -= k;
    if (p->codec)
        p->zbuf->pos += left;
    else
        payload_consume(p, left);
    p->body_bytes += left;
    if (p->out_chunked)
        p->chunk_left -= left;
    if ((size_t)n < total) {
        lg_end_short_write(dst);
        if (!dst->w_ready) {    /* the socket buffer is full */
            dst->want_w = 1;
            return W_BLOCKED;
        }
    }
    return W_WROTE;
}

/*
 * Streaming (no spool): read only when everything decoded went out, so a
 * slow destination holds the source back.  Spooled: a destination that
 * does not take more does not stop the reading; what it does not take
 * waits in the spool, and only a full spool holds the source back.  With
 * dst NULL a spooled pipe only reads (a request body buffered before any
 * upstream is chosen): DONE once the whole body is in the spool, FULL
 * when the spool takes no more.
 */
lg_pipe_rc_t lg_pipe_run(lg_pipe_t *p, lg_end_t *src, lg_end_t *dst)
{
    lg_buf_t *b = p->buf;
    int spooled = p->spool != NULL;
    if (p->done)
        return LG_PIPE_DONE;
    if (p->sp_open)
        return splice_run(p, src, dst);
    LG_BUG_ON(dst == NULL && !spooled);
    if (b) {
        int drc = pipe_decode(p);
        if (drc < 0)
            return drc == -2 ? LG_PIPE_ERR_LIMIT : LG_PIPE_ERR_SRC;
    }
    for (;;) {
        spool_fill(p);
        wrc_t w = W_BLOCKED;
        if (dst) {
            if (p->codec && p->zbuf->pos == p->zbuf->last && filter_step(p) < 0)
                return LG_PIPE_ERR_SRC;
            w = pipe_write(p, dst);
        }
        if (w == W_ERR)
            return LG_PIPE_ERR_DST;
        if (w == W_WROTE)
            continue;
        if (w == W_NONE) {
            if (p->src_done && (p->codec ? p->codec->done : payload_pending(p) == 0)) {
                p->done = 1;
                return LG_PIPE_DONE;
            }
            if (p->codec && !p->codec->done && (p->src_done || payload_pending(p) > 0))
                continue;       /* the filter has more to give */
        } else if (!spooled) {
            return LG_PIPE_AGAIN;
        }
        if (dst == NULL && b->pos != p->dec)
            return LG_PIPE_FULL;        /* reading only, and the spool takes no more */
        if (dst == NULL && p->src_done)
            return LG_PIPE_DONE;        /* all in the spool */
        if (p->src_done)
            return LG_PIPE_AGAIN;       /* blocked, with nothing more to read */
        if (b->pos != p->dec)
            return LG_PIPE_AGAIN;       /* the spool is full: backpressure */

        /* everything decoded was written (or spooled): make room and read more */
        if (b->pos == p->dec && p->dec == b->last) {
            b->pos = p->dec = b->last = p->base;
            if (splice_can(p, src, dst)) {
                if (lg_splice_open(&p->sp, p->remaining) == 0) {
                    p->sp_open = 1;
                    return splice_run(p, src, dst);
                }
                p->splice_ok = 0;       /* out of descriptors: the buffer's way */
            }
        }
        if (b->last == b->end) {
            size_t keep = (size_t)(b->last - b->pos);
            if (b->pos == p->base)
                return LG_PIPE_ERR_SRC;     /* cannot happen: raw is always decoded */
            memmove(p->base, b->pos, keep);
            p->dec = p->base + (p->dec - b->pos);
            b->pos = p->base;
            b->last = p->base + keep;
        }
        /* a quiet source: let the client have what the encoder holds */
        int quiet_flush = p->codec && p->zpending && dst && w == W_NONE && payload_pending(p) == 0;
        if (!src->r_ready) {
            if (quiet_flush) {
                p->want_flush = 1;
                continue;
            }
            src->want_r = 1;
            return LG_PIPE_AGAIN;
        }
        size_t room = (size_t)(b->end - b->last);
        ssize_t n = lg_end_recv(src, b->last, room);
        if (n > 0) {
            b->last += n;
            p->src_bytes += (uint64_t)n;
            lg_end_short_read(src, (size_t)n, room);
            int drc = pipe_decode(p);
            if (drc < 0)
                return drc == -2 ? LG_PIPE_ERR_LIMIT : LG_PIPE_ERR_SRC;
            continue;
        }
        if (n == 0) {
            p->src_eof = 1;
            src->r_ready = 0;
            if (p->in == LG_BODY_CLOSE) {
                p->src_done = 1;
                continue;
            }
            return LG_PIPE_ERR_SRC;
        }
        if (n == LG_AGAIN) {
            if (quiet_flush) {
                src->want_r = 0;
                p->want_flush = 1;
                continue;
            }
            return LG_PIPE_AGAIN;
        }
        return LG_PIPE_ERR_SRC;
    }
}

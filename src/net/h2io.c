#include "net/h2io.h"

#include <string.h>

/* the buffer of the round in progress: nghttp2 calls back inside
 * nghttp2_session_send(), on this worker's one thread */
static lg_buf_t *cur;

ssize_t lg_h2io_send_cb(nghttp2_session *ses, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ses;
    (void)flags;
    (void)ud;
    lg_buf_t *b = cur;
    size_t room = b ? (size_t)(b->end - b->last) : 0;
    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t k = len < room ? len : room;
    memcpy(b->last, data, k);
    b->last += k;
    return (ssize_t)k;
}

lg_h2io_rc_t lg_h2io_round(nghttp2_session *ses, lg_buf_t **outp, lg_end_t *e, const char **why)
{
    if (*outp == NULL && (*outp = lg_buf_get()) == NULL) {
        *why = "out of memory";
        return LG_H2IO_ERROR;
    }
    lg_buf_t *b = *outp;
    if (b->pos == b->last) {
        b->pos = b->last = b->start;
    } else if (b->pos > b->start) {
        size_t len = lg_buf_len(b);
        memmove(b->start, b->pos, len);
        b->pos = b->start;
        b->last = b->start + len;
    }
    if (b->last < b->end) {
        cur = b;
        int rv = nghttp2_session_send(ses);
        cur = NULL;
        if (rv != 0) {
            *why = "HTTP/2 session failed";
            return LG_H2IO_ERROR;
        }
    }
    if (lg_buf_len(b) == 0) {
        lg_buf_put(b);
        *outp = NULL;
        return LG_H2IO_IDLE;
    }
    if (!e->w_ready) {
        e->want_w = 1;
        return LG_H2IO_AGAIN;
    }
    ssize_t n = lg_end_send(e, b->pos, lg_buf_len(b));
    if (n == LG_AGAIN)
        return LG_H2IO_AGAIN;
    if (n < 0) {
        *why = "send() failed";
        return LG_H2IO_ERROR;
    }
    b->pos += n;
    if (lg_buf_len(b))
        lg_end_short_write(e);
    return LG_H2IO_WROTE;
}

/*
 * Frames out of an nghttp2 session onto an end (h2io.c), shared by the
 * HTTP/2 front end (pipeline/h2.c) and HTTP/2 upstreams (proxy/h2up.c):
 * nghttp2 serializes into one buffer, as much as fits, so many small
 * frames go out in one write; a frame that does not fit stays nghttp2's
 * until the next round.
 */
#ifndef LEGATE_NET_H2IO_H
#define LEGATE_NET_H2IO_H

#include <nghttp2/nghttp2.h>
#include <sys/types.h>

#include "net/buf.h"
#include "net/io.h"

typedef enum lg_h2io_rc {
    LG_H2IO_IDLE  = 0,          /* nothing to write: the buffer went back */
    LG_H2IO_AGAIN = 1,          /* waiting for the end to take more (want_w set) */
    LG_H2IO_WROTE = 2,          /* bytes went: go round again */
    LG_H2IO_ERROR = -1,         /* *why says what failed */
} lg_h2io_rc_t;

/* The session's send callback: install it with
 * nghttp2_session_callbacks_set_send_callback(). */
ssize_t lg_h2io_send_cb(nghttp2_session *ses, const uint8_t *data, size_t len, int flags, void *ud);

/* One round: serialize into *outp (taken from the pool as needed), write
 * it to e. */
lg_h2io_rc_t lg_h2io_round(nghttp2_session *ses, lg_buf_t **outp, lg_end_t *e, const char **why);

#endif

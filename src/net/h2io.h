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

/*
 * A session's largest allocations, given back to the kernel while its
 * connection is idle.  nghttp2 serializes every outgoing frame into one
 * 16 KiB + 10 buffer per session, and keeps its streams in a 4 KiB hash
 * table; their pages stay resident for the session's life (the whole
 * buffer once a 16 KiB DATA frame went out), though between frames the
 * buffer holds nothing (once nghttp2_session_want_write() is 0 every byte
 * in it was taken) and a table without streams is all zero bytes.  With
 * lg_h2io_mem as the session's nghttp2_mem, those two come from one slot
 * of page-aligned memory of the worker's own (the table its first page,
 * the buffer ending on the last), and lg_h2io_release() drops the
 * buffer's pages and, if empty, the table's (MADV_DONTNEED: they read as
 * zeros when next touched).  The blocks nghttp2 takes while the session
 * is made (sl->opening: the session itself and its HPACK rings, ~5 KiB)
 * go on the pages between the two, and so do its small blocks while there
 * is room, so that a freed session (pipeline/h2.c puts idle ones to sleep)
 * leaves few holes among other connections' blocks, where glibc would
 * keep the pages.  Every other allocation is malloc's.
 */
typedef struct lg_h2io_slot {
    void    *mem;               /* the slot's pages, NULL while nghttp2 holds no part */
    int      uses;              /* which of the table and the buffer nghttp2 holds */
    int      opening;           /* set while the session is made: its blocks go in the slot */
    unsigned own_used, own_live; /* the session's own part: bytes taken, blocks held */
    int      shed;              /* when the session goes, its pages go back to the system too,
                                 * not only the slot to the free list (whose first few stay
                                 * resident for the next connection) */
} lg_h2io_slot_t;

/* The allocator of a session whose slot is sl (sl outlives the session). */
nghttp2_mem lg_h2io_mem(lg_h2io_slot_t *sl);
/* Drop the slot's pages that hold nothing: only while the session has
 * nothing to write (nghttp2_session_want_write() 0), best once an idle
 * spell has lasted, as the next frame faults the pages in again. */
void lg_h2io_release(lg_h2io_slot_t *sl);

/* Serialize what the session has queued and throw it away: the frames a
 * session re-made for a connection (pipeline/h2.c waking one) had been
 * sent by its predecessor.  0, or nghttp2's error. */
int lg_h2io_discard(nghttp2_session *ses);

/* One round: serialize into *outp (taken from the pool as needed), write
 * it to e. */
lg_h2io_rc_t lg_h2io_round(nghttp2_session *ses, lg_buf_t **outp, lg_end_t *e, const char **why);

#endif

/*
 * The event loop: epoll (edge-triggered) plus a binary heap of timers, in the
 * spirit of Redis's ae.c.  One loop per worker; nothing here is shared.
 *
 * Descriptors are registered once with EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET
 * and their owner keeps "ready" flags (nginx's way): a read or write is tried
 * while the flag is set and the flag is cleared on EAGAIN.  That costs one
 * epoll_ctl per descriptor lifetime instead of one per state change.
 *
 * An owner may be freed while events for it are still queued in the current
 * batch, so owners are released through lg_loop_defer_free(): the memory goes
 * back only after the batch, and an lg_io_t whose fd is -1 is skipped.
 */
#ifndef LEGATE_CORE_EVENT_H
#define LEGATE_CORE_EVENT_H

#include <stddef.h>
#include <stdint.h>

typedef int64_t lg_msec_t;

typedef struct lg_loop lg_loop_t;
typedef struct lg_io lg_io_t;
typedef struct lg_timer lg_timer_t;

typedef void (*lg_io_cb)(lg_io_t *io, uint32_t events);
typedef void (*lg_timer_cb)(lg_timer_t *t);

struct lg_io {
    int      fd;                /* -1 once closed: queued events are ignored */
    lg_io_cb cb;
    void    *data;              /* borrowed: the owner */
};

struct lg_timer {
    lg_msec_t   when;           /* absolute, lg_now() clock */
    size_t      idx;            /* position in the heap + 1; 0 = not armed */
    lg_timer_cb cb;
    void       *data;
};

/*
 * Work posted to run once the current batch of events (or of timers) has
 * been handled, as nginx's posted events: many events that each make a
 * little output for one connection are answered by one write.
 */
typedef struct lg_post {
    void          (*fn)(struct lg_post *p);
    struct lg_post *next;
    int             queued;
} lg_post_t;

struct lg_loop {
    int          epfd;
    lg_msec_t    now;           /* cached monotonic ms, updated per batch */
    int64_t      wall;          /* cached time(NULL) */
    lg_timer_t **heap;          /* owned array */
    size_t       nheap, capheap;
    void       **defer;         /* owned array of malloc'd blocks to free */
    lg_post_t   *posted;        /* run after this batch (borrowed) */
    size_t       ndefer, capdefer;
    int          stop;
    int          dispatching;   /* inside this batch's event callbacks */
};

int  lg_loop_init(lg_loop_t *l);
void lg_loop_destroy(lg_loop_t *l);
/* Run one batch: wait at most max_wait ms (or until the next timer). */
void lg_loop_once(lg_loop_t *l, lg_msec_t max_wait);

/* The wall clock in ms, now (not cached): for times shared between
 * processes or stored (cache entries, TLS sessions and tickets). */
int64_t lg_wall_ms(void);
void lg_loop_update_time(lg_loop_t *l);

int  lg_io_add(lg_loop_t *l, lg_io_t *io, uint32_t events);
int  lg_io_mod(lg_loop_t *l, lg_io_t *io, uint32_t events);
void lg_io_del(lg_loop_t *l, lg_io_t *io);   /* does not close the fd */

void lg_timer_set(lg_loop_t *l, lg_timer_t *t, lg_msec_t after);
void lg_timer_del(lg_loop_t *l, lg_timer_t *t);
static inline int lg_timer_armed(const lg_timer_t *t) { return t->idx != 0; }

void lg_loop_defer_free(lg_loop_t *l, void *p);
/* p->fn runs after this batch's events, before deferred frees (so what
 * p belongs to may have been closed, not freed, meanwhile). */
void lg_loop_post(lg_loop_t *l, lg_post_t *p);

#endif

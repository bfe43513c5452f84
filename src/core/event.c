#include "core/event.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define MAX_EVENTS 512

int lg_loop_init(lg_loop_t *l)
{
    memset(l, 0, sizeof(*l));
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        return -1;
    lg_loop_update_time(l);
    return 0;
}

void lg_loop_destroy(lg_loop_t *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
    for (size_t i = 0; i < l->ndefer; i++)
        free(l->defer[i]);
    free(l->defer);
    free(l->heap);
    l->defer = NULL;
    l->heap = NULL;
    l->ndefer = l->nheap = 0;
}

void lg_loop_update_time(lg_loop_t *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    l->now = (lg_msec_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    l->wall = (int64_t)time(NULL);
}

int lg_io_add(lg_loop_t *l, lg_io_t *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int lg_io_mod(lg_loop_t *l, lg_io_t *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void lg_io_del(lg_loop_t *l, lg_io_t *io)
{
    if (io->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/* ---- timers: a binary min-heap; t->idx is 1-based so 0 means unarmed ---- */

static void heap_swap(lg_loop_t *l, size_t a, size_t b)
{
    lg_timer_t *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->idx = a + 1;
    l->heap[b]->idx = b + 1;
}

static void heap_up(lg_loop_t *l, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->when <= l->heap[i]->when)
            break;
        heap_swap(l, p, i);
        i = p;
    }
}

static void heap_down(lg_loop_t *l, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1, m = i;
        if (c < l->nheap && l->heap[c]->when < l->heap[m]->when)
            m = c;
        if (c + 1 < l->nheap && l->heap[c + 1]->when < l->heap[m]->when)
            m = c + 1;
        if (m == i)
            break;
        heap_swap(l, i, m);
        i = m;
    }
}

void lg_timer_del(lg_loop_t *l, lg_timer_t *t)
{
    if (t->idx == 0)
        return;
    size_t i = t->idx - 1;
    size_t last = l->nheap - 1;
    if (i != last) {
        heap_swap(l, i, last);
        l->nheap--;
        heap_down(l, i);
        heap_up(l, i);
    } else {
        l->nheap--;
    }
    t->idx = 0;
}

void lg_timer_set(lg_loop_t *l, lg_timer_t *t, lg_msec_t after)
{
    lg_msec_t when = l->now + after;
    if (t->idx) {
        /* re-arming to (nearly) the same time is common: skip the heap work */
        if (t->when == when)
            return;
        t->when = when;
        size_t i = t->idx - 1;
        heap_down(l, i);
        heap_up(l, i);
        return;
    }
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 256;
        lg_timer_t **h = realloc(l->heap, cap * sizeof(*h));
        LG_BUG_ON(h == NULL);
        l->heap = h;
        l->capheap = cap;
    }
    t->when = when;
    l->heap[l->nheap] = t;
    t->idx = ++l->nheap;
    heap_up(l, l->nheap - 1);
}

void lg_loop_defer_free(lg_loop_t *l, void *p)
{
    if (l->ndefer == l->capdefer) {
        size_t cap = l->capdefer ? l->capdefer * 2 : 64;
        void **d = realloc(l->defer, cap * sizeof(*d));
        if (d == NULL) {
            /* cannot defer: better to leak one block than to risk a UAF */
            return;
        }
        l->defer = d;
        l->capdefer = cap;
    }
    l->defer[l->ndefer++] = p;
}

static void run_deferred(lg_loop_t *l)
{
    for (size_t i = 0; i < l->ndefer; i++)
        free(l->defer[i]);
    l->ndefer = 0;
}

int64_t lg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lg_loop_post(lg_loop_t *l, lg_post_t *p)
{
    if (p->queued)
        return;
    p->queued = 1;
    p->next = l->posted;
    l->posted = p;
}

static void run_posted(lg_loop_t *l)
{
    /* what a posted function posts runs in the same pass, boundedly */
    for (int round = 0; round < 64 && l->posted; round++) {
        lg_post_t *p = l->posted;
        l->posted = NULL;
        while (p) {
            lg_post_t *next = p->next;
            p->queued = 0;
            p->fn(p);
            p = next;
        }
    }
}

void lg_loop_once(lg_loop_t *l, lg_msec_t max_wait)
{
    struct epoll_event evs[MAX_EVENTS];
    lg_msec_t wait = max_wait;
    if (l->nheap) {
        lg_msec_t d = l->heap[0]->when - l->now;
        if (d < 0)
            d = 0;
        if (wait < 0 || d < wait)
            wait = d;
    }
    if (l->posted)
        wait = 0;
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, (int)wait);
    if (n < 0 && errno != EINTR)
        lg_log_errno(LG_LOG_ALERT, errno, "epoll_wait() failed");
    lg_loop_update_time(l);
    l->dispatching = 1;
    for (int i = 0; i < n; i++) {
        lg_io_t *io = evs[i].data.ptr;
        if (io->fd < 0)
            continue;
        io->cb(io, evs[i].events);
    }
    l->dispatching = 0;
    run_posted(l);
    run_deferred(l);
    /* expired timers, earliest first; a callback may arm or delete others */
    while (l->nheap && l->heap[0]->when <= l->now) {
        lg_timer_t *t = l->heap[0];
        lg_timer_del(l, t);
        t->cb(t);
    }
    run_posted(l);
    run_deferred(l);
}

/*
 * I/O buffers of one fixed size, recycled through a per-worker free list so
 * that steady-state traffic never calls malloc.  An idle keep-alive
 * connection holds no buffer: it takes one when bytes arrive and gives it
 * back when it has none left (that is what keeps 10,000 idle connections
 * cheap).
 */
#ifndef LEGATE_NET_BUF_H
#define LEGATE_NET_BUF_H

#include <stddef.h>

#define LG_BUF_SIZE (32 * 1024)
/* A buffer for a request head just begun: what a slow client holds. */
#define LG_BUF_SMALL (1024 - 48)

typedef struct lg_buf lg_buf_t;
struct lg_buf {
    char     *start;            /* owned storage of LG_BUF_SIZE bytes, follows the struct */
    char     *end;
    char     *pos;              /* first unconsumed byte */
    char     *last;             /* one past the last received byte */
    lg_buf_t *next_free;
};

lg_buf_t *lg_buf_get(void);             /* NULL when out of memory */
lg_buf_t *lg_buf_get_small(void);       /* LG_BUF_SMALL bytes; NULL when out of memory */
void      lg_buf_put(lg_buf_t *b);      /* NULL-safe, either size */
/* A small buffer's bytes [start, last) moved into a full one (*bp replaced;
 * pos and last keep their offsets); a full one is left as it is.  0 or -1. */
int       lg_buf_grow(lg_buf_t **bp);
static inline int lg_buf_is_small(const lg_buf_t *b) { return b->end - b->start < LG_BUF_SIZE; }
void      lg_buf_trim_pool(size_t keep);
static inline size_t lg_buf_len(const lg_buf_t *b) { return (size_t)(b->last - b->pos); }

#endif

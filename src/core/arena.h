/*
 * Arenas: bump-pointer allocation, freed all at once.
 *
 * Every connection, request and configuration generation owns one arena;
 * nothing allocated from it is freed one object at a time.  Allocation
 * failure returns NULL (the caller fails that one request, never the
 * process).  lg_arena_reset() keeps the first block for reuse between
 * keep-alive requests so steady-state traffic does not touch malloc.
 */
#ifndef LEGATE_CORE_ARENA_H
#define LEGATE_CORE_ARENA_H

#include <stddef.h>

typedef struct lg_arena_block lg_arena_block_t;

typedef struct lg_arena {
    lg_arena_block_t *head;     /* owned: current block, linked to older ones */
    size_t            block_size;
    size_t            limit;    /* max total bytes, 0 = unlimited */
    size_t            total;    /* bytes obtained from malloc */
} lg_arena_t;

void  lg_arena_init(lg_arena_t *a, size_t block_size, size_t limit);
void *lg_arena_alloc(lg_arena_t *a, size_t n);          /* 16-byte aligned */
void *lg_arena_calloc(lg_arena_t *a, size_t n);
char *lg_arena_strdup(lg_arena_t *a, const char *s);
char *lg_arena_strndup(lg_arena_t *a, const char *s, size_t n);
char *lg_arena_printf(lg_arena_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void  lg_arena_reset(lg_arena_t *a);    /* free all but the first block */
void  lg_arena_destroy(lg_arena_t *a);  /* free everything; idempotent */

#endif

#include "core/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_arena_block {
    lg_arena_block_t *prev;
    size_t            size;     /* usable bytes in data[] */
    size_t            used;
    _Alignas(16) unsigned char data[];
};

#define ALIGN16(n) (((n) + 15) & ~(size_t)15)

/*
 * Blocks of the common size (4 KiB: every request's first) are kept on a
 * short free list of the process instead of going back to malloc: a
 * request's arena is made and destroyed once per request, and malloc/free
 * of its block was a visible part of a request's cost.  Processes are
 * single-threaded, so the list needs no lock.
 */
#define SPARE_SIZE 4096
#define SPARE_MAX 64
static lg_arena_block_t *spare;
static unsigned nspare;

static void block_free(lg_arena_block_t *b)
{
    if (b->size == SPARE_SIZE && nspare < SPARE_MAX) {
        b->prev = spare;
        spare = b;
        nspare++;
        return;
    }
    free(b);
}

void lg_arena_init(lg_arena_t *a, size_t block_size, size_t limit)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 4096;
    a->limit = limit;
    a->total = 0;
}

static lg_arena_block_t *arena_grow(lg_arena_t *a, size_t need)
{
    size_t size = a->block_size;
    if (need > size)
        size = ALIGN16(need);
    if (a->limit && a->total + size > a->limit)
        return NULL;
    lg_arena_block_t *b;
    if (size == SPARE_SIZE && spare) {
        b = spare;
        spare = b->prev;
        nspare--;
    } else if ((b = malloc(sizeof(*b) + size)) == NULL) {
        return NULL;
    }
    b->prev = a->head;
    b->size = size;
    b->used = 0;
    a->head = b;
    a->total += size;
    return b;
}

void *lg_arena_alloc(lg_arena_t *a, size_t n)
{
    n = ALIGN16(n ? n : 1);
    lg_arena_block_t *b = a->head;
    if (b == NULL || b->size - b->used < n) {
        b = arena_grow(a, n);
        if (b == NULL)
            return NULL;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void *lg_arena_calloc(lg_arena_t *a, size_t n)
{
    void *p = lg_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *lg_arena_strndup(lg_arena_t *a, const char *s, size_t n)
{
    char *p = lg_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *lg_arena_strdup(lg_arena_t *a, const char *s)
{
    return lg_arena_strndup(a, s, strlen(s));
}

char *lg_arena_printf(lg_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = lg_arena_alloc(a, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void lg_arena_reset(lg_arena_t *a)
{
    lg_arena_block_t *b = a->head;
    if (b == NULL)
        return;
    while (b->prev) {
        lg_arena_block_t *prev = b->prev;
        a->total -= b->size;
        block_free(b);
        b = prev;
    }
    /* keep the oldest block only if it is the standard size */
    if (b->size != a->block_size) {
        a->total -= b->size;
        block_free(b);
        b = NULL;
    } else {
        b->used = 0;
    }
    a->head = b;
}

void lg_arena_destroy(lg_arena_t *a)
{
    lg_arena_block_t *b = a->head;
    while (b) {
        lg_arena_block_t *prev = b->prev;
        block_free(b);
        b = prev;
    }
    a->head = NULL;
    a->total = 0;
}

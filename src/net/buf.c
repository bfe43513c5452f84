#include "net/buf.h"

#include <stdlib.h>
#include <string.h>

static lg_buf_t *free_list, *free_small;
static size_t nfree, nfree_small;

lg_buf_t *lg_buf_get(void)
{
    lg_buf_t *b = free_list;
    if (b) {
        free_list = b->next_free;
        nfree--;
    } else {
        b = malloc(sizeof(*b) + LG_BUF_SIZE);
        if (b == NULL)
            return NULL;
        b->start = (char *)(b + 1);
        b->end = b->start + LG_BUF_SIZE;
    }
    b->pos = b->last = b->start;
    b->next_free = NULL;
    return b;
}

lg_buf_t *lg_buf_get_small(void)
{
    lg_buf_t *b = free_small;
    if (b) {
        free_small = b->next_free;
        nfree_small--;
    } else {
        b = malloc(sizeof(*b) + LG_BUF_SMALL);
        if (b == NULL)
            return NULL;
        b->start = (char *)(b + 1);
        b->end = b->start + LG_BUF_SMALL;
    }
    b->pos = b->last = b->start;
    b->next_free = NULL;
    return b;
}

int lg_buf_grow(lg_buf_t **bp)
{
    lg_buf_t *s = *bp;
    if (!lg_buf_is_small(s))
        return 0;
    lg_buf_t *b = lg_buf_get();
    if (b == NULL)
        return -1;
    memcpy(b->start, s->start, (size_t)(s->last - s->start));
    b->pos = b->start + (s->pos - s->start);
    b->last = b->start + (s->last - s->start);
    lg_buf_put(s);
    *bp = b;
    return 0;
}

void lg_buf_put(lg_buf_t *b)
{
    if (b == NULL)
        return;
    if (lg_buf_is_small(b)) {
        if (nfree_small >= 4096) {
            free(b);
            return;
        }
        b->next_free = free_small;
        free_small = b;
        nfree_small++;
        return;
    }
    if (nfree >= 1024) {        /* bound what a burst leaves behind */
        free(b);
        return;
    }
    b->next_free = free_list;
    free_list = b;
    nfree++;
}

void lg_buf_trim_pool(size_t keep)
{
    while (nfree > keep) {
        lg_buf_t *b = free_list;
        free_list = b->next_free;
        free(b);
        nfree--;
    }
}

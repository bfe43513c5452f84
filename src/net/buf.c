#include "net/buf.h"

#include <stdlib.h>

static lg_buf_t *free_list;
static size_t nfree;

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

void lg_buf_put(lg_buf_t *b)
{
    if (b == NULL)
        return;
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

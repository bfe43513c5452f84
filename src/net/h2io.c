#include "net/h2io.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- a session's slot: its stream table and its frame buffer ---- */

/* nghttp2's NGHTTP2_FRAMEBUF_CHUNKLEN (lib/nghttp2_frame.h, not public):
 * a frame header, a pad length byte, the largest default payload; and its
 * stream map's first table, 256 buckets of 16 bytes (lib/nghttp2_map.c) */
#define FB_LEN     (9 + 1 + 16384)
#define TABLE_LEN  4096
#define SLOT_PAGES 6            /* page 0 the table; FB_LEN ends where page 5 does */
#define SLOT_BATCH 64           /* slots mapped at a time */
#define SLOT_KEEP  64           /* free slots kept resident; more are dropped */
#define USE_TABLE  1
#define USE_FB     2

static void **slot_free;        /* free slots (their pages may be dropped) */
static size_t slot_nfree, slot_cap, page;

/* Room in the free list for `more` slots beyond those in it. */
static int slot_room(size_t more)
{
    if (slot_nfree + more <= slot_cap)
        return 0;
    size_t cap = slot_cap + (more > SLOT_BATCH ? more : SLOT_BATCH);
    void **n = realloc(slot_free, cap * sizeof(*n));
    if (n == NULL)
        return -1;
    slot_free = n;
    slot_cap = cap;
    return 0;
}

static void *slot_get(void)
{
    if (page == 0)
        page = (size_t)sysconf(_SC_PAGESIZE);
    if (slot_nfree == 0) {
        size_t sz = page * SLOT_PAGES;
        if (slot_room(SLOT_BATCH) < 0)
            return NULL;
        char *m = mmap(NULL, sz * SLOT_BATCH, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        /* slots are never unmapped: address space, not memory, once dropped */
        for (size_t i = 0; i < SLOT_BATCH; i++)
            slot_free[slot_nfree++] = m + i * sz;
    }
    return slot_free[--slot_nfree];
}

static void slot_put(void *slot)
{
    int room = slot_room(1) == 0;
    if (slot_nfree >= SLOT_KEEP || !room)
        madvise(slot, page * SLOT_PAGES, MADV_DONTNEED);
    if (room)
        slot_free[slot_nfree++] = slot;     /* else lost to reuse, not to memory */
}

static char *slot_table(void *slot) { return slot; }
static char *slot_fb(void *slot) { return (char *)slot + page * SLOT_PAGES - FB_LEN; }

static void *slot_alloc(lg_h2io_slot_t *sl, size_t size, int zero)
{
    int part = size == FB_LEN ? USE_FB : size == TABLE_LEN ? USE_TABLE : 0;
    if (part == 0 || (sl->uses & part))
        return zero ? calloc(1, size) : malloc(size);
    if (sl->mem == NULL && (sl->mem = slot_get()) == NULL)
        return NULL;
    sl->uses |= part;
    char *b = part == USE_FB ? slot_fb(sl->mem) : slot_table(sl->mem);
    if (zero)
        memset(b, 0, size);
    return b;
}

/* Which part of the slot p is, 0 when it is malloc's. */
static int slot_part(const lg_h2io_slot_t *sl, const void *p)
{
    if (sl->mem == NULL || p == NULL)
        return 0;
    if ((sl->uses & USE_FB) && p == slot_fb(sl->mem))
        return USE_FB;
    if ((sl->uses & USE_TABLE) && p == slot_table(sl->mem))
        return USE_TABLE;
    return 0;
}

static void *mem_malloc(size_t size, void *ud) { return slot_alloc(ud, size, 0); }

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > (size_t)-1 / size)
        return NULL;
    return slot_alloc(ud, n * size, 1);
}

static void mem_free(void *p, void *ud)
{
    lg_h2io_slot_t *sl = ud;
    int part = slot_part(sl, p);
    if (part == 0) {
        free(p);
        return;
    }
    sl->uses &= ~part;
    if (sl->uses == 0) {
        slot_put(sl->mem);
        sl->mem = NULL;
    }
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    lg_h2io_slot_t *sl = ud;
    if (p == NULL)
        return slot_alloc(sl, size, 0);
    int part = slot_part(sl, p);
    if (part == 0)
        return realloc(p, size);
    void *n = malloc(size);     /* never done by nghttp2 1.52; kept correct */
    if (n == NULL)
        return NULL;
    size_t had = part == USE_FB ? FB_LEN : TABLE_LEN;
    memcpy(n, p, size < had ? size : had);
    mem_free(p, sl);
    return n;
}

nghttp2_mem lg_h2io_mem(lg_h2io_slot_t *sl)
{
    return (nghttp2_mem){ sl, mem_malloc, mem_free, mem_calloc, mem_realloc };
}

static int all_zero(const char *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t acc = 0;
    for (size_t i = 0; i < n / sizeof(*w); i++)
        acc |= w[i];
    return acc == 0;
}

void lg_h2io_release(lg_h2io_slot_t *sl)
{
    if (sl->mem == NULL)
        return;
    /* the frame buffer holds nothing (the caller's word); the table, once
     * all its buckets are empty, is all zero bytes -- what a dropped page
     * reads as, so dropping it changes nothing nghttp2 could see */
    if (sl->uses & USE_FB)
        madvise((char *)sl->mem + page, page * (SLOT_PAGES - 1), MADV_DONTNEED);
    if ((sl->uses & USE_TABLE) && all_zero(slot_table(sl->mem), TABLE_LEN))
        madvise(sl->mem, page, MADV_DONTNEED);
}

/* ---- sending ---- */

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

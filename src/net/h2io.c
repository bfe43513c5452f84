#include "net/h2io.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LG_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(LG_ASAN)
#include <sanitizer/lsan_interface.h>
/* the slots hold a session's own blocks, which point at malloc's: the
 * leak checker must scan them as it scans the heap */
#define slots_mapped(m, len) __lsan_register_root_region((m), (len))
#else
#define slots_mapped(m, len) ((void)0)
#endif

/* ---- a session's slot: its stream table and its frame buffer ---- */

/* nghttp2's NGHTTP2_FRAMEBUF_CHUNKLEN (lib/nghttp2_frame.h, not public):
 * a frame header, a pad length byte, the largest default payload; and its
 * stream map's first table, 256 buckets of 16 bytes (lib/nghttp2_map.c) */
#define FB_LEN     (9 + 1 + 16384)
#define TABLE_LEN  4096
#define SLOT_PAGES 7            /* page 0 the table, then the session's own, FB_LEN ends where page 6 does */
#define OWN_ALIGN  16           /* and each of its blocks has a header this long: its size */
#define OWN_SMALL  512          /* blocks up to this size go there too while it has room */
#define SLOT_BATCH 64           /* slots mapped at a time */
#define SLOT_KEEP  64           /* free slots kept resident; more are dropped */
#define USE_TABLE  1
#define USE_FB     2

/* Free slots: warm ones (their pages resident, up to SLOT_KEEP) are taken
 * first; cold ones have had their pages dropped, or were never touched. */
typedef struct slot_stack {
    void  **v;
    size_t  n, cap;
} slot_stack_t;

static slot_stack_t slot_warm, slot_cold;
static size_t page;

/* Room in st for `more` slots beyond those in it. */
static int slot_room(slot_stack_t *st, size_t more)
{
    if (st->n + more <= st->cap)
        return 0;
    size_t cap = st->cap + (more > SLOT_BATCH ? more : SLOT_BATCH);
    void **n = realloc(st->v, cap * sizeof(*n));
    if (n == NULL)
        return -1;
    st->v = n;
    st->cap = cap;
    return 0;
}

static void *slot_get(void)
{
    if (page == 0)
        page = (size_t)sysconf(_SC_PAGESIZE);
    if (slot_warm.n)
        return slot_warm.v[--slot_warm.n];
    if (slot_cold.n == 0) {
        size_t sz = page * SLOT_PAGES;
        if (slot_room(&slot_cold, SLOT_BATCH) < 0)
            return NULL;
        char *m = mmap(NULL, sz * SLOT_BATCH, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        slots_mapped(m, sz * SLOT_BATCH);
        /* slots are never unmapped: address space, not memory, once dropped */
        for (size_t i = 0; i < SLOT_BATCH; i++)
            slot_cold.v[slot_cold.n++] = m + i * sz;
    }
    return slot_cold.v[--slot_cold.n];
}

/* shed: its pages go back to the system whatever the warm list holds */
static void slot_put(void *slot, int shed)
{
    if (!shed && slot_warm.n < SLOT_KEEP && slot_room(&slot_warm, 1) == 0) {
        slot_warm.v[slot_warm.n++] = slot;
        return;
    }
    madvise(slot, page * SLOT_PAGES, MADV_DONTNEED);
    if (slot_room(&slot_cold, 1) == 0)
        slot_cold.v[slot_cold.n++] = slot;     /* else lost to reuse, not to memory */
}

static char *slot_table(void *slot) { return slot; }
static char *slot_fb(void *slot) { return (char *)slot + page * SLOT_PAGES - FB_LEN; }
static char *slot_own(void *slot) { return (char *)slot + page; }
static size_t own_room(void) { return page * (SLOT_PAGES - 1) - FB_LEN; }

static int is_own(const lg_h2io_slot_t *sl, const void *p)
{
    const char *o = sl->mem ? slot_own(sl->mem) : NULL;
    return o && (const char *)p >= o && (const char *)p < o + own_room();
}

/* A block of the session's own part, while the session is made: NULL
 * when it does not fit (malloc's, then). */
static void *own_alloc(lg_h2io_slot_t *sl, size_t size)
{
    size_t need = OWN_ALIGN + (size + OWN_ALIGN - 1) / OWN_ALIGN * OWN_ALIGN;
    if (need > own_room() - sl->own_used)
        return NULL;
    char *b = slot_own(sl->mem) + sl->own_used;
    memcpy(b, &size, sizeof(size));
    sl->own_used += need;
    sl->own_live++;
    return b + OWN_ALIGN;
}

static void slot_done(lg_h2io_slot_t *sl)
{
    if (sl->uses == 0 && sl->own_live == 0) {
        slot_put(sl->mem, sl->shed);
        sl->mem = NULL;
        sl->own_used = 0;
    }
}

static void *slot_alloc(lg_h2io_slot_t *sl, size_t size, int zero)
{
    int part = size == FB_LEN ? USE_FB : size == TABLE_LEN ? USE_TABLE : 0;
    if ((part == 0 && !sl->opening && size > OWN_SMALL) || (part && (sl->uses & part)))
        return zero ? calloc(1, size) : malloc(size);
    if (sl->mem == NULL && (sl->mem = slot_get()) == NULL)
        return NULL;
    if (part == 0) {
        /* made with the session, kept as long: beside its other parts */
        char *b = own_alloc(sl, size);
        if (b == NULL)
            return zero ? calloc(1, size) : malloc(size);
        if (zero)
            memset(b, 0, size);
        return b;
    }
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
    if (p && is_own(sl, p)) {
        sl->own_live--;         /* its room comes back with the slot's */
        slot_done(sl);
        return;
    }
    int part = slot_part(sl, p);
    if (part == 0) {
        free(p);
        return;
    }
    sl->uses &= ~part;
    slot_done(sl);
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    lg_h2io_slot_t *sl = ud;
    if (p == NULL)
        return slot_alloc(sl, size, 0);
    int own = is_own(sl, p);
    int part = own ? 0 : slot_part(sl, p);
    if (part == 0 && !own)
        return realloc(p, size);
    void *n = malloc(size);     /* never done by nghttp2 1.52; kept correct */
    if (n == NULL)
        return NULL;
    size_t had = part == USE_FB ? FB_LEN : TABLE_LEN;
    if (own)
        memcpy(&had, (char *)p - OWN_ALIGN, sizeof(had));
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
    if (sl->uses & USE_FB) {
        /* the pages wholly the buffer's: its first shares one with the
         * session's own part */
        size_t first = (page * SLOT_PAGES - FB_LEN + page - 1) / page;
        madvise((char *)sl->mem + first * page, page * (SLOT_PAGES - first), MADV_DONTNEED);
    }
    if ((sl->uses & USE_TABLE) && all_zero(slot_table(sl->mem), TABLE_LEN))
        madvise(sl->mem, page, MADV_DONTNEED);
}

/* ---- sending ---- */

/* the buffer of the round in progress: nghttp2 calls back inside
 * nghttp2_session_send(), on this worker's one thread */
static lg_buf_t *cur;
static int discarding;          /* inside lg_h2io_discard() */

ssize_t lg_h2io_send_cb(nghttp2_session *ses, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ses;
    (void)flags;
    (void)ud;
    if (discarding)
        return (ssize_t)len;
    lg_buf_t *b = cur;
    size_t room = b ? (size_t)(b->end - b->last) : 0;
    if (room == 0)
        return NGHTTP2_ERR_WOULDBLOCK;
    size_t k = len < room ? len : room;
    memcpy(b->last, data, k);
    b->last += k;
    return (ssize_t)k;
}

int lg_h2io_discard(nghttp2_session *ses)
{
    discarding = 1;
    int rv = nghttp2_session_send(ses);
    discarding = 0;
    return rv;
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

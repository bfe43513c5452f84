/*
 * gzip filter over zlib; the contract is in codec.h.
 *
 * zlib counts in uInt; lg_codec_run() takes size_t, so each call is cut into
 * pieces of at most UINT_MAX bytes, and a flush is only asked of zlib with
 * the last piece of input (Z_FINISH with part of the input would end the
 * stream early).
 *
 * The z_stream lives in the arena beside its allocator's bookkeeping, not in
 * lg_codec_t: deflate keeps a pointer back to its z_stream and refuses to run
 * if the stream moved, and the caller may well move a lg_pipe_t.
 */
#define ZLIB_CONST
#include "http/codec.h"
#include "http/codec_brzstd.h"

#include <limits.h>
#include <string.h>
#include <zlib.h>

#define LG_CODEC_MAGIC 0x677a6970u      /* "gzip" */

/* Upper bound on zlib's own state struct: deflate_state is ~5.9 KiB and
 * inflate_state ~7.0 KiB on LP64 with zlib 1.2.13 (nginx counts 8 KiB too). */
#define ZSTATE_MAX 8192

#define ALIGN16(n) (((n) + 15) & ~(size_t)15)

struct lg_codec_z {
    z_stream    z;
    lg_arena_t *arena;          /* borrowed */
    char       *base;           /* arena: zlib's reservation, follows this */
    size_t      size, used;     /* of the reservation */
    size_t      mem;            /* bytes zlib asked for, rounded to 16 */
};

/*
 * zlib's allocations come out of one reservation of lg_codec_memory() bytes
 * made at init (nginx does the same), so the arena sees a single request of
 * a known size instead of five that its blocks would round up one by one.
 * A zlib that wants more than the bound falls back to the arena itself.
 */
static voidpf codec_zalloc(voidpf opaque, uInt items, uInt size)
{
    struct lg_codec_z *zs = opaque;
    void *p;

    if (size != 0 && items > SIZE_MAX / size / 2)
        return Z_NULL;
    size_t n = ALIGN16((size_t)items * size);
    if (n == 0)
        n = 16;
    if (zs->size - zs->used >= n) {
        p = zs->base + zs->used;
        zs->used += n;
    } else {
        p = lg_arena_alloc(zs->arena, n);
        if (p == NULL)
            return Z_NULL;
    }
    zs->mem += n;
    return p;
}

/* The arena frees everything at once. */
static void codec_zfree(voidpf opaque, voidpf p)
{
    (void)opaque;
    (void)p;
}

/* The deflate shape for params p: nginx's rule shrinks the window (and with
 * it memlevel) while the body would fit in half of it, less the 262 bytes
 * zlib keeps for lookahead. */
static int codec_shape(const lg_codec_params_t *p, int *level, int *wbits,
                       int *memlevel)
{
    static const lg_codec_params_t defaults;

    if (p == NULL)
        p = &defaults;
    *level = p->level ? p->level : LG_CODEC_DEFAULT_LEVEL;
    *wbits = p->wbits ? p->wbits : LG_CODEC_DEFAULT_WBITS;
    *memlevel = p->memlevel ? p->memlevel : LG_CODEC_DEFAULT_MEMLEVEL;
    if (*level < 1 || *level > 9 || *wbits < 9 || *wbits > 15 ||
        *memlevel < 1 || *memlevel > 9)
        return -1;
    if (p->length_hint > 0) {
        while (*wbits > 9 &&
               p->length_hint < (uint64_t)((1 << (*wbits - 1)) - 262)) {
            (*wbits)--;
            (*memlevel)--;
        }
        if (*memlevel < 1)
            *memlevel = 1;
    }
    return 0;
}

size_t lg_codec_memory(lg_codec_kind_t kind, const lg_codec_params_t *p)
{
    size_t n = ALIGN16(sizeof(struct lg_codec_z)) + ZSTATE_MAX;
    int level, wbits, memlevel;

    switch (kind) {
    case LG_CODEC_GZIP_ENCODE:
        if (codec_shape(p, &level, &wbits, &memlevel) < 0)
            return 0;
        /* window and prev: 2 * 2^wbits bytes each; head: 2^(memlevel+7)
         * Pos of 2 bytes; pending_buf: lit_bufsize 2^(memlevel+6) * 4 */
        return n + 2 * ALIGN16((size_t)1 << (wbits + 1))
                 + 2 * ALIGN16((size_t)1 << (memlevel + 8));
    case LG_CODEC_GZIP_DECODE:
        return n + ((size_t)1 << MAX_WBITS);
    case LG_CODEC_BR_ENCODE:
    case LG_CODEC_ZSTD_ENCODE:
        return 0;               /* from malloc, not the arena: see codec_brzstd.c */
    }
    return 0;
}

int lg_codec_init(lg_codec_t *c, lg_codec_kind_t kind,
                  const lg_codec_params_t *p, lg_arena_t *a)
{
    struct lg_codec_z *zs;
    int level, wbits, memlevel, rc;

    memset(c, 0, sizeof(*c));
    c->kind = kind;
    if (kind == LG_CODEC_BR_ENCODE || kind == LG_CODEC_ZSTD_ENCODE) {
        if ((rc = lg_codec_brzstd_init(c, p)) != 0)
            return c->err = rc;
        c->magic = LG_CODEC_MAGIC;
        return 0;
    }
    if (kind != LG_CODEC_GZIP_ENCODE && kind != LG_CODEC_GZIP_DECODE)
        return c->err = LG_CODEC_EINVAL;
    if (kind == LG_CODEC_GZIP_ENCODE &&
        codec_shape(p, &level, &wbits, &memlevel) < 0)
        return c->err = LG_CODEC_EINVAL;

    size_t need = lg_codec_memory(kind, p);
    zs = lg_arena_alloc(a, need);
    if (zs == NULL)
        return c->err = LG_CODEC_ENOMEM;
    memset(zs, 0, sizeof(*zs));
    zs->arena = a;
    zs->base = (char *)zs + ALIGN16(sizeof(*zs));
    zs->size = need - ALIGN16(sizeof(*zs));
    zs->z.zalloc = codec_zalloc;
    zs->z.zfree = codec_zfree;
    zs->z.opaque = zs;

    if (kind == LG_CODEC_GZIP_ENCODE)
        rc = deflateInit2(&zs->z, level, Z_DEFLATED, wbits + 16, memlevel,
                          Z_DEFAULT_STRATEGY);
    else
        rc = inflateInit2(&zs->z, MAX_WBITS + 32);     /* gzip or zlib */
    if (rc != Z_OK)
        return c->err = rc == Z_MEM_ERROR ? LG_CODEC_ENOMEM : LG_CODEC_EINVAL;

    c->zs = zs;
    c->max_out = p ? p->max_out : 0;
    c->magic = LG_CODEC_MAGIC;
    return 0;
}

static ssize_t codec_fail(lg_codec_t *c, int rc)
{
    c->err = rc;
    return rc;
}

static ssize_t codec_deflate(lg_codec_t *c, const char *in, size_t in_len,
                             size_t *in_used, char *out, size_t out_len,
                             int flags)
{
    z_stream *z = &c->zs->z;
    size_t used = 0, made = 0;
    int rc = 0;

    if (c->done)
        return in_len ? codec_fail(c, LG_CODEC_EINVAL) : 0;
    if (flags & LG_CODEC_FINISH)
        c->finishing = 1;

    while (made < out_len) {
        size_t in_n = in_len - used < UINT_MAX ? in_len - used : UINT_MAX;
        size_t out_n = out_len - made < UINT_MAX ? out_len - made : UINT_MAX;
        int last = used + in_n == in_len;
        int zflush = !last ? Z_NO_FLUSH
                   : c->finishing ? Z_FINISH
                   : (flags & LG_CODEC_FLUSH) ? Z_SYNC_FLUSH : Z_NO_FLUSH;

        z->next_in = in_n ? (const Bytef *)in + used : Z_NULL;
        z->avail_in = (uInt)in_n;
        z->next_out = (Bytef *)out + made;
        z->avail_out = (uInt)out_n;
        int zrc = deflate(z, zflush);
        used += in_n - z->avail_in;
        made += out_n - z->avail_out;
        if (zrc == Z_STREAM_END) {
            c->done = 1;
            break;
        }
        if (zrc == Z_BUF_ERROR) {
            /* no progress: harmless with no input (a repeated FLUSH), but
             * with input it is new input after FINISH */
            if (z->avail_in != 0)
                rc = LG_CODEC_EINVAL;
            break;
        }
        if (zrc != Z_OK) {
            rc = LG_CODEC_ERROR;
            break;
        }
        if (z->avail_out != 0 && last)  /* all input taken, flush complete */
            break;
    }
    *in_used = used;
    c->total_in += used;
    c->total_out += made;
    return rc < 0 ? codec_fail(c, rc) : (ssize_t)made;
}

static ssize_t codec_inflate(lg_codec_t *c, const char *in, size_t in_len,
                             size_t *in_used, char *out, size_t out_len,
                             int flags)
{
    z_stream *z = &c->zs->z;
    size_t used = 0, made = 0;
    int rc = 0;

    if (flags & LG_CODEC_FINISH)
        c->finishing = 1;
    if (!c->started && in_len > 0) {
        c->started = 1;
        c->members = 1;
        c->zlib_wrap = (unsigned char)in[0] != 0x1f;
    }

    while (made < out_len) {
        if (c->member_end) {
            if (used == in_len)
                break;
            /* only another gzip member may follow */
            if (c->zlib_wrap || (unsigned char)in[used] != 0x1f ||
                (used + 1 < in_len && (unsigned char)in[used + 1] != 0x8b)) {
                rc = LG_CODEC_ETRAILING;
                break;
            }
            if (inflateReset2(z, MAX_WBITS + 16) != Z_OK) {
                rc = LG_CODEC_ERROR;
                break;
            }
            c->member_end = 0;
            c->done = 0;
            c->members++;
        }

        size_t in_n = in_len - used < UINT_MAX ? in_len - used : UINT_MAX;
        size_t out_n = out_len - made < UINT_MAX ? out_len - made : UINT_MAX;
        z->next_in = in_n ? (const Bytef *)in + used : Z_NULL;
        z->avail_in = (uInt)in_n;
        z->next_out = (Bytef *)out + made;
        z->avail_out = (uInt)out_n;
        int zrc = inflate(z, Z_NO_FLUSH);
        used += in_n - z->avail_in;
        made += out_n - z->avail_out;

        if (c->max_out && c->total_out + made > c->max_out) {
            rc = LG_CODEC_EBOMB;
            break;
        }
        if (zrc == Z_STREAM_END) {
            c->member_end = 1;
            c->done = 1;
            continue;
        }
        if (zrc == Z_OK || zrc == Z_BUF_ERROR) {
            /* out of input or of room; go on only if zlib was given a piece
             * cut at UINT_MAX (the loop condition checks the room) */
            if (used == in_len)
                break;
            if (zrc == Z_BUF_ERROR && z->avail_out != 0) {
                rc = LG_CODEC_ERROR;    /* stuck with input and room: never */
                break;
            }
            continue;
        }
        if (zrc == Z_MEM_ERROR)
            rc = LG_CODEC_ENOMEM;
        else if (zrc == Z_DATA_ERROR && c->members > 1 && z->total_in <= 2)
            rc = LG_CODEC_ETRAILING;    /* "\x1f" then not "\x8b" */
        else
            rc = LG_CODEC_ERROR;        /* Z_DATA_ERROR, Z_NEED_DICT... */
        break;
    }

    *in_used = used;
    c->total_in += used;
    c->total_out += made;
    if (rc < 0)
        return codec_fail(c, rc);
    if (c->finishing && used == in_len && made < out_len && c->started &&
        !c->member_end)
        return codec_fail(c, LG_CODEC_ETRUNC);
    return (ssize_t)made;
}

ssize_t lg_codec_run(lg_codec_t *c, const char *in, size_t in_len,
                     size_t *in_used, char *out, size_t out_len, int flags)
{
    *in_used = 0;
    if (c->magic != LG_CODEC_MAGIC)
        return LG_CODEC_EINVAL;
    if (c->err)
        return c->err;
    if (out_len == 0)
        return 0;               /* zlib wants somewhere to write */
    if (out_len > SSIZE_MAX)
        out_len = SSIZE_MAX;
    if (c->kind == LG_CODEC_GZIP_ENCODE)
        return codec_deflate(c, in, in_len, in_used, out, out_len, flags);
    if (c->more)
        return lg_codec_brzstd_run(c, in, in_len, in_used, out, out_len, flags);
    return codec_inflate(c, in, in_len, in_used, out, out_len, flags);
}

void lg_codec_end(lg_codec_t *c)
{
    if (c->magic == LG_CODEC_MAGIC && c->zs) {
        if (c->kind == LG_CODEC_GZIP_ENCODE)
            deflateEnd(&c->zs->z);
        else
            inflateEnd(&c->zs->z);
    }
    lg_codec_brzstd_end(c);
    c->magic = 0;
    c->zs = NULL;
}

size_t lg_codec_mem(const lg_codec_t *c)
{
    if (c->more)
        return c->more_mem;
    return c->zs ? ALIGN16(sizeof(*c->zs)) + c->zs->mem : 0;
}

const char *lg_codec_strerror(int rc)
{
    switch (rc) {
    case 0:                  return "ok";
    case LG_CODEC_ERROR:     return "corrupt compressed data";
    case LG_CODEC_EBOMB:     return "decompressed size over the limit";
    case LG_CODEC_ETRAILING: return "trailing garbage after the gzip data";
    case LG_CODEC_ETRUNC:    return "truncated compressed data";
    case LG_CODEC_ENOMEM:    return "out of memory";
    case LG_CODEC_EINVAL:    return "invalid use";
    }
    return "unknown error";
}

const char *lg_codec_kind_name(lg_codec_kind_t kind)
{
    switch (kind) {
    case LG_CODEC_GZIP_ENCODE: return "gzip";
    case LG_CODEC_GZIP_DECODE: return "gunzip";
    case LG_CODEC_BR_ENCODE:   return "br";
    case LG_CODEC_ZSTD_ENCODE: return "zstd";
    }
    return "?";
}

/*
 * The content codings beyond gzip: br (libbrotlienc) and zstd (libzstd),
 * encoders only, behind the same lg_codec_run() contract as gzip (codec.c
 * dispatches here by kind).  Compiled in when configure finds the
 * libraries (LG_HAVE_BROTLI, LG_HAVE_ZSTD).
 *
 * Memory is bounded by capping the window: brotli lgwin 18 and zstd
 * windowLog 19 (a 256 KiB and a 512 KiB window), which costs little ratio
 * on web responses and keeps a stream's state near 1 MiB (measured in
 * t/unit/test_codec.c, printed there).  Unlike zlib's, these states come
 * from malloc and are freed by lg_codec_end(): neither library takes a
 * fixed-size reservation.
 */
#include "http/codec.h"
#include "http/codec_brzstd.h"

#include <stdlib.h>
#include <string.h>

#ifdef LG_HAVE_BROTLI
#include <brotli/encode.h>
#endif
#ifdef LG_HAVE_ZSTD
#include <zstd.h>
#endif

int lg_codec_brzstd_available(lg_codec_kind_t kind)
{
#ifdef LG_HAVE_BROTLI
    if (kind == LG_CODEC_BR_ENCODE)
        return 1;
#endif
#ifdef LG_HAVE_ZSTD
    if (kind == LG_CODEC_ZSTD_ENCODE)
        return 1;
#endif
    (void)kind;
    return 0;
}

#ifdef LG_HAVE_BROTLI
/* brotli lets us count its allocations: lg_codec_mem() tells the truth */
typedef struct br_state {
    BrotliEncoderState *st;
    size_t              mem;
} br_state_t;

static void *br_alloc(void *opaque, size_t n)
{
    br_state_t *b = opaque;
    size_t *p = malloc(n + 16);
    if (p == NULL)
        return NULL;
    p[0] = n;
    b->mem += n;
    return (char *)p + 16;
}

static void br_free(void *opaque, void *q)
{
    br_state_t *b = opaque;
    if (q == NULL)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    b->mem -= p[0];
    free(p);
}

static int br_init(lg_codec_t *c, const lg_codec_params_t *p)
{
    br_state_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return LG_CODEC_ENOMEM;
    b->st = BrotliEncoderCreateInstance(br_alloc, br_free, b);
    if (b->st == NULL) {
        free(b);
        return LG_CODEC_ENOMEM;
    }
    int q = p == NULL || p->level == 0 ? 4 : p->level < 0 ? 0 : p->level;   /* -1: quality 0 */
    BrotliEncoderSetParameter(b->st, BROTLI_PARAM_QUALITY, (uint32_t)(q > 11 ? 11 : q));
    BrotliEncoderSetParameter(b->st, BROTLI_PARAM_LGWIN, 18);
    BrotliEncoderSetParameter(b->st, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
    if (p && p->length_hint && p->length_hint < (1u << 30))
        BrotliEncoderSetParameter(b->st, BROTLI_PARAM_SIZE_HINT, (uint32_t)p->length_hint);
    c->more = b;
    return 0;
}

static ssize_t br_run(lg_codec_t *c, const char *in, size_t in_len, size_t *in_used, char *out,
                      size_t out_len, int flags)
{
    br_state_t *b = c->more;
    BrotliEncoderOperation op = (flags & LG_CODEC_FINISH) ? BROTLI_OPERATION_FINISH
                              : (flags & LG_CODEC_FLUSH) ? BROTLI_OPERATION_FLUSH
                              : BROTLI_OPERATION_PROCESS;
    size_t ain = in_len, aout = out_len;
    const uint8_t *nin = (const uint8_t *)in;
    uint8_t *nout = (uint8_t *)out;
    for (;;) {
        if (!BrotliEncoderCompressStream(b->st, op, &ain, &nin, &aout, &nout, NULL)) {
            c->err = LG_CODEC_ERROR;
            return c->err;
        }
        if (aout == 0)
            break;                      /* full: the caller writes and comes back */
        if (ain == 0 && !BrotliEncoderHasMoreOutput(b->st) &&
            (op != BROTLI_OPERATION_FINISH || BrotliEncoderIsFinished(b->st)))
            break;
    }
    if (op == BROTLI_OPERATION_FINISH && BrotliEncoderIsFinished(b->st))
        c->done = 1;
    *in_used = in_len - ain;
    c->total_in += *in_used;
    c->total_out += out_len - aout;
    c->more_mem = b->mem;
    return (ssize_t)(out_len - aout);
}

static void br_end(lg_codec_t *c)
{
    br_state_t *b = c->more;
    BrotliEncoderDestroyInstance(b->st);
    free(b);
}
#endif

#ifdef LG_HAVE_ZSTD
static int zstd_init(lg_codec_t *c, const lg_codec_params_t *p)
{
    ZSTD_CCtx *z = ZSTD_createCCtx();
    if (z == NULL)
        return LG_CODEC_ENOMEM;
    int level = p && p->level > 0 ? p->level : 3;
    ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level > 19 ? 19 : level);
    ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, 19);
    ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
    if (p && p->length_hint)
        ZSTD_CCtx_setPledgedSrcSize(z, p->length_hint);
    c->more = z;
    return 0;
}

static ssize_t zstd_run(lg_codec_t *c, const char *in, size_t in_len, size_t *in_used, char *out,
                        size_t out_len, int flags)
{
    ZSTD_CCtx *z = c->more;
    ZSTD_EndDirective mode = (flags & LG_CODEC_FINISH) ? ZSTD_e_end
                           : (flags & LG_CODEC_FLUSH) ? ZSTD_e_flush : ZSTD_e_continue;
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };
    size_t left = 0;
    for (;;) {
        left = ZSTD_compressStream2(z, &ob, &ib, mode);
        if (ZSTD_isError(left)) {
            c->err = LG_CODEC_ERROR;
            return c->err;
        }
        if (ob.pos == ob.size)
            break;
        if (ib.pos == ib.size && (mode == ZSTD_e_continue || left == 0))
            break;
    }
    if (mode == ZSTD_e_end && left == 0 && ib.pos == ib.size)
        c->done = 1;
    *in_used = ib.pos;
    c->total_in += ib.pos;
    c->total_out += ob.pos;
    c->more_mem = ZSTD_sizeof_CCtx(z);
    return (ssize_t)ob.pos;
}
#endif

int lg_codec_brzstd_init(lg_codec_t *c, const lg_codec_params_t *p)
{
#ifdef LG_HAVE_BROTLI
    if (c->kind == LG_CODEC_BR_ENCODE)
        return br_init(c, p);
#endif
#ifdef LG_HAVE_ZSTD
    if (c->kind == LG_CODEC_ZSTD_ENCODE)
        return zstd_init(c, p);
#endif
    (void)p;
    return LG_CODEC_EINVAL;
}

ssize_t lg_codec_brzstd_run(lg_codec_t *c, const char *in, size_t in_len, size_t *in_used,
                          char *out, size_t out_len, int flags)
{
    if (c->done && in_len) {
        c->err = LG_CODEC_EINVAL;       /* input after the end of an encode */
        return c->err;
    }
#ifdef LG_HAVE_BROTLI
    if (c->kind == LG_CODEC_BR_ENCODE)
        return br_run(c, in, in_len, in_used, out, out_len, flags);
#endif
#ifdef LG_HAVE_ZSTD
    if (c->kind == LG_CODEC_ZSTD_ENCODE)
        return zstd_run(c, in, in_len, in_used, out, out_len, flags);
#endif
    (void)in; (void)in_len; (void)in_used; (void)out; (void)out_len; (void)flags;
    return LG_CODEC_EINVAL;
}

void lg_codec_brzstd_end(lg_codec_t *c)
{
    if (c->more == NULL)
        return;
#ifdef LG_HAVE_BROTLI
    if (c->kind == LG_CODEC_BR_ENCODE)
        br_end(c);
#endif
#ifdef LG_HAVE_ZSTD
    if (c->kind == LG_CODEC_ZSTD_ENCODE)
        ZSTD_freeCCtx(c->more);
#endif
    c->more = NULL;
}

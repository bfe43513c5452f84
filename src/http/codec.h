/*
 * Streaming gzip compression and decompression with bounded memory: the
 * content-coding filter of the body pipe.
 *
 * The pipe hands a codec the decoded payload bytes it has and an output
 * region; the codec consumes what it can and fills what it can, and the pipe
 * writes the output out before calling again, so memory per stream is the
 * zlib state alone whatever the body size.  zlib allocates that state from
 * the caller's arena (nginx's way), and frees nothing: the arena is reset
 * or destroyed after lg_codec_end(), never before.
 *
 * Memory per stream (zlib 1.2.13, LP64), all of it reserved from the arena
 * in one piece by lg_codec_init(); lg_codec_memory() gives the exact size:
 *
 *   encode   window 2^(wbits+1) + prev 2^(wbits+1) + head 2^(memlevel+8)
 *            + pending 2^(memlevel+8) + deflate_state (5,952 bytes)
 *            = 2^(wbits+2) + 2^(memlevel+9) + ~6 KiB
 *            wbits 15, memlevel 8 (defaults): 256 KiB + 6 KiB used,
 *                                  264 KiB reserved (270,496 bytes)
 *            wbits 13, memlevel 6:  64 KiB + 6 KiB used, 72 KiB reserved
 *   decode   window 2^15 + inflate_state (7,168 bytes): 39 KiB used,
 *            40 KiB reserved (41,120 bytes); the window cannot be shrunk,
 *            whoever compressed the body chose it
 *
 * The reservation allows 8 KiB for zlib's state struct, as nginx does (a
 * zlib that wants more falls back to the arena).  The level does not change
 * the memory, only speed against ratio.
 */
#ifndef LEGATE_HTTP_CODEC_H
#define LEGATE_HTTP_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/arena.h"

typedef enum lg_codec_kind {
    LG_CODEC_GZIP_ENCODE = 1,   /* compress into one gzip member (RFC 1952) */
    LG_CODEC_BR_ENCODE   = 3,   /* brotli (RFC 7932), when built with it */
    LG_CODEC_ZSTD_ENCODE = 4,   /* zstandard frame (RFC 8878), when built with it */
    LG_CODEC_GZIP_DECODE = 2,   /* gunzip: one or more gzip members, or one
                                   zlib stream (RFC 1950, which is what
                                   "Content-Encoding: deflate" means),
                                   told apart by the first byte; raw deflate
                                   is refused */
} lg_codec_kind_t;

/* lg_codec_run() flags */
#define LG_CODEC_FLUSH  0x1     /* encode: Z_SYNC_FLUSH, all input so far
                                   becomes decodable by the client (streamed
                                   responses, server-sent events); costs 5+
                                   bytes each time.  decode: no effect, the
                                   decoder never holds output back */
#define LG_CODEC_FINISH 0x2     /* this is the end of the input: encode
                                   writes the gzip trailer; decode reports
                                   LG_CODEC_ETRUNC if the stream is cut */

/* lg_codec_run() / lg_codec_init() errors; the codec keeps the first one. */
enum lg_codec_rc {
    LG_CODEC_ERROR     = -1,    /* corrupt compressed data (bad header,
                                   distance, CRC or length), or zlib refused */
    LG_CODEC_EBOMB     = -2,    /* decode: output passed params.max_out */
    LG_CODEC_ETRAILING = -3,    /* decode: bytes after the last member that
                                   do not start another gzip member */
    LG_CODEC_ETRUNC    = -4,    /* decode: FINISH inside the stream */
    LG_CODEC_ENOMEM    = -5,    /* the arena refused (its limit) */
    LG_CODEC_EINVAL    = -6,    /* misuse: bad kind or params, codec not
                                   live, input after the end of an encode */
};

#define LG_CODEC_DEFAULT_LEVEL    6
#define LG_CODEC_DEFAULT_WBITS    15
#define LG_CODEC_DEFAULT_MEMLEVEL 8

/* Tuning; all zero (or a NULL pointer) means the defaults. */
typedef struct lg_codec_params {
    int      level;             /* encode: 1 fastest .. 9 smallest; 0 = 6 */
    int      wbits;             /* encode: window 2^wbits, 9..15; 0 = 15 */
    int      memlevel;          /* encode: hash and buffer size, 1..9; 0 = 8 */
    uint64_t length_hint;       /* encode: body length if known, else 0; a
                                   short body gets a smaller window and
                                   memlevel (nginx's rule): less memory for
                                   about the same output size */
    uint64_t max_out;           /* decode: the most output bytes allowed,
                                   0 = no limit (bomb defence) */
} lg_codec_params_t;

struct lg_codec_z;              /* private: zlib stream and its allocator */

typedef struct lg_codec {
    uint32_t           magic;       /* LG_CODEC_MAGIC while live, else 0 */
    lg_codec_kind_t    kind;
    struct lg_codec_z *zs;          /* arena: zlib state */
    void              *more;        /* malloc: the brotli or zstd encoder (codec_brzstd.c) */
    size_t             more_mem;    /* what it allocated, as far as we can tell */
    uint64_t           max_out;     /* decode: from params, 0 = none */
    uint64_t           total_in;    /* out: bytes consumed */
    uint64_t           total_out;   /* out: bytes produced */
    int                err;         /* sticky lg_codec_rc, 0 = none */
    int                done;        /* out: encode: the trailer is out;
                                       decode: the input so far ends at the
                                       end of a member (another may follow) */
    int                finishing;   /* FINISH was passed */
    int                started;     /* decode: first input byte seen */
    int                zlib_wrap;   /* decode: a zlib stream, not gzip */
    int                member_end;  /* decode: between members */
    unsigned           members;     /* decode: gzip members started */
} lg_codec_t;

/*
 * Set up c (any prior contents are ignored).  Returns 0, LG_CODEC_EINVAL or
 * LG_CODEC_ENOMEM; on failure c is left ended (lg_codec_end() is harmless).
 * Takes lg_codec_memory(kind, p) bytes from `a` in one allocation, now, and
 * nothing later: an arena whose limit allows that much more is enough.  c
 * holds no pointer to itself and may be moved while live; the arena must
 * outlive it (until lg_codec_end()).
 */
int     lg_codec_init(lg_codec_t *c, lg_codec_kind_t kind,
                      const lg_codec_params_t *p, lg_arena_t *a);

/*
 * Consume from in[0..in_len) (how much: *in_used) and produce into
 * out[0..out_len).  Returns the bytes written to out, or a negative
 * lg_codec_rc (then c is dead: every later call returns the same error).
 *
 * A return below out_len means all the input was consumed and, with FLUSH
 * or FINISH, that everything up to that point has been produced.  A return
 * of exactly out_len means there may be more: write the output out and call
 * again with the rest of the input (and the same flags) until the return is
 * below out_len.
 *
 * Once FINISH has been given it stays in force.  Encoding sets c->done when
 * the trailer is out; any input after that is LG_CODEC_EINVAL.  Decoding
 * sets c->done at the end of each member, accepts further gzip members after
 * it (as gzip(1) does), and reports other bytes as LG_CODEC_ETRAILING; an
 * empty input with FINISH is an empty body, not an error.
 */
ssize_t lg_codec_run(lg_codec_t *c, const char *in, size_t in_len,
                     size_t *in_used, char *out, size_t out_len, int flags);

/* Release the zlib state; idempotent, safe on a zeroed or failed codec. */
void    lg_codec_end(lg_codec_t *c);

/* Bytes of the reservation in use: zlib's buffers and state (the decoder
 * takes its window at the first output). */
size_t  lg_codec_mem(const lg_codec_t *c);

/* Upper bound on what one codec takes from its arena: for sizing arenas and
 * for documentation.  p as for lg_codec_init(); 0 for an unknown kind. */
size_t  lg_codec_memory(lg_codec_kind_t kind, const lg_codec_params_t *p);

/* "corrupt compressed data", "truncated compressed data"...: for logs. */
const char *lg_codec_strerror(int rc);
const char *lg_codec_kind_name(lg_codec_kind_t kind);

#endif

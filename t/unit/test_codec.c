/*
 * Unit tests for src/http/codec.c and src/http/negotiate.c.
 *
 * Compression round trips are table driven: each size is fed whole, one byte
 * at a time (small sizes) and in random pieces, with and without a FLUSH
 * after every piece, into output rooms of random size so that the "call
 * again while the output is full" path runs too.  Every output is checked
 * three ways: zlib's own inflate, our decoder (random pieces again), and
 * gzip(1) itself (`gunzip -t`, `gunzip -c | cmp`).  With FLUSH, an
 * independent inflate follows the output after every piece and must have
 * decoded exactly the input so far.
 *
 * Accept-Encoding cases are one table line each, placed right before a
 * PROT_NONE page as in test_parse.c.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#define ZLIB_CONST
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "core/arena.h"
#include "http/negotiate.h"
#include "http/codec.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* ------------------------------------------------------------------ */
/* helpers                                                             */

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)      /* xorshift64* */
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ull;
}

static size_t rng_below(rng_t *r, size_t n)
{
    return (size_t)(rng_next(r) % n);
}

/* Pseudo-random text-like bytes: words, numbers, markup, newlines. */
static char *gen_text(size_t n, uint64_t seed)
{
    static const char *words[] = {
        "the", "proxy", "legate", "request", "response", "header", "body",
        "<div class=\"item\">", "</div>", "<a href=\"/path/to/page\">",
        "</a>", "connection", "keep-alive", "gzip", "upstream", "cache",
        "<li>", "</li>", "and", "of", "to", "in", "is", "with", "for",
        "Content-Type", "text/html", "charset=utf-8", "quick", "brown",
    };
    rng_t r = { seed | 1 };
    char *p = malloc(n + 1);
    size_t o = 0;

    cr_assert(p);
    while (o < n) {
        char tmp[64];
        size_t k = rng_below(&r, 10);
        int len;
        if (k == 0)
            len = snprintf(tmp, sizeof(tmp), "%llu",
                           (unsigned long long)(rng_next(&r) % 100000));
        else if (k == 1)
            len = snprintf(tmp, sizeof(tmp), "\n");
        else
            len = snprintf(tmp, sizeof(tmp), "%s ",
                           words[rng_below(&r, ARRAY_SIZE(words))]);
        size_t c = (size_t)len < n - o ? (size_t)len : n - o;
        memcpy(p + o, tmp, c);
        o += c;
    }
    return p;
}

typedef struct {
    char   *p;
    size_t  len, cap;
} sink_t;

static char *sink_room(sink_t *s, size_t n)
{
    if (s->cap - s->len < n) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n)
            cap *= 2;
        s->p = realloc(s->p, cap);
        cr_assert(s->p);
        s->cap = cap;
    }
    return s->p + s->len;
}

static void sink_free(sink_t *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

enum { FEED_WHOLE, FEED_ONE, FEED_RANDOM };

static size_t feed_piece(int feed, rng_t *r, size_t left)
{
    size_t n;

    if (feed == FEED_WHOLE)
        return left;
    if (feed == FEED_ONE)
        n = 1;
    else if (rng_below(r, 4) == 0)
        n = 1 + rng_below(r, 16);
    else if (rng_below(r, 2) == 0)
        n = 1 + rng_below(r, 4096);
    else
        n = 1 + rng_below(r, 128 * 1024);
    return n < left ? n : left;
}

static size_t out_room(int feed, rng_t *r)
{
    if (feed == FEED_WHOLE)
        return 64 * KiB;
    if (feed == FEED_ONE || rng_below(r, 4) == 0)
        return 1 + rng_below(r, 64);
    return 1 + rng_below(r, 64 * KiB);
}

/* Follows a compressed stream with an independent inflate. */
typedef struct {
    z_stream z;
    char    *dec;
    size_t   cap, len;
    size_t   fed;               /* compressed bytes given so far */
} follow_t;

static void follow_init(follow_t *f, size_t n)
{
    memset(f, 0, sizeof(*f));
    cr_assert_eq(inflateInit2(&f->z, 15 + 16), Z_OK);
    f->cap = n + 1;             /* one more: overproduction shows */
    f->dec = malloc(f->cap);
    cr_assert(f->dec);
}

/* Everything compressed so far must decode to exactly in[0..n). */
static void follow_check(follow_t *f, const sink_t *s, const char *in, size_t n)
{
    f->z.next_in = (const Bytef *)s->p + f->fed;
    f->z.avail_in = (uInt)(s->len - f->fed);
    f->z.next_out = (Bytef *)f->dec + f->len;
    f->z.avail_out = (uInt)(f->cap - f->len);
    int rc = inflate(&f->z, Z_SYNC_FLUSH);
    cr_assert(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR,
              "inflate of flushed output: %d", rc);
    cr_assert_eq(f->z.avail_in, 0, "flushed output not fully decodable");
    f->fed = s->len;
    f->len = f->cap - f->z.avail_out;
    cr_assert_eq(f->len, n, "after FLUSH %zu bytes decodable, want %zu",
                 f->len, n);
    cr_assert(memcmp(f->dec, in, n) == 0, "flushed output decodes wrong");
}

static void follow_end(follow_t *f)
{
    inflateEnd(&f->z);
    free(f->dec);
}

/*
 * Run codec c over in[0..n): pieces per `feed`, `flags` after each piece,
 * FINISH with the last one, output appended to s.  Every call is repeated
 * while it fills the output room, as the pipe does.  With f, checks after
 * each piece that the output so far decodes to the input so far.  Returns 0
 * or the codec's error.
 */
static int run_codec(lg_codec_t *c, const char *in, size_t n, int feed,
                     int flags, rng_t *r, sink_t *s, follow_t *f)
{
    size_t off = 0;

    for (;;) {
        size_t piece = feed_piece(feed, r, n - off);
        int last = off + piece == n;
        int fl = flags | (last ? LG_CODEC_FINISH : 0);
        size_t p = 0;

        for (;;) {
            size_t room = out_room(feed, r), used;
            ssize_t k = lg_codec_run(c, in + off + p, piece - p, &used,
                                     sink_room(s, room), room, fl);
            if (k < 0)
                return (int)k;
            cr_assert(used <= piece - p);
            cr_assert((size_t)k <= room);
            p += used;
            s->len += (size_t)k;
            if ((size_t)k < room) {
                cr_assert_eq(p, piece, "short output but input left");
                break;
            }
        }
        off += piece;
        if (f)
            follow_check(f, s, in, off);
        if (last)
            return 0;
    }
}

/* gunzip with zlib's own inflate, in one go. */
static void check_zlib(const sink_t *gz, const char *in, size_t n)
{
    z_stream z;
    char *dec = malloc(n + 1);

    cr_assert(dec);
    memset(&z, 0, sizeof(z));
    cr_assert_eq(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (const Bytef *)gz->p;
    z.avail_in = (uInt)gz->len;
    z.next_out = (Bytef *)dec;
    z.avail_out = (uInt)(n + 1);
    cr_assert_eq(inflate(&z, Z_FINISH), Z_STREAM_END, "zlib: %s",
                 z.msg ? z.msg : "-");
    cr_assert_eq(z.avail_in, 0, "zlib: trailing bytes");
    cr_assert_eq(z.total_out, n);
    cr_assert(memcmp(dec, in, n) == 0);
    inflateEnd(&z);
    free(dec);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");

    cr_assert(fp, "%s", path);
    cr_assert_eq(fwrite(p, 1, n, fp), n);
    cr_assert_eq(fclose(fp), 0);
}

static void temp_path(char *buf, size_t len, const char *suffix)
{
    const char *dir = getenv("TMPDIR");

    snprintf(buf, len, "%s/lg_codec_XXXXXX%s", dir && *dir ? dir : "/tmp",
             suffix);
    int fd = mkstemps(buf, (int)strlen(suffix));
    cr_assert(fd >= 0, "mkstemps %s", buf);
    close(fd);
}

/* gzip(1) must accept the output and restore the input. */
static void check_gunzip(const sink_t *gz, const char *in, size_t n)
{
    char gzp[256], plain[256], cmd[700];

    temp_path(gzp, sizeof(gzp), ".gz");
    temp_path(plain, sizeof(plain), "");
    write_file(gzp, gz->p, gz->len);
    write_file(plain, in, n);
    snprintf(cmd, sizeof(cmd), "gunzip -t < '%s'", gzp);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(cmd, sizeof(cmd), "gunzip -c < '%s' | cmp -s - '%s'", gzp, plain);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    unlink(gzp);
    unlink(plain);
}

static void arena_for(lg_arena_t *a, lg_codec_kind_t kind,
                      const lg_codec_params_t *p)
{
    /* small blocks: every zlib buffer gets its own, so the limit is exact */
    lg_arena_init(a, 4096, lg_codec_memory(kind, p));
}

/* Our decoder over gz, random pieces, must give in[0..n). */
static void check_decoder(const sink_t *gz, const char *in, size_t n,
                          uint64_t seed)
{
    lg_arena_t a;
    lg_codec_t d;
    sink_t out = { 0 };
    rng_t r = { seed | 1 };

    arena_for(&a, LG_CODEC_GZIP_DECODE, NULL);
    cr_assert_eq(lg_codec_init(&d, LG_CODEC_GZIP_DECODE, NULL, &a), 0);
    int rc = run_codec(&d, gz->p, gz->len, FEED_RANDOM, 0, &r, &out, NULL);
    cr_assert_eq(rc, 0, "decode: %s", lg_codec_strerror(rc));
    cr_assert(d.done);
    cr_assert_eq(out.len, n);
    cr_assert(memcmp(out.p, in, n) == 0);
    cr_assert_eq(d.total_out, n);
    cr_assert_eq(d.total_in, gz->len);
    cr_assert_leq(lg_codec_mem(&d), lg_codec_memory(LG_CODEC_GZIP_DECODE, NULL));
    lg_codec_end(&d);
    sink_free(&out);
    lg_arena_destroy(&a);
}

/* Compress in[0..n) in one go; the caller frees out. */
static void gzip_buf(const char *in, size_t n, int level, sink_t *out)
{
    lg_arena_t a;
    lg_codec_t c;
    lg_codec_params_t p = { .level = level };
    rng_t r = { 1 };

    arena_for(&a, LG_CODEC_GZIP_ENCODE, &p);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, &p, &a), 0);
    cr_assert_eq(run_codec(&c, in, n, FEED_WHOLE, 0, &r, out, NULL), 0);
    cr_assert(c.done);
    lg_codec_end(&c);
    lg_arena_destroy(&a);
}

/* Decode gz[0..n) in pieces of `piece`, output limit max_out. */
static int gunzip_buf(const char *gz, size_t n, size_t piece, uint64_t max_out,
                      sink_t *out, lg_codec_t *d)
{
    lg_arena_t a;
    lg_codec_params_t p = { .max_out = max_out };
    size_t off = 0;
    int rc = 0;

    arena_for(&a, LG_CODEC_GZIP_DECODE, &p);
    cr_assert_eq(lg_codec_init(d, LG_CODEC_GZIP_DECODE, &p, &a), 0);
    do {
        size_t k = piece < n - off ? piece : n - off;
        int fl = off + k == n ? LG_CODEC_FINISH : 0;
        size_t used = 0;
        ssize_t w;
        do {
            off += used;
            k -= used;
            w = lg_codec_run(d, gz + off, k, &used, sink_room(out, 4096),
                             4096, fl);
            if (w < 0) {
                rc = (int)w;
                goto out;
            }
            out->len += (size_t)w;
        } while (w == 4096);
        off += used;
    } while (off < n);
out:
    lg_codec_end(d);
    lg_arena_destroy(&a);
    return rc;
}

/* ------------------------------------------------------------------ */
/* round trips                                                         */

typedef struct {
    size_t size;
    int    feed;
    int    flush;
} rt_case_t;

static const rt_case_t rt_cases[] = {
    { 0,        FEED_WHOLE, 0 }, { 0,        FEED_WHOLE, 1 },
    { 0,        FEED_RANDOM, 0 },
    { 1,        FEED_WHOLE, 0 }, { 1,        FEED_WHOLE, 1 },
    { 1,        FEED_ONE,   0 }, { 1,        FEED_ONE,   1 },
    { 100,      FEED_WHOLE, 0 }, { 100,      FEED_WHOLE, 1 },
    { 100,      FEED_ONE,   0 }, { 100,      FEED_ONE,   1 },
    { 100,      FEED_RANDOM, 0 }, { 100,     FEED_RANDOM, 1 },
    { 64 * KiB, FEED_WHOLE, 0 }, { 64 * KiB, FEED_WHOLE, 1 },
    { 64 * KiB, FEED_ONE,   0 }, { 64 * KiB, FEED_ONE,   1 },
    { 64 * KiB, FEED_RANDOM, 0 }, { 64 * KiB, FEED_RANDOM, 1 },
    { 1 * MiB,  FEED_WHOLE, 0 }, { 1 * MiB,  FEED_WHOLE, 1 },
    { 1 * MiB,  FEED_RANDOM, 0 }, { 1 * MiB, FEED_RANDOM, 1 },
    { 5 * MiB,  FEED_WHOLE, 0 }, { 5 * MiB,  FEED_WHOLE, 1 },
    { 5 * MiB,  FEED_RANDOM, 0 }, { 5 * MiB, FEED_RANDOM, 1 },
};

static const char *feed_name[] = { "whole", "1-byte", "random" };

ParameterizedTestParameters(codec, roundtrip)
{
    static size_t idx[ARRAY_SIZE(rt_cases)];

    for (size_t i = 0; i < ARRAY_SIZE(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, ARRAY_SIZE(idx));
}

ParameterizedTest(size_t *ip, codec, roundtrip)
{
    const rt_case_t *tc = &rt_cases[*ip];
    char *in = gen_text(tc->size, 42 + *ip);
    lg_arena_t a;
    lg_codec_t c;
    lg_codec_params_t p = { .level = 1 + (int)(*ip % 9) };
    sink_t gz = { 0 };
    follow_t f;
    rng_t r = { 7 + *ip };

    cr_log_info("size %zu, %s, flush %d, level %d", tc->size,
                feed_name[tc->feed], tc->flush, p.level);
    arena_for(&a, LG_CODEC_GZIP_ENCODE, &p);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, &p, &a), 0);
    if (tc->flush)
        follow_init(&f, tc->size);
    int rc = run_codec(&c, in, tc->size, tc->feed,
                       tc->flush ? LG_CODEC_FLUSH : 0, &r, &gz,
                       tc->flush ? &f : NULL);
    cr_assert_eq(rc, 0, "encode: %s", lg_codec_strerror(rc));
    cr_assert(c.done);
    cr_assert_eq(c.total_in, tc->size);
    cr_assert_eq(c.total_out, gz.len);
    cr_assert_leq(lg_codec_mem(&c), lg_codec_memory(LG_CODEC_GZIP_ENCODE, &p));
    cr_assert_leq(a.total, lg_codec_memory(LG_CODEC_GZIP_ENCODE, &p));
    if (tc->flush)
        follow_end(&f);

    /* after the end: no more input, nothing more to say */
    size_t used;
    char tmp[16];
    cr_assert_eq(lg_codec_run(&c, NULL, 0, &used, tmp, sizeof(tmp),
                              LG_CODEC_FINISH), 0);
    lg_codec_end(&c);
    lg_codec_end(&c);
    lg_arena_destroy(&a);

    check_zlib(&gz, in, tc->size);
    check_decoder(&gz, in, tc->size, 99 + *ip);
    check_gunzip(&gz, in, tc->size);
    sink_free(&gz);
    free(in);
}

/* ------------------------------------------------------------------ */
/* FLUSH for streamed responses                                        */

/* Server-sent events: each one flushed must be readable at once, by a
 * fresh decoder given only the output so far. */
Test(codec, flush_sse)
{
    lg_arena_t a;
    lg_codec_t c;
    sink_t gz = { 0 }, all = { 0 };

    arena_for(&a, LG_CODEC_GZIP_ENCODE, NULL);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);

    /* without FLUSH a small event stays inside zlib */
    const char *first = "data: hello\n\n";
    size_t used;
    ssize_t k = lg_codec_run(&c, first, strlen(first), &used,
                             sink_room(&gz, 1024), 1024, 0);
    cr_assert_eq(used, strlen(first));
    cr_assert_leq(k, 10, "only the gzip header may come out, got %zd", k);
    gz.len += (size_t)k;
    memcpy(sink_room(&all, strlen(first)), first, strlen(first));
    all.len += strlen(first);

    for (int i = 0; i < 50; i++) {
        char ev[64];
        int n = snprintf(ev, sizeof(ev), "id: %d\ndata: {\"tick\": %d}\n\n", i, i * i);
        int fl = LG_CODEC_FLUSH | (i == 49 ? LG_CODEC_FINISH : 0);
        k = lg_codec_run(&c, ev, (size_t)n, &used, sink_room(&gz, 1024), 1024, fl);
        cr_assert_geq(k, 0);
        cr_assert_lt(k, 1024);
        cr_assert_eq(used, (size_t)n);
        gz.len += (size_t)k;
        memcpy(sink_room(&all, (size_t)n), ev, (size_t)n);
        all.len += (size_t)n;

        /* a fresh decoder over everything sent so far */
        follow_t f;
        follow_init(&f, all.len);
        follow_check(&f, &gz, all.p, all.len);
        follow_end(&f);
    }
    cr_assert(c.done);
    check_zlib(&gz, all.p, all.len);
    check_gunzip(&gz, all.p, all.len);

    /* a FLUSH with nothing new is harmless and writes nothing */
    lg_codec_end(&c);
    lg_arena_destroy(&a);
    sink_free(&gz);
    sink_free(&all);
}

Test(codec, flush_twice_writes_nothing)
{
    lg_arena_t a;
    lg_codec_t c;
    char out[256];
    size_t used;

    arena_for(&a, LG_CODEC_GZIP_ENCODE, NULL);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);
    cr_assert_gt(lg_codec_run(&c, "abc", 3, &used, out, sizeof(out),
                              LG_CODEC_FLUSH), 0);
    cr_assert_eq(lg_codec_run(&c, NULL, 0, &used, out, sizeof(out),
                              LG_CODEC_FLUSH), 0);
    cr_assert_eq(lg_codec_run(&c, NULL, 0, &used, out, sizeof(out), 0), 0);
    lg_codec_end(&c);
    lg_arena_destroy(&a);
}

/* FINISH into a 1-byte room, many times over: the trailer drains. */
Test(codec, finish_drains_one_byte_at_a_time)
{
    lg_arena_t a;
    lg_codec_t c;
    sink_t gz = { 0 };
    char *in = gen_text(20000, 5);
    size_t off = 0, used;
    ssize_t k;

    arena_for(&a, LG_CODEC_GZIP_ENCODE, NULL);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);
    k = lg_codec_run(&c, in, 20000, &used, sink_room(&gz, 1), 1, 0);
    cr_assert_geq(k, 0);
    gz.len += (size_t)k;
    off = used;
    do {
        k = lg_codec_run(&c, in + off, 20000 - off, &used, sink_room(&gz, 1), 1,
                         LG_CODEC_FINISH);
        cr_assert_geq(k, 0);
        gz.len += (size_t)k;
        off += used;
    } while (k == 1);
    cr_assert_eq(off, 20000);
    cr_assert(c.done);
    check_zlib(&gz, in, 20000);
    lg_codec_end(&c);
    lg_arena_destroy(&a);
    sink_free(&gz);
    free(in);
}

/* The struct may move while live: the pipe that holds it may be copied. */
Test(codec, moved_while_live)
{
    lg_arena_t a;
    lg_codec_t c1, c2;
    sink_t gz = { 0 };
    char *in = gen_text(50000, 8);
    size_t used;
    ssize_t k;

    arena_for(&a, LG_CODEC_GZIP_ENCODE, NULL);
    cr_assert_eq(lg_codec_init(&c1, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);
    k = lg_codec_run(&c1, in, 25000, &used, sink_room(&gz, 65536), 65536, 0);
    cr_assert_geq(k, 0);
    cr_assert_eq(used, 25000);
    gz.len += (size_t)k;
    memcpy(&c2, &c1, sizeof(c1));
    memset(&c1, 0xa5, sizeof(c1));
    k = lg_codec_run(&c2, in + 25000, 25000, &used, sink_room(&gz, 65536),
                     65536, LG_CODEC_FINISH);
    cr_assert_geq(k, 0);
    gz.len += (size_t)k;
    cr_assert(c2.done);
    check_zlib(&gz, in, 50000);
    lg_codec_end(&c2);
    lg_arena_destroy(&a);
    sink_free(&gz);
    free(in);
}

/* ------------------------------------------------------------------ */
/* decoding: bombs, garbage, truncation                                */

/* 100 MiB of zeros, compressed as a stream so that no 100 MiB buffer. */
static void gzip_zeros(size_t n, sink_t *gz)
{
    static const char zeros[64 * 1024];
    lg_arena_t a;
    lg_codec_t c;
    lg_codec_params_t p = { .level = 9 };

    arena_for(&a, LG_CODEC_GZIP_ENCODE, &p);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, &p, &a), 0);
    for (size_t off = 0; off < n; ) {
        size_t piece = n - off < sizeof(zeros) ? n - off : sizeof(zeros);
        int fl = off + piece == n ? LG_CODEC_FINISH : 0;
        size_t p_off = 0, used;
        ssize_t k;
        do {
            k = lg_codec_run(&c, zeros + p_off, piece - p_off, &used,
                             sink_room(gz, 4096), 4096, fl);
            cr_assert_geq(k, 0);
            gz->len += (size_t)k;
            p_off += used;
        } while (k == 4096);
        off += piece;
    }
    cr_assert(c.done);
    lg_codec_end(&c);
    lg_arena_destroy(&a);
}

Test(codec, gzip_bomb_stops_at_max_out)
{
    sink_t gz = { 0 };
    lg_arena_t a;
    lg_codec_t d;
    lg_codec_params_t p = { .max_out = 10 * MiB };
    char out[32 * 1024];
    uint64_t produced = 0;
    size_t off = 0;
    ssize_t k = 0;

    gzip_zeros(100 * MiB, &gz);
    cr_log_info("100 MiB of zeros -> %zu bytes of gzip", gz.len);
    cr_assert_lt(gz.len, 200 * KiB);

    arena_for(&a, LG_CODEC_GZIP_DECODE, &p);
    cr_assert_eq(lg_codec_init(&d, LG_CODEC_GZIP_DECODE, &p, &a), 0);
    while (off < gz.len) {
        size_t used;
        k = lg_codec_run(&d, gz.p + off, gz.len - off, &used, out, sizeof(out),
                         LG_CODEC_FINISH);
        off += used;
        if (k < 0)
            break;
        produced += (uint64_t)k;
        cr_assert_leq(produced, p.max_out);
    }
    cr_assert_eq(k, LG_CODEC_EBOMB, "got %zd (%s)", k, lg_codec_strerror((int)k));
    cr_assert_leq(d.total_out, p.max_out + sizeof(out));
    cr_assert_lt(off, gz.len / 5, "stopped early in the input");
    cr_assert_leq(lg_codec_mem(&d), lg_codec_memory(LG_CODEC_GZIP_DECODE, &p));
    cr_assert_leq(a.total, lg_codec_memory(LG_CODEC_GZIP_DECODE, &p));
    cr_log_info("stopped after %llu bytes out, %zu in; zlib memory %zu bytes",
                (unsigned long long)d.total_out, off, lg_codec_mem(&d));

    /* the error sticks */
    size_t used;
    cr_assert_eq(lg_codec_run(&d, gz.p + off, gz.len - off, &used, out,
                              sizeof(out), 0), LG_CODEC_EBOMB);
    lg_codec_end(&d);
    lg_arena_destroy(&a);
    sink_free(&gz);
}

Test(codec, max_out_is_inclusive)
{
    sink_t gz = { 0 }, out = { 0 };
    lg_codec_t d;

    gzip_zeros(MiB, &gz);
    cr_assert_eq(gunzip_buf(gz.p, gz.len, gz.len, MiB, &out, &d), 0);
    cr_assert_eq(out.len, MiB);
    out.len = 0;
    cr_assert_eq(gunzip_buf(gz.p, gz.len, 100, MiB - 1, &out, &d),
                 LG_CODEC_EBOMB);
    sink_free(&gz);
    sink_free(&out);
}

Test(codec, multi_member)
{
    sink_t g1 = { 0 }, g2 = { 0 }, out = { 0 };
    lg_codec_t d;

    gzip_buf("hello, ", 7, 6, &g1);
    gzip_buf("world", 5, 1, &g2);
    memcpy(sink_room(&g1, g2.len), g2.p, g2.len);
    g1.len += g2.len;
    for (size_t piece = 1; piece <= g1.len; piece++) {
        out.len = 0;
        cr_assert_eq(gunzip_buf(g1.p, g1.len, piece, 0, &out, &d), 0,
                     "piece %zu", piece);
        cr_assert_eq(out.len, 12);
        cr_assert(memcmp(out.p, "hello, world", 12) == 0);
        cr_assert_eq(d.members, 2);
        cr_assert(d.done);
    }
    sink_free(&g1);
    sink_free(&g2);
    sink_free(&out);
}

Test(codec, trailing_garbage)
{
    static const char *tails[] = {
        "x", "garbage", "\0", "\x1f", "\x1f\x8a", "\n", "\x1fx",
    };
    sink_t gz = { 0 }, out = { 0 };
    lg_codec_t d;

    gzip_buf("payload", 7, 6, &gz);
    size_t base = gz.len;
    for (size_t i = 0; i < ARRAY_SIZE(tails); i++) {
        size_t tl = strlen(tails[i]) ? strlen(tails[i]) : 1;
        gz.len = base;
        memcpy(sink_room(&gz, tl), tails[i], tl);
        gz.len += tl;
        for (size_t piece = 1; piece <= gz.len; piece++) {
            out.len = 0;
            int rc = gunzip_buf(gz.p, gz.len, piece, 0, &out, &d);
            /* a lone 0x1f at the end is a member cut short */
            int want = i == 3 ? LG_CODEC_ETRUNC : LG_CODEC_ETRAILING;
            cr_assert_eq(rc, want, "tail %zu piece %zu: %s", i, piece,
                         lg_codec_strerror(rc));
        }
    }
    sink_free(&gz);
    sink_free(&out);
}

Test(codec, truncated)
{
    sink_t gz = { 0 }, out = { 0 };
    char *in = gen_text(3000, 3);
    lg_codec_t d;

    gzip_buf(in, 3000, 6, &gz);
    for (size_t n = 1; n < gz.len; n++) {
        out.len = 0;
        int rc = gunzip_buf(gz.p, n, 1 + n % 7, 0, &out, &d);
        cr_assert_eq(rc, LG_CODEC_ETRUNC, "cut at %zu: %s", n,
                     lg_codec_strerror(rc));
        cr_assert(memcmp(out.p, in, out.len) == 0);
    }
    /* an empty body is an empty body */
    out.len = 0;
    cr_assert_eq(gunzip_buf(gz.p, 0, 1, 0, &out, &d), 0);
    cr_assert_eq(out.len, 0);
    sink_free(&gz);
    sink_free(&out);
    free(in);
}

/*
 * Every single-byte corruption is an error or decodes to the original, never
 * to something else, and never crashes.  Some bits carry no meaning (the
 * FTEXT flag, MTIME, XFL and OS in the header, bits that deflate ignores), so
 * "always an error" would be wrong; but the CRC-32 and length in the trailer
 * make wrong output an error.
 */
Test(codec, corrupted)
{
    static const unsigned char masks[] = { 0x01, 0x10, 0x80, 0xff };
    sink_t gz = { 0 }, out = { 0 };
    char *in = gen_text(4000, 4);
    lg_codec_t d;
    size_t errors = 0, tries = 0;

    gzip_buf(in, 4000, 6, &gz);
    for (size_t i = 0; i < gz.len; i++) {
        for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
            gz.p[i] ^= (char)masks[m];
            out.len = 0;
            int rc = gunzip_buf(gz.p, gz.len, 1000, 0, &out, &d);
            tries++;
            if (rc < 0)
                errors++;
            else
                cr_assert(out.len == 4000 && memcmp(out.p, in, 4000) == 0,
                          "byte %zu ^ %02x decoded to something else", i,
                          masks[m]);
            if (i >= 10 && i < gz.len - 8 && masks[m] == 0xff)
                cr_assert_lt(rc, 0, "byte %zu ^ ff decoded", i);
            gz.p[i] ^= (char)masks[m];
        }
    }
    cr_log_info("%zu of %zu corruptions detected", errors, tries);
    cr_assert_geq(errors * 100, tries * 95);
    sink_free(&gz);
    sink_free(&out);
    free(in);
}

Test(codec, random_garbage)
{
    rng_t r = { 12345 };
    sink_t out = { 0 };
    lg_codec_t d;
    char buf[2048];

    for (int i = 0; i < 2000; i++) {
        size_t n = 1 + rng_below(&r, sizeof(buf));
        for (size_t k = 0; k < n; k++)
            buf[k] = (char)rng_next(&r);
        if (i % 3 == 0) {               /* a valid gzip header, then noise */
            memcpy(buf, "\x1f\x8b\x08\x00\0\0\0\0\0\x03", n < 10 ? n : 10);
        } else if (i % 3 == 1 && n >= 2) { /* a valid zlib header, then noise */
            buf[0] = 0x78;
            buf[1] = (char)0x9c;
        }
        out.len = 0;
        int rc = gunzip_buf(buf, n, 1 + rng_below(&r, 300), 0, &out, &d);
        cr_assert_lt(rc, 0, "case %d decoded", i);
    }
    sink_free(&out);
}

Test(codec, zlib_wrapped_deflate)
{
    char *in = gen_text(10000, 6);
    unsigned char z[12000];
    uLongf zl = sizeof(z);
    sink_t out = { 0 };
    lg_codec_t d;

    cr_assert_eq(compress2(z, &zl, (const Bytef *)in, 10000, 6), Z_OK);
    cr_assert_eq(gunzip_buf((char *)z, zl, 333, 0, &out, &d), 0);
    cr_assert_eq(out.len, 10000);
    cr_assert(memcmp(out.p, in, 10000) == 0);

    /* a zlib stream is one stream: nothing may follow */
    memcpy(z + zl, "\x1f\x8b", 2);
    out.len = 0;
    cr_assert_eq(gunzip_buf((char *)z, zl + 2, 333, 0, &out, &d),
                 LG_CODEC_ETRAILING);

    /* raw deflate (no wrapper) is refused */
    z_stream s;
    memset(&s, 0, sizeof(s));
    cr_assert_eq(deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    s.next_in = (const Bytef *)in;
    s.avail_in = 10000;
    s.next_out = z;
    s.avail_out = sizeof(z);
    cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
    out.len = 0;
    cr_assert_eq(gunzip_buf((char *)z, s.total_out, 333, 0, &out, &d),
                 LG_CODEC_ERROR);
    deflateEnd(&s);
    sink_free(&out);
    free(in);
}

/* ------------------------------------------------------------------ */
/* memory, parameters, misuse                                          */

Test(codec, memory_per_stream)
{
    static const struct {
        lg_codec_kind_t kind;
        lg_codec_params_t p;
    } cases[] = {
        { LG_CODEC_GZIP_ENCODE, { .level = 1 } },
        { LG_CODEC_GZIP_ENCODE, { .level = 6 } },
        { LG_CODEC_GZIP_ENCODE, { .level = 9 } },
        { LG_CODEC_GZIP_ENCODE, { .wbits = 13, .memlevel = 6 } },
        { LG_CODEC_GZIP_ENCODE, { .wbits = 9, .memlevel = 1 } },
        { LG_CODEC_GZIP_ENCODE, { .length_hint = 1000 } },
        { LG_CODEC_GZIP_ENCODE, { .length_hint = 100000 } },
        { LG_CODEC_GZIP_DECODE, { 0 } },
    };
    char *in = gen_text(200000, 9);

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const lg_codec_params_t *p = &cases[i].p;
        size_t bound = lg_codec_memory(cases[i].kind, p);
        lg_arena_t a;
        lg_codec_t c;
        sink_t gz = { 0 }, out = { 0 };
        rng_t r = { i + 1 };
        size_t n = p->length_hint ? p->length_hint : 200000;

        arena_for(&a, cases[i].kind, p);
        cr_assert_eq(lg_codec_init(&c, cases[i].kind, p, &a), 0, "case %zu", i);
        size_t at_init = lg_codec_mem(&c);
        if (cases[i].kind == LG_CODEC_GZIP_ENCODE) {
            cr_assert_eq(run_codec(&c, in, n, FEED_RANDOM, 0, &r, &gz, NULL), 0);
            check_zlib(&gz, in, n);
        } else {
            gzip_buf(in, n, 6, &gz);
            cr_assert_eq(run_codec(&c, gz.p, gz.len, FEED_RANDOM, 0, &r, &out,
                                   NULL), 0);
            cr_assert_eq(out.len, n);
        }
        cr_log_info("%s level %d wbits %d memlevel %d hint %llu: %zu bytes at "
                    "init, %zu after, bound %zu", lg_codec_kind_name(cases[i].kind),
                    p->level, p->wbits, p->memlevel,
                    (unsigned long long)p->length_hint, at_init,
                    lg_codec_mem(&c), bound);
        cr_assert_leq(lg_codec_mem(&c), bound, "case %zu", i);
        cr_assert_leq(a.total, bound, "case %zu", i);
        /* the bound is tight: within 8 KiB of the real use */
        cr_assert_geq(lg_codec_mem(&c) + 8192, bound, "case %zu", i);
        lg_codec_end(&c);
        lg_arena_destroy(&a);
        sink_free(&gz);
        sink_free(&out);
    }
    /* the documented figures */
    cr_assert_geq(lg_codec_memory(LG_CODEC_GZIP_ENCODE, NULL), 256 * KiB);
    cr_assert_leq(lg_codec_memory(LG_CODEC_GZIP_ENCODE, NULL), 265 * KiB);
    cr_assert_leq(lg_codec_memory(LG_CODEC_GZIP_DECODE, NULL), 41 * KiB);
    free(in);
}

Test(codec, arena_too_small)
{
    lg_arena_t a;
    lg_codec_t c;

    lg_arena_init(&a, 4096, lg_codec_memory(LG_CODEC_GZIP_ENCODE, NULL) / 2);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a),
                 LG_CODEC_ENOMEM);
    lg_codec_end(&c);
    lg_codec_end(&c);
    lg_arena_destroy(&a);

    /* everything is reserved at init: the decoder cannot fail later */
    lg_arena_init(&a, 4096, 12 * 1024);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_DECODE, NULL, &a),
                 LG_CODEC_ENOMEM);
    lg_codec_end(&c);
    lg_arena_destroy(&a);

    /* exactly lg_codec_memory() is enough, with blocks large or small */
    static const size_t blocks[] = { 256, 4096, 64 * 1024, 1024 * 1024 };
    for (size_t i = 0; i < ARRAY_SIZE(blocks); i++) {
        for (int kind = LG_CODEC_GZIP_ENCODE; kind <= LG_CODEC_GZIP_DECODE; kind++) {
            size_t need = lg_codec_memory((lg_codec_kind_t)kind, NULL);
            lg_arena_init(&a, blocks[i], need > blocks[i] ? need : blocks[i]);
            cr_assert_eq(lg_codec_init(&c, (lg_codec_kind_t)kind, NULL, &a), 0,
                         "block %zu kind %d", blocks[i], kind);
            cr_assert_leq(lg_codec_mem(&c), need);
            lg_codec_end(&c);
            lg_arena_destroy(&a);
        }
    }
}

Test(codec, bad_params)
{
    static const lg_codec_params_t bad[] = {
        { .level = 10 }, { .level = -1 }, { .wbits = 8 }, { .wbits = 16 },
        { .memlevel = 10 }, { .memlevel = -2 },
    };
    lg_arena_t a;
    lg_codec_t c;

    lg_arena_init(&a, 4096, 0);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, &bad[i], &a),
                     LG_CODEC_EINVAL, "case %zu", i);
        cr_assert_eq(lg_codec_memory(LG_CODEC_GZIP_ENCODE, &bad[i]), 0);
        lg_codec_end(&c);
    }
    cr_assert_eq(lg_codec_init(&c, (lg_codec_kind_t)0, NULL, &a), LG_CODEC_EINVAL);
    cr_assert_eq(lg_codec_memory((lg_codec_kind_t)0, NULL), 0);
    lg_arena_destroy(&a);
}

Test(codec, misuse)
{
    lg_arena_t a;
    lg_codec_t c;
    char out[64];
    size_t used = 99;

    memset(&c, 0, sizeof(c));
    lg_codec_end(&c);                           /* zeroed: harmless */
    cr_assert_eq(lg_codec_run(&c, "x", 1, &used, out, sizeof(out), 0),
                 LG_CODEC_EINVAL);
    cr_assert_eq(used, 0);

    lg_arena_init(&a, 4096, 0);
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);
    cr_assert_gt(lg_codec_run(&c, "x", 1, &used, out, sizeof(out),
                              LG_CODEC_FINISH), 0);
    cr_assert(c.done);
    cr_assert_eq(lg_codec_run(&c, "y", 1, &used, out, sizeof(out), 0),
                 LG_CODEC_EINVAL);                     /* input after the end */
    lg_codec_end(&c);
    cr_assert_eq(lg_codec_run(&c, NULL, 0, &used, out, sizeof(out), 0),
                 LG_CODEC_EINVAL);                     /* after end */
    lg_codec_end(&c);

    /* new input after FINISH, before the trailer is out */
    cr_assert_eq(lg_codec_init(&c, LG_CODEC_GZIP_ENCODE, NULL, &a), 0);
    cr_assert_eq(lg_codec_run(&c, "abc", 3, &used, out, 12, LG_CODEC_FINISH), 12);
    cr_assert_eq(used, 3);
    cr_assert(!c.done);
    cr_assert_eq(lg_codec_run(&c, "def", 3, &used, out, sizeof(out),
                              LG_CODEC_FINISH), LG_CODEC_EINVAL);
    lg_codec_end(&c);
    lg_arena_destroy(&a);

    cr_assert_str_eq(lg_codec_strerror(LG_CODEC_EBOMB),
                     "decompressed size over the limit");
    cr_assert_str_eq(lg_codec_kind_name(LG_CODEC_GZIP_DECODE), "gunzip");
}

/* ------------------------------------------------------------------ */
/* Accept-Encoding                                                     */

#define G   LG_ENC_BIT(LG_ENC_GZIP)
#define GB  (G | LG_ENC_BIT(LG_ENC_BR))
#define ALL LG_ENC_KNOWN

typedef struct {
    const char *value;          /* NULL: no Accept-Encoding field */
    unsigned    avail;
    lg_enc_t    want;
    int         gzip_ok;        /* lg_negotiate_gzip() */
    const char *norm;           /* lg_negotiate_normalise(..., LG_ENC_KNOWN) */
} ae_case_t;

static const ae_case_t ae_cases[] = {
    { "gzip",                           G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=0",                       G,   LG_ENC_IDENTITY, 0, "" },
    { "*",                              G,   LG_ENC_GZIP,     1, "zstd,br,gzip" },
    { "*;q=0, identity;q=0",            G,   LG_ENC_NONE,     0, "" },
    { "identity",                       G,   LG_ENC_IDENTITY, 0, "" },
    { "br;q=1, gzip;q=0.8",             G,   LG_ENC_GZIP,     1, "br,gzip" },
    { "br;q=1, gzip;q=0.8",             GB,  LG_ENC_BR,       1, "br,gzip" },
    { "GZIP",                           G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=0.000",                   G,   LG_ENC_IDENTITY, 0, "" },
    { "gzip;q=1.001",                   G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "",                               G,   LG_ENC_IDENTITY, 0, "" },
    { NULL,                             G,   LG_ENC_IDENTITY, 1, "" },  /* absent */
    { "x-gzip",                         G,   LG_ENC_GZIP,     1, "gzip" },
    { "X-Gzip;q=0.5",                   G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip, deflate, br",              G,   LG_ENC_GZIP,     1, "br,gzip" },
    { "gzip, deflate, br",              ALL, LG_ENC_BR,       1, "br,gzip" },
    { "gzip, deflate, br, zstd",        ALL, LG_ENC_ZSTD,     1, "zstd,br,gzip" },
    { "identity;q=0",                   G,   LG_ENC_NONE,     0, "" },
    { "*;q=0",                          G,   LG_ENC_NONE,     0, "" },
    { "*;q=0, gzip",                    G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=0.5, identity",           G,   LG_ENC_IDENTITY, 1, "" },
    { "gzip;q=0.5, identity;q=0.5",     G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=0.5",                     G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=0.001",                   G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=1.000",                   G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=1.",                      G,   LG_ENC_GZIP,     1, "gzip" },
    { "  gzip ;  q=0.5  ,  br ; q=0.9 ", ALL, LG_ENC_BR,      1, "br,gzip" },
    { "gzip\t;\tq=0.3",                 G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;Q=0.5",                     G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip;q=.5",                      G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;q=0.0001",                  G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;q=2",                       G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;q=",                        G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip; q = 0.5",                  G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;q=0.5;level=1",             G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;level=1",                   G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gz ip",                          G,   LG_ENC_IDENTITY, 0, "" },  /* dropped */
    { "gzip;q=1.001, br",               GB,  LG_ENC_BR,       0, "br" },
    { ",, gzip ,,",                     G,   LG_ENC_GZIP,     1, "gzip" },
    { "gzip, gzip;q=0",                 G,   LG_ENC_IDENTITY, 0, "" },  /* lowest */
    { "deflate",                        G,   LG_ENC_IDENTITY, 0, "" },
    { "compress, x-compress",           G,   LG_ENC_IDENTITY, 0, "" },
    { "br",                             G,   LG_ENC_IDENTITY, 0, "br" },
    { "br",                             GB,  LG_ENC_BR,       0, "br" },
    { "br;q=0.9, identity",             ALL, LG_ENC_IDENTITY, 0, "" },
    { "identity;q=0, br",               G,   LG_ENC_NONE,     0, "br" },
    { "gzip",                           0,   LG_ENC_IDENTITY, 1, "gzip" },  /* off */
    { "*;q=0.5, gzip;q=0",              G,   LG_ENC_IDENTITY, 0, "zstd,br" },
    { "*;q=0.5, gzip;q=0",              ALL, LG_ENC_ZSTD,     0, "zstd,br" },
    { "*, gzip;q=0.1",                  G,   LG_ENC_GZIP,     1, "zstd,br,gzip" },
    { "*, gzip;q=0.1",                  GB,  LG_ENC_BR,       1, "zstd,br,gzip" },
    { "gzip;q=0.8, br;q=0.8, zstd;q=0.8", GB, LG_ENC_BR,      1, "zstd,br,gzip" },
    { "gzip;q=0.9, br;q=0.8",           GB,  LG_ENC_GZIP,     1, "gzip,br" },
    { "zstd;q=0.1, gzip;q=0.2, br;q=0.3", ALL, LG_ENC_BR,     1, "br,gzip,zstd" },
    { "identity;q=0.001, gzip;q=0",     G,   LG_ENC_IDENTITY, 0, "" },
    { "\xffgzip, gzip\x7f",             G,   LG_ENC_IDENTITY, 0, "" },  /* not tchar */
    { "gzip;q=0 , *",                   G,   LG_ENC_IDENTITY, 0, "zstd,br" },
    { "*;q=0.3, identity;q=0.5",        G,   LG_ENC_IDENTITY, 1, "" },
};

ParameterizedTestParameters(accept, table)
{
    static size_t idx[ARRAY_SIZE(ae_cases)];

    for (size_t i = 0; i < ARRAY_SIZE(idx); i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, ARRAY_SIZE(idx));
}

/* The value, ending right before a PROT_NONE page. */
static const char *guarded(const char *s, char **map, size_t *map_len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = strlen(s);

    *map_len = 2 * pg;
    *map = mmap(NULL, *map_len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(*map != MAP_FAILED);
    cr_assert(mprotect(*map + pg, pg, PROT_NONE) == 0);
    return memcpy(*map + pg - n, s, n);
}

ParameterizedTest(size_t *ip, accept, table)
{
    const ae_case_t *tc = &ae_cases[*ip];
    const char *v = NULL, *show = tc->value ? tc->value : "(absent)";
    size_t len = 0, map_len = 0;
    char *map = NULL;

    if (tc->value) {
        v = guarded(tc->value, &map, &map_len);
        len = strlen(tc->value);
    }
    lg_enc_t got = lg_negotiate_choose(v, len, tc->avail);
    cr_assert_eq(got, tc->want, "[%s] avail %x: %s, want %s", show, tc->avail,
                 lg_enc_name(got), lg_enc_name(tc->want));
    cr_assert_eq(lg_negotiate_gzip(v, len), tc->gzip_ok, "[%s] accepts gzip", show);

    lg_accept_t ae;
    char norm[LG_ACCEPT_NORM_SIZE];
    lg_negotiate_init(&ae);
    if (v)
        lg_negotiate_add(&ae, v, len);
    size_t nl = lg_negotiate_normalise(&ae, LG_ENC_KNOWN, norm, sizeof(norm));
    cr_assert_str_eq(norm, tc->norm, "[%s] normalised", show);
    cr_assert_eq(nl, strlen(norm));

    /* the normalised form decides the choice for every available set */
    for (unsigned m = 0; m <= LG_ENC_KNOWN; m++) {
        if (m & ~LG_ENC_KNOWN)
            continue;
        lg_enc_t want = LG_ENC_IDENTITY, pick = lg_negotiate_pick(&ae, m);
        static const lg_enc_t all[] = { LG_ENC_GZIP, LG_ENC_BR, LG_ENC_ZSTD };
        const char *p = norm;
        while (*p) {
            size_t k = strcspn(p, ",");
            for (size_t e = 0; e < ARRAY_SIZE(all); e++)
                if (strlen(lg_enc_name(all[e])) == k &&
                    memcmp(p, lg_enc_name(all[e]), k) == 0 &&
                    (m & LG_ENC_BIT(all[e])) && want == LG_ENC_IDENTITY)
                    want = all[e];
            p += k + (p[k] == ',');
        }
        if (pick == LG_ENC_NONE)
            pick = LG_ENC_IDENTITY;     /* sends identity all the same */
        cr_assert_eq(pick, want, "[%s] mask %x: %s, key says %s", show, m,
                     lg_enc_name(pick), lg_enc_name(want));
    }
    if (map)
        munmap(map, map_len);
}

/* Several Accept-Encoding lines make one list. */
Test(accept, several_lines)
{
    lg_accept_t ae;
    char norm[LG_ACCEPT_NORM_SIZE];

    lg_negotiate_init(&ae);
    cr_assert_eq(lg_negotiate_pick(&ae, ALL), LG_ENC_IDENTITY);     /* absent */
    cr_assert(lg_negotiate_ok(&ae, LG_ENC_BR));
    lg_negotiate_add(&ae, "gzip;q=0.5", 10);
    lg_negotiate_add(&ae, "br", 2);
    cr_assert_eq(lg_negotiate_pick(&ae, ALL), LG_ENC_BR);
    cr_assert_eq(lg_negotiate_pick(&ae, G), LG_ENC_GZIP);
    cr_assert(!lg_negotiate_ok(&ae, LG_ENC_ZSTD));
    cr_assert(!lg_negotiate_ok(&ae, LG_ENC_NONE));
    lg_negotiate_add(&ae, "", 0);                                 /* adds nothing */
    lg_negotiate_normalise(&ae, LG_ENC_KNOWN, norm, sizeof(norm));
    cr_assert_str_eq(norm, "br,gzip");
    lg_negotiate_normalise(&ae, G, norm, sizeof(norm));
    cr_assert_str_eq(norm, "gzip");
}

Test(accept, normalise_truncates)
{
    lg_accept_t ae;
    char small[5];

    lg_negotiate_init(&ae);
    lg_negotiate_add(&ae, "*", 1);
    cr_assert_eq(lg_negotiate_normalise(&ae, LG_ENC_KNOWN, small, sizeof(small)),
                 strlen("zstd,br,gzip"));
    cr_assert_str_eq(small, "zstd");
    cr_assert_eq(lg_negotiate_normalise(&ae, LG_ENC_KNOWN, NULL, 0), 12);
}

Test(accept, names)
{
    cr_assert_str_eq(lg_enc_name(LG_ENC_GZIP), "gzip");
    cr_assert_str_eq(lg_enc_name(LG_ENC_BR), "br");
    cr_assert_str_eq(lg_enc_name(LG_ENC_ZSTD), "zstd");
    cr_assert_str_eq(lg_enc_name(LG_ENC_IDENTITY), "identity");
    cr_assert_str_eq(lg_enc_name(LG_ENC_NONE), "none");
    cr_assert(LG_ENC_BUILTIN & LG_ENC_BIT(LG_ENC_GZIP));
}

#if defined(LG_HAVE_BROTLI) || defined(LG_HAVE_ZSTD)
/* br and zstd: streamed in pieces with flushes, the memory per stream
 * bounded by the capped windows (printed for doc/legate.conf.5). */
static void more_round(lg_codec_kind_t kind, int level)
{
    lg_arena_t a;
    lg_arena_init(&a, 4096, 1 << 20);
    lg_codec_t c;
    lg_codec_params_t p = { 0 };
    p.level = level;
    cr_assert_eq(lg_codec_init(&c, kind, &p, &a), 0, "%s", lg_codec_kind_name(kind));
    size_t n = 1 << 20, total = 0;
    char *in = malloc(n), *out = malloc(2 * n);
    for (size_t i = 0; i < n; i++)
        in[i] = "abcdefghij klmnop\n"[(i * 7 + i / 13) % 18];
    for (size_t off = 0; off < n; off += 65536) {
        size_t used = 0;
        ssize_t r = lg_codec_run(&c, in + off, 65536, &used, out + total, 2 * n - total,
                                 off % (4 * 65536) == 0 ? LG_CODEC_FLUSH : 0);
        cr_assert_geq(r, 0);
        cr_assert_eq(used, 65536);
        total += (size_t)r;
    }
    size_t used = 0;
    ssize_t r = lg_codec_run(&c, "", 0, &used, out + total, 2 * n - total, LG_CODEC_FINISH);
    cr_assert_geq(r, 0);
    total += (size_t)r;
    cr_expect(c.done, "finished");
    cr_expect_lt(total, n / 4, "compresses");
    size_t mem = lg_codec_mem(&c);
    cr_log_info("%s level %d: 1 MiB -> %zu bytes, %zu KiB of state", lg_codec_kind_name(kind),
                level, total, mem / 1024);
    cr_expect_lt(mem, 6u << 20, "bounded memory per stream");
    size_t u2 = 0;
    cr_expect_eq(lg_codec_run(&c, "x", 1, &u2, out, 10, LG_CODEC_FINISH), LG_CODEC_EINVAL,
                 "input after the end");
    lg_codec_end(&c);
    lg_codec_end(&c);               /* idempotent */
    lg_arena_destroy(&a);
    free(in);
    free(out);
}
#endif

#ifdef LG_HAVE_BROTLI
Test(codec, brotli_streams_in_bounded_memory)
{
    for (int q = 0; q <= 6; q += 2)     /* the levels brotli_level allows */
        more_round(LG_CODEC_BR_ENCODE, q ? q : -1);
}
#endif

#ifdef LG_HAVE_ZSTD
Test(codec, zstd_streams_in_bounded_memory)
{
    for (int l = 1; l <= 6; l++)        /* the levels zstd_level allows */
        more_round(LG_CODEC_ZSTD_ENCODE, l);
}
#endif

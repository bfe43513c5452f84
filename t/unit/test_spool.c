/*
 * Unit tests of pipeline/spool.c: bytes come back in the order they went
 * in, through memory, the temporary file and its read buffer; a queue
 * starts over when read empty; a keep spool reads again from the start;
 * the bounds (memory, file, no file to be had) take fewer bytes, never
 * lose or reorder one.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/spool.h"

static char *bytes(size_t n, unsigned seed)
{
    char *p = malloc(n);
    cr_assert(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (char)(seed >> 16);
    }
    return p;
}

/* Read up to max bytes back in pieces of at most step; how many were read. */
static size_t drain(lg_spool_t *sp, char *out, size_t max, size_t step)
{
    size_t got = 0;
    while (got < max) {
        const char *at;
        ssize_t n = lg_spool_peek(sp, &at);
        cr_assert(n >= 0);
        if (n == 0)
            break;
        size_t k = (size_t)n < step ? (size_t)n : step;
        if (k > max - got)
            k = max - got;
        memcpy(out + got, at, k);
        lg_spool_consume(sp, k);
        got += k;
    }
    return got;
}

/* Append all of p (the spool must take it), in pieces of at most step. */
static void fill(lg_spool_t *sp, const char *p, size_t n, size_t step)
{
    for (size_t off = 0; off < n;) {
        size_t k = n - off < step ? n - off : step;
        size_t t = lg_spool_append(sp, p + off, k);
        cr_assert(t > 0, "the spool took nothing at %zu", off);
        off += t;
    }
}

Test(spool, memory_then_file_in_order)
{
    static const struct { size_t mem, n, in_step, out_step; } cases[] = {
        { 16384, 1000, 1000, 1000 },            /* memory only */
        { 16384, 300000, 7000, 4096 },          /* into the file, read back in steps */
        { 4096, 1 << 20, 65536, 65536 },        /* past LG_SPOOL_STEP reads and writes */
        { 65536, 200001, 1, 100000 },           /* one byte at a time in */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char *in = bytes(cases[c].n, (unsigned)c), *out = malloc(cases[c].n);
        lg_spool_t sp;
        lg_spool_init(&sp, cases[c].mem, INT64_MAX, "/tmp", "test", 0);
        fill(&sp, in, cases[c].n, cases[c].in_step);
        cr_expect_eq(lg_spool_pending(&sp), cases[c].n);
        cr_expect_eq(sp.fd >= 0, cases[c].n > cases[c].mem, "case %zu: file use", c);
        cr_expect_eq(drain(&sp, out, cases[c].n, cases[c].out_step), cases[c].n);
        cr_expect(memcmp(in, out, cases[c].n) == 0, "case %zu: bytes differ", c);
        /* a queue read empty starts over */
        cr_expect_eq(lg_spool_pending(&sp), 0);
        cr_expect_eq(sp.mem_len, 0);
        cr_expect_eq(sp.file_wpos, 0);
        lg_spool_free(&sp);
        lg_spool_free(&sp);             /* idempotent */
        cr_expect_eq(sp.fd, -1);
        free(in);
        free(out);
    }
}

Test(spool, interleaved_reads_and_writes_keep_the_order)
{
    size_t n = 3 << 20;
    char *in = bytes(n, 7), *out = malloc(n);
    lg_spool_t sp;
    lg_spool_init(&sp, 65536, INT64_MAX, "/tmp", "test", 0);
    size_t put = 0, got = 0;
    unsigned r = 1;
    while (got < n) {
        r = r * 1103515245u + 12345u;
        size_t k = (r >> 8) % 50000;
        if (put < n) {
            if (k > n - put)
                k = n - put;
            put += lg_spool_append(&sp, in + put, k);
        }
        r = r * 1103515245u + 12345u;
        got += drain(&sp, out + got, n - got, (r >> 8) % 40000 + 1);
    }
    cr_expect(memcmp(in, out, n) == 0);
    lg_spool_free(&sp);
    free(in);
    free(out);
}

Test(spool, keep_reads_again_from_the_start)
{
    size_t n = 100000;
    char *in = bytes(n, 3), *out = malloc(n);
    lg_spool_t sp;
    lg_spool_init(&sp, 16384, INT64_MAX, "/tmp", "test", 1);
    fill(&sp, in, n, 10000);
    for (int round = 0; round < 3; round++) {
        memset(out, 0, n);
        cr_expect_eq(drain(&sp, out, n, 5000 + (size_t)round * 3000), n);
        cr_expect(memcmp(in, out, n) == 0, "round %d", round);
        cr_expect_eq(lg_spool_pending(&sp), 0);
        lg_spool_rewind(&sp);
        cr_expect_eq(lg_spool_pending(&sp), n);
    }
    lg_spool_free(&sp);
    free(in);
    free(out);
}

Test(spool, bounds_take_fewer_bytes)
{
    char *in = bytes(200000, 5);
    lg_spool_t sp;
    /* no file: memory only */
    lg_spool_init(&sp, 16384, 0, "/tmp", "test", 0);
    cr_expect_eq(lg_spool_append(&sp, in, 20000), 16384);
    cr_expect_eq(lg_spool_append(&sp, in, 10), 0);
    cr_expect_eq(sp.fd, -1);
    lg_spool_free(&sp);
    /* a file of at most 32k */
    lg_spool_init(&sp, 16384, 32768, "/tmp", "test", 0);
    size_t took = 0, t;
    while ((t = lg_spool_append(&sp, in + took, 20000)) > 0)
        took += t;
    cr_expect_eq(took, 16384 + 32768);
    lg_spool_free(&sp);
    /* no directory to make it in: memory, then nothing (logged) */
    lg_spool_init(&sp, 16384, INT64_MAX, "/nonexistent/dir", "test", 0);
    cr_expect_eq(lg_spool_append(&sp, in, 20000), 16384);
    cr_expect(sp.no_file);
    cr_expect_eq(lg_spool_append(&sp, in, 10), 0);
    lg_spool_free(&sp);
    free(in);
}

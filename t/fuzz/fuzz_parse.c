/*
 * libFuzzer harness for src/http/parse.c.
 *
 * Input: one control byte, then the message.  Bit 7 of the control byte
 * picks small or large limits; bits 0-6 pick where the message is split for
 * the two-call feeding.  Every input goes through the request parser, the
 * response parser and the chunked decoder (keeping trailer sections), each fed whole and in two calls;
 * the two feedings must agree exactly, and every result must lie inside the
 * buffer.  Broken invariants abort().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       src/http/parse.c t/fuzz/fuzz_parse.c -o fuzz_parse
 *   ./fuzz_parse -max_total_time=60 CORPUS_COPY t/fuzz/corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"

#define MAX_HEADERS 100

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static const http_limits_t limits[2] = {
    { .max_line = 32,   .max_head = 256,   .max_headers = 4 },
    { .max_line = 8192, .max_head = 65536, .max_headers = MAX_HEADERS },
};

/* Exact-size heap copy, so that ASan sees any read past len. */
static char *dup_exact(const uint8_t *p, size_t n)
{
    char *b = malloc(n ? n : 1);

    CHECK(b != NULL);
    if (n)
        memcpy(b, p, n);
    return b;
}

static int in_buf(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static void check_headers(const http_header_t *h, size_t num, size_t max,
                          const char *buf, size_t head)
{
    CHECK(num <= max);
    for (size_t i = 0; i < num; i++) {
        CHECK(h[i].name_len > 0);
        CHECK(in_buf(h[i].name, h[i].name_len, buf, head));
        CHECK(in_buf(h[i].value, h[i].value_len, buf, head));
        CHECK(h[i].value > h[i].name + h[i].name_len);
        (void)http_name_eq(&h[i], "content-length");
        if (h[i].value_len)
            CHECK(h[i].value[0] != ' ' && h[i].value[0] != '\t'
                  && h[i].value[h[i].value_len - 1] != ' '
                  && h[i].value[h[i].value_len - 1] != '\t');
        for (size_t j = 0; j < h[i].value_len; j++)
            CHECK(h[i].value[j] != '\r' && h[i].value[j] != '\n'
                  && h[i].value[j] != '\0');
    }
}

static void run_request(const uint8_t *data, size_t n, size_t cut,
                           const http_limits_t *lim)
{
    http_header_t hdr[MAX_HEADERS];
    http_request_t r = { .headers = hdr };
    size_t scanned = 0;
    char *buf = dup_exact(data, n);

    ssize_t whole = http_parse_request(buf, n, &r, lim, &scanned);
    CHECK(whole >= HTTP_BAD_VERSION && whole <= (ssize_t)n && whole != 0);
    CHECK(scanned <= n);
    if (whole > 0) {
        size_t head = (size_t)whole;
        CHECK(head <= lim->max_head);
        CHECK(head >= 4 && memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
        CHECK(r.method_len > 0 && in_buf(r.method, r.method_len, buf, head));
        CHECK(r.target_len > 0 && in_buf(r.target, r.target_len, buf, head));
        CHECK(r.version == 10 || r.version == 11);
        check_headers(hdr, r.num_headers, lim->max_headers, buf, head);
    }
    if (whole == HTTP_AGAIN)
        CHECK(n <= lim->max_head);

    /* two calls: the prefix alone, then everything */
    char *pre = dup_exact(data, cut);
    scanned = 0;
    const char *where = pre;
    ssize_t rc = http_parse_request(pre, cut, &r, lim, &scanned);
    CHECK(scanned <= cut);
    if (rc == HTTP_AGAIN) {
        where = buf;
        rc = http_parse_request(buf, n, &r, lim, &scanned);
    }
    CHECK(rc == whole);
    if (rc > 0) {
        CHECK(in_buf(r.method, r.method_len, where, (size_t)rc));
        check_headers(hdr, r.num_headers, lim->max_headers, where, (size_t)rc);
    }

    free(pre);
    free(buf);
}

static void run_response(const uint8_t *data, size_t n, size_t cut,
                         const http_limits_t *lim)
{
    http_header_t hdr[MAX_HEADERS];
    http_response_t r = { .headers = hdr };
    size_t scanned = 0;
    char *buf = dup_exact(data, n);

    ssize_t whole = http_parse_response(buf, n, &r, lim, &scanned);
    CHECK(whole >= HTTP_BAD_VERSION && whole <= (ssize_t)n && whole != 0);
    CHECK(whole != HTTP_URI_TOO_LONG);
    if (whole > 0) {
        size_t head = (size_t)whole;
        CHECK(head <= lim->max_head);
        CHECK(r.status >= 100 && r.status <= 999);
        CHECK(r.version == 10 || r.version == 11);
        CHECK(in_buf(r.reason, r.reason_len, buf, head));
        check_headers(hdr, r.num_headers, lim->max_headers, buf, head);
    }

    char *pre = dup_exact(data, cut);
    scanned = 0;
    ssize_t rc = http_parse_response(pre, cut, &r, lim, &scanned);
    if (rc == HTTP_AGAIN)
        rc = http_parse_response(buf, n, &r, lim, &scanned);
    CHECK(rc == whole);

    free(pre);
    free(buf);
}

/* One decode call on an exact-size copy; payload appended to out. */
static ssize_t decode_piece(http_chunked_t *c, const uint8_t *p, size_t n,
                            char *out, size_t *out_total)
{
    char *buf = dup_exact(p, n);
    size_t got = (size_t)-1;
    int was_done = c->done;

    ssize_t rc = http_chunked_decode(c, buf, n, &got);
    CHECK(got <= n);
    CHECK(rc == HTTP_BAD || (rc >= 0 && (size_t)rc <= n));
    if (rc >= 0) {
        CHECK(got <= (size_t)rc);
        if (!c->done)
            CHECK((size_t)rc == n);
        if (was_done)
            CHECK(rc == 0 && got == 0);
        memcpy(out + *out_total, buf, got);
        *out_total += got;
    }
    free(buf);
    return rc;
}

static void run_chunked(const uint8_t *data, size_t n, size_t cut)
{
    char *out1 = malloc(n + 1), *out2 = malloc(n + 1);
    size_t len1 = 0, len2 = 0;
    http_chunked_t c1, c2;

    static char tr1[HTTP_CHUNKED_MAX_TRAILER], tr2[HTTP_CHUNKED_MAX_TRAILER];

    CHECK(out1 && out2);
    /* the trailer section is kept, the same whole or in two pieces */
    http_chunked_init(&c1);
    c1.tr = tr1;
    c1.tr_cap = sizeof(tr1);
    ssize_t whole = decode_piece(&c1, data, n, out1, &len1);

    http_chunked_init(&c2);
    c2.tr = tr2;
    c2.tr_cap = sizeof(tr2);
    ssize_t rc = decode_piece(&c2, data, cut, out2, &len2);
    if (rc >= 0 && !c2.done) {
        ssize_t rc2 = decode_piece(&c2, data + cut, n - cut, out2, &len2);
        rc = rc2 < 0 ? rc2 : rc + rc2;
    }
    CHECK(rc == whole);
    if (whole >= 0) {
        CHECK(c1.done == c2.done);
        CHECK(len1 == len2 && memcmp(out1, out2, len1) == 0);
        CHECK(c1.tr_len == c2.tr_len && memcmp(tr1, tr2, c1.tr_len) == 0);
        /* field lines, each ended by CRLF, none empty */
        if (c1.done && c1.tr_len) {
            CHECK(c1.tr_len >= 4 && memcmp(tr1 + c1.tr_len - 2, "\r\n", 2) == 0);
            CHECK(tr1[0] != '\r' && memchr(tr1, ':', c1.tr_len) != NULL);
        }
        /* payload plus at least "0\r\n\r\n" framing */
        if (c1.done)
            CHECK(len1 + 5 <= (size_t)whole);
    }
    free(out1);
    free(out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;

    const http_limits_t *lim = &limits[data[0] >> 7];
    size_t n = size - 1;
    size_t cut = n * (data[0] & 0x7f) / 127;
    const uint8_t *msg = data + 1;

    run_request(msg, n, cut, lim);
    run_response(msg, n, cut, lim);
    run_chunked(msg, n, cut);
    return 0;
}

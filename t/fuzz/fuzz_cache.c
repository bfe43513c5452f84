/*
 * libFuzzer harness for src/cache/policy.c: the strict HTTP-date reader,
 * Age, Vary lists, Cache-Control, Structured Fields dictionaries and
 * Content-Range / Range, on exact-size heap copies so ASan
 * sees any read past len.
 *
 * Invariants checked (abort() when broken): a date that parses formats
 * back (IMF-fixdate) to a string that parses to the same time; an Age is
 * -1 or within [0, 2^31]; a Vary list is lower case tokens, each once,
 * NUL-terminated within its buffer; a normalised Vary value normalises to
 * itself; lifetimes are -1 or non-negative.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       src/cache/policy.c t/fuzz/fuzz_cache.c -o fuzz_cache
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/policy.h"
#include "cache/disk.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);
    if (p == NULL)
        return 0;
    memcpy(p, data, size);

    int64_t t = lg_cache_date(p, size);
    if (t >= 0 && t < INT64_C(253402300800)) {     /* up to year 9999 */
        time_t tt = (time_t)t;
        struct tm tm;
        char buf[64];
        gmtime_r(&tt, &tm);
        size_t n = strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        /* a leap second (:60) is the next minute's :00 */
        CHECK(n == 29 && lg_cache_date(buf, n) == t);
    }

    int64_t a = lg_cache_age(p, size);
    CHECK(a == -1 || (a >= 0 && a <= LG_DELTA_MAX));

    lg_vary_t v;
    lg_vary_init(&v);
    size_t half = size / 2;
    lg_vary_add(&v, p, half);
    lg_vary_add(&v, p + half, size - half);
    CHECK(v.len < sizeof(v.fields) && strlen(v.fields) == v.len);
    for (size_t i = 0; i < v.len; i++)
        CHECK(v.fields[i] > ' ' && v.fields[i] < 0x7f && !(v.fields[i] >= 'A' && v.fields[i] <= 'Z'));

    char norm[256];
    size_t nl = lg_vary_normalise(p, size, norm, sizeof(norm));
    CHECK(nl < sizeof(norm) && strlen(norm) == nl);
    char again[256];
    /* normalising is idempotent when nothing was cut */
    if (nl + 1 < sizeof(norm) / 2)
        CHECK(lg_vary_normalise(norm, nl, again, sizeof(again)) == nl && memcmp(again, norm, nl) == 0);

    (void)lg_sf_dictionary_valid(p, size);

    int64_t ra, rb, rc, from, to;
    if (lg_content_range(p, size, &ra, &rb, &rc))
        CHECK(0 <= ra && ra <= rb && rb < rc);
    int64_t len = (int64_t)(size * 7);
    int rr = lg_range_one(p, size, len, &from, &to);
    CHECK(rr >= -1 && rr <= 1);
    if (rr == 1)
        CHECK(0 <= from && from <= to && to < len);

    /* several ranges: each inside the representation, none overlapping or
     * touching another, at most max of them */
    lg_range_t rs[LG_RANGES_LIMIT];
    int max = 1 + (int)(size % 40);
    int nr = lg_range_parse(p, size, len, rs, max);
    CHECK(nr >= -1 && nr <= max);
    for (int k = 0; k < nr; k++) {
        CHECK(0 <= rs[k].from && rs[k].from <= rs[k].to && rs[k].to < len);
        for (int j = 0; j < k; j++)
            CHECK(rs[j].to + 1 < rs[k].from || rs[k].to + 1 < rs[j].from);
    }
    /* one range: the same answer as the one-range reader */
    if (rr == 1 && nr == 1)
        CHECK(rs[0].from == from && rs[0].to == to);

    /* a file of the disk tier: what passes adds up and lies inside the bytes read */
    lg_disk_hdr_t dh;
    uint64_t fsize = size + (uint64_t)(size * 7 % 4096);
    if (lg_disk_header_check(p, size, fsize, &dh) == 0) {
        uint64_t fixed = sizeof(dh) + (uint64_t)dh.keylen + dh.headlen;
        CHECK(dh.keylen >= 1 && dh.keylen <= LG_DISK_KEY_MAX && dh.headlen >= 1);
        CHECK(fixed <= size && fixed + dh.bodylen == fsize);
        CHECK(lg_disk_crc(0, p + sizeof(dh), (size_t)(dh.keylen + dh.headlen)) == dh.crc);
    }

    lg_cc_t cc;
    lg_cc_init(&cc);
    lg_cc_parse(&cc, p, size);
    CHECK(strlen(cc.fields) < sizeof(cc.fields));
    lg_fresh_in_t in = { .cc = &cc, .shared = size & 1, .status = 200, .now = 1000000000,
                         .date = t, .nexpires = (int)(size % 3), .expires = t,
                         .last_modified = t >= 0 ? t - 1000 : -1, .configured = -1 };
    int ex;
    int64_t life = lg_cache_lifetime(&in, &ex);
    CHECK(life >= -1);
    free(p);
    return 0;
}

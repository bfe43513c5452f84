/*
 * Static files (static.c): the feature, and the parsers of its request
 * fields, pure so that the fuzz harness (t/fuzz/fuzz_edge.c) reaches them.
 */
#ifndef LEGATE_FEATURE_STATIC_H
#define LEGATE_FEATURE_STATIC_H

#include <stddef.h>
#include <stdint.h>

/*
 * One "bytes=" range v[0..vn) of a file of n bytes: 1 with [*from, *to)
 * set, 0 to serve the whole file (several ranges, a unit that is not
 * bytes, a syntax error: all ignored, RFC 9110 14.2), -1 when
 * unsatisfiable (416).
 */
int lg_static_range(const char *v, size_t vn, int64_t n, int64_t *from, int64_t *to);

/* etag is in the list v[0..n) (If-None-Match / If-Match), or v is "*";
 * weak: W/ prefixes ignored (If-None-Match's weak comparison). */
int lg_static_etag_listed(const char *v, size_t n, const char *etag, int weak);

#endif

/* RFC 9111 policy (cache/policy.c): strict HTTP-dates, Age, Vary, and the
 * freshness lifetime, as pure functions. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cache/policy.h"
#include "cache/disk.h"

#define DATE(lit) lg_cache_date(lit, sizeof(lit) - 1)
#define AGE(lit) lg_cache_age(lit, sizeof(lit) - 1)

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define T1994 INT64_C(784111777)

Test(cache_policy, date_the_three_forms)
{
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 GMT"), T1994);
    cr_assert_eq(DATE("Sunday, 06-Nov-94 08:49:37 GMT"), T1994);
    cr_assert_eq(DATE("Sun Nov  6 08:49:37 1994"), T1994);
    cr_assert_eq(DATE("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    cr_assert_eq(DATE("Fri, 01 Jan 2037 00:00:00 GMT"), INT64_C(2114380800));
    cr_assert_eq(DATE("Thu, 29 Feb 2024 12:00:00 GMT"), INT64_C(1709208000));
    /* odd case is a recipient's choice: accepted */
    cr_assert_eq(DATE("sun, 06 NOV 1994 08:49:37 gmt"), T1994);
}

Test(cache_policy, date_anything_else_is_invalid)
{
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 UTC"), -1, "another time zone");
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 +0000"), -1);
    cr_assert_eq(DATE("Sun, 06-Nov-1994 08:49:37 GMT"), -1, "dashes in IMF-fixdate");
    cr_assert_eq(DATE("Sun, 06 Nov 1994 8:49:37 GMT"), -1, "one-digit hour");
    cr_assert_eq(DATE("Sun, 6 Nov 1994 08:49:37 GMT"), -1, "one-digit day");
    cr_assert_eq(DATE("Sun,  06 Nov 1994 08:49:37 GMT"), -1, "extra space");
    cr_assert_eq(DATE("Sun, 06 Nov 1994  08:49:37 GMT"), -1);
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 GMT "), -1, "trailing space");
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 GMTX"), -1);
    cr_assert_eq(DATE("Sun, 31 Feb 1994 08:49:37 GMT"), -1, "no such day");
    cr_assert_eq(DATE("Sun, 29 Feb 2023 08:49:37 GMT"), -1, "not a leap year");
    cr_assert_eq(DATE("Sun, 06 Nov 1994 24:00:00 GMT"), -1);
    cr_assert_eq(DATE("Xyz, 06 Nov 1994 08:49:37 GMT"), -1);
    cr_assert_eq(DATE("Sun, 06 Foo 1994 08:49:37 GMT"), -1);
    cr_assert_eq(DATE("Sun, 06-Nov-94 08:49:37 GMT"), -1, "RFC 850 wants the full day name");
    cr_assert_eq(DATE("Sun Nov 6 08:49:37 1994"), -1, "asctime pads the day with a space");
    cr_assert_eq(DATE("0"), -1);
    cr_assert_eq(DATE("-1"), -1);
    cr_assert_eq(DATE(""), -1);
    cr_assert_eq(DATE("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT"), -1,
                 "two dates in one line");
}

Test(cache_policy, age_delta_seconds)
{
    cr_assert_eq(AGE("0"), 0);
    cr_assert_eq(AGE("120"), 120);
    cr_assert_eq(AGE(" 7 "), 7, "OWS around the value");
    cr_assert_eq(AGE("abc"), -1, "not an integer: ignored");
    cr_assert_eq(AGE("-5"), -1);
    cr_assert_eq(AGE("5.5"), -1);
    cr_assert_eq(AGE("5, 6"), -1);
    cr_assert_eq(AGE(""), -1);
    cr_assert_eq(AGE("2147483647"), INT64_C(2147483647));
    cr_assert_eq(AGE("2147483649"), LG_DELTA_MAX, "capped at 2^31");
    cr_assert_eq(AGE("99999999999999999999999999"), LG_DELTA_MAX, "overflow is capped");
}

Test(cache_policy, vary_lists)
{
    lg_vary_t v;
    lg_vary_init(&v);
    lg_vary_add(&v, "Accept-Encoding, ACCEPT-language", 32);
    lg_vary_add(&v, "accept-encoding,Origin", 22);
    cr_assert_str_eq(v.fields, "accept-encoding,accept-language,origin");
    cr_assert(!v.star);
    cr_assert(lg_vary_has(&v, "origin"));
    cr_assert(!lg_vary_has(&v, "accept"));

    lg_vary_init(&v);
    lg_vary_add(&v, "Accept, *", 9);
    cr_assert(v.star, "* anywhere in the list");
    lg_vary_init(&v);
    lg_vary_add(&v, "Accept", 6);
    lg_vary_add(&v, " * ", 3);
    cr_assert(v.star, "* in a second line");
    lg_vary_init(&v);
    lg_vary_add(&v, "Accept, \"x\"", 11);
    cr_assert(v.overflow, "not a token");
    lg_vary_init(&v);
    char big[300];
    memset(big, 'a', sizeof(big));
    lg_vary_add(&v, big, sizeof(big));
    cr_assert(v.overflow, "too long to key on");
}

static lg_fresh_in_t fin(const lg_cc_t *cc, int status)
{
    lg_fresh_in_t in = {
        .cc = cc, .shared = 1, .status = status, .now = 100000000, .date = 100000000,
        .nexpires = 0, .expires = -1, .last_modified = -1, .configured = -1,
    };
    return in;
}

Test(cache_policy, lifetime_explicit)
{
    lg_cc_t cc;
    int ex;
    lg_cc_init(&cc);
    lg_cc_parse(&cc, "max-age=60, s-maxage=600", 24);
    lg_fresh_in_t in = fin(&cc, 200);
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 600000, "s-maxage for a shared cache");
    cr_assert(ex);
    in.shared = 0;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 60000, "a private cache ignores s-maxage");

    lg_cc_init(&cc);
    lg_cc_parse(&cc, "s-maxage=600", 12);
    in = fin(&cc, 200);
    in.shared = 0;
    in.configured = 5000;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 5000, "only s-maxage, private: not explicit");
    cr_assert(!ex);
    cr_assert(lg_cache_must_revalidate(&cc, 1), "s-maxage implies proxy-revalidate");
    cr_assert(!lg_cache_must_revalidate(&cc, 0));
    lg_cc_init(&cc);
    lg_cc_parse(&cc, "proxy-revalidate", 16);
    cr_assert(lg_cache_must_revalidate(&cc, 1));
    cr_assert(!lg_cache_must_revalidate(&cc, 0));
    lg_cc_init(&cc);
    lg_cc_parse(&cc, "must-revalidate", 15);
    cr_assert(lg_cache_must_revalidate(&cc, 0));
}

Test(cache_policy, lifetime_expires)
{
    lg_cc_t cc;
    int ex;
    lg_cc_init(&cc);
    lg_fresh_in_t in = fin(&cc, 200);
    in.nexpires = 1;
    in.expires = in.date + 300;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 300000, "Expires minus Date");
    in.date = -1;
    in.now = in.expires - 100;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 100000, "no Date: now");
    in = fin(&cc, 200);
    in.nexpires = 1;
    in.expires = -1;                    /* not a valid date */
    in.last_modified = in.date - 100000;
    in.configured = 60000;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 0, "an invalid Expires is already stale");
    cr_assert(ex, "and no heuristic or configured lifetime replaces it");
    in.expires = in.date + 300;
    in.nexpires = 2;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 0, "several Expires lines: stale");
    in.nexpires = 1;
    in.expires = in.date - 5;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 0, "in the past");
    lg_cc_parse(&cc, "max-age=10", 10);
    in.nexpires = 2;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 10000, "max-age wins over Expires");
}

Test(cache_policy, lifetime_heuristic)
{
    lg_cc_t cc;
    int ex;
    lg_cc_init(&cc);
    lg_fresh_in_t in = fin(&cc, 200);
    in.last_modified = in.date - 1000;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 100000, "10%% of the time since Last-Modified");
    cr_assert(!ex);
    in.last_modified = in.date - 100 * 86400;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 86400000, "at most a day");
    in.last_modified = in.date - 1000;
    in.configured = 7000;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 7000, "cache_valid before the heuristic");
    in.configured = -1;
    for (int i = 0; i < 12; i++) {
        static const int heur[] = { 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501 };
        in.status = heur[i];
        cr_assert_eq(lg_cache_lifetime(&in, &ex), 100000, "status %d", heur[i]);
    }
    in.status = 302;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), -1, "302 is not heuristically cacheable");
    in.status = 299;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), -1);
    lg_cc_parse(&cc, "public", 6);
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 100000, "an unknown status marked public");
    in.status = 302;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), 100000);
    in.last_modified = -1;
    cr_assert_eq(lg_cache_lifetime(&in, &ex), -1, "no Last-Modified: no heuristic");
}

#define UPD(lit, gz) lg_cache_304_updates(lit, sizeof(lit) - 1, gz)

Test(cache_policy, what_a_304_updates)
{
    cr_assert(UPD("Cache-Control", 0));
    cr_assert(UPD("Expires", 0));
    cr_assert(UPD("Date", 0));
    cr_assert(UPD("X-Version", 0));
    cr_assert(UPD("ETag", 0));
    cr_assert(UPD("Content-Type", 0));
    cr_assert(!UPD("Content-Length", 0), "framing of the stored body");
    cr_assert(!UPD("content-length", 0));
    cr_assert(!UPD("Transfer-Encoding", 0));
    cr_assert(!UPD("Content-Encoding", 0), "describes the stored bytes");
    cr_assert(!UPD("Content-Range", 0));
    cr_assert(!UPD("Vary", 0), "the stored variant depends on it");
    cr_assert(!UPD("Age", 0));
    cr_assert(!UPD("Set-Cookie", 0));
    cr_assert(!UPD("ETag", 1), "compressed here: the stored weak ETag stays");
    cr_assert(UPD("Last-Modified", 1));
}

static lg_store_in_t store_in(const lg_cc_t *cc, int status)
{
    lg_store_in_t in = { .cc = cc, .status = status, .shared = 1 };
    return in;
}

#define CC(cc, lit) (lg_cc_init(cc), lg_cc_parse(cc, lit, sizeof(lit) - 1))

Test(cache_policy, store_rule_directives)
{
    lg_cc_t cc;
    CC(&cc, "max-age=60");
    lg_store_in_t in = store_in(&cc, 200);
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES);
    in.req_no_store = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "the request's no-store");
    CC(&cc, "no-store, max-age=60");
    in = store_in(&cc, 200);
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO);
    CC(&cc, "private, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "private: not in a shared cache");
    in.shared = 0;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "a private cache may");
    /* must-understand (RFC 9111 5.2.2.3) */
    CC(&cc, "must-understand, no-store, max-age=60");
    in = store_in(&cc, 200);
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "understood status: no-store ignored");
    in.status = 302;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES);
    in.status = 206;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "partial content is not understood");
    in.status = 299;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO);
    CC(&cc, "must-understand, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "even without no-store");
    in.status = 200;
    in.req_no_store = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "the request's no-store still counts");
}

Test(cache_policy, store_rule_authorization)
{
    lg_cc_t cc;
    CC(&cc, "max-age=60");
    lg_store_in_t in = store_in(&cc, 200);
    in.authorized = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO);
    in.store_authorized = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "cache_authorized");
    in.store_authorized = 0;
    in.shared = 0;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "a private cache");
    in.shared = 1;
    CC(&cc, "public, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES);
    CC(&cc, "s-maxage=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES);
    CC(&cc, "must-revalidate, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES);
    CC(&cc, "proxy-revalidate, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "not among the three");
}

Test(cache_policy, store_rule_set_cookie)
{
    lg_cc_t cc;
    CC(&cc, "max-age=60");
    lg_store_in_t in = store_in(&cc, 200);
    in.set_cookie = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "by default, as nginx");
    in.cookie_ignored = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO_COOKIE, "ignored: stored without it");
    in.cookie_ignored = 0;
    in.store_set_cookie = 1;
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "cache_store_set_cookie: with it");
    CC(&cc, "private, max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_NO, "never a private one");
    CC(&cc, "no-cache=\"Set-Cookie\", max-age=60");
    cr_assert_eq(lg_cache_store_rule(&in), LG_STORE_YES, "stored, the field dropped by the caller");
    cr_assert(cc.no_cache_fields && !cc.no_cache);
    cr_assert_str_eq(cc.fields, "set-cookie");
}

Test(cache_policy, usable_request_directives_and_immutable)
{
    lg_cc_t rq;
    lg_cc_init(&rq);
    cr_assert(lg_cache_usable(&rq, 1000, 5000, 0, 0), "fresh");
    cr_assert(!lg_cache_usable(&rq, 1000, 0, 0, 0), "stale");
    CC(&rq, "no-cache");
    cr_assert(!lg_cache_usable(&rq, 1000, 5000, 0, 0));
    cr_assert(lg_cache_usable(&rq, 1000, 5000, 0, 1), "immutable and fresh: a reload is served");
    cr_assert(!lg_cache_usable(&rq, 1000, -1, 0, 1), "immutable but stale: revalidated");
    CC(&rq, "max-age=0");
    cr_assert(!lg_cache_usable(&rq, 1000, 5000, 0, 0));
    cr_assert(lg_cache_usable(&rq, 1000, 5000, 0, 1));
    CC(&rq, "min-fresh=10");
    cr_assert(!lg_cache_usable(&rq, 1000, 5000, 0, 1), "min-fresh still counts");
    CC(&rq, "max-stale=10");
    cr_assert(lg_cache_usable(&rq, 1000, -5000, 0, 0));
    cr_assert(!lg_cache_usable(&rq, 1000, -11000, 0, 0));
    cr_assert(!lg_cache_usable(&rq, 1000, -5000, 1, 0), "must-revalidate forbids max-stale");
    CC(&rq, "max-stale");
    cr_assert(lg_cache_usable(&rq, 1000, -999999, 0, 0));
}

static const char *norm(const char *v)
{
    static char out[256];
    lg_vary_normalise(v, strlen(v), out, sizeof(out));
    return out;
}

Test(cache_policy, vary_normalise)
{
    cr_assert_str_eq(norm("en-US, fr;q=0.8"), "en-us,fr;q=0.8");
    cr_assert_str_eq(norm("fr;q=0.80 , EN-us"), "en-us,fr;q=0.8", "order, case, spaces, q spelling");
    cr_assert_str_eq(norm("fr; q=0.800,en-us;q=1"), "en-us,fr;q=0.8");
    cr_assert_str_eq(norm("de, en"), "de,en", "equal q: by name");
    cr_assert_str_eq(norm("en, de"), "de,en");
    cr_assert_str_eq(norm("en,en,EN"), "en", "duplicates");
    cr_assert_str_eq(norm("*;q=0, en"), "en,*;q=0");
    cr_assert_str_eq(norm("text/html;level=1;q=0.5, text/*"), "text/*,text/html;level=1;q=0.5");
    cr_assert_str_eq(norm("en;q=x"), "en", "a bad q-value counts as 1");
    cr_assert_str_eq(norm(" , ,"), "");
    cr_assert_str_eq(norm(""), "");
    char small[8];
    cr_assert_eq(lg_vary_normalise("en, fr, de", 10, small, sizeof(small)), 5, "cut at an element");
    cr_assert_str_eq(small, "de,en");
}

Test(cache_policy, post_with_content_location)
{
    lg_cc_t cc;
    CC(&cc, "max-age=60");
    cr_assert(lg_cache_post_storable(200, &cc, 0, 1));
    cr_assert(!lg_cache_post_storable(206, &cc, 0, 1));
    cr_assert(!lg_cache_post_storable(299, &cc, 0, 1));
    CC(&cc, "s-maxage=60");
    cr_assert(lg_cache_post_storable(200, &cc, 0, 1));
    cr_assert(!lg_cache_post_storable(200, &cc, 0, 0), "s-maxage: shared caches only");
    CC(&cc, "public");
    cr_assert(!lg_cache_post_storable(200, &cc, 0, 1), "no explicit freshness");
    cr_assert(lg_cache_post_storable(200, &cc, 1, 1), "Expires");
}

#define SF(lit) lg_sf_dictionary_valid(lit, sizeof(lit) - 1)

Test(cache_policy, structured_dictionary)
{
    cr_assert(SF("max-age=60"));
    cr_assert(SF("max-age=60, no-store"));
    cr_assert(SF(" no-cache ,private "));
    cr_assert(SF("private=\"set-cookie\""));
    cr_assert(SF("a=?1, b=?0, c=:aGk=:, d=1.5, e=tok/x, f=(1 2 \"x\");p=1, g;q=2"));
    cr_assert(SF("ext-123_.*=-5"));
    cr_assert(!SF(""), "empty: not obeyed");
    cr_assert(!SF("   "));
    cr_assert(!SF("Max-Age=60"), "keys are lower case");
    cr_assert(!SF("max-age=60,"), "a trailing comma");
    cr_assert(!SF(",max-age=60"));
    cr_assert(!SF("max-age=60 no-store"), "no comma");
    cr_assert(!SF("max-age="));
    cr_assert(!SF("max-age=\"60"), "an open string");
    cr_assert(!SF("a=?2"));
    cr_assert(!SF("a=1234567890123456"), "an integer of 16 digits");
    cr_assert(!SF("a=1.2345"), "a decimal of 4 places");
    cr_assert(!SF("1a=1"));
    cr_assert(!SF("a=(1 2"), "an open inner list");
}

#define CR(lit, a, b, c) lg_content_range(lit, sizeof(lit) - 1, a, b, c)
#define RG(lit, len, f, t) lg_range_one(lit, sizeof(lit) - 1, len, f, t)

Test(cache_policy, partial_content)
{
    int64_t a, b, c;
    cr_assert(CR("bytes 0-99/1000", &a, &b, &c));
    cr_assert(a == 0 && b == 99 && c == 1000);
    cr_assert(CR("bytes 900-999/1000", &a, &b, &c));
    cr_assert(!CR("bytes 0-99/*", &a, &b, &c), "unknown complete length");
    cr_assert(!CR("bytes */1000", &a, &b, &c));
    cr_assert(!CR("bytes 0-1000/1000", &a, &b, &c), "past the end");
    cr_assert(!CR("bytes 5-4/1000", &a, &b, &c));
    cr_assert(!CR("items 0-9/10", &a, &b, &c));
    cr_assert(!CR("bytes 0-9/10x", &a, &b, &c));

    cr_assert_eq(RG("bytes=0-99", 1000, &a, &b), 1);
    cr_assert(a == 0 && b == 99);
    cr_assert_eq(RG("bytes=900-", 1000, &a, &b), 1, "open-ended");
    cr_assert(a == 900 && b == 999);
    cr_assert_eq(RG("bytes=-100", 1000, &a, &b), 1, "suffix");
    cr_assert(a == 900 && b == 999);
    cr_assert_eq(RG("bytes=-5000", 1000, &a, &b), 1);
    cr_assert(a == 0 && b == 999);
    cr_assert_eq(RG("bytes=500-5000", 1000, &a, &b), 1);
    cr_assert(a == 500 && b == 999);
    cr_assert_eq(RG("bytes=1000-", 1000, &a, &b), -1, "unsatisfiable");
    cr_assert_eq(RG("bytes=-0", 1000, &a, &b), -1);
    cr_assert_eq(RG("bytes=0-1,5-6", 1000, &a, &b), 0, "several: the whole");
    cr_assert_eq(RG("bytes=5-1", 1000, &a, &b), 0);
    cr_assert_eq(RG("bytes=x-1", 1000, &a, &b), 0);
    cr_assert_eq(RG("bytes=-", 1000, &a, &b), 0);
    cr_assert_eq(RG("items=0-1", 1000, &a, &b), 0);

    cr_assert(lg_range_union(0, 99, 100, 199, &a, &b), "touching");
    cr_assert(a == 0 && b == 199);
    cr_assert(lg_range_union(50, 150, 0, 99, &a, &b), "overlapping");
    cr_assert(a == 0 && b == 150);
    cr_assert(!lg_range_union(0, 99, 101, 199, &a, &b), "a gap");
}

/* lg_range_parse: one case a row, the ranges as "a-b a-b" or a code. */
static const struct {
    const char *field;
    int64_t     len;
    int         max;
    int         rc;
    const char *want;           /* the ranges written, in order */
} range_cases[] = {
    { "bytes=0-99", 1000, 16, 1, "0-99" },
    { "bytes=0-9,20-29", 1000, 16, 2, "0-9 20-29" },
    { "bytes=20-29,0-9", 1000, 16, 2, "20-29 0-9" },            /* order asked kept */
    { "bytes=900-,-50", 1000, 16, 1, "900-999" },               /* overlapping: one */
    { "bytes=0-9,10-19", 1000, 16, 1, "0-19" },                 /* touching: one */
    { "bytes=50-60,0-99,200-", 1000, 16, 2, "0-99 200-999" },   /* coalesced: ascending */
    { "bytes=0-0,0-0,0-0,0-0", 1000, 16, 1, "0-0" },
    { "BYTES = 0-1 , 5-6", 1000, 16, 2, "0-1 5-6" },            /* unit in any case, OWS */
    { "bytes=0-1,,5-6,", 1000, 16, 2, "0-1 5-6" },              /* empty list elements */
    { "bytes=-100", 1000, 16, 1, "900-999" },
    { "bytes=-5000", 1000, 16, 1, "0-999" },
    { "bytes=500-5000", 1000, 16, 1, "500-999" },
    { "bytes=0-1,2000-3000", 1000, 16, 1, "0-1" },              /* unsatisfiable left out */
    { "bytes=1000-,2000-", 1000, 16, -1, "" },
    { "bytes=-0", 1000, 16, -1, "" },
    { "bytes=0-", 0, 16, -1, "" },                              /* an empty representation */
    { "bytes=0-1,2-3,4-5", 1000, 2, 0, "" },                    /* more than max: the whole */
    { "bytes=0-1,2-3", 1000, 2, 1, "0-3" },
    { "bytes=5-1", 1000, 16, 0, "" },                           /* invalid: ignored */
    { "bytes=0-1,5-1", 1000, 16, 0, "" },
    { "bytes=x-1", 1000, 16, 0, "" },
    { "bytes=-", 1000, 16, 0, "" },
    { "bytes=", 1000, 16, 0, "" },
    { "bytes=,", 1000, 16, 0, "" },
    { "bytes=0-1;5-6", 1000, 16, 0, "" },
    { "bytes=0-1 2-3", 1000, 16, 0, "" },
    { "items=0-1", 1000, 16, 0, "" },
    { "bytes0-1", 1000, 16, 0, "" },
    { "bytes=99999999999999999999-", 1000, 16, 0, "" },         /* overflow: malformed */
};

Test(cache_policy, range_parse)
{
    for (size_t i = 0; i < sizeof(range_cases) / sizeof(range_cases[0]); i++) {
        lg_range_t out[LG_RANGES_LIMIT];
        int rc = lg_range_parse(range_cases[i].field, strlen(range_cases[i].field),
                                range_cases[i].len, out, range_cases[i].max);
        cr_assert_eq(rc, range_cases[i].rc, "%s: %d", range_cases[i].field, rc);
        char got[256] = "";
        size_t gl = 0;
        for (int k = 0; k < rc; k++)
            gl += (size_t)snprintf(got + gl, sizeof(got) - gl, "%s%lld-%lld", k ? " " : "",
                                   (long long)out[k].from, (long long)out[k].to);
        cr_assert_str_eq(got, range_cases[i].want, "%s", range_cases[i].field);
    }
    lg_range_t out[LG_RANGES_LIMIT];
    cr_assert_eq(lg_range_parse("bytes=0-1", 9, 10, out, 0), 0, "max 0: ranges off");
    cr_assert_eq(lg_range_parse("bytes=0-1", 9, 10, out, LG_RANGES_LIMIT + 1), 0);
}

Test(cache_policy, use_stale_words)
{
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_ERROR, 502), "error");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_TIMEOUT, 504), "timeout");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_INVALID, 502), "invalid_header");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_ANSWERED, 500), "http_500");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_ANSWERED, 503), "http_503");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_ANSWERED, 404), "http_404");
    cr_assert_str_eq(lg_cache_stale_word(LG_STALE_ANSWERED, 429), "http_429");
    cr_assert_null(lg_cache_stale_word(LG_STALE_ANSWERED, 200));
    cr_assert_null(lg_cache_stale_word(LG_STALE_ANSWERED, 501), "no word for 501");

    char *w1[] = { "error", "timeout", "http_500" };
    cr_assert(lg_cache_stale_named(w1, 3, "timeout"));
    cr_assert(!lg_cache_stale_named(w1, 3, "http_502"));
    cr_assert(!lg_cache_stale_named(w1, 3, NULL), "an answer no word names");
    char *w2[] = { "error", "off" };
    cr_assert(!lg_cache_stale_named(w2, 2, "error"), "off anywhere turns it off");
    cr_assert(!lg_cache_stale_named(NULL, 0, "error"));
}

/* A file of the disk tier: header, key, head, body. */
static size_t disk_file(char *out, const char *key, const char *head, size_t bodylen)
{
    lg_disk_hdr_t h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, LG_DISK_MAGIC, 8);
    h.keylen = (uint32_t)strlen(key);
    h.headlen = (uint32_t)strlen(head);
    h.bodylen = bodylen;
    h.meta.status = 200;
    h.crc = lg_disk_crc(lg_disk_crc(0, key, h.keylen), head, h.headlen);
    memcpy(out, &h, sizeof(h));
    memcpy(out + sizeof(h), key, h.keylen);
    memcpy(out + sizeof(h) + h.keylen, head, h.headlen);
    return sizeof(h) + h.keylen + h.headlen;
}

Test(cache_policy, disk_header)
{
    cr_assert_eq(lg_disk_crc(0, "123456789", 9), 0xcbf43926u, "the IEEE check value");
    cr_assert_eq(lg_disk_crc(lg_disk_crc(0, "1234", 4), "56789", 5), 0xcbf43926u, "in pieces");

    char f[1024];
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    size_t n = disk_file(f, "http://x/a", head, 100);
    lg_disk_hdr_t h;
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), 0);
    cr_assert(h.keylen == 10 && h.bodylen == 100 && h.meta.status == 200);
    cr_assert_eq(lg_disk_header_check(f, n, n + 99, &h), -1, "cut short");
    cr_assert_eq(lg_disk_header_check(f, n, n + 101, &h), -1, "grown");
    cr_assert_eq(lg_disk_header_check(f, n - 1, n + 100, &h), -1, "not all of the head read");
    cr_assert_eq(lg_disk_header_check(f, 10, n + 100, &h), -1, "not even the header");
    f[sizeof(h) + 3] ^= 1;
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), -1, "a key byte changed: the CRC");
    f[sizeof(h) + 3] ^= 1;
    f[n - 5] ^= 1;
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), -1, "a head byte changed");
    f[n - 5] ^= 1;
    f[0] = 'X';
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), -1, "another magic");
    f[0] = 'L';
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), 0);
    lg_disk_hdr_t bad;
    memcpy(&bad, f, sizeof(bad));
    bad.bodylen = UINT64_MAX - 5;       /* lengths that would wrap */
    memcpy(f, &bad, sizeof(bad));
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), -1);
    bad.bodylen = 100;
    bad.meta.status = 7;
    memcpy(f, &bad, sizeof(bad));
    cr_assert_eq(lg_disk_header_check(f, n, n + 100, &h), -1, "no such status");
}

/*
 * RFC 9111 rules, apart from any storage: Cache-Control parsing, HTTP
 * dates, freshness lifetime and age.  Pure functions, unit-tested.
 */
#ifndef LEGATE_CACHE_POLICY_H
#define LEGATE_CACHE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define LG_CC_UNSET (-1)

typedef struct lg_cc {
    int     no_store, no_cache, private_, public_, must_revalidate, proxy_revalidate;
    int     only_if_cached, no_transform;
    int     immutable, must_understand;
    int     no_cache_fields;    /* no-cache="A, B": those fields, not the response */
    int     private_fields;     /* private="A": likewise */
    char    fields[256];        /* the field names of both, comma-separated, lower case */
    int64_t max_age, s_maxage;  /* seconds or LG_CC_UNSET */
    int64_t stale_while_revalidate, stale_if_error;
    int64_t max_stale;          /* LG_CC_UNSET; INT64_MAX for a bare max-stale */
    int64_t min_fresh;
} lg_cc_t;

void    lg_cc_init(lg_cc_t *cc);
/* Add one Cache-Control field value (call for each line). */
void    lg_cc_parse(lg_cc_t *cc, const char *v, size_t n);

/* Heuristically cacheable statuses (RFC 9110 15.1). */
int     lg_status_heuristic(int status);

/*
 * An HTTP-date read strictly (RFC 9110 5.6.7): IMF-fixdate, or one of the
 * two obsolete forms a recipient must accept (RFC 850 with its full day
 * name and two-digit year, asctime), exactly as the grammar spells them
 * but for the case of the names.  Seconds since the epoch, or -1 for
 * anything else (another time zone, one-digit fields, extra spaces, a
 * day the month does not have).
 */
int64_t lg_cache_date(const char *s, size_t n);

/* The largest Age and delta-seconds kept (RFC 9111 1.2.2): 2^31. */
#define LG_DELTA_MAX INT64_C(2147483648)
/* One Age field line: its delta-seconds (capped at LG_DELTA_MAX), or -1
 * when it is not one (the caller takes the first line that is). */
int64_t lg_cache_age(const char *v, size_t n);

/* The fields of every Vary line of a response, lower case, each once. */
typedef struct lg_vary {
    int     star;               /* "*" anywhere: never reused (RFC 9111 4.1) */
    int     overflow;           /* more than fits: treated as "*" */
    size_t  len;
    char    fields[256];        /* "accept-encoding,accept-language" */
} lg_vary_t;
void    lg_vary_init(lg_vary_t *v);
void    lg_vary_add(lg_vary_t *v, const char *s, size_t n);     /* one Vary line */
int     lg_vary_has(const lg_vary_t *v, const char *name);      /* name in lower case */

/*
 * A request field's value as a Vary comparison sees it (Accept,
 * Accept-Language and the like): elements lower case without whitespace,
 * q-values in one spelling (absent for 1, "q=0.8" for 0.80), duplicates
 * dropped, ordered by q-value and then by name.  Writes at most outlen
 * bytes (NUL included; a value that does not fit is cut at an element)
 * and returns the length.
 */
size_t  lg_vary_normalise(const char *v, size_t n, char *out, size_t outlen);

/*
 * Targeted cache control (RFC 9213): is one line of a field such as
 * CDN-Cache-Control a valid, non-empty Structured Fields Dictionary (RFC
 * 8941 3.2)?  A cache obeys the first targeted field whose every line is,
 * instead of Cache-Control and Expires; an invalid one is ignored.
 */
int     lg_sf_dictionary_valid(const char *v, size_t n);

/*
 * Partial content.  A Content-Range "bytes FIRST-LAST/COMPLETE" with a
 * known complete length: 1 and the three, or 0 for anything else ("*"
 * lengths, other units, LAST past the end).
 */
int     lg_content_range(const char *v, size_t n, int64_t *first, int64_t *last,
                         int64_t *complete);
/*
 * One byte range of a Range header ("bytes=a-b", "bytes=a-", "bytes=-n")
 * against a representation of len bytes: 1 and [*from, *to]; 0 when there
 * is none to honour (absent, several, another unit, malformed); -1 when
 * unsatisfiable.
 */
int     lg_range_one(const char *v, size_t n, int64_t len, int64_t *from, int64_t *to);
/*
 * The byte ranges of a Range field (RFC 9110 14.1.2, 14.2) against a
 * representation of len bytes, for an answer of one or more parts:
 * "bytes=" (the unit in any case) and a list of "a-b", "a-" and "-n", with
 * optional whitespace and empty elements as the list rule allows.  Ranges
 * that are not satisfiable (starting at or past len, "-0") are left out;
 * overlapping and touching ones are coalesced (RFC 9110 14.2 allows it: a
 * client asking "0-999,0-999,..." gets the bytes once).  The rest stay in
 * the order asked when nothing was coalesced, in ascending order else.
 * Returns how many were written to out (1 <= n <= max); 0 when the field
 * is to be ignored and the whole sent instead (absent, another unit,
 * malformed, or more than max ranges -- a defence: a list of thousands of
 * small ranges costs the sender far more than the asker); -1 when none is
 * satisfiable (416).  1 <= max <= LG_RANGES_LIMIT and out has room for max.
 */
#define LG_RANGES_LIMIT 256
typedef struct lg_range {
    int64_t from, to;           /* inclusive */
} lg_range_t;
int     lg_range_parse(const char *v, size_t n, int64_t len, lg_range_t *out, int max);

/* Two stored ranges of one representation that overlap or touch: 1 and
 * their union. */
int     lg_range_union(int64_t a1, int64_t b1, int64_t a2, int64_t b2, int64_t *a, int64_t *b);

/* What decides a stored response's freshness lifetime (RFC 9111 4.2.1). */
typedef struct lg_fresh_in {
    const lg_cc_t *cc;          /* the response's directives */
    int     shared;             /* a shared cache: s-maxage and proxy-revalidate apply */
    int     status;
    int64_t now;                /* seconds */
    int64_t date;               /* Date (strict), or -1 */
    int     nexpires;           /* Expires field lines */
    int64_t expires;            /* the Expires date (strict), or -1 */
    int64_t last_modified;      /* Last-Modified (strict), or -1 */
    int64_t configured;         /* ms the configuration gives this status (cache_valid), or -1 */
} lg_fresh_in_t;

/*
 * The freshness lifetime in ms: s-maxage (shared caches only), max-age,
 * Expires minus Date (an Expires that is not one valid date, or several
 * lines of it, is 0: already stale), the configured lifetime, then the
 * heuristic (10% of the time since Last-Modified, at most a day) for a
 * heuristically cacheable status or one marked public.  -1 when nothing
 * gives one: the response may only be stored to be revalidated.
 * *explicit_ is set when the origin itself gave the lifetime.
 */
int64_t lg_cache_lifetime(const lg_fresh_in_t *in, int *explicit_);
/*
 * May a 304 (or a HEAD's 200) replace the stored field of this name (RFC
 * 9111 3.2)?  Not framing fields (Content-Length, Transfer-Encoding),
 * those that describe the stored bytes (Content-Encoding, Content-Range),
 * Vary (the stored variant depends on it), nor Age, Set-Cookie and X-Cache
 * (never stored); for a body compressed by the cache (gzipped), not its
 * ETag either.  Hop-by-hop fields are the caller's to drop.
 */
int     lg_cache_304_updates(const char *name, size_t n, int gzipped);

/* Statuses whose caching rules legate implements (for must-understand). */
int     lg_status_understood(int status);

/* What the request's Authorization and the response's Set-Cookie allow. */
typedef struct lg_store_in {
    const lg_cc_t *cc;          /* the response's directives */
    int     status;
    int     shared;             /* not cache_private */
    int     req_no_store;       /* the request said no-store */
    int     authorized;         /* the request had Authorization */
    int     store_authorized;   /* cache_authorized */
    int     set_cookie;         /* the response has Set-Cookie */
    int     cookie_ignored;     /* Set-Cookie in cache_ignore_headers */
    int     store_set_cookie;   /* cache_store_set_cookie */
} lg_store_in_t;

#define LG_STORE_NO         0
#define LG_STORE_YES        1   /* as received (less the fields no-cache= / private= name) */
#define LG_STORE_NO_COOKIE  2   /* stored without its Set-Cookie lines */
/*
 * RFC 9111 3, 3.5, 5.2.2: no-store (unless must-understand with a status
 * understood), private (shared caches), must-understand with a status not
 * understood; a request with Authorization only with public,
 * must-revalidate or s-maxage (shared caches, unless store_authorized);
 * Set-Cookie: not stored (as nginx) unless store_set_cookie, or stored
 * without it when ignored.
 */
int     lg_cache_store_rule(const lg_store_in_t *in);

/*
 * May a stored response answer this request without asking the origin?
 * age_ms its current age, left_ms its freshness left (<= 0 stale).  The
 * request's no-cache, max-age, min-fresh and max-stale; must_revalidate
 * forbids max-stale; immutable (RFC 8246) lets a fresh response answer a
 * no-cache or max-age=0 reload, never a stale one.
 */
int     lg_cache_usable(const lg_cc_t *req, int64_t age_ms, int64_t left_ms,
                        int must_revalidate, int immutable);

/*
 * A POST answer whose Content-Location is its own target URI (the
 * caller's comparison) may be stored for later GETs (RFC 9110 9.3.3)
 * when its status is understood and it has explicit freshness: max-age,
 * s-maxage (shared), or Expires.
 */
int     lg_cache_post_storable(int status, const lg_cc_t *cc, int nexpires, int shared);

/*
 * cache_use_stale (nginx's proxy_cache_use_stale): the word naming what
 * went wrong -- how the upstream failed (LG_STALE_*) or, when it answered,
 * its status ("http_500"...) -- or NULL for an answer no word names.
 */
#define LG_STALE_ANSWERED 0     /* the upstream answered with status */
#define LG_STALE_ERROR    1     /* connect error, reset, early close, no server left */
#define LG_STALE_TIMEOUT  2
#define LG_STALE_INVALID  3     /* an invalid response head */
const char *lg_cache_stale_word(int how, int status);
/* Do the configured words (n of them) name word?  "off" anywhere: no. */
int     lg_cache_stale_named(char *const *words, size_t n, const char *word);

/* Stale means ask the origin (no serving stale, not even on max-stale)? */
int     lg_cache_must_revalidate(const lg_cc_t *cc, int shared);

#endif

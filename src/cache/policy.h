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

#endif

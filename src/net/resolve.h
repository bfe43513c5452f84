/*
 * Asynchronous DNS for the forward proxy: c-ares driven by the worker's
 * lg_loop_t, so a lookup never blocks the loop.
 *
 * One resolver per worker, created after fork (c-ares sockets must not be
 * shared between processes).  c-ares tells us through its socket-state
 * callback which descriptors to watch; they are registered level-triggered
 * (not EPOLLET like connections: c-ares does not promise to read a socket
 * until EAGAIN), and one lg_timer_t follows ares_timeout().
 *
 * Order of answers for a name, first that applies:
 *   1. a numeric IPv4 or IPv6 literal ("10.0.0.1", "::1", "[::1]"): itself;
 *   2. the hosts file given in the options (never /etc/hosts unless named
 *      there), if it lists the name with an address of a usable family;
 *   3. "localhost" and names under ".localhost" (RFC 6761): 127.0.0.1/::1;
 *   4. the cache (positive and negative answers);
 *   5. a query already in flight for the name: the lookup joins it;
 *   6. a new query (A, AAAA or both, by the family preference).
 *
 * Names are absolute: resolv.conf "search" and "ndots" are ignored unless
 * opts.search is set, so "intranet" is never silently "intranet.corp".
 * Names are matched case-insensitively and a trailing dot is ignored.
 *
 * Callbacks.  cb runs exactly once per successful lg_resolve(), always from
 * the loop (a 0 ms timer), never inside lg_resolve() itself, whatever the
 * source of the answer.  After lg_resolve_cancel() or lg_resolver_free() it
 * does not run at all.  The lg_resolve_t is freed when cb returns: do not
 * cancel it from its own callback or afterwards.  A callback may start new
 * lookups, cancel others, and free the resolver.
 *
 * Memory bounds (all malloc, none from the loop's arenas):
 *   - cache: at most opts.cache_size entries, least recently used evicted
 *     first; each ~100 bytes + the name + 128 bytes per address, and at most
 *     opts.max_addrs addresses are kept per name;
 *   - queries in flight: at most opts.max_queries distinct names (a further
 *     name fails at once with LG_RESOLVE_EBUSY), each ~100 bytes + name
 *     plus c-ares' own state (about 1 KiB);
 *   - one ~64-byte lg_resolve_t per outstanding lookup (one per caller);
 *   - the hosts file: its parsed entries (file size capped at 16 MiB).
 *
 * Time: a query ends after at most about n * timeout_ms * (2^tries - 1) ms
 * with n name servers (c-ares doubles the timeout every round).  With both
 * families c-ares waits for both answers before reporting.
 */
#ifndef LEGATE_NET_RESOLVE_H
#define LEGATE_NET_RESOLVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/event.h"

typedef enum lg_resolve_status {
    LG_RESOLVE_OK        = 0,   /* n >= 1 addresses */
    LG_RESOLVE_ENOTFOUND = 1,   /* NXDOMAIN */
    LG_RESOLVE_ENODATA   = 2,   /* the name exists, no address of a usable family */
    LG_RESOLVE_ETIMEOUT  = 3,   /* no server answered in time */
    LG_RESOLVE_ESERVFAIL = 4,   /* SERVFAIL, REFUSED, bad reply, connection refused */
    LG_RESOLVE_EBADNAME  = 5,   /* not a valid host name (syntax, length) */
    LG_RESOLVE_EBUSY     = 6,   /* too many names in flight (opts.max_queries) */
    LG_RESOLVE_ENOMEM    = 7,
    LG_RESOLVE_EFAIL     = 8,   /* any other c-ares error */
} lg_resolve_status_t;

const char *lg_resolve_strerror(int status);    /* "NXDOMAIN", "timed out", ... */

typedef enum lg_resolve_family {
    LG_RESOLVE_V4_FIRST = 0,    /* A and AAAA, IPv4 addresses first (default) */
    LG_RESOLVE_V6_FIRST = 1,    /* A and AAAA, IPv6 addresses first */
    LG_RESOLVE_V4_ONLY  = 2,    /* A only */
    LG_RESOLVE_V6_ONLY  = 3,    /* AAAA only */
} lg_resolve_family_t;

typedef struct lg_resolver_opts {
    const char *const *servers; /* borrowed: "127.0.0.1", "127.0.0.1:5353", "[::1]:53" */
    size_t      nservers;       /* 0: the name servers of /etc/resolv.conf */
    const char *hosts_file;     /* borrowed: hosts(5) format, read once; NULL: none */
    lg_resolve_family_t family;
    int         search;         /* bool, default 0: apply resolv.conf search/ndots */
    size_t      cache_size;     /* entries, default 1024; 0 disables the cache */
    uint32_t    min_ttl;        /* seconds, default 0: answers are kept at least this long */
    uint32_t    max_ttl;        /* seconds, default 3600: and at most this long */
    uint32_t    neg_ttl;        /* seconds, default 5: NXDOMAIN/NODATA kept; 0 = not cached */
    uint32_t    timeout_ms;     /* first try per server, default 1000 */
    uint32_t    tries;          /* rounds over the servers, default 2 */
    size_t      max_addrs;      /* addresses kept per name, default 8, at most 64 */
    size_t      max_queries;    /* distinct names in flight, default 1024 */
} lg_resolver_opts_t;

typedef struct lg_resolver_stats {
    uint64_t lookups;           /* lg_resolve() calls */
    uint64_t literals;          /* answered as numeric addresses */
    uint64_t hosts_hits;        /* answered from the hosts file or as localhost */
    uint64_t cache_hits;        /* answered from the cache (negative ones too) */
    uint64_t joined;            /* joined a query already in flight */
    uint64_t queries;           /* new c-ares lookups started */
    uint64_t failures;          /* lookups that ended with an error status */
    size_t   cache_entries;     /* now */
    size_t   in_flight;         /* now */
} lg_resolver_stats_t;

typedef struct lg_resolver lg_resolver_t;
typedef struct lg_resolve lg_resolve_t;

/*
 * addrs[0..n) are valid only during the call; ports are 0, families are
 * AF_INET/AF_INET6 ordered by opts.family.  n == 0 unless status is OK.
 */
typedef void (*lg_resolve_cb)(void *arg, int status,
                              const struct sockaddr_storage *addrs, size_t n);

void lg_resolver_opts_init(lg_resolver_opts_t *o);     /* the defaults above */

/*
 * Returns NULL with a message in err (bad server address, unreadable hosts
 * file, c-ares init failure).  The loop is borrowed and must outlive the
 * resolver.  o == NULL: all defaults.
 */
lg_resolver_t *lg_resolver_new(lg_loop_t *loop, const lg_resolver_opts_t *o,
                               char *err, size_t errlen);

/* Stops every lookup without calling back and frees everything; NULL is fine. */
void lg_resolver_free(lg_resolver_t *r);

/*
 * Starts a lookup of name (a host name or an address literal, NUL-terminated,
 * port not included).  Returns a handle for lg_resolve_cancel(), or NULL
 * only when memory for the handle itself is lacking (cb will not run).
 */
lg_resolve_t *lg_resolve(lg_resolver_t *r, const char *name, lg_resolve_cb cb, void *arg);

/*
 * cb will not run.  Call it while the lookup is pending; from inside the
 * lookup's own callback it is a harmless no-op (a teardown path may get
 * there), but once the callback has returned the handle is freed: clear
 * your pointer to it first thing in the callback.  NULL is fine.
 */
void lg_resolve_cancel(lg_resolve_t *q);

/* Forgets every cached answer (answers in flight are still cached). */
void lg_resolver_flush(lg_resolver_t *r);

void lg_resolver_get_stats(const lg_resolver_t *r, lg_resolver_stats_t *st);

/*
 * Parses a numeric IPv4 or IPv6 address ("[::1]" too, no scope ids) into
 * ss with port 0.  Returns 0, or -1 if text is not one.  Exposed for the
 * forward proxy, which must treat "http://[::1]/" the same way.
 */
int lg_resolve_literal(const char *text, size_t len, struct sockaddr_storage *ss);

#endif

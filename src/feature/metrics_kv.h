/*
 * The metrics families counted by key (metrics_kv.c), for metrics.c: the
 * table of families, their series in the shared-memory zone "metrics_kv",
 * the worker's counts and gauges, and their lines on the page.
 */
#ifndef LEGATE_FEATURE_METRICS_KV_H
#define LEGATE_FEATURE_METRICS_KV_H

#include "feature/metrics.h"

/* Families only metrics.c counts (from what a request's fields say at
 * LOG), after those other features count (lg_mx_family_t). */
enum mx_own {
    MX_FWD = LG_MX_NCOUNTED,    /* kind; outcome */
    MX_FWD_REFUSED,             /* rule */
    MX_CODING_IN,               /* coding: bytes before compression */
    MX_CODING_OUT,              /* coding: bytes after */
    MX_UP_REUSED,               /* upstream, server: requests on a pooled connection */
    MX_UP_IDLE,                 /* upstream, server: idle pooled connections (gauge) */
    MX_UP_QUEUED,               /* upstream: requests that waited in its max_conns queue */
    MX_UP_QUEUE,                /* upstream: waiting now (gauge) */
    MX_UP_REJECTED,             /* upstream; queue_full queue_timeout */
    MX_PROTO,                   /* listener; protocol */
    MX_NFAM,
};

/* Master: the zone's size, and every series of the configuration made. */
size_t mx_kv_shm_size(void);
int    mx_kv_prepare(const lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);

/* Worker: set up (0, or -1 out of memory), and move the counts and the
 * gauges into the zone. */
int    mx_kv_init(void);
void   mx_kv_flush(void);

/* Add n to the series (fam, a, b, what), as lg_mx_count() but for any
 * family; what names one of the family's outcomes, or NULL if it has none. */
void   mx_kv_count(int fam, const char *a, const char *b, const char *what, int64_t n);

/* The page: every family's lines, each passed to line(o, text). */
void   mx_kv_page(void *o, void (*line)(void *o, const char *text));

#endif

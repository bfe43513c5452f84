/*
 * The live state of every upstream server, shared by all workers through
 * the shared-memory segment (core/shm.c), so that least-connections and
 * health decisions are global, not per worker.
 *
 * One zone per upstream, named after a hash of the upstream's name and
 * server addresses: a reload that keeps an upstream unchanged keeps its
 * state (failure counts, ejections), a changed one starts afresh.
 *
 * Every field is a lock-free atomic; no lock is ever held, so a worker
 * killed at any instant cannot block the others.  Connection counts are
 * kept per worker slot and summed when read, so the master can forget a
 * dead worker's connections by zeroing its row.
 */
#ifndef LEGATE_PROXY_UPSTATE_H
#define LEGATE_PROXY_UPSTATE_H

#include <stdatomic.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/shm.h"

#define LG_UPSTATE_SLOTS 64

typedef struct lg_upstate {
    _Atomic uint32_t active[LG_UPSTATE_SLOTS];  /* requests in flight, per worker slot */
    lg_shm_counter_t requests;                  /* sent to this server */
    lg_shm_counter_t failures;                  /* counted failures, ever */
    _Atomic uint32_t fails;                     /* failures in the current window */
    _Atomic int64_t  window_start;              /* ms, CLOCK_MONOTONIC (system-wide) */
    _Atomic int64_t  down_until;                /* ms; server out until then */
    _Atomic int64_t  back_at;                   /* ms when it last came back (slow start) */
    _Atomic uint32_t ejections;                 /* in a row: each one lasts longer */
    _Atomic int32_t  hc_down;                   /* active health check says down */
    _Atomic int32_t  hc_streak;                 /* >0 passes in a row, <0 failures */
} lg_upstate_t;

/*
 * Master, before forking a generation: attach every upstream's state zone
 * and build the Maglev tables of "hash" upstreams.  0, or -1 with err.
 */
int  lg_upstreams_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);
/* Master: forget the connections of a worker slot that died. */
void lg_upstreams_clear_slot(const lg_conf_t *conf, int slot);

#endif

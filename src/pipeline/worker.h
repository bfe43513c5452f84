/*
 * The worker's state, one per process: its event loop, the configuration
 * generation it serves, and the per-worker tables of the upstream layer.
 * Everything in a worker reaches it through lg_w.
 */
#ifndef LEGATE_PIPELINE_WORKER_H
#define LEGATE_PIPELINE_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/event.h"

struct lg_uconn;
struct lg_ewma;

/* What the front ends count per listener, for the metrics feature to
 * publish (plain counters: one worker writes them). */
typedef struct lg_lstats {
    uint64_t accepted, closed;          /* client connections */
    uint64_t tls_ok;                    /* handshakes */
    uint64_t tls_resumed;
    uint64_t h2_conns, h2_streams;      /* HTTP/2 connections and the streams they opened */
    uint64_t h2_resets_in, h2_resets_out, h2_goaways;
    uint64_t idle_in, idle_out;         /* keep-alive waits begun and ended: idle = in - out */
    uint64_t reclaimed;                 /* idle ones closed to make room (worker_connections) */
    /* failed handshakes by why (keep together, in this order) */
    uint64_t tls_fail_timeout, tls_fail_version, tls_fail_cipher, tls_fail_certificate,
             tls_fail_closed, tls_fail_other;
} lg_lstats_t;

typedef struct lg_worker {
    lg_loop_t      loop;
    lg_conf_t     *conf;        /* borrowed: inherited from the master */
    int            slot;
    int            quitting;    /* graceful: no accept, close idle */
    int            nconns;      /* client connections open */
    uint64_t       next_id;
    struct lg_uconn ***pools;   /* [upstream][server] -> idle stack */
    int          **npool;
    int32_t       *rr_current;  /* smooth WRR state, [upstream][server] flattened */
    size_t        *rr_base;     /* where each upstream starts in the flattened arrays */
    struct lg_ewma *ewma;       /* peak EWMA latency, per worker, flattened like rr_current */
    uint64_t       rng;         /* xorshift state for the random choices */
    int           *queued;      /* requests waiting per upstream (max_conns queue) */
    void         (*conn_closed)(void);  /* the process layer's: room to accept again */
    lg_lstats_t   *lstats;      /* [conf->nbinds], or NULL: what nobody publishes is not counted */
} lg_worker_t;

extern lg_worker_t lg_w;

#endif

/*
 * Request-rate and concurrency limits (limit.c), nginx's limit_req and
 * limit_conn, shared by all workers through the shared-memory segment.
 */
#ifndef LEGATE_FEATURE_LIMIT_H
#define LEGATE_FEATURE_LIMIT_H

#include <stddef.h>

#include "conf/conf.h"
#include "core/shm.h"

/* Bytes of shared memory the zones of conf need (on top of the rest). */
size_t lg_limits_shm_size(const lg_conf_t *conf);
/* Master, before forking a generation: attach each zone's table; an
 * unchanged zone (same kind, name, key and size) keeps its state.
 * 0, or -1 with err. */
int    lg_limits_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);

/* Master: a worker of this slot died; forget its requests in flight. */
void   lg_limits_clear_slot(const lg_conf_t *conf, int slot);

/*
 * Cluster-scoped rate zones (limit_req_zones entry with cluster = true):
 * src/cluster sets these.  take() answers 1 pass, 0 refuse, -1 no answer
 * (the zone counts locally), or 2: asked the fleet; then done(r, verdict)
 * is called exactly once later, with 1, 0 or -1, unless cancel(r) came
 * first (the request went away or waited too long).
 */
struct lg_req;
typedef void (*lg_limit_done_t)(struct lg_req *r, int verdict);
extern int  (*lg_limit_cluster_take)(struct lg_req *r, const lg_limit_zone_t *lz, const char *key,
                                     size_t n, int burst, lg_limit_done_t done);
extern void (*lg_limit_cluster_cancel)(struct lg_req *r);

#endif

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

#endif

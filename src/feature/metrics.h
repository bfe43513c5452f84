/*
 * Metrics and status pages (metrics.c): counters kept per worker, moved
 * into the shared-memory zone "metrics" once a second; status routes
 * answer them as Prometheus text, JSON or an HTML page.
 */
#ifndef LEGATE_FEATURE_METRICS_H
#define LEGATE_FEATURE_METRICS_H

#include "conf/conf.h"
#include "core/shm.h"
#include "pipeline/request.h"

extern const lg_feature_t lg_feature_metrics;

/* Master: the zone and each route's series.  0, or -1 with err. */
size_t lg_metrics_shm_size(const lg_conf_t *conf);
int    lg_metrics_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen);
/* Worker: move its counts into the zone (each second, and before exiting). */
void   lg_metrics_flush(void);
/* Set by src/cluster in a worker with a cluster: its counters as Prometheus text. */
extern size_t (*lg_metrics_cluster)(char *buf, size_t n);

#endif

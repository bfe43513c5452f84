/*
 * A legate built without hiredis: no cluster.  `legate -t` refuses a
 * cluster section (conf/load_cluster.c), so these are never asked for more.
 */
#include "cluster/cluster.h"

int lg_cluster_attach(const lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen)
{
    (void)conf; (void)shm; (void)err; (void)errlen;
    return 0;
}

int lg_cluster_worker_init(const lg_conf_t *conf, lg_loop_t *loop, int slot)
{
    (void)conf; (void)loop; (void)slot;
    return 0;
}

void lg_cluster_worker_exit(void) {}

size_t lg_cluster_metrics(char *buf, size_t n)
{
    if (n)
        buf[0] = '\0';
    return 0;
}

void lg_cluster_count(lg_cmetric_t m)
{
    (void)m;
}

void lg_cluster_warn(const char *fmt, ...)
{
    (void)fmt;
}

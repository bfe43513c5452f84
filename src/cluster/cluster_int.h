/* Shared by the files of src/cluster only. */
#ifndef LEGATE_CLUSTER_CLUSTER_INT_H
#define LEGATE_CLUSTER_CLUSTER_INT_H

#include "cluster/cluster.h"
#include "cluster/redis.h"

typedef struct lg_cluster {
    const lg_cluster_conf_t *cf;        /* NULL: no cluster */
    const lg_conf_t         *conf;
    lg_loop_t               *loop;
    int                      slot;      /* this worker's */
    const char              *node;      /* this node's name */
    lg_redis_t               cmd;       /* every worker: commands */
    lg_redis_t               sub;       /* worker 0: the purge subscription */
} lg_cluster_t;

extern lg_cluster_t lg_cl;

/* which: 0 the command connection, 1 the subscription (worker 0's) */
void lg_cluster_set_up(int which, int up);
int  lg_cluster_sub_up(void);

int  lg_cluster_purge_init(void);       /* purge.c */
int  lg_cluster_tickets_init(void);     /* tickets.c, worker 0 */
int  lg_cluster_ratelimit_init(void);   /* ratelimit.c */
int  lg_cluster_votes_init(void);       /* votes.c, worker 0 */

#endif

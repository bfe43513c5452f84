/*
 * Processes: the master (master.c) and its workers (worker.c).
 */
#ifndef LEGATE_PROC_PROC_H
#define LEGATE_PROC_PROC_H

#include "conf/conf.h"

typedef struct lg_opts {
    const char *conf_file;      /* absolute */
    const char *prefix;
    int         foreground;     /* -F */
    char      **argv;           /* for the binary upgrade's exec */
} lg_opts_t;

/* Runs the master until it stops; returns the exit status. */
int  lg_master_run(lg_conf_t *conf, const lg_opts_t *opts);
/* Runs a worker; never returns. */
void lg_worker_run(lg_conf_t *conf, int slot, int nworkers) __attribute__((noreturn));
/* The master's readiness pipe ({ -1, -1 } when none): while the first
 * workers start, a worker writes one byte to [1] once it accepts (after
 * dropping privileges); every worker closes its copies of both ends.  The
 * master tells systemd READY=1 when every first worker has written (or the
 * pipe's write ends are all gone). */
extern int lg_ready_pipe[2];

/* The key of QUIC's Retry and stateless reset tokens: made once by the
 * master, the same in every worker of every generation it forks. */
extern unsigned char lg_quic_secret[32];

/* The front ends and features of the pipeline, registered once per
 * process before any configuration is used (features.c). */
void lg_features_setup(void);

/* mkdir -p of the directory holding `path`; 0 or -1 with errno. */
int  lg_mkdir_parent(const char *path);

#endif

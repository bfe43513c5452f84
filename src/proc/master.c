/*
 * The master process: owns the configuration, the listening sockets and the
 * workers; never serves a request.
 *
 * Signal handlers only set flags.  The loop blocks every signal it handles
 * and waits in ppoll() with an empty mask, so a signal either interrupts the
 * wait or is taken right at its start: no wake-up is lost.
 *
 *   HUP    reload: load and check the whole new configuration first; on any
 *          error log it and keep running as before; otherwise make the new
 *          listeners, start a new generation of workers, then tell the old
 *          ones to drain (QUIT), and KILL those still alive at
 *          shutdown_timeout.
 *   QUIT   graceful stop.        TERM, INT  fast stop.
 *   USR1   reopen logs.          WINCH      gracefully stop the workers.
 *   USR2   binary upgrade: exec the binary again with the listening sockets
 *          inherited; this master goes on until told QUIT (or HUP to restart
 *          its workers, which rolls the upgrade back).
 */
#include "proc/proc.h"

#include <errno.h>
#include <openssl/rand.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/shm.h"
#include "net/listen.h"
#include "net/tls.h"
#include "net/tls_mint.h"
#include "cache/http.h"
#include "cluster/cluster.h"
#include "feature/access.h"
#include "feature/auth_request.h"
#include "feature/jwt.h"
#include "forward/forward.h"
#include "proxy/proxy.h"
#include "proxy/upstate.h"
#include "cache/store.h"
#include "cache/disk.h"
#include "feature/limit.h"
#include "feature/metrics.h"
#ifdef LG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define MAX_CHILDREN 1024

typedef struct child {
    pid_t     pid;
    int       slot;
    unsigned  gen;
    int       exiting;          /* told to stop: do not respawn */
    lg_msec_t started;
    lg_msec_t kill_at;          /* 0 = none */
} child_t;

static child_t kids[MAX_CHILDREN];
static size_t nkids;
static unsigned generation;
static pid_t new_master;        /* binary upgrade in progress */
static int no_workers;          /* after WINCH */
static int fast_deaths;         /* consecutive workers that died young */
static lg_msec_t respawn_at;    /* backoff deadline, 0 = none */

static volatile sig_atomic_t sig_hup, sig_quit, sig_term, sig_usr1, sig_usr2,
                             sig_winch, sig_chld;

static void on_signal(int sig)
{
    switch (sig) {
    case SIGHUP:   sig_hup = 1; break;
    case SIGQUIT:  sig_quit = 1; break;
    case SIGTERM:
    case SIGINT:   sig_term = 1; break;
    case SIGUSR1:  sig_usr1 = 1; break;
    case SIGUSR2:  sig_usr2 = 1; break;
    case SIGWINCH: sig_winch = 1; break;
    case SIGCHLD:  sig_chld = 1; break;
    }
}

static lg_msec_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (lg_msec_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lg_mkdir_parent(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -1;
    char *slash = strrchr(tmp, '/');
    if (slash == NULL || slash == tmp)
        return 0;
    *slash = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static lg_conf_t *conf;         /* owned: the current generation */
static lg_shm_t  *shm;          /* owned: the segment workers share */
static size_t     shm_size;     /* what it was created for */
static unsigned   shm_sweep_gen;    /* zones older than this go once old workers are gone */
static unsigned   shm_sweep_after;  /* ...the worker generation that must be the oldest left */

/*
 * Map the segment (again, if its configured size changed: workers already
 * forked keep the old mapping) and attach every zone of `c` to it.
 */
static int started;              /* the first generation is running: no more cache loads */

static int cache_attach(lg_conf_t *c, lg_shm_t *s, char *err, size_t errlen)
{
    lg_cache = NULL;
    lg_disk = NULL;
    if (c->cache_size == 0)
        return 0;
    lg_cache = lg_store_attach(s, (size_t)c->cache_size, err, errlen);
    if (lg_cache == NULL)
        return -1;
    /* only when a master starts: a reload that remakes the segment must not
     * bring back what was purged or invalidated since the file was written */
    if (c->cache_path && lg_store_fresh(lg_cache) && !started) {
        char path[4096], msg[512];
        snprintf(path, sizeof(path), "%s/legate.cache", c->cache_path);
        int n = lg_store_load(lg_cache, path, msg, sizeof(msg));
        if (n < 0)
            lg_warn("cache: starting empty: %s", msg);
        else if (n > 0)
            lg_notice("cache: %d objects loaded from %s", n, path);
    }
    lg_store_set_max_object(lg_cache, (size_t)c->cache_max_object);
    /* the disk tier: objects past what the memory tier takes */
    if (c->cache_disk_size > 0 &&
        lg_disk_attach(s, c->cache_path, c->cache_disk_size, c->cache_max_object,
                       c->cache_disk_max_object,
                       c->cache_disk_inactive, err, errlen) == NULL)
        return -1;
    if (c->cache_disk_size > 0 && geteuid() == 0 && c->user) {
        /* the workers write the files after they dropped root */
        struct passwd *pw = getpwnam(c->user);
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/disk", c->cache_path);
        if (pw && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
            lg_warn("cache: cannot give %s to user \"%s\": %s", dir, c->user, strerror(errno));
    }
    return 0;
}

/* At exit, all workers gone: keep the cache for the next start. */
static void cache_save(const lg_conf_t *c)
{
    if (lg_cache == NULL || c->cache_path == NULL)
        return;
    char path[4096], msg[512];
    snprintf(path, sizeof(path), "%s/legate.cache", c->cache_path);
    if (lg_store_save(lg_cache, path, msg, sizeof(msg)) < 0)
        lg_error("cache: cannot save: %s", msg);
    else
        lg_notice("cache: saved to %s", path);
}

/* Some forward server intercepts TLS: the minted certificates' zone. */
static int inspects(const lg_conf_t *c)
{
    for (size_t i = 0; i < c->nservers; i++) {
        const lg_forward_t *f = c->servers[i].forward;
        if (f && f->tls_inspect && f->tls_inspect->n)
            return 1;
    }
    return 0;
}

static int shm_prepare(lg_conf_t *c, char *err, size_t errlen)
{
    /* the cache's zone comes on top of shared_memory_size */
    size_t want = (size_t)c->shared_memory_size + (c->cache_size ? (size_t)c->cache_size + 65536 : 0) +
                  (c->cache_disk_size ? lg_disk_zone_size(c->cache_disk_size, c->cache_max_object) + 4096
                                      : 0) +
                  (c->tls_session_cache ? (size_t)c->tls_session_cache + 4096 : 0) +
                  lg_limits_shm_size(c) +  /* the limit zones too */
                  lg_metrics_shm_size(c) + lg_mint_shm_size(inspects(c));
    if (shm == NULL || shm_size != want) {
        lg_shm_t *n = lg_shm_create(want, err, errlen);
        if (n == NULL)
            return -1;
        if (lg_upstreams_prepare(c, n, err, errlen) < 0 || lg_limits_prepare(c, n, err, errlen) < 0 ||
            lg_metrics_prepare(c, n, err, errlen) < 0 || lg_tls_attach_shm(n, err, errlen) < 0 ||
            lg_cluster_attach(c, n, err, errlen) < 0 || cache_attach(c, n, err, errlen) < 0 ||
            lg_tls_sess_attach(n, (size_t)c->tls_session_cache, err, errlen) < 0 ||
            lg_mint_attach_shm(n, inspects(c), err, errlen) < 0) {
            lg_shm_destroy(n);
            /* the attaches that succeeded pointed our globals into n: point
             * them back at the segment the running generation uses */
            if (shm && conf) {
                char e2[256];
                if (lg_tls_attach_shm(shm, e2, sizeof(e2)) < 0 ||
                    lg_cluster_attach(conf, shm, e2, sizeof(e2)) < 0 ||
                    cache_attach(conf, shm, e2, sizeof(e2)) < 0 ||
                    lg_tls_sess_attach(shm, (size_t)conf->tls_session_cache, e2, sizeof(e2)) < 0 ||
                    lg_mint_attach_shm(shm, inspects(conf), e2, sizeof(e2)) < 0)
                    lg_alert("cannot re-attach the shared memory after a failed reload: %s", e2);
            }
            return -1;
        }
        lg_shm_destroy(shm);
        shm = n;
        shm_size = want;
        return 0;
    }
    unsigned g = lg_shm_mark_unused(shm);
    if (lg_upstreams_prepare(c, shm, err, errlen) < 0 || lg_limits_prepare(c, shm, err, errlen) < 0 ||
        lg_metrics_prepare(c, shm, err, errlen) < 0 || lg_tls_attach_shm(shm, err, errlen) < 0 ||
        lg_cluster_attach(c, shm, err, errlen) < 0 ||
        cache_attach(c, shm, err, errlen) < 0 ||
        lg_tls_sess_attach(shm, (size_t)c->tls_session_cache, err, errlen) < 0 ||
        lg_mint_attach_shm(shm, inspects(c), err, errlen) < 0)
        return -1;
    shm_sweep_gen = g;
    shm_sweep_after = generation + 1;   /* the generation about to start */
    return 0;
}

/* Release zones only the exited workers used. */
static void shm_maybe_sweep(void)
{
    if (shm_sweep_gen == 0)
        return;
    for (size_t i = 0; i < nkids; i++)
        if (kids[i].gen < shm_sweep_after)
            return;
    lg_shm_sweep(shm, shm_sweep_gen);
    shm_sweep_gen = 0;
}
static const lg_opts_t *opts;
/* The binary's path when this master started.  A binary upgrade (USR2)
 * executes the file that is at this path now: after a package upgrade that
 * is the new binary, while /proc/self/exe would still be the old, deleted
 * inode and the upgrade would start the old code again. */
static char exe_path[4096];
int lg_ready_pipe[2] = { -1, -1 };
unsigned char lg_quic_secret[32];

/*
 * Readiness for systemd's Type=notify (a no-op without $NOTIFY_SOCKET or
 * without libsystemd at build time: then the unit waits for the pid file).
 * MAINPID is sent with READY so a master started by a binary upgrade takes
 * over as the service's main process (the unit has NotifyAccess=all).
 */
static void notify(const char *state)
{
#ifdef LG_HAVE_SYSTEMD
    if (strcmp(state, "READY=1") == 0)
        sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=generation %u, %d workers", (int)getpid(),
                   generation, conf ? conf->worker_processes : 0);
    else
        sd_notify(0, state);
#else
    (void)state;
#endif
}

static void spawn(int slot, int nworkers)
{
    if (nkids == MAX_CHILDREN) {
        lg_alert("too many child processes");
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        lg_log_errno(LG_LOG_ALERT, errno, "fork() failed");
        return;
    }
    if (pid == 0)
        lg_worker_run(conf, slot, nworkers);
    child_t *k = &kids[nkids++];
    memset(k, 0, sizeof(*k));
    k->pid = pid;
    k->slot = slot;
    k->gen = generation;
    k->started = now_ms();
    lg_info("started worker process %d (slot %d)", (int)pid, slot);
}

static void start_workers(void)
{
    generation++;
    for (int i = 0; i < conf->worker_processes; i++)
        spawn(i, conf->worker_processes);
}

static void signal_workers(int sig, int old_only, lg_msec_t deadline)
{
    for (size_t i = 0; i < nkids; i++) {
        if (old_only && kids[i].gen == generation)
            continue;
        if (kids[i].exiting && sig == SIGQUIT)
            continue;
        kill(kids[i].pid, sig);
        if (sig == SIGQUIT || sig == SIGTERM) {
            kids[i].exiting = 1;
            if (deadline && !kids[i].kill_at)
                kids[i].kill_at = deadline;
        }
    }
}

static int write_pid_file(const char *path)
{
    lg_mkdir_parent(path);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%d\n", (int)getpid());
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return -1;
    return 0;
}

/*
 * The open-file limit the workers get, and worker_connections when it is 0
 * (the default): as many client connections as the limit allows with one
 * upstream connection each.  Without worker_rlimit_nofile the soft limit is
 * raised to the hard one, so the default follows what the system allows
 * rather than a fixed number that refused clients with thousands of idle
 * keep-alive connections.
 */
static void apply_rlimit(lg_conf_t *c)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (c->worker_rlimit_nofile == 0 && rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = { rl.rlim_max, rl.rlim_max };
        if (rl.rlim_max == RLIM_INFINITY)
            up.rlim_cur = 1 << 20;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (c->worker_rlimit_nofile > 0) {
        rlim_t want = (rlim_t)c->worker_rlimit_nofile;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) {
            lg_warn("worker_rlimit_nofile %d is above the hard limit %llu: using %llu",
                    c->worker_rlimit_nofile, (unsigned long long)rl.rlim_max,
                    (unsigned long long)rl.rlim_max);
            want = rl.rlim_max;
        }
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            lg_log_errno(LG_LOG_WARN, errno, "setrlimit(RLIMIT_NOFILE, %llu) failed",
                         (unsigned long long)want);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (c->worker_connections == 0) {
        rlim_t n = rl.rlim_cur > 128 + 32 ? (rl.rlim_cur - 128) / 2 : 16;
        c->worker_connections = n > 1000000 ? 1000000 : (int)n;
        if (rl.rlim_cur < 4096)
            lg_warn("the open-file limit is %llu: worker_connections is %d; raise the limit "
                    "(ulimit -n, LimitNOFILE=, worker_rlimit_nofile) for more",
                    (unsigned long long)rl.rlim_cur, c->worker_connections);
        return;
    }
    /* a proxied request needs two descriptors */
    if ((rlim_t)c->worker_connections * 2 + 64 > rl.rlim_cur)
        lg_warn("worker_connections %d need about %d open files, the limit is %llu",
                c->worker_connections, c->worker_connections * 2 + 64,
                (unsigned long long)rl.rlim_cur);
}

/* Create log files (and their directories) as the master, owned by the
 * worker user, so workers can open and reopen them after dropping root:
 * the error log and every access log. */
static void prepare_logs(const lg_conf_t *c)
{
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (geteuid() == 0 && c->user) {
        struct passwd *pw = getpwnam(c->user);
        if (pw) {
            uid = pw->pw_uid;
            gid = pw->pw_gid;
        }
    }
    const char *paths[2 + 64];
    size_t n = 0;
    /* the workers reopen the error log too (USR1) */
    if (strcmp(c->error_log, "stderr") != 0)
        paths[n++] = c->error_log;
    paths[n++] = c->http.access_log;
    for (size_t s = 0; s < c->nservers && n < 65; s++) {
        paths[n++] = c->servers[s].common.access_log;
        for (size_t r = 0; r < c->servers[s].nroutes && n < 65; r++)
            paths[n++] = c->servers[s].routes[r].common.access_log;
    }
    for (size_t i = 0; i < n; i++) {
        if (paths[i] == NULL || strcmp(paths[i], "off") == 0)
            continue;
        if (lg_mkdir_parent(paths[i]) < 0)
            lg_log_errno(LG_LOG_ERROR, errno, "cannot create the directory of \"%s\"", paths[i]);
        int fd = open(paths[i], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            lg_log_errno(LG_LOG_ERROR, errno, "cannot open \"%s\"", paths[i]);
            continue;
        }
        if (uid != (uid_t)-1 && fchown(fd, uid, gid) < 0)
            lg_log_errno(LG_LOG_WARN, errno, "chown(\"%s\") failed", paths[i]);
        close(fd);
    }
    /* buffering's temporary files are made there by the workers */
    if (uid != (uid_t)-1 && c->proxy_temp_path && chown(c->proxy_temp_path, uid, gid) < 0)
        lg_log_errno(LG_LOG_WARN, errno, "chown(\"%s\") failed", c->proxy_temp_path);
}

static void reload_conf(void)
{
    char err[8192];
    lg_notice("reloading configuration from %s", opts->conf_file);
    notify("RELOADING=1");
    lg_conf_t *nc = lg_conf_load(opts->conf_file, opts->prefix, err, sizeof(err));
    if (nc == NULL) {
        /* one line per error so each stays greppable */
        char *save = NULL;
        for (char *l = strtok_r(err, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            lg_error("%s", l);
        lg_error("reload failed: the configuration has errors, keeping the old one");
        return;
    }
    if ((lg_tls_prepare(nc, err, sizeof(err)) < 0) | (lg_forward_prepare(nc, err, sizeof(err)) < 0) |
        (lg_access_prepare(nc, err, sizeof(err)) < 0) |
        (lg_auth_request_prepare(nc, err, sizeof(err)) < 0) |
        (lg_jwt_prepare(nc, err, sizeof(err)) < 0)) {
        char *save = NULL;
        for (char *l = strtok_r(err, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            lg_error("%s", l);
        lg_error("reload failed: errors in the files the configuration names, keeping the old one");
        lg_conf_free(nc);
        return;
    }
    if (lg_listeners_sync(nc, nc->worker_processes, err, sizeof(err)) < 0) {
        lg_error("reload failed: %s; keeping the old configuration", err);
        lg_conf_free(nc);
        return;
    }
    if (shm_prepare(nc, err, sizeof(err)) < 0) {
        lg_error("reload failed: %s; keeping the old configuration", err);
        lg_conf_free(nc);
        return;
    }
    prepare_logs(nc);
    if (strcmp(nc->error_log, conf->error_log) != 0 || nc->error_log_level != conf->error_log_level) {
        lg_mkdir_parent(nc->error_log);
        if (lg_log_open(nc->error_log, nc->error_log_level, opts->foreground) < 0)
            lg_log_errno(LG_LOG_ERROR, errno, "cannot open error log \"%s\"", nc->error_log);
    }
    apply_rlimit(nc);
    lg_conf_t *old = conf;
    conf = nc;
    no_workers = 0;
    fast_deaths = 0;
    lg_listeners_new_generation(conf, conf->worker_processes);
    start_workers();
    signal_workers(SIGQUIT, 1, now_ms() + nc->shutdown_timeout);
    /* the old workers have their own copy (fork); ours can go */
    lg_conf_free(old);
    lg_notice("reload done, generation %u with %d workers", generation, conf->worker_processes);
}

static void reload(void)
{
    reload_conf();
    notify("READY=1");     /* whether it took or not, the service goes on */
}

static void binary_upgrade(void)
{
    if (new_master > 0) {
        lg_warn("binary upgrade already in progress (pid %d)", (int)new_master);
        return;
    }
    char old[4200];
    snprintf(old, sizeof(old), "%s.oldbin", conf->pid_file);
    if (rename(conf->pid_file, old) < 0) {
        lg_log_errno(LG_LOG_ALERT, errno, "rename(\"%s\", \"%s\") failed", conf->pid_file, old);
        return;
    }
    if (lg_listeners_export() < 0) {
        lg_alert("cannot export the listening sockets");
        rename(old, conf->pid_file);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (exe_path[0])
            execv(exe_path, opts->argv);
        execvp(opts->argv[0], opts->argv);
        lg_log_errno(LG_LOG_ALERT, errno, "execv(\"%s\") failed", opts->argv[0]);
        _exit(2);
    }
    unsetenv("LEGATE_LISTEN_FDS");
    if (pid < 0) {
        lg_log_errno(LG_LOG_ALERT, errno, "fork() failed");
        rename(old, conf->pid_file);
        return;
    }
    new_master = pid;
    lg_notice("binary upgrade: started new master %d", (int)pid);
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == new_master) {
            new_master = 0;
            lg_error("new master %d exited (status %d): rolling the binary upgrade back",
                     (int)pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            char old[4200];
            snprintf(old, sizeof(old), "%s.oldbin", conf->pid_file);
            rename(old, conf->pid_file);
            continue;
        }
        size_t i;
        for (i = 0; i < nkids && kids[i].pid != pid; i++)
            ;
        if (i == nkids)
            continue;
        child_t k = kids[i];
        kids[i] = kids[--nkids];
        if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0))
            lg_limits_clear_slot(conf, k.slot);     /* its requests will never release */
        if (k.exiting) {
            lg_info("worker process %d exited", (int)pid);
            continue;
        }
        if (WIFSIGNALED(status)) {
            int sig = WTERMSIG(status);
            lg_log(sig == SIGKILL || sig == SIGTERM ? LG_LOG_ERROR : LG_LOG_ALERT,
                   "worker process %d exited on signal %d%s", (int)pid, sig,
                   WCOREDUMP(status) ? " (core dumped)" : "");
        } else {
            lg_error("worker process %d exited with code %d", (int)pid, WEXITSTATUS(status));
        }
        if (k.gen == generation)
            lg_upstreams_clear_slot(conf, k.slot);  /* its connections are gone */
        if (k.gen != generation || no_workers || sig_quit || sig_term)
            continue;
        lg_msec_t now = now_ms();
        if (now - k.started < 1000) {
            fast_deaths++;
        } else {
            fast_deaths = 0;
        }
        if (fast_deaths > 2) {
            lg_msec_t delay = 100LL << (fast_deaths > 9 ? 7 : fast_deaths - 2);
            if (delay > 10000)
                delay = 10000;
            lg_error("workers die right after start: respawning in %lld ms", (long long)delay);
            respawn_at = now + delay;
            continue;
        }
        spawn(k.slot, conf->worker_processes);
    }
}

/* Respawn missing slots once a backoff has passed. */
static void fill_slots(void)
{
    if (no_workers || respawn_at == 0 || now_ms() < respawn_at)
        return;
    respawn_at = 0;
    for (int s = 0; s < conf->worker_processes; s++) {
        int have = 0;
        for (size_t i = 0; i < nkids; i++)
            if (kids[i].gen == generation && kids[i].slot == s && !kids[i].exiting)
                have = 1;
        if (!have)
            spawn(s, conf->worker_processes);
    }
}

static void kill_overdue(void)
{
    lg_msec_t now = now_ms();
    for (size_t i = 0; i < nkids; i++) {
        if (kids[i].kill_at && now >= kids[i].kill_at) {
            lg_warn("worker process %d did not stop within shutdown_timeout: killing it",
                    (int)kids[i].pid);
            kill(kids[i].pid, SIGKILL);
            kids[i].kill_at = 0;
        }
    }
}

/* Takes ownership of c: it is freed on reload or at exit. */
int lg_master_run(lg_conf_t *c, const lg_opts_t *o)
{
    conf = c;
    opts = o;
    char err[1024];
    if (RAND_bytes(lg_quic_secret, sizeof(lg_quic_secret)) != 1) {
        lg_emerg("no random bytes for the QUIC token key");
        return 1;
    }
    ssize_t xn = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
    exe_path[xn > 0 ? xn : 0] = '\0';
    static const char deleted[] = " (deleted)";
    size_t xl = strlen(exe_path);
    if (xl >= sizeof(deleted) - 1 && strcmp(exe_path + xl - (sizeof(deleted) - 1), deleted) == 0)
        exe_path[0] = '\0';    /* replaced already: argv[0] by PATH, below */

    int sigs[] = { SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD };
    sigset_t block, none;
    sigemptyset(&block);
    sigemptyset(&none);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaddset(&block, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigprocmask(SIG_BLOCK, &block, NULL);

    apply_rlimit(conf);
    if (shm_prepare(conf, err, sizeof(err)) < 0) {
        lg_emerg("%s", err);
        return 1;
    }
    started = 1;
    lg_listeners_import();
    if (lg_listeners_sync(conf, conf->worker_processes, err, sizeof(err)) < 0) {
        lg_emerg("%s", err);
        return 1;
    }
    prepare_logs(conf);
    if (write_pid_file(conf->pid_file) < 0) {
        lg_log_errno(LG_LOG_EMERG, errno, "cannot write pid file \"%s\"", conf->pid_file);
        lg_listeners_close_all();
        return 1;
    }
    /* READY=1 once every first worker accepts (or has died trying) */
    int *ready_pipe = lg_ready_pipe;
    int ready_left = 0;
    if (pipe2(ready_pipe, O_CLOEXEC) < 0)
        ready_pipe[0] = ready_pipe[1] = -1;
    lg_listeners_new_generation(conf, conf->worker_processes);
    start_workers();
    if (ready_pipe[1] >= 0) {
        close(ready_pipe[1]);   /* respawned workers have nothing to say */
        ready_pipe[1] = -1;
        ready_left = conf->worker_processes;
    } else
        notify("READY=1");
    lg_notice("legate %s started, %d workers", PACKAGE_VERSION, conf->worker_processes);

    lg_msec_t stop_deadline = 0;
    int stopping = 0;
    for (;;) {
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 200 * 1000000 };
        struct pollfd rp = { .fd = ready_pipe[0], .events = POLLIN };
        if (ppoll(&rp, ready_pipe[0] >= 0 ? 1 : 0, &ts, &none) > 0 && rp.revents) {
            char buf[64];
            ssize_t rn = read(ready_pipe[0], buf, sizeof(buf));
            if (rn > 0)
                ready_left -= (int)rn;
            if (rn == 0 || (rn < 0 && errno != EINTR && errno != EAGAIN) || ready_left <= 0) {
                close(ready_pipe[0]);
                ready_pipe[0] = -1;
                notify("READY=1");
            }
        }

        if (sig_chld) {
            sig_chld = 0;
            reap();
            shm_maybe_sweep();
        }
        if (sig_term && stopping != 2) {
            lg_notice("fast shutdown");
            notify("STOPPING=1");
            stopping = 2;
            signal_workers(SIGTERM, 0, 0);
            stop_deadline = now_ms() + 3000;
            for (size_t i = 0; i < nkids; i++)
                kids[i].kill_at = stop_deadline;
        }
        if (sig_quit && !stopping) {
            lg_notice("graceful shutdown");
            notify("STOPPING=1");
            stopping = 1;
            signal_workers(SIGQUIT, 0, now_ms() + conf->shutdown_timeout);
        }
        if (stopping && nkids == 0)
            break;
        if (!stopping) {
            if (sig_hup) {
                sig_hup = 0;
                reload();
            }
            if (sig_usr1) {
                sig_usr1 = 0;
                lg_notice("reopening logs");
                lg_log_reopen();
                prepare_logs(conf);
                signal_workers(SIGUSR1, 0, 0);
            }
            if (sig_usr2) {
                sig_usr2 = 0;
                binary_upgrade();
            }
            if (sig_winch) {
                sig_winch = 0;
                lg_notice("gracefully stopping the workers (WINCH)");
                no_workers = 1;
                signal_workers(SIGQUIT, 0, now_ms() + conf->shutdown_timeout);
            }
            fill_slots();
            lg_tls_rotate(conf->tls_ticket_rotate);
        }
        kill_overdue();
    }
    /* remove the pid file only if it is still ours (not after an upgrade) */
    FILE *f = fopen(conf->pid_file, "r");
    if (f) {
        int pid = 0;
        if (fscanf(f, "%d", &pid) == 1 && pid == (int)getpid())
            unlink(conf->pid_file);
        fclose(f);
    }
    lg_listeners_close_all();
    cache_save(conf);
    lg_notice("exit");
    lg_conf_free(conf);
    conf = NULL;
    lg_shm_destroy(shm);
    shm = NULL;
    return 0;
}

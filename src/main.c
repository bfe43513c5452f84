/*
 * legate: command line, in nginx's habits.  See legate(8).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ares.h>
#include <maxminddb.h>
#include <libconfig.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#ifdef LG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif
#ifdef LG_HAVE_BROTLI
#include <brotli/encode.h>
#endif
#ifdef LG_HAVE_ZSTD
#include <zstd.h>
#endif

#include "conf/conf.h"
#include "core/log.h"
#include "net/tls.h"
#include "feature/access.h"
#include "feature/auth_request.h"
#include "feature/jwt.h"
#include "forward/forward.h"
#include "proxy/proxy.h"
#include "pipeline/vars.h"
#include "proc/proc.h"
#include "import/nginx.h"

#ifndef LEGATE_SYSCONFDIR
#define LEGATE_SYSCONFDIR "/etc"
#endif
#ifndef LEGATE_PREFIX
#define LEGATE_PREFIX "/usr/local"
#endif

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: legate [-hVtTqF] [-c file] [-p prefix] [-s signal]\n"
        "       legate --import-nginx nginx.conf > legate.conf\n"
        "\n"
        "Options:\n"
        "  -h, --help     this help\n"
        "  -V, --version  show version, build options and library versions\n"
        "  -t             test the configuration and exit\n"
        "  -T             test the configuration, print it and exit\n"
        "  -q             with -t: print errors only\n"
        "  -F             stay in the foreground, log to stderr as well\n"
        "  -c file        configuration file (default: %s/legate/legate.conf)\n"
        "  -p prefix      prefix for relative paths (default: %s)\n"
        "  -s signal      send a signal to the master: stop, quit, reload, reopen\n"
        "  --import-nginx file\n"
        "                 translate an nginx configuration to stdout; what cannot be\n"
        "                 translated is reported on stderr as file:line (legate-nginx(7))\n"
        "\n"
        "Signals: HUP reload, QUIT graceful stop, TERM fast stop, USR1 reopen logs,\n"
        "USR2 binary upgrade, WINCH stop the workers.  See legate(8), legate.conf(5).\n",
        LEGATE_SYSCONFDIR, LEGATE_PREFIX);
}

static void version(void)
{
    FILE *o = stderr;
    fprintf(o, "legate version %s\n", PACKAGE_VERSION);
    fprintf(o, "built with %s (running %s)\n", OPENSSL_VERSION_TEXT,
            OpenSSL_version(OPENSSL_VERSION));
    fprintf(o, "libconfig %d.%d.%d, zlib %s, c-ares %s, libmaxminddb %s\n",
            LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR, LIBCONFIG_VER_REVISION, zlibVersion(),
            ares_version(NULL), MMDB_lib_version());
#ifdef LG_HAVE_BROTLI
    uint32_t bv = BrotliEncoderVersion();
    fprintf(o, "content codings: gzip, brotli %u.%u.%u", bv >> 24, (bv >> 12) & 0xfff, bv & 0xfff);
#else
    fprintf(o, "content codings: gzip");
#endif
#ifdef LG_HAVE_ZSTD
    fprintf(o, ", zstd %s", ZSTD_versionString());
#endif
    fprintf(o, "\n");
#ifdef LG_HAVE_SYSTEMD
    fprintf(o, "systemd: sd_notify readiness (Type=notify)\n");
#else
    fprintf(o, "systemd: no libsystemd, readiness by pid file (Type=forking)\n");
#endif
    const char *bopts = ""
#ifdef LG_DEBUG
        " debug-checks"
#endif
#if defined(__SANITIZE_ADDRESS__)
        " sanitizers"
#endif
        ;
    fprintf(o, "build options: %s\n", bopts[0] ? bopts + 1 : "release");
    fprintf(o, "configuration file: %s/legate/legate.conf, prefix: %s\n", LEGATE_SYSCONFDIR,
            LEGATE_PREFIX);
    fprintf(o, "configure arguments: %s\n", LEGATE_CONFIGURE_ARGS);
}

static char *absolute(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", cwd, path);
    return p;
}

static int send_signal(const char *name, const char *file, const char *prefix)
{
    int sig;
    if (strcmp(name, "stop") == 0) sig = SIGTERM;
    else if (strcmp(name, "quit") == 0) sig = SIGQUIT;
    else if (strcmp(name, "reload") == 0) sig = SIGHUP;
    else if (strcmp(name, "reopen") == 0) sig = SIGUSR1;
    else {
        fprintf(stderr, "legate: invalid option: \"-s %s\"\n", name);
        return 1;
    }
    char err[4096];
    char pidpath[PATH_MAX];
    lg_conf_t *c = lg_conf_load(file, prefix, err, sizeof(err));
    if (c) {
        snprintf(pidpath, sizeof(pidpath), "%s", c->pid_file);
        lg_conf_free(c);
    } else {
        snprintf(pidpath, sizeof(pidpath), "%s/logs/legate.pid", prefix);
    }
    FILE *f = fopen(pidpath, "r");
    int pid = 0;
    if (f == NULL || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
        fprintf(stderr, "legate: cannot read pid from \"%s\": %s\n", pidpath,
                f ? "bad contents" : strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    if (kill(pid, sig) < 0) {
        fprintf(stderr, "legate: kill(%d, %s) failed: %s\n", pid, name, strerror(errno));
        return 1;
    }
    return 0;
}

static int daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf_file = LEGATE_SYSCONFDIR "/legate/legate.conf";
    const char *prefix = LEGATE_PREFIX;
    const char *sig = NULL;
    int test = 0, dump = 0, fg = 0, quiet = 0;
    const char *import_nginx = NULL;
    int opt;
    static const struct option longopts[] = {
        { "help",         no_argument,       NULL, 'h' },
        { "version",      no_argument,       NULL, 'V' },
        { "import-nginx", required_argument, NULL, 'N' },
        { NULL, 0, NULL, 0 },
    };
    lg_features_setup();
    lg_vars_init();     /* every load, -t's and the master's reloads, checks variable names */
    while ((opt = getopt_long(argc, argv, "hVtTqFc:p:s:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'V': version(); return 0;
        case 'N': import_nginx = optarg; break;
        case 't': test = 1; break;
        case 'T': test = 1; dump = 1; break;
        case 'q': quiet = 1; break;
        case 'F': fg = 1; break;
        case 'c': conf_file = optarg; break;
        case 'p': prefix = optarg; break;
        case 's': sig = optarg; break;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "legate: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (import_nginx)
        return lg_import_nginx(import_nginx, stdout, stderr) < 0 ? 1 : 0;
    char *file = absolute(conf_file);
    char *pfx = absolute(prefix);
    if (file == NULL || pfx == NULL)
        return 1;
    size_t pl = strlen(pfx);
    while (pl > 1 && pfx[pl - 1] == '/')
        pfx[--pl] = '\0';

    if (sig) {
        int rc = send_signal(sig, file, pfx);
        free(file);
        free(pfx);
        return rc;
    }

    char err[16384];
    lg_conf_t *conf = lg_conf_load(file, pfx, err, sizeof(err));
    /* certificates and keys are read here, by the master, before any
     * privilege is dropped; with -t this checks every file they name */
    /* (both run, so every error of either is reported) */
    if (conf && ((lg_tls_prepare(conf, err, sizeof(err)) < 0) |
                 (lg_forward_prepare(conf, err, sizeof(err)) < 0) |
                 (lg_access_prepare(conf, err, sizeof(err)) < 0) |
                 (lg_auth_request_prepare(conf, err, sizeof(err)) < 0) |
        (lg_jwt_prepare(conf, err, sizeof(err)) < 0))) {
        lg_conf_free(conf);
        conf = NULL;
    }
    if (test) {
        if (conf == NULL) {
            fputs(err, stderr);
            if (err[0] && err[strlen(err) - 1] != '\n')
                fputc('\n', stderr);
            fprintf(stderr, "legate: configuration file %s test failed\n", file);
            free(file);
            free(pfx);
            return 1;
        }
        if (!quiet) {
            fprintf(stderr, "legate: the configuration file %s syntax is ok\n", file);
            fprintf(stderr, "legate: configuration file %s test is successful\n", file);
        }
        if (dump)
            lg_conf_dump(conf, stdout);
        lg_conf_free(conf);
        free(file);
        free(pfx);
        return 0;
    }
    if (conf == NULL) {
        fputs(err, stderr);
        fprintf(stderr, "legate: configuration file %s test failed\n", file);
        return 1;
    }
    if (lg_mkdir_parent(conf->error_log) < 0 && strcmp(conf->error_log, "stderr") != 0)
        fprintf(stderr, "legate: cannot create the directory of \"%s\": %s\n",
                conf->error_log, strerror(errno));
    if (lg_log_open(conf->error_log, conf->error_log_level, fg) < 0) {
        fprintf(stderr, "legate: cannot open error log \"%s\": %s\n", conf->error_log,
                strerror(errno));
        return 1;
    }
    /* an inherited master (binary upgrade) is already where it should be */
    if (!fg && getenv("LEGATE_LISTEN_FDS") == NULL && daemonize() < 0) {
        lg_log_errno(LG_LOG_EMERG, errno, "cannot become a daemon");
        return 1;
    }
    lg_opts_t o = { .conf_file = file, .prefix = pfx, .foreground = fg, .argv = argv };
    /* the master owns conf from here: a reload replaces and frees it */
    int rc = lg_master_run(conf, &o);
    free(file);
    free(pfx);
    return rc;
}

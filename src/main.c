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
#include <nghttp2/nghttp2.h>
#ifdef LG_HAVE_HTTP3
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#endif
#include "net/json.h"
#include <sys/time.h>
#include <sys/socket.h>
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
        "  -s signal      send a signal to the master: stop, quit, reload, reopen;\n"
        "                 status: print the running figures (a status = \"json\" route)\n"
        "  --import-nginx file [--out dir]\n"
        "                 translate an nginx configuration to stdout (or to dir/legate.conf\n"
        "                 and dir/conf.d/); what cannot be translated is reported on\n"
        "                 stderr as file:line (legate-nginx(7))\n"
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
    /* the HTTP/2 hardening found by the link test at build time */
    fprintf(o, "libnghttp2 %s (rapid-reset rate limit: %s, CONTINUATION limit: %s)\n",
            nghttp2_version(0)->version_str,
#ifdef HAVE_NGHTTP2_OPTION_SET_STREAM_RESET_RATE_LIMIT
            "yes",
#else
            "no, legate's own",
#endif
#ifdef HAVE_NGHTTP2_OPTION_SET_MAX_CONTINUATIONS
            "yes"
#else
            "no, legate's own"
#endif
            );
#ifdef LG_HAVE_HTTP3
    fprintf(o, "HTTP/3: libngtcp2 %s, libnghttp3 %s, GnuTLS %s (QUIC's TLS)\n",
            ngtcp2_version(0)->version_str, nghttp3_version(0)->version_str, gnutls_check_version(NULL));
#else
    fprintf(o, "HTTP/3: off (built without libngtcp2-dev, libngtcp2-crypto-gnutls-dev, libnghttp3-dev)\n");
#endif
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

/* A number member of object obj, or 0. */
static double jnum(const lg_json_t *j, size_t obj, const char *key)
{
    const lg_json_node_t *n = lg_json_get(j, obj, key);
    return n && n->type == LG_JSON_NUMBER ? n->num : 0;
}

/*
 * legate -s status: the running legate's figures, asked from the first
 * route with status = "json" in the configuration (through its listener,
 * as any client would), and printed for an operator on the box.
 */
static int print_status(const char *file, const char *prefix)
{
    char err[4096];
    lg_conf_t *c = lg_conf_load(file, prefix, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "%s", err);
        return 1;
    }
    const lg_route_t *rt = NULL;
    const lg_server_t *srv = NULL;
    for (size_t i = 0; i < c->nservers && rt == NULL; i++)
        for (size_t k = 0; k < c->servers[i].nroutes; k++) {
            const lg_route_t *r = &c->servers[i].routes[k];
            if (r->action == LG_ACTION_STATUS && strcmp(r->status_page, "json") == 0 &&
                r->match == LG_MATCH_EXACT) {
                rt = r;
                srv = &c->servers[i];
                break;
            }
        }
    const lg_listen_t *l = NULL;
    for (size_t i = 0; srv && i < srv->nlistens && l == NULL; i++)
        if (!srv->listens[i].tls)
            l = &srv->listens[i];
    if (rt == NULL || l == NULL) {
        fprintf(stderr, "legate: no route with status = \"json\" (exact path, a listener "
                        "without TLS) in %s: nothing to ask\n", c->file);
        lg_conf_free(c);
        return 1;
    }
    int fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { 5, 0 };
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, (const struct sockaddr *)&l->addr.ss, l->addr.len) < 0) {
        fprintf(stderr, "legate: cannot connect to %s: %s (is legate running?)\n", l->addr.text,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        lg_conf_free(c);
        return 1;
    }
    char req[600];
    int rl = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                      rt->pattern);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL || write(fd, req, (size_t)rl) != rl) {
        fprintf(stderr, "legate: cannot ask %s\n", l->addr.text);
        free(buf);
        close(fd);
        lg_conf_free(c);
        return 1;
    }
    for (ssize_t k; n < cap && (k = read(fd, buf + n, cap - n)) > 0;)
        n += (size_t)k;
    close(fd);
    buf[n] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    lg_json_t j = { 0 };
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || body == NULL ||
        lg_json_parse(&j, body + 4, n - (size_t)(body + 4 - buf), 100000, 8, err, sizeof(err)) < 0 ||
        j.nodes[0].type != LG_JSON_OBJECT) {
        fprintf(stderr, "legate: %s%s answered no status: %.60s\n", l->addr.text, rt->pattern, buf);
        lg_json_free(&j);
        free(buf);
        lg_conf_free(c);
        return 1;
    }
    const lg_json_node_t *v = lg_json_get(&j, 0, "version");
    printf("legate %s, %d workers, up since %.0f (Unix time), %.0f reloads\n",
           v && v->s ? v->s : "?", (int)jnum(&j, 0, "workers"), jnum(&j, 0, "start_time"),
           jnum(&j, 0, "reloads"));
    for (size_t i = 1; i < j.n; i = j.nodes[i].next) {
        const lg_json_node_t *m = &j.nodes[i];
        if (m->key && strcmp(m->key, "connections") == 0 && m->type == LG_JSON_OBJECT)
            printf("connections: %.0f active, %.0f accepted\n", jnum(&j, i, "active"),
                   jnum(&j, i, "accepted"));
        if (m->key && strcmp(m->key, "requests") == 0 && m->type == LG_JSON_OBJECT)
            printf("requests: 1xx %.0f, 2xx %.0f, 3xx %.0f, 4xx %.0f, 5xx %.0f\n",
                   jnum(&j, i, "1xx"), jnum(&j, i, "2xx"), jnum(&j, i, "3xx"), jnum(&j, i, "4xx"),
                   jnum(&j, i, "5xx"));
        if (m->key && strcmp(m->key, "cache") == 0 && m->type == LG_JSON_OBJECT)
            printf("cache: %.0f hits, %.0f misses, %.0f objects, %.0f of %.0f bytes\n",
                   jnum(&j, i, "hits"), jnum(&j, i, "misses"), jnum(&j, i, "objects"),
                   jnum(&j, i, "used"), jnum(&j, i, "capacity"));
        if (m->key && strcmp(m->key, "upstreams") == 0 && m->type == LG_JSON_ARRAY) {
            for (size_t u = i + 1; u < m->next; u = j.nodes[u].next) {
                const lg_json_node_t *un = lg_json_get(&j, u, "upstream"), *sn = lg_json_get(&j, u, "server"),
                                     *up = lg_json_get(&j, u, "up");
                printf("upstream %s server %s: %s, %.0f requests, %.0f failures\n",
                       un && un->s ? un->s : "?", sn && sn->s ? sn->s : "?",
                       up && up->type == LG_JSON_TRUE ? "up" : "DOWN", jnum(&j, u, "requests"),
                       jnum(&j, u, "failures"));
            }
        }
    }
    lg_json_free(&j);
    free(buf);
    lg_conf_free(c);
    return 0;
}

static int send_signal(const char *name, const char *file, const char *prefix)
{
    int sig;
    if (strcmp(name, "status") == 0)
        return print_status(file, prefix);
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
    const char *import_nginx = NULL, *import_out = NULL;
    int opt;
    static const struct option longopts[] = {
        { "help",         no_argument,       NULL, 'h' },
        { "version",      no_argument,       NULL, 'V' },
        { "import-nginx", required_argument, NULL, 'N' },
        { "out",          required_argument, NULL, 'O' },
        { NULL, 0, NULL, 0 },
    };
    lg_features_setup();
    lg_vars_init();     /* every load, -t's and the master's reloads, checks variable names */
    while ((opt = getopt_long(argc, argv, "hVtTqFc:p:s:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'V': version(); return 0;
        case 'N': import_nginx = optarg; break;
        case 'O': import_out = optarg; break;
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
    if (import_out && !import_nginx) {
        fprintf(stderr, "legate: --out goes with --import-nginx\n");
        return 1;
    }
    if (import_nginx)
        return lg_import_nginx_to(import_nginx, stdout, import_out, stderr) < 0 ? 1 : 0;
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

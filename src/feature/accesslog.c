/*
 * Access logs.  Each worker buffers lines per log file and writes them with
 * one write(2) when the buffer is nearly full, once a second, and at exit,
 * so logging costs no system call per request.  A regular file's write does
 * not wait for the network; with O_APPEND, lines from several workers never
 * interleave because each write holds whole lines.
 */
#include "feature/accesslog.h"

#include "pipeline/headers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/syslog.h"
#include "pipeline/vars.h"

#define LOG_BUF 65536
#define MAX_LOGS 64

static const char fmt_combined[] =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
    "\"$http_referer\" \"$http_user_agent\"";
static const char fmt_json[] =
    "{\"time\":\"$time_iso8601\",\"remote_addr\":\"$remote_addr\",\"request\":\"$request\","
    "\"method\":\"$request_method\",\"uri\":\"$request_uri\",\"host\":\"$host\","
    "\"status\":$status,\"bytes_sent\":$bytes_sent,\"body_bytes_sent\":$body_bytes_sent,"
    "\"request_time\":$request_time,\"upstream_addr\":\"$upstream_addr\","
    "\"upstream_status\":\"$upstream_status\",\"upstream_response_time\":\"$upstream_response_time\","
    "\"http_referer\":\"$http_referer\",\"http_user_agent\":\"$http_user_agent\"}";

/* For forward proxies: who went where, bytes each way, how long, and why not. */
static const char fmt_forward[] =
    "$time_iso8601 $remote_addr $remote_user \"$request_method $proxy_host\" $status "
    "$bytes_received $bytes_sent $request_time upstream=$upstream_addr blocked=\"$blocked\"";

typedef struct alog {
    char   *path;               /* borrowed from the conf */
    lg_syslog_t *sys;           /* owned: a "syslog:" target, each line a datagram; or NULL */
    int     fd;
    size_t  len;
    uint64_t seen;              /* lines that reached sampling (access_log_sample) */
    char    buf[LOG_BUF];
} alog_t;

static alog_t *logs[MAX_LOGS];  /* owned */
static size_t nlogs;

static alog_t *find_log(const char *path)
{
    for (size_t i = 0; i < nlogs; i++)
        if (strcmp(logs[i]->path, path) == 0)
            return logs[i];
    return NULL;
}

static int open_one(char *path)
{
    if (strcmp(path, "off") == 0 || find_log(path) || nlogs == MAX_LOGS)
        return 0;
    alog_t *l = malloc(sizeof(*l));
    if (l == NULL)
        return -1;
    l->path = path;
    l->len = 0;
    l->sys = NULL;
    if (lg_is_syslog(path)) {
        char err[256];
        l->fd = -1;
        if ((l->sys = calloc(1, sizeof(*l->sys))) == NULL ||
            lg_syslog_parse(path, l->sys, err, sizeof(err)) < 0 || lg_syslog_open(l->sys) < 0) {
            lg_log_errno(LG_LOG_ALERT, errno, "cannot open access log \"%s\"", path);
            free(l->sys);
            free(l);
            return -1;
        }
        logs[nlogs++] = l;
        return 0;
    }
    l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (l->fd < 0) {
        lg_log_errno(LG_LOG_ALERT, errno, "cannot open access log \"%s\"", path);
        free(l);
        return -1;
    }
    logs[nlogs++] = l;
    return 0;
}

int lg_accesslog_open_all(const lg_conf_t *conf)
{
    int rc = open_one(conf->http.access_log);
    for (size_t s = 0; s < conf->nservers; s++) {
        rc |= open_one(conf->servers[s].common.access_log);
        for (size_t r = 0; r < conf->servers[s].nroutes; r++)
            rc |= open_one(conf->servers[s].routes[r].common.access_log);
    }
    return rc;
}

static void flush_one(alog_t *l)
{
    size_t off = 0;
    while (off < l->len) {
        ssize_t n = write(l->fd, l->buf + off, l->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            lg_log_errno(LG_LOG_CRIT, errno, "write() to access log \"%s\" failed", l->path);
            break;
        }
        off += (size_t)n;
    }
    l->len = 0;
}

void lg_accesslog_flush(void)
{
    for (size_t i = 0; i < nlogs; i++)
        if (logs[i]->len)
            flush_one(logs[i]);
}

void lg_accesslog_reopen(void)
{
    for (size_t i = 0; i < nlogs; i++) {
        alog_t *l = logs[i];
        if (l->sys)
            continue;           /* a socket: nothing to reopen */
        if (l->len)
            flush_one(l);
        int fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            lg_log_errno(LG_LOG_ALERT, errno, "cannot reopen access log \"%s\"", l->path);
            continue;
        }
        close(l->fd);
        l->fd = fd;
    }
}

void lg_accesslog_write(lg_req_t *s)
{
    const lg_common_t *c = s->route ? &s->route->common
                         : s->server ? &s->server->common
                         : &s->conn->bind->default_server->common;
    if (strcmp(c->access_log, "off") == 0)
        return;
    alog_t *l = find_log(c->access_log);
    if (l == NULL)
        return;
    static const lg_tpl_t *combined, *forward, *json_fmt;
    const lg_tpl_t *fmt = c->log_format;
    int json = 0;
    if (strcmp(fmt->src, "combined") == 0) {
        fmt = combined ? combined : (combined = lg_vars_builtin(fmt_combined));
    } else if (strcmp(fmt->src, "forward") == 0) {
        fmt = forward ? forward : (forward = lg_vars_builtin(fmt_forward));
    } else if (strcmp(fmt->src, "json") == 0) {
        fmt = json_fmt ? json_fmt : (json_fmt = lg_vars_builtin(fmt_json));
        json = 1;
    }
    if (c->access_log_if) {
        /* nginx's access_log ... if=: an empty or "0" value skips the line */
        const char *v = lg_vars_expand(s, c->access_log_if, LG_VARS_RAW, NULL);
        if (v == NULL || v[0] == 0 || strcmp(v, "0") == 0)
            return;
    }
    /* HAProxy's "log ... sample 1:N": the first line of every N, counted
     * per worker and log, after access_log_if */
    if (c->access_log_sample > 1 && l->seen++ % (uint64_t)c->access_log_sample != 0)
        return;
    const char *line = lg_vars_expand(s, fmt, json ? LG_VARS_JSON : LG_VARS_ESCAPE, NULL);
    if (line == NULL)
        return;
    size_t n = strlen(line);
    if (l->sys) {
        lg_syslog_send(l->sys, 6, line, n);     /* informational */
        return;
    }
    if (n + 1 > LOG_BUF - l->len)
        flush_one(l);
    if (n + 1 > LOG_BUF)
        n = LOG_BUF - 1;
    memcpy(l->buf + l->len, line, n);
    l->buf[l->len + n] = '\n';
    l->len += n + 1;
    if (l->len > LOG_BUF / 4 * 3)
        flush_one(l);
}

/* The LOG phase: one line per request that got an answer. */
static int accesslog_phase(lg_req_t *r)
{
    if (r->status)
        lg_accesslog_write(r);
    return LG_OK;
}

const lg_feature_t lg_feature_accesslog = {
    .name = "access log",
    .handlers = { { LG_PH_LOG, accesslog_phase } },
};

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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/*
 * Squid's native access.log line ("squid"), for the report tools that read
 * it (calamaris, sarg, squidanalyzer):
 *
 *   time.ms elapsed-ms client result/status bytes method URL user hierarchy/peer type
 *   1286536308.779    180 192.0.2.7 TCP_MISS/200 411 GET http://example.com/ - HIER_DIRECT/198.51.100.1 -
 *
 * As Squid's "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt".
 * Built here rather than from a template: the result and hierarchy codes
 * are Squid's vocabulary, not variables of legate's own.  The content type
 * is not kept after the response head went out, so it is always "-".
 */
static void squid_field(char *out, size_t *n, size_t cap, const char *p, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len == 0) {
        p = "-";
        len = 1;
    }
    for (size_t i = 0; i < len && *n + 4 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= ' ' || c >= 0x7f) {    /* one field: no blanks inside */
            out[(*n)++] = '%';
            out[(*n)++] = hex[c >> 4];
            out[(*n)++] = hex[c & 15];
        } else {
            out[(*n)++] = (char)c;
        }
    }
    if (*n + 1 < cap)
        out[(*n)++] = ' ';
}

static const char *squid_result(const lg_req_t *s)
{
    if (s->blocked || s->status == 407)
        return "TCP_DENIED";
    if (s->ri.connect)
        return "TCP_TUNNEL";
    const char *cs = s->cache_status;
    if (cs == NULL)
        return s->status == 0 || (s->upstream_addr == NULL && s->status >= 400) ? "NONE_NONE"
                                                                              : "TCP_MISS";
    if (strcmp(cs, "HIT") == 0)
        return "TCP_HIT";
    if (strcmp(cs, "REVALIDATED") == 0)
        return "TCP_REFRESH_UNMODIFIED";
    if (strcmp(cs, "EXPIRED") == 0)
        return "TCP_REFRESH_MODIFIED";
    if (strcmp(cs, "STALE") == 0 || strcmp(cs, "UPDATING") == 0)
        return "TCP_REFRESH_FAIL_OLD";
    return "TCP_MISS";
}

static char *squid_line(lg_req_t *s)
{
    size_t cap = 8192, n = 0;
    char *out = lg_arena_alloc(&s->arena, cap);
    if (out == NULL)
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    n += (size_t)snprintf(out, cap, "%lld.%03ld %6lld %s %s/%03d %llu ", (long long)ts.tv_sec,
                          ts.tv_nsec / 1000000, (long long)(lg_w.loop.now - s->t_start),
                          s->peer_text, squid_result(s), s->status,
                          (unsigned long long)s->bytes_out);
    squid_field(out, &n, cap, s->req.method, s->req.method ? s->req.method_len : 0);
    if (s->req.target && !s->ri.connect && !s->ri.absolute_form && s->ri.host.n) {
        /* an origin-form request (a reverse proxy's): the URL it stands for */
        char *url = lg_arena_printf(&s->arena, "%s://%.*s%.*s", s->conn->e.ssl ? "https" : "http",
                                    (int)s->ri.host.n, s->ri.host.p, (int)s->req.target_len,
                                    s->req.target);
        squid_field(out, &n, cap, url, url ? strlen(url) : 0);
    } else {
        squid_field(out, &n, cap, s->req.target, s->req.target ? s->req.target_len : 0);
    }
    squid_field(out, &n, cap, s->user, s->user ? strlen(s->user) : 0);
    /* the peer as Squid names it: its address without the port */
    const char *peer = s->upstream_addr;
    size_t pl = peer ? strlen(peer) : 0;
    if (pl && peer[0] == '[') {
        peer++;
        pl = strcspn(peer, "]");
    } else if (pl && strchr(peer, ':') == strrchr(peer, ':')) {
        pl = strcspn(peer, ":");
    }
    const char *hier = peer == NULL ? "HIER_NONE" :
                       s->up && s->up->dyn == NULL && lg_req_is_forward(s) ? "FIRSTUP_PARENT" :
                       "HIER_DIRECT";
    n += (size_t)snprintf(out + n, cap - n, "%s/", hier);
    squid_field(out, &n, cap, peer, pl);
    if (n + 2 < cap) {
        out[n++] = '-';
    }
    out[n < cap ? n : cap - 1] = '\0';
    return out;
}
/* For stream sessions (a stream server's default): who, which listener, how
 * it ended ($status: 200 relayed, 400 not TLS / bad hello, 403 refused, 502
 * no upstream, 503 over a limit, 504 connect timed out), bytes from and to
 * the client, seconds, the upstream tried last, the ClientHello's name. */
static const char fmt_stream[] =
    "$remote_addr [$time_local] $server_port $status $bytes_received $bytes_sent $request_time "
    "upstream=$upstream_addr connect=$upstream_connect_time sni=\"$host\" ended=$tunnel_end";

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

static void put_line(alog_t *l, const char *line);

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
    static const lg_tpl_t *combined, *forward, *json_fmt, *stream_fmt;
    const lg_tpl_t *fmt = c->log_format;
    int json = 0, squid = 0;
    if (strcmp(fmt->src, "combined") == 0) {
        fmt = combined ? combined : (combined = lg_vars_builtin(fmt_combined));
    } else if (strcmp(fmt->src, "forward") == 0) {
        fmt = forward ? forward : (forward = lg_vars_builtin(fmt_forward));
    } else if (strcmp(fmt->src, "stream") == 0) {
        fmt = stream_fmt ? stream_fmt : (stream_fmt = lg_vars_builtin(fmt_stream));
    } else if (strcmp(fmt->src, "json") == 0) {
        fmt = json_fmt ? json_fmt : (json_fmt = lg_vars_builtin(fmt_json));
        json = 1;
    } else if (strcmp(fmt->src, "squid") == 0) {
        squid = 1;
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
    const char *line = squid ? squid_line(s)
                             : lg_vars_expand(s, fmt, json ? LG_VARS_JSON : LG_VARS_ESCAPE, NULL);
    if (line == NULL)
        return;
    put_line(l, line);
}

void lg_accesslog_line(const char *path, const char *line)
{
    alog_t *l = strcmp(path, "off") == 0 ? NULL : find_log(path);
    if (l)
        put_line(l, line);
}

/* One line into l's buffer (or its syslog target). */
static void put_line(alog_t *l, const char *line)
{
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

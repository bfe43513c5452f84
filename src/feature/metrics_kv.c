/*
 * Metrics families counted by key: a row of fams[] each.
 *
 * A family's series are the configuration's values of its labels a and b
 * (each(): zones, upstream servers, listeners) or a fixed list (afix),
 * times the fixed values of its outcome label w (wfix).  The master makes
 * every series when it loads a configuration (mx_kv_prepare); workers only
 * find them (kv_find), so a value no configuration named is never counted.
 * A page lists a family's series in the running configuration's order.
 * Their counts live in their own shared-memory zone, "metrics_kv", kept
 * across reloads as long as its size stays.
 * Adding a family: an entry in lg_mx_family_t (metrics.h: other features
 * count it) or enum mx_own (metrics_kv.h: metrics.c counts it), a row of
 * fams[] here, and its lines in legate.conf(5).
 */

#include "feature/metrics_kv.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "pipeline/worker.h"

#define MX_KV 4096

typedef struct mx_kv {
    _Atomic uint64_t key;               /* 0: free; stored last */
    uint16_t         fam, w;
    char             a[64], b[64];      /* as the configuration wrote them (cut at 63) */
    _Atomic int64_t  v;
} mx_kv_t;

static mx_kv_t *kv;               /* [MX_KV]: the master's, inherited by workers */

typedef void (*mx_emit_fn)(void *arg, const char *a, const char *b);
typedef void (*mx_each_fn)(const lg_conf_t *c, mx_emit_fn emit, void *arg);

typedef struct mx_family {
    const char        *name, *type, *help;
    const char        *ka, *kb, *kw;    /* label names, NULL: none */
    mx_each_fn         each;            /* a (and b) from the configuration */
    const char *const *afix;            /* or a's fixed values */
    const char *const *wfix;            /* w's values */
    int                ms;              /* counted in ms, shown in seconds */
} mx_family_t;

static void each_zone_of(const lg_conf_t *c, mx_emit_fn emit, void *arg, int conn, int bytes)
{
    for (size_t i = 0; i < c->nlimit_zones; i++) {
        const lg_limit_zone_t *z = &c->limit_zones[i];
        if (z->conn == conn && (z->bytes_rate > 0) == bytes)
            emit(arg, z->name, NULL);
    }
}
static void each_req_zone(const lg_conf_t *c, mx_emit_fn e, void *a) { each_zone_of(c, e, a, 0, 0); }
static void each_conn_zone(const lg_conf_t *c, mx_emit_fn e, void *a) { each_zone_of(c, e, a, 1, 0); }
static void each_rate_zone(const lg_conf_t *c, mx_emit_fn e, void *a) { each_zone_of(c, e, a, 0, 1); }

static void each_upstream(const lg_conf_t *c, mx_emit_fn emit, void *arg)
{
    for (size_t u = 0; u < c->nupstreams; u++)
        emit(arg, c->upstreams[u].name, NULL);
}

static void each_server(const lg_conf_t *c, mx_emit_fn emit, void *arg)
{
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t k = 0; k < c->upstreams[u].nservers; k++)
            emit(arg, c->upstreams[u].name, c->upstreams[u].servers[k].addr.text);
}

static void each_listener(const lg_conf_t *c, mx_emit_fn emit, void *arg)
{
    for (size_t i = 0; i < c->nbinds; i++)
        emit(arg, c->binds[i].addr.text, NULL);
}

#define FIX(...) ((const char *const[]){ __VA_ARGS__, NULL })

static const mx_family_t fams[MX_NFAM] = {
    [LG_MX_LIMIT_REQ] = { "legate_limit_req_total", "counter",
        "Requests judged by a limit_req zone, by result ($limit_req_status).",
        "zone", NULL, "result", each_req_zone, NULL,
        FIX("PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN") },
    [LG_MX_LIMIT_CONN] = { "legate_limit_conn_total", "counter",
        "Requests judged by a limit_conn zone, by result ($limit_conn_status).",
        "zone", NULL, "result", each_conn_zone, NULL, FIX("PASSED", "REJECTED", "REJECTED_DRY_RUN") },
    [LG_MX_LIMIT_RATE] = { "legate_limit_rate_responses_total", "counter",
        "Responses sent under a limit_rate zone's shared bandwidth.",
        "zone", NULL, NULL, each_rate_zone, NULL, NULL },
    [LG_MX_LIMIT_RATE_WAIT] = { "legate_limit_rate_waits_total", "counter",
        "Times a response waited for its share of a limit_rate zone.",
        "zone", NULL, NULL, each_rate_zone, NULL, NULL },
    [LG_MX_ACCESS] = { "legate_access_rules_total", "counter",
        "Verdicts of access_rules on client addresses.",
        NULL, NULL, "result", NULL, NULL, FIX("allowed", "denied") },
    [LG_MX_AUTH] = { "legate_auth_total", "counter",
        "Authentication outcomes: auth_basic, auth_jwt, auth_request.",
        "method", NULL, "result", NULL, FIX("basic", "jwt", "request"),
        FIX("passed", "rejected", "throttled", "failed") },
    [LG_MX_SOCKS] = { "legate_socks_sessions_total", "counter",
        "SOCKS5 sessions, by how they ended.",
        NULL, NULL, "result", NULL, NULL, FIX("tunnel", "refused", "auth_failed", "bad_handshake") },
    [LG_MX_DNS] = { "legate_dns_lookups_total", "counter",
        "Names the forward proxy looked up, by result.",
        NULL, NULL, "result", NULL, NULL, FIX("ok", "failed", "timeout") },
    [LG_MX_HEALTH] = { "legate_upstream_health_checks_total", "counter",
        "Active health checks, by result.",
        "upstream", "server", "result", each_server, NULL, FIX("pass", "fail") },
    [LG_MX_CACHE_COLLAPSED] = { "legate_cache_collapsed_waits_total", "counter",
        "Requests that waited for another request's fill of the same object (cache_lock).",
        NULL, NULL, NULL, NULL, NULL, NULL },
    [LG_MX_CACHE_PURGE] = { "legate_cache_purges_total", "counter",
        "PURGE requests, by result.",
        NULL, NULL, "result", NULL, NULL, FIX("purged", "not_found", "refused") },
    [LG_MX_UP_CONNECT_ERR] = { "legate_upstream_connect_errors_total", "counter",
        "Tries whose connect() to the server failed (refused, unreachable), timeouts apart.",
        "upstream", "server", NULL, each_server, NULL, NULL },
    [LG_MX_UP_TIMEOUT] = { "legate_upstream_timeouts_total", "counter",
        "Tries that timed out: proxy_connect_timeout, proxy_send_timeout, proxy_read_timeout.",
        "upstream", "server", "phase", each_server, NULL, FIX("connect", "send", "read") },
    [LG_MX_ACCEPT_PAUSED] = { "legate_accept_paused_total", "counter",
        "Times a worker stopped accepting: worker_connections busy and none idle to close.",
        NULL, NULL, NULL, NULL, NULL, NULL },
    [LG_MX_ACCEPT_PAUSED_MS] = { "legate_accept_paused_seconds_total", "counter",
        "Time workers spent not accepting at worker_connections (summed over workers; "
        "counted when accepting resumes).",
        NULL, NULL, NULL, NULL, NULL, NULL, 1 },
    [MX_FWD] = { "legate_forward_requests_total", "counter",
        "Forward-proxy requests (kind \"request\") and CONNECT or SOCKS5 tunnels, by outcome.",
        "kind", NULL, "outcome", NULL, FIX("request", "tunnel"), FIX("passed", "refused", "failed") },
    [MX_FWD_REFUSED] = { "legate_forward_refused_total", "counter",
        "Forward-proxy requests and tunnels refused, by the rule that refused them.",
        NULL, NULL, "rule", NULL, NULL,
        FIX("deny_clients", "allow_clients", "deny_countries", "allow_countries", "auth",
            "allow_users", "connect_ports", "socks_ports", "http_ports", "url_filters",
            "private_destination", "deny_destinations", "loop", "user_rule", "block_domains",
            "allow_domains", "anonymous_domains", "other") },
    [MX_CODING_IN] = { "legate_compression_bytes_in_total", "counter",
        "Response bytes before compression here, per coding.",
        "coding", NULL, NULL, NULL, FIX("gzip", "br", "zstd"), NULL },
    [MX_CODING_OUT] = { "legate_compression_bytes_out_total", "counter",
        "Response bytes after compression here, per coding (saved: in - out).",
        "coding", NULL, NULL, NULL, FIX("gzip", "br", "zstd"), NULL },
    [MX_UP_REUSED] = { "legate_upstream_reused_connections_total", "counter",
        "Requests sent on a kept-alive connection from the pool.",
        "upstream", "server", NULL, each_server, NULL, NULL },
    [MX_UP_IDLE] = { "legate_upstream_idle_connections", "gauge",
        "Kept-alive connections waiting in the pools of all workers.",
        "upstream", "server", NULL, each_server, NULL, NULL },
    [MX_UP_QUEUED] = { "legate_upstream_queued_total", "counter",
        "Requests that waited because every server was at max_conns.",
        "upstream", NULL, NULL, each_upstream, NULL, NULL },
    [MX_UP_QUEUE] = { "legate_upstream_queue_depth", "gauge",
        "Requests waiting now because every server is at max_conns.",
        "upstream", NULL, NULL, each_upstream, NULL, NULL },
    [MX_UP_REJECTED] = { "legate_upstream_rejected_total", "counter",
        "Requests answered 503 by the circuit breaker: the queue was full, or no room came in "
        "queue_timeout.",
        "upstream", NULL, "reason", each_upstream, NULL, FIX("queue_full", "queue_timeout") },
    [MX_PROTO] = { "legate_http_requests_by_protocol_total", "counter",
        "Requests per listener and HTTP version.",
        "listener", NULL, "protocol", each_listener, NULL, FIX("HTTP/1.0", "HTTP/1.1", "HTTP/2", "other") },
};

static uint64_t kv_hash(int fam, const char *a, const char *b, int w)
{
    uint64_t h = lg_hash64(a, strlen(a), 0x6b76u + (uint64_t)fam * 977u + (uint64_t)w);
    return lg_hash64(b, strlen(b), h) | 1;
}

static int kv_same(const mx_kv_t *e, int fam, const char *a, const char *b, int w)
{
    return e->fam == fam && e->w == w && strncmp(e->a, a, sizeof(e->a) - 1) == 0 &&
           strncmp(e->b, b, sizeof(e->b) - 1) == 0;
}

static mx_kv_t *kv_table(void) { return kv; }

/* The series' index, or -1: none (not made from the configuration). */
static int kv_find(int fam, const char *a, const char *b, int w)
{
    mx_kv_t *t = kv_table();
    a = a ? a : "";
    b = b ? b : "";
    uint64_t k = kv_hash(fam, a, b, w);
    for (unsigned n = 0, i = (unsigned)(k % MX_KV); n < MX_KV; n++, i = (i + 1) % MX_KV) {
        uint64_t have = atomic_load_explicit(&t[i].key, memory_order_acquire);
        if (have == 0)
            return -1;
        if (have == k && kv_same(&t[i], fam, a, b, w))
            return (int)i;
    }
    return -1;
}

static int kv_full_warned;

/* Master: the series, found or made. */
static void kv_make(int fam, const char *a, const char *b, int w)
{
    mx_kv_t *t = kv_table();
    a = a ? a : "";
    b = b ? b : "";
    uint64_t k = kv_hash(fam, a, b, w);
    for (unsigned n = 0, i = (unsigned)(k % MX_KV); n < MX_KV; n++, i = (i + 1) % MX_KV) {
        uint64_t have = atomic_load(&t[i].key);
        if (have == k && kv_same(&t[i], fam, a, b, w))
            return;
        if (have == 0) {
            t[i].fam = (uint16_t)fam;
            t[i].w = (uint16_t)w;
            snprintf(t[i].a, sizeof(t[i].a), "%s", a);
            snprintf(t[i].b, sizeof(t[i].b), "%s", b);
            atomic_store_explicit(&t[i].key, k, memory_order_release);
            return;
        }
    }
    if (!kv_full_warned++)
        lg_warn("metrics: no room for more series (%d); %s{%s} and others are not counted",
                MX_KV, fams[fam].name, a);
}

/* Each (a, b) of a family: from the configuration, the fixed list, or one empty. */
static void kv_each(const lg_conf_t *c, int fam, mx_emit_fn emit, void *arg)
{
    const mx_family_t *f = &fams[fam];
    if (f->each)
        f->each(c, emit, arg);
    else if (f->afix)
        for (const char *const *v = f->afix; *v; v++)
            emit(arg, *v, NULL);
    else
        emit(arg, NULL, NULL);
}

static int kv_nw(int fam)
{
    int n = 0;
    for (const char *const *v = fams[fam].wfix; v && *v; v++)
        n++;
    return n ? n : 1;
}

typedef struct { int fam; } kv_mk_t;

static void kv_make_all(void *arg, const char *a, const char *b)
{
    int fam = ((kv_mk_t *)arg)->fam;
    for (int w = 0; w < kv_nw(fam); w++)
        kv_make(fam, a, b, w);
}

size_t mx_kv_shm_size(void)
{
    return MX_KV * sizeof(mx_kv_t);
}

int mx_kv_prepare(const lg_conf_t *c, lg_shm_t *shm, char *err, size_t errlen)
{
    kv = lg_shm_zone(shm, "metrics_kv", mx_kv_shm_size(), NULL);
    if (kv == NULL) {
        snprintf(err, errlen, "no room in shared memory for the metrics (shared_memory_size)");
        return -1;
    }
    for (int f = 0; f < MX_NFAM; f++) {
        LG_BUG_ON(fams[f].name == NULL);        /* a family without its row */
        kv_mk_t m = { f };
        kv_each(c, f, kv_make_all, &m);
    }
    return 0;
}

static int64_t kv_local[MX_KV];         /* this worker's counts, not yet moved */
static int kv_dirty;
static int kv_ready;                    /* a worker that publishes (mx_kv_init) */

static void kv_add(int i, int64_t n)
{
    if (i >= 0) {
        kv_local[i] += n;
        kv_dirty = 1;
    }
}

void mx_kv_count(int fam, const char *a, const char *b, const char *what, int64_t n)
{
    if (!kv_ready || fam < 0 || fam >= MX_NFAM)
        return;                 /* -t, or a process that publishes nothing */
    int w = 0;
    if (fams[fam].wfix) {
        while (fams[fam].wfix[w] && (what == NULL || strcmp(fams[fam].wfix[w], what) != 0))
            w++;
        if (fams[fam].wfix[w] == NULL)
            return;             /* not one of its outcomes */
    }
    kv_add(kv_find(fam, a, b, w), n);
}

void lg_mx_count(lg_mx_family_t fam, const char *a, const char *b, const char *what, uint64_t n)
{
    if ((int)fam >= 0 && fam < LG_MX_NCOUNTED)
        mx_kv_count((int)fam, a, b, what, (int64_t)n);
}

/* The gauges a worker holds as state (its pools, its queues): what it
 * published last, so the next flush moves only the change. */
static int64_t *gauge_sent;             /* [2][nupstreams * max servers] */

static void kv_gauge(int i, int64_t now, int64_t *was)
{
    if (i >= 0 && now != *was) {
        atomic_fetch_add_explicit(&kv_table()[i].v, now - *was, memory_order_relaxed);
        *was = now;
    }
}

void mx_kv_flush(void)
{
    if (!kv_ready)
        return;
    mx_kv_t *t = kv_table();
    if (kv_dirty) {
        for (unsigned i = 0; i < MX_KV; i++)
            if (kv_local[i]) {
                atomic_fetch_add_explicit(&t[i].v, kv_local[i], memory_order_relaxed);
                kv_local[i] = 0;
            }
        kv_dirty = 0;
    }
    const lg_conf_t *c = lg_w.conf;
    if (gauge_sent == NULL)
        return;
    size_t g = 0;
    for (size_t u = 0; u < c->nupstreams; u++) {
        const lg_upstream_t *up = &c->upstreams[u];
        kv_gauge(kv_find(MX_UP_QUEUE, up->name, NULL, 0), lg_w.queued ? lg_w.queued[u] : 0,
                 &gauge_sent[g++]);
        for (size_t k = 0; k < up->nservers; k++)
            kv_gauge(kv_find(MX_UP_IDLE, up->name, up->servers[k].addr.text, 0),
                     lg_w.npool && lg_w.npool[u] ? lg_w.npool[u][k] : 0, &gauge_sent[g++]);
    }
}

/* A worker that exits takes its share of the gauges with it (its pools
 * and queues go with it); one that dies without exit() leaves it. */
static pid_t gauge_pid;

static void kv_retract(void)
{
    if (getpid() != gauge_pid || gauge_sent == NULL || kv == NULL)
        return;                 /* a child forked from the worker: not its share */
    const lg_conf_t *c = lg_w.conf;
    size_t g = 0;
    for (size_t u = 0; u < c->nupstreams; u++) {
        const lg_upstream_t *up = &c->upstreams[u];
        kv_gauge(kv_find(MX_UP_QUEUE, up->name, NULL, 0), 0, &gauge_sent[g++]);
        for (size_t k = 0; k < up->nservers; k++)
            kv_gauge(kv_find(MX_UP_IDLE, up->name, up->servers[k].addr.text, 0), 0,
                     &gauge_sent[g++]);
    }
}

static size_t kv_ngauges(const lg_conf_t *c)
{
    size_t n = 0;
    for (size_t u = 0; u < c->nupstreams; u++)
        n += 1 + c->upstreams[u].nservers;
    return n;
}

int mx_kv_init(void)
{
    if (kv == NULL)
        return 0;               /* -t, a test without the master */
    gauge_sent = calloc(kv_ngauges(lg_w.conf) + 1, sizeof(*gauge_sent));
    if (gauge_sent == NULL)
        return -1;
    gauge_pid = getpid();
    atexit(kv_retract);
    kv_ready = 1;
    return 0;
}

/* ---- the page: a family's lines, in the configuration's order ---- */

static void esc(char *dst, size_t n, const char *src)
{
    size_t j = 0;
    for (; *src && j + 2 < n; src++) {
        if (*src == '"' || *src == '\\')
            dst[j++] = '\\';
        dst[j++] = *src == '\n' ? ' ' : *src;
    }
    dst[j] = 0;
}

typedef struct {
    void  *o;
    void (*line)(void *o, const char *text);
    int    fam;
} kv_pg_t;

static void kv_put_all(void *arg, const char *a, const char *b)
{
    kv_pg_t *p = arg;
    const mx_family_t *f = &fams[p->fam];
    for (int w = 0; w < kv_nw(p->fam); w++) {
        int i = kv_find(p->fam, a, b, w);
        if (i < 0)
            continue;
        char ea[136], eb[136], lab[400], text[512];
        esc(ea, sizeof(ea), a ? a : "");
        esc(eb, sizeof(eb), b ? b : "");
        size_t n = 0;
        lab[0] = 0;
        if (f->ka)
            n += (size_t)snprintf(lab + n, sizeof(lab) - n, "%s=\"%s\"", f->ka, ea);
        if (f->kb && n < sizeof(lab))
            n += (size_t)snprintf(lab + n, sizeof(lab) - n, "%s%s=\"%s\"", n ? "," : "", f->kb, eb);
        if (f->kw && n < sizeof(lab))
            snprintf(lab + n, sizeof(lab) - n, "%s%s=\"%s\"", n ? "," : "", f->kw, f->wfix[w]);
        int64_t v = atomic_load_explicit(&kv[i].v, memory_order_relaxed);
        v = v > 0 ? v : 0;
        if (f->ms)
            snprintf(text, sizeof(text), lab[0] ? "%s{%s} %.3f\n" : "%s%s %.3f\n", f->name, lab,
                     (double)v / 1000.0);
        else
            snprintf(text, sizeof(text), lab[0] ? "%s{%s} %lld\n" : "%s%s %lld\n", f->name, lab,
                     (long long)v);
        p->line(p->o, text);
    }
}

void mx_kv_page(void *o, void (*line)(void *o, const char *text))
{
    if (kv == NULL)
        return;
    char text[512];
    for (int f = 0; f < MX_NFAM; f++) {
        snprintf(text, sizeof(text), "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help,
                 fams[f].name, fams[f].type);
        line(o, text);
        kv_pg_t p = { o, line, f };
        kv_each(lg_w.conf, f, kv_put_all, &p);
    }
}

/*
 * Metrics and status pages: what every worker did, counted once.
 *
 * Counting costs no lock and no shared cache line on the hot path: each
 * worker adds into its own plain counters (the request's series in the LOG
 * phase; the front ends' per-listener counters in lg_w.lstats) and moves
 * them into the shared-memory zone "metrics" once a second, when it
 * answers a scrape, and before it exits -- so a page is at most a second
 * behind another worker, and a reload loses nothing.
 *
 * The zone has a fixed size and keeps its series by their labels (a hash
 * of the text), so counters survive reloads: a route that keeps its
 * server and pattern keeps its series; a new one gets a new series.
 * Labels come from the configuration only (server names, route patterns,
 * listener addresses, upstream and server names), never from a request,
 * so no client can grow the page.  At most MX_SERIES series: routes past
 * that are counted in their server's.
 *
 * A route with status = "metrics" answers in the Prometheus text format
 * (0.0.4); "json" with the same figures for scripts; "html" a page that
 * draws them, refreshing from the JSON (see status_html below).
 */
#include "feature/metrics.h"
#include "feature/metrics_kv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/disk.h"
#include "cache/http.h"
#include "cache/store.h"
#include "core/hash.h"
#include "core/log.h"
#include "http/codec.h"
#include "pipeline/headers.h"
#include "pipeline/request.h"
#include "proxy/proxy.h"
#include "proxy/upstate.h"

#define MX_SERIES 512
#define MX_LISTENERS 64
#define MX_MAGIC 0x4d455452u
#define MX_NSTAT (sizeof(lg_lstats_t) / sizeof(uint64_t))

/* method_class: the methods by name, any other as "other" */
static const char *const mx_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "other",
};
#define MX_METH ((int)(sizeof(mx_methods) / sizeof(mx_methods[0])))
#define MX_NCODE (5 + LG_METRICS_CODES)         /* 1xx .. 5xx, then metrics_status_codes */

/* request and response size histograms: bounds in bytes, powers of ten */
static const uint64_t mx_size_le[] = { 100, 1000, 10000, 100000, 1000000, 10000000, 100000000 };
#define MX_NSIZE ((int)(sizeof(mx_size_le) / sizeof(mx_size_le[0])))

typedef struct mx_series {
    _Atomic uint64_t key;                       /* hash of labels; 0 = free */
    char             labels[112];               /* server="...",route="..." */
    _Atomic uint64_t codes[MX_METH][MX_NCODE];  /* by method, by class or listed code */
    _Atomic uint64_t hist[LG_METRICS_BUCKETS + 1]; /* per bucket; the last is +Inf */
    _Atomic uint64_t dur_ms;
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t bytes_spliced;             /* of bytes_out: kernel-side (pipe.h) */
    _Atomic uint64_t qsize[MX_NSIZE + 1], rsize[MX_NSIZE + 1];     /* the last: +Inf */
} mx_series_t;

/* an upstream server as requests saw it */
typedef struct mx_useries {
    _Atomic uint64_t key;
    char             labels[112];               /* upstream="...",server="..." */
    _Atomic uint64_t hist[LG_METRICS_BUCKETS + 1]; /* time to the response head */
    _Atomic uint64_t rhist[LG_METRICS_BUCKETS + 1]; /* time to the response's end */
    _Atomic uint64_t head_ms, rsp_ms, connect_ms, connects, retries;
} mx_useries_t;

#define MX_USERIES 256

typedef struct mx_listener {
    _Atomic uint64_t key;
    char             label[72];                 /* listener="...",tls="..." */
    _Atomic uint64_t v[MX_NSTAT];               /* lg_lstats_t, field by field */
} mx_listener_t;

/* Outcomes with a fixed set of labels: counted from what a request's log
 * fields say, in the LOG phase.  One family's entries are adjacent. */
static const struct { const char *family, *label, *match; } evs[] = {
    { "legate_cache_requests_total", "status=\"HIT\"", "HIT" },
    { "legate_cache_requests_total", "status=\"MISS\"", "MISS" },
    { "legate_cache_requests_total", "status=\"EXPIRED\"", "EXPIRED" },
    { "legate_cache_requests_total", "status=\"STALE\"", "STALE" },
    { "legate_cache_requests_total", "status=\"UPDATING\"", "UPDATING" },
    { "legate_cache_requests_total", "status=\"REVALIDATED\"", "REVALIDATED" },
    { "legate_cache_requests_total", "status=\"BYPASS\"", "BYPASS" },
    { "legate_cache_requests_total", "status=\"OTHER\"", NULL },
    { "legate_compressed_responses_total", "coding=\"gzip\"", "gzip" },
    { "legate_compressed_responses_total", "coding=\"br\"", "br" },
    { "legate_compressed_responses_total", "coding=\"zstd\"", "zstd" },
    { "legate_tunnels_total", "kind=\"upgrade\"", "upgrade" },
    { "legate_tunnels_total", "kind=\"connect\"", "connect" },
    { "legate_refused_requests_total", "by=\"policy\"", NULL },
};
enum {
    EV_CACHE = 0, EV_CODING = 8, EV_TUNNEL = 11, EV_REFUSED = 13, EV_N = 14,
};
_Static_assert(sizeof(evs) / sizeof(evs[0]) == EV_N, "an entry a counter");


typedef struct mx_zone {
    uint32_t         magic;
    _Atomic uint64_t ev[EV_N];
    _Atomic uint64_t reloads;
    int64_t          start_time;                /* wall seconds */
    _Atomic int64_t  loaded_at;                 /* wall seconds: the running configuration's load */
    _Atomic int32_t  workers;
    uint32_t         nbuckets;
    int64_t          bucket_ms[LG_METRICS_BUCKETS];
    uint32_t         ncodes;                    /* metrics_status_codes */
    int32_t          code[LG_METRICS_CODES];
    mx_series_t      s[MX_SERIES];
    mx_listener_t    l[MX_LISTENERS];
    mx_useries_t     u[MX_USERIES];
} mx_zone_t;

static mx_zone_t *zone;         /* the master's, inherited by workers */

/* ---- master: series for the configuration ---- */

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

/* The series of labels, found or made: its index + 1, or 0 when full. */
static int series_of(const char *labels)
{
    uint64_t k = lg_hash64(labels, strlen(labels), 0x6d78) | 1;
    unsigned i = (unsigned)(k % MX_SERIES);
    for (unsigned n = 0; n < MX_SERIES; n++, i = (i + 1) % MX_SERIES) {
        mx_series_t *s = &zone->s[i];
        uint64_t have = atomic_load(&s->key);
        if (have == k && strcmp(s->labels, labels) == 0)
            return (int)i + 1;
        if (have == 0) {
            snprintf(s->labels, sizeof(s->labels), "%s", labels);
            atomic_store(&s->key, k);
            return (int)i + 1;
        }
    }
    return 0;
}

static const char *server_label(const lg_server_t *srv)
{
    if (srv->nnames && srv->names[0].name)
        return srv->names[0].name;
    return srv->nlistens ? srv->listens[0].addr.text : "-";
}

size_t lg_metrics_shm_size(const lg_conf_t *conf)
{
    (void)conf;
    return sizeof(mx_zone_t) + 4096 + mx_kv_shm_size() + 64;
}

int lg_metrics_prepare(lg_conf_t *conf, lg_shm_t *shm, char *err, size_t errlen)
{
    int fresh = 0;
    zone = lg_shm_zone(shm, "metrics", sizeof(mx_zone_t), &fresh);
    if (zone == NULL) {
        snprintf(err, errlen, "no room in shared memory for the metrics (shared_memory_size)");
        return -1;
    }
    if (fresh || zone->magic != MX_MAGIC) {
        memset(zone, 0, sizeof(*zone));
        zone->magic = MX_MAGIC;
        zone->start_time = (int64_t)time(NULL);
    } else {
        atomic_fetch_add(&zone->reloads, 1);
    }
    atomic_store(&zone->workers, conf->worker_processes);
    atomic_store(&zone->loaded_at, (int64_t)time(NULL));
    /* other bounds than the running ones: the old counts mean nothing */
    int64_t b[LG_METRICS_BUCKETS];
    uint32_t nb = 0;
    for (size_t i = 0; conf->metrics_buckets && i < conf->metrics_buckets->n && nb < LG_METRICS_BUCKETS; i++) {
        lg_msec_t ms;
        if (lg_parse_duration(conf->metrics_buckets->v[i], &ms) == 0)
            b[nb++] = ms;
    }
    if (nb != zone->nbuckets || memcmp(b, zone->bucket_ms, nb * sizeof(b[0])) != 0) {
        for (unsigned i = 0; i < MX_SERIES; i++) {
            for (unsigned j = 0; j <= LG_METRICS_BUCKETS; j++)
                atomic_store(&zone->s[i].hist[j], 0);
            atomic_store(&zone->s[i].dur_ms, 0);
        }
        for (unsigned i = 0; i < MX_USERIES; i++) {
            for (unsigned j = 0; j <= LG_METRICS_BUCKETS; j++) {
                atomic_store(&zone->u[i].hist[j], 0);
                atomic_store(&zone->u[i].rhist[j], 0);
            }
            atomic_store(&zone->u[i].head_ms, 0);
            atomic_store(&zone->u[i].rsp_ms, 0);
        }
        memcpy(zone->bucket_ms, b, nb * sizeof(b[0]));
        zone->nbuckets = nb;
    }
    /* other listed codes: a code still listed keeps its count, one no
     * longer listed moves it to its class */
    int32_t codes[LG_METRICS_CODES];
    uint32_t nc = 0;
    for (size_t i = 0; conf->metrics_status_codes && i < conf->metrics_status_codes->n &&
         nc < LG_METRICS_CODES; i++)
        codes[nc++] = (int32_t)strtol(conf->metrics_status_codes->v[i], NULL, 10);
    if (nc != zone->ncodes || memcmp(codes, zone->code, nc * sizeof(codes[0])) != 0) {
        for (unsigned i = 0; i < MX_SERIES; i++)
            for (int m = 0; m < MX_METH; m++) {
                _Atomic uint64_t *v = zone->s[i].codes[m];
                uint64_t was[LG_METRICS_CODES];
                for (uint32_t k = 0; k < zone->ncodes; k++)
                    was[k] = atomic_exchange(&v[5 + k], 0);
                for (uint32_t k = 0; k < zone->ncodes; k++) {
                    int to = zone->code[k] / 100 - 1;
                    for (uint32_t j = 0; j < nc; j++)
                        if (codes[j] == zone->code[k])
                            to = 5 + (int)j;
                    if (to >= 0 && to < MX_NCODE)
                        atomic_fetch_add(&v[to], was[k]);
                }
            }
        memcpy(zone->code, codes, nc * sizeof(codes[0]));
        zone->ncodes = nc;
    }
    char sl[64], rl[64], labels[160];
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        esc(sl, sizeof(sl), server_label(srv));
        snprintf(labels, sizeof(labels), "server=\"%s\",route=\"-\"", sl);
        srv->mx = series_of(labels);
        for (size_t j = 0; j < srv->nroutes; j++) {
            lg_route_t *rt = &srv->routes[j];
            esc(rl, sizeof(rl), rt->pattern ? rt->pattern : "-");
            snprintf(labels, sizeof(labels), "server=\"%s\",route=\"%s\"", sl, rl);
            rt->mx = series_of(labels);
            if (rt->mx == 0)
                rt->mx = srv->mx;       /* full: counted in the server's */
        }
    }
    for (size_t u = 0; u < conf->nupstreams; u++) {
        lg_upstream_t *up = &conf->upstreams[u];
        for (size_t k = 0; k < up->nservers; k++) {
            char un[64], sa[64];
            esc(un, sizeof(un), up->name);
            esc(sa, sizeof(sa), up->servers[k].addr.text);
            snprintf(labels, sizeof(labels), "upstream=\"%s\",server=\"%s\"", un, sa);
            uint64_t key = lg_hash64(labels, strlen(labels), 0x7573) | 1;
            unsigned slot = (unsigned)(key % MX_USERIES), n = 0;
            up->servers[k].mx = 0;
            for (; n < MX_USERIES; n++, slot = (slot + 1) % MX_USERIES) {
                mx_useries_t *e = &zone->u[slot];
                uint64_t have = atomic_load(&e->key);
                if (have == key && strcmp(e->labels, labels) == 0)
                    break;
                if (have == 0) {
                    snprintf(e->labels, sizeof(e->labels), "%s", labels);
                    atomic_store(&e->key, key);
                    break;
                }
            }
            if (n < MX_USERIES)
                up->servers[k].mx = (int)slot + 1;
        }
    }
    for (size_t i = 0; i < conf->nbinds && i < MX_LISTENERS; i++) {
        const lg_bind_t *bd = &conf->binds[i];
        char label[72], a[48];
        esc(a, sizeof(a), bd->addr.text);
        snprintf(label, sizeof(label), "listener=\"%s\",tls=\"%s\"", a, bd->tls ? "yes" : "no");
        uint64_t k = lg_hash64(label, strlen(label), 0x6c73) | 1;
        unsigned slot = (unsigned)(k % MX_LISTENERS), n = 0;
        for (; n < MX_LISTENERS; n++, slot = (slot + 1) % MX_LISTENERS) {
            uint64_t have = atomic_load(&zone->l[slot].key);
            if (have == k || have == 0)
                break;
        }
        if (n < MX_LISTENERS && atomic_load(&zone->l[slot].key) == 0) {
            snprintf(zone->l[slot].label, sizeof(zone->l[slot].label), "%s", label);
            atomic_store(&zone->l[slot].key, k);
        }
    }
    return mx_kv_prepare(conf, shm, err, errlen);
}

/* ---- worker: local counts, moved to the zone ---- */

typedef struct mx_local {
    uint64_t codes[MX_METH][MX_NCODE];
    uint64_t hist[LG_METRICS_BUCKETS + 1];
    uint64_t dur_ms, bytes_in, bytes_out, bytes_spliced;
    uint64_t qsize[MX_NSIZE + 1], rsize[MX_NSIZE + 1];
    int      dirty;
} mx_local_t;

static mx_local_t *local;       /* [MX_SERIES] */
static uint64_t ev_local[EV_N];

typedef struct mx_ulocal {
    uint64_t hist[LG_METRICS_BUCKETS + 1], rhist[LG_METRICS_BUCKETS + 1];
    uint64_t head_ms, rsp_ms, connect_ms, connects, retries;
    int      dirty;
} mx_ulocal_t;

static mx_ulocal_t ulocal[MX_USERIES];
static lg_lstats_t *sent;       /* [nbinds]: what was moved already */
static int *bind_slot;          /* [nbinds]: the zone's listener entry, or -1 */

static int metrics_init(void)
{
    if (zone == NULL)
        return 0;               /* -t, a test without the master */
    const lg_conf_t *c = lg_w.conf;
    local = calloc(MX_SERIES, sizeof(*local));
    lg_w.lstats = calloc(c->nbinds ? c->nbinds : 1, sizeof(lg_lstats_t));
    sent = calloc(c->nbinds ? c->nbinds : 1, sizeof(lg_lstats_t));
    bind_slot = calloc(c->nbinds ? c->nbinds : 1, sizeof(int));
    if (local == NULL || lg_w.lstats == NULL || sent == NULL || bind_slot == NULL ||
        mx_kv_init() < 0)
        return -1;
    for (size_t i = 0; i < c->nbinds; i++) {
        char label[72], a[48];
        esc(a, sizeof(a), c->binds[i].addr.text);
        snprintf(label, sizeof(label), "listener=\"%s\",tls=\"%s\"", a, c->binds[i].tls ? "yes" : "no");
        uint64_t k = lg_hash64(label, strlen(label), 0x6c73) | 1;
        bind_slot[i] = -1;
        for (unsigned n = 0, s = (unsigned)(k % MX_LISTENERS); n < MX_LISTENERS;
             n++, s = (s + 1) % MX_LISTENERS)
            if (atomic_load(&zone->l[s].key) == k) {
                bind_slot[i] = (int)s;
                break;
            }
    }
    return 0;
}

void lg_metrics_flush(void)
{
    if (zone == NULL || local == NULL)
        return;
    for (unsigned i = 0; i < MX_SERIES; i++) {
        mx_local_t *l = &local[i];
        if (!l->dirty)
            continue;
        mx_series_t *s = &zone->s[i];
        for (int m = 0; m < MX_METH; m++)
            for (int j = 0; j < MX_NCODE; j++)
                if (l->codes[m][j])
                    atomic_fetch_add_explicit(&s->codes[m][j], l->codes[m][j], memory_order_relaxed);
        for (unsigned j = 0; j <= LG_METRICS_BUCKETS; j++)
            if (l->hist[j])
                atomic_fetch_add_explicit(&s->hist[j], l->hist[j], memory_order_relaxed);
        atomic_fetch_add_explicit(&s->dur_ms, l->dur_ms, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->bytes_in, l->bytes_in, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->bytes_out, l->bytes_out, memory_order_relaxed);
        if (l->bytes_spliced)
            atomic_fetch_add_explicit(&s->bytes_spliced, l->bytes_spliced, memory_order_relaxed);
        for (int j = 0; j <= MX_NSIZE; j++) {
            if (l->qsize[j])
                atomic_fetch_add_explicit(&s->qsize[j], l->qsize[j], memory_order_relaxed);
            if (l->rsize[j])
                atomic_fetch_add_explicit(&s->rsize[j], l->rsize[j], memory_order_relaxed);
        }
        memset(l, 0, sizeof(*l));
    }
    for (unsigned i = 0; i < MX_USERIES; i++) {
        mx_ulocal_t *l = &ulocal[i];
        if (!l->dirty)
            continue;
        mx_useries_t *u = &zone->u[i];
        for (unsigned j = 0; j <= LG_METRICS_BUCKETS; j++) {
            if (l->hist[j])
                atomic_fetch_add_explicit(&u->hist[j], l->hist[j], memory_order_relaxed);
            if (l->rhist[j])
                atomic_fetch_add_explicit(&u->rhist[j], l->rhist[j], memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&u->head_ms, l->head_ms, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->rsp_ms, l->rsp_ms, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->connect_ms, l->connect_ms, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->connects, l->connects, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->retries, l->retries, memory_order_relaxed);
        memset(l, 0, sizeof(*l));
    }
    mx_kv_flush();
    for (int i = 0; i < EV_N; i++)
        if (ev_local[i]) {
            atomic_fetch_add_explicit(&zone->ev[i], ev_local[i], memory_order_relaxed);
            ev_local[i] = 0;
        }
    for (size_t i = 0; lg_w.lstats && i < lg_w.conf->nbinds; i++) {
        if (bind_slot[i] < 0)
            continue;
        const uint64_t *now = (const uint64_t *)&lg_w.lstats[i];
        uint64_t *was = (uint64_t *)&sent[i];
        for (size_t f = 0; f < MX_NSTAT; f++)
            if (now[f] != was[f]) {
                atomic_fetch_add_explicit(&zone->l[bind_slot[i]].v[f], now[f] - was[f],
                                          memory_order_relaxed);
                was[f] = now[f];
            }
    }
}

/* The entry of family [first, first + n) whose match is s (the last: any other). */
static void count_ev(int first, int n, const char *s)
{
    if (s == NULL)
        return;
    int i = first;
    while (i < first + n - 1 && evs[i].match && strcmp(evs[i].match, s) != 0)
        i++;
    if (evs[i].match && strcmp(evs[i].match, s) != 0)
        return;                 /* the family has no catch-all */
    ev_local[i]++;
}

/* why the forward proxy refused, from the start of its reason ($blocked):
 * a fixed set, never the reason's text */
static const struct { const char *prefix, *rule; } fwd_rules[] = {
    { "the client address is in deny_clients", "deny_clients" },
    { "the client address is not in allow_clients", "allow_clients" },
    { "clients from ", "deny_countries" },
    { "the client's country", "allow_countries" },
    { "proxy authentication required", "auth" },
    { "user ", "allow_users" },
    { "the URL matches the filter", "url_filters" },
    { "the destination is a ", "private_destination" },
    { "the destination address is in deny_destinations", "deny_destinations" },
    { "forwarding loop", "loop" },
};
/* reasons that name the host first: "HOST is blocked by ...", ... */
static const struct { const char *infix, *rule; } fwd_rules_in[] = {
    { " is not allowed (connect_ports)", "connect_ports" },
    { " is not allowed (socks_ports)", "socks_ports" },
    { " is not allowed (http_ports)", "http_ports" },
    { " is not allowed for ", "user_rule" },      /* a user rule's own port list */
    { " is not in anonymous_domains ", "anonymous_domains" },
    { " is blocked for ", "user_rule" },
    { " is blocked by ", "block_domains" },
    { " is not in allow_domains ", "allow_domains" },
};

/* A forward-proxy request or tunnel: its outcome, and the rule that
 * refused it (from its reason's fixed start, never the reason's text). */
static void count_forward(const lg_req_t *r)
{
    int kind = r->ri.connect ? 1 : 0;
    int refused = r->blocked != NULL || r->status == 403 || r->status == 407;
    int failed = !refused && (r->status >= 500 || r->status == 0);
    mx_kv_count(MX_FWD, kind ? "tunnel" : "request", NULL,
                refused ? "refused" : failed ? "failed" : "passed", 1);
    if (!refused)
        return;
    const char *why = r->blocked ? r->blocked : "";
    const char *rule = "other";
    for (size_t i = 0; i < sizeof(fwd_rules) / sizeof(fwd_rules[0]) && !strcmp(rule, "other"); i++)
        if (strncmp(why, fwd_rules[i].prefix, strlen(fwd_rules[i].prefix)) == 0)
            rule = fwd_rules[i].rule;
    for (size_t i = 0; i < sizeof(fwd_rules_in) / sizeof(fwd_rules_in[0]) && !strcmp(rule, "other"); i++)
        if (strstr(why, fwd_rules_in[i].infix))
            rule = fwd_rules_in[i].rule;
    mx_kv_count(MX_FWD_REFUSED, NULL, NULL, rule, 1);
}

void lg_mx_upstream_error(const struct lg_uconn *uc, const char *phase)
{
    if (uc == NULL || uc->up == NULL || uc->up->index < 0 || uc->server >= uc->up->nservers)
        return;                 /* none, or a forward proxy's destination: not a label */
    mx_kv_count(phase ? LG_MX_UP_TIMEOUT : LG_MX_UP_CONNECT_ERR, uc->up->name,
                uc->up->servers[uc->server].addr.text, phase, 1);
}

void lg_mx_accept_paused(int paused)
{
    static lg_msec_t since;     /* when this worker stopped accepting; 0: it accepts */
    if (paused && since == 0) {
        mx_kv_count(LG_MX_ACCEPT_PAUSED, NULL, NULL, NULL, 1);
        since = lg_w.loop.now ? lg_w.loop.now : 1;
    } else if (!paused && since) {
        mx_kv_count(LG_MX_ACCEPT_PAUSED_MS, NULL, NULL, NULL,
                    lg_w.loop.now > since ? lg_w.loop.now - since : 0);
        since = 0;
    }
}

static int size_bucket(uint64_t n)
{
    int b = 0;
    while (b < MX_NSIZE && n > mx_size_le[b])
        b++;
    return b;
}

static int method_of(const lg_req_t *r)
{
    for (int m = 0; m < MX_METH - 1; m++)
        if (r->req.method && strlen(mx_methods[m]) == r->req.method_len &&
            memcmp(mx_methods[m], r->req.method, r->req.method_len) == 0)
            return m;
    return MX_METH - 1;
}

/* The LOG phase: the request in its route's series, and its outcomes. */
static int log_phase(lg_req_t *r)
{
    if (local == NULL || r->server == NULL)
        return LG_OK;
    count_ev(EV_CACHE, 8, r->cache_status);
    static const char *const coding[] = { NULL, "gzip", NULL, "br", "zstd" };
    if (r->xform > 0 && r->xform < 5 && coding[r->xform]) {
        count_ev(EV_CODING, 3, coding[r->xform]);
        const lg_codec_t *cd = r->rspp.codec;
        if (cd) {               /* still live: the pipe is released after the LOG phase */
            mx_kv_count(MX_CODING_IN, coding[r->xform], NULL, NULL, (int64_t)cd->total_in);
            mx_kv_count(MX_CODING_OUT, coding[r->xform], NULL, NULL, (int64_t)cd->total_out);
        }
    }
    if (lg_req_is_forward(r))
        count_forward(r);
    if (r->conn && r->conn->bind) {
        int v = r->req.version;
        mx_kv_count(MX_PROTO, r->conn->bind->addr.text, NULL,
                    v == 10 ? "HTTP/1.0" : v == 11 ? "HTTP/1.1" : v == 20 ? "HTTP/2" : "other", 1);
    }
    /* the circuit breaker (max_conns and its queue, proxy/reverse.c) */
    if (r->up && r->up->index >= 0) {
        if (r->t_queued)
            mx_kv_count(MX_UP_QUEUED, r->up->name, NULL, NULL, 1);
        if (r->attach_err == EBUSY && r->status == 503 && r->upstream_status == 0)
            mx_kv_count(MX_UP_REJECTED, r->up->name, NULL,
                        r->t_queued ? "queue_timeout" : "queue_full", 1);
    }
    if (r->tunnel)
        count_ev(EV_TUNNEL, 2, r->ri.connect ? "connect" : "upgrade");
    if (r->blocked)
        ev_local[EV_REFUSED]++;
    /* the upstream server that answered: its series, found by the address
     * text the configuration gave it (configured upstreams only: a forward
     * proxy's destinations are not labels) */
    if (r->up && r->up->index >= 0 && r->upstream_addr && r->upstream_status) {
        for (size_t k = 0; k < r->up->nservers; k++) {
            if (r->up->servers[k].addr.text != r->upstream_addr || r->up->servers[k].mx <= 0)
                continue;
            mx_ulocal_t *u = &ulocal[r->up->servers[k].mx - 1];
            unsigned b = 0;
            while (b < zone->nbuckets && r->upstream_time > zone->bucket_ms[b])
                b++;
            u->hist[b]++;
            u->head_ms += (uint64_t)(r->upstream_time > 0 ? r->upstream_time : 0);
            /* the whole response: from the try to now, when its last byte
             * went on to the client (LOG runs at the response's end) */
            lg_msec_t rt = r->t_upstream ? lg_w.loop.now - r->t_upstream : r->upstream_time;
            if (rt < r->upstream_time)
                rt = r->upstream_time;
            for (b = 0; b < zone->nbuckets && rt > zone->bucket_ms[b]; b++)
                ;
            u->rhist[b]++;
            u->rsp_ms += (uint64_t)(rt > 0 ? rt : 0);
            /* a new connection, not one from the pool (metrics logs before
             * the reverse proxy gives the connection back) */
            if (r->uc && !r->uc->reused && r->upstream_connect_time >= 0) {
                u->connect_ms += (uint64_t)r->upstream_connect_time;
                u->connects++;
            }
            u->retries += r->ntries > 1 ? r->ntries - 1 : 0;
            if (r->uc && r->uc->reused)
                mx_kv_count(MX_UP_REUSED, r->up->name, r->upstream_addr, NULL, 1);
            u->dirty = 1;
            break;
        }
    }
    int mx = r->route ? r->route->mx : r->server->mx;
    if (mx <= 0 || mx > MX_SERIES)
        return LG_OK;
    mx_local_t *l = &local[mx - 1];
    int cls = r->status / 100 - 1;
    for (uint32_t k = 0; k < zone->ncodes; k++)
        if (zone->code[k] == r->status)
            cls = 5 + (int)k;   /* listed: its own */
    if (cls >= 0 && cls < MX_NCODE)
        l->codes[method_of(r)][cls]++;
    lg_msec_t d = lg_w.loop.now - r->t_start;
    if (d < 0)
        d = 0;
    unsigned b = 0;
    while (b < zone->nbuckets && d > zone->bucket_ms[b])
        b++;
    l->hist[b]++;
    l->dur_ms += (uint64_t)d;
    l->bytes_in += r->bytes_in;
    l->bytes_out += r->bytes_out;
    l->bytes_spliced += r->rspp.spliced;
    l->qsize[size_bucket(r->bytes_in)]++;
    l->rsize[size_bucket(r->bytes_out)]++;
    l->dirty = 1;
    return LG_OK;
}

/* ---- the pages ---- */

typedef struct out {
    char       *p;              /* malloc'd: the page being written */
    size_t      n, cap;
    int         oom;
} out_t;

/*
 * A page is made at most every PAGE_TTL_MS in a worker and served from
 * there meanwhile: a scraper that asks a thousand times a second costs a
 * copy per request, not the whole page (figures that old are a tenth of
 * the flush interval).
 */
#define PAGE_TTL_MS 100
static out_t page_cache[3];     /* [0] Prometheus text, [1] json, [2] OpenMetrics */
static lg_msec_t page_at[3] = { -1000000, -1000000, -1000000 };



static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !o->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)k < o->cap - o->n) {
            o->n += (size_t)k;
            return;
        }
        size_t cap = (o->cap + (size_t)k) * 2;
        char *np = realloc(o->p, cap);
        if (np == NULL) {
            o->oom = 1;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

/*
 * OpenMetrics 1.0 from the Prometheus text: a counter family is named
 * without its _total (its samples keep it), and the page ends with # EOF.
 */
static void to_openmetrics(out_t *om, const out_t *prom)
{
    const char *p = prom->p, *end = prom->p + prom->n;
    while (p < end && !om->oom) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        int help = len > 7 && memcmp(p, "# HELP ", 7) == 0;
        int type = len > 7 && memcmp(p, "# TYPE ", 7) == 0;
        if (help || type) {
            const char *name = p + 7, *sp = memchr(name, ' ', len - 7);
            size_t nlen = sp ? (size_t)(sp - name) : 0;
            if (nlen > 6 && memcmp(name + nlen - 6, "_total", 6) == 0) {
                put(om, "%.*s%.*s", (int)(7 + nlen - 6), p, (int)(len - 7 - nlen), sp);
                p += len;
                continue;
            }
        }
        put(om, "%.*s", (int)len, p);
        p += len;
    }
    put(om, "# EOF\n");
}

static uint64_t ld(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

/* lg_lstats_t's fields in order: a family each, but the handshake
 * failures, one family with a reason label */
#define MX_TLS_FAIL 12
#define MX_IDLE_IN 9            /* idle_in, idle_out: the idle gauge, not families */
static const char *const lnames[MX_NSTAT] = {
    "connections_accepted_total", "connections_closed_total", "tls_handshakes_total",
    "tls_resumptions_total", "http2_connections_total",
    "http2_streams_total", "http2_resets_received_total", "http2_resets_sent_total",
    "http2_goaways_sent_total", NULL, NULL, "connections_reclaimed_total",
    "timeout", "version", "cipher", "certificate", "closed", "other",
};

size_t (*lg_metrics_cluster)(char *buf, size_t n);
static uint64_t class_total(mx_series_t *s, int c);

/* ---- stream servers (issue 21) -------------------------------------------
 * Their sessions are requests of their server's series (the LOG phase above
 * counts them like any request); here they get families of their own, by
 * how they ended: 2xx relayed, 4xx refused (not TLS, access rules), 5xx no
 * upstream or over a limit.  Self-contained: only page_metrics() calls it. */
static void page_stream(out_t *o)
{
    const lg_conf_t *c = lg_w.conf;
    static const char *const cls[5] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    int any = 0;
    for (size_t i = 0; c && i < c->nservers; i++)
        any |= c->servers[i].stream && c->servers[i].mx > 0;
    if (!any)
        return;
    put(o, "# HELP legate_stream_sessions_total Stream sessions ended, by status class.\n"
           "# TYPE legate_stream_sessions_total counter\n");
    for (size_t i = 0; i < c->nservers; i++) {
        const lg_server_t *srv = &c->servers[i];
        if (!srv->stream || srv->mx <= 0 || srv->mx > MX_SERIES)
            continue;
        mx_series_t *se = &zone->s[srv->mx - 1];
        for (int k = 1; k < 5; k++)
            if (k != 2)
                put(o, "legate_stream_sessions_total{%s,status=\"%s\"} %llu\n", se->labels, cls[k],
                    (unsigned long long)class_total(se, k));
    }
    put(o, "# HELP legate_stream_received_bytes_total Bytes stream clients sent.\n"
           "# TYPE legate_stream_received_bytes_total counter\n");
    for (size_t i = 0; i < c->nservers; i++) {
        const lg_server_t *srv = &c->servers[i];
        if (srv->stream && srv->mx > 0 && srv->mx <= MX_SERIES)
            put(o, "legate_stream_received_bytes_total{%s} %llu\n", zone->s[srv->mx - 1].labels,
                (unsigned long long)ld(&zone->s[srv->mx - 1].bytes_in));
    }
    put(o, "# HELP legate_stream_sent_bytes_total Bytes sent to stream clients.\n"
           "# TYPE legate_stream_sent_bytes_total counter\n");
    for (size_t i = 0; i < c->nservers; i++) {
        const lg_server_t *srv = &c->servers[i];
        if (srv->stream && srv->mx > 0 && srv->mx <= MX_SERIES)
            put(o, "legate_stream_sent_bytes_total{%s} %llu\n", zone->s[srv->mx - 1].labels,
                (unsigned long long)ld(&zone->s[srv->mx - 1].bytes_out));
    }
    put(o, "# HELP legate_stream_session_seconds_total Time stream sessions lasted, summed.\n"
           "# TYPE legate_stream_session_seconds_total counter\n");
    for (size_t i = 0; i < c->nservers; i++) {
        const lg_server_t *srv = &c->servers[i];
        if (srv->stream && srv->mx > 0 && srv->mx <= MX_SERIES)
            put(o, "legate_stream_session_seconds_total{%s} %.3f\n", zone->s[srv->mx - 1].labels,
                (double)ld(&zone->s[srv->mx - 1].dur_ms) / 1000.0);
    }
}
/* ---- end of stream servers ---- */
static void put_line(void *o, const char *text)
{
    put(o, "%s", text);
}

/* An upstream server's histogram: to the head (rsp 0) or the end (1). */
static void up_hist(out_t *o, const char *name, const char *help, int rsp)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (unsigned i = 0; i < MX_USERIES; i++) {
        mx_useries_t *u = &zone->u[i];
        if (!ld(&u->key))
            continue;
        _Atomic uint64_t *h = rsp ? u->rhist : u->hist;
        uint64_t cum = 0;
        for (unsigned b = 0; b < zone->nbuckets; b++) {
            cum += ld(&h[b]);
            put(o, "%s_bucket{%s,le=\"%g\"} %llu\n", name, u->labels,
                (double)zone->bucket_ms[b] / 1000.0, (unsigned long long)cum);
        }
        cum += ld(&h[zone->nbuckets]);
        put(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n%s_sum{%s} %.3f\n%s_count{%s} %llu\n", name,
            u->labels, (unsigned long long)cum, name, u->labels,
            (double)ld(rsp ? &u->rsp_ms : &u->head_ms) / 1000.0, name, u->labels,
            (unsigned long long)cum);
    }
}

static void size_hist(out_t *o, const char *name, const char *help, int rsp)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (unsigned i = 0; i < MX_SERIES; i++) {
        mx_series_t *s = &zone->s[i];
        if (!ld(&s->key))
            continue;
        _Atomic uint64_t *h = rsp ? s->rsize : s->qsize;
        uint64_t cum = 0;
        for (int b = 0; b <= MX_NSIZE; b++) {
            cum += ld(&h[b]);
            if (b < MX_NSIZE)
                put(o, "%s_bucket{%s,le=\"%llu\"} %llu\n", name, s->labels,
                    (unsigned long long)mx_size_le[b], (unsigned long long)cum);
            else
                put(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, s->labels, (unsigned long long)cum);
        }
        put(o, "%s_sum{%s} %llu\n%s_count{%s} %llu\n", name, s->labels,
            (unsigned long long)ld(rsp ? &s->bytes_out : &s->bytes_in), name, s->labels,
            (unsigned long long)cum);
    }
}

static void page_metrics(out_t *o)
{
    static const char *const cls[5] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    put(o, "# HELP legate_build_info legate's version.\n# TYPE legate_build_info gauge\n"
           "legate_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    put(o, "# HELP legate_start_time_seconds When the master started (Unix time).\n"
           "# TYPE legate_start_time_seconds gauge\nlegate_start_time_seconds %lld\n",
        (long long)zone->start_time);
    put(o, "# HELP legate_reloads_total Configuration reloads.\n# TYPE legate_reloads_total counter\n"
           "legate_reloads_total %llu\n", (unsigned long long)ld(&zone->reloads));
    put(o, "# HELP legate_workers Worker processes configured.\n# TYPE legate_workers gauge\n"
           "legate_workers %d\n", atomic_load(&zone->workers));
    put(o, "# HELP legate_connections_active Client connections open.\n"
           "# TYPE legate_connections_active gauge\n");
    for (unsigned i = 0; i < MX_LISTENERS; i++)
        if (ld(&zone->l[i].key)) {
            uint64_t a = ld(&zone->l[i].v[0]), c = ld(&zone->l[i].v[1]);
            put(o, "legate_connections_active{%s} %llu\n", zone->l[i].label,
                (unsigned long long)(a > c ? a - c : 0));
        }
    put(o, "# HELP legate_connections_idle Keep-alive connections waiting for their next request.\n"
           "# TYPE legate_connections_idle gauge\n");
    for (unsigned i = 0; i < MX_LISTENERS; i++)
        if (ld(&zone->l[i].key)) {
            uint64_t a = ld(&zone->l[i].v[MX_IDLE_IN]), b = ld(&zone->l[i].v[MX_IDLE_IN + 1]);
            put(o, "legate_connections_idle{%s} %llu\n", zone->l[i].label,
                (unsigned long long)(a > b ? a - b : 0));
        }
    for (size_t f = 0; f < MX_TLS_FAIL; f++) {
        if (lnames[f] == NULL)
            continue;
        put(o, "# TYPE legate_%s counter\n", lnames[f]);
        for (unsigned i = 0; i < MX_LISTENERS; i++)
            if (ld(&zone->l[i].key))
                put(o, "legate_%s{%s} %llu\n", lnames[f], zone->l[i].label,
                    (unsigned long long)ld(&zone->l[i].v[f]));
    }
    put(o, "# HELP legate_tls_handshake_failures_total Failed TLS handshakes with clients, by why.\n"
           "# TYPE legate_tls_handshake_failures_total counter\n");
    for (unsigned i = 0; i < MX_LISTENERS; i++)
        if (ld(&zone->l[i].key))
            for (size_t f = MX_TLS_FAIL; f < MX_NSTAT; f++)
                put(o, "legate_tls_handshake_failures_total{%s,reason=\"%s\"} %llu\n",
                    zone->l[i].label, lnames[f], (unsigned long long)ld(&zone->l[i].v[f]));
    for (int i = 0; i < EV_N; i++) {
        if (i == 0 || strcmp(evs[i].family, evs[i - 1].family) != 0)
            put(o, "# TYPE %s counter\n", evs[i].family);
        put(o, "%s{%s} %llu\n", evs[i].family, evs[i].label, (unsigned long long)ld(&zone->ev[i]));
    }
    put(o, "# HELP legate_http_requests_total Requests answered, by method and status class "
           "(or code, metrics_status_codes).\n# TYPE legate_http_requests_total counter\n");
    for (unsigned i = 0; i < MX_SERIES; i++) {
        mx_series_t *s = &zone->s[i];
        if (!ld(&s->key))
            continue;
        for (int m = 0; m < MX_METH; m++) {
            uint64_t any = 0;
            for (int c = 0; c < MX_NCODE; c++)
                any |= ld(&s->codes[m][c]);
            if (m > 0 && any == 0)
                continue;       /* GET always; the others once they came */
            for (int c = 0; c < 5 + (int)zone->ncodes; c++) {
                char code[8];
                snprintf(code, sizeof(code), "%s", c < 5 ? cls[c] : "");
                if (c >= 5)
                    snprintf(code, sizeof(code), "%d", (int)zone->code[c - 5]);
                put(o, "legate_http_requests_total{%s,method_class=\"%s\",code=\"%s\"} %llu\n",
                    s->labels, mx_methods[m], code, (unsigned long long)ld(&s->codes[m][c]));
            }
        }
    }
    put(o, "# HELP legate_http_request_duration_seconds Time from the first byte of a request "
           "to its log line.\n# TYPE legate_http_request_duration_seconds histogram\n");
    for (unsigned i = 0; i < MX_SERIES; i++) {
        mx_series_t *s = &zone->s[i];
        if (!ld(&s->key))
            continue;
        uint64_t cum = 0;
        for (unsigned b = 0; b < zone->nbuckets; b++) {
            cum += ld(&s->hist[b]);
            put(o, "legate_http_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", s->labels,
                (double)zone->bucket_ms[b] / 1000.0, (unsigned long long)cum);
        }
        cum += ld(&s->hist[zone->nbuckets]);
        put(o, "legate_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", s->labels,
            (unsigned long long)cum);
        put(o, "legate_http_request_duration_seconds_sum{%s} %.3f\n", s->labels,
            (double)ld(&s->dur_ms) / 1000.0);
        put(o, "legate_http_request_duration_seconds_count{%s} %llu\n", s->labels,
            (unsigned long long)cum);
    }
    put(o, "# TYPE legate_http_request_bytes_total counter\n");
    for (unsigned i = 0; i < MX_SERIES; i++)
        if (ld(&zone->s[i].key))
            put(o, "legate_http_request_bytes_total{%s} %llu\n", zone->s[i].labels,
                (unsigned long long)ld(&zone->s[i].bytes_in));
    put(o, "# TYPE legate_http_response_bytes_total counter\n");
    for (unsigned i = 0; i < MX_SERIES; i++)
        if (ld(&zone->s[i].key))
            put(o, "legate_http_response_bytes_total{%s} %llu\n", zone->s[i].labels,
                (unsigned long long)ld(&zone->s[i].bytes_out));
    put(o, "# HELP legate_http_response_spliced_bytes_total Of the response bytes, those moved "
           "socket to socket by splice(2), never copied through legate.\n"
           "# TYPE legate_http_response_spliced_bytes_total counter\n");
    for (unsigned i = 0; i < MX_SERIES; i++)
        if (ld(&zone->s[i].key))
            put(o, "legate_http_response_spliced_bytes_total{%s} %llu\n", zone->s[i].labels,
                (unsigned long long)ld(&zone->s[i].bytes_spliced));
    size_hist(o, "legate_http_request_size_bytes", "Request sizes: head and body as received.", 0);
    size_hist(o, "legate_http_response_size_bytes", "Response sizes: bytes sent to the client.", 1);
    up_hist(o, "legate_upstream_header_duration_seconds",
            "Time from the try to the response head (time to first byte), per upstream server.", 0);
    up_hist(o, "legate_upstream_response_duration_seconds",
            "Time from the try to the response's end (its last byte passed on), per upstream "
            "server.", 1);
    put(o, "# TYPE legate_upstream_connects_total counter\n");
    for (unsigned i = 0; i < MX_USERIES; i++)
        if (ld(&zone->u[i].key))
            put(o, "legate_upstream_connects_total{%s} %llu\n", zone->u[i].labels,
                (unsigned long long)ld(&zone->u[i].connects));
    put(o, "# TYPE legate_upstream_connect_seconds_total counter\n");
    for (unsigned i = 0; i < MX_USERIES; i++)
        if (ld(&zone->u[i].key))
            put(o, "legate_upstream_connect_seconds_total{%s} %.3f\n", zone->u[i].labels,
                (double)ld(&zone->u[i].connect_ms) / 1000.0);
    put(o, "# HELP legate_upstream_retries_total Tries before this server answered.\n"
           "# TYPE legate_upstream_retries_total counter\n");
    for (unsigned i = 0; i < MX_USERIES; i++)
        if (ld(&zone->u[i].key))
            put(o, "legate_upstream_retries_total{%s} %llu\n", zone->u[i].labels,
                (unsigned long long)ld(&zone->u[i].retries));
    /* upstream servers: their shared state, as the balancers see it */
    const lg_conf_t *c = lg_w.conf;
    put(o, "# HELP legate_upstream_server_up 1 when the server takes requests (not ejected, "
           "health checks pass).\n# TYPE legate_upstream_server_up gauge\n");
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            int down = atomic_load(&st->hc_down) || atomic_load(&st->down_until) > lg_w.loop.now;
            put(o, "legate_upstream_server_up{upstream=\"%s\",server=\"%s\"} %d\n",
                c->upstreams[u].name, c->upstreams[u].servers[i].addr.text, !down);
        }
    /* the same, one-hot by why: a failing health check outranks an ejection */
    put(o, "# HELP legate_upstream_server_state 1 for the state the server is in: up, ejected "
           "(passive health: max_fails), down (active health checks).\n"
           "# TYPE legate_upstream_server_state gauge\n");
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            int hc = atomic_load(&st->hc_down) != 0;
            int ej = !hc && atomic_load(&st->down_until) > lg_w.loop.now;
            static const char *const states[3] = { "up", "ejected", "down" };
            for (int k = 0; k < 3; k++)
                put(o, "legate_upstream_server_state{upstream=\"%s\",server=\"%s\",state=\"%s\"} %d\n",
                    c->upstreams[u].name, c->upstreams[u].servers[i].addr.text, states[k],
                    k == (hc ? 2 : ej ? 1 : 0));
        }
    put(o, "# TYPE legate_upstream_requests_total counter\n");
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            put(o, "legate_upstream_requests_total{upstream=\"%s\",server=\"%s\"} %llu\n",
                c->upstreams[u].name, c->upstreams[u].servers[i].addr.text,
                (unsigned long long)lg_shm_get(&st->requests));
        }
    put(o, "# TYPE legate_upstream_failures_total counter\n");
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            put(o, "legate_upstream_failures_total{upstream=\"%s\",server=\"%s\"} %llu\n",
                c->upstreams[u].name, c->upstreams[u].servers[i].addr.text,
                (unsigned long long)lg_shm_get(&st->failures));
        }
    put(o, "# TYPE legate_upstream_active_requests gauge\n");
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            uint64_t a = 0;
            for (int w = 0; w < LG_UPSTATE_SLOTS; w++)
                a += atomic_load(&st->active[w]);
            put(o, "legate_upstream_active_requests{upstream=\"%s\",server=\"%s\"} %llu\n",
                c->upstreams[u].name, c->upstreams[u].servers[i].addr.text, (unsigned long long)a);
        }
    mx_kv_page(o, put_line);
    if (lg_cache) {
        lg_cache_stats_t cs;
        lg_store_stats(lg_cache, &cs);
        put(o, "# TYPE legate_cache_hits_total counter\nlegate_cache_hits_total %llu\n"
               "# TYPE legate_cache_misses_total counter\nlegate_cache_misses_total %llu\n"
               "# TYPE legate_cache_stores_total counter\nlegate_cache_stores_total %llu\n"
               "# TYPE legate_cache_evictions_total counter\nlegate_cache_evictions_total %llu\n"
               "# TYPE legate_cache_objects gauge\nlegate_cache_objects %llu\n"
               "# TYPE legate_cache_bytes gauge\nlegate_cache_bytes %llu\n"
               "# TYPE legate_cache_capacity_bytes gauge\nlegate_cache_capacity_bytes %llu\n",
            (unsigned long long)cs.hits, (unsigned long long)cs.misses, (unsigned long long)cs.stores,
            (unsigned long long)cs.evictions, (unsigned long long)cs.objects,
            (unsigned long long)cs.used, (unsigned long long)cs.capacity);
    }
    if (lg_disk) {              /* the cache's disk tier */
        lg_disk_stats_t ds;
        lg_disk_stats(&ds);
        put(o, "# TYPE legate_cache_disk_objects gauge\nlegate_cache_disk_objects %llu\n"
               "# TYPE legate_cache_disk_bytes gauge\nlegate_cache_disk_bytes %llu\n"
               "# TYPE legate_cache_disk_capacity_bytes gauge\nlegate_cache_disk_capacity_bytes %llu\n"
               "# TYPE legate_cache_disk_sent_bytes_total counter\n"
               "legate_cache_disk_sent_bytes_total{way=\"sendfile\"} %llu\n"
               "legate_cache_disk_sent_bytes_total{way=\"read\"} %llu\n"
               "# TYPE legate_cache_disk_waits_total counter\nlegate_cache_disk_waits_total %llu\n"
               "# TYPE legate_cache_disk_blocked_reads_total counter\n"
               "legate_cache_disk_blocked_reads_total %llu\n",
            (unsigned long long)ds.objects, (unsigned long long)ds.used,
            (unsigned long long)ds.capacity, (unsigned long long)ds.count[LG_DISK_SENDFILE],
            (unsigned long long)ds.count[LG_DISK_READ], (unsigned long long)ds.count[LG_DISK_WAIT],
            (unsigned long long)ds.count[LG_DISK_BLOCKED]);
    }
    if (lg_metrics_cluster) {   /* the fleet (src/cluster sets it): its own block */
        char cl[4096];
        if (lg_metrics_cluster(cl, sizeof(cl)))
            put(o, "%s", cl);
    }
    page_stream(o);             /* stream servers (issue 21) */
}

/* A series' requests of class c (0: 1xx), every method, listed codes included. */
static uint64_t class_total(mx_series_t *s, int c)
{
    uint64_t n = 0;
    for (int m = 0; m < MX_METH; m++) {
        n += ld(&s->codes[m][c]);
        for (uint32_t k = 0; k < zone->ncodes; k++)
            if (zone->code[k] / 100 - 1 == c)
                n += ld(&s->codes[m][5 + k]);
    }
    return n;
}

static void page_json(out_t *o)
{
    static const char *const cls[5] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    uint64_t total[5] = { 0 }, active = 0, accepted = 0;
    for (unsigned i = 0; i < MX_SERIES; i++)
        for (int c = 0; c < 5; c++)
            total[c] += class_total(&zone->s[i], c);
    for (unsigned i = 0; i < MX_LISTENERS; i++)
        if (ld(&zone->l[i].key)) {
            uint64_t a = ld(&zone->l[i].v[0]), c = ld(&zone->l[i].v[1]);
            accepted += a;
            active += a > c ? a - c : 0;
        }
    put(o, "{\"version\":\"%s\",\"start_time\":%lld,\"now\":%lld,\"reloads\":%llu,\"workers\":%d,"
           "\"connections\":{\"active\":%llu,\"accepted\":%llu},\"requests\":{",
        PACKAGE_VERSION, (long long)zone->start_time, (long long)time(NULL),
        (unsigned long long)ld(&zone->reloads), atomic_load(&zone->workers),
        (unsigned long long)active, (unsigned long long)accepted);
    for (int c = 0; c < 5; c++)
        put(o, "%s\"%s\":%llu", c ? "," : "", cls[c], (unsigned long long)total[c]);
    /* the request durations of every series together, for percentiles */
    put(o, "},\"loaded_at\":%lld,\"latency\":{\"le_ms\":[", (long long)atomic_load(&zone->loaded_at));
    for (unsigned b = 0; b < zone->nbuckets; b++)
        put(o, "%s%lld", b ? "," : "", (long long)zone->bucket_ms[b]);
    put(o, "],\"counts\":[");
    for (unsigned b = 0; b <= zone->nbuckets; b++) {
        uint64_t n = 0;
        for (unsigned i = 0; i < MX_SERIES; i++)
            n += ld(&zone->s[i].hist[b]);
        put(o, "%s%llu", b ? "," : "", (unsigned long long)n);
    }
    put(o, "]},\"series\":[");
    int first = 1;
    for (unsigned i = 0; i < MX_SERIES; i++) {
        mx_series_t *s = &zone->s[i];
        if (!ld(&s->key))
            continue;
        /* labels are server="a",route="b": JSON wants "server":"a" */
        char lab[160];
        size_t j = 0;
        for (const char *p = s->labels; *p && j + 2 < sizeof(lab); p++) {
            if (*p == '=') {
                lab[j++] = '"';
                lab[j++] = ':';
            } else if (*p == ',' && p[-1] == '"') {
                lab[j++] = ',';
                lab[j++] = '"';
            } else {
                lab[j++] = *p;
            }
        }
        lab[j] = 0;
        uint64_t n = 0;
        for (int c = 0; c < 5; c++)
            n += class_total(s, c);
        put(o, "%s{\"%s,\"requests\":%llu,\"5xx\":%llu,\"4xx\":%llu,\"duration_ms\":%llu}",
            first ? "" : ",", lab, (unsigned long long)n, (unsigned long long)class_total(s, 4),
            (unsigned long long)class_total(s, 3), (unsigned long long)ld(&s->dur_ms));
        first = 0;
    }
    put(o, "],\"upstreams\":[");
    const lg_conf_t *c = lg_w.conf;
    first = 1;
    for (size_t u = 0; u < c->nupstreams; u++)
        for (size_t i = 0; c->upstreams[u].state && i < c->upstreams[u].nservers; i++) {
            lg_upstate_t *st = &(c->upstreams[u].state)[i];
            int down = atomic_load(&st->hc_down) || atomic_load(&st->down_until) > lg_w.loop.now;
            put(o, "%s{\"upstream\":\"%s\",\"server\":\"%s\",\"up\":%s,\"requests\":%llu,\"failures\":%llu}",
                first ? "" : ",", c->upstreams[u].name, c->upstreams[u].servers[i].addr.text,
                down ? "false" : "true", (unsigned long long)lg_shm_get(&st->requests),
                (unsigned long long)lg_shm_get(&st->failures));
            first = 0;
        }
    put(o, "]");
    if (lg_cache) {
        lg_cache_stats_t cs;
        lg_store_stats(lg_cache, &cs);
        put(o, ",\"cache\":{\"hits\":%llu,\"misses\":%llu,\"objects\":%llu,\"used\":%llu,\"capacity\":%llu}",
            (unsigned long long)cs.hits, (unsigned long long)cs.misses, (unsigned long long)cs.objects,
            (unsigned long long)cs.used, (unsigned long long)cs.capacity);
    }
    put(o, "}\n");
}

/*
 * A self-contained page (no external script, style or font: admin
 * networks are often offline) that polls status.json beside it every
 * second and draws the request and error rates and the active connections
 * of the last five minutes as small SVG charts.
 */
static const char status_html[] =
    "<!doctype html><html><head><meta charset=utf-8><title>legate status</title>"
    "<style>body{font:14px sans-serif;margin:2em;color:#222}h1{font-size:18px}"
    ".c{display:inline-block;margin:0 2em 2em 0}.c svg{border:1px solid #ccc;background:#fafafa}"
    "table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}"
    ".down{color:#b00}</style></head><body><h1>legate <span id=ver></span></h1>"
    "<div id=sum></div>"
    "<div class=c><div>requests/s</div><svg id=rps width=300 height=80></svg></div>"
    "<div class=c><div>errors/s (5xx)</div><svg id=err width=300 height=80></svg></div>"
    "<div class=c><div>active connections</div><svg id=act width=300 height=80></svg></div>"
    "<div class=c><div>latency p50 / p95 / p99 (ms, last interval)</div><svg id=lat width=300 height=80></svg>"
    "<div id=pct></div></div>"
    "<h2>upstream servers</h2><table id=ups></table>"
    "<script>\n"
    "var H={rps:[],err:[],act:[],lat:[]},last=null;\n"
    "function pct(le,d,q){var n=0,t=0;for(var i=0;i<d.length;i++)t+=d[i];if(!t)return 0;"
    "for(var i=0;i<d.length;i++){n+=d[i];if(n>=q*t)return i<le.length?le[i]:le[le.length-1]*2}return 0}\n"
    "function draw(id,v){var s=document.getElementById(id),m=Math.max(1,Math.max.apply(null,v)),"
    "p=v.map(function(x,i){return (i*300/Math.max(1,v.length-1)).toFixed(1)+','+(78-x*74/m).toFixed(1)})"
    ".join(' ');s.innerHTML='<polyline fill=none stroke=#36c stroke-width=2 points=\"'+p+'\"/>'+"
    "'<text x=4 y=12 font-size=11>'+m.toFixed(0)+'</text>';s.setAttribute('data-points',v.length);"
    "s.setAttribute('data-max',m)}\n"
    "function tick(){fetch('status.json',{cache:'no-store'}).then(function(r){return r.json()})"
    ".then(function(d){var n=0,e=d.requests['5xx'];for(var k in d.requests)n+=d.requests[k];"
    "var c=d.latency.counts,dc=last?c.map(function(x,i){return x-last.c[i]}):c;"
    "var p50=pct(d.latency.le_ms,dc,.5),p95=pct(d.latency.le_ms,dc,.95),p99=pct(d.latency.le_ms,dc,.99);"
    "document.getElementById('pct').textContent=p50+' / '+p95+' / '+p99+' ms';H.lat.push(p99);"
    "if(last){var dt=Math.max(1,d.now-last.now);H.rps.push((n-last.n)/dt);H.err.push((e-last.e)/dt)}"
    "H.act.push(d.connections.active);for(var k in H)if(H[k].length>300)H[k].shift();"
    "last={n:n,e:e,now:d.now,c:c};document.getElementById('ver').textContent=d.version;"
    "document.getElementById('sum').textContent='requests '+n+', 5xx '+e+', reloads '+d.reloads+"
    "', workers '+d.workers+', configuration loaded '+new Date(d.loaded_at*1000).toISOString()+"
    "(d.cache?', cache hits '+d.cache.hits+' misses '+d.cache.misses+' (hit ratio '+"
    "(d.cache.hits+d.cache.misses?(100*d.cache.hits/(d.cache.hits+d.cache.misses)).toFixed(1):'-')+"
    "'%), cache fill '+(100*d.cache.used/Math.max(1,d.cache.capacity)).toFixed(1)+'%':'');"
    "draw('rps',H.rps);draw('err',H.err);draw('act',H.act);draw('lat',H.lat);"
    "document.getElementById('ups').innerHTML='<tr><th>upstream<th>server<th>state<th>requests<th>failures'+"
    "d.upstreams.map(function(u){return '<tr><td>'+u.upstream+'<td>'+u.server+'<td class='+(u.up?'up':'down')+"
    "'>'+(u.up?'up':'down')+'<td>'+u.requests+'<td>'+u.failures}).join('')})}\n"
    "tick();setInterval(tick,1000);\n"
    "</script></body></html>\n";

/* The CONTENT phase: a status route answers with the figures. */
static int content_phase(lg_req_t *r)
{
    if (r->route == NULL || r->route->action != LG_ACTION_STATUS)
        return LG_DECLINED;
    if (zone == NULL) {
        lg_respond_error(r, 503);
        return LG_DONE;
    }
    const char *kind = r->route->status_page;
    if (strcmp(kind, "html") == 0) {
        r->local_ctype = "text/html; charset=utf-8";
        lg_respond(r, 200, status_html, NULL);
        return LG_DONE;
    }
    int json = strcmp(kind, "json") == 0;
    /* OpenMetrics when the scraper asks for it (Prometheus does, first) */
    const http_header_t *acc = json ? NULL : lg_headers_get(r, "accept");
    int om = acc && memmem(acc->value, acc->value_len, "application/openmetrics-text", 28) != NULL;
    if (om) {
        out_t *prom = &page_cache[0];
        if (lg_w.loop.now - page_at[0] >= PAGE_TTL_MS || prom->p == NULL)
            page_at[2] = -1000000;      /* made again below from a fresh one */
    }
    int slot = om ? 2 : json;
    out_t *o = &page_cache[slot];
    if (om && (lg_w.loop.now - page_at[2] >= PAGE_TTL_MS || o->p == NULL)) {
        out_t *prom = &page_cache[0];
        if (lg_w.loop.now - page_at[0] >= PAGE_TTL_MS || prom->p == NULL) {
            lg_metrics_flush();
            if (prom->p == NULL && (prom->p = malloc(prom->cap = 16384)) == NULL) {
                lg_respond_error(r, 500);
                return LG_DONE;
            }
            prom->n = 0;
            prom->oom = 0;
            page_metrics(prom);
            page_at[0] = prom->oom ? -1000000 : lg_w.loop.now;
        }
        if (o->p == NULL && (o->p = malloc(o->cap = 16384)) == NULL) {
            lg_respond_error(r, 500);
            return LG_DONE;
        }
        o->n = 0;
        o->oom = prom->oom;
        if (!o->oom)
            to_openmetrics(o, prom);
        if (o->oom) {
            lg_respond_error(r, 500);
            return LG_DONE;
        }
        page_at[2] = lg_w.loop.now;
    }
    if (!om && (lg_w.loop.now - page_at[json] >= PAGE_TTL_MS || o->p == NULL)) {
        lg_metrics_flush();     /* this worker's own, up to now */
        if (o->p == NULL && (o->p = malloc(o->cap = 16384)) == NULL) {
            lg_respond_error(r, 500);
            return LG_DONE;
        }
        o->n = 0;
        o->oom = 0;
        if (json)
            page_json(o);
        else
            page_metrics(o);
        if (o->oom) {
            page_at[json] = -1000000;
            lg_respond_error(r, 500);
            return LG_DONE;
        }
        page_at[json] = lg_w.loop.now;
    }
    /* the head here, the page beside it: no second copy into the head */
    size_t blen = r->ri.is_head ? 0 : o->n;
    char *body = blen ? lg_arena_alloc(&r->arena, blen) : NULL;
    const char *head = lg_arena_printf(&r->arena,
        "HTTP/1.1 200 OK\r\nServer: legate\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "Cache-Control: no-store\r\n%s\r\n",
        json ? "application/json" : om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                       : "text/plain; version=0.0.4; charset=utf-8", o->n,
        r->keep_alive ? "" : "Connection: close\r\n");
    if (head == NULL || (blen && body == NULL)) {
        lg_respond_error(r, 500);
        return LG_DONE;
    }
    if (blen)
        memcpy(body, o->p, blen);
    lg_respond_raw(r, 200, head, strlen(head), body, blen);
    return LG_DONE;
}

const lg_feature_t lg_feature_metrics = {
    .name = "metrics",
    .handlers = {
        { LG_PH_CONTENT, content_phase },
        { LG_PH_LOG, log_phase },
    },
    .init = metrics_init,
};

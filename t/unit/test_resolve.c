/*
 * Unit tests of the asynchronous resolver (net/resolve.c) against a real
 * name server: every test starts t/dnsd.py on a free port of 127.0.0.1
 * with the zone below and reads its per-name query counts from the file
 * it rewrites before each answer, so "no query was sent" is checked on the
 * server's side.  Lookups run through a real lg_loop_t, driven in bounded
 * loops until the callback has run.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/event.h"
#include "net/resolve.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the name server ---- */

static const char *const zone[] = {
    "v4.test=192.0.2.1,192.0.2.2",
    "v6.test=2001:db8::1",
    "dual.test=192.0.2.10,2001:db8::10",
    "short.test=192.0.2.20/1",              /* TTL 1 s */
    "zero.test=192.0.2.21/0",               /* TTL 0 */
    "hosts.test=192.0.2.30",                /* the hosts file says otherwise */
    "many.test=192.0.2.40,2001:db8::40",
    "other.test=192.0.2.50",
    "delayed.test=192.0.2.60",              /* answered after 300 ms */
    "--drop", "slow.test",
    "--delay", "delayed.test=300",
    "--servfail", "broken.test",
};

static struct {
    pid_t pid;
    int   port;
    int   keep_fd;                  /* write end of dnsd's stdin: EOF stops it */
    char  dir[64];
    char  stats[96];
    char  server[32];               /* "127.0.0.1:PORT" */
} D;

static lg_loop_t loop;

static const char *dnsd_path(void)
{
    static char path[4096];
    const char *src = getenv("LEGATE_SRCDIR");
    if (src != NULL) {
        snprintf(path, sizeof(path), "%s/t/dnsd.py", src);
        if (access(path, R_OK) == 0)
            return path;
    }
    /* __FILE__ is t/unit/test_resolve.c as the compiler saw it */
    snprintf(path, sizeof(path), "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (slash != NULL) {
        snprintf(slash, sizeof(path) - (size_t)(slash - path), "/../dnsd.py");
        if (access(path, R_OK) == 0)
            return path;
    }
    return "t/dnsd.py";
}

static void dnsd_start(void)
{
    int out[2], in[2];
    snprintf(D.dir, sizeof(D.dir), "/tmp/lg-resolve-XXXXXX");
    cr_assert_not_null(mkdtemp(D.dir));
    snprintf(D.stats, sizeof(D.stats), "%s/stats", D.dir);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);

    const char *argv[64];
    size_t n = 0;
    argv[n++] = "python3";
    argv[n++] = dnsd_path();
    argv[n++] = "--exit-on-eof";
    argv[n++] = "--stats";
    argv[n++] = D.stats;
    for (size_t i = 0; i < ARRAY_SIZE(zone); i++)
        argv[n++] = zone[i];
    argv[n] = NULL;

    D.pid = fork();
    cr_assert_geq(D.pid, 0);
    if (D.pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    D.keep_fd = in[1];

    char line[64];
    size_t got = 0;
    while (got < sizeof(line) - 1 && memchr(line, '\n', got) == NULL) {
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        cr_assert_eq(poll(&p, 1, 10000), 1, "dnsd.py (%s) did not start", dnsd_path());
        ssize_t k = read(out[0], line + got, sizeof(line) - 1 - got);
        cr_assert_gt(k, 0, "dnsd.py (%s) exited", dnsd_path());
        got += (size_t)k;
    }
    line[got] = '\0';
    close(out[0]);
    cr_assert_eq(sscanf(line, "PORT %d", &D.port), 1, "dnsd said \"%s\"", line);
    snprintf(D.server, sizeof(D.server), "127.0.0.1:%d", D.port);
}

static void dnsd_stop(void)
{
    if (D.pid > 0) {
        close(D.keep_fd);
        kill(D.pid, SIGTERM);
        waitpid(D.pid, NULL, 0);
        D.pid = 0;
    }
    unlink(D.stats);
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s.tmp", D.stats);
    unlink(tmp);
    rmdir(D.dir);
}

/* Queries dnsd has received for (name, "A" | "AAAA"). */
static int dnsd_count(const char *name, const char *type)
{
    FILE *f = fopen(D.stats, "r");
    if (f == NULL)
        return 0;               /* no query yet */
    char n[256], t[16];
    int c, count = 0;
    while (fscanf(f, "%255s %15s %d", n, t, &c) == 3)
        if (strcmp(n, name) == 0 && strcmp(t, type) == 0)
            count = c;
    fclose(f);
    return count;
}

static int dnsd_total(void)
{
    FILE *f = fopen(D.stats, "r");
    if (f == NULL)
        return 0;
    char n[256], t[16];
    int c, total = 0;
    while (fscanf(f, "%255s %15s %d", n, t, &c) == 3)
        total += c;
    fclose(f);
    return total;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(lg_loop_init(&loop), 0);
    dnsd_start();
}

static void teardown(void)
{
    dnsd_stop();
    lg_loop_destroy(&loop);
}

TestSuite(resolve, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ---- */

typedef struct result {
    int                     calls;
    int                     status;
    size_t                  n;
    struct sockaddr_storage a[16];
} result_t;

static void on_result(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    result_t *r = arg;
    r->calls++;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < ARRAY_SIZE(r->a); i++)
        r->a[i] = addrs[i];
}

static lg_resolver_t *mk(lg_resolver_opts_t *o)
{
    lg_resolver_opts_t def;
    if (o == NULL) {
        lg_resolver_opts_init(&def);
        o = &def;
    }
    static const char *servers[1];
    servers[0] = D.server;
    o->servers = servers;
    o->nservers = 1;
    char err[256] = "";
    lg_resolver_t *r = lg_resolver_new(&loop, o, err, sizeof(err));
    cr_assert_not_null(r, "lg_resolver_new: %s", err);
    return r;
}

static lg_resolver_t *mk_family(lg_resolve_family_t f)
{
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.family = f;
    return mk(&o);
}

/* Runs the loop until *calls >= want or max_ms passes; returns the time taken. */
static lg_msec_t run_until(const int *calls, int want, lg_msec_t max_ms)
{
    lg_loop_update_time(&loop);
    lg_msec_t start = loop.now;
    while (*calls < want && loop.now - start < max_ms)
        lg_loop_once(&loop, 20);
    return loop.now - start;
}

static void run_for(lg_msec_t ms)
{
    lg_loop_update_time(&loop);
    lg_msec_t start = loop.now;
    while (loop.now - start < ms)
        lg_loop_once(&loop, 20);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)len);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, (socklen_t)len);
    else
        snprintf(buf, len, "family %d", ss->ss_family);
    return buf;
}

/* "a b c": the result's addresses, space separated. */
static const char *addrs_str(const result_t *r)
{
    static char out[1024];
    char one[INET6_ADDRSTRLEN + 16];
    out[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        if (i)
            strcat(out, " ");
        strcat(out, addr_str(&r->a[i], one, sizeof(one)));
    }
    return out;
}

/* One lookup to completion. */
static result_t lookup(lg_resolver_t *rv, const char *name)
{
    result_t res = { .calls = 0 };
    lg_resolve_t *q = lg_resolve(rv, name, on_result, &res);
    cr_assert_not_null(q);
    cr_assert_eq(res.calls, 0, "%s: callback ran inside lg_resolve()", name);
    run_until(&res.calls, 1, 10000);
    cr_assert_eq(res.calls, 1, "%s: %d callbacks", name, res.calls);
    return res;
}

static void expect(lg_resolver_t *rv, const char *name, int status, const char *addrs)
{
    result_t res = lookup(rv, name);
    cr_expect_eq(res.status, status, "%s: status %s, expected %s", name,
                 lg_resolve_strerror(res.status), lg_resolve_strerror(status));
    cr_expect_str_eq(addrs_str(&res), addrs, "%s", name);
}

/* ---- answers ---- */

Test(resolve, a_records)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_ONLY);
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");
    cr_expect_eq(dnsd_count("v4.test", "A"), 1);
    cr_expect_eq(dnsd_count("v4.test", "AAAA"), 0);
    lg_resolver_free(rv);
}

Test(resolve, aaaa_records)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V6_ONLY);
    expect(rv, "v6.test", LG_RESOLVE_OK, "2001:db8::1");
    cr_expect_eq(dnsd_count("v6.test", "AAAA"), 1);
    cr_expect_eq(dnsd_count("v6.test", "A"), 0);
    lg_resolver_free(rv);
}

Test(resolve, family_preference)
{
    static const struct {
        lg_resolve_family_t f;
        const char *name;
        int         status;
        const char *addrs;
    } cases[] = {
        { LG_RESOLVE_V4_FIRST, "dual.test", LG_RESOLVE_OK, "192.0.2.10 2001:db8::10" },
        { LG_RESOLVE_V6_FIRST, "dual.test", LG_RESOLVE_OK, "2001:db8::10 192.0.2.10" },
        { LG_RESOLVE_V4_ONLY,  "dual.test", LG_RESOLVE_OK, "192.0.2.10" },
        { LG_RESOLVE_V6_ONLY,  "dual.test", LG_RESOLVE_OK, "2001:db8::10" },
        { LG_RESOLVE_V4_FIRST, "v6.test",   LG_RESOLVE_OK, "2001:db8::1" },
        { LG_RESOLVE_V6_FIRST, "v4.test",   LG_RESOLVE_OK, "192.0.2.1 192.0.2.2" },
        { LG_RESOLVE_V6_ONLY,  "v4.test",   LG_RESOLVE_ENODATA, "" },
        { LG_RESOLVE_V4_ONLY,  "v6.test",   LG_RESOLVE_ENODATA, "" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        lg_resolver_t *rv = mk_family(cases[i].f);
        expect(rv, cases[i].name, cases[i].status, cases[i].addrs);
        lg_resolver_free(rv);
    }
}

Test(resolve, nxdomain_and_negative_cache)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_ONLY);
    expect(rv, "nx.test", LG_RESOLVE_ENOTFOUND, "");
    expect(rv, "NX.test.", LG_RESOLVE_ENOTFOUND, "");
    cr_expect_eq(dnsd_count("nx.test", "A"), 1, "the NXDOMAIN was not cached");
    lg_resolver_free(rv);

    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.neg_ttl = 0;
    rv = mk(&o);
    expect(rv, "nx2.test", LG_RESOLVE_ENOTFOUND, "");
    expect(rv, "nx2.test", LG_RESOLVE_ENOTFOUND, "");
    cr_expect_eq(dnsd_count("nx2.test", "A"), 2, "neg_ttl 0 must not cache");
    lg_resolver_free(rv);
}

Test(resolve, servfail)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_ONLY);
    expect(rv, "broken.test", LG_RESOLVE_ESERVFAIL, "");
    lg_resolver_free(rv);
}

Test(resolve, timeout_is_bounded)
{
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.family = LG_RESOLVE_V4_ONLY;
    o.timeout_ms = 200;
    o.tries = 2;                    /* 200 ms, then 400 ms */
    lg_resolver_t *rv = mk(&o);
    result_t res = { .calls = 0 };
    lg_resolve(rv, "slow.test", on_result, &res);
    lg_msec_t took = run_until(&res.calls, 1, 5000);
    cr_assert_eq(res.calls, 1);
    cr_expect_eq(res.status, LG_RESOLVE_ETIMEOUT, "%s", lg_resolve_strerror(res.status));
    cr_expect_geq(took, 550, "gave up after %lld ms", (long long)took);
    cr_expect_leq(took, 1500, "gave up after %lld ms", (long long)took);
    cr_expect_eq(dnsd_count("slow.test", "A"), 2);
    cr_log_info("timeout with 200 ms x 2 tries: %lld ms", (long long)took);
    /* timeouts are not cached */
    res.calls = 0;
    lg_resolve(rv, "slow.test", on_result, &res);
    run_until(&res.calls, 1, 5000);
    cr_expect_eq(dnsd_count("slow.test", "A"), 4);
    lg_resolver_free(rv);
}

/* ---- the cache ---- */

Test(resolve, cache_hit)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_FIRST);
    expect(rv, "dual.test", LG_RESOLVE_OK, "192.0.2.10 2001:db8::10");
    expect(rv, "dual.test", LG_RESOLVE_OK, "192.0.2.10 2001:db8::10");
    expect(rv, "DUAL.Test.", LG_RESOLVE_OK, "192.0.2.10 2001:db8::10");
    cr_expect_eq(dnsd_count("dual.test", "A"), 1);
    cr_expect_eq(dnsd_count("dual.test", "AAAA"), 1);
    lg_resolver_stats_t st;
    lg_resolver_get_stats(rv, &st);
    cr_expect_eq(st.lookups, 3);
    cr_expect_eq(st.queries, 1);
    cr_expect_eq(st.cache_hits, 2);
    cr_expect_eq(st.cache_entries, 1);
    lg_resolver_flush(rv);
    expect(rv, "dual.test", LG_RESOLVE_OK, "192.0.2.10 2001:db8::10");
    cr_expect_eq(dnsd_count("dual.test", "A"), 2, "flush did not forget");
    lg_resolver_free(rv);
}

Test(resolve, ttl_expiry)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_ONLY);
    expect(rv, "short.test", LG_RESOLVE_OK, "192.0.2.20");
    expect(rv, "short.test", LG_RESOLVE_OK, "192.0.2.20");
    cr_expect_eq(dnsd_count("short.test", "A"), 1, "within the TTL");
    run_for(1100);
    expect(rv, "short.test", LG_RESOLVE_OK, "192.0.2.20");
    cr_expect_eq(dnsd_count("short.test", "A"), 2, "after the TTL");

    /* TTL 0: never cached */
    expect(rv, "zero.test", LG_RESOLVE_OK, "192.0.2.21");
    expect(rv, "zero.test", LG_RESOLVE_OK, "192.0.2.21");
    cr_expect_eq(dnsd_count("zero.test", "A"), 2);
    lg_resolver_free(rv);
}

Test(resolve, ttl_clamps)
{
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.family = LG_RESOLVE_V4_ONLY;
    o.min_ttl = 30;                 /* the 1 s answer is kept 30 s */
    lg_resolver_t *rv = mk(&o);
    expect(rv, "short.test", LG_RESOLVE_OK, "192.0.2.20");
    run_for(1100);
    expect(rv, "short.test", LG_RESOLVE_OK, "192.0.2.20");
    cr_expect_eq(dnsd_count("short.test", "A"), 1, "min_ttl");
    lg_resolver_free(rv);

    lg_resolver_opts_init(&o);
    o.family = LG_RESOLVE_V4_ONLY;
    o.max_ttl = 1;                  /* the 300 s answer is kept 1 s */
    rv = mk(&o);
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");
    run_for(1100);
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");
    cr_expect_eq(dnsd_count("v4.test", "A"), 2, "max_ttl");
    lg_resolver_free(rv);
}

Test(resolve, cache_size_evicts_lru)
{
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.family = LG_RESOLVE_V4_ONLY;
    o.cache_size = 2;
    lg_resolver_t *rv = mk(&o);
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");
    expect(rv, "dual.test", LG_RESOLVE_OK, "192.0.2.10");
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");   /* dual.test is now LRU */
    expect(rv, "other.test", LG_RESOLVE_OK, "192.0.2.50");         /* evicts dual.test */
    expect(rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");
    expect(rv, "dual.test", LG_RESOLVE_OK, "192.0.2.10");
    cr_expect_eq(dnsd_count("v4.test", "A"), 1);
    cr_expect_eq(dnsd_count("dual.test", "A"), 2);
    lg_resolver_stats_t st;
    lg_resolver_get_stats(rv, &st);
    cr_expect_eq(st.cache_entries, 2);
    lg_resolver_free(rv);
}

/* ---- answers without queries ---- */

Test(resolve, hosts_file_wins)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/hosts", D.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("# a comment line\n"
          "\n"
          "10.9.9.9\thosts.test   Alias.TEST.  # trailing comment\n"
          "2001:db8::99 hosts.test\n"
          "10.9.9.8 hosts.test\n"
          "not-an-address bogus.test\n"
          "10.9.9.7\n"
          "2001:db8::98 v6only.test\n"
          "127.0.0.2 localhost\n", f);
    fclose(f);

    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.hosts_file = path;
    lg_resolver_t *rv = mk(&o);
    expect(rv, "hosts.test", LG_RESOLVE_OK, "10.9.9.9 10.9.9.8 2001:db8::99");
    expect(rv, "alias.test", LG_RESOLVE_OK, "10.9.9.9");
    expect(rv, "localhost", LG_RESOLVE_OK, "127.0.0.2");
    expect(rv, "bogus.test", LG_RESOLVE_ENOTFOUND, "");
    cr_expect_eq(dnsd_count("hosts.test", "A"), 0);
    cr_expect_eq(dnsd_count("alias.test", "A"), 0);
    cr_expect_eq(dnsd_count("bogus.test", "A"), 1);
    lg_resolver_free(rv);

    /* v4 only: a name with only IPv6 entries goes to DNS (NXDOMAIN there) */
    o.family = LG_RESOLVE_V4_ONLY;
    rv = mk(&o);
    expect(rv, "hosts.test", LG_RESOLVE_OK, "10.9.9.9 10.9.9.8");
    expect(rv, "v6only.test", LG_RESOLVE_ENOTFOUND, "");
    cr_expect_eq(dnsd_count("v6only.test", "A"), 1);
    lg_resolver_free(rv);

    char err[256] = "";
    o.hosts_file = "/nonexistent/hosts";
    cr_expect_null(lg_resolver_new(&loop, &o, err, sizeof(err)));
    cr_expect(strstr(err, "/nonexistent/hosts") != NULL, "%s", err);
    unlink(path);
}

Test(resolve, literals_and_localhost_need_no_query)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_FIRST);
    expect(rv, "192.0.2.99", LG_RESOLVE_OK, "192.0.2.99");
    expect(rv, "::1", LG_RESOLVE_OK, "::1");
    expect(rv, "[2001:db8::5]", LG_RESOLVE_OK, "2001:db8::5");
    expect(rv, "::ffff:10.1.2.3", LG_RESOLVE_OK, "::ffff:10.1.2.3");
    expect(rv, "localhost", LG_RESOLVE_OK, "127.0.0.1 ::1");
    expect(rv, "LocalHost.", LG_RESOLVE_OK, "127.0.0.1 ::1");
    expect(rv, "app.localhost", LG_RESOLVE_OK, "127.0.0.1 ::1");
    lg_resolver_stats_t st;
    lg_resolver_get_stats(rv, &st);
    cr_expect_eq(st.queries, 0);
    cr_expect_eq(st.literals, 4);
    cr_expect_eq(dnsd_total(), 0, "dnsd was asked something");
    /* c-ares fails this one inside ares_getaddrinfo(): still delivered later */
    expect(rv, "hidden.onion", LG_RESOLVE_ENOTFOUND, "");
    cr_expect_eq(dnsd_total(), 0, "dnsd was asked about .onion");
    lg_resolver_free(rv);

    rv = mk_family(LG_RESOLVE_V6_ONLY);
    expect(rv, "localhost", LG_RESOLVE_OK, "::1");
    lg_resolver_free(rv);
}

Test(resolve, literal_parser)
{
    static const struct {
        const char *in;
        int         rc;
        int         family;
    } cases[] = {
        { "1.2.3.4",        0, AF_INET },
        { "255.255.255.255", 0, AF_INET },
        { "::",             0, AF_INET6 },
        { "[::1]",          0, AF_INET6 },
        { "fe80::1",        0, AF_INET6 },
        { "[1.2.3.4]",     -1, 0 },         /* brackets are for IPv6 */
        { "1.2.3",         -1, 0 },
        { "1.2.3.4.",      -1, 0 },
        { "01.2.3.4",      -1, 0 },
        { "0x7f.0.0.1",    -1, 0 },
        { "[::1",          -1, 0 },
        { "fe80::1%eth0",  -1, 0 },
        { "",              -1, 0 },
        { "[]",            -1, 0 },
        { "example.com",   -1, 0 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct sockaddr_storage ss;
        int rc = lg_resolve_literal(cases[i].in, strlen(cases[i].in), &ss);
        cr_expect_eq(rc, cases[i].rc, "\"%s\"", cases[i].in);
        if (rc == 0)
            cr_expect_eq(ss.ss_family, cases[i].family, "\"%s\"", cases[i].in);
    }
}

Test(resolve, bad_names)
{
    static const char *bad[] = {
        "", ".", "a..b", "bad name", "under\x01score", "x/y", "-",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",  /* 64 */
    };
    lg_resolver_t *rv = mk(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        expect(rv, bad[i], i == 6 ? LG_RESOLVE_ENOTFOUND : LG_RESOLVE_EBADNAME, "");
    /* 253 characters is fine, 254 is not */
    char name[300];
    memset(name, 'a', sizeof(name));
    for (size_t i = 63; i < sizeof(name); i += 64)
        name[i] = '.';
    name[253] = '\0';
    expect(rv, name, LG_RESOLVE_ENOTFOUND, "");
    name[253] = 'a';
    name[254] = '\0';
    expect(rv, name, LG_RESOLVE_EBADNAME, "");
    lg_resolver_free(rv);
}

/* ---- sharing, cancelling, freeing ---- */

Test(resolve, concurrent_lookups_share_one_query)
{
    enum { N = 100 };
    static result_t res[N];
    int done = 0;
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_FIRST);
    for (int i = 0; i < N; i++) {
        memset(&res[i], 0, sizeof(res[i]));
        cr_assert_not_null(lg_resolve(rv, i % 2 ? "many.test" : "MANY.test.", on_result, &res[i]));
    }
    lg_loop_update_time(&loop);
    lg_msec_t start = loop.now;
    while (loop.now - start < 10000) {
        done = 0;
        for (int i = 0; i < N; i++)
            done += res[i].calls;
        if (done == N)
            break;
        lg_loop_once(&loop, 20);
    }
    cr_assert_eq(done, N);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(res[i].calls, 1);
        cr_expect_eq(res[i].status, LG_RESOLVE_OK);
        cr_expect_str_eq(addrs_str(&res[i]), "192.0.2.40 2001:db8::40");
    }
    cr_expect_eq(dnsd_count("many.test", "A"), 1);
    cr_expect_eq(dnsd_count("many.test", "AAAA"), 1);
    lg_resolver_stats_t st;
    lg_resolver_get_stats(rv, &st);
    cr_expect_eq(st.queries, 1);
    cr_expect_eq(st.joined, N - 1);
    lg_resolver_free(rv);
}

Test(resolve, cancel_prevents_the_callback)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_ONLY);
    result_t a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };

    /* in flight, two waiters, one cancelled */
    lg_resolve_t *qa = lg_resolve(rv, "delayed.test", on_result, &a);
    lg_resolve(rv, "delayed.test", on_result, &b);
    /* ready (a literal) but not yet delivered */
    lg_resolve_t *qc = lg_resolve(rv, "192.0.2.1", on_result, &c);
    /* in flight, its only waiter cancelled: the answer is still cached */
    lg_resolve_t *qd = lg_resolve(rv, "other.test", on_result, &d);
    lg_resolve_cancel(qa);
    lg_resolve_cancel(qc);
    lg_resolve_cancel(qd);
    lg_resolve_cancel(NULL);

    run_until(&b.calls, 1, 5000);
    run_for(200);
    cr_expect_eq(a.calls, 0);
    cr_expect_eq(b.calls, 1);
    cr_expect_eq(b.status, LG_RESOLVE_OK);
    cr_expect_eq(c.calls, 0);
    cr_expect_eq(d.calls, 0);
    expect(rv, "other.test", LG_RESOLVE_OK, "192.0.2.50");
    cr_expect_eq(dnsd_count("other.test", "A"), 1);
    lg_resolver_free(rv);
}

Test(resolve, free_cancels_everything)
{
    lg_resolver_t *rv = mk_family(LG_RESOLVE_V4_FIRST);
    result_t a = { 0 }, b = { 0 }, c = { 0 };
    lg_resolve(rv, "delayed.test", on_result, &a);
    lg_resolve(rv, "slow.test", on_result, &b);
    lg_resolve(rv, "::1", on_result, &c);
    lg_loop_once(&loop, 0);         /* the queries go out */
    cr_expect_eq(c.calls, 1);
    c.calls = 0;
    lg_resolve(rv, "::2", on_result, &c);
    lg_resolver_free(rv);
    run_for(500);
    cr_expect_eq(a.calls, 0);
    cr_expect_eq(b.calls, 0);
    cr_expect_eq(c.calls, 0);
}

/* A callback that frees the resolver: the rest of the batch is not called. */
static lg_resolver_t *victim;

static void free_from_cb(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    on_result(arg, status, addrs, n);
    lg_resolver_free(victim);
    victim = NULL;
}

Test(resolve, free_inside_a_callback)
{
    victim = mk(NULL);
    result_t a = { 0 }, b = { 0 }, c = { 0 };
    lg_resolve(victim, "192.0.2.1", free_from_cb, &a);
    lg_resolve(victim, "192.0.2.2", on_result, &b);
    lg_resolve(victim, "v4.test", on_result, &c);
    run_for(300);
    cr_expect_eq(a.calls, 1);
    cr_expect_eq(b.calls, 0);
    cr_expect_eq(c.calls, 0);
    cr_expect_null(victim);
}

/* A callback that starts a lookup and cancels its own handle. */
typedef struct chain {
    lg_resolver_t *rv;
    lg_resolve_t  *self;
    result_t       first, second;
} chain_t;

static void chain_cb(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
    chain_t *c = arg;
    on_result(&c->first, status, addrs, n);
    lg_resolve_cancel(c->self);     /* a teardown path may do this: a no-op */
    lg_resolve(c->rv, "v4.test", on_result, &c->second);
    cr_expect_eq(c->second.calls, 0, "delivered inside a callback");
}

Test(resolve, callbacks_may_reenter)
{
    chain_t c = { 0 };
    c.rv = mk_family(LG_RESOLVE_V4_ONLY);
    expect(c.rv, "v4.test", LG_RESOLVE_OK, "192.0.2.1 192.0.2.2");    /* cached now */
    c.self = lg_resolve(c.rv, "v4.test", chain_cb, &c);
    run_until(&c.second.calls, 1, 2000);
    cr_expect_eq(c.first.calls, 1);
    cr_expect_eq(c.second.calls, 1);
    cr_expect_str_eq(addrs_str(&c.second), "192.0.2.1 192.0.2.2");
    cr_expect_eq(dnsd_count("v4.test", "A"), 1);
    lg_resolver_free(c.rv);
}

Test(resolve, max_queries)
{
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    o.family = LG_RESOLVE_V4_ONLY;
    o.max_queries = 2;
    lg_resolver_t *rv = mk(&o);
    result_t a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    lg_resolve(rv, "v4.test", on_result, &a);
    lg_resolve(rv, "dual.test", on_result, &b);
    lg_resolve(rv, "dual.test", on_result, &d);     /* joins: not a new name */
    lg_resolve(rv, "other.test", on_result, &c);
    run_until(&c.calls, 1, 2000);
    cr_expect_eq(c.status, LG_RESOLVE_EBUSY);
    run_until(&b.calls, 1, 5000);
    run_until(&a.calls, 1, 5000);
    cr_expect_eq(a.status, LG_RESOLVE_OK);
    cr_expect_eq(b.status, LG_RESOLVE_OK);
    cr_expect_eq(d.status, LG_RESOLVE_OK);
    lg_resolver_free(rv);
}

Test(resolve, bad_options)
{
    char err[256];
    lg_resolver_opts_t o;
    lg_resolver_opts_init(&o);
    static const char *bad_servers[] = { "not an address" };
    o.servers = bad_servers;
    o.nservers = 1;
    cr_expect_null(lg_resolver_new(&loop, &o, err, sizeof(err)));
    cr_expect(strstr(err, "not an address") != NULL, "%s", err);

    lg_resolver_opts_init(&o);
    o.min_ttl = 10;
    o.max_ttl = 5;
    cr_expect_null(lg_resolver_new(&loop, &o, err, sizeof(err)));
    lg_resolver_free(NULL);
}

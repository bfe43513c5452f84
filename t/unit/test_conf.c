/*
 * Unit tests of the config loader (conf/load.c, conf/dump.c,
 * conf/parse_util.c).
 *
 * Each test writes its config into a fresh temporary directory, so error
 * messages can be checked with their exact "FILE:LINE: message".  Most bad
 * configs are one slot of a nine-line skeleton replaced, so the line of each
 * error is known without counting by hand:
 *
 *   1  <global>
 *   2  http = {
 *   3    <http>
 *   4    upstreams = { app = { servers = <upstream servers>; <upstream> }; };
 *   5    servers = ( {
 *   6      <listen>
 *   7      <server>
 *   8      routes = ( <routes> );
 *   9    } );
 *  10  };
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* nftw() */
#endif
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"

#define PREFIX "/pfx"

static char tmpdir[256];
static char errbuf[8192];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/legate-test-conf-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    errbuf[0] = '\0';
}

static void teardown(void)
{
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(conf, .init = setup, .fini = teardown);

/* Write `text` to tmpdir/name; returns the path (static buffer per slot). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[4][512];
    static int  slot;
    char       *p = paths[slot++ % 4];
    FILE       *f;

    snprintf(p, sizeof(paths[0]), "%s/%s", tmpdir, name);
    if (strchr(name, '/') != NULL) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s", p);
        *strrchr(dir, '/') = '\0';
        mkdir(dir, 0700);
    }
    cr_assert_not_null(f = fopen(p, "w"));
    fputs(text, f);
    fclose(f);
    return p;
}

static lg_conf_t *load_text(const char *text)
{
    return lg_conf_load(write_file("test.conf", text), PREFIX, errbuf, sizeof(errbuf));
}

static lg_conf_t *load_ok(const char *text)
{
    lg_conf_t *c = load_text(text);
    cr_assert_not_null(c, "load failed:\n%s", errbuf);
    cr_assert_str_empty(errbuf);
    return c;
}

/* The skeleton above; NULL slots take the defaults. */
typedef struct skel {
    const char *global, *http, *userv, *upstream, *listen, *server, *routes;
} skel_t;

static const char *skel_text(const skel_t *k)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "%s\n"
             "http = {\n"
             "  %s\n"
             "  upstreams = { app = { servers = %s; %s }; };\n"
             "  servers = ( {\n"
             "    %s\n"
             "    %s\n"
             "    routes = ( %s );\n"
             "  } );\n"
             "};\n",
             k->global ? k->global : "",
             k->http ? k->http : "",
             k->userv ? k->userv : "( \"127.0.0.1:9001\" )",
             k->upstream ? k->upstream : "",
             k->listen ? k->listen : "listen = \"127.0.0.1:8080\";",
             k->server ? k->server : "",
             k->routes ? k->routes : "{ prefix = \"/\"; proxy_pass = \"app\"; }");
    return buf;
}

/* errbuf holds "<tmpdir>/test.conf:LINE: msg" (msg may be a prefix). */
static void assert_error(int line, const char *msg)
{
    char want[1024];
    snprintf(want, sizeof(want), "%s/test.conf:%d: %s", tmpdir, line, msg);
    cr_assert(strstr(errbuf, want) != NULL, "expected\n  %s\nin\n%s", want, errbuf);
}

/* ---- value parsers ---------------------------------------------------- */

Test(conf, parse_duration_table)
{
    static const struct { const char *in; int ok; lg_msec_t ms; } t[] = {
        { "0", 1, 0 },            { "10", 1, 10000 },      { "10s", 1, 10000 },
        { "500ms", 1, 500 },      { "2m", 1, 120000 },     { "1h", 1, 3600000 },
        { "1d", 1, 86400000 },    { "0ms", 1, 0 },         { "007s", 1, 7000 },
        { "", 0, 0 },             { "s", 0, 0 },           { "-1s", 0, 0 },
        { "1.5s", 0, 0 },         { "10x", 0, 0 },         { " 10s", 0, 0 },
        { "10s ", 0, 0 },         { "1m30s", 0, 0 },       { "10S", 0, 0 },
        { "10 s", 0, 0 },         { "99999999999999999999", 0, 0 },
        { "9223372036854775807d", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        lg_msec_t v = -42;
        int       rc = lg_parse_duration(t[i].in, &v);
        cr_expect_eq(rc == 0, t[i].ok, "lg_parse_duration(\"%s\") rc %d", t[i].in, rc);
        if (t[i].ok)
            cr_expect_eq(v, t[i].ms, "\"%s\" -> %lld", t[i].in, (long long)v);
    }
    cr_expect_eq(lg_parse_duration(NULL, &(lg_msec_t){ 0 }), -1);
}

Test(conf, parse_size_table)
{
    static const struct { const char *in; int ok; int64_t v; } t[] = {
        { "0", 1, 0 },                 { "512", 1, 512 },
        { "16k", 1, 16384 },           { "16K", 1, 16384 },
        { "1m", 1, 1048576 },          { "1M", 1, 1048576 },
        { "2g", 1, INT64_C(2147483648) }, { "8589934592", 1, INT64_C(8589934592) },
        { "", 0, 0 },                  { "k", 0, 0 },         { "-1", 0, 0 },
        { "1t", 0, 0 },                { "1kb", 0, 0 },       { "1.5m", 0, 0 },
        { " 1k", 0, 0 },               { "1k ", 0, 0 },
        { "9223372036854775807", 1, INT64_MAX },
        { "9223372036854775808", 0, 0 }, { "9007199254740992g", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int64_t v = -42;
        int     rc = lg_parse_size(t[i].in, &v);
        cr_expect_eq(rc == 0, t[i].ok, "lg_parse_size(\"%s\") rc %d", t[i].in, rc);
        if (t[i].ok)
            cr_expect_eq(v, t[i].v, "\"%s\" -> %lld", t[i].in, (long long)v);
    }
}

Test(conf, parse_addr_table)
{
    static const struct {
        const char *in;
        int         dport;  /* default port, 0 = required */
        int         family; /* 0 = must fail */
        const char *text;   /* canonical text, or the error message */
    } t[] = {
        { "127.0.0.1:8080",   0,  AF_INET,  "127.0.0.1:8080" },
        { "[::1]:8080",       0,  AF_INET6, "[::1]:8080" },
        { "[::]:80",          0,  AF_INET6, "[::]:80" },
        { "*:8080",           0,  AF_INET,  "0.0.0.0:8080" },
        { "0.0.0.0:8080",     0,  AF_INET,  "0.0.0.0:8080" },
        { "8080",             0,  AF_INET,  "0.0.0.0:8080" },
        { "unix:/run/l.sock", 0,  AF_UNIX,  "unix:/run/l.sock" },
        { "127.0.0.1",        80, AF_INET,  "127.0.0.1:80" },
        { "[::1]",            80, AF_INET6, "[::1]:80" },
        { "10.1.2.3:65535",   80, AF_INET,  "10.1.2.3:65535" },
        { "127.0.0.1",        0,  0, "invalid address '127.0.0.1': missing port" },
        { "[::1]",            0,  0, "invalid address '[::1]': missing port" },
        { "127.0.0.1:0",      0,  0, "invalid address '127.0.0.1:0': bad port '0'" },
        { "127.0.0.1:65536",  0,  0, "invalid address '127.0.0.1:65536': bad port" },
        { "127.0.0.1:x",      0,  0, "invalid address '127.0.0.1:x': bad port 'x'" },
        { "127.0.0.1:",       0,  0, "invalid address '127.0.0.1:': bad port ''" },
        { "::1:80",           0,  0, "IPv6 addresses must be in brackets" },
        { "[::1:80",          0,  0, "missing ']'" },
        { "[::1]x",           0,  0, "expected ':' after ']'" },
        { "[zz]:80",          0,  0, "bad IPv6 address 'zz'" },
        { "[]:80",            0,  0, "bad IPv6 address" },
        { ":80",              0,  0, "missing host" },
        { "unix:",            0,  0, "missing socket path" },
        { "",                 0,  0, "invalid address '': empty" },
        { "no-such-host.invalid:80", 0, 0, "cannot resolve 'no-such-host.invalid'" },
    };
    lg_arena_t a;
    lg_arena_init(&a, 0, 0);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        lg_addr_t addr;
        char      err[256] = "";
        int       rc = lg_parse_addr(t[i].in, t[i].dport, &addr, &a, err, sizeof(err));
        if (t[i].family == 0) {
            cr_expect_eq(rc, -1, "\"%s\" accepted", t[i].in);
            cr_expect(strstr(err, t[i].text) != NULL, "\"%s\": error '%s', want '%s'",
                      t[i].in, err, t[i].text);
            continue;
        }
        cr_expect_eq(rc, 0, "\"%s\" rejected: %s", t[i].in, err);
        if (rc != 0)
            continue;
        cr_expect_eq(addr.ss.ss_family, t[i].family, "\"%s\" family", t[i].in);
        cr_expect_str_eq(addr.text, t[i].text, "\"%s\" text", t[i].in);
        if (t[i].family == AF_UNIX)
            cr_expect_eq(addr.len, offsetof(struct sockaddr_un, sun_path) + strlen(t[i].in + 5) + 1);
        else
            cr_expect_eq(addr.len, t[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                          : sizeof(struct sockaddr_in6));
    }
    lg_arena_destroy(&a);
}

Test(conf, parse_addr_ports_and_names)
{
    lg_arena_t a;
    lg_addr_t  addr;
    char       err[256];
    char       longp[200];

    lg_arena_init(&a, 0, 0);
    cr_assert_eq(lg_parse_addr("127.0.0.1:8080", 0, &addr, &a, err, sizeof(err)), 0);
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr.ss;
    cr_expect_eq(ntohs(sin->sin_port), 8080);
    cr_expect_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001u);

    /* a name resolves; the first answer is taken, the port kept */
    cr_assert_eq(lg_parse_addr("localhost:9003", 0, &addr, &a, err, sizeof(err)), 0, "%s", err);
    cr_expect(addr.ss.ss_family == AF_INET || addr.ss.ss_family == AF_INET6);
    cr_expect(strstr(addr.text, ":9003") != NULL, "%s", addr.text);
    cr_expect(strncmp(addr.text, "127.", 4) == 0 || strcmp(addr.text, "[::1]:9003") == 0,
              "%s", addr.text);

    memset(longp, 'x', sizeof(longp) - 1);
    memcpy(longp, "unix:/", 6);
    longp[sizeof(longp) - 1] = '\0';
    cr_expect_eq(lg_parse_addr(longp, 0, &addr, &a, err, sizeof(err)), -1);
    cr_expect(strstr(err, "socket path longer than") != NULL, "%s", err);
    lg_arena_destroy(&a);
}

Test(conf, log_levels)
{
    static const char *const names[] = {
        "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
    };
    for (int i = 0; i < 8; i++) {
        lg_log_level_t l;
        cr_expect_str_eq(lg_log_level_name((lg_log_level_t)i), names[i]);
        cr_expect_eq(lg_log_level_parse(names[i], &l), 0);
        cr_expect_eq((int)l, i);
    }
    lg_log_level_t l;
    cr_expect_eq(lg_log_level_parse("warning", &l), -1);
    cr_expect_eq(lg_log_level_parse("NOTICE", &l), -1);
    cr_expect_str_eq(lg_log_level_name((lg_log_level_t)99), "unknown");
}

/* ---- good configs ----------------------------------------------------- */

static void assert_common_defaults(const lg_common_t *c)
{
    cr_expect_eq(c->client_header_timeout, 60000);
    cr_expect_eq(c->client_body_timeout, 60000);
    cr_expect_eq(c->send_timeout, 60000);
    cr_expect_eq(c->keepalive_timeout, 75000);
    cr_expect_eq(c->keepalive_requests, 1000);
    cr_expect_eq(c->proxy_connect_timeout, 5000);
    cr_expect_eq(c->proxy_send_timeout, 60000);
    cr_expect_eq(c->proxy_read_timeout, 60000);
    cr_expect_eq(c->client_max_body_size, 1048576);
    cr_expect_eq(c->websocket, 1);
    cr_expect_eq(c->websocket_idle_timeout, 3600000);
    cr_assert_not_null(c->add_request_headers);
    cr_expect_eq(c->add_request_headers->n, 0);
    cr_assert_not_null(c->remove_request_headers);
    cr_expect_eq(c->remove_request_headers->n, 0);
    cr_assert_not_null(c->add_response_headers);
    cr_expect_eq(c->add_response_headers->n, 0);
    cr_assert_not_null(c->remove_response_headers);
    cr_expect_eq(c->remove_response_headers->n, 0);
    cr_expect_eq(c->x_forwarded_for, 1);
    cr_expect_eq(c->x_forwarded_proto, 1);
    cr_expect_eq(c->x_forwarded_host, 0);
    cr_expect_eq(c->x_real_ip, 0);
    cr_expect_eq(c->forwarded, 0);
    cr_expect_str_eq(c->access_log, PREFIX "/logs/access.log");
    cr_expect_str_eq(c->log_format->src, "combined");
}

Test(conf, minimal_config_gets_every_default)
{
    skel_t     k = { 0 };
    lg_conf_t *c = load_ok(skel_text(&k));
    long       ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    cr_expect_eq(c->worker_processes, ncpu < 1 ? 1 : ncpu > 512 ? 512 : ncpu);
    cr_expect_null(c->user);
    cr_expect_null(c->group);
    cr_expect_str_eq(c->pid_file, PREFIX "/logs/legate.pid");
    cr_expect_str_eq(c->error_log, PREFIX "/logs/error.log");
    cr_expect_eq(c->error_log_level, LG_LOG_NOTICE);
    cr_expect_eq(c->worker_connections, 0);     /* from the open-file limit, set by the master */
    cr_expect_eq(c->worker_rlimit_nofile, 0);
    cr_expect_eq(c->shutdown_timeout, 10000);
    cr_expect_str_eq(c->prefix, PREFIX);
    cr_expect_str_eq(c->file, write_file("test.conf", skel_text(&k)));

    assert_common_defaults(&c->http);
    cr_assert_eq(c->nservers, 1);
    assert_common_defaults(&c->servers[0].common);
    cr_assert_eq(c->servers[0].nroutes, 1);
    assert_common_defaults(&c->servers[0].routes[0].common);
    /* Via: none on the reverse proxy (nginx), decided per server */
    cr_expect_eq(c->http.via, LG_UNSET);
    cr_expect_eq(c->servers[0].common.via, 0);
    cr_expect_eq(c->servers[0].routes[0].common.via, 0);

    cr_assert_eq(c->nupstreams, 1);
    cr_expect_str_eq(c->upstreams[0].name, "app");
    cr_expect_eq(c->upstreams[0].keepalive, 32);
    cr_expect_eq(c->upstreams[0].index, 0);
    cr_expect_eq(c->upstreams[0].line, 4);
    cr_assert_eq(c->upstreams[0].nservers, 1);
    cr_expect_eq(c->upstreams[0].servers[0].weight, 1);

    const lg_server_t *s = &c->servers[0];
    cr_expect_eq(s->line, 5);
    cr_assert_eq(s->nlistens, 1);
    cr_expect_eq(s->listens[0].backlog, 511);
    cr_expect_eq(s->listens[0].is_default, 0);
    cr_expect_eq(s->listens[0].line, 6);
    cr_expect_eq(s->nnames, 0);

    const lg_route_t *r = &s->routes[0];
    cr_expect_eq(r->match, LG_MATCH_PREFIX);
    cr_expect_str_eq(r->pattern, "/");
    cr_expect_eq(r->pattern_len, 1);
    cr_expect_null(r->re);
    cr_expect_eq(r->action, LG_ACTION_PROXY);
    cr_expect_eq(r->upstream, &c->upstreams[0]);
    cr_expect_null(r->rewrite);
    cr_expect_eq(r->line, 8);

    cr_assert_eq(c->nbinds, 1);
    cr_expect_str_eq(c->binds[0].addr.text, "127.0.0.1:8080");
    cr_expect_eq(c->binds[0].default_server, s);
    cr_expect_eq(c->binds[0].backlog, 511);
    lg_conf_free(c);
}

Test(conf, global_settings)
{
    lg_conf_t *c = load_ok(skel_text(&(skel_t){ .global =
        "worker_processes = 3; user = \"nobody\"; group = \"nogroup\"; pid = \"/run/l.pid\"; "
        "error_log = \"stderr\"; error_log_level = \"debug\"; worker_connections = 1000000; "
        "worker_rlimit_nofile = 65536; shutdown_timeout = \"1m\";" }));
    cr_expect_eq(c->worker_processes, 3);
    cr_expect_str_eq(c->user, "nobody");
    cr_expect_str_eq(c->group, "nogroup");
    cr_expect_str_eq(c->pid_file, "/run/l.pid");
    cr_expect_str_eq(c->error_log, "stderr");
    cr_expect_eq(c->error_log_level, LG_LOG_DEBUG);
    cr_expect_eq(c->worker_connections, 1000000);
    cr_expect_eq(c->worker_rlimit_nofile, 65536);
    cr_expect_eq(c->shutdown_timeout, 60000);
    lg_conf_free(c);

    c = load_ok(skel_text(&(skel_t){ .global = "worker_processes = \"auto\"; error_log = \"e.log\";" }));
    cr_expect_geq(c->worker_processes, 1);
    cr_expect_str_eq(c->error_log, PREFIX "/e.log");
    lg_conf_free(c);
}

Test(conf, prefix_forms)
{
    skel_t      k = { .http = "access_log = \"off\";" };
    const char *path = write_file("test.conf", skel_text(&k));
    lg_conf_t  *c = lg_conf_load(path, "/srv/l/", errbuf, sizeof(errbuf));

    cr_assert_not_null(c, "%s", errbuf);
    cr_expect_str_eq(c->prefix, "/srv/l");
    cr_expect_str_eq(c->pid_file, "/srv/l/logs/legate.pid");
    cr_expect_str_eq(c->servers[0].routes[0].common.access_log, "off");
    lg_conf_free(c);

    c = lg_conf_load(path, "/", errbuf, sizeof(errbuf));
    cr_assert_not_null(c, "%s", errbuf);
    cr_expect_str_eq(c->prefix, "");
    cr_expect_str_eq(c->pid_file, "/logs/legate.pid");
    lg_conf_free(c);
}

/* Files legate writes go under the prefix; files it reads, beside the config. */
Test(conf, written_under_prefix_read_beside_config)
{
    skel_t k = { .global = "geoip_mmdb = \"geo/c.mmdb\";",
                 .http = "access_log = \"logs/a.log\";" };
    const char *path = write_file("test.conf", skel_text(&k));
    lg_conf_t *c = lg_conf_load(path, "/srv/l", errbuf, sizeof(errbuf));
    cr_assert_not_null(c, "%s", errbuf);
    char want[512];
    snprintf(want, sizeof(want), "%s/geo/c.mmdb", tmpdir);
    cr_expect_str_eq(c->geoip_mmdb, want, "read: beside the config");
    cr_expect_str_eq(c->pid_file, "/srv/l/logs/legate.pid", "written: under the prefix");
    cr_expect_str_eq(c->http.access_log, "/srv/l/logs/a.log");
    lg_conf_free(c);
}

Test(conf, inheritance_route_server_http)
{
    lg_conf_t *c = load_ok(
        "http = {\n"
        "  send_timeout = 10; x_real_ip = true; log_format = \"json\";\n"
        "  add_request_headers = { X-A = \"1\"; X-B = \"two\"; };\n"
        "  upstreams = { app = { servers = \"127.0.0.1:9001\"; }; };\n"
        "  servers = ( {\n"
        "    listen = \"127.0.0.1:8080\";\n"
        "    send_timeout = \"20s\"; access_log = \"off\"; client_max_body_size = \"16k\";\n"
        "    remove_response_headers = \"Server\";\n"
        "    routes = (\n"
        "      { prefix = \"/a/\"; proxy_pass = \"app\"; send_timeout = \"500ms\";\n"
        "        add_request_headers = { }; x_real_ip = false; access_log = \"logs/a.log\"; },\n"
        "      { prefix = \"/\"; proxy_pass = \"app\"; client_max_body_size = 0; }\n"
        "    );\n"
        "  } );\n"
        "};\n");
    const lg_server_t *s = &c->servers[0];
    const lg_common_t *h = &c->http, *sc = &s->common;
    const lg_common_t *r0 = &s->routes[0].common, *r1 = &s->routes[1].common;

    cr_expect_eq(h->send_timeout, 10000);
    cr_expect_eq(sc->send_timeout, 20000);
    cr_expect_eq(r0->send_timeout, 500);
    cr_expect_eq(r1->send_timeout, 20000);

    cr_expect_eq(h->x_real_ip, 1);
    cr_expect_eq(sc->x_real_ip, 1);
    cr_expect_eq(r0->x_real_ip, 0);
    cr_expect_eq(r1->x_real_ip, 1);

    cr_expect_str_eq(h->access_log, PREFIX "/logs/access.log");
    cr_expect_str_eq(sc->access_log, "off");
    cr_expect_str_eq(r0->access_log, PREFIX "/logs/a.log");
    cr_expect_str_eq(r1->access_log, "off");
    cr_expect_str_eq(r1->log_format->src, "json");

    cr_expect_eq(h->client_max_body_size, 1048576);
    cr_expect_eq(sc->client_max_body_size, 16384);
    cr_expect_eq(r0->client_max_body_size, 16384);
    cr_expect_eq(r1->client_max_body_size, 0);

    /* a level that sets a header list replaces the inherited one */
    cr_assert_eq(r1->add_request_headers->n, 2);
    cr_expect_str_eq(r1->add_request_headers->v[0].name, "X-A");
    cr_expect_str_eq(r1->add_request_headers->v[0].value->src, "1");
    cr_expect_str_eq(r1->add_request_headers->v[1].name, "X-B");
    cr_expect_str_eq(r1->add_request_headers->v[1].value->src, "two");
    cr_expect_eq(r0->add_request_headers->n, 0);
    cr_assert_eq(r0->remove_response_headers->n, 1);
    cr_expect_str_eq(r0->remove_response_headers->v[0], "Server");
    cr_expect_eq(h->remove_response_headers->n, 0);
    /* untouched everywhere: the built-in default */
    cr_expect_eq(r0->proxy_connect_timeout, 5000);
    cr_expect_eq(r1->keepalive_requests, 1000);
    lg_conf_free(c);
}

Test(conf, routes_of_every_kind)
{
    lg_conf_t *c = load_ok(skel_text(&(skel_t){ .routes =
        "{ prefix = \"/\"; proxy_pass = \"app\"; },"
        "{ exact = \"/healthz\"; return = 200; body = \"ok\\n\"; },"
        "{ regex = \"^/u/([0-9]+)$\"; proxy_pass = \"app\"; rewrite = \"/user?id=$1\"; },"
        "{ prefix = \"/old/\"; return = 301; location = \"https://example.com/new/\"; },"
        "{ path = \"/p/\"; return = 204; },"
        "{ regex = \"^/r/(.*)$\"; return = 302; location = \"/new/$1\"; body = \"\"; }" }));
    const lg_server_t *s = &c->servers[0];
    cr_assert_eq(s->nroutes, 6);

    cr_expect_eq(s->routes[1].match, LG_MATCH_EXACT);
    cr_expect_eq(s->routes[1].action, LG_ACTION_RETURN);
    cr_expect_eq(s->routes[1].status, 200);
    cr_expect_str_eq(s->routes[1].body->src, "ok\n");
    cr_expect_null(s->routes[1].location);

    const lg_route_t *r = &s->routes[2];
    cr_expect_eq(r->match, LG_MATCH_REGEX);
    cr_assert_not_null(r->re);
    cr_expect_eq(r->re->re_nsub, 1);
    cr_expect_str_eq(r->rewrite->src, "/user?id=$1");
    cr_expect_eq(r->upstream, &c->upstreams[0]);
    regmatch_t m[2];
    cr_assert_eq(regexec(r->re, "/u/42", 2, m, 0), 0);
    cr_expect_eq(m[1].rm_so, 3);
    cr_expect_eq(m[1].rm_eo, 5);
    cr_expect_neq(regexec(r->re, "/u/x", 2, m, 0), 0);

    cr_expect_eq(s->routes[3].status, 301);
    cr_expect_str_eq(s->routes[3].location->src, "https://example.com/new/");
    cr_expect_eq(s->routes[4].match, LG_MATCH_PREFIX);      /* path = synonym */
    cr_expect_str_eq(s->routes[4].pattern, "/p/");
    cr_expect_str_eq(s->routes[5].location->src, "/new/$1");
    cr_expect_str_eq(s->routes[5].body->src, "");
    lg_conf_free(c);
}

Test(conf, server_names)
{
    lg_conf_t *c = load_ok(skel_text(&(skel_t){ .server =
        "server_name = [ \"Example.COM\", \"*.Example.com\", \"www.example.*\", "
        "\"~^API[0-9]+\\\\.example\\\\.com$\", \"localhost.\" ];" }));
    const lg_server_t *s = &c->servers[0];
    cr_assert_eq(s->nnames, 5);
    cr_expect_eq(s->names[0].kind, LG_NAME_EXACT);
    cr_expect_str_eq(s->names[0].name, "example.com");
    cr_expect_eq(s->names[1].kind, LG_NAME_WILDCARD);
    cr_expect_str_eq(s->names[1].name, ".example.com");
    cr_expect_eq(s->names[2].kind, LG_NAME_SUFFIX);
    cr_expect_str_eq(s->names[2].name, "www.example.");
    cr_expect_eq(s->names[3].kind, LG_NAME_REGEX);
    cr_expect_str_eq(s->names[3].name, "~^API[0-9]+\\.example\\.com$");
    cr_assert_not_null(s->names[3].re);
    cr_expect_eq(regexec(s->names[3].re, "api12.example.com", 0, NULL, 0), 0);   /* ICASE */
    cr_expect_neq(regexec(s->names[3].re, "api.example.com", 0, NULL, 0), 0);
    cr_expect_null(s->names[0].re);
    cr_expect_eq(s->names[4].kind, LG_NAME_EXACT);
    cr_expect_str_eq(s->names[4].name, "localhost");         /* trailing dot dropped */
    lg_conf_free(c);

    c = load_ok(skel_text(&(skel_t){ .server = "server_name = \"one.example\";" }));
    cr_assert_eq(c->servers[0].nnames, 1);
    cr_expect_str_eq(c->servers[0].names[0].name, "one.example");
    lg_conf_free(c);
}

Test(conf, upstream_servers_and_weights)
{
    lg_conf_t *c = load_ok(skel_text(&(skel_t){
        .userv = "( \"127.0.0.1:9001\", { address = \"127.0.0.1:9002\"; weight = 5; },\n"
                 "  \"[::1]\", \"unix:/tmp/app.sock\", { address = \"10.0.0.1\"; } )",
        .upstream = "keepalive = 0;" }));
    const lg_upstream_t *u = &c->upstreams[0];
    cr_assert_eq(u->nservers, 5);
    cr_expect_eq(u->keepalive, 0);
    cr_expect_str_eq(u->servers[0].addr.text, "127.0.0.1:9001");
    cr_expect_eq(u->servers[0].weight, 1);
    cr_expect_str_eq(u->servers[1].addr.text, "127.0.0.1:9002");
    cr_expect_eq(u->servers[1].weight, 5);
    cr_expect_str_eq(u->servers[2].addr.text, "[::1]:80");
    cr_expect_eq(u->servers[3].addr.ss.ss_family, AF_UNIX);
    cr_expect_str_eq(u->servers[4].addr.text, "10.0.0.1:80");
    cr_expect_eq(u->servers[0].line, 4);
    cr_expect_eq(u->servers[2].line, 5);
    lg_conf_free(c);

    /* a single group, and several upstreams keep their order and index */
    c = load_ok("http = {\n"
                "  upstreams = {\n"
                "    a = { servers = { address = \"127.0.0.1:1\"; weight = 1000; }; };\n"
                "    b = { servers = \"127.0.0.1:2\"; keepalive = 10000; };\n"
                "  };\n"
                "  servers = ( { listen = \"127.0.0.1:8080\";\n"
                "    routes = ( { prefix = \"/\"; proxy_pass = \"b\"; } ); } );\n"
                "};\n");
    cr_assert_eq(c->nupstreams, 2);
    cr_expect_str_eq(c->upstreams[1].name, "b");
    cr_expect_eq(c->upstreams[1].index, 1);
    cr_expect_eq(c->upstreams[0].servers[0].weight, 1000);
    cr_expect_eq(c->upstreams[1].keepalive, 10000);
    cr_expect_eq(c->servers[0].routes[0].upstream, &c->upstreams[1]);
    lg_conf_free(c);
}

Test(conf, binds_and_default_servers)
{
    lg_conf_t *c = load_ok(
        "http = {\n"
        "  servers = (\n"
        "    { listen = ( \"127.0.0.1:8080\", \"*:8081\" );\n"
        "      routes = ( { prefix = \"/\"; return = 200; } ); },\n"
        "    { listen = ( { address = \"127.0.0.1:8080\"; default = true; backlog = 2048; },\n"
        "                 \"unix:/tmp/legate-test.sock\" );\n"
        "      routes = ( { prefix = \"/\"; return = 201; } ); },\n"
        "    { listen = \"0.0.0.0:8081\";\n"
        "      routes = ( { prefix = \"/\"; return = 202; } ); }\n"
        "  );\n"
        "};\n");
    cr_assert_eq(c->nservers, 3);
    cr_expect_eq(c->nupstreams, 0);
    cr_assert_eq(c->nbinds, 3);
    const lg_server_t *a = &c->servers[0], *b = &c->servers[1], *d = &c->servers[2];

    cr_expect_str_eq(c->binds[0].addr.text, "127.0.0.1:8080");
    cr_assert_eq(c->binds[0].nservers, 2);
    cr_expect_eq(c->binds[0].servers[0], a);
    cr_expect_eq(c->binds[0].servers[1], b);
    cr_expect_eq(c->binds[0].default_server, b);
    cr_expect_eq(c->binds[0].backlog, 2048);

    /* "*:8081" and "0.0.0.0:8081" are one address */
    cr_expect_str_eq(c->binds[1].addr.text, "0.0.0.0:8081");
    cr_assert_eq(c->binds[1].nservers, 2);
    cr_expect_eq(c->binds[1].servers[0], a);
    cr_expect_eq(c->binds[1].servers[1], d);
    cr_expect_eq(c->binds[1].default_server, a);
    cr_expect_eq(c->binds[1].backlog, 511);

    cr_expect_str_eq(c->binds[2].addr.text, "unix:/tmp/legate-test.sock");
    cr_assert_eq(c->binds[2].nservers, 1);
    cr_expect_eq(c->binds[2].default_server, b);
    cr_expect_eq(b->listens[0].is_default, 1);
    cr_expect_eq(b->listens[1].is_default, 0);
    lg_conf_free(c);
}

Test(conf, include_file)
{
    write_file("inc/ups.conf", "upstreams = { app = { servers = \"127.0.0.1:9001\"; }; };\n");
    lg_conf_t *c = load_ok("http = {\n"
                           "  @include \"inc/ups.conf\"\n"
                           "  servers = ( { listen = \"127.0.0.1:8080\";\n"
                           "    routes = ( { prefix = \"/\"; proxy_pass = \"app\"; } ); } );\n"
                           "};\n");
    cr_expect_eq(c->nupstreams, 1);
    lg_conf_free(c);
}

Test(conf, big_values)
{
    lg_conf_t *c = load_ok(skel_text(&(skel_t){
        .http = "client_max_body_size = 5000000000L; proxy_read_timeout = \"7d\";",
        .server = "client_max_body_size = \"2g\"; keepalive_timeout = 0;" }));
    cr_expect_eq(c->http.client_max_body_size, INT64_C(5000000000));
    cr_expect_eq(c->http.proxy_read_timeout, INT64_C(7) * 86400 * 1000);
    cr_expect_eq(c->servers[0].common.client_max_body_size, INT64_C(2147483648));
    cr_expect_eq(c->servers[0].routes[0].common.keepalive_timeout, 0);
    lg_conf_free(c);
}

/* ---- bad configs: one per error class --------------------------------- */

typedef struct bad {
    skel_t      k;
    int         line;
    const char *msg;
} bad_t;

#define ROUTE(r) { .routes = r }

static bad_t bad_cases[] = {
    /* unknown settings, at every level */
    { { .global = "foo = 1;" }, 1, "unknown setting 'foo' in global" },
    { { .http = "bar = 1;" }, 3, "unknown setting 'bar' in http" },
    { { .upstream = "bogus = 1;" }, 4, "unknown setting 'bogus' in upstream" },
    { { .userv = "( { address = \"127.0.0.1:1\"; max_fails = 3; } )" }, 4,
      "unknown setting 'max_fails' in upstream server" },
    { { .listen = "listen = { address = \"127.0.0.1:8080\"; ssl = true; };" }, 6,
      "unknown setting 'ssl' in listen" },
    { { .server = "root = \"/var/www\";" }, 7, "unknown setting 'root' in server" },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; foo = 1; }"), 8,
      "unknown setting 'foo' in route" },
    /* wrong types */
    { { .upstream = "keepalive = \"many\";" }, 4, "'keepalive' must be an integer" },
    { { .userv = "( { address = \"127.0.0.1:1\"; weight = 2.5; } )" }, 4,
      "'weight' must be an integer" },
    { { .global = "worker_connections = \"lots\";" }, 1, "'worker_connections' must be an integer" },
    { { .global = "worker_processes = \"many\";" }, 1,
      "'worker_processes' must be an integer or \"auto\"" },
    { { .http = "via = 1;" }, 3, "'via' must be a boolean (true or false)" },
    { { .server = "via = \"yes\";" }, 7, "'via' must be a boolean (true or false)" },
    { { .global = "user = 33;" }, 1, "'user' must be a string" },
    { { .global = "pid = \"\";" }, 1, "'pid' must not be empty" },
    { { .global = "error_log_level = \"loud\";" }, 1, "'error_log_level' must be one of" },
    { { .http = "send_timeout = \"10x\";" }, 3, "'send_timeout' must be a duration" },
    { { .http = "send_timeout = true;" }, 3, "'send_timeout' must be a duration" },
    { { .http = "client_max_body_size = \"1t\";" }, 3, "'client_max_body_size' must be a size" },
    { { .http = "add_request_headers = [ \"X-A\" ];" }, 3,
      "'add_request_headers' must be a group" },
    { { .http = "add_request_headers = { X-A = 1; };" }, 3,
      "header 'X-A' in 'add_request_headers' must be a string" },
    { { .http = "add_response_headers = { X-A = \"a\\r\\nX-B: b\"; };" }, 3,
      "header 'X-A' in 'add_response_headers' has a control character in its value" },
    { { .http = "remove_request_headers = [ \"Bad Name\" ];" }, 3,
      "'remove_request_headers': 'Bad Name' is not a valid header name" },
    { { .http = "remove_request_headers = 5;" }, 3,
      "'remove_request_headers' must be a header name or a list of header names" },
    { { .http = "upstreams2 = 5;" }, 3, "unknown setting 'upstreams2' in http" },
    { { .server = "server_name = 5;" }, 7, "'server_name' must be a name or a list of names" },
    { { .listen = "listen = 8080;" }, 6, "'listen' must be an address, a group" },
    /* out of range */
    { { .global = "worker_connections = -1;" }, 1,
      "'worker_connections' must be between 0 and 1000000" },
    { { .global = "worker_connections = 1000001;" }, 1,
      "'worker_connections' must be between 0 and 1000000" },
    { { .global = "worker_processes = 513;" }, 1, "'worker_processes' must be between 1 and 512" },
    { { .global = "worker_rlimit_nofile = -1;" }, 1,
      "'worker_rlimit_nofile' must be between 0 and 2147483647" },
    { { .global = "shutdown_timeout = -5;" }, 1, "'shutdown_timeout' must be between 0s and 7d" },
    { { .http = "keepalive_timeout = \"8d\";" }, 3, "'keepalive_timeout' must be between 0s and 7d" },
    { { .http = "proxy_read_timeout = 0;" }, 3, "'proxy_read_timeout' must be between 1ms and 7d" },
    { { .http = "keepalive_requests = 0;" }, 3,
      "'keepalive_requests' must be between 1 and 1000000000" },
    { { .http = "client_max_body_size = -1;" }, 3, "'client_max_body_size' must not be negative" },
    { { .userv = "( { address = \"127.0.0.1:1\"; weight = 1001; } )" }, 4,
      "'weight' must be between 1 and 1000" },
    { { .userv = "( { address = \"127.0.0.1:1\"; weight = 0; } )" }, 4,
      "'weight' must be between 1 and 1000" },
    { { .upstream = "keepalive = 10001;" }, 4, "'keepalive' must be between 0 and 10000" },
    { { .listen = "listen = { address = \"127.0.0.1:8080\"; backlog = 0; };" }, 6,
      "'backlog' must be between 1 and 65535" },
    { ROUTE("{ prefix = \"/\"; return = 99; }"), 8, "'return' must be between 100 and 599" },
    { ROUTE("{ prefix = \"/\"; return = 600; }"), 8, "'return' must be between 100 and 599" },
    { ROUTE("{ prefix = \"/\"; return = \"200\"; }"), 8, "'return' must be an integer" },
    /* upstreams and proxy_pass */
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"nope\"; }"), 8, "unknown upstream 'nope' in 'proxy_pass'" },
    { { .userv = "( )" }, 4, "upstream 'app' has no servers" },
    { { .userv = "( { weight = 2; } )" }, 4, "upstream server has no 'address'" },
    /* addresses */
    { { .listen = "listen = \"127.0.0.1\";" }, 6, "invalid address '127.0.0.1': missing port" },
    { { .listen = "listen = \"[::1:80\";" }, 6, "invalid address '[::1:80': missing ']'" },
    { { .listen = "listen = \"unix:\";" }, 6, "invalid address 'unix:': missing socket path" },
    { { .userv = "( \"1.2.3.4:x\" )" }, 4, "invalid address '1.2.3.4:x': bad port 'x'" },
    { { .listen = "listen = { backlog = 10; };" }, 6, "listen has no 'address'" },
    { { .listen = "" }, 5, "server has no 'listen'" },
    { { .listen = "listen = ();" }, 5, "server has no 'listen'" },
    /* duplicate listen addresses in one server, also under two spellings */
    { { .listen = "listen = ( \"127.0.0.1:8080\", \"127.0.0.1:8080\" );" }, 6,
      "duplicate listen address 127.0.0.1:8080 in one server (also at line 6)" },
    { { .listen = "listen = ( \"*:8080\", { address = \"0.0.0.0:8080\"; } );" }, 6,
      "duplicate listen address 0.0.0.0:8080 in one server" },
    /* routes: matchers and actions */
    { ROUTE("{ proxy_pass = \"app\"; }"), 8, "route has none of 'exact', 'prefix', 'regex'" },
    { ROUTE("{ prefix = \"/\"; exact = \"/x\"; proxy_pass = \"app\"; }"), 8,
      "route has more than one of 'exact', 'prefix', 'regex', 'iregex' ('prefix' and 'exact')" },
    { ROUTE("{ regex = \"^/\"; path = \"/x\"; proxy_pass = \"app\"; }"), 8,
      "route has more than one of 'exact', 'prefix', 'regex', 'iregex' ('regex' and 'path')" },
    { ROUTE("{ prefix = \"/\"; }"), 8, "route has none of 'proxy_pass', 'return', 'status'" },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; return = 200; }"), 8,
      "route has both 'proxy_pass' and 'return'" },
    { ROUTE("{ prefix = \"x\"; proxy_pass = \"app\"; }"), 8, "'prefix' must start with '/'" },
    { ROUTE("{ exact = \"\"; proxy_pass = \"app\"; }"), 8, "'exact' must not be empty" },
    { ROUTE("{ regex = \"^/(unclosed\"; proxy_pass = \"app\"; }"), 8, "bad regex '^/(unclosed': " },
    { ROUTE("{ regex = \"a{2,1}\"; proxy_pass = \"app\"; }"), 8, "bad regex 'a{2,1}': " },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; body = \"x\"; }"), 8,
      "'body' is only allowed with 'return'" },
    { ROUTE("{ prefix = \"/\"; return = 200; location = \"/x\"; }"), 8,
      "'location' is only allowed with a 3xx 'return'" },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; location = \"/x\"; }"), 8,
      "'location' is only allowed with a 3xx 'return'" },
    { ROUTE("{ prefix = \"/\"; return = 200; rewrite = \"/x\"; }"), 8,
      "'rewrite' is only allowed with 'proxy_pass'" },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; rewrite = \"x\"; }"), 8,
      "'rewrite' must start with '/' or a $1..$9 capture" },
    { ROUTE("{ regex = \"^/(a)$\"; proxy_pass = \"app\"; rewrite = \"/$2\"; }"), 8,
      "'rewrite' uses $2 but the regex has 1 group(s)" },
    { ROUTE("{ regex = \"^/(a)$\"; proxy_pass = \"app\"; rewrite = \"/${3}/$1\"; }"), 8,
      "'rewrite' uses $3 but the regex has 1 group(s)" },
    { ROUTE("{ prefix = \"/\"; proxy_pass = \"app\"; rewrite = \"/$1\"; }"), 8,
      "'rewrite' uses $1 but the route has no 'regex'" },
    { ROUTE("{ prefix = \"/\"; return = 301; location = \"/$1\"; }"), 8,
      "'location' uses $1 but the route has no 'regex'" },
    { ROUTE("\"/\""), 8, "a route must be a group" },
    /* server names */
    { { .server = "server_name = [ \"ok.example\", \"www.*.com\" ];" }, 7,
      "invalid server name 'www.*.com': '*' is only allowed as the whole first label" },
    { { .server = "server_name = \"*example.com\";" }, 7, "invalid server name '*example.com'" },
    { { .server = "server_name = \"*.example.*\";" }, 7, "invalid server name '*.example.*'" },
    { { .server = "server_name = \"*\";" }, 7, "invalid server name '*'" },
    { { .server = "server_name = \"a b\";" }, 7, "invalid server name 'a b'" },
    { { .server = "server_name = \".example.com\";" }, 7, "invalid server name '.example.com'" },
    { { .server = "server_name = \"~(\";" }, 7, "bad regex in server name '~(': " },
    { { .server = "server_name = \"~\";" }, 7, "server name '~' has an empty regex" },
    /* libconfig's own errors */
    { { .global = "a = ;" }, 1, "syntax error" },
    { { .http = "x = 1; x = 2;" }, 3, "duplicate setting name" },
};

#define NBAD (sizeof(bad_cases) / sizeof(bad_cases[0]))

/* Criterion runs each case in a new process and copies its parameter: pass
 * the index, not the case (whose pointers mean nothing in another process). */
ParameterizedTestParameters(conf, bad_config)
{
    static size_t idx[NBAD];
    for (size_t i = 0; i < NBAD; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, NBAD);
}

ParameterizedTest(size_t *i, conf, bad_config)
{
    const bad_t *b = &bad_cases[*i];
    lg_conf_t   *c = load_text(skel_text(&b->k));
    cr_assert_null(c, "loaded although it should fail with: %s", b->msg);
    assert_error(b->line, b->msg);
    /* one error, one line: nothing else reported for a one-slot mistake */
    cr_expect_eq(strchr(errbuf, '\n'), errbuf + strlen(errbuf) - 1,
                 "more than one error:\n%s", errbuf);
}

Test(conf, two_default_servers)
{
    lg_conf_t *c = load_text(
        "http = {\n"
        "  servers = (\n"
        "    { listen = { address = \"127.0.0.1:8090\"; default = true; };\n"
        "      routes = ( { prefix = \"/\"; return = 200; } ); },\n"
        "    { listen = ( \"127.0.0.1:8091\",\n"
        "                 { address = \"127.0.0.1:8090\"; default = true; } );\n"
        "      routes = ( { prefix = \"/\"; return = 200; } ); }\n"
        "  );\n"
        "};\n");
    char want[600];
    cr_assert_null(c);
    snprintf(want, sizeof(want), "two default servers for 127.0.0.1:8090 (the other at %s/test.conf:3)",
             tmpdir);
    assert_error(6, want);
}

Test(conf, no_servers)
{
    cr_assert_null(load_text("worker_processes = 1;\n"));
    assert_error(1, "no servers defined");
    cr_assert_null(load_text("worker_processes = 1;\nhttp = {\n  servers = ( );\n};\n"));
    assert_error(3, "no servers defined");
    cr_assert_null(load_text("http = {\n  keepalive_timeout = 5;\n};\n"));
    assert_error(1, "no servers defined");
    /* a wrong type is reported once, not as "no servers" too */
    cr_assert_null(load_text("http = {\n  servers = { };\n};\n"));
    assert_error(2, "'servers' must be a list");
    cr_expect_null(strstr(errbuf, "no servers"), "%s", errbuf);
    cr_assert_null(load_text("http = 1;\n"));
    assert_error(1, "'http' must be a group");
    cr_expect_null(strstr(errbuf, "no servers"), "%s", errbuf);
}

Test(conf, all_errors_are_collected)
{
    lg_conf_t *c = load_text(skel_text(&(skel_t){
        .global = "foo = 1; worker_connections = -1;",
        .http = "via = 1;",
        .userv = "( \"127.0.0.1:x\" )",
        .listen = "listen = \"127.0.0.1\";",
        .server = "server_name = \"a*b\";",
        .routes = "{ prefix = \"/\"; proxy_pass = \"nope\"; }, { prefix = \"/\"; }" }));
    cr_assert_null(c);
    assert_error(1, "unknown setting 'foo' in global");
    assert_error(1, "'worker_connections' must be between 0 and 1000000");
    assert_error(3, "'via' must be a boolean");
    assert_error(4, "invalid address '127.0.0.1:x'");
    assert_error(6, "invalid address '127.0.0.1': missing port");
    assert_error(7, "invalid server name 'a*b'");
    assert_error(8, "unknown upstream 'nope'");
    assert_error(8, "route has none of 'proxy_pass', 'return', 'status'");
    int lines = 0;
    for (const char *p = errbuf; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    cr_expect_eq(lines, 8, "%s", errbuf);
}

Test(conf, errors_in_included_file_name_it)
{
    const char *main_text = "http = {\n"
                            "  @include \"inc/bad.conf\"\n"
                            "  servers = ( { listen = \"127.0.0.1:8080\";\n"
                            "    routes = ( { prefix = \"/\"; return = 200; } ); } );\n"
                            "};\n";
    char want[600];

    write_file("inc/bad.conf", "keepalive_timeout = 5;\nzzz = 1;\n");
    cr_assert_null(load_text(main_text));
    snprintf(want, sizeof(want), "%s/inc/bad.conf:2: unknown setting 'zzz' in http", tmpdir);
    cr_expect(strstr(errbuf, want) != NULL, "want %s in\n%s", want, errbuf);

    write_file("inc/bad.conf", "keepalive_timeout = 5;\n\nyyy = ;\n");
    cr_assert_null(load_text(main_text));
    snprintf(want, sizeof(want), "%s/inc/bad.conf:3: syntax error", tmpdir);
    cr_expect(strstr(errbuf, want) != NULL, "want %s in\n%s", want, errbuf);
}

Test(conf, missing_file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/nope.conf", tmpdir);
    cr_assert_null(lg_conf_load(path, PREFIX, errbuf, sizeof(errbuf)));
    cr_expect(strstr(errbuf, "nope.conf: cannot read configuration file: No such file or directory")
              != NULL, "%s", errbuf);
}

Test(conf, error_buffer_truncates)
{
    char small[40];
    memset(small, 'Z', sizeof(small));
    cr_assert_null(lg_conf_load(write_file("test.conf", skel_text(&(skel_t){
        .global = "a1 = 1; a2 = 2; a3 = 3;" })), PREFIX, small, sizeof(small)));
    cr_expect_lt(strlen(small), sizeof(small));
    cr_expect_null(lg_conf_load(write_file("test.conf", "x = ;"), PREFIX, NULL, 0));
    lg_conf_free(NULL);
}

/* ---- dump ------------------------------------------------------------- */

static void assert_common_eq(const lg_common_t *a, const lg_common_t *b)
{
    cr_expect_eq(a->client_header_timeout, b->client_header_timeout);
    cr_expect_eq(a->client_body_timeout, b->client_body_timeout);
    cr_expect_eq(a->send_timeout, b->send_timeout);
    cr_expect_eq(a->keepalive_timeout, b->keepalive_timeout);
    cr_expect_eq(a->keepalive_requests, b->keepalive_requests);
    cr_expect_eq(a->proxy_connect_timeout, b->proxy_connect_timeout);
    cr_expect_eq(a->proxy_send_timeout, b->proxy_send_timeout);
    cr_expect_eq(a->proxy_read_timeout, b->proxy_read_timeout);
    cr_expect_eq(a->client_max_body_size, b->client_max_body_size);
    cr_expect_eq(a->websocket, b->websocket);
    cr_expect_eq(a->websocket_idle_timeout, b->websocket_idle_timeout);
    const lg_header_ops_t *ha[] = { a->add_request_headers, a->add_response_headers };
    const lg_header_ops_t *hb[] = { b->add_request_headers, b->add_response_headers };
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(ha[k]->n, hb[k]->n);
        for (size_t i = 0; i < ha[k]->n; i++) {
            cr_expect_str_eq(ha[k]->v[i].name, hb[k]->v[i].name);
            cr_expect_str_eq(ha[k]->v[i].value->src, hb[k]->v[i].value->src);
        }
    }
    const lg_strv_t *sa[] = { a->remove_request_headers, a->remove_response_headers };
    const lg_strv_t *sb[] = { b->remove_request_headers, b->remove_response_headers };
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(sa[k]->n, sb[k]->n);
        for (size_t i = 0; i < sa[k]->n; i++)
            cr_expect_str_eq(sa[k]->v[i], sb[k]->v[i]);
    }
    cr_expect_eq(a->x_forwarded_for, b->x_forwarded_for);
    cr_expect_eq(a->x_forwarded_proto, b->x_forwarded_proto);
    cr_expect_eq(a->x_forwarded_host, b->x_forwarded_host);
    cr_expect_eq(a->x_real_ip, b->x_real_ip);
    cr_expect_eq(a->forwarded, b->forwarded);
    cr_expect_eq(a->via, b->via);
    cr_expect_str_eq(a->access_log, b->access_log);
    cr_expect_str_eq(a->log_format->src, b->log_format->src);
}

static void assert_addr_eq(const lg_addr_t *a, const lg_addr_t *b)
{
    cr_expect_eq(a->len, b->len);
    cr_expect_eq(memcmp(&a->ss, &b->ss, a->len), 0, "%s vs %s", a->text, b->text);
    cr_expect_str_eq(a->text, b->text);
}

static const char *tpl_src(const lg_tpl_t *t)
{
    return t ? t->src : NULL;
}

static void assert_str_or_null_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        cr_expect_eq(a, b);
    else
        cr_expect_str_eq(a, b);
}

static void assert_conf_eq(const lg_conf_t *a, const lg_conf_t *b)
{
    cr_expect_eq(a->worker_processes, b->worker_processes);
    assert_str_or_null_eq(a->user, b->user);
    assert_str_or_null_eq(a->group, b->group);
    cr_expect_str_eq(a->pid_file, b->pid_file);
    cr_expect_str_eq(a->error_log, b->error_log);
    cr_expect_eq(a->error_log_level, b->error_log_level);
    cr_expect_eq(a->worker_connections, b->worker_connections);
    cr_expect_eq(a->worker_rlimit_nofile, b->worker_rlimit_nofile);
    cr_expect_eq(a->shutdown_timeout, b->shutdown_timeout);
    assert_common_eq(&a->http, &b->http);

    cr_assert_eq(a->nupstreams, b->nupstreams);
    for (size_t i = 0; i < a->nupstreams; i++) {
        const lg_upstream_t *x = &a->upstreams[i], *y = &b->upstreams[i];
        cr_expect_str_eq(x->name, y->name);
        cr_expect_eq(x->keepalive, y->keepalive);
        cr_assert_eq(x->nservers, y->nservers);
        for (size_t j = 0; j < x->nservers; j++) {
            assert_addr_eq(&x->servers[j].addr, &y->servers[j].addr);
            cr_expect_eq(x->servers[j].weight, y->servers[j].weight);
        }
    }
    cr_assert_eq(a->nservers, b->nservers);
    for (size_t i = 0; i < a->nservers; i++) {
        const lg_server_t *x = &a->servers[i], *y = &b->servers[i];
        cr_assert_eq(x->nlistens, y->nlistens);
        for (size_t j = 0; j < x->nlistens; j++) {
            assert_addr_eq(&x->listens[j].addr, &y->listens[j].addr);
            cr_expect_eq(x->listens[j].backlog, y->listens[j].backlog);
            cr_expect_eq(x->listens[j].is_default, y->listens[j].is_default);
        }
        cr_assert_eq(x->nnames, y->nnames);
        for (size_t j = 0; j < x->nnames; j++) {
            cr_expect_eq(x->names[j].kind, y->names[j].kind);
            cr_expect_str_eq(x->names[j].name, y->names[j].name);
            cr_expect_eq(x->names[j].re == NULL, y->names[j].re == NULL);
        }
        assert_common_eq(&x->common, &y->common);
        cr_assert_eq(x->nroutes, y->nroutes);
        for (size_t j = 0; j < x->nroutes; j++) {
            const lg_route_t *r = &x->routes[j], *q = &y->routes[j];
            cr_expect_eq(r->match, q->match);
            cr_expect_str_eq(r->pattern, q->pattern);
            cr_expect_eq(r->pattern_len, q->pattern_len);
            cr_expect_eq(r->re == NULL, q->re == NULL);
            cr_expect_eq(r->action, q->action);
            if (r->action == LG_ACTION_PROXY)
                cr_expect_str_eq(r->upstream->name, q->upstream->name);
            assert_str_or_null_eq(tpl_src(r->rewrite), tpl_src(q->rewrite));
            cr_expect_eq(r->status, q->status);
            assert_str_or_null_eq(tpl_src(r->body), tpl_src(q->body));
            assert_str_or_null_eq(tpl_src(r->location), tpl_src(q->location));
            assert_common_eq(&r->common, &q->common);
        }
    }
    cr_assert_eq(a->nbinds, b->nbinds);
    for (size_t i = 0; i < a->nbinds; i++) {
        assert_addr_eq(&a->binds[i].addr, &b->binds[i].addr);
        cr_expect_eq(a->binds[i].backlog, b->binds[i].backlog);
        cr_expect_eq(a->binds[i].nservers, b->binds[i].nservers);
        cr_expect_eq(a->binds[i].default_server->index, b->binds[i].default_server->index);
    }
}

/* Every setting away from its default, at every level where it is allowed. */
static const char rich_conf[] =
    "worker_processes = 3;\n"
    "user = \"nobody\"; group = \"nogroup\";\n"
    "pid = \"run/l.pid\"; error_log = \"stderr\"; error_log_level = \"warn\";\n"
    "worker_connections = 77; worker_rlimit_nofile = 4096; shutdown_timeout = \"1500ms\";\n"
    "via_name = \"edge-1.example\"; tls_session_cache = \"2m\";\n"
    "http = {\n"
    "  client_header_timeout = \"1s\"; client_body_timeout = \"2s\"; send_timeout = \"3s\";\n"
    "  keepalive_timeout = 0; keepalive_requests = 7; proxy_connect_timeout = \"250ms\";\n"
    "  proxy_send_timeout = \"1h\"; proxy_read_timeout = \"1d\";\n"
    "  client_max_body_size = 5000000000L;\n"
    "  add_request_headers = { X-Env = \"prod \\\"q\\\" \\\\ $host\\t\"; X-Two = \"2\"; };\n"
    "  remove_request_headers = [ \"X-Debug\", \"Cookie\" ];\n"
    "  add_response_headers = { X-Frame-Options = \"DENY\"; };\n"
    "  remove_response_headers = \"Server\";\n"
    "  x_forwarded_for = false; x_forwarded_proto = false; x_forwarded_host = true;\n"
    "  x_real_ip = true; forwarded = true; via = false;\n"
    "  access_log = \"/var/log/a.log\"; log_format = \"$remote_addr \\\"$request\\\"\";\n"
    "  upstreams = {\n"
    "    app = { servers = ( \"127.0.0.1:9001\", { address = \"[::1]:9002\"; weight = 9; },\n"
    "                        \"unix:/tmp/app.sock\" ); keepalive = 0; };\n"
    "    other = { servers = \"localhost:9003\"; };\n"
    "  };\n"
    "  servers = (\n"
    "    { listen = ( \"127.0.0.1:8080\", { address = \"[::1]:8080\"; backlog = 99; default = true; } );\n"
    "      server_name = [ \"Example.com\", \"*.example.com\", \"www.example.*\", \"~^a\\\\.b$\" ];\n"
    "      send_timeout = \"4s\"; access_log = \"off\"; add_request_headers = { };\n"
    "      routes = (\n"
    "        { prefix = \"/\"; proxy_pass = \"app\"; client_max_body_size = \"16k\"; },\n"
    "        { exact = \"/healthz\"; return = 200; body = \"ok\\n\\x01\"; log_format = \"json\"; },\n"
    "        { regex = \"^/u/([0-9]+)$\"; proxy_pass = \"other\"; rewrite = \"/user?id=$1\"; },\n"
    "        { prefix = \"/old/\"; return = 301; location = \"https://example.com/new/\"; }\n"
    "      ); },\n"
    "    { listen = ( \"*:8081\", \"127.0.0.1:8080\" ); server_name = \"two.example\";\n"
    "      real_ip_from = [ \"10.0.0.0/8\" ]; real_ip_header = \"X-Real-IP\";\n"
    "      forward = { auth_file = \"users\"; allow_users = [ \"@staff\", \"bob\" ];\n"
    "        deny_countries = [ \"XX\" ];\n"
    "        user_rules = ( { users = \"*\"; allow_domains = [ \"a.example\" ]; connect_ports = \"443\"; },\n"
    "                       { users = [ \"bob\" ]; block_domains = [ \"b.example\" ]; } ); };\n"
    "      routes = ( { prefix = \"/\"; countries = [ \"FR\" ]; return = 204; } ); }\n"
    "  );\n"
    "};\n";

static lg_conf_t *dump_and_reload(const lg_conf_t *c, const char *name, char *text, size_t len)
{
    char  path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    cr_assert_not_null(f = fopen(path, "w"));
    lg_conf_dump(c, f);
    fclose(f);
    cr_assert_not_null(f = fopen(path, "r"));
    size_t n = fread(text, 1, len - 1, f);
    text[n] = '\0';
    fclose(f);
    /* another prefix: every path in the dump is already absolute */
    lg_conf_t *d = lg_conf_load(path, "/elsewhere", errbuf, sizeof(errbuf));
    cr_assert_not_null(d, "dump does not load again:\n%s\n--- dump:\n%s", errbuf, text);
    return d;
}

Test(conf, dump_round_trip)
{
    static char t1[65536], t2[65536];
    lg_conf_t  *a = load_ok(rich_conf);
    lg_conf_t  *b = dump_and_reload(a, "dump1.conf", t1, sizeof(t1));
    lg_conf_t  *c = dump_and_reload(b, "dump2.conf", t2, sizeof(t2));

    assert_conf_eq(a, b);
    assert_conf_eq(b, c);
    /* and the text is a fixed point (past the first line, which names the file) */
    cr_expect_str_eq(strchr(t1, '\n'), strchr(t2, '\n'));

    cr_expect(strstr(t1, "shutdown_timeout = \"1500ms\";") != NULL);
    cr_expect(strstr(t1, "proxy_read_timeout = \"86400s\";") != NULL);
    cr_expect(strstr(t1, "client_max_body_size = 5000000000L;") != NULL);
    cr_expect(strstr(t1, "client_max_body_size = 16384;") != NULL);
    cr_expect(strstr(t1, "pid = \"" PREFIX "/run/l.pid\";") != NULL);
    cr_expect(strstr(t1, "\"*.example.com\"") != NULL);
    cr_expect(strstr(t1, "\"www.example.*\"") != NULL);
    cr_expect(strstr(t1, "via_name = \"edge-1.example\";") != NULL);
    cr_expect(strstr(t1, "tls_session_cache = 2097152;") != NULL);
    cr_expect(strstr(t1, "users = [ \"bob\" ];") != NULL, "%s", t1);
    cr_expect(strstr(t1, "countries = [ \"FR\" ];") != NULL);
    cr_expect(strstr(t1, "real_ip_header = \"X-Real-IP\";") != NULL);
    lg_conf_free(a);
    lg_conf_free(b);
    lg_conf_free(c);
}

Test(conf, dump_of_defaults_round_trips)
{
    static char t1[65536];
    lg_conf_t  *a = load_ok(skel_text(&(skel_t){ 0 }));
    lg_conf_t  *b = dump_and_reload(a, "dump.conf", t1, sizeof(t1));
    assert_conf_eq(a, b);
    cr_expect(strstr(t1, "client_header_timeout = \"60s\";") != NULL, "%s", t1);
    cr_expect(strstr(t1, "client_max_body_size = 1048576;") != NULL, "%s", t1);
    lg_conf_free(a);
    lg_conf_free(b);
}

/* ---- files of the source tree ------------------------------------------- */

/* A file of the source tree ("make check" runs in the build tree and sets srcdir). */
static const char *src_path(const char *rel)
{
    static char path[1024];
    const char *srcdir = getenv("srcdir");
    snprintf(path, sizeof(path), "%s/%s", srcdir ? srcdir : ".", rel);
    return path;
}

Test(conf, fixture_full)
{
    lg_conf_t *c = lg_conf_load(src_path("t/unit/conf/full.conf"), PREFIX, errbuf, sizeof(errbuf));
    cr_assert_not_null(c, "%s", errbuf);
    cr_expect_eq(c->error_log_level, LG_LOG_INFO);
    cr_expect_eq(c->upstreams[0].keepalive, 16);
    cr_expect_eq(c->upstreams[0].nservers, 4);
    cr_assert_eq(c->nservers, 2);
    cr_assert_eq(c->nbinds, 2);
    /* both servers on 127.0.0.1:8080, neither default there: the first is */
    cr_expect_eq(c->binds[0].nservers, 2);
    cr_expect_eq(c->binds[0].default_server, &c->servers[0]);
    cr_expect_eq(c->binds[1].default_server, &c->servers[0]);
    const lg_route_t *r = &c->servers[0].routes[0];
    cr_expect_eq(r->common.client_max_body_size, INT64_C(2147483648));
    cr_expect_eq(r->common.client_header_timeout, 500);
    cr_expect_eq(r->common.proxy_connect_timeout, 86400000);
    cr_expect_str_eq(r->common.add_request_headers->v[1].value->src, "$remote_addr");
    cr_expect_eq(r->common.websocket, 0);
    cr_expect_eq(r->common.websocket_idle_timeout, 1800000);
    cr_expect_eq(c->servers[0].routes[1].common.client_max_body_size, 1048576);
    cr_expect_eq(c->servers[0].routes[1].common.websocket, 1);
    cr_expect_eq(c->servers[1].routes[0].common.client_max_body_size, 16384);
    cr_expect_str_eq(c->servers[1].routes[0].common.log_format->src, "json");
    lg_conf_free(c);
}

Test(conf, fixture_many_errors)
{
    static const struct { int line; const char *msg; } want[] = {
        { 3,  "'worker_connections' must be between 0 and 1000000" },
        { 5,  "'send_timeout' must be a duration" },
        { 14, "unknown upstream 'api' in 'proxy_pass'" },
        { 16, "'rewrite' is only allowed with 'proxy_pass'" },
        { 12, "duplicate listen address 127.0.0.1:8080 in one server (also at line 11)" },
    };
    const char *path = src_path("t/unit/conf/many-errors.conf");
    const char *p = errbuf;

    cr_assert_null(lg_conf_load(path, PREFIX, errbuf, sizeof(errbuf)));
    /* all of them, in this order, and nothing else */
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char line[600];
        int  n = snprintf(line, sizeof(line), "%s:%d: %s", path, want[i].line, want[i].msg);
        cr_assert(strncmp(p, line, (size_t)n) == 0, "error %zu: want\n  %s\ngot\n%s", i, line, p);
        p = strchr(p, '\n') + 1;
    }
    cr_expect_str_empty(p);
}

Test(conf, fixture_include_is_relative_to_the_file)
{
    lg_conf_t *c = lg_conf_load(src_path("t/unit/conf/include/main.conf"), PREFIX,
                                errbuf, sizeof(errbuf));
    cr_assert_not_null(c, "%s", errbuf);
    cr_assert_eq(c->nupstreams, 1);
    cr_expect_eq(c->upstreams[0].nservers, 2);
    lg_conf_free(c);
}

/* ---- the shipped configs ------------------------------------------------ */

/* Load a shipped config; checks what both share. */
static lg_conf_t *load_shipped(const char *rel)
{
    const char *path = src_path(rel);
    lg_conf_t  *c = lg_conf_load(path, PREFIX, errbuf, sizeof(errbuf));
    cr_assert_not_null(c, "%s:\n%s", path, errbuf);
    cr_assert_eq(c->nbinds, 1);
    cr_expect_str_eq(c->binds[0].addr.text, "127.0.0.1:8080");
    cr_assert_eq(c->nupstreams, 1);
    cr_assert_eq(c->upstreams[0].nservers, 2);
    cr_expect_str_eq(c->upstreams[0].servers[0].addr.text, "127.0.0.1:9001");
    cr_expect_str_eq(c->upstreams[0].servers[1].addr.text, "127.0.0.1:9002");
    cr_expect_eq(c->upstreams[0].servers[0].weight, c->upstreams[0].servers[1].weight);
    cr_expect_str_eq(c->pid_file, PREFIX "/logs/legate.pid");
    cr_expect_str_eq(c->error_log, PREFIX "/logs/error.log");
    cr_expect_str_eq(c->http.access_log, PREFIX "/logs/access.log");
    return c;
}

Test(conf, shipped_demo_config)
{
    lg_conf_t *c = load_shipped("conf/legate.conf");
    cr_expect_eq(c->worker_processes, 2);
    const lg_server_t *s = &c->servers[0];
    int                seen_health = 0, seen_root = 0;
    for (size_t i = 0; i < s->nroutes; i++) {
        const lg_route_t *r = &s->routes[i];
        if (r->match == LG_MATCH_EXACT && strcmp(r->pattern, "/healthz") == 0) {
            seen_health = 1;
            cr_expect_eq(r->action, LG_ACTION_RETURN);
            cr_expect_eq(r->status, 200);
            cr_expect_str_eq(r->body->src, "ok\n");
        }
        if (r->match == LG_MATCH_PREFIX && strcmp(r->pattern, "/") == 0) {
            seen_root = 1;
            cr_expect_eq(r->action, LG_ACTION_PROXY);
            cr_expect_str_eq(r->upstream->name, "app");
        }
    }
    cr_expect(seen_health && seen_root);
    lg_conf_free(c);
}

Test(conf, shipped_reverse_proxy_example)
{
    lg_conf_free(load_shipped("conf/examples/reverse-proxy.conf"));
}

Test(conf, via_is_the_forward_proxys_by_default)
{
    lg_conf_t *c = load_ok(
        "http = {\n"
        "  upstreams = { app = { servers = ( \"127.0.0.1:9\" ); }; };\n"
        "  servers = (\n"
        "    { listen = \"127.0.0.1:18001\"; forward = { };\n"
        "      routes = ( { prefix = \"/\"; proxy_pass = \"app\"; } ); },\n"
        "    { listen = \"127.0.0.1:18002\"; routes = ( { prefix = \"/\"; proxy_pass = \"app\"; },\n"
        "      { prefix = \"/v\"; proxy_pass = \"app\"; via = true; } ); },\n"
        "    { listen = \"127.0.0.1:18003\"; via = true;\n"
        "      routes = ( { prefix = \"/\"; proxy_pass = \"app\"; } ); }\n"
        "  );\n"
        "};\n");
    cr_expect_eq(c->servers[0].common.via, 1, "the forward proxy keeps Via");
    cr_expect_eq(c->servers[0].routes[0].common.via, 1);
    cr_expect_eq(c->servers[1].common.via, 0, "the reverse proxy adds none");
    cr_expect_eq(c->servers[1].routes[0].common.via, 0);
    cr_expect_eq(c->servers[1].routes[1].common.via, 1);
    cr_expect_eq(c->servers[2].routes[0].common.via, 1, "a server's via = true reaches its routes");
    lg_conf_free(c);
}

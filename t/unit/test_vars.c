/*
 * Templates: compiled once at load (conf/tpl.c) against the variables table
 * (pipeline/vars.c), unknown names refused with the file and line, and
 * expanded per request with the escaping each use asks for.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "pipeline/vars.h"
#include "proxy/proxy.h"

static lg_arena_t arena;

static void setup(void)
{
    lg_vars_init();
    lg_arena_init(&arena, 4096, 0);
}

static void teardown(void)
{
    lg_arena_destroy(&arena);
    lg_conf_set_var_lookup(NULL);
}

TestSuite(tpl, .init = setup, .fini = teardown);

static const lg_tpl_t *compile_ok(const char *src)
{
    char err[256] = "";
    const lg_tpl_t *t = lg_tpl_compile(&arena, src, err, sizeof(err));
    cr_assert_not_null(t, "\"%s\" did not compile: %s", src, err);
    cr_expect_str_eq(t->src, src);
    return t;
}

static void compile_fails(const char *src, const char *msg)
{
    char err[256] = "";
    cr_expect_null(lg_tpl_compile(&arena, src, err, sizeof(err)), "\"%s\" compiled", src);
    cr_expect_str_eq(err, msg, "\"%s\": %s", src, err);
}

Test(tpl, plain_text_has_no_variables)
{
    const lg_tpl_t *t = compile_ok("no variables here");
    cr_expect_eq(t->nvars, 0);
    cr_assert_eq(t->nparts, 1);
    cr_expect_eq(t->parts[0].var, LG_TPL_LITERAL);
    cr_expect_eq(t->parts[0].len, strlen("no variables here"));
    cr_expect_eq(compile_ok("")->nparts, 0);
}

Test(tpl, variables_compile_to_indexes)
{
    const lg_tpl_t *t = compile_ok("$scheme://${host}$request_uri");
    cr_assert_eq(t->nparts, 4);
    cr_expect_eq(t->nvars, 3);
    size_t arg;
    cr_expect_eq(t->parts[0].var, lg_vars_lookup("scheme", 6, &arg));
    cr_expect_eq(t->parts[1].var, LG_TPL_LITERAL);
    cr_expect_eq(t->parts[1].len, 3);
    cr_expect_eq(strncmp(t->parts[1].text, "://", 3), 0);
    cr_expect_eq(t->parts[2].var, lg_vars_lookup("host", 4, &arg));
    cr_expect_eq(t->parts[3].var, lg_vars_lookup("request_uri", 11, &arg));
    cr_expect_geq(t->parts[0].var, 0);
}

Test(tpl, suffix_variables_keep_their_argument)
{
    const lg_tpl_t *t = compile_ok("$http_user_agent/$cookie_sid/$2x");
    cr_assert_eq(t->nparts, 6);
    cr_expect_str_eq(t->parts[0].text, "user_agent");
    cr_expect_str_eq(t->parts[2].text, "sid");
    cr_expect_str_eq(t->parts[4].text, "2");         /* "$2x": capture 2, then "x" */
    cr_expect_eq(t->parts[5].var, LG_TPL_LITERAL);
    cr_expect_eq(t->parts[5].len, 1);
}

/* What is not a variable stays text, as the run-time expander always had it. */
Test(tpl, dollars_that_are_not_variables)
{
    const lg_tpl_t *t = compile_ok("5$ and $$host and ${x");
    cr_expect_eq(t->nvars, 1);
    t = compile_ok("${}");
    cr_expect_eq(t->nvars, 0);
    cr_assert_eq(t->nparts, 1);
    cr_expect_eq(t->parts[0].len, 1);
    cr_expect_eq(t->parts[0].text[0], '$');
}

Test(tpl, unknown_names_are_errors)
{
    compile_fails("$foo", "unknown variable \"$foo\"");
    compile_fails("a ${no such} b", "unknown variable \"$no such\"");
    compile_fails("$host$requst_uri", "unknown variable \"$requst_uri\"");
    compile_fails("$http_", "unknown variable \"$http_\"");      /* a prefix alone */
    compile_fails("$cookie_", "unknown variable \"$cookie_\"");
    compile_fails("$0", "unknown variable \"$0\"");
    compile_fails("$ssl_nothing", "unknown variable \"$ssl_nothing\"");
}

Test(tpl, every_documented_variable_is_known)
{
    static const char *const names[] = {
        "remote_addr", "realip_remote_addr", "remote_port", "remote_user", "time_local",
        "time_iso8601", "msec", "request", "request_method", "request_uri", "uri", "args",
        "query_string", "host", "scheme", "server_protocol", "server_name", "proxy_host",
        "ssl_protocol", "ssl_cipher", "ssl_server_name", "ssl_session_reused",
        "ssl_client_s_dn", "ssl_client_fingerprint", "ssl_client_verify", "status",
        "body_bytes_sent", "bytes_sent", "request_length", "bytes_received", "request_time",
        "upstream_addr", "upstream_status", "upstream_response_time", "connection",
        "connection_requests", "pid", "cache_status", "geo_country", "blocked",
        "http_x", "cookie_x", "1", "9", "arg_x", "server_port", "is_args", "document_uri",
        "content_type", "content_length", "https", "hostname", "server_addr",
        "sent_http_x", "upstream_http_x", "request_id",
        "upstream_connect_time", "upstream_header_time",
        "upstream_cache_status", "upstream_bytes_sent", "upstream_bytes_received",
        "upstream_response_length", "request_completion", "legate_version",
        "proxy_add_x_forwarded_for", "document_root", "request_filename", "realip_remote_port",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t arg;
        cr_expect_geq(lg_vars_lookup(names[i], strlen(names[i]), &arg), 0, "$%s", names[i]);
    }
}

Test(tpl, without_the_table_any_name_is_accepted)
{
    lg_conf_set_var_lookup(NULL);
    const lg_tpl_t *t = compile_ok("$whatever");
    cr_assert_eq(t->nparts, 1);
    cr_expect_eq(t->parts[0].var, LG_TPL_UNCHECKED);
}

Test(tpl, builtin_templates)
{
    const lg_tpl_t *t = lg_vars_builtin("$scheme://$proxy_host$request_uri");
    cr_assert_not_null(t);
    cr_expect_eq(t->nvars, 3);
    cr_expect_null(lg_vars_builtin("$nope"));
}

/* ---- expansion ---- */

static lg_req_t *fake_session(http_header_t *h, size_t nh)
{
    lg_req_t *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->conn = calloc(1, sizeof(*s->conn));
    cr_assert_not_null(s->conn);
    s->conn->e.io.fd = -1;
    s->conn->req = s;
    strcpy(s->conn->peer_text, "192.0.2.1");
    lg_arena_init(&s->arena, 4096, 0);
    strcpy(s->peer_text, "192.0.2.1");
    s->req.method = "GET";
    s->req.method_len = 3;
    s->req.target = "/a?b=1";
    s->req.target_len = 6;
    s->req.version = 11;
    s->req.headers = h;
    s->req.num_headers = nh;
    s->ri.uri = (lg_str_t){ "/a?b=1", 6 };
    s->ri.path = (lg_str_t){ "/a", 2 };
    s->ri.query = (lg_str_t){ "b=1", 3 };
    s->ri.host = (lg_str_t){ "example.com", 11 };
    for (int i = 0; i < 10; i++)
        s->caps[i].rm_so = s->caps[i].rm_eo = -1;
    return s;
}

static void free_session(lg_req_t *s)
{
    lg_arena_destroy(&s->arena);
    free(s->conn);
    free(s);
}

Test(tpl, plain_templates_are_not_copied)
{
    lg_req_t *s = fake_session(NULL, 0);
    const lg_tpl_t *t = compile_ok("static");
    size_t n = 0;
    cr_expect_eq(lg_vars_expand(s, t, LG_VARS_ESCAPE, &n), t->src);
    cr_expect_eq(n, 6);
    cr_expect_null(lg_vars_expand(s, NULL, LG_VARS_RAW, NULL));
    free_session(s);
}

Test(tpl, expansion_escapes_as_asked)
{
    http_header_t h[] = {
        { "User-Agent", 10, "a \"b\"\\", 6 },
        { "Cookie", 6, "sid=42; x=y", 11 },
    };
    lg_req_t *s = fake_session(h, 2);
    const lg_tpl_t *t = compile_ok("$remote_addr ${request_method} $uri?$args "
                                   "[$http_user_agent] [$http_referer] $cookie_sid $host");
    cr_expect_str_eq(lg_vars_expand(s, t, LG_VARS_RAW, NULL),
                     "192.0.2.1 GET /a?b=1 [a \"b\"\\] [] 42 example.com");
    cr_expect_str_eq(lg_vars_expand(s, t, LG_VARS_ESCAPE, NULL),
                     "192.0.2.1 GET /a?b=1 [a \\x22b\\x22\\x5C] [-] 42 example.com");
    cr_expect_str_eq(lg_vars_expand(s, t, LG_VARS_JSON, NULL),
                     "192.0.2.1 GET /a?b=1 [a \\\"b\\\"\\\\] [] 42 example.com");
    free_session(s);
}

Test(tpl, captures_refer_to_the_matched_path)
{
    lg_req_t *s = fake_session(NULL, 0);
    s->mpath = "/user/42/x";
    s->caps[1] = (regmatch_t){ 6, 8 };
    const lg_tpl_t *t = compile_ok("/u?id=$1&n=$2");
    cr_expect_str_eq(lg_vars_expand(s, t, LG_VARS_RAW, NULL), "/u?id=42&n=");
    free_session(s);
}

/* ---- through the loader: FILE:LINE ---- */

static char *write_conf(const char *text)
{
    static char path[] = "/tmp/legate-test-vars-XXXXXX";
    strcpy(path, "/tmp/legate-test-vars-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(tpl, the_loader_reports_file_and_line)
{
    const char *text =
        "http = {\n"
        "  log_format = \"$remote_addr $nope1\";\n"
        "  upstreams = { app = { servers = ( \"127.0.0.1:9001\" ); hash_key = \"$nope2\"; }; };\n"
        "  servers = ( {\n"
        "    listen = \"127.0.0.1:8080\";\n"
        "    add_response_headers = { X-A = \"ok\"; X-B = \"$nope3\"; };\n"
        "    routes = ( { prefix = \"/\"; proxy_pass = \"app\";\n"
        "                 cache_key = \"$nope4\"; rewrite = \"/$nope5\"; } );\n"
        "  } );\n"
        "};\n";
    char *path = write_conf(text);
    char err[4096], want[512];
    lg_conf_t *c = lg_conf_load(path, "/tmp", err, sizeof(err));
    cr_expect_null(c);
    static const struct { int line; const char *name, *what; } e[] = {
        { 2, "nope1", "log_format" }, { 3, "nope2", "hash_key" }, { 6, "nope3", "add_response_headers" },
        { 8, "nope4", "cache_key" }, { 8, "nope5", "rewrite" },
    };
    for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++) {
        snprintf(want, sizeof(want), "%s:%d: unknown variable \"$%s\" in '%s'\n", path, e[i].line,
                 e[i].name, e[i].what);
        cr_expect_not_null(strstr(err, want), "missing \"%s\" in:\n%s", want, err);
    }
    lg_conf_free(c);
    unlink(path);
}

Test(tpl, gzip_types_are_split_at_load)
{
    const char *text =
        "http = {\n"
        "  gzip_types = \"text/html text/css,application/json\";\n"
        "  servers = ( { listen = \"127.0.0.1:8080\"; routes = ( { prefix = \"/\"; return = 204; } ); } );\n"
        "};\n";
    char *path = write_conf(text);
    char err[4096];
    lg_conf_t *c = lg_conf_load(path, "/tmp", err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    const lg_strv_t *v = c->servers[0].routes[0].common.gzip_types;
    cr_assert_eq(v->n, 3);
    cr_expect_str_eq(v->v[0], "text/html");
    cr_expect_str_eq(v->v[1], "text/css");
    cr_expect_str_eq(v->v[2], "application/json");
    lg_conf_free(c);
    unlink(path);
}

Test(tpl, cache_valid_is_parsed_at_load)
{
    const char *text =
        "http = {\n"
        "  cache_valid = [ \"200 301 10m\", \"any 1m\" ];\n"
        "  servers = ( { listen = \"127.0.0.1:8080\"; routes = ( { prefix = \"/\"; return = 204; },\n"
        "    { prefix = \"/x\"; return = 204; cache_valid = [ \"20x 1m\", \"404\" ]; } ); } );\n"
        "};\n";
    char *path = write_conf(text);
    char err[4096], want[512];
    cr_expect_null(lg_conf_load(path, "/tmp", err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:4: 'cache_valid': '20x' in \"20x 1m\" is not a status code or any\n", path);
    cr_expect_not_null(strstr(err, want), "%s", err);
    snprintf(want, sizeof(want), "%s:4: 'cache_valid': \"404\" must be status codes (or any) and a duration\n", path);
    cr_expect_not_null(strstr(err, want), "%s", err);
    unlink(path);

    path = write_conf("http = {\n"
        "  cache_valid = [ \"200 301 10m\", \"any 1m\" ];\n"
        "  servers = ( { listen = \"127.0.0.1:8080\"; routes = ( { prefix = \"/\"; return = 204; } ); } );\n"
        "};\n");
    lg_conf_t *c = lg_conf_load(path, "/tmp", err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    const lg_valid_t *v = c->servers[0].routes[0].common.cache_valid;
    cr_assert_eq(v->n, 2);
    cr_expect_str_eq(v->v[0].text, "200 301 10m");
    cr_assert_eq(v->v[0].nstatus, 2);
    cr_expect_eq(v->v[0].status[0], 200);
    cr_expect_eq(v->v[0].status[1], 301);
    cr_expect_eq(v->v[0].ms, 600000);
    cr_expect_eq(v->v[0].any, 0);
    cr_expect_eq(v->v[1].any, 1);
    cr_expect_eq(v->v[1].ms, 60000);
    lg_conf_free(c);
    unlink(path);
}

/* ---- maps: nginx's order of matching ---- */

static const char *map_pick(const lg_map_t *m, const char *v, char *buf, size_t n)
{
    regmatch_t caps[10];
    const lg_map_entry_t *e = lg_map_match(m, v, strlen(v), caps);
    if (e == NULL)
        return "(default)";
    snprintf(buf, n, "%s", e->value->src);
    if (e->kind == LG_MAPK_REGEX && caps[1].rm_so >= 0)
        snprintf(buf + strlen(buf), n - strlen(buf), "|%.*s", (int)(caps[1].rm_eo - caps[1].rm_so),
                 v + caps[1].rm_so);
    return buf;
}

Test(tpl, map_matching_order)
{
    const char *text =
        "http = {\n"
        "  maps = ( { variable = \"m\"; source = \"$host\"; default = \"d\";\n"
        "    values = ( [ \"~^re(.*)\", \"regex1\" ], [ \"*.example.com\", \"lead\" ],\n"
        "               [ \"*.a.example.com\", \"longer-lead\" ], [ \"www.*\", \"trail\" ],\n"
        "               [ \"www.example.*\", \"longer-trail\" ], [ \"Exact.example.com\", \"exact\" ],\n"
        "               [ \"~*^RE2\", \"regex2\" ], [ \"\\\\~tilde\", \"literal\" ] ); } );\n"
        "  servers = ( { listen = \"127.0.0.1:8080\"; routes = ( { prefix = \"/\"; return = 204; } ); } );\n"
        "};\n";
    char *path = write_conf(text);
    char err[4096], buf[128];
    lg_conf_t *c = lg_conf_load(path, "/tmp", err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    cr_assert_eq(c->nuvars, 1);
    const lg_map_t *m = c->uvars[0].map;
    cr_assert_not_null(m);
    static const struct { const char *in, *want; } cases[] = {
        { "exact.example.com", "exact" },           /* exact beats every wildcard */
        { "EXACT.Example.COM", "exact" },           /* ignoring case */
        { "x.example.com", "lead" },
        { "x.a.example.com", "longer-lead" },       /* the longest leading wildcard */
        { "example.com", "(default)" },             /* "*.x" needs a label before */
        { "www.other", "trail" },
        { "www.example.org", "longer-trail" },
        { "www.b.example.com", "lead" },            /* leading before trailing */
        { "rest", "regex1|st" },                    /* then regexes, in order, with groups */
        { "RE2x", "regex2" },
        { "re2", "regex1|2" },                      /* the first regex that matches */
        { "~tilde", "literal" },                    /* "\\~" is a literal '~' */
        { "nothing", "(default)" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_str_eq(map_pick(m, cases[i].in, buf, sizeof(buf)), cases[i].want, "%s", cases[i].in);
    lg_conf_free(c);
    unlink(path);
}

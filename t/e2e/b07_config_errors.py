#!/usr/bin/env python3
"""`legate -t` and config errors: every error reported as FILE:LINE: message."""
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

GOOD = """worker_processes = 1;
http = {
  upstreams = {
    app = { servers = ( "127.0.0.1:9001" ); };
  };
  servers = (
    {
      listen = "127.0.0.1:8080";
      routes = (
        { prefix = "/"; proxy_pass = "app"; }
      );
    }
  );
};
"""


def expect_ok(text):
    rc, err = check_config(text)
    path = check_config.last_path
    eq(rc, 0, "legate -t rc; stderr:\n" + err)
    contains(err, "legate: configuration file %s test is successful" % path)
    return err


def expect_error(text, needle=None, line=None, rx=None):
    """legate -t fails, reporting FILE:LINE (line of needle unless given)."""
    rc, err = check_config(text)
    path = check_config.last_path
    eq(rc, 1, "legate -t rc; stderr:\n" + err)
    contains(err, "legate: configuration file %s test failed" % path)
    if line is None and needle is not None:
        line = line_of(text, needle)
    if line is not None:
        contains(err, "%s:%d:" % (path, line), "error location")
    else:
        ok(re.search(re.escape(path) + r":\d+:", err), "no FILE:LINE: in %r" % err)
    if rx:
        ok(re.search(rx, err, re.I), "error message does not match /%s/: %r" % (rx, err))
    ok("AddressSanitizer" not in err and "runtime error" not in err, err)
    return err


def with_route(route):
    return GOOD.replace('{ prefix = "/"; proxy_pass = "app"; }', route)


@test
def good_config_is_successful():
    expect_ok(GOOD)


@test
def full_featured_config_is_successful():
    expect_ok("""worker_processes = "auto";
pid = "logs/legate.pid";
error_log = "logs/error.log";
error_log_level = "info";
worker_connections = 4096;
worker_rlimit_nofile = 0;
shutdown_timeout = "10s";
http = {
  client_header_timeout = "500ms"; client_body_timeout = 30; send_timeout = "2m";
  keepalive_timeout = "1h"; keepalive_requests = 100;
  proxy_connect_timeout = "1d"; proxy_send_timeout = "10s"; proxy_read_timeout = 60;
  client_max_body_size = "16k";
  add_request_headers = { X-Env = "prod"; };
  remove_request_headers = [ "X-Debug" ];
  add_response_headers = { X-Frame-Options = "DENY"; };
  remove_response_headers = [ "Server" ];
  x_forwarded_for = true; x_forwarded_proto = true; x_forwarded_host = false;
  x_real_ip = false; forwarded = false; via = true;
  access_log = "logs/access.log";
  log_format = "combined";
  upstreams = {
    app = {
      servers = ( "127.0.0.1:9001", { address = "127.0.0.1:9002"; weight = 2; },
                  "[::1]:9003", "unix:/tmp/legate-test-nonexistent.sock" );
      keepalive = 32;
    };
  };
  servers = (
    {
      listen = ( "127.0.0.1:8080", { address = "127.0.0.1:8081"; backlog = 1024; default = true; } );
      server_name = [ "example.com", "*.example.com", "www.example.*", "~^api[0-9]+\\\\.example\\\\.com$" ];
      client_max_body_size = "1m";
      routes = (
        { prefix = "/"; proxy_pass = "app"; client_max_body_size = "2g"; },
        { exact = "/healthz"; return = 200; body = "ok\\n"; },
        { regex = "^/u/([0-9]+)$"; proxy_pass = "app"; rewrite = "/user?id=$1"; },
        { prefix = "/old/"; return = 301; location = "https://example.com/new/"; }
      );
    },
    {
      listen = "127.0.0.1:8080";
      server_name = "other.example";
      log_format = "json";
      access_log = "off";
      routes = ( { prefix = "/"; return = 404; } );
    }
  );
};
""")


@test
def unknown_setting():
    t = GOOD.replace("worker_processes = 1;", "worker_processes = 1;\nbogus_setting = 1;")
    expect_error(t, "bogus_setting", rx="bogus_setting")


@test
def unknown_setting_in_route():
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app";\n  frobnicate = true; }'),
                 "frobnicate", rx="frobnicate")


@test
def wrong_type():
    expect_error(GOOD.replace("worker_processes = 1;", "worker_processes = 1;\n"
                                                       "worker_connections = \"lots\";"),
                 "worker_connections")


@test
def wrong_type_bool():
    expect_error(GOOD.replace('listen = "127.0.0.1:8080";',
                              'listen = "127.0.0.1:8080";\n      via = "yes";'), "via =")


@test
def out_of_range():
    for bad in ("worker_connections = -1;", "worker_connections = 1000001;",
                "worker_processes = 0;", "worker_processes = 513;"):
        expect_error(GOOD.replace("worker_processes = 1;", "worker_processes = 1;\n" + bad)
                     .replace("worker_processes = 1;\nworker_processes", "worker_processes"),
                     bad.split(" =")[0] + " =")


@test
def weight_out_of_range():
    t = GOOD.replace('servers = ( "127.0.0.1:9001" );',
                     'servers = ( "127.0.0.1:9001",\n   { address = "127.0.0.1:9002"; weight = 1001; } );')
    expect_error(t, "weight = 1001")


@test
def return_status_out_of_range():
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app"; },\n'
                            '        { exact = "/x"; return = 600; }'), "return = 600")


@test
def bad_duration_and_size():
    expect_error(GOOD.replace("http = {", 'http = {\n  client_header_timeout = "10x";'),
                 "client_header_timeout")
    expect_error(GOOD.replace("http = {", 'http = {\n  client_max_body_size = "1q";'),
                 "client_max_body_size")


@test
def durations_and_sizes_accepted():
    for d in ('"500ms"', '"10s"', '"2m"', '"1h"', '"1d"', "30"):
        expect_ok(GOOD.replace("http = {", "http = {\n  proxy_read_timeout = %s;" % d))
    for sz in ('"512"', '"16k"', '"1m"', '"2g"', "0", "1048576"):
        expect_ok(GOOD.replace("http = {", "http = {\n  client_max_body_size = %s;" % sz))


@test
def unknown_upstream():
    expect_error(with_route('{ prefix = "/";\n proxy_pass = "nosuch"; }'), 'proxy_pass = "nosuch"',
                 rx="nosuch")


@test
def duplicate_listen_in_one_server():
    t = GOOD.replace('listen = "127.0.0.1:8080";',
                     'listen = ( "127.0.0.1:8080",\n "127.0.0.1:8080" );')
    expect_error(t)


@test
def two_default_servers_on_one_address():
    t = GOOD.replace("""  servers = (
    {""", """  servers = (
    {
      listen = ( { address = "127.0.0.1:8090"; default = true; } );
      routes = ( { prefix = "/"; return = 200; } );
    },
    {
      listen = ( { address = "127.0.0.1:8090";
                 default = true; } );
      routes = ( { prefix = "/"; return = 200; } );
    },
    {""")
    expect_error(t)


@test
def route_with_no_matcher():
    expect_error(with_route('{ proxy_pass = "app"; }'))


@test
def route_with_two_matchers():
    expect_error(with_route('{ prefix = "/"; exact = "/x"; proxy_pass = "app"; }'))


@test
def route_with_no_action():
    expect_error(with_route('{ prefix = "/"; }'))


@test
def route_with_two_actions():
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app"; return = 200; }'))


@test
def rewrite_without_proxy_pass():
    expect_error(with_route('{ prefix = "/"; return = 200; rewrite = "/x"; }'))


@test
def bad_regex():
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app"; },\n'
                            '        { regex = "^/(unclosed"; proxy_pass = "app"; }'),
                 "unclosed")


@test
def bad_addresses():
    for bad in ('"127.0.0.1:notaport"', '"127.0.0.1:99999"', '"no-port-here"',
                '"[::1:80"', '"unix:"'):
        t = GOOD.replace('listen = "127.0.0.1:8080";', 'listen = %s;' % bad)
        expect_error(t, "listen = %s" % bad)
    expect_error(GOOD.replace('servers = ( "127.0.0.1:9001" );', 'servers = ( "1.2.3.4:x" );'),
                 '"1.2.3.4:x"')


@test
def syntax_error_has_line():
    t = GOOD.replace('routes = (', 'routes = ( ;;')
    expect_error(t, "routes = ( ;;")


@test
def all_errors_reported():
    t = GOOD.replace("worker_processes = 1;", "worker_processes = 1;\nfirst_bogus = 1;") \
            .replace('{ prefix = "/"; proxy_pass = "app"; }',
                     '{ prefix = "/"; proxy_pass = "app";\n second_bogus = 2; }')
    err = expect_error(t, "first_bogus")
    contains(err, "%s:%d:" % (check_config.last_path, line_of(t, "second_bogus")),
             "second error")


@test
def rlimit_above_hard_limit_is_not_an_error():
    expect_ok(GOOD.replace("worker_processes = 1;",
                           "worker_processes = 1;\nworker_rlimit_nofile = 100000000;"))


@test
def rlimit_above_hard_limit_warns_at_start():
    o = Origin("o1")
    port = free_port()
    lg = Legate(GOOD.replace("worker_processes = 1;",
                             "worker_processes = 1;\nworker_rlimit_nofile = 100000000;")
                .replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
                .replace("127.0.0.1:9001", o.address), workers=None)
    eq(request(lg.port, target="/x").status, 200)
    lg.wait_log(r"\[warn\].*(rlimit|RLIMIT|nofile|NOFILE|open files)", 5,
                what="a [warn] about worker_rlimit_nofile")


@test
def missing_config_file():
    d = tempfile.mkdtemp(prefix="legate-t-")
    rc, out, err = run_legate(["-t", "-p", d, "-c", os.path.join(d, "nope.conf")])
    eq(rc, 1)
    contains(err, "nope.conf")
    os.rmdir(d)


@test
def T_prints_effective_config():
    rc, err = check_config(GOOD, extra_args=["-T"])
    eq(rc, 0, err)
    out = check_config.last_stdout
    contains(out, "127.0.0.1:8080")
    # merged defaults show up in the effective config
    contains(out, "client_max_body_size")
    contains(out, "keepalive_timeout")


@test
def V_prints_version():
    rc, out, err = run_legate(["-V"])
    eq(rc, 0)
    contains(out + err, "0.1.0")


@test
def h_prints_usage():
    rc, out, err = run_legate(["-h"])
    eq(rc, 0)
    contains(out + err, "-c")


@test
def bad_option_fails():
    rc, out, err = run_legate(["--no-such-option"])
    ok(rc != 0, "rc 0 for an unknown option")


@test
def starting_with_bad_config_fails_fast():
    d = tempfile.mkdtemp(prefix="legate-t-")
    os.makedirs(os.path.join(d, "logs"))
    path = os.path.join(d, "legate.conf")
    with open(path, "w") as f:
        f.write(GOOD.replace("worker_processes = 1;", "worker_processes = 1;\nbogus = 1;"))
    rc, out, err = run_legate(["-F", "-p", d, "-c", path], timeout=10)
    eq(rc, 1, "rc starting with a bad config")
    contains(err, "%s:%d:" % (path, 2))


# ---- variables: names are checked when the configuration loads ----

VARS_GOOD = """worker_processes = 1;
http = {
  log_format = "$remote_addr ${request} $status $http_user_agent $cookie_sid $upstream_addr $$";
  cache_key = "$scheme://$host$request_uri";
  upstreams = {
    app = { servers = ( "127.0.0.1:9001" ); balance = "hash"; hash_key = "$cookie_uid"; };
  };
  servers = (
    {
      listen = "127.0.0.1:8080";
      add_response_headers = { X-Host = "${host}"; X-Price = "5$"; X-Open = "${x"; };
      routes = (
        { regex = "^/u/(.*)$"; proxy_pass = "app"; rewrite = "/user/$1"; },
        { prefix = "/"; proxy_pass = "app"; }
      );
    }
  );
};
"""


@test
def known_variables_are_accepted():
    expect_ok(VARS_GOOD)


@test
def unknown_variable_in_a_header_value():
    text = GOOD.replace('listen = "127.0.0.1:8080";',
                        'listen = "127.0.0.1:8080";\n      add_request_headers = { X-Who = "$remote_adr"; };')
    expect_error(text, 'X-Who', rx=r'unknown variable "\$remote_adr"')


@test
def unknown_variable_in_a_log_format():
    text = GOOD.replace('http = {', 'http = {\n  log_format = "$remote_addr ${no_such} $status";')
    expect_error(text, 'log_format', rx=r'unknown variable "\$no_such" in .log_format.')


@test
def unknown_variable_in_a_cache_key():
    text = GOOD.replace('{ prefix = "/"; proxy_pass = "app"; }',
                        '{ prefix = "/"; proxy_pass = "app";\n          cache_key = "$host$requst_uri"; }')
    expect_error(text, 'cache_key', rx=r'unknown variable "\$requst_uri" in .cache_key.')


@test
def every_unknown_variable_is_reported_at_its_line():
    text = GOOD.replace('http = {', 'http = {\n  log_format = "$nope1";\n  cache_key = "$nope2";') \
               .replace('listen = "127.0.0.1:8080";',
                        'listen = "127.0.0.1:8080";\n      add_response_headers = { X-A = "$nope3"; };')
    err = expect_error(text, 'log_format')
    path = check_config.last_path
    for needle, name in (('log_format', 'nope1'), ('cache_key', 'nope2'), ('X-A', 'nope3')):
        contains(err, '%s:%d: unknown variable "$%s"' % (path, line_of(text, needle), name))


def vars_conf(port, o, header):
    return simple_conf(port, [o], server_extra='add_response_headers = { X-V = "%s"; };' % header)


@test
def reload_with_an_unknown_variable_keeps_the_old_config():
    o = Origin("o1")
    port = free_port()
    lg = Legate(vars_conf(port, o, "old $request_method"))
    eq(request(port).headers.get("x-v"), "old GET")
    lg.allow_log(r"legate\.conf")
    lg.reload(vars_conf(port, o, "new $no_such_var"), expect_ok=False)
    lg.wait_log(r'legate\.conf:\d+: unknown variable "\$no_such_var"', 5)
    r = request(port)
    eq(r.status, 200)
    eq(r.headers.get("x-v"), "old GET", "the old configuration still serves")
    lg.reload(vars_conf(port, o, "new $request_method"))
    eq(request(port).headers.get("x-v"), "new GET")


@test
def bad_cache_lists_are_errors():
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app";\n          cache_valid = [ "200 10q" ]; }'),
                 'cache_valid', rx=r"'cache_valid': \"200 10q\" must be status codes")
    expect_error(with_route('{ prefix = "/"; proxy_pass = "app"; cache_purge_allow = [ "10.0.0.0/99" ]; }'),
                 'cache_purge_allow', rx=r"'cache_purge_allow': .*10\.0\.0\.0/99")


if __name__ == "__main__":
    main()

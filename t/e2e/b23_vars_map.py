#!/usr/bin/env python3
"""Declared variables (maps and set), the common nginx variables, route
conditions with negation and regexes (if, header, query), and Set-Cookie
rewriting (proxy_cookie_domain, proxy_cookie_path): issue 17."""
import os
import re
import shutil
import socket
import sys
import tempfile
from urllib.parse import quote

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402


class TmpDir:
    def __init__(self, path):
        self.path = path

    def teardown(self):
        shutil.rmtree(self.path, ignore_errors=True)


@session
def mapped():
    o1, o2 = Origin("o1"), Origin("o2")
    port = free_port()
    # the maps come after the servers that use them: the names are known
    # before any template is read
    lg = Legate("""
http = {
  access_log = "logs/access.log";
  log_format = "$request_uri ct=$sent_http_content_type xo=$upstream_http_x_origin pool=$pool";
  upstreams = {
    one = { servers = ( "%s" ); };
    two = { servers = ( "%s" ); };
  };
  servers = ( {
    listen = "127.0.0.1:%d";
    server_name = [ "example.com", "*.example.com", "www.example.org", "x.example.net" ];
    set = { tier = "server-$pool"; who = "server"; };
    add_response_headers = { X-Pool = "$pool"; X-Tier = "$tier"; X-Who = "$who";
                             X-Path-Map = "$pathmap"; X-Uid = "$uid"; };
    routes = (
      { prefix = "/"; proxy_pass = "one"; add_request_headers = { X-Pool = "$pool"; }; },
      { prefix = "/route-set/"; proxy_pass = "one"; set = { who = "route $uri"; }; },
      { prefix = "/vars"; return = 200;
        body = "scheme=$scheme https=[$https] is_args=[$is_args] args=[$args] docuri=$document_uri ct=[$content_type] cl=[$content_length] cookie=[$cookie_sid] http=[$http_x_thing] server_addr=$server_addr server_port=$server_port hostname=$hostname host=$host\\n"; },
      { prefix = "/cond"; if = [ "$http_user_agent ~* (bot|crawler)" ]; return = 200; body = "bot\\n"; },
      { prefix = "/cond"; if = [ "$arg_v != 1", "!$cookie_keep" ]; return = 200; body = "not-one\\n"; },
      { prefix = "/cond"; if = "$pool = api"; return = 200; body = "api\\n"; },
      { prefix = "/cond"; return = 200; body = "fallback\\n"; },
      { prefix = "/hdr"; header = "!X-Debug"; return = 200; body = "no-debug\\n"; },
      { prefix = "/hdr"; header = "X-Debug ~* ^(yes|on)$"; return = 200; body = "debug-on\\n"; },
      { prefix = "/hdr"; return = 200; body = "debug-other\\n"; },
      { prefix = "/q"; query = "!preview"; return = 200; body = "no-preview\\n"; },
      { prefix = "/q"; return = 200; body = "preview\\n"; },
      { prefix = "/cookie/"; proxy_pass = "two";
        proxy_cookie_domain = [ "backend.internal example.com" ];
        proxy_cookie_path = [ "/app/ /", "/other/ /o/" ]; }
    );
  } );
  maps = (
    { variable = "pool"; source = "$host"; default = "main";
      values = (
        [ "example.com", "apex" ],
        [ "API.example.com", "api" ],
        [ "*.example.com", "sub" ],
        [ "*.eu.example.com", "eu" ],
        [ "www.example.*", "www" ],
        [ "~^x\\\\.(.*)$", "rx-$1" ]
      ); },
    { variable = "pathmap"; source = "$uri";
      values = ( [ "~*^/USERS/([0-9]+)/(.*)$", "u$1:$2" ] ); },
    { variable = "uid"; source = "$pathmap"; default = "none";
      values = ( [ "~^u([0-9]+):", "id$1" ] ); }
  );
};
""" % (o1.address, o2.address, port))
    return lg, o1, o2


def get(target, host="example.com", headers=()):
    lg = mapped()[0]
    r = request(lg.port, target=target, host=host, headers=headers)
    ok(r is not None, "no response for %s" % target)
    return r


@test
def map_exact_wildcards_regex_and_default_in_nginx_order():
    """Exact (case-insensitive), the longest *.x, then x.*, then the first
    regex with its captures, then the default -- the order nginx's map has."""
    for host, want in [("example.com", "apex"), ("api.example.com", "api"),
                       ("Api.Example.Com", "api"), ("a.example.com", "sub"),
                       ("a.eu.example.com", "eu"), ("www.example.org", "www"),
                       ("x.example.net", "rx-example.net"), ("other.test", "main")]:
        r = get("/", host=host)
        eq(r.status, 200, host)
        eq(r.headers.get("X-Pool"), want, host)


@test
def map_result_goes_upstream_and_into_conditions():
    lg, o1, _ = mapped()
    r = request(lg.port, target="/?echo=1", host="api.example.com")
    eq(r.status, 200)
    hdrs = dict((k.lower(), v) for k, v in r.json()["headers"])
    eq(hdrs.get("x-pool"), "api")
    eq(get("/cond?v=1", host="api.example.com").body, b"api\n")
    eq(get("/cond?v=1", host="example.com").body, b"fallback\n")


@test
def map_of_a_map_and_regex_captures_of_the_map_not_the_route():
    r = get("/Users/42/profile")
    eq(r.headers.get("X-Path-Map"), "u42:profile")
    eq(r.headers.get("X-Uid"), "id42")
    r = get("/nothing")
    eq(r.headers.get("X-Path-Map"), "")       # empty: no entry and no default
    eq(r.headers.get("X-Uid"), "none")


@test
def set_at_server_and_route_level_the_route_wins():
    r = get("/plain", host="a.example.com")
    eq(r.headers.get("X-Tier"), "server-sub")
    eq(r.headers.get("X-Who"), "server")
    r = get("/route-set/x", host="a.example.com")
    eq(r.headers.get("X-Who"), "route /route-set/x")
    eq(r.headers.get("X-Tier"), "server-sub")   # the server's other set still holds


@test
def the_common_nginx_variables():
    lg = mapped()[0]
    st, h, body = curl("-H", "Host: example.com", "-H", "Cookie: a=1; sid=abc; z=2",
                       "-H", "X-Thing: t1", "-H", "Content-Type: text/x-test",
                       "--data-binary", "12345", lg.url("/vars?k=v"))
    eq(st, 200)
    import socket
    want = ("scheme=http https=[] is_args=[?] args=[k=v] docuri=/vars ct=[text/x-test] "
            "cl=[5] cookie=[abc] http=[t1] server_addr=127.0.0.1 server_port=%d "
            "hostname=%s host=example.com\n" % (lg.port, socket.gethostname()))
    eq(body.decode(), want)
    st, h, body = curl("-H", "Host: example.com", lg.url("/vars"))
    contains(body.decode(), "is_args=[] args=[]")


@test
def sent_and_upstream_header_variables_in_the_access_log():
    lg = mapped()[0]
    eq(get("/logged?ctype=text/x-logged").status, 200)
    wait_until(lambda: "/logged" in open(lg.access_log).read(), 10, what="access log line")
    line = [l for l in open(lg.access_log) if l.startswith("/logged")][-1]
    eq(line.strip(), "/logged?ctype=text/x-logged ct=text/x-logged xo=o1 pool=apex")
    eq(get("/vars").status, 200)
    # this request's own line ("/vars ", no query): the log is written once
    # a second, and an earlier test's "/vars?k=v" may be the last line yet
    wait_until(lambda: any(l.startswith("/vars ") for l in open(lg.access_log)), 10,
               what="access log line")
    line = [l for l in open(lg.access_log) if l.startswith("/vars ")][-1]
    eq(line.strip(), "/vars ct=text/plain xo=- pool=apex")


@session
def more():
    o = Origin("o")
    top = tempfile.mkdtemp(prefix="legate-vars-")
    _track(TmpDir(top))
    with open(os.path.join(top, "a.txt"), "w") as f:
        f.write("a\n")
    port = free_port()
    lg = Legate("""
http = {
  access_log = "logs/access.log";
  log_format = "$request_uri ubs=$upstream_bytes_sent ubr=$upstream_bytes_received url=$upstream_response_length ucs=$upstream_cache_status rc=[$request_completion]";
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( {
    listen = "127.0.0.1:%d";
    routes = (
      { prefix = "/up/"; proxy_pass = "app";
        add_request_headers = { X-Fwd = "$proxy_add_x_forwarded_for"; X-Ver = "$legate_version"; }; },
      { prefix = "/files/"; alias = "%s/";
        add_response_headers = { X-File = "$request_filename"; X-Root = "$document_root";
                                 X-RC = "[$request_completion]"; }; },
      { prefix = "/v"; return = 200;
        body = "ver=$legate_version rport=$realip_remote_port ucs=$upstream_cache_status ubs=$upstream_bytes_sent\\n"; }
    );
  } );
};
""" % (o.address, port, top))
    return lg, top


def logged_line(lg, start):
    def find():
        if not os.path.exists(lg.access_log):
            return None
        got = [l.strip() for l in open(lg.access_log) if l.startswith(start + " ")]
        return got[-1] if got else None
    wait_until(lambda: find() is not None, 10, what="the access line of %s" % start)
    return find()


@test
def more_nginx_variables_version_ports_forwarded_for():
    lg, top = more()
    rc, out, err = run_legate(["-V"])
    version = re.search(r"legate version (\S+)", out + err).group(1)
    s = socket.create_connection(("127.0.0.1", lg.port), timeout=10)
    try:
        s.sendall(b"GET /v HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        myport = s.getsockname()[1]
    finally:
        s.close()
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    eq(body, "ver=%s rport=%d ucs=- ubs=-\n" % (version, myport))
    r = request(lg.port, target="/up/e?echo=1", headers=[("X-Forwarded-For", "203.0.113.9")])
    hdrs = dict((k.lower(), v) for k, v in r.json()["headers"])
    eq(hdrs.get("x-fwd"), "203.0.113.9, 127.0.0.1")
    eq(hdrs.get("x-ver"), version)
    r = request(lg.port, target="/up/e2?echo=1")
    eq(dict((k.lower(), v) for k, v in r.json()["headers"]).get("x-fwd"), "127.0.0.1")


@test
def upstream_byte_counts_and_completion_in_the_log():
    lg, top = more()
    eq(request(lg.port, target="/up/len?size=1000").status, 200)
    eq(request(lg.port, target="/up/chunks?size=1000&chunked=1&chunk=100").status, 200)
    eq(request(lg.port, method="POST", target="/up/post?size=1000", body=b"x" * 5000).status, 200)
    fields = {}
    for path in ("/up/len?size=1000", "/up/chunks?size=1000&chunked=1&chunk=100",
                 "/up/post?size=1000"):
        line = logged_line(lg, path)
        m = re.fullmatch(re.escape(path) + r" ubs=(\d+) ubr=(\d+) url=(\d+) ucs=- rc=\[OK\]", line)
        ok(m, "the line of %s: %r" % (path, line))
        fields[path] = [int(x) for x in m.groups()]
    ubs, ubr, url = fields["/up/len?size=1000"]
    eq(url, 1000, "the body's length")
    ok(1000 + 60 < ubr < 1000 + 600, "a head and the body received: %d" % ubr)
    ok(30 < ubs < 600, "a head sent: %d" % ubs)
    cubs, cubr, curl_ = fields["/up/chunks?size=1000&chunked=1&chunk=100"]
    eq(curl_, 1000, "the de-chunked payload")
    ok(cubr >= ubr + 10 * 5, "chunked framing counted in what was received: %d vs %d" % (cubr, ubr))
    pubs = fields["/up/post?size=1000"][0]
    ok(5000 <= pubs - ubs <= 5000 + 40, "the body sent counted: %d vs %d" % (pubs, ubs))


@test
def file_variables_and_completion_before_the_end():
    lg, top = more()
    st, h, body = curl(lg.url("/files/a.txt"))
    eq((st, body), (200, b"a\n"))
    eq(h.get("X-File"), top + "/a.txt")
    eq(h.get("X-Root"), top)
    eq(h.get("X-RC"), "[]", "not complete while its head is made")
    rc, err = check_config("""http = { servers = ( { listen = "127.0.0.1:1";
  routes = ( { prefix = "/"; return = 200; body = "$nginx_version"; } ); } ); };""")
    ok(rc != 0, "nginx_version is legate_version here")
    contains(err, "nginx_version")


@test
def if_conditions_with_regex_case_and_negation():
    eq(get("/cond", headers=[("User-Agent", "SomeBOT/1.0")]).body, b"bot\n")
    eq(get("/cond?v=2").body, b"not-one\n")
    eq(get("/cond").body, b"not-one\n")                 # empty $arg_v is not "1"
    eq(get("/cond?v=2", headers=[("Cookie", "keep=1")]).body, b"fallback\n")
    eq(get("/cond?v=1").body, b"fallback\n")


@test
def header_and_query_conditions_negated_and_by_regex():
    eq(get("/hdr").body, b"no-debug\n")
    eq(get("/hdr", headers=[("X-Debug", "ON")]).body, b"debug-on\n")
    eq(get("/hdr", headers=[("X-Debug", "maybe")]).body, b"debug-other\n")
    eq(get("/q").body, b"no-preview\n")
    eq(get("/q?preview").body, b"preview\n")
    eq(get("/q?a=1&preview=1").body, b"preview\n")


@test
def set_cookie_domain_and_path_rewritten_as_nginx():
    cookies = ["a=1; Domain=backend.internal; Path=/app/x; HttpOnly",
               "b=2; domain=.Backend.Internal; path=/other/y",
               "c=3; Domain=elsewhere.test; Path=/keep",
               "d=4"]
    q = "&".join("hdr=" + quote("Set-Cookie:" + c) for c in cookies)
    r = get("/cookie/x?" + q)
    eq(r.status, 200)
    eq(r.headers.get_all("Set-Cookie"),
       ["a=1; Domain=example.com; Path=/x; HttpOnly",
        "b=2; domain=.example.com; path=/o/y",
        "c=3; Domain=elsewhere.test; Path=/keep",
        "d=4"])


@test
def declared_variable_errors_name_the_line():
    cases = [
        ('set = { host = "x"; };', "$host is a built-in variable"),
        ('set = { "bad-name" = "x"; };', None),
        ('add_response_headers = { X = "$nosuch"; };', 'unknown variable "$nosuch"'),
    ]
    for server_extra, want in cases:
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"], server_extra=server_extra))
        ok(rc != 0, server_extra)
        if want:
            contains(err, want)
        ok(":" in err and "legate.conf:" in err, err)
    maps = [
        ('{ variable = "m"; source = "$host"; values = ( [ "a", "$1" ] ); }',
         "map value uses $1 but its key is not a regex"),
        ('{ variable = "m"; source = "$host"; values = ( [ "~^(a)", "$2" ] ); }',
         "map value uses $2 but the regex has 1 group(s)"),
        ('{ variable = "m"; source = "$host"; values = ( [ "~(", "x" ] ); }',
         "bad regex in map key"),
        ('{ variable = "m"; source = "$host"; values = ( [ "a.*.b", "x" ] ); }',
         "'*' is only allowed"),
        ('{ variable = "m"; source = "$host"; }, { variable = "m"; source = "$uri"; }',
         "$m is defined by another map"),
        ('{ variable = "m"; values = ( ); }', "a map needs 'source'"),
        ('{ variable = "m"; source = "$host"; values = ( [ "a" ] ); }',
         'each map value is [ "key", "value" ]'),
    ]
    for m, want in maps:
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"],
                                           http_extra="maps = ( %s );" % m))
        ok(rc != 0, m)
        contains(err, want)
    conds = [
        ('if = "nothing";', "must start with a $variable"),
        ('if = "$uri <> x";', 'unknown operator "<>"'),
        ('if = "!$uri = x";', "a leading '!' only negates a lone $variable"),
        ('if = "$uri ~ (";', "bad regex"),
        ('header = "X-A = b";', "'header' must be"),
    ]
    for c, want in conds:
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"], route_extra=c))
        ok(rc != 0, c)
        contains(err, want)


@test
def dump_shows_maps_sets_and_conditions_and_loads_again():
    """legate -T writes what was read, and what it writes loads the same."""
    lg = mapped()[0]
    rc, err = check_config(lg.conf_text, extra_args=["-T"])
    eq(rc, 0, err)
    out = check_config.last_stdout
    for want in ['variable = "pool"; source = "$host"; default = "main"',
                 '[ "*.example.com", "sub" ]', '[ "www.example.*", "www" ]',
                 'set = { tier = "server-$pool"; who = "server"; }', 'who = "route $uri"',
                 'if = [ "$http_user_agent ~* (bot|crawler)" ]', 'header = "!X-Debug"',
                 'header = "X-Debug ~* ^(yes|on)$"', 'query = "!preview"',
                 'proxy_cookie_domain = [ "backend.internal example.com" ]']:
        contains(out, want)
    rc, err = check_config(out)
    eq(rc, 0, err)


@test
def syntax_errors_say_what_to_write():
    """libconfig's bare "syntax error" gets the likely mistake and its fix."""
    one = 'http = { servers = ( { listen = "127.0.0.1:%d"; %%s } ); };\n' % free_port()
    cases = [
        (one % 'routes = ( { prefix = "/"; return = 200; }, );', 1, "no comma before ')' or ']'"),
        (one % 'routes = ( { prefix = "/"; return = 200; }; { prefix = "/a"; return = 200; } );', 1,
         "separated by ','; ';' ends a setting inside a group"),
        (one % 'routes = ( { prefix = "/"; proxy_pass = app; } );', 1,
         'a string value is written in double quotes'),
        ('http = {\n  servers = (\n    { listen = "127.0.0.1:1"; routes = ( { prefix = "/"; return = 200; } ); },\n'
         '  );\n};\n', 4, "(on the line before)"),
        ('http = {\n servers = (\n  { listen = "127.0.0.1:1"; routes = ( { prefix = "/"; return = 200; } ); }\n'
         '  { listen = "127.0.0.1:2"; routes = ( { prefix = "/"; return = 200; } ); }\n );\n};\n', 4,
         "put one after the '}' on the line before"),
    ]
    for text, line, want in cases:
        rc, err = check_config(text)
        ok(rc != 0, text)
        contains(err, "legate.conf:%d: syntax error: " % line)
        contains(err, want)


@test
def a_map_naming_itself_expands_to_nothing_instead_of_looping():
    port = free_port()
    o = Origin("o")
    lg = Legate(simple_conf(port, [o], http_extra="""
maps = ( { variable = "loop"; source = "$loop"; default = "d$loop"; } );""",
                            server_extra='add_response_headers = { X-Loop = "[$loop]"; };'))
    r = request(port, target="/")
    eq(r.status, 200)
    ok(r.headers.get("X-Loop", "").startswith("[d"), r.headers.get("X-Loop"))


if __name__ == "__main__":
    main()

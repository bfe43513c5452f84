#!/usr/bin/env python3
"""Route precedence (exact > regex in order > longest prefix > 404), return,
rewrite, and server selection by Host."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


@session
def routed():
    o1, o2 = Origin("o1"), Origin("o2")
    port = free_port()
    lg = Legate("""
http = {
  upstreams = {
    one = { servers = ( "%s" ); };
    two = { servers = ( "%s" ); };
  };
  servers = ( {
    listen = "127.0.0.1:%d";
    routes = (
      { prefix = "/"; proxy_pass = "one"; },
      { exact = "/healthz"; return = 200; body = "ok\\n"; },
      { prefix = "/healthz"; return = 500; body = "prefix\\n"; },
      { regex = "^/u/([0-9]+)$"; proxy_pass = "two"; rewrite = "/user?id=$1"; },
      { regex = "^/u/"; proxy_pass = "one"; },
      { prefix = "/u/"; return = 500; body = "prefix-u\\n"; },
      { prefix = "/a/"; proxy_pass = "one"; },
      { prefix = "/a/b/"; proxy_pass = "two"; },
      { regex = "^/r/(x)(y)"; proxy_pass = "two"; rewrite = "/cap/$2/$1"; },
      { prefix = "/old/"; return = 301; location = "https://example.com/new/"; },
      { exact = "/down"; return = 503; body = "down\\n"; },
      { exact = "/teapot"; return = 418; },
      { iregex = "\\.(png|jpg)$"; return = 200; body = "image\n"; },
      { prefix = "/static/"; no_regex = true; return = 200; body = "static\n"; }
    );
  } );
};
""" % (o1.address, o2.address, port))
    return lg, o1, o2


def get(target, host="localhost"):
    lg = routed()[0]
    r = request(lg.port, target=target, host=host)
    ok(r is not None, "no response for %s" % target)
    return r


@test
def exact_wins_over_prefix():
    r = get("/healthz")
    eq((r.status, r.body), (200, b"ok\n"))
    r = get("/healthz/more")
    eq((r.status, r.body), (500, b"prefix\n"))


@test
def iregex_ignores_case_and_no_regex_prefixes_skip_regexes():
    """nginx's ~* and ^~: /a/X.PNG matches the case-insensitive regex before
    the /a/ prefix; under /static/ (no_regex) the regexes are not tried."""
    r = get("/a/X.PNG")
    eq((r.status, r.body), (200, b"image\n"))
    r = get("/static/logo.png")
    eq((r.status, r.body), (200, b"static\n"))
    r = get("/elsewhere/logo.Jpg")
    eq((r.status, r.body), (200, b"image\n"))
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"],
                                       routes='{ regex = "^/x"; no_regex = true; return = 200; }'))
    ok(rc != 0 and "'no_regex' is only for 'prefix' routes" in err, err)


@test
def a_return_body_has_the_routes_default_type():
    port = free_port()
    lg = Legate(simple_conf(port, ["127.0.0.1:1"], routes=
        '{ exact = "/j"; return = 200; body = "{\\"ok\\":true}"; default_type = "application/json"; },'
        '{ exact = "/t"; return = 200; body = "plain"; }'))
    r = request(port, target="/j")
    eq((r.status, r.headers.get("Content-Type"), r.body), (200, "application/json", b'{"ok":true}'))
    eq(request(port, target="/t").headers.get("Content-Type"), "text/plain")


@test
def error_pages_for_legates_own_answers_and_intercepted_ones():
    """nginx's error_page and proxy_intercept_errors."""
    import tempfile
    d = tempfile.mkdtemp(prefix="legate-errpages-")
    with open(os.path.join(d, "404.html"), "w") as f:
        f.write("<h1>nothing here</h1>\n")
    with open(os.path.join(d, "5xx.html"), "w") as f:
        f.write("<h1>back soon</h1>\n")
    with Origin("o") as o:
        port = free_port()
        pages = 'error_pages = [ "404 %s/404.html", "502 503 504 %s/5xx.html" ];' % (d, d)
        text = """
http = {
  %s
  upstreams = { app = { servers = ( "%s" ); }; dead = { servers = ( "127.0.0.1:1" ); }; };
  servers = ( { listen = "127.0.0.1:%d";
    routes = (
      { prefix = "/dead/"; proxy_pass = "dead"; },
      { prefix = "/icpt/"; proxy_pass = "app"; intercept_errors = true; },
      { prefix = "/app/"; proxy_pass = "app"; },
      { exact = "/gone"; return = 404; }
    ); } );
};
""" % (pages, o.address, port)
        Legate(text)
        for target, st, body in (("/nothing", 404, b"<h1>nothing here</h1>\n"),
                                 ("/gone", 404, b"<h1>nothing here</h1>\n"),
                                 ("/dead/x", 502, b"<h1>back soon</h1>\n"),
                                 ("/icpt/x?status=503", 503, b"<h1>back soon</h1>\n")):
            r = request(port, target=target)
            eq((r.status, r.body), (st, body), target)
            contains(r.headers.get("Content-Type"), "text/html")
        r = request(port, target="/app/x?status=503")
        eq(r.status, 503)
        ok(b"back soon" not in r.body, "without intercept_errors the upstream's own body")
        eq(request(port, target="/icpt/x?status=500").status, 500, "no page for 500: the upstream's")
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"],
                                       http_extra='error_pages = [ "404 /nonexistent/x.html" ];'))
    ok(rc != 0 and re.search(r"legate\.conf:\d+: 'error_pages': cannot read", err), err)
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"],
                                       http_extra='error_pages = [ "200 %s/404.html" ];' % d))
    ok(rc != 0 and "is not a status code from 300 to 599" in err, err)


@test
def exact_ignores_query():
    r = get("/healthz?x=1")
    eq((r.status, r.body), (200, b"ok\n"))


@test
def regex_wins_over_prefix_and_rewrites():
    r = get("/u/42")
    eq(r.headers.get("X-Origin"), "o2")
    eq(r.headers.get("X-Origin-Target"), "/user?id=42")


@test
def first_matching_regex_wins():
    r = get("/u/abc")          # only the second regex matches
    eq(r.headers.get("X-Origin"), "o1")
    eq(r.headers.get("X-Origin-Target"), "/u/abc")


@test
def rewrite_with_several_captures():
    r = get("/r/xyz")
    eq(r.headers.get("X-Origin-Target"), "/cap/y/x")


@test
def longest_prefix_wins():
    eq(get("/a/b/c").headers.get("X-Origin"), "o2")
    eq(get("/a/x").headers.get("X-Origin"), "o1")
    eq(get("/a/b").headers.get("X-Origin"), "o1")
    eq(get("/zzz").headers.get("X-Origin"), "o1")


@test
def return_redirect():
    r = get("/old/page")
    eq(r.status, 301)
    eq(r.headers.get("Location"), "https://example.com/new/")


@test
def return_with_body():
    r = get("/down")
    eq((r.status, r.body), (503, b"down\n"))
    eq(get("/teapot").status, 418)


@test
def return_routes_do_not_touch_origins():
    lg, o1, o2 = routed()
    before = o1.stats()["requests"] + o2.stats()["requests"]
    for t in ("/healthz", "/down", "/old/x", "/teapot"):
        get(t)
    eq(o1.stats()["requests"] + o2.stats()["requests"], before)


@test
def no_matching_route_is_404():
    o = Origin("o1")
    lg = Legate(simple_conf(free_port(), [o], routes='{ prefix = "/api/"; proxy_pass = "app"; }'))
    eq(request(lg.port, target="/api/x").status, 200)
    eq(request(lg.port, target="/other").status, 404)
    eq(request(lg.port, target="/api").status, 404)
    eq(o.stats()["requests"], 1)


@test
def return_on_keepalive_connection():
    lg = routed()[0]
    with Conn(lg.port) as c:
        for i in range(5):
            eq(c.request(target="/healthz").body, b"ok\n")
            eq(c.request(target="/x%d" % i).headers.get("X-Origin"), "o1")


# ---- server selection ----

@session
def named():
    port = free_port()

    def server(name, names, extra=""):
        return """    { listen = "127.0.0.1:%d"; %s %s
      routes = ( { prefix = "/"; return = 200; body = "%s\\n"; } ); }""" % (
            port, ("server_name = %s;" % names) if names else "", extra, name)
    lg = Legate("http = {\n  servers = (\n%s\n  );\n};\n" % ",\n".join([
        server("first", '"first.example"'),
        server("exact", '[ "example.com", "www.example.com" ]'),
        server("lead", '"*.example.com"'),
        server("lead-long", '"*.b.example.com"'),
        server("trail", '"www.example.*"'),
        server("regex", '"~^api[0-9]+\\\\.test$"'),
        server("regex2", '"~^api"'),
        server("default", '"default.example"',
               'listen = ( { address = "127.0.0.1:%d"; default = true; } );' % port)
        .replace('listen = "127.0.0.1:%d"; ' % port, "", 1),
    ]))
    return lg


def who(host):
    r = request(named().port, target="/", host=host)
    return r.body.decode().strip()


@test
def server_exact_name():
    eq(who("example.com"), "exact")
    eq(who("www.example.com"), "exact")


@test
def server_name_case_and_port_ignored():
    eq(who("EXAMPLE.com"), "exact")
    eq(who("example.com:%d" % named().port), "exact")


@test
def server_leading_wildcard():
    eq(who("a.example.com"), "lead")
    eq(who("x.y.example.com"), "lead")


@test
def server_longest_leading_wildcard():
    eq(who("x.b.example.com"), "lead-long")


@test
def server_trailing_wildcard():
    eq(who("www.example.org"), "trail")


@test
def server_regex_first_match():
    eq(who("api7.test"), "regex")
    eq(who("apifoo.test"), "regex2")


@test
def server_default_flag():
    eq(who("unknown.example"), "default")
    r = request(named().port, target="/", host=None, )   # HTTP/1.1 without Host is a 400
    eq(r.status, 400)


@test
def server_default_is_first_without_flag():
    port = free_port()
    lg = Legate("""http = { servers = (
  { listen = "127.0.0.1:%d"; server_name = "a.example";
    routes = ( { prefix = "/"; return = 200; body = "a\\n"; } ); },
  { listen = "127.0.0.1:%d"; server_name = "b.example";
    routes = ( { prefix = "/"; return = 200; body = "b\\n"; } ); }
); };""" % (port, port))
    eq(request(lg.port, host="zzz").body, b"a\n")
    eq(request(lg.port, host="b.example").body, b"b\n")


@test
def absolute_form_target_selects_server():
    lg = named()
    data = http_raw(lg.port, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
                    responses=1)
    eq(parse_responses(data)[0].body, b"exact\n")


if __name__ == "__main__":
    main()

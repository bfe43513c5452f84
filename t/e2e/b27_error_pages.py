#!/usr/bin/env python3
"""Error pages that hand the request to a route (nginx's error_page 404
@fallback, error_page 502 /50x.html, =CODE), for legate's own errors (404,
403, 429, 502, 504) and, with intercept_errors, for upstream answers;
never twice (recursive_error_pages off); over HTTP/1.1 and HTTP/2.  And
Via on the reverse proxy: off unless configured, and a route to legate's
own address refused by legate -t (issue 17)."""
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402


class TmpDir:
    def __init__(self, path):
        self.path = path

    def teardown(self):
        shutil.rmtree(self.path, ignore_errors=True)


@session
def site():
    top = tempfile.mkdtemp(prefix="legate-errpages-")
    _track(TmpDir(top))
    with open(os.path.join(top, "50x.html"), "w") as f:
        f.write("<p>we are sorry</p>\n")
    with open(os.path.join(top, "gone.html"), "w") as f:
        f.write("<p>gone, but fine</p>\n")
    app, spare = Origin("app"), Origin("spare")
    dead = free_port()          # nothing listens there: connections are refused
    port, h2 = free_port(), free_port()
    lg = Legate("""
http = {
  access_log = "logs/access.log";
  log_format = "$status [$request] $upstream_status";
  limit_req_zones = ( { name = "slow"; key = "$remote_addr"; rate = "1r/m"; },
                      { name = "slow2"; key = "$remote_addr"; rate = "1r/m"; } );
  upstreams = {
    app = { servers = ( "%(app)s" ); };
    spare = { servers = ( "%(spare)s" ); };
    dead = { servers = ( "127.0.0.1:%(dead)d" ); };
  };
  servers = ( {
    listen = ( "127.0.0.1:%(port)d", { address = "127.0.0.1:%(h2)d"; http2 = true; } );
    error_pages = [ "404 @notfound", "502 504 @sorry", "403 =200 @open", "429 = @spare",
                    "410 =200 %(top)s/gone.html" ];
    routes = (
      { prefix = "/app/"; proxy_pass = "app"; },
      { prefix = "/dead/"; proxy_pass = "dead"; },
      { prefix = "/slow/"; proxy_pass = "app"; proxy_read_timeout = "300ms"; },
      { prefix = "/private/"; access_rules = [ "deny all" ]; proxy_pass = "app"; },
      { prefix = "/limited/"; proxy_pass = "app"; limit_req = { zone = "slow"; nodelay = true; }; },
      { prefix = "/icpt/"; proxy_pass = "app"; intercept_errors = true; },
      { prefix = "/limited2/"; proxy_pass = "app"; limit_req = { zone = "slow2"; nodelay = true; };
        error_pages = [ "429 @spare" ]; },
      { prefix = "/plain/"; proxy_pass = "app"; },
      { prefix = "/gone"; return = 410; },
      { prefix = "/twice/"; proxy_pass = "dead"; error_pages = [ "502 @dead_too" ]; },
      { prefix = "/to-missing/"; proxy_pass = "app"; intercept_errors = true;
        error_pages = [ "404 @missing_file" ]; },
      { name = "notfound"; return = 200; body = "custom not found: $request_uri\\n"; },
      { name = "open"; return = 200; body = "open anyway\\n"; },
      { name = "spare"; proxy_pass = "spare"; },
      { name = "dead_too"; proxy_pass = "dead"; },
      { name = "missing_file"; root = "%(top)s/nowhere"; },
      { name = "sorry"; exact = "/50x.html"; root = "%(top)s"; }
    );
  } );
};
""" % dict(app=app.address, spare=spare.address, dead=dead, port=port, h2=h2, top=top))
    lg.addrs = [("tcp", "127.0.0.1", port)] + [x for x in lg.addrs if x != ("tcp", "127.0.0.1", port)]
    return lg, dict(h2=h2, app=app, spare=spare)


def both(lg, path, *args):
    """The same request over HTTP/1.1 and over h2c: [(status, headers, body)]."""
    h2 = site()[1]["h2"]
    one = curl(*args, lg.url(path), check=False)
    two = curl("--http2-prior-knowledge", *args, "http://127.0.0.1:%d%s" % (h2, path), check=False)
    return [one, two]


def logged(lg, request_line, n=1):
    """The access log's lines of request_line, once there are n."""
    def lines():
        if not os.path.exists(lg.access_log):
            return []
        return [l.rstrip("\n") for l in open(lg.access_log) if "[%s]" % request_line in l]
    wait_until(lambda: len(lines()) >= n, 10, what="%d access line(s) of %s" % (n, request_line))
    return lines()


@test
def no_route_404_answered_by_a_named_return_route_keeps_404():
    lg = site()[0]
    for st, h, body in both(lg, "/nothing/here?x=1"):
        eq(st, 404)
        eq(body, b"custom not found: /nothing/here?x=1\n")
    # the original request line, the final status
    for line in logged(lg, "GET /nothing/here?x=1 HTTP/1.1") + logged(lg, "GET /nothing/here?x=1 HTTP/2.0"):
        ok(line.startswith("404 "), line)


@test
def upstream_refused_502_answered_by_an_exact_file_route():
    lg = site()[0]
    for st, h, body in both(lg, "/dead/x"):
        eq(st, 502)
        eq(body, b"<p>we are sorry</p>\n")
        eq(h.get("Content-Type"), "text/html")
    # the route on its own still serves the file with its own status
    st, _, body = curl(lg.url("/50x.html"))
    eq((st, body), (200, b"<p>we are sorry</p>\n"))


@test
def upstream_timeout_504_answered_by_the_same_route():
    lg = site()[0]
    for st, h, body in both(lg, "/slow/x?delay=3000"):
        eq((st, body), (504, b"<p>we are sorry</p>\n"))


@test
def access_403_with_code_override():
    lg = site()[0]
    for st, h, body in both(lg, "/private/x"):
        eq((st, body), (200, b"open anyway\n"))
    for line in logged(lg, "GET /private/x HTTP/1.1"):
        ok(line.startswith("200 "), line)


@test
def limit_429_with_bare_equals_takes_the_routes_own_status():
    lg, d = site()
    d["spare"].reset_stats()
    first = curl(lg.url("/limited/a"))
    eq(first[0], 200)
    eq(first[1].get("X-Origin"), "app")
    for st, h, body in both(lg, "/limited/a?status=202"):
        # "429 = @spare": the spare origin's answer, with its own status
        eq(st, 202)
        eq(h.get("X-Origin"), "spare")
    ok(d["spare"].stats()["requests"] >= 2, d["spare"].stats())


@test
def a_proxy_route_answers_with_the_errors_status():
    lg, d = site()
    eq(curl(lg.url("/limited2/a"))[0], 200)
    for st, h, body in both(lg, "/limited2/a?size=7"):
        eq((st, h.get("X-Origin")), (429, "spare"), "the error's status, the spare's answer")
        eq(h.get("X-Origin"), "spare")
        eq(len(body), 7)
    for line in logged(lg, "GET /limited2/a?size=7 HTTP/2.0"):
        ok(line.startswith("429 ") and line.endswith(" 200"), "status 429, upstream 200: %r" % line)


@test
def intercepted_upstream_error_goes_to_the_route():
    lg = site()[0]
    for st, h, body in both(lg, "/icpt/page?status=404"):
        eq((st, body), (404, b"custom not found: /icpt/page?status=404\n"))
        eq(h.get("X-Origin"), None)
    # without intercept_errors the upstream's own answer goes through
    st, h, body = curl(lg.url("/plain/page?status=404"), check=False)
    eq(st, 404)
    eq(h.get("X-Origin"), "app")


@test
def a_file_page_with_a_code_override():
    lg = site()[0]
    for st, h, body in both(lg, "/gone"):
        eq((st, body), (200, b"<p>gone, but fine</p>\n"))


@test
def an_error_inside_the_error_route_is_not_redirected_again():
    lg = site()[0]
    # /twice/ -> 502 -> @dead_too, which fails too: its own 502, the
    # built-in page (not @sorry, not @dead_too again)
    for st, h, body in both(lg, "/twice/x"):
        eq(st, 502)
        contains(body.decode(), "<h1>502 Bad Gateway</h1>")
    # an upstream 404 intercepted to a file route that has no such file:
    # that 404 gets the built-in page, not @notfound
    for st, h, body in both(lg, "/to-missing/x?status=404"):
        eq(st, 404)
        contains(body.decode(), "<h1>404 Not Found</h1>")
    logged(lg, "GET /twice/x HTTP/1.1")
    ok(lg.alive(), "legate is still running")


@test
def unknown_route_name_is_a_config_error_with_file_and_line():
    rc, err = check_config("""
http = {
  servers = ( {
    listen = "127.0.0.1:1";
    routes = ( { prefix = "/"; return = 200;
                 error_pages = [ "404 @nowhere" ]; } );
  } );
};
""")
    ok(rc != 0, "legate -t fails")
    contains(err, "%s:6:" % check_config.last_path)
    contains(err, "'@nowhere'")
    for bad, what in (('"404 =abc @x"', '"=CODE"'), ('"404 = %s/legate.conf"', '"@route"'),
                      ('"=200 @x"', "names no status code"), ('"404 @"', "route's name")):
        rc, err = check_config("""
http = {
  servers = ( {
    listen = "127.0.0.1:1";
    error_pages = [ %s ];
    routes = ( { name = "x"; return = 200; } );
  } );
};
""" % (bad % "{prefix}" if "%s" in bad else bad))
        ok(rc != 0, "legate -t refuses %s" % bad)
        contains(err, ":5:")
        contains(err, what)
    # an http-level list is checked against each server
    rc, err = check_config("""
http = {
  error_pages = "502 @sorry";
  servers = (
    { listen = "127.0.0.1:1"; routes = ( { name = "sorry"; return = 200; } ); },
    { listen = "127.0.0.1:2"; routes = ( { prefix = "/"; return = 200; } ); }
  );
};
""")
    ok(rc != 0, "legate -t fails")
    contains(err, "the server at line 6 has no route")



@test
def no_via_on_the_reverse_proxy_by_default():
    lg, d = site()
    for st, h, body in both(lg, "/app/e?echo=1", "-H", "Via: 1.0 client-side"):
        eq(st, 200)
        seen = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
        eq(seen.get("via"), "1.0 client-side", "the client's Via passes, none added")
        eq(h.get("Via"), None, "no Via on the answer")


def self_conf(port, route_extra="", upstream="127.0.0.1:%(port)d", listen="127.0.0.1:%(port)d"):
    return """
http = {
  upstreams = { me = { servers = ( "%s" ); }; };
  servers = ( {
    listen = "%s";
    routes = (
      { prefix = "/"; proxy_pass = "me"; %s }
    );
  } );
};
""" % (upstream % dict(port=port), listen % dict(port=port), route_extra)


@test
def a_route_to_its_own_listen_address_is_refused_without_via():
    port = free_port()
    for listen, upstream in (("127.0.0.1:%(port)d", "127.0.0.1:%(port)d"),
                             ("*:%(port)d", "127.0.0.1:%(port)d"),
                             ("[::]:%(port)d", "[::1]:%(port)d")):
        rc, err = check_config(self_conf(port, listen=listen, upstream=upstream))
        ok(rc != 0, "legate -t refuses %s -> %s" % (upstream, listen))
        contains(err, "%s:7: the route proxies to upstream 'me'" % check_config.last_path)
        contains(err, "a loop")
    # what makes the request that comes back another one, or Via's 508
    for extra in ('via = true;', 'rewrite = "/other$uri";',
                  'add_request_headers = { Host = "inner.example"; };',
                  'header = "!X-Inner";'):
        rc, err = check_config(self_conf(port, route_extra=extra))
        eq(rc, 0, "%s: %s" % (extra, err))
    # another port of the same address is another server's business
    rc, err = check_config(self_conf(port, upstream="127.0.0.1:%d" % free_port()))
    eq(rc, 0, err)
    # and the 508 check stays where Via is on
    lg = Legate(self_conf(port, route_extra="via = true;"), workers=1)
    eq(request(lg.port, target="/x").status, 508)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Header manipulation, forwarding headers (as the origin sees them via
echo=1), hop-by-hop removal, and the access log formats."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def proxy(origins, **kw):
    return Legate(simple_conf(free_port(), origins, **kw))


def seen(lg, target="/e?echo=1", headers=(), method="GET", body=None):
    """The request as the origin received it: (Headers, echo json, response)."""
    r = request(lg.port, method, target, headers=headers, body=body)
    eq(r.status, 200)
    j = r.json()
    return Headers(tuple(h) for h in j["headers"]), j, r


@test
def add_and_remove_request_headers():
    o = Origin("o1")
    lg = proxy([o], http_extra='add_request_headers = { X-Env = "prod"; X-Two = "2"; };'
                               'remove_request_headers = [ "X-Debug", "x-secret" ];')
    h, j, r = seen(lg, headers={"X-Debug": "1", "X-Secret": "s", "X-Keep": "k"})
    eq(h.get("X-Env"), "prod")
    eq(h.get("X-Two"), "2")
    ok("X-Debug" not in h, "X-Debug forwarded: %r" % h)
    ok("X-Secret" not in h, "X-Secret forwarded (removal must be case-insensitive): %r" % h)
    eq(h.get("X-Keep"), "k")


@test
def add_request_header_replaces_client_value():
    o = Origin("o1")
    lg = proxy([o], http_extra='add_request_headers = { X-Env = "prod"; };')
    h, j, r = seen(lg, headers={"X-Env": "evil"})
    eq(h.get_all("X-Env"), ["prod"])


@test
def setting_host_or_forwarding_headers_replaces_legates_own():
    """nginx's proxy_set_header Host / X-Forwarded-For: one header, the
    configured one, never legate's beside it."""
    o = Origin("o1")
    lg = proxy([o], http_extra='add_request_headers = { Host = "backend.internal"; '
                               'X-Forwarded-For = "$remote_addr"; Via = "1.1 edge"; '
                               'X-Real-IP = "$remote_addr"; };')
    h, j, r = seen(lg, headers={"X-Forwarded-For": "10.9.9.9"})
    eq(h.get_all("Host"), ["backend.internal"])
    eq(h.get_all("X-Forwarded-For"), ["127.0.0.1"], "the client's chain replaced, not appended to")
    eq(h.get_all("Via"), ["1.1 edge"])
    eq(h.get_all("X-Real-IP"), ["127.0.0.1"])


@test
def arg_and_server_port_variables():
    o = Origin("o1")
    lg = proxy([o], http_extra='add_request_headers = { X-Page = "$arg_page"; X-Port = "$server_port"; };')
    h, j, r = seen(lg, target="/e?echo=1&pagex=9&page=3&z")
    eq(h.get("X-Page"), "3")
    eq(h.get("X-Port"), str(lg.port))


@test
def proxy_redirect_maps_the_upstreams_own_address_back():
    """nginx's proxy_redirect default: a Location naming the upstream server
    names what the client asked instead; "FROM TO" rules; off."""
    o = Origin("o1")
    port = free_port()
    routes = ('{ prefix = "/off/"; proxy_pass = "app"; proxy_redirect = "off"; },'
              '{ prefix = "/rule/"; proxy_pass = "app"; proxy_redirect = [ "http://old.example/ /new/" ]; },'
              '{ prefix = "/"; proxy_pass = "app"; }')
    Legate(simple_conf(port, [o], routes=routes))
    up = "http://%s/next?a=1" % o.address
    r = request(port, target="/x?status=302&hdr=Location:" + up, host="www.example:8080")
    eq(r.headers.get("Location"), "http://www.example:8080/next?a=1")
    r = request(port, target="/x?hdr=Refresh:5;%20url=" + up, host="www.example")
    eq(r.headers.get("Refresh"), "5; url=http://www.example/next?a=1")
    r = request(port, target="/x?status=302&hdr=Location:http://elsewhere.example/", host="www.example")
    eq(r.headers.get("Location"), "http://elsewhere.example/", "another host is left alone")
    r = request(port, target="/off/x?status=302&hdr=Location:" + up, host="www.example")
    eq(r.headers.get("Location"), up)
    r = request(port, target="/rule/x?status=302&hdr=Location:http://old.example/a/b", host="www.example")
    eq(r.headers.get("Location"), "/new/a/b")


@test
def response_headers_on_legates_own_answers_with_always():
    """nginx's add_header ... always: errors legate makes get them too."""
    port = free_port()
    Legate(simple_conf(port, ["127.0.0.1:1"], http_extra=
        'add_response_headers = { X-Frame-Options = "DENY"; }; add_response_headers_always = true;'))
    r = request(port, target="/x")
    eq(r.status, 502)
    eq(r.headers.get("X-Frame-Options"), "DENY")
    port2 = free_port()
    Legate(simple_conf(port2, ["127.0.0.1:1"], http_extra='add_response_headers = { X-Frame-Options = "DENY"; };'))
    r = request(port2, target="/x")
    eq((r.status, r.headers.get("X-Frame-Options")), (502, None), "without always: not on errors")


@test
def framing_and_hop_by_hop_headers_cannot_be_set():
    for lvl, name in (("add_request_headers", "Content-Length"), ("add_response_headers", "Transfer-Encoding"),
                      ("add_request_headers", "Connection"), ("add_response_headers", "upgrade")):
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"],
                                           http_extra='%s = { %s = "x"; };' % (lvl, name)))
        ok(rc != 0 and re.search(r"legate\.conf:\d+: '%s' cannot be set in '%s'" % (name, lvl), err),
           "%s in %s: %r" % (name, lvl, err))


@test
def add_and_remove_response_headers():
    o = Origin("o1")
    lg = proxy([o], http_extra='add_response_headers = { X-Frame-Options = "DENY"; };'
                               'remove_response_headers = [ "Server", "X-Internal" ];')
    r = request(lg.port, target="/r?hdr=X-Internal:secret&hdr=X-Public:yes")
    eq(r.headers.get("X-Frame-Options"), "DENY")
    ok("X-Internal" not in r.headers, "X-Internal not removed")
    eq(r.headers.get("X-Public"), "yes")
    ok(r.headers.get("Server") != "legate-test-origin", "origin's Server header not removed")


@test
def settings_inherit_and_override():
    """A route that sets add_request_headers replaces the inherited list."""
    o = Origin("o1")
    lg = proxy([o], server_extra='add_request_headers = { X-Server = "s"; };', routes="""
        { prefix = "/route/"; proxy_pass = "app"; add_request_headers = { X-Route = "r"; }; },
        { prefix = "/"; proxy_pass = "app"; }""")
    h, j, r = seen(lg, "/route/x?echo=1")
    eq(h.get("X-Route"), "r")
    ok("X-Server" not in h, "inherited X-Server also present at a route that overrides")
    h, j, r = seen(lg, "/other?echo=1")
    eq(h.get("X-Server"), "s")
    ok("X-Route" not in h, "X-Route leaked to another route")


@test
def x_forwarded_for_added():
    o = Origin("o1")
    lg = proxy([o])
    h, j, r = seen(lg)
    eq(h.get_all("X-Forwarded-For"), ["127.0.0.1"])


@test
def x_forwarded_for_appended():
    o = Origin("o1")
    lg = proxy([o])
    h, j, r = seen(lg, headers={"X-Forwarded-For": "203.0.113.7"})
    xff = ", ".join(h.get_all("X-Forwarded-For"))
    ok(re.fullmatch(r"203\.0\.113\.7,\s*127\.0\.0\.1", xff), "X-Forwarded-For %r" % xff)


@test
def x_forwarded_proto_and_no_via_by_default():
    """nginx adds no Via on the reverse proxy, and neither does legate unless
    via = true (an nginx origin with gzip_proxied off then still compresses)."""
    o = Origin("o1")
    lg = proxy([o])
    h, j, r = seen(lg, headers={"Via": "1.0 fred"})
    eq(h.get("X-Forwarded-Proto"), "http")
    eq(h.get_all("Via"), ["1.0 fred"], "the client's Via passes untouched, none added")
    eq(r.headers.get("Via"), None, "no Via on the answer")
    h, j, r = seen(proxy([o], http_extra="via = true;"))
    via = h.get("Via")
    ok(via is not None and via.startswith("1.1 "), "Via to origin with via = true: %r" % via)
    ok((r.headers.get("Via") or "").startswith("1.1 "), "and on the answer: %r" % r.headers.get("Via"))


@test
def via_appended_to_existing():
    o = Origin("o1")
    lg = proxy([o], http_extra="via = true;")
    h, j, r = seen(lg, headers={"Via": "1.0 fred"})
    via = ", ".join(h.get_all("Via"))
    ok(via.startswith("1.0 fred") and via.count("1.1 ") == 1, "Via %r" % via)


@test
def forwarding_headers_off():
    o = Origin("o1")
    lg = proxy([o], http_extra="x_forwarded_for = false; x_forwarded_proto = false; via = false;")
    h, j, r = seen(lg)
    for name in ("X-Forwarded-For", "X-Forwarded-Proto", "Via", "X-Forwarded-Host",
                 "X-Real-IP", "Forwarded"):
        ok(name not in h, "%s sent although disabled: %r" % (name, h))


@test
def forwarding_headers_on():
    o = Origin("o1")
    lg = proxy([o], http_extra="x_forwarded_host = true; x_real_ip = true; forwarded = true;")
    h, j, r = seen(lg, headers={"X-Real-IP": "6.6.6.6"}, )
    eq(h.get("X-Forwarded-Host"), "localhost")
    eq(h.get_all("X-Real-IP"), ["127.0.0.1"])
    fwd = h.get("Forwarded") or ""
    ok(re.search(r"for=\"?127\.0\.0\.1", fwd), "Forwarded %r" % fwd)
    ok("proto=http" in fwd, "Forwarded %r" % fwd)


@test
def hop_by_hop_request_headers_removed():
    o = Origin("o1")
    lg = proxy([o])
    h, j, r = seen(lg, headers=[("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
                                ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                ("TE", "trailers"), ("X-End", "e")])
    for name in ("X-Hop", "Keep-Alive", "Proxy-Connection"):
        ok(name not in h, "hop-by-hop %s forwarded: %r" % (name, h))
    ok("x-hop" not in (h.get("Connection") or "").lower(), "client Connection forwarded")
    eq(h.get("X-End"), "e")


@test
def hop_by_hop_response_headers_removed():
    o = Origin("o1")
    lg = proxy([o])
    r = request(lg.port, target="/r?hdr=Connection:X-Resp-Hop&hdr=X-Resp-Hop:1&hdr=Keep-Alive:timeout=9"
                                "&hdr=X-End:e")
    ok("X-Resp-Hop" not in r.headers, "X-Resp-Hop forwarded")
    ok("timeout=9" not in (r.headers.get("Keep-Alive") or ""), "origin Keep-Alive forwarded")
    eq(r.headers.get("X-End"), "e")


@test
def request_passed_faithfully():
    o = Origin("o1")
    lg = proxy([o])
    h, j, r = seen(lg, "/p/a%20b?echo=1&x=%2F&y", method="PUT", body=b"data",
                   headers=[("X-Multi", "a"), ("X-Multi", "b"), ("X-Case", "MiXeD vAlUe")])
    eq(j["method"], "PUT")
    eq(j["target"], "/p/a%20b?echo=1&x=%2F&y")
    eq(j["version"], "HTTP/1.1")
    eq(h.get_all("X-Multi"), ["a", "b"])
    eq(h.get("X-Case"), "MiXeD vAlUe")
    eq(len(h.get_all("Host")), 1)
    eq(j["body_len"], 4)


@test
def http10_request_upstream_is_http11():
    o = Origin("o1")
    lg = proxy([o])
    rs = parse_responses(http_raw(lg.port, "GET /e?echo=1 HTTP/1.0\r\nHost: x\r\n\r\n"))
    eq(rs[0].status, 200)
    eq(rs[0].json()["version"], "HTTP/1.1")


@test
def access_log_combined():
    o = Origin("o1")
    lg = proxy([o])
    request(lg.port, target="/logged?size=7", headers={"User-Agent": "ua-test", "Referer": "ref-x"})
    line = wait_until(lambda: [ln for ln in open(lg.access_log) if "/logged" in ln], 5,
                      what="access log line")[0]
    ok(re.match(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /logged\?size=7 HTTP/1\.1" 200 7 '
                r'"ref-x" "ua-test"$', line.rstrip("\n")), "combined line: %r" % line)


@test
def access_log_json():
    o = Origin("o1")
    lg = proxy([o], http_extra='log_format = "json";')
    request(lg.port, target="/j1")
    request(lg.port, target="/j2?status=404")
    lines = wait_until(lambda: [ln for ln in open(lg.access_log) if "/j2" in ln], 5,
                       what="access log line")
    for ln in open(lg.access_log):
        json.loads(ln)                       # every line is a JSON object
    ok("404" in lines[0], "status missing in %r" % lines[0])


@test
def access_log_template():
    o = Origin("o1")
    lg = proxy([o], http_extra='log_format = "$request_method $status $request_uri";')
    request(lg.port, target="/tpl?status=201")
    wait_until(lambda: "GET 201 /tpl?status=201\n" in open(lg.access_log).read(), 5,
               what="templated access log line")


@test
def access_log_off():
    o = Origin("o1")
    lg = proxy([o], http_extra='access_log = "off";')
    eq(request(lg.port, target="/quiet").status, 200)
    ok(not os.path.exists(lg.access_log) or "/quiet" not in open(lg.access_log).read(),
       "request logged with access_log off")


@test
def access_log_per_server_path():
    o = Origin("o1")
    lg = proxy([o], server_extra='access_log = "logs/other.log";')
    eq(request(lg.port, target="/elsewhere").status, 200)
    path = os.path.join(lg.prefix, "logs", "other.log")
    wait_until(lambda: os.path.exists(path) and "/elsewhere" in open(path).read(), 5,
               what="line in logs/other.log")


@test
def a_route_to_itself_is_a_loop_not_a_meltdown():
    port = free_port()
    lg = Legate(simple_conf(port, ["127.0.0.1:%d" % port], route_extra="via = true;"), workers=1)
    fds = fd_count(lg.workers()[0])
    r = request(port, target="/x")
    eq(r.status, 508, "the second pass sees its own Via")
    lg.wait_log(r"forwarding loop detected")
    r = request(port, target="/x")
    eq(r.status, 508)
    wait_until(lambda: fd_count(lg.workers()[0]) <= fds + 2, 30, what="no fds held after the loop")


@test
def a_chain_of_two_legates_with_their_own_via_names():
    o = Origin("o")
    inner = Legate('via_name = "inner";\n' + simple_conf(free_port(), [o], http_extra="via = true;"),
                   workers=1)
    edge = Legate('via_name = "edge";\n' +
                  simple_conf(free_port(), ["127.0.0.1:%d" % inner.port], server_extra="via = true;"),
                  workers=1)
    h, j, r = seen(edge)
    eq(", ".join(h.get_all("Via")), "1.1 edge, 1.1 inner")
    eq(r.headers.get("Via"), "1.1 inner, 1.1 edge", "responses carry both too")
    rc, err = check_config('via_name = "two words";\n' + simple_conf(1, [o]))
    eq(rc, 1)
    contains(err, "legate.conf:1: 'via_name' must be a host name or a token")



@test
def server_timing_on_a_route_only():
    """server_timing (feature/server_timing.c): the upstream's head time and
    legate's time so far on proxied answers of the routes that ask for it."""
    o = Origin("o1")
    lg = Legate(simple_conf(free_port(), [o], routes=(
        '{ prefix = "/timed/"; proxy_pass = "app"; server_timing = true; },'
        '{ prefix = "/"; proxy_pass = "app"; }')))
    r = request(lg.port, target="/timed/x?delay=150")
    eq(r.status, 200)
    st = r.headers.get("Server-Timing")
    ok(st is not None, "no Server-Timing: %r" % r.headers)
    m = re.fullmatch(r"upstream;dur=(\d+), proxy;dur=(\d+)", st)
    ok(m, "Server-Timing %r" % st)
    up, px = int(m.group(1)), int(m.group(2))
    ok(150 <= up < 5000, "upstream took %d ms for a 150 ms delay" % up)
    ok(px >= up, "proxy time %d below the upstream's %d" % (px, up))
    r = request(lg.port, target="/other")
    eq(r.status, 200)
    ok("Server-Timing" not in r.headers, "Server-Timing where it is off: %r" % r.headers)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Basic reverse proxying: bytes in = bytes out, balancing, bodyless responses."""
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def proxy(origins, **kw):
    port = free_port()
    return Legate(simple_conf(port, origins, **kw))


@test
def get_via_curl_equals_origin():
    o = Origin("o1")
    lg = proxy([o])
    for target in ("/", "/hello/world?a=1", "/x?size=100000", "/x?size=3000000&chunk=4096"):
        st, h, body = curl(lg.url(target))
        direct = o.get(target)
        eq(st, 200, target)
        eq(h.get("X-Origin"), "o1", target)
        eq(body, direct.body, target)


@test
def post_via_curl_body_reaches_origin():
    o = Origin("o1")
    lg = proxy([o])
    body = os.urandom(500 * 1024)
    path = os.path.join(lg.prefix, "post.bin")
    with open(path, "wb") as f:
        f.write(body)
    st, h, out = curl("--data-binary", "@" + path, lg.url("/p?echo=1"))
    eq(st, 200)
    j = __import__("json").loads(out)
    eq(j["method"], "POST")
    eq(j["body_len"], len(body))
    eq(j["body_sha256"], hashlib.sha256(body).hexdigest())


@test
def methods_pass_through():
    o = Origin("o1")
    lg = proxy([o])
    for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        body = b"payload" if m in ("POST", "PUT", "PATCH") else None
        r = request(lg.port, m, "/m?echo=1", body=body)
        eq(r.status, 200, m)
        j = r.json()
        eq(j["method"], m)
        eq(j["target"], "/m?echo=1")
        eq(j["body_len"], len(body or b""))


@test
def status_codes_pass_through():
    o = Origin("o1")
    lg = proxy([o])
    for st in (201, 202, 301, 400, 403, 404, 418, 500, 503):
        r = request(lg.port, target="/s?status=%d&hdr=Location:/elsewhere" % st)
        eq(r.status, st)
        eq(r.body, b"origin o1 /s\n", "body of %d" % st)


@test
def origin_headers_pass_through():
    o = Origin("o1")
    lg = proxy([o])
    r = request(lg.port, target="/h?hdr=X-Foo:bar&hdr=X-Foo:baz&hdr=Set-Cookie:a=1&ctype=text/x-test")
    eq(r.headers.get_all("X-Foo"), ["bar", "baz"])
    eq(r.headers.get("Set-Cookie"), "a=1")
    eq(r.headers.get("Content-Type"), "text/x-test")


@test
def large_response_intact():
    o = Origin("o1")
    lg = proxy([o])
    for chunked in ("0", "1"):
        r = request(lg.port, target="/big?size=20000000&chunked=%s" % chunked, timeout=30)
        eq(len(r.body), 20000000)
        ok(r.body == pattern(20000000), "20 MB body differs (chunked=%s)" % chunked)


@test
def round_robin_two_origins():
    o1, o2 = Origin("o1"), Origin("o2")
    lg = proxy([o1, o2])
    seen = {"o1": 0, "o2": 0}
    for i in range(100):
        r = request(lg.port, target="/rr%d" % i)
        eq(r.status, 200)
        seen[r.headers.get("X-Origin")] += 1
    ok(35 <= seen["o1"] <= 65, "uneven round robin: %r" % seen)
    eq(o1.stats()["requests"] + o2.stats()["requests"], 100)


@test
def round_robin_one_connection_alternates():
    o1, o2 = Origin("o1"), Origin("o2")
    lg = proxy([o1, o2], workers=1)
    got = []
    with Conn(lg.port) as c:
        for i in range(20):
            got.append(c.request(target="/a%d" % i).headers.get("X-Origin"))
    eq(got.count("o1"), 10, "X-Origin sequence %r" % got)
    ok(all(got[i] != got[i + 1] for i in range(len(got) - 1)), "not alternating: %r" % got)


@test
def weighted_round_robin():
    o1, o2 = Origin("o1"), Origin("o2")
    port = free_port()
    conf = """
worker_processes = 1;
http = {
  upstreams = { app = { servers = ( "%s", { address = "%s"; weight = 2; } ); }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (o1.address, o2.address, port)
    lg = Legate(conf, workers=None)
    seen = {"o1": 0, "o2": 0}
    for i in range(90):
        seen[request(lg.port, target="/w").headers.get("X-Origin")] += 1
    ok(50 <= seen["o2"] <= 70, "weight 2 server got %r" % seen)


@test
def unix_socket_upstream():
    o = Origin("u", unix=True)
    lg = proxy([o])
    r = request(lg.port, target="/via-unix?echo=1")
    eq(r.status, 200)
    eq(r.headers.get("X-Origin"), "u")


@test
def head_has_no_body():
    o = Origin("o1")
    lg = proxy([o])
    with Conn(lg.port) as c:
        r = c.request("HEAD", "/x?size=1000")
        eq(r.status, 200)
        eq(r.body, b"")
        # a body leaking after HEAD would be read as the next response
        r = c.request("GET", "/after")
        eq(r.body, b"origin o1 /after\n")


@test
def status_204_304_have_no_body():
    o = Origin("o1")
    lg = proxy([o])
    with Conn(lg.port) as c:
        for st in (204, 304):
            r = c.request("GET", "/x?status=%d" % st)
            eq((r.status, r.body), (st, b""))
            ok("Transfer-Encoding" not in r.headers, "%d with Transfer-Encoding" % st)
            r = c.request("GET", "/after%d" % st)
            eq(r.body, b"origin o1 /after%d\n" % st)
        # origin announcing a body on a 204 via chunked must not desync us
        r = c.request("GET", "/x?status=204&chunked=1")
        eq((r.status, r.body), (204, b""))
        r = c.request("GET", "/last")
        eq(r.body, b"origin o1 /last\n")


@test
def http10_client():
    o = Origin("o1")
    lg = proxy([o])
    data = http_raw(lg.port, "GET /ten HTTP/1.0\r\nHost: x\r\n\r\n")
    rs = parse_responses(data)
    eq(len(rs), 1)
    eq(rs[0].status, 200)
    eq(rs[0].body, b"origin o1 /ten\n")


@test
def http2_version_is_505():
    o = Origin("o1")
    lg = proxy([o])
    rs = parse_responses(http_raw(lg.port, "GET / HTTP/2.0\r\nHost: x\r\n\r\n"))
    eq(rs[0].status, 505)
    eq(o.stats()["requests"], 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Client keep-alive, pipelining, and the upstream connection pool."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def proxy(origins, **kw):
    return Legate(simple_conf(free_port(), origins, **kw))


@test
def many_requests_one_client_connection():
    o = Origin("o1")
    lg = proxy([o])
    o.reset_stats()
    with Conn(lg.port) as c:
        for i in range(200):
            r = c.request(target="/k%d" % i)
            eq(r.status, 200)
            eq(r.body, b"origin o1 /k%d\n" % i)
    st = o.stats()
    eq(st["requests"], 200)
    ok(st["connections"] <= 2, "origin saw %d connections for one client connection"
       % st["connections"])


@test
def upstream_pool_reused_across_client_connections():
    o = Origin("o1")
    lg = proxy([o], workers=2)
    o.reset_stats()
    for i in range(60):
        eq(request(lg.port, target="/n%d" % i).status, 200)
    st = o.stats()
    eq(st["requests"], 60)
    ok(st["connections"] <= 4, "origin saw %d connections for 60 sequential requests "
       "(upstream keepalive pool not used?)" % st["connections"])


@test
def upstream_keepalive_zero_disables_pool():
    o = Origin("o1")
    lg = proxy([o], keepalive=0, workers=1)
    o.reset_stats()
    for i in range(10):
        eq(request(lg.port, target="/z").status, 200)
    eq(o.stats()["connections"], 10)


@test
def pipelined_three_requests_in_order():
    o = Origin("o1")
    lg = proxy([o])
    raw = ("GET /a?delay=300 HTTP/1.1\r\nHost: x\r\n\r\n"
           "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
           "GET /c?size=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = parse_responses(http_raw(lg.port, raw, responses=3, timeout=10))
    eq(len(rs), 3)
    eq(rs[0].body, b"origin o1 /a\n")
    eq(rs[1].body, b"origin o1 /b\n")
    eq(rs[2].body, pattern(5000))


@test
def pipelined_with_bodies_and_head():
    o = Origin("o1")
    lg = proxy([o])
    raw = ("POST /p1?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
           "HEAD /h?size=100 HTTP/1.1\r\nHost: x\r\n\r\n"
           "POST /p2?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           "3\r\nabc\r\n0\r\n\r\n"
           "GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
    methods = ["POST", "HEAD", "POST", "GET"]
    rs = parse_responses(http_raw(lg.port, raw, responses=4, methods=methods, timeout=10),
                         methods)
    eq(len(rs), 4)
    eq(rs[0].json()["body_len"], 5)
    eq(rs[1].body, b"")
    eq(rs[2].json()["body_len"], 3)
    eq(rs[3].body, b"origin o1 /last\n")


@test
def pipelined_many_in_one_write():
    o = Origin("o1")
    lg = proxy([o])
    raw = "".join("GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(50))
    rs = parse_responses(http_raw(lg.port, raw, responses=50, timeout=10))
    eq([r.body for r in rs], [b"origin o1 /p%d\n" % i for i in range(50)])


@test
def keepalive_requests_limit():
    o = Origin("o1")
    lg = proxy([o], server_extra="keepalive_requests = 5;")
    with Conn(lg.port) as c:
        for i in range(5):
            r = c.request(target="/r%d" % i)
            eq(r.status, 200)
        eq(r.headers.get("Connection", "").lower(), "close",
           "5th response of keepalive_requests = 5")
        ok(c.closed(5), "connection still open after keepalive_requests")


@test
def keepalive_timeout_closes_idle():
    o = Origin("o1")
    lg = proxy([o], server_extra='keepalive_timeout = "1s";')
    with Conn(lg.port) as c:
        eq(c.request(target="/a").status, 200)
        t0 = time.monotonic()
        ok(c.closed(6), "idle connection not closed by keepalive_timeout 1s")
        dt = time.monotonic() - t0
        ok(0.5 <= dt <= 5, "closed after %.1fs, want ~1s" % dt)


@test
def keepalive_timeout_zero_disables():
    o = Origin("o1")
    lg = proxy([o], server_extra="keepalive_timeout = 0;")
    with Conn(lg.port) as c:
        r = c.request(target="/a")
        eq(r.status, 200)
        eq(r.headers.get("Connection", "").lower(), "close")
        ok(c.closed(5), "connection open with keepalive_timeout = 0")


@test
def client_connection_close():
    o = Origin("o1")
    lg = proxy([o])
    with Conn(lg.port) as c:
        r = c.request(target="/a", headers={"Connection": "close"})
        eq(r.status, 200)
        ok(c.closed(5), "connection open after Connection: close")


@test
def http10_keepalive():
    o = Origin("o1")
    lg = proxy([o])
    with Conn(lg.port) as c:
        r = c.request(target="/a", version="HTTP/1.0", headers={"Connection": "keep-alive"})
        eq(r.status, 200)
        if "keep-alive" in r.headers.get("Connection", "").lower():
            eq(c.request(target="/b", version="HTTP/1.0",
                         headers={"Connection": "keep-alive"}).body, b"origin o1 /b\n")
    with Conn(lg.port) as c:
        r = c.request(target="/c", version="HTTP/1.0")
        eq(r.status, 200)
        ok(c.closed(5), "HTTP/1.0 connection without keep-alive left open")


@test
def origin_closing_does_not_close_client():
    o = Origin("o1")
    lg = proxy([o], workers=1)
    o.reset_stats()
    with Conn(lg.port) as c:
        for i in range(5):
            r = c.request(target="/c%d?close=1" % i)
            eq(r.status, 200)
            eq(r.body, b"origin o1 /c%d\n" % i)
    eq(o.stats()["connections"], 5)


@test
def stale_pooled_connection_is_retried_or_replaced():
    """The origin restarts while legate holds idle pooled connections to it."""
    o = Origin("o1")
    port = o.port
    lg = proxy([o], workers=1)
    eq(request(lg.port, target="/warm").status, 200)
    o.stop()
    o2 = Origin("o1b", port=port)
    # The first request may meet the dead pooled connection: a GET must be
    # retried on a fresh one (it was never answered), not fail.
    for i in range(3):
        r = request(lg.port, target="/after%d" % i)
        eq(r.status, 200, "request %d after origin restart" % i)
        eq(r.headers.get("X-Origin"), "o1b")
    ok(o2.stats()["requests"] >= 3, "new origin not used")


if __name__ == "__main__":
    main()

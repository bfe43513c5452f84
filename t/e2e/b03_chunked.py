#!/usr/bin/env python3
"""Chunked request and response bodies, 100-continue."""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def proxy(origins, **kw):
    return Legate(simple_conf(free_port(), origins, **kw))


def chunked(body, size):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


@test
def chunked_response_passes_through():
    o = Origin("o1")
    lg = proxy([o])
    for q in ("size=100000&chunked=1&chunk=1000", "size=1&chunked=1", "size=0&chunked=1",
              "size=300000&chunked=1&chunk=65536"):
        r = request(lg.port, target="/c?" + q)
        eq(r.status, 200, q)
        n = int(q.split("&")[0].split("=")[1])
        eq(r.body, pattern(n), q)


@test
def chunked_response_drip():
    o = Origin("o1")
    lg = proxy([o])
    r = request(lg.port, target="/d?size=200&chunked=1&chunk=20&drip=50")
    eq(r.body, pattern(200))


@test
def chunked_response_keepalive_follows():
    o = Origin("o1")
    lg = proxy([o])
    with Conn(lg.port) as c:
        for i in range(5):
            r = c.request(target="/c%d?size=%d&chunked=1&chunk=333" % (i, 1000 * i))
            eq(r.body, pattern(1000 * i))


@test
def chunked_request_body():
    o = Origin("o1")
    lg = proxy([o])
    body = os.urandom(200000)
    for size in (1, 7, 4096, 100000):
        b = body if size > 1 else body[:3000]
        raw = (b"POST /u?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(b, size))
        rs = parse_responses(http_raw(lg.port, raw, responses=1, timeout=10))
        eq(rs[0].status, 200, "chunk size %d" % size)
        j = rs[0].json()
        eq(j["body_len"], len(b))
        eq(j["body_sha256"], hashlib.sha256(b).hexdigest())


@test
def chunked_request_via_curl():
    o = Origin("o1")
    lg = proxy([o])
    st, h, body = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "x" * 10000,
                       lg.url("/cu?echo=1"))
    eq(st, 200)
    eq(__import__("json").loads(body)["body_len"], 10000)


@test
def chunked_request_extensions_and_trailers():
    o = Origin("o1")
    lg = proxy([o])
    raw = ("POST /t?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5;name=value\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
           "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = parse_responses(http_raw(lg.port, raw, responses=2, timeout=10))
    eq(rs[0].status, 200)
    eq(rs[0].json()["body_len"], 11)
    eq(rs[0].json()["body_sha256"], hashlib.sha256(b"hello world").hexdigest())
    eq(rs[1].body, b"origin o1 /next\n")


@test
def chunked_request_slow_client():
    """Chunks trickling in across many reads are reassembled."""
    o = Origin("o1")
    lg = proxy([o])
    body = b"abcdefghij" * 10
    wire = chunked(body, 9)
    with Conn(lg.port) as c:
        c.send("POST /slow?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 7):
            c.send(wire[i:i + 7])
            time.sleep(0.01)
        r = c.read_response()
        eq(r.json()["body_len"], 100)


@test
def expect_100_continue():
    o = Origin("o1")
    lg = proxy([o], http_extra="client_max_body_size = 0;")
    with Conn(lg.port) as c:
        c.send("POST /e?echo=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               "Content-Length: 10\r\n\r\n")
        r = c.read_response(interim=True, timeout=5)
        ok(r is not None, "connection closed instead of 100 Continue")
        eq(r.status, 100, "interim response to Expect: 100-continue")
        c.send("0123456789")
        r = c.read_response()
        eq(r.status, 200)
        eq(r.json()["body_len"], 10)
        # the connection is still usable
        eq(c.request(target="/after").body, b"origin o1 /after\n")


@test
def expect_100_continue_chunked_via_curl():
    o = Origin("o1")
    lg = proxy([o], http_extra="client_max_body_size = 0;")
    path = os.path.join(lg.prefix, "body.bin")
    with open(path, "wb") as f:
        f.write(b"y" * 300000)
    st, h, body = curl("-H", "Expect: 100-continue", "-H", "Transfer-Encoding: chunked",
                       "--data-binary", "@" + path, lg.url("/ec?echo=1"))
    eq(st, 200)
    eq(__import__("json").loads(body)["body_len"], 300000)


@test
def expect_100_continue_over_limit_gets_413():
    o = Origin("o1")
    lg = proxy([o], http_extra='client_max_body_size = "1k";')
    with Conn(lg.port) as c:
        c.send("POST /big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               "Content-Length: 100000\r\n\r\n")
        r = c.read_response(timeout=5)
        ok(r is not None, "no response")
        eq(r.status, 413, "final status without sending the body")
    eq(o.stats()["requests"], 0)


@test
def truncated_chunked_response_is_not_completed():
    """Origin closes mid chunked body: the client must not get a terminating
    0-chunk (that would turn a truncated body into a complete one)."""
    o = Origin("o1")
    lg = proxy([o])
    rs = parse_responses(http_raw(lg.port, "GET /t?size=100000&chunked=1&chunk=1000&truncate=5000 "
                                           "HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10))
    ok(rs, "no response at all")
    r = rs[0]
    if r.status == 200:
        ok(not r.complete, "truncated origin body delivered as complete (%d bytes)" % len(r.body))
    else:
        eq(r.status, 502)


@test
def truncated_content_length_response_is_not_completed():
    o = Origin("o1")
    lg = proxy([o])
    rs = parse_responses(http_raw(lg.port, "GET /t?size=100000&truncate=5000 HTTP/1.1\r\n"
                                           "Host: x\r\n\r\n", timeout=10))
    ok(rs, "no response at all")
    r = rs[0]
    if r.status == 200:
        ok(not r.complete, "truncated origin body delivered as complete (%d bytes)" % len(r.body))
    else:
        eq(r.status, 502)


if __name__ == "__main__":
    main()

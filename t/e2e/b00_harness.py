#!/usr/bin/env python3
"""Self-test of the test tools: t/origin.py and the harness clients.
Needs no legate binary."""
import hashlib
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

NO_LEGATE_NEEDED = True


@test
def origin_default_body_and_headers():
    with Origin("o1") as o:
        r = request(o.port, target="/hello")
        eq(r.status, 200)
        eq(r.body, b"origin o1 /hello\n")
        eq(r.headers.get("X-Origin"), "o1")
        eq(r.headers.get("X-Origin-Target"), "/hello")


@test
def origin_query_options():
    with Origin("o1") as o:
        r = request(o.port, target="/x?size=1000&status=201&hdr=X-A:1&hdr=X-B:b%20c&ctype=a/b")
        eq(r.status, 201)
        eq(r.body, pattern(1000))
        eq(r.headers.get_all("X-A"), ["1"])
        eq(r.headers.get("Content-Type"), "a/b")
        r = request(o.port, target="/x?size=100000&chunked=1&chunk=999")
        eq(r.headers.get("Transfer-Encoding"), "chunked")
        eq(r.body, pattern(100000))
        for st in (204, 304):
            r = request(o.port, target="/x?status=%d" % st)
            eq((r.status, r.body), (st, b""))
        r = request(o.port, method="HEAD", target="/x?size=10")
        eq((r.headers.get("Content-Length"), r.body), ("10", b""))


@test
def origin_echo_and_bodies():
    with Origin("o1") as o:
        body = os.urandom(300000)
        r = request(o.port, "POST", "/e?echo=1", body=body)
        j = r.json()
        eq(j["body_len"], len(body))
        eq(j["body_sha256"], hashlib.sha256(body).hexdigest())
        raw = ("POST /e?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n")
        rs = parse_responses(http_raw(o.port, raw, responses=1))
        eq(rs[0].json()["body_len"], 11)
        # 100-continue
        with Conn(o.port) as c:
            c.send("POST /e?echo=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   "Content-Length: 3\r\n\r\n")
            r = c.read_response(interim=True)
            eq(r.status, 100)
            c.send("abc")
            eq(c.read_response().json()["body_len"], 3)


@test
def origin_pipelining_and_keepalive():
    with Origin("o1") as o:
        o.reset_stats()
        raw = "".join("GET /%s%s HTTP/1.1\r\nHost: x\r\n\r\n" % (p, "?delay=200" if p == "a" else "")
                      for p in "abc")
        rs = parse_responses(http_raw(o.port, raw, responses=3))
        eq([r.body for r in rs], [b"origin o1 /a\n", b"origin o1 /b\n", b"origin o1 /c\n"])
        st = o.stats()
        eq((st["requests"], st["connections"]), (3, 1))


@test
def origin_failure_modes():
    with Origin("o1") as o:
        eq(http_raw(o.port, "GET /?reset=1 HTTP/1.1\r\nHost: x\r\n\r\n"), b"")
        eq(http_raw(o.port, "GET /?garbage=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
           b"this is not HTTP at all\r\n")
        eq(http_raw(o.port, "GET /?hang=1 HTTP/1.1\r\nHost: x\r\n\r\n", timeout=0.5), b"")
        r = parse_responses(http_raw(o.port, "GET /?size=1000&truncate=10 HTTP/1.1\r\nHost: x\r\n\r\n"))[0]
        eq((r.complete, len(r.body)), (False, 10))
        r = parse_responses(http_raw(o.port, "GET /?size=1000&chunked=1&chunk=7&truncate=100 "
                                             "HTTP/1.1\r\nHost: x\r\n\r\n"))[0]
        eq((r.complete, len(r.body)), (False, 100))
        r = parse_responses(http_raw(o.port, "GET /?close=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                             "GET /never HTTP/1.1\r\nHost: x\r\n\r\n"))
        eq(len(r), 1)
        st = o.stats()
        ok("/never" not in st["by_path"], "request after close=1 was served")


@test
def origin_stats_do_not_count_themselves():
    with Origin("o1") as o:
        o.reset_stats()
        o.stats()
        request(o.port, target="/one")
        st = o.stats()
        eq((st["requests"], st["connections"], st["by_path"]), (1, 1, {"/one": 1}))


@test
def origin_unix_socket():
    with Origin("u", unix=True) as o:
        r = request("unix:" + o.unix_path, target="/u")
        eq(r.body, b"origin u /u\n")


@test
def origin_many_concurrent_connections():
    with Origin("o1") as o:
        errors = []

        def one(i):
            try:
                r = request(o.port, target="/c%d?delay=100" % i)
                if r.status != 200:
                    errors.append(r.status)
            except Exception as e:
                errors.append(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        eq(errors, [])
        eq(o.stats()["requests"], 100)


@test
def harness_curl():
    with Origin("o1") as o:
        st, h, body = curl("http://127.0.0.1:%d/c?size=5" % o.port)
        eq((st, h.get("X-Origin"), body), (200, "o1", pattern(5)))
        st, h, body = curl("-H", "Expect: 100-continue", "--data-binary", "x" * 5000,
                           "http://127.0.0.1:%d/c?echo=1" % o.port)
        eq(st, 200)
        eq(body.count(b"100-continue"), 1)


@test
def harness_render_keeps_libconfig_braces():
    from legate_test import render
    eq(render('a = { b = "{x}"; c = "{y}"; };', x=1), 'a = { b = "1"; c = "{y}"; };')


@test
def harness_free_port():
    p = free_port()
    s = socket.socket()
    s.bind(("127.0.0.1", p))
    s.close()


if __name__ == "__main__":
    main()

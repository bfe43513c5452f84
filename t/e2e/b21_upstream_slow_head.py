#!/usr/bin/env python3
"""An upstream whose response head arrives one byte per read: a ~4 KB head
(many headers) proxied whole, alone and twice on a keep-alive connection,
without the head's parsing costing memory per read (each read of the head
must not take more of the request's arena)."""
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

NHEADERS = 60           # 60 headers of ~66 bytes: a head of ~4 KB (under LG_MAX_HEADERS)
PAUSE = 0.0005          # between the head's bytes: each arrives as its own read
BODY = pattern(5000)


def slow_head():
    lines = ["HTTP/1.1 200 OK", "Content-Length: %d" % len(BODY), "Content-Type: text/plain"]
    for i in range(NHEADERS):
        lines.append("X-Slow-%02d: %s" % (i, ("%02d" % i) * 26))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


HEAD = slow_head()


class SlowHeadOrigin:
    """Answers every request (keep-alive) with HEAD written one byte per
    send() (TCP_NODELAY, a short pause after each), then BODY at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0           # requests received (counted before the answer starts)
        self.srv = ScriptedServer(self.handle)
        self.address = self.srv.address

    def handle(self, s, peer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
            _, _, buf = buf.partition(b"\r\n\r\n")     # GETs only: no body
            with self.lock:
                self.requests += 1
            for i in range(len(HEAD)):
                s.sendall(HEAD[i:i + 1])
                time.sleep(PAUSE)
            s.sendall(BODY)


def proxy(origin):
    port = free_port()
    lg = Legate(simple_conf(port, [origin], workers=1, keepalive=4,
                            http_extra='proxy_read_timeout = "30s";'))
    return port, lg


def check(r, what):
    ok(r is not None, "%s: the connection closed without a response" % what)
    eq(r.status, 200, what)
    eq(r.headers.get("X-Slow-%02d" % (NHEADERS - 1)), ("%02d" % (NHEADERS - 1)) * 26,
       "%s: the head's last header" % what)
    eq(len(r.body), len(BODY), "%s: body length" % what)
    ok(r.body == BODY, "%s: the body as sent" % what)


def no_bad_lines(lg):
    text = open(lg.error_log, errors="replace").read()
    bad = [l for l in text.splitlines()
           if re.search(r"\[(alert|emerg|crit)\]|out of memory", l)]
    eq(bad, [], "the worker's error log")


@test(timeout=90)
def head_one_byte_per_read_is_proxied():
    ok(3500 <= len(HEAD) <= 4500, "a head of ~4 KB (%d bytes)" % len(HEAD))
    o = SlowHeadOrigin()
    port, lg = proxy(o)
    check(request(port, target="/slow", timeout=30), "one request")
    eq(o.requests, 1, "one request upstream")
    no_bad_lines(lg)


@test(timeout=90)
def head_one_byte_per_read_twice_on_a_keepalive_connection():
    o = SlowHeadOrigin()
    port, lg = proxy(o)
    with Conn(port, timeout=30) as c:
        for i in range(2):
            check(c.request("GET", "/slow%d" % i), "request %d on the connection" % i)
        ok(not c.closed(timeout=0.2), "the connection is kept open")
    eq(o.requests, 2, "two requests upstream")
    eq(o.srv.connections, 1, "both on one (kept-alive) upstream connection")
    no_bad_lines(lg)


if __name__ == "__main__":
    main()

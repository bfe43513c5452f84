#!/usr/bin/env python3
"""Retries (next_upstream), circuit breaking (max_conns), outlier ejection
with a growing interval, slow start."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, servers, extra=""):
    items = ", ".join(s if s.startswith("{") else '"%s"' % s for s in servers)
    return """
http = {
    proxy_read_timeout = "600ms";
    upstreams = { app = { servers = ( %s ); %s }; };
    servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (items, extra, port)


def always_503(s, peer):
    """A server answering 503 to every request, counting them."""
    while True:
        head = read_request_head(s)
        if not head:
            return
        always_503.count += 1
        s.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nX-Origin: bad\r\n\r\nbad\n")


always_503.count = 0


def silent(s, peer):
    """Reads requests and never answers (a hung server)."""
    while read_request_head(s, timeout=30):
        pass


@test
def status_retry_for_idempotent_requests_only():
    a = Origin("a")
    bad = ScriptedServer(always_503)
    port = free_port()
    lg = Legate(conf(port, [bad.address, a.address],
                     'next_upstream = "error timeout http_503"; max_fails = 0;'), workers=1)
    for i in range(6):
        r = request(port, target="/g%d" % i)
        eq((r.status, r.headers.get("X-Origin")), (200, "a"), "GET retried on the good server")
    before = always_503.count
    codes = []
    for i in range(6):
        r = request(port, method="POST", target="/p%d" % i, body=b"x")
        codes.append(r.status)
    posts_to_bad = always_503.count - before
    ok(posts_to_bad >= 1, "some POSTs reached the bad server")
    # every POST that reached the bad server got its 503: none was sent twice
    eq(codes.count(503), posts_to_bad, "POST answers %r" % codes)


@test
def non_idempotent_allows_post_retry():
    a = Origin("a")
    bad = ScriptedServer(always_503)
    port = free_port()
    Legate(conf(port, [bad.address, a.address],
                'next_upstream = "error http_503 non_idempotent"; max_fails = 0;'), workers=1)
    for i in range(6):
        r = request(port, method="POST", target="/p%d" % i, body=b"abc")
        eq((r.status, r.headers.get("X-Origin")), (200, "a"))


@test
def timeout_retry_and_tries_limit():
    a = Origin("a")
    hung = ScriptedServer(silent)
    port = free_port()
    lg = Legate(conf(port, [hung.address, a.address], "max_fails = 0;"), workers=1)
    lg.allow_log(r"timed out")
    t0 = time.monotonic()
    seen = [request(port, target="/t%d" % i, timeout=20).headers.get("X-Origin") for i in range(4)]
    eq(seen, ["a"] * 4, "a read timeout sends the GET to the next server")
    ok(time.monotonic() - t0 < 10, "each at most one read timeout late")
    port2 = free_port()
    lg2 = Legate(conf(port2, [hung.address, a.address],
                      'max_fails = 0; next_upstream_tries = 1; balance = "round_robin";'), workers=1)
    lg2.allow_log(r"timed out")
    codes = sorted(request(port2, target="/u%d" % i, timeout=20).status for i in range(4))
    eq(codes, [200, 200, 504, 504], "with one try, the hung server's turns end in 504")


@test
def max_conns_answers_503_fast_when_full():
    a = Origin("a")
    port = free_port()
    lg = Legate(conf(port, ['{ address = "%s"; max_conns = 2; }' % a.address]), workers=2)
    lg.allow_log(r"max_conns")
    slow = [threading.Thread(target=request, args=(port,), kwargs={"target": "/s?delay=2500",
                                                                     "timeout": 20}, daemon=True)
            for _ in range(2)]
    for t in slow:
        t.start()
    wait_until(lambda: a.stats()["active"] >= 2, 10, what="two requests in flight")
    t0 = time.monotonic()
    r = request(port, target="/third")
    eq(r.status, 503, "the third request over both workers")
    ok(time.monotonic() - t0 < 1.0, "answered at once, not queued")
    for t in slow:
        t.join(20)
    eq(request(port, target="/after").status, 200, "room again")


@test
def upstream_max_conns_over_all_servers():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address], "max_conns = 2;").replace('"600ms"', '"10s"'),
                workers=2)
    lg.allow_log(r"max_conns")
    slow = [threading.Thread(target=request, args=(port,), kwargs={"target": "/s?delay=2500",
                                                                     "timeout": 20}, daemon=True)
            for _ in range(2)]
    for t in slow:
        t.start()
    wait_until(lambda: a.stats()["active"] + b.stats()["active"] >= 2, 10,
               what="two requests in flight")
    eq(request(port, target="/third").status, 503, "the upstream as a whole is full")
    for t in slow:
        t.join(20)
    eq(request(port, target="/after").status, 200)


@test
def queue_waits_for_room_then_gives_up():
    a = Origin("a")
    port = free_port()
    lg = Legate(conf(port, ['{ address = "%s"; max_conns = 1; }' % a.address],
                     'queue = 4; queue_timeout = "5s";'), workers=1)
    first = threading.Thread(target=request, args=(port,),
                             kwargs={"target": "/s?delay=800", "timeout": 20}, daemon=True)
    first.start()
    wait_until(lambda: a.stats()["active"] >= 1, 10, what="the first request in flight")
    t0 = time.monotonic()
    r = request(port, target="/queued", timeout=20)
    waited = time.monotonic() - t0
    eq(r.status, 200, "the queued request is served once there is room")
    ok(0.2 < waited < 5, "it waited for the first (%.2fs)" % waited)
    first.join(20)
    port2 = free_port()
    lg2 = Legate(conf(port2, ['{ address = "%s"; max_conns = 1; }' % a.address],
                      'queue = 4; queue_timeout = "300ms";'), workers=1)
    lg2.allow_log(r"queue_timeout")
    slow = threading.Thread(target=request, args=(port2,),
                            kwargs={"target": "/s?delay=2000", "timeout": 20}, daemon=True)
    slow.start()
    wait_until(lambda: a.stats()["active"] >= 1, 10, what="the slow request in flight")
    t0 = time.monotonic()
    eq(request(port2, target="/late", timeout=20).status, 503)
    ok(time.monotonic() - t0 < 1.5, "503 after about queue_timeout")
    slow.join(20)


@test(timeout=60)
def ejection_grows_and_slow_start_ramps():
    a, b = Origin("a"), Origin("b")
    bport = b.port
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address],
                     'max_fails = 1; fail_timeout = "700ms"; slow_start = "3s";'), workers=1)
    lg.allow_log(r"connect\(\) failed|is out for")
    b.stop()
    first = r"127\.0\.0\.1:%d is out for 700 ms" % bport
    wait_until(lambda: request(port, target="/1") and re.search(first, lg.log_text()), 5,
               what="the first ejection")
    second = r"127\.0\.0\.1:%d is out for 1400 ms" % bport
    wait_until(lambda: request(port, target="/2") and re.search(second, lg.log_text()), 10,
               interval=0.1, what="a longer second ejection once the first ran out")
    b2 = Origin("b", port=bport)
    wait_until(lambda: request(port, target="/w").headers.get("X-Origin") == "b", 10,
               interval=0.05, what="b back in rotation")
    # just back: its weight ramps up, so it gets well under half at first
    seen = [request(port, target="/r%d" % i).headers.get("X-Origin") for i in range(40)]
    share = seen.count("b") / 40.0
    ok(share < 0.4, "slow start: b's share right after its return is %.2f" % share)
    b2.stop()


@test
def config_rejects_unknown_condition():
    rc, err = check_config(conf(free_port(), ["127.0.0.1:1"], 'next_upstream = "error http_418";'))
    eq(rc, 1)
    contains(err, "unknown condition 'http_418'")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Size limits (414, 431, 413), concurrency, and no descriptor leaks."""
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def proxy(origins, **kw):
    return Legate(simple_conf(free_port(), origins, **kw))


def one(port, raw, timeout=10):
    rs = parse_responses(http_raw(port, raw, responses=1, timeout=timeout))
    ok(rs, "no response")
    return rs[0]


@test
def long_uri_414():
    o = Origin("o1")
    lg = proxy([o])
    r = one(lg.port, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % ("a" * 100000))
    eq(r.status, 414)
    eq(o.stats()["requests"], 0)


@test
def moderate_uri_ok():
    o = Origin("o1")
    lg = proxy([o])
    path = "/" + "b" * 2000
    r = one(lg.port, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    eq(r.status, 200)
    eq(r.body, ("origin o1 %s\n" % path).encode())


@test
def huge_header_431():
    o = Origin("o1")
    lg = proxy([o])
    r = one(lg.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % ("v" * 100000))
    eq(r.status, 431)
    eq(o.stats()["requests"], 0)


@test
def too_many_headers_431():
    o = Origin("o1")
    lg = proxy([o])
    hdrs = "".join("X-H%d: v\r\n" % i for i in range(5000))
    r = one(lg.port, "GET / HTTP/1.1\r\nHost: x\r\n%s\r\n" % hdrs)
    eq(r.status, 431)
    eq(o.stats()["requests"], 0)


@test
def normal_headers_ok():
    o = Origin("o1")
    lg = proxy([o])
    hdrs = "".join("X-H%d: %s\r\n" % (i, "v" * 50) for i in range(50))
    r = one(lg.port, "GET /?echo=1 HTTP/1.1\r\nHost: x\r\n%s\r\n" % hdrs)
    eq(r.status, 200)
    names = [h[0] for h in r.json()["headers"]]
    ok(all("X-H%d" % i in names for i in range(50)), "headers lost: %r" % names)


@test
def body_over_limit_413():
    o = Origin("o1")
    lg = proxy([o], http_extra='client_max_body_size = "1k";')
    r = one(lg.port, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + "x" * 2000)
    eq(r.status, 413)
    eq(o.stats()["requests"], 0)


@test
def body_at_limit_ok():
    o = Origin("o1")
    lg = proxy([o], http_extra='client_max_body_size = "1k";')
    r = one(lg.port, "POST /b?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + "x" * 1024)
    eq(r.status, 200)
    eq(r.json()["body_len"], 1024)


@test
def chunked_body_over_limit_413():
    o = Origin("o1")
    lg = proxy([o], http_extra='client_max_body_size = "1k";')
    body = "400\r\n%s\r\n400\r\n%s\r\n0\r\n\r\n" % ("x" * 1024, "y" * 1024)
    r = one(lg.port, "POST /b?echo=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body)
    eq(r.status, 413)

    def settled():
        s = o.stats()
        return s["requests"] == s["incomplete"]
    wait_until(settled, 5, what="origin to see no complete request")


@test
def default_limit_is_1m():
    o = Origin("o1")
    lg = proxy([o])
    mib = 1024 * 1024
    r = request(lg.port, "POST", "/ok?echo=1", body=b"a" * mib)
    eq(r.status, 200)
    eq(r.json()["body_len"], mib)
    r = request(lg.port, "POST", "/big", body=b"a" * (mib + 1))
    eq(r.status, 413)


@test
def zero_means_unlimited():
    o = Origin("o1")
    lg = proxy([o], http_extra="client_max_body_size = 0;")
    r = request(lg.port, "POST", "/ok?echo=1", body=b"z" * (5 * 1024 * 1024), timeout=30)
    eq(r.status, 200)
    eq(r.json()["body_len"], 5 * 1024 * 1024)


@test
def route_level_body_limit():
    o = Origin("o1")
    lg = proxy([o], server_extra='client_max_body_size = "1k";', routes="""
        { prefix = "/upload/"; proxy_pass = "app"; client_max_body_size = 0; },
        { prefix = "/"; proxy_pass = "app"; }""")
    eq(request(lg.port, "POST", "/upload/x", body=b"u" * 5000).status, 200)
    eq(request(lg.port, "POST", "/other", body=b"u" * 5000).status, 413)


@test
def request_buffering_on_works():
    o = Origin("o1")
    lg = proxy([o], http_extra="client_max_body_size = 0;")
    body = os.urandom(3 * 1024 * 1024)
    r = request(lg.port, "POST", "/rb?echo=1", body=body, timeout=30)
    eq(r.status, 200)
    eq(r.json()["body_len"], len(body))


@test
def concurrent_connections():
    o = Origin("o1")
    lg = proxy([o], workers=2)
    errors = []
    lock = threading.Lock()

    def worker(i):
        try:
            with Conn(lg.port, timeout=20) as c:
                for j in range(5):
                    r = c.request(target="/c%d-%d?delay=50" % (i, j))
                    if r is None or r.status != 200:
                        raise AssertionError("got %r" % r)
        except Exception as e:
            with lock:
                errors.append("%d: %r" % (i, e))
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(40)
    eq(errors[:5], [], "%d of 200 clients failed" % len(errors))
    eq(o.stats()["requests"], 1000)



@test
def at_worker_connections_idle_keepalive_connections_make_room():
    """nginx's reusable connections: at the limit the longest-idle keep-alive
    connection is closed for a new client, and the log says so (not once per
    connection); connections busy with a request are never the ones closed."""
    o = Origin("o1")
    lg = Legate(simple_conf(free_port(), [o], workers=1,
                            global_extra="worker_connections = 20;"))
    idle = []
    for i in range(20):
        c = Conn(lg.port, timeout=10)
        eq(c.request(target="/i%d" % i).status, 200)
        idle.append(c)
    # one busy with a slow request: it must survive what follows
    busy = Conn(lg.port, timeout=15)
    res = {}
    th = threading.Thread(target=lambda: res.update(r=busy.request(target="/slow?delay=1500")))
    th.start()
    fresh = []
    for i in range(10):         # new clients that stay: each needs a place
        c = Conn(lg.port, timeout=5)
        r = c.request(target="/new%d" % i)
        ok(r is not None and r.status == 200, "new client %d at the limit: %r" % (i, r))
        fresh.append(c)
    th.join(10)
    ok(res.get("r") is not None and res["r"].status == 200 and res["r"].complete,
       "the busy connection's request: %r" % res.get("r"))
    gone = [i for i, c in enumerate(idle) if c.closed(0.3)]
    ok(len(gone) >= 10, "only %d idle connections made room for 10 new ones" % len(gone))
    eq(gone, list(range(len(gone))), "the longest-idle ones go first")
    lines = [l for l in lg.log_text().splitlines() if "to make room" in l]
    ok(1 <= len(lines) <= 3, "room-making said %d times: %r" % (len(lines), lines[:4]))
    for c in idle + fresh:
        c.close()
    busy.close()


@test
def default_worker_connections_follow_the_open_file_limit():
    o = Origin("o1")
    lg = proxy([o], workers=1)
    # about 3,200 idle keep-alive connections refused new clients with the
    # old fixed 1024; the default now follows the descriptor limit
    conns = []
    try:
        for i in range(1500):
            c = socket.create_connection(("127.0.0.1", lg.port), timeout=10)
            c.sendall(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        for c in conns:
            c.settimeout(10)
            ok(c.recv(65536).startswith(b"HTTP/1.1 200"), "a keep-alive answer")
        r = request(lg.port, target="/probe", timeout=5)
        ok(r is not None and r.status == 200, "a probe with 1,500 idle connections open: %r" % r)
        ok("to make room" not in lg.log_text(), "connections closed well below the fd limit")
    finally:
        for c in conns:
            c.close()


@test
def no_fd_leak_after_mixed_traffic():
    o = Origin("o1")
    dead = "127.0.0.1:%d" % free_port()
    port = free_port()
    lg = Legate("""
worker_processes = 1;
http = {
  proxy_read_timeout = "1s";
  upstreams = {
    app = { servers = ( "%s" ); };
    dead = { servers = ( "%s" ); };
  };
  servers = ( {
    listen = "127.0.0.1:%d";
    routes = ( { prefix = "/dead/"; proxy_pass = "dead"; },
               { prefix = "/"; proxy_pass = "app"; } );
  } );
};
""" % (o.address, dead, port), workers=None)
    w = lg.wait_workers(1)[0]
    eq(request(lg.port, target="/warm").status, 200)
    base = fd_count(w)
    for i in range(30):
        request(lg.port, target="/ok%d" % i)
        request(lg.port, target="/dead/%d" % i)
        request(lg.port, target="/r?reset=1")
        request(lg.port, target="/g?garbage=1")
        http_raw(lg.port, "GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", timeout=2)
        http_raw(lg.port, "GET /half HTTP/1.1\r\nHo", timeout=0.05)
    for i in range(5):
        request(lg.port, target="/h?hang=1", timeout=5)
    # pooled upstream connections (keepalive 32) may stay open
    try:
        wait_until(lambda: fd_count(w) <= base + 2, 10)
    except TestFailure:
        fail("worker fds %d after the traffic, %d before; open: %s" % (
            fd_count(w), base, sorted(os.readlink("/proc/%d/fd/%s" % (w, f))
                                      for f in os.listdir("/proc/%d/fd" % w))))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Request-rate (limit_req) and concurrency (limit_conn) limits shared by
all workers: the cross-worker accuracy figure, nodelay against delay,
Retry-After and the configurable status, dry run, keys from a header, a zone
with more keys than it holds, a reload that keeps the counts, the
concurrency limit across two workers and its release when clients vanish,
forward-proxy requests, and configuration errors."""
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

LOG = 'log_format = "$status $pid $limit_req_status $limit_conn_status [$blocked] $http_x_api_key";'


def zones(req="", conn=""):
    out = LOG
    if req:
        out += " limit_req_zones = ( %s );" % req
    if conn:
        out += " limit_conn_zones = ( %s );" % conn
    return out


def access_lines(lg, pattern, n, timeout=5):
    """Wait until the access log has n lines matching pattern; return them all."""
    rx = re.compile(pattern)
    got = []

    def enough():
        got[:] = [l for l in open(lg.access_log).read().splitlines() if rx.search(l)]
        return len(got) >= n
    wait_until(enough, timeout, what="%d access lines matching %r" % (n, pattern))
    return got


def hammer(port, seconds, conns, target="/x", headers=()):
    """Requests as fast as each of `conns` keep-alive connections can, for
    `seconds`: a Counter of statuses.  Bounded in time and count."""
    counts = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def one():
        mine = {}
        c = Conn(port, timeout=5)
        try:
            for _ in range(200000):
                if time.monotonic() >= stop_at:
                    break
                r = c.request(target=target, headers=headers)
                if r is None:
                    c.close()
                    c = Conn(port, timeout=5)
                    continue
                mine[r.status] = mine.get(r.status, 0) + 1
        finally:
            c.close()
        with lock:
            for k, v in mine.items():
                counts[k] = counts.get(k, 0) + v
    ts = [threading.Thread(target=one) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 30)
    return counts


@test(timeout=90)
def rate_is_shared_across_workers():
    """20 r/s, burst 10, nodelay, one key, 10 s of load over 8 connections
    on 2 workers: 200 + 10 (+1, the first) pass, within 5 %."""
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra=zones(
        req='{ name = "one"; key = "$remote_addr"; rate = "20r/s"; }'),
        route_extra='limit_req = { zone = "one"; burst = 10; nodelay = true; };'), workers=2)
    counts = hammer(port, 10.0, 8)
    passed, refused = counts.get(200, 0), counts.get(429, 0)
    print("# 10 s at 20r/s burst 10 on 2 workers: %d passed, %d refused" % (passed, refused))
    ok(refused > 1000, "the load was heavy enough to be limited: %r" % counts)
    eq(set(counts) - {200, 429}, set(), "only 200 and 429")
    ok(200 <= passed <= 221, "200 + 10 (+1) +- 5%% passed, got %d (%r)" % (passed, counts))
    pids = {l.split()[1] for l in access_lines(lg, r"^200 ", passed)}
    eq(len(pids), 2, "both workers let requests through (pids %r)" % pids)


def burst_of(port, n, target="/x?delay=0"):
    """n requests at once on n connections: [(status, seconds)]."""
    out = [None] * n
    go = threading.Event()

    def one(i):
        with Conn(port, timeout=10) as c:
            go.wait(5)
            t0 = time.monotonic()
            r = c.request(target=target)
            out[i] = (r.status if r else None, time.monotonic() - t0)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    time.sleep(0.2)     # let every connection open: they then send together
    go.set()
    for t in ts:
        t.join(20)
    return out


@test(timeout=60)
def delay_paces_where_nodelay_rejects_at_once():
    """10 r/s, burst 5: without nodelay the 5 past the first are delayed
    (later, not refused, none beyond the burst); with nodelay they pass at
    once; in both, what exceeds the burst is refused."""
    o = Origin("o")
    port = free_port()
    routes = ('{ prefix = "/d"; proxy_pass = "app"; limit_req = { zone = "d"; burst = 5; }; }, '
              '{ prefix = "/n"; proxy_pass = "app"; limit_req = { zone = "n"; burst = 5; nodelay = true; }; }')
    Legate(simple_conf(port, [o], routes=routes, http_extra=zones(
        req='{ name = "d"; key = "$remote_addr"; rate = "10r/s"; }, '
            '{ name = "n"; key = "$remote_addr"; rate = "10r/s"; }')), workers=2)
    d = burst_of(port, 9, "/d")
    ok_d = sorted(t for s, t in d if s == 200)
    eq((len(ok_d), sum(1 for s, _ in d if s == 429)), (6, 3), "delay mode: %r" % d)
    ok(ok_d[-1] >= 0.4, "the last delayed one waited about 5 intervals: %r" % ok_d)
    ok(ok_d[-1] < 1.5, "and no longer than the burst allows: %r" % ok_d)
    ok(ok_d[1] >= 0.05, "the second one waited too: %r" % ok_d)
    n = burst_of(port, 9, "/n")
    ok_n = sorted(t for s, t in n if s == 200)
    eq((len(ok_n), sum(1 for s, _ in n if s == 429)), (6, 3), "nodelay mode: %r" % n)
    ok(ok_n[-1] < 0.3, "nodelay: nobody waited: %r" % ok_n)


@test
def retry_after_status_and_log():
    o = Origin("o")
    port = free_port()
    routes = ('{ prefix = "/a"; proxy_pass = "app"; }, '
              '{ prefix = "/b"; proxy_pass = "app"; limit_req_status = 503; }')
    lg = Legate(simple_conf(port, [o], routes=routes, http_extra=zones(
        req='{ name = "slow"; key = "$remote_addr$uri"; rate = "1r/m"; }') +
        ' limit_req = { zone = "slow"; nodelay = true; };'), workers=2)
    eq(request(port, target="/a").status, 200)
    r = request(port, target="/a")
    eq(r.status, 429)
    ra = int(r.headers.get("Retry-After", "0"))
    ok(50 <= ra <= 60, "Retry-After about a minute: %r" % ra)
    eq(request(port, target="/b").status, 200, "another key")
    eq(request(port, target="/b").status, 503, "limit_req_status")
    lines = access_lines(lg, r"REJECTED", 2)
    contains(lines[0], "[limit_req zone=slow]")
    lg.wait_log(r"limit_req: refusing a request .* zone \"slow\"")
    eq(o.stats()["requests"], 2, "refused requests never reach the origin")


@test
def dry_run_logs_without_refusing():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra=zones(
        req='{ name = "one"; key = "$remote_addr"; rate = "1r/m"; }'),
        route_extra='limit_req = { zone = "one"; nodelay = true; }; limit_req_dry_run = true;'),
        workers=2)
    eq([request(port, target="/x").status for _ in range(5)], [200] * 5)
    access_lines(lg, r"^200 \d+ REJECTED_DRY_RUN ", 4)
    access_lines(lg, r"^200 \d+ PASSED ", 1)


@test
def keys_from_a_header_are_kept_apart():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o], http_extra=zones(
        req='{ name = "api"; key = "$http_x_api_key"; rate = "1r/m"; }'),
        route_extra='limit_req = { zone = "api"; nodelay = true; };'), workers=2)
    k = lambda v: [("X-Api-Key", v)]
    eq(request(port, target="/x", headers=k("alice")).status, 200)
    eq(request(port, target="/x", headers=k("alice")).status, 429)
    eq(request(port, target="/x", headers=k("bob")).status, 200, "bob has his own count")
    eq(request(port, target="/x", headers=k("bob")).status, 429)
    eq([request(port, target="/x").status for _ in range(3)], [200] * 3,
       "no key (empty) is not limited")


@test(timeout=60)
def more_keys_than_the_zone_holds():
    """A 4k zone holds 96 keys; 600 keys each send one request and then
    the first key again: all served, eviction logged (at most once a second)."""
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra=zones(
        req='{ name = "tiny"; key = "$http_x_api_key"; rate = "1r/m"; size = "4k"; }'),
        route_extra='limit_req = { zone = "tiny"; nodelay = true; };'), workers=2)
    t0 = time.monotonic()
    statuses = []
    with Conn(port) as c:
        for i in range(600):
            statuses.append(c.request(target="/x", headers=[("X-Api-Key", "k%d" % i)]).status)
    eq(statuses, [200] * 600, "every new key served")
    lg.wait_log(r"limit_req zone \"tiny\" is full \(96 keys\)")
    elapsed = time.monotonic() - t0
    n = len(re.findall(r"zone \"tiny\" is full", open(lg.error_log).read()))
    ok(1 <= n <= int(elapsed) + 1, "%d lines in %.1f s (one a second at most, all workers)"
       % (n, elapsed))
    eq(request(port, target="/x", headers=[("X-Api-Key", "k0")]).status, 200,
       "the least recently used key was evicted: it starts afresh")
    eq(request(port, target="/x", headers=[("X-Api-Key", "k599")]).status, 429,
       "a recent key is still limited")


@test(timeout=60)
def counts_survive_a_reload():
    o = Origin("o")
    port = free_port()
    conf = simple_conf(port, [o], http_extra=zones(
        req='{ name = "api"; key = "$http_x_api_key"; rate = "%s"; }'),
        route_extra='limit_req = { zone = "api"; nodelay = true; };')
    lg = Legate(conf % "1r/m", workers=2)
    k = [("X-Api-Key", "alice")]
    eq(request(port, target="/x", headers=k).status, 200)
    eq(request(port, target="/x", headers=k).status, 429)
    lg.reload(conf % "2r/m")        # same zone (name, key, size), new rate
    eq(request(port, target="/x", headers=k).status, 429, "alice's count carried over")
    eq(request(port, target="/x", headers=[("X-Api-Key", "bob")]).status, 200)


def slow_requests(port, n, target):
    """n requests on n connections at once, in threads: (threads, results)."""
    res = [None] * n

    def one(i):
        with Conn(port, timeout=15) as c:
            r = c.request(target=target)
            res[i] = r.status if r else None
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    return ts, res


@test(timeout=60)
def concurrency_limit_across_workers():
    """max 3 in flight per client on 2 workers: of 12 slow requests at once,
    exactly 3 reach the origin; the rest get 503 at once."""
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra=zones(
        conn='{ name = "perip"; key = "$remote_addr"; }'),
        route_extra='limit_conn = { zone = "perip"; max = 3; };'), workers=2)
    ts, res = slow_requests(port, 12, "/slow?delay=1500")
    for t in ts:
        t.join(20)
    eq((res.count(200), res.count(503)), (3, 9), "statuses %r" % res)
    lines = access_lines(lg, r"^(200|503) ", 12)
    eq(len({l.split()[1] for l in lines}), 2, "both workers took requests")
    contains("\n".join(lines), "[limit_conn zone=perip]")
    eq([request(port, target="/x").status for _ in range(4)], [200] * 4,
       "all released once answered")


@test(timeout=60)
def concurrency_released_when_clients_vanish():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o], http_extra=zones(
        conn='{ name = "perip"; key = "$remote_addr"; }'),
        route_extra='limit_conn = { zone = "perip"; max = 2; };'), workers=2)
    cs = [Conn(port) for _ in range(2)]
    for c in cs:
        c.send("GET /slow?delay=8000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: o.stats()["active"] >= 2, 5, what="both slow requests at the origin")
    eq(request(port, target="/x").status, 503, "the limit is reached")
    t0 = time.monotonic()
    for c in cs:
        c.close()
    wait_until(lambda: request(port, target="/x").status == 200, 5, interval=0.1,
               what="the vanished clients' slots released")
    ok(time.monotonic() - t0 < 5, "released long before the origin would have answered")


@test(timeout=60)
def concurrency_released_when_a_worker_dies():
    """A worker killed with requests in flight: the master forgets them
    (its lane of the zone), so the key is not locked out for ever."""
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra=zones(
        conn='{ name = "perip"; key = "$remote_addr"; }'),
        route_extra='limit_conn = { zone = "perip"; max = 2; };'), workers=1)
    lg.allow_log(r"exited on signal 9")
    cs = [Conn(port) for _ in range(2)]
    for c in cs:
        c.send("GET /slow?delay=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: o.stats()["active"] >= 2, 5, what="both slow requests at the origin")
    eq(request(port, target="/x").status, 503, "the limit is reached")
    old = lg.workers()
    os.kill(old[0], 9)
    wait_until(lambda: lg.workers() and lg.workers() != old, 10, what="a new worker")
    eq(request(port, target="/x").status, 200, "the dead worker's requests are forgotten")
    for c in cs:
        c.close()


@test
def forward_proxy_requests_are_limited():
    o = Origin("o")
    port = free_port()
    Legate("""
http = {
    %s
    limit_req_zones = ( { name = "fwd"; key = "$remote_addr"; rate = "1r/m"; } );
    servers = ( { listen = "127.0.0.1:%d";
        forward = { allow_private = true; };
        limit_req = { zone = "fwd"; nodelay = true; };
        routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } );
};
""" % (LOG, port), workers=2)
    url = "http://127.0.0.1:%d/x" % o.port
    eq(request(port, target=url, host="127.0.0.1:%d" % o.port).status, 200)
    eq(request(port, target=url, host="127.0.0.1:%d" % o.port).status, 429)


@test
def forward_proxy_keys_on_the_signed_in_user():
    """$remote_user is the user the forward proxy checked: alice and bob
    are counted apart, and a refused sign-in is not counted."""
    o = Origin("o")
    port = free_port()
    d = tempfile.mkdtemp(prefix="legate-lim-")
    users = []
    for user, pw in (("alice", "s3cret"), ("bob", "hunter2")):
        h = subprocess.run(["openssl", "passwd", "-6", pw], capture_output=True, check=True,
                           timeout=30).stdout.decode().strip()
        users.append("%s:%s" % (user, h))
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("\n".join(users) + "\n")
    Legate("""
http = {
    %s
    limit_req_zones = ( { name = "user"; key = "$remote_user"; rate = "1r/m"; } );
    servers = ( { listen = "127.0.0.1:%d";
        forward = { allow_private = true; auth_file = "%s/htpasswd"; };
        limit_req = { zone = "user"; nodelay = true; };
        routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } );
};
""" % (LOG, port, d), workers=2)
    url = "http://127.0.0.1:%d/x" % o.port
    basic = lambda u, p: [("Proxy-Authorization", "Basic " + base64.b64encode(
        ("%s:%s" % (u, p)).encode()).decode())]
    get = lambda hs: request(port, target=url, host="127.0.0.1:%d" % o.port, headers=hs).status
    eq(get(basic("alice", "wrong")), 407)
    eq(get(basic("alice", "s3cret")), 200, "the refused sign-in was not counted")
    eq(get(basic("alice", "s3cret")), 429)
    eq(get(basic("bob", "hunter2")), 200, "bob is another key")
    eq(get(basic("bob", "hunter2")), 429)


@test(timeout=60)
def limit_rate_paces_downloads():
    """limit_rate 200k: 600 KB take about 3 s; limit_rate_after 400k: the
    first 400 KB go at once, the rest in about 1 s; without it, at once."""
    o = Origin("o")
    port = free_port()
    routes = ('{ prefix = "/slow"; proxy_pass = "app"; limit_rate = "200k"; }, '
              '{ prefix = "/after"; proxy_pass = "app"; limit_rate = "200k"; limit_rate_after = "400k"; }, '
              '{ prefix = "/"; proxy_pass = "app"; }')
    Legate(simple_conf(port, [o], routes=routes), workers=2)
    size = 600 * 1024

    def timed(path):
        t0 = time.monotonic()
        r = request(port, target=path + "?size=%d" % size, timeout=20)
        eq(len(r.body), size, "the whole body arrived")
        return time.monotonic() - t0
    t_free, t_slow, t_after = timed("/x"), timed("/slow"), timed("/after")
    print("# 600 KB: %.2f s unlimited, %.2f s at 200k, %.2f s at 200k after 400k"
          % (t_free, t_slow, t_after))
    ok(t_free < 1.0, "unlimited: %.2f s" % t_free)
    ok(2.6 <= t_slow <= 4.5, "600 KB at 200 KB/s: %.2f s" % t_slow)
    ok(0.8 <= t_after <= 2.0, "400 KB free then 200 KB at 200 KB/s: %.2f s" % t_after)


@test
def http2_requests_are_limited_alike():
    """Streams of one HTTP/2 connection count as requests of their key."""
    if shutil.which("h2load") is None:
        skip("h2load not installed")
    o = Origin("o")
    port = free_port()
    extra = ('limit_req_zones = ( { name = "rq"; key = "$remote_addr"; rate = "1r/m"; } );')
    text = simple_conf(port, [o], http_extra=extra, route_extra='limit_req = { zone = "rq"; burst = 4; nodelay = true; };')
    text = text.replace('listen = "127.0.0.1:%d";' % port, 'listen = ( { address = "127.0.0.1:%d"; http2 = true; } );' % port)
    Legate(text, workers=2)
    out = subprocess.run(["h2load", "-n", "20", "-c", "1", "-m", "20", "http://127.0.0.1:%d/x" % port],
                         capture_output=True, timeout=60).stdout.decode()
    contains(out, "status codes: 5 2xx, 0 3xx, 15 4xx", "burst 4 + 1 through, the rest 429")


@test(timeout=90)
def a_bandwidth_zone_is_shared_by_the_key_across_connections_and_workers():
    """limit_rate_zone: a key's downloads share the zone's rate, however
    many connections and workers carry them; another key has its own."""
    o = Origin("o")
    port = free_port()
    extra = ('limit_req_zones = ( { name = "bw"; key = "$http_x_api_key"; rate = "300k/s"; } );')
    routes = '{ prefix = "/"; proxy_pass = "app"; limit_rate_zone = "bw"; }'
    Legate(simple_conf(port, [o], routes=routes, http_extra=extra), workers=2)
    size = 450 * 1024
    results = {}

    def fetch(i, key):
        t0 = time.monotonic()
        r = request(port, target="/d%d?size=%d" % (i, size), headers=[("X-Api-Key", key)], timeout=30)
        results[i] = (len(r.body), time.monotonic() - t0)
    # four downloads of key a at once: 1800 KB at 300 KB/s, about 6 s in all
    ts = [threading.Thread(target=fetch, args=(i, "a")) for i in range(4)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(40)
    total = time.monotonic() - t0
    eq(sorted(v[0] for v in results.values()), [size] * 4, "every body whole")
    print("# 4 x 450 KB of one key at 300 KB/s: %.2f s" % total)
    ok(5.0 <= total <= 9.0, "the key's 1800 KB took %.2f s at 300 KB/s" % total)
    # another key is not slowed by the first: 450 KB in about 1.5 s
    results.clear()
    fetch(9, "b")
    ok(1.0 <= results[9][1] <= 3.0, "key b alone: %.2f s" % results[9][1])


@test(timeout=60)
def limit_rate_paces_connect_tunnels():
    """limit_rate on a forward proxy's CONNECT: the tunnel's downstream
    bytes are paced (no splice), as Squid's delay pools do."""
    port = free_port()
    blob = os.urandom(400 * 1024)

    def serve(sock, peer):
        sock.sendall(blob)
    up = ScriptedServer(serve)
    Legate("""
http = {
    servers = ( { listen = "127.0.0.1:%d";
        forward = { allow_private = true; connect_ports = "1-65535"; };
        limit_rate = "200k";
        routes = ( ); } );
};
""" % port, workers=1)
    import socket as so
    s = so.create_connection(("127.0.0.1", port), timeout=20)
    t0 = time.monotonic()
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (up.port, up.port))
    data = b""
    while len(data) < 400 * 1024 + 100:
        d = s.recv(65536)
        if not d:
            break
        data += d
    took = time.monotonic() - t0
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    contains(head.decode(), "200")
    eq(body, blob, "the tunnel's bytes")
    print("# 400 KB through CONNECT at 200k: %.2f s" % took)
    ok(1.5 <= took <= 4.0, "400 KB at 200 KB/s took %.2f s" % took)


@test
def configuration_errors():
    cases = [
        ('limit_req_zones = ( { name = "bw"; key = "$remote_addr"; rate = "1m/s"; } ); '
         'limit_req = { zone = "bw"; };', r"a bandwidth zone"),
        ('limit_req_zones = ( { name = "rq"; key = "$remote_addr"; rate = "5r/s"; } ); '
         'limit_rate_zone = "rq";', r"whose rate is requests"),
        ('limit_rate_zone = "nope";', r"'limit_rate_zone' names zone \"nope\""),
        ('limit_req_zones = ( { name = "bw"; key = "$remote_addr"; rate = "10/s"; } );', r"'rate' of a bandwidth zone"),
        ('limit_req = { zone = "nope"; };', r"names zone \"nope\""),
        ('limit_req_zones = ( { name = "a"; key = "$remote_addr"; rate = "fast"; } );', r"'rate' must be"),
        ('limit_req_zones = ( { name = "a"; key = "$remote_addr"; } );', r"has no 'rate'"),
        ('limit_conn_zones = ( { name = "a"; key = "$nosuchvar"; } );', r"unknown variable"),
        ('limit_conn_zones = ( { name = "a"; key = "$remote_addr"; } ); '
         'limit_conn = { zone = "a"; };', r"has no 'max'"),
        ('limit_req_zones = ( { name = "a"; key = "$remote_addr"; rate = "1r/s"; } ); '
         'limit_req = { zone = "a"; burst = 2; delay = 3; };', r"must not exceed 'burst'"),
    ]
    for extra, rx in cases:
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"], http_extra=extra))
        ok(rc != 0 and re.search(r"legate\.conf:\d+: .*" + rx, err), "%s -> %r" % (extra, err))
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"], http_extra=
        'limit_req_zones = ( { name = "a"; key = "$remote_addr"; rate = "30r/m"; } ); '
        'limit_req = { zone = "a"; burst = 2; delay = 1; }; limit_req_dry_run = true;',
        route_extra='limit_req = ();'))
    eq((rc, err), (0, err), "a valid configuration")


if __name__ == "__main__":
    main()

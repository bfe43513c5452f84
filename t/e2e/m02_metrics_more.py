#!/usr/bin/env python3
"""Observability, the families counted by key: limit zones, access rules
and authentication, compression bytes, the forward proxy (requests,
tunnels, refusals by rule, DNS lookups, SOCKS5 sessions), upstream servers
(health checks, pool reuse and idle connections, the max_conns queue and
its rejections, connect errors, timeouts by phase, the response time
histogram), accept pauses at worker_connections, cache purges and collapsed waits, requests by protocol;
access_log_sample.  Values are checked against known traffic, exactly,
across two workers where the traffic allows; a client cannot add series."""
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DNSD = os.path.join(HERE, "..", "dnsd.py")


def scrape(mport):
    st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
    eq(st, 200)
    return body.decode()


SAMPLE = re.compile(r'^([a-z_:]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def value(text, name, **labels):
    """The sample of name with exactly these labels (in any order), or None."""
    for l in text.splitlines():
        m = SAMPLE.match(l)
        if m and m.group(1) == name and dict(LABEL.findall(m.group(2) or "")) == labels:
            return float(m.group(3))
    return None


def series(text):
    """The sample lines of the page, without their values."""
    return sorted(l.rsplit(" ", 1)[0] for l in text.splitlines() if l and not l.startswith("#"))


def settle(mport, check, what, timeout=15):
    """Poll the page until check(page) holds (workers move counts each second)."""
    seen = {}

    def once():
        seen["t"] = scrape(mport)
        return check(seen["t"])
    wait_until(once, timeout, what=what)
    return seen["t"]


METRICS_SERVER = """
    { listen = "127.0.0.1:%d";
      routes = ( { exact = "/metrics"; status = "metrics"; } ); }"""


def pids_in_log(lg):
    """The worker pids of the access log's lines ("$pid ..." first)."""
    def lines():
        try:
            return [l for l in open(lg.access_log).read().splitlines() if l.strip()]
        except FileNotFoundError:
            return []
    return {l.split()[0] for l in lines()}


class Dnsd:
    """t/dnsd.py on loopback answering NAME=127.0.0.1 for the given names."""

    def __init__(self, *names):
        self.dir = tempfile.mkdtemp(prefix="legate-dnsd-")
        args = [sys.executable, DNSD, "--exit-on-eof"] + ["%s=127.0.0.1/60" % n for n in names]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "dnsd started: %r" % line)
        self.port = int(line.split()[1])
        _track(self)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    teardown = stop


@test
def limit_zones_access_and_auth_outcomes_across_two_workers():
    d = tempfile.mkdtemp(prefix="legate-m02-")
    h = subprocess.run(["openssl", "passwd", "-apr1", "secret"], capture_output=True, timeout=30,
                       check=True).stdout.decode().strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("admin:%s\n" % h)
    with open(os.path.join(d, "jwt.secret"), "wb") as f:
        f.write(b"0123456789abcdef0123456789abcdef\n")
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  access_log = "logs/access.log";
  log_format = "$pid $status $limit_req_status";
  limit_req_zones = ( { name = "one"; key = "$remote_addr"; rate = "1r/m"; },
                      { name = "wide"; key = "$remote_addr"; rate = "10000r/s"; } );
  limit_conn_zones = ( { name = "conns"; key = "$remote_addr"; } );
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = (
        { prefix = "/one/"; proxy_pass = "app"; limit_req = { zone = "one"; nodelay = true; }; },
        { prefix = "/wide/"; proxy_pass = "app"; limit_req = { zone = "wide"; burst = 1000; nodelay = true; };
          limit_conn = { zone = "conns"; max = 100; }; },
        { prefix = "/deny/"; proxy_pass = "app"; access_rules = [ "deny all" ]; },
        { prefix = "/allow/"; proxy_pass = "app"; access_rules = [ "allow 127.0.0.0/8", "deny all" ]; },
        { prefix = "/basic/"; proxy_pass = "app"; auth_basic = "area";
          auth_basic_user_file = "%s/htpasswd"; },
        { prefix = "/jwt/"; proxy_pass = "app"; auth_jwt = "api";
          auth_jwt_secret_file = "%s/jwt.secret"; },
        { prefix = "/"; proxy_pass = "app"; }
      ); },%s
  );
};
""" % (o.address, port, d, d, METRICS_SERVER % mport)
        lg = Legate(text, workers=2)
        lg.allow_log(r"limit_req|access forbidden|auth_basic|auth_jwt")
        codes = [request(port, target="/one/a").status for _ in range(5)]
        eq(codes, [200, 429, 429, 429, 429], "1r/m: the first passes, in any worker")
        for _ in range(30):
            eq(request(port, target="/wide/a").status, 200)
        for _ in range(7):
            eq(request(port, target="/deny/a").status, 403)
        for _ in range(4):
            eq(request(port, target="/allow/a").status, 200)
        good = "Basic " + base64.b64encode(b"admin:secret").decode()
        bad = "Basic " + base64.b64encode(b"admin:wrong").decode()
        for _ in range(3):
            eq(request(port, target="/basic/a", headers=[("Authorization", good)]).status, 200)
        eq(request(port, target="/basic/a", headers=[("Authorization", bad)]).status, 401)
        eq(request(port, target="/basic/a").status, 401)

        def b64u(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        si = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
            b64u(json.dumps({"sub": "u"}).encode())
        tok = si + "." + b64u(hmac.new(b"0123456789abcdef0123456789abcdef", si.encode(),
                                       hashlib.sha256).digest())
        for _ in range(2):
            eq(request(port, target="/jwt/a", headers=[("Authorization", "Bearer " + tok)]).status, 200)
        eq(request(port, target="/jwt/a", headers=[("Authorization", "Bearer x.y.z")]).status, 401)

        want = {
            ("legate_limit_req_total", (("zone", "one"), ("result", "PASSED"))): 1,
            ("legate_limit_req_total", (("zone", "one"), ("result", "REJECTED"))): 4,
            ("legate_limit_req_total", (("zone", "wide"), ("result", "PASSED"))): 30,
            ("legate_limit_req_total", (("zone", "wide"), ("result", "REJECTED"))): 0,
            ("legate_limit_conn_total", (("zone", "conns"), ("result", "PASSED"))): 30,
            ("legate_access_rules_total", (("result", "denied"),)): 7,
            ("legate_access_rules_total", (("result", "allowed"),)): 4,
            ("legate_auth_total", (("method", "basic"), ("result", "passed"))): 3,
            ("legate_auth_total", (("method", "basic"), ("result", "rejected"))): 2,
            ("legate_auth_total", (("method", "jwt"), ("result", "passed"))): 2,
            ("legate_auth_total", (("method", "jwt"), ("result", "rejected"))): 1,
        }

        def counted(t):
            return all(value(t, n, **dict(l)) == v for (n, l), v in want.items())
        got = []
        try:
            settle(mport, lambda t: got.append(t) or counted(t), "the outcomes counted per zone")
        except Exception:
            t = got[-1] if got else ""
            fail("got %r" % {(n, l): value(t, n, **dict(l)) for (n, l) in want})
        wait_until(lambda: len(pids_in_log(lg)) == 2, 10, what="both workers served some of it")


@test
def auth_request_passed_rejected_failed():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; auth = { servers = ( "%s" ); };
                gone = { servers = ( "127.0.0.1:%d" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = (
        { prefix = "/yes/"; proxy_pass = "app"; auth_request = "auth"; auth_request_uri = "/check"; },
        { prefix = "/no/"; proxy_pass = "app"; auth_request = "auth";
          auth_request_uri = "/check?status=403"; },
        { prefix = "/down/"; proxy_pass = "app"; auth_request = "gone"; auth_request_uri = "/check"; }
      ); },%s
  );
};
""" % (o.address, o.address, free_port(), port, METRICS_SERVER % mport)
        lg = Legate(text, workers=2)
        lg.allow_log(r"auth_request|connect\(\) failed|no live")
        for _ in range(4):
            eq(request(port, target="/yes/a").status, 200)
        for _ in range(3):
            eq(request(port, target="/no/a").status, 403)
        for _ in range(2):
            eq(request(port, target="/down/a").status, 500)

        def n(t, r):
            return value(t, "legate_auth_total", method="request", result=r)
        settle(mport, lambda t: (n(t, "passed"), n(t, "rejected"), n(t, "failed")) == (4, 3, 2),
               "auth_request outcomes")


@test
def compression_bytes_in_and_out_per_coding():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/"; proxy_pass = "app"; gzip = true; gzip_types = "text/plain"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        Legate(text, workers=2)
        out = 0
        for i in range(6):
            r = request(port, target="/z%d?size=%d&ctype=text/plain" % (i, 4000 + i),
                        headers=[("Accept-Encoding", "gzip")])
            eq((r.status, r.headers.get("Content-Encoding")), (200, "gzip"))
            out += len(r.body)
        size_in = sum(4000 + i for i in range(6))
        t = settle(mport, lambda t: value(t, "legate_compression_bytes_in_total", coding="gzip") == size_in,
                   "the bytes before compression")
        eq(value(t, "legate_compression_bytes_out_total", coding="gzip"), float(out),
           "the bytes after: what the clients got")
        ok(out < size_in, "compressed")
        eq(value(t, "legate_compression_bytes_in_total", coding="br"), 0.0)


def socks_session(sport, host, port, methods=b"\x00", auth=None):
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    try:
        s.sendall(b"\x05" + bytes([len(methods)]) + methods)
        ver, method = s.recv(2)
        if method == 0xff:
            return None
        if method == 2:
            u, p = auth
            s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
            r = s.recv(2)
            if len(r) < 2 or r[1] != 0:
                return "auth"
        hb = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(hb)]) + hb + port.to_bytes(2, "big"))
        rep = s.recv(10)
        if len(rep) < 2 or rep[1] != 0:
            return rep[1] if len(rep) > 1 else -1
        s.sendall(b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            k = s.recv(65536)
            if not k:
                break
            data += k
        return data.split(b" ", 2)[1].decode()
    finally:
        s.close()


@test
def forward_proxy_requests_tunnels_rules_dns_and_socks():
    with Origin("o") as o:
        dns = Dnsd("origin.test", "blocked.test")
        port, sport, mport = free_port(), free_port(), free_port()
        text = """
http = {
  access_log = "logs/access.log";
  log_format = "$pid $status";
  servers = (
    { listen = ( "127.0.0.1:%d", { address = "127.0.0.1:%d"; protocol = "socks5"; } );
      forward = { resolvers = [ "127.0.0.1:%d" ]; allow_private = true;
                  block_domains = [ "blocked.test" ]; connect_ports = "%d";
                  keepalive = 0;    # no idle destination connections: every request looks up
                  url_filters = [ "/forbidden" ]; };
      routes = ( ); },%s
  );
};
""" % (port, sport, dns.port, o.port, METRICS_SERVER % mport)
        lg = Legate(text, workers=2)
        lg.allow_log(r"forward proxy|cannot resolve|refused")
        px = ("-x", "http://127.0.0.1:%d" % port)
        for i in range(10):
            st, _, _ = curl(*px, "http://origin.test:%d/r%d" % (o.port, i))
            eq(st, 200)
        for _ in range(3):
            st, _, _ = curl(*px, "http://blocked.test:%d/" % o.port)
            eq(st, 403)
        st, _, _ = curl(*px, "http://origin.test:%d/forbidden" % o.port)
        eq(st, 403)
        st, _, _ = curl(*px, "http://nowhere.test:%d/" % o.port)
        eq(st, 502, "a name that does not resolve")
        for _ in range(2):
            st, _, _ = curl("-p", *px, "http://origin.test:%d/t" % o.port)
            eq(st, 200, "through a CONNECT tunnel")
        st, _, _ = curl("-p", *px, "http://origin.test:%d/t" % (o.port + 1), check=False)
        ok(st != 200, "CONNECT to a port not in connect_ports refused")
        for _ in range(3):
            eq(socks_session(sport, "origin.test", o.port), "200")
        ok(socks_session(sport, "blocked.test", o.port) not in (None, "200"), "a SOCKS5 refusal")
        s = socket.create_connection(("127.0.0.1", sport), timeout=10)
        s.sendall(b"\x04\x01\x00\x50")         # SOCKS4: not SOCKS5
        s.settimeout(10)
        eq(s.recv(10), b"", "closed")
        s.close()

        want = [
            ("legate_forward_requests_total", dict(kind="request", outcome="passed"), 10),
            ("legate_forward_requests_total", dict(kind="request", outcome="refused"), 4),
            ("legate_forward_requests_total", dict(kind="request", outcome="failed"), 1),
            ("legate_forward_requests_total", dict(kind="tunnel", outcome="passed"), 5),
            ("legate_forward_requests_total", dict(kind="tunnel", outcome="refused"), 2),
            ("legate_forward_refused_total", dict(rule="block_domains"), 4),
            ("legate_forward_refused_total", dict(rule="url_filters"), 1),
            ("legate_forward_refused_total", dict(rule="connect_ports"), 1),
            ("legate_forward_refused_total", dict(rule="other"), 0),
            ("legate_socks_sessions_total", dict(result="tunnel"), 3),
            ("legate_socks_sessions_total", dict(result="refused"), 1),
            ("legate_socks_sessions_total", dict(result="bad_handshake"), 1),
            ("legate_dns_lookups_total", dict(result="failed"), 1),
            # every request that got past the rules looked its name up: the
            # refused ones never did (refused before resolving)
            ("legate_dns_lookups_total", dict(result="ok"), 10 + 2 + 3),
        ]
        got = []

        def counted(t):
            got.append([(n, l, value(t, n, **l)) for n, l, _ in want])
            return all(value(t, n, **l) == v for n, l, v in want)
        try:
            settle(mport, counted, "the forward proxy's outcomes")
        except Exception:
            fail("got %r" % (got[-1] if got else None))
        wait_until(lambda: len(pids_in_log(lg)) == 2, 10, what="both workers served some of it")


@test
def a_flood_of_client_values_adds_no_series():
    with Origin("o") as o:
        dns = Dnsd("origin.test")
        port, mport = free_port(), free_port()
        text = """
http = {
  limit_req_zones = ( { name = "z"; key = "$http_x_key"; rate = "10000r/s"; } );
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/"; proxy_pass = "app"; limit_req = { zone = "z"; burst = 1000; nodelay = true; };
                   gzip = true; gzip_types = "text/plain"; } ); },
    { listen = "127.0.0.1:%d";
      forward = { resolvers = [ "127.0.0.1:%d" ]; allow_private = true; };
      routes = ( ); },%s
  );
};
""" % (o.address, port, free_port(), dns.port, METRICS_SERVER % mport)
        fport = int(re.findall(r'listen = "127\.0\.0\.1:(\d+)";\n      forward', text)[0])
        Legate(text, workers=1)
        eq(request(port, target="/a", headers=[("X-Key", "k")]).status, 200)
        eq(request(port, method="BREW", target="/a", headers=[("X-Key", "k")]).status, 200)
        before = series(settle(mport, lambda t: value(t, "legate_limit_req_total", zone="z",
                                                      result="PASSED") == 2, "two counted"))
        for i in range(150):
            eq(request(port, method="M%d" % i if i % 3 == 0 else "GET",
                       target="/p%d?ctype=text/plain" % i, host="h%d.example" % i,
                       headers=[("X-Key", "key%d" % i), ("Accept-Encoding", "gzip, x%d" % i),
                                ("Authorization", "Basic " + base64.b64encode(b"u%d:p" % i).decode())]
                       ).status, 200)
        for i in range(20):
            st, _, _ = curl("-x", "http://127.0.0.1:%d" % fport, "http://n%d.test:%d/" % (i, o.port))
            eq(st, 502, "not in the zone: does not resolve")
        t = settle(mport, lambda t: value(t, "legate_limit_req_total", zone="z", result="PASSED") == 152
                   and value(t, "legate_dns_lookups_total", result="failed") == 20, "the flood counted")
        eq(series(t), before, "the same series: none named by a client")


@test
def upstream_health_checks_reuse_idle_and_the_queue():
    with Origin("a") as a:
        dead = "127.0.0.1:%d" % free_port()
        port, mport, qport = free_port(), free_port(), free_port()
        text = """
http = {
  upstreams = {
    app = { servers = ( "%s", "%s" ); max_fails = 0; keepalive = 8;
            health_check = { interval = "100ms"; timeout = "500ms"; path = "/health"; }; };
    one = { servers = ( { address = "%s"; max_conns = 1; } ); queue = 1; queue_timeout = "3s"; };
  };
  servers = (
    { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); },
    { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "one"; } ); },%s
  );
};
""" % (a.address, dead, a.address, port, qport, METRICS_SERVER % mport)
        lg = Legate(text, workers=1)
        lg.allow_log(r"health check|connect\(\) failed|is down|max_conns|queue_timeout")
        lab = dict(upstream="app", server=a.address)
        deadlab = dict(upstream="app", server=dead)
        settle(mport, lambda t: (value(t, "legate_upstream_health_checks_total", result="pass", **lab) or 0) >= 2
               and (value(t, "legate_upstream_health_checks_total", result="fail", **deadlab) or 0) >= 2
               and value(t, "legate_upstream_server_up", **deadlab) == 0,
               "checks pass on the live server and fail on the dead one")
        t = scrape(mport)
        eq(value(t, "legate_upstream_health_checks_total", result="fail", **lab), 0.0)
        eq(value(t, "legate_upstream_health_checks_total", result="pass", **deadlab), 0.0)
        eq(value(t, "legate_upstream_server_state", state="down", **deadlab), 1.0)
        eq(value(t, "legate_upstream_server_state", state="up", **lab), 1.0)

        # keep-alive towards the origin: one connect, then the pool
        with Conn(port) as c:
            for i in range(12):
                eq(c.request("GET", "/k%d" % i).status, 200)
        t = settle(mport, lambda t: (value(t, "legate_upstream_connects_total", **lab) or 0)
                   + (value(t, "legate_upstream_reused_connections_total", **lab) or 0) == 12,
                   "every request on a new or a pooled connection")
        ok(value(t, "legate_upstream_reused_connections_total", **lab) >= 10, "reused")
        eq(value(t, "legate_upstream_idle_connections", **lab), 1.0, "one waits in the pool")
        # a reload: the old worker's pool goes with it, the new one fills its own
        lg.reload(text.replace("servers = (\n", "servers = (\n    # reloaded\n", 1))
        eq(request(port, target="/after").status, 200)
        settle(mport, lambda t: len(lg.workers()) == 1
               and value(t, "legate_upstream_idle_connections", **lab) == 1
               and value(t, "legate_upstream_connects_total", **lab)
               + value(t, "legate_upstream_reused_connections_total", **lab) == 13,
               "the old worker's idle connection gone from the gauge")

        # max_conns 1, queue 1: one in flight, one queued (times out), one refused
        slow = threading.Thread(target=request, args=(qport,),
                                kwargs={"target": "/s?delay=6000", "timeout": 20}, daemon=True)
        slow.start()
        wait_until(lambda: a.stats()["active"] >= 1, 10, what="the slow request in flight")
        queued = []
        q = threading.Thread(target=lambda: queued.append(request(qport, target="/q", timeout=20).status),
                             daemon=True)
        q.start()
        settle(mport, lambda t: value(t, "legate_upstream_queue_depth", upstream="one") == 1,
               "one waits in the queue", timeout=2.5)
        eq(request(qport, target="/full").status, 503, "the queue is full")
        q.join(20)
        eq(queued, [503], "the queued one gave up after queue_timeout")
        slow.join(20)
        t = settle(mport, lambda t: value(t, "legate_upstream_rejected_total", upstream="one",
                                          reason="queue_timeout") == 1, "the rejections")
        eq(value(t, "legate_upstream_rejected_total", upstream="one", reason="queue_full"), 1.0)
        eq(value(t, "legate_upstream_queued_total", upstream="one"), 1.0)
        eq(value(t, "legate_upstream_queue_depth", upstream="one"), 0.0)


@test
def cache_purges_and_collapsed_waits():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
cache_size = "4m";
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/"; proxy_pass = "app"; cache = true; cache_valid = "200 1m";
                   cache_purge_allow = [ "127.0.0.0/8" ]; cache_lock_timeout = "10s"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        Legate(text, workers=1)
        got = []
        ts = [threading.Thread(target=lambda: got.append(request(port, target="/slow?delay=1500",
                                                                 timeout=20).status), daemon=True)
              for _ in range(3)]
        for th in ts:
            th.start()
        for th in ts:
            th.join(20)
        eq(got, [200, 200, 200])
        eq(o.stats()["by_path"].get("/slow", 0), 1, "one fill reached the origin")
        eq(request(port, method="PURGE", target="/slow?delay=1500").status, 200)
        eq(request(port, method="PURGE", target="/never").status, 404)
        t = settle(mport, lambda t: value(t, "legate_cache_purges_total", result="purged") == 1,
                   "the purge counted")
        eq(value(t, "legate_cache_purges_total", result="not_found"), 1.0)
        eq(value(t, "legate_cache_collapsed_waits_total"), 2.0, "two waited for the first's fill")


@test
def requests_by_listener_and_protocol():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
      routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        Legate(text, workers=2)
        for _ in range(5):
            eq(curl("--http2-prior-knowledge", "http://127.0.0.1:%d/h2" % port)[0], 200)
        for _ in range(4):
            eq(request(port, target="/h11").status, 200)
        for _ in range(3):
            eq(curl("--http1.0", "http://127.0.0.1:%d/h10" % port)[0], 200)
        l = "127.0.0.1:%d" % port
        t = settle(mport, lambda t: value(t, "legate_http_requests_by_protocol_total", listener=l,
                                          protocol="HTTP/2") == 5
                   and value(t, "legate_http_requests_by_protocol_total", listener=l, protocol="HTTP/1.1") == 4
                   and value(t, "legate_http_requests_by_protocol_total", listener=l, protocol="HTTP/1.0") == 3,
                   "requests by protocol")


@test
def limit_rate_zone_responses_and_waits_kept_across_a_reload():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  limit_req_zones = ( { name = "bw"; key = "$remote_addr"; rate = "256k/s"; } );
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/"; proxy_pass = "app"; limit_rate_zone = "bw"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        lg = Legate(text, workers=2)
        r = request(port, target="/big?size=300000", timeout=30)
        eq((r.status, len(r.body)), (200, 300000))
        t = settle(mport, lambda t: value(t, "legate_limit_rate_responses_total", zone="bw") == 1
                   and (value(t, "legate_limit_rate_waits_total", zone="bw") or 0) >= 1,
                   "one response, which waited for its share")
        waits = value(t, "legate_limit_rate_waits_total", zone="bw")
        lg.reload(text.replace("servers = (\n", "servers = (\n    # reloaded\n", 1))
        eq(request(port, target="/small").status, 200)
        # the waits may still be moving in (the serving worker moves its counts
        # each second): kept means not below what was seen before
        settle(mport, lambda t: value(t, "legate_limit_rate_responses_total", zone="bw") == 2
               and value(t, "legate_limit_rate_waits_total", zone="bw") >= waits
               and re.search(r"^legate_reloads_total 1$", t, re.M) is not None,
               "the counts kept across the reload")


def ws_origin(s, peer):
    """Accepts a WebSocket handshake, then echoes bytes until EOF."""
    head = read_request_head(s)
    m = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head or b"")
    if not m:
        return
    acc = base64.b64encode(hashlib.sha1(m.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        x = s.recv(65536)
        if not x:
            return
        s.sendall(x)


@test
def websocket_tunnels_are_counted():
    ws = ScriptedServer(ws_origin)
    port, mport = free_port(), free_port()
    text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (ws.address, port, METRICS_SERVER % mport)
    Legate(text, workers=2)
    for i in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                x = c.recv(4096)
                ok(x, "closed before the 101")
                buf += x
            ok(buf.startswith(b"HTTP/1.1 101"), "switched: %r" % buf[:60])
            rest = buf.split(b"\r\n\r\n", 1)[1]
            c.sendall(b"ping%d" % i)
            while len(rest) < 5:
                x = c.recv(4096)
                ok(x, "closed before the echo")
                rest += x
            eq(rest, b"ping%d" % i, "the tunnel echoes")
    settle(mport, lambda t: value(t, "legate_tunnels_total", kind="upgrade") == 3
           and value(t, "legate_tunnels_total", kind="connect") == 0, "three WebSocket tunnels")


@test
def requests_by_method_class_and_listed_status_codes():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
metrics_status_codes = [ "404", "503" ];
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d"; server_name = "www.example";
      routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s,
    { listen = "127.0.0.1:%d";
      routes = ( { exact = "/status.json"; status = "json"; } ); }
  );
};
""" % (o.address, port, METRICS_SERVER % mport, free_port())
        jport = int(re.findall(r'listen = "127\.0\.0\.1:(\d+)";\n      routes = \( \{ exact = "/status.json"', text)[0])
        lg = Legate(text, workers=2)
        for _ in range(6):
            eq(request(port, target="/a").status, 200)
        for _ in range(2):
            eq(request(port, method="HEAD", target="/a").status, 200)
        for _ in range(3):
            eq(request(port, method="POST", target="/a", body=b"x").status, 200)
        for _ in range(4):
            eq(request(port, target="/a?status=404").status, 404)
        for _ in range(2):
            eq(request(port, target="/a?status=403").status, 403)
        eq(request(port, target="/a?status=503").status, 503)
        eq(request(port, method="BREW", target="/a").status, 200)

        def n(t, m, c):
            return value(t, "legate_http_requests_total", server="www.example", route="/",
                         method_class=m, code=c)
        want = {("GET", "2xx"): 6, ("GET", "404"): 4, ("GET", "4xx"): 2, ("GET", "503"): 1,
                ("GET", "5xx"): 0, ("HEAD", "2xx"): 2, ("POST", "2xx"): 3, ("other", "2xx"): 1}
        t = settle(mport, lambda t: all(n(t, m, c) == v for (m, c), v in want.items()),
                   "by method and code")
        eq(n(t, "PUT", "2xx"), None, "a method that never came has no lines")
        st, _, body = curl("http://127.0.0.1:%d/status.json" % jport)
        d = json.loads(body)
        www = [x for x in d["series"] if x["server"] == "www.example" and x["route"] == "/"]
        eq([(x["requests"], x["4xx"], x["5xx"]) for x in www], [(19, 6, 1)],
           "status.json: listed codes in their class")
        # a reload without 404 in the list: those counts join 4xx
        lg.reload(text.replace('[ "404", "503" ]', '[ "503" ]'))
        t = settle(mport, lambda t: n(t, "GET", "4xx") == 6 and n(t, "GET", "404") is None
                   and n(t, "GET", "503") == 1, "404 folded into 4xx")
        for bad, why in (('[ "99" ]', "not a status code"), ('[ "404", "404" ]', "listed once"),
                         ("[ %s ]" % ", ".join('"%d"' % c for c in range(400, 409)), "at most 8")):
            rc, err = check_config(text.replace('[ "404", "503" ]', bad))
            ok(rc != 0, "refused: %s" % bad)
            contains(err, "metrics_status_codes")
            contains(err, why)


def raw_exchange(port, data):
    """Send data on a new connection, read to EOF: the bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        got = b""
        while True:
            x = c.recv(65536)
            if not x:
                return got
            got += x


@test
def request_and_response_size_histograms():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d"; server_name = "sizes";
      routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        Legate(text, workers=2)
        sent, got, big = 0, 0, 0
        for i in range(5):
            size = 50000 if i < 3 else 10
            body = b"x" * (2000 if i == 0 else 0)
            req = (b"POST /s?size=%d HTTP/1.1\r\nHost: sizes\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\n\r\n" % (size, len(body))) + body
            rsp = raw_exchange(port, req)
            ok(rsp.startswith(b"HTTP/1.1 200"), "answered: %r" % rsp[:40])
            sent += len(req)
            got += len(rsp)
            big += len(rsp) > 10000
        eq(big, 3)
        lab = dict(server="sizes", route="/")
        t = settle(mport, lambda t: value(t, "legate_http_response_size_bytes_count", **lab) == 5,
                   "five responses")
        eq(value(t, "legate_http_response_size_bytes_sum", **lab), float(got), "the bytes the client got")
        eq(value(t, "legate_http_request_size_bytes_sum", **lab), float(sent), "the bytes it sent")
        eq(value(t, "legate_http_response_size_bytes_bucket", le="1000", **lab), 2.0)
        eq(value(t, "legate_http_response_size_bytes_bucket", le="10000", **lab), 2.0)
        eq(value(t, "legate_http_response_size_bytes_bucket", le="100000", **lab), 5.0)
        eq(value(t, "legate_http_request_size_bytes_bucket", le="1000", **lab), 4.0)
        eq(value(t, "legate_http_request_size_bytes_bucket", le="10000", **lab), 5.0)
        eq(value(t, "legate_http_request_size_bytes_bucket", le="+Inf", **lab), 5.0)


@test
def upstream_server_state_up_ejected_down():
    with Origin("a") as a:
        dead = "127.0.0.1:%d" % free_port()
        port, mport = free_port(), free_port()
        text = """
http = {
  upstreams = { app = { servers = ( "%s", "%s" ); max_fails = 1; fail_timeout = "30s"; }; };
  servers = (
    { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (a.address, dead, port, METRICS_SERVER % mport)
        lg = Legate(text, workers=1)
        lg.allow_log(r"connect\(\) failed|upstream|ejected|max_fails")
        for i in range(4):
            eq(request(port, target="/e%d" % i).status, 200, "retried on the live one")

        def state(t, srv, st):
            return value(t, "legate_upstream_server_state", upstream="app", server=srv, state=st)
        t = settle(mport, lambda t: state(t, dead, "ejected") == 1, "the dead one ejected")
        eq((state(t, dead, "up"), state(t, dead, "down")), (0.0, 0.0))
        eq((state(t, a.address, "up"), state(t, a.address, "ejected")), (1.0, 0.0))
        eq(value(t, "legate_upstream_server_up", upstream="app", server=dead), 0.0)


@test
def access_log_sample_keeps_one_line_in_n():
    with Origin("o") as o:
        port = free_port()
        text = """
http = {
  access_log = "logs/access.log";
  log_format = "$status $uri";
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/s/"; proxy_pass = "app"; access_log_sample = 5; },
                 { prefix = "/"; proxy_pass = "app"; } ); }
  );
};
""" % (o.address, port)
        lg = Legate(text, workers=1)
        for i in range(23):
            eq(request(port, target="/s/%d" % i).status, 200)
        eq(request(port, target="/all").status, 200)

        def lines():
            try:
                return [l for l in open(lg.access_log).read().splitlines() if l.strip()]
            except FileNotFoundError:
                return []
        wait_until(lambda: "200 /all" in lines(), 10, what="the unsampled line")
        eq([l for l in lines() if l.startswith("200 /s/")],
           ["200 /s/%d" % i for i in (0, 5, 10, 15, 20)], "the first of every five")
        rc, err = check_config(text.replace("access_log_sample = 5", "access_log_sample = 0"))
        ok(rc != 0, "0 is refused")
        contains(err, "access_log_sample")


@test
def upstream_connect_errors_timeouts_and_the_response_time():
    # a listener whose accept queue is full: further SYNs are dropped, so
    # connect() hangs until proxy_connect_timeout (as b05_timeouts.py)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    full = "127.0.0.1:%d" % lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(2):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", lsock.getsockname()[1]))
            fillers.append(f)
        with Origin("o") as o:
            dead = "127.0.0.1:%d" % free_port()
            port, mport = free_port(), free_port()
            text = """
http = {
  upstreams = { app = { servers = ( "%s" ); }; dead = { servers = ( "%s" ); };
                slow = { servers = ( "%s" ); }; full = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/dead/"; proxy_pass = "dead"; },
                 { prefix = "/slow/"; proxy_pass = "slow"; proxy_read_timeout = "1s"; },
                 { prefix = "/full/"; proxy_pass = "full"; proxy_connect_timeout = "1s"; },
                 { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (o.address, dead, o.address, full, port, METRICS_SERVER % mport)
            lg = Legate(text, workers=2)
            lg.allow_log(r"connect\(\) (to upstream .* )?failed|timed out|upstream")
            for i in range(5):
                eq(request(port, target="/dead/%d" % i).status, 502, "refused port")
            eq(request(port, target="/slow/x?hang=1", timeout=30).status, 504, "read timeout")
            eq(request(port, target="/full/x", timeout=30).status, 504, "connect timeout")
            for i in range(3):
                eq(request(port, target="/a%d" % i).status, 200)
            for i in range(2):      # the head at once, the body over >= 600 ms
                r = request(port, target="/d%d?size=300&chunk=100&drip=300" % i, timeout=30)
                eq((r.status, len(r.body)), (200, 300))

            def err(t, up, srv):
                return value(t, "legate_upstream_connect_errors_total", upstream=up, server=srv)

            def tmo(t, up, srv, ph):
                return value(t, "legate_upstream_timeouts_total", upstream=up, server=srv, phase=ph)

            def cnt(t, fam, up="app", srv=o.address):
                return value(t, fam + "_count", upstream=up, server=srv)
            t = settle(mport, lambda t: err(t, "dead", dead) == 5 and tmo(t, "slow", o.address, "read") == 1
                       and tmo(t, "full", full, "connect") == 1
                       and cnt(t, "legate_upstream_response_duration_seconds") == 5,
                       "5 connect errors, a read and a connect timeout, 5 responses")
            eq([tmo(t, "dead", dead, ph) for ph in ("connect", "send", "read")], [0, 0, 0],
               "a refusal is no timeout")
            eq(err(t, "full", full), 0, "a timeout is no connect error")
            eq([tmo(t, "slow", o.address, ph) for ph in ("connect", "send")], [0, 0])
            eq((err(t, "app", o.address), tmo(t, "app", o.address, "read")), (0, 0))
            eq(cnt(t, "legate_upstream_header_duration_seconds"), 5, "the same requests")
            rsp = "legate_upstream_response_duration_seconds"
            eq(value(t, rsp + "_bucket", upstream="app", server=o.address, le="+Inf"), 5)
            le05 = value(t, rsp + "_bucket", upstream="app", server=o.address, le="0.5")
            ok(le05 is not None and le05 <= 3, "the dripped two end after 0.5 s: %r" % le05)
            hsum = value(t, "legate_upstream_header_duration_seconds_sum", upstream="app",
                         server=o.address)
            rsum = value(t, rsp + "_sum", upstream="app", server=o.address)
            ok(rsum >= 1.2 and rsum >= hsum, "response time %.3f >= 2 x 0.6 s, head %.3f" % (rsum, hsum))
            eq([cnt(t, rsp, up, srv) for up, srv in (("dead", dead), ("slow", o.address), ("full", full))],
               [0, 0, 0], "no response, no observation")
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def http_get(sock, target, close=False):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: m\r\n%s\r\n" % (
        target, "Connection: close\r\n" if close else "")).encode())


def read_response(sock):
    """One response with Content-Length from sock: its body, as text."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        x = sock.recv(65536)
        ok(x, "closed before the head")
        buf += x
    head, body = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    ok(m, "a Content-Length: %r" % head[:200])
    while len(body) < int(m.group(1)):
        x = sock.recv(65536)
        ok(x, "closed in the body")
        body += x
    return body.decode()


@test
def accept_paused_at_worker_connections_after_reclaiming_idle_ones():
    with Origin("o") as o:
        port, mport = free_port(), free_port()
        text = """
worker_connections = 3;
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); },%s
  );
};
""" % (o.address, port, METRICS_SERVER % mport)
        lg = Legate(text, workers=1)
        lg.allow_log(r"worker_connections|upstream|closed|timed out")
        lst = lambda p: {"listener": "127.0.0.1:%d" % p, "tls": "no"}   # noqa: E731
        k = socket.create_connection(("127.0.0.1", mport), timeout=20)
        held = []
        try:
            # K, kept alive, is the worker's only connection (the page is
            # live: the worker serving it adds its own counts first)
            def alone():
                http_get(k, "/metrics")
                t = read_response(k)
                return (value(t, "legate_connections_active", **lst(port)) == 0 and
                        value(t, "legate_connections_active", **lst(mport)) == 1 and
                        value(t, "legate_accept_paused_total") == 0 and t)
            wait_until(alone, 15, what="K alone")
            # K waits idle: the second busy connection takes its place
            # (reclaimed), the third finds none idle: accepting pauses
            for i in range(3):
                h = socket.create_connection(("127.0.0.1", port), timeout=20)
                held.append(h)
                http_get(h, "/h%d?hang=1" % i)
                wait_until(lambda: o.stats()["active"] >= i + 1, 15,
                           what="request %d at the origin" % i)
            ok(k.recv(100) == b"", "K was closed to make room")
            # P, a fourth, waits in the listen queue: its request does not
            # reach the origin while the worker does not accept
            p = socket.create_connection(("127.0.0.1", port), timeout=20)
            held.append(p)
            http_get(p, "/p?hang=1")
            t0 = time.monotonic()
            wait_until(lambda: time.monotonic() - t0 >= 1.5, 5, what="1.5 s")
            eq(o.stats()["by_path"].get("/p"), None, "P not taken while paused")
            # one closes: accepting resumes, takes P, and (three busy again) pauses
            held[0].close()
            wait_until(lambda: o.stats()["by_path"].get("/p") == 1, 20, what="P taken")
        finally:
            k.close()
            for h in held:
                h.close()
        t = settle(mport, lambda t: value(t, "legate_connections_active", **lst(port)) == 0,
                   "the held ones closed")
        eq(value(t, "legate_accept_paused_total"), 2, "paused, resumed for P, paused")
        secs = value(t, "legate_accept_paused_seconds_total")
        ok(secs is not None and secs >= 1.4, "the first pause lasted P's 1.5 s: %r" % secs)
        eq(value(t, "legate_connections_reclaimed_total", **lst(mport)), 1, "K reclaimed")
        eq(value(t, "legate_connections_reclaimed_total", **lst(port)), 0)


@test
def upstream_send_timeout():
    # a server that never accepts nor reads: the request body fills the
    # socket buffers and proxy_send_timeout fires
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    deaf = "127.0.0.1:%d" % lsock.getsockname()[1]
    try:
        port, mport = free_port(), free_port()
        text = """
http = {
  client_max_body_size = "256m";
  upstreams = { deaf = { servers = ( "%s" ); }; };
  servers = (
    { listen = "127.0.0.1:%d";
      routes = ( { prefix = "/"; proxy_pass = "deaf"; proxy_send_timeout = "1s";
                   proxy_read_timeout = "60s"; } ); },%s
  );
};
""" % (deaf, port, METRICS_SERVER % mport)
        lg = Legate(text, workers=1)
        lg.allow_log(r"timed out|upstream|client")
        size = 64 << 20
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        got = {}

        def reader():
            buf = b""
            try:
                while True:
                    x = c.recv(65536)
                    if not x:
                        break
                    buf += x
            except OSError:
                pass
            got["rsp"] = buf
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                if "rsp" in got:
                    break
                c.sendall(chunk)
        except OSError:
            pass                # legate answered and closed: the rest is refused
        th.join(30)
        c.close()
        # (a reset for the unread body may overtake the answer on a loaded
        # machine: what arrived must be the 504; the counter is the point)
        rsp = got.get("rsp", b"")
        ok(rsp == b"" or rsp.startswith(b"HTTP/1.1 504"), "504: %r" % rsp[:40])
        t = settle(mport, lambda t: value(t, "legate_upstream_timeouts_total", upstream="deaf",
                                          server=deaf, phase="send") == 1, "a send timeout")
        eq([value(t, "legate_upstream_timeouts_total", upstream="deaf", server=deaf, phase=ph)
            for ph in ("connect", "read")], [0, 0])
    finally:
        lsock.close()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The fleet's Redis over TLS (issue 19: "a Redis with authentication and
TLS is supported"): a real redis-server that listens on a TLS port only
(--port 0 --tls-port) with requirepass, and legate nodes that reach it
with redis = "rediss://IP:port".  PURGE fan-out and a cluster rate limit
work across two nodes; a wrong CA or a wrong name is a clear verification
error and the nodes serve on their own; tls-auth-clients works with a
client certificate and fails clearly without one; a restarted Redis is
reconnected to; a peer that accepts and never answers the handshake is
bounded by redis_connect_timeout; and `legate -t` names the line of each
mistake in the TLS settings.  A plain Redis on a unix socket checks that
the one code path redis.c has for every kind of socket works there too."""
import atexit
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
from redis_fixture import Redis, main_unless_missing, metric, prerequisites, timed, wait_subscribed, xc  # noqa: E402,F401

HERE = os.path.dirname(os.path.abspath(__file__))
MKCERT = os.path.join(HERE, "..", "..", "scripts", "mkcert")
_certs = {}
PASSWORD = "tls-s3cret"
P = "?hdr=Cache-Control:max-age=600"


def tls_prerequisites():
    """None: go; else why the whole file is skipped."""
    if shutil.which("openssl") is None:
        return "openssl not installed"
    return prerequisites()


@atexit.register
def _remove_certs():
    for d in _certs.values():
        shutil.rmtree(d, ignore_errors=True)


def certs(which="main"):
    """A CA with localhost / 127.0.0.1 server and client certificates
    (scripts/mkcert); "other" is a second, unrelated CA."""
    if which not in _certs:
        d = tempfile.mkdtemp(prefix="legate-rtls-%s-" % which)
        subprocess.run(["sh", MKCERT, d], check=True, capture_output=True, timeout=120)
        _certs[which] = d
    return _certs[which]


def TlsRedis(auth_clients=False, password=PASSWORD):
    """A redis-server of its own on a TLS port only, with a password."""
    return Redis(password=password, tls=certs(), auth_clients=auth_clients)


class SilentListener:
    """Accepts TCP connections and never says a word (a TLS handshake that
    never completes); counts what it accepted."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stopped = False
        _track(self)
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(s)     # kept open, never written to

    def teardown(self):
        self.stopped = True
        self.th.join(5)
        for s in self.accepted:
            s.close()
        self.sock.close()


def node_conf(port, o, redis_url, node, cluster_extra="", http_extra="", route_extra="",
              password=PASSWORD, ca=True, timeout="300ms"):
    lines = ['redis = "%s";' % redis_url, 'node = "%s";' % node, 'redis_timeout = "%s";' % timeout]
    if password:
        lines.append('redis_password = "%s";' % password)
    if ca:
        lines.append('redis_tls_ca = "%s/ca.pem";' % certs())
    return """
error_log_level = "info";
cache_size = "4m";
cluster = { %s %s };
http = {
    log_format = "$request_method $request_uri $status $cache_status";
    upstreams = { app = { servers = ( "%s" ); }; };
    %s
    servers = ( { listen = "127.0.0.1:%d";
        routes = ( { prefix = "/metrics"; status = "metrics"; },
                   { prefix = "/"; proxy_pass = "app"; cache = true;
                     cache_purge_allow = [ "127.0.0.0/8" ]; %s } ); } );
};
""" % (" ".join(lines), cluster_extra, o.address, http_extra, port, route_extra)


def node(o, redis_url, name, workers=1, **kw):
    port = free_port()
    lg = Legate(node_conf(port, o, redis_url, name, **kw), workers=workers)
    lg.allow_log(r"cluster: ")      # warnings are the point of some cases
    return lg, port


def purge(port, path):
    r, took = timed(lambda: request(port, method="PURGE", target=path))
    ok(r.status in (200, 404), "PURGE %s: %d (404: it was not cached here)" % (path, r.status))
    return r, took


def local_only(lg, port, what):
    """The node serves and purges on its own, at once."""
    r, took = timed(lambda: request(port, target="/alone" + P))
    eq(r.status, 200, "%s: a GET is served" % what)
    ok(took < 1.0, "%s: the GET took %.3fs" % (what, took))
    r, took = purge(port, "/alone" + P)
    eq((r.headers.get("X-Purge-Nodes"), r.headers.get("X-Purge-Cluster")), ("1", "local-only"), what)
    ok(took < 1.0, "%s: the PURGE took %.3fs" % (what, took))
    # (polled: each worker makes its page at most every 100 ms, and the
    # other worker's may be that old)
    wait_until(lambda: metric(port, "legate_cluster_redis_up") == 0, 3, what="%s: redis_up 0" % what)
    ok(lg.alive(), "%s: legate still runs" % what)


@test
def config_errors_name_the_line():
    c = certs()
    d = tempfile.mkdtemp(prefix="legate-rtls-t-")
    try:
        notpem = os.path.join(d, "not.pem")
        with open(notpem, "w") as f:
            f.write("this is not a certificate\n")
        http = '\nhttp = { servers = ( { listen = "127.0.0.1:1"; } ); };\n'
        bad = [
            # (the cluster section, one setting a line; the line the error names; what it says)
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_cert = "%s/client.pem";' % c], 3,
             r"'redis_tls_cert' and 'redis_tls_key' go together"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_key = "%s/client.key";' % c], 3,
             r"'redis_tls_cert' and 'redis_tls_key' go together"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_ca = "%s/missing.pem";' % d], 3,
             r"cannot read 'redis_tls_ca' \".*missing\.pem\": No such file"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_cert = "%s/client.pem";' % c,
              'redis_tls_key = "%s/nokey.key";' % d], 4, r"cannot read 'redis_tls_key'"),
            (['redis = "127.0.0.1:6379";', 'redis_tls_ca = "%s/ca.pem";' % c], 3,
             r"'redis_tls_ca' is for TLS to Redis, and 'redis' is not \"rediss://IP:port\""),
            (['redis = "unix:/run/redis.sock";', 'redis_tls_verify = false;'], 3,
             r"'redis_tls_verify' is for TLS to Redis"),
            (['redis = "rediss://localhost:6380";'], 2, r"must name an IP address"),
            (['redis = "rediss://127.0.0.1";'], 2, r"'redis' must be IP:port .*rediss://IP:port"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_name = "";'], 3,
             r"'redis_tls_name' must not be empty"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_name = "%s";' % ("a" * 254)], 3,
             r"'redis_tls_name' must be a host name"),
            # read by the master (net/tls.c): the line of the cluster group
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_ca = "%s";' % notpem], 1,
             r"cannot load 'redis_tls_ca'"),
            (['redis = "rediss://127.0.0.1:6380";', 'redis_tls_cert = "%s/client.pem";' % c,
              'redis_tls_key = "%s/server-ecdsa.key";' % c], 1,
             r"cannot use 'redis_tls_cert' .* with 'redis_tls_key'"),
        ]
        for lines, line, want in bad:
            text = "cluster = {\n" + "\n".join(lines) + "\n};" + http
            rc, err = check_config(text)
            ok(rc != 0, "refused: %r" % lines)
            ok(re.search(r"legate\.conf:%d: .*%s" % (line, want), err),
               "%r -> line %d %r, got %r" % (lines, line, want, err))
        good = ('cluster = { redis = "rediss://127.0.0.1:6380"; redis_tls_ca = "%s/ca.pem";\n'
                'redis_tls_name = "localhost"; redis_tls_cert = "%s/client.pem";\n'
                'redis_tls_key = "%s/client.key"; redis_password = "x"; };' % (c, c, c)) + http
        rc, err = check_config(good)
        eq(rc, 0, "a good TLS cluster section passes: %s" % err)
        rc, err = check_config('cluster = { redis = "rediss://127.0.0.1:6380"; redis_tls_verify = false; };'
                               + http)
        eq(rc, 0, "no CA needed without verification: %s" % err)
        # -T writes the TLS settings back, and that loads again
        prefix = tempfile.mkdtemp(prefix="legate-rtls-dump-", dir=d)
        path = os.path.join(prefix, "legate.conf")
        with open(path, "w") as f:
            f.write(good)
        os.makedirs(os.path.join(prefix, "logs"))
        rc, dump, err = run_legate(["-T", "-p", prefix, "-c", path], prefix=prefix)
        eq(rc, 0, err)
        for want in ('redis = "rediss://127.0.0.1:6380";', 'redis_tls_ca = "%s/ca.pem";' % c,
                     'redis_tls_name = "localhost";', 'redis_tls_cert = "%s/client.pem";' % c,
                     'redis_tls_key = "%s/client.key";' % c, "redis_tls_verify = true;"):
            contains(dump, want)
        with open(path, "w") as f:
            f.write(dump)
        rc, dump2, err = run_legate(["-T", "-p", prefix, "-c", path], prefix=prefix)
        eq(rc, 0, err)
        eq(dump2.split("\n", 2)[2], dump.split("\n", 2)[2], "the dump of the dump (after its header)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


RATE_ZONE = 'limit_req_zones = ( { name = "api"; key = "$http_x_key"; rate = "6r/m"; cluster = true; } );'
RATE_RULE = 'limit_req = { zone = "api"; burst = 2; nodelay = true; };'


@test(timeout=150)
def purge_and_rate_limit_over_tls():
    redis = TlsRedis()
    o = Origin("o")
    # (a generous budget: a lease late on a loaded machine would count locally)
    nodes = [node(o, redis.url, "n%d" % i, http_extra=RATE_ZONE, route_extra=RATE_RULE, timeout="3s")
             for i in (1, 2)]
    wait_subscribed(nodes)
    (la, a), (lb, b) = nodes
    la.wait_log(r"cluster: redis commands connection to rediss://127\.0\.0\.1:\d+ ready", 10)
    # PURGE fan-out: both nodes applied it, and the other one dropped its copy
    path = "/obj" + P
    for lg, port in nodes:
        request(port, target=path)
        eq(xc(request(port, target=path)), "HIT", "cached on %d" % port)
    r, took = purge(a, path)
    eq(r.headers.get("X-Purge-Nodes"), "2", "two nodes applied the purge")
    ok(r.headers.get("X-Purge-Cluster") is None, "not local-only")
    wait_until(lambda: xc(request(b, target=path)) == "MISS", 5, what="purged on the other node")
    # the cluster rate limit: 6 r/m, burst 2 -- three requests for the whole
    # fleet in this minute, whichever node they reach
    passed = refused = 0
    for port in (a, a, a, b, b):
        st = request(port, target="/rl", headers=[("X-Key", "k1")]).status
        ok(st in (200, 429, 503), "a pass or a refusal, got %d" % st)
        passed += st == 200
        refused += st != 200
    eq((passed, refused), (3, 2), "the fleet shares one limit (each node alone would pass 3)")
    contains(redis.cli("KEYS", "legate:rl:api:*"), "legate:rl:api:k1", "the state is in redis")
    for lg, port in nodes:
        eq(metric(port, "legate_cluster_degraded_total"), 0, "nothing done locally on %d" % port)


@test(timeout=150)
def wrong_ca_or_name_is_a_clear_error_and_the_node_serves_alone():
    redis = TlsRedis()
    o = Origin("o")
    other = certs("other")
    la, a = node(o, redis.url, "wrongca", cluster_extra='redis_tls_ca = "%s/ca.pem";' % other, ca=False)
    la.wait_log(r"\[warn\].*cluster: TLS to redis at rediss://127\.0\.0\.1:\d+ failed: its certificate "
                r"did not verify: (unable to get local issuer certificate|self.signed|certificate signature)",
                15)
    local_only(la, a, "wrong CA")
    lb, b = node(o, redis.url, "wrongname", cluster_extra='redis_tls_name = "wrong.example";')
    lb.wait_log(r"\[warn\].*cluster: TLS to redis at rediss://\S+ failed: its certificate did not verify: "
                r"hostname mismatch", 15)
    local_only(lb, b, "wrong name")
    # the right name, and verification off with the wrong CA: both connect
    lc, c = node(o, redis.url, "rightname", cluster_extra='redis_tls_name = "localhost";')
    ld, d = node(o, redis.url, "noverify", cluster_extra='redis_tls_verify = false;', ca=False)
    wait_subscribed([(lc, c), (ld, d)])
    eq(purge(c, "/x")[0].headers.get("X-Purge-Nodes"), "2")
    # still refused, still serving, after several retries
    wait_until(lambda: len(re.findall(r"cluster: TLS to redis", la.log_text())) >= 2, 15,
               what="the wrong-CA node keeps retrying")
    local_only(la, a, "wrong CA, later")


@test(timeout=150)
def client_certificate_for_tls_auth_clients():
    redis = TlsRedis(auth_clients=True)
    o = Origin("o")
    c = certs()
    lw, w = node(o, redis.url, "withcert", cluster_extra='redis_tls_cert = "%s/client.pem"; '
                 'redis_tls_key = "%s/client.key";' % (c, c))
    wait_subscribed([(lw, w)])
    r, _ = purge(w, "/c")
    eq((r.headers.get("X-Purge-Nodes"), r.headers.get("X-Purge-Cluster")), ("1", None),
       "published through Redis")
    ln, n = node(o, redis.url, "nocert")
    # Redis's alert, or a reset that came before it could be read: both say why
    ln.wait_log(r"\[warn\].*cluster: (cannot connect to redis at|TLS to redis at) rediss://\S+(:| failed:) "
                r"(redis ended TLS with the alert \"certificate required\"|Connection reset by peer|"
                r"closed by redis) \(does Redis want a client certificate, tls-auth-clients\? "
                r"see redis_tls_cert\)", 15)
    local_only(ln, n, "no client certificate")
    ok(lw.alive() and metric(w, "legate_cluster_redis_up") == 1, "the node with a certificate stays up")


@test(timeout=150)
def redis_restarted_is_reconnected_over_tls():
    redis = TlsRedis()
    o = Origin("o")
    nodes = [node(o, redis.url, "n%d" % i, workers=2) for i in (1, 2)]
    wait_subscribed(nodes)
    (la, a), (lb, b) = nodes
    eq(purge(a, "/before")[0].headers.get("X-Purge-Nodes"), "2")
    redis.kill()
    la.wait_log(r"\[warn\].*cluster: lost the redis \S+ connection to rediss://", 10)
    wait_until(lambda: metric(a, "legate_cluster_redis_up") == 0, 10, what="redis_up 0")
    local_only(la, a, "redis down")
    redis.start()
    wait_subscribed(nodes, timeout=30)
    la.wait_log(r"cluster: redis \S+ connection to rediss://\S+ is back", 10)
    path = "/back" + P
    for lg, port in nodes:
        request(port, target=path)
        eq(xc(request(port, target=path)), "HIT")
    eq(purge(b, path)[0].headers.get("X-Purge-Nodes"), "2", "fan-out again after the restart")
    wait_until(lambda: xc(request(a, target=path)) == "MISS", 5, what="the purge heard again")
    # a reload builds the TLS context again (master) and the new workers connect with it
    la.reload()
    wait_subscribed(nodes, timeout=30)
    # (polled: until the old workers are gone, node 1 may be subscribed twice)
    wait_until(lambda: purge(a, "/reloaded")[0].headers.get("X-Purge-Nodes") == "2", 20,
               what="fan-out to two nodes after a reload")


@test(timeout=120)
def handshake_that_never_completes_is_bounded():
    silent = SilentListener()
    o = Origin("o")
    lg, port = node(o, "rediss://127.0.0.1:%d" % silent.port, "silent",
                    cluster_extra='redis_connect_timeout = "300ms";')
    lg.wait_log(r"\[warn\].*cluster: redis at rediss://127\.0\.0\.1:\d+: no connection within 300 ms "
                r"\(TLS handshake not done\)", 10)
    local_only(lg, port, "a silent peer")
    # it gives up and tries again (with backoff), holding nothing meanwhile
    wait_until(lambda: len(silent.accepted) >= 3, 20, what="three connection attempts")
    for i in range(5):
        r, took = timed(lambda: request(port, method="PURGE", target="/s%d" % i))
        eq(r.headers.get("X-Purge-Cluster"), "local-only")
        ok(took < 1.0, "PURGE %d took %.3fs" % (i, took))
    # a stuck attempt is closed before the next: legate does not keep them all
    time.sleep(1.0)     # a window for attempts to pile up, not a wait for an event
    closed = 0
    for s in list(silent.accepted):
        s.setblocking(False)
        for _ in range(64):         # past the ClientHello legate sent, to the EOF if any
            try:
                if s.recv(1 << 16) == b"":
                    closed += 1
                    break
            except BlockingIOError:
                break               # still open
            except OSError:
                closed += 1
                break
    ok(closed >= len(silent.accepted) - 2, "%d of %d attempts were closed by legate"
       % (closed, len(silent.accepted)))


@test(timeout=120)
def unix_socket_takes_the_same_path():
    """redis.c drives TCP, TLS and unix sockets alike: a plain Redis on a
    unix socket only (--port 0) serves the fleet as well."""
    redis = Redis(unix=True, password=PASSWORD)
    o = Origin("o")
    nodes = [node(o, redis.url, "u%d" % i, ca=False) for i in (1, 2)]
    wait_subscribed(nodes)
    eq(purge(nodes[0][1], "/u")[0].headers.get("X-Purge-Nodes"), "2", "fan-out through a unix socket")


if __name__ == "__main__":
    main_unless_missing(tls_prerequisites)

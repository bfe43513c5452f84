#!/usr/bin/env python3
"""scripts/bench cluster: a fleet of three legate nodes (2 workers each) and a
redis-server of its own, on loopback, measuring what src/cluster shares:

  origin    origin fetches for N distinct cacheable objects requested round
            robin across the 3 nodes, each node caching its own copy (about
            3N) and with the fleet's one cache (cluster.cache_peers: N), and
            the time of a second round (all hits; a non-owner's hit is a hop
            to the owner), sequential requests from one client
  tls       TLS 1.3 resumption on the next node with the session of the
            previous one (openssl s_client), with the fleet's ticket keys and,
            for comparison, three nodes without a cluster section
  purge     time from a PURGE sent to node 1 until nodes 2 and 3 answer MISS
            (polled), K times
  limit     requests/s on one node (wrk, one key, a rate nothing reaches) with
            a local limit_req zone against a cluster-scoped one
  accuracy  3 nodes, one key, 100 r/s, burst 10, paced clients offering about
            180 r/s spread over the nodes for SECONDS: requests passed against
            100 x SECONDS + burst

A benchmark, not a test: it prints figures and never fails on a number.
  scripts/bench-cluster.py [--seconds 20] [--objects 200] [--wrk-seconds 5]
"""
import argparse
import hashlib
import hmac
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("LEGATE_BIN", os.path.join(TOP, "src", "legate"))
os.environ.setdefault("LEGATE_SRCDIR", TOP)
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
sys.path.insert(0, os.path.join(TOP, "t", "e2e"))
import legate_test as lt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=int, default=20)
ap.add_argument("--objects", type=int, default=200)
ap.add_argument("--wrk-seconds", type=int, default=5)
ap.add_argument("--purges", type=int, default=50)
args = ap.parse_args()

procs = []
tmp = tempfile.mkdtemp(prefix="legate-bench-cluster-")


def redis_start():
    port = lt.free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                          "--save", "", "--appendonly", "no", "--logfile", os.path.join(tmp, "redis.log")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(200):
        if subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True).stdout.strip() == b"PONG":
            return port
        time.sleep(0.05)
    sys.exit("redis-server did not start")


def conf(port, tport, origin, redis_port, node, cluster=True, zone_cluster="true", rate="100r/s", burst=10,
         peers=None):
    certs = os.path.join(tmp, "certs")
    shard = ' cache_peers = "fleet"; cache_peers_secret = "bench-secret-0123456789";' if peers else ""
    cl = ('cluster = { redis = "127.0.0.1:%d"; node = "%s";%s };' % (redis_port, node, shard)) if cluster else ""
    fleet_up = ('fleet = { servers = ( %s ); proxy_connect_timeout = "250ms"; };'
                % ", ".join('"127.0.0.1:%d"' % p for p in peers)) if peers else ""
    return """
worker_processes = 2;
error_log_level = "info";
cache_size = "32m";
%s
http = {
    access_log = "off";
    upstreams = { app = { servers = ( "%s" ); }; %s };
    limit_req_zones = ( { name = "api"; key = "$http_x_key"; rate = "%s"; cluster = %s; } );
    servers = ( { listen = ( "127.0.0.1:%d", { address = "127.0.0.1:%d"; tls = true; } );
        tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };
        routes = ( { prefix = "/rl"; return = 200; limit_req = { zone = "api"; burst = %d; nodelay = true; }; },
                   { prefix = "/"; proxy_pass = "app"; cache = true; cache_purge_allow = [ "127.0.0.0/8" ]; } ); } );
};
""" % (cl, origin.address, fleet_up, rate, zone_cluster if cluster else "false", port, tport, certs, certs,
       burst)


def fleet(origin, redis_port, cluster=True, shard=False, **kw):
    nodes = []
    ports = [(lt.free_port(), lt.free_port()) for _ in range(3)]
    for i in range(3):
        port, tport = ports[i]
        lg = lt.Legate(conf(port, tport, origin, redis_port, "node%d" % (i + 1), cluster,
                            peers=[p for p, _ in ports] if shard else None, **kw), workers=2)
        nodes.append((lg, port, tport))
    if cluster:
        for lg, port, _ in nodes:
            lg.wait_log(r"cluster: redis subscriber connection to \S+ (ready|is back)", 15)
    return nodes


def stop(nodes):
    for lg, _, _ in nodes:
        lg.stop()


def s_client(port, *a):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_3", "-ign_eof"] + list(a),
                       input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=20)
    return p.stdout.decode(errors="replace")


def relay_field(target, secret="bench-secret-0123456789"):
    """The relay field a node adds (signed as src/cluster/shard.c signs it)."""
    t = int(time.time())
    msg = "bench|http|127.0.0.1|127.0.0.1|%d|GET|localhost|%s" % (t, target)
    sig = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    return "node=bench; proto=http; for=127.0.0.1; hop=127.0.0.1; t=%d; sig=%s" % (t, sig)


def xc(r):
    return r.headers.get("X-Cache")


def main():
    subprocess.run(["sh", os.path.join(TOP, "scripts", "mkcert"), os.path.join(tmp, "certs")],
                   check=True, capture_output=True)
    rport = redis_start()
    origin = lt.Origin("origin")
    print("cluster: 3 nodes x 2 workers, redis-server %s, loopback" %
          subprocess.run(["redis-server", "--version"], capture_output=True).stdout.decode().split()[2])

    # ---- origin fetches: every node its own cache, then one for the fleet ----
    n = args.objects
    for shard in (True, False):     # the second fleet stays for the cases below
        nodes = fleet(origin, rport, shard=shard)
        origin.reset_stats()
        for i in range(n):
            for k in range(3):
                lt.request(nodes[k][1], target="/obj/%d?hdr=Cache-Control:max-age=600" % i)
        st = origin.stats()
        fetched = sum(v for k, v in st["by_path"].items() if k.startswith("/obj/"))
        t0 = time.monotonic()
        hits = 0
        for i in range(n):
            for k in range(3):
                r = lt.request(nodes[k][1], target="/obj/%d?hdr=Cache-Control:max-age=600" % i)
                hits += xc(r) == "HIT"
        dt = time.monotonic() - t0
        print("origin    %d objects round robin over 3 nodes, %s: %d origin fetches (%.2f N); "
              "then %d requests, %d hits, %.0f us each"
              % (n, "one cache (cache_peers)" if shard else "a cache per node", fetched,
                 fetched / n if n else 0, 3 * n, hits, dt / (3 * n) * 1e6))
        if shard and shutil.which("wrk"):
            # a hit on its owner against the same hit through another node (the hop)
            def held(port, path):
                return lt.request(port, target=path, headers=[
                    ("X-Legate-Shard", relay_field(path)),
                    ("Cache-Control", "only-if-cached")]).status == 200
            path = next(p for p in ("/obj/%d?hdr=Cache-Control:max-age=600" % i for i in range(n))
                        if not held(nodes[0][1], p))
            owner = next(k for k in (1, 2) if held(nodes[k][1], path))
            for who, k in (("on its owner", owner), ("through another node", 0)):
                out = subprocess.run(["wrk", "-t1", "-c20", "-d%ds" % args.wrk_seconds,
                                      "http://127.0.0.1:%d%s" % (nodes[k][1], path)],
                                     capture_output=True, timeout=120).stdout.decode()
                m = re.search(r"Requests/sec:\s+([\d.]+)", out)
                print("origin    one cached object %-21s %10.0f req/s (wrk -t1 -c20)"
                      % (who, float(m.group(1)) if m else 0.0))
        if shard:
            stop(nodes)

    # ---- TLS resumption across nodes ----
    def resumption(nodes, rounds=60):
        f = os.path.join(tmp, "sess.pem")
        s_client(nodes[0][2], "-sess_out", f)
        reused = 0
        for i in range(rounds):
            out = s_client(nodes[(i + 1) % 3][2], "-sess_in", f, "-sess_out", f)
            reused += "Reused," in out
        return reused, rounds
    r, m = resumption(nodes)
    print("tls       resumed on the next node with the fleet's ticket keys: %d of %d (%.0f%%)" % (r, m, 100 * r / m))

    # ---- purge propagation ----
    times = []
    for i in range(args.purges):
        path = "/p/%d?hdr=Cache-Control:max-age=600" % i
        for k in range(3):
            lt.request(nodes[k][1], target=path)
        t0 = time.monotonic()
        resp = lt.request(nodes[0][1], method="PURGE", target=path)
        assert resp.headers.get("X-Purge-Nodes") == "3", resp.headers
        for k in (1, 2):
            while xc(lt.request(nodes[k][1], target=path)) != "MISS":
                if time.monotonic() - t0 > 5:
                    break
        times.append((time.monotonic() - t0) * 1000)
    print("purge     PURGE on node 1 until MISS on nodes 2 and 3 (%d purges): median %.2f ms, max %.2f ms"
          " (includes the polling requests)" % (len(times), statistics.median(times), max(times)))
    stop(nodes)

    # ---- cost of a cluster-scoped limit ----
    if shutil.which("wrk"):
        res = {"false": 0.0, "true": 0.0}
        for scope in ("false", "true", "false", "true"):    # twice each, alternating: the best of two
            nd = fleet(origin, rport, zone_cluster=scope, rate="1000000r/s", burst=100000)
            out = subprocess.run(["wrk", "-t1", "-c20", "-d%ds" % args.wrk_seconds, "-H", "X-Key: k1",
                                  "http://127.0.0.1:%d/rl" % nd[0][1]], capture_output=True, timeout=120
                                 ).stdout.decode()
            m = re.search(r"Requests/sec:\s+([\d.]+)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            rps = float(m.group(1)) if m else 0.0
            res[scope] = max(res[scope], rps)
            print("limit     one node, one key, 1000000r/s burst 100000, cluster = %-5s %10.0f req/s%s"
                  % (scope, rps, "  (%s not 2xx)" % non2xx.group(1) if non2xx else ""))
            stop(nd)
        if res["false"]:
            print("limit     cluster/local = %.3fx req/s" % (res["true"] / res["false"]))

    # ---- accuracy ----
    nd = fleet(origin, rport)
    counts = {"pass": 0, "refused": 0}
    lock = threading.Lock()
    secs = args.seconds
    t_end = time.monotonic() + secs

    def client(port):
        c = lt.Conn(port)
        nxt = time.monotonic()
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now < nxt:
                time.sleep(nxt - now)
            nxt += 1 / 30.0
            r = c.request("GET", "/rl", headers=[("X-Key", "acc")])
            with lock:
                counts["pass" if r.status == 200 else "refused"] += 1
        c.close()
    ths = [threading.Thread(target=client, args=(p,)) for _, p, _ in nd for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    want = 100 * secs + 10
    print("accuracy  3 nodes, one key, 100 r/s burst 10, %d s, %d offered: %d passed, want %d (%+.2f%%)"
          % (secs, counts["pass"] + counts["refused"], counts["pass"], want,
             100.0 * (counts["pass"] - want) / want))
    stop(nd)
    origin.stop()


try:
    main()
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(tmp, ignore_errors=True)

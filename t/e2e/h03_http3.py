#!/usr/bin/env python3
"""HTTP/3 over QUIC to clients (RFC 9114, RFC 9000): GETs, uploads and
downloads with ngtcp2's own client (Debian's ngtcp2-client, `gtlsclient`),
many requests on one connection, the pipeline's features over HTTP/3
(routes, the access log's $server_protocol, X-Forwarded-Proto), Alt-Svc
on the TCP answers, Chromium forced onto QUIC loading a page, hostile
datagrams (garbage, short, unknown versions, an Initial flood from one
address) that neither crash a worker nor keep others out, graceful stop
with a request in flight, a reload, and `legate -t` errors."""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import types
import urllib.request
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
import legate_test  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import origin as origin_mod  # noqa: E402  (the body pattern)

CLIENT = shutil.which("gtlsclient")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CERTS = os.path.join(REPO, "conf", "examples", "certs")


def need_h3():
    if CLIENT is None:
        skip_all("gtlsclient not installed (Debian ngtcp2-client; scripts/bootstrap installs it)")
    out = subprocess.run([LEGATE_BIN, "-V"], capture_output=True, text=True).stdout + \
        subprocess.run([LEGATE_BIN, "-V"], capture_output=True, text=True).stderr
    if "HTTP/3: off" in out:
        skip_all("legate built without HTTP/3")


def conf(port, o, http_extra="", global_extra="", routes=None, quic=True):
    if routes is None:
        routes = '{ prefix = "/"; proxy_pass = "app"; }'
    return """%s
http = {
  access_log = "logs/access.log";
  log_format = "$request|$status|$server_protocol|$body_bytes_sent";
  client_max_body_size = "64m";
  %s
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( {
      listen = ( { address = "127.0.0.1:%d"; tls = true; http2 = true; quic = %s; } );
      server_name = ( "localhost" );
      tls_certificates = ( { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );
      routes = ( { prefix = "/local"; return = 200; body = "local answer"; }, %s );
  } );
};
""" % (global_extra, http_extra, o.address, port, "true" if quic else "false", CERTS, CERTS, routes)


def h3(port, *urls, data=None, n=None, timeout=30):
    """One QUIC connection with gtlsclient: the bodies, by URL path+query."""
    d = tempfile.mkdtemp(prefix="legate-h3-dl-")
    try:
        cmd = [CLIENT, "-q", "--exit-on-all-streams-close", "--download=" + d, "--timeout=10s"]
        if data is not None:
            cmd += ["-d", data]
        if n is not None:
            cmd += ["-n", str(n)]
        cmd += ["127.0.0.1", str(port)]
        cmd += ["https://localhost:%d%s" % (port, u) for u in urls]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        bodies = {}
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                bodies[name] = f.read()
        return p.returncode, bodies, p.stderr.decode(errors="replace")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def log_lines(lg, n, timeout=10):
    """The access log once it has n lines (it is flushed once a second)."""
    def have():
        try:
            with open(lg.access_log) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None
        return lines if len(lines) >= n else None
    return wait_until(have, timeout, what="%d access log lines" % n)


@test
def get_over_http3():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        rc, bodies, err = h3(port, "/hello?size=5000")
        eq(rc, 0, "client exit: " + err[-500:])
        eq(bodies.get("hello?size=5000"), origin_mod.pattern(5000), "the body as the origin sent it")
        lines = log_lines(lg, 1)
        eq(lines[0], "GET /hello?size=5000 HTTP/3.0|200|HTTP/3.0|5000")


@test
def the_upstream_sees_https_and_the_client():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        rc, bodies, err = h3(port, "/e?echo=1")
        eq(rc, 0, err[-500:])
        import json
        j = json.loads(bodies["e?echo=1"])
        hdrs = {k.lower(): v for k, v in j["headers"]}
        eq(hdrs.get("x-forwarded-proto"), "https")
        eq(hdrs.get("x-forwarded-for"), "127.0.0.1")
        eq(hdrs.get("host"), "localhost:%d" % port, ":authority becomes Host")
        eq(j["version"], "HTTP/1.1")


@test
def local_answers_and_routes_work_over_http3():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        rc, bodies, err = h3(port, "/local")
        eq(rc, 0, err[-500:])
        eq(bodies.get("local"), b"local answer")


@test(timeout=90)
def large_download_is_whole_and_memory_flat():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        size = 64 << 20
        with RssSampler(lambda: lg.workers()) as rss:
            rc, bodies, err = h3(port, "/big?size=%d" % size, timeout=80)
        eq(rc, 0, err[-500:])
        body = bodies.get("big?size=%d" % size, b"")
        eq(len(body), size)
        ok(body == origin_mod.pattern(size), "the body's bytes are the origin's")
        ok(rss.max_kb < 64 * 1024, "worker RSS peaked at %d KiB for a 64 MiB download" % rss.max_kb)


@test(timeout=90)
def upload_reaches_the_origin_whole():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        d = tempfile.mkdtemp(prefix="legate-h3-up-")
        try:
            path = os.path.join(d, "up.bin")
            data = os.urandom(8 << 20)
            with open(path, "wb") as f:
                f.write(data)
            rc, bodies, err = h3(port, "/up?echo=1", data=path, timeout=80)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        eq(rc, 0, err[-500:])
        import json
        j = json.loads(bodies["up?echo=1"])
        eq(j["body_len"], len(data))
        eq(j["body_sha256"], hashlib.sha256(data).hexdigest())


@test
def too_large_upload_gets_413_and_the_answer():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o).replace('client_max_body_size = "64m"', 'client_max_body_size = "1m"'),
                    workers=1)
        d = tempfile.mkdtemp(prefix="legate-h3-up-")
        try:
            path = os.path.join(d, "up.bin")
            with open(path, "wb") as f:
                f.write(b"x" * (3 << 20))
            rc, bodies, err = h3(port, "/up", data=path)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        lines = log_lines(lg, 1)
        contains(lines[0], "|413|HTTP/3.0|")
        ok(b"413" in bodies.get("up", b""), "the 413 page reached the client: %r" % bodies.get("up"))
        eq(o.stats()["requests"], 0, "the origin saw nothing")


@test
def many_requests_share_one_connection():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        rc, bodies, err = h3(port, *["/m%d?size=%d" % (i, 1000 + i) for i in range(40)])
        eq(rc, 0, err[-500:])
        eq(len(bodies), 40)
        for i in range(40):
            eq(bodies["m%d?size=%d" % (i, 1000 + i)], origin_mod.pattern(1000 + i))
        lines = log_lines(lg, 40)
        eq(sum("|200|HTTP/3.0|" in l for l in lines), 40)
        # more requests than the streams a client may have open at once
        # (128): each one done gives the client credit for the next
        rc, bodies, err = h3(port, "/many?size=100", n=400)
        eq(rc, 0, err[-500:])
        lines = log_lines(lg, 440, timeout=20)
        eq(sum(l.startswith("GET /many?size=100 HTTP/3.0|200|") for l in lines), 400,
           "every one of 400 requests on one connection answered")


class H2Origin(Origin):
    """t/h2origin.py (python3-h2, h2c): its answers can end with trailers."""

    def __init__(self):
        try:
            import h2  # noqa: F401
        except ImportError:
            raise Skip("python3-h2 not installed")
        self.name = "h2"
        self.host = "127.0.0.1"
        self.unix_path = None
        self._tmp = None
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "t", "h2origin.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        legate_test._track(self)     # stopped with the test's other processes
        m = re.match(r"PORT (\d+)", self._read_line(10.0))
        if not m:
            self.stop()
            fail("h2 origin did not start")
        self.port = int(m.group(1))


@test
def trailers_from_an_http2_upstream_reach_the_http3_client():
    """The origin ends its answer with trailer fields: they go out as a
    HEADERS frame after the DATA on the HTTP/3 stream (gtlsclient prints
    what it received)."""
    need_h3()
    with H2Origin() as o:
        port = free_port()
        text = conf(port, o).replace('servers = ( "%s" ); };' % o.address,
                                     'servers = ( "%s" ); protocol = "h2c"; };' % o.address)
        Legate(text, workers=1)
        d = tempfile.mkdtemp(prefix="legate-h3-tr-")
        try:
            p = subprocess.run([CLIENT, "--no-quic-dump", "--no-http-dump", "--exit-on-all-streams-close",
                                "--download=" + d, "--timeout=10s", "127.0.0.1", str(port),
                                "https://localhost:%d/t?size=5000&trailers=1&nolen=1" % port],
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            out = (p.stdout + p.stderr).decode(errors="replace")
            eq(p.returncode, 0, out[-800:])
            with open(os.path.join(d, "t?size=5000&trailers=1&nolen=1"), "rb") as f:
                body = f.read()
            eq(len(body), 5000)
            ok(re.search(r"x-trailer-a: one", out), "the trailer field arrived: " + out[-1500:])
            ok(re.search(r"x-body-sha256: " + hashlib.sha256(body).hexdigest(), out),
               "the origin's digest of the body, as a trailer")
        finally:
            shutil.rmtree(d, ignore_errors=True)


@test
def alt_svc_on_tcp_answers():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        for flag in ("--http1.1", "--http2"):
            p = subprocess.run(["curl", "-sk", flag, "-D-", "-o", "/dev/null",
                                "https://127.0.0.1:%d/x" % port],
                               capture_output=True, text=True, timeout=20)
            contains(p.stdout.lower(), 'alt-svc: h3=":%d"; ma=86400' % port, flag)


@test
def no_alt_svc_without_quic():
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o, quic=False), workers=1)
        p = subprocess.run(["curl", "-sk", "-D-", "-o", "/dev/null", "https://127.0.0.1:%d/x" % port],
                           capture_output=True, text=True, timeout=20)
        ok("alt-svc" not in p.stdout.lower(), p.stdout)


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
    return s


def long_header(version, dcid, scid, payload_len=1200, ptype=0):
    first = 0xc0 | (ptype << 4)
    return bytes([first]) + struct.pack(">I", version) + bytes([len(dcid)]) + dcid + \
        bytes([len(scid)]) + scid + os.urandom(payload_len)


@test
def unknown_version_gets_version_negotiation():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        s = udp(port)
        dcid, scid = os.urandom(8), os.urandom(8)
        s.send(long_header(0x1a2a3a4a, dcid, scid))
        data = s.recv(2048)
        ok(data[0] & 0x80, "a long header")
        eq(data[1:5], b"\0\0\0\0", "version 0: Version Negotiation")
        # its DCID is our SCID, its SCID our DCID (RFC 9000 17.2.1)
        eq(data[5], 8)
        eq(data[6:14], scid)
        versions = data[6 + 8 + 1 + 8:]
        ok(b"\0\0\0\x01" in [versions[i:i + 4] for i in range(0, len(versions), 4)],
           "QUIC v1 offered: %r" % versions)


@test(timeout=90)
def hostile_datagrams_leave_service_intact():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        pids = lg.workers()
        s = udp(port)
        rnd = random.Random(7)
        for i in range(3000):
            kind = i % 5
            if kind == 0:
                pkt = b""
            elif kind == 1:
                pkt = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 40)))
            elif kind == 2:
                # Initial packets with garbage where the crypto should be: each
                # makes a connection attempt that fails to decrypt
                pkt = long_header(1, os.urandom(8), os.urandom(8), 1200)
            elif kind == 3:
                pkt = bytes([0x40 | rnd.getrandbits(6)]) + os.urandom(rnd.randint(20, 1400))  # short header
            else:
                pkt = long_header(1, os.urandom(21), os.urandom(8), 100)   # CID too long
            try:
                s.send(pkt)
            except OSError:
                pass
        # a real client is still served, by the same worker
        rc, bodies, err = h3(port, "/after?size=100")
        eq(rc, 0, err[-500:])
        eq(bodies.get("after?size=100"), origin_mod.pattern(100))
        eq(lg.workers(), pids, "no worker died")


def real_initials(n):
    """n Initial datagrams of real handshakes (gtlsclient's first packets,
    caught on a socket that never answers): valid cryptography, distinct
    connection IDs."""
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 0))
    catcher.settimeout(5)
    port = catcher.getsockname()[1]
    out = []
    try:
        for _ in range(n):
            p = subprocess.Popen([CLIENT, "-q", "--timeout=3s", "127.0.0.1", str(port), "https://localhost/"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                d, _ = catcher.recvfrom(65536)
                out.append(d)
            finally:
                p.kill()
                p.wait()
            # what else that client sent (retransmissions) is not wanted
            catcher.settimeout(0.05)
            try:
                while True:
                    catcher.recvfrom(65536)
            except socket.timeout:
                pass
            catcher.settimeout(5)
    finally:
        catcher.close()
    return out


@test(timeout=90)
def one_address_cannot_hold_every_connection():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o, global_extra="quic_max_connections_per_address = 4;"), workers=1)
        # ten handshakes begun from ten ports of 127.0.0.1 and never finished:
        # the first four get the server's handshake, the rest nothing
        socks = []
        for pkt in real_initials(10):
            s = udp(port)
            s.send(pkt)
            socks.append(s)
        answered = 0
        for s in socks:
            s.settimeout(1.5)
            try:
                s.recv(65536)
                answered += 1
            except socket.timeout:
                pass
        eq(answered, 4, "handshakes answered")
        for s in socks:
            s.close()
        lg.allow_log(r"over 4 connections from one address")


@test(timeout=60)
def graceful_stop_finishes_the_request_in_flight():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        import threading
        res = {}

        def get():
            res["r"] = h3(port, "/slow?delay=1500&size=3000")
        t = threading.Thread(target=get)
        t.start()
        wait_until(lambda: o.stats()["active"] >= 1 or o.stats()["requests"] >= 1, 10,
                   what="the request to reach the origin")
        lg.signal(signal.SIGQUIT)
        t.join(30)
        rc, bodies, err = res["r"]
        eq(rc, 0, err[-500:])
        eq(bodies.get("slow?delay=1500&size=3000"), origin_mod.pattern(3000))
        lg.wait_exit(20)


@test(timeout=60)
def reload_keeps_serving_http3():
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        eq(h3(port, "/a?size=10")[0], 0)
        lg.reload(conf(port, o, routes='{ prefix = "/"; proxy_pass = "app"; add_response_headers = { X-Gen = "2"; }; }'))
        # the new generation's worker answers on the same UDP port
        for _ in range(3):
            rc, bodies, err = h3(port, "/b?size=10")
            eq(rc, 0, err[-500:])
            eq(bodies.get("b?size=10"), origin_mod.pattern(10))


def in_background(fn, *args):
    """fn(*args) in a thread: a callable that joins it and returns its result."""
    out = {}

    def run():
        try:
            out["r"] = fn(*args)
        except BaseException as e:      # re-raised in the test's thread
            out["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=60):
        t.join(timeout)
        ok(not t.is_alive(), "the background client finished")
        if "e" in out:
            raise out["e"]
        return out["r"]
    return join


@test(timeout=90)
def reload_keeps_the_open_connection():
    """A download in flight across a reload: the old worker keeps its
    connection (its datagrams are steered to the old generation's socket,
    not taken by the new worker, which would answer a stateless reset)."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        if not steering(lg):
            skip("the kernel does not steer QUIC datagrams here (no CAP_BPF)")
        path = "/big?size=3000000&chunk=100000&drip=60"
        join = in_background(h3, port, path)
        wait_until(lambda: origin_stats(o)["by_path"].get("/big", 0) >= 1, 10, what="the download to start")
        lg.reload(conf(port, o, routes='{ prefix = "/"; proxy_pass = "app"; add_response_headers = { X-Gen = "2"; }; }'),
                  timeout=40)
        rc, bodies, err = join()
        eq(rc, 0, "the client across the reload: " + err[-800:])
        body = bodies.get(path[1:], b"")
        eq(len(body), 3000000, "the whole body")
        eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(origin_mod.pattern(3000000)).hexdigest())
        # and the new generation takes new connections
        rc, bodies, err = h3(port, "/after?size=10")
        eq(rc, 0, err[-500:])


@test(timeout=90)
def graceful_stop_finishes_a_download_mid_body():
    """QUIT while a response body is on its way: the worker sends the rest
    before it exits."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        path = "/big?size=2000000&chunk=100000&drip=60"
        join = in_background(h3, port, path)
        wait_until(lambda: origin_stats(o)["by_path"].get("/big", 0) >= 1, 10, what="the download to start")
        lg.exit_expected = True
        lg.signal(signal.SIGQUIT)
        lg.wait_exit(30)
        rc, bodies, err = join()
        body = bodies.get(path[1:], b"")
        ok(rc == 0 and body == origin_mod.pattern(2000000),
           "the whole body (%d bytes): %s" % (len(body), err[-1500:]))


@test(timeout=120)
def a_connection_follows_the_client_to_a_new_address():
    """The client moves to a new local port after the handshake (as after
    a NAT rebinding) and only then sends its request: the kernel's flow
    hash would pick either of two workers' sockets for the new address;
    the connection ID brings the datagrams to the worker that has it."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=2)
        if not steering(lg):
            skip("the kernel does not steer QUIC datagrams here (no CAP_BPF)")
        for i in range(8):
            d = tempfile.mkdtemp(prefix="legate-h3-mig-")
            try:
                p = subprocess.run([CLIENT, "-q", "--exit-on-all-streams-close", "--download=" + d,
                                    "--timeout=10s", "--change-local-addr=100ms", "--delay-stream=400ms",
                                    "127.0.0.1", str(port), "https://localhost:%d/m%d?size=20000" % (port, i)],
                                   capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
                err = p.stderr.decode(errors="replace")
                eq(p.returncode, 0, "run %d: %s" % (i, err[-800:]))
                with open(os.path.join(d, "m%d?size=20000" % i), "rb") as f:
                    ok(f.read() == origin_mod.pattern(20000), "run %d: the body whole" % i)
            finally:
                shutil.rmtree(d, ignore_errors=True)


def clients_in_a_row(port, results, stop, n=200):
    """Clients that do not retry, one after another, until stop is set:
    (index, exit status, body whole, stderr tail) each."""
    def run():
        for i in range(n):
            if stop.is_set():
                break
            rc, bodies, err = h3(port, "/c%d?size=100" % i)
            results.append((i, rc, bodies.get("c%d?size=100" % i) == origin_mod.pattern(100), err[-300:]))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@test(timeout=120)
def new_connections_during_reloads_all_answered():
    """Three reloads while clients connect one after another: every one is
    answered, by the old generation or the new (a handshake under way when
    the old worker is told to quit is finished, and its request served)."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=2)
        results, stop = [], threading.Event()
        t = clients_in_a_row(port, results, stop)
        try:
            for k in range(3):
                n = len(results)
                wait_until(lambda: len(results) >= n + 3, 30, what="clients before reload %d" % k)
                lg.reload(timeout=40)
            n = len(results)
            wait_until(lambda: len(results) >= n + 3, 30, what="clients after the reloads")
        finally:
            stop.set()
            t.join(30)
        bad = [r for r in results if r[1] != 0 or not r[2]]
        eq(bad, [], "clients not answered (of %d)" % len(results))


@test(timeout=120)
def new_connections_during_an_upgrade_all_answered():
    """The same while the binary is upgraded and the old master told to
    QUIT."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        pidfile = os.path.join(lg.prefix, "logs", "legate.pid")
        old = lg.pid
        results, stop = [], threading.Event()
        t = clients_in_a_row(port, results, stop)
        new = 0
        try:
            wait_until(lambda: len(results) >= 3, 20, what="the first clients")
            lg.signal(signal.SIGUSR2)
            wait_until(lambda: read_pid(pidfile) not in (0, old), 15, what="the new master's pid file")
            new = read_pid(pidfile)
            lg.exit_expected = True
            lg.signal(signal.SIGQUIT)
            lg.wait_exit(30)
            n = len(results)
            wait_until(lambda: len(results) >= n + 5, 30, what="clients after the upgrade")
        finally:
            stop.set()
            t.join(30)
            if new:
                try:
                    os.kill(new, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
        bad = [r for r in results if r[1] != 0 or not r[2]]
        eq(bad, [], "clients not answered (of %d)" % len(results))


@test(timeout=60)
def each_generation_gets_fresh_udp_sockets_unless_steering_is_off():
    """With steering (the default) a reload gives the new workers new UDP
    sockets beside the old ones; quic_steering = false keeps one set for
    every generation, as TCP's (nginx without quic_bpf)."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        if not steering(lg):
            skip("the kernel does not steer QUIC datagrams here (no CAP_BPF)")
        before = udp_inodes(port)
        lg.reload()
        after = udp_inodes(port)
        eq(len(after), 1, "the old worker gone, one socket: the new worker's")
        ok(after.isdisjoint(before), "a fresh socket for the new generation")
        eq(h3(port, "/a?size=10")[0], 0)
        lg.reload(conf(port, o, global_extra="quic_steering = false;"))
        eq(udp_inodes(port), after, "steering off: the same socket goes on")
        lg.reload()
        eq(udp_inodes(port), after, "steering off: the same socket goes on")
        rc, bodies, err = h3(port, "/b?size=10")
        eq(rc, 0, err[-500:])
        eq(bodies.get("b?size=10"), origin_mod.pattern(10))


@test(timeout=900)
def a_build_without_http3_says_so_and_refuses_quic():
    """configure --without-http3 (as on a machine without ngtcp2, nghttp3
    or GnuTLS): the binary builds, -V says HTTP/3 is off, and legate -t
    refuses quic = true with FILE:LINE and the packages to install."""
    if not os.path.exists(os.path.join(REPO, ".git")) or shutil.which("git") is None:
        skip("not a git checkout: no source list to copy")
    d = tempfile.mkdtemp(prefix="legate-noh3-")
    try:
        files = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True, check=True).stdout
        for rel in filter(None, files.decode().split("\0")):
            os.makedirs(os.path.join(d, os.path.dirname(rel)), exist_ok=True)
            if os.path.isfile(os.path.join(REPO, rel)):
                shutil.copy2(os.path.join(REPO, rel), os.path.join(d, rel))
        env = dict(os.environ)
        env.pop("CFLAGS", None)
        steps = [["autoreconf", "-fi"], ["./configure", "-q", "--without-http3"], ["make", "-j2", "src/legate"]]
        for cmd in steps:
            p = subprocess.run(cmd, cwd=d, capture_output=True, env=env, timeout=800, stdin=subprocess.DEVNULL)
            eq(p.returncode, 0, "%s: %s" % (" ".join(cmd), (p.stdout + p.stderr).decode(errors="replace")[-2000:]))
        binary = os.path.join(d, "src", "legate")
        v = subprocess.run([binary, "-V"], capture_output=True, text=True)
        contains(v.stdout + v.stderr, "HTTP/3: off")
        port = free_port()
        cpath = os.path.join(d, "h3.conf")
        with open(cpath, "w") as f:
            f.write(conf(port, types.SimpleNamespace(address="127.0.0.1:9")))
        t = subprocess.run([binary, "-t", "-c", cpath], capture_output=True, text=True)
        ok(t.returncode != 0, "legate -t refuses quic without HTTP/3")
        out = t.stdout + t.stderr
        ok(re.search(re.escape(cpath) + r":\d+: .*quic", out), "FILE:LINE and the setting: " + out[-800:])
        contains(out, "libngtcp2")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def steering(lg):
    """Whether legate steers QUIC datagrams by connection ID (it logs when
    the kernel refuses)."""
    return "no connection steering" not in lg.log_text()


def origin_stats(o):
    with urllib.request.urlopen("http://%s/_stats" % o.address, timeout=5) as r:
        return json.loads(r.read())


def udp_inodes(port):
    """The inodes of the UDP sockets bound to 127.0.0.1:port."""
    want = "0100007F:%04X" % port
    out = set()
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == want:
                out.add(parts[9])
    return out


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


@test(timeout=90)
def binary_upgrade_keeps_quic_connections():
    """USR2 then QUIT to the old master while a download runs: the new
    binary inherits the sockets (LEGATE_LISTEN_FDS) and names the old
    ones in its steering map, so the old worker finishes the download; its
    own workers get fresh UDP sockets and answer new connections."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        steered = steering(lg)
        pidfile = os.path.join(lg.prefix, "logs", "legate.pid")
        old = lg.pid
        eq(h3(port, "/before?size=10")[0], 0)
        before = udp_inodes(port)
        ok(before, "UDP sockets on the port")
        path = "/big?size=2000000&chunk=100000&drip=60"
        join = in_background(h3, port, path)
        wait_until(lambda: origin_stats(o)["by_path"].get("/big", 0) >= 1, 10, what="the download to start")
        lg.signal(signal.SIGUSR2)
        wait_until(lambda: read_pid(pidfile) not in (0, old), 15, what="the new master's pid file")
        new = read_pid(pidfile)
        try:
            lg.exit_expected = True
            lg.signal(signal.SIGQUIT)
            lg.wait_exit(30)
            rc, bodies, err = join()
            eq(rc, 0, "the download across the upgrade: " + err[-800:])
            body = bodies.get(path[1:], b"")
            ok(body == origin_mod.pattern(2000000), "the whole body (%d bytes): %s" % (len(body), err[-1500:]))
            for _ in range(3):
                rc, bodies, err = h3(port, "/after?size=10")
                eq(rc, 0, err[-500:])
                eq(bodies.get("after?size=10"), origin_mod.pattern(10))
            after = udp_inodes(port)
            if steered:
                eq(len(after), 1, "one UDP socket: the new worker's")
                ok(after.isdisjoint(before), "the old binary's UDP sockets closed with it")
            else:
                eq(after, before, "the same UDP sockets, inherited")
        finally:
            try:
                os.kill(new, signal.SIGQUIT)
                wait_until(lambda: not os.path.exists("/proc/%d" % new) or
                           open("/proc/%d/stat" % new).read().split()[2] == "Z", 15,
                           what="the new master to stop")
            except ProcessLookupError:
                pass


@test
def chromium_loads_a_page_over_quic():
    need_h3()
    if CHROMIUM is None:
        skip("chromium not installed (scripts/bootstrap installs it)")
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o), workers=1)
        spki = subprocess.run(
            "openssl x509 -in %s/server-rsa.pem -pubkey -noout | openssl pkey -pubin -outform der"
            " | openssl dgst -sha256 -binary | base64" % CERTS,
            shell=True, capture_output=True, text=True).stdout.strip()
        d = tempfile.mkdtemp(prefix="legate-chromium-h3-")
        dom = ""
        try:
            for attempt in range(3):
                cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                       "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                       "--disable-background-networking", "--disable-component-update",
                       "--user-data-dir=" + os.path.join(d, "p%d" % attempt),
                       "--enable-quic", "--origin-to-force-quic-on=localhost:%d" % port,
                       "--ignore-certificate-errors-spki-list=" + spki,
                       "--host-resolver-rules=MAP localhost 127.0.0.1",
                       "--virtual-time-budget=3000", "--dump-dom",
                       "https://localhost:%d/page?ctype=text/html&size=300" % port]
                p = subprocess.run(cmd, capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
                dom = p.stdout.decode(errors="replace")
                if "ABCDEFGH" in dom:
                    break
        finally:
            shutil.rmtree(d, ignore_errors=True)
        contains(dom, "ABCDEFGH", "the page's body in the DOM")
        lines = log_lines(lg, 1)
        ok(any(l.startswith("GET /page?ctype=text/html&size=300 HTTP/3.0|200|HTTP/3.0") for l in lines),
           "Chromium's request came over HTTP/3: %r" % lines)


@test(timeout=60)
def retry_validates_the_address_first():
    """quic_retry = true (nginx quic_retry on): a first Initial is answered
    by a Retry, nothing kept; the client comes back with the token and is
    served."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        lg = Legate(conf(port, o, global_extra="quic_retry = true; error_log_level = \"info\";"), workers=1)
        pkt = real_initials(1)[0]
        s = udp(port)
        s.send(pkt)
        r = s.recv(65536)
        ok(r[0] & 0x80, "a long header")
        eq(r[1:5], b"\0\0\0\x01", "QUIC v1")
        eq((r[0] & 0x30) >> 4, 3, "packet type Retry")
        s.close()
        # a real client follows the Retry and is served
        rc, bodies, err = h3(port, "/r?size=100")
        eq(rc, 0, err[-500:])
        eq(bodies.get("r?size=100"), origin_mod.pattern(100))
        # a forged token is dropped, not answered
        s = udp(port)
        first = pkt[0]
        dlen = pkt[5]
        slen = pkt[6 + dlen]
        at = 7 + dlen + slen            # the token length (a varint) of an Initial
        forged = pkt[:at] + bytes([0x40, 32]) + bytes([0xb6]) + os.urandom(31) + pkt[at + 1:]
        s.send(forged)
        s.settimeout(1.5)
        try:
            s.recv(65536)
            fail("a forged Retry token was answered")
        except socket.timeout:
            pass
        s.close()
        lg.wait_log(r"a Retry token that does not verify", what="the forged token logged")


@test
def stateless_reset_for_unknown_connections():
    """A short-header packet for a connection this endpoint does not know
    (its worker restarted, or a client's stale state) gets a stateless
    reset: smaller than what came, at most 100 a second."""
    need_h3()
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        s = udp(port)
        pkt = bytes([0x40 | 0x01]) + os.urandom(18) + os.urandom(60)
        s.send(pkt)
        r = s.recv(2048)
        ok(not (r[0] & 0x80) and r[0] & 0x40, "a short header with the fixed bit")
        ok(21 <= len(r) < len(pkt), "smaller than the packet it answers: %d of %d" % (len(r), len(pkt)))
        # the token is a function of the connection ID: the same CID, the same token
        s.send(pkt)
        r2 = s.recv(2048)
        eq(r2[-16:], r[-16:], "the reset token of that connection ID")
        # too small to answer smaller: nothing
        s.send(bytes([0x41]) + os.urandom(18) + os.urandom(10))
        s.settimeout(1.0)
        try:
            s.recv(2048)
            fail("a 29-byte packet was answered")
        except socket.timeout:
            pass
        # a flood gets at most about RESET_RATE answers a second
        for _ in range(400):
            s.send(bytes([0x41]) + os.urandom(18) + os.urandom(60))
        got = 0
        s.settimeout(0.5)
        try:
            while True:
                s.recv(2048)
                got += 1
        except socket.timeout:
            pass
        ok(got <= 250, "%d resets for 400 packets" % got)


@test
def config_errors_name_file_and_line():
    p_dir = tempfile.mkdtemp(prefix="legate-h3-conf-")
    try:
        path = os.path.join(p_dir, "legate.conf")
        with open(path, "w") as f:
            f.write("""http = {
  servers = ( {
      listen = ( { address = "127.0.0.1:%d"; quic = true; } );
      routes = ( { prefix = "/"; return = 200; } );
  } );
};
""" % free_port())
        p = subprocess.run([LEGATE_BIN, "-t", "-p", p_dir, "-c", path], capture_output=True, text=True)
        ok(p.returncode != 0, "rejected")
        ok(re.search(r"legate\.conf:3: .*quic = true needs tls = true", p.stderr), p.stderr)
        # HTTP/3 and a UDP stream server cannot share one UDP port
        port = free_port()
        with open(path, "w") as f:
            f.write("""http = {
  servers = ( {
      listen = ( { address = "127.0.0.1:%d"; tls = true; quic = true; } );
      tls_certificates = ( { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );
      routes = ( { prefix = "/"; return = 200; } );
  } );
};
stream = {
  upstreams = { dns = { servers = ( "127.0.0.1:53" ); }; };
  servers = ( { listen = { address = "127.0.0.1:%d"; udp = true; }; proxy_pass = "dns"; } );
};
""" % (port, CERTS, CERTS, port))
        p = subprocess.run([LEGATE_BIN, "-t", "-p", p_dir, "-c", path], capture_output=True, text=True)
        ok(p.returncode != 0, "rejected")
        contains(p.stderr, "is HTTP/3's UDP port (quic = true) and a UDP stream listener at once")
    finally:
        shutil.rmtree(p_dir, ignore_errors=True)


@test
def shipped_example_serves_http3():
    """conf/examples/http3.conf as shipped, on free ports instead of 8443 and 9001."""
    need_h3()
    ex = os.path.join(REPO, "conf", "examples")
    with Origin("o1") as o:
        text = open(os.path.join(ex, "http3.conf")).read()
        ok("127.0.0.1:8443" in text and "127.0.0.1:9001" in text, "the example's addresses")
        port = free_port()
        text = (text.replace('"certs/', '"%s/' % CERTS).replace("127.0.0.1:8443", "127.0.0.1:%d" % port)
                .replace("127.0.0.1:9001", o.address).replace('worker_processes = "auto";', "worker_processes = 2;"))
        lg = Legate(text)
        for i in range(4):      # each a new connection: both workers' sockets
            rc, bodies, err = h3(port, "/ex%d?size=64" % i)
            eq(rc, 0, err[-500:])
            eq(bodies.get("ex%d?size=64" % i), origin_mod.pattern(64))
        lines = log_lines(lg, 4)
        eq(sum(" HTTP/3.0" in l for l in lines), 4)


if __name__ == "__main__":
    main()

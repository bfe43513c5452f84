#!/usr/bin/env python3
"""Stream servers (layer 4, nginx's stream {} / HAProxy's mode tcp): TCP to
an upstream group over IPv4, IPv6 and a unix socket, balancing (round
robin, hash of the client address), half-close, retries on a refused
connect, idle and preread timeouts, limits per client and per server,
passive and active (tcp send/expect) health, a backend that dies in the
middle, a large transfer through splice with flat memory, the PROXY
protocol towards upstreams, TLS pass-through routed by SNI and ALPN (a
ClientHello split into single bytes too), TLS termination with a client
certificate and TLS to upstreams, the session's access log line, a
reload that lets a session go on, and `legate -t` errors."""
import errno
import os
import re
import signal
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
import legate_test  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MKCERT = os.path.join(HERE, "..", "..", "scripts", "mkcert")
CERTS = None


def certs():
    global CERTS
    if CERTS is None:
        if shutil.which("openssl") is None:
            raise SkipFile("openssl not installed")
        d = tempfile.mkdtemp(prefix="legate-certs-")
        subprocess.run(["sh", MKCERT, d], check=True, capture_output=True, timeout=120)
        CERTS = d
    return CERTS


# ---- backends ----

def tagged_echo(tag):
    """Echo every read back with tag in front; on EOF from the client, end too."""
    def h(s, peer):
        s.sendall(b"")
        while True:
            d = s.recv(65536)
            if not d:
                break
            s.sendall(tag + d)
        s.shutdown(socket.SHUT_WR)
    return h


def collect_then_answer(tag):
    """Read until the client's EOF (its half-close), then answer: the reply
    can only come if the half-close was passed on and the other way stayed open."""
    def h(s, peer):
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.sendall(tag + b" got %d bytes: " % len(got) + got[:64])
        s.shutdown(socket.SHUT_WR)
    return h


def recv_all(s, timeout=15, limit=1 << 30):
    s.settimeout(timeout)
    out = b""
    while len(out) < limit:
        d = s.recv(65536)
        if not d:
            break
        out += d
    return out


def session(port, data, host="127.0.0.1", family=socket.AF_INET, source=None, timeout=15):
    """Connect, send data, half-close, read to EOF."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port) if family != socket.AF_UNIX else host)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    try:
        return recv_all(s, timeout)
    finally:
        s.close()


def refused(port, source=None):
    """A session closed by legate before any byte came back (EOF or, with the
    client's bytes unread, a reset)."""
    try:
        return session(port, b"x", source=source) == b""
    except OSError as e:        # reset, or already closed when we half-close
        return e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


def stream_conf(servers, upstreams, top=""):
    return """
%s
error_log_level = "info";
stream = {
    upstreams = { %s };
    servers = ( %s );
};
""" % (top, upstreams, servers)


def access_lines(lg, n, timeout=10):
    """The stream access log once it has n lines (the worker writes each second)."""
    path = os.path.join(lg.prefix, "logs", "stream.log")

    def have():
        if not os.path.exists(path):
            return None
        lines = open(path).read().splitlines()
        return lines if len(lines) >= n else None
    return wait_until(have, timeout=timeout, what="%d access log lines" % n)


# ---- TCP ----

@test
def tcp_round_robin_half_close_ipv4_ipv6_unix():
    a = ScriptedServer(collect_then_answer(b"A"))
    b = ScriptedServer(collect_then_answer(b"B"))
    port, port6 = free_port(), free_port("::1")
    sock = os.path.join(tempfile.mkdtemp(prefix="legate-s01-"), "s.sock")
    lg = Legate(stream_conf(
        """{ listen = ( "127.0.0.1:%d", "[::1]:%d", "unix:%s" ); proxy_pass = "pair";
             access_log = "logs/stream.log"; }""" % (port, port6, sock),
        """pair = { servers = ( "%s", "%s" ); };""" % (a.address, b.address)), workers=1)
    seen = []
    for i in range(8):
        r = session(port, b"hello %d" % i)
        ok(r.endswith(b" got 7 bytes: hello %d" % i), "half-close relayed: %r" % r)
        seen.append(r[:1])
    # round robin over two equal servers: each gets its share (the harness's
    # three probes at start-up may have taken turns in between)
    ok(seen.count(b"A") >= 2 and seen.count(b"B") >= 2, "both get sessions: %r" % seen)
    r6 = session(port6, b"six", host="::1", family=socket.AF_INET6)
    contains(r6, b"got 3 bytes: six")
    ru = session(port, b"x") and session(sock, b"unix!", host=sock, family=socket.AF_UNIX)
    contains(ru, b"got 5 bytes: unix!")
    lines = access_lines(lg, 11)
    # client, port, status 200, bytes from and to the client, upstream
    m = [l for l in lines if " %d 200 7 " % port in l]
    ok(len(m) >= 8, "session lines: %r" % lines)
    ok(re.search(r"^127\.0\.0\.1 \[.*\] %d 200 7 \d+ [0-9.]+ upstream=127\.0\.0\.1:\d+ .* ended=closed$"
                 % port, m[0]), m[0])
    lg.stop()


@test
def hash_by_client_address_is_sticky():
    a = ScriptedServer(tagged_echo(b"A"))
    b = ScriptedServer(tagged_echo(b"B"))
    port = free_port()
    Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "sticky"; }""" % port,
        """sticky = { balance = "hash"; servers = ( "%s", "%s" ); };""" % (a.address, b.address)),
        workers=2)
    where = {}
    for i in range(2, 26):
        src = "127.0.0.%d" % i
        first = session(port, b"x", source=src)[:1]
        for _ in range(2):
            eq(session(port, b"y", source=src)[:1], first, "same server for %s" % src)
        where[src] = first
    ok(set(where.values()) == {b"A", b"B"}, "both servers get clients: %r" % where)


@test
def retry_on_refused_connect_and_passive_health():
    live = ScriptedServer(tagged_echo(b"L"))
    dead = free_port()          # nothing listens
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "two"; access_log = "logs/stream.log"; }""" % port,
        """two = { max_fails = 1; fail_timeout = "30s";
                   servers = ( "127.0.0.1:%d", "%s" ); };""" % (dead, live.address)), workers=1)
    for i in range(6):
        eq(session(port, b"ping"), b"Lping", "session %d" % i)
    log = lg.log_text()
    contains(log, "127.0.0.1:%d" % dead)
    contains(log, "is out for")     # passive health: ejected after the failure
    # once out, it is not tried again: one refused connect at most (the probe
    # at start-up may have been the one)
    n = len(re.findall(r"connect\(\) failed.*upstream \"two\"|upstream \"two\" server 127\.0\.0\.1:%d: connect"
                       % dead, log))
    ok(n <= 2, "the dead server is left out after its failure (%d tries)" % n)


@test
def connect_timeout_then_the_next_server():
    # a server that never accepts, its accept queue full: SYNs go unanswered
    bh = socket.socket()
    bh.bind(("127.0.0.1", 0))
    bh.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(bh.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(bh.getsockname())
        skip("this kernel answers connects beyond a full accept queue")
    except (socket.timeout, OSError):
        pass
    finally:
        probe.close()
    live = ScriptedServer(tagged_echo(b"L"))
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "t"; proxy_connect_timeout = "500ms";
             access_log = "logs/stream.log"; }""" % port,
        """t = { servers = ( "127.0.0.1:%d", "%s" ); };""" % (bh.getsockname()[1], live.address)),
        workers=1)
    try:
        for i in range(3):
            t0 = time.monotonic()
            eq(session(port, b"x%d" % i), b"Lx%d" % i, "relayed by the next server")
            ok(time.monotonic() - t0 < 5)
        log = lg.wait_log(r"127\.0\.0\.1:%d.*timed out|timed out.*127\.0\.0\.1:%d"
                          % (bh.getsockname()[1], bh.getsockname()[1]), timeout=5)
        ok(log)
    finally:
        for f in fillers:
            f.close()
        bh.close()


@test
def no_live_upstream_is_logged_502():
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "none"; access_log = "logs/stream.log"; }""" % port,
        """none = { servers = ( "127.0.0.1:%d" ); };""" % free_port()), workers=1)
    ok(refused(port), "closed without a byte")
    lines = access_lines(lg, 2)   # the harness's probe, then ours
    ok(all(" %d 502 " % port in l for l in lines), "502 logged: %r" % lines)


@test
def idle_timeout_closes_a_silent_session():
    held = threading.Event()

    def silent(s, peer):
        held.wait(20)
    srv = ScriptedServer(silent)
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "s"; proxy_timeout = "1s";
             access_log = "logs/stream.log"; }""" % port,
        """s = { servers = ( "%s" ); };""" % srv.address), workers=1)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    eq(recv_all(c, timeout=10), b"", "closed by legate")
    dt = time.monotonic() - t0
    held.set()
    ok(0.8 <= dt < 6, "closed after proxy_timeout (%.2f s)" % dt)
    wait_until(lambda: any(l.endswith("ended=idle") for l in access_lines(lg, 1)), timeout=10,
               what="the session logged as ended by its idle timeout")


@test
def limits_per_client_and_per_server():
    hold = threading.Event()

    def holder(s, peer):
        s.sendall(b"hi")
        s.settimeout(20)
        try:
            s.recv(10)          # until the client ends (the harness's probes do at once)
        except OSError:
            pass
    srv = ScriptedServer(holder)
    port, port2 = free_port(), free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "h"; access_log = "logs/stream.log";
             limit_conn = { zone = "perclient"; max = 2; }; },
           { listen = "127.0.0.1:%d"; proxy_pass = "one"; access_log = "logs/stream.log"; }"""
        % (port, port2),
        """h = { servers = ( "%s" ); };
           one = { servers = ( { address = "%s"; max_conns = 1; } ); };""" % (srv.address, srv.address),
        top="""http = { limit_conn_zones = ( { name = "perclient"; key = "$remote_addr"; } );
                        servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; return = 204; } ); } ); };"""
            % free_port()), workers=1)
    access_lines(lg, 2)         # the harness's probes' sessions are over
    held = []
    try:
        for i in range(2):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.settimeout(10)
            eq(c.recv(2), b"hi")
            held.append(c)
        # a third from the same address: over limit_conn, closed at once
        ok(refused(port), "third session refused")
        # from another address: its own count
        c = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.9", 0))
        c.settimeout(10)
        eq(c.recv(2), b"hi")
        held.append(c)
        # max_conns = 1 on the only server of "one"
        c = socket.create_connection(("127.0.0.1", port2), timeout=10)
        c.settimeout(10)
        eq(c.recv(2), b"hi")
        held.append(c)
        ok(refused(port2), "over the server's max_conns")
        wait_until(lambda: any(" %d 503 " % port in l for l in access_lines(lg, 2)), timeout=10,
                   what="limit_conn's refusal logged 503")
        wait_until(lambda: any(" %d 50" % port2 in l for l in access_lines(lg, 2)), timeout=10,
                   what="max_conns' refusal logged")
    finally:
        hold.set()
        for c in held:
            c.close()


@test
def bandwidth_limit_towards_the_client():
    size = 300 * 1024

    def source(s, peer):
        if s.recv(10) == b"go":
            s.sendall(b"z" * size)
        s.shutdown(socket.SHUT_WR)
    srv = ScriptedServer(source)
    port = free_port()
    Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "slow"; limit_rate = "100k"; limit_rate_after = "100k"; }""" % port,
        """slow = { servers = ( "%s" ); };""" % srv.address), workers=1)
    t0 = time.monotonic()
    got = session(port, b"go", timeout=30)
    dt = time.monotonic() - t0
    eq(len(got), size)
    # 100 KiB at once, then 200 KiB at 100 KiB/s
    ok(1.5 <= dt < 10, "limit_rate held the session to 100 KiB/s after 100 KiB (%.2f s)" % dt)


@test
def active_tcp_health_check_send_expect():
    def good(s, peer):
        d = s.recv(100)
        if d == b"PING\r\n":
            s.sendall(b"+PONG\r\n")
        elif d:
            s.sendall(b"G" + d)
            tagged_echo(b"G")(s, peer)

    def bad(s, peer):
        d = s.recv(100)
        if d == b"PING\r\n":
            s.sendall(b"-ERR\r\n")
    g, b = ScriptedServer(good), ScriptedServer(bad)
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "hc"; }""" % port,
        """hc = { servers = ( "%s", "%s" );
                  health_check = { type = "tcp"; send = "PING\\r\\n"; expect = "+PONG";
                                   interval = "200ms"; timeout = "1s"; fall = 1; rise = 1; }; };"""
        % (g.address, b.address)), workers=1)
    lg.wait_log(r"server %s is down: health check failed" % re.escape(b.address), timeout=15)
    for _ in range(4):
        eq(session(port, b"q"), b"Gq", "only the healthy server")
    ok("server %s is down" % g.address not in lg.log_text(), "the good one stays up")


@test
def backend_dies_mid_session():
    def dies(s, peer):
        s.sendall(b"partial")
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()               # a reset, not a clean end
    srv = ScriptedServer(dies)
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "d"; access_log = "logs/stream.log"; }""" % port,
        """d = { servers = ( "%s" ); };""" % srv.address), workers=1)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = b""
    try:
        got = recv_all(c, timeout=10)
    except ConnectionResetError:
        pass
    c.close()
    ok(got in (b"partial", b""), got)
    # the worker goes on serving
    srv2 = ScriptedServer(tagged_echo(b"E"))
    del srv2
    ok(lg.alive(), "legate still runs")
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    eq(c.recv(7), b"partial")
    c.close()
    wait_until(lambda: any(l.endswith("ended=upstream error") for l in access_lines(lg, 1)),
               timeout=10, what="a session logged as ended by the upstream's reset")


def count_pipes(pid):
    n = 0
    for f in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, f)).startswith("pipe:")
        except OSError:
            pass
    return n


@test(timeout=180)
def large_transfer_spliced_with_flat_memory():
    total = 256 << 20

    def source(s, peer):
        chunk = b"\0" * (1 << 20)
        d = s.recv(10)
        if d != b"go":
            return
        for _ in range(total >> 20):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
    srv = ScriptedServer(source)
    port = free_port()
    lg = Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "big"; }""" % port,
        """big = { servers = ( "%s" ); };""" % srv.address), workers=1)
    workers = lg.workers()
    base = max(rss_kb(p) for p in workers)
    pipes0 = count_pipes(workers[0])
    with RssSampler(lambda: workers) as rs:
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sendall(b"go")
        n = 0
        c.settimeout(60)
        pipes = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            n += len(d)
            if pipes == 0 and n > (8 << 20):
                # the kernel relays: the worker holds splice pipes now
                pipes = count_pipes(workers[0]) - pipes0
        c.close()
    eq(n, total, "every byte")
    ok(pipes >= 4, "spliced through kernel pipes (%d more pipe ends open)" % pipes)
    ok(rs.max_kb - base < 16 * 1024, "worker RSS grew %d KiB moving 256 MiB" % (rs.max_kb - base))


@test
def proxy_protocol_towards_upstream_v1_v2():
    got = {}

    def record(tag):
        def h(s, peer):
            d = b""
            s.settimeout(10)
            while b"PAYLOAD" not in d:
                x = s.recv(4096)
                if not x:
                    return      # the harness's probe at start-up: not a session of ours
                d += x
            got[tag] = d
            s.sendall(b"ok")
        return h
    v1, v2 = ScriptedServer(record("v1")), ScriptedServer(record("v2"))
    p1, p2 = free_port(), free_port()
    Legate(stream_conf(
        """{ listen = "127.0.0.1:%d"; proxy_pass = "u1"; send_proxy_protocol = "v1"; },
           { listen = "127.0.0.1:%d"; proxy_pass = "u2"; send_proxy_protocol = "v2"; }""" % (p1, p2),
        """u1 = { servers = ( "%s" ); }; u2 = { servers = ( "%s" ); };""" % (v1.address, v2.address)),
        workers=1)
    c = socket.create_connection(("127.0.0.1", p1), timeout=10)
    cport = c.getsockname()[1]
    c.sendall(b"PAYLOAD")
    eq(c.recv(2), b"ok")
    c.close()
    eq(got["v1"], b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\nPAYLOAD" % (cport, p1))
    c = socket.create_connection(("127.0.0.1", p2), timeout=10)
    cport = c.getsockname()[1]
    c.sendall(b"PAYLOAD")
    eq(c.recv(2), b"ok")
    c.close()
    d = got["v2"]
    eq(d[:12], b"\r\n\r\n\0\r\nQUIT\n")
    eq(d[12:16], b"\x21\x11\x00\x0c")
    eq(d[16:20], socket.inet_aton("127.0.0.1"))
    eq(struct.unpack("!HH", d[24:28]), (cport, p2))
    eq(d[28:], b"PAYLOAD")


# ---- TLS ----

class TlsBackend:
    """openssl s_server with a certificate: who answered shows in the
    certificate the client sees."""

    def __init__(self, cert, key, alpn=None):
        self.port = free_port()
        cmd = ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", cert,
               "-key", key, "-www", "-quiet"]
        if alpn:
            cmd += ["-alpn", alpn]
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL,
                                  preexec_fn=legate_test._die_with_parent(signal.SIGKILL))
        legate_test._all_procs.append(self.p)
        legate_test._track(self)        # before the wait: stopped even if it never comes up
        self.address = "127.0.0.1:%d" % self.port
        wait_until(lambda: _tcp_open(self.port), timeout=10, what="s_server up")

    def teardown(self):
        self.p.kill()
        self.p.wait(5)


def _tcp_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def s_client(port, *args, data=b"", timeout=20):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def preread_conf(port, a, b, default, extra=""):
    return stream_conf(
        """{ listen = "127.0.0.1:%d"; ssl_preread = true; preread_timeout = "1s";
             access_log = "logs/stream.log"; %s
             routes = ( { server_name = "a.test"; proxy_pass = "a"; },
                        { server_name = [ "b.test", "*.b.test" ]; proxy_pass = "b"; },
                        { alpn = "imap"; proxy_pass = "b"; } );
             proxy_pass = "dflt"; }""" % (port, extra),
        """a = { servers = ( "%s" ); }; b = { servers = ( "%s" ); }; dflt = { servers = ( "%s" ); };"""
        % (a, b, default))


@test
def tls_passthrough_by_sni_and_alpn():
    c = certs()
    a = TlsBackend(c + "/server-rsa.pem", c + "/server-rsa.key")   # CN localhost
    b = TlsBackend(c + "/other.pem", c + "/other.key")              # CN other.test
    dflt = ScriptedServer(tagged_echo(b"D"))
    port = free_port()
    lg = Legate(preread_conf(port, a.address, b.address, dflt.address), workers=1)
    out = s_client(port, "-servername", "a.test", data=b"GET / HTTP/1.0\r\n\r\n")
    contains(out, "CN = localhost", "a.test went to the backend with its own certificate")
    out = s_client(port, "-servername", "x.b.test", data=b"GET / HTTP/1.0\r\n\r\n")
    contains(out, "CN = other.test", "*.b.test")
    out = s_client(port, "-servername", "c.test", "-alpn", "imap", data=b"GET / HTTP/1.0\r\n\r\n")
    contains(out, "CN = other.test", "ALPN imap")
    # not TLS at all: the default upstream, bytes untouched
    eq(session(port, b"plain text"), b"Dplain text")
    lines = access_lines(lg, 4)
    ok(any('sni="a.test"' in l for l in lines), lines)


@test
def one_port_for_passthrough_and_legates_own_https():
    c = certs()
    other = TlsBackend(c + "/other.pem", c + "/other.key")     # keeps its own key
    origin = Origin("web")
    port, hport = free_port(), free_port()
    lg = Legate("""
error_log_level = "info";
http = {
    upstreams = { web = { servers = ( "%s" ); }; };
    servers = ( { listen = ( { address = "127.0.0.1:%d"; tls = true; http2 = true; } );
                  server_name = "localhost";
                  tls_certificates = ( { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; } );
                  routes = ( { prefix = "/"; proxy_pass = "web"; } ); } );
};
stream = {
    upstreams = { other = { servers = ( "%s" ); }; };
    servers = ( { listen = "127.0.0.1:%d"; ssl_preread = true;
                  routes = ( { server_name = "localhost"; http = "127.0.0.1:%d"; },
                             { server_name = "other.test"; proxy_pass = "other"; } ); } );
};
""" % (origin.address, hport, c, c, other.address, port, hport), workers=1)
    # localhost: legate's own HTTPS server on the same connection (HTTP/2 by ALPN)
    st, h, body = curl("--cacert", c + "/ca.pem", "--http2",
                       "--resolve", "localhost:%d:127.0.0.1" % port,
                       "https://localhost:%d/hello" % port)
    eq(st, 200)
    contains(body.decode(errors="replace"), "/hello")
    v = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version}", "--cacert",
                        c + "/ca.pem", "--http2", "--resolve", "localhost:%d:127.0.0.1" % port,
                        "https://localhost:%d/" % port], capture_output=True, timeout=30)
    eq(v.stdout, b"2", "HTTP/2 chosen by ALPN in the handshake legate's server did")
    # other.test: passed through untouched to the backend with its own certificate
    out = s_client(port, "-servername", "other.test", data=b"GET / HTTP/1.0\r\n\r\n")
    contains(out, "CN = other.test")
    ok(lg.alive())


@test
def clienthello_split_into_single_bytes():
    got = []

    def rec(s, peer):
        d = b""
        s.settimeout(10)
        while True:
            x = s.recv(65536)
            if not x:
                break
            d += x
        got.append(d)
        s.sendall(b"A-side")
    a = ScriptedServer(rec)
    dflt = ScriptedServer(tagged_echo(b"D"))
    port = free_port()
    Legate(preread_conf(port, a.address, dflt.address, dflt.address), workers=1)
    # a real ClientHello from Python's TLS, through memory
    hello = client_hello("a.test")
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(hello)):
        c.send(hello[i:i + 1])
        if i % 16 == 0:
            time.sleep(0.002)
    c.shutdown(socket.SHUT_WR)
    eq(recv_all(c), b"A-side", "routed by the name read from many segments")
    c.close()
    eq(got, [hello], "the hello reached the backend byte for byte")


@test
def client_that_sends_nothing_times_out():
    dflt = ScriptedServer(tagged_echo(b"D"))
    port = free_port()
    lg = Legate(preread_conf(port, dflt.address, dflt.address, dflt.address), workers=1)
    n0 = dflt.connections
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    eq(recv_all(c, timeout=10), b"")
    dt = time.monotonic() - t0
    c.close()
    ok(0.8 <= dt < 6, "closed after preread_timeout (%.2f s)" % dt)
    eq(dflt.connections, n0, "no upstream was connected")
    ok(lg.alive())


@test
def tls_termination_client_cert_and_tls_upstream():
    c = certs()
    plain = ScriptedServer(tagged_echo(b"P"))
    tls_up = TlsBackend(c + "/other.pem", c + "/other.key")
    p1, p2 = free_port(), free_port()
    Legate(stream_conf(
        """{ listen = ( { address = "127.0.0.1:%d"; tls = true; } ); proxy_pass = "plain";
             tls_certificates = ( { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );
             tls_client_ca = "%s/ca.pem"; tls_verify_client = "on"; },
           { listen = "127.0.0.1:%d"; proxy_pass = "secure"; }"""
        % (p1, c, c, c, p2),
        """plain = { servers = ( "%s" ); };
           secure = { tls = true; tls_ca = "%s/ca.pem"; tls_server_name = "other.test";
                      servers = ( "%s" ); };""" % (plain.address, c, tls_up.address)), workers=1)
    ctx = ssl.create_default_context(cafile=c + "/ca.pem")
    ctx.load_cert_chain(c + "/client.pem", c + "/client.key")
    with socket.create_connection(("127.0.0.1", p1), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            t.sendall(b"inside")
            eq(t.recv(100), b"Pinside", "decrypted and relayed in the clear")
    # without a client certificate: refused in the handshake
    ctx2 = ssl.create_default_context(cafile=c + "/ca.pem")
    refused = False
    try:
        with socket.create_connection(("127.0.0.1", p1), timeout=10) as raw:
            with ctx2.wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"x")
                refused = t.recv(10) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        refused = True
    ok(refused, "no client certificate, no session")
    # TLS towards the upstream: plain bytes in, s_server's page out
    r = session(p2, b"GET / HTTP/1.0\r\n\r\n")
    contains(r, b"HTTP/1.0 200 ok", "TLS to the upstream, verified against the CA")


@test
def the_shipped_example_works():
    """conf/examples/stream.conf as shipped, its ports moved to free ones."""
    text = open(os.path.join(REPO, "conf", "examples", "stream.conf")).read()
    db1, db2 = ScriptedServer(tagged_echo(b"1")), ScriptedServer(tagged_echo(b"2"))
    a, b = ScriptedServer(tagged_echo(b"a")), ScriptedServer(tagged_echo(b"b"))
    ports = {"5432": free_port(), "8443": free_port(), "9001": db1.port, "9002": db2.port,
             "9101": a.port, "9102": b.port}
    for old_port, new_port in ports.items():
        ok("127.0.0.1:%s" % old_port in text, "the example uses %s" % old_port)
        text = text.replace("127.0.0.1:%s\"" % old_port, "127.0.0.1:%d\"" % new_port)
    Legate(text, workers=None)
    got = set()
    for _ in range(60):         # least_conn breaks ties at random: both, soon
        got.add(session(ports["5432"], b"q")[:1])
        if len(got) == 2:
            break
    eq(got, {b"1", b"2"}, "both database servers")
    for name, tag in (("a.test", b"a"), ("b.test", b"b")):
        hello = client_hello(name)
        eq(session(ports["8443"], hello), tag + hello, "%s by its SNI, bytes untouched" % name)


@test
def metrics_count_sessions():
    srv = ScriptedServer(tagged_echo(b"M"))
    port, dead_port, mport = free_port(), free_port(), free_port()
    lg = Legate("""
http = { servers = ( { listen = "127.0.0.1:%d"; routes = ( { exact = "/metrics"; status = "metrics"; } ); } ); };
stream = {
    upstreams = { m = { servers = ( "%s" ); }; gone = { servers = ( "127.0.0.1:%d" ); }; };
    servers = ( { listen = "127.0.0.1:%d"; proxy_pass = "m"; },
                { listen = "127.0.0.1:%d"; proxy_pass = "gone"; } );
};
""" % (mport, srv.address, free_port(), port, dead_port), workers=2)

    def value(text, name, **labels):
        for line in text.splitlines():
            if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def scrape():
        st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
        eq(st, 200)
        return body.decode()
    before = scrape()
    ok2 = value(before, "legate_stream_sessions_total", server="127.0.0.1:%d" % port, status="2xx") or 0
    bad = value(before, "legate_stream_sessions_total", server="127.0.0.1:%d" % dead_port, status="5xx") or 0
    for _ in range(3):
        eq(session(port, b"12345"), b"M12345")
    for _ in range(2):
        ok(refused(dead_port))

    def counted():
        t = scrape()
        a = value(t, "legate_stream_sessions_total", server="127.0.0.1:%d" % port, status="2xx")
        b = value(t, "legate_stream_sessions_total", server="127.0.0.1:%d" % dead_port, status="5xx")
        rx = value(t, "legate_stream_received_bytes_total", server="127.0.0.1:%d" % port)
        tx = value(t, "legate_stream_sent_bytes_total", server="127.0.0.1:%d" % port)
        # >=: the harness's start-up probes are sessions too (no bytes), and
        # they may be counted after the first scrape -- so the counts alone
        # can be reached before the three real sessions are: wait for their
        # bytes as well
        return t if (a is not None and b is not None and a >= ok2 + 3 and b >= bad + 2 and
                     rx is not None and rx >= 15 and tx is not None and tx >= 18) else None
    t = wait_until(counted, timeout=10, what="the sessions and their bytes in the metrics")
    contains(t, "# TYPE legate_stream_session_seconds_total counter")
    ok(lg.alive())


# ---- UDP ----

class DnsResponder:
    """A tiny DNS server on UDP: every A query is answered with `ip`, or
    (answer=False) nothing is sent back (a syslog-like sink)."""

    def __init__(self, ip, answer=True):
        self.ip = ip
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.got = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()
        legate_test._track(self)

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                q, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append(q)
            if not self.answer or len(q) < 12:
                continue
            # the header with QR, RD, RA, one question and one answer; the question as asked
            qend = 12
            while q[qend] != 0:
                qend += 1 + q[qend]
            qend += 5
            r = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:qend]
            r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(self.ip)
            self.sock.sendto(r, peer)

    def teardown(self):
        self._stop = True
        self.sock.close()


def dns_query(name, qid):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


def dns_answer_ip(r, qid):
    eq(struct.unpack("!H", r[:2])[0], qid, "the answer's ID")
    eq(r[3] & 0x0f, 0, "rcode")
    return socket.inet_ntoa(r[-4:])


def udp_conf(port, ups, extra="", upextra=""):
    # the same port on TCP too, to its own upstream (DNS over TCP; the
    # harness sees the address accept)
    tcp = ScriptedServer(tagged_echo(b"T"))
    return stream_conf(
        """{ listen = { address = "127.0.0.1:%d"; udp = true; };
             proxy_pass = "dns"; access_log = "logs/stream.log"; %s },
           { listen = "127.0.0.1:%d"; proxy_pass = "dnstcp"; }""" % (port, extra, port),
        """dns = { servers = ( %s ); %s }; dnstcp = { servers = ( "%s" ); };"""
        % (", ".join('"%s"' % u for u in ups), upextra, tcp.address))


def ask(port, name="example.test", qid=7, sock=None, timeout=5):
    c = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(timeout)
    try:
        c.sendto(dns_query(name, qid), ("127.0.0.1", port))
        r, _ = c.recvfrom(65536)
        return dns_answer_ip(r, qid)
    finally:
        if sock is None:
            c.close()


@test
def udp_dns_balanced_with_sessions():
    d1, d2 = DnsResponder("10.0.0.1"), DnsResponder("10.0.0.2")
    port = free_port()
    lg = Legate(udp_conf(port, [d1.address, d2.address], 'proxy_timeout = "3s";'), workers=1)
    # one client socket is one session: its queries stay on one server
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first = ask(port, qid=1, sock=c)
    for i in range(2, 5):
        eq(ask(port, qid=i, sock=c), first, "the session's server")
    c.close()
    # new clients (new source ports) are balanced over both servers
    seen = {ask(port, qid=100 + i) for i in range(6)}
    eq(seen, {"10.0.0.1", "10.0.0.2"}, "round robin over sessions")
    eq(session(port, b"tcp"), b"Ttcp", "the same port over TCP, its own server")
    # the sessions end after proxy_timeout, each with its line
    lines = wait_until(lambda: [l for l in (access_lines(lg, 1) or []) if " udp " in l and
                                "proxy_timeout" in l] if len([l for l in access_lines(lg, 1)
                                if " udp " in l]) >= 7 else None, timeout=20, what="7 udp lines")
    ok(any("datagrams=4/4" in l for l in lines), lines)
    # (in any order: sessions that time out in one turn of the loop are
    # logged in the timer heap's order)
    one = [l for l in lines if re.search(r'^127\.0\.0\.1 \[.*\] 127\.0\.0\.1:%d udp 200 \d+ \d+ [0-9.]+ '
                                         r'upstream=127\.0\.0\.1:\d+ datagrams=1/1 ended="proxy_timeout"$'
                                         % port, l)]
    eq(len(one), 6, "a line for each one-query session: %r" % lines)


@test
def udp_proxy_responses_ends_sessions_and_refusals_count():
    live = DnsResponder("10.0.0.9")
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_addr = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()                # nothing there: ICMP port unreachable
    port = free_port()
    lg = Legate(udp_conf(port, [dead_addr, live.address], "proxy_responses = 1;",
                         'max_fails = 1; fail_timeout = "30s";'), workers=1)
    answers = []
    for i in range(8):
        try:
            answers.append(ask(port, qid=i, timeout=1))
        except socket.timeout:
            answers.append(None)        # the one sent to the dead server
    ok(answers.count(None) <= 1, "a refusing server is left out after its failure: %r" % answers)
    ok(answers[-4:] == ["10.0.0.9"] * 4, answers)
    lines = wait_until(lambda: [l for l in access_lines(lg, 1) if 'ended="answered"' in l] or None,
                       timeout=10, what="answered sessions")
    ok(all("datagrams=1/1" in l for l in lines), lines)
    log = lg.log_text()
    contains(log, dead_addr)


@test
def udp_datagrams_one_way_and_the_session_limit():
    sink = DnsResponder("0.0.0.0", answer=False)
    port = free_port()
    lg = Legate(udp_conf(port, [sink.address], 'proxy_timeout = "1s"; udp_sessions = 2;'), workers=1)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for i, c in enumerate(clients):
        for k in range(3):
            c.sendto(b"<13>syslog line %d.%d" % (i, k), ("127.0.0.1", port))
        time.sleep(0.05)
    wait_until(lambda: len(sink.got) >= 6, timeout=10, what="two clients' datagrams")
    time.sleep(0.3)
    eq(sorted(sink.got)[:6], sorted(b"<13>syslog line %d.%d" % (i, k) for i in range(2) for k in range(3)))
    eq(len(sink.got), 6, "the third client is over udp_sessions: dropped")
    for c in clients:
        c.close()
    lg.wait_log(r"udp_sessions allows", timeout=5)
    lines = wait_until(lambda: [l for l in access_lines(lg, 1) if " udp " in l] or None,
                       timeout=10, what="udp lines")
    ok(all("datagrams=3/0" in l for l in lines), lines)


@test
def udp_reload_old_worker_ends_with_its_sessions():
    d = DnsResponder("10.0.0.5")
    port = free_port()
    lg = Legate(udp_conf(port, [d.address], 'proxy_timeout = "2s";'), workers=1)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    eq(ask(port, qid=1, sock=c), "10.0.0.5")
    old = set(lg.workers())
    lg.signal(signal.SIGHUP)
    wait_until(lambda: set(lg.workers()) - old, timeout=20, what="a new worker")
    eq(ask(port, qid=2, sock=c), "10.0.0.5", "answered across the reload")
    c.close()
    # the old worker's session times out, then it goes (long before shutdown_timeout)
    wait_until(lambda: not (set(lg.workers()) & old), timeout=8, what="the old worker to exit")


# ---- lifecycle and config ----

@test
def reload_lets_a_session_go_on():
    srv = ScriptedServer(tagged_echo(b"R"))
    port = free_port()
    conf = stream_conf("""{ listen = "127.0.0.1:%d"; proxy_pass = "r"; }""" % port,
                       """r = { servers = ( "%s" ); };""" % srv.address)
    lg = Legate(conf, workers=1)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.settimeout(10)
    c.sendall(b"1")
    eq(c.recv(10), b"R1")
    old = set(lg.workers())
    lg.signal(signal.SIGHUP)
    new = wait_until(lambda: set(lg.workers()) - old, timeout=20, what="a new worker")
    c.sendall(b"2")
    eq(c.recv(10), b"R2", "the session goes on in the old worker")
    eq(session(port, b"3"), b"R3", "new sessions in the new worker")
    ok(set(lg.workers()) & old, "the old worker waits for its session")
    t0 = time.monotonic()
    c.shutdown(socket.SHUT_WR)
    eq(recv_all(c), b"")
    c.close()
    # its last session over, the old worker goes (long before shutdown_timeout, 10 s)
    wait_until(lambda: not (set(lg.workers()) & old), timeout=8, what="the old worker to exit")
    ok(time.monotonic() - t0 < 8)
    ok(new)


@test
def config_errors_name_file_and_line():
    up = """u = { servers = ( "127.0.0.1:1" ); };"""
    cases = [
        ("""{ listen = "127.0.0.1:1"; }""", up, "stream server has no 'proxy_pass'"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "nope"; }""", up, "no upstream \"nope\" in stream.upstreams"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; send_proxy_protocol = "v3"; }""", up,
         "'send_proxy_protocol' must be"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; routes = ( { server_name = "a"; proxy_pass = "u"; } ); }""",
         up, "need ssl_preread = true"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; gzip = true; }""", up, "gzip"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; }""",
         """u = { servers = ( "127.0.0.1:1" ); health_check = { type = "udp"; }; };""",
         "health_check 'type' must be"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; ssl_preread = true;
              routes = ( { alpn = "h 2"; proxy_pass = "u"; } ); }""", up, "invalid ALPN"),
        ("""{ listen = { address = "127.0.0.1:1"; udp = true; }; proxy_pass = "u"; ssl_preread = true; }""",
         up, "ssl_preread does not apply to a udp listen"),
        ("""{ listen = "127.0.0.1:1"; proxy_pass = "u"; ssl_preread = true;
              routes = ( { server_name = "a"; http = "127.0.0.1:2"; } ); }""", up,
         "'http': no HTTP server listens on 127.0.0.1:2"),
        ("""{ listen = { address = "127.0.0.1:1"; udp = true; }; proxy_pass = "u";
              access_rules = [ "allow 127.0.0.1", "deny all" ]; }""", up,
         "access_rules do not apply to a udp listen"),
    ]
    for servers, ups, msg in cases:
        text = stream_conf(servers, ups)
        rc, err = check_config(text)
        ok(rc != 0, "refused: %s" % msg)
        contains(err, msg)
        ok(re.search(r"legate\.conf:\d+: ", err), "file:line in %r" % err)
    # the line is the offending one
    text = stream_conf("""{ listen = "127.0.0.1:1";\n proxy_pass = "zz"; }""", up)
    rc, err = check_config(text)
    contains(err, "legate.conf:%d:" % line_of(text, 'proxy_pass = "zz"'))
    # an HTTP server and a stream server on one address
    text = """http = { servers = ( { listen = "127.0.0.1:7"; routes = ( { prefix = "/"; return = 204; } ); } ); };
stream = { upstreams = { %s }; servers = ( { listen = "127.0.0.1:7"; proxy_pass = "u"; } ); };""" % up
    rc, err = check_config(text)
    ok(rc != 0)
    contains(err, "is a stream server's address and an HTTP server's too")
    # stream upstreams and http upstreams share their names
    text = """http = { upstreams = { u = { servers = ( "127.0.0.1:2" ); }; };
  servers = ( { listen = "127.0.0.1:8"; routes = ( { prefix = "/"; proxy_pass = "u"; } ); } ); };
stream = { upstreams = { %s }; servers = ( { listen = "127.0.0.1:9"; proxy_pass = "u"; } ); };""" % up
    rc, err = check_config(text)
    ok(rc != 0)
    contains(err, "upstream 'u' is defined twice")


@test
def effective_config_T_round_trips():
    text = open(os.path.join(REPO, "conf", "examples", "stream.conf")).read()
    text += """
"""
    rc, err = check_config(text, extra_args=["-T"])
    eq(rc, 0, err)
    out = check_config.last_stdout
    contains(out, "\nstream = {")
    contains(out, 'type = "tcp";')
    contains(out, 'server_name = [ "a.test" ]; proxy_pass = "a";')
    ok("8443" not in out.split("\nstream = {")[0], "stream servers are not dumped as HTTP servers")
    rc, err = check_config(out)
    eq(rc, 0, "the dump is a configuration legate takes: %s" % err)


if __name__ == "__main__":
    main()

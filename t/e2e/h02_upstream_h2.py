#!/usr/bin/env python3
"""HTTP/2 to upstreams (protocol = "h2c"): one multiplexed connection per
server per worker for HTTP/1.1 clients (curl) and HTTP/2 clients (curl
--http2-prior-knowledge, h2load); the upstream's
SETTINGS_MAX_CONCURRENT_STREAMS respected, h2_connections; a GOAWAY from
the upstream and the streams above its last-stream-id sent again on a new
connection; request and response bodies intact (sha256) with and without
a length; trailer fields passed to both kinds of client; and gRPC end to
end with Debian's python3-grpcio (unary, server streaming, bidirectional
streaming, an error's grpc-status, deadlines, proxy_read_timeout), and
conf/examples/grpc.conf.

The origin is t/h2origin.py (python3-h2)."""
import hashlib
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

try:
    import h2.connection
    import h2.config
    import h2.events
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.connection
        import h2.config
        import h2.events
    except ImportError:
        h2 = None

H2LOAD = shutil.which("h2load")
H2ORIGIN = os.path.join(REPO, "t", "h2origin.py")


class H2Origin(Origin):
    """A t/h2origin.py process: h2c only; .stats() over a plain HTTP/1.1 GET."""

    def __init__(self, *args):
        if h2 is None:
            raise Skip("python3-h2 not installed")
        self.name = "h2"
        self.host = "127.0.0.1"
        self.unix_path = None
        self._tmp = None
        self.proc = subprocess.Popen([sys.executable, H2ORIGIN, "--port", "0"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        _track(self)
        line = self._read_line(10.0)
        m = re.match(r"PORT (\d+)", line)
        if not m:
            self.stop()
            fail("h2 origin did not start (got %r)" % line)
        self.port = int(m.group(1))


def conf(port, origin_addr, up_extra="", route_extra="", http_extra=""):
    return """
http = {
  client_max_body_size = "100m";
  %s
  upstreams = { app = { servers = ( "%s" ); protocol = "h2c"; %s }; };
  servers = ( {
      listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
      routes = ( { prefix = "/"; proxy_pass = "app"; %s } );
  } );
};
""" % (http_extra, origin_addr, up_extra, port, route_extra)


def start(up_extra="", origin_args=(), workers=1, **kw):
    o = H2Origin(*origin_args)
    lg = Legate(conf(free_port(), o.address, up_extra, **kw), workers=workers)
    return o, lg


def pattern(n):
    base = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (base * (n // len(base) + 1))[:n]


def h2c(*args, **kw):
    return curl("--http2-prior-knowledge", *args, **kw)


def h2load(*args):
    if H2LOAD is None:
        raise Skip("h2load (nghttp2-client) not installed")
    p = subprocess.run([H2LOAD] + [str(a) for a in args], capture_output=True, timeout=120)
    out = p.stdout.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    ok(m, "h2load said: %s" % out[-500:])
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    return int(m.group(1)), int(m.group(3)), int(codes.group(1)), out


# ---- plain HTTP through an h2c upstream ----

@test
def http1_clients_share_one_connection():
    o, lg = start()
    for i in range(20):
        st, hd, body = curl(lg.url("/x?size=%d" % (100 + i)))
        eq(st, 200)
        eq(body, pattern(100 + i))
        eq(hd.get("x-request-te"), "trailers", "te: trailers goes to an HTTP/2 upstream")
        eq(hd.get("x-request-method"), "GET")
        contains(hd.get("x-request-authority"), "127.0.0.1", ":authority from Host")
        ok(hd.get("x-origin-conn") == "1", "every request on the first connection")
    # keep-alive clients, several at once
    threads, res = [], []
    for _ in range(8):
        t = threading.Thread(target=lambda: res.append(
            (curl(lg.url("/y?size=5000&delay=50")), curl(lg.url("/y?size=7&nolen=1")))))
        threads.append(t)
        t.start()
    for t in threads:
        t.join(60)
    eq(len(res), 8)
    for (st, _, body), (st2, _, body2) in res:
        eq((st, st2), (200, 200))
        eq(body, pattern(5000))
        eq(body2, pattern(7))
    # a head near the client's field limit, plus the fields the proxy adds
    many = []
    for i in range(95):
        many += ["-H", "X-F%d: %d" % (i, i)]
    st, hd, body = curl(*many, lg.url("/m?size=3"))
    eq((st, body), (200, pattern(3)), "95 fields and the proxy's own")
    # HEAD, 204 and 304 have no body
    st, hd, body = curl("-I", lg.url("/h?size=100"))
    eq(st, 200)
    eq(hd.get("content-length"), "100")
    st, _, body = curl(lg.url("/n?status=204"))
    eq((st, body), (204, b""))
    s = o.stats()
    eq(s["connections"], 1, "one TCP connection to the upstream")
    eq(s["requests"], 20 + 16 + 1 + 2)


@test
def http2_clients_share_one_connection():
    o, lg = start()
    total, succeeded, ok2xx, out = h2load("-n", 400, "-c", 4, "-m", 10, lg.url("/x?size=1000"))
    eq((total, succeeded, ok2xx), (400, 400, 400), out)
    st, hd, body = h2c(lg.url("/z?size=70000&nolen=1"))
    eq((st, body), (200, pattern(70000)))
    s = o.stats()
    eq(s["connections"], 1, "one TCP connection to the upstream")
    eq(s["requests"], 401)
    ok(s["max_active"] > 1, "streams were multiplexed (max %d at once)" % s["max_active"])


@test
def bodies_intact():
    o, lg = start()
    data = os.urandom(3 * 1000 * 1000 + 17)
    want = hashlib.sha256(data).hexdigest()
    path = os.path.join(lg.prefix, "up.bin")
    with open(path, "wb") as f:
        f.write(data)
    cases = [
        ("HTTP/1.1 Content-Length", []),
        ("HTTP/1.1 chunked", ["-H", "Transfer-Encoding: chunked"]),
        ("HTTP/2", ["--http2-prior-knowledge"]),
    ]
    for what, args in cases:
        for nolen in (0, 1):
            out = os.path.join(lg.prefix, "down.bin")
            st, hd, _ = curl(*args, "--data-binary", "@" + path, "-o", out,
                             lg.url("/echo?echo=1&nolen=%d" % nolen), out=out)
            eq(st, 200, what)
            eq(hd.get("x-body-sha256"), want, "%s: the upstream got the body intact" % what)
            with open(out, "rb") as f:
                eq(hashlib.sha256(f.read()).hexdigest(), want, "%s: the echo came back intact" % what)
    # downloads, with and without a content-length, through both clients
    n = 5 * 1000 * 1000 + 3
    for args in ([], ["--http2-prior-knowledge"]):
        for nolen in (0, 1):
            st, hd, body = curl(*args, lg.url("/d?size=%d&nolen=%d" % (n, nolen)))
            eq(st, 200)
            eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(pattern(n)).hexdigest())
    eq(o.stats()["connections"], 1)


@test
def early_answer_closes_http1_client():
    # the upstream answers before it reads the body (and never does): the
    # client's connection ends after the answer, its unsent body is never
    # taken for a next request
    o, lg = start()
    c = Conn(lg.port)
    body = b"x" * 1000000
    c.send(b"POST /e?early=1&status=413 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
           % len(body) + body[:200000])
    r = c.read_response()
    eq(r.status, 413)
    ok(c.closed(10), "the connection closed after the early answer")
    st, _, b = curl(lg.url("/after?size=3"))
    eq((st, b), (200, pattern(3)))
    eq(o.stats()["connections"], 1)


def h2_get(port, path, timeout=10):
    """One request over h2c with python3-h2: (headers, body, trailers)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"),
                       (":authority", "localhost"), ("te", "trailers")], end_stream=True)
    s.sendall(c.data_to_send())
    hdrs, body, trailers, done = None, b"", None, False
    deadline = time.time() + timeout
    while not done and time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                hdrs = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        s.sendall(c.data_to_send())
    s.close()
    ok(done, "the stream ended")
    return hdrs, body, trailers


@test
def trailers_reach_both_clients():
    o, lg = start()
    want = hashlib.sha256(pattern(3000)).hexdigest()
    # HTTP/2 client: a trailing HEADERS
    hdrs, body, trailers = h2_get(lg.port, "/t?size=3000&nolen=1&trailers=1")
    eq(hdrs.get(":status"), "200")
    eq(body, pattern(3000))
    ok(trailers is not None, "trailers arrived")
    eq(trailers.get("x-trailer-a"), "one")
    eq(trailers.get("x-body-sha256"), want)
    # HTTP/1.1 client: in the last chunk
    raw = http_raw(lg.port, b"GET /t?size=3000&nolen=1&trailers=1 HTTP/1.1\r\nHost: x\r\n"
                   b"TE: trailers\r\nConnection: close\r\n\r\n", timeout=10)
    head, _, rest = raw.partition(b"\r\n\r\n")
    contains(head.lower(), b"transfer-encoding: chunked")
    ok(rest.endswith(b"0\r\nx-trailer-a: one\r\nx-body-sha256: " + want.encode() + b"\r\n\r\n"),
       "the trailer section ends the chunked body: %r" % rest[-120:])


@test
def http1_upstream_trailers_reach_both_clients():
    # the response pipe keeps a chunked body's trailer section whatever the
    # upstream's protocol: an HTTP/1.1 origin's trailers reach an HTTP/2
    # client as a trailing HEADERS and an HTTP/1.1 client in the last chunk
    def handler(sock, peer):
        read_request_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n")
    srv = ScriptedServer(handler)
    text = conf(free_port(), srv.address).replace('protocol = "h2c";', "")
    lg = Legate(text, workers=1)
    hdrs, body, trailers = h2_get(lg.port, "/")
    eq((hdrs.get(":status"), body), ("200", b"hello"))
    eq(trailers, {"x-checksum": "abc", "x-two": "2"})
    raw = http_raw(lg.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    ok(raw.endswith(b"\r\n0\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n"), "got %r" % raw[-80:])


@test
def max_concurrent_streams_respected():
    o, lg = start(origin_args=["--max-streams", "3"])
    total, succeeded, ok2xx, out = h2load("-n", 24, "-c", 2, "-m", 12, lg.url("/s?delay=100"))
    eq((total, succeeded, ok2xx), (24, 24, 24), out)
    s = o.stats()
    eq(s["connections"], 1, "h2_connections = 1: one connection, the requests wait for a stream")
    ok(s["max_active"] <= 3, "at most 3 streams at once (saw %d)" % s["max_active"])
    eq(s["requests"], 24)


@test
def h2_connections_spreads_over_connections():
    o, lg = start(up_extra="h2_connections = 3;", origin_args=["--max-streams", "2"])
    total, succeeded, ok2xx, out = h2load("-n", 30, "-c", 1, "-m", 30, lg.url("/s?delay=150"))
    eq((total, succeeded, ok2xx), (30, 30, 30), out)
    s = o.stats()
    eq(s["connections"], 3, "a new connection while every one is at its stream limit, up to 3")
    ok(s["max_active"] <= 2, "at most 2 streams at once per connection (saw %d)" % s["max_active"])


@test
def goaway_streams_go_again():
    # every connection takes 5 requests, then GOAWAY names the 5th as the
    # last: the streams already sent above it go again on a new connection
    o, lg = start(origin_args=["--goaway-after", "5"])
    total, succeeded, ok2xx, out = h2load("-n", 120, "-c", 3, "-m", 10, lg.url("/g?size=10"))
    eq((total, succeeded, ok2xx), (120, 120, 120), out)
    for i in range(10):
        st, _, body = curl(lg.url("/g1?size=5"))
        eq((st, body), (200, pattern(5)))
    s = o.stats()
    eq(s["requests"], 130, "each request answered once")
    ok(s["refused"] > 0, "some streams were above a GOAWAY's last stream")
    ok(s["connections"] >= 26, "a new connection after each GOAWAY (%d)" % s["connections"])
    lg.allow_log(r"GOAWAY")


@test
def h2_over_tls_by_alpn():
    certs = os.path.join(REPO, "conf", "examples", "certs")
    o = H2Origin("--tls", os.path.join(certs, "server-rsa.pem"), os.path.join(certs, "server-rsa.key"))
    text = conf(free_port(), o.address, 'tls = true; tls_verify = false;').replace(
        'protocol = "h2c"', 'protocol = "h2"')
    lg = Legate(text, workers=1)
    for i in range(5):
        st, hd, body = curl(lg.url("/tls?size=%d" % (3000 + i)))
        eq((st, body), (200, pattern(3000 + i)))
    total, succeeded, ok2xx, out = h2load("-n", 100, "-c", 2, "-m", 10, lg.url("/tls?size=100"))
    eq((total, succeeded, ok2xx), (100, 100, 100), out)
    eq(o.stats()["connections"], 1, "one TLS connection")
    # a server that does not choose h2 by ALPN: a connect error (502)
    plain = Origin("plain-tls-less")
    text = conf(free_port(), plain.address, 'tls = true; tls_verify = false;').replace(
        'protocol = "h2c"', 'protocol = "h2"')
    lg2 = Legate(text, workers=1)
    st, _, _ = curl(lg2.url("/x"), check=False)
    eq(st, 502)
    lg2.allow_log(r"TLS handshake|HTTP/2 upstream|connect")


@test
def protocol_setting_checked():
    for bad, msg in (('protocol = "h3";', "unknown upstream protocol"),
                     ('protocol = "h2";', "over TLS"),
                     ('protocol = "h2c"; tls = true;', "without TLS")):
        text = """http = { upstreams = { app = { servers = ( "127.0.0.1:1" ); %s }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } ); };
""" % (bad, free_port())
        rc, err = check_config(text)
        ok(rc != 0, "%s is refused" % bad)
        contains(err, msg)


@test
def upstream_down_is_502():
    port = free_port()
    lg = Legate(conf(free_port(), "127.0.0.1:%d" % port), workers=1)
    st, _, _ = curl(lg.url("/x"), check=False)
    eq(st, 502)
    st, _, _ = h2c(lg.url("/x"), check=False)
    eq(st, 502)
    lg.allow_log(r"connect\(\) to HTTP/2 upstream|HTTP/2 upstream")


# ---- gRPC ----
#
# The gRPC server and client are t/grpc_peer.py processes: grpcio's
# threads do not survive the fork()s this harness makes.

GRPC_PEER = os.path.join(REPO, "t", "grpc_peer.py")


def grpc_python():
    """A python3 that imports grpc (the default one, else Debian's)."""
    for py in (sys.executable, "/usr/bin/python3"):
        p = subprocess.run([py, "-c", "import sys; sys.path.append('/usr/lib/python3/dist-packages'); "
                            "import grpc"], capture_output=True, timeout=60)
        if p.returncode == 0:
            return py
    raise Skip("python3-grpcio not installed")


class GrpcServer(Origin):
    def __init__(self, port=0):
        self.name = "grpc"
        self.host = "127.0.0.1"
        self.unix_path = None
        self._tmp = None
        fd, self.events = tempfile.mkstemp(prefix="legate-grpc-")
        os.close(fd)
        self.proc = subprocess.Popen([grpc_python(), GRPC_PEER, "server", "--port", str(port),
                                      "--events", self.events],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        _track(self)
        line = self._read_line(30.0)
        m = re.match(r"PORT (\d+)", line)
        if not m:
            self.stop()
            fail("gRPC server did not start (got %r)" % line)
        self.port = int(m.group(1))

    def saw(self, what):
        with open(self.events) as f:
            return what in f.read().split()

    def stop(self):
        Origin.stop(self)
        if os.path.exists(self.events):
            os.unlink(self.events)

    teardown = stop


def grpc_client(port, case):
    p = subprocess.run([grpc_python(), GRPC_PEER, "client", "--port", str(port), case],
                       capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace").strip()
    ok(p.returncode == 0 and out.endswith("OK"),
       "gRPC client %s: %s %s" % (case, out, p.stderr.decode(errors="replace")[-300:]))


def grpc_setup(route_extra=""):
    srv = GrpcServer()
    lg = Legate(conf(free_port(), "127.0.0.1:%d" % srv.port, route_extra=route_extra), workers=1)
    return srv, lg


@test
def grpc_unary_and_errors():
    srv, lg = grpc_setup()
    grpc_client(lg.port, "unary")       # trailing metadata passed
    grpc_client(lg.port, "errors")      # grpc-status and grpc-message of an error passed


@test
def grpc_server_streaming():
    srv, lg = grpc_setup()
    grpc_client(lg.port, "server_stream")


@test
def grpc_bidirectional_streaming():
    srv, lg = grpc_setup()
    grpc_client(lg.port, "bidi")


@test
def grpc_deadlines():
    srv, lg = grpc_setup()
    grpc_client(lg.port, "deadline")
    wait_until(lambda: srv.saw("cancelled"), 10, what="the server saw the call cancelled")
    # the proxy's read timeout bounds a call with a longer deadline
    srv2, lg2 = grpc_setup(route_extra='proxy_read_timeout = "1s";')
    grpc_client(lg2.port, "read_timeout")
    lg2.allow_log(r"upstream timed out")


@test
def grpc_example_conf():
    grpc_python()
    with open(os.path.join(REPO, "conf", "examples", "grpc.conf")) as f:
        text = f.read()
    contains(text, '"127.0.0.1:8080"')
    contains(text, '"127.0.0.1:9001"')
    # its own ports, unless another test (the WebSocket example's) has them:
    # then the same file on free ones
    lport, uport = 8080, 9001
    for p in (8080, 9001):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            lport, uport = free_port(), free_port()
        finally:
            s.close()
    text = text.replace('"127.0.0.1:8080"', '"127.0.0.1:%d"' % lport).replace(
        '"127.0.0.1:9001"', '"127.0.0.1:%d"' % uport)
    GrpcServer(uport)
    Legate(text, workers=1)
    grpc_client(lport, "unary")
    grpc_client(lport, "bidi")


if __name__ == "__main__":
    main()

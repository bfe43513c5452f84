#!/usr/bin/env python3
"""HTTP/2 to clients (RFC 9113): h2 by ALPN and h2c by prior knowledge,
the features of the pipeline over HTTP/2, the mapping to HTTP/1.1
upstreams, the defences against the known HTTP/2 attacks sent as raw
frames (rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS/PING floods,
zero windows, too many streams, provoked resets, idle connections), the
stream and connection errors RFC 9113 names, GOAWAY on reload, and
WebSocket over HTTP/2 (RFC 8441).

Clients: curl, h2load and nghttp (Debian's nghttp2-client) for ordinary
traffic; hyperframe + hpack (Debian's python3-hyperframe, python3-hpack)
for the raw frames ordinary clients refuse to send."""
import base64
import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
sys.path.insert(0, os.path.join(REPO, "t"))
import origin as origin_mod  # noqa: E402  (the body pattern)

try:
    import hpack
    import hyperframe.frame as hf
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import hpack
        import hyperframe.frame as hf
    except ImportError:
        hpack = hf = None

H2LOAD = shutil.which("h2load")
NGHTTP = shutil.which("nghttp")
CERTS = os.path.join(REPO, "conf", "examples", "certs")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 5, 6, 7, 8, 11


def need_frames():
    if hf is None:
        raise Skip("python3-hyperframe / python3-hpack not installed")


def conf(port, origin, tls_port=None, http_extra="", server_extra="", route_extra="",
         global_extra="", routes=None):
    listen = '{ address = "127.0.0.1:%d"; http2 = true; }' % port
    tls = ""
    if tls_port:
        listen += ', { address = "127.0.0.1:%d"; http2 = true; tls = true; }' % tls_port
        tls = ('tls_certificates = ( { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );'
               % (CERTS, CERTS))
    if routes is None:
        routes = '{ prefix = "/"; proxy_pass = "app"; %s }' % route_extra
    return """%s
http = {
  access_log = "logs/access.log";
  log_format = "$request|$status|$server_protocol|$body_bytes_sent";
  %s
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( {
      listen = ( %s );
      %s
      %s
      routes = ( %s );
  } );
};
""" % (global_extra, http_extra, origin.address, listen, tls, server_extra, routes)


def h2c(*args, **kw):
    return curl("--http2-prior-knowledge", *args, **kw)


# ---- a raw HTTP/2 client ----

class Raw:
    """One HTTP/2 connection spoken frame by frame."""

    def __init__(self, port, settings=None, preface=True, tls=False, timeout=5):
        need_frames()
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s)
        self.s = s
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        self.closed = False
        self.held = []          # frames of other streams, read while waiting for one
        self.table_sizes = []   # SETTINGS_HEADER_TABLE_SIZE values legate sent, in order
        self.auto_ack = True    # ack legate's SETTINGS as they are read
        if preface:
            self.raw(PREFACE)
            self.send(hf.SettingsFrame(0, settings=settings or {}))

    def raw(self, data):
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def send(self, *frames):
        self.raw(b"".join(f.serialize() for f in frames))

    def block(self, hdrs):
        return self.enc.encode(hdrs)

    def headers_frame(self, sid, hdrs, end_stream=True, end_headers=True):
        f = hf.HeadersFrame(sid)
        f.data = self.block(hdrs)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def request(self, sid, path="/", method="GET", extra=(), end_stream=True, authority="x"):
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", authority)] + list(extra)
        self.send(self.headers_frame(sid, hdrs, end_stream))

    def read_frame(self, timeout=5):
        """The next frame, or None when the connection closed."""
        deadline = time.time() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    f, _ = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
                    f.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                        # RFC 7541 4.2: the encoder follows the table size asked
                        # for (a size update starts its next block)
                        size = f.settings.get(hf.SettingsFrame.HEADER_TABLE_SIZE)
                        if size is not None:
                            self.enc.header_table_size = size
                            self.table_sizes.append(size)
                        if self.auto_ack:
                            self.send(hf.SettingsFrame(0, flags=["ACK"]))
                    if isinstance(f, hf.HeadersFrame):
                        # decoded now, in the order the frames came: HPACK's
                        # table changes with each block, and a block of another
                        # stream may be held and looked at later
                        f.decoded = self.dec.decode(f.data)
                    return f
            left = deadline - time.time()
            if left <= 0:
                raise TestFailure("no frame within %.1fs" % timeout)
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.buf += data

    def goaway(self, timeout=10):
        """The GOAWAY's error code, then the connection's end; None: closed without one."""
        deadline = time.time() + timeout
        code = None
        for f in self.held:
            if isinstance(f, hf.GoAwayFrame):
                code = f.error_code
        while time.time() < deadline:
            f = self.read_frame(max(0.1, deadline - time.time()))
            if f is None:
                return code
            if isinstance(f, hf.GoAwayFrame):
                code = f.error_code
        raise TestFailure("the connection stayed open after %.1fs" % timeout)

    def response(self, sid, timeout=10):
        """(status, headers dict, body, rst code or None) of stream sid."""
        status, hdrs, body = None, {}, b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            mine = [x for x in self.held if x.stream_id == sid]
            if mine:
                f = mine[0]
                self.held.remove(f)
            else:
                f = self.read_frame(max(0.1, deadline - time.time()))
            if f is None:
                raise TestFailure("connection closed before stream %d ended" % sid)
            if f.stream_id != sid:
                if f.stream_id or isinstance(f, hf.GoAwayFrame):
                    self.held.append(f)
                continue
            if isinstance(f, hf.HeadersFrame):
                for k, v in f.decoded:
                    k = k.decode() if isinstance(k, bytes) else k
                    v = v.decode() if isinstance(v, bytes) else v
                    if k == ":status":
                        status = int(v)
                    else:
                        hdrs[k] = v
            elif isinstance(f, hf.DataFrame):
                body += f.data
                if f.flow_controlled_length:
                    self.send(hf.WindowUpdateFrame(0, window_increment=f.flow_controlled_length),
                              hf.WindowUpdateFrame(sid, window_increment=f.flow_controlled_length))
            elif isinstance(f, hf.RstStreamFrame):
                return status, hdrs, body, f.error_code
            if "END_STREAM" in f.flags:
                return status, hdrs, body, None
        raise TestFailure("stream %d did not end within %.1fs" % (sid, timeout))

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def still_serves(lg):
    """Another client is served meanwhile: the attack hurt one connection."""
    st, _, body = h2c(lg.url("/alive?size=10"))
    eq(st, 200, "another client's request")
    eq(len(body), 10)


# ---- ordinary traffic ----

@test
def h2c_and_h2_over_tls_with_the_bytes_of_the_origin():
    with Origin("o1") as o:
        tp, pp = free_port(), free_port()
        lg = Legate(conf(pp, o, tls_port=tp))
        lg.url = lambda path: "http://127.0.0.1:%d%s" % (pp, path)
        st, h, body = h2c(lg.url("/a?size=70000"))
        eq(st, 200)
        eq(body, pattern(70000))
        eq(h.get("x-origin"), "o1")
        ok(h.get("connection") is None, "no connection-specific field in HTTP/2")
        out = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                              "https://127.0.0.1:%d/b" % tp], capture_output=True, timeout=20)
        eq(out.stdout, b"2", "ALPN chose h2")
        # the same listener still speaks HTTP/1.1
        st, h, body = curl(lg.url("/c?size=5"))
        eq((st, body), (200, pattern(5)))
        log = lg.wait_log_access(3)
        contains(log, "GET /a?size=70000 HTTP/2.0|200|HTTP/2.0|70000")
        contains(log, "GET /c?size=5 HTTP/1.1|200|HTTP/1.1|5")


def _wait_access(self, n, timeout=10):
    def text():
        try:
            with open(self.access_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
    wait_until(lambda: len(text().splitlines()) >= n, timeout, what="%d log lines" % n)
    return text()


Legate.wait_log_access = _wait_access


@test
def http2_off_offers_only_http11_by_alpn():
    with Origin("o1") as o:
        tp = free_port()
        text = conf(free_port(), o, tls_port=tp).replace("http2 = true; tls", "tls")
        lg = Legate(text)
        out = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                              "https://127.0.0.1:%d/b" % tp], capture_output=True, timeout=20)
        eq(out.stdout, b"1.1")
        ok(lg.alive(), "legate runs")


@test
def request_bodies_with_and_without_length_reach_the_origin_whole():
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, route_extra='client_max_body_size = "10m";'))
        data = os.urandom(3 * 1024 * 1024 + 7)
        want = hashlib.sha256(data).hexdigest()
        tmp = os.path.join(lg.prefix, "up.bin")
        with open(tmp, "wb") as f:
            f.write(data)
        import json
        st, _, body = h2c("--data-binary", "@" + tmp, lg.url("/p?echo=1"))
        eq(st, 200)
        d = json.loads(body)
        eq((d["body_len"], d["body_sha256"]), (len(data), want))
        # no content-length: END_STREAM delimits it; it goes up chunked
        st, _, body = h2c("-H", "Content-Length:", "-T", tmp, lg.url("/p?echo=1"))
        eq(st, 200)
        d = json.loads(body)
        eq((d["body_len"], d["body_sha256"]), (len(data), want))
        ok(["Transfer-Encoding", "chunked"] in d["headers"], "chunked upstream: %r" % d["headers"])


@test
def too_large_a_body_is_413():
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, route_extra='client_max_body_size = "1k";'))
        tmp = os.path.join(lg.prefix, "up.bin")
        with open(tmp, "wb") as f:
            f.write(b"x" * 5000)
        st, _, _ = h2c("--data-binary", "@" + tmp, lg.url("/p"))
        eq(st, 413)
        st, _, _ = h2c("-H", "Content-Length:", "-T", tmp, lg.url("/p"))
        eq(st, 413)
        still_serves(lg)


@test(timeout=120)
def large_download_in_flat_memory():
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o), workers=1)
        w = lg.workers()[0]
        before = rss_kb(w)
        n = 200 * 1024 * 1024
        h = hashlib.sha256()
        p = subprocess.Popen(["curl", "-s", "--http2-prior-knowledge", "--limit-rate", "100M",
                              lg.url("/big?size=%d&chunked=1" % n)], stdout=subprocess.PIPE)
        peak = 0
        got = 0
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            h.update(chunk)
            peak = max(peak, rss_kb(w))
        p.wait(30)
        eq(got, n)
        want = hashlib.sha256()
        for blk in pattern_blocks(n):
            want.update(blk)
        eq(h.hexdigest(), want.hexdigest())
        ok(peak - before < 16 * 1024, "worker RSS grew by %d KiB for a 200 MiB body" % (peak - before))


@test(timeout=90)
def a_slow_upstream_holds_the_upload_back_by_flow_control():
    """An upstream that stops reading: the client's window stays shut, so
    legate holds a window's worth, not the upload."""
    need_frames()
    stop = threading.Event()

    def never_reads(sock, peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stop.wait(40)
    up = ScriptedServer(never_reads)
    lg = Legate(conf(free_port(), up, route_extra='client_max_body_size = "1g";'), workers=1)
    w = lg.workers()[0]
    before = rss_kb(w)
    c = Raw(lg.port)
    c.request(1, "/up", method="POST", end_stream=False)
    # the client side of flow control: send while the windows allow
    conn_win, stream_win, sent = 65535, 65535, 0
    chunk = b"x" * 16384
    deadline = time.time() + 8
    while time.time() < deadline and sent < 256 << 20:
        k = min(len(chunk), conn_win, stream_win)
        if k > 0:
            c.send(hf.DataFrame(1, data=chunk[:k]))
            sent += k
            conn_win -= k
            stream_win -= k
            continue
        try:
            f = c.read_frame(0.5)
        except TestFailure:
            continue
        if f is None:
            break
        if isinstance(f, hf.WindowUpdateFrame):
            if f.stream_id == 0:
                conn_win += f.window_increment
            elif f.stream_id == 1:
                stream_win += f.window_increment
        if isinstance(f, hf.SettingsFrame) and hf.SettingsFrame.INITIAL_WINDOW_SIZE in f.settings:
            pass
    grown = rss_kb(w) - before
    ok(sent < 32 << 20, "the client could send %d bytes into a stalled upstream" % sent)
    ok(grown < 4096, "worker RSS grew by %d KiB" % grown)
    stop.set()
    c.close()
    up.stop()


@test
def many_streams_on_few_connections_all_answered():
    if H2LOAD is None:
        skip("h2load not installed")
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        out = subprocess.run([H2LOAD, "-n", "2000", "-c", "4", "-m", "32",
                              lg.url("/m?size=2048")], capture_output=True, timeout=120).stdout.decode()
        contains(out, "2000 succeeded, 0 failed, 0 errored")
        contains(out, "status codes: 2000 2xx")


@test
def bodyless_answers_end_with_their_headers():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        c = Raw(lg.port)
        c.request(1, "/h?size=100", method="HEAD")
        st, h, body, rst = c.response(1)
        eq((st, body, rst), (200, b"", None))
        eq(h.get("content-length"), "100")
        c.request(3, "/n?status=204")
        eq(c.response(3)[0::2], (204, b""))
        c.request(5, "/e?etag=v1", extra=[("if-none-match", '"v1"')])
        eq(c.response(5)[0::2], (304, b""))
        c.close()


@test
def cookie_crumbs_become_one_field_and_host_comes_from_authority():
    need_frames()
    import json
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        c = Raw(lg.port)
        c.request(1, "/c?echo=1", authority="site.example",
                  extra=[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")])
        st, _, body, _ = c.response(1)
        eq(st, 200)
        d = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
        eq(d.get("cookie"), "a=1; b=2")
        eq(d.get("host"), "site.example")
        eq(json.loads(body)["version"], "HTTP/1.1")
        c.close()


@test
def connection_specific_fields_are_malformed():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        c = Raw(lg.port)
        c.request(1, "/x", extra=[("connection", "keep-alive")])
        eq(c.response(1)[3], PROTOCOL_ERROR, "RST_STREAM for a connection field")
        c.request(3, "/x", extra=[("te", "gzip")])
        eq(c.response(3)[3], PROTOCOL_ERROR, "RST_STREAM for te other than trailers")
        c.request(5, "/x", extra=[("te", "trailers")])
        eq(c.response(5)[0], 200, "te: trailers is fine, and the connection lives on")
        c.close()
        eq(o.stats()["requests"], 1)


@test
def routes_access_rules_cache_and_gzip_apply_to_http2_requests():
    with Origin("o1") as o:
        routes = ('{ prefix = "/deny"; access_rules = "deny all"; proxy_pass = "app"; },'
                  '{ prefix = "/ret"; return = 302; location = "/elsewhere"; },'
                  '{ prefix = "/c"; cache = true; cache_valid = "200 1m"; proxy_pass = "app"; },'
                  '{ prefix = "/z"; gzip = true; gzip_types = "text/plain"; proxy_pass = "app"; }')
        lg = Legate(conf(free_port(), o, routes=routes, global_extra='cache_size = "4m";'))
        eq(h2c(lg.url("/deny"), check=False)[0], 403)
        st, h, _ = h2c(lg.url("/ret"))
        eq((st, h.get("location")), (302, "/elsewhere"))
        eq(h2c(lg.url("/nothing"))[0], 404)
        st, h, b1 = h2c(lg.url("/c/1?size=3000"))
        eq(h.get("x-cache"), "MISS")
        st, h, b2 = h2c(lg.url("/c/1?size=3000"))
        eq((st, h.get("x-cache"), b2), (200, "HIT", b1))
        st, h, body = h2c("-H", "Accept-Encoding: gzip", lg.url("/z?size=20000&ctype=text/plain"))
        eq(h.get("content-encoding"), "gzip")
        eq(gzip.decompress(body), pattern(20000))


@test(timeout=120)
def large_bodies_end_whole_when_the_upstream_is_done_first():
    """A 4 MiB answer the origin has sent long before the client has read
    it: the last buffers go out once no upstream event is left to wake
    the stream (the connection's flush ran out of rounds with the stream
    still queued, and its last KBs waited for ever)."""
    with Origin("o1") as o:
        port = free_port()
        Legate(conf(port, o), workers=1)
        for i in range(12):
            st, h, body = h2c("http://127.0.0.1:%d/big%d?size=4194304" % (port, i), timeout=20)
            eq(st, 200)
            ok(body == origin_mod.pattern(4194304), "download %d whole (%d bytes)" % (i, len(body)))


@test
def tls_client_certificates_over_h2():
    with Origin("o1") as o:
        tp = free_port()
        extra = ('tls_verify_client = "optional"; tls_client_ca = "%s/ca.pem";' % CERTS)
        text = conf(free_port(), o, tls_port=tp, server_extra=extra).replace(
            '"$request|$status|$server_protocol|$body_bytes_sent"', '"$server_protocol|$ssl_client_verify"')
        rc, err = check_config(text)
        eq(rc, 0, err)
        lg = Legate(text)
        out = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                              "https://127.0.0.1:%d/b" % tp], capture_output=True, timeout=20)
        eq(out.stdout, b"2")
        log = lg.wait_log_access(1)
        contains(log, "HTTP/2.0|NONE")


# ---- defences ----

@test
def rapid_reset_ends_in_goaway_and_frees_the_upstream_work():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o), workers=1)
        lg.allow_log(r"resets streams faster|makes us reset")
        # a few resets of slow requests: their upstream attempts go at once
        c = Raw(lg.port)
        for i in range(10):
            sid = 1 + 2 * i
            c.request(sid, "/slow?hang=1")
        wait_until(lambda: o.stats()["active"] >= 10, 10, what="10 upstream requests")
        c.send(*[hf.RstStreamFrame(1 + 2 * i, error_code=CANCEL) for i in range(10)])
        wait_until(lambda: o.stats()["active"] == 0, 10, what="upstream attempts cancelled")
        # then the attack: opened and reset as fast as the client can
        frames = []
        for i in range(10, 1000):
            sid = 1 + 2 * i
            frames.append(c.headers_frame(sid, [(":method", "GET"), (":path", "/r"),
                                                (":scheme", "http"), (":authority", "x")], True))
            frames.append(hf.RstStreamFrame(sid, error_code=CANCEL))
        c.send(*frames)
        code = c.goaway()
        ok(code in (ENHANCE_YOUR_CALM, INTERNAL_ERROR), "GOAWAY code %r" % code)
        still_serves(lg)
        ok(o.stats()["requests"] < 600, "the attack reached the origin %d times" % o.stats()["requests"])


@test
def continuation_flood_ends_in_goaway():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o), workers=1)
        lg.allow_log(r"CONTINUATION|control frames")
        c = Raw(lg.port)
        h = hf.HeadersFrame(1)
        h.data = c.block([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")])
        frames = [h]
        for i in range(2000):
            cf = hf.ContinuationFrame(1)
            cf.data = c.block([("x-a%d" % i, "b")])
            frames.append(cf)
        c.send(*frames)
        code = c.goaway()
        ok(code is not None and code != 0, "GOAWAY with an error, got %r" % code)
        still_serves(lg)


@test
def hpack_bomb_is_431_or_a_stream_error():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        c = Raw(lg.port)
        # one 4000-byte field in the dynamic table, then referenced 60 times:
        # a few hundred bytes on the wire, 240 KB decoded
        big = "v" * 4000
        c.request(1, "/a", extra=[("x-big", big)])
        eq(c.response(1)[0], 200, "one 4000-byte field is within 16k")
        hdrs = [(":method", "GET"), (":path", "/b"), (":scheme", "http"), (":authority", "x")] + \
               [("x-big", big)] * 60
        c.send(c.headers_frame(3, hdrs))
        st, _, _, rst = c.response(3)
        ok(st == 431 or rst is not None, "431 or RST_STREAM, got %r %r" % (st, rst))
        c.request(5, "/c?size=3")
        eq(c.response(5)[0], 200, "the connection goes on")
        c.close()


@test
def settings_and_ping_floods_end_in_goaway():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o), workers=1)
        lg.allow_log(r"control frames")
        for kind in ("ping", "settings"):
            c = Raw(lg.port)
            if kind == "ping":
                c.send(*[hf.PingFrame(0, opaque_data=struct.pack(">Q", i)) for i in range(1000)])
            else:
                c.send(*[hf.SettingsFrame(0, settings={hf.SettingsFrame.ENABLE_PUSH: 0})
                         for _ in range(1000)])
            eq(c.goaway(), ENHANCE_YOUR_CALM, kind)
            c.close()
        still_serves(lg)


@test(timeout=60)
def a_client_that_never_opens_its_window_is_timed_out():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='send_timeout = "1s";'), workers=1)
        c = Raw(lg.port, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        c.request(1, "/big?size=5000000")
        t0 = time.time()
        rst = None
        while time.time() - t0 < 15:
            f = c.read_frame(15)
            if f is None:
                break
            if isinstance(f, hf.RstStreamFrame) and f.stream_id == 1:
                rst = f.error_code
                break
        ok(rst is not None, "the stalled stream was reset")
        ok(time.time() - t0 < 10, "within about send_timeout")
        wait_until(lambda: o.stats()["active"] == 0, 10, what="the upstream connection closed")
        still_serves(lg)


@test
def streams_beyond_max_concurrent_streams_are_refused():
    """Before the client acknowledged SETTINGS: REFUSED_STREAM (it may retry);
    after: nghttp2 makes it a connection error (PROTOCOL_ERROR), never
    serving more than the limit at once."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, global_extra="http2_max_concurrent_streams = 4;"))
        # the client has not seen (nor acknowledged) our SETTINGS yet
        c = Raw(lg.port)
        for i in range(5):
            c.request(1 + 2 * i, "/slow?delay=500")
        codes = {}
        for i in range(5):
            sid = 1 + 2 * i
            codes[sid] = c.response(sid, timeout=15)
        eq(sorted((s, r[0], r[3]) for s, r in codes.items()),
           [(1, 200, None), (3, 200, None), (5, 200, None), (7, 200, None), (9, None, REFUSED_STREAM)])
        c.close()
        eq(o.stats()["requests"], 4, "the refused stream never reached the origin")
        # acknowledged: the limit is the client's to keep
        c = Raw(lg.port)
        while True:
            f = c.read_frame()
            if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                eq(f.settings.get(hf.SettingsFrame.MAX_CONCURRENT_STREAMS), 4)
                break
        o.reset_stats()
        for i in range(6):
            c.request(1 + 2 * i, "/slow?delay=500")
        eq(c.goaway(), PROTOCOL_ERROR)
        ok(o.stats()["requests"] <= 4, "at most 4 at the origin, got %d" % o.stats()["requests"])
        still_serves(lg)


@test(timeout=60)
def idle_connection_gets_goaway():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "1s";'))
        c = Raw(lg.port)
        c.request(1, "/x")
        eq(c.response(1)[0], 200)
        t0 = time.time()
        eq(c.goaway(10), 0, "GOAWAY NO_ERROR")
        ok(0.5 < time.time() - t0 < 8, "after keepalive_timeout")


@test(timeout=90)
def idle_connections_give_their_frame_buffers_back():
    """nghttp2 serializes every frame into a 16 KiB buffer per connection;
    a second after its last stream the pages go back to the kernel, and
    the next request on the connection is served as before."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";'), workers=1)
        w = lg.workers()[0]
        n, size = 150, 60000        # 16 KiB DATA frames: every page of the buffer written
        conns = []
        for i in range(n):
            c = Raw(lg.port)
            c.request(1, "/big?size=%d" % size)
            # a stream the origin never answers keeps every connection busy
            # until all are measured, however long the downloads take
            c.request(3, "/held?hang=1")
            conns.append(c)
        for c in conns:
            st, _, body, rst = c.response(1)
            eq((st, len(body), rst), (200, size, None), "the first download")
        peak = rss_kb(w)
        for c in conns:
            c.send(hf.RstStreamFrame(3, error_code=8))      # CANCEL: now idle
        want = peak - n * 12        # 20 KiB a connection, 12 counted
        wait_until(lambda: rss_kb(w) <= want, 15,
                   what="the worker's RSS to fall from %d KiB to %d KiB or less" % (peak, want))
        for c in conns:
            c.request(5, "/again?size=%d" % size)
        for c in conns:
            st, _, body, rst = c.response(5)
            eq((st, body, rst), (200, pattern(size), None), "a download after the pages went back")
            c.close()


def table_sizes(c, n, timeout=5):
    """The first n SETTINGS_HEADER_TABLE_SIZE legate sent (each acked as read)."""
    deadline = time.time() + timeout
    while len(c.table_sizes) < n and time.time() < deadline:
        f = c.read_frame(max(0.1, deadline - time.time()))
        if f is None:
            raise TestFailure("connection closed waiting for SETTINGS")
        if f.stream_id:
            c.held.append(f)
    if len(c.table_sizes) < n:
        raise TestFailure("%d SETTINGS_HEADER_TABLE_SIZE within %ds, not %d" % (len(c.table_sizes), timeout, n))
    return c.table_sizes[:n]


def logged(lg, what):
    """How many lines of error.log say what."""
    with open(lg.error_log, errors="replace") as f:
        return sum(what in line for line in f)


def echoed(c, sid, fill):
    st, _, body, rst = c.response(sid)
    eq((st, rst), (200, None), "stream %d" % sid)
    got = json.loads(body)["headers"]
    got = {k.lower(): v for k, v in (got.items() if isinstance(got, dict) else got)}
    for k, v in fill:
        eq(got.get(k), v, "header %s on stream %d" % (k, sid))


@test(timeout=120)
def idle_connections_sleep_and_wake_in_the_same_state():
    """A second into an idle spell legate asks the client to empty its
    HPACK table (SETTINGS_HEADER_TABLE_SIZE 0); once that is acked the
    connection's session is freed, and the worker's memory falls to well
    under 2 KiB a connection.  The next request wakes it: headers both
    ways, the window the client gave before, the stream IDs already used
    and header compression all hold as before."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";',
                         global_extra='error_log_level = "debug";'), workers=1)
        w = lg.workers()[0]
        # ASan's allocator keeps freed blocks (its quarantine): no RSS to fall
        sanitized = "sanitizers" in "".join(run_legate(["-V"])[1:])
        fill = [("x-fill", "f" * 400), ("user-agent", "h01-sleeper")]

        def open_one(first=1):
            c = Raw(lg.port, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20})
            c.send(hf.WindowUpdateFrame(0, window_increment=4 << 20))
            c.request(first, "/a?echo=1", extra=fill)
            return c
        # connections that come and go first: the pools and the heap grown
        warm = [open_one() for i in range(50)]
        for c in warm:
            echoed(c, 1, fill)
        fds = fd_count(w)
        for c in warm:
            c.close()
        wait_until(lambda: fd_count(w) <= fds - len(warm), 10, what="the warm-up connections to close")
        base = rss_kb(w)
        n = 300
        conns = [open_one() for i in range(n - 1)] + [open_one(first=5)]
        for c in conns[:-1]:
            echoed(c, 1, fill)
        echoed(conns[-1], 5, fill)
        awake = rss_kb(w)
        for c in conns:
            eq(table_sizes(c, 1), [0], "the table size asked for a second into the idle spell")
        wait_until(lambda: logged(lg, "the connection sleeps") >= n, 15,
                   what="%d connections to sleep" % n)
        want = base + n * 2
        if not sanitized:
            wait_until(lambda: rss_kb(w) <= want, 15,
                       what="the worker's RSS (%d KiB with %d connections awake, %d KiB without) to "
                            "fall to %d KiB or less" % (awake, n, base, want))
        # awake again: a request with the same fields (the client's encoder
        # now indexes nothing), then compression is offered again
        for c in conns[:-1]:
            c.request(3, "/b?echo=1", extra=fill)
        for c in conns[:-1]:
            echoed(c, 3, fill)
        eq(logged(lg, "the connection wakes"), n - 1, "connections woken")
        for c in conns[:10]:
            eq(table_sizes(c, 2), [0, 4096], "header compression offered again")
            c.request(5, "/c?echo=1", extra=fill)
            echoed(c, 5, fill)
        # the 4 MiB window the client gave before the sleep: 1 MiB comes
        # down though this client sends no WINDOW_UPDATE (Raw.response would)
        c = conns[0]
        c.request(7, "/big?size=%d" % (1 << 20))
        body, deadline = b"", time.time() + 20
        while len(body) < 1 << 20 and time.time() < deadline:
            f = c.read_frame(max(0.1, deadline - time.time()))
            if f is None:
                raise TestFailure("closed during the download")
            if isinstance(f, hf.DataFrame) and f.stream_id == 7:
                body += f.data
        eq(body, pattern(1 << 20), "a download on the window given before the sleep")
        # a stream ID below one used before the sleep: PROTOCOL_ERROR
        last = conns[-1]
        last.request(3, "/d")
        eq(last.goaway(), PROTOCOL_ERROR, "stream 3 after stream 5, across a sleep")
        for c in conns:
            c.close()
        still_serves(lg)


def goaway_frame(c, timeout=10):
    """(error code, last stream ID) of the GOAWAY legate sends next."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = c.read_frame(max(0.1, deadline - time.time()))
        if f is None:
            raise TestFailure("closed without GOAWAY")
        if isinstance(f, hf.GoAwayFrame):
            return f.error_code, f.last_stream_id
    raise TestFailure("no GOAWAY within %ds" % timeout)


def ping_ack(c, data, timeout=5):
    """Whether c reads the ACK of its PING data within timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        f = c.read_frame(max(0.1, deadline - time.time()))
        if f is None:
            return False
        if isinstance(f, hf.PingFrame) and "ACK" in f.flags and f.opaque_data == data:
            return True
        if f.stream_id or isinstance(f, hf.GoAwayFrame):
            c.held.append(f)
    return False


@test(timeout=60)
def a_woken_connection_knows_the_streams_used_before_its_sleep():
    """Frames that come late for streams of before the sleep are taken as
    the old session would have: a RST_STREAM, WINDOW_UPDATE or DATA on a
    closed stream and trailers of a stream reset lately are ignored (not
    idle-stream errors or new requests), and a connection error names the
    last stream processed before the sleep."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";',
                         global_extra='error_log_level = "debug";'), workers=1)
        c = Raw(lg.port)
        c.request(1, "/x")
        eq(c.response(1)[0], 200)
        # stream 3: a body begun, then reset by the client
        c.request(3, "/x", method="POST", extra=[("content-length", "10")], end_stream=False)
        c.send(hf.DataFrame(3, data=b"12345"), hf.RstStreamFrame(3, error_code=CANCEL))
        eq(table_sizes(c, 1), [0], "the table size asked for")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 1, 10, what="the connection to sleep")
        # late, each legal for a stream closed lately (RFC 9113 5.1, 6.9)
        # (one write, so that one wake takes them and the request after)
        c.send(hf.WindowUpdateFrame(1, window_increment=1000), hf.RstStreamFrame(1, error_code=CANCEL),
               c.headers_frame(3, [("x-trailer", "late")]), hf.DataFrame(3, data=b"67890"),
               c.headers_frame(5, [(":method", "GET"), (":path", "/y"), (":scheme", "http"),
                                   (":authority", "x")]))
        st, _, _, rst = c.response(5)
        eq((st, rst), (200, None), "a request after the late frames")
        eq([f for f in c.held if f.stream_id == 3 or isinstance(f, hf.GoAwayFrame)], [],
           "no answer to the trailers, no GOAWAY")
        eq(logged(lg, "the connection wakes"), 1, "woken by the late frames")
        # asleep again; HEADERS on stream 1, which its client had ended: the
        # connection error (RFC 9113 5.1: STREAM_CLOSED) names stream 5
        eq(table_sizes(c, 3), [0, 4096, 0], "compression offered for stream 5, then off again")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 2, 10, what="the connection to sleep again")
        c.request(1, "/z")
        eq(goaway_frame(c), (STREAM_CLOSED, 5), "GOAWAY STREAM_CLOSED, last stream 5")
        c.close()
        still_serves(lg)


@test(timeout=60)
def a_connection_does_not_sleep_inside_a_frame():
    """nghttp2 takes every byte it is given, so a session may hold part of
    a frame: the connection sleeps only between frames, and the frame's
    rest is read by the same session."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";',
                         global_extra='error_log_level = "debug";'), workers=1)
        c = Raw(lg.port)
        c.request(1, "/x")
        eq(c.response(1)[0], 200)
        c.auto_ack = False
        eq(table_sizes(c, 1), [0], "the table size asked for")
        # the ACK that lets it sleep, and 12 of a PING's 17 bytes after it
        ping = hf.PingFrame(0, opaque_data=b"abcdefgh").serialize()
        c.raw(hf.SettingsFrame(0, flags=["ACK"]).serialize() + ping[:12])
        t0 = time.time()
        while time.time() - t0 < 1.5:
            eq(logged(lg, "the connection sleeps"), 0, "sleeps with part of a frame read")
            time.sleep(0.05)
        c.raw(ping[12:])
        ok(ping_ack(c, b"abcdefgh"), "the PING, read in two parts, answered")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 1, 10, what="the connection to sleep")
        c.request(3, "/y")
        st, _, _, rst = c.response(3)
        eq((st, rst), (200, None), "a request after the wake")
        c.close()


@test(timeout=60)
def a_connection_sleeps_only_with_its_settings_acked_and_at_most_once_a_second():
    """A SETTINGS of ours still unacknowledged keeps the connection awake
    (a new session would take the late ACK for a protocol error); frames
    that keep coming wake a sleeping connection at most once a second; and
    a connection error nghttp2 finds after a wake ends the connection."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";',
                         global_extra='error_log_level = "debug";'), workers=1)
        c = Raw(lg.port)
        c.request(1, "/x")
        eq(c.response(1)[0], 200)
        eq(table_sizes(c, 1), [0], "the table size asked for")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 1, 10, what="the connection to sleep")
        # woken by a request; compression offered again and not acked: a
        # second later the table is asked for again, and no sleep comes
        # until both are acked
        c.auto_ack = False
        c.request(3, "/y")
        eq(c.response(3)[0], 200)
        eq(table_sizes(c, 3), [0, 4096, 0], "compression offered, then the table asked for again")
        eq(logged(lg, "the connection sleeps"), 1, "asleep with our SETTINGS unacked")
        c.send(hf.SettingsFrame(0, flags=["ACK"]), hf.SettingsFrame(0, flags=["ACK"]))
        wait_until(lambda: logged(lg, "the connection sleeps") >= 2, 10, what="the connection to sleep once acked")
        # a PING every 50 ms for 3 s: a wake and a sleep at most each second
        wakes = logged(lg, "the connection wakes")
        t0 = time.time()
        for i in range(60):
            c.send(hf.PingFrame(0, opaque_data=b"%08d" % i))
            time.sleep(0.05)
        woken = logged(lg, "the connection wakes") - wakes
        ok(1 <= woken <= time.time() - t0 + 1, "%d wakes in %.1f s of PINGs" % (woken, time.time() - t0))
        c.close()
        # a protocol error found by nghttp2 (a WINDOW_UPDATE of 0 on the
        # connection, RFC 9113 6.9) in the bytes that would let the
        # connection sleep (the ACK of the table size) ends the connection
        c = Raw(lg.port)
        c.request(1, "/x")
        eq(c.response(1)[0], 200)
        c.auto_ack = False
        eq(table_sizes(c, 1), [0], "the table size asked for")
        c.raw(hf.SettingsFrame(0, flags=["ACK"]).serialize() +
              b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00")
        eq(c.goaway(), PROTOCOL_ERROR, "GOAWAY for the WINDOW_UPDATE of 0, then the end")
        still_serves(lg)


@test(timeout=60)
def a_refused_stream_is_not_named_processed_after_a_wake():
    """The woken session's stand-in is the highest stream the client
    opened; if legate had refused it, a GOAWAY of ours still names the
    last stream processed."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "60s";',
                         global_extra='error_log_level = "debug"; http2_max_concurrent_streams = 4;'),
                    workers=1)
        c = Raw(lg.port)
        for sid in (1, 3, 5, 7, 9):
            c.request(sid, "/slow?delay=300")
        got = {sid: c.response(sid, timeout=15) for sid in (1, 3, 5, 7, 9)}
        eq([(got[s][0], got[s][3]) for s in (1, 3, 5, 7)], [(200, None)] * 4, "four streams served")
        eq(got[9][3], REFUSED_STREAM, "the fifth refused")
        eq(table_sizes(c, 1), [0], "the table size asked for")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 1, 10, what="the connection to sleep")
        c.request(3, "/again")      # a stream its client had ended: STREAM_CLOSED
        eq(goaway_frame(c), (STREAM_CLOSED, 7), "GOAWAY STREAM_CLOSED, last stream 7 (not the refused 9)")
        c.close()


@test(timeout=60)
def sleeping_connections_get_goaway_naming_their_last_stream():
    """A sleeping connection is woken to say GOAWAY, on a reload and at
    keepalive_timeout, and names the stream its old session processed."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, http_extra='keepalive_timeout = "4s";',
                         global_extra='error_log_level = "debug";'), workers=1)

        def asleep(sid):
            c = Raw(lg.port)
            c.request(sid, "/x")
            eq(c.response(sid)[0], 200)
            eq(table_sizes(c, 1), [0], "the table size asked for")
            return c
        a = asleep(3)
        wait_until(lambda: logged(lg, "the connection sleeps") >= 1, 10, what="the connection to sleep")
        # a PING wakes it, and it sleeps again at once, asking nothing
        a.send(hf.PingFrame(0, opaque_data=b"12345678"))
        ok(ping_ack(a, b"12345678"), "the PING answered")
        wait_until(lambda: logged(lg, "the connection sleeps") >= 2, 10, what="the connection to sleep again")
        eq(logged(lg, "the connection wakes"), 1, "woken by the PING")
        eq(a.table_sizes, [0], "no SETTINGS for a wake that starts no stream")
        lg.reload()
        eq(goaway_frame(a), (0, 3), "GOAWAY NO_ERROR, last stream 3, on the reload")
        b = asleep(5)
        wait_until(lambda: logged(lg, "the connection sleeps") >= 3, 10, what="the connection to sleep")
        t0 = time.time()
        eq(goaway_frame(b), (0, 5), "GOAWAY NO_ERROR, last stream 5, at keepalive_timeout")
        ok(time.time() - t0 < 8, "by keepalive_timeout")
        a.close()
        b.close()


@test
def provoked_resets_end_in_goaway():
    """MadeYouReset: requests legate must reset, sent faster than the rate."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, global_extra="http2_reset_rate = 20;"), workers=1)
        lg.allow_log(r"reset streams faster")
        c = Raw(lg.port)
        frames = []
        for i in range(200):
            frames.append(c.headers_frame(1 + 2 * i, [(":method", "GET"), (":path", "/"),
                                                      (":scheme", "http"), (":authority", "x"),
                                                      ("connection", "close")]))
        c.send(*frames)
        eq(c.goaway(), ENHANCE_YOUR_CALM)
        still_serves(lg)


# ---- conformance: the errors RFC 9113 names ----

def conn_error(lg, frames_fn, settings=None):
    c = Raw(lg.port, settings=settings)
    frames_fn(c)
    code = c.goaway()
    c.close()
    return code


@test
def connection_errors_as_rfc9113_names_them():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o))
        # DATA on an idle stream (5.1)
        eq(conn_error(lg, lambda c: c.send(hf.DataFrame(1, data=b"x"))), PROTOCOL_ERROR, "idle DATA")
        # stream IDs must increase (5.1.1)

        def down(c):
            c.request(5, "/a")
            c.request(3, "/b")
        eq(conn_error(lg, down), PROTOCOL_ERROR, "stream ID going down")
        # an even stream ID from a client (5.1.1)
        eq(conn_error(lg, lambda c: c.request(2, "/a")), PROTOCOL_ERROR, "even stream ID")
        # a frame larger than SETTINGS_MAX_FRAME_SIZE (4.2)

        def big(c):
            c.raw(struct.pack(">I", 20000)[1:] + b"\x00\x00" + struct.pack(">I", 1) + b"x" * 20000)
        eq(conn_error(lg, big), FRAME_SIZE_ERROR, "oversized frame")
        # padding as long as the frame (6.1)

        def pad(c):
            c.request(1, "/a", method="POST", end_stream=False)
            c.raw(b"\x00\x00\x05" + b"\x00" + b"\x08" + struct.pack(">I", 1) + b"\x05abcd")
        eq(conn_error(lg, pad), PROTOCOL_ERROR, "padding error")
        # a WINDOW_UPDATE of 0 on the connection (6.9)
        eq(conn_error(lg, lambda c: c.raw(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\x00" * 4)),
           PROTOCOL_ERROR, "zero window increment")
        # HEADERS on a closed stream (5.1)

        def closed(c):
            c.request(1, "/a")
            c.response(1)
            c.request(1, "/a")
        eq(conn_error(lg, closed), STREAM_CLOSED, "STREAM_CLOSED")
        still_serves(lg)


@test(timeout=60)
def trailers_crossing_our_reset_are_dropped_and_the_connection_lives():
    """A stream legate answered early (413) and then reset, whose client
    was still sending: trailers that cross the reset are dropped (RFC 9113
    5.1), not a connection error, though closed streams are not kept."""
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, route_extra='client_max_body_size = "1k";',
                         http_extra='client_body_timeout = "1s";'), workers=1)
        c = Raw(lg.port)
        c.request(1, "/p", method="POST", extra=[("content-length", "5000")], end_stream=False)
        c.send(hf.DataFrame(1, data=b"x" * 2000))
        eq(c.response(1)[0], 413, "answered before the body ended")
        deadline = time.time() + 15
        rst = None
        while rst is None and time.time() < deadline:
            f = c.read_frame(max(0.1, deadline - time.time()))
            ok(f is not None, "the connection stays open")
            if isinstance(f, hf.RstStreamFrame) and f.stream_id == 1:
                rst = f
        ok(rst is not None, "the unfinished upload is reset after client_body_timeout")
        c.send(c.headers_frame(1, [("x-checksum", "abc")], end_stream=True))
        c.request(3, "/after")
        st, _, body, code = c.response(3)
        eq((st, code), (200, None), "the next stream on the same connection")


@test
def bad_preface_closes_the_connection():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o, server_extra=""))
        tp = free_port()
        lg2 = Legate(conf(free_port(), o, tls_port=tp))
        c = Raw(tp, preface=False, tls=True)
        c.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")   # not a preface, on h2 by ALPN
        code = c.goaway()
        ok(code in (None, PROTOCOL_ERROR), "closed (GOAWAY %r)" % code)
        still_serves(lg)
        ok(lg2.alive(), "legate runs")


# ---- reloads ----

@test(timeout=60)
def reload_sends_goaway_and_streams_in_flight_finish():
    need_frames()
    with Origin("o1") as o:
        lg = Legate(conf(free_port(), o), workers=1)
        c = Raw(lg.port)
        c.request(1, "/slow?delay=1500&size=1000")
        wait_until(lambda: o.stats()["active"] >= 1, 10, what="request at the origin")
        lg.signal(1)    # SIGHUP
        st, _, body, rst = c.response(1, timeout=20)
        eq((st, len(body), rst), (200, 1000, None), "the stream in flight finished")
        eq(c.goaway(20), 0, "GOAWAY NO_ERROR")


# ---- WebSocket over HTTP/2 (RFC 8441) ----

def ws_frame(payload, opcode=1):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else b"\xfe" + struct.pack(">H", n))
    return head + mask + masked


class WsEcho:
    """An HTTP/1.1 WebSocket origin: accepts the upgrade, echoes one text frame."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.heads = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(s,), daemon=True).start()

    def one(self, s):
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            d = s.recv(4096)
            if not d:
                return
            data += d
        head, rest = data.split(b"\r\n\r\n", 1)
        self.heads.append(head.decode())
        key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")]
        acc = base64.b64encode(hashlib.sha1(key[0] + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        buf = rest
        while len(buf) < 6:
            buf += s.recv(4096)
        n = buf[1] & 0x7f
        while len(buf) < 6 + n:
            buf += s.recv(4096)
        mask = buf[2:6]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[6:6 + n]))
        s.sendall(bytes([0x81, len(payload)]) + payload)
        s.close()

    def stop(self):
        self.srv.close()

    teardown = stop


@test
def websocket_over_http2_extended_connect():
    need_frames()
    ws = WsEcho()
    try:
        lg = Legate(conf(free_port(), ws))
        c = Raw(lg.port)
        settings = None
        while settings is None:
            f = c.read_frame()
            if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                settings = f.settings
        eq(settings.get(8), 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
        c.send(c.headers_frame(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                                   (":scheme", "http"), (":path", "/chat"), (":authority", "x"),
                                   ("sec-websocket-version", "13")], end_stream=False))
        status = None
        while status is None:
            f = c.read_frame()
            if isinstance(f, hf.HeadersFrame) and f.stream_id == 1:
                status = dict(f.decoded).get(":status")
        eq(status, "200", "the tunnel is open")
        c.send(hf.DataFrame(1, data=ws_frame(b"hello over h2")))
        got = b""
        while len(got) < 2 + 13:
            f = c.read_frame()
            ok(f is not None, "connection open")
            if isinstance(f, hf.DataFrame) and f.stream_id == 1:
                got += f.data
        eq(got, b"\x81\x0dhello over h2")
        contains(ws.heads[0].lower(), "upgrade: websocket")
        contains(ws.heads[0], "GET /chat HTTP/1.1")
    finally:
        ws.stop()


@test
def shipped_http2_example_serves_h2():
    """conf/examples/http2.conf as shipped, on free ports instead of 8443 and 9001."""
    ex = os.path.join(REPO, "conf", "examples")
    with Origin("o1") as o:
        text = open(os.path.join(ex, "http2.conf")).read()
        ok("127.0.0.1:8443" in text and "127.0.0.1:9001" in text, "the example's addresses")
        port = free_port()
        text = (text.replace('"certs/', '"%s/' % CERTS).replace("127.0.0.1:8443", "127.0.0.1:%d" % port)
                .replace("127.0.0.1:9001", o.address).replace('worker_processes = "auto";', "worker_processes = 2;"))
        lg = Legate(text)
        out = subprocess.run(["curl", "-s", "--http2", "--cacert", os.path.join(CERTS, "ca.pem"),
                              "--resolve", "localhost:%d:127.0.0.1" % port, "-o", "/dev/null", "-w",
                              "%{http_version} %{http_code}", "https://localhost:%d/x" % port],
                             capture_output=True, timeout=20)
        eq(out.stdout, b"2 200")
        contains(lg.wait_log_access(1), "HTTP/2.0")


if __name__ == "__main__":
    main()

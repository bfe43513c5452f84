#!/usr/bin/env python3
"""proxy_buffering and proxy_request_buffering, with deliberately slow
clients: the upstream is released while the client is slow (and the
temporary file is used, and goes), or held by backpressure when off."""
import gzip
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

BIG = 16 << 20          # past what the kernel's socket buffers hold on loopback (~5 MiB)


def body_of(n):
    return pattern(n)


class BufOrigin:
    """An origin that notes when it finished sending each response and
    when each request head arrived (and its body), keep-alive.

    GET /big?n=N[&gz=1][&cache=1]: N pattern bytes, sent in 64 KiB writes
    from a small send buffer, so the sender is held as soon as nobody reads.
    POST: the request body is read (Content-Length or chunked) and its
    length and sha256 answered as JSON.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.sent_done = []     # time.monotonic() when a response was all written
        self.accepted = []      # time.monotonic() of each accepted connection
        self.heads = []         # request heads (bytes)
        self.bodies = []        # (len, sha256) of request bodies
        self.first_body_byte = []  # time the first body byte arrived
        self.srv = ScriptedServer(self.handle)
        self.address = self.srv.address

    def handle(self, s, peer):
        with self.lock:
            self.accepted.append(time.monotonic())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        s.settimeout(60)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
            head, buf = buf.split(b"\r\n\r\n", 1)
            with self.lock:
                self.heads.append(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            if method == "POST":
                buf = self.read_body(s, buf, hdrs)
                out = json.dumps({"len": self.bodies[-1][0], "sha": self.bodies[-1][1]}).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                continue
            q = dict(kv.split("=", 1) for kv in target.split("?", 1)[1].split("&")) \
                if "?" in target else {}
            n = int(q.get("n", "100"))
            body = body_of(n)
            extra = b""
            if q.get("cache"):
                extra += b"Cache-Control: max-age=60\r\n"
            ctype = b"text/html" if q.get("gz") else b"application/octet-stream"
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                      % (ctype, n, extra))
            for i in range(0, n, 65536):
                s.sendall(body[i:i + 65536])
            with self.lock:
                self.sent_done.append(time.monotonic())

    def read_body(self, s, buf, hdrs):
        h = hashlib.sha256()
        total = 0

        def more():
            x = s.recv(65536)
            if not x:
                raise EOFError
            self.mark_first()
            return x
        if buf:
            self.mark_first()
        if "content-length" in hdrs:
            left = int(hdrs["content-length"])
            while left > 0:
                if not buf:
                    buf = more()
                k = min(left, len(buf))
                h.update(buf[:k])
                total += k
                buf = buf[k:]
                left -= k
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in buf:
                    buf += more()
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    buf += more()
                if size == 0:
                    while not buf.startswith(b"\r\n") and b"\r\n\r\n" not in buf:
                        buf += more()
                    buf = buf[2:] if buf.startswith(b"\r\n") else buf.split(b"\r\n\r\n", 1)[1]
                    break
                h.update(buf[:size])
                total += size
                buf = buf[size + 2:]
        with self.lock:
            self.bodies.append((total, h.hexdigest()))
        return buf

    def mark_first(self):
        with self.lock:
            if len(self.first_body_byte) <= len(self.bodies):
                self.first_body_byte.append(time.monotonic())


def start(o, extra="", route_extra="", glob="", h2=False):
    """legate with proxy_temp_path = PREFIX/tmp (made before it starts)."""
    text = simple_conf(free_port(), [o], workers=1,
                       global_extra='proxy_temp_path = "{prefix}/tmp";\n' + glob,
                       http_extra=extra, route_extra=route_extra, keepalive=8)
    if h2:
        text = re.sub(r'listen = "([^"]+)";', r'listen = ( { address = "\1"; http2 = true; } );', text)
    lg = Legate(text, workers=1, start=False)
    os.makedirs(os.path.join(lg.prefix, "tmp"))
    lg.start()
    return lg


def temp_fds(lg):
    """The worker's descriptors of unlinked files in the temp directory."""
    d = os.path.join(lg.prefix, "tmp")
    n = 0
    for pid in lg.workers():
        fdd = "/proc/%d/fd" % pid
        try:
            names = os.listdir(fdd)
        except OSError:
            continue
        for f in names:
            try:
                t = os.readlink(os.path.join(fdd, f))
            except OSError:
                continue
            if t.startswith(d) and t.endswith("(deleted)"):
                n += 1
    return n


class SlowClient:
    """A raw client with a small receive buffer that reads as told."""

    def __init__(self, port, target, rcvbuf=16384, headers=""):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(30)
        self.s.connect(("127.0.0.1", port))
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (target, headers)).encode())
        self.data = b""

    def read_some(self, n):
        """Read at least n bytes (or until the end)."""
        while len(self.data) < n:
            x = self.s.recv(65536)
            if not x:
                break
            self.data += x

    def head_and_body(self):
        head, _, body = self.data.partition(b"\r\n\r\n")
        return head.decode("latin-1"), body

    def read_all(self, length_of_body, deadline=60, pace=None):
        """Read until the body has length_of_body bytes; pace: (bytes, pause)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            head, body = self.head_and_body()
            if b"\r\n\r\n" in self.data and len(body) >= length_of_body:
                return
            x = self.s.recv(pace[0] if pace else 262144)
            if not x:
                return
            self.data += x
            if pace:
                time.sleep(pace[1])
        fail("client read timed out")

    def close(self, rst=False):
        if rst:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.s.close()


def done_within(o, n, secs):
    try:
        wait_until(lambda: len(o.sent_done) >= n, secs)
        return True
    except TestFailure:
        return False


@test
def buffering_releases_the_upstream():
    """proxy_buffering = true: the origin finishes 16 MiB while the client
    reads nothing; the temporary file is open meanwhile; the upstream
    connection is reused by another request; the bytes are intact; no
    descriptor is left."""
    o = BufOrigin()
    lg = start(o, extra="proxy_buffering = true;", glob='error_log_level = "info";')
    c = SlowClient(lg.port, "/big?n=%d" % BIG)
    c.read_some(1000)
    ok(done_within(o, 1, 20), "the origin could not finish while the client was slow")
    ok(len(c.data) < 1 << 20, "the client read %d bytes already" % len(c.data))
    wait_until(lambda: temp_fds(lg) == 1, 10, what="the worker's temporary file")
    # the upstream connection went back to the pool: another request uses it
    r = request(lg.port, target="/big?n=10")
    eq(r.status, 200)
    eq(r.body, body_of(10))
    eq(len(o.accepted), 1, "the second request reused the released upstream connection")
    c.read_all(BIG)
    head, body = c.head_and_body()
    contains(head, " 200 ")
    eq(len(body), BIG)
    eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(body_of(BIG)).hexdigest())
    c.close()
    wait_until(lambda: temp_fds(lg) == 0, 10, what="the temporary file closed")
    contains(lg.log_text(), "a response body is buffered to a temporary file")


@test
def streaming_holds_the_upstream():
    """Default (off): the origin is held by backpressure while the client
    does not read, and finishes only once the client reads."""
    o = BufOrigin()
    lg = start(o)
    c = SlowClient(lg.port, "/big?n=%d" % BIG)
    c.read_some(1000)
    ok(not done_within(o, 1, 2.5), "the origin finished although nobody read (no backpressure)")
    eq(temp_fds(lg), 0)
    c.read_all(BIG)
    head, body = c.head_and_body()
    eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(body_of(BIG)).hexdigest())
    ok(done_within(o, 1, 10), "the origin finished once the client read")
    c.close()


@test
def memory_only_then_backpressure():
    """proxy_max_temp_file_size = 0: the spool holds proxy_buffers_size in
    memory, then the origin is held as without buffering; no file."""
    o = BufOrigin()
    lg = start(o, extra='proxy_buffering = true; proxy_buffers_size = "1m"; '
               'proxy_max_temp_file_size = 0;')
    c = SlowClient(lg.port, "/big?n=%d" % BIG)
    c.read_some(1000)
    ok(not done_within(o, 1, 2.5), "the origin finished: past memory it must be held")
    eq(temp_fds(lg), 0, "no temporary file with proxy_max_temp_file_size = 0")
    c.read_all(BIG)
    head, body = c.head_and_body()
    eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(body_of(BIG)).hexdigest())
    c.close()


@test
def client_abort_mid_spool_leaves_no_file():
    o = BufOrigin()
    lg = start(o, extra="proxy_buffering = true;")
    c = SlowClient(lg.port, "/big?n=%d" % BIG)
    c.read_some(1000)
    wait_until(lambda: temp_fds(lg) == 1, 15, what="the worker's temporary file")
    c.close(rst=True)
    wait_until(lambda: temp_fds(lg) == 0, 10, what="the temporary file closed after the abort")
    r = request(lg.port, target="/big?n=1000")     # the worker goes on
    eq(r.body, body_of(1000))


@test
def buffering_with_limit_rate():
    """limit_rate still paces the client while the upstream is released."""
    o = BufOrigin()
    n = 3 << 20
    lg = start(o, extra='proxy_buffering = true; limit_rate = "1m";')
    t0 = time.monotonic()
    st, h, body = [None], [None], [None]

    def get():
        st[0], h[0], body[0] = curl(lg.url("/big?n=%d" % n), timeout=30)
    th = threading.Thread(target=get)
    th.start()
    ok(done_within(o, 1, 10), "origin not done")
    t_origin = o.sent_done[0] - t0
    th.join(30)
    t_client = time.monotonic() - t0
    eq(st[0], 200)
    eq(body[0], body_of(n))
    ok(t_client >= 2.0, "limit_rate 1m: 3 MiB took only %.2fs" % t_client)
    ok(t_origin < t_client - 1.0, "origin done at %.2fs, client at %.2fs" % (t_origin, t_client))


@test
def buffering_with_cache_fill_and_gzip():
    """A cache fill through the spool (slow client) is stored whole; gzip
    by legate over a spooled body gives the same bytes."""
    o = BufOrigin()
    n = BIG // 2                # (more than the socket buffers take: the file is used)
    lg = start(o, extra='proxy_buffering = true; gzip = true; gzip_types = ["text/html"];',
               route_extra="cache = true;",
               glob='cache_size = "80m"; cache_max_object = "10m";')
    c = SlowClient(lg.port, "/big?n=%d&cache=1" % n)
    c.read_some(1000)
    ok(done_within(o, 1, 15), "the origin could not finish while the client was slow")
    wait_until(lambda: temp_fds(lg) == 1, 10, what="the fill's temporary file")
    c.read_all(n)
    head, body = c.head_and_body()
    eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(body_of(n)).hexdigest())
    c.close()
    st, h, b = curl("-H", "Host: x", lg.url("/big?n=%d&cache=1" % n))   # the same key
    eq(st, 200)
    eq(b, body_of(n))
    eq(len(o.sent_done), 1, "the second request was a cache hit")
    # gzip over the spool, to a slow client asking for it
    c = SlowClient(lg.port, "/big?n=%d&gz=1" % n, headers="Accept-Encoding: gzip\r\n")
    c.read_some(1000)
    # (the pattern compresses so well that the client's socket takes all
    # of it: the spool's memory is what the filter reads from here)
    ok(done_within(o, 2, 15), "the origin could not finish while the gzip client was slow")
    end = time.monotonic() + 30
    while time.monotonic() < end and not c.data.endswith(b"0\r\n\r\n"):
        x = c.s.recv(65536)
        if not x:
            break
        c.data += x
    head, body = c.head_and_body()
    contains(head.lower(), "content-encoding: gzip")
    raw, rest = b"", body
    while True:
        line, _, rest = rest.partition(b"\r\n")
        k = int(line, 16)
        if k == 0:
            break
        raw += rest[:k]
        rest = rest[k + 2:]
    eq(gzip.decompress(raw), body_of(n))
    c.close()


@test
def buffering_http2_client():
    """An HTTP/2 client reading at 2 MB/s: the origin is done long before,
    the body waits in the temporary file, and arrives intact."""
    o = BufOrigin()
    n = BIG // 2
    lg = start(o, extra="proxy_buffering = true;", h2=True)
    p = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-o", "-",
                          "--limit-rate", "2M", lg.url("/big?n=%d" % n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    ok(done_within(o, 1, 15), "the origin could not finish while the HTTP/2 client was slow")
    t_origin = time.monotonic() - t0
    eq(temp_fds(lg), 1, "the rest of the body waits in the temporary file")
    out, err = p.communicate(timeout=60)
    t_client = time.monotonic() - t0
    eq(p.returncode, 0, err.decode(errors="replace"))
    eq(out, body_of(n))
    print("# origin done after %.2fs, HTTP/2 client after %.2fs" % (t_origin, t_client))


def slow_upload(port, pieces, size, pause, chunked=True):
    """POST a body in pieces, pausing between: (response, time the last
    byte was sent, socket)."""
    s = socket.socket()
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    total = pieces * size
    if chunked:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    else:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    data = body_of(total)
    for i in range(pieces):
        piece = data[i * size:(i + 1) * size]
        s.sendall((b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece)
        time.sleep(pause)
    if chunked:
        s.sendall(b"0\r\n\r\n")
    t_end = time.monotonic()
    return s, t_end, hashlib.sha256(data).hexdigest(), total


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        x = s.recv(65536)
        if not x:
            break
        data += x
    head, _, body = data.partition(b"\r\n\r\n")
    m = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
    n = int(m[0].split(b":")[1]) if m else 0
    while len(body) < n:
        x = s.recv(65536)
        if not x:
            break
        body += x
    return head.decode("latin-1"), body


@test
def request_buffering_reads_the_body_first():
    """proxy_request_buffering = true: a chunked upload sent over ~1.5 s
    reaches the origin only once complete, with a Content-Length; the
    temporary file holds it meanwhile."""
    o = BufOrigin()
    lg = start(o, extra='proxy_request_buffering = true; client_max_body_size = "10m";')
    seen = {}

    def watch():
        # while the upload goes on: a temporary file, and no origin connection
        end = time.monotonic() + 10
        while time.monotonic() < end and "fd" not in seen:
            if temp_fds(lg) == 1:
                seen["fd"] = len(o.accepted)
            time.sleep(0.02)
    w = threading.Thread(target=watch)
    w.start()
    s, t_end, sha, total = slow_upload(lg.port, 10, 100000, 0.15)
    w.join(15)
    head, body = read_response(s)
    s.close()
    contains(head, " 200 ")
    j = json.loads(body)
    eq(j["len"], total)
    eq(j["sha"], sha)
    eq(len(o.accepted), 1)
    ok(o.accepted[0] >= t_end - 0.05,
       "the origin was connected %.2fs before the upload ended" % (t_end - o.accepted[0]))
    h = o.heads[0].decode("latin-1").lower()
    contains(h, "content-length: %d" % total)
    ok("transfer-encoding" not in h, "a buffered chunked upload goes up with Content-Length")
    eq(seen.get("fd"), 0, "a temporary file while the upload went on, no origin connection")
    wait_until(lambda: temp_fds(lg) == 0, 10, what="the request's temporary file closed")


@test
def request_streaming_by_default():
    """Off (default): the origin is connected and gets body bytes while the
    client is still sending; chunked stays chunked."""
    o = BufOrigin()
    lg = start(o, extra='client_max_body_size = "10m";')
    s, t_end, sha, total = slow_upload(lg.port, 10, 100000, 0.15)
    head, body = read_response(s)
    s.close()
    j = json.loads(body)
    eq(j["sha"], sha)
    ok(o.accepted[0] < t_end - 0.5, "the upload was not streamed to the origin")
    ok(o.first_body_byte and o.first_body_byte[0] < t_end - 0.5, "no body byte before the end")
    contains(o.heads[0].decode("latin-1").lower(), "transfer-encoding: chunked")


@test
def request_buffering_content_length_and_retry():
    """A slow Content-Length upload is buffered, then sent again to the
    next server when the first one fails (the spool keeps it)."""
    o = BufOrigin()
    dead = free_port()
    lg = Legate(simple_conf(free_port(), ["127.0.0.1:%d" % dead, o], workers=1,
                            global_extra='proxy_temp_path = "{prefix}/tmp";',
                            http_extra='proxy_request_buffering = true; client_max_body_size = "10m";',
                            upstream_extra='next_upstream = "error non_idempotent";'),
                workers=1, start=False)
    os.makedirs(os.path.join(lg.prefix, "tmp"))
    lg.start()
    lg.allow_log(r"connect\(\) failed")
    for i in range(2):          # the round robin starts once at each server
        s, t_end, sha, total = slow_upload(lg.port, 4, 100000, 0.1, chunked=False)
        head, body = read_response(s)
        s.close()
        contains(head, " 200 ")
        eq(json.loads(body)["sha"], sha)


@test
def request_buffering_413():
    """client_max_body_size applies to a buffered chunked upload: 413, and
    no upstream connection."""
    o = BufOrigin()
    lg = start(o, extra='proxy_request_buffering = true; client_max_body_size = "100k";')
    lg.allow_log(r"too large chunked body")
    s = socket.socket()
    s.settimeout(10)
    s.connect(("127.0.0.1", lg.port))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    data = body_of(300000)
    try:
        for i in range(0, len(data), 50000):
            s.sendall(b"%x\r\n" % 50000 + data[i:i + 50000] + b"\r\n")
    except OSError:
        pass                    # legate may close once it answered
    head, body = read_response(s)
    s.close()
    contains(head, " 413 ")
    eq(len(o.accepted), 0, "no upstream connection for a refused body")
    wait_until(lambda: temp_fds(lg) == 0, 10, what="no temporary file left")


@test
def request_buffering_client_abort():
    """An upload abandoned half way: its temporary file goes."""
    o = BufOrigin()
    lg = start(o, extra='proxy_request_buffering = true; client_max_body_size = "10m";')
    s = socket.socket()
    s.settimeout(10)
    s.connect(("127.0.0.1", lg.port))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    s.sendall(body_of(300000))
    wait_until(lambda: temp_fds(lg) == 1, 10, what="the upload's temporary file")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_until(lambda: temp_fds(lg) == 0, 10, what="the temporary file closed after the abort")
    eq(len(o.accepted), 0)


@test
def temp_file_cannot_be_made():
    """No temporary file to be had: an error line, and streaming."""
    o = BufOrigin()
    lg = start(o, extra='proxy_buffering = true; proxy_buffers_size = "64k"; '
               'proxy_request_buffering = true; client_max_body_size = "10m";')
    os.chmod(os.path.join(lg.prefix, "tmp"), 0o500)
    if os.geteuid() == 0:
        os.rmdir(os.path.join(lg.prefix, "tmp"))   # root writes anywhere: take it away
    lg.allow_log(r"cannot create a temporary file")
    c = SlowClient(lg.port, "/big?n=%d" % BIG)
    c.read_some(1000)
    lg.wait_log(r"\[error\].*cannot create a temporary file", 10)
    c.read_all(BIG)
    head, body = c.head_and_body()
    eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(body_of(BIG)).hexdigest())
    c.close()
    # an upload past client_body_buffer_size: what is in memory goes first,
    # the rest is streamed behind it
    s, t_end, sha, total = slow_upload(lg.port, 5, 100000, 0.05)
    head, body = read_response(s)
    s.close()
    contains(head, " 200 ")
    eq(json.loads(body)["sha"], sha)
    contains(lg.log_text(), "the request body is buffered in memory only")


@test
def config_errors():
    """legate -t: bad values, FILE:LINE."""
    cases = [(dict(http_extra="\n%s\n" % line), line, want)
             for line, want in (('proxy_buffering = "yes";', "proxy_buffering"),
                                ('proxy_buffers_size = "1k";', "proxy_buffers_size"),
                                ('proxy_max_temp_file_size = "lots";', "proxy_max_temp_file_size"),
                                ('client_body_buffer_size = -1;', "client_body_buffer_size"),
                                ('proxy_request_buffering = 2;', "proxy_request_buffering"))]
    cases.append((dict(global_extra='proxy_temp_path = "/nonexistent/dir";\n'),
                  "proxy_temp_path", "is not a directory"))
    for kw, needle, want in cases:
        text = simple_conf(free_port(), ["127.0.0.1:1"], **kw)
        rc, err = check_config(text)
        ok(rc != 0, "legate -t accepted %s" % needle)
        contains(err, "%s:%d:" % (check_config.last_path, line_of(text, needle)), needle)
        contains(err, want, needle)


if __name__ == "__main__":
    main()

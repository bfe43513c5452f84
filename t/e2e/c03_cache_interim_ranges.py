#!/usr/bin/env python3
"""The rest of the cache issue, against the real binary: interim (1xx)
responses passed to HTTP/1.1 clients (raw sockets and curl) and HTTP/2
clients (python3-h2), from HTTP/1.1 and HTTP/2 upstreams, before the final
answer and never stored; multi-range requests (multipart/byteranges) from
stored and fresh responses, with overlapping ranges coalesced and too many
refused; cache_use_stale for upstream errors, timeouts, 5xx answers and
updates in progress."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import quote

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.config
        import h2.connection
        import h2.events
    except ImportError:
        h2 = None


def conf(port, address, route_extra="", up_extra="", glob='cache_size = "8m";'):
    return """%s
http = {
    log_format = "$pid $request_method $request_uri $status $cache_status";
    upstreams = { app = { servers = ( "%s" ); %s }; };
    servers = ( { listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true; %s } ); } );
};
""" % (glob, address, up_extra, port, route_extra)


def raw(status, headers, body=b""):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_head(sock, buf, deadline):
    """One head (through CRLF CRLF) from sock: (head text, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no complete head within the deadline; got %r" % buf[:300])
        sock.settimeout(left)
        try:
            x = sock.recv(65536)
        except socket.timeout:
            continue
        if not x:
            fail("connection closed before a complete head; got %r" % buf[:300])
        buf += x
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def held_origin(interims, final):
    """An HTTP/1.1 origin that, per request, sends the interim heads, then
    waits until the test sets .go (or 20 s) before the final answer.
    .count counts requests; .heads keeps the request heads."""
    state = {"n": 0}
    go = threading.Event()
    heads = []

    def handler(sock, peer):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, buf = buf.split(b"\r\n\r\n", 1)
            text = head.decode("latin-1")
            heads.append(text)
            m = re.search(r"(?im)^content-length:\s*(\d+)", text)
            need = int(m.group(1)) if m else 0
            while len(buf) < need:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            buf = buf[need:]
            state["n"] += 1
            for i in interims:
                sock.sendall(i)
            go.wait(20)
            sock.sendall(final)
    srv = ScriptedServer(handler)
    srv.go = go
    srv.heads = heads
    srv.count = lambda: state["n"]
    return srv


EARLY = raw("103 Early Hints", [("Link", "</style.css>; rel=preload; as=style"),
                                ("X-Hint", "early")])
PROCESSING = raw("102 Processing", [("X-Hint", "processing")])
FINAL = raw("200 OK", [("Cache-Control", "max-age=60"), ("Content-Length", "5"),
                       ("Content-Type", "text/plain")], b"final")


# ---- interim responses ----

@test
def early_hints_reach_an_http11_client_before_the_final_answer():
    o = held_origin([PROCESSING, EARLY], FINAL)
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 15
        # the origin holds the final answer: what arrives now was passed on
        h1, rest = read_head(s, b"", deadline)
        h2_, rest = read_head(s, rest, deadline)
        ok(h1.startswith("HTTP/1.1 102 "), "102 first: %r" % h1)
        ok(h2_.startswith("HTTP/1.1 103 "), "then 103: %r" % h2_)
        contains(h2_, "Link: </style.css>; rel=preload; as=style", "the 103 keeps its Link")
        o.go.set()
        final, rest = read_head(s, rest, deadline)
        ok(final.startswith("HTTP/1.1 200 "), "the final answer: %r" % final)
        ok("x-hint" not in final.lower(), "interim fields stay out of the final head: %r" % final)
    finally:
        s.close()
    # stored without them: a hit has no interim answer and no X-Hint
    with Conn(port) as c:
        c.send(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(interim=True)
        eq(r.status, 200, "a hit starts with the final answer")
        eq(r.headers.get("X-Cache"), "HIT")
        eq(r.headers.get("X-Hint"), None, "interim fields were not stored")
        eq(r.body, b"final")
    eq(o.count(), 1, "one fetch")


@test
def curl_sees_the_early_hints():
    if not have_curl():
        raise Skip("curl not installed")
    o = held_origin([EARLY], FINAL)
    o.go.set()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    p = subprocess.run(["curl", "-sv", "--max-time", "20", "http://127.0.0.1:%d/c" % port],
                       capture_output=True, timeout=30)
    err = p.stderr.decode("latin-1")
    eq(p.returncode, 0, "curl: %s" % err[-500:])
    ok(re.search(r"(?m)^< HTTP/1.1 103 ", err), "curl saw the 103: %s" % err[-800:])
    ok(re.search(r"(?mi)^< link: </style.css>", err), "with its Link")
    ok(err.index("103") < err.index("HTTP/1.1 200"), "103 before 200")
    eq(p.stdout, b"final")


@test
def no_interim_answers_for_http10_clients():
    o = held_origin([EARLY], FINAL)
    o.go.set()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    data = http_raw(port, b"GET /ten HTTP/1.0\r\nHost: x\r\n\r\n", timeout=10)
    ok(data.startswith(b"HTTP/1.1 200 "), "an HTTP/1.0 client gets the final answer only: %r"
       % data[:200])
    ok(b" 103 " not in data.split(b"\r\n")[0] and b"Early Hints" not in data, "no 103")


@test
def continue_only_where_the_client_asked_and_only_once():
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    o = held_origin([cont, EARLY], raw("201 Created", [("Content-Length", "2")], b"ok"))
    o.go.set()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    # no Expect: the upstream's 100 is not the client's to read
    data = http_raw(port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Connection: close\r\n\r\nabc", timeout=10)
    rs = parse_responses(data, with_interim=True)
    eq([r.status for r in rs], [103, 201], "no 100 without Expect: %r" % data[:300])
    # Expect and the body at once: legate did not say 100, the upstream's passes
    data = http_raw(port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Expect: 100-continue\r\nConnection: close\r\n\r\nabc", timeout=10)
    rs = parse_responses(data, with_interim=True)
    eq([r.status for r in rs], [100, 103, 201], "the upstream's 100 once: %r" % data[:300])
    # Expect, the body held back: legate says 100 itself, the upstream's is dropped
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 15
        h, rest = read_head(s, b"", deadline)
        ok(h.startswith("HTTP/1.1 100 "), "legate's own 100: %r" % h)
        s.sendall(b"abc")
        data = rest
        while time.monotonic() < deadline:
            x = s.recv(65536)
            if not x:
                break
            data += x
    finally:
        s.close()
    rs = parse_responses(data, with_interim=True)
    eq([r.status for r in rs], [103, 201], "no second 100: %r" % data[:300])


def h2_client(port, path, timeout=15, on_info=None):
    """One GET over h2c (prior knowledge) with python3-h2: (informational
    [(status, headers)], final status, final headers, body).  on_info()
    runs when an informational response arrives."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(c.data_to_send())
        c.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"),
                           (":authority", "x")], end_stream=True)
        s.sendall(c.data_to_send())
        infos, status, hdrs, body = [], None, {}, b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.InformationalResponseReceived):
                    d = dict(ev.headers)
                    infos.append((int(d[":status"]), d))
                    if on_info:
                        on_info()
                elif isinstance(ev, h2.events.ResponseReceived):
                    d = dict(ev.headers)
                    status, hdrs = int(d[":status"]), d
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return infos, status, hdrs, body
            out = c.data_to_send()
            if out:
                s.sendall(out)
        fail("stream did not end within %ss" % timeout)
    finally:
        s.close()


@test
def early_hints_reach_an_http2_client():
    if h2 is None:
        raise Skip("python3-h2 not installed")
    o = held_origin([EARLY], FINAL)
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    # the origin holds its final answer until the client has the 103
    infos, status, hdrs, body = h2_client(port, "/h2", on_info=o.go.set)
    eq([i[0] for i in infos], [103], "one informational response")
    eq(infos[0][1].get("link"), "</style.css>; rel=preload; as=style")
    eq((status, body), (200, b"final"))
    eq(hdrs.get("x-hint"), None, "interim fields stay out of the final head")
    infos, status, hdrs, body = h2_client(port, "/h2")
    eq((infos, status, hdrs.get("x-cache"), hdrs.get("x-hint")), ([], 200, "HIT", None),
       "a hit has no interim answer")


def h2_origin_with_hints():
    """An h2c origin (python3-h2) answering every stream with a 103 (Link)
    and then a 200.  .requests counts streams."""
    state = {"n": 0}

    def handler(sock, peer):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        c = h2.connection.H2Connection(config=cfg)
        c.initiate_connection()
        sock.sendall(c.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    state["n"] += 1
                    sid = ev.stream_id
                    c.send_headers(sid, [(":status", "103"), ("link", "</h2.js>; rel=preload"),
                                         ("x-hint", "h2")])
                    c.send_headers(sid, [(":status", "200"), ("content-length", "4"),
                                         ("cache-control", "max-age=60")])
                    c.send_data(sid, b"h2up", end_stream=True)
            out = c.data_to_send()
            if out:
                sock.sendall(out)
    srv = ScriptedServer(handler)
    srv.requests = lambda: state["n"]
    return srv


@test
def early_hints_through_an_http2_upstream():
    if h2 is None:
        raise Skip("python3-h2 not installed")
    o = h2_origin_with_hints()
    port = free_port()
    Legate(conf(port, o.address, up_extra='protocol = "h2c";'), workers=1)
    with Conn(port) as c:
        c.send(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = c.read_response(interim=True)
        r2 = c.read_response(interim=True)
    eq(r1.status, 103, "the upstream's 103 passed to an HTTP/1.1 client")
    eq(r1.headers.get("Link"), "</h2.js>; rel=preload")
    eq((r2.status, r2.body, r2.headers.get("X-Hint")), (200, b"h2up", None))
    infos, status, hdrs, body = h2_client(port, "/up2")
    eq([i[0] for i in infos], [103], "and to an HTTP/2 client")
    eq((status, body, hdrs.get("x-hint")), (200, b"h2up", None))


@test
def an_endless_run_of_interim_answers_is_bounded():
    many = [raw("103 Early Hints", [("Link", "</%d.css>; rel=preload" % i)]) for i in range(40)]
    o = held_origin(many, FINAL)
    o.go.set()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    data = http_raw(port, b"GET /many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    timeout=10)
    rs = parse_responses(data, with_interim=True)
    eq(rs[-1].status, 200, "the final answer still comes")
    eq(len(rs) - 1, 16, "16 interim answers passed, the rest dropped")


@test
def a_client_slow_to_read_interim_answers_gets_them_whole():
    """Interim heads more than the socket takes (a unix socket: its send
    buffer is fixed): legate writes what the client takes, holds the next
    head back meanwhile, and the client still reads every head whole and
    then the final answer."""
    link = "<" + "/x" * 7500 + ">; rel=preload"                 # a 15 KB field
    many = [raw("103 Early Hints", [("Link", link), ("X-N", str(i))]) for i in range(16)]
    o = held_origin(many, FINAL)
    o.go.set()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="legate-c03-")
    path = os.path.join(tmp, "s")
    text = conf(port, o.address).replace(
        '{ address = "127.0.0.1:%d"; http2 = true; }' % port,
        '{ address = "127.0.0.1:%d"; http2 = true; }, "unix:%s"' % (port, path))
    Legate(text, workers=1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(path)
    try:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        wait_until(lambda: o.count() == 1, 10, what="the request to reach the origin")
        time.sleep(0.5)         # let legate fill the socket and wait for room
        data = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            x = s.recv(4096)
            if not x:
                break
            data += x
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rs = parse_responses(data, with_interim=True)
    eq([r.status for r in rs], [103] * 16 + [200], "every head whole, in order")
    eq([r.headers.get("X-N") for r in rs[:16]], [str(i) for i in range(16)])
    ok(all(r.headers.get("Link") == link for r in rs[:16]), "the Link fields intact")
    eq(rs[-1].body, b"final")


# ---- several ranges (multipart/byteranges) ----

BODY = bytes(range(256)) * 4        # 1024 bytes


def scripted(answer):
    """An origin whose answer(head, n) gives the raw response to its n-th
    request; keep-alive.  .seen keeps the Range of each request (or None)."""
    count = [0]
    seen = []

    def handler(sock, peer):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, buf = buf.split(b"\r\n\r\n", 1)
            text = head.decode("latin-1")
            m = re.search(r"(?im)^range:\s*(.*?)\s*$", text)
            seen.append(m.group(1) if m else None)
            count[0] += 1
            sock.sendall(answer(text, count[0]))
    srv = ScriptedServer(handler)
    srv.count = count
    srv.seen = seen
    return srv


def whole_origin(headers=()):
    common = [("Cache-Control", "max-age=60"), ("ETag", '"m1"'), ("Content-Type", "text/plain"),
              ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")] + list(headers)

    def answer(head, n):
        m = re.search(r"(?im)^range:\s*bytes=(\d*)-(\d*)\s*$", head)
        if m:
            a, b = m.group(1), m.group(2)
            if a == "":
                first, last = len(BODY) - int(b), len(BODY) - 1
            else:
                first, last = int(a), min(int(b), len(BODY) - 1) if b else len(BODY) - 1
            part = BODY[first:last + 1]
            return raw("206 Partial Content", common + [
                ("Content-Range", "bytes %d-%d/%d" % (first, last, len(BODY))),
                ("Content-Length", str(len(part)))], part)
        return raw("200 OK", common + [("Content-Length", str(len(BODY)))], BODY)
    return scripted(answer)


def parts_of(r):
    """The parts of a multipart/byteranges response: [(headers dict, bytes)]."""
    ct = r.headers.get("Content-Type") or ""
    m = re.match(r"multipart/byteranges;\s*boundary=(\S+)$", ct)
    ok(m, "a multipart/byteranges answer: %r" % ct)
    b = ("--" + m.group(1)).encode()
    body = r.body
    ok(body.endswith(b + b"--\r\n"), "the closing delimiter: %r" % body[-60:])
    out = []
    for chunk in body[:-len(b + b"--\r\n")].split(b)[1:]:
        ok(chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n"), "a part: %r" % chunk[:80])
        head, data = chunk[2:-2].split(b"\r\n\r\n", 1)
        hdrs = {}
        for line in head.decode("latin-1").split("\r\n"):
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        out.append((hdrs, data))
    return out


def ranged(port, spec, extra=(), method="GET", target="/m"):
    return request(port, method=method, target=target, headers=[("Range", spec)] + list(extra))


@test
def several_ranges_from_a_stored_response():
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    eq(request(port, target="/m").status, 200)
    r = ranged(port, "bytes=0-9, 100-109,-5")
    eq((r.status, r.headers.get("X-Cache")), (206, "HIT"))
    eq(r.headers.get("Content-Range"), None, "no Content-Range on the whole")
    eq(int(r.headers.get("Content-Length")), len(r.body))
    parts = parts_of(r)
    eq([p[0].get("content-range") for p in parts],
       ["bytes 0-9/1024", "bytes 100-109/1024", "bytes 1019-1023/1024"], "in the order asked")
    eq([p[1] for p in parts], [BODY[0:10], BODY[100:110], BODY[1019:]])
    eq({p[0].get("content-type") for p in parts}, {"text/plain"}, "each part its type")
    # HEAD: the length of that body, no body
    r2 = ranged(port, "bytes=0-9,100-109,-5", method="HEAD")
    eq(r2.status, 206)
    eq(r2.body, b"")
    ok(r2.headers.get("Content-Type", "").startswith("multipart/byteranges; boundary="))
    eq(o.count[0], 1, "all from the one fetch")


@test
def overlapping_ranges_are_coalesced_and_too_many_refused():
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address, "cache_max_ranges = 4;"), workers=1)
    eq(request(port, target="/m").status, 200)
    r = ranged(port, "bytes=0-99,50-149,150-199")
    eq((r.status, r.headers.get("Content-Range"), r.body), (206, "bytes 0-199/1024", BODY[:200]),
       "overlapping and touching ranges: one part")
    r = ranged(port, "bytes=0-0,0-0,0-0,0-0")
    eq((r.status, r.headers.get("Content-Range"), r.body), (206, "bytes 0-0/1024", BODY[:1]),
       "the same range four times: once")
    r = ranged(port, "bytes=500-509,0-9,5-19")
    parts = parts_of(r)
    eq([p[0].get("content-range") for p in parts], ["bytes 0-19/1024", "bytes 500-509/1024"],
       "coalesced: in ascending order")
    r = ranged(port, "bytes=0-1,3-4,6-7,9-10,12-13")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "HIT", BODY),
       "more than cache_max_ranges: the whole")
    r = ranged(port, "bytes=2000-,3000-3001")
    eq((r.status, r.headers.get("Content-Range")), (416, "bytes */1024"), "none satisfiable")
    r = ranged(port, "bytes=0-1,2000-")
    eq((r.status, r.headers.get("Content-Range"), r.body), (206, "bytes 0-1/1024", BODY[:2]),
       "the unsatisfiable one left out")
    r = ranged(port, "bytes=5-1,7-9")
    eq((r.status, r.body), (200, BODY), "an invalid range: the field is ignored")


@test
def max_ranges_zero_turns_ranges_off():
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address, "cache_max_ranges = 0;"), workers=1)
    eq(request(port, target="/m").status, 200)
    r = ranged(port, "bytes=0-9")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "HIT", BODY))


@test
def if_range_that_does_not_match_gets_the_whole():
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    eq(request(port, target="/m").status, 200)
    for ir, want in (('"m1"', 206), ('"other"', 200), ('W/"m1"', 200),
                     ("Mon, 01 Jan 2024 00:00:00 GMT", 206), ("Tue, 02 Jan 2024 00:00:00 GMT", 200)):
        r = ranged(port, "bytes=0-9,20-29", [("If-Range", ir)])
        eq(r.status, want, "If-Range %s" % ir)
        if want == 200:
            eq(r.body, BODY)
        else:
            eq([p[1] for p in parts_of(r)], [BODY[0:10], BODY[20:30]])


@test
def curl_reads_several_ranges():
    if not have_curl():
        raise Skip("curl not installed")
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address), workers=1)
    url = "http://127.0.0.1:%d/m" % port
    eq(curl(url)[0], 200)              # stored under curl's Host
    p = subprocess.run(["curl", "-sS", "-D", "-", "--max-time", "20", "-r", "0-3,8-11",
                        url], capture_output=True, timeout=30)
    eq(p.returncode, 0, p.stderr)
    head, body = p.stdout.split(b"\r\n\r\n", 1)
    ok(head.startswith(b"HTTP/1.1 206"), head[:100])
    m = re.search(rb"(?i)boundary=(\S+)", head)
    ok(m, "a boundary in %r" % head)
    chunks = body.split(b"--" + m.group(1))
    eq(len(chunks), 4, "two parts and the end: %r" % body[:300])
    ok(chunks[1].endswith(b"\r\n\r\n" + BODY[0:4] + b"\r\n"), chunks[1])
    ok(chunks[2].endswith(b"\r\n\r\n" + BODY[8:12] + b"\r\n"), chunks[2])


@test
def several_ranges_from_a_stored_part():
    o = whole_origin()
    port = free_port()
    Legate(conf(port, o.address, "cache_partial = true;"), workers=1)
    r = ranged(port, "bytes=0-199")
    eq((r.status, r.body), (206, BODY[:200]))
    eq(o.seen, ["bytes=0-199"])
    r = ranged(port, "bytes=0-9,150-159")
    eq((r.status, r.headers.get("X-Cache")), (206, "HIT"))
    parts = parts_of(r)
    eq([p[0].get("content-range") for p in parts], ["bytes 0-9/1024", "bytes 150-159/1024"])
    eq([p[1] for p in parts], [BODY[0:10], BODY[150:160]])
    eq(len(o.seen), 1, "both inside the part: no upstream request")
    # one outside the part: the whole is fetched (a multi-range is never sent
    # upstream) and answers them
    r = ranged(port, "bytes=0-9,900-909")
    eq(o.seen[-1], None, "the whole went upstream")
    r = ranged(port, "bytes=0-9,900-909")
    eq([p[1] for p in parts_of(r)], [BODY[0:10], BODY[900:910]])
    eq(r.headers.get("X-Cache"), "HIT")


# ---- cache_use_stale ----

def flaky_origin(then, cc="max-age=0"):
    """First request: a 200 stale at once (with an ETag, so it is stored for
    revalidation); later ones: then(sock) -- close, hang, or an error."""
    state = {"n": 0}

    def handler(sock, peer):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, buf = buf.split(b"\r\n\r\n", 1)
            state["n"] += 1
            if state["n"] == 1:
                sock.sendall(raw("200 OK", [("Cache-Control", cc), ("ETag", '"s1"'),
                                            ("Content-Length", "5")], b"first"))
                continue
            if then(sock) == "close":
                return
    srv = ScriptedServer(handler)
    srv.count = lambda: state["n"]
    return srv


def closes(sock):
    return "close"


def hangs(sock):
    time.sleep(8)
    return "close"


def answers(status):
    def fn(sock):
        sock.sendall(raw(status, [("Content-Length", "4"), ("Cache-Control", "no-store")], b"oops"))
    return fn


def stale_case(then, setting, cc="max-age=0", extra=""):
    o = flaky_origin(then, cc)
    port = free_port()
    lg = Legate(conf(port, o.address, setting + extra), workers=1)
    r = request(port, target="/s")
    eq((r.status, r.body), (200, b"first"))
    return o, port, lg


@test
def use_stale_on_error():
    o, port, lg = stale_case(closes, 'cache_use_stale = "error timeout";')
    r = request(port, target="/s")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "STALE", b"first"),
       "an upstream that closes: the stale copy")
    lg.allow_log(r"upstream prematurely closed")
    o2, port2, lg2 = stale_case(closes, "")
    eq(request(port2, target="/s").status, 502, "without cache_use_stale: the error")
    lg2.allow_log(r"upstream prematurely closed")
    o3, port3, lg3 = stale_case(closes, 'cache_use_stale = [ "error" ];',
                                cc="max-age=0, must-revalidate")
    eq(request(port3, target="/s").status, 502, "never for must-revalidate (RFC 9111 4.2.4)")
    lg3.allow_log(r"upstream prematurely closed")


@test
def use_stale_when_no_server_is_left():
    a = flaky_origin(closes)
    b = ScriptedServer(lambda sock, peer: read_request_head(sock))    # reads, closes
    port = free_port()
    lg = Legate(conf(port, "%s\", \"%s" % (a.address, b.address), 'cache_use_stale = "error";'),
                workers=1)
    lg.allow_log(r"upstream prematurely closed|no live upstreams")
    wait_until(lambda: request(port, target="/s").body == b"first", 10,
               what="the first answer to be stored")
    # both fail (each is then out for fail_timeout, max_fails 1), and then
    # there is no server to ask at all: an error too
    for what in ("both servers fail", "no live upstream"):
        r = request(port, target="/s")
        eq((r.status, r.headers.get("X-Cache"), r.body), (200, "STALE", b"first"), what)
    wait_until(lambda: "no live upstreams" in lg.log_text(), 10, what="no live upstreams")


@test
def use_stale_on_timeout_only_when_named():
    o, port, lg = stale_case(hangs, 'cache_use_stale = "timeout";', extra=' proxy_read_timeout = "1s";')
    r = request(port, target="/s")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "STALE", b"first"))
    lg.allow_log(r"timed out")
    o2, port2, lg2 = stale_case(hangs, 'cache_use_stale = "error";', extra=' proxy_read_timeout = "1s";')
    eq(request(port2, target="/s").status, 504, "a timeout is not an error")
    lg2.allow_log(r"timed out")


@test
def use_stale_on_named_statuses():
    o, port, lg = stale_case(answers("500 Internal Server Error"), 'cache_use_stale = "http_500 http_503";')
    r = request(port, target="/s")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "STALE", b"first"))
    o2, port2, lg2 = stale_case(answers("502 Bad Gateway"), 'cache_use_stale = "http_500 http_503";')
    r = request(port2, target="/s")
    eq((r.status, r.body), (502, b"oops"), "a status not named passes")
    o3, port3, lg3 = stale_case(answers("404 Not Found"), 'cache_use_stale = "http_404";')
    eq(request(port3, target="/s").body, b"first")


@test
def use_stale_updating_serves_while_one_request_refreshes():
    go = threading.Event()

    def held(sock):
        go.wait(20)
        sock.sendall(raw("200 OK", [("Cache-Control", "max-age=60"), ("ETag", '"s2"'),
                                    ("Content-Length", "6")], b"second"))
    o, port, lg = stale_case(held, 'cache_use_stale = "updating";')
    got = {}

    def first():
        got["r"] = request(port, target="/s", timeout=30)
    t = threading.Thread(target=first)
    t.start()
    wait_until(lambda: o.count() >= 2, 10, what="the refresh to reach the origin")
    r = request(port, target="/s")
    eq((r.status, r.headers.get("X-Cache"), r.body), (200, "UPDATING", b"first"),
       "while it is being updated: the stale copy at once")
    eq(o.count(), 2, "no second fetch")
    go.set()
    t.join(30)
    eq((got["r"].status, got["r"].body), (200, b"second"))
    r = request(port, target="/s")
    eq((r.headers.get("X-Cache"), r.body), ("HIT", b"second"), "updated")


@test
def use_stale_words_are_checked():
    o = Origin("o")
    rc, err = check_config(conf(free_port(), o.address, 'cache_use_stale = "error http_599";'))
    ok(rc != 0, "an unknown word is an error")
    contains(err, "%s:6: 'cache_use_stale': unknown condition 'http_599'" % check_config.last_path)
    rc, err = check_config(conf(free_port(), o.address,
                                'cache_use_stale = [ "error", "timeout", "updating", "http_500" ];'))
    eq(rc, 0, err)


if __name__ == "__main__":
    main()

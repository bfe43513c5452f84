#!/usr/bin/env python3
"""WebSocket (RFC 6455) through the reverse proxy over HTTP/1.1.

Debian's python3-websockets (10.4, asyncio) is both the client and the echo
origin; raw sockets and scripted origins check what the library hides:
that only a real 101 turns the connection into a tunnel, that bytes sent
after a refused upgrade are read as HTTP and never relayed raw, the
half-closes, the idle timeout, the access log line, and the shipped
conf/examples/websocket.conf."""
import asyncio
import base64
import hashlib
from http import HTTPStatus
import os
import re
import shutil
import socket
import subprocess
import tempfile
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

try:
    import websockets
except ImportError:
    # Debian's python3-websockets (scripts/bootstrap installs it) is pure
    # Python: an interpreter other than Debian's (pyenv...) can use it too
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None
if websockets is not None:
    from websockets.exceptions import ConnectionClosed, InvalidStatusCode

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# opened through legate by Chromium: the echo lands in the DOM
PAGE = b"""<!doctype html>
<html><head><title>websocket through legate</title></head>
<body><div id="out">waiting</div>
<script>
const out = document.getElementById("out");
const ws = new WebSocket((location.protocol == "https:" ? "wss://" : "ws://") + location.host + "/ws/echo");
ws.onopen = () => ws.send("from chromium");
ws.onmessage = (e) => { out.textContent = "echo:" + e.data; ws.close(1000); };
ws.onerror = () => { out.textContent = "error"; };
</script></body></html>
"""


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def run(coro, timeout=30):
    """Run a client coroutine to its end, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class WSOrigin:
    """A websockets server in its own thread and loop.

    /ws/echo...   echoes every message
    /ws/close...  closes with 4001 "bye" after the first message
    anything without Upgrade: plain HTTP 200 "plain PATH upgrade=VALUE"
    .closes: (path, close code the server saw) of each WebSocket that ended;
    .heads: the request headers of each handshake and plain request."""

    def __init__(self):
        if websockets is None:
            raise SkipFile("python3-websockets not installed (scripts/bootstrap installs it)")
        self.closes = []
        self.heads = []
        self.messages = []              # what /ws/echo got, in order
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.error = None

        def main():
            asyncio.set_event_loop(self.loop)
            try:
                self.server = self.loop.run_until_complete(websockets.serve(
                    self.handler, "127.0.0.1", 0, max_size=None,
                    process_request=self.process_request))
                self.port = self.server.sockets[0].getsockname()[1]
            except Exception as e:          # reported by the constructor
                self.error = e
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        if self.error or not hasattr(self, "port"):
            fail("websockets origin did not start: %r" % (self.error,))
        self.address = "127.0.0.1:%d" % self.port
        _track(self)

    async def process_request(self, path, headers):
        self.heads.append((path, dict((k.lower(), v) for k, v in headers.raw_items())))
        if path == "/page" and "upgrade" not in (k.lower() for k in headers.keys()):
            return HTTPStatus.OK, [("Content-Type", "text/html"),
                                   ("Cache-Control", "no-store")], PAGE
        if "upgrade" not in (k.lower() for k in headers.keys()):
            body = ("plain %s upgrade=%s\n" % (path, headers.get("Upgrade"))).encode()
            return HTTPStatus.OK, [("Content-Type", "text/plain")], body
        return None

    async def handler(self, ws):
        path = ws.path
        try:
            if path.startswith("/ws/close"):
                await ws.recv()
                await ws.close(4001, "bye")
            else:
                async for m in ws:
                    self.messages.append(m)
                    await ws.send(m)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append((path, ws.close_code))

    def teardown(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ws_conf(port, origin, route_extra="", http_extra="", routes=None, workers=2):
    return simple_conf(port, [origin], workers=workers, route_extra=route_extra,
                       http_extra=http_extra, routes=routes)


def uri(lg, path):
    return "ws://127.0.0.1:%d%s" % (lg.port, path)


def ws_head(path, key=b"dGhlIHNhbXBsZSBub25jZQ==", method="GET", version="HTTP/1.1", extra=""):
    return ("%s %s %s\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (method, path, version, key.decode(), extra)).encode()


def read_head(s, timeout=10):
    """Read a response head from a raw socket: (head bytes, bytes after it)."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        x = s.recv(65536)
        if not x:
            break
        buf += x
    i = buf.find(b"\r\n\r\n")
    ok(i >= 0, "no response head, got %r" % buf[:300])
    return buf[:i + 4], buf[i + 4:]


def read_to_eof(s, timeout=10, limit=1 << 26):
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(buf) < limit:
        try:
            x = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not x:
            return buf
        buf += x
    fail("no EOF within %ss (got %d bytes)" % (timeout, len(buf)))


def switching(head, key):
    """The 101 head an origin sends for a handshake with this key."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_of(key) + b"\r\n\r\n")


def head_key(head):
    m = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head)
    return m.group(1) if m else None


def log_lines(lg, needle, n=1, timeout=10):
    def lines():
        with open(lg.access_log) as f:
            got = [l for l in f if needle in l]
        return got if len(got) >= n else None
    return wait_until(lines, timeout, what="%d access log line(s) with %r" % (n, needle))


# --------------------------------------------------------------------------
# through the library: client and origin both python3-websockets
# --------------------------------------------------------------------------

@test
def text_and_binary_echo():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo"), max_size=None) as ws:
            await ws.send("hello, legate")
            eq(await ws.recv(), "hello, legate", "text echo")
            blob = bytes(range(256)) * 4
            await ws.send(blob)
            eq(await ws.recv(), blob, "binary echo")
            await ws.send("")
            eq(await ws.recv(), "", "empty message")
    run(go())
    path, hdrs = o.heads[-1]
    eq(path, "/ws/echo")
    eq(hdrs.get("upgrade"), "websocket", "Upgrade sent upstream")
    eq(hdrs.get("connection"), "upgrade", "Connection sent upstream")
    ok("sec-websocket-key" in hdrs and hdrs.get("sec-websocket-version") == "13",
       "Sec-WebSocket-* passed: %r" % hdrs)
    ok("x-forwarded-for" in hdrs, "the usual forwarding headers: %r" % hdrs)
    ok("via" not in hdrs, "no Via on the reverse proxy by default: %r" % hdrs)


@test
def one_megabyte_message():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))
    blob = os.urandom(1 << 20)

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo"), max_size=None) as ws:
            await ws.send(blob)
            back = await ws.recv()
            eq(hashlib.sha256(back).hexdigest(), hashlib.sha256(blob).hexdigest(),
               "1 MiB binary message echoed")
            text = "x" * 1000000
            await ws.send(text)
            eq(len(await ws.recv()), 1000000, "1 MB text message echoed")
    run(go())


@test
def many_messages():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))
    n = 3000

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo"), max_size=None) as ws:
            async def sender():
                for i in range(n):
                    await ws.send("message %d" % i)
            t = asyncio.ensure_future(sender())
            for i in range(n):
                eq(await ws.recv(), "message %d" % i, "message %d in order" % i)
            await t
    run(go(), timeout=60)


@test
def client_closes():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))

    async def go():
        ws = await websockets.connect(uri(lg, "/ws/echo"))
        await ws.send("a")
        eq(await ws.recv(), "a")
        await ws.close(4002, "client done")
        eq(ws.close_code, 4002, "the origin's close frame came back through legate")
    run(go())
    wait_until(lambda: ("/ws/echo", 4002) in o.closes, 10, what="the origin to see code 4002")
    log_lines(lg, "GET /ws/echo HTTP/1.1\" 101")


@test
def server_closes():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))

    async def go():
        async with websockets.connect(uri(lg, "/ws/close")) as ws:
            await ws.send("bye please")
            try:
                await asyncio.wait_for(ws.recv(), 10)
                fail("a message instead of the close")
            except ConnectionClosed as e:
                eq((e.code, e.reason), (4001, "bye"), "the origin's close code and reason")
    run(go())
    wait_until(lambda: o.closes and o.closes[-1][0] == "/ws/close", 10, what="the origin's end")
    log_lines(lg, "GET /ws/close HTTP/1.1\" 101")


@test
def keepalive_http_on_the_same_listener():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo")) as ws:
            with Conn(lg.port) as c:           # HTTP keep-alive while the WebSocket is open
                for i in range(3):
                    r = c.request("GET", "/plain/%d" % i)
                    eq((r.status, r.body), (200, b"plain /plain/%d upgrade=None\n" % i))
                    await ws.send("between %d" % i)
                    eq(await ws.recv(), "between %d" % i)
                ok(not c.closed(0.2), "the HTTP connection stays open")
    run(go())


@test
def idle_timeout_is_the_tunnels_own():
    o = WSOrigin()
    # proxy_read_timeout bounds the wait for the 101, not the open WebSocket
    lg = Legate(ws_conf(free_port(), o, route_extra='proxy_read_timeout = "300ms"; '
                                                    'websocket_idle_timeout = "1500ms";'))

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo"), ping_interval=None) as ws:
            await asyncio.sleep(0.9)           # quiet for three proxy_read_timeouts
            await ws.send("still here")
            eq(await ws.recv(), "still here", "open past proxy_read_timeout")
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(ws.recv(), 15)
                fail("a message on an idle WebSocket")
            except ConnectionClosed:
                pass
            return time.monotonic() - t0
    dt = run(go())
    ok(1.3 <= dt <= 6, "closed %.2fs after the last message (websocket_idle_timeout 1.5s)" % dt)
    log_lines(lg, "GET /ws/echo HTTP/1.1\" 101")


@test
def access_log_line_has_duration_and_bytes():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o, http_extra='log_format = "$request|$status|$request_time|'
                                                  '$request_length|$bytes_sent|$upstream_status";'))
    blob = os.urandom(200000)

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo"), max_size=None) as ws:
            for _ in range(3):
                await ws.send(blob)
                eq(await ws.recv(), blob)
            await asyncio.sleep(1.1)           # open for more than a second: $request_time shows it
    run(go())
    line = log_lines(lg, "GET /ws/echo HTTP/1.1|")[0].strip()
    req, status, rtime, rlen, sent, ustatus = line.split("|")
    eq((status, ustatus), ("101", "101"), "status and upstream status: %s" % line)
    ok(float(rtime) >= 1.1, "$request_time is the tunnel's duration: %s" % line)
    # three masked 200000-byte frames up, three unmasked down, plus the heads
    ok(int(rlen) >= 600000 + 150, "$request_length counts the client's frames: %s" % line)
    ok(int(sent) >= 600000 + 100, "$bytes_sent counts the origin's frames: %s" % line)
    ok(int(sent) < 700000 and int(rlen) < 700000, "no byte counted twice: %s" % line)


@test
def route_refusing_upgrades():
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o, routes='{ prefix = "/"; proxy_pass = "app"; }, '
                        '{ prefix = "/nows/"; proxy_pass = "app"; websocket = false; }'))

    async def go():
        try:
            async with websockets.connect(uri(lg, "/nows/x")):
                fail("a WebSocket opened on a route with websocket = false")
        except InvalidStatusCode as e:
            eq(e.status_code, 200, "the plain answer of the origin")
        async with websockets.connect(uri(lg, "/ws/echo")) as ws:    # the other route passes
            await ws.send("ok")
            eq(await ws.recv(), "ok")
    run(go())
    path, hdrs = [h for h in o.heads if h[0] == "/nows/x"][0]
    ok("upgrade" not in hdrs, "no Upgrade upstream on the refusing route: %r" % hdrs)
    ok("upgrade" not in hdrs.get("connection", "").lower(), "nor Connection: upgrade: %r" % hdrs)
    # and on the wire: the client's connection stays HTTP
    with Conn(lg.port) as c:
        c.send(ws_head("/nows/y"))
        r = c.read_response()
        eq((r.status, r.body), (200, b"plain /nows/y upgrade=None\n"))
        r = c.request("GET", "/nows/z")
        eq(r.status, 200, "the next request on the same connection")


# --------------------------------------------------------------------------
# on the wire: raw clients and scripted origins
# --------------------------------------------------------------------------

class Recorder:
    """A scripted origin: answer(head) -> bytes for every request head; keeps
    every byte each connection received."""

    def __init__(self, answer):
        self.answer = answer
        self.got = []
        self.srv = ScriptedServer(self.handle)
        self.address = self.srv.address

    def handle(self, s, peer):
        rec = [b""]
        self.got.append(rec)
        s.settimeout(5)
        buf = b""
        for _ in range(50):             # requests on one connection, bounded
            while b"\r\n\r\n" not in buf:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
                rec[0] += x
            i = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:i], buf[i:]
            s.sendall(self.answer(head))

    def all_bytes(self):
        return b"".join(r[0] for r in self.got)


def refused_upgrade_stays_http(status_line):
    body = b"not upgraded\n"
    origin = Recorder(lambda head: b"%s\r\nContent-Length: %d\r\n\r\n%s" % (status_line, len(body),
                                                                             body))
    lg = Legate(simple_conf(free_port(), [origin], routes=
                            '{ prefix = "/"; proxy_pass = "app"; }, '
                            '{ exact = "/secret"; return = 418; body = "local\\n"; }'))
    # a request smuggled behind the upgrade: were it relayed raw, the origin
    # would see it; read as HTTP, legate itself answers it (418)
    smuggled = b"GET /secret HTTP/1.1\r\nHost: localhost\r\n\r\n"
    data = http_raw(lg.port, ws_head("/chat") + smuggled, responses=2)
    rs = parse_responses(data)
    eq([r.status for r in rs], [int(status_line.split()[1]), 418], "answers: %r" % data[:600])
    eq(rs[0].body, body)
    ok(b"Upgrade" not in rs[0].raw.split(b"\r\n\r\n")[0], "no Upgrade in the answer: %r" % rs[0].raw)
    eq(rs[1].body, b"local\n", "the bytes after the head were a request legate answered")
    got = origin.all_bytes()
    contains(got.decode("latin-1"), "Upgrade: websocket", "the upgrade was asked for upstream")
    ok(b"/secret" not in got, "the smuggled request never reached the origin: %r" % got)
    # WebSocket frames after the head: read as HTTP, they are a bad request
    # (once a line of them is complete: the parser waits for the end of a line)
    frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"     # masked "Hello" (RFC 6455 5.7)
    data = http_raw(lg.port, ws_head("/chat2") + frame + b"\r\n\r\n", responses=2)
    rs = parse_responses(data)
    eq([r.status for r in rs], [int(status_line.split()[1]), 400], "answers: %r" % data[:600])
    ok(frame not in origin.all_bytes(), "the frame never reached the origin")
    lg.allow_log(r"sent an invalid request head")


@test
def upgrade_answered_200_stays_http():
    refused_upgrade_stays_http(b"HTTP/1.1 200 OK")


@test
def upgrade_answered_403_stays_http():
    refused_upgrade_stays_http(b"HTTP/1.1 403 Forbidden")


@test
def unasked_switch_is_a_502():
    """A 101 to a request that did not ask (or to another protocol) is not
    relayed: the upstream would be speaking something nobody agreed to."""
    def answer(head):
        key = head_key(head) or b"x"
        if b"/h2c" in head.split(b"\r\n")[0]:
            return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        return switching(head, key)
    origin = Recorder(answer)
    # every 502 here is the origin's fault: keep it in, to see what it gets
    lg = Legate(simple_conf(free_port(), [origin], upstream_extra="max_fails = 0;"))
    lg.allow_log(r"switched protocols without being asked")
    r = request(lg.port, "GET", "/plain")
    eq(r.status, 502, "101 to a plain GET")
    with Conn(lg.port) as c:
        c.send(ws_head("/h2c"))
        eq(c.read_response().status, 502, "101 to h2c for a websocket request")
    # an Upgrade other than websocket is dropped, as any hop-by-hop field
    with Conn(lg.port) as c:
        r = c.request("GET", "/other", headers=[("Upgrade", "h2c"), ("Connection", "Upgrade")])
        eq(r.status, 502)
    other = [g[0] for g in origin.got if b"/other" in g[0]][0]
    ok(b"h2c" not in other and b"Upgrade" not in other, "no Upgrade: h2c upstream: %r" % other)
    # not a handshake: POST, HTTP/1.0, or a body
    for head in (ws_head("/p", method="POST", extra="Content-Length: 0\r\n"),
                 ws_head("/h10", version="HTTP/1.0"),
                 ws_head("/b", extra="Content-Length: 2\r\n") + b"hi"):
        data = http_raw(lg.port, head, responses=1)
        eq(parse_responses(data)[0].status, 502, "not upgraded: %r" % head[:20])
    for g in origin.got:
        first = g[0].split(b"\r\n")[0]
        if first.startswith((b"POST /p", b"GET /h10", b"GET /b ")):
            ok(b"Upgrade:" not in g[0], "no Upgrade upstream for %r" % first)


class Switcher:
    """A scripted origin that does the opening handshake by hand and then
    plays `after(sock, early)`, early being the bytes that came behind the
    head; plain HTTP requests get a keep-alive 200."""

    def __init__(self, after):
        self.after = after
        self.conns = []                 # per connection: the request lines it got
        self.result = {}
        self.srv = ScriptedServer(self.handle)
        self.address = self.srv.address

    def handle(self, s, peer):
        lines = []
        self.conns.append(lines)
        s.settimeout(10)
        buf = b""
        for _ in range(50):
            while b"\r\n\r\n" not in buf:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
            i = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:i], buf[i:]
            lines.append(head.split(b"\r\n")[0])
            key = head_key(head)
            if key is None or b"upgrade: websocket" not in head.lower():
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                continue
            s.sendall(switching(head, key))
            self.after(self, s, buf)
            return


@test
def half_close_client_first():
    """The client ends its direction; the origin still answers, then closes."""
    def after(sw, s, early):
        n = len(early)
        while True:
            x = s.recv(1 << 20)
            if not x:
                break
            n += len(x)
        sw.result["up"] = n
        s.sendall(b"got %d" % n)
    origin = Switcher(after)
    lg = Legate(simple_conf(free_port(), [origin]))
    s = socket.create_connection(("127.0.0.1", lg.port), timeout=10)
    try:
        s.sendall(ws_head("/ws"))
        head, rest = read_head(s)
        ok(head.startswith(b"HTTP/1.1 101 "), "101: %r" % head)
        contains(head.decode(), "Sec-WebSocket-Accept: " + accept_of(b"dGhlIHNhbXBsZSBub25jZQ==").decode())
        contains(head.decode(), "Upgrade: websocket\r\n")
        contains(head.decode(), "Connection: upgrade\r\n")
        ok(b"Connection: close" not in head and b"Transfer-Encoding" not in head, repr(head))
        payload = os.urandom(300000)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        eq(rest + read_to_eof(s), b"got 300000", "the origin saw the end and answered after it")
    finally:
        s.close()


@test
def half_close_origin_first_and_no_pooling():
    """The origin ends its direction first; the client still sends.  The
    upgraded connection was a pooled one, and is not pooled again."""
    def after(sw, s, early):
        s.sendall(b"early words")
        s.shutdown(socket.SHUT_WR)
        got = early
        while True:
            x = s.recv(65536)
            if not x:
                break
            got += x
        sw.result["up"] = got
    origin = Switcher(after)
    lg = Legate(simple_conf(free_port(), [origin], workers=1))
    eq(request(lg.port, "GET", "/warm").status, 200)
    eq(len(origin.conns), 1)
    s = socket.create_connection(("127.0.0.1", lg.port), timeout=10)
    try:
        s.sendall(ws_head("/ws"))
        head, rest = read_head(s)
        ok(head.startswith(b"HTTP/1.1 101 "), "101: %r" % head)
        eq(rest + read_to_eof(s), b"early words", "the origin's direction ended first")
        s.sendall(b"late words")
        s.shutdown(socket.SHUT_WR)
        wait_until(lambda: origin.result.get("up") == b"late words", 10,
                   what="the origin to get the client's words after its own end")
        eq(read_to_eof(s), b"")
    finally:
        s.close()
    eq(len(origin.conns), 1, "the upgrade went out on the pooled connection")
    log_lines(lg, "GET /ws HTTP/1.1\" 101")
    eq(request(lg.port, "GET", "/after").status, 200)
    eq(len(origin.conns), 2, "a new upstream connection after the tunnel")
    eq(origin.conns[0], [b"GET /warm HTTP/1.1", b"GET /ws HTTP/1.1"])


@test
def idle_tunnel_upstream_is_not_pooled():
    """A tunnel ended by its idle timeout leaves an upstream connection that
    is still open: it must be closed, not given to the next request."""
    def after(sw, s, early):
        got = early
        s.settimeout(20)
        try:
            while True:
                x = s.recv(65536)
                if not x:
                    break
                got += x
        except OSError:
            pass
        sw.result["after"] = got
    origin = Switcher(after)
    lg = Legate(simple_conf(free_port(), [origin], workers=1,
                            route_extra='websocket_idle_timeout = "300ms";'))
    s = socket.create_connection(("127.0.0.1", lg.port), timeout=10)
    try:
        s.sendall(ws_head("/ws"))
        head, rest = read_head(s)
        ok(head.startswith(b"HTTP/1.1 101 "), "101: %r" % head)
        eq(rest + read_to_eof(s), b"", "closed by the idle timeout")
    finally:
        s.close()
    wait_until(lambda: "after" in origin.result, 10, what="legate to close the upstream side")
    eq(origin.result["after"], b"", "nothing written on the upgraded connection after the tunnel")
    eq(request(lg.port, "GET", "/after").status, 200)
    eq(len(origin.conns), 2, "a new upstream connection after the tunnel")


@test(timeout=150)
def chromium_opens_a_websocket():
    if CHROMIUM is None:
        skip("chromium not installed (scripts/bootstrap installs it)")
    o = WSOrigin()
    lg = Legate(ws_conf(free_port(), o))
    d = tempfile.mkdtemp(prefix="legate-chromium-ws-")
    dom, err = "", b""
    try:
        # a loaded machine (make -j check, another browser) can make one
        # run's virtual time end before the socket opens: a few tries, bounded
        for attempt in range(3):
            cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                   "--disable-background-networking", "--disable-component-update",
                   "--user-data-dir=" + os.path.join(d, "profile%d" % attempt),
                   "--virtual-time-budget=10000", "--dump-dom", lg.url("/page")]
            try:
                p = subprocess.run(cmd, capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:   # a stuck browser: the next try
                dom, err = "", e.stderr or b"(chromium timed out)"
                continue
            dom, err = p.stdout.decode(errors="replace"), p.stderr
            if "echo:from chromium" in dom:
                break
    finally:
        shutil.rmtree(d, ignore_errors=True)
    contains(dom, '<div id="out">echo:from chromium</div>',
             "the echo in Chromium's DOM (origin saw %r; stderr tail %r)"
             % ([h[0] for h in o.heads], err[-300:]))
    ok("from chromium" in o.messages, "the origin got Chromium's message")
    log_lines(lg, "GET /ws/echo HTTP/1.1\" 101")


@test(timeout=150)
def chromium_opens_a_websocket_over_http2():
    """RFC 8441 with a real browser: the page comes over h2 (TLS, ALPN), and
    Chromium opens its WebSocket as an extended CONNECT stream on the same
    connection (the access log says HTTP/2.0 for it); the origin sees an
    ordinary HTTP/1.1 upgrade."""
    if CHROMIUM is None:
        skip("chromium not installed (scripts/bootstrap installs it)")
    o = WSOrigin()
    port = free_port()
    certs = os.path.join(REPO, "conf", "examples", "certs")
    text = """
worker_processes = 1;
http = {
    access_log = "logs/access.log";
    log_format = "$request $status $server_protocol";
    upstreams = { app = { servers = ( "127.0.0.1:%d" ); }; };
    servers = ( { listen = ( { address = "127.0.0.1:%d"; tls = true; http2 = true; } );
        tls_certificates = ( { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );
        routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (o.port, port, certs, certs)
    lg = Legate(text, workers=None)
    d = tempfile.mkdtemp(prefix="legate-chromium-ws-h2-")
    dom, err = "", b""
    try:
        for attempt in range(3):
            cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                   "--disable-background-networking", "--disable-component-update",
                   "--ignore-certificate-errors",
                   "--user-data-dir=" + os.path.join(d, "profile%d" % attempt),
                   "--virtual-time-budget=10000", "--dump-dom", "https://localhost:%d/page" % port]
            try:
                p = subprocess.run(cmd, capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:   # a stuck browser: the next try
                dom, err = "", e.stderr or b"(chromium timed out)"
                continue
            dom, err = p.stdout.decode(errors="replace"), p.stderr
            if "echo:from chromium" in dom:
                break
    finally:
        shutil.rmtree(d, ignore_errors=True)
    contains(dom, '<div id="out">echo:from chromium</div>',
             "the echo in Chromium's DOM (stderr tail %r)" % err[-300:])
    log = open(lg.access_log).read() if os.path.exists(lg.access_log) else ""
    wait_until(lambda: "/ws/echo" in open(lg.access_log).read(), 10, what="the tunnel's log line")
    log = open(lg.access_log).read()
    contains(log, "GET /page HTTP/2.0 200 HTTP/2.0", "the page over HTTP/2")
    ok(re.search(r"GET /ws/echo HTTP/2\.0 (101|200) HTTP/2\.0", log),
       "the WebSocket on an HTTP/2 stream (RFC 8441): %r" % log)
    ws_heads = [h for path, h in o.heads if path == "/ws/echo"]
    ok(ws_heads and ws_heads[-1].get("upgrade", "").lower() == "websocket",
       "the origin saw an HTTP/1.1 upgrade: %r" % ws_heads)


@test(timeout=150)
def wss_on_a_tls_listener():
    """TLS on the client side: the tunnel relays through TLS, not splice,
    and still closes cleanly both ways."""
    import ssl
    if shutil.which("openssl") is None:
        skip("openssl not installed")
    o = WSOrigin()
    d = tempfile.mkdtemp(prefix="legate-certs-ws-")
    try:
        subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"), d], check=True,
                       capture_output=True, timeout=120)
        port = free_port()
        lg = Legate("""
http = {
    log_format = "$request|$status|$request_length|$bytes_sent";
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = ( { listen = ( { address = "127.0.0.1:%d"; tls = true; } );
        tls_certificates = ( { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; } );
        routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (o.address, port, d, d))
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        blob = os.urandom(300000)

        async def go():
            async with websockets.connect("wss://localhost:%d/ws/echo" % port, ssl=ctx,
                                          max_size=None) as ws:
                for i in range(5):
                    await ws.send(blob)
                    eq(await ws.recv(), blob, "echo %d over TLS" % i)
                await ws.close(4003, "tls done")
                eq(ws.close_code, 4003)
        run(go())
        wait_until(lambda: ("/ws/echo", 4003) in o.closes, 10, what="the origin to see 4003")
        line = log_lines(lg, "GET /ws/echo HTTP/1.1|101|")[0].strip()
        ok(int(line.split("|")[-1]) >= 5 * 300000, "bytes through TLS counted: %s" % line)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# the shipped example
# --------------------------------------------------------------------------

@test
def example_websocket_conf():
    o = WSOrigin()
    port = free_port()
    with open(os.path.join(REPO, "conf", "examples", "websocket.conf")) as f:
        text = f.read()
    ok("127.0.0.1:8080" in text and "127.0.0.1:9001" in text, "the example's addresses")
    text = text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
    text = text.replace("127.0.0.1:9001", o.address)
    text = text.replace('worker_processes = "auto";', "worker_processes = 2;")
    lg = Legate(text)

    async def go():
        async with websockets.connect(uri(lg, "/ws/echo")) as ws:
            await ws.send("through the example")
            eq(await ws.recv(), "through the example")
        try:
            async with websockets.connect(uri(lg, "/")):
                fail("a WebSocket opened on the plain route")
        except InvalidStatusCode as e:
            eq(e.status_code, 200)
    run(go())
    r = request(lg.port, "GET", "/index")
    eq((r.status, r.body), (200, b"plain /index upgrade=None\n"), "plain HTTP to the same upstream")
    line = log_lines(lg, "\"GET /ws/echo HTTP/1.1\" 101 ")[0]
    ok(re.search(r'" 101 \d+\.\d{3} \d+ \d+$', line.strip()), "duration and bytes: %r" % line)


if __name__ == "__main__":
    main()

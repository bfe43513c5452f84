#!/usr/bin/env python3
"""An HTTP/2 (h2c, prior knowledge) origin for the e2e tests, on python3-h2.

    python3 t/h2origin.py [--port N] [--max-streams N] [--goaway-after N] [--tls CERT KEY]

Prints "PORT <n>" once listening.  Paths and query arguments:

    GET /_stats over HTTP/1.1 (a plain connection, not counted)
    /_stats              {"connections", "requests", "max_active", "refused",
                          "paths"} as JSON; /_stats?reset=1 zeroes them
    any path             size=N (body of N bytes of a pattern), delay=MS,
                         nolen=1 (no content-length), trailers=1 (trailer
                         fields x-trailer-a, x-body-sha256 after the body),
                         status=N
    echo=1               the request body back; x-body-sha256 and
                         x-body-length say what arrived
    early=1              answered as soon as the head arrives, the body never
                         read (its window stays shut)

Every response has x-origin-stream (the stream ID) and x-origin-conn (the
connection's number).  --max-streams sets SETTINGS_MAX_CONCURRENT_STREAMS
(the "max_active" stat is the most streams seen open at once on one
connection).  --goaway-after N: on each connection, the Nth request makes
the server send GOAWAY with that stream as the last one; streams above it
are never answered (counted in "refused"), the connection closes once the
ones below are done.
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

STATS_LOCK = threading.Lock()
STATS = {"connections": 0, "requests": 0, "max_active": 0, "refused": 0, "paths": {}}


def pattern(n):
    base = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (base * (n // len(base) + 1))[:n]


class Conn:
    def __init__(self, sock, num, args):
        self.sock = sock
        self.num = num
        self.args = args
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.lock = threading.Condition()
        self.streams = {}       # id -> {"headers", "body"}
        self.active = 0
        self.nreq = 0
        self.goaway_last = None
        self.pending = 0        # handlers running
        self.closed = False
        self.shut = False

    def send_pending(self):
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def run(self):
        with self.lock:
            if self.args.max_streams:
                # in the first SETTINGS frame (the server's preface)
                self.h2.local_settings = h2.settings.Settings(
                    client=False, initial_values={
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.args.max_streams})
            self.h2.initiate_connection()
            self.send_pending()
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    break
                if self.shut:
                    continue    # GOAWAY sent: what still comes is dropped
                with self.lock:
                    try:
                        events = self.h2.receive_data(data)
                    except Exception:
                        break
                    for ev in events:
                        self.event(ev)
                    self.send_pending()
                    self.lock.notify_all()
                    self.maybe_goaway()
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()
            # wait for the handlers (they send on the socket)
            deadline = time.time() + 10
            with self.lock:
                while self.pending and time.time() < deadline:
                    self.lock.wait(0.1)
            try:
                self.sock.close()
            except OSError:
                pass

    def maybe_goaway(self):
        """(Under the lock.)  Once every stream up to goaway_last is answered:
        GOAWAY naming it, and our end closes; we read on until the client
        closes (closing with unread bytes would reset what we sent)."""
        if self.goaway_last is None or self.pending or self.shut:
            return
        self.shut = True
        self.h2.close_connection(last_stream_id=self.goaway_last)
        self.send_pending()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            sid = ev.stream_id
            if self.goaway_last is not None and sid > self.goaway_last:
                with STATS_LOCK:
                    STATS["refused"] += 1
                return
            self.streams[sid] = {"headers": dict(ev.headers), "body": bytearray(), "t": time.time()}
            self.active += 1
            with STATS_LOCK:
                STATS["max_active"] = max(STATS["max_active"], self.active)
            self.nreq += 1
            if self.args.goaway_after and self.nreq == self.args.goaway_after:
                self.goaway_last = sid      # the GOAWAY goes once the streams up to it are answered
            if ev.stream_ended or "early=1" in self.streams[sid]["headers"].get(":path", ""):
                self.dispatch(sid)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            early = st is not None and "early=1" in st["headers"].get(":path", "")
            if ev.flow_controlled_length and not early:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if st is not None:
                st["body"] += ev.data
        elif isinstance(ev, h2.events.StreamEnded):
            if ev.stream_id in self.streams:
                self.dispatch(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.finish(ev.stream_id)
            self.streams.pop(ev.stream_id, None)

    def dispatch(self, sid):
        st = self.streams[sid]
        if st.get("dispatched"):
            return
        st["dispatched"] = True
        self.pending += 1
        threading.Thread(target=self.handle, args=(sid, st), daemon=True).start()

    def send_data(self, sid, data, end):
        """Send data under flow control; False when the stream went."""
        pos = 0
        with self.lock:
            while True:
                if self.closed or sid not in self.streams:
                    return False
                if pos >= len(data):
                    break
                try:
                    win = self.h2.local_flow_control_window(sid)
                except Exception:
                    return False
                n = min(win, self.h2.max_outbound_frame_size, len(data) - pos)
                if n <= 0:
                    self.lock.wait(0.5)
                    continue
                self.h2.send_data(sid, data[pos:pos + n])
                pos += n
                self.send_pending()
            if end:
                self.finish(sid)
                self.h2.end_stream(sid)
                self.send_pending()
        return True

    def finish(self, sid):
        """The stream's last frame goes now (under the lock): not active."""
        st = self.streams.get(sid)
        if st is not None and not st.get("finished"):
            st["finished"] = True
            self.active -= 1

    def handle(self, sid, st):
        try:
            self._handle(sid, st)
        except Exception:
            pass
        finally:
            with self.lock:
                self.finish(sid)
                self.streams.pop(sid, None)
                self.pending -= 1
                self.lock.notify_all()
                self.maybe_goaway()

    def _handle(self, sid, st):
        hd = st["headers"]
        path = hd.get(":path", "/")
        u = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(u.query))
        with STATS_LOCK:
            if u.path != "/_stats":
                STATS["requests"] += 1
                STATS["paths"][u.path] = STATS["paths"].get(u.path, 0) + 1
        if u.path == "/_stats":
            with STATS_LOCK:
                body = json.dumps(STATS).encode()
                if q.get("reset"):
                    STATS.update({"connections": 0, "requests": 0, "max_active": 0,
                                  "refused": 0, "paths": {}})
            self.respond(sid, 200, [("content-type", "application/json"),
                                    ("content-length", str(len(body)))], body)
            return
        if q.get("delay"):
            time.sleep(int(q["delay"]) / 1000.0)
        req_body = bytes(st["body"])
        extra = [("x-origin-stream", str(sid)), ("x-origin-conn", str(self.num)),
                 ("x-request-te", hd.get("te", "")),
                 ("x-request-authority", hd.get(":authority", "")),
                 ("x-request-method", hd.get(":method", ""))]
        if q.get("echo"):
            body = req_body
            extra += [("x-body-sha256", hashlib.sha256(req_body).hexdigest()),
                      ("x-body-length", str(len(req_body)))]
        else:
            body = pattern(int(q.get("size", "0")))
        status = int(q.get("status", "200"))
        headers = [("content-type", "application/octet-stream")] + extra
        if not q.get("nolen"):
            headers.append(("content-length", str(len(body))))
        trailers = None
        if q.get("trailers"):
            trailers = [("x-trailer-a", "one"), ("x-body-sha256", hashlib.sha256(body).hexdigest())]
        self.respond(sid, status, headers, body, trailers, head=hd.get(":method") == "HEAD")

    def respond(self, sid, status, headers, body, trailers=None, head=False):
        with self.lock:
            if self.closed or sid not in self.streams:
                return
            end = (not body or head) and not trailers
            if end:
                self.finish(sid)
            self.h2.send_headers(sid, [(":status", str(status))] + headers, end_stream=end)
            self.send_pending()
        if end:
            return
        if head:
            body = b""
        if not self.send_data(sid, body, trailers is None):
            return
        if trailers:
            with self.lock:
                if sid in self.streams and not self.closed:
                    self.finish(sid)
                    self.h2.send_headers(sid, trailers, end_stream=True)
                    self.send_pending()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--max-streams", type=int, default=0)
    ap.add_argument("--goaway-after", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                    help="TLS, h2 by ALPN (a plain GET /_stats still works)")
    args = ap.parse_args()
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        ctx.set_alpn_protocols(["h2"])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(128)
    print("PORT %d" % ls.getsockname()[1], flush=True)
    n = 0
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = s.recv(4, socket.MSG_PEEK)
        if first == b"GET ":
            # a plain HTTP/1.1 "GET /_stats[?reset=1]" from the test: not counted
            req = s.recv(4096)
            with STATS_LOCK:
                body = json.dumps(STATS).encode()
                if b"reset=1" in req.split(b"\r\n")[0]:
                    STATS.update({"connections": 0, "requests": 0, "max_active": 0,
                                  "refused": 0, "paths": {}})
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                      b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            s.close()
            continue
        if ctx:
            try:
                s = ctx.wrap_socket(s, server_side=True)
            except (ssl.SSLError, OSError):
                s.close()
                continue
            if s.selected_alpn_protocol() != "h2":
                s.close()
                continue
        n += 1
        with STATS_LOCK:
            STATS["connections"] += 1
        threading.Thread(target=Conn(s, n, args).run, daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    os._exit(0)

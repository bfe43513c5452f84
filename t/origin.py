#!/usr/bin/env python3
"""A small scriptable HTTP/1.1 origin server for legate's tests and demo.

    python3 t/origin.py [--port N] [--host 127.0.0.1] [--name NAME] [--unix PATH]

Prints "PORT <n>" (or "UNIX <path>" with --unix) on stdout once listening.
One thread per connection: clarity first.  Request bodies are streamed: only
their length and sha256 are kept, so a 1 GiB upload runs in flat memory.

Every response carries "X-Origin: NAME" and "X-Origin-Target: <target as
received>".  Behaviour is chosen by query arguments on any path:

  size=N        body of N bytes of PATTERN (default "origin NAME PATH\\n")
  status=N      response status (204, 304, HEAD and 1xx never carry a body)
  delay=MS      sleep before sending the response head
  chunked=1     send the body with Transfer-Encoding: chunked
  chunk=N       bytes per chunk / per write (default 65536)
  drip=MS       sleep between chunks / writes
  close=1       "Connection: close", then close
  reset=1       read the request, then close with RST (SO_LINGER 0), no answer
  hang=1        read the request, never answer (until the peer closes)
  garbage=1     answer a non-HTTP line, then close
  truncate=N    announce the full body but close after N body bytes
  hdr=Name:Val  add a response header (repeatable)
  echo=1        body is JSON {"method","target","version","headers",
                "body_len","body_sha256","peer"}
  ctype=TYPE    Content-Type (default text/plain)
  gz=1          send the body gzip-compressed, with Content-Encoding: gzip
  etag=V        ETag "V"; a request with If-None-Match "V" gets 304

GET /_stats returns {"requests", "connections", "active", "by_path",
"incomplete", "bad"} and does not count itself (nor its connection, when it
is the connection's first request).  /_stats?reset=1 zeroes the counters.
SIGTERM / SIGINT exit with status 0.
"""

import argparse
import hashlib
import gzip
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

# 64 bytes; 64 KiB blocks are whole repetitions, so block k of a body starts
# at a multiple of the period and every block but the last is BLOCK itself.
PATTERN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-\n"
BLOCK = PATTERN * 1024

MAX_LINE = 1 << 20          # request line / header line / chunk-size line
MAX_HEAD = 4 << 20          # whole request head


def pattern(n, offset=0):
    """The n bytes of the repeating pattern starting at offset."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


def pattern_blocks(n, chunk=65536):
    """Yield the n-byte pattern body in pieces of at most chunk bytes."""
    sent = 0
    while sent < n:
        k = min(chunk, n - sent)
        if k == len(BLOCK) and sent % len(PATTERN) == 0:
            yield BLOCK
        else:
            yield pattern(k, sent)
        sent += k


class BadRequest(Exception):
    pass


class Reader:
    """Buffered reads from a socket; the buffer only ever holds a head."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def readline(self, limit=MAX_LINE):
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            start = len(self.buf)
            self.fill()

    def read_some(self, n):
        """Up to n bytes (at least 1), from the buffer first."""
        if self.buf:
            k = min(n, len(self.buf))
            data = bytes(self.buf[:k])
            del self.buf[:k]
            return data
        data = self.sock.recv(min(n, 1 << 20))
        if not data:
            raise EOFError
        return data

    def consume(self, n, sink):
        """Read exactly n bytes, feeding them to sink(bytes)."""
        while n > 0:
            data = self.read_some(n)
            sink(data)
            n -= len(data)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()
        self.active = 0

    def reset(self):
        self.requests = 0
        self.connections = 0
        self.by_path = {}
        self.incomplete = 0
        self.bad = 0

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "connections": self.connections,
                    "active": self.active, "by_path": dict(self.by_path),
                    "incomplete": self.incomplete, "bad": self.bad}


class Request:
    def __init__(self):
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []
        self.body_len = 0
        self.sha = hashlib.sha256()

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_list(self, name):
        """Comma-separated tokens of every header called name, lower case."""
        out = []
        for k, v in self.headers:
            if k.lower() == name.lower():
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def feed(self, data):
        self.body_len += len(data)
        self.sha.update(data)


class Origin:
    def __init__(self, name):
        self.name = name
        self.stats = Stats()

    # ---- connection driver ----

    def serve_connection(self, sock, peer):
        counted = True
        first = True
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass                        # unix socket
        reader = Reader(sock)
        try:
            while True:
                req = Request()
                try:
                    self.read_head(reader, req)
                except EOFError:
                    return
                except BadRequest as e:
                    with self.stats.lock:
                        self.stats.bad += 1
                    self.send_simple(sock, 400, "bad request: %s\n" % e)
                    return
                path = urlsplit(req.target).path or req.target
                if path == "/_stats":
                    if first:
                        with self.stats.lock:
                            self.stats.connections -= 1
                            self.stats.active -= 1
                        counted = False
                    first = False
                    if not self.serve_stats(sock, reader, req):
                        return
                    continue
                first = False
                with self.stats.lock:
                    self.stats.requests += 1
                    self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
                if not self.serve_request(sock, reader, req, path, peer):
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            if counted:
                with self.stats.lock:
                    self.stats.active -= 1
            try:
                sock.close()
            except OSError:
                pass

    def read_head(self, reader, req):
        line = reader.readline()
        while line in (b"\r\n", b"\n"):        # tolerate CRLF between requests
            line = reader.readline()
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise BadRequest("request line %r" % line[:80])
        req.method, req.target, req.version = parts
        size = len(line)
        while True:
            line = reader.readline()
            size += len(line)
            if size > MAX_HEAD:
                raise BadRequest("head too large")
            if line in (b"\r\n", b"\n"):
                return
            text = line.decode("latin-1").rstrip("\r\n")
            if ":" not in text:
                raise BadRequest("header line %r" % line[:80])
            k, v = text.split(":", 1)
            req.headers.append((k, v.strip(" \t")))

    def read_body(self, sock, reader, req):
        """Stream the request body into req.feed; False if it did not end."""
        te = req.header_list("transfer-encoding")
        cl = req.header("content-length")
        has_body = bool(te) or (cl is not None and cl.strip() != "0")
        if has_body and req.version == "HTTP/1.1" and \
                (req.header("expect") or "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if te:
                if te[-1] != "chunked":
                    raise BadRequest("transfer-encoding %r" % te)
                while True:
                    line = reader.readline(4096).decode("latin-1")
                    size = line.split(";", 1)[0].strip()
                    try:
                        n = int(size, 16)
                    except ValueError:
                        raise BadRequest("chunk size %r" % line[:40])
                    if n == 0:
                        while reader.readline() not in (b"\r\n", b"\n"):
                            pass                    # trailers
                        return True
                    reader.consume(n, req.feed)
                    if reader.readline(16) not in (b"\r\n", b"\n"):
                        raise BadRequest("no CRLF after chunk")
            elif cl is not None:
                try:
                    n = int(cl.strip())
                except ValueError:
                    raise BadRequest("content-length %r" % cl)
                reader.consume(n, req.feed)
            return True
        except EOFError:
            with self.stats.lock:
                self.stats.incomplete += 1
            return False

    # ---- responses ----

    def serve_stats(self, sock, reader, req):
        if not self.read_body(sock, reader, req):
            return False
        q = dict(parse_qsl(urlsplit(req.target).query, keep_blank_values=True))
        if q.get("reset") == "1":
            with self.stats.lock:
                self.stats.reset()
        body = (json.dumps(self.stats.snapshot()) + "\n").encode()
        head = ("HTTP/1.1 200 OK\r\nX-Origin: %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (self.name, len(body)))
        sock.sendall(head.encode() + body)
        return self.keep_alive(req)

    def send_simple(self, sock, status, text):
        body = text.encode()
        head = ("HTTP/1.1 %d %s\r\nX-Origin: %s\r\nConnection: close\r\n"
                "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                % (status, phrase(status), self.name, len(body)))
        try:
            sock.sendall(head.encode() + body)
        except OSError:
            pass

    @staticmethod
    def keep_alive(req):
        conn = req.header_list("connection")
        if req.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def serve_request(self, sock, reader, req, path, peer):
        """Answer one request; False when the connection must end."""
        query = parse_qsl(urlsplit(req.target).query, keep_blank_values=True)
        q = dict(query)
        try:
            if not self.read_body(sock, reader, req):
                return False
        except BadRequest as e:
            with self.stats.lock:
                self.stats.bad += 1
            self.send_simple(sock, 400, "bad request: %s\n" % e)
            return False

        if q.get("reset") == "1":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if q.get("hang") == "1":
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return False
        if "delay" in q:
            time.sleep(int(q["delay"]) / 1000.0)
        if q.get("garbage") == "1":
            sock.sendall(b"this is not HTTP at all\r\n")
            sock.shutdown(socket.SHUT_WR)
            return False

        status = int(q.get("status", "200"))
        # etag=V: send ETag "V", and answer 304 to a matching If-None-Match
        if "etag" in q:
            inm = dict((k.lower(), v) for k, v in req.headers).get("if-none-match", "")
            if '"%s"' % q["etag"] in inm:
                status = 304
        if q.get("echo") == "1":
            body = json.dumps({
                "method": req.method, "target": req.target, "version": req.version,
                "headers": [[k, v] for k, v in req.headers],
                "body_len": req.body_len, "body_sha256": req.sha.hexdigest(),
                "peer": peer, "origin": self.name}).encode() + b"\n"
            ctype = "application/json"
            size = len(body)
        elif "size" in q:
            body = None
            size = int(q["size"])
            ctype = "application/octet-stream"
        else:
            body = ("origin %s %s\n" % (self.name, path)).encode()
            size = len(body)
            ctype = "text/plain"
        ctype = q.get("ctype", ctype)
        gz = q.get("gz") == "1"
        if gz:
            raw = body if body is not None else b"".join(pattern_blocks(size, 65536))
            body = gzip.compress(raw, mtime=0)
            size = len(body)
        chunked = q.get("chunked") == "1"
        chunk = max(1, int(q.get("chunk", "65536")))
        drip = int(q.get("drip", "0")) / 1000.0
        truncate = int(q["truncate"]) if "truncate" in q else None
        close = q.get("close") == "1" or not self.keep_alive(req)
        bodyless = req.method == "HEAD" or status in (204, 304) or status < 200

        head = ["HTTP/1.1 %d %s" % (status, phrase(status)),
                "Server: legate-test-origin",
                "X-Origin: " + self.name,
                "X-Origin-Target: " + req.target,
                "Content-Type: " + ctype]
        if gz:
            head.append("Content-Encoding: gzip")
        if "etag" in q:
            head.append('ETag: "%s"' % q["etag"])
        if status not in (204, 304) and status >= 200:
            if chunked:
                head.append("Transfer-Encoding: chunked")
            else:
                head.append("Content-Length: %d" % size)
        if close:
            head.append("Connection: close")
        elif req.version == "HTTP/1.0":
            head.append("Connection: keep-alive")
        for k, v in query:
            if k == "hdr" and ":" in v:
                name, value = v.split(":", 1)
                head.append("%s: %s" % (name.strip(), value.strip()))
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")

        if bodyless:
            sock.sendall(head_bytes)
            return not close

        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] \
            if body is not None else pattern_blocks(size, chunk)
        limit = truncate if truncate is not None else size
        sent = 0
        first = True
        pending = head_bytes            # coalesce the head with the first piece
        for piece in pieces:
            if sent >= limit:
                break
            piece = piece[:limit - sent]
            if not first and drip:
                sock.sendall(pending)
                pending = b""
                time.sleep(drip)
            first = False
            if chunked:
                pending += b"%x\r\n" % len(piece) + piece + b"\r\n"
            else:
                pending += piece
            sent += len(piece)
            if len(pending) >= 65536 or drip:
                sock.sendall(pending)
                pending = b""
        if truncate is not None:
            sock.sendall(pending)
            sock.shutdown(socket.SHUT_WR)
            return False
        if chunked:
            pending += b"0\r\n\r\n"
        sock.sendall(pending)
        if close:
            sock.shutdown(socket.SHUT_WR)
        return not close


def phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="origin")
    ap.add_argument("--unix", metavar="PATH")
    args = ap.parse_args()

    threading.stack_size(512 * 1024)
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(args.unix)
    else:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.host, args.port))
    lsock.listen(1024)

    def on_signal(signo, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    origin = Origin(args.name)
    if args.unix:
        print("UNIX %s" % args.unix, flush=True)
    else:
        print("PORT %d" % lsock.getsockname()[1], flush=True)
    try:
        while True:
            sock, addr = lsock.accept()
            peer = "%s:%d" % addr[:2] if isinstance(addr, tuple) else "unix"
            with origin.stats.lock:
                origin.stats.connections += 1
                origin.stats.active += 1
            threading.Thread(target=origin.serve_connection, args=(sock, peer),
                             daemon=True).start()
    except SystemExit:
        pass
    finally:
        lsock.close()
        if args.unix:
            try:
                os.unlink(args.unix)
            except OSError:
                pass
        sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

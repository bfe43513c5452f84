#!/usr/bin/env python3
"""1 GiB streamed through legate both ways with flat worker memory.

LEGATE_TEST_LARGE_MB overrides the size (default 1024)."""
import hashlib
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

SIZE = int(os.environ.get("LEGATE_TEST_LARGE_MB", "1024")) * 1024 * 1024
RSS_LIMIT_KB = 64 * 1024


def big_proxy():
    o = Origin("o1")
    lg = Legate(simple_conf(free_port(), [o], workers=1,
                            http_extra="client_max_body_size = 0;"))
    return o, lg


def upload(lg, chunked):
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with Conn(lg.port, timeout=60) as c:
        head = "PUT /up?echo=1 HTTP/1.1\r\nHost: x\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else \
                "Content-Length: %d\r\n\r\n" % SIZE
        c.send(head)
        sent = 0
        while sent < SIZE:
            piece = block[:min(len(block), SIZE - sent)]
            h.update(piece)
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=120)
    ok(r is not None, "no response to the upload")
    eq(r.status, 200)
    j = r.json()
    eq(j["body_len"], SIZE)
    eq(j["body_sha256"], h.hexdigest())


@test(timeout=600)
def upload_1g_content_length_flat_rss():
    o, lg = big_proxy()
    with RssSampler(lg.workers) as rss:
        upload(lg, chunked=False)
    ok(rss.samples > 0, "no RSS samples")
    ok(rss.max_kb < RSS_LIMIT_KB, "worker RSS reached %d kB" % rss.max_kb)


@test(timeout=600)
def upload_1g_chunked_flat_rss():
    o, lg = big_proxy()
    with RssSampler(lg.workers) as rss:
        upload(lg, chunked=True)
    ok(rss.max_kb < RSS_LIMIT_KB, "worker RSS reached %d kB" % rss.max_kb)


_want = {}


def expected_sha():
    if "sha" not in _want:
        h = hashlib.sha256()
        for b in pattern_blocks(SIZE):
            h.update(b)
        _want["sha"] = h.hexdigest()
    return _want["sha"]


def download(lg, chunked):
    want = expected_sha()
    s = socket.create_connection(("127.0.0.1", lg.port))
    try:
        s.sendall(b"GET /down?size=%d&chunked=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % (SIZE, chunked))
        s.settimeout(60)
        buf = b""
        while b"\r\n\r\n" not in buf:
            x = s.recv(65536)
            ok(x, "closed before the response head")
            buf += x
        head, rest = buf.split(b"\r\n\r\n", 1)
        ok(head.startswith(b"HTTP/1.1 200"), "head %r" % head[:200])
        is_chunked = re.search(rb"(?im)^transfer-encoding:.*chunked", head) is not None
        # read the whole (close-delimited after Connection: close) stream,
        # decoding chunked framing incrementally
        h = hashlib.sha256()
        got = 0
        pending = rest
        while True:
            if is_chunked:
                while True:
                    nl = pending.find(b"\r\n")
                    if nl < 0:
                        break
                    n = int(pending[:nl].split(b";")[0], 16)
                    if len(pending) < nl + 2 + n + 2:
                        break
                    if n == 0:
                        pending = b""
                        is_chunked = None     # done
                        break
                    piece = pending[nl + 2:nl + 2 + n]
                    h.update(piece)
                    got += n
                    pending = pending[nl + 2 + n + 2:]
                if is_chunked is None:
                    break
            else:
                h.update(pending)
                got += len(pending)
                pending = b""
                if got >= SIZE:
                    break
            x = s.recv(1 << 20)
            if not x:
                break
            pending += x
        eq(got, SIZE, "bytes received")
        eq(h.hexdigest(), want, "sha256 of the body")
    finally:
        s.close()


@test(timeout=600)
def download_1g_flat_rss():
    o, lg = big_proxy()
    with RssSampler(lg.workers) as rss:
        download(lg, 0)
    ok(rss.max_kb < RSS_LIMIT_KB, "worker RSS reached %d kB" % rss.max_kb)


@test(timeout=600)
def download_1g_chunked_flat_rss():
    o, lg = big_proxy()
    with RssSampler(lg.workers) as rss:
        download(lg, 1)
    ok(rss.max_kb < RSS_LIMIT_KB, "worker RSS reached %d kB" % rss.max_kb)


@test(timeout=120)
def slow_reader_does_not_buffer_in_legate():
    """A client that does not read: legate must apply backpressure to the
    origin rather than buffer the body."""
    o, lg = big_proxy()
    s = socket.create_connection(("127.0.0.1", lg.port))
    try:
        s.sendall(b"GET /down?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (512 * 1024 * 1024))
        w = lg.workers()[0]
        wait_until(lambda: o.stats()["requests"] == 1, 5, what="request at origin")
        peak = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:      # sample for 3 s while not reading
            peak = max(peak, rss_kb(w))
            time.sleep(0.1)
        ok(peak < RSS_LIMIT_KB, "worker RSS %d kB with a non-reading client" % peak)
    finally:
        s.close()


if __name__ == "__main__":
    main()

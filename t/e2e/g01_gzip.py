#!/usr/bin/env python3
"""gzip on the fly and gunzip, as nginx's gzip and gunzip modules."""
import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from legate_test import *  # noqa: E402,F401,F403
from origin import pattern  # noqa: E402


def gz_proxy(o, extra='gzip = true; gunzip = true; gzip_types = "text/html text/plain";',
             workers=1):
    port = free_port()
    return port, Legate(simple_conf(port, [o], http_extra=extra), workers=workers)


def get(port, target, ae="gzip", method="GET", version="HTTP/1.1"):
    hs = [("Accept-Encoding", ae)] if ae is not None else []
    return request(port, method=method, target=target, headers=hs)


def gunzip_t(data):
    """The gzip command-line tool's own check."""
    if shutil.which("gunzip") is None:
        return True
    p = subprocess.run(["gunzip", "-t"], input=data, capture_output=True, timeout=30)
    return p.returncode == 0


@test
def compresses_html_across_sizes():
    o = Origin("o")
    port, lg = gz_proxy(o)
    for size in (20, 21, 1000, 65535, 65536, 65537, 300000, 5 * 1024 * 1024):
        r = get(port, "/p?size=%d&ctype=text/html" % size)
        eq(r.status, 200)
        eq(r.headers.get("Content-Encoding"), "gzip", "size %d" % size)
        ok("Content-Length" not in r.headers, "no Content-Length on a compressed body")
        contains(r.headers.get("Vary", ""), "Accept-Encoding")
        ok(gunzip_t(r.body), "gunzip -t accepts %d bytes" % size)
        eq(gzip.decompress(r.body), pattern(size), "round trip of %d bytes" % size)
        if size >= 65536:
            ok(len(r.body) < size // 4, "pattern compresses well (%d -> %d)" % (size, len(r.body)))


@test
def chunked_upstream_small_chunks():
    o = Origin("o")
    port, lg = gz_proxy(o)
    r = get(port, "/c?size=100000&chunked=1&chunk=777&ctype=text/plain")
    eq(r.headers.get("Content-Encoding"), "gzip")
    eq(gzip.decompress(r.body), pattern(100000))


@test
def below_min_length_and_empty_are_left_alone():
    o = Origin("o")
    port, lg = gz_proxy(o)
    for size in (0, 1, 19):
        r = get(port, "/s?size=%d&ctype=text/html" % size)
        eq(r.headers.get("Content-Encoding"), None, "size %d" % size)
        eq(r.body, pattern(size))


@test
def accept_encoding_negotiation():
    o = Origin("o")
    port, lg = gz_proxy(o)
    cases = [("gzip", "gzip"), ("GZIP", "gzip"), ("gzip;q=0", None), ("gzip;q=0.000", None),
             ("*", "gzip"), ("*;q=0", None), ("identity;q=0, gzip;q=0.5", "gzip"),
             ("br", None), ("deflate, gzip;q=0.1", "gzip"), ("identity", None),
             ("x-gzip", "gzip"), ("", None), (None, None)]
    for ae, want in cases:
        r = get(port, "/n?size=5000&ctype=text/html", ae=ae)
        eq(r.headers.get("Content-Encoding"), want, "Accept-Encoding: %r" % ae)
        body = gzip.decompress(r.body) if want else r.body
        eq(body, pattern(5000), "body for %r" % ae)


@test
def only_listed_types():
    o = Origin("o")
    port, lg = gz_proxy(o)
    eq(get(port, "/t?size=5000&ctype=image/png").headers.get("Content-Encoding"), None)
    eq(get(port, "/t?size=5000&ctype=text/html;%20charset=utf-8").headers.get("Content-Encoding"),
       "gzip", "parameters after the media type")


@test
def never_twice_and_no_transform():
    o = Origin("o")
    port, lg = gz_proxy(o)
    r = get(port, "/g?size=5000&ctype=text/html&gz=1")
    eq(r.headers.get("Content-Encoding"), "gzip")
    eq(gzip.decompress(r.body), pattern(5000), "already gzip: passed through, not compressed again")
    r = get(port, "/g?size=5000&ctype=text/html&hdr=Cache-Control:no-transform")
    eq(r.headers.get("Content-Encoding"), None, "no-transform is obeyed")
    eq(r.body, pattern(5000))


@test
def head_204_304_206_untouched():
    o = Origin("o")
    port, lg = gz_proxy(o)
    r = get(port, "/h?size=5000&ctype=text/html", method="HEAD")
    eq(r.body, b"")
    eq(r.headers.get("Content-Encoding"), None)
    for st in (204, 304):
        r = get(port, "/h?status=%d&ctype=text/html" % st)
        eq((r.status, r.body, r.headers.get("Content-Encoding")), (st, b"", None))
    r = get(port, "/h?status=206&size=5000&ctype=text/html")
    eq((r.status, r.headers.get("Content-Encoding")), (206, None))
    eq(r.body, pattern(5000))


@test
def etag_weakened_and_vary_merged():
    o = Origin("o")
    port, lg = gz_proxy(o)
    r = get(port, '/e?size=5000&ctype=text/html&hdr=ETag:"abc"&hdr=Vary:Cookie')
    eq(r.headers.get("ETag"), 'W/"abc"')
    eq(r.headers.get("Vary"), "Cookie, Accept-Encoding")
    r = get(port, '/e?size=5000&ctype=text/html&hdr=ETag:W/"x"')
    eq(r.headers.get("ETag"), 'W/"x"', "a weak ETag stays as it is")


@test
def http10_client_gets_a_close_delimited_body():
    o = Origin("o")
    port, lg = gz_proxy(o)
    raw = http_raw(port, b"GET /z?size=50000&ctype=text/html HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n",
                   timeout=10)
    head, _, body = raw.partition(b"\r\n\r\n")
    contains(head.decode(), "Content-Encoding: gzip")
    ok(b"Transfer-Encoding" not in head, "no chunked coding for HTTP/1.0")
    eq(gzip.decompress(body), pattern(50000))


@test
def keepalive_continues_after_compressed_responses():
    o = Origin("o")
    port, lg = gz_proxy(o)
    with Conn(port) as c:
        for i in range(5):
            r = c.request(target="/k%d?size=%d&ctype=text/html" % (i, 1000 * (i + 1)),
                          headers=[("Accept-Encoding", "gzip")])
            eq(gzip.decompress(r.body), pattern(1000 * (i + 1)))


@test
def streamed_response_is_flushed_promptly():
    """Server-sent events: each piece reaches the client when the upstream sends it."""
    o = Origin("o")
    port, lg = gz_proxy(o)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /sse?size=40&chunked=1&chunk=10&drip=700&ctype=text/plain HTTP/1.1\r\n"
              b"Host: x\r\nAccept-Encoding: gzip\r\n\r\n")
    buf = b""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    got = b""
    first_at = None
    while time.monotonic() - t0 < 10 and len(got) < 40:
        data = s.recv(65536)
        if not data:
            break
        buf += data
        if b"\r\n\r\n" not in buf:
            continue
        head, _, rest = buf.partition(b"\r\n\r\n")
        # de-chunk what we have so far
        payload, pos = b"", 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                break
            n = int(rest[pos:nl].split(b";")[0], 16)
            if n == 0 or nl + 2 + n > len(rest):
                payload += rest[nl + 2:nl + 2 + n] if n else b""
                break
            payload += rest[nl + 2:nl + 2 + n]
            pos = nl + 2 + n + 2
        got = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        if got and first_at is None:
            first_at = time.monotonic() - t0
    s.close()
    ok(first_at is not None, "decodable bytes arrived")
    ok(first_at < 1.0, "the first piece arrived after %.2fs, before the next drip" % first_at)
    eq(got, pattern(40))


@test
def gunzip_for_clients_without_gzip():
    o = Origin("o")
    port, lg = gz_proxy(o)
    for size in (100, 70000, 2 * 1024 * 1024):
        r = get(port, "/u?size=%d&ctype=text/html&gz=1&hdr=ETag:%%22v1%%22" % size, ae=None)
        eq(r.headers.get("Content-Encoding"), None, "decompressed for a client without gzip")
        eq(r.body, pattern(size))
        eq(r.headers.get("ETag"), 'W/"v1"')
        r = get(port, "/u?size=%d&ctype=text/html&gz=1" % size, ae="gzip")
        eq(r.headers.get("Content-Encoding"), "gzip", "passed through compressed")
        eq(gzip.decompress(r.body), pattern(size))


@test
def gzip_off_by_default():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o]), workers=1)
    eq(get(port, "/d?size=5000&ctype=text/html").headers.get("Content-Encoding"), None)


def have_coding(name):
    """The build has it (legate -V) and the command-line tool to check it."""
    rc, out, err = run_legate(["-V"])
    return name in (out + err) and shutil.which("brotli" if name == "brotli" else "zstd")


def decode_cli(tool, data):
    p = subprocess.run([tool, "-d", "-c"], input=data, capture_output=True, timeout=30)
    eq(p.returncode, 0, "%s -d: %s" % (tool, p.stderr.decode(errors="replace")))
    return p.stdout


@test
def br_and_zstd_by_the_clients_preference():
    if not (have_coding("brotli") and have_coding("zstd")):
        skip("built without brotli or zstd (scripts/bootstrap installs them)")
    o = Origin("o")
    port, lg = gz_proxy(o, 'gzip = true; brotli = true; zstd = true; gzip_types = "text/html";')
    for size in (21, 70000, 1000000):
        r = get(port, "/b?size=%d&ctype=text/html" % size, ae="br")
        eq(r.headers.get("Content-Encoding"), "br", "size %d" % size)
        eq(decode_cli("brotli", r.body), pattern(size), "br round trip, %d bytes" % size)
        r = get(port, "/z?size=%d&ctype=text/html" % size, ae="zstd")
        eq(r.headers.get("Content-Encoding"), "zstd")
        eq(decode_cli("zstd", r.body), pattern(size), "zstd round trip, %d bytes" % size)
    for ae, want in (("gzip, br;q=0.5", "gzip"), ("br;q=0, gzip", "gzip"),
                     ("gzip, deflate, br, zstd", "zstd"), ("gzip, br", "br"),
                     ("zstd;q=0.1, br;q=0.2", "br"), ("identity", None), ("deflate", None)):
        r = get(port, "/n?size=5000&ctype=text/html", ae=ae)
        eq(r.headers.get("Content-Encoding"), want, "Accept-Encoding: %s" % ae)
        contains(r.headers.get("Vary", ""), "Accept-Encoding",
                 "Vary whether compressed this time or not (%s)" % ae)
    r = get(port, "/c?size=100000&chunked=1&chunk=777&ctype=text/html", ae="br")
    eq(decode_cli("brotli", r.body), pattern(100000), "a chunked upstream")
    # only the codings switched on: gzip alone here
    port2, _ = gz_proxy(o, 'gzip = true; gzip_types = "text/html";')
    eq(get(port2, "/n?size=5000&ctype=text/html", ae="br, zstd, gzip;q=0.1")
       .headers.get("Content-Encoding"), "gzip")


@test
def br_and_zstd_streams_are_flushed():
    if not (have_coding("brotli") and have_coding("zstd")):
        skip("built without brotli or zstd")
    o = Origin("o")
    port, lg = gz_proxy(o, 'brotli = true; zstd = true; gzip_types = "text/plain";')
    for ae in ("br", "zstd"):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t0 = time.monotonic()
        s.sendall(b"GET /sse?size=40&chunked=1&chunk=10&drip=700&ctype=text/plain HTTP/1.1\r\n"
                  b"Host: x\r\nAccept-Encoding: " + ae.encode() + b"\r\n\r\n")
        buf, first_at = b"", None
        while time.monotonic() - t0 < 10:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep and rest and rest[:1] not in (b"0",) and first_at is None:
                first_at = time.monotonic() - t0
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
        s.close()
        contains(head.decode(), "Content-Encoding: " + ae)
        ok(first_at is not None and first_at < 1.0,
           "%s: compressed bytes left before the next drip (%s)" % (ae, first_at))


if __name__ == "__main__":
    main()

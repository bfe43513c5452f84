#!/usr/bin/env python3
"""The cache's disk tier, second part: how a file is sent (sendfile(2) on a
plain socket, reads through a buffer over HTTP/2; a file that is not in the
page cache waited for on a timer instead of a read that blocks the worker),
several ranges from a file (multipart/byteranges), the route's gzip
applied on the way, the cache's gzip copies moved to disk (sent as they
are, or gunzipped on the way), a stale file revalidated
(a 304 updates its freshness), served stale (stale-while-revalidate,
cache_use_stale), statuses other than 200 on disk, and chunked answers
written to a file once they outgrow the memory tier (dropped cleanly past
cache_disk_max_object)."""
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

BIG = 300000                    # past cache_max_object: the disk tier's


def conf(port, mport, upstream, d, glob_extra="", route_extra=""):
    return """cache_size = "8m"; cache_max_object = "64k"; cache_path = "%s";
cache_disk_size = "32m"; %s
http = {
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = (
      { listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true; %s } ); },
      { listen = "127.0.0.1:%d";
        routes = ( { exact = "/metrics"; status = "metrics"; } ); } );
};
""" % (d, glob_extra, upstream, port, route_extra, mport)


class Dir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="legate-disk2-")

    def teardown(self):
        shutil.rmtree(self.path, ignore_errors=True)


def cache_dir():
    d = Dir()
    from legate_test import _track
    _track(d)
    return d.path


def files(d):
    return sorted(f for f in os.listdir(os.path.join(d, "disk")) if not f.startswith("tmp."))


def tmps(d):
    return [f for f in os.listdir(os.path.join(d, "disk")) if f.startswith("tmp.")]


def metric(mport, name):
    """The value of one series of the metrics page (0 when absent)."""
    st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
    eq(st, 200)
    m = re.search(r"^%s (\d+)$" % re.escape(name), body.decode(), re.M)
    return int(m.group(1)) if m else 0


def metrics(mport, *names):
    """Several series of one metrics page (0 when absent)."""
    st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
    eq(st, 200)
    out = {}
    for name in names:
        m = re.search(r"^%s (\d+)$" % re.escape(name), body.decode(), re.M)
        out[name] = int(m.group(1)) if m else 0
    return out


def wait_metric(mport, name, cond, what):
    """The page is made at most every 100 ms: poll it until cond(value)."""
    v = [None]

    def check():
        v[0] = metric(mport, name)
        return cond(v[0])
    wait_until(check, 10, what="%s (%s: %s)" % (what, name, v[0]))
    return v[0]


def fill_as_curl(port, t):
    """Store t under the key curl's requests have (Host 127.0.0.1:port),
    fetched over HTTP/1.1: the hits over HTTP/2 are what is tested."""
    eq(request(port, target=t, host="127.0.0.1:%d" % port).status, 200)


def xc(r):
    return r.headers.get("X-Cache")


def hits(o, path):
    return o.stats()["by_path"].get(path, 0)


def target(path, size=BIG, extra=""):
    return "%s?size=%d&etag=v1&hdr=Cache-Control:max-age=600%s" % (path, size, extra)


def started(d, workers=1, **kw):
    o = kw.pop("origin", None) or Origin("o")
    port, mport = free_port(), free_port()
    lg = Legate(conf(port, mport, o.address, d, **kw), workers=workers)
    return o, port, mport, lg


def evict(path):
    """Drop the file's pages from the page cache; False when the file
    system keeps them anyway (tmpfs)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buf = bytearray(4096)
        try:
            os.preadv(fd, [buf], os.fstat(fd).st_size - 4096, os.RWF_NOWAIT)
            return False        # still in memory
        except BlockingIOError:
            return True
    finally:
        os.close(fd)


SENDFILE = 'legate_cache_disk_sent_bytes_total{way="sendfile"}'
READ = 'legate_cache_disk_sent_bytes_total{way="read"}'


@test
def sendfile_on_plain_sockets_reads_over_http2():
    d = cache_dir()
    o, port, mport, lg = started(d, workers=2)
    t = target("/sf")
    body = request(port, target=t).body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    # counted by the worker that served: the page adds the zone's counters
    s0, r0 = metric(mport, SENDFILE), metric(mport, READ)
    r = request(port, target=t)
    eq((r.status, xc(r)), (200, "HIT"))
    ok(r.body == body, "the bytes")
    wait_metric(mport, SENDFILE, lambda v: v - s0 == BIG, "a plain HTTP/1.1 client: sendfile(2)")
    eq(metric(mport, READ), r0, "and no read")
    u = "http://127.0.0.1:%d%s" % (port, t)
    fill_as_curl(port, t)       # another Host: its own key
    wait_until(lambda: len(files(d)) == 2, 10, what="the second file")
    # a page from the other of the two workers can show an older figure
    # for a moment: read until it shows at least what was already seen
    s1 = wait_until(lambda: (lambda v: v if v >= s0 + BIG else None)(metric(mport, SENDFILE)), 10,
                    what="the sendfile count settled")
    st, hdrs, b = curl("--http2-prior-knowledge", u)
    eq((st, hdrs.get("x-cache")), (200, "HIT"))
    ok(b == body, "the bytes over HTTP/2")
    # both figures from the one page that shows the HTTP/2 hit's read
    page = wait_until(lambda: (lambda p: p if p[READ] - r0 == BIG else None)(metrics(mport, READ, SENDFILE)),
                      10, what="HTTP/2: read into a buffer")
    eq(page[SENDFILE], s1, "and no sendfile for the HTTP/2 client")
    r = request(port, target=t, headers=[("Range", "bytes=100000-100099")])
    eq(r.status, 206)
    ok(r.body == body[100000:100100], "a range with sendfile")


@test
def a_file_not_in_the_page_cache_is_waited_for():
    d = cache_dir()
    o, port, mport, lg = started(d)
    size = 4 << 20
    t = target("/cold", size)
    body = request(port, target=t).body
    eq(len(body), size)
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    path = os.path.join(d, "disk", files(d)[0])
    if not evict(path):
        skip("this file system keeps the file in memory (tmpfs?)")
    w0 = metric(mport, "legate_cache_disk_waits_total")
    r = request(port, target=t)
    eq((r.status, xc(r)), (200, "HIT"))
    ok(hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest(), "the bytes")
    wait_metric(mport, "legate_cache_disk_waits_total", lambda v: v > w0,
                "sendfile: the missing piece was waited for, not read on the loop")
    # and through a buffer (HTTP/2: preadv2 with RWF_NOWAIT)
    u = "http://127.0.0.1:%d%s" % (port, t)
    fill_as_curl(port, t)
    wait_until(lambda: len(files(d)) == 2, 10, what="the second file")
    for f in files(d):
        evict(os.path.join(d, "disk", f))
    w1 = metric(mport, "legate_cache_disk_waits_total")
    st, hdrs, b = curl("--http2-prior-knowledge", u)
    eq((st, hdrs.get("x-cache")), (200, "HIT"))
    ok(hashlib.sha256(b).digest() == hashlib.sha256(body).digest(), "the bytes over HTTP/2")
    wait_metric(mport, "legate_cache_disk_waits_total", lambda v: v > w1, "reads: waited for too")
    eq(hits(o, "/cold"), 2, "both served from files")


def parts(r):
    """The parts of a multipart/byteranges answer: [(content-range, bytes)]."""
    m = re.search(r"boundary=(\S+)", r.headers.get("Content-Type", ""))
    ok(m is not None, "a boundary")
    b = ("--" + m.group(1)).encode()
    out = []
    chunks = r.body.split(b)
    eq(chunks[-1], b"--\r\n", "the closing delimiter")
    for c in chunks[1:-1]:
        head, _, data = c.partition(b"\r\n\r\n")
        ok(data.endswith(b"\r\n"), "a part ends with CRLF")
        cr = re.search(rb"Content-Range: (\S+ \S+)", head)
        out.append((cr.group(1).decode(), data[:-2]))
    return out


@test
def several_ranges_from_a_file():
    d = cache_dir()
    o, port, mport, lg = started(d)
    t = target("/mr", extra="&ctype=text/plain")
    body = request(port, target=t).body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    for conn in ("h1", "h2"):
        if conn == "h1":
            r = request(port, target=t, headers=[("Range", "bytes=0-9,100000-199999,-5")])
            status, hdrs, data = r.status, r.headers, r
        else:
            u = "http://127.0.0.1:%d%s" % (port, t)
            fill_as_curl(port, t)
            wait_until(lambda: len(files(d)) == 2, 10, what="the second file")
            st, hdrs, raw = curl("--http2-prior-knowledge", "-H", "Range: bytes=0-9,100000-199999,-5", u)

            class R:
                pass
            data = R()
            data.headers, data.body, status = hdrs, raw, st
            hdrs = {"x-cache": hdrs.get("x-cache"), "Content-Type": hdrs.get("content-type")}
            data.headers = hdrs
        eq(status, 206, conn)
        eq(data.headers.get("x-cache") or data.headers.get("X-Cache"), "HIT", conn)
        got = parts(data)
        eq([g[0] for g in got], ["bytes 0-9/%d" % BIG, "bytes 100000-199999/%d" % BIG,
                                 "bytes %d-%d/%d" % (BIG - 5, BIG - 1, BIG)], conn)
        ok(got[0][1] == body[:10] and got[1][1] == body[100000:200000] and got[2][1] == body[-5:],
           "the parts' bytes (%s)" % conn)
    r = request(port, target=t, headers=[("Range", "bytes=0-0,5-5")])
    eq((r.status, len(parts(r))), (206, 2))
    contains(r.body.decode(errors="replace"), "Content-Type: text/plain", "each part's type")
    eq(int(r.headers.get("Content-Length")), len(r.body), "the length said is the length sent")


@test
def coded_on_the_way_for_clients_that_take_it():
    import gzip as gz
    d = cache_dir()
    o, port, mport, lg = started(d, route_extra="gzip = true;")
    t = target("/gz", extra="&ctype=text/html")
    body = request(port, target=t).body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    r = request(port, target=t, headers=[("Accept-Encoding", "gzip")])
    eq((r.status, xc(r), r.headers.get("Content-Encoding"), r.headers.get("Transfer-Encoding")),
       (200, "HIT", "gzip", "chunked"), "HTTP/1.1: gzip, chunked")
    eq(r.headers.get("Content-Length"), None)
    contains(r.headers.get("Vary", ""), "Accept-Encoding")
    ok(r.headers.get("ETag", "").startswith("W/"), "a weak ETag for the coded bytes")
    ok(len(r.body) < BIG // 4, "compressed")
    ok(gz.decompress(r.body) == body, "the bytes, once gunzipped")
    r = request(port, target=t)
    eq((r.status, xc(r), r.headers.get("Content-Encoding"), r.headers.get("Content-Length")),
       (200, "HIT", None, str(BIG)), "no Accept-Encoding: as stored")
    ok(r.body == body)
    r = request(port, target=t, headers=[("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")])
    eq((r.status, r.headers.get("Content-Encoding")), (200, "gzip"), "coded: the whole, as from memory")
    ok(gz.decompress(r.body) == body)
    # HTTP/1.0: the close ends it
    raw = http_raw(port, ("GET %s HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n" % t).encode())
    r10 = parse_responses(raw)[0]
    eq((r10.status, r10.headers.get("Content-Encoding"), r10.headers.get("Transfer-Encoding")),
       (200, "gzip", None))
    ok(gz.decompress(r10.body) == body, "HTTP/1.0: the bytes")
    # HTTP/2: the stream's framing
    u = "http://127.0.0.1:%d%s" % (port, t)
    fill_as_curl(port, t)
    wait_until(lambda: len(files(d)) == 2, 10, what="the second file")
    st, hdrs, b = curl("--http2-prior-knowledge", "-H", "Accept-Encoding: gzip", u)
    eq((st, hdrs.get("x-cache"), hdrs.get("content-encoding")), (200, "HIT", "gzip"))
    ok(gz.decompress(b) == body, "HTTP/2: the bytes")
    eq(hits(o, "/gz"), 2)


@test
def the_caches_gzip_copies_go_on_on_disk():
    """With gzip on the route the memory tier keeps compressed copies; those
    leaving it go on on disk, and are sent as they are to gzip clients and
    gunzipped on the way (with their length) for the others."""
    import base64
    import gzip as gz
    import random

    def page(path):
        rnd = random.Random(path)
        return base64.b64encode(bytes(rnd.getrandbits(8) for _ in range(15000)))

    asked = [0]

    def handler(sock, peer):
        while True:
            head = read_request_head(sock)
            if not head:
                return
            asked[0] += 1
            path = head.split(b" ")[1].decode()
            body = page(path)
            sock.sendall(("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                          "Cache-Control: max-age=600\r\nETag: \"%s\"\r\n\r\n"
                          % (len(body), path[1:])).encode() + body)
    srv = ScriptedServer(handler)
    d = cache_dir()
    port, mport = free_port(), free_port()
    text = conf(port, mport, srv.address, d, route_extra="gzip = true;").replace(
        'cache_size = "8m"; cache_max_object = "64k";', 'cache_size = "1m";')
    Legate(text, workers=1)
    n = 120
    for i in range(n):
        eq(request(port, target="/z%d" % i, headers=[("Accept-Encoding", "gzip")]).status, 200)
        time.sleep(0.03)
    wait_until(lambda: len(files(d)) >= 20, 10, what="gzip copies moved to disk")
    fetched = asked[0]
    eq(fetched, n)
    for i in range(5):
        body = page("/z%d" % i)
        r = request(port, target="/z%d" % i, headers=[("Accept-Encoding", "gzip")])
        eq((r.status, xc(r), r.headers.get("Content-Encoding")), (200, "HIT", "gzip"), "z%d gzip" % i)
        ok(gz.decompress(r.body) == body, "the gzip copy's bytes")
        r = request(port, target="/z%d" % i)
        eq((r.status, xc(r), r.headers.get("Content-Encoding"), r.headers.get("Content-Length")),
           (200, "HIT", None, str(len(body))), "z%d identity" % i)
        ok(r.body == body, "gunzipped on the way")
    r = request(port, target="/z0", headers=[("Range", "bytes=0-9")])
    eq((r.status, r.body), (200, page("/z0")), "a Range on the gzip copy: the whole")
    eq(asked[0], fetched, "all from the files")


@test
def a_stale_file_is_revalidated():
    d = cache_dir()
    o, port, mport, lg = started(d, workers=2)
    t = "/rv?size=%d&etag=v1&hdr=Cache-Control:max-age=1" % BIG
    body = request(port, target=t).body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    eq(xc(request(port, target=t)), "HIT")
    r = [None]

    def not_hit():
        r[0] = request(port, target=t)
        return xc(r[0]) != "HIT"
    wait_until(not_hit, 10, what="stale")
    # the one that found it stale asked with If-None-Match and got a 304
    eq((r[0].status, xc(r[0]), len(r[0].body)), (200, "REVALIDATED", BIG))
    ok(r[0].body == body, "the file's bytes")
    eq(hits(o, "/rv"), 2, "a fetch and one revalidation")
    # after a restart the file is read back and revalidated again, not fetched
    name = files(d)
    lg.stop()
    o2, port2, mport2, lg2 = started(d, origin=o)
    lg2.wait_log(r"cache: 1 objects on disk indexed")
    wait_until(lambda: xc(request(port2, target=t)) == "REVALIDATED", 10,
               what="stale again after a while, and revalidated")
    eq(hits(o, "/rv"), 3)
    eq(files(d), name, "the file kept")


@test
def a_revalidation_answered_304_gives_the_client_the_new_fields():
    n = [0]

    def handler(sock, peer):
        while True:
            head = read_request_head(sock)
            if not head:
                return
            n[0] += 1
            if n[0] == 1:
                body = b"x" * BIG
                sock.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"e\"\r\n"
                              "Cache-Control: max-age=0\r\nX-Version: 1\r\n\r\n" % BIG).encode() + body)
            else:
                ok("if-none-match: \"e\"" in head.decode().lower(), "a conditional request")
                sock.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n"
                             b"Cache-Control: max-age=600\r\nX-Version: 2\r\n\r\n")
    srv = ScriptedServer(handler)
    d = cache_dir()
    o, port, mport, lg = started(d, origin=srv)
    eq(request(port, target="/v").headers.get("X-Version"), "1")
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    r = request(port, target="/v")
    eq((r.status, xc(r), r.headers.get("X-Version"), len(r.body)), (200, "REVALIDATED", "2", BIG))
    r = request(port, target="/v")
    eq((r.status, xc(r), len(r.body)), (200, "HIT", BIG), "max-age=600 from the 304")
    # RFC 9111 4.3.4: the stored head has the 304's fields now (the file
    # was written again with the body copied), not only its freshness
    eq((r.headers.get("X-Version"), r.headers.get("Cache-Control")), ("2", "max-age=600"),
       "the next hit carries the updated fields")
    eq(r.body, b"x" * BIG, "the body copied whole")
    eq(len(files(d)), 1, "one file for the key")
    eq(tmps(d), [], "no temporary file left")
    eq(n[0], 2)


@test
def stale_files_served_while_revalidating_and_on_errors():
    d = cache_dir()
    o, port, mport, lg = started(d, route_extra='cache_use_stale = [ "error", "timeout" ];')
    t = "/swr?size=%d&etag=v1&hdr=Cache-Control:max-age=1,%%20stale-while-revalidate=60" % BIG
    body = request(port, target=t).body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    wait_until(lambda: xc(request(port, target=t)) == "UPDATING", 10,
               what="stale: answered at once while a refresh runs")
    wait_until(lambda: hits(o, "/swr") == 2, 10, what="the background refresh")
    wait_until(lambda: xc(request(port, target=t)) == "HIT", 10, what="fresh again")
    # cache_use_stale error: the origin gone, the stale file answers
    t2 = "/gone?size=%d&etag=v1&hdr=Cache-Control:max-age=1" % BIG
    request(port, target=t2)
    wait_until(lambda: len(files(d)) == 2, 10, what="the second file")
    o.stop()
    lg.allow_log(r"connect\(\) .*failed|no live upstreams|Connection refused")
    r = None

    def stale():
        nonlocal r
        r = request(port, target=t2)
        return xc(r) == "STALE"
    wait_until(stale, 10, what="stale once the origin is gone")
    eq((r.status, len(r.body)), (200, BIG))
    ok(r.body == body, "the stale file's bytes")


@test
def statuses_other_than_200_on_disk():
    d = cache_dir()
    o, port, mport, lg = started(d)
    t = "/nf?status=404&size=%d&hdr=Cache-Control:max-age=600" % BIG
    r = request(port, target=t)
    eq((r.status, xc(r)), (404, "MISS"))
    wait_until(lambda: len(files(d)) == 1, 10, what="the 404's file")
    r = request(port, target=t)
    eq((r.status, xc(r), len(r.body)), (404, "HIT", BIG))
    r = request(port, target=t, headers=[("Range", "bytes=0-9")])
    eq((r.status, len(r.body)), (404, BIG), "ranges are for 200s")
    eq(hits(o, "/nf"), 1)


@test
def objects_other_than_200_leaving_memory_go_on_on_disk():
    d = cache_dir()
    port, mport = free_port(), free_port()
    o = Origin("o")
    text = conf(port, mport, o.address, d).replace(
        'cache_size = "8m"; cache_max_object = "64k";', 'cache_size = "1m";')
    Legate(text, workers=1)
    for i in range(80):
        eq(request(port, target="/g%d?status=410&size=20000&hdr=Cache-Control:max-age=600" % i).status, 410)
        time.sleep(0.03)
    wait_until(lambda: len(files(d)) >= 20, 10, what="410s moved to disk")
    got = [xc(request(port, target="/g%d?status=410&size=20000&hdr=Cache-Control:max-age=600" % i))
           for i in range(10)]
    eq(got, ["HIT"] * 10)


@test
def chunked_answers_go_to_disk():
    d = cache_dir()
    o, port, mport, lg = started(d, route_extra="gzip = true;")
    t = target("/ch", extra="&chunked=1&chunk=16384&ctype=text/html")
    r = request(port, target=t)
    eq((r.status, xc(r), r.headers.get("Transfer-Encoding")), (200, "MISS", "chunked"))
    body = r.body
    eq(len(body), BIG)
    wait_until(lambda: len(files(d)) == 1, 10, what="the chunked answer's file")
    r = request(port, target=t)
    eq((r.status, xc(r), r.headers.get("Content-Length")), (200, "HIT", str(BIG)),
       "stored de-chunked: served with its length")
    ok(r.body == body, "the bytes")
    eq(r.headers.get("Content-Encoding"), None, "stored as it came, not as the gzip copy")
    eq(hits(o, "/ch"), 1)
    small = target("/chs", 1000, "&chunked=1")
    request(port, target=small)
    eq(xc(request(port, target=small)), "HIT", "a small chunked answer stays in memory")
    eq(len(files(d)), 1)


@test
def chunked_answers_past_the_disk_limit_are_dropped():
    d = cache_dir()
    o, port, mport, lg = started(d, glob_extra='cache_disk_max_object = "200k";')
    t = target("/huge", extra="&chunked=1&chunk=16384")
    r = request(port, target=t)
    eq((r.status, len(r.body)), (200, BIG), "the client gets it all")
    r = request(port, target=t)
    eq((r.status, xc(r), len(r.body)), (200, "MISS", BIG), "not stored")
    eq((files(d), tmps(d)), ([], []), "no file, no temporary file left")
    ok200 = target("/fits", 150000, "&chunked=1&chunk=16384")
    request(port, target=ok200)
    wait_until(lambda: len(files(d)) == 1, 10, what="one that fits")
    eq(xc(request(port, target=ok200)), "HIT")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The cache's disk tier (cache_disk_size under cache_path): objects larger
than cache_max_object in files, served from them (whole, HEAD, 304, one
range, over HTTP/1.1 and HTTP/2), bounded by cache_disk_size (the least
recently used leave) and cache_disk_inactive, removed by PURGE and by
invalidations, read back in the background after a restart, and a damaged
file dropped, never served."""
import glob
import hashlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

BIG = 300000                    # past cache_max_object: the disk tier's


def conf(port, o, d, disk='cache_disk_size = "8m";', route_extra=""):
    return """cache_size = "8m"; cache_max_object = "64k"; cache_path = "%s"; %s
http = {
    log_format = "$pid $request_method $request_uri $status $cache_status";
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = ( { listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true;
                     cache_purge_allow = [ "127.0.0.0/8" ]; %s } ); } );
};
""" % (d, disk, o.address, port, route_extra)


def target(path, size=BIG, extra=""):
    return "%s?size=%d&etag=v1&hdr=Cache-Control:max-age=600%s" % (path, size, extra)


def files(d):
    return sorted(f for f in os.listdir(os.path.join(d, "disk")) if not f.startswith("tmp."))


def hits(o, path):
    return o.stats()["by_path"].get(path, 0)


def xc(r):
    return r.headers.get("X-Cache")


class Dir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="legate-disk-")

    def teardown(self):
        shutil.rmtree(self.path, ignore_errors=True)


def cache_dir():
    d = Dir()
    from legate_test import _track
    _track(d)
    return d.path


@test
def large_objects_are_served_from_disk():
    o = Origin("o")
    d = cache_dir()
    port = free_port()
    Legate(conf(port, o, d), workers=2)
    t = target("/big")
    r = request(port, target=t)
    eq((r.status, xc(r), len(r.body)), (200, "MISS", BIG))
    body = r.body
    wait_until(lambda: len(files(d)) == 1, 10, what="the file in place")
    for i in range(4):          # both workers: the index is shared
        r = request(port, target=t)
        eq((r.status, xc(r)), (200, "HIT"))
        eq(hashlib.sha256(r.body).hexdigest(), hashlib.sha256(body).hexdigest(), "the bytes")
    eq(hits(o, "/big"), 1, "one fetch")
    r = request(port, method="HEAD", target=t)
    eq((r.status, r.body, r.headers.get("Content-Length")), (200, b"", str(BIG)))
    r = request(port, target=t, headers=[("If-None-Match", '"v1"')])
    eq((r.status, xc(r)), (304, "HIT"))
    r = request(port, target=t, headers=[("Range", "bytes=1000-1999")])
    eq((r.status, r.headers.get("Content-Range")), (206, "bytes 1000-1999/%d" % BIG))
    ok(r.body == body[1000:2000], "the range's bytes")
    r = request(port, target=t, headers=[("Range", "bytes=%d-" % BIG)])
    eq(r.status, 416)
    u = "http://127.0.0.1:%d%s" % (port, t)       # another Host: another key
    eq(curl("--http2-prior-knowledge", u)[0], 200)
    st, hdrs, b = curl("--http2-prior-knowledge", u)
    eq((st, hdrs.get("x-cache")), (200, "HIT"), "over HTTP/2")
    ok(b == body, "the bytes over HTTP/2")
    small = request(port, target=target("/small", 1000))
    eq(xc(request(port, target=target("/small", 1000))), "HIT", "small ones stay in memory")
    eq(len(files(d)), 2, "no file for them (the two are the two Hosts of /big)")
    eq(small.status, 200)


@test
def objects_leaving_memory_go_on_on_disk():
    """The memory tier holds about 45 objects of 20 KB; 80 go through it.
    What leaves it is moved to the disk tier (every 100 ms, so the test
    stores at most a few objects in that time) and is a hit from there."""
    o = Origin("o")
    d = cache_dir()
    port = free_port()
    text = conf(port, o, d).replace('cache_size = "8m"; cache_max_object = "64k";', 'cache_size = "1m";')
    Legate(text, workers=2)
    for i in range(80):
        eq(request(port, target=target("/m%d" % i, 20000)).status, 200)
        time.sleep(0.03)
    wait_until(lambda: len(files(d)) >= 20, 10, what="objects moved to disk")
    n = sum(hits(o, "/m%d" % i) for i in range(80))
    eq(n, 80)
    got = [xc(request(port, target=target("/m%d" % i, 20000))) for i in range(20)]
    eq(got, ["HIT"] * 20, "the first ones, long gone from memory, are hits from disk")
    eq(sum(hits(o, "/m%d" % i) for i in range(80)), 80, "the origin was not asked again")


@test
def an_object_that_grew_past_memory_moves_to_disk():
    """Stored in memory and stale, then answered with a body too large for
    memory: the file replaces the memory copy (which would otherwise be
    found first, and revalidated every time)."""
    count = [0]

    def handler(sock, peer):
        while True:
            if not read_request_head(sock):
                return
            count[0] += 1
            if count[0] == 1:
                hdrs, body = [("Cache-Control", "max-age=0"), ("ETag", '"e1"')], b"s" * 1000
            else:
                hdrs, body = [("Cache-Control", "max-age=600"), ("ETag", '"e2"')], b"L" * BIG
            head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
            head += "".join("%s: %s\r\n" % h for h in hdrs) + "\r\n"
            sock.sendall(head.encode() + body)
    srv = ScriptedServer(handler)
    d = cache_dir()
    port = free_port()
    Legate(conf(port, srv, d), workers=1)
    eq(len(request(port, target="/g").body), 1000)
    r = request(port, target="/g")
    eq((xc(r), len(r.body)), ("EXPIRED", BIG), "stale: fetched again, and now it is large")
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    r = request(port, target="/g")
    eq((xc(r), len(r.body)), ("HIT", BIG), "from the file, not the old copy in memory")
    eq(count[0], 2)


@test
def bounded_by_size_and_inactivity():
    o = Origin("o")
    d = cache_dir()
    port = free_port()
    Legate(conf(port, o, d, 'cache_disk_size = "1m";'), workers=1)
    for i in range(3):
        eq(request(port, target=target("/b%d" % i)).status, 200)
        wait_until(lambda: len(files(d)) == i + 1, 10, what="file %d" % i)
        time.sleep(0.01)        # last uses are told apart by the millisecond
    eq(xc(request(port, target=target("/b0"))), "HIT", "b0 used again: b1 is the coldest")
    eq(request(port, target=target("/b3")).status, 200)
    wait_until(lambda: len(files(d)) == 3, 10, what="one file removed to make room")
    eq(xc(request(port, target=target("/b0"))), "HIT")
    eq(xc(request(port, target=target("/b1"))), "MISS", "the least recently used left")
    d2 = cache_dir()
    port2 = free_port()
    Legate(conf(port2, o, d2, 'cache_disk_size = "8m"; cache_disk_inactive = "1s";'), workers=1)
    eq(request(port2, target=target("/i")).status, 200)
    wait_until(lambda: len(files(d2)) == 1, 10, what="the file")
    wait_until(lambda: len(files(d2)) == 0, 15, what="the inactive file removed")
    eq(xc(request(port2, target=target("/i"))), "MISS")


@test
def purge_and_invalidation_remove_files():
    o = Origin("o")
    d = cache_dir()
    port = free_port()
    Legate(conf(port, o, d), workers=1)
    t = target("/p")
    request(port, target=t)
    wait_until(lambda: len(files(d)) == 1, 10, what="the file")
    eq(request(port, method="PURGE", target=t).status, 200)
    eq(files(d), [], "purged: the file is gone")
    eq(xc(request(port, target=t)), "MISS")
    wait_until(lambda: len(files(d)) == 1, 10, what="stored again")
    eq(request(port, method="DELETE", target=t).status, 200)
    eq(files(d), [], "a successful DELETE invalidates it")


@test
def read_back_after_a_restart_and_damage_dropped():
    o = Origin("o")
    d = cache_dir()
    port = free_port()
    lg = Legate(conf(port, o, d), workers=2)
    for p in ("/r1", "/r2", "/r3"):
        request(port, target=target(p))
    wait_until(lambda: len(files(d)) == 3, 10, what="three files")
    lg.stop()
    # one damaged (cut short), one not ours at all, a fill left behind
    path = os.path.join(d, "disk", files(d)[0])
    with open(path, "r+b") as f:
        f.truncate(5000)
    open(os.path.join(d, "disk", "tmp.999999999.1"), "wb").write(b"partial")
    lg2 = Legate(conf(port, o, d), workers=2)
    lg2.allow_log(r"is damaged: removed")
    lg2.wait_log(r"cache: 2 objects on disk indexed")
    n = {p: hits(o, p) for p in ("/r1", "/r2", "/r3")}
    got = {p: xc(request(port, target=target(p))) for p in ("/r1", "/r2", "/r3")}
    eq(sorted(got.values()), ["HIT", "HIT", "MISS"], "two read back, the damaged one fetched again")
    for p in got:
        eq(hits(o, p), n[p] + (got[p] == "MISS"), p)
    ok(not os.path.exists(os.path.join(d, "disk", "tmp.999999999.1")), "the dead fill removed")
    # damage while running: found when opened, never served
    wait_until(lambda: len(files(d)) == 3, 10, what="the refetched one stored")
    for f in files(d):
        with open(os.path.join(d, "disk", f), "r+b") as fh:
            fh.seek(8)
            fh.write(b"\xff\xff\xff\xff")
    for p in ("/r1", "/r2", "/r3"):
        r = request(port, target=target(p))
        eq((r.status, xc(r), len(r.body)), (200, "MISS", BIG), "a damaged file is not served")


@test
def disk_settings_are_checked():
    o = Origin("o")
    rc, err = check_config("""cache_size = "8m"; cache_disk_size = "1g";
http = { upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } ); };
""" % (o.address, free_port()))
    ok(rc != 0, "cache_disk_size without cache_path")
    contains(err, "'cache_disk_size' needs 'cache_path'")


if __name__ == "__main__":
    main()

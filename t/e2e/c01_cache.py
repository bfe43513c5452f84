#!/usr/bin/env python3
"""The HTTP cache (RFC 9111), one cache for all workers through shared
memory: hits across workers, collapsed forwarding, purge and soft purge,
freshness rules, Vary, revalidation, conditionals, HEAD and ranges from
stored GETs, invalidation by unsafe methods, stale-if-error, survival of a
reload and (with cache_path) of a restart, eviction, a worker killed
mid-fill."""
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, o, route_extra="", glob='cache_size = "8m";'):
    return """%s
http = {
    log_format = "$pid $request_method $request_uri $status $cache_status";
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = ( { listen = "127.0.0.1:%d";
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true;
                     cache_purge_allow = [ "127.0.0.0/8" ]; %s } ); } );
};
""" % (glob, o.address, port, route_extra)


def get(port, target, headers=(), method="GET"):
    return request(port, method=method, target=target, headers=headers)


ROUNDS = 25     # repetitions of a sequence that a race between workers would break


def xc(r):
    return r.headers.get("X-Cache")


def hits(o, path):
    return o.stats()["by_path"].get(path, 0)


@test
def hit_in_every_worker_after_one_fill():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    t = "/a?size=3000&hdr=Cache-Control:max-age=60"
    r = get(port, t)
    eq((r.status, xc(r), len(r.body)), (200, "MISS", 3000))
    for _ in range(20):
        r = get(port, t)
        eq((xc(r), len(r.body)), ("HIT", 3000))
        ok(r.headers.get("Age") is not None, "Age on hits")
    eq(hits(o, "/a"), 1, "one origin request for 21")
    wait_until(lambda: len({l.split()[0] for l in open(lg.access_log).read().splitlines()
                            if l.endswith(" HIT")}) >= 2, 5, what="hits served by both workers")


@test(timeout=90)
def collapsed_forwarding_across_workers():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=2)
    t = "/slow?delay=1500&size=2000&hdr=Cache-Control:max-age=60"
    results = []
    lock = threading.Lock()

    def one():
        r = request(port, target=t, timeout=30)
        with lock:
            results.append((r.status, len(r.body)))
    ths = [threading.Thread(target=one, daemon=True) for _ in range(50)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    eq(len(results), 50)
    eq(set(results), {(200, 2000)})
    eq(hits(o, "/slow"), 1, "50 concurrent clients, 1 origin request")


@test
def purge_exact_prefix_and_soft():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=2)
    paths = ["/p/1?hdr=Cache-Control:max-age=60", "/p/2?hdr=Cache-Control:max-age=60",
             "/q?hdr=Cache-Control:max-age=60&etag=v1"]
    for p in paths:
        get(port, p)
        eq(xc(get(port, p)), "HIT")
    r = get(port, paths[0], method="PURGE")
    eq(r.status, 200)
    eq(xc(get(port, paths[0])), "MISS", "purged in every worker")
    r = request(port, method="PURGE", target="/p/*")
    eq(r.status, 200)
    contains(r.body.decode(), '"purged": 2')
    eq(xc(get(port, paths[1])), "MISS", "prefix purge")
    r = get(port, paths[2], method="PURGE", headers=[("Purge-Mode", "soft")])
    eq(r.status, 200)
    r = get(port, paths[2])
    eq(xc(r), "REVALIDATED", "soft purge: the next request revalidates (304 from the origin)")
    eq(get(port, "/nothing-here", method="PURGE").status, 404)


@test
def purge_only_from_allowed_addresses():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o).replace('"127.0.0.0/8"', '"10.0.0.0/8"'), workers=1)
    eq(get(port, "/x", method="PURGE").status, 403)


@test
def freshness_rules():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, 'cache_valid = [ "200 30s", "404 30s" ];'), workers=2)
    for t, stored in (("/f1?hdr=Cache-Control:no-store", False),
                      ("/f2?hdr=Cache-Control:private", False),
                      ("/f3?hdr=Set-Cookie:a=b", False),
                      ("/f4?hdr=Vary:*", False),
                      ("/f5", True),                                   # cache_valid
                      ("/f6?status=404", True),
                      ("/f7?hdr=Cache-Control:s-maxage=60,%20max-age=0", True),
                      ("/f8?hdr=Expires:Thu,%2001%20Jan%202037%2000:00:00%20GMT", True),
                      ("/f9?status=500", False)):
        get(port, t)
        r = get(port, t)
        eq(xc(r) == "HIT", stored, "%s stored: %r" % (t, xc(r)))


@test(timeout=60)
def expiry_and_revalidation():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = "/e?hdr=Cache-Control:max-age=1&etag=x1"
    eq(xc(get(port, t)), "MISS")
    eq(xc(get(port, t)), "HIT")
    wait_until(lambda: xc(get(port, t)) == "REVALIDATED", 5, interval=0.3,
               what="a 304 refreshing the stale copy")
    eq(xc(get(port, t)), "HIT", "fresh again after the 304")
    t2 = "/e2?hdr=Cache-Control:max-age=1"
    get(port, t2)
    wait_until(lambda: xc(get(port, t2)) == "EXPIRED", 5, interval=0.3,
               what="no validator: fetched again")
    t3 = "/nc?hdr=Cache-Control:no-cache&etag=z"
    get(port, t3)
    eq(xc(get(port, t3)), "REVALIDATED", "no-cache: revalidated each time")


@test
def request_directives():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = "/r?hdr=Cache-Control:max-age=60&etag=r1"
    get(port, t)
    eq(xc(get(port, t, [("Cache-Control", "no-cache")])), "REVALIDATED")
    ta = "/ra?hdr=Cache-Control:max-age=60&hdr=Age:5&etag=a1"       # stored already 5 s old
    get(port, ta)
    eq(xc(get(port, ta)), "HIT")
    eq(xc(get(port, ta, [("Cache-Control", "max-age=2")])), "REVALIDATED", "older than the client accepts")
    tm = "/rm?hdr=Cache-Control:max-age=6&hdr=Age:5&etag=m1"          # 1 s of freshness left
    get(port, tm)
    eq(xc(get(port, tm, [("Cache-Control", "min-fresh=3")])), "REVALIDATED", "min-fresh")
    r = get(port, "/none?x", [("Cache-Control", "only-if-cached")])
    eq(r.status, 504, "only-if-cached and nothing stored")
    eq(xc(get(port, "/ns?hdr=Cache-Control:max-age=60", [("Cache-Control", "no-store")])), "BYPASS")
    eq(xc(get(port, "/ns?hdr=Cache-Control:max-age=60")), "MISS", "no-store requests store nothing")
    au = [("Authorization", "Basic eDp5")]
    eq(xc(get(port, "/au?hdr=Cache-Control:max-age=60", au)), "MISS")
    eq(xc(get(port, "/au?hdr=Cache-Control:max-age=60", au)), "MISS",
       "an answer to Authorization is not stored without public, s-maxage or must-revalidate")


@test
def vary_accept_encoding_variants():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=2)
    t = "/v?hdr=Cache-Control:max-age=60&hdr=Vary:Accept-Encoding"
    eq(xc(get(port, t, [("Accept-Encoding", "gzip")])), "MISS")
    eq(xc(get(port, t, [("Accept-Encoding", "gzip")])), "HIT")
    eq(xc(get(port, t, [("Accept-Encoding", "GZIP;q=1")])), "HIT", "normalised Accept-Encoding")
    eq(xc(get(port, t)), "MISS", "another variant")
    eq(xc(get(port, t)), "HIT")
    eq(hits(o, "/v"), 2)


@test
def head_ranges_and_conditionals_from_the_cache():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = "/h?size=1000&hdr=Cache-Control:max-age=60&etag=h1"
    full = get(port, t).body
    r = get(port, t, method="HEAD")
    eq((r.status, r.body, xc(r), r.headers.get("Content-Length")), (200, b"", "HIT", "1000"))
    r = get(port, t, [("Range", "bytes=100-199")])
    eq((r.status, r.body), (206, full[100:200]))
    eq(r.headers.get("Content-Range"), "bytes 100-199/1000")
    r = get(port, t, [("Range", "bytes=-10")])
    eq(r.body, full[-10:])
    r = get(port, t, [("Range", "bytes=5000-")])
    eq((r.status, r.headers.get("Content-Range")), (416, "bytes */1000"))
    r = get(port, t, [("If-None-Match", '"h1"')])
    eq((r.status, r.body), (304, b""))
    eq(hits(o, "/h"), 1)


@test
def unsafe_methods_invalidate():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=2)
    t = "/u?hdr=Cache-Control:max-age=60"
    for i in range(ROUNDS):
        get(port, t)
        eq(xc(get(port, t)), "HIT", "round %d" % i)
        with Conn(port) as nxt:     # another connection, at once: either worker
            eq(request(port, method="POST", target=t, body=b"x").status, 200)
            eq(xc(nxt.request("GET", t)), "MISS", "round %d: a successful POST invalidated it" % i)


@test(timeout=90)
def unsafe_methods_invalidate_location_and_content_location():
    # RFC 9111 4.4: the target URI and the same-origin Location and
    # Content-Location of a successful unsafe request's answer are gone for
    # every worker before that answer reaches the client.  So each check
    # follows the answer at once, on a new connection (either worker), and
    # the sequence runs ROUNDS times: a check that could overtake the
    # invalidation would show.
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, route_extra='cache_valid = [ "200 10m" ];'), workers=2)
    form = "/form?hdr=Location:/la&hdr=Content-Location:http://LOCALHOST/lb"
    for i in range(ROUNDS):
        for path in (form, "/la", "/lb", "/lc", "/ld"):
            get(port, path)
            eq(xc(get(port, path)), "HIT", "round %d: %s stored" % (i, path))
        with Conn(port) as nxt:     # open before the POST is answered: no delay after it
            r = request(port, method="POST", target=form, body=b"x")
            eq(r.status, 200)
            eq(xc(nxt.request("GET", "/la")), "MISS", "round %d: Location (a path) invalidated" % i)
        eq(xc(get(port, "/lb")), "MISS",
           "round %d: Content-Location (same origin, any case) invalidated" % i)
        eq(xc(get(port, form)), "MISS", "round %d: the target URI invalidated" % i)
        r = request(port, method="PUT", target="/form?hdr=Location:http://other.example/lc", body=b"x")
        eq(r.status, 200)
        eq(xc(get(port, "/lc")), "HIT", "round %d: another origin's URI is left alone" % i)
        r = request(port, method="POST", target="/form?status=500&hdr=Location:/ld", body=b"x")
        eq(r.status, 500)
        eq(xc(get(port, "/ld")), "HIT", "round %d: a failed POST invalidates nothing" % i)


def held_origin(release):
    """An origin whose answer to a POST carries Location: /ha and
    Content-Location: /hb, its head sent at once and its body held back until
    release is set; any other request gets a small 200."""
    def handler(sock, peer):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            clen = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v)
            while len(buf) < clen:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            buf = buf[clen:]
            if method == "POST":
                sock.sendall(b"HTTP/1.1 200 OK\r\nLocation: /ha\r\nContent-Location: /hb\r\n"
                             b"Content-Length: 5\r\n\r\n")
                release.wait(20)
                sock.sendall(b"done\n")
            else:
                body = target.encode() + b"\n"
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return ScriptedServer(handler)


@test(timeout=60)
def unsafe_methods_invalidate_before_the_answer_reaches_the_client():
    # The origin holds the POST answer's body back: the client has its head,
    # the request is not finished, and the invalidations must already hold
    # for both workers (checked on new connections).
    release = threading.Event()
    srv = held_origin(release)
    port = free_port()
    Legate(conf(port, srv, route_extra='cache_valid = [ "200 10m" ];'), workers=2)
    try:
        for i in range(5):
            for path in ("/held", "/ha", "/hb"):
                get(port, path)
                eq(xc(get(port, path)), "HIT", "round %d: %s stored" % (i, path))
            release.clear()
            with Conn(port) as c:
                c.send(b"POST /held HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx")
                while b"\r\n\r\n" not in c.buf:
                    x = c.sock.recv(65536)
                    ok(x, "round %d: the POST answer's head arrives" % i)
                    c.buf += x
                ok(c.buf.startswith(b"HTTP/1.1 200 "), "round %d: %r" % (i, c.buf[:40]))
                for path in ("/ha", "/hb", "/held"):
                    eq(xc(get(port, path)), "MISS",
                       "round %d: %s invalidated before the answer's body came" % (i, path))
                release.set()
                r = c.read_response("POST")
                eq((r.status, r.body), (200, b"done\n"), "round %d: the POST answer completes" % i)
    finally:
        release.set()


@test
def stale_if_error_covers_a_dead_origin():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=1)
    lg.allow_log(r"connect\(\) failed|prematurely|no live upstreams")
    t = "/s?hdr=Cache-Control:max-age=1,%20stale-if-error=60"
    get(port, t)
    o.stop()
    wait_until(lambda: xc(get(port, t)) == "STALE", 5, interval=0.3,
               what="the stale copy served while the origin is down")
    t2 = "/s2?hdr=Cache-Control:max-age=1"
    # (never fetched: nothing stale to serve)
    eq(get(port, t2).status, 502)


@test(timeout=60)
def survives_a_reload():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    t = "/k?hdr=Cache-Control:max-age=60"
    get(port, t)
    lg.reload(conf(port, o, 'add_response_headers = { X-Gen = "2"; };'))
    r = get(port, t)
    eq((xc(r), r.headers.get("X-Gen")), ("HIT", "2"), "the new generation hits the old cache")


@test
def eviction_under_a_small_cache():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, glob='cache_size = "512k"; cache_max_object = "64k";'), workers=1)
    for i in range(40):
        get(port, "/big%d?size=30000&hdr=Cache-Control:max-age=60" % i)
    eq(xc(get(port, "/big39?size=30000&hdr=Cache-Control:max-age=60")), "HIT", "the newest stays")
    eq(xc(get(port, "/big0?size=30000&hdr=Cache-Control:max-age=60")), "MISS", "the oldest went")
    eq(xc(get(port, "/huge?size=200000&hdr=Cache-Control:max-age=60")), "MISS")
    eq(xc(get(port, "/huge?size=200000&hdr=Cache-Control:max-age=60")), "MISS",
       "over cache_max_object: not stored")


@test(timeout=90)
def killed_worker_mid_fill_leaves_the_cache_usable():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o, 'cache_lock_timeout = "30s";'), workers=2)
    lg.allow_log(r"exited on signal|prematurely|send\(\) to client failed")
    t = "/m?delay=3000&size=5000&hdr=Cache-Control:max-age=60"
    th = threading.Thread(target=lambda: request(port, target=t, timeout=30), daemon=True)
    th.start()
    wait_until(lambda: o.stats()["active"] >= 1, 10, what="the fill in flight")
    for w in lg.workers():
        os.kill(w, signal.SIGKILL)
    lg.wait_workers(2, timeout=20)
    t0 = time.monotonic()
    r = get(port, t)
    eq((r.status, len(r.body)), (200, 5000))
    ok(time.monotonic() - t0 < 15, "no waiting for a dead filler's lock")
    eq(xc(get(port, t)), "HIT", "stored whole by the new fill")


@test
def compressed_once_for_gzip_clients_and_gunzipped_for_others():
    import gzip as gz
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, route_extra="gzip = true; gzip_level = 6;"), workers=2)
    t = "/z?size=30000&ctype=text/html&hdr=Cache-Control:max-age=60&etag=z1"
    plain = get(port, t).body                       # an identity client fills it
    eq(len(plain), 30000)
    r = get(port, t, [("Accept-Encoding", "gzip")])
    eq((xc(r), r.headers.get("Content-Encoding")), ("HIT", "gzip"))
    eq(gz.decompress(r.body), plain, "the stored compressed body")
    ok(len(r.body) < 30000 / 4, "compressed: %d bytes" % len(r.body))
    eq(r.headers.get("ETag"), 'W/"z1"', "a weak validator for changed bytes")
    contains(r.headers.get("Vary", ""), "Accept-Encoding")
    r2 = get(port, t, [("Accept-Encoding", "gzip")])
    eq(r2.body, r.body, "the same bytes every time")
    r = get(port, t)
    eq((xc(r), r.headers.get("Content-Encoding"), r.body), ("HIT", None, plain),
       "gunzipped for a client without gzip")
    eq(r.headers.get("Content-Length"), "30000")
    r = get(port, t, [("Accept-Encoding", "gzip"), ("Range", "bytes=100-199")])
    eq((r.status, r.body, r.headers.get("Content-Encoding")), (206, plain[100:200], None),
       "ranges are about the identity bytes")
    eq(r.headers.get("Content-Range"), "bytes 100-199/30000")
    r = get(port, t, [("Accept-Encoding", "gzip")], method="HEAD")
    eq((r.status, r.body, r.headers.get("Content-Encoding")), (200, b"", "gzip"))
    eq(hits(o, "/z"), 1, "one origin request for all of them")


@test
def min_uses_and_no_store_conditions():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, route_extra='cache_min_uses = 3;'), workers=2)
    t = "/mu?hdr=Cache-Control:max-age=60"
    eq([xc(get(port, t)) for _ in range(4)], ["MISS", "MISS", "MISS", "HIT"],
       "stored at the third request, counted across workers")
    eq(hits(o, "/mu"), 3)
    port2 = free_port()
    Legate(conf(port2, o, route_extra='cache_no_store = "$http_x_nostore"; '
                                      'cache_bypass = "$cookie_nocache";'), workers=1)
    n = "/ns2?hdr=Cache-Control:max-age=60"
    eq(xc(get(port2, n, [("X-NoStore", "1")])), "MISS")
    eq(xc(get(port2, n, [("X-NoStore", "1")])), "MISS", "cache_no_store: not stored")
    eq(xc(get(port2, n)), "MISS", "without the header: stored")
    eq(xc(get(port2, n, [("X-NoStore", "1")])), "HIT", "and served to anyone")
    eq(xc(get(port2, n, [("Cookie", "nocache=1")])), "BYPASS", "cache_bypass on a cookie")
    eq(xc(get(port2, n, [("Cookie", "other=1")])), "HIT", "an absent cookie is empty, not \"-\"")


@test(timeout=60)
def stale_while_revalidate_answers_at_once_and_refreshes_once():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    t = "/swr?hdr=Cache-Control:max-age=1,%20stale-while-revalidate=30&etag=v1"
    eq(xc(get(port, t)), "MISS")
    wait_until(lambda: xc(get(port, t)) != "HIT", 5, interval=0.1, what="the object to go stale")
    # the poll above made the first stale request: it was answered at once
    # (UPDATING) and started one background refresh
    wait_until(lambda: hits(o, "/swr") == 2, 5, what="the background refresh to reach the origin")
    r = get(port, t)
    eq(xc(r), "HIT", "refreshed: fresh again")
    # stale again: many clients at once, on both workers, make one refresh
    wait_until(lambda: xc(get(port, t)) != "HIT", 5, interval=0.1, what="stale again")
    results = []
    def one():
        results.append(xc(get(port, t)))
    threads = [threading.Thread(target=one) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    ok(all(x in ("UPDATING", "HIT") for x in results), "nobody waited for the origin: %r" % results)
    wait_until(lambda: hits(o, "/swr") == 3, 5, what="the second refresh")
    eq(hits(o, "/swr"), 3, "one refresh for all of them")
    wait_until(lambda: "- 200 REVALIDATED" in open(lg.access_log).read() or
               " 200 REVALIDATED" in open(lg.access_log).read(), 5,
               what="the refresh in the access log (a 304 upstream)")
    # must-revalidate forbids serving stale
    m = "/swr2?hdr=Cache-Control:max-age=1,%20stale-while-revalidate=30,%20must-revalidate&etag=v2"
    get(port, m)
    seen = []
    wait_until(lambda: seen.append(xc(get(port, m))) or seen[-1] != "HIT", 5, interval=0.1,
               what="stale")
    eq(seen[-1], "REVALIDATED", "must-revalidate: checked before answering, never UPDATING")


@test(timeout=90)
def survives_a_restart_with_cache_path():
    o = Origin("o")
    d = tempfile.mkdtemp(prefix="legate-cachedir-")
    try:
        port = free_port()
        glob = 'cache_size = "8m"; cache_path = "%s";' % d
        lg = Legate(conf(port, o, glob=glob), workers=2)
        t = "/keep?size=5000&hdr=Cache-Control:max-age=600"
        body = get(port, t).body
        eq(xc(get(port, t)), "HIT")
        get(port, "/gone?hdr=Cache-Control:max-age=600")
        eq(request(port, method="DELETE", target="/gone?hdr=Cache-Control:max-age=600").status, 200)
        lg.stop()
        ok(os.path.exists(os.path.join(d, "legate.cache")), "saved at exit")
        lg2 = Legate(conf(port, o, glob=glob), workers=2)
        lg2.wait_log(r"cache: 1 objects loaded from .*legate\.cache")
        n = hits(o, "/keep")
        for i in range(4):
            r = get(port, t)
            eq((xc(r), r.body), ("HIT", body), "a hit in every worker after the restart")
        eq(hits(o, "/keep"), n, "the origin was not asked again")
        eq(xc(get(port, "/gone?hdr=Cache-Control:max-age=600")), "MISS",
           "an invalidation before the restart still holds")
        # a reload that remakes the segment (and an empty cache) does not read the file again
        eq(request(port, method="PURGE", target=t).status, 200)
        lg2.reload(conf(port, o, glob=glob + ' shared_memory_size = "2m";'))
        eq(xc(get(port, t)), "MISS", "purged before the reload: not brought back from the file")
        lg2.stop()
        # another cache_size: the file does not fit
        lg3 = Legate(conf(port, o, glob='cache_size = "4m"; cache_path = "%s";' % d), workers=1)
        lg3.allow_log(r"starting empty")
        lg3.wait_log(r"cache: starting empty: .*another cache_size")
        eq(xc(get(port, t)), "MISS")
        lg3.stop()
        # a damaged file: the same
        with open(os.path.join(d, "legate.cache"), "r+b") as f:
            f.truncate(1000)
        lg4 = Legate(conf(port, o, glob='cache_size = "4m"; cache_path = "%s";' % d), workers=1)
        lg4.allow_log(r"starting empty")
        lg4.wait_log(r"cache: starting empty: .*(truncated|damaged|not a cache file)")
        eq(xc(get(port, t)), "MISS")
        eq(xc(get(port, t)), "HIT", "and works")
        rc, err = check_config(conf(free_port(), o, glob='cache_size = "4m"; cache_path = "/nonexistent/x";'))
        eq(rc, 1)
        contains(err, "legate.conf:1: 'cache_path' \"/nonexistent/x\" is not a directory")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

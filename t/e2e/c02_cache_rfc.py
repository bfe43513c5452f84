#!/usr/bin/env python3
"""The cache's RFC 9111 rules one by one, against the real binary: strict
freshness inputs (Expires, Age, Vary, s-maxage for shared caches only), what
is stored and how a 304 updates it, Set-Cookie and Authorization, heuristic
freshness, immutable, must-understand, targeted cache control (RFC 9213)."""
import os
import re
import sys
from urllib.parse import quote

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, o, route_extra="", glob='cache_size = "8m";'):
    return """%s
http = {
    log_format = "$pid $request_method $request_uri $status $cache_status";
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = ( { listen = "127.0.0.1:%d";
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true; %s } ); } );
};
""" % (glob, o.address, port, route_extra)


def url(path, *hdrs, **q):
    """path?k=v&hdr=Name:Value... with the values escaped."""
    parts = ["%s=%s" % (k, quote(str(v), safe="")) for k, v in q.items()]
    parts += ["hdr=" + quote(h, safe="") for h in hdrs]
    return path + ("?" + "&".join(parts) if parts else "")


def get(port, target, headers=(), method="GET"):
    return request(port, method=method, target=target, headers=headers)


def xc(r):
    return r.headers.get("X-Cache")


def hits(o, path):
    return o.stats()["by_path"].get(path, 0)


def twice(port, target, headers=()):
    """The cache's view of the second request for target."""
    get(port, target, headers)
    return get(port, target, headers)


def scripted(answer):
    """An origin whose answer(head, n) gives the raw response (bytes) to its
    n-th request (from 1, over all connections); keep-alive, request bodies
    with Content-Length skipped."""
    count = [0]

    def handler(sock, peer):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, buf = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            need = int(m.group(1)) if m else 0
            while len(buf) < need:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            buf = buf[need:]
            count[0] += 1
            sock.sendall(answer(head.decode("latin-1"), count[0]))
    srv = ScriptedServer(handler)
    srv.count = count
    return srv


def raw(status, headers, body=b""):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- parsing the freshness inputs strictly ----

FUTURE = "Fri, 01 Jan 2037 00:00:00 GMT"


@test
def expires_that_is_not_a_valid_date_is_stale():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    bad = ["Fri, 01 Jan 2037 00:00:00 UTC",             # another time zone
           "Fri, 01 Jan 2037 00:00:00 +0000",
           "Fri, 01-Jan-2037 00:00:00 GMT",             # dashes in IMF-fixdate
           "Fri, 01 Jan 2037 0:00:00 GMT",              # one-digit hour
           "Fri,  01 Jan 2037 00:00:00 GMT",            # extra space
           "Fri, 01 Jan 2037  00:00:00 GMT",
           "0"]
    for i, e in enumerate(bad):
        t = url("/bad%d" % i, "Expires:" + e, etag="b%d" % i)
        r = twice(port, t)
        eq(xc(r), "REVALIDATED", "Expires %r must be stale" % e)
    t = url("/two", "Expires:" + FUTURE, "Expires:" + FUTURE, etag="two")
    eq(xc(twice(port, t)), "REVALIDATED", "several Expires lines are stale")
    for i, e in enumerate([FUTURE, "fri, 01 JAN 2037 00:00:00 gmt",
                           "Friday, 01-Jan-37 00:00:00 GMT", "Fri Jan  1 00:00:00 2037"]):
        t = url("/good%d" % i, "Expires:" + e, etag="g%d" % i)
        eq(xc(twice(port, t)), "HIT", "Expires %r is a valid date" % e)


@test
def age_first_valid_line_and_capped():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = url("/a1", "Cache-Control:max-age=600", "Age:abc", "Age:300", "Age:5")
    r = twice(port, t)
    eq(xc(r), "HIT")
    age = int(r.headers.get("Age"))
    ok(300 <= age <= 305, "the first valid Age line counts (got Age %d)" % age)
    t = url("/a2", "Cache-Control:max-age=600", "Age:-5")
    r = twice(port, t)
    eq(xc(r), "HIT")
    ok(int(r.headers.get("Age")) <= 5, "a negative Age is not an integer: ignored")
    t = url("/a3", "Cache-Control:max-age=600", "Age:99999999999999999999", etag="a3")
    r = twice(port, t)
    eq(xc(r), "REVALIDATED", "an Age past 2^31 is capped, not wrapped: older than max-age")
    t = url("/a4", "Cache-Control:max-age=600", "Age:1.5")
    r = twice(port, t)
    ok(int(r.headers.get("Age")) <= 5, "1.5 is not delta-seconds")


@test
def vary_star_anywhere_is_never_reused():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    for i, hs in enumerate((["Vary:Accept, *"], ["Vary:*, Accept"], ["Vary:*", "Vary:Accept"],
                            ["Vary:Accept", "Vary:*"], ["Vary:Accept,*,Origin"])):
        t = url("/v%d" % i, "Cache-Control:max-age=60", *hs)
        ok(xc(twice(port, t)) != "HIT", "%r is never reused" % hs)
        eq(hits(o, "/v%d" % i), 2)


@test
def vary_lines_are_combined():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = url("/vc", "Cache-Control:max-age=60", "Vary:X-A", "Vary:X-B")
    eq(xc(get(port, t, [("X-A", "1"), ("X-B", "1")])), "MISS")
    eq(xc(get(port, t, [("X-A", "1"), ("X-B", "1")])), "HIT")
    eq(xc(get(port, t, [("X-A", "1"), ("X-B", "2")])), "MISS", "the second Vary line counts")
    eq(xc(get(port, t, [("X-A", "2"), ("X-B", "1")])), "MISS", "and the first")


@test
def s_maxage_for_shared_caches_only():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    eq(xc(twice(port, url("/s1", "Cache-Control:s-maxage=60, max-age=0", etag="s1"))), "HIT",
       "shared: s-maxage gives the lifetime")
    o2 = Origin("o2")
    port2 = free_port()
    Legate(conf(port2, o2, "cache_private = true;"), workers=1)
    eq(xc(twice(port2, url("/s1", "Cache-Control:s-maxage=60, max-age=0", etag="s1"))),
       "REVALIDATED", "private: s-maxage ignored, max-age=0 stale")
    eq(xc(twice(port2, url("/s2", "Cache-Control:s-maxage=60", etag="s2"))), "MISS",
       "private: s-maxage alone gives no lifetime")
    eq(xc(twice(port2, url("/s3", "Cache-Control:private, max-age=60"))), "HIT",
       "private: a private response is stored")
    eq(xc(twice(port, url("/s3", "Cache-Control:private, max-age=60"))), "MISS",
       "shared: never")


# ---- what is stored and how it is updated ----

@test(timeout=60)
def a_304_updates_the_stored_headers_and_freshness():
    def answer(head, n):
        if "if-none-match" in head.lower():
            return raw("304 Not Modified", [("ETag", '"v1"'), ("Cache-Control", "max-age=60"),
                                           ("X-Version", "2"), ("Content-Length", "0"),
                                           ("Age", "0"), ("Connection", "keep-alive")])
        return raw("200 OK", [("ETag", '"v1"'), ("Cache-Control", "max-age=1"),
                              ("X-Version", "1"), ("X-Kept", "yes"),
                              ("Content-Length", "5")], b"hello")
    o = scripted(answer)
    port = free_port()
    Legate(conf(port, o), workers=1)
    r = get(port, "/u")
    eq((xc(r), r.headers.get("X-Version")), ("MISS", "1"))
    eq(xc(get(port, "/u")), "HIT")
    r = wait_until(lambda: (lambda r: r if xc(r) == "REVALIDATED" else None)(get(port, "/u")),
                   10, interval=0.2, what="the stale copy revalidated")
    eq(r.headers.get("X-Version"), "2", "the client gets the 304's fields")
    eq(r.headers.get("X-Kept"), "yes", "fields the 304 did not send stay")
    eq(r.body, b"hello", "the stored body, whole (the 304's Content-Length: 0 not taken)")
    eq(r.headers.get("Cache-Control"), "max-age=60")
    n = o.count[0]
    r = get(port, "/u")
    eq((xc(r), r.headers.get("X-Version"), r.body), ("HIT", "2", b"hello"),
       "stored updated, fresh for the 304's max-age")
    eq(o.count[0], n)
    eq(len(r.headers.get_all("X-Version")), 1, "replaced, not added")


@test
def chunked_responses_are_stored_dechunked():
    bodies = {"/k1": b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
              "/k2": b"0\r\n\r\n"}

    def answer(head, n):
        return raw("200 OK", [("Cache-Control", "max-age=60"), ("Transfer-Encoding", "chunked"),
                              ("ETag", '"k"')], bodies[head.split()[1]])
    o = scripted(answer)
    port = free_port()
    Legate(conf(port, o), workers=1)
    for path, want in (("/k1", b"hello world"), ("/k2", b"")):
        r = get(port, path)
        eq((r.status, xc(r), r.body), (200, "MISS", want))
        r = get(port, path)
        eq((r.status, xc(r), r.body), (200, "HIT", want), path)
        eq(r.headers.get("Content-Length"), str(len(want)), "stored de-chunked")
        eq(r.headers.get("Transfer-Encoding"), None)
        eq(r.headers.get("X-Trailer"), None, "trailers are not header fields")
    n = o.count[0]
    r = get(port, "/k1", [("Range", "bytes=6-")])
    eq((r.status, r.body), (206, b"world"))
    eq(o.count[0], n)


@test
def set_cookie_not_stored_by_default_and_as_configured():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = url("/sc", "Cache-Control:max-age=60", "Set-Cookie:id=1")
    eq(xc(twice(port, t)), "MISS", "as nginx: a response with Set-Cookie is not stored")
    o2 = Origin("o2")
    port2 = free_port()
    Legate(conf(port2, o2, "cache_store_set_cookie = true;"), workers=1)
    r = twice(port2, t)
    eq((xc(r), r.headers.get("Set-Cookie")), ("HIT", "id=1"), "stored with its cookie")
    t = url("/sc2", 'Cache-Control:no-cache="Set-Cookie", max-age=60', "Set-Cookie:id=2")
    r = twice(port2, t)
    eq((xc(r), r.headers.get("Set-Cookie")), ("HIT", None),
       'no-cache="Set-Cookie": reused, never with the cookie')
    t = url("/sc3", "Cache-Control:private, max-age=60", "Set-Cookie:id=3")
    eq(xc(twice(port2, t)), "MISS", "private: never")
    o3 = Origin("o3")
    port3 = free_port()
    Legate(conf(port3, o3, 'cache_ignore_headers = [ "Set-Cookie" ];'), workers=1)
    r = twice(port3, url("/sc", "Cache-Control:max-age=60", "Set-Cookie:id=1"))
    eq((xc(r), r.headers.get("Set-Cookie")), ("HIT", None), "ignored: stored without it")


@test
def authorization_needs_public_s_maxage_or_must_revalidate():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    au = [("Authorization", "Basic eDp5")]
    eq(xc(twice(port, url("/z1", "Cache-Control:max-age=60"), au)), "MISS")
    eq(hits(o, "/z1"), 2)
    for i, cc in enumerate(("public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60")):
        t = url("/y%d" % i, "Cache-Control:" + cc)
        eq(xc(twice(port, t, au)), "HIT", cc)
        eq(xc(get(port, t)), "HIT", "and for requests without Authorization")
    eq(xc(twice(port, url("/z2", "Cache-Control:proxy-revalidate, max-age=60"), au)), "MISS")
    o2 = Origin("o2")
    port2 = free_port()
    Legate(conf(port2, o2, "cache_authorized = true;"), workers=1)
    eq(xc(twice(port2, url("/z1", "Cache-Control:max-age=60"), au)), "HIT", "cache_authorized")
    o3 = Origin("o3")
    port3 = free_port()
    Legate(conf(port3, o3, "cache_private = true;"), workers=1)
    eq(xc(twice(port3, url("/z1", "Cache-Control:max-age=60"), au)), "HIT", "a private cache")


OLD = "Mon, 01 Jan 2024 00:00:00 GMT"


@test
def heuristic_freshness():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    for st in (200, 404, 410, 501):
        eq(xc(twice(port, url("/h%d" % st, "Last-Modified:" + OLD, status=st))), "HIT",
           "%d is heuristically cacheable" % st)
    eq(xc(twice(port, url("/h302", "Last-Modified:" + OLD, status=302))), "MISS",
       "302 is not, without public")
    for st in (302, 299):
        r = twice(port, url("/hp%d" % st, "Last-Modified:" + OLD, "Cache-Control:public", status=st))
        eq((r.status, xc(r)), (st, "HIT"), "%d marked public: heuristic freshness" % st)
    eq(xc(twice(port, url("/hn", "Cache-Control:public"))), "MISS", "no Last-Modified: nothing")


@test(timeout=60)
def immutable_skips_revalidation_only_while_fresh():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = url("/im", "Cache-Control:max-age=60, immutable", etag="im")
    get(port, t)
    for cc in ("no-cache", "max-age=0"):
        eq(xc(get(port, t, [("Cache-Control", cc)])), "HIT", "a reload (%s) of a fresh immutable" % cc)
    t2 = url("/mu", "Cache-Control:max-age=60", etag="mu")
    get(port, t2)
    eq(xc(get(port, t2, [("Cache-Control", "no-cache")])), "REVALIDATED", "without immutable")
    t3 = url("/im1", "Cache-Control:max-age=1, immutable", etag="im1")
    get(port, t3)
    wait_until(lambda: xc(get(port, t3, [("Cache-Control", "no-cache")])) == "REVALIDATED", 10,
               interval=0.3, what="a stale immutable revalidated")


@test
def must_understand_with_no_store():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    eq(xc(twice(port, url("/mu1", "Cache-Control:must-understand, no-store, max-age=60"))), "HIT",
       "200 is understood: no-store is for caches that do not")
    eq(xc(twice(port, url("/mu2", "Cache-Control:must-understand, no-store, max-age=60",
                          status=299))), "MISS", "an unknown status is not understood")
    eq(xc(twice(port, url("/mu3", "Cache-Control:no-store, max-age=60"))), "MISS")


@test
def vary_accept_language_normalised():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    t = url("/al", "Cache-Control:max-age=60", "Vary:Accept-Language")
    eq(xc(get(port, t, [("Accept-Language", "en-US, fr;q=0.8")])), "MISS")
    for v in ("fr;q=0.80 , EN-us", "en-us,fr; q=0.800", "en-US;q=1, fr;q=0.8"):
        eq(xc(get(port, t, [("Accept-Language", v)])), "HIT", "%r is the same variant" % v)
    eq(xc(get(port, t, [("Accept-Language", "fr, en-US;q=0.8")])), "MISS", "another preference")
    t = url("/ac", "Cache-Control:max-age=60", "Vary:Accept")
    eq(xc(get(port, t, [("Accept", "text/html, application/json")])), "MISS")
    eq(xc(get(port, t, [("Accept", "application/json,TEXT/HTML")])), "HIT", "Accept too")
    o2 = Origin("o2")
    port2 = free_port()
    Legate(conf(port2, o2, "cache_vary_normalize = [ ];"), workers=1)
    t = url("/al", "Cache-Control:max-age=60", "Vary:Accept-Language")
    eq(xc(get(port2, t, [("Accept-Language", "en-US, fr;q=0.8")])), "MISS")
    eq(xc(get(port2, t, [("Accept-Language", "fr;q=0.8, en-US")])), "MISS", "normalising off")
    eq(xc(get(port2, t, [("Accept-Language", "en-US, fr;q=0.8")])), "HIT")


@test
def post_with_its_own_content_location_answers_later_gets():
    def answer(head, n):
        method, path = head.split()[:2]
        if method == "GET":
            return raw("200 OK", [("Cache-Control", "max-age=60"), ("Content-Length", "3")], b"get")
        cl = {"/p1": "/p1", "/p2": "/elsewhere", "/p3": "/p3", "/p4": "http://localhost/p4"}[path]
        cc = "public" if path == "/p3" else "max-age=60"
        return raw("200 OK", [("Cache-Control", cc), ("Content-Location", cl),
                              ("Content-Length", "6")], b"posted")
    o = scripted(answer)
    port = free_port()
    Legate(conf(port, o), workers=1)
    for path in ("/p1", "/p2", "/p3", "/p4"):
        eq(request(port, method="POST", target=path, body=b"x=1").body, b"posted")
    n = o.count[0]
    r = get(port, "/p1")
    eq((xc(r), r.body), ("HIT", b"posted"), "Content-Location is the target, max-age")
    eq(o.count[0], n)
    r = get(port, "/p2")
    eq((xc(r), r.body), ("MISS", b"get"), "Content-Location elsewhere: not stored")
    r = get(port, "/p3")
    eq((xc(r), r.body), ("MISS", b"get"), "no explicit freshness: not stored")
    r = get(port, "/p4")
    eq((xc(r), r.body), ("HIT", b"posted"), "an absolute Content-Location of this origin")


# ---- targeted cache control (RFC 9213) ----

@test
def cdn_cache_control_takes_precedence():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    for path, hs, want in (
            ("/t1", ["CDN-Cache-Control:max-age=60", "Cache-Control:no-store"], "HIT"),
            ("/t2", ["CDN-Cache-Control:no-store", "Cache-Control:max-age=60"], "MISS"),
            ("/t3", ["CDN-Cache-Control:private", "Cache-Control:public, max-age=60"], "MISS"),
            ("/t4", ["CDN-Cache-Control:no-cache, max-age=60", "Cache-Control:max-age=60"],
             "REVALIDATED"),
            ("/t5", ["CDN-Cache-Control:max-age=60, x-unknown=1;a=2", "Cache-Control:no-store"],
             "HIT"),
            ("/t6", ["CDN-Cache-Control:must-revalidate", "Expires:" + FUTURE], "MISS"),
            ("/t7", ["CDN-Cache-Control:max-age=0", "Cache-Control:max-age=60"], "REVALIDATED"),
            ("/t8", ["CDN-Cache-Control:Max-Age=60", "Cache-Control:no-store"], "MISS"),
            ("/t9", ["CDN-Cache-Control:", "Cache-Control:max-age=60"], "HIT"),
            ("/t10", ["CDN-Cache-Control:max-age=60", "CDN-Cache-Control:no-store"], "MISS")):
        eq(xc(twice(port, url(path, *hs, etag=path[1:]))), want, "%s %r" % (path, hs))
    r = get(port, url("/t1", "CDN-Cache-Control:max-age=60", "Cache-Control:no-store", etag="t1"))
    eq(r.headers.get("CDN-Cache-Control"), "max-age=60", "passed on unless removal is asked")


@test
def targeted_field_name_is_configurable_and_removable():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o, 'cache_targeted_fields = [ "Legate-Cache-Control", '
                         '"CDN-Cache-Control" ]; cache_targeted_remove = true;'), workers=1)
    t = url("/n1", "Legate-Cache-Control:max-age=60", "CDN-Cache-Control:no-store",
            "Cache-Control:no-store")
    r = get(port, t)
    eq((xc(r), r.headers.get("Legate-Cache-Control"), r.headers.get("CDN-Cache-Control")),
       ("MISS", None, None), "removed from what the client gets")
    r = get(port, t)
    eq((xc(r), r.headers.get("Legate-Cache-Control"), r.headers.get("CDN-Cache-Control")),
       ("HIT", None, None), "the first of the list obeyed; removed from hits too")
    eq(r.headers.get("Cache-Control"), "no-store", "Cache-Control is for the caches after us")
    t = url("/n2", "CDN-Cache-Control:max-age=60", "Cache-Control:no-store")
    eq(xc(twice(port, t)), "HIT", "the second when the first is absent")
    o2 = Origin("o2")
    port2 = free_port()
    Legate(conf(port2, o2, "cache_targeted_fields = [ ];"), workers=1)
    eq(xc(twice(port2, url("/n3", "CDN-Cache-Control:max-age=60", "Cache-Control:no-store"))),
       "MISS", "an empty list: Cache-Control only")


# ---- partial content ----

BODY = bytes(range(256)) * 4        # 1024 bytes


def range_origin(seen):
    """Answers Range with a 206 (strong ETag), anything else with the whole."""
    def answer(head, n):
        m = re.search(r"(?im)^range:\s*bytes=(\d*)-(\d*)\s*$", head)
        seen.append(m.group(0).split(":", 1)[1].strip() if m else None)
        common = [("Cache-Control", "max-age=60"), ("ETag", '"p1"'), ("Accept-Ranges", "bytes")]
        if not m:
            return raw("200 OK", common + [("Content-Length", str(len(BODY)))], BODY)
        a, b = m.group(1), m.group(2)
        if a == "":
            first, last = len(BODY) - int(b), len(BODY) - 1
        else:
            first, last = int(a), min(int(b), len(BODY) - 1) if b else len(BODY) - 1
        part = BODY[first:last + 1]
        return raw("206 Partial Content", common + [
            ("Content-Range", "bytes %d-%d/%d" % (first, last, len(BODY))),
            ("Content-Length", str(len(part)))], part)
    return scripted(answer)


def rng(port, spec):
    return get(port, "/big", [("Range", "bytes=" + spec)])


@test
def partial_content_stored_served_and_completed():
    seen = []
    o = range_origin(seen)
    port = free_port()
    Legate(conf(port, o, "cache_partial = true;"), workers=1)
    r = rng(port, "0-99")
    eq((r.status, xc(r), r.body), (206, "MISS", BODY[0:100]))
    eq(seen, ["bytes=0-99"], "the range went upstream")
    for spec, a, b in (("10-49", 10, 49), ("0-99", 0, 99)):
        r = rng(port, spec)
        eq((r.status, xc(r), r.body), (206, "HIT", BODY[a:b + 1]), spec)
        eq(r.headers.get("Content-Range"), "bytes %d-%d/%d" % (a, b, len(BODY)))
    eq(len(seen), 1, "smaller ranges from the stored part")
    r = rng(port, "50-199")
    eq((r.status, xc(r), r.body), (206, "MISS", BODY[50:200]), "not all inside: upstream")
    for spec, a, b in (("150-199", 150, 199), ("90-160", 90, 160), ("0-199", 0, 199)):
        r = rng(port, spec)
        eq((r.status, xc(r), r.body), (206, "HIT", BODY[a:b + 1]), "the parts joined: " + spec)
    eq(len(seen), 2)
    r = rng(port, "200-")
    eq((r.status, r.body), (206, BODY[200:]), "the missing rest")
    eq(len(seen), 3)
    r = get(port, "/big")
    eq((r.status, xc(r), r.body), (200, "HIT", BODY), "completed: a whole 200")
    eq(r.headers.get("Content-Range"), None)
    r = rng(port, "-24")
    eq((r.status, xc(r), r.body), (206, "HIT", BODY[-24:]), "suffix ranges of the whole")
    eq(len(seen), 3, "no more upstream requests")


@test
def partial_content_suffix_and_open_ended_parts():
    seen = []
    o = range_origin(seen)
    port = free_port()
    Legate(conf(port, o, "cache_partial = true;"), workers=1)
    r = rng(port, "-100")
    eq((r.status, xc(r), r.body), (206, "MISS", BODY[-100:]))
    r = rng(port, "950-")
    eq((r.status, xc(r), r.body), (206, "HIT", BODY[950:]), "open-ended inside the suffix part")
    r = rng(port, "-50")
    eq((r.status, xc(r), r.body), (206, "HIT", BODY[-50:]))
    r = get(port, "/big")
    eq((r.status, xc(r), r.body), (200, "MISS", BODY), "no range: a part does not answer")
    eq(seen, ["bytes=-100", None])
    r = rng(port, "0-9")
    eq((r.status, xc(r), r.body), (206, "HIT", BODY[:10]), "the whole replaced the part")


@test
def without_cache_partial_the_whole_is_fetched():
    seen = []
    o = range_origin(seen)
    port = free_port()
    Legate(conf(port, o), workers=1)
    r = rng(port, "0-99")
    eq((r.status, r.body), (200, BODY), "as before: the whole, from the upstream")
    eq(seen, [None])
    r = rng(port, "0-99")
    eq((r.status, xc(r), r.body), (206, "HIT", BODY[:100]))


@test
def auth_request_set_fields_survive_the_caches_own_upstream_fields():
    """The cache's conditional and Range lines go up beside the fields
    auth_request_set added, not instead of them."""
    heads = []

    def answer(head, n):
        heads.append(head.lower())
        if "if-none-match" in head.lower():
            return raw("304 Not Modified", [("ETag", '"a"'), ("Cache-Control", "max-age=1")])
        if "range:" in head.lower():
            return raw("206 Partial Content", [("ETag", '"a"'), ("Cache-Control", "max-age=60"),
                                               ("Content-Range", "bytes 0-1/4"),
                                               ("Content-Length", "2")], b"ab")
        return raw("200 OK", [("ETag", '"a"'), ("Cache-Control", "max-age=1"),
                              ("Content-Length", "4")], b"abcd")
    app = scripted(answer)
    auth = Origin("auth")
    port = free_port()
    Legate("""cache_size = "8m";
http = {
    upstreams = { app = { servers = ( "%s" ); }; auth = { servers = ( "%s" ); }; };
    servers = ( { listen = "127.0.0.1:%d";
        routes = ( { prefix = "/"; proxy_pass = "app"; cache = true; cache_partial = true;
                     auth_request = "auth"; auth_request_uri = "/check?hdr=X-User:alice";
                     auth_request_set = [ "X-User" ]; } ); } );
};
""" % (app.address, auth.address, port), workers=1)
    eq(get(port, "/r").status, 200)
    ok("x-user: alice" in heads[-1], "the fill has X-User")
    wait_until(lambda: xc(get(port, "/r")) == "REVALIDATED", 10, interval=0.3,
               what="a revalidation")
    ok("if-none-match" in heads[-1] and "x-user: alice" in heads[-1],
       "the conditional request keeps X-User: %r" % heads[-1])
    r = get(port, "/q", [("Range", "bytes=0-1")])
    eq((r.status, r.body), (206, b"ab"))
    ok("range: bytes=0-1" in heads[-1] and "x-user: alice" in heads[-1],
       "the ranged request keeps X-User: %r" % heads[-1])


@test
def cache_private_is_checked():
    rc, err = check_config('cache_size = "1m"; http = { cache_private = 3; servers = ( '
                           '{ listen = "127.0.0.1:1"; routes = ( { prefix = "/"; '
                           'return = "200 x"; } ); } ); };')
    ok(rc != 0, "a bad value fails")
    contains(err, check_config.last_path + ":1:")
    contains(err, "cache_private")
    rc, err = check_config('cache_size = "1m"; http = {\n cache_vary_normalize = [ "Accept Language" ]; '
                           'servers = ( { listen = "127.0.0.1:1"; routes = ( { prefix = "/"; '
                           'return = "200 x"; } ); } ); };')
    ok(rc != 0, "not a header name")
    contains(err, check_config.last_path + ":2:")
    contains(err, "cache_vary_normalize")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""gunzip_request_bodies: gzip request bodies decompressed for upstreams
that cannot read them, off by default, with a limit that defuses
compression bombs (413)."""
import gzip
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def post(port, body, chunked=False):
    hs = [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")]
    if chunked:
        hs.append(("Transfer-Encoding", "chunked"))
    return request(port, method="POST", target="/u?echo=1", headers=hs, body=body)


@test
def decompressed_on_the_way_up():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o], http_extra='gunzip_request_bodies = true; client_max_body_size = "10m";'),
           workers=1)
    for size in (0, 10, 100000, 3 * 1024 * 1024):
        raw = bytes((i * 7 + i // 251) % 256 for i in range(size))
        r = post(port, gzip.compress(raw))
        eq(r.status, 200)
        j = json.loads(r.body)
        eq(j["body_len"], size, "the upstream got %d decompressed bytes" % size)
        eq(j["body_sha256"], hashlib.sha256(raw).hexdigest())
        h = dict(j["headers"])
        eq(h.get("Content-Encoding"), None, "Content-Encoding removed")
        eq(h.get("Transfer-Encoding"), "chunked")


@test
def bomb_gets_413():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], http_extra='gunzip_request_bodies = true; '
                            'gunzip_request_max = "1m"; client_max_body_size = "10m";'), workers=1)
    lg.allow_log(r"over gunzip_request_max")
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    ok(len(bomb) < 100 * 1024, "a 50 MiB bomb in %d bytes" % len(bomb))
    r = post(port, bomb)
    eq(r.status, 413)
    eq(request(port, target="/after").status, 200, "the worker is fine")


@test
def off_by_default():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o]), workers=1)
    body = gzip.compress(b"hello " * 100)
    j = json.loads(post(port, body).body)
    eq(j["body_len"], len(body), "passed as sent")
    eq(dict(j["headers"]).get("Content-Encoding"), "gzip")


if __name__ == "__main__":
    main()

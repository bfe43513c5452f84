#!/usr/bin/env python3
"""Max-Forwards for TRACE and OPTIONS (RFC 9110 7.6.2), on the reverse and
the forward proxy."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


@test
def zero_stops_here_otherwise_decremented():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o]), workers=1)
    r = request(port, method="OPTIONS", target="/x", headers=[("Max-Forwards", "0")])
    eq(r.status, 200)
    contains(r.headers.get("Allow", ""), "GET")
    eq(o.stats()["requests"], 0, "answered by legate")
    r = request(port, method="TRACE", target="/t", headers=[("Max-Forwards", "0"),
                                                            ("Cookie", "secret=1"), ("X-A", "b")])
    eq((r.status, r.headers.get("Content-Type")), (200, "message/http"))
    contains(r.body.decode(), "TRACE /t HTTP/1.1")
    contains(r.body.decode(), "X-A: b")
    ok(b"secret" not in r.body, "no cookie echoed back")
    r = request(port, method="OPTIONS", target="/y?echo=1", headers=[("Max-Forwards", "3")])
    h = dict(json.loads(r.body)["headers"])
    eq(h.get("Max-Forwards"), "2", "decremented on the way")
    r = request(port, method="GET", target="/z?echo=1", headers=[("Max-Forwards", "0")])
    eq(dict(json.loads(r.body)["headers"]).get("Max-Forwards"), "0", "other methods ignore it")
    eq(request(port, method="OPTIONS", target="/", headers=[("Max-Forwards", "x")]).status, 400)


if __name__ == "__main__":
    main()

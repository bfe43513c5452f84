#!/usr/bin/env python3
"""Ingress routing (host, methods, header, query conditions) and canary
releases (weighted split, cohort stickiness, forcing, cohort cookie)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, a, b, routes):
    return """
http = {
    upstreams = { a = { servers = ( "%s" ); }; b = { servers = ( "%s" ); }; };
    servers = ( { listen = "127.0.0.1:%d"; routes = ( %s ); } );
};
""" % (a.address, b.address, port, routes)


def who(port, target="/", headers=(), method="GET", host="localhost", conn=None):
    r = (conn.request(method, target, headers, host=host) if conn
         else request(port, method=method, target=target, headers=headers, host=host))
    eq(r.status, 200, "%s %s" % (method, target))
    return r.headers.get("X-Origin"), r


@test
def conditions_select_routes():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    Legate(conf(port, a, b, """
        { prefix = "/"; host = "api.example.com"; proxy_pass = "b"; },
        { prefix = "/"; methods = [ "POST", "PUT" ]; proxy_pass = "b"; },
        { prefix = "/"; header = "X-Canary: always"; proxy_pass = "b"; },
        { prefix = "/"; query = "v=2"; proxy_pass = "b"; },
        { prefix = "/"; host = "*.internal"; header = "X-Team"; proxy_pass = "b"; },
        { prefix = "/"; proxy_pass = "a"; }"""), workers=1)
    eq(who(port)[0], "a", "no condition holds: the plain route")
    eq(who(port, host="api.example.com")[0], "b", "host")
    eq(who(port, host="API.Example.com.")[0], "b", "host is case-insensitive, trailing dot")
    eq(who(port, method="POST")[0], "b", "method")
    eq(who(port, headers=[("X-Canary", "always")])[0], "b", "header with value")
    eq(who(port, headers=[("X-Canary", "sometimes")])[0], "a", "header value must match")
    eq(who(port, target="/x?a=1&v=2")[0], "b", "query argument")
    eq(who(port, target="/x?v=22")[0], "a", "query value must match exactly")
    eq(who(port, host="db.internal", headers=[("X-Team", "x")])[0], "b", "host and header together")
    eq(who(port, host="db.internal")[0], "a", "all conditions must hold")


@test
def longer_prefix_still_wins_over_conditions_order():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    Legate(conf(port, a, b, """
        { prefix = "/"; header = "X-B"; proxy_pass = "b"; },
        { prefix = "/api/"; proxy_pass = "a"; }"""), workers=1)
    eq(who(port, target="/api/x", headers=[("X-B", "1")])[0], "a", "the longest matching prefix")
    eq(who(port, target="/other", headers=[("X-B", "1")])[0], "b")


CANARY = """
    { prefix = "/"; header = "X-Canary: always"; proxy_pass = "b"; },
    { prefix = "/"; split = ( { upstream = "a"; weight = 90; }, { upstream = "b"; weight = 10; } );
      split_key = "$cookie_uid"; %s }"""


@test(timeout=120)
def canary_split_ten_percent_by_user():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    Legate(conf(port, a, b, CANARY % ""), workers=2)
    counts = {"a": 0, "b": 0}
    for batch in range(10):     # keepalive_requests (1000) ends a connection
        with Conn(port) as c:
            for i in range(batch * 500, batch * 500 + 500):
                o, _ = who(port, headers=[("Cookie", "x=1; uid=user%d" % i)], conn=c)
                counts[o] += 1
    share = counts["b"] / 5000.0
    ok(0.08 <= share <= 0.12, "canary share %.3f (%r), want 10%% +- 2%%" % (share, counts))


@test
def cohort_is_sticky_and_forcing_works():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    Legate(conf(port, a, b, CANARY % ""), workers=2)
    for uid in ("alice", "bob", "carol", "dave"):
        seen = {who(port, headers=[("Cookie", "uid=" + uid)])[0] for _ in range(15)}
        eq(len(seen), 1, "user %s stays in one cohort: %r" % (uid, seen))
    for _ in range(10):
        eq(who(port, headers=[("Cookie", "uid=alice"), ("X-Canary", "always")])[0], "b",
           "X-Canary: always forces the canary")


@test
def cohort_cookie_keeps_users_without_a_key():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    Legate(conf(port, a, b, CANARY % 'split_cookie = "lg_cohort";'), workers=2)
    seen = {"a": 0, "b": 0}
    for i in range(300):
        o, r = who(port)
        seen[o] += 1
        cookie = r.headers.get("Set-Cookie")
        ok(cookie is not None and cookie.startswith("lg_cohort=%s;" % o),
           "the cohort is told in a cookie: %r for %s" % (cookie, o))
        if i < 20:
            for _ in range(3):
                o2, r2 = who(port, headers=[("Cookie", "lg_cohort=" + o)])
                eq(o2, o, "the cookie keeps the cohort")
                eq(r2.headers.get("Set-Cookie"), None, "no new cookie once in a cohort")
    ok(10 <= seen["b"] <= 60, "requests without a key are placed at random: %r" % seen)


@test
def split_config_errors():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    rc, err = check_config(conf(port, a, b, """
        { prefix = "/"; split = ( { upstream = "a"; weight = 90; }, { upstream = "zz"; weight = 10; } ); }"""))
    eq(rc, 1)
    contains(err, "unknown upstream 'zz' in 'split'")
    rc, err = check_config(conf(port, a, b, """
        { prefix = "/"; proxy_pass = "a"; split_key = "$cookie_uid"; }"""))
    eq(rc, 1)
    contains(err, "'split_key' is only allowed with 'split'")
    rc, err = check_config(conf(port, a, b, """
        { prefix = "/"; proxy_pass = "a"; split = ( { upstream = "a"; weight = 1; }, { upstream = "b"; weight = 1; } ); }"""))
    eq(rc, 1)
    contains(err, "route has both 'split' and 'proxy_pass'")


@test(timeout=120)
def changing_the_split_is_a_reload_away():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, a, b, CANARY % ""), workers=2)
    lg.reload(conf(port, a, b, CANARY.replace("weight = 90", "weight = 50").replace(
        "weight = 10", "weight = 50") % ""))
    counts = {"a": 0, "b": 0}
    with Conn(port) as c:
        for i in range(900):
            counts[who(port, headers=[("Cookie", "uid=u%d" % i)], conn=c)[0]] += 1
    ok(360 <= counts["b"] <= 540, "50/50 after the reload: %r" % counts)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Upstream balancing and health: the algorithms, global least-connections
across workers, backup and down servers, passive health, all servers down."""
import os
import re
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, servers, extra=""):
    """servers: list of address strings or libconfig server groups."""
    items = ", ".join(s if s.startswith("{") else '"%s"' % s for s in servers)
    return """
http = {
    upstreams = { app = { servers = ( %s ); %s }; };
    servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (items, extra, port)


def origin_of(port, target="/"):
    r = request(port, target=target)
    eq(r.status, 200, "status of %s" % target)
    return r.headers.get("X-Origin")


def spread(port, n, target=lambda i: "/r%d" % i):
    counts = {}
    for i in range(n):
        o = origin_of(port, target(i))
        counts[o] = counts.get(o, 0) + 1
    return counts


@test
def least_conn_is_global_across_workers():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address], 'balance = "least_conn";'), workers=2)
    results = []

    def slow(i):
        results.append(request(port, target="/slow%d?delay=3000" % i, timeout=20))

    threads = []
    for i in range(6):
        t = threading.Thread(target=slow, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        # one at a time: each new request sees the previous ones in flight
        wait_until(lambda: a.stats()["active"] + b.stats()["active"] >= i + 1, 10,
                   what="request %d in flight at an origin" % i)
    ea, eb = a.stats()["active"], b.stats()["active"]
    for t in threads:
        t.join(20)
    eq((ea, eb), (3, 3), "in-flight requests per origin with global least_conn")
    eq([r.status for r in results], [200] * 6)


@test
def hash_on_uri_is_sticky_and_spreads():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address], 'balance = "hash"; hash_key = "$request_uri";'),
                workers=2)
    owners = {}
    for i in range(40):
        uri = "/item/%d" % (i % 10)
        o = origin_of(port, uri)
        owners.setdefault(uri, set()).add(o)
    ok(all(len(v) == 1 for v in owners.values()), "each URI always on one origin: %r" % owners)
    used = set().union(*owners.values())
    eq(used, {"a", "b"}, "10 keys spread over both origins")


@test
def ip_hash_keeps_one_client_on_one_server():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address], 'balance = "ip_hash";'), workers=2)
    eq(len(spread(port, 20)), 1, "127.0.0.1 always lands on the same origin")


@test
def random_and_peak_ewma_use_every_server():
    for algo in ("random", "peak_ewma"):
        a, b = Origin("a"), Origin("b")
        port = free_port()
        lg = Legate(conf(port, [a.address, b.address], 'balance = "%s";' % algo), workers=1)
        c = spread(port, 60)
        ok(set(c) == {"a", "b"}, "%s used both origins: %r" % (algo, c))
        lg.stop()


@test
def down_server_is_never_used():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, '{ address = "%s"; down = true; }' % b.address]), workers=2)
    eq(spread(port, 20), {"a": 20})


@test
def backup_only_when_primaries_are_down():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    lg = Legate(conf(port, [a.address, '{ address = "%s"; backup = true; }' % b.address],
                     'fail_timeout = "30s";'), workers=1)
    eq(spread(port, 10), {"a": 10}, "backup idle while the primary is up")
    a.stop()
    lg.allow_log(r"connect\(\) to upstream|connect\(\) failed|is out for")
    eq(spread(port, 10), {"b": 10}, "backup serves once the primary is down")


@test
def passive_health_ejects_a_dead_server():
    a, b = Origin("a"), Origin("b")
    dead = free_port()
    port = free_port()
    lg = Legate(conf(port, [a.address, "127.0.0.1:%d" % dead, b.address],
                     'max_fails = 1; fail_timeout = "30s";'), workers=1)
    lg.allow_log(r"connect\(\) failed|is out for")
    c = spread(port, 30)
    eq(sum(c.values()), 30, "every request answered 200 by a live origin")
    wait_until(lambda: "is out for" in lg.log_text(), 5, what="the ejection in the log")
    with open(lg.error_log) as f:       # (log_text() also holds the -F copy on stderr)
        fails = len(re.findall(r"connect\(\) failed", f.read()))
    eq(fails, 1, "the dead server was tried once, then left out")


@test
def all_servers_down_gives_502_naming_the_upstream():
    port = free_port()
    lg = Legate(conf(port, ["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()]), workers=1)
    lg.allow_log(r"connect\(\) failed|is out for|no live upstreams")
    for _ in range(3):
        r = request(port, target="/x")
        eq(r.status, 502)
    wait_until(lambda: 'no live upstreams in "app"' in lg.log_text(), 5,
               what="a log line naming the upstream")


@test
def config_rejects_unknown_balance():
    rc, err = check_config(conf(free_port(), ["127.0.0.1:1"], 'balance = "fastest";'))
    eq(rc, 1)
    contains(err, "unknown balance 'fastest'")


if __name__ == "__main__":
    main()

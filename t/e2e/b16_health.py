#!/usr/bin/env python3
"""Active health checks: once for the whole process tree, shared verdicts,
failover when a server dies and recovery when it returns."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, servers, hc):
    items = ", ".join('"%s"' % s for s in servers)
    return """
http = {
    upstreams = { app = { servers = ( %s ); max_fails = 0; health_check = { %s }; }; };
    servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (items, hc, port)


def origins_seen(port, n=20):
    seen = {}
    for i in range(n):
        r = request(port, target="/x%d" % i)
        eq(r.status, 200)
        o = r.headers.get("X-Origin")
        seen[o] = seen.get(o, 0) + 1
    return seen


@test(timeout=90)
def failover_and_recovery():
    a, b = Origin("a"), Origin("b")
    bport = b.port
    port = free_port()
    lg = Legate(conf(port, [a.address, b.address],
                     'interval = "200ms"; timeout = "500ms"; path = "/health"; rise = 2; fall = 2;'),
                workers=2)
    lg.allow_log(r"health check failed|connect\(\) failed|is down")
    eq(set(origins_seen(port)), {"a", "b"})
    b.stop()
    lg.wait_log(r'server 127\.0\.0\.1:%d is down: health check failed' % bport, 10)
    eq(origins_seen(port, 30), {"a": 30}, "every worker leaves the dead server out")
    b2 = Origin("b", port=bport)
    lg.wait_log(r'server 127\.0\.0\.1:%d is up: health check passed' % bport, 10)
    eq(set(origins_seen(port, 30)), {"a", "b"}, "back in rotation")
    b2.stop()


@test(timeout=60)
def checks_run_once_not_per_worker():
    a = Origin("a")
    port = free_port()
    lg = Legate(conf(port, [a.address, "127.0.0.1:%d" % free_port()],
                     'interval = "100ms"; path = "/health";'), workers=3)
    lg.allow_log(r"health check failed|is down")
    a.reset_stats()
    wait_until(lambda: a.stats()["by_path"].get("/health", 0) >= 10, 10, what="10 probes")
    n0 = a.stats()["by_path"].get("/health", 0)
    lg.wait_log(r"is down", 10)
    # over about a second: one prober makes ~10 probes, three would make ~30
    import time
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 1.0, 5, what="a second")
    n1 = a.stats()["by_path"].get("/health", 0)
    ok(n1 - n0 <= 16, "probes in a second: %d (one prober at 100 ms)" % (n1 - n0))


@test(timeout=60)
def status_and_body_rules():
    a, b = Origin("a"), Origin("b")
    port = free_port()
    # b answers 500 to its probe path; a's body lacks the expected text for "b"
    lg = Legate(conf(port, [a.address, b.address],
                     'interval = "100ms"; path = "/h?status=200"; status = "200"; '
                     'body = "origin a"; fall = 1;'), workers=1)
    lg.allow_log(r"health check failed|is down")
    lg.wait_log(r"server %s is down: health check failed 1 times \(body does not match\)"
                % re.escape(b.address), 10)
    eq(origins_seen(port, 10), {"a": 10})


@test
def config_errors():
    rc, err = check_config(conf(free_port(), ["127.0.0.1:1"], 'status = "600";'))
    eq(rc, 1)
    contains(err, "'status' must be a status or a range")
    rc, err = check_config(conf(free_port(), ["127.0.0.1:1"], 'color = "blue";'))
    eq(rc, 1)
    contains(err, "unknown setting 'color'")


if __name__ == "__main__":
    main()

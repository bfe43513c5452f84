#!/usr/bin/env python3
"""Upstream names looked up again while legate runs (issue 17): resolve =
true follows a changing DNS answer within its TTL, resolve_valid replaces
the TTL, a failed lookup keeps the address, and the name servers are asked
once per TTL, not once per request.  t/dnsd.py serves the zone and changes
its answer."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

DNSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dnsd.py")


class Dnsd:
    """t/dnsd.py serving a zone file the test rewrites."""

    def __init__(self, names):
        self.dir = tempfile.mkdtemp(prefix="legate-dnsd-")
        self.zone = os.path.join(self.dir, "zone.json")
        self.stats_file = os.path.join(self.dir, "stats")
        self.set(names)
        self.proc = subprocess.Popen([sys.executable, DNSD, "--zone", self.zone, "--stats",
                                      self.stats_file, "--exit-on-eof"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "dnsd started: %r" % line)
        self.port = int(line.split()[1])
        _track(self)

    def set(self, names):
        """names: {name: (addrs, ttl)}; written by rename, read at the next query."""
        tmp = self.zone + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"names": {n: {"addrs": a, "ttl": t} for n, (a, t) in names.items()}}, f)
        os.replace(tmp, self.zone)

    def count(self, name):
        try:
            text = open(self.stats_file).read()
        except FileNotFoundError:
            return 0
        return sum(int(l.split()[2]) for l in text.splitlines() if l.split()[0] == name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    teardown = stop


def two_origins():
    """Origins on 127.0.0.1 and 127.0.0.2 with the same port: a DNS answer
    alone says which one a request reaches."""
    for _ in range(20):
        port = free_port()
        try:
            a = Origin("a", port=port, host="127.0.0.1")
            b = Origin("b", port=port, host="127.0.0.2")
            return port, a, b
        except TestFailure:
            continue
    fail("no port free on both 127.0.0.1 and 127.0.0.2")


def origin_of(port, path="/"):
    r = request(port, target=path, timeout=10)
    if r is None or r.status != 200:
        return None
    return r.headers.get("X-Origin")


def settle(port, want, path="/", timeout=20, runs=6):
    """Poll until `runs` answers in a row come from origin `want`."""
    streak = [0]

    def check():
        streak[0] = streak[0] + 1 if origin_of(port, path) == want else 0
        return streak[0] >= runs
    wait_until(check, timeout, interval=0.1, what="answers from origin %s at %s" % (want, path))


@test
def a_changing_answer_is_followed_within_its_ttl():
    oport, a, b = two_origins()
    dns = Dnsd({"app.test": (["127.0.0.1"], 1), "slow.test": (["127.0.0.1"], 1)})
    port = free_port()
    lg = Legate("""
http = {
  upstreams = {
    app = { servers = ( "app.test:%(o)d" ); resolve = true; resolvers = [ "127.0.0.1:%(d)d" ]; };
    slow = { servers = ( "slow.test:%(o)d" ); resolve = true; resolve_valid = "60s";
             resolvers = [ "127.0.0.1:%(d)d" ]; };
  };
  servers = ( { listen = "127.0.0.1:%(p)d";
    routes = ( { prefix = "/"; proxy_pass = "app"; }, { prefix = "/slow/"; proxy_pass = "slow"; } ); } );
};
""" % dict(o=oport, d=dns.port, p=port))
    settle(port, "a")
    settle(port, "a", "/slow/")
    # many requests, few queries: the resolver's cache answers within the TTL
    q0 = dns.count("app.test")
    t0 = time.monotonic()
    for _ in range(100):
        eq(origin_of(port), "a")
    elapsed = time.monotonic() - t0
    asked = dns.count("app.test") - q0
    # each worker asks at most once a TTL (1 s) per family (A and AAAA)
    ok(asked <= lg.nworkers * 2 * (int(elapsed) + 2), "%d queries for 100 requests in %.1fs"
       % (asked, elapsed))
    dns.set({"app.test": (["127.0.0.2"], 1), "slow.test": (["127.0.0.2"], 1)})
    t0 = time.monotonic()
    settle(port, "b")
    ok(time.monotonic() - t0 < 15, "took %.1fs" % (time.monotonic() - t0))
    lg.wait_log(r'upstream "app" server app\.test:%d now resolves to 127\.0\.0\.2:%d \(was 127\.0\.0\.1:%d\)'
                % (oport, oport, oport))
    # resolve_valid = 60s: the first answer is kept though the TTL is 1 s
    for _ in range(10):
        eq(origin_of(port, "/slow/"), "a")


@test
def a_failed_lookup_keeps_the_address():
    oport, a, b = two_origins()
    dns = Dnsd({"app.test": (["127.0.0.2"], 1)})
    port = free_port()
    lg = Legate("""
http = {
  upstreams = { app = { servers = ( "app.test:%d" ); resolve = true; resolvers = [ "127.0.0.1:%d" ]; }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (oport, dns.port, port))
    settle(port, "b")
    dns.set({})                                  # NXDOMAIN from now on
    lg.wait_log(r'upstream "app" server app\.test:%d: NXDOMAIN|not found' % oport, timeout=15)
    for _ in range(10):
        eq(origin_of(port), "b")
    lg.allow_log(r"NXDOMAIN|not found")


@test
def a_name_that_never_resolved_is_out_until_it_does():
    oport, a, b = two_origins()
    dns = Dnsd({})
    port = free_port()
    lg = Legate("""
http = {
  upstreams = { app = { servers = ( "late.test:%d" ); resolve = true; resolvers = [ "127.0.0.1:%d" ]; }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (oport, dns.port, port))
    r = request(port, target="/")
    eq(r.status, 502)
    dns.set({"late.test": (["127.0.0.1"], 1)})
    settle(port, "a")
    lg.allow_log(r"NXDOMAIN|not found|no live|502")


@test
def configuration():
    rc, err = check_config(simple_conf(free_port(), ["nosuch.invalid:80"],
                                       upstream_extra='resolve = true; resolvers = [ "127.0.0.1:9" ];'))
    eq(rc, 0, err)          # not looked up at load with resolve
    rc, err = check_config(simple_conf(free_port(), ["app.test:99999"], upstream_extra="resolve = true;"))
    ok(rc != 0, err)
    contains(err, "bad port")
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:80"],
                                       upstream_extra='resolve = true; resolve_valid = "forever";'))
    ok(rc != 0, err)
    contains(err, "resolve_valid")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Parent proxies of the forward proxy: conf/examples/forward-parent.conf
run for real (a child and a parent legate), per-domain rules and
always_direct, balancing over two parents, CONNECT through a parent,
failover to direct when the parents are down, never_direct's 502/503 with
the reason, wrong or missing credentials for the parent, config errors."""
import os
import re
import shutil
import socket
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

EXAMPLE = os.path.join(REPO, "conf", "examples", "forward-parent.conf")
HTPASSWD = os.path.join(REPO, "conf", "examples", "htpasswd")      # admin:legate


def hosts_dir():
    d = tempfile.mkdtemp(prefix="legate-parent-")
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 origin.test via.test direct.test\n")
    return d


def parent_legate(port, extra=""):
    """A parent forward proxy (signs children in as admin:legate)."""
    lg = Legate("""
http = { log_format = "squid";
  servers = ( { listen = "127.0.0.1:%d";
    forward = { allow_private = true; auth_file = "htpasswd"; connect_ports = "1024-65535";
                hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ]; %s };
    routes = ( { exact = "/health"; return = 200; body = "ok\\n"; } ); } ); };
""" % (port, hosts_dir(), extra), workers=1, start=False)
    shutil.copy(HTPASSWD, os.path.join(lg.prefix, "htpasswd"))
    lg.start()
    return lg


def child_conf(port, parents, rules, extra="", upstream_extra="", socks=None):
    d = hosts_dir()
    listen = '( "127.0.0.1:%d", { address = "127.0.0.1:%d"; protocol = "socks5"; } )' % (port, socks) \
        if socks else '"127.0.0.1:%d"' % port
    return """
via_name = "child";
http = { log_format = "squid";
  upstreams = { parents = { servers = ( %s ); %s }; };
  servers = ( { listen = %s;
    forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                connect_ports = "1024-65535"; parents = ( %s ); %s };
    routes = ( ); } ); };
""" % (", ".join('"127.0.0.1:%d"' % p for p in parents), upstream_extra, listen, d, rules, extra)


def via(port, url, *args, **kw):
    return curl("-x", "http://127.0.0.1:%d" % port, url, *args, **kw)


@test
def example_child_through_parent():
    o = Origin("o")
    child, parent = free_port(), free_port()
    text = open(EXAMPLE).read()
    ok("127.0.0.1:3128" in text and "127.0.0.1:3129" in text, "the example's two addresses")
    text = text.replace("127.0.0.1:3128", "127.0.0.1:%d" % child) \
               .replace("127.0.0.1:3129", "127.0.0.1:%d" % parent) \
               .replace('connect_ports = "443";', 'connect_ports = "443 %d";' % o.port)
    lg = Legate(text, start=False)
    shutil.copy(HTPASSWD, os.path.join(lg.prefix, "htpasswd"))
    lg.start()
    st, _, body = via(child, "http://127.0.0.1:%d/p?echo=1" % o.port)
    eq(st, 200)
    contains(body.decode(), '"target": "/p?echo=1"')
    # both hops in the Squid log: the child's through the parent, the
    # parent's (signed in as admin by the child's login) direct
    def lines_matching(*regexes):
        """Every access log line once each regex matches one (the log is
        written once a second, and health checks add lines of their own)."""
        def get():
            ls = open(lg.access_log).read().splitlines()
            return ls if all(any(re.search(r, x) for x in ls) for r in regexes) else None
        return wait_until(get, 10, what="log lines %r" % (regexes,))
    child_re = r"GET http://127\.0\.0\.1:%d/p\?echo=1 - FIRSTUP_PARENT/127\.0\.0\.1 " % o.port
    parent_re = r"GET http://127\.0\.0\.1:%d/p\?echo=1 admin HIER_DIRECT/127\.0\.0\.1 " % o.port
    ls = lines_matching(child_re, parent_re)
    eq(len([x for x in ls if re.search(child_re, x)]), 1, "the child's line: %r" % ls)
    eq(len([x for x in ls if re.search(parent_re, x)]), 1, "the parent's line: %r" % ls)
    # CONNECT through the parent
    st, _, body = curl("-p", "-x", "http://127.0.0.1:%d" % child, "http://127.0.0.1:%d/t" % o.port)
    eq((st, body), (200, b"origin o /t\n"), "a tunnel through the parent")
    child_re = r"TCP_TUNNEL/200 \d+ CONNECT 127\.0\.0\.1:%d - FIRSTUP_PARENT" % o.port
    parent_re = r"TCP_TUNNEL/200 \d+ CONNECT 127\.0\.0\.1:%d admin HIER_DIRECT" % o.port
    ls = lines_matching(child_re, parent_re)
    eq(len([x for x in ls if re.search(child_re, x)]), 1, "the child's tunnel line: %r" % ls)
    eq(len([x for x in ls if re.search(parent_re, x)]), 1, "the parent's tunnel line: %r" % ls)
    # always_direct: localhost never goes through the parent
    st, _, _ = via(child, "http://localhost:%d/d" % o.port)
    eq(st, 200)
    want = "GET http://localhost:%d/d - HIER_DIRECT/" % o.port
    wait_until(lambda: want in open(lg.access_log).read(), 10, what="the localhost line")
    ls = open(lg.access_log).read().splitlines()
    eq(len([x for x in ls if "/d " in x]), 1, "and no parent's line")


@test
def what_the_parent_is_sent():
    # a scripted parent: records each request head and its connection
    import base64
    seen = []

    def handler(sock, peer):
        n = fake.connections
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                x = sock.recv(65536)
                if not x:
                    return
                buf += x
            head, _, buf = buf.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head + b"\r\n")
            need = int(m.group(1)) if m else 0
            while len(buf) < need:
                buf += sock.recv(65536)
            buf = buf[need:]
            seen.append((n, head.decode()))
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nparent\n")

    fake = ScriptedServer(handler)
    port = free_port()
    Legate(child_conf(port, [fake.port], '{ upstream = "parents"; login = "admin:legate"; }',
                      'anonymity = "anonymous";'), workers=1)
    for path in ("/g1", "/g2"):
        eq(via(port, "http://origin.test:8080%s?q=1" % path)[2], b"parent\n")
    eq(via(port, "http://origin.test:8080/post", "-d", "x=1")[2], b"parent\n")
    eq(len(seen), 3)
    lines = [h.split("\r\n")[0] for _, h in seen]
    eq(lines, ["GET http://origin.test:8080/g1?q=1 HTTP/1.1", "GET http://origin.test:8080/g2?q=1 HTTP/1.1",
               "POST http://origin.test:8080/post HTTP/1.1"], "absolute form to the parent")
    auth = "Proxy-Authorization: Basic " + base64.b64encode(b"admin:legate").decode()
    ok(all(auth in h.split("\r\n") for _, h in seen), "the rule's login on each: %r" % seen)
    ok(all("Host: origin.test:8080" in h.split("\r\n") for _, h in seen), "Host")
    ok(all(re.search(r"\r\nVia: 1\.1 child", h) for _, h in seen), "Via by the child's via_name")
    ok(not any("X-Forwarded-For" in h for _, h in seen), "anonymity applies as to a destination")
    eq([n for n, _ in seen], [1, 1, 2], "the GETs share a kept connection, the POST gets a new one")


@test
def domain_rules_and_balancing():
    o = Origin("o")
    p1, p2 = free_port(), free_port()
    par1, par2 = parent_legate(p1), parent_legate(p2)
    port, sport = free_port(), free_port()
    Legate(child_conf(port, [p1, p2],
                      '{ domains = [ "via.test" ]; upstream = "parents"; login = "admin:legate"; }',
                      'always_direct = [ "direct.via.test" ];', socks=sport), workers=1)
    for i in range(6):
        eq(via(port, "http://via.test:%d/v%d" % (o.port, i))[0], 200)
    eq(via(port, "http://origin.test:%d/o" % o.port)[0], 200)
    def counts():
        return tuple(len(open(p.access_log).read().splitlines()) for p in (par1, par2))
    # the logs are written once a second: wait for all six lines
    wait_until(lambda: sum(counts()) >= 6, 10, what="six lines in the parents' logs")
    eq(counts(), (3, 3), "round robin over the two parents")
    eq(o.stats()["by_path"].get("/o"), 1, "origin.test went direct")
    ok(all("via.test" in x for x in open(par1.access_log).read().splitlines()),
       "only via.test went through the parents")
    # a SOCKS5 CONNECT by name goes through a parent as a CONNECT too
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    s.sendall(b"\x05\x01\x00")
    eq(s.recv(2), b"\x05\x00")
    s.sendall(b"\x05\x01\x00\x03\x08via.test" + struct.pack(">H", o.port))
    r = b""
    while len(r) < 10:
        x = s.recv(10 - len(r))
        if not x:
            break
        r += x
    eq(r[:2], b"\x05\x00", "SOCKS5 succeeded")
    s.sendall(b"GET /socks HTTP/1.1\r\nHost: via.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        x = s.recv(65536)
        if not x:
            break
        data += x
    s.close()
    contains(data.decode(), "origin o /socks")
    wait_until(lambda: "CONNECT via.test:%d admin" % o.port in
               open(par1.access_log).read() + open(par2.access_log).read(), 10,
               what="the parent's tunnel line")


@test
def parent_down_fails_over_to_direct():
    o = Origin("o")
    dead = free_port()                  # nothing listens there
    port = free_port()
    lg = Legate(child_conf(port, [dead], '{ upstream = "parents"; login = "admin:legate"; }'),
                workers=1)
    st, _, body = via(port, "http://origin.test:%d/f" % o.port)
    eq((st, body), (200, b"origin o /f\n"), "direct after the parent failed")
    st, _, body = curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/ft" % o.port)
    eq((st, body), (200, b"origin o /ft\n"), "a CONNECT direct after the parent failed")
    lg.wait_log(r"the parent proxies of \"parents\" failed: origin\.test goes direct")
    # a POST's body may be half sent to a parent: it is not sent again
    st, _, _ = via(port, "http://origin.test:%d/post" % o.port, "-d", "x=1", check=False)
    eq(st, 502)
    eq(o.stats()["by_path"].get("/post"), None)
    lg.allow_log(r"connect\(\) to|upstream")


@test
def never_direct_answers_502_or_503_with_the_reason():
    o = Origin("o")
    dead = free_port()
    port = free_port()
    lg = Legate(child_conf(port, [dead], '{ upstream = "parents"; }', "never_direct = true;"),
                workers=1)
    st, _, body = via(port, "http://origin.test:%d/n" % o.port, check=False)
    eq(st, 502)
    contains(body.decode(), 'the parent proxies of "parents" failed, and never_direct forbids')
    st, _, _ = curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/nt" % o.port,
                    check=False)
    ok(st != 200, "no tunnel without the parent")
    # with a health check that finds the parent down: 503 before any try
    port2 = free_port()
    lg2 = Legate(child_conf(port2, [dead], '{ upstream = "parents"; never_direct = true; }',
                            upstream_extra='health_check = { interval = "50ms"; timeout = "100ms";'
                                           ' fall = 1; path = "/health"; };'), workers=1)

    def refused_503():
        st, _, body = via(port2, "http://origin.test:%d/h" % o.port, check=False)
        return st == 503 and body
    body = wait_until(refused_503, 15, what="503 once the health check found the parent down")
    contains(body.decode(), 'no parent proxy of "parents" is up, and never_direct forbids going '
                            'direct to origin.test')
    eq(o.stats()["by_path"], {}, "nothing reached the origin")
    for x in (lg, lg2):
        x.allow_log(r"connect\(\) to|upstream|health|parent")


@test
def wrong_or_missing_parent_credentials():
    o = Origin("o")
    pp = free_port()
    parent_legate(pp)
    for rule, why in (('{ upstream = "parents"; login = "admin:wrong"; }', "check 'login'"),
                      ('{ upstream = "parents"; }', "the parent rule has no 'login'")):
        port = free_port()
        lg = Legate(child_conf(port, [pp], rule), workers=1)
        st, hs, body = via(port, "http://origin.test:%d/w" % o.port, check=False)
        eq(st, 502, "the parent's 407 is not the client's")
        ok(hs.get("Proxy-Authenticate") is None, "the client is not asked for a password")
        contains(body.decode(), "refused legate's credentials (407): " + why)
        lg.stop()
    eq(o.stats()["by_path"].get("/w"), None)


@test
def parent_config_errors():
    d = hosts_dir()
    base = """
http = { upstreams = { tlsup = { servers = ( "127.0.0.1:1" ); tls = true; }; };
  servers = ( { listen = "127.0.0.1:%d"; forward = { hosts_file = "%s/hosts"; %%s };
    routes = ( ); } ); };
""" % (free_port(), d)
    for rules, msg in (
            ('parents = ( { upstream = "nope"; } );', r"legate\.conf:\d+: parent rule: no upstream \"nope\""),
            ('parents = ( { domains = [ "x.test" ]; } );', r"legate\.conf:\d+: a parent rule needs 'upstream'"),
            ('parents = ( { upstream = "tlsup"; login = "nocolon"; } );',
             r"legate\.conf:\d+: 'login' is \"user:password\""),
            ('parents = ( { upstream = "tlsup"; } );', r"legate\.conf:\d+: parent rule: upstream \"tlsup\" "
                                                      r"must speak plain HTTP/1\.1")):
        rc, out = check_config(base % rules)
        ok(rc != 0, "legate -t fails for %s" % rules)
        ok(re.search(msg, out), "%s: %s" % (msg, out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The forward proxy's destination keep-alive pool (reuse, per-destination
and total idle limits, idle timeout, a destination that closes a pooled
connection, no second copy of a POST, nothing reused after a badly framed
response), its port policies for CONNECT, SOCKS5 and plain HTTP
(connect_ports, socks_ports, http_ports), anonymous_domains, and the Squid
access.log format."""
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

NAMES = "origin.test other.test free.test update.test"


def fwd_conf(port, extra="", sport=None, log_format="forward"):
    d = tempfile.mkdtemp(prefix="legate-fwdpool-")
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 %s\n" % NAMES)
    socks = ', { address = "127.0.0.1:%d"; protocol = "socks5"; }' % sport if sport else ""
    return d, """
http = {
    log_format = "%s";
    servers = ( { listen = ( "127.0.0.1:%d"%s );
        forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                    %s };
        routes = ( ); } );
};
""" % (log_format, port, socks, d, extra)


def via(port, url, *args, **kw):
    return curl("-x", "http://127.0.0.1:%d" % port, url, *args, **kw)


def curl_many(port, urls, *args):
    """One curl, one client connection, several URLs: the bodies."""
    p = subprocess.run(["curl", "-sS", "-x", "http://127.0.0.1:%d" % port] + list(args) + urls,
                       capture_output=True, timeout=60)
    eq(p.returncode, 0, p.stderr)
    return p.stdout


@test
def reused_connections_and_idle_limits():
    o1, o2 = Origin("o1"), Origin("o2")
    port = free_port()
    _, c = fwd_conf(port, 'keepalive = 4; keepalive_total = 1;')
    Legate(c, workers=1)
    out = curl_many(port, ["http://origin.test:%d/a%d" % (o1.port, i) for i in range(30)])
    eq(out.count(b"origin o1"), 30)
    eq(o1.stats()["connections"], 1, "30 requests, one after another, over one connection")
    # a second client while the first connection is idle takes it again
    eq(via(port, "http://origin.test:%d/again" % o1.port)[0], 200)
    eq(o1.stats()["connections"], 1, "the idle connection was taken again")
    # another name on the same address is another destination
    eq(via(port, "http://other.test:%d/b" % o1.port)[0], 200)
    eq(o1.stats()["connections"], 2, "other.test gets its own connection")
    # keepalive_total = 1: with origin.test's connection idle, nothing more is kept
    eq(via(port, "http://origin.test:%d/c" % o2.port)[0], 200)
    wait_until(lambda: o2.stats()["active"] == 0, 10,
               what="o2's connection closed (keepalive_total reached)")
    # other.test's connection was closed the same way; origin.test's stays
    wait_until(lambda: o1.stats()["active"] == 1, 10, what="one idle connection left at o1")
    eq(via(port, "http://origin.test:%d/last" % o1.port)[0], 200)
    eq(o1.stats()["connections"], 2, "the idle connection kept was origin.test's")


@test
def pooled_connections_stay_with_their_forward_block():
    # a connection pooled for a block that allows private destinations
    # must not carry a request of one that does not (no lookup, no check)
    o = Origin("o")
    open_port, strict_port = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="legate-fwdpool-")
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 %s\n" % NAMES)
    block = """{ listen = "127.0.0.1:%%d"; forward = { allow_private = %%s; hosts_file = "%s/hosts";
                  resolvers = [ "127.0.0.1:9" ]; }; routes = ( ); }""" % d
    Legate("http = { servers = ( %s, %s ); };" % (block % (open_port, "true"),
                                                  block % (strict_port, "false")), workers=1)
    eq(via(open_port, "http://origin.test:%d/p" % o.port)[0], 200)
    eq(o.stats()["active"], 1, "pooled")
    st, _, body = via(strict_port, "http://origin.test:%d/p" % o.port, check=False)
    eq(st, 403)
    contains(body.decode(), "the destination is a loopback address")
    eq(o.stats()["by_path"].get("/p"), 1)


@test
def idle_timeout_closes_pooled_connections():
    o = Origin("o")
    port = free_port()
    _, c = fwd_conf(port, 'keepalive_timeout = "1s";')
    Legate(c, workers=1)
    eq(via(port, "http://origin.test:%d/t" % o.port)[0], 200)
    eq(o.stats()["active"], 1, "pooled after the answer")
    wait_until(lambda: o.stats()["active"] == 0, 10, what="closed after keepalive_timeout")


class Flaky:
    """An origin that answers the first request on each connection and then,
    per mode, closes the idle connection ("idle") or reads the next request
    and closes without a byte ("drop").  A request to /drop is never
    answered.  .seen lists (connection number, method, path)."""

    def __init__(self, mode):
        self.mode = mode
        self.seen = []
        self.lock = threading.Lock()
        self.srv = ScriptedServer(self.handle)
        self.port = self.srv.port

    def handle(self, s, peer):
        with self.lock:
            n = self.srv.connections
        buf = b""
        for k in range(2):
            while b"\r\n\r\n" not in buf:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
            head, _, buf = buf.partition(b"\r\n\r\n")
            line = head.split(b"\r\n")[0].decode().split()
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head + b"\r\n")
            need = int(m.group(1)) if m else 0
            while len(buf) < need:
                x = s.recv(65536)
                if not x:
                    return
                buf += x
            buf = buf[need:]
            with self.lock:
                self.seen.append((n, line[0], line[1]))
            if k == 1 or line[1] == "/drop":
                return          # the second request (or /drop): closed, nothing sent
            body = ("conn %d %s\n" % (n, line[1])).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            if self.mode == "idle":
                s.settimeout(0.2)
                try:
                    s.recv(1)   # (a request that raced the close is lost, as on the net)
                except socket.timeout:
                    pass
                return


@test
def destination_closing_an_idle_connection():
    f = Flaky("idle")
    port = free_port()
    _, c = fwd_conf(port)
    lg = Legate(c, workers=1)
    def legate_side_gone():
        # legate's end of the destination connection is closed (what stays
        # is the origin's TIME-WAIT, on the other end)
        out = subprocess.run(["ss", "-Htan", "dport = :%d" % f.port], capture_output=True,
                             text=True, timeout=10).stdout
        return all(l.startswith("TIME-WAIT") for l in out.splitlines())
    for i in range(3):
        st, _, body = via(port, "http://origin.test:%d/r%d" % (f.port, i))
        eq((st, body), (200, b"conn %d /r%d\n" % (i + 1, i)), "request %d" % i)
        # the close is seen while the connection is idle and it leaves the pool
        wait_until(legate_side_gone, 10, what="legate closed the dropped idle connection")
    eq([x[1:] for x in f.seen], [("GET", "/r0"), ("GET", "/r1"), ("GET", "/r2")],
       "each request sent once")
    eq(lg.alive(), True)


@test
def stale_connection_retried_once_and_never_a_post():
    f = Flaky("drop")
    port = free_port()
    _, c = fwd_conf(port)
    lg = Legate(c, workers=1)
    eq(via(port, "http://origin.test:%d/first" % f.port)[2], b"conn 1 /first\n")
    # the pooled connection takes the GET and closes without a byte: it goes
    # again, once, on a new connection
    st, _, body = via(port, "http://origin.test:%d/get" % f.port)
    eq((st, body), (200, b"conn 2 /get\n"))
    eq([x for x in f.seen if x[2] == "/get"], [(1, "GET", "/get"), (2, "GET", "/get")])
    # connection 2 is idle in the pool now, but a POST never takes a reused one
    st, _, body = via(port, "http://origin.test:%d/post" % f.port, "-d", "x=1")
    eq((st, body), (200, b"conn 3 /post\n"), "the POST went on a new connection")
    eq([x for x in f.seen if x[2] == "/post"], [(3, "POST", "/post")])
    # a POST whose connection ends unanswered is a 502, sent once
    st, _, _ = via(port, "http://origin.test:%d/drop" % f.port, "-d", "x=2", check=False)
    eq(st, 502)
    eq([x[1:] for x in f.seen if x[2] == "/drop"], [("POST", "/drop")], "no second POST")
    # a GET on the pooled connection (3) that ends unanswered goes again
    # once, on a new connection (5), and no more when that one fails too
    before = len(f.seen)
    st, _, _ = via(port, "http://origin.test:%d/drop" % f.port, check=False)
    eq(st, 502)
    eq(f.seen[before:], [(3, "GET", "/drop"), (5, "GET", "/drop")], "sent twice, not more")
    lg.allow_log(r"upstream prematurely closed|upstream .* (closed|failed|reset)")


@test
def nothing_reused_after_a_badly_framed_response():
    # the origin sends two bytes more than its Content-Length: the connection
    # holds bytes of nothing, so it must not carry the next request
    conns = []

    def handler(s, peer):
        conns.append(peer)
        while True:
            head = read_request_head(s)
            if not head:
                return
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nXX")

    srv = ScriptedServer(handler)
    port = free_port()
    _, c = fwd_conf(port)
    Legate(c, workers=1)
    for i in range(3):
        st, _, body = via(port, "http://origin.test:%d/x%d" % (srv.port, i))
        eq((st, body), (200, b"ok\n"))
    eq(srv.connections, 3, "a new connection each time")


def socks_connect(sport, host, port):
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    s.sendall(b"\x05\x01\x00")
    eq(s.recv(2), b"\x05\x00")
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", port))
    r = b""
    while len(r) < 10:
        x = s.recv(10 - len(r))
        if not x:
            break
        r += x
    s.close()
    return r[1] if len(r) >= 2 else "closed"


@test
def port_policies_for_connect_socks_and_http():
    o = Origin("o")
    port, sport = free_port(), free_port()
    _, c = fwd_conf(port, "", sport=sport)
    lg = Legate(c, workers=1)
    # defaults: CONNECT only to 443 (SSL_ports), HTTP and SOCKS5 to Safe_ports
    with Conn(port) as cn:
        cn.send(b"CONNECT origin.test:%d HTTP/1.1\r\nHost: origin.test:%d\r\n\r\n"
                % (o.port, o.port))
        r = cn.read_response("CONNECT")
    eq(r.status, 403)
    contains(r.body.decode(), "CONNECT to port %d is not allowed (connect_ports)" % o.port)
    eq(via(port, "http://origin.test:%d/h" % o.port)[0], 200, "HTTP to an unregistered port")
    st, _, body = via(port, "http://origin.test:25/", check=False)
    eq(st, 403)
    contains(body.decode(), "a request to port 25 is not allowed (http_ports)")
    eq(socks_connect(sport, "origin.test", o.port), 0, "SOCKS5 to a high port")
    eq(socks_connect(sport, "origin.test", 554), 2, "SOCKS5 to 554 is not in Safe_ports")
    wait_until(lambda: "SOCKS5 CONNECT to port 554 is not allowed (socks_ports)" in
               open(lg.access_log).read(), 5, what="the reason in the forward log")
    # each policy on its own
    port2, sport2 = free_port(), free_port()
    _, c = fwd_conf(port2, 'connect_ports = "%d"; socks_ports = "554"; http_ports = "80";'
                    % o.port, sport=sport2)
    Legate(c, workers=1)
    st, _, body = curl("-p", "-x", "http://127.0.0.1:%d" % port2,
                       "http://origin.test:%d/t" % o.port)
    eq((st, body), (200, b"origin o /t\n"), "CONNECT to the port connect_ports names")
    eq(socks_connect(sport2, "origin.test", o.port), 2, "SOCKS5 follows socks_ports only")
    eq(via(port2, "http://origin.test:%d/h" % o.port, check=False)[0], 403)
    # a bad list is a FILE:LINE error
    _, c = fwd_conf(free_port(), 'socks_ports = "1-99999";')
    rc, out = check_config(c)
    ok(rc != 0, "legate -t fails")
    ok(re.search(r"legate\.conf:\d+: 'socks_ports'", out), out)


@test
def user_rule_socks_ports():
    o = Origin("o")
    d = tempfile.mkdtemp(prefix="legate-fwdpool-")
    h = subprocess.run(["openssl", "passwd", "-6", "pw"], capture_output=True, check=True,
                       timeout=30).stdout.decode().strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("ann:%s\nbob:%s\n" % (h, h))
    port, sport = free_port(), free_port()
    _, c = fwd_conf(port, 'auth_file = "%s/htpasswd"; connect_ports = "%d"; user_rules = ( '
                    '{ users = [ "ann" ]; socks_ports = "554"; } );' % (d, o.port), sport=sport)
    Legate(c, workers=1)

    def socks_as(user):
        s = socket.create_connection(("127.0.0.1", sport), timeout=10)
        s.sendall(b"\x05\x01\x02")
        eq(s.recv(2), b"\x05\x02")
        s.sendall(b"\x01" + bytes([len(user)]) + user + b"\x02pw")
        eq(s.recv(2), b"\x01\x00")
        s.sendall(b"\x05\x01\x00\x03\x0borigin.test" + struct.pack(">H", o.port))
        r = s.recv(10)
        s.close()
        return r[1]
    eq(socks_as(b"bob"), 0, "bob: the server's socks_ports")
    eq(socks_as(b"ann"), 2, "ann: her rule's socks_ports only")
    st, _, _ = curl("-p", "-x", "http://ann:pw@127.0.0.1:%d" % port, "http://origin.test:%d/c" % o.port)
    eq(st, 200, "ann's CONNECT follows connect_ports, not her socks_ports")


@test
def anonymous_domains_allowlist():
    o = Origin("o")
    port = free_port()
    _, c = fwd_conf(port, 'anonymous_domains = [ "free.test" ];')
    Legate(c, workers=1)
    eq(via(port, "http://free.test:%d/a" % o.port)[0], 200)
    eq(via(port, "http://www.free.test:%d/a" % o.port, check=False)[0], 502,
       "a subdomain is allowed (and unknown to the hosts file)")
    st, _, body = via(port, "http://origin.test:%d/a" % o.port, check=False)
    eq(st, 403)
    contains(body.decode(), "origin.test is not in anonymous_domains")
    # with an auth_file: anonymous clients reach only those, signed-in ones anything
    d = tempfile.mkdtemp(prefix="legate-fwdpool-")
    h = subprocess.run(["openssl", "passwd", "-6", "pw"], capture_output=True, check=True,
                       timeout=30).stdout.decode().strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("ann:%s\n" % h)
    port2 = free_port()
    _, c = fwd_conf(port2, 'anonymous_domains = [ "update.test" ]; auth_file = "%s/htpasswd";' % d)
    Legate(c, workers=1)
    eq(via(port2, "http://update.test:%d/u" % o.port)[0], 200, "no sign-in for update.test")
    eq(via(port2, "http://origin.test:%d/u" % o.port, check=False)[0], 407)
    eq(curl("-x", "http://ann:pw@127.0.0.1:%d" % port2, "http://origin.test:%d/u" % o.port)[0], 200)
    eq(curl("-x", "http://ann:bad@127.0.0.1:%d" % port2, "http://origin.test:%d/u" % o.port,
            check=False)[0], 407)
    eq(o.stats()["by_path"].get("/u"), 2)


SQUID_RE = re.compile(r"^(\d+)\.(\d{3}) +(\d+) (\S+) ([A-Z_]+)/(\d{3}) (\d+) (\S+) (\S+) (\S+) "
                      r"([A-Z_]+)/(\S+) (\S+)$")


@test
def squid_access_log_format():
    o = Origin("o")
    port = free_port()
    _, c = fwd_conf(port, 'connect_ports = "%d"; block_domains = [ "other.test" ];' % o.port,
                    log_format="squid")
    lg = Legate(c, workers=1)
    eq(via(port, "http://origin.test:%d/s?size=1000" % o.port)[0], 200)
    eq(via(port, "http://other.test:%d/no" % o.port, check=False)[0], 403)
    eq(curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/t" % o.port)[0], 200)

    def lines():
        ls = open(lg.access_log).read().splitlines()
        return ls if len(ls) >= 3 else None
    ls = wait_until(lines, 10, what="three log lines")
    got = [SQUID_RE.match(x) for x in ls]
    ok(all(got), "every line in Squid's format: %r" % ls)
    m = {g.group(8) + " " + g.group(9): g for g in got}
    g = m["GET http://origin.test:%d/s?size=1000" % o.port]
    eq((g.group(4), g.group(5), g.group(6), g.group(10), g.group(11), g.group(12)),
       ("127.0.0.1", "TCP_MISS", "200", "-", "HIER_DIRECT", "127.0.0.1"))
    ok(int(g.group(7)) > 1000, "bytes sent include the head")
    g = m["GET http://other.test:%d/no" % o.port]
    eq((g.group(5), g.group(6), g.group(11), g.group(12)), ("TCP_DENIED", "403", "HIER_NONE", "-"))
    g = m["CONNECT origin.test:%d" % o.port]
    eq((g.group(5), g.group(6), g.group(11)), ("TCP_TUNNEL", "200", "HIER_DIRECT"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The PROXY protocol (v1 and v2) on a listener: the client address an L4
balancer saw becomes the client address (logs, X-Forwarded-For, access
rules), before HTTP, TLS or SOCKS5."""
import json
import subprocess
import tempfile
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, dst, sport, dport, fam=socket.AF_INET, cmd=1):
    if fam == socket.AF_INET:
        addrs = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack(">HH", sport, dport)
        famb = 0x11
    else:
        addrs = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack(">HH", sport, dport)
        famb = 0x21
    return SIG + bytes([0x20 | cmd, famb]) + struct.pack(">H", len(addrs)) + addrs


def conf(port, o, extra=""):
    return """
http = { log_format = "$remote_addr $request_uri";
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( { listen = ( { address = "127.0.0.1:%d"; proxy_protocol = true; %s } );
    routes = ( { prefix = "/"; proxy_pass = "app"; } ); } ); };
""" % (o.address, port, extra)


def xff_of(raw):
    body = raw.split(b"\r\n\r\n", 1)[1]
    return dict(json.loads(body)["headers"]).get("X-Forwarded-For")


@test
def v1_and_v2_set_the_client_address():
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    req = b"GET /a?echo=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = http_raw(port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n" + req, timeout=10)
    eq(xff_of(raw), "203.0.113.7", "v1 TCP4")
    raw = http_raw(port, b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n" + req, timeout=10)
    eq(xff_of(raw), "2001:db8::7", "v1 TCP6")
    raw = http_raw(port, v2("198.51.100.9", "10.0.0.1", 40000, 80) + req, timeout=10)
    eq(xff_of(raw), "198.51.100.9", "v2 TCP4")
    raw = http_raw(port, v2("2001:db8::9", "2001:db8::1", 40000, 80, socket.AF_INET6) + req, timeout=10)
    eq(xff_of(raw), "2001:db8::9", "v2 TCP6")
    raw = http_raw(port, v2("0.0.0.0", "0.0.0.0", 0, 0, cmd=0) + req, timeout=10)
    eq(xff_of(raw), "127.0.0.1", "v2 LOCAL keeps the connection's own address")
    wait_until(lambda: "203.0.113.7 /a?echo=1" in open(lg.access_log).read(), 5,
               what="the address in the access log")


@test
def hostile_headers_are_refused_and_the_worker_goes_on():
    """Found by t/fuzz/fuzz_proxyproto.c: a v1 line whose CRLF comes after
    the longest allowed line overran a stack buffer; a v2 PROXY header of
    family UNSPEC wiped the connection's address."""
    o = Origin("o")
    port = free_port()
    lg = Legate(conf(port, o), workers=1)
    req = b"GET /a?echo=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    long_line = b"PROXY TCP4 " + b"1" * 300 + b" 10.0.0.1 51000 80\r\n"
    eq(http_raw(port, long_line + req, timeout=5), b"", "a too long v1 line: closed")
    unspec = SIG + bytes([0x21, 0x00]) + struct.pack(">H", 0)
    raw = http_raw(port, unspec + req, timeout=10)
    eq(xff_of(raw), "127.0.0.1", "v2 PROXY with AF_UNSPEC keeps the connection's address")
    raw = http_raw(port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n" + req, timeout=10)
    eq(xff_of(raw), "203.0.113.7", "the worker still serves")
    ok("exited on signal" not in lg.log_text(), "no worker died")


@test
def without_a_header_the_connection_is_closed():
    o = Origin("o")
    port = free_port()
    Legate(conf(port, o), workers=1)
    raw = http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    eq(raw, b"", "closed, nothing proxied")
    eq(o.stats()["requests"], 0)


@test
def before_tls_with_curl():
    o = Origin("o")
    d = tempfile.mkdtemp(prefix="legate-certs-")
    subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"), d], check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    Legate(conf(port, o, 'tls = true;').replace(
        "routes", 'tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };\n    routes'
        % (d, d)), workers=1)
    st, _, body = curl("--haproxy-protocol", "--cacert", os.path.join(d, "ca.pem"),
                       "https://localhost:%d/t?echo=1" % port)
    eq(st, 200)
    eq(dict(json.loads(body)["headers"]).get("X-Forwarded-For"), "127.0.0.1")


if __name__ == "__main__":
    main()

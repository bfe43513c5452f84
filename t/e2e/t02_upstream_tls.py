#!/usr/bin/env python3
"""TLS towards upstreams: verification against a CA (on by default), SNI and
the name checked, failures answered 502 and logged, client certificates for
upstream mutual TLS, session resumption across connections."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

CERTS = {}


def certs(name):
    if name not in CERTS:
        if shutil.which("openssl") is None:
            raise SkipFile("openssl not installed")
        d = tempfile.mkdtemp(prefix="legate-certs-")
        subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"), d], check=True,
                       capture_output=True, timeout=120)
        CERTS[name] = d
    return CERTS[name]


def https_origin(o, extra=""):
    """A legate TLS listener in front of origin o: the HTTPS upstream."""
    c = certs("a")
    port = free_port()
    lg = Legate("""
via_name = "https-origin";     # two legates on one host: their own names, or a loop is seen
http = { log_format = "$ssl_session_reused $ssl_client_s_dn";
  upstreams = { o = { servers = ( "%s" ); }; };
  servers = ( { listen = ( { address = "127.0.0.1:%d"; tls = true; } );
    tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };
    %s
    routes = ( { prefix = "/"; proxy_pass = "o"; } ); } ); };
""" % (o.address, port, c, c, extra), workers=1)
    return port, lg


def front(tls_port, upstream_extra):
    port = free_port()
    lg = Legate("""
http = {
  upstreams = { s = { servers = ( "127.0.0.1:%d" ); tls = true; %s }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "s"; } ); } ); };
""" % (tls_port, upstream_extra, port), workers=1)
    return port, lg


@test
def verified_tls_to_the_upstream():
    o = Origin("o")
    tport, _ = https_origin(o)
    port, _ = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost";' % certs("a"))
    r = request(port, target="/v?size=200000")
    eq((r.status, len(r.body)), (200, 200000))
    for i in range(5):
        eq(request(port, target="/k%d" % i).status, 200, "pooled TLS connections")


@test
def verification_failures_give_502_and_a_log_line():
    o = Origin("o")
    tport, _ = https_origin(o)
    port, lg = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost";' % certs("b"))
    lg.allow_log(r"TLS handshake with upstream failed")
    eq(request(port, target="/x").status, 502, "a certificate from another CA")
    lg.wait_log(r"TLS handshake with upstream failed: .*(certificate|issuer)", 5)
    port2, lg2 = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "wrong.example";' % certs("a"))
    lg2.allow_log(r"TLS handshake with upstream failed")
    eq(request(port2, target="/x").status, 502, "a name the certificate does not carry")
    lg2.wait_log(r"TLS handshake with upstream failed: .*hostname mismatch", 5)
    port3, _ = front(tport, 'tls_verify = false;')
    eq(request(port3, target="/x").status, 200, "tls_verify = false accepts it")


@test
def system_trust_store_by_default():
    o = Origin("o")
    tport, _ = https_origin(o)
    port, lg = front(tport, 'tls_server_name = "localhost";')
    lg.allow_log(r"TLS handshake with upstream failed")
    eq(request(port, target="/x").status, 502, "the test CA is not in the system store")


@test
def upstream_mutual_tls():
    o = Origin("o")
    a = certs("a")
    tport, olg = https_origin(o, 'tls_client_ca = "%s/ca.pem"; tls_verify_client = "on";' % a)
    port, lg = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost"; '
                            'tls_certificate = "%s/client.pem"; tls_key = "%s/client.key";' % (a, a, a))
    eq(request(port, target="/m").status, 200)
    wait_until(lambda: "CN=legate test client" in open(olg.access_log).read(), 5,
               what="the client certificate seen by the upstream")
    port2, lg2 = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost";' % a)
    lg2.allow_log(r"TLS handshake with upstream failed|prematurely closed|recv\(\) failed")
    eq(request(port2, target="/m").status, 502, "without a client certificate")


@test
def sessions_are_resumed():
    o = Origin("o")
    tport, olg = https_origin(o)
    port, _ = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost"; keepalive = 0;'
                    % certs("a"))
    for i in range(4):
        eq(request(port, target="/s%d" % i).status, 200)
    wait_until(lambda: len(open(olg.access_log).read().split("\n")) > 4, 5, what="log lines")
    marks = [l.split()[0] for l in open(olg.access_log).read().split("\n") if l.strip()]
    eq(marks[0], ".", "the first connection is a full handshake")
    ok("r" in marks[1:], "later connections resume: %r" % marks)


@test(timeout=60)
def health_checks_speak_tls_and_verify():
    o = Origin("o")
    tport, olg = https_origin(o)
    hc = 'health_check = { interval = "200ms"; timeout = "1s"; path = "/health"; rise = 1; fall = 1; };'
    port, lg = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost"; %s'
                     % (certs("a"), hc))
    wait_until(lambda: o.stats()["by_path"].get("/health", 0) >= 3, 10,
               what="probes reaching the origin through the TLS upstream")
    eq(request(port, target="/h").status, 200, "the server stays in rotation")
    ok("is down" not in lg.log_text(), "no false alarm: %s" % lg.log_text()[-500:])
    # a certificate the check cannot verify takes the server out
    port2, lg2 = front(tport, 'tls_ca = "%s/ca.pem"; tls_server_name = "localhost"; %s'
                       % (certs("b"), hc))
    lg2.allow_log(r"is down|TLS handshake with upstream failed|no live upstream|all .* down")
    lg2.wait_log(r"server 127\.0\.0\.1:%d is down: health check failed 1 times "
                 r"\(certificate verification failed\)" % tport, 10)


@test
def config_errors():
    rc, err = check_config("""
http = { upstreams = { s = { servers = ( "127.0.0.1:1" ); tls = true; tls_ca = "/nonexistent/ca.pem"; }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "s"; } ); } ); };
""" % free_port())
    eq(rc, 1)
    ok(re.search(r"legate\.conf:\d+: upstream \"s\": cannot load 'tls_ca'", err), err)


if __name__ == "__main__":
    main()

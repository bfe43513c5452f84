#!/usr/bin/env python3
"""TLS termination: certificates, SNI, ALPN, RSA/ECDSA choice, resumption
across workers with shared ticket keys and their rotation, mutual TLS,
handshake timeout, HSTS and redirects, reload of certificates, -t errors,
and a scan for weak protocols and ciphers."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
MKCERT = os.path.join(HERE, "..", "..", "scripts", "mkcert")
CERTS = None


def certs():
    """One CA and set of certificates for the whole file."""
    global CERTS
    if CERTS is None:
        if shutil.which("openssl") is None:
            raise SkipFile("openssl not installed")
        d = tempfile.mkdtemp(prefix="legate-certs-")
        subprocess.run(["sh", MKCERT, d], check=True, capture_output=True, timeout=120)
        CERTS = d
    return CERTS


def tls_conf(port, origin, extra_server="", extra_global="", second=""):
    c = certs()
    return """
%s
http = {
    upstreams = { app = { servers = ( "%s" ); }; };
    servers = (
      { listen = ( { address = "127.0.0.1:%d"; tls = true; } );
        tls_certificates = ( { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; },
                             { cert = "%s/server-rsa.pem"; key = "%s/server-rsa.key"; } );
        %s
        routes = ( { prefix = "/"; proxy_pass = "app"; } ); }
      %s
    );
};
""" % (extra_global, origin.address, port, c, c, c, c, extra_server, second)


def s_client(port, *args, data=b"", timeout=15):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def https(port, path="/", *args, name="localhost"):
    return curl("--cacert", os.path.join(certs(), "ca.pem"),
                "--resolve", "%s:%d:127.0.0.1" % (name, port),
                "https://%s:%d%s" % (name, port, path), *args)


@test
def proxies_over_tls_with_forwarding_headers_and_hsts():
    o = Origin("o")
    port = free_port()
    Legate(tls_conf(port, o, 'hsts = "max-age=63072000";'), workers=2)
    st, hs, body = https(port, "/x?echo=1")
    eq(st, 200)
    j = __import__("json").loads(body)
    ok(["X-Forwarded-Proto", "https"] in j["headers"], "X-Forwarded-Proto: https upstream")
    eq(hs.get("Strict-Transport-Security"), "max-age=63072000")
    st, hs, body = https(port, "/big?size=300000")
    eq((st, len(body)), (200, 300000), "a large body over TLS")


@test
def sni_picks_the_server_and_its_certificate():
    o = Origin("o")
    port = free_port()
    c = certs()
    other = """, { listen = ( { address = "127.0.0.1:%d"; tls = true; } ); server_name = "other.test";
        tls_certificates = { cert = "%s/other.pem"; key = "%s/other.key"; };
        routes = ( { prefix = "/"; return = 200; body = "other\\n"; } ); }""" % (port, c, c)
    Legate(tls_conf(port, o, second=other), workers=1)
    st, _, body = https(port, "/", name="other.test")
    eq((st, body), (200, b"other\n"), "SNI other.test: its certificate verifies, its server answers")
    out = s_client(port, "-servername", "other.test")
    contains(out, "CN = other.test")
    out = s_client(port, "-servername", "unknown.test")
    contains(out, "CN = localhost", "an unknown name gets the default server's certificate")


@test
def rsa_or_ecdsa_by_client_capability_and_alpn():
    o = Origin("o")
    port = free_port()
    Legate(tls_conf(port, o), workers=1)
    out = s_client(port, "-servername", "localhost", "-tls1_2", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
    contains(out, "Server public key is 2048 bit", "an RSA-only client gets the RSA certificate")
    out = s_client(port, "-servername", "localhost")
    contains(out, "Server public key is 256 bit", "others get ECDSA P-256")
    out = s_client(port, "-alpn", "h2,http/1.1")
    contains(out, "ALPN protocol: http/1.1")


def session_file(port):
    f = os.path.join(tempfile.mkdtemp(prefix="legate-sess-"), "s.pem")
    s_client(port, "-servername", "localhost", "-sess_out", f, "-ign_eof",
             data=b"GET / HTTP/1.0\r\n\r\n")
    ok(os.path.exists(f), "a session was saved")
    return f


@test(timeout=120)
def resumption_across_workers():
    o = Origin("o")
    port = free_port()
    lg = Legate(tls_conf(port, o, extra_global="",
                         extra_server='log_format = "$pid $ssl_session_reused $ssl_protocol";'),
                workers=2)
    f = session_file(port)
    for i in range(12):
        out = s_client(port, "-servername", "localhost", "-sess_in", f, "-ign_eof",
                       data=b"GET /r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        contains(out, "Reused, TLSv1.3", "connection %d resumed" % i)
    lines = []
    # the first request (the session saved) and the 12 resumed ones: 13 lines
    wait_until(lambda: open(lg.access_log).read().count("\n") >= 13, 5, what="access log lines")
    for line in open(lg.access_log).read().split("\n"):
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "r":
            lines.append(parts[0])
    ok(len(lines) >= 12, "resumed requests logged: %d" % len(lines))
    ok(len(set(lines)) >= 2, "tickets issued by one worker resumed by another: pids %r" % set(lines))


@test(timeout=120)
def tls12_session_ids_shared_by_workers_and_kept_per_server():
    o = Origin("o")
    port = free_port()
    c = certs()
    other = """, { listen = ( { address = "127.0.0.1:%d"; tls = true; } ); server_name = "other.test";
        tls_certificates = { cert = "%s/other.pem"; key = "%s/other.key"; };
        routes = ( { prefix = "/"; return = 200; body = "other $pid\\n"; } ); }""" % (port, c, c)
    lg = Legate(tls_conf(port, o, extra_server='log_format = "$pid $ssl_session_reused $ssl_protocol";',
                         second=other), workers=2)
    f = os.path.join(tempfile.mkdtemp(prefix="legate-sess-"), "s.pem")
    tls12 = ("-tls1_2", "-no_ticket", "-servername", "localhost")
    out = s_client(port, *tls12, "-sess_out", f, "-ign_eof", data=b"GET / HTTP/1.0\r\n\r\n")
    contains(out, "New, TLSv1.2")
    ok("TLS session ticket:" not in out, "no ticket: resumption needs the session cache")
    for i in range(12):
        out = s_client(port, *tls12, "-sess_in", f, "-ign_eof",
                       data=b"GET /r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        contains(out, "Reused, TLSv1.2", "connection %d resumed by session ID" % i)
    wait_until(lambda: open(lg.access_log).read().count(" r TLSv1.2") >= 12, 5,
               what="12 resumed requests in the access log")
    pids = {l.split()[0] for l in open(lg.access_log).read().split("\n") if " r TLSv1.2" in l}
    ok(len(pids) >= 2, "a session made by one worker resumed by another: pids %r" % pids)
    # the same session offered to another server (SNI) is not resumed there
    out = s_client(port, "-tls1_2", "-no_ticket", "-servername", "other.test", "-sess_in", f)
    contains(out, "New, TLSv1.2", "a session of localhost does not skip other.test's handshake")
    t13 = session_file(port)            # a TLS 1.3 ticket: the same rule
    contains(s_client(port, "-servername", "localhost", "-sess_in", t13), "Reused, TLSv1.3")
    contains(s_client(port, "-servername", "other.test", "-sess_in", t13), "New, TLSv1.3",
             "a ticket of localhost does not resume on other.test")
    # and with the shared cache off, each worker keeps its own
    port2 = free_port()
    Legate(tls_conf(port2, o, extra_global='tls_session_cache = 0;'), workers=1)
    out = s_client(port2, *tls12, "-sess_out", f, "-ign_eof", data=b"GET / HTTP/1.0\r\n\r\n")
    out = s_client(port2, *tls12, "-sess_in", f)
    contains(out, "Reused, TLSv1.2", "one worker: OpenSSL's own cache")


@test(timeout=120)
def ticket_keys_rotate():
    o = Origin("o")
    port = free_port()
    lg = Legate("error_log_level = \"info\";\n" + tls_conf(port, o, extra_global='tls_ticket_rotate = "1s";'),
                workers=2)
    f = session_file(port)
    def rotations():
        with open(lg.error_log) as fh:     # (log_text() also holds the -F copy)
            return len(re.findall(r"ticket key rotated", fh.read()))
    wait_until(lambda: rotations() >= 1, 10, what="a rotation")
    out = s_client(port, "-servername", "localhost", "-sess_in", f)
    contains(out, "Reused", "one rotation later the previous key still decrypts")
    # three keys are kept: after three more rotations the ticket is refused
    wait_until(lambda: rotations() >= 4, 15, what="four rotations")
    out = s_client(port, "-servername", "localhost", "-sess_in", f)
    contains(out, "New, TLSv1.3", "an expired ticket key means a full handshake")


@test
def mutual_tls_required_and_passed_upstream():
    o = Origin("o")
    port = free_port()
    c = certs()
    Legate(tls_conf(port, o, """tls_client_ca = "%s/ca.pem"; tls_verify_client = "on";
        add_request_headers = { X-Client-DN = "$ssl_client_s_dn"; X-Client-FP = "$ssl_client_fingerprint";
                                X-Client-Verify = "$ssl_client_verify"; };""" % c), workers=1)
    st, _, _ = curl("--cacert", os.path.join(c, "ca.pem"), "https://localhost:%d/" % port, check=False)
    ok(st != 200, "without a client certificate the handshake is refused")
    st, _, body = https(port, "/m?echo=1", "--cert", os.path.join(c, "client.pem"),
                        "--key", os.path.join(c, "client.key"))
    eq(st, 200)
    hs = dict(__import__("json").loads(body)["headers"])
    contains(hs.get("X-Client-DN", ""), "CN=legate test client")
    eq(len(hs.get("X-Client-FP", "")), 64, "a SHA-256 fingerprint in hex")
    eq(hs.get("X-Client-Verify"), "SUCCESS")


@test
def handshake_timeout_and_garbage():
    o = Origin("o")
    port = free_port()
    lg = Legate(tls_conf(port, o, 'tls_handshake_timeout = "1s";'), workers=1)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01")        # the start of a ClientHello, then nothing
    t0 = time.monotonic()
    try:
        data = s.recv(100)
    except OSError:
        data = b""
    waited = time.monotonic() - t0
    eq(data, b"", "closed without an answer")
    ok(0.8 < waited < 5, "after the handshake timeout (%.1fs)" % waited)
    s.close()
    raw = http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    ok(not raw.startswith(b"HTTP/"), "plain HTTP on a TLS port gets no HTTP answer")
    st, _, _ = https(port, "/after")
    eq(st, 200, "the worker is fine afterwards")


@test
def redirect_http_to_https():
    o = Origin("o")
    port, hport = free_port(), free_port()
    second = """, { listen = "127.0.0.1:%d";
        routes = ( { prefix = "/"; return = 301; location = "https://$host:%d$request_uri"; } ); }""" % (hport, port)
    Legate(tls_conf(port, o, second=second), workers=1)
    r = request(hport, target="/a/b?c=1", host="localhost")
    eq(r.status, 301)
    eq(r.headers.get("Location"), "https://localhost:%d/a/b?c=1" % port)


@test(timeout=90)
def certificate_reload_keeps_connections():
    o = Origin("o")
    port = free_port()
    c = certs()
    lg = Legate(tls_conf(port, o), workers=2)
    result = {}

    def slow():
        result["r"] = https(port, "/slow?delay=2500")
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_until(lambda: o.stats()["active"] >= 1, 10, what="the slow request in flight")
    new = tls_conf(port, o).replace("server-ecdsa", "other").replace("server-rsa", "other")
    lg.reload(new)
    t.join(20)
    eq(result["r"][0], 200, "the request in flight over the old certificate completed")
    out = s_client(port, "-servername", "localhost")
    contains(out, "CN = other.test", "new connections get the new certificate")


@test
def config_errors_name_file_and_line():
    o = Origin("o")
    port = free_port()
    c = certs()
    text = tls_conf(port, o).replace("server-ecdsa.key", "missing.key")
    rc, err = check_config(text)
    eq(rc, 1)
    ok(re.search(r"legate\.conf:\d+: cannot load key \".*missing\.key\"", err), err)
    text = tls_conf(port, o).replace("server-ecdsa.key", "server-rsa.key")
    rc, err = check_config(text)
    eq(rc, 1)
    ok(re.search(r"legate\.conf:\d+: .*(does not match|cannot load key)", err), err)
    rc, err = check_config(tls_conf(port, o, 'tls_protocols = "SSLv3";'))
    eq(rc, 1)
    contains(err, "'tls_protocols' must list TLSv1.2 and/or TLSv1.3")
    rc, err = check_config(tls_conf(port, o, extra_global='tls_session_cache = "1k";'))
    eq(rc, 1)
    contains(err, "'tls_session_cache' must be 0 (off) or at least 16k")


@test(timeout=120)
def scan_finds_no_weak_protocol_or_cipher():
    if shutil.which("sslscan") is None:
        skip("sslscan not installed")
    o = Origin("o")
    port = free_port()
    Legate(tls_conf(port, o), workers=1)
    p = subprocess.run(["sslscan", "--no-colour", "127.0.0.1:%d" % port], capture_output=True,
                       timeout=100)
    out = p.stdout.decode(errors="replace")
    for proto in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        ok(re.search(r"^%s\s+disabled" % re.escape(proto), out, re.M), "%s disabled" % proto)
    accepted = [l for l in out.splitlines() if l.startswith(("Accepted", "Preferred"))]
    ok(accepted, "some cipher accepted")
    for l in accepted:
        for weak in ("RC4", "3DES", "DES-CBC", "NULL", "EXP", "MD5", "CBC-SHA ", "AES128-SHA ",
                     "AES256-SHA "):
            ok(weak not in l + " ", "weak cipher accepted: %s" % l)


if __name__ == "__main__":
    main()

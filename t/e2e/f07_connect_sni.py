#!/usr/bin/env python3
"""connect_sni: the forward proxy reads the TLS ClientHello inside a CONNECT
(and SOCKS5 CONNECT) tunnel without decrypting it, judges its server name by
the domain rules (check), wants it to be the CONNECT host (match), refuses
or relays a tunnel without one (connect_sni_missing, connect_sni_timeout),
logs it ($tunnel_sni, $blocked, $tunnel_end) and relays every byte read
unchanged once allowed."""
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

CERTS = os.path.join(REPO, "conf", "examples", "certs")
NAMES = ("ok.test", "bad.test", "other.test", "sub.ok.test")
LOGF = '$request $status sni=$tunnel_sni ended=\\"$tunnel_end\\" blocked=\\"$blocked\\"'


def conf(port, d, extra="", sport=None, listen_tls=False):
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 %s\n" % " ".join(NAMES))
    socks = ', { address = "127.0.0.1:%d"; protocol = "socks5"; }' % sport if sport else ""
    lis = '"127.0.0.1:%d"' % port
    tls = ""
    if listen_tls:              # a secure web proxy: TLS to legate, the tunnel inside it
        lis = '{ address = "127.0.0.1:%d"; tls = true; }' % port
        tls = 'tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };' \
              % (CERTS, CERTS)
    return """
http = {
    log_format = "%s";
    servers = ( { listen = ( %s%s ); %s
        forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                    connect_ports = "1-65535"; block_domains = [ "bad.test" ]; %s };
        routes = ( ); } );
};
""" % (LOGF, lis, socks, tls, d, extra)


def alog(lg, regex, what):
    """Wait for a line of the access log matching regex."""
    r = re.compile(regex)

    def seen():
        try:
            with open(lg.access_log, errors="replace") as f:
                return r.search(f.read())
        except FileNotFoundError:
            return None
    return wait_until(seen, 10, what=what)


def tls_origin():
    """A TLS origin with the shipped certificate (localhost, *.test): answers
    one HTTP request with the server name its client asked for."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CERTS, "server-rsa.pem"), os.path.join(CERTS, "server-rsa.key"))
    names = []
    ctx.sni_callback = lambda so, name, c: names.append(name) and None

    def handler(s, peer):
        t = ctx.wrap_socket(s, server_side=True)
        t.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            c = t.recv(4096)
            if not c:
                return
            data += c
        body = ("tls origin %s\n" % (names[-1] if names else "-")).encode()
        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (len(body), body))
        t.close()
    return ScriptedServer(handler)


def recording_origin():
    """A plain TCP origin keeping every byte of each connection (to EOF)."""
    got, first = [], []

    def handler(s, peer):
        data = b""
        while len(data) < 1 << 20:
            c = s.recv(65536)
            if not c:
                break
            if not data:
                first.append(time.monotonic())
            data += c
        got.append(data)
        s.sendall(b"thanks")
    srv = ScriptedServer(handler)
    srv.got, srv.first = got, first
    return srv


def connect(port, host, oport):
    """A raw CONNECT: the socket once the 200 came (asserted)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host, oport, host, oport)).encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        c = s.recv(1)
        if not c:
            break
        head += c
    ok(head.startswith(b"HTTP/1.1 200"), "CONNECT %s answered 200: %r" % (host, head[:40]))
    return s


def read_all(s, limit=1 << 20):
    data = b""
    try:
        while len(data) < limit:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except ConnectionResetError:
        pass
    return data


def s_client(port, connect_to, servername):
    p = subprocess.run(["openssl", "s_client", "-proxy", "127.0.0.1:%d" % port, "-connect",
                        connect_to, "-servername", servername, "-CAfile",
                        os.path.join(CERTS, "ca.pem"), "-verify_return_error", "-ign_eof"],
                       input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode(errors="replace")


@test
def check_curl_allowed_s_client_blocked():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = tls_origin()
    port = free_port()
    lg = Legate(conf(port, d, 'connect_sni = "check";'), workers=1)
    st, _, body = curl("-x", "http://127.0.0.1:%d" % port, "-k",
                       "https://ok.test:%d/" % o.port)
    eq((st, body), (200, b"tls origin ok.test\n"), "an allowed SNI: spliced, verified end to end")
    alog(lg, r"CONNECT ok\.test:%d HTTP/1\.[01] 200 sni=ok\.test ended=\"closed\"" % o.port,
                what="the allowed tunnel logged with its SNI")
    # the CONNECT host is allowed, the name inside is not
    rc, out = s_client(port, "ok.test:%d" % o.port, "bad.test")
    ok(rc != 0 and "tls origin" not in out, "a blocked SNI: the tunnel closed (rc %d)" % rc)
    alog(lg, r"CONNECT ok\.test:%d HTTP/1\.[01] 200 sni=bad\.test ended=\"sni refused\" "
                r"blocked=\"the ClientHello's server name: bad\.test is blocked by block_domains"
                % o.port, what="the refusal and its reason in the access log")
    # check does not want the names equal: another allowed name passes
    rc, out = s_client(port, "ok.test:%d" % o.port, "other.test")
    ok("tls origin other.test" in out, "check: another allowed name goes through")


@test
def match_refuses_another_name():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = tls_origin()
    port = free_port()
    lg = Legate(conf(port, d, 'connect_sni = "match";'), workers=1)
    rc, out = s_client(port, "ok.test:%d" % o.port, "ok.test")
    ok("tls origin ok.test" in out, "match: the CONNECT host's own name passes")
    rc, out = s_client(port, "ok.test:%d" % o.port, "other.test")
    ok(rc != 0 and "tls origin" not in out, "match: another name is refused")
    alog(lg, r"sni=other\.test ended=\"sni refused\" blocked=\"the ClientHello's server name "
                r"other\.test is not the CONNECT host ok\.test \(connect_sni is match\)",
                what="the mismatch logged")
    rc, out = s_client(port, "ok.test:%d" % o.port, "sub.ok.test")
    ok(rc != 0 and "tls origin" not in out, "match: a subdomain of the CONNECT host is refused")
    st, _, body = curl("-x", "http://127.0.0.1:%d" % port, "-k",
                       "https://OK.test:%d/" % o.port)
    eq((st, body), (200, b"tls origin ok.test\n"), "match is case-insensitive (curl)")


@test
def bytes_relayed_unchanged_whole_and_byte_by_byte():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = recording_origin()
    port = free_port()
    lg = Legate(conf(port, d, 'connect_sni = "match";'), workers=1)
    hello = client_hello("ok.test")
    tail = b"after the hello \x00\xff" * 50
    # whole, with the bytes after it in the same write
    s = connect(port, "ok.test", o.port)
    s.sendall(hello + tail)
    s.shutdown(socket.SHUT_WR)
    eq(read_all(s), b"thanks", "the origin's answer through the tunnel")
    s.close()
    wait_until(lambda: len(o.got) >= 1, 10, what="the origin saw the tunnel end")
    eq(o.got[0], hello + tail, "every byte read for the gate went up unchanged")
    # one byte a segment: the reader waits for the whole hello
    s = connect(port, "ok.test", o.port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(hello)):
        s.send(hello[i:i + 1])
        if i % 8 == 0:
            time.sleep(0.002)   # separate segments, not one coalesced write
    s.sendall(tail)
    s.shutdown(socket.SHUT_WR)
    eq(read_all(s), b"thanks", "byte by byte: the origin answered")
    s.close()
    wait_until(lambda: len(o.got) >= 2, 10, what="the second tunnel reached the origin")
    eq(o.got[1], hello + tail, "a ClientHello sent a byte at a time, relayed whole")
    alog(lg, r"sni=ok\.test ended=\"closed\"", what="logged with the SNI")
    # the same, refused, never reaches the origin
    n = len(o.got)
    bad = client_hello("bad.test")
    s = connect(port, "ok.test", o.port)
    for i in range(0, len(bad), 7):
        s.send(bad[i:i + 7])
    eq(read_all(s), b"", "a blocked SNI in 7-byte pieces: closed, nothing from the origin")
    s.close()
    alog(lg, r"sni=bad\.test ended=\"sni refused\"", what="the refusal logged")
    # the refused tunnel's upstream connection (made before the 200) saw no byte
    wait_until(lambda: len(o.got) > n, 10, what="the refused tunnel's upstream closed")
    eq([g for g in o.got[n:] if g], [], "the refused tunnel's bytes reached no origin")


@test
def no_hello_in_time_and_not_tls():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = recording_origin()
    port, port2 = free_port(), free_port()
    lg = Legate(conf(port, d, 'connect_sni = "check"; connect_sni_timeout = "1s";'), workers=1)
    s = connect(port, "ok.test", o.port)
    t0 = time.monotonic()
    eq(read_all(s), b"", "a client that sends nothing: closed")
    took = time.monotonic() - t0
    ok(0.8 < took < 10, "closed after connect_sni_timeout (%.2fs)" % took)
    s.close()
    alog(lg, r"sni=- ended=\"sni refused\" blocked=\"no whole TLS ClientHello within "
                r"connect_sni_timeout \(connect_sni_missing is refuse\)", what="timeout logged")
    s = connect(port, "ok.test", o.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
    eq(read_all(s), b"", "plain HTTP in the tunnel is refused")
    s.close()
    alog(lg, r"blocked=\"the client's first bytes are not TLS", what="not TLS logged")
    wait_until(lambda: len(o.got) >= 2, 10, what="the refused tunnels' upstreams closed")
    eq([g for g in o.got if g], [], "nothing reached the origin")
    o.got.clear()
    # connect_sni_missing = "allow": both relayed, unchanged
    d2 = tempfile.mkdtemp(prefix="legate-sni-")
    lg2 = Legate(conf(port2, d2, 'connect_sni = "check"; connect_sni_timeout = "1s"; '
                      'connect_sni_missing = "allow";'), workers=1)
    s = connect(port2, "ok.test", o.port)
    s.sendall(b"plain bytes\r\n")
    s.shutdown(socket.SHUT_WR)
    eq(read_all(s), b"thanks", "allow: non-TLS bytes relayed")
    wait_until(lambda: len(o.got) >= 1, 10, what="the origin got them")
    eq(o.got[0], b"plain bytes\r\n", "unchanged")
    # the start of a TLS record, never finished: held until the timeout
    s = connect(port2, "ok.test", o.port)
    o.first.clear()
    t0 = time.monotonic()
    s.sendall(b"\x16\x03\x01")
    wait_until(lambda: o.first, 15, what="the held bytes went up after connect_sni_timeout")
    took = o.first[0] - t0
    ok(0.8 < took < 10, "held for connect_sni_timeout (%.2fs)" % took)
    s.sendall(b"late")
    s.shutdown(socket.SHUT_WR)
    eq(read_all(s), b"thanks", "allow: after the timeout the tunnel relays")
    wait_until(lambda: len(o.got) >= 2, 10, what="the late bytes reached the origin")
    eq(o.got[1], b"\x16\x03\x01late", "unchanged")


def socks_connect(sport, host, port):
    s = socket.create_connection(("127.0.0.1", sport), timeout=20)
    s.sendall(b"\x05\x01\x00")
    eq(s.recv(2), b"\x05\x00", "SOCKS5: no authentication")
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", port))
    r = b""
    while len(r) < 10:
        c = s.recv(10 - len(r))
        if not c:
            break
        r += c
    eq(r[:2], b"\x05\x00", "SOCKS5 CONNECT %s succeeded" % host)
    return s


@test
def socks5_connect_too():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = tls_origin()
    port, sport = free_port(), free_port()
    lg = Legate(conf(port, d, 'connect_sni = "match";', sport=sport), workers=1)
    st, _, body = curl("--socks5-hostname", "127.0.0.1:%d" % sport, "-k",
                       "https://ok.test:%d/" % o.port)
    eq((st, body), (200, b"tls origin ok.test\n"), "SOCKS5 with the CONNECT host's name")
    s = socks_connect(sport, "ok.test", o.port)
    s.sendall(client_hello("other.test"))
    eq(read_all(s), b"", "SOCKS5: another name closes the tunnel")
    s.close()
    alog(lg, r"sni=other\.test ended=\"sni refused\" blocked=\"the ClientHello's server name "
         r"other\.test is not the CONNECT host ok\.test", what="the SOCKS5 refusal logged")


@test
def inside_tls_to_the_proxy():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    o = tls_origin()
    port = free_port()
    lg = Legate(conf(port, d, 'connect_sni = "match";', listen_tls=True), workers=1)
    px = ["--proxy", "https://localhost:%d" % port, "--proxy-cacert", os.path.join(CERTS, "ca.pem"),
          "-k"]
    st, _, body = curl(*px, "https://ok.test:%d/" % o.port)
    eq((st, body), (200, b"tls origin ok.test\n"), "TLS inside TLS to the proxy: the SNI read")
    alog(lg, r"CONNECT ok\.test:%d HTTP/1\.1 200 sni=ok\.test ended=\"closed\"" % o.port,
         what="logged with its SNI")
    # --connect-to: CONNECT ok.test, the TLS inside for bad.test
    st, _, body = curl(*px, "--connect-to",
                       "bad.test:%d:ok.test:%d" % (o.port, o.port), "https://bad.test:%d/" % o.port,
                       check=False)
    alog(lg, r"sni=bad\.test ended=\"sni refused\"", what="the refusal inside TLS logged")
    ok(st == 0 and body == b"", "the refused tunnel inside TLS closed (status %s)" % st)


@test
def config_errors():
    d = tempfile.mkdtemp(prefix="legate-sni-")
    for bad, msg in (('connect_sni = "peek";', "'connect_sni' must be"),
                     ('connect_sni_missing = "splice";', "'connect_sni_missing' must be")):
        path = os.path.join(d, "bad.conf")
        with open(path, "w") as f:
            f.write(conf(free_port(), d, bad))
        rc, out, err = run_legate(["-t", "-p", d, "-c", path], prefix=d)
        err = str(err) + str(out)
        ok(rc != 0, "legate -t refuses %s" % bad)
        ok(msg in err and "bad.conf:" in err, "file:line: message for %s: %r" % (bad, err[:200]))


if __name__ == "__main__":
    main()

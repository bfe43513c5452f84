#!/usr/bin/env python3
"""SOCKS5 UDP ASSOCIATE (RFC 1928 section 7) on the SOCKS5 listener, with
python sockets as the client: datagrams relayed to a UDP echo origin and
back, a DNS query through the association to t/dnsd.py, the same rules as
SOCKS5 CONNECT (a port outside socks_ports, a private address without
allow_private, an authenticated user, a blocked name), destinations by
name looked up, and what is dropped: a datagram with FRAG set, one from
another address or port than the client's.  The association ends with its
TCP connection.  Also RTSP (OPTIONS, DESCRIBE to a tiny responder) through a
SOCKS5 CONNECT and an HTTP CONNECT tunnel."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

DNSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dnsd.py")


class UdpEcho:
    """Echoes every datagram; counts what arrived."""

    def __init__(self, host="127.0.0.1"):
        self.s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((host, 0))
        self.port = self.s.getsockname()[1]
        self.got = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()
        _track(self)

    def _run(self):
        self.s.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.s.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append(data)
            self.s.sendto(b"echo:" + data, peer)

    def stop(self):
        self._stop = True
        self.s.close()

    teardown = stop


class Dnsd:
    def __init__(self, *names):
        self.proc = subprocess.Popen([sys.executable, DNSD, "--exit-on-eof"] + list(names),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        _track(self)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "dnsd started: %r" % line)
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    teardown = stop


def conf(sport, ports, extra=""):
    return """
error_log_level = "info";
http = {
    servers = ( { listen = ( { address = "127.0.0.1:%d"; protocol = "socks5"; } );
        forward = { allow_private = true; socks_ports = "%s"; %s };
        routes = ( ); } );
};
""" % (sport, ports, extra)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            break
        b += x
    return b


def associate(sport, auth=None, client=("0.0.0.0", 0)):
    """The TCP control connection and the relay's (host, port), or its reply code."""
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    s.sendall(b"\x05\x01" + (b"\x02" if auth else b"\x00"))
    ver, method = recv_exact(s, 2)
    if auth:
        eq(method, 2)
        u, p = auth
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        eq(recv_exact(s, 2)[1], 0, "authenticated")
    s.sendall(b"\x05\x03\x00\x01" + socket.inet_aton(client[0]) + struct.pack(">H", client[1]))
    r = recv_exact(s, 4)
    if len(r) < 4 or r[1] != 0:
        return (r[1] if len(r) > 1 else "closed"), s, None
    eq(r[3], 1, "an IPv4 relay address for an IPv4 client")
    rest = recv_exact(s, 6)
    return 0, s, (socket.inet_ntoa(rest[:4]), struct.unpack(">H", rest[4:])[0])


def wrap(port, data, host="127.0.0.1", frag=0):
    return b"\x00\x00" + bytes([frag]) + b"\x01" + socket.inet_aton(host) + struct.pack(">H", port) + data


def udp_client(bind="127.0.0.1"):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((bind, 0))
    u.settimeout(5)
    return u


def exchange(u, relay, dgram):
    """Send through the relay and wait for the wrapped answer."""
    u.sendto(dgram, relay)
    data, peer = u.recvfrom(65535)
    eq(peer, relay, "the answer comes from the relay")
    return data


def dns_query(name, qid=0x1234):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


@test
def datagrams_relayed_both_ways():
    echo = UdpEcho()
    sport = free_port()
    lg = Legate(conf(sport, "%d" % echo.port))
    rc, ctl, relay = associate(sport)
    eq(rc, 0, "UDP ASSOCIATE accepted")
    eq(relay[0], "127.0.0.1", "the relay is where the client reached us")
    u = udp_client()
    for i in range(5):
        got = exchange(u, relay, wrap(echo.port, b"ping %d" % i))
        eq(got[:10], b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo.port),
           "wrapped with the destination's address")
        eq(got[10:], b"echo:ping %d" % i)
    big = os.urandom(60000)
    eq(exchange(u, relay, wrap(echo.port, big))[10:], b"echo:" + big, "a 60 KB datagram")
    ctl.close()
    lg.wait_log(r"SOCKS5 UDP association of 127\.0\.0\.1 ended \(the client closed its TCP "
                r"connection\): 6 datagrams relayed, 6 answers, 0 dropped", what="ended with TCP")
    # the relay is gone with it: nothing answers any more
    u.settimeout(1.0)
    u.sendto(wrap(echo.port, b"late"), relay)
    try:
        u.recvfrom(65535)
        fail("an answer after the association ended")
    except (socket.timeout, ConnectionRefusedError):
        pass
    eq(echo.got.count(b"late"), 0)


@test
def dns_through_the_association():
    dns = Dnsd("udp.test=192.0.2.53")
    sport = free_port()
    Legate(conf(sport, "%d" % dns.port))
    rc, ctl, relay = associate(sport)
    eq(rc, 0)
    u = udp_client()
    got = exchange(u, relay, wrap(dns.port, dns_query("udp.test")))[10:]
    qid, flags, qd, an = struct.unpack(">HHHH", got[:8])
    eq(qid, 0x1234)
    eq(an, 1, "one answer")
    ok(got.endswith(socket.inet_aton("192.0.2.53")), "the A record: %r" % got)
    ctl.close()


@test
def dropped_fragments_strangers_and_ports():
    echo = UdpEcho()
    other = UdpEcho()           # a port not in socks_ports
    sport = free_port()
    lg = Legate(conf(sport, "%d" % echo.port))
    rc, ctl, relay = associate(sport)
    eq(rc, 0)
    u = udp_client()
    u.sendto(wrap(echo.port, b"fragment", frag=1), relay)
    u.sendto(wrap(other.port, b"wrong port"), relay)
    eq(exchange(u, relay, wrap(echo.port, b"first"))[10:], b"echo:first",
       "a good one after them is relayed: the client's port is fixed now")
    # the same address, another port; and another address of this host
    u2 = udp_client()
    u2.sendto(wrap(echo.port, b"other port"), relay)
    try:
        u3 = udp_client("127.0.0.2")
        u3.sendto(wrap(echo.port, b"other host"), relay)
    except OSError:
        u3 = None
    eq(exchange(u, relay, wrap(echo.port, b"second"))[10:], b"echo:second")
    eq(echo.got, [b"first", b"second"], "only the client's good datagrams arrived")
    eq(other.got, [], "nothing reached a port outside socks_ports")
    lg.wait_log(r"FRAG is not 0", what="the fragment logged")
    lg.wait_log(r"SOCKS5 UDP to port %d is not allowed \(socks_ports\)" % other.port, what="the port rule")
    lg.wait_log(r"not from the client's address", what="the stranger")
    ctl.close()
    lg.wait_log(r"2 datagrams relayed, 2 answers, %d dropped" % (4 if u3 else 3), what="counted")


def named(name, port, data):
    return b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port) + data


@test
def destinations_by_name():
    echo = UdpEcho()
    d = tempfile.mkdtemp(prefix="legate-udp-")
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 echo.test blocked.test\n")
    sport = free_port()
    lg = Legate(conf(sport, "%d" % echo.port,
                     'hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ]; '
                     'block_domains = [ "blocked.test" ];' % d))
    rc, ctl, relay = associate(sport)
    eq(rc, 0)
    u = udp_client()
    u.sendto(named(b"blocked.test", echo.port, b"blocked"), relay)
    got = exchange(u, relay, named(b"echo.test", echo.port, b"by name"))
    eq(got[10:], b"echo:by name", "a name looked up, then relayed")
    eq(got[3], 1, "the answer names the address")
    lg.wait_log(r"blocked\.test is blocked by block_domains", what="the blocklist on the name")
    eq(echo.got, [b"by name"])
    ctl.close()
    shutil.rmtree(d, ignore_errors=True)


@test
def rules_as_for_connect():
    echo = UdpEcho()
    sport = free_port()
    lg = Legate(conf(sport, "%d" % echo.port).replace("allow_private = true;", ""))
    rc, ctl, relay = associate(sport)
    eq(rc, 0)
    u = udp_client()
    u.sendto(wrap(echo.port, b"to loopback"), relay)
    lg.wait_log(r"is a loopback address \(allow_private is off\)|allow_private is off",
                what="a private destination refused")
    eq(echo.got, [])
    ctl.close()
    # the client ACL applies to the association itself
    sport2 = free_port()
    Legate(conf(sport2, "%d" % echo.port, 'allow_clients = [ "10.0.0.0/8" ];'))
    rc, ctl2, _ = associate(sport2)
    eq(rc, 2, "not allowed by the ruleset")
    ctl2.close()
    # an authenticated user's association
    d = os.path.join(lg.prefix, "htpasswd")
    h = subprocess.run(["openssl", "passwd", "-6", "pw"], capture_output=True, check=True,
                       timeout=30).stdout.decode().strip()
    with open(d, "w") as f:
        f.write("alice:%s\n" % h)
    sport3 = free_port()
    Legate(conf(sport3, "%d" % echo.port, 'auth_file = "%s";' % d))
    rc, ctl3, relay3 = associate(sport3, auth=(b"alice", b"pw"))
    eq(rc, 0)
    eq(exchange(udp_client(), relay3, wrap(echo.port, b"authed"))[10:], b"echo:authed")
    ctl3.close()


@test
def ipv6_association():
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        raise Skip("no IPv6 loopback")
    echo = UdpEcho("::1")
    sport = free_port("::1")
    Legate(conf(sport, "%d" % echo.port).replace('"127.0.0.1:%d"' % sport, '"[::1]:%d"' % sport))
    s = socket.create_connection(("::1", sport), timeout=10)
    s.sendall(b"\x05\x01\x00")
    eq(recv_exact(s, 2), b"\x05\x00")
    s.sendall(b"\x05\x03\x00\x04" + bytes(16) + b"\x00\x00")
    r = recv_exact(s, 22)
    eq(r[:4], b"\x05\x00\x00\x04", "an IPv6 relay address")
    relay = (socket.inet_ntop(socket.AF_INET6, r[4:20]), struct.unpack(">H", r[20:22])[0])
    eq(relay[0], "::1")
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.bind(("::1", 0))
    u.settimeout(5)
    dgram = (b"\x00\x00\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") +
             struct.pack(">H", echo.port) + b"six")
    u.sendto(dgram, relay)
    data, peer = u.recvfrom(65535)
    eq(data, dgram[:22] + b"echo:six")
    s.close()


class Rtsp:
    """A tiny RTSP responder: OPTIONS and DESCRIBE answered."""

    SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=legate test\r\nm=video 0 RTP/AVP 96\r\n"

    def __init__(self):
        self.srv = ScriptedServer(self.session)
        self.port = self.srv.port

    def session(self, s, peer):
        f = s.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            method = line.split(b" ")[0]
            cseq = b"0"
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                if h.lower().startswith(b"cseq:"):
                    cseq = h.split(b":", 1)[1].strip()
            if method == b"OPTIONS":
                s.sendall(b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")
            elif method == b"DESCRIBE":
                s.sendall(b"RTSP/1.0 200 OK\r\nCSeq: " + cseq +
                          b"\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n"
                          % len(self.SDP) + self.SDP)
            else:
                s.sendall(b"RTSP/1.0 501 Not Implemented\r\nCSeq: " + cseq + b"\r\n\r\n")


def rtsp_exchange(s, port):
    url = "rtsp://127.0.0.1:%d/stream" % port
    s.sendall(("OPTIONS %s RTSP/1.0\r\nCSeq: 1\r\n\r\n" % url).encode())
    f = s.makefile("rb")
    eq(f.readline(), b"RTSP/1.0 200 OK\r\n")
    heads = []
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        heads.append(h)
    ok(b"Public: OPTIONS, DESCRIBE\r\n" in heads, heads)
    s.sendall(("DESCRIBE %s RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n" % url).encode())
    eq(f.readline(), b"RTSP/1.0 200 OK\r\n")
    n = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            n = int(h.split(b":")[1])
        if h.lower().startswith(b"cseq:"):
            eq(h.strip(), b"CSeq: 2")
    eq(f.read(n), Rtsp.SDP)


@test
def rtsp_through_socks5_and_connect():
    rtsp = Rtsp()
    sport, hport = free_port(), free_port()
    Legate("""
http = {
    servers = ( { listen = ( "127.0.0.1:%d", { address = "127.0.0.1:%d"; protocol = "socks5"; } );
        forward = { allow_private = true; connect_ports = "443 554 %d"; };
        routes = ( ); } );
};
""" % (hport, sport, rtsp.port))
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    s.sendall(b"\x05\x01\x00")
    eq(recv_exact(s, 2), b"\x05\x00")
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", rtsp.port))
    eq(recv_exact(s, 10)[1], 0, "SOCKS5 CONNECT to the RTSP port")
    rtsp_exchange(s, rtsp.port)
    s.close()
    s = socket.create_connection(("127.0.0.1", hport), timeout=10)
    s.sendall(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
               % (rtsp.port, rtsp.port)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        x = s.recv(1)
        if not x:
            break
        head += x
    ok(head.startswith(b"HTTP/1.1 200"), head)
    rtsp_exchange(s, rtsp.port)
    s.close()


if __name__ == "__main__":
    main()

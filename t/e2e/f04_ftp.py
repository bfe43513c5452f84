#!/usr/bin/env python3
"""The ftp:// gateway of the forward proxy: curl -x asks for ftp:// URLs and
legate fetches them from a real FTP server (Debian's python3-pyftpdlib on a
free port with a temporary root): files streamed (a 3 MB file byte for
byte, Content-Length from SIZE), HEAD, directories as HTML (hostile names
escaped), logins from the URL, from Authorization and from ftp_user /
ftp_password, 550 -> 404, 530 -> 401, a directory without its "/" -> 301,
IPv6 through EPSV, the forward rules (url_filters, private addresses),
HTTP/1.0 clients, backpressure (a client that stops reading holds the
server back).  Scripted servers: a multi-line greeting and LIST after MLSD
is refused, a listing over 1 MiB (502), one that answers garbage (502),
one that drops the data connection mid-file (with and without SIZE: the
client sees a failed transfer, never a complete one), one that drops it
before any byte (502), one that stalls mid-file (cut at
proxy_read_timeout), one without EPSV whose PASV names another host (the
data still goes to the control connection's server), one that never
greets (504), and no server at all (502)."""
import base64
import re
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

FTPD = r'''
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
logging.disable(logging.CRITICAL)
root, home, host = sys.argv[1], sys.argv[2], sys.argv[3]
a = DummyAuthorizer()
a.add_anonymous(root)
a.add_user("alice", "s3cret", home, perm="elr")
FTPHandler.authorizer = a
s = FTPServer((host, 0), FTPHandler)
print("PORT %d" % s.socket.getsockname()[1], flush=True)
s.serve_forever()
'''


def ftpd_python():
    """An interpreter that has pyftpdlib: this one, or Debian's."""
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run([py, "-c", "import pyftpdlib"],
                                                 capture_output=True).returncode == 0:
            return py
    raise Skip("python3-pyftpdlib is not installed (scripts/bootstrap installs it)")


class Ftpd:
    """pyftpdlib serving a temporary root: anonymous there, alice in her home."""

    def __init__(self, host="127.0.0.1"):
        self.dir = tempfile.mkdtemp(prefix="legate-ftpd-")
        self.root = os.path.join(self.dir, "root")
        self.home = os.path.join(self.dir, "alice")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(self.home)
        with open(os.path.join(self.root, "hello.txt"), "w") as f:
            f.write("hello ftp\n")
        self.big = os.urandom(3 * 1000 * 1000)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(self.big)
        with open(os.path.join(self.root, "sub", '<img src=x onerror=alert("x")>&.txt'), "w") as f:
            f.write("x\n")
        with open(os.path.join(self.home, "alice-only.txt"), "w") as f:
            f.write("for alice\n")
        self.proc = subprocess.Popen([ftpd_python(), "-c", FTPD, self.root, self.home, host],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        _track(self)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "ftpd started: %r" % line)
        self.port = int(line.split()[1])
        self.host = host

    def url(self, path, userinfo=""):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "ftp://%s%s:%d%s" % (userinfo, h, self.port, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    teardown = stop


def conf(port, extra="", server_extra=""):
    return """
http = {
    servers = ( { listen = ( { address = "127.0.0.1:%d"; } ); %s
        forward = { allow_private = true; %s };
        routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } );
};
""" % (port, server_extra, extra)


def via(port, url, *args, **kw):
    return curl("-x", "http://127.0.0.1:%d" % port, url, *args, **kw)


def access_log(lg):
    try:
        with open(lg.access_log, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_access(lg, regex, what):
    """The workers write their log lines once a second while busy: a
    request now and then keeps them writing."""
    r = re.compile(regex)

    def seen():
        if r.search(access_log(lg)):
            return True
        http_raw(lg.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=2)
        return False
    wait_until(seen, 20, interval=0.2, what=what)


def raw_curl(port, url, *args):
    """curl's exit code and the body it got (a failed transfer included)."""
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-x", "http://127.0.0.1:%d" % port,
                        url] + list(args), capture_output=True, timeout=40,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


@test
def files_streamed_and_head():
    d = Ftpd()
    port = free_port()
    lg = Legate(conf(port))
    st, hs, body = via(port, d.url("/hello.txt"))
    eq(st, 200)
    eq(body, b"hello ftp\n")
    eq(hs.get("content-type"), "text/plain")
    eq(hs.get("content-length"), "10", "the length SIZE gave")
    st, hs, body = via(port, d.url("/big.bin"))
    eq(st, 200)
    eq(hs.get("content-length"), str(len(d.big)))
    ok(body == d.big, "3 MB through the gateway byte for byte (%d bytes)" % len(body))
    st, hs, body = via(port, d.url("/big.bin"), "-I")
    eq(st, 200)
    eq(hs.get("content-length"), str(len(d.big)), "HEAD says the size")
    got = http_raw(port, "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                   % (d.url("/hello.txt"), d.port))
    ok(got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n"),
       "a HEAD answer has no body: %r" % got)
    # two on one keep-alive connection: the answers are framed
    rc, out, err = raw_curl(port, d.url("/hello.txt"), d.url("/hello.txt"), "-v")
    eq(rc, 0, err)
    eq(out, b"hello ftp\nhello ftp\n")
    contains(err, "Re-using existing connection", "the client connection was kept")
    wait_access(lg, r'"GET ftp://127\.0\.0\.1:%d/big\.bin HTTP/1\.1" 200 ' % d.port, "logged")


@test
def directories_as_html_escaped():
    d = Ftpd()
    port = free_port()
    Legate(conf(port))
    st, hs, body = via(port, d.url("/"))
    eq(st, 200)
    ok(hs.get("content-type").startswith("text/html"), hs.get("content-type"))
    text = body.decode()
    contains(text, '<a href="hello.txt">hello.txt</a>')
    contains(text, '<a href="sub/">sub/</a>')
    contains(text, ">%d<" % len(d.big), "sizes shown")
    st, hs, body = via(port, d.url("/sub/"))
    eq(st, 200)
    text = body.decode()
    ok("<img" not in text, "a hostile file name is not markup: %s" % text)
    contains(text, "&lt;img src=x onerror=alert(&quot;x&quot;)&gt;&amp;.txt")
    contains(text, 'href="%3Cimg%20src%3Dx%20onerror%3Dalert%28%22x%22%29%3E%26.txt"',
             "and its link is percent-encoded")
    contains(text, '<a href="../">')
    st, hs, _ = via(port, d.url("/sub"))
    eq(st, 301, "a directory named without its slash")
    eq(hs.get("location"), d.url("/sub/"))
    st, _, body = via(port, d.url("/nothing-here.txt"))
    eq(st, 404, "550 -> 404")
    contains(body.decode(), "550")
    st, _, _ = via(port, d.url("/no-dir/"))
    eq(st, 404)


@test
def forward_rules_apply():
    d = Ftpd()
    port = free_port()
    lg = Legate(conf(port, 'url_filters = [ "big\\\\.bin$" ];'))
    st, _, body = via(port, d.url("/big.bin"), check=False)
    eq(st, 403, "url_filters see the ftp:// URL")
    contains(body.decode(), "the URL matches the filter")
    st, _, _ = via(port, d.url("/hello.txt"))
    eq(st, 200)
    port2 = free_port()
    Legate(conf(port2).replace("allow_private = true;", ""))
    st, _, body = via(port2, d.url("/hello.txt"), check=False)
    eq(st, 403, "a loopback FTP server without allow_private")
    contains(body.decode(), "allow_private is off")


@test
def logins_from_url_header_and_config():
    d = Ftpd()
    port = free_port()
    lg = Legate(conf(port))
    st, _, body = via(port, d.url("/", "alice:s3cret@"))
    eq(st, 200)
    contains(body.decode(), "alice-only.txt", "alice's home, with the URL's login")
    st, hs, _ = via(port, d.url("/", "alice:wrong@"))
    eq(st, 401, "530 at login -> 401")
    contains(hs.get("www-authenticate") or "", 'Basic realm="FTP 127.0.0.1"')
    # as a browser answers that challenge
    auth = base64.b64encode(b"alice:s3cret").decode()
    st, _, body = via(port, d.url("/"), "-H", "Authorization: Basic " + auth)
    eq(st, 200)
    contains(body.decode(), "alice-only.txt", "the login from Authorization")
    # the password never reaches the log
    wait_access(lg, r"GET ftp://alice:\*+@127\.0\.0\.1", "the URL logged with stars")
    ok("s3cret" not in access_log(lg) and "wrong@" not in access_log(lg),
       "no password in the access log")
    port2 = free_port()
    Legate(conf(port2, 'ftp_user = "alice"; ftp_password = "s3cret";'))
    st, _, body = via(port2, d.url("/"))
    eq(st, 200)
    contains(body.decode(), "alice-only.txt", "ftp_user / ftp_password")
    # a CR LF in the user would be a second command
    got = http_raw(port, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                   % (d.url("/", "al%0D%0ADELE%20x:pw@"), d.port))
    ok(got.startswith(b"HTTP/1.1 400"), "refused: %r" % got[:40])


@test
def ipv6_through_epsv():
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        raise Skip("no IPv6 loopback")
    d = Ftpd(host="::1")
    port = free_port()
    Legate(conf(port))
    st, _, body = via(port, d.url("/hello.txt"))
    eq(st, 200)
    eq(body, b"hello ftp\n")


class FakeFtp:
    """A scripted FTP server: how it answers RETR is the test's."""

    def __init__(self, greet=b"220 fake\r\n", epsv=True, size=None, retr=None, pasv_host=None,
                 listing=None):
        self.greet, self.epsv, self.size, self.retr = greet, epsv, size, retr
        self.listing = listing          # LIST's answer (MLSD is "not understood")
        self.commands = []
        self.pasv_host = pasv_host
        self.data_peers = []
        self.srv = ScriptedServer(self.session)
        self.port = self.srv.port

    def session(self, s, peer):
        if self.greet is None:
            s.recv(1)           # never greets: waits for the client to give up
            return
        s.sendall(self.greet)
        f = s.makefile("rb")
        lsock = None
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip().split(" ", 1)
            verb = cmd[0].upper()
            self.commands.append(verb)
            if verb == "USER":
                s.sendall(b"331 password please\r\n")
            elif verb == "PASS":
                s.sendall(b"230 in\r\n")
            elif verb == "TYPE":
                s.sendall(b"200 binary\r\n")
            elif verb == "SIZE":
                s.sendall(b"213 %d\r\n" % self.size if self.size is not None
                          else b"550 no size\r\n")
            elif verb in ("EPSV", "PASV"):
                if verb == "EPSV" and not self.epsv:
                    s.sendall(b"500 EPSV not understood\r\n")
                    continue
                lsock = socket.socket()
                lsock.bind(("127.0.0.1", 0))
                lsock.listen(1)
                lsock.settimeout(20)
                p = lsock.getsockname()[1]
                if verb == "EPSV":
                    s.sendall(b"229 Entering Extended Passive Mode (|||%d|)\r\n" % p)
                else:
                    h = (self.pasv_host or "127.0.0.1").replace(".", ",")
                    s.sendall(b"227 Entering Passive Mode (%s,%d,%d)\r\n" %
                              (h.encode(), p >> 8, p & 255))
            elif verb == "RETR":
                ds, dpeer = lsock.accept()
                self.data_peers.append(dpeer[0])
                self.retr(s, ds)
                lsock.close()
            elif verb == "CWD":
                s.sendall(b"250 ok\r\n")
            elif verb == "LIST" and self.listing is not None:
                ds, _ = lsock.accept()
                s.sendall(b"150 listing\r\n")
                try:
                    ds.sendall(self.listing)
                except OSError:
                    pass
                ds.close()
                lsock.close()
                s.sendall(b"226 done\r\n")
            elif verb == "QUIT":
                s.sendall(b"221 bye\r\n")
                return
            else:
                s.sendall(b"502 not here\r\n")


def drop_after(n, final):
    def retr(ctl, data):
        ctl.sendall(b"150 here it comes\r\n")
        data.sendall(b"x" * n)
        data.close()
        ctl.sendall(final)
    return retr


@test
def garbage_server_is_502():
    srv = FakeFtp(greet=b"HTTP/1.1 200 OK\r\nI am not FTP\r\n\r\n")
    port = free_port()
    lg = Legate(conf(port))
    st, _, body = via(port, "ftp://127.0.0.1:%d/f" % srv.port, check=False)
    eq(st, 502)
    contains(body.decode(), "not FTP")
    lg.allow_log(r"not FTP")


@test
def data_dropped_mid_file_is_never_complete():
    port = free_port()
    lg = Legate(conf(port))
    lg.allow_log(r"cut short|ended short|transfer failed")
    # SIZE said 100000, 20000 came, then 426: curl sees the length not met
    srv = FakeFtp(size=100000, retr=drop_after(20000, b"426 Connection closed; transfer aborted\r\n"))
    rc, out, err = raw_curl(port, "ftp://127.0.0.1:%d/f.bin" % srv.port)
    ok(rc != 0, "curl reports a failed transfer (rc %d)" % rc)
    ok(len(out) < 100000, "short body: %d" % len(out))
    # no SIZE: chunked, and the last chunk never comes
    srv2 = FakeFtp(size=None, retr=drop_after(20000, b"426 Connection closed; transfer aborted\r\n"))
    rc, out, err = raw_curl(port, "ftp://127.0.0.1:%d/f.bin" % srv2.port)
    ok(rc != 0, "curl reports a failed chunked transfer (rc %d: %s)" % (rc, err))
    eq(len(out), 20000, "what came was relayed")
    # a server that says 226 though fewer bytes came than SIZE said
    srv3 = FakeFtp(size=50000, retr=drop_after(20000, b"226 Transfer complete\r\n"))
    rc, out, err = raw_curl(port, "ftp://127.0.0.1:%d/f.bin" % srv3.port)
    ok(rc != 0, "a short file with 226 is still short (rc %d)" % rc)
    # dropped before any byte: nothing was sent, so a 502
    srv4 = FakeFtp(size=None, retr=drop_after(0, b"426 Connection closed; transfer aborted\r\n"))
    st, _, _ = via(port, "ftp://127.0.0.1:%d/f.bin" % srv4.port, check=False)
    eq(st, 502)
    # the whole file and 226: complete, chunked
    srv5 = FakeFtp(size=None, retr=drop_after(30000, b"226 Transfer complete\r\n"))
    rc, out, err = raw_curl(port, "ftp://127.0.0.1:%d/f.bin" % srv5.port)
    eq(rc, 0, err)
    eq(out, b"x" * 30000)


@test
def backpressure_holds_the_server_back():
    """A client that stops reading: legate stops reading the data
    connection, so the server is held back and the worker does not grow."""
    total = 256 * 1024 * 1024
    sent = [0]

    def retr(ctl, data):
        ctl.sendall(b"150 here it comes\r\n")
        chunk = b"y" * 65536
        try:
            while sent[0] < total:
                data.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass
        data.close()
    srv = FakeFtp(size=total, retr=retr)
    port = free_port()
    lg = Legate(conf(port), workers=1)
    lg.allow_log(r"cut short|send\(\) to client")
    rss0 = sum(rss_kb(p) for p in lg.workers())
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(("GET ftp://127.0.0.1:%d/huge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
               % (srv.port, srv.port)).encode())
    got = 0
    while got < 1024 * 1024:
        x = s.recv(65536)
        ok(x, "the transfer began")
        got += len(x)
    # the client stops reading: the server's sending must stop too
    wait_until(lambda: sent[0] > 0, 10, what="the server sends")
    last = [-1]

    def stalled():
        before, last[0] = last[0], sent[0]
        return before == sent[0]
    wait_until(stalled, 20, interval=0.5, what="the server held back")
    ok(sent[0] < 64 * 1024 * 1024, "held back after %d bytes of %d" % (sent[0], total))
    grown = sum(rss_kb(p) for p in lg.workers()) - rss0
    ok(grown < 16 * 1024, "the worker grew %d KiB, not by the file" % grown)
    s.close()


@test
def list_when_no_mlsd_and_listings_too_large():
    listing = (b"220-not a reply line\r\n"
               b"drwxr-xr-x   2 u g 4096 Jan  1 00:00 docs\r\n"
               b"-rw-r--r--   1 u g 1234 Jan  1  2024 read <me>.txt\r\n")
    srv = FakeFtp(greet=b"220-Welcome\r\n to a server\r\n220 that says a lot\r\n",
                  listing=listing)
    port = free_port()
    lg = Legate(conf(port))
    st, _, body = via(port, "ftp://127.0.0.1:%d/pub/" % srv.port)
    eq(st, 200, "a multi-line greeting, then LIST after MLSD was refused")
    text = body.decode()
    contains(text, '<a href="docs/">docs/</a>')
    contains(text, '<a href="read%20%3Cme%3E.txt">read &lt;me&gt;.txt</a>')
    contains(text, "1234")
    ok(srv.commands.count("EPSV") == 2 and "MLSD" in srv.commands and "LIST" in srv.commands,
       "a new data connection for LIST: %s" % srv.commands)
    big = FakeFtp(listing=b"-rw-r--r--   1 u g 1 Jan  1  2024 f\r\n" * 60000)
    lg.allow_log(r"larger than legate reads whole")
    st, _, _ = via(port, "ftp://127.0.0.1:%d/" % big.port, check=False)
    eq(st, 502, "a listing over 1 MiB is not cut into a page that looks whole")


@test
def pasv_fallback_ignores_the_address_it_names():
    srv = FakeFtp(epsv=False, size=5, pasv_host="10.9.8.7",
                  retr=drop_after(5, b"226 done\r\n"))
    port = free_port()
    Legate(conf(port))
    st, hs, body = via(port, "ftp://127.0.0.1:%d/five" % srv.port)
    eq(st, 200)
    eq(body, b"xxxxx")
    eq(srv.data_peers, ["127.0.0.1"], "the data connection went to the server, not 10.9.8.7")


@test
def no_server_and_silent_server():
    port = free_port()
    lg = Legate(conf(port, server_extra='proxy_read_timeout = "1s";'))
    lg.allow_log(r"cannot connect|did not answer")
    st, _, _ = via(port, "ftp://127.0.0.1:%d/f" % free_port(), check=False)
    eq(st, 502, "connection refused")
    srv = FakeFtp(greet=None)
    st, _, _ = via(port, "ftp://127.0.0.1:%d/f" % srv.port, check=False)
    eq(st, 504, "no greeting within proxy_read_timeout")
    st, _, _ = via(port, "ftp://127.0.0.1:%d/f" % srv.port, "-X", "DELETE", check=False)
    eq(st, 405, "GET and HEAD only")
    # a data connection that stalls mid-file: cut at proxy_read_timeout, never complete
    stop = threading.Event()

    def stall(ctl, data):
        ctl.sendall(b"150 here it comes\r\n")
        data.sendall(b"s" * 10000)
        stop.wait(20)
        data.close()
    srv2 = FakeFtp(size=None, retr=stall)
    lg.allow_log(r"cut short")
    rc, out, err = raw_curl(port, "ftp://127.0.0.1:%d/slow" % srv2.port)
    stop.set()
    ok(rc != 0, "a stalled transfer fails (rc %d)" % rc)
    eq(len(out), 10000, "what came was relayed")


@test
def http10_client_gets_the_close():
    d = Ftpd()
    port = free_port()
    Legate(conf(port))
    got = http_raw(port, "GET %s HTTP/1.0\r\n\r\n" % d.url("/hello.txt"))
    ok(got.startswith(b"HTTP/1.1 200"), got[:40])
    ok(b"Content-Length: 10\r\n" in got, "SIZE gave the length")
    ok(got.endswith(b"\r\n\r\nhello ftp\n"), got)
    # an HTTP/1.0 client and an unknown length: the close delimits, no chunks
    srv = FakeFtp(size=None, retr=drop_after(3000, b"226 Transfer complete\r\n"))
    got = http_raw(port, "GET ftp://127.0.0.1:%d/x HTTP/1.0\r\n\r\n" % srv.port)
    head, _, body = got.partition(b"\r\n\r\n")
    ok(b"chunked" not in head and b"Connection: close" in head, head)
    eq(body, b"x" * 3000)


if __name__ == "__main__":
    main()

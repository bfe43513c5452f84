#!/usr/bin/env python3
"""The gopher:// gateway of the forward proxy, against t/gopherd.py with
curl (the absolute-form request line): menus as HTML with every hostile field escaped (display strings,
selectors, a host that is markup gets no link), text and a 2 MB binary
streamed byte for byte (chunked), a search with its words, an empty answer
(502), a server that is not there (502)."""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

GOPHERD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gopherd.py")


class Gopherd:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, GOPHERD, "--exit-on-eof"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        _track(self)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "gopherd started: %r" % line)
        self.port = int(line.split()[1])

    def url(self, path):
        return "gopher://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    teardown = stop


def conf(port):
    return """
http = {
    servers = ( { listen = ( { address = "127.0.0.1:%d"; } );
        forward = { allow_private = true; };
        routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } );
};
""" % port


def via(port, url, *args, **kw):
    """curl asks a proxy for gopher:// with CONNECT only, so it is sent
    the absolute-form request line itself, as a browser with a Gopher
    proxy setting would send it."""
    host = url.split("/")[2]
    return curl("--request-target", url, "-H", "Host: " + host,
                "http://127.0.0.1:%d/" % port, *args, **kw)


@test
def menu_is_escaped_html():
    g = Gopherd()
    port = free_port()
    Legate(conf(port))
    st, hs, body = via(port, g.url("/"))
    eq(st, 200)
    ok(hs.get("content-type").startswith("text/html"), hs.get("content-type"))
    text = body.decode()
    for bad in ("<script", "<b>", "<i>", 'evil"', 'onmouseover=alert(3)"'):
        ok(bad not in text, "%r is not markup in the page" % bad)
    contains(text, "Welcome to &lt;b&gt;legate&lt;/b&gt; &amp; &quot;friends&quot;")
    contains(text, '<a href="gopher://127.0.0.1:%d/0/about.txt">About &lt;script&gt;' % g.port)
    contains(text, '<a href="gopher://127.0.0.1:%d/1/sub">Sub menu</a>' % g.port)
    contains(text, '<a href="http://example.com/?a=1&amp;b=&quot;2&quot;">Web link</a>')
    contains(text, "Evil host", "a hostile host's item is shown...")
    ok("evil" not in text.split("Evil host")[0].rsplit("<pre>", 1)[-1],
       "...without a link to it")
    contains(text, "/1/q%22onmouseover%3Dalert%283%29", "a quote in a selector is encoded")
    contains(text, "An error line &lt;i&gt;here&lt;/i&gt;")
    st, _, body = via(port, g.url("/1/sub"))
    eq(st, 200)
    contains(body.decode(), "Inner file")


@test
def items_streamed():
    g = Gopherd()
    port = free_port()
    Legate(conf(port))
    st, hs, body = via(port, g.url("/0/about.txt"))
    eq(st, 200)
    eq(body, b"This is a test text.\r\nIt has <two> lines & more.\r\n")
    ok(hs.get("content-type").startswith("text/plain"), hs.get("content-type"))
    st, hs, body = via(port, g.url("/9/bin"))
    eq(st, 200)
    eq(hs.get("transfer-encoding"), "chunked", "no length known: chunked")
    eq(hs.get("content-type"), "application/octet-stream")
    ok(body == random.Random(7).randbytes(2000000), "2 MB byte for byte (%d)" % len(body))


@test
def search_sends_the_words():
    g = Gopherd()
    port = free_port()
    Legate(conf(port))
    st, _, body = via(port, g.url("/7/search?legate+%3Cproxy%3E"))
    eq(st, 200)
    contains(body.decode(), "You searched for: legate &lt;proxy&gt;")
    st, _, body = via(port, g.url("/7/search%09two%20words"))
    eq(st, 200)
    contains(body.decode(), "You searched for: two words")


@test
def a_reset_mid_item_is_never_complete():
    import socket
    import struct

    def reset_after(s, peer):
        s.recv(1024)
        s.sendall(b"z" * 50000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                       # RST, not FIN: the item was cut
    srv = ScriptedServer(reset_after)
    port = free_port()
    lg = Legate(conf(port))
    lg.allow_log(r"recv\(\) from the server failed|cut short")
    url = "gopher://127.0.0.1:%d/9/cut" % srv.port
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "--request-target", url,
                        "-H", "Host: 127.0.0.1:%d" % srv.port, "http://127.0.0.1:%d/" % port],
                       capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
    ok(p.returncode != 0, "curl reports a failed transfer (rc %d)" % p.returncode)
    ok(len(p.stdout) <= 50000, "no more than was sent: %d" % len(p.stdout))


@test
def empty_and_missing_servers_are_502():
    g = Gopherd()
    port = free_port()
    lg = Legate(conf(port))
    lg.allow_log(r"sent nothing|cannot connect")
    st, _, _ = via(port, g.url("/0/empty"), check=False)
    eq(st, 502, "nothing at all")
    st, _, _ = via(port, g.url("/1/empty"), check=False)
    eq(st, 502, "an empty menu")
    st, _, _ = via(port, "gopher://127.0.0.1:%d/" % free_port(), check=False)
    eq(st, 502, "connection refused")
    lg.allow_log(r"larger than legate reads whole")
    st, _, body = via(port, g.url("/1/huge"), check=False)
    eq(st, 502, "a 2 MB menu is not cut into a page that looks whole")
    contains(body.decode(), "larger than")
    # no gateway on a server without forward = { }
    port2 = free_port()
    Legate(simple_conf(port2, origins=["127.0.0.1:%d" % free_port()]))
    got = http_raw(port2, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (g.url("/"), g.port))
    ok(got.startswith(b"HTTP/1.1 400"), "a reverse proxy refuses gopher://: %r" % got[:40])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A real browser through the forward proxy: headless Chromium (Debian's
package) started with --proxy-server loads a page whose script fetches more
from the same origin, over plain HTTP, over HTTPS (a CONNECT tunnel) and
over SOCKS5; the origin's view and the forward log confirm the path.

Names like www.site.test resolve only inside legate (its hosts_file), so a
page that loads at all went through the proxy."""
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MKCERT = os.path.join(HERE, "..", "..", "scripts", "mkcert")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = b"""<!doctype html>
<html><head><title>through legate</title></head>
<body><div id="out">waiting</div>
<script>
fetch("/data.json").then(r => r.json()).then(j => {
  document.getElementById("out").textContent = "fetched:" + j.word + ":" + j.via;
}).catch(e => { document.getElementById("out").textContent = "error:" + e; });
</script></body></html>
"""


class Site:
    """An origin serving the page and /data.json (keep-alive), optionally TLS.
    /data.json answers with the Via the origin received, so the page shows it."""

    def __init__(self, tls_dir=None):
        self.paths = []
        self.ctx = None
        if tls_dir:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(os.path.join(tls_dir, "server-ecdsa.pem"),
                                     os.path.join(tls_dir, "server-ecdsa.key"))
        self.srv = ScriptedServer(self.handle)
        self.port = self.srv.port

    def handle(self, s, peer):
        if self.ctx:
            s = self.ctx.wrap_socket(s, server_side=True)
        f = s.makefile("rb")
        for _ in range(100):             # requests on one connection, bounded
            line = f.readline(8192)
            if not line:
                return
            method, target, _v = line.decode("latin-1").split(" ", 2)
            via = ""
            while True:
                h = f.readline(8192)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                if k.strip().lower() == "via":
                    via = v.strip()
            self.paths.append(target)
            if target == "/":
                body, ctype = PAGE, "text/html"
            elif target == "/data.json":
                body = ('{"word": "legate", "via": "%s"}' % via).encode()
                ctype = "application/json"
            else:
                body, ctype = b"not here\n", "text/plain"
            status = "200 OK" if body != b"not here\n" else "404 Not Found"
            s.sendall(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                       "Cache-Control: no-store\r\n\r\n" % (status, ctype, len(body))).encode() +
                      (body if method != "HEAD" else b""))


class Browser:
    def __init__(self):
        if CHROMIUM is None:
            raise SkipFile("chromium not installed (scripts/bootstrap installs it)")
        self.dir = tempfile.mkdtemp(prefix="legate-chromium-")
        _track(self)

    def dump_dom(self, proxy, url, timeout=60):
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update",
               "--ignore-certificate-errors",
               "--user-data-dir=" + os.path.join(self.dir, "profile"),
               "--proxy-server=" + proxy, "--proxy-bypass-list=<-loopback>",
               "--virtual-time-budget=10000", "--dump-dom", url]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def conf(hport, sport, hosts, extra=""):
    return """
via_name = "legate-test";
http = {
    log_format = "forward";
    servers = ( { listen = ( "127.0.0.1:%d", { address = "127.0.0.1:%d"; protocol = "socks5"; } );
        forward = { allow_private = true; hosts_file = "%s"; resolvers = [ "127.0.0.1:9" ];
                    connect_ports = "1-65535"; %s };
        routes = ( { prefix = "/"; return = 200; body = "not a proxy request\\n"; } ); } );
};
""" % (hport, sport, hosts, extra)


def setup():
    d = tempfile.mkdtemp(prefix="legate-browser-")
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 www.site.test secure.site.test socks.site.test\n")
    return d, hosts


@test(timeout=240)
def page_and_fetch_through_the_http_proxy_and_connect():
    d, hosts = setup()
    try:
        site = Site()
        hport, sport = free_port(), free_port()
        lg = Legate(conf(hport, sport, hosts), workers=2)
        b = Browser()
        dom, err = b.dump_dom("http://127.0.0.1:%d" % hport, "http://www.site.test:%d/" % site.port)
        contains(dom, "fetched:legate:1.1 legate-test",
                 "the page's script ran and its fetch went through legate (stderr: %s)" % err[-800:])
        ok("/" in site.paths and "/data.json" in site.paths, "origin saw %r" % site.paths)
        wait_until(lambda: '"GET www.site.test:%d" 200' % site.port in open(lg.access_log).read(),
                   what="the page in the forward log")

        certs = os.path.join(d, "certs")
        os.makedirs(certs)
        subprocess.run(["sh", MKCERT, certs], check=True, capture_output=True, timeout=120)
        tls = Site(tls_dir=certs)
        dom, err = b.dump_dom("http://127.0.0.1:%d" % hport,
                              "https://secure.site.test:%d/" % tls.port)
        contains(dom, "fetched:legate:</div>", "HTTPS through CONNECT: the origin sees no Via "
                 "(the tunnel is opaque) (stderr: %s)" % err[-800:])
        wait_until(lambda: '"CONNECT secure.site.test:%d" 200' % tls.port in
                   open(lg.access_log).read(), what="the tunnel in the forward log")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test(timeout=240)
def page_through_socks5_and_a_blocked_site():
    d, hosts = setup()
    try:
        site = Site()
        hport, sport = free_port(), free_port()
        lg = Legate(conf(hport, sport, hosts, 'block_domains = [ "www.site.test" ];'), workers=1)
        b = Browser()
        dom, err = b.dump_dom("socks5://127.0.0.1:%d" % sport,
                              "http://socks.site.test:%d/" % site.port)
        contains(dom, "fetched:legate:</div>", "the page over SOCKS5 (stderr: %s)" % err[-800:])
        eq(site.paths.count("/data.json"), 1)
        n = len(site.paths)
        dom, err = b.dump_dom("http://127.0.0.1:%d" % hport, "http://www.site.test:%d/" % site.port)
        contains(dom, "legate refused this request: www.site.test is blocked by block_domains",
                 "the browser shows the 403 page")
        eq(len(site.paths), n, "nothing reached the origin")
        wait_until(lambda: '"CONNECT socks.site.test:%d" 200' % site.port in
                   open(lg.access_log).read(), what="SOCKS in the forward log")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

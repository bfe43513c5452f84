#!/usr/bin/env python3
"""TLS inspection (Squid's ssl-bump): with an operator's CA (a throwaway one
from scripts/mkcert), CONNECT tunnels to the names in tls_inspect get legate's
TLS with a certificate minted for the name; the requests inside are proxied as
https:// URLs (URL filters, the access log) over TLS to the destination that
is verified (tls_inspect_verify: the test CA of conf/examples/certs).  Names
in tls_inspect_never and names not listed are spliced untouched; a destination
whose certificate does not verify is a 502 inside the tunnel and an error line.
Real clients: curl -x, openssl s_client -proxy, headless Chromium."""
import os
import re
import shutil
import socket
import subprocess
import sys
import ssl
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

SHIPPED = os.path.join(REPO, "conf", "examples", "certs")   # a certificate that is no CA
MKCERT = os.path.join(REPO, "scripts", "mkcert")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAMES = ("shop.test", "bank.test", "plain.test", "bad.test", "wrong.example", "web.test")
LOGF = '$request $status sni=$tunnel_sni ended=\\"$tunnel_end\\" blocked=\\"$blocked\\"'


class TlsSite:
    """A TLS origin, keep-alive: answers "origin SNI PATH host=HOST" and
    records the paths.  cert/key: its certificate (see setup())."""

    def __init__(self, cert, key):
        self.paths, self.hosts = [], []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.names = []
        self.ctx.sni_callback = lambda so, name, c: self.names.append(name) and None
        self.srv = ScriptedServer(self.handle)
        self.port = self.srv.port

    def handle(self, s, peer):
        try:
            s = self.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError):
            return              # a client that refused our certificate
        s.settimeout(20)
        f = s.makefile("rb")
        for _ in range(100):    # requests on one connection, bounded
            line = f.readline(8192)
            if not line:
                return
            method, target, _v = line.decode("latin-1").split(" ", 2)
            host = ""
            while True:
                h = f.readline(8192)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                if k.strip().lower() == "host":
                    host = v.strip()
            self.paths.append(target)
            self.hosts.append(host)
            if target.startswith("/page"):
                body, ctype = PAGE, "text/html"
            elif target == "/data.json":
                body, ctype = b'{"word": "inspected"}', "application/json"
            else:
                body = ("origin %s %s host=%s\n" % (self.names[-1] if self.names else "-",
                                                    target, host)).encode()
                ctype = "text/plain"
            cc = "max-age=60" if target.startswith("/cached") else "no-store"
            s.sendall(("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                       "Cache-Control: %s\r\n\r\n" % (ctype, len(body), cc)).encode() +
                      (body if method != "HEAD" else b""))


PAGE = b"""<!doctype html>
<html><head><title>inspected</title></head>
<body><div id="out">waiting</div>
<script>
fetch("/data.json").then(r => r.json()).then(j => {
  document.getElementById("out").textContent = "fetched:" + j.word;
}).catch(e => { document.getElementById("out").textContent = "error:" + e; });
</script></body></html>
"""


def make_ca(d, name="inspect-ca"):
    """A CA made by scripts/mkcert (ca.pem, ca.key)."""
    certs = os.path.join(d, name)
    subprocess.run(["sh", MKCERT, certs], check=True, capture_output=True, timeout=120)
    return certs


def setup():
    """A temp dir, the operator's CA (inspect), and the destinations' CA with
    a site certificate for the test's names but wrong.example (dest: the
    CA tls_inspect_verify trusts; dest/site.pem, dest/site.key)."""
    d = tempfile.mkdtemp(prefix="legate-bump-")
    ca = make_ca(d)
    dest = make_ca(d, "dest-ca")
    with open(os.path.join(dest, "site.ext"), "w") as f:
        f.write("subjectAltName=DNS:shop.test,DNS:bank.test,DNS:plain.test,DNS:web.test\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60, cwd=dest)
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "site.key", "-out", "site.csr", "-subj", "/CN=shop.test")
    run("openssl", "x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "30", "-extfile", "site.ext", "-out", "site.pem")
    return d, ca, dest


def make_site(dest):
    return TlsSite(os.path.join(dest, "site.pem"), os.path.join(dest, "site.key"))


def self_signed(d, name):
    """A certificate for name that no CA vouches for."""
    cert, key = os.path.join(d, "self.pem"), os.path.join(d, "self.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=" + name, "-addext",
                    "subjectAltName=DNS:" + name], check=True, capture_output=True, timeout=60)
    return cert, key


def conf(port, d, ca, extra="", dest=None):
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 %s\n" % " ".join(NAMES))
    return """
cache_size = "4m";
http = {
    log_format = "%s";
    servers = ( { listen = ( "127.0.0.1:%d" ); cache = true;
        forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                    connect_ports = "1-65535";
                    url_filters = [ "^https://shop\\\\.test(:[0-9]+)?/private" ];
                    tls_inspect = [ "shop.test", "bank.test", "bad.test", "wrong.example",
                                    "*.web.test", "web.test" ];
                    tls_inspect_never = [ "bank.test" ];
                    tls_inspect_ca = "%s/ca.pem"; tls_inspect_ca_key = "%s/ca.key";
                    tls_inspect_verify = "%s/ca.pem"; %s };
        routes = ( ); } );
};
""" % (LOGF, port, d, ca, ca, dest or os.path.join(d, "dest-ca"), extra)


def alog(lg, regex, what):
    r = re.compile(regex)

    def seen():
        try:
            with open(lg.access_log, errors="replace") as f:
                return r.search(f.read())
        except FileNotFoundError:
            return None
    return wait_until(seen, 10, what=what)


def leaf_via_proxy(port, name, oport, d, sni=True):
    """The certificate the client is shown through the proxy (openssl
    s_client -proxy), as a PEM file path."""
    p = subprocess.run(["openssl", "s_client", "-proxy", "127.0.0.1:%d" % port, "-connect",
                        "%s:%d" % (name, oport)] +
                       (["-servername", name] if sni else ["-noservername"]),
                       input=b"", capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    ok(m, "s_client through the proxy got a certificate for %s (%s)" % (name, out[-300:]))
    path = os.path.join(d, "leaf-%s.pem" % name)
    with open(path, "w") as f:
        f.write(m.group(0) + "\n")
    return path


def verifies(leaf, cafile, name):
    p = subprocess.run(["openssl", "verify", "-CAfile", cafile, "-verify_hostname", name, leaf],
                       capture_output=True, timeout=30)
    return p.returncode == 0


def px(port):
    return ["-x", "http://127.0.0.1:%d" % port]


@test
def inspected_get_filter_and_log():
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    lg = Legate(conf(port, d, ca), workers=1)
    url = "https://shop.test:%d/hello?x=1" % site.port
    st, _, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"), url)
    eq((st, body), (200, ("origin shop.test /hello?x=1 host=shop.test:%d\n" % site.port).encode()),
       "inspected: the origin's answer, legate's TLS to it with SNI shop.test")
    # the client saw a certificate of the operator's CA, not the origin's
    st2, _, _ = curl(*px(port), "--cacert", os.path.join(dest, "ca.pem"), url, check=False)
    eq(st2, 0, "the origin's CA does not verify what the client is shown")
    leaf = leaf_via_proxy(port, "shop.test", site.port, d)
    ok(verifies(leaf, os.path.join(ca, "ca.pem"), "shop.test"),
       "the minted certificate: shop.test, signed by the inspect CA")
    ok(not verifies(leaf, os.path.join(dest, "ca.pem"), "shop.test"),
       "...and not by the origin's CA")
    # a ClientHello without SNI: the CONNECT host is the name
    leaf2 = leaf_via_proxy(port, "shop.test", site.port, d, sni=False)
    ok(verifies(leaf2, os.path.join(ca, "ca.pem"), "shop.test"),
       "no SNI: minted for the CONNECT host")
    p = subprocess.run(["openssl", "x509", "-in", leaf, "-noout", "-ext", "subjectAltName",
                        "-dates"], capture_output=True, timeout=30)
    contains(p.stdout.decode(), "DNS:shop.test", "the name in the subjectAltName")
    # the access log line is the https URL, the tunnel's own line says it was inspected
    alog(lg, r"GET https://shop\.test:%d/hello\?x=1 HTTP/1\.1 200" % site.port,
         what="the inspected request logged with its https:// URL")
    alog(lg, r"CONNECT shop\.test:%d HTTP/1\.1 200 sni=shop\.test ended=\"inspected\"" % site.port,
         what="the tunnel logged as inspected")
    # a URL filter on the path applies inside HTTPS
    n = len(site.paths)
    st, _, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                       "https://shop.test:%d/private/report" % site.port)
    eq(st, 403, "url_filters: an https:// path refused inside the tunnel")
    contains(body.decode(), "the URL matches the filter", "the 403 page says why")
    eq(len(site.paths), n, "the refused request never reached the origin")
    # keep-alive inside the tunnel: two requests, one CONNECT
    p = subprocess.run(["curl", "-sS", "--max-time", "30"] + px(port) +
                       ["--cacert", os.path.join(ca, "ca.pem"),
                        "https://shop.test:%d/one" % site.port,
                        "https://shop.test:%d/two" % site.port], capture_output=True, timeout=60)
    out = p.stdout.decode()
    ok(p.returncode == 0 and "/one host=" in out and "/two host=" in out,
       "two requests in one inspected tunnel: %r %r" % (out, p.stderr[-300:]))
    alog(lg, r"GET https://shop\.test:%d/two HTTP/1\.1 200" % site.port, what="the second logged")
    tail = open(lg.access_log).read().split("/private/report", 1)[1]
    eq(tail.count("CONNECT shop.test"), 1,
       "one CONNECT carried both (keep-alive inside the inspected tunnel): %r" % tail)
    # the cache serves an inspected URL (keyed https://...) without the origin
    url = "https://shop.test:%d/cached" % site.port
    st, hs, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"), url)
    eq((st, hs.get("X-Cache")), (200, "MISS"), "first fetch of a cacheable inspected URL")
    for i in range(3):
        st, hs, b = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"), url)
        eq((st, hs.get("X-Cache"), b), (200, "HIT", body), "a cache hit inside HTTPS")
    eq(site.paths.count("/cached"), 1, "the origin was asked once")
    # a wildcard entry covers subdomains... of names with their own certificate name
    st, _, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                       "https://web.test:%d/w" % site.port)
    eq(st, 200, "web.test inspected")


@test(timeout=120)
def workers_share_the_minted_certificates():
    """Two workers, many tunnels to one name (each a new connection, spread
    by SO_REUSEPORT): every client is shown the same certificate, minted
    once by whichever worker came first and found by the other in shared
    memory, with the key the master made for all of them."""
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    lg = Legate(conf(port, d, ca), workers=2)
    serials = set()
    for i in range(12):
        leaf = leaf_via_proxy(port, "shop.test", site.port, d)
        p = subprocess.run(["openssl", "x509", "-in", leaf, "-noout", "-serial"], capture_output=True,
                           timeout=30)
        serials.add(p.stdout.decode().strip())
        ok(verifies(leaf, os.path.join(ca, "ca.pem"), "shop.test"), "tunnel %d: a valid minted certificate" % i)
    # (each worker minting its own showed two serials: checked on that build)
    eq(len(serials), 1, "one certificate for shop.test across the workers: %r" % serials)


@test
def limits_apply_inside_an_inspected_tunnel():
    """limit_req counts the requests inside the tunnel as requests of their
    own (keyed here by $scheme, so the CONNECT, an http one, is not
    among them): the second https request in a minute is refused."""
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    text = conf(port, d, ca).replace(
        "http = {", 'http = {\n    limit_req_zones = ( { name = "inner"; key = "$scheme"; rate = "1r/m"; } );', 1).replace(
        "cache = true;", 'cache = true; limit_req = { zone = "inner"; nodelay = true; };', 1)
    Legate(text, workers=1)
    cacert = ["--cacert", os.path.join(ca, "ca.pem")]
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} "] +
                       px(port) +
                       cacert + ["https://shop.test:%d/a" % site.port, "https://shop.test:%d/b" % site.port],
                       capture_output=True, timeout=60)
    codes = p.stdout.decode().split()
    eq(codes[0], "200", "the first https request inside the tunnel")
    ok(codes[1] in ("429", "503"), "the second refused by limit_req: %r" % codes)
    eq(site.paths.count("/b"), 0, "the refused one never reached the origin")


@test
def never_and_unlisted_are_spliced():
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    lg = Legate(conf(port, d, ca), workers=1)
    for name, why in (("bank.test", "tls_inspect_never wins over tls_inspect"),
                      ("plain.test", "a name not in tls_inspect")):
        st, _, body = curl(*px(port), "--cacert", os.path.join(dest, "ca.pem"),
                           "https://%s:%d/acct" % (name, site.port))
        eq((st, body), (200, ("origin %s /acct host=%s:%d\n" % (name, name, site.port)).encode()),
           "%s spliced: the origin's own certificate verifies (%s)" % (name, why))
        leaf = leaf_via_proxy(port, name, site.port, d)
        ok(verifies(leaf, os.path.join(dest, "ca.pem"), name) and
           not verifies(leaf, os.path.join(ca, "ca.pem"), name),
           "%s: the client sees the origin's certificate, not a minted one" % name)
        alog(lg, r"CONNECT %s:%d HTTP/1\.1 200 sni=%s ended=\"closed\"" %
             (re.escape(name), site.port, re.escape(name)), what="%s logged as a tunnel" % name)
    text = open(lg.access_log).read()
    ok("GET https://bank.test" not in text and "GET https://plain.test" not in text,
       "nothing of the spliced tunnels was seen as a request")


@test
def tunnel_inside_tls_to_the_proxy_is_spliced():
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    text = conf(port, d, ca).replace('listen = ( "127.0.0.1:%d" );' % port,
                                     'listen = ( { address = "127.0.0.1:%d"; tls = true; } ); '
                                     'tls_certificates = { cert = "%s/server-ecdsa.pem"; '
                                     'key = "%s/server-ecdsa.key"; };' % (port, SHIPPED, SHIPPED))
    lg = Legate(text, workers=1)
    st, _, body = curl("--proxy", "https://localhost:%d" % port, "--proxy-cacert",
                       os.path.join(SHIPPED, "ca.pem"), "--cacert", os.path.join(dest, "ca.pem"),
                       "https://shop.test:%d/in" % site.port)
    eq((st, body), (200, ("origin shop.test /in host=shop.test:%d\n" % site.port).encode()),
       "an HTTPS proxy's tunnel is spliced, even for a tls_inspect name: the origin's certificate")
    alog(lg, r"CONNECT shop\.test:%d HTTP/1\.1 200 sni=\S+ ended=\"closed\"" % site.port,
         what="logged as a spliced tunnel")
    ok("GET https://" not in open(lg.access_log).read(), "no request was seen inside it")


@test
def destination_that_does_not_verify_is_refused():
    d, ca, dest = setup()
    cert, key = self_signed(d, "bad.test")
    bad = TlsSite(cert, key)
    good = make_site(dest)
    port = free_port()
    lg = Legate(conf(port, d, ca), workers=1)
    lg.allow_log(r"TLS handshake with upstream failed")
    st, _, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                       "https://bad.test:%d/secret" % bad.port)
    eq(st, 502, "a self-signed destination: 502 inside the inspected tunnel")
    eq(bad.paths, [], "no request went to it")
    lg.wait_log(r"\[error\].*TLS handshake with upstream failed: .*(self.signed|verify)",
                what="the error log says why (self-signed)")
    # a destination whose certificate is for other names
    st, _, body = curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                       "https://wrong.example:%d/secret" % good.port)
    eq(st, 502, "a certificate for another name: 502")
    eq(good.paths, [], "nothing reached it")
    lg.wait_log(r"\[error\].*TLS handshake with upstream failed: .*(hostname mismatch|verify)",
                what="the error log says the name did not match")
    alog(lg, r"GET https://wrong\.example:%d/secret HTTP/1\.1 502" % good.port,
         what="the refused request in the access log")


@test
def no_fd_leak():
    d, ca, dest = setup()
    site = make_site(dest)
    cert, key = self_signed(d, "bad.test")
    bad = TlsSite(cert, key)
    port = free_port()
    lg = Legate(conf(port, d, ca, "keepalive = 0;"), workers=1)
    lg.allow_log(r"TLS handshake with upstream failed")
    w = lg.wait_workers()[0]
    hello = client_hello("shop.test")

    def rounds(n):
        for i in range(n):
            curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                 "https://shop.test:%d/r%d" % (site.port, i))
            curl(*px(port), "--cacert", os.path.join(ca, "ca.pem"),
                 "https://bad.test:%d/r%d" % (bad.port, i))
            curl(*px(port), "--cacert", os.path.join(dest, "ca.pem"),
                 "https://plain.test:%d/r%d" % (site.port, i))
            # a client that gives up in the middle of the inspected handshake
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"CONNECT shop.test:%d HTTP/1.1\r\nHost: x\r\n\r\n" % site.port)
            head = s.recv(100)
            ok(head.startswith(b"HTTP/1.1 200"), "CONNECT answered: %r" % head)
            s.sendall(hello)
            s.recv(100)         # legate's ServerHello: the handshake began
            s.close()
    rounds(2)
    base = wait_until(lambda: fd_count(w), 5, what="fd count")
    rounds(6)
    wait_until(lambda: fd_count(w) <= base, 15,
               what="the worker's descriptors back to %d (now %d)" % (base, fd_count(w)))


@test
def config_errors():
    d, ca, dest = setup()
    cases = (
        ('tls_inspect_ca = "%s/nope.pem";' % d, "cannot read"),
        ('tls_inspect_ca_key = "%s/server-rsa.key";' % SHIPPED, "is not the key of"),
        ('tls_inspect_ca = "%s/server-rsa.pem"; tls_inspect_ca_key = "%s/server-rsa.key";'
         % (SHIPPED, SHIPPED), "is not a CA certificate"),
        ('tls_inspect_verify = "%s/none.pem";' % d, "'tls_inspect_verify'"),
    )
    for extra, msg in cases:
        text = conf(free_port(), d, ca, "")
        # the later setting wins in libconfig? no: duplicates are errors, so replace
        for k in ("tls_inspect_ca", "tls_inspect_ca_key", "tls_inspect_verify"):
            if extra.startswith(k + " ") or (" " + k + " ") in extra:
                text = re.sub(r'\b%s = "[^"]*";' % k, "", text)
        text = text.replace("connect_ports", extra + " connect_ports")
        path = os.path.join(d, "bad.conf")
        with open(path, "w") as f:
            f.write(text)
        rc, out, err = run_legate(["-t", "-p", d, "-c", path], prefix=d)
        err = str(err) + str(out)
        ok(rc != 0, "legate -t refuses %s" % extra)
        ok(re.search(r"bad\.conf:\d+: .*" + re.escape(msg), err),
           "file:line: message for %s: %r" % (extra, err[:300]))
    # tls_inspect without a CA
    path = os.path.join(d, "noca.conf")
    with open(path, "w") as f:
        f.write(re.sub(r'tls_inspect_ca(_key)? = "[^"]*";', "", conf(free_port(), d, ca)))
    rc, out, err = run_legate(["-t", "-p", d, "-c", path], prefix=d)
    ok(rc != 0 and re.search(r"noca\.conf:\d+: 'tls_inspect' needs 'tls_inspect_ca'", err + out),
       "tls_inspect without a CA: %r" % (err + out)[:300])
    # and a good one passes
    path = os.path.join(d, "good.conf")
    with open(path, "w") as f:
        f.write(conf(free_port(), d, ca))
    rc, out, err = run_legate(["-t", "-p", d, "-c", path], prefix=d)
    eq(rc, 0, "the inspecting configuration passes legate -t (%s)" % (err + out)[:300])


class Browser:
    def __init__(self):
        if CHROMIUM is None:
            raise SkipFile("chromium not installed (scripts/bootstrap installs it)")
        self.dir = tempfile.mkdtemp(prefix="legate-chromium-")
        _track(self)

    def dump_dom(self, proxy, url, spki, timeout=90):
        cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update",
               "--ignore-certificate-errors-spki-list=" + spki,
               "--user-data-dir=" + os.path.join(self.dir, "profile"),
               "--proxy-server=" + proxy, "--proxy-bypass-list=<-loopback>",
               "--virtual-time-budget=10000", "--dump-dom", url]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def spki_hash(pem):
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate: what
    --ignore-certificate-errors-spki-list trusts."""
    pub = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-pubkey"],
                         capture_output=True, check=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True, timeout=30).stdout
    import base64
    import hashlib
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@test(timeout=300)
def chromium_loads_an_inspected_page():
    b = Browser()
    d, ca, dest = setup()
    site = make_site(dest)
    port = free_port()
    lg = Legate(conf(port, d, ca), workers=2)
    dom, err = b.dump_dom("http://127.0.0.1:%d" % port, "https://shop.test:%d/page" % site.port,
                          spki_hash(os.path.join(ca, "ca.pem")))
    contains(dom, "fetched:inspected", "Chromium trusted the inspect CA, the page's script ran "
             "and fetched through the inspected tunnel (stderr: %s)" % err[-800:])
    # trusting another key instead, the minted certificate is refused
    dom, err = b.dump_dom("http://127.0.0.1:%d" % port, "https://shop.test:%d/page?again" %
                          site.port, spki_hash(os.path.join(dest, "ca.pem")))
    ok("fetched:inspected" not in dom and "/page?again" not in site.paths,
       "without the inspect CA trusted, Chromium does not load the page")
    alog(lg, r"GET https://shop\.test:%d/data\.json HTTP/1\.1 200" % site.port,
         what="the page's fetch logged as an https:// request")
    ok("/page" in site.paths and "/data.json" in site.paths, "origin saw %r" % site.paths)


if __name__ == "__main__":
    main()

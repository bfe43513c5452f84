#!/usr/bin/env python3
"""Static files (issue 17): root, alias, index, try_files with a fallback
to a named route (the ACME http-01 webroot, the maintenance page),
ETag / Last-Modified and conditional requests, byte ranges, MIME types,
sendfile and the buffered path (HTTP/2), and no way out of the root."""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

SECRET = b"SECRET-OUTSIDE-THE-ROOT\n"
MKCERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "mkcert")


class TmpDir:
    """A directory removed at teardown."""

    def __init__(self, path):
        self.path = path

    def teardown(self):
        shutil.rmtree(self.path, ignore_errors=True)


@session
def site():
    top = tempfile.mkdtemp(prefix="legate-static-")
    _track(TmpDir(top))
    root = os.path.join(top, "www")
    acme = os.path.join(top, "acme")
    maint = os.path.join(top, "maint")
    for d in (root, acme, maint, os.path.join(root, "sub"), os.path.join(root, "noindex"),
              os.path.join(root, "linked")):
        os.makedirs(d)

    def put(path, data):
        with open(path, "wb") as f:
            f.write(data)
    put(os.path.join(top, "secret.txt"), SECRET)
    put(os.path.join(root, "index.html"), b"<h1>home</h1>\n")
    put(os.path.join(root, "a.txt"), b"0123456789abcdefghij\n")
    put(os.path.join(root, "style.css"), b"body{}\n")
    put(os.path.join(root, "data.unknownext"), b"?\n")
    put(os.path.join(root, "sub", "index.html"), b"sub index\n")
    put(os.path.join(root, "noindex", "x.txt"), b"x\n")
    put(os.path.join(root, "%2e%2e"), b"a file named %2e%2e\n")
    big = os.urandom(3 * 1024 * 1024 + 17)
    put(os.path.join(root, "big.bin"), big)
    os.symlink(os.path.join(root, "a.txt"), os.path.join(root, "inside-link.txt"))
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "outside-link.txt"))
    os.symlink(top, os.path.join(root, "linked", "up"))
    put(os.path.join(acme, "tok123"), b"tok123.thumbprint\n")
    put(os.path.join(maint, "maintenance.html"), b"<p>down for maintenance</p>\n")
    certs = os.path.join(top, "certs")
    os.makedirs(certs)
    subprocess.run(["sh", MKCERT, certs], check=True, capture_output=True, timeout=120)
    o = Origin("app")
    # the ports last, right before legate binds them: the certificates take
    # seconds, and a port found free is only free until someone takes it
    port, h2port, tlsport = free_port(), free_port(), free_port()
    lg = Legate("""
http = {
  upstreams = { app = { servers = ( "%(o)s" ); }; };
  servers = ( {
    listen = ( "127.0.0.1:%(port)d", { address = "127.0.0.1:%(h2)d"; http2 = true; },
               { address = "127.0.0.1:%(tls)d"; tls = true; } );
    tls_certificates = { cert = "%(certs)s/server-rsa.pem"; key = "%(certs)s/server-rsa.key"; };
    routes = (
      { prefix = "/"; root = "%(root)s"; default_type = "application/octet-stream"; },
      { prefix = "/.well-known/acme-challenge/"; alias = "%(acme)s/";
        try_files = [ "$uri", "=404" ]; },
      { prefix = "/nolinks/"; alias = "%(root)s"; symlinks = "off"; },
      { prefix = "/anylinks/"; alias = "%(root)s"; symlinks = "on"; },
      { prefix = "/img"; alias = "%(root)s"; symlinks = "on"; },
      { prefix = "/app/"; root = "%(maint)s"; try_files = [ "/maintenance.html", "@backend" ]; },
      { prefix = "/spa/"; root = "%(root)s"; try_files = [ "$uri", "$uri/", "@backend" ]; },
      { prefix = "/gone/"; root = "%(root)s"; try_files = [ "$uri", "@teapot" ]; },
      { name = "backend"; proxy_pass = "app"; },
      { name = "teapot"; return = 418; body = "short and stout\\n"; }
    );
  } );
};
""" % dict(o=o.address, port=port, h2=h2port, tls=tlsport, certs=certs, root=root, acme=acme,
           maint=maint))
    # lg.port is the lowest of the listen ports: make it the plain HTTP one
    lg.addrs = [("tcp", "127.0.0.1", port)] + [x for x in lg.addrs if x != ("tcp", "127.0.0.1", port)]
    eq(lg.port, port)
    return lg, dict(top=top, root=root, acme=acme, maint=maint, big=big, origin=o, h2port=h2port,
                    tlsport=tlsport)


def raw_get(target, extra=""):
    lg = site()[0]
    data = http_raw(lg.port, ("GET %s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n"
                              % (target, extra)).encode(), timeout=10)
    return data


@test
def a_file_with_its_validators_and_type():
    lg, d = site()
    st, h, body = curl(lg.url("/a.txt"))
    eq(st, 200)
    eq(body, b"0123456789abcdefghij\n")
    eq(h.get("Content-Type"), "text/plain")
    eq(h.get("Content-Length"), "21")
    eq(h.get("Accept-Ranges"), "bytes")
    s = os.stat(os.path.join(d["root"], "a.txt"))
    eq(h.get("ETag"), '"%x-%x"' % (int(s.st_mtime), s.st_size))      # nginx's form
    ok(h.get("Last-Modified", "").endswith(" GMT"), h.get("Last-Modified"))
    eq(curl(lg.url("/style.css"))[1].get("Content-Type"), "text/css")
    eq(curl(lg.url("/data.unknownext"))[1].get("Content-Type"), "application/octet-stream")


@test
def index_directory_redirect_and_no_listing():
    lg = site()[0]
    st, h, body = curl(lg.url("/"))
    eq((st, body), (200, b"<h1>home</h1>\n"))
    eq(h.get("Content-Type"), "text/html")
    st, h, body = curl(lg.url("/sub?x=1"))
    eq(st, 301)
    # absolute, as nginx's absolute_redirect: Host's name, the port the
    # request came to (port_in_redirect), the query kept
    eq(h.get("Location"), "http://127.0.0.1:%d/sub/?x=1" % lg.port)
    st, h, _ = curl("-H", "Host: www.example:9999", lg.url("/sub"))
    eq((st, h.get("Location")), (301, "http://www.example:%d/sub/" % lg.port))
    st, h, _ = curl("-k", "https://127.0.0.1:%d/sub" % site()[1]["tlsport"])
    eq((st, h.get("Location")), (301, "https://127.0.0.1:%d/sub/" % site()[1]["tlsport"]))
    st, h, _ = curl("--http2-prior-knowledge", "-H", "Host: h2.example",
                    "http://127.0.0.1:%d/sub?y" % site()[1]["h2port"])
    eq((st, h.get("Location")), (301, "http://h2.example:%d/sub/?y" % site()[1]["h2port"]))
    eq(curl(lg.url("/sub/"))[2], b"sub index\n")
    eq(curl(lg.url("/noindex/"), check=False)[0], 403)
    eq(curl(lg.url("/missing.txt"), check=False)[0], 404)


@test
def conditional_requests():
    lg = site()[0]
    st, h, _ = curl(lg.url("/a.txt"))
    etag, lm = h["ETag"], h["Last-Modified"]
    r = request(lg.port, target="/a.txt", headers=[("If-None-Match", 'W/%s, "other"' % etag)])
    eq((r.status, r.body), (304, b""))
    eq(r.headers.get("ETag"), etag)
    eq(r.headers.get("Content-Length"), None)
    r = request(lg.port, target="/a.txt", headers=[("If-Modified-Since", lm)])
    eq(r.status, 304)
    eq(curl("-H", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT", lg.url("/a.txt"))[0], 200)
    # If-None-Match wins over If-Modified-Since
    eq(curl("-H", 'If-None-Match: "nope"', "-H", "If-Modified-Since: " + lm, lg.url("/a.txt"))[0], 200)
    eq(curl("-H", 'If-Match: "nope"', lg.url("/a.txt"))[0], 412)
    eq(curl("-H", "If-Match: " + etag, lg.url("/a.txt"))[0], 200)
    eq(curl("-H", "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT", lg.url("/a.txt"))[0], 412)


@test
def byte_ranges():
    lg = site()[0]
    st, h, body = curl("-H", "Range: bytes=2-5", lg.url("/a.txt"))
    eq((st, body, h.get("Content-Range"), h.get("Content-Length")), (206, b"2345", "bytes 2-5/21", "4"))
    st, h, body = curl("-H", "Range: bytes=-3", lg.url("/a.txt"))
    eq((st, body, h.get("Content-Range")), (206, b"ij\n", "bytes 18-20/21"))
    st, h, body = curl("-H", "Range: bytes=15-", lg.url("/a.txt"))
    eq((st, body), (206, b"fghij\n"))
    st, h, body = curl("-H", "Range: bytes=10-1000", lg.url("/a.txt"))
    eq((st, h.get("Content-Range")), (206, "bytes 10-20/21"))
    st, h, body = curl("-H", "Range: bytes=21-", lg.url("/a.txt"))
    eq((st, h.get("Content-Range")), (416, "bytes */21"))
    st, h, body = curl("-H", "Range: bytes=0-1,4-5", lg.url("/a.txt"))
    eq((st, len(body)), (200, 21))          # several ranges: the whole file
    st, h, body = curl("-H", "Range: bytes=0-1", "-H", 'If-Range: "stale"', lg.url("/a.txt"))
    eq((st, len(body)), (200, 21))
    etag = curl(lg.url("/a.txt"))[1]["ETag"]
    st, h, body = curl("-H", "Range: bytes=0-1", "-H", "If-Range: " + etag, lg.url("/a.txt"))
    eq((st, body), (206, b"01"))
    st, h, body = curl("-H", "Range: bytes=1048576-1048585", lg.url("/big.bin"))
    eq((st, body), (206, site()[1]["big"][1048576:1048586]))


@test
def head_and_other_methods():
    lg = site()[0]
    r = request(lg.port, method="HEAD", target="/a.txt")
    eq((r.status, r.body, r.headers.get("Content-Length")), (200, b"", "21"))
    st, h, body = curl("-X", "POST", "--data", "x", lg.url("/a.txt"), check=False)
    eq(st, 405)
    eq(h.get("Allow"), "GET, HEAD")


@test
def large_files_by_sendfile_and_over_http2_and_tls():
    lg, d = site()
    want = hashlib.sha256(d["big"]).hexdigest()
    tmp = tempfile.mkdtemp(prefix="legate-static-out-")
    try:
        out = os.path.join(tmp, "b")
        st, h, _ = curl(lg.url("/big.bin"), out=out)
        eq(st, 200)
        eq(hashlib.sha256(open(out, "rb").read()).hexdigest(), want)
        # several at once on one worker: each goes as its socket drains
        import threading
        res = []

        def one(i):
            p = os.path.join(tmp, "c%d" % i)
            s = curl("--limit-rate", "4M", lg.url("/big.bin"), out=p)[0]
            res.append((s, hashlib.sha256(open(p, "rb").read()).hexdigest()))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        [t.start() for t in ts]
        [t.join(60) for t in ts]
        eq(sorted(res), [(200, want)] * 4)
        h2port = d["h2port"]
        st, h, _ = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/big.bin" % h2port, out=out)
        eq(st, 200)
        eq(hashlib.sha256(open(out, "rb").read()).hexdigest(), want)
        st, h, _ = curl("-k", "https://127.0.0.1:%d/big.bin" % d["tlsport"], out=out)
        eq(st, 200)
        eq(hashlib.sha256(open(out, "rb").read()).hexdigest(), want)
        st, h, body = curl("--http2-prior-knowledge", "-H", "Range: bytes=3-6",
                           "http://127.0.0.1:%d/a.txt" % h2port)
        eq((st, body), (206, b"3456"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TRAVERSALS = [
    "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt",
    "/..%2Fsecret.txt", "/sub/..%2f..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
    "/sub/../../secret.txt", "//../secret.txt", "/./../secret.txt", "/.%2e/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt", "/..%5csecret.txt", "/%252e%252e/secret.txt",
    "/linked/up/secret.txt", "/outside-link.txt", "/a.txt%00.html",
    "/.well-known/acme-challenge/../../secret.txt",
    "/.well-known/acme-challenge/..%2f..%2fsecret.txt",
    "/.well-known/acme-challenge/%2e%2e/secret.txt",
    "/nolinks/../secret.txt", "/nolinks/%2e%2e/secret.txt", "/nolinks/outside-link.txt",
    "/nolinks/linked/up/secret.txt", "/spa/..%2f..%2fsecret.txt", "/app/..%2f..%2fsecret.txt",
    "/img../secret.txt", "/img../../secret.txt", "/img..%2fsecret.txt", "/img/../../secret.txt",
    "/anylinks/../secret.txt", "/anylinks/..%2f..%2fsecret.txt",
]


@test
def no_way_out_of_the_root():
    """Each attempt gets 400, 403 or 404 (or, for the root's own file
    named "%2e%2e", that file), and the file outside is never served."""
    for t in TRAVERSALS:
        data = raw_get(t)
        r = parse_responses(data)[0]
        ok(SECRET not in data, "%s served the file outside the root" % t)
        ok(r.status in (400, 403, 404) or (r.status == 200 and b"%2e%2e" in r.body),
           "%s: %d %r" % (t, r.status, r.body[:80]))
    # an alias prefix without its '/' still serves what is below it
    eq(curl(site()[0].url("/img/a.txt"))[2], b"0123456789abcdefghij\n")
    # the literal file named "%2e%2e" is reached only double-encoded
    r = parse_responses(raw_get("/%252e%252e"))[0]
    eq((r.status, r.body), (200, b"a file named %2e%2e\n"))


@test
def symlinks_inside_off_and_on():
    lg = site()[0]
    eq(curl(lg.url("/inside-link.txt"))[2], b"0123456789abcdefghij\n")    # "inside": kept in
    eq(curl(lg.url("/outside-link.txt"), check=False)[0], 403)
    eq(curl(lg.url("/nolinks/inside-link.txt"), check=False)[0], 403)     # "off": none
    eq(curl(lg.url("/nolinks/a.txt"))[2], b"0123456789abcdefghij\n")
    # "on" is nginx's default: the administrator's links are followed anywhere
    eq(curl(lg.url("/anylinks/outside-link.txt"))[2], SECRET)
    lg.allow_log(r"is refused")


@test
def acme_webroot_by_alias():
    lg = site()[0]
    st, h, body = curl(lg.url("/.well-known/acme-challenge/tok123"))
    eq((st, body), (200, b"tok123.thumbprint\n"))
    eq(curl(lg.url("/.well-known/acme-challenge/nothing"), check=False)[0], 404)


@test
def maintenance_page_then_the_backend():
    lg, d = site()
    st, h, body = curl(lg.url("/app/anything?x=1"))
    eq((st, body), (200, b"<p>down for maintenance</p>\n"))
    page = os.path.join(d["maint"], "maintenance.html")
    os.rename(page, page + ".off")
    try:
        st, h, body = curl(lg.url("/app/anything?x=1"))
        eq(st, 200)
        eq(h.get("X-Origin"), "app")
        eq(h.get("X-Origin-Target"), "/app/anything?x=1")
        st, h, body = curl("-X", "POST", "--data", "abc", lg.url("/app/form"))
        eq((st, h.get("X-Origin")), (200, "app"))
    finally:
        os.rename(page + ".off", page)


@test
def try_files_uri_then_directory_then_route():
    lg = site()[0]
    eq(curl(lg.url("/spa/../a.txt"), check=False)[0], 200)     # normalised to /a.txt: the / route
    os.makedirs(os.path.join(site()[1]["root"], "spa", "d"), exist_ok=True)
    with open(os.path.join(site()[1]["root"], "spa", "f.txt"), "wb") as f:
        f.write(b"spa file\n")
    with open(os.path.join(site()[1]["root"], "spa", "d", "index.html"), "wb") as f:
        f.write(b"spa dir\n")
    eq(curl(lg.url("/spa/f.txt"))[2], b"spa file\n")
    eq(curl(lg.url("/spa/d/"))[2], b"spa dir\n")
    # "$uri/" finds the directory of a path without its '/': 301 to it, as nginx
    st, h, body = curl(lg.url("/spa/d?q=1"))
    eq((st, h.get("Location")), (301, "http://127.0.0.1:%d/spa/d/?q=1" % lg.port))
    st, h, body = curl(lg.url("/spa/route/42"))
    eq((st, h.get("X-Origin")), (200, "app"))
    st, h, body = curl(lg.url("/gone/nothing"), check=False)
    eq((st, body), (418, b"short and stout\n"))


class Nginx:
    """A real nginx from a configuration text, stopped at teardown."""

    def __init__(self, conf, port):
        self.dir = tempfile.mkdtemp(prefix="legate-static-nginx-")
        os.makedirs(os.path.join(self.dir, "logs"))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf.replace("@D@", self.dir))
        self.p = subprocess.Popen([shutil.which("nginx"), "-p", self.dir, "-c", path, "-g",
                                   "daemon off; master_process off;"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _track(self)

        def up():
            if self.p.poll() is not None:
                raise TestFailure("nginx exited: %s" % open(os.path.join(self.dir, "logs",
                                                                           "error.log")).read())
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return True
            except OSError:
                return False
        wait_until(up, 15, what="nginx to listen")

    def teardown(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@test
def directory_redirects_as_nginx_makes_them():
    if shutil.which("nginx") is None:
        skip("nginx is not installed: no side-by-side run")
    lg, d = site()
    port = free_port()
    Nginx("""error_log @D@/logs/error.log; pid @D@/logs/nginx.pid;
events {}
http { access_log off; client_body_temp_path @D@; proxy_temp_path @D@; fastcgi_temp_path @D@;
  uwsgi_temp_path @D@; scgi_temp_path @D@;
  server { listen 127.0.0.1:%d; root %s;
    location /spa/ { try_files $uri $uri/ =404; } } }
""" % (port, d["root"]), port)
    os.makedirs(os.path.join(d["root"], "spa", "d"), exist_ok=True)
    with open(os.path.join(d["root"], "spa", "d", "index.html"), "wb") as f:
        f.write(b"spa dir\n")
    for target, host in (("/sub?x=1&y=%20", None), ("/sub", "www.example"),
                         ("/sub", "www.example:9999"), ("/spa/d?q=1", None), ("/spa/d/", None),
                         ("/sub/", None)):
        got = []
        for p in (port, lg.port):
            args = ["-H", "Host: " + host] if host else []
            st, h, _ = curl(*args, "http://127.0.0.1:%d%s" % (p, target), check=False)
            loc = h.get("Location")
            got.append((st, loc.replace(":%d/" % p, ":PORT/") if loc else None))
        eq(got[1], got[0], "%s Host %s: legate as nginx" % (target, host))


@test
def dump_shows_file_routes_and_loads_again():
    lg = site()[0]
    rc, err = check_config(lg.conf_text, extra_args=["-T"])
    eq(rc, 0, err)
    out = check_config.last_stdout
    for want in ['try_files = [ "$uri", "=404" ];', 'try_files = [ "/maintenance.html", "@backend" ];',
                 'name = "backend";', 'symlinks = "off";', 'index = [ "index.html" ];']:
        contains(out, want)
    rc, err = check_config(out)
    eq(rc, 0, err)


@test
def configuration_errors():
    cases = [
        ('{ prefix = "/"; root = "/tmp"; try_files = [ "$uri" ]; }', "'try_files' needs at least"),
        ('{ prefix = "/"; root = "/tmp"; try_files = [ "$uri", "$uri/" ]; }',
         "the last of 'try_files' is the fallback"),
        ('{ prefix = "/"; root = "/tmp"; try_files = [ "$uri", "@nobody" ]; }',
         "no route of this server has name = \"nobody\""),
        ('{ prefix = "/"; root = "/tmp"; index = "a/b.html"; }', "must be a file name"),
        ('{ regex = "^/x"; alias = "/tmp"; }', "'alias' replaces a prefix"),
        ('{ prefix = "/"; proxy_pass = "app"; try_files = [ "$uri", "=404" ]; }',
         "'try_files' is only allowed with 'root' or 'alias'"),
        ('{ prefix = "/"; root = "/tmp"; symlinks = "maybe"; }', "'symlinks' must be"),
        ('{ prefix = "/"; root = "/tmp"; proxy_pass = "app"; }', "route has both"),
        ('{ prefix = "/"; return = 200; name = "a"; }, { prefix = "/b"; return = 200; name = "a"; }',
         "two routes named 'a'"),
    ]
    for routes, want in cases:
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:1"], routes=routes))
        ok(rc != 0, routes)
        contains(err, want)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""legate --import-nginx: Debian's own nginx.conf (with sites-enabled/default),
and the typical edge configurations of t/nginx/ (TLS with HSTS, WebSocket,
cache with stale serving, canary split, rate-limited API, admin area with
Basic auth, static files with try_files falling back to a named location,
a map on the User-Agent, if blocks that return), each imported and checked
with legate -t, then run side by side with nginx on the same requests
(status, key headers, bodies).  Also: include globs, what is reported
(FILE:LINE: directive: why), syntax errors, resolver with server ...
resolve and listen ... quic (checked with legate -t), and random
configurations that must always load."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

TEMPLATES = os.path.join(REPO, "t", "nginx")
CERTS = os.path.join(REPO, "conf", "examples", "certs")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
_tmps = []
_procs = []


def tmpdir():
    d = tempfile.mkdtemp(prefix="legate-ngx-")
    os.chmod(d, 0o755)      # nginx's workers (nobody) read and write under it
    _tmps.append(d)
    return d


def cleanup():
    for p in _procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    del _procs[:]
    if not os.environ.get("LEGATE_TEST_KEEP"):
        for d in _tmps:
            shutil.rmtree(d, ignore_errors=True)
    del _tmps[:]


def importer(path):
    p = subprocess.run([LEGATE_BIN, "--import-nginx", path], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def check_remarks(err):
    """Every remark is FILE:LINE: directive: why (the last line sums up)."""
    lines = [l for l in err.splitlines() if l.strip()]
    ok(lines, "a summary line")
    ok(re.search(r": translated, \d+ remarks?$", lines[-1]), "summary: %r" % lines[-1])
    for l in lines[:-1]:
        ok(re.match(r"^/\S+:\d+: [a-z_0-9]+: \S", l), "remark without FILE:LINE: directive: %r" % l)


def render(name, d, **ports):
    text = open(os.path.join(TEMPLATES, name)).read()
    for k, v in ports.items():
        text = text.replace("@%s@" % k, str(v))
    text = text.replace("@CERTS@", CERTS).replace("@DIR@", d)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    shutil.copy(os.path.join(TEMPLATES, "common.inc"), d)
    if not os.path.isdir(os.path.join(d, "html")):
        shutil.copytree(os.path.join(TEMPLATES, "html"), os.path.join(d, "html"))
    for sub in ("logs", "tmp", "cache"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(os.path.join(d, sub), 0o777)
    return path


def imported(name, **ports):
    """Render the template for legate's ports, import it, check it; the text."""
    d = tmpdir()
    write_htpasswd(d)
    path = render(name, d, **ports)
    rc, out, err = importer(path)
    eq(rc, 0, err)
    check_remarks(err)
    rc, terr = check_config(out)
    eq(rc, 0, "legate -t on the import of %s:\n%s\n%s" % (name, terr, out))
    return out, err


def write_htpasswd(d):
    h = subprocess.run(["openssl", "passwd", "-apr1", "secret"], capture_output=True, timeout=30,
                       check=True).stdout.decode().strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("admin:%s\n" % h)
    os.chmod(os.path.join(d, "htpasswd"), 0o644)


def start_nginx(name, **ports):
    if NGINX is None:
        skip("nginx is not installed: no side-by-side run")
    d = tmpdir()
    write_htpasswd(d)
    path = render(name, d, **ports)
    p = subprocess.Popen([NGINX, "-p", d, "-c", path, "-g", "daemon off;"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(d, "stderr.log"), "wb"))
    _procs.append(p)

    def up():
        if p.poll() is not None:
            raise TestFailure("nginx exited: %s" % open(os.path.join(d, "stderr.log")).read())
        return all(_port_open(ports[k]) for k in ports if k.endswith("PORT"))
    wait_until(up, 15, what="nginx to listen")
    return p


def _port_open(port):
    import socket
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pair(name, origins=1, tls=False):
    """nginx and legate from the same template, each with its own origins."""
    on = [Origin("o%d" % i) for i in range(origins)]
    ol = [Origin("o%d" % i) for i in range(origins)]     # the same names: equal bodies
    np, lp = free_port(), free_port()
    nports = {"PORT": np, "ORIGIN": on[0].address}
    lports = {"PORT": lp, "ORIGIN": ol[0].address}
    if origins > 1:
        nports["ORIGIN2"], lports["ORIGIN2"] = on[1].address, ol[1].address
    if tls:
        nports["TLSPORT"], lports["TLSPORT"] = free_port(), free_port()
    start_nginx(name, **nports)
    text, err = imported(name, **lports)
    # the harness waits for the "started" notice: log at notice level
    lg = Legate(re.sub(r'^error_log_level = .*\n', '', text, flags=re.M), workers=None)
    return nports, lports, on, ol, lg, err


def same(np, lp, path, headers=(), what=None):
    rn = request(np, target=path, headers=headers, host="localhost")
    rl = request(lp, target=path, headers=headers, host="localhost")
    eq(rl.status, rn.status, "status of %s (nginx %d)" % (path, rn.status))
    if rn.status == 200:
        eq(rl.body, rn.body, "body of %s" % path)
    return rn, rl


# ---------------------------------------------------------------- Debian's

@test
def debian_default_nginx_conf():
    main = "/etc/nginx/nginx.conf"
    if not os.path.exists(main):
        skip("no /etc/nginx/nginx.conf (scripts/bootstrap installs nginx)")
    rc, out, err = importer(main)
    eq(rc, 0, err)
    check_remarks(err)
    rc, terr = check_config(out)
    eq(rc, 0, "%s\n%s" % (terr, out))
    contains(out, 'worker_processes = "auto";')
    site = "/etc/nginx/sites-enabled/default"
    if os.path.exists(site):
        # the site comes in through include /etc/nginx/sites-enabled/*
        contains(out, '{ address = "0.0.0.0:80"; default = true; }')
        contains(out, '{ address = "[::]:80"; default = true; }')
        # root, index and try_files: a file route, as nginx serves the site
        contains(out, 'root = "/var/www/html";')
        contains(out, 'try_files = [ "$uri", "$uri/", "=404" ];')
        ok(not re.search(r"^%s:\d+: (try_files|root|index):" % re.escape(site), err, re.M),
           "root, index, try_files not reported:\n" + err)
    ok(re.search(r"^/etc/nginx/nginx.conf:\d+: sendfile: not translated", err, re.M),
       "sendfile reported")


@test
def debian_default_site_with_a_proxy():
    """sites-available/default as a sysadmin turns it into a reverse proxy."""
    src = "/etc/nginx/sites-available/default"
    if not os.path.exists(src):
        skip("no %s" % src)
    d = tmpdir()
    o = Origin("app")
    port = free_port()
    site = open(src).read()
    site = re.sub(r"listen 80 default_server;", "listen 127.0.0.1:%d default_server;" % port, site)
    site = re.sub(r"\n\s*listen \[::\]:80 default_server;", "", site)
    site = site.replace("try_files $uri $uri/ =404;",
                        "proxy_pass http://%s;\n\t\tproxy_set_header Host $host;" % o.address)
    os.makedirs(os.path.join(d, "sites-enabled"))
    with open(os.path.join(d, "sites-enabled", "default"), "w") as f:
        f.write(site)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("events { }\nhttp {\n    include sites-enabled/*;\n}\n")
    rc, out, err = importer(os.path.join(d, "nginx.conf"))
    eq(rc, 0, err)
    check_remarks(err)
    lg = Legate(out.replace("http = {", 'http = {\n    access_log = "{prefix}/logs/access.log";', 1))
    r = request(port, target="/x?size=7")
    eq(r.status, 200)
    eq(r.body, pattern(7))
    eq(r.headers.get("X-Origin"), "app")
    lg.stop()


# ---------------------------------------------------------------- edge configs, side by side

@test(timeout=120)
def tls_with_hsts_side_by_side():
    if not have_curl():
        skip("curl is not installed")
    np, lp, on, ol, lg, err = pair("tls-hsts.conf", tls=True)
    contains(err, "tls-hsts.conf:24: proxy_http_version: not translated")
    # the plain port redirects to https, the same way
    rn = request(np["PORT"], target="/a?b=1", host="localhost")
    rl = request(lp["PORT"], target="/a?b=1", host="localhost")
    eq(rn.status, 301)
    eq(rl.status, 301)
    eq(rl.headers.get("Location"), "https://localhost:%d/a?b=1" % lp["TLSPORT"])
    eq(rn.headers.get("Location"), "https://localhost:%d/a?b=1" % np["TLSPORT"])
    sn, hn, bn = curl("-sk", "--resolve", "localhost:%d:127.0.0.1" % np["TLSPORT"],
                      "https://localhost:%d/x?size=300" % np["TLSPORT"])
    sl, hl, bl = curl("-sk", "--resolve", "localhost:%d:127.0.0.1" % lp["TLSPORT"],
                      "https://localhost:%d/x?size=300" % lp["TLSPORT"])
    eq((sl, bl), (sn, bn), "status and body over TLS")
    eq(hl.get("Strict-Transport-Security"), hn.get("Strict-Transport-Security"))
    eq(hl.get("Strict-Transport-Security"), "max-age=63072000")


@test(timeout=120)
def websocket_idiom_side_by_side():
    np, lp, on, ol, lg, err = pair("websocket.conf")
    ok("map" not in err, "the $http_upgrade map is not reported:\n" + err)
    for path in ("/ws/chat?size=10", "/other?size=20"):
        rn, rl = same(np["PORT"], lp["PORT"], path)
        eq(rl.headers.get("X-Origin-Target"), rn.headers.get("X-Origin-Target"))


@test(timeout=120)
def cache_with_stale_side_by_side():
    np, lp, on, ol, lg, err = pair("cache-stale.conf")
    ok("upstream_cache_status" not in err and "proxy_cache_use_stale" not in err,
       "$upstream_cache_status and proxy_cache_use_stale translated:\n" + err)
    path = "/c?size=100&hdr=Cache-Control:max-age=60"
    for want in ("MISS", "HIT", "HIT"):
        rn, rl = same(np["PORT"], lp["PORT"], path)
        eq(rn.headers.get("X-Cache-Status"), want, "nginx's $upstream_cache_status")
        eq(rl.headers.get("X-Cache-Status"), want, "legate's $cache_status")
    for o, who in ((on[0], "nginx"), (ol[0], "legate")):
        eq(o.stats()["by_path"].get("/c", 0), 1, "%s asked its origin once" % who)
    rn, rl = same(np["PORT"], lp["PORT"], "/healthz")
    eq(rl.body, b"ok\n")


@test(timeout=120)
def static_files_map_and_stale_side_by_side():
    """root with try_files falling back to a named location that proxies, a
    map on $http_user_agent in a header, set, proxy_cache_use_stale."""
    np, lp, on, ol, lg, err = pair("static-map.conf")
    text, _ = imported("static-map.conf", PORT=lp["PORT"], ORIGIN=ol[0].address)
    for want in ['try_files = [ "$uri", "$uri/", "@app" ];', 'name = "app";',
                 'index = [ "index.html" ];', '{ variable = "ua_class"; source = "$http_user_agent";',
                 '[ "~*(bot|spider)", "bot" ]', '[ "~^curl/([0-9]+)", "curl-$1" ]',
                 'set = { tier = "t-$ua_class"; };',
                 'cache_use_stale = "error timeout updating http_502 http_503";',
                 'X-Cache-Status = "$cache_status";', 'cache_disk_size = "32m";',
                 'cache_disk_inactive = "600s";']:
        contains(text, want)
    # the resolver serves no upstream with resolve here: reported
    contains(err, "static-map.conf:9: resolver: not translated")
    for ua, cls in (("curl/8.1", "curl-8"), ("Mozilla", "browser"), ("Googlebot/2.1", "bot"),
                    ("wget", "other")):
        h = [("User-Agent", ua)]
        # a file, a directory's index, and a miss handed to the application
        for path in ("/hello.txt", "/docs/", "/app/x?size=10"):
            rn, rl = same(np["PORT"], lp["PORT"], path, headers=h)
            eq(rl.status, 200, path)
            eq(rl.headers.get("X-UA-Class"), rn.headers.get("X-UA-Class"), "map of " + ua)
            eq(rl.headers.get("X-UA-Class"), cls, "map of %s on %s" % (ua, path))
        eq(rl.headers.get("X-Origin"), "o0", "the fallback proxies")
    rn, rl = same(np["PORT"], lp["PORT"], "/hello.txt")
    eq(rl.body, b"hello from the disk\n")
    eq(rl.headers.get("X-Origin"), None, "a file, not the origin")
    # try_files' "$uri/" on a path without its "/": a 301 to it, as nginx's
    # (absolute, with the port each listens on), then the index
    rn = request(np["PORT"], target="/docs?a=1", host="localhost")
    rl = request(lp["PORT"], target="/docs?a=1", host="localhost")
    eq((rn.status, rl.status), (301, 301), "/docs")
    eq(rn.headers.get("Location"), "http://localhost:%d/docs/?a=1" % np["PORT"])
    eq(rl.headers.get("Location"), "http://localhost:%d/docs/?a=1" % lp["PORT"])
    rl = request(lp["PORT"], target="/docs/", host="localhost")
    eq(rl.body, b"<html><body>docs index</body></html>\n")
    path = "/cached/c?size=100&hdr=Cache-Control:max-age=60"
    for want in ("MISS", "HIT", "HIT"):
        rn, rl = same(np["PORT"], lp["PORT"], path, headers=[("User-Agent", "Googlebot")])
        eq(rl.headers.get("X-Cache-Status"), want)
        eq(rn.headers.get("X-Cache-Status"), want)
        eq(rl.headers.get("X-Tier"), rn.headers.get("X-Tier"))
        eq(rl.headers.get("X-Tier"), "t-bot")
    for o, who in ((on[0], "nginx"), (ol[0], "legate")):
        eq(o.stats()["by_path"].get("/cached/c", 0), 1, "%s asked its origin once" % who)


@test(timeout=120)
def if_return_side_by_side():
    """if blocks that only return: routes with a condition (if = ...)."""
    np, lp, on, ol, lg, err = pair("if-return.conf")
    ok(":14: if:" not in err and ":15: if:" not in err, "the ifs translated:\n" + err)
    for method, path, headers in (("GET", "/a?size=5", ()),
                                  ("GET", "/a", [("User-Agent", "Googlebot")]),
                                  ("POST", "/a", ()),
                                  ("GET", "/a", [("X-Mode", "maintenance")]),
                                  ("GET", "/a", [("X-Mode", "other")]),
                                  ("GET", "/a?old=1", ()),
                                  ("GET", "/item/42", ()),
                                  ("GET", "/item/42?json=1", ())):
        rn = request(np["PORT"], method=method, target=path, headers=headers, host="localhost",
                     body=b"" if method == "POST" else None)
        rl = request(lp["PORT"], method=method, target=path, headers=headers, host="localhost",
                     body=b"" if method == "POST" else None)
        what = "%s %s %r" % (method, path, headers)
        eq(rl.status, rn.status, what)
        if rn.status in (200, 503):
            eq(rl.body, rn.body, what)
    eq(request(lp["PORT"], target="/item/42?json=1").body, b'{"id":42}')
    eq(request(lp["PORT"], target="/a", headers=[("User-Agent", "Googlebot")]).status, 403)


@test
def resolve_quic_and_if_translate():
    """server ... resolve with resolver, listen ... quic beside ssl, and
    what stays reported."""
    path, rc, out, err = translated("""events {}
http {
  resolver 127.0.0.53 10.9.9.9:5353 dns.example valid=30s;
  upstream dyn { server backend.invalid:8080 resolve; }
  server {
    listen 127.0.0.1:9443 ssl;
    listen 127.0.0.1:9443 quic reuseport;
    listen 127.0.0.1:9444 quic;
    http3 on;
    add_header Alt-Svc 'h3=":9443"; ma=86400';
    ssl_certificate %s/server-rsa.pem;
    ssl_certificate_key %s/server-rsa.key;
    max_ranges 4;
    location / { proxy_pass http://dyn; proxy_set_header Host $host; }
  }
  geo $g { default 0; }
  server {
    listen 127.0.0.1:9445;
    location / {
      if (-f $request_filename) { return 404; }
      if ($http_a = "b c") { return 400; }
      if ($uri ~ ^/(x)) { return 302 /y/$1; }
      if ($arg_z) { set $q 1; }
      return 204;
    }
  }
}
""" % (CERTS, CERTS))
    eq(rc, 0, err)
    check_remarks(err)
    for want in ['resolve = true;', 'resolvers = [ "127.0.0.53", "10.9.9.9:5353" ];',
                 'resolve_valid = "30s";', '{ address = "backend.invalid:8080"; }',
                 'cache_max_ranges = 4;']:
        contains(out, want)
    for want in [':3: resolver: "dns.example": legate\'s resolvers are addresses',
                 ':8: listen: legate runs QUIC beside a TLS listen of the same address',
                 ':16: geo: geo is not in legate',
                 ':20: if: file tests (-f, -d, -e, -x) are not in legate',
                 ':21: if: an empty value or one with spaces is not in legate',
                 ':22: if: $1..$9 of the if\'s regex are not set in legate',
                 ':23: if: only an if that just returns is translated']:
        contains(err, path + want)
    ok("does not resolve" not in err, "a name with resolve is not looked up now:\n" + err)
    rc, terr = check_config(out)
    if "built without HTTP/3" in terr:
        skip("this legate has no HTTP/3")
    contains(out, 'tls = true; quic = true; }')
    contains(err, path + ":10: add_header: legate sends Alt-Svc itself on a server with quic")
    eq(rc, 0, "%s\n%s" % (terr, out))


@test(timeout=120)
def canary_split_side_by_side():
    np, lp, on, ol, lg, err = pair("canary.conf", origins=2)
    contains(err, "canary.conf:9: split_clients:")
    for port, origins in ((np["PORT"], on), (lp["PORT"], ol)):
        seen = set()
        for _ in range(10):
            r = request(port, target="/x?size=5")
            eq(r.status, 200)
            seen.add(r.headers.get("X-Origin"))
        eq(len(seen), 1, "one client stays in one cohort: %s" % seen)
        ok(seen <= {origins[0].name, origins[1].name}, "%s" % seen)
        eq(request(port, target="/stable/y").headers.get("X-Origin"), origins[0].name)


@test(timeout=120)
def rate_limited_api_side_by_side():
    np, lp, on, ol, lg, err = pair("ratelimit-api.conf", origins=2)
    for port, who in ((np["PORT"], "nginx"), (lp["PORT"], "legate")):
        st = [request(port, target="/api/q").status for _ in range(8)]
        eq(st[:3], [200, 200, 200], "%s: the rate and the burst: %s" % (who, st))
        ok(429 in st, "%s refuses past the burst with 429: %s" % (who, st))
        eq(request(port, target="/free").status, 200, "%s: / is not limited" % who)
    eq(on[1].stats()["requests"], 0, "the backup stays idle (nginx)")
    eq(ol[1].stats()["requests"], 0, "the backup stays idle (legate)")


@test(timeout=120)
def admin_area_side_by_side():
    np, lp, on, ol, lg, err = pair("admin-basic.conf")
    import base64
    auth = ("Authorization", "Basic " + base64.b64encode(b"admin:secret").decode())
    rn, rl = same(np["PORT"], lp["PORT"], "/admin/x")
    eq(rn.status, 401)
    contains(rl.headers.get("WWW-Authenticate", ""), 'realm="Admin area"')
    rn, rl = same(np["PORT"], lp["PORT"], "/admin/x?size=9", headers=[auth])
    eq(rn.status, 200)
    eq(rl.headers.get("X-Origin-Target"), rn.headers.get("X-Origin-Target"))
    eq(rl.headers.get("X-Origin-Target"), "/x?size=9", "the prefix replaced by proxy_pass's URI")
    rn, rl = same(np["PORT"], lp["PORT"], "/pics/a.PNG")
    eq(rn.status, 403)
    rn, rl = same(np["PORT"], lp["PORT"], "/old/page")
    eq(rn.status, 301)
    ok(rn.headers.get("Location").endswith("/new/page"), rn.headers.get("Location"))
    ok(rl.headers.get("Location").endswith("/new/page"), rl.headers.get("Location"))
    rn, rl = same(np["PORT"], lp["PORT"], "/home?size=4")
    eq(rl.headers.get("X-Frame-Options"), rn.headers.get("X-Frame-Options"))
    eq(rl.headers.get("X-Frame-Options"), "DENY")


@test(timeout=120)
def auth_request_side_by_side():
    np, lp, on, ol, lg, err = pair("auth-request.conf", origins=2)
    contains(err, "auth-request.conf:13: internal: an internal location is not a route")
    # nginx's array quirk: the location's add_header drops the server's
    ok(re.search(r"auth-request\.conf:20: add_header: nginx does not inherit the add_header of "
                 r"\S+/auth-request\.conf:11 here", err), err)
    for o in on + ol:
        o.reset_stats()
    rn, rl = same(np["PORT"], lp["PORT"], "/private/doc?size=12")
    eq(rn.status, 200)
    for h in ("X-Area", "X-Site"):
        eq(rl.headers.get(h), rn.headers.get(h), h)
    eq(rl.headers.get("X-Site"), None, "X-Site is not inherited by /private/")
    eq(rl.headers.get("X-Origin-Target"), rn.headers.get("X-Origin-Target"))
    for o, who in ((on[1], "nginx"), (ol[1], "legate")):
        eq(o.stats()["by_path"].get("/check", 0), 1, "%s asked the auth service" % who)
    rn, rl = same(np["PORT"], lp["PORT"], "/_auth")
    eq(rn.status, 404, "the internal location is not reachable")
    rn, rl = same(np["PORT"], lp["PORT"], "/pub?size=3")
    eq(rl.headers.get("X-Site"), rn.headers.get("X-Site"))
    eq(rl.headers.get("X-Site"), "edge")


@test(timeout=120)
def auth_request_cache_and_set_side_by_side():
    """proxy_cache on the auth location -> auth_request_cache_time/_key;
    auth_request_set + proxy_set_header -> auth_request_set = [ name ]."""
    on = [Origin("o0"), Origin("auth")]
    ol = [Origin("o0"), Origin("auth")]
    np, lp = free_port(), free_port()
    start_nginx("auth-cache.conf", PORT=np, ORIGIN=on[0].address, ORIGIN2=on[1].address)
    text, err = imported("auth-cache.conf", PORT=lp, ORIGIN=ol[0].address, ORIGIN2=ol[1].address)
    contains(text, 'auth_request_set = [ "X-User" ];')
    contains(text, 'auth_request_cache_time = "300s";')
    contains(text, 'auth_request_cache_key = "auth $http_authorization";')
    contains(err, "auth-cache.conf:16: proxy_cache: legate remembers the service's decisions")
    ok("twice" not in err, "two upstreams are not a repeated directive: " + err)
    # one worker: legate remembers decisions per worker
    text = re.sub(r'^worker_processes = .*\n', 'worker_processes = 1;\n', text, flags=re.M)
    Legate(re.sub(r'^error_log_level = .*\n', '', text, flags=re.M), workers=None)
    import json
    for o in on + ol:
        o.reset_stats()
    def both(path, headers=()):
        rn = request(np, target=path, headers=headers, host="localhost")
        rl = request(lp, target=path, headers=headers, host="localhost")
        eq(rn.status, 200, "nginx: %s" % path)
        eq(rl.status, rn.status, "legate: %s" % path)
        return rn, rl
    for i in range(3):
        rn, rl = both("/private/doc?echo=1&n=%d" % i)
        hn = {k.lower(): v for k, v in json.loads(rn.body)["headers"]}
        hl = {k.lower(): v for k, v in json.loads(rl.body)["headers"]}
        eq(hn.get("x-user"), "alice", "nginx passes the service's X-User")
        eq(hl.get("x-user"), hn.get("x-user"), "legate passes the service's X-User")
    for o, who in ((on[1], "nginx"), (ol[1], "legate")):
        eq(o.stats()["by_path"].get("/check", 0), 1, "%s asked the auth service once" % who)
    # a client's own X-User does not get through
    rn, rl = both("/private/doc?echo=1&n=9", headers=[("X-User", "mallory")])
    hl = {k.lower(): v for k, v in json.loads(rl.body)["headers"]}
    eq(hl.get("x-user"), "alice")


@test(timeout=120)
def location_rewrites_side_by_side():
    np, lp, on, ol, lg, err = pair("api-rewrite.conf")
    contains(err, "api-rewrite.conf:11: rewrite: the route is this regex")
    contains(err, "api-rewrite.conf:15: rewrite: a redirect of this location")
    for path in ("/api/v1/users?id=3", "/api/other", "/else"):
        rn, rl = same(np["PORT"], lp["PORT"], path)
        eq(rl.headers.get("X-Origin-Target"), rn.headers.get("X-Origin-Target"), path)
    eq(request(lp["PORT"], target="/api/v1/users?id=3").headers.get("X-Origin-Target"),
       "/users?id=3")
    rn, rl = same(np["PORT"], lp["PORT"], "/legacy/a")
    eq(rn.status, 301)
    ok(rl.headers.get("Location").endswith("/new/a"), rl.headers.get("Location"))


# ---------------------------------------------------------------- reading and reporting

@test
def includes_with_globs_and_reports():
    d = tmpdir()
    os.makedirs(os.path.join(d, "sites"))
    p1, p2 = free_port(), free_port()
    with open(os.path.join(d, "sites", "a.conf"), "w") as f:
        f.write("server {\n    listen 127.0.0.1:%d;\n    location / { return 200 'a'; }\n}\n" % p1)
    with open(os.path.join(d, "sites", "b.conf"), "w") as f:
        f.write("server {\n    listen 127.0.0.1:%d;\n"
                "    if ($http_x = 1) { return 403; }\n"
                "    location @fallback { return 200; }\n"
                "    location /v { proxy_pass http://$backend/x; }\n"
                "    location /h { return 200 'h'; add_header X-A $upstream_cache_status; }\n"
                "    location ~ ^/(?:a|b) { return 200; }\n"
                "}\n" % p2)
    main = os.path.join(d, "nginx.conf")
    with open(main, "w") as f:
        f.write("events {}\nhttp {\n    map $a $b { default 1; }\n    include sites/*.conf;\n"
                "    include missing.conf;\n}\n")
    rc, out, err = importer(main)
    eq(rc, 0, err)
    check_remarks(err)
    b = os.path.join(d, "sites", "b.conf")
    contains(err, "%s:3: if: \"if\" is not in legate" % b)
    contains(out, 'name = "fallback";')     # a named location is a route with a name
    contains(err, "%s:5: proxy_pass: a proxy_pass with variables is not in legate" % b)
    contains(out, 'X-A = "$cache_status";')
    contains(err, "%s:7: location: \"^/(?:a|b)\": (?...) groups are PCRE only" % b)
    contains(err, "%s:3: map: legate has no variable $a: left out" % main)
    contains(err, "%s:5: include: \"%s/missing.conf\" does not exist" % (main, d))
    lg = Legate(out)
    eq(request(p1).body, b"a")
    eq(request(p2, target="/h").body, b"h")
    eq(request(p2, target="/v").status, 404)


@test
def buffering_directives_translate():
    d = tmpdir()
    port = free_port()
    main = os.path.join(d, "nginx.conf")
    with open(main, "w") as f:
        f.write("events {}\nhttp {\n"
                "    proxy_buffering on;\n"
                "    proxy_buffers 8 16k;\n"
                "    proxy_max_temp_file_size 0;\n"
                "    proxy_temp_path /var/tmp/ngx 1 2;\n"
                "    client_body_buffer_size 1k;\n"
                "    upstream app { server 127.0.0.1:9; }\n"
                "    server {\n        listen 127.0.0.1:%d;\n"
                "        location /up { proxy_request_buffering on; proxy_buffering off;\n"
                "            proxy_pass http://app; }\n"
                "    }\n}\n" % port)
    rc, out, err = importer(main)
    eq(rc, 0, err)
    check_remarks(err)
    contains(out, "proxy_buffering = true;")
    contains(out, "proxy_buffers_size = 131072;")
    contains(out, "proxy_max_temp_file_size = 0;")
    contains(out, "client_body_buffer_size = 4096;")
    contains(out, "proxy_request_buffering = true;")
    contains(out, "proxy_buffering = false;")
    contains(err, "%s:7: client_body_buffer_size: legate's smallest is 4k" % main)
    contains(err, "%s:6: proxy_temp_path: not translated: legate's is a global setting" % main)
    rc, terr = check_config(out)
    eq(rc, 0, "%s\n%s" % (terr, out))


@test
def odd_directives_are_reported_and_the_rest_loads():
    d = tmpdir()
    path = os.path.join(d, "odd.conf")
    shutil.copy(os.path.join(TEMPLATES, "odd.conf"), path)
    rc, out, err = importer(path)
    eq(rc, 0, err)
    check_remarks(err)
    lines = err.splitlines()
    eq(len(lines), len(set(lines)), "each remark once:\n" + err)
    for want in [":2: user: no user \"nosuchuser\" here: left out",
                 ":4: error_log: syslog server \"logs.example.invalid\": legate takes an IP "
                 "address",
                 ":10: server: \"nosuchhost.invalid:80\" does not resolve",
                 ":12: upstream: no server left",
                 ":16: ssl_certificate: cannot read \"/nonexistent.pem\"",
                 ":15: listen: ssl without certificates legate can read",
                 ":18: server_name: \"~^(?<sub>.+)\\.example\\.net$\": (?...) groups",
                 ":23: proxy_set_header: legate sets a header once: only the first x-a",
                 ":20: add_header: legate sets a header once: only the first Set-Cookie",
                 ":25: return: $1..$9 without a regex location",
                 ":27: proxy_next_upstream: \"http_404\" is not in legate's next_upstream",
                 ":32: limit_req: no limit_req_zone \"nozone\"",
                 ":33: return: 444 (close without an answer) is not in legate: 403 instead",
                 ":36: server: no listen: nginx's default *:80 is written",
                 ":7: log_format: legate has no variable $upstream_queue_time"]:
        contains(err, path + want)
    rc, terr = check_config(out)
    eq(rc, 0, "%s\n%s" % (terr, out))
    contains(out, 'app_v1_2 = {')
    contains(out, 'regex = "^/r/([0-9]+)/([A-Za-z0-9_]+)$";')
    contains(out, 'proxy_read_timeout = "5400s";')


@test(timeout=120)
def error_pages_redirects_always_side_by_side():
    np, lp, on, ol, lg, err = pair("error-pages.conf")
    page50x = open(os.path.join(TEMPLATES, "html", "50x.html"), "rb").read()
    page404 = open(os.path.join(TEMPLATES, "html", "404.html"), "rb").read()
    # an upstream's 502 and 404 replaced by the pages (proxy_intercept_errors)
    for st, page in ((502, page50x), (404, page404)):
        rn, rl = same(np["PORT"], lp["PORT"], "/api/x?status=%d" % st)
        eq(rn.status, st)
        eq(rn.body, page, "nginx's page for %d" % st)
        eq(rl.body, rn.body, "legate's page for %d" % st)
    # handed to a named location: "=" its status, none the error's, "=202" that
    for st, want in ((404, 200), (410, 410), (418, 202)):
        rn, rl = same(np["PORT"], lp["PORT"], "/named/x?status=%d" % st)
        eq(rn.status, want, "nginx's status for an upstream %d" % st)
        eq(rn.body, b"fallback /named/x\n")
        eq(rl.body, rn.body, "legate's body for %d" % st)
    # a status without a page goes through as the upstream sent it
    rn, rl = same(np["PORT"], lp["PORT"], "/api/x?status=500&size=7")
    eq(rn.status, 500)
    eq(rl.body, rn.body, "the upstream's own 500 body")
    # a return 404 gets the page too
    rn, rl = same(np["PORT"], lp["PORT"], "/gone")
    eq(rn.status, 404)
    eq(rl.body, page404)
    eq(rl.body, rn.body)
    # proxy_redirect FROM TO on an upstream's Location
    rn, rl = same(np["PORT"], lp["PORT"], "/api/login?status=302&hdr=Location:"
                  "http://backend.internal/login/form")
    eq(rn.status, 302)
    # nginx makes the relative result absolute with the client's Host and its
    # port; legate sends it as the rule writes it, and the import says so
    eq(rn.headers.get("Location"), "http://localhost:%d/login/form" % np["PORT"])
    eq(rl.headers.get("Location"), "/login/form")
    contains(err, "error-pages.conf:22: proxy_redirect: nginx makes a relative Location absolute")
    # add_header ... always on a ~* location: on the 404 from upstream too
    for path in ("/pics/A.JPG?size=5", "/pics/b.png?status=404&size=3"):
        rn, rl = same(np["PORT"], lp["PORT"], path)
        eq(rn.headers.get("X-Img"), "yes", "nginx: %s" % path)
        eq(rl.headers.get("X-Img"), rn.headers.get("X-Img"), "legate: %s" % path)
    rn, rl = same(np["PORT"], lp["PORT"], "/pics/b.gif?size=3")
    eq(rn.headers.get("X-Img"), None)
    eq(rl.headers.get("X-Img"), None)
    # default_type: the Content-Type of a return's body
    rn, rl = same(np["PORT"], lp["PORT"], "/j")
    eq(rn.headers.get("Content-Type"), "application/json")
    eq(rl.headers.get("Content-Type"), rn.headers.get("Content-Type"))


def translated(conf_text):
    """Import an nginx configuration text: (rc, legate text, remarks)."""
    d = tmpdir()
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf_text)
    rc, out, err = importer(path)
    return path, rc, out, err


@test
def recent_directives_translate():
    d = tmpdir()
    html = os.path.join(d, "html")
    os.makedirs(html)
    with open(os.path.join(html, "oops.html"), "w") as f:
        f.write("oops\n")
    with open(os.path.join(html, "empty.gif"), "w") as f:
        f.write("GIF89a")
    path, rc, out, err = translated("""events {}
error_log syslog:server=127.0.0.1:5514,facility=local1,tag=edge,nohostname warn;
http {
  default_type text/html;
  http2_max_concurrent_streams 64;
  access_log syslog:server=unix:/dev/log,tag=edge combined if=$arg_log buffer=32k;
  upstream app { server 127.0.0.1:9; }
  server {
    listen 127.0.0.1:9080 http2;
    root %s;
    error_page 500 502 /oops.html;
    error_page 404 =200 /empty.gif;
    error_page 403 @denied;
    error_page 410 http://example.com/gone;
    error_page 418 /missing.html;
    limit_rate 100k;
    limit_req_dry_run on;
    location / {
      proxy_pass http://app;
      proxy_intercept_errors on;
      proxy_redirect default;
      proxy_redirect http://app/ https://www.example.com/;
      proxy_redirect ~^http://(.*)$ /$1;
      proxy_set_header Host backend.internal;
      proxy_set_header X-Forwarded-For $remote_addr;
      add_header X-A 1 always;
    }
    location ~* ^/IMG/ { proxy_pass http://app; proxy_redirect off; }
    location @denied { return 403 "denied\\n"; }
    error_page 401 @nowhere;
  }
}
""" % html)
    eq(rc, 0, err)
    check_remarks(err)
    for want in ['error_log = "syslog:server=127.0.0.1:5514,facility=local1,tag=edge";',
                 'http2_max_concurrent_streams = 64;',
                 'error_log_level = "warn";',
                 'default_type = "text/html";',
                 'access_log = "syslog:server=unix:/dev/log,tag=edge";',
                 'access_log_if = "$arg_log";',
                 'error_pages = [ "500 502 %s/oops.html", "404 =200 %s/empty.gif", "403 @denied" ];'
                 % (html, html),
                 'limit_rate = 102400;',
                 'intercept_errors = true;',
                 'proxy_redirect = [ "default", "http://app/ https://www.example.com/" ];',
                 'proxy_redirect = [ "off" ];',
                 'Host = "backend.internal";',
                 'X-Forwarded-For = "$remote_addr";',
                 'add_response_headers_always = true;',
                 'iregex = "^/IMG/";',
                 'http2 = true;', 'limit_req_dry_run = true;']:
        contains(out, want)
    for want in [":2: error_log: syslog \"nohostname\" is not in legate: ignored",
                 ":6: access_log: \"buffer=32k\" is not in legate: ignored",
                 ":30: error_page: no named location @nowhere in this server",
                 ":14: error_page: a redirect to \"http://example.com/gone\"",
                 ":15: error_page: cannot read \"%s/missing.html\"" % html,
                 ":23: proxy_redirect: a regex or variables",
                 ":28: proxy_pass: without proxy_set_header Host nginx sends Host: $proxy_host"]:
        contains(err, path + want)
    rc, terr = check_config(out)
    eq(rc, 0, "%s\n%s" % (terr, out))


@test
def output_to_a_directory():
    o = Origin("app")
    port = free_port()
    path, rc, out, err = translated("""events {}
http {
  upstream app { server %s; }
  server { listen 127.0.0.1:%d; server_name www.example.test;
           location / { proxy_pass http://app; } }
  server { listen 127.0.0.1:%d default_server; server_name _;
           location / { return 200 "other\\n"; } }
}
""" % (o.address, port, port))
    eq(rc, 0, err)
    d = os.path.join(os.path.dirname(path), "out")
    p = subprocess.run([LEGATE_BIN, "--import-nginx", path, "--out", d], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    derr = p.stderr.decode()
    eq(p.returncode, 0, derr)
    contains(derr, "written to %s/legate.conf and 3 files" % d)
    eq(sorted(os.listdir(os.path.join(d, "conf.d"))),
       ["01-www_example_test.conf", "02-default.conf", "upstreams.conf"])
    main = open(os.path.join(d, "legate.conf")).read()
    contains(main, 'include = "conf.d/*.conf";')
    ok("servers = (" not in main and "upstreams = {" not in main, "servers and upstreams in conf.d/")
    contains(open(os.path.join(d, "conf.d", "01-www_example_test.conf")).read(),
             'server_name = [ "www.example.test" ];')
    p = subprocess.run([LEGATE_BIN, "-t", "-c", os.path.join(d, "legate.conf")],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    eq(p.returncode, 0, p.stderr.decode())
    # the directory's configuration serves what the single file does
    lg = Legate(main.replace('include = "conf.d/*.conf";',
                             'include = "%s/conf.d/*.conf";' % d), workers=None)
    r = request(port, target="/x?size=4", host="www.example.test")
    eq(r.status, 200)
    eq(r.headers.get("X-Origin"), "app")
    r = request(port, target="/", host="other.example")
    eq(r.body, b"other\n")
    # never over files that are there
    p = subprocess.run([LEGATE_BIN, "--import-nginx", path, "--out", d], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    ok(p.returncode != 0, "a second import into the same directory fails")
    contains(p.stderr.decode(), "legate.conf: File exists: not overwritten")
    eq(open(os.path.join(d, "legate.conf")).read(), main, "legate.conf untouched")
    # nor when only one of them is there: nothing is written
    os.remove(os.path.join(d, "legate.conf"))
    p = subprocess.run([LEGATE_BIN, "--import-nginx", path, "--out", d], capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    ok(p.returncode != 0, "an import over conf.d/ files fails")
    contains(p.stderr.decode(), "conf.d/upstreams.conf: File exists: not overwritten")
    ok(not os.path.exists(os.path.join(d, "legate.conf")), "no legate.conf written")
    p = subprocess.run([LEGATE_BIN, "--out", d], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    ok(p.returncode != 0, "--out alone is refused")
    contains(p.stderr.decode(), "--out goes with --import-nginx")


@test(timeout=300)
def random_configurations_always_load():
    """The importer's promise: whatever it writes passes legate -t.  Random
    nginx configurations from a pool of directives (valid, invalid, and
    what legate refuses), seeded so a failure repeats."""
    import random
    d = tmpdir()
    HTTP = ["gzip on;", "gzip off;", "gzip_types text/css application/json;", "gzip_comp_level 5;", "gzip_min_length 1k;",
            "keepalive_timeout 30s 20s;", "client_max_body_size 10m;", "proxy_read_timeout 90;", "proxy_connect_timeout 500ms;",
            "access_log off;", "access_log @D@/a.log main;", "log_format main '$remote_addr $request $status $foo';",
            "log_format main2 escape=json '{\"a\":\"$remote_addr\"}';", "access_log @D@/b.log main2;",
            "limit_req_zone $binary_remote_addr zone=z1:10m rate=5r/s;", "limit_conn_zone $server_name zone=c1:1m;",
            "proxy_cache_path @D@/c keys_zone=cc:1m max_size=20g;", "set_real_ip_from 10.0.0.0/8;", "real_ip_header X-Forwarded-For;",
            "add_header X-H1 v1;", "add_header X-H1 v2 always;", "proxy_set_header X-P $remote_addr;", "proxy_set_header Host $proxy_host;",
            "allow 10.0.0.0/8;", "deny all;", "allow ::1;", "resolver 1.1.1.1;", "ssl_protocols TLSv1.2;", "map $a $b { default 0; }",
            "split_clients $remote_addr $v { 50% up1; * up2; }", "server_tokens off;", "geo $g { default 0; }", "weird_directive 1 2;",
            "proxy_cache cc;", "proxy_cache_valid 5m;", "proxy_cache_valid 404 any 1m;", "proxy_cache_key $scheme$host$uri;",
            "proxy_cache_bypass $cookie_x $arg_y;", "auth_basic \"r\";", "auth_basic_user_file /etc/passwd;", "satisfy any;",
            "limit_req zone=z1 burst=3;", "limit_req zone=zz;", "limit_conn c1 5;", "limit_rate 100k;", "if ($x) { return 403; }",
            "map $http_user_agent $ua { default x; ~*bot b; \"~^c/(\\d+)\" c$1; M m; *.w w; }", "map $ua $ub { default \"u-$ua\"; }",
            "map $nope $nm { default 1; }", "map $host $host { default 1; }", "map $uri $m2 { hostnames; .a.test 1; \"~(?i)x\" 2; default $1; }",
            "proxy_cache_use_stale error timeout updating http_500 bogus;", "proxy_cache_use_stale off;", "max_ranges 3;", "max_ranges 900;",
            "proxy_cache_path @D@ keys_zone=dd:1m max_size=5m inactive=30s;", "proxy_cache_path @D@/none keys_zone=de:1m;",
            "resolver 127.0.0.1:5353 ns.example valid=1m ipv6=off;", "root @D@;", "root html;", "index index.html $x.html /a.html;",
            "add_header X-U $ua;", "add_header X-M \"$ub $nm $sv\";", "add_header X-C $upstream_cache_status;", "http3 on;", "try_files $uri =404;",
            "if ($ua = b) { return 403; }", "if ($arg_q !~* ^[a-z]+$) { return 400 \"bad\"; }", "if ($http_x = \"a b\") { return 400; }",
            "if ($uri ~ ^/(.)) { return 302 /$1; }", "if (!-e $request_filename) { return 404; }", "if ($nope) { return 401; }"]
    LOC = HTTP + ["proxy_pass http://up1;", "proxy_pass http://127.0.0.1:9009/;", "proxy_pass http://up2/x/;", "proxy_pass https://localhost:8443;",
            "proxy_pass http://$v;", "return 200 ok;", "return 301 https://$host$request_uri;", "return 404;", "return 302 /a/$1;",
            "rewrite ^/(.*)$ /z/$1 break;", "rewrite ^/q$ /r permanent;", "rewrite ^ /x last;", "try_files $uri =404;", "internal;",
            "proxy_next_upstream error timeout http_500;", "proxy_next_upstream_tries 3;", "auth_request /auth;", "add_header Strict-Transport-Security max-age=1;",
            "proxy_hide_header X-Powered-By;", "proxy_redirect off;", "error_page 404 /404.html;",
            "proxy_redirect http://up1/ /;", "proxy_redirect ~^(.*)$ $1;", "proxy_intercept_errors on;",
            "default_type application/json;", "error_page 502 =200 /x.html;", "add_header X-A 1 always;",
            "access_log syslog:server=127.0.0.1:5140,tag=t combined if=$arg_x;", "limit_conn_dry_run on;",
            "auth_request_set $u $upstream_http_x_u;", "proxy_set_header X-U $u;",
            "set $sv \"s-$ua\";", "set $sv $nope;", "set $host 1;", "set $ua $uri;", "alias @D@/;", "alias /$x/;",
            "try_files $uri $uri/ @n;", "try_files $uri /index.html;", "try_files $uri =999;", "try_files $uri @gone;", "index a.htm;"]
    LOCS = ["/", "/a/", "= /auth", "= /x", "^~ /s/", "~ ^/r/(\\d+)$", "~* \\.(gif|jpg)$", "@n", "~ (?i)x", "/b"]
    SRV = ["listen 127.0.0.1:%d;", "listen 127.0.0.1:%d ssl;", "listen 127.0.0.1:%d default_server;", "listen %d proxy_protocol;", "server_name a.test .b.test ~^c\\d+\\.test$ _;",
           "ssl_certificate %s/server-rsa.pem;" % CERTS, "ssl_certificate_key %s/server-rsa.key;" % CERTS,
           "ssl_certificate /nope.pem;", "return 444;", "rewrite ^/old$ /new redirect;", "http2 on;",
           "listen 127.0.0.1:%d http2;", "listen 127.0.0.1:%d quic;", "listen 127.0.0.1:%d ssl;", "set $sv 2;", "try_files $uri @n;"]
    bad = []
    for seed in range(int(os.environ.get("LEGATE_IMPORT_RANDOM", "150"))):
        rnd = random.Random(seed)
        port = 30000 + rnd.randrange(20000)
        out = ["events {}", "http {",
               "upstream up1 { server 127.0.0.1:9001 weight=2; server 127.0.0.1:9002 backup; least_conn; }",
               "upstream up2 { server localhost:9003 max_fails=1; keepalive 4; hash $uri; }"]
        if rnd.random() < 0.3:
            out.append(rnd.choice(["upstream up3 { server nowhere.invalid:80 resolve; server 127.0.0.1:9004; }",
                                   "upstream up3 { resolver 127.0.0.1; server a.invalid resolve; }",
                                   "upstream up3 { server unix:/tmp/x.sock resolve; }"]))
        for _ in range(rnd.randrange(4)):
            out.append(rnd.choice(HTTP))
        for srv in range(rnd.randrange(1, 4)):
            out.append("server {")
            for _ in range(rnd.randrange(5)):
                x = rnd.choice(SRV)
                out.append(x % (port + srv) if "%d" in x else x)
            for _ in range(rnd.randrange(3)):
                out.append(rnd.choice(HTTP))
            for _ in range(rnd.randrange(5)):
                out.append("location %s {" % rnd.choice(LOCS))
                for _ in range(rnd.randrange(4)):
                    out.append(rnd.choice(LOC))
                if rnd.random() < 0.2:
                    out.append("location %s { %s }" % (rnd.choice(LOCS), rnd.choice(LOC)))
                out.append("}")
            out.append("}")
        out.append("}")
        path = os.path.join(d, "n%d.conf" % seed)
        with open(path, "w") as f:
            f.write("\n".join(out).replace("@D@", d) + "\n")
        rc, text, err = importer(path)
        if rc != 0:
            if "nothing written" not in err:
                bad.append("seed %d: import failed: %s" % (seed, err[-300:]))
            continue
        check_remarks(err)
        with open(path + ".lg", "w") as f:
            f.write(text)
        rc, _, terr = run_legate(["-t", "-q", "-p", d, "-c", path + ".lg"], prefix=d)
        if rc != 0:
            bad.append("seed %d: %s" % (seed, terr[:400]))
        if seed % 5 == 0:
            # the same as a directory: legate.conf and conf.d/
            out_dir = path + ".d"
            p = subprocess.run([LEGATE_BIN, "--import-nginx", path, "--out", out_dir],
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            if p.returncode != 0:
                bad.append("seed %d: --out failed: %s" % (seed, p.stderr.decode()[-300:]))
                continue
            rc, _, terr = run_legate(["-t", "-q", "-p", d, "-c", out_dir + "/legate.conf"],
                                     prefix=d)
            if rc != 0:
                bad.append("seed %d (--out): %s" % (seed, terr[:400]))
    eq(bad, [], "imports that fail legate -t")


@test
def syntax_errors_fail_with_file_and_line():
    d = tmpdir()
    main = os.path.join(d, "nginx.conf")
    for text, line, msg in [
            ("http {\n  server {\n    listen 80;\n", 4, "unexpected end of file, expecting \"}\""),
            ("events {}\n}\n", 2, "unexpected \"}\""),
            ("http {\n  server_name \"unterminated;\n}\n", 4, "unterminated quoted string"),
            ("http {\n  listen 80\n}\n", 3, "unexpected \"}\"")]:
        with open(main, "w") as f:
            f.write(text)
        rc, out, err = importer(main)
        eq(rc, 1, "%r: %s" % (text, err))
        eq(out, "", "nothing written")
        contains(err, "%s:%d: %s" % (main, line, msg))
    rc, out, err = importer(os.path.join(d, "nope.conf"))
    eq(rc, 1)
    contains(err, "nope.conf: cannot read: No such file or directory")


@test
def quotes_escapes_and_regex_case():
    d = tmpdir()
    port = free_port()
    main = os.path.join(d, "nginx.conf")
    with open(main, "w") as f:
        f.write("events {}\nhttp {\n  server {\n    listen 127.0.0.1:%d;\n"
                "    location ~* \\.(PNG|jpe?g)$ { return 200 \"img \\\"q\\\"\"; }\n"
                "    location = /e { return 200 'x\\'y'; }\n"
                "    location ^~ /static/ { return 204; }\n"
                "  }\n}\n" % port)
    rc, out, err = importer(main)
    eq(rc, 0, err)
    contains(err, "nginx.conf:7: location: ^~")
    lg = Legate(out)
    eq(request(port, target="/a.png").body, b'img "q"')
    eq(request(port, target="/a.JPG").body, b'img "q"')
    eq(request(port, target="/a.gif").status, 404)
    eq(request(port, target="/e").body, b"x'y")
    eq(request(port, target="/static/s").status, 204)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()

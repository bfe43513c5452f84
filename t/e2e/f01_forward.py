#!/usr/bin/env python3
"""The forward proxy: absolute-form requests, CONNECT tunnels (plain and
TLS inside), a secure web proxy (TLS to the proxy), anonymity levels, client
access, blocklists (100,000 names), URL filters, SSRF defaults, the CONNECT
port allowlist, DNS through a test resolver with a cache, the forward log."""
import json
import os
import re
import random
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DNSD = os.path.join(HERE, "..", "dnsd.py")


class Dnsd:
    """t/dnsd.py on loopback answering NAME=127.0.0.1 for the given names."""

    def __init__(self, *names):
        self.dir = tempfile.mkdtemp(prefix="legate-dnsd-")
        self.stats_file = os.path.join(self.dir, "stats")
        args = [sys.executable, DNSD, "--stats", self.stats_file, "--exit-on-eof"] + \
               ["%s=127.0.0.1/60" % n for n in names]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        ok(line.startswith("PORT "), "dnsd started: %r" % line)
        self.port = int(line.split()[1])
        _track(self)

    def count(self, name):
        try:
            text = open(self.stats_file).read()
        except FileNotFoundError:
            return 0
        return sum(int(l.split()[2]) for l in text.splitlines() if l.split()[0] == name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    teardown = stop


def fwd_conf(port, dns, extra="", listen_extra="", server_extra=""):
    return """
http = {
    log_format = "forward";
    servers = ( { listen = ( { address = "127.0.0.1:%d"; %s } ); %s
        forward = { resolvers = [ "127.0.0.1:%d" ]; allow_private = true; %s };
        routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } );
};
""" % (port, listen_extra, server_extra, dns.port, extra)


def via(proxy_port, url, *args, **kw):
    return curl("-x", "http://127.0.0.1:%d" % proxy_port, url, *args, **kw)


@test
def absolute_form_through_the_proxy_transparent():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    lg = Legate(fwd_conf(port, dns), workers=2)
    st, hs, body = via(port, "http://origin.test:%d/a?echo=1" % o.port)
    eq(st, 200)
    j = json.loads(body)
    eq(j["target"], "/a?echo=1", "origin-form towards the origin")
    h = dict(j["headers"])
    eq(h.get("Host"), "origin.test:%d" % o.port)
    eq(h.get("X-Forwarded-For"), "127.0.0.1", "transparent: the client's address")
    eq(h.get("Via"), "1.1 " + socket.gethostname(), "via_name defaults to the host name")
    ok("Proxy-Connection" not in h, "hop-by-hop Proxy-Connection removed")
    wait_until(lambda: "\"GET origin.test:%d\" 200" % o.port in open(lg.access_log).read(), 5,
               what="the forward log line")


@test
def anonymity_levels_seen_from_the_origin():
    o = Origin("o")
    dns = Dnsd("origin.test")
    for level, want_xff, want_via in (("anonymous", None, "1.1 " + socket.gethostname()),
                                      ("elite", None, None)):
        port = free_port()
        lg = Legate(fwd_conf(port, dns, 'anonymity = "%s"; strip_headers = [ "User-Agent", "Referer" ];'
                             % level), workers=1)
        st, hs, body = via(port, "http://origin.test:%d/e?echo=1" % o.port,
                           "-H", "X-Forwarded-For: 10.1.2.3", "-H", "Forwarded: for=10.1.2.3",
                           "-H", "From: me@example.test", "-H", "Referer: http://secret.test/",
                           "-H", "X-Real-IP: 10.1.2.3", "-A", "secret-agent")
        h = dict(json.loads(body)["headers"])
        eq(h.get("X-Forwarded-For"), want_xff, "%s: X-Forwarded-For" % level)
        eq(h.get("Via"), want_via, "%s: Via" % level)
        for name in ("Forwarded", "From", "X-Real-IP", "User-Agent", "Referer"):
            eq(h.get(name), None, "%s: %s removed" % (level, name))
        lg.stop()


@test
def keepalive_and_pooled_origin_connections():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    Legate(fwd_conf(port, dns), workers=1)
    eq(via(port, "http://origin.test:%d/first" % o.port)[0], 200)
    queries = dns.count("origin.test")
    o.reset_stats()
    urls = ["http://origin.test:%d/k%d" % (o.port, i) for i in range(20)]
    p = subprocess.run(["curl", "-sS", "-x", "http://127.0.0.1:%d" % port] + urls,
                       capture_output=True, timeout=60)
    eq(p.returncode, 0, p.stderr)
    eq(p.stdout.count(b"origin o"), 20)
    ok(o.stats()["connections"] <= 2, "20 requests over %d origin connections"
       % o.stats()["connections"])
    eq(dns.count("origin.test"), queries, "no new query for 20 more requests: the cache")


@test
def connect_tunnel_plain_and_tls():
    o = Origin("o")
    dns = Dnsd("origin.test", "localhost.test")
    port = free_port()
    lg = Legate(fwd_conf(port, dns, 'connect_ports = "443 1024-65535";'), workers=2)
    st, _, body = curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/t" % o.port)
    eq((st, body), (200, b"origin o /t\n"), "HTTP inside a CONNECT tunnel")
    # an HTTPS origin: a legate TLS listener with the test certificates
    certs = tempfile.mkdtemp(prefix="legate-certs-")
    subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"), certs], check=True,
                   capture_output=True, timeout=120)
    tport = free_port()
    Legate("""
http = { upstreams = { o = { servers = ( "%s" ); }; };
  servers = ( { listen = ( { address = "127.0.0.1:%d"; tls = true; } );
    tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };
    routes = ( { prefix = "/"; proxy_pass = "o"; } ); } ); };
""" % (o.address, tport, certs, certs), workers=1)
    st, _, body = curl("-x", "http://127.0.0.1:%d" % port, "--cacert", os.path.join(certs, "ca.pem"),
                       "https://localhost:%d/s" % tport, check=False)
    eq((st, body), (200, b"origin o /s\n"), "HTTPS through CONNECT, verified end to end")
    big = curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/b?size=3000000" % o.port)
    eq(len(big[2]), 3000000, "a large body through the tunnel")
    wait_until(lambda: "\"CONNECT origin.test:%d\" 200" % o.port in open(lg.access_log).read(), 5,
               what="the tunnel in the forward log")
    # the tunnel's line counts what went through it, spliced bytes included
    def tunnel_bytes():
        for line in open(lg.access_log):
            m = re.search(r'"CONNECT origin\.test:%d" 200 (\d+) (\d+) ' % o.port, line)
            if m and int(m.group(2)) >= 3000000:
                return int(m.group(1)), int(m.group(2))
        return None
    wait_until(tunnel_bytes, 5, what="a tunnel line with the 3 MB body in $bytes_sent")
    rcvd, sent = tunnel_bytes()
    ok(rcvd > 60, "bytes received %d: at least the CONNECT head and the GET in the tunnel" % rcvd)
    shutil.rmtree(certs, ignore_errors=True)


@test
def secure_web_proxy():
    """TLS to the proxy itself (curl --proxy https://...), CONNECT inside it."""
    o = Origin("o")
    dns = Dnsd("origin.test")
    certs = tempfile.mkdtemp(prefix="legate-certs-")
    subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"), certs], check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    Legate(fwd_conf(port, dns, 'connect_ports = "1024-65535";', listen_extra="tls = true;",
                    server_extra='tls_certificates = { cert = "%s/server-ecdsa.pem"; key = "%s/server-ecdsa.key"; };'
                    % (certs, certs)), workers=1)
    px = ["--proxy", "https://localhost:%d" % port, "--proxy-cacert", os.path.join(certs, "ca.pem")]
    st, _, body = curl(*px, "http://origin.test:%d/w" % o.port)
    eq((st, body), (200, b"origin o /w\n"), "absolute-form over TLS to the proxy")
    st, _, body = curl(*px, "-p", "http://origin.test:%d/c" % o.port)
    eq((st, body), (200, b"origin o /c\n"), "CONNECT inside TLS to the proxy")
    shutil.rmtree(certs, ignore_errors=True)


@test(timeout=120)
def blocklist_of_100000_names():
    o = Origin("o")
    dns = Dnsd("origin.test", "ok.test")
    d = tempfile.mkdtemp(prefix="legate-bl-")
    path = os.path.join(d, "hosts.txt")
    rnd = random.Random(7)
    names = ["%s%d.%s.example" % (rnd.choice("abcdefgh"), i, rnd.choice(["ads", "trk", "cdn"]))
             for i in range(100000)]
    with open(path, "w") as f:
        f.write("# a hosts-format blocklist\n")
        for i, n in enumerate(names):
            f.write(("0.0.0.0 %s\n" if i % 2 else "%s\n") % n)
        f.write("0.0.0.0 origin.test\n")
    port = free_port()
    lg = Legate(fwd_conf(port, dns, 'blocklists = [ "%s" ]; block_domains = [ "ok.test" ];' % path),
                workers=1)
    st, _, body = via(port, "http://origin.test:%d/" % o.port)
    eq(st, 403)
    contains(body.decode(), "origin.test is blocked by %s" % path, "the page names the rule")
    st, _, _ = via(port, "http://sub.ok.test:%d/" % o.port)
    eq(st, 403, "a listed name blocks its subdomains")
    for n in rnd.sample(names, 20):
        eq(via(port, "http://%s:%d/" % (n, o.port))[0], 403, n)
    eq(dns.count("origin.test"), 0, "a blocked name is never resolved")
    shutil.rmtree(d, ignore_errors=True)


@test
def url_filters_ports_and_clients():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    Legate(fwd_conf(port, dns, 'url_filters = [ "/admin/", "\\\\.exe$" ]; connect_ports = "443";'),
           workers=1)
    eq(via(port, "http://origin.test:%d/admin/x" % o.port)[0], 403)
    eq(via(port, "http://origin.test:%d/setup.EXE" % o.port)[0], 403, "case-insensitive")
    eq(via(port, "http://origin.test:%d/fine" % o.port)[0], 200)
    st, _, _ = curl("-p", "-x", "http://127.0.0.1:%d" % port, "http://origin.test:%d/" % o.port,
                    check=False)
    ok(st != 200, "CONNECT to a port outside connect_ports is refused")
    port2 = free_port()
    Legate(fwd_conf(port2, dns, 'allow_clients = [ "10.0.0.0/8" ];'), workers=1)
    st, _, body = via(port2, "http://origin.test:%d/" % o.port)
    eq(st, 403)
    contains(body.decode(), "not in allow_clients")


@test
def private_destinations_blocked_by_default():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    Legate(fwd_conf(port, dns).replace("allow_private = true;", ""), workers=1)
    st, _, body = via(port, "http://origin.test:%d/" % o.port)
    eq(st, 403)
    contains(body.decode(), "loopback", "the page says why (SSRF defence)")
    st, _, _ = via(port, "http://127.0.0.1:%d/" % o.port)
    eq(st, 403, "literal addresses too")


@test
def unknown_name_and_dns_timeout():
    dns = Dnsd("origin.test")
    port = free_port()
    lg = Legate(fwd_conf(port, dns), workers=1)
    lg.allow_log(r"cannot resolve")
    eq(via(port, "http://nowhere.test/")[0], 502)


@test
def reverse_routes_still_work_on_a_forward_server():
    dns = Dnsd("origin.test")
    port = free_port()
    Legate(fwd_conf(port, dns), workers=1)
    eq(request(port, target="/").body, b"proxy\n")


@test
def user_agent_and_cookies_replaced():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    Legate(fwd_conf(port, dns, 'strip_headers = [ "Cookie" ];',
                    server_extra='add_request_headers = { User-Agent = "Mozilla/5.0 (office)"; };'),
           workers=1)
    st, hs, body = via(port, "http://origin.test:%d/e?echo=1" % o.port, "-A", "secret-agent/1.0",
                       "-H", "Cookie: session=abc")
    h = json.loads(body)["headers"]
    eq([v for k, v in h if k == "User-Agent"], ["Mozilla/5.0 (office)"], "replaced, not added")
    eq([v for k, v in h if k == "Cookie"], [], "cookies removed")


@test
def forward_proxy_cache_keyed_by_absolute_uri():
    o1, o2 = Origin("o1"), Origin("o2")
    dns = Dnsd("origin.test")
    port = free_port()
    lg = Legate('cache_size = "4m";\n' + fwd_conf(port, dns, server_extra="cache = true;"),
                workers=2)
    u1 = "http://origin.test:%d/c?hdr=Cache-Control:max-age=60" % o1.port
    u2 = "http://origin.test:%d/c?hdr=Cache-Control:max-age=60" % o2.port
    st, hs, body = via(port, u1)
    eq((st, hs.get("X-Cache")), (200, "MISS"))
    lookups = dns.count("origin.test")
    for i in range(4):
        st, hs, b = via(port, u1)
        eq((st, hs.get("X-Cache"), b), (200, "HIT", body), "a hit in either worker")
    eq(o1.stats()["by_path"].get("/c", 0), 1, "the origin was asked once")
    eq(dns.count("origin.test"), lookups, "hits needed no name lookup")
    st, hs, b2 = via(port, u2)
    eq(hs.get("X-Cache"), "MISS", "another port is another URI")
    contains(b2.decode(), "origin o2")
    st, _, _ = via(port, u1, "-X", "POST", "-d", "x")
    eq(st, 200)
    st, hs, _ = via(port, u1)
    eq(hs.get("X-Cache"), "MISS", "a POST through the proxy invalidates it too")


@test
def forwarding_loop_through_via():
    o = Origin("o")
    dns = Dnsd("origin.test")
    port = free_port()
    lg = Legate('via_name = "proxy-a";\n' + fwd_conf(port, dns), workers=1)
    st, _, _ = via(port, "http://origin.test:%d/a" % o.port, "-H", "Via: 1.1 upstream-x, 1.0 Proxy-A",
                   check=False)
    eq(st, 508, "our own via_name (any case) in Via: Loop Detected")
    eq(o.stats()["by_path"].get("/a", 0), 0, "nothing forwarded")
    lg.wait_log(r"forwarding loop detected: Via \"1\.1 upstream-x, 1\.0 Proxy-A\"")
    st, hs, body = via(port, "http://origin.test:%d/e?echo=1" % o.port, "-H",
                       "Via: 1.1 proxy-ab, 1.1 x-proxy-a")
    eq(st, 200, "a name that only contains ours is another proxy")
    eq(dict(json.loads(body)["headers"]).get("Via"), "1.1 proxy-ab, 1.1 x-proxy-a, 1.1 proxy-a")


if __name__ == "__main__":
    main()

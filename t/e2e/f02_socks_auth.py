#!/usr/bin/env python3
"""SOCKS5 (RFC 1928 CONNECT with IPv4, IPv6 and domain names; RFC 1929
username/password) and HTTP proxy authentication (Basic, 407, htpasswd with
SHA-crypt and bcrypt), with the same rules and logs as the HTTP side."""
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def setup(extra="", origin=None):
    d = tempfile.mkdtemp(prefix="legate-fwd-")
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 origin.test blocked.test wiki.test en.wiki.test news.test\n"
                "::1 origin6.test\n")
    users = []
    for user, pw, alg in (("alice", "s3cret", "-6"), ("bob", "hunter2", "-5")):
        h = subprocess.run(["openssl", "passwd", alg, pw], capture_output=True, check=True,
                           timeout=30).stdout.decode().strip()
        users.append("%s:%s" % (user, h))
    if shutil.which("mkpasswd"):
        h = subprocess.run(["mkpasswd", "-m", "bcrypt", "-R", "5", "bcryptpw"], capture_output=True,
                           timeout=30).stdout.decode().strip()
        if h.startswith("$2"):
            users.append("carol:%s" % h)
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("# users\n" + "\n".join(users) + "\n")
    return d


def conf(hport, sport, d, extra=""):
    return """
http = {
    log_format = "forward";
    servers = ( { listen = ( "127.0.0.1:%d", { address = "127.0.0.1:%d"; protocol = "socks5"; } );
        forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                    block_domains = [ "blocked.test" ]; connect_ports = "1-65535"; %s };
        routes = ( ); } );
};
""" % (hport, sport, d, extra)


def socks_connect(sport, atyp, addr, port, methods=b"\x00", auth=None):
    """A raw SOCKS5 client: returns (reply code, socket)."""
    s = socket.create_connection(("127.0.0.1", sport), timeout=10)
    s.sendall(b"\x05" + bytes([len(methods)]) + methods)
    ver, method = s.recv(2)
    if method == 0xff:
        return None, s
    if method == 2:
        u, p = auth
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        r = s.recv(2)
        if r[1] != 0:
            return "auth-failed", s
    if atyp == 1:
        a = socket.inet_aton(addr)
    elif atyp == 4:
        a = socket.inet_pton(socket.AF_INET6, addr)
    else:
        a = bytes([len(addr)]) + addr.encode()
    s.sendall(b"\x05\x01\x00" + bytes([atyp]) + a + struct.pack(">H", port))
    r = b""
    while len(r) < 10:
        chunk = s.recv(10 - len(r))
        if not chunk:
            break
        r += chunk
    return (r[1] if len(r) >= 2 else "closed"), s


def http_over(s, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return data


@test
def socks5_connect_by_name_ipv4_ipv6():
    o = Origin("o")
    o6 = Origin("o6", host="::1")
    d = setup()
    hport, sport = free_port(), free_port()
    lg = Legate(conf(hport, sport, d), workers=2)
    st, _, body = curl("--socks5-hostname", "127.0.0.1:%d" % sport, "http://origin.test:%d/n" % o.port)
    eq((st, body), (200, b"origin o /n\n"), "domain name")
    code, s = socks_connect(sport, 1, "127.0.0.1", o.port)
    eq(code, 0)
    contains(http_over(s, "/v4").decode(), "origin o /v4")
    code, s = socks_connect(sport, 4, "::1", o6.port)
    eq(code, 0)
    contains(http_over(s, "/v6").decode(), "origin o6 /v6")
    wait_until(lambda: "\"CONNECT origin.test:%d\" 200" % o.port in open(lg.access_log).read(), 5,
               what="SOCKS in the forward log")


@test
def socks5_rules_and_replies():
    o = Origin("o")
    d = setup()
    hport, sport = free_port(), free_port()
    Legate(conf(hport, sport, d).replace("allow_private = true;", ""), workers=1)
    code, s = socks_connect(sport, 3, "origin.test", o.port)
    eq(code, 2, "private destination: 'connection not allowed by ruleset'")
    s.close()
    d2 = setup()
    hport2, sport2 = free_port(), free_port()
    Legate(conf(hport2, sport2, d2), workers=1)
    code, s = socks_connect(sport2, 3, "blocked.test", o.port)
    eq(code, 2, "blocklisted name")
    s.close()
    code, s = socks_connect(sport2, 3, "unknown.test", o.port)
    eq(code, 4, "unresolvable: host unreachable")
    s.close()
    dead = free_port()
    code, s = socks_connect(sport2, 1, "127.0.0.1", dead)
    ok(code in (4, 5), "refused connection: %r" % code)
    s.close()
    s = socket.create_connection(("127.0.0.1", sport2), timeout=10)
    s.sendall(b"\x05\x01\x00")
    s.recv(2)
    s.sendall(b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")      # BIND
    eq(s.recv(10)[1], 7, "BIND: command not supported")
    s.close()


@test
def socks5_username_password():
    o = Origin("o")
    d = setup()
    hport, sport = free_port(), free_port()
    lg = Legate(conf(hport, sport, d, 'auth_file = "%s/htpasswd";' % d), workers=1)
    code, s = socks_connect(sport, 3, "origin.test", o.port)
    eq(code, None, "no-auth is not offered when users are configured")
    s.close()
    code, s = socks_connect(sport, 3, "origin.test", o.port, methods=b"\x02",
                            auth=(b"alice", b"s3cret"))
    eq(code, 0)
    contains(http_over(s, "/a").decode(), "origin o /a")
    code, s = socks_connect(sport, 3, "origin.test", o.port, methods=b"\x02",
                            auth=(b"alice", b"wrong"))
    eq(code, "auth-failed")
    s.close()
    st, _, body = curl("--socks5-hostname", "bob:hunter2@127.0.0.1:%d" % sport,
                       "http://origin.test:%d/b" % o.port)
    eq(st, 200, "SHA-256 crypt user")
    wait_until(lambda: " alice \"CONNECT origin.test" in open(lg.access_log).read(), 5,
               what="the user in the log")


@test
def http_proxy_authentication():
    o = Origin("o")
    d = setup()
    hport, sport = free_port(), free_port()
    Legate(conf(hport, sport, d, 'auth_file = "%s/htpasswd"; auth_realm = "office";' % d), workers=1)
    st, hs, _ = curl("-x", "http://127.0.0.1:%d" % hport, "http://origin.test:%d/x" % o.port,
                     check=False)
    eq(st, 407)
    eq(hs.get("Proxy-Authenticate"), 'Basic realm="office"')
    st, _, _ = curl("-x", "http://alice:wrong@127.0.0.1:%d" % hport,
                    "http://origin.test:%d/x" % o.port, check=False)
    eq(st, 407)
    st, _, body = curl("-x", "http://alice:s3cret@127.0.0.1:%d" % hport,
                       "http://origin.test:%d/x?echo=1" % o.port)
    eq(st, 200)
    ok(b"Proxy-Authorization" not in body, "credentials never reach the origin")
    st, _, _ = curl("-p", "-x", "http://bob:hunter2@127.0.0.1:%d" % hport,
                    "http://origin.test:%d/t" % o.port)
    eq(st, 200, "CONNECT with credentials")
    if "carol:" in open(os.path.join(d, "htpasswd")).read():
        st, _, _ = curl("-x", "http://carol:bcryptpw@127.0.0.1:%d" % hport,
                        "http://origin.test:%d/c" % o.port)
        eq(st, 200, "bcrypt user")


@test
def bad_htpasswd_is_a_config_error():
    d = setup()
    with open(os.path.join(d, "htpasswd"), "a") as f:
        f.write("mallory:plaintext\n")
    rc, err = check_config(conf(free_port(), free_port(), d, 'auth_file = "%s/htpasswd";' % d))
    eq(rc, 1)
    ok(re.search(r"htpasswd:\d+: user \"mallory\": a plain-text password is refused", err), err)


def add_user(d, user, pw):
    h = subprocess.run(["openssl", "passwd", "-6", pw], capture_output=True, check=True,
                       timeout=30).stdout.decode().strip()
    with open(os.path.join(d, "htpasswd"), "a") as f:
        f.write("%s:%s\n" % (user, h))


USER_RULES = """auth_file = "%(d)s/htpasswd"; auth_groups_file = "%(d)s/groups";
    allow_users = [ "@staff", "@interns" ];
    user_rules = (
        { users = [ "@interns" ]; allow_domains = [ "wiki.test" ]; connect_ports = "443"; },
        { users = "*"; block_domains = [ "news.test" ]; }
    );"""


@test
def per_user_and_group_rules():
    o = Origin("o")
    d = setup()
    add_user(d, "dave", "d4ve")
    with open(os.path.join(d, "groups"), "w") as f:
        f.write("# group: members\nstaff: alice, carol\ninterns:bob\n")
    hport, sport = free_port(), free_port()
    lg = Legate(conf(hport, sport, d, USER_RULES % {"d": d}), workers=1)

    def get(user, host, path="/", *extra):
        return curl("-x", "http://%s@127.0.0.1:%d" % (user, hport),
                    "http://%s:%d%s" % (host, o.port, path), *extra, check=False)
    # bob is an intern: the wiki and its subdomains only, CONNECT to 443 only
    eq(get("bob:hunter2", "wiki.test", "/w")[0], 200)
    eq(get("bob:hunter2", "en.wiki.test", "/w")[0], 200, "subdomains of an allowed name")
    st, _, body = get("bob:hunter2", "origin.test", "/x")
    eq(st, 403)
    contains(body.decode(), "origin.test is not in allow_domains for bob")
    st, _, body = curl("-p", "-x", "http://bob:hunter2@127.0.0.1:%d" % hport,
                       "http://wiki.test:%d/t" % o.port, check=False)
    ok(st != 200, "CONNECT outside the intern's ports: %r" % st)
    # alice is staff: the "*" rule applies, news.test is blocked for her
    eq(get("alice:s3cret", "origin.test", "/a")[0], 200)
    st, _, body = get("alice:s3cret", "news.test", "/n")
    eq(st, 403)
    contains(body.decode(), "news.test is blocked for alice by the user rule")
    st, _, _ = curl("-p", "-x", "http://alice:s3cret@127.0.0.1:%d" % hport,
                    "http://wiki.test:%d/t" % o.port)
    eq(st, 200, "the forward's connect_ports for alice")
    # dave signs in but is in no allowed group
    st, _, body = get("dave:d4ve", "origin.test", "/d")
    eq(st, 403)
    contains(body.decode(), "user dave may not use this proxy (allow_users)")
    # the same rules over SOCKS5
    code, s = socks_connect(sport, 3, "origin.test", o.port, methods=b"\x02",
                            auth=(b"bob", b"hunter2"))
    eq(code, 2, "SOCKS: not allowed by ruleset")
    s.close()
    code, s = socks_connect(sport, 3, "wiki.test", o.port, methods=b"\x02",
                            auth=(b"alice", b"s3cret"))
    eq(code, 0)
    contains(http_over(s, "/s").decode(), "origin o /s")
    eq(o.stats()["by_path"].get("/x", 0) + o.stats()["by_path"].get("/n", 0) +
       o.stats()["by_path"].get("/d", 0), 0, "refused requests never reach the origin")
    # a reload reads the groups file again: bob becomes staff
    with open(os.path.join(d, "groups"), "w") as f:
        f.write("staff: alice bob\ninterns:\n")
    lg.reload()
    eq(get("bob:hunter2", "origin.test", "/x2")[0], 200)


@test
def user_rule_config_errors():
    d = setup()
    with open(os.path.join(d, "groups"), "w") as f:
        f.write("staff: alice\n")
    rc, err = check_config(conf(free_port(), free_port(), d,
                                (USER_RULES % {"d": d}).replace('"@interns" ];', '"@intern" ];', 1)))
    eq(rc, 1)
    contains(err, "'allow_users': no group \"intern\" in auth_groups_file")
    contains(err, "'users': no group \"interns\" in auth_groups_file")
    rc, err = check_config(conf(free_port(), free_port(), d,
                                'user_rules = ( { users = "*"; block_domains = [ "x.test" ]; } );'))
    eq(rc, 1)
    contains(err, "'user_rules' needs 'auth_file'")
    rc, err = check_config(conf(free_port(), free_port(), d,
                                'auth_file = "%s/htpasswd"; user_rules = ( { allow_domains = [ "x" ]; } );' % d))
    eq(rc, 1)
    contains(err, "a user rule needs 'users'")
    with open(os.path.join(d, "groups"), "w") as f:
        f.write("staff: alice\nno colon here\n")
    rc, err = check_config(conf(free_port(), free_port(), d,
                                'auth_file = "%s/htpasswd"; auth_groups_file = "%s/groups";' % (d, d)))
    eq(rc, 1)
    contains(err, "groups:2: expected \"group: user user ...\"")


if __name__ == "__main__":
    main()

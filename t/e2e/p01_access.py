#!/usr/bin/env python3
"""Access rules and Basic authentication for the reverse proxy
(access_rules, auth_basic, auth_basic_user_file, satisfy): first-match
order with IPv4 and IPv6, inheritance server -> route, the real client
behind real_ip_from, every htpasswd hash format (files made by htpasswd and
openssl passwd), wrong and garbled credentials, bad files refused by
legate -t with FILE:LINE, a reload re-reading the file, satisfy any/all,
the forward proxy's auth_file with the same formats, the per-connection
memory of a success, the failure back-off, and conf/examples/edge-policy.conf."""
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def basic(user, pw):
    return ("Authorization", "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode())


def get(port, target="/", headers=(), source=None, host="127.0.0.1"):
    with Conn(port, host=host, source=source) as c:
        return c.request("GET", target, headers)


def htpasswd_tool():
    if shutil.which("htpasswd") is None:
        skip("htpasswd (apache2-utils) is not installed")


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout.decode().strip()


def openssl_line(user, alg, pw):
    return "%s:%s" % (user, run("openssl", "passwd", alg, pw))


def htpasswd_line(user, opts, pw):
    return run("htpasswd", "-nb", *opts, user, pw)


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def tmpdir():
    d = tempfile.mkdtemp(prefix="legate-acc-")
    return d


def access_log_has(lg, text, timeout=5):
    wait_until(lambda: os.path.exists(lg.access_log) and text in open(lg.access_log).read(),
               timeout, what="%r in the access log" % text)


# ---- address rules ----

@test
def first_match_wins_ipv4():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], workers=1, server_extra=
                'access_rules = [ "deny 127.0.0.2", "allow 127.0.0.0/8", "deny all" ];'
                'log_format = "$remote_addr $status [$blocked]";'))
    eq(get(port, "/a", source="127.0.0.1").status, 200)
    r = get(port, "/b", source="127.0.0.2")
    eq(r.status, 403)
    eq(o.stats()["by_path"].get("/b"), None, "a refused request never reaches the origin")
    eq(get(port, "/c", source="127.0.0.3").status, 200)
    access_log_has(lg, "127.0.0.2 403 [access_rules: deny 127.0.0.2]")
    # the same entries in the other order: the allow comes first and wins
    lg.reload(simple_conf(port, [o], workers=1, server_extra=
              'access_rules = [ "allow 127.0.0.0/8", "deny 127.0.0.2", "deny all" ];'))
    eq(get(port, "/d", source="127.0.0.2").status, 200, "first match, not most specific")


@test
def ipv6_and_ipv4_rules():
    o = Origin("o")
    port = free_port()
    try:
        p6 = free_port("::1")
    except OSError:
        skip("no IPv6 loopback")
    conf = """
worker_processes = 1;
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( { listen = ( "127.0.0.1:%d", "[::1]:%d" );
    access_rules = %s;
    routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};"""
    lg = Legate(conf % (o.address, port, p6, '[ "allow ::1", "deny all" ]'))
    eq(get(p6, "/v6", host="::1").status, 200)
    eq(get(port, "/v4").status, 403)
    lg.reload(conf % (o.address, port, p6, '[ "deny ::1/128", "allow 0.0.0.0/0" ]'))
    eq(get(p6, "/v6", host="::1").status, 403)
    eq(get(port, "/v4").status, 200)
    # "all" covers both families; a v4 network does not match v6
    lg.reload(conf % (o.address, port, p6, '[ "allow 127.0.0.1, 10.0.0.0/8", "deny all" ]'))
    eq(get(p6, "/v6", host="::1").status, 403)
    eq(get(port, "/v4").status, 200)


@test
def inherited_http_server_route():
    o = Origin("o")
    port = free_port()
    Legate(simple_conf(port, [o], workers=1,
           http_extra='access_rules = [ "deny all" ];',
           server_extra='',
           routes='{ prefix = "/"; proxy_pass = "app"; },'
                  '{ prefix = "/open/"; proxy_pass = "app"; access_rules = [ ]; },'
                  '{ prefix = "/lo/"; proxy_pass = "app"; access_rules = "allow 127.0.0.1"; }'))
    eq(get(port, "/x").status, 403, "the server inherits http's rules")
    eq(get(port, "/open/x").status, 200, "an empty list at the route opens it")
    eq(get(port, "/lo/x", source="127.0.0.1").status, 200)
    eq(get(port, "/lo/x", source="127.0.0.2").status, 200,
       "a route's list replaces the inherited one: no match is allowed")
    port2 = free_port()
    Legate(simple_conf(port2, [o], workers=1,
           server_extra='access_rules = [ "allow 127.0.0.1", "deny all" ];',
           routes='{ prefix = "/"; proxy_pass = "app"; },'
                  '{ prefix = "/in/"; proxy_pass = "app"; },'
                  '{ exact = "/ret"; return = 200; body = "hi"; }'))
    eq(get(port2, "/in/x", source="127.0.0.2").status, 403, "the route inherits the server's")
    eq(get(port2, "/in/x", source="127.0.0.1").status, 200)
    eq(get(port2, "/ret", source="127.0.0.2").status, 403,
       "a route's return is judged too (access runs before it)")
    eq(get(port2, "/nowhere/", source="127.0.0.2").status, 403)


@test
def rules_see_the_real_client():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o], workers=1, server_extra=
                'real_ip_from = "127.0.0.1"; access_rules = [ "allow 203.0.113.0/24", "deny all" ];'
                'log_format = "$remote_addr $status [$blocked]";'))
    eq(get(port, "/a", [("X-Forwarded-For", "203.0.113.9")]).status, 200)
    eq(get(port, "/b", [("X-Forwarded-For", "198.51.100.1")]).status, 403)
    eq(get(port, "/c").status, 403, "without the header: the balancer itself")
    eq(get(port, "/d", [("X-Forwarded-For", "203.0.113.9")], source="127.0.0.2").status, 403,
       "an untrusted peer cannot claim an address")
    access_log_has(lg, "198.51.100.1 403 [access_rules: deny all]")


@test
def bad_rules_are_config_errors():
    for rules, msg in (('[ "allow 10.0.0.1/8" ]', "10.0.0.1/8"),
                       ('[ "permit 10.0.0.0/8" ]', 'must be "allow ADDRESS..."'),
                       ('[ "deny" ]', 'must be "allow ADDRESS..."'),
                       ('[ "allow all 10.0.0.0/8" ]', '"all" stands alone'),
                       ('[ "deny 300.1.1.1" ]', "300.1.1.1")):
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"],
                                           route_extra="access_rules = %s;" % rules))
        eq(rc, 1, rules)
        ok(re.search(re.escape(check_config.last_path) + r":\d+: 'access_rules': .*" +
                     re.escape(msg), err), "%s: %s" % (rules, err))
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"], route_extra='satisfy = "some";'))
    eq(rc, 1)
    contains(err, "'satisfy' must be \"all\" or \"any\"")
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"], route_extra='auth_basic = "x";'))
    eq(rc, 1)
    contains(err, "'auth_basic' needs 'auth_basic_user_file'")
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"],
                                       server_extra='auth_basic = "a\\"b"; auth_basic_user_file = "/dev/null";'))
    eq(rc, 1)
    contains(err, "'auth_basic' (the realm) must not hold quotes")


# ---- Basic authentication ----

FORMATS = (
    ("bcrypt", "htpasswd", ("-B", "-C", "5"), "$2y$"),
    ("apr1", "htpasswd", ("-m",), "$apr1$"),
    ("sha1", "htpasswd", ("-s",), "{SHA}"),
    ("sha256", "htpasswd", ("-2",), "$5$"),
    ("sha512", "htpasswd", ("-5",), "$6$"),
    ("o_md5", "openssl", "-1", "$1$"),
    ("o_sha256", "openssl", "-5", "$5$"),
    ("o_sha512", "openssl", "-6", "$6$"),
    ("o_apr1", "openssl", "-apr1", "$apr1$"),
)


def users_file(d, name="htpasswd"):
    lines = ["# every format", ""]
    for user, tool, opts, prefix in FORMATS:
        if tool == "htpasswd":
            try:
                line = htpasswd_line(user, opts, "pw-" + user)
            except subprocess.CalledProcessError:
                continue        # an older htpasswd without -2 / -5
        else:
            line = openssl_line(user, opts, "pw-" + user)
        ok(line.split(":", 1)[1].startswith(prefix), line)
        lines.append(line)
    return write(os.path.join(d, name), lines)


def auth_conf(port, o, path, server_extra="", route_extra="", routes=None):
    return simple_conf(port, [o], workers=1, server_extra=
                       'auth_basic = "Staff only"; auth_basic_user_file = "%s";'
                       'log_format = "$remote_user $status [$blocked]";%s' % (path, server_extra),
                       route_extra=route_extra, routes=routes)


@test
def every_hash_format():
    htpasswd_tool()
    d = tmpdir()
    path = users_file(d)
    o = Origin("o")
    port = free_port()
    lg = Legate(auth_conf(port, o, path))
    n = 0
    for user, tool, opts, prefix in FORMATS:
        if user + ":" not in open(path).read():
            continue
        r = get(port, "/" + user, [basic(user, "pw-" + user)])
        eq(r.status, 200, user)
        r = get(port, "/" + user, [basic(user, "pw-" + user + "x")])
        eq(r.status, 401, user + " with a wrong password")
        n += 1
    ok(n >= 7, "formats tried: %d" % n)
    access_log_has(lg, "bcrypt 200 [-]")
    access_log_has(lg, "- 401 [auth_basic: wrong user or password]")
    r = get(port, "/x?echo=1", [basic("apr1", "pw-apr1")])
    ok(b"Authorization" in r.body, "the credentials go on to the upstream, as nginx")


@test
def missing_wrong_and_garbled_credentials():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-B", "-C", "5"), "secret")])
    o = Origin("o")
    port = free_port()
    lg = Legate(auth_conf(port, o, path))
    r = get(port, "/")
    eq(r.status, 401)
    eq(r.headers.get("WWW-Authenticate"), 'Basic realm="Staff only"')
    for value in ("Bearer abc", "Basic", "Basic !!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                  "Basic " + base64.b64encode(b":secret").decode(), "Basic YW5uOnNlY3JldA"):
        r = get(port, "/", [("Authorization", value)])
        eq(r.status, 401, value)
        eq(r.headers.get("WWW-Authenticate"), 'Basic realm="Staff only"', value)
    eq(get(port, "/", [basic("bob", "secret")]).status, 401, "unknown user")
    eq(get(port, "/", [basic("ann", "Secret")]).status, 401)
    eq(get(port, "/", [basic("ann", "secret")]).status, 200)
    eq(o.stats()["requests"], 1, "only the authenticated request reached the origin")
    access_log_has(lg, "- 401 [auth_basic: no credentials]")
    access_log_has(lg, "- 401 [auth_basic: credentials are not Basic user:password]")
    access_log_has(lg, "ann 200 [-]")


@test
def bad_files_are_refused_with_file_line():
    htpasswd_tool()
    d = tmpdir()
    good = htpasswd_line("ok", ("-B", "-C", "5"), "pw")
    plain = htpasswd_line("plain", ("-p",), "pw")
    des = htpasswd_line("des", ("-d",), "pw")
    path = write(os.path.join(d, "htpasswd"),
                 [good, plain, "# comment", des, "garbage line", "x:$2y$05$short", ":nouser"])
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"], server_extra=
                                       'auth_basic = "r"; auth_basic_user_file = "%s";' % path))
    eq(rc, 1)
    for line, what in ((2, "plain-text password is refused"), (4, "traditional DES crypt is refused"),
                       (5, "expected user:hash"), (6, "malformed bcrypt"), (7, "user name is empty")):
        contains(err, "%s:%d: " % (path, line))
        ok(re.search(re.escape("%s:%d: " % (path, line)) + ".*" + re.escape(what), err),
           "line %d %s:\n%s" % (line, what, err))
    ok("%s:1:" % path not in err, err)
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"], server_extra=
                                       'auth_basic = "r"; auth_basic_user_file = "%s/none";' % d))
    eq(rc, 1)
    contains(err, "%s/none: cannot read" % d)


@test
def reload_rereads_the_file():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-m",), "old")])
    o = Origin("o")
    port = free_port()
    lg = Legate(auth_conf(port, o, path))
    eq(get(port, "/", [basic("ann", "old")]).status, 200)
    write(path, [htpasswd_line("ann", ("-m",), "new")])
    eq(get(port, "/", [basic("ann", "new")]).status, 401, "read at load, not per request")
    lg.reload()
    eq(get(port, "/", [basic("ann", "new")]).status, 200)
    eq(get(port, "/", [basic("ann", "old")]).status, 401)
    # a bad file on reload keeps the old generation
    write(path, ["ann:plaintext"])
    lg.allow_log(r"plain-text password is refused|reload failed")
    lg.reload(expect_ok=False)
    eq(get(port, "/", [basic("ann", "new")]).status, 200)


@test
def auth_inherited_and_turned_off():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-s",), "pw")])
    o = Origin("o")
    port = free_port()
    Legate(auth_conf(port, o, path, routes=
                     '{ prefix = "/"; proxy_pass = "app"; },'
                     '{ prefix = "/pub/"; proxy_pass = "app"; auth_basic = "off"; },'
                     '{ prefix = "/other/"; proxy_pass = "app"; auth_basic = "Other"; }'))
    eq(get(port, "/x").status, 401)
    eq(get(port, "/pub/x").status, 200)
    r = get(port, "/other/x")
    eq(r.status, 401)
    eq(r.headers.get("WWW-Authenticate"), 'Basic realm="Other"', "the route's realm")
    eq(get(port, "/other/x", [basic("ann", "pw")]).status, 200, "with the server's file")


@test
def satisfy_all_and_any():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-m",), "pw")])
    o = Origin("o")
    port = free_port()
    rules = 'access_rules = [ "allow 127.0.0.1", "deny all" ];'
    lg = Legate(auth_conf(port, o, path, server_extra=rules))
    # all (the default): both must hold
    eq(get(port, "/", source="127.0.0.1").status, 401)
    eq(get(port, "/", [basic("ann", "pw")], source="127.0.0.1").status, 200)
    eq(get(port, "/", [basic("ann", "pw")], source="127.0.0.2").status, 403,
       "a denied address is refused whatever its password")
    lg.reload(auth_conf(port, o, path, server_extra=rules + 'satisfy = "any";'))
    eq(get(port, "/", source="127.0.0.1").status, 200, "an allowed address needs no password")
    r = get(port, "/", source="127.0.0.2")
    eq(r.status, 401, "another address is asked for one")
    eq(get(port, "/", [basic("ann", "pw")], source="127.0.0.2").status, 200)
    eq(get(port, "/", [basic("ann", "no")], source="127.0.0.2").status, 401)
    # any without auth: the rules alone decide
    lg.reload(simple_conf(port, [o], workers=1, server_extra=rules + 'satisfy = "any";'))
    eq(get(port, "/", source="127.0.0.2").status, 403)
    eq(get(port, "/", source="127.0.0.1").status, 200)


@test
def forward_auth_file_takes_every_format():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ap", ("-m",), "pw1"),
                                               htpasswd_line("sh", ("-s",), "pw2"),
                                               openssl_line("m5", "-1", "pw3")])
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 origin.test\n")
    o = Origin("o")
    port = free_port()
    Legate("""worker_processes = 1;
http = { servers = ( { listen = "127.0.0.1:%d";
    forward = { allow_private = true; hosts_file = "%s/hosts"; resolvers = [ "127.0.0.1:9" ];
                auth_file = "%s"; };
    routes = ( ); } ); };""" % (port, d, path))
    for user, pw in (("ap", "pw1"), ("sh", "pw2"), ("m5", "pw3")):
        st, _, _ = curl("-x", "http://%s:%s@127.0.0.1:%d" % (user, pw, port),
                        "http://origin.test:%d/x" % o.port, check=False)
        eq(st, 200, user)
        st, _, _ = curl("-x", "http://%s:bad@127.0.0.1:%d" % (user, port),
                        "http://origin.test:%d/x" % o.port, check=False)
        eq(st, 407, user)


@test(timeout=120)
def one_hash_per_connection():
    htpasswd_tool()
    d = tmpdir()
    # cost 12: some 200 ms a hash, so 20 hashes would show
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-B", "-C", "12"), "pw")])
    o = Origin("o")
    port = free_port()
    lg = Legate(auth_conf(port, o, path).replace("worker_processes = 1;",
                                                  'worker_processes = 1; error_log_level = "debug";'))
    t0 = time.monotonic()
    with Conn(port) as c:
        r = c.request("GET", "/first", [basic("ann", "pw")])
        eq(r.status, 200)
        first = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(20):
            eq(c.request("GET", "/again%d" % i, [basic("ann", "pw")]).status, 200)
        rest = time.monotonic() - t1
        eq(c.request("GET", "/wrong", [basic("ann", "nope")]).status, 401)
        eq(c.request("GET", "/back", [basic("ann", "pw")]).status, 200)
    def checks():
        with open(lg.error_log, errors="replace") as f:
            return len(re.findall(r'auth_basic: user "ann" from \S+: password checked', f.read()))
    wait_until(lambda: checks() >= 1, 5, what="the debug line")
    eq(checks(), 1, "one password check for 22 good requests on one connection")
    ok(rest < max(2.0, first * 5), "20 remembered requests took %.2fs (first %.2fs)" % (rest, first))
    # a new connection looks again (the per-file memory spares the hash itself)
    eq(get(port, "/new", [basic("ann", "pw")]).status, 200)
    wait_until(lambda: checks() == 2, 5, what="a second check on a second connection")


@test
def failures_back_off():
    htpasswd_tool()
    d = tmpdir()
    path = write(os.path.join(d, "htpasswd"), [htpasswd_line("ann", ("-m",), "pw")])
    o = Origin("o")
    port = free_port()
    lg = Legate(auth_conf(port, o, path))
    for i in range(5):
        eq(get(port, "/", [basic("ann", "guess%d" % i)], source="127.0.0.5").status, 401, "try %d" % i)
    r = get(port, "/", [basic("ann", "pw")], source="127.0.0.5")
    eq(r.status, 429, "the 6th attempt waits, even with the right password")
    eq(r.headers.get("Retry-After"), "1")
    eq(get(port, "/", [basic("ann", "pw")], source="127.0.0.6").status, 200,
       "another address is not held back")
    eq(get(port, "/", source="127.0.0.5").status, 401, "without credentials: asked, not throttled")
    wait_until(lambda: get(port, "/", [basic("ann", "pw")], source="127.0.0.5").status == 200,
               5, what="the back-off to end")
    for i in range(5):
        eq(get(port, "/", [basic("ann", "x")], source="127.0.0.5").status, 401,
           "a success cleared the count (try %d)" % i)
    access_log_has(lg, "- 429 [auth_basic: too many failed attempts from this address]")


# ---- the shipped example ----

@test
def edge_policy_example_admin():
    src = os.path.join(REPO, "conf", "examples", "edge-policy.conf")
    if not os.path.exists(src):
        fail("conf/examples/edge-policy.conf is missing")
    o = Origin("o")
    port = free_port()
    text = open(src).read()
    ok("127.0.0.1:8080" in text and "127.0.0.1:9001" in text, "the example's addresses")
    text = text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
    text = text.replace("127.0.0.1:9001", o.address)
    text = text.replace('"htpasswd"', '"%s"' % os.path.join(REPO, "conf", "examples", "htpasswd"))
    text = re.sub(r"worker_processes\s*=\s*[^;]+;", "", text)
    lg = Legate("worker_processes = 1;\n" + text)
    r = get(port, "/admin/x")
    eq(r.status, 401)
    ok("realm=" in r.headers.get("WWW-Authenticate", ""), r.headers)
    eq(get(port, "/admin/x", [basic("admin", "legate")]).status, 200)
    eq(get(port, "/admin/x", [basic("admin", "legat")]).status, 401)
    eq(get(port, "/admin/x", [basic("admin", "legate")], source="127.0.0.2").status, 200,
       "127.0.0.0/8 is allowed")
    eq(get(port, "/other").status, 200, "everything else is open")
    # /api/: 20 r/s with a burst of 10, refused at once: of 40 requests sent
    # back to back (well under a second), about 11 pass and the rest get 429
    t0 = time.monotonic()
    codes = [get(port, "/api/x%d" % i).status for i in range(40)]
    most = 11 + int(20 * (time.monotonic() - t0)) + 1   # the burst, plus what the rate refills
    passed = codes.count(200)
    ok(10 <= passed <= most, "/api/ let %d of 40 through (at most %d): %r" % (passed, most, codes))
    ok(set(codes) <= {200, 429}, "the refusals are 429: %r" % codes)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""auth_request (feature/auth_request.c): an authentication service asked
before proxying -- what it is sent, 2xx / 401 / 403 / other answers, the
headers it sets replacing the client's, a service down or too slow (500,
nothing proxied), and a bad configuration."""
import os
import re
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


class AuthService:
    """A scripted service: the client's Authorization decides the answer."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        for _ in range(10000):
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            hdrs = {}
            for l in head[1:]:
                k, _, v = l.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            with self.lock:
                self.seen.append((head[0], hdrs))
            auth = hdrs.get("authorization", "")
            if auth == "Bearer slow":
                threading.Event().wait(3)
            if auth == "Bearer good":
                out = "HTTP/1.1 200 OK\r\nX-User: alice\r\nX-Other: no\r\nContent-Length: 0\r\n\r\n"
            elif auth == "Bearer forbidden":
                out = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
            elif auth == "Bearer broken":
                out = "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
            else:
                out = ('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="legate"\r\n'
                       "Content-Length: 0\r\n\r\n")
            c.sendall(out.encode())
        except OSError:
            pass
        finally:
            c.close()


def conf(port, origin, auth_addr, extra=""):
    return """
worker_processes = 2;
http = {
  upstreams = { app = { servers = ( "%s" ); }; auth = { servers = ( "%s" ); }; };
  servers = ( {
    listen = "127.0.0.1:%d";
    routes = (
      { prefix = "/private/"; proxy_pass = "app";
        auth_request = "auth"; auth_request_uri = "/check";
        auth_request_set = [ "X-User" ]; auth_request_timeout = "1s"; %s },
      { prefix = "/"; proxy_pass = "app"; }
    );
  } );
};
""" % (origin.address, auth_addr, port, extra)


def ask(port, target, token=None, extra=()):
    h = [("Authorization", "Bearer " + token)] if token else []
    return request(port, target=target, headers=h + list(extra), timeout=10)


@test
def the_service_decides():
    o = Origin("o")
    svc = AuthService()
    port = free_port()
    lg = Legate(conf(port, o, "127.0.0.1:%d" % svc.port))
    r = ask(port, "/private/x?echo=1", "good", [("X-User", "mallory"), ("Cookie", "c=1")])
    eq(r.status, 200)
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    eq(seen.get("x-user"), "alice", "the service's X-User, not the client's")
    ok("x-other" not in seen, "only auth_request_set headers are copied: %r" % seen)
    line, hdrs = svc.seen[-1]
    eq(line, "GET /check HTTP/1.1")
    eq(hdrs.get("x-original-uri"), "/private/x?echo=1")
    eq(hdrs.get("x-original-method"), "GET")
    eq(hdrs.get("cookie"), "c=1", "auth_request_headers (default Authorization, Cookie)")
    ok("x-user" not in hdrs, "other headers are not sent to the service")
    before = o.stats()["requests"]
    r = ask(port, "/private/x")
    eq(r.status, 401)
    eq(r.headers.get("WWW-Authenticate"), 'Bearer realm="legate"')
    eq(ask(port, "/private/x", "forbidden").status, 403)
    eq(ask(port, "/private/x", "broken").status, 500)
    eq(o.stats()["requests"], before, "nothing proxied without the service's yes")
    eq(ask(port, "/public").status, 200, "routes without auth_request are not asked")
    n = len(svc.seen)
    ask(port, "/public")
    eq(len(svc.seen), n)


@test
def a_service_down_or_slow_is_500_and_nothing_proxied():
    o = Origin("o")
    svc = AuthService()
    port = free_port()
    dead = "127.0.0.1:%d" % free_port()
    lg = Legate(conf(port, o, dead))
    eq(ask(port, "/private/x", "good").status, 500)
    lg2 = Legate(conf(free_port(), o, "127.0.0.1:%d" % svc.port))
    r = ask(lg2.port, "/private/x", "slow")
    eq(r.status, 500, "auth_request_timeout 1s against a 3 s service")
    eq(o.stats()["requests"], 0, "nothing proxied")
    eq(ask(lg2.port, "/private/x", "good").status, 200, "the next one goes on")
    lg.wait_log(r"auth_request .*(connect\(\) failed|no live)", 5)
    lg2.wait_log(r"auth_request .*timed out", 5)


@test(timeout=60)
def answers_are_remembered_per_key_for_auth_request_cache_time():
    o = Origin("o")
    svc = AuthService()
    port = free_port()
    extra = 'auth_request_cache_time = "2s"; auth_request_cache_key = "$http_authorization";'
    lg = Legate(conf(port, o, "127.0.0.1:%d" % svc.port, extra).replace(
        "worker_processes = 2;", "worker_processes = 1;"))
    for _ in range(5):
        r = ask(port, "/private/a?echo=1", "good")
        eq(r.status, 200)
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        eq(seen.get("x-user"), "alice", "the remembered X-User")
    eq(len(svc.seen), 1, "one question for five requests of one key")
    for _ in range(3):
        r = ask(port, "/private/b", "nobody")
        eq((r.status, r.headers.get("WWW-Authenticate")), (401, 'Bearer realm="legate"'))
    eq(len(svc.seen), 2, "a 401 is remembered too, under its own key")
    eq(ask(port, "/private/c", "forbidden").status, 403)
    eq(len(svc.seen), 3)
    eq(ask(port, "/private/d", "broken").status, 500)
    eq(ask(port, "/private/d", "broken").status, 500)
    eq(len(svc.seen), 5, "an error is never remembered")
    wait_until(lambda: ask(port, "/private/a", "good").status == 200 and len(svc.seen) == 6,
               6, interval=0.5, what="asked again once the answer expired")


@test
def an_unknown_service_is_a_config_error():
    o = Origin("o")
    rc, err = check_config(conf(free_port(), o, "127.0.0.1:1")
                           .replace('auth_request = "auth"', 'auth_request = "nope"'))
    eq(rc, 1, "legate -t accepted an unknown auth_request upstream: " + err)
    ok(re.search(r":\d+: unknown upstream 'nope' in 'auth_request'", err), err)



@test
def the_edge_policy_example_private():
    src = os.path.join(REPO, "conf", "examples", "edge-policy.conf")
    o = Origin("o")
    svc = AuthService()
    port = free_port()
    text = open(src).read()
    ok("127.0.0.1:9002" in text, "the example's auth service address")
    text = text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
    text = text.replace("127.0.0.1:9001", o.address)
    text = text.replace("127.0.0.1:9002", "127.0.0.1:%d" % svc.port)
    text = text.replace('"htpasswd"', '"%s"' % os.path.join(REPO, "conf", "examples", "htpasswd"))
    text = re.sub(r"worker_processes\s*=\s*[^;]+;", "", text)
    Legate("worker_processes = 1;\n" + text)
    eq(ask(port, "/private/x").status, 401)
    r = ask(port, "/private/x?echo=1", "good")
    eq(r.status, 200)
    eq({k.lower(): v for k, v in r.json()["headers"]}.get("x-user"), "alice")
    eq(svc.seen[-1][0], "GET /auth HTTP/1.1")


if __name__ == "__main__":
    main()

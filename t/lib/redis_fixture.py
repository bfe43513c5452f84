"""A redis-server of a test's own, for the fleet tests (r01, r02): a free
port, its own directory, nothing saved; and whether this machine and this
legate can run them at all."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from legate_test import check_config, fail, free_port, main, request, wait_until, _track


def prerequisites():
    """None: go; else why the whole file is skipped."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "redis-server / redis-cli not installed (Debian redis-server)"
    rc, err = check_config('cluster = { redis = "127.0.0.1:1"; };\n'
                           'http = { servers = ( { listen = "127.0.0.1:1"; } ); };')
    if rc != 0 and "needs a legate built with hiredis" in err:
        return "legate built without hiredis: no cluster (its -t says so, as it should)"
    return None


class Redis:
    """A redis-server of its own: free port, own directory, nothing saved.
    tls: a scripts/mkcert directory, and Redis listens on a TLS port only
    (auth_clients: it wants client certificates too)."""

    def __init__(self, port=None, password=None, acl_user=None, tls=None, auth_clients=False,
                 unix=False):
        self.dir = tempfile.mkdtemp(prefix="legate-redis-")
        self.port = port or free_port()
        self.password = password
        self.acl_user = acl_user        # (user, password)
        self.tls = tls
        self.auth_clients = auth_clients
        self.unix = os.path.join(self.dir, "redis.sock") if unix else None
        self.proc = None
        _track(self)
        self.start()

    def start(self):
        if self.tls:
            c = self.tls
            port = ["--port", "0", "--tls-port", str(self.port),
                    "--tls-cert-file", os.path.join(c, "server-ecdsa.pem"),
                    "--tls-key-file", os.path.join(c, "server-ecdsa.key"),
                    "--tls-ca-cert-file", os.path.join(c, "ca.pem"),
                    "--tls-auth-clients", "yes" if self.auth_clients else "no"]
        elif self.unix:
            port = ["--port", "0", "--unixsocket", self.unix]
        else:
            port = ["--port", str(self.port)]
        args = ["redis-server"] + port + ["--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "no",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.acl_user:
            u, p = self.acl_user
            args += ["--user", u, "on", ">" + p, "~*", "&*", "+@all"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        def up():
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                    fail("redis-server exited: %s" % f.read()[-500:])
            return self.cli("PING", check=False).strip() == "PONG"
        wait_until(up, 15, what="redis-server answering")

    def cli(self, *args, check=True):
        cmd = ["redis-cli", "--no-auth-warning"] + (["-s", self.unix] if self.unix else
                                                    ["-h", "127.0.0.1", "-p", str(self.port)])
        if self.tls:
            cmd += ["--tls", "--cacert", os.path.join(self.tls, "ca.pem")]
            if self.auth_clients:
                cmd += ["--cert", os.path.join(self.tls, "client.pem"),
                        "--key", os.path.join(self.tls, "client.key")]
        if self.acl_user:
            cmd += ["--user", self.acl_user[0], "--pass", self.acl_user[1]]
        elif self.password:
            cmd += ["-a", self.password]
        p = subprocess.run(cmd + list(args), capture_output=True, timeout=10)
        out = p.stdout.decode(errors="replace")
        if check and p.returncode != 0:
            fail("redis-cli %r: %s" % (args, p.stderr.decode(errors="replace")))
        return out

    def raw(self, *args):
        """One command with binary arguments over RESP; the first reply line."""
        def enc(a):
            return a if isinstance(a, bytes) else str(a).encode()
        out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(enc(a)), enc(a)) for a in args)
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            s.sendall(out)
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            s.close()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        """What a node's cluster.redis says."""
        if self.unix:
            return "unix:" + self.unix
        return ("rediss://" if self.tls else "") + self.address

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def teardown(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main_unless_missing(check=prerequisites):
    """The file's tests, or exit 77 (skipped) saying what is missing."""
    why = check()
    if why:
        print("# SKIP whole file: %s" % why, flush=True)
        print("0 passed, 0 failed", flush=True)
        sys.exit(77)
    main()


def metric(port, name):
    """A counter or gauge without labels from the metrics page at port, or None."""
    r = request(port, target="/metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.body.decode(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def wait_subscribed(nodes, timeout=15):
    """Every (legate, port) connected to Redis and hearing purges."""
    for lg, port in nodes:
        wait_until(lambda: metric(port, "legate_cluster_redis_up") == 1, timeout,
                   what="node on %d connected to redis" % port)
        wait_until(lambda: metric(port, "legate_cluster_purge_subscribed") == 1, timeout,
                   what="node on %d subscribed to purges" % port)


def xc(r):
    return r.headers.get("X-Cache")


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0

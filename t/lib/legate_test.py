"""End-to-end test harness for legate (Python 3 standard library only).

A test file looks like:

    #!/usr/bin/env python3
    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    from legate_test import *

    @test
    def get_through_proxy():
        with Origin("o1") as o:
            lg = Legate(simple_conf(origins=[o]))
            st, hdrs, body = curl(lg.url("/x"))
            eq(st, 200)

    if __name__ == "__main__":
        main()

Everything a test starts (origins, legates, scripted servers) is registered and
torn down after the test, and every Legate's logs are checked at teardown
("no [alert]/[emerg]/[crit], no sanitizer report").  Tests wait only through
wait_until(), always bounded.
"""

import atexit
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ORIGIN_PY = os.path.join(REPO, "t", "origin.py")
LEGATE_BIN = os.environ.get("LEGATE_BIN", os.path.join(REPO, "src", "legate"))
KEEP_TMP = os.environ.get("LEGATE_TEST_KEEP") == "1"   # keep prefixes for post-mortem

sys.path.insert(0, os.path.join(REPO, "t"))
import origin as _origin                                 # noqa: E402  (pattern())

pattern = _origin.pattern
pattern_blocks = _origin.pattern_blocks

__all__ = [
    "test", "main", "skip", "skip_all", "Skip", "SkipFile", "TestFailure",
    "fail", "eq", "ok", "contains", "wait_until",
    "free_port", "Origin", "Legate", "ScriptedServer", "simple_conf",
    "check_config", "run_legate", "LEGATE_BIN", "REPO",
    "http_raw", "parse_responses", "Response", "Headers", "Conn", "request",
    "curl", "have_curl", "pattern", "pattern_blocks", "line_of",
    "fd_count", "rss_kb", "RssSampler", "session",
]


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------

class TestFailure(AssertionError):
    pass


class TestTimeout(Exception):
    pass


class Skip(Exception):
    """Raised inside a test: report "ok - name # SKIP reason"."""


class SkipFile(Exception):
    """Raised anywhere: the whole file is skipped (exit 77)."""


_tests = []            # (name, fn, timeout)
_resources = []        # started this test: things with .teardown()
_sessions = []         # session resources: torn down at the end of main()
DEFAULT_TIMEOUT = int(os.environ.get("LEGATE_TEST_TIMEOUT", "60"))


def test(fn=None, *, timeout=None, name=None):
    """Register a test: @test or @test(timeout=300)."""
    def register(f):
        _tests.append((name or f.__name__, f, timeout or DEFAULT_TIMEOUT))
        return f
    return register(fn) if fn is not None else register


def skip(reason):
    raise Skip(reason)


def skip_all(reason):
    raise SkipFile(reason)


def fail(msg):
    raise TestFailure(msg)


def ok(cond, msg="condition is false"):
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what=""):
    if got != want:
        g = repr(got)
        if len(g) > 600:
            g = g[:600] + "...(%d chars)" % len(g)
        raise TestFailure("%sgot %s, want %r" % (what + ": " if what else "", g, want))


def contains(haystack, needle, what=""):
    if needle not in haystack:
        h = repr(haystack)
        if len(h) > 1500:
            h = h[:1500] + "..."
        raise TestFailure("%s%r not found in %s" % (what + ": " if what else "", needle, h))


def wait_until(cond, timeout=10.0, interval=0.05, what=None):
    """Poll cond() until it returns a true value (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:          # a probe that raises counts as "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (
                timeout, what or getattr(cond, "__name__", "condition"))
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise TestFailure(msg)
        time.sleep(interval)


def _track(res):
    _resources.append(res)
    return res


def session(factory):
    """Decorator: a lazily built resource shared by the tests of one file.

    Call it to get the resource; it is torn down (and its logs checked) when
    main() ends.  Resources it starts are not torn down after each test.
    """
    cache = {}

    @functools.wraps(factory)
    def get():
        if "v" not in cache:
            before = len(_resources)
            cache["v"] = factory()
            # move what the factory started from per-test to per-session
            started = _resources[before:]
            del _resources[before:]
            _sessions.extend(started)
        return cache["v"]
    return get


def _teardown(resources):
    """Tear down in reverse order; return a list of error strings."""
    errors = []
    while resources:
        r = resources.pop()
        try:
            r.teardown()
        except Exception as e:
            errors.append("teardown %s: %s" % (type(r).__name__, e))
    return errors


def _on_alarm(signo, frame):
    raise TestTimeout("test exceeded its wall-clock bound")


def main():
    """Run the registered tests in order; exit 0, 1 or 77."""
    only = set(a for a in sys.argv[1:] if not a.startswith("-"))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    passed = failed = 0
    try:
        if not os.path.exists(LEGATE_BIN) and not getattr(sys.modules["__main__"],
                                                          "NO_LEGATE_NEEDED", False):
            raise SkipFile("legate binary not found at %s (set LEGATE_BIN)" % LEGATE_BIN)
        for name, fn, timeout in _tests:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            err = None
            skipped = None
            signal.alarm(timeout)
            try:
                fn()
            except Skip as e:
                skipped = str(e)
            except SkipFile:
                raise
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                err = "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())
            finally:
                signal.alarm(0)
            # teardown gets its own bound
            signal.alarm(60)
            try:
                terrs = _teardown(_resources)
            except TestTimeout:
                terrs = ["teardown exceeded 60s"]
            finally:
                signal.alarm(0)
            if terrs and err is None:
                err = "; ".join(terrs)
            elif terrs:
                err += "\n  teardown: " + "; ".join(terrs)
            dt = time.monotonic() - t0
            if err is None:
                passed += 1
                if skipped is not None:
                    print("ok - %s # SKIP %s" % (name, skipped), flush=True)
                else:
                    print("ok - %s (%.1fs)" % (name, dt), flush=True)
            else:
                failed += 1
                first, _, rest = err.partition("\n")
                print("not ok - %s: %s" % (name, first), flush=True)
                for line in rest.rstrip().splitlines():
                    print("#   " + line, flush=True)
    except SkipFile as e:
        _teardown(_resources)
        _teardown(_sessions)
        print("# SKIP whole file: %s" % e, flush=True)
        print("%d passed, %d failed" % (passed, failed), flush=True)
        sys.exit(77)
    signal.alarm(60)
    try:
        serrs = _teardown(_sessions)
    except TestTimeout:
        serrs = ["session teardown exceeded 60s"]
    signal.alarm(0)
    if serrs:
        failed += 1
        print("not ok - session teardown: %s" % "; ".join(serrs), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


# Kill anything still running if the interpreter exits some other way.
_all_procs = []


def _die_with_parent(sig):
    """preexec_fn: the child gets sig when this test process dies, even by
    SIGKILL (Linux PR_SET_PDEATHSIG), so no origin or legate is orphaned."""
    def fn():
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)
        except Exception:
            pass
    return fn


def _on_term(signo, frame):
    raise KeyboardInterrupt("signal %d" % signo)     # unwinds; atexit kills children


@atexit.register
def _kill_all():
    live = [p for p in _all_procs if p.poll() is None]
    for p in live:                      # TERM first: a legate master stops its workers
        try:
            p.terminate()
        except Exception:
            pass
    for p in live:
        try:
            p.wait(5)
        except Exception:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

_PORT_DIR = os.path.join(tempfile.gettempdir(), "legate-test-ports")
_ports_held = {}        # port -> the open file whose lock reserves it


def free_port(host="127.0.0.1"):
    """A port nothing listens on, and that no other caller -- in this
    process or in any other test process -- is given while this one runs.

    The kernel's bind(0) only says the port is free now: closed, the same
    port can be handed out again, here or to a test running alongside
    (make -j check), before the legate meant to have it binds it; and two
    legates bind one port without complaint (SO_REUSEPORT), splitting its
    connections.  So each port handed out is also locked (flock on a file
    named after it, released when the process exits, even killed)."""
    os.makedirs(_PORT_DIR, exist_ok=True)
    for _ in range(200):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port in _ports_held:
            continue
        f = open(os.path.join(_PORT_DIR, str(port)), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue            # another test process was given it
        _ports_held[port] = f
        return port
    raise RuntimeError("no free port after 200 tries")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise ValueError("%r not in text" % needle)


def _pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class RssSampler:
    """Samples the RSS of pids_fn() every interval in a thread; .max_kb."""

    def __init__(self, pids_fn, interval=0.1):
        self.pids_fn = pids_fn
        self.interval = interval
        self.max_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                for pid in self.pids_fn():
                    try:
                        self.max_kb = max(self.max_kb, rss_kb(pid))
                    except OSError:
                        pass
                self.samples += 1
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


# --------------------------------------------------------------------------
# Origin (t/origin.py)
# --------------------------------------------------------------------------

class Origin:
    """A t/origin.py process.  Origin("o1") / Origin("u", unix=True)."""

    def __init__(self, name="origin", port=0, host="127.0.0.1", unix=False):
        self.name = name
        self.host = host
        self.unix_path = None
        self._tmp = None
        args = [sys.executable, ORIGIN_PY, "--name", name, "--host", host,
                "--port", str(port)]
        if unix:
            self._tmp = tempfile.mkdtemp(prefix="legate-origin-")
            self.unix_path = os.path.join(self._tmp, "o.sock")
            args += ["--unix", self.unix_path]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent(signal.SIGKILL))
        _all_procs.append(self.proc)
        _track(self)
        line = self._read_line(10.0)
        m = re.match(r"(PORT|UNIX) (\S+)", line)
        if not m:
            self.stop()
            fail("origin %s did not start (got %r)" % (name, line))
        self.port = int(m.group(2)) if m.group(1) == "PORT" else None

    def _read_line(self, timeout):
        out = []

        def reader():
            out.append(self.proc.stdout.readline().decode(errors="replace"))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else ""

    @property
    def address(self):
        """The upstream address string for a legate config."""
        if self.unix_path:
            return "unix:" + self.unix_path
        return "%s:%d" % (self.host, self.port)

    def _connect(self, timeout=5):
        if self.unix_path:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(timeout)
            s.connect(self.unix_path)
            return s
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def get(self, target):
        """A direct request to the origin (not through legate): Response."""
        s = self._connect()
        try:
            s.sendall(("GET %s HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"
                       % target).encode())
            data = _read_all(s, 10)
        finally:
            s.close()
        return parse_responses(data)[0]

    def stats(self):
        return json.loads(self.get("/_stats").body)

    def reset_stats(self):
        self.get("/_stats?reset=1")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    teardown = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def client_hello(name):
    """The ClientHello Python's TLS client sends for name (bytes on the wire),
    for tests that feed one to a CONNECT tunnel or a TLS pass-through."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    ok(len(hello) > 100 and hello[0] == 0x16, "a ClientHello of %d bytes" % len(hello))
    return hello


class ScriptedServer:
    """An in-process TCP server: handler(sock, peer) runs per connection.

    For origins that misbehave in ways t/origin.py cannot (bad framing in
    responses...).  .connections counts accepted connections.
    """

    def __init__(self, handler):
        self.handler = handler
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.connections = 0
        self.received = []              # bytes of each connection's first read
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        _track(self)

    def _run(self):
        while not self._stop:
            try:
                s, peer = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(s, peer), daemon=True).start()

    def _one(self, s, peer):
        try:
            s.settimeout(30)
            self.handler(s, peer)
        except Exception:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self._stop = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()

    teardown = stop


def read_request_head(s, timeout=10):
    """Read one request head from s (for ScriptedServer handlers)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        x = s.recv(65536)
        if not x:
            break
        data += x
    return data


__all__.append("read_request_head")
__all__.append("client_hello")


# --------------------------------------------------------------------------
# Legate
# --------------------------------------------------------------------------

_FMT_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(conf_text, **vars):
    """Replace {name} for the names given; leave every other brace alone
    (libconfig groups use braces).  Final text passes through unchanged."""
    def sub(m):
        k = m.group(1)
        return str(vars[k]) if k in vars else m.group(0)
    return _FMT_RE.sub(sub, conf_text)


def simple_conf(port, origins=(), workers=None, http_extra="", server_extra="",
                route_extra="", global_extra="", routes=None, keepalive=None,
                upstream_extra=""):
    """A config with one server on 127.0.0.1:port proxying "/" to upstream
    "app" made of origins (Origin objects or address strings)."""
    addrs = [o if isinstance(o, str) else o.address for o in origins]
    servers = ", ".join('"%s"' % a for a in addrs)
    ka = "keepalive = %d;" % keepalive if keepalive is not None else ""
    ups = ('upstreams = { app = { servers = ( %s ); %s %s }; };' % (servers, ka, upstream_extra)
           if addrs else "")
    if routes is None:
        routes = '{ prefix = "/"; proxy_pass = "app"; %s }' % route_extra
    w = "worker_processes = %d;\n" % workers if workers is not None else ""
    return """%s%s
http = {
  %s
  %s
  servers = (
    {
      listen = "127.0.0.1:%d";
      %s
      routes = ( %s );
    }
  );
};
""" % (w, global_extra, http_extra, ups, port, server_extra, routes)


def _make_prefix():
    d = tempfile.mkdtemp(prefix="legate-e2e-")
    os.makedirs(os.path.join(d, "logs"))
    return d


def _sanitizer_env(prefix):
    env = dict(os.environ)
    asan = "log_path=%s/asan:detect_leaks=1" % prefix
    env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"] + ":" + asan) if env.get("ASAN_OPTIONS") else asan
    ubsan = "log_path=%s/ubsan:print_stacktrace=1" % prefix
    env["UBSAN_OPTIONS"] = (env["UBSAN_OPTIONS"] + ":" + ubsan) if env.get("UBSAN_OPTIONS") else ubsan
    return env


def _listen_addrs(conf_text):
    """Every listen address of the config: [("tcp", host, port) | ("unix", path)]."""
    out = []
    for m in re.finditer(r"\blisten\s*=\s*(\"[^\"]*\"|\((?:[^()]|\{[^}]*\})*\))", conf_text):
        for a in re.findall(r"\"([^\"]+)\"", m.group(1)):
            if a.startswith("unix:"):
                out.append(("unix", a[5:]))
                continue
            mm = re.match(r"^(\[[^\]]+\]|[^:]*):(\d+)$", a)
            if not mm:
                continue
            host = mm.group(1).strip("[]")
            if host in ("*", "", "0.0.0.0"):
                host = "127.0.0.1"
            if host == "::":
                host = "::1"
            out.append(("tcp", host, int(mm.group(2))))
    return sorted(set(out))


def _worker_count(conf_text):
    m = re.search(r"^\s*worker_processes\s*=\s*(\"?)(\w+)\1\s*;", conf_text, re.M)
    if not m or m.group(2) == "auto":
        return os.cpu_count() or 1
    return int(m.group(2))


def _probe(addr, timeout=0.5):
    if addr[0] == "unix":
        s = socket.socket(socket.AF_UNIX)
        target = addr[1]
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[1] else socket.AF_INET)
        target = (addr[1], addr[2])
    s.settimeout(timeout)
    try:
        s.connect(target)
        return True
    except OSError:
        return False
    finally:
        s.close()


BAD_LOG_RE = re.compile(r"\[(alert|emerg|crit)\]|runtime error:|AddressSanitizer|"
                        r"LeakSanitizer|UndefinedBehaviorSanitizer")


class Legate:
    """A legate master in the foreground with its own prefix.

    conf_text may contain {name} placeholders filled from **vars ({prefix}
    is always available).  workers=N prepends "worker_processes = N;" unless
    the text sets it.  The constructor returns once every listen address
    accepts and the "started" notice is logged.
    """

    def __init__(self, conf_text, workers=2, start=True, start_timeout=20, **vars):
        self.prefix = _make_prefix()
        self.conf_path = os.path.join(self.prefix, "legate.conf")
        self.vars = vars
        self.workers_wanted = workers
        self.allowed = []               # regexes of log lines check_logs accepts
        self.proc = None
        self.conf_text = None
        self._write_conf(conf_text)
        self.checked = False
        self.exit_expected = False
        _track(self)
        if start:
            self.start(start_timeout)

    # -- config --
    def _write_conf(self, conf_text):
        text = render(conf_text, prefix=self.prefix, **self.vars)
        if self.workers_wanted is not None and \
                not re.search(r"^\s*worker_processes\s*=", text, re.M):
            text = "worker_processes = %d;\n" % self.workers_wanted + text
        self.conf_text = text
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.conf_path)
        self.addrs = _listen_addrs(text)
        self.nworkers = _worker_count(text)

    @property
    def port(self):
        """The first TCP listen port."""
        for a in self.addrs:
            if a[0] == "tcp":
                return a[2]
        raise TestFailure("config has no TCP listen address")

    def url(self, path="/", port=None):
        return "http://127.0.0.1:%d%s" % (port or self.port, path)

    @property
    def error_log(self):
        return os.path.join(self.prefix, "logs", "error.log")

    @property
    def access_log(self):
        return os.path.join(self.prefix, "logs", "access.log")

    @property
    def stderr_log(self):
        return os.path.join(self.prefix, "stderr.log")

    def log_text(self):
        """error.log + stderr.log"""
        out = ""
        for p in (self.error_log, self.stderr_log):
            try:
                with open(p, errors="replace") as f:
                    out += f.read()
            except FileNotFoundError:
                pass
        return out

    def wait_log(self, regex, timeout=10, what=None):
        r = re.compile(regex)
        return wait_until(lambda: r.search(self.log_text()), timeout,
                          what=what or "log line /%s/" % regex)

    def allow_log(self, regex):
        """Accept log lines matching regex in check_logs (e.g. an expected [emerg])."""
        self.allowed.append(re.compile(regex))

    # -- process --
    def start(self, timeout=20):
        self._stderr = open(self.stderr_log, "ab")
        self.proc = subprocess.Popen(
            [LEGATE_BIN, "-F", "-p", self.prefix, "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            env=_sanitizer_env(self.prefix), cwd=self.prefix,
            preexec_fn=_die_with_parent(signal.SIGTERM))
        _all_procs.append(self.proc)

        def ready():
            if self.proc.poll() is not None:
                return True     # no use waiting: reported below
            return all(_probe(a) for a in self.addrs) and \
                re.search(r"\[notice\] \d+#\d+: legate \S+ started", self.log_text())
        try:
            wait_until(ready, timeout, what="legate to listen and log 'started'")
        except TestFailure as e:
            if self.proc.poll() is None:
                raise TestFailure("%s\nlog tail:\n%s" % (e, self.log_text()[-3000:]))
        if self.proc.poll() is not None:
            raise TestFailure("legate exited with %s during startup:\n%s"
                              % (self.proc.returncode, self.log_text()[-3000:]))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def workers(self):
        """Child pids of the master (live ones)."""
        try:
            with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                pids = [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []
        return [p for p in pids if _pid_alive(p)]

    def wait_workers(self, n=None, timeout=10):
        n = self.nworkers if n is None else n
        return wait_until(lambda: len(self.workers()) == n and self.workers(),
                          timeout, what="%d workers" % n)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def reload(self, new_conf_text=None, expect_ok=True, timeout=20):
        """Rewrite the config (if given), send HUP, and wait until a new
        generation of workers replaced the old one (expect_ok) or until the
        failure is logged and the old workers still serve (not expect_ok)."""
        old = set(self.workers())
        marks = self.log_marks()
        saved = (self.addrs, self.nworkers)
        if new_conf_text is not None:
            self._write_conf(new_conf_text)
        self.signal(signal.SIGHUP)
        if expect_ok:
            def replaced():
                cur = set(self.workers())
                return len(cur) == self.nworkers and not (cur & old)
            wait_until(replaced, timeout, what="new workers to replace %s" % sorted(old))
        else:
            self.addrs, self.nworkers = saved      # the old config still runs
            def failed_logged():
                return re.search(r"\[(emerg|error|alert|crit)\]", self.log_since(marks))
            wait_until(failed_logged, timeout, what="reload failure in the log")
            eq(set(self.workers()), old, "workers after a failed reload")
        return self.workers()

    def log_marks(self):
        """Current sizes of the log files, for log_since()."""
        out = {}
        for p in (self.error_log, self.stderr_log):
            try:
                out[p] = os.path.getsize(p)
            except OSError:
                out[p] = 0
        return out

    def log_since(self, marks):
        """Text appended to the logs since log_marks() returned marks."""
        out = ""
        for p, size in marks.items():
            try:
                with open(p, "rb") as f:
                    f.seek(size)
                    out += f.read().decode(errors="replace")
            except OSError:
                pass
        return out

    def wait_exit(self, timeout=10):
        """Wait for the master to exit (after a signal the test sent); its rc."""
        self.exit_expected = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail("legate master %d still running %ss after it was told to exit"
                 % (self.pid, timeout))

    def stop(self, sig=None, timeout=10):
        """Stop the master; fail if it needs SIGKILL or leaves workers behind."""
        sig = sig or signal.SIGTERM
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.exit_expected = True
        workers = self.workers()
        self.signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_all(workers)
            fail("legate did not exit within %ss of %s; killed" % (timeout, sig.name))
        try:
            wait_until(lambda: not any(_pid_alive(p) for p in workers), 5,
                       what="workers to exit with the master")
        except TestFailure:
            self._kill_all(workers)
            raise
        return self.proc.returncode

    def _kill_all(self, workers):
        for p in [self.pid] + list(workers):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def check_logs(self):
        bad = []
        for p in (self.error_log, self.stderr_log):
            try:
                with open(p, errors="replace") as f:
                    for line in f:
                        if BAD_LOG_RE.search(line) and \
                                not any(a.search(line) for a in self.allowed):
                            bad.append("%s: %s" % (os.path.basename(p), line.rstrip()))
            except FileNotFoundError:
                pass
        for f in sorted(os.listdir(self.prefix)):
            if f.startswith("asan") or f.startswith("ubsan"):
                with open(os.path.join(self.prefix, f), errors="replace") as fh:
                    bad.append("sanitizer report %s:\n%s" % (f, fh.read()[:4000]))
        if bad:
            self.checked = True             # report once
            fail("bad log lines in %s:\n%s" % (self.prefix, "\n".join(bad[:30])))

    def teardown(self):
        errs = []
        workers = self.workers() if self.alive() else []
        if self.proc is not None and not self.alive() and not self.exit_expected:
            errs.append("legate master exited unexpectedly (rc %s)" % self.proc.returncode)
        try:
            self.stop()
        except Exception as e:
            errs.append(str(e))
            self._kill_all(workers)
        try:
            self._stderr.close()
        except Exception:
            pass
        try:
            if not self.checked:
                self.check_logs()
        except Exception as e:
            errs.append(str(e))
        if errs:
            raise TestFailure("; ".join(errs) + " (prefix kept: %s)" % self.prefix)
        if not KEEP_TMP:
            shutil.rmtree(self.prefix, ignore_errors=True)


def run_legate(args, timeout=15, prefix=None):
    """Run the legate binary with args; return (rc, stdout, stderr)."""
    env = _sanitizer_env(prefix) if prefix else dict(os.environ)
    p = subprocess.run([LEGATE_BIN] + list(args), capture_output=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def check_config(conf_text, prefix=None, extra_args=(), make_logs=True, **vars):
    """Run `legate -t` on conf_text in a fresh temp prefix; (rc, stderr).

    The file is PREFIX/legate.conf; the caller may compare "FILE:LINE:" with
    the returned .path attribute via check_config.last_path."""
    own = prefix is None
    if own:
        prefix = tempfile.mkdtemp(prefix="legate-t-")
        if make_logs:
            os.makedirs(os.path.join(prefix, "logs"))
    path = os.path.join(prefix, "legate.conf")
    with open(path, "w") as f:
        f.write(render(conf_text, prefix=prefix, **vars))
    check_config.last_path = path
    try:
        rc, out, err = run_legate(["-t", "-p", prefix, "-c", path] + list(extra_args),
                                  prefix=prefix)
        for f in os.listdir(prefix):
            if f.startswith("asan") or f.startswith("ubsan"):
                with open(os.path.join(prefix, f), errors="replace") as fh:
                    err += "\n[sanitizer report %s]\n%s" % (f, fh.read())
        check_config.last_stdout = out
        return rc, err
    finally:
        if own and not KEEP_TMP:
            shutil.rmtree(prefix, ignore_errors=True)


# --------------------------------------------------------------------------
# HTTP clients
# --------------------------------------------------------------------------

class Headers:
    """Ordered, case-insensitive multi-map of (name, value)."""

    def __init__(self, items=()):
        self.items = list(items)

    def get(self, name, default=None):
        n = name.lower()
        for k, v in self.items:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return "Headers(%r)" % self.items


class Response:
    def __init__(self, version, status, reason, headers, body, complete=True, raw=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.complete = complete        # False: connection ended mid-body
        self.raw = raw

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        b = self.body[:120]
        return "<Response %s %s %r%s%s>" % (self.status, self.headers.items, b,
                                            "..." if len(self.body) > 120 else "",
                                            "" if self.complete else " INCOMPLETE")


class Incomplete(Exception):
    pass


def _parse_one(data, pos, method="GET", eof=False):
    """Parse one response at data[pos:].  Returns (Response, new_pos); raises
    Incomplete when more bytes are needed (and eof is False)."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        if eof and pos < len(data):
            raise ValueError("unterminated response head: %r" % data[pos:pos + 200])
        raise Incomplete
    head = data[pos:end].decode("latin-1")
    lines = head.split("\r\n")
    m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise ValueError("bad status line %r" % lines[0][:200])
    version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
    hdrs = Headers()
    for line in lines[1:]:
        if ":" not in line:
            raise ValueError("bad header line %r" % line[:200])
        k, v = line.split(":", 1)
        hdrs.items.append((k, v.strip(" \t")))
    p = end + 4
    if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
        return Response(version, status, reason, hdrs, b"", True, data[pos:p]), p
    te = hdrs.get_all("transfer-encoding")
    if te and "chunked" in ",".join(te).lower():
        body = bytearray()
        while True:
            nl = data.find(b"\r\n", p)
            if nl < 0:
                break
            try:
                size = int(data[p:nl].split(b";")[0].strip(), 16)
            except ValueError:
                raise ValueError("bad chunk size line %r" % data[p:nl][:100])
            if size == 0:
                tend = data.find(b"\r\n\r\n", nl)
                if data[nl:nl + 4] == b"\r\n\r\n":
                    tend = nl
                if tend < 0:
                    break
                p = tend + 4
                return Response(version, status, reason, hdrs, bytes(body), True,
                                data[pos:p]), p
            if len(data) < nl + 2 + size + 2:
                break
            body += data[nl + 2:nl + 2 + size]
            p = nl + 2 + size + 2
        if eof:
            return Response(version, status, reason, hdrs, bytes(body), False,
                            data[pos:]), len(data)
        raise Incomplete
    cl = hdrs.get("content-length")
    if cl is not None:
        n = int(cl)
        if len(data) - p >= n:
            return Response(version, status, reason, hdrs, data[p:p + n], True,
                            data[pos:p + n]), p + n
        if eof:
            return Response(version, status, reason, hdrs, data[p:], False,
                            data[pos:]), len(data)
        raise Incomplete
    # close-delimited
    if eof:
        return Response(version, status, reason, hdrs, data[p:], True, data[pos:]), len(data)
    raise Incomplete


def parse_responses(data, methods=None, eof=True, with_interim=False):
    """Split bytes holding pipelined responses into Response objects.

    methods: request methods in order (a "HEAD" response has no body).
    Interim 1xx responses are dropped unless with_interim.  A trailing
    partial response is returned with .complete False (eof=True)."""
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        m = methods[i] if methods and i < len(methods) else "GET"
        try:
            r, pos = _parse_one(data, pos, m, eof)
        except Incomplete:
            break
        if 100 <= r.status < 200 and r.status != 101:
            if with_interim:
                out.append(r)
            continue
        out.append(r)
        i += 1
    return out


def _read_all(s, timeout):
    """Read until EOF or until nothing arrives for timeout seconds."""
    s.settimeout(timeout)
    chunks = []
    while True:
        try:
            x = s.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not x:
            break
        chunks.append(x)
    return b"".join(chunks)


def _connect(port, host="127.0.0.1", timeout=5, source=None):
    """source: a local address to connect from (127.0.0.2 ...)."""
    if isinstance(port, str) and port.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(port[5:])
        return s
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def http_raw(port, data, timeout=5, host="127.0.0.1", responses=None, methods=None,
             shutdown=False, total_timeout=None):
    """Send raw bytes, return everything read until the peer closes, or
    nothing arrives for `timeout` seconds, or (responses=N) N complete final
    responses were read.  shutdown=True half-closes after sending."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    s = _connect(port, host)
    deadline = time.monotonic() + (total_timeout or max(30, timeout * 3))
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(timeout)
        buf = b""
        while time.monotonic() < deadline:
            try:
                x = s.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not x:
                break
            buf += x
            if responses is not None:
                got = parse_responses(buf, methods, eof=False)
                if len(got) >= responses and all(r.complete for r in got):
                    break
        return buf
    finally:
        s.close()


class Conn:
    """A client connection sending requests and reading responses one at a time."""

    def __init__(self, port, host="127.0.0.1", timeout=10, source=None):
        self.sock = _connect(port, host, timeout, source)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=(), body=None, host="localhost",
                version="HTTP/1.1"):
        lines = ["%s %s %s" % (method, target, version)]
        if host is not None:
            lines.append("Host: " + host)
        names = set()
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            lines.append("%s: %s" % (k, v))
            names.add(k.lower())
        if body is not None and "content-length" not in names and \
                "transfer-encoding" not in names:
            lines.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            data += body if isinstance(body, bytes) else body.encode()
        self.send(data)
        return self.read_response(method)

    def read_response(self, method="GET", timeout=None, interim=False):
        """One response (1xx skipped unless interim); a partial one if the
        peer closed mid-response; None if it closed before any byte."""
        self.sock.settimeout(timeout or self.timeout)
        while True:
            if self.buf:
                try:
                    r, pos = _parse_one(self.buf, 0, method, self.eof)
                    self.buf = self.buf[pos:]
                    if 100 <= r.status < 200 and r.status != 101 and not interim:
                        continue
                    return r
                except Incomplete:
                    pass
            elif self.eof:
                return None
            if self.eof:
                return None
            try:
                x = self.sock.recv(1 << 20)
            except ConnectionResetError:
                x = b""
            if not x:
                self.eof = True
            self.buf += x

    def closed(self, timeout=5):
        """True if the peer closes (EOF or RST) within timeout with no more data."""
        if self.eof:
            return True
        self.sock.settimeout(timeout)
        try:
            x = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            x = b""
        if x:
            self.buf += x
            return False
        self.eof = True
        return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(port, method="GET", target="/", headers=(), body=None, host="localhost",
            timeout=10):
    """One request on a new connection: Response (or None if closed first)."""
    with Conn(port, timeout=timeout) as c:
        return c.request(method, target, headers, body, host)


def have_curl():
    return shutil.which("curl") is not None


def curl(*args, timeout=30, out=None, check=True):
    """Run curl -sS with args; return (status, Headers, body).

    The headers are those of the final response (after any 100 Continue).
    out=PATH writes the body there (body returned as None).  With
    check=False a curl failure returns status 0 instead of failing."""
    if not have_curl():
        raise Skip("curl not installed")
    tmp = tempfile.mkdtemp(prefix="legate-curl-")
    try:
        hfile = os.path.join(tmp, "h")
        bfile = out or os.path.join(tmp, "b")
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-D", hfile, "-o", bfile] + \
              [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            if check:
                fail("curl %s failed (rc %d): %s" % (" ".join(cmd[6:]), p.returncode,
                                                   p.stderr.decode(errors="replace").strip()))
            return 0, Headers(), b""
        with open(hfile, "rb") as f:
            raw = f.read().decode("latin-1")
        blocks = [b for b in raw.split("\r\n\r\n") if b.strip()]
        status, hdrs = 0, Headers()
        if blocks:
            lines = blocks[-1].split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = Headers((l.split(":", 1)[0], l.split(":", 1)[1].strip())
                           for l in lines[1:] if ":" in l)
        body = None
        if out is None:
            with open(bfile, "rb") as f:
                body = f.read()
        return status, hdrs, body
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StrictKeepalive:
    """Clients that never retry, for zero-drop checks: each keeps one
    connection busy with back-to-back requests and counts every request
    without a whole 200 answer as failed.  Only an answer that says
    Connection: close lets it open another connection.  Bounded by count."""

    def __init__(self, port, clients=8, per_client=20000):
        self.port = port
        self.ok = 0
        self.fail = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(per_client,), daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, n):
        c = None
        for i in range(n):
            if self.stop.is_set():
                break
            target = "/v" if i % 2 else "/s%d?size=3000" % i
            try:
                if c is None:
                    c = Conn(self.port, timeout=10)
                r = c.request(target=target)
            except Exception as e:      # noqa: BLE001 - every failure is counted
                r = e
            good = isinstance(r, Response) and r.status == 200 and r.complete
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.fail.append("%s -> %r" % (target, r))
            if not good or "close" in r.headers.get("Connection", "").lower():
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    def more(self, n=100, timeout=10, what="requests"):
        """Wait until n more requests have succeeded."""
        before = self.ok
        wait_until(lambda: self.ok >= before + n, timeout, what=what)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
__all__.append("StrictKeepalive")

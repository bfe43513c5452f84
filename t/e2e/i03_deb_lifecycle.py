#!/usr/bin/env python3
"""The Debian package's life on a real machine (issue 20): make deb builds
it once; its contents are checked; then, as root on a throwaway (CI)
machine, it is installed with dpkg, started as its systemd unit starts it
(ExecStartPre check, ExecStart with a NOTIFY_SOCKET, waiting for READY=1),
answers on a port, keeps its configuration through a reload with a bad
one, is upgraded in place to a second version (the same package
re-versioned, with a changed conffile) while it answers, keeps the edited
/etc/legate files, and is purged: /etc/legate, the logs, the cache and the
legate user go.  The machine is restored (the package purged) even when a
check fails.

Without systemd as PID 1 (containers, most CI runners) nothing starts the
service: the test runs the unit's lines itself, as systemd would, after
making RuntimeDirectory= (/run/legate).  The upgrade keeps the old master
serving (nothing stops it), then the binary upgrade of legate(8) (USR2,
WINCH, QUIT) moves to the new binary without losing a request.

Skipped (exit 77) when not root, when dpkg or debhelper is missing, in a
sanitizer build, or when a legate package, user or /etc/legate is already
there (the test never touches a machine's own legate)."""
import ctypes
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(LEGATE_BIN)))
UNIT = "/lib/systemd/system/legate.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/legate.service"

_tmps = []
_deb = {}           # the built package: path, version
_masters = set()    # pids of masters this test started (killed at the end)


def tmpdir(tag):
    d = tempfile.mkdtemp(prefix="legate-deb-%s-" % tag)
    _tmps.append(d)
    return d


def run(argv, timeout=120, check=True, env=None):
    p = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env=env)
    out = (p.stdout + p.stderr).decode(errors="replace")
    if check:
        eq(p.returncode, 0, "%s: %s" % (" ".join(argv), out[-3000:]))
    return p.returncode, out


def dpkg(args, timeout=300, check=True):
    """dpkg ARGS; while another dpkg or apt holds the lock, tried again (for
    up to 2 minutes)."""
    deadline = time.monotonic() + 120
    while True:
        rc, out = run(["dpkg"] + args, timeout=timeout, check=False)
        if rc != 0 and "lock" in out and time.monotonic() < deadline:
            time.sleep(1)
            continue
        if check:
            eq(rc, 0, "dpkg %s: %s" % (" ".join(args), out[-3000:]))
        return rc, out


def installed_state():
    """dpkg's status of legate: "installed", "config-files", ... or None."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "legate"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    s = p.stdout.decode().strip()
    return s if p.returncode == 0 and s and s != "not-installed" else None


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def preconditions():
    if os.geteuid() != 0:
        skip_all("not root: the package is installed on the machine itself")
    for tool in ("dpkg", "dpkg-deb", "dpkg-query", "dh", "dpkg-buildpackage", "adduser"):
        if not shutil.which(tool):
            skip_all("%s is not installed (scripts/bootstrap installs it)" % tool)
    if not shutil.which("deb-systemd-helper"):
        skip_all("init-system-helpers (deb-systemd-helper) is not installed")
    if not os.path.exists(os.path.join(BUILD, "Makefile")):
        skip_all("no Makefile beside %s: not a configured build tree" % LEGATE_BIN)
    v = run([LEGATE_BIN, "-V"], check=False)[1]
    if "sanitizers" in v:
        skip_all("sanitizer build: the package is built and checked by the plain build")
    if installed_state():
        skip_all("a legate package is installed here (%s): not touched" % installed_state())
    if user_exists("legate") or group_exists("legate") or os.path.exists("/etc/legate"):
        skip_all("a legate user, group or /etc/legate exists here: not touched")


def restore_machine():
    """Whatever happened: no master of ours left, the package purged."""
    for pid in list(_masters):
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if wait_gone(pid, 10):
                break
        _masters.discard(pid)
    if installed_state():
        try:
            dpkg(["--purge", "legate"], check=False)
        except Exception as e:      # noqa: BLE001 - restoring goes on
            print("# purge failed: %s" % e, flush=True)
    shutil.rmtree("/run/legate", ignore_errors=True)
    for d in _tmps:
        shutil.rmtree(d, ignore_errors=True)
    del _tmps[:]


def wait_gone(pid, timeout):
    """pid exited (reaped: this process is the subreaper of its masters)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if not os.path.exists("/proc/%d" % pid):
                return True
        time.sleep(0.05)
    return False


def get(port, path="/", timeout=5):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, str(e).encode()


def unit_lines(key):
    vals = []
    for line in open(UNIT).read().splitlines():
        if line.startswith(key + "="):
            vals.append(line.split("=", 1)[1])
    return vals


def master_pid():
    try:
        return int(open("/run/legate/legate.pid").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def workers_of(pid):
    """The children of pid, from /proc/*/stat (their parent is field 4)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def uid_of(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


class Poller:
    """GET / in a loop from a thread: counts answers and failures."""

    def __init__(self, port):
        self.port, self.good, self.bad, self.why = port, 0, 0, []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            st, body = get(self.port, timeout=10)
            if st == 200:
                self.good += 1
            else:
                self.bad += 1
                self.why.append((st, body[:200]))
            time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(20)


# ---------------------------------------------------------------- the package

def built():
    """make deb, once: (path of version 1, its version)."""
    if _deb:
        return _deb["path"], _deb["version"]
    given = os.environ.get("LEGATE_TEST_DEB")     # a package built already (while working)
    if given:
        _deb["path"] = given
        _deb["version"] = run(["dpkg-deb", "-f", given, "Version"])[1].strip()
        return _deb["path"], _deb["version"]
    for f in os.listdir(BUILD):
        if re.match(r"legate(-dbgsym)?_.*\.deb$", f):
            os.remove(os.path.join(BUILD, f))
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TESTS"):
        env.pop(k, None)
    rc, out = run(["make", "-C", BUILD, "deb"], timeout=1200, check=False, env=env)
    eq(rc, 0, out[-4000:])
    debs = [f for f in os.listdir(BUILD) if re.match(r"legate_.*\.deb$", f)]
    eq(len(debs), 1, "one package: %s" % debs)
    d = tmpdir("pkg")
    path = os.path.join(d, debs[0])
    shutil.move(os.path.join(BUILD, debs[0]), path)
    for f in os.listdir(BUILD):
        if re.match(r"legate-dbgsym_.*\.deb$", f):
            os.remove(os.path.join(BUILD, f))
    _deb["path"] = path
    _deb["version"] = run(["dpkg-deb", "-f", path, "Version"])[1].strip()
    return path, _deb["version"]


def reversioned(deb, version):
    """The same package as VERSION, its packaged legate.conf changed (a
    conffile the upgrade must not put over the admin's edit)."""
    d = tmpdir("v2")
    tree = os.path.join(d, "tree")
    run(["dpkg-deb", "-R", deb, tree])
    ctl = os.path.join(tree, "DEBIAN", "control")
    text = open(ctl).read()
    text = re.sub(r"^Version: .*$", "Version: " + version, text, flags=re.M)
    open(ctl, "w").write(text)
    conf = os.path.join(tree, "etc", "legate", "legate.conf")
    with open(conf, "a") as f:
        f.write("# shipped by version %s\n" % version)
    sums = os.path.join(tree, "DEBIAN", "md5sums")
    if os.path.exists(sums):
        import hashlib
        h = hashlib.md5(open(conf, "rb").read()).hexdigest()
        lines = [("%s  etc/legate/legate.conf" % h) if l.endswith(" etc/legate/legate.conf") else l
                 for l in open(sums).read().splitlines()]
        open(sums, "w").write("\n".join(lines) + "\n")
    out = os.path.join(d, "legate_%s.deb" % version)
    run(["dpkg-deb", "-Zgzip", "-z1", "-b", tree, out])
    return out


@test(timeout=1300)
def package_contents():
    deb, version = built()
    info = run(["dpkg-deb", "-I", deb])[1]
    contains(info, "Package: legate")
    ok(re.search(r"Depends:.*adduser", info), "depends on adduser")
    d = tmpdir("ctl")
    run(["dpkg-deb", "-e", deb, d])
    contains(open(os.path.join(d, "conffiles")).read(), "/etc/legate/legate.conf")
    contains(open(os.path.join(d, "conffiles")).read(), "/etc/legate/conf.d/default.conf")
    contains(open(os.path.join(d, "postinst")).read(), "adduser --system")
    contains(open(os.path.join(d, "postinst")).read(), "deb-systemd-helper")
    contains(open(os.path.join(d, "postrm")).read(), "purge")
    files = run(["dpkg-deb", "-c", deb])[1]
    for p in ["./usr/sbin/legate", "./etc/legate/legate.conf", "./etc/legate/conf.d/default.conf",
              "./etc/logrotate.d/legate", "." + UNIT, "./usr/share/man/man5/legate.conf.5.gz",
              "./usr/share/man/man8/legate.8.gz", "./usr/share/man/man7/legate-nginx.7.gz",
              "./usr/share/man/man7/legate-squid.7.gz",
              "./usr/share/doc/legate/examples/reverse-proxy.conf", "./var/log/legate/",
              "./var/cache/legate/"]:
        ok(re.search(r"\s%s$" % re.escape(p), files, re.M), "in the package: %s" % p)
    ok(" ./run/" not in files, "no /run in the package")
    if shutil.which("systemd-analyze"):
        root = tmpdir("x")
        run(["dpkg-deb", "-x", deb, root])
        unit = open(root + UNIT).read().replace("/usr/sbin/legate", root + "/usr/sbin/legate")
        u = os.path.join(tmpdir("unit"), "legate.service")
        open(u, "w").write(unit)
        run(["systemd-analyze", "verify", "--man=no", u])


@test(timeout=1300)
def install_start_reload_upgrade_purge():
    deb, version = built()
    deb2 = reversioned(deb, version + "+upgrade1")
    # masters this process starts, and the new master a binary upgrade
    # forks from them, are reaped here (PR_SET_CHILD_SUBREAPER)
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    try:
        lifecycle(deb, deb2, version)
    finally:
        restore_machine()
    # restored: nothing of the package is left on the machine
    eq(installed_state(), None, "dpkg's state of legate after the test")


def lifecycle(deb, deb2, version):
    # ---- install
    dpkg(["-i", deb])
    eq(installed_state(), "installed")
    u = pwd.getpwnam("legate")
    ok(u.pw_uid < 1000, "a system user (uid %d)" % u.pw_uid)
    ok(u.pw_shell.endswith("nologin") or u.pw_shell.endswith("false"), "no login shell")
    st = os.stat("/var/log/legate")
    eq((st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777), (0, "adm", 0o755),
       "/var/log/legate owner, group and mode")
    ok(os.path.isdir("/var/cache/legate"), "/var/cache/legate")
    ok(os.path.islink(WANTS), "the unit enabled (%s)" % WANTS)
    if os.path.isdir("/run/systemd/system"):
        skip("systemd runs here: the package started the service itself; the lines of the "
             "unit are for machines without systemd")
    rc, err = run(["/usr/sbin/legate", "-t", "-q", "-c",
                   "/etc/legate/legate.conf"], check=False)
    eq(rc, 0, "the shipped configuration passes legate -t: " + err)

    # ---- the admin edits both conffiles: a free port, a log level
    port = free_port()
    site = "/etc/legate/conf.d/default.conf"
    text = open(site).read()
    ok('listen = "80";' in text, "the default site listens on port 80")
    open(site, "w").write(text.replace('listen = "80";', 'listen = "127.0.0.1:%d";' % port))
    main_conf = "/etc/legate/legate.conf"
    edited = open(main_conf).read().replace('error_log_level = "notice";',
                                            'error_log_level = "info";   # edited by the admin')
    ok("edited by the admin" in edited, "the shipped legate.conf sets error_log_level")
    open(main_conf, "w").write(edited)

    # ---- start as the unit does: RuntimeDirectory=, ExecStartPre=, ExecStart=
    os.makedirs("/run/legate", mode=0o755, exist_ok=True)
    for line in unit_lines("ExecStartPre"):
        run(line.split())
    d = tmpdir("notify")
    nsock = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(nsock)
    s.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=nsock)
    start = unit_lines("ExecStart")
    eq(len(start), 1, "one ExecStart")
    log = open(os.path.join(d, "stderr"), "wb")
    master = subprocess.Popen(start[0].split(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                              env=env)
    _masters.add(master.pid)
    contains(s.recv(4096).decode(), "READY=1", "sd_notify once the workers listen")
    eq(get(port)[0], 200, "answering once READY")
    contains(get(port)[1].decode(), "legate is running")
    eq(master_pid(), master.pid, "the pid file in /run/legate")
    workers = wait_until(lambda: workers_of(master.pid), 10, what="workers")
    for w in workers:
        eq(uid_of(w), u.pw_uid, "worker %d runs as legate" % w)
    wait_until(lambda: os.path.exists("/var/log/legate/access.log") and
               "GET / " in open("/var/log/legate/access.log").read(), 10,
               what="the request in /var/log/legate/access.log")
    ok(os.path.exists("/var/log/legate/error.log"), "/var/log/legate/error.log")

    # ---- reload, as ExecReload= does: a bad configuration is refused
    reload_lines = unit_lines("ExecReload")

    def reload():
        for line in reload_lines:
            argv = [str(master_pid()) if a == "$MAINPID" else a for a in line.split()]
            rc, out = run(argv, check=False)
            if rc != 0:
                return rc, out
        return 0, ""
    good = open(main_conf).read()
    open(main_conf, "a").write("http = { broken\n")
    rc, out = reload()
    ok(rc != 0, "the reload fails on a bad configuration")
    contains(out, "legate.conf")
    eq(sorted(workers_of(master.pid)), sorted(workers), "the old workers still serve")
    eq(get(port)[0], 200)
    open(main_conf, "w").write(good)
    text = open(site).read()
    open(site, "w").write(text.replace("legate is running", "legate reloaded"))
    eq(reload(), (0, ""), "the reload of a good configuration")
    wait_until(lambda: b"legate reloaded" in get(port)[1], 15, what="the reloaded site")
    contains(s.recv(4096).decode(), "RELOADING=1")
    contains(s.recv(4096).decode(), "READY=1")

    # ---- upgrade in place: dpkg -i of the next version while it answers
    with Poller(port) as p:
        dpkg(["--force-confdef", "--force-confold", "-i", deb2])
        wait_until(lambda: p.good > 10, 20, what="answers during the upgrade")
    eq(p.bad, 0, "failed requests during dpkg -i: %s" % p.why[:5])
    eq(run(["dpkg-query", "-W", "-f=${Version}", "legate"])[1], version + "+upgrade1")
    contains(open(main_conf).read(), "edited by the admin", "the admin's legate.conf kept")
    ok("shipped by version" not in open(main_conf).read(), "not replaced by the new one")
    contains(open(main_conf + ".dpkg-dist").read(), "shipped by version",
             "the new shipped file beside it")
    contains(open(site).read(), "127.0.0.1:%d" % port, "the admin's conf.d/default.conf kept")
    ok(pwd.getpwnam("legate").pw_uid == u.pw_uid, "the same legate user")

    # the binary upgrade of legate(8): the new binary starts beside the old
    # master, reports MAINPID, the old one drains
    ok(os.readlink("/proc/%d/exe" % master.pid).endswith("(deleted)"),
       "the running master's binary was replaced by the upgrade")
    with Poller(port) as p:
        os.kill(master.pid, signal.SIGUSR2)
        new = wait_until(lambda: os.path.exists("/run/legate/legate.pid.oldbin") and
                         master_pid() != master.pid and master_pid(), 20,
                         what="the new master's pid file")
        _masters.add(new)
        contains(s.recv(4096).decode(), "MAINPID=%d" % new, "the new master told systemd")
        wait_until(lambda: workers_of(new), 15, what="the new master's workers")
        os.kill(master.pid, signal.SIGWINCH)
        wait_until(lambda: not [w for w in workers_of(master.pid) if w != new], 30,
                   what="the old workers to drain")
        os.kill(master.pid, signal.SIGQUIT)
        ok(wait_gone(master.pid, 30), "the old master exits")
        _masters.discard(master.pid)
        wait_until(lambda: p.good > 10, 20, what="answers after the binary upgrade")
    eq(p.bad, 0, "failed requests during the binary upgrade: %s" % p.why[:5])
    eq(os.readlink("/proc/%d/exe" % new), "/usr/sbin/legate", "the new master runs the new binary")
    contains(get(port)[1].decode(), "legate reloaded")

    # ---- stop as the unit does (KillSignal=SIGQUIT), then purge
    os.kill(new, signal.SIGQUIT)
    ok(wait_gone(new, 60), "the master stops on QUIT")
    _masters.discard(new)
    ok(get(port, timeout=2)[0] is None, "nothing listens once stopped")
    dpkg(["--remove", "legate"])
    eq(installed_state(), "config-files", "removed: the configuration stays")
    ok(os.path.exists(main_conf), "remove keeps /etc/legate/legate.conf")
    ok(user_exists("legate"), "remove keeps the user")
    dpkg(["--purge", "legate"])
    eq(installed_state(), None, "purged")
    for p in ["/etc/legate", "/var/log/legate", "/var/cache/legate", "/usr/sbin/legate", UNIT,
              "/etc/logrotate.d/legate"]:
        ok(not os.path.exists(p), "purge removed %s" % p)
    ok(not os.path.lexists(WANTS), "purge removed the unit's enablement")
    ok(not user_exists("legate"), "purge removed the legate user")
    ok(not group_exists("legate"), "purge removed the legate group")


if __name__ == "__main__":
    try:
        preconditions()
    except SkipFile as e:
        print("# SKIP whole file: %s" % e, flush=True)
        print("0 passed, 0 failed", flush=True)
        sys.exit(77)
    try:
        main()
    finally:
        restore_machine()

#!/usr/bin/env python3
"""Installing legate like a daemon (issue 20): include = "conf.d/*.conf",
the worker user, make install DESTDIR=, the systemd unit (checked with
systemd-analyze, its reload lines run as systemd runs them), sd_notify
readiness, the logrotate snippet, a binary upgrade after the binary was
replaced (as a package upgrade does).  The Debian package (make deb) is built
and installed, upgraded and purged by i03_deb_lifecycle.py."""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import legate_test  # noqa: E402
from legate_test import *  # noqa: E402,F401,F403

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(LEGATE_BIN)))


def tmpdir(tag):
    d = tempfile.mkdtemp(prefix="legate-inst-%s-" % tag)
    _tmps.append(d)
    return d


_tmps = []


def cleanup():
    if not os.environ.get("LEGATE_TEST_KEEP"):
        for d in _tmps:
            shutil.rmtree(d, ignore_errors=True)
    del _tmps[:]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def version_text(binary=None):
    p = subprocess.run([binary or LEGATE_BIN, "-V"], capture_output=True, timeout=15,
                       stdin=subprocess.DEVNULL)
    return (p.stdout + p.stderr).decode(errors="replace")


def configured_paths():
    """(sysconfdir, prefix) the binary was built with, from legate -V."""
    m = re.search(r"configuration file: (\S+)/legate/legate\.conf, prefix: (\S+)", version_text())
    ok(m, "legate -V names the configuration file and prefix")
    return m.group(1), m.group(2)


def server(port, body):
    return ('http = { servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; '
            'return = 200; body = "%s"; } ); } ); };\n' % (port, body))


def get(port, path="/"):
    return request(port, target=path)


# ---------------------------------------------------------------- include

@test
def include_merges_conf_d_files():
    o = Origin("app")
    p1, p2, p3 = free_port(), free_port(), free_port()
    lg = Legate('include = "conf.d/*.conf";\n'
                'pid = "{prefix}/logs/legate.pid";\n'
                'http = { upstreams = { app = { servers = ( "%s" ); }; }; };\n' % o.address,
                start=False)
    # one file proxies to the main file's upstream, one answers itself
    write(os.path.join(lg.prefix, "conf.d", "a.conf"),
          'http = { servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; '
          'proxy_pass = "app"; } ); } ); };\n' % p1)
    write(os.path.join(lg.prefix, "conf.d", "b.conf"), server(p2, "from b"))
    write(os.path.join(lg.prefix, "conf.d", "notes.txt"), "not a configuration {")
    lg.start()
    wait_until(lambda: get(p1).status == 200 and get(p2).status == 200, 10, what="both sites")
    eq(get(p1, "/x?size=10").headers.get("X-Origin"), "app")
    eq(get(p2).body, b"from b")
    # a reload reads the directory again
    write(os.path.join(lg.prefix, "conf.d", "c.conf"), server(p3, "from c"))
    lg.reload()
    wait_until(lambda: get(p3).status == 200, 10, what="the site of the new file")
    eq(get(p3).body, b"from c")


@test
def include_errors_name_file_and_line():
    d = tmpdir("inc")
    write(os.path.join(d, "conf.d", "a.conf"), server(free_port(), "a"))
    write(os.path.join(d, "conf.d", "b.conf"),
          '# b\npid = "x.pid";\nhttp = { servers = ( { listen = "127.0.0.1:%d"; routes = ( {'
          ' prefix = "/"; proxy_pass = "nowhere"; } ); } ); };\n' % free_port())
    rc, err = check_config('pid = "logs/legate.pid";\ninclude = [ "conf.d/*.conf" ];\n', prefix=d)
    eq(rc, 1, err)
    contains(err, "%s/conf.d/b.conf:2: 'pid' is already set in %s/legate.conf:1" % (d, d))
    contains(err, "%s/conf.d/b.conf:3: unknown upstream 'nowhere'" % d)
    # a syntax error in an included file
    write(os.path.join(d, "conf.d", "b.conf"), "http = {\n  servers = ( { listen = ; } );\n};\n")
    rc, err = check_config('include = "conf.d/*.conf";\n', prefix=d)
    eq(rc, 1, err)
    contains(err, "%s/conf.d/b.conf:2:" % d)


@test
def include_empty_glob_is_fine_missing_file_is_not():
    d = tmpdir("inc")
    os.makedirs(os.path.join(d, "conf.d"))
    rc, err = check_config('include = "conf.d/*.conf";\n' + server(free_port(), "x"), prefix=d)
    eq(rc, 0, err)
    rc, err = check_config('include = "conf.d/site.conf";\n' + server(free_port(), "x"), prefix=d)
    eq(rc, 1, err)
    contains(err, "legate.conf:1: included file \"%s/conf.d/site.conf\" does not exist" % d)
    write(os.path.join(d, "conf.d", "n.conf"), 'include = "more/*.conf";\n')
    rc, err = check_config('include = "conf.d/*.conf";\n' + server(free_port(), "x"), prefix=d)
    eq(rc, 1, err)
    contains(err, "conf.d/n.conf:1: 'include' is allowed only in the main file")
    rc, err = check_config('include = 5;\n' + server(free_port(), "x"), prefix=d)
    eq(rc, 1, err)
    contains(err, "'include' takes a file name or pattern")


# ---------------------------------------------------------------- user

@test
def workers_drop_to_user():
    if os.geteuid() != 0:
        skip("not root: the workers keep the master's identity")
    nobody = pwd.getpwnam("nobody")
    o = Origin("app")
    lg = Legate(simple_conf(free_port(), [o]).replace("http = {", 'user = "nobody";\nhttp = {', 1),
                start=False)
    # the workers open their logs by name: let them through the prefix
    os.chmod(lg.prefix, 0o755)
    lg.start()
    lg.wait_workers()
    eq(get(lg.port, "/x?size=5").status, 200)

    def uid(pid):
        with open("/proc/%d/status" % pid) as f:
            return int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
    eq(uid(lg.pid), 0, "the master's uid")
    # a worker drops root early in its start, but a slow (sanitized) one may
    # be listed as a child a moment before: wait for it, bounded
    for w in lg.workers():
        wait_until(lambda: uid(w) == nobody.pw_uid, 10, what="worker %d to run as nobody (uid %d)" % (w, uid(w)))
    eq(os.stat(lg.access_log).st_uid, nobody.pw_uid, "the access log's owner")
    # USR1: the master makes a new log file for the workers, who reopen it
    os.rename(lg.access_log, lg.access_log + ".1")
    lg.signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(lg.access_log), 10, what="a new access.log")
    wait_until(lambda: get(lg.port, "/after").status == 200 and
               "/after" in open(lg.access_log).read(), 10, what="/after in the new log")
    eq(os.stat(lg.access_log).st_uid, nobody.pw_uid, "the reopened log's owner")


@test
def unknown_user_fails_the_check():
    if os.geteuid() != 0:
        skip("not root: user is not used, so not checked")
    rc, err = check_config('user = "no-such-user-legate";\ngroup = "no-such-group-legate";\n' +
                           server(free_port(), "x"))
    eq(rc, 1, err)
    contains(err, "legate.conf:1: 'user': no user \"no-such-user-legate\"")
    contains(err, "legate.conf:2: 'group': no group \"no-such-group-legate\"")


# ---------------------------------------------------------------- make install

def make(*args, timeout=300):
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TESTS"):
        env.pop(k, None)
    p = subprocess.run(["make", "-C", BUILD] + list(args), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=env)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def need_build_tree():
    if not os.path.exists(os.path.join(BUILD, "Makefile")):
        skip("no Makefile beside %s: not a configured build tree" % LEGATE_BIN)


@test(timeout=300)
def make_install_destdir_layout():
    need_build_tree()
    sysconf, prefix = configured_paths()
    dest = tmpdir("destdir")
    rc, out = make("install", "DESTDIR=" + dest)
    eq(rc, 0, out[-3000:])
    root = lambda p: dest + p  # noqa: E731
    for p in ["/sbin/legate", "/share/man/man5/legate.conf.5", "/share/man/man8/legate.8",
              "/share/man/man7/legate-nginx.7", "/share/man/man7/legate-squid.7",
              "/share/doc/legate/examples/reverse-proxy.conf",
              "/share/doc/legate/examples/certs/ca.pem", "/lib/systemd/system/legate.service"]:
        ok(os.path.isfile(root(prefix + p)), "installed: %s%s" % (prefix, p))
    for p in ["/legate/legate.conf", "/legate/conf.d/default.conf", "/logrotate.d/legate"]:
        ok(os.path.isfile(root(sysconf + p)), "installed: %s%s" % (sysconf, p))
    conf = open(root(sysconf + "/legate/legate.conf")).read()
    contains(conf, 'include = "conf.d/*.conf";')
    contains(conf, 'user = "legate";')
    m = re.search(r'^pid = "(\S+)/legate/legate\.pid";', conf, re.M)
    ok(m, "the pid file is under a legate/ runtime directory")
    run = m.group(1)
    m = re.search(r'^error_log = "(\S+)/log/legate/error\.log";', conf, re.M)
    ok(m, "the error log is under log/legate/")
    var = m.group(1)
    for p in [run + "/legate", var + "/log/legate", var + "/cache/legate"]:
        ok(os.path.isdir(root(p)), "directory %s" % p)
    # a second install keeps the configuration the sysadmin changed
    with open(root(sysconf + "/legate/legate.conf"), "a") as f:
        f.write("# changed by the sysadmin\n")
    os.remove(root(sysconf + "/legate/conf.d/default.conf"))
    rc, out = make("install", "DESTDIR=" + dest)
    eq(rc, 0, out[-3000:])
    contains(out, "KEEP")
    contains(open(root(sysconf + "/legate/legate.conf")).read(), "# changed by the sysadmin")
    ok(os.path.isfile(root(sysconf + "/legate/conf.d/default.conf")), "default.conf put back")
    # the installed configuration passes -t (its paths moved into DESTDIR)
    etc = root(sysconf + "/legate")
    text = conf.replace('"%s/' % run, '"%s%s/' % (dest, run)).replace('"%s/' % var, '"%s%s/' % (dest, var))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("legate")
        except KeyError:
            text = text.replace('user = "legate";', 'user = "nobody";')
    write(os.path.join(etc, "legate.conf"), text)
    rc, out, err = run_legate(["-t", "-c", os.path.join(etc, "legate.conf")])
    eq(rc, 0, err)
    rc, out = make("uninstall", "DESTDIR=" + dest)
    eq(rc, 0, out[-3000:])
    ok(not os.path.exists(root(prefix + "/sbin/legate")), "uninstall removes the binary")


# ---------------------------------------------------------------- systemd

def unit_text():
    path = os.path.join(BUILD, "dist", "legate.service")
    if not os.path.exists(path):
        skip("no dist/legate.service in the build tree")
    return open(path).read()


def unit_values(text, key):
    return [m.group(1) for m in re.finditer(r"^%s=(.*)$" % key, text, re.M)]


@test
def systemd_unit_is_valid():
    text = unit_text()
    sbin = re.search(r"^ExecStart=(\S+)/legate ", text, re.M).group(1)
    eq(unit_values(text, "KillSignal"), ["SIGQUIT"])
    pre = unit_values(text, "ExecStartPre")
    eq(len(pre), 1)
    contains(pre[0], "legate -t")
    reload = unit_values(text, "ExecReload")
    eq(len(reload), 2, "the check, then HUP")
    contains(reload[0], "legate -t")
    contains(reload[1], "kill -HUP $MAINPID")
    notify = "sd_notify readiness" in version_text()
    eq(unit_values(text, "Type"), ["notify" if notify else "forking"])
    ok("CAP_NET_BIND_SERVICE" in text, "the master may bind ports below 1024")
    if not shutil.which("systemd-analyze"):
        skip("systemd-analyze is not installed: the unit's syntax is not verified")
    d = tmpdir("unit")
    path = os.path.join(d, "legate.service")
    write(path, text.replace(sbin + "/legate", LEGATE_BIN))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    out = (p.stdout + p.stderr).decode(errors="replace")
    eq(p.returncode, 0, out)
    eq(out.strip(), "", "systemd-analyze verify output")


def run_unit_lines(lines, conf, mainpid):
    """Run Exec lines in order as systemd does: stop at the first failure."""
    for line in lines:
        argv = line.split()
        argv = [conf if a.endswith("/legate.conf") else a for a in argv]
        argv = [str(mainpid) if a == "$MAINPID" else a for a in argv]
        if argv[0].endswith("/legate"):
            argv[0] = LEGATE_BIN
        p = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            return p.returncode, p.stderr.decode(errors="replace")
    return 0, ""


@test
def systemd_reload_checks_first():
    lines = unit_values(unit_text(), "ExecReload")
    o = Origin("app")
    port = free_port()
    lg = Legate(simple_conf(port, [o]))
    lg.wait_workers()
    before = set(lg.workers())
    marks = lg.log_marks()
    # a broken configuration: "systemctl reload" fails, no HUP is sent
    with open(lg.conf_path, "a") as f:
        f.write("http = { nonsense\n")
    rc, err = run_unit_lines(lines, lg.conf_path, lg.pid)
    ok(rc != 0, "the reload lines fail on a bad configuration")
    contains(err, "test failed")
    eq(set(lg.workers()), before, "the old workers still run")
    ok("reloading" not in lg.log_since(marks), "no reload was attempted")
    eq(get(port, "/x?size=3").status, 200)
    # a good one: the check passes and HUP makes a new generation
    lg._write_conf(simple_conf(port, [o], server_extra='add_response_headers = { X-Gen = "2"; };'))
    rc, err = run_unit_lines(lines, lg.conf_path, lg.pid)
    eq(rc, 0, err)
    wait_until(lambda: get(port).headers.get("X-Gen") == "2", 10, what="the new configuration")


@test
def sd_notify_readiness():
    if "sd_notify readiness" not in version_text():
        skip("built without libsystemd: readiness is the pid file")
    d = tmpdir("notify")
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = path
    try:
        o = Origin("app")
        port = free_port()
        lg = Legate(simple_conf(port, [o]))
    finally:
        if old is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = old

    def next_msg():
        return s.recv(4096).decode()
    m = next_msg()
    contains(m, "READY=1")
    contains(m, "MAINPID=%d" % lg.pid)
    eq(get(port, "/x?size=3").status, 200, "serving once READY")
    lg.reload()
    eq(next_msg(), "RELOADING=1")
    contains(next_msg(), "READY=1")
    lg.reload("http = { broken\n", expect_ok=False)
    eq(next_msg(), "RELOADING=1")
    contains(next_msg(), "READY=1")
    lg.signal(signal.SIGQUIT)
    eq(next_msg(), "STOPPING=1")
    lg.wait_exit()


# ---------------------------------------------------------------- binary upgrade

def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@test(timeout=120)
def binary_upgrade_runs_the_binary_now_installed():
    """A package upgrade renames the new binary over the old one: USR2 must
    start the file now at the path (not /proc/self/exe, the old inode)."""
    d = tmpdir("bin")
    path = os.path.join(d, "legate")
    shutil.copy(LEGATE_BIN, path)
    saved = legate_test.LEGATE_BIN
    legate_test.LEGATE_BIN = path
    o = Origin("app")
    port = free_port()
    new = 0
    try:
        lg = Legate(simple_conf(port, [o]))
    finally:
        legate_test.LEGATE_BIN = saved
    try:
        pidfile = os.path.join(lg.prefix, "logs", "legate.pid")
        eq(read_pid(pidfile), lg.pid)
        shutil.copy(LEGATE_BIN, path + ".new")
        os.rename(path + ".new", path)      # as dpkg puts a new file in place
        ok(os.readlink("/proc/%d/exe" % lg.pid).endswith("(deleted)"), "the old binary replaced")
        lg.signal(signal.SIGUSR2)
        wait_until(lambda: read_pid(pidfile) not in (0, lg.pid), 15, what="the new master")
        new = read_pid(pidfile)
        eq(os.readlink("/proc/%d/exe" % new), path, "the new master runs the new file")
        wait_until(lambda: get(port, "/x?size=2").status == 200, 10, what="answers")
    finally:
        if new:
            try:
                os.kill(new, signal.SIGQUIT)
                wait_until(lambda: not os.path.exists("/proc/%d" % new) or
                           open("/proc/%d/stat" % new).read().split()[2] == "Z", 15,
                           what="the new master to stop")
            except ProcessLookupError:
                pass
        lg.exit_expected = True
        lg.signal(signal.SIGQUIT)
        lg.wait_exit(15)


# ---------------------------------------------------------------- logrotate

@test
def logrotate_snippet_reopens_logs():
    if not shutil.which("logrotate"):
        skip("logrotate is not installed")
    path = os.path.join(BUILD, "dist", "legate.logrotate")
    if not os.path.exists(path):
        skip("no dist/legate.logrotate in the build tree")
    o = Origin("app")
    lg = Legate(simple_conf(free_port(), [o]).replace(
        "http = {", 'pid = "{prefix}/logs/legate.pid";\nhttp = {', 1))
    eq(get(lg.port, "/before").status, 200)
    wait_until(lambda: "/before" in open(lg.access_log).read(), 10, what="/before logged")
    text = open(path).read()
    text = re.sub(r"^\S+/log/legate/\*\.log", lg.prefix + "/logs/*.log", text, flags=re.M)
    text = re.sub(r"\S+/legate/legate\.pid", lg.prefix + "/logs/legate.pid", text)
    d = tmpdir("logrotate")
    write(os.path.join(d, "legate"), text)
    p = subprocess.run(["logrotate", "-f", "-s", os.path.join(d, "state"), os.path.join(d, "legate")],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    eq(p.returncode, 0, (p.stdout + p.stderr).decode(errors="replace"))
    ok(os.path.exists(lg.access_log + ".1"), "access.log rotated to access.log.1")
    contains(open(lg.access_log + ".1").read(), "/before")
    lg.wait_log(r"reopening logs")
    wait_until(lambda: os.path.exists(lg.access_log), 10, what="a new access.log")
    eq(get(lg.port, "/after").status, 200)
    wait_until(lambda: "/after" in open(lg.access_log).read(), 10, what="/after in the new log")
    ok("/after" not in open(lg.access_log + ".1").read(), "nothing written to the old file")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
